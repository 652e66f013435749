"""Colour spaces for matching: 8-bit encodings of CIE Lab and Oklab.

The matcher works on 8-bit, three-channel images and sums squared
per-channel differences. To match in a perceptual space, cells and tiles are
converted to it and stored in 8 bits with the **same scale on every
channel**, so that the squared distance stays the space's Euclidean distance:

=========  ==================================================  ==============
metric     encoding (channel values 0..255)                    quantisation
=========  ==================================================  ==============
``seed``   sRGB as is                                          exact
``lab``    ``L*``, ``a* + 128``, ``b* + 128`` (CIE 1976, D65)  <= 0.87 dE76
``oklab``  ``250 L``, ``250 a + 128``, ``250 b + 128``         <= 0.0035
=========  ==================================================  ==============

sRGB is linearised with the standard piecewise transfer function; Lab uses
the sRGB-to-XYZ matrix and the D65 white point (IEC 61966-2-1, CIE 15);
Oklab uses Björn Ottosson's published matrices (2020). Values outside the
8-bit range (none for sRGB input) are clipped.

Each encoding has a lightness (:func:`lightness_axis`): a weighted sum of its
channels, black at one end of its range and white at the other. For ``seed``
it is Rec. 601 luma, ``0.299 R + 0.587 G + 0.114 B`` (``0..255``); for
``lab`` and ``oklab`` the lightness channel, ``L*`` (``0..100``) and ``250 L``
(``0..250``). Whatever is moved past these ends (a tint, a gain) is clipped
when drawn. In sRGB each channel is clipped to ``0..255``, toward any cell's
value, so a clipped tile is drawn nearer its cell than the matcher's distance
(up to the rounding to whole levels); Lab and Oklab colours are clipped to the
sRGB gamut in linear light, not toward the cell, and a saturated photo moved
past white can be drawn farther from its cell than its distance says (up to
twice in Lab and 6% in Oklab, on adversarial photos).
"""

from __future__ import annotations

import functools

import numpy as np

from ._choices import METRICS as METRICS

_SRGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_D65 = np.array([0.95047, 1.0, 1.08883])
_OKLAB_M1 = np.array(
    [
        [0.4122214708, 0.5363325363, 0.0514459929],
        [0.2119034982, 0.6806995451, 0.1073969566],
        [0.0883024619, 0.2817188376, 0.6299787005],
    ]
)
_OKLAB_M2 = np.array(
    [
        [0.2104542553, 0.7936177850, -0.0040720468],
        [1.9779984951, -2.4285922050, 0.4505937099],
        [0.0259040371, 0.7827717662, -0.8086757660],
    ]
)
_OKLAB_SCALE = 250.0
_OFFSET = np.array([0.0, 128.0, 128.0])
#: Pixels converted at a time (bounds temporary float64 memory to ~100 MiB).
_BLOCK = 1 << 22


def _linear(rgb8: np.ndarray) -> np.ndarray:
    """sRGB 8-bit -> linear light in 0..1 (table lookup: only 256 values)."""
    values = np.arange(256) / 255.0
    table = np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)
    return table[rgb8]


def _srgb8(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0.0, 1.0)
    encoded = np.where(
        linear <= 0.0031308, 12.92 * linear, 1.055 * np.power(linear, 1 / 2.4) - 0.055
    )
    return np.clip(np.rint(encoded * 255.0), 0, 255).astype(np.uint8)


def _colourless_greys(rgb8: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` (Lab or Oklab of ``rgb8``) with the chroma of exact greys set to 0, in place.

    The matrices and the white point are rounded apart (a part in 10^5), so a
    grey's ``a`` and ``b`` came out near 0, not 0; a tint's shift added to them
    could then carry one channel of a grey photo over a rounding edge when drawn
    ((69, 69, 69) moved a quarter of the way to (254, 254, 254) in Lab was drawn
    (112, 111, 111)). Encodings are unchanged: those values round to 0.
    """
    grey = (rgb8[..., 0] == rgb8[..., 1]) & (rgb8[..., 1] == rgb8[..., 2])
    values[grey, 1:] = 0.0
    return values


def _grey_where_colourless(values: np.ndarray, linear: np.ndarray,
                           grey_linear: np.ndarray) -> np.ndarray:
    """``linear`` light, with ``grey_linear`` in all three channels where ``values`` has no chroma.

    The converse of :func:`_colourless_greys`: a colour whose ``a`` and ``b`` are
    exactly 0 (a grey photo, tinted toward a grey cell) is drawn exactly grey,
    not one channel a level off where the rounded matrices put it on an edge.
    """
    colourless = (values[..., 1] == 0) & (values[..., 2] == 0)
    if colourless.any():
        linear[colourless] = grey_linear[colourless][:, None]
    return linear


def rgb_to_lab(rgb8: np.ndarray) -> np.ndarray:
    """sRGB uint8 ``(..., 3)`` -> CIE Lab float64 (D65)."""
    xyz = _linear(rgb8) @ _SRGB_TO_XYZ.T / _D65
    delta = 6 / 29
    f = np.where(xyz > delta**3, np.cbrt(xyz), xyz / (3 * delta**2) + 4 / 29)
    lab = np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])],
        axis=-1,
    )
    return _colourless_greys(rgb8, lab)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIE Lab float (D65) -> sRGB uint8 (out-of-gamut values clipped)."""
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    delta = 6 / 29
    xyz = np.where(f > delta, f**3, 3 * delta**2 * (f - 4 / 29)) * _D65
    linear = xyz @ np.linalg.inv(_SRGB_TO_XYZ).T
    # A grey's linear light is its luminance Y (D65's Y is 1) in every channel.
    return _srgb8(_grey_where_colourless(lab, linear, xyz[..., 1]))


def rgb_to_oklab(rgb8: np.ndarray) -> np.ndarray:
    """sRGB uint8 ``(..., 3)`` -> Oklab float64."""
    lms = np.cbrt(_linear(rgb8) @ _OKLAB_M1.T)
    return _colourless_greys(rgb8, lms @ _OKLAB_M2.T)


def oklab_to_rgb(oklab: np.ndarray) -> np.ndarray:
    """Oklab float -> sRGB uint8 (out-of-gamut values clipped)."""
    lms = oklab @ np.linalg.inv(_OKLAB_M2).T
    linear = (lms**3) @ np.linalg.inv(_OKLAB_M1).T
    # A grey's linear light is L cubed in every channel (its l, m and s are all L).
    return _srgb8(_grey_where_colourless(oklab, linear, oklab[..., 0] ** 3))


def _scale(metric: str) -> float:
    return _OKLAB_SCALE if metric == "oklab" else 1.0


def to_space(rgb8: np.ndarray, metric: str) -> np.ndarray:
    """sRGB uint8 -> the metric's space as float64 (unscaled): identity for ``seed``."""
    if metric == "seed":
        return rgb8.astype(np.float64)
    if metric == "lab":
        return rgb_to_lab(rgb8)
    if metric == "oklab":
        return rgb_to_oklab(rgb8)
    raise ValueError(f"unknown metric {metric!r}")


def from_space(values: np.ndarray, metric: str, overwrite: bool = False) -> np.ndarray:
    """The metric's space (float, unscaled) -> sRGB uint8.

    With ``overwrite``, ``values`` (float) may be used as scratch space.
    """
    if metric == "seed":
        if overwrite and values.dtype.kind == "f":
            np.rint(values, out=values)
            np.clip(values, 0, 255, out=values)
            return values.astype(np.uint8)
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
    if metric == "lab":
        return lab_to_rgb(values)
    if metric == "oklab":
        return oklab_to_rgb(values)
    raise ValueError(f"unknown metric {metric!r}")


#: Buckets of linear light ``[i / n, (i + 1) / n)`` of :func:`_srgb8_levels`: a power of two
#: (``x * n`` and its floor are exact), narrower than the closest two of the 255 level
#: edges (3.0e-4 apart, at the dark end where the encode is ``12.92 x``), so that a
#: bucket holds one edge at most.
_ENCODE_BUCKETS = 4096


@functools.cache
def _srgb8_edges() -> np.ndarray:
    """``(255,)`` float64: the least linear light :func:`_srgb8` draws at level ``k = 1..255``.

    Found by bisection over the float64 numbers of ``[0, 1]`` (their bit
    patterns are ordered as they are), with :func:`_srgb8` itself as the
    judge: the edges are its own, to the last bit. Its steps (``pow``, to
    within an ulp, products, a rounding) rise with their argument, so a level
    once reached is kept (checked on both sides of every edge in the tests).
    """
    below = np.zeros(255, np.int64)  # bit patterns drawn below level k
    reached = np.full(255, np.float64(1.0).view(np.int64))  # drawn at k or above
    levels = np.arange(1, 256)
    while (reached - below > 1).any():
        middle = below + (reached - below) // 2
        at = _srgb8(middle.view(np.float64)[:, None])[:, 0] >= levels
        reached = np.where(at, middle, reached)
        below = np.where(at, below, middle)
    return reached.view(np.float64)


@functools.cache
def _srgb8_buckets() -> tuple[np.ndarray, np.ndarray]:
    """Per bucket of :data:`_ENCODE_BUCKETS` (and one for 1 and above): its first level, next edge.

    Returns
    -------
    first, next_edge : numpy.ndarray
        ``(n + 1,)`` uint8 levels of ``i / n`` and ``(n + 1,)`` float64 edges of the
        level above (infinite for 255).
    """
    edges = _srgb8_edges()
    first = _srgb8(np.arange(_ENCODE_BUCKETS + 1) / _ENCODE_BUCKETS)
    next_edge = np.append(edges, np.inf)[first]
    return first, next_edge


def _srgb8_levels(linear: np.ndarray, out: np.ndarray, bucket: np.ndarray | None = None,
                  index: np.ndarray | None = None, edge: np.ndarray | None = None,
                  above: np.ndarray | None = None) -> np.ndarray:
    """:func:`_srgb8` of float64 ``linear`` light into uint8 ``out``, without ``pow``.

    The level of the bucket the value falls in, one more where it reaches that
    bucket's edge (:func:`_srgb8_edges`): a multiply, two look-ups and a
    comparison, where :func:`_srgb8` took a ``pow``. Values below 0 and above
    1 go to the end buckets (levels 0 and 255). ``bucket`` and ``edge``
    (float64), ``index`` (intp) and ``above`` (bool), of ``linear``'s shape,
    are scratch space where given: fresh arrays of a block's size each took
    the time of the work itself in page faults.
    """
    first, next_edge = _srgb8_buckets()
    bucket = np.multiply(linear, float(_ENCODE_BUCKETS), out=bucket)
    np.clip(bucket, 0.0, float(_ENCODE_BUCKETS), out=bucket)
    if index is None:
        index = bucket.astype(np.intp)
    else:
        np.copyto(index, bucket, casting="unsafe")
    # mode="clip": the indices are in range, and "raise" copies through a buffer.
    np.take(first, index, out=out, mode="clip")
    edge = np.take(next_edge, index, out=edge, mode="clip")
    out += np.greater_equal(linear, edge, out=above)
    return out


#: The inverse matrices of the conversions back to sRGB, as :func:`lab_to_rgb` and
#: :func:`oklab_to_rgb` compute them (the same numbers, once).
_XYZ_TO_SRGB_T = np.linalg.inv(_SRGB_TO_XYZ).T
_OKLAB_M2_INV_T = np.linalg.inv(_OKLAB_M2).T
_OKLAB_M1_INV_T = np.linalg.inv(_OKLAB_M1).T


class _SpaceBlocks:
    """Conversions of blocks of up to ``pixels`` pixels between sRGB and Lab or Oklab, faster.

    For drawing many pixels a block at a time (:func:`mosaicist.render.dress_tiles`):
    the steps of :func:`to_space` and :func:`from_space` in buffers made once
    (fresh arrays of a block's size cost as much again in page faults), the
    sRGB encode by :func:`_srgb8_levels` and cubes by two products, no ``pow``.

    Parameters
    ----------
    metric : str
        ``"lab"`` or ``"oklab"``.
    pixels : int
        The most pixels of a block.
    """

    def __init__(self, metric: str, pixels: int) -> None:
        if metric not in ("lab", "oklab"):
            raise ValueError(f"unknown metric {metric!r}")
        self.metric = metric
        shape = (pixels, 3)
        self._first, self._second, self._third = (np.empty(shape) for _ in range(3))
        self._index = np.empty(shape, np.intp)
        self._above = np.empty(shape, bool)
        self._table = _linear(np.arange(256, dtype=np.uint8))

    def to_space(self, rgb8: np.ndarray, out: np.ndarray) -> np.ndarray:
        """:func:`to_space` of ``(m, 3)`` uint8 ``rgb8`` into ``(m, 3)`` float64 ``out``.

        The same numbers to the last bit: the same table, matrix products and
        cube roots, each step in place, Lab's channels written, not stacked.
        """
        count = len(rgb8)
        linear, mixed = self._first[:count], self._second[:count]
        np.copyto(self._index[:count], rgb8)
        np.take(self._table, self._index[:count], out=linear, mode="clip")
        if self.metric == "oklab":
            np.matmul(linear, _OKLAB_M1.T, out=mixed)
            np.cbrt(mixed, out=mixed)
            np.matmul(mixed, _OKLAB_M2.T, out=out)
            return self._colourless_greys(rgb8, out)
        xyz, f = mixed, self._third[:count]
        np.matmul(linear, _SRGB_TO_XYZ.T, out=xyz)
        for channel in range(3):  # a plane at a time: a loop over three values is slow
            xyz[:, channel] /= _D65[channel]
        delta = 6 / 29
        np.cbrt(xyz, out=f)
        dark = np.less_equal(xyz, delta**3, out=self._above[:count])
        if dark.any():
            # Both branches and a mask: index arrays of the dark values (most of a night
            # picture's) took longer.
            near_black = np.divide(xyz, 3 * delta**2, out=linear)
            near_black += 4 / 29
            np.copyto(f, near_black, where=dark)
        np.multiply(f[:, 1], 116, out=out[:, 0])
        out[:, 0] -= 16
        np.subtract(f[:, 0], f[:, 1], out=out[:, 1])
        out[:, 1] *= 500
        np.subtract(f[:, 1], f[:, 2], out=out[:, 2])
        out[:, 2] *= 200
        return self._colourless_greys(rgb8, out)

    @staticmethod
    def _colourless_greys(rgb8: np.ndarray, values: np.ndarray) -> np.ndarray:
        """:func:`_colourless_greys` of ``(m, 3)`` arrays, by a mask, not an index array."""
        grey = (rgb8[:, 0] == rgb8[:, 1]) & (rgb8[:, 1] == rgb8[:, 2])
        if grey.any():
            np.copyto(values[:, 1:], 0.0, where=grey[:, None])
        return values

    def to_srgb8(self, values: np.ndarray, out: np.ndarray) -> np.ndarray:
        """:func:`from_space` of ``(m, 3)`` float64 ``values`` into ``(m, 3)`` uint8 ``out``.

        The steps of :func:`lab_to_rgb` and :func:`oklab_to_rgb` with the same
        matrices, but cubes by two products (``pow`` took ten times as long;
        they differ by an ulp or two, a level only where a value lies that
        close to a level's edge) and the encode by :func:`_srgb8_levels`.
        Colourless values (``a`` and ``b`` exactly 0) take one linear light in
        all three channels, as in those functions: exactly grey.
        """
        count = len(values)
        first, cubes, linear = self._first[:count], self._second[:count], self._third[:count]
        colourless = (values[:, 1] == 0) & (values[:, 2] == 0)
        # Grey values (a grey cell's tiles, chroma 0, are all grey) take their lightness's
        # cube in all three channels, by masks, not index arrays: on a grey target's mosaic
        # the greys' pow and indexing took as long as the rest.
        greys = colourless[:, None] if colourless.any() else None
        if self.metric == "oklab":
            lms = first
            np.matmul(values, _OKLAB_M2_INV_T, out=lms)
            np.multiply(lms, lms, out=cubes)
            cubes *= lms
            np.matmul(cubes, _OKLAB_M1_INV_T, out=linear)
            if greys is not None:
                # A grey's l, m and s are all its L: its linear light is L cubed.
                lightness_cubed = cubes[:, :1]
                np.multiply(values[:, :1], values[:, :1], out=lightness_cubed)
                lightness_cubed *= values[:, :1]
                np.copyto(linear, lightness_cubed, where=greys)
        else:
            f = first  # fx, fy, fz
            np.add(values[:, 0], 16, out=f[:, 1])
            f[:, 1] /= 116
            np.divide(values[:, 1], 500, out=f[:, 0])
            f[:, 0] += f[:, 1]
            np.divide(values[:, 2], 200, out=f[:, 2])
            np.subtract(f[:, 1], f[:, 2], out=f[:, 2])
            delta = 6 / 29
            np.multiply(f, f, out=cubes)
            cubes *= f
            dark = np.less_equal(f, delta, out=self._above[:count])
            if dark.any():
                near_black = np.subtract(f, 4 / 29, out=linear)
                near_black *= 3 * delta**2
                np.copyto(cubes, near_black, where=dark)
            for channel in range(3):
                cubes[:, channel] *= _D65[channel]
            np.matmul(cubes, _XYZ_TO_SRGB_T, out=linear)
            if greys is not None:
                # A grey's linear light is its Y (D65's Y is 1) in every channel.
                np.copyto(linear, cubes[:, 1:2], where=greys)
        return _srgb8_levels(linear, out, first, self._index[:count], cubes,
                             self._above[:count])


def encode(rgb8: np.ndarray, metric: str) -> np.ndarray:
    """sRGB uint8 ``(..., 3)`` -> the metric's 8-bit encoding (see module docstring)."""
    if metric == "seed":
        return rgb8
    out = np.empty(rgb8.shape, np.uint8)
    flat_in = rgb8.reshape(-1, 3)
    flat_out = out.reshape(-1, 3)
    scale = _scale(metric)
    for start in range(0, len(flat_in), _BLOCK):
        values = to_space(flat_in[start:start + _BLOCK], metric) * scale + _OFFSET
        flat_out[start:start + _BLOCK] = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return out


def encoded_means(values: np.ndarray, metric: str) -> np.ndarray:
    """Each picture's mean colour as the matcher measures it: that of its 8-bit encoding.

    The matcher sees a tile in :func:`encode`'s whole levels, and measures
    the tint's shift from their mean (:class:`mosaicist.placements.Placements`);
    the mean of the unrounded values lies up to half a level from it.

    Parameters
    ----------
    values : numpy.ndarray
        ``(k, ..., 3)`` pictures in the metric's space (float, unscaled:
        :func:`to_space` of sRGB pictures).
    metric : str
        One of :data:`METRICS`.

    Returns
    -------
    numpy.ndarray
        ``(k, 3)`` float64 means of the encoded levels, in the metric's own
        units: ``(mean level - offset) * encoded_unit(metric)``, the product the
        tint's shift is made with, so that a shift all the way to a grey
        cell's mean cancels its chroma exactly.
    """
    scale = _scale(metric)
    offset = _OFFSET if metric != "seed" else np.zeros(3)
    flat = np.asarray(values, np.float64).reshape(len(values), -1, 3)
    sums = np.empty((len(flat), 3))
    # A channel at a time from strided views, rounded and clipped in place: no copy of
    # the pictures, no reduction three values at a time (the renderer dresses megapixels
    # at a time). The levels are whole numbers, so their sums are exact in any order.
    for channel in range(3):
        levels = flat[:, :, channel] * scale
        levels += offset[channel]
        np.rint(levels, out=levels)
        np.clip(levels, 0, 255, out=levels)
        levels.sum(axis=1, out=sums[:, channel])
    return (sums / flat.shape[1] - offset) * encoded_unit(metric)


def decode(encoded: np.ndarray, metric: str) -> np.ndarray:
    """The metric's 8-bit encoding (or shifted float values of it) -> sRGB uint8."""
    if metric == "seed":
        return np.clip(np.rint(encoded), 0, 255).astype(np.uint8)
    values = (np.asarray(encoded, np.float64) - _OFFSET) / _scale(metric)
    return from_space(values, metric)


#: Rec. 601 luma weights of R, G, B.
LUMA = np.array([0.299, 0.587, 0.114])


def lightness_axis(metric: str) -> tuple[np.ndarray, float, float]:
    """The metric's lightness as weights of its encoded channels, and its range.

    Parameters
    ----------
    metric : str
        One of :data:`METRICS`.

    Returns
    -------
    weights : numpy.ndarray
        ``(3,)`` float64: the lightness of an encoded colour ``v`` is
        ``weights @ v`` (the chroma offsets of Lab and Oklab weigh 0).
    low, high : float
        Black's and white's lightness, in encoded levels: every colour of the
        sRGB gamut lies between (see the module docstring).
    """
    if metric == "seed":
        return LUMA.copy(), 0.0, 255.0
    if metric in ("lab", "oklab"):
        # White's lightness: L* = 100 and Oklab L = 1 by construction (to within 1e-5
        # and 1e-8, the matrices' rounding: the encodings round both to 100 and 250).
        return np.array([1.0, 0.0, 0.0]), 0.0, 100.0 if metric == "lab" else _OKLAB_SCALE
    raise ValueError(f"unknown metric {metric!r}")


def grey_parts(metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The greys' direction and the lightness weights, for splitting off a colour's chroma.

    A deviation ``d`` between colours (a pixel's from its tile's mean) is a
    grey of its own lightness, ``(w @ d) g``, plus its chroma ``d - (w @ d) g``,
    which has no lightness (``w @ g = 1``). Scaling the chroma keeps the
    lightness pattern exactly, as the eye sees it.

    Parameters
    ----------
    metric : str
        One of :data:`METRICS`.

    Returns
    -------
    grey, weights : numpy.ndarray
        ``(3,)`` float64: ``g``, the encoded channels of the greys' direction
        (``(1, 1, 1)`` for sRGB, ``(1, 0, 0)`` for Lab and Oklab, whose chroma
        offsets are 0 on greys), and ``w``, the lightness weights of
        :func:`lightness_axis` (luma for sRGB).
    """
    weights = lightness_axis(metric)[0]
    grey = np.array([1.0, 1.0, 1.0]) if metric == "seed" else np.array([1.0, 0.0, 0.0])
    return grey, weights / (weights @ grey)


def chroma_projection(metric: str) -> np.ndarray:
    """The ``(3, 3)`` matrix ``Q = I - g w^T`` taking a deviation to its chroma.

    See :func:`grey_parts`; ``Q d`` is ``d`` less the grey of its lightness.

    Parameters
    ----------
    metric : str
        One of :data:`METRICS`.

    Returns
    -------
    numpy.ndarray
        ``(3, 3)`` float64.
    """
    grey, weights = grey_parts(metric)
    return np.eye(3) - np.outer(grey, weights)


def chroma_differences(metric: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`chroma_projection` as ``Q = R D``, ``D`` whole numbers that take greys to 0.

    ``D d`` of an 8-bit colour's deviation is made of whole numbers (differences
    of channels for sRGB, the chroma offsets for Lab and Oklab), exactly 0 on
    greys, so that sums of them are exact: a grey or flat colour's chroma is
    exactly 0, not the float rounding of ``w @ g = 1`` that ``Q`` itself carries.

    Parameters
    ----------
    metric : str
        One of :data:`METRICS`.

    Returns
    -------
    differences, lift : numpy.ndarray
        ``(2, 3)`` int64 ``D`` and ``(3, 2)`` float64 ``R``.
    """
    grey = grey_parts(metric)[0]
    if metric == "seed":
        differences = np.array([[1, -1, 0], [0, 1, -1]], np.int64)
    else:
        differences = np.array([[0, 1, 0], [0, 0, 1]], np.int64)
    assert not (differences @ grey).any()
    # D's null space is the greys' line, Q's too: Q = Q D^+ D.
    return differences, chroma_projection(metric) @ np.linalg.pinv(differences.astype(np.float64))


def encoded_unit(metric: str) -> float:
    """Size of one encoded step in the metric's own units."""
    return 1.0 / _scale(metric)
