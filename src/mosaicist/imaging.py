"""Reading images of any mode into RGB, and making square tile thumbnails.

Mode conversions (documented in the README):

- ``RGB`` is used as is; ``L`` (greyscale) and ``1`` (bilevel) are replicated
  to three channels; ``P`` (palette) is expanded through its palette.
- Images with transparency (``RGBA``, ``LA``, ``PA``, palette with a
  transparent index) are composited over a white background.
- 16- and 32-bit integer greyscale (``I;16*``, ``I``) is scaled from the
  0..65535 range to 0..255; floating-point greyscale (``F``) is taken as 0..1
  when its maximum is at most 1, else as 0..255; values are clipped.
- ``CMYK``, ``YCbCr``, ``LAB`` and ``HSV`` use Pillow's conversion to RGB.
- The EXIF orientation tag is applied before anything else.
- ICC profiles are ignored, as OpenCV (the seed's reader) does.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps

from .errors import MosaicistError, OptionError

try:  # libjpeg-turbo directly: ~10x faster than Pillow for small JPEGs
    import simplejpeg
except ImportError:  # pragma: no cover - optional speed-up
    simplejpeg = None

#: File extensions read from a tile folder (lower case).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".tif", ".tiff", ".gif"}
)

#: Tiles and the originals they are drawn from may have at most this many pixels;
#: larger ones are refused (from the header, before decoding) as decompression bombs.
TILE_MAX_PIXELS = 200_000_000
#: Default limit of a target's pixels: murals may be large, but not unboundedly so
#: (the ``max_target_pixels`` setting raises it).
TARGET_MAX_PIXELS = 1_500_000_000


class ImageReadError(Exception):
    """An image file that cannot be used; the message says why."""


def _white_background(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a Pillow image of any mode to 8-bit RGB (see the module docstring).

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
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode == "P" and "transparency" in image.info
    ):
        return _white_background(image)
    if mode == "P" and image.palette is not None and image.palette.mode == "RGBA":
        return _white_background(image)
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if mode == "F":
            scale = 255.0 if values.size and np.nanmax(values) <= 1.0 else 1.0
        else:
            scale = 255.0 / 65535.0
        grey = np.clip(np.nan_to_num(values * scale), 0, 255)
        grey = np.rint(grey).astype(np.uint8)
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


def square_thumbnail(image: Image.Image, side_px: int) -> np.ndarray:
    """Centre-crop ``image`` to a square and resize it to ``side_px``.

    Downscaling uses Pillow's Lanczos filter with a box pre-reduction
    (``reducing_gap``), which keeps the quality of Lanczos at a fraction of
    its cost for large images.

    Returns
    -------
    numpy.ndarray
        ``(side_px, side_px, 3)`` uint8 array.
    """
    square = centre_square(to_rgb(image))
    if square.size != (side_px, side_px):
        square = square.resize(
            (side_px, side_px), Image.Resampling.LANCZOS, reducing_gap=3.0
        )
    return np.asarray(square, dtype=np.uint8).reshape(side_px, side_px, 3)


class _PillowLimit:
    """Pillow's process-wide decompression-bomb limit, lifted only around our own checks.

    Pillow refuses images over its global ``Image.MAX_IMAGE_PIXELS`` (twice it, with a
    warning above it) when it opens or crops them. Our reads check the size from
    the header against their own limit instead, so while one runs the global is
    lifted (for a header read, checked right after) or raised to the largest
    limit in use, and it is put back when the last one ends. Render threads read
    concurrently, hence the count of holders rather than a saved value each.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: list[int | None] = []
        self._saved: int | None = None

    @contextlib.contextmanager
    def allowing(self, pixels: int | None) -> Iterator[None]:
        """Let Pillow handle images of up to ``pixels`` (None: any) while in the block."""
        with self._lock:
            if not self._held:
                self._saved = Image.MAX_IMAGE_PIXELS
            self._held.append(pixels)
            self._apply()
        try:
            yield
        finally:
            with self._lock:
                self._held.remove(pixels)
                if self._held:
                    self._apply()
                else:
                    Image.MAX_IMAGE_PIXELS = self._saved

    def _apply(self) -> None:
        held = [pixels for pixels in self._held if pixels is not None]
        if self._saved is None or len(held) < len(self._held):
            Image.MAX_IMAGE_PIXELS = None
        else:
            Image.MAX_IMAGE_PIXELS = max(self._saved, *held)


_PILLOW_LIMIT = _PillowLimit()


class PixelLimitError(ImageReadError):
    """An image whose header declares more pixels than the limit allows."""

    def __init__(self, width: int, height: int, limit: int) -> None:
        self.width, self.height, self.limit = width, height, limit
        super().__init__(
            f"image of {width}x{height} = {width * height:,} pixels is over the limit of "
            f"{limit:,} pixels"
        )


def _check_pixels(width: int, height: int, limit: int) -> None:
    if width * height > limit:
        raise PixelLimitError(width, height, limit)


def _open_checked(source: IO[bytes] | Path, max_pixels: int | None) -> Image.Image:
    """Open an image's header and refuse it when it declares over ``max_pixels``.

    Nothing is decoded: Pillow reads the header only. Pillow's own global limit
    is lifted for the call, since ours is checked right after (None: the
    caller only wants the size).
    """
    with _PILLOW_LIMIT.allowing(None):
        image = Image.open(source)
    try:
        if max_pixels is not None:
            _check_pixels(*image.size, max_pixels)
    except PixelLimitError:
        image.close()
        raise
    return image


def _draft_for(image: Image.Image, side_px: int) -> None:
    """Ask a JPEG's decoder for the smallest DCT scale whose centre square is >= ``side_px``.

    libjpeg scales by 1/2, 1/4 or 1/8 while decoding, so a large photo is
    never held at full size when a small tile is wanted. Other formats have
    no reduced decoding in Pillow and are decoded whole (within the limit).
    """
    if image.format != "JPEG":
        return
    width, height = image.size
    scale = max(side_px / max(1, min(width, height)), 1e-9)
    # draft() keeps both sides at least as large as asked.
    image.draft(
        "RGB" if image.mode in ("RGB", "YCbCr") else image.mode,
        (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))),
    )


def _has_exif(data: bytes) -> bool:
    # EXIF lives in an APP1 segment near the start of a JPEG.
    return b"Exif\x00\x00" in data[:65536]


def _decode_jpeg_fast(data: bytes, side_px: int, max_pixels: int) -> np.ndarray | None:
    """Decode a plain JPEG with libjpeg-turbo (simplejpeg), or None to fall back.

    Returns None for JPEGs with EXIF (orientation needs Pillow), CMYK or
    anything simplejpeg declines; those take the Pillow path.
    """
    if simplejpeg is None or data[:2] != b"\xff\xd8" or _has_exif(data):
        return None
    try:
        width, height, _, _ = simplejpeg.decode_jpeg_header(data)
        _check_pixels(width, height, max_pixels)
        side = min(width, height)
        scale = side_px / side
        # DCT scaling (shrink-on-load) to the smallest size that keeps side >= side_px.
        pixels = simplejpeg.decode_jpeg(
            data, colorspace="RGB", fastdct=False, fastupsample=False,
            min_width=max(1, int(np.ceil(width * scale))),
            min_height=max(1, int(np.ceil(height * scale))),
        )
    except ValueError:
        return None
    if pixels.shape[0] == side_px and pixels.shape[1] == side_px:
        return np.ascontiguousarray(pixels)
    return square_thumbnail(Image.fromarray(pixels, "RGB"), side_px)


#: A decode slot: called with the pixels an image is about to be decoded at, it
#: returns a context that holds them (e.g. a share of a memory budget) meanwhile.
DecodeSlot = Callable[[int], contextlib.AbstractContextManager[object]]

# What Pillow raises for a broken file. DecompressionBombError: a GIF frame or
# TIFF tile larger than the (checked) image it belongs to.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, TypeError, IndexError,
                  Image.DecompressionBombError, Image.DecompressionBombWarning)


def _pillow_thumbnail(
    source: IO[bytes] | Path, side_px: int, max_pixels: int, slot: DecodeSlot | None,
) -> np.ndarray:
    """Decode with Pillow into a ``side_px`` square: size checked, JPEGs drafted."""
    try:
        image = _open_checked(source, max_pixels)
        with image:
            _draft_for(image, side_px)
            hold = slot(image.width * image.height) if slot else contextlib.nullcontext()
            with hold, _PILLOW_LIMIT.allowing(max_pixels):
                image.load()
                ImageOps.exif_transpose(image, in_place=True)
                return square_thumbnail(image, side_px)
    except ImageReadError:
        raise
    except _DECODE_ERRORS as error:
        raise ImageReadError(_describe(error)) from None


def decode_tile_bytes(data: bytes, side_px: int, max_pixels: int | None = None) -> np.ndarray:
    """Decode an encoded image file's bytes into a square ``side_px`` thumbnail.

    JPEGs are decoded with shrink-on-load (DCT scaling), so a 12-megapixel
    photo is decoded at 1/8 size when the thumbnail is small.

    Parameters
    ----------
    data : bytes
        The file's bytes.
    side_px : int
        Side of the thumbnail.
    max_pixels : int, optional
        Most pixels the image may declare (default :data:`TILE_MAX_PIXELS`),
        checked from the header before decoding.

    Raises
    ------
    ImageReadError
        When the bytes are not a readable image (truncated, unknown format,
        over the pixel limit).
    """
    limit = TILE_MAX_PIXELS if max_pixels is None else max_pixels
    fast = _decode_jpeg_fast(data, side_px, limit)
    if fast is not None:
        return fast
    return _pillow_thumbnail(io.BytesIO(data), side_px, limit, None)


def read_original(
    path: str | os.PathLike[str], side_px: int, *, max_pixels: int | None = None,
    slot: DecodeSlot | None = None,
) -> np.ndarray:
    """Read an original image file as a ``side_px`` tile (centre square, Lanczos).

    The size is checked from the header first, and a JPEG is decoded at the
    smallest DCT scale whose centre square is still at least ``side_px``, so a
    small file declaring a huge picture costs neither time nor memory.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    side_px : int
        Side of the tile.
    max_pixels : int, optional
        Most pixels the file may declare (default :data:`TILE_MAX_PIXELS`).
    slot : callable, optional
        Called with the pixels about to be decoded; the decode runs inside
        the context it returns (render threads share a memory budget this way).

    Returns
    -------
    numpy.ndarray
        ``(side_px, side_px, 3)`` uint8.

    Raises
    ------
    ImageReadError
        When the file is not a readable image or is over the limit.
    OSError
        When the file cannot be opened (missing, permissions).
    """
    limit = TILE_MAX_PIXELS if max_pixels is None else max_pixels
    # Opened here, so that a missing file is an OSError and not "not an image".
    with open(path, "rb") as handle:
        return _pillow_thumbnail(handle, side_px, limit, slot)


def _describe(error: BaseException) -> str:
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, Image.UnidentifiedImageError):
        return "not a readable image"
    if "truncated" in message.lower():
        return "truncated image file"
    return message


def read_tile_file(path: str | os.PathLike[str], side_px: int) -> tuple[np.ndarray, str]:
    """Read one tile image file.

    Returns
    -------
    pixels : numpy.ndarray
        ``(side_px, side_px, 3)`` uint8 thumbnail.
    content_hash : str
        BLAKE2b digest (hex, 16 bytes) of the file's bytes.
    """
    data = Path(path).read_bytes()
    return decode_tile_bytes(data, side_px), content_hash(data)


def content_hash(data: bytes | memoryview) -> str:
    """Return the hex BLAKE2b-128 digest of ``data``."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _existing_target(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.exists():
        raise MosaicistError(f"{path}: target file not found")
    if path.is_dir():
        raise MosaicistError(f"{path}: target is a directory, not an image")
    return path


def _over_target_limit(path: Path, error: PixelLimitError) -> OptionError:
    return OptionError(
        "{path}: {width}x{height} = {pixels} pixels is over the target limit of {limit} "
        "pixels (raise it with {max_target_pixels})",
        path=str(path), width=error.width, height=error.height,
        pixels=f"{error.width * error.height:,}", limit=f"{error.limit:,}",
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


def read_target(
    path: str | os.PathLike[str], max_pixels: int = TARGET_MAX_PIXELS,
) -> np.ndarray:
    """Read a target picture as an ``(H, W, 3)`` uint8 RGB array.

    Parameters
    ----------
    path : str or os.PathLike
        The picture.
    max_pixels : int
        Most pixels it may have (the ``max_target_pixels`` setting), checked
        from the header before anything is decoded.

    Raises
    ------
    MosaicistError
        With a one-line message naming the file, when it is missing,
        unreadable, or over ``max_pixels`` (an :class:`OptionError` naming
        ``max_target_pixels`` then).
    """
    path = _existing_target(path)
    try:
        image = _open_checked(path, max_pixels)
        with image, _PILLOW_LIMIT.allowing(max_pixels):
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            return _rgb_array(to_rgb(image))
    except PixelLimitError as error:
        raise _over_target_limit(path, error) from None
    except PermissionError:
        raise MosaicistError(f"{path}: permission denied") from None
    except _DECODE_ERRORS as error:
        raise MosaicistError(f"{path}: cannot read target image: {_describe(error)}") from None


def target_size(
    path: str | os.PathLike[str], max_pixels: int | None = None,
) -> tuple[int, int]:
    """Return a target picture's ``(width, height)`` as :func:`read_target` will see it.

    Reads only the header (EXIF orientation applied), so output sizes can be
    checked before any work.

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
            width, height = image.size
            # Orientations 5-8 turn the picture a quarter. A PNG's EXIF after its
            # pixels is not looked for: Pillow would decode them all to reach it.
            png_without = image.format == "PNG" and "exif" not in image.info
            if not png_without and image.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                width, height = height, width
            return width, height
    except PixelLimitError as error:
        raise _over_target_limit(path, error) from None
    except PermissionError:
        raise MosaicistError(f"{path}: permission denied") from None
    except _DECODE_ERRORS as error:
        raise MosaicistError(f"{path}: cannot read target image: {_describe(error)}") from None
