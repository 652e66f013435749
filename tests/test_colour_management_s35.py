"""Hostile colour management and decoding (session 35): PNGs with a damaged ancillary chunk
before their pixels (a colour profile, a checksum) are read as libpng reads them."""

from __future__ import annotations

import io
import logging
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms
from test_profiles import _PROFILE

from mosaicist import _profiles
from mosaicist.errors import MosaicistError
from mosaicist.imaging import (
    converts_profile,
    decode_tile_bytes,
    read_original,
    read_target,
    target_size,
)


def _chunk(kind: bytes, body: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + body) if crc is None else crc
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def _png(image: Image.Image, extra: bytes) -> bytes:
    """``image`` as a PNG with the chunk(s) ``extra`` right after its header."""
    out = io.BytesIO()
    image.save(out, "PNG")
    data = out.getvalue()
    return data[:33] + extra + data[33:]


_PIXELS = np.random.default_rng(35).integers(0, 256, (12, 20, 3), dtype=np.uint8)
_ICCP = b"wide\0\0" + zlib.compress(_PROFILE)

# Each read by libpng (OpenCV, browsers) with the chunk dropped and a warning; Pillow refused
# the whole picture ("not a readable image", or "truncated image file" for the cHRM).
DAMAGED = {
    "profile checksum": _chunk(b"iCCP", _ICCP, crc=1),
    "profile compression method": _chunk(b"iCCP", b"wide\0\x01" + zlib.compress(_PROFILE)),
    "profile name unended": _chunk(b"iCCP", b"wide" + zlib.compress(_PROFILE)),
    "empty profile": _chunk(b"iCCP", b""),
    "text checksum": _chunk(b"tEXt", b"Comment\0hello", crc=7),
    "gamma checksum": _chunk(b"gAMA", struct.pack(">I", 45455), crc=7),
    "short chromaticities": _chunk(b"cHRM", b"\0" * 10),
}


@pytest.mark.parametrize("name", sorted(DAMAGED))
@pytest.mark.parametrize("colour_profiles", ["ignore", "convert"])
def test_a_png_with_a_damaged_ancillary_chunk_reads_its_pixels(tmp_path, name, colour_profiles):
    data = _png(Image.fromarray(_PIXELS), DAMAGED[name])
    path = tmp_path / "damaged.png"
    path.write_bytes(data)
    assert target_size(path) == (20, 12)
    assert np.array_equal(read_target(path, colour_profiles=colour_profiles), _PIXELS)
    tile = decode_tile_bytes(data, 12, colour_profiles=colour_profiles)
    assert np.array_equal(tile, _PIXELS[:, 4:16])
    assert np.array_equal(read_original(path, 12, colour_profiles=colour_profiles),
                          _PIXELS[:, 4:16])
    assert converts_profile(path) is False


def test_a_sound_profile_after_a_damaged_chunk_is_still_applied(tmp_path):
    data = _png(Image.fromarray(_PIXELS), DAMAGED["text checksum"] + _chunk(b"iCCP", _ICCP))
    path = tmp_path / "wide.png"
    path.write_bytes(data)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    transform = ImageCms.buildTransform(ImageCms.ImageCmsProfile(io.BytesIO(_PROFILE)), srgb,
                                        "RGB", "RGB", renderingIntent=1, flags=0x2000)
    expected = np.asarray(ImageCms.applyTransform(Image.fromarray(_PIXELS), transform), int)
    assert np.abs(read_target(path, colour_profiles="convert") - expected).max() <= 1
    assert converts_profile(path) is True


def test_a_dropped_profile_is_left_unapplied_with_the_damaged_profile_warning(
        tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(_profiles, "_warned", False)
    path = tmp_path / "damaged.png"
    path.write_bytes(_png(Image.fromarray(_PIXELS), DAMAGED["profile checksum"]))
    before = _profiles.skipped_profiles()
    with caplog.at_level(logging.WARNING, logger="mosaicist._profiles"):
        read_target(path, colour_profiles="convert")
    assert _profiles.skipped_profiles() == before + 1
    assert "ICC colour profile is damaged" in caplog.text


def test_a_damaged_transparency_chunk_leaves_the_picture_opaque(tmp_path):
    palette = Image.fromarray(_PIXELS).quantize(16, dither=Image.Dither.NONE)
    stored = np.asarray(palette.convert("RGB"))
    out = io.BytesIO()
    palette.save(out, "PNG", transparency=0)
    data = out.getvalue()
    start = data.index(b"tRNS") - 4
    length = int.from_bytes(data[start:start + 4], "big")
    end = start + 12 + length
    data = data[:end - 4] + b"\0\0\0\0" + data[end:]  # its checksum broken
    path = tmp_path / "keyed.png"
    path.write_bytes(data)
    assert np.array_equal(read_target(path), stored)  # libpng drops it: no transparency


@pytest.mark.parametrize("damage", ["header checksum", "pixels cut"])
def test_damage_to_what_the_pixels_need_is_still_refused(tmp_path, damage):
    data = bytearray(_png(Image.fromarray(_PIXELS), DAMAGED["text checksum"]))
    if damage == "header checksum":
        data[29:33] = b"\0\0\0\0"  # the IHDR's
    else:
        data = data[:data.index(b"IDAT") + 20]
    path = tmp_path / "broken.png"
    path.write_bytes(bytes(data))
    with pytest.raises(MosaicistError, match="broken.png: cannot read target image"):
        read_target(path)


@pytest.mark.parametrize("name", ["profile checksum", "text checksum"])
def test_a_studio_upload_with_a_damaged_ancillary_chunk_reads_its_pixels(name):
    # The studio's uploads opened the file with Pillow alone, which refused it whole.
    from mosaicist.studio._uploads import decode_upload

    data = _png(Image.fromarray(_PIXELS), DAMAGED[name])
    picture, kind = decode_upload(data, "damaged.png")
    assert kind == "PNG" and np.array_equal(np.asarray(picture), _PIXELS)
