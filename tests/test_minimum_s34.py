"""A minimum of uses under a use cap: hostile cases against a dense oracle."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from test_assign import (  # noqa: F401 (solver: every test with each exact solver)
    DenseSearch,
    check_placement,
    full_distances,
    solver,
    top_k,
)

from mosaicist.match import assign_tiles


def exact_minimum(full, min_uses, max_uses):
    """Oracle: each tile's first ``min_uses`` replicas rewarded past any cost difference."""
    count, tiles = full.shape
    base = (full - full.min()).astype(np.float64)
    reward = float(base.max()) * count + 1
    assert reward < 2.0**52
    cost = np.repeat(base, max_uses, axis=1)
    cost[:, (np.arange(cost.shape[1]) % max_uses) < min_uses] -= reward
    rows, cols = linear_sum_assignment(cost)
    tile = cols // max_uses
    assert (np.bincount(tile, minlength=tiles) >= min_uses).all()
    return sum(int(full[row, column]) for row, column in zip(rows, tile, strict=True))


def certified(full, rows, cols, min_uses, max_uses, listed=3, min_spacing=1):
    """The certified assignment on ``listed`` nearest tiles, checked against every limit."""
    tiles = full.shape[1]
    result = assign_tiles(*top_k(full, listed), rows, cols, max_uses=max_uses,
                          min_spacing=min_spacing, search=DenseSearch(full),
                          min_uses=min_uses, tile_count=tiles)
    check_placement(result.tile, full, rows, cols, max_uses, min_spacing)
    assert np.bincount(result.tile, minlength=tiles).min() >= min_uses
    assert result.objective == sum(int(full[cell, tile]) for cell, tile in enumerate(result.tile))
    assert result.lower_bound <= result.objective
    return result


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize(("min_uses", "max_uses"), [(1, 1), (1, 2), (2, 2), (2, 3), (3, 4)])
def test_no_slack_every_tile_exactly_its_minimum(seed, min_uses, max_uses):
    # N = K * T: every tile fills exactly its minimum, no cell has a choice of count.
    rng = np.random.default_rng(seed)
    rows, cols = 6, 8
    tiles = rows * cols // min_uses
    full = full_distances(rng, rows * cols, tiles, clusters=2)
    result = certified(full, rows, cols, min_uses, max_uses)
    assert (np.bincount(result.tile, minlength=tiles) == min_uses).all()
    optimum = exact_minimum(full, min_uses, max_uses)
    assert result.lower_bound <= optimum <= result.objective
    # One use each is a square assignment, which 40 rounds on 3-lists need not prove.
    assert result.certified or max_uses == 1
    if result.certified:
        assert result.objective == result.lower_bound == optimum


@pytest.mark.parametrize(("tiles", "min_uses", "max_uses"),
                         [(1, 1, 6), (1, 6, 6), (2, 1, 5), (2, 3, 3)])
def test_one_or_two_tiles(tiles, min_uses, max_uses):
    full = full_distances(np.random.default_rng(4), 6, tiles)
    result = certified(full, 2, 3, min_uses, max_uses, listed=tiles)
    assert result.certified
    assert result.objective == result.lower_bound == exact_minimum(full, min_uses, max_uses)


@pytest.mark.parametrize("min_uses", [1, 2])
def test_duplicate_tiles(min_uses):
    # Identical columns: every tie between copies must still give each its minimum.
    base = full_distances(np.random.default_rng(2), 48, 10, clusters=2)
    full = np.concatenate([base, base, base[:, :4]], axis=1)
    result = certified(full, 6, 8, min_uses, 2)
    assert result.certified
    assert result.objective == result.lower_bound == exact_minimum(full, min_uses, 2)


@pytest.mark.parametrize("value", [0, 7])
def test_a_flat_target(value):
    full = np.full((48, 24), value, np.int64)
    result = certified(full, 6, 8, 2, 2)
    assert result.certified and result.objective == result.lower_bound == 48 * value


@pytest.mark.parametrize("listed", [3, 30])
def test_tinted_search_units_past_the_int64_range(listed):
    # 10^14 times small distances: totals past 2^63, exact, and the optimum scaled.
    rng = np.random.default_rng(6)
    small = full_distances(rng, 48, 30, clusters=2) + 4000
    result = certified(small * 10**14, 6, 8, 1, 2, listed=listed)
    optimum = exact_minimum(small, 1, 2) * 10**14
    assert optimum > np.iinfo(np.int64).max
    assert result.certified and result.objective == result.lower_bound == optimum


@pytest.mark.parametrize("far", [10**12, 10**15])
def test_one_tile_far_from_every_cell(far):
    rng = np.random.default_rng(1)
    full = full_distances(rng, 48, 30, clusters=2)
    full[:, 0] += far
    result = certified(full, 6, 8, 1, 2)
    assert result.certified and result.objective == result.lower_bound
    # The far tile fills exactly one cell; the oracle's reward fits for 10^12 only.
    assert np.bincount(result.tile, minlength=30)[0] == 1
    if far <= 10**12:
        assert result.objective == exact_minimum(full, 1, 2)


@pytest.mark.parametrize("seed", range(6))
def test_a_barely_feasible_spacing_keeps_the_minimum(seed):
    # 12 tiles of exactly 3 uses, 3 cells apart, on 6 x 6 cells (each tile may take 4):
    # the spacing rounds' forbidden pairs left a tile short, and the solve on the rest
    # was taken as the lists' fault (ShortLists), where a placement exists.
    rng = np.random.default_rng(seed)
    for _ in range(3):
        full_distances(rng, 48, 10)
    full = full_distances(rng, 36, 12, clusters=2)
    result = certified(full, 6, 6, 3, 4, listed=12, min_spacing=3)
    assert (np.bincount(result.tile, minlength=12) == 3).all()
