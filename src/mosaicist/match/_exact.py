"""Exact nearest-tile search under the seed's objective.

For a compared cell vector ``a`` and tile ``b`` (see :class:`~mosaicist.grid.Geometry`) the
objective is ``D(a, b) = w |a|^2 - 2 <a, S_b> + |b|^2``, an integer, where
``S_b`` are the tile's block sums and ``w`` the pixels per block.

Search is exact, with memory bounded by the chunk sizes:

1. **Lower bounds.** ``LB <= D`` for every pair, from the principal
   components of the library's block means and the norms of what they
   leave out (the tail norms, see :mod:`._features`): one float32 GEMM per
   block of cells and tiles.
2. **Search.** Each cell first gets an upper bound: the exact distance of
   the best-bounded tile of an evenly spaced sample. Then, for groups of
   cells and chunks of tiles, a coarse bound (``COARSE_DIMENSIONS``
   components) discards the tiles no cell of the group can use, the full
   bound (:func:`._features.bound_dimensions`) is computed for the rest, and every tile
   whose bound does not exceed its cell's best exact distance so far is
   evaluated exactly.
3. **Exact re-check.** Distances are integer dot products (compiled loops
   where Numba is installed and the search is large enough to pay for it,
   else NumPy's: :mod:`._kernels`), so the kept best is the true minimum, ties going to
   the lowest library position. A tile is only ever skipped when a bound
   proves it cannot win.

Identical cells (all of a flat target's) have the same distance to every
tile: each is searched once and its twins get a copy of its result, each
cut off at its own limit (:func:`alike_cells`, :meth:`_ExactSearch.spread`).
At full tint so do cells that differ by a colour added to every pixel (a
sky's flat cells of many shades: :func:`alike_under_full_tint`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np

from .._runtime import one_blas_thread, thread_pool, worker_count
from ..errors import OptionError, check_range, counted
from ..grid import Geometry
from ..progress import progress_bar
from ._features import (
    BOUND_SLACK,
    LARGE_LIBRARY,
    TileFeatures,
    bound_scale,
    cell_bound_rows,
    checked_pixels,
    checked_search,
    compute_features,
)
from ._kernels import compiled_loops_allowed, merge_sorted, pair_dots, tint_correction
from ._registry import Matcher, MatchRequest, MatchResult

#: Cells per block of the first, sampled pass.
CELL_BLOCK = 2048
#: Tiles per chunk of the bound matrices (CELL_GROUP x TILE_CHUNK float32 = 4 MiB).
TILE_CHUNK = 4096
#: Components of the coarse bound computed for every cell-tile pair, and cells that
#: share one pass of it: 64 and 128 keep a third of the tiles that 24 and 256 kept
#: on the seed's workload. Past LARGE_LIBRARY tiles (bound of 128 components) the
#: all-pairs coarse product dominates, and 24 and 256 stay.
COARSE_DIMENSIONS = 64
CELL_GROUP = 128
LARGE_LIBRARY_COARSE = (24, 256)
#: Tiles in the sample that gives each cell its first upper bound.
SEED_SAMPLE = 2048
#: Fewest cells per block of the sampled pass when it runs on several threads.
SEED_BLOCK_LEAST = 256


#: Most bytes of cell rows kept converted to the dot products' integer type.
CONVERTED_CELLS_BYTES = 256 << 20


def dot_dtype(length: int, weight: int) -> type:
    """Integer type for dot products of ``length`` pixel values with block sums.

    int32 when no sum can overflow it (the common case, and faster), else int64.

    Parameters
    ----------
    length : int
        Values per dot product (a compared cell's pixels times 3).
    weight : int
        Pixels per block of the block sums (1 when tiles are compared as they are).

    Returns
    -------
    type
        ``numpy.int32`` or ``numpy.int64``.
    """
    return np.int32 if length * 255 * 255 * weight < 2**31 else np.int64


def _rows(array: np.ndarray) -> np.ndarray:
    """``(N, ...)`` as ``(N, values)`` rows, also when ``N`` is 0 (``reshape(0, -1)`` fails)."""
    return array.reshape(len(array), math.prod(array.shape[1:]))


def _pixel_rows(array: np.ndarray) -> np.ndarray:
    """``(N, h, w, 3)`` as ``(N, h w, 3)``, also when ``N`` is 0."""
    return array.reshape(len(array), math.prod(array.shape[1:-1]), array.shape[-1])


def cells_for_dots(cell_vectors: np.ndarray, weight: int) -> np.ndarray:
    """Cells as ``(N, n)`` rows for :func:`exact_distances`: converted once where memory allows.

    NumPy's re-check gathers these rows many times, and gathering wide
    integers beats converting each gathered block (about 2x on the
    re-check). The compiled loops read uint8 as fast, so with Numba the
    rows stay as they are (converting 30,000 cells of 3,072 values took
    0.5-1 s of fresh memory); past :data:`CONVERTED_CELLS_BYTES` (huge
    grids) too, so that memory stays one byte per compared value.
    """
    flat = _rows(cell_vectors)
    if compiled_loops_allowed():
        return flat
    accumulate = dot_dtype(flat.shape[1], weight)
    if flat.size * np.dtype(accumulate).itemsize <= CONVERTED_CELLS_BYTES:
        return flat.astype(accumulate)
    return flat


def exact_distances(
    cell_flat: np.ndarray,
    cell_norm2: np.ndarray,
    pooled: np.ndarray,
    tile_norm2: np.ndarray,
    weight: int,
    cell_index: np.ndarray,
    tile_index: np.ndarray,
) -> np.ndarray:
    """Exact objective for the pairs ``(cell_index[k], tile_index[k])``, as int64.

    ``cell_flat`` is ``(N, n)`` uint8 and ``pooled`` ``(M, n)`` block sums (or
    the tiles themselves when the factor is 1). Dot products are integer
    (:func:`._kernels.pair_dots`: in NumPy int32 when no sum can overflow
    it, else int64).

    Parameters
    ----------
    cell_flat : numpy.ndarray
        ``(N, n)`` compared cells, one row each (uint8, or already widened by
        :func:`cells_for_dots`).
    cell_norm2 : numpy.ndarray
        ``(N,)`` int64 squared norms of the cells.
    pooled : numpy.ndarray
        ``(M, n)`` block sums of the tiles.
    tile_norm2 : numpy.ndarray
        ``(M,)`` int64 squared norms of the tiles at full match size.
    weight : int
        Pixels per block: the ``w`` of ``w |a|^2`` in the objective.
    cell_index, tile_index : numpy.ndarray
        ``(K,)`` positions of the pairs to evaluate, one cell and one tile each.

    Returns
    -------
    numpy.ndarray
        ``(K,)`` int64 objective of each pair.
    """
    accumulate = dot_dtype(cell_flat.shape[1], weight)
    dots = pair_dots(cell_flat, pooled, cell_index, tile_index, accumulate)
    return weight * cell_norm2[cell_index] - 2 * dots + tile_norm2[tile_index]


def _improve(
    best_distance: np.ndarray,
    best_tile: np.ndarray,
    cells: np.ndarray,
    tiles: np.ndarray,
    distances: np.ndarray,
) -> None:
    """Fold candidate pairs into the running best, ties to the lowest tile index."""
    if len(cells) == 0:
        return
    order = np.lexsort((tiles, distances, cells))
    cells, tiles, distances = cells[order], tiles[order], distances[order]
    first = np.ones(len(cells), bool)
    first[1:] = cells[1:] != cells[:-1]
    cells, tiles, distances = cells[first], tiles[first], distances[first]
    current = best_distance[cells]
    better = (distances < current) | ((distances == current) & (tiles < best_tile[cells]))
    best_distance[cells[better]] = distances[better]
    best_tile[cells[better]] = tiles[better]


def _merge_best(
    best_distance: np.ndarray,
    best_tile: np.ndarray,
    cells: np.ndarray,
    tiles: np.ndarray,
    distances: np.ndarray,
) -> None:
    """Merge candidate pairs into each cell's sorted k best (no tile twice)."""
    if len(cells) == 0 or merge_sorted(best_distance, best_tile, cells, tiles, distances):
        return
    k = best_distance.shape[1]
    missing = np.iinfo(np.int64).max
    touched = np.unique(cells)
    old_distances = best_distance[touched].ravel()
    present = old_distances != missing
    all_cells = np.concatenate([np.repeat(touched, k)[present], cells])
    all_tiles = np.concatenate([best_tile[touched].ravel()[present], tiles])
    all_distances = np.concatenate([old_distances[present], distances])
    # The same pair may have been evaluated twice (sample pass, then full pass).
    _, first = np.unique(
        all_cells * (int(all_tiles.max()) + 1) + all_tiles, return_index=True
    )
    all_cells, all_tiles, all_distances = all_cells[first], all_tiles[first], all_distances[first]
    order = np.lexsort((all_tiles, all_distances, all_cells))
    all_cells, all_tiles, all_distances = all_cells[order], all_tiles[order], all_distances[order]
    starts = np.flatnonzero(np.r_[True, all_cells[1:] != all_cells[:-1]])
    lengths = np.diff(np.r_[starts, len(all_cells)])
    rank = np.arange(len(all_cells)) - np.repeat(starts, lengths)
    keep = rank < k
    best_distance[touched] = missing
    best_tile[touched] = missing
    best_distance[all_cells[keep], rank[keep]] = all_distances[keep]
    best_tile[all_cells[keep], rank[keep]] = all_tiles[keep]


def _threshold32(best: np.ndarray) -> np.ndarray:
    """Best distances as float32, rounded up so the comparison never drops a tie."""
    as32 = best.astype(np.float32)
    return np.nextafter(as32, np.float32(np.inf))


def _tinted_bounds(
    cell_rows: np.ndarray,
    tile_rows: np.ndarray,
    features: TileFeatures,
    cell_sums: np.ndarray,
    pixels: int,
    strength: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Extend the bound rows so that their product bounds the tinted distance.

    Tinting subtracts ``kappa |mean(a) - mean(b)|^2`` (``kappa = (2A - A^2) n``)
    from every distance, so subtracting it from the bound keeps it a bound:
    three more columns ``2 kappa mean(a)`` / ``mean(b)`` and the squared norms
    folded into the row and column terms. The tiles' rows depend on the
    strength only and are kept with the features (:meth:`TileFeatures.derived`).
    """
    kappa = (2 * strength - strength * strength) * pixels
    cell_means = cell_sums / pixels
    cell_norm = np.einsum("ij,ij->i", cell_means, cell_means)
    dimensions = len(features.basis)
    cells = np.empty((len(cell_rows), cell_rows.shape[1] + 3), np.float32)
    cells[:, :-3] = cell_rows
    cells[:, dimensions] -= (kappa * (1 + 1e-6) * cell_norm + 1.0).astype(np.float32)
    cells[:, -3:] = 2 * kappa * cell_means

    def tinted_rows() -> np.ndarray:
        tile_means = features.channel_sums[features.order] / pixels
        tile_norm = np.einsum("ij,ij->i", tile_means, tile_means)
        tiles = np.empty((len(tile_rows), tile_rows.shape[1] + 3), np.float32)
        tiles[:, :-3] = tile_rows
        tiles[:, dimensions + 1] -= (kappa * (1 + 1e-6) * tile_norm + 1.0).astype(np.float32)
        tiles[:, -3:] = tile_means
        return tiles

    return cells, features.derived(("tinted", pixels, strength, tile_rows.shape[1]),
                                   tinted_rows)


#: Marks a best distance or tile not found yet (larger than any distance).
_UNSET = np.iinfo(np.int64).max
#: Tint strengths are exact multiples of 1 / _TINT_STEPS.
_TINT_STEPS = 100


def _tint_fits(pixels: int) -> bool:
    """Whether tinted distances of tiles of ``pixels`` pixels fit int64.

    The objective is at most ``3 * 255^2 n`` (``n`` tile pixels) and
    tinting scales it by ``n * 100^2`` to stay in integers.
    """
    return 3 * 255 * 255 * pixels * (pixels * _TINT_STEPS * _TINT_STEPS) < 2**63


def _tint_hundredths(tint: float, geometry: Geometry) -> int:
    """Return the tint strength in hundredths, or raise if the search cannot use it.

    Raises
    ------
    OptionError
        ``tint`` is no number from 0 to 1 (NaN, a text... failed as Python's
        own errors), or tinted distances of tiles this large could overflow int64.
    """
    hundredths = int(round(check_range("tint", tint, 0, 1) * _TINT_STEPS))
    if hundredths and not _tint_fits(geometry.pixels):
        # The widest tiles of the same shape that fit.
        ratio = geometry.match_height / geometry.match_px
        most = next(width for width in range(geometry.match_px, 0, -1)
                    if _tint_fits(width * max(1, round(width * ratio))))
        raise OptionError(
            "{tint} needs tiles matched at {most} px or less, got {value}; "
            "lower {match_px} and draw larger with 'mosaicist render'",
            most=most, value=geometry.match_px,
        )
    return hundredths


@dataclass(frozen=True)
class CellTerms:
    """What a search derives from its cells' vectors (:func:`cell_terms`).

    A caller that searches subsets of the same cells again and again (the
    pricing rounds of an assignment) derives them once and passes
    :meth:`take` of each subset to :func:`match_exact`.

    Attributes
    ----------
    bound_rows : numpy.ndarray
        ``(N, d + 4)`` float32 rows of the lower bound (:func:`._features.cell_bound_rows`).
    norm2 : numpy.ndarray
        ``(N',)`` int64 squared norms of the compared vectors.
    flat : numpy.ndarray
        ``(N', n)`` rows for the exact dot products (:func:`cells_for_dots`).
    sums : numpy.ndarray
        ``(N, 3)`` int64 channel sums over each cell as drawn (each compared
        pixel covers ``weight`` tile pixels), for tinting.
    tail_norm : numpy.ndarray
        ``(N,)`` float64 tail norms of the cells (:mod:`._features`).
    rows : numpy.ndarray or None
        ``(N,)`` each cell's row in ``norm2`` and ``flat``; None when they
        are the cells' own (``N' = N``). :meth:`take` leaves those two
        whole: the exact evaluations gather their rows anyway, and copying
        the wide ``flat`` for every pricing round of a large grid cost more
        than the round's search.
    alike : numpy.ndarray or None
        ``(N,)`` int64: for each cell, the first cell of the same pixels
        (its position among the cells the terms were derived from), so that
        equal values mean identical cells (:func:`alike_cells`). None: not
        known, every cell is searched.
    """

    bound_rows: np.ndarray
    norm2: np.ndarray
    flat: np.ndarray
    sums: np.ndarray
    tail_norm: np.ndarray
    rows: np.ndarray | None = None
    alike: np.ndarray | None = None

    def take(self, cells: np.ndarray) -> CellTerms:
        """The terms of ``cells`` (indices into these), in that order."""
        cells = np.asarray(cells, np.int64)
        rows = cells if self.rows is None else self.rows[cells]
        return CellTerms(self.bound_rows[cells], self.norm2, self.flat, self.sums[cells],
                         self.tail_norm[cells], rows,
                         None if self.alike is None else self.alike[cells])


def cell_terms(cell_vectors: np.ndarray, geometry: Geometry,
               features: TileFeatures, tint: float = 0.0) -> CellTerms:
    """Derive the :class:`CellTerms` of ``cell_vectors`` (``Geometry.cell_vectors``).

    ``tint`` is the search's: at full strength (1), cells that differ by a
    colour added to every pixel are alike too (see :func:`alike_cells`).
    """
    bound_rows, norm2, tail_norm = cell_bound_rows(cell_vectors, geometry, features)
    sums = _channel_sums(_pixel_rows(cell_vectors)) * geometry.weight
    alike = (alike_cells(cell_vectors, sums, norm2) if not full_tint(tint)
             else alike_under_full_tint(cell_vectors, sums // geometry.weight, norm2))
    return CellTerms(bound_rows, norm2, cells_for_dots(cell_vectors, geometry.weight), sums,
                     tail_norm, alike=alike)


def full_tint(tint: float) -> bool:
    """Whether ``tint`` is the full strength, to the hundredth the searches round it to."""
    return int(round(float(tint) * _TINT_STEPS)) == _TINT_STEPS


def alike_under_full_tint(cell_vectors: np.ndarray, sums: np.ndarray | None = None,
                          norm2: np.ndarray | None = None) -> np.ndarray:
    """:func:`alike_cells` of the cells less each one's least value per channel.

    At full tint the objective is the distance of cell and tile less their
    means, ``|(a - mean a) - (b - mean b)|^2`` per channel, and in search
    units exactly (``n D - |s_a - s_b|^2`` changes by nothing when ``k`` is
    added to every value of a channel of ``a``: ``D`` by ``2 k (s_a - s_b) /
    w + k^2 m w`` per channel, ``m`` its compared values, and the sums'
    term by ``n`` times that). Cells that differ by such a colour, a sky's
    flat cells of a few hundred shades, are the same distance from every
    tile, so a search needs one of them: subtracting each cell's least value
    per channel leaves the same pixels exactly for them, and only for them.
    Only cells that share their spread ``m |a|^2 - sum_c s_c^2`` (``s_c``
    the channel sums, unchanged by such a colour) can be such twins, and
    only those are compared: on a photo that is almost none.

    Parameters
    ----------
    cell_vectors : numpy.ndarray
        ``(N, ...)`` uint8 cells of 3 channels.
    sums, norm2 : numpy.ndarray, optional
        ``(N, 3)`` int64 channel sums of the values and ``(N,)`` squared
        norms, where known.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` int64, as :func:`alike_cells` (the first such cell).
    """
    count = len(cell_vectors)
    first = np.arange(count, dtype=np.int64)
    if count < 2:
        return first
    pixels = _pixel_rows(cell_vectors)
    if sums is None:
        sums = _channel_sums(pixels)
    if norm2 is None:
        flat = _rows(cell_vectors)
        norm2 = np.einsum("ij,ij->i", flat, flat, dtype=np.int64)
    spread = pixels.shape[1] * np.asarray(norm2, np.int64) - (sums * sums).sum(axis=1)
    # No spread: every channel is one value throughout (flat cells of any shade), and
    # such cells are all twins without a look at their pixels.
    flat_cells = np.flatnonzero(spread == 0)
    if len(flat_cells):
        first[flat_cells] = flat_cells[0]
    _, inverse, counts = np.unique(spread, return_inverse=True, return_counts=True)
    shared = np.flatnonzero((counts[inverse.ravel()] > 1) & (spread != 0))
    if len(shared) == 0:
        return first
    shifted = np.empty((len(shared), *pixels.shape[1:]), np.uint8)
    # In blocks: a flat target's cells are all shared, and their copies stay small.
    step = max(1, (16 << 20) // max(1, pixels[0].size))
    for start in range(0, len(shared), step):
        block = pixels[shared[start:start + step]]
        np.subtract(block, block.min(axis=1, keepdims=True), out=shifted[start:start + step])
    shifted_sums = _channel_sums(shifted)
    flat_shifted = _rows(shifted)
    shifted_norm2 = np.einsum("ij,ij->i", flat_shifted, flat_shifted, dtype=np.int64)
    first[shared] = shared[alike_cells(shifted, shifted_sums, shifted_norm2)]
    return first


def _channel_sums(pixels: np.ndarray) -> np.ndarray:
    """``(N, 3)`` int64 sums of ``(N, P, 3)`` values, channel by channel.

    One channel at a time: 0.05 s for 31,212 cells of 3,072 values, where
    NumPy's sum over the middle axis took 0.6 s.
    """
    return np.stack([pixels[:, :, channel].sum(axis=1, dtype=np.int64)
                     for channel in range(pixels.shape[2])], axis=1)


def alike_cells(cell_vectors: np.ndarray, sums: np.ndarray, norm2: np.ndarray) -> np.ndarray:
    """Each cell's first cell of the very same pixels: ``(N,)`` int64 positions.

    Identical cells have identical distances to every tile, so a search
    needs only one of them (a flat target's cells are all alike: its
    pricing rounds searched the same cell thousands of times). Cells are
    first told apart by their channel sums and squared norms (exact
    integers, a few bytes each), and only those sharing them are compared
    pixel by pixel: on a photo that is almost none.

    Parameters
    ----------
    cell_vectors : numpy.ndarray
        ``(N, ...)`` uint8 cells.
    sums : numpy.ndarray
        ``(N, 3)`` int64 channel sums of the cells.
    norm2 : numpy.ndarray
        ``(N,)`` int64 squared norms of the cells.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` int64: the lowest position of a cell with the same pixels
        (its own position where it has no twin).
    """
    count = len(cell_vectors)
    first = np.arange(count, dtype=np.int64)
    if count < 2:
        return first
    with np.errstate(over="ignore"):
        # One integer per cell (wrapping arithmetic): sorted far faster than rows of four.
        mixed = np.asarray(norm2).astype(np.uint64) * _KEY_MIX[-1]
        for channel in range(sums.shape[1]):
            mixed += sums[:, channel].astype(np.uint64) * _KEY_MIX[channel]
    _, index, inverse, counts = np.unique(mixed, return_index=True, return_inverse=True,
                                          return_counts=True)
    inverse = inverse.ravel()
    shared = np.flatnonzero(counts[inverse] > 1)
    if len(shared) == 0:
        return first
    # Each cell against the first of its key (the lowest position): on a flat target,
    # all of them, equal.
    candidate = index[inverse[shared]]
    rows = _rows(cell_vectors)
    same = np.zeros(len(shared), bool)
    step = max(1, (16 << 20) // max(1, rows.shape[1]))
    for start in range(0, len(shared), step):
        part = slice(start, start + step)
        same[part] = (rows[shared[part]] == rows[candidate[part]]).all(axis=1)
    first[shared[same]] = candidate[same]
    rest = shared[~same]
    if len(rest):
        # Keys alike, pixels not: grouped by their pixels, which no cell outside shares.
        pixels = np.ascontiguousarray(rows[rest])
        _, lowest, group = np.unique(pixels.view(np.dtype((np.void, pixels.shape[1]))).ravel(),
                                     return_index=True, return_inverse=True)
        first[rest] = rest[lowest[group.ravel()]]
    return first


#: Odd multipliers that mix a cell's channel sums and squared norm into one key.
_KEY_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                     0x27D4EB2F165667C5], np.uint64)


#: :func:`cell_terms` under another name, for :func:`match_exact` whose argument shadows it.
_derive_cell_terms = cell_terms


class _ExactSearch:
    """State of one :func:`match_exact` call: the running best of every cell.

    Distances are kept as int64 in *search units*: the objective ``D``, or
    with tint ``A = p / q`` (``q = 100``) ``D n q^2 - (2pq - p^2) |s_a - s_b|^2``
    (``s`` the channel sums over the tile's ``n`` pixels), which is the tinted
    objective times ``n q^2`` and so ranks tiles exactly like it, without
    rounding. Lower bounds and thresholds are in objective units.

    Call :meth:`seed_pass`, then :meth:`coarse_rows`, then :meth:`search_group`
    for each of :meth:`groups` (from several threads at once if wanted: every
    write is to the rows of the group's own cells, and groups are disjoint),
    then :meth:`result`.

    Parameters
    ----------
    cell_vectors : numpy.ndarray
        ``(N, h, w, 3)`` uint8 from :meth:`Geometry.cell_vectors` (``Geometry.shape``).
    tiles : numpy.ndarray
        ``(M, match_height, match_px, 3)`` uint8 in library order.
    geometry : Geometry
        How cells and tiles are compared.
    features : TileFeatures
        Features of ``tiles``.
    k : int
        Best tiles to keep per cell (at most ``M`` are kept).
    hundredths : int
        Tint strength ``p`` in hundredths, 0 for none (see :func:`_tint_hundredths`).
    price : numpy.ndarray, optional
        ``(M,)`` int64 non-negative term added to every distance to the tile
        at that library position, in search units (a tile's price in an
        assignment; see :func:`match_exact`).
    limit : numpy.ndarray, optional
        ``(N,)`` int64 search units: only distances below a cell's limit are
        wanted, so its threshold never exceeds it.
    upper : numpy.ndarray, optional
        ``(N,)`` int64 search units at or above each cell's ``k``-th best.
    terms : CellTerms, optional
        The cells' terms, derived earlier.
    rows : numpy.ndarray, optional
        Ascending rows of the features' bound: only their tiles are searched
        (default: the whole library).

    Attributes
    ----------
    cell_rows, bound_rows : numpy.ndarray
        ``(N, d + 4 [+ 3])`` and ``(M, d + 4 [+ 3])`` float32 rows whose
        product is the full lower bound (:mod:`._features`), with the tint
        columns of :func:`_tinted_bounds` when tinting (``M`` the tiles
        searched).
    order : numpy.ndarray
        ``(M,)`` library position of each row of :attr:`bound_rows`.
    coarse_cells, coarse_tiles : numpy.ndarray
        The same for the coarse bound (set by :meth:`coarse_rows`).
    best_distance, best_tile : numpy.ndarray
        ``(N,)`` or, for ``k > 1``, ``(N, k)`` int64 best search distances
        and their library positions, best first; unset entries hold int64 max.
    threshold : numpy.ndarray
        ``(N,)`` float32: a tile whose bound exceeds its cell's threshold
        cannot enter the cell's ``k`` best.
    """

    coarse_cells: np.ndarray
    coarse_tiles: np.ndarray

    def __init__(
        self,
        cell_vectors: np.ndarray,
        tiles: np.ndarray,
        geometry: Geometry,
        features: TileFeatures,
        k: int,
        hundredths: int,
        price: np.ndarray | None = None,
        limit: np.ndarray | None = None,
        upper: np.ndarray | None = None,
        terms: CellTerms | None = None,
        rows: np.ndarray | None = None,
    ) -> None:
        count = len(cell_vectors)
        if terms is None:
            terms = cell_terms(cell_vectors, geometry, features)
        tile_count = len(tiles)
        self.features = features
        self.rows = rows
        #: Library position of each searched row of the bound.
        self.order = features.order if rows is None else features.order[rows]
        #: Tiles searched: the library, or its ``rows``.
        self.tile_count = len(self.order)
        #: Components of the coarse bound and cells per group.
        self.coarse_shape = ((COARSE_DIMENSIONS, CELL_GROUP) if tile_count <= LARGE_LIBRARY
                             else LARGE_LIBRARY_COARSE)
        self.weight = geometry.weight
        self.scale = bound_scale(geometry)
        self.pooled = (
            features.pooled if features.pooled is not None else tiles.reshape(tile_count, -1)
        )
        self.cell_norm2, self.cell_flat = terms.norm2, terms.flat
        self.flat_rows = terms.rows
        self.cell_tail = terms.tail_norm
        # The tail norms' columns are in both (:mod:`._features`): the tiles' rows are
        # read where they lie, mapped from the cache at a million tiles.
        cell_rows, library_rows = terms.bound_rows, features.bound
        self.k = max(1, min(k, tile_count))
        #: Whether lists of candidates were asked for (``k > 1``), even of a library of one.
        self.listed = k > 1
        self.hundredths = hundredths
        pixels = geometry.pixels
        self.distance_scale = pixels * _TINT_STEPS * _TINT_STEPS if hundredths else 1
        self.tint_factor = 2 * hundredths * _TINT_STEPS - hundredths * hundredths
        self.cell_sums = terms.sums
        if hundredths:
            self.cell_rows, self.library_rows = _tinted_bounds(
                cell_rows, library_rows, features, self.cell_sums, pixels,
                hundredths / _TINT_STEPS
            )
        else:
            self.cell_rows, self.library_rows = cell_rows, library_rows
        self.bound_rows = self.library_rows if rows is None else self.library_rows[rows]
        self.price = price
        # The bound of D + price is the bound of D plus the price, loosened for the
        # float32 sum (in the bound's order, objective units).
        self.price_bound: np.ndarray | None = None
        if price is not None:
            in_bound_order = np.asarray(price, np.float64)[self.order] / self.distance_scale
            # Lowered by a millionth of its size whatever its sign: a negative price
            # scaled by (1 - 1e-6) rose above itself, and tiles that won were skipped.
            self.price_bound = (in_bound_order - 1e-6 * np.abs(in_bound_order) - 1.0
                                ).astype(np.float32)
        self.limit = limit
        self.limit32: np.ndarray | None = None
        if limit is not None:
            self.limit32 = _threshold32(np.asarray(limit, np.float64) / self.distance_scale)
        if upper is not None:
            # Some k tiles are known to reach `upper`: the k-th best is at most it.
            upper32 = _threshold32(np.asarray(upper, np.float64) / self.distance_scale)
            self.limit32 = upper32 if self.limit32 is None else np.minimum(self.limit32, upper32)
        shape = count if self.k == 1 else (count, self.k)
        self.best_distance = np.full(shape, _UNSET, np.int64)
        self.best_tile = np.full(shape, _UNSET, np.int64)
        self.threshold = self.thresholds(slice(None))

    def evaluate(self, cells: np.ndarray, candidates: np.ndarray) -> int:
        """Fold the exact distances of pairs into the running best.

        Parameters
        ----------
        cells, candidates : numpy.ndarray
            int64 cell indices and library positions of the pairs.

        Returns
        -------
        int
            Pairs evaluated.

        Notes
        -----
        ``D`` is integer (:func:`exact_distances`). Tinting shifts the tile by
        ``A (mean(a) - mean(b))`` per channel, which subtracts
        ``(2A - A^2) |s_a - s_b|^2 / n`` from ``D``; times ``n q^2`` that is
        ``(2pq - p^2) |s_a - s_b|^2``, an integer too. Ties keep the lowest
        library position (:func:`_improve`, :func:`_merge_best`).
        """
        features = self.features
        distances = exact_distances(
            self.cell_flat, self.cell_norm2, self.pooled, features.norm2, self.weight,
            cells if self.flat_rows is None else self.flat_rows[cells], candidates,
        )
        if self.hundredths:
            difference = self.cell_sums[cells] - features.channel_sums[candidates]
            distances = distances * self.distance_scale - self.tint_factor * np.einsum(
                "ij,ij->i", difference, difference
            )
        if self.price is not None:
            distances = distances + self.price[candidates]
        if self.k == 1:
            _improve(self.best_distance, self.best_tile, cells, candidates, distances)
        else:
            # Most pairs the bound admits lose to the k-th best: only the others are merged.
            entering = distances <= self.best_distance[cells, -1]
            _merge_best(self.best_distance, self.best_tile, cells[entering],
                        candidates[entering], distances[entering])
        return len(cells)

    def kth_best(self, cells: np.ndarray | slice) -> np.ndarray:
        """Each cell's ``k``-th best distance so far, in objective units.

        A tile can only enter a cell's ``k`` best by beating it. Unset is int64
        max untinted (above any bound even as float32), ``inf`` tinted.
        """
        best = self.best_distance[cells] if self.k == 1 else self.best_distance[cells, -1]
        if self.distance_scale == 1:
            return best
        unset = best == _UNSET
        return np.where(unset, np.inf, best / self.distance_scale)

    def thresholds(self, cells: np.ndarray | slice) -> np.ndarray:
        """The float32 thresholds of ``cells``: their ``k``-th best, at most their limit."""
        threshold = _threshold32(self.kth_best(cells))
        if self.limit32 is not None:
            threshold = np.minimum(threshold, self.limit32[cells])
        return threshold

    def seed_pass(self, workers: int = 1,
                  map_blocks: Callable[..., Iterator[int]] = map) -> int:
        """Give every cell a first upper bound from a sample of the library.

        The sample is ``SEED_SAMPLE`` evenly spaced rows of the bound (sorted by
        first principal component, so it spans the library's range). Each cell
        evaluates its ``k`` best-bounded sample tiles (more on ties); their exact
        distances (an upper bound on the ``k``-th best) set :attr:`threshold`,
        so that the full pass evaluates few tiles.

        Parameters
        ----------
        workers : int
            Threads ``map_blocks`` runs on: the cells are cut into at least
            two blocks per thread, so that none waits for the last.
        map_blocks : callable
            ``map`` or an executor's ``map``; blocks hold disjoint cells.

        Returns
        -------
        int
            Pairs evaluated.
        """
        count, tile_count = len(self.cell_rows), self.tile_count
        sample_size = min(tile_count, SEED_SAMPLE)
        sample = np.unique(np.linspace(0, tile_count - 1, sample_size).astype(np.int64))
        size = CELL_BLOCK if workers <= 1 else min(
            CELL_BLOCK, max(SEED_BLOCK_LEAST, -(-count // (2 * workers))))
        blocks = [np.arange(start, min(count, start + size)) for start in range(0, count, size)]
        evaluated = sum(map_blocks(lambda cells: self._seed_block(cells, sample), blocks))
        self.threshold = self.thresholds(slice(None))
        return evaluated

    def _seed_block(self, cells: np.ndarray, sample: np.ndarray) -> int:
        """The sample pass of a block of consecutive cells: pairs evaluated."""
        order = self.order
        bounds = self.cell_rows[cells[0]:cells[-1] + 1] @ self.bound_rows[sample].T
        if self.price_bound is not None:
            bounds += self.price_bound[sample]
        # The sample lowers a cell's threshold only where ``k`` of its tiles are below it
        # (then so is their k-th exact distance, which every cell's next pass is held
        # to); elsewhere its exact distances bound nothing, and the full pass evaluates
        # what it must. A price check's cells with limits at their costs: 12 million
        # pairs evaluated here for nothing, on the bear's 30,000 cells at one use.
        take = min(self.k, len(sample))
        if self.limit32 is not None:
            threshold = self.threshold[cells[0]:cells[-1] + 1]
            useful = (bounds <= threshold[:, None]).sum(axis=1) >= take
            if not useful.all():
                cells, bounds = cells[useful], bounds[useful]
                if not len(cells):
                    return 0
        if self.k == 1:
            nearest = bounds.argmin(axis=1)
            return self.evaluate(cells, order[sample[nearest]])
        pair_cells, pair_rows = self._sample_best(cells, bounds, take, sample)
        return self.evaluate(pair_cells, order[pair_rows])

    @staticmethod
    def _sample_best(
        cells: np.ndarray, bounds: np.ndarray, take: int, sample: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pairs of each cell and (at least) its ``take`` best-bounded sample rows.

        The ``take``-th smallest bound of each row comes from a partition of
        the values, and every tile at or below it is taken: ``argpartition``
        of the same rows costs from 3 to 80 times as much, erratically, on
        these 2048-wide rows. Ties can add pairs; where they add many (a
        library of equal tiles), ``argpartition`` takes exactly ``take``.
        """
        kth = np.partition(bounds, take - 1, axis=1)[:, take - 1]
        hits = np.flatnonzero(bounds <= kth[:, None])
        if len(hits) <= 2 * take * len(cells):
            rows, columns = np.divmod(hits, bounds.shape[1])
            return cells[rows], sample[columns]
        nearest = np.argpartition(bounds, take - 1, axis=1)[:, :take]
        return np.repeat(cells, take), sample[nearest.ravel()]

    def coarse_rows(self) -> None:
        """Build the coarse bound's rows (:attr:`coarse_cells`, :attr:`coarse_tiles`).

        Notes
        -----
        The full bound is ``s |x - y|^2 + w (t_x - t_y)^2`` plus row and
        column terms, ``x`` and ``y`` the ``d`` components of cell and tile,
        ``t`` the tail norms (:mod:`._features`). The components ``c..d``
        (``c = COARSE_DIMENSIONS``) join the tail: ``w t'^2 = w t^2 +
        s |x_{c..d}|^2`` is the squared norm of all the bound leaves out, so
        ``s |x_c - y_c|^2 + w (t'_x - t'_y)^2`` is a bound too, one GEMM of
        width ``c + 3`` instead of ``d + 3``, with the same row and column
        terms (loosened for the moved squares). The tint columns carry over
        unchanged: their terms do not involve the components.
        """
        cell_rows, bound_rows, scale = self.cell_rows, self.library_rows, self.scale
        features, weight = self.features, self.weight
        dimensions = len(features.basis)
        coarse = min(self.coarse_shape[0], dimensions)
        extra = bound_rows.shape[1] - (dimensions + 2)
        library_size = len(bound_rows)

        def tile_rows() -> np.ndarray:
            # Chunked: a float64 copy of the whole tail would be the search's largest array.
            tail2 = np.empty(library_size, np.float64)
            for start in range(0, library_size, TILE_CHUNK):
                tail = bound_rows[start:start + TILE_CHUNK, coarse:dimensions].astype(np.float64)
                tail2[start:start + TILE_CHUNK] = np.einsum("ij,ij->i", tail, tail)
            coarse_tiles = np.empty((library_size, coarse + 2 + extra), np.float32)
            coarse_tiles[:, :coarse] = bound_rows[:, :coarse]
            coarse_tiles[:, coarse] = 1.0
            coarse_tiles[:, coarse + 1] = bound_rows[:, dimensions + 1] - (
                BOUND_SLACK * scale * tail2)
            coarse_tiles[:, coarse + 2:] = bound_rows[:, dimensions + 2:]
            coarse_tiles[:, coarse + 2] = np.sqrt(
                features.tail_norm * features.tail_norm + scale / weight * tail2)
            return coarse_tiles

        # The tile rows follow from the bound rows, which the tint strength decides.
        coarse_tiles = self.features.derived(
            ("coarse", coarse, scale, self.hundredths, self.distance_scale, bound_rows.shape[1]),
            tile_rows)
        if self.rows is not None:
            coarse_tiles = coarse_tiles[self.rows]
        # The cell rows hold -2 s x: undo the factor to get the components back.
        projected = cell_rows[:, :dimensions] / np.float32(-2.0 * scale)
        moved = np.einsum("ij,ij->i", projected[:, coarse:], projected[:, coarse:],
                          dtype=np.float64)
        coarse_cells = np.empty((len(cell_rows), coarse + 2 + extra), np.float32)
        coarse_cells[:, :coarse] = cell_rows[:, :coarse]
        coarse_cells[:, coarse] = cell_rows[:, dimensions] - BOUND_SLACK * scale * moved
        coarse_cells[:, coarse + 1] = 1.0
        coarse_cells[:, coarse + 2:] = cell_rows[:, dimensions + 2:]
        coarse_cells[:, coarse + 2] = -2.0 * weight * np.sqrt(
            self.cell_tail * self.cell_tail + scale / weight * moved)
        self.coarse_cells, self.coarse_tiles = coarse_cells, coarse_tiles

    def groups(self) -> list[np.ndarray]:
        """Cell indices in groups of ``CELL_GROUP`` for :meth:`search_group`.

        Cells are grouped by their first principal component, so that a group
        wants similar tiles and the coarse bound discards more for all of it.
        """
        cell_order = np.argsort(self.cell_rows[:, 0], kind="stable")
        return [
            cell_order[start:start + self.coarse_shape[1]]
            for start in range(0, len(cell_order), self.coarse_shape[1])
        ]

    def search_group(self, cells: np.ndarray) -> tuple[int, int]:
        """Evaluate every tile that might enter the ``k`` best of some of ``cells``.

        For each chunk of ``TILE_CHUNK`` tiles, the coarse bound (every pair)
        keeps the tiles some cell's threshold admits, the full bound (kept
        tiles only) picks the pairs it admits, and those are evaluated
        exactly, tightening the thresholds for the next chunk. Only tiles
        whose bound exceeds the threshold are skipped, and bound ``<= D``, so
        the result is exact; ``<=`` also keeps equal distances (ties).

        Returns
        -------
        tuple of int
            Pairs evaluated, and pairs whose full bound was computed.
        """
        evaluated = scanned = 0
        order, bound_rows, threshold = self.order, self.bound_rows, self.threshold
        coarse_tiles, tile_count = self.coarse_tiles, self.tile_count
        price_bound = self.price_bound
        rows = self.cell_rows[cells]
        rows_coarse = self.coarse_cells[cells]
        for start in range(0, tile_count, TILE_CHUNK):
            stop = min(tile_count, start + TILE_CHUNK)
            limit = threshold[cells, None]
            coarse = rows_coarse @ coarse_tiles[start:stop].T
            if price_bound is not None:
                coarse += price_bound[start:stop]
            alive = np.flatnonzero((coarse <= limit).any(axis=0)) + start
            if len(alive) == 0:
                continue
            scanned += len(alive) * len(cells)
            # Tiles by cells: the pairs come out tile by tile, so that each tile's row is
            # read once for all the cells that want it (1.6x faster exact evaluations
            # than cell by cell, whose tile rows come from all over the library).
            bound = bound_rows[alive] @ rows.T
            if price_bound is not None:
                bound += price_bound[alive, None]
            # flatnonzero is an order of magnitude faster than 2-D nonzero here.
            hits = np.flatnonzero(bound <= limit.T)
            if len(hits):
                tile_hits, cell_hits = np.divmod(hits, len(cells))
                evaluated += self.evaluate(cells[cell_hits], order[alive[tile_hits]])
                threshold[cells] = self.thresholds(cells)
        return evaluated, scanned

    def spread(self, searched: np.ndarray, limit: np.ndarray | None) -> None:
        """Make the searched cells' results those of the cells they stand for.

        Parameters
        ----------
        searched : numpy.ndarray
            ``(N',)`` for each cell wanted, the searched cell of the same
            pixels.
        limit : numpy.ndarray, optional
            ``(N',)`` each wanted cell's own limit (the search ran at the
            loosest of its cells': :meth:`result` applies these).

        Notes
        -----
        A search keeps every tile of the exact ``k`` best whose distance is
        below the limit it ran at, in order: so below a lower limit it holds
        the same tiles as a search run at that limit, and :meth:`result`
        cuts off the rest as such a search would.
        """
        self.best_distance = self.best_distance[searched]
        self.best_tile = self.best_tile[searched]
        self.limit = limit

    def result(self, evaluated: int, bounded: int, search_units: bool = False) -> MatchResult:
        """Return the best tiles, distances in objective units (float64 when tinted).

        With ``k > 1`` the candidates of cells that found fewer than ``k``
        tiles end in ``-1`` (their distances: int64 max, or ``inf`` tinted),
        and so do entries at or above a cell's limit (for ``k = 1`` too).
        With ``search_units`` the distances stay int64 search units (prices
        included).
        """
        best_tile, best_distance = self.best_tile, self.best_distance
        if self.limit is not None:
            over = best_distance >= (self.limit if self.k == 1 else self.limit[:, None])
            best_tile[over] = -1
            best_distance[over] = _UNSET
        listed = self.listed
        if self.k == 1 and listed:
            # k > 1 of a library of one tile: its callers still read the (N, 1) lists.
            best_tile, best_distance = best_tile[:, None], best_distance[:, None]
        if search_units:
            if not listed:
                return MatchResult(best_tile, best_distance, evaluated, bounded)
            best_tile[best_distance == _UNSET] = -1
            return MatchResult(best_tile[:, 0].copy(), best_distance[:, 0].copy(), evaluated,
                               bounded, best_tile, best_distance)
        if self.distance_scale != 1:
            unset = best_distance == _UNSET
            best_distance = np.where(unset, np.inf, best_distance / self.distance_scale)
        if not listed:
            return MatchResult(best_tile, best_distance, evaluated, bounded)
        best_tile[~np.isfinite(best_distance.astype(np.float64))
                  | (best_distance == _UNSET)] = -1
        return MatchResult(
            best_tile[:, 0].copy(), best_distance[:, 0].copy(), evaluated, bounded,
            best_tile, best_distance,
        )


def match_exact(
    cell_vectors: np.ndarray,
    tiles: np.ndarray,
    geometry: Geometry,
    features: TileFeatures | None = None,
    show_progress: bool = False,
    k: int = 1,
    tint: float = 0.0,
    *,
    price: np.ndarray | None = None,
    limit: np.ndarray | None = None,
    upper: np.ndarray | None = None,
    search_units: bool = False,
    cell_terms: CellTerms | None = None,
    among: np.ndarray | None = None,
) -> MatchResult:
    """Find, for every cell, a tile of minimum objective (ties: lowest position).

    With ``k > 1``, also each cell's ``k`` best tiles (exact, in order of
    distance then position), for assignments that limit repetition. With a
    ``price`` per tile, tiles are ranked by objective plus price (the pricing
    step of an assignment), and with a ``limit`` per cell only tiles below it
    are returned; both in search units (see ``search_units``).

    Parameters
    ----------
    cell_vectors : numpy.ndarray
        ``(N, h, w, 3)`` uint8 from :meth:`Geometry.cell_vectors` (``Geometry.shape``).
    tiles : numpy.ndarray
        ``(M, match_height, match_px, 3)`` uint8 in library order (may be memory-mapped).
    geometry : Geometry
        How cells and tiles are compared.
    features : TileFeatures, optional
        Precomputed (e.g. cached) features of ``tiles``.
    show_progress : bool
        Draw a progress bar.
    k : int
        Number of best tiles to keep per cell.
    tint : float
        Tint strength ``A`` in 0..1, rounded to hundredths. Each tile is then
        ranked by its distance after the mean colour shift that tinting will
        apply, ``|a - b - A (mean(a) - mean(b))|^2 = D - (2A - A^2) |sum(a) -
        sum(b)|^2 / n`` per channel (``n`` tile pixels). This is computed
        exactly in integers scaled by ``n * 100^2``; distances are then returned
        as float64 in the objective's units.
    price : numpy.ndarray, optional
        ``(M,)`` int64 non-negative term added to the distance of every tile,
        in search units. The bounds add it too, so the search stays exact.
    limit : numpy.ndarray, optional
        ``(N,)`` int64 search units: a cell only wants tiles whose distance
        (price included) is below its limit; the others come back as ``-1``.
    upper : numpy.ndarray, optional
        ``(N,)`` int64 search units known to be at or above each cell's
        ``k``-th best distance (price included): where it is below what the
        search would find on its own, the search starts from it.
    search_units : bool
        Return distances in search units: int64, the objective times
        ``n * 100^2`` when tinting (exact), the objective itself otherwise.
    cell_terms : CellTerms, optional
        The terms of ``cell_vectors`` with these ``features``, derived
        earlier (:func:`cell_terms`); derived here when not given.
    among : numpy.ndarray, optional
        Library positions of the only tiles to search (at least one; default:
        all). Every result, ``upper`` included, is then about these tiles.

    Returns
    -------
    MatchResult

    Raises
    ------
    ValueError
        There is no tile to search (``tiles`` or ``among`` empty).
    OptionError
        Naming the argument: cells or tiles of another type or shape than
        ``geometry`` compares, ``features`` of other tiles or another
        geometry, ``tint`` outside 0..1 or with tiles too large for exact
        tinted distances in int64, ``k`` not a whole number of at least 1,
        or ``price``, ``limit``, ``upper`` or ``among`` not whole numbers
        of the right length (``among``: library positions).
    """
    cell_vectors, tiles = checked_search(cell_vectors, tiles, geometry, features)
    hundredths = _tint_hundredths(tint, geometry)
    k = check_range("k", k, 1, whole=True)
    if len(tiles) == 0:
        # Said as such, not as NumPy failing to reshape the empty library's features.
        raise ValueError("no tiles to match against")
    if features is None:
        features = compute_features(tiles, geometry)
    count, tile_count = len(cell_vectors), len(tiles)
    price = _checked_per("price", price, tile_count, "tile")
    limit = _checked_per("limit", limit, count, "cell")
    upper = _checked_per("upper", upper, count, "cell")
    if cell_terms is not None and len(cell_terms.bound_rows) != count:
        raise OptionError("{cell_terms} are of {terms}, but {cell_vectors} holds {count}",
                          terms=counted(len(cell_terms.bound_rows), "cell"),
                          count=counted(count, "cell"))
    rows = None
    if among is not None:
        positions = _checked_per("among", among, None, "tile")
        assert positions is not None
        if len(positions) == 0:
            raise ValueError("among: no tile to search")
        low, high = int(positions.min()), int(positions.max())
        if low < 0 or high >= tile_count:
            # A negative position searched a tile from the end (NumPy's wrap-around).
            raise OptionError("{among} holds {value}, not a position of the {tiles} (0 to "
                              "{last})", value=low if low < 0 else high,
                              last=f"{tile_count - 1:,}")
        rank = features.derived(("rank",), lambda: _inverse(features.order))
        # Each tile's row once, however often it is named.
        rows = np.unique(rank[positions])
    if cell_terms is None:
        cell_terms = _derive_cell_terms(cell_vectors, geometry, features, tint)
    searched_cells: np.ndarray | None = None
    twin_of = cell_sizes = None
    if cell_terms.alike is not None and count > 1:
        _, searched_cells, twin_of = np.unique(cell_terms.alike, return_index=True,
                                               return_inverse=True)
        if len(searched_cells) == count:
            searched_cells = twin_of = None
    if searched_cells is None:
        search = _ExactSearch(cell_vectors, tiles, geometry, features, k, hundredths, price,
                              limit, upper, cell_terms, rows)
    else:
        # Identical cells searched once: each searched cell stands for its twins, with the
        # loosest of their limits and uppers (each upper bounds the same k-th best), and
        # each twin's own limit is applied to the copy of the result (:meth:`_ExactSearch.
        # spread`), which is then exactly what its own search returns.
        assert twin_of is not None
        twin_of = twin_of.ravel()
        cell_sizes = np.bincount(twin_of)
        search = _ExactSearch(cell_vectors[searched_cells], tiles, geometry, features, k,
                              hundredths, price, _loosest(limit, twin_of, len(searched_cells)),
                              _loosest(upper, twin_of, len(searched_cells)),
                              cell_terms.take(searched_cells), rows)
    workers = min(worker_count(), -(-len(search.cell_rows) // search.coarse_shape[1]))
    bounded = 0
    searched: Iterator[tuple[int, int]]
    with progress_bar(len(cell_vectors), "matching", unit="cell", enabled=show_progress) as bar, \
            ExitStack() as stack:
        if workers <= 1:
            evaluated = search.seed_pass()
            search.coarse_rows()
            groups = search.groups()
            searched = map(search.search_group, groups)
        else:
            # Blocks and groups hold disjoint cells, so threads never write the same
            # entries. One BLAS thread each: these small products do not split well,
            # and the comparisons and gathers around them (which release the GIL) run
            # in parallel too.
            stack.enter_context(one_blas_thread())
            executor = thread_pool(workers)
            evaluated = search.seed_pass(workers, executor.map)
            search.coarse_rows()
            groups = search.groups()
            searched = executor.map(search.search_group, groups)
        for cells, (group_evaluated, group_bounded) in zip(groups, searched, strict=True):
            evaluated += group_evaluated
            bounded += group_bounded
            bar.update(len(cells) if cell_sizes is None else int(cell_sizes[cells].sum()))
    if twin_of is not None:
        search.spread(twin_of, limit)
    return search.result(evaluated, bounded, search_units)


def _loosest(values: np.ndarray | None, group: np.ndarray, groups: int) -> np.ndarray | None:
    """The largest of ``values`` in each of ``groups`` (``group``: each value's), or None."""
    if values is None:
        return None
    loosest = np.full(groups, np.iinfo(np.int64).min, np.int64)
    np.maximum.at(loosest, group, values)
    return loosest


def _checked_per(parameter: str, values: np.ndarray | None, count: int | None, each: str
                 ) -> np.ndarray | None:
    """``values`` as an int64 array of ``count`` entries (any count when None), or raise.

    Floats (a NaN price gave cells no tile at all), other lengths (failed
    deep in NumPy) and more axes are refused by name.
    """
    if values is None:
        return None
    array = np.asarray(values)
    if array.dtype.kind not in "iu" or array.ndim != 1 or (count is not None
                                                           and len(array) != count):
        wanted = ("whole numbers" if count is None
                  else f"{counted(count, 'whole number')}, one a {each}")
        raise OptionError("{" + parameter + "} must be {wanted}, got shape {shape} of {dtype}",
                          wanted=wanted, shape=array.shape, dtype=array.dtype.name)
    return array.astype(np.int64, copy=False)


def _inverse(order: np.ndarray) -> np.ndarray:
    """The permutation that undoes ``order``: ``_inverse(order)[order[k]] == k``."""
    inverse = np.empty(len(order), np.int64)
    inverse[order] = np.arange(len(order))
    return inverse


def dense_distances(
    cell_vectors: np.ndarray,
    tiles: np.ndarray,
    geometry: Geometry,
    features: TileFeatures,
    tint: float = 0.0,
) -> np.ndarray:
    """Every cell-tile distance, exactly, in search units: ``(N, M)`` int64.

    For problems that need them all (every tile must be used: each tile's
    nearest cells). The dot products ``<a, S_b>`` are float64 GEMMs, exact
    because every partial sum is an integer far below ``2^53``; the rest is
    integer arithmetic as in :func:`exact_distances` (and the tint's
    correction as in :func:`match_exact`).

    Parameters
    ----------
    cell_vectors, tiles, geometry, features, tint
        As for :func:`match_exact`.
    """
    hundredths = _tint_hundredths(tint, geometry)
    count, tile_count = len(cell_vectors), len(tiles)
    weight = geometry.weight
    pooled = (features.pooled if features.pooled is not None
              else tiles.reshape(tile_count, -1))
    flat = _rows(cell_vectors)
    cell_norm2 = np.einsum("ij,ij->i", flat, flat, dtype=np.int64)
    scale = search_scale(geometry, tint)
    factor = 2 * hundredths * _TINT_STEPS - hundredths * hundredths
    cell_sums = _channel_sums(flat.reshape(count, flat.shape[1] // 3, 3)) * weight
    alike = (alike_under_full_tint(cell_vectors, cell_sums // weight, cell_norm2)
             if hundredths == _TINT_STEPS else alike_cells(cell_vectors, cell_sums, cell_norm2))
    distinct, twin_of = np.unique(alike, return_inverse=True)
    if len(distinct) < count:
        # Identical cells (a flat target's; at full tint, cells a colour apart) have
        # identical rows: each computed once.
        return dense_distances(cell_vectors[distinct], tiles, geometry, features,
                               tint)[twin_of.ravel()]
    tile_sums = features.channel_sums
    out = np.empty((count, tile_count), np.int64)
    # Tiles in chunks: their float64 copy stays small whatever the library.
    tile_step = max(1, (64 << 20) // (8 * pooled.shape[1]))
    # Cells in chunks too, each block and the cells' float64 copy small (first-touch
    # page faults of half a gigabyte per block cost more than the GEMM's larger shapes).
    cell_step = max(1, (64 << 20) // (8 * max(1, min(tile_step, tile_count), flat.shape[1])))
    for tile_start in range(0, tile_count, tile_step):
        part = slice(tile_start, min(tile_count, tile_start + tile_step))
        sums64 = np.asarray(pooled[part], np.float64)
        for cell_start in range(0, count, cell_step):
            cells = slice(cell_start, min(count, cell_start + cell_step))
            dots = np.rint(flat[cells].astype(np.float64) @ sums64.T).astype(np.int64)
            block = weight * cell_norm2[cells, None] - 2 * dots + features.norm2[None, part]
            if hundredths and not tint_correction(block, scale, factor, cell_sums[cells],
                                                  tile_sums[part]):
                block *= scale
                block -= factor * _squared_differences(cell_sums[cells], tile_sums[part])
            out[cells, part] = block
    return out


def _squared_differences(cell_sums: np.ndarray, tile_sums: np.ndarray) -> np.ndarray:
    """``(N, M)`` int64 ``|a_i - b_j|^2`` of the rows of two int64 arrays, exactly.

    As ``|a|^2 + |b|^2 - 2 <a, b>`` with the products a float64 GEMM where
    every partial sum is an integer below ``2^53`` (then exact), else the
    differences themselves (an ``(N, M, C)`` array).
    """
    largest = max(int(np.abs(cell_sums).max(initial=0)), 1) * max(
        int(np.abs(tile_sums).max(initial=0)), 1)
    if largest * cell_sums.shape[1] < 1 << 52:
        dots = np.rint(cell_sums.astype(np.float64) @ tile_sums.T.astype(np.float64))
        cell_norm = np.einsum("ij,ij->i", cell_sums, cell_sums)
        tile_norm = np.einsum("ij,ij->i", tile_sums, tile_sums)
        squared = cell_norm[:, None] - 2 * dots.astype(np.int64)
        squared += tile_norm[None, :]
        return squared
    difference = cell_sums[:, None, :] - tile_sums[None, :, :]
    return np.einsum("ijc,ijc->ij", difference, difference)


def pair_distances(
    cell_vectors: np.ndarray,
    tiles: np.ndarray,
    geometry: Geometry,
    features: TileFeatures,
    cells: np.ndarray,
    candidates: np.ndarray,
    tint: float = 0.0,
) -> np.ndarray:
    """Distances of the pairs ``(cells[p], candidates[p])``, exactly, in search units.

    The same arithmetic as :func:`dense_distances` for a list of pairs (the
    few that a bound could not settle), gathered in bounded chunks.

    Parameters
    ----------
    cell_vectors, tiles, geometry, features, tint
        As for :func:`match_exact`.
    cells, candidates : numpy.ndarray
        ``(P,)`` indices into ``cell_vectors`` and ``tiles``.

    Returns
    -------
    numpy.ndarray
        ``(P,)`` int64 distances.
    """
    hundredths = _tint_hundredths(tint, geometry)
    weight = geometry.weight
    pooled = features.pooled if features.pooled is not None else tiles.reshape(len(tiles), -1)
    scale = search_scale(geometry, tint)
    factor = 2 * hundredths * _TINT_STEPS - hundredths * hundredths
    cells = np.asarray(cells, np.int64)
    candidates = np.asarray(candidates, np.int64)
    # Only the cells named are converted: a pricing round asks for a few of many.
    named, local = np.unique(cells, return_inverse=True)
    flat = _rows(cell_vectors[named])
    # Summed in int64 without a wide copy, and the pairs' rows gathered as they are:
    # on 30,000 cells of 3,072 values the int64 copies took 7 s (fresh memory).
    norm2 = np.einsum("ij,ij->i", flat, flat, dtype=np.int64)
    out = exact_distances(flat, norm2, pooled, features.norm2, weight, local, candidates)
    if hundredths:
        sums = flat.reshape(len(named), flat.shape[1] // 3, 3).sum(axis=1, dtype=np.int64) * weight
        difference = sums[local] - features.channel_sums[candidates]
        out = out * scale - factor * np.einsum("ic,ic->i", difference, difference)
    return out


def search_scale(geometry: Geometry, tint: float) -> int:
    """Search units per objective unit: ``n * 100^2`` when tinting (``n`` tile pixels), else 1."""
    if _tint_hundredths(tint, geometry):
        return geometry.pixels * _TINT_STEPS * _TINT_STEPS
    return 1


def brute_force(cells: np.ndarray, tiles: np.ndarray, match_px: int | None = None
                ) -> MatchResult:
    """Reference search: integer arithmetic over every tile pixel, no shortcuts.

    Each ``(cell_height, cell_px)`` cell is brought to the tiles' size
    exactly as the objective defines (pixel replication when the tile is the
    same whole multiple of the cell both ways, else area averaging rounded
    to 8 bits) and compared with every tile. For tests and benchmarks on
    small inputs only.

    Parameters
    ----------
    cells : numpy.ndarray
        ``(N, cell_height, cell_px, 3)`` uint8.
    tiles : numpy.ndarray
        ``(M, match_height, match_px, 3)`` uint8.
    match_px : int, optional
        The tiles' width, checked against their shape when given.
    """
    cells = np.asarray(cells)
    if cells.ndim != 4 or len(np.shape(tiles)) != 4:
        raise OptionError("{cells} and {tiles} must be (count, height, width, 3) pixels, got "
                          "shapes {cell_shape} and {tile_shape}", cell_shape=cells.shape,
                          tile_shape=np.shape(tiles))
    cell_height, cell_px = cells.shape[1:3]
    match_height, width = np.shape(tiles)[1:3]
    if match_px is not None and match_px != width:
        raise ValueError(f"tiles are {width} px wide, not {match_px}")
    geometry = Geometry(cell_px, width, cell_height, match_height)
    cells = checked_pixels("cells", cells, geometry.cell_shape, "cells of the grid")
    tiles = checked_pixels("tiles", tiles, geometry.match_shape,
                           f"tiles of {width}x{match_height} px")
    vectors = geometry.cell_vectors(cells)
    factor = geometry.factor
    length = geometry.pixels * 3
    kind = np.int32 if length * 255 * 255 < 2**31 else np.int64
    upscaled: np.ndarray = vectors.repeat(factor, axis=1).repeat(factor, axis=2).astype(kind)
    flat_tiles: np.ndarray = _rows(np.asarray(tiles)).astype(kind)
    best_tile = np.empty(len(cells), np.int64)
    best_distance = np.empty(len(cells), np.int64)
    for index, cell in enumerate(_rows(upscaled)):
        difference = flat_tiles - cell
        distances = np.einsum("ij,ij->i", difference, difference, dtype=kind)
        best_tile[index] = int(np.argmin(distances))
        best_distance[index] = distances[best_tile[index]]
    return MatchResult(best_tile, best_distance, len(cells) * len(tiles))


class ExactMatcher(Matcher):
    """The true minimum of the objective for every cell, on the CPU (:func:`match_exact`)."""

    name = "exact"

    def match(self, request: MatchRequest) -> MatchResult:
        options = request.options
        if not options.contrast:
            return match_exact(request.cell_vectors, request.candidates, request.geometry,
                               request.features, request.show_progress, tint=options.tint)
        from ._contrast import CANDIDATES, best_after_transfer

        found = match_exact(request.cell_vectors, request.candidates, request.geometry,
                            request.features, request.show_progress,
                            k=max(2, CANDIDATES * request.variants), tint=options.tint)
        return best_after_transfer(request, found)
