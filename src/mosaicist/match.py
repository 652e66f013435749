"""Exact nearest-tile search under the seed's objective.

For a compared cell vector ``a`` and tile ``b`` (see :class:`Geometry`) the
objective is ``D(a, b) = w |a|^2 - 2 <a, S_b> + |b|^2``, an integer, where
``S_b`` are the tile's block sums and ``w`` the pixels per block.

Search is exact, in two stages, with memory bounded by the chunk sizes:

1. **Lower bound.** Writing ``P_b = S_b / w`` and ``c_b = |b|^2 - |S_b|^2 / w``
   (the tile's within-block variation), ``D = w |a - P_b|^2 + c_b``. Block
   means over ``s x s`` groups and any orthonormal projection ``Q`` only
   shrink distances, so ``LB = w s^2 |Q (mean_s(a) - mean_s(P_b))|^2 + c_b <= D``.
   ``Q`` is the top principal components (PCA) of the library, fitted once and
   cached with the features. ``LB`` for a block of cells and a chunk of tiles
   is one float32 GEMM, loosened by a rounding margin far above float32's
   worst error for these magnitudes.
2. **Exact re-check.** Every tile whose bound does not exceed the best exact
   distance found so far is evaluated exactly (float64 dot products of
   integers below 2**53, hence exact), and the best is kept with ties going to
   the lowest library position. A tile is skipped only when its bound proves it
   cannot win, so the result is the true minimum for every cell.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .grid import Geometry
from .progress import progress_bar

#: Cells per block of the bound matrix.
CELL_BLOCK = 1024
#: Tiles per chunk of the bound matrix (CELL_BLOCK x TILE_CHUNK float32 = 16 MiB).
TILE_CHUNK = 4096
#: Principal components kept for the bound.
BOUND_DIMENSIONS = 64
#: Largest side of the block-mean grid the bound is computed on.
BOUND_GRID = 16
#: Relative slack of the float32 bound (worst-case rounding is below 1e-6 here).
BOUND_SLACK = 5e-5
#: Tiles used to fit the principal components.
PCA_SAMPLE = 16384
#: Float64 elements gathered at a time in the exact re-check.
EXACT_BUDGET = 1 << 22

FEATURES_VERSION = 1


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
    """

    tile: np.ndarray
    distance: np.ndarray
    evaluated: int = 0


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
    projected : numpy.ndarray
        ``(M, d)`` float32 projections of each tile's block means.
    column_term : numpy.ndarray
        ``(M,)`` float32: the per-tile part of the loosened bound.
    norm2 : numpy.ndarray
        ``(M,)`` int64 ``|b|^2`` over the tile's pixels.
    """

    mean: np.ndarray
    basis: np.ndarray
    projected: np.ndarray
    column_term: np.ndarray
    norm2: np.ndarray

    def limit(self, count: int) -> TileFeatures:
        """Features of the first ``count`` tiles."""
        return TileFeatures(
            self.mean, self.basis, self.projected[:count], self.column_term[:count],
            self.norm2[:count],
        )


def _scale(geometry: Geometry) -> float:
    step = bound_step(geometry.side)
    return float(geometry.weight * step * step)


def compute_features(
    tiles: np.ndarray, geometry: Geometry, show_progress: bool = False
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
    """
    count = len(tiles)
    step = bound_step(geometry.side)
    weight = geometry.weight
    # Fit the principal components on an evenly spaced sample of the library.
    sample_index = np.unique(np.linspace(0, count - 1, min(count, PCA_SAMPLE)).astype(np.int64))
    sample = _block_means(geometry.pool_tiles(tiles[sample_index]) / weight, step)
    mean = sample.mean(axis=0)
    centred = sample - mean
    covariance = centred.T @ centred
    dimensions = min(BOUND_DIMENSIONS, covariance.shape[0])
    _, vectors = np.linalg.eigh(covariance)
    basis = np.ascontiguousarray(vectors[:, ::-1][:, :dimensions].T)
    basis32 = basis.astype(np.float32)

    scale = _scale(geometry)
    projected = np.empty((count, dimensions), np.float32)
    column_term = np.empty(count, np.float32)
    norm2 = np.empty(count, np.int64)
    chunk = max(1, min(TILE_CHUNK, (1 << 26) // max(1, tiles[0].size * 4)))
    with progress_bar(count, "features", unit="tile", enabled=show_progress) as bar:
        for start in range(0, count, chunk):
            part = np.asarray(tiles[start:start + chunk])
            flat = part.reshape(len(part), -1).astype(np.int64)
            tile_norm2 = np.einsum("ij,ij->i", flat, flat)
            sums = geometry.pool_tiles(part).reshape(len(part), -1).astype(np.float64)
            residual = tile_norm2 - np.einsum("ij,ij->i", sums, sums) / weight
            means = _block_means(sums.reshape(part.shape[0], geometry.side, geometry.side, 3)
                                 / weight, step) - mean
            features = means @ basis.T
            deviation2 = np.einsum("ij,ij->i", means, means)
            feature2 = np.einsum("ij,ij->i", features, features)
            projected[start:start + len(part)] = features.astype(np.float32)
            # Bound = scale*(|g|^2 + |f|^2 - 2 g.f) + residual, loosened for float32 rounding.
            column_term[start:start + len(part)] = (
                scale * feature2 + residual - BOUND_SLACK * scale * deviation2
                - 1e-7 * tile_norm2 - 1.0
            ).astype(np.float32)
            norm2[start:start + len(part)] = tile_norm2
            bar.update(len(part))
    del basis32
    return TileFeatures(mean, basis.astype(np.float32), projected, column_term, norm2)


def cached_features(
    tiles: np.ndarray,
    geometry: Geometry,
    directory: Path | None,
    generation: int,
    show_progress: bool = False,
) -> TileFeatures:
    """Return the library's features, loading them from ``directory`` when cached.

    The cache key is the library generation, the geometry and the tile count,
    so a changed library or geometry computes them anew. Files are written
    atomically; a damaged cache entry is recomputed.
    """
    if directory is None:
        return compute_features(tiles, geometry, show_progress)
    step = bound_step(geometry.side)
    name = (
        f"v{FEATURES_VERSION}-g{generation}-n{len(tiles)}-side{geometry.side}-"
        f"f{geometry.factor}-s{step}-d{BOUND_DIMENSIONS}.npz"
    )
    path = directory / name
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as data:
                return TileFeatures(**{key: data[key] for key in data.files})
        except (OSError, ValueError, KeyError, TypeError):
            pass
    features = compute_features(tiles, geometry, show_progress)
    partial = path.with_name(f".{name}.{os.getpid()}.part.npz")
    try:
        np.savez(partial, **features.__dict__)
        os.replace(partial, path)
    except OSError:
        partial.unlink(missing_ok=True)
    return features


def exact_distances(
    cell_vectors: np.ndarray,
    cell_norm2: np.ndarray,
    tiles: np.ndarray,
    tile_norm2: np.ndarray,
    geometry: Geometry,
    cell_index: np.ndarray,
    tile_index: np.ndarray,
) -> np.ndarray:
    """Exact objective for the pairs ``(cell_index[k], tile_index[k])``, as int64."""
    out = np.empty(len(cell_index), np.int64)
    if len(cell_index) == 0:
        return out
    length = cell_vectors[0].size
    unique_tiles, inverse = np.unique(tile_index, return_inverse=True)
    per_batch = max(1, EXACT_BUDGET // length)
    pooled = np.empty((len(unique_tiles), length), np.float64)
    for start in range(0, len(unique_tiles), per_batch):
        chosen = unique_tiles[start:start + per_batch]
        pooled[start:start + len(chosen)] = geometry.pool_tiles(
            np.asarray(tiles[chosen])).reshape(len(chosen), -1)
    flat_cells = cell_vectors.reshape(len(cell_vectors), -1)
    for start in range(0, len(cell_index), per_batch):
        stop = start + per_batch
        cells = flat_cells[cell_index[start:stop]].astype(np.float64)
        dots = np.einsum("ij,ij->i", cells, pooled[inverse[start:stop]])
        out[start:stop] = (
            geometry.weight * cell_norm2[cell_index[start:stop]]
            - 2 * dots.astype(np.int64)
            + tile_norm2[tile_index[start:stop]]
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


def match_exact(
    cell_vectors: np.ndarray,
    tiles: np.ndarray,
    geometry: Geometry,
    features: TileFeatures | None = None,
    show_progress: bool = False,
) -> MatchResult:
    """Find, for every cell, a tile of minimum objective (ties: lowest position).

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

    Returns
    -------
    MatchResult
    """
    count = len(cell_vectors)
    if features is None:
        features = compute_features(tiles, geometry)
    step = bound_step(geometry.side)
    scale = _scale(geometry)
    flat = cell_vectors.reshape(count, -1).astype(np.int64)
    cell_norm2 = np.einsum("ij,ij->i", flat, flat)
    del flat
    means = _block_means(cell_vectors, step) - features.mean
    projected = (means @ features.basis.T.astype(np.float64))
    deviation2 = np.einsum("ij,ij->i", means, means)
    row_term = (
        scale * np.einsum("ij,ij->i", projected, projected)
        - BOUND_SLACK * scale * deviation2
        - 1e-7 * geometry.weight * cell_norm2
    ).astype(np.float32)
    cell_features = (-2.0 * scale * projected).astype(np.float32)
    del means, projected

    best_distance = np.full(count, np.iinfo(np.int64).max, np.int64)
    best_tile = np.full(count, np.iinfo(np.int64).max, np.int64)
    evaluated = 0
    tile_count = len(tiles)
    with progress_bar(tile_count, "matching", unit="tile", enabled=show_progress) as bar:
        for tile_start in range(0, tile_count, TILE_CHUNK):
            tile_stop = min(tile_count, tile_start + TILE_CHUNK)
            chunk_features = features.projected[tile_start:tile_stop]
            column = features.column_term[tile_start:tile_stop]
            for cell_start in range(0, count, CELL_BLOCK):
                cell_stop = min(count, cell_start + CELL_BLOCK)
                bound = cell_features[cell_start:cell_stop] @ chunk_features.T
                bound += row_term[cell_start:cell_stop, None]
                bound += column[None, :]
                rows = np.arange(cell_stop - cell_start)
                # Cheap upper bound first: the best-bounded tile of the chunk.
                nearest = bound.argmin(axis=1)
                threshold = _threshold32(best_distance[cell_start:cell_stop])
                promising = bound[rows, nearest] <= threshold
                cells = rows[promising] + cell_start
                candidates = nearest[promising] + tile_start
                distances = exact_distances(
                    cell_vectors, cell_norm2, tiles, features.norm2, geometry, cells, candidates
                )
                evaluated += len(cells)
                _improve(best_distance, best_tile, cells, candidates, distances)
                # Then every tile whose bound does not rule it out.
                threshold = _threshold32(best_distance[cell_start:cell_stop])
                cell_hits, tile_hits = np.nonzero(bound <= threshold[:, None])
                keep = tile_hits != nearest[cell_hits]
                cells = cell_hits[keep] + cell_start
                candidates = tile_hits[keep] + tile_start
                distances = exact_distances(
                    cell_vectors, cell_norm2, tiles, features.norm2, geometry, cells, candidates
                )
                evaluated += len(cells)
                _improve(best_distance, best_tile, cells, candidates, distances)
            bar.update(tile_stop - tile_start)
    return MatchResult(best_tile, best_distance, evaluated)


def _threshold32(best: np.ndarray) -> np.ndarray:
    """Best distances as float32, rounded up so the comparison never drops a tie."""
    as32 = best.astype(np.float32)
    return np.nextafter(as32, np.float32(np.inf))


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
    upscaled = vectors.repeat(factor, axis=1).repeat(factor, axis=2).astype(np.int64)
    flat_tiles = np.asarray(tiles).reshape(len(tiles), -1).astype(np.int64)
    best_tile = np.empty(len(cells), np.int64)
    best_distance = np.empty(len(cells), np.int64)
    for index, cell in enumerate(upscaled.reshape(len(cells), -1)):
        distances = ((flat_tiles - cell) ** 2).sum(axis=1)
        best_tile[index] = int(np.argmin(distances))
        best_distance[index] = distances[best_tile[index]]
    return MatchResult(best_tile, best_distance, len(cells) * len(tiles))
