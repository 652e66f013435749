"""Adaptive cells under repetition limits: the leaves' assignment starts as a uniform grid's.

A short library on many leaves (3,000 photos on 30,354 leaves) took minutes to match
with the default preset, where a uniform grid of as many cells took seconds: the leaves
listed their nearest tiles only, without the warm lists (tiles of least distance plus
the estimated final prices) the uniform matcher starts from, and the pricing rounds'
searches were not given the bounds the lists know.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_colour_folder

from mosaicist import adaptive as adaptive_module
from mosaicist import make_mosaic
from mosaicist.adaptive import _LevelSearch, leaf_repetition
from mosaicist.match import _assign
from mosaicist.match._assign import Layout, verify_placement
from mosaicist.match._kernels import _numba


def busy_target(seed: int = 5) -> np.ndarray:
    """128x96: gentle gradients, noisy patches and a checkerboard: leaves of 3 sizes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:96, 0:128]
    target = np.stack([x + 40, y + 60, (x + y) // 2 + 30], axis=-1).clip(0, 255).astype(np.uint8)
    target[:16, :48] = rng.integers(0, 256, (16, 48, 3))
    target[80:, 112:] = rng.integers(60, 200, (16, 16, 3))
    # Flat 8 px squares of two colours: cells that split once.
    squares = ((y[64:, :64] // 8 + x[64:, :64] // 8) % 2).astype(bool)
    target[64:, :64][squares] = (200, 90, 40)
    return target


class _RecordingSearch:
    """A level's search that records what it is asked, and finds nothing."""

    scale = 1
    tile_count = 5

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def below(self, cells, price, limit, k, upper=None, among=None):
        self.calls.append({"cells": np.array(cells), "limit": np.array(limit),
                           "upper": None if upper is None else np.array(upper)})
        return np.full((len(cells), k), -1, np.int64), np.zeros((len(cells), k), np.int64)


def test_level_search_passes_each_cells_bounds_to_its_level():
    # Leaves 0, 2, 3 at level 0 and 1, 4 at level 1 (their local positions in each level).
    levels = [_RecordingSearch(), _RecordingSearch()]
    part_of = np.array([0, 1, 0, 0, 1])
    local = np.array([0, 0, 1, 2, 1])
    search = _LevelSearch(levels, part_of, local)
    cells = np.array([4, 0, 3, 1])
    limit = np.array([40, 10, 30, 20])
    upper = np.array([400, 100, 300, 200])
    search.below(cells, np.zeros(5, np.int64), limit, 2, upper=upper)
    first, second = levels[0].calls[0], levels[1].calls[0]
    # Each level's cells get their own limits and bounds, in the order asked.
    assert first["cells"].tolist() == [0, 2] and first["limit"].tolist() == [10, 30]
    assert second["cells"].tolist() == [1, 0] and second["limit"].tolist() == [40, 20]
    assert first["upper"] is not None and first["upper"].tolist() == [100, 300]
    assert second["upper"] is not None and second["upper"].tolist() == [400, 200]
    # Without bounds, none are passed on.
    search.below(cells, np.zeros(5, np.int64), limit, 2)
    assert levels[0].calls[1]["upper"] is None and levels[1].calls[1]["upper"] is None


def _adaptive_make(tmp_path, tiles, monkeypatch, warm: bool):
    """An adaptive make with the default look, 4 uses 2 apart, and how its assignment began."""
    seen: list[dict] = []
    original = _assign.assign_tiles

    def recording(candidates, candidate_distances, *args, **kwargs):
        seen.append({"width": candidates.shape[1], "extra": kwargs.get("extra"),
                     "nearest": kwargs.get("nearest", True)})
        return original(candidates, candidate_distances, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(_assign, "assign_tiles", recording)
        if not warm:
            patch.setattr(adaptive_module, "_warm_leaves", lambda *args: None)
        mosaic = make_mosaic(busy_target(), tiles, cell_px=16, tile_px=16, adaptive=2,
                             detail=6.0, max_uses=4, min_spacing=2, cache_dir=tmp_path / "cache")
    return mosaic, seen


def _check_limits(mosaic) -> None:
    placements, options = mosaic.placements, mosaic.options
    rect = placements.rect
    unit = 4
    centre = np.stack([(2 * rect[:, 1] + rect[:, 3]) * unit,
                       (2 * rect[:, 0] + rect[:, 2]) * unit], axis=1).round().astype(np.int64)
    layout = Layout(centre, 2 * unit)
    # Raises where a tile is used too often or twice within the spacing, by leaf centres.
    verify_placement(placements.tile, placements.rows, placements.cols, options.max_uses,
                     options.min_spacing, layout=layout)
    assert np.bincount(placements.tile).max() <= options.max_uses
    repeat = leaf_repetition(placements.tile, rect)["closest_repeat"]
    assert repeat is None or repeat >= options.min_spacing


@pytest.mark.skipif(_numba() is None, reason="the warm prices' auction needs Numba")
def test_a_short_library_starts_the_leaves_from_warm_lists(tmp_path, monkeypatch):
    tiles = make_colour_folder(tmp_path / "tiles", 60, size=16)
    mosaic, seen = _adaptive_make(tmp_path, tiles, monkeypatch, warm=True)
    placements, options = mosaic.placements, mosaic.options
    levels = np.round(np.log2(1 / placements.rect[:, 2])).astype(int)
    assert set(levels.tolist()) == {0, 1, 2}  # leaves of every size
    assert len(placements) > 60 and options.max_uses == 4  # a library short of the leaves
    assert options.min_spacing == 2
    # As the uniform grid's matcher: warm lists for every leaf, beside short nearest lists.
    assert len(seen) >= 1
    first = seen[0]
    assert first["extra"] is not None
    cells, listed, distances = first["extra"]
    assert set(cells.tolist()) == set(range(len(placements)))
    assert first["width"] == 8
    _check_limits(mosaic)
    assignment = mosaic.assignment
    assert assignment is not None
    assert assignment.lower_bound <= assignment.objective
    # Each leaf lists as many warm tiles, all different, each with its measured distance.
    per_leaf = np.bincount(cells, minlength=len(placements))
    assert (per_leaf == per_leaf[0]).all() and per_leaf[0] >= 8
    assert len(set(zip(cells.tolist(), listed.tolist(), strict=True))) == len(cells)
    assert len(distances) == len(cells) and (np.asarray(distances) >= 0).all()

    # Started from the nearest tiles alone, the same leaves and limits: each run's lower
    # bound is below the other's placement (the certificates hold across both).
    other, other_seen = _adaptive_make(tmp_path, tiles, monkeypatch, warm=False)
    assert other_seen[0]["extra"] is None
    assert other.options.max_uses == options.max_uses
    assert other.options.min_spacing == options.min_spacing
    _check_limits(other)
    assert other.assignment is not None
    tolerance = 1e-6 * assignment.objective
    assert assignment.lower_bound <= other.assignment.objective + tolerance
    assert other.assignment.lower_bound <= assignment.objective + tolerance
