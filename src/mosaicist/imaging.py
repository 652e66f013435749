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
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .errors import MosaicistError

try:  # libjpeg-turbo directly: ~10x faster than Pillow for small JPEGs
    import simplejpeg
except ImportError:  # pragma: no cover - optional speed-up
    simplejpeg = None

#: File extensions read from a tile folder (lower case).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".tif", ".tiff", ".gif"}
)

#: Tiles larger than this many pixels are refused as decompression bombs.
TILE_MAX_PIXELS = 200_000_000
#: Targets may be larger (murals), but not unboundedly so.
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


@contextlib.contextmanager
def _pixel_limit(max_pixels: int) -> Iterator[None]:
    """Refuse images over ``max_pixels`` while decoding (decompression bombs)."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels // 2
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _open_checked(source: io.BytesIO | Path, max_pixels: int) -> Image.Image:
    image = Image.open(source)
    width, height = image.size
    if width * height > max_pixels:
        raise ImageReadError(
            f"image of {width}x{height} pixels is over the limit of {max_pixels:,} pixels"
        )
    return image


def _has_exif(data: bytes) -> bool:
    # EXIF lives in an APP1 segment near the start of a JPEG.
    return b"Exif\x00\x00" in data[:65536]


def _decode_jpeg_fast(data: bytes, side_px: int) -> np.ndarray | None:
    """Decode a plain JPEG with libjpeg-turbo (simplejpeg), or None to fall back.

    Returns None for JPEGs with EXIF (orientation needs Pillow), CMYK or
    anything simplejpeg declines; those take the Pillow path.
    """
    if simplejpeg is None or data[:2] != b"\xff\xd8" or _has_exif(data):
        return None
    try:
        width, height, _, _ = simplejpeg.decode_jpeg_header(data)
        if width * height > TILE_MAX_PIXELS:
            raise ImageReadError(
                f"image of {width}x{height} pixels is over the limit of "
                f"{TILE_MAX_PIXELS:,} pixels"
            )
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


def decode_tile_bytes(data: bytes, side_px: int) -> np.ndarray:
    """Decode an encoded image file's bytes into a square ``side_px`` thumbnail.

    JPEGs are decoded with shrink-on-load (DCT scaling), so a 12-megapixel
    photo is decoded at 1/8 size when the thumbnail is small.

    Raises
    ------
    ImageReadError
        When the bytes are not a readable image (truncated, unknown format,
        over the pixel limit).
    """
    fast = _decode_jpeg_fast(data, side_px)
    if fast is not None:
        return fast
    try:
        with _pixel_limit(TILE_MAX_PIXELS):
            image = _open_checked(io.BytesIO(data), TILE_MAX_PIXELS)
            if image.format == "JPEG":
                width, height = image.size
                side = min(width, height)
                # draft() keeps both sides at least as large as asked; asking for
                # the scaled full frame makes the shorter side >= side_px.
                scale = max(side_px / side, 1e-9)
                image.draft(
                    "RGB" if image.mode in ("RGB", "YCbCr") else image.mode,
                    (max(1, int(np.ceil(width * scale))), max(1, int(np.ceil(height * scale)))),
                )
            image.load()
            image = ImageOps.exif_transpose(image) or image
            return square_thumbnail(image, side_px)
    except ImageReadError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning, EOFError, TypeError, IndexError) as error:
        raise ImageReadError(_describe(error)) from None


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


def read_target(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a target picture as an ``(H, W, 3)`` uint8 RGB array.

    Raises
    ------
    MosaicistError
        With a one-line message naming the file, when it is missing or
        unreadable.
    """
    path = _existing_target(path)
    try:
        with _pixel_limit(TARGET_MAX_PIXELS):
            image = _open_checked(path, TARGET_MAX_PIXELS)
            image.load()
            image = ImageOps.exif_transpose(image)
            return np.asarray(to_rgb(image), dtype=np.uint8)
    except ImageReadError as error:
        raise MosaicistError(f"{path}: {error}") from None
    except PermissionError:
        raise MosaicistError(f"{path}: permission denied") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as error:
        raise MosaicistError(f"{path}: cannot read target image: {_describe(error)}") from None


def target_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Return a target picture's ``(width, height)`` as :func:`read_target` will see it.

    Reads only the header (EXIF orientation applied), so output sizes can be
    checked before any work.

    Raises
    ------
    MosaicistError
        When the file is missing or unreadable.
    """
    path = _existing_target(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            # Orientations 5-8 turn the picture a quarter.
            if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                width, height = height, width
            return width, height
    except PermissionError:
        raise MosaicistError(f"{path}: permission denied") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise MosaicistError(f"{path}: cannot read target image: {_describe(error)}") from None
