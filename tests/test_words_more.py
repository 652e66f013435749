"""What messages say of numbers, names and choices: as typed, in words, in the right number."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mosaicist.cli import main
from mosaicist.errors import OptionError, check_range


def run(args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


@pytest.fixture
def target(tmp_path):
    path = tmp_path / "t.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    return path


def error_line(result):
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mosaicist: error: "), result.stderr
    return lines[0].removeprefix("mosaicist: error: ")


# --- Numbers out of range: as typed --------------------------------------------------------


@pytest.mark.parametrize(("flag", "typed", "expected"), [
    # "got 5.0", "got -1.0", "got 1e+20": the setting's check saw the float click read.
    ("--tint", "5", "--tint must be between 0 and 1, got 5"),
    ("--tint", "5.0", "--tint must be between 0 and 1, got 5.0"),
    ("--tint", "1.50", "--tint must be between 0 and 1, got 1.50"),
    ("--contrast", "-1", "--contrast must be between 0 and 1, got -1"),
    ("--detail", "1" + "0" * 20, "--detail must be between 0 and 255, got 1" + "0" * 20),
    ("--overlay", "NaN", "--overlay must be between 0 and 1, got NaN"),
    ("--cell", "0", "--cell must be between 1 and 1024 pixels, got 0"),
])
def test_a_number_out_of_range_is_shown_as_typed(target, tmp_path, flag, typed, expected):
    result = run(["make", target, "-o", tmp_path / "m.png", flag, typed])
    assert result.exit_code == 1
    assert error_line(result) == expected


@pytest.mark.parametrize("command", ["make", "index"])
@pytest.mark.parametrize("typed", [["--dedupe", "-1"], ["--dedupe=-1"]])
def test_a_negative_value_is_out_of_range_as_any_other(target, command, typed):
    # '--dedupe -1' ended "(see 'mosaicist make --help')" with status 2, where
    # '--dedupe 65' said the range alone with status 1: click reads -1 as an option.
    first = [command, target] if command == "make" else [command, target.parent]
    negative = run([*first, *typed])
    over = run([*first, "--dedupe", "65"])
    assert (negative.exit_code, over.exit_code) == (1, 1)
    assert error_line(negative) == "--dedupe must be between 0 and 64 bits, got -1"
    assert error_line(over) == "--dedupe must be between 0 and 64 bits, got 65"


@pytest.mark.parametrize(("arguments", "expected"), [
    # click's own words: "Invalid value for '--port': 70000 is not in the range 0 to 65535
    # (see 'mosaicist view --help')", status 2.
    (["view", "m.dzi", "--port", "70000"], "--port must be between 0 and 65535, got 70000"),
    (["view", "m.dzi", "--port", "-1"], "--port must be between 0 and 65535, got -1"),
    (["live", "t.png", "--expected", "0"], "--expected must be at least 1, got 0"),
    (["live", "t.png", "--rate", "-1.0"], "--rate must be at least 0, got -1.0"),
    (["live", "t.png", "--rate", "1e999"], "--rate must be a finite number, got 1e999"),
])
def test_serving_commands_say_ranges_as_the_settings_do(arguments, expected):
    result = run(arguments)
    assert result.exit_code == 1
    assert error_line(result) == expected


@pytest.mark.parametrize(("flags", "expected"), [
    # "--workers must be a whole number, at least 1, got 0".
    (["--workers", "0"], "--workers must be at least 1, got 0"),
    # Whole numbers were shown whole: "--stable 20.0" said "got 20".
    (["--stable", "20.0"], "--stable must be between 0 and 10, got 20.0"),
    (["--fps", "0.00"], "--fps must be between 0.01 and 1000 frames per second, got 0.00"),
])
def test_batch_numbers_are_shown_as_typed(target, tmp_path, flags, expected):
    result = run(["batch", target, "-o", tmp_path / "out", "--video", tmp_path / "v.mp4",
                  *flags])
    assert result.exit_code == 1
    assert error_line(result) == expected


# --- Numbers of the wrong kind: in the settings' words ---------------------------------------


@pytest.mark.parametrize(("arguments", "expected"), [
    # "Invalid value for '--tint': 'abc' is not a valid float": a Python type's name.
    (["make", "t.png", "--tint", "abc"], "--tint must be a number, got 'abc'"),
    (["make", "t.png", "--cell", "2.5"], "--cell must be a whole number, got 2.5"),
    (["make", "t.png", "--cell", "inf"], "--cell must be a whole number, got inf"),
    (["make", "t.png", "--max-uses", "x"], "--max-uses must be a whole number or none, got 'x'"),
    (["make", "t.png", "--dedupe", "nan"], "--dedupe must be a whole number, got nan"),
    (["index", "lib", "--dedupe=-2.5"], "--dedupe must be a whole number, got -2.5"),
    (["batch", "t.png", "-o", "out", "--fps", "fast"], "--fps must be a number, got 'fast'"),
    (["score", "a.png", "b.png", "--view-px", "4.0"], "--view-px must be a whole number, got 4.0"),
    # "... is not a valid integer range".
    (["view", "m.dzi", "--port", "http"], "--port must be a whole number, got 'http'"),
])
def test_a_number_of_the_wrong_kind_is_said_in_words(arguments, expected):
    result = run(arguments)
    assert result.exit_code == 2  # a command line the parser cannot read, as click's
    command = arguments[0]
    assert error_line(result) == f"{expected} (see 'mosaicist {command} --help')"


def test_help_still_names_the_kinds_and_ranges():
    shown = " ".join(run(["live", "--help"]).output.split())
    assert "[default: 8000; 0 to 65535]" in shown and "[default: 30; 0 or more]" in shown
    assert "--cell INTEGER" not in shown
    assert "--workers N" in " ".join(run(["batch", "--help"]).output.split())


# --- Ranges in the Python API -----------------------------------------------------------------


def test_whole_limits_are_shown_whole():
    from mosaicist.errors import range_wording

    # "must be between 0.0 and 1.0, got 5.0" where the limits were given as floats.
    with pytest.raises(OptionError, match=r"^tint must be between 0 and 1, got 5\.0$"):
        check_range("tint", 5.0, 0.0, 1.0)
    assert range_wording(1, unit="pixels") == "at least 1 pixel"
    assert range_wording(0.01, 1000.0, "frames per second") == \
        "between 0.01 and 1000 frames per second"


def test_a_target_over_a_limit_of_one_pixel_says_pixel():
    from mosaicist.imaging import over_target_limit

    # "over the target limit of 1 pixels"; "20000x15000" without separators.
    assert over_target_limit("t.png", 2, 1, 1).message() == (
        "t.png: 2x1 = 2 pixels is over the target limit of 1 pixel (raise it with "
        "max_target_pixels)")
    assert over_target_limit("t.png", 20000, 15000, 10**6).message().startswith(
        "t.png: 20,000x15,000 = 300,000,000 pixels is over the target limit of 1,000,000 "
        "pixels")


# --- Names and choices ------------------------------------------------------------------------


def test_known_searches_and_devices_are_named_unquoted():
    from mosaicist.match import matcher_for
    from mosaicist.options import MosaicOptions

    # "search 'approximate' does not run on device 'cuda'; use cpu": names the user chose
    # from a list, quoted as if unknown; the notes say "--search approximate on --device cpu".
    with pytest.raises(OptionError) as caught:
        matcher_for(MosaicOptions(search="approximate", device="cuda"))
    assert str(caught.value) == "search approximate does not run on device cuda; use cpu"
    with pytest.raises(OptionError) as caught:
        matcher_for(MosaicOptions(search="nearest"))
    assert str(caught.value) == "unknown search 'nearest'; use exact or approximate"
    with pytest.raises(OptionError) as caught:
        matcher_for(MosaicOptions(device="tpu"))
    assert str(caught.value) == "unknown device 'tpu'; use cpu or cuda"


def test_a_registry_lists_its_names_as_alternatives():
    from mosaicist._registry import Registry

    colours: Registry[int] = Registry("colour")
    for name, value in (("red", 1), ("green", 2), ("blue", 3)):
        colours.register(name, value)
    with pytest.raises(OptionError) as caught:
        colours.lookup("pink", "colour")
    assert str(caught.value) == "unknown colour 'pink'; use red, green or blue"


def test_deep_zoom_choices_and_ranges_in_words(tmp_path):
    from mosaicist.render import write_deep_zoom

    with pytest.raises(OptionError) as caught:
        write_deep_zoom(iter([]), 10, 10, tmp_path / "m.dzi", format="gif")
    assert str(caught.value) == "unknown dzi_format 'gif'; use jpeg, png or webp"
    with pytest.raises(OptionError) as caught:
        write_deep_zoom(iter([]), 10, 10, tmp_path / "m.dzi", tile_size=16, overlap=9)
    assert str(caught.value) == ("dzi_overlap must be between 0 and 8 pixels (half the tile "
                                 "size), got 9")


def test_the_approximate_search_names_its_structures_as_alternatives():
    from mosaicist.grid import Geometry
    from mosaicist.match import match_approximate

    # "structure must be one of ('graph', 'lists'), not 'tree'": a tuple's repr.
    with pytest.raises(ValueError) as caught:
        match_approximate(np.zeros((1, 4, 4, 3), np.uint8), np.zeros((1, 4, 4, 3), np.uint8),
                          Geometry(4, 4), structure="tree")
    assert str(caught.value) == "structure must be graph or lists, not 'tree'"


def test_assign_says_the_grid_as_columns_by_rows():
    from mosaicist.match import assign_tiles

    # "5 candidate rows for a 2x3 grid": rows first, where every other message says
    # columns x rows.
    with pytest.raises(ValueError) as caught:
        assign_tiles(np.zeros((5, 1), np.int64), np.zeros((5, 1)), 2, 3)
    assert str(caught.value) == "5 candidate rows for a grid of 3x2 cells"
    with pytest.raises(ValueError) as caught:
        assign_tiles(np.zeros((1, 1), np.int64), np.zeros((1, 1)), 1, 2)
    assert str(caught.value) == "1 candidate row for a grid of 2x1 cells"
