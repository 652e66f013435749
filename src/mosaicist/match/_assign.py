"""Repetition control: give every cell a tile under use and spacing limits.

Two limits are supported:

* ``max_uses`` -- no library tile fills more than ``K`` cells;
* ``min_spacing`` -- two cells holding the same tile are at least ``D`` cells
  apart in Chebyshev distance (``max(|dr|, |dc|) >= D``); ``D <= 1`` is no limit.

Algorithm (``method="optimal"``)
--------------------------------
Each cell ``i`` brings its ``k`` nearest tiles (``candidates``, best first)
and their exact distances. Use limits turn this into a capacitated
assignment: a sparse bipartite graph cells x tiles in which a tile may take
``cap`` cells, ``cap = min(max_uses, ceil(rows / D) * ceil(cols / D))`` (a
``D x D`` block of the grid can hold a tile at most once, so the spacing
limit alone already caps uses). It is solved exactly by
:func:`scipy.sparse.csgraph.min_weight_full_bipartite_matching` (LAPJVsp,
sparse shortest augmenting paths) with each contested tile replicated into
``cap`` columns. Tiles that fewer than ``cap`` cells list can never be
over-used, so each of their edges gets a private column instead: the graph
only grows by the replicas of the tiles that are actually contested. With
OR-Tools installed (extra ``fast``) the same problem is solved as a min-cost
flow instead (source -> cell -> tile -> sink, each tile's arc to the sink of
capacity ``cap``: no replicas), exactly, by cost scaling on the integer
costs, 4 to 6 times faster on the seed workload's graphs; costs out of its
range fall back to LAPJVsp (:data:`SOLVER`).

**Certified over the whole library (with a ``search``).** The dual of the
capacitated assignment prices the tiles: maximise ``sum_i u_i - cap sum_j p_j``
subject to ``u_i <= c_ij + p_j`` and ``p >= 0``. A placement and prices
prove each other optimal when every cell's tile minimises ``c_ij + p_j`` over
*all* tiles and only full tiles have a price; then both objectives are equal
(the reported lower bound, gap 0). This is column generation:

1. Solve on the lists, each cell also having an outside column (a tile of
   its own, never full, at twice its list's tail, or its farthest listed
   tile where the caller listed more than the nearest: where all its
   listed tiles are taken, the solve still finishes). On full grids the
   caller also lists each cell's tiles of least distance plus prices
   estimated in advance (:mod:`._warm`), which cuts the rounds threefold.
2. Price the tiles from that solution (:func:`tile_prices`: the least
   prices that prove it optimal, a longest-path problem solved by raising
   prices from zero, vectorised).
3. A cell whose price-adjusted cost ``u_i`` is at most its tail is proven:
   its unlisted tiles cost at least the tail, prices being non-negative.
   The others get one exact search of the whole library for the tiles of
   least ``c_ij + p_j`` below ``u_i`` (the search's pruning bounds take the
   prices as an additive term per tile), which join their lists. A cell
   searched before is settled by what that search proved
   (:class:`_PriceChecks`): only the tiles whose prices fell since are
   measured, or searched among themselves; and the tiles a search found past
   those it lists are set aside and measured at each round's prices, so
   that its proof reaches past them.
4. Repeat until no cell is outside and no search finds a tile. A round
   whose new tiles move few cells repairs the last optimum from its prices
   by shortest paths (:mod:`._flow`) instead of solving again: the late
   rounds, which add a few thousand edges to millions, then cost
   milliseconds. A round that moves more first solves on each cell's
   edges of least reduced cost at the last prices, checks every other
   edge against the prices of that solution and repairs the cells it
   finds (:meth:`_Solver._solve_near`).
5. Out of rounds (:data:`MAX_PRICING_ROUNDS`), the best placement the lists
   hold is kept, and its gap is measured against the bound the last prices
   give: any ``p >= 0`` relax the caps to ``sum_i min_j (c_ij + p_j) - cap
   sum_j p_j`` (Lagrange; one search of every cell), which nears the
   optimum as the prices do, where the optimum without caps can lie far
   below it.

Lists grow only by the tiles prices point to: a flat area whose cells all
want the same few tiles gets, round by round, the next tiles it can afford,
not the whole library for every cell.

**A minimum of uses, certified the same way.** With ``min_uses = K`` each
use of a tile past its first ``K`` pays a surcharge ``S``: the tile is two
columns, of capacities ``K`` and ``cap - K``, priced ``p`` and ``p'``, and a
cell pays ``q_j = min(p_j, S + p'_j)``, again one additive term per tile
that the searches take. A placement that keeps the minimum pays ``S`` on
exactly ``N - K T`` uses (``T`` tiles), so among those placements the
surcharge changes no ranking; where the surcharged optimum keeps the
minimum it is the optimum, and the dual ``sum_i u_i - sum_j (K q_j + (cap -
K) max(q_j - S, 0)) - S (N - K T)`` (:meth:`_Solver._dual_bound`) bounds
every placement that keeps it, for any ``q >= 0``. ``S`` starts at twice
every outside column's cost (a cell pays it only where no tile with room is
near) and rises sixteenfold while the optimum leaves a far tile short.
The cells that pay it find the tiles no cell lists: nothing is listed for
every tile up front.

**Lower bound and candidate growth (without a ``search``).** An unlisted tile is at least as far
from a cell as the cell's last listed one, ``t_i``. Adding to each cell a
private "outside" column of cost ``t_i`` therefore gives a *relaxation*
(every full solution maps to one of no greater cost), whose exact optimum is
a lower bound on the best possible assignment over the whole library. If that
optimum uses no outside column, it is feasible and hence optimal: the gap is
zero. Otherwise the lists are too short to prove anything: ``k`` doubles
(one ``more_candidates`` call) and the cells that took an outside column get
the longer lists, the others keep theirs (so the graph grows only where it is
contested). At ``max_candidates`` the rounds go on only while they are cheap
or halve the outside users; then the best assignment within the lists is
solved (a maximum matching first tells whether one exists and which cells to
extend; none at the cap is an error) and its gap to the bound is reported.
Cost: memory and time grow with the edges, ``sum_i k_i`` plus ``cap`` per
edge of a contested tile.

**Spacing.** Pairwise spacing is not a network constraint. It is enforced
iteratively: solve, find every pair of same-tile cells closer than ``D``,
forbid that tile for the member of each pair that loses least by moving (its
*regret*: next allowed candidate minus current distance), and re-solve;
forbidden pairs only accumulate, so the rounds end. The next solve also
leaves out every other listed pair whose tile another cell within ``D``
holds in the placement just found (:func:`near_holders`; a cell's own tile
stays, and a loser's loss is measured to its best tile outside them), so
that it moves cells only onto tiles that break nothing around them as the
placement stands. Without that, a move put the loser, or a cell it
displaced, next to another holder of its new tile: chains that ran for
10-19 rounds on the seed workload at ``max_uses=2, min_spacing=5``, and for
more than 60 (an error) on a 12,288-cell forest fire; with it, 2 rounds
each, and gaps as small (0.17% against 0.16% on the seed workload; 0.32%
on the fire, where 41 rounds reached 0.35% with warm lists). Those pairs
stay out in the later rounds too (left out for one solve only, the chains
came back), until a solve finds a cell without a tile (a small library):
then they are all allowed again, and only the losers' pairs stay
forbidden, before any list grows. Each round after the first is repaired
from the last one's optimum on the edges it keeps (:mod:`._flow`): the least
prices of that optimum still prove every cell but the losers (an edge taken
away that the placement did not use breaks no proof), and shortest paths
place the losers, optimal on the new edges, exactly, moving only the cells
along the paths. A fresh solve of every edge gave the same cost in seconds a
round where the repair takes a fraction of one, and its tie-break toward the
last placement, rounded where the costs are tinted search units, moved alike
cells that then broke the spacing elsewhere (2,000 photos on a 30,000-cell
colour ramp: 18 rounds of 10-13 s, 753 violations down to 1-5 for ten rounds;
repaired, 2 rounds of under a second). Where a repair gives up (too many
losers, a cell left outside) the round solves from scratch and prices that
optimum for the next. The placement is then verified, and an
error is raised if it still breaks a limit. The lower bound stays that of
the relaxation (use caps included, pairwise spacing not), so the reported
gap covers the heuristic part too.

The rounds are a heuristic, and on a small library, whose tiles every
window holds, they can circle (300 tiles at ``D = 6`` on 18 x 25 cells) or
forbid pairs until a cell has no tile left. Where they give up
(:data:`MAX_SPACING_ROUNDS`, or no placement on the allowed pairs), greedy
(below, which keeps cap and spacing by construction) places the cells
instead (``method`` then reads ``"optimal+greedy"``), each listing the whole
library where it is small: the cheapest of the rounds' placement with one
cell of each violating pair re-placed, a placement from scratch, and one
on the lattice: cells ``(r, c)`` of equal ``(r mod D, c mod D)`` are at
least ``D`` apart, so a tile kept to one of these ``D^2`` classes never
breaks the spacing, and greedy that hands a tile to a class only while
enough stay for the classes still short is never stuck where the library
has ``sum_c ceil(|class c| / cap)`` tiles (each class then solved exactly on
its own tiles). Tiles short of ``min_uses`` then take cells from tiles
above it, and single moves to cheaper tiles that keep every limit polish
the result. Where none of these places every cell (or meets ``min_uses``)
and the lists are small (:data:`EXACT_EDGES`), a 0-1 program over the
listed pairs, one constraint per tile and ``D x D`` window, finds the
cheapest placement that keeps every limit, or proves there is none (10 tiles
of 3 uses at most, 3 apart, on 5 x 6 cells: every tile full, greedy stuck).
Where that program is too large or out of time, each class of cells ``D``
apart takes one tile, classes chosen so that none holds more cells than the
cap: ``(c + D r) mod m`` for ``m >= D^2``, or the lattice with each band of
``D`` rows (columns) shifted one more (10 tiles of 121 uses at most, 3
apart, on 30 x 40 cells: no lattice class fits one tile's cap).
The bound is unchanged, so the gap reports what this costs.
Necessary counts are checked before any work (:func:`check_feasible`):
``ceil(N / cap)`` tiles, ``min(D, rows) x min(D, cols)``, the cells of
one block, all pairwise closer than ``D``, and, on a grid narrower than ``2D - 1``
both ways, one tile for each of the ``L`` cells in its middle that no cell is
``D`` away from (:func:`lone_cells`) beside ``ceil((N - L) / cap)`` for the
rest (no ``min_uses`` above 1 at all there).

``method="greedy"`` visits cells by decreasing regret (best-to-second gap) and
gives each its best candidate that still has capacity and spacing (a Python
loop: about a second for 30,000 cells); cells left without one get longer
lists and the pass restarts. If the cap is reached first, the matching above
completes the placement (``method`` then reads ``"greedy+matching"``). Its
lower bound is the sum of every cell's best distance (the unconstrained
optimum).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..errors import MosaicistError, OptionError, alternatives, check_range, counted
from ..options import ASSIGN_METHODS
from ..progress import progress_bar
from . import _flow, _kernels, _polish

#: Largest candidate-list length that ``more_candidates`` is asked for.
MAX_CANDIDATES = 256
#: Relaxation solves (each followed by list growth) before settling for a gap.
MAX_GROWTH_ROUNDS = 10
#: Past the list cap, another costly growth round needs the outside users to shrink
#: to this fraction of the round before.
CAP_ROUND_SHRINK = 0.5
#: Candidate edges below which a solve counts as cheap (well under a second).
CHEAP_EDGES = 300_000
#: Most flags (bytes) of :func:`near_holders`' table of cells and tiles held, at once.
WINDOW_MARKS = 1 << 24
#: Edges of least reduced cost each cell keeps for the spacing rounds, where it lists more
#: than twice as many (:meth:`_Solver._keep_near_for_spacing`).
SPACING_EDGES = 48
#: Spacing rounds (solve, forbid violating pairs) before a greedy placement takes over
#: (:meth:`_Solver._spaced_anyway`).
MAX_SPACING_ROUNDS = 60
#: Most cell-tile pairs for which, where the spacing rounds give up, every cell lists the
#: whole library (16 bytes a pair): a small library, whose tiles every window holds.
FALLBACK_PAIRS = 1 << 22
#: Most listed cell-tile pairs for which, where greedy finds no placement there, one is
#: solved exactly (:meth:`_Solver._exact_placement`), and the seconds that solve may take.
#: 10 tiles of at most 3 uses, 3 cells apart, on 5 x 6 cells (300 pairs): 0.02-1 s; 17 of
#: 3 uses, 4 apart, on 7 x 7 (833 pairs): 5-11 s (stopping 1% short of the optimum: 2-9 s).
EXACT_EDGES = 20_000
EXACT_SECONDS = 20.0
#: CP-SAT's budget for that solve, in its deterministic time (about seconds of one core,
#: the same work on every machine): 17 tiles of 3 uses, 4 apart, on 7 x 7 cells, the
#: whole assignment in 0.8-1.3 s at 0.2-3.6% above HiGHS's placement, where HiGHS took
#: 5.7-14.3 s (and found no placement at all in 5 s on two of three).
EXACT_WORK = 1.0

#: Most cell-tile pairs measured to list the tiles a priced minimum left short for their
#: nearest cells, and the cells each lists (:meth:`_Solver._list_short_tiles`).
SHORT_PAIRS = 4_000_000
SHORT_CELLS = 16
#: Column-generation rounds (solve, price, search the library) before settling for a gap.
MAX_PRICING_ROUNDS = 40
#: Cells outside with nothing cheaper at most which, under a cap alone, raise the placed
#: cells' outside columns with theirs (:meth:`_Solver._price_rounds`).
CHAIN_CELLS = 64
#: Tiles with room that a cell left without a tile by a greedy pass lists at once.
GREEDY_ROOM_CANDIDATES = 8
#: Edges from which :func:`tile_prices` runs compiled even where no compiled loop is
#: loaded yet (below, NumPy's rounds cost less than Numba's import).
COMPILED_PRICES_EDGES = 1 << 16
#: Tiles below its limit a pricing search returns for each cell.
PRICING_COLUMNS = 8
#: Most tiles a cell's later searches return (see :meth:`_PriceChecks.check`): on a
#: 12,288-cell photo, 40 rounds without a proof (183 s) became 28 rounds to one (116 s).
MOST_PRICING_COLUMNS = 32
#: Searches of a placed cell before its columns start doubling (on the seed workload
#: doubling from the first made the graph a third larger for no fewer rounds).
WIDEN_AFTER = 1
#: Tiles a search of a cell outside its lists looks for (it lists a slice of
#: :data:`PRICING_COLUMNS` of them): on the 12,288-cell photo, 8 became 32 and 28 rounds
#: (130 s) became 24 (96 s); on the seed workload 9 rounds became 8.
OUT_SEARCH = 32
#: Tiles a search looks for, each cell listing a slice, where the last search of the
#: same kind found fewer tiles than cells (a crowd of alike cells, which all find the
#: same tiles): of cells outside their lists, and of placed cells searched again after
#: a search at :data:`MOST_PRICING_COLUMNS` (which list slices of that many). On a
#: camera-trap photo upscaled to 30,000 cells the crowd outside gained 32 tiles a round
#: and was not certified in 40 rounds (545 s); searching 128 for every cell outside
#: certified it in 23 (318 s) but cost Starry Night's 32,400 cells 10 s; where cells
#: find many tiles, the wider searches only cost.
CROWD_SEARCH = 128
#: How far past its cost a pricing search looks, in units of the cell's price premium.
REACH = 1
#: Arcs a repair of the last round's optimum may relax per edge of the graph before a
#: fresh solve is cheaper (a solve costs about a microsecond per edge; the compiled
#: shortest paths relax an arc in about 15 ns).
REPAIR_ARCS_PER_EDGE = 60
#: Edges of least reduced cost each cell keeps in a solve near the last round's prices
#: (:meth:`_Solver._solve_near`), and the largest share of all edges such a solve is
#: worth on.
NEAR_EDGES = 16
NEAR_SHARE = 0.5
#: A solve near the last prices also keeps every edge whose reduced cost is at most this
#: share of its cell's cost: least prices move with the graph, and on a 30,000-cell
#: crowd of alike cells the edges of a few per cent broke 12,000 cells' proofs where
#: kept they broke 1,400 (repaired in 2 s).
NEAR_MARGIN = 0.05
#: Solves near the prices a round tries, each with the edges the last one missed.
NEAR_SOLVES = 2
#: A repair moves at most one cell in this many (each move is a shortest-path search
#: through a crowd of alike cells; past that a fresh solve was faster on every grid
#: measured).
REPAIR_SHARE = 8
#: Most tiles whose prices fell that are measured pair by pair instead of a search.
DIRECT_PAIRS = 64
#: Tiles a search of the whole library returns at least: those past the ones listed are
#: kept aside with their distances and checked at each round's prices, so that the
#: search proves up to the dearest of them.
RESERVE_COLUMNS = 32
#: The same for a cell searched whole again (its cost rose past what its last search
#: proved) where the grid needs at least :data:`CROWDED_LOAD` of the uses the library
#: allows (cells over ``cap x tiles``): there a crowd's prices climb round after round,
#: and such searches took two thirds of the search time on the camera-trap elephants
#: (30,000 cells of 50,000 tiles). Proving further ahead for cells searched again (128)
#: took 18 rounds in 148-160 s there instead of 24 in 196-205 s (64: 23 rounds, 204 s; 256:
#: 14 rounds, 184 s), and 50-51 s instead of 46-49 s on the arctic photo at 12 px (7
#: rounds). Every search at 128, first ones too: 167-183 s, 60-62 s, and 4.6 s instead
#: of 4.1 s on the seed workload.
CROWDED_RESERVE_COLUMNS = 128
CROWDED_LOAD = 0.4

CandidateSource = Callable[[int], tuple[np.ndarray, np.ndarray]]


class ShortLists(MosaicistError):
    """The candidate lists cannot give every tile its minimum of uses.

    Attributes
    ----------
    tiles : numpy.ndarray
        The tiles that fell short: they need more cells listing them.
    """

    def __init__(self, tiles: np.ndarray) -> None:
        self.tiles = tiles
        their = "its" if len(tiles) == 1 else "their"
        super().__init__(f"{counted(len(tiles), 'tile')} could not be given {their} minimum "
                         "of uses")


class MinimumUsesError(OptionError):
    """An :class:`OptionError` about ``min_uses``, whose value is the field ``low``.

    The command line's ``--use-all`` is ``--min-uses 1``, and the options
    cannot tell which of the two the user typed. So where the naming function
    knows a ``--use-all`` flag (the commands that have one), a ``min_uses`` of
    1 is shown as ``--use-all (--min-uses 1)``; elsewhere (the API's
    ``min_uses``, the studio's labels) the message is the template's.

    Parameters
    ----------
    template : str
        As :class:`OptionError`'s, naming ``{min_uses}``.
    low : int
        The ``min_uses`` in force.
    **values : object
        The template's other non-parameter fields.
    """

    def __init__(self, template: str, low: int, **values: object) -> None:
        super().__init__(template, low=low, **values)

    def message(self, name_of: Callable[[str], str] = str) -> str:
        """Return the message as :meth:`OptionError.message`, naming ``--use-all`` too."""
        template = self.template
        use_all = name_of("use_all") if self.values.get("low") == 1 else ""
        if use_all.startswith("--"):
            shown = use_all.replace("{", "{{").replace("}", "}}")
            if "{min_uses} {low}" in template:
                template = template.replace("{min_uses} {low}", shown + " ({min_uses} {low})", 1)
            else:
                template = template.replace("{min_uses}", shown + " ({min_uses} {low})", 1)
        names = {parameter: name_of(parameter) for parameter in self.parameters}
        return template.format(**names, **self.values)

    def __reduce__(self) -> tuple:
        # Rebuilt as this class (worker processes), not as a plain OptionError.
        values = dict(self.values)
        return (_rebuild_minimum_error, (self.template, values.pop("low"), values))


def _rebuild_minimum_error(template: str, low: int, values: dict) -> MinimumUsesError:
    return MinimumUsesError(template, low, **values)


class _Stuck(Exception):
    """A spacing round's solve left a cell without an allowed tile, its lists at their longest."""


class CandidateSearch(Protocol):
    """Searches of the whole library that the certified assignment asks for.

    Distances are int64 (for tinted objectives, in exact integer search
    units); both methods return ``(len(cells), k)`` arrays of library
    positions (``-1`` for a missing entry) and their distances, best first.
    """

    #: Tiles in the library.
    tile_count: int

    def nearest(self, cells: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest tiles of each of ``cells``."""

    def below(
        self, cells: np.ndarray, price: np.ndarray, limit: np.ndarray, k: int,
        upper: np.ndarray | None = None, among: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``k`` tiles of least distance plus ``price`` below each cell's ``limit``.

        ``price`` is ``(tile_count,)``, non-negative; the distances returned
        do not include it. ``upper``, when given, is known to be at or above
        each cell's ``k``-th least distance plus price (some ``k`` tiles
        reach it): a search may start from it instead of from nothing.
        ``among``, when given, holds the only tiles searched (at least one);
        other tiles may be returned too, where they are among the ``k``
        least of ``among`` and them.
        """

    def pairs(self, cells: np.ndarray, tiles: np.ndarray) -> np.ndarray:
        """The distance of each pair ``(cells[p], tiles[p])``, ``(P,)`` int64."""


@dataclass
class Assignment:
    """The tile of every cell under repetition limits.

    Attributes
    ----------
    tile : numpy.ndarray
        ``(N,)`` int64 library position of each cell's tile (row-major cells).
    distance : numpy.ndarray
        ``(N,)`` distance of each cell to its tile (the candidates' dtype).
    objective : int or float
        Sum of ``distance``.
    lower_bound : int or float
        A proven lower bound on the objective of any placement that meets the
        limits, over the whole library.
    gap : float
        ``(objective - lower_bound) / lower_bound`` (0 when proven optimal).
    method : str
        ``"best"`` (no limits), ``"optimal"``, ``"greedy"``, or
        ``"greedy+matching"`` (greedy got stuck with the longest lists allowed
        and the assignment solver completed the placement instead), or
        ``"optimal+greedy"`` (the spacing rounds gave up and greedy placed
        the cells, or, where it got stuck on a small grid, an exact solve:
        see the module's notes).
    candidates_used : int
        Longest candidate list used (after any growth).
    iterations : int
        Spacing rounds (solve, forbid violating pairs, re-solve) made.
    seconds : float
        Wall time of the assignment.
    certified : bool
        Whether the placement before spacing was proven optimal over every
        cell-tile pair of the library (prices satisfying complementary
        slackness), so that ``lower_bound`` is the optimum under the use cap.
    pricing_rounds : int
        Column-generation rounds that searched the library.
    """

    tile: np.ndarray
    distance: np.ndarray
    objective: int | float
    lower_bound: int | float
    gap: float
    method: str
    candidates_used: int
    iterations: int
    seconds: float
    certified: bool = False
    pricing_rounds: int = 0


def spacing_capacity(rows: int, cols: int, min_spacing: int) -> int | None:
    """Most cells one tile can fill under ``min_spacing`` (None: no limit).

    Two cells of one ``D x D`` block are closer than ``D``, so each block of a
    partition of the grid holds a tile at most once; a lattice of step ``D``
    reaches that count.

    Parameters
    ----------
    rows, cols : int
        Grid shape, in cells.
    min_spacing : int
        Minimum Chebyshev distance between cells of the same tile (``<= 1``: none).

    Returns
    -------
    int or None
        The count, or None when ``min_spacing`` sets no limit.
    """
    if min_spacing <= 1:
        return None
    # Whole-number ceilings: a float quotient is 0 for a spacing of hundreds of digits.
    return -(-rows // min_spacing) * -(-cols // min_spacing)


def lone_cells(rows: int, cols: int, min_spacing: int) -> int:
    """Cells of the grid that no other cell is ``min_spacing`` or more away from.

    Cell ``(r, c)`` has one only where its farthest row or column is that far:
    ``max(r, rows - 1 - r) >= D`` or ``max(c, cols - 1 - c) >= D``. The others
    lie in the middle of a grid narrower than ``2 D - 1`` both ways, and each
    needs a tile of its own (which then fills that cell alone).

    Parameters
    ----------
    rows, cols : int
        Grid shape, in cells.
    min_spacing : int
        Minimum Chebyshev distance between cells of the same tile (``<= 1``: none).

    Returns
    -------
    int
        The count (0 where ``min_spacing <= 1``, or the grid is wide enough one way).
    """
    if min_spacing <= 1:
        return 0

    def middle(length: int) -> int:
        # Positions p with p <= D - 1 and length - 1 - p <= D - 1.
        return max(0, min(min_spacing, length) - max(0, length - min_spacing))

    return middle(rows) * middle(cols)


def tile_capacity(
    rows: int, cols: int, max_uses: int | None, min_spacing: int = 1
) -> int | None:
    """Most cells one tile may fill under both limits (None: no limit).

    Parameters
    ----------
    rows, cols : int
        Grid shape, in cells.
    max_uses : int or None
        Most cells a tile may fill; None for no cap.
    min_spacing : int
        Minimum Chebyshev distance between cells of the same tile (``<= 1``: none).

    Returns
    -------
    int or None
        The lower of the two limits, or None when neither sets one.
    """
    caps = [c for c in (max_uses, spacing_capacity(rows, cols, min_spacing)) if c is not None]
    return min(caps) if caps else None


def spacing_binds(rows: int, cols: int, max_uses: int | None, min_spacing: int) -> bool:
    """Whether ``min_spacing`` can bind: only where a tile may fill two cells."""
    return min_spacing > 1 and tile_capacity(rows, cols, max_uses, min_spacing) != 1


def spaced_classes(rows: int, cols: int, min_spacing: int, tiles: int) -> list[np.ndarray]:
    """Partitions of the grid into classes of cells ``min_spacing`` apart, at most ``tiles``.

    ``(c + D r) mod m`` for ``D * D <= m <= tiles`` (the eight largest
    ``m``): ``dc + D dr`` is a nonzero multiple of ``m`` only when ``|dc|``
    or ``|dr|`` reaches ``D``; and the ``D * D`` lattice classes with each
    band of ``D`` rows (or columns) shifted one more, so that the classes
    that get the grid's extra column (row) take turns. One tile per class
    keeps the spacing; the largest class is the cap that needs.

    Parameters
    ----------
    rows, cols : int
        Grid shape, in cells.
    min_spacing : int
        Minimum Chebyshev distance ``D`` between cells of one class (``> 1``).
    tiles : int
        Most classes.

    Returns
    -------
    list of numpy.ndarray
        Each ``(rows * cols,)`` int64: the class of every cell, ``0..m - 1``.
        Empty where ``tiles < D * D``.
    """
    spacing = min_spacing
    if tiles < spacing * spacing:
        return []
    row, col = np.divmod(np.arange(rows * cols, dtype=np.int64), cols)
    diagonal = col + spacing * row
    kinds = [diagonal % m for m in range(tiles, max(spacing * spacing, tiles - 8) - 1, -1)]
    kinds.append(spacing * (row % spacing) + (col + row // spacing) % spacing)
    kinds.append(spacing * (col % spacing) + (row + col // spacing) % spacing)
    return kinds


def spaced_cap(rows: int, cols: int, min_spacing: int, tiles: int) -> int | None:
    """Fewest uses per tile at which ``tiles`` tiles surely fill the grid ``min_spacing`` apart.

    The least largest class of :func:`spaced_classes` (None: no such classes).
    Where the library has little more than a ``D x D`` block of tiles, the
    cap that only counts cells (``ceil(cells / tiles)``) can be too low for
    any placement: 4 tiles 2 apart on 31 x 41 cells must alternate by rows
    or columns, so two of them share 16 rows (or 21 columns), 328 (326)
    cells at least for one.
    """
    kinds = spaced_classes(rows, cols, min_spacing, tiles)
    if not kinds:
        return None
    return min(int(np.bincount(kind).max()) for kind in kinds)


def block_tiles_uses(rows: int, cols: int, min_spacing: int) -> list[tuple[int, int]]:
    """Most and fewest cells of a tile, at best, where ``D x D`` tiles fill a grid ``D`` apart.

    With as many tiles as a ``D x D`` block has cells (``D = min_spacing``),
    every block of the grid holds each tile once, and the tiles repeat in
    whole rows or whole columns: either every row is periodic with period
    ``D`` (its ``D`` tiles, the same for rows ``D`` apart, in any rotation),
    or every column is. Row by row, the ``ceil(rows / D)`` rows of the
    largest such set share ``cols`` cells each among its ``D`` tiles, so one
    tile fills at least ``ceil(ceil(rows / D) cols / D)`` cells; turned so
    that the ``D`` tiles take the extra cells in turn, none fills more, and
    the smallest set's tiles fill ``floor(floor(rows / D) cols / D)`` at
    least. Column by column likewise. (Checked against CP-SAT's optimum on
    grids from 3 x 7 to 7 x 9, ``D`` from 2 to 4, and in the tests against
    every such placement of small grids.)

    Parameters
    ----------
    rows, cols : int
        Grid shape, in cells, each at least ``min_spacing``.
    min_spacing : int
        Minimum Chebyshev distance ``D > 1`` between cells of the same tile.

    Returns
    -------
    list of tuple of int
        ``(most, fewest)`` for tiles repeating row by row, then column by column:
        the least top use count and the largest least one of that way.
    """
    spacing = min_spacing

    def ways(lines: int, length: int) -> tuple[int, int]:
        largest_set = -(-lines // spacing)
        smallest_set = lines // spacing
        return -(-largest_set * length // spacing), smallest_set * length // spacing

    return [ways(rows, cols), ways(cols, rows)]


def _check_block_tiles(cells: int, tiles: int, max_uses: int | None, rows: int, cols: int,
                       min_spacing: int, min_uses: int) -> None:
    """Raise where a library of one ``D x D`` block's tiles cannot keep the use limits.

    See :func:`block_tiles_uses`: such tiles repeat in whole rows or
    columns, which fixes how many cells each must fill.
    """
    spacing = min_spacing
    if (spacing <= 1 or tiles != spacing * spacing or cells != rows * cols
            or rows < spacing or cols < spacing):
        return
    ways = block_tiles_uses(rows, cols, spacing)
    cap = max_uses if max_uses is not None else cells
    if any(most <= cap and fewest >= min_uses for most, fewest in ways):
        return
    what = ("{tiles} tiles {min_spacing} {spacing} cells apart on a {grid} grid (one {spacing} "
            "x {spacing} block's worth) repeat in whole rows or columns")
    fields = {"tiles": f"{tiles:,}", "spacing": spacing, "grid": f"{cols}x{rows}"}
    reaching = [most for most, fewest in ways if fewest >= min_uses]
    within = [fewest for most, fewest in ways if most <= cap]
    if not reaching:
        # No cap gives every tile the minimum.
        raise MinimumUsesError(
            what + ", so some tile fills at most {best} cells, below {min_uses} {low}; lower "
            "{min_uses} to {best} or add tiles", low=min_uses,
            best=f"{max(fewest for _, fewest in ways):,}", **fields)
    if not within:
        raise OptionError(
            what + ", so one tile fills at least {least} cells, above {max_uses} {high}; raise "
            "{max_uses} to {least}, add tiles or lower {min_spacing}", high=max_uses,
            least=f"{min(reaching):,}", **fields)
    # Each limit alone has a way, not both at once.
    raise MinimumUsesError(
        what + ", so with {min_uses} {low} one tile fills at least {least} cells, above "
        "{max_uses} {high}; raise {max_uses} to {least} or lower {min_uses} to {best}",
        low=min_uses, high=max_uses, least=f"{min(reaching):,}", best=f"{max(within):,}",
        **fields)


def lone_cells_refusal(cells: int, cap: int, min_spacing: int, needed: int, tiles: int,
                       grid: str, lone: int) -> OptionError:
    """The refusal of a grid whose ``lone`` middle cells (no cell ``min_spacing`` away) each
    need a tile of their own, ``needed`` tiles in all, where the library has ``tiles``."""
    return OptionError(
        "{cells} with at most {cap} per tile need at least {needed} under {min_spacing} "
        "{spacing}, but the library has {tiles}: {lone} in the middle of the {grid} grid "
        + ("has" if lone == 1 else "have") + " no cell {spacing} or more away and "
        + ("needs a tile of its own" if lone == 1 else "need a tile each")
        + "; add tiles or relax the limits",
        cells=counted(cells, "cell"), cap=counted(cap, "use"), spacing=min_spacing,
        needed=counted(needed, "tile"), tiles=f"{tiles:,}", grid=grid,
        lone=("the cell" if lone == 1 else f"the {lone:,} cells"),
    )


def check_feasible(
    cells: int,
    tiles: int,
    max_uses: int | None,
    rows: int | None = None,
    cols: int | None = None,
    min_spacing: int = 1,
    min_uses: int = 0,
) -> None:
    """Raise before any heavy work when the limits cannot fill the grid.

    With ``min_uses``, also when the grid cannot give every tile that many
    cells, or spacing cannot fit that many copies of a tile (nor two, where a
    cell has no other ``D`` away: :func:`lone_cells`). With spacing, also when
    the library has fewer tiles than one ``D x D`` block of cells (clipped to
    the grid) holds: any two of its cells are closer than ``D``, so they all
    need different tiles; and fewer than the lone cells, a tile each, and
    ``cap`` cells a tile for the rest.

    Parameters
    ----------
    cells : int
        Cells to fill.
    tiles : int
        Library tiles available.
    max_uses : int or None
        Most uses of one tile (None: unlimited).
    rows, cols : int, optional
        Grid shape; with ``min_spacing > 1`` it caps uses too.
    min_spacing : int
        Minimum Chebyshev distance between equal tiles (``<= 1``: none).
    min_uses : int
        Fewest cells every tile must fill.

    Raises
    ------
    MosaicistError
        One line saying how many tiles (or cells) the limits need.
    """
    _check_limits(max_uses, min_spacing)
    check_range("min_uses", min_uses, 0, whole=True)
    spacing = None
    lone = 0
    if min_spacing > 1 and rows is not None and cols is not None:
        spacing = spacing_capacity(rows, cols, min_spacing)
        if cells == rows * cols:
            # Not for adaptive cells, whose count and distances are those of their layout.
            lone = lone_cells(rows, cols, min_spacing)
    if min_uses:
        if max_uses is not None and min_uses > max_uses:
            raise MinimumUsesError(
                "{min_uses} {low} is above {max_uses} {high}; lower {min_uses} or raise "
                "{max_uses}", low=min_uses, high=max_uses)
        if spacing is not None and min_uses > spacing:
            raise MinimumUsesError(
                "{min_uses} {low} copies of a tile cannot be {min_spacing} {spacing} cells "
                "apart on a {grid} grid (at most {most})", low=min_uses, spacing=min_spacing,
                grid=f"{cols}x{rows}", most=f"{spacing:,}",
            )
        if min_uses > 1 and lone and tiles:
            # The tile of a cell no other cell is D away from fills that cell alone (the
            # middle of 3 x 3 cells 2 apart). Said as the matcher says tiles short of the
            # minimum (_capped._minimum_unmet), only the spacing named: no cap changes it.
            # One tile is "the tile", not "1 of the tile".
            who = ("the only tile cannot fill" if tiles == 1 else
                   f"{min(lone, tiles):,} of the {tiles:,} tiles cannot each fill")
            raise MinimumUsesError(
                "{min_uses} {low} cannot be met: {who} {cells} under {min_spacing} {spacing}; "
                "lower {min_uses} or relax {min_spacing}", low=min_uses, who=who,
                cells=f"{min_uses:,} cells", spacing=min_spacing,
            )
        if tiles * min_uses > cells:
            raise MinimumUsesError(
                "{min_uses} {low} needs {needed} cells for the {tiles}, but the grid "
                "has {cells}; use fewer tiles ({limit}) or smaller cells ({cell_px})",
                low=min_uses, needed=f"{tiles * min_uses:,}",
                tiles="tile" if tiles == 1 else f"{tiles:,} tiles", cells=f"{cells:,}",
            )
    caps = [c for c in (max_uses, spacing) if c is not None]
    if not caps or cells == 0:
        if tiles < 1 and cells > 0:
            raise MosaicistError("no tiles to fill the mosaic with")
        return
    cap = min(caps)
    needed = -(-cells // cap)
    # Cells with no other cell D away take a tile each (4 in the middle of 6x6 cells at
    # spacing 4): with a cap of 2, 4 + 32 / 2 = 20 tiles, where 36 / 2 asks for 18.
    with_lone = lone + -(-(cells - lone) // cap) if cap > 1 else needed
    # Cells of one block are pairwise closer than D: with a grid, this bound can exceed
    # the one of the caps (100 tiles, spacing 12 on 18x25 cells: 144 against 4).
    high = wide = 0
    if spacing is not None and rows is not None and cols is not None:
        high, wide = min(min_spacing, rows), min(min_spacing, cols)
    if tiles < high * wide and high * wide > needed:
        raise OptionError(
            "{min_spacing} {spacing} needs at least {block} different tiles (a {high} x {wide} "
            "block of cells), but the library has {tiles}; add tiles or lower {min_spacing}",
            spacing=min_spacing, block=f"{high * wide:,}", high=high, wide=wide,
            tiles=f"{tiles:,}",
        )
    if tiles < needed:
        # Only the limits that set the cap are named: a looser one (a preset's
        # --max-uses beside a tight --min-spacing) is not what must change.
        why = []
        if max_uses == cap:
            why.append("{max_uses} {uses}")
        if spacing == cap:
            why.append("{min_spacing} {spacing}: at most {spacing_uses} on a {grid} grid")
        raise OptionError(
            "{cells} with at most {cap} per tile (" + ", ".join(why) + ") "
            + ("needs" if cells == 1 else "need") + " at least {needed}, but the library "
            "has {tiles}; add tiles or relax " + ("the limits" if len(why) > 1 else "it"),
            cells=counted(cells, "cell"), cap=counted(cap, "use"), uses=max_uses,
            spacing=min_spacing, spacing_uses=counted(spacing or 0, "use"),
            grid=f"{cols}x{rows}", needed=counted(needed, "tile"), tiles=f"{tiles:,}",
        )
    if tiles < with_lone:
        raise lone_cells_refusal(cells, cap, min_spacing, with_lone, tiles, f"{cols}x{rows}",
                                 lone)
    if spacing is not None and rows is not None and cols is not None:
        _check_block_tiles(cells, tiles, max_uses, rows, cols, min_spacing, min_uses)


def _check_limits(max_uses: int | None, min_spacing: int) -> None:
    if max_uses is not None:
        check_range("max_uses", max_uses, 1, whole=True)
    check_range("min_spacing", min_spacing, 0, whole=True)


# --------------------------------------------------------------------------
# Candidate lists as flat, row-sorted edges.


@dataclass
class _Edges:
    """Cell-tile candidate edges, grouped by cell in best-first order."""

    row: np.ndarray  # (E,) int64
    tile: np.ndarray  # (E,) int64
    dist: np.ndarray  # (E,) int64 or float64
    length: np.ndarray  # (N,) listed candidates per cell
    tail: np.ndarray  # (N,) a lower bound on every unlisted tile's distance


def _edges(candidates: np.ndarray, distances: np.ndarray, length: np.ndarray) -> _Edges:
    """Flatten the first ``length[i]`` entries of each row, dropping missing and repeats."""
    count, width = candidates.shape
    keep = (np.arange(width) < length[:, None]) & (candidates >= 0)
    row, col = np.nonzero(keep)
    tile = candidates[row, col].astype(np.int64)
    dist = distances[row, col]
    # A tile listed twice for one cell would become a doubled sparse entry (summed by
    # scipy); keep its first, best occurrence.
    key = row * (int(tile.max(initial=0)) + 1) + tile
    _, first = np.unique(key, return_index=True)
    if len(first) < len(key):
        first.sort()
        row, tile, dist = row[first], tile[first], dist[first]
    listed = np.bincount(row, minlength=count)
    # Unlisted tiles are at least as far as the farthest listed one (lists are the
    # nearest tiles); a cell with an empty list gets no bound (no outside option).
    tail = np.full(count, _inf(dist.dtype), dist.dtype)
    if len(dist):
        starts = np.concatenate(([0], np.cumsum(listed)[:-1]))
        nonempty = listed > 0
        tail[nonempty] = np.maximum.reduceat(dist, starts[nonempty])
    return _Edges(row, tile, dist, listed, tail)


def _with_edges(
    edges: _Edges, row: np.ndarray, tile: np.ndarray, dist: np.ndarray, tail: np.ndarray
) -> _Edges:
    """``edges`` plus the pairs ``(row, tile)`` (missing tiles ``-1`` dropped), regrouped.

    Each cell's edges stay best first (ties by tile), a pair listed twice once.
    ``tail`` replaces the edges' bound on unlisted tiles.
    """
    keep = tile >= 0
    row, tile, dist = row[keep], tile[keep], dist[keep].astype(edges.dist.dtype)
    added = np.lexsort((tile, dist, row))
    row, tile, dist = _without_repeats(row[added], tile[added], dist[added])
    at = _insertion_points(edges, row, dist, tile)
    if at is not None:
        new = at >= 0
        at, row, tile, dist = at[new], row[new], tile[new], dist[new]
        return _Edges(np.insert(edges.row, at, row), np.insert(edges.tile, at, tile),
                      np.insert(edges.dist, at, dist),
                      edges.length + np.bincount(row, minlength=len(tail)), tail)
    row = np.concatenate((edges.row, row))
    tile = np.concatenate((edges.tile, tile))
    dist = np.concatenate((edges.dist, dist))
    order = _merged_order(row, dist, tile)
    row, tile, dist = _without_repeats(row[order], tile[order], dist[order])
    return _Edges(row, tile, dist, np.bincount(row, minlength=len(tail)), tail)


def _without_repeats(
    row: np.ndarray, tile: np.ndarray, dist: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs in ``(row, dist, tile)`` order, each once.

    A pair's distance is a function of the pair, so a pair listed twice
    sorts next to itself.
    """
    repeat = np.zeros(len(row), bool)
    repeat[1:] = (row[1:] == row[:-1]) & (tile[1:] == tile[:-1])
    if not repeat.any():
        return row, tile, dist
    return row[~repeat], tile[~repeat], dist[~repeat]


def _insertion_points(
    edges: _Edges, row: np.ndarray, dist: np.ndarray, tile: np.ndarray
) -> np.ndarray | None:
    """Where each pair goes among ``edges`` (indices for ``np.insert``), ``-1`` if listed.

    Both are in ``(row, dist, tile)`` order. Row and distance pack into one
    int64 key (for a block of rows at a time where distances take many
    bits), and a binary search places each pair among the edges with keys
    below its own, then by tile among those with its key (a pair already
    listed has its distance, so it is found there): linear in the edges,
    where sorting them all again each pricing round cost seconds on a
    30,000-cell grid. None where the keys do not pack (float distances, or
    of more than 60 bits).
    """
    if not len(row):
        return np.zeros(0, np.int64)
    if not (len(edges.row) and np.issubdtype(dist.dtype, np.integer)):
        return None
    if min(int(dist.min()), int(edges.dist.min())) < 0:
        return None
    shift = max(1, max(int(dist.max()), int(edges.dist.max())).bit_length())
    if shift > 60:
        return None
    # Rows a key can tell apart beside the distance: tinted search units take ~50
    # bits, so a 12,288-cell grid is keyed in blocks of rows.
    block = 1 << (62 - shift)
    low = np.empty(len(row), np.int64)
    high = np.empty(len(row), np.int64)
    row = row.astype(np.int64, copy=False)
    for first in np.unique(row // block).tolist():
        first *= block
        begin, end = np.searchsorted(edges.row, [first, first + block])
        new_begin, new_end = np.searchsorted(row, [first, first + block])
        listed = (((edges.row[begin:end].astype(np.int64) - first) << shift)
                  | edges.dist[begin:end].astype(np.int64))
        key = ((row[new_begin:new_end] - first) << shift) | dist[new_begin:new_end].astype(
            np.int64)
        low[new_begin:new_end] = begin + np.searchsorted(listed, key, side="left")
        high[new_begin:new_end] = begin + np.searchsorted(listed, key, side="right")
    # Pairs meeting one edge of their key: a pair listed again (the pricing rounds
    # measure listed tiles whose prices fell), or an equal distance of its cell.
    single = np.flatnonzero(high - low == 1)
    several = np.flatnonzero(high - low > 1)
    met = edges.tile[low[single]]
    low[single] = np.where(met == tile[single], -1, low[single] + (met < tile[single]))
    for pair in several.tolist():
        # More than one: equal distances of one cell, rare and few.
        run = edges.tile[low[pair]:high[pair]]
        place = int(np.searchsorted(run, tile[pair]))
        if place < len(run) and run[place] == tile[pair]:
            low[pair] = -1
        else:
            low[pair] += place
    return low


def _common_factor(values: np.ndarray) -> int:
    """The greatest common divisor of integer ``values`` (0 when all are 0 or none; 1 float)."""
    if not len(values) or not np.issubdtype(values.dtype, np.integer):
        return 1 if len(values) else 0
    values = values.astype(np.int64, copy=False)
    # A sample's divisor, then checked (and lowered) on all: one pass of remainders
    # where the divisor holds, none where the sample has none (a GCD over millions of
    # edges cost a second per pricing round on a 30,000-cell grid).
    factor = int(np.gcd.reduce(values[:: max(1, len(values) // 4096)]))
    if factor == 0:
        return int(np.gcd.reduce(values))  # a sample of zeros says nothing
    while factor > 1:
        remainder = values % factor
        if not remainder.any():
            break
        factor = math.gcd(factor, int(np.gcd.reduce(remainder[remainder != 0])))
    return factor


def _merged_order(row: np.ndarray, dist: np.ndarray, tile: np.ndarray) -> np.ndarray:
    """The order by ``(row, dist, tile)`` of runs each already in that order.

    Where row and distance pack into one int64, one stable sort of the packed
    keys merges the runs (ties between the runs keep the first run's entry
    first, so the tile order is checked, and a full sort settles any
    disorder): three times faster than sorting by three keys, which cost a
    second per pricing round on a 30,000-cell grid.
    """
    if len(row) and np.issubdtype(dist.dtype, np.integer) and dist.min() >= 0:
        shift = max(1, int(dist.max()).bit_length())
        if int(row.max()).bit_length() + shift <= 62:
            packed = (row.astype(np.int64) << shift) | dist.astype(np.int64)
            order = np.argsort(packed, kind="stable")
            packed, ordered_tile = packed[order], tile[order]
            if not ((packed[1:] == packed[:-1]) & (ordered_tile[1:] < ordered_tile[:-1])).any():
                return order
    return np.lexsort((tile, dist, row))


class _PriceChecks:
    """What each cell's earlier looks at the library prove, and the looks still needed.

    For every cell ``i`` a level ``L_i`` and the prices ``q`` of the round it
    was set in, such that every unlisted tile ``j`` has ``c_ij + q_j >= L_i``
    (at first the list's tail with ``q = 0``: unlisted tiles are no nearer
    than the last listed one). With today's prices ``p`` and cost ``u_i``,
    ``c_ij + p_j >= L_i - (q_j - p_j)``, so only tiles whose price fell by
    more than ``L_i - u_i`` can be cheaper than ``u_i``: none, and the cell is
    settled without a look; a few (up to :data:`DIRECT_PAIRS`), and those
    pairs are measured exactly (``search.pairs``); more, and the cell gets an
    exact search of those tiles only (``search.below(..., among=...)``).
    The tiles searched are the ``P`` of largest fall (``P`` the open count
    rounded up to a power of two, so that cells share searches); every other
    tile has ``c_ij + p_j >= L_i - f_P``, ``f_P <= L_i - u_i`` the largest
    fall among them. A cell whose cost has risen above its level gets an
    exact search of the whole library. Either way the cell's new level is
    ``u_i`` at today's prices (``L_i - f_P`` after a search of some tiles),
    or, when a search returned as many tiles as it may, the dearest of them
    if lower.

    The tiles a search of the whole library finds past those it lists are
    set aside (:meth:`_set_aside`) with their distances, and measured at
    every round's prices: they are outside the proof, which then reaches the
    dearest of them. A cell that lists some of them in a round is not
    searched in that round (it cannot be the last): its search waits until
    they are spent. A search returns at least :data:`RESERVE_COLUMNS` tiles;
    on a crowded grid a cell's second and later searches of the whole library
    return ``again`` (:data:`CROWDED_RESERVE_COLUMNS`): its cost has risen
    past its proof once, and a proof that reaches further outlasts the
    crowd's climbing prices for more rounds.
    """

    def __init__(self, tail: np.ndarray, tile_count: int, again: int | None = None) -> None:
        self.level = tail.astype(np.int64).copy()
        #: Tiles each search of the whole library returns at least
        #: (:data:`RESERVE_COLUMNS`), and a cell's second and later such searches
        #: (``again``, :data:`CROWDED_RESERVE_COLUMNS` on crowded grids).
        self.reserve = RESERVE_COLUMNS
        self.reserve_again = RESERVE_COLUMNS if again is None else again
        #: Searches of the whole library of each cell so far.
        self.whole = np.zeros(len(tail), np.int64)
        # Not the width of CROWD_SEARCH: a reserve that beats its cell's cost is listed
        # in the next round, and a crowd's would widen its lists fourfold; past the
        # reserve the proof stops at the cheapest tile left out.
        width = max(self.reserve, self.reserve_again, MOST_PRICING_COLUMNS, OUT_SEARCH,
                    PRICING_COLUMNS)
        #: Each cell's tiles set aside by its last search of the whole library (``-1``:
        #: none) and their distances.
        self.reserve_tile = np.full((len(tail), width), -1, np.int64)
        self.reserve_distance = np.zeros((len(tail), width), np.int64)
        self.round = np.zeros(len(tail), np.int64)
        #: Prices of each round still some cell's reference (round 0: none).
        self.prices: dict[int, np.ndarray] = {0: np.zeros(tile_count, np.int64)}
        self.rounds = 0
        #: Library searches of each cell so far while it was placed.
        self.looks = np.zeros(len(tail), np.int64)
        #: Whether the last search of cells at the widest, and of cells outside their
        #: lists, found fewer tiles than cells.
        self.crowded = [False, False]

    def check(
        self, search: CandidateSearch, price: np.ndarray, cost: np.ndarray, reach: np.ndarray,
        upper: Callable[[np.ndarray, int], np.ndarray] | None = None,
        out: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Pairs ``(rows, tiles, distances)`` worth listing, and which of them beat ``cost``.

        Every unlisted tile that beats a cell's cost at ``price`` among those
        the proofs leave open is returned with ``True`` in the last array
        (a search returns at most :data:`PRICING_COLUMNS` per cell; past
        :data:`WIDEN_AFTER` searches of the same cell while placed, twice as
        many each time, up to :data:`MOST_PRICING_COLUMNS`: alike cells find
        the same tiles, only a few of them can take those, and the rest
        would search again round after round; a cell ``out`` of its lists
        looks for :data:`OUT_SEARCH` tiles and lists a slice of
        :data:`PRICING_COLUMNS` of them, each next such cell the next slice,
        so that a crowd of them spreads over the tiles it finds without
        widening the graph; where the last such search found fewer tiles than
        cells, the next looks for :data:`CROWD_SEARCH`, and so do placed cells
        searched again at the widest, each listing a slice of
        :data:`MOST_PRICING_COLUMNS`). A search
        looks up to ``reach`` (at least ``cost``): the tiles between cost
        and reach are returned too, to be listed, and the proof then holds
        up to ``reach``, so that a later round in which the cell's cost has
        risen (prices rise as the assignment settles) needs no new search.
        ``upper(cells, k)`` gives the searched cells' bounds for ``k``
        columns (see :meth:`CandidateSearch.below`), passed on to the
        searches; ``out`` marks the cells placed in no listed tile.
        """
        self.rounds += 1
        count = len(cost)
        if out is None:
            out = np.zeros(count, bool)
        direct_cells: list[np.ndarray] = []
        direct_tiles: list[np.ndarray] = []
        direct_offsets: list[np.ndarray] = []
        # Cells measured pair by pair, and what their proofs give beyond those pairs.
        measured_cells: list[np.ndarray] = []
        measured_levels: list[np.ndarray] = []
        searched: list[np.ndarray] = []
        # Searches of some tiles: (cells, tiles, each cell's level beyond those tiles).
        jobs: list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None, int]] = []
        for reference in np.unique(self.round):
            members = np.flatnonzero(self.round == reference)
            earlier = self.prices[int(reference)]
            # Only tiles priced then can have become cheaper since.
            support = np.flatnonzero(earlier)
            drop = earlier[support] - price[support]
            falling = drop > 0
            support, drop = support[falling], drop[falling]
            order = np.argsort(-drop, kind="stable")
            support, drop = support[order], drop[order]
            slack = self.level[members] - cost[members]
            # Tiles whose fall exceeds the slack: a prefix of the sorted falls.
            open_count = np.searchsorted(-drop, -slack, side="left")
            open_count[slack < 0] = -1  # below its own level: the proof says nothing
            direct = (open_count > 0) & (open_count <= DIRECT_PAIRS)
            if direct.any():
                counts = open_count[direct]
                direct_cells.append(np.repeat(members[direct], counts))
                offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
                direct_tiles.append(support[offsets])
                direct_offsets.append(offsets)
                measured_cells.append(members[direct])
                measured_levels.append(self.level[members[direct]] - _fall_past(drop, counts))
            searched.append(members[open_count < 0])
            wide = open_count > DIRECT_PAIRS
            if wide.any():
                cells, opened = members[wide], open_count[wide]
                prefix = np.minimum(len(support), 1 << np.ceil(np.log2(opened)).astype(np.int64))
                for length in np.unique(prefix).tolist():
                    share = cells[prefix == length]
                    jobs.append((share, support[:length],
                                 self.level[share] - _fall_past(drop, np.array(length)),
                                 self.reserve))
        rows = [np.zeros(0, np.int64)]
        tiles = [np.zeros(0, np.int64)]
        distances = [np.zeros(0, np.int64)]
        # The tiles set aside are outside the proofs: each is measured at today's prices.
        reserved_cells, reserved_columns = np.nonzero(self.reserve_tile >= 0)
        reserved = self.reserve_tile[reserved_cells, reserved_columns]
        reserved_distances = self.reserve_distance[reserved_cells, reserved_columns]
        beats = reserved_distances + price[reserved] < cost[reserved_cells]
        rows.append(reserved_cells[beats])
        tiles.append(reserved[beats])
        distances.append(reserved_distances[beats])
        new_level = self.level.copy()
        settled = np.zeros(count, bool)
        if direct_cells:
            cells = np.concatenate(direct_cells)
            candidates = np.concatenate(direct_tiles)
            measured = search.pairs(cells, candidates)
            below = measured + price[candidates] < cost[cells]
            rows.append(cells[below])
            tiles.append(candidates[below])
            distances.append(measured[below])
            settled[cells] = True
            # Proven beyond the pairs by the earlier proof; the pairs not listed are set
            # aside, one row per cell.
            owners = np.concatenate(measured_cells)
            new_level[owners] = np.concatenate(measured_levels)
            row_of = np.zeros(count, np.int64)
            row_of[owners] = np.arange(len(owners))
            offsets = np.concatenate(direct_offsets)
            aside = np.full((len(owners), int(offsets.max()) + 1), -1, np.int64)
            aside_distances = np.zeros(aside.shape, np.int64)
            rest = ~below
            aside[row_of[cells[rest]], offsets[rest]] = candidates[rest]
            aside_distances[row_of[cells[rest]], offsets[rest]] = measured[rest]
            self._set_aside(owners, aside, aside_distances, price, new_level)
        targets = np.concatenate(searched) if searched else np.zeros(0, np.int64)
        targets.sort()
        # A cell that lists tiles set aside this round is not proven in this round
        # anyway: its search of the library waits until those tiles are spent (on
        # the seed workload, 14% fewer such searches in as many rounds).
        listing = np.zeros(count, bool)
        listing[reserved_cells[beats]] = True
        targets = targets[~listing[targets]]
        again = self.whole[targets] > 0
        if self.reserve_again != self.reserve and again.any():
            jobs.insert(0, (targets[again], None, None, self.reserve_again))
            targets = targets[~again]
        jobs.insert(0, (targets, None, None, self.reserve))
        for job_cells, among, beyond_level, reserve in jobs:
            self._search(search, job_cells, among, beyond_level, price, reach, upper, out,
                         new_level, rows, tiles, distances, reserve)
        looked = settled.copy()
        for job_cells, _, _, _ in jobs:
            looked[job_cells] = True
        # Cells not looked at keep their level and reference round.
        self.level = new_level
        self.round[looked] = self.rounds
        self.prices[self.rounds] = price.copy()
        for reference in list(self.prices):
            if reference and not (self.round == reference).any():
                del self.prices[reference]
        row, tile = np.concatenate(rows), np.concatenate(tiles)
        distance = np.concatenate(distances)
        return row, tile, distance, distance + price[tile] < cost[row]

    def _search(
        self, search: CandidateSearch, targets: np.ndarray, among: np.ndarray | None,
        beyond_level: np.ndarray | None, price: np.ndarray, reach: np.ndarray,
        upper: Callable[[np.ndarray, int], np.ndarray] | None, out: np.ndarray,
        new_level: np.ndarray, rows: list[np.ndarray], tiles: list[np.ndarray],
        distances: list[np.ndarray], reserve: int | None = None,
    ) -> None:
        """Search ``targets`` (among the tiles ``among``, or all): their finds and levels.

        The pairs found are appended to ``rows``, ``tiles`` and ``distances``,
        the cells' new levels written to ``new_level`` (at most
        ``beyond_level``, what is proven of the tiles not searched). Every
        search returns at least ``reserve`` tiles (default :attr:`reserve`).
        """
        if not len(targets):
            return
        if among is None:
            self.whole[targets] += 1
        # A cell searched again wants more columns: its earlier finds were all taken.
        widening = np.clip(self.looks[targets] - WIDEN_AFTER, 0, 16)
        width = np.minimum(PRICING_COLUMNS << widening, MOST_PRICING_COLUMNS)
        # Cells outside their lists, and placed cells searched again at the widest, look
        # at more tiles than they list: each lists a slice (see below).
        outside = out[targets]
        widest = (PRICING_COLUMNS << widening > MOST_PRICING_COLUMNS) & ~outside
        looked = np.where(widest & self.crowded[0],
                          max(CROWD_SEARCH, MOST_PRICING_COLUMNS), width)
        looked[outside] = max(CROWD_SEARCH if self.crowded[1] else OUT_SEARCH,
                              PRICING_COLUMNS)
        width[outside] = PRICING_COLUMNS
        self.looks[targets[~outside]] += 1
        # One search for all: what is found past a cell's columns is set aside.
        wanted = max(int(looked.max()), self.reserve if reserve is None else reserve)
        if among is None:
            found, found_distances = search.below(
                targets, price, reach[targets], wanted,
                upper=None if upper is None else upper(targets, wanted))
        else:
            # The listed tiles bound the k-th best of the library, not of some tiles.
            found, found_distances = search.below(targets, price, reach[targets], wanted,
                                                  among=among)
        present = found >= 0
        if among is None:
            # Fewer tiles than cells among what the cells at the widest, or outside,
            # found: alike cells, which the next such search spreads over more slices.
            for kind, cells in enumerate((widest, outside)):
                if cells.any():
                    self.crowded[kind] = (
                        np.unique(found[cells][present[cells]]).size < cells.sum())
        total = np.where(present, found_distances + price[np.maximum(found, 0)],
                         np.iinfo(np.int64).max)
        new_level[targets] = reach[targets]
        # A search that returned all it may proves only up to its dearest tile.
        full = present.all(axis=1) & (found.shape[1] > 0)
        if full.any():
            new_level[targets[full]] = total[full].max(axis=1)
        if beyond_level is not None:
            new_level[targets] = np.minimum(new_level[targets], beyond_level)
        position = np.arange(found.shape[1])[None, :]
        kept = present & (position < width[:, None])
        spread = looked > width
        if spread.any():
            # Cells outside their lists, or in a crowd, keep a slice of what they found,
            # each next such cell the next slice: alike cells all find the same tiles,
            # and a slice each lists as many of them as there are tiles.
            slices = np.maximum(looked // width, 1)
            offset = (np.cumsum(spread) - 1) % slices * width
            in_slice = (position >= offset[:, None]) & (
                position < (offset + width)[:, None])
            kept = present & np.where(spread[:, None], in_slice, kept)
        aside = np.where(present & ~kept, found, -1)
        if among is None:
            # The search proves everything else: what was set aside before goes.
            self.reserve_tile[targets] = -1
        self._set_aside(targets, aside, found_distances, price, new_level)
        rows.append(np.broadcast_to(targets[:, None], found.shape)[kept])
        tiles.append(found[kept])
        distances.append(found_distances[kept])

    def _set_aside(
        self, cells: np.ndarray, tiles: np.ndarray, distances: np.ndarray, price: np.ndarray,
        new_level: np.ndarray,
    ) -> None:
        """Set ``tiles`` (``(len(cells), w)``, ``-1`` for none) aside, with those set before.

        Where a cell has more than its reserve holds, the dearest at today's
        ``price`` go, and its new level falls to the cheapest of those.
        """
        largest = np.iinfo(np.int64).max
        every = np.concatenate((self.reserve_tile[cells], tiles), axis=1)
        every_distance = np.concatenate(
            (self.reserve_distance[cells], distances.astype(np.int64, copy=False)), axis=1)
        present = every >= 0
        total = np.where(present, every_distance + price[np.maximum(every, 0)], largest)
        order = np.lexsort((every, total), axis=1)
        every, every_distance, total, present = (
            np.take_along_axis(values, order, axis=1)
            for values in (every, every_distance, total, present))
        # A tile set aside twice has equal totals both times: neighbours once sorted.
        repeat = np.zeros(every.shape, bool)
        repeat[:, 1:] = (every[:, 1:] == every[:, :-1]) & present[:, 1:]
        if repeat.any():
            every[repeat] = -1
            total[repeat] = largest
            order = np.argsort(total, axis=1, kind="stable")
            every, every_distance, total = (
                np.take_along_axis(values, order, axis=1)
                for values in (every, every_distance, total))
        width = self.reserve_tile.shape[1]
        if every.shape[1] > width:
            new_level[cells] = np.minimum(new_level[cells], total[:, width:].min(axis=1))
        self.reserve_tile[cells] = every[:, :width]
        self.reserve_distance[cells] = every_distance[:, :width]


def nearest_cells(distance: np.ndarray, tiles: np.ndarray, near: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each tile's ``near`` nearest cells as pairs ``(cells, tiles, distances)``.

    ``distance`` is ``(N, len(tiles))``: every cell's distance to each of
    ``tiles`` (ties in any order).
    """
    near = min(near, len(distance))
    cells = np.argpartition(distance, near - 1, axis=0)[:near]
    columns = np.broadcast_to(np.arange(distance.shape[1]), cells.shape)
    return (cells.ravel(), np.asarray(tiles, np.int64)[columns].ravel(),
            distance[cells, columns].ravel())


def _fall_past(drop: np.ndarray, count: np.ndarray) -> np.ndarray:
    """The largest price fall among the tiles past the first ``count`` of ``drop``.

    ``drop`` holds the falls in decreasing order; tiles whose price did not
    fall are past all of them and count as 0.
    """
    if not len(drop):
        return np.zeros(np.shape(count), np.int64)
    return np.where(count < len(drop), drop[np.minimum(count, len(drop) - 1)], 0)


def _priced_state(
    edges: _Edges, choice: np.ndarray, priced: tuple[np.ndarray, np.ndarray],
    outside: np.ndarray, tile_count: int,
) -> _flow.FlowState:
    """A placement on ``edges`` with its :func:`tile_prices`: each cell's tile and cost.

    ``cost`` is what each cell pays at the prices (its outside column's cost
    outside); ``outside`` is copied, as the rounds raise it afterwards.
    """
    tiles, prices = priced
    price = np.zeros(tile_count, np.int64)
    price[tiles] = prices
    inside = choice >= 0
    placed = choice[inside]
    cost = np.asarray(outside, np.int64).copy()
    cost[inside] = edges.dist[placed] + price[edges.tile[placed]]
    tile = np.full(len(choice), -1, np.int64)
    tile[inside] = edges.tile[placed]
    return _flow.FlowState(tile, cost, price, np.asarray(outside, np.int64).copy())


def _least_per_cell(edges: _Edges, values: np.ndarray, k: int) -> np.ndarray:
    """``(E,)`` bool: the edges of each cell with one of its ``k`` least ``values`` (ties in)."""
    count = len(edges.length)
    if not len(values):
        return np.zeros(0, bool)
    # One sort of (cell, value) keys, values clipped to what packs beside the cell: a
    # clipped value ties with larger ones, and ties are kept anyway.
    shift = 62 - max(1, count.bit_length())
    low = int(values.min())
    clipped = np.minimum(values - low, (1 << shift) - 1)
    ordered = np.sort((edges.row << shift) | clipped)
    starts = np.cumsum(edges.length) - edges.length
    last = starts + np.minimum(edges.length, k) - 1
    kth = np.full(count, -1, np.int64)
    listed = edges.length > 0
    kth[listed] = ordered[last[listed]] & ((1 << shift) - 1)
    return clipped <= kth[edges.row]


def _edges_of(edges: _Edges, cells: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Positions of the edges of ``cells``, cell after cell (``starts``: each cell's first)."""
    lengths = edges.length[cells]
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts[cells] - offsets, lengths) + np.arange(int(lengths.sum()))


def _kth_total(edges: _Edges, price: np.ndarray, cells: np.ndarray, k: int) -> np.ndarray:
    """Each of ``cells``' ``k``-th least listed distance plus price (int64 max with fewer listed).

    The listed tiles are some of the library's, so a pricing search's
    ``k``-th best is at most this: a search can start its threshold here.
    Only the searched cells' edges are sorted (a round searches ever fewer).
    """
    cells = np.asarray(cells, np.int64)
    lengths = edges.length[cells]
    slot = np.repeat(np.arange(len(cells)), lengths)
    at = _edges_of(edges, cells, np.cumsum(edges.length) - edges.length)
    total = edges.dist[at].astype(np.int64) + price[edges.tile[at]]
    order = np.lexsort((total, slot))
    slot, total = slot[order], total[order]
    rank = np.arange(len(slot)) - (np.cumsum(lengths) - lengths)[slot]
    upper = np.full(len(cells), np.iinfo(np.int64).max, np.int64)
    kth = rank == k - 1
    upper[slot[kth]] = total[kth]
    return upper


def tile_prices(
    edges: _Edges, choice: np.ndarray, cap: int, outside: np.ndarray | None = None,
    minimum: int = 0, surcharge: int = 0,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The least prices that prove ``choice`` optimal on the listed edges, or None.

    For the capacitated assignment (each tile at most ``cap`` cells) the dual
    is: maximise ``sum_i u_i - cap sum_j p_j`` with ``u_i <= c_ij + p_j`` and
    prices ``p >= 0``. A placement and prices are both optimal when every
    cell's tile minimises ``c_ij + p_j`` over its edges and only full tiles
    have a price (complementary slackness); then ``u_i = c_i,a(i) + p_a(i)``
    and the two objectives are equal.

    Given the placement, each tile must cost every cell listing it at least
    what that cell pays: ``p_j >= u_i - c_ij``, with ``u_i`` depending on the
    price of the cell's own tile. The least solution is found by raising
    prices from zero until every constraint holds (a longest-path problem,
    vectorised; it ends because an optimal placement has no cycle of moves
    that lowers the cost). It is valid when no tile with room needed a price
    (else a cell would rather move there) and no cell pays more than its
    outside column. The least prices are the ones to search with: they
    leave every cell the smallest cost ``u_i``, so the fewest cells need a
    look beyond their lists.

    Parameters
    ----------
    edges : _Edges
        The listed edges (integer distances).
    choice : numpy.ndarray
        ``(N,)`` edge of each cell; ``-1`` for its outside column.
    cap : int
        Most cells per tile.
    outside : numpy.ndarray, optional
        ``(N,)`` cost of each cell's outside column: a tile of its own,
        never full.
    minimum, surcharge : int
        Uses of a tile past its first ``minimum`` pay ``surcharge`` each
        (:meth:`_Solver._certified` with ``min_uses``): a tile's first
        ``minimum`` uses and its others are two columns of capacities
        ``minimum`` and ``cap - minimum``, priced ``p`` and ``p'``, and a
        cell pays ``q_j = min(p, surcharge + p')`` over them. In ``q`` the
        conditions are: ``q_j = 0`` on a tile below its minimum, at most
        ``surcharge`` at it, exactly ``surcharge`` between it and the cap,
        and at least ``surcharge`` at the cap. The least prices start from
        ``surcharge`` on the tiles past their minimum.

    Returns
    -------
    (tiles, prices) or None
        The listed tiles and their int64 prices (``q`` with a ``minimum``);
        None when no prices prove ``choice`` optimal (it is not, within the
        rounding of the solver).
    """
    tiles, tile_id = _compact(edges.tile)
    count = len(choice)
    inside = choice >= 0
    assigned = np.full(count, -1, np.int64)
    assigned[inside] = tile_id[choice[inside]]
    uses = np.bincount(assigned[inside], minlength=len(tiles))
    full = uses >= (minimum or cap)
    floor = np.where(uses > minimum, surcharge, 0).astype(np.int64) if minimum else None
    paid = np.zeros(count, np.int64)
    paid[inside] = edges.dist[choice[inside]]
    if outside is not None:
        paid[~inside] = outside[~inside]
    elif not inside.all():
        raise ValueError("cells on outside columns need their costs")
    # Compiled where Numba is (a 32,400-cell grid spent 12 s in the NumPy rounds), once
    # the edges are many or the loops loaded anyway: Numba's import and the loop's load
    # took 0.5-0.7 s of a 1 s make of 16 cells from 10 photos.
    raised: tuple[np.ndarray | None, np.ndarray] | None = None
    if np.issubdtype(edges.dist.dtype, np.integer) and (
            len(edges.row) >= COMPILED_PRICES_EDGES or _kernels.compiled_loops_loaded()):
        raised = _flow.least_prices(edges.length, tile_id, edges.dist, assigned, paid,
                                    len(tiles), floor=floor)
    if raised is None:
        raised = _least_prices(edges, tile_id, assigned, paid, len(tiles), floor)
    prices, cost = raised
    if prices is None:
        return None  # a cycle of moves that lowers the cost: not optimal
    if (prices[~full] > 0).any():
        return None  # a cell would rather move to a tile with room
    if minimum and (prices[uses < cap] > surcharge).any():
        return None  # a cell would rather pay the surcharge of a tile with room
    if outside is not None and (cost > outside).any():
        return None
    return tiles, prices


def _least_prices(
    edges: _Edges, tile_id: np.ndarray, assigned: np.ndarray, paid: np.ndarray,
    tile_count: int, floor: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray]:
    """The least prices of :func:`tile_prices` by NumPy (None: a cycle), and each cell's cost.

    ``floor``, where given, is each tile's least price (see :func:`._flow.least_prices`).
    """
    count = len(paid)
    inside = assigned >= 0
    prices = np.zeros(tile_count, np.int64) if floor is None else floor.astype(np.int64)
    cost = paid.copy()
    cost[inside] += prices[assigned[inside]]
    # Edges are grouped by cell: a cell's are one range.
    starts = np.cumsum(edges.length) - edges.length
    changed = np.arange(count)
    for _ in range(tile_count + 2):
        # Only the edges of cells whose cost rose can raise a price (the others'
        # bounds are already met): a frontier, as the rounds reach ever fewer cells.
        at = _edges_of(edges, changed, starts)
        raised = prices.copy()
        np.maximum.at(raised, tile_id[at], cost[edges.row[at]] - edges.dist[at])
        rose = raised > prices
        if not rose.any():
            break
        prices = raised
        changed = np.flatnonzero(inside & rose[np.maximum(assigned, 0)])
        cost[changed] = paid[changed] + prices[assigned[changed]]
    else:
        return None, cost
    return prices, cost


def _compact(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` for non-negative integers, without a sort.

    Tile positions span the library, so a table over it costs one pass
    where sorting millions of edges in every round cost seconds.
    """
    top = int(values.max(initial=-1)) + 1
    if top > 8 * len(values) + (1 << 20):
        found, inverse = np.unique(values, return_inverse=True)
        return found, inverse.reshape(-1)
    present = np.zeros(top, bool)
    present[values] = True
    found = np.flatnonzero(present)
    position = np.cumsum(present) - 1
    return found, position[values]


def _inf(dtype: np.dtype) -> int | float:
    return np.inf if np.issubdtype(dtype, np.floating) else np.iinfo(np.int64).max


def _as_distances(distances: np.ndarray) -> np.ndarray:
    distances = np.asarray(distances)
    if np.issubdtype(distances.dtype, np.floating):
        return distances.astype(np.float64, copy=False)
    return distances.astype(np.int64, copy=False)


# --------------------------------------------------------------------------
# The capacitated assignment.


def _solve(
    count: int,
    edges: _Edges,
    allowed: np.ndarray,
    cap: int | None,
    outside: np.ndarray | None,
    minimum: int = 0,
    keep: np.ndarray | None = None,
    rounding: bool = False,
    surcharge: int | None = None,
) -> np.ndarray:
    """Min-cost assignment of every cell to one allowed edge or its outside column.

    With a ``minimum``, every listed tile first fills that many cells where
    it can: each tile gets ``minimum`` columns at the edges' costs, and every
    other use costs a surcharge larger than any difference of total costs,
    so that the solver fills as many of those columns as the edges allow
    before it minimises the cost. The caller checks that they were all filled.

    Parameters
    ----------
    count : int
        Cells.
    edges : _Edges
        Candidate edges.
    allowed : numpy.ndarray
        ``(E,)`` bool: edges that may be used.
    cap : int or None
        Most cells per tile.
    outside : numpy.ndarray or None
        ``(N,)`` cost of each cell's outside column; ``None``: no outside
        columns (only listed, allowed tiles).
    minimum : int
        Cells every listed tile should fill.
    keep : numpy.ndarray, optional
        ``(N,)`` each cell's tile in an earlier solution: among optimal
        assignments, the min-cost flow takes one that moves the fewest cells
        (spacing rounds then converge as they do with LAPJVsp, whose
        augmenting paths change little; with many equal costs an arbitrary
        optimum could break spacing elsewhere at every round). See
        :func:`_solve_by_flow` for costs too large to scale.
    rounding : bool
        Where the costs are beyond the min-cost flow's range, let it solve
        them rounded down to multiples of a power of two (optimal within
        twice the cells times that power) instead of LAPJVsp (exact, but an
        hour on a graph of millions of edges). Only for callers that verify
        optimality themselves (the certified pricing rounds do, exactly).
    surcharge : int, optional
        The surcharge of each use past a tile's ``minimum`` (in the units of
        the distances), where the caller prices it (:meth:`_Solver._certified`);
        else one larger than any difference of total costs.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` int64 chosen edge of each cell, ``-1`` for the outside column.
        Without outside columns and no full assignment, ``-1`` marks the cells
        a maximum matching leaves out (the other entries are then meaningless).
    """
    index = np.flatnonzero(allowed)
    row, tile, dist = edges.row[index], edges.tile[index], edges.dist[index]
    choice = np.full(count, -1, np.int64)
    # Every cell's first allowed edge is its best (lists are best first, grouped by cell).
    first = np.full(count, -1, np.int64)
    starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]]) if len(row) else row
    first[row[starts]] = index[starts]
    has = first >= 0
    if cap is None and not minimum:
        # Nothing is contested: each cell independently takes its best edge (an outside
        # column never costs less than a listed tile).
        choice[has] = first[has]
        return choice
    # When no tile is wanted first by more than cap cells, everyone's best is optimal.
    best_use = np.bincount(edges.tile[first[has]])
    if (not minimum and (outside is not None or has.all())
            and best_use.max(initial=0) <= (cap or count)):
        choice[has] = first[has]
        return choice

    compact, tile_id = _compact(tile)
    # Costs are shifted per cell by its best allowed edge: a per-cell constant does not
    # change which full assignment is cheapest, and keeps the numbers small.
    base = np.zeros(count, dist.dtype)
    base[has] = edges.dist[first[has]]
    if _flow_solver() is not None and np.issubdtype(dist.dtype, np.integer):
        by_flow = _solve_by_flow(count, row, tile_id, len(compact), dist - base[row],
                                 base, cap, outside, minimum,
                                 None if keep is None else tile != keep[row], rounding,
                                 surcharge)
        if by_flow is not None:
            chosen = by_flow >= 0
            choice[chosen] = index[by_flow[chosen]]
            return choice
    listed = np.bincount(tile_id, minlength=len(compact))
    contested = listed > (cap if cap is not None else count)
    # A tile's shared columns: its minimum, then (when contested) up to its cap.
    replicas = np.where(contested, cap or 0, minimum)
    # Columns: the replicas of each contested tile, one private column per edge of an
    # uncontested tile (it can never be over-used), then one outside column per cell.
    rep_start = np.concatenate(([0], np.cumsum(replicas)))
    private = ~contested[tile_id]
    private_col = rep_start[-1] + np.cumsum(private) - 1
    outside_base = rep_start[-1] + int(private.sum())

    # LAPJVsp needs non-zero weights: every cost at least 1.
    cost = (dist - base[row]).astype(np.float64) + 1.0

    rep_edges = np.flatnonzero(replicas[tile_id] > 0)
    copies = replicas[tile_id[rep_edges]]
    rep_edge = np.repeat(rep_edges, copies)
    offset = np.arange(len(rep_edge)) - np.repeat(np.cumsum(copies) - copies, copies)
    rep_col = rep_start[tile_id[rep_edge]] + offset
    rep_cost = cost[rep_edge]
    private_cost = cost[private]
    if minimum:
        # Every use beyond a tile's minimum pays more than all the costs could differ.
        extra = float(np.ptp(cost)) * count + 1.0 if surcharge is None else float(surcharge)
        rep_cost = rep_cost + np.where(offset >= minimum, extra, 0.0)
        private_cost = private_cost + extra

    if outside is None:
        out_rows = np.zeros(0, np.int64)
        out_cost = np.zeros(0)
    else:
        # The relaxation: every cell has a listed tile (checked by the caller), so its
        # bound on unlisted tiles is finite.
        out_rows = np.arange(count)
        out_cost = (outside - base).astype(np.float64) + 1.0
    all_rows = np.concatenate((row[private], row[rep_edge], out_rows))
    all_cols = np.concatenate((private_col[private], rep_col, outside_base + out_rows))
    all_cost = np.concatenate((private_cost, rep_cost, out_cost))
    # Imported here: SciPy's sparse graphs take a noticeable time to import and
    # only repetition-limited mosaics need them.
    from scipy.sparse import csr_array
    from scipy.sparse.csgraph import (
        maximum_bipartite_matching,
        min_weight_full_bipartite_matching,
    )

    matrix = csr_array(
        (all_cost, (all_rows, all_cols)), shape=(count, outside_base + count)
    )
    if outside is None:
        # Without outside columns a full assignment may not exist: a maximum matching
        # (Hopcroft-Karp, cheap) says so and names cells to give longer lists.
        matched = maximum_bipartite_matching(matrix, perm_type="column")
        if (matched < 0).any():
            choice[matched < 0] = -1
            choice[matched >= 0] = 0
            return choice
    cells, cols = min_weight_full_bipartite_matching(matrix)
    # Map matched columns back to edges.
    col_edge = np.full(outside_base + count, -1, np.int64)
    col_edge[private_col[private]] = np.flatnonzero(private)
    col_tile = np.full(outside_base + count, -1, np.int64)
    col_tile[: rep_start[-1]] = np.repeat(np.arange(len(compact)), replicas)
    picked = np.full(count, -1, np.int64)
    is_private = col_edge[cols] >= 0
    picked[cells[is_private]] = col_edge[cols[is_private]]
    is_rep = col_tile[cols] >= 0
    if is_rep.any():
        key = row * len(compact) + tile_id
        order = np.argsort(key, kind="stable")
        want = cells[is_rep] * len(compact) + col_tile[cols[is_rep]]
        picked[cells[is_rep]] = order[np.searchsorted(key, want, sorter=order)]
    ok = picked >= 0
    choice[ok] = index[picked[ok]]
    return choice


#: Which solver :func:`_solve` uses: "auto" (OR-Tools' min-cost flow when installed,
#: else SciPy's LAPJVsp), "flow" or "lapjv". Both are exact; tests pin each.
SOLVER = "auto"


def _flow_solver() -> Any:
    """OR-Tools' ``SimpleMinCostFlow`` when it is installed and chosen, else None."""
    if SOLVER == "lapjv":
        return None
    try:
        from ortools.graph.python.min_cost_flow import SimpleMinCostFlow
    except ImportError:
        if SOLVER == "flow":
            raise
        return None
    return SimpleMinCostFlow


def _cp_sat() -> Any | None:
    """OR-Tools' CP-SAT module where it is installed and the flow solver is not ruled out."""
    if SOLVER == "lapjv":
        return None
    try:
        from ortools.sat.python import cp_model
    except ImportError:
        return None
    return cp_model


def _exact_by_cp_sat(
    edges: _Edges, cells: int, tile_id: np.ndarray, tiles: int, minimum: int, cap: int,
    window: np.ndarray, member: np.ndarray,
) -> np.ndarray | None:
    """The edges taken by CP-SAT's best placement within :data:`EXACT_WORK`, or None.

    ``window[k]`` is the spacing window (one tile's ``D x D`` block) that edge
    ``member[k]`` lies in: at most one edge of each is taken.
    """
    cp_model = _cp_sat()
    assert cp_model is not None
    model = cp_model.CpModel()
    count = len(edges.row)
    taken = [model.new_bool_var(f"e{index}") for index in range(count)]
    for group in np.split(np.arange(count), np.flatnonzero(np.diff(edges.row)) + 1):
        model.add_exactly_one(taken[index] for index in group.tolist())
    order = np.argsort(tile_id, kind="stable")
    for group in np.split(order, np.flatnonzero(np.diff(tile_id[order])) + 1):
        model.add_linear_constraint(sum(taken[index] for index in group.tolist()),
                                    minimum, cap)
    if len(window):
        order = np.argsort(window, kind="stable")
        bounds = np.flatnonzero(np.diff(window[order])) + 1
        for group in np.split(member[order], bounds):
            if len(group) > 1:
                model.add_at_most_one(taken[index] for index in group.tolist())
    # Whole numbers: the squared distances are (rounding a tinted float costs < 1 a cell).
    cost = np.rint(np.asarray(edges.dist, np.float64) - float(np.min(edges.dist))).astype(
        np.int64)
    model.minimize(cp_model.LinearExpr.weighted_sum(taken, cost.tolist()))
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.max_deterministic_time = EXACT_WORK
    solver.parameters.max_time_in_seconds = EXACT_SECONDS
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    return np.fromiter((solver.boolean_value(variable) for variable in taken), bool, count)


def _exact_by_highs(
    edges: _Edges, cells: int, tile_id: np.ndarray, tiles: int, minimum: int, cap: int,
    window: np.ndarray, member: np.ndarray,
) -> np.ndarray | None:
    """The edges taken by SciPy's HiGHS within :data:`EXACT_SECONDS`, or None (see
    :func:`_exact_by_cp_sat`)."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import csr_matrix

    count = len(edges.row)
    entries = np.ones(count)
    variables = np.arange(count)
    constraints = [
        LinearConstraint(csr_matrix((entries, (edges.row, variables)),
                                    shape=(cells, count)), 1, 1),
        LinearConstraint(csr_matrix((entries, (tile_id, variables)),
                                    shape=(tiles, count)), minimum, cap),
    ]
    if len(window):
        constraints.append(LinearConstraint(
            csr_matrix((np.ones(len(window)), (window, member)),
                       shape=(int(window.max()) + 1, count)), 0, 1))
    result = milp(edges.dist.astype(np.float64), constraints=constraints,
                  integrality=np.ones(count), bounds=Bounds(0, 1),
                  options={"time_limit": EXACT_SECONDS})
    if result.x is None:
        return None
    return np.asarray(result.x > 0.5)


def _solve_by_flow(
    count: int,
    row: np.ndarray,
    tile_id: np.ndarray,
    tile_count: int,
    cost: np.ndarray,
    base: np.ndarray,
    cap: int | None,
    outside: np.ndarray | None,
    minimum: int,
    moved: np.ndarray | None = None,
    rounding: bool = False,
    surcharge: int | None = None,
) -> np.ndarray | None:
    """The assignment of :func:`_solve` as a min-cost flow (OR-Tools), or None.

    See :func:`flow_units` (every cell one unit) for the network.

    Returns
    -------
    numpy.ndarray or None
        ``(N,)`` position in ``row`` of each cell's edge, ``-1`` outside (or
        left out); None when the costs are out of the solver's range (then
        LAPJVsp solves it), unless ``rounding`` (see :func:`_solve`).
    """
    units = flow_units(count, row, tile_id, tile_count, cost, base, cap, outside, minimum,
                       moved, rounding, surcharge)
    if units is None:
        return None
    used = np.flatnonzero(units[0] > 0)
    picked = np.full(count, -1, np.int64)
    picked[row[used]] = used
    return picked


def flow_units(
    count: int,
    row: np.ndarray,
    tile_id: np.ndarray,
    tile_count: int,
    cost: np.ndarray,
    base: np.ndarray,
    cap: int | None,
    outside: np.ndarray | None,
    minimum: int = 0,
    moved: np.ndarray | None = None,
    rounding: bool = False,
    surcharge: int | None = None,
    supply: np.ndarray | None = None,
    edge_limit: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Units of a min-cost flow (OR-Tools) on each edge and outside column, or None.

    One unit leaves each cell, through one of its edges to a tile node, or
    straight to the sink through its outside column; a tile passes at most
    ``cap`` units to the sink (its first ``minimum`` for free, the others at
    the surcharge of :func:`_solve`). The capacities make replicas of the
    contested tiles unnecessary, and OR-Tools' cost scaling is exact on
    integer costs and several times faster than LAPJVsp on these graphs.
    Without outside columns a maximum flow of least cost is solved, which
    leaves out the cells that no full assignment could place. ``cost`` is
    each edge's distance less its cell's ``base`` (its best allowed edge's).
    With ``supply``, cell ``i`` stands for ``supply[i]`` alike cells (see
    :mod:`._groups`): that many units leave it, at most ``min(supply[i],
    cap)`` through each of its edges (``min(edge_limit[i], cap)`` with
    ``edge_limit``), up to all of them outside.

    Returns
    -------
    tuple of numpy.ndarray or None
        ``(len(row),)`` units on each edge and ``(N,)`` units through each
        cell's outside column (zeros without outside columns); None when the
        costs are out of the solver's range, unless ``rounding`` (see
        :func:`_solve`).
    """
    solver_type = _flow_solver()
    assert solver_type is not None
    # Relative costs keep the solver's scaled costs small; the outside columns shift too.
    cost = cost.astype(np.int64, copy=False)
    base = base.astype(np.int64, copy=False)
    outside_cost = None if outside is None else np.asarray(outside, np.int64) - base
    # The solver needs its largest cost times its nodes within int64. A tinted search's
    # units are multiples of a large factor (10,000 at full tint): divided by the costs'
    # common factor, the same problem fits for grids of tens of thousands of cells.
    common = _common_factor(cost)
    if outside_cost is not None:
        common = math.gcd(common, _common_factor(outside_cost))
    if minimum and surcharge is not None:
        common = math.gcd(common, int(surcharge))
    if common > 1:
        cost = cost // common
        outside_cost = None if outside_cost is None else outside_cost // common
        surcharge = None if surcharge is None else int(surcharge) // common
    scale = 1
    units = np.ones(count, np.int64) if supply is None else np.asarray(supply, np.int64)
    total = int(units.sum())
    if moved is not None:
        # Costs scaled past any sum of the tie-breaks where the solver's range allows:
        # optima stay optima, and among them the one that moves the fewest cells wins
        # (``keep`` of _solve). Where it does not (tinted search units, ~1e7 per unit
        # of the objective), a move costs one search unit more: far below what a
        # spacing round's heuristic gives up anyway.
        largest = max(1, int(cost.max(initial=0)), 0 if outside_cost is None
                      else int(outside_cost.max(initial=0)))
        if minimum and surcharge is None:
            # Room for the minimum's surcharge past every total too (below): scaled past
            # it, the costs went out of the solver's range and were rounded, tie-breaks
            # and all, and the spacing rounds of a logo from 120 photos, every photo
            # used, reshuffled thousands of alike cells each round and never ended.
            largest *= total + 1
        room = np.iinfo(np.int64).max // (8 * (count + tile_count + 2) * largest)
        scale = int(min(count + 1, room))
        if scale >= 1:
            cost = cost * scale + moved
        elif rounding:
            scale, moved = 1, None  # no room for the tie-breaks
        else:
            return None
    limit = cap if cap is not None else total
    cell_node = np.arange(1, count + 1)
    tile_node = count + 1 + np.arange(tile_count)
    source, sink = 0, count + tile_count + 1
    tails = [np.zeros(count, np.int64), cell_node[row]]
    heads = [cell_node, tile_node[tile_id]]
    per_edge = units if edge_limit is None else np.asarray(edge_limit, np.int64)
    capacities = [units, np.minimum(per_edge[row], limit)]
    costs = [np.zeros(count, np.int64), cost]
    if minimum:
        if surcharge is None:
            span = int(cost.max(initial=0)) - int(cost.min(initial=0))
            surcharge = span * total + 1
        else:
            surcharge = int(surcharge) * scale
        if surcharge > np.iinfo(np.int64).max // 4:
            return None
        free = min(minimum, limit)
        tails += [tile_node, tile_node]
        heads += [np.full(tile_count, sink), np.full(tile_count, sink)]
        capacities += [np.full(tile_count, free, np.int64),
                       np.full(tile_count, limit - free, np.int64)]
        costs += [np.zeros(tile_count, np.int64), np.full(tile_count, surcharge, np.int64)]
    else:
        tails.append(tile_node)
        heads.append(np.full(tile_count, sink))
        capacities.append(np.full(tile_count, limit, np.int64))
        costs.append(np.zeros(tile_count, np.int64))
    if outside is not None:
        tails.append(cell_node)
        heads.append(np.full(count, sink))
        capacities.append(units)
        assert outside_cost is not None
        costs.append(outside_cost * scale + (moved is not None))
    arc_tails = np.concatenate(tails).astype(np.int32)
    arc_heads = np.concatenate(heads).astype(np.int32)
    arc_capacities = np.concatenate(capacities)
    arc_costs = np.concatenate(costs)

    def solved(arc_costs: np.ndarray) -> tuple[Any, np.ndarray, int]:
        flow = solver_type()
        arcs = flow.add_arcs_with_capacity_and_unit_cost(
            arc_tails, arc_heads, arc_capacities, arc_costs)
        if outside is not None:
            supplies = np.zeros(sink + 1, np.int64)
            supplies[source], supplies[sink] = total, -total
            flow.set_nodes_supplies(np.arange(sink + 1, dtype=np.int32), supplies)
            return flow, arcs, flow.solve()
        flow.set_node_supply(source, total)
        flow.set_node_supply(sink, -total)
        return flow, arcs, flow.solve_max_flow_with_min_cost()

    flow, arcs, status = solved(arc_costs)
    if status == solver_type.BAD_COST_RANGE and rounding:
        # Rounded down past the solver's range (its largest cost times the nodes,
        # with room to spare): costs are non-negative, each path's error below
        # one unit of the rounding per arc.
        largest = int(arc_costs.max(initial=0))
        flow, arcs, status = solved(
            arc_costs >> max(1, (largest * 8 * (sink + 2)).bit_length() - 62))
    if status != solver_type.OPTIMAL:
        return None
    edge_units = flow.flows(arcs[count:count + len(row)])
    outside_units = (np.zeros(count, np.int64) if outside is None
                     else flow.flows(arcs[len(arcs) - count:]))
    return edge_units, outside_units


# --------------------------------------------------------------------------
# Spacing.


@dataclass(frozen=True)
class Layout:
    """Where cells of unequal sizes lie, for spacing (adaptive cells).

    Attributes
    ----------
    centre : numpy.ndarray
        ``(N, 2)`` int64 ``(y, x)`` of each cell's centre, in units of
        ``1 / unit`` of a grid cell; two cells are ``max(|dy|, |dx|) / unit``
        grid cells apart (Chebyshev, centre to centre).
    unit : int
        Units per grid cell.
    """

    centre: np.ndarray
    unit: int


def spacing_violations(
    tile: np.ndarray, rows: int, cols: int, min_spacing: int, layout: Layout | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of cells that hold the same tile closer than ``min_spacing``.

    Parameters
    ----------
    tile : numpy.ndarray
        ``(rows * cols,)`` tile of each cell, row-major.
    rows, cols : int
        Grid shape.
    min_spacing : int
        Minimum Chebyshev distance ``D`` (``<= 1``: nothing is a violation).
    layout : Layout, optional
        Cells of unequal sizes (then ``tile`` is in the layout's order and
        ``rows``, ``cols`` are not used): centres closer than ``D`` grid
        cells.

    Returns
    -------
    tuple of numpy.ndarray
        ``(a, b)`` int64 cell indices of each violating pair, ``a < b``.
    """
    empty = np.zeros(0, np.int64)
    if min_spacing <= 1 or len(tile) < 2:
        return empty, empty
    tile = np.asarray(tile, np.int64)
    order = np.argsort(tile, kind="stable")
    sorted_tile = tile[order]
    _, runs = np.unique(sorted_tile, return_counts=True)
    longest = int(runs.max())
    window = (2 * min_spacing - 1) ** 2 // 2
    pairs_a, pairs_b = [], []
    if layout is not None or longest - 1 <= window:
        # Compare each cell with the next cells of the same tile: work N x (longest use).
        if layout is None:
            r, c, reach = order // cols, order % cols, min_spacing
        else:
            r, c = layout.centre[order, 0], layout.centre[order, 1]
            reach = min_spacing * layout.unit
        for lag in range(1, longest):
            same = sorted_tile[lag:] == sorted_tile[:-lag]
            near = np.maximum(np.abs(r[lag:] - r[:-lag]), np.abs(c[lag:] - c[:-lag]))
            hit = np.flatnonzero(same & (near < reach))
            pairs_a.append(order[hit])
            pairs_b.append(order[hit + lag])
    else:
        # Compare the grid with itself shifted by every offset of one half-window.
        grid = tile.reshape(rows, cols)
        cell = np.arange(rows * cols).reshape(rows, cols)
        for dr in range(0, min_spacing):
            for dc in range(-min_spacing + 1, min_spacing):
                if dr == 0 and dc <= 0:
                    continue
                c0, c1 = max(0, -dc), min(cols, cols - dc)
                if c0 >= c1 or dr >= rows:
                    continue
                here = grid[: rows - dr, c0:c1]
                there = grid[dr:, c0 + dc : c1 + dc]
                hit = here == there
                pairs_a.append(cell[: rows - dr, c0:c1][hit])
                pairs_b.append(cell[dr:, c0 + dc : c1 + dc][hit])
    if not pairs_a:
        return empty, empty
    a, b = np.concatenate(pairs_a), np.concatenate(pairs_b)
    return np.minimum(a, b), np.maximum(a, b)


def layout_classes(layout: Layout, min_spacing: int, tries: int = 3) -> np.ndarray | None:
    """Classes of adaptive leaves whose members are all at least ``min_spacing`` apart.

    The lattice classes of a grid (``(r mod D, c mod D)``) for leaves of
    unequal sizes: the centres are binned by the finest step between them
    (the smallest leaves' side), and a leaf's class is its bin's ``(row mod
    m, column mod m)``; ``m`` is the least, from ``ceil(D / step)``, for which
    no two leaves of a class are closer than ``D`` (checked, since larger
    leaves' centres lie off their bins' centres). A tile kept to one class
    never breaks the spacing.

    Parameters
    ----------
    layout : Layout
        The leaves' centres.
    min_spacing : int
        ``D``, in grid cells (at least 2).
    tries : int
        How many values of ``m`` past the least to try.

    Returns
    -------
    numpy.ndarray or None
        ``(N,)`` int64 class of each leaf (``0 .. m * m - 1``), or None where
        none of the tried ``m`` keeps every class apart.
    """
    centre = np.asarray(layout.centre, np.int64)
    steps = [np.diff(np.unique(centre[:, axis])) for axis in (0, 1)]
    found = np.concatenate(steps)
    if not len(found):
        return np.zeros(len(centre), np.int64)  # every leaf on one spot: one at most
    step = int(found.min())
    reach = min_spacing * layout.unit
    least = max(1, -(-reach // step))
    for size in range(least, least + tries + 1):
        kind = (centre[:, 0] // step % size) * size + centre[:, 1] // step % size
        close, _ = spacing_violations(kind, 0, 0, min_spacing, layout)
        if not len(close):
            return kind
    return None


def _layout_windows(layout: Layout, min_spacing: int, row: np.ndarray, tile_id: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The exact placement's spacing groups on adaptive leaves: ``(window, member)``.

    Each listed pair ``k`` (leaf ``row[k]``, tile ``tile_id[k]``) joins, for
    every window of side ``D`` whose top-left corner is at centre
    coordinates ``(Y, X)`` with ``y - D < Y <= y`` and ``x - D < X <= x``,
    the group of that window and tile: at most one pair of a group is taken.
    Two leaves closer than ``D`` lie in the window at their least
    coordinates, and any two leaves of one window are closer than ``D``.
    """
    centre = np.asarray(layout.centre, np.int64)
    reach = min_spacing * layout.unit
    ys, xs = np.unique(centre[:, 0]), np.unique(centre[:, 1])
    y, x = centre[row, 0], centre[row, 1]
    low_y, high_y = np.searchsorted(ys, y - reach, "right"), np.searchsorted(ys, y, "right")
    low_x, high_x = np.searchsorted(xs, x - reach, "right"), np.searchsorted(xs, x, "right")
    variables = np.arange(len(row))
    keys, members = [], []
    for down in range(int((high_y - low_y).max(initial=0))):
        for across in range(int((high_x - low_x).max(initial=0))):
            top, left = low_y + down, low_x + across
            inside = (top < high_y) & (left < high_x)
            keys.append((tile_id[inside] * len(ys) + top[inside]) * len(xs) + left[inside])
            members.append(variables[inside])
    if not keys:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    _, window = np.unique(np.concatenate(keys), return_inverse=True)
    return window.astype(np.int64), np.concatenate(members)


def near_holders(
    cells: np.ndarray, tiles: np.ndarray, placed: np.ndarray, rows: int, cols: int,
    min_spacing: int, layout: Layout | None = None,
) -> np.ndarray:
    """Which pairs ``(cells[k], tiles[k])`` a cell within ``min_spacing`` already holds.

    Parameters
    ----------
    cells, tiles : numpy.ndarray
        int64 cell and library tile of each pair.
    placed : numpy.ndarray
        ``(N,)`` tile of every cell (``-1``: none).
    rows, cols, min_spacing, layout
        As in :func:`spacing_violations`.

    Returns
    -------
    numpy.ndarray
        bool per pair: another cell closer than ``min_spacing`` holds its tile,
        so that placing it would break the spacing as the placement stands.

    Notes
    -----
    Two ways, whichever costs less: each pair compared with its tile's
    holders (found by one sort of ``placed``) one rank at a time, pairs
    times the most uses of a tile (a large library); or, on a grid, every
    holder's tile flagged at each cell of its window in a table of cells by
    tiles held, ``(2 D - 1)^2`` flags per cell, and each pair's flag read (a
    small library, whose tiles fill hundreds of cells each: 20 s a call on
    16,960 cells and 70 tiles the first way). The table needs a row of the
    grid by the tiles held in :data:`WINDOW_MARKS` flags at least.
    """
    near = np.zeros(len(cells), bool)
    if min_spacing <= 1 or not len(cells):
        return near
    width = 2 * min_spacing - 1
    uses = np.bincount(placed[placed >= 0])
    most, held = int(uses.max(initial=0)), int(np.count_nonzero(uses))
    if (layout is None and cols * held <= WINDOW_MARKS
            and len(cells) * most > len(placed) * width * width):
        return _near_by_window(cells, tiles, placed, rows, cols, min_spacing)
    if most > BUCKET_USES:
        return _near_by_bucket(cells, tiles, placed, cols, min_spacing, layout)
    return _near_by_rank(cells, tiles, placed, cols, min_spacing, layout)


#: Most uses of a tile up to which :func:`near_holders` compares pairs with all of its
#: holders; past it, only with those in the nine squares of the spacing's side around.
BUCKET_USES = 16


def _where(count: int, cols: int, min_spacing: int, layout: Layout | None,
           ) -> tuple[np.ndarray, int]:
    """Each of ``count`` cells' position and the spacing in its units: rows and columns,
    or centres."""
    if layout is None:
        cells = np.arange(count)
        return np.stack((cells // cols, cells % cols), axis=1), min_spacing
    return np.asarray(layout.centre, np.int64), min_spacing * layout.unit


def _near_by_bucket(
    cells: np.ndarray, tiles: np.ndarray, placed: np.ndarray, cols: int, min_spacing: int,
    layout: Layout | None,
) -> np.ndarray:
    """:func:`near_holders` comparing each pair with its tile's holders in the squares around.

    Holders are sorted into squares of the spacing's side ``s``: one closer
    than ``s`` on both axes lies in the pair's square or one of its eight
    neighbours, so each pair meets those squares' holders of its tile, rank
    by rank, not all of them (adaptive cells from 40 photos: a tile held by
    180 leaves, and 27 of a make's 29 s spent here comparing each pair with
    every one).
    """
    near = np.zeros(len(cells), bool)
    if min_spacing <= 1 or not len(cells):
        return near
    where, reach = _where(len(placed), cols, min_spacing, layout)
    square = where // reach + 1  # from 1: a neighbour of the first square is 0
    span_y, span_x = int(square[:, 0].max()) + 2, int(square[:, 1].max()) + 2
    holders = np.flatnonzero(placed >= 0)
    keys = (placed[holders] * span_y + square[holders, 0]) * span_x + square[holders, 1]
    order = np.argsort(keys, kind="stable")
    keys, holders = keys[order], holders[order]
    cells = np.asarray(cells, np.int64)
    base = (np.asarray(tiles, np.int64) * span_y + square[cells, 0]) * span_x + square[cells, 1]
    # The pairs in the order of their keys: sorted needles are found several times faster.
    by_key = np.argsort(base, kind="stable")
    base, cells = base[by_key], cells[by_key]
    found = np.zeros(len(cells), bool)
    for offset in (dy * span_x + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)):
        first = np.searchsorted(keys, base + offset, side="left")
        last = np.searchsorted(keys, base + offset, side="right")
        for rank in range(int((last - first).max(initial=0))):
            pairs = np.flatnonzero(first + rank < last)
            holder = holders[first[pairs] + rank]
            apart = np.abs(where[holder] - where[cells[pairs]]).max(axis=1)
            found[pairs[(holder != cells[pairs]) & (apart < reach)]] = True
    near[by_key] = found
    return near


def _near_by_rank(
    cells: np.ndarray, tiles: np.ndarray, placed: np.ndarray, cols: int, min_spacing: int,
    layout: Layout | None,
) -> np.ndarray:
    """:func:`near_holders` comparing each pair with its tile's holders, rank by rank."""
    near = np.zeros(len(cells), bool)
    order = np.argsort(placed, kind="stable")
    held = placed[order]
    first = np.searchsorted(held, tiles, side="left")
    last = np.searchsorted(held, tiles, side="right")
    where, reach = _where(len(placed), cols, min_spacing, layout)
    for rank in range(int((last - first).max(initial=0))):
        pairs = np.flatnonzero(first + rank < last)
        holder = order[first[pairs] + rank]
        apart = np.abs(where[holder] - where[cells[pairs]]).max(axis=1)
        near[pairs[(holder != cells[pairs]) & (apart < reach)]] = True
    return near


def _near_by_window(
    cells: np.ndarray, tiles: np.ndarray, placed: np.ndarray, rows: int, cols: int,
    min_spacing: int,
) -> np.ndarray:
    """:func:`near_holders` on a grid, by marking each holder's tile around it.

    A table of one flag per cell and tile held: each holder's tile is
    flagged at every cell of its window (one vectorised write per offset),
    and each pair reads its flag. Band by band of rows, so that the table
    stays under :data:`WINDOW_MARKS` flags whatever the grid (a band's cells
    see the holders up to ``D - 1`` rows past it).
    """
    near = np.zeros(len(cells), bool)
    cells = np.asarray(cells, np.int64)
    # The table's columns: the tiles held anywhere; a pair of any other tile is never near.
    held_tiles, held_column = np.unique(placed[placed >= 0], return_inverse=True)
    column = np.full(len(placed), -1, np.int64)
    column[placed >= 0] = held_column
    held_count = len(held_tiles)
    if not held_count:
        return near
    at = np.minimum(np.searchsorted(held_tiles, tiles), held_count - 1)
    pair_column = np.where(held_tiles[at] == tiles, at, -1)
    reach = min_spacing - 1
    band = max(1, WINDOW_MARKS // (cols * held_count))
    cell_row = cells // cols
    order = np.argsort(cell_row, kind="stable")
    edges = np.searchsorted(cell_row[order], np.arange(0, rows + band, band))
    for top, start, stop in zip(range(0, rows, band), edges[:-1], edges[1:], strict=False):
        if start == stop:
            continue
        pairs = order[start:stop]
        pairs = pairs[pair_column[pairs] >= 0]
        if not len(pairs):
            continue
        bottom = min(rows, top + band)
        # The holders whose windows reach the band, and their flags inside it.
        first, last = max(0, top - reach) * cols, min(rows, bottom + reach) * cols
        holders = first + np.flatnonzero(placed[first:last] >= 0)
        held = column[holders]
        row, col = holders // cols, holders % cols
        table = np.zeros(((bottom - top) * cols, held_count), bool)
        for down in range(-reach, reach + 1):
            at_row = row + down
            row_inside = (at_row >= top) & (at_row < bottom)
            for across in range(-reach, reach + 1):
                if down == 0 and across == 0:
                    continue  # a cell's own tile is not held near it
                at_col = col + across
                inside = row_inside & (at_col >= 0) & (at_col < cols)
                table[(at_row[inside] - top) * cols + at_col[inside], held[inside]] = True
        near[pairs] = table[cells[pairs] - top * cols, pair_column[pairs]]
    return near


def verify_placement(
    tile: np.ndarray, rows: int, cols: int, max_uses: int | None, min_spacing: int,
    min_uses: int = 0, tile_count: int | None = None, layout: Layout | None = None,
) -> None:
    """Raise :class:`MosaicistError` if a placement breaks a use or spacing limit.

    With ``min_uses``, each of the ``tile_count`` library tiles must fill at
    least that many cells.

    Parameters
    ----------
    tile : numpy.ndarray
        Library position of each cell's tile, row-major (in the layout's
        order with ``layout``); ``-1`` marks a cell left without one.
    rows, cols : int
        Grid shape, in cells.
    max_uses : int or None
        Most cells a tile may fill; None for no cap.
    min_spacing : int
        Minimum Chebyshev distance between cells of the same tile (``<= 1``: none).
    min_uses : int
        Fewest cells every library tile must fill (0: no minimum).
    tile_count : int, optional
        Tiles in the library; needed with ``min_uses``, to count the unused ones.
    layout : Layout, optional
        Cells of unequal sizes, whose spacing is measured between their
        centres (see :func:`spacing_violations`).

    Raises
    ------
    MosaicistError
        When a cell has no tile.
    OptionError
        When a tile is used too few or too many times, or two equal tiles
        are too close; the message names the limit.
    ValueError
        When ``min_uses`` is given without ``tile_count``.
    """
    tile = np.asarray(tile, np.int64)
    if (tile < 0).any():
        missing = int((tile < 0).sum())
        raise MosaicistError(f"{counted(missing, 'cell')} could not be given a tile")
    if min_uses:
        if tile_count is None:
            raise ValueError("a minimum of uses needs the tile count")
        short = int((np.bincount(tile, minlength=tile_count) < min_uses).sum())
        if short:
            raise OptionError("{tiles} " + ("is" if short == 1 else "are") + " used fewer "
                              "than {min_uses} {least} times", tiles=counted(short, "tile"),
                              least=min_uses)
    if max_uses is not None:
        uses = np.unique(tile, return_counts=True)[1].max(initial=0)
        if uses > max_uses:
            raise OptionError("a tile is used {uses} times, above {max_uses} {limit}",
                              uses=f"{uses:,}", limit=max_uses)
    a, _ = spacing_violations(tile, rows, cols, min_spacing, layout)
    if len(a):
        raise OptionError("{pairs} of equal tiles " + ("is" if len(a) == 1 else "are")
                          + " closer than {min_spacing} {limit}",
                          pairs=counted(len(a), "pair"), limit=min_spacing)


# --------------------------------------------------------------------------
# Public entry point.


def assign_tiles(
    candidates: np.ndarray,
    candidate_distances: np.ndarray,
    rows: int,
    cols: int,
    *,
    max_uses: int | None = None,
    min_spacing: int = 1,
    method: str = "optimal",
    more_candidates: CandidateSource | None = None,
    show_progress: bool = False,
    max_candidates: int = MAX_CANDIDATES,
    search: CandidateSearch | None = None,
    min_uses: int = 0,
    tile_count: int | None = None,
    extra: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    layout: Layout | None = None,
    nearest: bool = True,
    proven: np.ndarray | None = None,
) -> Assignment:
    """Give every cell a tile so that the summed distance is least under the limits.

    Parameters
    ----------
    candidates : numpy.ndarray
        ``(N, k)`` int64 library positions of each cell's ``k`` nearest tiles,
        best first; ``-1`` marks a missing entry. ``N = rows * cols``.
    candidate_distances : numpy.ndarray
        ``(N, k)`` distances of ``candidates`` (integer or float).
    rows, cols : int
        Grid shape; cell ``i`` is at row ``i // cols``, column ``i % cols``.
    max_uses : int, optional
        Most cells a tile may fill.
    min_spacing : int
        Minimum Chebyshev distance between cells of the same tile (``<= 1``: none).
    method : {"optimal", "greedy"}
        Global min-cost assignment, or the fast greedy pass.
    more_candidates : callable, optional
        ``more_candidates(k) -> (candidates, distances)`` of shape ``(N, k)``,
        called with a larger ``k`` when the lists are too short to find a
        feasible or provably optimal assignment.
    show_progress : bool
        Draw a progress bar on stderr.
    max_candidates : int
        Longest list ``more_candidates`` is asked for.
    search : CandidateSearch, optional
        Searches of the whole library (integer distances). With it, lists
        grow only for the cells that need it, and the optimal method is
        certified over every cell-tile pair by column generation (see
        :meth:`_Solver._certified`) instead of growing lists for all cells.
    min_uses : int
        Fewest cells every tile of the library must fill (``tile_count``
        tiles, positions ``0..tile_count - 1``). The lists must then name
        every tile, with enough cells for it: where they do not, the
        assignment raises :class:`ShortLists` naming the tiles, and the
        caller gives them more cells.
    tile_count : int, optional
        Tiles in the library (needed with ``min_uses``).
    extra : tuple of numpy.ndarray, optional
        ``(cells, tiles, distances)`` of more pairs to list besides each
        cell's nearest (for example each tile's nearest cells, so that every
        tile can reach its minimum).
    layout : Layout, optional
        Cells of unequal sizes covering the ``rows x cols`` grid (adaptive
        cells): ``N`` is then any count, and spacing is measured between
        their centres (see :func:`spacing_violations`).
    nearest : bool
        Whether ``candidates`` are each cell's nearest tiles, so that every
        unlisted tile is at least as far as the last listed one. False (a
        certified assignment only): the lists prove nothing, and the first
        pricing round searches every cell's whole library.
    proven : numpy.ndarray, optional
        ``(N,)`` each cell's tile in a placement already proven optimal under
        the use cap over the whole library (:mod:`._auction`, proven by its
        caller), each listed by its cell. It is taken as the capped optimum
        (certified, its cost the lower bound); only the spacing rounds run,
        on the lists given. With ``min_uses``, tiles short of it first take
        cells from it (:meth:`_Solver._fill_minimum`, on the lists and
        ``extra``): its cost is then a bound, not certified.

    Returns
    -------
    Assignment
        The placement and its quality certificate.

    Raises
    ------
    MosaicistError
        If the limits cannot be met with the candidates available.
    """
    start = time.perf_counter()
    candidates = np.asarray(candidates)
    distances = _as_distances(candidate_distances)
    if candidates.ndim != 2 or candidates.shape != distances.shape:
        raise ValueError("candidates and candidate_distances must be (N, k) of one shape")
    count = candidates.shape[0]
    if layout is None and count != rows * cols:
        # Grids are said as columns x rows, as everywhere else.
        raise ValueError(f"{counted(count, 'candidate row')} for a grid of "
                         f"{cols:,}x{rows:,} cells")
    if layout is not None and layout.centre.shape != (count, 2):
        raise ValueError(f"the layout has {len(layout.centre)} centres for {count} cells")
    if method not in ASSIGN_METHODS:
        raise OptionError("unknown {assign} {value!r}; use {known}", value=method,
                          known=alternatives(ASSIGN_METHODS))
    _check_limits(max_uses, min_spacing)
    if count == 0:
        empty = np.zeros(0, np.int64)
        return Assignment(empty, distances[:, :0].ravel(), 0, 0, 0.0, method, 0, 0, 0.0)
    if (candidates[:, 0] < 0).any():
        raise MosaicistError("some cells have no candidate tile (is the library empty?)")
    if min_uses and tile_count is None:
        raise ValueError("min_uses needs tile_count")
    if max_uses is None and min_spacing <= 1 and not min_uses:
        # No limit: every cell keeps its nearest tile, which is optimal by definition.
        tile = candidates[:, 0].astype(np.int64)
        distance = distances[:, 0].copy()
        objective = _total(distance)
        return Assignment(tile, distance, objective, objective, 0.0, "best",
                          candidates.shape[1], 0, time.perf_counter() - start)
    if search is not None and not np.issubdtype(distances.dtype, np.integer):
        raise ValueError("a certified assignment needs integer distances")
    # A spacing as long as the grid caps every tile at one use by itself (no max_uses).
    if not nearest and (search is None or method != "optimal"
                        or tile_capacity(rows, cols, max_uses, min_spacing) is None
                        or min_uses or spacing_binds(rows, cols, max_uses, min_spacing)):
        raise ValueError("lists other than the nearest need a certified assignment "
                         "under a use cap alone")
    solver = _Solver(candidates, distances, rows, cols, max_uses, min_spacing,
                     more_candidates, max_candidates, show_progress, search, min_uses, layout,
                     nearest)
    if tile_count is not None:
        solver.tile_count = tile_count
    if extra is not None:
        solver.add_edges(*extra)
    if proven is not None:
        if method != "optimal":
            raise ValueError("a proven placement is an optimal one under a use cap")
        tile, distance, lower = solver.from_proven(np.asarray(proven, np.int64))
    elif method == "greedy":
        tile, distance = solver.greedy()
        lower = _total(distances[:, 0])
        if solver.repaired:
            method = "greedy+matching"
    else:
        tile, distance, lower = solver.optimal()
    if solver.spaced_anyway and method == "optimal":
        method = "optimal+greedy"
    if min_uses:
        assert tile_count is not None
        uses = np.bincount(tile, minlength=tile_count)
        if (uses < min_uses).any():
            raise ShortLists(np.flatnonzero(uses < min_uses))
    verify_placement(tile, rows, cols, max_uses, min_spacing, min_uses, tile_count, layout)
    objective = _total(distance)
    gap = _gap(objective, lower)
    return Assignment(tile, distance, objective, lower, gap, method, solver.k,
                      solver.iterations, time.perf_counter() - start, solver.certified,
                      solver.pricing_rounds)


def _total(values: np.ndarray) -> int | float:
    """The sum of ``values``, exactly where they are integers.

    A tinted objective's search units reach 10^15 a cell (``10^7`` per unit
    of the objective), so an int64 sum overflows past a few tens of
    thousands of cells: 51,712 cells of 99 photos summed their costs to
    a negative lower bound. The high and low 32 bits are summed apart.
    """
    if np.issubdtype(values.dtype, np.floating):
        return float(values.sum())
    high, low = np.divmod(np.asarray(values, np.int64), np.int64(1 << 32))
    return (int(high.sum(dtype=np.int64)) << 32) + int(low.sum(dtype=np.int64))


def _gap(objective: int | float, lower: int | float) -> float:
    if objective <= lower:
        return 0.0
    return float((objective - lower) / lower) if lower > 0 else math.inf


def _carried(old: _Edges, new: _Edges, flagged: np.ndarray) -> np.ndarray:
    """Flags over ``new`` edges of the pairs ``flagged`` over the ``old`` ones."""
    if not flagged.any():
        return np.zeros(len(new.row), bool)
    keys = old.row[flagged] * np.int64(1 << 32) + old.tile[flagged]
    return np.isin(new.row * np.int64(1 << 32) + new.tile, keys)


def _listed_at(edges: _Edges, tile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The edge of each pair ``(cell, tile[cell])``, and whether it is listed (else 0)."""
    count = len(tile)
    if not len(edges.row):
        return np.zeros(count, np.int64), np.zeros(count, bool)
    key = edges.row * np.int64(1 << 32) + edges.tile
    order = np.argsort(key, kind="stable")
    want = np.arange(count, dtype=np.int64) * np.int64(1 << 32) + tile
    position = order[np.minimum(np.searchsorted(key, want, sorter=order), len(key) - 1)]
    listed = key[position] == want
    return np.where(listed, position, 0), listed


def _by_regret(edges: _Edges) -> tuple[list[int], list[int]]:
    """Cells in greedy's order, and where each cell's edges start (one more for the end).

    Most regret first (best-to-second gap: they lose most if pushed off
    their best), then nearest first.
    """
    count = len(edges.length)
    starts = np.concatenate(([0], np.cumsum(edges.length)))
    first = edges.dist[starts[:-1][edges.length > 0]]
    best = np.full(count, _inf(edges.dist.dtype), edges.dist.dtype)
    best[edges.length > 0] = first
    second = np.full(count, np.inf)
    two = edges.length > 1
    second[two] = edges.dist[starts[:-1][two] + 1]
    regret = second - best.astype(np.float64)
    return np.lexsort((np.arange(count), best, -regret)).tolist(), starts.tolist()


class _Solver:
    """State shared by the optimal and greedy passes: lists, growth, forbidden pairs."""

    def __init__(
        self,
        candidates: np.ndarray,
        distances: np.ndarray,
        rows: int,
        cols: int,
        max_uses: int | None,
        min_spacing: int,
        more_candidates: CandidateSource | None,
        max_candidates: int,
        show_progress: bool,
        search: CandidateSearch | None = None,
        min_uses: int = 0,
        layout: Layout | None = None,
        nearest: bool = True,
    ) -> None:
        self.count = candidates.shape[0]
        self.layout = layout
        self.search = search
        self.rows, self.cols = rows, cols
        self.max_uses = max_uses
        self.min_spacing = min_spacing
        self.cap = tile_capacity(rows, cols, max_uses, min_spacing)
        self.minimum = min_uses
        self.more = more_candidates
        self.max_candidates = max(max_candidates, candidates.shape[1])
        self.k = candidates.shape[1]
        self.candidates, self.distances = candidates, distances
        self.edges = _edges(candidates, distances, np.full(self.count, self.k))
        #: Whether each cell's list starts with its nearest tiles (see :func:`assign_tiles`).
        self.nearest = nearest
        if not nearest:
            # Nothing is known of the unlisted tiles: every cell's proof starts from zero.
            self.edges.tail[:] = 0
        #: Edges of :attr:`edges` forbidden to a spacing round's losers.
        self.forbidden = np.zeros(len(self.edges.row), bool)
        #: Edges whose tile was held near their cell in a spacing round: forbidden until
        #: that leaves a cell without a tile (then all of them are allowed again).
        self.crowded_out = np.zeros(len(self.edges.row), bool)
        # Edges neither forbidden nor crowded out. Flags over the edges, not sets of
        # pairs: merging sets of a million pairs took 9 of 22 s on 20,160 cells and 99
        # tiles (5 spacing rounds).
        self._allowed = np.ones(len(self.edges.row), bool)
        #: Whether the assignment was proven optimal over the whole library.
        self.certified = False
        # Whether to solve near the last prices (see _solve_near).
        self._near = True
        # Solves near the prices that failed in a row (two: none again).
        self._near_failures = 0
        # The edges the spacing rounds solve on where not all (_keep_near_for_spacing).
        self._spacing_edges: np.ndarray | None = None
        # The searches and arcs of the last repair (:func:`._flow.repair`).
        self._repair_work = np.zeros(2, np.int64)
        # The last spacing round's optimum on its allowed edges with the prices that prove
        # it (or the proven optimum before the rounds), which the next round repairs
        # (:meth:`_repair_spaced`); None: the next round solves from scratch.
        self._spaced_state: _flow.FlowState | None = None
        self._spaced_work = np.zeros(2, np.int64)
        #: Column-generation rounds made.
        self.pricing_rounds = 0
        #: The surcharge of a use past a tile's minimum while the pricing rounds price it
        #: (:meth:`_certified`); None: larger than any difference of total costs.
        self.surcharge: int | None = None
        self.iterations = 0
        # Searches for tiles with room made by the greedy passes (_list_tiles_with_room).
        self._room_searches = 0
        #: Whether greedy got stuck and the matching completed the placement.
        self.repaired = False
        #: Whether the spacing rounds gave up and greedy placed the cells
        #: (:meth:`_spaced_anyway`).
        self.spaced_anyway = False
        #: Tiles in the library, where known (each must fill ``min_uses`` cells).
        self.tile_count = None if search is None else search.tile_count
        self.bar = progress_bar(None, "assigning tiles", "solve", enabled=show_progress)

    # -- candidate growth ----------------------------------------------------

    def grow(self, cells: np.ndarray) -> bool:
        """Lengthen the lists of ``cells`` (bool mask); False when impossible.

        While ``more_candidates`` can give more, ``k`` doubles and the flagged
        cells get the new length: each doubling is one search, and doubling
        bounds the rounds by ``log2(max_candidates / k)``. Past the cap, flagged
        cells still shorter than the lists already fetched are extended to them.
        """
        if not cells.any():
            return False
        if self.search is not None:
            return self._grow_by_search(np.flatnonzero(cells))
        old = self.edges.length
        if self.more is not None and self.k < self.max_candidates:
            k = min(2 * self.k, self.max_candidates)
            candidates, distances = self.more(k)
            candidates = np.asarray(candidates)
            distances = _as_distances(distances)
            if candidates.shape != (self.count, k) or distances.shape != candidates.shape:
                raise ValueError(
                    f"more_candidates({k}) must return two ({self.count}, {k}) arrays"
                )
            self.k = k
            self.candidates, self.distances = candidates, distances
        width = (self.candidates >= 0).sum(axis=1)
        short = cells & (old < width)
        if not short.any():
            return False
        self._set_edges(_edges(self.candidates, self.distances, np.where(short, self.k, old)))
        return True

    def _grow_by_search(self, cells: np.ndarray) -> bool:
        """Give ``cells`` their nearest tiles, twice as many as their longest list now."""
        assert self.search is not None
        longest = int(self.edges.length[cells].max(initial=0))
        k = min(max(2 * longest, 1), self.search.tile_count)
        if k <= longest:
            return False
        tiles, distances = self.search.nearest(cells, k)
        self.k = max(self.k, k)
        width = (tiles >= 0).sum(axis=1)
        # The new lists are the k nearest: every tile left out is at least as far as the last.
        tail = self.edges.tail.copy()
        last = np.take_along_axis(distances, np.maximum(width - 1, 0)[:, None], axis=1)[:, 0]
        tail[cells] = np.where(width > 0, last, tail[cells])
        self._set_edges(_with_edges(self.edges, np.repeat(cells, tiles.shape[1]),
                                    tiles.ravel(), distances.ravel(), tail))
        return True

    def add_edges(self, cells: np.ndarray, tiles: np.ndarray, distances: np.ndarray) -> None:
        """List the pairs ``(cells, tiles)`` too (their lists' tails unchanged)."""
        self._set_edges(_with_edges(self.edges, np.asarray(cells, np.int64),
                                    np.asarray(tiles, np.int64), _as_distances(distances),
                                    self.edges.tail))

    def _set_edges(self, edges: _Edges) -> None:
        if edges is not self.edges:
            # The pairs flagged on the old edges, flagged on the new.
            self.forbidden = _carried(self.edges, edges, self.forbidden)
            self.crowded_out = _carried(self.edges, edges, self.crowded_out)
            self._spacing_edges = None
        self.edges = edges
        self._allowed = ~(self.forbidden | self.crowded_out)

    def allowed(self) -> np.ndarray:
        """Edges not forbidden by an earlier spacing round."""
        return self._allowed

    # -- optimal -------------------------------------------------------------

    def optimal(self) -> tuple[np.ndarray, np.ndarray, int | float]:
        """Capacitated assignment with candidate growth and spacing rounds."""
        if (self.minimum and self.search is not None and self.cap is not None
                and np.issubdtype(self.edges.dist.dtype, np.integer)):
            # Uses past the minimum priced as a surcharge: certified like a cap.
            return self._certified()
        if self.minimum:
            # Without a search: the best placement the lists hold.
            # Where the library is small, every cell first lists every tile
            # (:meth:`_list_whole_library`): that placement is then the optimum over
            # all pairs, its own lower bound (60 tiles, 3 uses at most and 1 at least,
            # on 176 cells: 6.0% over the optimum on the lists, 0 on every pair).
            self._list_whole_library()
            capped = self._restricted()
            starts = np.concatenate(([0], np.cumsum(self.edges.length)[:-1]))
            bound = _total(self.edges.dist[starts])
            if self.tile_count is not None and bool(
                    (self.edges.length >= self.tile_count).all()):
                self.certified = True
                bound = _total(self.edges.dist[capped])
            choice = self._space(capped)
            self.bar.close()
            # The spacing rounds may have lengthened the lists.
            return self.edges.tile[choice], self.edges.dist[choice], bound
        if self.search is not None and self.cap is not None:
            return self._certified()
        lower: int | float = 0
        previous = self.count + 1
        for _ in range(MAX_GROWTH_ROUNDS):
            edges = self.edges
            at_cap = self.more is None or self.k >= self.max_candidates
            choice = self._step(edges, np.ones(len(edges.row), bool), edges.tail)
            outside = choice < 0
            relaxed = self._cost(edges, choice, edges.tail)
            # Longer lists tighten the relaxation, but keep the best bound seen anyway.
            lower = max(lower, relaxed)
            # Past the list cap, rounds only extend the cells still short of it; go
            # on while solves are cheap or the outside users shrink fast, else settle
            # for the gap (each round is a full solve for a few cells' gain).
            used = int(outside.sum())
            costly = len(edges.row) > CHEAP_EDGES
            if at_cap and costly and used > previous * CAP_ROUND_SHRINK:
                break
            previous = used if at_cap else previous
            if not used or not self.grow(outside):
                break
        if outside.any():
            # The lists cannot prove optimality: best assignment within them.
            choice = self._restricted()
        choice = self._space(choice)
        self.bar.close()
        return self.edges.tile[choice], self.edges.dist[choice], lower

    def from_proven(self, tile: np.ndarray) -> tuple[np.ndarray, np.ndarray, int | float]:
        """Spacing rounds from a placement proven optimal under the cap (each cell's ``tile``).

        Tiles short of a minimum first take cells from it (uncertified then).
        """
        edges = self.edges
        listed = np.flatnonzero(edges.tile == tile[edges.row])
        choice = np.full(self.count, -1, np.int64)
        choice[edges.row[listed]] = listed
        if (choice < 0).any():
            raise ValueError("every cell must list its tile of the proven placement")
        lower = _total(edges.dist[choice])
        # Optimal under the cap alone, it bounds any placement that also keeps a minimum.
        self.certified = not (self.minimum and self._short_of_minimum(tile))
        if not self.certified:
            choice, _ = _listed_at(edges, self._fill_minimum(tile))
        choice = self._space(choice)
        self.bar.close()
        # The spacing rounds may have lengthened the lists.
        return self.edges.tile[choice], self.edges.dist[choice], lower

    def _certified(self) -> tuple[np.ndarray, np.ndarray, int | float]:
        """Capacitated assignment over the whole library, proven optimal by tile prices.

        Column generation: solve on the listed edges, price the tiles
        (:func:`tile_prices`), and look for a tile that any cell would rather
        have at those prices. A cell whose price-adjusted cost ``u_i`` is at
        most its list's tail needs no look (every unlisted tile costs at least
        the tail, and prices are never negative); the others are searched in
        the whole library for tiles of cost plus price below ``u_i``
        (``search.below``), which join their lists; a cell already searched
        in an earlier round is settled by what that search proved, and only
        the tiles whose prices fell since then are measured
        (:class:`_PriceChecks`). When no cell finds one,
        the placement and the prices satisfy complementary slackness over all
        cell-tile pairs: it is optimal, and ``sum u - cap sum p`` equals its
        cost (the lower bound, gap 0). Spacing is then enforced on the result
        (:meth:`_space`), and the gap reports its cost against that optimum.
        With a minimum of uses, the uses past it pay a surcharge that the
        prices cover (see the module's notes); it rises while the proven
        optimum leaves a tile short.
        """
        assert self.search is not None and self.cap is not None
        # Without a proof, the unconstrained optimum is still a lower bound.
        starts = np.concatenate(([0], np.cumsum(self.edges.length)[:-1]))
        lower: int | float = _total(self.edges.dist[starts])
        # A cell whose listed tiles are all taken goes outside, at a cost that makes
        # the search look for its tiles up to twice its list's tail (raised when none),
        # a multiple of the distances' common factor, so that the solver can divide by it.
        # Past its farthest listed tile, where the caller listed more than the nearest
        # (warm lists, :mod:`._warm`): else the cell would rather go outside than take
        # them, and the rounds would find its tiles again from the nearest.
        farthest = np.zeros(self.count, self.edges.dist.dtype)
        np.maximum.at(farthest, self.edges.row, self.edges.dist)
        factor = max(1, _common_factor(self.edges.dist))
        reach_out = 2 * np.maximum(self.edges.tail, farthest) + factor
        if self.minimum:
            # Uses past a tile's minimum pay a surcharge, priced like the cap: twice
            # every outside cost at first, so that a cell pays it only where no tile
            # with room is near; raised where the optimum leaves a tile short.
            self.surcharge = factor * -(-2 * int(reach_out.max()) // factor)
        # A cell that lists every tile has none left to look for.
        complete = self.edges.length >= self.search.tile_count
        crowded = self.count >= CROWDED_LOAD * self.cap * self.search.tile_count
        while True:
            outside = reach_out + (self.surcharge or 0)
            choice, lower = self._price_rounds(outside, complete, crowded, lower)
            if not (self.certified and self.minimum and self._short_of_minimum(
                    self.edges.tile[choice])):
                break
            # The surcharge was too small to be worth a tile's minimum: a far tile
            # stayed short. Sixteen times larger, at least four times the short tiles'
            # nearest cells (listed now), while the costs keep in range: a tile 10^12
            # units from every cell took 64-150 rounds of sixteenfold rises.
            raised = max(16 * (self.surcharge or 0),
                         4 * self._list_short_tiles(self.edges.tile[choice]))
            raised = factor * -(-raised // factor)
            if raised + int(reach_out.max()) > _flow.COST_LIMIT:
                break
            self.surcharge = raised
            self.certified = False
        # The spacing rounds price the minimum as the proof did: a surcharge past every
        # cost difference put the costs out of the min-cost flow's range for its
        # tie-breaks toward the last placement, and the rounds took 12 solves instead
        # of 2 (3,500 photos on 5,874 cells). A solve that leaves a tile short is solved
        # again with that surcharge (:meth:`_restricted`).
        choice = self._space(choice)
        self.bar.close()
        return self.edges.tile[choice], self.edges.dist[choice], lower

    def _list_short_tiles(self, tile: np.ndarray) -> int:
        """List the tiles short of the minimum in ``tile`` for their nearest cells.

        Where their pairs with every cell are few (:data:`SHORT_PAIRS`), each
        short tile's :data:`SHORT_CELLS` nearest cells list it. Returns the
        farthest of those tiles' nearest cells (0 where not measured).
        """
        assert self.search is not None
        uses = np.bincount(tile, minlength=self.search.tile_count)
        short = np.flatnonzero(uses < self.minimum)
        if not len(short) or self.count * len(short) > SHORT_PAIRS:
            return 0
        cells = np.repeat(np.arange(self.count), len(short))
        tiles = np.tile(short, self.count)
        distance = self.search.pairs(cells, tiles).reshape(self.count, len(short))
        self.add_edges(*nearest_cells(distance, short, SHORT_CELLS))
        return int(distance.min(axis=0).max())

    def _price_rounds(self, outside: np.ndarray, complete: np.ndarray, crowded: bool,
                      lower: int | float) -> tuple[np.ndarray, int | float]:
        """The pricing rounds of :meth:`_certified`: each cell's edge, and the lower bound.

        ``lower`` is the bound known before (without a proof, the rounds keep
        it or the one their last prices give).
        """
        assert self.search is not None and self.cap is not None
        checks = _PriceChecks(np.where(complete, _inf(np.dtype(np.int64)), self.edges.tail),
                              self.search.tile_count,
                              CROWDED_RESERVE_COLUMNS if crowded else None)
        choice = None
        state: _flow.FlowState | None = None
        # Cells whose proof the last round broke: a repair moving more would give up.
        moved = 0
        # The prices of the last round's placed cells alone (see below), where some were out.
        placed_price: np.ndarray | None = None
        for round_number in range(MAX_PRICING_ROUNDS):
            step = (self._repair(state, outside)
                    if state is not None and moved <= self.count // REPAIR_SHARE else None)
            if step is None and state is not None and self._near:
                step = self._solve_near(state, outside)
            if step is None:
                step = self._step(self.edges, self.allowed(), outside)
            priced = tile_prices(self.edges, step, self.cap, outside, self.minimum,
                                 self.surcharge or 0)
            if priced is None:
                break
            # The next round starts from this optimum and these prices.
            state = _priced_state(self.edges, step, priced, outside, self.search.tile_count)
            price, cost = state.price, state.cost
            edges = self.edges
            out = step < 0
            if round_number == MAX_PRICING_ROUNDS - 1 and out.any():
                # Out of rounds: the bound below takes the better of these prices and
                # those that prove the placed cells' places alone. A cell outside at a
                # column raised past its tiles' (see below) raises the prices of the
                # tiles it lists with it, and the bound of those prices can fall far
                # below the optimum (26% of it, on 80 cells of 120 tiles at one use).
                alone = tile_prices(edges, step, self.cap, np.where(out, 0, outside),
                                    self.minimum, self.surcharge or 0)
                if alone is not None:
                    placed_price = np.zeros(self.search.tile_count, np.int64)
                    placed_price[alone[0]] = alone[1]
            # Search past the cost by the premium the cell pays over its nearest tile.
            first = np.minimum(np.concatenate(([0], np.cumsum(edges.length)[:-1])),
                               len(edges.dist) - 1)
            premium = np.where(edges.length > 0, np.maximum(cost - edges.dist[first], 0), 0)
            # Saturating, as outside costs can be near the integer limit.
            reach = cost.copy()
            if REACH:
                reach += REACH * np.minimum(premium, (_inf(np.dtype(np.int64)) - cost) // REACH)
            rows, found, distances, beats = checks.check(
                self.search, price, cost, reach,
                functools.partial(_kth_total, edges, price), out)
            hit = np.zeros(self.count, bool)
            hit[rows[beats]] = True
            if not out.any() and not hit.any():
                choice = step
                self.certified = True
                lower = self._dual_bound(int(_total(cost)), price)
                self._keep_near_for_spacing(cost, price, step)
                self._spaced_state = state
                break
            # Outside with nothing cheaper there: the cell's tiles are farther still.
            # (Saturating: with a minimum, outside costs start past its surcharge.)
            doubled = ~hit & out
            outside[doubled] = np.minimum(outside[doubled], _flow.COST_LIMIT) * 2
            if doubled.any() and (self.minimum or doubled.sum() <= CHAIN_CELLS):
                # Such a cell gets in next round by pushing out one whose column is
                # cheaper, which then does the same: where a minimum of uses fills a
                # short library, a chain of a few cells a round (31,212 cells on 3,000
                # photos at 11 uses: 20 rounds of 26 down to 1 cell outside). The placed
                # cells' columns rise too, to the least of those doubled, at most twice
                # their own: a placed cell's proof does not depend on its column (6
                # rounds there, the same optimum). Under a cap alone only for a chain of
                # at most CHAIN_CELLS: raised on every round, 31,212 cells of 50,000
                # photos at one use took as many rounds, and one solve near the prices
                # failed, so that all the later ones were whole (316 s against 276 s).
                floor = int(outside[doubled].min())
                placed = ~out
                outside[placed] = np.maximum(outside[placed],
                                             np.minimum(floor, 2 * outside[placed]))
            # Each of these cells' proof is broken: a new edge beats its cost, or its
            # outside cost moved (``_flow.repair`` finds at least these).
            moved = int((hit | out).sum())
            self.pricing_rounds += 1
            self.bar.set_postfix(k=self.k, priced=self.pricing_rounds)
            if len(rows):
                self._set_edges(_with_edges(edges, rows, found, distances, edges.tail))
        if choice is None:
            # No proof in the rounds allowed: the best placement the lists hold, and the
            # bound the last prices give over the whole library (lists other than the
            # nearest bound nothing by themselves).
            priced_bound = self._priced_bound(
                np.zeros(self.search.tile_count, np.int64) if state is None else state.price)
            if placed_price is not None:
                priced_bound = max(priced_bound, self._priced_bound(placed_price))
            lower = max(lower if self.nearest else 0, priced_bound)
            # Minima kept as far as the lists allow, not traded against the surcharge.
            self.surcharge = None
            choice = self._restricted()
            # A placement that meets the bound is the optimum all the same (a crowded small
            # library sent one cell outside each round, 40 rounds, at gap 0).
            if _total(self.edges.dist[choice]) <= lower and not (
                    self.minimum and self._short_of_minimum(self.edges.tile[choice])):
                self.certified = True
        return choice, lower

    def _dual_bound(self, paid: int, price: np.ndarray) -> int:
        """The dual objective of prices ``price`` whose cells pay ``paid`` in all.

        Under a cap alone ``sum_i u_i - cap sum_j p_j``. With a minimum ``K``
        and its surcharge ``S`` (see :func:`tile_prices`), a placement ``y``
        that keeps the minimum costs ``sum_i (c_iy + q_y) - sum_j n_j q_j``,
        and ``n_j q_j <= K q_j + (n_j - K) S + (cap - K) max(q_j - S, 0)``
        with ``sum_j (n_j - K) = N - K T``: the bound is ``sum_i u_i - sum_j
        (K q_j + (cap - K) max(q_j - S, 0)) - S (N - K T)``, equal to the
        optimum where the prices prove it.
        """
        assert self.cap is not None
        if not self.minimum:
            return paid - self.cap * int(_total(price))
        assert self.search is not None
        surcharge = self.surcharge or 0
        above = np.maximum(price - surcharge, 0)
        return (paid - self.minimum * int(_total(price))
                - (self.cap - self.minimum) * int(_total(above))
                - surcharge * (self.count - self.minimum * self.search.tile_count))

    def _priced_bound(self, price: np.ndarray) -> int:
        """A lower bound on the capped optimum from any tile prices ``p >= 0``.

        Relaxing the caps with ``p`` (Lagrange) gives ``sum_i min_j (c_ij +
        p_j) - cap sum_j p_j``, at most the cost of any placement that keeps
        them: each cell pays at least its least ``c_ij + p_j`` less its
        tile's price, and the prices of the tiles placed sum to at most
        ``cap sum_j p_j``. The minimum is over the whole library: one search
        of every cell, started from its least listed total. Near the final
        prices this is close to the optimum, where the optimum without caps
        (the bound without prices) can be far below it.
        """
        assert self.search is not None and self.cap is not None
        cells = np.arange(self.count)
        listed = _kth_total(self.edges, price, cells, 1)
        found, distances = self.search.below(cells, price, listed, 1, upper=listed)
        present = found[:, 0] >= 0
        least = listed.copy()
        least[present] = np.minimum(
            least[present], distances[present, 0] + price[found[present, 0]])
        return self._dual_bound(int(_total(least)), price)

    def _repairable(self) -> bool:
        """Whether repairs run on today's edges (compiled loops, integers, none forbidden).

        With a minimum only while the pricing rounds price it (a surcharge).
        """
        return self._spaced_repairable() and bool(self.allowed().all())

    def _solve_near(self, state: _flow.FlowState, outside: np.ndarray) -> np.ndarray | None:
        """The optimum on today's edges, solved on those near the last prices, or None.

        Each cell keeps its :data:`NEAR_EDGES` edges of least reduced cost
        ``c_ij + p_j - u_i`` at the last round's prices, and every edge at
        or below :data:`NEAR_MARGIN` times its cost (its tile, the new tiles
        that beat its cost, and those the new prices may bring near). Where
        those are over :data:`NEAR_SHARE` of all edges, None for this round. The
        solution there is priced (:func:`tile_prices`), and every other edge
        checked against those prices: none below zero proves it optimal on
        all edges, a few are repaired (:meth:`_repair`). None where neither
        holds (a solve on all edges follows, in this round and all later:
        on the seed workload the edges left out break the proof of a few
        hundred cells, repaired in milliseconds; on a 32,400-cell grid of
        thousands, and the solve and repairs near the prices cost more than
        one on all edges).
        """
        if not self._repairable():
            return None
        assert self.cap is not None
        edges = self.edges
        count = self.count
        reduced = edges.dist + state.price[edges.tile] - state.cost[edges.row]
        margin = (NEAR_MARGIN * np.maximum(state.cost, 0)).astype(np.int64)
        near = _least_per_cell(edges, reduced, NEAR_EDGES) | (reduced <= margin[edges.row])
        if near.sum() > NEAR_SHARE * len(near):
            return None  # too few edges left out to gain: solve on all, this round
        for _ in range(NEAR_SOLVES):
            if near.sum() > NEAR_SHARE * len(near):
                break
            index, subset = self._allowed_edges(near)
            choice = self._step(subset, np.ones(len(index), bool), outside)
            priced = tile_prices(subset, choice, self.cap, outside, self.minimum,
                                 self.surcharge or 0)
            if priced is None:
                break
            near_state = _priced_state(subset, choice, priced, outside, len(state.price))
            below = (edges.dist + near_state.price[edges.tile]
                     < near_state.cost[edges.row])
            if not below.any():
                self._near_failures = 0
                return np.where(choice >= 0, index[np.maximum(choice, 0)], -1)
            if np.unique(edges.row[below]).size <= count // REPAIR_SHARE:
                repaired = self._repair(near_state, outside)
                if repaired is not None:
                    self._near_failures = 0
                    return repaired
            # The edges that beat their cells' costs at these prices join the next solve.
            near |= below
        # Where the edges left out mattered to many cells, they likely will again: solve on
        # all, after a second failure in a row for good (a single one, while the placed
        # cells' columns rose, made every later solve whole: 31,212 cells of 50,000
        # photos at one use, 9-14 s a round on 6-8 million edges against 5-8 s).
        self._near_failures += 1
        if self._near_failures >= 2:
            self._near = False
        return None

    def _repair(self, state: _flow.FlowState, outside: np.ndarray) -> np.ndarray | None:
        """The optimum on today's edges repaired from the last one (:mod:`._flow`), or None."""
        if not self._repairable():
            return None
        assert self.cap is not None
        edges = self.edges
        tiles, tile_id = _compact(edges.tile)
        choice = _flow.repair(state, edges.row, edges.tile, tiles, tile_id, edges.dist,
                              edges.length, outside, self.cap,
                              budget=REPAIR_ARCS_PER_EDGE * len(edges.row),
                              most_cells=self.count // REPAIR_SHARE,
                              work=self._repair_work, minimum=self.minimum,
                              surcharge=self.surcharge or 0)
        self.bar.update(1)
        return choice

    def _space(self, choice: np.ndarray) -> np.ndarray:
        """Spacing rounds: forbid each violating pair's cheaper mover, re-solve.

        Where they give up (:data:`MAX_SPACING_ROUNDS`, or a solve without a
        tile for some cell), a greedy placement takes over
        (:meth:`_spaced_anyway`).
        """
        best, fewest = None, None
        while True:
            tile = self.edges.tile[choice]
            a, b = spacing_violations(tile, self.rows, self.cols, self.min_spacing,
                                      self.layout)
            if not len(a):
                # Untouched by the rounds, the placement is the optimum under the cap.
                return self._polished(choice) if self.iterations else choice
            if fewest is None or len(a) < fewest:
                best, fewest = tile, len(a)
            # Where the rounds give up, the fallback polishes what it builds itself.
            if self.iterations >= MAX_SPACING_ROUNDS:
                return self._spaced_anyway(best)
            if not self.iterations and self._spaced_state is None:
                # Priced before its first round, the placement is what the round repairs.
                self._price_spaced(self._spacing_allowed(), choice)
            self.iterations += 1
            self._forbid(choice, a, b)
            try:
                choice = self._restricted(keep=tile)
            except _Stuck:
                return self._spaced_anyway(best)

    def _polished(self, choice: np.ndarray) -> np.ndarray:
        """A spaced placement after moves and swaps that keep every limit (:mod:`._polish`)."""
        position, apart = _where(self.count, self.cols, self.min_spacing, self.layout)
        grid = (self.rows, self.cols) if self.layout is None else None
        bounds = np.concatenate(([0], np.cumsum(self.edges.length)))
        choice, _ = _polish.polish(
            choice, bounds, self.edges.tile, self.edges.dist, position, apart,
            self.cap if self.cap is not None else self.count, self.minimum, grid=grid)
        return choice

    def _step(self, edges: _Edges, allowed: np.ndarray, outside: np.ndarray | None,
              keep: np.ndarray | None = None) -> np.ndarray:
        # With a search, optimality is verified exactly (prices, or no certificate).
        choice = _solve(self.count, edges, allowed, self.cap, outside, self.minimum, keep,
                        rounding=self.search is not None, surcharge=self.surcharge)
        self.bar.update(1)
        self.bar.set_postfix(k=self.k, rounds=self.iterations)
        return choice

    def _cost(self, edges: _Edges, choice: np.ndarray, outside: np.ndarray) -> int | float:
        listed = choice >= 0
        return _total(edges.dist[choice[listed]]) + _total(outside[~listed])

    def _keep_near_for_spacing(self, cost: np.ndarray, price: np.ndarray,
                               choice: np.ndarray) -> None:
        """Let the spacing rounds solve on each cell's edges of least reduced cost only.

        Where the lists are long (a small library listed whole), each cell keeps
        its :data:`SPACING_EDGES` edges of least ``c_ij + p_j - u_i`` at the
        prices that proved the optimum (and its own, ``choice``): a spacing
        round moves cells to tiles near their own, and the solves on every
        edge cost seconds each. Ties are kept where a minimum is priced
        (there alike cells tie on every tile placed, and each keeps
        :data:`SPACING_EDGES` of them, a different draw for each cell).
        """
        edges = self.edges
        # A minimum's rounds list the library's far tiles for cells of every kind (a flat
        # target's 2,120 cells 425 tiles each): its spacing rounds too.
        if (not (self.minimum or spacing_binds(self.rows, self.cols, self.max_uses,
                                               self.min_spacing))
                or self.min_spacing <= 1 or len(edges.row) <= 2 * SPACING_EDGES * self.count):
            return
        reduced = edges.dist + price[edges.tile] - cost[edges.row]
        if not self.minimum:
            self._spacing_edges = _least_per_cell(edges, reduced, SPACING_EDGES)
            return
        # A draw per cell among equal values (Knuth's multiplicative hash).
        draw = (edges.tile * 2654435761 + edges.row * 40503) & 0x7FFFFFFF
        order = np.lexsort((draw, reduced, edges.row))
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(len(order)) - np.repeat(
            np.cumsum(edges.length) - edges.length, edges.length)
        keep = rank < SPACING_EDGES
        keep[choice[choice >= 0]] = True
        self._spacing_edges = keep

    def _restricted(self, keep: np.ndarray | None = None) -> np.ndarray:
        """Best assignment using listed, allowed edges only; grows lists where stuck.

        ``keep`` (each cell's tile before) breaks ties toward it: see :func:`_solve`.
        With it (a spacing round), a cell left without a tile raises :class:`_Stuck`:
        the forbidden pairs, not the limits, may be what leaves it none.
        """
        while True:
            allowed = self._spacing_allowed()
            choice = None if keep is None else self._repair_spaced(allowed)
            if choice is None:
                choice = self._step(self.edges, allowed, None, keep)
                if keep is not None:
                    self._price_spaced(allowed, choice)
            stuck = choice < 0
            short = (bool(self.minimum) and not stuck.any()
                     and self._short_of_minimum(self.edges.tile[choice]))
            if not stuck.any() and not short:
                return choice
            if short and self.surcharge is not None:
                # Priced, the minimum gave way to the forbidden pairs: kept at any cost.
                self.surcharge = None
                continue
            if self._spacing_edges is not None:
                # Too few near edges for these rounds: every edge again.
                self._spacing_edges = None
                continue
            if self.crowded_out.any():
                # Too strict for these lists: the tiles held around the cells left without
                # one count no more, and, where that frees none of their edges, nowhere.
                # All at once threw away every round's progress: 300 photos on 4,096
                # cells went back from 23 violations to 1,586 every fifth round, and the
                # sixty rounds gave up.
                freed = self.crowded_out & stuck[self.edges.row]
                if freed.any():
                    self.crowded_out &= ~freed
                else:
                    self.crowded_out[:] = False
                self._set_edges(self.edges)
                continue
            if short:
                # Every cell placed, on every listed edge, and a tile still short. In a
                # spacing round its forbidden pairs leave it short (12 tiles of 3 uses
                # exactly, 3 apart, on 6 x 6 cells): the fallback keeps the minimum.
                # Else the lists lack its cells: the caller sees the tiles short.
                if keep is not None:
                    raise _Stuck
                return choice
            if keep is None and self._list_tiles_with_room(
                    np.where(stuck, -1, self.edges.tile[np.maximum(choice, 0)]), stuck):
                # The stuck cells' nearest tiles with room, not their nearest: a crowd of
                # alike cells left outside by the pricing rounds (a line drawing's white
                # cells under the default preset, 3,000 of 10,000) doubled its lists of
                # taken tiles to 22 million edges and 8.7 GB, and on.
                continue
            if not self.grow(stuck):
                if keep is not None:
                    raise _Stuck
                # Only the limits in force: a cap the user never set is not to blame.
                limits = [name for name, binds in (
                    ("{max_uses}", self.max_uses is not None),
                    ("{min_spacing}", self.min_spacing > 1)) if binds]
                count = int(stuck.sum())
                raise OptionError(
                    "{cells} " + ("has no allowed tile among its" if count == 1 else
                                  "have no allowed tile among their")
                    + " {k} nearest; relax " + (" or ".join(limits) or "the repetition limits"),
                    cells=counted(count, "cell"), k=f"{self.k:,}",
                )

    def _spacing_allowed(self) -> np.ndarray:
        """The edges a solve may use: allowed, and near the prices where so kept."""
        allowed = self.allowed()
        return allowed if self._spacing_edges is None else allowed & self._spacing_edges

    def _allowed_edges(self, allowed: np.ndarray) -> tuple[np.ndarray, _Edges]:
        """The positions of the ``allowed`` edges, and those edges alone."""
        index = np.flatnonzero(allowed)
        edges = self.edges
        return index, _Edges(edges.row[index], edges.tile[index], edges.dist[index],
                             np.bincount(edges.row[index], minlength=self.count), edges.tail)

    def _repair_spaced(self, allowed: np.ndarray) -> np.ndarray | None:
        """A spacing round's optimum on the ``allowed`` edges, repaired from the last one.

        The round takes edges away (the losers' tiles, the tiles held near each
        cell) and, where it was stuck, gives some back: the last optimum and
        its prices stay a proof for every cell but the losers and the cells
        whose new edges beat their cost, and shortest paths place those
        (:func:`._flow.repair`), moving only the cells along the paths. A
        solve from scratch of every edge cost 10-13 s a round on 30,000 cells
        of 2,000 photos, for a few dozen losers. None where the repair does
        not apply or gives up (a cell left outside: the solve says whether
        one is stuck); the caller then solves.
        """
        state = self._spaced_state
        if state is None or self.cap is None or not self._spaced_repairable():
            return None
        index, subset = self._allowed_edges(allowed)
        tiles, tile_id = _compact(subset.tile)
        picked = _flow.repair(state, subset.row, subset.tile, tiles, tile_id, subset.dist,
                              subset.length, state.outside, self.cap,
                              budget=REPAIR_ARCS_PER_EDGE * len(index),
                              most_cells=self.count // REPAIR_SHARE, work=self._spaced_work,
                              minimum=self.minimum, surcharge=self.surcharge or 0)
        if picked is None or (picked < 0).any():
            self._spaced_state = None
            return None
        self._spaced_state = self._priced(subset, picked, state.outside)
        self.bar.update(1)
        return index[picked]

    def _price_spaced(self, allowed: np.ndarray, choice: np.ndarray) -> None:
        """Keep a spacing round's solve, priced, for the next round to repair."""
        self._spaced_state = None
        if self.cap is None or not self._spaced_repairable() or (choice < 0).any():
            return
        index, subset = self._allowed_edges(allowed)
        position = np.full(len(self.edges.row), -1, np.int64)
        position[index] = np.arange(len(index))
        # Outside columns past any cost a cell pays here: the solve had none.
        outside = np.full(self.count, 2 * int(subset.dist.max(initial=0)) + 1, np.int64)
        if self.minimum and self.surcharge:
            outside += self.surcharge
        self._spaced_state = self._priced(subset, position[choice], outside)

    def _priced(self, edges: _Edges, choice: np.ndarray, outside: np.ndarray
                ) -> _flow.FlowState | None:
        """``choice`` on ``edges`` with the least prices that prove it, or None."""
        assert self.cap is not None
        priced = tile_prices(edges, choice, self.cap, outside, self.minimum,
                             self.surcharge or 0)
        if priced is None:
            return None
        tile_count = self.tile_count or int(self.edges.tile.max(initial=0)) + 1
        return _priced_state(edges, choice, priced, outside, tile_count)

    def _spaced_repairable(self) -> bool:
        """Whether a spacing round may be repaired (compiled loops, integers, and with a
        minimum only while it is priced)."""
        return (_flow.can_repair() and not (self.minimum and self.surcharge is None)
                and np.issubdtype(self.edges.dist.dtype, np.integer))

    def _forbid(self, choice: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        """Forbid, for each violating pair, the tile to the cell that loses least by moving.

        And, to every cell, the other listed tiles that a cell near it holds
        (see the module's notes); a cell's loss is measured to its best listed
        tile outside those.
        """
        edges = self.edges
        allowed = self.allowed()
        current = np.full(self.count, -1, np.int64)
        current[:] = edges.tile[choice]
        # Not the cells' own tiles: the winners of this round's pairs keep theirs.
        alt = allowed & (edges.tile != current[edges.row])
        near = alt & near_holders(edges.row, edges.tile, current, self.rows, self.cols,
                                  self.min_spacing, self.layout)
        masked = np.where(alt & ~near, edges.dist, _inf(edges.dist.dtype))
        starts = np.concatenate(([0], np.cumsum(edges.length)[:-1]))
        nonempty = edges.length > 0
        nxt = np.full(self.count, _inf(edges.dist.dtype), edges.dist.dtype)
        nxt[nonempty] = np.minimum.reduceat(masked, starts[nonempty])
        # Regret in float so the missing-alternative sentinel cannot overflow.
        regret = nxt.astype(np.float64) - edges.dist[choice].astype(np.float64)
        regret[nxt == _inf(edges.dist.dtype)] = np.inf
        loser = np.where((regret[a] < regret[b]) | ((regret[a] == regret[b]) & (a > b)), a, b)
        self.forbidden[choice[loser]] = True
        self.crowded_out |= near
        self._allowed &= ~(self.forbidden | near)

    # -- greedy --------------------------------------------------------------

    def greedy(self) -> tuple[np.ndarray, np.ndarray]:
        """Cells by decreasing regret each take their best still-allowed candidate.

        Cells left without one (every listed tile taken) list their nearest
        tiles with room and take them in a pass of their own, the other
        cells' tiles kept (:meth:`_list_tiles_with_room`); where that lists
        nothing new (spacing holds them off), the lists grow and the whole
        pass runs again.
        """
        fixed: np.ndarray | None = None
        while True:
            tile, stuck = self._greedy_pass(fixed)
            if not stuck.any():
                break
            if self._list_tiles_with_room(tile, stuck):
                fixed = np.where(stuck, -1, tile)
                continue
            fixed = None
            if not self.grow(stuck):
                # Greedy used up tiles that stuck cells needed, though the lists may
                # still hold a complete placement: the matching finds one if any does.
                self.repaired = True
                choice = self._space(self._restricted())
                tile = self.edges.tile[choice]
                break
        self.bar.close()
        position, _ = _listed_at(self.edges, tile)
        return tile, self.edges.dist[position]

    def _list_tiles_with_room(self, tile: np.ndarray, stuck: np.ndarray) -> bool:
        """List for the ``stuck`` cells their nearest tiles still below the cap in ``tile``.

        One search of the stuck cells among the tiles with room, where the
        lists' growth searched the whole library for ever longer lists, and
        then ran the whole pass again (``--max-uses 1 --assign greedy`` on
        5,040 cells of 50,000 photos: ten doublings, 25 s, five times the
        optimal assignment). False where it lists nothing new (no search,
        no tile with room, or only tiles listed already).
        """
        if self.search is None:
            return False
        cap = self.cap if self.cap is not None else self.count
        uses = np.bincount(tile[tile >= 0], minlength=self.search.tile_count)
        room = np.flatnonzero(uses < cap)
        if not len(room):
            return False
        cells = np.flatnonzero(stuck)
        # Twice as many each time: alike cells (a flat region) all list the same
        # nearest tiles with room, of which only so many take one per pass.
        self._room_searches += 1
        k = min(GREEDY_ROOM_CANDIDATES << min(self._room_searches - 1, 5), len(room))
        found, distances = self.search.below(
            cells, np.zeros(self.search.tile_count, np.int64),
            np.full(len(cells), np.iinfo(np.int64).max), k, among=room)
        rows = np.broadcast_to(cells[:, None], found.shape)
        keep = found >= 0
        keep[keep] = uses[found[keep]] < cap
        # Not the pairs listed already: they were tried in the pass.
        listed = self.edges.row.astype(np.int64) * self.search.tile_count + self.edges.tile
        pair = rows.astype(np.int64) * self.search.tile_count + np.maximum(found, 0)
        keep &= ~np.isin(pair, listed)
        if not keep.any():
            return False
        self.add_edges(rows[keep], found[keep], distances[keep])
        return True

    def _greedy_pass(self, fixed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One greedy pass: each cell's tile (``-1``: none), and the cells left without one.

        ``fixed`` (each cell's tile, ``-1`` for the cells to place) keeps the
        tiles of the other cells, which count as placed from the start.
        """
        edges = self.edges
        count, cols, spacing = self.count, self.cols, self.min_spacing
        cap = self.cap if self.cap is not None else count
        order, bounds = _by_regret(edges)
        if fixed is not None:
            order = [cell for cell in order if fixed[cell] < 0]
        tiles = edges.tile.tolist()
        uses: dict[int, list[tuple[int, int]]] = {}
        # Tiles placed so far, for a window test once a tile has many uses (only with
        # spacing and no small use cap).
        grid = np.full((self.rows, cols), -1, np.int64)
        reach = spacing - 1
        layout = self.layout
        if layout is not None:
            # Cells of unequal sizes: centres in the layout's units, checked pair by pair.
            centres = layout.centre.tolist()
            if spacing > 1:
                spacing *= layout.unit
        chosen = [-1] * count
        if fixed is not None:
            for cell in np.flatnonzero(fixed >= 0).tolist():
                t = int(fixed[cell])
                r, c = divmod(cell, cols) if layout is None else centres[cell]
                uses.setdefault(t, []).append((r, c))
                chosen[cell] = t
                if spacing > 1 and layout is None:
                    grid[r, c] = t
        stuck = []
        for cell in order:
            r, c = divmod(cell, cols) if layout is None else centres[cell]
            for e in range(bounds[cell], bounds[cell + 1]):
                t = tiles[e]
                placed = uses.get(t)
                if placed is None:
                    uses[t] = [(r, c)]
                    chosen[cell] = t
                    if spacing > 1 and layout is None:
                        grid[r, c] = t
                    break
                if len(placed) >= cap:
                    continue
                if spacing > 1:
                    if len(placed) <= 16 or layout is not None:
                        near = any(
                            abs(r - pr) < spacing and abs(c - pc) < spacing for pr, pc in placed
                        )
                    else:
                        window = grid[max(0, r - reach) : r + reach + 1,
                                      max(0, c - reach) : c + reach + 1]
                        near = bool((window == t).any())
                    if near:
                        continue
                placed.append((r, c))
                chosen[cell] = t
                if spacing > 1 and layout is None:
                    grid[r, c] = t
                break
            else:
                stuck.append(cell)
        self.bar.update(1)
        mask = np.zeros(count, bool)
        mask[stuck] = True
        return np.asarray(chosen, np.int64), mask

    # -- where the spacing rounds give up ------------------------------------

    def _spaced_anyway(self, best: np.ndarray | None) -> np.ndarray:
        """A placement that keeps every limit, built where the spacing rounds gave up.

        The rounds are a heuristic: on a small library, whose tiles every
        window of the grid holds, they can run in circles, or forbid pairs
        until some cell has no tile left. Each cell then lists the whole
        library where it is small (:data:`FALLBACK_PAIRS`), and greedy
        (which keeps the cap and the spacing by construction) places, in
        turn: the cells of ``best`` (the rounds' placement with the fewest
        violating pairs) left over once one cell of each such pair is taken
        out; else every cell; else, on a grid, every cell with each tile kept
        to one class of cells ``D`` apart (:meth:`_lattice_placement`), which
        cannot get stuck while the library has a tile for each class. Then
        tiles short of ``min_uses`` take cells from tiles above it
        (:meth:`_fill_minimum`). Where none of them places every cell or
        meets the minimum, a small problem is solved exactly
        (:meth:`_exact_placement`); where that is too large or runs out of
        time, classes of cells ``D`` apart each take one tile
        (:meth:`_diagonal_placement`). The lower bound is left as it was, so
        the gap reports what the placement costs.

        Returns
        -------
        numpy.ndarray
            ``(N,)`` each cell's edge.

        Raises
        ------
        OptionError
            Where none of them places every cell.
        """
        self.spaced_anyway = True
        self._list_whole_library()
        placements = []
        if best is not None:
            fixed = best.copy()
            _, listed = _listed_at(self.edges, fixed)
            fixed[~listed] = -1
            a, b = spacing_violations(fixed, self.rows, self.cols, self.min_spacing,
                                      self.layout)
            # One cell of each pair re-placed (the later, where neither is yet).
            for first, second in zip(a.tolist(), b.tolist(), strict=True):
                if fixed[first] >= 0 and fixed[second] >= 0:
                    fixed[second] = -1
            placements.append(self._greedy_growing(fixed))
        placements.append(self._greedy_growing(None))
        if self.layout is None:
            placements.append(self._lattice_placement())
        else:
            # Adaptive leaves: classes of leaves D apart by their centres (a 7 x 7 grid split
            # whole at spacing 2 was refused with 16 to 24 tiles, where 16 classes fit).
            classes = layout_classes(self.layout, self.min_spacing)
            if classes is not None:
                placements.append(self._lattice_placement(classes))
        # The cheapest: on 300 tiles at D = 6 on 18 x 25 cells the rounds' placement
        # repaired cost 10% more than greedy from scratch, the lattice 13% more; where
        # the rounds nearly converged, a repair moves fewest cells.
        costs = [_total(self.edges.dist[_listed_at(self.edges, tile)[0]])
                 for tile in placements if tile is not None]
        tile = None
        if costs:
            tile = [tile for tile in placements if tile is not None][int(np.argmin(costs))]
            if self.minimum:
                tile = self._fill_minimum(tile)
            tile = self._improve(tile)
        if tile is None or (self.minimum and self._short_of_minimum(tile)):
            # Greedy gets stuck where the limits leave little room (10 tiles of at most 3
            # uses, 3 apart, on 5 x 6 cells: every tile full, no lattice class its own),
            # though placements exist: a small problem is solved exactly instead.
            tile = self._exact_placement()
        if tile is None and self.layout is None:
            # Where the exact solve is too large or runs out of time: a placement that
            # keeps every limit by construction, at the cost of how well it matches.
            tile = self._diagonal_placement()
            if tile is not None:
                if self.minimum:
                    tile = self._fill_minimum(tile)
                tile = self._improve(tile)
                if self.minimum and self._short_of_minimum(tile):
                    tile = None
        if tile is None:
            # Refusals before the work cover the limits no placement keeps that counts and
            # lattices show (check_feasible); here the rounds, greedy and the exact solve
            # (where small enough) found none.
            raise OptionError(
                "found no placement that keeps equal tiles {min_spacing} {limit} cells apart "
                "under these limits in {rounds}, greedily or exactly; add tiles or relax the "
                "limits", limit=self.min_spacing,
                rounds=counted(self.iterations, "spacing round"),
            )
        position, _ = _listed_at(self.edges, tile)
        return position

    def _short_of_minimum(self, tile: np.ndarray) -> bool:
        """Whether some tile of the library fills fewer than ``min_uses`` cells in ``tile``."""
        top = max(int(self.edges.tile.max(initial=-1)) + 1, self.tile_count or 0)
        return bool((np.bincount(tile, minlength=top) < self.minimum).any())

    def _exact_placement(self) -> np.ndarray | None:
        """The cheapest placement on the listed edges that keeps every limit, or None.

        A 0-1 program: each cell takes one listed edge, each tile between
        ``min_uses`` and the cap, and each tile at most once in every ``D x
        D`` window of the grid (two cells closer than ``D`` share one; for
        adaptive leaves, every window of side ``D`` whose corner is at a
        leaf's centre coordinates, which holds any two leaves closer than
        ``D``). Only for at most :data:`EXACT_EDGES` listed pairs. Solved by
        OR-Tools' CP-SAT where it is installed (one worker, a budget of
        :data:`EXACT_WORK` in its deterministic time: the same placement on
        every machine, the best it found), else by SciPy's HiGHS within
        :data:`EXACT_SECONDS`. None where the program is larger, proven
        infeasible, or out of time without a placement.
        """
        edges = self.edges
        count = len(edges.row)
        if not count or count > EXACT_EDGES:
            return None
        tiles, tile_id = _compact(edges.tile)
        if self.minimum and len(tiles) < (self.tile_count or 0):
            return None  # a tile no cell lists cannot reach its minimum
        cap = self.cap if self.cap is not None else self.count
        window = np.empty(0, np.int64)
        member = np.empty(0, np.int64)
        if self.min_spacing > 1 and self.layout is not None:
            window, member = _layout_windows(self.layout, self.min_spacing, edges.row, tile_id)
        elif self.min_spacing > 1:
            high, wide = min(self.min_spacing, self.rows), min(self.min_spacing, self.cols)
            across = self.cols - wide + 1
            windows = (self.rows - high + 1) * across
            r, c = np.divmod(edges.row, self.cols)
            variables = np.arange(count)
            keys, members = [], []
            for dr in range(high):
                for dc in range(wide):
                    top, left = r - dr, c - dc
                    inside = ((top >= 0) & (top <= self.rows - high)
                              & (left >= 0) & (left < across))
                    keys.append(tile_id[inside] * windows + top[inside] * across + left[inside])
                    members.append(variables[inside])
            _, window = np.unique(np.concatenate(keys), return_inverse=True)
            member = np.concatenate(members)
        solve = _exact_by_cp_sat if _cp_sat() is not None else _exact_by_highs
        taken = solve(edges, self.count, tile_id, len(tiles), self.minimum, cap, window, member)
        if taken is None:
            return None
        if np.bincount(edges.row[taken], minlength=self.count).tolist() != [1] * self.count:
            return None
        tile = np.empty(self.count, np.int64)
        tile[edges.row[taken]] = edges.tile[taken]
        return tile

    def _greedy_growing(self, fixed: np.ndarray | None) -> np.ndarray | None:
        """Greedy passes (:meth:`_greedy_pass`), lists growing where stuck; None if stuck."""
        while True:
            tile, stuck = self._greedy_pass(fixed)
            if not stuck.any():
                return tile
            if not self.grow(stuck):
                return None

    def _list_whole_library(self) -> None:
        """Let every cell list every tile (or the longest lists allowed), where they are few.

        With a search, the whole library; else every cell the ``max_candidates``
        nearest of ``more_candidates``: greedy lengthens only the stuck cells'
        lists, and a class of :meth:`_lattice_placement` needs its tiles listed
        by all its cells.
        """
        search = self.search
        cells = np.arange(self.count)
        if search is not None:
            k = search.tile_count
            if self.count * k > FALLBACK_PAIRS or (self.edges.length >= k).all():
                return
            tiles, distances = search.nearest(cells, k)
        elif self.more is not None and self.count * self.max_candidates <= FALLBACK_PAIRS:
            k = self.max_candidates
            tiles, distances = self.more(k)
            tiles, distances = np.asarray(tiles), _as_distances(distances)
        else:
            return
        self.k = max(self.k, k)
        self._set_edges(_with_edges(self.edges, np.repeat(cells, tiles.shape[1]),
                                    tiles.ravel(), distances.ravel(), self.edges.tail))

    def _lattice_placement(self, kind: np.ndarray | None = None) -> np.ndarray | None:
        """Greedy with each tile kept to one class of cells ``D`` apart; None where stuck.

        Cells ``(r, c)`` of equal ``(r mod D, c mod D)`` are at least ``D``
        apart, so a tile used within one such class never breaks the spacing
        (the classes of a ``D x D`` block: one needs at least as many tiles
        as :func:`check_feasible` asks); ``kind`` gives other classes, each
        cell's (:func:`layout_classes`, for adaptive leaves). Cells by
        decreasing regret take their best listed tile that their class holds with room, or one no
        class holds while as many stay as the classes still need
        (``ceil(cells left / cap)`` each, less the room of their tiles):
        with every tile listed, no cell is then left without one. An exact
        solve within the classes, each tile kept to its own, then improves
        the placement.
        """
        edges = self.edges
        assert self.cap is not None and (kind is not None or self.layout is None)
        cap, spacing = self.cap, self.min_spacing
        if kind is None:
            cell = np.arange(self.count)
            kind = (cell // self.cols % spacing) * spacing + cell % self.cols % spacing
            size = np.bincount(kind, minlength=spacing * spacing)
        else:
            size = np.bincount(kind)
        # Cells of each class still to place, room left in the tiles it holds, and how
        # many tiles it still needs from those no class holds.
        left = size.tolist()
        room = [0] * len(left)
        need = [-(-n // cap) for n in left]
        free = int(np.unique(edges.tile).size)
        spare = free - sum(need)
        if spare < 0:
            return None
        owner = [-1] * (int(edges.tile.max(initial=-1)) + 1)
        uses = [0] * len(owner)
        order, bounds = _by_regret(edges)
        tiles = edges.tile.tolist()
        kinds = kind.tolist()
        chosen = [-1] * self.count
        for at in order:
            k = kinds[at]
            for e in range(bounds[at], bounds[at + 1]):
                t = tiles[e]
                if owner[t] == k and uses[t] < cap:
                    room[k] -= 1
                elif owner[t] < 0 and (need[k] > 0 or spare > 0):
                    owner[t] = k
                    room[k] += cap - 1
                    if need[k] > 0:
                        need[k] -= 1
                    else:
                        spare -= 1
                else:
                    continue
                uses[t] += 1
                left[k] -= 1
                chosen[at] = t
                break
            else:
                return None
            # Cells left beyond the room of the tiles held: the class's need can only fall.
            need[k] = -(-max(0, left[k] - room[k]) // cap)
        tile = np.asarray(chosen, np.int64)
        held = np.asarray(owner, np.int64)
        exact = _solve(self.count, edges, held[edges.tile] == kind[edges.row], cap, None,
                       self.minimum)
        if (exact >= 0).all():
            tile = edges.tile[exact]
        return tile

    def _diagonal_placement(self) -> np.ndarray | None:
        """Each class of cells ``D`` apart held by one listed tile; None where none fits.

        The classes are chosen so that none holds more cells than the cap:
        ``(c + D r) mod m`` for ``m >= D * D`` (``dc + D dr`` is a nonzero
        multiple of ``m`` only when ``|dc|`` or ``|dr|`` reaches ``D``), about
        ``cells / m`` cells each; or the ``D * D`` lattice classes with each
        band of ``D`` rows (or columns) shifted by one more, so that the
        classes that get the grid's extra column (row) take turns. Where the
        library has few tiles more than a ``D x D`` block and the cap leaves
        little to spare, the plain lattice classes of
        :meth:`_lattice_placement` are each too large for one tile, and these
        are not (10 tiles of at most 121 uses, 3 apart, on 30 x 40 cells:
        ``(c + 3 r) mod 10`` gives each tile 120; 9 of at most 134: the
        shifted lattice gives each 130-134). Which tile holds which class is
        one assignment over the classes' summed distances; the cheapest of the
        class choices that fit is kept.
        """
        from scipy.optimize import linear_sum_assignment

        edges, spacing = self.edges, self.min_spacing
        listed = np.unique(edges.tile)
        kinds = spaced_classes(self.rows, self.cols, spacing, listed.size)
        column = np.searchsorted(listed, edges.tile)
        best, least = None, math.inf
        for kind in kinds:
            m = int(kind.max()) + 1
            size = np.bincount(kind, minlength=m)
            if self.cap is not None and size.max() > self.cap:
                continue
            cost = np.zeros((m, listed.size))
            np.add.at(cost, (kind[edges.row], column), edges.dist.astype(np.float64))
            listing = np.zeros((m, listed.size), np.int64)
            np.add.at(listing, (kind[edges.row], column), 1)
            # A tile some cell of the class does not list cannot hold it.
            whole = listing == size[:, None]
            if not whole.any(axis=1).all():
                continue
            cost[~whole] = cost.sum() + 1.0
            held, by = linear_sum_assignment(cost)
            total = float(cost[held, by].sum())
            if whole[held, by].all() and total < least:
                tile_of = np.full(m, -1, np.int64)
                tile_of[held] = listed[by]
                best, least = tile_of[kind], total
        return best

    def _improve(self, tile: np.ndarray) -> np.ndarray:
        """Lower the cost of a placement (each cell's ``tile``) by moves and swaps.

        The polish of :mod:`._polish` (every limit kept), on a placement whose
        tiles are all listed; any other is left as it is.
        """
        position, listed = _listed_at(self.edges, tile)
        if not listed.all():
            return tile
        return self.edges.tile[self._polished(position)]

    def _fill_minimum(self, tile: np.ndarray) -> np.ndarray:
        """Move cells onto the tiles short of ``min_uses``, spacing and other minima kept.

        Each short tile takes, one at a time, the listed cell that loses least
        by moving, among those whose tile has uses to spare and that no cell
        of the short tile is near. Tiles still short are left to the caller
        (:class:`ShortLists`).
        """
        edges, minimum = self.edges, self.minimum
        tile = tile.copy()
        top = max(int(edges.tile.max(initial=-1)) + 1, self.tile_count or 0)
        uses = np.bincount(tile, minlength=top)
        position, _ = _listed_at(edges, tile)
        paid = edges.dist[position]
        if self.layout is None:
            where = np.stack(np.divmod(np.arange(self.count), self.cols), axis=1)
            reach = self.min_spacing
        else:
            where, reach = self.layout.centre, self.min_spacing * self.layout.unit
        for short in np.flatnonzero(uses < minimum).tolist():
            listing = edges.tile == short
            cells, dist = edges.row[listing], edges.dist[listing]
            while uses[short] < minimum:
                free = uses[tile[cells]] > minimum
                holders = np.flatnonzero(tile == short)
                if len(holders) and reach > 1:
                    apart = np.abs(where[cells][:, None, :] - where[holders][None, :, :])
                    free &= apart.max(axis=2).min(axis=1) >= reach
                if not free.any():
                    break
                pick = int(np.flatnonzero(free)[np.argmin((dist - paid[cells])[free])])
                moved = cells[pick]
                uses[tile[moved]] -= 1
                uses[short] += 1
                tile[moved], paid[moved] = short, dist[pick]
        return tile
