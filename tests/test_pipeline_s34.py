"""Refusals that advise what the user can change, and leave no work behind (session 34)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_colour_folder
from PIL import Image

from mosaicist import _runtime, make_mosaic, pipeline
from mosaicist.cli import main
from mosaicist.errors import MosaicistError, OptionError
from mosaicist.options import MosaicOptions
from mosaicist.pipeline import check_make_memory
from mosaicist.render import JPEG, OUTPUT_FORMATS, PNG, TIFF, WEBP


def _flags(name: str) -> str:
    return "--" + name.replace("_", "-")


@pytest.fixture()
def small_target(tmp_path):
    target = tmp_path / "target.png"
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(target)
    return target


# --- a memory refusal names the setting that chose the cells -----------------------------------


def test_a_memory_refusal_of_a_cell_count_advises_fewer_cells(tmp_path, small_target,
                                                               monkeypatch):
    # "--cells 1000000000" was told "use a larger --cell", which then failed with "give one
    # of them": the count chose the cell, so the count is what to lower.
    tiles = make_colour_folder(tmp_path / "tiles", 4)
    monkeypatch.setenv(_runtime._MEMORY_ENV, str(1_000_000))
    result = CliRunner().invoke(main, ["make", str(small_target), "--tiles", str(tiles),
                                       "--cells", "3000", "-o", str(tmp_path / "out.png")])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("mosaicist: error: 3,072 cells matched against 32x32 px tiles need ")
    assert "use fewer --cells or " in line and "--cell " not in line


def test_a_memory_refusal_of_a_given_cell_still_advises_a_larger_cell():
    options = MosaicOptions(cell_px=1, tile_px=1024)
    with pytest.raises(OptionError) as caught:
        check_make_memory(3000, 4000, options, available=1_000_000)
    assert "use a larger --cell-px or" in caught.value.message(_flags)
    fitted = MosaicOptions(cells=12_000_000).fitted(cell_px=1)
    with pytest.raises(OptionError) as caught:
        check_make_memory(3000, 4000, fitted, available=1_000_000)
    message = caught.value.message(_flags)
    assert message.startswith("12,000,000 cells matched")
    assert "use fewer --cells or" in message and "--cell-px" not in message


# --- a picture too large for its format is sent to the formats that hold it --------------------


@pytest.mark.parametrize(("output", "width", "advice"), [
    (PNG, 2**31, "use .dzi"),
    (TIFF, 2**31, "use .dzi"),
    (JPEG, 70_000, "use .png, .tif or .dzi"),
    (WEBP, 20_000, "use .jpg, .png, .tif or .dzi"),
])
def test_a_side_over_the_limit_lists_only_other_formats_that_hold_it(output, width, advice):
    # "x.png: ... over the PNG limit of 2,147,483,647 pixels a side; use .png, .tif or .dzi".
    path = Path("x" + output.suffixes[0])
    with pytest.raises(MosaicistError) as caught:
        output.check(path, width, 10)
    message = str(caught.value)
    assert message.endswith(f" pixels a side; {advice}")
    assert output.suffixes[0] not in message.split("; use ")[1]


def test_a_size_no_format_holds_advises_a_smaller_picture(monkeypatch):
    monkeypatch.setattr(OUTPUT_FORMATS, "_entries", {
        suffix: output for suffix, output in OUTPUT_FORMATS.items() if suffix != ".dzi"})
    with pytest.raises(OptionError) as caught:
        PNG.check(Path("x.png"), 2**31, 10)
    assert caught.value.message(_flags) == (
        "x.png: 2,147,483,648x10 pixels is over the PNG limit of 2,147,483,647 pixels a side, "
        "and no other format holds it: use a larger --cell-px or a smaller --tile-px")
    chosen = MosaicOptions(cells=5000, print_size="60x40cm")
    with pytest.raises(OptionError) as caught:
        PNG.check(Path("x.png"), 2**31, 10, chosen)
    assert caught.value.message(_flags).endswith(
        "use fewer --cells or a smaller --print-size or a lower --dpi")


# --- a refused plan leaves no target decoding behind --------------------------------------------


def test_a_refused_plan_leaves_no_decoding_thread(tmp_path, small_target, monkeypatch):
    # The target began decoding on a thread before the plan's memory check: through the
    # API (a studio, a batch), a huge target kept decoding after the refusal.
    calls = []
    release = threading.Event()
    read_target = pipeline.read_target

    def recorded(*arguments, **keywords):
        calls.append(arguments)
        release.wait(5)  # held, so that a thread started is seen running
        return read_target(*arguments, **keywords)

    monkeypatch.setattr(pipeline, "read_target", recorded)
    monkeypatch.setenv(_runtime._MEMORY_ENV, str(1_000_000))
    tiles = make_colour_folder(tmp_path / "tiles", 4)
    try:
        with pytest.raises(OptionError, match="need about"):
            make_mosaic(small_target, tiles, cells=3000)
        decoding = [thread for thread in threading.enumerate()
                    if thread.name == "mosaicist-target" and thread.is_alive()]
        assert decoding == [] and calls == []
    finally:
        release.set()


def test_an_accepted_plan_decodes_the_target_once(tmp_path, small_target, monkeypatch):
    calls = []
    read_target = pipeline.read_target

    def recorded(*arguments, **keywords):
        calls.append(threading.current_thread().name)
        return read_target(*arguments, **keywords)

    monkeypatch.setattr(pipeline, "read_target", recorded)
    tiles = make_colour_folder(tmp_path / "tiles", 4)
    mosaic = make_mosaic(small_target, tiles, cell_px=16, compute_metrics=False)
    assert mosaic.grid.rows * mosaic.grid.cols == 12
    assert calls == ["mosaicist-target"]  # on its own thread, overlapping the library's opening
