"""The studio used the way impatient people and hostile requests use it.

A studio served in a thread on 127.0.0.1 (a small generated tile folder as
its root, already indexed), driven by Chromium through Playwright as a
person clicks (double-clicks, reloads, a file too large, a tile size being
typed, a second tab), and by httpx as a hostile client would: odd values
of every kind get one sentence, never a server error.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from conftest import gradient
from PIL import Image

from mosaicist.studio import Studio, make_studio_app
from mosaicist.studio import _app as studio_app
from mosaicist.web import WebServer, bind

TIMEOUT_MS = 20_000
PHOTOS = 24
#: The target: 160 x 120; 10 cells across (16 px cells) makes 10 x 7 cells.
TARGET_SIZE = (160, 120)

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def png_bytes(picture: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, "PNG")
    return buffer.getvalue()


TARGET = png_bytes(gradient(*TARGET_SIZE))


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[dict]:
    """A studio in a thread, its tile folder indexed at the default settings."""
    base = tmp_path_factory.mktemp("studio-hostile")
    home, tiles = base / "home", base / "root" / "tiles"
    home.mkdir()
    tiles.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for index in range(PHOTOS):
        colour = rng.integers(0, 256, 3)
        picture = np.clip(colour + rng.normal(0, 12, (20, 20, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(picture).save(tiles / f"p{index:02d}.png")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOSAICIST_CACHE_DIR", str(base / "cache"))
        studio = Studio(cache_dir=base / "cache", roots=[tiles.parent], home=home)
        listener = bind("127.0.0.1", 0)
        app = make_studio_app(studio, host="127.0.0.1", port=listener.getsockname()[1])
        server = WebServer(app, listener, on_stop=studio.begin_stop)
        server.start()
        client = httpx.Client(base_url=server.url, timeout=60,
                              headers={"X-Mosaicist-Token": studio.token})
        try:
            job = client.post("/api/index", json={"tiles": str(tiles), "settings": {}})
            assert job.status_code == 202, job.text
            deadline = time.monotonic() + 60
            while client.get(f"/api/jobs/{job.json()['job']}").json()["state"] != "done":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            yield {"url": server.url, "client": client, "studio": studio,
                   "tiles": str(tiles.resolve())}
        finally:
            client.close()
            server.stop()
            studio.close()


def runs(served: dict) -> list[dict]:
    return served["client"].get("/api/runs").json()


def delete_runs(served: dict) -> None:
    """Each test starts from an empty history (the server is shared)."""
    for run in runs(served):
        deadline = time.monotonic() + 60
        while served["client"].delete(f"/api/runs/{run['id']}").status_code == 409:
            assert time.monotonic() < deadline
            time.sleep(0.05)


@contextlib.contextmanager
def page_of(browser, served: dict) -> Iterator[tuple]:
    """A fresh context's page on the studio, and the script errors it shows."""
    context = browser.new_context(accept_downloads=True, reduced_motion="reduce")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(served["url"])
        page.wait_for_function("() => document.getElementById('setting-tile_px') !== null")
        yield context, page, errors
    finally:
        context.close()


def choose(page, served: dict, name: str = "my picture.png") -> None:
    """The picture uploaded, the tile folder typed (Enter), ready to make."""
    from playwright.sync_api import expect

    page.set_input_files("#target-file", files=[{"name": name, "mimeType": "image/png",
                                                 "buffer": TARGET}])
    expect(page.locator("#target-info")).to_have_text(
        f"{name} · {TARGET_SIZE[0]} × {TARGET_SIZE[1]} pixels", timeout=TIMEOUT_MS)
    page.locator("#folder-path").fill(served["tiles"])
    page.locator("#folder-path").press("Enter")
    expect(page.locator("#index-status")).to_have_text(
        f"Ready: {PHOTOS} photos from {served['tiles']}.", timeout=TIMEOUT_MS)
    expect(page.locator("#preview-status")).to_have_text(re.compile(r"cells · "),
                                                         timeout=TIMEOUT_MS)


# --- in the browser ----------------------------------------------------------------------------


def test_a_double_click_on_make_makes_one_mosaic_and_one_on_delete_asks(browser, served):
    """Make's button went off only once the server had answered: a double-click (a
    habit of many) recorded and made the same mosaic twice. The second click of a
    double-click on Delete answered the question the first one raised."""
    from playwright.sync_api import expect

    delete_runs(served)
    with page_of(browser, served) as (_, page, errors):
        choose(page, served)
        page.locator("#make").dblclick()
        expect(page.locator("#result")).to_be_visible(timeout=TIMEOUT_MS)
        page.wait_for_timeout(300)  # a second run would have been recorded by now
        assert [run["status"] for run in runs(served)] == ["done"]

        card = page.locator("#runs .run")
        expect(card).to_have_count(1, timeout=TIMEOUT_MS)
        card.locator(".run-delete").dblclick()
        expect(card.locator(".run-delete")).to_have_text("Delete for good?")
        page.wait_for_timeout(300)
        assert len(runs(served)) == 1
        card.locator(".run-delete").click()  # the answer
        expect(page.locator("#runs .run")).to_have_count(0, timeout=TIMEOUT_MS)
        assert runs(served) == [] and errors == []


def test_a_file_over_the_upload_limit_is_named_without_sending_it(browser, served,
                                                                   monkeypatch):
    """A file over the limit was sent whole; past the server's request limit the
    page said "The request body is larger than the 65 MB this server takes",
    naming neither the file nor the limit of 64 MiB (or the connection dropped:
    "The studio is not answering"). And a file name starting with a lowercase word
    and a space was shown capitalised ("My notes.jpg: not a picture...")."""
    from playwright.sync_api import expect

    monkeypatch.setattr(studio_app, "MAX_UPLOAD_BYTES", 2**20)  # as the page is told
    with page_of(browser, served) as (_, page, errors):
        sent = []
        page.on("request", lambda request: sent.append(request.url)
                if request.method == "POST" and "/api/targets" in request.url else None)
        page.set_input_files("#target-file", files=[{
            "name": "holiday photo.jpg", "mimeType": "image/jpeg",
            "buffer": b"\xff\xd8\xff" + bytes(int(1.5 * 2**20))}])
        error = page.locator("#error-text")
        expect(error).to_have_text(
            "holiday photo.jpg: the file is 1.5 MiB, over the limit of 1 MiB.",
            timeout=TIMEOUT_MS)
        assert sent == [] and errors == []
        expect(page.locator("#target-info")).to_have_text("")
        page.locator("#error-close").click()

        # The server's sentence names the file as it is called, not "My notes.jpg".
        page.set_input_files("#target-file", files=[{
            "name": "my notes.jpg", "mimeType": "image/jpeg", "buffer": b"just some text"}])
        expect(error).to_have_text(re.compile(r"^my notes\.jpg: not a picture .*\.$"),
                                   timeout=TIMEOUT_MS)
        assert len(sent) == 1
        page.locator("#error-close").click()
        choose(page, served)


def test_the_picture_survives_a_reload_and_a_forgotten_one_is_dropped(browser, served):
    """The page kept the photos and settings over a reload (or a step back to it)
    but not the picture: "Choose a picture", while a make it started ran on."""
    from playwright.sync_api import expect

    with page_of(browser, served) as (_, page, errors):
        choose(page, served, "our café.png")
        page.locator("#setting-tint").fill("0.5")
        page.reload()
        expect(page.locator("#target-info")).to_have_text(
            f"our café.png · {TARGET_SIZE[0]} × {TARGET_SIZE[1]} pixels", timeout=TIMEOUT_MS)
        expect(page.locator("#setting-tint")).to_have_value("0.5")
        page.wait_for_function("""() => {
          const image = document.getElementById("preview");
          return !image.hidden && JSON.parse(image.dataset.settings || "{}").tint === 0.5;
        }""", timeout=TIMEOUT_MS)
        expect(page.locator("#make")).to_be_enabled()

        # A picture the studio no longer stores (removed since): the page starts without it.
        saved = json.loads(page.evaluate("() => localStorage.getItem('mosaicist-studio')"))
        gone = "0" * 32
        saved["target"] |= {"id": gone}
        page.evaluate("(text) => localStorage.setItem('mosaicist-studio', text)",
                      json.dumps(saved))
        page.reload()
        expect(page.locator("#preview-status")).to_have_text(
            "Choose a picture to see a preview.", timeout=TIMEOUT_MS)
        expect(page.locator("#target-info")).to_have_text("")
        expect(page.locator("#error")).to_be_hidden()
        assert errors == []


def test_the_size_shown_while_a_tile_size_is_typed_is_never_nonsense(browser, served):
    """A tile size of -1 was summed up as "the mosaic is -20 × 7 pixels" (and 0.5 as
    half a pixel a tile; an empty print width as "about 0 × 4,724 pixels")."""
    from playwright.sync_api import expect

    with page_of(browser, served) as (_, page, errors):
        choose(page, served)
        page.locator("#across").fill("10")
        summary = page.locator("#size-summary")
        expect(summary).to_have_text(
            "10 × 7 cells (70 photos); the mosaic is 320 × 224 pixels.")
        for typed in ("-1", "0.5", "99999"):
            page.locator("#setting-tile_px").fill(typed)
            expect(summary).to_have_text("10 × 7 cells (70 photos).")
            expect(page.locator("#preview-status")).to_have_text(
                re.compile("^\u201ctile size\u201d must be .*\\.$"), timeout=TIMEOUT_MS)
        page.locator("#setting-tile_px").fill("8")
        expect(summary).to_have_text("10 × 7 cells (70 photos); the mosaic is 80 × 56 pixels.")

        page.locator("label[for=size-mode-print]").click()
        expect(summary).to_contain_text("A print of 60 × 40 cm at 300 dpi")
        for field, typed in (("#print-width", ""), ("#print-width", "-3"), ("#print-dpi", "")):
            page.locator(field).fill(typed)
            expect(summary).to_have_text("")
            expect(page.locator("#preview-status")).to_have_text(
                re.compile("^\u201cprint (size|resolution)\u201d .*\\.$"), timeout=TIMEOUT_MS)
            page.locator(field).fill("60" if field == "#print-width" else "300")
        expect(summary).to_contain_text("A print of 60 × 40 cm at 300 dpi")
        assert errors == []


def test_a_preview_refused_for_another_tabs_is_asked_again(browser, served):
    """The server draws only the newest preview asked for (409 for the others); one
    tab's refused for another tab's was shown as "A newer preview was asked for."
    and the preview stayed as it was."""
    from playwright.sync_api import expect

    with page_of(browser, served) as (_, page, errors):
        choose(page, served)
        refused = []

        def refuse_once(route) -> None:
            if refused:
                route.continue_()
                return
            refused.append(route.request.url)
            route.fulfill(status=409, content_type="application/json",
                          body=json.dumps({"error": "a newer preview was asked for"}))

        page.route("**/api/preview", refuse_once)
        page.locator("#setting-tint").fill("1")
        page.wait_for_function("""() => {
          const image = document.getElementById("preview");
          return JSON.parse(image.dataset.settings || "{}").tint === 1;
        }""", timeout=TIMEOUT_MS)
        assert len(refused) == 1
        expect(page.locator("#preview-status")).to_have_text(re.compile(r"cells · "))
        assert errors == []


# --- the server, directly ----------------------------------------------------------------------


def one_sentence(response: httpx.Response) -> str:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    body = response.json()
    assert list(body) == ["error"]
    message = body["error"]
    assert message and "\n" not in message and "Traceback" not in message
    return message


HOSTILE_SETTINGS = [
    {"cell_px": "ten"}, {"cell_px": -4}, {"cell_px": 10**40}, {"cell_px": [1]},
    {"tile_px": {"a": 1}}, {"tile_px": 1.5}, {"tint": "NaN"}, {"tint": -0.5},
    {"print_size": "1e9x1e9cm"}, {"print_size": "\u0000"}, {"print_size": 60, "dpi": 300},
    {"cells": 10**12}, {"aspect": "0:1"}, {"aspect": "9" * 400 + ":1"}, {"preset": None},
    {"metric": ""}, {"max_uses": True}, {"min_spacing": 10**30}, {"device": "\U0001f600"},
    {"max_target_pixels": 1}, {"unknown": 1}, [], "cell_px=8",
]


@pytest.mark.parametrize("route", ["/api/preview", "/api/command", "/api/runs"])
def test_hostile_settings_get_one_sentence(served, route):
    client = served["client"]
    target = client.post("/api/targets", files={"file": ("t.png", TARGET, "image/png")}).json()
    before = len(runs(served))
    for settings in HOSTILE_SETTINGS:
        response = client.post(route, json={"target": target["id"], "tiles": served["tiles"],
                                            "settings": settings})
        if route == "/api/command" and response.status_code == 200:
            continue  # a command line only writes the settings; the run checks the sizes
        one_sentence(response)
    assert len(runs(served)) == before  # none was recorded


@pytest.mark.parametrize(("name", "data", "words"), [
    ("notes.txt", b"just text", "not a picture"),
    ("empty.png", b"", "empty"),
    ("tiny.png", png_bytes(np.zeros((1, 1, 3), np.uint8)), "at least 16 pixels"),
    ("photo.heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64),
     "not a picture"),
    ("cut.png", TARGET[: len(TARGET) // 2], "cannot be read"),
])
def test_hostile_uploads_get_one_sentence_naming_the_file(served, name, data, words):
    response = served["client"].post("/api/targets", files={"file": (name, data, "image/png")})
    message = one_sentence(response)
    assert message.startswith(f"{name}: ") and words in message, message


def test_odd_but_good_uploads_are_taken(served):
    client = served["client"]
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0], rgba[:10, :, 3] = 255, 255  # half transparent
    long_name = "\u00e9t\u00e9 \U0001f3a8 " + "x" * 300 + ".png"
    for name, data in (("../../etc/alpha.png", png_bytes(rgba)), (long_name, TARGET)):
        response = client.post("/api/targets", files={"file": (name, data, "image/png")})
        assert response.status_code == 201, response.text
        shown = response.json()["name"]
        assert "/" not in shown and len(shown) <= 80 and shown.endswith(".png")
    stored = client.get(f"/api/targets/{response.json()['id']}")
    assert stored.status_code == 200 and Image.open(io.BytesIO(stored.content)).size == (160, 120)


def test_a_name_with_quotes_is_shown_as_it_is_called(served):
    """Browsers (and httpx) send '"' in an upload's file name as %22, and line breaks
    as %0D%0A: the studio showed 'my %22best%22 photo.png'."""
    assert b'filename="my %22best%22%0D%0A.png"' in httpx.Request(
        "POST", served["url"], files={"file": ('my "best"\r\n.png', b"", "image/png")}).read()
    response = served["client"].post(
        "/api/targets", files={"file": ('my "best"\r\nphoto.png', TARGET, "image/png")})
    assert response.status_code == 201, response.text
    assert response.json()["name"] == 'my "best" photo.png'


def test_downloads_are_named_after_the_picture(served):
    """A picture whose name starts the file's ("m.png", and "mosaic.png") gave its
    downloads the bare names: "mosaic.png", "placements.csv"."""
    client = served["client"]
    target = client.post("/api/targets", files={"file": ("m.png", TARGET, "image/png")}).json()
    made = client.post("/api/runs", json={"target": target["id"], "tiles": served["tiles"],
                                          "settings": {"cell_px": 40, "tile_px": 8}})
    assert made.status_code == 202, made.text
    run_id = made.json()["id"]
    deadline = time.monotonic() + 60
    while (run := client.get(f"/api/runs/{run_id}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert run["status"] == "done", run
    names = {}
    for kind in ("png", "placements_csv"):
        answer = client.get(f"/api/runs/{run_id}/files/{kind}")
        assert answer.status_code == 200
        names[kind] = re.search(r'filename="([^"]+)"', answer.headers["content-disposition"])[1]
    assert names == {"png": "m-mosaic.png", "placements_csv": "m-placements.csv"}
    assert studio_app._download_name("mosaic.jpg", "mosaic.png") == "mosaic.png"


def test_an_upload_over_the_limit_is_not_given_the_size_the_server_read():
    # Servers read one byte past the limit: "the file is 40.0 MiB, over the limit of 40 MiB"
    # for a file of 42 MB.
    from mosaicist.errors import MosaicistError
    from mosaicist.studio._uploads import decode_upload

    with pytest.raises(MosaicistError, match=r"^big\.jpg: the file is larger than the limit "
                                             r"of 1 MiB$"):
        decode_upload(b"x" * (2**20 + 1), "big.jpg", max_bytes=2**20)
