"""Warm prices for a capped assignment on a full grid: an auction on a sample.

The certified assignment (:mod:`._assign`) proves its placement with tile
prices ``p``: every cell's tile minimises ``c_ij + p_j`` over the whole
library. Where the grid needs most of the uses the library allows (32,400
cells at one use each of 50,000 tiles), the final prices rise over most of
the library, and the column generation finds them round by round from the
cells' nearest tiles: a crowd of alike cells (a flat sky) reaches a little
further into the library each round, about twenty rounds in all. Lists that
hold each cell's least ``c_ij + p_j`` at the *final* prices from the start
need only a few rounds (with the final prices taken from a finished run:
21 rounds and 87 s became 7 rounds and 50 s). This module estimates those
prices cheaply, so that the first lists can be drawn from them; the rounds
then prove or correct the result as before, so the estimate costs time
when it is poor, never exactness.

**Space.** Costs are approximated in the space of the exact search's PCA
bound (:mod:`._approximate` explains the points): a cell is ``g`` (its first
``d`` projected block means), a tile ``f`` (the same, plus one coordinate
carrying the rest of the bound), and ``c_ij ~ k |g_i - f_j|^2`` in the
objective's units.

**Sample.** The prices depend on how many cells compete for the tiles near
them, a density ratio that a uniform sample of both cells and tiles keeps.
A fraction ``s`` of the cells (at most :data:`LARGEST_SHARED_SAMPLE` where
``cap >= MANY_COPIES``) and as large a fraction of the tiles (each tile copied ``cap``
times, as each may take ``cap`` cells) is assigned by a forward auction
(Bertsekas): an unassigned cell bids for its object of least ``c + p``,
raising its price by the margin to its second best plus ``epsilon``; the
object's former holder bids again. It ends with every cell assigned within
``epsilon`` of its best (epsilon-complementary slackness); with more
objects than cells and all prices starting at zero, its total is then
within ``N epsilon`` of the sample's optimum. Epsilon falls from a tenth of
the median nearest cost to a hundredth, the prices carried over (epsilon
scaling: far fewer bids than the small epsilon alone; an object priced in
the first phase may end unheld with its price, which loosens that bound,
harmless to an estimate; the kinds' crowds start at the median cost
itself, :data:`KINDS_EPSILON_STEPS`). Each cell keeps its
:data:`LIST_LENGTH` objects of least ``c + p`` and the next value ``b``:
prices only rise, so every object outside the list still costs at least
``b``, and the list answers bids until its best passes ``b``; then it is
drawn again, for many cells at once by blocked GEMMs.

**All tiles.** Each sampled cell pays ``u_i = c_i,a(i) + p_a(i)``. A tile's
price is then the least that keeps every sampled cell from preferring it,
``p_j = max(0, max_i (u_i - c_ij))`` (the c-transform of ``u``): every tile
of the library gets a price, sampled or not.

Measured on 32,400 cells x 50,000 CIFAR tiles, ``max_uses=1``: the sample
of a tenth took about 3 s and gave prices within a correlation of 0.995 of
an auction over all cells (which took minutes).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .._runtime import one_blas_thread, thread_pool, worker_count
from ._kernels import _compiled_loop

#: Share of the cells and of the tiles the auction is run on.
SAMPLE_SHARE = 0.1
#: Fewest cells in the sample (small grids are sampled whole). 512 since grids of a
#: tenth of the library's uses have warm lists too: at 2,048 the seed workload's
#: 5,040 cells were sampled at 40% (and as many of the tiles), and the auction took
#: 1.0-1.6 s of a 9 s run; at 512, 0.1-0.3 s, in as many rounds (a 12,288-cell
#: photo: 9 rounds and 33 s against 8 and 31.5 s).
SMALLEST_SAMPLE = 512
#: Most cells in the sample where a tile may fill :data:`MANY_COPIES` cells or more. Its
#: tiles come with ``cap`` alike copies each, over which the auction's bids rise by
#: epsilon at a time: 386 photos on 51,712 cells (135 uses each) spent 20-27 s in an
#: auction of 5,171 cells; with 2,048 the make took 45.5-53.9 s in 7 rounds against
#: 78.5-103.8 s in 16, and 200 photos (259 uses) 51.9 s against 82.7 s. Not for a few
#: copies: the camera-trap elephants (30,000 cells) with the varied preset (2 uses of
#: 50,000 tiles) took 108.3 s in 12 rounds with 2,048 against 80.9 s in 10 without.
LARGEST_SHARED_SAMPLE = 2048
#: Uses per tile from which the sample is at most :data:`LARGEST_SHARED_SAMPLE` cells.
MANY_COPIES = 8
#: Objects each sampled cell keeps, by least cost plus price, between redraws.
LIST_LENGTH = 16
#: Epsilon of each auction phase, in units of the median cost of a cell's nearest tile.
EPSILON_STEPS = (0.1, 0.01)
#: The same for the kinds' warm lists (:func:`~mosaicist.match._capped.warm_kind_pairs`),
#: whose cells stand at their kinds' points: crowds of one point bid each other up by
#: epsilon at a time. A first phase at the median cost: the 30,000-cell colour ramp's
#: auction 61 s -> 23 s.
KINDS_EPSILON_STEPS = (1.0, 0.1, 0.01)
#: Cells each thread of :func:`least_priced` takes at a time: small enough that the
#: threads end together (the seed workload's 5,040 cells in chunks of 1,024 left one
#: thread a third of the work alone: 0.69-0.90 s against 0.61 s in chunks of 256).
CHUNK = 256
#: Cells and objects whose products are made at once (a few hundred kilobytes).
CELLS_PER_BLOCK = 64
OBJECTS_PER_BLOCK = 2048


def warm_prices(
    cell_points: np.ndarray, tile_points: np.ndarray, cap: int, *,
    share: float = SAMPLE_SHARE, seed: int = 0, steps: tuple[float, ...] | None = None,
) -> np.ndarray | None:
    """Estimated final tile prices of a capacitated assignment, or None without Numba.

    Parameters
    ----------
    cell_points, tile_points : numpy.ndarray
        ``(N, d)`` and ``(M, d)`` points whose squared Euclidean distance is
        the cost (the caller scales it to its units).
    cap : int
        Most cells per tile.
    share : float
        Fraction of the cells and tiles auctioned (all of them at 1).
    seed : int
        Seed of the sample (the same inputs always give the same prices).
    steps : tuple of float, optional
        The auction's epsilon phases (see :func:`auction`).

    Returns
    -------
    numpy.ndarray or None
        ``(M,)`` float64 non-negative prices in the cost's units; None where
        the compiled loops are unavailable.
    """
    transform = _compiled_loop(_transform_loop)
    if transform is None:
        return None
    cells = np.asarray(cell_points, np.float64)
    tiles = np.asarray(tile_points, np.float64)
    count, tile_count = len(cells), len(tiles)
    if count == 0 or tile_count == 0:
        return np.zeros(tile_count)
    rng = np.random.default_rng(seed)
    wanted_cells = max(min(count, SMALLEST_SAMPLE), round(share * count))
    if cap >= MANY_COPIES:
        wanted_cells = min(wanted_cells, LARGEST_SHARED_SAMPLE)
    sampled_cells = _sample(rng, count, wanted_cells)
    wanted = round(len(sampled_cells) / count * tile_count)
    # Enough copies for every sampled cell, whatever the rounding.
    sampled_tiles = _sample(rng, tile_count, max(wanted, -(-len(sampled_cells) // cap)))
    objects = np.repeat(tiles[sampled_tiles], cap, axis=0)
    points = cells[sampled_cells]
    # One BLAS thread for the auction: it redraws a few cells' lists thousands of times (a
    # flat target's alike cells), and products that small cost BLAS's threads more than
    # they save (a flat white target, 2,000 photos, on two cores shared with other work: 40 s
    # against 13 s).
    with one_blas_thread():
        price, owner_of = auction(points, objects, steps)
    own = objects[owner_of]
    paid = np.einsum("ij,ij->i", points - own, points - own) + price[owner_of]
    prices = np.zeros(tile_count)
    tile_norm = np.einsum("ij,ij->i", tiles, tiles)
    point_norm = np.einsum("ij,ij->i", points, points)

    def transform_block(start: int) -> None:
        block = slice(start, start + OBJECTS_PER_BLOCK)
        for rows, _, dots in _products(points, tiles[block]):  # one block of tiles
            transform(dots, tile_norm[block], point_norm[rows], paid[rows], prices[block])

    # The c-transform's products are small blocks too (64 cells by 2,048 tiles, kept in
    # cache for the compiled loop): on BLAS's threads they took 3-6x as long as on one
    # (0.35 s against 0.06-0.10 s for 512 cells and 50,000 tiles, on two cores with other
    # work). One BLAS thread each, the blocks of tiles shared among the worker threads
    # (each tile's price is its own block's: no two threads write one).
    with one_blas_thread():
        list(thread_pool(worker_count()).map(
            transform_block, range(0, tile_count, OBJECTS_PER_BLOCK)))
    return prices


def _products(cells: np.ndarray, objects: np.ndarray) -> Iterator[tuple[slice, slice, np.ndarray]]:
    """``(rows, block, cells[rows] @ objects[block].T)`` over all cells and objects.

    :data:`CELLS_PER_BLOCK` cells by :data:`OBJECTS_PER_BLOCK` objects at a
    time, small enough to stay in cache while a compiled loop reads them (a
    whole row of 50,000 objects per cell spent most of its time moving the
    products through memory).
    """
    for first in range(0, len(cells), CELLS_PER_BLOCK):
        rows = slice(first, first + CELLS_PER_BLOCK)
        for start in range(0, len(objects), OBJECTS_PER_BLOCK):
            block = slice(start, start + OBJECTS_PER_BLOCK)
            yield rows, block, cells[rows] @ objects[block].T


def _draw(select: Any, cells: np.ndarray, objects: np.ndarray, object_norm: np.ndarray,
          price: np.ndarray, length: int, cell_norm: np.ndarray | None = None,
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each cell's ``length`` objects of least cost plus price, their costs, and the next value.

    ``cell_norm`` (default: from ``cells``) and ``object_norm`` are the
    points' squared lengths, given where the points are a float32 copy.
    """
    count = len(cells)
    value = np.full((count, length + 1), np.inf)
    listed = np.zeros((count, length + 1), np.int64)
    cost = np.zeros((count, length + 1))
    if cell_norm is None:
        cell_norm = np.einsum("ij,ij->i", cells, cells)
    for rows, block, dots in _products(cells, objects):
        select(dots, object_norm[block], cell_norm[rows], price[block], block.start,
               value[rows], listed[rows], cost[rows])
    return listed[:, :length], cost[:, :length], value[:, length]


def least_priced(cell_points: np.ndarray, tile_points: np.ndarray, price: np.ndarray,
                 k: int) -> np.ndarray | None:
    """Each cell's ``k`` tiles of least squared distance plus ``price``, or None without Numba.

    ``(N, k)`` int64 rows of ``tile_points`` (fewer columns with fewer tiles),
    by GEMMs of small blocks and a compiled selection, :data:`CHUNK` cells per thread.
    The products are float32 (the squared lengths float64): every cell meets
    every tile here, 5,040 x 50,000 of them on the seed workload, whose
    float64 GEMMs took most of a second; the tiles chosen are measured
    exactly afterwards, so an estimate's last digits only move which of
    near-equal tiles are listed.
    """
    select = _compiled_loop(_select_loop)
    if select is None:
        return None
    cells = np.asarray(cell_points, np.float64)
    tiles = np.asarray(tile_points, np.float64)
    length = min(k, len(tiles) - 1)
    if length < 1:
        return np.zeros((len(cells), len(tiles)), np.int64)
    listed = np.zeros((len(cells), length), np.int64)
    tile_norm = np.einsum("ij,ij->i", tiles, tiles)
    cell_norm = np.einsum("ij,ij->i", cells, cells)
    narrow_cells, narrow_tiles = cells.astype(np.float32), tiles.astype(np.float32)

    def chunk(start: int) -> None:
        part = slice(start, start + CHUNK)
        listed[part] = _draw(select, narrow_cells[part], narrow_tiles, tile_norm, price, length,
                             cell_norm[part])[0]

    # The selection runs without the GIL: chunks on every core (their rows are disjoint).
    with one_blas_thread():
        list(thread_pool(worker_count()).map(chunk, range(0, len(cells), CHUNK)))
    return listed


def auction(cells: np.ndarray, objects: np.ndarray,
            steps: tuple[float, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Forward auction with epsilon scaling (see the module's notes); needs ``N <= M``.

    Returns the objects' prices and each cell's object, ``(M,)`` float64 and
    ``(N,)`` int64. ``steps``: each phase's epsilon, in units of the median
    cost of a cell's nearest object (default :data:`EPSILON_STEPS`). The
    loops run compiled where Numba is, else as Python.
    """
    bid: Any = _compiled_loop(_bid_loop) or _bid_loop
    select = _compiled_loop(_select_loop) or _select_loop
    count, object_count = len(cells), len(objects)
    if count > object_count:
        raise ValueError(f"{count} cells for {object_count} objects")
    length = min(LIST_LENGTH, object_count - 1)
    object_norm = np.einsum("ij,ij->i", objects, objects)
    price = np.zeros(object_count)
    listed = np.zeros((count, max(length, 1)), np.int64)
    cost = np.zeros((count, max(length, 1)))
    floor = np.full(count, np.inf)

    def draw(which: np.ndarray) -> None:
        # Alike cells (a flat region: one point) have one list: drawn once. Else each
        # redraw of such a crowd measured every cell against every object again, and its
        # bids make the whole crowd stale every few bids: 1,024 cells at one point took
        # 140 s among 5,000 objects, and the warm prices of a line drawing's 30,000 cells
        # did not end in minutes.
        points, inverse = _distinct_rows(cells[which])
        drawn = _draw(select, points, objects, object_norm, price, length)
        listed[which], cost[which], floor[which] = (part[inverse] for part in drawn)

    assigned = np.full(count, -1, np.int64)
    if length < 1:
        # One object: the one cell takes it.
        assigned[:] = 0
        return price, assigned
    everyone = np.arange(count, dtype=np.int64)
    draw(everyone)
    unit = float(np.median(cost[:, 0])) or 1.0
    for step in EPSILON_STEPS if steps is None else steps:
        owner = np.full(object_count, -1, np.int64)
        assigned[:] = -1
        queue = everyone.copy()
        head, size = 0, count
        waiting = np.empty(count, np.int64)
        while True:
            head, size, stale = bid(listed, cost, floor, price, owner, assigned, queue,
                                    head, size, step * unit, waiting)
            if stale == 0:
                break
            redraw = waiting[:stale].copy()
            draw(redraw)
            for cell in redraw:
                queue[(head + size) % count] = cell
                size += 1
    return price, assigned


def _distinct_rows(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of ``points`` and each row's index among them.

    ``np.unique(..., axis=0)`` sorts the rows as records: 9 of 11 s of an
    auction of 2,048 alike cells. A lexicographic sort of the columns
    instead.
    """
    order = np.lexsort(points.T[::-1])
    ordered = points[order]
    first = np.ones(len(points), bool)
    first[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    inverse = np.empty(len(points), np.int64)
    inverse[order] = np.cumsum(first) - 1
    return ordered[first], inverse


def _sample(rng: np.random.Generator, total: int, size: int) -> np.ndarray:
    if size >= total:
        return np.arange(total)
    return np.sort(rng.choice(total, size, replace=False))


def _bid_loop(listed: Any, cost: Any, floor: Any, price: Any, owner: Any, assigned: Any,
              queue: Any, head: int, size: int, epsilon: float,
              waiting: Any) -> tuple[int, int, int]:  # pragma: no cover - runs compiled
    """Bids from the queue's cells until it empties; cells whose lists went stale wait."""
    capacity = queue.shape[0]
    length = listed.shape[1]
    stale = 0
    while size > 0:
        cell = queue[head]
        head = (head + 1) % capacity
        size -= 1
        best = np.inf
        second = np.inf
        chosen = -1
        for slot in range(length):
            value = cost[cell, slot] + price[listed[cell, slot]]
            if value < second:
                if value < best:
                    second = best
                    best = value
                    chosen = listed[cell, slot]
                else:
                    second = value
        if best > floor[cell]:
            # An object off the list may be better now: draw the list again.
            waiting[stale] = cell
            stale += 1
            continue
        # Off the list, every object costs at least the floor.
        second = min(second, floor[cell])
        price[chosen] += second - best + epsilon
        former = owner[chosen]
        owner[chosen] = cell
        assigned[cell] = chosen
        if former >= 0:
            assigned[former] = -1
            queue[(head + size) % capacity] = former
            size += 1
    return head, size, stale


def _select_loop(dots: Any, object_norm: Any, cell_norm: Any, price: Any, offset: int,
                 best_value: Any, best_object: Any,
                 best_cost: Any) -> None:  # pragma: no cover - runs compiled
    """Merge a block of objects (from ``offset``) into each row's least ``c + p``, sorted."""
    last = best_value.shape[1] - 1
    for row in range(dots.shape[0]):
        worst = best_value[row, last]
        for item in range(dots.shape[1]):
            distance = max(object_norm[item] - 2.0 * dots[row, item] + cell_norm[row], 0.0)
            value = distance + price[item]
            if value < worst:
                slot = last
                while slot > 0 and best_value[row, slot - 1] > value:
                    best_value[row, slot] = best_value[row, slot - 1]
                    best_object[row, slot] = best_object[row, slot - 1]
                    best_cost[row, slot] = best_cost[row, slot - 1]
                    slot -= 1
                best_value[row, slot] = value
                best_object[row, slot] = offset + item
                best_cost[row, slot] = distance
                worst = best_value[row, last]


def _transform_loop(dots: Any, tile_norm: Any, cell_norm: Any, paid: Any,
                    prices: Any) -> None:  # pragma: no cover - runs compiled
    """Raise each tile's price to ``max_i (paid_i - c_ij)`` over the block's cells."""
    for row in range(dots.shape[0]):
        for tile in range(dots.shape[1]):
            gain = paid[row] - max(tile_norm[tile] - 2.0 * dots[row, tile] + cell_norm[row], 0.0)
            if gain > prices[tile]:
                prices[tile] = gain
