"""Embedded ICC profiles: pictures in a wide-gamut space are decoded into sRGB."""

from __future__ import annotations

import io
import sqlite3
import struct

import numpy as np
import pytest
from PIL import Image, ImageCms

from mosaicist import _profiles
from mosaicist.imaging import decode_tile_bytes, picture_array, read_original, read_target
from mosaicist.library import TileLibrary
from mosaicist.sources.folder import FolderSource

# Display P3's primaries and white (CIE xy).
_P3 = ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060))
_D65 = (0.3127, 0.3290)
_D50_XYZ = np.array([0.9642, 1.0, 0.8249])


def _xyz(x: float, y: float) -> np.ndarray:
    return np.array([x / y, 1.0, (1 - x - y) / y])


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _matrix_profile(primaries=_P3, gamma: float = 2.2) -> bytes:
    """A minimal ICC v2 RGB matrix/TRC profile (display class), colorants adapted to D50."""
    columns = np.stack([_xyz(*xy) for xy in primaries], axis=1)
    scale = np.linalg.solve(columns, _xyz(*_D65))
    to_xyz = columns * scale
    bradford = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367],
                         [0.0389, -0.0685, 1.0296]])
    cone = np.diag((bradford @ _D50_XYZ) / (bradford @ _xyz(*_D65)))
    adapted = np.linalg.inv(bradford) @ cone @ bradford @ to_xyz

    def xyz_tag(values) -> bytes:
        return b"XYZ \0\0\0\0" + b"".join(_s15(v) for v in values)

    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    text = b"P3-like test"
    tags = [(b"desc", b"desc\0\0\0\0" + struct.pack(">I", len(text) + 1) + text + b"\0"
             + b"\0" * 12 + b"\0" * 67),
            (b"wtpt", xyz_tag(_D50_XYZ)), (b"rXYZ", xyz_tag(adapted[:, 0])),
            (b"gXYZ", xyz_tag(adapted[:, 1])), (b"bXYZ", xyz_tag(adapted[:, 2])),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve),
            (b"cprt", b"text\0\0\0\0none\0")]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for name, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += name + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"none" + b"\x02\x10\0\0" + b"mntr" + b"RGB "
              + b"XYZ " + b"\0" * 12 + b"acsp" + b"\0" * 4 + b"\0" * 4 + b"\0" * 8
              + b"\0" * 8 + b"\0" * 4 + b"".join(_s15(v) for v in _D50_XYZ) + b"\0" * 4)
    header += b"\0" * (128 - len(header))
    return header + struct.pack(">I", len(tags)) + table + data


_PROFILE = _matrix_profile()


def _srgb_colours() -> np.ndarray:
    """A 32x32 picture of flat patches, saturated colours among them (where gamuts differ)."""
    rng = np.random.default_rng(5)
    patches = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    patches[0, 0], patches[0, 1], patches[0, 2] = (220, 30, 30), (30, 200, 40), (20, 40, 210)
    return np.repeat(np.repeat(patches, 8, axis=0), 8, axis=1)


def _in_p3(srgb: np.ndarray) -> np.ndarray:
    """``srgb``'s pixels as the P3-like profile stores them."""
    transform = ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")),
        ImageCms.ImageCmsProfile(io.BytesIO(_PROFILE)), "RGB", "RGB",
        renderingIntent=1)
    return np.asarray(ImageCms.applyTransform(Image.fromarray(srgb), transform))


def _encoded(pixels: np.ndarray, fmt: str, profile: bytes | None, **options) -> bytes:
    out = io.BytesIO()
    extra = {"icc_profile": profile} if profile else {}
    Image.fromarray(pixels).save(out, fmt, **extra, **options)
    return out.getvalue()


def _error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_profile_is_not_srgb():
    """The fixture works: its stored values are far from the sRGB picture's."""
    srgb = _srgb_colours()
    assert _error(_in_p3(srgb), srgb) > 5


@pytest.mark.parametrize(("fmt", "options", "tolerance"), [
    ("PNG", {}, 1.5), ("JPEG", {"quality": 95, "subsampling": 0}, 3.0), ("TIFF", {}, 1.5),
    ("WEBP", {"lossless": True}, 1.5)])
def test_tiles_are_decoded_into_srgb(fmt, options, tolerance):
    srgb = _srgb_colours()
    data = _encoded(_in_p3(srgb), fmt, _PROFILE, **options)
    tile = decode_tile_bytes(data, 32)
    assert _error(tile, srgb) < tolerance
    # Without the profile the same values are taken as sRGB, as before.
    plain = decode_tile_bytes(_encoded(_in_p3(srgb), fmt, None, **options), 32)
    assert _error(plain, srgb) > 5


def test_targets_and_originals_are_decoded_into_srgb(tmp_path):
    srgb = _srgb_colours()
    path = tmp_path / "p3.png"
    path.write_bytes(_encoded(_in_p3(srgb), "PNG", _PROFILE))
    assert _error(read_target(path), srgb) < 1.5
    with Image.open(path) as image:
        assert _error(picture_array(image), srgb) < 1.5
    assert _error(read_original(path, 32), srgb) < 1.5


def test_exif_jpeg_and_grey_picture(tmp_path):
    """The Pillow path (a JPEG with EXIF) too; an RGB profile on a grey picture is left alone."""
    srgb = _srgb_colours()
    exif = Image.Exif()
    exif[0x0112] = 1
    data = _encoded(_in_p3(srgb), "JPEG", _PROFILE, quality=95, subsampling=0,
                     exif=exif.tobytes())
    assert _error(decode_tile_bytes(data, 32), srgb) < 3.0
    grey = np.full((16, 16), 90, np.uint8)
    out = io.BytesIO()
    Image.fromarray(grey, "L").save(out, "PNG", icc_profile=_PROFILE)
    # Replicated, then the RGB profile applied: grey stays grey (P3 and sRGB share D65).
    tile = decode_tile_bytes(out.getvalue(), 16)
    assert np.ptp(tile.astype(int), axis=2).max() <= 1


def test_srgb_profile_keeps_the_pixels_exactly():
    srgb = _srgb_colours()
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    tagged = decode_tile_bytes(_encoded(srgb, "PNG", profile), 32)
    assert np.array_equal(tagged, decode_tile_bytes(_encoded(srgb, "PNG", None), 32))


def test_damaged_profile_decodes_as_before(caplog):
    srgb = _srgb_colours()
    damaged = _PROFILE[:128] + b"\xff" * 64  # a header, then garbage where tags should be
    before = _profiles.skipped_profiles()
    tiles = [decode_tile_bytes(_encoded(srgb, "PNG", damaged), 32) for _ in range(3)]
    for tile in tiles:
        assert np.array_equal(tile, decode_tile_bytes(_encoded(srgb, "PNG", None), 32))
    assert _profiles.skipped_profiles() == before + 1  # one profile, however many files


def test_jpeg_profile_is_read_from_the_header():
    data = _encoded(_srgb_colours(), "JPEG", _PROFILE)
    assert _profiles.jpeg_profile(data) == _PROFILE
    assert _profiles.jpeg_profile(_encoded(_srgb_colours(), "JPEG", None)) is None


def test_index_of_an_older_decode_is_decoded_again(tmp_path):
    """Tiles indexed before profiles were applied (no ``decode`` meta) are decoded again."""
    folder = tmp_path / "photos"
    folder.mkdir()
    srgb = _srgb_colours()
    (folder / "p3.png").write_bytes(_encoded(_in_p3(srgb), "PNG", _PROFILE))
    (folder / "plain.png").write_bytes(_encoded(srgb, "PNG", None))
    cache = tmp_path / "cache"

    def opened():
        return TileLibrary.open(FolderSource(folder, workers=1), 16, cache_dir=cache)

    assert opened().stats.decoded == 2
    assert opened().stats.decoded == 0
    [manifest] = cache.rglob("manifest.sqlite")
    with sqlite3.connect(manifest) as connection:
        connection.execute("DELETE FROM meta WHERE name = 'decode'")
    again = opened()
    assert again.stats.decoded == 2 and again.stats.tiles == 2
    assert opened().stats.decoded == 0
