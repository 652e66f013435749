"""The studio as a person on a slow network or with unusual settings uses it (session 33).

A studio served in a thread on 127.0.0.1 over two small generated tile
folders; Chromium (through Playwright, skipped where it is missing) picks a
picture and a folder while an earlier choice is still being answered, and
httpx indexes and previews at a setting that makes another index.
"""

from __future__ import annotations

import contextlib
import io
import re
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from conftest import gradient
from PIL import Image

from mosaicist.studio import Studio, make_studio_app
from mosaicist.web import WebServer, bind

TIMEOUT_MS = 20_000

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def png_bytes(picture: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, "PNG")
    return buffer.getvalue()


def write_photos(folder, count: int, seed: int) -> str:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        colour = rng.integers(0, 256, 3)
        picture = np.clip(colour + rng.normal(0, 12, (20, 20, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(picture).save(folder / f"p{index:02d}.png")
    return str(folder.resolve())


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[dict]:
    """A studio in a thread and two tile folders: "first" (12 photos), "second" (16)."""
    base = tmp_path_factory.mktemp("studio-s33")
    home = base / "home"
    home.mkdir()
    first = write_photos(base / "root" / "first", 12, seed=1)
    second = write_photos(base / "root" / "second", 16, seed=2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOSAICIST_CACHE_DIR", str(base / "cache"))
        studio = Studio(cache_dir=base / "cache", roots=[base / "root"], home=home)
        listener = bind("127.0.0.1", 0)
        app = make_studio_app(studio, host="127.0.0.1", port=listener.getsockname()[1])
        server = WebServer(app, listener, on_stop=studio.begin_stop)
        server.start()
        client = httpx.Client(base_url=server.url, timeout=60,
                              headers={"X-Mosaicist-Token": studio.token})
        try:
            yield {"url": server.url, "client": client, "first": first, "second": second}
        finally:
            client.close()
            server.stop()
            studio.close()


def wait_for_job(client: httpx.Client, job: str) -> dict:
    deadline = time.monotonic() + 60
    while (status := client.get(f"/api/jobs/{job}").json())["state"] not in (
            "done", "failed", "cancelled"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return status


@contextlib.contextmanager
def page_of(browser, served: dict) -> Iterator[tuple]:
    """A fresh context's page on the studio, and the script errors it shows."""
    context = browser.new_context(reduced_motion="reduce")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(served["url"])
        page.wait_for_function("() => document.getElementById('setting-tile_px') !== null")
        yield context, page, errors
    finally:
        context.close()


def release(page, held: list) -> None:
    """Let the held request through; return once the page has had its answer."""
    with page.expect_event("requestfinished", timeout=TIMEOUT_MS):
        held.pop().continue_()
    # The answer's promise chain (the body read, then the page's code) runs in tasks
    # queued by now: one more round of the page's event loop passes them.
    page.evaluate("() => new Promise((resolve) => setTimeout(resolve, 200))")


# --- over HTTP ---------------------------------------------------------------------------------


def test_indexing_with_colour_profiles_ignored_makes_the_index_the_preview_reads(served):
    """Indexing dropped the colour-profiles setting: with "Colour profiles: Ignored"
    the photos were indexed (converted) as "Ready: N photos", and the preview then
    said, for good, "the tiles are not indexed yet at these settings"."""
    client = served["client"]
    settings = {"colour_profiles": "ignore"}  # the default preset converts them
    target = client.post("/api/targets", files={"file": ("t.png", png_bytes(gradient(64, 48)),
                                                         "image/png")}).json()["id"]
    job = client.post("/api/index", json={"tiles": served["first"], "settings": settings})
    assert job.status_code == 202, job.text
    assert wait_for_job(client, job.json()["job"])["state"] == "done"
    preview = client.post("/api/preview", json={"target": target, "tiles": served["first"],
                                                "settings": settings})
    assert preview.status_code == 200, preview.text
    assert preview.headers["content-type"] == "image/jpeg"


# --- in the browser ----------------------------------------------------------------------------


def test_the_picture_chosen_last_wins_over_a_slower_earlier_one(browser, served):
    """A big phone photo still being read (or a slow network) answered after the
    picture chosen next, and replaced it: the page said "phone.png" while the user
    had picked "small.png" last (and the mosaic was made of the first one)."""
    from playwright.sync_api import expect

    with page_of(browser, served) as (_, page, errors):
        held: list = []
        page.route("**/api/targets", lambda route: held.append(route) if not held
                   and route.request.method == "POST" else route.continue_())
        page.set_input_files("#target-file", files=[{
            "name": "phone.png", "mimeType": "image/png", "buffer": png_bytes(gradient(96, 64))}])
        expect(page.locator("#target-info")).to_have_text("Reading phone.png…")
        page.wait_for_function("() => true")  # the route handler has run
        page.set_input_files("#target-file", files=[{
            "name": "small.png", "mimeType": "image/png", "buffer": png_bytes(gradient(40, 30))}])
        info = page.locator("#target-info")
        expect(info).to_have_text("small.png · 40 × 30 pixels", timeout=TIMEOUT_MS)
        assert len(held) == 1
        release(page, held)
        expect(info).to_have_text("small.png · 40 × 30 pixels")
        expect(page.locator("#target-thumb")).to_have_attribute("alt",
                                                                "The chosen picture, small.png")
        assert errors == []


def test_the_folder_typed_last_is_used_not_a_slower_earlier_one(browser, served):
    """Two folders typed one after the other (Enter, then Enter): the answer for the
    first, coming last, made it the tiles: "Ready: 12 photos from .../first" under
    a box that said ".../second", and Make used the first folder."""
    from playwright.sync_api import expect

    first, second = served["first"], served["second"]
    with page_of(browser, served) as (_, page, errors):
        page.set_input_files("#target-file", files=[{
            "name": "t.png", "mimeType": "image/png", "buffer": png_bytes(gradient(64, 48))}])
        expect(page.locator("#target-info")).to_have_text(
            "t.png · 64 × 48 pixels", timeout=TIMEOUT_MS)
        held: list = []
        page.route("**/api/index", lambda route: held.append(route) if not held
                   else route.continue_())
        folder = page.locator("#folder-path")
        folder.fill(first)
        folder.press("Enter")
        page.wait_for_function("() => true")  # the route handler has run
        folder.fill(second)
        folder.press("Enter")
        status = page.locator("#index-status")
        expect(status).to_have_text(f"Ready: 16 photos from {second}.", timeout=TIMEOUT_MS)
        assert len(held) == 1
        release(page, held)
        expect(status).to_have_text(f"Ready: 16 photos from {second}.")
        expect(page.locator("#cancel-index")).to_be_hidden()
        expect(page.locator("#command")).to_have_value(
            re.compile(re.escape(f"--tiles {second} ")), timeout=TIMEOUT_MS)
        assert errors == []


def test_progress_says_so_while_the_studio_does_not_answer(browser, served):
    """The studio stopped (Ctrl+C, its terminal closed) while a mosaic was being
    made: the browser kept trying the progress stream, and the page went on showing
    "Writing mosaic.png · 10%..." with no word that nothing was being made any more.
    Once the studio answers again, the progress (here the end) comes back."""
    from playwright.sync_api import expect

    stream = ('retry: 100\nevent: progress\n'
              'data: {"stage": "Writing mosaic.png", "done": 1, "total": 10}\n\n')
    down = {"events": 0}

    def studio_down(route) -> None:
        """The first progress stream gives one event and ends; then nothing answers."""
        if route.request.url.endswith("/events"):
            down["events"] += 1
            if down["events"] == 1:
                route.fulfill(status=200, body=stream, headers={
                    "Content-Type": "text/event-stream", "Cache-Control": "no-store"})
                return
        route.abort("connectionrefused")

    with page_of(browser, served) as (_, page, errors):
        page.set_input_files("#target-file", files=[{
            "name": "t.png", "mimeType": "image/png", "buffer": png_bytes(gradient(64, 48))}])
        expect(page.locator("#target-info")).to_have_text(
            "t.png · 64 × 48 pixels", timeout=TIMEOUT_MS)
        page.locator("#folder-path").fill(served["second"])
        page.locator("#folder-path").press("Enter")
        expect(page.locator("#make")).to_be_enabled(timeout=TIMEOUT_MS)
        page.route(re.compile(r"/api/runs/[0-9a-f]{32}(/events)?$"), studio_down)
        page.locator("#make").click()
        status = page.locator("#make-status")
        expect(status).to_have_text(
            "The studio is not answering: is mosaicist studio still running?",
            timeout=TIMEOUT_MS)
        expect(page.locator("#cancel-make")).to_be_visible()

        # The studio answers again: the page follows the run to its end (cancelled here,
        # not to wait for the whole mosaic).
        page.unroute(re.compile(r"/api/runs/[0-9a-f]{32}(/events)?$"))
        run = served["client"].get("/api/runs").json()[0]["id"]
        served["client"].post(f"/api/runs/{run}/cancel")
        expect(page.locator("#cancel-make")).to_be_hidden(timeout=TIMEOUT_MS)
        expect(page.locator("#error")).to_be_hidden()
        assert down["events"] >= 1 and errors == []
