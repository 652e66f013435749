"""Compiled loops for the exact search's pair evaluations (Numba, extra ``fast``).

The exact search (:mod:`._exact`) evaluates a few hundred (cell, tile)
pairs per cell, scattered: each pair is one integer dot product ``<a, S_b>``
of a cell row and a tile row chosen by index. NumPy can only gather the rows
into temporary arrays and reduce them (``einsum``), which spends more time
moving bytes than multiplying, and does not vectorise integer sums of
products. A compiled loop reads both rows in place and accumulates in
registers: 10-12x faster on the seed workload (768 values per pair).

The results are the same integers either way. Without Numba installed, or
with :data:`USE_NUMBA` set to False, the NumPy path runs.

Loading Numba and the compiled loops costs about 0.8 s per process, as long
as NumPy takes for some 700 million values: a search that evaluates fewer
(the plain nearest-tile search of a postcard-sized mosaic) is faster
without them. So the NumPy path runs until the values evaluated reach
:data:`COMPILE_AFTER_VALUES`, or one call brings :data:`COMPILE_AT_ONCE`
(a search that asks for many candidates per cell), and the compiled loops
from then on: at worst about twice the cost of the better choice, the bound
of renting before buying.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np

#: Whether to use the compiled loops where Numba is installed: None decides by
#: the values evaluated (see above); True and False force them (tests).
USE_NUMBA: bool | None = None
#: Values gathered at a time by the NumPy path (bounds its temporary arrays).
GATHER_BUDGET = 1 << 22
#: Values evaluated by NumPy after which the compiled loops are loaded (about 0.5 s).
COMPILE_AFTER_VALUES = 1 << 29
#: Values in one call that load the compiled loops at once.
COMPILE_AT_ONCE = 1 << 24

#: Distances tint-corrected by NumPy after which the compiled loops are loaded (about 0.8 s).
COMPILE_AFTER_TINTED = 1 << 24

_evaluated_by_numpy = 0
_tinted_by_numpy = 0


def pair_dots(
    cell_rows: np.ndarray,
    tile_rows: np.ndarray,
    cell_index: np.ndarray,
    tile_index: np.ndarray,
    accumulate: type,
) -> np.ndarray:
    """Integer dot products ``<cell_rows[i], tile_rows[j]>`` for each pair, as int64.

    Parameters
    ----------
    cell_rows, tile_rows : numpy.ndarray
        ``(N, n)`` and ``(M, n)`` arrays of non-negative integers (``tile_rows``
        may be memory-mapped).
    cell_index, tile_index : numpy.ndarray
        ``(P,)`` integer row indices of the pairs.
    accumulate : type
        For the NumPy path: ``np.int32`` when no sum of ``n`` products can
        overflow it (faster), else ``np.int64``. The compiled loop sums in
        int64 (as fast there).

    Returns
    -------
    numpy.ndarray
        ``(P,)`` int64 dot products, exact.
    """
    global _evaluated_by_numpy
    out = np.empty(len(cell_index), np.int64)
    if len(out) == 0:
        return out
    values = len(out) * cell_rows.shape[1]
    kernel = None
    if cell_rows.dtype.kind in "iu" and tile_rows.dtype.kind in "iu" and _compiling(values):
        kernel = _compiled_loop(_pair_dots)
    if kernel is not None and _ran(kernel, np.asarray(cell_rows), np.asarray(tile_rows),
                                   np.asarray(cell_index, np.int64),
                                   np.asarray(tile_index, np.int64), out):
        return out
    # Unlocked: a count lost between threads only delays the switch.
    _evaluated_by_numpy += values
    per_batch = max(1, GATHER_BUDGET // cell_rows.shape[1])
    for start in range(0, len(out), per_batch):
        stop = start + per_batch
        out[start:stop] = np.einsum(
            "ij,ij->i", cell_rows[cell_index[start:stop]].astype(accumulate, copy=False),
            np.asarray(tile_rows[tile_index[start:stop]]).astype(accumulate),
            dtype=accumulate,
        )
    return out


def merge_sorted(
    best_distance: np.ndarray,
    best_tile: np.ndarray,
    cells: np.ndarray,
    tiles: np.ndarray,
    distances: np.ndarray,
) -> bool:
    """Insert pairs into each cell's sorted ``k`` best, compiled; False where it cannot run.

    ``best_distance`` and ``best_tile`` are ``(N, k)`` int64, each row sorted
    by distance then tile, unset entries int64 max. A pair enters its cell's
    row unless it ranks after the ``k``-th or its tile is already there (the
    same pair evaluated twice has the same distance). The caller keeps a
    NumPy path for when this returns False.
    """
    # Loaded with the pair loops: the merge alone is not worth the load.
    kernel = _compiled_loop(_merge_sorted) if _compiling(0) else None
    return kernel is not None and _ran(
        kernel, best_distance, best_tile, np.asarray(cells, np.int64),
        np.asarray(tiles, np.int64), np.asarray(distances, np.int64))


def channel_moments(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel sums and sums of squares of ``(N, P, C)`` uint8 rows, compiled; or None.

    None where the compiled loops do not run (see :func:`pair_dots`): the
    caller sums with NumPy. Both are ``(N, C)`` int64, exact.
    """
    if pixels.dtype != np.uint8 or not _compiling(pixels.size):
        return None
    kernel = _compiled_loop(_channel_moments)
    count, channels = pixels.shape[0], pixels.shape[2]
    sums = np.empty((count, channels), np.int64)
    squares = np.empty((count, channels), np.int64)
    if kernel is None or not _ran(kernel, np.ascontiguousarray(pixels), sums, squares):
        return None
    return sums, squares


def channel_pair_dots(cell_pixels: np.ndarray, tile_rows: np.ndarray, cell_index: np.ndarray,
                      tile_index: np.ndarray) -> np.ndarray | None:
    """Per-channel dot products of pairs of ``(N, P, C)`` and ``(M, P, C)`` rows; or None.

    ``out[k, c] = sum_p cell_pixels[cell_index[k], p, c] * tile_rows[tile_index[k], p, c]``
    as ``(K, C)`` int64, exact, for non-negative integer rows; None where the
    compiled loops do not run (the caller computes them with NumPy).
    """
    if (cell_pixels.dtype.kind not in "iu" or tile_rows.dtype.kind not in "iu"
            or not _compiling(len(cell_index) * cell_pixels[0].size)):
        return None
    kernel = _compiled_loop(_channel_pair_dots)
    out = np.empty((len(cell_index), cell_pixels.shape[2]), np.int64)
    if kernel is None or not _ran(kernel, np.ascontiguousarray(cell_pixels),
                                  np.ascontiguousarray(tile_rows),
                                  np.asarray(cell_index, np.int64),
                                  np.asarray(tile_index, np.int64), out):
        return None
    return out


def tint_correction(block: np.ndarray, scale: int, factor: int, cell_sums: np.ndarray,
                    tile_sums: np.ndarray) -> bool:
    """``block = scale * block - factor * |a_i - b_j|^2`` in place, compiled; False where not.

    ``block`` is ``(N, M)`` int64, ``cell_sums`` and ``tile_sums`` ``(N, C)``
    and ``(M, C)`` int64 (``a`` and ``b``): the tint's correction of a dense
    block of distances (:func:`~mosaicist.match._exact.dense_distances`), the
    same integers as NumPy's in one pass over the block where NumPy makes
    about ten (the correction took two thirds of the distances' time). The
    caller keeps its NumPy path for when this returns False: without Numba,
    or until the blocks so corrected reach :data:`COMPILE_AFTER_TINTED`.
    """
    global _tinted_by_numpy
    loaded = _compiled_loop.cache_info().currsize > 0
    if USE_NUMBA is False or not numba_available() or (
            USE_NUMBA is None and not loaded
            and _tinted_by_numpy + block.size < COMPILE_AFTER_TINTED):
        _tinted_by_numpy += block.size
        return False
    kernel = _compiled_loop(_tint_correction)
    return kernel is not None and _ran(
        kernel, block, np.int64(scale), np.int64(factor),
        np.ascontiguousarray(cell_sums, np.int64), np.ascontiguousarray(tile_sums, np.int64))


def _ran(kernel: Callable[..., None], *arguments: np.ndarray | np.integer) -> bool:
    """Run a compiled loop; False, and NumPy from then on, where Numba cannot compile it.

    An accelerator that fails (a Numba that cannot type these arrays, or
    its compiler missing on this machine) must cost speed, not the mosaic.
    """
    global USE_NUMBA
    try:
        kernel(*arguments)
    except _numba().core.errors.NumbaError as error:
        warnings.warn(f"Numba could not compile the search's loops ({error}); "
                      "using NumPy's", RuntimeWarning, stacklevel=3)
        USE_NUMBA = False
        return False
    return True


def _compiling(values: int) -> bool:
    """Whether a call bringing ``values`` values runs compiled (see the module's notes)."""
    if USE_NUMBA is None:
        return (_compiled_loop.cache_info().currsize > 0
                or _evaluated_by_numpy + values >= COMPILE_AFTER_VALUES
                or values >= COMPILE_AT_ONCE)
    return USE_NUMBA


@cache
def numba_available() -> bool:
    """Whether the compiled loops can run (Numba installed).

    Looked up without importing it: the import alone takes about 0.4 s,
    which a search that then stays below :data:`COMPILE_AFTER_VALUES` (the
    approximate search's re-rank) would pay for nothing. An installation
    that is found but fails to import leaves the loops None, and the
    NumPy paths run.
    """
    return importlib.util.find_spec("numba") is not None


def compiled_loops_loaded() -> bool:
    """Whether some compiled loop is loaded in this process (Numba's import already paid)."""
    return _compiled_loop.cache_info().currsize > 0


def compiled_loops_allowed() -> bool:
    """Whether the compiled loops may run: Numba importable and not turned off."""
    return USE_NUMBA is not False and numba_available()


@cache
def _numba() -> Any:
    try:
        import numba
    except ImportError:
        return None
    return numba


@cache
def _compiled_loop(loop: Callable[..., None]) -> Callable[..., None] | None:
    """``loop`` compiled on first use, or None without Numba.

    nogil: the search calls the loops from its worker threads; cache: each is
    compiled once per installation, later processes load it.
    """
    numba = _numba()
    if numba is None:
        return None
    compiled: Callable[..., None]
    try:
        compiled = numba.njit(nogil=True, cache=True)(loop)
    except RuntimeError:
        # No folder to cache in (a read-only installation and home): compiled
        # in every process instead, a second or two more.
        compiled = numba.njit(nogil=True)(loop)
    return compiled


def _merge_sorted(best_distance: Any, best_tile: Any, cells: Any, tiles: Any,
                  distances: Any) -> None:  # pragma: no cover - runs compiled
    k = best_distance.shape[1]
    for pair in range(cells.shape[0]):
        cell, tile, distance = cells[pair], tiles[pair], distances[pair]
        row_distance, row_tile = best_distance[cell], best_tile[cell]
        last = k - 1
        if distance > row_distance[last] or (
                distance == row_distance[last] and tile >= row_tile[last]):
            continue
        # Its place: after every entry ranking before it; a duplicate ranks equal.
        place = 0
        while place < k and (row_distance[place] < distance or (
                row_distance[place] == distance and row_tile[place] < tile)):
            place += 1
        if row_distance[place] == distance and row_tile[place] == tile:
            continue
        for moved in range(last, place, -1):
            row_distance[moved] = row_distance[moved - 1]
            row_tile[moved] = row_tile[moved - 1]
        row_distance[place] = distance
        row_tile[place] = tile


def _pair_dots(cell_rows: Any, tile_rows: Any, cell_index: Any, tile_index: Any,
               out: Any) -> None:  # pragma: no cover - runs compiled
    # int64 sums: as fast as int32 ones in this loop, and never overflow here.
    length = cell_rows.shape[1]
    for pair in range(cell_index.shape[0]):
        cell = cell_rows[cell_index[pair]]
        tile = tile_rows[tile_index[pair]]
        total = np.int64(0)
        for value in range(length):
            total += np.int64(cell[value]) * np.int64(tile[value])
        out[pair] = total


def _channel_moments(pixels: Any, sums: Any, squares: Any) -> None:  # pragma: no cover
    channels = pixels.shape[2]
    for row in range(pixels.shape[0]):
        for channel in range(channels):
            sums[row, channel] = 0
            squares[row, channel] = 0
        for pixel in range(pixels.shape[1]):
            for channel in range(channels):
                value = np.int64(pixels[row, pixel, channel])
                sums[row, channel] += value
                squares[row, channel] += value * value


def _channel_pair_dots(cell_pixels: Any, tile_rows: Any, cell_index: Any, tile_index: Any,
                       out: Any) -> None:  # pragma: no cover - runs compiled
    channels = cell_pixels.shape[2]
    for pair in range(cell_index.shape[0]):
        cell = cell_pixels[cell_index[pair]]
        tile = tile_rows[tile_index[pair]]
        for channel in range(channels):
            out[pair, channel] = 0
        for pixel in range(cell.shape[0]):
            for channel in range(channels):
                out[pair, channel] += np.int64(cell[pixel, channel]) * np.int64(
                    tile[pixel, channel])


def _tint_correction(block: Any, scale: Any, factor: Any, cell_sums: Any,
                     tile_sums: Any) -> None:  # pragma: no cover - runs compiled
    channels = cell_sums.shape[1]
    for row in range(block.shape[0]):
        for column in range(block.shape[1]):
            squared = np.int64(0)
            for channel in range(channels):
                difference = cell_sums[row, channel] - tile_sums[column, channel]
                squared += difference * difference
            block[row, column] = scale * block[row, column] - factor * squared
