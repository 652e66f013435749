"""Checking an uploaded target picture before the studio accepts it.

An upload is untrusted bytes with a name that means nothing. It is accepted
only once it has been decoded whole:

1. its size in bytes is checked first (:data:`MAX_UPLOAD_BYTES`);
2. its type comes from its content, and only the formats a photo comes in
   are opened (:data:`ACCEPTED_FORMATS`: not Pillow's every plugin, some of
   which hand files to other programs);
3. the pixel count its header declares is checked before anything is
   decoded (:data:`MAX_UPLOAD_PIXELS`; decompression bombs), with the
   header checks of :mod:`mosaicist.imaging`;
4. it is decoded whole (a truncated file is refused), its EXIF orientation
   applied and its mode converted to RGB as targets always are;
5. it is stored re-encoded, without the original's metadata (EXIF, GPS
   position, comments): JPEG photos as JPEG, the rest as PNG. An RGB ICC
   colour profile (a phone's Display P3, a camera's Adobe RGB) is the one
   thing kept: it says what colours the pixels are, and each run applies it
   or not as its ``colour_profiles`` setting says, as ``mosaicist make`` does
   with the original file. A profile of another colour space (CMYK, grey)
   does not fit the RGB picture stored and is dropped.
"""

from __future__ import annotations

import hashlib
import io
import re
import unicodedata
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from .._profiles import converts, profile_of
from ..errors import MosaicistError, counted
from ..imaging import (
    _DECODE_ERRORS,
    _PILLOW_LIMIT,
    PixelLimitError,
    _check_pixels,
    _describe,
    jpeg_data_missing,
    png_rows_missing,
    png_without_damaged_chunks,
    settle_nclx,
    to_rgb,
)
from ..paths import atomic_path

#: Largest upload accepted, in bytes.
MAX_UPLOAD_BYTES = 64 * 2**20
#: Most pixels an uploaded picture may declare (a 100-megapixel panorama: decoded, about 1 GB).
MAX_UPLOAD_PIXELS = 100_000_000
#: Smallest side, in pixels, of a picture worth making a mosaic of.
MIN_UPLOAD_SIDE = 16
#: Formats opened, by Pillow's name, as their content says (never the file name).
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
#: Quality of a JPEG upload re-encoded without its metadata (4:4:4, no visible loss).
STORED_JPEG_QUALITY = 95
#: Longest display name kept from the uploaded file's name.
MAX_NAME_LENGTH = 80
#: The characters browsers escape in the file name of a form's upload.
_FORM_ESCAPE = re.compile(r"%(22|0[AaDd])")


def display_name(filename: str | None) -> str:
    """A safe display name from an uploaded file's name: no folders, no control characters.

    Examples
    --------
    >>> display_name("../../etc/passwd\\x00.jpg")
    'passwd.jpg'
    >>> display_name("")
    'target'
    >>> display_name("a" * 100 + ".png") == "a" * 76 + ".png"
    True
    >>> display_name("my %22best%22 photo.jpg")
    'my "best" photo.jpg'
    """
    # Browsers send a file name in a form with '"', CR and LF written as %22, %0D and %0A
    # (the HTML standard's multipart encoding), and nothing else escaped: written back
    # (a line break as a space, as any run of white space is shown).
    name = _FORM_ESCAPE.sub(lambda match: '"' if match.group(1) == "22" else " ", filename or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(character for character in unicodedata.normalize("NFC", name)
                   if unicodedata.category(character)[0] != "C")
    name = re.sub(r"\s+", " ", name).strip(" .")
    if len(name) > MAX_NAME_LENGTH:
        # Shortened in its stem: the extension names the kind of picture (and downloads).
        stem, dot, suffix = name.rpartition(".")
        if dot and stem and 0 < len(suffix) <= 10:
            name = stem[:MAX_NAME_LENGTH - len(suffix) - 1].rstrip(" .") + "." + suffix
        else:
            name = name[:MAX_NAME_LENGTH]
    return name or "target"


#: Most scans (progressive passes) of an uploaded JPEG: a camera's or a phone's take at most
#: a dozen. A crafted file of many tiny scans takes a decoder time in proportion to their
#: number times its pixels, whatever its size: 670 KB of 20,000 scans held one 16 seconds,
#: and within the upload limits a few such files stopped a server's decoders for hours.
MAX_JPEG_SCANS = 100


def decode_upload(
    data: bytes, name: str, *, formats: tuple[str, ...] = ACCEPTED_FORMATS,
    max_bytes: int | None = None, max_pixels: int | None = None,
    draft_side: int | None = None, accepted_by: str = "the studio",
    colour_profiles: str = "ignore",
) -> tuple[Image.Image, str]:
    """Decode an uploaded picture whole after checks 1 to 4 of the module docstring.

    Parameters
    ----------
    data : bytes
        The uploaded file.
    name : str
        Its display name (:func:`display_name`), for the messages.
    formats : tuple of str
        The Pillow formats opened (by content).
    max_bytes, max_pixels : int, optional
        The size limits (default: :data:`MAX_UPLOAD_BYTES`, :data:`MAX_UPLOAD_PIXELS`,
        read when called).
    draft_side : int, optional
        Let a JPEG decode at a reduced scale (DCT scaling) whose longest side
        stays at least this large: much faster and smaller for phone photos
        that are reduced afterwards anyway.
    accepted_by : str
        Who refuses other formats, in the message ("the studio").
    colour_profiles : {"ignore", "convert"}
        ``convert``: an embedded ICC profile is applied (the setting of that
        name, :func:`mosaicist.imaging.to_rgb`), the picture returned in
        sRGB. ``ignore``: the values are kept as stored, and an RGB profile
        with them (to be applied later, or not).

    Returns
    -------
    picture : PIL.Image.Image
        Upright (EXIF orientation applied), RGB, loaded, without metadata kept
        but for ``info["icc_profile"]``: the upload's RGB profile, when it has
        one and ``colour_profiles`` is ``ignore``.
    kind : str
        The upload's format, by content (Pillow's name).

    Raises
    ------
    MosaicistError
        With one sentence naming the upload (see :func:`accept_target`).
    """
    max_bytes = MAX_UPLOAD_BYTES if max_bytes is None else max_bytes
    max_pixels = MAX_UPLOAD_PIXELS if max_pixels is None else max_pixels
    if len(data) > max_bytes:
        # Servers read at most one byte past the limit: the size seen is no file's size.
        limit = max_bytes / 2**20
        shown = f"{limit:.0f}" if limit.is_integer() else f"{limit:.2g}"
        raise MosaicistError(f"{name}: the file is larger than the limit of {shown} MiB")
    if not data:
        raise MosaicistError(f"{name}: the file is empty")
    if data[:2] == b"\xff\xd8":
        # Counted in the whole file: a marker (0xFF 0xDA) never appears inside a scan's
        # data, and the few of an embedded preview (EXIF, MPF) stay far below the limit.
        scans = data.count(b"\xff\xda")
        if scans > MAX_JPEG_SCANS:
            raise MosaicistError(
                f"{name}: this JPEG is stored in {scans:,} passes (a camera's takes at most a "
                "dozen) and would take minutes to read; send the photo as the camera saved it")
    try:
        with _PILLOW_LIMIT.allowing(None):  # the header only; our limit is checked next
            image: Image.Image
            try:
                image = Image.open(io.BytesIO(data), formats=formats)
            except (Image.UnidentifiedImageError, ValueError):
                # A PNG refused for a damaged optional chunk before its pixels (a colour
                # profile, a checksum) is read without it, as a file of the library is.
                repaired = (png_without_damaged_chunks(io.BytesIO(data))
                            if "PNG" in formats else None)
                if repaired is None:
                    raise
                image = repaired
        # An AVIF's colour space declared by codes (Android phones' photos), as the
        # library's and the targets' readers see it.
        settle_nclx(image, io.BytesIO(data))
        with image:
            _check_pixels(*image.size, max_pixels)
            kind = str(image.format)
            if draft_side is not None and kind == "JPEG":
                # The longest side stays at least draft_side (or the picture's own).
                width, height = image.size
                scale = max(1.0, max(width, height) / draft_side)
                image.draft("RGB", (int(width / scale), int(height / scale)))
            if kind == "JPEG" and jpeg_data_missing(data):
                # Decoded, its blocks past the data grey, without a word (a header
                # claiming 9,000 x 9,000 pixels over 32 x 32 was stored as 81 megapixels).
                raise MosaicistError(f"{name}: the picture cannot be read: its image data end "
                                     "before its last block")
            with _PILLOW_LIMIT.allowing(max_pixels):
                image.load()
                if kind == "PNG" and png_rows_missing(io.BytesIO(data)):
                    # Pillow fills the rows a complete but short data stream lacks with
                    # black, without a word: a truncated file all the same.
                    raise MosaicistError(f"{name}: the picture cannot be read: its image "
                                         "data end before its last row")
                upright = ImageOps.exif_transpose(image)
                picture = to_rgb(upright, colour_profiles)
                picture.load()
                # Read from the file's own image: its transposed copy need not keep it.
                profile = profile_of(image) if colour_profiles == "ignore" else None
                # Only a profile that moves colours is worth keeping: an sRGB one (perhaps
                # padded to hundreds of kilobytes) is the stored values' own space.
                picture.info = {"icc_profile": profile} if converts("RGB", False, profile) else {}
    except PixelLimitError as error:
        raise MosaicistError(
            f"{name}: the picture is {error.width:,}x{error.height:,} = "
            f"{counted(error.width * error.height, 'pixel')}, over the limit of "
            f"{counted(max_pixels, 'pixel')}") from None
    except Image.UnidentifiedImageError:
        raise MosaicistError(f"{name}: not a picture in a format {accepted_by} accepts "
                             f"({', '.join(formats)})") from None
    except _DECODE_ERRORS as error:
        raise MosaicistError(f"{name}: the picture cannot be read: {_describe(error)}") from None
    except MemoryError:
        raise MosaicistError(f"{name}: the picture is too large to decode here") from None
    return picture, kind


#: Bytes of an upload's pixels hashed at a time (see :func:`accept_target`).
HASHED_STRIP_BYTES = 8 << 20


def accept_target(data: bytes, filename: str, folder: Path) -> tuple[Path, dict[str, Any]]:
    """Check an uploaded target picture and store a clean copy of it in ``folder``.

    Parameters
    ----------
    data : bytes
        The uploaded file.
    filename : str
        Its name as the browser gave it (for display only).
    folder : pathlib.Path
        Where accepted targets are stored (created when missing).

    Returns
    -------
    path : pathlib.Path
        The stored picture, ``<folder>/<id>.jpg`` or ``.png``, carrying the
        upload's RGB colour profile if it has one: its name is a digest of
        its pixels (and profile), so one picture uploaded twice is stored once.
    info : dict
        ``id`` (the file's stem), ``name`` (display name), ``width``,
        ``height``, ``format`` (the upload's, by content) and ``bytes`` (of
        the stored file).

    Raises
    ------
    MosaicistError
        With one sentence naming the upload, when it is too large, not a
        picture of an accepted format, over the pixel limit, truncated or
        otherwise broken.
    """
    name = display_name(filename)
    picture, kind = decode_upload(data, name)
    width, height = picture.size
    if min(width, height) < MIN_UPLOAD_SIDE:
        raise MosaicistError(f"{name}: the picture is {width}x{height} pixels; at least "
                             f"{MIN_UPLOAD_SIDE} pixels on each side are needed")
    digest = hashlib.sha256()
    digest.update(f"{width}x{height}:".encode())
    # The rows a strip at a time: the same digest as of tobytes(), without a second
    # copy of the whole picture (300 MB at the pixel limit).
    rows = max(1, HASHED_STRIP_BYTES // (3 * width))
    for top in range(0, height, rows):
        digest.update(picture.crop((0, top, width, min(height, top + rows))).tobytes())
    profile: bytes | None = picture.info.get("icc_profile")
    if profile:
        # The same values in another colour space are another picture (a picture without
        # one keeps the name it always had).
        digest.update(b"icc:" + profile)
    target_id = digest.hexdigest()[:32]
    suffix = ".jpg" if kind == "JPEG" else ".png"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{target_id}{suffix}"
    if not path.exists():
        with atomic_path(path) as temporary:
            # A new file from the pixels and their colour profile alone: no EXIF or
            # text chunks. (Pillow writes a PNG's info["icc_profile"] unless told.)
            if suffix == ".jpg":
                picture.save(temporary, "JPEG", quality=STORED_JPEG_QUALITY, subsampling=0,
                             icc_profile=profile)
            else:
                picture.save(temporary, "PNG", compress_level=6, icc_profile=profile)
    info = {"id": target_id, "name": name, "width": width, "height": height, "format": kind,
            "bytes": path.stat().st_size}
    return path, info
