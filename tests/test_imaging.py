"""Decoding of every kind of odd image file into square RGB thumbnails."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import struct
import sys
import threading
import warnings
import zlib

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import bomb_png, gradient, make_odd_folder
from PIL import Image

from mosaicist import imaging
from mosaicist.cli import main
from mosaicist.errors import MosaicistError, OptionError
from mosaicist.imaging import (
    TARGET_MAX_PIXELS,
    ImageReadError,
    decode_tile_bytes,
    read_original,
    read_target,
    square_thumbnail,
    target_size,
    to_rgb,
)
from mosaicist.render._pictures import OriginalPictures, PixelBudget
from mosaicist.sources import open_source


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


def test_a_callers_pillow_image_is_turned_upright_as_its_file_is(odd):
    # make_mosaic(Image.open("portrait.jpg")) lay down where make_mosaic("portrait.jpg")
    # stood up: the caller's image kept its EXIF orientation unapplied.
    from mosaicist.imaging import picture_array

    with Image.open(odd / "jpeg/exif6.jpg") as image:
        pixels = picture_array(image)
        assert image.size == (40, 24)  # the caller's image itself is left as it was
    np.testing.assert_array_equal(pixels, read_target(odd / "jpeg/exif6.jpg"))
    upright = Image.fromarray(pixels)
    assert picture_array(upright).shape == (40, 24, 3)  # no orientation: as it is


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


# --------------------------------------------------------------------------- pixel limits


def jpeg_declaring(width: int, height: int) -> bytes:
    """A 2 KB JPEG whose frame header claims ``width x height`` pixels (its data is 64x48)."""
    encoded = io.BytesIO()
    Image.fromarray(gradient(64, 48)).save(encoded, "JPEG")
    data = bytearray(encoded.getvalue())
    frame = data.index(b"\xff\xc0")  # SOF0: length, precision, height, width
    data[frame + 5:frame + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_target_over_pillows_own_limit_is_sized_from_its_header(tmp_path):
    # 200 MP: over Pillow's default limit (179 MP), within ours (1.5 GP).
    path = tmp_path / "mural.png"
    path.write_bytes(bomb_png(20000, 10000))
    assert target_size(path) == (20000, 10000)
    assert target_size(path, TARGET_MAX_PIXELS) == (20000, 10000)


def test_target_over_the_limit_is_refused_in_one_line(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(60000, 60000))
    for read in (read_target, lambda where: target_size(where, TARGET_MAX_PIXELS)):
        with pytest.raises(OptionError) as caught:
            read(path)
        message = str(caught.value)
        assert "\n" not in message and "bomb.png" in message
        assert "60,000x60,000 = 3,600,000,000 pixels" in message
        assert "1,500,000,000" in message and "max_target_pixels" in message
        assert caught.value.parameters == ("max_target_pixels",)


def test_the_target_limit_is_a_parameter(tmp_path):
    path = tmp_path / "small.png"
    Image.fromarray(gradient(40, 30)).save(path)
    with pytest.raises(OptionError, match="40x30 = 1,200 pixels"):
        read_target(path, max_pixels=1199)
    assert read_target(path, max_pixels=1200).shape == (30, 40, 3)


def test_cli_refuses_a_bomb_target_in_one_line_naming_the_flag(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(60000, 60000))
    result = CliRunner().invoke(main, ["make", str(path), "--tiles", str(tmp_path), "-q",
                                       "-o", str(tmp_path / "out.png")])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "bomb.png" in lines[0] and "--max-target-pixels" in lines[0]


def test_pillows_global_limit_is_not_in_the_way_and_is_restored(tmp_path, monkeypatch):
    # Pillow would refuse this 60x60 picture (over twice its limit); ours allows it.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = tmp_path / "p.png"
    Image.fromarray(gradient(60, 60)).save(path)
    assert decode_tile_bytes(path.read_bytes(), 8).shape == (8, 8, 3)
    assert read_target(path).shape == (60, 60, 3)
    assert read_original(path, 8).shape == (8, 8, 3)
    assert target_size(path) == (60, 60)
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_pillow_allowances_hold_in_their_own_thread_only(tmp_path, monkeypatch):
    # Pillow's limits were lifted for the whole process while any read of ours ran: an
    # application's own Image.open of a 400-megapixel bomb in another thread passed (402
    # of its tries while a make ran), and a limit it set meanwhile was put back after.
    import threading

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = tmp_path / "p.png"
    Image.fromarray(gradient(60, 60)).save(path)  # 3,600 pixels: over twice 1,000
    limit = imaging._PILLOW_LIMIT
    inside, outside = threading.Event(), threading.Event()
    seen = []

    def application():
        inside.wait(10)
        try:  # another thread of the process, while ours reads: Pillow's limit holds
            Image.open(path)
            seen.append("opened")
        except Image.DecompressionBombError:
            seen.append("refused")
        Image.MAX_IMAGE_PIXELS = 2000  # the application's own setting, meanwhile
        outside.set()

    thread = threading.Thread(target=application)
    thread.start()
    with limit.allowing(5000), limit.allowing(None):  # nested, as our reads are
        inside.set()
        outside.wait(10)
        with Image.open(path) as image:  # this thread: allowed
            assert image.size == (60, 60)
    thread.join()
    assert seen == ["refused"]
    assert Image.MAX_IMAGE_PIXELS == 2000  # kept, not put back
    with limit.allowing(3000):
        with pytest.raises(Image.DecompressionBombError):
            Image.open(path)  # over both our 3,000 and Pillow's 2,000
    Image.MAX_IMAGE_PIXELS = 1000
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)  # Pillow's own check, as it was


def test_a_jpeg_declaring_a_huge_picture_is_decoded_small(tmp_path):
    path = tmp_path / "bomb.jpg"
    path.write_bytes(jpeg_declaring(13000, 13000))
    decoded: list[int] = []

    def slot(pixels: int) -> contextlib.AbstractContextManager[None]:
        decoded.append(pixels)
        return contextlib.nullcontext()

    # Its data hold far fewer blocks than it declares: refused (not a grey tile) once
    # decoded, and that by DCT scaling to 1/8: 1625 x 1625, not 169 megapixels.
    if imaging.simplejpeg is None:
        assert read_original(path, 32, slot=slot).shape == (32, 32, 3)
    else:
        with pytest.raises(ImageReadError, match="its data end before its last block"):
            read_original(path, 32, slot=slot)
    assert decoded == [1625 * 1625]


@pytest.mark.parametrize("data", [jpeg_declaring(30000, 30000), bomb_png(15000, 14000)],
                         ids=["jpeg", "png"])
def test_originals_over_the_tile_limit_are_refused_by_name(tmp_path, data):
    folder = tmp_path / "tiles"
    folder.mkdir()
    Image.fromarray(gradient(16, 16)).save(folder / "a.png")
    source = open_source(str(folder), cache_dir=tmp_path / "c")
    name = "b.jpg" if data[:2] == b"\xff\xd8" else "b.png"
    (folder / name).write_bytes(data)
    with pytest.raises(ImageReadError, match="over the limit of 200,000,000 pixels"):
        read_original(folder / name, 32)
    pictures = OriginalPictures(source, ["a.png", name], 32, workers=2)
    with pytest.raises(MosaicistError, match=f"{name}: .*over the limit"):
        pictures.fetch(np.arange(2))


def test_pixel_budget_lets_a_large_decode_wait_until_it_is_alone():
    budget = PixelBudget(100)
    holding, release, entered = threading.Event(), threading.Event(), threading.Event()

    def hold(pixels: int, inside: threading.Event, until: threading.Event | None) -> None:
        with budget.hold(pixels):
            inside.set()
            if until is not None:
                assert until.wait(60)

    first = threading.Thread(target=hold, args=(60, holding, release))
    first.start()
    assert holding.wait(60)
    # 1000 pixels is over the whole budget: it waits for all of it.
    second = threading.Thread(target=hold, args=(1000, entered, None))
    second.start()
    assert not entered.wait(0.2)
    release.set()
    assert entered.wait(60)
    first.join(60)
    second.join(60)


def exif_jpeg(picture, orientation):
    """JPEG bytes of ``picture`` with an EXIF orientation tag."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = io.BytesIO()
    Image.fromarray(picture).save(data, "JPEG", quality=95, exif=exif.tobytes())
    return data.getvalue()


@pytest.mark.parametrize("aspect", [(1, 1), (3, 2), (2, 3)])
def test_tiles_of_an_aspect_and_their_windows_after_exif_orientation(tmp_path, aspect):
    from mosaicist.crop import centre_window
    from mosaicist.imaging import decode_tile, thumbnail

    # 1600 x 800 stored, shown turned a quarter (orientation 6): 800 x 1600.
    picture = np.repeat(np.repeat(gradient(200, 100), 8, axis=0), 8, axis=1)
    data = exif_jpeg(picture, 6)
    tile_image = decode_tile(data, 24, aspect)
    shown = Image.fromarray(picture).transpose(Image.Transpose.ROTATE_270)
    window = centre_window(800, 1600, aspect)
    assert tile_image.window == window
    height = {(1, 1): 24, (3, 2): 16, (2, 3): 36}[aspect]
    assert tile_image.pixels.shape == (height, 24, 3)
    close(tile_image.pixels, thumbnail(shown, 24, aspect), 8)
    # A render from the original at another size cuts the same window.
    path = tmp_path / "turned.jpg"
    path.write_bytes(data)
    large = read_original(path, 60, aspect=aspect, window=window)
    close(large, thumbnail(shown, 60, aspect, window), 8)
    # A square photo at 1:1 is its own window under either crop: the seed's tile.
    square = exif_jpeg(picture[:, :800], 1)
    subject = decode_tile(square, 24, (1, 1), "subject")
    assert subject.window == (0, 0, 800, 800)
    np.testing.assert_array_equal(subject.pixels, decode_tile_bytes(square, 24))


def _png(image, **params):
    data = io.BytesIO()
    image.save(data, "PNG", **params)
    return data.getvalue()


@pytest.mark.parametrize("mode, key", [("RGB", (10, 200, 30)), ("L", 77)])
def test_a_png_colour_key_is_composited_as_its_rgba_equivalent(tmp_path, mode, key):
    # A tRNS chunk in a greyscale or RGB PNG makes one value transparent (Pillow: the
    # "transparency" info): those pixels are drawn over white, as an RGBA file's are.
    rng = np.random.default_rng(5)
    base = Image.fromarray(rng.integers(0, 256, (24, 24, 3), np.uint8)).convert(mode)
    pixels = np.array(base)
    pixels[4:14, 6:18] = key
    keyed = Image.fromarray(pixels, mode)
    rgba = keyed.convert("RGBA")
    # Transparent wherever the value is the key (the block, and any pixel that happens to be).
    hidden = np.all(pixels.reshape(24, 24, -1) == key, axis=-1)
    rgba.putalpha(Image.fromarray(np.where(hidden, 0, 255).astype(np.uint8)))
    data, reference = _png(keyed, transparency=key), _png(rgba)
    assert Image.open(io.BytesIO(data)).info["transparency"] == key
    assert np.array_equal(decode_tile_bytes(data, 24), decode_tile_bytes(reference, 24))
    (tmp_path / "keyed.png").write_bytes(data)
    (tmp_path / "rgba.png").write_bytes(reference)
    target = read_target(tmp_path / "keyed.png")
    assert np.array_equal(target, read_target(tmp_path / "rgba.png"))
    assert (target[4:14, 6:18] == 255).all() and not (target == 255).all()


def _png_by_hand(width, bit_depth, colour_type, samples, key):
    """A one-row PNG with a tRNS colour key, chunk by chunk (Pillow writes neither kind)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, 1, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"tRNS", key)
            + chunk(b"IDAT", zlib.compress(b"\x00" + samples)) + chunk(b"IEND", b""))


def test_colour_keys_of_other_sample_sizes_hide_the_keyed_pixels_only():
    # 16-bit RGB: Pillow decodes 8 bits but kept the 16-bit key, so opaque pure red
    # (65535, 0, 0) matched the key (255, 0, 0) and turned white; the key is dropped.
    def decoded(data):
        with imaging._open_checked(io.BytesIO(data), None) as image:
            image.load()
            return np.asarray(to_rgb(image))[0].tolist()

    data = _png_by_hand(2, 16, 2, struct.pack(">6H", 65535, 0, 0, 255, 0, 0),
                        struct.pack(">3H", 255, 0, 0))
    assert decoded(data) == [[255, 0, 0], [0, 0, 0]]
    # 2 and 4 bits of grey: the samples are scaled to 0-255, and now the key with them.
    data = _png_by_hand(4, 2, 0, bytes([0b00011011]), struct.pack(">H", 1))  # 0, 1, 2, 3
    assert [pixel[0] for pixel in decoded(data)] == [0, 255, 170, 255]
    data = _png_by_hand(4, 4, 0, bytes([0x17, 0x30]), struct.pack(">H", 3))  # 1, 7, 3, 0
    assert [pixel[0] for pixel in decoded(data)] == [17, 119, 255, 0]


def test_a_16_bit_grey_colour_key_is_composited_over_white():
    pixels = np.full((8, 8), 30000, np.uint16)
    pixels[:4] = 1234
    keyed = Image.open(io.BytesIO(_png(Image.fromarray(pixels), transparency=1234)))
    keyed.load()
    rgb = np.asarray(to_rgb(keyed))
    assert (rgb[:4] == 255).all()
    assert (rgb[4:] == round(30000 * 255 / 65535)).all()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def png_with_late_exif(picture: np.ndarray, orientation: int = 1,
                       exif: bytes | None = None) -> bytes:
    """PNG bytes of ``picture`` whose eXIf chunk (with ``orientation``, or the bare TIFF
    structure ``exif``) follows its pixels."""
    if exif is None:
        tags = Image.Exif()
        tags[0x0112] = orientation
        exif = tags.tobytes()[len(b"Exif\x00\x00"):]  # the chunk holds the bare structure
    raw = exif
    data = _png(Image.fromarray(picture))
    end = data.rindex(b"IEND") - 4
    assert data.index(b"IDAT") < end
    return data[:end] + png_chunk(b"eXIf", raw) + data[end:]


def test_a_png_orientation_after_its_pixels_is_seen_by_target_size(tmp_path):
    path = tmp_path / "late.png"
    path.write_bytes(png_with_late_exif(gradient(40, 20), 6))
    assert "exif" not in Image.open(path).info  # only a decode reaches it
    # The size is read before the decode, and must be the decoded picture's.
    assert target_size(path) == (20, 40)
    assert read_target(path).shape == (40, 20, 3)
    upright = tmp_path / "upright.png"
    upright.write_bytes(png_with_late_exif(gradient(40, 20), 1))
    assert target_size(upright) == (40, 20) == read_target(upright).shape[1::-1]


def test_a_large_png_exif_after_its_pixels_still_turns_its_size(tmp_path):
    # Late chunks over 16 MB were skipped when sizing, but the decode reads them: a
    # photo whose eXIf carries a large maker note was sized unturned (40x20 for 20x40).
    tags = Image.Exif()
    tags[0x0112] = 6
    exif = tags.tobytes()[len(b"Exif\x00\x00"):] + bytes(17 << 20)  # unreferenced padding
    path = tmp_path / "late.png"
    path.write_bytes(png_with_late_exif(gradient(40, 20), exif=exif))
    assert target_size(path) == (20, 40) == read_target(path).shape[1::-1]


#: How a viewer shows a picture stored under each EXIF orientation.
SHOWN_AS = {
    1: [], 2: [Image.Transpose.FLIP_LEFT_RIGHT], 3: [Image.Transpose.ROTATE_180],
    4: [Image.Transpose.FLIP_TOP_BOTTOM], 5: [Image.Transpose.TRANSPOSE],
    6: [Image.Transpose.ROTATE_270], 7: [Image.Transpose.TRANSVERSE],
    8: [Image.Transpose.ROTATE_90],
}


def shown(picture: np.ndarray, orientation: int) -> np.ndarray:
    image = Image.fromarray(picture)
    for step in SHOWN_AS[orientation]:
        image = image.transpose(step)
    return np.asarray(image)


def assert_read_as(path, expected, tolerance):
    """Targets, their header sizes, tiles and re-read originals all show ``expected``."""
    target = read_target(path)
    close(target, expected, tolerance)
    assert target_size(path) == (expected.shape[1], expected.shape[0])
    reference = imaging.make_tile(Image.fromarray(expected), 8).pixels
    close(decode_tile_bytes(path.read_bytes(), 8), reference, tolerance)
    close(read_original(path, 8), reference, tolerance)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("kind, tolerance", [("JPEG", 12), ("PNG", 0), ("WEBP", 0), ("TIFF", 0)])
def test_every_exif_orientation_shows_targets_and_tiles_as_a_viewer_does(
    tmp_path, orientation, kind, tolerance
):
    # A TIFF's orientation was applied twice to its size from the header: newer Pillows
    # already give the turned size, so target_size said 40x24 for a 24x40 picture.
    picture = gradient(40, 24)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"turned.{kind.lower()}"
    extra = {"JPEG": {"quality": 95}, "WEBP": {"lossless": True}}.get(kind, {})
    Image.fromarray(picture).save(path, kind, exif=exif, **extra)
    assert_read_as(path, shown(picture, orientation), tolerance)


def exif_of_one_orientation(field_type: int, value: bytes) -> bytes:
    """A little-endian EXIF block whose one entry is the orientation, of any TIFF field type."""
    count = 1
    inline = len(value) <= 4
    entry = struct.pack("<HHI", 0x0112, field_type, count)
    entry += value.ljust(4, b"\0") if inline else struct.pack("<I", 26)
    return b"II*\0" + struct.pack("<IH", 8, 1) + entry + b"\0" * 4 + (b"" if inline else value)


@pytest.mark.parametrize("field_type, value", [(5, struct.pack("<II", 6, 1)),
                                               (11, struct.pack("<f", 6.0))])
@pytest.mark.parametrize("late", [False, True])
def test_a_png_orientation_stored_as_a_fraction_or_float_turns_its_size_too(
    tmp_path, field_type, value, late
):
    # Pillow turns a picture whose orientation is 6/1 or 6.0 as for 6, but a PNG's
    # size from its header took only an int: target_size said 40x24 for a 24x40 picture.
    exif = exif_of_one_orientation(field_type, value)
    path = tmp_path / "turned.png"
    picture = gradient(40, 24)
    if late:
        path.write_bytes(png_with_late_exif(picture, exif=exif))
    else:
        Image.fromarray(picture).save(path, exif=exif)
    assert target_size(path) == (24, 40)
    assert_read_as(path, shown(picture, 6), 0)


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


@pytest.mark.parametrize("where", ["after large segments", "XMP only"])
def test_a_jpeg_orientation_anywhere_in_its_header_turns_its_tile(tmp_path, where):
    # The fast decoder (no orientation) was used unless "Exif" was in the first 64 KB:
    # an EXIF block after two Photoshop segments, or an XMP orientation, gave an
    # unturned tile while the target and a re-read original were turned.
    picture = gradient(40, 24)
    data = io.BytesIO()
    if where == "XMP only":
        xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/'
               b'1999/02/22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/'
               b'tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
        Image.fromarray(picture).save(data, "JPEG", quality=95, xmp=xmp)
        encoded = data.getvalue()
        assert b"Exif" not in encoded
    else:
        encoded = exif_jpeg(picture, 6)
        filler = jpeg_segment(0xED, b"Photoshop 3.0\x00" + bytes(60000))
        encoded = encoded[:2] + filler + filler + encoded[2:]
        assert encoded.index(b"Exif\x00\x00") > 65536
    path = tmp_path / "turned.jpg"
    path.write_bytes(encoded)
    assert_read_as(path, shown(picture, 6), 12)


def test_plain_jpegs_keep_the_fast_decoder():
    plain = io.BytesIO()
    Image.fromarray(gradient(40, 24)).save(plain, "JPEG", icc_profile=bytes(70000),
                                           progressive=True)
    assert not imaging._may_be_oriented(plain.getvalue())
    assert imaging._may_be_oriented(exif_jpeg(gradient(40, 24), 1))
    assert imaging._may_be_oriented(plain.getvalue()[:40])  # cut short: Pillow says why


@pytest.fixture
def heif_unregistered(monkeypatch):
    """Pillow as it starts: no HEIF opener (the live wall's tests may have registered one)."""
    from mosaicist import imaging as _extras

    # Every plugin of Pillow's own registered first: those the test would register
    # lazily must stay, once the registry is put back.
    Image.init()
    monkeypatch.setattr(Image, "ID", [name for name in Image.ID if name != "HEIF"])
    monkeypatch.setattr(Image, "OPEN", {name: value for name, value in Image.OPEN.items()
                                        if name != "HEIF"})
    monkeypatch.setattr(_extras, "_heif_opener", False)


def heic_file(path, picture):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.from_pillow(Image.fromarray(picture)).save(str(path), quality=95)
    return path


def test_heic_photos_are_read_through_pillow_heif(tmp_path, heif_unregistered):
    # pillow-heif was installed (the live extra) but only the live wall registered it:
    # a HEIC target or tile was "not a readable image".
    picture = gradient(40, 24)
    path = heic_file(tmp_path / "photo.heic", picture)
    assert_read_as(path, picture, 12)
    lying = tmp_path / "photo.jpg"
    lying.write_bytes(path.read_bytes())
    close(read_target(lying), picture, 12)


def test_a_heic_whose_reader_another_thread_registered_meanwhile_is_read(
    tmp_path, heif_unregistered, monkeypatch
):
    # render opens originals from several threads: one thread's open failed on a HEIC
    # while another registered pillow-heif's opener, and the first then found the
    # reader "there already", did not open again, and refused the photo as "not a
    # readable image" (3 to 8 renders in 20 of a library with six HEICs).
    picture = gradient(40, 24)
    path = heic_file(tmp_path / "photo.heic", picture)
    opened = Image.open
    calls = []

    def open_racing(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            imaging.heif_formats()  # the other thread registers the reader now
            raise Image.UnidentifiedImageError("cannot identify image file")
        return opened(*args, **kwargs)

    monkeypatch.setattr(Image, "open", open_racing)
    with imaging.open_image(path) as image:
        assert image.size == (40, 24)
    assert len(calls) == 2
    # A HEIF that is damaged fails its second open as before.
    damaged = tmp_path / "damaged.heic"
    damaged.write_bytes(path.read_bytes()[:64])
    monkeypatch.setattr(Image, "open", opened)
    with pytest.raises((OSError, ImageReadError)):
        imaging.open_image(damaged)


def test_a_heic_without_its_plugin_is_refused_in_one_line_naming_it(
    tmp_path, heif_unregistered, monkeypatch
):
    path = heic_file(tmp_path / "photo.heic", gradient(40, 24))
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # not installed
    for read in (read_target, target_size):
        with pytest.raises(MosaicistError, match=r"photo\.heic: .*HEIC.* pillow-heif") as error:
            read(path)
        assert "\n" not in str(error.value)
    with pytest.raises(ImageReadError, match="needs the pillow-heif package"):
        decode_tile_bytes(path.read_bytes(), 8)
    assert "pillow-heif" in imaging.missing_reader("IMG_0001.HEIC")
    assert imaging.missing_reader(".heif") is not None
    assert imaging.missing_reader("photo.jpg") is None
    result = CliRunner().invoke(main, ["make", str(path), "--tiles", str(tmp_path)])
    assert result.exit_code != 0 and "pillow-heif" in result.output
    assert "Traceback" not in result.output


def test_avif_pictures_are_read(tmp_path):
    if not imaging.avif_readable():
        pytest.skip("this Pillow reads no AVIF")
    picture = gradient(40, 24)
    path = tmp_path / "photo.avif"
    Image.fromarray(picture).save(path, quality=95)
    assert_read_as(path, picture, 12)


def test_target_paths_from_home_urls_and_empty_text(tmp_path, monkeypatch):
    # "~" was taken literally (tile folders and the cache expand it), a URL was
    # mangled into "https:/host/x.png: target file not found", and "" read as
    # the current folder: "target is a directory".
    monkeypatch.setenv("HOME", str(tmp_path))
    Image.fromarray(gradient(12, 8)).save(tmp_path / "home.png")
    assert np.array_equal(read_target("~/home.png"), gradient(12, 8))
    assert target_size("~/home.png") == (12, 8)
    for read in (read_target, target_size):
        with pytest.raises(MosaicistError) as caught:
            read("https://example.com/bear.jpg")
        assert str(caught.value) == ("https://example.com/bear.jpg: target is a URL; only "
                                     "local files are read (download it first)")
        with pytest.raises(MosaicistError, match="^the target path is empty$"):
            read("")
        # A user who does not exist: the path as written, not a RuntimeError from pathlib.
        with pytest.raises(MosaicistError, match="^~nobody-here/x.png: target file not found$"):
            read("~nobody-here/x.png")


def grey_tiff(samples: np.ndarray, photometric: int, sample_format: int) -> bytes:
    """An uncompressed little-endian one-strip greyscale TIFF of ``samples``."""
    height, width = samples.shape
    data = samples.astype(samples.dtype.newbyteorder("<")).tobytes()
    count = 10
    start = 8 + 2 + 12 * count + 4
    tags = [(256, 4, width), (257, 4, height), (258, 3, samples.dtype.itemsize * 8),
            (259, 3, 1), (262, 3, photometric), (273, 4, start), (277, 3, 1),
            (278, 4, height), (279, 4, len(data)), (339, 3, sample_format)]
    entries = b"".join(struct.pack("<HHI", tag, kind, 1)
                       + struct.pack("<H" if kind == 3 else "<I", value).ljust(4, b"\0")
                       for tag, kind, value in tags)
    return b"II*\0" + struct.pack("<IH", 8, count) + entries + b"\0" * 4 + data


@pytest.mark.parametrize("dtype, sample_format", [(np.uint16, 1), (np.float32, 3)])
def test_a_min_is_white_tiff_of_16_bits_or_floats_is_shown_inverted(
    tmp_path, dtype, sample_format
):
    # Pillow inverts a "0 is white" TIFF of 8 bits as it decodes, not one of 16 bits or
    # floats: such a scan was read as its negative.
    top = 65535 if dtype == np.uint16 else 1.0
    samples = np.zeros((6, 8), dtype)
    samples[:, 4:] = top  # left half white, right half black, as shown
    path = tmp_path / "negative.tif"
    path.write_bytes(grey_tiff(samples, 0, sample_format))
    expected = np.zeros((6, 8, 3), np.uint8)
    expected[:, :4] = 255
    assert_read_as(path, expected, 0)


def test_an_unsigned_32_bit_tiff_is_scaled_from_its_full_range():
    # Pillow holds these samples in its signed 32-bit mode: those over 2**31 came back
    # negative (black), and the rest were clipped from 0..65535 (white).
    samples = np.array([[0, 2**31 - 1, 2**31, 2**32 - 1]], np.uint32)
    image = Image.open(io.BytesIO(grey_tiff(samples, 1, 1)))
    assert image.mode == "I"
    assert np.asarray(to_rgb(image))[0, :, 0].tolist() == [0, 127, 128, 255]


def test_a_webp_cut_short_is_refused_as_truncated_not_by_libwebp_words(tmp_path):
    # Pillow's "could not create decoder object" told a user nothing about the file.
    whole = io.BytesIO()
    Image.fromarray(gradient(16, 8)).save(whole, "WEBP", lossless=True)
    path = tmp_path / "cut.webp"
    path.write_bytes(whole.getvalue()[:-1])
    for read in (read_target, target_size):
        with pytest.raises(MosaicistError) as error:
            read(path)
        assert str(error.value) == (f"{path}: cannot read target image: "
                                    "truncated or damaged image file")
    with pytest.raises(ImageReadError, match="^truncated or damaged image file$"):
        decode_tile_bytes(path.read_bytes(), 8)


def test_premultiplied_grey_with_alpha_is_composited_like_its_straight_mode():
    # "La" was listed with the modes composited over white, but Pillow cannot
    # turn it into RGBA: a ValueError from Pillow instead of a picture.
    straight = Image.fromarray(np.stack([np.full((4, 6), 100, np.uint8),
                                         np.full((4, 6), 128, np.uint8)], -1), "LA")
    premultiplied = straight.convert("La")
    assert np.array_equal(np.asarray(to_rgb(premultiplied)),
                          np.asarray(to_rgb(premultiplied.convert("LA"))))
    assert np.asarray(to_rgb(premultiplied)).max() > 100  # blended toward white


def test_float_greyscale_of_no_numbers_is_black_without_a_warning():
    nothing = Image.fromarray(np.full((3, 4), np.nan, np.float32), "F")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not np.asarray(to_rgb(nothing)).any()


def test_a_target_name_the_system_refuses_is_one_line(tmp_path):
    # pathlib's exists() raised OSError ENAMETOOLONG (and ELOOP was "not found").
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for name, reason in (("a" * 300 + ".png", "File name too long"),
                         ("loop", "Too many levels of symbolic links")):
        for read in (read_target, target_size):
            with pytest.raises(MosaicistError) as caught:
                read(tmp_path / name)
            assert str(caught.value) == f"{tmp_path / name}: cannot open target: {reason}"


def test_heif_or_avif_tells_them_apart_by_their_brands():
    # The live wall refuses an AVIF photo where none can be read, by this function.
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(8)
    avif = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + bytes(8)
    # A HEIF major brand with AVIF among the compatible ones is AVIF (its pixels are AV1).
    avif_compatible = b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1avifmiaf" + bytes(8)
    assert imaging.heif_or_avif(heic) == "HEIF"
    assert imaging.heif_or_avif(avif) == "AVIF"
    assert imaging.heif_or_avif(avif_compatible) == "AVIF"
    # A brand past the box's own size belongs to no box of it.
    assert imaging.heif_or_avif(b"\x00\x00\x00\x14ftypmif1\x00\x00\x00\x00mif1avif") == "HEIF"
    png = io.BytesIO()
    Image.new("RGB", (2, 2)).save(png, "PNG")
    assert imaging.heif_or_avif(png.getvalue()[:64]) is None
    assert imaging.heif_or_avif(b"\x00\x00\x00\x18ftypqt  ") is None  # a QuickTime film
    assert imaging.heif_or_avif(b"") is None


def test_avif_readable_follows_pillow_and_the_plugin(monkeypatch):
    import types

    monkeypatch.setattr(imaging.features, "check_module", lambda name: False)
    monkeypatch.setitem(sys.modules, "pillow_avif", None)  # its import raises ImportError
    assert imaging.avif_readable() is False
    assert "pillow-avif-plugin" in imaging.missing_reader(".avif")
    monkeypatch.setitem(sys.modules, "pillow_avif", types.ModuleType("pillow_avif"))
    assert imaging.avif_readable() is True
    assert imaging.missing_reader("photo.AVIF") is None


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_a_signed_16_bit_tiff_is_scaled_from_its_signed_range(tmp_path, byteorder):
    # Pillow reads I;16S / I;16BS into mode I with the signs kept: every negative sample
    # was clipped to black and 32767 came out mid-grey (127), targets and tiles alike.
    import tifffile

    samples = np.array([[-32768, -16384, -1, 0, 16384, 32767]], np.int16)
    path = tmp_path / "signed.tif"
    tifffile.imwrite(path, samples.astype(samples.dtype.newbyteorder(byteorder)),
                     byteorder=byteorder, photometric="minisblack")
    expected = [0, 64, 127, 128, 191, 255]
    with Image.open(path) as image:
        assert image.mode == "I"
        assert np.asarray(to_rgb(image))[0, :, 0].tolist() == expected
    assert read_target(path)[0, :, :].tolist() == [[value] * 3 for value in expected]
    # A tile of the same file: a flat picture of -16384 is the grey of 64, not black.
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.full((8, 8), -16384, np.dtype(byteorder + "i2")),
                     byteorder=byteorder, photometric="minisblack")
    assert (decode_tile_bytes(flat.read_bytes(), 4) == 64).all()


@pytest.mark.parametrize("kind", ["BMP", "TIFF", "TIFF-tiled"])
def test_a_target_too_short_for_its_declared_pixels_is_refused_at_the_header(tmp_path, kind):
    # target_size gave a size for these, and read_target refused them only after
    # `make` had opened and indexed the whole library for them.
    import tifffile

    picture = gradient(13, 9)  # rows padded in a BMP
    path = tmp_path / "cut.img"
    whole = io.BytesIO()
    if kind == "BMP":
        Image.fromarray(picture).save(whole, "BMP")
    else:
        tifffile.imwrite(whole, picture, photometric="rgb",
                         tile=(16, 16) if kind == "TIFF-tiled" else None)
    data = whole.getvalue()
    path.write_bytes(data)
    assert target_size(path) == (13, 9)  # whole: read as before
    assert read_target(path).shape == (9, 13, 3)
    if kind == "TIFF-tiled":
        # The edge tile's padding below the picture is declared but never read.
        path.write_bytes(data[:len(data) - 40])
        assert read_target(path).shape == (9, 13, 3)
        assert target_size(path) == (13, 9)
    kept = len(data) * 2 // 3
    path.write_bytes(data[:kept])
    with pytest.raises(MosaicistError) as caught:
        read_target(path)
    assert str(caught.value) == f"{path}: cannot read target image: truncated image file"
    with pytest.raises(MosaicistError) as caught:
        target_size(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: cannot read target image: truncated image file (")
    assert message.endswith(f"the file has {kept:,} bytes)") and "\n" not in message


# --- Plain 8-bit RGB PNG targets through libpng (imagecodecs), outside the interpreter lock ---

def _pillow_target(path, monkeypatch):
    """``read_target`` as it reads without imagecodecs: Pillow's decode."""
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "imagecodecs", None)  # import fails: Pillow's way
        assert imaging._plain_png_pixels(Image.open(path)) is None
        return read_target(path)


def _count_libpng_decodes(monkeypatch) -> list[bytes]:
    """The PNG bytes each libpng decode is given from now on."""
    imagecodecs = pytest.importorskip("imagecodecs")
    given: list[bytes] = []
    decode = imagecodecs.png_decode

    def counted(data, *args, **kwargs):
        given.append(bytes(data))
        return decode(data, *args, **kwargs)

    monkeypatch.setattr(imagecodecs, "png_decode", counted)
    return given


def _with_chunks(data: bytes, before: bytes = b"", after: bytes = b"") -> bytes:
    """A PNG's bytes with chunks added after its header and before its end."""
    end = data.rindex(b"IEND") - 4
    return data[:33] + before + data[33:end] + after + data[end:]


def test_a_plain_rgb_png_target_is_decoded_by_libpng_with_pillows_pixels(tmp_path, monkeypatch):
    given = _count_libpng_decodes(monkeypatch)
    rng = np.random.default_rng(5)
    picture = rng.integers(0, 256, (61, 83, 3), np.uint8)
    picture[:20] = gradient(83, 20)  # runs that the filters and deflate compress
    bad_text = png_chunk(b"tEXt", b"note\0late")[:-4] + b"\0\0\0\0"  # a wrong CRC
    cases = {
        "plain.png": _png(Image.fromarray(picture)),
        "optimised.png": _png(Image.fromarray(picture), optimize=True),
        "small chunks.png": _png(Image.fromarray(picture), compress_level=1),
        # Chunks that change no pixel, before and after the pixels; a damaged one
        # after them, which Pillow ignores and libpng would warn of.
        "chunks.png": _with_chunks(
            _png(Image.fromarray(picture)),
            before=png_chunk(b"gAMA", struct.pack(">I", 0)) + png_chunk(b"sBIT", b"\1\2\3")
            + png_chunk(b"pHYs", bytes(9)) + png_chunk(b"iCCP", b"x\0\0junk"),
            after=bad_text + png_chunk(b"zTXt", b"k\0\0not deflate")),
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        count = len(given)
        pixels = read_target(path)
        assert len(given) == count + 1, name
        # libpng saw the header, the pixel data and the end, nothing else.
        kinds = [given[-1][at + 4:at + 8] for at in _chunk_offsets(given[-1])]
        assert set(kinds) == {b"IHDR", b"IDAT", b"IEND"}, name
        np.testing.assert_array_equal(pixels, picture, err_msg=name)
        np.testing.assert_array_equal(pixels, _pillow_target(path, monkeypatch), err_msg=name)
        assert pixels.flags.writeable and pixels.flags.c_contiguous


def _chunk_offsets(data: bytes) -> list[int]:
    offsets, at = [], 8
    while at < len(data):
        offsets.append(at)
        at += 12 + int.from_bytes(data[at:at + 4], "big")
    return offsets


def _libpng_said(caplog, capfd) -> list[str]:
    """What libpng warned of: imagecodecs logs it (on stderr where logging is not set up)."""
    return [record.getMessage() for record in caplog.records
            if record.name.startswith("imagecodecs")] + (
        [line for line in capfd.readouterr().err.splitlines() if "PNG" in line])


def test_a_plain_png_decoded_by_libpng_prints_nothing(tmp_path, capfd, caplog):
    pytest.importorskip("imagecodecs")
    picture = gradient(30, 40)
    # Chunks Pillow reads past and libpng warns of: a profile too short, gamma 0.
    damaged = png_chunk(b"iCCP", b"x\0\0junk") + png_chunk(b"gAMA", bytes(4))
    path = tmp_path / "damaged colour chunks.png"
    path.write_bytes(_with_chunks(_png(Image.fromarray(picture)), before=damaged))
    np.testing.assert_array_equal(read_target(path), picture)
    assert _libpng_said(caplog, capfd) == []


def _interlaced_png(picture: np.ndarray) -> bytes:
    """An Adam7-interlaced 8-bit RGB PNG (Pillow writes none): every pass's rows filtered 0."""
    height, width = picture.shape[:2]
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
              (0, 1, 1, 2)]
    raw = bytearray()
    for x0, y0, dx, dy in passes:
        part = picture[y0::dy, x0::dx]
        if part.size:
            for row in part:
                raw += b"\0" + row.tobytes()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1)
    return (imaging._PNG_SIGNATURE + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(bytes(raw))) + imaging._PNG_END)


def test_other_pngs_are_left_to_pillow(tmp_path, monkeypatch):
    given = _count_libpng_decodes(monkeypatch)
    picture = gradient(24, 36)
    rgba = np.dstack([picture, np.full(picture.shape[:2], 128, np.uint8)])
    apng = io.BytesIO()
    Image.fromarray(picture).save(apng, "PNG", save_all=True,
                                  append_images=[Image.fromarray(picture[::-1].copy())])
    cases = {
        "rgba.png": _png(Image.fromarray(rgba)),
        "grey.png": _png(Image.fromarray(picture[..., 0])),
        "palette.png": _png(Image.fromarray(picture).quantize(16)),
        "keyed.png": _png(Image.fromarray(picture), transparency=tuple(picture[0, 0].tolist())),
        "turned.png": png_with_late_exif(picture, 6),
        "interlaced.png": _interlaced_png(picture),
        "animated.png": apng.getvalue(),
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert imaging._plain_png_pixels(Image.open(path)) is None, name
        read_target(path)
    assert given == []
    np.testing.assert_array_equal(read_target(tmp_path / "interlaced.png"), picture)


def test_a_16_bit_rgb_png_is_left_to_pillow(tmp_path, monkeypatch):
    given = _count_libpng_decodes(monkeypatch)
    picture = gradient(20, 12)
    samples = (picture.astype(">u2") * 257).tobytes()
    raw = b"".join(b"\0" + samples[row * 120:(row + 1) * 120] for row in range(12))
    path = tmp_path / "wide.png"
    path.write_bytes(imaging._PNG_SIGNATURE
                     + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 20, 12, 16, 2, 0, 0, 0))
                     + png_chunk(b"IDAT", zlib.compress(raw)) + imaging._PNG_END)
    assert Image.open(path).mode == "RGB"  # Pillow reads 16-bit RGB as 8-bit RGB
    np.testing.assert_array_equal(read_target(path), picture)
    assert given == []


def _raw_png(picture: np.ndarray, stream: bytes | None = None) -> bytes:
    height, width = picture.shape[:2]
    raw = b"".join(b"\0" + row.tobytes() for row in picture)
    return (imaging._PNG_SIGNATURE
            + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(raw) if stream is None else stream)
            + imaging._PNG_END)


def test_damaged_plain_pngs_read_as_pillow_reads_them(tmp_path, monkeypatch, capfd, caplog):
    pytest.importorskip("imagecodecs")
    picture = np.random.default_rng(2).integers(0, 256, (20, 30, 3), np.uint8)
    raw = b"".join(b"\0" + row.tobytes() for row in picture)
    good = _raw_png(picture)
    flipped = bytearray(good)
    flipped[good.index(b"IDAT") + 30] ^= 0x55
    wrong_crc = bytearray(good)
    wrong_crc[good.index(b"IEND") - 5] ^= 1  # the IDAT chunk's CRC
    cases = {
        "cut.png": good[:len(good) // 2],
        "flipped.png": bytes(flipped),
        "wrong crc.png": bytes(wrong_crc),
        "short stream.png": _raw_png(picture, zlib.compress(raw[:len(raw) // 2])),
        "bad filter.png": _raw_png(picture, zlib.compress(b"\7" + raw[1:])),
        "unended stream.png": _raw_png(picture, zlib.compress(raw)[:-6]),
        "no end.png": good[:-12],
        "no pixels.png": good[:33] + imaging._PNG_END,
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        outcomes = []
        for way in ("libpng", "pillow"):
            try:
                pixels = (read_target(path) if way == "libpng"
                          else _pillow_target(path, monkeypatch))
                outcomes.append(("read", pixels.tobytes()))
            except MosaicistError as error:
                outcomes.append(("refused", str(error)))
        assert outcomes[0] == outcomes[1], name
        assert str(path) in outcomes[0][1] if outcomes[0][0] == "refused" else True
    # libpng refused these (Pillow then read or refused them), quietly.
    assert _libpng_said(caplog, capfd) == []



def _both_ways(path, monkeypatch) -> list[tuple[str, object]]:
    """What ``read_target`` gives with libpng and with Pillow alone: pixels, or the refusal."""
    outcomes: list[tuple[str, object]] = []
    for way in ("libpng", "pillow"):
        try:
            pixels = read_target(path) if way == "libpng" else _pillow_target(path, monkeypatch)
            outcomes.append(("read", pixels.tobytes()))
        except MosaicistError as error:
            outcomes.append(("refused", str(error)))
    return outcomes


def test_a_chunk_after_the_pixels_that_pillow_refuses_is_refused_alike(tmp_path, monkeypatch):
    pytest.importorskip("imagecodecs")
    picture = np.random.default_rng(8).integers(0, 256, (20, 30, 3), np.uint8)
    good = _raw_png(picture)
    end = len(good) - len(imaging._PNG_END)
    frame = struct.pack(">IIIIIHHBB", 5, 30, 20, 0, 0, 1, 10, 0, 0)  # sequence 5, not 0
    cases = {
        "frame out of sequence.png": png_chunk(b"fcTL", frame),
        "frame data.png": png_chunk(b"fdAT", b"\0\0\0\7" + bytes(9)),
        "short pHYs.png": png_chunk(b"pHYs", bytes(3)),
        "zTXt of no method.png": png_chunk(b"zTXt", b"key\0\1abc"),
    }
    for name, chunk in cases.items():
        path = tmp_path / name
        path.write_bytes(good[:end] + chunk + good[end:])
        outcomes = _both_ways(path, monkeypatch)
        assert outcomes[0] == outcomes[1], name
        assert outcomes[0][0] == "refused" and str(path) in str(outcomes[0][1]), name
    # A chunk after the pixels that the file cuts short.
    path = tmp_path / "cut note.png"
    path.write_bytes(good[:end] + struct.pack(">I", 500) + b"tEXt" + b"note")
    outcomes = _both_ways(path, monkeypatch)
    assert outcomes[0] == outcomes[1] and outcomes[0][0] == "refused"


def test_pixel_data_libpng_warns_of_is_read_by_pillow_quietly(tmp_path, monkeypatch, capfd, caplog):
    given = _count_libpng_decodes(monkeypatch)
    picture = np.random.default_rng(9).integers(0, 256, (20, 30, 3), np.uint8)
    raw = b"".join(b"\0" + row.tobytes() for row in picture)
    header = struct.pack(">IIBBBBB", 30, 20, 8, 2, 0, 0, 0)
    cases = {
        # Compressed data after the stream's end; rows past the last one.
        "after the stream.png": _raw_png(picture, zlib.compress(raw) + b"more data"),
        "too many rows.png": _raw_png(picture, zlib.compress(raw + raw[:91])),
        # A compression method Pillow pays no heed to, libpng warns of (and then fails).
        "method 1.png": imaging._PNG_SIGNATURE + png_chunk(b"IHDR", header[:10] + b"\1\0\0")
        + png_chunk(b"IDAT", zlib.compress(raw)) + imaging._PNG_END,
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        outcomes = _both_ways(path, monkeypatch)
        assert outcomes == [("read", picture.tobytes())] * 2, name
    assert _libpng_said(caplog, capfd) == []
    assert len(given) == 2  # the method was never handed to libpng


def test_imagecodecs_records_of_other_threads_pass(caplog):
    pytest.importorskip("imagecodecs")
    logger = logging.getLogger("imagecodecs")
    logger.addFilter(imaging._LIBPNG_WARNINGS)
    try:
        with imaging._LIBPNG_WARNINGS.noting() as said:
            logger.warning("on this thread")
            elsewhere = threading.Thread(target=logger.warning, args=("on another",))
            elsewhere.start()
            elsewhere.join()
        logger.warning("after")
    finally:
        logger.removeFilter(imaging._LIBPNG_WARNINGS)
    assert said == ["on this thread"]
    assert [record.getMessage() for record in caplog.records
            if record.name == "imagecodecs"] == ["on another", "after"]


def test_a_lone_apng_frame_smaller_than_the_picture_is_left_to_pillow(tmp_path, monkeypatch):
    given = _count_libpng_decodes(monkeypatch)
    picture = gradient(30, 20)
    good = _raw_png(picture)
    frame = struct.pack(">IIIIIHHBB", 0, 10, 10, 5, 5, 1, 10, 0, 0)
    path = tmp_path / "small frame.png"
    path.write_bytes(good[:33] + png_chunk(b"acTL", struct.pack(">II", 1, 0))
                     + png_chunk(b"fcTL", frame) + good[33:])
    assert imaging._plain_png_pixels(Image.open(path)) is None
    outcomes = _both_ways(path, monkeypatch)
    assert outcomes[0] == outcomes[1]
    assert given == []


def test_a_png_target_replaced_as_it_is_read_is_read_from_the_file_opened(tmp_path,
                                                                           monkeypatch):
    # Its orientation too comes from the file opened, not from one that took its name
    # since: a turned picture is not given unturned, by libpng, for a plain newcomer.
    pytest.importorskip("imagecodecs")
    picture = gradient(24, 16)
    path = tmp_path / "target.png"
    path.write_bytes(png_with_late_exif(picture, 6))
    expected = read_target(path)
    assert expected.shape == (24, 16, 3)
    newcomer = tmp_path / "newcomer.png"
    newcomer.write_bytes(_raw_png(picture[::-1].copy()))
    opened = imaging._open_checked

    def open_then_replace(source, max_pixels):
        image = opened(source, max_pixels)
        newcomer.replace(path)
        return image

    monkeypatch.setattr(imaging, "_open_checked", open_then_replace)
    np.testing.assert_array_equal(read_target(path), expected)


def test_a_colour_key_is_settled_from_tiles_that_are_plain_tuples(tmp_path):
    # Pillow 10 (the lowest the project allows) gives tiles as plain tuples, which
    # have no .args: a keyed 16-bit RGB PNG then failed with an AttributeError.
    samples = (gradient(6, 4).astype(">u2") * 257).tobytes()
    raw = b"".join(b"\0" + samples[row * 36:(row + 1) * 36] for row in range(4))
    path = tmp_path / "keyed16.png"
    path.write_bytes(imaging._PNG_SIGNATURE
                     + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 6, 4, 16, 2, 0, 0, 0))
                     + png_chunk(b"tRNS", bytes(6))
                     + png_chunk(b"IDAT", zlib.compress(raw)) + imaging._PNG_END)
    image = Image.open(path)
    assert "transparency" in image.info
    image.tile = [tuple(tile) for tile in image.tile]
    imaging.settle_colour_key(image)
    assert "transparency" not in image.info  # a 16-bit key is dropped, as with named tiles


def test_a_pillow_whose_private_png_state_differs_still_reads_the_target(tmp_path,
                                                                         monkeypatch):
    # The chunks after the pixels are read by Pillow's private reader; a Pillow whose
    # state it cannot find (an AttributeError) must not turn into a traceback.
    pytest.importorskip("imagecodecs")
    from PIL import PngImagePlugin

    picture = gradient(21, 13)
    path = tmp_path / "plain.png"
    path.write_bytes(_png(Image.fromarray(picture)))

    def changed(self):
        raise AttributeError("'PngImageFile' object has no attribute '_PngImageFile__idat'")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load_end", changed)
    np.testing.assert_array_equal(read_target(path), picture)


def test_a_tile_file_larger_than_any_tile_picture_is_refused_unread(tmp_path, monkeypatch):
    # It was read whole into a decoding worker before its header's pixels were looked at.
    from mosaicist import imaging

    huge = tmp_path / "scan.tif"
    with open(huge, "wb") as handle:
        handle.truncate(imaging.TILE_MAX_FILE_BYTES + 1)  # sparse: no disk taken
    read = []
    monkeypatch.setattr(imaging, "decode_tile", lambda *args: read.append(args))
    with pytest.raises(imaging.ImageReadError, match=r"a file of 1\.7 GB, more than a picture"):
        imaging.read_tile_file(huge, 16)
    assert not read


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_tile_file_swapped_for_a_fifo_is_refused_without_waiting(tmp_path):
    # A photo swapped for a FIFO after the folder's scan blocked the index for ever.
    from mosaicist import imaging

    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            imaging.read_tile_file(fifo, 16)
        except BaseException as error:  # noqa: BLE001 - handed to the test's thread
            outcome.append(error)
        else:
            outcome.append(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(20)
    if reader.is_alive():
        with open(fifo, "wb"):  # lets the blocked reader go, so the test can end
            pass
        pytest.fail("reading a FIFO blocked")
    assert isinstance(outcome[0], imaging.ImageReadError)
    assert str(outcome[0]) == "not a regular file"


def test_a_render_as_indexed_refuses_a_tile_file_larger_than_any_tile_picture(tmp_path):
    # The render's own reader of local tiles as the index cut them read the file whole
    # before the limit was looked at.
    from mosaicist import imaging

    folder = tmp_path / "tiles"
    folder.mkdir()
    Image.fromarray(gradient(16, 16)).save(folder / "a.png")
    source = open_source(str(folder), cache_dir=tmp_path / "c")
    with open(folder / "scan.tif", "wb") as handle:
        handle.truncate(imaging.TILE_MAX_FILE_BYTES + 1)  # sparse: no disk taken
    pictures = OriginalPictures(source, ["a.png", "scan.tif"], 16, workers=1,
                                as_indexed=True)
    assert pictures.fetch(np.arange(1)).shape == (1, 16, 16, 3)
    with pytest.raises(MosaicistError, match=r"scan\.tif: .*a file of 1\.7 GB, more than"):
        pictures.fetch(np.arange(2))


def test_a_target_too_large_for_the_memory_is_named_with_its_size(tmp_path, monkeypatch):
    # The command line said "out of memory; try a smaller --limit or target", naming no
    # file: a file of a few hundred bytes may declare 900 megapixels.
    from PIL import ImageFile

    from mosaicist import imaging

    Image.new("RGB", (40, 30), (9, 9, 9)).save(tmp_path / "t.jpg")

    def no_memory(self):
        raise MemoryError

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_memory)
    with pytest.raises(MosaicistError, match=r"t\.jpg: out of memory decoding its 40x30 "
                                             r"pixels \(0\.0 GB as RGB\)"):
        imaging.read_target(tmp_path / "t.jpg")


def _jpeg_cut_with_its_end_marker(orientation: int | None = None) -> bytes:
    whole = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    Image.fromarray(gradient(96, 64)).save(whole, "JPEG", quality=90, exif=exif)
    data = whole.getvalue()
    return data[:len(data) * 2 // 3] + b"\xff\xd9"


@pytest.mark.skipif(imaging.simplejpeg is None, reason="libjpeg-turbo's strict decode (fast)")
@pytest.mark.parametrize("orientation", [None, 6], ids=["plain", "turned"])
def test_a_jpeg_cut_short_with_its_end_marker_is_refused_not_filled_grey(tmp_path,
                                                                          orientation):
    """Pillow decoded it without an error, every block past the cut grey (128, 128, 128)."""
    data = _jpeg_cut_with_its_end_marker(orientation)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data)
    with pytest.raises(MosaicistError) as error:
        read_target(path)
    assert str(error.value) == (f"{path}: cannot read target image: truncated image file "
                                "(its data end before its last block)")
    # As a tile: the fast decode (plain) and Pillow's (an EXIF orientation) refuse it.
    with pytest.raises(ImageReadError, match="its data end before its last block"):
        decode_tile_bytes(data, 8)


@pytest.mark.skipif(imaging.simplejpeg is None, reason="libjpeg-turbo's strict decode (fast)")
def test_a_jpeg_whose_header_claims_more_than_its_data_is_refused_before_its_decode(tmp_path):
    """A 5 KB file claiming 30,000 x 30,000 pixels made a grey mosaic after 6 GB and 37 s."""
    whole = io.BytesIO()
    Image.fromarray(gradient(96, 64)).save(whole, "JPEG", quality=90)
    data = bytearray(whole.getvalue())
    frame = data.find(b"\xff\xc0")
    data[frame + 5:frame + 9] = struct.pack(">HH", 6000, 9000)
    path = tmp_path / "lying.jpg"
    path.write_bytes(bytes(data))
    from PIL import JpegImagePlugin

    decoded = []
    real_load = JpegImagePlugin.JpegImageFile.load

    def load(image):
        decoded.append(image.size)
        return real_load(image)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(JpegImagePlugin.JpegImageFile, "load", load)
        with pytest.raises(MosaicistError, match="its data end before its last block"):
            read_target(path)
    assert (9000, 6000) not in decoded


def test_a_whole_jpeg_with_a_grey_corner_is_read():
    """A grey last block sends a JPEG to the strict decode, which finds nothing wrong."""
    pixels = gradient(64, 48)
    pixels[-8:, -8:] = 128
    whole = io.BytesIO()
    Image.fromarray(pixels).save(whole, "JPEG", quality=100, subsampling=0)
    assert decode_tile_bytes(whole.getvalue(), 8) is not None


def test_readers_are_registered_for_the_names_before_threads_open_them(heif_unregistered):
    # render's threads registered pillow-heif's opener lazily, while others opened.
    pytest.importorskip("pillow_heif")
    imaging.register_readers_for(["a.jpg", "dir.with.dots/b"])
    assert "HEIF" not in Image.ID
    imaging.register_readers_for(["a.jpg", "sub/IMG_0001.HEIC"])
    assert "HEIF" in Image.ID
