"""Contrast transfer: each tile's spread moved toward its cell's, and the tiles re-ranked.

With ``contrast = B`` a tile ``t`` (per channel, in the metric's colour
space) is drawn as ``mean(t) + g (t - mean(t))`` and then shifted by the
tint, ``A (mean(c) - mean(t))``, where the gain ``g = (sigma_c / sigma_t)^B``
(``sigma`` the channel's standard deviation over the cell as drawn and over
the tile), kept between :data:`GAIN_LIMITS`.

Over the ``n`` pixels of a tile, writing ``c~`` and ``t~`` for the cell and
tile less their means, the squared distance after both is, per channel,
``g^2 |t~|^2 - 2 g <t~, c~> + |c~|^2 + n (1 - A)^2 (mean(t) - mean(c))^2``.
Every term comes from integer sums: ``<t~, c~> = <S_t, a> - n mean(t) mean(c)``
with ``S_t`` the tile's block sums and ``a`` the compared cell, so the
distance of a pair is exact up to float64 rounding. A gain only lowers the
distance for well-matched spreads and is not a bound-friendly quantity, so
the exact search first finds each cell's best :data:`CANDIDATES` tiles after
the tint alone, and those are re-ranked after the contrast transfer.

After a match (:func:`finish`), two corrections apply to the picks as they
are, without re-ranking:

* **Adaptive tint** (``tint_max``): a cell whose tile's mean colour would
  still be off by more than the cell's own texture leaves a visible blot from
  afar. Its tint rises to ``a_i = 1 - s_i / |mean(c) - mean(t)|`` (the least
  that brings the mean error down to ``s_i``), kept between ``tint`` and
  ``tint_max``, where ``s_i`` is the cell's spread (root-mean-square
  distance of its pixels from its mean, at least :data:`TOLERANCE_FLOOR`
  encoded levels). The mean term of the distance, ``n (1 - a)^2 |mean(c) -
  mean(t)|^2``, only falls as ``a`` rises, so no pick gets worse.
* **Contrast after an assignment**: repetition limits are solved on the
  tinted distances (their certificate is for that objective); the chosen
  tiles then get their gains.

The picks' distances are then those after every correction (float64).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..grid import Geometry
from ._features import TileFeatures
from ._kernels import channel_moments, channel_pair_dots
from ._registry import MatchRequest, MatchResult

#: Smallest and largest gain of a tile's spread.
GAIN_LIMITS = (0.25, 4.0)
#: Candidates per cell (after the tint alone) re-ranked after the contrast transfer.
CANDIDATES = 16
#: Least mean-colour error (encoded levels, per pixel) the adaptive tint leaves.
TOLERANCE_FLOOR = 4.0
#: Bytes of float64 pixels gathered at a time: small enough to stay in cache, for
#: temporaries of hundreds of megabytes cost more in fresh pages than in arithmetic.
_CHUNK_BYTES = 4 << 20


def transfer(
    cell_vectors: np.ndarray,
    tiles: np.ndarray,
    geometry: Geometry,
    features: TileFeatures,
    candidates: np.ndarray,
    strength: float,
    tint: float | np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Distances and gains of cell-candidate pairs after the contrast transfer and tint.

    Parameters
    ----------
    cell_vectors : numpy.ndarray
        ``(N, h, w, 3)`` uint8 compared cells (in the metric's encoding).
    tiles : numpy.ndarray
        ``(M, match_height, match_px, 3)`` uint8 candidate tiles (same encoding).
    geometry : Geometry
        How cells and tiles are compared.
    features : TileFeatures
        Features of ``tiles`` (block sums and channel sums).
    candidates : numpy.ndarray
        ``(N, k)`` candidate indices; ``-1`` for none.
    strength : float
        ``B``: the fraction (as an exponent) of the spread ratio applied.
    tint : float or numpy.ndarray
        ``A``, the tint's strength (or ``(N,)``, one per cell), exactly as the
        match rounds it (hundredths).

    Returns
    -------
    distance, gain : numpy.ndarray
        ``(N, k)`` float64 objective after both (``inf`` for a missing
        candidate) and ``(N, k, 3)`` float64 gains.
    """
    count, width = candidates.shape
    pixels = geometry.pixels
    weight = geometry.weight
    shift = 1.0 - np.broadcast_to(np.round(np.asarray(tint, np.float64) * 100) / 100, (count,))
    cell_pixels = cell_vectors.reshape(count, -1, 3)
    sums, squares = _moments(cell_pixels)
    cell_sums = sums.astype(np.float64) * weight
    cell_squares = squares.astype(np.float64) * weight
    cell_mean = cell_sums / pixels
    cell_spread = np.maximum(cell_squares - pixels * cell_mean**2, 0.0)
    pooled = features.pooled if features.pooled is not None else tiles.reshape(len(tiles), -1)
    rows = np.repeat(np.arange(count), width)
    columns = candidates.ravel()
    present = columns >= 0
    distance = np.full(count * width, np.inf)
    gain = np.ones((count * width, 3))
    listed = np.flatnonzero(present)
    # Each tile's sums of squares once (after an assignment, a tile has hundreds of cells).
    used, slot = np.unique(columns[listed], return_inverse=True)
    used_squares = _moments(np.asarray(tiles[used]).reshape(len(used), -1, 3))[1]
    pair_slot = np.zeros(len(columns), np.int64)
    pair_slot[listed] = slot
    chunk = max(1, _CHUNK_BYTES // (8 * tiles[0].size))
    for start in range(0, len(listed), chunk):
        where = listed[start:start + chunk]
        cells, tile = rows[where], columns[where]
        tile_rows = np.asarray(pooled[tile]).reshape(len(tile), -1, 3)
        dots = channel_pair_dots(cell_pixels, tile_rows, cells, np.arange(len(tile)))
        if dots is None:
            dots = np.einsum("ipc,ipc->ic", cell_pixels[cells].astype(np.float64),
                             tile_rows.astype(np.float64))
        else:
            dots = dots.astype(np.float64)
        tile_squares = used_squares[pair_slot[where]].astype(np.float64)
        tile_sums = features.channel_sums[tile].astype(np.float64)
        tile_mean = tile_sums / pixels
        tile_spread = np.maximum(tile_squares - pixels * tile_mean**2, 0.0)
        cross = dots - pixels * tile_mean * cell_mean[cells]
        ratio = np.sqrt(np.divide(cell_spread[cells], tile_spread,
                                  out=np.ones_like(tile_spread), where=tile_spread > 0))
        ratio[tile_spread <= 0] = 1.0
        g = np.clip(ratio**strength, *GAIN_LIMITS)
        per_channel = (g * g * tile_spread - 2 * g * cross + cell_spread[cells]
                       + pixels * (shift[cells, None] * (tile_mean - cell_mean[cells]))**2)
        distance[where] = np.maximum(per_channel.sum(axis=1), 0.0)
        gain[where] = g
    return distance.reshape(count, width), gain.reshape(count, width, 3)


def _moments(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 3)`` int64 sums and sums of squares over the pixels of ``(N, P, 3)`` uint8 rows."""
    compiled = channel_moments(pixels)
    if compiled is not None:
        return compiled
    count = len(pixels)
    sums = np.empty((count, 3), np.int64)
    squares = np.empty((count, 3), np.int64)
    block = max(1, _CHUNK_BYTES // (2 * max(1, pixels[0].size)))
    for start in range(0, count, block):
        part = pixels[start:start + block]
        sums[start:start + block] = part.sum(axis=1, dtype=np.int64)
        # Squares of 8-bit values fit 16 bits: a quarter of the float64 traffic.
        values = part.astype(np.uint16)
        values *= values
        squares[start:start + block] = values.sum(axis=1, dtype=np.int64)
    return sums, squares


def rerank(distance: np.ndarray) -> np.ndarray:
    """Each row's least distance's column (ties: the first, the best before the transfer)."""
    return distance.argmin(axis=1)


def adaptive_tint(
    cell_vectors: np.ndarray, geometry: Geometry, features: TileFeatures, picks: np.ndarray,
    tint: float, tint_max: float,
) -> np.ndarray:
    """Each pick's tint strength under ``tint_max`` (see the module's description).

    Returns
    -------
    numpy.ndarray
        ``(N,)`` float64 strengths in hundredths, between ``tint`` and ``tint_max``.
    """
    count = len(cell_vectors)
    pixels = geometry.pixels
    cell_pixels = cell_vectors.reshape(count, -1, 3)
    # From integer sums and sums of squares: no float64 copy of the cells.
    sums, squares = _moments(cell_pixels)
    samples = cell_pixels.shape[1]
    cell_mean = sums / samples
    spread = np.sqrt(np.maximum((squares - sums * cell_mean).sum(axis=1), 0.0) / samples)
    tolerance = np.maximum(spread, TOLERANCE_FLOOR)
    error = np.linalg.norm(cell_mean - features.channel_sums[picks] / pixels, axis=1)
    wanted = 1.0 - np.divide(tolerance, error, out=np.ones(count), where=error > 0)
    # Hundredths, as the match rounds the tint; up, so the error stays within tolerance.
    low = round(tint * 100) / 100
    high = max(low, np.floor(tint_max * 100 + 1e-9) / 100)
    return np.clip(np.ceil(wanted * 100 - 1e-9) / 100, low, high)


def best_after_transfer(request: MatchRequest, found: MatchResult) -> MatchResult:
    """Each cell's best of its candidates ``found`` once the contrast transfer is applied.

    ``found`` holds each cell's nearest candidates in the objective's units
    (at least ``max(2, CANDIDATES * variants)`` of them, as the exact
    searches give them); the pick and its gain come from :func:`transfer`
    and :func:`rerank`.
    """
    assert found.candidates is not None
    options = request.options
    distance, gain = transfer(request.cell_vectors, request.candidates, request.geometry,
                              request.features, found.candidates, options.contrast,
                              options.tint)
    pick = rerank(distance)
    rows = np.arange(len(pick))
    return MatchResult(found.candidates[rows, pick], distance[rows, pick],
                       found.evaluated, found.bounded, gain=gain[rows, pick])


def finish(request: MatchRequest, result: MatchResult) -> MatchResult:
    """The picks after the corrections no matcher ranked by (see the module's description)."""
    options = request.options
    gains = options.contrast and result.gain is None
    if options.tint_max is None and not gains:
        return result
    tint: float | np.ndarray = options.tint
    if options.tint_max is not None:
        tint = adaptive_tint(request.cell_vectors, request.geometry, request.features,
                             result.tile, options.tint, options.tint_max)
    # Gains already chosen by a re-ranking come out the same: they depend on the pair only.
    distance, gain = transfer(request.cell_vectors, request.candidates, request.geometry,
                              request.features, result.tile[:, None], options.contrast, tint)
    return replace(
        result, distance=distance[:, 0], gain=gain[:, 0] if options.contrast else None,
        tint=tint if isinstance(tint, np.ndarray) else None,
    )
