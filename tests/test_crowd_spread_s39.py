"""Crowds of alike cells in the certified pricing rounds (issue 10, session 39).

Two things that made the default preset slow on a large grid of flat cells
(3,242 flat cells among 31,212 of a photo, 50,000 photos: 39 rounds, 496 s):

* a crowd outside its lists found the same :data:`CROWD_SEARCH` tiles in every
  cell's search and gained that many a round; one of its cells is now searched
  for twice as many tiles as the crowd has cells, and each cell lists a slice;
* a solve near the last prices kept every edge within 5% of its cell's cost,
  which for such a crowd is every edge, so each round solved the whole graph;
  the margin now shrinks until the solve is worth making.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_assign import DenseSearch, dense_optimum, top_k

from mosaicist.match import _assign
from mosaicist.match._assign import assign_tiles


def _alike_cells(seed: int, count: int, tiles: int) -> np.ndarray:
    """Distances of ``count`` alike cells (one colour, a little noise) to random tiles."""
    rng = np.random.default_rng(seed)
    tile_features = rng.integers(0, 200, (tiles, 3))
    cell_features = np.full((count, 3), 100, np.int64) + rng.integers(-2, 3, (count, 3))
    return ((cell_features[:, None, :] - tile_features[None]) ** 2).sum(-1)


def test_a_crowd_outside_its_lists_lists_as_many_tiles_as_it_has_cells(monkeypatch):
    """Forty cells with the same distances, outside their lists: one search of 8 tiles
    each gave the crowd 8 tiles between them; the crowd's wider search gives 40 or more,
    each cell a slice of its own, at their exact distances."""
    monkeypatch.setattr(_assign, "PRICING_COLUMNS", 2)
    monkeypatch.setattr(_assign, "OUT_SEARCH", 8)
    monkeypatch.setattr(_assign, "CROWD_SEARCH", 8)
    count, tiles = 40, 300
    full = np.tile(np.arange(tiles, dtype=np.int64) * 10 + 5, (count, 1))
    out = np.ones(count, bool)
    price = np.zeros(tiles, np.int64)
    reach = np.full(count, 10**6)
    widest = _assign.CROWD_SPREAD_TILES

    def listed_tiles(spread: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        monkeypatch.setattr(_assign, "CROWD_SPREAD_TILES", spread)
        checks = _assign._PriceChecks(np.full(count, 0), tile_count=tiles)
        checks.crowded = [False, True]  # the last search outside found fewer tiles than cells
        rows, found, distances = [], [], []
        checks._search(DenseSearch(full), np.arange(count), None, None, price, reach, None,
                       out, np.zeros(count, np.int64), rows, found, distances)
        return np.concatenate(rows), np.concatenate(found), np.concatenate(distances)

    rows, found, _ = listed_tiles(0)
    assert np.unique(found).size == 8
    rows, found, distances = listed_tiles(widest)
    assert np.unique(found).size >= count
    assert np.array_equal(distances, full[rows, found])
    # Every cell lists tiles of its own choosing: no two cells the same.
    assert len({tuple(np.unique(found[rows == cell])) for cell in range(count)}) == count
    # Capped: no wider than CROWD_SPREAD_TILES.
    rows, found, _ = listed_tiles(16)
    assert found.max() < 16


@pytest.mark.parametrize("seed", range(2))
def test_a_crowd_outside_its_lists_is_certified_in_fewer_rounds(seed, monkeypatch):
    """Lists far from the cells' nearest tiles put a crowd outside: it drained 16 tiles a
    round; with one wider search of the crowd, the same optimum, certified, in fewer
    rounds."""
    monkeypatch.setattr(_assign, "OUT_SEARCH", 16)
    monkeypatch.setattr(_assign, "CROWD_SEARCH", 16)
    rows, cols, tiles = 16, 24, 3000
    full = _alike_cells(seed, rows * cols, tiles)
    ranked, ranked_distances = top_k(full, 302)
    candidates, distances = ranked[:, 300:], ranked_distances[:, 300:]
    optimum = dense_optimum(full, 1)
    rounds = []
    for spread in (0, _assign.CROWD_SPREAD_TILES):  # read before the first setattr
        monkeypatch.setattr(_assign, "CROWD_SPREAD_TILES", spread)
        result = assign_tiles(candidates, distances, rows, cols, max_uses=1,
                              search=DenseSearch(full), nearest=False)
        assert result.certified and result.objective == result.lower_bound == optimum
        rounds.append(result.pricing_rounds)
    assert rounds[1] <= rounds[0] - 2, rounds
