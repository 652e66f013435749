"""The last messages that said '1 pixels', '0 to 127', a Python value or a bare list of
choices, and a quiet make that counted metrics no one would see."""

from __future__ import annotations

import io
import json
import types

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import gradient, make_colour_folder, record_results
from PIL import Image

from mosaicist import pipeline
from mosaicist.batch._stable import StableMatcher
from mosaicist.batch._video import read_frames
from mosaicist.cli import main
from mosaicist.errors import MosaicistError, OptionError
from mosaicist.live._event import parse_grid
from mosaicist.live._sheets import _check as check_sheets
from mosaicist.options import MosaicOptions
from mosaicist.render import output_format
from mosaicist.studio._uploads import decode_upload


def run(args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def error_line(result):
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("mosaicist: error")]
    assert len(lines) == 1, result.stderr
    return lines[0].removeprefix("mosaicist: error: ")


@pytest.fixture
def setup(tmp_path):
    target = tmp_path / "target.png"
    Image.fromarray(gradient(32, 24)).save(target)
    return target, make_colour_folder(tmp_path / "tiles", 12, size=8)


def refusal(**settings) -> str:
    with pytest.raises(OptionError) as caught:
        MosaicOptions(**settings)
    return str(caught.value)


def test_a_huge_pixel_limit_says_at_least_1_pixel(setup, tmp_path):
    # "--max-target-pixels must be at least 1 pixels (a number of at most 19 digits)".
    target, tiles = setup
    result = run(["make", target, "--tiles", tiles, "-o", tmp_path / "out.png",
                  "--max-target-pixels", "99999999999999999999"])
    assert error_line(result) == ("--max-target-pixels must be at least 1 pixel and at most "
                                  "9,223,372,036,854,775,807, got 99999999999999999999")
    assert refusal(jpeg_quality=10**30) == ("jpeg_quality must be between 1 and 100, got a "
                                            "number of 31 digits")


def test_a_whole_number_given_for_a_number_is_shown_as_given():
    # MosaicOptions(tint=5) said "got 5.0", a value no one gave.
    assert refusal(tint=5) == "tint must be between 0 and 1, got 5"
    assert refusal(tint=np.int64(-2)) == "tint must be between 0 and 1, got -2"
    assert refusal(overlay=1.5) == "overlay must be between 0 and 1, got 1.5"
    assert MosaicOptions(tint=1).tint == 1.0 and isinstance(MosaicOptions(tint=1).tint, float)


def test_the_deep_zoom_overlap_says_its_range_in_words():
    assert refusal(dzi_overlap=200) == ("dzi_overlap must be between 0 and 127 pixels (half "
                                        "of dzi_tile_size), got 200")


def test_a_video_over_the_target_limit_says_it_as_a_picture_does(tmp_path):
    pytest.importorskip("av")
    from conftest import write_frames

    video = tmp_path / "clip.mp4"
    write_frames(video, [gradient(1024, 16)] * 2)
    with pytest.raises(OptionError) as caught:
        next(iter(read_frames(video, max_pixels=1)))
    assert str(caught.value) == (f"{video}: 1,024x16 = 16,384 pixels is over the target limit "
                                 "of 1 pixel (raise it with max_target_pixels)")


def test_a_matcher_without_stable_support_is_named_unquoted():
    inner = types.SimpleNamespace(repetition_limits=True, search="exact")
    with pytest.raises(OptionError) as caught:
        StableMatcher(inner, None, 50)  # type: ignore[arg-type]
    assert str(caught.value) == ("stable works with the built-in matchers, not with search "
                                 "exact and repetition limits")


def test_live_and_studio_ranges_in_words(tmp_path):
    with pytest.raises(MosaicistError) as caught:
        check_sheets("a4", 0.5)
    assert str(caught.value) == "the tile width must be between 1 and 30 cm, got 0.5"
    with pytest.raises(MosaicistError) as caught:
        check_sheets("a3", 5)
    assert str(caught.value) == "unknown paper 'a3'; use a4 or letter"
    with pytest.raises(MosaicistError) as caught:
        parse_grid("2000x3")
    assert str(caught.value) == ("a grid side must be between 1 and 1,000 cells, got 2000x3 "
                                 "(--grid)")
    picture = io.BytesIO()
    Image.new("RGB", (2000, 1)).save(picture, "PNG")
    with pytest.raises(MosaicistError) as caught:
        decode_upload(picture.getvalue(), "wide.png", max_pixels=1)
    assert str(caught.value) == ("wide.png: the picture is 2,000x1 = 2,000 pixels, over the "
                                 "limit of 1 pixel")


def test_the_live_wall_says_its_choices_and_ranges_in_words(tmp_path):
    from test_live_api import Wall

    target = tmp_path / "couple.png"
    Image.fromarray(gradient(90, 60)).save(target)
    wall = Wall(tmp_path / "event", target)
    try:
        answer = wall.host.get("/api/admin/export?format=gif")
        assert answer.status_code == 400
        assert answer.json()["error"] == "format must be png, tiff or dzi"
        answer = wall.anyone.get("/api/wall.jpg?width=0")
        assert answer.status_code == 400
        assert answer.json()["error"] == "width must be between 16 and 4,096"
    finally:
        wall.close()


def test_output_formats_are_listed_as_alternatives():
    with pytest.raises(MosaicistError) as caught:
        output_format("a.bmp")
    assert str(caught.value) == ("a.bmp: unknown output format '.bmp'; use .dzi, .jpeg, .jpg, "
                                 ".png, .tif, .tiff or .webp")
    # A suffix whose bytes are not UTF-8 is shown as the path shows it, not as surrogates.
    import os

    with pytest.raises(MosaicistError, match=r"unknown output format '\.bad\\xff'; use"):
        output_format(os.fsdecode(b"o.bad\xff"))


def test_ignored_flags_are_listed_with_and(setup, tmp_path):
    target, tiles = setup
    result = run(["make", target, "--tiles", tiles, "-o", tmp_path / "a.png", "--cell", 8,
                  "--tile-px", 8, "--quality", 80, "--dzi-overlap", 2, "--dzi-format", "png"])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if "note:" in line]
    assert notes == ["mosaicist: note: --quality, --dzi-overlap and --dzi-format have no "
                     "effect on a PNG output; ignored"]


def test_a_quiet_make_without_a_report_leaves_the_metrics_out(setup, tmp_path, monkeypatch):
    # Neither shown nor written: counted in the memory estimate all the same.
    target, tiles = setup
    estimates = record_results(monkeypatch, pipeline, "make_memory")
    made = []
    for name, flags in (("loud", []), ("quiet", ["-q"]),
                        ("reported", ["-q", "--report", tmp_path / "report.json"])):
        result = run(["make", target, "--tiles", tiles, "-o", tmp_path / f"{name}.png",
                      "--placements", tmp_path / f"{name}.json", "--cell", 8, "--tile-px", 8,
                      *flags])
        assert result.exit_code == 0, result.output
        made.append(((tmp_path / f"{name}.png").read_bytes(),
                     json.loads((tmp_path / f"{name}.json").read_text())))
    assert [parts["metrics"] > 0 for parts in estimates] == [True, False, True]
    # The same picture and the same placements, settings included (a later render
    # --report measures the metrics).
    assert made[0] == made[1] == made[2]
    assert made[1][1]["settings"]["compute_metrics"] is True
    assert "psnr_full" in json.loads((tmp_path / "report.json").read_text())["metrics"]
