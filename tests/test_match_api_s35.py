"""The matching API given what it cannot use (session 35): each argument refused by name.

Cells or tiles of another type or size, features of other tiles, a ``k``, a tint or
search bounds that are no numbers in range: each once failed deep in NumPy, or gave
picks far from the nearest without a word. What the searches can use (arrays that are
not contiguous or not writable, one cell, one tile, ``k`` above the library, negative
prices, libraries of copies) gives the brute force's picks.
"""

from __future__ import annotations

import numpy as np
import pytest

from mosaicist.errors import OptionError
from mosaicist.grid import Geometry
from mosaicist.match import (
    _approximate,
    brute_force,
    compute_features,
    match_approximate,
    match_exact,
)
from mosaicist.match._exact import dense_distances

GEOMETRY = Geometry(4, 8)


def _lists(cells, tiles, geometry, features=None, **options):
    """The approximate search's NumPy lists (no FAISS: same on every machine)."""
    return match_approximate(cells, tiles, geometry, features, use_faiss=False,
                             structure="lists", **options)


SEARCHES = [pytest.param(match_exact, id="exact"), pytest.param(_lists, id="lists")]


@pytest.fixture(scope="module")
def library():
    rng = np.random.default_rng(35)
    tiles = rng.integers(0, 256, (24, 8, 8, 3), dtype=np.uint8)
    cells = rng.integers(0, 256, (7, 4, 4, 3), dtype=np.uint8)
    return cells, tiles, compute_features(tiles, GEOMETRY)


def _every_distance(cells, tiles, features):
    """``(N, M)`` exact objective of every pair (checked against the brute force below)."""
    return dense_distances(cells, tiles, GEOMETRY, features)


def test_the_oracle_of_these_tests_is_the_brute_force(library):
    cells, tiles, features = library
    every = _every_distance(cells, tiles, features)
    reference = brute_force(cells, tiles)
    assert every.argmin(axis=1).tolist() == reference.tile.tolist()
    assert every.min(axis=1).tolist() == reference.distance.tolist()


@pytest.mark.parametrize("search", SEARCHES)
@pytest.mark.parametrize("kind", ["float64", "int64", "uint16", "bool", "int16"])
def test_cells_of_another_type_are_refused_by_name(library, search, kind):
    # Floats failed as "Iterator operand 0 dtype could not be cast"; wide integers
    # overflowed the int32 dot products and bools were compared as 0 and 1: picks far
    # from the nearest, without a word.
    cells, tiles, features = library
    wrong = cells > 127 if kind == "bool" else cells.astype(kind)
    if kind == "uint16":
        wrong *= 257  # 16-bit pixels, as a PNG of 16 bits a channel holds them
    with pytest.raises(OptionError, match=rf"^cell_vectors must hold uint8 pixel values "
                                          rf"\(0 to 255\), got {kind}$"):
        search(wrong, tiles, GEOMETRY, features)


@pytest.mark.parametrize("search", SEARCHES)
def test_tiles_of_another_type_are_refused_by_name(library, search):
    cells, tiles, _ = library
    with pytest.raises(OptionError, match=r"^tiles must hold uint8 pixel values \(0 to 255\), "
                                          r"got float64$"):
        search(cells, tiles.astype(np.float64), GEOMETRY)


@pytest.mark.parametrize("search", SEARCHES)
@pytest.mark.parametrize("shape", [(7, 4, 4), (7, 5, 5, 3), (7, 8, 8, 3), (7, 4, 4, 4)])
def test_cells_of_another_size_are_refused_by_name(library, search, shape):
    # "operands could not be broadcast together with shapes (7,75) (48,) (7,75)".
    _, tiles, features = library
    cells = np.zeros(shape, np.uint8)
    with pytest.raises(OptionError, match=r"^cell_vectors must be \(count, 4, 4, 3\) pixels "
                                          r"for this geometry .*, got shape "
                                          + (r"\(" + ", ".join(map(str, shape)) + r"\)$")):
        search(cells, tiles, GEOMETRY, features)


@pytest.mark.parametrize("search", SEARCHES)
def test_tiles_of_another_size_than_the_geometrys_are_refused_by_name(library, search):
    # "cannot reshape array of size 15360 into shape (20,4,2,4,2,3)".
    cells, _, _ = library
    tiles = np.zeros((5, 16, 16, 3), np.uint8)
    with pytest.raises(OptionError, match=r"^tiles must be \(count, 8, 8, 3\) pixels for this "
                                          r"geometry \(tiles of 8x8 px\), got shape "
                                          r"\(5, 16, 16, 3\)$"):
        search(cells, tiles, GEOMETRY)


@pytest.mark.parametrize("search", SEARCHES)
def test_features_of_other_tiles_are_refused_by_name(library, search):
    cells, tiles, features = library
    # Fewer: the exact search picked among the first tiles only, wrongly, without a word.
    with pytest.raises(OptionError, match=r"^features describe 12 tiles but tiles holds "
                                          r"24 tiles: compute them for these tiles$"):
        search(cells, tiles, GEOMETRY, compute_features(tiles[:12], GEOMETRY))
    with pytest.raises(OptionError, match=r"^features describe 24 tiles but tiles holds "
                                          r"1 tile"):
        search(cells, tiles[:1], GEOMETRY, features)
    # As many, of the same tiles in another order: the picks were another library's.
    with pytest.raises(OptionError, match=r"^features are not those of tiles: tile 0 "):
        search(cells, tiles, GEOMETRY, compute_features(tiles[::-1].copy(), GEOMETRY))
    with pytest.raises(OptionError, match=r"^features were computed for another geometry "):
        search(cells, tiles, GEOMETRY, compute_features(tiles, Geometry(8, 8)))
    with pytest.raises(OptionError, match=r"^features must be TileFeatures .*, got str$"):
        search(cells, tiles, GEOMETRY, "features")
    with pytest.raises(OptionError, match=r"^geometry must be a Geometry, got tuple$"):
        search(cells, tiles, (4, 8), features)


@pytest.mark.parametrize(("k", "message"), [
    (0, "k must be at least 1, got 0"),
    (-2, "k must be at least 1, got -2"),
    (2.5, "k must be a whole number, got 2.5"),
    (True, "k must be a whole number, got True"),
    ("3", "k must be a whole number, got '3'"),
])
def test_k_that_is_no_count_is_refused_by_name(library, k, message):
    # 0 and negative counts were taken as 1, silently; 2.5 failed as "'float' object
    # cannot be interpreted as an integer".
    cells, tiles, features = library
    with pytest.raises(OptionError, match=f"^{message}$"):
        match_exact(cells, tiles, GEOMETRY, features, k=k)


@pytest.mark.parametrize(("tint", "message"), [
    (float("nan"), "tint must be between 0 and 1, got nan"),
    (float("inf"), "tint must be between 0 and 1, got inf"),
    ("0.5", "tint must be a number, got '0.5'"),
    (-0.1, "tint must be between 0 and 1, got -0.1"),
])
def test_tint_that_is_no_strength_is_refused_by_name(library, tint, message):
    # NaN failed as "cannot convert float NaN to integer", infinity as an OverflowError.
    cells, tiles, features = library
    with pytest.raises(OptionError, match=f"^{message}$"):
        match_exact(cells, tiles, GEOMETRY, features, tint=tint)


@pytest.mark.parametrize(("keywords", "message"), [
    ({"among": np.array([-1])}, r"among holds -1, not a position of the tiles \(0 to 23\)"),
    ({"among": np.array([24])}, r"among holds 24, not a position of the tiles \(0 to 23\)"),
    ({"among": np.array([1.5])}, r"among must be whole numbers, got shape \(1,\) of float64"),
    ({"price": np.zeros(3, np.int64)},
     r"price must be 24 whole numbers, one a tile, got shape \(3,\) of int64"),
    ({"price": np.full(24, np.nan)},
     r"price must be 24 whole numbers, one a tile, got shape \(24,\) of float64"),
    ({"limit": np.zeros(3, np.int64)},
     r"limit must be 7 whole numbers, one a cell, got shape \(3,\) of int64"),
    ({"upper": np.zeros((7, 1), np.int64)},
     r"upper must be 7 whole numbers, one a cell, got shape \(7, 1\) of int64"),
])
def test_search_bounds_of_the_wrong_kind_are_refused_by_name(library, keywords, message):
    # A negative position searched the last tile (NumPy's wrap-around), 1.5 tile 1; a
    # NaN price gave every cell the tile 9223372036854775807.
    cells, tiles, features = library
    with pytest.raises(OptionError, match=f"^{message}$"):
        match_exact(cells, tiles, GEOMETRY, features, **keywords)


def test_among_naming_a_tile_twice_lists_it_once(library):
    cells, tiles, features = library
    result = match_exact(cells, tiles, GEOMETRY, features, k=3, among=np.array([5, 5, 2, 5]))
    every = _every_distance(cells, tiles, features)[:, [2, 5]]
    best = np.where(every[:, 0] <= every[:, 1], 2, 5)
    assert result.tile.tolist() == best.tolist()
    assert result.candidates[:, 2].tolist() == [-1] * len(cells)
    assert sorted(result.candidates[0, :2].tolist()) == [2, 5]


def test_large_negative_prices_keep_the_priced_search_exact(library):
    # The bound added the price times (1 - 1e-6): below -1e6, that is above the price,
    # and a tile the price made best could be skipped.
    cells, tiles, features = library
    every = _every_distance(cells, tiles, features)
    for seed in range(5):
        # Alike prices (their differences as large as the distances') far below 0.
        spread = np.random.default_rng(seed).integers(0, 2 * 10**5, len(tiles))
        price = spread - 10**12
        result = match_exact(cells, tiles, GEOMETRY, features, price=price, search_units=True)
        priced = every + price
        assert result.tile.tolist() == priced.argmin(axis=1).tolist()
        assert result.distance.tolist() == priced.min(axis=1).tolist()


@pytest.mark.parametrize("search", SEARCHES)
def test_arrays_that_are_not_contiguous_or_writable_give_the_brute_force(library, search):
    cells, tiles, _ = library
    reference = brute_force(cells, tiles)
    strided = np.repeat(cells, 2, axis=0)[::2]
    fortran = np.asfortranarray(tiles)
    locked_cells, locked_tiles = cells.copy(), tiles.copy()
    locked_cells.flags.writeable = locked_tiles.flags.writeable = False
    for some_cells, some_tiles in ((strided, tiles), (cells, fortran),
                                   (locked_cells, locked_tiles)):
        result = search(some_cells, some_tiles, GEOMETRY)
        assert result.tile.tolist() == reference.tile.tolist()
        assert result.distance.tolist() == reference.distance.tolist()


@pytest.mark.parametrize("search", SEARCHES)
def test_one_cell_and_one_tile_give_the_brute_force(library, search):
    cells, tiles, _ = library
    for some_cells, some_tiles in ((cells[:1], tiles), (cells, tiles[:1]), (cells[:1], tiles[:1])):
        reference = brute_force(some_cells, some_tiles)
        result = search(some_cells, some_tiles, GEOMETRY)
        assert result.tile.tolist() == reference.tile.tolist()
        assert result.distance.tolist() == reference.distance.tolist()


def test_k_above_the_library_lists_every_tile_in_order(library):
    cells, tiles, features = library
    result = match_exact(cells, tiles, GEOMETRY, features, k=10**9)
    every = _every_distance(cells, tiles, features)
    expected = np.lexsort((np.broadcast_to(np.arange(len(tiles)), every.shape), every), axis=1)
    assert result.candidates.tolist() == expected.tolist()
    assert result.candidate_distances.tolist() == np.sort(every, axis=1).tolist()


def test_the_brute_force_refuses_what_it_cannot_compare(library):
    cells, tiles, _ = library
    with pytest.raises(OptionError, match=r"^cells must hold uint8 pixel values"):
        brute_force(cells.astype(np.float64) + 0.5, tiles)
    with pytest.raises(OptionError, match=r"^cells and tiles must be \(count, height, width, 3\)"):
        brute_force(cells[..., 0], tiles)


def test_features_refuse_tiles_they_cannot_describe():
    with pytest.raises(OptionError, match=r"^tiles must hold uint8 pixel values"):
        compute_features(np.zeros((4, 8, 8, 3), np.float32), GEOMETRY)
    with pytest.raises(ValueError, match=r"^no tiles to compute features of$"):
        compute_features(np.zeros((0, 8, 8, 3), np.uint8), GEOMETRY)


def test_the_lists_keep_the_leftmost_of_tied_columns():
    # argpartition took any of the tied columns: here 12, 13, 15 and 14.
    distance = np.r_[np.ones(10), np.zeros(150)][None, :].astype(np.float32)
    assert np.array_equal(np.argpartition(distance, 3, axis=1)[:, :4], [[12, 13, 15, 14]])
    assert _approximate._nearest_columns(distance, 4).tolist() == [[10, 11, 12, 13]]
    mixed = np.array([[3, 1, 2, 1, 1, 0], [5, 5, 5, 5, 5, 5]], np.float32)
    assert _approximate._nearest_columns(mixed, 3).tolist() == [[1, 3, 5], [0, 1, 2]]


def _smooth_images(rng: np.random.Generator, count: int, side: int) -> np.ndarray:
    """Random gradients plus a little noise (structured, like photos at this size)."""
    y, x = np.mgrid[0:side, 0:side] / max(1, side - 1)
    base = rng.uniform(0, 255, (count, 1, 1, 3))
    slope_x = rng.uniform(-120, 120, (count, 1, 1, 3))
    slope_y = rng.uniform(-120, 120, (count, 1, 1, 3))
    images = base + slope_x * x[None, :, :, None] + slope_y * y[None, :, :, None]
    images += rng.normal(0, 6, images.shape)
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def test_the_lists_give_the_first_copy_of_a_photo_as_the_exact_search_does():
    # 60 copies each of five photos among 200: from the lists, a cell whose best photo
    # had more copies in its list than candidates got a later copy (same distance).
    rng = np.random.default_rng(3)
    photos = _smooth_images(rng, 200, 8)
    tiles = np.concatenate([photos, np.repeat(photos[:5], 60, axis=0)])
    tiles = np.ascontiguousarray(tiles[rng.permutation(len(tiles))])
    cells = _smooth_images(rng, 300, 4)
    features = compute_features(tiles, GEOMETRY)
    exact = match_exact(cells, tiles, GEOMETRY, features)
    result = _lists(cells, tiles, GEOMETRY, features, candidates=4, nprobe=len(tiles))
    assert result.distance.tolist() == exact.distance.tolist()
    assert result.tile.tolist() == exact.tile.tolist()


class _Source:
    name = "api"


def _request_parts(tmp_path, tile_count: int):
    from mosaicist.grid import make_grid
    from mosaicist.library import TileLibrary
    from mosaicist.options import MosaicOptions

    rng = np.random.default_rng(8)
    tiles = rng.integers(0, 256, (tile_count, 8, 8, 3), dtype=np.uint8)
    library = TileLibrary(_Source(), 8, tmp_path, [f"t{i}" for i in range(tile_count)], tiles, 1)
    grid = make_grid(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), 4)
    return grid, library, MosaicOptions(preset="seed", cell_px=4, tile_px=8)


def test_a_request_on_an_empty_library_says_there_is_no_tile(tmp_path):
    # The matchers read the features first: "cannot reshape array of size 0 into shape
    # (0,newaxis)".
    from mosaicist.match import MatchRequest, matcher_for

    grid, library, options = _request_parts(tmp_path, 0)
    request = MatchRequest(grid, library, options)
    with pytest.raises(ValueError, match="^no tiles to match against$"):
        matcher_for(options).match(request)


def test_a_grid_holding_other_than_its_rows_times_columns_is_refused(tmp_path):
    # The exact matcher gave 3 picks for a grid of 16 cells.
    import dataclasses

    from mosaicist.match import MatchRequest

    grid, library, options = _request_parts(tmp_path, 5)
    short = dataclasses.replace(grid, cells=grid.cells[:3])
    with pytest.raises(ValueError, match="^the grid holds 3 cells, but its 4 rows of 4 make "
                                         "16 cells$"):
        MatchRequest(short, library, options)
