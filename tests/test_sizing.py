"""Sizes that people think in: --cells, --print and --dpi (mosaicist.sizing)."""

from __future__ import annotations

import json
import re
from decimal import Decimal
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
from mosaicist.options import MosaicOptions
from mosaicist.sizing import (
    DEFAULT_DPI,
    SHAPE_TOLERANCE,
    PrintSize,
    cell_px_for_cells,
    fit_options,
    options_plan,
    parse_print_size,
    plan_print,
    plan_sizes,
    print_crop,
    small_originals_warning,
    tile_px_for_print,
)
from mosaicist.sources import open_source


def smooth(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1),
                     (x + y) % 256], -1).astype(np.uint8)


# --- print sizes -----------------------------------------------------------------


@pytest.mark.parametrize("text, canonical, inches", [
    ("60x40cm", "60x40cm", (Fraction(6000, 254), Fraction(4000, 254))),
    ("60x40", "60x40cm", (Fraction(6000, 254), Fraction(4000, 254))),  # cm by default
    ("24x36in", "24x36in", (24, 36)),
    (" 8.5 X 11 Inches ", "8.5x11in", (Fraction(17, 2), 11)),
    ('10×8"', "10x8in", (10, 8)),
    ("29,7x42CM", "29.7x42cm", (Fraction(2970, 254), Fraction(4200, 254))),
    ("500*700mm", "500x700mm", (Fraction(5000, 254), Fraction(7000, 254))),
    ("060.50x40.0cm", "60.5x40cm", (Fraction(6050, 254), Fraction(4000, 254))),
])
def test_print_sizes_are_read_exactly(text, canonical, inches):
    size = parse_print_size(text)
    assert str(size) == canonical
    assert size.inches() == inches
    assert MosaicOptions(print_size=text).print_size == canonical


@pytest.mark.parametrize("text, words", [
    ("big", "print_size must be WIDTHxHEIGHT in cm (the default), mm or in"),
    ("60x40ft", "got '60x40ft'"),
    ("60x40x2cm", "WIDTHxHEIGHT"),
    ("-60x40cm", "WIDTHxHEIGHT"),
    ("0x40cm", "print_size must have sides above zero"),
    ("10001x10cm", "print_size 10001x10cm has a side over 100 m"),
])
def test_bad_print_sizes_name_the_setting(text, words):
    with pytest.raises(OptionError, match=re.escape(words)) as error:
        MosaicOptions(print_size=text)
    assert error.value.parameters[0] == "print_size"


@pytest.mark.parametrize("text, dpi, pixels", [
    ("60x40cm", 150, (3543, 2362)),  # 3543.3 x 2362.2
    ("24x36in", 300, (7200, 10800)),
    ("500x700mm", 100, (1969, 2756)),  # 1968.5 rounds half up
    ("1x1cm", 1, (0, 0)),
])
def test_print_pixels_round_half_up(text, dpi, pixels):
    assert parse_print_size(text).pixels(dpi) == pixels


def test_dpi_defaults_to_300_with_a_print_and_is_checked():
    options = MosaicOptions(print_size="60x40cm")
    assert options.dpi == DEFAULT_DPI == 300
    assert MosaicOptions(print_size="60x40cm", dpi=150).dpi == 150
    assert MosaicOptions().dpi is None
    assert MosaicOptions(dpi=72).dpi == 72  # metadata only
    assert options.replace(print_size=None).dpi is None  # the default follows the print
    with pytest.raises(OptionError, match="dpi must be between 1 and 65535 dpi, got 0"):
        MosaicOptions(dpi=0)
    with pytest.raises(OptionError, match="cells must be at least 1, got 0"):
        MosaicOptions(cells=0)
    # Settings read back from a report keep the print and its resolution.
    again = MosaicOptions.from_json(MosaicOptions(print_size="24x36", dpi=200).to_json())
    assert (again.print_size, again.dpi) == ("24x36cm", 200)


# --- about N cells -------------------------------------------------------------------


def cells_reference(width: int, height: int, cells: int, aspect: str) -> int:
    """The rule written plainly: nearest count, then the widest cell."""
    ratio = parse_aspect(aspect)
    best = None
    for cell in range(1, 1025):
        count = (width // cell) * (height // height_for(cell, ratio))
        if count < 1:
            continue
        key = (abs(count - cells), -cell)
        if best is None or key < best[0]:
            best = (key, cell)
    assert best is not None
    return best[1]


@pytest.mark.parametrize("width, height", [(300, 200), (200, 300), (1000, 1000), (57, 1001),
                                           (4000, 3000), (1920, 1080)])
@pytest.mark.parametrize("aspect", ["1:1", "3:2", "2:3"])
@pytest.mark.parametrize("cells", [1, 24, 100, 999, 5040])
def test_cells_choose_the_nearest_grid(width, height, aspect, cells):
    try:
        chosen = cell_px_for_cells((width, height), cells, aspect)
    except OptionError as error:
        # Only a count no cell width reaches is refused.
        assert error.parameters == ("cells",)
        ratio = parse_aspect(aspect)
        counts = [(width // c) * (height // height_for(c, ratio)) for c in range(1, 1025)]
        counts = [count for count in counts if count]
        assert cells > max(counts) or cells < min(counts)
        return
    assert chosen == cells_reference(width, height, cells, aspect)


def test_cells_examples():
    # A 3:2 target: 24 square cells are 6 x 4, exactly.
    plan = plan_sizes((300, 200), cells=24)
    assert (plan.cols, plan.rows, plan.cell_px) == (6, 4, 50)
    # One cell: the widest that fits once.
    plan = plan_sizes((300, 200), cells=1)
    assert (plan.cols, plan.rows, plan.cell_px) == (1, 1, 200)
    # 3:2 cells on a 3:2 target make a square grid: 100 -> 10 x 10.
    plan = plan_sizes((3000, 2000), cells=100, aspect="3:2")
    assert (plan.cols, plan.rows, plan.cell_px, plan.cell_height) == (10, 10, 300, 200)
    # As many cells as pixels: 1 px cells.
    assert plan_sizes((30, 20), cells=600).cell_px == 1


def test_cells_beyond_what_the_target_allows_are_one_clear_error():
    with pytest.raises(OptionError) as error:
        cell_px_for_cells((300, 200), 60_001)
    assert str(error.value) == ("cells 60001 is more than a 300x200 target holds: at most "
                                "60,000 cells (1 px wide)")
    with pytest.raises(OptionError) as error:
        cell_px_for_cells((4000, 3000), 1)
    assert str(error.value) == ("cells 1 is fewer than a 4000x3000 target allows: at least 6 "
                                "cells (1024 px wide, the largest)")
    with pytest.raises(OptionError, match="at most 600 3:2 cells"):
        cell_px_for_cells((30, 20), 601, "3:2")


# --- prints ----------------------------------------------------------------------------


@pytest.mark.parametrize("target, print_text, crop", [
    ((300, 200), "60x40cm", (0, 0, 300, 200)),  # same shape: untouched
    ((400, 200), "60x40cm", (50, 0, 300, 200)),  # wider: the sides go
    ((300, 300), "60x40cm", (0, 50, 300, 200)),  # taller: top and bottom go
    ((300, 200), "40x60cm", (83, 0, 133, 200)),  # portrait print of a landscape: 133.3 -> 133
    ((301, 200), "60x40cm", (0, 0, 300, 200)),  # one pixel
    ((1000, 3), "1x1in", (498, 0, 3, 3)),
])
def test_the_target_is_centre_cropped_to_the_prints_shape(target, print_text, crop):
    assert print_crop(target, parse_print_size(print_text)) == crop


def tile_reference(cols: int, rows: int, pixels: tuple[int, int], aspect: str) -> int:
    ratio = parse_aspect(aspect)
    scores = {tile: max(abs(cols * tile - pixels[0]),
                        abs(rows * height_for(tile, ratio) - pixels[1]))
              for tile in range(1, 1025)}
    best = min(scores.values())
    return max(tile for tile, score in scores.items() if score == best)


@pytest.mark.parametrize("cols, rows, print_text, dpi, aspect", [
    (6, 4, "60x40cm", 150, "1:1"), (60, 40, "60x40cm", 150, "1:1"),
    (10, 10, "60x40cm", 300, "3:2"), (7, 13, "8x10in", 240, "2:3"), (1, 1, "5x5cm", 72, "1:1"),
    (250, 166, "84.1x59.4cm", 300, "1:1"),
])
def test_tiles_bring_the_output_nearest_to_the_print(cols, rows, print_text, dpi, aspect):
    pixels = parse_print_size(print_text).pixels(dpi)
    assert tile_px_for_print(cols, rows, print_text, dpi, aspect) == \
        tile_reference(cols, rows, pixels, aspect)


def test_done_when_60x40cm_at_150_dpi_of_a_3_2_target():
    plan = plan_print((300, 200), "60x40cm", dpi=150, cells=24)
    assert plan.print_pixels == (3543, 2362)
    # 6 x 4 cells: 590 px tiles give 3540 x 2360 and 591 px 3546 x 2364, both 3 px
    # off at worst; the larger wins.
    assert (plan.cols, plan.rows, plan.tile_px, plan.tile_height) == (6, 4, 591, 591)
    assert plan.output_size == (3546, 2364)
    assert plan.print_error == (3, 2)
    assert not plan.cropped and plan.print_warning() is None
    assert plan.printed_size() == pytest.approx((60.0456, 40.0304), abs=1e-4)
    # With many cells the grid lands within one tile of the print.
    plan = plan_print((3000, 2000), "60x40cm", dpi=150, cells=2400)
    assert (plan.cols, plan.rows, plan.output_size) == (60, 40, (3540, 2360))
    assert all(abs(error) <= plan.tile_px for error in plan.print_error)


def test_a_print_of_another_shape_crops_the_target_and_says_so():
    plan = plan_print((400, 200), "60x40cm", dpi=150, cells=24)
    assert plan.cropped and plan.crop == (50, 0, 300, 200)
    assert plan.output_size == (3546, 2364)
    text = plan.describe()
    assert text.startswith("print 60x40cm at 150 dpi (3543x2362 px): 6x4 cells of 591x591 px, "
                           "3546x2364 px (60.05x40.03 cm)")
    assert "target cropped to 300x200 at (50, 0) from 400x200" in text
    report = plan.report()
    assert report["crop"] == {"left": 50, "top": 0, "width": 300, "height": 200}
    assert report["print"]["pixels"] == {"width": 3543, "height": 2362}
    assert report["print"]["error_px"] == {"width": 3, "height": 2}
    json.dumps(report)


def test_prints_that_cannot_be_met_are_clear_errors():
    # One cell of a 60 x 40 cm print at 300 dpi would be a 7087 px tile.
    with pytest.raises(OptionError) as error:
        plan_print((300, 200), "60x40cm", dpi=300, cells=1)
    assert error.value.parameters == ("print_size", "dpi")
    assert "needs tiles about 7,087 px wide for a grid of 1x1 cells, over the 1,024 px" \
        in str(error.value)
    # More cells than the print has pixels.
    with pytest.raises(OptionError, match=r"print_size 1x1cm is too small at dpi 10: it would "
                                          r"be 4x4 px, and the grid's 18x18 cells need"):
        plan_print((300, 300), "1x1cm", dpi=10)
    with pytest.raises(MosaicistError, match="bear.jpg: its 1x100 crop to the print's shape is "
                                             "smaller than one 16x16 cell"):
        plan_sizes((1000, 100), print_size="1x100cm", name="bear.jpg")


def test_a_coarse_grid_far_from_the_print_is_warned_about():
    # One row of tall 1:4 cells cannot take the print's shape.
    plan = plan_sizes((2555, 2504), aspect="1:4", cells=24, print_size="100x30cm", dpi=72)
    assert plan.rows == 1
    assert plan.print_warning().startswith("the output, ")
    assert "off the print's 2835x850 px" in plan.print_warning()


def test_options_plan_refuses_contradictions_and_is_idempotent():
    with pytest.raises(OptionError) as error:
        options_plan(MosaicOptions(cells=24, cell_px=8), (300, 200))
    assert str(error.value) == ("cells 24 chooses cells of 50 px, but cell_px is 8; give one "
                                "of them")
    with pytest.raises(OptionError, match="print_size 60x40cm at dpi 150 chooses tiles of 591 "
                                          "px, but tile_px is 64"):
        options_plan(MosaicOptions(print_size="60x40cm", dpi=150, cells=24, tile_px=64),
                     (300, 200))
    # Agreeing values are fine (a settings block read back has them all).
    options = MosaicOptions(print_size="60x40cm", dpi=150, cells=24, preset="seed")
    fitted = fit_options(options, options_plan(options, (300, 200)))
    assert (fitted.cell_px, fitted.tile_px, fitted.match_px) == (50, 591, 32)
    assert not fitted.given("tile_px") and fitted.given("print_size")
    again = MosaicOptions.from_json(fitted.to_json())
    assert options_plan(again, (300, 200)) == options_plan(options, (300, 200))
    # match_px follows a chosen tile size unless given.
    small = MosaicOptions(print_size="3x2in", dpi=80, cells=24)
    assert fit_options(small, options_plan(small, (300, 200))).match_px == 40
    given = MosaicOptions(print_size="3x2in", dpi=80, cells=24, match_px=16)
    assert fit_options(given, options_plan(given, (300, 200))).match_px == 16


def test_without_cells_or_print_the_plan_is_the_options():
    options = MosaicOptions(cell_px=8, tile_px=12, aspect="3:2")
    plan = options_plan(options, (100, 60))
    assert (plan.cols, plan.rows, plan.cell_height, plan.tile_height) == (12, 12, 5, 8)
    assert plan.output_size == (144, 96) and plan.crop == (0, 0, 100, 60)
    assert fit_options(options, plan) is options
    assert plan.report()["print"] is None


def test_cells_and_tiles_of_different_rounded_shapes_are_warned_about():
    # Heights are rounded apart: 10:1 cells 16 px wide are 16x2 (8:1), tiles 32 px wide are
    # 32x3 (10.7:1), so the picture comes out a third wider than the target.
    plan = plan_sizes((300, 200), aspect="10:1", cell_px=16, tile_px=32)
    assert (plan.cell_height, plan.tile_height) == (2, 3)
    assert plan.shape_error == pytest.approx(1 / 3)
    assert plan.shape_warning() == (
        "tiles of 32x3 px are not the shape of cells of 16x2 target pixels (each height is "
        "rounded from its width at 10:1): the picture comes out 33.3% wider than the target; "
        "widths that are multiples of 10 keep the shape (cells of 20 px, tiles of 30 px)")
    # The default sizes at 3:2: 16x11 cells, 32x21 tiles, 4.8% wider.
    plan = plan_sizes((300, 200), aspect="3:2")
    assert plan.shape_warning().startswith("tiles of 32x21 px are not the shape of cells of "
                                           "16x11 target pixels")
    assert "4.8% wider" in plan.shape_warning()
    assert plan.shape_warning().endswith("(cells of 15 px, tiles of 33 px)")
    # Narrower tiles: taller; only the width that is off is suggested.
    plan = plan_sizes((300, 200), aspect="2:3", cell_px=16, tile_px=15)
    assert (plan.cell_height, plan.tile_height) == (24, 23)
    assert plan.shape_error < 0
    assert "2.2% taller than the target" in plan.shape_warning()
    assert plan.shape_warning().endswith("(tiles of 16 px)")


@pytest.mark.parametrize("aspect, cell_px, tile_px", [
    ("1:1", 16, 32), ("1:1", 7, 1024), ("3:2", 15, 33), ("3:2", 39, 48), ("16:9", 16, 48),
    ("3:2", 300, 901),  # 300x200 and 901x601: 0.06% apart, within the tolerance
])
def test_cells_and_tiles_of_one_shape_are_not_warned_about(aspect, cell_px, tile_px):
    plan = plan_sizes((2000, 2000), aspect=aspect, cell_px=cell_px, tile_px=tile_px)
    assert abs(plan.shape_error) <= SHAPE_TOLERANCE
    assert plan.shape_warning() is None


# --- the library's photos against the tiles ----------------------------------------------


def test_small_originals_are_warned_about(tmp_path):
    folder = open_source(make_colour_folder(tmp_path / "small", 40, size=12), tmp_path)
    ids = [f"t{index:03d}.png" for index in range(40)] * 3
    warning = small_originals_warning(folder, ids, 120, 80)
    assert warning == ("tiles are 120x80 px, but the library's photos are about 12x12 (median "
                       "of 16 sampled): they are enlarged 10.0x and will look soft; use larger "
                       "photos or smaller tiles")
    assert small_originals_warning(folder, ids, 12, 12) is None
    assert small_originals_warning(folder, ["missing.png"], 120, 80) is None
    # Sources that are not files are opened through the source: a 32 px array.
    np.save(tmp_path / "tiles.npy", np.zeros((5, 32, 48, 3), np.uint8))
    arrays = open_source(tmp_path / "tiles.npy", tmp_path)
    ids = [source_id for source_id, *_ in arrays.scan()]
    assert "about 48x32 (median of 5 sampled): they are enlarged 2.0x" in \
        small_originals_warning(arrays, ids, 64, 64)
    assert small_originals_warning(arrays, ids, 48, 32) is None
    # A few percent is not called soft ("enlarged 1.0x and will look soft" was said of 1.04).
    assert small_originals_warning(arrays, ids, 50, 33) is None
    assert "enlarged 1.1x" in small_originals_warning(arrays, ids, 53, 35)


# --- through the pipeline and the command line ---------------------------------------------


def test_make_mosaic_takes_cells_print_size_and_dpi(tmp_path):
    tiles = make_colour_folder(tmp_path / "tiles", 30)
    target = smooth(400, 200)  # 2:1, for a 3:2 print
    mosaic = make_mosaic(target, tiles, preset="seed", cells=24, print_size="3x2in", dpi=100,
                         cache_dir=tmp_path / "cache", compute_metrics=False)
    assert (mosaic.grid.cols, mosaic.grid.rows, mosaic.grid.cell_px) == (6, 4, 50)
    # The grid's offsets are in the whole target: the 300 x 200 crop starts at x = 50.
    assert (mosaic.grid.left, mosaic.grid.top) == (50, 0)
    assert mosaic.placements.crop == (50, 0)
    assert mosaic.options.tile_px == 50 and mosaic.options.dpi == 100
    assert (mosaic.renderer.width, mosaic.renderer.height) == (300, 200)
    assert mosaic.image.shape == (200, 300, 3)
    report = mosaic.report()
    assert report["sizes"]["print"]["pixels"] == {"width": 300, "height": 200}
    assert report["sizes"]["crop"] == {"left": 50, "top": 0, "width": 300, "height": 200}
    mosaic.write(tmp_path / "o.png")
    with Image.open(tmp_path / "o.png") as written:
        assert written.size == (300, 200)
        assert written.info["dpi"] == pytest.approx((100, 100), abs=0.02)


def test_cli_print_60x40cm_at_150_dpi(tmp_path):
    tiles = make_colour_folder(tmp_path / "tiles", 30)
    target = tmp_path / "target.png"
    Image.fromarray(smooth(300, 200)).save(target)  # 3:2
    output, report = tmp_path / "print.jpg", tmp_path / "report.json"
    result = CliRunner().invoke(main, [
        "make", str(target), "--tiles", str(tiles), "--cache-dir", str(tmp_path / "cache"),
        "--preset", "seed", "--print", "60x40cm", "--dpi", "150", "--cells", "24",
        "-o", str(output), "--report", str(report),
    ])
    assert result.exit_code == 0, result.output
    with Image.open(output) as written:
        # 3543 x 2362 px asked; 6 x 4 tiles of 591 px come within 3 px.
        assert written.size == (3546, 2364)
        assert written.info["dpi"] == (150, 150)
    lines = result.stderr.splitlines()
    assert ("mosaicist: note: print 60x40cm at 150 dpi (3543x2362 px): 6x4 cells of 591x591 "
            "px, 3546x2364 px (60.05x40.03 cm)") in lines
    assert any(line.startswith("mosaicist: warning: tiles are 591x591 px, but the library's "
                               "photos are about 12x12") for line in lines), lines
    data = json.loads(report.read_text())
    assert data["settings"]["print_size"] == "60x40cm" and data["settings"]["dpi"] == 150
    assert data["settings"]["cells"] == 24 and data["settings"]["tile_px"] == 591
    assert data["output_size"] == {"width": 3546, "height": 2364}


@pytest.mark.parametrize("arguments, words", [
    (["--print", "60x40ft"], "--print must be WIDTHxHEIGHT in cm (the default), mm or in"),
    (["--dpi", "0"], "--dpi must be between 1 and 65535 dpi, got 0"),
    (["--cells", "24", "--cell", "8"], "--cells 24 chooses cells of 10 px, but --cell is 8"),
    (["--cells", "5000"], "--cells 5000 is more than a 60x40 target holds: at most 2,400 cells"),
    (["--print", "6x4cm", "--dpi", "100", "--tile-px", "64"],
     "--print 6x4cm at --dpi 100 chooses tiles of 79 px, but --tile-px is 64; give one of them"),
    (["--print", "60x40cm"], "--print 60x40cm at --dpi 300 needs tiles about 2,363 px wide for "
                             "a grid of 3x2 cells, over the 1,024 px that tiles may have"),
])
def test_cli_size_errors_are_one_line_naming_the_flags(tmp_path, arguments, words):
    target = tmp_path / "target.png"
    Image.fromarray(smooth(60, 40)).save(target)
    # A library that is there: a missing one is said first (session 35), before the sizes
    # that need the target read.
    tiles = make_colour_folder(tmp_path / "tiles", 3)
    result = CliRunner().invoke(main, ["make", str(target), "--tiles", str(tiles),
                                       "-o", str(tmp_path / "o.png"), *arguments])
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mosaicist: error: "), result.stderr
    assert words in lines[0]
    assert not (tmp_path / "o.png").exists()


def test_render_keeps_or_changes_the_recorded_dpi(tmp_path):
    tiles = make_colour_folder(tmp_path / "tiles", 10)
    target = tmp_path / "target.png"
    Image.fromarray(smooth(40, 24)).save(target)
    common = ["--cache-dir", str(tmp_path / "cache"), "-q"]
    placements = tmp_path / "p.json"
    result = CliRunner().invoke(main, [
        "make", str(target), "--tiles", str(tiles), "--cell", "8", "--tile-px", "8",
        "--preset", "seed", "--dpi", "100", "--placements", str(placements),
        "-o", str(tmp_path / "a.png"), *common])
    assert result.exit_code == 0, result.output
    for name, flags, dpi in (("b.jpg", [], 100), ("c.tif", ["--dpi", "200"], 200)):
        result = CliRunner().invoke(main, ["render", str(placements), "-o", str(tmp_path / name),
                                           *flags, *common])
        assert result.exit_code == 0, result.output
        with Image.open(tmp_path / name) as written:
            assert written.size == (40, 24)
            assert written.info["dpi"] == (dpi, dpi)


def test_cells_with_adaptive_choose_a_cell_that_halves():
    # 24 cells of a 300x200 target is 50 px cells, which do not halve twice: with
    # adaptive 2 the nearest count among widths that divide by 4 (and whose heights do) wins.
    plan = plan_sizes((300, 200), cells=24, adaptive=2)
    assert plan.cell_px % 4 == 0 and plan.cell_height % 4 == 0
    assert plan.cell_px == 48 and (plan.cols, plan.rows) == (6, 4)
    options = MosaicOptions(cells=24, adaptive=2)
    assert options_plan(options, (300, 200)).cell_px == 48


def test_print_with_adaptive_chooses_a_tile_that_halves():
    # 6x4 cells for 60x40cm at 150 dpi is 591 px tiles unconstrained; adaptive 1 needs even ones.
    plan = plan_sizes((300, 200), cells=24, print_size="60x40cm", dpi=150, adaptive=1)
    assert plan.tile_px % 2 == 0 and plan.tile_height % 2 == 0
    assert plan.tile_px in (590, 592)
    aspect = plan_sizes((300, 200), aspect="3:2", cells=24, print_size="60x40cm", dpi=150,
                        adaptive=2)
    assert aspect.cell_px % 4 == 0 and aspect.cell_height % 4 == 0
    assert aspect.tile_px % 4 == 0 and aspect.tile_height % 4 == 0


def test_cells_with_adaptive_on_a_target_no_halving_cell_fits():
    # It names the target, the smallest cell tried and the setting that rules out smaller ones
    # (it said only "a 3x3 target is smaller than one cell").
    with pytest.raises(OptionError) as error:
        plan_sizes((3, 3), cells=1, adaptive=2, name="small.png")
    assert str(error.value) == ("small.png: 3x3 pixels is smaller than one 4x4 cell, the "
                                "smallest that adaptive 2 allows (its sides halve 2 times)")
    assert error.value.parameters == ("adaptive",)
    # Without adaptive cells the smallest is 1 px wide, at the aspect's shape.
    with pytest.raises(OptionError, match=r"^small\.png: 60x8 pixels is smaller than one "
                                          r"1x16 cell, the smallest at 1:16; use another aspect "
                                          r"or a larger target$"):
        plan_sizes((60, 8), cells=4, aspect="1:16", name="small.png")
    # A print's crop is named as the crop.
    with pytest.raises(OptionError, match=r"^cells 3 is fewer than the target's 60x1 crop to "
                                          r"the print's shape allows: at least 60 cells"):
        plan_sizes((60, 40), cells=3, print_size="100x1cm")


def test_cli_cells_and_print_with_adaptive_make_a_mosaic(tmp_path):
    tiles = make_colour_folder(tmp_path / "tiles", 6)
    target = tmp_path / "target.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (200, 300, 3), np.uint8)).save(target)
    output = tmp_path / "out.png"
    result = CliRunner().invoke(main, ["make", str(target), "--tiles", str(tiles), "--preset",
                                       "seed", "--cells", "24", "--adaptive", "2", "--print",
                                       "60x40cm", "--dpi", "150", "-o", str(output)])
    assert result.exit_code == 0, result.output
    assert Image.open(output).size == (6 * 592, 4 * 592)


@pytest.mark.parametrize("depth", [-1, 7, 99, 1.0, True])
def test_plan_sizes_refuses_an_adaptive_depth_out_of_range(depth):
    with pytest.raises(OptionError, match="adaptive"):
        plan_sizes((300, 200), cells=24, adaptive=depth)


@pytest.mark.parametrize(("settings", "name"), [
    ({"cell_px": 0}, "cell_px"), ({"cell_px": -5}, "cell_px"), ({"cell_px": 2.5}, "cell_px"),
    ({"cell_px": 5000}, "cell_px"), ({"tile_px": 0}, "tile_px"), ({"tile_px": -3}, "tile_px"),
    ({"tile_px": 99999}, "tile_px"), ({"tile_px": True}, "tile_px"),
])
def test_plan_sizes_refuses_cell_and_tile_widths_out_of_range(settings, name):
    # Once a ZeroDivisionError, a 0x12 or negative output, or a grid of float counts.
    with pytest.raises(OptionError, match=f"^{name} "):
        plan_sizes((300, 200), **settings)


def test_plan_sizes_takes_numpy_integers_and_gives_python_ones():
    plan = plan_sizes((300, 200), cells=np.int64(24), cell_px=np.int64(16),
                      tile_px=np.int64(32))
    assert (plan.cols, plan.rows, plan.cell_px, plan.cells) == (6, 4, 50, 24)
    assert all(type(side) is int for side in plan.output_size)
    assert type(plan_sizes((300, 200), cell_px=np.int64(16)).output_size[0]) is int


@pytest.mark.parametrize("size", [(300.5, 200), (300, "200"), (300,), (True, 200)])
def test_plan_sizes_refuses_a_target_size_that_is_not_two_whole_numbers(size):
    with pytest.raises(MosaicistError, match="target"):
        plan_sizes(size)


@pytest.mark.parametrize(("cols", "rows"), [(0, 4), (6, 0), (-1, 4)])
def test_tile_px_for_print_refuses_an_empty_grid(cols, rows):
    with pytest.raises(ValueError, match="grid"):
        tile_px_for_print(cols, rows, "60x40cm", 150)


def test_plan_sizes_keeps_a_numpy_dpi_as_a_python_int():
    plan = plan_sizes((300, 200), print_size="60x40cm", dpi=np.int64(150))
    assert type(plan.dpi) is int and plan.dpi == 150
    with pytest.raises(OptionError, match="^dpi "):
        plan_sizes((300, 200), print_size="60x40cm", dpi=150.5)


def test_fit_options_with_adaptive_compares_tiles_at_a_size_that_halves():
    # 3:2 tiles of 592 px are compared at 32 px by default, 32x21, which cannot halve:
    # the nearest width whose height halves too is taken instead (36x24).
    options = MosaicOptions(cells=24, adaptive=2, aspect="3:2", print_size="60x40cm", dpi=150)
    fitted = fit_options(options, options_plan(options, (300, 200)))
    assert fitted.match_px % 4 == 0 and fitted.match_height % 4 == 0
    assert abs(fitted.match_px - 32) <= 4
    assert not fitted.given("match_px")
    square = MosaicOptions(cells=24, adaptive=2, print_size="60x40cm", dpi=150)
    assert fit_options(square, options_plan(square, (300, 200))).match_px == 32


def test_cells_bounds_with_adaptive_name_the_cells_that_halve():
    with pytest.raises(OptionError, match=r"at most 3,750 cells \(4 px wide\)"):
        plan_sizes((300, 200), cells=60000, adaptive=2)
    with pytest.raises(OptionError, match=r"at most 60,000 cells \(1 px wide\)"):
        plan_sizes((300, 200), cells=60001)


@pytest.mark.parametrize(("call", "message"), [
    # A print size of another type: AttributeError ("'int' object has no attribute 'inches'").
    (lambda: plan_sizes((60, 40), print_size=5), "print_size must be WIDTHxHEIGHT in cm"),
    (lambda: plan_sizes((60, 40), print_size=b"60x40"), "print_size must be WIDTHxHEIGHT"),
    (lambda: print_crop((60, 40), 5), "print_size must be WIDTHxHEIGHT"),
    # A PrintSize made by hand with sides no text has: a NaN's ValueError, a negative one
    # cropped to a 1 px sliver.
    (lambda: plan_sizes((60, 40), print_size=PrintSize(Decimal("NaN"), Decimal(2), "cm")),
     "print_size must have two finite decimal sides and a unit cm, mm or in"),
    (lambda: plan_sizes((60, 40), print_size=PrintSize(Decimal(-1), Decimal(2), "cm")),
     "print_size must be WIDTHxHEIGHT in cm (the default), mm or in (e.g. 60x40cm, 24x36in), "
     "got '-1x2cm'"),
    (lambda: plan_sizes((60, 40), print_size=PrintSize(Decimal(1), Decimal(2), "ft")),
     "print_size must have two finite decimal sides and a unit cm, mm or in"),
    # Numbers too long to print (str() raised ValueError while the message was made).
    (lambda: plan_sizes((60, 40), cells=10**5000),
     "cells must be at least 1 and at most 9,223,372,036,854,775,807, got a number of 5001 digits"),
    (lambda: plan_sizes((60, 40), cell_px=10**5000),
     "cell_px must be between 1 and 1024 pixels, got a number of 5001 digits"),
    (lambda: cell_px_for_cells((60, 40), 10**400),
     "cells must be at least 1 and at most 9,223,372,036,854,775,807, got a number of 401 digits"),
    (lambda: parse_print_size("1" + "0" * 5000 + "x1"),
     "print_size sides must have at most 20 digits, got '1000000"),
    # A side of a thousand decimals was taken, and every message naming the print printed it.
    (lambda: plan_sizes((60, 40), print_size="0." + "0" * 1000 + "1x1"),
     "print_size sides must have at most 20 digits, got '0.000000"),
    (lambda: parse_print_size("123456789012345678901x1"), "print_size sides must have at most"),
    # cell_px_for_cells's adaptive and aspect went unchecked: a negative shift, a TypeError,
    # an OverflowError, or a 0:1 aspect taken (and a divide-by-zero warning).
    (lambda: cell_px_for_cells((60, 40), 10, adaptive=-1), "adaptive must be between 0 and 6"),
    (lambda: cell_px_for_cells((60, 40), 10, adaptive=1.5), "adaptive must be a whole number"),
    (lambda: cell_px_for_cells((60, 40), 10, aspect=(0, 1)), "aspect must be a text W:H"),
    (lambda: cell_px_for_cells((60, 40), 10, aspect=(1, 1000)), "aspect 1:1000 is more"),
    (lambda: cell_px_for_cells(("60", 40), 10), "target: a target size must be two whole"),
    # tile_px_for_print's dpi went unchecked: 1.5 dpi gave a tile, 10**400 an OverflowError,
    # -5 "a print of -118x-79 px".
    (lambda: tile_px_for_print(3, 2, "60x40", dpi=1.5), "dpi must be a whole number, got 1.5"),
    (lambda: tile_px_for_print(3, 2, "60x40", dpi=10**400),
     "dpi must be between 1 and 65535 dpi, got a number of 401 digits"),
    (lambda: tile_px_for_print(3, 2, "60x40", dpi=-5), "dpi must be between 1 and 65535 dpi"),
    (lambda: tile_px_for_print(3, 2, "60x40", adaptive=7), "adaptive must be between 0 and 6"),
    (lambda: tile_px_for_print(3.5, 2, "60x40"), "a grid is whole numbers of cells, got 3.5"),
    (lambda: plan_sizes((10**400, 40)), "target: a target of a number of 401 digits by 40 "
                                        "pixels is too large to cut into cells"),
])
def test_hostile_sizes_through_the_python_api_are_refused_by_name(call, message):
    # OptionErrors (ValueErrors too) and MosaicistErrors; a bare ValueError for a grid, as
    # tile_px_for_print documents.
    with pytest.raises((MosaicistError, ValueError)) as refused:
        call()
    text = str(refused.value)
    assert text.startswith(message) and len(text) < 200, text
    assert isinstance(refused.value, MosaicistError) or "grid" in message


def test_a_target_size_as_a_list_is_not_called_a_crop():
    # "its 8x8 crop to the print's shape": the plan compared the crop with the list as given.
    with pytest.raises(OptionError, match=r"^t: 8x8 pixels is smaller than one 16x16 cell; use "
                                          r"smaller cells \(cell_px\) or a larger target$"):
        plan_sizes([8, 8], name="t")
    assert plan_sizes([np.int64(60), 40], aspect=(3, 2)).aspect == "3:2"


@pytest.mark.parametrize("planned", [
    # A print crop whose width (67) and the grid's in it (63) leave odd remainders.
    {"print_size": "10x7cm", "dpi": 50, "cells": 30},
    {"print_size": "10x3cm", "dpi": 40, "cells": 12, "aspect": "3:2"},
    {"cells": 7, "aspect": "2:3"},
])
def test_the_grids_window_is_the_same_in_the_report_the_placements_and_a_render(
        tmp_path, planned):
    # The report's sizes said where the print crop lay, not the cells; the cells' window
    # is the crop's offsets plus the grid's own centring in it.
    tiles = make_colour_folder(tmp_path / "tiles", 8, size=12)
    target = tmp_path / "target.png"
    Image.fromarray(smooth(83, 47)).save(target)
    report, placements = tmp_path / "r.json", tmp_path / "p.json"
    common = ["--cache-dir", str(tmp_path / "cache"), "-q"]
    flags = {"print_size": "--print", "dpi": "--dpi", "cells": "--cells", "aspect": "--aspect"}
    arguments = [part for name, value in planned.items() for part in (flags[name], str(value))]
    made = CliRunner().invoke(main, [
        "make", str(target), "--tiles", str(tiles), "--preset", "seed", *arguments,
        "-o", str(tmp_path / "made.png"), "--report", str(report), "--placements",
        str(placements), *common])
    assert made.exit_code == 0, made.output
    sizes = json.loads(report.read_text())["sizes"]
    saved = json.loads(placements.read_text())
    crop, window = sizes["crop"], sizes["grid"]
    cell = sizes["cell"]
    assert (window["left"], window["top"]) == (saved["crop"]["left"], saved["crop"]["top"])
    assert (window["width"], window["height"]) == (saved["cols"] * cell["width"],
                                                   saved["rows"] * cell["height"])
    # Centred in the crop, rounding down, and inside it.
    assert window["left"] - crop["left"] == (crop["width"] - window["width"]) // 2
    assert window["top"] - crop["top"] == (crop["height"] - window["height"]) // 2
    assert plan_sizes((83, 47), **planned).report() == sizes
    rendered = CliRunner().invoke(main, ["render", str(placements), "-o",
                                         str(tmp_path / "again.png"), "-q"])
    assert rendered.exit_code == 0, rendered.output
    assert np.array_equal(np.asarray(Image.open(tmp_path / "made.png")),
                          np.asarray(Image.open(tmp_path / "again.png")))


def test_targets_are_sized_as_displayed_whatever_their_orientation_or_mode(tmp_path):
    # A 64 x 40 picture turned a quarter by its EXIF orientation is 40 x 64 as displayed: a
    # 10 x 30 cm print crops it across its 40 px width, not its 64.
    tiles = make_colour_folder(tmp_path / "tiles", 6, size=12)
    picture = Image.fromarray(smooth(64, 40))
    turned = Image.Exif()
    turned[0x0112] = 6
    files = {"turned.jpg": (picture, {"exif": turned.tobytes()}),
             "turned-cmyk.jpg": (picture.convert("CMYK"), {"exif": turned.tobytes()}),
             "turned.png": (picture, {"exif": turned.tobytes()}),
             "cmyk.jpg": (picture.convert("CMYK"), {}),
             "palette.png": (picture.convert("P"), {}),
             "grey-alpha.png": (picture.convert("LA"), {}),
             "sixteen.png": (Image.fromarray(smooth(64, 40)[..., 0].astype(np.uint16) * 257), {})}
    for name, (image, extra) in files.items():
        image.save(tmp_path / name, **extra)
        mosaic = make_mosaic(tmp_path / name, tiles, preset="seed", cells=12,
                             print_size="10x30cm", dpi=10, cache_dir=tmp_path / "cache",
                             compute_metrics=False)
        assert mosaic.sizes is not None
        displayed = (40, 64) if name.startswith("turned") else (64, 40)
        assert mosaic.sizes.target_size == displayed, name
        left, top, width, height = mosaic.sizes.crop
        assert height == displayed[1] and width == round(displayed[1] / 3), name
        assert (mosaic.grid.rows, mosaic.grid.cols) == (6, 2), name
        assert (mosaic.grid.left, mosaic.grid.top) == mosaic.sizes.grid_crop[:2], name


def test_plan_print_without_a_print_is_refused():
    # It returned a plan with no print at all.
    with pytest.raises(OptionError, match="print_size must be a print size"):
        plan_print((300, 200), None)
