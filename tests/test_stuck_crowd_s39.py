"""Cells still outside their lists when the pricing rounds run out (issue 10, session 39).

A line drawing's white cells under the default preset, 3,000 of 10,000 left
outside after 40 rounds, all alike: the best placement within the lists then
grew their lists to their nearest tiles, twice as many each time, and their
nearest tiles were all taken by the others (22 million edges and 8.7 GB, and
growing). They now list their nearest tiles with room first.
"""

from __future__ import annotations

import numpy as np
from test_assign import DenseSearch, check_placement, top_k

from mosaicist.match import _assign
from mosaicist.match._assign import assign_tiles


def _alike(seed: int, count: int, tiles: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tile_features = rng.integers(0, 200, (tiles, 3))
    cell_features = np.full((count, 3), 100, np.int64) + rng.integers(-1, 2, (count, 3))
    return ((cell_features[:, None, :] - tile_features[None]) ** 2).sum(-1)


def test_a_crowd_left_outside_lists_tiles_with_room_not_ever_more_taken_ones(monkeypatch):
    rows, cols, tiles = 20, 30, 4000
    full = _alike(0, rows * cols, tiles)
    ranked, ranked_distances = top_k(full, 8)
    # One round: most of the crowd is still outside its lists when they run out.
    monkeypatch.setattr(_assign, "MAX_PRICING_ROUNDS", 1)
    listed = []
    with_edges = _assign._with_edges

    def counting(edges, *args):
        grown = with_edges(edges, *args)
        listed.append(len(grown.row))
        return grown

    monkeypatch.setattr(_assign, "_with_edges", counting)
    result = assign_tiles(ranked, ranked_distances, rows, cols, max_uses=1,
                          search=DenseSearch(full))
    check_placement(result.tile, full, rows, cols, 1, 1)
    assert not result.certified and result.objective >= result.lower_bound
    with_room = max(listed)
    # As before: the lists of taken tiles grow instead.
    listed.clear()
    monkeypatch.setattr(_assign._Solver, "_list_tiles_with_room", lambda self, *args: False)
    before = assign_tiles(ranked, ranked_distances, rows, cols, max_uses=1,
                          search=DenseSearch(full))
    check_placement(before.tile, full, rows, cols, 1, 1)
    assert with_room < 0.8 * max(listed), (with_room, max(listed))
