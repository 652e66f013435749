"""What the studio's page says while a run waits, while it is cancelled, and for a bad setting.

A studio served in a thread on 127.0.0.1 over a small generated tile folder
(the ``served`` fixture of test_studio_s33); Chromium (through Playwright,
skipped where it is missing) makes a mosaic whose run the test answers itself
(Playwright routes hold and answer the run's requests, with events in the
server's own form), so that what the page shows at each step is checked
without waiting on a real run.
"""

from __future__ import annotations

import json
import re

import pytest
from conftest import gradient
from test_studio_s33 import TIMEOUT_MS, page_of, png_bytes, served  # noqa: F401 - the fixture

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

RUN = "0123456789abcdef" * 2  # the made-up run the routes answer for


def event_text(kind: str, *, state: str = "running", stage: str = "", done: float = 0,
               total: float | None = None, retry_ms: int = 600_000) -> str:
    """One server-sent event as the studio sends it (``JobEvent.to_json``)."""
    data = {"kind": kind, "stage": stage, "done": done, "total": total, "message": "",
            "data": {"job": RUN, "state": state, "run": RUN}}
    return f"retry: {retry_ms}\nevent: {kind}\ndata: {json.dumps(data)}\n\n"


class RunStreams:
    """The made-up run's event streams: each connection gets the next body given, or
    waits (held) until one is."""

    def __init__(self) -> None:
        self.held: list = []
        self.bodies: list[str] = []

    def handle(self, route) -> None:
        if self.bodies:
            self.answer(route, self.bodies.pop(0))
        else:
            self.held.append(route)

    def send(self, body: str) -> None:
        if self.held:
            self.answer(self.held.pop(0), body)
        else:
            self.bodies.append(body)

    @staticmethod
    def answer(route, body: str) -> None:
        route.fulfill(status=200, body=body, headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-store"})


def ready_to_make(page, served: dict) -> None:  # noqa: F811 - the fixture's value
    """A picture chosen and the "second" folder indexed: Make is on."""
    from playwright.sync_api import expect

    page.set_input_files("#target-file", files=[{
        "name": "t.png", "mimeType": "image/png", "buffer": png_bytes(gradient(64, 48))}])
    expect(page.locator("#target-info")).to_have_text("t.png · 64 × 48 pixels",
                                                      timeout=TIMEOUT_MS)
    page.locator("#folder-path").fill(served["second"])
    page.locator("#folder-path").press("Enter")
    expect(page.locator("#make")).to_be_enabled(timeout=TIMEOUT_MS)


def make_made_up_run(page) -> RunStreams:
    """Route the run's requests (made up: no mosaic is made) and press Make."""
    streams = RunStreams()
    page.route("**/api/runs", lambda route: route.fulfill(
        status=202, content_type="application/json", body=json.dumps({"id": RUN}))
        if route.request.method == "POST" else route.continue_())
    page.route(f"**/api/runs/{RUN}/events", streams.handle)
    page.route(f"**/api/runs/{RUN}/cancel", lambda route: route.fulfill(
        status=200, content_type="application/json",
        body=json.dumps({"cancelled": True, "id": RUN, "status": "running"})))
    page.route(f"**/api/runs/{RUN}", lambda route: route.fulfill(
        status=200, content_type="application/json",
        body=json.dumps({"id": RUN, "status": "running", "progress": {}})))
    page.locator("#make").click()
    return streams


def test_a_run_waiting_behind_another_says_it_waits(browser, served):  # noqa: F811
    """A run queued behind another tab's run said "Making the mosaic…" for the
    whole wait: the server's events say "queued" until its own work starts."""
    from playwright.sync_api import expect

    with page_of(browser, served) as (_, page, errors):
        ready_to_make(page, served)
        streams = make_made_up_run(page)
        status = page.locator("#make-status")
        # What a subscriber to a queued job first gets: its state, no stage yet.
        streams.send(event_text("progress", state="queued", retry_ms=10))
        expect(status).to_have_text("Waiting for the run before it…", timeout=TIMEOUT_MS)
        # The stream given again (the browser opens it again) once the run has started.
        streams.send(event_text("progress", stage="matching", done=1, total=4))
        expect(status).to_have_text("Matching · 25% (1 of 4)…", timeout=TIMEOUT_MS)
        assert errors == []


def test_cancelling_stays_said_and_cancel_stays_off_until_the_run_ends(browser, served):  # noqa: F811
    """After Cancel, the next progress event replaced "Cancelling…" with "Writing
    the files · 70%…", and Cancel could be pressed again while the run stopped."""
    from playwright.sync_api import expect

    with page_of(browser, served) as (_, page, errors):
        ready_to_make(page, served)
        streams = make_made_up_run(page)
        status, cancel = page.locator("#make-status"), page.locator("#cancel-make")
        streams.send(event_text("progress", stage="matching", done=1, total=10, retry_ms=10))
        expect(status).to_have_text("Matching · 10% (1 of 10)…", timeout=TIMEOUT_MS)
        cancel.click()
        expect(status).to_have_text("Cancelling…", timeout=TIMEOUT_MS)
        expect(cancel).to_be_disabled()
        # The run writes on until it stops: the bar follows, the words stay.
        streams.send(event_text("progress", stage="writing", done=7, total=10, retry_ms=10))
        expect(page.locator("#make-progress")).to_have_attribute("aria-valuetext", "70%",
                                                                 timeout=TIMEOUT_MS)
        expect(status).to_have_text("Cancelling…")
        expect(cancel).to_be_disabled()
        # It ends: Cancel goes, and is on again for the next run.
        streams.send(event_text("cancelled", state="cancelled"))
        expect(cancel).to_be_hidden(timeout=TIMEOUT_MS)
        expect(cancel).to_be_enabled()
        expect(page.locator("#make")).to_be_enabled()
        assert errors == []


@pytest.mark.parametrize(("setting", "value", "says"), [
    ("tile_px", "0", "“tile size” must be between 1 and 1024 pixels, got 0."),
    ("aspect", "3:0",
     "“tile shape” must be two positive whole numbers as W:H (e.g. 3:2), got '3:0'."),
])
def test_a_refused_tile_size_or_shape_is_said_once(browser, served, setting, value,  # noqa: F811
                                                   says):
    """A tile size or shape the studio refuses was said twice: in the red banner
    (the index it needs, refused) and on the preview line (the preview, refused).
    Said on the preview line, as every other setting's refusal is."""
    from playwright.sync_api import expect

    with page_of(browser, served) as (_, page, errors):
        ready_to_make(page, served)
        if setting == "aspect":
            page.locator("#advanced > summary").click()  # the tile shape is under Advanced
        page.locator(f"#setting-{setting}").fill(value)
        line = page.locator("#preview-status")
        expect(line).to_have_class(re.compile(r"\binline-error\b"), timeout=TIMEOUT_MS)
        expect(line).to_have_text(says)
        # The setting needs another index, asked for (and refused) before any preview:
        # a banner for that refusal would be up by now.
        expect(page.locator("#error")).to_be_hidden()
        assert errors == []
