"""Measurement and cell layout under hostile inputs: sizes, patterns, libraries at their edges."""

from __future__ import annotations

import numpy as np
import pytest

from mosaicist.adaptive import _closest_centres, leaf_repetition, split_cells
from mosaicist.errors import OptionError
from mosaicist.grid import make_grid
from mosaicist.metrics import score_mosaic


def brute_closest_centres(tile: np.ndarray, rect: np.ndarray) -> float | None:
    """The least Chebyshev distance between centres of two leaves of one tile, pair by pair."""
    centre = rect[:, :2] + rect[:, 2:] / 2
    best = None
    for value in np.unique(tile):
        where = np.flatnonzero(tile == value)
        if len(where) < 2:
            continue
        apart = np.abs(centre[where, None] - centre[None, where]).max(axis=-1)
        apart[np.arange(len(where)), np.arange(len(where))] = np.inf
        best = float(apart.min()) if best is None else min(best, float(apart.min()))
    return best


def test_leaf_closest_repeat_matches_pair_by_pair_on_random_quadtrees():
    rng = np.random.default_rng(5)
    checked = 0
    for _ in range(120):
        height, width = (int(side) * 8 for side in rng.integers(1, 8, 2))
        picture = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        picture[:height // 2] = 100  # flat half: leaves of several sizes side by side
        leaves = split_cells(make_grid(picture, 8), int(rng.integers(0, 3)),
                             float(rng.integers(0, 80)))
        tiles = rng.integers(0, int(rng.integers(1, len(leaves) + 2)), len(leaves))
        found = leaf_repetition(tiles, leaves.rect())["closest_repeat"]
        expected = brute_closest_centres(tiles, leaves.rect())
        assert found == expected
        checked += expected is not None
    assert checked > 60  # most trials repeat a tile, so the sweep ran


def test_leaf_closest_repeat_of_spaced_tiles_is_exact():
    # 36 tiles in a 6 x 6 pattern: each repeats 6 cells apart, never closer.
    rows, cols = 120, 120
    y, x = np.divmod(np.arange(rows * cols), cols)
    tiles = (x % 6) + 6 * (y % 6)
    rect = np.stack([x, y, np.ones_like(x), np.ones_like(x)], axis=1).astype(np.float64)
    assert leaf_repetition(tiles, rect) == {
        "distinct_tiles": 36, "max_uses": 400, "closest_repeat": 6.0}


def test_leaf_repetition_of_a_few_heavily_used_tiles_is_quick():
    # 'make --preset seed --adaptive 2' from a library of a few photos: every
    # leaf was compared with every later leaf of its tile, 36 s of a 0.7 s make
    # (29,600 leaves, 17,600 uses of one tile); here 40,000 leaves of 2 tiles.
    rng = np.random.default_rng(0)
    side = 200
    y, x = np.divmod(np.arange(side * side), side)
    rect = np.stack([x, y, np.ones_like(x), np.ones_like(x)], axis=1) / 4.0
    tiles = rng.integers(0, 2, side * side)
    result = leaf_repetition(tiles, rect)
    assert result["closest_repeat"] == 0.25 and result["distinct_tiles"] == 2
    # The work, not the time: the sweep stops at once where neighbours repeat (the old
    # loop took one pass per use of the busiest tile, about 20,000 here) ...
    centre = rect[:, :2] + rect[:, 2:] / 2
    assert _closest_centres(tiles, centre, 0.25) == (0.25, 0)
    # ... and where they do not, after at most a line of the grid's repeats of a tile
    # (tiles in a 3-periodic pattern: 66 passes, where the old loop took 4,443).
    periodic = (x % 3) + 3 * (y % 3)
    best, passes = _closest_centres(periodic, centre, 0.25)
    assert best == 0.75 and passes <= side // 3


def test_leaf_closest_repeat_of_tiles_down_whole_columns_is_exact_and_bounded(monkeypatch):
    # Each tile down whole columns: every point of a column ties along the sweep's
    # axis, and the sweep alone took one pass per row (22 s for a million leaves);
    # past SWEEP_PASSES (here made small) a k-d tree finishes, exactly.
    from mosaicist import adaptive

    monkeypatch.setattr(adaptive, "SWEEP_PASSES", 6)
    side = 48
    y, x = np.divmod(np.arange(side * side), side)
    rect = np.stack([x, y, np.ones_like(x), np.ones_like(x)], axis=1).astype(np.float64)
    rng = np.random.default_rng(3)
    for tiles in (x % 10, (x % 10) + 10 * (y % 2), (x % 7) + 7 * (y % 3), x % 1,
                  np.where(rng.random(side * side) < 0.5, x % 12, 12 + rng.integers(0, 9, x.size))):
        centre = rect[:, :2] + rect[:, 2:] / 2
        _, inverse, counts = np.unique(tiles, return_inverse=True, return_counts=True)
        repeated = np.flatnonzero(counts[inverse] > 1)
        best, passes = _closest_centres(inverse[repeated], centre[repeated], 0.5)
        assert best == brute_closest_centres(tiles, rect)
        assert passes <= adaptive.SWEEP_PASSES


def _mosaic_and_target(folder, cells=(3, 2), tile=4, cell=8):
    """A random target of ``cells`` cells and a mosaic of it (any picture of the right size)."""
    from PIL import Image

    rng = np.random.default_rng(7)
    cols, rows = cells
    target = folder / "target.png"
    mosaic = folder / "mosaic.png"
    Image.fromarray(rng.integers(0, 256, (rows * cell, cols * cell, 3), np.uint8)).save(target)
    Image.fromarray(rng.integers(0, 256, (rows * tile, cols * tile, 3), np.uint8)).save(mosaic)
    return mosaic, target


@pytest.mark.parametrize("aspect", [(3,), (1, 2, 3), 5, None, (0, 1), ("3", "2")])
def test_score_refuses_a_malformed_aspect_naming_it(tmp_path, aspect):
    mosaic, target = _mosaic_and_target(tmp_path)
    with pytest.raises(OptionError, match="aspect"):
        score_mosaic(mosaic, target, 8, aspect=aspect)


def test_score_takes_an_aspect_as_text_or_any_pair(tmp_path):
    mosaic, target = _mosaic_and_target(tmp_path)
    square = score_mosaic(mosaic, target, 8)
    assert score_mosaic(mosaic, target, 8, aspect=(2, 2)) == square
    assert score_mosaic(mosaic, target, 8, aspect=[np.int64(5), np.int64(5)]) == square
    assert score_mosaic(mosaic, target, 8, aspect="1:1") == square
