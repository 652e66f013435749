"""The live wall's placement: costs, the exact assignment, the forecast's prices, the rule."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from mosaicist.colour import to_space
from mosaicist.live import _placer
from mosaicist.live._placer import (
    Placer,
    WallCosts,
    forecast_prices,
    forecast_sample,
    optimal_cells,
    picture_vectors,
    tint_shift,
)
from mosaicist.render import dress_tiles


def pictures(count: int, seed: int, side: int = 6) -> np.ndarray:
    """Random pictures with a colour each and some texture."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (count, 1, 1, 3))
    noise = rng.normal(0, 25, (count, side, side, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("metric", ["seed", "lab"])
@pytest.mark.parametrize("tint", [0.0, 0.6, 1.0])
def test_cost_is_the_distance_after_the_tint(metric, tint):
    cells, photos = pictures(5, 1), pictures(7, 2)
    costs = WallCosts(picture_vectors(cells, metric), tint).costs(picture_vectors(photos, metric))
    cell_vectors, photo_vectors = picture_vectors(cells, metric), picture_vectors(photos, metric)
    for p in range(len(photos)):
        for c in range(len(cells)):
            # The photo in the metric's 8-bit units, its mean moved a fraction tint to the cell's.
            photo = photo_vectors.centred[p].astype(np.float64) + np.repeat(
                photo_vectors.mean[p][None], photo_vectors.pixels, 0).ravel()
            shifted = photo + np.tile(tint * (cell_vectors.mean[c] - photo_vectors.mean[p]),
                                      photo_vectors.pixels)
            cell = cell_vectors.centred[c].astype(np.float64) + np.tile(cell_vectors.mean[c],
                                                                         cell_vectors.pixels)
            expected = ((cell - shifted) ** 2).sum()
            assert abs(costs[p, c] - expected) <= 1e-4 * expected + 2


def test_tint_shift_moves_the_drawn_mean_to_the_cell():
    cells, photos = pictures(1, 3), pictures(1, 4)
    cell_vectors, photo_vectors = picture_vectors(cells), picture_vectors(photos)
    shift = tint_shift(photo_vectors.mean[0], cell_vectors.mean[0], 1.0, "seed")
    drawn = dress_tiles(photos, tint=shift[None], metric="seed")
    # Clipping at 0 and 255 aside, a full tint gives the photo the cell's mean colour.
    assert np.allclose(to_space(drawn, "seed").mean(axis=(0, 1, 2)),
                       cells.reshape(-1, 3).mean(axis=0), atol=3)


@pytest.mark.parametrize("dense", [True, False], ids=["dense", "sparse"])
@pytest.mark.parametrize("shape", [(1, 1), (6, 6), (20, 35), (40, 40)])
def test_optimal_cells_is_the_exact_assignment(shape, dense, monkeypatch):
    if not dense:  # the sparse lists of mosaicist.match, as for the largest walls
        monkeypatch.setattr(_placer, "DENSE_PAIRS", 0)
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    costs = rng.integers(0, 10_000, shape).astype(np.int64)
    # Ties and a contested column: many photos want the same cell.
    costs[:, 0] = 0
    cells = optimal_cells(costs)
    assert len(set(cells.tolist())) == shape[0]
    rows, cols = linear_sum_assignment(costs)
    assert costs[np.arange(shape[0]), cells].sum() == costs[rows, cols].sum()


def test_optimal_cells_refuses_more_photos_than_cells():
    with pytest.raises(ValueError, match="distinct"):
        optimal_cells(np.zeros((3, 2), np.int64))


def test_forecast_sample_sizes():
    rng = np.random.default_rng(0)
    assert forecast_sample(10, 100, 100, rng).sum() == 40  # at most 4 repeats each
    assert forecast_sample(10, 25, 100, rng).sum() == 25  # no more than the free cells
    assert forecast_sample(10, 100, 7, rng).sum() == 7  # no more than still expected
    assert forecast_sample(10, 100, -3, rng).sum() == 0
    repeats = forecast_sample(300, 50, 500, rng)
    assert repeats.sum() == 50 and repeats.max() == 1


def test_forecast_prices_prove_the_forecast_optimal():
    rng = np.random.default_rng(7)
    types, free = 12, 40
    costs = rng.integers(0, 1000, (types, free)).astype(np.int64)
    repeats = np.full(types, 3)
    prices = forecast_prices(costs, repeats)
    assert prices.shape == (free,) and (prices >= 0).all()
    # With the prices, each sample photo's cheapest cells are those the optimal
    # assignment of the replicated sample gives it (complementary slackness).
    expanded = np.repeat(costs, repeats, axis=0)
    rows, cols = linear_sum_assignment(expanded)
    priced = expanded + prices[None, :]
    assert (priced[rows, cols] <= priced.min(axis=1)[rows]).all()
    # A cell nobody takes has no price.
    untaken = np.setdiff1d(np.arange(free), cols)
    assert (prices[untaken] == 0).all()


def wall(cells: int = 36, seed: int = 5, tint: float = 0.5) -> WallCosts:
    return WallCosts(picture_vectors(pictures(cells, seed)), tint)


def test_placer_places_in_the_cheapest_free_cell_and_fills_up():
    costs = wall(9)
    placer = Placer(costs, final=True)
    photos = picture_vectors(pictures(12, 6))
    for index in range(12):
        number = placer.add(photos.take(np.array([index])))
        free = placer.free
        cell = placer.choose(number)
        if index >= 9:
            assert cell == -1  # full: the photo waits
            continue
        row = costs.costs(photos.take(np.array([index])), free)[0]
        assert cell == free[int(np.argmin(row + placer.prices[free]))]
        placer.put(number, cell)
    assert not len(placer.free)


def test_final_placer_never_moves_and_moving_placer_reaches_the_optimum():
    costs = wall(25, seed=9)
    photos = picture_vectors(pictures(20, 10))
    placers = {final: Placer(costs, final=final) for final in (True, False)}
    for placer in placers.values():
        for index in range(20):
            number = placer.add(photos.take(np.array([index])))
            placer.update_prices()
            placer.put(number, placer.choose(number))
    assert placers[True].optimum() == {}
    moving = placers[False]
    moving.apply(moving.optimum())
    matrix = costs.costs(photos)
    rows, cols = linear_sum_assignment(matrix)
    # The optimum, up to the float32 rounding of two computations of the costs.
    assert abs(moving.objective() - matrix[rows, cols].sum()) <= 1e-6 * matrix.sum()
    assert moving.optimum() == {}  # optimal: nothing more to move


def brute_cost(photo: np.ndarray, cell: np.ndarray, tint: float) -> float:
    """The documented cost from the pixels, in float64: the photo's mean moved ``tint`` of
    the way to the cell's, then the summed squared difference (metric ``seed``: sRGB)."""
    photo, cell = photo.astype(np.float64), cell.astype(np.float64)
    shifted = photo + tint * (cell.mean(axis=(0, 1)) - photo.mean(axis=(0, 1)))
    return float(((cell - shifted) ** 2).sum())


@pytest.mark.parametrize("seed", range(6))
def test_each_photo_goes_to_the_cell_the_rule_names_by_brute_force(seed):
    # Oracle: the free cell of least cost plus price, ties to the lowest cell, recomputed
    # from the pixels for every photo of a small wall, with prices installed as the
    # planner does, and with two pairs of identical cells (ties by construction).
    rng = np.random.default_rng(seed)
    cells = pictures(12, 100 + seed, side=4)
    cells[7], cells[10] = cells[2], cells[5]
    tint = float(rng.choice([0.0, 0.5, 1.0]))
    costs = WallCosts(picture_vectors(cells), tint)
    placer = Placer(costs, final=True, seed=seed)
    photos = pictures(15, 200 + seed, side=4)
    photos[3] = cells[2]  # fits cells 2 and 7 exactly: the lowest is taken
    for index, photo in enumerate(photos):
        number = placer.add(picture_vectors(photo[None]))
        if index % 4 == 3:
            placer.update_prices()
        free = placer.free.tolist()
        chosen = placer.choose(number)
        if not free:
            assert chosen == -1
            continue
        totals = [brute_cost(photo, cells[cell], tint) + placer.prices[cell] for cell in free]
        best = min(totals)
        # The costs are whole units rounded from float32 products: a near tie may go
        # either way, but never to a cell more than the rounding away from the best.
        near = [cell for cell, total in zip(free, totals, strict=True)
                if total <= best + 1e-4 * best + 2]
        assert chosen in near, (index, chosen, near)
        if len(near) == 1 or index == 3:
            assert chosen == near[0]
        placer.put(number, chosen)
    assert placer.cell_photo.tolist().count(-1) == 0


def test_a_wall_of_one_cell():
    costs = wall(1)
    for final in (True, False):
        placer = Placer(costs, final=final)
        photos = picture_vectors(pictures(3, 11))
        numbers = [placer.add(photos.take(np.array([index]))) for index in range(3)]
        placer.update_prices()
        assert placer.choose(numbers[0]) == 0
        placer.put(numbers[0], 0)
        assert placer.choose(numbers[1]) == -1 and placer.optimum() == {}
        placer.take_off(numbers[0])
        assert placer.choose(numbers[2]) == 0


def test_the_forecast_prices_of_one_free_cell_and_of_identical_photos():
    # One free cell and many identical photos: the forecast's assignment is trivially
    # optimal; its prices are non-negative and the photo's choice is that cell.
    costs = wall(1)
    placer = Placer(costs)
    photo = picture_vectors(pictures(1, 12))
    for _ in range(_placer.FORECAST_MINIMUM + 1):
        placer.add(photo)
    placer.update_prices()
    assert (placer.prices >= 0).all() and placer.choose(0) == 0
    prices = forecast_prices(np.full((5, 3), 7, np.int64), np.full(5, 1))
    assert prices.shape == (3,) and (prices >= 0).all()


@pytest.mark.parametrize("seed", range(4))
def test_reoptimisation_is_the_best_arrangement_by_brute_force(seed):
    # Oracle: every way of putting the movable photos into their cells and the free ones;
    # a photo that may not move (a completion's fill) keeps its cell.
    from itertools import permutations

    rng = np.random.default_rng(seed)
    cells = pictures(6, 300 + seed, side=4)
    costs = WallCosts(picture_vectors(cells), 0.5)
    placer = Placer(costs)
    photos = picture_vectors(pictures(4, 400 + seed, side=4))
    order = rng.permutation(6)
    for index in range(4):
        number = placer.add(photos.take(np.array([index])), movable=index != 2,
                            sample=index != 2)
        placer.put(number, int(order[index]))
    fixed = int(order[2])
    movable = [0, 1, 3]
    open_cells = [cell for cell in range(6) if cell != fixed]
    matrix = costs.costs(photos)
    best = min(sum(matrix[photo, cell] for photo, cell in zip(movable, chosen, strict=True))
               for chosen in permutations(open_cells, len(movable)))
    placer.apply(placer.optimum())
    assert placer.cell_of(2) == fixed
    assert sum(matrix[photo, placer.cell_of(photo)] for photo in movable) == best
    assert placer.optimum() == {}
