"""The live wall's placer against brute-force references: its documented guarantees, hostile cases.

Each property of :mod:`mosaicist.live._placer`'s docstring is checked on small
seeded random walls (1 x 1, 1 x N, R x C), with identical photos and cells,
photos that arrive twice, photos that arrive while prices are being computed,
and a full wall, against references computed here in NumPy from the pixels
and by ``scipy.optimize.linear_sum_assignment``.
"""

from __future__ import annotations

from itertools import permutations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from mosaicist.live import _placer
from mosaicist.live._placer import (
    FORECAST_EXTRA,
    FORECAST_MINIMUM,
    Placer,
    WallCosts,
    forecast_prices,
    picture_vectors,
)

SIDE = 4


def pictures(count: int, seed: int) -> np.ndarray:
    """``count`` small textured pictures of random colours."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (count, 1, 1, 3))
    noise = rng.normal(0, 30, (count, SIDE, SIDE, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def brute_costs(photos: np.ndarray, cells: np.ndarray, tint: float) -> np.ndarray:
    """``(P, C)`` float64 documented cost from the pixels (metric ``seed``: sRGB levels).

    The photo's mean colour moved ``tint`` of the way to the cell's, then the summed
    squared difference of every pixel and channel.
    """
    photos = photos.astype(np.float64).reshape(len(photos), -1, 3)
    cells = cells.astype(np.float64).reshape(len(cells), -1, 3)
    photo_mean, cell_mean = photos.mean(axis=1), cells.mean(axis=1)
    shift = tint * (cell_mean[None, :, :] - photo_mean[:, None, :])  # (P, C, 3)
    drawn = photos[:, None, :, :] + shift[:, :, None, :]
    return ((cells[None, :, :, :] - drawn) ** 2).sum(axis=(2, 3))


def near_best(totals: np.ndarray) -> np.ndarray:
    """Positions within the float32 rounding of the least total (ties by construction too)."""
    best = totals.min()
    return np.flatnonzero(totals <= best + 1e-4 * abs(best) + 2)


def check_consistent(placer: Placer) -> None:
    """Every placed photo in one cell, every cell holding at most one photo, both ways."""
    cell_photo = placer.cell_photo
    held = cell_photo[cell_photo >= 0]
    assert len(set(held.tolist())) == len(held), "a photo in two cells"
    for cell, number in enumerate(cell_photo.tolist()):
        if number >= 0:
            assert placer.cell_of(number) == cell
    for number in range(placer.count):
        cell = placer.cell_of(number)
        if cell >= 0:
            assert cell_photo[cell] == number
    assert (placer.prices >= 0).all()


WALLS = [(1, 1), (1, 2), (1, 7), (7, 1), (3, 4), (5, 5)]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("shape", WALLS, ids=[f"{r}x{c}" for r, c in WALLS])
def test_arrivals_follow_the_rule_and_never_share_a_cell(shape, seed):
    # Photos arrive (some twice, some identical to a cell or to each other), prices are
    # recomputed now and then, and the wall fills past full: each goes to the free cell of
    # least cost plus price by the brute-force cost, ties to the lowest cell, or waits.
    rows, cols = shape
    rng = np.random.default_rng(seed * 31 + rows * 7 + cols)
    count = rows * cols
    cells = pictures(count, 1000 + seed + count)
    if count >= 4:
        cells[count - 1] = cells[0]  # two identical cells: a tie between them
    tint = float(rng.choice([0.0, 0.5, 1.0]))
    placer = Placer(WallCosts(picture_vectors(cells), tint), final=True, seed=seed)
    photos = pictures(count + 12, 2000 + seed)
    photos[3] = photos[1]  # the same photo twice
    photos[5] = cells[0]  # fits cells 0 and (when there) the last exactly
    costs = brute_costs(photos, cells, tint)
    waiting = 0
    for index, photo in enumerate(photos):
        number = placer.add(picture_vectors(photo[None]))
        assert number == index
        if index % 3 == 2:
            placer.update_prices()
        free = placer.free
        chosen = placer.choose(number)
        if not len(free):
            assert chosen == -1
            waiting += 1
            continue
        assert chosen in free.tolist()
        totals = costs[index, free] + placer.prices[free]
        near = free[near_best(totals)]
        assert chosen in near.tolist(), (index, chosen, near)
        if len(near) == 1 or (index == 5 and not placer.prices[free].any()):
            assert chosen == near[0]  # ties go to the lowest cell
        placer.put(number, chosen)
        check_consistent(placer)
    assert waiting == 12 and not len(placer.free)
    assert sorted(placer.cell_photo.tolist()) == list(range(count))
    assert placer.optimum() == {}  # final: nothing ever moves


def test_a_photo_is_never_put_twice_nor_into_a_taken_cell():
    placer = Placer(WallCosts(picture_vectors(pictures(3, 1)), 0.5))
    vectors = picture_vectors(pictures(1, 2))
    first, again = placer.add(vectors), placer.add(vectors)  # the same photo twice: two numbers
    assert (first, again) == (0, 1)
    placer.put(first, placer.choose(first))
    cell = placer.cell_of(first)
    with pytest.raises(ValueError, match="already"):
        placer.put(first, (cell + 1) % 3)
    with pytest.raises(ValueError, match="already"):
        placer.put(again, cell)
    # The twin goes elsewhere: the same picture does not make it the same photo.
    assert placer.choose(again) not in (-1, cell)
    check_consistent(placer)


def test_identical_photos_on_identical_cells_fill_from_the_lowest_cell():
    cell = pictures(1, 3)
    cells = np.repeat(cell, 6, axis=0)
    placer = Placer(WallCosts(picture_vectors(cells), 0.5))
    photo = picture_vectors(pictures(1, 4))
    placed = []
    for _ in range(8):
        number = placer.add(photo)
        chosen = placer.choose(number)
        placed.append(chosen)
        if chosen >= 0:
            placer.put(number, chosen)
    assert placed == [0, 1, 2, 3, 4, 5, -1, -1]


@pytest.mark.parametrize("seed", range(4))
def test_forecast_prices_are_an_optimal_dual_by_brute_force(seed):
    # The prices make the forecast's assignment optimal: with u_i the least cost plus
    # price of chooser i over every free cell, sum(u) - sum(prices) (a lower bound on
    # any assignment, for non-negative prices) equals the optimum by linear_sum_assignment.
    # Also with more free cells than the forecast lists (the lists' outside column).
    rng = np.random.default_rng(seed)
    types = int(rng.integers(1, 25))
    free = int(rng.integers(1, 60)) if seed % 2 else FORECAST_EXTRA + 140
    costs = rng.integers(0, 2000, (types, free)).astype(np.int64)
    if types > 2:
        costs[1] = costs[0]  # identical photos in the sample
    repeats = rng.integers(0, 5, types)
    repeats[0] = max(repeats[0], 1)
    while repeats.sum() > free:
        repeats[int(np.argmax(repeats))] -= 1
    prices = forecast_prices(costs, repeats)
    assert prices.shape == (free,) and prices.dtype == np.int64 and (prices >= 0).all()
    choosers = np.repeat(costs, repeats, axis=0)
    rows, cols = linear_sum_assignment(choosers)
    optimum = int(choosers[rows, cols].sum())
    dual = int((choosers + prices[None, :]).min(axis=1).sum() - prices.sum())
    assert dual == optimum
    # Complementary slackness: a cell no chooser takes in some optimum has no price... in
    # every optimum, a priced cell is taken.
    assert set(np.flatnonzero(prices).tolist()) <= set(cols.tolist())


def test_prices_computed_while_photos_arrive_never_place_two_in_one_cell():
    # Photos arrive faster than prices are computed: the planner's input is taken, more
    # photos are placed and one is taken off, then the prices land. Cells filled since keep
    # no say; the freed cell has no price; each choice is still a free cell by the rule.
    count = 16
    cells = pictures(count, 7)
    tint = 0.5
    placer = Placer(WallCosts(picture_vectors(cells), tint), seed=3)
    photos = pictures(30, 8)
    costs = brute_costs(photos, cells, tint)
    for index in range(FORECAST_MINIMUM):
        number = placer.add(picture_vectors(photos[index][None]))
        placer.put(number, placer.choose(number))
    assert placer.forecast_due()
    sample, free, repeats, stamp = placer.forecast_input()
    for index in range(FORECAST_MINIMUM, FORECAST_MINIMUM + 4):  # arrive meanwhile
        number = placer.add(picture_vectors(photos[index][None]))
        placer.put(number, placer.choose(number))
    freed = placer.take_off(2)
    placer.set_prices(free, placer.compute_prices(sample, free, repeats), stamp)
    assert placer.prices[freed] == 0
    check_consistent(placer)
    for index in range(FORECAST_MINIMUM + 4, 30):
        number = placer.add(picture_vectors(photos[index][None]))
        now = placer.free
        chosen = placer.choose(number)
        if not len(now):
            assert chosen == -1
            continue
        assert chosen in now[near_best(costs[index, now] + placer.prices[now])].tolist()
        placer.put(number, chosen)
        check_consistent(placer)
    assert not len(placer.free)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("dense", [True, False], ids=["dense", "sparse"])
def test_reoptimisation_of_a_row_wall_with_twins_by_brute_force(seed, dense, monkeypatch):
    # A 1 x 6 wall, two photos identical, one fill that may not move: the moves reach the
    # least total cost over every arrangement of the movable photos in the open cells.
    if not dense:
        monkeypatch.setattr(_placer, "DENSE_PAIRS", 0)
    rng = np.random.default_rng(seed)
    cells = pictures(6, 50 + seed)
    tint = 0.5
    costs_of = WallCosts(picture_vectors(cells), tint)
    placer = Placer(costs_of)
    photos = pictures(5, 60 + seed)
    photos[4] = photos[0]
    order = rng.permutation(6)
    for index in range(5):
        number = placer.add(picture_vectors(photos[index][None]), movable=index != 1,
                            sample=index != 1)
        placer.put(number, int(order[index]))
    fixed = int(order[1])
    movable = [0, 2, 3, 4]
    open_cells = [cell for cell in range(6) if cell != fixed]
    matrix = costs_of.costs(picture_vectors(photos))
    best = min(sum(matrix[photo, cell] for photo, cell in zip(movable, chosen, strict=True))
               for chosen in permutations(open_cells, len(movable)))
    placer.apply(placer.optimum())
    check_consistent(placer)
    assert placer.cell_of(1) == fixed
    assert sum(matrix[photo, placer.cell_of(photo)] for photo in movable) == best
    assert placer.optimum() == {}


def test_a_full_wall_waits_and_a_freed_cell_is_taken_again():
    for count in (1, 3):  # walls of 1 x 1 and 1 x 3
        placer = Placer(WallCosts(picture_vectors(pictures(count, 9)), 0.5))
        photos = picture_vectors(pictures(count + 2, 10))
        numbers = [placer.add(photos.take(np.array([index]))) for index in range(count + 2)]
        for number in numbers[:count]:
            placer.put(number, placer.choose(number))
        assert placer.choose(numbers[count]) == -1 and not placer.forecast_due()
        freed = placer.take_off(numbers[0])
        assert placer.free.tolist() == [freed]
        assert placer.choose(numbers[count]) == freed
        placer.put(numbers[count], freed)
        placer.forget(numbers[count])  # removed: its cell is free again, once
        assert placer.take_off(numbers[count]) == -1
        assert placer.free.tolist() == [freed]
        assert placer.choose(numbers[count + 1]) == freed
        check_consistent(placer)


def test_restoring_a_forecast_that_does_not_fit_changes_nothing():
    # Documented: a forecast that does not fit the wall raises ValueError and changes
    # nothing. A damaged stamp installed the prices and random generator before it was
    # refused, with a TypeError the event's loader did not say it caught.
    placer = Placer(WallCosts(picture_vectors(pictures(5, 11)), 0.5), seed=1)
    kept_stamp, kept_rng, kept_prices = placer.forecast_state()
    donor = Placer(WallCosts(picture_vectors(pictures(5, 11)), 0.5), seed=2)
    rng = dict(donor.rng.bit_generator.state)
    fits = np.arange(5, dtype=np.int64)
    for stamp, state, prices in (
            (("x", 3), rng, fits), ((None, 3), rng, fits), ((float("nan"), 2), rng, fits),
            ((1,), rng, fits), ((1, 2), rng, np.arange(4)),
            ((1, 2), rng, np.array([0, 3, -1, 0, 2])),  # prices are never negative
            ((1, 2), {"bit_generator": "MT19937"}, fits), ((1, 2), "not a state", fits)):
        with pytest.raises(ValueError):
            placer.restore_forecast(stamp, state, prices)
        stamp_now, rng_now, prices_now = placer.forecast_state()
        assert stamp_now == kept_stamp and rng_now == kept_rng
        np.testing.assert_array_equal(prices_now, kept_prices)
    placer.restore_forecast((4, 3), rng, fits)
    assert placer.forecast_state()[0] == (4, 3) and placer.forecast_state()[1] == rng
