"""The capped assignment solved once per kind of identical cell (``mosaicist.match._groups``).

A line drawing under the default preset (9,690 cells of 50,000 photos, 8,114
of them white) took 687 s through the cell-by-cell pricing rounds and ended
without a proof; 30,000 cells never finished. Its kinds of cell are solved
as a transportation problem instead, and checked here against the dense
optimum.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from test_assign import DenseSearch, check_placement, dense_optimum, dense_with_minimum
from test_pipeline import smooth_folder

from mosaicist import make_mosaic
from mosaicist.match import MatchRequest, _assign, _capped, _groups, _kinds_repair, _warm
from mosaicist.match._groups import assign_by_kinds, cell_kinds, least_prices


def test_cell_kinds_group_identical_vectors_numbered_by_first_cell():
    vectors = np.zeros((7, 2, 2, 3), np.uint8)
    vectors[[1, 4]] = 9
    vectors[3, 1, 1, 2] = 1  # one byte apart from the white cells: a kind of its own
    vectors[6] = 9
    kinds = cell_kinds(vectors)
    assert kinds.kind.tolist() == [0, 1, 0, 2, 1, 0, 1]
    assert kinds.first.tolist() == [0, 1, 3]
    assert kinds.size.tolist() == [3, 3, 1]
    assert not kinds.worth_grouping()  # 3 kinds of 7 cells, none a crowd
    assert not cell_kinds(np.arange(28, dtype=np.uint8).reshape(7, 4)).worth_grouping()


def _kinds_of_sizes(sizes: list[int]) -> _groups.CellKinds:
    kind = np.repeat(np.arange(len(sizes)), sizes)
    return cell_kinds(kind.astype(np.uint16).view(np.uint8).reshape(len(kind), 2))


def test_kinds_are_worth_grouping_where_crowds_hold_enough_of_the_cells():
    crowd = _groups.CROWD_KIND
    # A quarter of the grid in one kind (a white backdrop): by kinds.
    assert _kinds_of_sizes([100] + [1] * 300).worth_grouping()
    # Small kinds only (a colour ramp at full tint, cells a colour apart), however few:
    # the cells' pricing rounds, which warm prices start, are faster.
    small = _kinds_of_sizes([crowd - 1] * 500)
    assert len(small.first) <= len(small.kind) / (crowd - 1) and not small.worth_grouping()
    assert _kinds_of_sizes([crowd] * 500).worth_grouping()
    # Where a tile fills several cells, a crowd is a kind that fills as many tiles: the
    # same kinds at 2 uses a tile fill half as many, and stay with the cells.
    assert not _kinds_of_sizes([crowd] * 500).worth_grouping(2)
    assert _kinds_of_sizes([2 * crowd] * 500).worth_grouping(2)
    # Crowds below the share among few kinds: the cells where spacing rounds follow (and
    # none of them large, where they do not).
    share = _groups.CROWDED_SHARE
    crowded = int(share * 1000)
    below = _kinds_of_sizes([crowded - 1, 1] + [2] * ((1000 - crowded) // 2))
    assert not below.worth_grouping(spaced=True)
    assert _kinds_of_sizes([crowded] + [2] * ((1000 - crowded) // 2)).worth_grouping(
        spaced=True)
    assert not _kinds_of_sizes([crowd] * 24 + [1] * 808).worth_grouping()
    # Few kinds are still needed where no crowd is large: a fifth of the cells in crowds
    # of 16, the rest alone.
    assert not _kinds_of_sizes([16] * 13 + [1] * 832).worth_grouping()


def test_large_crowds_among_lone_cells_are_worth_the_kinds_where_no_spacing_follows():
    # A caption bar or a clipped sky beside thousands of lone cells (the camera-trap
    # elephants: 10% of 31,212 cells in kinds of 32 or more; the rocket at the seed's
    # distance 1.2%): by kinds from the share on.
    large, share = _groups.LARGE_CROWD_KIND, _groups.LARGE_CROWDED_SHARE
    lone = 10_000
    crowded = int(np.ceil(share * (lone + 2 * large)))
    at_share = [crowded] + [1] * (lone + 2 * large - crowded)
    assert _kinds_of_sizes(at_share).worth_grouping()
    # One cell short of the share, or crowds one cell short of large: the cells.
    assert not _kinds_of_sizes([crowded - 2, 1, 1] + at_share[1:]).worth_grouping()
    assert not _kinds_of_sizes([large - 1] * 8 + [1] * lone).worth_grouping()
    assert _kinds_of_sizes([large] * 8 + [1] * lone).worth_grouping()
    # Large is counted in tiles too: at 2 uses a tile, twice the cells.
    assert not _kinds_of_sizes([large] * 8 + [1] * lone).worth_grouping(2)
    assert _kinds_of_sizes([2 * large] * 8 + [1] * lone).worth_grouping(2)
    # Where spacing rounds (or a minimum of uses) follow, lone cells beside the crowds
    # stay with the cells (the elephants from 3,000 photos, spaced: 415 s by kinds,
    # 80 s by cells); few kinds and crowds still go by kinds.
    assert not _kinds_of_sizes(at_share).worth_grouping(spaced=True)
    assert _kinds_of_sizes([100] + [1] * 300).worth_grouping(spaced=True)
    # No crowd at all (most photos): the cells.
    assert not _kinds_of_sizes([1] * lone).worth_grouping()
    assert not _kinds_of_sizes([2] * 20 + [1] * lone).worth_grouping()


def test_cell_kinds_are_exact_where_hashes_collide(monkeypatch):
    rng = np.random.default_rng(4)
    vectors = rng.integers(0, 3, (300, 2, 5), dtype=np.uint8)  # rows of 10 bytes: padded
    expected = cell_kinds(vectors)
    # Every row one hash: the rows themselves decide.
    monkeypatch.setattr(_groups, "_row_hash", lambda words: np.zeros(len(words), np.uint64))
    collided = cell_kinds(vectors)
    for kinds in (expected, collided):
        same = (vectors.reshape(300, -1)[:, None] == vectors.reshape(300, -1)[None]).all(-1)
        np.testing.assert_array_equal(kinds.kind[:, None] == kinds.kind[None], same)
    np.testing.assert_array_equal(collided.kind, expected.kind)
    np.testing.assert_array_equal(collided.first, expected.first)
    np.testing.assert_array_equal(collided.size, expected.size)


def _kinds_problem(seed: int, count: int, tiles: int, kinds: int, spread: int = 40):
    """Distances of cells drawn from a few vectors (one of them most of the cells)."""
    rng = np.random.default_rng(seed)
    vectors = rng.integers(0, spread, (kinds, 3))
    weights = np.r_[8.0, np.ones(kinds - 1)]
    kind = rng.choice(kinds, count, p=weights / weights.sum())
    cells = vectors[kind]
    tile_features = rng.integers(0, spread, (tiles, 3))
    full = ((cells[:, None, :] - tile_features[None]) ** 2).sum(-1).astype(np.int64)
    return cells.astype(np.uint8), full


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("cap", [1, 2, 3])
@pytest.mark.parametrize("spread", [40, 6])
@pytest.mark.parametrize("looks", ["search", "rows", "some rows"])
def test_kinds_reach_the_dense_optimum_certified(monkeypatch, seed, cap, spread, looks):
    if looks != "search":
        # Every kind keeps its distances at its first price check, or the first few do.
        monkeypatch.setattr(_groups, "ROW_WIDTH", 1)
        if looks == "some rows":
            monkeypatch.setattr(_groups, "MOST_ROW_PAIRS", 2 * (60 // cap + 7 * seed))
    rows, cols = 6, 10
    count = rows * cols
    # Just enough tiles at cap 1; spread 6 makes many ties.
    tiles = count // cap + 7 * seed
    cells, full = _kinds_problem(seed, count, tiles, kinds=5 + seed, spread=spread)
    kinds = cell_kinds(cells)
    result = assign_by_kinds(DenseSearch(full), kinds, cap)
    assert result is not None and result.certified and result.gap == 0
    check_placement(result.tile, full, rows, cols, cap, 1)
    np.testing.assert_array_equal(result.distance, full[np.arange(count), result.tile])
    assert result.objective == result.lower_bound == dense_optimum(full, cap)


def _solved_near_the_last_round(monkeypatch, cap: int, name: str) -> list[bool]:
    """Random problems solved by kinds, to the dense optimum; each call of ``_groups.name``.

    Whether each call gave a flow (the others solve afresh).
    """
    monkeypatch.setattr(_groups, "FIRST_TILES", 1)
    monkeypatch.setattr(_groups, "CHECK_TILES", 1)
    outcomes = []
    solve = getattr(_groups, name)

    def counted(*args, **kwargs):
        result = solve(*args, **kwargs)
        outcomes.append(result is not None)
        return result

    monkeypatch.setattr(_groups, name, counted)
    for seed in range(8):
        count = 80
        tiles = -(-count // cap) + 10 * seed
        cells, full = _kinds_problem(seed, count, tiles, kinds=20 + 5 * seed, spread=6 + seed)
        result = assign_by_kinds(DenseSearch(full), cell_kinds(cells), cap)
        assert result is not None and result.certified and result.gap == 0
        check_placement(result.tile, full, 8, 10, cap, 1)
        assert result.objective == result.lower_bound == dense_optimum(full, cap)
    return outcomes


@pytest.mark.parametrize("cap", [1, 2, 3])
def test_solves_near_the_last_prices_reach_the_dense_optimum(monkeypatch, cap):
    # Every round after the first solves near the last prices, however many pairs that
    # keeps: pairs left out break the proof and join a second solve, or the whole solve
    # follows. (No repairs, which come first.)
    monkeypatch.setattr(_assign, "NEAR_SHARE", 1.0)
    monkeypatch.setattr(_groups, "NEAR_NEW_SHARE", 1.0)
    monkeypatch.setattr(_groups, "repair_kinds", lambda *args, **kwargs: None)
    assert sum(_solved_near_the_last_round(monkeypatch, cap, "_near_units")) >= 3


@pytest.mark.parametrize("cap", [1, 2, 3])
def test_repairs_of_the_last_flow_reach_the_dense_optimum(monkeypatch, cap):
    # Every round after the first repairs the last optimum, whatever it would cost, the
    # rounds after units outside too.
    pytest.importorskip("numba")
    monkeypatch.setattr(_kinds_repair, "ARCS_PER_PAIR", 1 << 40)
    after_outside = []
    repair = _kinds_repair.repair_kinds

    def noted(*args, **kwargs):
        result = repair(*args, **kwargs)
        if kwargs["outside_units"].any():
            after_outside.append(result is not None)
        return result

    monkeypatch.setattr(_groups, "repair_kinds", noted)
    assert sum(_solved_near_the_last_round(monkeypatch, cap, "repair_kinds")) >= 8
    assert after_outside and all(after_outside)


@pytest.mark.parametrize("cap", [1, 2])
def test_units_go_outside_only_where_the_lists_have_no_place_for_them(monkeypatch, cap):
    # An outside column past every kind's farthest tile, not only its own: else a kind
    # of near tiles goes outside rather than move alike kinds a little farther, and a
    # round lists tiles for it that it did not need.
    monkeypatch.setattr(_groups, "FIRST_TILES", 1)
    solves = []
    flow = _groups.flow_units

    def noted(count, kind, tile, tile_count, relative, base, cap, outside, **kwargs):
        result = flow(count, kind, tile, tile_count, relative, base, cap, outside, **kwargs)
        fewest = flow(count, kind, tile, tile_count, relative, base, cap,
                      np.full(count, 1 << 40), **kwargs)
        solves.append((int(result[1].sum()), int(fewest[1].sum())))
        return result

    monkeypatch.setattr(_groups, "flow_units", noted)
    for seed in range(12):
        count = 60
        cells, full = _kinds_problem(seed, count, -(-count // cap) + 3 * seed, kinds=12 + seed,
                                     spread=8)
        result = assign_by_kinds(DenseSearch(full), cell_kinds(cells), cap)
        assert result is not None and result.certified
        assert result.objective == dense_optimum(full, cap)
    assert solves
    assert all(out == fewest for out, fewest in solves)


def test_a_kind_larger_than_its_first_lists_lists_tiles_with_room(monkeypatch):
    # 50 alike cells, one use per tile, and a few other kinds after the same tiles:
    # the first lists (1 past the 50) leave units outside, which list tiles with room.
    monkeypatch.setattr(_groups, "FIRST_TILES", 1)
    monkeypatch.setattr(_groups, "CHECK_TILES", 1)
    rng = np.random.default_rng(3)
    tile_features = rng.integers(0, 50, (90, 3))
    cells = np.repeat(np.array([[25, 25, 25], [24, 25, 25], [25, 26, 25], [0, 0, 0]]),
                      [50, 5, 5, 4], axis=0)
    full = ((cells[:, None, :] - tile_features[None]) ** 2).sum(-1).astype(np.int64)
    searches = DenseSearch(full)
    result = assign_by_kinds(searches, cell_kinds(cells.astype(np.uint8)), 1)
    assert result is not None and result.certified
    assert result.pricing_rounds > 1
    assert result.objective == dense_optimum(full, 1)
    check_placement(result.tile, full, 8, 8, 1, 1)


def test_alike_kinds_with_units_outside_list_room_for_all_of_them(monkeypatch):
    # 40 kinds a unit short, all nearest to the same few tiles with room: each lists
    # past the tiles the others found until those have room for every unit outside.
    monkeypatch.setattr(_groups, "FIRST_TILES", 1)
    rng = np.random.default_rng(5)
    tiles = 200
    full = rng.integers(1000, 2000, (40, tiles)).astype(np.int64)
    full[:, :3] = rng.integers(0, 10, (40, 3))  # everyone's three nearest
    lists = _groups._Lists(40, tiles)
    free = np.arange(tiles)
    room = np.ones(tiles, np.int64)
    room[1] = 5  # a tile of more uses counts for them
    assert lists.list_with_room(DenseSearch(full), np.arange(40), np.ones(40, np.int64),
                                free, room)
    found = np.unique(lists.tile)
    assert room[found].sum() >= 40
    # Every kind listed its own nearest past the first three, not only those.
    assert (np.bincount(lists.kind, minlength=40) > 3).all()
    # One unit outside, room for it at once: a single look of two tiles.
    once = _groups._Lists(40, tiles)
    assert once.list_with_room(DenseSearch(full), np.arange(40), np.eye(1, 40, 0, np.int64)[0],
                               free, room)
    assert len(once.tile) == 2


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("minimum", "cap"), [(1, 1), (1, 2), (1, 3), (2, 3), (2, 2)])
@pytest.mark.parametrize("spread", [40, 6])
@pytest.mark.parametrize("looks", ["search", "rows", "far"])
def test_kinds_with_a_minimum_of_uses_reach_the_dense_optimum(monkeypatch, seed, minimum, cap,
                                                              spread, looks):
    if looks == "rows":
        monkeypatch.setattr(_groups, "ROW_WIDTH", 1)
    if looks == "far":
        monkeypatch.setattr(_groups, "REACH_SHARE", 0.3)
    rows, cols = 6, 10
    count = rows * cols
    # From just enough tiles for the cap to just few enough for the minimum.
    fewest, most = -(-count // cap), count // minimum
    tiles = fewest + (most - fewest) * seed // 4
    cells, full = _kinds_problem(seed, count, tiles, kinds=4 + seed, spread=spread)
    result = assign_by_kinds(DenseSearch(full), cell_kinds(cells), cap, minimum=minimum)
    assert result is not None and result.certified and result.gap == 0
    check_placement(result.tile, full, rows, cols, cap, 1)
    assert np.bincount(result.tile, minlength=tiles).min() >= minimum
    np.testing.assert_array_equal(result.distance, full[np.arange(count), result.tile])
    assert result.objective == result.lower_bound == dense_with_minimum(full, minimum, cap)


def test_a_far_tile_raises_the_surcharge_until_it_is_used(monkeypatch):
    # One tile far from every cell and listed by none: twice the outside columns' cost is
    # not worth its minimum, and the proven optimum leaves it out until the surcharge
    # rises past it.
    monkeypatch.setattr(_groups, "FIRST_TILES", 1)
    monkeypatch.setattr(_groups, "CHECK_TILES", 1)
    cells, full = _kinds_problem(2, 60, 50, kinds=5)
    full[:, 7] += 10 ** 9
    result = assign_by_kinds(DenseSearch(full), cell_kinds(cells), 2, minimum=1)
    assert result is not None and result.certified
    assert np.bincount(result.tile, minlength=50).min() == 1
    assert result.objective == dense_with_minimum(full, 1, 2)
    assert result.pricing_rounds > 2


class CountingSearch(DenseSearch):
    """Counts the kinds each search of the whole library, or of some tiles, looks for."""

    def __init__(self, full):
        super().__init__(full)
        self.whole = 0
        self.some = 0

    def below(self, cells, price, limit, k, upper=None, among=None):
        if among is None:
            self.whole += len(cells)
        else:
            self.some += len(cells)
        return super().below(cells, price, limit, k, upper, among)


def test_kinds_whose_proofs_hold_are_not_searched_again():
    # Eight kinds of many cells, few tiles to spare: many rounds, and most kinds' proofs
    # hold through most of them.
    count, tiles = 400, 430
    cells, full = _kinds_problem(11, count, tiles, kinds=40, spread=60)
    search = CountingSearch(full)
    result = assign_by_kinds(search, cell_kinds(cells), 1)
    kinds = len(cell_kinds(cells).first)
    assert result is not None and result.certified
    assert result.objective == dense_optimum(full, 1)
    assert result.pricing_rounds >= 3
    looks = search.whole + search.some
    assert search.some > 0  # some kinds looked only at the tiles whose prices fell
    assert looks < 0.7 * kinds * result.pricing_rounds, (looks, kinds, result.pricing_rounds)


@pytest.mark.parametrize("cap", [1, 2])
def test_checks_that_look_past_the_cost_search_less_and_reach_the_optimum(monkeypatch, cap):
    # A look up to the cost plus a share of it keeps the tiles found past the cost aside:
    # while a kind's cost rises less, its next checks price those alone, and list them
    # where they beat it.
    monkeypatch.setattr(_groups, "FIRST_TILES", 1)
    looks = {}
    for reach in (0.0, 0.3):
        monkeypatch.setattr(_groups, "REACH_SHARE", reach)
        looks[reach] = 0
        for seed in range(6):
            count, tiles = 300, 300 // cap + 40
            cells, full = _kinds_problem(seed, count, tiles, kinds=100 + 5 * seed, spread=200)
            search = CountingSearch(full)
            result = assign_by_kinds(search, cell_kinds(cells), cap)
            assert result is not None and result.certified and result.gap == 0
            assert result.objective == result.lower_bound == dense_optimum(full, cap)
            check_placement(result.tile, full, 15, 20, cap, 1)
            looks[reach] += search.whole + search.some
    assert looks[0.3] < looks[0.0], looks


def test_searches_that_find_few_tiles_ask_for_fewer_next_time(monkeypatch):
    # Checks wide from earlier cuts: a search that finds few tiles past those held asks
    # next time for twice as many (at least CHECK_TILES), never more than before; the
    # optimum stays the dense one.
    monkeypatch.setattr(_groups, "FIRST_TILES", 1)
    count, tiles = 400, 430
    cells, full = _kinds_problem(11, count, tiles, kinds=40, spread=60)
    kinds = cell_kinds(cells)
    widths = []
    search = CountingSearch(full)
    below = search.below

    def recorded(cells, price, limit, k, upper=None, among=None):
        widths.append(k)
        return below(cells, price, limit, k, upper, among)

    monkeypatch.setattr(search, "below", recorded)
    wide = _groups._Lists.__init__

    def widened(self, *args):
        wide(self, *args)
        self.check[:] = 64

    monkeypatch.setattr(_groups._Lists, "__init__", widened)
    checks = []
    price_check = _groups._Lists.price_check

    def traced(self, *args):
        before = self.check.copy()
        result = price_check(self, *args)
        checks.append((before, self.check.copy()))
        return result

    monkeypatch.setattr(_groups._Lists, "price_check", traced)
    result = assign_by_kinds(search, kinds, 1)
    assert result is not None and result.certified
    assert result.objective == dense_optimum(full, 1)
    assert len(checks) >= 2
    for before, after in checks:
        assert (after >= _groups.CHECK_TILES).all()
        # Only a cut search widens a kind's next one, twice as wide.
        assert ((after <= before) | (after == np.minimum(2 * before, tiles))).all()
    # Every kind's first search found few tiles: the second asks for fewer.
    assert (checks[0][1] < 64).any()
    assert min(widths[len(widths) // 2:]) < max(widths[:len(widths) // 2])


def test_every_tile_needed_and_ties_everywhere():
    # As many cells as uses: every tile is full, and every distance is the same.
    full = np.full((12, 4), 7, np.int64)
    result = assign_by_kinds(DenseSearch(full), cell_kinds(np.zeros((12, 3), np.uint8)), 3)
    assert result is not None and result.certified and result.objective == 84
    assert np.bincount(result.tile, minlength=4).tolist() == [3, 3, 3, 3]


def test_too_few_uses_and_no_flow_solver(monkeypatch):
    full = np.zeros((5, 2), np.int64)
    kinds = cell_kinds(np.zeros((5, 1), np.uint8))
    with pytest.raises(ValueError, match="cannot fill"):
        assign_by_kinds(DenseSearch(full), kinds, 2)
    # Too few cells for every tile's minimum: 5 cells, 2 tiles of at least 3 uses.
    with pytest.raises(ValueError, match="cannot fill 3 uses of each of 2 tiles"):
        assign_by_kinds(DenseSearch(full), kinds, 4, minimum=3)
    monkeypatch.setattr(_assign, "SOLVER", "lapjv")
    assert assign_by_kinds(DenseSearch(full), kinds, 3) is None


def test_a_kinds_cells_share_its_tiles_in_a_scattered_order():
    # 400 alike cells over 400 tiles of rising distance: the nearest tiles are not all
    # in the first rows of the grid.
    full = np.tile(np.arange(400, dtype=np.int64) * 5, (400, 1))
    result = assign_by_kinds(DenseSearch(full), cell_kinds(np.zeros((400, 3), np.uint8)), 1)
    assert result is not None and sorted(result.tile.tolist()) == list(range(400))
    top, bottom = result.distance[:200].mean(), result.distance[200:].mean()
    assert abs(top - bottom) < 0.2 * result.distance.mean()


@pytest.mark.parametrize("compiled", [False, True])
def test_least_prices_give_up_on_a_flow_that_is_not_optimal(monkeypatch, compiled):
    # Kind 0 holds tile 1 (cost 5) while tile 0 (cost 0) is full with kind 1, which
    # could move to tile 1 at cost 0: a cycle that gains 5 forever.
    monkeypatch.setattr(_groups, "MOST_PRICE_SWEEPS", 50)
    kind = np.array([0, 0, 1, 1])
    tile = np.array([0, 1, 0, 1])
    distance = np.array([0, 5, 0, 0])
    units = np.array([0, 1, 1, 0])
    room = units < 1
    full = np.array([True, True])
    assert least_prices(kind, tile, distance, units, room, full, 2, 2,
                        compiled=compiled) is None
    # An optimal flow (a tie) whose least price of tile 0 (5) passes its ceiling.
    distance = np.array([0, 5, 0, 5])
    units = np.array([1, 0, 0, 1])
    room = units < 1
    for ceiling, expected in ((4, None), (5, [5, 0])):
        limit = np.array([ceiling, 100])
        priced = least_prices(kind, tile, distance, units, room, full, 2, 2,
                              ceiling=limit, compiled=compiled)
        assert (priced is None if expected is None
                else priced[0].tolist() == expected and priced[1].tolist() == [5, 5])


@pytest.mark.parametrize("compiled", [False, True])
def test_prices_raised_from_a_start_prove_the_flow_or_give_way_to_the_least(compiled):
    # Kind 0 holds tile 0 (distance 0), kind 1 holds tile 1 (distance 4) and could take
    # tile 0 at 2; tile 2 has room, at 3 from kind 0 and 9 from kind 1.
    kind = np.array([0, 0, 1, 1, 1])
    tile = np.array([0, 2, 0, 1, 2])
    distance = np.array([0, 3, 2, 4, 9])
    units = np.array([1, 0, 0, 1, 0])
    room = units < 1
    full = np.array([True, True, False])
    least = least_prices(kind, tile, distance, units, room, full, 2, 3, compiled=compiled)
    assert least is not None
    assert least[0].tolist() == [2, 0, 0] and least[1].tolist() == [2, 4]
    # From a start of 3 on tile 0: kind 0 costs 3, no more than tile 2 (room, price 0).
    raised = least_prices(kind, tile, distance, units, room, full, 2, 3, compiled=compiled,
                          start=np.array([3, 0, 7]))
    assert raised is not None
    assert raised[0].tolist() == [3, 0, 0] and raised[1].tolist() == [3, 4]
    # From 5: kind 0 would cost 5 past tile 2 at 3, which proves nothing: the least.
    again = least_prices(kind, tile, distance, units, room, full, 2, 3, compiled=compiled,
                         start=np.array([5, 0, 0]))
    assert again is not None
    assert again[0].tolist() == least[0].tolist() and again[1].tolist() == least[1].tolist()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("minimum", "cap"), [(0, 1), (0, 3), (1, 2), (2, 3)])
def test_compiled_least_prices_are_the_numpy_sweeps(monkeypatch, seed, minimum, cap):
    # Every call of the kinds' rounds, both ways: the least prices are unique, so the
    # compiled raises must find exactly the sweeps' prices and costs (or both give up).
    pytest.importorskip("numba")
    calls = []
    numpy_prices = least_prices

    def both(*args, **kwargs):
        kwargs.pop("compiled", None)
        expected = numpy_prices(*args, **kwargs, compiled=False)
        got = numpy_prices(*args, **kwargs, compiled=True)
        assert (got is None) == (expected is None)
        if expected is not None:
            np.testing.assert_array_equal(got[0], expected[0])
            np.testing.assert_array_equal(got[1], expected[1])
        calls.append(expected is not None)
        return expected

    monkeypatch.setattr(_groups, "least_prices", both)
    monkeypatch.setattr(_groups, "FIRST_TILES", 1)
    monkeypatch.setattr(_groups, "CHECK_TILES", 1)
    count = 80
    fewest, most = -(-count // cap), count // max(minimum, 1)
    tiles = fewest + (min(most, 3 * fewest) - fewest) * seed // 5
    # Many kinds of one to a few cells, on tiles of few distances (ties, long chains).
    cells, full = _kinds_problem(seed, count, tiles, kinds=20 + 4 * seed, spread=5 + seed)
    result = assign_by_kinds(DenseSearch(full), cell_kinds(cells), cap, minimum=minimum)
    assert result is not None and result.certified and calls
    expected = dense_with_minimum(full, minimum, cap) if minimum else dense_optimum(full, cap)
    assert result.objective == expected


def _cells_only(monkeypatch):
    """Every grid to the cells' pricing rounds from here on (no crowd is large enough)."""
    monkeypatch.setattr(_groups, "CROWDED_SHARE", 2.0)
    monkeypatch.setattr(_groups, "LARGE_CROWDED_SHARE", 2.0)


def _recorded(monkeypatch, *names):
    """The list the matcher's calls of ``_capped``'s ``names`` append their results to."""
    results = []
    for name in names:
        original = getattr(_capped, name)

        def recording(*args, original=original, **kwargs):
            results.append(original(*args, **kwargs))
            return results[-1]

        monkeypatch.setattr(_capped, name, recording)
    return results


def _flat_target(height: int = 96, width: int = 128) -> np.ndarray:
    """White paper with two strokes and a grey square: a few kinds of cell."""
    image = np.full((height, width, 3), 255, np.uint8)
    image[20:28, :, :] = (20, 20, 20)
    image[:, 64:72] = (200, 30, 30)
    image[60:92, 8:40] = 128
    return image


@pytest.mark.parametrize("augment, tint", [("none", 0.0), ("flips", 0.5)])
@pytest.mark.parametrize("rows", [False, True])
def test_a_flat_target_through_kinds_equals_the_cells_pricing_rounds(tmp_path, monkeypatch,
                                                                     augment, tint, rows):
    if rows:
        # Every kind's checks look at its distance to every tile, drawn by the library.
        monkeypatch.setattr(_groups, "ROW_WIDTH", 1)
    folder = smooth_folder(tmp_path / "tiles", count=220, seed=5)
    target = tmp_path / "flat.png"
    Image.fromarray(_flat_target()).save(target)
    mosaic = make_mosaic(target, folder, cell_px=8, tile_px=16, augment=augment,
                         cache_dir=tmp_path / "c")
    options = replace(mosaic.options, max_uses=1, min_spacing=1, min_uses=0, tint=tint,
                      assign="optimal")
    request = MatchRequest(mosaic.grid, mosaic.library, options)
    assert cell_kinds(request.cell_vectors).worth_grouping()
    solved = _recorded(monkeypatch, "assign_by_kinds")
    kinds_result = _capped.CappedMatcher().match(request)
    assert len(solved) == 1 and solved[0] is not None
    _cells_only(monkeypatch)
    cells_result = _capped.CappedMatcher().match(request)
    assert len(solved) == 1
    first, second = kinds_result.assignment, cells_result.assignment
    assert first.certified and second.certified
    assert first.objective == second.objective == first.lower_bound
    # Each cell's candidate is its tile's best transform, as the whole matrix says.
    dense = _capped.LibrarySearch(request)
    every = dense.dense()
    cells = np.arange(len(first.tile))
    np.testing.assert_array_equal(np.rint(first.distance * dense.scale).astype(np.int64),
                                  every[cells, first.tile])
    np.testing.assert_array_equal(kinds_result.tile, dense.candidate_of(first.tile))


def _request_of(tmp_path, image: np.ndarray, count: int, seed: int, **settings
                ) -> MatchRequest:
    """The match request of ``image`` over ``count`` smooth tiles, 8 px cells, ``settings``."""
    folder = smooth_folder(tmp_path / "tiles", count=count, seed=seed)
    target = tmp_path / "target.png"
    Image.fromarray(image).save(target)
    mosaic = make_mosaic(target, folder, cell_px=8, tile_px=16, cache_dir=tmp_path / "c")
    options = replace(mosaic.options, min_uses=0, assign="optimal", **settings)
    return MatchRequest(mosaic.grid, mosaic.library, options)


def _patterned_target(rows: int = 12, cols: int = 16, cell: int = 8) -> np.ndarray:
    """Four textures in bands of cells, each cell a colour apart from the next, a few odd.

    At full tint: four kinds of cell, none holding most of the grid, and a few alone.
    """
    rng = np.random.default_rng(11)
    textures = rng.integers(40, 200, (4, cell, cell, 3))
    image = np.empty((rows * cell, cols * cell, 3), np.int64)
    for row in range(rows):
        for col in range(cols):
            image[row * cell:(row + 1) * cell, col * cell:(col + 1) * cell] = (
                textures[(row // 3) % 4] + 3 * col - 20)
    image[:cell, :3 * cell] = rng.integers(0, 256, (cell, 3 * cell, 3))
    return image.astype(np.uint8)


@pytest.mark.parametrize("max_uses, spacing", [(1, 1), (2, 3)])
def test_warm_lists_of_kinds_change_no_optimum(tmp_path, monkeypatch, max_uses, spacing):
    # A full grid of kinds at full tint: the kinds' first lists hold each kind's tiles
    # of least estimated final cost, as many as it fills and more; the optimum (and its
    # proof) is the one without them and the cells' own.
    request = _request_of(tmp_path, _patterned_target(), 240, 8, max_uses=max_uses,
                          min_spacing=spacing, tint=1.0)
    kinds = cell_kinds(request.cell_vectors, full_tint=True)
    cap = _assign.tile_capacity(request.grid.rows, request.grid.cols, max_uses, spacing)
    assert kinds.worth_grouping(cap) and len(kinds.first) > 4
    assert kinds.size.max() < _capped.WARM_KINDS_LARGEST * len(kinds.kind)
    recorded = _recorded(monkeypatch, "warm_kind_pairs")
    warm_result = _capped.CappedMatcher().match(request).assignment
    (warm,) = recorded
    assert warm is not None
    kind, tile, distance = warm
    listed = np.bincount(kind, minlength=len(kinds.first))
    fills = -(-kinds.size // np.minimum(kinds.size, cap))
    assert (listed >= np.minimum(fills + 1, len(request.library))).all()
    search = _capped.LibrarySearch(request)
    np.testing.assert_array_equal(distance, search.pairs(kinds.first[kind], tile))
    monkeypatch.setattr(_capped, "WARM_CANDIDATES", 0)
    cold_result = _capped.CappedMatcher().match(request).assignment
    assert recorded[-1] is None
    _cells_only(monkeypatch)
    cells_result = _capped.CappedMatcher().match(request).assignment
    if spacing == 1:
        assert warm_result.certified and cold_result.certified and cells_result.certified
        assert warm_result.objective == cold_result.objective == cells_result.objective
    else:
        # The spacing rounds are a heuristic: the bound (the capped optimum without
        # spacing) is what the warm lists must not change.
        assert warm_result.lower_bound == cold_result.lower_bound
    _assign.verify_placement(warm_result.tile, request.grid.rows, request.grid.cols,
                             max_uses, spacing, 0, len(request.library))


def test_the_kinds_warm_auction_starts_coarse_where_kinds_are_few(tmp_path, monkeypatch):
    # Kinds at most half the cells (crowds at one point bid each other up): a coarse
    # first phase; else the usual phases. The optimum is the same.
    request = _request_of(tmp_path, _patterned_target(), 240, 8, max_uses=1, min_spacing=1,
                          tint=1.0)
    kinds = cell_kinds(request.cell_vectors, full_tint=True)
    assert len(kinds.first) <= _capped.COARSE_AUCTION_KINDS * len(kinds.kind)
    steps = []
    warm_prices = _capped.warm_prices

    def recorded(*args, **kwargs):
        steps.append(kwargs.get("steps"))
        return warm_prices(*args, **kwargs)

    monkeypatch.setattr(_capped, "warm_prices", recorded)
    coarse = _capped.CappedMatcher().match(request).assignment
    monkeypatch.setattr(_capped, "COARSE_AUCTION_KINDS", 0.0)
    fine = _capped.CappedMatcher().match(request).assignment
    assert steps == [_warm.KINDS_EPSILON_STEPS, None]
    assert coarse.certified and fine.certified
    assert coarse.objective == fine.objective


def test_a_kind_holding_most_of_the_grid_takes_no_warm_lists(tmp_path, monkeypatch):
    # White paper: its crowd takes its nearest tiles, and an auction of it only costs time.
    request = _request_of(tmp_path, _flat_target(), 240, 8, max_uses=1, min_spacing=1,
                          tint=1.0)
    warm = _recorded(monkeypatch, "warm_kind_pairs")
    kinds = _recorded(monkeypatch, "assign_by_kinds")
    result = _capped.CappedMatcher().match(request).assignment
    assert warm == [] and len(kinds) == 1 and result.certified


@pytest.mark.parametrize("cap, spacing", [(2, 3), (4, 3), (3, 5)])
def test_spaced_kinds_keep_each_kinds_copies_apart(cap, spacing):
    # Two kinds over a 12 x 20 grid (a white page with a band), few tiles: every tile
    # in several cells, and within a kind never two copies closer than the spacing.
    rows, cols = 12, 20
    count = rows * cols
    rng = np.random.default_rng(cap)
    cells = np.zeros((count, 3), np.uint8)
    cells[3 * cols:5 * cols] = 9
    tiles = -(-count // cap) + 5
    tile_features = rng.integers(0, 12, (tiles, 3))
    full = ((cells[:, None, :].astype(np.int64) - tile_features[None]) ** 2).sum(-1)
    kinds = cell_kinds(cells)
    solved = _groups.spaced_by_kinds(DenseSearch(full), kinds, cap, cols, spacing, width=6)
    assert solved is not None
    lists, list_distances, placed, rounds, bound = solved
    assert rounds >= 1
    # The capped optimum without spacing, the bound; the rounds start from one whose kinds
    # hold no more copies of a tile than their cells can keep apart, each cell listing its
    # own tile, best first.
    assert bound == dense_optimum(full, cap) <= int(full[np.arange(count), placed].sum())
    room = _groups.block_room(kinds.kind, len(kinds.first), cols, spacing)
    kind_tile, copies = np.unique(np.c_[kinds.kind, placed], axis=0, return_counts=True)
    assert (copies <= room[kind_tile[:, 0]]).all()
    assert (lists == placed[:, None]).any(axis=1).all()
    valid = lists >= 0
    np.testing.assert_array_equal(list_distances[valid],
                                  full[np.nonzero(valid)[0], lists[valid]])
    assert (np.diff(np.where(valid, list_distances, np.iinfo(np.int64).max), axis=1)
            >= 0).all()
    for kind in range(len(kinds.first)):
        # A tile's copies share a class of cells spaced apart; only those of tiles that
        # no class had room for are left for the spacing rounds (a class of 7 cells holds
        # 3 pairs), and few of those are close.
        mine = np.flatnonzero(kinds.kind == kind)
        assert _close_pairs(placed, mine, cols, spacing) <= 2, kind
    # The spacing rounds from there: a placement within every limit.
    result = _assign.assign_tiles(lists, list_distances, rows, cols, max_uses=cap,
                                  min_spacing=spacing, search=DenseSearch(full), proven=placed)
    check_placement(result.tile, full, rows, cols, cap, spacing)
    assert result.lower_bound == int(full[np.arange(count), placed].sum())


def _close_pairs(tile, cells, cols, spacing):
    """Pairs of ``cells`` holding the same tile closer than ``spacing``."""
    close = 0
    for shared in np.unique(tile[cells]):
        where = cells[tile[cells] == shared]
        row, col = np.divmod(where, cols)
        near = np.maximum(np.abs(row[:, None] - row), np.abs(col[:, None] - col)) < spacing
        close += (near.sum() - len(where)) // 2
    return close


def test_a_flat_target_under_spacing_goes_through_kinds(tmp_path, monkeypatch):
    request = _request_of(tmp_path, _flat_target(), 150, 7, max_uses=2, min_spacing=3,
                          tint=0.3)
    spaced = _recorded(monkeypatch, "spaced_by_kinds")
    by_kinds = _capped.CappedMatcher().match(request).assignment
    assert len(spaced) == 1 and spaced[0] is not None
    assert by_kinds.pricing_rounds == spaced[0][3] >= 1  # the kinds' rounds, reported
    _cells_only(monkeypatch)
    by_cells = _capped.CappedMatcher().match(request).assignment
    grid = request.grid
    for assignment in (by_kinds, by_cells):
        _assign.verify_placement(assignment.tile, grid.rows, grid.cols, 2, 3)
    # Both start from the same certified optimum under the cap alone.
    assert by_kinds.lower_bound == by_cells.lower_bound
    assert by_kinds.objective >= by_kinds.lower_bound


@pytest.mark.parametrize(("cap", "spacing", "minimum"), [(2, 3, 1), (4, 3, 1), (3, 5, 2)])
def test_spaced_kinds_keep_a_minimum_of_uses(cap, spacing, minimum):
    rows, cols = 12, 20
    count = rows * cols
    rng = np.random.default_rng(cap + minimum)
    cells = np.zeros((count, 3), np.uint8)
    cells[3 * cols:5 * cols] = 9
    cells[9 * cols:10 * cols] = 4
    tiles = count // (minimum + 1)
    tile_features = rng.integers(0, 12, (tiles, 3))
    full = ((cells[:, None, :].astype(np.int64) - tile_features[None]) ** 2).sum(-1)
    # Lists as wide as the matcher's: 6 were too few for the tightest (3 uses, 2 of them
    # required, 5 apart), where the rounds found no placement.
    solved = _groups.spaced_by_kinds(DenseSearch(full), cell_kinds(cells), cap, cols, spacing,
                                     width=_capped.AUCTION_LISTS, minimum=minimum)
    assert solved is not None
    lists, list_distances, placed, _, bound = solved
    optimum = dense_with_minimum(full, minimum, cap)
    assert bound == optimum <= int(full[np.arange(count), placed].sum())
    assert np.bincount(placed, minlength=tiles).min() >= minimum
    result = _assign.assign_tiles(lists, list_distances, rows, cols, max_uses=cap,
                                  min_spacing=spacing, search=DenseSearch(full), proven=placed,
                                  min_uses=minimum, tile_count=tiles)
    check_placement(result.tile, full, rows, cols, cap, spacing)
    assert np.bincount(result.tile, minlength=tiles).min() >= minimum
    assert optimum <= result.lower_bound <= result.objective


@pytest.mark.parametrize("spacing", [1, 3])
def test_a_flat_target_with_every_photo_used_goes_through_kinds(tmp_path, monkeypatch,
                                                                spacing):
    # Fewer photos than cells, each used at least once (the default preset's way with a
    # small library): the kinds keep the minimum, with and without spacing.
    folder = smooth_folder(tmp_path / "tiles", count=90, seed=3)
    target = tmp_path / "flat.png"
    Image.fromarray(_flat_target()).save(target)
    mosaic = make_mosaic(target, folder, cell_px=8, tile_px=16, cache_dir=tmp_path / "c")
    tile_count = len(mosaic.library)
    options = replace(mosaic.options, max_uses=3, min_spacing=spacing, min_uses=1, tint=0.4,
                      assign="optimal")
    request = MatchRequest(mosaic.grid, mosaic.library, options)
    grouped = _recorded(monkeypatch, "assign_by_kinds", "spaced_by_kinds")
    by_kinds = _capped.CappedMatcher().match(request).assignment
    assert len(grouped) == 1 and grouped[0] is not None
    _cells_only(monkeypatch)
    by_cells = _capped.CappedMatcher().match(request).assignment
    assert len(grouped) == 1
    grid = request.grid
    for assignment in (by_kinds, by_cells):
        _assign.verify_placement(assignment.tile, grid.rows, grid.cols, 3, spacing, 1,
                                 tile_count)
    assert by_kinds.certified and by_cells.certified
    assert by_kinds.lower_bound == by_cells.lower_bound
    if spacing == 1:
        assert by_kinds.objective == by_cells.objective == by_kinds.lower_bound


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("spacing", [2, 3])
def test_block_room_bounds_the_copies_a_kind_holds_apart(seed, spacing):
    # At least the most cells of each kind pairwise `spacing` apart (by brute force), at
    # most its cells; a whole rectangle holds exactly its blocks' worth.
    import itertools

    rows, cols = 5, 6
    kind = np.random.default_rng(seed).integers(0, 3, rows * cols)
    kind = np.unique(kind, return_inverse=True)[1].ravel()
    kinds = int(kind.max()) + 1
    room = _groups.block_room(kind, kinds, cols, spacing)
    for number in range(kinds):
        mine = np.flatnonzero(kind == number)
        apart = 0
        for size in range(1, len(mine) + 1):
            if any(_close_pairs(np.zeros(rows * cols, np.int64), np.array(chosen), cols,
                                spacing) == 0
                   for chosen in itertools.combinations(mine, size)):
                apart = size
            else:
                break
        assert apart <= room[number] <= len(mine)
    whole = _groups.block_room(np.zeros(7 * 11, np.int64), 1, 11, spacing)
    assert whole[0] == -(-7 // spacing) * -(-11 // spacing)


def test_spaced_kinds_whose_rounds_leave_a_tile_short_go_the_cells_way(tmp_path, monkeypatch):
    # Where the spacing rounds from the kinds' optimum cannot keep the minimum (ShortLists),
    # the cells' way solves the grid, within every limit.
    folder = smooth_folder(tmp_path / "tiles", count=90, seed=3)
    target = tmp_path / "flat.png"
    Image.fromarray(_flat_target()).save(target)
    mosaic = make_mosaic(target, folder, cell_px=8, tile_px=16, cache_dir=tmp_path / "c")
    tile_count = len(mosaic.library)
    options = replace(mosaic.options, max_uses=3, min_spacing=3, min_uses=1, tint=0.4,
                      assign="optimal")
    request = MatchRequest(mosaic.grid, mosaic.library, options)
    spaced = _recorded(monkeypatch, "spaced_by_kinds")
    assign_tiles = _capped.assign_tiles
    raised = []

    def short_after_kinds(*args, **kwargs):
        if kwargs.get("proven") is not None and spaced and not raised:
            raised.append(True)
            raise _assign.ShortLists(np.arange(1))
        return assign_tiles(*args, **kwargs)

    monkeypatch.setattr(_capped, "assign_tiles", short_after_kinds)
    result = _capped.CappedMatcher().match(request).assignment
    assert len(spaced) == 1 and spaced[0] is not None and raised
    grid = request.grid
    _assign.verify_placement(result.tile, grid.rows, grid.cols, 3, 3, 1, tile_count)


def _photo_with_a_crowd(rows: int = 16, cols: int = 20, cell: int = 8,
                        white_cols: int = 2) -> np.ndarray:
    """Noise in every cell (each alone), and a white strip of ``white_cols`` columns."""
    rng = np.random.default_rng(21)
    image = rng.integers(0, 256, (rows * cell, cols * cell, 3)).astype(np.uint8)
    image[:, :white_cols * cell] = 255
    return image


@pytest.mark.parametrize("tint", [0.0, 1.0])
def test_a_photo_with_a_crowd_among_lone_cells_goes_by_kinds(tmp_path, monkeypatch, tint):
    # A tenth of the cells white, every other cell alone (a caption bar, a clipped sky):
    # by kinds, at the optimum of the cells' rounds, where no spacing follows.
    request = _request_of(tmp_path, _photo_with_a_crowd(), 420, 8, max_uses=1, tint=tint)
    kinds = cell_kinds(request.cell_vectors, _capped.full_tint(tint))
    assert len(kinds.first) > 0.85 * len(kinds.kind)
    solved = _recorded(monkeypatch, "assign_by_kinds")
    by_kinds = _capped.CappedMatcher().match(request).assignment
    assert len(solved) == 1 and solved[0] is not None
    _cells_only(monkeypatch)
    by_cells = _capped.CappedMatcher().match(request).assignment
    assert len(solved) == 1
    for assignment in (by_kinds, by_cells):
        assert assignment.certified and assignment.gap == 0
        assert len(assignment.tile) == len(request.grid) == 320
        assert np.bincount(assignment.tile).max() == 1
    assert by_kinds.objective == pytest.approx(by_cells.objective, rel=1e-12)
    monkeypatch.undo()
    # Spacing rounds after the kinds: the cells.
    spaced = MatchRequest(request.grid, request.library,
                          replace(request.options, max_uses=2, min_spacing=3))
    solved = _recorded(monkeypatch, "assign_by_kinds", "spaced_by_kinds")
    _capped.CappedMatcher().match(spaced)
    assert solved == []


def test_lists_take_each_pair_once_whatever_the_batches_repeat():
    # Pairs are looked up among the listed ones by a sorted copy of their keys, kept
    # beside them: checked against a set of every pair listed so far.
    rng = np.random.default_rng(9)
    kinds, tiles = 30, 70
    lists = _groups._Lists(kinds, tiles)
    seen: dict[tuple[int, int], int] = {}
    for size in [0, 1, 50, 400, 3, 900, 0, 200]:
        kind = rng.integers(0, kinds, size)
        tile = rng.integers(-1, tiles, size)  # -1: a search's empty slot
        distance = rng.integers(0, 1000, size)
        before = len(seen)
        for k, t, d in zip(kind.tolist(), tile.tolist(), distance.tolist(), strict=True):
            if t >= 0 and (k, t) not in seen:
                seen[(k, t)] = d
        new = lists.add(kind, tile, distance)
        assert new == len(seen) - before
        assert len(lists.kind) == len(seen)
        assert {(k, t): d for k, t, d in zip(lists.kind.tolist(), lists.tile.tolist(),
                                              lists.distance.tolist(), strict=True)} == seen
        assert np.array_equal(lists._sorted_keys, np.sort(lists.keys()))


@pytest.mark.parametrize("compiled", [True, False])
def test_least_ranked_pairs_are_each_kind_s_first_by_value_then_position(compiled,
                                                                         monkeypatch):
    """The near solves' pairs of least reduced cost per kind, as a sort by kind and value."""
    from mosaicist.match import _kernels

    monkeypatch.setattr(_kernels, "USE_NUMBA", compiled)
    rng = np.random.default_rng(3)
    for _ in range(20):
        pairs, count, ranks = int(rng.integers(0, 3000)), int(rng.integers(1, 200)), \
            int(rng.integers(1, 20))
        kind = rng.integers(0, count, pairs)
        # Few values: ties everywhere, broken by position.
        value = rng.integers(-4, 4, pairs) * int(rng.choice([1, 10**12]))
        order = np.lexsort((np.arange(pairs), value, kind))
        rank = np.empty(pairs, np.int64)
        rank[order] = np.arange(pairs) - np.searchsorted(kind[order], kind[order])
        assert np.array_equal(_groups._least_ranked(kind, value, count, ranks), rank < ranks)


def test_a_minimum_over_the_cap_is_refused_not_lowered():
    """``assign_by_kinds`` lowered a minimum of 2 to a cap of 1 and said it was certified."""
    kinds = cell_kinds(np.zeros((4, 2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="minimum of 2 uses is over the cap of 1"):
        assign_by_kinds(DenseSearch(np.arange(16, dtype=np.int64).reshape(4, 4)), kinds, 1,
                        False, minimum=2)
