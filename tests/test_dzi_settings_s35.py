"""Deep Zoom settings that make a pyramid no viewer can use are refused before any work.

Tile sides of 1-15 px made pyramids of millions of files (``--dzi-tile-size 1`` on a
2560x1920 mosaic: 6.6 million, still being written and then removed minutes after it
was stopped), and sides past 2048 px made every request megabytes; a pyramid of
more than a million tile files is refused whatever its tile side, naming the side
that fits. No test here renders a large picture: the checks come first.
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_colour_folder
from PIL import Image

from mosaicist import MosaicOptions, OptionError
from mosaicist.cli import main
from mosaicist.render import check_output
from mosaicist.render._deepzoom import MOST_TILE_FILES, DeepZoomLayout, write_deep_zoom


@pytest.mark.parametrize(("changes", "message"), [
    ({"dzi_tile_size": 1}, "dzi_tile_size must be between 16 and 2048 pixels, got 1"),
    ({"dzi_tile_size": 5}, "dzi_tile_size must be between 16 and 2048 pixels, got 5"),
    ({"dzi_tile_size": 8192}, "dzi_tile_size must be between 16 and 2048 pixels, got 8192"),
    ({"dzi_tile_size": 16, "dzi_overlap": 9},
     "dzi_overlap must be between 0 and 8 pixels (half of dzi_tile_size), got 9"),
])
def test_tile_sides_no_viewer_can_use_are_refused_by_name(changes, message):
    with pytest.raises(OptionError) as caught:
        MosaicOptions(**changes)
    assert str(caught.value) == message


@pytest.mark.parametrize(("tile_size", "overlap"), [(16, 0), (16, 8), (254, 1), (2048, 2)])
def test_tile_sides_in_range_are_taken(tile_size, overlap):
    options = MosaicOptions(dzi_tile_size=tile_size, dzi_overlap=overlap)
    assert (options.dzi_tile_size, options.dzi_overlap) == (tile_size, overlap)


@pytest.fixture
def cli_setup(tmp_path):
    target = tmp_path / "target.png"
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (32, 48, 3), np.uint8)).save(target)
    return target, make_colour_folder(tmp_path / "tiles", 12, size=8)


@pytest.mark.parametrize(("flags", "message"), [
    (["--dzi-tile-size", "1", "--dzi-overlap", "0"],
     "mosaicist: error: --dzi-tile-size must be between 16 and 2048 pixels, got 1"),
    (["--dzi-tile-size", "8192"],
     "mosaicist: error: --dzi-tile-size must be between 16 and 2048 pixels, got 8192"),
])
def test_the_command_line_refuses_them_in_one_line_naming_the_flag(cli_setup, tmp_path, flags,
                                                                    message):
    target, tiles = cli_setup
    result = CliRunner().invoke(main, [
        "make", str(target), "--tiles", str(tiles), "--cell", "4", "--tile-px", "8",
        "-o", str(tmp_path / "m.dzi"), "--cache-dir", str(tmp_path / "cache"), *flags])
    assert result.exit_code != 0
    assert result.output.strip() == message
    assert not (tmp_path / "m_files").exists()


def test_a_pyramid_of_millions_of_files_is_refused_naming_the_side_that_fits(tmp_path):
    path = tmp_path / "big.dzi"
    with pytest.raises(OptionError) as caught:
        check_output(path, 20480, 15360, MosaicOptions(dzi_tile_size=16))
    flag = caught.value.message(lambda name: "--" + name.replace("_", "-"))
    assert flag == (f"{path}: a 20,480x15,360 px Deep Zoom pyramid of 16 px tiles is 1,638,413 "
                    "tile files, over the 1,000,000 a pyramid may have; use --dzi-tile-size 21 "
                    "or more")
    # The side named is the least that fits.
    assert DeepZoomLayout(20480, 15360, 21).tile_total() <= MOST_TILE_FILES
    assert DeepZoomLayout(20480, 15360, 20).tile_total() > MOST_TILE_FILES
    check_output(path, 20480, 15360, MosaicOptions(dzi_tile_size=21))
    assert list(tmp_path.iterdir()) == []


def test_a_picture_too_large_for_any_tile_side_asks_for_fewer_pixels(tmp_path):
    with pytest.raises(OptionError) as caught:
        check_output(tmp_path / "huge.dzi", 4_000_000, 3_000_000,
                     MosaicOptions(dzi_tile_size=2048))
    assert str(caught.value).endswith("a pyramid may have; use larger cells or a smaller tile_px")


def test_write_deep_zoom_refuses_before_taking_a_band(tmp_path):
    def bands():
        raise AssertionError("a band was taken")
        yield  # pragma: no cover

    with pytest.raises(OptionError, match=r"is 6,553,609 tile files, over the 1,000,000 a "
                                          r"pyramid may have; use dzi_tile_size 16 or more$"):
        write_deep_zoom(bands(), 2560, 1920, tmp_path / "m.dzi", tile_size=1, overlap=0)
    assert list(tmp_path.iterdir()) == []


def test_settings_saved_with_a_side_now_out_of_range_are_read_at_the_nearest():
    saved = MosaicOptions().to_json()
    small = MosaicOptions.from_json(saved | {"dzi_tile_size": 4, "dzi_overlap": 1})
    assert (small.dzi_tile_size, small.dzi_overlap) == (16, 1)
    large = MosaicOptions.from_json(saved | {"dzi_tile_size": 4096, "dzi_overlap": 2000})
    assert (large.dzi_tile_size, large.dzi_overlap) == (2048, 1024)
    # Values of the wrong kind, or an overlap wrong at its own side, are still refused.
    with pytest.raises(OptionError, match="dzi_tile_size must be a whole number"):
        MosaicOptions.from_json(saved | {"dzi_tile_size": "4"})
    with pytest.raises(OptionError, match="dzi_overlap must be between 0 and 127"):
        MosaicOptions.from_json(saved | {"dzi_overlap": 200})
    # Sides no file was ever written with (0, -5, a million) are refused by name, not
    # drawn at 16 or 2048 without a word.
    for side in (0, -5, 4097, 1_000_000):
        with pytest.raises(OptionError, match=f"dzi_tile_size must be between 16 and 2048 "
                                              f"pixels, got {side}"):
            MosaicOptions.from_json(saved | {"dzi_tile_size": side})
