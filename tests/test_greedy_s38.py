"""Greedy assignment: cells left without a tile list the nearest tiles with room at once."""

import numpy as np
import pytest
from test_assign import DenseSearch, check_placement, full_distances, top_k

from mosaicist.match._assign import assign_tiles


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("max_uses", "min_spacing"), [(1, 1), (2, 1), (1, 3), (2, 4)])
def test_stuck_cells_take_tiles_with_room_in_a_few_searches(seed, max_uses, min_spacing):
    """A crowd of alike cells with short lists: before, every pass that left a cell
    without a tile doubled its list by a search of the whole library and ran the pass
    again (ten doublings on 5,040 cells of 50,000 photos); now one search among the
    tiles with room lists what the stuck cells can take."""
    rng = np.random.default_rng(seed)
    rows, cols, tiles = 8, 10, 600
    full = full_distances(rng, rows * cols, tiles, clusters=1)
    candidates, distances = top_k(full, 2)
    search = DenseSearch(full)
    result = assign_tiles(candidates, distances, rows, cols, max_uses=max_uses,
                          min_spacing=min_spacing, method="greedy", search=search)
    assert (result.tile >= 0).all()
    check_placement(result.tile, full, rows, cols, max_uses, min_spacing)
    searches = search.calls["nearest"] + search.calls["below"]
    assert searches <= 4, search.calls
    # Each cell placed after the first pass took its nearest tile with room then: no
    # cell's tile is farther than the (rows * cols)-th nearest of its own.
    rank = (full < full[np.arange(rows * cols), result.tile][:, None]).sum(axis=1)
    assert rank.max() < rows * cols * max(1, min_spacing)


def test_greedy_without_a_search_still_grows_its_lists():
    """Without a library search (lists given), the lists grow as before."""
    rng = np.random.default_rng(5)
    rows, cols, tiles = 4, 5, 40
    full = full_distances(rng, rows * cols, tiles, clusters=1)
    candidates, distances = top_k(full, tiles)
    result = assign_tiles(candidates[:, :3], distances[:, :3], rows, cols, max_uses=1,
                          method="greedy",
                          more_candidates=lambda k: top_k(full, k), max_candidates=tiles)
    assert (result.tile >= 0).all()
    check_placement(result.tile, full, rows, cols, 1, 1)
