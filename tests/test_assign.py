"""Repetition control: optimality against a dense reference, limits, growth, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import record_results
from scipy.optimize import linear_sum_assignment

from mosaicist.errors import MosaicistError, OptionError
from mosaicist.match import (
    _assign,
    assign_tiles,
    check_feasible,
    spacing_violations,
    tile_capacity,
)


@pytest.fixture(autouse=True, params=["flow", "lapjv"])
def solver(request, monkeypatch):
    """Every test with each exact solver: OR-Tools' min-cost flow and SciPy's LAPJVsp."""
    if request.param == "flow":
        pytest.importorskip("ortools")
    monkeypatch.setattr(_assign, "SOLVER", request.param)
    return request.param


def full_distances(rng, cells, tiles, dim=3, clusters=None):
    """Integer squared distances between random cell and tile features."""
    tile_features = rng.integers(0, 40, (tiles, dim))
    if clusters is None:
        cell_features = rng.integers(0, 40, (cells, dim))
    else:
        # Cells crowd around a few colours, so many want the same tiles.
        centres = rng.integers(0, 40, (clusters, dim))
        noise = rng.integers(-2, 3, (cells, dim))
        cell_features = centres[rng.integers(0, clusters, cells)] + noise
    diff = cell_features[:, None, :] - tile_features[None, :, :]
    return (diff**2).sum(-1).astype(np.int64)


def top_k(full, k):
    """Each cell's k nearest tiles (ties by position), padded with -1 / int64 max."""
    count, tiles = full.shape
    order = np.lexsort((np.broadcast_to(np.arange(tiles), full.shape), full), axis=1)[:, :k]
    candidates = np.full((count, k), -1, np.int64)
    distances = np.full((count, k), np.iinfo(np.int64).max, np.int64)
    width = order.shape[1]
    candidates[:, :width] = order
    distances[:, :width] = np.take_along_axis(full, order, 1)
    return candidates, distances


def dense_optimum(full, cap):
    """Reference: linear_sum_assignment with every tile replicated ``cap`` times."""
    count, tiles = full.shape
    cap = min(cap, count)
    cost = np.repeat(full, cap, axis=1)
    rows, cols = linear_sum_assignment(cost)
    return int(cost[rows, cols].sum())


def check_placement(tile, full, rows, cols, max_uses, min_spacing):
    """Independent checker: uses, pairwise spacing, and distances from the full matrix."""
    tile = np.asarray(tile)
    assert tile.shape == (rows * cols,)
    assert (tile >= 0).all()
    if max_uses is not None:
        assert np.bincount(tile).max() <= max_uses
    if min_spacing > 1:
        r, c = np.divmod(np.arange(rows * cols), cols)
        for t in np.unique(tile):
            where = np.flatnonzero(tile == t)
            for a, b in itertools.combinations(where, 2):
                assert max(abs(r[a] - r[b]), abs(c[a] - c[b])) >= min_spacing
    return int(full[np.arange(len(tile)), tile].sum())


class Source:
    """``more_candidates`` over a full distance matrix, counting its calls."""

    def __init__(self, full):
        self.full = full
        self.calls = []

    def __call__(self, k):
        self.calls.append(k)
        return top_k(self.full, k)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_uses", [1, 2, 3])
def test_optimal_matches_dense_reference(seed, max_uses):
    rng = np.random.default_rng(seed * 10 + max_uses)
    rows, cols, tiles = 5, 6, 40
    full = full_distances(rng, rows * cols, tiles, clusters=3)
    source = Source(full)
    candidates, distances = top_k(full, 3)
    result = assign_tiles(candidates, distances, rows, cols, max_uses=max_uses,
                          more_candidates=source, max_candidates=64)
    reference = dense_optimum(full, max_uses)
    assert check_placement(result.tile, full, rows, cols, max_uses, 1) == result.objective
    assert np.array_equal(result.distance, full[np.arange(rows * cols), result.tile])
    assert result.objective == reference
    assert result.lower_bound <= reference
    assert result.gap == pytest.approx((result.objective - result.lower_bound)
                                       / result.lower_bound)
    greedy = assign_tiles(candidates, distances, rows, cols, max_uses=max_uses,
                          method="greedy", more_candidates=Source(full), max_candidates=64)
    check_placement(greedy.tile, full, rows, cols, max_uses, 1)
    assert result.objective <= greedy.objective
    assert greedy.lower_bound <= result.objective


@pytest.mark.parametrize("seed", range(4))
def test_short_lists_without_growth_bound_the_optimum(seed):
    rng = np.random.default_rng(100 + seed)
    rows, cols, tiles = 4, 5, 30
    full = full_distances(rng, rows * cols, tiles)
    candidates, distances = top_k(full, 6)
    result = assign_tiles(candidates, distances, rows, cols, max_uses=1)
    reference = dense_optimum(full, 1)
    check_placement(result.tile, full, rows, cols, 1, 1)
    # The lower bound is valid over the whole library, not just the lists.
    assert result.lower_bound <= reference <= result.objective
    assert result.candidates_used == 6


def test_complete_lists_are_proven_optimal():
    rng = np.random.default_rng(7)
    rows, cols, tiles = 6, 6, 20
    full = full_distances(rng, rows * cols, tiles, clusters=2)
    candidates, distances = top_k(full, tiles)
    result = assign_tiles(candidates, distances, rows, cols, max_uses=2)
    assert result.objective == dense_optimum(full, 2)


def test_growth_when_everyone_wants_the_same_tiles():
    rows, cols, tiles = 4, 4, 40
    # Every cell ranks the tiles alike: with max_uses 1 and 2 candidates, 14 cells
    # would be left without a tile.
    base = np.arange(tiles, dtype=np.int64) * 10
    full = base[None, :] + np.arange(rows * cols, dtype=np.int64)[:, None] % 3
    source = Source(full)
    candidates, distances = top_k(full, 2)
    result = assign_tiles(candidates, distances, rows, cols, max_uses=1,
                          more_candidates=source, max_candidates=64)
    assert source.calls and source.calls[0] == 4
    assert result.candidates_used >= rows * cols
    check_placement(result.tile, full, rows, cols, 1, 1)
    assert result.objective == dense_optimum(full, 1)
    assert result.gap == 0.0
    greedy_source = Source(full)
    greedy = assign_tiles(candidates, distances, rows, cols, max_uses=1, method="greedy",
                          more_candidates=greedy_source, max_candidates=64)
    assert greedy_source.calls
    check_placement(greedy.tile, full, rows, cols, 1, 1)


def test_short_lists_without_a_source_raise():
    rows, cols = 3, 3
    full = np.tile(np.arange(10, dtype=np.int64), (rows * cols, 1))
    candidates, distances = top_k(full, 2)
    for method in ("optimal", "greedy"):
        with pytest.raises(MosaicistError, match="no allowed tile"):
            assign_tiles(candidates, distances, rows, cols, max_uses=1, method=method)


def smooth_grid(rng, rows, cols, tiles):
    """Cells in 3x3 blocks of one colour: unconstrained, neighbours repeat tiles."""
    tile_features = rng.integers(0, 60, (tiles, 3))
    block = rng.integers(0, 60, ((rows + 2) // 3, (cols + 2) // 3, 3))
    cells = block.repeat(3, 0).repeat(3, 1)[:rows, :cols].reshape(-1, 3)
    cells = cells + rng.integers(-1, 2, cells.shape)
    diff = cells[:, None, :] - tile_features[None, :, :]
    return (diff**2).sum(-1).astype(np.int64)


@pytest.mark.parametrize("spacing", [2, 3])
@pytest.mark.parametrize("max_uses", [None, 3])
@pytest.mark.parametrize("method", ["optimal", "greedy"])
def test_spacing_is_respected(spacing, max_uses, method):
    rng = np.random.default_rng(spacing * 7 + (max_uses or 0))
    rows, cols, tiles = 9, 12, 60
    full = smooth_grid(rng, rows, cols, tiles)
    unconstrained = full.argmin(1)
    # The instance is meaningful: unconstrained, neighbours share tiles.
    assert len(spacing_violations(unconstrained, rows, cols, spacing)[0]) > 0
    candidates, distances = top_k(full, 8)
    result = assign_tiles(candidates, distances, rows, cols, max_uses=max_uses,
                          min_spacing=spacing, method=method, more_candidates=Source(full),
                          max_candidates=64)
    objective = check_placement(result.tile, full, rows, cols, max_uses, spacing)
    assert objective == result.objective
    assert result.lower_bound <= result.objective
    # The bound is below the best placement under the use cap alone.
    cap = tile_capacity(rows, cols, max_uses, spacing)
    assert result.lower_bound <= dense_optimum(full, cap)
    if method == "optimal":
        assert result.iterations >= 1


def test_spacing_optimal_not_worse_than_greedy_on_average():
    rng = np.random.default_rng(3)
    rows, cols, tiles = 12, 12, 80
    optimal = greedy = 0
    for _ in range(3):
        full = smooth_grid(rng, rows, cols, tiles)
        candidates, distances = top_k(full, 10)
        kwargs = dict(max_uses=2, min_spacing=3, more_candidates=Source(full), max_candidates=80)
        optimal += assign_tiles(candidates, distances, rows, cols, **kwargs).objective
        greedy += assign_tiles(candidates, distances, rows, cols, method="greedy",
                               **kwargs).objective
    assert optimal <= greedy


@pytest.mark.parametrize("marks", [1 << 22, 50])
def test_near_holders_is_the_brute_force_window(solver, monkeypatch, marks):
    # 50 marks: a band of one row at a time (the window's bands past their edges).
    monkeypatch.setattr(_assign, "WINDOW_MARKS", marks)
    rng = np.random.default_rng(8)
    rows, cols = 9, 11
    count = rows * cols
    placed = rng.integers(0, 12, count)
    placed[rng.random(count) < 0.1] = -1
    cells = rng.integers(0, count, 600)
    held = placed[cells]
    tiles = np.where((rng.random(600) < 0.3) & (held >= 0), held, rng.integers(0, 14, 600))
    centre = rng.integers(0, 40, (count, 2))
    # Both ways the grid is done (each chosen by its cost), whatever they cost here.
    by_window = lambda *args: _assign._near_by_window(*args[:6])  # noqa: E731
    by_rank = lambda *args: _assign._near_by_rank(*args[:3], *args[4:6], None)  # noqa: E731
    by_bucket = lambda *args: _assign._near_by_bucket(*args[:3], *args[4:7])  # noqa: E731
    layout = _assign.Layout(centre, 4)
    ways = [(1, None, _assign.near_holders), (3, layout, _assign.near_holders)]
    ways += [(spacing, None, way) for spacing in (2, 4)
             for way in (_assign.near_holders, by_window, by_rank, by_bucket)]
    # Holders sorted into squares of the spacing's side (many uses of a tile, adaptive
    # cells): the squares' edges, and centres on them, with several spacings.
    ways += [(spacing, layout, by_bucket) for spacing in (1, 2, 3, 5, 11)]
    for spacing, layout, way in ways:
        near = way(cells, tiles, placed, rows, cols, spacing, layout)
        for cell, tile, got in zip(cells.tolist(), tiles.tolist(), near.tolist(), strict=True):
            holders = [other for other in np.flatnonzero(placed == tile).tolist()
                       if other != cell]
            if layout is None:
                apart = [max(abs(other // cols - cell // cols), abs(other % cols - cell % cols))
                         for other in holders]
                reach = spacing
            else:
                apart = [int(np.abs(centre[other] - centre[cell]).max()) for other in holders]
                reach = spacing * layout.unit
            assert got == (spacing > 1 and any(gap < reach for gap in apart))


def test_spacing_rounds_forbid_the_tiles_held_around(monkeypatch):
    """After a spacing round no cell may take a tile a near cell holds: few rounds."""
    rng = np.random.default_rng(4)
    rows, cols, tiles = 14, 14, 60
    full = smooth_grid(rng, rows, cols, tiles)
    candidates, distances = top_k(full, 12)
    near_calls = record_results(monkeypatch, _assign, "near_holders")
    result = assign_tiles(candidates, distances, rows, cols, max_uses=4, min_spacing=4,
                          more_candidates=Source(full), max_candidates=60)
    check_placement(result.tile, full, rows, cols, 4, 4)
    assert len(near_calls) == result.iterations >= 1
    assert any(calls.any() for calls in near_calls)


@pytest.mark.parametrize("seed", [1, 5])
def test_spacing_rounds_end_where_forbidding_the_losers_alone_did_not(seed):
    """Forbidding each pair's loser alone ran past 60 rounds on these (an error)."""
    rng = np.random.default_rng(seed)
    rows = cols = 14
    full = smooth_grid(rng, rows, cols, 50)
    candidates, distances = top_k(full, 10)
    result = assign_tiles(candidates, distances, rows, cols, max_uses=4, min_spacing=4,
                          more_candidates=Source(full), max_candidates=50)
    check_placement(result.tile, full, rows, cols, 4, 4)
    assert result.iterations < _assign.MAX_SPACING_ROUNDS


def test_spacing_in_a_small_library_allows_the_tiles_held_around_again(monkeypatch):
    """Where leaving them out leaves a cell without a tile, they count no more for it."""
    rng = np.random.default_rng(0)
    rows = cols = 14
    full = smooth_grid(rng, rows, cols, 50)  # 196 cells, 200 uses
    candidates, distances = top_k(full, 3)
    set_edges = _assign._Solver._set_edges
    forbid = _assign._Solver._forbid
    again, held = [], []

    def forbidden(self, choice, a, b):
        forbid(self, choice, a, b)
        held.append(self.crowded_out.copy())

    def recorded(self, edges):
        # The same edges again: some pairs left out were allowed again.
        if getattr(self, "edges", None) is edges and held:
            before = held[-1]
            # Only ever allowed again, never left out anew, and fewer than before.
            assert not (self.crowded_out & ~before).any()
            again.append((int(before.sum()), int(self.crowded_out.sum())))
            held.append(self.crowded_out.copy())
        set_edges(self, edges)

    monkeypatch.setattr(_assign._Solver, "_forbid", forbidden)
    monkeypatch.setattr(_assign._Solver, "_set_edges", recorded)
    result = assign_tiles(candidates, distances, rows, cols, max_uses=4, min_spacing=4,
                          more_candidates=Source(full), max_candidates=50)
    check_placement(result.tile, full, rows, cols, 4, 4)
    assert again and all(after < before for before, after in again)
    # Those of the cells left without a tile first: not all at once.
    assert any(after > 0 for _, after in again)
    assert result.lower_bound <= result.objective


@pytest.mark.parametrize(("near", "kept_to_the_end"), [(8, True), (1, False)])
def test_spacing_rounds_on_complete_lists_solve_near_the_proven_prices(near, kept_to_the_end,
                                                                        monkeypatch):
    """Each cell keeps its ``near`` edges of least reduced cost; all again where too few."""
    monkeypatch.setattr(_assign, "SPACING_EDGES", near)
    kept, near_after = [], []
    keep_near = _assign._Solver._keep_near_for_spacing
    restricted = _assign._Solver._restricted

    def recorded(self, cost, price, choice):
        keep_near(self, cost, price, choice)
        kept.append(int(self._spacing_edges.sum()))

    def solved(self, keep=None):
        choice = restricted(self, keep)
        near_after.append(self._spacing_edges is not None)
        return choice

    monkeypatch.setattr(_assign._Solver, "_keep_near_for_spacing", recorded)
    monkeypatch.setattr(_assign._Solver, "_restricted", solved)
    rng = np.random.default_rng(2)
    rows, cols, tiles = 8, 9, 30
    full = full_distances(rng, rows * cols, tiles, clusters=3)
    candidates, distances = top_k(full, tiles)
    result = assign_tiles(candidates, distances, rows, cols, max_uses=3, min_spacing=3,
                          search=DenseSearch(full))
    check_placement(result.tile, full, rows, cols, 3, 3)
    assert result.certified and result.lower_bound == dense_optimum(full, 3)
    # Ties are kept, so a cell may keep more than ``near``, never all of its 30.
    assert len(kept) == 1 and near * rows * cols <= kept[0] < tiles * rows * cols
    # One edge a cell leaves some cell without a tile: every edge comes back.
    assert result.iterations >= 1 and all(now == kept_to_the_end for now in near_after)


def test_spacing_violations_both_strategies_agree():
    rng = np.random.default_rng(5)
    rows, cols = 20, 25
    tile = rng.integers(0, 40, rows * cols)
    r, c = np.divmod(np.arange(rows * cols), cols)
    for spacing in (2, 3, 6):
        a, b = spacing_violations(tile, rows, cols, spacing)
        found = set(zip(a.tolist(), b.tolist(), strict=True))
        expected = {
            (i, j)
            for i, j in itertools.combinations(range(rows * cols), 2)
            if tile[i] == tile[j] and max(abs(r[i] - r[j]), abs(c[i] - c[j])) < spacing
        }
        assert found == expected
    # Few repeats take the sorted path, many the shifted-grid path: same answer.
    few = np.arange(rows * cols)
    few[[0, 1, 30]] = 7
    a, b = spacing_violations(few, rows, cols, 2)
    assert set(zip(a.tolist(), b.tolist(), strict=True)) == {(0, 1)}


def test_no_limits_returns_best_column():
    rng = np.random.default_rng(1)
    full = full_distances(rng, 12, 10)
    candidates, distances = top_k(full, 3)
    result = assign_tiles(candidates, distances, 3, 4)
    assert np.array_equal(result.tile, candidates[:, 0])
    assert result.objective == result.lower_bound == distances[:, 0].sum()
    assert result.gap == 0.0


def test_check_feasible_messages():
    check_feasible(100, 100, 1)
    check_feasible(100, 1, None)
    with pytest.raises(MosaicistError, match="at least 50 tiles") as error:
        check_feasible(100, 49, 2)
    assert "\n" not in str(error.value)
    # Spacing 5 on a 10x10 grid allows 4 uses per tile: 100 cells need 25 tiles.
    check_feasible(100, 25, None, 10, 10, 5)
    with pytest.raises(MosaicistError, match="at least 25 tiles"):
        check_feasible(100, 24, None, 10, 10, 5)
    # Both limits: the tighter one (max_uses 3 < 4 from spacing) decides.
    with pytest.raises(MosaicistError, match="at least 34 tiles"):
        check_feasible(100, 33, 3, 10, 10, 5)
    with pytest.raises(MosaicistError):
        check_feasible(10, 10, 0)


@pytest.mark.parametrize(("max_uses", "min_spacing", "named", "not_named"), [
    # A preset's --max-uses 2 beside a spacing that allows 1 use: only the spacing counts.
    (2, 30, "(min_spacing 30: at most 1 use on a 10x8 grid)", "max_uses"),
    (1, 30, "(max_uses 1, min_spacing 30: at most 1 use on a 10x8 grid)", None),
    (1, 0, "at most 1 use per tile (max_uses 1)", "min_spacing"),
    (3, 2, "at most 3 uses per tile (max_uses 3)", "min_spacing"),
])
def test_check_feasible_names_the_limits_that_set_the_cap(max_uses, min_spacing, named,
                                                          not_named):
    with pytest.raises(MosaicistError) as error:
        check_feasible(80, 20, max_uses, 8, 10, min_spacing)
    message = str(error.value)
    assert named in message, message
    assert not_named is None or not_named not in message, message
    assert "1 uses" not in message


def test_infeasible_caps_raise_before_any_work():
    calls = []

    def source(k):
        calls.append(k)
        raise AssertionError("no candidates should be computed")

    with pytest.raises(MosaicistError, match="at least 8 tiles"):
        check_feasible(30, 7, 4)
        source(16)
    assert not calls


def test_float_distances_are_supported():
    rng = np.random.default_rng(11)
    full = rng.random((20, 15))
    order = np.argsort(full, 1)[:, :15]
    result = assign_tiles(order, np.take_along_axis(full, order, 1), 4, 5, max_uses=2)
    cost = np.repeat(full, 2, axis=1)
    r, c = linear_sum_assignment(cost)
    assert result.objective == pytest.approx(cost[r, c].sum())


def test_stuck_greedy_is_completed_by_the_matching():
    # Greedy (most regret first): A takes t0, C then t1, and B finds both its tiles
    # taken; the only complete placement is A->t2, B->t1, C->t0.
    candidates = np.array([[0, 2], [1, 0], [0, 1]])
    distances = np.array([[0, 100], [0, 1], [0, 2]])
    result = assign_tiles(candidates, distances, 1, 3, max_uses=1, method="greedy")
    assert result.method == "greedy+matching"
    assert result.tile.tolist() == [2, 1, 0]
    assert result.objective == 100


class DenseSearch:
    """A CandidateSearch over a dense distance matrix (the oracle of the library searches)."""

    def __init__(self, full):
        self.full = full
        self.tile_count = full.shape[1]
        self.calls = {"nearest": 0, "below": 0, "pairs": 0}

    def nearest(self, cells, k):
        self.calls["nearest"] += 1
        return top_k(self.full[cells], k)

    def pairs(self, cells, tiles):
        self.calls["pairs"] += 1
        return self.full[cells, tiles]

    def below(self, cells, price, limit, k, upper=None, among=None):
        self.calls["below"] += 1
        self.calls["among"] = self.calls.get("among", 0) + (among is not None)
        total = self.full[cells] + price[None, :]
        if among is not None:
            assert upper is None and len(among)
            searched = np.zeros(self.tile_count, bool)
            searched[among] = True
            total = np.where(searched[None, :], total, np.iinfo(np.int64).max)
        tiles, totals = top_k(total, k)
        if upper is not None:
            # The hint's promise: some k tiles reach it, so the k-th best is at most it.
            assert (totals[:, k - 1] <= upper).all()
        missing = (tiles < 0) | (totals >= limit[:, None])
        tiles[missing] = -1
        distances = np.where(missing, np.iinfo(np.int64).max,
                             np.take_along_axis(self.full[cells], np.maximum(tiles, 0), 1))
        return tiles, distances


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_uses", [1, 2, 3])
@pytest.mark.parametrize("clusters", [None, 3])
def test_certified_assignment_is_the_dense_optimum(seed, max_uses, clusters):
    rng = np.random.default_rng(seed)
    rows, cols, tiles = 6, 8, 50 + 10 * seed
    full = full_distances(rng, rows * cols, tiles, clusters=clusters)
    candidates, distances = top_k(full, 3)
    search = DenseSearch(full)
    result = assign_tiles(candidates, distances, rows, cols, max_uses=max_uses, search=search)
    check_placement(result.tile, full, rows, cols, max_uses, 1)
    assert np.array_equal(result.distance, full[np.arange(rows * cols), result.tile])
    optimum = dense_optimum(full, max_uses)
    assert result.certified
    assert result.objective == result.lower_bound == optimum
    assert result.gap == 0.0
    # Lists grew only where prices said so: never to the whole library for everyone.
    assert result.candidates_used <= tiles


@pytest.mark.parametrize("listed", [3, 40])
def test_certified_totals_past_the_int64_range_are_exact(listed):
    """Tinted search units reach 10^15 a cell: costs and prices summed past 2^63.

    Complete lists (``listed`` = every tile) are proven without a search.
    """
    rng = np.random.default_rng(11)
    rows, cols, tiles = 6, 8, 40
    small = full_distances(rng, rows * cols, tiles, clusters=2) + 4000
    full = small * 10**14
    search = DenseSearch(full)
    candidates, distances = top_k(full, listed)
    result = assign_tiles(candidates, distances, rows, cols, max_uses=2, search=search)
    check_placement(result.tile, full, rows, cols, 2, 1)
    optimum = dense_optimum(small, 2) * 10**14
    assert optimum > np.iinfo(np.int64).max
    assert result.certified and result.objective == result.lower_bound == optimum
    if listed == tiles:
        assert search.calls["below"] == 0
    values = np.array([2**62, 2**62 - 1, -(2**61), 7, 2**62], np.int64)
    assert _assign._total(values) == sum(values.tolist())


@pytest.mark.parametrize("max_uses", [1, 2])
@pytest.mark.parametrize("near", [None, 0.0, 0.05])
def test_certified_rounds_repair_the_last_optimum(max_uses, near, monkeypatch):
    """Rounds after the first repair the last optimum (:mod:`._flow`), to the same optimum.

    With ``near`` (a margin), every round first solves on each cell's two
    edges of least reduced cost (and those below the margin times its cost),
    then checks and repairs the rest.
    """
    from mosaicist.match import _flow

    if not _flow.can_repair():
        pytest.skip("repairs need Numba")
    solved_near = []
    if near is not None:
        monkeypatch.setattr(_assign, "NEAR_MARGIN", near)
        monkeypatch.setattr(_assign, "NEAR_EDGES", 2)
        monkeypatch.setattr(_assign, "NEAR_SHARE", 1.0)
        monkeypatch.setattr(_assign, "REPAIR_SHARE", 1)
        solve_near, repair_round = _assign._Solver._solve_near, _assign._Solver._repair
        within = []

        def counted_near(self, *args):
            within.append(True)
            try:
                choice = solve_near(self, *args)
            finally:
                within.pop()
            solved_near.append(choice is not None)
            return choice

        def repair_within_near(self, *args):
            # A round's own repair would leave the near solves nothing to do.
            return repair_round(self, *args) if within else None

        monkeypatch.setattr(_assign._Solver, "_solve_near", counted_near)
        monkeypatch.setattr(_assign._Solver, "_repair", repair_within_near)
    rng = np.random.default_rng(11)
    rows, cols, tiles = 12, 12, 400
    full = full_distances(rng, rows * cols, tiles, clusters=4)
    candidates, distances = top_k(full, 3)
    repairs = []
    repair = _flow.repair

    def counted(*args, **kwargs):
        choice = repair(*args, **kwargs)
        repairs.append(choice is not None)
        return choice

    monkeypatch.setattr(_flow, "repair", counted)
    repaired = assign_tiles(candidates, distances, rows, cols, max_uses=max_uses,
                            search=DenseSearch(full))
    assert any(repairs)
    assert any(solved_near) or near is None
    monkeypatch.setattr(_flow, "can_repair", lambda: False)
    fresh = assign_tiles(candidates, distances, rows, cols, max_uses=max_uses,
                         search=DenseSearch(full))
    assert repaired.certified and fresh.certified
    assert repaired.objective == fresh.objective == dense_optimum(full, max_uses)
    check_placement(repaired.tile, full, rows, cols, max_uses, 1)


def test_a_crowd_of_alike_cells_is_certified_in_few_rounds(monkeypatch):
    """Cells that all want the same tiles: the searches of those outbid again return more.

    At eight columns a search, a crowd of alike cells finds the same eight
    tiles every round, eight of its cells take them, and the rest search
    again: rounds grow with the crowd (a 12,288-cell photo had not been
    certified after 40). Placed cells searched again get twice the columns,
    and cells outside their lists each list a different slice of a wider
    search (and without those, no search sets tiles aside either).
    """
    rng = np.random.default_rng(1)
    rows, cols, tiles = 16, 16, 1500
    count = rows * cols
    tile_features = rng.integers(0, 40, (tiles, 3))
    cell_features = np.full((count, 3), 20, np.int64)
    cell_features[: count // 2] += rng.integers(-1, 2, (count // 2, 3))
    full = ((cell_features[:, None, :] - tile_features[None]) ** 2).sum(-1)
    candidates, distances = top_k(full, 3)
    rounds = []
    narrow = (_assign.PRICING_COLUMNS,) * 4
    widths = (_assign.MOST_PRICING_COLUMNS, _assign.OUT_SEARCH, _assign.CROWD_SEARCH,
              _assign.RESERVE_COLUMNS)
    for most, out_search, crowd_search, reserve in (narrow, widths):
        monkeypatch.setattr(_assign, "MOST_PRICING_COLUMNS", most)
        monkeypatch.setattr(_assign, "OUT_SEARCH", out_search)
        monkeypatch.setattr(_assign, "CROWD_SEARCH", crowd_search)
        monkeypatch.setattr(_assign, "RESERVE_COLUMNS", reserve)
        monkeypatch.setattr(_assign, "CROWDED_RESERVE_COLUMNS", reserve)
        result = assign_tiles(candidates, distances, rows, cols, max_uses=1,
                              search=DenseSearch(full))
        assert result.certified and result.objective == dense_optimum(full, 1)
        rounds.append(result.pricing_rounds)
    assert rounds[1] < 0.6 * rounds[0]


def test_a_crowd_searched_again_lists_a_slice_each_of_a_wider_search(monkeypatch):
    """Placed cells searched again at the widest look at CROWD_SEARCH tiles, list a slice.

    Alike cells all find the same tiles: listing each its own slice (the next
    for each next cell) brings CROWD_SEARCH tiles a round to the crowd, not
    MOST_PRICING_COLUMNS; what a cell found past its slice is set aside,
    cheapest first, as many as its reserve holds. Cells searched for the
    first time list their best, and cells outside a slice of OUT_SEARCH (the
    slices run on over every cell that lists one).
    """
    monkeypatch.setattr(_assign, "PRICING_COLUMNS", 2)
    monkeypatch.setattr(_assign, "MOST_PRICING_COLUMNS", 4)
    monkeypatch.setattr(_assign, "CROWD_SEARCH", 12)
    monkeypatch.setattr(_assign, "OUT_SEARCH", 6)
    monkeypatch.setattr(_assign, "RESERVE_COLUMNS", 4)
    count, tiles = 7, 40
    # Alike cells: the same distances to every tile, tile t at 10 t + 5.
    full = np.tile(np.arange(tiles, dtype=np.int64) * 10 + 5, (count, 1))
    checks = _assign._PriceChecks(np.full(count, 1000), tile_count=tiles)
    checks.looks[:4] = 10  # searched at the widest before: a crowd
    checks.crowded = [True, False]  # whose last search found fewer tiles than cells
    out = np.zeros(count, bool)
    out[6] = True
    price = np.zeros(tiles, np.int64)
    level = np.full(count, 1000)
    rows, found, distances = [], [], []
    checks._search(DenseSearch(full), np.arange(count), None, None, price,
                   np.full(count, 1000), None, out, level, rows, found, distances)
    rows, found = np.concatenate(rows), np.concatenate(found)
    listed = {cell: sorted(found[rows == cell].tolist()) for cell in range(count)}
    assert listed == {0: [0, 1, 2, 3], 1: [4, 5, 6, 7], 2: [8, 9, 10, 11],
                      3: [0, 1, 2, 3], 4: [0, 1], 5: [0, 1], 6: [2, 3]}
    # The crowd's second cell set aside the cheapest of what it did not list, as many
    # as its reserve holds (not the search's width), and its proof stops at the
    # cheapest it left out: tile 10.
    assert checks.reserve_tile[1].tolist() == [0, 1, 2, 3, 8, 9]
    assert level[1] == 10 * 10 + 5
    assert checks.looks[:6].tolist() == [11, 11, 11, 11, 1, 1] and checks.looks[6] == 0
    # Twelve tiles for four cells: the next such search lists each cell's best.
    assert checks.crowded == [False, False]
    rows, found, distances = [], [], []
    checks._search(DenseSearch(full), np.arange(4), None, None, price,
                   np.full(count, 1000), None, out, level, rows, found, distances)
    assert all(found[0][np.concatenate(rows) == cell].tolist() == [0, 1, 2, 3]
               for cell in range(4))


@pytest.mark.parametrize("seed", range(2))
def test_a_crowd_outside_its_lists_spreads_over_the_tiles_its_searches_find(
        seed, monkeypatch):
    """Alike cells outside their lists each take a slice of a wider search.

    They all find the same tiles, so the crowd gains about as many tiles a
    round as one search returns. Where the last search of cells outside
    found fewer tiles than cells, the next looks for CROWD_SEARCH. Lists far
    from the cells' nearest tiles (as warm lists can be) put most of the
    crowd outside at first, at a cost that many tiles beat: at 16 tiles a
    search it drains in 12-13 rounds, widened to 128 in 8-10 (a camera-trap
    photo upscaled to 30,000 cells was not certified in 40 rounds at 32).
    """
    rng = np.random.default_rng(seed)
    rows, cols, tiles = 16, 24, 3000
    count = rows * cols
    tile_features = rng.integers(0, 200, (tiles, 3))
    cell_features = np.full((count, 3), 100, np.int64) + rng.integers(-2, 3, (count, 3))
    full = ((cell_features[:, None, :] - tile_features[None]) ** 2).sum(-1)
    ranked, ranked_distances = top_k(full, 302)
    candidates, distances = ranked[:, 300:], ranked_distances[:, 300:]
    rounds = []
    monkeypatch.setattr(_assign, "OUT_SEARCH", 16)
    for crowd_search in (16, 128):
        monkeypatch.setattr(_assign, "CROWD_SEARCH", crowd_search)
        result = assign_tiles(candidates, distances, rows, cols, max_uses=1,
                              search=DenseSearch(full), nearest=False)
        assert result.certified and result.objective == dense_optimum(full, 1)
        rounds.append(result.pricing_rounds)
    assert rounds[1] < rounds[0], rounds


@pytest.mark.parametrize("seed", range(3))
def test_a_spacing_as_long_as_the_grid_is_a_cap_for_lists_past_the_nearest(seed):
    # No max_uses, a spacing that caps every tile at one use by itself: the matcher
    # gives warm lists (not the nearest), which raised "lists other than the nearest
    # need a certified assignment under a use cap alone" (a traceback from make).
    rng = np.random.default_rng(seed)
    rows, cols = 6, 8
    full = full_distances(rng, rows * cols, 150, clusters=3)
    ranked, ranked_distances = top_k(full, 16)
    candidates, distances = ranked[:, 4:], ranked_distances[:, 4:]
    result = assign_tiles(candidates, distances, rows, cols, max_uses=None, min_spacing=8,
                          search=DenseSearch(full), nearest=False)
    assert result.certified and result.objective == result.lower_bound == dense_optimum(full, 1)
    check_placement(result.tile, full, rows, cols, 1, 8)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("max_uses", [1, 2])
@pytest.mark.parametrize("nearest", [True, False])
def test_an_unproven_assignment_reports_a_lower_bound_from_its_last_prices(
        seed, max_uses, nearest, monkeypatch):
    """Out of rounds, the gap is measured against the bound the last prices give.

    Any prices ``p >= 0`` bound the capped optimum from below by ``sum_i min_j
    (c_ij + p_j) - cap sum_j p_j`` over the whole library. Lists other than
    each cell's nearest tiles (warm lists) bound nothing by themselves: the
    sum of their first distances can exceed the optimum.
    """
    monkeypatch.setattr(_assign, "MAX_PRICING_ROUNDS", 1)
    rng = np.random.default_rng(seed)
    rows, cols, tiles = 8, 10, 120
    count = rows * cols
    full = full_distances(rng, count, tiles, clusters=3)
    ranked, ranked_distances = top_k(full, 12)
    # Lists past each cell's nearest tiles, where those are not listed.
    skip = 0 if nearest else 6
    candidates, distances = ranked[:, skip:], ranked_distances[:, skip:]
    result = assign_tiles(candidates, distances, rows, cols, max_uses=max_uses,
                          search=DenseSearch(full), nearest=nearest)
    optimum = dense_optimum(full, max_uses)
    check_placement(result.tile, full, rows, cols, max_uses, 1)
    if result.certified:
        assert result.objective == result.lower_bound == optimum
        return
    assert 0 <= result.lower_bound <= optimum <= result.objective
    if nearest:
        # Never below the optimum without caps, which nearest lists give.
        assert result.lower_bound >= full.min(axis=1).sum()


@pytest.mark.parametrize("seed", range(4))
def test_the_bound_of_the_last_prices_nears_the_optimum_as_rounds_go(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    rows, cols = 8, 10
    full = full_distances(rng, rows * cols, 120, clusters=3)
    candidates, distances = top_k(full, 6)
    proven = assign_tiles(candidates, distances, rows, cols, max_uses=1,
                          search=DenseSearch(full))
    optimum = dense_optimum(full, 1)
    assert proven.certified and proven.lower_bound == optimum
    # One round short of the proof: a bound within 15% of the optimum, where the
    # optimum without caps is several times lower (cells crowd on the same tiles). The
    # rounds raise the columns of placed cells with those of cells outside, and take
    # half as many rounds as when they did not, so the last but one is further from
    # the proof (within 1% then); the cells outside it then raise their tiles' prices,
    # and the bound of the placed cells' prices alone holds it (26% of the optimum
    # with the last prices alone on seed 0).
    monkeypatch.setattr(_assign, "MAX_PRICING_ROUNDS", proven.pricing_rounds - 1)
    unproven = assign_tiles(candidates, distances, rows, cols, max_uses=1,
                            search=DenseSearch(full))
    assert not unproven.certified
    assert 0.85 * optimum <= unproven.lower_bound <= optimum
    assert full.min(axis=1).sum() < 0.2 * optimum


def test_certified_prices_satisfy_complementary_slackness():
    from mosaicist.match._assign import _edges, tile_prices

    rng = np.random.default_rng(7)
    full = full_distances(rng, 40, 25, clusters=2)
    cap = 2
    cost = np.repeat(full, cap, axis=1)
    cells, columns = linear_sum_assignment(cost)
    tile = columns // cap
    candidates, distances = top_k(full, 25)
    edges = _edges(candidates, distances, np.full(40, 25))
    choice = np.array([np.flatnonzero((edges.row == i) & (edges.tile == tile[i]))[0]
                       for i in range(40)])
    listed, prices = tile_prices(edges, choice, cap)
    price = np.zeros(25, np.int64)
    price[listed] = prices
    uses = np.bincount(tile, minlength=25)
    assert (price >= 0).all() and (price[uses < cap] == 0).all()
    reduced = full + price[None, :] - (full[np.arange(40), tile] + price[tile])[:, None]
    assert (reduced >= 0).all()
    # The dual objective equals the optimum: a certificate.
    dual = int((full[np.arange(40), tile] + price[tile]).sum()) - cap * int(price.sum())
    assert dual == int(cost[cells, columns].sum())
    # A placement that is not optimal has no such prices.
    worse = choice.copy()
    i, j = 0, 1
    if tile[i] != tile[j]:
        swap_i = np.flatnonzero((edges.row == i) & (edges.tile == tile[j]))[0]
        swap_j = np.flatnonzero((edges.row == j) & (edges.tile == tile[i]))[0]
        before = full[i, tile[i]] + full[j, tile[j]]
        after = full[i, tile[j]] + full[j, tile[i]]
        if after > before:
            worse[i], worse[j] = swap_i, swap_j
            assert tile_prices(edges, worse, cap) is None


def test_certified_assignment_with_spacing_reports_the_cost_of_spacing():
    rng = np.random.default_rng(3)
    rows, cols = 8, 9
    full = full_distances(rng, rows * cols, 60, clusters=2)
    candidates, distances = top_k(full, 4)
    result = assign_tiles(candidates, distances, rows, cols, max_uses=3, min_spacing=3,
                          search=DenseSearch(full))
    check_placement(result.tile, full, rows, cols, 3, 3)
    assert result.certified and result.lower_bound == dense_optimum(full, 3)
    assert result.objective >= result.lower_bound and result.gap >= 0
    with pytest.raises(ValueError, match="integer distances"):
        assign_tiles(candidates, distances.astype(float), rows, cols, max_uses=3,
                     search=DenseSearch(full))


def dense_with_minimum(full, minimum, cap):
    """Reference: every tile replicated, its first ``minimum`` copies strongly preferred."""
    count, tiles = full.shape
    cap = min(cap, count)
    surcharge = float(np.ptp(full)) * count + 1
    cost = np.repeat(full.astype(float), cap, axis=1)
    optional = np.tile(np.arange(cap) >= minimum, tiles)
    cost[:, optional] += surcharge
    rows, cols = linear_sum_assignment(cost)
    tile = cols // cap
    assert (np.bincount(tile, minlength=tiles) >= minimum).all()
    return int(full[rows, tile].sum())


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("minimum", "max_uses"), [(1, None), (1, 3), (2, 4), (2, 2)])
def test_minimum_of_uses_is_the_dense_optimum(seed, minimum, max_uses):
    rng = np.random.default_rng(seed)
    rows, cols = 5, 8
    # Between the fewest tiles the caps allow and the most the minimum allows.
    tiles = rows * cols // (minimum if max_uses == minimum else minimum + 1)
    full = full_distances(rng, rows * cols, tiles, clusters=2)
    candidates, distances = top_k(full, tiles)
    result = assign_tiles(candidates, distances, rows, cols, max_uses=max_uses,
                          min_uses=minimum, tile_count=tiles)
    uses = np.bincount(result.tile, minlength=tiles)
    assert (uses >= minimum).all()
    if max_uses is not None:
        assert uses.max() <= max_uses
    assert result.objective == dense_with_minimum(full, minimum, max_uses or rows * cols)
    # Every tile listed: the optimum over every pair, its own bound.
    assert result.certified and result.lower_bound == result.objective


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("minimum", "max_uses"), [(1, 3), (2, 4)])
def test_minimum_of_uses_on_short_lists_of_a_small_library_is_the_dense_optimum(
        seed, minimum, max_uses):
    # The best placement the first lists held: 6.0% over the optimum on a 60-tile library
    # (3 uses at most, 1 at least, 176 cells), not certified; a small library is now
    # listed whole first.
    rng = np.random.default_rng(seed)
    rows, cols = 6, 8
    tiles = rows * cols // (minimum + 1)
    full = full_distances(rng, rows * cols, tiles, clusters=2)
    candidates, distances = top_k(full, 3)
    result = assign_tiles(candidates, distances, rows, cols, max_uses=max_uses,
                          min_uses=minimum, tile_count=tiles, search=DenseSearch(full))
    check_placement(result.tile, full, rows, cols, max_uses, 1)
    assert (np.bincount(result.tile, minlength=tiles) >= minimum).all()
    assert result.objective == dense_with_minimum(full, minimum, max_uses)
    assert result.certified and result.lower_bound == result.objective


def test_minimum_of_uses_asks_for_cells_its_lists_lack():
    from mosaicist.match._assign import ShortLists

    rng = np.random.default_rng(1)
    full = full_distances(rng, 20, 10)
    candidates, distances = top_k(full, 2)
    unlisted = np.setdiff1d(np.arange(10), candidates)
    if len(unlisted) == 0:
        pytest.skip("every tile is some cell's nearest")
    with pytest.raises(ShortLists) as short:
        assign_tiles(candidates, distances, 4, 5, min_uses=1, tile_count=10)
    assert set(unlisted) <= set(short.value.tiles.tolist())


def test_minimum_of_uses_feasibility():
    check_feasible(40, 20, None, 5, 8, min_uses=2)
    with pytest.raises(MosaicistError, match="min_uses 2 needs 42 cells for the 21 tiles"):
        check_feasible(40, 21, None, 5, 8, min_uses=2)
    with pytest.raises(MosaicistError, match="min_uses 3 is above max_uses 2"):
        check_feasible(40, 10, 2, 5, 8, min_uses=3)
    with pytest.raises(MosaicistError, match="cannot be min_spacing 4 cells apart"):
        check_feasible(40, 5, None, 5, 8, min_spacing=4, min_uses=5)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("minimum", [1, 2])
def test_minimum_slots_split_is_the_dense_optimum(seed, minimum):
    from mosaicist.match import minimum_slots

    rng = np.random.default_rng(seed)
    cells = 30
    tiles = cells // (minimum + 1)
    full = full_distances(rng, cells, tiles, clusters=2)
    tile = minimum_slots(full, minimum)
    assert (np.bincount(tile, minlength=tiles) >= minimum).all()
    assert int(full[np.arange(cells), tile].sum()) == dense_with_minimum(full, minimum, cells)


@pytest.mark.parametrize("reach", [0, 1, 3])
@pytest.mark.parametrize("direct", [0, 4, 1000])
@pytest.mark.parametrize("reserve", [2, 12])
def test_pricing_proofs_across_rounds_keep_the_optimum(monkeypatch, reach, direct, reserve):
    from mosaicist.match import _assign

    # Cells settled by an earlier round's search, measured pair by pair where prices
    # fell, searched among the tiles whose prices fell, or searched again, with or
    # without tiles set aside by the searches: whichever way, the result is the dense
    # optimum.
    monkeypatch.setattr(_assign, "REACH", reach)
    monkeypatch.setattr(_assign, "DIRECT_PAIRS", direct)
    monkeypatch.setattr(_assign, "PRICING_COLUMNS", 2)
    monkeypatch.setattr(_assign, "MOST_PRICING_COLUMNS", 4)
    monkeypatch.setattr(_assign, "OUT_SEARCH", 4)
    monkeypatch.setattr(_assign, "CROWD_SEARCH", 8)
    monkeypatch.setattr(_assign, "RESERVE_COLUMNS", reserve)
    monkeypatch.setattr(_assign, "CROWDED_RESERVE_COLUMNS", reserve)
    measured = restricted = 0
    for seed in range(4):
        rng = np.random.default_rng(100 + seed)
        rows, cols, tiles = 7, 8, 60
        full = full_distances(rng, rows * cols, tiles, clusters=2)
        candidates, distances = top_k(full, 2)
        search = DenseSearch(full)
        result = assign_tiles(candidates, distances, rows, cols, max_uses=1 + seed % 2,
                              search=search)
        assert result.certified
        assert result.objective == result.lower_bound == dense_optimum(full, 1 + seed % 2)
        measured += search.calls["pairs"]
        restricted += search.calls.get("among", 0)
    assert (measured > 0) == (direct > 0)
    assert restricted > 0 if direct == 0 else direct < 1000 or restricted == 0


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("magnitude", [1, 1 << 48])
def test_both_solvers_agree_on_cost_and_left_out_cells(seed, magnitude, monkeypatch):
    """The min-cost flow and LAPJVsp find equal optima; huge costs fall back to LAPJVsp."""
    pytest.importorskip("ortools")
    rng = np.random.default_rng(900 + seed)
    count, tiles = 40, 25
    full = full_distances(rng, count, tiles, clusters=2) * magnitude
    candidates, distances = top_k(full, 4)
    edges = _assign._edges(candidates, distances, np.full(count, 4))
    allowed = np.ones(len(edges.row), bool)
    outside = 2 * edges.tail + 1
    results = {}
    for name in ("flow", "lapjv"):
        monkeypatch.setattr(_assign, "SOLVER", name)
        with_outside = _assign._solve(count, edges, allowed, 1, outside)
        inside = with_outside >= 0
        cost = (int(edges.dist[with_outside[inside]].sum())
                + int(outside[~inside].sum()))
        # Without outside columns 40 cells cannot all get one of 25 tiles: both
        # leave out the same number, the fewest possible.
        left_out = int((_assign._solve(count, edges, allowed, 1, None) < 0).sum())
        minimum = _assign._solve(count, edges, allowed, 2, outside, minimum=1)
        results[name] = (cost, left_out, int(
            edges.dist[minimum[minimum >= 0]].sum() + outside[minimum < 0].sum()))
    assert results["flow"] == results["lapjv"]
    assert results["flow"][1] == count - len(np.unique(edges.tile))


def flow_results(monkeypatch):
    """The list each min-cost flow's result is appended to (None: it gave up)."""
    solved = []
    original = _assign._solve_by_flow

    def recording(*args, **kwargs):
        solved.append(original(*args, **kwargs))
        return solved[-1]

    monkeypatch.setattr(_assign, "_solve_by_flow", recording)
    return solved


def test_common_factor_is_the_gcd_of_all_values():
    """From a sample's divisor, lowered by the remainders: numpy's GCD over all of them."""
    rng = np.random.default_rng(0)
    for trial in range(400):
        size = int(rng.integers(2, 30_000 if trial % 10 == 0 else 50))
        values = rng.integers(0, 5, size) * int(rng.choice([1, 2, 6, 7, 10_000]))
        if trial % 3 == 0:  # one value off the common factor, likely outside a sample
            values[rng.integers(0, size)] = int(rng.integers(0, 100))
        if trial % 7 == 0:  # zeros wherever a sample looks
            values[:] = 0
            values[-2:] = (12, 18)
        assert _assign._common_factor(values) == int(np.gcd.reduce(values))
    assert _assign._common_factor(np.zeros(0, np.int64)) == 0


def test_flow_divides_costs_by_their_common_factor(monkeypatch):
    """Tinted search units share a large factor: the flow solves what would overflow it.

    Costs times nodes past int64 made OR-Tools refuse the problem, and the
    fallback (LAPJVsp) took an hour on a 12,288-cell default-preset mosaic.
    """
    pytest.importorskip("ortools")
    monkeypatch.setattr(_assign, "SOLVER", "flow")
    solved = flow_results(monkeypatch)
    rng = np.random.default_rng(77)
    count, tiles = 40, 25
    small = full_distances(rng, count, tiles, clusters=2)
    factor = 10_000 << 33
    results = []
    for scale in (1, factor):
        candidates, distances = top_k(small * scale, 4)
        edges = _assign._edges(candidates, distances, np.full(count, 4))
        outside = 2 * edges.tail + scale
        choice = _assign._solve(count, edges, np.ones(len(edges.row), bool), 1, outside)
        inside = choice >= 0
        results.append(sum(edges.dist[choice[inside]].tolist()) + sum(outside[~inside].tolist()))
    assert all(found is not None for found in solved)
    assert results[1] == results[0] * factor


def test_flow_rounds_costs_past_its_range_where_allowed(monkeypatch):
    """Costs beyond the flow's range with no common factor: rounded, near-optimal, fast.

    Only callers that verify optimality exactly ask for it; the others keep
    LAPJVsp's exact answer.
    """
    pytest.importorskip("ortools")
    rng = np.random.default_rng(78)
    count, tiles = 40, 25
    full = full_distances(rng, count, tiles, clusters=2) * (1 << 52) + rng.integers(
        0, 1000, (count, tiles))
    candidates, distances = top_k(full, 4)
    edges = _assign._edges(candidates, distances, np.full(count, 4))
    allowed = np.ones(len(edges.row), bool)
    outside = 2 * edges.tail + 1
    solved = flow_results(monkeypatch)
    totals = {}
    for name, rounding in (("lapjv", False), ("flow", False), ("flow", True)):
        monkeypatch.setattr(_assign, "SOLVER", name)
        choice = _assign._solve(count, edges, allowed, 1, outside, rounding=rounding)
        inside = choice >= 0
        totals[name, rounding] = (sum(edges.dist[choice[inside]].tolist())
                                  + sum(outside[~inside].tolist()))
    assert solved[0] is None and solved[1] is not None
    exact = totals["lapjv", False]
    assert totals["flow", False] == exact
    # Rounded by at most 2^k per arc of each path: far below one unit of the magnitude.
    assert exact <= totals["flow", True] <= exact + 2 * count * (1 << 20)


def test_spacing_rounds_converge_when_every_cost_ties():
    """Equal costs everywhere: each spacing round keeps the cells it need not move."""
    rows, cols, tiles = 8, 8, 24
    full = np.full((rows * cols, tiles), 7, np.int64)
    candidates, distances = top_k(full, tiles)
    result = assign_tiles(candidates, distances, rows, cols, max_uses=3, min_spacing=2)
    check_placement(result.tile, full, rows, cols, 3, 2)
    assert result.iterations < 20


def test_added_edges_stay_best_first_once_each():
    edges = _assign._edges(np.array([[3, 1, -1], [2, 0, 4]]),
                           np.array([[5, 7, 0], [1, 2, 9]]), np.array([2, 3]))
    merged = _assign._with_edges(
        edges, np.array([0, 0, 1, 1, 0]), np.array([1, 4, 0, -1, 2]),
        np.array([7, 5, 2, 0, 6]), np.array([8, 10]))
    listed = list(zip(merged.row.tolist(), merged.tile.tolist(), merged.dist.tolist(),
                      strict=True))
    # Cell 0: tile 3 and 4 tie at 5 (tile order), tile 1 listed twice; -1 is no tile.
    assert listed == [(0, 3, 5), (0, 4, 5), (0, 2, 6), (0, 1, 7),
                      (1, 2, 1), (1, 0, 2), (1, 4, 9)]
    assert merged.length.tolist() == [4, 3]
    assert merged.tail.tolist() == [8, 10]


@pytest.mark.parametrize("kind", ["integer", "blocks", "wide", "float"])
def test_added_edges_are_inserted_in_order_without_repeats(kind, monkeypatch):
    """Inserted by binary search (or merged by sorting): the order by cell, distance, tile.

    ``blocks``: distances of 60 bits leave 2 for the cell, so the keys are
    made for 4 cells at a time; ``wide`` ones (63 bits) and floats are
    sorted instead.
    """
    sorts = []
    merged_order = _assign._merged_order
    monkeypatch.setattr(_assign, "_merged_order",
                        lambda *args: sorts.append(1) or merged_order(*args))
    rng = np.random.default_rng(5)
    cells, tiles = (300 if kind == "blocks" else 30), 40
    # Few distinct distances: many equal keys, within and across old and new edges.
    full = rng.integers(0, 5, (cells, tiles)) * {"blocks": 2**57, "wide": 2**60}.get(kind, 1)
    if kind == "float":
        full = full + 0.5
    candidates, _ = top_k(full, 6)
    distances = np.take_along_axis(full, candidates, 1)
    edges = _assign._edges(candidates, distances, np.full(cells, 6))
    # New pairs: some already listed (a repeat), some twice in the same call.
    row = rng.integers(0, cells, 10 * cells)
    tile = rng.integers(-1, tiles, 10 * cells)
    dist = full[row, np.maximum(tile, 0)]
    merged = _assign._with_edges(edges, row, tile, dist, edges.tail)
    keep = tile >= 0
    pairs = set(zip(edges.row.tolist(), edges.tile.tolist(), strict=True))
    pairs |= set(zip(row[keep].tolist(), tile[keep].tolist(), strict=True))
    expected = sorted((r, full[r, t], t) for r, t in pairs)
    assert list(zip(merged.row.tolist(), merged.dist.tolist(), merged.tile.tolist(),
                    strict=True)) == expected
    assert merged.length.tolist() == np.bincount([r for r, _, _ in expected],
                                                 minlength=cells).tolist()
    assert bool(sorts) == (kind in ("wide", "float"))


@pytest.mark.parametrize("kind", ["integer", "distinct", "wide", "float"])
def test_merged_order_is_the_order_by_cell_distance_tile(kind):
    rng = np.random.default_rng(4)
    runs = []
    for size in (300, 40):
        row = rng.integers(0, 20, size)
        # Few distances: equal (cell, distance) keys across the runs, tiles in any order.
        dist = rng.integers(0, 6, size) * (2**55 if kind == "wide" else 1)
        if kind == "distinct":  # no ties: the packed merge alone decides
            dist = rng.choice(10**6, size, replace=False)
        tile = rng.integers(0, 9, size)
        order = np.lexsort((tile, dist, row))
        runs.append((row[order], dist[order], tile[order]))
    row, dist, tile = (np.concatenate(parts) for parts in zip(*runs, strict=True))
    if kind == "float":
        dist = dist + 0.5
    order = _assign._merged_order(row, dist, tile)
    assert np.array_equal(order, np.lexsort((tile, dist, row)))


def test_tiles_set_aside_keep_the_cheapest_and_lower_the_level_for_the_rest(monkeypatch):
    """A cell's reserve keeps its cheapest tiles at today's prices, each once; the
    level it may claim falls to the cheapest tile it could not keep."""
    from mosaicist.match import _assign

    for name in ("RESERVE_COLUMNS", "MOST_PRICING_COLUMNS", "OUT_SEARCH", "CROWD_SEARCH",
                 "PRICING_COLUMNS"):
        monkeypatch.setattr(_assign, name, 3)
    checks = _assign._PriceChecks(np.array([100, 100, 100]), tile_count=10)
    price = np.array([0, 5, 0, 0, 40, 0, 0, 0, 0, 1])
    level = np.array([500, 500, 500])
    # Cell 0 already holds tiles 1 (total 15) and 2 (total 30).
    checks.reserve_tile[0, :2] = [1, 2]
    checks.reserve_distance[0, :2] = [10, 30]
    tiles = np.array([[4, 2, -1, 9], [3, -1, -1, -1], [5, 6, 7, 8]])
    distances = np.array([[1, 30, 0, 50], [7, 0, 0, 0], [20, 10, 30, 40]])
    checks._set_aside(np.array([0, 1, 2]), tiles, distances, price, level)
    # Cell 0: tile 2 once; totals 1:15, 2:30, 4:41, 9:51 -> keeps 1, 2, 4; 9 goes.
    assert checks.reserve_tile[0].tolist() == [1, 2, 4]
    assert checks.reserve_distance[0].tolist() == [10, 30, 1]
    assert checks.reserve_tile[1].tolist() == [3, -1, -1]
    assert checks.reserve_tile[2].tolist() == [6, 5, 7]
    assert level.tolist() == [51, 500, 40]


def test_lists_other_than_the_nearest_need_a_certified_capped_assignment():
    candidates = np.array([[0, 1], [1, 0]])
    distances = np.array([[1, 2], [1, 2]])
    # Without a search to prove the result, nothing may be assumed of unlisted tiles.
    with pytest.raises(ValueError, match="lists other than the nearest"):
        assign_tiles(candidates, distances, 1, 2, max_uses=1, nearest=False)
    # Plain lists of nearest tiles still work as before.
    assert assign_tiles(candidates, distances, 1, 2, max_uses=1).tile.tolist() == [0, 1]


def test_warm_pairs_become_lists_best_first():
    from mosaicist.match._capped import _by_cell

    cells = np.array([2, 0, 2, 0, 2])
    tiles = np.array([7, 3, 5, 9, 4])
    distances = np.array([10, 4, 10, 1, 3])
    lists, list_distances = _by_cell(cells, tiles, distances, 3)
    # Best first, ties by tile; a cell without pairs gets none (-1).
    assert lists.tolist() == [[9, 3, -1], [-1, -1, -1], [4, 5, 7]]
    assert list_distances[0, :2].tolist() == [1, 4]
    assert list_distances[2].tolist() == [3, 10, 10]


def test_a_proven_placement_must_be_listed_and_optimal_only():
    candidates = np.array([[0, 1], [1, 0], [0, 1]])
    distances = np.array([[1, 2], [1, 2], [1, 3]])
    # Each cell's tile from a placement proven elsewhere: taken as it is (certified).
    done = assign_tiles(candidates, distances, 1, 3, max_uses=2, proven=np.array([0, 1, 1]))
    assert done.tile.tolist() == [0, 1, 1] and done.certified
    assert done.objective == done.lower_bound == 1 + 1 + 3
    with pytest.raises(ValueError, match="list its tile"):
        assign_tiles(candidates, distances, 1, 3, max_uses=2, proven=np.array([0, 2, 1]))
    with pytest.raises(ValueError, match="proven placement"):
        assign_tiles(candidates, distances, 1, 3, max_uses=2, method="greedy",
                     proven=np.array([0, 1, 1]))


# --------------------------------------------------------------------------------------------
# Spacing on a small library: the block bound up front, and a placement where the rounds fail.


def colour_ramp(rng, rows, cols, tiles):
    """A smooth colour ramp of cells and random tile colours (the hostile sweep's repro)."""
    y, x = np.mgrid[0:rows, 0:cols]
    cells = np.stack([x * 255 // cols, y * 255 // rows, (x + y) * 255 // (rows + cols)], -1)
    colours = rng.integers(0, 256, (tiles, 3))
    diff = cells.reshape(-1, 1, 3) - colours[None, :, :]
    return (diff**2).sum(-1).astype(np.int64)


def test_spacing_needs_a_block_of_different_tiles():
    # Every 12 x 12 block of cells needs 144 different tiles: 100 are too few, though the
    # spacing's cap (6 uses a tile on 18 x 25 cells) needs only 75.
    with pytest.raises(OptionError) as error:
        check_feasible(450, 100, None, 18, 25, 12)
    flags = error.value.message(lambda name: "--" + name.replace("_", "-"))
    assert flags.startswith("--min-spacing 12 needs at least 144 different tiles (a 12 x 12 "
                            "block of cells), but the library has 100")
    assert "\n" not in flags and "max-uses" not in flags
    # Clipped to the grid: 3 rows hold a 3 x 6 block.
    with pytest.raises(OptionError, match=r"at least 18 different tiles \(a 3 x 6 block"):
        check_feasible(75, 17, None, 3, 25, 6)
    check_feasible(75, 18, None, 3, 25, 6)
    check_feasible(450, 36, None, 18, 25, 6)
    with pytest.raises(OptionError, match="at least 36 different tiles"):
        check_feasible(450, 35, None, 18, 25, 6)
    # Where a use cap needs more tiles than a block, it is the one named.
    with pytest.raises(OptionError, match="max_uses 4.* at least 113 tiles"):
        check_feasible(450, 100, 4, 18, 25, 9)
    check_feasible(450, 450, 1, 18, 25, 12)
    # The minimum of uses is checked as before, against the library it is given.
    with pytest.raises(OptionError, match="at least 9 different tiles"):
        check_feasible(49, 8, None, 7, 7, 3, min_uses=1)


def test_impossible_spacing_is_refused_before_any_matching(tmp_path, monkeypatch):
    from conftest import make_colour_folder, noisy_target

    from mosaicist import make_mosaic
    from mosaicist.match import _capped

    def no_search(*args, **kwargs):
        raise AssertionError("the library was searched")

    monkeypatch.setattr(_capped, "LibrarySearch", no_search)
    folder = make_colour_folder(tmp_path / "tiles", 20)
    # 10 x 14 cells: a 5 x 5 block needs 25 different tiles.
    with pytest.raises(OptionError, match="min_spacing 5 needs at least 25 different tiles"):
        make_mosaic(noisy_target(), folder, preset="seed", cell_px=4, tile_px=8,
                    min_spacing=5, cache_dir=tmp_path / "c")


@pytest.mark.parametrize(("rows", "cols", "tiles", "spacing", "lists", "method"), [
    # The rounds circled for 60 rounds, every tile held around allowed again each time
    # a cell had none (greedy placed it); now only the stuck cell's are.
    (10, 12, 40, 5, "whole", "optimal"),
    (10, 10, 30, 5, "whole", "optimal+greedy"),  # the rounds forbid pairs until a cell has none
    (12, 12, 64, 7, "whole", "optimal"),  # 49 of 64 tiles in every block
    (10, 10, 30, 5, "grown", "optimal+greedy"),  # short lists: every cell gets the longest allowed
])
def test_feasible_spacing_is_placed_where_the_rounds_give_up(rows, cols, tiles, spacing, lists,
                                                             method):
    full = colour_ramp(np.random.default_rng(0), rows, cols, tiles)
    check_feasible(rows * cols, tiles, None, rows, cols, spacing)
    if lists == "whole":
        candidates, distances = top_k(full, tiles)
        kwargs = {"search": DenseSearch(full)}
    else:
        candidates, distances = top_k(full, 8)
        kwargs = {"more_candidates": Source(full), "max_candidates": 64}
    result = assign_tiles(candidates, distances, rows, cols, min_spacing=spacing, **kwargs)
    # Greedy from scratch gets stuck on the last three: the lattice places them.
    assert result.method == method
    if method == "optimal":
        assert result.iterations < _assign.MAX_SPACING_ROUNDS
    # Every pair of cells of one tile at least ``spacing`` apart, checked pair by pair.
    assert check_placement(result.tile, full, rows, cols, None, spacing) == result.objective
    assert np.array_equal(result.distance, full[np.arange(rows * cols), result.tile])
    # The bound is the relaxation's, below the capped optimum; the gap is measured to it.
    cap = tile_capacity(rows, cols, None, spacing)
    assert 0 < result.lower_bound <= dense_optimum(full, cap) <= result.objective
    assert result.gap == pytest.approx((result.objective - result.lower_bound)
                                       / result.lower_bound)
    assert result.iterations <= _assign.MAX_SPACING_ROUNDS


def test_greedy_method_is_spaced_where_its_matching_rounds_give_up():
    rows, cols, tiles, spacing = 12, 12, 64, 7
    full = colour_ramp(np.random.default_rng(0), rows, cols, tiles)
    candidates, distances = top_k(full, 8)
    result = assign_tiles(candidates, distances, rows, cols, min_spacing=spacing,
                          method="greedy", more_candidates=Source(full), max_candidates=64)
    assert check_placement(result.tile, full, rows, cols, None, spacing) == result.objective


@pytest.mark.parametrize("seed", range(3))
def test_minimum_of_uses_with_spacing_on_a_tiny_library(seed):
    """5 tiles 3 times each on 4 x 4 cells 2 apart: the rounds forbade a cell every tile."""
    rows = cols = 4
    full = colour_ramp(np.random.default_rng(seed), rows, cols, 5)
    candidates, distances = top_k(full, 5)
    result = assign_tiles(candidates, distances, rows, cols, min_spacing=2, min_uses=3,
                          tile_count=5)
    check_placement(result.tile, full, rows, cols, None, 2)
    assert np.bincount(result.tile, minlength=5).min() >= 3
    assert result.lower_bound <= result.objective


def spaced_reference(full, rows, cols, max_uses, min_spacing, minimum=0):
    """Reference: the 0-1 program with one constraint per close pair of cells and tile."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix

    count, tiles = full.shape
    variable = np.arange(count * tiles).reshape(count, tiles)
    r, c = np.divmod(np.arange(count), cols)
    close = [(a, b) for a, b in itertools.combinations(range(count), 2)
             if max(abs(r[a] - r[b]), abs(c[a] - c[b])) < min_spacing]
    pair_rows = np.repeat(np.arange(len(close) * tiles), 2)
    pair_columns = np.array([variable[cell, t] for a, b in close for t in range(tiles)
                             for cell in (a, b)], dtype=np.int64)
    ones = np.ones(count * tiles)
    constraints = [
        LinearConstraint(coo_matrix((ones, (np.repeat(np.arange(count), tiles),
                                            variable.ravel()))), 1, 1),
        LinearConstraint(coo_matrix((ones, (np.tile(np.arange(tiles), count),
                                            variable.ravel()))), minimum, max_uses),
        LinearConstraint(coo_matrix((np.ones(len(pair_columns)), (pair_rows, pair_columns)),
                                    shape=(len(close) * tiles, count * tiles)), 0, 1),
    ]
    result = milp(full.ravel().astype(float), constraints=constraints,
                  integrality=np.ones(count * tiles), bounds=Bounds(0, 1))
    assert result.status == 0
    return round(result.fun)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("minimum", [0, 3])
def test_a_tight_spacing_greedy_cannot_place_is_solved_exactly(seed, minimum):
    # 10 tiles of at most 3 uses, 3 cells apart, on 5 x 6 cells: every tile is full, and
    # no lattice class of 4 cells can keep a tile of its own; the rounds circled and greedy
    # got stuck ("no placement keeps equal tiles min_spacing 3 cells apart"), though
    # placements exist.
    rows, cols, tiles = 5, 6, 10
    full = full_distances(np.random.default_rng(seed), rows * cols, tiles, clusters=2)
    check_feasible(rows * cols, tiles, 3, rows, cols, 3, minimum)
    candidates, distances = top_k(full, tiles)
    result = assign_tiles(candidates, distances, rows, cols, max_uses=3, min_spacing=3,
                          min_uses=minimum, tile_count=tiles, search=DenseSearch(full))
    assert check_placement(result.tile, full, rows, cols, 3, 3) == result.objective
    assert (np.bincount(result.tile, minlength=tiles) == 3).all()
    # The whole library listed: the exact solve is the optimum under every limit.
    assert result.objective == spaced_reference(full, rows, cols, 3, 3, minimum)
    assert result.lower_bound <= result.objective


@pytest.mark.parametrize(("tiles", "cap"), [(10, 121), (9, 134)])
@pytest.mark.parametrize("minimum", [0, 2])
def test_a_tight_spacing_too_large_to_solve_exactly_is_placed_on_diagonals(monkeypatch, tiles,
                                                                           cap, minimum):
    # 10 tiles of at most 121 uses (9 of 134), 3 apart, on 30 x 40 cells: the default
    # preset's cap fitted to 10 (9) photos with --min-spacing 3. Each of the 9 lattice
    # classes holds 130-140 cells, over the cap; the rounds circled, greedy got stuck and
    # the exact solve ran out of time ("no placement keeps equal tiles min_spacing 3 cells
    # apart"), though (c + 3 r) mod 10 gives each tile 120 cells 3 apart (and the lattice
    # with each band of 3 rows shifted one more column gives each of 9 tiles 130-134).
    monkeypatch.setattr(_assign, "EXACT_EDGES", 0)  # stands for a grid too large for it
    rows, cols = 30, 40
    full = full_distances(np.random.default_rng(0), rows * cols, tiles, clusters=2)
    check_feasible(rows * cols, tiles, cap, rows, cols, 3, minimum)
    candidates, distances = top_k(full, tiles)
    result = assign_tiles(candidates, distances, rows, cols, max_uses=cap, min_spacing=3,
                          min_uses=minimum, tile_count=tiles, search=DenseSearch(full))
    assert check_placement(result.tile, full, rows, cols, cap, 3) == result.objective
    assert np.bincount(result.tile, minlength=tiles).min() >= minimum
    assert 0 < result.lower_bound <= dense_optimum(full, cap) <= result.objective


@pytest.mark.parametrize(("rows", "cols", "tiles", "spacing", "counted", "least"), [
    (31, 41, 4, 2, 318, 326),  # rows or columns alternate: 2 tiles share 21 columns
    (17, 23, 9, 3, 44, 46),
    (31, 41, 16, 4, 80, 82),
])
def test_a_preset_cap_rises_to_what_a_given_spacing_needs(monkeypatch, rows, cols, tiles,
                                                           spacing, counted, least):
    # The default preset's cap with --min-spacing D given, on little more than a D x D
    # block of tiles, was fitted to the cells' count alone (ceil(cells / tiles) plus
    # spare places): no placement keeps it ("no placement keeps equal tiles min_spacing 2
    # cells apart"; 4 tiles 2 apart on 31 x 41 cells alternate by rows or columns, so one
    # of them fills 326 cells at least). The cap is a wish: it rises to what the spacing
    # needs, and a placement is then found.
    from mosaicist.match import fit_limits
    from mosaicist.options import MosaicOptions

    cells = rows * cols
    assert -(-(cells + tiles // 4) // tiles) == counted
    fitted = fit_limits(MosaicOptions(min_spacing=spacing), cells, tiles, rows, cols)
    assert (fitted.max_uses, fitted.min_spacing) == (least, spacing)
    assert not fitted.given("max_uses")
    # A given cap is kept (too tight is then the user's to relax).
    given = MosaicOptions(min_spacing=spacing, max_uses=counted)
    assert fit_limits(given, cells, tiles, rows, cols).max_uses == counted
    # ... and refused before any work, saying what the spacing needs: these libraries are
    # one D x D block's worth of tiles, which repeat in whole rows or columns.
    with pytest.raises(OptionError, match=f"raise max_uses to {least:,}"):
        check_feasible(cells, tiles, counted, rows, cols, spacing)
    monkeypatch.setattr(_assign, "EXACT_EDGES", 0)  # stands for a grid too large for it
    full = full_distances(np.random.default_rng(1), cells, tiles, clusters=2)
    candidates, distances = top_k(full, tiles)
    result = assign_tiles(candidates, distances, rows, cols, max_uses=least,
                          min_spacing=spacing, search=DenseSearch(full))
    assert check_placement(result.tile, full, rows, cols, least, spacing) == result.objective


def brute_force(full, rows, cols, max_uses, min_spacing, minimum):
    """The least total over every placement that keeps the limits (None: there is none)."""
    count, tiles = full.shape
    every = np.array(list(itertools.product(range(tiles), repeat=count)), np.int64)
    uses = np.stack([(every == t).sum(axis=1) for t in range(tiles)], axis=1)
    good = (uses >= minimum).all(axis=1)
    if max_uses is not None:
        good &= (uses <= max_uses).all(axis=1)
    r, c = np.divmod(np.arange(count), cols)
    for a, b in itertools.combinations(range(count), 2):
        if max(abs(r[a] - r[b]), abs(c[a] - c[b])) < min_spacing:
            good &= every[:, a] != every[:, b]
    if not good.any():
        return None
    return int(full[np.arange(count), every[good]].sum(axis=1).min())


def test_tiny_random_cases_against_every_placement():
    # Grids of up to 6 cells, up to 4 tiles, every limit: a placement is refused only
    # where none exists, keeps the limits, is the optimum without spacing, and its
    # certified bound is the capped optimum, never above the spaced one.
    rng = np.random.default_rng(2026)
    for _ in range(200):
        rows, cols = (int(side) for side in rng.integers(1, 4, 2))
        count = rows * cols
        tiles = int(rng.integers(1, 5 if count <= 5 else 4))
        max_uses = [None, 1, 2, 3][rng.integers(0, 4)]
        minimum = int(rng.choice([0, 0, 1, 2]))
        if max_uses is not None and minimum > max_uses:
            minimum = 0
        spacing = int(rng.integers(0, 4))
        method = "optimal" if minimum else str(rng.choice(["optimal", "greedy"]))
        full = full_distances(rng, count, tiles, clusters=[None, 1, 2][rng.integers(0, 3)])
        best = brute_force(full, rows, cols, max_uses, spacing, minimum)
        case = (rows, cols, tiles, max_uses, minimum, spacing, method)
        try:
            check_feasible(count, tiles, max_uses, rows, cols, spacing, minimum)
            candidates, distances = top_k(full, tiles)
            result = assign_tiles(candidates, distances, rows, cols, max_uses=max_uses,
                                  min_spacing=spacing, method=method, min_uses=minimum,
                                  tile_count=tiles, search=DenseSearch(full))
        except MosaicistError:
            assert best is None, case
            continue
        assert best is not None, case
        assert check_placement(result.tile, full, rows, cols, max_uses, spacing) \
            == result.objective, case
        assert (np.bincount(result.tile, minlength=tiles) >= minimum).all(), case
        assert best <= result.objective and result.lower_bound <= best, case
        if method == "optimal" and spacing <= 1:
            # (no limit at all: each cell's nearest, "best", which needs no certificate)
            assert result.objective == best, case
            assert result.certified or result.method == "best", case
        if method == "optimal" and result.certified:
            cap = tile_capacity(rows, cols, max_uses, spacing) or count
            assert result.lower_bound == dense_with_minimum(full, minimum, min(cap, count)), case


def test_too_few_tiles_for_the_spacing_is_an_error_that_names_it():
    # 8 tiles, and every 3 x 3 block needs 9 (the cap, 9 uses a tile, only 6): no placement
    # exists (check_feasible says so before the work; the assignment alone must not return
    # a broken one either).
    rows = cols = 7
    full = colour_ramp(np.random.default_rng(1), rows, cols, 8)
    with pytest.raises(OptionError, match="at least 9 different tiles"):
        check_feasible(rows * cols, 8, None, rows, cols, 3)
    candidates, distances = top_k(full, 8)
    with pytest.raises(OptionError) as error:
        assign_tiles(candidates, distances, rows, cols, min_spacing=3,
                     search=DenseSearch(full))
    assert "min_spacing" in error.value.parameters and "max_uses" not in str(error.value)
    assert "\n" not in str(error.value)


def test_cells_without_an_allowed_tile_blame_only_the_limits_in_force():
    rows = cols = 3
    # Every cell lists the same 2 tiles; spacing 2 lets a tile fill 4 of the 9 cells.
    full = np.tile(np.arange(10, dtype=np.int64), (rows * cols, 1))
    candidates, distances = top_k(full, 2)
    with pytest.raises(OptionError, match="no allowed tile") as error:
        assign_tiles(candidates, distances, rows, cols, min_spacing=2)
    assert error.value.parameters == ("min_spacing",)
    with pytest.raises(OptionError, match="no allowed tile") as error:
        assign_tiles(candidates, distances, rows, cols, max_uses=1)
    assert error.value.parameters == ("max_uses",)


@pytest.mark.parametrize("limits", [{"max_uses": 2.0}, {"min_spacing": 2.5},
                                    {"min_uses": True}])
def test_limits_that_are_no_whole_numbers_are_refused_by_name(limits):
    name = next(iter(limits))
    with pytest.raises(OptionError, match=f"{name} must be a whole number"):
        check_feasible(100, 100, **({"max_uses": None} | limits), rows=10, cols=10)


def test_minimum_of_uses_messages_name_use_all_where_a_command_has_it():
    import pickle

    from mosaicist.match._assign import MinimumUsesError

    def flags(parameter):
        return "--" + parameter.replace("_", "-")

    def flags_without_use_all(parameter):
        return parameter if parameter == "use_all" else flags(parameter)

    # '--use-all' is '--min-uses 1', and the options cannot tell which was typed.
    with pytest.raises(MinimumUsesError) as error:
        check_feasible(9, 10, None, 3, 3, min_uses=1)
    assert str(error.value).startswith("min_uses 1 needs 10 cells for the 10 tiles")
    assert error.value.message(flags).startswith(
        "--use-all (--min-uses 1) needs 10 cells for the 10 tiles")
    assert error.value.message(flags_without_use_all).startswith("--min-uses 1 needs 10 cells")
    copy = pickle.loads(pickle.dumps(error.value))  # as from a worker process
    assert copy.message(flags) == error.value.message(flags)
    # A minimum above 1 is not --use-all's.
    with pytest.raises(MinimumUsesError) as error:
        check_feasible(9, 5, None, 3, 3, min_uses=2)
    assert error.value.message(flags).startswith("--min-uses 2 needs 10 cells")
    # A template without the value shows it beside --use-all.
    error2 = MinimumUsesError("{min_uses} needs every cell-tile distance", low=1)
    assert error2.message(flags) == "--use-all (--min-uses 1) needs every cell-tile distance"
    assert str(error2) == "min_uses needs every cell-tile distance"


def _tiny_job(tmp_path, tiles):
    from conftest import make_colour_folder
    from PIL import Image

    folder = make_colour_folder(tmp_path / "tiles", tiles)
    target = tmp_path / "target.png"
    pixels = np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(target)
    return target, folder  # 3 x 3 cells of 4 pixels


def test_a_minimum_the_other_limits_cannot_meet_names_them(tmp_path):
    from click.testing import CliRunner

    from mosaicist import make_mosaic
    from mosaicist.cli import main

    # 3 x 3 cells 2 apart: the centre's tile can fill no second cell.
    target, folder = _tiny_job(tmp_path, 4)
    with pytest.raises(OptionError) as error:
        make_mosaic(target, folder, preset="seed", cell_px=4, tile_px=8, min_spacing=2,
                    min_uses=2, cache_dir=tmp_path / "c")
    assert str(error.value) == (
        "min_uses 2 cannot be met: 1 of the 4 tiles cannot each fill 2 cells under "
        "min_spacing 2; lower min_uses or relax min_spacing")
    # One tile is the tile ("1 of the tile cannot each fill").
    with pytest.raises(OptionError, match="cannot be met: the only tile cannot fill 2 cells"):
        check_feasible(9, 1, None, 3, 3, 2, 2)
    result = CliRunner().invoke(main, [
        "make", str(target), "--tiles", str(folder), "--preset", "seed", "--cell", "4",
        "--tile-px", "8", "--min-spacing", "2", "--min-uses", "2", "--max-uses", "9",
        "--cache-dir", str(tmp_path / "c"), "-o", str(tmp_path / "m.png"), "-q"])
    assert result.exit_code == 1
    # A cap above the 4 uses the spacing allows is not what must change: not named.
    assert result.stderr == (
        "mosaicist: error: --min-uses 2 cannot be met: 1 of the 4 tiles cannot each fill 2 "
        "cells under --min-spacing 2; lower --min-uses or relax --min-spacing\n")
    # A cap below it is named beside the spacing.
    from mosaicist.match._capped import _minimum_unmet
    from mosaicist.options import MosaicOptions

    both = _minimum_unmet(MosaicOptions(max_uses=3, min_spacing=2, min_uses=2), 1, 4, 3, 3)
    assert both.parameters == ("min_uses", "max_uses", "min_spacing")
    assert "under max_uses 3 and min_spacing 2; lower min_uses or relax max_uses or " \
        "min_spacing" in str(both)


def test_use_all_is_named_when_the_grid_is_too_small_for_it(tmp_path):
    from click.testing import CliRunner

    from mosaicist.cli import main

    target, folder = _tiny_job(tmp_path, 10)
    result = CliRunner().invoke(main, [
        "make", str(target), "--tiles", str(folder), "--cell", "4", "--tile-px", "8",
        "--use-all", "--cache-dir", str(tmp_path / "c"), "-o", str(tmp_path / "m.png"), "-q"])
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "mosaicist: error: --use-all (--min-uses 1) needs 10 cells for the 10 tiles, but the "
        "grid has 9")
    assert result.stderr.count("\n") == 1


def test_a_minimum_for_one_tile_says_the_tile():
    # It said "needs 2 cells for the 1 tiles".
    from mosaicist.match._assign import MinimumUsesError

    with pytest.raises(MinimumUsesError) as error:
        check_feasible(1, 1, None, 1, 1, min_uses=2)
    assert str(error.value).startswith("min_uses 2 needs 2 cells for the tile, but the grid has 1")


def test_spacing_capacity_is_exact_for_any_spacing():
    from mosaicist.match import spacing_capacity

    assert spacing_capacity(10, 7, 3) == 4 * 3
    assert spacing_capacity(10, 7, 1) is None
    # The float quotient of 10 / 10**400 is 0: the capacity was 0 (a ZeroDivisionError
    # later); every tile may still take one cell.
    assert spacing_capacity(10, 7, 10**400) == 1
    assert spacing_capacity(2**60 + 1, 3, 2**59) == 3


def _polish_case(seed, rows=6, cols=7, tiles=14, k=10):
    """Lists of each cell's k nearest tiles and a greedy spaced placement on them."""
    rng = np.random.default_rng(seed)
    full = full_distances(rng, rows * cols, tiles, clusters=2)
    candidates, distances = top_k(full, k)
    bounds = np.arange(0, rows * cols * k + 1, k)
    edge_tile, edge_dist = candidates.ravel(), distances.ravel()
    return full, bounds, edge_tile, edge_dist


def _no_improving_step(choice, bounds, edge_tile, edge_dist, position, apart, cap, minimum):
    """Brute force: no single move or pair swap over listed edges lowers the cost."""
    tile = edge_tile[choice]
    count = len(choice)
    uses = np.bincount(tile, minlength=edge_tile.max() + 1)

    def clear(cell, new, ignore):
        return all(other in (cell, ignore) or tile[other] != new
                   or not (abs(position[other] - position[cell]) < apart).all()
                   for other in range(count))

    listed = {(cell, int(edge_tile[e])): e for cell in range(count)
              for e in range(bounds[cell], bounds[cell + 1])}
    for cell in range(count):
        for e in range(bounds[cell], bounds[cell + 1]):
            new = int(edge_tile[e])
            if new == tile[cell] or edge_dist[e] >= edge_dist[choice[cell]]:
                continue
            if uses[new] < cap and uses[tile[cell]] > minimum and clear(cell, new, -1):
                return False
            for partner in np.flatnonzero(tile == new):
                back = listed.get((int(partner), int(tile[cell])))
                if back is None:
                    continue
                gain = (edge_dist[choice[cell]] - edge_dist[e]
                        + edge_dist[choice[partner]] - edge_dist[back])
                if gain > 0:
                    saved = tile.copy()
                    tile[cell], tile[partner] = new, saved[cell]
                    fine = clear(cell, new, partner) and clear(partner, saved[cell], cell)
                    tile[:] = saved
                    if fine:
                        return False
    return True


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("minimum", [0, 2])
def test_polish_keeps_every_limit_and_ends_where_no_move_or_swap_gains(seed, minimum):
    from mosaicist.match import _polish

    rows, cols, cap, spacing = 6, 7, 4, 2
    full, bounds, edge_tile, edge_dist = _polish_case(seed, rows, cols, k=14)
    # A placement that keeps the limits: the 2 x 2 lattice's four classes of cells
    # 2 apart, each shared by three tiles of its own (at most 4 uses each).
    r, c = np.divmod(np.arange(rows * cols), cols)
    lattice = (r % 2) * 2 + c % 2
    rank = np.array([np.sum(lattice[:cell] == lattice[cell]) for cell in range(rows * cols)])
    wanted = lattice * 3 + rank % 3
    choice = np.empty(rows * cols, np.int64)
    listed = edge_tile.reshape(rows * cols, -1)
    for cell in range(rows * cols):
        hits = np.flatnonzero(listed[cell] == wanted[cell])
        if not len(hits):
            pytest.skip("the lattice's tile is not listed for some cell")
        choice[cell] = bounds[cell] + hits[0]
    position = np.stack([r, c], axis=1)
    check_placement(edge_tile[choice], full, rows, cols, cap, spacing)
    before = edge_dist[choice].sum()
    polished, made = _polish.polish(choice, bounds, edge_tile, edge_dist, position, spacing,
                                    cap, minimum, passes=1000)
    tile = edge_tile[polished]
    check_placement(tile, full, rows, cols, cap, spacing)
    assert (edge_tile[polished] == tile).all() and (full[np.arange(rows * cols), tile]
                                                     == edge_dist[polished]).all()
    assert np.bincount(tile, minlength=14).min() >= min(minimum, np.bincount(
        edge_tile[choice], minlength=14).min())
    assert edge_dist[polished].sum() <= before and (made > 0) == (edge_dist[polished].sum()
                                                                  < before)
    assert _no_improving_step(polished, bounds, edge_tile, edge_dist, position, spacing, cap,
                              minimum)


@pytest.mark.parametrize("seed", range(3))
def test_polish_without_numba_makes_the_same_steps(seed, monkeypatch):
    from mosaicist.match import _polish

    rows, cols = 6, 7
    _, bounds, edge_tile, edge_dist = _polish_case(seed, rows, cols, tiles=80, k=60)
    choice = bounds[:-1].copy()  # everyone on its nearest: the cap of 1 is broken...
    # ...so start from a spaced placement: each cell on its own column of the list.
    tile_of = edge_tile.reshape(rows * cols, -1)
    taken = set()
    for cell in range(rows * cols):
        for slot, tile in enumerate(tile_of[cell].tolist()):
            if tile not in taken:
                choice[cell] = bounds[cell] + slot
                taken.add(tile)
                break
        else:
            pytest.skip("lists too short for one tile per cell")
    r, c = np.divmod(np.arange(rows * cols), cols)
    position = np.stack([r, c], axis=1)
    compiled = _polish.polish(choice, bounds, edge_tile, edge_dist, position, 3, 1)
    monkeypatch.setattr(_polish, "_compiled_loop", lambda loop: None)
    plain = _polish.polish(choice, bounds, edge_tile, edge_dist, position, 3, 1)
    assert (compiled[0] == plain[0]).all() and compiled[1] == plain[1]


@pytest.mark.parametrize("numba", [True, False])
def test_polish_stops_where_a_stretch_of_steps_gains_too_little(numba, monkeypatch):
    # 400 photos on 31,212 cells spent the polish's whole budget (16-25 s) for 0.017% of
    # the objective; a stretch of steps that gains less than LEAST_GAIN of it now ends it.
    from mosaicist.match import _polish

    if not numba:
        monkeypatch.setattr(_polish, "_compiled_loop", lambda loop: None)
    rows, cols = 6, 7
    _, bounds, edge_tile, edge_dist = _polish_case(0, rows, cols, tiles=80, k=60)
    choice = np.array([bounds[cell] + 59 for cell in range(rows * cols)])  # the worst
    r, c = np.divmod(np.arange(rows * cols), cols)
    position = np.stack([r, c], axis=1)
    monkeypatch.setattr(_polish, "STRETCH", 1)
    monkeypatch.setattr(_polish, "LEAST_GAIN", 0.0)
    whole, made = _polish.polish(choice, bounds, edge_tile, edge_dist, position, 3, 3)
    # Every stretch must gain all there is: the first check (one step in) ends it.
    monkeypatch.setattr(_polish, "LEAST_GAIN", 1.0)
    stopped, few = _polish.polish(choice, bounds, edge_tile, edge_dist, position, 3, 3)
    assert 0 < few < made
    assert edge_dist[whole].sum() < edge_dist[stopped].sum() < edge_dist[choice].sum()


def test_spaced_assignments_are_polished_by_swaps(monkeypatch):
    # Every tile full (60 cells, 15 tiles of 4 uses, 3 apart): no cell can move alone,
    # and the spacing rounds' placement lowered by swaps (about a tenth on a photo of
    # 1,600 cells and 400 tiles: gap 42% -> 28%).
    from mosaicist.match import _polish

    rng = np.random.default_rng(3)
    rows, cols = 6, 10
    full = full_distances(rng, rows * cols, 15, clusters=2)
    candidates, distances = top_k(full, 15)
    results = {}
    for passes in (0, _polish.PASSES):
        monkeypatch.setattr(_polish, "PASSES", passes)
        results[passes] = assign_tiles(candidates, distances, rows, cols, max_uses=4,
                                       min_spacing=3, search=DenseSearch(full))
        check_placement(results[passes].tile, full, rows, cols, 4, 3)
    assert results[_polish.PASSES].objective < results[0].objective
    assert results[_polish.PASSES].lower_bound == results[0].lower_bound


@pytest.mark.parametrize("seed", range(4))
def test_polish_reads_the_cells_around_where_a_tile_has_more(seed, monkeypatch):
    # Tiles of 20 uses at D = 2: a spacing check reads the 3 x 3 cells around the
    # cell rather than the tile's 20 cells; the steps are the same either way.
    from mosaicist.match import _polish

    rows, cols, cap, spacing = 8, 10, 20, 2
    full, bounds, edge_tile, edge_dist = _polish_case(seed, rows, cols, tiles=8, k=8)
    r, c = np.divmod(np.arange(rows * cols), cols)
    lattice = (r % 2) * 2 + c % 2  # four classes of 20 cells 2 apart, a tile each
    listed = edge_tile.reshape(rows * cols, -1)
    choice = bounds[:-1] + np.argmax(listed == lattice[:, None], axis=1)
    position = np.stack([r, c], axis=1)
    around = _polish.polish(choice, bounds, edge_tile, edge_dist, position, spacing, cap,
                            grid=(rows, cols))
    listed_cells = _polish.polish(choice, bounds, edge_tile, edge_dist, position, spacing, cap)
    assert (around[0] == listed_cells[0]).all() and around[1] == listed_cells[1] > 0
    # Pairs found by binary search rather than in a table: the same steps.
    monkeypatch.setattr(_polish, "DENSE_PAIRS", 0)
    searched = _polish.polish(choice, bounds, edge_tile, edge_dist, position, spacing, cap,
                              grid=(rows, cols))
    assert (searched[0] == around[0]).all() and searched[1] == around[1]
    check_placement(edge_tile[around[0]], full, rows, cols, cap, spacing)
    assert _no_improving_step(around[0], bounds, edge_tile, edge_dist, position, spacing, cap,
                              0)


def test_a_crowded_grid_searches_cells_again_with_the_wider_reserve(monkeypatch):
    """Where the cells need most of the uses the library allows, a cell searched whole
    again (its cost rose past what its last search proved) gets CROWDED_RESERVE_COLUMNS
    tiles, proving further ahead as a crowd's prices climb; a first search, and every
    search elsewhere, RESERVE_COLUMNS. The optimum is the same either way."""
    from mosaicist.match import _assign

    for name in ("MOST_PRICING_COLUMNS", "OUT_SEARCH", "CROWD_SEARCH"):
        monkeypatch.setattr(_assign, name, 16)
    monkeypatch.setattr(_assign, "RESERVE_COLUMNS", 20)
    monkeypatch.setattr(_assign, "CROWDED_RESERVE_COLUMNS", 40)
    asked: list[int] = []

    class Counting(DenseSearch):
        def below(self, cells, price, limit, k, upper=None, among=None):
            if among is None:
                asked.append(k)
            return super().below(cells, price, limit, k, upper=upper, among=among)

    rng = np.random.default_rng(7)
    for tiles, crowded in ((150, True), (2000, False)):  # 80 cells: 53% and 4% of the uses
        full = full_distances(rng, 80, tiles, clusters=2)
        candidates, distances = top_k(full, 2)
        asked.clear()
        result = assign_tiles(candidates, distances, 8, 10, max_uses=1, search=Counting(full))
        assert result.certified and result.objective == dense_optimum(full, 1)
        assert asked[0] == 20
        assert set(asked) == ({20, 40} if crowded else {20})


def test_a_tight_spacing_is_placed_by_cp_sat_the_same_on_any_machine(solver, monkeypatch):
    # 17 tiles of at most 3 uses, 4 apart, on 7 x 7 cells: greedy gets stuck and HiGHS
    # took 16-21 s for a placement, and found none at all within 5 s on two of three such
    # grids (so a slower machine said "no placement"). CP-SAT, one worker on a budget of
    # deterministic work, finds one in about a second, the same one on every machine.
    if solver != "flow":
        pytest.skip("CP-SAT comes with OR-Tools")
    used = []
    monkeypatch.setattr(_assign, "_exact_by_highs", lambda *args: used.append(args))
    rows, cols, tiles, cap, spacing = 7, 7, 17, 3, 4
    full = full_distances(np.random.default_rng(0), rows * cols, tiles, clusters=2)
    check_feasible(rows * cols, tiles, cap, rows, cols, spacing)
    candidates, distances = top_k(full, tiles)
    picks = []
    for _ in range(2):
        result = assign_tiles(candidates, distances, rows, cols, max_uses=cap,
                              min_spacing=spacing, tile_count=tiles,
                              search=DenseSearch(full))
        assert check_placement(result.tile, full, rows, cols, cap, spacing) == result.objective
        assert result.lower_bound <= result.objective
        picks.append(result.tile)
    assert not used
    np.testing.assert_array_equal(picks[0], picks[1])


def dense_minimum_optimum(full, min_uses, max_uses):
    """Reference: every tile's first ``min_uses`` replicas rewarded past any cost difference."""
    count, tiles = full.shape
    reward = int(full.max()) * count + 1
    cost = np.repeat(full, max_uses, axis=1)
    cost[:, (np.arange(cost.shape[1]) % max_uses) < min_uses] -= reward
    rows, cols = linear_sum_assignment(cost)
    return int(full[rows, cols // max_uses].sum())


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(("min_uses", "max_uses", "clusters"),
                         [(1, 2, None), (1, 2, 3), (1, 3, 2), (2, 3, None), (2, 2, 4)])
def test_minimum_uses_are_certified_by_prices(seed, min_uses, max_uses, clusters):
    # Each use past a tile's minimum is priced as a surcharge: the optimum over every pair
    # is proven as under a cap alone, the far tiles found by the cells that pay it.
    rng = np.random.default_rng(seed)
    rows, cols = 6, 8
    tiles = (rows * cols) // max_uses + int(rng.integers(0, (rows * cols) // max_uses // 2))
    tiles = min(tiles, rows * cols // min_uses)
    full = full_distances(rng, rows * cols, tiles, clusters=clusters)
    candidates, distances = top_k(full, 3)
    search = DenseSearch(full)
    result = assign_tiles(candidates, distances, rows, cols, max_uses=max_uses, search=search,
                          min_uses=min_uses, tile_count=tiles)
    check_placement(result.tile, full, rows, cols, max_uses, 1)
    assert np.bincount(result.tile, minlength=tiles).min() >= min_uses
    optimum = dense_minimum_optimum(full, min_uses, max_uses)
    assert result.certified
    assert result.objective == result.lower_bound == optimum
    assert result.gap == 0.0
    assert result.candidates_used <= tiles


@pytest.mark.parametrize("far", [10**9, 10**12, 10**15])
def test_a_far_tile_short_of_its_minimum_raises_the_surcharge(far):
    # One tile far from every cell: a cell pays more for it than the first surcharge, and
    # the surcharge rises past the tile's nearest cells, which list it: one more proof
    # (sixteenfold rises alone took 64-150 rounds at 10^12-10^15).
    rng = np.random.default_rng(5)
    rows, cols, tiles = 4, 5, 12
    full = full_distances(rng, rows * cols, tiles)
    full[:, 0] += far
    candidates, distances = top_k(full, 2)
    result = assign_tiles(candidates, distances, rows, cols, max_uses=2,
                          search=DenseSearch(full), min_uses=1, tile_count=tiles)
    assert np.bincount(result.tile, minlength=tiles).min() == 1
    assert result.certified
    assert result.objective == result.lower_bound == dense_minimum_optimum(full, 1, 2)
    assert result.pricing_rounds <= 6


def test_a_proven_placement_short_of_a_minimum_gives_it_cells_and_is_its_bound():
    # The optimum under the cap alone leaves far tiles out; they take the cells that lose
    # least (each tile's nearest cells listed too), and that optimum bounds the result.
    rng = np.random.default_rng(3)
    rows, cols, tiles = 6, 8, 30
    full = full_distances(rng, rows * cols, tiles, clusters=3)
    capped = assign_tiles(*top_k(full, 3), rows, cols, max_uses=2, search=DenseSearch(full))
    assert capped.certified
    short = np.flatnonzero(np.bincount(capped.tile, minlength=tiles) == 0)
    assert len(short)
    # Each cell lists its tile in that optimum too, as the auction's lists do.
    cells = np.concatenate((np.argsort(full[:, short], axis=0)[:8].ravel(),
                            np.arange(rows * cols)))
    columns = np.concatenate((np.broadcast_to(short, (8, len(short))).ravel(), capped.tile))
    lists = top_k(full, 6)
    result = assign_tiles(*lists, rows, cols, max_uses=2, search=DenseSearch(full),
                          min_uses=1, tile_count=tiles, proven=capped.tile,
                          extra=(cells, columns, full[cells, columns]))
    check_placement(result.tile, full, rows, cols, 2, 1)
    assert np.bincount(result.tile, minlength=tiles).min() == 1
    assert not result.certified
    assert result.lower_bound == capped.objective
    assert result.objective >= dense_minimum_optimum(full, 1, 2) > capped.objective
    # Already keeping the minimum, the optimum under the cap is the one under both.
    kept = assign_tiles(*lists, rows, cols, max_uses=2, search=DenseSearch(full),
                        min_uses=1, tile_count=tiles, proven=capped.tile,
                        extra=(cells, columns, full[cells, columns]))
    assert np.array_equal(kept.tile, result.tile)
    lone = np.unique(capped.tile)
    again = assign_tiles(*top_k(full[:, lone], len(lone)), rows, cols, max_uses=2,
                         search=DenseSearch(full[:, lone]), min_uses=1,
                         tile_count=len(lone), proven=np.searchsorted(lone, capped.tile))
    assert again.certified and again.objective == capped.objective


@pytest.mark.parametrize("seed", range(4))
def test_minimum_uses_with_spacing_keep_every_limit_and_report_the_bound(seed):
    rng = np.random.default_rng(seed)
    rows, cols, tiles = 7, 9, 40
    full = full_distances(rng, rows * cols, tiles, clusters=2)
    result = assign_tiles(*top_k(full, 4), rows, cols, max_uses=2, min_spacing=3,
                          search=DenseSearch(full), min_uses=1, tile_count=tiles)
    check_placement(result.tile, full, rows, cols, 2, 3)
    assert np.bincount(result.tile, minlength=tiles).min() >= 1
    assert result.certified
    assert result.lower_bound == dense_minimum_optimum(full, 1, 2) <= result.objective


def test_a_minimum_keeps_the_tie_breaks_toward_the_last_placement():
    # 200 alike cells, 50 tiles of 1 to 5 uses, costs of tinted search units (~1e12): every
    # placement of the same tiles ties. Toward the last placement (a spacing round's
    # ``keep``), the scaled costs and the minimum's surcharge went past the solver's range
    # and were rounded, tie-breaks and all: the spacing rounds of a logo from 120 photos,
    # every photo used, reshuffled thousands of cells each round and never ended.
    if _assign._flow_solver() is None:
        pytest.skip("the min-cost flow's (OR-Tools) own scaling")
    rng = np.random.default_rng(0)
    count, tiles, cap = 200, 50, 5
    tile_cost = np.sort(rng.integers(0, 10**12, tiles))
    uses = np.ones(tiles, np.int64)
    uses[:(count - tiles) // (cap - 1)] = cap  # the cheapest tiles full, the rest once
    uses[(count - tiles) // (cap - 1)] += count - uses.sum()
    kept = rng.permutation(np.repeat(np.arange(tiles), uses))
    row = np.repeat(np.arange(count), tiles)
    tile = np.tile(np.arange(tiles), count)
    cost = tile_cost[tile]
    moved = (tile != kept[row]).astype(np.int64)
    units, _ = _assign.flow_units(count, row, tile, tiles, cost, np.zeros(count, np.int64),
                                  cap, None, minimum=1, moved=moved, rounding=True)
    placed = units > 0
    assert placed.sum() == count
    np.testing.assert_array_equal(tile[placed], kept[row[placed]])


def _block_tiles_placements(rows, cols, spacing):
    """Every (most, fewest) use count of the placements of ``D x D`` tiles ``D`` apart.

    By backtracking over all of them, the first block's tiles fixed (any
    other placement is one of these with the tiles renamed, which changes
    no count).
    """
    tiles = spacing * spacing
    grid = [[-1] * cols for _ in range(rows)]
    found = set()

    def place(index):
        if index == rows * cols:
            counts = np.bincount(np.array(grid).ravel(), minlength=tiles)
            found.add((int(counts.max()), int(counts.min())))
            return
        row, col = divmod(index, cols)
        near = {grid[r][c] for r in range(max(0, row - spacing + 1), row + 1)
                for c in range(max(0, col - spacing + 1), min(cols, col + spacing))
                if (r, c) < (row, col)}
        options = ([row * spacing + col] if row < spacing and col < spacing
                   else range(tiles))
        options = [tile for tile in options if tile not in near]
        for tile in options:
            grid[row][col] = tile
            place(index + 1)
        grid[row][col] = -1

    place(0)
    return found


@pytest.mark.parametrize(("rows", "cols", "spacing"), [
    (2, 2, 2), (2, 5, 2), (3, 3, 2), (3, 5, 2), (4, 5, 2), (5, 5, 2), (5, 6, 2),
    (3, 3, 3), (3, 5, 3), (4, 4, 3), (4, 5, 3),
])
def test_a_block_of_tiles_is_refused_exactly_the_limits_no_placement_keeps(rows, cols, spacing):
    found = _block_tiles_placements(rows, cols, spacing)
    # The two ways' counts are the extremes of every placement.
    ways = _assign.block_tiles_uses(rows, cols, spacing)
    assert min(most for most, _ in found) == min(most for most, _ in ways)
    assert max(fewest for _, fewest in found) == max(fewest for _, fewest in ways)
    cells, tiles = rows * cols, spacing * spacing
    for max_uses in range(1, cells + 1):
        for min_uses in range(0, cells // tiles + 2):
            if min_uses > max_uses or tiles * min_uses > cells:
                continue
            possible = any(most <= max_uses and fewest >= min_uses for most, fewest in found)
            try:
                check_feasible(cells, tiles, max_uses, rows, cols, spacing, min_uses)
            except OptionError as error:
                assert not possible, (max_uses, min_uses, str(error))
                message = str(error)
                assert "\n" not in message
                if "whole rows or columns" not in message:
                    continue  # a count's refusal (too few tiles for the cap)
                reaching = [most for most, fewest in found if fewest >= min_uses]
                within = [fewest for most, fewest in found if most <= max_uses]
                # What would do is said: the least cap that a placement keeping the
                # minimum needs, or the most that every tile can fill.
                if reaching:
                    assert f"raise max_uses to {min(reaching):,}" in message, message
                else:
                    best = max(fewest for _, fewest in found)
                    assert f"lower min_uses to {best:,}" in message, message
                if reaching and within:
                    assert f"lower min_uses to {max(within):,}" in message, message
            else:
                assert possible, (max_uses, min_uses)


def test_a_block_of_tiles_on_a_large_grid_says_what_it_needs():
    # 4 photos 2 apart on 41 x 31 cells: 326 uses for one (by columns), not 318.
    with pytest.raises(OptionError, match="at least 326 cells, above max_uses 325") as error:
        check_feasible(41 * 31, 4, 325, 31, 41, 2)
    assert set(error.value.parameters) == {"max_uses", "min_spacing"}
    check_feasible(41 * 31, 4, 326, 31, 41, 2)
    # 9 photos 3 apart on 7 x 7 cells: the smallest row set's 2 rows give 14 cells to 3.
    with pytest.raises(OptionError, match="at most 4 cells, below min_uses 5"):
        check_feasible(49, 9, 7, 7, 7, 3, 5)
    check_feasible(49, 9, 7, 7, 7, 3, 4)
    # Each limit alone has a way, not both: 9 photos 3 apart on 8 x 7 cells. By rows one
    # fills 8 and the fewest 5; by columns 7 and 4. (CP-SAT proves a cap of 7 with a
    # minimum of 5 infeasible in about a minute, and finds 8 with 5 and 7 with 4 at once;
    # too slow for the placements' backtracking above.)
    with pytest.raises(OptionError, match="with min_uses 5 one tile fills at least 8 cells, "
                       "above max_uses 7; raise max_uses to 8 or lower min_uses to 4"):
        check_feasible(56, 9, 7, 7, 8, 3, 5)
    check_feasible(56, 9, 8, 7, 8, 3, 5)
    check_feasible(56, 9, 7, 7, 8, 3, 4)
    # More tiles than a block, or adaptive cells (fewer than the grid's): not this check.
    check_feasible(41 * 31, 5, 260, 31, 41, 2)
    check_feasible(41 * 31 - 1, 4, 318, 31, 41, 2)


def test_minimum_slots_past_exact_floats_are_left_to_the_integer_solver():
    """Costs whose float64 sums could round are refused (None), not solved inexactly.

    A common factor is divided out first: tinted search units are multiples
    of thousands.
    """
    from mosaicist.match import minimum_slots

    rng = np.random.default_rng(2)
    full = full_distances(rng, 12, 4, clusters=2)
    expected = minimum_slots(full, 2)
    scaled = minimum_slots(full * (1 << 40), 2)
    assert scaled is not None and np.array_equal(scaled, expected)
    huge = full.copy()
    huge[0, 0] += 1 << 52
    assert minimum_slots(huge, 2) is None
