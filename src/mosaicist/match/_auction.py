"""The exact capped assignment of a small library: an auction over every cell-tile pair.

A library of a few hundred photos that must fill tens of thousands of cells
(400 photos on a 51,712-cell poster, each photo in 130 cells) makes the
column generation of :mod:`._assign` slow: the prices rise over the whole
library at once, and alike cells (a sky) move from tile to tile round after
round (40 rounds, 203 s and no proof on one such draw). With so few tiles
every distance fits in memory (``N x M`` of them), and the assignment is
solved exactly in one go instead.

**Problem.** Cells ``i`` (``N``), tiles ``j`` (``M``) of ``cap`` uses each,
``N <= cap M``: minimise ``sum c_i,a(i)`` over placements that give each
tile at most ``cap`` cells. Each tile is ``cap`` identical *places*; ``cap M
- N`` dummy cells that cost nothing anywhere fill the places left over, so
that places and cells are as many (a symmetric assignment: the real cells'
optimum is the same, as the dummies take whatever they leave).

**Auction (Bertsekas).** Every place has a price ``q``; a cell unplaced
bids for the tile of least ``c_ij + q`` (its cheapest place), raising that
place's price by the margin to its second-best value plus ``epsilon``, and
takes it; the place's former holder bids again. The second-best value of a
cell counts the same tile's next place (places of a tile are alike, so that
a crowd of alike cells raises a tile's places by their true margins, not
by ``epsilon`` at a time). When every cell is placed, each is within
``epsilon`` of its best value (epsilon-complementary slackness), and the
placement's cost is within ``n epsilon`` of the optimum, ``n`` the places.

**Exactness.** Costs are integers. Scaled by ``s = n + 1`` each differs
from another by ``s`` or more, and at ``epsilon = 1`` the placement is
within ``n / s < 1`` of the scaled optimum: it *is* the optimum.
Epsilon starts at a fraction of the largest scaled cost and falls by
:data:`EPSILON_FALL` per phase down to 1 (epsilon scaling); each phase
keeps the prices, and only the cells that break the new epsilon's
slackness bid again.

**Costs.** Each bid scans the cell's ``M`` distances: the whole auction
costs ``M`` times the bids, a few hundred per cell of the grid over all
phases (measured: 6.6 million bids for 51,712 cells and 400 tiles, 3.7 s;
6.8 s when one pass over the tiles kept the best two values as it went,
where two simple passes vectorise). Only small libraries come here
(:func:`mosaicist.match._capped.auction_fits`).
The placement's proof over every pair (least tile prices) is the caller's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._kernels import _compiled_loop

#: Factor by which epsilon falls from phase to phase.
EPSILON_FALL = 4
#: Epsilon of the first phase, as a fraction of the largest scaled cost.
FIRST_EPSILON = 1 / 8
#: Most places per cell (``cap M / N``): the dummies bid too, and beyond this they
#: would cost more than the cells.
MOST_PLACES_PER_CELL = 2
#: Cell-tile pairs (transforms included) from which an auction that cannot run (no
#: Numba) is noted as slow: the lists' rounds solve instead, and on a crowded grid they
#: take minutes where the auction takes a second (5,040 cells, 300 photos, 1.5 million
#: pairs: 9 min 51 s against 0.33 s).
SLOW_WITHOUT_NUMBA_PAIRS = 1_000_000


def auction_runs() -> bool:
    """Whether :func:`capped_auction` can run here (its loop compiles: Numba is importable)."""
    return _compiled_loop(_auction_loop) is not None


def capped_auction(distances: np.ndarray, cap: int, compiled: bool = True
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """The placement of least total distance with at most ``cap`` cells per tile.

    Parameters
    ----------
    distances : numpy.ndarray
        ``(N, M)`` non-negative integer distance of every cell to every tile.
    cap : int
        Most cells per tile (``cap * M >= N``).
    compiled : bool
        Run the loop compiled (False: as Python, for small tests).

    Returns
    -------
    (tiles, prices) or None
        ``(N,)`` int64 tile of each cell, an optimal placement, and ``(M,)``
        int64 each tile's least place price at the end in the distances'
        units (rounded down): near the prices that prove the placement, a
        start for finding them. None where the loop cannot run here (no
        Numba) or the scaled costs would overflow.

    Raises
    ------
    ValueError
        If the tiles cannot hold the cells, or a distance is negative or not an integer.
    """
    distances = np.asarray(distances)
    count, tiles = distances.shape
    if cap < 1 or cap * tiles < count:
        raise ValueError(f"{tiles} tiles of {cap} uses cannot hold {count} cells")
    if not np.issubdtype(distances.dtype, np.integer):
        raise ValueError("the auction needs integer distances")
    if count == 0:
        return np.zeros(0, np.int64), np.zeros(tiles, np.int64)
    if int(distances.min()) < 0:
        raise ValueError("distances must be non-negative")
    loop = _compiled_loop(_auction_loop) if compiled else _auction_loop
    if loop is None:
        return None
    # A cell's constant does not change which placement is best, and the common
    # factor of a tinted search's units (10,000) leaves room for the scaling.
    cost = distances - distances.min(axis=1, keepdims=True)
    common = int(np.gcd.reduce(cost, axis=None)) if cost.any() else 1
    if common > 1:
        cost //= common
    cost = cost.astype(np.int64, copy=False)
    places = cap * tiles
    scale = places + 1
    largest = int(cost.max())
    # Values (a scaled cost plus a price) must stay in int64: costs below 2**61, and
    # the loop gives up where a price would pass 2**62.
    if (largest + 2) * scale >= 1 << 61:
        return None
    placed = np.full(count, -1, np.int64)
    least = np.zeros(tiles, np.int64)
    first = max(1, int(largest * scale * FIRST_EPSILON))
    if not loop(np.ascontiguousarray(cost), np.int64(cap), np.int64(places - count),
                np.int64(scale), np.int64(first), np.int64(EPSILON_FALL), placed, least):
        return None
    return placed, least // scale * common


def _auction_loop(cost: Any, cap: Any, dummies: Any, scale: Any, first: Any, fall: Any,
                  placed: Any, least: Any) -> bool:  # pragma: no cover - runs compiled
    """The auction of the module's notes; False where a price would pass ``2**62``.

    ``placed`` receives each real cell's tile, ``least`` (zeros) each tile's
    least place price, kept there throughout for the scans.
    """
    count, tiles = cost.shape
    persons = count + dummies
    large = np.int64(1) << np.int64(62)
    # Each tile's places as a binary heap of prices (least first), with their holders.
    price = np.zeros((tiles, cap), np.int64)
    holder = np.full((tiles, cap), -1, np.int64)
    # The next least price of each tile, kept apart as ``least`` is.
    next_least = np.full(tiles, large, np.int64)
    if cap > 1:
        next_least[:] = 0
    tile_of = np.full(persons, -1, np.int64)
    paid = np.zeros(persons, np.int64)
    queue = np.empty(persons, np.int64)
    values = np.empty(tiles, np.int64)
    epsilon = first
    while True:
        # Cells whose place breaks this epsilon's slackness bid again (all at first).
        size = 0
        for person in range(persons):
            tile = tile_of[person]
            if tile >= 0:
                best = large
                if person < count:
                    for other in range(tiles):
                        best = min(best, cost[person, other] * scale + least[other])
                else:
                    for other in range(tiles):
                        best = min(best, least[other])
                own = paid[person]
                if person < count:
                    own += cost[person, tile] * scale
                if own <= best + epsilon:
                    continue
                # Leave the place (its price stays; the next bidder for it takes it).
                for place in range(cap):
                    if holder[tile, place] == person:
                        holder[tile, place] = -1
                        break
                tile_of[person] = -1
            queue[size] = person
            size += 1
        head = 0
        while size > 0:
            person = queue[head]
            head += 1
            if head == persons:
                head = 0
            size -= 1
            # Two simple passes (the first vectorises): the least value, then where.
            if person < count:
                for tile in range(tiles):
                    values[tile] = cost[person, tile] * scale + least[tile]
            else:
                for tile in range(tiles):
                    values[tile] = least[tile]
            best = large
            for tile in range(tiles):
                best = min(best, values[tile])
            chosen = 0
            while values[chosen] != best:
                chosen += 1
            second = large
            for tile in range(tiles):
                if tile != chosen:
                    second = min(second, values[tile])
            # The same tile's next place is an alternative too.
            if next_least[chosen] < large:
                value = next_least[chosen]
                if person < count:
                    value += cost[person, chosen] * scale
                if value < second:
                    second = value
            raise_by = epsilon if second >= large else second - best + epsilon
            displaced = holder[chosen, 0]
            new_price = price[chosen, 0] + raise_by
            if new_price >= large:
                return False
            # Sift the raised root down its heap.
            at = 0
            while True:
                child = 2 * at + 1
                if child >= cap:
                    break
                if child + 1 < cap and price[chosen, child + 1] < price[chosen, child]:
                    child += 1
                if price[chosen, child] >= new_price:
                    break
                price[chosen, at] = price[chosen, child]
                holder[chosen, at] = holder[chosen, child]
                at = child
            price[chosen, at] = new_price
            holder[chosen, at] = person
            least[chosen] = price[chosen, 0]
            if cap > 2:
                next_least[chosen] = min(price[chosen, 1], price[chosen, 2])
            elif cap == 2:
                next_least[chosen] = price[chosen, 1]
            tile_of[person] = chosen
            paid[person] = new_price
            if displaced >= 0:
                tile_of[displaced] = -1
                queue[(head + size) % persons] = displaced
                size += 1
        if epsilon == 1:
            break
        epsilon = max(np.int64(1), epsilon // fall)
    for person in range(count):
        placed[person] = tile_of[person]
    return True
