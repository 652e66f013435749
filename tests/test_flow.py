"""Repairing a capacitated assignment after its graph grew: against fresh solves."""

from __future__ import annotations

import numpy as np
import pytest

from mosaicist.match import _assign, _flow


def random_lists(rng, cells, tiles, share, clusters=3):
    """Distances of cells crowding around a few colours, and random lists (each cell's best in)."""
    tile_features = rng.integers(0, 30, (tiles, 3))
    centres = rng.integers(0, 30, (clusters, 3))
    cell_features = centres[rng.integers(0, clusters, cells)] + rng.integers(-2, 3, (cells, 3))
    full = ((cell_features[:, None, :] - tile_features[None, :, :]) ** 2).sum(-1)
    listed = rng.random((cells, tiles)) < share
    listed[np.arange(cells), full.argmin(axis=1)] = True
    return full.astype(np.int64), listed


def edges_of(full, listed):
    """``_Edges`` of the pairs ``listed`` ((N, M) bool), best first."""
    row, tile = np.nonzero(listed)
    order = np.lexsort((tile, full[row, tile], row))
    row, tile = row[order], tile[order]
    dist = full[row, tile]
    length = np.bincount(row, minlength=full.shape[0])
    return _assign._Edges(row.astype(np.int64), tile.astype(np.int64), dist, length,
                          np.zeros(full.shape[0], np.int64))


def optimum_and_prices(edges, cap, outside, tile_count):
    """A fresh optimal solve, its prices and its cells' costs (as the pricing rounds keep)."""
    choice = _assign._solve(len(outside), edges, np.ones(len(edges.row), bool), cap, outside)
    priced = _assign.tile_prices(edges, choice, cap, outside)
    assert priced is not None
    return choice, _assign._priced_state(edges, choice, priced, outside, tile_count)


def objective(edges, choice, outside):
    inside = choice >= 0
    return int(edges.dist[choice[inside]].sum() + outside[~inside].sum())


def repaired(edges, state, outside, cap, compiled):
    tiles, tile_id = _assign._compact(edges.tile)
    return _flow.repair(state, edges.row, edges.tile, tiles, tile_id, edges.dist,
                        edges.length, outside, cap, compiled=compiled)


@pytest.fixture(params=["python", "compiled"])
def compiled(request):
    if request.param == "compiled" and not _flow.can_repair():
        pytest.skip("Numba is not installed")
    return request.param == "compiled"


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("cap", [1, 2, 3])
def test_repair_after_growth_is_the_fresh_optimum(seed, cap, compiled):
    rng = np.random.default_rng(seed)
    cells, tiles = 40, 60
    full, before = random_lists(rng, cells, tiles, 0.08)
    after = before | (rng.random((cells, tiles)) < 0.1)
    small = edges_of(full, before)
    outside = 2 * full.max(axis=1) + 1
    _, state = optimum_and_prices(small, cap, outside, tiles)
    grown = edges_of(full, after)
    # Some cells' outside columns move too, as the rounds double those of the cells
    # that stay outside.
    moved = outside.copy()
    moved[rng.random(cells) < 0.2] *= 2
    choice = repaired(grown, state, moved, cap, compiled)
    assert choice is not None
    fresh = _assign._solve(cells, grown, np.ones(len(grown.row), bool), cap, moved)
    assert objective(grown, choice, moved) == objective(grown, fresh, moved)
    # A valid assignment: one edge of each cell's own, no tile past its cap.
    inside = choice >= 0
    assert (grown.row[choice[inside]] == np.flatnonzero(inside)).all()
    assert np.bincount(grown.tile[choice[inside]], minlength=tiles).max(initial=0) <= cap
    # And the pricing rounds can price it: it is optimal on the grown edges.
    assert _assign.tile_prices(grown, choice, cap, moved) is not None


def test_repair_of_a_crowd_moves_cells_along_long_paths(compiled):
    # Every cell wants the same few tiles: each new edge starts a chain of moves.
    rng = np.random.default_rng(7)
    cells, tiles = 30, 45
    full = np.sort(rng.integers(0, 1000, (1, tiles)), axis=1).repeat(cells, 0)
    full = full + rng.integers(0, 30, (cells, tiles))
    before = np.zeros((cells, tiles), bool)
    before[:, :5] = True
    after = before.copy()
    after[:, :35] = True
    small, grown = edges_of(full, before), edges_of(full, after)
    outside = np.full(cells, 4000, np.int64)
    _, state = optimum_and_prices(small, 1, outside, tiles)
    assert (state.tile < 0).sum() == cells - 5
    choice = repaired(grown, state, outside, 1, compiled)
    fresh = _assign._solve(cells, grown, np.ones(len(grown.row), bool), 1, outside)
    assert objective(grown, choice, outside) == objective(grown, fresh, outside)
    assert (choice >= 0).all()


def test_repair_declines_numbers_that_could_overflow():
    full = np.array([[1, 2], [2, 1]], np.int64)
    edges = edges_of(full, np.ones((2, 2), bool))
    outside = np.array([_flow.COST_LIMIT, 5], np.int64)
    state = _flow.FlowState(np.array([0, 1]), np.array([1, 1], np.int64),
                            np.zeros(2, np.int64), outside)
    assert repaired(edges, state, outside, 1, False) is None


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("cap", [1, 2])
def test_least_prices_are_those_of_the_numpy_rounds(seed, cap, compiled):
    """The label-correcting loop finds the NumPy rounds' least prices, and the same cycles."""
    rng = np.random.default_rng(seed)
    cells, tiles = 40, 50
    full, listed = random_lists(rng, cells, tiles, 0.15)
    edges = edges_of(full, listed)
    outside = 2 * full.max(axis=1) + 1
    choice = _assign._solve(cells, edges, np.ones(len(edges.row), bool), cap, outside)
    _, tile_id = _assign._compact(edges.tile)
    inside = choice >= 0
    assigned = np.where(inside, tile_id[np.maximum(choice, 0)], -1)
    paid = np.where(inside, edges.dist[np.maximum(choice, 0)], outside)
    count = int(tile_id.max()) + 1
    prices, cost = _flow.least_prices(edges.length, tile_id, edges.dist, assigned, paid,
                                      count, compiled=compiled)
    expected_prices, expected_cost = _assign._least_prices(edges, tile_id, assigned, paid,
                                                           count)
    assert np.array_equal(prices, expected_prices) and np.array_equal(cost, expected_cost)
    # Two placed cells swapped to their worse pair: a cycle of raises, in both.
    placed = np.flatnonzero(inside)
    for first, second in zip(placed[:-1], placed[1:], strict=True):
        a, b = assigned[first], assigned[second]
        if a == b or not (listed[first, edges.tile[tile_id == b][0]]
                          and listed[second, edges.tile[tile_id == a][0]]):
            continue
        tile_a, tile_b = edges.tile[tile_id == a][0], edges.tile[tile_id == b][0]
        if full[first, tile_b] + full[second, tile_a] <= full[first, tile_a] + full[second,
                                                                                    tile_b]:
            continue
        worse_assigned, worse_paid = assigned.copy(), paid.copy()
        worse_assigned[[first, second]] = b, a
        worse_paid[[first, second]] = full[first, tile_b], full[second, tile_a]
        cycle_prices, _ = _flow.least_prices(edges.length, tile_id, edges.dist,
                                             worse_assigned, worse_paid, count,
                                             compiled=compiled)
        no_prices, _ = _assign._least_prices(edges, tile_id, worse_assigned, worse_paid, count)
        assert (cycle_prices is None) == (no_prices is None)
        break


def surcharged_objective(edges, choice, outside, minimum, surcharge):
    """The pricing rounds' objective with a minimum: each use past it pays the surcharge."""
    inside = choice >= 0
    uses = np.bincount(edges.tile[choice[inside]])
    return objective(edges, choice, outside) + surcharge * int(
        np.maximum(uses - minimum, 0).sum())


@pytest.mark.parametrize("seed", range(16))
@pytest.mark.parametrize(("cap", "minimum"), [(2, 1), (3, 1), (3, 2), (4, 2)])
def test_repair_with_a_minimum_is_the_fresh_optimum(seed, cap, minimum, compiled):
    """Uses past a minimum at a surcharge (the pricing rounds' ``min_uses``): the repair
    gives the fresh solve's objective, and prices prove it on the grown edges."""
    rng = np.random.default_rng(100 + seed)
    # Crowded: about as many cells as the tiles' minimums and more, so that tiles sit
    # below, at and past their minimum, and some at the cap.
    tiles = 24
    cells = int(rng.integers(tiles * minimum - 4, tiles * cap - 2))
    full, before = random_lists(rng, cells, tiles, 0.1)
    after = before | (rng.random((cells, tiles)) < 0.15)
    small, grown = edges_of(full, before), edges_of(full, after)
    reach = 2 * full.max(axis=1) + 1
    surcharge = int(rng.choice([int(reach.max()) // 3, 2 * int(reach.max())]))
    outside = reach + surcharge
    allowed = np.ones(len(small.row), bool)
    start = _assign._solve(cells, small, allowed, cap, outside, minimum, surcharge=surcharge)
    priced = _assign.tile_prices(small, start, cap, outside, minimum, surcharge)
    assert priced is not None
    state = _assign._priced_state(small, start, priced, outside, tiles)
    moved = outside.copy()
    moved[rng.random(cells) < 0.2] *= 2
    tile_set, tile_id = _assign._compact(grown.tile)
    choice = _flow.repair(state, grown.row, grown.tile, tile_set, tile_id, grown.dist,
                          grown.length, moved, cap, compiled=compiled, minimum=minimum,
                          surcharge=surcharge)
    assert choice is not None
    fresh = _assign._solve(cells, grown, np.ones(len(grown.row), bool), cap, moved, minimum,
                           surcharge=surcharge)
    assert (surcharged_objective(grown, choice, moved, minimum, surcharge)
            == surcharged_objective(grown, fresh, moved, minimum, surcharge))
    inside = choice >= 0
    assert (grown.row[choice[inside]] == np.flatnonzero(inside)).all()
    assert np.bincount(grown.tile[choice[inside]], minlength=tiles).max(initial=0) <= cap
    assert _assign.tile_prices(grown, choice, cap, moved, minimum, surcharge) is not None
