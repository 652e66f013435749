"""Decoding of every kind of odd image file into square RGB thumbnails."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import bomb_png, gradient, make_odd_folder
from PIL import Image

from mosaicist import imaging
from mosaicist.errors import MosaicistError
from mosaicist.imaging import (
    ImageReadError,
    decode_tile_bytes,
    read_target,
    square_thumbnail,
    to_rgb,
)


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    return make_odd_folder(tmp_path_factory.mktemp("odd"))


def tile(path, tile_px=8):
    return decode_tile_bytes(path.read_bytes(), tile_px).astype(int)


def close(actual, expected, tolerance):
    assert actual.shape == np.shape(expected)
    assert np.abs(actual.astype(int) - np.asarray(expected, int)).max() <= tolerance


@pytest.mark.parametrize(
    "name, tolerance",
    [
        ("jpeg/plain.jpg", 6),
        ("jpeg/progressive.jpg", 6),
        ("jpeg/cmyk.jpg", 8),
        ("png/rgb.png", 0),
        ("png/palette.png", 12),
        ("other/img.webp", 0),
        ("other/img.bmp", 0),
        ("other/img.tif", 0),
    ],
)
def test_formats_match_the_picture(odd, name, tolerance):
    expected = square_thumbnail(Image.fromarray(gradient(40, 40)), 8)
    close(tile(odd / name), expected, tolerance)


def test_exif_orientation_6_is_applied(odd):
    rotated = Image.fromarray(gradient(40, 24)).transpose(Image.Transpose.ROTATE_270)
    expected = square_thumbnail(rotated, 8)
    unrotated = square_thumbnail(Image.fromarray(gradient(40, 24)), 8)
    actual = tile(odd / "jpeg/exif6.jpg")
    close(actual, expected, 6)
    assert np.abs(actual - unrotated).max() > 100
    assert read_target(odd / "jpeg/exif6.jpg").shape == (40, 24, 3)


def test_greyscale_jpeg_is_replicated(odd):
    actual = tile(odd / "jpeg/grey.jpg")
    assert (actual[..., 0] == actual[..., 1]).all() and (actual[..., 1] == actual[..., 2]).all()
    grey = np.asarray(Image.fromarray(gradient(40, 40)).convert("L").resize((8, 8)), int)
    assert np.abs(actual[..., 0] - grey).max() <= 8


def test_transparency_is_composited_over_white(odd):
    assert (tile(odd / "png/deep/rgba.png") == 255).all()
    assert (tile(odd / "png/deep/la.png") == 255).all()
    palette = tile(odd / "png/palette_t.png", 16)
    assert palette[0, 0].tolist() == [0, 0, 255]
    assert (palette.reshape(-1, 3)[1:] == 255).all()
    assert read_target(odd / "png/deep/rgba.png").min() == 255


@pytest.mark.parametrize("name", ["png/i16.png", "other/img16.tif"])
def test_16_bit_greyscale_is_scaled(odd, name):
    actual = tile(odd / name, 16)
    assert (actual[:8] == 0).all() and (actual[8:] == 255).all()
    target = read_target(odd / name)
    assert target.dtype == np.uint8 and target[0, 0].tolist() == [0, 0, 0]
    assert target[15, 0].tolist() == [255, 255, 255]


def test_bilevel_and_mode_conversions():
    bilevel = Image.fromarray(np.eye(4, dtype=bool))
    assert np.asarray(to_rgb(bilevel))[:, :, 0].tolist() == (np.eye(4) * 255).tolist()
    wide = Image.fromarray(np.full((2, 2), 1000, np.int32), "I")
    assert np.asarray(to_rgb(wide))[0, 0].tolist() == [4, 4, 4]
    floats = Image.fromarray(np.full((2, 2), 0.5, np.float32), "F")
    assert np.asarray(to_rgb(floats))[0, 0].tolist() == [128, 128, 128]
    assert to_rgb(Image.new("CMYK", (2, 2), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)


def test_animated_gif_uses_first_frame(odd):
    assert (tile(odd / "other/anim.gif") == [255, 0, 0]).all()


def test_non_square_is_centre_cropped(odd):
    assert (tile(odd / "other/wide.png") == 255).all()
    tall = np.zeros((30, 10, 3), np.uint8)
    tall[10:20] = 255
    assert (square_thumbnail(Image.fromarray(tall), 5) == 255).all()


@pytest.mark.parametrize(
    "name, reason",
    [
        ("bad_truncated.jpg", "truncated"),
        ("bad_empty.png", "not a readable image"),
        ("bad_text.jpg", "not a readable image"),
        ("bad_bomb.png", "limit"),
    ],
)
def test_bad_files_raise_image_read_error(odd, name, reason):
    with pytest.raises(ImageReadError, match=reason):
        decode_tile_bytes((odd / name).read_bytes(), 8)


@pytest.mark.parametrize("name", ["jpeg/plain.jpg", "png/rgb.png", "jpeg/exif6.jpg"])
def test_pixel_limit_is_enforced(odd, monkeypatch, name):
    monkeypatch.setattr(imaging, "TILE_MAX_PIXELS", 500)
    with pytest.raises(ImageReadError, match="limit"):
        decode_tile_bytes((odd / name).read_bytes(), 8)


def test_pixel_limit_is_restored(odd):
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageReadError):
        decode_tile_bytes(bomb_png(60000, 60000), 8)
    assert Image.MAX_IMAGE_PIXELS == before


def test_read_target_errors(tmp_path, odd):
    with pytest.raises(MosaicistError, match="not found"):
        read_target(tmp_path / "missing.png")
    with pytest.raises(MosaicistError, match="directory"):
        read_target(tmp_path)
    for name in ("bad_text.jpg", "bad_empty.png", "bad_truncated.jpg"):
        with pytest.raises(MosaicistError, match=name):
            read_target(odd / name)
    big = tmp_path / "bomb.png"
    big.write_bytes(bomb_png(60000, 60000))
    with pytest.raises(MosaicistError, match="bomb.png"):
        read_target(big)
