"""The studio as a person who never opens a terminal uses it (session 36).

A studio served in a thread on 127.0.0.1 over small generated tile folders
(the ``served`` fixture of test_studio_s33); Chromium (through Playwright,
skipped where it is missing) reloads the page after a mosaic is made, follows
a run's stages, cancels it from the keyboard, and opens a mosaic on a phone-sized
screen. The runs are made up (Playwright routes answer the run's requests, in the
server's own form), so that what the page shows is checked without a real run.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import pytest
from conftest import gradient
from test_studio_s33 import TIMEOUT_MS, png_bytes, served  # noqa: F401 - the fixture
from test_studio_ux_s33 import RUN, event_text, make_made_up_run

INDEX_JOB = "fedcba9876543210" * 2  # the made-up index job the routes answer for

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def finished_run(command: str = "mosaicist make t.png --tiles photos -o mosaic.png") -> dict:
    """The made-up run as the history lists it once it is done."""
    return {"id": RUN, "created": 1_796_000_000, "status": "done", "target_name": "t.png",
            "tiles": "/photos/second", "settings": {"tile_px": 32, "aspect": "1:1"},
            "report": {"grid": {"cols": 4, "rows": 3}, "tiles": 16}, "error": None,
            "outputs": ["png", "report"], "viewer_url": f"/runs/{RUN}/view/mosaic.html",
            "command": command}


@contextlib.contextmanager
def opened(browser, served: dict, runs: list[dict] | None = None,  # noqa: F811
           **context_options) -> Iterator[tuple]:
    """A fresh context's page on the studio, its history made up as ``runs`` (where
    given) from the first load, and the script errors it shows."""
    context = browser.new_context(reduced_motion="reduce", **context_options)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    if runs is not None:
        list_runs(page, runs)
    try:
        page.goto(served["url"], wait_until="domcontentloaded")
        page.wait_for_function("() => document.getElementById('setting-tile_px') !== null")
        yield page, errors
    finally:
        context.close()


def reload(page) -> None:
    """Reload the page, and wait until it has drawn its history."""
    page.reload(wait_until="domcontentloaded")
    page.wait_for_function("() => document.querySelector('#runs > li') !== null")


def list_runs(page, runs: list[dict]) -> None:
    """The history (GET /api/runs) answers ``runs``; a POST goes on to the studio."""
    page.route("**/api/runs", lambda route: route.fulfill(
        status=200, content_type="application/json", body=json.dumps(runs))
        if route.request.method == "GET" else route.continue_())


def ready_to_make(page) -> None:
    """A picture chosen and a folder of photos "indexed" (made up: the routes answer at
    once, as the studio does for an index already made): Make is on."""
    from playwright.sync_api import expect

    status = {"id": INDEX_JOB, "kind": "index", "state": "done", "result": {"tiles": 16},
              "skipped": [], "skipped_count": 0}
    page.route("**/api/index", lambda route: route.fulfill(
        status=202, content_type="application/json", body=json.dumps({"job": INDEX_JOB})))
    page.route(f"**/api/jobs/{INDEX_JOB}/events", lambda route: route.fulfill(
        status=200, headers={"Content-Type": "text/event-stream"},
        body=f"event: done\ndata: {json.dumps({'kind': 'done', 'data': status})}\n\n"))
    page.route(f"**/api/jobs/{INDEX_JOB}", lambda route: route.fulfill(
        status=200, content_type="application/json", body=json.dumps(status)))
    page.route("**/api/preview", lambda route: route.fulfill(
        status=200, content_type="image/png", body=png_bytes(gradient(8, 6))))
    page.set_input_files("#target-file", files=[{
        "name": "t.png", "mimeType": "image/png", "buffer": png_bytes(gradient(64, 48))}])
    expect(page.locator("#target-info")).to_have_text("t.png · 64 × 48 pixels",
                                                      timeout=TIMEOUT_MS)
    page.locator("#folder-path").fill("/photos/second")
    page.locator("#folder-path").press("Enter")
    expect(page.locator("#make")).to_be_enabled(timeout=TIMEOUT_MS)


def test_a_reload_shows_again_the_mosaic_that_was_shown(browser, served):  # noqa: F811
    """A finished mosaic, shown under "Your mosaic", was gone after a reload (or Back
    to the page): only the history still had it, far down the page."""
    from playwright.sync_api import expect

    with opened(browser, served, [finished_run()]) as (page, errors):
        page.locator(".run-open-text").first.click()
        result = page.locator("#result")
        expect(result).to_be_visible(timeout=TIMEOUT_MS)
        reload(page)
        expect(result).to_be_visible(timeout=TIMEOUT_MS)
        expect(page.locator("#result-info")).to_contain_text("t.png")
        expect(page.locator("#downloads a")).to_have_count(2)
        assert errors == []


def test_a_run_that_ends_while_the_page_reloads_is_shown(browser, served):  # noqa: F811
    """A run made, the page reloaded and the run finished before the page was back:
    the page had nothing to follow and showed nothing, though the mosaic was made."""
    from playwright.sync_api import expect

    with opened(browser, served) as (page, errors):
        ready_to_make(page)
        make_made_up_run(page)
        expect(page.locator("#cancel-make")).to_be_visible(timeout=TIMEOUT_MS)
        list_runs(page, [finished_run()])  # it has finished by the time the page is back
        reload(page)
        expect(page.locator("#result")).to_be_visible(timeout=TIMEOUT_MS)
        expect(page.locator("#result-info")).to_contain_text("t.png")
        assert errors == []


def test_a_deleted_mosaic_is_not_shown_again_after_a_reload(browser, served):  # noqa: F811
    """The mosaic shown, then deleted: a reload shows no result for it."""
    from playwright.sync_api import expect

    with opened(browser, served, [finished_run()]) as (page, errors):
        page.route(f"**/api/runs/{RUN}", lambda route: route.fulfill(status=204)
                   if route.request.method == "DELETE" else route.continue_())
        page.locator(".run-open-text").first.click()
        expect(page.locator("#result")).to_be_visible(timeout=TIMEOUT_MS)
        delete = page.locator(".run-delete").first
        delete.click()
        delete.click()
        expect(page.locator("#result")).to_be_hidden(timeout=TIMEOUT_MS)
        reload(page)  # the history still lists it (made up): it is not shown for all that
        expect(page.locator(".run-open-text")).to_have_count(1, timeout=TIMEOUT_MS)
        expect(page.locator("#result")).to_be_hidden()
        assert errors == []


def test_the_stages_of_a_run_are_said_in_plain_words(browser, served):  # noqa: F811
    """The progress line said "Features · 50%…", "Assigning tiles…" and "Starting…":
    the library's progress bars named for a terminal."""
    from playwright.sync_api import expect

    with opened(browser, served) as (page, errors):
        ready_to_make(page)
        streams = make_made_up_run(page)
        status = page.locator("#make-status")
        for stage, says in [("starting", "Starting…"),
                            ("features", "Measuring the photos · 50% (1 of 2)…"),
                            ("assigning tiles", "Placing the photos…"),
                            ("zipping Deep Zoom", "Packing the zoomable view…")]:
            done, total = (1, 2) if stage == "features" else (0, None)
            streams.send(event_text("progress", stage=stage, done=done, total=total,
                                    retry_ms=10))
            expect(status).to_have_text(says, timeout=TIMEOUT_MS)
        assert errors == []


@pytest.mark.parametrize("ending", ["cancelled", "done"])
def test_keyboard_focus_is_not_lost_when_a_run_ends(browser, served, ending):  # noqa: F811
    """Make pressed from the keyboard (then Cancel): when the run ended, the focused
    button went away and focus fell to the page itself, so the next Tab started again
    at the top. It goes back to Make, or to the mosaic made."""
    from playwright.sync_api import expect

    with opened(browser, served) as (page, errors):
        ready_to_make(page)
        page.locator("#make").focus()
        streams = make_made_up_run(page)  # clicks Make
        cancel = page.locator("#cancel-make")
        expect(cancel).to_be_visible(timeout=TIMEOUT_MS)
        streams.send(event_text("progress", stage="matching", done=1, total=4, retry_ms=10))
        if ending == "cancelled":
            cancel.focus()
            page.keyboard.press("Enter")
            expect(page.locator("#make-status")).to_have_text("Cancelling…",
                                                              timeout=TIMEOUT_MS)
        streams.send(event_text(ending, state=ending))
        expect(cancel).to_be_hidden(timeout=TIMEOUT_MS)
        focused = "#make" if ending == "cancelled" else "#result-heading"
        expect(page.locator(focused)).to_be_focused(timeout=TIMEOUT_MS)
        assert errors == []


def test_a_long_command_or_path_does_not_widen_the_page_on_a_phone(browser, served):  # noqa: F811
    """On a phone, "Made with: mosaicist make /long/path/…" (and any long path with no
    spaces) pushed the page to 600 pixels wide: sideways scrolling on every screen."""
    from playwright.sync_api import expect

    # As the studio names an upload: a long hash, no hyphen or space to wrap at.
    path = "/home/someone/.cache/mosaicist/studio/targets/" + "f50e6b65b7850a7a" * 4 + ".png"
    runs = [finished_run(f"mosaicist make {path} --tiles {path} -o mosaic.png")]
    with opened(browser, served, runs, viewport={"width": 375, "height": 667},
                is_mobile=True, has_touch=True) as (page, errors):
        page.locator(".run-open-text").first.click()
        expect(page.locator("#result")).to_be_visible(timeout=TIMEOUT_MS)
        page.locator("#target-info").evaluate("(node, text) => { node.textContent = text; }",
                                              f"{path} · 64 × 48 pixels")
        widths = page.evaluate(
            "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert widths[0] <= widths[1], widths
        assert errors == []
