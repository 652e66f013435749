"""How a target is cut into cells: adaptive layouts' coverage, spacing counts and memory, sizes."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_colour_folder

import mosaicist._runtime
import mosaicist.match._assign
from mosaicist import make_mosaic
from mosaicist.adaptive import (
    Leaves,
    check_leaves_feasible,
    leaf_cells,
    leaf_spacing_needs,
    split_cells,
)
from mosaicist.errors import OptionError
from mosaicist.grid import make_grid
from mosaicist.sizing import cell_px_for_cells


def _random_target(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Noise, one flat colour, one odd pixel on flat grey, or sparse specks."""
    kind = int(rng.integers(0, 4))
    if kind == 0:
        return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    target = np.full((height, width, 3), int(rng.integers(0, 256)), np.uint8)
    if kind == 2:
        target[rng.integers(0, height), rng.integers(0, width)] = 255 - target[0, 0]
    elif kind == 3:
        specks = rng.random((height, width)) < 0.1
        target[specks] = rng.integers(0, 256, (int(specks.sum()), 3))
    return target


def test_adaptive_leaves_cover_every_cell_exactly_once():
    # Many targets, depths, detail thresholds and non-square cells (with the target
    # one pixel short of another cell): the leaves tile the grid, no gap, no overlap,
    # and each leaf's pixels are the target's under its rectangle.
    rng = np.random.default_rng(33)
    for _ in range(120):
        depth = int(rng.integers(0, 4))
        step = 1 << depth
        cell_w, cell_h = step * int(rng.integers(1, 4)), step * int(rng.integers(1, 4))
        rows, cols = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        height = rows * cell_h + int(rng.integers(0, cell_h))
        width = cols * cell_w + int(rng.integers(0, cell_w))
        target = _random_target(rng, height, width)
        grid = make_grid(target, cell_w, cell_height=cell_h)
        leaves = split_cells(grid, depth, float(rng.choice([0, 0.5, 12, 255])))
        assert (grid.rows, grid.cols) == (rows, cols)
        unit = 1 << depth
        painted = np.zeros((rows * unit, cols * unit), np.int64)
        for y, x, side in zip(leaves.y, leaves.x, leaves.size, strict=True):
            painted[y:y + side, x:x + side] += 1
        assert (painted == 1).all()
        crop = target[grid.top:grid.top + rows * cell_h, grid.left:grid.left + cols * cell_w]
        rects = leaves.pixels(cell_w, cell_h)
        for level in np.unique(leaves.level).tolist():
            index, cells = leaf_cells(grid, leaves, level)
            for position, cell in zip(index, cells, strict=True):
                x, y, w, h = rects[position]
                assert np.array_equal(crop[y:y + h, x:x + w], cell)


def _brute_needs(leaves: Leaves, spacing: int) -> tuple[int, int]:
    """Lone leaves and the most leaves of a D x D block of cells, pair by pair."""
    layout = leaves.layout()
    centre = layout.centre
    apart = np.abs(centre[:, None, :] - centre[None, :, :]).max(axis=2)
    lone = int((~(apart >= spacing * layout.unit).any(axis=1)).sum())
    high, wide = min(spacing, leaves.rows), min(spacing, leaves.cols)
    row, col = leaves.y >> leaves.depth, leaves.x >> leaves.depth
    block = max(int(((row >= top) & (row < top + high) & (col >= left) & (col < left + wide))
                    .sum())
                for top in range(leaves.rows - high + 1) for left in range(leaves.cols - wide + 1))
    return lone, block


def test_leaf_spacing_needs_count_lone_leaves_and_the_densest_block():
    rng = np.random.default_rng(7)
    for _ in range(40):
        depth = int(rng.integers(1, 3))
        rows, cols = int(rng.integers(1, 7)), int(rng.integers(1, 7))
        side = 1 << depth
        target = _random_target(rng, rows * side, cols * side)
        leaves = split_cells(make_grid(target, side), depth, float(rng.choice([0, 20, 60])))
        for spacing in (2, 3, 4, 7, 10**30):
            needs = leaf_spacing_needs(leaves, spacing)
            lone, block = _brute_needs(leaves, spacing)
            assert (needs.lone, needs.block) == (lone, block)
            # Every pair in the block is closer than the spacing: so many tiles at least.
            assert needs.block >= min(spacing, rows) * min(spacing, cols)
    assert leaf_spacing_needs(leaves, 1).lone == 0


def _middle_detail(cells: int, middle: slice, side: int = 8) -> np.ndarray:
    """``cells x cells`` flat grey cells of ``side`` px with noise in the ``middle`` cells."""
    rng = np.random.default_rng(5)
    target = np.full((cells * side, cells * side, 3), 120, np.uint8)
    span = slice(middle.start * side, middle.stop * side)
    target[span, span] = rng.integers(0, 256, (len(range(*middle.indices(cells))) * side,) * 2
                                      + (3,))
    return target


def _refuse_assignment(monkeypatch):
    """Fail the test, rather than search for seconds, when the spacing rounds start."""
    def refuse(*arguments, **keywords):
        raise AssertionError("the limits should have been refused before assigning")

    monkeypatch.setattr(mosaicist.match._assign, "assign_tiles", refuse)


def test_adaptive_spacing_counts_the_lone_leaves_before_assigning(tmp_path, monkeypatch):
    # 6 x 6 cells, the middle 2 x 2 split in four: 48 leaves, and the 16 small ones are
    # all closer than 4 to every other leaf. With 2 uses a tile that needs 16 + 32 / 2 =
    # 32 tiles; the uniform grid's counts (24) let 30 through to spacing rounds that
    # searched for seconds and said only that no placement was found.
    tiles = make_colour_folder(tmp_path / "tiles", 30, size=8)
    _refuse_assignment(monkeypatch)
    with pytest.raises(OptionError) as error:
        make_mosaic(_middle_detail(6, slice(2, 4)), tiles, cell_px=8, tile_px=8, adaptive=1,
                    detail=10.0, preset="seed", max_uses=2, min_spacing=4,
                    cache_dir=tmp_path / "cache")
    assert str(error.value) == (
        "48 cells with at most 2 uses per tile need at least 32 tiles under min_spacing 4, "
        "but the library has 30: the 16 cells in the middle of the 6x6 grid have no cell 4 "
        "or more away and need a tile each; add tiles or relax the limits")
    assert error.value.parameters == ("min_spacing",)


def test_adaptive_spacing_counts_the_densest_block_before_assigning(tmp_path, monkeypatch):
    # 8 x 8 cells, the middle 2 x 2 split to quarters: a 4 x 4 block holds 64 + 12 leaves
    # pairwise closer than 4, which need 76 tiles; the grid's counts ask for 62.
    tiles = make_colour_folder(tmp_path / "tiles", 70, size=8)
    _refuse_assignment(monkeypatch)
    with pytest.raises(OptionError, match=r"^min_spacing 4 needs at least 76 different tiles "
                       r"\(the 76 cells in a 4 x 4 block of the 8x8 grid are all closer than "
                       r"4 to each other\), but the library has 70; add tiles or lower "
                       r"min_spacing$"):
        make_mosaic(_middle_detail(8, slice(3, 5)), tiles, cell_px=8, tile_px=8, adaptive=2,
                    detail=10.0, preset="seed", max_uses=2, min_spacing=4,
                    cache_dir=tmp_path / "cache")


def test_leaf_feasibility_refuses_only_below_the_counts():
    grid = make_grid(_middle_detail(8, slice(3, 5)), 8)
    leaves = split_cells(grid, 2, 10.0)
    assert len(leaves) == 124
    check_leaves_feasible(leaves, 76, 2, 4)
    with pytest.raises(OptionError):
        check_leaves_feasible(leaves, 75, 2, 4)
    # No spacing: nothing for this check (the caps alone are check_feasible's).
    check_leaves_feasible(leaves, 1, 2, 1)


def test_a_preset_spacing_gives_way_to_the_leaf_counts_at_once(tmp_path, monkeypatch):
    # 6 x 6 cells, the middle 2 x 2 split to quarters: 64 small leaves all closer than 2 to
    # each other. The balanced preset's spacing, fitted to the uniform grid's counts, came
    # to 2 with 40 tiles, and gave way only after spacing rounds that searched in vain.
    tiles = make_colour_folder(tmp_path / "tiles", 40, size=8)
    calls = []
    original = mosaicist.match._assign.assign_tiles

    def counted(*arguments, **keywords):
        calls.append(keywords["min_spacing"])
        return original(*arguments, **keywords)

    monkeypatch.setattr(mosaicist.match._assign, "assign_tiles", counted)
    target = _middle_detail(6, slice(2, 4))
    mosaic = make_mosaic(target, tiles, cell_px=8, tile_px=8, adaptive=2, detail=10.0,
                         cache_dir=tmp_path / "cache")
    assert calls == [mosaic.options.min_spacing] == [1]
    assert leaf_spacing_needs(split_cells(make_grid(target, 8), 2, 10.0), 2).block > 40


def test_adaptive_leaves_too_many_for_memory_are_refused_before_matching(tmp_path,
                                                                         monkeypatch):
    # 16 cells of 16 px on noise split to 256 leaves of 4 px: the plan's check counted 16
    # cells, the matching holds candidates for 256 (4^DEPTH times as many).
    tiles = make_colour_folder(tmp_path / "tiles", 300, size=16)
    target = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    monkeypatch.setattr(mosaicist._runtime, "available_memory", lambda: 1_000_000)
    _refuse_assignment(monkeypatch)
    with pytest.raises(OptionError) as error:
        make_mosaic(target, tiles, cell_px=16, tile_px=16, adaptive=2, detail=0.0,
                    cache_dir=tmp_path / "cache")
    message = str(error.value)
    assert message.startswith("16 cells split into 256 where their detail is above detail 0 "
                              "need about ")
    assert message.endswith("1.0 MB available: use a higher detail, a smaller adaptive or "
                            "a larger cell_px")


def test_cells_out_of_reach_under_adaptive_say_the_cells_must_halve():
    # 128 x 128 px holds 16,384 cells, but only 40 of 3:2 cells whose sides halve 3 times.
    with pytest.raises(OptionError) as error:
        cell_px_for_cells((128, 128), 64, "3:2", adaptive=3)
    assert str(error.value) == (
        "cells 64 is more than a 128x128 target holds in cells whose sides halve 3 times "
        "(adaptive 3): at most 40 3:2 cells (24 px wide)")
    with pytest.raises(OptionError, match=r"^cells 1 is fewer than a 128x2048 target allows "
                       r"in cells whose sides halve once \(adaptive 1\): at least 16 cells"):
        cell_px_for_cells((128, 2048), 1, adaptive=1)


def test_adaptive_placements_record_the_photos_content_hashes(tmp_path):
    # Uniform placements record each photo's content hash, so render warns of a photo
    # changed since the make; adaptive placements recorded none (no warning possible).
    tiles = make_colour_folder(tmp_path / "tiles", 30, size=8)
    mosaic = make_mosaic(_middle_detail(6, slice(2, 4)), tiles, cell_px=8, tile_px=8,
                         adaptive=1, detail=10.0, preset="seed",
                         cache_dir=tmp_path / "cache")
    recorded = mosaic.placements.to_json()
    assert "hashes" in recorded


@pytest.mark.parametrize(("arguments", "words"), [
    ((0, 32), "cell_px must be at least 1 pixel, got 0"),
    (("8", 32), "cell_px must be a whole number, got '8'"),
    ((8, 32, -1), "cell_height must be at least 0 pixels, got -1"),
    ((8, 0), "match_px must be at least 1 pixel, got 0"),
])
def test_a_geometry_of_impossible_sizes_is_refused_by_name(arguments, words):
    # Geometry is public: Geometry(0, 32) was taken and failed later, naming nothing.
    from mosaicist.grid import Geometry

    with pytest.raises(OptionError) as error:
        Geometry(*arguments)
    assert str(error.value) == words


def test_a_geometry_takes_numpy_whole_numbers_as_python_ones():
    from mosaicist.grid import Geometry

    geometry = Geometry(np.int64(8), np.int32(32))
    assert geometry == Geometry(8, 32) and type(geometry.cell_px) is int


def test_adaptive_leaves_refused_for_memory_under_a_cell_count_advise_fewer_cells(
        tmp_path, monkeypatch):
    # The count chose the cell: "a larger cell_px" would then fail with "give one of them".
    tiles = make_colour_folder(tmp_path / "tiles", 300, size=16)
    target = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    monkeypatch.setattr(mosaicist._runtime, "available_memory", lambda: 1_000_000)
    _refuse_assignment(monkeypatch)
    with pytest.raises(OptionError) as error:
        make_mosaic(target, tiles, cells=16, tile_px=16, adaptive=2, detail=0.0,
                    cache_dir=tmp_path / "cache")
    assert str(error.value).endswith("a smaller adaptive or fewer cells")
