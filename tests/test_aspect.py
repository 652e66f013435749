"""Rectangular cells and tiles (``aspect``): the whole pipeline, placements, viewer and CLI.

The matching, rendering and metrics of rectangles are checked module by module
(test_match, test_render, test_metrics...); here they are put together, with
libraries made of synthetic tile arrays.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from test_match import smooth_images

from mosaicist import MosaicOptions, Placements
from mosaicist import make_mosaic as _make_mosaic
from mosaicist.aspect import aspect_pair, parse_aspect
from mosaicist.errors import OptionError
from mosaicist.grid import make_grid
from mosaicist.library import TileLibrary
from mosaicist.match import brute_force
from mosaicist.render import IndexPictures, MosaicRenderer
from mosaicist.sources import open_source
from mosaicist.transforms import SHAPE_KEEPING, apply_transform, augment_transforms

# Exact mechanisms: the seed's method unless a test asks for the default look.
make_mosaic = functools.partial(_make_mosaic, preset="seed")


def array_library(root, tiles: np.ndarray, aspect: str = "1:1") -> TileLibrary:
    """A library of ``tiles`` (``(M, h, w, 3)``) at ``aspect``, as an index would open."""
    (root / "photos").mkdir(parents=True, exist_ok=True)
    (root / "index").mkdir(exist_ok=True)
    source = open_source(str(root / "photos"), root / "cache")
    ids = [f"t{index:04d}.png" for index in range(len(tiles))]
    return TileLibrary(source, tiles.shape[2], root / "index", ids, tiles, generation=1,
                       aspect=MosaicOptions(aspect=aspect).aspect_ratio)


def picture(height: int, width: int, seed: int = 0) -> np.ndarray:
    return smooth_images(np.random.default_rng(seed), 1, width, noise=12, height=height)[0]


@pytest.mark.parametrize(("aspect", "cell", "tile", "tile_height"),
                         [("3:2", 16, 32, 21), ("2:3", 8, 16, 24), ("4:3", 12, 24, 18)])
def test_exact_mosaic_of_rectangles(tmp_path, aspect, cell, tile, tile_height):
    rng = np.random.default_rng(tile)
    tiles = smooth_images(rng, 400, tile, noise=10, height=tile_height)
    library = array_library(tmp_path, tiles, aspect)
    target = picture(101, 131)
    mosaic = make_mosaic(target, library, cell_px=cell, tile_px=tile, aspect=aspect)
    options = mosaic.options
    grid = mosaic.grid
    assert (grid.cell_px, grid.cell_height) == (cell, options.cell_height)
    assert (grid.cols, grid.rows) == (131 // cell, 101 // options.cell_height)
    # The picture is exactly cols * tile_w by rows * tile_h.
    assert mosaic.image.shape == (grid.rows * tile_height, grid.cols * tile, 3)
    report = mosaic.report()
    assert report["output_size"] == {"width": grid.cols * tile,
                                     "height": grid.rows * tile_height}
    assert report["grid"]["cell_height"] == options.cell_height
    assert report["settings"]["aspect"] == aspect
    # Every pick is the exact optimum (brute force over the tile's pixels).
    cells = make_grid(target, cell, cell_height=options.cell_height).cells
    reference = brute_force(cells, tiles)
    assert np.array_equal(mosaic.placements.tile, reference.tile)
    assert np.array_equal(mosaic.placements.distance, reference.distance)
    # Each cell of the picture is its tile.
    row, col = grid.rows - 1, 1
    drawn = mosaic.image[row * tile_height:(row + 1) * tile_height, col * tile:(col + 1) * tile]
    assert np.array_equal(drawn, tiles[mosaic.placements.tile[row * grid.cols + col]])
    # Metrics at viewing scale keep the cells' shape: 4 px across, round(4 H / W) down.
    width, height = options.aspect_ratio
    assert mosaic.metrics["view_height"] == max(1, round(4 * height / width))


def test_default_look_on_tall_rectangles(tmp_path):
    tiles = smooth_images(np.random.default_rng(3), 150, 12, noise=10, height=18)
    library = array_library(tmp_path, tiles, "2:3")
    mosaic = _make_mosaic(picture(90, 72, seed=2), library, cell_px=6, tile_px=12,
                          aspect="2:3")
    grid = mosaic.grid
    assert (grid.rows, grid.cols, grid.cell_height) == (10, 12, 9)
    assert mosaic.image.shape == (10 * 18, 12 * 12, 3)
    # Each photo once (120 cells, 150 photos), tinted toward its cell.
    assert len(np.unique(mosaic.placements.tile)) == len(grid)
    assert mosaic.assignment is not None and mosaic.assignment.certified
    assert np.abs(mosaic.placements.tint).sum() > 0


def test_augment_tries_only_the_transforms_that_keep_the_shape(tmp_path):
    rng = np.random.default_rng(4)
    tiles = smooth_images(rng, 60, 9, noise=20, height=6)
    library = array_library(tmp_path, tiles, "3:2")
    target = picture(36, 45, seed=4)
    mosaic = make_mosaic(target, library, cell_px=9, tile_px=9, aspect="3:2", augment="all")
    codes = augment_transforms("all", (3, 2))
    assert codes == SHAPE_KEEPING
    assert set(np.unique(mosaic.placements.transform).tolist()) <= set(codes)
    assert len(np.unique(mosaic.placements.transform)) > 1
    # The exact optimum over every tile under every shape-keeping transform.
    candidates = np.concatenate([apply_transform(tiles, code)[:, None] for code in codes],
                                axis=1).reshape(-1, 6, 9, 3)
    reference = brute_force(make_grid(target, 9, cell_height=6).cells, candidates)
    assert np.array_equal(mosaic.placements.tile, reference.tile // len(codes))
    assert np.array_equal(mosaic.placements.transform,
                          np.asarray(codes)[reference.tile % len(codes)])
    assert mosaic.image.shape == (6 * 6, 5 * 9, 3)


def test_a_library_of_another_shape_is_refused(tmp_path):
    library = array_library(tmp_path, np.zeros((5, 32, 32, 3), np.uint8))
    with pytest.raises(OptionError, match="indexed at 32x32 px, but match_px and aspect make "
                                          "32x21 px"):
        make_mosaic(picture(40, 40), library, cell_px=16, aspect="3:2")
    # A library whose tiles are not the shape it claims is refused before matching.
    lying = array_library(tmp_path, np.zeros((5, 32, 32, 3), np.uint8), "3:2")
    with pytest.raises(OptionError, match="tiles are 32x32 px, but match_px 32 at aspect 3:2 "
                                          "needs 32x21"):
        make_mosaic(picture(40, 40), lying, cell_px=16, aspect="3:2")


def test_placements_keep_the_aspect_and_draw_again(tmp_path):
    tiles = smooth_images(np.random.default_rng(5), 80, 16, noise=10, height=9)
    library = array_library(tmp_path, tiles, "16:9")
    mosaic = make_mosaic(picture(60, 70, seed=5), library, cell_px=8, tile_px=16,
                         aspect="16:9", augment="flips")
    mosaic.placements.write(tmp_path / "wall.json")
    again = Placements.read(tmp_path / "wall.json")
    assert again.options.aspect == "16:9"
    assert (again.options.tile_height, again.options.cell_height) == (9, 5)
    drawn = MosaicRenderer(again, IndexPictures(tiles, again.tile)).image()
    assert np.array_equal(drawn, mosaic.image)


def test_rectangular_options_sizes():
    options = MosaicOptions(cell_px=16, tile_px=96, aspect="3:2")
    assert (options.cell_height, options.tile_height, options.match_px,
            options.match_height) == (11, 64, 32, 21)


# --- the viewer's pointer on rectangular cells ----------------------------------------------

def test_browser_pointer_maps_to_rectangular_cells(browser, tmp_path):
    rows, cols, tile_w, tile_h = 4, 5, 12, 8
    rng = np.random.default_rng(6)
    tiles = rng.integers(0, 256, (rows * cols, tile_h, tile_w, 3), dtype=np.uint8)
    placements = Placements(rows, cols, np.arange(rows * cols), np.zeros(rows * cols),
                            [f"t{index:02d}.png" for index in range(rows * cols)],
                            options=MosaicOptions(aspect="3:2", tile_px=tile_w))
    renderer = MosaicRenderer(placements, IndexPictures(tiles, placements.tile))
    renderer.write(tmp_path / "wall.dzi", MosaicOptions(dzi_format="png"))
    page = browser.new_page()
    try:
        page.goto((tmp_path / "wall.html").as_uri())
        page.wait_for_function("window.mosaicist !== undefined", timeout=30_000)
        # Points near the corners of cells: a square-cell mapping would get their rows wrong.
        for x, y in [(1, 1), (11.5, 7.5), (12.5, 8.5), (59, 31), (30, 17), (5, 25)]:
            cell = page.evaluate("([x, y]) => window.mosaicist.cellAt(x, y)", [x, y])
            row, col = int(y // tile_h), int(x // tile_w)
            assert (cell["row"], cell["col"]) == (row, col), (x, y)
            assert cell["source"] == f"t{row * cols + col:02d}.png"
        assert page.evaluate("window.mosaicist.cellAt(60, 10)") is None
    finally:
        page.close()


# --- end to end: a folder of 3:2 photos, the command line, and a bigger render ------------


def test_cli_makes_and_renders_a_three_by_two_mosaic(tmp_path):
    import json

    from click.testing import CliRunner
    from PIL import Image

    from mosaicist.cli import main

    rng = np.random.default_rng(8)
    photos = tmp_path / "photos"
    photos.mkdir()
    colours = rng.integers(20, 236, (24, 3))
    for index, colour in enumerate(colours):
        # 3:2 photos: a flat colour with a darker left third, so orientation shows.
        pixels = np.empty((40, 60, 3), np.uint8)
        pixels[:] = colour
        pixels[:, :20] = colour // 2
        Image.fromarray(pixels).save(photos / f"p{index:02d}.png")
    Image.fromarray(picture(100, 150, seed=8)).save(tmp_path / "target.png")
    runner = CliRunner()
    made = runner.invoke(main, [
        "make", str(tmp_path / "target.png"), "--tiles", str(photos), "--aspect", "3:2",
        "--cell", "10", "--tile-px", "30", "--preset", "seed", "-o", str(tmp_path / "m.png"),
        "--placements", str(tmp_path / "m.json"), "--report", str(tmp_path / "r.json"),
        "--cache-dir", str(tmp_path / "cache"), "--quiet",
    ])
    assert made.exit_code == 0, made.output
    report = json.loads((tmp_path / "r.json").read_text())
    rows, cols = report["grid"]["rows"], report["grid"]["cols"]
    # Cells of 10x7 on a 150x100 target; tiles of 30x20 (3:2).
    assert (rows, cols, report["grid"]["cell_height"]) == (100 // 7, 150 // 10, 7)
    with Image.open(tmp_path / "m.png") as image:
        assert image.size == (cols * 30, rows * 20)
        drawn = np.asarray(image.convert("RGB"))
    placements = Placements.read(tmp_path / "m.json")
    assert placements.options.aspect == "3:2"
    first = int(placements.source_ids[0][1:3])
    assert np.abs(drawn[5, 25].astype(int) - colours[first]).max() <= 2  # the light part
    assert np.abs(drawn[5, 3].astype(int) - colours[first] // 2).max() <= 2  # the dark third
    # Rendered again from the originals, bigger: 3:2 tiles of 60x40.
    rendered = runner.invoke(main, [
        "render", str(tmp_path / "m.json"), "-o", str(tmp_path / "big.png"), "--tile-px", "60",
        "--cache-dir", str(tmp_path / "cache"), "--quiet",
    ])
    assert rendered.exit_code == 0, rendered.output
    with Image.open(tmp_path / "big.png") as image:
        assert image.size == (cols * 60, rows * 40)
        big = np.asarray(image.convert("RGB"))
    assert np.abs(big[10, 50].astype(int) - colours[first]).max() <= 2
    assert np.abs(big[10, 5].astype(int) - colours[first] // 2).max() <= 2
    # CSV placements record no settings: the aspect is given, and the viewer of a
    # Deep Zoom render maps its pointer to the 3:2 cells.
    placements.write_csv(tmp_path / "m.csv")
    from_csv = runner.invoke(main, [
        "render", str(tmp_path / "m.csv"), "--tiles", str(photos), "--aspect", "3:2",
        "--tile-px", "15", "-o", str(tmp_path / "wall.dzi"), "--cache-dir",
        str(tmp_path / "cache"), "--quiet",
    ])
    assert from_csv.exit_code == 0, from_csv.output
    from mosaicist.viewer import read_viewer_data

    data = read_viewer_data(tmp_path / "wall.html")
    assert (data["cols"], data["rows"], data["cell_px"], data["cell_height"]) == (
        cols, rows, 15, 10)


@pytest.mark.parametrize(("text", "message"), [
    # These are two positive whole numbers: the message said they were not.
    ("10000:1", "aspect 10000:1 is more elongated than 16:1"),
    ("1:10000", "aspect 1:10000 is more elongated than 1:16"),
    ("17:1", "aspect 17:1 is more elongated than 16:1"),
    ("10000:10000", "aspect sides must have at most 4 digits, got '10000:10000'"),
    pytest.param("9" * 5000 + ":1", "aspect sides must have at most 4 digits",
                 id="too-many-digits-for-int"),
    # These are not.
    ("0:2", "aspect must be two positive whole numbers as W:H"),
    ("1:2:3", "aspect must be two positive whole numbers as W:H"),
    ("1.5:1", "aspect must be two positive whole numbers as W:H"),
])
def test_an_aspect_refused_says_why(text, message):
    with pytest.raises(OptionError) as caught:
        MosaicOptions(aspect=text)
    assert str(caught.value).startswith(message) and caught.value.parameters == ("aspect",)
    assert MosaicOptions(aspect="16:1").aspect == "16:1"
    assert MosaicOptions(aspect="1920x1080").aspect == "16:9"


def test_leading_zeros_of_an_aspect_count_for_nothing():
    # Thousands of leading zeros passed the digit check (zeros stripped) and then int()
    # refused the whole string: a ValueError, not the option's error.
    zeros = "0" * 5000
    assert MosaicOptions(aspect=f"{zeros}3:{zeros}2").aspect == "3:2"
    assert MosaicOptions(aspect=" 0016 : 0001 ").aspect == "16:1"
    with pytest.raises(OptionError, match="^aspect must be two positive whole numbers"):
        MosaicOptions(aspect=f"{zeros}:1")


@pytest.mark.parametrize("aspect", [5, None, 1.5, (1, 2, 3), (3,), (1.5, 1), (True, 1),
                                    (0, 1), (-3, 2), ("3", "2"), {3: 2}])
def test_aspect_pairs_are_two_positive_whole_numbers(aspect):
    # (1, 2, 3) was taken as 1:2, and 5 raised a TypeError.
    with pytest.raises(OptionError, match=r"^aspect must be a text W:H \(e\.g\. '3:2'\) or a "
                                          r"pair of positive whole numbers"):
        aspect_pair(aspect)


def test_aspect_pairs_reduce_and_take_numpy_integers():
    assert aspect_pair((6, 4)) == aspect_pair([3, 2]) == aspect_pair("6:4") == (3, 2)
    assert aspect_pair(np.array([1920, 1080])[[0, 1]].tolist()) == (16, 9)
    assert aspect_pair((np.int64(4), np.int32(3))) == (4, 3)
    assert type(aspect_pair((np.int64(4), np.int32(3)))[0]) is int
    with pytest.raises(OptionError, match="aspect 20:1 is more elongated than 16:1"):
        aspect_pair((20, 1))
    with pytest.raises(OptionError, match="aspect 1:20 is more elongated than 1:16"):
        aspect_pair((1, 20))


@pytest.mark.parametrize("pair", [(10**5000, 10**5000), (1, 10**400), (10**5000, 1)])
def test_aspect_pairs_of_numbers_too_long_to_print_are_one_short_error(pair):
    # (10**5000, 10**5000) raised Python's "Exceeds the limit (4300 digits)" while the
    # message was made; (1, 10**400) printed all 401 digits.
    with pytest.raises(OptionError) as caught:
        aspect_pair(pair)
    message = str(caught.value)
    assert message.startswith("aspect ") and len(message) < 120 and "digits" in message


def test_aspects_take_ascii_digits_only():
    # "１:２" (full-width) and "٣:٢" (Arabic-Indic) were read as 1:2 and 3:2.
    for text in ("\uff11:\uff12", "\u0663:\u0662", "\U0001d7d1:\U0001d7d0"):
        with pytest.raises(OptionError):
            parse_aspect(text)
    assert parse_aspect(" 3 : 2 ") == (3, 2)


@pytest.mark.parametrize("text", ["1" * 200_000, "0" * 200_000 + "1000:1", "3:" + "2" * 200_000,
                                  "x" * 200_000, "1:" + "0" * 200_000],
                         ids=["digits", "zeros-then-elongated", "long-side", "letters", "zero"])
def test_an_aspect_of_any_length_is_refused_in_a_short_message(text):
    from mosaicist.aspect import aspect_pair, parse_aspect

    for check in (parse_aspect, aspect_pair):
        with pytest.raises(OptionError) as refused:
            check(text)
        assert len(str(refused.value)) < 300 and "aspect" in str(refused.value)


@pytest.mark.parametrize("setting", ["search", "device"])
def test_an_unknown_search_or_device_of_any_length_is_refused_in_a_short_message(setting):
    from mosaicist.match import matcher_for
    from mosaicist.options import MosaicOptions

    with pytest.raises(OptionError) as refused:
        matcher_for(MosaicOptions(**{setting: "z" * 200_000}))
    assert len(str(refused.value)) < 300 and setting in str(refused.value)
