"""GPU and search refusals said the same wherever they are met (session 37, after gpuwords).

- A studio job that failed on a refusal of the card (PyTorch finding no usable card once
  the run had started, say) said it in the command line's words: "“run on” cuda asked for
  but CUDA is not available (PyTorch finds no usable NVIDIA GPU); use “run on” cpu...".
- The faster search's refusal of corrections had its value written into the wording, so
  the page said "“finding the closest photo” approximate does not combine with...".
- ``make --device cuda --preset seed --tint 0.5`` on a machine without a GPU asked for the
  tint to go, and only once it had gone said that there is no GPU.

No GPU is needed: the card's absence (or presence) is made up, the matcher's check patched
as in test_gpuwords_s37.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import gradient
from PIL import Image
from test_gpuwords_s37 import NO_CARD, RAW_WORDS, no_card, refusal
from test_plainwords_s36 import PROGRAMMER_WORDS

from mosaicist import make_mosaic, register_matcher
from mosaicist.cli import main
from mosaicist.errors import OptionError
from mosaicist.match import MATCHERS, Matcher, MatchRequest, MatchResult
from mosaicist.match._approximate import APPROXIMATE_UNCORRECTED
from mosaicist.match._gpu import CUDA_UNAVAILABLE, GPU_EXACT_ONLY, GpuMatcher
from mosaicist.studio import _worker

#: The faster search's refusal of corrections, in the page's words.
APPROXIMATE_ON_PAGE = (
    "\u201cFaster (approximate, for huge collections)\u201d for \u201cfinding the closest "
    "photo\u201d finds photos without corrections: set \u201ccolour correction\u201d and "
    "\u201ccontrast correction\u201d to 0 and \u201cstronger correction where needed\u201d off, "
    "or choose \u201cExact (every photo compared)\u201d for \u201cfinding the closest photo\u201d")
#: The command line's refusal of a GPU that cannot be used.
NO_CUDA_LINE = ("mosaicist: error: --device cuda asked for but CUDA is not available (PyTorch "
                "finds no usable NVIDIA GPU); use --device cpu or a CUDA build of PyTorch")


@pytest.fixture()
def pictures(tmp_path):
    """A 16 x 16 target and a folder of 4 photos of 8 px."""
    target = tmp_path / "t.png"
    Image.fromarray(gradient(16, 16)).save(target)
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    for index in range(4):
        Image.fromarray(gradient(8, 8) // (index + 1)).save(tiles / f"p{index}.png")
    return target, tiles


def card_runs(monkeypatch) -> None:
    """Make this computer one where the GPU search runs (as far as it is checked)."""
    monkeypatch.setattr(GpuMatcher, "check_runs", lambda self, options: None)


def test_a_failed_job_says_the_card_in_the_pages_words(pictures, tmp_path, monkeypatch):
    """The card found usable when the run was checked, then refused by PyTorch in the run."""
    target, tiles = pictures
    no_card(monkeypatch)
    card_runs(monkeypatch)

    def refused(self, request):
        raise OptionError(CUDA_UNAVAILABLE, value="cuda", why="; torch warned: old driver")

    monkeypatch.setattr(GpuMatcher, "match", refused)
    spec = {"kind": "make", "target": str(target), "target_name": "holiday.png",
            "tiles": str(tiles), "folder": str(tmp_path / "run"),
            "cache_dir": str(tmp_path / "cache"),
            "settings": {"device": "cuda", "preset": "seed", "cell_px": 8, "tile_px": 8}}
    reading, writing = os.pipe()
    try:
        with pytest.raises(OptionError) as caught:
            _worker.run_make(spec, _worker.EventWriter(writing))
    finally:
        os.close(reading)
        os.close(writing)
    # It said "“run on” cuda asked for but CUDA is not available (PyTorch finds ...".
    assert _worker.failure_message(caught.value, spec) == NO_CARD


def test_failed_jobs_name_the_choices_by_their_labels():
    """Every refusal the studio words itself reads the same from a job that failed."""
    spec = {"target": "/cache/studio/targets/0123.png", "target_name": "holiday.png"}
    assert _worker.failure_message(OptionError(GPU_EXACT_ONLY, value="cuda"), spec) == (
        "on an \u201cNVIDIA graphics card\u201d only the closest photo is found, without "
        "corrections: set \u201ccolour correction\u201d and \u201ccontrast correction\u201d to 0 "
        "and \u201cstronger correction where needed\u201d off, or choose \u201cThis computer's "
        "processor\u201d for \u201crun on\u201d")
    refused = OptionError(APPROXIMATE_UNCORRECTED, value="approximate")
    assert _worker.failure_message(refused, spec) == APPROXIMATE_ON_PAGE
    # Other refusals keep naming settings by their labels, and the target by its name.
    other = OptionError("{tint} must be between 0 and 1, got {value}", value=2)
    assert _worker.failure_message(other, spec) == (
        "\u201ccolour correction\u201d must be between 0 and 1, got 2")
    assert _worker.failure_message("/cache/studio/targets/0123.png: permission denied", spec) == (
        "holiday.png: permission denied")


def test_the_workers_words_need_no_web_server():
    """A job process says its failures without importing the web app (Starlette)."""
    code = ("import sys\n"
            "from mosaicist.errors import OptionError\n"
            "from mosaicist.match._gpu import GPU_EXACT_ONLY\n"
            "from mosaicist.studio._worker import failure_message\n"
            "print(failure_message(OptionError(GPU_EXACT_ONLY, value='cuda'), {}))\n"
            "print(sorted(name for name in sys.modules\n"
            "             if name.startswith('starlette') or name == 'mosaicist.studio._app'))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    said, imported = result.stdout.strip().splitlines()
    assert said.startswith("on an \u201cNVIDIA graphics card\u201d only"), said
    assert imported == "[]"


def test_the_faster_searchs_refusal_of_corrections_names_it_by_its_label():
    """The page said "“finding the closest photo” approximate does not combine with ..."."""
    text = refusal({"search": "approximate", "tint": 0.5})
    assert text == APPROXIMATE_ON_PAGE
    assert refusal({"search": "approximate", "preset": "seed", "contrast": 0.5}) == text
    bare = re.sub(r"\u201c[^\u201d]*\u201d", "\u201c\u201d", text)
    assert not RAW_WORDS.search(bare), text
    assert not PROGRAMMER_WORDS.search(text), text


def test_the_command_line_keeps_the_faster_searchs_words(pictures, tmp_path):
    target, tiles = pictures
    result = CliRunner().invoke(main, ["make", str(target), "--tiles", str(tiles), "-o",
                                       str(tmp_path / "m.png"), "--search", "approximate",
                                       "--tint", "0.5"])
    assert result.exit_code == 1
    assert result.output.strip() == ("mosaicist: error: --search approximate does not combine "
                                     "with --tint, --tint-max or --contrast")


@pytest.mark.parametrize("flags", [
    ["--preset", "seed", "--tint", "0.5"],
    ["--preset", "seed", "--contrast", "0.5"],
    ["--search", "approximate"],
    ["--preset", "seed", "--max-uses", "2"],
])
def test_make_says_there_is_no_gpu_before_what_the_gpu_cannot_do(pictures, tmp_path,
                                                                 monkeypatch, flags):
    """It said "--device cuda runs the exact nearest-tile search only (... no --tint ...)",
    and, once --tint was gone, that there is no GPU."""
    target, tiles = pictures
    no_card(monkeypatch)
    result = CliRunner().invoke(main, ["make", str(target), "--tiles", str(tiles), "-o",
                                       str(tmp_path / "m.png"), "--device", "cuda", *flags])
    assert result.exit_code == 1
    assert result.output.strip() == NO_CUDA_LINE
    assert "Traceback" not in result.output
    assert not (tmp_path / "m.png").exists()


def test_batch_says_there_is_no_gpu_before_what_the_gpu_cannot_do(pictures, tmp_path,
                                                                  monkeypatch):
    # As make: it asked for the tint to go first.
    target, tiles = pictures
    no_card(monkeypatch)
    result = CliRunner().invoke(main, ["batch", str(target), "--tiles", str(tiles), "-o",
                                       str(tmp_path / "out"), "--device", "cuda", "--preset",
                                       "seed", "--tint", "0.5"])
    assert result.exit_code == 1
    assert result.output.strip() == NO_CUDA_LINE
    assert not (tmp_path / "out").exists()


def test_the_api_says_there_is_no_gpu_first_too(pictures, tmp_path, monkeypatch):
    target, tiles = pictures
    no_card(monkeypatch)
    with pytest.raises(OptionError) as caught:
        make_mosaic(target, tiles, device="cuda", preset="seed", tint=0.5,
                    cache_dir=tmp_path / "c")
    assert caught.value.template == CUDA_UNAVAILABLE
    assert not (tmp_path / "c").exists()  # before any indexing


def test_where_the_gpu_runs_what_it_cannot_do_is_said(pictures, tmp_path, monkeypatch):
    """The order changed only where the card cannot be used."""
    target, tiles = pictures
    card_runs(monkeypatch)
    expected = {
        ("--preset", "seed", "--tint", "0.5"):
            "mosaicist: error: --device cuda runs the exact nearest-tile search only (any "
            "--metric and --augment; no --tint, --tint-max, --contrast or repetition limits)",
        ("--search", "approximate"):
            "mosaicist: error: --search approximate does not run on --device cuda; use cpu",
    }
    for flags, line in expected.items():
        result = CliRunner().invoke(main, ["make", str(target), "--tiles", str(tiles), "-o",
                                           str(tmp_path / "m.png"), "--device", "cuda", *flags])
        assert result.exit_code == 1
        assert result.output.strip() == line


def test_a_plugin_that_runs_on_the_device_lets_its_refusal_be_said(pictures, tmp_path,
                                                                    monkeypatch):
    """Where another matcher runs on the device, the device is usable: the fit error stays."""
    target, tiles = pictures
    no_card(monkeypatch)

    class ElsewhereOnTheCard(Matcher):
        """A plugin's search on the card that needs no PyTorch (it never runs here)."""

        name = "elsewhere"
        search = "elsewhere"
        devices = ("cuda",)

        def match(self, request: MatchRequest) -> MatchResult:
            raise AssertionError("not run")

    register_matcher(ElsewhereOnTheCard())
    try:
        result = CliRunner().invoke(main, ["make", str(target), "--tiles", str(tiles), "-o",
                                           str(tmp_path / "m.png"), "--device", "cuda",
                                           "--preset", "seed", "--tint", "0.5"])
    finally:
        MATCHERS.unregister("elsewhere")
    assert result.exit_code == 1
    assert result.output.strip().startswith(
        "mosaicist: error: --device cuda runs the exact nearest-tile search only"), result.output
