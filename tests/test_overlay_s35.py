"""The overlay's target as it was matched: recorded in JSON placements, checked on render.

A render with an overlay blends the target picture that the placements name;
one edited, replaced or resized since the make was blended without a word.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import make_colour_folder
from PIL import Image

from mosaicist import make_mosaic
from mosaicist.errors import MosaicistError, OptionError
from mosaicist.imaging import read_target
from mosaicist.placements import Placements, TargetPixels
from mosaicist.render import placements_renderer


def _target_picture(width: int = 40, height: int = 24, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture
def made(tmp_path):
    """A make with an overlay, its JSON placements written: (placements file, target, cache)."""
    tiles = make_colour_folder(tmp_path / "tiles", 12, size=16)
    target = tmp_path / "target.png"
    Image.fromarray(_target_picture()).save(target)
    cache = tmp_path / "cache"
    mosaic = make_mosaic(target, tiles, cell_px=8, tile_px=8, preset="seed", overlay=0.5,
                         compute_metrics=False, cache_dir=cache)
    mosaic.placements.write(tmp_path / "p.json", quiet=True)
    return tmp_path / "p.json", target, cache


def _render(placements_file, cache):
    return placements_renderer(Placements.read(placements_file), cache_dir=cache)


def test_json_placements_record_the_target_as_it_was_matched(made, tmp_path):
    placements_file, target, _ = made
    document = json.loads(placements_file.read_text())
    pixels = read_target(target)
    assert document["target_pixels"] == {"width": 40, "height": 24,
                                         "hash": TargetPixels.of(pixels).digest}
    read = Placements.read(placements_file)
    assert read.target_pixels == TargetPixels(40, 24, TargetPixels.of(pixels).digest)
    # Written back as read.
    assert read.to_json()["target_pixels"] == document["target_pixels"]
    # CSV as it was: no column of the target.
    read.write(tmp_path / "p.csv")
    header = (tmp_path / "p.csv").read_text().splitlines()[0]
    assert header == "row,col,tile,distance,position,transform,tint_0,tint_1,tint_2"


def test_a_target_in_memory_records_no_target_pixels(tmp_path):
    tiles = make_colour_folder(tmp_path / "tiles", 12, size=16)
    mosaic = make_mosaic(_target_picture(), tiles, cell_px=8, tile_px=8, preset="seed",
                         compute_metrics=False, cache_dir=tmp_path / "cache")
    document = mosaic.placements.to_json()
    assert document["target"] is None and "target_pixels" not in document


def test_render_overlay_of_an_unchanged_target_says_nothing(made):
    placements_file, target, cache = made
    os.utime(target)  # touched, same pixels
    renderer = _render(placements_file, cache)
    assert renderer.overlay is not None and renderer.changed_target is None


def test_render_overlay_says_the_target_was_edited_since_the_make(made):
    placements_file, target, cache = made
    edited = _target_picture()
    edited[:4, :4] = 255
    Image.fromarray(edited).save(target)
    renderer = _render(placements_file, cache)
    assert renderer.changed_target == (
        f"{target}: the target changed since these placements were made (same 40x24 px, "
        "other pixels); the overlay blends it as it is now")
    # Blended as it is now, as a changed tile is drawn as it is now.
    assert renderer.overlay is not None


def test_render_overlay_says_the_target_was_resized_since_the_make(made):
    placements_file, target, cache = made
    Image.fromarray(_target_picture(48, 30)).save(target)
    assert _render(placements_file, cache).changed_target == (
        f"{target}: the target changed since these placements were made (40x24 px then, "
        "48x30 now); the overlay blends it as it is now")


def test_render_overlay_of_a_target_shrunk_past_the_grid_names_both_sizes(made):
    placements_file, target, cache = made
    Image.fromarray(_target_picture(20, 12)).save(target)
    with pytest.raises(MosaicistError) as error:
        _render(placements_file, cache)
    assert str(error.value) == (
        f"{target}: the overlay's 40x24 window at (0, 0) does not lie inside this 20x12 "
        "target (40x24 px then, 20x12 now: replaced or resized since the placements were "
        "made)")


def test_render_without_overlay_does_not_read_the_target(made):
    placements_file, target, cache = made
    target.unlink()
    placements = Placements.read(placements_file)
    renderer = placements_renderer(placements, placements.options.replace(overlay=0.0),
                                   cache_dir=cache)
    assert renderer.overlay is None and renderer.changed_target is None


def test_placements_of_earlier_versions_without_target_pixels_render_unchecked(made):
    placements_file, target, cache = made
    document = json.loads(placements_file.read_text())
    del document["target_pixels"]
    placements_file.write_text(json.dumps(document))
    Image.fromarray(_target_picture(seed=4)).save(target)
    renderer = _render(placements_file, cache)
    assert renderer.overlay is not None and renderer.changed_target is None


@pytest.mark.parametrize(("recorded", "words"), [
    ("f" * 32, "target_pixels must be an object, got str"),
    ({"width": 40, "height": 24}, "no target_pixels.hash"),
    ({"width": 0, "height": 24, "hash": "f" * 32},
     "target_pixels.width must be a whole number of at least 1, got 0"),
    ({"width": 40, "height": True, "hash": "f" * 32},
     "target_pixels.height must be a whole number, got bool"),
    ({"width": 40, "height": 24, "hash": "F" * 32},
     "target_pixels.hash is not a content hash (32 hex digits): 'FFFFFFFF"),
])
def test_a_malformed_target_record_is_refused_in_one_line(made, recorded, words):
    placements_file, _, _ = made
    document = json.loads(placements_file.read_text())
    document["target_pixels"] = recorded
    placements_file.write_text(json.dumps(document))
    with pytest.raises(MosaicistError) as error:
        Placements.read(placements_file)
    message = str(error.value)
    assert message.startswith(f"{placements_file}: not a valid placements file ({words}")
    assert "\n" not in message


def test_target_pixels_given_in_memory_are_checked_by_name():
    with pytest.raises(OptionError, match=r"^target_pixels must be a TargetPixels, got a dict"):
        Placements(1, 1, np.zeros(1, np.int64), np.zeros(1, np.int64), ["a.png"],
                   target="t.png", target_pixels={"width": 1})  # type: ignore[arg-type]
    with pytest.raises(OptionError, match=r"^digest must be a content hash"):
        TargetPixels(1, 1, "x")
    with pytest.raises(OptionError, match=r"^width must be a whole number of at least 1"):
        TargetPixels(0, 1, "0" * 32)


def test_render_overlay_of_a_target_link_to_nothing_says_so(made, tmp_path):
    placements_file, target, cache = made
    target.unlink()
    os.symlink(tmp_path / "moved.png", target)
    with pytest.raises(MosaicistError) as error:
        _render(placements_file, cache)
    assert str(error.value) == (
        f"{target}: the overlay needs the target picture, which is a link to "
        f"{tmp_path / 'moved.png'}, which is not there")


def test_render_warns_in_one_line_of_an_overlay_target_changed_since_the_make(tmp_path):
    # Edited after the make, the target was blended by render --overlay without a word.
    from click.testing import CliRunner

    from mosaicist.cli import main

    def run(*args):
        return CliRunner().invoke(main, [str(arg) for arg in args])

    tiles = make_colour_folder(tmp_path / "tiles", 12, size=16)
    target = tmp_path / "target.png"
    Image.fromarray(_target_picture()).save(target)
    made = run("make", target, "--tiles", tiles, "--cell", 8, "--tile-px", 8, "--preset", "seed",
               "--overlay", 0.5, "-o", tmp_path / "m.png", "--placements", tmp_path / "p.json",
               "--cache-dir", tmp_path / "c", "-q")
    assert made.exit_code == 0, made.output
    render = ["render", tmp_path / "p.json", "-o", tmp_path / "r.png", "--cache-dir",
              tmp_path / "c"]
    assert "warning" not in run(*render).stderr
    Image.fromarray(_target_picture(seed=9)).save(target)
    warned = run(*render)
    assert warned.exit_code == 0, warned.output
    assert warned.stderr.splitlines()[0] == (
        f"mosaicist: warning: {target}: the target changed since these placements were made "
        "(same 40x24 px, other pixels); the overlay blends it as it is now")
    assert "warning" not in run(*render, "-q").stderr


def test_an_adaptive_make_of_a_home_target_records_its_real_path(tmp_path, monkeypatch):
    # Recorded as "<cwd>/~/t.png", a later overlay render said the target was not found.
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    Image.fromarray(_target_picture(48, 32)).save(home / "t.png")
    tiles = make_colour_folder(tmp_path / "tiles", 12)
    mosaic = make_mosaic("~/t.png", tiles, cell_px=8, tile_px=8, adaptive=1,
                         cache_dir=tmp_path / "cache")
    assert mosaic.placements.adaptive
    assert mosaic.placements.target == str((home / "t.png").resolve())
