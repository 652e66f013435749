"""Crop windows: the largest of the tiles' aspect, centred or on the subject (faces, detail)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mosaicist import crop as crop_module
from mosaicist.crop import Window, centre_window, choose_window, scale_window, window_size
from mosaicist.imaging import centre_square, decode_tile, make_tile, read_original
from mosaicist.library import TileLibrary, stored_windows
from mosaicist.render import OriginalPictures
from mosaicist.sources.folder import FolderSource


@pytest.fixture
def no_faces(monkeypatch):
    """Saliency alone, whether or not OpenCV is installed."""
    monkeypatch.setattr(crop_module, "detect_faces", lambda grey: None)


def blob_photo(width, height, left, top, side=40, seed=0):
    """A flat grey photo with a textured square at (left, top): the only subject."""
    rng = np.random.default_rng(seed)
    picture = np.full((height, width, 3), 120, np.uint8)
    picture[top:top + side, left:left + side] = rng.integers(0, 256, (side, side, 3))
    return picture


def inside(window, left, top, width, height):
    """Whether the box lies wholly inside the window."""
    return (window.left <= left and left + width <= window.left + window.width
            and window.top <= top and top + height <= window.top + window.height)


def test_window_sizes_and_the_centre_square():
    assert window_size(600, 400) == (400, 400)
    assert window_size(600, 400, (3, 2)) == (600, 400)  # already of the aspect
    assert window_size(400, 400, (3, 2)) == (400, 267)
    assert window_size(300, 600, (4, 3)) == (300, 225)
    assert window_size(1, 100, (16, 1)) == (1, 1)  # never below one pixel
    for width, height in [(61, 40), (40, 61), (50, 50), (7, 3)]:
        image = Image.new("RGB", (width, height))
        left, top, side, _ = centre_window(width, height)
        # The seed's centre square, exactly.
        assert centre_square(image).size == (side, side)
        assert (left, top) == ((width - side) // 2, (height - side) // 2)
    # Carried from a copy at half size to the original: same size rule, scaled position.
    assert scale_window(Window(10, 0, 50, 50), (100, 50), (200, 100), (1, 1)) == \
        Window(20, 0, 100, 100)
    assert scale_window(Window(99, 0, 50, 50), (100, 50), (200, 100), (1, 1)).left == 100


def test_windows_span_a_side_lie_inside_and_keep_the_aspect_within_half_a_pixel():
    aspects = [(1, 1), (3, 2), (2, 3), (16, 9), (1, 16), (16, 1), (7, 5)]
    sizes = [1, 2, 3, 7, 31, 64, 257, 10**9]
    for width in sizes:
        for height in sizes:
            for aspect in aspects:
                window_width, window_height = window_size(width, height, aspect)
                assert 1 <= window_width <= width and 1 <= window_height <= height
                if width * aspect[1] >= height * aspect[0]:
                    assert window_height == height
                    # |w - h W / H| <= 1/2, unless held at one pixel.
                    off = abs(2 * window_width * aspect[1] - 2 * height * aspect[0])
                    assert off <= aspect[1] or window_width == 1
                else:
                    assert window_width == width
                    off = abs(2 * window_height * aspect[0] - 2 * width * aspect[1])
                    assert off <= aspect[0] or window_height == 1
                window = centre_window(width, height, aspect)
                assert window.left >= 0 and window.top >= 0
                assert window.left + window.width <= width
                assert window.top + window.height <= height


@pytest.mark.usefixtures("no_faces")
@pytest.mark.parametrize("aspect", [(1, 1), (3, 2), (2, 3)])
def test_subject_keeps_an_off_centre_subject_that_the_centre_cuts(aspect):
    # Wide and tall photos, the subject near one end: the window slides to it.
    for width, height, left, top in [(480, 160, 420, 60), (480, 160, 10, 100),
                                     (160, 480, 60, 430), (160, 480, 100, 5)]:
        image = Image.fromarray(blob_photo(width, height, left, top))
        subject = choose_window(image, aspect, "subject")
        centre = choose_window(image, aspect, "centre")
        assert (subject.width, subject.height) == window_size(width, height, aspect)
        if (subject.width, subject.height) == (width, height):
            continue
        assert inside(subject, left, top, 40, 40), (width, height, left, top, subject)
        assert not inside(centre, left, top, 40, 40)


@pytest.mark.usefixtures("no_faces")
def test_subject_centres_its_subject_and_falls_back_to_the_centre():
    # A subject smaller than the window sits in its middle.
    image = Image.fromarray(blob_photo(600, 200, 380, 80))
    window = choose_window(image, (1, 1), "subject")
    assert abs((window.left + 100) - 400) <= 12
    # Nothing stands out: flat, or evenly busy -> the centre window.
    flat = Image.new("RGB", (300, 100), (40, 90, 200))
    assert choose_window(flat, (1, 1), "subject") == centre_window(300, 100)
    noise = np.random.default_rng(1).integers(0, 256, (100, 300, 3)).astype(np.uint8)
    busy = choose_window(Image.fromarray(noise), (1, 1), "subject")
    assert abs(busy.left - 100) <= 12
    # A photo of the tile's aspect is its own window: square photos at 1:1 are the
    # same tiles under both crops.
    square = Image.fromarray(blob_photo(90, 90, 0, 0))
    assert choose_window(square, (1, 1), "subject") == Window(0, 0, 90, 90)
    with pytest.raises(ValueError, match="unknown crop"):
        choose_window(square, (1, 1), "middle")


@pytest.mark.usefixtures("no_faces")
@pytest.mark.parametrize(("width", "height", "aspect"), [
    (97, 1500, (16, 1)), (5, 300, (16, 1)), (1500, 64, (1, 16)), (300, 17, (1, 16))])
def test_subject_of_a_long_photo_cut_to_a_long_aspect(width, height, aspect):
    # The window is under half a pixel of the analysis copy (6 of 1500 pixels, a 96 px
    # copy): it rounded to none, and choose_window raised a broadcasting ValueError.
    rng = np.random.default_rng(width + height)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    window = choose_window(image, aspect, "subject")
    assert (window.width, window.height) == window_size(width, height, aspect)
    assert window.left >= 0 and window.top >= 0
    assert window.left + window.width <= width and window.top + window.height <= height


@pytest.mark.usefixtures("no_faces")
@pytest.mark.parametrize(("width", "height", "aspect"), [
    (6000, 100, (1, 1)), (9000, 100, (1, 1)), (100, 7000, (1, 1)), (480, 320, (1, 16))])
def test_subject_at_the_end_of_a_panorama_is_kept(width, height, aspect):
    # On the 96-pixel analysis copy the window spanned a pixel or two (or the copy was
    # a single pixel high and read as flat): the window landed far from the subject,
    # or in the middle.
    window_width, window_height = window_size(width, height, aspect)
    left, top = width - window_width, height - window_height
    picture = np.full((height, width, 3), 120, np.uint8)
    picture[top:, left:] = np.random.default_rng(7).integers(
        0, 256, (window_height, window_width, 3))
    window = choose_window(Image.fromarray(picture), aspect, "subject")
    # Within a tenth of the window of the subject, which fills exactly a window.
    assert abs(window.left - left) <= window_width // 10, window
    assert abs(window.top - top) <= window_height // 10, window


def test_faces_decide_over_detail(monkeypatch):
    # Faces (boxes in the analysis copy's pixels) win over the detail elsewhere.
    picture = blob_photo(640, 320, 560, 100)  # detail on the far right
    image = Image.fromarray(picture)
    found = []

    def faces(grey):
        found.append(grey.shape)
        # 320 x 160 copy: two faces on the left that fit one 160-wide window together.
        return np.array([[10, 40, 30, 30], [80, 50, 30, 30]])

    monkeypatch.setattr(crop_module, "detect_faces", faces)
    window = choose_window(image, (1, 1), "subject")
    assert found == [(160, 320)]
    # Both faces, grown by the margin, in original pixels (x2): 8..244 wide.
    assert inside(window, 8, 0, 236, 320)
    # Faces too far apart for one window: the larger set is kept, then the largest face.
    monkeypatch.setattr(crop_module, "detect_faces",
                        lambda grey: np.array([[5, 40, 20, 20], [250, 40, 50, 50]]))
    window = choose_window(image, (1, 1), "subject")
    assert inside(window, 2 * 250, 0, 100, 320)
    monkeypatch.setattr(crop_module, "detect_faces",
                        lambda grey: np.array([[120, 20, 160, 100]]))
    window = choose_window(image, (1, 1), "subject")
    # Grown, it is 448 wide, more than the window: centred on it.
    assert abs(window.left + window.width / 2 - 400) <= 2


def test_a_face_is_kept_whole_where_the_centre_crop_cuts_it():
    pytest.importorskip("cv2")
    if not crop_module.face_detector_available():
        pytest.skip("this OpenCV has no Haar cascades (OpenCV 5)")
    # scikit-image's astronaut (Eileen Collins, NASA; public domain), kept as a JPEG
    # beside the tests so that they need neither scikit-image nor the network.
    portrait = np.asarray(Image.open(Path(__file__).parent / "data" / "astronaut.jpg"))
    assert portrait.shape == (512, 512, 3)  # the face at about x 177-272, y 66-161
    face = (170, 40, 110, 140)  # with forehead and chin
    canvas = np.full((512, 1100, 3), 200, np.uint8)
    canvas[:, 40:552] = portrait
    wide = Image.fromarray(canvas)
    subject = choose_window(wide, (1, 1), "subject")
    assert inside(subject, face[0] + 40, face[1], face[2], face[3])
    assert not inside(choose_window(wide, (1, 1), "centre"), face[0] + 40, face[1], face[2],
                      face[3])
    # A landscape tile from the portrait: the window slides down from the top.
    landscape = Image.fromarray(portrait)
    assert inside(choose_window(landscape, (3, 2), "subject"), *face)
    assert not inside(choose_window(landscape, (3, 2), "centre"), *face)


@pytest.mark.usefixtures("no_faces")
def test_a_window_chosen_on_a_reduced_decode_is_stored_in_the_originals_pixels(tmp_path):
    picture = blob_photo(1600, 400, 1400, 150, side=120)
    data = io.BytesIO()
    Image.fromarray(picture).save(data, "JPEG", quality=95)
    tile = decode_tile(data.getvalue(), 16, (1, 1), "subject")  # decoded at 1/8 size
    assert tile.pixels.shape == (16, 16, 3)
    assert (tile.window.width, tile.window.height) == (400, 400)
    assert inside(tile.window, 1400, 150, 120, 120)
    centre = decode_tile(data.getvalue(), 16, (1, 1), "centre")
    assert centre.window == Window(600, 0, 400, 400)
    # The same window cut from the original at any size.
    path = tmp_path / "wide.jpg"
    path.write_bytes(data.getvalue())
    large = read_original(path, 64, window=tile.window)
    reference = make_tile(Image.open(path), 64, (1, 1), "centre")  # for the shape only
    assert large.shape == reference.pixels.shape
    cut = np.asarray(Image.open(path).crop(
        (tile.window.left, 0, tile.window.left + 400, 400)).resize((64, 64), Image.LANCZOS))
    assert np.abs(large.astype(int) - cut).mean() < 3
    # Rectangular tiles: width x height_for(width, aspect).
    assert decode_tile(data.getvalue(), 30, (3, 2), "subject").pixels.shape == (20, 30, 3)


@pytest.mark.usefixtures("no_faces")
def test_the_index_stores_windows_and_renders_from_originals_use_them(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(blob_photo(300, 100, 250, 30)).save(folder / "a.png")
    Image.fromarray(blob_photo(100, 300, 30, 5, seed=2)).save(folder / "b.png")
    Image.fromarray(blob_photo(100, 100, 30, 30, seed=3)).save(folder / "c.png")
    cache = tmp_path / "cache"
    source = FolderSource(folder, workers=1)
    library = TileLibrary.open(source, 8, cache_dir=cache, crop="subject")
    assert library.crop == "subject" and library.directory.name.startswith("px8-1x1-")
    windows = library.windows_for(["a.png", "b.png", "c.png", "a.png", "nope.png"])
    assert set(windows) == {"a.png", "b.png", "c.png"}
    assert inside(windows["a.png"], 250, 30, 40, 40) and windows["a.png"].left > 100
    assert inside(windows["b.png"], 30, 5, 40, 40)
    assert windows["c.png"] == Window(0, 0, 100, 100)
    centre = TileLibrary.open(source, 8, cache_dir=cache)
    assert centre.directory.name == "px8"  # the square centre index keeps its folder
    assert centre.windows_for(["a.png"]) == {"a.png": Window(100, 0, 100, 100)}
    # Rendering at another size cuts the stored windows, whichever way they are found.
    assert stored_windows(source, ["a.png"], 8, (1, 1), "subject", cache) == \
        {"a.png": windows["a.png"]}
    assert stored_windows(source, ["a.png"], 8, (1, 1), "centre", cache) == {}
    pictures = OriginalPictures(source, ["a.png", "b.png"], 40, workers=1, crop="subject",
                                windows=windows)
    drawn = pictures.fetch(np.array([0, 1]))
    assert drawn.shape == (2, 40, 40, 3)
    expected = read_original(folder / "a.png", 40, window=windows["a.png"])
    np.testing.assert_array_equal(drawn[0], expected)
    # 3:2 tiles from originals.
    wide = OriginalPictures(source, ["a.png"], 30, workers=1, aspect=(3, 2), crop="subject")
    assert (wide.tile_height, wide.fetch(np.array([0])).shape) == (20, (1, 20, 30, 3))


@pytest.mark.usefixtures("no_faces")
def test_make_index_and_render_cut_the_subject_window(tmp_path):
    import json

    from click.testing import CliRunner

    from mosaicist.cli import main

    folder = tmp_path / "photos"
    folder.mkdir()
    # One wide photo: textured at its right end, flat grey elsewhere.
    Image.fromarray(blob_photo(300, 100, 250, 30)).save(folder / "wide.png")
    target = tmp_path / "target.png"
    Image.fromarray(np.full((10, 24, 3), 120, np.uint8)).save(target)  # 2 x 3 cells of 8 x 5
    cache = ["--cache-dir", str(tmp_path / "cache")]
    runner = CliRunner()
    indexed = runner.invoke(main, ["index", str(folder), "--tile-px", "8", "--aspect", "3:2",
                                   *cache])
    assert indexed.exit_code == 0, indexed.output
    assert "1 tile of 8x5 px" in indexed.stderr and "-3x2-" in indexed.stderr
    outputs = {}
    for crop in ("centre", "subject"):
        output = tmp_path / f"{crop}.png"
        made = runner.invoke(main, [
            "make", str(target), "--tiles", str(folder), "--preset", "seed", "--crop", crop,
            "--aspect", "3:2", "--cell", "8", "--match-px", "8", "--tile-px", "48",
            "-o", str(output), "--placements", str(tmp_path / f"{crop}.json"), *cache])
        assert made.exit_code == 0, made.output
        outputs[crop] = np.asarray(Image.open(output))
    # Drawn from the original at 48 x 32 px per tile: the subject window shows the texture.
    assert outputs["subject"].shape == (2 * 32, 3 * 48, 3)
    def texture(picture):
        return np.abs(np.diff(picture.astype(int), axis=1)).max()

    assert texture(outputs["subject"]) > 60 and texture(outputs["centre"]) < 5
    # Rendering the placements again cuts the window the index stored.
    rendered = runner.invoke(main, ["render", str(tmp_path / "subject.json"),
                                    "-o", str(tmp_path / "again.png"), *cache])
    assert rendered.exit_code == 0, rendered.output
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "again.png")),
                                  outputs["subject"])
    settings = json.loads((tmp_path / "subject.json").read_text())["settings"]
    assert (settings["crop"], settings["aspect"]) == ("subject", "3:2")


@pytest.mark.usefixtures("no_faces")
@pytest.mark.parametrize("mode", ["I;16", "I", "1", "P", "RGBA", "LA", "CMYK"])
def test_subject_window_of_a_photo_of_any_mode(mode):
    # A 16-bit grey photo raised Pillow's "image has wrong mode" when reduced for the
    # analysis; every mode is read as the tiles read it (to_rgb).
    picture = np.zeros((100, 600), np.uint8)
    picture[:, 500:] = np.random.default_rng(3).integers(0, 2, (100, 100)) * 255
    if mode == "I;16":
        image = Image.fromarray(picture.astype(np.uint16) * 257)
        assert image.mode == "I;16"
    else:
        image = Image.fromarray(picture).convert(mode)
    window = choose_window(image, (1, 1), "subject")
    assert window.top == 0 and abs(window.left - 500) <= 10, window
