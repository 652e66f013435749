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
shared out among the kind's cells at the same cost. Without spacing,
which cell of a kind takes which of its tiles is free: they are shared out
in a fixed random order, so that no part of the picture gets all the
nearest tiles (under spacing, see :func:`spaced_by_kinds`). A minimum of
uses per tile adds ``sum_g x_gj >= K``, priced as a surcharge on the uses
past it (see :func:`_solve`).

**Column generation.** Each kind lists its ``ceil(w_g / cap) +``
:data:`FIRST_TILES` nearest tiles (one exact search for the kind), or,
given warm lists where no spacing follows, those alone (:data:`WARM_ONLY`). A round
solves the min-cost flow of the lists (:func:`._assign.flow_units` with a
supply of ``w_g`` per kind), each kind also having an outside column at
twice the farthest listed distance, so that the solve always finishes; a
later round repairs the last optimum instead where its units to move are
few (:func:`._kinds_repair.repair_kinds`). A
kind with units outside (its listed tiles full) lists its
nearest tiles that still have room, as many as those units plus
:data:`FIRST_TILES` (more where alike kinds find the same ones), so that
the next solve can place it; whether those are the best is for the prices
to say. Otherwise the least
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
from typing import Any

import numpy as np

from ..progress import progress_bar
from . import _assign, _flow, _kernels
from ._assign import Assignment, CandidateSearch, flow_units
from ._exact import alike_under_full_tint
from ._kinds_repair import repair_kinds

#: Nearest tiles a kind of cell lists past the ``ceil(cells / cap)`` it fills.
FIRST_TILES = 16
#: Whether warm lists (:func:`~mosaicist.match._capped.warm_kind_pairs`) replace the
#: nearest tiles where no spacing follows, as the cells' first lists do
#: (:data:`~mosaicist.match._capped.WARM_ONLY`).
WARM_ONLY = True
#: Tiles past those it holds that each price check of a kind returns at most.
CHECK_TILES = 16
#: Share of a kind's cost past it up to which its price check looks (a search's limit),
#: keeping what it finds there aside, unlisted: while the kind's cost rises less than
#: that, its next checks price those tiles alone. The elephants at one use (30,000
#: cells, 27,300 kinds): 23.7 s of checks without, 15.8-18.1 s at 1%, 16.7-17.5 s at
#: 0.5%, 19.0 s at 2%; under the default preset 56.3 s without, 40.6-44.1 s at 1%.
#: (Listing those tiles instead grew the lists by a third and slowed every solve.)
REACH_SHARE = 0.01
#: Share of the library past which a kind's price check searches all of it, not only
#: the tiles whose prices fell since its last look.
AMONG_SHARE = 0.125
#: A kind's proof level where it listed every tile.
_UNREACHED = np.iinfo(np.int64).max // 4
#: Tiles a kind's price check returns past which it keeps its distance to every tile, and
#: looks there instead of searching (a drawing's grey edges beside white paper: 40 kinds
#: searched the library for thousands of tiles each round, 6-10 s a round).
ROW_WIDTH = 1024
#: Most distances kept that way (8 bytes each).
MOST_ROW_PAIRS = 1 << 24
#: Rows drawn at a time (a few tens of megabytes of a 50,000-tile library's).
ROWS_AT_ONCE = 64
#: Kinds of cell, as a share of the cells, up to which a grid is solved by kinds: with
#: fewer alike cells the pricing rounds of :mod:`._assign` are faster. Starry Night at
#: 10,000 cells, the default preset, its left part painted white: no white, 70 s by
#: kinds against 24 s by cells; a quarter white, 47 s against 111 s; 45%, 34 s against
#: 200 s (session 40). The elephants from 3,000 photos (11 uses each, every photo used,
#: spaced) took 415 s by kinds against 80 s by cells (session 45): the spacing rounds
#: after the kinds' optimum moved copies of tiles among thousands of lone cells.
GROUPED_SHARE = 0.8
#: Cells of one kind from which the pricing rounds of :mod:`._assign` let a kind in too
#: slowly, and the share of the cells in such kinds from which a grid of few kinds is
#: solved by kinds. A colour ramp at full tint is thousands of small kinds (cells a
#: colour apart): from 50,000 photos, 4,800 cells in 2,850 kinds of at most 5 took 528 s
#: by kinds against 45 s by cells (65 s by kinds with warm lists); 9,690 cells in 2,018
#: kinds of at most 16 (42% of the cells in kinds of 8 or more) 110 s by kinds with warm
#: lists, 162-174 s by cells; 30,000 cells in 773 kinds 130 s by kinds, over 900 s by
#: cells. The same 9,690 cells from 3,000 photos (4 uses each, spaced) took 61 s by
#: kinds against 36 s by cells: a kind of 16 cells fills only 4 tiles.
CROWD_KIND = 8
CROWDED_SHARE = 0.2
#: Cells of one kind (per use a tile allows) from which a crowd among thousands of lone
#: cells is worth the kinds, and the share of the cells in such crowds from which a
#: grid is solved by kinds however many kinds it has, where neither spacing rounds nor a
#: minimum of uses follow the kinds' solve. 30,000 cells of 50,000 photos, once each,
#: the same optimum both ways (session 45): the camera-trap elephants (10% in kinds of
#: 32 or more: the caption bar, white sky) 100 s by kinds against 230 s by cells at the
#: seed's distance, 157 s against 496-543 s under the default preset; the rocket under
#: the default preset (9.5%) 157 s against 496 s; Starry Night with a white strip of 3%
#: of its width, 59 s against 66 s. Session 46 (the kinds' flow repaired, narrower
#: checks) took the share from 2% to 1%, back to back: the bear (1.6%) 95 s by kinds
#: against 113 s at the seed's distance, 66 s against 161 s under the default preset;
#: the rocket at the seed's distance (1.2%) 73 s against 102 s. Without crowds, the
#: cells: Starry Night at 32,400 cells, 59 s by kinds against 56 s.
LARGE_CROWD_KIND = 32
LARGE_CROWDED_SHARE = 0.01
#: Pairs listed since the last round's prices, as a share of all, up to which a solve
#: starts near those prices (:func:`_near_units`). Past it the near solves failed: the
#: camera-trap elephants by kinds (30,000 cells) added 670,000, 163,000, 106,000 and
#: 28,000 pairs to 2.6-3.6 million in its rounds 2-5, whose near solves missed pairs and
#: were solved whole after two tries (2-3 s more a round); 8,000 and 53 in rounds 6-7,
#: solved near at once. Starry Night with a white strip and Chelsea: likewise.
NEAR_NEW_SHARE = 0.005
#: Rounds of raising prices before the least prices are given up on (a safeguard: an
#: optimal flow has no positive cycle, and they end long before).
MOST_PRICE_SWEEPS = 1_000_000
#: Most placings of the spacing's blocks over the grid that :func:`block_room` counts.
BLOCK_OFFSETS = 64
#: Seed of the order in which a kind's cells take its tiles (and of the rows' hash).
SHARE_SEED = 0
#: Rows whose hashes are shared, compared this many at a time.
HASH_BLOCK = 4096


#: Pairs ``(kind, tile, distance)`` listed beside each kind's nearest tiles.
WarmPairs = tuple[np.ndarray, np.ndarray, np.ndarray]


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

    def worth_grouping(self, cap: int = 1, spaced: bool = False) -> bool:
        """Whether to solve by kinds: few kinds and crowds, or large crowds.

        Crowds are kinds that fill at least :data:`CROWD_KIND` tiles of
        ``cap`` uses each; where they hold :data:`CROWDED_SHARE` of the
        cells or more and the kinds are at most :data:`GROUPED_SHARE` of the
        cells (a drawing, a logo, a page), the kinds. Many small kinds (a
        colour ramp at full tint) solve faster cell by cell, where warm
        prices start the rounds. (The cells' rounds let a crowd reach a tile
        further into the library at a time: a kind of ``w`` cells reaches
        ``w / cap`` tiles.) Where no spacing rounds or minimum of uses follow
        (not ``spaced``), large crowds (:data:`LARGE_CROWD_KIND` tiles'
        worth) holding :data:`LARGE_CROWDED_SHARE` of the cells are enough,
        however many lone cells are beside them: a photo's caption bar or
        clipped sky.
        """
        cells = len(self.kind)
        crowded = int(self.size[self.size >= CROWD_KIND * max(1, cap)].sum())
        if len(self.first) <= GROUPED_SHARE * cells and crowded >= CROWDED_SHARE * cells:
            return True
        large = int(self.size[self.size >= LARGE_CROWD_KIND * max(1, cap)].sum())
        return not spaced and large >= LARGE_CROWDED_SHARE * cells


def cell_kinds(cell_vectors: np.ndarray, full_tint: bool = False) -> CellKinds:
    """Group cells whose vectors are the same byte for byte (at full tint, up to a colour).

    Parameters
    ----------
    cell_vectors : numpy.ndarray
        ``(N, ...)`` each cell's vector (any dtype; uint8 cells of 3
        channels with ``full_tint``).
    full_tint : bool
        Whether the distances are tinted at full strength: then cells that
        differ by a colour added to every pixel are the same distance from
        every tile, and one kind too (flat cells of every shade, say;
        :func:`~mosaicist.match._exact.alike_under_full_tint`).

    Returns
    -------
    CellKinds
        Each cell's kind, numbered in order of each kind's first cell.
    """
    count = len(cell_vectors)
    if full_tint:
        # Each cell's first twin: sorted, those are the kinds' first cells in order.
        first, inverse, size = np.unique(alike_under_full_tint(cell_vectors),
                                         return_inverse=True, return_counts=True)
        return CellKinds(inverse.ravel().astype(np.int64), first.astype(np.int64),
                         size.astype(np.int64))
    rows = np.ascontiguousarray(cell_vectors).reshape(count, -1).view(np.uint8)
    if rows.shape[1] % 8:
        rows = np.pad(rows, ((0, 0), (0, -rows.shape[1] % 8)))
    # A hash of each row's 64-bit words first (one pass; sorting whole rows of 3 KB cost
    # 1 s for 31,212 cells, on every capped match), then rows that share a hash compared.
    _, first, inverse, size = np.unique(_row_hash(rows.view(np.uint64)), return_index=True,
                                        return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    shared = np.flatnonzero(size[inverse] > 1)
    for block in np.array_split(shared, max(1, len(shared) // HASH_BLOCK)):
        if not (rows[block] == rows[first[inverse[block]]]).all():
            # Two rows of one hash differ: the rows themselves sorted.
            keys = rows.view(np.dtype((np.void, rows.shape[1]))).ravel()
            _, first, inverse, size = np.unique(keys, return_index=True, return_inverse=True,
                                                return_counts=True)
            inverse = inverse.ravel()
            break
    # Numbered by first cell, so that the kinds do not depend on byte order.
    order = np.argsort(first, kind="stable")
    number = np.empty_like(order)
    number[order] = np.arange(len(order))
    return CellKinds(number[inverse].astype(np.int64), first[order].astype(np.int64),
                     size[order].astype(np.int64))


def search_widths(want: np.ndarray, tile_count: int) -> np.ndarray:
    """``want`` tiles per kind rounded up to powers of two (at most ``tile_count``).

    Kinds of one width share one search.
    """
    return np.minimum(1 << np.ceil(np.log2(np.maximum(want, 1))).astype(np.int64), tile_count)


def _row_hash(words: np.ndarray) -> np.ndarray:
    """Each row of 64-bit ``words`` weighted by fixed odd numbers and summed, modulo 2**64."""
    weights = np.random.default_rng(SHARE_SEED).integers(
        1, 1 << 63, words.shape[1], dtype=np.uint64) | np.uint64(1)
    return words @ weights


class _Lists:
    """Each kind's listed tiles, their distances, and how far its nearest tiles go."""

    def __init__(self, kinds: int, tile_count: int) -> None:
        self.tile_count = tile_count
        self.kind = np.zeros(0, np.int64)
        self.tile = np.zeros(0, np.int64)
        self.distance = np.zeros(0, np.int64)
        #: Nearest tiles each kind listed first.
        self.nearest = np.zeros(kinds, np.int64)
        #: Tiles past those it holds that each kind's next price check returns at most.
        self.check = np.full(kinds, CHECK_TILES, np.int64)
        #: What each kind's last look at the library proves: every tile neither listed nor
        #: spare has ``c_gj + reference_j >= level_g`` (at first its nearest tiles' last
        #: distance).
        self.level = np.zeros(kinds, np.int64)
        self.reference = np.zeros(tile_count, np.int64)
        #: Pairs a look found past the kind's cost, within its reach (:data:`REACH_SHARE`),
        #: not listed: the next checks price them one by one, and a look proves the rest.
        self.spare_kind = np.zeros(0, np.int64)
        self.spare_tile = np.zeros(0, np.int64)
        self.spare_distance = np.zeros(0, np.int64)
        #: Whether each kind's last search found every tile below its cost (its next
        #: looks past the cost: cut ones, of wide searches, would fill their slots there).
        self.complete = np.zeros(kinds, np.bool_)
        #: Each kind's row in :attr:`rows` (``-1``: none), its distance to every tile.
        self.row_of = np.full(kinds, -1, np.int64)
        self.rows: list[np.ndarray] = []
        #: :meth:`keys`, sorted: a new pair is looked up there (``np.isin`` sorted every
        #: listed pair again on each merge, 0.3-0.7 s of millions).
        self._sorted_keys = np.zeros(0, np.int64)

    def keys(self) -> np.ndarray:
        return self.kind * np.int64(self.tile_count) + self.tile

    def add(self, kind: np.ndarray, tile: np.ndarray, distance: np.ndarray) -> int:
        """List the pairs not listed yet; return how many were new."""
        found = tile >= 0
        kind, tile, distance = kind[found], tile[found], distance[found]
        new_keys = kind * np.int64(self.tile_count) + tile
        new_keys, first = np.unique(new_keys, return_index=True)
        listed = self._sorted_keys
        at = np.minimum(np.searchsorted(listed, new_keys), max(len(listed) - 1, 0))
        fresh = (listed[at] != new_keys) if len(listed) else np.ones(len(new_keys), np.bool_)
        added = first[fresh]
        self.kind = np.concatenate([self.kind, kind[added]])
        self.tile = np.concatenate([self.tile, tile[added]])
        self.distance = np.concatenate([self.distance, distance[added]])
        # Two sorted runs: the merge sort merges them in one pass.
        self._sorted_keys = np.sort(np.concatenate([listed, new_keys[fresh]]), kind="stable")
        return len(added)

    def list_nearest(self, search: CandidateSearch, first: np.ndarray, kinds: np.ndarray,
                     want: np.ndarray) -> None:
        """List the ``want`` nearest tiles of each of ``kinds`` (one search per size)."""
        want = np.minimum(want, self.tile_count)
        width = search_widths(want, self.tile_count)
        for size in np.unique(width):
            some = kinds[width == size]
            tiles, distances = search.nearest(first[some], int(size))
            self.add(np.repeat(some, tiles.shape[1]), tiles.ravel(), distances.ravel())
            listed = (tiles >= 0).sum(axis=1)
            self.nearest[some] = listed
            last = distances[np.arange(len(some)), np.maximum(listed - 1, 0)]
            self.level[some] = np.where(listed < self.tile_count, last, _UNREACHED)

    def _keep_rows(self, search: CandidateSearch, first: np.ndarray, kinds: np.ndarray
                   ) -> None:
        """Keep the distance of each of ``kinds`` to every tile, within :data:`MOST_ROW_PAIRS`."""
        room = (MOST_ROW_PAIRS - len(self.rows) * self.tile_count) // self.tile_count
        kinds = kinds[:max(0, room)]
        if not len(kinds):
            return
        # Searches that draw whole rows at once (the library's, by GEMMs) offer ``rows``;
        # else pairs, not a search for every tile: an exact search ranks as it goes.
        draw_rows = getattr(search, "rows", None)
        every = np.arange(self.tile_count)
        for start in range(0, len(kinds), ROWS_AT_ONCE):
            some = kinds[start:start + ROWS_AT_ONCE]
            drawn = (draw_rows(first[some]) if draw_rows is not None else
                     [search.pairs(np.full(self.tile_count, first[kind]), every)
                      for kind in some])
            for kind, row in zip(some, drawn, strict=True):
                self.row_of[kind] = len(self.rows)
                self.rows.append(np.ascontiguousarray(row))

    def list_with_room(self, search: CandidateSearch, first: np.ndarray, out: np.ndarray,
                       free: np.ndarray, room: np.ndarray) -> bool:
        """List the nearest tiles with room (``free``) of each kind with units ``out``.

        As many as its units outside plus :data:`FIRST_TILES`; whether any pair
        was new. (Its nearest tiles are held by a larger kind of the same tiles,
        a grey edge beside white paper: listing more and more of those doubled
        the lists of 41 kinds to 16,384 tiles, 8 s of searching, on a drawing of
        30,000 cells.) Alike kinds find the same tiles: while the tiles found
        have less ``room`` (``(M,)`` units each tile takes) than the units
        outside, each kind lists as many again among the tiles not found yet.
        """
        if not len(free):
            return False
        short = np.flatnonzero(out > 0)
        want = np.minimum(out[short] + FIRST_TILES, len(free))
        width = 1 << np.ceil(np.log2(want)).astype(np.int64)
        no_price = np.zeros(self.tile_count, np.int64)
        unlimited = np.full(len(short), np.iinfo(np.int64).max, np.int64)
        left = np.asarray(free, np.int64)
        found_room = 0
        added = 0
        while len(left) and found_room < int(out.sum()):
            found = []
            for size in np.unique(width):
                some = width == size
                tiles, distances = search.below(first[short[some]], no_price, unlimited[some],
                                                int(min(size, len(left))), among=left)
                added += self.add(np.repeat(short[some], tiles.shape[1]), tiles.ravel(),
                                  distances.ravel())
                found.append(tiles[tiles >= 0])
            new = np.unique(np.concatenate(found))
            found_room += int(room[new].sum())
            left = left[~np.isin(left, new, assume_unique=True)]
        return added > 0

    def price_check(self, search: CandidateSearch, first: np.ndarray, price: np.ndarray,
                    cost: np.ndarray, units: np.ndarray) -> bool:
        """List every kind's unlisted tiles of ``c_gj + p_j < u_g`` (``cost``).

        Returns whether a later round must look again: some tile was listed,
        or some search was cut short.

        A kind's last look proves ``c_gj + q_j >= L_g`` for its unlisted tiles
        (``q`` the prices it looked at, :attr:`reference`), so at today's
        prices ``c_gj + p_j >= L_g - f_j``, ``f_j = q_j - p_j`` the fall of
        tile ``j``'s price. Only the tiles whose price fell by more than
        ``L_g - u_g`` can break the proof: none, and the kind is settled
        without a look; a few (at most :data:`AMONG_SHARE` of the library),
        and only those are searched, the ``P`` of largest fall (``P`` a power
        of two, so that kinds share searches); else, and where ``u_g > L_g``,
        the whole library. A search returns at most the kind's held tiles
        (full ones may be below ``u_g``) plus :attr:`check`, twice as many
        after each search cut there (kinds next to a large one, a line's grey
        edge beside white paper, find thousands of its tiles below their
        costs), and after a search not cut twice what it found past the held
        tiles (at least :data:`CHECK_TILES`). The new level is ``u_g``, less
        the largest fall among the tiles not searched, or the dearest tile
        returned where cut.

        After a search that found every tile below ``u_g``, the next looks up
        to ``R_g = (1 +`` :data:`REACH_SHARE` ``) u_g``: the tiles it finds
        between ``u_g`` and ``R_g`` are kept aside (spare, unlisted), each
        check prices them one by one and lists those that beat the kind's
        cost, and the level is ``R_g``, which proves the tiles neither listed
        nor spare. A kind whose cost rises by less than that since then needs
        no search.
        """
        count = len(first)
        tile_count = self.tile_count
        fall = self.reference - price
        order = np.argsort(-fall, kind="stable")
        falls = np.maximum(fall[order], 0)
        slack = self.level - cost
        # Tiles each kind must look at: those of a fall past its slack.
        opened = np.searchsorted(-falls, -np.maximum(slack, 0), side="left")
        whole = (slack < 0) | (opened > AMONG_SHARE * tile_count)
        among = np.where(whole, tile_count,
                         np.minimum(1 << np.ceil(np.log2(np.maximum(opened, 1))).astype(
                             np.int64), tile_count))
        among[~whole & (opened == 0)] = 0
        # Past the tiles a kind looks at, the largest fall left.
        beyond = np.where(among < tile_count, falls[np.minimum(among, tile_count - 1)], 0)
        level = np.where((self.level >= _UNREACHED) | whole, _UNREACHED, self.level - beyond)
        held = np.bincount(self.kind[units > 0], minlength=count)
        width = np.minimum(1 << np.ceil(np.log2(held + self.check)).astype(np.int64),
                           tile_count)
        # Past the cost only after a search that found every tile below it: a cut one's
        # wider next search fills its slots there (the bear's kinds at 128-256 tiles: 3 s
        # more a check).
        reach = cost + np.where(self.complete, REACH_SHARE * np.abs(cost), 0).astype(np.int64)
        self._keep_rows(search, first, np.flatnonzero((width >= ROW_WIDTH) & (self.row_of < 0)))
        kept = self.row_of >= 0
        cut_any = False
        found_kinds, found_tiles, found_distances = [], [], []
        # The spare pairs that beat their kinds' costs now are listed; the others stay,
        # but for kinds that search the whole library again.
        spare_total = self.spare_distance + price[self.spare_tile]
        beat = spare_total < cost[self.spare_kind]
        found_kinds.append(self.spare_kind[beat])
        found_tiles.append(self.spare_tile[beat])
        found_distances.append(self.spare_distance[beat])
        keep = ~beat & ((among < tile_count) | kept)[self.spare_kind]
        spare = [(self.spare_kind[keep], self.spare_tile[keep], self.spare_distance[keep])]
        for kind in np.flatnonzero((among > 0) & kept):
            # Every tile at once, exactly as a search of the whole library would.
            row = self.rows[self.row_of[kind]]
            total = row + price
            beating = np.flatnonzero(total < cost[kind])
            cut = len(beating) > width[kind]
            if cut:
                beating = beating[np.argpartition(total[beating], width[kind] - 1)[:width[kind]]]
                self.check[kind] = min(2 * self.check[kind], tile_count)
            found_kinds.append(np.full(len(beating), kind))
            found_tiles.append(beating)
            found_distances.append(row[beating])
            level[kind] = total[beating].max() if cut else cost[kind]
            cut_any |= cut
        looking = np.flatnonzero((among > 0) & ~kept)
        for searched, size in {(int(a), int(w)) for a, w in zip(among[looking],
                                                                 width[looking], strict=True)}:
            some = looking[(among[looking] == searched) & (width[looking] == size)]
            tiles, distances = search.below(
                first[some], price, reach[some], size,
                among=None if searched >= tile_count else order[:searched])
            found = tiles >= 0
            total = np.where(found, distances + price[np.maximum(tiles, 0)], 0)
            # Past the cost, within the reach: kept aside, proving the look further.
            aside = found & (total >= cost[some][:, None])
            listed = found & ~aside
            rows_of = np.broadcast_to(some[:, None], tiles.shape)
            found_kinds.append(rows_of[listed])
            found_tiles.append(tiles[listed])
            found_distances.append(distances[listed])
            spare.append((rows_of[aside], tiles[aside], distances[aside]))
            # Every slot filled: more tiles may be below the reach, and the look proves
            # only its dearest find; below the cost, more may beat it.
            filled = found.all(axis=1) & (size < tile_count)
            dearest = total.max(axis=1)
            level[some] = np.minimum(level[some], np.where(filled, dearest, reach[some]))
            cut = filled & (dearest < cost[some])
            self.check[some[cut]] = np.minimum(2 * self.check[some[cut]], tile_count)
            self.complete[some] = ~cut
            # Not cut: the next search returns twice what this one found past the held
            # tiles. A search costs with the tiles it may return, however few it finds
            # (on a colour ramp's late rounds, 4,970 kinds finding 3 tiles each: 15.9 s
            # at 1,024, 6.0 s at 64).
            whole_found = some[~cut]
            past_held = np.maximum(found[~cut].sum(axis=1) - held[whole_found], 0)
            self.check[whole_found] = np.clip(2 * past_held, CHECK_TILES,
                                              self.check[whole_found])
            cut_any |= bool(cut.any())
        # One merge into the lists: each costs a pass over millions of listed pairs (a
        # merge per search took 8 s of the elephants' 32 s of checks, at one use).
        added = self.add(np.concatenate(found_kinds), np.concatenate(found_tiles),
                         np.concatenate(found_distances))
        spare_kind, spare_tile, spare_distance = (np.concatenate(part)
                                                  for part in zip(*spare, strict=True))
        # Once each (an old spare pair a look of part of the library found again).
        spare_keys, first_seen = np.unique(spare_kind * np.int64(tile_count) + spare_tile,
                                           return_index=True)
        self.spare_kind = spare_keys // tile_count
        self.spare_tile = spare_tile[first_seen]
        self.spare_distance = spare_distance[first_seen]
        self.level = level
        self.reference = price.copy()
        return added > 0 or cut_any


def least_prices(kind: np.ndarray, tile: np.ndarray, distance: np.ndarray,
                 units: np.ndarray, room: np.ndarray, full: np.ndarray, kinds: int,
                 tile_count: int, floor: np.ndarray | None = None,
                 ceiling: np.ndarray | None = None, compiled: bool | None = None,
                 kind_floor: np.ndarray | None = None, start: np.ndarray | None = None,
                 ) -> tuple[np.ndarray, np.ndarray] | None:
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
        ``(M,)`` whether each tile's price may rise past its ``floor``: the
        tiles at their cap (and, with a minimum of uses, those at it).
    kinds, tile_count : int
        Kinds and tiles.
    floor, ceiling : numpy.ndarray, optional
        ``(M,)`` each tile's least and largest price (default 0 and no
        limit): with a minimum of uses, the surcharge on the tiles past it,
        and at most the surcharge on the tiles at it (see :func:`_solve`).
    compiled : bool, optional
        Raise them by a compiled label-correcting loop (:func:`_kind_prices_loop`:
        work in proportion to the raises) rather than NumPy's sweeps over every
        pair (one sweep per step of the longest chain of raises: 77 s of a
        165 s make of 31,212 cells in 27,000 kinds, the camera-trap elephants at
        one use a photo). Default: where Numba runs and the pairs are many
        (:data:`._assign.COMPILED_PRICES_EDGES`) or its loops are loaded anyway.
        The same prices either way.
    kind_floor : numpy.ndarray, optional
        ``(K,)`` each kind's least cost: the cost of its outside column where
        it sends units there (an arc with units at both ends' potentials),
        else as low as an int64 goes.
    start : numpy.ndarray, optional
        ``(M,)`` prices to raise from on the full tiles (an earlier round's):
        the prices found so are returned where they prove the flow (no kind's
        cost past a tile with room that it could send a unit to), though not
        the least; else the least.

    Returns
    -------
    tuple of numpy.ndarray or None
        ``(M,)`` prices and ``(K,)`` costs ``u_g``; None if the prices kept
        rising or passed a ceiling (the flow was not optimal on its lists).
    """
    price = (np.zeros(tile_count, np.int64) if floor is None
             else np.asarray(floor, np.int64).copy())
    if start is not None:
        raised = _raised_prices(np.maximum(price, np.where(full, start, 0)), kind, tile,
                                distance, units, room, full, kinds, tile_count, ceiling,
                                compiled, kind_floor)
        # A start above the least prices can raise a kind's cost past a tile with room,
        # whose price stays 0: then they prove nothing, and the least ones are found.
        if raised is not None and not (room & ~full[tile]
                                       & (distance < raised[1][kind])).any():
            return raised
    return _raised_prices(price, kind, tile, distance, units, room, full, kinds, tile_count,
                          ceiling, compiled, kind_floor)


def _raised_prices(price: np.ndarray, kind: np.ndarray, tile: np.ndarray,
                   distance: np.ndarray, units: np.ndarray, room: np.ndarray,
                   full: np.ndarray, kinds: int, tile_count: int,
                   ceiling: np.ndarray | None, compiled: bool | None,
                   kind_floor: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`least_prices` raised from ``price`` (changed in place)."""
    if compiled is None:
        compiled = _kernels.numba_available() and (
            len(kind) >= _assign.COMPILED_PRICES_EDGES or _kernels.compiled_loops_loaded())
    loop = _kernels._compiled_loop(_kind_prices_loop) if compiled else None
    least_cost = (np.full(kinds, np.iinfo(np.int64).min, np.int64) if kind_floor is None
                  else np.asarray(kind_floor, np.int64))
    if loop is not None:
        cost = least_cost.copy()
        limit = (np.full(tile_count, np.iinfo(np.int64).max, np.int64) if ceiling is None
                 else np.asarray(ceiling, np.int64))
        finished = loop(np.asarray(kind, np.int64), np.asarray(tile, np.int64),
                        np.asarray(distance, np.int64), np.asarray(units) > 0,
                        np.asarray(room, np.bool_) & np.asarray(full, np.bool_)[tile],
                        price, limit, cost)
        return (price, cost) if finished else None
    held = np.flatnonzero(units > 0)
    held = held[np.argsort(kind[held], kind="stable")]
    held_kind = kind[held]
    held_starts = np.flatnonzero(np.r_[True, held_kind[1:] != held_kind[:-1]])
    pushing = np.flatnonzero(room & full[tile])
    pushing = pushing[np.argsort(tile[pushing], kind="stable")]
    pushed_tile = tile[pushing]
    pushed_starts = np.flatnonzero(np.r_[True, pushed_tile[1:] != pushed_tile[:-1]])
    cost = least_cost.copy()
    for _ in range(MOST_PRICE_SWEEPS):
        if len(held):
            value = distance[held] + price[tile[held]]
            cost[held_kind[held_starts]] = np.maximum(least_cost[held_kind[held_starts]],
                                                      np.maximum.reduceat(value, held_starts))
        if not len(pushing):
            return price, cost
        raised = np.maximum.reduceat(cost[kind[pushing]] - distance[pushing], pushed_starts)
        targets = pushed_tile[pushed_starts]
        higher = raised > price[targets]
        if not higher.any():
            return price, cost
        price[targets[higher]] = raised[higher]
        if ceiling is not None and (price[targets[higher]] > ceiling[targets[higher]]).any():
            return None
    return None


def _kind_prices_loop(kind: Any, tile: Any, distance: Any, held: Any, pushing: Any,
                      price: Any, ceiling: Any, cost: Any) -> bool:  # pragma: no cover
    """Raise ``price`` and ``cost`` to the least solution of :func:`least_prices`.

    Runs compiled. Kinds whose cost rose wait in a ring; each raises the
    prices of the full tiles it could send one more unit to (``pushing``),
    which raise the costs of the kinds holding them. False on a price past
    its ``ceiling`` or a kind raised more often than there are nodes (a
    cycle of raises: the flow is not optimal).
    """
    kinds = cost.shape[0]
    tile_count = price.shape[0]
    # Pushing pairs by kind and held pairs by tile (compressed rows).
    push_start = np.zeros(kinds + 1, np.int64)
    hold_start = np.zeros(tile_count + 1, np.int64)
    for pair in range(kind.shape[0]):
        if pushing[pair]:
            push_start[kind[pair] + 1] += 1
        if held[pair]:
            hold_start[tile[pair] + 1] += 1
    for index in range(kinds):
        push_start[index + 1] += push_start[index]
    for index in range(tile_count):
        hold_start[index + 1] += hold_start[index]
    push_pair = np.empty(push_start[kinds], np.int64)
    hold_pair = np.empty(hold_start[tile_count], np.int64)
    push_fill = push_start[:-1].copy()
    hold_fill = hold_start[:-1].copy()
    for pair in range(kind.shape[0]):
        if pushing[pair]:
            push_pair[push_fill[kind[pair]]] = pair
            push_fill[kind[pair]] += 1
        if held[pair]:
            hold_pair[hold_fill[tile[pair]]] = pair
            hold_fill[tile[pair]] += 1
            value = distance[pair] + price[tile[pair]]
            if value > cost[kind[pair]]:
                cost[kind[pair]] = value
    ring = np.arange(kinds).astype(np.int64)
    queued = np.ones(kinds, np.bool_)
    raised = np.zeros(kinds, np.int64)
    most_raises = kinds + tile_count + 2
    head = 0
    size = kinds
    while size > 0:
        group = ring[head]
        head = (head + 1) % kinds
        size -= 1
        queued[group] = False
        for index in range(push_start[group], push_start[group + 1]):
            pair = push_pair[index]
            target = tile[pair]
            bound = cost[group] - distance[pair]
            if bound <= price[target]:
                continue
            if bound > ceiling[target]:
                return False
            price[target] = bound
            for at in range(hold_start[target], hold_start[target + 1]):
                holder = hold_pair[at]
                member = kind[holder]
                value = distance[holder] + bound
                if value > cost[member]:
                    cost[member] = value
                    if not queued[member]:
                        raised[member] += 1
                        if raised[member] > most_raises:
                            return False
                        queued[member] = True
                        ring[(head + size) % kinds] = member
                        size += 1
    return True


def assign_by_kinds(search: CandidateSearch, kinds: CellKinds, cap: int,
                    show_progress: bool = False, minimum: int = 0,
                    warm: WarmPairs | None = None) -> Assignment | None:
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
    minimum : int
        Fewest cells every tile must fill (see :func:`_solve`).
    warm : tuple of numpy.ndarray, optional
        ``(kind, tile, distance)`` pairs that are the first lists (see
        :func:`_solve`): each kind's tiles of least distance plus estimated
        final price
        (:func:`~mosaicist.match._capped.warm_kind_pairs`).

    Returns
    -------
    Assignment or None
        The placement, certified optimal; None where there is no flow solver
        (OR-Tools, extra ``fast``) or it cannot take the costs (out of its
        range), for the caller to solve otherwise.
    """
    start = time.perf_counter()
    solved = _solve(search, kinds, cap, show_progress, minimum, warm=warm)
    if solved is None:
        return None
    lists, units, _, _, rounds = solved
    tile, distance = _shared_out(kinds, lists, units)
    objective = int(distance.sum())
    return Assignment(tile, distance, objective, objective, 0.0, "optimal",
                      int(lists.nearest.max()), rounds, time.perf_counter() - start, True, rounds)


def spaced_by_kinds(search: CandidateSearch, kinds: CellKinds, cap: int, cols: int,
                    min_spacing: int, width: int, show_progress: bool = False,
                    minimum: int = 0, warm: WarmPairs | None = None,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int] | None:
    """The capped optimum of :func:`assign_by_kinds` for spacing rounds, and lists around it.

    Where spacing binds, the capped optimum without it is where the spacing
    rounds of :func:`._assign.assign_tiles` (``proven``) start. Which cell
    of a kind takes which of its tiles costs nothing, so the copies of each
    tile go to cells of one class of the grid, ``(row mod D, column mod D)``
    (cells of a class are at least ``D = min_spacing`` apart): a kind's own
    cells never break the spacing, and only copies shared with other kinds
    are left to the rounds. Where the optimum gives a kind more copies of a
    tile than its cells can hold apart (:func:`block_room`), the rounds
    start instead from the optimum that keeps that room as well (a bound
    every spaced placement keeps); the gap is still measured from the
    capped optimum without spacing.

    Returns
    -------
    tuple of numpy.ndarray or None
        ``(N, w)`` each cell's kind's ``width`` tiles of least reduced cost at
        the proving prices, its own tile among them, best first; their
        distances; each cell's tile; the kinds' pricing rounds; the capped
        optimum without spacing (the bound its gap is measured from). None
        as :func:`assign_by_kinds`.
    """
    solved = _solve(search, kinds, cap, show_progress, minimum, warm=warm)
    if solved is None:
        return None
    lists, units, price, cost, rounds = solved
    bound = int((lists.distance * units).sum())
    room = block_room(kinds.kind, len(kinds.first), cols, min_spacing)
    if (units > room[lists.kind]).any():
        # More copies of a tile than the kind's cells can hold apart (a logo's colour
        # field of 473 cells given 30 copies of its best photo, 5 apart, from 120 photos):
        # the same optimum with at most ``room`` copies per kind, from the same lists.
        again = _solve(search, kinds, cap, show_progress, minimum, room, lists)
        if again is not None:
            lists, units, price, cost, more = again
            rounds += more
    placed, _ = _shared_out(kinds, lists, units, (cols, min_spacing))
    # Each kind's tiles of least reduced cost (its held ones first: zero or below).
    reduced = lists.distance + price[lists.tile] - cost[lists.kind]
    order = np.lexsort((lists.tile, reduced, lists.kind))
    kind_of = lists.kind[order]
    rank = np.arange(len(order)) - np.searchsorted(kind_of, kind_of)
    kept = order[rank < width]
    kind_rows = np.full((len(kinds.first), width), -1, np.int64)
    kind_rows[lists.kind[kept], rank[rank < width]] = lists.tile[kept]
    tiles = kind_rows[kinds.kind]
    # A cell's own tile replaces its kind's last where the kind lists more than width.
    own = (tiles == placed[:, None]).any(axis=1)
    tiles[~own, -1] = placed[~own]
    valid = tiles >= 0
    key = kinds.kind[:, None] * np.int64(search.tile_count) + np.maximum(tiles, 0)
    listed_keys = lists.keys()
    at = np.argsort(listed_keys)
    found = at[np.searchsorted(listed_keys, key, sorter=at)]
    distances = np.where(valid, lists.distance[found], np.iinfo(np.int64).max)
    # Best first, missing entries last.
    by_distance = np.argsort(np.where(valid, distances, np.iinfo(np.int64).max), axis=1,
                             kind="stable")
    return (np.take_along_axis(tiles, by_distance, axis=1),
            np.take_along_axis(distances, by_distance, axis=1), placed, rounds, bound)


def block_room(kind: np.ndarray, kinds: int, cols: int, min_spacing: int) -> np.ndarray:
    """Most copies of one tile that each kind's cells can hold ``min_spacing`` apart.

    Two cells of a ``D x D`` block of the grid are closer than ``D``, so a
    tile has at most one copy in each block: a kind holds at most as many
    copies as it touches blocks, for any placing of the blocks (the least
    count over the ``D**2`` offsets, or the ``D`` diagonal ones past
    :data:`BLOCK_OFFSETS`). A bound every spaced placement keeps.

    Parameters
    ----------
    kind : numpy.ndarray
        ``(N,)`` each cell's kind, row-major.
    kinds, cols, min_spacing : int
        Kinds, the grid's columns, the spacing ``D``.

    Returns
    -------
    numpy.ndarray
        ``(kinds,)`` int64.
    """
    cell = np.arange(len(kind))
    row, col = cell // cols, cell % cols
    across = cols // min_spacing + 2
    blocks = (len(kind) // cols // min_spacing + 2) * across
    offsets = ([(a, b) for a in range(min_spacing) for b in range(min_spacing)]
               if min_spacing ** 2 <= BLOCK_OFFSETS else [(a, a) for a in range(min_spacing)])
    room = np.full(kinds, np.iinfo(np.int64).max, np.int64)
    for down, right in offsets:
        block = (row + down) // min_spacing * across + (col + right) // min_spacing
        touched = np.unique(kind * np.int64(blocks) + block) // blocks
        room = np.minimum(room, np.bincount(touched, minlength=kinds))
    return room


def _solve(search: CandidateSearch, kinds: CellKinds, cap: int, show_progress: bool,
           minimum: int = 0, edge_limit: np.ndarray | None = None,
           lists: _Lists | None = None, warm: WarmPairs | None = None,
           ) -> tuple[_Lists, np.ndarray, np.ndarray, np.ndarray, int] | None:
    """The kinds' optimal flow: lists, units per listed pair, prices, costs, rounds.

    With a ``minimum`` of uses per tile, each use past a tile's first
    ``minimum`` pays a surcharge ``S`` in the flow (as in the pricing rounds
    of :mod:`._assign`): a placement that keeps the minimum pays it on
    exactly ``N - minimum M`` uses, so among those placements it changes no
    ranking, and the surcharged optimum is the optimum under both limits
    where it keeps the minimum. Its dual prices ``q_j >= 0`` stay one term
    per tile: 0 on tiles below their minimum, at most ``S`` on tiles at it,
    ``S`` on tiles between it and the cap, and at least ``S`` on full ones;
    the kinds that pay ``S`` find the tiles nobody lists at price 0. ``S``
    starts at twice every outside column's cost and rises sixteenfold while
    the proven optimum leaves a (far) tile short.

    With ``edge_limit``, kind ``g`` holds at most ``edge_limit[g]`` copies of
    any tile (see :func:`spaced_by_kinds`); with ``lists`` (of an earlier
    solve of the same kinds), the rounds go on from them; ``warm`` pairs
    are the first lists, or join the nearest tiles there where spacing
    follows (``edge_limit``) or :data:`WARM_ONLY` is off.
    """
    if _assign._flow_solver() is None:
        return None
    tile_count = search.tile_count
    count = len(kinds.first)
    size, first = kinds.size, kinds.first
    if int(size.sum()) > cap * tile_count:
        raise ValueError(f"{int(size.sum())} cells cannot fill tiles of {cap} uses each "
                         f"from {tile_count}")
    if minimum > cap:
        raise ValueError(f"a minimum of {minimum} uses is over the cap of {cap}")
    if minimum * tile_count > int(size.sum()):
        raise ValueError(f"{int(size.sum())} cells cannot fill {minimum} uses of each of "
                         f"{tile_count} tiles")
    limit = np.minimum(size if edge_limit is None else edge_limit, cap)
    if lists is None:
        lists = _Lists(count, tile_count)
        if warm is not None and WARM_ONLY and edge_limit is None:
            # The warm lists alone, proving nothing of the tiles left out (the first
            # round's checks search nearly every kind's library anyway).
            lists.add(*warm)
            lists.nearest = np.bincount(lists.kind, minlength=count).astype(np.int64)
        else:
            lists.list_nearest(search, first, np.arange(count),
                               -(-size // limit) + FIRST_TILES)
            if warm is not None:
                lists.add(*warm)
    bar = progress_bar(None, "assigning tiles by kind of cell", "round", enabled=show_progress)
    rounds = 0
    surcharge: int | None = None
    # The last round's least prices and costs (the next solve starts near them), and the
    # pairs listed then.
    last: tuple[np.ndarray, np.ndarray] | None = None
    last_listed = 0
    last_units = np.zeros(0, np.int64)
    last_outside = np.zeros(count, np.int64)
    # The paths and arcs of the last repair: what the next would cost per unit moved.
    repair_work = np.zeros(2, np.int64)
    try:
        while True:
            rounds += 1
            bar.update(1)
            kind, tile, distance = lists.kind, lists.tile, lists.distance
            base = np.full(count, np.iinfo(np.int64).max, np.int64)
            np.minimum.at(base, kind, distance)
            # Past every listed tile, in multiples of the distances' common factor (the
            # solver divides by it: tinted search units are multiples of thousands).
            step = max(1, int(np.gcd.reduce(distance)))
            # Past every kind's farthest tile, not its own: a kind whose own was near went
            # outside rather than move a chain of alike kinds onto farther tiles (the bear
            # at one use: 449 units outside on the first lists, where every unit had a
            # place, and four more rounds to list tiles for them; 98.8 s -> 82.2 s).
            outside = np.full(count, 2 * int(distance.max(initial=0)) + step, np.int64)
            if minimum:
                if surcharge is None:
                    surcharge = step * -(-2 * int(outside.max()) // step)
                outside = outside + surcharge
            near = None
            repaired = None
            if last is not None and not minimum:
                repaired = repair_kinds(kind, tile, distance, last_units, *last, size, limit,
                                        outside, cap, tile_count, work=repair_work,
                                        outside_units=last_outside)
            if (repaired is None and last is not None and not minimum
                    and len(kind) - last_listed <= NEAR_NEW_SHARE * len(kind)):
                near = _near_units(kind, tile, distance, base, count, tile_count, cap, outside,
                                   size, edge_limit, limit, *last)
            if repaired is not None:
                units, out = repaired
            elif near is not None:
                units, out = near[0], np.zeros(count, np.int64)
            else:
                flowed = flow_units(count, kind, tile, tile_count, distance - base[kind], base,
                                    cap, outside, supply=size, minimum=minimum,
                                    surcharge=surcharge, edge_limit=edge_limit)
                if flowed is None:
                    return None
                units, out = flowed
            load = np.bincount(tile, units, minlength=tile_count).astype(np.int64)
            if (out > 0).any():
                if not lists.list_with_room(search, first, out, np.flatnonzero(load < cap),
                                            cap - load):
                    return None  # no tile with room left to list: let the cells' solver say
                if not minimum:
                    # Proven with its units outside, the next solve repairs it rather than
                    # solve every pair again for a few units.
                    proven = least_prices(kind, tile, distance, units, units < limit[kind],
                                          load >= cap, count, tile_count,
                                          kind_floor=np.where(out > 0, outside,
                                                              np.iinfo(np.int64).min))
                    if proven is not None:
                        last, last_listed, last_units, last_outside = (
                            proven, len(kind), units, out)
                continue
            room = units < limit[kind]
            priced: tuple[np.ndarray, np.ndarray] | None
            if near is not None:
                priced = near[1], near[2]
            elif minimum:
                assert surcharge is not None
                at_minimum = (load == minimum) & (minimum < cap)
                floor = np.where(load > minimum, surcharge, 0).astype(np.int64)
                ceiling = np.where(load >= cap, np.iinfo(np.int64).max,
                                   np.where(at_minimum, surcharge, floor))
                priced = least_prices(kind, tile, distance, units, room,
                                      (load >= cap) | at_minimum, count, tile_count,
                                      floor, ceiling)
            else:
                # After a repair, from the last prices: few change (the elephants' last
                # rounds 0.06-0.11 s against 0.5 s; after a whole solve, where many fall,
                # the start gives no proof and the least prices are raised from zero).
                priced = least_prices(kind, tile, distance, units, room, load >= cap, count,
                                      tile_count,
                                      start=None if repaired is None or last is None
                                      else last[0])
            if priced is None:
                return None
            price, cost = priced
            last, last_listed, last_units = (price, cost), len(kind), units
            last_outside = np.zeros(count, np.int64)
            if lists.price_check(search, first, price, cost, units):
                continue
            if not minimum or (load >= minimum).all():
                break
            # Proven with a tile short: its minimum was worth less than the surcharge.
            assert surcharge is not None
            surcharge *= 16
            if surcharge + int(outside.max()) > _flow.COST_LIMIT:
                return None
    finally:
        bar.close()
    return lists, units, price, cost, rounds


def _near_units(kind: np.ndarray, tile: np.ndarray, distance: np.ndarray, base: np.ndarray,
                count: int, tile_count: int, cap: int, outside: np.ndarray, size: np.ndarray,
                edge_limit: np.ndarray | None, limit: np.ndarray, price: np.ndarray,
                cost: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The optimal flow on every listed pair, solved on those near the last prices, or None.

    A round adds a few pairs to millions (the last rounds of the astronaut
    at 28,900 cells by kinds: 208, then three, to 7.5 million), and a whole
    solve costs seconds each time. Each kind keeps its pairs of reduced cost
    ``r_gj = c_gj + p_j - u_g`` at most zero at the last round's least
    prices (its held pairs, so the last flow is still a feasible one, the
    pairs at its cost, and the new ones that beat it) and its
    :data:`._assign.NEAR_EDGES` of least ``r_gj``. (Every pair a kind lists
    beat its cost when listed: within :data:`._assign.NEAR_MARGIN` of it, as
    the cells' solver keeps, a kind keeps over half its pairs.) The flow
    solved there is priced (:func:`least_prices`); where no pair left out
    has ``c_gj + p_j < u_g`` at those prices, they prove it optimal on every
    pair (a pair left out carries no unit, so its only condition is that
    one), and they are the least prices of every pair too (the least of
    fewer conditions, which meet them all). Pairs that break it join a
    second solve; None where that fails as well, or the near pairs are over
    :data:`._assign.NEAR_SHARE` of all (a whole solve follows).

    Returns
    -------
    tuple of numpy.ndarray or None
        Units on every listed pair, the least prices and each kind's cost.
    """
    reduced = distance + price[tile] - cost[kind]
    near = (reduced <= 0) | _least_ranked(kind, reduced, count, _assign.NEAR_EDGES)
    for _ in range(_assign.NEAR_SOLVES):
        if near.sum() > _assign.NEAR_SHARE * len(near):
            return None
        index = np.flatnonzero(near)
        some_kind, some_tile = kind[index], tile[index]
        flowed = flow_units(count, some_kind, some_tile, tile_count,
                            distance[index] - base[some_kind], base, cap, outside,
                            supply=size, edge_limit=edge_limit)
        if flowed is None:
            return None
        some_units, out = flowed
        if (out > 0).any():
            return None
        load = np.bincount(some_tile, some_units, minlength=tile_count)
        priced = least_prices(some_kind, some_tile, distance[index], some_units,
                              some_units < limit[some_kind], load >= cap, count, tile_count)
        if priced is None:
            return None
        near_price, near_cost = priced
        below = ~near & (distance + near_price[tile] < near_cost[kind])
        if not below.any():
            units = np.zeros(len(kind), np.int64)
            units[index] = some_units
            return units, near_price, near_cost
        near |= below
    return None


def _least_ranked(kind: np.ndarray, value: np.ndarray, count: int, ranks: int) -> np.ndarray:
    """Whether each pair is among the ``ranks`` of least ``value`` of its kind (ties: first).

    Compiled, a pass that keeps each kind's ``ranks`` best (the bear's 7
    million listed pairs: 3-4 s sorted by kind and value, each near solve).
    """
    pairs = len(kind)
    best_value = np.full((count, ranks), np.iinfo(np.int64).max, np.int64)
    best_pair = np.full((count, ranks), np.iinfo(np.int64).max, np.int64)
    chosen = np.zeros(pairs, np.bool_)
    if _kernels.merge_sorted(best_value, best_pair, kind, np.arange(pairs, dtype=np.int64),
                             value):
        kept = best_pair[best_pair < pairs]
        chosen[kept] = True
        return chosen
    order = np.lexsort((value, kind))
    rank = np.empty(pairs, np.int64)
    rank[order] = np.arange(pairs) - np.searchsorted(kind[order], kind[order])
    return rank < ranks


def _shared_out(kinds: CellKinds, lists: _Lists, units: np.ndarray,
                spacing: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's tile and distance from its kind's units.

    In a fixed random order of the kind's cells; with ``spacing`` ``(cols,
    D)`` (the grid's columns and the spacing), each tile's copies within a
    kind in one class ``(row mod D, column mod D)`` of the grid, where the
    classes have room (see :func:`spaced_by_kinds`).
    """
    held = np.flatnonzero(units > 0)
    # Each unit once, by kind, nearest first.
    unit = np.repeat(held, units[held])
    unit = unit[np.lexsort((lists.tile[unit], lists.distance[unit], lists.kind[unit]))]
    order = np.random.default_rng(SHARE_SEED).permutation(len(kinds.kind))
    cells = order[np.argsort(kinds.kind[order], kind="stable")]
    if spacing is not None:
        cells = _spaced_cells(kinds, lists.tile[unit], cells, *spacing)
    tile = np.empty(len(kinds.kind), np.int64)
    distance = np.empty(len(kinds.kind), np.int64)
    tile[cells] = lists.tile[unit]
    distance[cells] = lists.distance[unit]
    return tile, distance


def _apart(cells: list[int], count: int, cols: int, min_spacing: int) -> list[int]:
    """``count`` of ``cells``, each next one at least ``min_spacing`` from those taken where
    one is (else the first left): a tile's copies where no class has room for them all."""
    chosen: list[int] = []
    left = np.asarray(cells, np.int64)
    for _ in range(count):
        far = np.ones(len(left), bool)
        for cell in chosen:
            far &= np.maximum(np.abs(left // cols - cell // cols),
                              np.abs(left % cols - cell % cols)) >= min_spacing
        at = int(np.argmax(far)) if far.any() else 0
        chosen.append(int(left[at]))
        left = np.delete(left, at)
    return chosen


def _spaced_cells(kinds: CellKinds, unit_tile: np.ndarray, cells: np.ndarray, cols: int,
                  min_spacing: int) -> np.ndarray:
    """Reorder ``cells`` (by kind, as the units) so that a tile's copies share a class.

    Within each kind, tiles of more copies first, each into the class with
    the most cells left; where no class has room for all its copies, each
    copy takes the first cell left that is far enough from the others
    (:func:`_apart`), and where none is, the spacing rounds mend.
    """
    result = cells.copy()
    starts = np.cumsum(kinds.size) - kinds.size
    # Kinds of one cell hold one copy of a tile each.
    for start, size in zip(starts[kinds.size > 1], kinds.size[kinds.size > 1], strict=True):
        stop = start + int(size)
        tiles = unit_tile[start:stop]
        distinct, copies = np.unique(tiles, return_counts=True)
        if copies.max(initial=1) > 1:
            mine = cells[start:stop]
            group = (mine // cols % min_spacing) * min_spacing + (mine % cols) % min_spacing
            by_class = [list(mine[group == index][::-1]) for index in range(min_spacing ** 2)]
            left = np.array([len(members) for members in by_class])
            mine_sorted = np.sort(mine)
            group = group[np.argsort(mine)]
            placed: list[int] = []
            most_first = np.argsort(-copies, kind="stable")
            for at in most_first:
                count = int(copies[at])
                best = int(np.argmax(left))
                if left[best] >= count:
                    chosen = [by_class[best].pop() for _ in range(count)]
                    left[best] -= count
                else:
                    chosen = _apart([cell for members in by_class for cell in members], count,
                                    cols, min_spacing)
                    for cell in chosen:
                        index = int(group[np.searchsorted(mine_sorted, cell)])
                        by_class[index].remove(cell)
                        left[index] -= 1
                placed.extend(chosen)
            # A tile's copies are alike: units and cells matched tile by tile.
            unit_order = np.argsort(tiles, kind="stable")
            ranked = np.repeat(distinct[most_first], copies[most_first])
            by_tile = np.argsort(ranked, kind="stable")
            result[start + unit_order] = np.asarray(placed, np.int64)[by_tile]
    return result
