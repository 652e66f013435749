"""Contrast transfer: each tile's spread moved toward its cell's, and the tiles re-ranked.

With ``contrast = B`` a tile ``t`` (per channel, in the metric's colour
space) is drawn as ``mean(t) + g (t - mean(t))`` and then shifted by the
tint, ``a (mean(c) - mean(t))``, where the gain ``g = (sigma_c / sigma_t)^B``
(``sigma`` the channel's standard deviation over the cell as drawn and over
the tile), kept between :data:`GAIN_LIMITS`, and ``a`` is the tint ``A``,
held back near the ends of the colour range (below).

Over the ``n`` pixels of a tile, writing ``c~`` and ``t~`` for the cell and
tile less their means, the squared distance after both is, per channel,
``g^2 |t~|^2 - 2 g <t~, c~> + |c~|^2 + n (1 - a)^2 (mean(t) - mean(c))^2``.
Every term comes from integer sums: ``<t~, c~> = <S_t, v> - n mean(t) mean(c)``
with ``S_t`` the tile's block sums and ``v`` the compared cell, so the
distance of a pair is exact up to float64 rounding. A gain only lowers the
distance for well-matched spreads and is not a bound-friendly quantity, so
the exact search first finds each cell's best :data:`CANDIDATES` tiles after
the tint alone, and those are re-ranked after the contrast transfer.

Room for the photo
------------------
A tint moves a tile's mean to a white or black cell's, the very end of the
range, where drawing clips half of the tile away; on a flat cell the gain is
also at its least, :data:`GAIN_LIMITS` ``[0] = g0``, and the photo all but
vanishes. So, with the contrast transfer on, a pair's tint stops short of
the ends of the lightness (:func:`mosaicist.colour.lightness_axis`: luma
``w @ t`` for sRGB, ``L`` for Lab and Oklab), which is what makes a photo's
detail visible. With ``[lo, hi]`` the lightness range, ``mu`` the tile's mean
lightness, ``d`` the cell's less the tile's, ``sigma`` the tile's per-channel
standard deviations and the room ``r = ROOM (w @ sigma)`` (:data:`ROOM`
``= g0``; ``w @ sigma`` bounds the lightness's standard deviation from
above), the drawn mean lightness ``mu + a d`` stays within ``[lo + r, hi - r]``::

    a <= (hi - r - mu) / d  where d > 0,      a <= (mu - lo - r) / -d  where d < 0,

and the pair's tint ``a`` is the lesser of that and ``A``, floored to
hundredths (as every tint here); a tile whose mean lightness already lies
within ``r`` of the end it moves toward is not held back (it moves less than
``r``). Only the lightness is held back: with ``d = mean(c) - mean(t)`` and
``Q`` the chroma projection (below), the shift is::

    a d + (A - a) Q d,

the chroma of the mean moved at the full ``A`` (it has no lightness: ``w @ Q d
= 0``), so a tile on a white or black cell is drawn a grey short of the
cell's lightness, not a tinge of its own colour short of it (which made a
grey target's mosaic colourful: flat white from 2,000 photos, colourfulness
2.9 against 0), and a channel of little spread at its own end (the red of a
green photo on black) does not hold the others back. The pair's mean error
is then ``-(1 - a) d + (A - a) Q d``; where ``a = A`` it is ``-(1 - a) d`` as
without the room. At gain
``g`` the drawn lightness spreads at most ``g (w @ sigma)`` and the room is
at least ``g0 / g`` of that; a bell-shaped spread clipped ``k`` spreads from
its mean keeps ``kappa(k)`` of itself (``kappa(0) = 0.58``, ``kappa(1) =
0.87``), and ``g kappa(g0 / g)`` is least at ``g = g0``: a tile keeps about
``0.87 g0 = 0.22`` of its own spread on a white or black cell, as on a flat
mid-grey one, against ``0.58 g0 = 0.15`` moved to the very end. The cost is
a mean lightness at most ``r`` short of the cell's, only within ``r`` of the
ends. Without the transfer (``B = 0``) the gain is 1, a tile moved to an end
keeps ``kappa(0)`` of its spread, and the tint is ``A``.

These figures hold for ``seed`` and ``lab``, whose lightness a screen shows in
about even steps (on a flat black or white target the photos keep 0.21-0.25 of
their luma spread). Oklab's lightness spends its lowest tenth on what a screen
shows as black (sRGB level 1 is ``L = 0.067``, 17 encoded levels), so at the
black end the room, measured in ``L``, leaves the photos all but invisible (a
flat black target: 0.016 of their luma spread kept, drawn luma 0.2 of 255).

Chroma
------
With ``chroma = K`` a pick's colour variation is moved toward its cell's
too, never above the tile's own: each drawn deviation ``D = G t~`` (``G``
the gains) is a grey of its own lightness plus its chroma ``Q D``, ``Q = I -
g w^T`` (:func:`mosaicist.colour.chroma_projection`: ``g`` the greys'
direction, ``w`` the lightness weights), and the chroma is scaled by
``s = min(1, sqrt(|Q c~|^2 / |Q D|^2))^K``: a tile on a grey (or flat) cell
turns grey (``s = 0`` for any ``K > 0``: the cell's ``|Q c~|^2`` is summed from
whole numbers, exactly 0 there), one on a cell at least as colourful keeps its
colours, and the lightness pattern, the mean and the gains stay. With ``u = 1 -
s`` the drawn deviation is ``D - u Q D``, and the distance changes exactly by::

    d(s) - d(1) = u^2 |Q D|^2 - 2 u (<Q D, D> - <Q D, c~>),

each term a contraction of ``Q`` with the 3x3 moments ``S'_ij = g_i g_j <t~_i,
t~_j>`` of the drawn tile and ``Y_ij = g_i <t~_i, c~_j>`` of the pair (block
sums against the cell, as above). It applies to the picks after every other
correction, without re-ranking (:func:`chroma_factors`).

After a match (:func:`finish`), two corrections apply to the picks as they
are, without re-ranking:

* **Adaptive tint** (``tint_max``): a cell whose tile's mean colour would
  still be off by more than the cell's own texture leaves a visible blot from
  afar. Its tint rises to ``a_i = 1 - s_i / |mean(c) - mean(t)|`` (the least
  that brings the mean error down to ``s_i``), kept between ``tint`` and
  ``tint_max``, where ``s_i`` is the cell's spread (root-mean-square
  distance of its pixels from its mean, at least :data:`TOLERANCE_FLOOR`
  encoded levels). The mean term of the distance, ``n (1 - a)^2 |mean(c) -
  mean(t)|^2``, only falls as ``a`` rises, so no pick gets worse. The room
  above still holds it back.
* **Contrast after an assignment**: repetition limits are solved on the
  tinted distances (their certificate is for that objective); the chosen
  tiles then get their gains and their tints held back.

The picks' distances are then those after every correction (float64), and
their tints (:attr:`MatchResult.tint`) those the picture is drawn with.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..colour import chroma_differences, chroma_projection, lightness_axis
from ..grid import Geometry
from ._features import TileFeatures
from ._kernels import channel_moments, channel_pair_dots
from ._registry import MatchRequest, MatchResult

#: Smallest and largest gain of a tile's spread.
GAIN_LIMITS = (0.25, 4.0)
#: Candidates per cell (after the tint alone) re-ranked after the contrast transfer.
CANDIDATES = 16
#: Room (in the tile's own standard deviations of lightness) a tint leaves between a tile's
#: mean and black or white, with the contrast transfer on: a tile at the least gain then
#: keeps nearly all of its drawn spread (see the module's description).
ROOM = GAIN_LIMITS[0]
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
    metric: str = "seed",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distances, gains and tints of cell-candidate pairs after the contrast transfer and tint.

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
    metric : str
        The encoding's metric: where its colour range ends (see the module's
        description).

    Returns
    -------
    distance, gain, tint : numpy.ndarray
        ``(N, k)`` float64 objective after both (``inf`` for a missing
        candidate), ``(N, k, 3)`` float64 gains and ``(N, k)`` float64 tint
        strengths (``A``, held back near the range's ends when ``strength``
        is not 0).
    """
    count, width = candidates.shape
    pixels = geometry.pixels
    weight = geometry.weight
    wanted = np.broadcast_to(np.round(np.asarray(tint, np.float64) * 100) / 100, (count,))
    axis, low, high = lightness_axis(metric)
    projection = chroma_projection(metric)
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
    applied = wanted[rows].copy()
    listed = np.flatnonzero(present)
    if not len(listed):
        # No candidate at all (an empty library): nothing to reshape or gather.
        return (distance.reshape(count, width), gain.reshape(count, width, 3),
                applied.reshape(count, width))
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
        a = wanted[cells]
        shift = cell_mean[cells] - tile_mean
        if strength:
            sigma = np.sqrt(tile_spread / pixels)
            a = np.minimum(a, _room_limit(tile_mean @ axis, shift @ axis, sigma @ axis, low,
                                          high))
        error = mean_errors(shift, a, wanted[cells], projection)
        per_channel = (g * g * tile_spread - 2 * g * cross + cell_spread[cells]
                       + pixels * error**2)
        distance[where] = np.maximum(per_channel.sum(axis=1), 0.0)
        gain[where] = g
        applied[where] = a
    return (distance.reshape(count, width), gain.reshape(count, width, 3),
            applied.reshape(count, width))


def _room_limit(
    mean: np.ndarray, shift: np.ndarray, sigma: np.ndarray, low: float, high: float,
) -> np.ndarray:
    """Largest tint of each pair that leaves the tile room before the lightness's ends.

    ``mean`` (the tile's), ``shift`` (the cell's less the tile's) and
    ``sigma`` (the bound on the tile's spread) are ``(P,)`` lightnesses in
    encoded levels, between ``low`` and ``high``; see the module's
    description. Returns ``(P,)`` tints in hundredths, ``inf`` where none is
    too strong.
    """
    room = ROOM * sigma
    # How far the mean may still travel toward the end it moves to (negative: already
    # within the room of it, where the tile moves less than the room and is not held).
    left = np.where(shift > 0, high - room - mean, mean - low - room)
    limit = np.full(shift.shape, np.inf)
    np.divide(left, np.abs(shift), out=limit, where=(shift != 0) & (left >= 0))
    # Down to hundredths (a tint is never finer), so that the room is kept.
    return np.floor(limit * 100 + 1e-9) / 100


def mean_errors(shift: np.ndarray, tint: np.ndarray, chroma_tint: np.ndarray,
                projection: np.ndarray) -> np.ndarray:
    """The ``(P, 3)`` mean errors of pairs as drawn: each tile's shifted mean less its cell's.

    ``-(1 - a) d + (A - a) Q d`` for ``(P, 3)`` shifts ``d`` (the cells' means
    less the tiles'), ``(P,)`` tints ``a`` as applied and ``A`` as asked, and
    ``Q`` the metric's :func:`~mosaicist.colour.chroma_projection`; exactly
    ``-(1 - a) d`` where ``a = A`` (the distances as without the room).
    """
    error = (1.0 - tint)[:, None] * -shift
    held = np.flatnonzero(tint < chroma_tint)
    if len(held):
        # Held back in lightness only: the chroma still moves by A.
        error[held] += (chroma_tint[held] - tint[held])[:, None] * (shift[held] @ projection.T)
    return error


def mean_shifts(
    cell_means: np.ndarray,
    tile_means: np.ndarray,
    tint: float | np.ndarray,
    chroma_tint: float | np.ndarray,
    metric: str = "seed",
) -> np.ndarray:
    """Each tile's mean moved toward its cell's: its lightness by ``tint``, its chroma by
    ``chroma_tint``.

    ``a d + (A - a) Q d`` with ``d`` the cell's mean less the tile's (see the
    module's description): ``a d`` where the two strengths are equal.

    Parameters
    ----------
    cell_means, tile_means : numpy.ndarray
        ``(N, 3)`` means, in the metric's encoded levels (or any units that
        scale each channel alike for both).
    tint : float or numpy.ndarray
        ``a``: the tint as applied (held back near black and white), one or ``(N,)``.
    chroma_tint : float or numpy.ndarray
        ``A``: the tint asked for, which the mean's chroma moves by, one or ``(N,)``.
    metric : str
        The encoding's metric (where the greys lie).

    Returns
    -------
    numpy.ndarray
        ``(N, 3)`` float64 shifts, in the units of the means.
    """
    shift = np.asarray(cell_means, np.float64) - np.asarray(tile_means, np.float64)
    count = len(shift)
    applied = np.broadcast_to(np.asarray(tint, np.float64), (count,))
    asked = np.broadcast_to(np.asarray(chroma_tint, np.float64), (count,))
    moved = applied[:, None] * shift
    held = np.flatnonzero(asked != applied)
    if len(held):
        moved[held] += (asked[held] - applied[held])[:, None] * (
            shift[held] @ chroma_projection(metric).T)
    return moved


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
    searches give them); the pick, its gain and its tint come from
    :func:`transfer` and :func:`rerank`.
    """
    assert found.candidates is not None
    options = request.options
    distance, gain, tint = transfer(request.cell_vectors, request.candidates,
                                    request.geometry, request.features, found.candidates,
                                    options.contrast, options.tint, options.metric)
    pick = rerank(distance)
    rows = np.arange(len(pick))
    return MatchResult(found.candidates[rows, pick], distance[rows, pick],
                       found.evaluated, found.bounded, gain=gain[rows, pick],
                       tint=tint[rows, pick] if options.tint else None)


def chroma_factors(
    cell_vectors: np.ndarray,
    tiles: np.ndarray,
    geometry: Geometry,
    features: TileFeatures,
    picks: np.ndarray,
    gain: np.ndarray | None,
    strength: float,
    metric: str = "seed",
) -> tuple[np.ndarray, np.ndarray]:
    """Each pick's chroma factor and the change of its distance (see the module's description).

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
    picks : numpy.ndarray
        ``(N,)`` each cell's tile (a position in ``tiles``).
    gain : numpy.ndarray or None
        ``(N, 3)`` the picks' contrast gains (None: all 1).
    strength : float
        ``K``, the exponent of the chroma spread ratio (0: every factor 1).
    metric : str
        The encoding's metric (where the greys lie).

    Returns
    -------
    factor, change : numpy.ndarray
        ``(N,)`` float64 factors in ``[0, 1]`` on each pick's chroma, and
        what each pick's distance gains by them (never positive where the
        factor is 1; exact up to float64 rounding).
    """
    count = len(picks)
    factor = np.ones(count)
    change = np.zeros(count)
    if not strength or not count:
        return factor, change
    pixels = geometry.pixels
    weight = geometry.weight
    chroma = chroma_projection(metric)
    energy = chroma.T @ chroma
    gains = np.ones((count, 3)) if gain is None else np.asarray(gain, np.float64)
    pooled = features.pooled if features.pooled is not None else tiles.reshape(len(tiles), -1)
    cell_pixels = cell_vectors.reshape(count, -1, 3)
    tile_size = int(np.prod(tiles.shape[1:]))
    chunk = max(1, _CHUNK_BYTES // (8 * max(tile_size, cell_pixels[0].size)))
    for start in range(0, count, chunk):
        part = slice(start, start + chunk)
        tile = picks[part]
        size = len(tile)
        whole = np.asarray(tiles[tile]).reshape(size, -1, 3).astype(np.float64)
        cell = cell_pixels[part].astype(np.float64)
        block = np.asarray(pooled[tile]).reshape(size, -1, 3).astype(np.float64)
        tile_mean = features.channel_sums[tile].astype(np.float64) / pixels
        cell_mean = weight * cell.sum(axis=1) / pixels
        g = gains[part]
        # 3x3 moments about the means: the drawn tile's own, the cell's and the pair's.
        own = (np.matmul(whole.transpose(0, 2, 1), whole)
               - pixels * tile_mean[:, :, None] * tile_mean[:, None, :])
        own *= g[:, :, None] * g[:, None, :]
        pair = (np.matmul(block.transpose(0, 2, 1), cell)
                - pixels * tile_mean[:, :, None] * cell_mean[:, None, :])
        pair *= g[:, :, None]
        drawn = np.maximum(np.einsum("ij,nij->n", energy, own), 0.0)
        wanted = cell_chroma(cell_pixels[part], metric, weight)
        # <Q D, D> and <Q D, c~>.
        with_tile = np.einsum("ij,nij->n", chroma, own)
        with_cell = np.einsum("ij,nji->n", chroma, pair)
        ratio = np.ones(size)
        np.sqrt(np.divide(wanted, drawn, out=ratio, where=drawn > 0), out=ratio,
                where=drawn > 0)
        s = np.minimum(ratio, 1.0) ** strength
        u = 1.0 - s
        factor[part] = s
        change[part] = u * u * drawn - 2.0 * u * (with_tile - with_cell)
    return factor, change


def cell_chroma(cells: np.ndarray, metric: str, weight: int = 1) -> np.ndarray:
    """Each cell's ``|Q c~|^2``: its chroma energy about its mean, exactly 0 without chroma.

    Summed from whole numbers (:func:`mosaicist.colour.chroma_differences`:
    ``Q = R D``) centred before they are squared, so that a grey or flat cell
    has exactly 0, and ``s = 0`` for every ``K > 0``. A moment of floats left
    about 1e-16 of a tile's chroma there, which a small ``K`` lifted to most of
    its colours (``K = 0.01``: 0.83).

    Parameters
    ----------
    cells : numpy.ndarray
        ``(N, P, 3)`` uint8 compared cells, in the metric's encoding.
    metric : str
        The encoding's metric (where the greys lie).
    weight : int
        Tile pixels per compared pixel (:attr:`mosaicist.grid.Geometry.weight`).

    Returns
    -------
    numpy.ndarray
        ``(N,)`` float64, in squared encoded levels over the tile's pixels.
    """
    differences, lift = chroma_differences(metric)
    across = (np.asarray(cells).astype(np.int32) @ differences.T.astype(np.int32)).astype(
        np.float64)
    # Whole sums over whole counts: a flat cell's mean is its value, exactly.
    across -= across.sum(axis=1, keepdims=True) / max(1, across.shape[1])
    moments = np.matmul(across.transpose(0, 2, 1), across)
    return np.maximum(weight * np.einsum("ij,nij->n", lift.T @ lift, moments), 0.0)


def finish(request: MatchRequest, result: MatchResult) -> MatchResult:
    """The picks after the corrections no matcher ranked by (see the module's description)."""
    result = _finish_contrast(request, result)
    options = request.options
    if not options.chroma:
        return result
    factor, change = chroma_factors(request.cell_vectors, request.candidates, request.geometry,
                                    request.features, result.tile, result.gain,
                                    options.chroma, options.metric)
    distance = np.maximum(np.asarray(result.distance, np.float64) + change, 0.0)
    return replace(result, distance=distance, chroma=factor)


def _finish_contrast(request: MatchRequest, result: MatchResult) -> MatchResult:
    """The picks' gains and tints where no matcher ranked by them."""
    options = request.options
    gains = options.contrast and result.gain is None
    if options.tint_max is None and not gains:
        return result
    tint: float | np.ndarray = options.tint
    if options.tint_max is not None:
        tint = adaptive_tint(request.cell_vectors, request.geometry, request.features,
                             result.tile, options.tint, options.tint_max)
    # Gains and tints already chosen by a re-ranking come out the same: they depend on
    # the pair only.
    distance, gain, applied = transfer(request.cell_vectors, request.candidates,
                                       request.geometry, request.features,
                                       result.tile[:, None], options.contrast, tint,
                                       options.metric)
    # Each pick's own tint where it may differ from cell to cell (held back, or adaptive),
    # and the tint asked for, which its chroma moves by.
    varies = options.tint_max is not None or bool(options.contrast and options.tint)
    asked = np.broadcast_to(np.round(np.asarray(tint, np.float64) * 100) / 100,
                            (len(result.tile),)).copy()
    return replace(
        result, distance=distance[:, 0], gain=gain[:, 0] if options.contrast else None,
        tint=applied[:, 0] if varies else None, chroma_tint=asked if varies else None,
    )
