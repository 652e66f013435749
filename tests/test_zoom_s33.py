"""Deep Zoom pyramids and their viewer, hostile cases (session 33).

Every pyramid is checked against the Deep Zoom layout worked out here from
scratch (level ``k`` is ``ceil(side / 2^(deepest - k))``, tiles of
``tile_size`` plus the overlap on each side that has a neighbour), not against
:class:`mosaicist.render.DeepZoomLayout`.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from PIL import Image

from mosaicist.errors import OptionError
from mosaicist.placements import Placements
from mosaicist.render import DeepZoomLayout, files_folder, read_layout, write_deep_zoom

NAMESPACE = "{http://schemas.microsoft.com/deepzoom/2008}"


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def bands_of(image: np.ndarray, height: int):
    for top in range(0, image.shape[0], height):
        yield image[top:top + height]


def halved(image: np.ndarray) -> np.ndarray:
    """The level above: rounded 2x2 means, an odd last row or column repeated."""
    pixels = image.astype(np.int64)
    if pixels.shape[0] % 2:
        pixels = np.concatenate([pixels, pixels[-1:]], 0)
    if pixels.shape[1] % 2:
        pixels = np.concatenate([pixels, pixels[:, -1:]], 1)
    total = pixels[0::2, 0::2] + pixels[1::2, 0::2] + pixels[0::2, 1::2] + pixels[1::2, 1::2]
    return ((total + 2) // 4).astype(np.uint8)


def check_against_the_spec(path, image: np.ndarray, tile_size: int, overlap: int,
                           tile_format: str) -> None:
    """The descriptor, every level's tile names and sizes, and (PNG) their pixels."""
    height, width = image.shape[:2]
    root = ElementTree.parse(path).getroot()
    assert root.tag == f"{NAMESPACE}Image"
    assert (root.get("Format"), root.get("TileSize"), root.get("Overlap")) == (
        tile_format, str(tile_size), str(overlap))
    size = root.find(f"{NAMESPACE}Size")
    assert (size.get("Width"), size.get("Height")) == (str(width), str(height))
    deepest = math.ceil(math.log2(max(width, height))) if max(width, height) > 1 else 0
    folder = files_folder(path)
    assert sorted(int(level.name) for level in folder.iterdir()) == list(range(deepest + 1))
    level_image = image
    for level in range(deepest, -1, -1):
        scale = 2 ** (deepest - level)
        level_width, level_height = -(-width // scale), -(-height // scale)
        assert level_image.shape[:2] == (level_height, level_width)
        columns, rows = -(-level_width // tile_size), -(-level_height // tile_size)
        names = sorted(tile.name for tile in (folder / str(level)).iterdir())
        assert names == sorted(f"{column}_{row}.{tile_format}" for column in range(columns)
                               for row in range(rows)), level
        for row in range(rows):
            top = row * tile_size - (overlap if row else 0)
            bottom = min(level_height, (row + 1) * tile_size + overlap)
            for column in range(columns):
                left = column * tile_size - (overlap if column else 0)
                right = min(level_width, (column + 1) * tile_size + overlap)
                with Image.open(folder / str(level) / f"{column}_{row}.{tile_format}") as tile:
                    assert tile.size == (right - left, bottom - top), (level, column, row)
                    if tile_format == "png":
                        assert np.array_equal(np.asarray(tile.convert("RGB")),
                                              level_image[top:bottom, left:right])
        if level:
            level_image = halved(level_image)


@pytest.mark.parametrize(
    ("width", "height", "tile_size", "overlap", "tile_format", "band"),
    [(1, 1, 1, 0, "png", 1), (1, 1, 254, 1, "jpeg", 1), (1, 9, 2, 1, "png", 2),
     (17, 1, 3, 1, "webp", 1), (31, 33, 4, 2, "png", 7), (32, 32, 4, 0, "jpeg", 5),
     (33, 31, 1, 0, "png", 64), (65, 3, 7, 3, "png", 2), (64, 65, 16, 8, "webp", 13),
     (129, 127, 64, 1, "png", 100)],
)
def test_pyramids_of_odd_sizes_follow_the_deep_zoom_layout(tmp_path, width, height, tile_size,
                                                           overlap, tile_format, band):
    image = noise(height, width, width * 1000 + height)
    path = tmp_path / "m.dzi"
    write_deep_zoom(bands_of(image, band), width, height, path, tile_size=tile_size,
                    overlap=overlap, format=tile_format, workers=2)
    check_against_the_spec(path, image, tile_size, overlap, tile_format)


# --- settings of the wrong kind, through the Python API ------------------------------------

@pytest.mark.parametrize("overlap", [1.5, 2.0, True, "1"])
def test_an_overlap_that_is_no_whole_number_is_refused_by_name(tmp_path, overlap):
    # 1.5 was written into the descriptor as Overlap="1.5", which read_layout (and any
    # viewer) refuses; with more than one tile a row it failed in an array's shape.
    path = tmp_path / "m.dzi"
    with pytest.raises(OptionError, match=r"^dzi_overlap must be a whole number, got "):
        write_deep_zoom(bands_of(noise(40, 30), 8), 30, 40, path, tile_size=16,
                        overlap=overlap)
    assert list(tmp_path.iterdir()) == []


def test_a_tile_format_that_is_no_text_is_refused_by_name(tmp_path):
    with pytest.raises(OptionError, match=r"^unknown dzi_format None; use jpeg, png or webp$"):
        write_deep_zoom(bands_of(noise(4, 4), 4), 4, 4, tmp_path / "m.dzi", format=None)
    assert list(tmp_path.iterdir()) == []


def test_sizes_and_settings_computed_with_numpy_are_taken(tmp_path):
    # A width from NumPy arithmetic failed on bit_length (AttributeError).
    image = noise(20, 30)
    path = tmp_path / "m.dzi"
    layout = write_deep_zoom(bands_of(image, 6), np.int64(30), np.int32(20), path,
                             tile_size=np.int64(8), overlap=np.int16(1), format="png",
                             quality=np.int64(80))
    assert layout == DeepZoomLayout(30, 20, 8, 1, "png")
    assert all(type(value) is int for value in (layout.width, layout.height, layout.tile_size,
                                                layout.overlap))
    assert read_layout(path) == layout
    check_against_the_spec(path, image, 8, 1, "png")
    assert DeepZoomLayout(np.int64(300), np.int64(20)).deepest_level == 9


@pytest.mark.parametrize(("width", "height", "name"), [(30.0, 20, "width"), (30, "20", "height")])
def test_sizes_that_are_no_whole_numbers_are_refused_by_name(tmp_path, width, height, name):
    with pytest.raises(OptionError, match=rf"^{name} must be a whole number, got "):
        write_deep_zoom(bands_of(noise(20, 30), 6), width, height, tmp_path / "m.dzi")
    assert list(tmp_path.iterdir()) == []


# --- the viewer in a browser ----------------------------------------------------------------

def test_browser_served_viewer_logs_no_error(browser, tmp_path):
    # Chromium asked the viewer's server for /favicon.ico, a 404 logged as a console
    # error on every page 'mosaicist view' served.
    from mosaicist.viewer import make_server, write_viewer

    rows, cols, cell = 2, 3, 16
    image = np.repeat(np.repeat(noise(rows, cols), cell, 0), cell, 1)
    path = tmp_path / "m.dzi"
    write_deep_zoom(bands_of(image, cell), cols * cell, rows * cell, path, format="png")
    placements = Placements(rows, cols, np.arange(rows * cols), np.zeros(rows * cols, np.int64),
                            [f"t{index}.png" for index in range(rows * cols)])
    write_viewer(path, placements)
    context = browser.new_context(viewport={"width": 320, "height": 240})
    page = context.new_page()
    messages: list[str] = []
    page.on("console", lambda message: messages.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: messages.append(f"page error: {error}"))
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    server, url = make_server(path)
    try:
        with server:
            page.goto(url)
            page.wait_for_function(
                "() => window.mosaicistViewer && window.mosaicistViewer.world.getItemCount() > 0"
                " && window.mosaicistViewer.world.getItemAt(0).getFullyLoaded()",
                timeout=30_000)
            # The favicon's request is made after the page's load; a round trip to the
            # server after that one has come back.
            page.evaluate("() => fetch('m.dzi').then((answer) => answer.text())")
            page.wait_for_load_state("networkidle", timeout=30_000)
    finally:
        context.close()
    assert messages == []
    origin = url.rsplit("/", 1)[0] + "/"
    assert all(request.startswith((origin, "data:")) for request in requests), requests
