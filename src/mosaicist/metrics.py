"""How faithful a mosaic is to its target, and how often it repeats tiles.

Metric definitions (all reported by :func:`score_mosaic` and ``mosaicist score``):

``psnr_full``
    PSNR in dB of the mosaic against the target's grid crop scaled to the
    mosaic's size by exact area averaging (each pixel the overlap-weighted
    mean of the crop pixels it covers), rounded to 8 bits: the comparison
    the matcher makes (:meth:`mosaicist.grid.Geometry.cell_vectors`). For a
    mosaic drawn as matched (``seed`` metric, no tint or other correction)
    the squared error is thus the placements' objective. When the mosaic is
    an integer factor larger than the crop (``tile_px`` a multiple of
    ``cell_px``) this is pixel replication. The sums are exact integers,
    so a mosaic measured band by band gives the figure of the whole.
``psnr_view``
    PSNR at viewing scale: mosaic and crop are both reduced by exact area
    averaging (overlap-weighted box means, kept as floats) so that every
    cell is ``view_px`` x ``view_px`` pixels. This is roughly how the mosaic
    looks from a distance, where the tiles blend into the picture.
    Rectangular cells (an ``aspect`` ``W:H`` other than ``1:1``) are
    ``view_px`` pixels wide and ``view_px * H / W`` rounded half up high at
    viewing scale (:func:`mosaicist.aspect.height_for`, at least 1; reported
    as ``view_height``), so that they keep their shape; the ratio is the
    aspect's, not that of the rounded cell or tile sizes, so that a mosaic
    is measured alike at every cell and tile size.
``ssim_view``
    SSIM (the SSIM paper's index with a uniform square window and sample
    variances, averaged over the windows that fit, as scikit-image's
    ``structural_similarity`` with ``data_range=255``) at viewing scale on
    luma ``Y' = 0.299 R + 0.587 G + 0.114 B`` of the gamma-encoded values,
    as in the SSIM paper and MATLAB's ``ssim`` for colour images; colour
    error is measured by CIEDE2000 instead. The window is 7 pixels, or the
    largest odd size that fits a smaller image; ``None`` when a side is
    under 3 pixels.
``ciede2000_mean_view``, ``ciede2000_p95_view``
    Mean and 95th percentile (linear interpolation) of the per-pixel
    CIEDE2000 colour difference at viewing scale, both images taken as sRGB
    (D65) and converted by :func:`srgb_to_lab` (the conversion of
    scikit-image's ``rgb2lab``). About 1 is a just-noticeable difference;
    above 10 colours are clearly different.
``ssim_rgb_view``
    The mean of the SSIM of the R, G and B planes at viewing scale (same
    window and constants as ``ssim_view``): scikit-image's
    ``structural_similarity`` with ``channel_axis``, as the independent
    measure the project is judged by computes it. Lower than the luma SSIM
    where tiles change colour but not lightness.
``colourfulness_view``, ``target_colourfulness_view``
    Hasler and Suesstrunk's colourfulness (:func:`colourfulness`) of the
    mosaic and of the target at viewing scale: a mosaic far more colourful
    than its target looks noisy, far less looks washed out.

PSNR is capped at :data:`PSNR_CAP_DB` (100 dB) rather than reported as
infinity, so identical images give 100.0 and every value stays a plain
number in JSON. 100 dB is an MSE of 6.5e-6 levels squared, far below
anything that matters visually.

Against the project's independent measure (``viewscale.py``: scikit-image's
PSNR, SSIM and CIEDE2000 on cells area-averaged to ``k`` x ``k`` pixels)
``psnr_view``, ``ssim_rgb_view``, ``ciede2000_mean_view``,
``colourfulness_view`` and ``target_colourfulness_view`` equal its
``psnr``, ``ssim``, ``de2000``, ``colour`` and ``colour_target`` to within
float rounding (1e-13 and better on the mosaics compared) for square cells
whose tile and cell sizes are multiples of ``view_px``, with the target as
:func:`mosaicist.imaging.read_target` reads it and the mosaic as the file
holds it: the same centre crop, the same unrounded box means, the same
SSIM window, Lab conversion (D65, scikit-image's matrix) and CIEDE2000
formula. The intended differences:

- ``ssim_view`` is the SSIM of luma; ``viewscale`` averages the SSIM of
  R, G and B. Chroma texture counts in each channel there but not in
  luma here (its error is CIEDE2000's), so ``ssim_view`` is usually
  higher: by up to 0.12 on the CIFAR-10 mosaics compared (most often
  0.03 to 0.09), and within 0.001 either way for a grey target with
  untinted tiles.
- For tiny viewing images (a side of 3, 5 or 7 pixels) the window here is
  the largest odd size that fits (3, 5 or 7); ``viewscale`` takes one size
  less (1, 3 or 5; with 1 it fails, dividing by zero).
- Rectangular cells keep their shape at viewing scale (``view_height``
  above). ``viewscale --grid`` makes every cell ``k`` x ``k``, resizes the
  whole target (not its centre crop: alike only when the cells divide
  it) and rounds both reduced images to 8 bits (Pillow's ``BOX``). Where
  the cells are 1 x 1 here too (``k = 1`` and ``H / W`` under 1.5) the
  rounding is all that differs; it moves PSNR by about 0.01 dB where the
  error is large (an uncorrected ``seed`` mosaic, 18 dB at ``k = 1``) but
  by 0.2 to 4.5 dB, and CIEDE2000 by 0.05 to 0.2, where it is small (a
  colour-corrected mosaic, whose cells' means are the target's: 41 to 60
  dB at ``k = 1``). Elsewhere the cells' shapes differ too (at ``k = 4``,
  4 x 3 pixels here and 4 x 4 there for 3:2 cells, 4 x 6 and 4 x 4 for
  2:3): PSNR by 0.2 to 1.25 dB and CIEDE2000 by 0.25 to 0.8, either way, on
  the mosaics compared.
- When the tile or cell size is not a multiple of ``k``, ``viewscale``
  averages ``floor(size / k)``-pixel blocks from the top left of the whole
  picture, so its view pixels straddle cells and the bottom and right
  parts of the picture are left out (with tiles or cells under ``k``
  pixels its blocks are empty, and every figure it prints is ``nan``);
  here every cell is reduced by exact area weights on its own. Judge
  mosaics with ``viewscale`` at tile and cell sizes that ``k`` divides.
- Pictures are read by :func:`mosaicist.imaging.read_target` (EXIF
  orientation applied, transparency over white, 16-bit values scaled);
  ``viewscale`` uses Pillow's ``convert("RGB")``, which does none of these.
  An embedded ICC profile is applied as the mosaic's ``make`` applied it
  (:func:`score_mosaic`'s ``colour_profiles``: recorded in JSON placements,
  else the default preset's ``convert``); ``viewscale`` never applies one.
- ``make --print`` cuts the grid from the centre of the print's crop of
  the target, which JSON placements record (:func:`score_mosaic` reads
  it there); ``viewscale --cell`` cuts the whole target's centre, another
  region (or one the mosaic does not fit) unless the print has the
  target's shape.
- ``mosaicist make --report`` measures the mosaic as matched, at
  ``--match-px``; with a larger ``--tile-px`` the written picture is drawn
  anew from the original photos, and ``viewscale`` on it differs slightly
  at viewing scale (about 0.01 dB and 0.01 CIEDE2000 on CIFAR-10 tiles
  drawn at 96 px; 0.04 dB on synthetic photos at 128 px, 0.1 dB at 3:2)
  and more at full size (the originals' detail: ``psnr_full`` 25.19
  against 24.01 dB at 128 px). The report's ``measured_tile_px`` says the
  size measured; ``mosaicist score`` measures the file it is given.
- ``make --report`` (and ``batch --report``) measure the picture as
  drawn, before it is encoded: a JPEG or WebP output holds that picture
  compressed, and ``viewscale`` (or ``mosaicist score``) on the file
  differs by the compression. On small CIFAR-10 mosaics: JPEG at the
  default quality 92 by up to 0.01 dB, 0.02 CIEDE2000 and 0.2
  colourfulness; WebP by up to 0.1 dB, 0.12 CIEDE2000 and 0.5
  colourfulness (its smoothing brings the mosaic closer to the target).
  PNG and TIFF outputs are measured as written.

Repetition metrics (:func:`repetition_metrics`) need the tile of every cell,
e.g. from a placements file written by ``mosaicist make --placements``.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ._runtime import worker_count
from .aspect import aspect_pair, format_aspect, height_for
from .errors import (
    MosaicistError,
    OptionError,
    alternatives,
    check_range,
    counted,
    shown_type,
)
from .grid import area_sums, make_grid, rounded_quotient
from .imaging import read_target
from .options import CELL_PX_RANGE, MosaicOptions
from .placements import Placements

#: PSNR values are capped here (dB); identical images report exactly this.
PSNR_CAP_DB = 100.0
#: Accepted range of ``view_px`` (viewing-scale pixels per cell side).
VIEW_PX_RANGE = (1, 256)
#: Bytes the measures at viewing scale hold per view pixel (both views in float64, the
#: SSIM's and CIEDE2000's planes: 3,700 a cell measured at 4 px, 231 a pixel; rounded
#: down, so that only what clearly cannot fit is refused).
VIEW_BYTES_PER_PIXEL = 180
#: SSIM window side at viewing scale (smaller for smaller images).
SSIM_WINDOW = 7
#: Elements per working block, so that big mosaics are scored in bounded memory.
_BLOCK_ELEMENTS = 1 << 22
#: Squared byte differences whose float32 sum is exact in any order (256 * 255^2 < 2^24).
_EXACT_FLOAT32_SQUARES = 256
#: Colours whose CIEDE2000 is computed at a time (float64 temporaries of 64 KB).
_DELTA_E_CHUNK = 8192
#: Viewing-scale values from which the SSIMs are computed on two threads.
_THREADED_SSIM_ELEMENTS = 1 << 18
#: BT.601 luma weights for SSIM.
_LUMA = np.array([0.299, 0.587, 0.114])
#: SSIM's stabilising constants, as fractions of the data range (the SSIM paper's K1, K2).
SSIM_K1, SSIM_K2 = 0.01, 0.03
#: Linear sRGB to CIE XYZ (IEC 61966-2-1's matrix, rounded to 6 digits as most colour
#: libraries have it).
XYZ_FROM_LINEAR_RGB = np.array([
    [0.412453, 0.357580, 0.180423],
    [0.212671, 0.715160, 0.072169],
    [0.019334, 0.119193, 0.950227],
])
#: Cosines and sines of CIEDE2000's hue-weight angles (degrees).
_COS = {angle: math.cos(math.radians(angle)) for angle in (6, 30, 63)}
_SIN = {angle: math.sin(math.radians(angle)) for angle in (6, 30, 63)}
#: CIE XYZ of the D65 white point (2 degree observer), Y = 1.
D65_WHITE = np.array([0.95047, 1.0, 1.08883])


def psnr(mse: float) -> float:
    """Return the PSNR in dB of a mean squared error on the 0..255 scale, capped.

    Parameters
    ----------
    mse : float
        Mean squared error in 8-bit levels squared.

    Returns
    -------
    float
        ``10 log10(255^2 / mse)``, at most :data:`PSNR_CAP_DB` (also for 0).
    """
    if mse <= 0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(255.0**2 / mse))


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """Return the CIE L*a*b* (D65, 2 degree observer) coordinates of sRGB colours.

    The sRGB transfer function is undone, the linear values go to CIE XYZ by
    the sRGB matrix (:data:`XYZ_FROM_LINEAR_RGB`, as rounded in most colour
    libraries, scikit-image's among them), relative to the D65 white
    :data:`D65_WHITE`, and then to L*a*b* with the CIE's cube-root function
    and its linear part below ``(6/29)^3`` (``0.008856``, slope ``7.787``).

    Parameters
    ----------
    rgb : numpy.ndarray
        ``(..., 3)`` sRGB values on the 0..255 scale (uint8 or float).

    Returns
    -------
    numpy.ndarray
        ``(..., 3)`` float64 ``L*, a*, b*``.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype == np.uint8:
        linear = _LINEAR_OF_BYTE[rgb]  # the same values, looked up: several times faster
    else:
        linear = _linear(np.asarray(rgb, np.float64) / 255.0)
    # Three products summed, not a matrix product: BLAS would start threads for
    # an N x 3 product, which then spin beside the work of the other threads.
    matrix = XYZ_FROM_LINEAR_RGB
    relative = linear[..., 0, None] * matrix[:, 0]
    relative += linear[..., 1, None] * matrix[:, 1]
    relative += linear[..., 2, None] * matrix[:, 2]
    relative /= D65_WHITE
    bent = np.where(relative > 0.008856, np.cbrt(relative), 7.787 * relative + 16.0 / 116.0)
    x, y, z = bent[..., 0], bent[..., 1], bent[..., 2]
    return np.stack([116.0 * y - 16.0, 500.0 * (x - y), 200.0 * (y - z)], axis=-1)


def _linear(values: np.ndarray) -> np.ndarray:
    """The sRGB transfer function undone, for values on the 0..1 scale."""
    return np.where(values > 0.04045, ((values + 0.055) / 1.055) ** 2.4, values / 12.92)


_LINEAR_OF_BYTE = _linear(np.arange(256, dtype=np.float64) / 255.0)


def _seventh_power(values: np.ndarray) -> np.ndarray:
    squares = values * values
    return squares * squares * squares * values


def delta_e_2000(rgb_a: np.ndarray, rgb_b: np.ndarray) -> np.ndarray:
    """Return the per-pixel CIEDE2000 difference of two sRGB images.

    The formula of CIE 142-2001 as written out by Sharma, Wu and Dalal
    (2005): the a* axis is stretched by ``1 + G`` where chroma is low, then
    lightness, chroma and hue differences are weighted by ``S_L``, ``S_C``,
    ``S_H`` and the blue region's rotation term ``R_T``. Colours are
    converted by :func:`srgb_to_lab`.

    Parameters
    ----------
    rgb_a, rgb_b : numpy.ndarray
        ``(..., 3)`` sRGB values on the 0..255 scale (uint8 or float).

    Returns
    -------
    numpy.ndarray
        ``(...)`` float64 CIEDE2000 differences (D65, ``kL = kC = kH = 1``).
    """
    rgb_a, rgb_b = np.asarray(rgb_a), np.asarray(rgb_b)
    if rgb_a.shape == rgb_b.shape and rgb_a.size > 3 * _DELTA_E_CHUNK:
        # A few thousand colours at a time: the formula's dozens of temporaries
        # stay in the cache, and are not fresh pages to fault in at every step.
        flat_a, flat_b = rgb_a.reshape(-1, 3), rgb_b.reshape(-1, 3)
        out = np.empty(len(flat_a), np.float64)
        for start in range(0, len(flat_a), _DELTA_E_CHUNK):
            stop = start + _DELTA_E_CHUNK
            out[start:stop] = _delta_e_2000(flat_a[start:stop], flat_b[start:stop])
        return out.reshape(rgb_a.shape[:-1])
    return _delta_e_2000(rgb_a, rgb_b)


def _delta_e_2000(rgb_a: np.ndarray, rgb_b: np.ndarray) -> np.ndarray:
    lab_a, lab_b = np.broadcast_arrays(srgb_to_lab(rgb_a), srgb_to_lab(rgb_b))
    light_a, a_a, b_a = lab_a[..., 0], lab_a[..., 1], lab_a[..., 2]
    light_b, a_b, b_b = lab_b[..., 0], lab_b[..., 1], lab_b[..., 2]
    # Products, not np.hypot and powers: several times faster, within an ulp or two.
    seventh = 25.0**7
    chroma_mean = 0.5 * (np.sqrt(a_a * a_a + b_a * b_a) + np.sqrt(a_b * a_b + b_b * b_b))
    chroma_mean7 = _seventh_power(chroma_mean)
    stretch = 1.5 - 0.5 * np.sqrt(chroma_mean7 / (chroma_mean7 + seventh))  # 1 + G
    a_a, a_b = a_a * stretch, a_b * stretch
    chroma_a, chroma_b = np.sqrt(a_a * a_a + b_a * b_a), np.sqrt(a_b * a_b + b_b * b_b)
    # Hue angles in [0, 2 pi); a grey's angle is 0 and does not count below.
    hue_a, hue_b = np.arctan2(b_a, a_a), np.arctan2(b_b, a_b)
    hue_a = np.where(hue_a < 0, hue_a + 2 * np.pi, hue_a)
    hue_b = np.where(hue_b < 0, hue_b + 2 * np.pi, hue_b)
    chroma_product = chroma_a * chroma_b
    grey = chroma_product == 0.0
    hue_step = hue_b - hue_a
    hue_step = np.where(hue_step > np.pi, hue_step - 2 * np.pi,
                        np.where(hue_step < -np.pi, hue_step + 2 * np.pi, hue_step))
    hue_step = np.where(grey, 0.0, hue_step)
    hue_difference = 2.0 * np.sqrt(chroma_product) * np.sin(0.5 * hue_step)
    hue_sum = hue_a + hue_b
    # The mean hue goes the short way round the circle (both angles when one is grey).
    wraps = ~grey & (np.abs(hue_b - hue_a) > np.pi)
    hue_mean = np.where(wraps & (hue_sum < 2 * np.pi), hue_sum + 2 * np.pi,
                        np.where(wraps, hue_sum - 2 * np.pi, hue_sum))
    hue_mean = np.where(grey, hue_mean, 0.5 * hue_mean)
    light_mean = 0.5 * (light_a + light_b)
    chroma_prime_mean = 0.5 * (chroma_a + chroma_b)
    # T = 1 - 0.17 cos(h - 30) + 0.24 cos 2h + 0.32 cos(3h + 6) - 0.20 cos(4h - 63)
    # (degrees), from cos h and sin h by the multiple-angle formulas.
    cos1, sin1 = np.cos(hue_mean), np.sin(hue_mean)
    cos2, sin2 = 2.0 * cos1 * cos1 - 1.0, 2.0 * sin1 * cos1
    cos3, sin3 = cos2 * cos1 - sin2 * sin1, sin2 * cos1 + cos2 * sin1
    cos4, sin4 = 2.0 * cos2 * cos2 - 1.0, 2.0 * sin2 * cos2
    hue_weight = (1.0 - 0.17 * (cos1 * _COS[30] + sin1 * _SIN[30]) + 0.24 * cos2
                  + 0.32 * (cos3 * _COS[6] - sin3 * _SIN[6])
                  - 0.20 * (cos4 * _COS[63] + sin4 * _SIN[63]))
    light_offset = (light_mean - 50.0) ** 2
    scale_light = 1.0 + 0.015 * light_offset / np.sqrt(20.0 + light_offset)
    scale_chroma = 1.0 + 0.045 * chroma_prime_mean
    scale_hue = 1.0 + 0.015 * chroma_prime_mean * hue_weight
    chroma_prime_mean7 = _seventh_power(chroma_prime_mean)
    rotation = np.radians(30.0) * np.exp(-(((np.degrees(hue_mean) - 275.0) / 25.0) ** 2))
    rotation_term = (-2.0 * np.sqrt(chroma_prime_mean7 / (chroma_prime_mean7 + seventh))
                     * np.sin(2.0 * rotation))
    light_term = (light_b - light_a) / scale_light
    chroma_term = (chroma_b - chroma_a) / scale_chroma
    hue_term = hue_difference / scale_hue
    squared = (light_term**2 + chroma_term**2 + hue_term**2
               + rotation_term * chroma_term * hue_term)
    # Rounding can make a zero difference a tiny negative number.
    return np.sqrt(np.maximum(squared, 0.0))


def _view_ssims(view_a: np.ndarray, view_b: np.ndarray) -> tuple[float | None, float | None]:
    """SSIM of the luma and mean SSIM of the channels of two views (see module).

    On two threads where the views are large: one takes the luma and the red
    channel, the other green and blue (NumPy lets go of the interpreter in
    each operation on large arrays, so they run side by side on two cores).
    The results are those of one thread, to the bit.
    """
    window = _ssim_window(view_a.shape)
    if window is None:
        return None, None
    if len(view_a) < 2 or view_a.size < _THREADED_SSIM_ELEMENTS or worker_count(most=2) < 2:
        return _ssim_luma(view_a, view_b), _ssim_rgb(view_a, view_b)

    def luma_and_red() -> tuple[float | None, list[float]]:
        return _ssim_luma(view_a, view_b), _channel_ssims(view_a, view_b, window, range(1))

    with ThreadPoolExecutor(1, thread_name_prefix="mosaicist-metrics") as pool:
        other = pool.submit(luma_and_red)
        green_blue = _channel_ssims(view_a, view_b, window, range(1, 3))
        ssim, red = other.result()
    return ssim, float(np.mean(red + green_blue))


def _check_view_px(view_px: int) -> None:
    check_range("view_px", view_px, *VIEW_PX_RANGE, "pixels", whole=True)


def reduce_cells(
    image: np.ndarray, cell_px: int, view_px: int, cell_height: int | None = None,
    view_height: int | None = None,
) -> np.ndarray:
    """Resample every ``cell_px`` cell of ``image`` to ``view_px`` by exact area averaging.

    Each output pixel is the overlap-weighted mean of the input pixels it
    covers (plain box means when the cell is a multiple of the view both
    ways). Cells are resampled independently, so tile edges never blend.
    Each cell's result depends on that cell alone, to the last bit: the
    same whatever other rows of cells ``image`` holds, so that a picture
    measured band by band gives the figures of the whole. Integer images
    are weighted in integer arithmetic, so their means are correctly
    rounded.

    Parameters
    ----------
    image : numpy.ndarray
        ``(rows * cell_height, cols * cell_px, 3)`` image (any real dtype).
    cell_px : int
        Cell width in ``image`` pixels.
    view_px : int
        Cell width in the result.
    cell_height, view_height : int, optional
        Cell height in ``image`` and in the result (default: the widths,
        square cells).

    Returns
    -------
    numpy.ndarray
        ``(rows * view_height, cols * view_px, 3)`` float64, not rounded.
    """
    cell_h = cell_px if cell_height is None else cell_height
    view_h = view_px if view_height is None else view_height
    rows, cols = image.shape[0] // cell_h, image.shape[1] // cell_px
    out = np.empty((rows * view_h, cols * view_px, 3), np.float64)
    band = max(1, _BLOCK_ELEMENTS // (max(cell_h, view_h) * max(cell_px, view_px) * cols * 3))
    divisible = cell_px % view_px == 0 and cell_h % view_h == 0
    step_x, step_y = cell_px // view_px, cell_h // view_h
    for start in range(0, rows, band):
        stop = min(rows, start + band)
        part = image[start * cell_h:stop * cell_h]
        count = stop - start
        if divisible:
            # Integer sums are exact and several times faster than the einsum. The
            # rows of each view pixel are added first (whole image rows at a time),
            # then its columns: on a 7680x4320 mosaic 5-10 times faster than one sum
            # over both axes. 16 bits hold the sum of 257 bytes, 32 bits of 2^24.
            pixels = step_x * step_y
            if part.dtype == np.uint8 and pixels <= 257:
                wide: type = np.uint16
            elif part.dtype == np.uint8 and pixels <= 1 << 24:
                wide = np.uint32
            else:
                wide = np.uint64 if part.dtype.kind == "u" else np.float64
            rows_first = part.reshape(count * view_h, step_y, cols * cell_px * 3)
            if part.dtype.kind == "u" and max(step_x, step_y) <= _ADDED_STEPS:
                # Slice by slice into a narrow sum: three times as fast as NumPy's
                # reduction, which widens its input a buffer at a time.
                summed = _added(rows_first, 1, wide)
                summed = _added(summed.reshape(count * view_h, cols * view_px, step_x, 3),
                                2, wide)
            else:
                summed = rows_first.sum(axis=1, dtype=wide)
                summed = summed.reshape(count * view_h, cols * view_px, step_x, 3).sum(
                    axis=2, dtype=wide)
            reduced = summed / float(pixels)
        else:
            weighted, divisor = area_sums(part, cell_px, view_px, cell_h, view_h)
            reduced = weighted / float(divisor)
        out[start * view_h:stop * view_h] = reduced.reshape(count * view_h, -1, 3)
    return out


#: Most slices :func:`reduce_cells` adds one by one (else NumPy's sum reduces them).
_ADDED_STEPS = 64


def _added(values: np.ndarray, axis: int, wide: type) -> np.ndarray:
    """Sum of the unsigned ``values`` along ``axis``, one slice at a time, in ``wide``."""
    slices = np.moveaxis(values, axis, 0)
    total = slices[0].astype(wide)
    for one in slices[1:]:
        total += one
    return total


def view_height(view_px: int, aspect: tuple[int, int] = (1, 1)) -> int:
    """Height of a cell at viewing scale: ``view_px * H / W`` rounded half up, at least 1.

    As :func:`mosaicist.aspect.height_for` (not Python's ``round``, which
    rounds halves to even: 5 px at 2:1 is 3 px high).

    Examples
    --------
    >>> view_height(4), view_height(4, (3, 2)), view_height(4, (2, 3)), view_height(1, (16, 1))
    (4, 3, 6, 1)
    >>> view_height(5, (2, 1)), view_height(1, (2, 3))
    (3, 2)
    """
    return height_for(view_px, aspect)


def _byte_squared_differences(first: np.ndarray, second: np.ndarray) -> int:
    """Sum of squared differences of two uint8 arrays of one shape, exactly."""
    distance = np.maximum(first, second)
    distance -= np.minimum(first, second)
    flat = distance.ravel()
    # float32 sums of 256 squares of bytes are exact (at most 2^24), whatever
    # the order of summation; whole rows of them go to float64.
    whole = len(flat) - len(flat) % _EXACT_FLOAT32_SQUARES
    rows = flat[:whole].astype(np.float32).reshape(-1, _EXACT_FLOAT32_SQUARES)
    total = int(np.einsum("ij,ij->i", rows, rows).sum(dtype=np.float64))
    rest = flat[whole:].astype(np.int64)
    return total + int(rest @ rest)


def _replicated(crop: np.ndarray, factor: int, out: np.ndarray) -> np.ndarray:
    """``crop`` scaled up ``factor`` times by pixel replication, into ``out``."""
    rows, cols = crop.shape[:2]
    # Whole pixels (3 bytes) copied as one item: several times faster than bytes.
    pixel = np.dtype((np.void, 3))
    source = np.ascontiguousarray(crop).view(pixel).reshape(rows, cols)
    target = out.view(pixel).reshape(rows, factor, cols, factor)
    for column in range(factor):
        target[:, 0, :, column] = source
    for row in range(1, factor):
        target[:, row] = target[:, 0]
    return out


def _squared_error_full(mosaic: np.ndarray, crop: np.ndarray) -> int:
    """Sum of squared errors of ``mosaic`` against ``crop`` scaled to its size (see module).

    An integer, exact: a mosaic measured band by band adds up to the figure
    of the whole.
    """
    height, width = mosaic.shape[:2]
    crop_h, crop_w = crop.shape[:2]
    total = 0
    if height % crop_h == 0 and width % crop_w == 0 and height // crop_h == width // crop_w:
        factor = height // crop_h
        band = max(1, _BLOCK_ELEMENTS // (factor * factor * crop_w * 3))
        scaled = np.empty((min(band, crop_h) * factor, width, 3), np.uint8)
        for start in range(0, crop_h, band):
            stop = min(crop_h, start + band)
            part = scaled[:(stop - start) * factor]
            total += _byte_squared_differences(
                np.asarray(mosaic[start * factor:stop * factor], np.uint8),
                _replicated(crop[start:stop], factor, part))
        return total
    # Exact area averaging rounded to 8 bits, as the matcher resamples cells: the
    # picture repeats every gcd-th of it, and the bands are whole periods.
    down, across = math.gcd(crop_h, height), math.gcd(crop_w, width)
    source_y, target_y = crop_h // down, height // down
    periods = max(1, _BLOCK_ELEMENTS // (max(source_y, target_y) * max(crop_w, width) * 3))
    for start in range(0, down, periods):
        stop = min(down, start + periods)
        sums, divisor = area_sums(crop[start * source_y:stop * source_y], crop_w // across,
                                   width // across, source_y, target_y)
        scaled = rounded_quotient(sums, divisor).reshape((stop - start) * target_y, width, 3)
        total += _byte_squared_differences(
            np.asarray(mosaic[start * target_y:stop * target_y], np.uint8), scaled)
    return total


def _mse_full(mosaic: np.ndarray, crop: np.ndarray) -> float:
    """Mean squared error of ``mosaic`` against ``crop`` scaled to its size (see module)."""
    return _squared_error_full(mosaic, crop) / mosaic.size


def _window_means(image: np.ndarray, window: int) -> np.ndarray:
    """Means of every ``window`` x ``window`` square lying wholly inside ``image`` (2-D)."""
    # Sums of a few shifted slices, one axis at a time: as exact as a running
    # sum, and no cumulative sums whose rounding grows with the image.
    height, width = image.shape
    across = image[:, :width - window + 1].copy()
    for shift in range(1, window):
        across += image[:, shift:width - window + 1 + shift]
    down = across[:height - window + 1].copy()
    for shift in range(1, window):
        down += across[shift:height - window + 1 + shift]
    down /= window * window
    return down


def _ssim_window(shape: tuple[int, ...]) -> int | None:
    """The SSIM window for pictures of ``shape``: :data:`SSIM_WINDOW`, or the largest odd
    size that fits; None under 3 pixels."""
    window = min(SSIM_WINDOW, *shape[:2])
    window -= 1 - window % 2  # largest odd size that fits
    return window if window >= 3 else None


def _ssim_planes(plane_a: np.ndarray, plane_b: np.ndarray, window: int) -> float:
    """Mean SSIM index of two float planes over every ``window``-square lying inside them.

    Each window gives the SSIM index of its means, sample variances and
    covariance (the SSIM paper's formula with ``C1 = (K1 255)^2``,
    ``C2 = (K2 255)^2``): the uniform-window SSIM of scikit-image's
    ``structural_similarity``.
    """
    mean_a, mean_b = _window_means(plane_a, window), _window_means(plane_b, window)
    # The sample (n - 1) normalisation of the variances and covariance.
    sample = window * window / (window * window - 1.0)
    variance_a = sample * (_window_means(plane_a * plane_a, window) - mean_a * mean_a)
    variance_b = sample * (_window_means(plane_b * plane_b, window) - mean_b * mean_b)
    covariance = sample * (_window_means(plane_a * plane_b, window) - mean_a * mean_b)
    stable_mean, stable_spread = (SSIM_K1 * 255.0) ** 2, (SSIM_K2 * 255.0) ** 2
    index = ((2.0 * mean_a * mean_b + stable_mean) * (2.0 * covariance + stable_spread)
             / ((mean_a * mean_a + mean_b * mean_b + stable_mean)
                * (variance_a + variance_b + stable_spread)))
    return float(index.mean(dtype=np.float64))


def _ssim_luma(view_a: np.ndarray, view_b: np.ndarray) -> float | None:
    """SSIM of the luma of two float RGB images (see module), or None when too small."""
    window = _ssim_window(view_a.shape)
    if window is None:
        return None
    luma_a = np.asarray(view_a, np.float64) @ _LUMA
    luma_b = np.asarray(view_b, np.float64) @ _LUMA
    return _ssim_planes(luma_a, luma_b, window)


def _ssim_rgb(view_a: np.ndarray, view_b: np.ndarray) -> float | None:
    """Mean of the SSIM of the R, G and B planes (see module), or None when too small."""
    window = _ssim_window(view_a.shape)
    if window is None:
        return None
    return float(np.mean(_channel_ssims(view_a, view_b, window, range(3))))


def _channel_ssims(view_a: np.ndarray, view_b: np.ndarray, window: int,
                   channels: range) -> list[float]:
    """SSIM of each of ``channels`` of two float RGB images."""
    return [_ssim_planes(np.asarray(view_a[..., channel], np.float64),
                         np.asarray(view_b[..., channel], np.float64), window)
            for channel in channels]


def colourfulness(picture: np.ndarray) -> float:
    """Hasler and Suesstrunk's colourfulness of an RGB picture (0-255 values).

    With ``rg = R - G`` and ``yb = (R + G) / 2 - B`` over the pixels,
    ``M = sqrt(std(rg)^2 + std(yb)^2) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2)``
    (population standard deviations): 0 for a grey picture, about 15 for
    muted ones, above 60 for very colourful ones.

    Parameters
    ----------
    picture : numpy.ndarray
        ``(..., 3)`` sRGB values (uint8 or float).

    Returns
    -------
    float
        ``M``.
    """
    values = np.asarray(picture, np.float64).reshape(-1, 3)
    if not len(values):
        return 0.0
    red, green, blue = values[:, 0], values[:, 1], values[:, 2]
    red_green = red - green
    yellow_blue = 0.5 * (red + green) - blue
    return float(np.hypot(red_green.std(), yellow_blue.std())
                 + 0.3 * np.hypot(red_green.mean(), yellow_blue.mean()))


def _levels(picture: np.ndarray, name: str) -> np.ndarray:
    """``picture`` as uint8 levels; other dtypes only when they hold whole levels 0..255.

    A cast alone would truncate 0..1 floats to black and wrap 300 to 44,
    measuring a picture that was never given.
    """
    picture = np.asarray(picture)
    if picture.dtype == np.uint8:
        return picture
    if picture.dtype.kind not in "biuf":
        raise OptionError("{" + name + "} must hold numbers, got {value}",
                          value=f"{picture.dtype} values")
    if picture.size and picture.dtype.kind != "b":
        low, high = picture.min(), picture.max()
        whole = picture.dtype.kind != "f" or bool(np.all(np.mod(picture, 1) == 0))
        if not (whole and 0 <= low and high <= 255):
            raise OptionError(
                "{" + name + "} must hold 8-bit levels, whole numbers from 0 to 255, got "
                "{value}", value=f"{picture.dtype} values from {low} to {high}"
                + ("" if whole else " with fractions"))
    return picture.astype(np.uint8)


def fidelity_metrics(
    mosaic: np.ndarray, target_crop: np.ndarray, cell_px_in_mosaic: int, view_px: int = 4,
    *, tile_height: int | None = None, aspect: tuple[int, int] | None = None,
) -> dict:
    """Compare a mosaic with the target region it reproduces (definitions in the module).

    Parameters
    ----------
    mosaic : numpy.ndarray
        ``(rows * tile_height, cols * tile_px, 3)`` uint8 mosaic.
    target_crop : numpy.ndarray
        ``(rows * cell_height, cols * cell_px, 3)`` uint8 grid crop of the target.
    cell_px_in_mosaic : int
        ``tile_px``: width of one cell in mosaic pixels.
    view_px : int
        Width of one cell at viewing scale.
    tile_height : int, optional
        Height of one cell in mosaic pixels (default: ``tile_px``, square cells).
    aspect : tuple of int, optional
        The cells' aspect ``(W, H)``, which sets the viewing height (see the
        module); by default that of the target's cells.

    Returns
    -------
    dict
        ``psnr_full``, ``psnr_view``, ``ssim_view`` (None when the viewing
        image is under 3 pixels a side), ``ciede2000_mean_view``,
        ``ciede2000_p95_view`` and ``view_px`` (and ``view_height`` for
        rectangular cells).

    Raises
    ------
    MosaicistError
        When the sizes do not describe the same grid of cells.
    """
    _check_view_px(view_px)
    mosaic = _levels(mosaic, "mosaic")
    target_crop = _levels(target_crop, "target_crop")
    tile_px = cell_px_in_mosaic
    tile_h = tile_px if tile_height is None else tile_height
    height, width = mosaic.shape[:2]
    crop_h, crop_w = target_crop.shape[:2]
    if (tile_px < 1 or tile_h < 1 or height % tile_h or width % tile_px or not height
            or not width):
        raise MosaicistError(
            f"a {width}x{height} mosaic is not a whole number of {tile_px}x{tile_h} px cells"
        )
    rows, cols = height // tile_h, width // tile_px
    square = tile_height is None and aspect in (None, (1, 1))
    if (crop_h % rows or crop_w % cols or not crop_h
            or (square and crop_h // rows != crop_w // cols)):
        kind = "square " if square else ""
        raise MosaicistError(
            f"a {crop_w}x{crop_h} target crop does not fit a grid of {cols}x{rows} {kind}cells"
        )
    cell_px, cell_h = crop_w // cols, crop_h // rows
    band_rows = max(1, _BLOCK_ELEMENTS // (tile_h * width * 3))
    bands = (mosaic[start:start + band_rows * tile_h]
             for start in range(0, height, band_rows * tile_h))
    return fidelity_from_bands(bands, target_crop, tile_px, cell_px, view_px,
                               tile_height=tile_h, cell_height=cell_h, aspect=aspect)


def fidelity_from_bands(
    bands: Iterable[np.ndarray],
    target_crop: np.ndarray,
    tile_px: int,
    cell_px: int,
    view_px: int = 4,
    *,
    tile_height: int | None = None,
    cell_height: int | None = None,
    aspect: tuple[int, int] | None = None,
) -> dict:
    """:func:`fidelity_metrics` of a mosaic given as bands of whole rows of cells.

    Only the viewing-scale pictures (``view_px`` per cell) are kept, so a
    mosaic of any size is measured in bounded memory.

    Parameters
    ----------
    bands : iterable of numpy.ndarray
        ``(k * tile_height, cols * tile_px, 3)`` uint8 bands, top to bottom.
    target_crop : numpy.ndarray
        ``(rows * cell_height, cols * cell_px, 3)`` uint8 grid crop of the target.
    tile_px, cell_px : int
        Cell width in the mosaic and in the target.
    view_px : int
        Width of one cell at viewing scale.
    tile_height, cell_height : int, optional
        Cell height in the mosaic and in the target (default: the widths).
    aspect : tuple of int, optional
        The cells' aspect ``(W, H)`` for the viewing height (see the
        module); by default ``(cell_px, cell_height)``.
    """
    meter = FidelityMeter(target_crop, tile_px, cell_px, view_px, tile_height=tile_height,
                          cell_height=cell_height, aspect=aspect)
    for band in bands:
        meter.add(band)
    return meter.result()


class FidelityMeter:
    """:func:`fidelity_from_bands`, fed one band at a time (by a writer drawing them, say).

    Parameters are those of :func:`fidelity_from_bands`. Call :meth:`add`
    with each band, top to bottom, then :meth:`result`.
    """

    def __init__(
        self,
        target_crop: np.ndarray,
        tile_px: int,
        cell_px: int,
        view_px: int = 4,
        *,
        tile_height: int | None = None,
        cell_height: int | None = None,
        aspect: tuple[int, int] | None = None,
    ) -> None:
        _check_view_px(view_px)
        self.target_crop = _levels(target_crop, "target_crop")
        self.tile_px, self.cell_px, self.view_px = tile_px, cell_px, view_px
        self.tile_height = tile_px if tile_height is None else tile_height
        self.cell_height = cell_px if cell_height is None else cell_height
        self.view_height = view_height(
            view_px, aspect if aspect is not None else (cell_px, self.cell_height))
        self.rows = 0  # rows of cells measured so far
        self._squared_error = 0  # exact: integers
        self._pixels = 0
        self._views: list[np.ndarray] = []
        self._target_views: list[np.ndarray] = []
        # CIEDE2000 of the views so far, measured as they come (a writer's threads
        # compress meanwhile), a few thousand colours at a time.
        self._differences: list[np.ndarray] = []
        self._measured = 0  # views whose CIEDE2000 is in _differences
        self._unmeasured_pixels = 0

    def add(self, band: np.ndarray) -> None:
        """Measure the next ``(k * tile_height, cols * tile_px, 3)`` uint8 band."""
        band = _levels(band, "band")
        tile_h, cell_h = self.tile_height, self.cell_height
        if band.ndim != 3 or band.shape[0] % tile_h or band.shape[2] != 3:
            raise ValueError(f"bands must be whole rows of {tile_h} px high cells, RGB, "
                             f"got shape {band.shape}")
        count = band.shape[0] // tile_h
        cols = self.target_crop.shape[1] // self.cell_px
        left = self.target_crop.shape[0] // cell_h - self.rows
        # Else a mismatch fails deep inside (a division by an empty crop's height).
        if band.shape[1] != cols * self.tile_px or not 0 < count <= left:
            raise ValueError(
                f"a {band.shape[1]}x{band.shape[0]} band does not fit the next rows of "
                f"{cols} cells of {self.tile_px}x{tile_h} px ({left} rows of cells left)")
        crop = self.target_crop[self.rows * cell_h:(self.rows + count) * cell_h]
        self._squared_error += _squared_error_full(band, crop)
        self._pixels += band.size
        self._views.append(reduce_cells(band, self.tile_px, self.view_px, tile_h,
                                        self.view_height))
        # The target's rows too, band by band: a writer's threads compress meanwhile.
        self._target_views.append(reduce_cells(crop, self.cell_px, self.view_px, cell_h,
                                               self.view_height))
        self.rows += count
        self._unmeasured_pixels += self._views[-1].shape[0] * self._views[-1].shape[1]
        if self._unmeasured_pixels >= _DELTA_E_CHUNK:
            self._measure_colours()

    def _measure_colours(self) -> None:
        """CIEDE2000 of the views not yet measured (each pixel's value is its own)."""
        if self._measured < len(self._views):
            views = self._views[self._measured:]
            targets = self._target_views[self._measured:]
            self._differences.append(delta_e_2000(
                np.concatenate(views).reshape(-1, 3), np.concatenate(targets).reshape(-1, 3)))
            self._measured = len(self._views)
            self._unmeasured_pixels = 0

    def result(self) -> dict:
        """The metrics of the bands added (see :func:`fidelity_metrics`)."""
        if not self._views:
            raise ValueError("no bands were measured")
        self._measure_colours()
        view_mosaic = np.concatenate(self._views)
        view_target = np.concatenate(self._target_views)
        difference = np.concatenate(self._differences)
        ssim, ssim_rgb = _view_ssims(view_mosaic, view_target)
        result = {
            "psnr_full": psnr(self._squared_error / self._pixels),
            "psnr_view": psnr(float(np.mean((view_mosaic - view_target) ** 2))),
            "ssim_view": ssim,
            "ssim_rgb_view": ssim_rgb,
            "ciede2000_mean_view": float(difference.mean()),
            "ciede2000_p95_view": float(np.percentile(difference, 95)),
            "colourfulness_view": colourfulness(view_mosaic),
            "target_colourfulness_view": colourfulness(view_target),
            "view_px": int(self.view_px),
        }
        if (self.view_height != self.view_px or self.tile_height != self.tile_px
                or self.cell_height != self.cell_px):
            result["view_height"] = int(self.view_height)
        return result


def repetition_metrics(tile_grid: np.ndarray) -> dict:
    """Count tile uses and find the closest two cells that hold the same tile.

    ``closest_repeat`` is exact (see :func:`_closest_repeat`): an upper bound
    from the cells that follow each other in a tile's row-major and
    column-major orders, then
    every pair closer than it, found among the cells of the same or
    neighbouring square blocks of that side.

    Parameters
    ----------
    tile_grid : numpy.ndarray
        ``(rows, cols)`` tile ids (integers, or any sortable values).

    Returns
    -------
    dict
        ``distinct_tiles``; ``max_uses``, the most cells holding one tile;
        ``closest_repeat``, the smallest Chebyshev distance
        ``max(|dr|, |dc|)`` between two cells holding the same tile, or None
        when no tile repeats.
    """
    grid = np.asarray(tile_grid)
    if grid.ndim != 2 or grid.size == 0:
        raise ValueError(f"tile_grid must be a non-empty 2-D array, got shape {grid.shape}")
    flat = grid.ravel()
    _, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    result = {"distinct_tiles": int(len(counts)), "max_uses": int(counts.max()),
              "closest_repeat": None}
    if counts.max() >= 2:
        result["closest_repeat"] = _closest_repeat(inverse.ravel(), counts, grid.shape[1])
    return result


def _closest_repeat(inverse: np.ndarray, counts: np.ndarray, cols: int) -> int:
    """The smallest Chebyshev distance between two cells of one tile (some tile repeats).

    Walking each cell's successors in (tile, row, col) order alone ran as
    many steps as a tile has cells in the rows within reach: hundreds on
    grids where each tile recurs every few columns (stripes, or any
    ``min_spacing`` mosaic from a small library). Here the successors in
    row-major and in column-major order give a distance ``bound`` that some
    pair reaches, and
    any closer pair lies in the same or adjacent ``bound``-sided blocks.
    Within one block a tile's cells are then far apart too (two in a block
    row would be closer than ``bound``), so each cell meets only a few
    cells of its tile in the five blocks it is compared with.
    """
    rows = len(inverse) // cols
    # Only cells whose tile repeats can be in a pair; a stable sort of the
    # row-major cell indices by tile keeps each tile's cells in (row, col) order.
    cells = np.flatnonzero(counts[inverse] > 1)
    cells = cells[np.argsort(inverse[cells], kind="stable")]
    tile = inverse[cells].astype(np.int64)
    row, col = np.divmod(cells, cols)
    same = tile[1:] == tile[:-1]
    bound = int(np.maximum(np.abs(np.diff(row)), np.abs(np.diff(col)))[same].min())
    if bound > 1:
        # Column-major successors too: a tile recurring every few rows but in
        # shifted columns (a staggered pattern) gets its bound from them.
        down = np.argsort(tile * len(inverse) + col * rows + row)
        same = tile[down[1:]] == tile[down[:-1]]
        bound = min(bound, int(np.maximum(np.abs(np.diff(row[down])),
                                          np.abs(np.diff(col[down])))[same].min()))
    if bound == 1:
        return 1
    # Cells grouped by (tile, block), block columns shifted by one so that the
    # left neighbour of block 0 has an id; the sort keeps (row, col) order within.
    block_rows = (rows - 1) // bound + 2
    block_cols = (cols - 1) // bound + 3
    group = (tile * block_rows + row // bound) * block_cols + col // bound + 1
    order = np.argsort(group, kind="stable")
    group, row, col = group[order], row[order], col[order]
    best = bound
    everyone = np.arange(len(group))
    # (group, row) as one sorted number, so that a scan of the block to the right
    # can start at the first of its cells less than best rows above.
    rank = np.cumsum(np.concatenate(([0], group[1:] != group[:-1])))
    level = rank * (rows + 1) + row
    # The block itself (later cells only), then the right, lower-left, lower and
    # lower-right blocks (ids one block row on differ by block_cols): each pair
    # of blocks is looked at from one side.
    for shift in (None, 1, block_cols - 1, block_cols, block_cols + 1):
        if shift is None:
            first = everyone + 1
            wanted = group
        else:
            wanted = group + shift
            found = np.minimum(np.searchsorted(group, wanted), len(group) - 1)
            first = np.searchsorted(level, rank[found] * (rows + 1)
                                    + np.maximum(row - best + 1, 0))
        alive = everyone
        step = 0
        while alive.size and best > 1:
            partner = first[alive] + step
            held = np.minimum(partner, len(group) - 1)
            # A group's cells go down row by row: once one is best rows below,
            # the rest are too.
            near = ((partner < len(group)) & (group[held] == wanted[alive])
                    & (row[held] - row[alive] < best))
            alive, partner = alive[near], partner[near]
            if alive.size:
                apart = np.maximum(np.abs(row[partner] - row[alive]),
                                   np.abs(col[partner] - col[alive]))
                best = min(best, int(apart.min()))
            step += 1
    return best


def read_placements(path: str | os.PathLike[str]) -> Placements:
    """Read a placements file to score a mosaic with (:func:`score_mosaic`'s ``tile_grid``).

    Raises
    ------
    MosaicistError
        When the file is missing or is not a placements file.
    """
    try:
        return Placements.read(path)
    except csv.Error as error:
        # Placements.read turns the other parse errors into MosaicistError.
        raise MosaicistError(f"{path}: not a valid placements file ({error})") from None


def _read_scored(path: str | os.PathLike[str], what: str, colour_profiles: str) -> np.ndarray:
    """Read a picture to score with :func:`read_target`, naming it ``what`` in errors.

    Its limit on pixels is ``max_target_pixels``'s default: ``score`` has no
    such setting, so the message does not tell the user to raise it.
    ``colour_profiles``: whether its embedded ICC profile is applied.
    """
    if not isinstance(path, str | os.PathLike) or not isinstance(os.fspath(path), str):
        # An array (a mosaic in memory) failed in pathlib, naming no parameter.
        raise OptionError("{" + what + "_path} must be a path to a picture file, got {value}",
                          value=shown_type(path))
    try:
        return read_target(path, colour_profiles=colour_profiles)
    except OptionError as error:
        found = error.values
        if "limit" not in found:  # not the limit on pixels: as it is
            raise
        raise MosaicistError(
            f"{found['path']}: {found['width']}x{found['height']} = {found['pixels']} "
            f"is over the limit of {found['limit']} a {what} may have to be scored"
        ) from None
    except MosaicistError as error:
        if what == "target":
            raise
        prefix = f"{Path(path)}: "
        message = str(error)
        if message.startswith(prefix):
            message = prefix + message[len(prefix):].replace("target", what, 1)
        raise MosaicistError(message) from None


def score_mosaic(
    mosaic_path: str | os.PathLike[str],
    target_path: str | os.PathLike[str],
    cell_px: int,
    view_px: int = 4,
    tile_grid: np.ndarray | Placements | None = None,
    aspect: str | tuple[int, int] = (1, 1),
    colour_profiles: str | None = None,
) -> dict:
    """Score a mosaic file against its target picture (any tool's mosaic).

    The target is cut into cells as ``mosaicist make`` does
    (:func:`mosaicist.grid.make_grid`: whole cells, centre crop), or, with
    JSON placements, as they record (their grid's place in the target: a
    ``make --print`` grid lies in the centre of the print's crop, not of
    the whole target); the mosaic must be ``cols * t`` by ``rows * t_h``
    pixels for a whole tile width ``t`` and ``t_h = t * H / W`` rounded
    half up (``t`` for square cells).

    Parameters
    ----------
    mosaic_path, target_path : path-like
        The mosaic and the target picture.
    cell_px : int
        Target pixels per cell across used to make the mosaic.
    view_px : int
        Width of one cell at viewing scale.
    tile_grid : numpy.ndarray or Placements, optional
        ``(rows, cols)`` tile ids, or the placements (:func:`read_placements`;
        adaptive cells too, measured as ``make`` measures them: the closest
        repeat between cell centres); adds :func:`repetition_metrics`.
    aspect : str or tuple of int
        The cells' aspect, ``"W:H"`` or ``(W, H)`` (default square).
    colour_profiles : {"ignore", "convert"}, optional
        Whether the pictures' embedded ICC profiles are applied, as the
        setting of that name had ``make`` read the target. Default: the
        value ``tile_grid``'s placements record (JSON placements record
        their settings), else the default preset's (``convert``), which a
        ``make`` without options used. A mosaic mosaicist wrote carries no
        profile: this is the target's reading.

    Returns
    -------
    dict
        ``rows``, ``cols``, ``cell_px``, ``tile_px`` (and, for rectangular
        cells, ``aspect``, ``cell_height`` and ``tile_height``), the
        :func:`fidelity_metrics` and, with ``tile_grid``, the repetition
        metrics; with JSON placements whose target had other pixels than
        the one given (of its size), ``target_changed`` says so.

    Raises
    ------
    MosaicistError
        When a file is missing or unreadable, or the sizes do not fit
        (an :class:`OptionError` also when ``cell_px`` or ``aspect`` differ
        from those JSON placements record, or placements of another grid are
        given: for CSV placements whose grid a ``make --print`` crop could
        give, it says to score with the JSON ones, which record the crop;
        or JSON placements made from a target of another size).
    """
    # JSON placements record how the mosaic was made: its cells and where its grid
    # lies in the target (a --print crop moves it off the whole target's centre).
    recorded = (tile_grid if isinstance(tile_grid, Placements) and tile_grid.settings_recorded
                else None)
    made = recorded.options if recorded is not None else MosaicOptions()
    check_range("cell_px", cell_px, *CELL_PX_RANGE, "pixels", whole=True)
    _check_view_px(view_px)
    if colour_profiles is None:
        # A target carrying a profile reads otherwise by it: scored as it was made.
        colour_profiles = made.colour_profiles
    # aspect_pair checks a pair too: (3,) or 5 failed in format_aspect, naming no setting.
    ratio = aspect_pair(aspect)
    square = ratio == (1, 1)
    cell_height = height_for(cell_px, ratio)
    if recorded is not None and (cell_px, ratio) != (made.cell_px, made.aspect_ratio):
        # Their grid lies where cells of that size put it: others measure another region.
        differing = [("{cell_px} {made_cell}", "{cell_px} {cell}")] * (cell_px != made.cell_px)
        differing += [("{aspect} {made_aspect}", "{aspect} {given_aspect}")] * (
            ratio != made.aspect_ratio)
        raise OptionError(
            "the placements are for " + " and ".join(then for then, _ in differing)
            + ", not " + " and ".join(now for _, now in differing),
            made_cell=made.cell_px, made_aspect=format_aspect(made.aspect_ratio),
            cell=cell_px, given_aspect=format_aspect(ratio))
    mosaic = _read_scored(mosaic_path, "mosaic", colour_profiles)
    target = _read_scored(target_path, "target", colour_profiles)
    grid = make_grid(target, cell_px, name=str(target_path), cell_height=cell_height)
    rows, cols, left, top = grid.rows, grid.cols, grid.left, grid.top
    change = None
    if recorded is not None and recorded.target_pixels is not None:
        # Another picture (or the same resized) put the grid on another region, scored
        # without a word (the top-left 300x300 of a 600x600 copy, exit 0).
        change = recorded.target_pixels.change(target)
        if change is not None and not change.startswith("same "):
            raise OptionError("the placements are for another target: {target} is not the "
                              "picture they were made from ({change})",
                              target=str(target_path), change=change)
    if recorded is not None:
        rows, cols, (left, top) = recorded.rows, recorded.cols, recorded.crop
        if (left + cols * cell_px > target.shape[1]
                or top + rows * cell_height > target.shape[0]):
            raise OptionError(
                "the placements are {shape} cells from ({left}, {top}) but {target} is "
                "{width}x{height} pixels, too small for them at {cell_px} {cell}",
                shape=f"{cols}x{rows}", left=left, top=top, target=target_path,
                width=target.shape[1], height=target.shape[0], cell=cell_px)
    placed: Placements | None = None
    tile_ids: np.ndarray | None = None
    given: tuple[int, ...] | None = None
    if isinstance(tile_grid, Placements):
        # Adaptive cells have no tile grid: their leaves are measured as make measures them.
        placed, given = tile_grid, (tile_grid.rows, tile_grid.cols)
        tile_ids = None if tile_grid.rect is not None else tile_grid.tile_grid()
    elif tile_grid is not None:
        tile_ids = _tile_ids(tile_grid)
        given = tile_ids.shape
    # Before the mosaic's size: placements of another grid say more than "the mosaic does
    # not fit the target's cells" (the cells the user did not make).
    if given is not None and tuple(given) != (rows, cols):
        shape = "x".join(str(side) for side in given[::-1])
        hint = ""
        if recorded is None and _print_cropped(tuple(given), (rows, cols)):
            # A make --print grid lies in the centre of the print's crop, which CSV
            # placements (or a bare grid) do not record: the whole target's grid is not it.
            # Plain words, not a parameter: --print is make's, score has no such option.
            hint = ("; a mosaic made with 'make --print' is scored with its JSON placements "
                    "(make --placements NAME.json), which record where its grid lies in the "
                    "target: CSV placements do not")
        elif recorded is None and given[1] == cols:
            # As many columns, other rows: cells of another shape (the error said nothing of
            # what to change).
            hint = "; cells of another shape? give the {aspect} they were made with"
        raise OptionError(
            "the placements are {shape} cells but {target} has {cols}x{rows} cells at "
            "{cell_px} {cell}" + hint, shape=shape, target=target_path, cols=cols, rows=rows,
            cell=cell_px,
        )
    height, width = mosaic.shape[:2]
    tile_px = width // cols if width % cols == 0 else 0
    tile_height = height // rows if height % rows == 0 else 0
    if not tile_px or not tile_height or tile_height != height_for(tile_px, ratio):
        expected = ("expected {cols}*t x {rows}*t for a tile size t" if square else
                    "expected {cols}*t x {rows}*h for a tile width t and height h = "
                    f"round(t*{ratio[1]}/{ratio[0]}) at {{aspect}} {format_aspect(ratio)}")
        hint = ""
        fitting = ([] if given is not None else
                   _fitting_cells(width, height, target.shape[1], target.shape[0], ratio))
        if given is None and tile_px and height % tile_px:
            # Whole tiles across, not down: tiles of another shape (said nothing of it).
            hint = "; tiles of another shape? give the {aspect} it was made with"
        elif fitting:
            # The mosaic is exactly the target's grid at another cell size: the likelier
            # mistake than a print (whose crop a grid one row short fits just as well).
            # The sizes nearest the one given, as a mistyped size is near it.
            nearest = sorted(sorted(fitting, key=lambda cell: abs(cell - cell_px))[:4])
            hint = "; made at {cell_px} " + alternatives(str(cell) for cell in nearest) + "?"
        elif given is None and _print_sized(width, height, rows, cols, ratio):
            # Its grid may be a make --print one, in the print's crop: only JSON placements
            # say where that lies (not a setting of score's, so in plain words).
            hint = ("; a mosaic made with 'make --print' is scored with its JSON placements "
                    "(make --placements NAME.json), which record where its grid lies in the "
                    "target")
        raise OptionError(
            "{mosaic}: {width}x{height} pixels does not fit the {cols}x{rows} cells of {target} "
            "at {cell_px} {cell} (" + expected + ")" + hint,
            mosaic=mosaic_path, width=width, height=height, cols=cols, rows=rows,
            target=target_path, cell=cell_px,
        )
    _check_view_memory(rows * cols, view_px, view_px * cell_height / cell_px)
    crop = target[top:top + rows * cell_height, left:left + cols * cell_px]
    metrics: dict = {"rows": rows, "cols": cols, "cell_px": cell_px, "tile_px": tile_px}
    if not square:
        metrics |= {"aspect": format_aspect(ratio), "cell_height": cell_height,
                    "tile_height": tile_height}
    metrics |= fidelity_metrics(mosaic, crop, tile_px, view_px,
                                tile_height=None if square else tile_height,
                                aspect=None if square else ratio)
    if tile_ids is not None:
        metrics |= repetition_metrics(tile_ids)
    elif placed is not None and placed.rect is not None:
        from .adaptive import leaf_repetition

        metrics |= leaf_repetition(placed.tile, placed.rect)
    if change is not None:
        # Scored as given, a picture of the target's size whose pixels differ: said so.
        metrics["target_changed"] = change
    return metrics


def _tile_ids(tile_grid: object) -> np.ndarray:
    """``tile_grid`` as a ``(rows, cols)`` array of whole tile ids, or an error naming it."""
    grid = np.asarray(tile_grid)
    if grid.ndim != 2 or grid.size == 0:
        raise OptionError("{tile_grid} must be a (rows, cols) array of tile ids or the "
                          "placements, got shape {shape}", shape=grid.shape)
    if grid.dtype.kind not in "iu":
        raise OptionError("{tile_grid} must hold whole tile ids, got {dtype} values",
                          dtype=grid.dtype)
    return grid


def _print_cropped(given: tuple[int, ...], whole: tuple[int, int]) -> bool:
    """Whether a ``(rows, cols)`` grid could be the whole target's ``whole`` after a print crop.

    ``make --print`` crops the target to the print's shape along one side only,
    so its grid has as many cells as the whole target's along the other side
    and fewer along the cropped one.
    """
    (rows, cols), (whole_rows, whole_cols) = given, whole
    return (rows == whole_rows and cols < whole_cols) or (cols == whole_cols
                                                          and rows < whole_rows)


#: Cells a side of the fewest a grid that score's hints suggest has.
_LEAST_HINTED_SIDE = 3


def _fitting_cells(width: int, height: int, target_width: int, target_height: int,
                   ratio: tuple[int, int]) -> list[int]:
    """The cell widths (up to 1024 px) whose grid of the target a ``width x height``
    mosaic fits with whole tiles, in grids of at least :data:`_LEAST_HINTED_SIDE` cells a
    side (any mosaic is one large tile or two)."""
    fitting = []
    for cell in range(1, min(1024, target_width) + 1):
        cell_height = height_for(cell, ratio)
        cols, rows = target_width // cell, target_height // cell_height
        if min(rows, cols) < _LEAST_HINTED_SIDE or width % cols or height % rows:
            continue
        if height // rows == height_for(width // cols, ratio):
            fitting.append(cell)
    return fitting


def _print_sized(width: int, height: int, rows: int, cols: int, ratio: tuple[int, int]) -> bool:
    """Whether a ``width x height`` mosaic has tiles for a print crop of a ``rows x cols`` grid.

    That is: for some tile width ``t`` (up to 1024 px), as many tiles as the
    grid along one side and fewer, whole, along the other (see
    :func:`_print_cropped`).
    """
    for tile in range(1, 1025):
        tile_height = height_for(tile, ratio)
        if width % tile or height % tile_height:
            continue
        if _print_cropped((height // tile_height, width // tile), (rows, cols)):
            return True
    return False


def _check_view_memory(cells: int, view_px: int, view_height: float,
                       available: int | None = None) -> None:
    """Refuse, before reading further, views of ``cells`` too large for the memory available.

    ``score --view-px 64`` on 100 x 100 cells ran to a MemoryError (or, without a limit,
    the kernel's killer) after minutes.
    """
    from ._runtime import check_memory

    def refusal(needed: str, free: str) -> OptionError:
        return OptionError("{view_px} {value} on {cells} needs about {needed} of memory; this "
                           "machine has {free} available: use a smaller {view_px}",
                           value=view_px, cells=counted(cells, "cell"), needed=needed,
                           free=free)

    needed = int(cells * view_px * max(1.0, view_height) * VIEW_BYTES_PER_PIXEL)
    check_memory(needed, refusal, available)


def headline(metrics: dict) -> str:
    """Summarise metrics in one line (repetition parts only when present).

    Parameters
    ----------
    metrics : dict
        From :func:`score_mosaic`, :func:`fidelity_metrics` and/or
        :func:`repetition_metrics`.

    Returns
    -------
    str
        E.g. ``"PSNR 22.3 dB (view), SSIM 0.51, CIEDE2000 9.6 mean / 18.0 p95,
        600 distinct tiles, max 41 uses, closest repeat 1"``.
    """
    parts = []
    if "psnr_view" in metrics:
        parts.append(f"PSNR {metrics['psnr_view']:.1f} dB (view)")
    if "ssim_view" in metrics:
        ssim = metrics["ssim_view"]
        parts.append("SSIM n/a" if ssim is None else f"SSIM {ssim:.2f}")
    if "ciede2000_mean_view" in metrics:
        parts.append(
            f"CIEDE2000 {metrics['ciede2000_mean_view']:.1f} mean / "
            f"{metrics['ciede2000_p95_view']:.1f} p95"
        )
    if "distinct_tiles" in metrics:
        parts.append(counted(metrics["distinct_tiles"], "distinct tile"))
        parts.append("max " + counted(metrics["max_uses"], "use"))
        closest = metrics["closest_repeat"]
        parts.append("no repeats" if closest is None else f"closest repeat {closest}")
    return ", ".join(parts)
