"""The grid: the seed's crop, cell order, geometry and area averaging."""

import numpy as np
import pytest

from mosaicist.errors import MosaicistError
from mosaicist.grid import Geometry, area_weights, make_grid
from mosaicist.options import MosaicOptions


def test_centre_crop_matches_the_formula():
    rng = np.random.default_rng(1)
    target = rng.integers(0, 256, (1014, 1280, 3), dtype=np.uint8)
    grid = make_grid(target, 16)
    assert (grid.rows, grid.cols) == (63, 80)
    assert (grid.left, grid.top) == (0, (1014 - 63 * 16) // 2)
    # Cell (r, c) is the block at the crop offsets, row-major.
    r, c = 5, 7
    expected = target[grid.top + r * 16:grid.top + (r + 1) * 16, c * 16:(c + 1) * 16]
    assert np.array_equal(grid.cells[r * grid.cols + c], expected)


@pytest.mark.parametrize(("width", "height", "cell"), [(37, 21, 5), (16, 16, 16), (50, 17, 8)])
def test_offsets_are_floor_of_half_the_remainder(width, height, cell):
    target = np.zeros((height, width, 3), np.uint8)
    grid = make_grid(target, cell)
    assert grid.cols == width // cell and grid.rows == height // cell
    assert grid.left == (width - grid.cols * cell) // 2
    assert grid.top == (height - grid.rows * cell) // 2
    assert grid.cells.shape == (grid.rows * grid.cols, cell, cell, 3)


def test_target_smaller_than_a_cell_is_an_error():
    with pytest.raises(MosaicistError, match="smaller than one 16x16 cell"):
        make_grid(np.zeros((15, 100, 3), np.uint8), 16, name="tiny.png")


@pytest.mark.parametrize(("cell", "tile"), [(0, 32), (16, 0), (2000, 32), (16, 5000)])
def test_sizes_out_of_range(cell, tile):
    with pytest.raises(MosaicistError, match="between"):
        MosaicOptions(cell_px=cell, tile_px=tile)
    if not 1 <= cell <= 1024:
        with pytest.raises(MosaicistError, match="cell_px must be between 1 and 1024"):
            make_grid(np.zeros((4096, 4096, 3), np.uint8), cell)


def test_area_weights_are_exact_averages():
    weights = area_weights(3, 2)
    assert np.allclose(weights.sum(axis=1), 1.0)
    assert np.allclose(weights, [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]])
    # Integer downscale: plain block means.
    assert np.allclose(area_weights(4, 2), [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    # Integer upscale: replication.
    assert np.allclose(area_weights(2, 4), [[1, 0], [1, 0], [0, 1], [0, 1]])


def test_geometry_multiple_compares_at_cell_resolution():
    geometry = Geometry(16, 32)
    assert (geometry.side, geometry.factor, geometry.weight) == (16, 2, 4)
    tiles = np.random.default_rng(2).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    pooled = geometry.pool_tiles(tiles)
    expected = tiles.reshape(3, 16, 2, 16, 2, 3).astype(np.int64).sum(axis=(2, 4))
    assert np.array_equal(pooled, expected)


def test_geometry_non_multiple_resamples_cells_to_tile_size():
    geometry = Geometry(6, 10)
    assert (geometry.side, geometry.factor) == (10, 1)
    flat = np.full((1, 6, 6, 3), 77, np.uint8)
    assert np.all(geometry.cell_vectors(flat) == 77)
    rng = np.random.default_rng(3)
    cells = rng.integers(0, 256, (4, 6, 6, 3), dtype=np.uint8)
    vectors = geometry.cell_vectors(cells)
    weights = area_weights(6, 10)
    expected = np.rint(np.einsum("ij,njkc,lk->nilc", weights, cells.astype(float), weights))
    assert np.array_equal(vectors, expected.astype(np.uint8))


def test_geometry_pool_large_factor():
    geometry = Geometry(1, 12)
    tiles = np.random.default_rng(4).integers(0, 256, (2, 12, 12, 3), dtype=np.uint8)
    assert np.array_equal(
        geometry.pool_tiles(tiles)[:, 0, 0], tiles.astype(np.int64).sum(axis=(1, 2))
    )


# --- rectangular cells --------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height", "cell_w", "cell_h"),
                         [(130, 100, 16, 11), (37, 50, 6, 9), (200, 61, 16, 9), (50, 17, 8, 17)])
def test_rectangular_cells_follow_the_crop_formula(width, height, cell_w, cell_h):
    rng = np.random.default_rng(width + height)
    target = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    grid = make_grid(target, cell_w, cell_height=cell_h)
    assert (grid.cols, grid.rows) == (width // cell_w, height // cell_h)
    assert (grid.left, grid.top) == ((width - grid.cols * cell_w) // 2,
                                     (height - grid.rows * cell_h) // 2)
    assert grid.cells.shape == (grid.rows * grid.cols, cell_h, cell_w, 3)
    assert grid.cell_shape == (cell_h, cell_w)
    r, c = grid.rows - 1, grid.cols - 1
    expected = target[grid.top + r * cell_h:grid.top + (r + 1) * cell_h,
                      grid.left + c * cell_w:grid.left + (c + 1) * cell_w]
    assert np.array_equal(grid.cells[r * grid.cols + c], expected)


def test_target_smaller_than_a_rectangular_cell_names_its_size():
    with pytest.raises(MosaicistError, match="smaller than one 16x11 cell"):
        make_grid(np.zeros((10, 100, 3), np.uint8), 16, name="low.png", cell_height=11)


def test_square_geometry_is_the_rectangle_of_equal_sides():
    assert Geometry(16, 32) == Geometry(16, 32, 16, 32)
    assert Geometry(16, 32).square and not Geometry(16, 32, 11, 21).square


def test_rectangles_of_one_factor_compare_at_cell_resolution():
    geometry = Geometry(16, 32, 11, 22)
    assert (geometry.shape, geometry.factor, geometry.weight) == ((11, 16), 2, 4)
    assert (geometry.pixels, geometry.length) == (32 * 22, 11 * 16 * 3)
    tiles = np.random.default_rng(5).integers(0, 256, (3, 22, 32, 3), dtype=np.uint8)
    expected = tiles.reshape(3, 11, 2, 16, 2, 3).astype(np.int64).sum(axis=(2, 4))
    assert np.array_equal(geometry.pool_tiles(tiles), expected)
    cells = np.zeros((2, 11, 16, 3), np.uint8)
    assert geometry.cell_vectors(cells) is cells
    with pytest.raises(ValueError, match="no single side"):
        _ = geometry.side


@pytest.mark.parametrize(("cell", "tile"), [((16, 11), (32, 21)), ((9, 6), (32, 21)),
                                            ((6, 9), (21, 32)), ((4, 3), (8, 3))])
def test_rectangles_of_no_common_factor_resample_rows_and_columns(cell, tile):
    (cell_w, cell_h), (tile_w, tile_h) = cell, tile
    geometry = Geometry(cell_w, tile_w, cell_h, tile_h)
    assert (geometry.shape, geometry.factor) == ((tile_h, tile_w), 1)
    rng = np.random.default_rng(tile_w)
    cells = rng.integers(0, 256, (3, cell_h, cell_w, 3), dtype=np.uint8)
    rows, columns = area_weights(cell_h, tile_h), area_weights(cell_w, tile_w)
    exact = np.einsum("ij,njkc,lk->nilc", rows, cells.astype(float), columns)
    # Rounded to the nearest level (exact halves may go either way in floating point).
    assert np.abs(geometry.cell_vectors(cells) - exact).max() <= 0.5 + 1e-9
    flat = np.full((1, cell_h, cell_w, 3), 201, np.uint8)
    assert np.all(geometry.cell_vectors(flat) == 201)


@pytest.mark.parametrize("cell_px", [16.0, "16", True, None])
def test_cell_size_of_another_type_is_refused_by_name(cell_px):
    # 16.0 was accepted as a cell size, to fail (or not) later inside.
    picture = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(MosaicistError, match="cell_px must be a whole number"):
        make_grid(picture, cell_px)
    assert make_grid(picture, np.int64(16)).cols == 4


@pytest.mark.parametrize("target", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8),
                                    np.zeros((8, 8, 3), np.float32), [[0, 0, 0]]])
def test_make_grid_refuses_what_is_no_rgb_picture_by_name(target):
    # A reshape's ValueError or an AttributeError from inside make_grid.
    from mosaicist.errors import OptionError

    with pytest.raises(OptionError, match="target must be an"):
        make_grid(target, 4)


@pytest.mark.parametrize(("cell_height", "message"), [
    (0, "cell_height must be at least 1, got 0"),
    (-3, "cell_height must be at least 1, got -3"),
    (1.5, "cell_height must be a whole number, got 1.5"),  # a TypeError from slicing
    (True, "cell_height must be a whole number, got True"),  # taken as 1 px
    ("2", "cell_height must be a whole number, got '2'"),
])
def test_a_cell_height_that_is_no_size_is_refused_by_name(cell_height, message):
    from mosaicist.errors import OptionError

    with pytest.raises(OptionError) as refused:
        make_grid(np.zeros((8, 8, 3), np.uint8), 2, cell_height=cell_height)
    assert str(refused.value) == message
    # Still a ValueError, as the check it replaces raised.
    assert isinstance(refused.value, ValueError)
    assert make_grid(np.zeros((8, 8, 3), np.uint8), 2, cell_height=np.int64(4)).shape == (2, 4)


def test_a_cell_width_too_long_to_print_is_refused_in_one_short_line():
    # str() of an int of over 4,300 digits raised ValueError while the message was made.
    with pytest.raises(MosaicistError, match="^cell_px must be between 1 and 1024 pixels, got "
                                             "a number of 5001 digits$"):
        make_grid(np.zeros((8, 8, 3), np.uint8), 10**5000)


@pytest.mark.parametrize(("cell", "match"), [(16, 12), (17, 32), (5, 3), (12, 20), (7, 7 * 3 + 1),
                                             (6, 4), (3, 2)])
def test_resampled_cells_are_exact_means_rounded_half_to_even(cell, match):
    # Float weights (16 -> 12: thirds) put a mean of exactly k + 1/2 an ulp either
    # side, so such ties rounded either way, cell by cell.
    from fractions import Fraction

    from mosaicist.grid import area_overlaps

    rng = np.random.default_rng(cell * 100 + match)
    cells = rng.integers(0, 256, (40, cell, cell, 3), dtype=np.uint8)
    cells[:20] = rng.integers(0, 2, (20, cell, cell, 3), dtype=np.uint8) * 255  # many ties
    geometry = Geometry(cell, match)
    vectors = geometry.cell_vectors(cells)
    overlaps = area_overlaps(cell, match).tolist()
    for index in (0, 1, 7, 19, 20, 39):
        values = cells[index].astype(np.int64)
        for row in range(match):
            for col in range(match):
                total = sum(overlaps[row][i] * overlaps[col][j] * values[i, j]
                            for i in range(cell) for j in range(cell)
                            if overlaps[row][i] and overlaps[col][j])
                # Python's round() takes a half to the even neighbour, as np.rint does.
                expected = [round(Fraction(int(total[channel]), cell * cell))
                            for channel in range(3)]
                assert vectors[index, row, col].tolist() == expected, (index, row, col)


def test_area_weights_rows_sum_to_one_exactly_from_integer_overlaps():
    from mosaicist.grid import area_overlaps

    for source, target in [(16, 12), (17, 32), (3, 2), (1024, 7)]:
        overlaps = area_overlaps(source, target)
        assert (overlaps.sum(axis=1) == source).all() and (overlaps.sum(axis=0) == target).all()
        assert np.array_equal(area_weights(source, target), overlaps / source)
