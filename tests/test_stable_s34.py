"""Video stability against brute-force references: its documented guarantees, hostile frames.

Each property of :mod:`mosaicist.batch._stable`'s docstring is checked on
small seeded cases against references computed here in NumPy from the pixels
(every cell against every candidate tile) and by
``scipy.optimize.linear_sum_assignment``: the keep-or-replace rule and its
margin, the exact discounted assignment under repetition limits, strength 0
as independent frames, a cut, a single frame, frames of differing sizes, and
all-black frames.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import banded_tile, shifted_picture
from PIL import Image
from scipy.optimize import linear_sum_assignment

from mosaicist import MosaicOptions, TileLibrary, make_mosaic
from mosaicist.batch import StableMatcher, discounted, stable_frame
from mosaicist.batch._stable import CHANGE_LEVELS, cell_signature, changed_cells
from mosaicist.grid import make_grid
from mosaicist.match import MatchRequest, fitted_matcher

CELL = TILE = 8


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stable34") / "tiles"
    root.mkdir()
    rng = np.random.default_rng(34)
    for index in range(24):
        Image.fromarray(banded_tile(rng)).save(root / f"t{index:03d}.png")
    # Two identical tiles: ties by construction.
    (root / "t024.png").write_bytes((root / "t003.png").read_bytes())
    return root


@pytest.fixture
def library(folder) -> TileLibrary:
    return TileLibrary.open(folder, TILE)  # opened per test: under the test's own cache


def request_for(library: TileLibrary, picture: np.ndarray, **settings):
    matcher, options, _ = fitted_matcher(MosaicOptions(cell_px=CELL, tile_px=TILE, **settings))
    return matcher, MatchRequest(make_grid(picture, CELL), library, options)


def brute_distances(request: MatchRequest, tint: float) -> np.ndarray:
    """``(N, K)`` float64: every cell against every candidate, after the tint (sRGB levels).

    The candidate's mean colour moved ``tint`` of the way to the cell's, then the summed
    squared difference (tiles and cells are the same size here: no resampling).
    """
    cells = request.grid.cells.astype(np.float64).reshape(len(request.grid), -1, 3)
    tiles = np.asarray(request.candidates, np.float64).reshape(len(request.candidates), -1, 3)
    shift = tint * (cells.mean(axis=1)[:, None, :] - tiles.mean(axis=1)[None, :, :])
    drawn = tiles[None, :, :, :] + shift[:, :, None, :]
    return ((cells[:, None, :, :] - drawn) ** 2).sum(axis=(2, 3))


def frame(shift: int, width: int = 48, height: int = 32) -> np.ndarray:
    return shifted_picture(width, height, shift)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("tint", [0.0, 0.5])
@pytest.mark.parametrize("augment", ["none", "flips"])
def test_a_cell_keeps_its_tile_exactly_when_within_the_margin(library, seed, tint, augment):
    # Without limits: a cell keeps its previous tile (and transform) iff
    # d(previous) / (1 + s) <= d(best), else takes this frame's own pick; never a tile
    # worse than the margin allows, never a third tile.
    rng = np.random.default_rng(seed)
    settings = {"preset": "seed", "tint": tint, "augment": augment}
    matcher, first = request_for(library, frame(0), **settings)
    previous = matcher.match(first).tile
    later = frame(int(rng.integers(1, 5)))
    _, request = request_for(library, later, **settings)
    reference = brute_distances(request, tint)
    plain = matcher.match(request)
    hundredths = int(rng.choice([5, 25, 100, 400, 1000]))
    _, request = request_for(library, later, **settings)
    stable = StableMatcher(matcher, previous, hundredths).match(request)
    cells = np.arange(len(previous))
    best, held = reference[cells, plain.tile], reference[cells, previous]
    # This frame's own pick is the nearest candidate (float32 of the search aside).
    assert (best <= reference.min(axis=1) * (1 + 1e-9) + 1e-6).all()
    ratio = held / (1 + hundredths / 100)
    slack = 1e-6 * best + 1.0 / 100  # the search's integer units: whole hundredths at most
    kept = stable.tile == previous
    assert ((stable.tile == previous) | (stable.tile == plain.tile)).all()
    assert (ratio[kept & (previous != plain.tile)] <= best[kept & (previous != plain.tile)]
            + slack[kept & (previous != plain.tile)]).all()
    assert (ratio[~kept] >= best[~kept] - slack[~kept]).all()
    # The reported distances are the true ones of the tiles shown.
    np.testing.assert_allclose(stable.distance, reference[cells, stable.tile], rtol=1e-6,
                               atol=1e-3)
    assert kept.sum() > (plain.tile == previous).sum()  # it did hold tiles back


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("max_uses", [1, 2])
def test_limits_solve_the_discounted_problem_exactly(library, seed, max_uses):
    # With repetition limits the assignment is the optimum of the costs where each cell's
    # previous tile is discounted: by brute force over the whole library.
    rng = np.random.default_rng(seed)
    settings = {"preset": "seed", "max_uses": max_uses}
    width, height = (32, 24) if max_uses == 1 else (48, 32)  # cells within the limits
    matcher, first = request_for(library, frame(0, width, height), **settings)
    previous = matcher.match(first).tile
    _, request = request_for(library, frame(int(rng.integers(1, 6)), width, height),
                             **settings)
    reference = brute_distances(request, 0.0).astype(np.int64)
    hundredths = int(rng.choice([10, 50, 100, 1000]))
    stable = StableMatcher(matcher, previous, hundredths).match(request)
    cells = np.arange(len(previous))
    assert np.bincount(stable.tile, minlength=len(library)).max() <= max_uses
    costs = reference.copy()
    costs[cells, previous] = discounted(reference[cells, previous], hundredths)
    rows, columns = linear_sum_assignment(np.repeat(costs, max_uses, axis=1))
    assert costs[cells, stable.tile].sum() == np.repeat(costs, max_uses, axis=1)[
        rows, columns].sum()
    # The distances and the objective reported are the true ones; the bound is below.
    np.testing.assert_array_equal(stable.distance, reference[cells, stable.tile])
    assert stable.assignment.objective == reference[cells, stable.tile].sum()
    assert stable.assignment.lower_bound <= stable.assignment.objective


@pytest.mark.parametrize("settings", [{}, {"preset": "seed"}, {"max_uses": 2}])
def test_strength_zero_is_every_frame_on_its_own(library, settings):
    options = MosaicOptions(cell_px=CELL, tile_px=TILE, **settings)
    picks = None
    for shift in (0, 1, 2, 6):
        picture = frame(shift)
        mosaic, picks_now = stable_frame(picture, library, options, picks, 0)
        made = make_mosaic(picture, library, options)
        np.testing.assert_array_equal(mosaic.placements.tile, made.placements.tile)
        np.testing.assert_array_equal(mosaic.placements.transform, made.placements.transform)
        np.testing.assert_array_equal(mosaic.placements.distance, made.placements.distance)
        # Strong picks of the frame before (from a stable run) change nothing at 0 either.
        if picks is not None:
            again, _ = stable_frame(picture, library, options, picks, 0)
            np.testing.assert_array_equal(again.placements.tile, made.placements.tile)
        _, picks = stable_frame(picture, library, options, picks, 10)
        assert picks_now.tile.tolist() == made.placements.tile.tolist()


def test_a_single_frame_and_frames_of_another_size_are_the_plain_mosaic(library):
    options = MosaicOptions(cell_px=CELL, tile_px=TILE, preset="seed")
    first = frame(0)
    mosaic, picks = stable_frame(first, library, options, None, 10)
    np.testing.assert_array_equal(mosaic.placements.tile,
                                  make_mosaic(first, library, options).placements.tile)
    # A frame of another grid: its previous picks say nothing, it is matched afresh.
    for width, height in ((56, 40), (16, 8), (8, 48)):
        other = frame(1, width, height)
        mosaic, later = stable_frame(other, library, options, picks, 10)
        np.testing.assert_array_equal(mosaic.placements.tile,
                                      make_mosaic(other, library, options).placements.tile)
        assert (later.rows, later.cols) == (height // CELL, width // CELL)
    # The same grid from a frame a few pixels larger (centre-cropped the same way): held.
    larger = shifted_picture(50, 34, 0)
    mosaic, _ = stable_frame(larger, library, options, picks, 10)
    np.testing.assert_array_equal(mosaic.placements.tile, picks.tile)


@pytest.mark.parametrize("settings", [{"preset": "seed"}, {}, {"max_uses": 2}])
def test_all_black_frames_and_cuts_to_and_from_them(library, settings):
    options = MosaicOptions(cell_px=CELL, tile_px=TILE, **settings)
    black = np.zeros((32, 48, 3), np.uint8)
    picture = frame(3)
    # A picture, then black: a cut (every cell changed), the plain mosaic of black.
    _, picks = stable_frame(picture, library, options, None, 10)
    mosaic, black_picks = stable_frame(black, library, options, picks, 10)
    plain_black = make_mosaic(black, library, options).placements
    np.testing.assert_array_equal(mosaic.placements.tile, plain_black.tile)
    assert black_picks.before is not None  # the scene cut from, for one frame
    # Black again: nothing changed, every tile held (every cell ties or keeps).
    mosaic, again = stable_frame(black, library, options, black_picks, 10)
    np.testing.assert_array_equal(mosaic.placements.tile, black_picks.tile)
    assert np.isfinite(np.asarray(mosaic.placements.distance, np.float64)).all()
    assert again.before is None
    # Black twice, then another picture: a cut again, its plain mosaic.
    other = np.ascontiguousarray(frame(40)[::-1, ::-1])
    mosaic, _ = stable_frame(other, library, options, again, 10)
    np.testing.assert_array_equal(mosaic.placements.tile,
                                  make_mosaic(other, library, options).placements.tile)


def test_discounted_is_the_exact_floor_of_the_division():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.integers(0, 10**6, 200), rng.integers(0, 2**62, 200),
                             [0, 1, 99, 100, 101, np.iinfo(np.int64).max]]).astype(np.int64)
    for hundredths in (1, 25, 100, 333, 1000):
        got = discounted(values, hundredths)
        assert got.dtype.kind == "i"
        expected = [int(Fraction(int(value) * 100, 100 + hundredths)) for value in values]
        assert got.tolist() == expected
    floats = rng.random(20) * 1e9
    np.testing.assert_allclose(discounted(floats, 25), floats / 1.25)


def test_cell_signature_is_the_mean_of_near_equal_blocks_by_brute_force():
    rng = np.random.default_rng(1)
    for height in range(1, 11):
        for width in (1, 3, 4, 5, 6, 7, 9, 12):
            cells = rng.integers(0, 256, (3, height, width, 3), np.uint8)
            signature = cell_signature(cells)
            rows, cols = min(4, height), min(4, width)
            assert signature.shape == (3, rows, cols, 3) and signature.dtype == np.uint8
            row_edges = np.linspace(0, height, rows + 1).round().astype(int)
            col_edges = np.linspace(0, width, cols + 1).round().astype(int)
            for edges, side in ((row_edges, height), (col_edges, width)):
                sizes = np.diff(edges)
                assert sizes.sum() == side and sizes.min() >= 1 and np.ptp(sizes) <= 1
            for i in range(rows):
                for j in range(cols):
                    block = cells[:, row_edges[i]:row_edges[i + 1],
                                  col_edges[j]:col_edges[j + 1]].astype(np.float64)
                    np.testing.assert_array_equal(signature[:, i, j],
                                                  np.rint(block.mean(axis=(1, 2))))


def test_a_change_past_the_threshold_and_not_at_it():
    flat = np.full((3, 4, 4, 3), 100, np.uint8)
    level = int(CHANGE_LEVELS)
    moved = flat + np.array([level - 1, level, level + 1], np.uint8)[:, None, None, None]
    assert changed_cells(moved, flat).tolist() == [False, False, True]
    assert changed_cells(flat, moved).tolist() == [False, False, True]  # either way round
    black = np.zeros_like(flat)
    assert not changed_cells(black, black).any()
