"""Repairing an optimal capacitated assignment after its graph grew.

The certified pricing rounds (:mod:`._assign`) solve the same capacitated
assignment again and again, each time with a few more edges: a round's
searches add the tiles that beat some cells' costs at the last prices. The
solution before is optimal for the graph before, and the prices prove it;
solving from scratch throws that away. This module repairs it instead.

The problem is a min-cost flow: one unit leaves each cell ``i``, through an
edge to a tile ``j`` (cost ``c_ij``) or through the cell's outside column
straight to the sink ``t`` (cost ``o_i``); a tile passes at most ``cap``
units to ``t``. With node potentials ``pi``, an arc ``a -> b`` of cost
``c`` has the reduced cost ``c + pi(a) - pi(b)``, and a flow is optimal when
every arc with room left (the residual graph: unused edges forward, used
ones backward) has a non-negative reduced cost. The tile prices ``p`` and
cell costs ``u = min_j (c_ij + p_j)`` of the last round are such potentials:
``pi(i) = -u_i``, ``pi(j) = -p_j``, ``pi(t) = 0``.

**Repair.** A new edge whose reduced cost ``c_ij + p_j - u_i`` is negative
breaks the proof for its cell only. Every such cell (and every cell whose
outside column changed under it) is taken off its tile, its potential is
reset to its least price-adjusted cost (so that all its arcs are
non-negative again, as no arc enters a cell without a unit), and the unit
it sent is now missing where it arrived: at a tile with a price (whose arc
to the sink stays saturated, so that its negative reduced cost never enters
the residual graph) or at the sink. Each removed cell is then an excess,
each such place a deficit, and successive shortest paths (Dijkstra on the
reduced costs, potentials updated after each path as
``pi(v) += d(v) - D`` for the nodes settled below the path's length ``D``)
send every excess to a deficit at least cost. Every step keeps the
residual graph non-negative, so the result is optimal on the new graph,
exactly, in integers.

A search stops at the first deficit it settles, and the cell's own
outside column always offers a path (to the sink, and from there to any
deficit), so it explores only what is cheaper; in the late rounds, where a
few hundred cells found a tile, the repair costs milliseconds where a
fresh solve of millions of arcs costs a second or more. The loops are
compiled with Numba (extra ``fast``); without it the callers solve from
scratch.

**A minimum of uses.** With ``min_uses = K`` the pricing rounds price each
use of a tile past its first ``K`` at a surcharge ``S``
(:func:`._assign.tile_prices`): the tile's arc to the sink is two, ``K``
units at cost 0 and ``cap - K`` at ``S``, a convex cost in its flow ``f``.
The repair keeps one arc of it, whose cost is the next unit's: ``0`` while
``f < K``, ``S`` past it, and backward the last unit's (``-S`` while ``f >
K``, else ``0``). A path through it moves ``f`` by one, the costs stay
convex, so the reduced cost of the unit just sent is zero backward and the
next unit's non-negative forward: the proof carries over unchanged. The
price ``q`` of a tile then says which of its units a removed cell may take
with it: those at the reduced cost zero (``f > K`` at ``q = S``, any at ``q
= 0``); the others stay and the tile becomes a deficit, as a full tile with
a price does without a minimum. Without a minimum, ``K = S = 0``.

**Prices.** :func:`least_prices` finds the least tile prices that prove a
placement optimal (see :func:`._assign.tile_prices`) with a compiled
label-correcting loop, where the NumPy version works in rounds over every
changed cell's edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._kernels import _compiled_loop, numba_available

#: Costs, prices and outside columns past which a repair could overflow int64
#: (a reduced cost adds three of them): the caller solves from scratch instead.
COST_LIMIT = 1 << 60


@dataclass
class FlowState:
    """An optimal assignment on a graph, and the prices that prove it.

    Attributes
    ----------
    tile : numpy.ndarray
        ``(N,)`` library position of each cell's tile, ``-1`` for its outside column.
    cost : numpy.ndarray
        ``(N,)`` int64 price-adjusted cost ``u_i`` of each cell.
    price : numpy.ndarray
        ``(M,)`` int64 price of every library tile (0 for those not full).
    outside : numpy.ndarray
        ``(N,)`` int64 outside column costs of that graph.
    """

    tile: np.ndarray
    cost: np.ndarray
    price: np.ndarray
    outside: np.ndarray


def can_repair() -> bool:
    """Whether repairs run here (they need the compiled loops)."""
    return numba_available()


def repair(
    state: FlowState,
    row: np.ndarray,
    tile: np.ndarray,
    tiles: np.ndarray,
    tile_id: np.ndarray,
    dist: np.ndarray,
    length: np.ndarray,
    outside: np.ndarray,
    cap: int,
    budget: int = 1 << 62,
    most_cells: int | None = None,
    work: np.ndarray | None = None,
    compiled: bool = True,
    minimum: int = 0,
    surcharge: int = 0,
) -> np.ndarray | None:
    """The optimal assignment on grown edges, from ``state`` (optimal on a subset).

    Parameters
    ----------
    state : FlowState
        The last optimum, its prices and its outside costs. Its edges must
        all be among the new ones.
    row, tile, dist, length
        The edges (grouped by cell; ``tile`` library positions; int64
        ``dist``) and each cell's count, as :class:`._assign._Edges` holds them.
    tiles, tile_id
        The distinct tiles of ``tile`` and each edge's number among them.
    outside : numpy.ndarray
        ``(N,)`` int64 outside column costs now.
    cap : int
        Most cells per tile.
    budget : int
        Most arcs the shortest-path searches may relax: past it the repair
        stops and returns None (a fresh solve would be cheaper).
    most_cells : int, optional
        Most cells to move: with more, None at once (each costs a
        shortest-path search, and where most cells move a fresh solve is
        cheaper).
    work : numpy.ndarray, optional
        ``(2,)`` int64: receives the searches made and the arcs they relaxed.
        Given with the figures of an earlier repair, a repair that would
        cost more than ``budget`` at that rate is not started.
    compiled : bool
        Run the loops compiled (False: as Python, for small tests).
    minimum, surcharge : int
        Uses of a tile past its first ``minimum`` pay ``surcharge`` each
        (see the module's notes); ``state.price`` is then the price ``q``
        of :func:`._assign.tile_prices` with that minimum and surcharge.

    Returns
    -------
    numpy.ndarray or None
        ``(N,)`` position of each cell's edge in ``row``, ``-1`` outside; None
        where the numbers could overflow or the budget ran out (the caller
        then solves from scratch).
    """
    count = len(length)
    most_cells = count if most_cells is None else most_cells
    dist = np.asarray(dist, np.int64)
    outside = np.asarray(outside, np.int64)
    if not minimum:
        surcharge = 0
    largest = max(int(dist.max(initial=0)), int(outside.max(initial=0)),
                  int(state.cost.max(initial=0)), int(state.price.max(initial=0)),
                  int(surcharge))
    if largest >= COST_LIMIT or int(dist.min(initial=0)) < 0 or not len(tiles):
        return None
    free = min(minimum, cap)
    price = state.price[tiles]
    placed = state.tile >= 0
    # Each placed cell's edge to its tile in the new graph.
    assigned = np.full(count, -1, np.int64)
    same = np.flatnonzero(tile == state.tile[row])
    assigned[row[same]] = same
    # Cells whose proof broke: a new edge beats their cost, their outside column
    # moved while they used it or got cheaper than their cost, or their edge is gone.
    total = dist + price[tile_id]
    broken = np.zeros(count, bool)
    broken[row[total < state.cost[row]]] = True
    broken |= ~placed & (outside != state.outside)
    broken |= outside < state.cost
    broken |= placed & (assigned < 0)
    excess = np.flatnonzero(broken)
    if work is None:
        work = np.zeros(2, np.int64)
    if len(excess) > most_cells or (work[0] and len(excess) * work[1] > budget * work[0]):
        return None  # at the last repair's rate, these searches would cost more
    loop = _compiled_loop(_repair_loop) if compiled else _repair_loop
    if loop is None:
        return None
    starts = np.zeros(count + 1, np.int64)
    np.cumsum(length, out=starts[1:])
    cell_potential = -state.cost.astype(np.int64)
    least = outside.copy()
    nonempty = length > 0
    least[nonempty] = np.minimum(least[nonempty],
                                 np.minimum.reduceat(total, starts[:-1][nonempty]))
    cell_potential[broken] = -least[broken]
    tile_potential = -price.astype(np.int64)
    choice = np.where(placed, assigned, -1)
    choice[broken] = -2
    # Each placed cell's tile among ``tiles`` (-1 where no edge lists it any more).
    had = np.minimum(np.searchsorted(tiles, state.tile), len(tiles) - 1)
    had = np.where(placed & (tiles[had] == state.tile), had, -1)
    # What a removed cell sent is now missing at its tile where the unit's arc to the
    # sink has a negative reduced cost (it stays full), else at the sink: a tile at
    # the price of its last unit's cost gives up its units past its minimum (without
    # one, all of them at price 0), one at any other price none.
    load = np.bincount(had[(had >= 0) & ~broken], minlength=len(tiles)).astype(np.int64)
    removed = np.bincount(had[broken & (had >= 0)], minlength=len(tiles)).astype(np.int64)
    flow = load + removed
    if (flow > cap).any():
        return None  # not an optimum of this cap
    given_up = np.where(price == 0, flow, 0)
    if surcharge:
        given_up = np.where(price == surcharge, np.maximum(flow - free, 0), given_up)
    given_up = np.minimum(given_up, removed)
    sink_flow = flow - given_up
    sink_deficit = int(broken.sum()) - (int(removed.sum()) - int(given_up.sum()))
    loop(starts, tile_id, dist, outside, np.int64(cap), choice, cell_potential,
         tile_potential, load, sink_flow, np.int64(sink_deficit), excess, np.int64(budget),
         work, np.int64(free), np.int64(surcharge))
    return choice if work[0] == len(excess) else None


def least_prices(
    length: np.ndarray, tile_id: np.ndarray, dist: np.ndarray, assigned: np.ndarray,
    paid: np.ndarray, tile_count: int, compiled: bool = True,
    floor: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray] | None:
    """The least tile prices that meet every edge's bound, by a compiled label-correcting loop.

    The prices of :func:`._assign.tile_prices`: each tile ``j`` must cost
    every cell listing it at least ``u_i - c_ij``, where ``u_i`` is what the
    cell pays (``paid``) plus its own tile's price. Cells whose cost rose
    go on a queue, and each raises the prices of its listed tiles, which
    raise their cells' costs in turn: the least solution, as the NumPy
    rounds find it, in time proportional to the raises rather than to
    rounds over the edges of every changed cell.

    Parameters
    ----------
    length : numpy.ndarray
        ``(N,)`` edges of each cell (edges grouped by cell).
    tile_id, dist : numpy.ndarray
        Each edge's tile (``0..tile_count-1``) and int64 distance.
    assigned : numpy.ndarray
        ``(N,)`` each cell's tile, ``-1`` outside.
    paid : numpy.ndarray
        ``(N,)`` int64 distance each cell pays (its outside column's cost outside).
    tile_count : int
        Tiles.
    compiled : bool
        Run the loop compiled (False: as Python, for small tests).
    floor : numpy.ndarray, optional
        ``(tile_count,)`` int64 least price of each tile (zeros where not given):
        the prices are the least solution at or above it.

    Returns
    -------
    (prices, cost) or None
        The prices (None where the raises never end: a cycle of moves that
        lowers the cost, so the placement is not optimal) and each cell's
        cost; None without Numba.
    """
    loop = _compiled_loop(_prices_loop) if compiled else _prices_loop
    if loop is None:
        return None
    starts = np.zeros(len(length) + 1, np.int64)
    np.cumsum(length, out=starts[1:])
    prices = (np.zeros(tile_count, np.int64) if floor is None
              else np.asarray(floor, np.int64).copy())
    cost = np.asarray(paid, np.int64).copy()
    if floor is not None:
        inside = assigned >= 0
        cost[inside] += prices[assigned[inside]]
    finished = loop(starts, np.asarray(tile_id, np.int64), np.asarray(dist, np.int64),
                    np.asarray(assigned, np.int64), np.asarray(paid, np.int64), prices, cost)
    return (prices if finished else None), cost


def _prices_loop(starts: Any, tile_id: Any, dist: Any, assigned: Any, paid: Any,
                 prices: Any, cost: Any) -> bool:  # pragma: no cover - runs compiled
    """Raise ``prices`` and ``cost`` to their least solution; False on a cycle."""
    count = paid.shape[0]
    tile_count = prices.shape[0]
    # Cells on each tile (compressed rows), to raise their costs with its price.
    on_tile = np.zeros(tile_count + 1, np.int64)
    for cell in range(count):
        if assigned[cell] >= 0:
            on_tile[assigned[cell] + 1] += 1
    for tile in range(tile_count):
        on_tile[tile + 1] += on_tile[tile]
    members = np.empty(on_tile[tile_count], np.int64)
    fill = on_tile[:-1].copy()
    for cell in range(count):
        if assigned[cell] >= 0:
            members[fill[assigned[cell]]] = cell
            fill[assigned[cell]] += 1
    # A ring of the cells whose cost rose: each at most once in it at a time.
    ring = np.arange(count).astype(np.int64)
    queued = np.ones(count, np.bool_)
    raised = np.zeros(count, np.int64)
    head = 0
    size = count
    while size > 0:
        cell = ring[head]
        head = (head + 1) % count
        size -= 1
        queued[cell] = False
        for edge in range(starts[cell], starts[cell + 1]):
            tile = tile_id[edge]
            bound = cost[cell] - dist[edge]
            if bound <= prices[tile]:
                continue
            prices[tile] = bound
            for index in range(on_tile[tile], on_tile[tile + 1]):
                member = members[index]
                if paid[member] + bound > cost[member]:
                    cost[member] = paid[member] + bound
                    if not queued[member]:
                        # Raised more often than there are tiles: the raises go round.
                        raised[member] += 1
                        if raised[member] > tile_count + 2:
                            return False
                        queued[member] = True
                        ring[(head + size) % count] = member
                        size += 1
    return True


def _repair_loop(starts: Any, edge_tile: Any, edge_cost: Any, outside: Any, cap: Any,
                 choice: Any, cell_potential: Any, tile_potential: Any, load: Any,
                 sink_flow: Any, sink_deficit: Any, excess: Any, budget: Any,
                 work: Any, free: Any, surcharge: Any) -> None:  # pragma: no cover - compiled
    """Successive shortest paths from each cell of ``excess`` (see the module's notes).

    Nodes are numbered cells ``0..N-1``, tiles ``N..N+T-1``, the sink
    ``N+T``; ``choice`` is each cell's edge, ``-1`` outside, ``-2`` none yet.
    A tile's unit to the sink costs ``surcharge`` past its first ``free``.
    ``work`` receives the searches made and the arcs they relaxed; past
    ``budget`` arcs the loop stops (the state is then of no use).
    """
    count = starts.shape[0] - 1
    tile_count = load.shape[0]
    sink = count + tile_count
    nodes = sink + 1
    infinity = np.int64(1) << np.int64(62)
    edge_row = np.empty(edge_tile.shape[0], np.int64)
    widest = 0
    for cell in range(count):
        widest = max(widest, starts[cell + 1] - starts[cell])
        for edge in range(starts[cell], starts[cell + 1]):
            edge_row[edge] = cell
    # Cells on each tile, as linked lists; cells on their outside columns, in a flag.
    head = np.full(tile_count, -1, np.int64)
    after = np.full(count, -1, np.int64)
    before = np.full(count, -1, np.int64)
    on_outside = np.zeros(count, np.bool_)
    for cell in range(count):
        edge = choice[cell]
        if edge >= 0:
            owner = edge_tile[edge]
            after[cell] = head[owner]
            if head[owner] >= 0:
                before[head[owner]] = cell
            head[owner] = cell
        elif edge == -1:
            on_outside[cell] = True
    sink_potential = np.int64(0)
    distance = np.full(nodes, infinity, np.int64)
    settled = np.zeros(nodes, np.bool_)
    # How each node was reached: a cell from a tile (its number; -1: from the sink,
    # back through its outside column); a tile by an edge (-1: back from the sink);
    # the sink from a tile (its number) or through a cell's outside column (-1 - cell).
    parent = np.full(nodes, -1, np.int64)
    touched = np.empty(nodes, np.int64)
    # Lazy deletion: each arc is relaxed at most once per search, one entry each.
    heap_size = edge_tile.shape[0] + 3 * count + 2 * tile_count + 4
    heap_key = np.empty(heap_size, np.int64)
    heap_node = np.empty(heap_size, np.int64)
    # The arcs out of the node being settled: head, reduced length so far, parent mark.
    arc_size = widest + count + tile_count + 2
    arc_node = np.empty(arc_size, np.int64)
    arc_key = np.empty(arc_size, np.int64)
    arc_mark = np.empty(arc_size, np.int64)
    relaxed = 0
    for searches in range(excess.shape[0]):
        work[0] = searches
        work[1] = relaxed
        if relaxed > budget:
            return
        source = excess[searches]
        touched_count = 1
        touched[0] = source
        distance[source] = 0
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
            if settled[node] or key > distance[node]:
                continue
            settled[node] = True
            if (node == sink and sink_deficit > 0) or (
                    count <= node < sink and sink_flow[node - count] > load[node - count]):
                end = node
                length = key
                break
            # Settled nodes never improve (reduced costs are non-negative), so their
            # arcs need no test here.
            arcs = 0
            if node < count:
                own = choice[node]
                for edge in range(starts[node], starts[node + 1]):
                    if edge != own:
                        owner = edge_tile[edge]
                        arc_node[arcs] = count + owner
                        arc_key[arcs] = (key + edge_cost[edge] + cell_potential[node]
                                         - tile_potential[owner])
                        arc_mark[arcs] = edge
                        arcs += 1
                if own != -1:
                    arc_node[arcs] = sink
                    arc_key[arcs] = key + outside[node] + cell_potential[node] - sink_potential
                    arc_mark[arcs] = -1 - node
                    arcs += 1
            elif node < sink:
                owner = node - count
                member = head[owner]
                while member >= 0:
                    arc_node[arcs] = member
                    arc_key[arcs] = (key - edge_cost[choice[member]] + tile_potential[owner]
                                     - cell_potential[member])
                    arc_mark[arcs] = owner
                    arcs += 1
                    member = after[member]
                if sink_flow[owner] < cap:
                    arc_node[arcs] = sink
                    arc_key[arcs] = key + tile_potential[owner] - sink_potential
                    if sink_flow[owner] >= free:
                        arc_key[arcs] += surcharge
                    arc_mark[arcs] = owner
                    arcs += 1
            else:
                # Back along a tile's arc to the sink, or a cell's outside column.
                for owner in range(tile_count):
                    if sink_flow[owner] > 0:
                        arc_node[arcs] = count + owner
                        arc_key[arcs] = key + sink_potential - tile_potential[owner]
                        if sink_flow[owner] > free:
                            arc_key[arcs] -= surcharge
                        arc_mark[arcs] = -1
                        arcs += 1
                for cell in range(count):
                    if on_outside[cell]:
                        arc_node[arcs] = cell
                        arc_key[arcs] = key - outside[cell] + sink_potential \
                            - cell_potential[cell]
                        arc_mark[arcs] = -1
                        arcs += 1
            relaxed += arcs
            for arc in range(arcs):
                target = arc_node[arc]
                candidate = arc_key[arc]
                # Nothing at or past a path already found to a deficit can end a shorter one.
                if candidate >= distance[target] or candidate >= bound:
                    continue
                if (target == sink and sink_deficit > 0) or (
                        count <= target < sink
                        and sink_flow[target - count] > load[target - count]):
                    bound = candidate
                if distance[target] == infinity:
                    touched[touched_count] = target
                    touched_count += 1
                distance[target] = candidate
                parent[target] = arc_mark[arc]
                at = size
                size += 1
                while at > 0 and heap_key[(at - 1) // 2] > candidate:
                    heap_key[at] = heap_key[(at - 1) // 2]
                    heap_node[at] = heap_node[(at - 1) // 2]
                    at = (at - 1) // 2
                heap_key[at] = candidate
                heap_node[at] = target
        # Potentials: every node settled below the path's length moves by d - D, which
        # keeps all reduced costs non-negative and makes the path's zero.
        for index in range(touched_count):
            node = touched[index]
            if settled[node] and distance[node] < length:
                if node < count:
                    cell_potential[node] += distance[node] - length
                elif node < sink:
                    tile_potential[node - count] += distance[node] - length
                else:
                    sink_potential += distance[node] - length
        # Send the unit along the path, from its end back to the source: each cell on
        # it moves to the edge it was reached by (or to its outside column).
        if end == sink:
            sink_deficit -= 1
        node = end
        while node != source:
            if node < count:
                node = count + parent[node] if parent[node] >= 0 else sink
                continue
            if node == sink:
                mark = parent[sink]
                if mark >= 0:
                    sink_flow[mark] += 1
                    node = count + mark
                    continue
                moving, edge = -1 - mark, -1
            else:
                edge = parent[node]
                if edge < 0:
                    sink_flow[node - count] -= 1
                    node = sink
                    continue
                moving = edge_row[edge]
            old = choice[moving]
            if old >= 0:
                owner = edge_tile[old]
                load[owner] -= 1
                if before[moving] >= 0:
                    after[before[moving]] = after[moving]
                else:
                    head[owner] = after[moving]
                if after[moving] >= 0:
                    before[after[moving]] = before[moving]
            elif old == -1:
                on_outside[moving] = False
            choice[moving] = edge
            if edge >= 0:
                owner = edge_tile[edge]
                load[owner] += 1
                after[moving] = head[owner]
                before[moving] = -1
                if head[owner] >= 0:
                    before[head[owner]] = moving
                head[owner] = moving
            else:
                on_outside[moving] = True
            node = moving
        for index in range(touched_count):
            node = touched[index]
            distance[node] = infinity
            settled[node] = False
            parent[node] = -1
    work[0] = excess.shape[0]
    work[1] = relaxed
