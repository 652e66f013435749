"""The studio's settings in plain words, their values round the form, and the history's
cards told apart (session 36).

The studio is for people who never open a terminal: its form showed the command
line's help ("Use no tile more than K times (solved as a global assignment);
'none': no limit", "(Chebyshev)", "sRGB (the seed's)"), asked for "none" in a number
field, and listed two runs a setting apart as the same card. Over HTTP the form's
words are checked; in Chromium (through Playwright, skipped where it is missing) a
studio served in a thread (the ``served`` fixture of test_studio_s33) has each control
set, its value sent as the setting, and shown again after a reload; the history's
runs are made up (Playwright routes answer for them).
"""

from __future__ import annotations

import json
import re
import time

import pytest
from conftest import gradient
from test_studio_s33 import TIMEOUT_MS, png_bytes, served  # noqa: F401 - the fixture
from test_studio_s36 import finished_run, opened

from mosaicist.options import MosaicOptions, settings
from mosaicist.studio._form import presets_form, settings_form

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

#: Settings the page draws with its own controls (the size) or never shows.
NOT_IN_THE_FORM = {"cell_px", "cells", "print_size", "dpi", "compute_metrics"}
#: Words a person who never opened a terminal does not know, or cannot type.
PROGRAMMER_WORDS = re.compile(
    r"'none'|Chebyshev|sRGB|global assignment|standard deviation|luma|Rec\. 601|FAISS|ICC|"
    r"\bchroma\b|\bK\b|\bN\b|\bD\b|\bT\b|DEPTH|2\^|\bcuda\b|\bcpu\b|\btarget\b|_|\{|"
    r"\btiles? (?:is|are) (?:ranked|indexed)|\bgreedy\b|\boptimal\b|the seed\b")


def test_the_form_says_every_setting_in_plain_words():
    """The form showed the command line's help: metavars (K, D, T, DEPTH), "'none'",
    "(Chebyshev)", "sRGB (the seed's)", "standard deviation of its luma (Rec. 601)"."""
    for item in settings_form():
        if item["name"] in NOT_IN_THE_FORM:
            continue
        for words in (item["label"], item["help"],
                      *(item.get("choice_labels") or {}).values(), item.get("none_label") or ""):
            assert not PROGRAMMER_WORDS.search(words), (item["name"], words)
        assert item["help"].endswith("."), item["name"]
        if item["optional"]:
            # What "no value" means, said where "none" would have had to be typed.
            assert item.get("none_label") not in (None, "None"), item["name"]
    for preset in presets_form():
        assert not PROGRAMMER_WORDS.search(preset["description"]), preset


def test_the_command_line_keeps_its_own_words():
    """The page's words are its own: ``make --help`` still says what a terminal user types."""
    declared = {item.name: item for item in settings()}
    assert "'none': no limit" in declared["max_uses"].help
    assert "Chebyshev" in declared["min_spacing"].help
    assert "sRGB" in declared["metric"].help
    by_name = {item["name"]: item for item in settings_form()}
    assert by_name["max_uses"]["none_label"] == "No limit"
    assert by_name["metric"]["choices"] == ["seed", "lab", "oklab"]  # the values sent


def test_the_page_offers_every_choice_by_its_own_name():
    """Search, device and Deep Zoom formats were listed as "exact", "cuda", "jpeg"."""
    by_name = {item["name"]: item for item in settings_form()}
    for item in by_name.values():
        if item["choices"]:
            assert list(item["choice_labels"]) == item["choices"], item["name"]
    assert by_name["device"]["choice_labels"]["cuda"] == "NVIDIA graphics card"
    assert by_name["metric"]["choice_labels"]["seed"] == "Plain red, green and blue"


# --- in the browser ------------------------------------------------------------------------------

#: A value for each control of the form, unlike the balanced preset's and the default's:
#: typed into a field (a string), chosen (a select's value) or, for ``None``, the "no value"
#: box ticked.
TYPED = {
    "tile_px": "48", "match_px": "16", "aspect": "3:2", "limit": "500", "adaptive": "1",
    "detail": "20", "dedupe": "3", "max_target_pixels": "1000000", "tint": "0.3",
    "tint_max": "0.6", "contrast": "0.2", "chroma": "0.4", "min_uses": "0",
    "min_spacing": "3", "overlay": "0.1", "jpeg_quality": "80", "dzi_tile_size": "256",
    "dzi_overlap": "2",
}
CHOSEN = {"preset": "varied", "metric": "oklab", "augment": "flips", "crop": "centre",
          "colour_profiles": "ignore", "identical_photos": "keep", "assign": "greedy",
          "search": "approximate", "device": "cuda", "dzi_format": "png"}
TICKED = {"max_uses"}


def commands_sent(page) -> list[dict]:
    """Answer POST /api/command at once, and keep the settings each request sent."""
    sent: list[dict] = []

    def answer(route):
        sent.append(json.loads(route.request.post_data or "{}").get("settings", {}))
        route.fulfill(status=200, content_type="application/json",
                      body=json.dumps({"command": "mosaicist make t.png"}))

    page.route("**/api/command", answer)
    return sent


def test_every_control_round_trips_to_the_settings(browser, served):  # noqa: F811
    """Each control of the form gives its setting the value shown, "no limit" by a tick
    box (a number field cannot take "none"), and shows it again after a reload."""
    from playwright.sync_api import expect

    shown = {item["name"] for item in settings_form()} - NOT_IN_THE_FORM
    assert shown == set(TYPED) | set(CHOSEN) | TICKED  # a new setting is tried here too
    with opened(browser, served) as (page, errors):
        sent = commands_sent(page)
        page.set_input_files("#target-file", files=[{
            "name": "t.png", "mimeType": "image/png", "buffer": png_bytes(gradient(64, 48))}])
        expect(page.locator("#target-info")).to_have_text("t.png · 64 × 48 pixels",
                                                          timeout=TIMEOUT_MS)
        page.locator("#advanced > summary").click()
        # The balanced preset limits uses to 1: the box says so, unticked, beside the 1.
        limit_box = page.locator("#setting-max_uses-none")
        expect(page.locator("#setting-max_uses")).to_have_value("1")
        expect(limit_box).not_to_be_checked()
        expect(page.locator("label[for=setting-max_uses-none]")).to_have_text("No limit")
        # Each control set as the browser does when a person types or chooses (all in one
        # go: a control at a time through Playwright took seconds).
        page.evaluate("""(values) => {
          for (const [name, value] of Object.entries(values)) {
            const control = document.getElementById(`setting-${name}`);
            control.value = value;
            control.dispatchEvent(new Event(control.tagName === "SELECT" ? "change" : "input",
                                            {bubbles: true}));
          }
        }""", CHOSEN | TYPED)
        limit_box.check()
        expect(page.locator("#setting-max_uses")).to_have_value("")

        expected = {name: json.loads(value) if name != "aspect" else value
                    for name, value in TYPED.items()} | CHOSEN | {"max_uses": None}
        # The command is asked for a moment after the last change.
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while (not sent or sent[-1] != expected) and time.monotonic() < deadline:
            page.wait_for_timeout(50)
        assert sent and sent[-1] == expected, sent[-1:]
        options = MosaicOptions(**sent[-1])
        assert options.max_uses is None and options.given("max_uses")
        assert (options.aspect, options.tint_max, options.dzi_format) == ("3:2", 0.6, "png")

        # The page keeps what was chosen over a reload, and shows it again, tick box too.
        page.reload(wait_until="domcontentloaded")
        page.wait_for_function("() => document.getElementById('setting-tile_px') !== null")
        expect(limit_box).to_be_checked()
        shown_values = page.evaluate("""(names) => Object.fromEntries(names.map(
          (name) => [name, document.getElementById(`setting-${name}`).value]))""",
                                     [*TYPED, *CHOSEN])
        for name, value in (TYPED | CHOSEN).items():
            if name in TYPED and name != "aspect":
                assert float(shown_values[name]) == float(value), (name, shown_values[name])
            else:
                assert shown_values[name] == value, (name, shown_values[name])
        expect(page.locator("#setting-max_uses")).to_have_value("")

        # Cleared, the box gives a number again (the preset's), and the field shows it.
        limit_box.uncheck()
        expect(page.locator("#setting-max_uses")).to_have_value("2")
        # An emptied field is "no limit" too, and ticks the box.
        page.locator("#setting-max_uses").fill("")
        expect(limit_box).to_be_checked()
        assert errors == []


def test_an_automatic_size_says_what_it_comes_to(browser, served):  # noqa: F811
    """The comparison size, left automatic, shows (greyed) the size it follows: the tile
    size; cleared, its box gives that size."""
    from playwright.sync_api import expect

    with opened(browser, served) as (page, errors):
        page.locator("#advanced > summary").click()
        field = page.locator("#setting-match_px")
        expect(page.locator("#setting-match_px-none")).to_be_checked()
        expect(field).to_have_value("")
        expect(field).to_have_attribute("placeholder", "32")
        page.locator("#setting-tile_px").fill("24")
        expect(field).to_have_attribute("placeholder", "24")
        page.locator("#setting-match_px-none").uncheck()
        expect(field).to_have_value("24")
        assert errors == []


def run_of(options: MosaicOptions, run_id: str) -> dict:
    """A made-up finished run, its settings as the studio records them."""
    return finished_run() | {"id": run_id, "settings": options.to_json()}


def test_runs_a_setting_apart_are_told_apart_in_the_history(browser, served):  # noqa: F811
    """Two runs that differed by one setting had the same card: name, date, photos and
    cells. Each card now says its style and what differs from it."""
    from playwright.sync_api import expect

    runs = [run_of(MosaicOptions(), "1" * 32),
            run_of(MosaicOptions(metric="oklab", max_uses=None), "2" * 32),
            run_of(MosaicOptions(preset="seed", min_spacing=1, tile_px=64), "3" * 32),
            run_of(MosaicOptions(preset="varied", min_spacing=2), "4" * 32)]
    with opened(browser, served, runs=runs) as (page, errors):
        lines = page.locator("#runs .run-settings")
        expect(lines).to_have_text([
            "Style: Balanced",
            "Style: Balanced; colour matching: Oklab; most uses of one photo: no limit",
            "Style: Closest photo (no correction); tile size: 64 px",
            "Style: Varied; distance between repeats: 2 cells",
        ], timeout=TIMEOUT_MS)
        assert errors == []


def test_a_run_without_its_style_has_no_settings_line(browser, served):  # noqa: F811
    """A run whose settings do not name its style (a made-up or damaged record) shows
    no settings line, rather than one that compares against the wrong style."""
    from playwright.sync_api import expect

    with opened(browser, served, runs=[finished_run()]) as (page, errors):
        expect(page.locator("#runs .run-title")).to_have_text("t.png", timeout=TIMEOUT_MS)
        expect(page.locator("#runs .run-settings")).to_be_hidden()
        assert errors == []


def test_half_a_number_is_not_no_limit(browser, served):  # noqa: F811
    """A number field holding half a number ("1e") reads as empty, and empty meant "no
    limit": the preview and the command dropped the limit while "1e" was typed."""
    from playwright.sync_api import expect

    with opened(browser, served) as (page, errors):
        field = page.locator("#setting-max_uses")
        field.fill("3")
        field.press("End")
        page.keyboard.type("e")
        assert page.evaluate("() => document.getElementById('setting-max_uses').validity"
                             ".badInput")
        saved = page.evaluate("() => JSON.parse(localStorage.getItem('mosaicist-studio'))")
        assert saved["changed"]["max_uses"] == 3
        expect(page.locator("#setting-max_uses-none")).not_to_be_checked()
        assert errors == []
