"""The studio's commands name the picture as it was uploaded, and its labels are plain
(session 37).

A run's "Made with:" line named the studio's stored copy of the picture
(``.../mosaicist/studio/targets/343b18….jpg``), which means nothing to the person who
uploaded "bear.jpg"; the line now names it so, and its Copy button still gives the
command that works as pasted. The settings "Search", "Device" and "JPEG quality" are
said in plain words. In Chromium (through Playwright, skipped where it is missing) a
studio served in a thread (the ``served`` fixture of test_studio_s33), its history made
up (Playwright routes answer for it).
"""

from __future__ import annotations

import json
import shlex

import pytest
from conftest import gradient
from test_studio_s33 import TIMEOUT_MS, png_bytes, served  # noqa: F401 - the fixture
from test_studio_s36 import finished_run, opened

from mosaicist.studio._form import settings_form

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

#: Where the studio keeps an upload, as a run's command names it.
STORED = "/home/someone/.cache/mosaicist/studio/targets/343b18b816a29d33262f3695c5af9c81.jpg"
PLACEMENTS = "/home/someone/.cache/mosaicist/studio/runs/b4821f24507a4c1c/placements.json"
CLIPBOARD = ["clipboard-read", "clipboard-write"]


def test_search_device_and_jpeg_quality_are_said_in_plain_words():
    """The form called them "Search" (exact/approximate), "Device" and "JPEG quality"."""
    by_name = {item["name"]: item for item in settings_form()}
    assert by_name["search"]["label"] == "Finding the closest photo"
    assert by_name["search"]["choice_labels"] == {
        "exact": "Exact (every photo compared)",
        "approximate": "Faster (approximate, for huge collections)"}
    assert by_name["device"]["label"] == "Run on"
    assert by_name["device"]["choice_labels"]["cpu"] == "This computer's processor"
    assert by_name["jpeg_quality"]["label"] == "Picture quality (JPEG, WebP)"
    # The values sent stay the command line's.
    assert by_name["search"]["choices"] == ["exact", "approximate"]
    assert "cpu" in by_name["device"]["choices"]


def test_made_with_names_the_picture_as_uploaded_and_copies_the_command_that_works(
        browser, served):  # noqa: F811
    """"Made with: mosaicist make /home/…/targets/343b18….jpg …" named the stored copy."""
    from playwright.sync_api import expect

    name = "bear's photo.jpg"  # a space and a quote: shown quoted as a terminal wants it
    command = shlex.join(["mosaicist", "make", STORED, "--tiles", "/photos/my bears",
                          "--max-uses", "2", "-o", "mosaic.png"])
    run = finished_run(command) | {"target_name": name}
    with opened(browser, served, [run], permissions=CLIPBOARD) as (page, errors):
        page.locator(".run-open-text").first.click()
        expect(page.locator("#result")).to_be_visible(timeout=TIMEOUT_MS)
        shown = shlex.join(["mosaicist", "make", name, "--tiles", "/photos/my bears",
                            "--max-uses", "2", "-o", "mosaic.png"])
        expect(page.locator("#result-command")).to_have_text(f"Made with: {shown}")
        expect(page.locator("#result-command-note")).to_contain_text(
            f"\u201c{name}\u201d is your picture")
        page.locator("#copy-result-command").click()
        expect(page.locator("#copy-result-command")).to_have_text("Copied")
        assert page.evaluate("() => navigator.clipboard.readText()") == command
        assert errors == []


def test_a_redrawn_mosaic_names_its_placements_by_file_name(browser, served):  # noqa: F811
    """A redraw's line named the placements file deep in the studio's cache."""
    from playwright.sync_api import expect

    command = shlex.join(["mosaicist", "render", PLACEMENTS, "--tile-px", "24",
                          "-o", "mosaic.png"])
    run = finished_run(command) | {"target_name": "bear.jpg"}
    with opened(browser, served, [run], permissions=CLIPBOARD) as (page, errors):
        page.locator(".run-open-text").first.click()
        expect(page.locator("#result-command")).to_have_text(
            "Made with: mosaicist render placements.json --tile-px 24 -o mosaic.png",
            timeout=TIMEOUT_MS)
        expect(page.locator("#result-command-note")).to_contain_text("mosaic of bear.jpg")
        page.locator("#copy-result-command").click()
        expect(page.locator("#copy-result-command")).to_have_text("Copied")
        assert page.evaluate("() => navigator.clipboard.readText()") == command
        assert errors == []


def test_a_run_without_a_command_shows_no_made_with_line(browser, served):  # noqa: F811
    """No command (a run recorded by an older studio): no empty line, no Copy button."""
    from playwright.sync_api import expect

    with opened(browser, served, [finished_run("")]) as (page, errors):
        page.locator(".run-open-text").first.click()
        expect(page.locator("#result")).to_be_visible(timeout=TIMEOUT_MS)
        expect(page.locator("#copy-result-command")).to_be_hidden()
        assert errors == []


def test_the_terminal_command_box_says_whose_copy_its_picture_is(browser, served):  # noqa: F811
    """The preview's command names the stored copy too: a line under it says of what."""
    from playwright.sync_api import expect

    with opened(browser, served) as (page, errors):
        page.route("**/api/command", lambda route: route.fulfill(
            status=200, content_type="application/json",
            body=json.dumps({"command": f"mosaicist make {STORED} --tiles cifar10 -o m.png"})))
        expect(page.locator("#command-note")).to_be_hidden()
        page.set_input_files("#target-file", files=[{
            "name": "bear.png", "mimeType": "image/png", "buffer": png_bytes(gradient(64, 48))}])
        expect(page.locator("#command")).to_have_value(
            f"mosaicist make {STORED} --tiles cifar10 -o m.png", timeout=TIMEOUT_MS)
        expect(page.locator("#command-note")).to_have_text(
            "The picture in it is the copy of bear.png the studio keeps, so the command "
            "works as pasted into a terminal.")
        assert errors == []


def test_the_page_labels_the_settings_in_plain_words(browser, served):  # noqa: F811
    """The page's labels are the form's ("Run on", not "Device")."""
    from playwright.sync_api import expect

    labels = {item["name"]: item["label"] for item in settings_form()}
    with opened(browser, served) as (page, errors):
        for name in ("search", "device", "jpeg_quality"):
            expect(page.locator(f'label[for="setting-{name}"]')).to_have_text(labels[name])
        expect(page.locator("#setting-search option")).to_have_text(
            ["Exact (every photo compared)", "Faster (approximate, for huge collections)"])
        assert errors == []
