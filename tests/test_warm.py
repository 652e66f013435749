"""Warm prices for full grids (:mod:`mosaicist.match._warm`), against dense optima."""

from __future__ import annotations

import numpy as np
import pytest

from mosaicist.match import _warm
from mosaicist.match._assign import _Edges, tile_prices

pytest.importorskip("numba")


def squared(cells: np.ndarray, tiles: np.ndarray) -> np.ndarray:
    return ((cells[:, None, :] - tiles[None, :, :]) ** 2).sum(axis=2)


def crowded(seed: int, count: int = 300, tile_count: int = 450, dimensions: int = 4):
    """Cells in a few tight crowds (a flat sky), tiles spread: the hard case for lists."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, dimensions)) * 3
    cells = centres[rng.integers(0, 5, count)] + rng.normal(scale=0.3, size=(count, dimensions))
    tiles = rng.normal(scale=2.5, size=(tile_count, dimensions))
    return cells, tiles


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("steps", [(0.01,), _warm.EPSILON_STEPS, _warm.KINDS_EPSILON_STEPS])
def test_auction_is_within_its_epsilon_of_the_optimum(seed, steps, monkeypatch):
    from scipy.optimize import linear_sum_assignment

    cells, objects = crowded(seed)
    price, assigned = _warm.auction(cells, objects, steps)
    assert len(np.unique(assigned)) == len(cells) and (assigned >= 0).all()
    cost = squared(cells, objects)
    rows, chosen = linear_sum_assignment(cost)
    optimum = cost[rows, chosen].sum()
    total = cost[np.arange(len(cells)), assigned].sum()
    epsilon = steps[-1] * np.median(cost.min(axis=1))
    # Epsilon-complementary slackness: each cell within epsilon of its best at the prices.
    values = cost + price
    assert (values[np.arange(len(cells)), assigned] <= values.min(axis=1) + epsilon + 1e-9).all()
    assert (price >= 0).all()
    if len(steps) == 1:
        # From zero prices, more objects than cells: within N epsilon of the optimum.
        assert optimum <= total <= optimum + len(cells) * epsilon + 1e-9
    else:
        # Scaled: objects priced in an earlier phase may end unheld; still close (less so
        # from a coarse first phase, which the kinds' crowds take for its speed).
        slack = 1.05 if steps == _warm.EPSILON_STEPS else 1.10
        assert optimum <= total <= slack * optimum


def test_auction_with_one_object_and_bad_sizes():
    price, assigned = _warm.auction(np.zeros((1, 2)), np.ones((1, 2)))
    assert assigned.tolist() == [0]
    with pytest.raises(ValueError, match="3 cells for 2 objects"):
        _warm.auction(np.zeros((3, 2)), np.ones((2, 2)))


def optimal_prices(cost: np.ndarray, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """The dense optimum under ``cap`` and the least prices that prove it."""
    from scipy.optimize import linear_sum_assignment

    count, tile_count = cost.shape
    rows, columns = linear_sum_assignment(np.repeat(cost, cap, axis=1))
    tile = columns[np.argsort(rows)] // cap
    scale = 1e6 / cost.max()
    distances = np.round(cost * scale).astype(np.int64)
    edges = _Edges(np.repeat(np.arange(count), tile_count), np.tile(np.arange(tile_count), count),
                   distances.ravel(), np.full(count, tile_count), distances.max(axis=1))
    priced = tile_prices(edges, np.arange(count) * tile_count + tile, cap)
    assert priced is not None
    price = np.zeros(tile_count)
    price[priced[0]] = priced[1] / scale
    return tile, price


@pytest.mark.parametrize(("seed", "cap", "share"), [(0, 1, 1.0), (1, 1, 0.5), (2, 2, 1.0)])
def test_lists_drawn_at_the_warm_prices_hold_the_optimal_tiles(seed, cap, share, monkeypatch):
    monkeypatch.setattr(_warm, "SMALLEST_SAMPLE", 1)
    cells, tiles = crowded(seed, count=300, tile_count=450 // cap)
    cost = squared(cells, tiles)
    tile, exact_price = optimal_prices(cost, cap)
    price = _warm.warm_prices(cells, tiles, cap, share=share)
    assert price.shape == (len(tiles),) and (price >= 0).all()
    k = 8
    warm_lists = _warm.least_priced(cells, tiles, price, k)
    nearest_lists = np.argsort(cost, axis=1)[:, :k]
    held = (warm_lists == tile[:, None]).any(axis=1).mean()
    near = (nearest_lists == tile[:, None]).any(axis=1).mean()
    # The crowds push most cells far past their nearest tiles; the warm lists follow.
    assert near < 0.6
    contested = exact_price > 0
    correlation = np.corrcoef(price[contested], exact_price[contested])[0, 1]
    if share == 1:
        assert held >= 0.95 and correlation > 0.99
    else:
        # A sample of half the cells and tiles: 83-91% here, against 18-23% for the nearest.
        assert held >= 0.7 and held >= 3 * near and correlation > 0.85
    # The same inputs give the same prices.
    np.testing.assert_array_equal(price, _warm.warm_prices(cells, tiles, cap, share=share))


def test_least_priced_is_the_dense_top_k():
    rng = np.random.default_rng(5)
    cells, tiles = rng.normal(size=(40, 3)), rng.normal(size=(70, 3))
    price = rng.random(70)
    listed = _warm.least_priced(cells, tiles, price, 5)
    values = squared(cells, tiles) + price
    expected = np.sort(values, axis=1)[:, :5]
    np.testing.assert_allclose(np.take_along_axis(values, listed, 1), expected, rtol=1e-9)


def test_least_priced_in_chunks_on_threads_is_the_top_k_within_float32(monkeypatch):
    """Products in float32: each list is the top k but for ties within float32's rounding."""
    monkeypatch.setattr(_warm, "CHUNK", 7)  # many chunks, a short last one, on every thread
    rng = np.random.default_rng(11)
    cells = rng.normal(size=(61, 40)) * 300 + 50
    tiles = rng.normal(size=(900, 40)) * 300 + 50
    price = rng.random(900) * 2e4
    k = 12
    listed = _warm.least_priced(cells, tiles, price, k)
    assert listed.shape == (61, k)
    assert all(len(set(row)) == k for row in listed.tolist())
    values = squared(cells, tiles) + price
    kth = np.sort(values, axis=1)[:, k - 1]
    # float32 products of these points: a few units in 1e7 of the squared lengths.
    slack = 1e-5 * (np.einsum("ij,ij->i", cells, cells)[:, None]
                    + np.einsum("ij,ij->i", tiles, tiles)[None, :]).max(axis=1)
    assert (np.take_along_axis(values, listed, 1) <= (kth + slack)[:, None]).all()
    exact_sets = np.argsort(values, axis=1)[:, :k]
    same = np.mean([set(a) == set(b)
                    for a, b in zip(listed.tolist(), exact_sets.tolist(), strict=True)])
    assert same > 0.9
    monkeypatch.setattr(_warm, "CHUNK", 1024)
    np.testing.assert_array_equal(listed, _warm.least_priced(cells, tiles, price, k))


def test_no_warm_prices_without_numba(monkeypatch):
    monkeypatch.setattr(_warm, "_compiled_loop", lambda loop: None)
    assert _warm.warm_prices(np.zeros((3, 2)), np.ones((5, 2)), 1) is None
    assert _warm.least_priced(np.zeros((3, 2)), np.ones((5, 2)), np.zeros(5), 2) is None


def test_the_sample_is_smaller_where_tiles_have_copies(monkeypatch):
    """Many alike copies slow the auction's bids: at most LARGEST_SHARED_SAMPLE cells."""
    monkeypatch.setattr(_warm, "LARGEST_SHARED_SAMPLE", 1000)
    sizes = []
    auction = _warm.auction

    def recorded(points, objects, *steps):
        sizes.append((len(points), len(objects)))
        return auction(points, objects, *steps)

    monkeypatch.setattr(_warm, "auction", recorded)
    cells, tiles = crowded(0, count=20_000, tile_count=30_000)
    _warm.warm_prices(cells, tiles, 2)
    _warm.warm_prices(cells, tiles, _warm.MANY_COPIES)
    # A tenth of the cells and of the tiles with few copies; the largest sample with
    # many, and as large a share of the tiles (a twentieth), each copied.
    assert sizes == [(2000, 2 * 3000), (1000, _warm.MANY_COPIES * 1500)]


@pytest.mark.parametrize("blocks", [(7, 50), (64, 2048)])
def test_every_tiles_price_is_the_c_transform_of_the_sampled_cells(blocks, monkeypatch):
    """p_j = max(0, max_i (u_i - c_ij)) over the sampled cells, for every tile of the library.

    The transform's blocks of tiles go to the worker threads (one BLAS thread each): many
    blocks, a short last one, against the dense formula.
    """
    monkeypatch.setattr(_warm, "CELLS_PER_BLOCK", blocks[0])
    monkeypatch.setattr(_warm, "OBJECTS_PER_BLOCK", blocks[1])
    auctioned = []
    auction = _warm.auction

    def kept(points, objects, steps=None):
        price, owner = auction(points, objects, steps)
        auctioned.append((points, objects, price, owner))
        return price, owner

    monkeypatch.setattr(_warm, "auction", kept)
    cells, tiles = crowded(4, count=300, tile_count=1234)
    prices = _warm.warm_prices(cells, tiles, 1, share=0.5)
    (points, objects, price, owner), = auctioned
    own = objects[owner]
    paid = ((points - own) ** 2).sum(axis=1) + price[owner]
    expected = np.maximum(0.0, (paid[:, None] - squared(points, tiles)).max(axis=0))
    assert prices.shape == (1234,)
    np.testing.assert_allclose(prices, expected, rtol=1e-9, atol=1e-9 * paid.max())
    assert (expected > 0).sum() > 100  # prices that the transform set, not zeros alone
