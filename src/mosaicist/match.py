"""Exact nearest-tile search under the seed's objective.

For a compared cell vector ``a`` and tile ``b`` (see :class:`Geometry`) the
objective is ``D(a, b) = w |a|^2 - 2 <a, S_b> + |b|^2``, an integer, where
``S_b`` are the tile's block sums and ``w`` the pixels per block.

Search is exact, with memory bounded by the chunk sizes:

1. **Lower bounds.** Writing ``P_b = S_b / w`` and ``c_b = |b|^2 - |S_b|^2 / w``
   (the tile's within-block variation), ``D = w |a - P_b|^2 + c_b``. Block
   means over ``s x s`` groups and any orthonormal projection ``Q`` only
   shrink distances, so ``LB = w s^2 |Q (mean_s(a) - mean_s(P_b))|^2 + c_b <= D``.
   ``Q`` holds the top principal components (PCA) of the library, fitted once
   and cached with the features; keeping fewer components gives a weaker
   bound that is cheaper to compute. Each bound is one float32 GEMM on
   augmented rows, loosened by a margin far above float32's rounding error
   for these magnitudes.
2. **Search.** Each cell first gets an upper bound: the exact distance of
   the best-bounded tile of an evenly spaced sample. Then, for groups of
   cells and chunks of tiles, a coarse bound (``COARSE_DIMENSIONS``
   components) discards the tiles no cell of the group can use, the full
   bound (``BOUND_DIMENSIONS``) is computed for the rest, and every tile
   whose bound does not exceed its cell's best exact distance so far is
   evaluated exactly.
3. **Exact re-check.** Distances are integer dot products (int32 where no
   sum can overflow, else int64), so the kept best is the true minimum, ties
   going to the lowest library position. A tile is only ever skipped when a
   bound proves it cannot win.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from .errors import MosaicistError
from .grid import Geometry
from .library import release_pages
from .progress import progress_bar

#: Cells per block of the first, sampled pass.
CELL_BLOCK = 2048
#: Tiles per chunk of the bound matrices (CELL_GROUP x TILE_CHUNK float32 = 4 MiB).
TILE_CHUNK = 4096
#: Principal components kept for the bound.
BOUND_DIMENSIONS = 128
#: Largest side of the block-mean grid the bound is computed on.
BOUND_GRID = 16
#: Relative slack of the float32 bound (worst-case rounding is below 1e-6 here).
BOUND_SLACK = 5e-5
#: Tiles used to fit the principal components.
PCA_SAMPLE = 16384
#: Float64 elements gathered at a time in the exact re-check.
EXACT_BUDGET = 1 << 22

FEATURES_VERSION = 4
#: Components of the coarse bound computed for every cell-tile pair.
COARSE_DIMENSIONS = 24
#: Cells that share one pass of the coarse bound.
CELL_GROUP = 256
#: Tiles in the sample that gives each cell its first upper bound.
SEED_SAMPLE = 2048


@dataclass
class MatchResult:
    """The best tile for every cell.

    Attributes
    ----------
    tile : numpy.ndarray
        ``(N,)`` int64 library position of each cell's tile.
    distance : numpy.ndarray
        ``(N,)`` int64 exact objective of each pick.
    evaluated : int
        Exact distance evaluations made (for benchmarks).
    bounded : int
        Cell-tile pairs whose lower bound was computed (for benchmarks).
    candidates : numpy.ndarray or None
        ``(N, k)`` int64: each cell's ``k`` best tiles, best first (only when
        more than one was asked for); missing entries (fewer than ``k``
        tiles) hold ``-1``.
    candidate_distances : numpy.ndarray or None
        ``(N, k)`` int64 exact distances of ``candidates`` (missing: int64 max).
    """

    tile: np.ndarray
    distance: np.ndarray
    evaluated: int = 0
    bounded: int = 0
    candidates: np.ndarray | None = None
    candidate_distances: np.ndarray | None = None


def bound_step(side: int) -> int:
    """Return the block-mean step ``s`` (a divisor of ``side``) of the bound's grid."""
    for step in range(1, side + 1):
        if side % step == 0 and side // step <= BOUND_GRID:
            return step
    return side


def _block_means(vectors: np.ndarray, step: int) -> np.ndarray:
    """Mean over ``step x step`` blocks: ``(k, side, side, 3)`` -> ``(k, n')`` float64."""
    count, side = len(vectors), vectors.shape[1]
    if step == 1:
        return vectors.reshape(count, -1).astype(np.float64)
    small = side // step
    return (
        vectors.reshape(count, small, step, small, step, 3)
        .mean(axis=(2, 4), dtype=np.float64)
        .reshape(count, -1)
    )


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
        ``(M, d + 2)`` float32 rows ``[Q m_b, 1, column term]``: one GEMM with
        the cells' rows ``[-2 k Q m_a, row term, 1]`` gives the loosened bound.
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
    pooled: np.ndarray | None

    def limit(self, count: int) -> TileFeatures:
        """Features of the first ``count`` tiles."""
        if count >= len(self.norm2):
            return self
        keep = self.order < count
        return TileFeatures(
            self.mean, self.basis, self.bound[keep], self.order[keep], self.residual[keep],
            self.norm2[:count], self.channel_sums[:count],
            None if self.pooled is None else self.pooled[:count],
        )


def _scale(geometry: Geometry) -> float:
    step = bound_step(geometry.side)
    return float(geometry.weight * step * step)


def pooled_dtype(geometry: Geometry) -> type:
    """Smallest unsigned type that holds a block sum (uint16 up to 16 x 16 blocks)."""
    return np.uint16 if 255 * geometry.weight <= np.iinfo(np.uint16).max else np.uint32


def _fit_basis(
    tiles: np.ndarray, geometry: Geometry, step: int
) -> tuple[np.ndarray, np.ndarray]:
    """Principal components of the tiles' block means, from an evenly spaced sample."""
    count = len(tiles)
    sample_index = np.unique(np.linspace(0, count - 1, min(count, PCA_SAMPLE)).astype(np.int64))
    sums = geometry.pool_tiles(np.asarray(tiles[sample_index]))
    sample = _block_means(sums.astype(np.float64) / geometry.weight, step)
    mean = sample.mean(axis=0)
    centred = sample - mean
    covariance = centred.T @ centred
    dimensions = min(BOUND_DIMENSIONS, covariance.shape[0])
    _, vectors = np.linalg.eigh(covariance)
    basis = np.ascontiguousarray(vectors[:, ::-1][:, :dimensions].T)
    return mean, basis


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
        ``(M, tile_px, tile_px, 3)`` uint8 (may be a memory map).
    geometry : Geometry
        How cells and tiles are compared.
    show_progress : bool
        Draw a progress bar.
    pooled_out : numpy.ndarray, optional
        ``(M, n)`` uint16 array (e.g. a writable memory map) to receive the
        block sums; allocated in memory when omitted.
    """
    count = len(tiles)
    step = bound_step(geometry.side)
    weight = geometry.weight
    mean, basis = _fit_basis(tiles, geometry, step)
    dimensions = len(basis)
    scale = _scale(geometry)
    length = geometry.side * geometry.side * 3
    if geometry.factor > 1 and pooled_out is None:
        pooled_out = np.empty((count, length), pooled_dtype(geometry))
    bound = np.empty((count, dimensions + 2), np.float32)
    residuals = np.empty(count, np.float64)
    norm2 = np.empty(count, np.int64)
    channel_sums = np.empty((count, 3), np.int64)
    chunk = max(1, min(TILE_CHUNK, (1 << 25) // max(1, tiles[0].size * 4)))
    with progress_bar(count, "features", unit="tile", enabled=show_progress) as bar:
        for start in range(0, count, chunk):
            part = np.asarray(tiles[start:start + chunk])
            stop = start + len(part)
            flat = part.reshape(len(part), -1).astype(np.int32)
            tile_norm2 = np.einsum("ij,ij->i", flat, flat, dtype=np.int64)
            sums = geometry.pool_tiles(part)
            if pooled_out is not None and geometry.factor > 1:
                pooled_out[start:stop] = sums.reshape(len(part), -1)
            sums = sums.reshape(len(part), -1).astype(np.float64)
            residual = tile_norm2 - np.einsum("ij,ij->i", sums, sums) / weight
            means = _block_means(
                sums.reshape(len(part), geometry.side, geometry.side, 3) / weight, step
            ) - mean
            features = means @ basis.T
            deviation2 = np.einsum("ij,ij->i", means, means)
            feature2 = np.einsum("ij,ij->i", features, features)
            bound[start:stop, :dimensions] = features
            bound[start:stop, dimensions] = 1.0
            # Bound = scale*(|g|^2 + |f|^2 - 2 g.f) + residual, loosened for float32 rounding.
            bound[start:stop, dimensions + 1] = (
                scale * feature2 + residual - BOUND_SLACK * scale * deviation2
                - 1e-7 * tile_norm2 - 1.0
            )
            norm2[start:stop] = tile_norm2
            channel_sums[start:stop] = part.reshape(len(part), -1, 3).sum(axis=1, dtype=np.int64)
            residuals[start:stop] = residual
            release_pages(tiles)
            if pooled_out is not None:
                release_pages(pooled_out)
            bar.update(len(part))
    order = np.argsort(bound[:, 0], kind="stable")
    return TileFeatures(
        mean, basis.astype(np.float32), bound[order], order, residuals[order], norm2, channel_sums,
        pooled_out if geometry.factor > 1 else None,
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
    a folder of ``.npy`` files (the block sums memory-mapped), written under a
    temporary name and renamed into place; a damaged entry is recomputed.
    """
    if directory is None:
        return compute_features(tiles, geometry, show_progress)
    step = bound_step(geometry.side)
    name = (
        f"v{FEATURES_VERSION}-{variant}-g{generation}-n{len(tiles)}-side{geometry.side}-"
        f"f{geometry.factor}-s{step}-d{BOUND_DIMENSIONS}"
    )
    path = directory / name
    names = ("mean", "basis", "bound", "order", "residual", "norm2", "channel_sums")
    if path.is_dir():
        try:
            arrays = {key: np.load(path / f"{key}.npy", allow_pickle=False) for key in names}
            pooled = None
            if geometry.factor > 1:
                pooled = np.load(path / "pooled.npy", mmap_mode="r", allow_pickle=False)
            features = TileFeatures(**arrays, pooled=pooled)
            if len(features.bound) == len(tiles) and (pooled is None or len(pooled) == len(tiles)):
                return features
        except (OSError, ValueError):
            pass
    partial = directory / f".{name}.{os.getpid()}.part"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        pooled_out = None
        if geometry.factor > 1:
            length = geometry.side * geometry.side * 3
            pooled_out = np.lib.format.open_memmap(
                partial / "pooled.npy", mode="w+", dtype=pooled_dtype(geometry),
                shape=(len(tiles), length),
            )
        features = compute_features(tiles, geometry, show_progress, pooled_out)
        if pooled_out is not None:
            pooled_out.flush()
        for key in names:
            np.save(partial / f"{key}.npy", getattr(features, key))
        shutil.rmtree(path, ignore_errors=True)
        os.replace(partial, path)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        return compute_features(tiles, geometry, show_progress)
    if pooled_out is not None:
        features.pooled = np.load(path / "pooled.npy", mmap_mode="r", allow_pickle=False)
    return features


def dot_dtype(length: int, weight: int) -> type:
    """Integer type for dot products of ``length`` pixel values with block sums.

    int32 when no sum can overflow it (the common case, and faster), else int64.
    """
    return np.int32 if length * 255 * 255 * weight < 2**31 else np.int64


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
    the tiles themselves when the factor is 1). Dot products are integer:
    int32 when no sum can overflow it, else int64.
    """
    out = np.empty(len(cell_index), np.int64)
    if len(cell_index) == 0:
        return out
    length = cell_flat.shape[1]
    accumulate = dot_dtype(length, weight)
    per_batch = max(1, EXACT_BUDGET // length)
    for start in range(0, len(cell_index), per_batch):
        stop = start + per_batch
        cells = cell_index[start:stop]
        tiles = tile_index[start:stop]
        dots = np.einsum(
            "ij,ij->i", cell_flat[cells].astype(accumulate, copy=False),
            np.asarray(pooled[tiles]).astype(accumulate), dtype=accumulate,
        )
        out[start:stop] = (
            weight * cell_norm2[cells] - 2 * dots.astype(np.int64) + tile_norm2[tiles]
        )
    return out


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
    if len(cells) == 0:
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


def search_workers() -> int:
    """Threads for the search: ``MOSAICIST_THREADS`` or the usable cores."""
    configured = os.environ.get("MOSAICIST_THREADS")
    if configured:
        return max(1, int(configured))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def _tinted_bounds(
    cell_rows: np.ndarray,
    features: TileFeatures,
    cell_sums: np.ndarray,
    pixels: int,
    strength: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Extend the bound rows so that their product bounds the tinted distance.

    Tinting subtracts ``kappa |mean(a) - mean(b)|^2`` (``kappa = (2A - A^2) n``)
    from every distance, so subtracting it from the bound keeps it a bound:
    three more columns ``2 kappa mean(a)`` / ``mean(b)`` and the squared norms
    folded into the row and column terms.
    """
    kappa = (2 * strength - strength * strength) * pixels
    cell_means = cell_sums / pixels
    tile_means = features.channel_sums[features.order] / pixels
    cell_norm = np.einsum("ij,ij->i", cell_means, cell_means)
    tile_norm = np.einsum("ij,ij->i", tile_means, tile_means)
    dimensions = len(features.basis)
    cells = np.empty((len(cell_rows), cell_rows.shape[1] + 3), np.float32)
    cells[:, :-3] = cell_rows
    cells[:, dimensions] -= (kappa * (1 + 1e-6) * cell_norm + 1.0).astype(np.float32)
    cells[:, -3:] = 2 * kappa * cell_means
    tiles = np.empty((len(features.bound), features.bound.shape[1] + 3), np.float32)
    tiles[:, :-3] = features.bound
    tiles[:, dimensions + 1] -= (kappa * (1 + 1e-6) * tile_norm + 1.0).astype(np.float32)
    tiles[:, -3:] = tile_means
    return cells, tiles


def cell_bound_rows(
    cell_vectors: np.ndarray, geometry: Geometry, features: TileFeatures
) -> tuple[np.ndarray, np.ndarray]:
    """Return the cells' bound rows ``[-2 k Q m_a, row term, 1]`` and ``|a|^2``."""
    count = len(cell_vectors)
    step = bound_step(geometry.side)
    scale = _scale(geometry)
    flat = cell_vectors.reshape(count, -1)
    cell_norm2 = np.einsum("ij,ij->i", flat.astype(np.int32), flat.astype(np.int32),
                           dtype=np.int64)
    means = _block_means(cell_vectors, step) - features.mean
    projected = means @ features.basis.T.astype(np.float64)
    deviation2 = np.einsum("ij,ij->i", means, means)
    dimensions = len(features.basis)
    rows = np.empty((count, dimensions + 2), np.float32)
    rows[:, :dimensions] = -2.0 * scale * projected
    rows[:, dimensions] = (
        scale * np.einsum("ij,ij->i", projected, projected)
        - BOUND_SLACK * scale * deviation2
        - 1e-7 * geometry.weight * cell_norm2
    )
    rows[:, dimensions + 1] = 1.0
    return rows, cell_norm2


def match_exact(
    cell_vectors: np.ndarray,
    tiles: np.ndarray,
    geometry: Geometry,
    features: TileFeatures | None = None,
    show_progress: bool = False,
    k: int = 1,
    tint: float = 0.0,
) -> MatchResult:
    """Find, for every cell, a tile of minimum objective (ties: lowest position).

    With ``k > 1``, also each cell's ``k`` best tiles (exact, in order of
    distance then position), for assignments that limit repetition.

    Parameters
    ----------
    cell_vectors : numpy.ndarray
        ``(N, side, side, 3)`` uint8 from :meth:`Geometry.cell_vectors`.
    tiles : numpy.ndarray
        ``(M, tile_px, tile_px, 3)`` uint8 in library order (may be memory-mapped).
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

    Returns
    -------
    MatchResult
    """
    count = len(cell_vectors)
    tile_count = len(tiles)
    if features is None:
        features = compute_features(tiles, geometry)
    pooled = features.pooled if features.pooled is not None else tiles.reshape(tile_count, -1)
    cell_rows, cell_norm2 = cell_bound_rows(cell_vectors, geometry, features)
    # Converted once: the exact re-check gathers these rows many times.
    cell_flat = cell_vectors.reshape(count, -1).astype(
        dot_dtype(cell_vectors[0].size, geometry.weight)
    )

    k = max(1, min(k, tile_count))
    hundredths = int(round(tint * 100))
    if not 0 <= hundredths <= 100:
        raise ValueError(f"tint must be between 0 and 1, got {tint}")
    pixels = geometry.tile_px * geometry.tile_px
    # Exact tinted distances are D * n * q^2 - (2pq - p^2) |sum difference|^2 with A = p/q.
    distance_scale = pixels * 100 * 100 if hundredths else 1
    tint_factor = 2 * hundredths * 100 - hundredths * hundredths
    if hundredths and 3 * 255 * 255 * pixels * distance_scale >= 2**63:
        raise MosaicistError(
            f"tint needs tiles of at most 256 px for matching, got {geometry.tile_px}; "
            "match at a smaller --tile-px and re-render with 'mosaicist render'"
        )
    cell_sums = (
        cell_vectors.reshape(count, -1, 3).sum(axis=1, dtype=np.int64) * geometry.weight
    )

    def evaluate(cells: np.ndarray, candidates: np.ndarray) -> int:
        distances = exact_distances(
            cell_flat, cell_norm2, pooled, features.norm2, geometry.weight, cells, candidates
        )
        if hundredths:
            difference = cell_sums[cells] - features.channel_sums[candidates]
            distances = distances * distance_scale - tint_factor * np.einsum(
                "ij,ij->i", difference, difference
            )
        if k == 1:
            _improve(best_distance, best_tile, cells, candidates, distances)
        else:
            _merge_best(best_distance, best_tile, cells, candidates, distances)
        return len(cells)

    def kth_best(cells: np.ndarray | slice) -> np.ndarray:
        best = best_distance[cells] if k == 1 else best_distance[cells, -1]
        if distance_scale == 1:
            return best
        unset = best == np.iinfo(np.int64).max
        return np.where(unset, np.inf, best / distance_scale)

    if hundredths:
        cell_rows, bound_rows = _tinted_bounds(
            cell_rows, features, cell_sums, pixels, hundredths / 100
        )
    else:
        bound_rows = features.bound

    shape = count if k == 1 else (count, k)
    best_distance = np.full(shape, np.iinfo(np.int64).max, np.int64)
    best_tile = np.full(shape, np.iinfo(np.int64).max, np.int64)
    order = features.order
    # A first upper bound per cell from an evenly spaced sample of the library,
    # so that the full pass below evaluates few tiles exactly.
    sample_size = min(tile_count, SEED_SAMPLE)
    sample = np.unique(np.linspace(0, tile_count - 1, sample_size).astype(np.int64))
    evaluated = 0
    for cell_start in range(0, count, CELL_BLOCK):
        block = slice(cell_start, min(count, cell_start + CELL_BLOCK))
        bounds = cell_rows[block] @ bound_rows[sample].T
        if k == 1:
            nearest = bounds.argmin(axis=1)
            evaluated += evaluate(np.arange(block.start, block.stop), order[sample[nearest]])
        else:
            take = min(k, len(sample))
            nearest = np.argpartition(bounds, take - 1, axis=1)[:, :take]
            evaluated += evaluate(
                np.repeat(np.arange(block.start, block.stop), take),
                order[sample[nearest.ravel()]],
            )
    threshold = _threshold32(kth_best(slice(None)))

    # Two bounds, both exact: a coarse one from the first COARSE_DIMENSIONS
    # components, computed for every pair, picks the tiles that any cell of
    # a block might still use; the full bound is computed for those alone.
    scale = _scale(geometry)
    dimensions = len(features.basis)
    coarse = min(COARSE_DIMENSIONS, dimensions)
    tail = bound_rows[:, coarse:dimensions].astype(np.float64)
    tail2 = np.einsum("ij,ij->i", tail, tail)
    # Columns past the bound's own (the tint terms) carry over unchanged.
    extra = bound_rows.shape[1] - (dimensions + 2)
    coarse_tiles = np.empty((tile_count, coarse + 2 + extra), np.float32)
    coarse_tiles[:, :coarse] = bound_rows[:, :coarse]
    coarse_tiles[:, coarse] = 1.0
    coarse_tiles[:, coarse + 1] = bound_rows[:, dimensions + 1] - scale * tail2
    coarse_tiles[:, coarse + 2:] = bound_rows[:, dimensions + 2:]
    projected = cell_rows[:, :dimensions] / np.float32(-2.0 * scale)
    coarse_cells = np.empty((count, coarse + 2 + extra), np.float32)
    coarse_cells[:, :coarse] = cell_rows[:, :coarse]
    coarse_cells[:, coarse] = cell_rows[:, dimensions] - scale * np.einsum(
        "ij,ij->i", projected[:, coarse:], projected[:, coarse:])
    coarse_cells[:, coarse + 1] = 1.0
    coarse_cells[:, coarse + 2:] = cell_rows[:, dimensions + 2:]
    del projected, tail, tail2
    cell_order = np.argsort(cell_rows[:, 0], kind="stable")
    def search_group(cells: np.ndarray) -> tuple[int, int]:
        evaluated = scanned = 0
        rows = cell_rows[cells]
        rows_coarse = coarse_cells[cells]
        for start in range(0, tile_count, TILE_CHUNK):
            stop = min(tile_count, start + TILE_CHUNK)
            limit = threshold[cells, None]
            alive = np.flatnonzero(
                (rows_coarse @ coarse_tiles[start:stop].T <= limit).any(axis=0)
            ) + start
            if len(alive) == 0:
                continue
            scanned += len(alive) * len(cells)
            bound = rows @ bound_rows[alive].T
            # flatnonzero is an order of magnitude faster than 2-D nonzero here.
            hits = np.flatnonzero(bound <= limit)
            if len(hits):
                cell_hits, tile_hits = np.divmod(hits, len(alive))
                evaluated += evaluate(cells[cell_hits], order[alive[tile_hits]])
                threshold[cells] = _threshold32(kth_best(cells))
        return evaluated, scanned

    groups = [cell_order[start:start + CELL_GROUP] for start in range(0, count, CELL_GROUP)]
    workers = min(search_workers(), len(groups))
    scanned = 0
    with progress_bar(count, "matching", unit="cell", enabled=show_progress) as bar:
        if workers <= 1:
            for cells in groups:
                group_evaluated, group_scanned = search_group(cells)
                evaluated += group_evaluated
                scanned += group_scanned
                bar.update(len(cells))
        else:
            # Groups hold disjoint cells, so threads never write the same entries.
            # One BLAS thread each: these small products do not split well, and the
            # comparisons and gathers around them (which release the GIL) run in
            # parallel too.
            with threadpool_limits(limits=1, user_api="blas"), \
                    ThreadPoolExecutor(max_workers=workers) as executor:
                for cells, (group_evaluated, group_scanned) in zip(
                    groups, executor.map(search_group, groups), strict=True
                ):
                    evaluated += group_evaluated
                    scanned += group_scanned
                    bar.update(len(cells))
    if distance_scale != 1:
        unset = best_distance == np.iinfo(np.int64).max
        best_distance = np.where(unset, np.inf, best_distance / distance_scale)
    if k == 1:
        return MatchResult(best_tile, best_distance, evaluated, scanned)
    best_tile[~np.isfinite(best_distance.astype(np.float64))
              | (best_distance == np.iinfo(np.int64).max)] = -1
    return MatchResult(
        best_tile[:, 0].copy(), best_distance[:, 0].copy(), evaluated, scanned,
        best_tile, best_distance,
    )


def brute_force(cells: np.ndarray, tiles: np.ndarray, tile_px: int) -> MatchResult:
    """Reference search: integer arithmetic over every tile pixel, no shortcuts.

    Each cell is brought to ``tile_px`` exactly as the objective defines
    (pixel replication when ``tile_px`` is a multiple of the cell size, else
    area averaging rounded to 8 bits) and compared with every tile. For tests
    and benchmarks on small inputs only.
    """
    cell_px = cells.shape[1]
    geometry = Geometry(cell_px, tile_px)
    vectors = geometry.cell_vectors(cells)
    factor = geometry.factor
    length = tile_px * tile_px * 3
    kind = np.int32 if length * 255 * 255 < 2**31 else np.int64
    upscaled = vectors.repeat(factor, axis=1).repeat(factor, axis=2).astype(kind)
    flat_tiles = np.asarray(tiles).reshape(len(tiles), -1).astype(kind)
    best_tile = np.empty(len(cells), np.int64)
    best_distance = np.empty(len(cells), np.int64)
    for index, cell in enumerate(upscaled.reshape(len(cells), -1)):
        difference = flat_tiles - cell
        distances = np.einsum("ij,ij->i", difference, difference, dtype=kind)
        best_tile[index] = int(np.argmin(distances))
        best_distance[index] = distances[best_tile[index]]
    return MatchResult(best_tile, best_distance, len(cells) * len(tiles))
