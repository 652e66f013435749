"""Exact nearest-tile search under the seed's objective.

For a compared cell vector ``a`` and tile ``b`` (see :class:`~mosaicist.grid.Geometry`) the
objective is ``D(a, b) = w |a|^2 - 2 <a, S_b> + |b|^2``, an integer, where
``S_b`` are the tile's block sums and ``w`` the pixels per block.

Search is exact, with memory bounded by the chunk sizes:

1. **Lower bounds.** ``LB <= D`` for every pair, from the principal
   components of the library's block means (see :mod:`._features`): one
   float32 GEMM per block of cells and tiles.
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

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

from .._runtime import worker_count
from ..errors import MosaicistError
from ..grid import Geometry
from ..progress import progress_bar
from ._features import (
    TileFeatures,
    bound_scale,
    cell_bound_rows,
    compute_features,
)
from ._registry import Matcher, MatchRequest, MatchResult

#: Cells per block of the first, sampled pass.
CELL_BLOCK = 2048
#: Tiles per chunk of the bound matrices (CELL_GROUP x TILE_CHUNK float32 = 4 MiB).
TILE_CHUNK = 4096
#: Float64 elements gathered at a time in the exact re-check.
EXACT_BUDGET = 1 << 22
#: Components of the coarse bound computed for every cell-tile pair.
COARSE_DIMENSIONS = 24
#: Cells that share one pass of the coarse bound.
CELL_GROUP = 256
#: Tiles in the sample that gives each cell its first upper bound.
SEED_SAMPLE = 2048


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
        ``(M, match_px, match_px, 3)`` uint8 in library order (may be memory-mapped).
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
    pixels = geometry.match_px * geometry.match_px
    # Exact tinted distances are D * n * q^2 - (2pq - p^2) |sum difference|^2 with A = p/q.
    distance_scale = pixels * 100 * 100 if hundredths else 1
    tint_factor = 2 * hundredths * 100 - hundredths * hundredths
    if hundredths and 3 * 255 * 255 * pixels * distance_scale >= 2**63:
        raise MosaicistError(
            f"tint needs tiles of at most 256 px for matching, got {geometry.match_px}; "
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
    scale = bound_scale(geometry)
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
    workers = min(worker_count(), len(groups))
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


def brute_force(cells: np.ndarray, tiles: np.ndarray, match_px: int) -> MatchResult:
    """Reference search: integer arithmetic over every tile pixel, no shortcuts.

    Each cell is brought to ``match_px`` exactly as the objective defines
    (pixel replication when ``match_px`` is a multiple of the cell size, else
    area averaging rounded to 8 bits) and compared with every tile. For tests
    and benchmarks on small inputs only.
    """
    cell_px = cells.shape[1]
    geometry = Geometry(cell_px, match_px)
    vectors = geometry.cell_vectors(cells)
    factor = geometry.factor
    length = match_px * match_px * 3
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


class ExactMatcher(Matcher):
    """The true minimum of the objective for every cell, on the CPU (:func:`match_exact`)."""

    name = "exact"

    def match(self, request: MatchRequest) -> MatchResult:
        return match_exact(request.cell_vectors, request.candidates, request.geometry,
                           request.features, request.show_progress, tint=request.options.tint)
