"""Local search on a spaced placement: single moves and pair swaps that keep every limit.

The spacing rounds (:meth:`._assign._Solver._space`) and their greedy
fallback end on a placement that keeps the use cap, the spacing and any
minimum uses, but not on an optimum of the spaced problem (which is hard:
the spacing makes it a quadratic assignment). This pass lowers its cost
without breaking a limit, over the edges the cells list:

* **Move.** Cell ``i`` leaves its tile ``a`` for a listed tile ``b`` with
  ``c_ib < c_ia``, where ``b`` has a use to spare, no cell holding ``b``
  lies within the spacing of ``i``, and ``a`` keeps its minimum uses.
* **Swap.** Cells ``i`` (on ``a``) and ``j`` (on ``b``) exchange tiles where
  both pairs are listed and ``(c_ia + c_jb) - (c_ib + c_ja) > 0``; no use
  count changes (caps and minimums hold), and the spacing is checked for
  ``i`` on ``b`` among ``b``'s other cells and for ``j`` on ``a`` among
  ``a``'s. Moves alone miss these: where every tile is full (a grid that
  needs the library's uses), no cell can move alone.

Each pass visits every cell once and takes, for it, the first improving
move among its tiles cheaper than its own (best first), else the first
improving swap; passes repeat while anything moved, at most ``passes``
times, and every step lowers the objective, so it ends. Spacing is
Chebyshev distance between cell positions: ``(row, col)`` with threshold
``D`` on a grid, cell centres with ``D`` grid cells in their units for
adaptive layouts (:class:`._assign.Layout`).

**Work.** A swap's partners are the cells of a tile: hundreds where a few
photos fill a large grid (100 photos on 20,000 cells, each swap tried on
every pair took 46 s after a 2 s match). Each cell tries at most
:data:`PARTNERS_PER_PASS` partners per pass (more on small grids, up to
:data:`PARTNER_CHECKS` per pass in all), a spacing check reads the tile's
cells or, on a grid where they are more, the ``(2D - 1)^2`` cells around,
and the whole polish stops after :data:`BUDGET` steps, or sooner where a
stretch of :data:`STRETCH` steps lowered the objective by less than
:data:`LEAST_GAIN` of it: it is a polish, and stopping early keeps every
limit and the gains so far. The budgets
count steps, not seconds, and are the same compiled (where Numba is,
:mod:`._kernels`) and as Python, so a placement is the same on every
machine, with or without Numba; only the time differs.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ._kernels import _compiled_loop, _numba, compiled_loops_allowed

#: Passes over every cell at most.
PASSES = 8
#: Swap partners each cell tries per pass at least, and all cells together at most
#: (more per cell on grids of fewer cells).
PARTNERS_PER_PASS = 32
PARTNER_CHECKS = 20_000_000
#: Steps (partners tried, cells read by spacing checks) of the whole polish at most: the
#: same compiled and as Python, so that a placement does not depend on Numba (as
#: Python, the most a polish takes is then about a minute, on grids whose capped
#: assignment without Numba takes many minutes; compiled, a fifth of a second).
BUDGET = 40_000_000
#: Steps after which the polish stops where they lowered the objective by less than
#: :data:`LEAST_GAIN` of it: 400 photos on 31,212 cells spent the whole budget (16-25 s)
#: for 0.017%, 0.003% of it in the first million steps.
STRETCH = 2_000_000
LEAST_GAIN = 1e-5
#: Most cell-tile pairs whose edges are looked up in a table (8 bytes each) rather than
#: by binary search.
DENSE_PAIRS = 1 << 23


def polish(
    choice: np.ndarray, bounds: np.ndarray, edge_tile: np.ndarray, edge_dist: np.ndarray,
    position: np.ndarray, apart: float, cap: int, minimum: int = 0, passes: int | None = None,
    grid: tuple[int, int] | None = None,
) -> tuple[np.ndarray, int]:
    """Lower a placement's cost by moves and swaps that keep every limit (see the module).

    Parameters
    ----------
    choice : numpy.ndarray
        ``(N,)`` each cell's edge: a placement that keeps the limits.
    bounds : numpy.ndarray
        ``(N + 1,)`` the edges of cell ``i`` are ``bounds[i]:bounds[i + 1]``,
        by ascending distance.
    edge_tile, edge_dist : numpy.ndarray
        ``(E,)`` each edge's tile and distance (integers or floats).
    position : numpy.ndarray
        ``(N, 2)`` each cell's position (row and column, or centre).
    apart : float
        Two cells closer than this on both axes may not hold one tile.
    cap : int
        Most cells one tile may fill.
    minimum : int
        Fewest cells a tile must fill (moves never take a tile below it).
    passes : int, optional
        Passes over every cell at most (default :data:`PASSES`).
    grid : tuple of int, optional
        ``(rows, cols)`` where the cells are a grid in row-major order and
        ``position`` their rows and columns (spacing checks may then read
        the cells around instead of a tile's cells).

    Returns
    -------
    tuple
        The new ``choice`` and the number of moves and swaps made.
    """
    count = len(choice)
    passes = PASSES if passes is None else passes
    choice = np.array(choice, np.int64)
    if count < 2 or len(edge_tile) == 0:
        return choice, 0
    edge_tile = np.ascontiguousarray(edge_tile, np.int64)
    tile_count = int(edge_tile.max()) + 1
    held = edge_tile[choice]
    uses = np.bincount(held, minlength=tile_count).astype(np.int64)
    # The cells of each tile as doubly linked lists.
    first = np.full(tile_count, -1, np.int64)
    following = np.full(count, -1, np.int64)
    preceding = np.full(count, -1, np.int64)
    order = np.argsort(held, kind="stable")
    same = held[order[1:]] == held[order[:-1]]
    following[order[:-1][same]] = order[1:][same]
    preceding[order[1:][same]] = order[:-1][same]
    starts = np.flatnonzero(np.r_[True, ~same])
    first[held[order[starts]]] = order[starts]
    # Edge of each (cell, tile) pair: read from a table where it is small, else found
    # by binary search on cell * tiles + tile, among the cell's own keys.
    edge_cell = np.repeat(np.arange(count, dtype=np.int64), np.diff(bounds))
    keys = edge_cell * tile_count + edge_tile
    if count * tile_count <= DENSE_PAIRS:
        table = np.full(count * tile_count, -1, np.int64)
        table[keys] = np.arange(len(keys), dtype=np.int64)
        keys, key_order = np.zeros(0, np.int64), np.zeros(0, np.int64)
    else:
        table = np.zeros(0, np.int64)
        key_order = np.argsort(keys, kind="stable")
        keys = keys[key_order]
    rows, cols = grid if grid is not None else (0, 0)
    arguments = (np.ascontiguousarray(bounds, np.int64), edge_tile,
                 np.ascontiguousarray(edge_dist), choice, held,
                 np.ascontiguousarray(position[:, 0], np.float64),
                 np.ascontiguousarray(position[:, 1], np.float64), float(apart), int(rows),
                 int(cols), int(cap), int(minimum), uses, first, following, preceding,
                 table, keys, key_order.astype(np.int64), tile_count, int(passes),
                 max(PARTNERS_PER_PASS, PARTNER_CHECKS // count), BUDGET, STRETCH,
                 LEAST_GAIN * float(np.asarray(edge_dist)[choice].sum()))
    loop: Any = _compiled_loop(_polish_loop) if compiled_loops_allowed() else None
    if loop is not None:
        try:
            return choice, int(loop(*arguments))
        except _numba().core.errors.NumbaError as error:
            # Raised while typing, before the loop ran: the arrays are untouched.
            warnings.warn(f"Numba could not compile the polish's loop ({error}); "
                          "running it as Python", RuntimeWarning, stacklevel=2)
    return choice, int(_polish_loop(*arguments))


def _polish_loop(bounds: Any, edge_tile: Any, edge_dist: Any, choice: Any, held: Any, y: Any,
                 x: Any, apart: float, rows: int, cols: int, cap: int, minimum: int, uses: Any,
                 first: Any, following: Any, preceding: Any, table: Any, keys: Any,
                 key_edge: Any,
                 tile_count: int, passes: int, partners: int,
                 budget: int, stretch: int, least_gain: float,
                 ) -> int:  # pragma: no cover - runs compiled
    count = choice.shape[0]
    reach = int(apart) - 1
    window = (2 * reach + 1) * (2 * reach + 1)
    made = 0
    spent = 0
    gained = 0.0
    checked = stretch
    for _ in range(passes):
        moved = 0
        for cell in range(count):
            if spent > budget:
                return made + moved
            if spent >= checked:
                # A stretch of steps that gained less than the least worth its time: the
                # rest of the budget would gain still less (moves get rarer as it runs).
                if gained < least_gain:
                    return made + moved
                gained = 0.0
                checked = spent + stretch
            own = choice[cell]
            old = edge_tile[own]
            tried = 0
            # Moves (a cheaper tile with a use to spare), then swaps (with a cell of a
            # cheaper tile, which lists this cell's tile), the first that gains.
            for kind in range(2):
                if kind == 0 and minimum > 0 and uses[old] <= minimum:
                    continue
                for edge in range(bounds[cell], own):
                    tile = edge_tile[edge]
                    if edge_dist[edge] >= edge_dist[own] or tile == old:
                        continue
                    if kind == 0 and uses[tile] >= cap:
                        continue
                    partner = first[tile] if kind == 1 else -1
                    back = -1
                    clear = False
                    while True:
                        if kind == 1:
                            # The next partner that lists `old` and makes the swap gain.
                            back = -1
                            while partner >= 0 and tried < partners:
                                tried += 1
                                spent += 1
                                key = partner * tile_count + old
                                candidate = -1
                                if table.shape[0] > 0:
                                    candidate = table[key]
                                else:
                                    # The partner's keys are its own stretch of the sorted
                                    # keys (its edges' places): a search of a few dozen
                                    # keys, not of every cell's.
                                    low, high = bounds[partner], bounds[partner + 1]
                                    at = low + np.searchsorted(keys[low:high], key)
                                    if at < high and keys[at] == key:
                                        candidate = key_edge[at]
                                if candidate >= 0:
                                    if (edge_dist[own] - edge_dist[edge]
                                            + edge_dist[choice[partner]]
                                            - edge_dist[candidate]) > 0:
                                        back = candidate
                                        break
                                partner = following[partner]
                            if back < 0:
                                break
                        # Spacing: this cell on `tile` (but for the partner), and the
                        # partner on `old` (but for this cell).
                        clear = True
                        for check in range(kind + 1):
                            who = cell if check == 0 else partner
                            wanted = tile if check == 0 else old
                            ignore = partner if check == 0 else cell
                            if cols > 0 and uses[wanted] > window:
                                row, col = who // cols, who % cols
                                for r in range(max(0, row - reach), min(rows, row + reach + 1)):
                                    for c in range(max(0, col - reach),
                                                   min(cols, col + reach + 1)):
                                        spent += 1
                                        near = r * cols + c
                                        if (near != who and near != ignore
                                                and held[near] == wanted):
                                            clear = False
                                            break
                                    if not clear:
                                        break
                            else:
                                other = first[wanted]
                                while other >= 0 and clear:
                                    spent += 1
                                    if (other != who and other != ignore
                                            and abs(y[other] - y[who]) < apart
                                            and abs(x[other] - x[who]) < apart):
                                        clear = False
                                    other = following[other]
                            if not clear:
                                break
                        if clear:
                            break
                        if kind == 0:
                            break
                        partner = following[partner]
                    if kind == 1 and back < 0:
                        if tried >= partners:
                            break
                        continue
                    if not clear:
                        continue
                    # Relink by hand (a compiled loop calls no Python helper): this
                    # cell from `old` to `tile`, the partner from `tile` to `old`.
                    for step in range(kind + 1):
                        who = cell if step == 0 else partner
                        source = old if step == 0 else tile
                        target = tile if step == 0 else old
                        before, after = preceding[who], following[who]
                        if before >= 0:
                            following[before] = after
                        else:
                            first[source] = after
                        if after >= 0:
                            preceding[after] = before
                        head = first[target]
                        following[who] = head
                        preceding[who] = -1
                        if head >= 0:
                            preceding[head] = who
                        first[target] = who
                        held[who] = target
                    gained += edge_dist[own] - edge_dist[edge]
                    choice[cell] = edge
                    if kind == 0:
                        uses[old] -= 1
                        uses[tile] += 1
                    else:
                        gained += edge_dist[choice[partner]] - edge_dist[back]
                        choice[partner] = back
                    moved += 1
                    break
                else:
                    continue
                break
        made += moved
        if moved == 0:
            break
    return made
