"""Hostile and property tests of how a mosaic is sized, cut into cells and drawn (session 34).

Found here:

* ``--cells`` at a tall or wide aspect chose a cell width whose height was over
  the 1024 pixels a side may be, and ``--print`` a tile width likewise: the run
  then stopped on "--cell 200 at --aspect 1:16 is 3200 pixels tall", naming a
  ``--cell`` (or ``--tile-px``) the user never gave.
* The shape warning advised widths ("cells of 855 px" at 5:6) whose heights are
  over that limit, which the settings then refuse.
* A target size of two huge negative sides was called too large, not empty.
"""

from __future__ import annotations

import random
import re
from fractions import Fraction

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_colour_folder
from PIL import Image

from mosaicist import make_mosaic
from mosaicist.aspect import height_for, parse_aspect
from mosaicist.cli import main
from mosaicist.errors import MosaicistError, OptionError
from mosaicist.grid import make_grid
from mosaicist.imaging import read_target, target_size
from mosaicist.options import CELL_PX_RANGE, TILE_PX_RANGE, MosaicOptions
from mosaicist.placements import Placements
from mosaicist.render import IndexPictures, MosaicRenderer
from mosaicist.sizing import (
    SizePlan,
    cell_px_for_cells,
    fit_options,
    options_plan,
    parse_print_size,
    plan_sizes,
    tile_px_for_print,
)

#: The largest side of a cell or a tile, width or height.
MOST_SIDE = CELL_PX_RANGE[1]


def random_plan_settings(rng: random.Random) -> tuple[tuple[int, int], dict]:
    """A small random target size and a random combination of the size settings."""
    width = rng.choice([1, 2, 3, 7, 97, rng.randint(1, 60), rng.randint(1, 300)])
    height = rng.choice([1, 2, 3, 89, 101, rng.randint(1, 60), rng.randint(1, 300)])
    settings: dict = {}
    if rng.random() < 0.5:
        # Sides of 1 to 16: from 1:16 to 16:1, the most elongated allowed.
        settings["aspect"] = f"{rng.randint(1, 16)}:{rng.randint(1, 16)}"
    if rng.random() < 0.6:
        settings["cell_px"] = rng.choice([1, 2, 3, 5, 7, 16, rng.randint(1, 64)])
    if rng.random() < 0.6:
        settings["tile_px"] = rng.choice([1, 2, 3, 5, 7, 32, rng.randint(1, 64)])
    if rng.random() < 0.4:
        settings["cells"] = rng.choice([1, 2, rng.randint(1, 400)])
    if rng.random() < 0.4:
        unit = rng.choice(["cm", "mm", "in"])
        settings["print_size"] = f"{rng.randint(1, 60)}x{rng.randint(1, 60)}{unit}"
    if rng.random() < 0.4:
        settings["dpi"] = rng.choice([1, 2, 10, 72, 150, 300])
    if rng.random() < 0.15:
        settings["adaptive"] = rng.randint(1, 2)
    return (width, height), settings


def check_plan(size: tuple[int, int], settings: dict, plan: SizePlan) -> None:
    """The documented properties of a plan, and that a grid cut by them agrees."""
    width, height = size
    ratio = parse_aspect(plan.aspect)
    left, top, crop_width, crop_height = plan.crop
    # The crop lies in the target and is centred in it, rounding down.
    assert 0 <= left and 0 <= top and left + crop_width <= width and top + crop_height <= height
    assert (left, top) == ((width - crop_width) // 2, (height - crop_height) // 2)
    if "print_size" in settings:
        print_width, print_height = parse_print_size(settings["print_size"]).inches()
        # The largest window of the print's shape: one side whole, the other rounded.
        assert crop_width == width or crop_height == height
        if crop_width < width:
            assert abs(Fraction(crop_width) - crop_height * print_width / print_height) <= \
                Fraction(1, 2) or crop_width == 1
        if crop_height < height:
            assert abs(Fraction(crop_height) - crop_width * print_height / print_width) <= \
                Fraction(1, 2) or crop_height == 1
    else:
        assert plan.crop == (0, 0, width, height)
    # Whole cells, as many as fit the crop; heights follow the aspect, within the limits.
    assert plan.cell_height == height_for(plan.cell_px, ratio)
    assert plan.tile_height == height_for(plan.tile_px, ratio)
    assert max(plan.cell_px, plan.cell_height) <= MOST_SIDE
    assert max(plan.tile_px, plan.tile_height) <= TILE_PX_RANGE[1]
    assert plan.cols == crop_width // plan.cell_px >= 1
    assert plan.rows == crop_height // plan.cell_height >= 1
    grid_left, grid_top, grid_width, grid_height = plan.grid_crop
    assert (grid_width, grid_height) == (plan.cols * plan.cell_px, plan.rows * plan.cell_height)
    assert grid_left - left == (crop_width - grid_width) // 2
    assert grid_top - top == (crop_height - grid_height) // 2
    assert plan.output_size == (plan.cols * plan.tile_px, plan.rows * plan.tile_height)
    if "cell_px" in settings and "cells" not in settings:
        assert plan.cell_px == settings["cell_px"]
    if "tile_px" in settings and "print_size" not in settings:
        assert plan.tile_px == settings["tile_px"]
    # The cells a grid cuts from the crop are the plan's, and put together again they are
    # the grid's window of the target, pixel for pixel: no pixel lost, none twice.
    target = np.random.default_rng(width * 1000 + height).integers(
        0, 256, (height, width, 3), dtype=np.uint8)
    grid = make_grid(target[top:top + crop_height, left:left + crop_width], plan.cell_px,
                     cell_height=plan.cell_height)
    assert (grid.rows, grid.cols) == (plan.rows, plan.cols)
    assert (grid.left + left, grid.top + top) == (grid_left, grid_top)
    joined = (grid.cells.reshape(grid.rows, grid.cols, plan.cell_height, plan.cell_px, 3)
              .transpose(0, 2, 1, 3, 4).reshape(grid_height, grid_width, 3))
    assert np.array_equal(joined, target[grid_top:grid_top + grid_height,
                                         grid_left:grid_left + grid_width])


@pytest.mark.parametrize("seed", range(4))
def test_random_size_settings_give_plans_with_the_documented_properties(seed):
    # Every combination either gives a plan with the documented properties, which the
    # settings then take as they are, or is refused with a one-line message naming a
    # setting or the target.
    rng = random.Random(seed)
    planned = refused = 0
    for _ in range(150):
        size, settings = random_plan_settings(rng)
        try:
            plan = plan_sizes(size, **settings)
        except MosaicistError as error:
            text = str(error)
            assert "\n" not in text and len(text) < 300, text
            assert re.search(r"\b(cells|print_size|dpi|adaptive|target|cell_px|tile_px)\b",
                             text), text
            refused += 1
            continue
        planned += 1
        check_plan(size, settings, plan)
        # What the plan chose, the settings take (a cell or tile height past the limit
        # was refused here, naming a --cell or --tile-px the user never gave).
        options = MosaicOptions(**{name: value for name, value in settings.items()
                                   if name != "adaptive"}, adaptive=0)
        try:
            same = options_plan(options, size)
        except OptionError as error:
            # A cell or tile width given beside the count or print that chooses another.
            assert str(error).endswith("; give one of them"), str(error)
            continue
        if not settings.get("adaptive"):
            assert same == plan
        fitted = fit_options(options, same)
        assert (fitted.cell_height, fitted.tile_height) == (same.cell_height, same.tile_height)
    assert planned >= 20 and refused >= 20, (planned, refused)


@pytest.mark.parametrize("target, aspect", [((200, 5000), "1:16"), ((5000, 200), "16:1"),
                                            ((1000, 4000), "5:16")])
def test_cells_never_choose_a_cell_taller_or_wider_than_a_side_may_be(target, aspect):
    # 1 cell of a 200 x 5000 target at 1:16 was a cell 200 wide, 3200 tall: refused by the
    # settings as "--cell 200 at --aspect 1:16 is 3200 pixels tall", a --cell never given.
    ratio = parse_aspect(aspect)
    for cells in (1, 3, 12, 40):
        try:
            chosen = cell_px_for_cells(target, cells, aspect)
        except OptionError as error:
            assert str(error).startswith(f"cells {cells} is fewer than a "), str(error)
            largest = int(re.search(r"\((\d+) px wide, the largest\)", str(error)).group(1))
            assert max(largest, height_for(largest, ratio)) <= MOST_SIDE
            continue
        assert max(chosen, height_for(chosen, ratio)) <= MOST_SIDE
        plan = plan_sizes(target, aspect=aspect, cells=cells)
        fit_options(MosaicOptions(aspect=aspect, cells=cells), plan)


def test_cells_at_a_tall_aspect_name_the_cells_they_can_have_on_the_command_line(tmp_path):
    tiles = make_colour_folder(tmp_path / "tiles", 4, size=8)
    target = tmp_path / "tall.png"
    Image.fromarray(np.zeros((5000, 200, 3), np.uint8)).save(target)
    result = CliRunner().invoke(main, [
        "make", str(target), "--tiles", str(tiles), "--preset", "seed", "--cells", "1",
        "--aspect", "1:16", "-o", str(tmp_path / "out.png"), "-q",
        "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code != 0
    message = result.output.strip()
    assert "--cell " not in message and "pixels tall" not in message, message
    assert message.endswith("--cells 1 is fewer than a 200x5000 target allows: at least 12 "
                            "1:16 cells (64 px wide, the largest)"), message


@pytest.mark.parametrize("target, aspect, cell_px, print_text", [
    ((200, 5000), "1:16", 64, "3x64in"),
    ((5000, 200), "16:1", 1024, "64x3in"),
])
def test_a_print_never_chooses_a_tile_taller_or_wider_than_a_side_may_be(
        target, aspect, cell_px, print_text):
    # 3 x 64 in at 300 dpi of a 3 x 4 grid of 1:16 cells chose tiles of 300 x 4800 px,
    # refused as "--tile-px 300 at --aspect 1:16 is 4800 pixels tall".
    with pytest.raises(OptionError, match=r"needs tiles about [\d,]+ px wide for a grid of "
                                          r"\d+x\d+ cells, over the (64x1,024|1,024x64) px "
                                          "that tiles may have at aspect (1:16|16:1);"):
        plan_sizes(target, aspect=aspect, cell_px=cell_px, print_size=print_text)
    # A print within reach gets the tiles nearest to it that the settings take.
    plan = plan_sizes(target, aspect=aspect, cell_px=cell_px, print_size=print_text, dpi=40)
    assert max(plan.tile_px, plan.tile_height) <= TILE_PX_RANGE[1]
    fit_options(MosaicOptions(aspect=aspect, cell_px=cell_px, print_size=print_text, dpi=40),
                plan)


def test_a_print_at_a_tall_aspect_is_refused_on_the_command_line_by_its_flags(tmp_path):
    tiles = make_colour_folder(tmp_path / "tiles", 4, size=8)
    target = tmp_path / "tall.png"
    Image.fromarray(np.zeros((5000, 200, 3), np.uint8)).save(target)
    result = CliRunner().invoke(main, [
        "make", str(target), "--tiles", str(tiles), "--preset", "seed", "--cell", "64",
        "--aspect", "1:16", "--print", "3x64in", "-o", str(tmp_path / "out.png"), "-q"])
    assert result.exit_code != 0
    message = result.output.strip()
    assert "--tile-px" not in message, message
    assert "--print 3x64in at --dpi 300 needs tiles about" in message, message


@pytest.mark.parametrize("settings, name", [
    ({"aspect": "1:16", "cell_px": 100}, "cell_px"),
    ({"aspect": "1:16", "tile_px": 65}, "tile_px"),
])
def test_plan_sizes_refuses_a_given_width_whose_height_is_over_a_side(settings, name):
    # The Python API reaches plan_sizes without the settings' check: the plan was made
    # with a cell 1600 px tall, which nothing downstream takes.
    with pytest.raises(OptionError, match=rf"^{name} \d+ at aspect 1:16 is \d+ pixels tall, "
                                          "over the 1024 a side may be$"):
        plan_sizes((2000, 20000), **settings)


def test_the_shape_warning_advises_only_widths_whose_heights_the_settings_take():
    # At 5:6, cells of 853 x 1024 px were advised to become 855 px wide: 1026 px tall.
    for aspect, cell_px in (("5:6", 853), ("10:13", 788)):
        ratio = parse_aspect(aspect)
        plan = SizePlan((4000, 4000), (0, 0, 4000, 4000), 4, 3, cell_px,
                        height_for(cell_px, ratio), 32, height_for(32, ratio), aspect)
        warning = plan.shape_warning()
        assert warning is not None
        advised = [int(width) for width in re.findall(r"cells of (\d+) px", warning)]
        assert advised, warning
        for width in advised:
            assert height_for(width, ratio) <= MOST_SIDE, warning
            MosaicOptions(aspect=aspect, cell_px=width)


def test_a_target_of_huge_negative_sides_is_said_to_have_no_pixels():
    with pytest.raises(MosaicistError, match="has no pixels"):
        plan_sizes((-(2**32), -(2**32)), name="t")


# --- extreme targets, end to end -----------------------------------------------------------


@pytest.mark.parametrize("size, settings, output", [
    ((1, 1), {"cell_px": 1}, (32, 32)),
    ((1, 1), {"cells": 1, "tile_px": 1}, (1, 1)),
    ((1, 300), {"cell_px": 1, "tile_px": 1}, (1, 300)),
    ((300, 1), {"cell_px": 1, "tile_px": 3}, (900, 3)),
    ((97, 89), {"cell_px": 7, "tile_px": 3}, (39, 36)),       # primes: leftovers both ways
    ((97, 89), {"cell_px": 7, "tile_px": 5, "aspect": "3:2"}, (65, 51)),
    ((89, 97), {"cells": 13, "tile_px": 1}, (3, 4)),
    ((300, 200), {"cells": 24, "print_size": "6x4cm", "dpi": 150}, (354, 236)),
])
def test_extreme_targets_come_out_at_exactly_the_planned_size(tmp_path, size, settings, output):
    tiles = make_colour_folder(tmp_path / "tiles", 3, size=6)
    width, height = size
    target = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    mosaic = make_mosaic(target, tiles, preset="seed", compute_metrics=False,
                         cache_dir=tmp_path / "cache", **settings)
    assert mosaic.sizes is not None and mosaic.sizes.output_size == output
    assert mosaic.image.shape == (output[1], output[0], 3)
    mosaic.write(tmp_path / "out.png")
    with Image.open(tmp_path / "out.png") as written:
        assert written.size == output


@pytest.mark.parametrize("size, settings, words", [
    ((1, 1), {}, "t: 1x1 pixels is smaller than one 16x16 cell"),
    ((1, 10_000), {}, "t: 1x10000 pixels is smaller than one 16x16 cell"),
    ((10_000, 1), {"cell_px": 2}, "t: 10000x1 pixels is smaller than one 2x2 cell"),
    ((10, 10), {"cells": 101}, "cells 101 is more than a 10x10 target holds: at most 100 cells"),
    ((1, 1), {"cells": 2}, "cells 2 is more than a 1x1 target holds: at most 1 cell (1 px"),
    ((1, 10_000), {"cells": 5}, "cells 5 is fewer than a 1x10000 target allows: at least "
                                "10,000 cells"),
])
def test_targets_too_small_for_the_cells_are_refused_in_one_line(size, settings, words):
    with pytest.raises(MosaicistError) as refused:
        plan_sizes(size, name="t", **settings)
    assert str(refused.value).startswith(words), str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_turned_targets_are_sized_and_cut_as_shown(tmp_path, orientation, suffix):
    # A 64 x 40 picture whose EXIF orientation turns it a quarter (5 to 8) is 40 x 64 as
    # shown: a 10 x 30 cm print crops it across 40 px, and the grid is cut from the turned
    # pixels.
    stored = np.random.default_rng(2).integers(0, 256, (40, 64, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"turned{suffix}"
    Image.fromarray(stored).save(path, exif=exif.tobytes(), **(
        {"quality": 100} if suffix == ".jpg" else {}))
    assert target_size(path) == (40, 64)
    shown = read_target(path)
    assert shown.shape == (64, 40, 3)
    plan = plan_sizes(target_size(path), cells=12, print_size="10x30cm", dpi=10)
    # 1:3 of a 40 x 64 picture is 21 x 64 (64 / 3 rounded), centred: 9 px off the left.
    assert plan.crop == (9, 0, 21, 64) and (plan.cols, plan.rows) == (2, 6)
    check_plan((40, 64), {"cells": 12, "print_size": "10x30cm"}, plan)
    tiles = make_colour_folder(tmp_path / "tiles", 3, size=6)
    mosaic = make_mosaic(path, tiles, preset="seed", cells=12, print_size="10x30cm", dpi=10,
                         cache_dir=tmp_path / "cache", compute_metrics=False)
    assert mosaic.sizes == plan
    grid_left, grid_top, grid_width, grid_height = plan.grid_crop
    assert np.array_equal(
        mosaic.grid.cells.reshape(plan.rows, plan.cols, plan.cell_height, plan.cell_px, 3)
        .transpose(0, 2, 1, 3, 4).reshape(grid_height, grid_width, 3),
        shown[grid_top:grid_top + grid_height, grid_left:grid_left + grid_width])


# --- drawing -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_drawn_pictures_put_every_tile_on_whole_pixels_of_its_cell(seed):
    # Random grids and tile sizes (1 px, odd, rectangular): the picture is cols * tile_px
    # by rows * tile_height, and each cell's block is exactly its tile.
    rng = np.random.default_rng(seed)
    for _ in range(20):
        rows, cols = (int(side) for side in rng.integers(1, 7, 2))
        tile_px, tile_height = (int(side) for side in rng.integers(1, 12, 2))
        tiles = rng.integers(0, 256, (5, tile_height, tile_px, 3), dtype=np.uint8)
        positions = rng.integers(0, 5, rows * cols)
        placements = Placements(rows, cols, positions, np.zeros(rows * cols),
                                [f"t{p}" for p in positions])
        renderer = MosaicRenderer(placements, IndexPictures(tiles, placements.tile))
        picture = renderer.image()
        assert picture.shape == (rows * tile_height, cols * tile_px, 3)
        assert (renderer.width, renderer.height) == (cols * tile_px, rows * tile_height)
        blocks = picture.reshape(rows, tile_height, cols, tile_px, 3).transpose(0, 2, 1, 3, 4)
        assert np.array_equal(blocks.reshape(rows * cols, tile_height, tile_px, 3),
                              tiles[positions])
        bands = list(renderer.bands())
        assert len(bands) == rows and all(band.shape == (tile_height, cols * tile_px, 3)
                                          for band in bands)


@pytest.mark.parametrize("seed", range(3))
def test_random_small_makes_come_out_at_exactly_the_planned_size(tmp_path, seed):
    # End to end, seeded: whatever the combination of sizes, a make either is refused in
    # one line or draws a picture of exactly the plan's output size, and writes it so.
    tiles = make_colour_folder(tmp_path / "tiles", 4, size=6)
    rng = random.Random(100 + seed)
    made = 0
    while made < 3:
        size, settings = random_plan_settings(rng)
        settings.pop("adaptive", None)
        width, height = size
        target = np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)
        try:
            plan = options_plan(MosaicOptions(**settings), size)
        except MosaicistError:
            continue
        if plan.output_size[0] * plan.output_size[1] > 400_000:
            continue
        mosaic = make_mosaic(target, tiles, preset="seed", compute_metrics=False,
                             cache_dir=tmp_path / "cache", **settings)
        assert mosaic.sizes == plan
        assert mosaic.image.shape == (plan.output_size[1], plan.output_size[0], 3)
        assert (mosaic.grid.left, mosaic.grid.top) == plan.grid_crop[:2]
        mosaic.write(tmp_path / "out.png")
        with Image.open(tmp_path / "out.png") as written:
            assert written.size == plan.output_size
        made += 1


def test_options_plan_names_the_first_conflict_between_size_settings():
    options = MosaicOptions(cells=30, cell_px=3, print_size="10x10cm", dpi=10, tile_px=4)
    with pytest.raises(OptionError, match=r"^cells 30 chooses cells of \d+ px, but cell_px is "
                                          "3; give one of them$"):
        options_plan(options, (97, 89))
    options = MosaicOptions(print_size="10x10cm", dpi=20, tile_px=5)
    with pytest.raises(OptionError, match=r"^print_size 10x10cm at dpi 20 chooses tiles of 16 "
                                          "px, but tile_px is 5; give one of them$"):
        options_plan(options, (97, 89))


def test_tile_px_for_print_works_in_whole_numbers_past_int32():
    # A 100 m print at 65535 dpi is about 258 million pixels a side: the errors of every
    # tile width are worked out in int64, never wrapped.
    with pytest.raises(OptionError, match="over the 1,024 px that tiles may have"):
        tile_px_for_print(2, 2, "10000x10000cm", 65535)
    # 258,011,811 px across 260,000 cells: 992 px tiles, 257,920,000 px, the nearest.
    assert tile_px_for_print(260_000, 260_000, "10000x10000cm", 65535) == 992
