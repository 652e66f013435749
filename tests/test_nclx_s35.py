"""Colour spaces declared by ITU-T H.273 codes (an ``nclx`` box: HEIC and AVIF phone photos)
converted to sRGB as an ICC profile is; a JPEG's ICC chunks read as Pillow reads them."""

from __future__ import annotations

import io
import logging
import struct

import numpy as np
import pytest
from PIL import Image, features

from mosaicist import _profiles
from mosaicist.imaging import (
    converts_profile,
    decode_tile_bytes,
    picture_array,
    read_original,
    read_target,
    to_rgb,
)

# Display P3 and BT.2020 (D65 white), and sRGB's own primaries: linear RGB -> XYZ.
_D65 = (0.3127, 0.3290)
_SRGB_PRIMARIES = ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06))
_P3_PRIMARIES = ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060))
_BT2020_PRIMARIES = ((0.708, 0.292), (0.170, 0.797), (0.131, 0.046))


def _to_xyz(primaries) -> np.ndarray:
    def xyz(x, y):
        return np.array([x / y, 1.0, (1 - x - y) / y])

    columns = np.stack([xyz(*xy) for xy in primaries], axis=1)
    return columns * np.linalg.solve(columns, xyz(*_D65))


def _srgb_decode(values: np.ndarray) -> np.ndarray:
    v = values / 255.0
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _bt709_decode(values: np.ndarray) -> np.ndarray:
    """BT.709's camera curve inverted (what the stored values of transfer 1 mean)."""
    v = values / 255.0
    return np.where(v < 4.5 * 0.018053968510807807,
                    v / 4.5, ((v + 0.0992968268094429) / 1.0992968268094429) ** (1 / 0.45))


def _srgb_encode(linear: np.ndarray) -> np.ndarray:
    v = np.clip(linear, 0.0, 1.0)
    encoded = np.where(v <= 0.0031308, 12.92 * v, 1.055 * v ** (1 / 2.4) - 0.055)
    return encoded * 255.0


def _reference(stored: np.ndarray, primaries, decode=_srgb_decode) -> np.ndarray:
    """``stored`` pixels of a D65 space taken to sRGB by hand (no white to adapt)."""
    matrix = np.linalg.inv(_to_xyz(_SRGB_PRIMARIES)) @ _to_xyz(primaries)
    linear = decode(stored.astype(np.float64)) @ matrix.T
    return _srgb_encode(linear)


def _patches() -> np.ndarray:
    """An 8x8-patch picture: saturated colours (where the gamuts differ), greys, darks."""
    colours = [(230, 30, 30), (30, 200, 40), (20, 40, 210), (128, 128, 128),
               (250, 250, 250), (12, 8, 20), (200, 160, 90), (60, 90, 120)]
    return np.repeat(np.repeat(np.array(colours, np.uint8)[None], 8, 0), 8, 1)


_RED = np.full((16, 16, 3), (230, 30, 30), np.uint8)


def _within(got: np.ndarray, expected: np.ndarray, levels: float) -> None:
    difference = np.abs(got.astype(np.float64) - expected)
    assert difference.max() <= levels, difference.max()


def _picture(nclx: dict | None, pixels: np.ndarray | None = None) -> Image.Image:
    image = Image.fromarray(_patches() if pixels is None else pixels)
    if nclx is not None:
        image.info["nclx_profile"] = nclx
    return image


def _nclx(primaries: int, transfer: int) -> dict:
    return {"color_primaries": primaries, "transfer_characteristics": transfer,
            "matrix_coefficients": 6, "full_range_flag": 1}


@pytest.fixture
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(_profiles, "_nclx_warned", False)


@pytest.mark.parametrize(("primaries", "transfer", "space", "decode"), [
    (12, 13, _P3_PRIMARIES, _srgb_decode),  # Display P3: the phones' own
    (9, 13, _BT2020_PRIMARIES, _srgb_decode),
    (9, 1, _BT2020_PRIMARIES, _bt709_decode),  # BT.709's curve, its exact inverse
    (1, 6, _SRGB_PRIMARIES, _bt709_decode),  # sRGB's colours, BT.601's curve
    (12, 8, _P3_PRIMARIES, lambda values: values / 255.0),  # linear
])
def test_nclx_codes_convert_as_the_colour_space_says(primaries, transfer, space, decode):
    # Such a picture was taken as sRGB: a P3 photo came out dull against an ICC-tagged one.
    stored = _patches()
    converted = np.asarray(to_rgb(_picture(_nclx(primaries, transfer)), "convert"))
    _within(converted, _reference(stored, space, decode), 1.5)
    assert not np.array_equal(converted, stored)
    # Exactly as a picture carrying that profile as ICC (the same transform, cached).
    profile = _profiles.profile_of(_picture(_nclx(primaries, transfer)))
    assert profile is not None
    tagged = Image.fromarray(stored)
    tagged.info["icc_profile"] = profile
    assert np.array_equal(np.asarray(to_rgb(tagged, "convert")), converted)
    # Ignored, the stored values stay.
    assert np.array_equal(np.asarray(to_rgb(_picture(_nclx(primaries, transfer)), "ignore")),
                          stored)


def test_srgb_and_unspecified_codes_keep_the_pixels_and_an_icc_profile_wins():
    for codes in [(1, 13), (2, 2), (2, 13), (1, 2), (0, 0)]:
        assert _profiles.profile_of(_picture(_nclx(*codes))) is None, codes
    assert _profiles.profile_of(_picture({"something": "else"})) is None
    stored = _patches()
    assert np.array_equal(np.asarray(to_rgb(_picture(_nclx(2, 2)), "convert")), stored)
    # The ICC profile of a picture with both is the one applied (libheif's and libavif's
    # order): here sRGB's own, so nothing moves.
    both = _picture(_nclx(12, 13))
    both.info["icc_profile"] = _profiles._nclx_icc(1, 13)
    assert np.array_equal(np.asarray(to_rgb(both, "convert")), stored)


def test_hdr_transfers_are_left_unconverted_with_one_warning(caplog, fresh_warnings):
    stored = _patches()
    with caplog.at_level(logging.WARNING, logger="mosaicist._profiles"):
        for transfer in (16, 18, 16):
            picture = _picture(_nclx(9, transfer))
            assert _profiles.profile_of(picture) is None
            assert np.array_equal(np.asarray(to_rgb(picture, "convert")), stored)
        assert np.array_equal(np.asarray(to_rgb(_picture(_nclx(12, 13)), "convert")).shape,
                              stored.shape)
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1, warnings
    assert "PQ" in warnings[0] and "without colour management" in warnings[0]
    assert "_" not in warnings[0]  # words for users, no Python names


def test_unknown_codes_warn_once_and_ignore_warns_not(caplog, fresh_warnings):
    with caplog.at_level(logging.WARNING, logger="mosaicist._profiles"):
        to_rgb(_picture(_nclx(12, 16)), "ignore")
        assert not caplog.records  # nothing was to be converted
        to_rgb(_picture(_nclx(10, 13)), "convert")  # XYZ primaries
    assert len(caplog.records) == 1 and "code 10" in caplog.records[0].getMessage()


def test_picture_array_converts_a_callers_nclx_picture():
    stored = _patches()
    got = picture_array(_picture(_nclx(12, 13)), colour_profiles="convert")
    _within(got, _reference(stored, _P3_PRIMARIES), 1.5)


def _p3_heic(path, pixels: np.ndarray, primaries: int = 12, transfer: int = 13):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.from_pillow(Image.fromarray(pixels)).save(
        str(path), quality=-1, color_primaries=primaries, transfer_characteristics=transfer,
        matrix_coefficients=6, full_range_flag=1)
    return path


def test_a_p3_heic_is_converted_on_every_path(tmp_path):
    pixels = _patches()
    path = _p3_heic(tmp_path / "phone.heic", pixels)
    stored = read_target(path, colour_profiles="ignore")
    expected = _reference(stored, _P3_PRIMARIES)
    _within(read_target(path, colour_profiles="convert"), expected, 1.5)
    # Tiles and originals (of a flat red: no edges resized).
    red = _p3_heic(tmp_path / "red.heic", _RED)
    expected = _reference(read_target(red, colour_profiles="ignore"), _P3_PRIMARIES)
    tile = decode_tile_bytes(red.read_bytes(), 8, colour_profiles="convert")
    original = read_original(red, 8, colour_profiles="convert")
    for got in (tile, original):
        _within(got, expected[:8, :8], 1.5)
    assert converts_profile(path) is True  # an index made ignoring profiles decodes it again
    plain = _p3_heic(tmp_path / "srgb.heic", pixels, primaries=1)
    assert converts_profile(plain) is False
    assert np.array_equal(read_target(plain, colour_profiles="convert"),
                          read_target(plain, colour_profiles="ignore"))


def _avif_with_primaries(pixels: np.ndarray, primaries: int) -> bytes:
    """An AVIF whose colour box declares ``primaries`` (Pillow writes BT.709's: patched)."""
    if not features.check_module("avif"):
        pytest.skip("Pillow without AVIF")
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "AVIF", quality=100)
    data = bytearray(out.getvalue())
    box = data.find(b"colrnclx")
    assert box > 0 and data.count(b"colrnclx") == 1
    data[box + 8:box + 10] = struct.pack(">H", primaries)
    return bytes(data)


def test_a_p3_avif_is_converted_on_every_path(tmp_path):
    # Pillow's AVIF reader exposes no nclx codes: they were never looked at.
    path = tmp_path / "phone.avif"
    path.write_bytes(_avif_with_primaries(_patches(), 12))
    stored = read_target(path, colour_profiles="ignore")
    expected = _reference(stored, _P3_PRIMARIES)
    _within(read_target(path, colour_profiles="convert"), expected, 1.5)
    red = _avif_with_primaries(_RED, 12)
    expected = _reference(decode_tile_bytes(red, 8), _P3_PRIMARIES)
    _within(decode_tile_bytes(red, 8, colour_profiles="convert"), expected, 1.5)
    assert converts_profile(path) is True
    plain = tmp_path / "srgb.avif"
    plain.write_bytes(_avif_with_primaries(_patches(), 1))
    assert converts_profile(plain) is False


def _jpeg_with_profile_after_frame(profile: bytes, count: int = 1) -> bytes:
    """A JPEG whose one ICC chunk (declaring ``count`` chunks) lies after its frame header."""
    out = io.BytesIO()
    Image.fromarray(_RED).save(out, "JPEG", quality=95)
    data = out.getvalue()
    frame = data.index(b"\xff\xc0")
    length = int.from_bytes(data[frame + 2:frame + 4], "big")
    payload = b"ICC_PROFILE\x00" + bytes([1, count]) + profile
    segment = b"\xff\xe2" + struct.pack(">H", len(payload) + 2) + payload
    after = frame + 2 + length
    return data[:after] + segment + data[after:]


def _jpeg_with_profile_before_frame(profile: bytes, count: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(_RED).save(out, "JPEG", quality=95)
    data = out.getvalue()
    payload = b"ICC_PROFILE\x00" + bytes([1, count]) + profile
    return data[:2] + b"\xff\xe2" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


@pytest.mark.parametrize("make", [
    _jpeg_with_profile_after_frame,  # after SOF: Pillow takes no profile
    lambda profile: _jpeg_with_profile_before_frame(profile, 2),  # 1 chunk of 2: dropped
])
def test_a_jpeg_tile_reads_the_profile_pillow_reads(tmp_path, make):
    # The fast tile path applied a profile that Pillow ignores for targets and originals:
    # a photo's tile and its original drawn larger came out in different colours.
    profile = _profiles._nclx_icc(12, 13)
    data = make(profile)
    with Image.open(io.BytesIO(data)) as image:
        assert not image.info.get("icc_profile")
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    tile = decode_tile_bytes(data, 16, colour_profiles="convert")
    original = read_original(path, 16, colour_profiles="convert")
    assert np.abs(tile.astype(int) - original.astype(int)).max() <= 2
    assert np.abs(tile.astype(int) - decode_tile_bytes(data, 16).astype(int)).max() <= 2
    assert _profiles.jpeg_profile(data) is None
    assert converts_profile(path) is False


def test_a_jpeg_profile_before_its_frame_is_still_read():
    profile = _profiles._nclx_icc(12, 13)
    data = _jpeg_with_profile_before_frame(profile, 1)
    assert _profiles.jpeg_profile(data) == profile
    with Image.open(io.BytesIO(data)) as image:
        assert image.info["icc_profile"] == profile


def test_a_p3_avif_upload_is_converted_as_the_library_converts_it():
    # The uploads' reader opened the file with Pillow alone, which exposes no nclx codes.
    from mosaicist.studio._uploads import decode_upload

    data = _avif_with_primaries(_RED, 12)
    picture, kind = decode_upload(data, "phone.avif", formats=("AVIF",),
                                  colour_profiles="convert")
    expected = _reference(decode_tile_bytes(data, 8), _P3_PRIMARIES)
    assert kind == "AVIF"
    # A flat red: every pixel as the library's reader converts it.
    _within(np.asarray(picture), np.broadcast_to(expected[0, 0], np.asarray(picture).shape), 1.5)
