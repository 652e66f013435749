"""Drawing placements as a picture, one row of cells at a time.

Every output (an image in memory, a streamed file, a Deep Zoom pyramid) comes
from :meth:`MosaicRenderer.bands`, so they agree pixel for pixel: each band
is one row of cells, each cell its tile picture (:mod:`._pictures`) under its
transform and tint, with the target blended over it when asked
(:mod:`._overlay`).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import paths
from ..colour import METRICS, _SpaceBlocks, encoded_means, grey_parts, to_space
from ..errors import MosaicistError, OptionError, SourceError, alternatives, shown_type
from ..imaging import ImageReadError, content_hash, read_target, read_tile_bytes
from ..library import TileStamp, stored_stamps, stored_windows
from ..placements import Placements
from ..sources import open_source
from ..sources.base import SourceEntry, TileSource, change_stamp
from ..transforms import SHAPE_KEEPING, TRANSFORM_NAMES, apply_transform
from ._formats import Picture, write_output
from ._overlay import TargetOverlay
from ._pictures import IndexPictures, OriginalPictures, TilePictures

if TYPE_CHECKING:
    from ..options import MosaicOptions


def _tile_height(pictures: TilePictures) -> int:
    """Height of ``pictures``' tiles: their ``tile_height``, else ``tile_px`` (square)."""
    return int(getattr(pictures, "tile_height", pictures.tile_px))


def dress_tiles(
    tiles: np.ndarray,
    transforms: np.ndarray | None = None,
    tint: np.ndarray | None = None,
    metric: str = "seed",
    gain: np.ndarray | None = None,
    chroma: np.ndarray | None = None,
    scored_mean: np.ndarray | None = None,
) -> np.ndarray:
    """Apply each tile's transform, contrast gain, chroma factor and tint shift.

    Parameters
    ----------
    tiles : numpy.ndarray
        ``(k, H, W, 3)`` uint8 sRGB tiles.
    transforms : numpy.ndarray, optional
        ``(k,)`` transform codes (only those that keep the shape for
        rectangular tiles: see :data:`mosaicist.transforms.SHAPE_KEEPING`).
    tint : numpy.ndarray, optional
        ``(k, 3)`` shifts in the metric's colour space (see
        :class:`mosaicist.placements.Placements`). In Lab and Oklab a shift
        goes from the mean of the tile's 8-bit encoding, as the matcher
        measures it (:func:`mosaicist.colour.encoded_means`), and a shifted
        tile is drawn about that mean, not its unrounded values' (up to half
        a level apart): all the way to a grey cell's mean is then exactly grey.
    metric : str
        Colour space of the shifts.
    gain : numpy.ndarray, optional
        ``(k, 3)`` factors on each tile's spread around its mean, per
        channel of that colour space, applied before the shift.
    chroma : numpy.ndarray, optional
        ``(k,)`` factors on each tile's chroma around its mean (each pixel's
        deviation less the grey of its lightness: :func:`mosaicist.colour.grey_parts`),
        applied after the gains.
    scored_mean : numpy.ndarray, optional
        ``(k, 3)`` mean of each tile as the matcher measured it, in the
        metric's units (:attr:`mosaicist.placements.Placements.mean`: its
        index thumbnail's, in the metric's 8-bit encoding). A tile that is
        changed (shifted, gained or paled) is drawn about it instead of its
        own mean: a tile drawn larger than it was matched (a print's, from
        its original) has a mean a little off its thumbnail's, and the shift
        measured from the thumbnail then missed the cell's colour (a grey
        cell's tile came out with pixels a level off grey). Tiles left as
        they are keep their own.

    Returns
    -------
    numpy.ndarray
        ``(k, H, W, 3)`` uint8 sRGB tiles as drawn.
    """
    out = np.asarray(tiles)
    if transforms is not None and np.any(transforms):
        out = out.copy()
        for code in np.unique(transforms).tolist():
            if code:
                chosen = transforms == code
                out[chosen] = apply_transform(out[chosen], code)
    gained = gain is not None and bool((gain != 1.0).any())
    paled = chroma is not None and bool((chroma != 1.0).any())
    if gained or paled or (tint is not None and np.any(tint)):
        out = _dressed(out, tint, metric, gain if gained else None,
                       chroma if paled else None, scored_mean)
    return out


#: Pixels dressed at a time: their values (and a temporary or two) stay in a core's
#: cache from one step to the next. Dressing a whole chunk of tiles (2 megapixels, 48 MB
#: of float64) step by step went to memory and back at each of its ten steps.
DRESS_PIXELS = 1 << 15
#: Float type of the sRGB dressing. float32 dressed the default's tiles another 1.5x
#: faster, but drew 46 of Starry Night's 5.2 million pixels (and 39 of the camera-trap
#: bear's 12.6 million) a level off, where float64 drew every pixel as before
#: (``benchmarks/bench_render.py``): the dressing is a small share of a make either way.
SRGB_FLOAT = np.float64


def _dressed(tiles: np.ndarray, tint: np.ndarray | None, metric: str,
             gain: np.ndarray | None, chroma: np.ndarray | None,
             scored_mean: np.ndarray | None) -> np.ndarray:
    """The moved tiles of :func:`dress_tiles`, drawn a cache-sized block at a time.

    ``gain`` and ``chroma`` are None where they change nothing. In Lab and
    Oklab each pixel's numbers are those of ``mean + gain * (values - mean)
    + tint`` (its chroma scaled between) step for step, as on the whole
    array, to the last bit: a channel at a time (steps over interleaved
    channels with a value per tile run NumPy's loops three values at a
    time). They are converted and drawn by :class:`mosaicist.colour._SpaceBlocks`
    in buffers made once per call, without ``pow``: the pixels of
    :func:`mosaicist.colour.from_space` (all of them on the benchmark's
    targets; only a value an ulp from a level's edge could fall on its other
    side), 1.9-2.7x as fast (``benchmarks/bench_render.py``). sRGB tiles go
    through :func:`_dressed_srgb`.
    """
    if metric == "seed":
        return _dressed_srgb(tiles, tint, gain, chroma, scored_mean)
    count, height, width = tiles.shape[:3]
    pixels = height * width
    flat = tiles.reshape(count, pixels, 3)
    drawn = np.empty(tiles.shape, np.uint8)
    drawn_flat = drawn.reshape(count, pixels, 3)
    # The mean of float values is taken over each tile's pixels as a whole (its
    # numbers depend on the order they are summed in), a few tiles at a time.
    step = max(1, DRESS_PIXELS // pixels)
    conversions = _SpaceBlocks(metric, min(count, step) * pixels)
    block = np.empty((min(count, step), pixels, 3))
    by_pixel = np.empty((pixels, min(count, step) * 3))
    for start in range(0, count, step):
        part = slice(start, start + step)
        tiles_here = min(step, count - start)
        values = block[:tiles_here]
        conversions.to_space(flat[part].reshape(-1, 3), values.reshape(-1, 3))
        # The mean of (k, H, W, 3) values over their pixels (NumPy sums them one pixel after
        # another) to the last bit, summed the same way over (pixels, k * 3) values: rows of
        # a k-th the length, each added whole (twice as fast, with the copy).
        rows = by_pixel[:, :tiles_here * 3]
        np.copyto(rows.reshape(pixels, tiles_here, 3), values.transpose(1, 0, 2))
        mean = (np.add.reduce(rows, axis=0) / pixels).reshape(tiles_here, 1, 1, 3)
        as_tiles = values.reshape(tiles_here, 1, pixels, 3)
        tint_here, gain_here = _part(tint, part), _part(gain, part)
        chroma_here = _part(chroma, part)
        centre = _shift_origins(as_tiles, mean, tint_here, metric, gain_here, chroma_here,
                                _part(scored_mean, part))
        spread = gain_here is not None or chroma_here is not None
        shift = None if spread or centre is mean else (centre - mean)[:, 0, 0]
        mean, centre = mean[:, 0, 0], centre[:, 0, 0]
        for channel in range(3):
            plane = values[:, :, channel]
            if spread:
                plane -= mean[:, channel, None]
                if gain_here is not None:
                    plane *= gain_here[:, channel, None]
                if chroma_here is not None and channel:
                    plane *= chroma_here[:, None]  # a and b: the chroma; the lightness stays
                plane += centre[:, channel, None]
            elif shift is not None:
                plane += shift[:, channel, None]
            if tint_here is not None:
                plane += tint_here[:, channel, None]
        conversions.to_srgb8(values.reshape(-1, 3), drawn_flat[part].reshape(-1, 3))
    return drawn


def _dressed_srgb(tiles: np.ndarray, tint: np.ndarray | None, gain: np.ndarray | None,
                  chroma: np.ndarray | None, scored_mean: np.ndarray | None) -> np.ndarray:
    """:func:`_dressed` in sRGB: each tile's steps folded into one map per channel.

    ``mean + s g (v - mean) + (1 - s) (w @ (g (v - mean))) + tint`` (each
    pixel's chroma scaled by ``s`` about the grey of its lightness:
    :func:`mosaicist.colour.grey_parts`) is, per tile, ``a * v + (W @ v) + e``: a scale
    ``a = s g`` per channel, the lightness weights ``W = (1 - s) w g`` shared
    by the three channels, and an offset ``e``, worked out once per tile in
    float64. The pixels then take five steps where they took ten, each over a
    channel's contiguous plane (steps over interleaved channels run NumPy's
    loops three values at a time), in :data:`SRGB_FLOAT`, a cache-sized block
    at a time: about 4x faster. A grey cell's tile (``s = 0``) has the same
    ``W @ v`` in every channel and an offset equal in every channel where its
    shifted mean is a grey: it is drawn exactly grey.
    """
    count, height, width = tiles.shape[:3]
    pixels = height * width
    flat = tiles.reshape(count, pixels, 3)
    # The channels as planes, once: NumPy's sums and casts over interleaved channels run
    # three values at a time (the sums below took 2.4 ms for 80 tiles of 32 px, 0.26 here).
    planes = np.ascontiguousarray(flat.transpose(0, 2, 1))
    needs_mean = gain is not None or chroma is not None or scored_mean is not None
    scale = lightness = None
    offset = np.zeros((count, 3)) if tint is None else np.asarray(tint, np.float64)
    if needs_mean:
        # Sums of whole numbers: exact, as the float64 mean of the same values was.
        exact = np.uint32 if 255 * pixels < 1 << 32 else np.uint64
        mean = planes.sum(axis=2, dtype=exact) / pixels
        centre = _shift_origins(flat, mean[:, None, None, :], tint, "seed", gain, chroma,
                                scored_mean)[:, 0, 0]
        moved = mean
        if gain is not None or chroma is not None:
            gains = np.ones((count, 3)) if gain is None else np.asarray(gain, np.float64)
            factor = (np.ones((count, 1)) if chroma is None
                      else np.asarray(chroma, np.float64)[:, None])
            scale = factor * gains
            moved = scale * mean
            if chroma is not None:
                lightness = (1.0 - factor) * grey_parts("seed")[1] * gains
                moved += (lightness * mean).sum(axis=1, keepdims=True)
        # (centre + tint) first: exactly grey for a tile shifted to a grey, and then
        # (with s = 0: a scale of 0) its offset is the same in every channel.
        offset = (centre + offset) - moved
    block_pixels = min(pixels, DRESS_PIXELS)
    block_tiles = max(1, DRESS_PIXELS // pixels)
    values = np.empty((block_tiles, 3, block_pixels), SRGB_FLOAT)
    levels = np.empty(values.shape, np.uint8)
    shared = np.empty((block_tiles, block_pixels), SRGB_FLOAT)
    term = np.empty(shared.shape, SRGB_FLOAT)
    scale_f = None if scale is None else scale.astype(SRGB_FLOAT)[:, :, None]
    lightness_f = None if lightness is None else lightness.astype(SRGB_FLOAT)[:, :, None]
    offset_f = offset.astype(SRGB_FLOAT)[:, :, None]
    drawn = np.empty(tiles.shape, np.uint8)
    drawn_flat = drawn.reshape(flat.shape)
    for start in range(0, count, block_tiles):
        stop = min(count, start + block_tiles)
        tiles_here = slice(start, stop)
        for first in range(0, pixels, block_pixels):
            last = min(pixels, first + block_pixels)
            here = (slice(0, stop - start), slice(None), slice(0, last - first))
            block = values[here]
            np.copyto(block, planes[tiles_here, :, first:last])
            if lightness_f is not None:
                weights_here = lightness_f[tiles_here]
                light, extra = shared[here[0], here[2]], term[here[0], here[2]]
                np.multiply(block[:, 0], weights_here[:, 0], out=light)
                np.multiply(block[:, 1], weights_here[:, 1], out=extra)
                light += extra
                np.multiply(block[:, 2], weights_here[:, 2], out=extra)
                light += extra
            if scale_f is not None:
                block *= scale_f[tiles_here]
            block += offset_f[tiles_here]
            if lightness_f is not None:
                block += light[:, None, :]
            np.rint(block, out=block)
            np.clip(block, 0, 255, out=block)
            whole = levels[here]
            np.copyto(whole, block, casting="unsafe")
            # Planes back to channels one plane at a time: NumPy copies the other way
            # round three bytes per loop, eight times as long.
            target = drawn_flat[tiles_here, first:last]
            for channel in range(3):
                target[:, :, channel] = whole[:, channel]
    return drawn


def _part(values: np.ndarray | None, part: slice) -> np.ndarray | None:
    """``values[part]``, or None for None."""
    return None if values is None else values[part]


def _shift_origins(values: np.ndarray, mean: np.ndarray, tint: np.ndarray | None,
                   metric: str, gain: np.ndarray | None = None,
                   chroma: np.ndarray | None = None,
                   scored_mean: np.ndarray | None = None) -> np.ndarray:
    """The means that ``(k, H, W, 3)`` tiles are drawn about: ``mean`` (``(k, 1, 1, 3)``) or,
    where a tile is changed, the mean the matcher measured (``scored_mean``, ``(k, 3)``,
    when given) or, where a Lab or Oklab tile is shifted, the mean of its own encoding.

    With ``scored_mean``, every tile that is shifted, gained or paled is
    drawn about it: the mean its shift was measured from and its gains and
    chroma were scored about, whatever the size it is drawn at.

    The matcher saw each tile in whole encoded levels, and the tint's shift goes
    from their mean (:func:`mosaicist.colour.encoded_means`) toward the cell's,
    up to half a level from the unrounded values' mean: a tile moved all the way
    to a grey cell kept that much chroma, and a grey target's mosaic had pixels a
    level off grey. A shifted tile is drawn about that mean, as it was scored;
    one not shifted keeps its own (drawn as it is when nothing else changes it).
    Returns ``mean`` itself where no tile is moved.
    """
    if scored_mean is not None:
        changed = np.zeros(len(mean), bool)
        if tint is not None:
            changed |= np.any(tint != 0, axis=1)
        if gain is not None:
            changed |= np.any(gain != 1.0, axis=1)
        if chroma is not None:
            changed |= chroma != 1.0
        if not changed.any():
            return mean
        centre = mean.copy()
        centre[changed, 0, 0] = np.asarray(scored_mean, np.float64)[changed]
        return centre
    if metric == "seed" or tint is None:
        return mean
    shifted = np.flatnonzero(np.any(tint != 0, axis=1))
    if not len(shifted):
        return mean
    centre = mean.copy()
    # Only Lab and Oklab come here; the means of all tiles' levels are as quick as a copy of
    # the shifted ones'.
    centre[shifted, 0, 0] = encoded_means(values, metric)[shifted]
    return centre


def reduce_tiles(tiles: np.ndarray, factor: int) -> np.ndarray:
    """Reduce tiles ``factor``-fold both ways by exact area averaging.

    Each output pixel is the mean of a ``factor x factor`` block, rounded
    to the nearest level (halves to even, as :func:`numpy.rint`).

    Parameters
    ----------
    tiles : numpy.ndarray
        ``(k, H, W, 3)`` uint8 tiles, ``H`` and ``W`` multiples of ``factor``.
    factor : int
        A power of two: how many times smaller the tiles are drawn.

    Returns
    -------
    numpy.ndarray
        ``(k, H / factor, W / factor, 3)`` uint8 tiles.
    """
    count, height, width, channels = tiles.shape
    short, narrow = height // factor, width // factor
    # Whole-number block sums, the rows of each block added, then its columns: a float64
    # mean over the blocks' strided axes was half of an adaptive render (6.8 s of 15 s for
    # 30,354 leaves at 64 px), these sums about a tenth of that.
    kind = np.uint16 if 255 * factor * factor <= np.iinfo(np.uint16).max else np.uint32
    rows = tiles.reshape(count, short, factor, width, channels)
    sums: np.ndarray = rows[:, :, 0].astype(kind)
    for offset in range(1, factor):
        sums += rows[:, :, offset]
    columns = sums.reshape(count, short, narrow, factor, channels)
    total: np.ndarray = columns[:, :, :, 0].copy()
    for offset in range(1, factor):
        total += columns[:, :, :, offset]
    # The sums over factor^2 (a power of two) are exact in float64: the rounded means.
    return np.rint(total / (factor * factor)).astype(np.uint8)


def _drawing_problem(placements: Placements, tile_px: int, tile_height: int,
                     aspect: tuple[int, int] | None = None) -> OptionError | None:
    """Say why ``placements`` cannot be drawn with tiles of ``tile_px x tile_height``, or None.

    A quarter turn or a diagonal mirror does not keep the shape of a
    rectangular tile, and a cell ``2^-d`` a side is its tile reduced
    ``2^d``-fold, which needs tile sides that divide by ``2^d``.

    Parameters
    ----------
    placements : Placements
        The placements to draw.
    tile_px, tile_height : int
        The tiles' width and height in pixels.
    aspect : tuple of int, optional
        The tiles' shape, from which the widths that would do are worked
        out (default: that of ``tile_px x tile_height``).

    Returns
    -------
    OptionError or None
        The problem, naming ``tile_px`` where another width would do and the
        nearest widths that would; None when they can be drawn.
    """
    if tile_px != tile_height:
        turned = np.setdiff1d(np.unique(placements.transform), SHAPE_KEEPING)
        if len(turned):
            code = int(turned[0])
            name = TRANSFORM_NAMES[code] if 0 <= code < len(TRANSFORM_NAMES) else str(code)
            return OptionError("the placements turn tiles by {name}, which does not keep the "
                               "shape of {size} px tiles", name=name,
                               size=f"{tile_px}x{tile_height}")
    if placements.rect is not None:
        side = np.rint(1 / placements.rect[:, 2]).astype(np.int64)
        if ((tile_px % side) | (tile_height % side)).any():
            small = int(side.max())
            if aspect is None:
                aspect = (tile_px, tile_height)
            # Said alone, "divide by 4" left the user to find a size that does, and
            # which setting it is; with an aspect, the height must divide too.
            from ..adaptive import halving_widths
            from ..options import TILE_PX_RANGE

            nearest = halving_widths(tile_px, aspect, small, TILE_PX_RANGE[1])
            sizes = " or ".join(str(width) for width in nearest)
            return OptionError("cells down to 1/{small} of a tile need a {tile_px} that "
                               "divides by {small}" + (" with its height" if tile_px !=
                                                        tile_height else "")
                               + (", such as {sizes}" if sizes else "")
                               + "; {size} px tiles do not", small=small, sizes=sizes,
                               size=f"{tile_px}x{tile_height}")
    return None


@dataclass
class MosaicRenderer:
    """Draws placements as a picture, one row of cells at a time.

    Every output (an image in memory, a streamed file, a Deep Zoom pyramid)
    comes from :meth:`bands`, so they agree pixel for pixel.

    Attributes
    ----------
    placements : Placements
        Which tile, transform and tint goes in each cell.
    pictures : TilePictures
        Where tile pictures come from, at the output size.
    metric : str
        Colour space of the tint shifts.
    overlay : TargetOverlay, optional
        The target blended over the mosaic.
    source_root : pathlib.Path, optional
        Folder of the tiles' original files when they are local files (a
        Deep Zoom viewer then links each cell to its photo).
    changed_tiles : list of str
        Tiles whose files changed since the placements were made
        (:func:`changed_tiles`): they are drawn as they are now.
    changed_target : str, optional
        Where the overlay's target changed since the placements were made
        (one line naming the file and what changed: its size, or its
        pixels); it is blended as it is now. None: unchanged, or not known
        (no overlay, or placements that record no :class:`TargetPixels
        <mosaicist.placements.TargetPixels>`).
    """

    placements: Placements
    pictures: TilePictures
    metric: str = "seed"
    overlay: TargetOverlay | None = None
    source_root: Path | None = None
    changed_tiles: list[str] = field(default_factory=list)
    changed_target: str | None = None

    @property
    def tile_px(self) -> int:
        """Output pixels per tile across (the tile's width)."""
        return self.pictures.tile_px

    @property
    def tile_height(self) -> int:
        """Output pixels per tile down (``tile_px`` for square tiles)."""
        return _tile_height(self.pictures)

    @property
    def width(self) -> int:
        """Output width in pixels: ``cols * tile_px``."""
        return self.placements.cols * self.tile_px

    @property
    def height(self) -> int:
        """Output height in pixels: ``rows * tile_height``."""
        return self.placements.rows * self.tile_height

    def bands(self) -> Iterator[np.ndarray]:
        """Yield the picture as ``(tile_height, width, 3)`` uint8 bands, one per row of cells."""
        placements = self.placements
        cols, tile_px, tile_height = placements.cols, self.tile_px, self.tile_height
        problem = _drawing_problem(placements, tile_px, tile_height)
        if problem:
            raise problem
        if placements.rect is not None:
            yield from self._adaptive_bands()
            return
        # Fetched and dressed a few megapixels at a time (the dressing holds their uint8
        # planes and output, and works a cache-sized block at a time: DRESS_PIXELS).
        chunk = max(1, (1 << 21) // (tile_px * tile_height))
        for row in range(placements.rows):
            band = np.empty((tile_height, cols, tile_px, 3), np.uint8)
            for start in range(0, cols, chunk):
                stop = min(cols, start + chunk)
                cells = np.arange(row * cols + start, row * cols + stop)
                pictures = self.pictures.fetch(cells)
                if pictures.shape[1:3] != (tile_height, tile_px):
                    raise MosaicistError(
                        f"tile pictures are {pictures.shape[2]}x{pictures.shape[1]} px, "
                        f"expected {tile_px}x{tile_height}"
                    )
                dressed = dress_tiles(
                    pictures, placements.transform[cells],
                    placements.tint[cells], self.metric, placements.gain[cells],
                    placements.chroma[cells],
                    None if placements.mean is None else placements.mean[cells],
                )
                band[:, start:stop] = dressed.transpose(1, 0, 2, 3)
            rows = band.reshape(tile_height, cols * tile_px, 3)
            if self.overlay is not None:
                rows = self.overlay.blend(rows, row * tile_height)
            yield rows

    def _adaptive_bands(self) -> Iterator[np.ndarray]:
        """Bands of cells of several sizes: a cell ``2^-d`` a side is its tile reduced ``2^d``-fold.

        The tile is fetched at the output size and reduced by exact area
        averaging (means of ``2^d x 2^d`` blocks, :func:`reduce_tiles`), then
        transformed and tinted at its drawn size; each cell lies in the band
        of its level-0 row. The cells of one size in a band are drawn
        together, a chunk at a time: their corners are multiples of their
        side, so the band is a grid of such cells and each chunk is copied
        into it in one step.
        """
        placements = self.placements
        assert placements.rect is not None
        tile_px, tile_height = self.tile_px, self.tile_height
        width = placements.cols * tile_px
        rect = placements.rect
        side = np.rint(1 / rect[:, 2]).astype(np.int64)
        band_of = placements.cell_rows()
        order = np.argsort(band_of, kind="stable")
        bounds = np.searchsorted(band_of[order], np.arange(placements.rows + 1))
        # Each cell's place in the grid of cells of its own size: (row in its band, column).
        grid_row = np.rint((rect[:, 1] - band_of) * side).astype(np.int64)
        grid_col = np.rint(rect[:, 0] * side).astype(np.int64)
        chunk = max(1, (1 << 21) // (tile_px * tile_height))
        for row in range(placements.rows):
            band = np.empty((tile_height, width, 3), np.uint8)
            here = order[bounds[row]:bounds[row + 1]]
            for factor in np.unique(side[here]).tolist():
                cells = here[side[here] == factor]
                height, across = tile_height // factor, tile_px // factor
                # The band as (grid row, pixel row, grid column, pixel column, channel).
                grid = band.reshape(factor, height, placements.cols * factor, across, 3)
                for start in range(0, len(cells), chunk):
                    part = cells[start:start + chunk]
                    pictures = self.pictures.fetch(part)
                    if pictures.shape[1:3] != (tile_height, tile_px):
                        raise MosaicistError(
                            f"tile pictures are {pictures.shape[2]}x{pictures.shape[1]} px, "
                            f"expected {tile_px}x{tile_height}")
                    if factor > 1:
                        pictures = reduce_tiles(pictures, factor)
                    dressed = dress_tiles(pictures, placements.transform[part],
                                          placements.tint[part], self.metric,
                                          placements.gain[part], placements.chroma[part],
                                          None if placements.mean is None
                                          else placements.mean[part])
                    grid[grid_row[part], :, grid_col[part], :] = dressed
            if self.overlay is not None:
                band = self.overlay.blend(band, row * tile_height)
            yield band

    def image(self) -> np.ndarray:
        """Return the whole picture in memory (``(height, width, 3)`` uint8)."""
        image = np.empty((self.height, self.width, 3), np.uint8)
        tile_height = self.tile_height
        for row, band in enumerate(self.bands()):
            image[row * tile_height:(row + 1) * tile_height] = band
        return image

    def write(
        self,
        path: str | os.PathLike[str],
        options: MosaicOptions | None = None,
        *,
        show_progress: bool = False,
        observe: Callable[[np.ndarray], object] | None = None,
    ) -> None:
        """Write the picture to ``path``, streaming: never whole in memory.

        Parameters
        ----------
        path : path-like
            Its suffix picks the format (:data:`~mosaicist.render.OUTPUT_FORMATS`):
            ``.png``, ``.jpg``, ``.webp``, ``.tif`` or ``.dzi`` (a Deep Zoom
            pyramid plus its viewer, ``NAME.html``).
        options : MosaicOptions, optional
            Output settings (``jpeg_quality``, ``dzi_*``); the defaults when omitted.
        show_progress : bool
            Draw a progress bar.
        observe : callable, optional
            Called with each band, top to bottom, as the writer draws it and
            before the writer has it (a :class:`~mosaicist.metrics.FidelityMeter`
            measuring the picture written, say).
        """
        bands = self.bands()
        if observe is not None:
            bands = _observed(bands, observe)
        picture = Picture(bands, self.width, self.height, self.placements, self.source_root)
        write_output(path, picture, options, show_progress)


def _observed(
    bands: Iterator[np.ndarray], observe: Callable[[np.ndarray], object]
) -> Iterator[np.ndarray]:
    for band in bands:
        observe(band)
        yield band


def render_mosaic(
    tiles: np.ndarray,
    tile_grid: np.ndarray,
    transforms: np.ndarray | None = None,
    tint: np.ndarray | None = None,
    metric: str = "seed",
) -> np.ndarray:
    """Assemble a mosaic in memory from tiles at the output size.

    Parameters
    ----------
    tiles : numpy.ndarray
        ``(M, tile_height, tile_px, 3)`` uint8 library tiles.
    tile_grid : numpy.ndarray
        ``(rows, cols)`` library positions.
    transforms, tint : numpy.ndarray, optional
        ``(rows * cols,)`` transform codes and ``(rows * cols, 3)`` tint
        shifts, row-major (see :func:`dress_tiles`).
    metric : str
        Colour space of the tint shifts.

    Returns
    -------
    numpy.ndarray
        ``(rows * tile_height, cols * tile_px, 3)`` uint8 image.

    Raises
    ------
    OptionError
        Naming the parameter: ``tiles`` not ``(M, H, W, 3)`` uint8,
        ``tile_grid`` not a 2-D array of whole numbers from 0 to ``M - 1``,
        ``transforms`` or ``tint`` of another length or out of range, an
        unknown ``metric``.
    """
    tiles = np.asarray(tiles)
    if tiles.ndim != 4 or tiles.shape[3] != 3 or tiles.dtype != np.uint8 or not tiles.size:
        raise OptionError("{tiles} must be an (M, tile_height, tile_px, 3) uint8 array of at "
                          "least one tile, got shape {shape}, dtype {dtype}",
                          shape=tiles.shape, dtype=str(tiles.dtype))
    tile_grid = np.asarray(tile_grid)
    if tile_grid.ndim != 2 or not np.issubdtype(tile_grid.dtype, np.integer) \
            or not tile_grid.size:
        raise OptionError("{tile_grid} must be a (rows, cols) array of whole numbers, "
                          "got shape {shape}, dtype {dtype}",
                          shape=tile_grid.shape, dtype=str(tile_grid.dtype))
    if tile_grid.min() < 0 or tile_grid.max() >= len(tiles):
        # A negative position would draw a tile from the end of the library.
        raise OptionError("{tile_grid} must hold positions from 0 to {last} (the tiles), "
                          "got {low} to {high}", last=len(tiles) - 1,
                          low=int(tile_grid.min()), high=int(tile_grid.max()))
    if metric not in METRICS:
        # Else any text was taken, and a tint drawn in the sRGB of the default.
        shown = repr(metric[:40]) if isinstance(metric, str) else shown_type(metric)
        raise OptionError("{metric} must be {choices}, got {value}",
                          choices=alternatives(METRICS), value=shown)
    rows, cols = tile_grid.shape
    try:
        placements = Placements(rows, cols, np.asarray(tile_grid).ravel(),
                                np.zeros(rows * cols, np.int64), [""] * (rows * cols),
                                transforms, tint)
    except ValueError as error:
        # Placements names its own fields ("transform has codes outside 0 to 7"): a bare
        # ValueError where the docstring promises an OptionError naming the parameter.
        for field_name, parameter in (("transform", "transforms"), ("tint", "tint")):
            if str(error).startswith(field_name + " "):
                raise OptionError("{" + parameter + "}: {reason}",
                                  reason=str(error)[len(field_name) + 1:]) from None
        raise
    return MosaicRenderer(placements, IndexPictures(tiles, placements.tile), metric).image()


def placements_renderer(
    placements: Placements,
    options: MosaicOptions | None = None,
    *,
    tiles: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    show_progress: bool = False,
) -> MosaicRenderer:
    """Prepare to render saved placements from the tile library's original images.

    Each tile is made from its original image (cropped to the mosaic's
    aspect, Lanczos) at ``options.tile_px`` by ``options.tile_height``, not
    by enlarging the index thumbnail, with the
    recorded transform and tint; the target is blended over it when
    ``options.overlay`` is set. At ``options.match_px`` (the size tiles were
    matched at, where ``make`` draws the index's thumbnails) a local file is
    cut as the index cuts it, so that the picture is the make's.

    Parameters
    ----------
    placements : Placements
        Read with :meth:`Placements.read`; JSON placements carry their
        source, settings and target.
    options : MosaicOptions, optional
        Settings to draw with (default: ``placements.options``), e.g. those
        with a larger ``tile_px``: match at 32 px, print at 512 px.
    tiles : str, optional
        The tile source spec, required for CSV placements, which do not
        record it.
    cache_dir : path-like, optional
        Cache for downloads.
    show_progress : bool
        Show download progress.

    Raises
    ------
    MosaicistError
        When the source is not named or cannot be opened, a placed tile is
        not a file of a local library (naming the placements file, before
        any drawing), or the overlay's target is missing (or so changed
        that the grid's crop window no longer lies inside it; one changed
        otherwise is blended as it is now, and said in the renderer's
        :attr:`MosaicRenderer.changed_target`);
        :class:`~mosaicist.errors.OptionError` naming the parameter for one
        of the wrong type.
    """
    _check_arguments(placements, options, tiles, cache_dir)
    options = placements.options if options is None else options
    matched = placements
    if options.aspect != placements.options.aspect:
        # Tiles of another shape (an aspect given for CSV placements, which record
        # none): the placements then describe that grid, for the viewer's pointer.
        placements = copy.copy(placements)
        placements.options = placements.options.replace(aspect=options.aspect)
    # Found while drawing, after the output was begun, this named no file.
    problem = _drawing_problem(placements, options.tile_px, options.tile_height,
                               options.aspect_ratio)
    if problem:
        named = "the placements" if placements.path is None else str(placements.path)
        raise OptionError("{path}: " + problem.template, path=named, **problem.values)
    spec = tiles or placements.source
    if not spec:
        raise OptionError("these placements do not name their tile source; pass {tiles}")
    try:
        # Named, not made: a folder needs no cache, and a download makes its own folders.
        source = open_source(spec, cache_dir=paths.cache_dir(cache_dir, create=False),
                             show_progress=show_progress)
    except SourceError as error:
        if tiles or placements.path is None:
            raise
        # A library moved since the make: the folder named alone did not say where it
        # came from, nor how to name the one to use.
        raise OptionError("{path}: the tile source it records cannot be used ({problem}); "
                          "pass {tiles} to name the library", path=placements.path,
                          problem=str(error)) from None
    as_given = placements.source_ids
    placements = _renamed_array(source, placements)
    _check_placed_files(source, placements, as_given)
    # The crop windows the index stored when the tiles were matched, if it is there.
    windows = stored_windows(source, placements.source_ids, options.match_px or options.tile_px,
                             options.aspect_ratio, options.crop, cache_dir,
                             colour_profiles=options.colour_profiles)
    # At the size tiles were matched at, make draws the index's thumbnails: they are cut
    # here as the index cut them, so that a render of a make is that make.
    pictures = OriginalPictures(source, placements.source_ids, options.tile_px,
                                aspect=options.aspect_ratio, crop=options.crop, windows=windows,
                                as_indexed=options.tile_px == options.match_px,
                                colour_profiles=options.colour_profiles)
    if (placements.mean is None and options.tile_px != options.match_px
            and _changes_tiles(placements)):
        # A file from before the scored means were recorded: found again from the
        # thumbnails the tiles were matched as, so that a print draws the colours scored.
        placements = copy.copy(placements)
        placements.mean = _scored_means(source, placements, options)
    renderer = MosaicRenderer(
        placements, pictures, options.metric, source_root=source.local_root(),
    )
    if placements.hashes:
        # A local file's stamps spare reading it; an array's images are read to be hashed.
        stamps = None if source.local_root() is None else stored_stamps(
            source, list(placements.hashes), options.match_px or options.tile_px,
            options.aspect_ratio, options.crop, cache_dir,
            colour_profiles=options.colour_profiles)
        renderer.changed_tiles = changed_tiles(source, placements.hashes, stamps)
    if options.overlay > 0:
        crop, renderer.changed_target = _overlay_target(matched)
        renderer.overlay = TargetOverlay(crop, renderer.width, renderer.height, options.overlay)
    return renderer


def _changes_tiles(placements: Placements) -> bool:
    """Whether ``placements`` shift, gain or pale any tile."""
    return bool(np.any(placements.tint) or placements.has_gain or placements.has_chroma)


def _scored_means(source: TileSource, placements: Placements,
                  options: MosaicOptions) -> np.ndarray:
    """Each cell's tile mean as the matcher measured it, from thumbnails made again.

    Each placed tile is made at ``options.match_px`` as the index made it
    and its mean taken in the metric's 8-bit encoding
    (:func:`mosaicist.colour.encoded_means`): what :attr:`Placements.mean`
    records in files written since it was.

    Returns
    -------
    numpy.ndarray
        ``(N, 3)`` float64 means in the metric's units.
    """
    assert options.match_px is not None  # resolved by MosaicOptions
    placed = list(dict.fromkeys(placements.source_ids))
    thumbnails = OriginalPictures(source, placed, options.match_px, aspect=options.aspect_ratio,
                                  crop=options.crop, as_indexed=True,
                                  colour_profiles=options.colour_profiles)
    means = np.empty((len(placed), 3))
    step = max(1, (1 << 21) // (options.match_px * options.match_height))
    for start in range(0, len(placed), step):
        tiles = np.arange(start, min(len(placed), start + step))
        values = to_space(thumbnails.fetch(tiles), options.metric)
        means[tiles] = encoded_means(values, options.metric)
    position = {source_id: index for index, source_id in enumerate(placed)}
    return means[[position[source_id] for source_id in placements.source_ids]]


def _renamed_array(source: TileSource, placements: Placements) -> Placements:
    """Placements of an image array renamed since, with its ids as the array now names them.

    An array's tile ids are ``<name>/<position>`` (``lib/2`` for the third
    image of ``lib.npy``); saved again as ``photos.npy`` and given as the
    tiles, it named none of them. Where every placed id has one other name,
    its positions are taken in the array given: the hashes JSON placements
    record then say which images differ (as in a folder moved since).
    """
    from ..sources.arrays import ArrayFileSource

    if not isinstance(source, ArrayFileSource):
        return placements
    names = {source_id.rpartition("/")[0] for source_id in placements.source_ids}
    if len(names) != 1 or source.id_prefix in names:
        return placements
    cut = len(names.pop())
    prefix = source.id_prefix
    return placements.with_ids_renamed(lambda source_id: prefix + source_id[cut:])


def _check_placed_files(source: TileSource, placements: Placements,
                        named: list[str] | None = None) -> None:
    """Refuse placements whose tiles are not all in the library, before any drawing.

    Found while drawing, a tile gone from the library (moved, renamed,
    deleted since the match, an array or dataset copy with fewer images, or
    the wrong ``--tiles``) ended the render at its row, after the rows above
    it were drawn: hours into a mural. Checked where it is cheap: a local
    library's files, an image array's count (its ids are ``<name>/<position>``),
    a CIFAR dataset's listing (which drawing loads anyway); other sources are
    checked as their tiles are drawn.

    ``named`` are the ids as the file gives them, where they were renamed
    (:func:`_renamed_array`): the error names those.

    Raises
    ------
    MosaicistError
        Naming the placements file, how many placed tiles are missing and the first few.
    """
    placed_ids = list(dict.fromkeys(placements.source_ids))
    root = source.local_root()
    if root is not None:
        missing = [source_id for source_id in placed_ids
                   if not _is_library_file(source, source_id)]
        where = f"a file of {root}"
    else:
        found = _missing_from_collection(source, placed_ids)
        if found is None:
            return
        missing, where = found, f"in {source.name}"
    if missing:
        if named is not None:
            as_named = dict(zip(placements.source_ids, named, strict=True))
            missing = [as_named[source_id] for source_id in missing]
        file = "the placements" if placements.path is None else str(placements.path)
        shown = ", ".join(repr(source_id) for source_id in missing[:3])
        placed = len(placed_ids)
        which = (f"none of the {placed} placed tiles is" if len(missing) == placed
                 else f"{len(missing)} of the {placed} placed tiles "
                      f"{'is' if len(missing) == 1 else 'are'} not")
        raise MosaicistError(
            f"{file}: {which} {where} "
            f"({shown}{', ...' if len(missing) > 3 else ''}): moved or removed since the "
            "placements were made, or another library")


def _is_library_file(source: TileSource, source_id: str) -> bool:
    try:
        path = source.local_path(SourceEntry(source_id, 0, 0, None))
    except MosaicistError:  # an id that names no file of a folder ("./a.png", "a//b")
        return False
    return path is not None and os.path.isfile(path)


def _missing_from_collection(source: TileSource, placed_ids: list[str]) -> list[str] | None:
    """The placed ids that an image array or a CIFAR dataset does not hold; None: not known."""
    # Imported here, as open_source does: commands that read neither skip their imports.
    from ..sources.arrays import ArrayFileSource
    from ..sources.cifar import CifarSource

    if isinstance(source, ArrayFileSource):
        # Its ids are "<name>/<position>": the array's count tells, without listing a
        # million ids.
        return [source_id for source_id in placed_ids if source.position_of(source_id) < 0]
    if isinstance(source, CifarSource):
        # 60,000 ids at most, and the images they list are loaded to draw anyway.
        known = {entry.source_id for entry in source.scan()}
        return [source_id for source_id in placed_ids if source_id not in known]
    return None


def changed_tiles(source: TileSource, hashes: Mapping[str, str],
                  stamps: Mapping[str, TileStamp] | None = None) -> list[str]:
    """The tiles whose files no longer hold what they held when the placements were made.

    Each file's content hash is compared with the one recorded
    (``hashes``). A file whose size and change stamp are still those the
    index saw with that very hash (``stamps``, :func:`stored_stamps`) is not
    read; others are read and hashed (a file touched but not changed is not
    reported). An image array's placed images are read and hashed as its
    index hashed them. A dataset's tiles, and tiles that are missing (the
    render then says so), are not reported.

    Parameters
    ----------
    source : TileSource
        The tiles' source.
    hashes : mapping of str to str
        Each tile's content hash when the placements were made.
    stamps : mapping of str to TileStamp, optional
        What the index last saw of the files.

    Returns
    -------
    list of str
        The changed tiles' ids, in the order of ``hashes``.
    """
    stamps = stamps or {}
    if source.local_root() is None:
        if not source.tracks_changes():
            return []
        # An image array's images, read and hashed as its index hashed them.
        entries = [SourceEntry(source_id, 0, 0, None) for source_id in hashes]
        return [entry.source_id for entry, now in zip(
                    entries, source.content_hashes(entries), strict=True)
                if now is not None and now != hashes[entry.source_id]]
    changed = []
    for source_id, recorded in hashes.items():
        path = source.local_path(SourceEntry(source_id, 0, 0, None))
        if path is None:
            continue
        try:
            status = os.stat(path)
            seen = stamps.get(source_id)
            if seen is not None and seen.content_hash == recorded and (
                    seen.size, seen.mtime_ns) == (status.st_size, change_stamp(status)):
                continue
            # A tile's own reader: a FIFO or a file of gigabytes now under the name is
            # refused (as changed) rather than waited on or read whole.
            if content_hash(read_tile_bytes(path)) != recorded:
                changed.append(source_id)
        except ImageReadError:
            changed.append(source_id)
        except (OSError, MosaicistError):
            continue
    return changed


def render_placements(
    placements: Placements,
    tile_px: int | None = None,
    tiles: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    show_progress: bool = False,
) -> np.ndarray:
    """Render saved placements again, in memory (see :func:`placements_renderer`).

    Parameters
    ----------
    placements : Placements
        The placements.
    tile_px : int, optional
        Output pixels per tile across (default: the one recorded; the height
        follows the recorded aspect).
    tiles, cache_dir, show_progress
        As for :func:`placements_renderer`.

    Returns
    -------
    numpy.ndarray
        ``(rows * tile_height, cols * tile_px, 3)`` uint8 image.
    """
    _check_arguments(placements, None, tiles, cache_dir)
    options = placements.options
    if tile_px is not None:
        options = options.replace(tile_px=tile_px)
    return placements_renderer(placements, options, tiles=tiles, cache_dir=cache_dir,
                               show_progress=show_progress).image()


def _check_arguments(placements: object, options: object, tiles: object,
                     cache_dir: object = None) -> None:
    """Refuse, by name, arguments of the render functions that are of the wrong type."""
    from ..options import MosaicOptions

    if not isinstance(placements, Placements):
        # A path here read as placements would be an AttributeError deep inside.
        raise OptionError("{placements} must be Placements (Placements.read(path) reads a "
                          "file), got {value}", value=shown_type(placements))
    if options is not None and not isinstance(options, MosaicOptions):
        raise OptionError("{options} must be a MosaicOptions, got {value}",
                          value=shown_type(options))
    if tiles is not None and not isinstance(tiles, str | os.PathLike):
        raise OptionError("{tiles} must be a tile source spec (a text or a path), got {value}",
                          value=shown_type(tiles))
    if cache_dir is not None and not isinstance(cache_dir, str | os.PathLike):
        # Else a bare TypeError from os.fspath, naming nothing.
        raise OptionError("{cache_dir} must be a path (a text or a path object), got {value}",
                          value=shown_type(cache_dir))


def target_crop(placements: Placements) -> np.ndarray:
    """Read the target that placements name and cut the grid's crop (for the overlay).

    Parameters
    ----------
    placements : Placements
        Placements that name their target picture, with the crop and the cell size.

    Returns
    -------
    numpy.ndarray
        ``(rows * cell_height, cols * cell_px, 3)`` uint8: the part of the
        target the grid covers.

    Raises
    ------
    MosaicistError
        When the placements do not name a target, it is not found, or the
        grid's crop window does not lie inside it (the target was replaced
        or edited since: blending another picture's pixels would be wrong).
        A target changed otherwise is cut all the same
        (:func:`placements_renderer` says so).
    """
    return _overlay_target(placements)[0]


def _overlay_target(placements: Placements) -> tuple[np.ndarray, str | None]:
    """:func:`target_crop`, and how the target changed since the placements were made.

    Returns
    -------
    crop : numpy.ndarray
        The part of the target the grid covers.
    change : str or None
        One line naming the target and what changed (its size, or its
        pixels), where the placements record the target as it was matched
        (:class:`~mosaicist.placements.TargetPixels`) and it differs now;
        None otherwise.
    """
    target = placements.target
    if not target:
        raise MosaicistError("the overlay needs the target picture, and these placements do "
                             "not name one")
    if not Path(target).exists():
        # A link to a moved picture is "there" to ls: said as what it is.
        missing = paths.dangling_link(target) or "not found"
        raise MosaicistError(f"{target}: the overlay needs the target picture, which is "
                             f"{missing}")
    width = placements.cols * placements.options.cell_px
    height = placements.rows * placements.options.cell_height
    left, top = placements.crop
    picture = read_target(target, placements.options.max_target_pixels,
                          colour_profiles=placements.options.colour_profiles)
    recorded = placements.target_pixels
    change = None if recorded is None else recorded.change(picture)
    if left + width > picture.shape[1] or top + height > picture.shape[0]:
        since = ("replaced or edited since the placements were made?" if change is None
                 else f"{change}: replaced or resized since the placements were made")
        # The offsets without separators: "(1,000, 0)" reads as three numbers.
        raise MosaicistError(
            f"{target}: the overlay's {width:,}x{height:,} window at ({left}, {top}) does "
            f"not lie inside this {picture.shape[1]:,}x{picture.shape[0]:,} target ({since})")
    if change is not None:
        # As a changed tile is drawn as it is now (changed_tiles), with one warning line.
        change = (f"{target}: the target changed since these placements were made ({change}); "
                  "the overlay blends it as it is now")
    return picture[top:top + height, left:left + width], change
