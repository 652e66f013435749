"""Capped assignment: exact candidate lists, then a repetition-limited assignment.

With ``max_uses`` or ``min_spacing`` set, every cell first gets its ``k``
nearest candidates, exactly (:func:`~mosaicist.match.match_exact` with
``k > 1``), and :func:`~mosaicist.match.assign_tiles` then gives each cell
one of them under the limits, growing the lists where they are too short to
certify the result (see :mod:`mosaicist.match._assign`).

Limits count uses of a library tile whatever its transform, so the lists
of (tile, transform) candidates are reduced to each tile's best transform
before assigning, and mapped back afterwards.
"""

from __future__ import annotations

import numpy as np

from ._assign import MAX_CANDIDATES, assign_tiles, check_feasible
from ._exact import match_exact
from ._registry import Matcher, MatchRequest, MatchResult

#: Most (cell, candidate) entries kept for repetition-limited assignment.
CANDIDATE_BUDGET = 20_000_000
#: Candidates per cell of the first lists (grown where the assignment needs more).
FIRST_CANDIDATES = 16


class CappedMatcher(Matcher):
    """Exact candidates, then the min-cost (or greedy) assignment under repetition limits."""

    name = "assignment"
    repetition_limits = True

    def match(self, request: MatchRequest) -> MatchResult:
        options = request.options
        grid = request.grid
        variants = request.variants
        # Before any heavy work: too few tiles for the limits is an error at once.
        check_feasible(len(grid), len(request.library), options.max_uses, grid.rows, grid.cols,
                       options.min_spacing)
        latest: list[np.ndarray] = []

        def candidates(k: int) -> tuple[np.ndarray, np.ndarray]:
            result = match_exact(
                request.cell_vectors, request.candidates, request.geometry, request.features,
                request.show_progress, k=k * variants, tint=options.tint,
            )
            assert result.candidates is not None and result.candidate_distances is not None
            latest[:] = [result.candidates]
            return best_transform(result.candidates, result.candidate_distances, variants, k)

        tiles, distances = candidates(FIRST_CANDIDATES)
        # Tight caps on small libraries need long lists (up to every tile); keep the
        # candidate arrays near CANDIDATE_BUDGET entries.
        longest = max(MAX_CANDIDATES,
                      min(len(request.library), CANDIDATE_BUDGET // max(1, len(grid))))
        assignment = assign_tiles(
            tiles, distances, grid.rows, grid.cols, max_uses=options.max_uses,
            min_spacing=options.min_spacing, method=options.assign, more_candidates=candidates,
            show_progress=request.show_progress, max_candidates=longest,
        )
        # Back from library tiles to the (tile, transform) candidate that won.
        full = latest[0]
        tile_of = np.where(full >= 0, full // variants, -1)
        first = (tile_of == assignment.tile[:, None]).argmax(axis=1)
        chosen = full[np.arange(len(full)), first]
        return MatchResult(chosen, assignment.distance, assignment=assignment)


def best_transform(
    candidates: np.ndarray, distances: np.ndarray, variants: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
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
    tiles, distances : numpy.ndarray
        ``(N, k)`` library tiles, each at most once per row, in order of
        their best candidate; missing entries are ``-1`` (distance: the
        dtype's largest value, or infinity).
    """
    count, width = candidates.shape
    if variants == 1 and width >= k:
        return candidates[:, :k], distances[:, :k]
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
    return out_tiles, out_distances
