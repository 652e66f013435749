"""Hostile pictures read alike by make's target, score, render's originals and the index."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import gradient
from PIL import Image, ImageFile, PngImagePlugin

from mosaicist import imaging
from mosaicist.errors import MosaicistError
from mosaicist.imaging import (
    ImageReadError,
    converts_profile,
    decode_tile_bytes,
    read_original,
    read_target,
    target_size,
)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_of_rows(picture: np.ndarray, rows: int, *, interlaced: bool = False) -> bytes:
    """An 8-bit RGB or RGBA PNG whose complete zlib stream holds only its first ``rows`` rows.

    Interlaced, the stream holds the first ``rows`` bytes-rows of the Adam7 passes
    (the passes' rows are listed and cut the same way).
    """
    height, width, channels = picture.shape
    colour = {3: 2, 4: 6}[channels]
    if interlaced:
        lines = []
        for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4),
                               (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)):
            sub = picture[y0::dy, x0::dx]
            if sub.size:
                lines += [b"\0" + row.tobytes() for row in sub]
    else:
        lines = [b"\0" + row.tobytes() for row in picture]
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 1 if interlaced else 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b"".join(lines[:rows])))
            + png_chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("interlaced", [False, True])
def test_a_png_whose_pixel_data_end_before_its_last_row_is_refused_everywhere(
    tmp_path, channels, interlaced
):
    # The studio and the live wall refused such a file ("its image data end before its
    # last row"); make, score, index and render read the missing rows as black (white
    # where the picture has alpha) without a word.
    picture = gradient(40, 30)
    if channels == 4:
        picture = np.dstack([picture, np.full((30, 40), 255, np.uint8)])
    short = png_of_rows(picture, 15, interlaced=interlaced)
    path = tmp_path / "short.png"
    path.write_bytes(short)
    with pytest.raises(MosaicistError, match="short.png: cannot read target image: truncated"):
        read_target(path)
    with pytest.raises(ImageReadError, match="truncated"):
        decode_tile_bytes(short, 8)
    with pytest.raises(ImageReadError, match="truncated"):
        read_original(path, 8)


@pytest.mark.parametrize("channels", [3, 4])
def test_a_whole_png_with_a_black_last_row_still_reads(tmp_path, channels):
    picture = gradient(40, 30)
    picture[-2:] = 0
    if channels == 4:
        picture = np.dstack([picture, np.full((30, 40), 255, np.uint8)])
        picture[-1] = 0  # transparent black: white, as ever
    path = tmp_path / "whole.png"
    path.write_bytes(png_of_rows(picture, 30))
    read = read_target(path)
    assert read.shape == (30, 40, 3)
    assert (read[-2] == 0).all()
    assert read_original(path, 8).shape == (8, 8, 3)
    assert decode_tile_bytes(path.read_bytes(), 8).shape == (8, 8, 3)


D50 = (0.9642, 1.0, 0.8249)


def s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def grey_profile(gamma: float = 1.0) -> bytes:
    """A minimal ICC v2 greyscale profile (one tone curve): gamma 1 lifts a mid-grey 128 to 188."""
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    text = b"grey test"
    tags = [(b"desc", b"desc\0\0\0\0" + struct.pack(">I", len(text) + 1) + text + b"\0"
             + b"\0" * 79),
            (b"wtpt", b"XYZ \0\0\0\0" + b"".join(s15(value) for value in D50)),
            (b"kTRC", curve), (b"cprt", b"text\0\0\0\0none\0")]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for name, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += name + struct.pack(">II", offset + len(data), len(body))
        data += body
    header = (struct.pack(">I", offset + len(data)) + b"none" + b"\x02\x10\0\0" + b"mntr"
              + b"GRAY" + b"XYZ " + b"\0" * 12 + b"acsp" + b"\0" * 28
              + b"".join(s15(value) for value in D50))
    return header.ljust(128, b"\0") + struct.pack(">I", len(tags)) + table + data


def grey_files(tmp_path) -> dict[str, Path]:
    """The same mid-grey picture with the same grey profile, as each kind of grey file."""
    grey = np.full((16, 16), 128, np.uint8)
    profile = grey_profile()
    pictures = {
        "grey.png": (Image.fromarray(grey, "L"), {}),
        "grey_alpha.png": (Image.fromarray(np.dstack([grey, np.full_like(grey, 255)]), "LA"),
                           {}),
        "grey16.png": (Image.fromarray(grey.astype(np.uint16) * 257), {}),
        "grey16.tif": (Image.fromarray(grey.astype(np.uint16) * 257), {}),
        # A colour key no pixel has: the picture is opaque all the same.
        "grey_keyed.png": (Image.fromarray(grey, "L"), {"transparency": 7}),
    }
    paths = {}
    for name, (image, extra) in pictures.items():
        paths[name] = tmp_path / name
        image.save(paths[name], icc_profile=profile, **extra)
    return paths


def test_a_grey_profile_is_applied_to_every_kind_of_grey_picture(tmp_path):
    # Converted, an 8-bit grey picture went through its grey profile (128 -> 188 here);
    # the same picture with alpha, of 16 bits or with a colour key kept 128: a scan's
    # 16-bit and 8-bit copies made different tiles and targets.
    for name, path in grey_files(tmp_path).items():
        target = read_target(path, colour_profiles="convert")
        assert np.abs(target.astype(int) - 188).max() <= 1, name
        tile = decode_tile_bytes(path.read_bytes(), 8, colour_profiles="convert")
        assert np.abs(tile.astype(int) - 188).max() <= 1, name
        original = read_original(path, 8, colour_profiles="convert")
        assert np.abs(original.astype(int) - 188).max() <= 1, name
        # Ignored (--preset seed), the stored values as ever.
        assert (read_target(path) == 128).all(), name
        assert converts_profile(path), name


def float_rgb_tiff(path: Path) -> None:
    tifffile.imwrite(path, gradient(12, 10).astype(np.float32) / 255, photometric="rgb")


#: Files that are no picture Pillow reads, and what the refusal says of each.
NOT_PICTURES = {
    "drawing.svg": (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" '
                    b'width="10" height="10"/>', "an SVG drawing"),
    "drawing.svg.png": (b'\xef\xbb\xbf  <svg xmlns="http://www.w3.org/2000/svg"/>',
                        "an SVG drawing"),
    "page.pdf": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "a PDF document"),
    "photo.jxl": (b"\xff\x0a\xfa\x7f\x01\x90\x08\x06\x01\x00\x48\x01", "a JPEG XL picture"),
    "boxed.jxl": (b"\0\0\0\x0cJXL \r\n\x87\n\0\0\0\x14ftypjxl ", "a JPEG XL picture"),
    "empty.jpg": (b"", "an empty file"),
    # A mosaic written as Deep Zoom, given to score (its picture lies in its tiles).
    "mural.dzi": (b'<?xml version="1.0" encoding="UTF-8"?>\n<Image xmlns="http://schemas.'
                  b'microsoft.com/deepzoom/2008" Format="jpeg" Overlap="1" TileSize="254">'
                  b'\n  <Size Width="256" Height="256"/>\n</Image>\n', "a Deep Zoom descriptor"),
}


@pytest.mark.parametrize("name", sorted(NOT_PICTURES))
def test_files_that_are_no_picture_are_refused_saying_what_they_are(tmp_path, name):
    # All were "not a readable image", an SVG or a PDF as a damaged picture would be.
    data, said = NOT_PICTURES[name]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(MosaicistError, match=f"{name}: cannot read target image: not a "
                                             f"readable image \\({said}"):
        read_target(path)
    with pytest.raises(MosaicistError, match=f"not a readable image \\({said}"):
        target_size(path)
    with pytest.raises(ImageReadError, match=f"^not a readable image \\({said}"):
        decode_tile_bytes(data, 8)
    with pytest.raises(ImageReadError, match=f"^not a readable image \\({said}"):
        read_original(path, 8)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow's, of the damaged TIFF
def test_a_tiff_of_samples_pillow_cannot_read_says_which(tmp_path):
    path = tmp_path / "hdr.tif"
    float_rgb_tiff(path)
    said = ("not a readable image (a TIFF of 32-bit floating-point samples, 3 a pixel: "
            "save it with 8- or 16-bit integer samples)")
    with pytest.raises(MosaicistError, match=re.escape(f"hdr.tif: cannot read target image: "
                                                       f"{said}")):
        read_target(path)
    with pytest.raises(ImageReadError, match=re.escape(said)):
        decode_tile_bytes(path.read_bytes(), 8)
    with pytest.raises(ImageReadError, match=re.escape(said)):
        read_original(path, 8)
    # A damaged TIFF says only what it always said.
    path.write_bytes(b"MM\0*\0\0\0\x08\0\x01\x01\0\0\x03\0\0\0\x01\0\x10\0\0")
    with pytest.raises(ImageReadError, match=r"^not a readable image$"):
        read_original(path, 8)


def png_with_text(picture: np.ndarray, before: list[bytes], after: list[bytes]) -> bytes:
    """An 8-bit RGB PNG with the chunks ``before`` its pixels and ``after`` them."""
    height, width = picture.shape[:2]
    rows = b"".join(b"\0" + row.tobytes() for row in picture)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + b"".join(before)
            + png_chunk(b"IDAT", zlib.compress(rows)) + b"".join(after)
            + png_chunk(b"IEND", b""))


def test_a_png_with_metadata_over_a_megabyte_is_read(tmp_path):
    # Pillow refuses a compressed text chunk or colour profile that inflates past 1 MB
    # ("Decompressed data too large for PngImagePlugin.MAX_TEXT_CHUNK"), where OpenCV
    # (the seed's reader), browsers and editors read the picture: a Photoshop XMP
    # packet with its history, a large profile.
    picture = gradient(12, 10)
    big = zlib.compress(b" " * (3 << 20))
    data = png_with_text(picture,
                         [png_chunk(b"zTXt", b"Comment\0\0" + big)],
                         [png_chunk(b"iTXt", b"XML:com.adobe.xmp\0\1\0\0\0" + big)])
    path = tmp_path / "metadata.png"
    path.write_bytes(data)
    assert (read_target(path) == picture).all()
    assert target_size(path) == (12, 10)
    assert decode_tile_bytes(data, 8).shape == (8, 8, 3)
    assert read_original(path, 8).shape == (8, 8, 3)
    # Pillow's own limit is as it was once the reads are done.
    assert PngImagePlugin.MAX_TEXT_CHUNK == ImageFile.SAFEBLOCK


def test_a_png_whose_text_inflates_past_its_bound_is_refused_in_plain_words(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(imaging, "PNG_TEXT_CHUNK_BYTES", 2 << 20)  # 64 MB: slow to test
    bomb = zlib.compress(b"\0" * (3 << 20), 9)
    data = png_with_text(gradient(12, 10), [png_chunk(b"zTXt", b"Comment\0\0" + bomb)], [])
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    said = "its text chunks or colour profile inflate to more than 2 MB"
    with pytest.raises(MosaicistError, match=f"bomb.png: cannot read target image: {said}"):
        read_target(path)
    with pytest.raises(ImageReadError, match=f"^{said}"):
        decode_tile_bytes(data, 8)
