"""Per-tile features of the exact search, and the lower bound they give.

For a compared cell vector ``a`` and tile ``b`` (see :class:`~mosaicist.grid.Geometry`)
the objective is ``D(a, b) = w |a|^2 - 2 <a, S_b> + |b|^2``, an integer, where
``S_b`` are the tile's block sums and ``w`` the pixels per block.

Writing ``P_b = S_b / w`` and ``c_b = |b|^2 - |S_b|^2 / w`` (the tile's
within-block variation), ``D = w |a - P_b|^2 + c_b``. Block means over
``s x s`` groups and any orthonormal projection ``Q`` only shrink distances, so
``LB = w s^2 |Q (mean_s(a) - mean_s(P_b))|^2 + c_b <= D``. ``Q`` holds the top
principal components (PCA) of the library, fitted once and cached with the
features; keeping fewer components gives a weaker bound that is cheaper to
compute. Each bound is one float32 GEMM on augmented rows (:class:`TileFeatures`
``bound`` and :func:`cell_bound_rows`), loosened by a margin far above
float32's rounding error for these magnitudes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._runtime import release_pages
from ..grid import Geometry
from ..paths import atomic_folder
from ..progress import progress_bar

#: Tiles per chunk while computing features.
FEATURE_CHUNK = 4096

#: Principal components kept for the bound.
BOUND_DIMENSIONS = 128
#: Largest side of the block-mean grid the bound is computed on.
BOUND_GRID = 16
#: Relative slack of the float32 bound (worst-case rounding is below 1e-6 here).
BOUND_SLACK = 5e-5
#: Tiles used to fit the principal components.
PCA_SAMPLE = 16384

FEATURES_VERSION = 4
#: Cells whose bound rows are computed at once (bounds the temporary copies).
CELL_BLOCK = 4096


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



def bound_scale(geometry: Geometry) -> float:
    """The bound's factor ``w s^2``: tile pixels per compared pixel, times the block-mean area."""
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
        ``(M, match_px, match_px, 3)`` uint8 (may be a memory map).
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
    scale = bound_scale(geometry)
    length = geometry.side * geometry.side * 3
    if geometry.factor > 1 and pooled_out is None:
        pooled_out = np.empty((count, length), pooled_dtype(geometry))
    bound = np.empty((count, dimensions + 2), np.float32)
    residuals = np.empty(count, np.float64)
    norm2 = np.empty(count, np.int64)
    channel_sums = np.empty((count, 3), np.int64)
    chunk = max(1, min(FEATURE_CHUNK, (1 << 25) // max(1, tiles[0].size * 4)))
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
    a folder of ``.npy`` files (the block sums memory-mapped), written with
    :func:`~mosaicist.paths.atomic_folder`; a damaged entry is recomputed.
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
    try:
        with atomic_folder(path) as partial:
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
    except OSError:
        # A read-only or full cache only costs computing them in memory.
        return compute_features(tiles, geometry, show_progress)
    if pooled_out is not None:
        features.pooled = np.load(path / "pooled.npy", mmap_mode="r", allow_pickle=False)
    return features



def cell_bound_rows(
    cell_vectors: np.ndarray, geometry: Geometry, features: TileFeatures
) -> tuple[np.ndarray, np.ndarray]:
    """Return the cells' bound rows ``[-2 k Q m_a, row term, 1]`` and ``|a|^2``.

    Cells are taken :data:`CELL_BLOCK` at a time, so the float64 and int32
    copies made on the way stay a few tens of megabytes at any grid size.
    """
    count = len(cell_vectors)
    step = bound_step(geometry.side)
    scale = bound_scale(geometry)
    dimensions = len(features.basis)
    basis = features.basis.T.astype(np.float64)
    rows = np.empty((count, dimensions + 2), np.float32)
    cell_norm2 = np.empty(count, np.int64)
    for start in range(0, count, CELL_BLOCK):
        block = cell_vectors[start:start + CELL_BLOCK]
        flat = block.reshape(len(block), -1).astype(np.int32)
        norm2 = np.einsum("ij,ij->i", flat, flat, dtype=np.int64)
        del flat
        means = _block_means(block, step) - features.mean
        projected = means @ basis
        deviation2 = np.einsum("ij,ij->i", means, means)
        part = rows[start:start + len(block)]
        part[:, :dimensions] = -2.0 * scale * projected
        part[:, dimensions] = (
            scale * np.einsum("ij,ij->i", projected, projected)
            - BOUND_SLACK * scale * deviation2
            - 1e-7 * geometry.weight * norm2
        )
        part[:, dimensions + 1] = 1.0
        cell_norm2[start:start + len(block)] = norm2
    return rows, cell_norm2

