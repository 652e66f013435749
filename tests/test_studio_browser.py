"""The studio's page in a real browser: the whole flow, end to end, on a real server.

``mosaicist studio`` runs in a subprocess on 127.0.0.1 with a temporary cache
and a small generated tile folder given as ``--root``; Chromium (driven by
Playwright) goes through what a person does: a file that is not a picture
(one sentence on the page), a picture dropped on the page, the tile folder
picked in the folder browser, the preview following a setting, Make with its
progress, the result zoomed in the run's viewer (the photo under the pointer
named as in the placements), downloads decoded, and, after the server is
restarted on the same cache, the run found in the history, opened, drawn
again at another tile size, and deleted.
"""

from __future__ import annotations

import base64
import colorsys
import contextlib
import csv
import io
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "tests" / "data" / "astronaut.jpg"
TARGET_NAME = "our astronaut.jpg"  # a space: names travel through forms and URLs
PHOTOS = 48
ACROSS = 12  # cells across: 12 x 12 cells of the 512 px target
TIMEOUT_MS = 30_000

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")




def write_photos(folder: Path) -> None:
    """``PHOTOS`` small textured photos of well-spread colours, and one broken file."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    for index in range(PHOTOS):
        hue, level = index / PHOTOS, (index % 4) / 3
        saturation = 0.25 + 0.75 * (index % 3) / 2
        colour = np.array(colorsys.hsv_to_rgb(hue, saturation, 0.15 + 0.85 * level))
        picture = np.clip(colour * 255 + rng.normal(0, 10, (24, 24, 3)), 0, 255)
        Image.fromarray(picture.astype(np.uint8)).save(folder / f"p{index:02d}.png")
    (folder / "broken.jpg").write_bytes(b"this is not a JPEG")


@contextlib.contextmanager
def studio(root: Path, cache: Path, home: Path) -> Iterator[str]:
    """``mosaicist studio`` in a subprocess; yield its URL, then stop it with Ctrl+C."""
    environment = dict(os.environ, HOME=str(home), MOSAICIST_CACHE_DIR=str(cache))
    server = subprocess.Popen(
        [sys.executable, "-m", "mosaicist", "studio", "--no-browser", "--port", "0",
         "--root", str(root), "--cache-dir", str(cache)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=environment,
    )
    assert server.stderr is not None
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in server.stderr],
                              daemon=True)
    reader.start()
    seen = []
    try:
        deadline = time.monotonic() + 30
        url = None
        while url is None and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                line = lines.get(timeout=0.5)
                seen.append(line)
                match = re.search(r"http://127\.0\.0\.1:\d+/", line)
                url = match.group(0) if match else None
            assert server.poll() is None, "".join(seen)
        assert url is not None, "".join(seen)
        yield url
    finally:
        server.send_signal(signal.SIGINT)
        try:
            returncode = server.wait(timeout=20)
        finally:
            server.kill()
            server.wait()
        reader.join(timeout=10)
    rest = "".join(seen) + "".join(lines.get_nowait() for _ in range(lines.qsize()))
    assert returncode == 0 and "Traceback" not in rest, rest


@contextlib.contextmanager
def studio_page(browser) -> Iterator[tuple]:
    """A page in a fresh context (so no remembered choices), and its script errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True,
                                  reduced_motion="reduce")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # A script or style the page's policy refuses would be a broken page in every browser.
    page.on("console", lambda message: errors.append(message.text)
            if "Content Security Policy" in message.text else None)
    try:
        yield context, page, errors
    finally:
        context.close()


# Functions run in the pages (function forms: the studio's policy forbids eval).
PREVIEW_PIXELS = """() => {
  const image = document.getElementById("preview");
  const canvas = document.createElement("canvas");
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  canvas.getContext("2d").drawImage(image, 0, 0);
  return canvas.toDataURL("image/png");
}"""
PREVIEW_SHOWS = """(expected) => {
  const image = document.getElementById("preview");
  if (image.hidden || !image.dataset.settings) return false;
  const shown = JSON.parse(image.dataset.settings);
  return Object.entries(expected).every(([name, value]) => shown[name] === value);
}"""
DROP_FILE = """([name, type, data]) => {
  const bytes = Uint8Array.from(atob(data), (character) => character.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, {type}));
  const zone = document.getElementById("drop-zone");
  for (const kind of ["dragenter", "dragover", "drop"]) {
    const options = {dataTransfer: transfer, bubbles: true, cancelable: true};
    zone.dispatchEvent(new DragEvent(kind, options));
  }
}"""
VIEWER_OPENED = """() => {
  const viewer = window.mosaicistViewer;
  return viewer !== undefined && viewer.world.getItemCount() > 0
    && viewer.world.getItemAt(0).getFullyLoaded();
}"""
# Zoom the viewer to one image pixel per screen pixel on an image point.
ZOOM_TO = """([x, y]) => {
  const viewport = window.mosaicistViewer.viewport;
  viewport.zoomTo(viewport.imageToViewportZoom(1), null, true);
  viewport.panTo(viewport.imageToViewportCoordinates(x, y), true);
  return new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
}"""
# The view's tiles are drawn, the one at (x, y) from the deepest level.
DEEPEST_DRAWN = """([x, y]) => {
  const viewer = window.mosaicistViewer;
  const item = viewer.world.getItemAt(0);
  const data = window.mosaicist.data;
  const size = Number(data.tile_source.Image.TileSize);
  return item.getFullyLoaded() && !viewer.world.needsDraw()
    && item.lastDrawn.some((drawn) => drawn.level === data.deepest_level && drawn.tile.loaded
                           && drawn.tile.x === Math.floor(x / size)
                           && drawn.tile.y === Math.floor(y / size));
}"""
# Where an image point is inside the viewer's frame.
FRAME_POINT = """([x, y]) => {
  const viewer = window.mosaicistViewer;
  const point = viewer.viewport.imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y));
  const box = viewer.element.getBoundingClientRect();
  return [point.x + box.left, point.y + box.top];
}"""


def decode_data_url(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"),
                      np.int16)


def viewer_frame(page):
    """The run's viewer inside the result's frame, once its picture is loaded."""
    frame = page.locator("#viewer").element_handle().content_frame()
    assert frame is not None
    frame.wait_for_function(VIEWER_OPENED, timeout=TIMEOUT_MS)
    return frame


def hover_cell(page, frame, row: int, col: int) -> str:
    """Zoom the viewer onto a cell, put the pointer on it; return the label's text."""
    from playwright.sync_api import expect

    data = frame.evaluate("() => window.mosaicist.data")
    cell_w = data["width"] / data["cols"]
    cell_h = data["height"] / data["rows"]
    centre = [(col + 0.5) * cell_w, (row + 0.5) * cell_h]
    frame.evaluate(ZOOM_TO, centre)
    frame.wait_for_function(DEEPEST_DRAWN, arg=centre, timeout=TIMEOUT_MS)
    page.locator("#viewer").scroll_into_view_if_needed()
    x, y = frame.evaluate(FRAME_POINT, centre)
    box = page.locator("#viewer").bounding_box()
    page.mouse.move(box["x"] + x, box["y"] + y)
    label = frame.locator("#mosaicist-label")
    expect(label).to_be_visible(timeout=TIMEOUT_MS)
    expect(label).to_contain_text(f"row {row}, col {col}", timeout=TIMEOUT_MS)
    return label.text_content()


def download(page, kind: str) -> bytes:
    """Click a download link of the result; return the file's bytes."""
    with page.expect_download(timeout=TIMEOUT_MS) as started:
        page.locator(f'#downloads a[data-kind="{kind}"]').click()
    path = started.value.path()
    assert path is not None
    return Path(path).read_bytes()


def test_studio_whole_flow_in_a_browser(browser, tmp_path):
    from playwright.sync_api import expect

    root = tmp_path / "root"
    photos = root / "my photos"
    write_photos(photos)
    cache, home = tmp_path / "cache", tmp_path / "home"
    home.mkdir()
    target = np.asarray(Image.open(TARGET).convert("RGB"))

    with studio(root, cache, home) as url, studio_page(browser) as (_, page, errors):
        page.goto(url)
        expect(page.locator("#setting-tile_px")).to_be_visible(timeout=TIMEOUT_MS)
        make = page.locator("#make")
        expect(make).to_be_disabled()

        # 1. A file that is not a picture: one sentence on the page, no trace.
        page.set_input_files("#target-file", files=[{
            "name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"just some text"}])
        error = page.locator("#error-text")
        expect(error).to_be_visible(timeout=TIMEOUT_MS)
        message = error.text_content()
        assert message.endswith(".") and "\n" not in message and "Traceback" not in message
        assert "notes.jpg" in message, message
        page.locator("#error-close").click()
        expect(error).to_be_hidden()

        # The picture, dropped on the page.
        page.evaluate(DROP_FILE, [TARGET_NAME, "image/jpeg",
                                  base64.b64encode(TARGET.read_bytes()).decode()])
        expect(page.locator("#target-info")).to_have_text(
            f"{TARGET_NAME} · 512 × 512 pixels", timeout=TIMEOUT_MS)
        thumb = page.locator("#target-thumb")
        expect(thumb).to_be_visible()
        assert page.evaluate("() => document.getElementById('target-thumb').naturalWidth") > 0

        # 2. The tile folder, picked in the folder browser (the keyboard way for the last step).
        page.locator("#browse").click()
        dialog = page.locator("#folders")
        expect(dialog).to_be_visible()
        expect(page.locator("#folder-current")).to_have_text(str(home.resolve()))
        page.locator("#folder-roots button", has_text=str(root.resolve())).click()
        expect(page.locator("#folder-current")).to_have_text(str(root.resolve()))
        expect(page.locator("#folder-up")).to_be_disabled()  # a root has no parent here
        page.locator("#folder-list button", has_text="my photos").click()
        expect(page.locator("#folder-current")).to_have_text(str(photos.resolve()))
        expect(page.locator("#folder-images")).to_have_text(
            f"{PHOTOS + 1} pictures in this folder.")
        expect(page.locator("#folder-up")).to_be_enabled()
        page.locator("#folder-choose").focus()
        page.keyboard.press("Enter")
        expect(dialog).to_be_hidden()
        expect(page.locator("#folder-path")).to_have_value(str(photos.resolve()))
        expect(page.locator("#index-status")).to_have_text(
            f"Ready: {PHOTOS} photos from {photos.resolve()}.", timeout=TIMEOUT_MS)
        expect(page.locator("#skipped-summary")).to_have_text("1 file could not be used")
        expect(page.locator("#skipped-list li")).to_contain_text("broken.jpg")

        # 3. Settings: the seed's method at 12 cells across, then a colour correction.
        page.locator("#setting-preset").select_option("seed")
        page.locator("#across").fill(str(ACROSS))
        expect(page.locator("#size-summary")).to_contain_text(f"{ACROSS} × {ACROSS} cells")
        seed = {"preset": "seed", "cell_px": 512 // ACROSS}
        page.wait_for_function(PREVIEW_SHOWS, arg=seed, timeout=TIMEOUT_MS)
        expect(page.locator("#preview-status")).to_have_text(
            re.compile(r"^[\d,]+ cells · \d+\.\d\d s$"))
        before = decode_data_url(page.evaluate(PREVIEW_PIXELS))
        command = page.locator("#command")
        expect(command).to_have_value(re.compile(r"--preset seed"), timeout=TIMEOUT_MS)
        assert "--tint" not in command.input_value()

        page.locator("#setting-tint").fill("1")
        page.wait_for_function(PREVIEW_SHOWS, arg=seed | {"tint": 1}, timeout=TIMEOUT_MS)
        after = decode_data_url(page.evaluate(PREVIEW_PIXELS))
        assert before.shape == after.shape
        assert np.abs(before - after).mean() > 3  # the tiles took their cells' colours
        expect(command).to_have_value(re.compile(r"--tint 1"), timeout=TIMEOUT_MS)
        expect(page.locator("#setting-tint").locator("xpath=ancestor::div[@data-setting]")
               ).to_have_class(re.compile(r"\bchanged\b"))

        # A bad value: the server's one sentence, where the preview's status is.
        page.locator("#setting-max_uses").fill("0")
        expect(page.locator("#preview-status")).to_have_text(
            re.compile(r"most uses of one photo.*at least 1.*\.$", re.IGNORECASE),
            timeout=TIMEOUT_MS)
        page.locator("#setting-max_uses").fill("")  # optional: empty means no limit
        page.wait_for_function(PREVIEW_SHOWS, arg=seed | {"tint": 1, "max_uses": None},
                               timeout=TIMEOUT_MS)

        # Make: progress, then the result in the run's viewer.
        expect(make).to_be_enabled()
        make.click()
        expect(page.locator("#make-box")).to_be_visible()
        expect(page.locator("#result")).to_be_visible(timeout=60_000)
        expect(page.locator("#make-status")).to_have_text(re.compile(r"^Done"))
        expect(page.locator("#make-progress")).to_have_attribute("value", re.compile(r"."))
        frame = viewer_frame(page)
        data = frame.evaluate("() => window.mosaicist.data")
        assert (data["rows"], data["cols"]) == (ACROSS, ACROSS)
        assert (data["width"], data["height"]) == (ACROSS * 32, ACROSS * 32)

        # The downloads decode, and the placements say which photo is where.
        png = Image.open(io.BytesIO(download(page, "png")))
        png.load()
        assert png.size == (ACROSS * 32, ACROSS * 32)
        mosaic = np.asarray(png.convert("RGB"), np.float64)
        cells = mosaic.reshape(ACROSS, 32, ACROSS, 32, 3).mean((1, 3))
        crop = target[4:4 + ACROSS * 42, 4:4 + ACROSS * 42].astype(np.float64)  # centred
        expected = crop.reshape(ACROSS, 42, ACROSS, 42, 3).mean((1, 3))
        assert np.corrcoef(cells.ravel(), expected.ravel())[0, 1] > 0.9  # it shows the target
        jpeg = Image.open(io.BytesIO(download(page, "jpeg")))
        jpeg.load()
        assert jpeg.size == png.size
        with zipfile.ZipFile(io.BytesIO(download(page, "deepzoom_zip"))) as archive:
            assert {"mosaic.dzi", "mosaic.html"} <= set(archive.namelist())
        rows = list(csv.DictReader(io.StringIO(download(page, "placements_csv").decode())))
        assert len(rows) == ACROSS * ACROSS
        where = {(int(row["row"]), int(row["col"])): row["tile"] for row in rows}
        for row, col in ((2, 3), (9, 7)):
            label = hover_cell(page, frame, row, col)
            assert label == f"{where[row, col]} \u00b7 row {row}, col {col}", label
        page.screenshot(path=str(tmp_path / "studio.png"), full_page=True)
        assert errors == []

    # After a restart on the same cache: the run is in the history.
    with studio(root, cache, home) as url, studio_page(browser) as (_, page, errors):
        page.goto(url)
        card = page.locator("#runs .run")
        expect(card).to_have_count(1, timeout=TIMEOUT_MS)
        expect(card.locator(".run-title")).to_have_text(TARGET_NAME)
        expect(card.locator(".run-status")).to_have_text("Done")
        expect(card.locator("img")).to_be_visible()
        card.scroll_into_view_if_needed()  # thumbnails load lazily, when scrolled to
        page.wait_for_function("(image) => image.complete && image.naturalWidth > 0",
                               arg=card.locator("img").element_handle(), timeout=TIMEOUT_MS)
        card.locator(".run-open-text").click()
        expect(page.locator("#result")).to_be_visible()
        viewer_frame(page)

        # Drawn again at 16 px tiles: a second run, from the same placements.
        card.locator(".run-tile-px").fill("16")
        card.locator(".run-render button").click()
        expect(page.locator("#runs .run")).to_have_count(2, timeout=TIMEOUT_MS)
        expect(page.locator("#make-status")).to_have_text(re.compile(r"^Done"), timeout=60_000)
        small = Image.open(io.BytesIO(download(page, "png")))
        small.load()
        assert small.size == (ACROSS * 16, ACROSS * 16)
        assert viewer_frame(page).evaluate("() => window.mosaicist.data.width") == ACROSS * 16

        # Deleted: asked once more on the button, then gone with its files.
        first = page.locator("#runs .run").first
        first.locator(".run-delete").click()
        expect(first.locator(".run-delete")).to_have_text("Delete for good?")
        first.locator(".run-delete").click()
        expect(page.locator("#runs .run")).to_have_count(1, timeout=TIMEOUT_MS)
        expect(page.locator("#result")).to_be_hidden()
        assert errors == []


def test_a_print_size_is_previewed_in_a_browser(browser, tmp_path):
    # The print decides the tile size, so the index's: the page indexed the photos
    # without the target, at the settings' tile size (32 px), and the preview of a
    # small print (20 px tiles) said "not indexed yet" for good.
    from playwright.sync_api import expect

    root = tmp_path / "root"
    photos = root / "my photos"
    write_photos(photos)
    cache, home = tmp_path / "cache", tmp_path / "home"
    home.mkdir()
    with studio(root, cache, home) as url, studio_page(browser) as (_, page, errors):
        page.goto(url)
        expect(page.locator("#setting-tile_px")).to_be_visible(timeout=TIMEOUT_MS)
        page.evaluate(DROP_FILE, [TARGET_NAME, "image/jpeg",
                                  base64.b64encode(TARGET.read_bytes()).decode()])
        expect(page.locator("#target-info")).to_have_text(
            f"{TARGET_NAME} · 512 × 512 pixels", timeout=TIMEOUT_MS)
        page.locator("#folder-path").fill(str(photos.resolve()))
        page.locator("#use-tiles").click()
        expect(page.locator("#index-status")).to_have_text(
            f"Ready: {PHOTOS} photos from {photos.resolve()}.", timeout=TIMEOUT_MS)
        page.locator('label[for="size-mode-print"]').click()
        for field, value in (("width", "10"), ("height", "10"), ("dpi", "100"),
                             ("cells", "400")):
            page.locator(f"#print-{field}").fill(value)
        printed = {"print_size": "10x10cm", "dpi": 100, "cells": 400}
        page.wait_for_function(PREVIEW_SHOWS, arg=printed, timeout=TIMEOUT_MS)
        expect(page.locator("#preview-status")).to_have_text(
            re.compile(r"^400 cells · \d+\.\d\d s$"))
        assert errors == []


#: Photo names that are markup or script, one per photo in turn (no "/": one folder).
HOSTILE_PHOTOS = ("<img src=x onerror=alert(1)>", "\"'><svg onload=alert(2)>",
                  "javascript:alert(3)", "<script>alert(7)<!--", "`${alert(4)}`\u2028", "&lt;&amp;")
HOSTILE_TARGET = "<img src=x onerror=alert(5)>'<script>\u2028.jpg"  # Chromium sends " as %22
HOSTILE_FOLDER = "<svg onload=alert(6)>\"'"


def test_hostile_names_stay_text_in_the_studio(browser, tmp_path):
    """A target, a tile folder and photos named as markup show as text; nothing runs."""
    from playwright.sync_api import expect

    root = tmp_path / "root"
    photos = root / HOSTILE_FOLDER
    write_photos(photos)
    for index in range(PHOTOS):
        source = photos / f"p{index:02d}.png"
        source.rename(photos / f"{HOSTILE_PHOTOS[index % len(HOSTILE_PHOTOS)]}{index:02d}.png")
    cache, home = tmp_path / "cache", tmp_path / "home"
    home.mkdir()
    with studio(root, cache, home) as url, studio_page(browser) as (_, page, errors):
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(url)
        expect(page.locator("#setting-tile_px")).to_be_visible(timeout=TIMEOUT_MS)
        page.evaluate(DROP_FILE, [HOSTILE_TARGET, "image/jpeg",
                                  base64.b64encode(TARGET.read_bytes()).decode()])
        expect(page.locator("#target-info")).to_have_text(
            f"{HOSTILE_TARGET} · 512 × 512 pixels", timeout=TIMEOUT_MS)

        # The folder browser lists the folder by its name, as text.
        page.locator("#browse").click()
        expect(page.locator("#folder-current")).to_have_text(str(home.resolve()))
        page.locator("#folder-roots button", has_text=str(root.resolve())).click()
        page.locator("#folder-list button", has_text=HOSTILE_FOLDER).click()
        expect(page.locator("#folder-current")).to_have_text(str(photos.resolve()))
        page.locator("#folder-choose").click()
        expect(page.locator("#index-status")).to_have_text(
            f"Ready: {PHOTOS} photos from {photos.resolve()}.", timeout=TIMEOUT_MS)

        page.locator("#setting-preset").select_option("seed")
        page.locator("#across").fill(str(ACROSS))
        page.wait_for_function(PREVIEW_SHOWS, arg={"preset": "seed", "cell_px": 512 // ACROSS},
                               timeout=TIMEOUT_MS)
        page.locator("#make").click()
        expect(page.locator("#result")).to_be_visible(timeout=60_000)
        expect(page.locator("#result-info")).to_contain_text(HOSTILE_TARGET)
        card = page.locator("#runs .run")
        expect(card.locator(".run-title")).to_have_text(HOSTILE_TARGET, timeout=TIMEOUT_MS)

        # The run's viewer names the photo under the pointer as it is named.
        frame = viewer_frame(page)
        rows = list(csv.DictReader(io.StringIO(download(page, "placements_csv").decode())))
        where = {(int(row["row"]), int(row["col"])): row["tile"] for row in rows}
        for row, col in ((2, 3), (9, 7)):
            assert any(where[row, col].startswith(name) for name in HOSTILE_PHOTOS)
            label = hover_cell(page, frame, row, col)
            assert label == f"{where[row, col]} \u00b7 row {row}, col {col}", label
        assert frame.evaluate("() => document.querySelectorAll('script').length") == 3
        for scope in (page, frame):
            assert scope.evaluate(
                "() => document.querySelectorAll('[onerror], [onload]').length") == 0
        assert dialogs == [] and errors == []


def test_a_slow_listing_does_not_replace_the_folder_picked_since(browser, tmp_path):
    """The folder browser shows the folder asked for last, whatever answers last.

    The first listing (the home folder) is held back until a root has been
    picked and shown; it then answered and replaced the root's listing.
    """
    from playwright.sync_api import expect

    root = tmp_path / "root"
    write_photos(root / "my photos")
    cache, home = tmp_path / "cache", tmp_path / "home"
    (home / "elsewhere").mkdir(parents=True)
    held = []

    def hold_home(route) -> None:
        if not held and "folders" in route.request.url:
            held.append(route)  # answered later, below
        else:
            route.continue_()

    with studio(root, cache, home) as url, studio_page(browser) as (_, page, errors):
        page.goto(url)
        expect(page.locator("#setting-tile_px")).to_be_visible(timeout=TIMEOUT_MS)
        page.route("**/api/folders?*", hold_home)
        page.locator("#browse").click()
        page.wait_for_function("() => document.getElementById('folders').open")
        page.locator("#folder-roots button", has_text=str(root.resolve())).click()
        expect(page.locator("#folder-current")).to_have_text(str(root.resolve()),
                                                            timeout=TIMEOUT_MS)
        assert len(held) == 1 and "home" in held[0].request.url
        with page.expect_response(held[0].request.url):
            held[0].continue_()
        # Let the page's handler of that answer run (it replaced the listing at once).
        page.evaluate("() => new Promise((resolve) => setTimeout(resolve, 300))")
        expect(page.locator("#folder-current")).to_have_text(str(root.resolve()))
        expect(page.locator("#folder-list button", has_text="my photos")).to_be_visible()
        assert errors == []
