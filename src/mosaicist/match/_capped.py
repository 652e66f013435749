"""Capped assignment: exact candidate lists, then a repetition-limited assignment.

With ``max_uses`` or ``min_spacing`` set, every cell first gets its ``k``
nearest candidates, exactly (:func:`~mosaicist.match.match_exact` with
``k > 1``), and :func:`~mosaicist.match.assign_tiles` then gives each cell
one of them under the limits. Where the grid needs a fair share of the
library's uses, each cell also lists the tiles of least distance plus the
tile prices the assignment is expected to end with (:func:`warm_candidates`,
:mod:`._warm`): instead of its nearest tiles where a tile fills one cell,
beside a few of them where spacing can bind. A library of a few hundred
photos is solved over every cell-tile pair at once: by an auction
(:mod:`._auction`, :func:`auction_fits`), whose placement the least tile
prices then prove against every pair, or, without the compiled loops, by
listing every tile for every cell (:func:`dense_lists`), so that the first
solve is proven at once.
It asks :class:`LibrarySearch` for more only where it needs them: the
nearest tiles of cells whose lists are used up, and, to certify the result
over every cell-tile pair, the tiles whose distance plus the assignment's
tile prices beats a cell's cost (see
:mod:`mosaicist.match._assign`). Distances stay in the exact search's
integer units throughout (tinted objectives included) and are converted once
at the end.

Limits count uses of a library tile whatever its transform, so the lists
of (tile, transform) candidates are reduced to each tile's best transform
before assigning, and mapped back afterwards.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import TypeVar

import numpy as np

from ..errors import MosaicistError, OptionError, install_extra, naming_identical
from ..options import MosaicOptions
from ._approximate import _cell_points, _tile_points
from ._assign import (
    FALLBACK_PAIRS,
    Assignment,
    CandidateSearch,
    MinimumUsesError,
    ShortLists,
    _edges,
    _gap,
    _total,
    assign_tiles,
    check_feasible,
    nearest_cells,
    spaced_cap,
    spacing_binds,
    spacing_capacity,
    tile_capacity,
    tile_prices,
    verify_placement,
)
from ._auction import (
    MOST_PLACES_PER_CELL,
    SLOW_WITHOUT_NUMBA_PAIRS,
    auction_runs,
    capped_auction,
)
from ._exact import (
    CellTerms,
    cell_terms,
    dense_distances,
    full_tint,
    match_exact,
    pair_distances,
    search_scale,
)
from ._features import LARGE_LIBRARY, BoundGrid, bound_scale
from ._groups import CellKinds, assign_by_kinds, cell_kinds, search_widths, spaced_by_kinds
from ._registry import Matcher, MatchRequest, MatchResult
from ._warm import KINDS_EPSILON_STEPS, least_priced, warm_prices

T = TypeVar("T")

#: Candidates per cell of the first lists (grown where the assignment needs more).
FIRST_CANDIDATES = 32
#: Candidates per cell of the first lists where the grid needs at least
#: :data:`FULL_LOAD` of all the uses the library allows (cells over ``cap x tiles``).
#: There the prices rise over most of the library and most cells end far from
#: their nearest tiles, so long first lists only make the first solves dearer:
#: with 8 instead of 32, 32,400 cells x 50,000 tiles at ``--max-uses 1`` (load
#: 0.65) took 63-66 s instead of 78-79 s, and 30,033 cells of another photo (load
#: 0.60) 162 s instead of 205 s; a 12,288-cell photo at load 0.25 was faster with 32.
FULL_FIRST_CANDIDATES = 8
#: 0.4 since the warm lists: photos of 21,760 cells (load 0.44) got none at 0.5, and
#: took 153.9 s in 32 rounds (a forest fire), 393.0 s in 31 (a camera-trap bear) and
#: 338 s in 38 (camera-trap elephants); with them 46.7 s in 7, 109.9 s in 14 and
#: 287.8 s in 34, certified, the objectives equal.
FULL_LOAD = 0.4
#: Load (as :data:`FULL_LOAD`) from which the first lists also hold warm lists
#: (:func:`warm_candidates`). A grid of that load may still hold crowds of alike
#: cells that want the same few tiles (a sky): on the seed workload (load 0.10,
#: the default preset) half of the 5,040 cells found every tile of their first
#: 32 taken, and the rounds took 9 searches; with warm lists, 5-6.
WARM_LOAD = 0.05
#: Tiles each cell lists first on such grids: those of least distance
#: plus the final prices estimated by :mod:`._warm` (with the prices of a finished
#: run, lists of 24 took 32,400 cells from 21 rounds to 7, of 8 to 11). 48 since the
#: pairs are measured without wide copies: Starry Night 48.6 s against 60.9 s with 24
#: (96: 49.3 s), the arctic photo 69-82 s against 101 s (64: 76 s, 96: 78 s).
WARM_CANDIDATES = 48
#: Share of the cells below which the largest kind of cell leaves warm lists to the
#: kinds (:func:`warm_kind_pairs`). They pay where many kinds compete for the same
#: tiles (a colour ramp's 30,000 cells in 773 kinds of at most 105: 923 s and 174
#: rounds without, 130 s and 17 rounds with); beside one kind that holds most of the
#: grid (a page, a drawing's paper, pixel art: its nearest tiles are what it takes)
#: the auction of that crowd only costs time (a blank page 3.6 s -> 7.6 s, pixel art
#: 1.7 -> 2.6 s).
WARM_KINDS_LARGEST = 0.5
#: Kinds, as a share of the cells, up to which the kinds' warm auction starts with a
#: coarse phase (:data:`~mosaicist.match._warm.KINDS_EPSILON_STEPS`): the 30,000-cell
#: colour ramp (7,006 kinds) 178 s -> 141 s, at the same rounds. Where most cells are
#: alone the finer estimate pays: the camera-trap elephants at one use (27,339 kinds of
#: 31,212 cells) took a round more with the coarse phase, 59.2 s against 54.9 s.
COARSE_AUCTION_KINDS = 0.5
#: Whether the warm lists replace the nearest tiles (else they join them). The first
#: pricing round searches nearly every cell of such a grid anyway (its cost lies far
#: past its nearest tiles), so the nearest tiles' search proved little: without it,
#: Starry Night took 46.3 s against 49.1 s, the arctic photo 68.8 s against 71.7 s.
WARM_ONLY = True
#: Principal components of the space the prices are estimated in. 64 (was 16)
#: since tinted objectives have warm lists: their points drop the channel means,
#: which the first components mostly carry. Starry Night at 32,400 cells took 207 s
#: (16), 185 s (32), 152 s (64) with the default preset; untinted (`--max-uses 1`)
#: 88 s against 77 s; the seed workload's default preset 5.4-5.8 s, 6 rounds, against
#: 4.6-5.2 s, 4 rounds; the camera-trap elephants 315 s against 271 s.
WARM_DIMENSIONS = 64
#: The same past :data:`~._features.LARGE_LIBRARY` tiles: the points of a million
#: tiles in 64 components take half a gigabyte in float64 (16: 136 MB).
LARGE_WARM_DIMENSIONS = 16
#: Most of the uses that a preset's spacing allows each tile (``spacing_capacity``) that the
#: grid may need on average, ``cells / (tiles x capacity)``: past it the spacing gives way
#: before any work (:func:`fit_limits`). The spacing rounds move tiles apart by forbidding
#: pairs, and a library that must fill its tiles' lattice that densely leaves them too few
#: places. On Starry Night's 5,040 cells with the default preset, loads of 0.23-0.32 (70, 35
#: and 50 photos at spacings 4, 3 and 4) took 3-5 rounds; 0.35 (70 photos at 5) 20 rounds;
#: 0.44-0.69 (20, 35 and 50 photos at 3, 4 and 5) failed after up to 60 rounds, so that
#: 20, 35 and 50 photos took 6.5, 17.6 and 10.1 s to end at a spacing that works at once
#: (2.3, 2.7 and 4.2 s); on 16,960 cells, 50 photos failed at 0.31 too (70 s, 57 s).
SPACING_LOAD = 1 / 3
#: Places to spare, per tile of the library, where a preset's use limit rises to fill the
#: grid and its spacing binds (:func:`fit_limits`). 386 photos on 51,712 cells at 134 uses
#: each left 12 places to spare: the spacing rounds failed at spacing 5 (60 rounds, then
#: all again at 4; stopped after 15 minutes). At 135 uses (398 to spare) the make took 92 s.
#: 99 and 200 photos had 65 and 88 to spare (a quarter of the tiles and more) and took
#: 4-5 rounds.
SPARE_PLACES = 1 / 4
#: Most cell-tile pairs (transforms included) whose distances a minimum of uses computes.
MINIMUM_PAIRS = 40_000_000
#: Most cell-tile pairs (transforms included) whose distances a minimum of uses computes
#: a block of tiles at a time (:meth:`LibrarySearch.tile_blocks`), for each tile's nearest
#: cells, where they are more than :data:`MINIMUM_PAIRS`: time, not memory, bounds them.
MINIMUM_BLOCK_PAIRS = 240_000_000
#: Whether a minimum of uses lists each cell's warm tiles too (:func:`warm_candidates`).
MINIMUM_WARM = True
#: Most cell-candidate pairs in one of :meth:`LibrarySearch.tile_blocks`' blocks (8 bytes each).
BLOCK_PAIRS = 8_000_000
#: Most library tiles (transforms included) for which every cell lists every tile
#: (:func:`dense_lists`), and most cell-tile pairs so listed (about 200 bytes each
#: while the lists are built and solved: 2.0 GB at 7.8 million). Four times the lists
#: a cell of a full grid starts with (warm and nearest). Starry Night at 20,160 cells
#: with the default preset (spacing 5): 99 photos (204 uses) 7.8 s against 15.3 s,
#: 200 photos (101 uses) 13.2-15.0 s against 16.1 s; 386 photos 14.1 s against 13.6 s
#: (2.0 GB); at 5,040 cells, 20-100 photos 2.1-2.4 s both ways.
DENSE_TILES = 4 * (WARM_CANDIDATES + FULL_FIRST_CANDIDATES)
DENSE_PAIRS = 8_000_000
#: Most tiles, as a share of the library, that the auction's optimum under the cap alone
#: may leave short of ``min_uses`` for them to take cells from it (a bound, not a proof).
FILLED_SHORT = 0.05
#: Fewest cells each tile lists at first when every tile must be used.
MINIMUM_CELLS = 16
#: Most library tiles, and most cell-tile pairs (transforms included), for which the
#: capped optimum is solved over every pair at once by an auction (:mod:`._auction`),
#: where a tile may fill at least :data:`AUCTION_COPIES` cells: each bid scans a cell's
#: distance to every tile, and the distances take 8 bytes a pair. Starry Night on 51,712
#: cells with the default preset (spacing 5), against the lists' rounds: 400 photos (130
#: uses) 23.7 s certified against 203-281 s stopped uncertified at 40 rounds; 1,000
#: photos (52 uses, 51.7 million pairs) 31.8 s and 1.2 GB against 226 s uncertified and
#: 2.3 GB; 2,000 photos on 30,000 cells (14 uses) 22.3 s against 24.8 s.
AUCTION_TILES = 2048
AUCTION_PAIRS = 64_000_000
#: Fewest uses per tile for the auction. Where tiles have few copies the lists' rounds
#: are quick: on 5,040 cells, 1,000 photos (6 uses) 2.1 s against 2.5 s, 2,000 (3 uses)
#: 2.4 s against 3.8 s.
AUCTION_COPIES = 8
#: Tiles of least reduced cost each cell lists after the auction, for the spacing rounds.
AUCTION_LISTS = 48
#: Rows of a dense distance matrix handled at a time (its sums, its selections).
DENSE_ROWS = 4096


class CappedMatcher(Matcher):
    """Exact candidates, then the min-cost (or greedy) assignment under repetition limits."""

    name = "assignment"
    repetition_limits = True

    def match(self, request: MatchRequest) -> MatchResult:
        options = request.options
        grid = request.grid
        # Before any heavy work: too few tiles for the limits is an error at once.
        try:
            check_feasible(len(grid), len(request.library), options.max_uses, grid.rows,
                           grid.cols, options.min_spacing, options.min_uses)
        except OptionError as error:
            raise naming_identical(error, request.library.identical_dropped,
                                   request.library.duplicates_dropped, limit=options.limit,
                                   tiles=len(request.library)) from None
        search = self.library_search(request)
        cap = tile_capacity(grid.rows, grid.cols, options.max_uses, options.min_spacing)
        if not options.min_uses and options.assign == "optimal" and request.notes:
            _note_slow_without_numba(len(grid), len(request.library), request.variants, cap)
        searched_as = None
        if (options.assign == "optimal" and cap is not None
                and (by_kinds := _by_kinds(request, search, cap)) is not None):
            # A drawing or a page: thousands of identical cells, each kind searched once.
            assignment, searched_as = by_kinds
        elif options.min_uses:
            assignment = assign_with_minimum(request, search)
        elif (options.assign == "optimal"
              and auction_fits(len(grid), len(request.library), request.variants, cap)
              and (proven := _proven_by_auction(search, cap)) is not None):
            # A few hundred photos on a large grid: the optimum over every pair at once.
            tiles, distances, placed = proven
            assignment = assign_tiles(
                tiles, distances, grid.rows, grid.cols, max_uses=options.max_uses,
                min_spacing=options.min_spacing, search=search,
                show_progress=request.show_progress, proven=placed,
            )
        elif dense_lists(len(grid), len(request.library), request.variants):
            # A few hundred photos: every cell lists every tile, and the first solve
            # is proven at once (no pricing rounds, no warm prices to estimate).
            full = search.dense()
            tiles = np.argsort(full, axis=1, kind="stable")
            distances = np.take_along_axis(full, tiles, axis=1)
            del full
            assignment = assign_tiles(
                tiles, distances, grid.rows, grid.cols, max_uses=options.max_uses,
                min_spacing=options.min_spacing, method=options.assign, search=search,
                show_progress=request.show_progress,
            )
        else:
            warm_cap = warm_grid_cap(len(grid), len(request.library), grid.rows, grid.cols,
                                     options.max_uses, options.min_spacing)
            warm = None
            if warm_cap is not None and options.assign == "optimal":
                warm = warm_candidates(request, search, warm_cap)
            nearest = (warm is None or not WARM_ONLY
                       or spacing_binds(grid.rows, grid.cols, options.max_uses,
                                        options.min_spacing))
            if warm is not None and not nearest:
                # The warm lists alone: the first round searches every cell anyway (its
                # cost lies past its nearest tiles), so the nearest search proves nothing.
                tiles, distances = _by_cell(*warm, len(grid))
                warm = None
            else:
                # Short beside warm lists, which hold the far tiles a crowd ends on.
                first = FULL_FIRST_CANDIDATES if warm is not None else first_candidates(
                    len(grid), len(request.library), grid.rows, grid.cols, options.max_uses,
                    options.min_spacing)
                tiles, distances = search.nearest(np.arange(len(grid)), first)
            assignment = assign_tiles(
                tiles, distances, grid.rows, grid.cols, max_uses=options.max_uses,
                min_spacing=options.min_spacing, method=options.assign, search=search,
                show_progress=request.show_progress, extra=warm, nearest=nearest,
            )
        # Search units back to the objective's (exactly as match_exact converts them).
        scale = search.scale
        if scale != 1:
            assignment = replace(
                assignment, distance=assignment.distance / scale,
                objective=assignment.objective / scale,
                lower_bound=assignment.lower_bound / scale,
            )
        return MatchResult(search.candidate_of(assignment.tile, searched_as),
                           assignment.distance, assignment=assignment)

    def library_search(self, request: MatchRequest) -> LibrarySearch:
        """The searches the assignment asks for (a cluster's matcher spreads them over workers).

        Parameters
        ----------
        request : MatchRequest
            The cells, library and settings being matched.

        Returns
        -------
        LibrarySearch
            Exact searches over the request's whole library.
        """
        return LibrarySearch(request)


def _by_kinds(request: MatchRequest, search: LibrarySearch, cap: int
              ) -> tuple[Assignment, np.ndarray] | None:
    """The capped assignment solved once per kind of identical cell (:mod:`._groups`), or None.

    None where the kinds are too many to pay (:meth:`CellKinds.worth_grouping`:
    a drawing or a page, or a photo whose caption bar or clipped sky is a
    large crowd among lone cells where no spacing or minimum follows), or
    the kinds' solve cannot run. Without a binding spacing the kinds'
    optimum is the answer; with one, the spacing rounds start from it. A
    minimum of uses is kept by both (a blank page from 3,000 photos at 9,690
    cells under the default preset, every photo used: 102 s through
    :func:`assign_with_minimum`).
    Returned with the assignment: the cell each cell's pairs were searched
    as.
    """
    kinds = cell_kinds(request.cell_vectors, full_tint(request.options.tint))
    options, grid = request.options, request.grid
    minimum = options.min_uses
    spaced = spacing_binds(grid.rows, grid.cols, options.max_uses, options.min_spacing)
    if not kinds.worth_grouping(cap, spaced or minimum > 0):
        return None
    searched_as = kinds.first[kinds.kind]
    warm = None
    if (warm_grid_cap(len(grid), len(request.library), grid.rows, grid.cols, options.max_uses,
                      options.min_spacing) is not None
            and kinds.size.max() < WARM_KINDS_LARGEST * len(grid)):
        warm = warm_kind_pairs(request, search, cap, kinds)
    if not spaced:
        assignment = assign_by_kinds(search, kinds, cap, request.show_progress, minimum,
                                     warm)
        if assignment is None:
            return None
        verify_placement(assignment.tile, grid.rows, grid.cols, options.max_uses,
                         options.min_spacing, minimum, len(request.library))
        return assignment, searched_as
    started = time.perf_counter()
    # Alike cells tie on every tile they may take: where the library is small each cell
    # lists all of it for the spacing rounds (a logo from 120 photos at 5,000 cells, every
    # photo used: 4.8 s and 6 rounds, against 93 s and 25 rounds on 48 tiles each, whose
    # rounds left cells without a tile and grew their lists a few tiles a solve).
    tile_count = len(request.library)
    width = tile_count if len(grid) * tile_count <= FALLBACK_PAIRS else AUCTION_LISTS
    near = spaced_by_kinds(search, kinds, cap, grid.cols, options.min_spacing, width,
                           request.show_progress, minimum, warm)
    if near is None:
        return None
    tiles, distances, placed, rounds, bound = near
    try:
        assignment = assign_tiles(
            tiles, distances, grid.rows, grid.cols, max_uses=options.max_uses,
            min_spacing=options.min_spacing, search=search,
            show_progress=request.show_progress, proven=placed, min_uses=minimum,
            tile_count=tile_count if minimum else None,
        )
    except ShortLists:
        return None  # the spacing rounds' lists could not keep the minimum: the cells' way
    # The report's pricing rounds are the kinds' (the spacing rounds count apart), its
    # seconds theirs and the spacing rounds', its bound the capped optimum without
    # spacing (the rounds start from one that keeps each kind's room for copies spaced
    # apart, a tighter bound).
    return replace(assignment, pricing_rounds=rounds, lower_bound=bound,
                   gap=_gap(assignment.objective, bound),
                   seconds=time.perf_counter() - started), searched_as


def _by_cell(cells: np.ndarray, tiles: np.ndarray, distances: np.ndarray, count: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """Pairs as ``(count, k)`` lists, best first (ties by tile), ``-1`` past a cell's pairs."""
    order = np.lexsort((tiles, distances, cells))
    cells, tiles, distances = cells[order], tiles[order], distances[order]
    listed = np.bincount(cells, minlength=count)
    width = max(1, int(listed.max(initial=0)))
    column = np.arange(len(cells)) - np.repeat(np.cumsum(listed) - listed, listed)
    lists = np.full((count, width), -1, np.int64)
    list_distances = np.full((count, width), np.iinfo(np.int64).max, np.int64)
    lists[cells, column] = tiles
    list_distances[cells, column] = distances
    return lists, list_distances


def auction_fits(cells: int, tiles: int, variants: int, cap: int | None) -> bool:
    """Whether the capped optimum is solved over every pair by an auction (:mod:`._auction`).

    For at most :data:`AUCTION_TILES` tiles and :data:`AUCTION_PAIRS` pairs
    (transforms included), under a use cap of at least :data:`AUCTION_COPIES`
    that leaves at most :data:`~._auction.MOST_PLACES_PER_CELL` places per cell.
    """
    return (cap is not None and AUCTION_COPIES <= cap and tiles <= AUCTION_TILES
            and cells * tiles * variants <= AUCTION_PAIRS
            and cap * tiles <= MOST_PLACES_PER_CELL * cells)


#: Whether this process has printed :func:`_note_slow_without_numba`'s note.
_noted_slow = False


def _note_slow_without_numba(cells: int, tiles: int, variants: int, cap: int | None) -> None:
    """Say once, on stderr, that the auction cannot run without Numba and the match is slow.

    Only where the auction would solve (:func:`auction_fits`) a problem of at
    least :data:`~._auction.SLOW_WITHOUT_NUMBA_PAIRS` pairs: there the lists'
    rounds that solve instead take up to minutes. Called only where the request
    allows notes (not ``--quiet``), as the pipeline's notes are.
    """
    global _noted_slow
    if (_noted_slow or cells * tiles * variants < SLOW_WITHOUT_NUMBA_PAIRS
            or not auction_fits(cells, tiles, variants, cap) or auction_runs()):
        return
    _noted_slow = True
    print(f"mosaicist: note: without Numba, matching {cells:,} cells to {tiles:,} tiles under "
          "a use cap can take minutes instead of seconds; for speed install the fast extra: "
          f"{install_extra('fast')}", file=sys.stderr)


def _proven_by_auction(search: LibrarySearch, cap: int | None, full: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The optimum at ``cap`` uses over every pair, proven, and lists around it, or None.

    The auction (:func:`~._auction.capped_auction`) places every cell; the
    least tile prices that prove it optimal over every pair are then found
    from lists of a few tiles per cell (those of least distance plus the
    auction's prices) and checked against every pair of the distances in
    memory: each pair that beats its cell's cost at those prices joins the
    lists, and the prices are found again, until none does. Returned: each
    cell's :data:`AUCTION_LISTS` tiles of least reduced cost ``c_ij + p_j -
    u_i`` at those prices (its own tile among them), best first, their
    distances, and the placement. None where the auction cannot run (no
    Numba, costs past its range). ``full``: the distances, where the caller has them
    (else :meth:`LibrarySearch.dense`).
    """
    assert cap is not None
    if full is None:
        full = search.dense()
    solved = capped_auction(full, cap)
    if solved is None:
        return None
    placed, estimate = solved
    count, tiles = full.shape
    width = min(AUCTION_LISTS, tiles)
    own = full[np.arange(count), placed]
    # Lists to find the prices from: near the auction's prices, where the proof lies.
    lists, list_distances = _by_distance(full, _least_columns(full, estimate, placed, width))
    pair_cells = np.zeros(0, np.int64)
    pair_tiles = np.zeros(0, np.int64)
    while True:
        if len(pair_cells):
            # Pairs that beat their cells' costs at the last prices join the lists.
            listed = lists.ravel() >= 0
            every_cells = np.concatenate((np.repeat(np.arange(count), width)[listed],
                                          pair_cells))
            every_tiles = np.concatenate((lists.ravel()[listed], pair_tiles))
            lists, list_distances = _by_cell(every_cells, every_tiles,
                                             full[every_cells, every_tiles], count)
            width = lists.shape[1]
            pair_cells, pair_tiles = pair_cells[:0], pair_tiles[:0]
        edges = _edges(lists, list_distances, np.full(count, width))
        priced = tile_prices(edges, np.flatnonzero(edges.tile == placed[edges.row]), cap)
        if priced is None:
            return None  # not optimal after all (it cannot be): the lists' rounds decide
        price = np.zeros(tiles, np.int64)
        price[priced[0]] = priced[1]
        paid = own + price[placed]
        pair_cells, pair_tiles = _beaten(full, price, paid)
        if not len(pair_cells):
            break
    # Proven: no pair beats its cell's cost. The spacing rounds get the tiles near it.
    near, near_distances = _by_distance(
        full, _least_columns(full, price, placed, min(AUCTION_LISTS, tiles)))
    return near, near_distances, placed


def _by_distance(full: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``columns`` of ``full`` and their values, least first."""
    values = np.take_along_axis(full, columns, axis=1)
    order = np.argsort(values, axis=1, kind="stable")
    return np.take_along_axis(columns, order, axis=1), np.take_along_axis(values, order, axis=1)


def _least_columns(full: np.ndarray, price: np.ndarray, own: np.ndarray, width: int
                   ) -> np.ndarray:
    """``(N, width)`` each row's columns of least ``full + price``, its ``own`` among them."""
    count, tiles = full.shape
    chosen = np.empty((count, width), np.int64)
    for start in range(0, count, DENSE_ROWS):
        rows = slice(start, start + DENSE_ROWS)
        total = full[rows] + price
        total[np.arange(len(total)), own[rows]] = np.iinfo(np.int64).min
        chosen[rows] = (np.argpartition(total, width - 1, axis=1)[:, :width]
                        if width < tiles else np.arange(tiles))
    return chosen


def _beaten(full: np.ndarray, price: np.ndarray, paid: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Every pair ``(cells, tiles)`` whose ``full + price`` is below its cell's ``paid``."""
    cells: list[np.ndarray] = []
    tiles: list[np.ndarray] = []
    for start in range(0, len(full), DENSE_ROWS):
        rows = slice(start, start + DENSE_ROWS)
        row, column = np.nonzero(full[rows] + price < paid[rows, None])
        cells.append(row + start)
        tiles.append(column)
    return np.concatenate(cells), np.concatenate(tiles)


def dense_lists(cells: int, tiles: int, variants: int = 1) -> bool:
    """Whether every cell lists every tile of a capped assignment.

    True for a library of at most :data:`DENSE_TILES` candidates (tiles times
    their ``variants``) and at most :data:`DENSE_PAIRS` cell-tile pairs.
    Where a tile fills hundreds of cells, the prices rise over the whole
    library, and lists of the nearest or warm tiles (:func:`warm_candidates`,
    whose auction on a sample bids for hundreds of copies of a few tiles)
    cost more than the whole library.
    """
    candidates = tiles * variants
    return candidates <= DENSE_TILES and cells * candidates <= DENSE_PAIRS


def full_grid_cap(cells: int, tiles: int, rows: int, cols: int, max_uses: int | None,
                  min_spacing: int) -> int | None:
    """The uses a tile allows under the limits where the grid is full, else None.

    Full: the ``cells`` need at least :data:`FULL_LOAD` of the uses the
    ``tiles`` allow. There the first lists are short.
    """
    return _cap_at_load(cells, tiles, rows, cols, max_uses, min_spacing, FULL_LOAD)


def warm_grid_cap(cells: int, tiles: int, rows: int, cols: int, max_uses: int | None,
                  min_spacing: int) -> int | None:
    """The uses a tile allows under the limits where warm lists pay, else None.

    That is where the ``cells`` need at least :data:`WARM_LOAD` of the uses
    the ``tiles`` allow (full grids included, see :func:`full_grid_cap`).
    """
    return _cap_at_load(cells, tiles, rows, cols, max_uses, min_spacing, WARM_LOAD)


def _cap_at_load(cells: int, tiles: int, rows: int, cols: int, max_uses: int | None,
                 min_spacing: int, load: float) -> int | None:
    """The uses a tile allows where the ``cells`` need ``load`` of all uses or more."""
    cap = tile_capacity(rows, cols, max_uses, min_spacing)
    return cap if cap is not None and cells >= load * cap * tiles else None


def first_candidates(cells: int, tiles: int, rows: int, cols: int, max_uses: int | None,
                     min_spacing: int) -> int:
    """Length of every cell's first list of nearest tiles for a capped assignment.

    :data:`FULL_FIRST_CANDIDATES` where the grid is full (:func:`full_grid_cap`),
    else :data:`FIRST_CANDIDATES`. Beside warm lists (:func:`warm_grid_cap`)
    the matcher asks for :data:`FULL_FIRST_CANDIDATES` whatever the load.
    """
    full = full_grid_cap(cells, tiles, rows, cols, max_uses, min_spacing) is not None
    return FULL_FIRST_CANDIDATES if full else FIRST_CANDIDATES


def warm_candidates(request: MatchRequest, search: CandidateSearch, cap: int,
                    terms: CellTerms | None = None,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Each cell's :data:`WARM_CANDIDATES` tiles of least distance plus estimated final price.

    The prices come from an auction on a sample in the bound's space
    (:func:`~mosaicist.match._warm.warm_prices`), the tiles from the same
    space (:func:`warm_points`), their distances from the exact objective
    (``search.pairs``). Returned as ``(cells, tiles, distances)`` pairs for
    the assignment's first lists (:data:`WARM_ONLY`); None where the
    estimate does not apply (transforms, whose best variant the bound's
    space does not know, or no Numba). ``terms`` places the cells in the
    bound's space (default: the search's own cells'; adaptive leaves of
    several sizes give theirs, scaled to one level).
    """
    estimated = _warm_estimate(request, search, cap, terms)
    if estimated is None:
        return None
    cell_points, tile_points, estimate = estimated
    # Chosen in the bound's space (a search of the whole library with these prices
    # prunes poorly on some photos: 27 s on one), then measured exactly.
    listed = least_priced(cell_points, tile_points, estimate, WARM_CANDIDATES)
    if listed is None:
        return None
    tiles = np.asarray(request.features.order)[listed.ravel()]
    cells = np.repeat(np.arange(len(cell_points)), listed.shape[1])
    return cells, tiles, search.pairs(cells, tiles)


def warm_kind_pairs(request: MatchRequest, search: LibrarySearch, cap: int, kinds: CellKinds
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Each kind's tiles of least distance plus estimated final price: kind, tile, distance.

    The kinds' counterpart of :func:`warm_candidates` (the rounds of a
    colour ramp's 30,000 cells in 773 kinds, from 50,000 photos: 174 without,
    19 with): the prices are
    estimated from every cell (a kind weighs as its cells), and a kind of
    ``w`` cells lists ``ceil(w / min(w, cap))`` tiles, as many as it fills,
    plus :data:`WARM_CANDIDATES`. None where the estimate does not apply.
    """
    # Each cell at its kind's point: the points of cells a colour apart differ in their
    # last float digits, and the auction draws alike points once (the 30,000 cells of a
    # colour ramp, 773 kinds: 90 s of bidding, 37 s so).
    crowded = len(kinds.first) <= COARSE_AUCTION_KINDS * len(kinds.kind)
    estimated = _warm_estimate(request, search, cap, at=kinds.first[kinds.kind],
                               steps=KINDS_EPSILON_STEPS if crowded else None)
    if estimated is None:
        return None
    cell_points, tile_points, estimate = estimated
    features = request.features
    want = -(-kinds.size // np.minimum(kinds.size, cap)) + WARM_CANDIDATES
    width = search_widths(want, search.tile_count)
    found_kinds, found_tiles = [], []
    for size in np.unique(width):
        some = np.flatnonzero(width == size)
        listed = least_priced(cell_points[kinds.first[some]], tile_points, estimate, int(size))
        if listed is None:
            return None
        found_kinds.append(np.repeat(some, listed.shape[1]))
        found_tiles.append(np.asarray(features.order)[listed.ravel()])
    kind, tiles = np.concatenate(found_kinds), np.concatenate(found_tiles)
    return kind, tiles, search.pairs(kinds.first[kind], tiles)


def _warm_estimate(request: MatchRequest, search: CandidateSearch, cap: int,
                   terms: CellTerms | None = None, at: np.ndarray | None = None,
                   steps: tuple[float, ...] | None = None,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Cell and tile points (:func:`warm_points`) and the tiles' estimated final prices.

    None where the estimate does not apply (no warm lists, transforms, a
    search of part of the library, no Numba). ``terms`` as in
    :func:`warm_candidates`; ``at`` puts each cell at that cell's point;
    ``steps`` are the auction's epsilon phases (default the usual ones).
    """
    if WARM_CANDIDATES < 1 or request.variants != 1:
        return None
    if len(request.features.order) != search.tile_count:
        return None
    if terms is None:
        assert isinstance(search, LibrarySearch)  # the others' cells give their terms
        terms = search.cell_terms()
    cell_points, tile_points = warm_points(request, terms)
    if at is not None:
        cell_points = cell_points[at]
    estimate = warm_prices(cell_points, tile_points, cap, steps=steps)
    if estimate is None:
        return None
    return cell_points, tile_points, estimate


def warm_points(request: MatchRequest, terms: CellTerms) -> tuple[np.ndarray, np.ndarray]:
    """Cell and tile points whose squared distance approximates the objective.

    The first :data:`WARM_DIMENSIONS` components of the exact search's bound
    (:data:`LARGE_WARM_DIMENSIONS` for large libraries; :mod:`._approximate`
    explains the points), in the library's order, float64.

    Notes
    -----
    A tint of strength ``A`` moves a tile by ``A (mean(c) - mean(t))`` per
    channel. Writing each vector as its mean plus what is left, the
    distance after the tint is ``|c~ - t~|^2 + n (1 - A)^2 |mean(c) -
    mean(t)|^2`` (``n`` tile pixels): the distance of the vectors less their
    means, plus the part of the means the tint leaves. In the bound's space
    a vector's channel means ``mu`` project to ``M mu``, ``M`` the basis
    applied to the block values of an image of one colour per channel, and
    the bound's units are one block, so the points become ``[g - M mu,
    (1 - A) sqrt(b) mu]``, ``b`` the squared length of those block values
    (the blocks, where all are alike). Untinted (``A = 0``) the distance is
    the plain one, and the points are left as they are.
    """
    features = request.features
    scale = bound_scale(request.geometry)
    dimensions = min(warm_dimensions(len(features.order)), len(features.basis))
    # float64, as the auction and the selection take them (no second copy there).
    cell_points = _cell_points(terms.bound_rows, dimensions, scale).astype(np.float64)
    tile_points = _tile_points(np.asarray(features.bound), dimensions, scale).astype(np.float64)
    strength = request.options.tint
    if not strength:
        return cell_points, tile_points
    basis = np.asarray(features.basis, np.float64)[:dimensions]
    # The block values of an image of one colour per channel (ones where all blocks
    # are alike; see _features.BoundGrid), and their squared length: the blocks.
    height, width = request.geometry.shape
    constant = np.zeros((3, height, width, 3))
    for channel in range(3):
        constant[channel, :, :, channel] = 1.0
    unit = BoundGrid.of(request.geometry).means(constant)
    per_channel = basis @ unit.T
    blocks = float(np.einsum("ij,ij->i", unit, unit)[0])
    pixels = request.geometry.pixels
    cell_means = terms.sums / pixels
    tile_means = np.asarray(features.channel_sums)[np.asarray(features.order)] / pixels
    weight = (1.0 - strength) * np.sqrt(blocks)

    def moved(points: np.ndarray, means: np.ndarray) -> np.ndarray:
        out = np.empty((len(points), points.shape[1] + 3))
        out[:, :dimensions] = points[:, :dimensions] - means @ per_channel.T
        out[:, dimensions:-3] = points[:, dimensions:]
        out[:, -3:] = weight * means
        return out

    return moved(cell_points, cell_means), moved(tile_points, tile_means)


def warm_dimensions(tile_count: int) -> int:
    """Components of the warm prices' space for a library of ``tile_count`` tiles."""
    return WARM_DIMENSIONS if tile_count <= LARGE_LIBRARY else LARGE_WARM_DIMENSIONS


def fit_limits(options: MosaicOptions, cells: int, tiles: int, rows: int, cols: int
               ) -> MosaicOptions:
    """The options with a preset's repetition limits fitted to the library and grid.

    Limits given explicitly are kept (too tight is an error before any
    work). Limits that come from the preset are wishes: ``max_uses`` rises
    to the fewest uses that let the library fill the grid (where the spacing
    binds, with :data:`SPARE_PLACES` of the tiles' count to spare), every
    tile must then fill at least one cell (``min_uses`` 1, unless given),
    and ``min_spacing`` falls until the limits can be met, so that a default
    that asks for every tile once still works with 400 photos. The spacing
    also falls while the grid needs more than :data:`SPACING_LOAD` of the
    uses it allows the library and more cells than tiles (a few dozen
    photos), where the spacing rounds would search long for a placement,
    and often in vain. Where the library has little more than a ``D x D``
    block of tiles, the spacing forces near-lattice placements, and the use
    limit rises to one at which such a placement surely exists
    (:func:`~mosaicist.match._assign.spaced_cap`).

    Parameters
    ----------
    options : MosaicOptions
        The settings.
    cells, tiles : int
        Cells to fill and library tiles in use.
    rows, cols : int
        The grid's shape.
    """
    if not options.repetition_limited:
        return options
    changes: dict[str, int] = {}
    max_uses, spacing = options.max_uses, options.min_spacing
    if max_uses is not None and not options.given("max_uses"):
        # Also room for a given min_uses (a preset cap below it is no wish at all).
        max_uses = max(max_uses, -(-cells // max(tiles, 1)), options.min_uses)
        if max_uses != options.max_uses:
            changes["max_uses"] = max_uses
            if (not options.given("min_uses") and not options.min_uses and 0 < tiles < cells
                    and not options.adaptive):
                # (Adaptive leaves are matched level by level, each with its own limits.)
                # The library is short of the wish: as few uses as it allows means every
                # photo placed, not the best-fitting half of them twice (1,060 of 2,000
                # photos on 2,120 cells under the cap alone).
                changes["min_uses"] = 1
    if not options.given("min_spacing"):
        while spacing > 1:
            try:
                check_feasible(cells, tiles, max_uses, rows, cols, spacing)
                # Tiles used once each are never too close, however dense.
                if cells <= max(tiles, SPACING_LOAD * tiles
                                * (spacing_capacity(rows, cols, spacing) or 0)):
                    break
            except MosaicistError:
                pass
            spacing -= 1
        if spacing != options.min_spacing:
            changes["min_spacing"] = spacing
    if "max_uses" in changes and spacing_binds(rows, cols, changes["max_uses"], spacing):
        # Room to move: the spacing rounds move cells off tiles held too near, and
        # a library whose every tile is full moves them only by chains of others.
        changes["max_uses"] = max(changes["max_uses"],
                                  math.ceil((cells + SPARE_PLACES * tiles) / max(tiles, 1)))
    fitted = changes.get("max_uses", max_uses)
    if (fitted is not None and not options.given("max_uses")
            and spacing_binds(rows, cols, fitted, spacing)
            and cells == rows * cols and tiles < 2 * spacing * spacing):
        # Little more than a D x D block of tiles: the spacing forces near-lattice
        # placements, whose classes can hold more cells than the count above (4 tiles
        # 2 apart on 31 x 41 cells: 326 for one, not 318), and no placement keeps it.
        least = spaced_cap(rows, cols, spacing, tiles)
        if least is not None and least > fitted:
            changes["max_uses"] = least
    return options.fitted(**changes) if changes else options


def loosen_spacing(options: MosaicOptions, error: OptionError) -> MosaicOptions | None:
    """The options with a preset's spacing one cell shorter, after ``error`` (None: no way).

    The counts :func:`fit_limits` checks are necessary, not sufficient: a
    grid can have room for every copy and still no arrangement that keeps
    them apart. A spacing that came from the preset then gives way.
    """
    if ("min_spacing" not in error.parameters or options.given("min_spacing")
            or options.min_spacing <= 1):
        return None
    return options.fitted(min_spacing=options.min_spacing - 1)


def with_spacing_giving_way(
    options: MosaicOptions, attempt: Callable[[MosaicOptions], T]
) -> tuple[T, MosaicOptions]:
    """Return ``attempt(options)`` and the options it ran with, a preset's spacing giving way.

    While the attempt fails on a spacing that came from the preset
    (:func:`loosen_spacing`), it runs again with the spacing one cell
    shorter; any other error, or one on a given spacing, is raised.
    """
    while True:
        try:
            return attempt(options), options
        except OptionError as error:
            looser = loosen_spacing(options, error)
            if looser is None:
                raise
            options = looser


def assign_with_minimum(request: MatchRequest, search: LibrarySearch) -> Assignment:
    """The assignment when every tile must fill ``min_uses`` cells.

    Without a use cap or spacing, :func:`_with_minimum` (an exact split).
    Under a cap, the certified pricing rounds (:func:`assign_tiles` with a
    search) price each use past a tile's minimum as a surcharge: the tiles
    no cell lists are found by the cells that pay it, and the optimum over
    every cell-tile pair is proven as under a cap alone. Where the auction
    solves the cap alone (:func:`auction_fits`) and its optimum already
    keeps the minimum, that optimum is the one under both; where it leaves a
    few tiles short before a spacing, they take cells from it (its cost the
    bound, uncertified), and otherwise the pricing rounds start from the
    auction's lists, which prove the optimum under both. Each cell lists
    every tile where they are few (:func:`dense_lists`), else its nearest.
    Where the spacing rounds then leave a tile short, the lists of
    :func:`_with_minimum` (every tile's nearest cells) are tried instead.

    Parameters
    ----------
    request : MatchRequest
        The cells, library and settings (``min_uses`` at least 1).
    search : LibrarySearch
        Exact searches over the request's whole library.

    Returns
    -------
    Assignment
        The placement and its certificate.
    """
    options, grid = request.options, request.grid
    count, tile_count = len(grid), len(request.library)
    cap = tile_capacity(grid.rows, grid.cols, options.max_uses, options.min_spacing)
    if cap is None:
        return _with_minimum(request, search)
    limits = {"max_uses": options.max_uses, "min_spacing": options.min_spacing,
              "method": "optimal", "search": search, "show_progress": request.show_progress,
              "min_uses": options.min_uses, "tile_count": tile_count}
    try:
        full: np.ndarray | None = None
        # The auction's lists around the optimum under the cap alone, where it ran.
        around: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        if auction_fits(count, tile_count, request.variants, cap):
            full = search.dense()
            proven = _proven_by_auction(search, cap, full)
        if full is not None and proven is not None:
            tiles, distances, placed = proven
            short = np.flatnonzero(np.bincount(placed, minlength=tile_count) < options.min_uses)
            # The optimum under the cap alone is the optimum under both where it keeps the
            # minimum; a few tiles short of it take cells from it (:meth:`_Solver.from_proven`),
            # its cost the bound: 400 photos on 31,212 cells left one out, and the pricing
            # rounds took 50 s to place it, where this takes 19 s in all (gap 0.698% after
            # the spacing rounds, 0.695% without the minimum). Without spacing the pricing
            # rounds below prove the optimum under both (gap 0) where this gives only a
            # bound: 300 photos on 6,000 cells at 21 uses left 12 out, gap 0.09%.
            if not short.size or (len(short) <= FILLED_SHORT * tile_count
                                  and options.min_spacing > 1):
                return assign_tiles(tiles, distances, grid.rows, grid.cols, proven=placed,
                                    extra=nearest_cells(full[:, short], short, MINIMUM_CELLS),
                                    **limits)  # type: ignore[arg-type]
            # Else its lists join the pricing rounds': their prices are near the final ones.
            listed = tiles.ravel() >= 0
            around = (np.repeat(np.arange(count), tiles.shape[1])[listed], tiles.ravel()[listed],
                      distances.ravel()[listed])
        first = first_candidates(count, tile_count, grid.rows, grid.cols,
                                 options.max_uses, options.min_spacing)
        extra = None
        # Whether the lists come from every distance (no warm lists needed beside them).
        whole = count * tile_count * request.variants <= MINIMUM_PAIRS
        if dense_lists(count, tile_count, request.variants) or first >= tile_count:
            full = search.dense() if full is None else full
            tiles = np.argsort(full, axis=1, kind="stable")
            distances = np.take_along_axis(full, tiles, axis=1)
            del full
        elif count * tile_count * request.variants <= MINIMUM_PAIRS:
            # Each tile also lists its nearest cells: on a flat target every cell's nearest
            # tiles are the same few, and the rest of the library, which must be placed,
            # came into the lists a few dozen tiles a round (54 rounds, uncertified, on
            # 2,000 photos and 2,120 cells), where now the first solve places it.
            full = search.dense() if full is None else full
            tiles, distances = _nearest_of(full, first)
            extra = _minimum_extra([(np.arange(tile_count), full)], options.min_uses)
            del full
        elif count * tile_count * request.variants <= MINIMUM_BLOCK_PAIRS:
            # The same lists from every distance, a block of tiles at a time: 5,000 photos
            # on 10,672 cells took 45.3 s and 25 rounds with each cell's nearest tiles
            # alone, where the library came into the lists by the rounds.
            tiles, distances = search.nearest(np.arange(count), first)
            extra = _minimum_extra(search.tile_blocks(), options.min_uses)
            search.pairs(extra[0], extra[1])  # their transforms, for candidate_of
        else:
            tiles, distances = search.nearest(np.arange(count), first)
        if MINIMUM_WARM and not whole and options.assign == "optimal":
            warm_cap = warm_grid_cap(count, tile_count, grid.rows, grid.cols,
                                     options.max_uses, options.min_spacing)
            warm = None if warm_cap is None else warm_candidates(request, search, warm_cap)
            if warm is not None:
                extra = warm if extra is None else tuple(  # type: ignore[assignment]
                    np.concatenate(pair) for pair in zip(warm, extra, strict=True))
        if around is not None:
            extra = around if extra is None else tuple(  # type: ignore[assignment]
                np.concatenate(pair) for pair in zip(around, extra, strict=True))
        return assign_tiles(tiles, distances, grid.rows, grid.cols, extra=extra,
                            **limits)  # type: ignore[arg-type]
    except ShortLists as short:
        if count * tile_count * request.variants > MINIMUM_PAIRS:
            raise _minimum_unmet(options, len(short.tiles), tile_count, grid.rows,
                                 grid.cols) from None
        return _with_minimum(request, search)


def _minimum_extra(
    blocks: Iterable[tuple[np.ndarray, np.ndarray]], minimum: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs a minimum of uses lists beside each cell's nearest tiles.

    Each tile's :data:`MINIMUM_CELLS` nearest cells, and a placement of
    every tile's ``minimum`` on cells of their own (:func:`_place_minimum`),
    as ties (a flat target's) give every tile the same nearest cells.

    Parameters
    ----------
    blocks : iterable of (numpy.ndarray, numpy.ndarray)
        Tiles and every cell's distance to each, ``(N, len(tiles))``, in
        blocks that together hold each tile once, in order.
    minimum : int
        The uses every tile must have.

    Returns
    -------
    tuple of numpy.ndarray
        The pairs' cells, tiles and distances.
    """
    pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    taken: np.ndarray | None = None
    for tiles, distance in blocks:
        # Each tile's distances in a row of their own: partitioned along the rows, four
        # times faster than down the columns.
        by_tile = np.ascontiguousarray(distance.T)
        del distance
        near = min(MINIMUM_CELLS, by_tile.shape[1])
        nearest = np.argpartition(by_tile, near - 1, axis=1)[:, :near]
        tile_ids = np.asarray(tiles, np.int64)
        pairs.append((nearest.ravel(), np.repeat(tile_ids, near),
                      np.take_along_axis(by_tile, nearest, axis=1).ravel()))
        if taken is None:
            taken = np.zeros(by_tile.shape[1], bool)
        cells, rows = _place_minimum(by_tile, minimum, taken)
        pairs.append((cells, tile_ids[rows], by_tile[rows, cells]))
    cells, tiles, distances = (np.concatenate(part) for part in zip(*pairs, strict=True))
    return cells, tiles, distances


def _place_minimum(by_tile: np.ndarray, minimum: int, taken: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``minimum`` nearest cells (columns) not ``taken`` (updated), greedily.

    Tile after tile (``by_tile`` holds a tile's distance to every cell in a
    row), each takes its nearest free cell ``minimum`` times over: blocks of
    the library in turn place every minimum on distinct cells (``N >= M
    minimum``), for the lists to hold one; the pricing rounds then find the
    best. Returns the pairs as (cells, rows).
    """
    cells = np.empty(len(by_tile) * minimum, np.int64)
    largest = np.iinfo(by_tile.dtype).max
    at = 0
    for row in by_tile:
        for _ in range(minimum):
            cell = int(np.argmin(np.where(taken, largest, row)))
            taken[cell] = True
            cells[at] = cell
            at += 1
    return cells, np.repeat(np.arange(len(by_tile)), minimum)


def _nearest_of(full: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` least columns of ``full`` and their values, best first (ties by column)."""
    columns = np.argpartition(full, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(full, columns, axis=1)
    order = np.lexsort((columns, values), axis=1)
    return np.take_along_axis(columns, order, axis=1), np.take_along_axis(values, order, axis=1)


def _with_minimum(request: MatchRequest, search: LibrarySearch) -> Assignment:
    """The assignment when every tile must fill ``min_uses`` cells.

    Every cell-tile distance is computed (:meth:`LibrarySearch.dense`).
    Without a use cap or spacing the problem splits exactly: some cells fill
    the ``min_uses`` slots of every tile, and every other cell takes its
    nearest tile. Which cells fill which slots is one rectangular assignment
    (:func:`minimum_slots`), with a cell's cost being what it gives up by not
    taking its nearest tile; where those costs are too large for its float64
    sums to be exact, the general assignment below solves it in integers
    instead. With a cap or spacing, those pairs join each
    cell's nearest tiles and each tile's nearest cells as the lists of the
    general assignment (:func:`assign_tiles` with ``min_uses``), which then
    can always fill every minimum.
    """
    options, grid = request.options, request.grid
    count, tile_count = len(grid), len(request.library)
    pairs = count * tile_count * request.variants
    if pairs > MINIMUM_PAIRS:
        raise MinimumUsesError(
            "{min_uses} needs every cell-tile distance: {cells} cells x {tiles} tiles is over "
            "{most} pairs; use fewer tiles ({limit}) or larger cells ({cell_px})",
            low=options.min_uses, cells=count, tiles=tile_count, most=f"{MINIMUM_PAIRS:,}",
        )
    started = time.perf_counter()
    full = search.dense()
    split = minimum_slots(full, options.min_uses)
    if split is not None and options.max_uses is None and options.min_spacing <= 1:
        distance = full[np.arange(count), split]
        objective = int(_total(distance))
        # The split is exact: its cost is the optimum, a proven lower bound.
        return Assignment(split, distance, objective, objective, 0.0, "optimal", tile_count, 0,
                          time.perf_counter() - started, True)
    nearest = np.argsort(full, axis=1, kind="stable")[:, :FIRST_CANDIDATES]
    by_tile = np.argsort(full, axis=0, kind="stable")
    reach = np.full(tile_count, min(count, MINIMUM_CELLS))
    while True:
        depth = np.arange(count)[:, None] < reach[None, :]
        tiles = np.broadcast_to(np.arange(tile_count), by_tile.shape)[depth]
        cells = by_tile[depth]
        if split is not None:
            cells, tiles = np.concatenate((cells, np.arange(count))), np.concatenate((tiles,
                                                                                      split))
        try:
            return assign_tiles(
                nearest, np.take_along_axis(full, nearest, axis=1), grid.rows, grid.cols,
                max_uses=options.max_uses, min_spacing=options.min_spacing,
                method="optimal", search=search, show_progress=request.show_progress,
                min_uses=options.min_uses, tile_count=tile_count,
                extra=(cells, tiles, full[cells, tiles]),
            )
        except ShortLists as short:
            if (reach[short.tiles] >= count).all():
                raise _minimum_unmet(options, len(short.tiles), tile_count, grid.rows,
                                     grid.cols) from None
            reach[short.tiles] = np.minimum(count, 4 * reach[short.tiles])


def _minimum_unmet(
    options: MosaicOptions, short: int, tiles: int, rows: int, cols: int
) -> MinimumUsesError:
    """The error when ``short`` tiles cannot fill ``min_uses`` cells under the other limits.

    Only the limits that bind are named, the way :func:`check_feasible` names
    them (so that the command line shows their flags): a spacing always (it
    rules out cells, not only counts), a use cap where it is below what the
    spacing allows.
    """
    spacing = spacing_capacity(rows, cols, options.min_spacing)
    cap = options.max_uses is not None and (spacing is None or options.max_uses < spacing)
    limits = [name for name, binds in (("max_uses", cap), ("min_spacing", spacing is not None))
              if binds]
    values = {"max_uses": "{uses}", "min_spacing": "{spacing}"}
    return MinimumUsesError(
        "{min_uses} {low} cannot be met: {short} of the {tiles} tiles cannot each fill "
        "{cells} under " + " and ".join(f"{{{name}}} {values[name]}" for name in limits)
        + "; lower {min_uses} or relax " + " or ".join(f"{{{name}}}" for name in limits),
        low=options.min_uses, short=short, tiles=tiles, uses=options.max_uses,
        spacing=options.min_spacing,
        cells="1 cell" if options.min_uses == 1 else f"{options.min_uses} cells",
    )


def minimum_slots(full: np.ndarray, minimum: int) -> np.ndarray | None:
    """Each cell's tile when every tile fills ``minimum`` cells and nothing else is limited.

    Cells outside the slots take their nearest tile, so the total is
    ``sum_i best_i`` plus what the slot-filling cells give up,
    ``c_ij - best_i``: filling the ``M * minimum`` slots is a rectangular
    assignment of slots to distinct cells at that cost (exact,
    :func:`scipy.optimize.linear_sum_assignment`), and the split is optimal.

    Parameters
    ----------
    full : numpy.ndarray
        ``(N, M)`` integer distances, ``N >= M * minimum``.
    minimum : int
        Cells every tile fills.

    Returns
    -------
    numpy.ndarray or None
        ``(N,)`` int64 tile of each cell; None where the costs are too large
        for the solver's float64 sums to stay exact (tinted distances of
        large tiles, past ``2^53``): the caller solves in integers instead.
    """
    from scipy.optimize import linear_sum_assignment

    count, tile_count = full.shape
    best = full.min(axis=1)
    tile = full.argmin(axis=1)
    # Slot s belongs to tile s // minimum; costs relative to each cell's best stay small,
    # and in multiples of their common factor (tinted search units are of thousands).
    give_up = full - best[:, None]
    step = max(1, int(np.gcd.reduce(give_up, axis=None)))
    give_up //= step
    # The solver's potentials and path lengths are sums of costs along paths of at most
    # every row and slot: below 2^53, each is an exact float64 integer.
    if int(give_up.max(initial=0)) * 2 * (count + tile_count * minimum) >= 1 << 53:
        return None
    slots, cells = linear_sum_assignment(np.repeat(give_up.T.astype(np.float64), minimum,
                                                   axis=0))
    tile[cells] = slots // minimum
    return tile


class LibrarySearch:
    """The exact searches an assignment asks for, over the request's whole library.

    Distances are in integer search units (:func:`~mosaicist.match._exact.search_scale`),
    so that tinted objectives stay exact; a tile's distance is its best
    transform's. Every (cell, tile) pair returned is remembered with the
    transform that won, to map the assignment back to candidates.
    """

    def __init__(self, request: MatchRequest) -> None:
        self.request = request
        self.tile_count = len(request.library)
        self.scale = search_scale(request.geometry, request.options.tint)
        self._pairs: list[tuple[np.ndarray, np.ndarray]] = []
        # Whether the distances came from :meth:`dense`, and each pair's best transform
        # there (None: one transform).
        self._dense = False
        self._dense_transform: np.ndarray | None = None
        self._cell_terms: CellTerms | None = None

    def nearest(self, cells: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest tiles of each of ``cells`` (see :class:`CandidateSearch`)."""
        return self._search(cells, k)

    def below(
        self, cells: np.ndarray, price: np.ndarray, limit: np.ndarray, k: int,
        upper: np.ndarray | None = None, among: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``k`` tiles of distance plus ``price`` below ``limit`` (prices not included).

        Only the tiles ``among`` are searched where given.
        """
        tiles, distances = self._search(cells, k, price, limit, upper, among)
        found = tiles >= 0
        distances[found] -= price[tiles[found]]
        return tiles, distances

    def pairs(self, cells: np.ndarray, tiles: np.ndarray) -> np.ndarray:
        """Each pair's distance (its tile's best transform; see :class:`CandidateSearch`)."""
        request = self.request
        variants = request.variants
        candidates = (tiles[:, None] * variants + np.arange(variants)).ravel()
        distances = pair_distances(
            request.cell_vectors, request.candidates, request.geometry, request.features,
            np.repeat(cells, variants), candidates, request.options.tint,
        ).reshape(len(cells), variants)
        # Ties go to the first transform, as in the searches.
        best = distances.argmin(axis=1)
        self._pairs.append((np.asarray(cells, np.int64), tiles * variants + best))
        return distances[np.arange(len(cells)), best]

    def _search(
        self, cells: np.ndarray, k: int, price: np.ndarray | None = None,
        limit: np.ndarray | None = None, upper: np.ndarray | None = None,
        among: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        request = self.request
        variants = request.variants
        # A tile's price applies to each of its transforms.
        candidate_price = None if price is None else np.repeat(price, variants)
        among_candidates = None if among is None else (
            np.asarray(among, np.int64)[:, None] * variants + np.arange(variants)).ravel()
        result = self.nearest_candidates(cells, max(2, k * variants), candidate_price, limit,
                                         upper if variants == 1 else None, among_candidates)
        candidates, candidate_distances = result.candidates, result.candidate_distances
        # Lists even of a library of one candidate (adaptive cells from a single photo
        # crashed here once): k > 1 was asked for.
        assert candidates is not None and candidate_distances is not None
        tiles, distances, chosen = best_transform(candidates, candidate_distances, variants, k)
        found = tiles >= 0
        self._pairs.append((np.broadcast_to(cells[:, None], tiles.shape)[found], chosen[found]))
        return tiles, distances

    def nearest_candidates(
        self, cells: np.ndarray, k: int, price: np.ndarray | None, limit: np.ndarray | None,
        upper: np.ndarray | None, among: np.ndarray | None = None,
    ) -> MatchResult:
        """:func:`~mosaicist.match.match_exact` of ``cells`` (k candidates, in search units).

        ``among``: the only candidates searched, where given.
        """
        request = self.request
        return match_exact(
            request.cell_vectors[cells], request.candidates, request.geometry, request.features,
            k=k, tint=request.options.tint, price=price, limit=limit, upper=upper,
            search_units=True, cell_terms=self.cell_terms().take(cells), among=among,
        )

    def cell_terms(self) -> CellTerms:
        """What the searches derive from all the cells' vectors, derived once.

        Pricing rounds search subsets of the same cells, and the warm lists
        (:func:`warm_candidates`) read their bound rows.
        """
        if self._cell_terms is None:
            request = self.request
            self._cell_terms = cell_terms(request.cell_vectors, request.geometry,
                                          request.features, request.options.tint)
        return self._cell_terms

    def dense(self) -> np.ndarray:
        """Every cell's distance to every tile (its best transform), ``(N, M)`` int64."""
        request = self.request
        variants = request.variants
        every = dense_distances(request.cell_vectors, request.candidates, request.geometry,
                                request.features, request.options.tint)
        self._dense = True
        if variants == 1:
            return every  # each tile's only transform: no copy of the distances
        distances, self._dense_transform = _best_transforms(every, variants)
        return distances

    def rows(self, cells: np.ndarray) -> np.ndarray:
        """Each of ``cells``' distance to every tile (its best transform), ``(len, M)`` int64.

        The same distances as :meth:`pairs` of each cell with every tile, by
        GEMMs that read the library once for all of them (a pair at a time, a
        row of 50,000 CIFAR tiles took 37 ms; the elephants' default-preset
        make kept 150 such rows in one price check, 5.6 s).
        """
        request = self.request
        variants = request.variants
        cells = np.asarray(cells, np.int64)
        every = dense_distances(request.cell_vectors[cells], request.candidates,
                                request.geometry, request.features, request.options.tint)
        distances, best = _best_transforms(every, variants)
        tiles = np.arange(distances.shape[1], dtype=np.int64)
        for index, cell in enumerate(cells):
            self._pairs.append((np.full(len(tiles), cell), tiles * variants + best[index]))
        return distances

    def tile_blocks(self, pairs: int = BLOCK_PAIRS
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every cell's distance to every tile (its best transform), a block of tiles at a time.

        As :meth:`dense`, without holding the whole ``(N, M)`` matrix: yields
        ``(tiles, distances)``, ``distances`` ``(N, len(tiles))`` int64, in
        library order, each block of at most ``pairs`` cell-candidate pairs.
        The transforms are not kept (:meth:`pairs` records those wanted).
        """
        request = self.request
        variants, count = request.variants, len(request.cell_vectors)
        step = max(1, pairs // max(1, count * variants))
        features = request.features
        for start in range(0, self.tile_count, step):
            stop = min(self.tile_count, start + step)
            part = slice(start * variants, stop * variants)
            columns = replace(
                features, norm2=features.norm2[part], channel_sums=features.channel_sums[part],
                pooled=None if features.pooled is None else features.pooled[part])
            every = dense_distances(request.cell_vectors, request.candidates[part],
                                    request.geometry, columns, request.options.tint)
            if variants > 1:
                every = every.reshape(count, -1, variants).min(axis=2)
            yield np.arange(start, stop), every

    def candidate_of(self, tiles: np.ndarray, searched_as: np.ndarray | None = None
                     ) -> np.ndarray:
        """Each cell's candidate (tile and transform) for its assigned tile.

        ``searched_as``: the cell each cell's pairs were searched as (an
        identical one), where not itself.
        """
        variants = self.request.variants
        if self._dense:
            if self._dense_transform is None:
                return np.array(tiles, np.int64)
            cells = np.arange(len(tiles))
            return tiles * variants + self._dense_transform[cells, tiles]
        cells = np.concatenate([pair[0] for pair in self._pairs])
        candidates = np.concatenate([pair[1] for pair in self._pairs])
        # Every search ranks a tile's transforms the same way: any record will do.
        key = cells * np.int64(self.tile_count) + candidates // variants
        order = np.argsort(key, kind="stable")
        own = np.arange(len(tiles), dtype=np.int64) * self.tile_count + tiles
        at = np.minimum(np.searchsorted(key, own, sorter=order), len(key) - 1)
        if searched_as is not None:
            # Pairs searched as another cell of the same kind, where not as the cell itself.
            missing = key[order[at]] != own
            alike = np.asarray(searched_as, np.int64)[missing] * self.tile_count + tiles[missing]
            at[missing] = np.searchsorted(key, alike, sorter=order)
        return candidates[order[at]]


def _best_transforms(every: np.ndarray, variants: int) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's distance to each tile by its best transform, and that transform.

    ``every`` is ``(N, M * variants)`` (a tile's transforms side by side); ties go
    to the first transform, as in the searches.
    """
    every = every.reshape(len(every), -1, variants)
    best = every.argmin(axis=2)
    return np.take_along_axis(every, best[:, :, None], axis=2)[:, :, 0], best


def best_transform(
    candidates: np.ndarray, distances: np.ndarray, variants: int, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reduce (tile, transform) candidate lists to library tiles, best transform first.

    Parameters
    ----------
    candidates : numpy.ndarray
        ``(N, w)`` candidate indices (tile ``v // variants``), best first;
        ``-1`` marks a missing entry.
    distances : numpy.ndarray
        ``(N, w)`` their distances.
    variants : int
        Transforms per tile.
    k : int
        Length of the lists returned.

    Returns
    -------
    tiles, distances, chosen : numpy.ndarray
        ``(N, k)`` library tiles, each at most once per row, in order of
        their best candidate; missing entries are ``-1`` (distance: the
        dtype's largest value, or infinity); ``chosen`` the candidate
        (tile and transform) that gave each entry.
    """
    count, width = candidates.shape
    if variants == 1 and width >= k:
        return candidates[:, :k], distances[:, :k], candidates[:, :k]
    tiles = np.where(candidates >= 0, candidates // variants, -1)
    # Lists are sorted by distance: keep each tile's first (best) occurrence.
    order = np.argsort(tiles, axis=1, kind="stable")
    sorted_tiles = np.take_along_axis(tiles, order, axis=1)
    repeat = np.zeros_like(sorted_tiles, bool)
    repeat[:, 1:] = sorted_tiles[:, 1:] == sorted_tiles[:, :-1]
    duplicate = np.zeros_like(repeat)
    np.put_along_axis(duplicate, order, repeat, axis=1)
    duplicate |= tiles < 0
    rank = np.cumsum(~duplicate, axis=1) - 1
    keep = ~duplicate & (rank < k)
    out_tiles = np.full((count, k), -1, np.int64)
    out_distances = np.full((count, k), np.iinfo(np.int64).max, distances.dtype)
    if np.issubdtype(distances.dtype, np.floating):
        out_distances[:] = np.inf
    rows = np.nonzero(keep)[0]
    out_tiles[rows, rank[keep]] = tiles[keep]
    out_distances[rows, rank[keep]] = distances[keep]
    out_chosen = np.full((count, k), -1, np.int64)
    out_chosen[rows, rank[keep]] = candidates[keep]
    return out_tiles, out_distances, out_chosen
