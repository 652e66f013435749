"""Repairing the kinds' optimal flow after their lists grew.

The rounds of :mod:`._groups` solve the same transportation problem again and
again, each time on lists that a price check grew by the pairs that beat
some kinds' costs. The flow before is optimal on the lists before, and the
least prices prove it; solving every pair again throws that away (3-4 s a
round on 3.5 million pairs, the elephants' 27,000 kinds of 30,000 cells).
This module repairs it, as :mod:`._flow` repairs the cells' assignment.

**Problem.** Kind ``g`` sends its ``w_g`` units through its pairs to tiles
(cost ``c_gj``, at most ``l_g`` units on each pair) or through its outside
column straight to the sink (cost ``o_g``, no limit); tile ``j`` passes at
most ``cap`` units to the sink. With node potentials ``pi``, an arc ``a ->
b`` of cost ``c`` has the reduced cost ``c + pi(a) - pi(b)``, and a flow is
optimal when every arc with room left in the residual graph (pairs below
their limit forward, pairs with units backward, the same for the tiles'
arcs to the sink and the outside columns) has a non-negative reduced cost.
The prices ``p`` and costs ``u`` that proved the last round (its least
prices, or prices raised from the round before) are such potentials:
``pi(g) = -u_g``, ``pi(j) = -p_j``, ``pi(sink) = 0``.

**What breaks.** A new pair with ``c_gj + p_j < u_g`` (and any other pair
below its limit; a proof leaves none among the old ones) has a
negative reduced cost, and so has an outside column cheaper than its kind's
cost. A kind with few units, no more than the units its breaking pairs
could take (a kind of one cell), is taken off its tiles: its units become
an excess at it, its potential is reset to its least price-adjusted cost
(no arc enters a kind without units, and every arc out of it is then
non-negative), and each unit is missing where it arrived, at a tile with a
price (whose arc to the sink stays saturated, so that its negative reduced
cost never enters the residual graph) or, for a tile at price 0, at the
sink. A larger kind keeps its units, and each breaking pair is filled to
its limit instead: the kind sends that many units too many (a deficit at
it) and the tile receives them (an excess), the pair's residual arc is then
backward, non-negative. (A kind of thousands of cells next to a few new
pairs: moving all its units would cost a search each.)

**Units outside.** Where the last optimum sent units through outside
columns (their kinds' nearest tiles taken), the next round lists tiles
with room for them, and its solve is a repair as well: the least prices
with each such kind's cost held at its outside column prove that
optimum, and those units are excesses at their kinds, missing at the
sink (the camera-trap bear at one use: 449, 63, 7 and 1 units outside in
its first rounds, each placed by a whole solve of 3-4 s before).

**Successive shortest paths.** From each node with an excess, Dijkstra on
the reduced costs stops at the first node with a deficit it settles; the
potentials of the nodes settled below the path's length ``D`` move by
``d(v) - D``, which keeps every reduced cost non-negative and makes the
path's zero, and the path carries as many units as its arcs, its start and
its end allow. Every step keeps the residual graph non-negative, so the
result is optimal on the grown lists, exactly, in integers. The loop is
compiled with Numba (extra ``fast``); without it, or where the searches
would relax more arcs than a fresh solve costs, the caller solves afresh.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._flow import COST_LIMIT
from ._kernels import _compiled_loop

#: Arcs the repair's searches may relax per listed pair before a fresh solve is
#: cheaper: a solve costs about a microsecond per pair, the compiled searches about
#: 45 ns per arc (the elephants' lists at one use, 4.4 million pairs).
ARCS_PER_PAIR = 20
#: Arcs a path is expected to cost before any repair has said: on the elephants'
#: lists, 36,000 (63 units to move) to 244,000 (647 units).
FIRST_ARCS_PER_PATH = 1 << 17


def repair_kinds(kind: np.ndarray, tile: np.ndarray, distance: np.ndarray,
                 units: np.ndarray, price: np.ndarray, cost: np.ndarray,
                 supply: np.ndarray, limit: np.ndarray, outside: np.ndarray, cap: int,
                 tile_count: int, budget: int | None = None, work: np.ndarray | None = None,
                 compiled: bool = True, outside_units: np.ndarray | None = None,
                 ) -> tuple[np.ndarray, np.ndarray] | None:
    """The kinds' optimal flow on grown lists, from the last optimum.

    Parameters
    ----------
    kind, tile, distance : numpy.ndarray
        Every listed pair (int64); the pairs of the last optimum first.
    units : numpy.ndarray
        Units on each pair of the last optimum (a prefix of the pairs).
    price, cost : numpy.ndarray
        ``(tile_count,)`` tile prices and ``(kinds,)`` kind costs proving it
        optimal (:func:`._groups.least_prices`; a kind with units outside
        costs its outside column then).
    supply, limit : numpy.ndarray
        ``(kinds,)`` units each kind sends, and most on each of its pairs.
    outside : numpy.ndarray
        ``(kinds,)`` outside column costs now.
    cap : int
        Most units a tile passes.
    tile_count : int
        Tiles in the library.
    budget : int, optional
        Most arcs the searches may relax (default :data:`ARCS_PER_PAIR` per
        pair): past it, None.
    work : numpy.ndarray, optional
        ``(2,)`` int64: the paths and arcs of an earlier repair of similar
        lists, which receives this one's. A repair whose units to move would
        cost more than ``budget`` at that rate (at first
        :data:`FIRST_ARCS_PER_PATH`) is not started.
    compiled : bool
        Run the loop compiled (False: as Python, for small tests).
    outside_units : numpy.ndarray, optional
        ``(kinds,)`` units each kind sent through its outside column in the
        last optimum (default none): they are moved too, as excesses at
        their kinds missing at the sink.

    Returns
    -------
    tuple of numpy.ndarray or None
        ``(len(kind),)`` units on every pair and ``(kinds,)`` units through
        each outside column (the caller's rounds list more tiles for those),
        as :func:`._assign.flow_units` returns them; None where the numbers
        could overflow, there is no compiler, or the budget ran out.
    """
    count = len(supply)
    pairs = len(kind)
    kind = np.asarray(kind, np.int64)
    tile = np.asarray(tile, np.int64)
    distance = np.asarray(distance, np.int64)
    outside = np.asarray(outside, np.int64)
    largest = max(int(distance.max(initial=0)), int(outside.max(initial=0)),
                  int(cost.max(initial=0)), int(price.max(initial=0)))
    if largest >= COST_LIMIT or int(distance.min(initial=0)) < 0:
        return None
    loop = _compiled_loop(_repair_loop) if compiled else _repair_loop
    if loop is None:
        return None
    flow = np.zeros(pairs, np.int64)
    flow[:len(units)] = units
    edge_limit = np.asarray(limit, np.int64)[kind]
    total = distance + price[tile]
    breaking = (flow < edge_limit) & (total < cost[kind])
    broken_pairs = np.bincount(kind[breaking], minlength=count)
    # Kinds taken off their tiles: few units (as many as their breaking pairs could take),
    # or an outside column cheaper than their cost.
    removed = ((broken_pairs > 0) & (supply <= broken_pairs * limit)) | (outside < cost)
    balance = np.zeros(count + tile_count + 1, np.int64)
    sink = count + tile_count
    kind_potential = -cost.astype(np.int64)
    tile_potential = -price.astype(np.int64)
    off = removed[kind] & (flow > 0)
    lost = np.bincount(tile[off], flow[off], minlength=tile_count).astype(np.int64)
    load = np.bincount(tile, flow, minlength=tile_count).astype(np.int64)
    if (load > cap).any() or ((price > 0) & (load < cap)).any():
        return None  # not an optimum of this cap, or not its least prices
    flow[removed[kind]] = 0
    balance[:count][removed] = supply[removed]
    # Units outside leave the sink short; a kind that keeps its tiles has them to send.
    outside_before = (np.zeros(count, np.int64) if outside_units is None
                      else np.asarray(outside_units, np.int64))
    kept_outside = ~removed & (outside_before > 0)
    balance[:count][kept_outside] += outside_before[kept_outside]
    # A tile at price 0 gives its lost units up to the sink; one with a price stays full.
    free = price == 0
    sink_flow = load.copy()
    sink_flow[free] -= lost[free]
    balance[count:sink][~free] -= lost[~free]
    balance[sink] = -int(lost[free].sum()) - int(outside_before.sum())
    least = outside.copy()
    of_removed = removed[kind]
    np.minimum.at(least, kind[of_removed], total[of_removed])
    kind_potential[removed] = -least[removed]
    # The breaking pairs of the kinds that keep their units, filled to their limits.
    filled = np.flatnonzero(breaking & ~removed[kind])
    delta = edge_limit[filled] - flow[filled]
    flow[filled] = edge_limit[filled]
    np.subtract.at(balance, kind[filled], delta)
    np.add.at(balance, count + tile[filled], delta)
    if not balance.any():
        return flow, np.zeros(count, np.int64)
    budget = ARCS_PER_PAIR * max(pairs, 1) if budget is None else budget
    if work is None:
        work = np.zeros(2, np.int64)
    rate = int(work[1]) // int(work[0]) if work[0] > 0 else FIRST_ARCS_PER_PATH
    if int(balance[balance > 0].sum()) * rate > budget:
        return None
    excess = np.flatnonzero(balance > 0).astype(np.int64)
    # Pairs grouped by kind and by tile (the arcs out of each).
    by_kind = _grouped_order(kind, count)
    kind_starts = np.zeros(count + 1, np.int64)
    np.cumsum(np.bincount(kind, minlength=count), out=kind_starts[1:])
    by_tile = _grouped_order(tile, tile_count)
    tile_starts = np.zeros(tile_count + 1, np.int64)
    np.cumsum(np.bincount(tile, minlength=tile_count), out=tile_starts[1:])
    outside_flow = np.zeros(count, np.int64)
    loop(kind, tile, distance, flow, edge_limit, by_kind, kind_starts, by_tile, tile_starts,
         outside, outside_flow, sink_flow, np.int64(cap), kind_potential, tile_potential,
         balance, excess, np.int64(budget), work)
    if balance.any():
        return None
    return flow, outside_flow


def _grouped_order(keys: np.ndarray, count: int) -> np.ndarray:
    """The stable order of ``keys`` (each below ``count``), int64.

    Keys that fit 16 bits are sorted by NumPy's radix sort: the tiles of 7
    million listed pairs took 0.7 s in a merge sort, each repair, where a
    path or two was all the repair had to find.
    """
    if count <= 1 << 16:
        keys = keys.astype(np.uint16)
    return np.argsort(keys, kind="stable").astype(np.int64)


def _repair_loop(kind: Any, tile: Any, distance: Any, flow: Any, edge_limit: Any,
                 by_kind: Any, kind_starts: Any, by_tile: Any, tile_starts: Any,
                 outside: Any, outside_flow: Any, sink_flow: Any, cap: Any,
                 kind_potential: Any, tile_potential: Any, balance: Any, excess: Any,
                 budget: Any, work: Any) -> None:  # pragma: no cover - compiled
    """Successive shortest paths from each node of ``excess`` (see the module's notes).

    Nodes are kinds ``0..K-1``, tiles ``K..K+T-1``, the sink ``K+T``;
    ``balance`` is each node's excess (positive) or deficit (negative).
    ``work`` receives the paths sent and the arcs relaxed (where the
    searches pass ``budget`` arcs or find no deficit, the loop stops, and
    ``balance`` keeps an excess).
    """
    count = kind_starts.shape[0] - 1
    tile_count = tile_starts.shape[0] - 1
    sink = count + tile_count
    nodes = sink + 1
    infinity = np.int64(1) << np.int64(62)
    sink_potential = np.int64(0)
    distance_to = np.full(nodes, infinity, np.int64)
    settled = np.zeros(nodes, np.bool_)
    # How each node was reached: a tile by a pair forward (its number; -1: back from
    # the sink), a kind by a pair backward (-1: back from the sink through its outside
    # column), the sink from a tile (its number) or a kind's outside column (-1 - kind).
    parent = np.full(nodes, -1, np.int64)
    touched = np.empty(nodes, np.int64)
    heap_size = 2 * kind.shape[0] + 2 * nodes + 4
    heap_key = np.empty(heap_size, np.int64)
    heap_node = np.empty(heap_size, np.int64)
    widest = 0
    for node in range(count):
        widest = max(widest, kind_starts[node + 1] - kind_starts[node])
    for owner in range(tile_count):
        widest = max(widest, tile_starts[owner + 1] - tile_starts[owner])
    arc_size = widest + nodes + 2
    arc_node = np.empty(arc_size, np.int64)
    arc_key = np.empty(arc_size, np.int64)
    arc_mark = np.empty(arc_size, np.int64)
    relaxed = 0
    paths = 0
    for source in excess:
        while balance[source] > 0:
            if relaxed > budget:
                work[0] = paths + 1
                work[1] = relaxed
                return
            touched_count = 1
            touched[0] = source
            distance_to[source] = 0
            heap_key[0] = 0
            heap_node[0] = source
            size = 1
            end = -1
            length = np.int64(0)
            bound = infinity
            while size > 0:
                key = heap_key[0]
                node = heap_node[0]
                size -= 1
                last_key = heap_key[size]
                last_node = heap_node[size]
                at = 0
                while True:
                    child = 2 * at + 1
                    if child >= size:
                        break
                    if child + 1 < size and heap_key[child + 1] < heap_key[child]:
                        child += 1
                    if heap_key[child] >= last_key:
                        break
                    heap_key[at] = heap_key[child]
                    heap_node[at] = heap_node[child]
                    at = child
                heap_key[at] = last_key
                heap_node[at] = last_node
                if settled[node] or key > distance_to[node]:
                    continue
                settled[node] = True
                if balance[node] < 0:
                    end = node
                    length = key
                    break
                # The arcs out of the node: head, reduced length so far, parent mark.
                arcs = 0
                if node < count:
                    potential = kind_potential[node]
                    for slot in range(kind_starts[node], kind_starts[node + 1]):
                        pair = by_kind[slot]
                        if flow[pair] < edge_limit[pair]:
                            owner = tile[pair]
                            arc_node[arcs] = count + owner
                            arc_key[arcs] = (key + distance[pair] + potential
                                             - tile_potential[owner])
                            arc_mark[arcs] = pair
                            arcs += 1
                    arc_node[arcs] = sink
                    arc_key[arcs] = key + outside[node] + potential - sink_potential
                    arc_mark[arcs] = -1 - node
                    arcs += 1
                elif node < sink:
                    owner = node - count
                    potential = tile_potential[owner]
                    for slot in range(tile_starts[owner], tile_starts[owner + 1]):
                        pair = by_tile[slot]
                        if flow[pair] > 0:
                            target = kind[pair]
                            arc_node[arcs] = target
                            arc_key[arcs] = (key - distance[pair] + potential
                                             - kind_potential[target])
                            arc_mark[arcs] = pair
                            arcs += 1
                    if sink_flow[owner] < cap:
                        arc_node[arcs] = sink
                        arc_key[arcs] = key + potential - sink_potential
                        arc_mark[arcs] = owner
                        arcs += 1
                else:
                    # Back along a tile's arc to the sink, or a kind's outside column.
                    for owner in range(tile_count):
                        if sink_flow[owner] > 0:
                            arc_node[arcs] = count + owner
                            arc_key[arcs] = key + sink_potential - tile_potential[owner]
                            arc_mark[arcs] = -1
                            arcs += 1
                    for target in range(count):
                        if outside_flow[target] > 0:
                            arc_node[arcs] = target
                            arc_key[arcs] = (key - outside[target] + sink_potential
                                             - kind_potential[target])
                            arc_mark[arcs] = -1
                            arcs += 1
                relaxed += arcs
                for arc in range(arcs):
                    target = arc_node[arc]
                    candidate = arc_key[arc]
                    # Nothing at or past a path already found to a deficit ends a shorter one.
                    # (A settled node never improves while the reduced costs are
                    # non-negative; skipped, the paths stay a tree whatever they are.)
                    if settled[target] or candidate >= distance_to[target] or candidate >= bound:
                        continue
                    if balance[target] < 0:
                        bound = candidate
                    if distance_to[target] == infinity:
                        touched[touched_count] = target
                        touched_count += 1
                    distance_to[target] = candidate
                    parent[target] = arc_mark[arc]
                    at = size
                    size += 1
                    while at > 0 and heap_key[(at - 1) // 2] > candidate:
                        heap_key[at] = heap_key[(at - 1) // 2]
                        heap_node[at] = heap_node[(at - 1) // 2]
                        at = (at - 1) // 2
                    heap_key[at] = candidate
                    heap_node[at] = target
            if end < 0:
                work[0] = paths + 1
                work[1] = relaxed
                return
            # Potentials: every node settled below the path's length moves by d - D.
            for index in range(touched_count):
                node = touched[index]
                if settled[node] and distance_to[node] < length:
                    if node < count:
                        kind_potential[node] += distance_to[node] - length
                    elif node < sink:
                        tile_potential[node - count] += distance_to[node] - length
                    else:
                        sink_potential += distance_to[node] - length
            # As many units as the path's arcs, its start and its end allow.
            amount = min(balance[source], -balance[end])
            node = end
            while node != source:
                mark = parent[node]
                if node < count:
                    if mark >= 0:
                        amount = min(amount, flow[mark])
                        node = count + tile[mark]
                    else:
                        amount = min(amount, outside_flow[node])
                        node = sink
                elif node < sink:
                    if mark >= 0:
                        amount = min(amount, edge_limit[mark] - flow[mark])
                        node = kind[mark]
                    else:
                        amount = min(amount, sink_flow[node - count])
                        node = sink
                else:
                    if mark >= 0:
                        amount = min(amount, cap - sink_flow[mark])
                        node = count + mark
                    else:
                        node = -1 - mark
            node = end
            while node != source:
                mark = parent[node]
                if node < count:
                    if mark >= 0:
                        flow[mark] -= amount
                        node = count + tile[mark]
                    else:
                        outside_flow[node] -= amount
                        node = sink
                elif node < sink:
                    if mark >= 0:
                        flow[mark] += amount
                        node = kind[mark]
                    else:
                        sink_flow[node - count] -= amount
                        node = sink
                else:
                    if mark >= 0:
                        sink_flow[mark] += amount
                        node = count + mark
                    else:
                        outside_flow[-1 - mark] += amount
                        node = -1 - mark
            balance[source] -= amount
            balance[end] += amount
            paths += 1
            for index in range(touched_count):
                node = touched[index]
                distance_to[node] = infinity
                settled[node] = False
                parent[node] = -1
    work[0] = paths
    work[1] = relaxed
