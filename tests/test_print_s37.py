"""Prints too small for their grid, and scoring a print's mosaic (session 37).

A print with fewer pixels than its grid has cells was refused as "--print 1x1mm
at --dpi 1 is 0x0 px, fewer than the grid's 25x25 cells": pixels against
cells, and no size or resolution that would do. And ``score`` given the CSV
placements of a ``make --print`` mosaic compared them with the whole target's
grid, which is not theirs (CSV records no crop), and said the mosaic "does not
fit" cells the user never made; without placements it said only that. Tiny
pictures, made here.
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_colour_folder
from PIL import Image

from mosaicist.cli import main
from mosaicist.errors import OptionError
from mosaicist.sizing import plan_print, plan_sizes


def _refusal(target_size, print_size, dpi, **settings) -> str:
    with pytest.raises(OptionError) as error:
        plan_sizes(target_size, print_size=print_size, dpi=dpi, **settings)
    assert error.value.parameters == ("print_size", "dpi")
    return str(error.value)


def test_a_print_too_small_says_what_it_needs_and_what_would_do():
    message = _refusal((300, 300), "1x1cm", 10)
    assert message == (
        "print_size 1x1cm is too small at dpi 10: it would be 4x4 px, and the grid's 18x18 "
        "cells need at least 18x18 px (a pixel each); use dpi 45 or more, a print of at least "
        "4.45x4.45cm at dpi 10, or fewer cells")
    # What it suggests is the least that does, the grid unchanged (the same shape, the
    # same crop): one dpi less, or a print a hair smaller, is refused again.
    assert plan_print((300, 300), "1x1cm", dpi=45).cols == 18
    assert plan_print((300, 300), "4.45x4.45cm", dpi=10).cols == 18
    assert "it would be 17x17 px" in _refusal((300, 300), "1x1cm", 44)
    assert "it would be 17x17 px" in _refusal((300, 300), "4.4x4.4cm", 10)


def test_a_print_of_no_pixels_and_a_shape_of_its_own():
    # 0 x 0 px at 1 dpi; a rectangular print grows by one factor, keeping its shape.
    message = _refusal((400, 600), "29.7x42", 1, cell_px=2)
    assert "it would be 12x17 px, and the grid's 200x283 cells need at least 200x283 px" \
        in message
    assert message.endswith("use dpi 18 or more, a print of at least 507.87x718.2cm at dpi "
                            "1, or fewer cells")
    assert plan_print((400, 600), "507.87x718.2", dpi=1, cell_px=2).output_size == (200, 283)
    assert plan_print((400, 600), "29.7x42", dpi=18, cell_px=2).cols == 200
    # No dpi reaches it (over 65535): only the print's size and fewer cells are offered.
    message = _refusal((300, 300), "0.001x0.001mm", 1)
    assert message.endswith("use a print of at least 445x445mm at dpi 1 or fewer cells")
    # One cell: there are no fewer to use.
    message = _refusal((16, 16), "0.001x0.001mm", 1)
    assert message.endswith("use dpi 12700 or more or a print of at least 12.7x12.7mm at dpi 1")


@pytest.fixture
def pictures(tmp_path):
    rng = np.random.default_rng(3)
    target = tmp_path / "target.png"
    Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(target)
    return target, make_colour_folder(tmp_path / "tiles", 12)


def _run(*arguments):
    return CliRunner().invoke(main, [str(argument) for argument in arguments])


def test_make_names_the_flags_in_one_line(pictures, tmp_path):
    target, tiles = pictures
    result = _run("make", target, "--tiles", tiles, "--cell", 4, "--print", "1x1mm", "--dpi", 1,
                  "-o", tmp_path / "out.png", "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 1, result.output
    assert result.stderr == (
        "mosaicist: error: --print 1x1mm is too small at --dpi 1: it would be 0x0 px, and the "
        "grid's 8x8 cells need at least 8x8 px (a pixel each); use --dpi 191 or more, a print "
        "of at least 191x191mm at --dpi 1, or fewer cells\n")
    assert not (tmp_path / "out.png").exists()


def test_score_of_a_prints_csv_placements_says_to_use_json(pictures, tmp_path):
    # A 48 x 32 target printed square: its 8 x 8 grid of 4 px cells lies in the 32 x 32
    # crop, not in the whole target's 12 x 8 grid.
    target, tiles = pictures
    mosaic, csv_file, json_file = (tmp_path / name for name in ("m.png", "m.csv", "m.json"))
    for placements in (csv_file, json_file):
        made = _run("make", target, "--tiles", tiles, "--cell", 4, "--print", "8x8cm",
                    "--dpi", 10, "-o", mosaic, "--placements", placements, "-q",
                    "--cache-dir", tmp_path / "cache")
        assert made.exit_code == 0, made.output
    result = _run("score", mosaic, target, "--cell", 4, "--placements", csv_file)
    assert result.exit_code == 1, result.output
    assert result.stderr == (
        f"mosaicist: error: {csv_file}: the placements are 8x8 cells but {target} has 12x8 "
        "cells at --cell 4; a mosaic made with 'make --print' is scored with its JSON "
        "placements (make --placements NAME.json), which record where its grid lies in the "
        "target: CSV placements do not\n")
    scored = _run("score", mosaic, target, "--placements", json_file)
    assert scored.exit_code == 0, scored.output
    assert "cols                       8" in scored.output


def test_score_of_a_prints_mosaic_without_placements_says_to_use_json(pictures, tmp_path):
    # Without placements the whole target's 12 x 8 grid is assumed; a 32 x 32 mosaic of
    # 4 px tiles is 8 x 8: as many rows, fewer columns, what a square print's crop gives.
    target, _ = pictures
    mosaic = tmp_path / "m.png"
    Image.new("RGB", (32, 32)).save(mosaic)
    result = _run("score", mosaic, target, "--cell", 4)
    assert result.exit_code == 1, result.output
    assert result.stderr == (
        f"mosaicist: error: {mosaic}: 32x32 pixels does not fit the 12x8 cells of {target} at "
        "--cell 4 (expected 12*t x 8*t for a tile size t); a mosaic made with 'make --print' "
        "is scored with its JSON placements (make --placements NAME.json), which record where "
        "its grid lies in the target\n")
    # A size no print gives (more columns than the target's grid): no word of prints.
    Image.new("RGB", (52, 32)).save(mosaic)
    result = _run("score", mosaic, target, "--cell", 4)
    assert result.exit_code == 1 and "--print" not in result.stderr, result.stderr
