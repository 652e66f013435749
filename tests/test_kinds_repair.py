"""The repair of the kinds' optimal flow against fresh solves of the grown lists."""

from __future__ import annotations

import numpy as np
import pytest

from mosaicist.match import _kernels, _kinds_repair
from mosaicist.match._assign import flow_units
from mosaicist.match._groups import least_prices
from mosaicist.match._kinds_repair import repair_kinds

pytest.importorskip("ortools")


def _flow(kind, tile, distance, kinds, tiles, cap, supply, outside):
    base = np.full(kinds, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(base, kind, distance)
    return flow_units(kinds, kind, tile, tiles, distance - base[kind], base, cap, outside,
                      supply=supply)


def _sizes(rng, fewest_kinds: int, fewest_tiles: int, most_cells: int):
    """Kinds, tiles, cap and each kind's cells (mostly one, some up to ``most_cells``)."""
    kinds = int(rng.integers(fewest_kinds, 30))
    tiles = int(rng.integers(fewest_tiles, 60))
    cap = int(rng.integers(1, 4))
    supply = np.ones(kinds, np.int64)
    many = rng.random(kinds) < 0.3
    supply[many] = rng.integers(2, most_cells, many.sum())
    return kinds, tiles, cap, supply


def _grown_problem(seed: int, large: bool):
    """An optimum on some pairs of a random problem, its least prices, and more pairs."""
    rng = np.random.default_rng(seed)
    # Mostly kinds of one cell; with ``large``, some of many (more than their new pairs
    # can take, so that their breaking pairs are filled rather than the kind moved).
    kinds, tiles, cap, supply = _sizes(rng, 2, 5, 6 if not large else 12)
    if supply.sum() > cap * tiles:
        return None
    distances = rng.integers(0, 1000, (kinds, tiles))
    kind, tile = np.nonzero(np.ones((kinds, tiles), bool))
    order = rng.permutation(len(kind))
    kind, tile = kind[order], tile[order]
    distance = distances[kind, tile].astype(np.int64)
    first = int(len(kind) * rng.uniform(0.2, 0.7))
    grown = int(len(kind) * rng.uniform(0.7, 1.0))
    if len(np.unique(kind[:first])) < kinds:
        return None
    limit = np.minimum(supply, cap)
    largest = np.zeros(kinds, np.int64)
    np.maximum.at(largest, kind[:grown], distance[:grown])
    outside = 2 * largest + 1
    solved = _flow(kind[:first], tile[:first], distance[:first], kinds, tiles, cap, supply,
                   outside)
    if solved is None or solved[1].any():
        return None
    units = solved[0]
    load = np.bincount(tile[:first], units, minlength=tiles)
    priced = least_prices(kind[:first], tile[:first], distance[:first], units,
                          units < limit[kind[:first]], load >= cap, kinds, tiles)
    assert priced is not None
    price, cost = priced
    return (kind[:grown], tile[:grown], distance[:grown], units, price, cost, supply, limit,
            outside, cap, tiles)


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("large", [False, True])
def test_a_repair_reaches_the_optimum_of_the_grown_lists(monkeypatch, compiled, large):
    if compiled:
        pytest.importorskip("numba")
    filled, moved = [], []
    repaired = 0
    for seed in range(60):
        problem = _grown_problem(seed, large)
        if problem is None:
            continue
        kind, tile, distance, units, price, cost, supply, limit, outside, cap, tiles = problem
        repaired_flow = repair_kinds(*problem, budget=1 << 60, compiled=compiled)
        fresh = _flow(kind, tile, distance, len(supply), tiles, cap, supply, outside)
        assert fresh is not None and repaired_flow is not None
        optimum = int((fresh[0] * distance).sum() + (fresh[1] * outside).sum())
        flow, out = repaired_flow
        repaired += 1
        np.testing.assert_array_equal(np.bincount(kind, flow, minlength=len(supply)) + out,
                                      supply)
        assert (np.bincount(tile, flow, minlength=tiles) <= cap).all()
        assert ((flow >= 0) & (flow <= limit[kind])).all() and (out >= 0).all()
        assert int((flow * distance).sum() + (out * outside).sum()) == optimum
        total = distance + price[tile]
        breaking = np.bincount(kind[total < cost[kind]], minlength=len(supply))
        moved.append(int(((breaking > 0) & (supply <= breaking * limit)).sum()))
        filled.append(int(((breaking > 0) & (supply > breaking * limit)).sum()))
    assert repaired >= 30
    # Both ways of breaking a kind's proof were repaired: kinds moved, pairs filled.
    assert sum(moved) > 0
    if large:
        assert sum(filled) > 0


def test_nothing_broken_keeps_the_flow_and_a_small_budget_gives_up():
    problem = None
    for seed in range(40):
        problem = _grown_problem(seed, large=True)
        if problem is not None:
            kind, tile, distance, units, price, cost, *rest = problem
            if (distance + price[tile] < cost[kind]).sum() > 3:
                break
    assert problem is not None
    kind, tile, distance, units, price, cost, supply, limit, outside, cap, tiles = problem
    first = len(units)
    # The old pairs alone: the least prices prove them, nothing to move.
    same = repair_kinds(kind[:first], tile[:first], distance[:first], *problem[3:],
                        compiled=False)
    assert same is not None
    np.testing.assert_array_equal(same[0], units)
    assert not same[1].any()
    # Too few arcs to search, or an expected cost past the budget: None, for a fresh solve.
    assert repair_kinds(*problem, budget=0, compiled=False) is None
    assert repair_kinds(*problem, budget=10, work=np.array([1, 1000]), compiled=False) is None
    # Costs past the limit of the loop's integers.
    huge = distance.copy()
    huge[-1] = _kinds_repair.COST_LIMIT
    assert repair_kinds(kind, tile, huge, *problem[3:], compiled=False) is None


def test_a_flow_past_the_cap_or_a_price_on_a_tile_with_room_is_refused():
    kind = np.array([0, 1], np.int64)
    tile = np.array([0, 0], np.int64)
    distance = np.array([1, 1], np.int64)
    units = np.array([1, 1], np.int64)
    ones = np.ones(2, np.int64)
    outside = np.full(2, 9, np.int64)
    assert repair_kinds(kind, tile, distance, units, np.zeros(2, np.int64), ones, ones, ones,
                        outside, 1, 2, compiled=False) is None
    # One unit on each tile at cap 2: a tile with room has no price in a proof.
    tile = np.array([0, 1], np.int64)
    assert repair_kinds(kind, tile, distance, units, np.array([0, 1], np.int64), 2 * ones,
                        ones, ones, outside, 2, 2, compiled=False) is None
    assert repair_kinds(kind, tile, distance, units, np.zeros(2, np.int64), ones, ones, ones,
                        outside, 2, 2, compiled=False) is not None


def _outside_problem(seed: int):
    """An optimum with units outside on a few contested pairs, its least prices, and more
    pairs (the round after it lists tiles with room)."""
    rng = np.random.default_rng(seed)
    kinds, tiles, cap, supply = _sizes(rng, 3, 8, 16)
    if supply.sum() > cap * tiles:
        return None
    distances = rng.integers(0, 1000, (kinds, tiles))
    kind, tile = np.nonzero(np.ones((kinds, tiles), bool))
    # Each kind lists first a few of the same few tiles: most of its units go outside.
    contested = rng.choice(tiles, 3, replace=False)
    first = np.isin(tile, contested) & (rng.random(len(kind)) < 0.7)
    first[np.searchsorted(kind, np.arange(kinds)) + contested[0]] = True
    grown = first | (rng.random(len(kind)) < rng.uniform(0.05, 1.0))
    order = np.r_[np.flatnonzero(first), np.flatnonzero(grown & ~first)]
    kind, tile = kind[order], tile[order]
    distance = distances[kind, tile].astype(np.int64)
    listed = int(first.sum())
    limit = np.minimum(supply, cap)

    def outside_of(pairs: int) -> np.ndarray:
        largest = np.zeros(kinds, np.int64)
        np.maximum.at(largest, kind[:pairs], distance[:pairs])
        return 2 * largest + 1

    before = outside_of(listed)
    solved = _flow(kind[:listed], tile[:listed], distance[:listed], kinds, tiles, cap, supply,
                   before)
    if solved is None or not solved[1].any():
        return None
    units, out = solved
    load = np.bincount(tile[:listed], units, minlength=tiles)
    priced = least_prices(kind[:listed], tile[:listed], distance[:listed], units,
                          units < limit[kind[:listed]], load >= cap, kinds, tiles,
                          kind_floor=np.where(out > 0, before, np.iinfo(np.int64).min),
                          compiled=False)
    assert priced is not None
    price, cost = priced
    if _kernels.numba_available():
        again = least_prices(kind[:listed], tile[:listed], distance[:listed], units,
                             units < limit[kind[:listed]], load >= cap, kinds, tiles,
                             kind_floor=np.where(out > 0, before, np.iinfo(np.int64).min),
                             compiled=True)
        assert again is not None
        np.testing.assert_array_equal(again[0], price)
        np.testing.assert_array_equal(again[1], cost)
    # The least prices prove that optimum: its outside columns at their kinds' costs,
    # the others no cheaper, no pair with room below its kind's cost.
    np.testing.assert_array_equal(cost[out > 0], before[out > 0])
    assert (before >= cost).all()
    room = units < limit[kind[:listed]]
    assert (distance[:listed][room] + price[tile[:listed][room]]
            >= cost[kind[:listed][room]]).all()
    return (kind, tile, distance, units, price, cost, supply, limit, outside_of(len(kind)),
            cap, tiles, out)


@pytest.mark.parametrize("compiled", [False, True])
def test_a_repair_places_the_units_left_outside(compiled):
    if compiled:
        pytest.importorskip("numba")
    repaired = lost = placed_all = 0
    for seed in range(80):
        problem = _outside_problem(seed)
        if problem is None:
            continue
        *problem, out = problem
        kind, tile, distance, units, price, cost, supply, limit, outside, cap, tiles = problem
        repaired_flow = repair_kinds(*problem, budget=1 << 60, compiled=compiled,
                                     outside_units=out)
        fresh = _flow(kind, tile, distance, len(supply), tiles, cap, supply, outside)
        assert fresh is not None and repaired_flow is not None
        flow, still_out = repaired_flow
        repaired += 1
        placed_all += not still_out.any()
        np.testing.assert_array_equal(
            np.bincount(kind, flow, minlength=len(supply)) + still_out, supply)
        assert (np.bincount(tile, flow, minlength=tiles) <= cap).all()
        assert ((flow >= 0) & (flow <= limit[kind])).all() and (still_out >= 0).all()
        assert (int((flow * distance).sum() + (still_out * outside).sum())
                == int((fresh[0] * distance).sum() + (fresh[1] * outside).sum()))
        # Left out of the repair, the units outside are lost: no flow of every unit.
        without = repair_kinds(*problem, budget=1 << 60, compiled=compiled)
        lost += without is None or bool(
            (np.bincount(kind, without[0], minlength=len(supply)) + without[1] < supply).any())
    assert repaired >= 30 and placed_all >= 20
    assert lost == repaired


@pytest.mark.parametrize("count", [3, 1 << 16, (1 << 16) + 1, 1 << 20])
def test_pairs_are_grouped_in_their_stable_order_whatever_the_keys_range(count):
    keys = np.random.default_rng(count).integers(0, count, 50_000)
    order = _kinds_repair._grouped_order(keys, count)
    assert order.dtype == np.int64
    assert np.array_equal(order, np.argsort(keys, kind="stable"))
