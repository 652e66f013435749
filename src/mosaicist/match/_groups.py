"""The capped assignment of a grid of identical cells, solved once per kind of cell.

A line drawing, a logo, a scan of a page or a photo on a white backdrop has
thousands of cells whose pixels are the same. Cells with the same vector are
the same distance from every tile, so under a use cap they all want the same
tiles: the pricing rounds of :mod:`._assign`, which search and list tiles
cell by cell, let a crowd of them in a few hundred a round and list each of
its cells' tiles again (a line drawing of 26,839 white cells in 30,000 never
finished; 9,690 cells took 687 s and ended without a proof). Here each kind
of cell is one node of the flow, searched once.

**Problem.** Kinds ``g`` of cell, ``w_g`` cells each, all at the distance
``c_gj`` from tile ``j``; every tile fills at most ``cap`` cells. The
transportation problem

    minimise ``sum_gj c_gj x_gj``  subject to  ``sum_j x_gj = w_g``,
    ``sum_g x_gj <= cap``,  ``0 <= x_gj <= min(w_g, cap)``

has the cells' optimum: a placement of the cells gives an ``x`` of the same
cost (``x_gj`` cells of kind ``g`` on tile ``j``), and an integer ``x`` is
shared out among the kind's cells at the same cost. Spacing is not a
constraint here (the caller sends only grids where it does not bind), so
which cell of a kind takes which of its tiles is free: they are shared out
in a fixed random order, so that no part of the picture gets all the
nearest tiles.

**Column generation.** Each kind lists its ``ceil(w_g / cap) +``
:data:`FIRST_TILES` nearest tiles (one exact search for the kind), so that
every unlisted tile is at least as far as its last listed one. A round
solves the min-cost flow of the lists (:func:`._assign.flow_units` with a
supply of ``w_g`` per kind), each kind also having an outside column at
twice its last listed distance, so that the solve always finishes. A kind
with units outside lists twice as many nearest tiles. Otherwise the least
tile prices ``p`` that prove the flow optimal on the lists are found
(below), and each kind's cost is ``u_g = max c_gj + p_j`` over the tiles it
holds (all of them equal under those prices). The flow is optimal over
*every* pair when no unlisted tile has ``c_gj + p_j < u_g``: then ``u`` and
``p`` are a feasible dual of the whole problem with the flow's cost
(``sum_g w_g u_g - cap sum_j p_j``), and the assignment is certified (gap
0). Each kind's exact search of the whole library with ``p`` as an
additive term per tile (:meth:`._assign.CandidateSearch.below`, limit
``u_g``) finds the tiles that break it, which join its list for the next
round.

**Least prices.** Under the flow, a tile with room left has no price; a
full tile ``j`` must satisfy ``c_gj + p_j >= u_g`` for every kind ``g`` that
could send it one more unit (``x_gj < min(w_g, cap)``). Starting from zero,
``u`` and ``p`` are raised in turns, ``u_g = max`` over held tiles of
``c_gj + p_j``, ``p_j = max(0, max_g u_g - c_gj)`` over those kinds: a
longest-path problem on the flow's residual graph, which has no positive
cycle at an optimum, so the loop ends, at the least prices.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..progress import progress_bar
from . import _assign
from ._assign import Assignment, CandidateSearch, flow_units

#: Nearest tiles a kind of cell lists past the ``ceil(cells / cap)`` it fills.
FIRST_TILES = 16
#: Tiles past those it holds that each price check of a kind returns at most.
CHECK_TILES = 16
#: Kinds of cell, as a share of the cells, up to which a grid is solved by kinds:
#: with fewer alike cells the pricing rounds of :mod:`._assign` are faster.
GROUPED_SHARE = 0.5
#: Rounds of raising prices before the least prices are given up on (a safeguard: an
#: optimal flow has no positive cycle, and they end long before).
MOST_PRICE_SWEEPS = 1_000_000
#: Seed of the order in which a kind's cells take its tiles.
SHARE_SEED = 0


@dataclass(frozen=True)
class CellKinds:
    """Cells grouped by their vectors.

    Attributes
    ----------
    kind : numpy.ndarray
        ``(N,)`` kind of every cell, ``0..K-1``, numbered by first cell.
    first : numpy.ndarray
        ``(K,)`` first cell of each kind (the one searched for it).
    size : numpy.ndarray
        ``(K,)`` cells of each kind.
    """

    kind: np.ndarray
    first: np.ndarray
    size: np.ndarray

    @property
    def worth_grouping(self) -> bool:
        """Whether the kinds are few enough (:data:`GROUPED_SHARE`) to solve by kinds."""
        return len(self.first) <= GROUPED_SHARE * len(self.kind)


def cell_kinds(cell_vectors: np.ndarray) -> CellKinds:
    """Group cells whose vectors are the same byte for byte.

    Parameters
    ----------
    cell_vectors : numpy.ndarray
        ``(N, ...)`` each cell's vector (any dtype).

    Returns
    -------
    CellKinds
        Each cell's kind, numbered in order of each kind's first cell.
    """
    count = len(cell_vectors)
    rows = np.ascontiguousarray(cell_vectors).reshape(count, -1)
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    _, first, inverse, size = np.unique(keys, return_index=True, return_inverse=True,
                                        return_counts=True)
    # Numbered by first cell, so that the kinds do not depend on byte order.
    order = np.argsort(first, kind="stable")
    number = np.empty_like(order)
    number[order] = np.arange(len(order))
    return CellKinds(number[inverse.ravel()].astype(np.int64), first[order].astype(np.int64),
                     size[order].astype(np.int64))


class _Lists:
    """Each kind's listed tiles, their distances, and how far its nearest tiles go."""

    def __init__(self, kinds: int, tile_count: int) -> None:
        self.tile_count = tile_count
        self.kind = np.zeros(0, np.int64)
        self.tile = np.zeros(0, np.int64)
        self.distance = np.zeros(0, np.int64)
        #: Nearest tiles each kind has listed, and the distance of the last of them.
        self.nearest = np.zeros(kinds, np.int64)
        self.tail = np.zeros(kinds, np.int64)
        #: Tiles past those it holds that each kind's next price check returns at most.
        self.check = np.full(kinds, CHECK_TILES, np.int64)

    def keys(self) -> np.ndarray:
        return self.kind * np.int64(self.tile_count) + self.tile

    def add(self, kind: np.ndarray, tile: np.ndarray, distance: np.ndarray) -> int:
        """List the pairs not listed yet; return how many were new."""
        found = tile >= 0
        kind, tile, distance = kind[found], tile[found], distance[found]
        new_keys = kind * np.int64(self.tile_count) + tile
        new_keys, first = np.unique(new_keys, return_index=True)
        fresh = ~np.isin(new_keys, self.keys(), assume_unique=True)
        added = first[fresh]
        self.kind = np.concatenate([self.kind, kind[added]])
        self.tile = np.concatenate([self.tile, tile[added]])
        self.distance = np.concatenate([self.distance, distance[added]])
        return len(added)

    def list_nearest(self, search: CandidateSearch, first: np.ndarray, kinds: np.ndarray,
                     want: np.ndarray) -> None:
        """List the ``want`` nearest tiles of each of ``kinds`` (one search per size)."""
        want = np.minimum(want, self.tile_count)
        # Sizes rounded up to powers of two, so that kinds share searches.
        width = np.minimum(1 << np.ceil(np.log2(np.maximum(want, 1))).astype(np.int64),
                           self.tile_count)
        for size in np.unique(width):
            some = kinds[width == size]
            tiles, distances = search.nearest(first[some], int(size))
            self.add(np.repeat(some, tiles.shape[1]), tiles.ravel(), distances.ravel())
            listed = (tiles >= 0).sum(axis=1)
            self.nearest[some] = listed
            last = distances[np.arange(len(some)), np.maximum(listed - 1, 0)]
            self.tail[some] = np.where(listed > 0, last, 0)


def least_prices(kind: np.ndarray, tile: np.ndarray, distance: np.ndarray,
                 units: np.ndarray, room: np.ndarray, full: np.ndarray, kinds: int,
                 tile_count: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The least tile prices that prove a flow optimal on its lists, and each kind's cost.

    Parameters
    ----------
    kind, tile, distance : numpy.ndarray
        ``(E,)`` the listed pairs.
    units : numpy.ndarray
        ``(E,)`` the flow's units on each pair.
    room : numpy.ndarray
        ``(E,)`` whether each pair could take one more unit.
    full : numpy.ndarray
        ``(M,)`` whether each tile is at its cap.
    kinds, tile_count : int
        Kinds and tiles.

    Returns
    -------
    tuple of numpy.ndarray or None
        ``(M,)`` prices and ``(K,)`` costs ``u_g``; None if the prices kept
        rising (the flow was not optimal on its lists).
    """
    price = np.zeros(tile_count, np.int64)
    held = np.flatnonzero(units > 0)
    held = held[np.argsort(kind[held], kind="stable")]
    held_kind = kind[held]
    held_starts = np.flatnonzero(np.r_[True, held_kind[1:] != held_kind[:-1]])
    pushing = np.flatnonzero(room & full[tile])
    pushing = pushing[np.argsort(tile[pushing], kind="stable")]
    pushed_tile = tile[pushing]
    pushed_starts = np.flatnonzero(np.r_[True, pushed_tile[1:] != pushed_tile[:-1]])
    cost = np.full(kinds, np.iinfo(np.int64).min, np.int64)
    for _ in range(MOST_PRICE_SWEEPS):
        value = distance[held] + price[tile[held]]
        cost[held_kind[held_starts]] = np.maximum.reduceat(value, held_starts)
        if not len(pushing):
            return price, cost
        raised = np.maximum.reduceat(cost[kind[pushing]] - distance[pushing], pushed_starts)
        targets = pushed_tile[pushed_starts]
        higher = raised > price[targets]
        if not higher.any():
            return price, cost
        price[targets[higher]] = raised[higher]
    return None


def assign_by_kinds(search: CandidateSearch, kinds: CellKinds, cap: int,
                    show_progress: bool = False) -> Assignment | None:
    """The capped optimum of cells grouped by kind, certified over every cell-tile pair.

    Parameters
    ----------
    search : CandidateSearch
        Exact searches of the whole library (integer distances); a kind is
        searched as its first cell.
    kinds : CellKinds
        The cells' kinds (:func:`cell_kinds`): cells of a kind must be at the
        same distance from every tile.
    cap : int
        Most cells a tile may fill (spacing must not bind).
    show_progress : bool
        Draw a progress bar on stderr.

    Returns
    -------
    Assignment or None
        The placement, certified optimal; None where there is no flow solver
        (OR-Tools, extra ``fast``) or it cannot take the costs (out of its
        range), for the caller to solve otherwise.
    """
    if _assign._flow_solver() is None:
        return None
    start = time.perf_counter()
    tile_count = search.tile_count
    count = len(kinds.first)
    size, first = kinds.size, kinds.first
    if int(size.sum()) > cap * tile_count:
        raise ValueError(f"{int(size.sum())} cells cannot fill tiles of {cap} uses each "
                         f"from {tile_count}")
    lists = _Lists(count, tile_count)
    every = np.arange(count)
    lists.list_nearest(search, first, every, -(-size // cap) + FIRST_TILES)
    bar = progress_bar(None, "assigning tiles by kind of cell", "round", enabled=show_progress)
    rounds = 0
    try:
        while True:
            rounds += 1
            bar.update(1)
            kind, tile, distance = lists.kind, lists.tile, lists.distance
            base = np.full(count, np.iinfo(np.int64).max, np.int64)
            np.minimum.at(base, kind, distance)
            largest = np.zeros(count, np.int64)
            np.maximum.at(largest, kind, distance)
            complete = lists.nearest >= tile_count
            # Past every listed tile, in multiples of the distances' common factor (the
            # solver divides by it: tinted search units are multiples of thousands).
            step = max(1, int(np.gcd.reduce(distance)))
            outside = np.where(complete, 2 * largest, 2 * lists.tail) + step
            flowed = flow_units(count, kind, tile, tile_count, distance - base[kind], base, cap,
                                outside, supply=size)
            if flowed is None:
                return None
            units, out = flowed
            if (out > 0).any():
                short = np.flatnonzero(out > 0)
                if complete[short].any():
                    return None  # every tile listed and still outside: let the cells' solver say
                lists.list_nearest(search, first, short, 2 * lists.nearest[short])
                continue
            load = np.bincount(tile, units, minlength=tile_count)
            room = units < np.minimum(size[kind], cap)
            priced = least_prices(kind, tile, distance, units, room, load >= cap, count,
                                  tile_count)
            if priced is None:
                return None
            price, cost = priced
            if not _add_beating(search, lists, first, price, cost, units):
                break
    finally:
        bar.close()
    return _shared_out(kinds, lists, units, start, rounds, int(lists.nearest.max()))


def _add_beating(search: CandidateSearch, lists: _Lists, first: np.ndarray,
                 price: np.ndarray, cost: np.ndarray, units: np.ndarray) -> bool:
    """List every kind's unlisted tiles of ``c_gj + p_j < u_g``; whether there were any.

    A kind's search returns at most its held tiles (which may be at ``u_g``
    or below it, when full) plus :data:`CHECK_TILES`, twice as many after each
    search that returned as many as it could: where it is cut there, the
    tiles it returns are listed, and the next round looks again. (Kinds next
    to a large one, a line's edge beside white paper, find hundreds of its
    tiles below their costs.)
    """
    count = len(first)
    held = np.bincount(lists.kind[units > 0], minlength=count)
    want = held + lists.check
    width = np.minimum(1 << np.ceil(np.log2(want)).astype(np.int64), lists.tile_count)
    added = 0
    for size in np.unique(width):
        some = np.flatnonzero(width == size)
        tiles, distances = search.below(first[some], price, cost[some], int(size))
        added += lists.add(np.repeat(some, tiles.shape[1]), tiles.ravel(), distances.ravel())
        cut = some[(tiles >= 0).all(axis=1)]
        lists.check[cut] = np.minimum(2 * lists.check[cut], lists.tile_count)
    return added > 0


def _shared_out(kinds: CellKinds, lists: _Lists, units: np.ndarray, start: float,
                rounds: int, longest: int) -> Assignment:
    """Each cell's tile from its kind's units, in a fixed random order of the kind's cells."""
    held = np.flatnonzero(units > 0)
    # Each unit once, by kind, nearest first.
    unit = np.repeat(held, units[held])
    unit = unit[np.lexsort((lists.tile[unit], lists.distance[unit], lists.kind[unit]))]
    order = np.random.default_rng(SHARE_SEED).permutation(len(kinds.kind))
    cells = order[np.argsort(kinds.kind[order], kind="stable")]
    tile = np.empty(len(kinds.kind), np.int64)
    distance = np.empty(len(kinds.kind), np.int64)
    tile[cells] = lists.tile[unit]
    distance[cells] = lists.distance[unit]
    objective = int(distance.sum())
    return Assignment(tile, distance, objective, objective, 0.0, "optimal", longest, rounds,
                      time.perf_counter() - start, True, rounds)
