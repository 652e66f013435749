"""Streaming image writers: PNG, JPEG, WebP and pyramidal TIFF from bands."""

from __future__ import annotations

import io
import os
import struct
import sys
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from mosaicist.errors import MosaicistError
from mosaicist.render import _writers as writers
from mosaicist.render import check_output, output_format, reduce_half, write_image

try:
    import imagecodecs  # noqa: F401

    HAVE_IMAGECODECS = True
except ImportError:
    HAVE_IMAGECODECS = False


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A photo-like picture: smooth gradients plus a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    planes = [
        128 + 100 * np.sin(x / 23 + c) * np.cos(y / 31 - c) + rng.normal(0, 4, (height, width))
        for c in range(3)
    ]
    return np.clip(np.stack(planes, -1), 0, 255).astype(np.uint8)


def split(image: np.ndarray, how: str, seed: int = 0):
    """Yield ``image`` as bands: one row each, uneven heights, or whole."""
    height = image.shape[0]
    if how == "rows":
        cuts = list(range(height + 1))
    elif how == "whole":
        cuts = [0, height]
    else:
        rng = np.random.default_rng(seed)
        cuts = sorted({0, height, *rng.integers(0, height + 1, 6).tolist()})
    for top, bottom in zip(cuts, cuts[1:], strict=False):
        # A copy that is then scribbled over: the writer must not keep views of a band.
        band = image[top:bottom].copy()
        yield band
        band[:] = 0


def untouchable():
    """Bands that fail the test if the writer reads any."""
    raise AssertionError("the bands were read")
    yield  # pragma: no cover


def png_chunks(data: bytes):
    """Split a PNG into ``(type, payload)``, checking each CRC."""
    assert data[:8] == writers.PNG_SIGNATURE
    position, chunks = 8, []
    while position < len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        kind = data[position + 4:position + 8]
        payload = data[position + 8:position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length:position + 12 + length])
        assert crc == zlib.crc32(kind + payload), kind
        chunks.append((kind, payload))
        position += 12 + length
    return chunks


def jpeg_reference(image: np.ndarray, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, subsampling=0,
                                restart_marker_rows=1)
    return buffer.getvalue()


def tiff_levels(path):
    with tifffile.TiffFile(path) as handle:
        page = handle.pages[0]
        info = {
            "bigtiff": handle.is_bigtiff,
            "tiled": page.is_tiled,
            "tile": (page.tilelength, page.tilewidth),
            "compression": int(page.compression),
            "predictor": int(page.predictor),
            "subifds": len(page.subifds or ()),
        }
        levels = [level.asarray() for level in handle.series[0].levels]
        subfiletypes = [int(level.keyframe.subfiletype) for level in handle.series[0].levels]
    return info, levels, subfiletypes


# --- formats and limits ------------------------------------------------------


def test_output_format_by_extension(tmp_path):
    assert output_format("a.PNG").name == "PNG"
    assert output_format("a.jpg") is output_format("a.jpeg")
    assert output_format("a.jpg").name == "JPEG"
    assert output_format("a.webp").name == "WEBP"
    assert output_format("a.tif") is output_format("a.TIFF")
    assert output_format("a.tif").name == "TIFF"
    assert output_format("a.dzi").name == "Deep Zoom"
    with pytest.raises(MosaicistError,
                       match=r"a\.bmp: unknown output format '\.bmp'; use \.dzi, \.jpeg, .*"
                             r"\.tiff or \.webp$"):
        output_format("a.bmp")
    # A name without its extension, or a folder: said, not "unknown output format '(none)'".
    with pytest.raises(MosaicistError, match=r"^noextension: the output has no extension; "
                                             r"name a file ending in one of \.dzi"):
        output_format("noextension")
    with pytest.raises(MosaicistError, match=r": the output is a folder; name a file"):
        output_format(Path(__file__).parent)


def test_check_output_size_messages():
    check_output("a.jpg", 65500, 65500)
    with pytest.raises(MosaicistError) as error:
        check_output("a.jpg", 65501, 10)
    assert str(error.value) == (
        "a.jpg: 65,501x10 pixels is over the JPEG limit of 65,500 pixels a side; use .png, "
        ".tif or .dzi"
    )
    with pytest.raises(MosaicistError,
                       match="10x16,384 pixels is over the WebP limit of 16,383 pixels a side"):
        check_output("a.webp", 10, 16384)
    # Encoded whole in memory: WebP is also capped by area, to stay under 2 GB.
    check_output("a.webp", 12000, 13000)
    with pytest.raises(MosaicistError, match="WebP limit of 160 megapixels"):
        check_output("a.webp", 16000, 16000)
    check_output("a.tif", 10**6, 10**6)
    check_output("a.png", 2**31 - 1, 1)


@pytest.mark.parametrize("name, width, height, options, words", [
    ("o.jpg", 65536, 8, {}, "JPEG limit"),
    ("o.webp", 8, 16384, {}, "WebP limit"),
    ("o.bmp", 8, 8, {}, "unknown output format"),
    ("o.png", 8, 8, {"compression": "deflate"}, "TIFF output only"),
    ("o.jpg", 8, 8, {"pyramid": True}, "TIFF output only"),
    ("o.tif", 8, 8, {"compression": "zip"}, "unknown TIFF compression 'zip'"),
    ("o.jpg", 8, 8, {"quality": 0}, "quality 0"),
    ("o.png", 8, 8, {"dpi": 0}, "dpi 0 is not a whole number in 1-65535"),
    ("o.tif", 8, 8, {"dpi": 72.5}, "dpi 72.5"),
    ("o.jpg", 8, 8, {"dpi": 65536}, "dpi 65536"),
])
def test_limits_and_options_fail_before_reading_bands(tmp_path, name, width, height, options,
                                                      words):
    with pytest.raises(MosaicistError, match=words) as error:
        write_image(tmp_path / name, untouchable(), width, height, **options)
    assert name in str(error.value) and "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("compression", ["lzw", "jpeg"])
def test_tiff_compressions_that_need_imagecodecs(tmp_path, monkeypatch, compression):
    # The fast extra installs imagecodecs: its absence is made here.
    monkeypatch.setitem(sys.modules, "imagecodecs", None)
    with pytest.raises(MosaicistError, match="needs the imagecodecs package"):
        write_image(tmp_path / "o.tif", untouchable(), 8, 8, compression=compression)
    assert list(tmp_path.iterdir()) == []


# --- PNG ---------------------------------------------------------------------


@pytest.mark.parametrize("width, height", [(1, 1), (5, 3), (37, 29), (300, 7), (2100, 5)])
@pytest.mark.parametrize("how", ["rows", "uneven", "whole"])
@pytest.mark.parametrize("deflate", ["installed", "zlib"])
def test_png_round_trip(tmp_path, monkeypatch, width, height, how, deflate):
    if deflate == "zlib":  # the fallback without the fast extra's ISA-L
        monkeypatch.setattr(writers, "_deflate", zlib)
    # Small blocks and filter slices, so that several of each meet.
    monkeypatch.setattr(writers, "BLOCK_BYTES", 3 * width * 4)
    monkeypatch.setattr(writers, "FILTER_BYTES", 3 * width * 3)
    image = photo(width, height)
    path = tmp_path / "o.png"
    write_image(path, split(image, how), width, height)
    chunks = png_chunks(path.read_bytes())
    kinds = [kind for kind, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    assert set(kinds[1:-1]) == {b"IDAT"}
    assert chunks[0][1] == struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    # zlib.decompress checks the combined Adler-32 and the stream's end.
    raw = zlib.decompress(b"".join(payload for kind, payload in chunks if kind == b"IDAT"))
    assert len(raw) == height * (3 * width + 1)
    assert set(raw[::3 * width + 1]) <= {0, 1, 2, 3}
    with Image.open(path) as decoded:
        assert decoded.mode == "RGB"
        assert np.array_equal(np.asarray(decoded), image)
    assert os.listdir(tmp_path) == ["o.png"]


def test_png_filters_are_chosen_per_row():
    rows = np.zeros((3, 12), np.uint8)
    rows[0] = [10, 20, 30] * 4  # one colour across: Sub leaves zeros after the first pixel
    rows[1] = rows[0]  # a repeat of the row above: Up leaves zeros
    rows[2] = 0  # already zero: None
    filtered = writers.png_filter_rows(rows, np.full(12, 200, np.uint8))
    assert filtered[:, 0].tolist() == [1, 2, 0]
    assert not filtered[1, 1:].any()


def test_png_filter_costs_are_the_same_in_64_bits(monkeypatch):
    rng = np.random.default_rng(4)
    rows = rng.integers(0, 256, (9, 3 * 50), dtype=np.uint8)
    rows[3:6] = rows[2]  # rows that Up makes all zero
    previous = rng.integers(0, 256, 3 * 50, dtype=np.uint8)
    narrow = writers.png_filter_rows(rows, previous)
    monkeypatch.setattr(writers, "_NARROW_COST_BYTES", 0)
    assert np.array_equal(writers.png_filter_rows(rows, previous), narrow)


def _filter_oracle(rows, previous, sampled=None):
    """Each filter's output of every row by the specification, and the costs of the
    bytes at ``sampled`` (all by default): ``(4, h, n)`` outputs, ``(4, h)`` costs."""
    height, length = rows.shape
    above = np.vstack([previous, rows[:-1]]).astype(int)
    left = np.hstack([np.zeros((height, 3), int), rows[:, :-3].astype(int)])
    predictions = [np.zeros_like(above), left, above, (left + above) // 2]
    outputs = np.stack([(rows.astype(int) - prediction) % 256 for prediction in predictions])
    signed = np.where(outputs > 127, 256 - outputs, outputs)
    at = np.arange(length) if sampled is None else sampled
    return outputs, signed[:, :, at].sum(axis=2)


@pytest.mark.parametrize("length", [15, 3 * 1024, 3 * 1025, 3 * 2100])
def test_png_filters_match_the_specification(length):
    rng = np.random.default_rng(3)
    rows = rng.integers(0, 256, (6, length), dtype=np.uint8)
    previous = rng.integers(0, 256, length, dtype=np.uint8)
    filtered = writers.png_filter_rows(rows, previous)
    outputs, _ = _filter_oracle(rows, previous)
    for row in range(6):
        assert np.array_equal(filtered[row, 1:], outputs[filtered[row, 0], row])


@pytest.mark.parametrize("length", [3 * 1024, 3 * 1025, 3 * 2100, 3 * 4096 + 3])
def test_long_png_rows_choose_their_filter_from_sampled_runs(length):
    # Rows of at least 4 runs choose from the first run of every 4 (from the second
    # pixel on); each filter must win some row, ties going to the first.
    rng = np.random.default_rng(length)
    height = 8
    rows = rng.integers(0, 256, (height, length), dtype=np.uint8)
    rows[1] = rows[0]  # Up leaves zeros
    rows[2] = np.resize(rng.integers(0, 256, 3, dtype=np.uint8), length)  # Sub leaves zeros
    rows[3] = 0  # everything ties but the row above's Up: None
    rows[4] = (rows[3].astype(int) + np.resize(np.arange(3) * 40, length)) // 2
    rows[5] = rows[4] // 2 + rows[4] // 2  # nearly the mean of left and above
    previous = rng.integers(0, 256, length, dtype=np.uint8)
    run = writers._COST_RUN_BYTES
    sampled_length = (length - 3) // (4 * run) * 4 * run
    positions = 3 + np.arange(sampled_length)
    sampled = positions[(positions - 3) % (4 * run) < run] if sampled_length else None
    outputs, costs = _filter_oracle(rows, previous, sampled)
    filtered = writers.png_filter_rows(rows, previous)
    assert filtered[:, 0].tolist() == costs.argmin(axis=0).tolist()
    for row in range(height):
        assert np.array_equal(filtered[row, 1:], outputs[filtered[row, 0], row])
    assert filtered[1, 0] == 2 and filtered[3, 0] == 0


# --- JPEG --------------------------------------------------------------------


@pytest.mark.parametrize("width, height", [(1, 1), (8, 8), (13, 37), (40, 100), (333, 75)])
@pytest.mark.parametrize("how", ["rows", "uneven", "whole"])
def test_jpeg_is_byte_identical_to_whole_image_encoding(tmp_path, monkeypatch, width, height,
                                                        how):
    # Blocks of 3 MCU rows: restart numbers must be rewritten to continue modulo 8.
    monkeypatch.setattr(writers, "BLOCK_BYTES", 3 * width * 8 * 3)
    image = photo(width, height, seed=width)
    path = tmp_path / "o.jpg"
    write_image(path, split(image, how), width, height)
    assert path.read_bytes() == jpeg_reference(image)
    with Image.open(path) as decoded:
        assert decoded.size == (width, height)
        decoded.load()


def test_jpeg_quality(tmp_path, monkeypatch):
    monkeypatch.setattr(writers, "BLOCK_BYTES", 1)  # one MCU row per block
    image = photo(64, 50)
    write_image(tmp_path / "o.jpeg", split(image, "uneven"), 64, 50, quality=60)
    assert (tmp_path / "o.jpeg").read_bytes() == jpeg_reference(image, quality=60)


def test_jpeg_splicer_renumbers_restarts():
    # 17 MCU rows in blocks of 3, 5 and 9: every shift modulo 8 is exercised.
    image = photo(24, 17 * 8, seed=5)
    out = io.BytesIO()
    splicer = writers._JpegSplicer(out, image.shape[0])
    top = 0
    for rows in (24, 40, 72):
        splicer.add(writers._jpeg_block(image[top:top + rows], {"quality": 92, "subsampling": 0}))
        top += rows
    splicer.finish()
    data = out.getvalue()
    assert data == jpeg_reference(image)
    markers = [data[i + 1] for i in range(len(data) - 1)
               if data[i] == 0xFF and 0xD0 <= data[i + 1] <= 0xD7]
    assert markers == [0xD0 + n % 8 for n in range(16)]


# --- WebP --------------------------------------------------------------------


def test_webp(tmp_path):
    image = photo(61, 47)
    path = tmp_path / "o.webp"
    write_image(path, split(image, "uneven"), 61, 47)
    with Image.open(path) as decoded:
        assert decoded.format == "WEBP" and decoded.size == (61, 47)
        error = np.abs(np.asarray(decoded.convert("RGB")).astype(int) - image).mean()
    assert error < 6
    assert os.listdir(tmp_path) == ["o.webp"]


# --- TIFF --------------------------------------------------------------------


@pytest.mark.parametrize("width, height, how", [
    (1, 1, "whole"), (257, 300, "rows"), (700, 530, "uneven"), (1100, 97, "uneven"),
])
@pytest.mark.parametrize("deflate", ["installed", "zlib"])
def test_tiff_pyramid(tmp_path, monkeypatch, width, height, how, deflate):
    if deflate == "zlib":
        monkeypatch.setattr(writers, "_deflate", zlib)
    image = photo(width, height)
    path = tmp_path / "o.tif"
    write_image(path, split(image, how), width, height)
    info, levels, subfiletypes = tiff_levels(path)
    assert info == {"bigtiff": True, "tiled": True, "tile": (256, 256), "compression": 8,
                    "predictor": 2, "subifds": len(levels) - 1}
    assert np.array_equal(levels[0], image)
    for larger, smaller in zip(levels, levels[1:], strict=False):
        assert np.array_equal(smaller, reduce_half(larger))
    assert subfiletypes == [0] + [1] * (len(levels) - 1)
    # Halved down to the first level that fits in one tile.
    assert max(levels[-1].shape[:2]) <= 256
    assert len(levels) == 1 or max(levels[-2].shape[:2]) > 256
    assert [level.shape[:2] for level in levels] == [
        (h, w) for w, h in writers.tiff_level_sizes(width, height)
    ]
    # Other readers (Pillow through libtiff) see the full-size picture.
    with Image.open(path) as decoded:
        assert decoded.size == (width, height)
        assert np.array_equal(np.asarray(decoded.convert("RGB")), image)
    assert os.listdir(tmp_path) == ["o.tif"]


def test_tiff_flat_and_uncompressed(tmp_path):
    image = photo(300, 260)
    write_image(tmp_path / "flat.tif", split(image, "uneven"), 300, 260, pyramid=False)
    info, levels, _ = tiff_levels(tmp_path / "flat.tif")
    assert info["subifds"] == 0 and len(levels) == 1
    assert np.array_equal(levels[0], image)
    write_image(tmp_path / "raw.tiff", split(image, "uneven"), 300, 260, compression="none")
    info, levels, _ = tiff_levels(tmp_path / "raw.tiff")
    assert info["compression"] == 1 and info["subifds"] == 1
    assert np.array_equal(levels[0], image)


@pytest.mark.skipif(not HAVE_IMAGECODECS, reason="needs imagecodecs")
def test_tiff_lzw_and_jpeg_with_imagecodecs(tmp_path):
    image = photo(300, 260)
    write_image(tmp_path / "lzw.tif", split(image, "uneven"), 300, 260, compression="lzw")
    info, levels, _ = tiff_levels(tmp_path / "lzw.tif")
    assert info["compression"] == 5 and np.array_equal(levels[0], image)
    write_image(tmp_path / "jpeg.tif", split(image, "uneven"), 300, 260, compression="jpeg")
    info, levels, _ = tiff_levels(tmp_path / "jpeg.tif")
    assert info["compression"] == 7
    assert np.abs(levels[0].astype(int) - image).mean() < 6


# --- resolution (dpi) ---------------------------------------------------------

FORMATS = ["o.png", "o.jpg", "o.webp", "o.tif"]


def read_dpi(path):
    """The resolution Pillow reads back; for WebP, from its EXIF (the format has no field)."""
    with Image.open(path) as decoded:
        if decoded.format == "WEBP":
            exif = decoded.getexif()
            if 0x011A not in exif:
                return None
            assert exif[0x0128] == 2  # inches
            return float(exif[0x011A]), float(exif[0x011B])
        return decoded.info.get("dpi")


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("dpi", [72, 150, 300])
def test_dpi_is_recorded(tmp_path, name, dpi):
    image = photo(300, 260)
    write_image(tmp_path / name, split(image, "uneven"), 300, 260, dpi=dpi)
    # PNG stores whole pixels per metre: 150 dpi reads back as 150.01.
    assert read_dpi(tmp_path / name) == pytest.approx((dpi, dpi), abs=0.02)
    with Image.open(tmp_path / name) as decoded:
        assert decoded.size == (300, 260)


@pytest.mark.parametrize("name", FORMATS)
def test_no_dpi_records_none(tmp_path, name):
    write_image(tmp_path / name, split(photo(30, 20), "whole"), 30, 20)
    assert read_dpi(tmp_path / name) is None


def test_png_dpi_is_a_phys_chunk_before_the_data(tmp_path):
    write_image(tmp_path / "o.png", split(photo(30, 20), "rows"), 30, 20, dpi=150)
    chunks = png_chunks((tmp_path / "o.png").read_bytes())
    assert [kind for kind, _ in chunks[:3]] == [b"IHDR", b"pHYs", b"IDAT"]
    # 150 / 0.0254 = 5905.5 pixels per metre, rounded half up; unit 1 is the metre.
    assert chunks[1][1] == struct.pack(">IIB", 5906, 5906, 1)
    assert writers.png_pixels_per_metre(300) == 11811


def test_jpeg_with_dpi_is_byte_identical_to_whole_image_encoding(tmp_path, monkeypatch):
    monkeypatch.setattr(writers, "BLOCK_BYTES", 1)  # one MCU row per block
    image = photo(40, 60)
    write_image(tmp_path / "o.jpg", split(image, "uneven"), 40, 60, dpi=150)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=92, subsampling=0,
                                restart_marker_rows=1, dpi=(150, 150))
    assert (tmp_path / "o.jpg").read_bytes() == buffer.getvalue()


def test_tiff_pyramid_levels_keep_the_printed_size(tmp_path):
    width, height = 700, 530
    write_image(tmp_path / "o.tif", split(photo(width, height), "uneven"), width, height,
                dpi=150)
    with tifffile.TiffFile(tmp_path / "o.tif") as handle:
        levels = handle.series[0].levels
        assert len(levels) == 3
        for level in levels:
            tags = level.keyframe.tags
            level_height, level_width = level.shape[:2]
            x_numerator, x_denominator = tags["XResolution"].value
            y_numerator, y_denominator = tags["YResolution"].value
            assert tags["ResolutionUnit"].value == 2  # inch
            # Every level prints at width / dpi inches.
            assert level_width * x_denominator / x_numerator == pytest.approx(width / 150)
            assert level_height * y_denominator / y_numerator == pytest.approx(height / 150)


def test_output_settings_carry_the_dpi(tmp_path):
    from mosaicist.options import MosaicOptions
    from mosaicist.render import Picture, write_output

    image = photo(30, 20)
    for name in ("o.jpg", "o.tif"):
        write_output(tmp_path / name, Picture(split(image, "whole"), 30, 20),
                     MosaicOptions(dpi=240))
        assert read_dpi(tmp_path / name) == (240, 240)


# --- atomicity and errors ----------------------------------------------------


def failing(image: np.ndarray, error: BaseException):
    yield image[:40]
    yield image[40:70]
    raise error


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt(), OSError("tile")])
def test_failing_bands_leave_nothing(tmp_path, name, error):
    image = photo(300, 290)
    with pytest.raises(type(error)) as raised:
        write_image(tmp_path / name, failing(image, error), 300, 290)
    # An OSError of the caller's is theirs, not reported as a write failure.
    assert raised.value is error
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", FORMATS)
def test_failure_keeps_the_previous_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"previous")
    image = photo(300, 290)
    with pytest.raises(RuntimeError):
        write_image(tmp_path / name, failing(image, RuntimeError()), 300, 290)
    assert os.listdir(tmp_path) == [name]
    assert (tmp_path / name).read_bytes() == b"previous"


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("rows", [289, 291])
def test_wrong_total_height(tmp_path, name, rows):
    image = photo(300, rows)
    with pytest.raises(ValueError, match="290"):
        write_image(tmp_path / name, split(image, "uneven"), 300, 290)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("band", [
    np.zeros((4, 9, 3), np.uint8), np.zeros((4, 8, 4), np.uint8),
    np.zeros((4, 8, 3), np.float32), np.zeros((8, 3), np.uint8), [[0, 0, 0]],
])
def test_wrong_band(tmp_path, band):
    with pytest.raises(ValueError, match=r"band 1 is .* expected \(h, 8, 3\) uint8"):
        write_image(tmp_path / "o.png", iter([np.zeros((2, 8, 3), np.uint8), band]), 8, 8)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output(tmp_path):
    with pytest.raises(MosaicistError, match=r"nope.o\.png: cannot write output"):
        write_image(tmp_path / "nope" / "o.png", untouchable(), 8, 8)
    if os.geteuid() != 0:  # root writes to read-only folders
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        try:
            with pytest.raises(MosaicistError, match="permission denied"):
                write_image(folder / "o.tif", untouchable(), 8, 8)
        finally:
            folder.chmod(0o755)


@pytest.fixture
def small_file_limit():
    """Make writing a file past 16 kB fail as a full disk does (EFBIG; Python ignores SIGXFSZ)."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 10, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@pytest.mark.parametrize("name", FORMATS)
def test_a_full_disk_is_one_line_naming_the_output(tmp_path, name, small_file_limit):
    # The file system refuses the file partway, with the temporary (and TIFF's spool) open.
    image = photo(300, 290)
    with pytest.raises(MosaicistError) as caught:
        write_image(tmp_path / name, split(image, "uneven"), 300, 290)
    assert str(caught.value) == f"{tmp_path / name}: cannot write output: File too large"
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_under_a_pyramid_keeps_the_previous_one(tmp_path, small_file_limit):
    from mosaicist.render import read_layout, write_deep_zoom

    path = tmp_path / "m.dzi"
    write_deep_zoom(split(photo(20, 10), "whole"), 20, 10, path, tile_size=8, format="png")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(MosaicistError) as caught:
        write_deep_zoom(split(photo(300, 290), "uneven"), 300, 290, path)
    assert str(caught.value) == f"{path}: cannot write the Deep Zoom pyramid: File too large"
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert read_layout(path).width == 20


def test_progress_bar(tmp_path, capsys):
    image = photo(20, 30)
    write_image(tmp_path / "o.png", split(image, "uneven"), 20, 30, show_progress=True)
    assert "writing o.png" in capsys.readouterr().err


# --- memory --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["o.png", "o.jpg", "o.tif"])
def test_memory_stays_bounded(tmp_path, monkeypatch, name):
    # The writers hold a fixed number of blocks (or rows of tiles) whatever
    # the height; small blocks let a small picture show it.
    monkeypatch.setenv("MOSAICIST_THREADS", "2")
    monkeypatch.setattr(writers, "BLOCK_BYTES", 256 << 10)
    width, band = 512, 64
    noise = np.random.default_rng(0).integers(0, 16, (band, width, 3), dtype=np.uint8)
    x = np.arange(width, dtype=np.uint16)[None, :, None] + np.array([0, 85, 170], np.uint16)

    def bands(height):
        for top in range(0, height, band):
            rows = np.arange(top, top + band, dtype=np.uint16)[:, None, None]
            yield ((x + rows) % 240).astype(np.uint8) + noise

    peaks = []
    for height in (4096, 16384):
        tracemalloc.start()
        write_image(tmp_path / name, bands(height), width, height)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    size = width * 16384 * 3
    print(name, "peak traced bytes", peaks, "picture", size)
    assert peaks[1] < size / 4, (peaks, size)
    # Four times the rows, (nearly) the same memory.
    assert peaks[1] < peaks[0] + (1 << 20), peaks


def test_outputs_are_flushed_to_disk_before_their_rename(tmp_path, monkeypatch):
    # Renamed unflushed, a power cut could leave an empty file under the final name.
    import errno

    flushed = []
    real = os.fsync

    def recording(descriptor):
        flushed.append(descriptor)
        return real(descriptor)

    monkeypatch.setattr(os, "fsync", recording)
    image = photo(12, 8)
    write_image(tmp_path / "o.png", split(image, "whole"), 12, 8)
    assert len(flushed) == 1
    # A file system that cannot flush at all still gets the picture.

    def unsupported(descriptor):
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))

    monkeypatch.setattr(os, "fsync", unsupported)
    write_image(tmp_path / "p.jpg", split(image, "whole"), 12, 8)
    assert Image.open(tmp_path / "p.jpg").size == (12, 8)
