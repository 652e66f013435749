"""The studio says why the NVIDIA graphics card cannot be used in its own words (session 37).

Choosing "Run on: NVIDIA graphics card" on a computer without one showed on the preview
line "“run on” cuda asked for but CUDA is not available (PyTorch finds no usable NVIDIA
GPU); use “run on” cpu or a CUDA build of PyTorch": values the page never shows (cuda,
cpu) and a program its users never heard of. The refusals of a search or device now name
the choices by their labels on the page, the card is marked where it is known (without
importing PyTorch) that it cannot be used, and the command line keeps its flags and
values. No GPU is needed: the card's absence is made up (the matcher's check patched).
In Chromium (through Playwright, skipped where it is missing) a studio served in a
thread (the ``served`` fixture of test_studio_s33).
"""

from __future__ import annotations

import json
import re
import sys
import types

import pytest
from click.testing import CliRunner
from conftest import gradient
from PIL import Image
from test_plainwords_s36 import PROGRAMMER_WORDS
from test_studio_s33 import TIMEOUT_MS, png_bytes, served  # noqa: F401 - the fixture
from test_studio_s36 import INDEX_JOB, opened

from mosaicist.cli import main
from mosaicist.errors import MosaicistError, OptionError
from mosaicist.match._gpu import CUDA_UNAVAILABLE, GPU_EXACT_ONLY, GpuMatcher
from mosaicist.match._registry import (
    NEEDS_REPETITION_LIMITS,
    NOT_ON_DEVICE,
    WITHOUT_REPETITION_LIMITS,
)
from mosaicist.studio import _app, _words
from mosaicist.studio._app import Studio, WebError
from mosaicist.studio._form import settings_form
from mosaicist.studio._words import page_message

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

#: What the page says where no NVIDIA graphics card can be used.
NO_CARD = ("no NVIDIA graphics card can be used on this computer; choose \u201cThis computer's "
           "processor\u201d for \u201crun on\u201d")
NOT_INSTALLED = ("this copy of mosaicist was installed without NVIDIA graphics card support; "
                 "choose \u201cThis computer's processor\u201d for \u201crun on\u201d")
#: The command line's words, and the programs behind the settings, never on the page.
RAW_WORDS = re.compile(r"\bcuda\b|\bcpu\b|PyTorch|\bCUDA\b|\bGPU\b|\bexact\b|\bapproximate\b")


def no_card(monkeypatch, installed: bool = True) -> None:
    """Make this computer one where the GPU search cannot run: PyTorch finds no card, or
    (``installed`` false) PyTorch is not installed."""
    def check_runs(self, options):
        if not installed:
            raise MosaicistError("PyTorch is not installed; install the gpu extra: "
                                 "pip install '.[gpu]'")
        raise OptionError(CUDA_UNAVAILABLE, value="cuda", why="")

    monkeypatch.setattr(GpuMatcher, "check_runs", check_runs)
    # PyTorch present (a CUDA build, say) or not, whatever this machine has.
    monkeypatch.setattr(_words, "_torch_spec",
                        (lambda: types.SimpleNamespace(submodule_search_locations=[]))
                        if installed else (lambda: None))
    monkeypatch.setitem(sys.modules, "torch", None)  # not imported; never imported again


def refusal(settings: dict) -> str:
    with pytest.raises(WebError) as caught:
        Studio.options(settings)
    assert caught.value.status_code == 400
    return caught.value.detail


def test_no_card_is_said_in_the_pages_words(monkeypatch):
    """The page said "“run on” cuda asked for but CUDA is not available (PyTorch ...)"."""
    no_card(monkeypatch)
    assert refusal({"device": "cuda"}) == NO_CARD
    no_card(monkeypatch, installed=False)
    # It said "PyTorch is not installed; install the gpu extra: pip install ...".
    assert refusal({"device": "cuda"}) == NOT_INSTALLED


def test_no_card_is_said_before_what_the_card_cannot_do(monkeypatch):
    """With a tint, or the faster search, the page asked for them to be changed, and then
    said there was no card at all."""
    no_card(monkeypatch)
    assert refusal({"device": "cuda", "preset": "seed", "tint": 0.5}) == NO_CARD
    assert refusal({"device": "cuda", "search": "approximate"}) == NO_CARD
    assert refusal({"device": "cuda", "preset": "seed", "max_uses": 2}) == NO_CARD


def test_search_and_device_refusals_name_the_choices_by_their_labels():
    """The page said "“finding the closest photo” approximate on “run on” cpu does not
    combine with repetition limits (...)"."""
    text = refusal({"search": "approximate", "preset": "seed", "max_uses": 2})
    assert text == ("\u201cFaster (approximate, for huge collections)\u201d for \u201cfinding "
                    "the closest photo\u201d on \u201cThis computer's processor\u201d does not "
                    "combine with limits on repeats: set \u201cmost uses of one photo\u201d to "
                    "\u201cNo limit\u201d, \u201cleast uses of every photo\u201d to 0 and "
                    "\u201cdistance between repeats\u201d to 0")
    made_up = [OptionError(CUDA_UNAVAILABLE, value="cuda", why="; torch warned: old driver"),
               OptionError(GPU_EXACT_ONLY, value="cuda"),
               OptionError(NOT_ON_DEVICE, value="approximate", device_value="cuda",
                           known="cpu", devices=("cpu",)),
               OptionError(WITHOUT_REPETITION_LIMITS, value="exact", device_value="cuda"),
               OptionError(NEEDS_REPETITION_LIMITS, value="exact", device_value="cpu")]
    for error in made_up:
        text = page_message(error)
        # Only the choices' labels quote "approximate" (the label of the faster search).
        bare = re.sub(r"\u201c[^\u201d]*\u201d", "\u201c\u201d", text)
        assert not RAW_WORDS.search(bare), text
        assert not PROGRAMMER_WORDS.search(text), text
    assert page_message(made_up[2]) == (
        "\u201cFaster (approximate, for huge collections)\u201d for \u201cfinding the closest "
        "photo\u201d does not run on \u201cNVIDIA graphics card\u201d; choose \u201cThis "
        "computer's processor\u201d for \u201crun on\u201d")


def test_the_command_line_keeps_its_flags_and_values(tmp_path, monkeypatch):
    """The page's words are its own: ``make`` still names ``--device cuda`` and ``cpu``."""
    no_card(monkeypatch)
    target = tmp_path / "t.png"
    Image.fromarray(gradient(16, 16)).save(target)
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    for index in range(4):
        Image.fromarray(gradient(8, 8) // (index + 1)).save(tiles / f"p{index}.png")
    expected = {
        ("--device", "cuda"): "mosaicist: error: --device cuda asked for but CUDA is not "
                              "available (PyTorch finds no usable NVIDIA GPU); use --device "
                              "cpu or a CUDA build of PyTorch",
        # No GPU is said first, as on the page (test_gpu2_s37).
        ("--device", "cuda", "--search", "approximate"):
            "mosaicist: error: --device cuda asked for but CUDA is not available (PyTorch "
            "finds no usable NVIDIA GPU); use --device cpu or a CUDA build of PyTorch",
        ("--search", "approximate", "--preset", "seed", "--max-uses", "2"):
            "mosaicist: error: --search approximate on --device cpu does not combine with "
            "repetition limits (--max-uses, --min-uses, --min-spacing)",
    }
    for flags, line in expected.items():
        result = CliRunner().invoke(main, ["make", str(target), "--tiles", str(tiles),
                                           "-o", str(tmp_path / "m.png"), *flags])
        assert result.exit_code == 1
        assert result.output.strip() == line
    assert OptionError(GPU_EXACT_ONLY, value="cuda").message(
        lambda name: "--" + name.replace("_", "-")) == (
        "--device cuda runs the exact nearest-tile search only (any --metric and --augment; "
        "no --tint, --tint-max, --contrast or repetition limits)")


def device_item() -> dict:
    return next(item for item in _app._marked_unusable(settings_form())
                if item["name"] == "device")


def test_the_card_is_marked_where_it_is_known_to_be_missing(tmp_path, monkeypatch):
    """Known without importing PyTorch: not installed, or a build without CUDA."""
    monkeypatch.setitem(sys.modules, "torch", None)  # not imported; never imported again
    monkeypatch.setattr(_words, "_torch_spec", lambda: None)
    item = device_item()
    assert item["choice_labels"]["cuda"] == "NVIDIA graphics card (not available on this computer)"
    assert item["help"].endswith(" This copy of mosaicist was installed without NVIDIA "
                                 "graphics card support.")
    assert not PROGRAMMER_WORDS.search(item["help"])
    # The builds, told by PyTorch's version.py (read, never imported).
    package = tmp_path / "torch"
    package.mkdir()
    monkeypatch.setattr(_words, "_torch_spec", lambda: types.SimpleNamespace(
        submodule_search_locations=[str(package)]))
    for version, marked in (("cuda: Optional[str] = None\nhip: Optional[str] = None\n", True),
                            ("cuda: Optional[str] = '12.1'\nhip: Optional[str] = None\n", False),
                            ("cuda = None\nhip = '6.0'\n", False),
                            ("cuda = None\nhip = None\n", True)):
        (package / "version.py").write_text(version)
        assert ("not available" in device_item()["choice_labels"]["cuda"]) is marked, version
    # A CUDA build already imported (a run on the card was checked) says whether it finds one.
    (package / "version.py").write_text("cuda = '12.1'\nhip = None\n")
    for available in (True, False):
        cuda = types.SimpleNamespace(is_available=lambda answer=available: answer)
        fake = types.SimpleNamespace(cuda=cuda)
        monkeypatch.setitem(sys.modules, "torch", fake)
        item = device_item()
        assert ("not available" in item["choice_labels"]["cuda"]) is not available
        if not available:
            assert item["help"].endswith(" No NVIDIA graphics card can be used on this computer.")
    assert settings_form()[0]["name"] == "preset"  # the form itself is left as it was


# --- in the browser ------------------------------------------------------------------------------


def chosen_target_and_photos(page, served: dict) -> None:  # noqa: F811
    """A picture uploaded and the photos "indexed" (the routes answer at once); the preview
    and its refusals come from the studio."""
    from playwright.sync_api import expect

    status = {"id": INDEX_JOB, "kind": "index", "state": "done", "result": {"tiles": 12},
              "skipped": [], "skipped_count": 0}
    page.route("**/api/index", lambda route: route.fulfill(
        status=202, content_type="application/json", body=json.dumps({"job": INDEX_JOB})))
    page.route(f"**/api/jobs/{INDEX_JOB}/events", lambda route: route.fulfill(
        status=200, headers={"Content-Type": "text/event-stream"},
        body=f"event: done\ndata: {json.dumps({'kind': 'done', 'data': status})}\n\n"))
    page.route(f"**/api/jobs/{INDEX_JOB}", lambda route: route.fulfill(
        status=200, content_type="application/json", body=json.dumps(status)))
    page.set_input_files("#target-file", files=[{
        "name": "t.png", "mimeType": "image/png", "buffer": png_bytes(gradient(64, 48))}])
    expect(page.locator("#target-info")).to_have_text("t.png · 64 × 48 pixels",
                                                      timeout=TIMEOUT_MS)
    page.locator("#folder-path").fill(served["first"])
    page.locator("#folder-path").press("Enter")
    expect(page.locator("#make")).to_be_enabled(timeout=TIMEOUT_MS)


def test_the_preview_line_says_there_is_no_card_in_plain_words(
        browser, served, monkeypatch):  # noqa: F811
    """Chosen on a computer without a card, the preview line said "“run on” cuda asked for
    but CUDA is not available (PyTorch finds no usable NVIDIA GPU); use “run on” cpu..."."""
    from playwright.sync_api import expect

    no_card(monkeypatch)
    with opened(browser, served) as (page, errors):
        chosen_target_and_photos(page, served)
        page.locator("#advanced > summary").click()
        page.locator("#setting-device").select_option("cuda")
        status = page.locator("#preview-status")
        expect(status).to_have_text(NO_CARD[0].upper() + NO_CARD[1:] + ".", timeout=TIMEOUT_MS)
        assert not RAW_WORDS.search(status.inner_text().replace("NVIDIA graphics card", ""))
        # Back on the processor, the refusal goes (the photos were never indexed here: the
        # studio asks for that instead).
        page.locator("#setting-device").select_option("cpu")
        expect(status).to_contain_text("not indexed yet", timeout=TIMEOUT_MS)
        assert errors == []


def test_the_page_marks_the_card_where_it_cannot_be_used(
        browser, served, monkeypatch):  # noqa: F811
    """The choice was offered as if it worked, and refused only once chosen."""
    from playwright.sync_api import expect

    no_card(monkeypatch, installed=False)
    with opened(browser, served) as (page, errors):
        page.locator("#advanced > summary").click()
        expect(page.locator("#setting-device option")).to_have_text(
            ["This computer's processor", "NVIDIA graphics card (not available on this computer)"])
        assert errors == []
