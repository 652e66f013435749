"""Per-tile features of the exact search, and the lower bound they give.

For a compared cell vector ``a`` and tile ``b`` (see :class:`~mosaicist.grid.Geometry`)
the objective is ``D(a, b) = w |a|^2 - 2 <a, S_b> + |b|^2``, an integer, where
``S_b`` are the tile's block sums and ``w`` the pixels per block.

Writing ``P_b = S_b / w`` and ``c_b = |b|^2 - |S_b|^2 / w`` (the tile's
within-block variation), ``D = w |a - P_b|^2 + c_b``. The compared pixels
are grouped into a grid of blocks (:class:`BoundGrid`): for a block ``G`` of
``n_G`` pixels, ``sum_G |a - P_b|^2 >= n_G |mean_G(a) - mean_G(P_b)|^2``.
With ``x_G = sqrt(n_G / n) mean_G`` (``n`` the mean block size) this is
``LB = w n |Q (x(a) - x(P_b))|^2 + c_b <= D`` for any orthonormal projection
``Q``; when all blocks have the same size (``s x s``, or ``s_r x s_c`` on a
rectangle), ``x`` is the block means and the scale ``w s^2``. ``Q`` holds
the top principal components (PCA) of the library, fitted once and cached
with the features; keeping fewer components gives a weaker bound that is
cheaper to compute. Each bound is one float32 GEMM on augmented rows
(:class:`TileFeatures` ``bound`` and :func:`cell_bound_rows`), loosened by a
margin far above float32's rounding error for these magnitudes.

**What the components do not see.** In the compared space, a vector ``v``
(a cell ``a``, or a tile's block means ``P_b``) splits into its part in the
span of the components and the rest ``z(v)``: the block means' PCA tail and
the variation within each block, in orthogonal subspaces, so that
``|a - P_b|^2 = n |Q (x(a) - x(P_b))|^2 + |z(a) - z(P_b)|^2`` and, by the
triangle inequality, ``|z(a) - z(P_b)|^2 >= (|z(a)| - |z(P_b)|)^2``. With the
*tail norms* ``t(v) = |z(v)|``, ``t^2 = |v|^2 - n |x(v)|^2 + n (|x(v) - mu|^2
- |Q (x(v) - mu)|^2)`` (``mu`` the PCA centre), ``LB + w (t(a) - t(P_b))^2 <= D``
too: two more columns in the GEMM (``-2 w t(a)`` against ``t(P_b)``, and
``1`` against ``w t(P_b)^2``; ``w t(a)^2`` joins the row term). It is
nearly exact where one side is flat (a sky cell, whose ``t`` is small,
against textured tiles), which is where the components alone bound worst.
The tiles' columns are stored with their bound rows, so that a search of
a memory-mapped library reads them in place.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._runtime import OrderedJobs, one_blas_thread, release_pages, worker_count
from ..errors import OptionError, counted
from ..grid import Geometry
from ..paths import (
    STORED_ARRAY_ERRORS,
    atomic_folder,
    build_lock,
    mark_used,
    remove_older_generations,
    reserve_space,
)
from ..progress import progress_bar

#: Tiles per chunk while computing features.
FEATURE_CHUNK = 4096

#: Principal components kept for the bound: 256 (against 128, a third of the exact
#: evaluations and half the search time on the seed's workload, capped searches more),
#: and 128 for libraries past LARGE_LIBRARY tiles, whose bound rows would take 1 GB.
BOUND_DIMENSIONS = 256
LARGE_LIBRARY_DIMENSIONS = 128
LARGE_LIBRARY = 262_144


def bound_dimensions(tile_count: int) -> int:
    """Principal components the bound of a library of ``tile_count`` tiles keeps."""
    return BOUND_DIMENSIONS if tile_count <= LARGE_LIBRARY else LARGE_LIBRARY_DIMENSIONS
#: Most blocks along a side of the block-mean grid the bound is computed on.
BOUND_GRID = 16
#: Relative slack of the float32 bound (worst-case rounding is below 1e-6 here).
BOUND_SLACK = 5e-5
#: Tiles used to fit the principal components.
PCA_SAMPLE = 16384

FEATURES_VERSION = 6
#: A features cache entry (of any version), with its library generation.
_ENTRY = re.compile(r"v\d+-.*-g(?P<generation>\d+)-n\d+-.*")
#: Columns of a bound row after the components: ``[row term, 1]`` (cells) or
#: ``[1, column term]`` (tiles), then the tail norms' two (see the module).
BOUND_TERMS = 4
#: Cells whose bound rows are computed at once: the float64 copies made on the way
#: stay a few megabytes (larger blocks measured slower: fresh pages, out of cache).
CELL_BLOCK = 1024


def bound_step(side: int) -> int:
    """Return the smallest step ``s`` dividing ``side`` with at most ``BOUND_GRID`` blocks."""
    for step in range(1, side + 1):
        if side % step == 0 and side // step <= BOUND_GRID:
            return step
    return side


def _axis_edges(length: int) -> tuple[int, ...]:
    """Block edges along one side of ``length`` compared pixels.

    Equal blocks of :func:`bound_step` where they give at least half of the
    blocks the side can have (as for the sides of every usual size), else
    ``min(length, BOUND_GRID)`` blocks of nearly equal sizes (a prime side,
    such as the 43 px height of a 64 px wide 3:2 tile, would otherwise be
    one block).
    """
    step = bound_step(length)
    most = min(length, BOUND_GRID)
    if length // step >= most // 2:
        return tuple(range(0, length + 1, step))
    return tuple(int(edge) for edge in np.arange(most + 1) * length // most)


@dataclass(frozen=True)
class BoundGrid:
    """The blocks whose means the bound compares: a grid of row and column bands.

    Attributes
    ----------
    row_edges, col_edges : tuple of int
        Band edges along the height and the width of the compared vectors,
        from 0 to the side.
    """

    row_edges: tuple[int, ...]
    col_edges: tuple[int, ...]

    @classmethod
    def of(cls, geometry: Geometry) -> BoundGrid:
        """The block grid for ``geometry``'s compared vectors."""
        height, width = geometry.shape
        return cls(_axis_edges(height), _axis_edges(width))

    @property
    def shape(self) -> tuple[int, int]:
        """``(row bands, column bands)``."""
        return len(self.row_edges) - 1, len(self.col_edges) - 1

    @property
    def steps(self) -> tuple[int, int] | None:
        """``(row step, column step)`` when every block has the same size, else None."""
        found = []
        for edges in (self.row_edges, self.col_edges):
            sizes = set(np.diff(edges).tolist())
            if len(sizes) != 1:
                return None
            found.append(sizes.pop())
        return found[0], found[1]

    @property
    def area(self) -> float:
        """Mean block size ``n`` in compared pixels."""
        rows, cols = self.shape
        return self.row_edges[-1] * self.col_edges[-1] / (rows * cols)

    def key(self) -> str:
        """Short text naming the grid (for cache names)."""
        steps = self.steps
        if steps is not None:
            return f"s{steps[0]}x{steps[1]}"
        rows, cols = self.shape
        return f"b{rows}x{cols}"

    def means(self, vectors: np.ndarray) -> np.ndarray:
        """``(k, h, w, 3)`` -> ``(k, n')`` float64 block values ``x_G`` (see the module)."""
        count = len(vectors)
        steps = self.steps
        if steps == (1, 1):
            return vectors.reshape(count, -1).astype(np.float64)
        if steps is not None:
            rows, cols = self.shape
            return (
                vectors.reshape(count, rows, steps[0], cols, steps[1], 3)
                .mean(axis=(2, 4), dtype=np.float64)
                .reshape(count, -1)
            )
        row_sizes = np.diff(self.row_edges)
        col_sizes = np.diff(self.col_edges)
        # x_G = sum_G / sqrt(n_G * n): the mean scaled by sqrt(n_G / n).
        divisor = np.sqrt(np.outer(row_sizes, col_sizes) * self.area)[None, :, :, None]
        out = np.empty((count, len(row_sizes) * len(col_sizes) * 3), np.float64)
        # Bounded temporaries: the row sums are float64 copies of a few vectors.
        block = max(1, (1 << 22) // max(1, vectors[0].size))
        for start in range(0, count, block):
            part = np.asarray(vectors[start:start + block])
            sums = np.add.reduceat(part, list(self.row_edges[:-1]), axis=1, dtype=np.float64)
            sums = np.add.reduceat(sums, list(self.col_edges[:-1]), axis=2)
            out[start:start + len(part)] = (sums / divisor).reshape(len(part), -1)
        return out


#: Derived arrays :meth:`TileFeatures.derived` keeps (tinted bound, coarse bound, the rank
#: of each tile in the bound's order).
DERIVED_KEPT = 5


@dataclass
class TileFeatures:
    """Per-tile quantities the search needs, computed once per library and geometry.

    Attributes
    ----------
    mean : numpy.ndarray
        ``(n',)`` float64 mean of the block-mean vectors (PCA centre).
    basis : numpy.ndarray
        ``(d, n')`` float32 orthonormal rows (principal components).
    bound : numpy.ndarray
        ``(M, d + 4)`` float32 rows ``[Q m_b, 1, column term, t_b, w t_b^2]``
        (``t`` the tail norm, see the module): one GEMM with the cells' rows
        ``[-2 k Q m_a, row term, 1, -2 w t_a, 1]`` gives the loosened bound.
        Rows are sorted by the first principal component (row ``k`` belongs
        to tile ``order[k]``), so that the tiles a cell can still use lie in
        one contiguous window.
    order : numpy.ndarray
        ``(M,)`` int64 library position of each row of ``bound``.
    residual : numpy.ndarray
        ``(M,)`` float64 ``c_b`` in the order of ``bound``.
    norm2 : numpy.ndarray
        ``(M,)`` int64 ``|b|^2`` over the tile's pixels.
    channel_sums : numpy.ndarray
        ``(M, 3)`` int64 sum of each channel over the tile's pixels (for tint).
    tail_norm : numpy.ndarray
        ``(M,)`` float64 tail norm ``t(P_b)`` (see the module) in the order
        of ``bound``.
    pooled : numpy.ndarray or None
        ``(M, n)`` block sums ``S_b`` (uint16, or uint32 for blocks over
        16 x 16); None when the factor is 1 and the tiles themselves serve.
    """

    mean: np.ndarray
    basis: np.ndarray
    bound: np.ndarray
    order: np.ndarray
    residual: np.ndarray
    norm2: np.ndarray
    channel_sums: np.ndarray
    tail_norm: np.ndarray
    pooled: np.ndarray | None
    #: Rows derived from these for one kind of search, kept for the next (see :meth:`derived`).
    _derived: dict[tuple[object, ...], np.ndarray] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def derived(self, key: tuple[object, ...], build: Callable[[], np.ndarray]) -> np.ndarray:
        """The array ``build()`` makes, made once per ``key`` for these features.

        A repetition-limited assignment searches the library a dozen times
        with the same settings; the tile rows its searches derive from the
        bound (tinted columns, the coarse bound) depend on the settings only,
        and rebuilding them cost over a second per search at 50,000 tiles.
        Only the latest few are kept, so memory stays within a few copies of
        :attr:`bound`.

        Parameters
        ----------
        key : tuple
            Names the array: the kind of rows and every setting they depend on.
        build : callable
            Makes the array, with no arguments; called only when ``key`` is not kept.

        Returns
        -------
        numpy.ndarray
            The kept array, or the one just built.
        """
        found = self._derived.get(key)
        if found is None:
            found = build()
            if len(self._derived) >= DERIVED_KEPT:
                self._derived.pop(next(iter(self._derived)))
            self._derived[key] = found
        return found

    def limit(self, count: int) -> TileFeatures:
        """Features of the first ``count`` tiles.

        Parameters
        ----------
        count : int
            How many tiles to keep, from the start of library order.

        Returns
        -------
        TileFeatures
            Features of those tiles (these features when all are kept).
        """
        if count >= len(self.norm2):
            return self
        keep = self.order < count
        return TileFeatures(
            self.mean, self.basis, self.bound[keep], self.order[keep], self.residual[keep],
            self.norm2[:count], self.channel_sums[:count], self.tail_norm[keep],
            None if self.pooled is None else self.pooled[:count],
        )



def checked_pixels(parameter: str, pixels: Any, shape: tuple[int, int], made_by: str) -> Any:
    """Return ``pixels`` if they are ``(count, *shape, 3)`` uint8, else raise naming ``parameter``.

    The searches read pixels as 8-bit values: wider integers overflowed
    their dot products, and floats, bools or another size failed deep in
    NumPy, or gave picks far from the nearest, without a word. Only the
    shape and type are looked at (a memory-mapped library is not read).

    Parameters
    ----------
    parameter : str
        The argument's name, shown in the message (``"cell_vectors"``, ``"tiles"``).
    pixels : array_like
        The argument: an array, a memory map or a sharded library (anything
        with ``shape`` and ``dtype``); other sequences are made arrays.
    shape : tuple of int
        ``(height, width)`` each item must have.
    made_by : str
        What makes such arrays, named in the message.

    Returns
    -------
    array_like
        ``pixels``, or the array made of a sequence.

    Raises
    ------
    OptionError
        Naming ``parameter``, for another type or shape.
    """
    if not (hasattr(pixels, "shape") and hasattr(pixels, "dtype")):
        try:
            pixels = np.asarray(pixels)
        except (TypeError, ValueError):  # ragged lists and the like
            raise OptionError("{" + parameter + "} must be an array of uint8 pixels, got "
                              "{kind}", kind=type(pixels).__name__) from None
    wanted = (*shape, 3)
    if len(pixels.shape) != 4 or tuple(pixels.shape[1:]) != wanted:
        raise OptionError("{" + parameter + "} must be (count, {height}, {width}, 3) pixels "
                          "for this geometry ({made_by}), got shape {found}",
                          height=shape[0], width=shape[1], made_by=made_by,
                          found=tuple(int(side) for side in pixels.shape))
    if np.dtype(pixels.dtype) != np.uint8:
        raise OptionError("{" + parameter + "} must hold uint8 pixel values (0 to 255), got "
                          "{dtype}", dtype=np.dtype(pixels.dtype).name)
    return pixels


def check_features(features: object, tiles: Any, geometry: Geometry) -> None:
    """Raise unless ``features`` are :class:`TileFeatures` of ``tiles`` under ``geometry``.

    Features of another library, or of the same tiles under another
    geometry, failed deep in NumPy or (of as many tiles, or fewer) gave
    picks of the wrong tiles without a word. The tile count, the widths of
    the rows and the block sums are checked, and the squared norms and
    channel sums of three tiles (the first, middle and last) against their
    pixels: a few reads, whatever the library's size.

    Parameters
    ----------
    features : object
        What was passed as the features.
    tiles : array_like
        ``(M, match_height, match_px, 3)`` uint8, already checked (:func:`checked_pixels`).
    geometry : Geometry
        How cells and tiles are compared.

    Raises
    ------
    OptionError
        Naming ``features``, saying what does not fit.
    """
    if not isinstance(features, TileFeatures):
        raise OptionError("{features} must be TileFeatures (from compute_features), got "
                          "{kind}", kind=type(features).__name__)
    count = len(tiles)
    held = len(features.norm2)
    if not held == len(features.bound) == len(features.order) == len(features.channel_sums):
        raise OptionError("{features} are damaged: their arrays describe different numbers "
                          "of tiles")
    if held != count:
        raise OptionError("{features} describe {held} but {tiles} holds {count}: compute "
                          "them for these tiles", held=counted(held, "tile"),
                          count=counted(count, "tile"))
    rows, cols = BoundGrid.of(geometry).shape
    pooled = features.pooled
    pooled_fits = (pooled is None if geometry.factor == 1
                   else pooled is not None and tuple(pooled.shape) == (count, geometry.length))
    if (features.basis.ndim != 2 or features.basis.shape[1] != rows * cols * 3
            or features.bound.shape[1] != len(features.basis) + BOUND_TERMS or not pooled_fits):
        raise OptionError("{features} were computed for another {geometry} than this one "
                          "({value}): compute them for it", value=_shown(geometry))
    for position in sorted({0, count // 2, count - 1}):
        tile = np.asarray(tiles[position]).reshape(-1, 3)
        norm2 = np.einsum("ij,ij->", tile, tile, dtype=np.int64)
        sums = tile.sum(axis=0, dtype=np.int64)
        if (norm2 != features.norm2[position]
                or not np.array_equal(sums, features.channel_sums[position])):
            raise OptionError("{features} are not those of {tiles}: tile {position} differs "
                              "from the one they were computed from; compute them for these "
                              "tiles", position=f"{position:,}")


def checked_search(cell_vectors: Any, tiles: Any, geometry: object, features: object | None
                   ) -> tuple[Any, Any]:
    """The arguments of a search checked (:func:`checked_pixels`, :func:`check_features`).

    Parameters
    ----------
    cell_vectors, tiles, geometry, features
        As :func:`~mosaicist.match.match_exact` takes them (``features`` None: to compute).

    Returns
    -------
    tuple
        ``cell_vectors`` and ``tiles``, arrays where sequences were given.

    Raises
    ------
    OptionError
        Naming the argument that does not fit.
    """
    if not isinstance(geometry, Geometry):
        raise OptionError("{geometry} must be a Geometry, got {kind}", kind=type(geometry).__name__)
    tiles = checked_pixels("tiles", tiles, geometry.match_shape,
                           f"tiles of {geometry.match_px}x{geometry.match_height} px")
    cell_vectors = checked_pixels("cell_vectors", cell_vectors, geometry.shape,
                                  "Geometry.cell_vectors of the cells")
    if features is not None and len(tiles):
        check_features(features, tiles, geometry)
    return cell_vectors, tiles


def _shown(geometry: Geometry) -> str:
    """``geometry`` as messages show it: ``"4x4 px cells against 8x8 px tiles"``."""
    return (f"{geometry.cell_px}x{geometry.cell_height} px cells against "
            f"{geometry.match_px}x{geometry.match_height} px tiles")


def bound_scale(geometry: Geometry) -> float:
    """The bound's factor ``w n``: tile pixels per compared pixel, times the mean block size."""
    return float(geometry.weight * BoundGrid.of(geometry).area)


def pooled_dtype(geometry: Geometry) -> type:
    """Smallest unsigned type that holds a block sum (uint16 up to 16 x 16 blocks)."""
    return np.uint16 if 255 * geometry.weight <= np.iinfo(np.uint16).max else np.uint32


def _fit_basis(
    tiles: np.ndarray, geometry: Geometry, blocks: BoundGrid
) -> tuple[np.ndarray, np.ndarray]:
    """Principal components of the tiles' block means, from an evenly spaced sample."""
    count = len(tiles)
    sample_index = np.unique(np.linspace(0, count - 1, min(count, PCA_SAMPLE)).astype(np.int64))
    sums = geometry.pool_tiles(np.asarray(tiles[sample_index]))
    sample = blocks.means(sums.astype(np.float64) / geometry.weight)
    mean = sample.mean(axis=0)
    centred = sample - mean
    covariance = centred.T @ centred
    dimensions = min(bound_dimensions(count), covariance.shape[0])
    # At most 768 x 768 (BOUND_GRID): one thread factors it several times faster
    # than OpenBLAS's threads do, which spin against each other on busy cores.
    with one_blas_thread():
        _, vectors = np.linalg.eigh(covariance)
    basis = np.ascontiguousarray(vectors[:, ::-1][:, :dimensions].T)
    return mean, basis


@dataclass
class _TileRows:
    """The per-tile features of some tiles, in their own order (see :class:`TileFeatures`)."""

    bound: np.ndarray
    residual: np.ndarray
    norm2: np.ndarray
    channel_sums: np.ndarray
    tail_norm: np.ndarray
    pooled: np.ndarray


def _tile_rows(
    part: np.ndarray, geometry: Geometry, blocks: BoundGrid, mean: np.ndarray,
    basis: np.ndarray,
) -> _TileRows:
    """The features of the tiles ``part`` under the components ``mean`` and ``basis``.

    Shared by :func:`compute_features` and the check of a cached entry
    (:func:`_sample_agrees`), so that the check recomputes exactly what was stored.
    """
    weight = geometry.weight
    scale = bound_scale(geometry)
    dimensions = len(basis)
    flat = part.reshape(len(part), -1).astype(np.int32)
    tile_norm2 = np.einsum("ij,ij->i", flat, flat, dtype=np.int64)
    pooled = geometry.pool_tiles(part).reshape(len(part), -1)
    sums = pooled.astype(np.float64)
    sums2 = np.einsum("ij,ij->i", sums, sums)
    residual = tile_norm2 - sums2 / weight
    means = blocks.means(sums.reshape(len(part), *geometry.shape, 3) / weight)
    means2 = np.einsum("ij,ij->i", means, means)
    means -= mean
    features = means @ basis.T
    deviation2 = np.einsum("ij,ij->i", means, means)
    feature2 = np.einsum("ij,ij->i", features, features)
    tail = _tail_norm(sums2 / (weight * weight), means2, deviation2, feature2, blocks.area)
    bound = np.empty((len(part), dimensions + BOUND_TERMS), np.float32)
    bound[:, :dimensions] = features
    bound[:, dimensions] = 1.0
    # Bound = scale*(|g|^2 + |f|^2 - 2 g.f) + residual, loosened for float32 rounding.
    bound[:, dimensions + 1] = (
        scale * feature2 + residual - BOUND_SLACK * scale * deviation2
        - 1e-7 * tile_norm2 - 1.0
    )
    bound[:, dimensions + 2] = tail
    bound[:, dimensions + 3] = weight * (1.0 - BOUND_SLACK) * tail * tail
    channel_sums = part.reshape(len(part), -1, 3).sum(axis=1, dtype=np.int64)
    return _TileRows(bound, residual, tile_norm2, channel_sums, tail, pooled)


def compute_features(
    tiles: np.ndarray,
    geometry: Geometry,
    show_progress: bool = False,
    pooled_out: np.ndarray | None = None,
) -> TileFeatures:
    """Compute :class:`TileFeatures` for ``tiles`` (streamed in chunks).

    Parameters
    ----------
    tiles : numpy.ndarray
        ``(M, match_height, match_px, 3)`` uint8 (may be a memory map).
    geometry : Geometry
        How cells and tiles are compared.
    show_progress : bool
        Draw a progress bar.
    pooled_out : numpy.ndarray, optional
        ``(M, n)`` uint16 array (e.g. a writable memory map) to receive the
        block sums; allocated in memory when omitted.
    """
    if not isinstance(geometry, Geometry):
        raise OptionError("{geometry} must be a Geometry, got {kind}", kind=type(geometry).__name__)
    tiles = checked_pixels("tiles", tiles, geometry.match_shape,
                           f"tiles of {geometry.match_px}x{geometry.match_height} px")
    count = len(tiles)
    if count == 0:
        # Said as such, not as NumPy failing to fit components to no tile.
        raise ValueError("no tiles to compute features of")
    blocks = BoundGrid.of(geometry)
    mean, basis = _fit_basis(tiles, geometry, blocks)
    dimensions = len(basis)
    length = geometry.length
    if geometry.factor > 1 and pooled_out is None:
        pooled_out = np.empty((count, length), pooled_dtype(geometry))
    bound = np.empty((count, dimensions + BOUND_TERMS), np.float32)
    residuals = np.empty(count, np.float64)
    norm2 = np.empty(count, np.int64)
    channel_sums = np.empty((count, 3), np.int64)
    tail_norm = np.empty(count, np.float64)
    chunk = max(1, min(FEATURE_CHUNK, (1 << 25) // max(1, tiles[0].size * 4)))
    with progress_bar(count, "features", unit="tile", enabled=show_progress) as bar:
        for start in range(0, count, chunk):
            part = np.asarray(tiles[start:start + chunk])
            stop = start + len(part)
            rows = _tile_rows(part, geometry, blocks, mean, basis)
            if pooled_out is not None and geometry.factor > 1:
                pooled_out[start:stop] = rows.pooled
            bound[start:stop] = rows.bound
            norm2[start:stop] = rows.norm2
            channel_sums[start:stop] = rows.channel_sums
            residuals[start:stop] = rows.residual
            tail_norm[start:stop] = rows.tail_norm
            release_pages(tiles)
            if pooled_out is not None:
                release_pages(pooled_out)
            bar.update(len(part))
    order = np.argsort(bound[:, 0], kind="stable")
    return TileFeatures(
        mean, basis.astype(np.float32), bound[order], order, residuals[order], norm2, channel_sums,
        tail_norm[order], pooled_out if geometry.factor > 1 else None,
    )


def cached_features(
    tiles: np.ndarray,
    geometry: Geometry,
    directory: Path | None,
    generation: int,
    show_progress: bool = False,
    variant: str = "seed",
) -> TileFeatures:
    """Return the library's features, loading them from ``directory`` when cached.

    The cache key is the library generation, the geometry, the tile count and
    ``variant`` (the colour space and transforms of a prepared library), so a
    changed library or geometry computes them anew. Each cache entry is
    a folder of ``.npy`` files (memory-mapped when read, all but the mean
    and the basis), written with
    :func:`~mosaicist.paths.atomic_folder`; a damaged entry, or one of other
    tiles under the same name (an index rebuilt from nothing is generation 0
    again), is recomputed: each read checks the arrays' shapes and a sample
    of tiles (:func:`_read_entry`).
    Writing an entry removes the entries of earlier library generations; a
    read-only or full cache computes the features in memory. A process
    that needs an entry another is computing waits for it and reads it
    (:func:`~mosaicist.paths.build_lock`).

    Parameters
    ----------
    tiles : numpy.ndarray
        ``(M, match_height, match_px, 3)`` uint8 (may be a memory map).
    geometry : Geometry
        How cells and tiles are compared.
    directory : pathlib.Path or None
        Folder of the cache entries (e.g. the library's features folder);
        None computes the features in memory, caching nothing.
    generation : int
        The library's generation (:attr:`TileLibrary.generation`), so that
        a changed library never reads an older library's features.
    show_progress : bool
        Draw a progress bar while computing.
    variant : str
        Names how ``tiles`` were prepared (colour space and transforms), so
        that differently prepared copies of one library keep separate entries.

    Returns
    -------
    TileFeatures
        The features, their per-tile arrays memory-mapped (read-only) when read
        from the cache.
    """
    if directory is None:
        return compute_features(tiles, geometry, show_progress)
    blocks = BoundGrid.of(geometry)
    height, width = geometry.shape
    steps = blocks.steps
    if height == width and steps is not None and steps[0] == steps[1]:
        # The names square geometries always had, so that their caches stay valid.
        shape = f"side{width}-f{geometry.factor}-s{steps[0]}"
    else:
        shape = f"shape{height}x{width}-f{geometry.factor}-{blocks.key()}"
    name = (
        f"v{FEATURES_VERSION}-{variant}-g{generation}-n{len(tiles)}-{shape}-d{bound_dimensions(len(tiles))}"
    )
    path = directory / name
    features = _read_entry(path, geometry, tiles)
    if features is not None:
        return features
    note = (f"mosaicist: waiting for another process computing these features ({path})"
            if show_progress else None)
    # Another process (a second run, a batch's worker) may be computing this entry:
    # waiting for it and reading its entry saves doing the same minutes of work twice.
    with build_lock(path, note=note):
        features = _read_entry(path, geometry, tiles)
        if features is not None:
            return features
        try:
            with atomic_folder(path) as partial:
                pooled_out = None
                if geometry.factor > 1:
                    length = geometry.length
                    pooled_out = np.lib.format.open_memmap(
                        partial / "pooled.npy", mode="w+", dtype=pooled_dtype(geometry),
                        shape=(len(tiles), length),
                    )
                    # Filling a sparse map on a full disk would die of SIGBUS, not raise.
                    reserve_space(partial / "pooled.npy")
                features = compute_features(tiles, geometry, show_progress, pooled_out)
                if pooled_out is not None:
                    pooled_out.flush()
                for key in _ENTRY_ARRAYS:
                    np.save(partial / f"{key}.npy", getattr(features, key))
                if pooled_out is not None:
                    # Mapped before it is published: a newer generation may remove it at once.
                    features.pooled = np.load(partial / "pooled.npy", mmap_mode="r",
                                              allow_pickle=False)
        except OSError:
            # A read-only or full cache only costs computing them in memory.
            return compute_features(tiles, geometry, show_progress)
    remove_older_generations(directory, _ENTRY, generation)
    return features


#: The arrays of a features entry, one ``.npy`` file each (and ``pooled.npy`` where pooled).
_ENTRY_ARRAYS = ("mean", "basis", "bound", "order", "residual", "norm2", "channel_sums",
                 "tail_norm")


def _read_entry(path: Path, geometry: Geometry, tiles: np.ndarray) -> TileFeatures | None:
    """The features of ``tiles`` cached at ``path``, or None where missing, damaged or stale.

    An entry is named by the library's generation and size, which a
    rebuilt index starts again (generation 0), and a file can be damaged in
    place (zeroed by a crash, copied from another cache): each array's
    type and shape are checked, and the features of a sample of tiles
    (:data:`ENTRY_SAMPLE`) are computed again from their pixels and
    compared. Before, such an entry was read as it was, and the search
    picked tiles that were not the nearest, without a word.
    """
    try:
        if not path.is_dir():
            return None
    except OSError:
        # An unreadable cache folder (chmod 000) is a cache without the entry: make failed
        # with "Permission denied" there, where every other cache is computed again.
        return None
    try:
        # The per-tile arrays are mapped, not read: the bound rows are the largest
        # (520 MB at a million tiles), of which an approximate search touches a few
        # lists, and reading the others into fresh memory took 0.08 s there.
        arrays = {key: _load(path / f"{key}.npy", mapped=key not in ("mean", "basis"))
                  for key in _ENTRY_ARRAYS}
        pooled = None
        if geometry.factor > 1:
            pooled = np.load(path / "pooled.npy", mmap_mode="r", allow_pickle=False)
        features = TileFeatures(**arrays, pooled=pooled)
        if not (_shapes_fit(features, geometry, len(tiles))
                and _sample_agrees(features, geometry, tiles)):
            return None
    except STORED_ARRAY_ERRORS:
        return None
    mark_used(path)
    return features


#: Tiles whose features are computed again to check a cached entry (evenly spaced,
#: the first and last among them): a few milliseconds at any library size.
ENTRY_SAMPLE = 64


def _shapes_fit(features: TileFeatures, geometry: Geometry, count: int) -> bool:
    """Whether each array of ``features`` has the type and shape of ``count`` tiles'."""
    rows, cols = BoundGrid.of(geometry).shape
    width = rows * cols * 3
    dimensions = min(bound_dimensions(count), width)
    wanted: dict[str, tuple[Any, tuple[int, ...]]] = {
        "mean": (np.float64, (width,)),
        "basis": (np.float32, (dimensions, width)),
        "bound": (np.float32, (count, dimensions + BOUND_TERMS)),
        "order": (np.int64, (count,)),
        "residual": (np.float64, (count,)),
        "norm2": (np.int64, (count,)),
        "channel_sums": (np.int64, (count, 3)),
        "tail_norm": (np.float64, (count,)),
    }
    if geometry.factor > 1:
        wanted["pooled"] = (pooled_dtype(geometry), (count, geometry.length))
    for key, (dtype, shape) in wanted.items():
        array = getattr(features, key)
        if array is None or array.dtype != np.dtype(dtype) or tuple(array.shape) != shape:
            return False
    return geometry.factor > 1 or features.pooled is None


def _sample_agrees(features: TileFeatures, geometry: Geometry, tiles: np.ndarray) -> bool:
    """Whether ``features`` hold, for a sample of ``tiles``, what :func:`_tile_rows` computes.

    Integers (squared norms, channel sums, block sums) must be equal; the
    float rows agree to float32 rounding (the stored basis is float32, the
    fitted one was float64).
    """
    count = len(tiles)
    order = np.asarray(features.order)
    if count and (order.min() < 0 or order.max() >= count):
        return False
    # The bound's row of each tile: ``order`` must be a permutation (one O(M) pass).
    row_of = np.full(count, -1, np.int64)
    row_of[order] = np.arange(count)
    if (row_of < 0).any():
        return False
    positions = np.unique(np.linspace(0, count - 1, min(count, ENTRY_SAMPLE)).astype(np.int64))
    part = np.asarray(tiles[positions])
    basis = np.asarray(features.basis, np.float64)
    # Unit rows (their orthogonality shows in the sample's bound rows below).
    if not np.allclose(np.einsum("ij,ij->i", basis, basis), 1.0, atol=1e-4):
        return False
    # One thread: a product this small gains nothing from BLAS's threads, which
    # spun for tens of milliseconds on busy cores.
    with one_blas_thread():
        expected = _tile_rows(part, geometry, BoundGrid.of(geometry), features.mean, basis)
    rows = row_of[positions]
    if not (np.array_equal(expected.norm2, features.norm2[positions])
            and np.array_equal(expected.channel_sums, features.channel_sums[positions])):
        return False
    if features.pooled is not None and not np.array_equal(expected.pooled,
                                                          features.pooled[positions]):
        return False
    # A tail norm is the square root of a difference of near sums, so its rounding
    # is compared squared, against the tiles' energy.
    tail2 = np.square(np.asarray(features.tail_norm[rows], np.float64))
    energy = max(1.0, float(expected.norm2.max()))
    return (_close(features.bound[rows], expected.bound)
            and _close(features.residual[rows], expected.residual)
            and bool(np.isfinite(tail2).all())
            and bool(np.allclose(tail2, np.square(expected.tail_norm), rtol=0, atol=1e-5 * energy)))


def _close(found: np.ndarray, wanted: np.ndarray) -> bool:
    """Whether stored float features equal recomputed ones up to float32 rounding."""
    found = np.asarray(found, np.float64)
    wanted = np.asarray(wanted, np.float64)
    if not np.isfinite(found).all():
        return False
    scale = max(1.0, float(np.abs(wanted).max(initial=0.0)))
    return bool(np.allclose(found, wanted, rtol=1e-4, atol=1e-5 * scale))


def _load(path: Path, mapped: bool) -> np.ndarray:
    """An array from an ``.npy`` file, read or memory-mapped (as a plain ndarray view)."""
    if not mapped:
        return np.load(path, allow_pickle=False)
    return np.load(path, mmap_mode="r", allow_pickle=False).view(np.ndarray)


def _tail_norm(
    energy: np.ndarray, means2: np.ndarray, deviation2: np.ndarray, feature2: np.ndarray,
    area: float,
) -> np.ndarray:
    """Tail norms ``t`` (see the module) from squared norms.

    ``energy = |v|^2``, ``means2 = |x|^2``, ``deviation2 = |x - mu|^2`` and
    ``feature2 = |Q (x - mu)|^2``.

    Both differences are sums of squares (within-block variation, PCA tail),
    so a negative value is rounding, taken as 0.
    """
    within = np.maximum(energy - area * means2, 0.0)
    outside = np.maximum(deviation2 - feature2, 0.0)
    return np.sqrt(within + area * outside)


def cell_bound_rows(
    cell_vectors: np.ndarray, geometry: Geometry, features: TileFeatures
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the cells' bound rows, ``|a|^2`` and tail norms.

    The rows are ``[-2 k Q m_a, row term, 1, -2 w t_a, 1]`` (float32, the
    tail norms' columns and the tail norm ``t_a``, float64, as the module
    says). Cells are taken :data:`CELL_BLOCK` at a time, so the float64
    copies made on the way stay a few megabytes at any grid size, and the
    blocks are shared out among threads.
    """
    count = len(cell_vectors)
    blocks = BoundGrid.of(geometry)
    scale = bound_scale(geometry)
    dimensions = len(features.basis)
    basis = features.basis.T.astype(np.float64)
    rows = np.empty((count, dimensions + BOUND_TERMS), np.float32)
    weight = geometry.weight
    cell_norm2 = np.empty(count, np.int64)
    tail_norm = np.empty(count, np.float64)

    def fill(start: int) -> None:
        block = cell_vectors[start:start + CELL_BLOCK]
        flat = block.reshape(len(block), -1)
        # Summed in int64 as read: a wide copy of the block costs more than the sum.
        norm2 = np.einsum("ij,ij->i", flat, flat, dtype=np.int64)
        means = blocks.means(block)
        means2 = np.einsum("ij,ij->i", means, means)
        means -= features.mean
        projected = means @ basis
        deviation2 = np.einsum("ij,ij->i", means, means)
        projected2 = np.einsum("ij,ij->i", projected, projected)
        tail = _tail_norm(norm2.astype(np.float64), means2, deviation2, projected2,
                          blocks.area)
        part = rows[start:start + len(block)]
        part[:, :dimensions] = -2.0 * scale * projected
        part[:, dimensions] = (
            scale * projected2
            - BOUND_SLACK * scale * deviation2
            - 1e-7 * weight * norm2
            + weight * (1.0 - BOUND_SLACK) * tail * tail
        )
        part[:, dimensions + 1] = 1.0
        part[:, dimensions + 2] = -2.0 * weight * tail
        part[:, dimensions + 3] = 1.0
        cell_norm2[start:start + len(block)] = norm2
        tail_norm[start:start + len(block)] = tail

    # Blocks go to threads, each with BLAS on one core: products this small gain
    # nothing from BLAS's own threads, which would spin on after them, beside the
    # search that follows.
    workers = worker_count(most=16) if count > CELL_BLOCK else 1
    with one_blas_thread(), OrderedJobs(workers, name="mosaicist-cells") as jobs:
        for start in range(0, count, CELL_BLOCK):
            jobs.submit(fill, start)
        for _ in jobs.drain():
            pass
    return rows, cell_norm2, tail_norm
