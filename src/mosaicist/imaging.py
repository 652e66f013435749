"""Reading images of any mode into RGB, and cutting tile thumbnails from them.

A tile is its photo's crop window (:mod:`mosaicist.crop`: the largest
rectangle of the tile's aspect, centred or on the subject) resized with
Lanczos to ``width_px`` by ``height_for(width_px, aspect)``.

Mode conversions (documented in the README):

- ``RGB`` is used as is; ``L`` (greyscale) and ``1`` (bilevel) are replicated
  to three channels; ``P`` (palette) is expanded through its palette.
- Images with transparency (``RGBA``, ``LA``, ``PA``, palette with a
  transparent index, and greyscale, bilevel or ``RGB`` pictures with a
  transparent colour key, a PNG ``tRNS`` chunk) are composited over a white
  background, partial transparency blended with it; targets and tiles alike,
  before any resizing (a hidden colour never bleeds into a tile).
- 16- and 32-bit integer greyscale (``I;16*``, ``I``) is scaled from the
  0..65535 range to 0..255 (a TIFF of unsigned 32-bit samples from
  0..4294967295, one of signed 16-bit samples from -32768..32767);
  floating-point greyscale (``F``) is taken as 0..1 when its maximum is at
  most 1, else as 0..255; values are clipped. A
  greyscale TIFF that stores 0 as white (photometric interpretation 0) is
  shown so at every depth.
- ``CMYK``, ``YCbCr``, ``LAB`` and ``HSV`` use Pillow's conversion to RGB.
- The EXIF orientation tag (or, without one, XMP's ``tiff:Orientation``, as
  Pillow reads it) is applied before anything else, to targets, their sizes
  read from headers (:func:`target_size`) and tiles alike; the fast JPEG
  decoder is used only for JPEGs whose header holds neither.
- Embedded ICC profiles follow the ``colour_profiles`` setting, on every path
  alike (targets, tiles and re-read originals: each reader takes it as
  ``colour_profiles``). ``ignore`` (the declared default, ``--preset seed``):
  the stored values are taken as sRGB, as OpenCV (the seed's reader) does,
  and a CMYK picture gets Pillow's plain conversion. ``convert`` (the default
  preset): a profile other than sRGB's is applied, the picture converted to
  sRGB (relative colorimetric, :mod:`mosaicist._profiles`), a CMYK picture
  through its profile, a greyscale one of any depth through a grey profile
  once it is 8-bit grey, an RGB one after transparency is composited; a
  damaged profile is left unapplied, with one warning. A HEIC or AVIF
  picture that declares its colour space by nclx codes instead of a profile
  (phones' Display P3) is converted through the profile those codes describe
  (:func:`mosaicist._profiles.nclx_profile`; an AVIF's codes are read from its
  file by :func:`settle_nclx`, Pillow exposing none); one of a high dynamic
  range transfer (PQ, HLG) is left as stored, with one warning. PNG
  ``gAMA``/``cHRM`` are ignored either way.
- Of a picture with several frames or pages the first is read: an animated
  GIF's, WebP's or APNG's first frame (an APNG's default image, when it has
  one outside its animation), a TIFF's first page.
- An opaque 8-bit RGB PNG target is decoded by libpng (``imagecodecs``, the
  ``fast`` extra), which releases the interpreter lock, into the same
  pixels as Pillow's (see :func:`_plain_png_pixels`); every other picture,
  and any that libpng fails on, by Pillow.
- A PNG whose pixel data end before its last row is refused as truncated, as
  libpng refuses it (Pillow would leave the rows missing black without a
  word); one whose compressed text chunks or colour profile inflate past
  1 MB is read (Pillow refuses it, OpenCV and browsers do not), up to
  Pillow's 64 MB bound on a picture's text. An ancillary chunk before the
  pixels that Pillow cannot read (a checksum that does not match, a colour
  profile of an unknown compression method, a short ``cHRM``) is dropped, as
  libpng drops it, rather than the picture refused; a colour profile dropped
  so is a damaged one (left unapplied, with one warning).
- A file Pillow does not recognise is refused as "not a readable image",
  saying what it is where that helps: an empty file, an SVG drawing, a PDF,
  a JPEG XL picture, a TIFF of samples Pillow cannot read (floating-point
  RGB, 32-bit RGB).
- HEIF (HEIC) pictures are read through pillow-heif, AVIF through Pillow
  itself (or pillow-avif-plugin); where that plugin is missing, such a file
  is refused in one line naming it (:func:`missing_reader`; a folder scan
  leaves such files out with one warning).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import logging
import math
import os
import stat
import struct
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np
from PIL import Image, ImageFile, ImageOps, PngImagePlugin, features

from ._choices import TARGET_MAX_PIXELS
from ._forks import renew_locks_after_fork
from ._profiles import (
    check_colour_profiles,
    converts,
    is_grey_mode,
    is_grey_profile,
    is_rgb_profile,
    jpeg_profile,
    note_unconverted_nclx,
    note_unusable_profile,
    profile_of,
    to_srgb,
)
from .aspect import SQUARE, height_for
from .crop import Window, centre_window, choose_window, scale_window, window_size
from .dedupe import SIGNATURE_PX, mirrored_tile_signatures, pack_colour
from .errors import MosaicistError, OptionError, counted
from .paths import URL_START, expanded

try:  # libjpeg-turbo directly: ~10x faster than Pillow for small JPEGs
    import simplejpeg
except ImportError:  # pragma: no cover - optional speed-up
    simplejpeg = None

#: File extensions read from a tile folder (lower case).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".tif", ".tiff", ".gif",
     ".heic", ".heif", ".hif", ".avif"}
)

#: Tiles and the originals they are drawn from may have at most this many pixels;
#: larger ones are refused (from the header, before decoding) as decompression bombs.
TILE_MAX_PIXELS = 200_000_000
#: Most bytes a tile's file may have: its pixels uncompressed at 8 bytes each (16-bit
#: RGBA), and room for metadata.
TILE_MAX_FILE_BYTES = 8 * TILE_MAX_PIXELS + (64 << 20)


class ImageReadError(Exception):
    """An image file that cannot be used; the message says why."""


def _white_background(image: Image.Image) -> Image.Image:
    if image.mode == "La":
        image = image.convert("LA")  # Pillow has no La -> RGBA conversion
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


#: Modes whose transparency is one colour key (``info["transparency"]``, a PNG tRNS chunk):
#: an int for greyscale and bilevel, an ``(r, g, b)`` triple for RGB.
_KEYED_MODES = frozenset({"1", "L", "I", "I;16", "I;16L", "I;16B", "I;16N", "RGB"})


def _colour_key(image: Image.Image) -> int | tuple[int, ...] | None:
    """The transparent value of a colour-keyed image, or None (also for a key of another type).

    A key of an unexpected type (some other format's use of the info) is left
    alone, as it always was, rather than refusing a picture that reads today.
    """
    if image.mode not in _KEYED_MODES:
        return None
    key = image.info.get("transparency")
    if image.mode == "RGB":
        if (isinstance(key, tuple) and len(key) == 3
                and all(isinstance(value, int) for value in key)):
            return key
        return None
    return key if isinstance(key, int) and not isinstance(key, bool) else None


#: TIFF tags of how samples are stored: bits, photometric interpretation, samples a pixel,
#: number format.
_TIFF_BITS, _TIFF_PHOTOMETRIC, _TIFF_SAMPLES, _TIFF_SAMPLE_FORMAT = 258, 262, 277, 339


def _tiff_tag(image: Image.Image, tag: int) -> object:
    """A tag of a TIFF image as Pillow read it, or None (also for any other format)."""
    if image.format != "TIFF":
        return None
    return getattr(image, "tag_v2", {}).get(tag)


def _tiff_min_is_white(image: Image.Image) -> bool:
    """Whether a greyscale TIFF stores 0 as white (photometric interpretation 0)."""
    return _tiff_tag(image, _TIFF_PHOTOMETRIC) == 0


def _tiff_unsigned_32(image: Image.Image) -> bool:
    """Whether a TIFF's samples are unsigned 32-bit integers (SampleFormat 1, the default)."""
    return (_tiff_tag(image, _TIFF_BITS) == (32,)
            and _tiff_tag(image, _TIFF_SAMPLE_FORMAT) in (None, (1,)))


def _tiff_signed_16(image: Image.Image) -> bool:
    """Whether a TIFF's samples are signed 16-bit integers (SampleFormat 2), either byte order."""
    return (_tiff_tag(image, _TIFF_BITS) == (16,)
            and _tiff_tag(image, _TIFF_SAMPLE_FORMAT) == (2,))


def to_rgb(image: Image.Image, colour_profiles: str = "ignore") -> Image.Image:
    """Convert a Pillow image of any mode to 8-bit RGB (see the module docstring).

    Parameters
    ----------
    image : PIL.Image.Image
        A loaded image of any mode.
    colour_profiles : {"ignore", "convert"}
        ``convert``: an embedded ICC profile other than sRGB's is applied
        (:mod:`mosaicist._profiles`), a CMYK picture's instead of the plain
        conversion, a greyscale one's once it is 8-bit grey, an RGB one's
        after transparency is composited.
        ``ignore``: the stored values are taken as sRGB.

    Returns
    -------
    PIL.Image.Image
        An image of mode ``RGB``.
    """
    if colour_profiles == "ignore":
        return _stored_rgb(image)
    check_colour_profiles(colour_profiles)
    profile = profile_of(image)
    if profile is None:
        if getattr(image, _DAMAGED_PROFILE, False):
            note_unusable_profile("is damaged")
        else:  # an HDR or unknown space declared by nclx codes: said, not converted
            note_unconverted_nclx(image.info.get("nclx_profile"))
        return _stored_rgb(image)
    if image.mode == "CMYK":
        managed = to_srgb(image, profile)
        if managed is not image:
            return managed
    elif is_grey_profile(profile) and is_grey_mode(image.mode):
        # Any grey picture through its grey profile once it is 8-bit grey (transparency
        # over white, 16 bits scaled): not only an opaque 8-bit one, or a scan's 16-bit
        # and 8-bit copies, or a picture with and without alpha, read differently.
        if image.mode == "L" and _colour_key(image) is None:
            grey, stored = image, None
        else:
            stored = _stored_rgb(image)
            grey = stored.getchannel(0)
        managed = to_srgb(grey, profile)
        if managed is not grey:
            return managed
        return _stored_rgb(image) if stored is None else stored  # sRGB's grey, or unusable
    rgb = _stored_rgb(image)
    return to_srgb(rgb, profile, in_place=rgb is not image) if is_rgb_profile(profile) else rgb


def _stored_rgb(image: Image.Image) -> Image.Image:
    """Convert a Pillow image of any mode to 8-bit RGB, an embedded profile not applied.

    Parameters
    ----------
    image : PIL.Image.Image
        A loaded image of any mode.

    Returns
    -------
    PIL.Image.Image
        An image of mode ``RGB``.
    """
    mode = image.mode
    key = _colour_key(image)
    if mode == "RGB" and key is None:
        return image
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode == "P" and "transparency" in image.info
    ) or (mode in ("1", "L", "RGB") and key is not None):
        # Pillow turns a colour key into alpha itself for these modes.
        return _white_background(image)
    if mode == "P" and image.palette is not None and image.palette.mode == "RGBA":
        return _white_background(image)
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image, dtype=np.float64)
        offset = 0.0
        if mode == "F":
            # The maximum without NaNs (and without nanmax's warning when all are NaN).
            top = np.max(values, where=~np.isnan(values), initial=-np.inf)
            scale = 255.0 if values.size and top <= 1.0 else 1.0
        elif mode == "I" and _tiff_unsigned_32(image):
            # Pillow keeps these samples in its signed mode, wrapped above 2**31.
            values = np.asarray(image).view(np.uint32).astype(np.float64)
            scale = 255.0 / 4294967295.0
        elif mode == "I" and _tiff_signed_16(image):
            # Pillow reads I;16S and I;16BS samples into its 32-bit mode as they are, so
            # -32768..32767 is moved onto 0..65535: negatives were all black, the top grey.
            offset = 32768.0
            scale = 255.0 / 65535.0
        else:
            scale = 255.0 / 65535.0
        grey = np.clip(np.nan_to_num((values + offset) * scale), 0, 255)
        grey = np.rint(grey).astype(np.uint8)
        if _tiff_min_is_white(image):
            # Pillow inverts such samples of 8 bits and fewer as it decodes, but not these.
            grey = 255 - grey
        if key is not None:
            # Pillow's own conversion would clip these modes to 8 bits, not scale them,
            # so the key (in the stored values) is composited over white here.
            grey[values == key] = 255
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=2), "RGB")
    return image.convert("RGB")


def centre_square(image: Image.Image) -> Image.Image:
    """Crop the largest centred square from ``image``."""
    width, height = image.size
    side = min(width, height)
    left = (width - side) // 2
    top = (height - side) // 2
    if side == width and side == height:
        return image
    return image.crop((left, top, left + side, top + side))


class TileImage(NamedTuple):
    """A tile cut from a photo.

    Attributes
    ----------
    pixels : numpy.ndarray
        ``(height_px, width_px, 3)`` uint8.
    window : Window
        The crop window it shows, in the photo's full-size pixels (after
        EXIF orientation).
    signature : (int, int, int) or None
        The photo's near-duplicate signature, ``(hash, packed mean colour,
        mirror's hash)`` (:func:`mirrored_signature`); None where not asked for.
    """

    pixels: np.ndarray
    window: Window
    signature: tuple[int, ...] | None = None


def mirrored_signature(picture: np.ndarray) -> tuple[int, int, int]:
    """A picture's near-duplicate signature: its hash, packed mean colour and mirror's hash.

    :func:`mosaicist.dedupe.signature` (hash and colour), with the hash of
    the picture mirrored left-right (:func:`mosaicist.dedupe.mirrored_tile_signatures`,
    from the same coefficients), so that an index groups a photo with its
    mirrored copy.

    Parameters
    ----------
    picture : numpy.ndarray
        ``(H, W, 3)`` uint8.

    Returns
    -------
    (int, int, int)
        The hash (unsigned 64-bit), the mean colour ``R << 16 | G << 8 | B``
        and the mirror's hash (unsigned 64-bit).
    """
    hashes, mirrors, colours = mirrored_tile_signatures(picture[None])
    return int(hashes[0]), pack_colour(colours[0]), int(mirrors[0])


def _cut(image: Image.Image, box: tuple[float, float, float, float], width_px: int,
         height_px: int) -> np.ndarray:
    """Resize ``box`` (left, top, right, bottom) of an RGB image to ``width_px`` x ``height_px``.

    Downscaling uses Pillow's Lanczos filter with a box pre-reduction
    (``reducing_gap``), which keeps the quality of Lanczos at a fraction of
    its cost for large images. A box of whole pixels is cropped first (so
    that a centre square is cut exactly as it always was); a fractional one
    (a window carried to a reduced decode) is resampled in place.
    """
    whole = all(float(value).is_integer() for value in box)
    if whole:
        left, top, right, bottom = (int(value) for value in box)
        region = image
        if (left, top, right, bottom) != (0, 0, *image.size):
            region = image.crop((left, top, right, bottom))
        if region.size != (width_px, height_px):
            region = region.resize((width_px, height_px), Image.Resampling.LANCZOS,
                                   reducing_gap=3.0)
    else:
        region = image.resize((width_px, height_px), Image.Resampling.LANCZOS, box=box,
                              reducing_gap=3.0)
    return np.asarray(region, dtype=np.uint8).reshape(height_px, width_px, 3)


def thumbnail(image: Image.Image, width_px: int, aspect: tuple[int, int] = SQUARE,
              window: Window | None = None, *, colour_profiles: str = "ignore") -> np.ndarray:
    """Cut ``window`` from ``image`` and resize it to a tile (see :func:`_cut`).

    Parameters
    ----------
    image : PIL.Image.Image
        The photo, in any mode.
    width_px : int
        Width of the tile; its height is ``height_for(width_px, aspect)``.
    aspect : (int, int)
        The tile's aspect.
    window : Window, optional
        In ``image``'s pixels; default the centred one (:func:`~mosaicist.crop.centre_window`).
    colour_profiles : {"ignore", "convert"}
        Whether its embedded ICC profile is applied (:func:`to_rgb`).

    Returns
    -------
    numpy.ndarray
        ``(height_px, width_px, 3)`` uint8.
    """
    rgb = to_rgb(image, colour_profiles)
    width, height = rgb.size
    if window is None or not (
        0 <= window.left < window.left + window.width <= width
        and 0 <= window.top < window.top + window.height <= height
    ):
        # No window, or one of another picture (the file changed since it was indexed).
        window = centre_window(width, height, aspect)
    box = (window.left, window.top, window.left + window.width, window.top + window.height)
    return _cut(rgb, box, width_px, height_for(width_px, aspect))


def square_thumbnail(image: Image.Image, side_px: int) -> np.ndarray:
    """Centre-crop ``image`` to a square and resize it to ``side_px`` (see :func:`thumbnail`).

    Returns
    -------
    numpy.ndarray
        ``(side_px, side_px, 3)`` uint8 array.
    """
    return thumbnail(image, side_px)


def make_tile(image: Image.Image, width_px: int, aspect: tuple[int, int] = SQUARE,
              crop: str = "centre", *, colour_profiles: str = "ignore") -> TileImage:
    """Cut the tile of a whole photo: its window for ``crop``, resized.

    Parameters
    ----------
    image : PIL.Image.Image
        The photo at full size (EXIF orientation applied), any mode.
    width_px : int
        Width of the tile.
    aspect : (int, int)
        The tile's aspect.
    crop : {"centre", "subject"}
        How the window is placed (:func:`mosaicist.crop.choose_window`).
    colour_profiles : {"ignore", "convert"}
        Whether its embedded ICC profile is applied (:func:`to_rgb`).
    """
    rgb = to_rgb(image, colour_profiles)
    return _tile_of(rgb, width_px, aspect, crop, rgb.size, None, sign=True)


def array_tile(rgb: np.ndarray, width_px: int, aspect: tuple[int, int] = SQUARE,
               crop: str = "centre") -> TileImage:
    """:func:`make_tile` of an ``(H, W, 3)`` uint8 picture (kept as is at the tile's size)."""
    height, width = rgb.shape[:2]
    if (width, height) == (width_px, height_for(width_px, aspect)) and window_size(
        width, height, aspect
    ) == (width, height):
        pixels = np.ascontiguousarray(rgb)
        signed = _signature_of(Image.fromarray(pixels, "RGB"), (0, 0, width, height), pixels)
        return TileImage(pixels, Window(0, 0, width, height), signed)
    return make_tile(Image.fromarray(np.ascontiguousarray(rgb), "RGB"), width_px, aspect, crop)


def _signature_of(image: Image.Image, box: tuple[float, float, float, float] | None = None,
                  pixels: np.ndarray | None = None) -> tuple[int, int, int]:
    """The near-duplicate signature of a photo (:func:`mirrored_signature`): its centre square's.

    The centre square whatever the tiles' aspect, crop and size: two copies
    of a photo then sign alike even where their subject windows differ by a
    few pixels, and every index of a photo signs it the same (an index of
    square centre tiles at 32 px, as those made before signatures, from its
    tiles). ``image`` is the photo whole, as decoded for its signature: a
    JPEG at the DCT scale :func:`_signature_size` asks for, whatever the
    tiles (a decode reduced for them would sign a few bits apart).
    ``pixels``, cut from ``box``, are reused when they are that square.
    """
    square = centre_window(*image.size)
    square_box = (square.left, square.top, square.left + square.width,
                  square.top + square.height)
    if (box == square_box and pixels is not None
            and pixels.shape[:2] == (SIGNATURE_PX, SIGNATURE_PX)):
        return mirrored_signature(pixels)
    return mirrored_signature(_cut(image, square_box, SIGNATURE_PX, SIGNATURE_PX))


def _tile_of(image: Image.Image, width_px: int, aspect: tuple[int, int], crop: str,
             original: tuple[int, int], window: Window | None,
             sign: bool = False) -> TileImage:
    """The tile of an RGB ``image`` decoded at a reduced size from a photo of size ``original``.

    With ``window`` (in the original's pixels, as an index stored it) that
    window is cut; otherwise one is chosen on ``image`` for ``crop`` and
    returned in the original's pixels, with its signature when ``sign``
    (only where ``image`` is the decode the photo is signed from: see
    :func:`_signature_of`).
    """
    height_px = height_for(width_px, aspect)
    size = image.size
    if window is not None:
        x_scale, y_scale = size[0] / original[0], size[1] / original[1]
        box = (max(0.0, window.left * x_scale), max(0.0, window.top * y_scale),
               min(float(size[0]), (window.left + window.width) * x_scale),
               min(float(size[1]), (window.top + window.height) * y_scale))
        if box[2] > box[0] and box[3] > box[1]:
            return TileImage(_cut(image, box, width_px, height_px), window)
        # A window that does not fit: the file changed since it was indexed.
    chosen = choose_window(image, aspect, crop)
    box = (chosen.left, chosen.top, chosen.left + chosen.width, chosen.top + chosen.height)
    pixels = _cut(image, box, width_px, height_px)
    signed = _signature_of(image, box, pixels) if sign else None
    if size == original:
        stored = chosen
    elif crop == "centre":
        stored = centre_window(*original, aspect)
    else:
        stored = scale_window(chosen, size, original, aspect)
    return TileImage(pixels, stored, signed)


#: Most bytes one compressed PNG text chunk or colour profile may inflate to while our
#: reads run: Pillow's bound on all of a picture's text together (``MAX_TEXT_MEMORY``).
PNG_TEXT_CHUNK_BYTES = 64 << 20


class _PillowLimit:
    """Pillow's decompression-bomb limits, lifted for our own reads only, in their own thread.

    Pillow refuses images over its global ``Image.MAX_IMAGE_PIXELS`` (twice it, with a
    warning above it) when it opens or crops them. Our reads check the size from
    the header against their own limit instead, so in a block of
    :meth:`allowing`, and in its thread alone, Pillow's check lets through
    what that limit allows (None: any size, for a header read checked right
    after), or Pillow's own limit where that is larger.

    Pillow also refuses a whole PNG for one compressed text chunk or colour
    profile that inflates past 1 MB (``PngImagePlugin.MAX_TEXT_CHUNK``), which
    OpenCV, browsers and editors read: a Photoshop XMP packet with its
    history, a large profile. In such a block the bound is
    :data:`PNG_TEXT_CHUNK_BYTES`, Pillow's bound on all of a picture's text
    together, which stays.

    The globals themselves are never changed (they once were, lifted while
    any read ran): an application's own reads in its other threads opened
    decompression bombs while a make ran, and a limit it set meanwhile was
    put back when the make ended. Pillow's two checks are replaced once, by
    ones that defer to Pillow's own outside these blocks.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._installed = False

    @contextlib.contextmanager
    def allowing(self, pixels: int | None) -> Iterator[None]:
        """Let Pillow handle images of up to ``pixels`` (None: any) in this thread, in the block."""
        self._install()
        held: list[int | None] = self._local.__dict__.setdefault("held", [])
        held.append(pixels)
        try:
            yield
        finally:
            held.pop()

    def _allowed(self) -> tuple[bool, int | None]:
        """Whether this thread is in a block, and the most pixels allowed there (None: any)."""
        held = self._local.__dict__.get("held")
        if not held:
            return False, None
        own = Image.MAX_IMAGE_PIXELS
        if own is None or any(pixels is None for pixels in held):
            return True, None
        return True, max(own, *(pixels for pixels in held if pixels is not None))

    def _install(self) -> None:
        if self._installed:
            return
        with self._lock:
            if self._installed:
                return
            pillow_check = Image._decompression_bomb_check
            pillow_inflate = PngImagePlugin._safe_zlib_decompress

            def bomb_check(size: tuple[int, int], *args: Any, **kwargs: Any) -> None:
                inside, allowed = self._allowed()
                if not inside:
                    return pillow_check(size, *args, **kwargs)
                pixels = max(1, size[0]) * max(1, size[1])
                if allowed is not None and pixels > allowed:
                    raise Image.DecompressionBombError(
                        f"Image size ({pixels} pixels) exceeds limit of {allowed} pixels, "
                        "could be decompression bomb DOS attack.")
                return None

            def inflate(s: bytes) -> bytes:  # Pillow's name: it is called so
                if not self._allowed()[0]:
                    return pillow_inflate(s)
                inflater = zlib.decompressobj()
                text = inflater.decompress(
                    s, max(PNG_TEXT_CHUNK_BYTES, PngImagePlugin.MAX_TEXT_CHUNK))
                if inflater.unconsumed_tail:
                    raise ValueError("Decompressed data too large for "
                                     "PngImagePlugin.MAX_TEXT_CHUNK")
                return text

            Image._decompression_bomb_check = bomb_check
            PngImagePlugin._safe_zlib_decompress = inflate
            self._installed = True


_PILLOW_LIMIT = _PillowLimit()


class PixelLimitError(ImageReadError):
    """An image whose header declares more pixels than the limit allows."""

    def __init__(self, width: int, height: int, limit: int) -> None:
        self.width, self.height, self.limit = width, height, limit
        super().__init__(
            f"image of {width:,}x{height:,} = {counted(width * height, 'pixel')} is over the "
            f"limit of {counted(limit, 'pixel')}"
        )


def _check_pixels(width: int, height: int, limit: int) -> None:
    if width * height > limit:
        raise PixelLimitError(width, height, limit)


#: What a file of each extension read only through a plugin is called in messages.
_PLUGIN_KINDS = {".heic": "HEIC", ".heif": "HEIF", ".hif": "HEIF", ".avif": "AVIF"}
#: The brands of an ISO-BMFF ``ftyp`` box that make a file an AVIF picture.
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
#: Why a file of each kind cannot be read without its plugin: the package to install.
_PLUGIN_NEEDED = {
    "HEIF": "reading it needs the pillow-heif package (pip install pillow-heif)",
    "AVIF": "reading it needs a Pillow built with AVIF support (Pillow 11.3 or later) "
            "or the pillow-avif-plugin package (pip install pillow-avif-plugin)",
}


#: Major brands of the HEIF files that pillow-heif reads (HEIC from phones); AVIF's own
#: brands are left out, so an AVIF is never called a HEIC photo.
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm",
                         b"hevs", b"mif1", b"msf1"})

_heif_registered = threading.Lock()
renew_locks_after_fork(globals(), "_heif_registered")
_heif_opener = False


def heif_formats() -> tuple[str, ...]:
    """Pillow's HEIF format where pillow-heif is installed (its opener registered), else none.

    Asked at each use rather than once at import, so that what is refused
    follows what is installed now.
    """
    global _heif_opener
    try:
        import pillow_heif
    except ImportError:
        return ()
    with _heif_registered:
        if not _heif_opener:
            pillow_heif.register_heif_opener()
            _heif_opener = True
    return ("HEIF",)


def looks_heif(data: bytes) -> bool:
    """Whether ``data`` starts as a HEIF file (an ISO-BMFF ``ftyp`` box of a HEIF brand)."""
    return data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS


def _heif_readable() -> bool:
    """Whether HEIF (HEIC) files can be read: pillow-heif's opener, registered now if needed."""
    # One opener, registered once per process (the live wall uses it too).
    return bool(heif_formats())


def avif_readable() -> bool:
    """Whether AVIF pictures can be read here.

    By Pillow itself (built with AVIF, 11.3 or later), or by
    pillow-avif-plugin, which is imported now if installed (importing it
    registers its opener). Asked at each use, so that the answer follows
    what is installed now.

    Returns
    -------
    bool
        True when Pillow can open an AVIF file now.
    """
    if "avif" in features.modules and features.check_module("avif"):
        return True
    try:
        importlib.import_module("pillow_avif")
    except ImportError:
        return False
    return True


def heif_or_avif(head: bytes) -> str | None:
    """Tell a HEIF (HEIC) picture from an AVIF one by its first bytes.

    Both are ISO-BMFF files that start with an ``ftyp`` box; its brands say
    which. An AVIF file usually lists a HEIF brand (``mif1``) among its
    compatible ones, so any AVIF brand makes it AVIF, whatever else is listed.

    Parameters
    ----------
    head : bytes
        The file's first bytes; 64 hold the ``ftyp`` box of the files phones
        and cameras write (brands past the end of ``head`` are not seen).

    Returns
    -------
    str or None
        ``"AVIF"`` or ``"HEIF"``; None for anything else (another format,
        or too few bytes to tell).
    """
    if head[4:8] != b"ftyp":
        return None
    size = int.from_bytes(head[:4], "big")
    # The major brand, then (after the minor version) the compatible ones.
    brands = [head[8:12]] + [head[offset:offset + 4]
                             for offset in range(16, min(size, len(head)) - 3, 4)]
    if any(brand in _AVIF_BRANDS for brand in brands):
        return "AVIF"
    if any(brand in HEIF_BRANDS for brand in brands):
        return "HEIF"
    return None


def _file_head(source: IO[bytes] | Path, size: int = 64) -> bytes:
    """The first ``size`` bytes of a file (all with -1; a handle is left at its start)."""
    if isinstance(source, Path):
        with open(source, "rb") as handle:
            return handle.read(size)
    source.seek(0)
    head = source.read(size)
    source.seek(0)
    return head


def _add_reader(head: bytes) -> bool:
    """Make Pillow able to read a file Pillow did not recognise, if a plugin can.

    Returns
    -------
    bool
        True when the file is a HEIF or AVIF picture and its reader is there
        now (open the file again): registered by this call, or by another
        thread between that thread's failed open and this check (so render's
        threads, opening originals at once, all read the HEIC they meet);
        False when none would help (not a HEIF or AVIF picture).

    Raises
    ------
    ImageReadError
        For a HEIF or AVIF picture whose plugin is not installed: naming it.
    """
    kind = heif_or_avif(head)
    if kind == "HEIF":
        if not _heif_readable():
            raise ImageReadError(f"a HEIF (HEIC) image: {_PLUGIN_NEEDED[kind]}")
        return True
    if kind == "AVIF":
        if not avif_readable():
            raise ImageReadError(f"an AVIF image: {_PLUGIN_NEEDED[kind]}")
        return "AVIF" in Image.ID
    return False


def missing_reader(name: str) -> str | None:
    """Why files named ``name`` cannot be read here: the plugin their format needs, or None.

    Parameters
    ----------
    name : str
        A file name, or its extension (``".heic"``); only the extension is
        looked at (HEIC, HEIF and AVIF need plugins, every other format of
        :data:`IMAGE_EXTENSIONS` none).

    Returns
    -------
    str or None
        ``"<kind> files: reading them needs ..."`` (one line naming the package
        to install) when the plugin is missing, else None.
    """
    dot = name.rfind(".")
    kind = _PLUGIN_KINDS.get(name[dot:].lower() if dot >= 0 else "")
    if kind is None:
        return None
    family = "AVIF" if kind == "AVIF" else "HEIF"
    if (avif_readable if family == "AVIF" else _heif_readable)():
        return None
    return _PLUGIN_NEEDED[family].replace("reading it", f"reading {kind} files", 1)


def register_readers_for(names: Iterable[str]) -> None:
    """Register now the plugin readers that files of these names need (HEIC, AVIF).

    Called before threads open the files: a reader registered while another
    thread's ``Image.open`` walks Pillow's registry can fail that open (the
    open is then tried again, see :func:`_add_reader`, but not every such
    failure is one Pillow reports as an unrecognised file).

    Parameters
    ----------
    names : iterable of str
        File names or paths; only their extensions are looked at.
    """
    extensions = {name[name.rfind("."):].lower() for name in names if "." in name}
    for extension in extensions.intersection(_PLUGIN_KINDS):
        missing_reader(extension)


def open_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image file's header (a plugin's format registered as needed, colour key settled).

    Raises
    ------
    ImageReadError
        For a HEIF or AVIF picture whose plugin is missing (naming it).
    OSError
        When the file cannot be opened or is not a picture Pillow reads.
    """
    return _open_checked(Path(path), None)


def _open_checked(source: IO[bytes] | Path, max_pixels: int | None) -> Image.Image:
    """Open an image's header and refuse it when it declares over ``max_pixels``.

    Nothing is decoded: Pillow reads the header only. Pillow's own global limit
    is lifted for the call, since ours is checked right after (None: the
    caller only wants the size).
    """
    image: Image.Image
    with _PILLOW_LIMIT.allowing(None):
        try:
            image = Image.open(source)
        except (Image.UnidentifiedImageError, ValueError) as error:
            # A PNG refused for a damaged ancillary chunk before its pixels (a colour
            # profile, a checksum): read without it, as libpng reads it.
            repaired = png_without_damaged_chunks(source)
            if repaired is not None:
                image = repaired
            elif not isinstance(error, Image.UnidentifiedImageError):
                raise
            elif not _add_reader(_file_head(source)):
                kind = _not_a_picture(source)
                if kind is None:
                    raise
                raise ImageReadError(f"not a readable image ({kind})") from None
            else:
                if not isinstance(source, Path):
                    source.seek(0)
                # Opened again once its reader is there: a damaged HEIF fails again.
                image = Image.open(source)
    try:
        if max_pixels is not None:
            _check_pixels(*image.size, max_pixels)
    except PixelLimitError:
        image.close()
        raise
    settle_colour_key(image)
    settle_nclx(image, source)
    return image


#: Most bytes of an AVIF's ``meta`` box read for its colour box: its item tables and
#: properties (an ICC profile among them) take kilobytes; a larger one is not looked at.
_AVIF_META_BYTES = 4 << 20


def settle_nclx(image: Image.Image, source: IO[bytes] | Path) -> None:
    """Give an opened AVIF picture the nclx codes of its colour box, as pillow-heif gives a HEIC's.

    Pillow's AVIF reader (and pillow-avif-plugin) exposes an ICC profile but
    not a colour space declared by H.273 codes (Android phones' AVIF photos):
    they are read from the file into ``image.info["nclx_profile"]``, the
    colour box of the primary picture (:mod:`mosaicist._profiles` converts it).
    Nothing is done for other formats, or where the picture has an ICC profile
    (which libavif prefers) or codes already.

    Parameters
    ----------
    image : PIL.Image.Image
        The picture, as opened (its header read).
    source : file object or Path
        Its file; a file object's position is kept.
    """
    if (image.format != "AVIF" or image.info.get("icc_profile")
            or "nclx_profile" in image.info):
        return
    try:
        if isinstance(source, Path):
            with open(source, "rb") as handle:
                meta = _avif_meta(handle)
        else:
            position = source.tell()
            try:
                meta = _avif_meta(source)
            finally:
                source.seek(position)
        nclx = None if meta is None else _primary_nclx(meta)
    except (OSError, ValueError, struct.error, IndexError):
        return  # Pillow read the picture: a box it did not need is taken as absent
    if nclx is not None:
        image.info["nclx_profile"] = nclx


def _avif_meta(handle: IO[bytes]) -> bytes | None:
    """The body of an ISO-BMFF file's top-level ``meta`` box (after its version and flags)."""
    handle.seek(0)
    while True:
        header = handle.read(8)
        if len(header) < 8:
            return None
        size, kind = struct.unpack(">I4s", header)
        header_bytes = 8
        if size == 1:
            size = struct.unpack(">Q", handle.read(8))[0]
            header_bytes = 16
        if kind == b"meta":
            body = size - header_bytes if size else _AVIF_META_BYTES  # 0: to the file's end
            if not 4 <= body <= _AVIF_META_BYTES:
                return None
            return handle.read(body)[4:]
        if size < header_bytes:
            return None  # 0 (the last box, up to the end) or damaged: no meta after it
        handle.seek(size - header_bytes, os.SEEK_CUR)


def _boxes(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The (kind, body) of each box laid end to end in ``data``."""
    position = 0
    while position + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, position)
        start = position + 8
        if size == 1:
            size = struct.unpack_from(">Q", data, start)[0]
            start += 8
        elif size == 0:
            size = len(data) - position
        if size < start - position or position + size > len(data):
            return
        yield kind, data[start:position + size]
        position += size


def _primary_nclx(meta: bytes) -> dict[str, int] | None:
    """The nclx codes of the primary item's colour box, from a ``meta`` box's body.

    An item with an ICC colour box (``prof``, ``rICC``) has no codes (the
    profile applies). A primary item without a colour box (a grid whose
    tiles carry it) takes the nclx box of the other items when they agree.
    """
    children = dict(_boxes(meta))
    primary: int | None = None
    if b"pitm" in children:
        pitm = children[b"pitm"]
        primary = int(struct.unpack_from(">H" if pitm[0] == 0 else ">I", pitm, 4)[0])
    properties = dict(_boxes(children.get(b"iprp", b"")))
    colours = {index: body for index, (kind, body)
               in enumerate(_boxes(properties.get(b"ipco", b"")), start=1) if kind == b"colr"}
    if not colours:
        return None
    ipma = properties.get(b"ipma", b"")
    version, flags = ipma[0], int.from_bytes(ipma[1:4], "big")
    (entries,), position = struct.unpack_from(">I", ipma, 4), 8
    associated: dict[int, list[int]] = {}
    for _ in range(entries):
        item_format = ">H" if version < 1 else ">I"
        item = struct.unpack_from(item_format, ipma, position)[0]
        position += struct.calcsize(item_format)
        count = ipma[position]
        position += 1
        item_properties = []
        for _ in range(count):
            if flags & 1:
                item_properties.append(struct.unpack_from(">H", ipma, position)[0] & 0x7FFF)
                position += 2
            else:
                item_properties.append(ipma[position] & 0x7F)
                position += 1
        associated[item] = item_properties
    indexes = associated.get(primary, []) if primary is not None else []
    own = [colours[index] for index in indexes if index in colours]
    if not own:  # a grid's tiles: their codes, where all agree
        own = [colours[index] for listed in associated.values() for index in listed
               if index in colours and colours[index][:4] == b"nclx"]
        if len({body[:11] for body in own}) != 1:
            return None
    if any(body[:4] in (b"prof", b"rICC") for body in own):
        return None
    for body in own:
        if body[:4] == b"nclx" and len(body) >= 11:
            primaries, transfer, matrix, full = struct.unpack_from(">HHHB", body, 4)
            return {"color_primaries": primaries, "transfer_characteristics": transfer,
                    "matrix_coefficients": matrix, "full_range_flag": full >> 7}
    return None


class _SplicedFile(io.RawIOBase):
    """A file read with its first bytes replaced: ``head``, then ``rest`` from ``start`` on.

    How a PNG is read without some of the chunks before its pixels (see
    :func:`png_without_damaged_chunks`), without a copy of its pixel data.
    """

    def __init__(self, head: bytes, rest: IO[bytes], start: int) -> None:
        super().__init__()
        self._head, self._rest, self._start = head, rest, start
        self._position = 0
        self._size = len(head) + max(0, rest.seek(0, os.SEEK_END) - start)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        origin = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._size}[whence]
        self._position = max(0, origin + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        if self._position < len(self._head):
            part = self._head[self._position:self._position + len(view)]
            view[:len(part)] = part
            done = len(part)
        if done < len(view):
            self._rest.seek(self._start + self._position + done - len(self._head))
            data = self._rest.read(len(view) - done)
            view[done:done + len(data)] = data
            done += len(data)
        self._position += done
        return done


#: How Pillow refuses a PNG whose compressed text or colour profile inflates past its bound.
_PNG_BOMB_MESSAGES = ("Decompressed data too large for PngImagePlugin",
                      "Too much memory used in text chunks")
#: An empty pixel data chunk, after which Pillow stops reading a PNG's header.
_PNG_EMPTY_IDAT = b"\0\0\0\0IDAT" + zlib.crc32(b"IDAT").to_bytes(4, "big")
#: The attribute that marks a picture whose colour profile was dropped as damaged.
_DAMAGED_PROFILE = "_mosaicist_damaged_profile"


def png_without_damaged_chunks(source: IO[bytes] | Path) -> Image.Image | None:
    """A PNG that Pillow refused, opened without the damaged ancillary chunks before its pixels.

    Pillow refuses a whole PNG for one ancillary chunk before the pixels that
    it cannot read: a checksum that does not match, a colour profile
    (``iCCP``) of an unknown compression method, empty or without its name's
    end, a short ``cHRM``. libpng, and so OpenCV (the seed's reader) and
    browsers, drop such a chunk with a warning and read the picture. Each
    ancillary chunk there is checked as Pillow reads it, alone after the
    header and palette; the picture is opened without those it refuses (a
    colour profile dropped so is left unapplied as a damaged one, see
    :func:`to_rgb`).

    Returns
    -------
    PIL.Image.Image or None
        None when the file is no PNG, no chunk is dropped, or the picture is
        refused all the same (the first refusal then stands).
    """
    from PIL import PngImagePlugin as png

    if _file_head(source, 8) != _PNG_SIGNATURE:
        return None
    base: IO[bytes] = io.BytesIO(source.read_bytes()) if isinstance(source, Path) else source
    base.seek(8)
    kept: list[bytes] = []
    critical = b""  # the header and palette, before which each ancillary chunk is checked
    dropped: list[bytes] = []
    pixels_start = None
    for kind, length in png_chunks(base):
        start = base.tell() - 8
        if kind in (b"IDAT", b"IEND"):
            pixels_start = start
            break
        body = base.read(length)
        stored_crc = base.read(4)
        if len(body) < length or len(stored_crc) < 4:
            return None  # cut short: the first refusal says so
        raw = length.to_bytes(4, "big") + kind + body + stored_crc
        if not kind[0] & 0x20:  # a critical chunk: IHDR, PLTE
            kept.append(raw)
            critical += raw
            continue
        if zlib.crc32(kind + body).to_bytes(4, "big") == stored_crc:
            alone = _PNG_SIGNATURE + critical + raw + _PNG_EMPTY_IDAT + _PNG_END
            try:
                png.PngImageFile(io.BytesIO(alone)).close()
            except Exception as error:  # noqa: BLE001 - whatever else, libpng drops it
                if str(error).startswith(_PNG_BOMB_MESSAGES):
                    return None  # a decompression bomb: refused as such, not read
            else:
                kept.append(raw)
                continue
        dropped.append(kind)
    if not dropped or pixels_start is None:
        return None
    try:
        spliced = _SplicedFile(_PNG_SIGNATURE + b"".join(kept), base, pixels_start)
        image = Image.open(io.BufferedReader(spliced), formats=["PNG"])
    except (Image.UnidentifiedImageError, *_DECODE_ERRORS):
        return None
    if b"iCCP" in dropped:
        setattr(image, _DAMAGED_PROFILE, True)
    return image


#: Bytes of a file's start looked at to tell what it is when it is no picture Pillow reads.
_KIND_HEAD_BYTES = 1024
#: The signatures of JPEG XL: a bare codestream, and the box format's first box.
_JPEG_XL_STARTS = (b"\xff\x0a", b"\0\0\0\x0cJXL \r\n\x87\n")
#: TIFF's byte-order marks and versions: classic and BigTIFF, little- and big-endian.
_TIFF_STARTS = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")
#: TIFF SampleFormat values, as messages name them.
_TIFF_SAMPLE_KINDS = {1: "integer", 2: "signed integer", 3: "floating-point"}


def _not_a_picture(source: IO[bytes] | Path) -> str | None:
    """What a file Pillow does not recognise is, when that is worth saying, or None.

    An empty file, a drawing or document (SVG, PDF) that has no pixels to
    read, a JPEG XL picture (no reader here), or a TIFF whose samples
    Pillow cannot read (floating-point or 32-bit RGB, as HDR merges write
    them), with what to do instead. Anything else (a damaged file, text) is
    left as "not a readable image".
    """
    head = _file_head(source, _KIND_HEAD_BYTES)
    if not head:
        return "an empty file"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "an SVG drawing, which has no pixels to read: export it as a PNG picture"
    if text.startswith((b"<?xml", b"<image")) and b"schemas.microsoft.com/deepzoom" in text:
        # A mosaic written as Deep Zoom, given where its picture is read (score, a target).
        return ("a Deep Zoom descriptor, whose picture lies in its tiles: render the "
                "placements as a PNG or TIFF picture to read it whole")
    if head.startswith(b"%PDF-"):
        return "a PDF document: export its page as a PNG or JPEG picture"
    if head.startswith(_JPEG_XL_STARTS):
        return "a JPEG XL picture, which cannot be read here: save it as JPEG or PNG"
    if head.startswith(_TIFF_STARTS):
        return _tiff_samples(source)
    return None


def _tiff_samples(source: IO[bytes] | Path) -> str | None:
    """A TIFF's first page's samples, when they are of a kind Pillow does not read.

    Read with Pillow's own reader of TIFF tags (the one that refused the
    file), not decoded.
    """
    from PIL import TiffImagePlugin

    opened = (open(source, "rb") if isinstance(source, Path)
              else contextlib.nullcontext(source))
    try:
        with opened as handle:
            handle.seek(0)
            start = handle.read(16)
            header = start if start[2:4] in (b"+\0", b"\0+") else start[:8]  # BigTIFF's
            tags = TiffImagePlugin.ImageFileDirectory_v2(header)
            handle.seek(tags.next)
            tags.load(handle)
            bits, count = tags.get(_TIFF_BITS, (1,)), tags.get(_TIFF_SAMPLES, 1)
            number = tags.get(_TIFF_SAMPLE_FORMAT, (1,))
    except Exception:  # noqa: BLE001 - a damaged file: "not a readable image" says enough
        return None
    finally:
        if not isinstance(source, Path):
            source.seek(0)
    if not (isinstance(bits, tuple) and bits and isinstance(number, tuple) and number
            and isinstance(count, int)):
        return None
    depth, kind = bits[0], _TIFF_SAMPLE_KINDS.get(number[0])
    if kind is None or not isinstance(depth, int):
        return None
    # What Pillow reads: integers of up to 16 bits (32 as grey), signed ones of 16 bits
    # and 32-bit floats as grey; such a file is damaged otherwise.
    grey = count == 1
    if (kind == "integer" and (depth <= 16 or depth == 32 and grey)
            or kind == "signed integer" and (depth < 16 or depth in (16, 32) and grey)
            or kind == "floating-point" and depth == 32 and grey):
        return None
    return (f"a TIFF of {depth}-bit {kind} samples, {count} a pixel: save it with 8- or "
            "16-bit integer samples")


#: PNG greyscale raw modes of 2 and 4 bits a sample: their bits. Pillow scales the
#: samples to 0-255 but keeps their colour key unscaled (a 1-bit key it scales itself).
_SMALL_GREY_BITS = {"L;2": 2, "L;4": 4}


def settle_colour_key(image: Image.Image) -> None:
    """Make an opened PNG's colour key (tRNS) compare with the pixels Pillow decodes.

    Called before the image is loaded (the file's sample layout is known only
    then). Pillow decodes 16-bit RGB to 8 bits but keeps the 16-bit key, which
    then matches the wrong pixels: such a key is dropped (the picture stays
    opaque, as it always was). A greyscale key of 2 or 4 bits is scaled
    as the samples are.
    """
    key = image.info.get("transparency")
    if (image.format != "PNG" or key is None or not isinstance(image, ImageFile.ImageFile)
            or not image.tile):
        return
    rawmode = image.tile[0][3]  # indexed: a tile is a plain tuple under Pillow 10
    if not isinstance(rawmode, str):
        return
    if image.mode == "RGB" and rawmode != "RGB":
        del image.info["transparency"]
    elif rawmode in _SMALL_GREY_BITS and isinstance(key, int) and not isinstance(key, bool):
        image.info["transparency"] = key * 255 // (2 ** _SMALL_GREY_BITS[rawmode] - 1)


_ORIENTATION = 0x0112
# EXIF orientations that turn the picture a quarter: width and height swap.
_QUARTER_TURNS = (5, 6, 7, 8)


def _scale_for(span: tuple[int, int], width_px: int, height_px: int) -> float:
    """Least scale at which a window of ``span`` pixels still covers the tile."""
    return max(width_px / max(1, span[0]), height_px / max(1, span[1]), 1e-9)


def _reduced_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The least size a ``width`` x ``height`` picture is to be decoded at for ``scale``."""
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def _signature_size(width: int, height: int) -> tuple[int, int]:
    """The least size a ``width`` x ``height`` photo is decoded at for its signature.

    Its centre square then still covers :data:`~mosaicist.dedupe.SIGNATURE_PX`
    pixels. The size depends on the photo alone: a JPEG decoded at a DCT scale
    chosen for the tiles' size and aspect signs a few bits apart from one
    decoded for other tiles, and every index of a photo is to sign it the same.
    """
    side = min(width, height)
    return _reduced_size(width, height, _scale_for((side, side), SIGNATURE_PX, SIGNATURE_PX))


def _draft(image: Image.Image, size: tuple[int, int]) -> float:
    """Ask a JPEG's decoder for the smallest DCT scale that keeps both sides at least ``size``.

    Returns the reduction it chose (1, 2, 4 or 8): two drafts of a picture
    decode the same pixels when they reduce it alike.
    """
    full_width = image.width
    drafted = image.draft("RGB" if image.mode in ("RGB", "YCbCr") else image.mode, size)
    return 1.0 if drafted is None else full_width / drafted[1][2]


def _tile_request(image: Image.Image, width_px: int, aspect: tuple[int, int],
                  window: Window | None) -> tuple[int, int] | None:
    """The least size to decode a JPEG at for its tile, None for other formats.

    Its window, ``window`` (in oriented pixels) or the largest of ``aspect``,
    still covers the tile at that size.
    """
    if image.format != "JPEG":
        return None
    width, height = image.size
    if window is not None:
        span = (window.width, window.height)
    else:
        turned = image.getexif().get(_ORIENTATION, 1) in _QUARTER_TURNS
        span = window_size(*((height, width) if turned else (width, height)), aspect)
    return _reduced_size(width, height, _scale_for(span, width_px, height_for(width_px, aspect)))


def _draft_for(image: Image.Image, width_px: int, aspect: tuple[int, int],
               window: Window | None) -> float | None:
    """Ask a JPEG's decoder for the smallest DCT scale whose window still covers the tile.

    libjpeg scales by 1/2, 1/4 or 1/8 while decoding, so a large photo is
    never held at full size when a small tile is wanted (see
    :func:`_tile_request`). Other formats have no reduced decoding in Pillow
    and are decoded whole (within the limit). Returns the reduction chosen
    (see :func:`_draft`), None for other formats.
    """
    request = _tile_request(image, width_px, aspect, window)
    return None if request is None else _draft(image, request)


#: JPEG markers that stand alone, without a length: TEM and the restart markers.
_JPEG_BARE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})
#: An XMP packet's namespace, as an APP1 segment starts with it.
_XMP_APP1 = b"http://ns.adobe.com/xap/1.0/\x00"


def _may_be_oriented(data: bytes) -> bool:
    """Whether a JPEG's header may turn its picture: an EXIF segment, or XMP with an orientation.

    Every segment before the first scan is looked at, wherever it lies (an
    EXIF block after large ICC or Photoshop segments is no rarer than one
    before them). Pillow, which applies the orientation, reads both EXIF and
    XMP's ``tiff:Orientation``; a header that cannot be walked is left to
    Pillow too, which then says what is wrong with it.
    """
    position = 2  # after SOI
    end = len(data)
    while position + 4 <= end:
        if data[position] != 0xFF:
            return True  # not a marker where one must be
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker in _JPEG_BARE_MARKERS:
            position += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan, end of image: no more metadata
            return False
        length = int.from_bytes(data[position + 2:position + 4], "big")
        if length < 2:
            return True
        if marker == 0xE1:
            payload = data[position + 4:position + 2 + length]
            if payload.startswith(b"Exif\x00") or (
                payload.startswith(_XMP_APP1) and b"Orientation" in payload
            ):
                return True
        position += 2 + length
    return True  # the header ends before the pixels: a damaged file


def _decode_jpeg_fast(data: bytes, width_px: int, aspect: tuple[int, int], crop: str,
                      max_pixels: int, colour_profiles: str = "ignore",
                      sign: bool = True) -> TileImage | None:
    """Decode a plain JPEG with libjpeg-turbo (simplejpeg), or None to fall back.

    With ``sign``, the photo's signature too: from the tile's decode where
    it is at the signature's DCT scale (:func:`_signature_size`), else from
    a second decode at that scale.

    Returns None for JPEGs with EXIF or an XMP orientation (orientation needs
    Pillow), CMYK or anything simplejpeg declines; those take the Pillow path,
    as do those whose profile, to be converted, is not an RGB one.
    """
    if simplejpeg is None or data[:2] != b"\xff\xd8" or _may_be_oriented(data):
        return None
    profile = jpeg_profile(data) if colour_profiles == "convert" else None
    if profile is not None and not is_rgb_profile(profile):
        return None  # a greyscale or CMYK picture's profile: Pillow's path applies it

    def decoded(size: tuple[int, int]) -> Image.Image:
        # DCT scaling (shrink-on-load) to the smallest size at least ``size``.
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False,
                                        fastupsample=False, min_width=size[0],
                                        min_height=size[1])
        picture = Image.fromarray(pixels, "RGB")
        return picture if profile is None else to_srgb(picture, profile, in_place=True)

    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        _check_pixels(width, height, max_pixels)
        scale = _scale_for(window_size(width, height, aspect), width_px,
                           height_for(width_px, aspect))
        # The smallest size whose window still covers the tile.
        tile_size = _reduced_size(width, height, scale)
        picture = decoded(tile_size)
        signed_size = _signature_size(width, height)
        # libjpeg-turbo takes the smallest of its scales that keeps both sides at least
        # as asked, so a decode of the size the signature's would have is that decode
        # (as is one of just the size asked for it: a CIFAR photo's, whole).
        signed_apart = sign and picture.size != signed_size and signed_size != tile_size and (
            simplejpeg.decode_jpeg_header(data, min_height=signed_size[1],
                                          min_width=signed_size[0])[1::-1] != picture.size)
        signed_picture = decoded(signed_size) if signed_apart else None
    except ValueError as error:
        if _jpeg_data_missing(error):
            # Pillow's path would fill the blocks missing with grey without a word.
            raise ImageReadError(_JPEG_CUT_SHORT) from None
        return None
    tile = _tile_of(picture, width_px, aspect, crop, (width, height), None,
                    sign=sign and signed_picture is None)
    if signed_picture is None:
        return tile
    return tile._replace(signature=_signature_of(signed_picture))


#: A decode slot: called with the pixels an image is about to be decoded at, it
#: returns a context that holds them (e.g. a share of a memory budget) meanwhile.
DecodeSlot = Callable[[int], contextlib.AbstractContextManager[object]]

# What Pillow raises for a broken file. DecompressionBombError: a GIF frame or
# TIFF tile larger than the (checked) image it belongs to.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, TypeError, IndexError,
                  Image.DecompressionBombError, Image.DecompressionBombWarning)


def _pillow_tile(
    source: IO[bytes] | Path, width_px: int, aspect: tuple[int, int], crop: str,
    max_pixels: int, slot: DecodeSlot | None, window: Window | None = None,
    sign: bool = False, colour_profiles: str = "ignore",
) -> TileImage:
    """Decode with Pillow into a tile: size checked, JPEGs drafted, EXIF orientation applied.

    With ``sign``, the photo's signature too: a JPEG drafted for the tile at
    another DCT scale than its signature's (:func:`_signature_size`) is
    decoded again at that one, from ``source`` read anew.
    """
    try:
        image = _open_checked(source, max_pixels)
        with image:
            full = image.size
            request = _tile_request(image, width_px, aspect, window)
            reduction = None if request is None else _draft(image, request)
            hold = slot(image.width * image.height) if slot else contextlib.nullcontext()
            with hold, _PILLOW_LIMIT.allowing(max_pixels):
                image.load()
                _refuse_missing_pixel_data(image, source)
                turned = image.getexif().get(_ORIENTATION, 1) in _QUARTER_TURNS
                ImageOps.exif_transpose(image, in_place=True)
                original = (full[1], full[0]) if turned else full
                signed = None
                if sign and reduction is not None and request != _signature_size(*full):
                    signed = _signed_apart(source, max_pixels, reduction, colour_profiles)
                tile = _tile_of(to_rgb(image, colour_profiles), width_px, aspect, crop,
                                original, window, sign and signed is None)
                return tile if signed is None else tile._replace(signature=signed)
    except ImageReadError:
        raise
    except _DECODE_ERRORS as error:
        raise ImageReadError(_describe(error)) from None


def _signed_apart(source: IO[bytes] | Path, max_pixels: int, reduction: float,
                  colour_profiles: str) -> tuple[int, int, int] | None:
    """The signature of the JPEG in ``source``, decoded again at its signature's DCT scale.

    None where that scale is ``reduction``, the one its tile was decoded at
    (whose picture then signs it). Called inside the tile's decode, which
    has read ``source`` whole already.
    """
    if not isinstance(source, Path):
        source.seek(0)
    with _open_checked(source, max_pixels) as image:
        if _draft(image, _signature_size(*image.size)) == reduction:
            return None
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        return _signature_of(to_rgb(image, colour_profiles))


def decode_tile(data: bytes, width_px: int, aspect: tuple[int, int] = SQUARE,
                crop: str = "centre", max_pixels: int | None = None, *,
                colour_profiles: str = "ignore", sign: bool = True) -> TileImage:
    """Decode an encoded image file's bytes into a tile, its crop window and signature.

    JPEGs are decoded with shrink-on-load (DCT scaling), so a 12-megapixel
    photo is decoded at 1/8 size when the tile is small; the window is chosen
    on the decoded picture and returned in the photo's full-size pixels.

    Parameters
    ----------
    data : bytes
        The file's bytes.
    width_px : int
        Width of the tile; its height is ``height_for(width_px, aspect)``.
    aspect : (int, int)
        The tile's aspect.
    crop : {"centre", "subject"}
        How the window is placed (:mod:`mosaicist.crop`).
    max_pixels : int, optional
        Most pixels the image may declare (default :data:`TILE_MAX_PIXELS`),
        checked from the header before decoding.
    colour_profiles : {"ignore", "convert"}
        Whether an embedded ICC profile is applied (see the module docstring).
    sign : bool
        Whether the photo's signature is computed; False (the signature
        None) where only the pixels are wanted: a JPEG's tile finer than its
        signature's DCT scale then costs one decode, not two.

    Raises
    ------
    ImageReadError
        When the bytes are not a readable image (truncated, unknown format,
        over the pixel limit).
    """
    check_colour_profiles(colour_profiles)
    limit = TILE_MAX_PIXELS if max_pixels is None else max_pixels
    fast = _decode_jpeg_fast(data, width_px, aspect, crop, limit, colour_profiles, sign)
    if fast is not None:
        return fast
    return _pillow_tile(io.BytesIO(data), width_px, aspect, crop, limit, None, sign=sign,
                        colour_profiles=colour_profiles)


def decode_tile_bytes(data: bytes, side_px: int, max_pixels: int | None = None, *,
                      aspect: tuple[int, int] = SQUARE, crop: str = "centre",
                      colour_profiles: str = "ignore") -> np.ndarray:
    """The pixels of :func:`decode_tile`: by default a centre square ``side_px`` thumbnail.

    Raises
    ------
    ImageReadError
        When the bytes are not a readable image (truncated, unknown format,
        over the pixel limit).
    """
    return decode_tile(data, side_px, aspect, crop, max_pixels,
                       colour_profiles=colour_profiles, sign=False).pixels


def read_original(
    path: str | os.PathLike[str], width_px: int, *, aspect: tuple[int, int] = SQUARE,
    window: Window | None = None, crop: str = "centre", max_pixels: int | None = None,
    slot: DecodeSlot | None = None, colour_profiles: str = "ignore",
) -> np.ndarray:
    """Read an original image file as a tile (its window, Lanczos).

    The size is checked from the header first, and a JPEG is decoded at the
    smallest DCT scale whose window still covers the tile, so a small file
    declaring a huge picture costs neither time nor memory.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    width_px : int
        Width of the tile; its height is ``height_for(width_px, aspect)``.
    aspect : (int, int)
        The tile's aspect.
    window : Window, optional
        The crop window in the file's full-size pixels (as the index stored
        it); without one, it is chosen for ``crop``.
    crop : {"centre", "subject"}
        How to choose a window that is not given.
    max_pixels : int, optional
        Most pixels the file may declare (default :data:`TILE_MAX_PIXELS`).
    slot : callable, optional
        Called with the pixels about to be decoded; the decode runs inside
        the context it returns (render threads share a memory budget this way).
    colour_profiles : {"ignore", "convert"}
        Whether an embedded ICC profile is applied (as the index's tiles were).

    Returns
    -------
    numpy.ndarray
        ``(height_px, width_px, 3)`` uint8.

    Raises
    ------
    ImageReadError
        When the file is not a readable image or is over the limit.
    OSError
        When the file cannot be opened (missing, permissions).
    """
    check_colour_profiles(colour_profiles)
    limit = TILE_MAX_PIXELS if max_pixels is None else max_pixels
    # Opened here, so that a missing file is an OSError and not "not an image".
    with open(path, "rb") as handle:
        return _pillow_tile(handle, width_px, aspect, crop, limit, slot, window,
                            colour_profiles=colour_profiles).pixels


def _describe(error: BaseException) -> str:
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, Image.UnidentifiedImageError):
        return "not a readable image"
    if "truncated" in message.lower():
        return "truncated image file"
    if message.startswith(_PNG_BOMB_MESSAGES):
        # Pillow's words name its constants (see _PillowLimit for the bound).
        return (f"its text chunks or colour profile inflate to more than "
                f"{PNG_TEXT_CHUNK_BYTES >> 20} MB (a decompression bomb)")
    if message == "could not create decoder object":
        # What Pillow says of a WebP cut short or damaged anywhere: libwebp refused it.
        return "truncated or damaged image file"
    return message


def read_tile_file(
    path: str | os.PathLike[str], width_px: int, aspect: tuple[int, int] = SQUARE,
    crop: str = "centre", colour_profiles: str = "ignore",
) -> tuple[TileImage, str]:
    """Read one tile image file (see :func:`decode_tile` for the parameters).

    Returns
    -------
    tile : TileImage
        The tile (see :func:`decode_tile`) and its crop window.
    content_hash : str
        BLAKE2b digest (hex, 16 bytes) of the file's bytes.
    """
    data = read_tile_bytes(path)
    return (decode_tile(data, width_px, aspect, crop, colour_profiles=colour_profiles),
            content_hash(data))


def read_tile_bytes(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a tile's file, refused past :data:`TILE_MAX_FILE_BYTES`.

    Raises
    ------
    ImageReadError
        The file is no regular file, or larger than any picture within the tile
        pixel limit takes.
    OSError
        The file cannot be read.
    """
    # Opened without waiting and looked at through its descriptor: a file swapped for a
    # FIFO after the folder's scan blocked the read (and the whole index) for ever.
    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0))
    with open(descriptor, "rb", closefd=True) as handle:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise ImageReadError("not a regular file")
        if status.st_size > TILE_MAX_FILE_BYTES:
            # Read whole into a decoding worker before the header's pixels were looked
            # at: a multi-gigabyte scan, video or sparse file named .tif could take the
            # machine's memory.
            raise ImageReadError(f"a file of {status.st_size / 1e9:.1f} GB, more than a "
                                 f"picture of the {TILE_MAX_PIXELS:,} pixels a tile may "
                                 "have takes")
        return handle.read()


def converts_profile(path: str | os.PathLike[str]) -> bool | None:
    """Whether the picture in ``path`` decodes otherwise with ``colour_profiles="convert"``.

    Only its header is read (Pillow opens lazily): a tile index made with
    profiles ignored keeps, for ``convert``, every tile of a picture this says
    False of (no profile, an sRGB one, or one that cannot be used).

    Parameters
    ----------
    path : str or os.PathLike
        The picture's file.

    Returns
    -------
    bool or None
        None when the header cannot be read (the picture is decoded to tell).
    """
    try:
        with open_image(path) as image:
            return converts(image.mode, _colour_key(image) is not None, profile_of(image))
    except (ImageReadError, *_DECODE_ERRORS):
        return None


def content_hash(data: bytes | memoryview) -> str:
    """Return the hex BLAKE2b-128 digest of ``data``."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def target_path(path: str | os.PathLike[str]) -> Path:
    """A target's path as it is read: ``~`` expanded, as tile folders and the cache are.

    Parameters
    ----------
    path : str or os.PathLike
        The target as given.

    Raises
    ------
    MosaicistError
        For an empty path (``Path("")`` is the current folder) or a URL
        (``Path`` would fold its ``//`` into a name that is never found).
    """
    text = os.fsdecode(path)  # a bytes path, as Python's own file functions take one
    if text == "":
        raise MosaicistError("the target path is empty")
    if URL_START.match(text):
        raise MosaicistError(f"{text}: target is a URL; only local files are read "
                             "(download it first)")
    return expanded(text)


def _existing_target(path: str | os.PathLike[str]) -> Path:
    path = target_path(path)
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise MosaicistError(f"{path}: target file not found") from None
    except OSError as error:  # a name too long, a loop of links: pathlib's exists() raised
        raise MosaicistError(f"{path}: cannot open target: {error.strerror or error}") from None
    if stat.S_ISDIR(mode):
        raise MosaicistError(f"{path}: target is a directory, not an image")
    if not stat.S_ISREG(mode):
        # A pipe would be read twice (header, then pixels), and one nobody writes to
        # would block forever.
        raise MosaicistError(f"{path}: target is not a regular file (a pipe or device); "
                             "save the picture to a file first")
    return path


def _over_target_limit(path: Path, error: PixelLimitError) -> OptionError:
    return over_target_limit(str(path), error.width, error.height, error.limit)


def over_target_limit(name: str, width: int, height: int, limit: int) -> OptionError:
    """The error for a target ``name`` of ``width`` by ``height`` pixels, over ``limit``.

    Parameters
    ----------
    name : str
        The target as messages name it (its path, or ``target`` for an array).
    width, height : int
        Its size in pixels.
    limit : int
        The ``max_target_pixels`` setting.

    Returns
    -------
    OptionError
        Naming ``max_target_pixels``, the setting that raises the limit.
    """
    # Values as shown (metrics.py words the same values for a picture to be scored).
    return OptionError(
        "{path}: {width}x{height} = {pixels} is over the target limit of {limit} "
        "(raise it with {max_target_pixels})", path=name, width=f"{width:,}",
        height=f"{height:,}", pixels=counted(width * height, "pixel"),
        limit=counted(limit, "pixel"),
    )


#: Bytes of a picture copied into an array per step (see :func:`_rgb_array`).
_COPY_STRIP_BYTES = 8 << 20


def _rgb_array(image: Image.Image) -> np.ndarray:
    """Copy an RGB image into an ``(H, W, 3)`` array a strip of rows at a time.

    ``np.asarray(image)`` would go through one bytes object of the whole
    picture, a third copy at its peak: for a gigapixel target, gigabytes.
    """
    width, height = image.size
    out = np.empty((height, width, 3), np.uint8)
    rows = max(1, _COPY_STRIP_BYTES // max(1, width * 3))
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        out[top:bottom] = np.asarray(image.crop((0, top, width, bottom)))
    return out


def picture_array(image: Image.Image, name: str = "target",
                  max_pixels: int = TARGET_MAX_PIXELS, *,
                  colour_profiles: str = "ignore") -> np.ndarray:
    """A caller's Pillow image of any mode as an ``(H, W, 3)`` uint8 RGB array.

    Parameters
    ----------
    image : PIL.Image.Image
        The picture, loaded or still lazily opened (decoded here).
    name : str
        How messages name it.
    max_pixels : int
        Most pixels it may have (the ``max_target_pixels`` setting); Pillow's
        own decompression-bomb limit gives way to it.
    colour_profiles : {"ignore", "convert"}
        Whether its embedded ICC profile is applied (the setting of that name).

    Raises
    ------
    MosaicistError
        In one line naming ``name``, when its pixels cannot be decoded (a
        file cut short, an image already closed).
    """
    check_colour_profiles(colour_profiles)
    try:
        with _PILLOW_LIMIT.allowing(max_pixels):
            image.load()
        # Upright as a file of it is read (a camera's portrait came out lying down, its
        # grid turned); a copy, the caller's image untouched. An image already turned
        # has no orientation left to apply.
        upright = ImageOps.exif_transpose(image) or image
        return np.asarray(to_rgb(upright, colour_profiles), dtype=np.uint8)
    except _DECODE_ERRORS as error:
        raise MosaicistError(f"{name}: cannot read the picture: {_describe(error)}") from None


def read_target(
    path: str | os.PathLike[str], max_pixels: int = TARGET_MAX_PIXELS, *,
    colour_profiles: str = "ignore",
) -> np.ndarray:
    """Read a target picture as an ``(H, W, 3)`` uint8 RGB array.

    Parameters
    ----------
    path : str or os.PathLike
        The picture.
    max_pixels : int
        Most pixels it may have (the ``max_target_pixels`` setting), checked
        from the header before anything is decoded.
    colour_profiles : {"ignore", "convert"}
        Whether its embedded ICC profile is applied (the setting of that name).

    Raises
    ------
    MosaicistError
        With a one-line message naming the file, when it is missing,
        unreadable, or over ``max_pixels`` (an :class:`OptionError` naming
        ``max_target_pixels`` then).
    """
    check_colour_profiles(colour_profiles)
    path = _existing_target(path)
    size: tuple[int, int] | None = None
    try:
        # Opened here and kept open past the decode: a PNG's pixel data are counted
        # in the file decoded (see _refuse_missing_png_rows).
        with open(path, "rb") as handle:
            image = _open_checked(handle, max_pixels)
            size = image.size
            with image, _PILLOW_LIMIT.allowing(max_pixels):
                # A profile to apply takes Pillow's path (to_rgb).
                # (And a damaged one, for its warning.)
                converting = colour_profiles == "convert" and (
                    profile_of(image) is not None or getattr(image, _DAMAGED_PROFILE, False))
                pixels = None if converting else _plain_png_pixels(image)
                if pixels is not None:
                    return pixels
                # Before a decode that a lying header could make huge and grey.
                _refuse_jpeg_data_missing(image, handle)
                image.load()
                _refuse_missing_png_rows(image, handle)
                ImageOps.exif_transpose(image, in_place=True)
                return _rgb_array(to_rgb(image, colour_profiles))
    except MemoryError:
        if size is None:
            raise
        # The command line's own line ("out of memory; try a smaller target") named no
        # file, nor the size its header declares (a file of a few hundred bytes may).
        width, height = size
        raise MosaicistError(
            f"{path}: out of memory decoding its {width}x{height} pixels "
            f"({3 * width * height / 1e9:.1f} GB as RGB); free memory or use a smaller "
            "picture") from None
    except PixelLimitError as error:
        raise _over_target_limit(path, error) from None
    except ImageReadError as error:  # a HEIF or AVIF picture without its plugin
        raise MosaicistError(f"{path}: cannot read target image: {error}") from None
    except PermissionError:
        raise MosaicistError(f"{path}: permission denied") from None
    except _DECODE_ERRORS as error:
        raise MosaicistError(f"{path}: cannot read target image: {_describe(error)}") from None


#: A PNG's signature, and the chunk that ends it (its length, kind and CRC).
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\0\0\0\0IEND\xaeB`\x82"


class _LibpngWarnings(logging.Filter):
    """Holds back imagecodecs' log records on a thread decoding a target, noting them.

    libpng warns (through imagecodecs' logger) of pixel data it decodes all
    the same: compressed data past the last row, a stream that goes on
    after it. Pillow says nothing of those, so neither may this way, and
    such a file is left to Pillow. A filter, not a level: the logger is
    shared with other threads, whose records pass as they are.
    """

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        said: list[str] | None = getattr(self._local, "said", None)
        if said is None:
            return True
        said.append(record.getMessage())
        return False

    @contextlib.contextmanager
    def noting(self) -> Iterator[list[str]]:
        """The messages this thread's decode logs meanwhile, none of them passed on."""
        said: list[str] = []
        self._local.said = said
        try:
            yield said
        finally:
            self._local.said = None


_LIBPNG_WARNINGS = _LibpngWarnings()


def _plain_png_pixels(image: Image.Image) -> np.ndarray | None:
    """An opaque 8-bit RGB PNG's pixels, decoded by libpng outside the interpreter lock.

    Pillow's PNG decoder holds the interpreter lock, so a target decoding
    on its thread (see :class:`mosaicist.pipeline._TargetReading`) keeps the
    library's opening on the main thread waiting: 0.29 s for a 3840x2160
    picture that decodes alone in 0.18 s. libpng, through ``imagecodecs``
    (the ``fast`` extra), releases the lock and takes 0.13 s. Only pictures
    whose stored samples are the answer take this way: 8-bit RGB, not
    interlaced, one frame, no colour key, no orientation (ICC profiles and
    gamma are ignored on every path, see the module docstring). libpng is
    given the header, the pixel data and the end, never the other chunks:
    they change no pixel here, and it would print a warning for a damaged one
    that Pillow ignores. The chunks after the pixels are then read by
    Pillow's own reader, as its decode reads them, so that a file it refuses
    for one of them (a frame control chunk out of sequence, a chunk cut
    short) is refused in the same words.

    Returns
    -------
    numpy.ndarray or None
        The ``(H, W, 3)`` pixels; None without ``imagecodecs``, for any other
        picture, and where libpng fails or warns (Pillow then decodes the
        file and says what is wrong, as without this way).
    """
    if not isinstance(image, PngImagePlugin.PngImageFile):
        return None
    tile, handle = image.tile, image.fp
    # Indexed, not named: a tile is a plain tuple under Pillow 10. Its extents the whole
    # picture: a lone APNG frame may declare a smaller one, which Pillow decodes into.
    if (image.mode != "RGB" or len(tile) != 1
            or tile[0][3] != "RGB" or tile[0][1] != (0, 0, *image.size)
            or image.info.get("interlace")
            or "transparency" in image.info or "default_image" in image.info
            or getattr(image, "n_frames", 1) != 1 or handle is None
            # The state Pillow's reader of the chunks after the pixels starts from.
            or not hasattr(image, "_PngImageFile__prepare_idat")):
        return None
    try:
        import imagecodecs
    except ImportError:
        return None
    # The file Pillow opened, not the path again: the header it read, the orientation,
    # the pixel data and the chunks after come from one file even if another replaces it.
    if _png_orientation(handle, image.info) != 1:
        return None
    width, height = image.size
    file_bytes = handle.seek(0, os.SEEK_END)
    handle.seek(0)
    header = handle.read(33)
    pixel_data: list[bytes] = []
    pixels_end = 0
    for kind, length in png_chunks(handle):
        if kind == b"IDAT":
            start = handle.tell() - 8
            if start + length + 12 > file_bytes:
                return None  # cut short: Pillow's to say (and no read of a declared 4 GB)
            # Each whole: libpng checks its CRC, as Pillow does.
            handle.seek(start)
            pixel_data.append(handle.read(length + 12))
            pixels_end = start + 8 + length
        elif kind == b"IEND" or pixel_data:
            break  # the pixel data is one run of IDAT chunks
    if (header[:16] != _PNG_SIGNATURE + b"\0\0\0\rIHDR"
            or header[16:29] != (width.to_bytes(4, "big") + height.to_bytes(4, "big")
                                 + b"\x08\x02\0\0\0")
            or not pixel_data):
        return None  # changed since it was opened, or damaged: Pillow's to say
    logging.getLogger("imagecodecs").addFilter(_LIBPNG_WARNINGS)  # once: a set of one
    try:
        with _LIBPNG_WARNINGS.noting() as said:
            pixels = imagecodecs.png_decode(b"".join([header, *pixel_data, _PNG_END]))
    except Exception:  # noqa: BLE001 - any failure is Pillow's to report
        return None
    if said or pixels.dtype != np.uint8 or pixels.shape != (height, width, 3):
        return None
    # Pillow's decode stops within that run of IDAT chunks (every one of them whole)
    # and then reads the chunks after it, which may refuse the file: so here.
    handle.seek(pixels_end)
    # Pillow's count of pixel bytes left unread in the chunk (private: set by its own
    # decode, whose state __prepare_idat was checked above).
    image._PngImageFile__idat = 0  # type: ignore[attr-defined]
    try:
        image.load_end()
    except AttributeError:
        pass  # a Pillow whose private state differs: the chunks after go unread, as before
    return pixels


#: Chunks after a PNG's pixels that the decoder reads into its info, and that may hold
#: the orientation: EXIF, or text (a "Raw profile type exif", XMP's ``tiff:Orientation``).
_PNG_LATE_CHUNKS = frozenset({b"eXIf", b"tEXt", b"zTXt", b"iTXt"})
#: Larger metadata chunks are not read for the orientation: memory, for a size check.
_PNG_LATE_CHUNK_BYTES = 256 << 20


def png_chunks(handle: IO[bytes]) -> Iterator[tuple[bytes, int]]:
    """Each chunk of a PNG file as its kind and length, the handle at its data.

    The caller may read the data or not: the next step seeks past it (and
    its CRC) either way, so that a chunk never read costs nothing.
    """
    handle.seek(8)  # the signature
    while True:
        head = handle.read(8)
        if len(head) < 8:
            return
        start = handle.tell()
        length = int.from_bytes(head[:4], "big")
        yield head[4:], length
        handle.seek(start + length + 4)


#: Samples per pixel of each PNG colour type (grey, RGB, palette, grey + alpha, RGBA).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
#: The seven passes of an interlaced (Adam7) PNG: first column and row, then their steps.
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))
#: Compressed bytes of a PNG's pixel data read, and bytes inflated, at a time.
_PNG_COUNT_STEP = 1 << 20


def png_rows_missing(handle: IO[bytes]) -> bool:
    """Whether a PNG's pixel data inflate to fewer bytes than its header's rows take.

    Pillow's decoder takes a complete compressed stream that ends on a row's
    boundary as the end of the picture, and leaves the rows after it as they
    were allocated (zeros: black, or transparent) without a word; libpng
    refuses such a file ("Not enough image data"). Each row is a filter byte
    and its packed samples (per pass, when interlaced). The data are read and
    inflated a megabyte at a time and counted, never kept; a stream that is
    not valid zlib is left to the decoder, which says so.

    Parameters
    ----------
    handle : file object
        The PNG file, seekable; where it is left is unspecified.
    """
    handle.seek(0)
    header = handle.read(29)
    if len(header) < 29 or header[:8] != _PNG_SIGNATURE or header[12:16] != b"IHDR":
        return False
    width, height, bits, colour, _, _, interlace = struct.unpack(">IIBBBBB", header[16:29])
    if colour not in _PNG_CHANNELS:
        return False
    bits_per_pixel = _PNG_CHANNELS[colour] * bits

    def size(columns: int, rows: int) -> int:
        return rows * (1 + (columns * bits_per_pixel + 7) // 8) if columns and rows else 0

    if interlace:
        expected = sum(size(max(0, -(-(width - x) // step_x)), max(0, -(-(height - y) // step_y)))
                       for x, y, step_x, step_y in _ADAM7)
    else:
        expected = size(width, height)
    inflater = zlib.decompressobj()
    produced = 0
    seen_pixels = False
    try:
        for kind, length in png_chunks(handle):
            if kind == b"IDAT":
                seen_pixels = True
                left = length
                while left and produced < expected:
                    pending = handle.read(min(left, _PNG_COUNT_STEP))
                    if not pending:
                        return False  # cut short: the decoder's to say
                    left -= len(pending)
                    while pending and produced < expected:
                        produced += len(inflater.decompress(pending, _PNG_COUNT_STEP))
                        pending = inflater.unconsumed_tail
                    if inflater.eof:
                        return produced < expected
                if produced >= expected:
                    return False
            elif kind == b"IEND" or seen_pixels:
                break  # the pixel data are one run of IDAT chunks
    except zlib.error:
        return False
    return seen_pixels and produced < expected


def _refuse_missing_pixel_data(image: Image.Image, source: IO[bytes] | Path) -> None:
    """Refuse a loaded PNG or JPEG whose pixel data end early (see the two below)."""
    _refuse_missing_png_rows(image, source)
    _refuse_grey_filled_jpeg(image, source)


#: libjpeg's warnings of data that end before the last block (which it fills with grey).
_JPEG_DATA_MISSING = ("premature end of data segment", "premature end of jpeg file")
#: Why such a JPEG is refused.
_JPEG_CUT_SHORT = "truncated image file (its data end before its last block)"


def _jpeg_data_missing(error: ValueError) -> bool:
    """Whether simplejpeg's (strict) error is libjpeg's warning of missing data."""
    return any(warning in str(error).lower() for warning in _JPEG_DATA_MISSING)


def _refuse_grey_filled_jpeg(image: Image.Image, source: IO[bytes] | Path) -> None:
    """Refuse a loaded JPEG whose data end before its last block.

    A JPEG cut short and given its end marker back (or whose header claims
    a larger picture than its data hold) decodes without an error in Pillow:
    libjpeg warns and fills every block left with grey (a 5 KB file claiming
    30,000 x 30,000 pixels made a grey mosaic, 6 GB and 37 s later), where one
    cut short without the marker is refused as truncated. The blocks are
    decoded in order, so the last is grey whenever data are missing: only
    then is the file decoded again by libjpeg-turbo (``fast`` extra), at its
    smallest scale, strictly, for its warning. Called before any
    orientation is applied.

    Raises
    ------
    ImageReadError
        Saying the file is truncated.
    """
    if image.format != "JPEG" or image.mode not in ("L", "RGB"):
        return
    corner = image.getpixel((image.width - 1, image.height - 1))
    if corner in (128, (128, 128, 128)):
        _refuse_jpeg_data_missing(image, source)


def _refuse_jpeg_data_missing(image: Image.Image, source: IO[bytes] | Path) -> None:
    """Refuse an opened JPEG whose data end before its last block (:func:`jpeg_data_missing`).

    A target's is looked at before it is decoded whole (see
    :func:`_refuse_grey_filled_jpeg`).

    Raises
    ------
    ImageReadError
        Saying the file is truncated.
    """
    if image.format != "JPEG" or simplejpeg is None:
        return
    if jpeg_data_missing(_file_head(source, -1)):
        raise ImageReadError(_JPEG_CUT_SHORT)


def jpeg_data_missing(data: bytes) -> bool:
    """Whether a JPEG's data end before its last block, which libjpeg fills with grey.

    Decoded strictly by libjpeg-turbo (``fast`` extra; without it, False), at
    its smallest scale: an eighth of a decode's work each way.

    Parameters
    ----------
    data : bytes
        The JPEG file's bytes.

    Returns
    -------
    bool
        True where libjpeg warns of missing data ("premature end").
    """
    if simplejpeg is None or data[:2] != b"\xff\xd8":
        return False
    try:
        simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=1, min_height=1)
    except ValueError as error:
        return _jpeg_data_missing(error)
    return False


def _refuse_missing_png_rows(image: Image.Image, source: IO[bytes] | Path) -> None:
    """Refuse a loaded PNG whose pixel data end before its last row (see :func:`png_rows_missing`).

    The data are counted only when the rows the decoder fills last (the last
    row; of an interlaced picture, the last two, its last pass's) have a row
    of zeros, as rows never decoded do: a whole picture costs a row's look.
    Called before any orientation is applied, with the file decoded: the one
    opened (not whatever has taken its name since), or its path.

    Raises
    ------
    ImageReadError
        Saying the file is truncated.
    """
    if image.format != "PNG":
        return
    width, height = image.size
    last = 2 if image.info.get("interlace") else 1
    rows = np.asarray(image.crop((0, max(0, height - last), width, height)))
    if rows.reshape(rows.shape[0], -1).any(axis=1).all():
        return
    opened = (open(source, "rb") if isinstance(source, Path)
              else contextlib.nullcontext(source))
    with opened as handle:
        missing = png_rows_missing(handle)
    if missing:
        raise ImageReadError("truncated image file (its pixel data end before its last row)")


def _png_orientation(source: Path | IO[bytes], info: dict[str | tuple[int, int], Any]) -> object:
    """The EXIF orientation a PNG's decode will apply, read without decoding its pixels.

    Pillow reads the chunks after the pixels (an ``eXIf`` there is allowed)
    only as it decodes them; here they are found by skipping from chunk
    header to chunk header, and handed to Pillow's own reader in a PNG of no
    pixels, so that the orientation is found exactly as the decode will.
    ``source`` is the file's path, or the file opened (the one being decoded,
    not whatever has taken its name since).
    """
    late = bytearray()
    opened = (open(source, "rb") if isinstance(source, Path)
              else contextlib.nullcontext(source))
    with opened as handle:
        file_bytes = handle.seek(0, os.SEEK_END)
        handle.seek(0)
        header = handle.read(33)  # the signature and the IHDR chunk
        after_pixels = False
        for kind, length in png_chunks(handle):
            if kind == b"IEND" or (after_pixels and kind == b"fcTL"):
                break  # the decode of the first frame stops there too
            if kind == b"IDAT":
                after_pixels = True
            # Any chunk the file holds whole, however large: the decode reads it too (a
            # length past the end is damage, which the decode reports, not EXIF).
            if (after_pixels and kind in _PNG_LATE_CHUNKS and length <= _PNG_LATE_CHUNK_BYTES
                    and handle.tell() + length <= file_bytes):
                payload = handle.read(length)
                # A fresh CRC: the decode does not check those of chunks after the pixels.
                late += (length.to_bytes(4, "big") + kind + payload
                         + zlib.crc32(kind + payload).to_bytes(4, "big"))
    merged = dict(info)
    if late:
        try:
            # The IHDR declares the picture's size, checked by the caller against its own limit.
            with _PILLOW_LIMIT.allowing(None), Image.open(
                io.BytesIO(header + bytes(late) + b"\0\0\0\0IEND\xaeB`\x82")
            ) as chunks:
                merged.update(chunks.info)
        except _DECODE_ERRORS:
            pass  # a damaged chunk the decode would skip or fail on: not this check's to say
    probe = Image.new("1", (1, 1))
    probe.info = merged
    # As it is, not only an int: the decode turns a picture for a value equal to one
    # (a RATIONAL 6/1 or a FLOAT 6.0 turns it as 6 does).
    return probe.getexif().get(_ORIENTATION, 1)


#: TIFF tags of the stored picture's width and height.
_TIFF_WIDTH, _TIFF_HEIGHT = 256, 257


def _stored_size(image: Image.Image) -> tuple[int, int]:
    """An opened image's size as its file stores it, before any EXIF orientation.

    Newer Pillows give a TIFF the size it has once its orientation is
    applied (they apply it as they load it), older ones the stored size;
    the tags say which it is stored as under every version.
    """
    if image.format == "TIFF":
        tags = getattr(image, "tag_v2", {})
        width, height = tags.get(_TIFF_WIDTH), tags.get(_TIFF_HEIGHT)
        if isinstance(width, int) and isinstance(height, int):
            return width, height
    return image.size


#: TIFF tags of the first page's layout: compression, rows per strip, tile width and height,
#: planar configuration, and where its strips (or tiles) lie: offsets and byte counts.
_TIFF_COMPRESSION, _TIFF_ROWS_PER_STRIP, _TIFF_TILE_WIDTH, _TIFF_TILE_HEIGHT = 259, 278, 322, 323
_TIFF_PLANAR = 284
_TIFF_DATA_TAGS = ((273, 279), (324, 325))


def _tiff_data_end(image: Image.Image) -> int | None:
    """The least file size that holds a TIFF's first page (see :func:`_pixel_data_end`).

    Compressed strips and tiles are read whole by libtiff, which refuses one
    cut short. Uncompressed ones (chunky samples) are read by Pillow row by
    row, only the rows and columns inside the picture: a last strip or an
    edge tile may declare padding that nothing reads.
    """
    tags = getattr(image, "tag_v2", {})
    width, height = _stored_size(image)
    for offsets_tag, counts_tag in _TIFF_DATA_TAGS:
        offsets, counts = tags.get(offsets_tag), tags.get(counts_tag)
        if not (isinstance(offsets, tuple) and isinstance(counts, tuple) and offsets
                and len(offsets) == len(counts)
                and all(isinstance(value, int) for value in offsets + counts)):
            continue
        if tags.get(_TIFF_COMPRESSION, 1) != 1:
            return max((offset + count for offset, count in zip(offsets, counts, strict=True)
                        if count > 0), default=None)
        bits = tags.get(_TIFF_BITS, (1,))  # the TIFF default: bilevel
        if tags.get(_TIFF_PLANAR, 1) != 1 or not isinstance(bits, tuple) or not bits:
            return None
        depth = sum(bits)
        if offsets_tag == 273:
            rows_per = tags.get(_TIFF_ROWS_PER_STRIP, height)
            if not isinstance(rows_per, int) or rows_per < 1:
                return None
            row_bytes = (width * depth + 7) // 8
            return max(offset + row_bytes * max(0, min(rows_per, height - index * rows_per))
                       for index, offset in enumerate(offsets))
        tile_width, tile_height = tags.get(_TIFF_TILE_WIDTH), tags.get(_TIFF_TILE_HEIGHT)
        if not (isinstance(tile_width, int) and isinstance(tile_height, int)
                and tile_width > 0 and tile_height > 0):
            return None
        across = -(-width // tile_width)
        stride = (tile_width * depth + 7) // 8
        ends = []
        for index, offset in enumerate(offsets):
            top, left = index // across * tile_height, index % across * tile_width
            rows, cols = min(tile_height, height - top), min(tile_width, width - left)
            if rows > 0 and cols > 0:
                ends.append(offset + stride * (rows - 1) + (cols * depth + 7) // 8)
        return max(ends, default=None)
    return None


def _pixel_data_end(image: Image.Image) -> int | None:
    """The least file size that can hold the pixel data an opened image's header declares.

    Only where the header alone says so: a TIFF's strips or tiles
    (:func:`_tiff_data_end`), and an uncompressed BMP's rows. None for every
    other file: a JPEG, PNG or GIF holds a compressed stream of no declared
    length (a PNG whose last chunk is cut by a byte or two still decodes,
    its checksum unread), and a WebP cut short is refused as it is opened.
    """
    if image.format == "TIFF":
        return _tiff_data_end(image)
    tiles = getattr(image, "tile", None)
    if image.format in ("BMP", "DIB") and tiles and len(tiles) == 1:
        codec, extents, offset, args = tiles[0]
        if codec == "raw" and isinstance(args, tuple) and len(args) >= 2 and extents:
            stride, rows = args[1], extents[3] - extents[1]
            if isinstance(stride, int) and stride > 0 and rows > 0:
                # Rows are padded to 4 bytes, and the decoder stops before the last padding.
                return int(offset) + stride * (rows - 1) + max(1, stride - 3)
    return None


def target_size(
    path: str | os.PathLike[str], max_pixels: int | None = None,
) -> tuple[int, int]:
    """Return a target picture's ``(width, height)`` as :func:`read_target` will see it.

    Reads only the header (EXIF orientation applied; for a PNG also the chunks
    after its pixels, skipped to without decoding them), so output sizes can
    be checked before any work. A file too short for the pixel data its
    header declares (a TIFF or uncompressed BMP cut short: see
    :func:`_pixel_data_end`) is refused here, as :func:`read_target` would.

    Parameters
    ----------
    path : str or os.PathLike
        The picture.
    max_pixels : int, optional
        Refuse it, as :func:`read_target` would, when it has more pixels.

    Raises
    ------
    MosaicistError
        When the file is missing, unreadable or over ``max_pixels``.
    """
    path = _existing_target(path)
    try:
        with _open_checked(path, max_pixels) as image:
            width, height = _stored_size(image)
            end, held = _pixel_data_end(image), path.stat().st_size
            if end is not None and end > held:
                # Refused here, not after the library was opened and indexed for it.
                raise MosaicistError(
                    f"{path}: cannot read target image: truncated image file (its header "
                    f"places pixel data up to byte {end:,}; the file has {held:,} bytes)"
                )
            if image.format == "PNG":
                # Pillow's PNG getexif() decodes every pixel to reach chunks after them.
                orientation = _png_orientation(path, image.info)
            else:
                orientation = image.getexif().get(_ORIENTATION, 1)
            if orientation in _QUARTER_TURNS:
                width, height = height, width
            return width, height
    except PixelLimitError as error:
        raise _over_target_limit(path, error) from None
    except ImageReadError as error:  # a HEIF or AVIF picture without its plugin
        raise MosaicistError(f"{path}: cannot read target image: {error}") from None
    except PermissionError:
        raise MosaicistError(f"{path}: permission denied") from None
    except _DECODE_ERRORS as error:
        raise MosaicistError(f"{path}: cannot read target image: {_describe(error)}") from None
