"""The live wall's pages in a real browser, on a real server.

``mosaicist live`` runs in a subprocess on 127.0.0.1 (a free port, later the
same port again) with a temporary event folder and a small generated target.
Chromium, driven by Playwright, opens the display page (a TV) and the guests'
page (a phone). A guest sends two photos: each appears on the display's
canvas in the cell the server placed it in, and nowhere else, and the guest's
page names that row and column and shows the wall zoomed to it. The host
signs in with the printed admin link (the token leaves the address bar),
picks a cell and takes its photo off: the display's cell empties. The server
is then stopped: the display says it is reconnecting; while it is away one
of its tiles is wiped from the page, as if an event had been missed. Started
again on the same event folder and port, the server is found again by
itself, the display re-fetches the wall and draws the missing tile back, and
a reloaded guest page remembers its photos. Last, the host turns moderation
on: a new photo waits (the guest is told so) until the host approves it,
then arrives on the display live, over the new connection.

A second wall runs without ``--final``: photos sent in a burst are moved to
better cells once uploads pause, and the display ends up showing exactly the
server's wall, photo by photo.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

COLS, ROWS = 8, 6
TIMEOUT_MS = 20_000
#: Photos the guest sends, by colour: far apart, so that a tile in the wrong cell shows.
COLOURS = {"red": (220, 40, 40), "blue": (40, 60, 220), "green": (40, 200, 60)}

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")




def write_target(path: Path) -> Path:
    """A 160 x 120 target of four coloured quarters with a gradient (cells differ)."""
    y, x = np.mgrid[0:120, 0:160]
    picture = np.zeros((120, 160, 3), np.float64)
    picture[..., 0] = np.where(x < 80, 200, 60) + 0.2 * y
    picture[..., 1] = np.where(y < 60, 180, 70) + 0.2 * x
    picture[..., 2] = 100 + 0.5 * (x + y) / 2
    Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8)).save(path)
    return path


def photo(colour: tuple[int, int, int], seed: int) -> bytes:
    """A 120 x 90 JPEG of one colour with a little texture."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 6, (90, 120, 3)), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def upload_file(name: str, seed: int) -> dict:
    return {"name": f"{name}.jpg", "mimeType": "image/jpeg", "buffer": photo(COLOURS[name], seed)}


@contextlib.contextmanager
def live_server(event: Path, *, target: Path | None = None, port: int = 0,
                final: bool = True, extra: tuple[str, ...] = ()) -> Iterator[dict]:
    """``mosaicist live`` in a subprocess; yield its links, then stop it with Ctrl+C."""
    command = [sys.executable, "-m", "mosaicist", "live"]
    if target is not None:
        command += [str(target), "--grid", f"{COLS}x{ROWS}"]
    # --final: placed photos never move, so the cells a test expects stay put.
    command += ["--event", str(event), "--port", str(port), "--rate", "0",
                "--final" if final else "--moving", *extra]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=dict(os.environ))
    assert server.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in server.stdout],
                              daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 30
        admin = None
        while admin is None and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                line = lines.get(timeout=0.5)
                seen.append(line)
                admin = re.search(r"(http://127\.0\.0\.1:(\d+))/admin#token=(\S+)", line)
            assert server.poll() is None, "".join(seen)
        assert admin is not None, "".join(seen)
        yield {"base": admin.group(1), "port": int(admin.group(2)), "token": admin.group(3)}
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


def get_json(base: str, path: str) -> dict:
    with urllib.request.urlopen(base + path, timeout=10) as answer:
        return json.loads(answer.read())


def tile_colour(base: str, photo_id: str) -> np.ndarray:
    """The mean colour of the middle of a placed photo's tile, as the server serves it."""
    with urllib.request.urlopen(f"{base}/api/tiles/{photo_id}.jpg", timeout=10) as answer:
        tile = np.asarray(Image.open(io.BytesIO(answer.read())).convert("RGB"), np.float64)
    height, width = tile.shape[:2]
    return tile[height // 4:height * 3 // 4, width // 4:width * 3 // 4].mean((0, 1))


# Functions run in the pages (function forms: the pages' policy forbids eval). Cells are
# found from the canvas's size and the grid, not from the page's own geometry.
# Each drawn cell with the mean colour of its middle half.
FILLED_CELLS = """([cols, rows]) => {
  const canvas = document.getElementById("tiles");
  const context = canvas.getContext("2d");
  const filled = [];
  for (let row = 0; row < rows; row += 1) {
    for (let col = 0; col < cols; col += 1) {
      const x = Math.floor((col + 0.25) * canvas.width / cols);
      const y = Math.floor((row + 0.25) * canvas.height / rows);
      const width = Math.max(1, Math.floor(0.5 * canvas.width / cols));
      const height = Math.max(1, Math.floor(0.5 * canvas.height / rows));
      const pixels = context.getImageData(x, y, width, height).data;
      const sums = [0, 0, 0, 0];
      for (let index = 0; index < pixels.length; index += 1) sums[index % 4] += pixels[index];
      const count = pixels.length / 4;
      if (sums[3] > 0) filled.push([row, col, ...sums.map((sum) => sum / count)]);
    }
  }
  return filled;
}"""
SHOWS_CELLS = """([cols, rows, expected]) => {
  const canvas = document.getElementById("tiles");
  if (!canvas.width) return false;
  const context = canvas.getContext("2d");
  const wanted = new Set(expected.map(([row, col]) => `${row},${col}`));
  for (let row = 0; row < rows; row += 1) {
    for (let col = 0; col < cols; col += 1) {
      const x = Math.floor((col + 0.5) * canvas.width / cols);
      const y = Math.floor((row + 0.5) * canvas.height / rows);
      const alpha = context.getImageData(x, y, 1, 1).data[3];
      if ((alpha === 255) !== wanted.has(`${row},${col}`)) return false;
    }
  }
  return true;
}"""
# The guest's zoomed view: is the pixel under the ring around their tile drawn?
SPOT_DRAWN = """(item) => {
  const canvas = item.querySelector(".spot-tiles");
  const ring = item.querySelector(".spot-ring").getBoundingClientRect();
  const box = canvas.getBoundingClientRect();
  if (!canvas.width || !box.width) return false;
  const x = Math.floor((ring.left + ring.width / 2 - box.left) * canvas.width / box.width);
  const y = Math.floor((ring.top + ring.height / 2 - box.top) * canvas.height / box.height);
  return canvas.getContext("2d").getImageData(x, y, 1, 1).data[3] === 255;
}"""
# Wipe a cell from the display, as if the event that drew it had been missed.
FORGET_CELL = """([row, col]) => window.mosaicistDisplay.wall.clearCell(row, col)"""


def watch(page, errors: list[str], name: str) -> None:
    """Collect a page's script errors and refused loads (a broken page in every browser)."""
    page.on("pageerror", lambda error: errors.append(f"{name}: {error}"))
    page.on("console", lambda message: errors.append(f"{name}: {message.text}")
            if "Content Security Policy" in message.text else None)


def wall_cells(base: str) -> dict[str, tuple[int, int]]:
    """Photo id -> (row, col) of every placed photo, as the server says."""
    wall = get_json(base, "/api/wall")
    assert wall["grid"] == {"cols": COLS, "rows": ROWS}
    return {tile["id"]: (tile["row"], tile["col"]) for tile in wall["tiles"]}


def expect_display(display, cells) -> None:
    display.wait_for_function(SHOWS_CELLS, arg=[COLS, ROWS, [list(cell) for cell in cells]],
                              timeout=TIMEOUT_MS)


def test_guest_photo_reaches_the_display_and_leaves_it(browser, tmp_path):
    from playwright.sync_api import expect

    target = write_target(tmp_path / "our target.png")
    event = tmp_path / "event"
    errors: list[str] = []
    tv = browser.new_context(viewport={"width": 1280, "height": 720}, reduced_motion="reduce")
    phone = browser.new_context(viewport={"width": 390, "height": 780}, is_mobile=True,
                                has_touch=True, device_scale_factor=2)
    try:
        with live_server(event, target=target) as server:
            base, port = server["base"], server["port"]
            display = tv.new_page()
            watch(display, errors, "display")
            display.goto(f"{base}/display")
            display.wait_for_function("() => window.mosaicistDisplay.version >= 0",
                                      timeout=TIMEOUT_MS)
            assert display.evaluate(FILLED_CELLS, [COLS, ROWS]) == []
            expect(display.locator("#guest-link")).to_have_text(f"127.0.0.1:{port}")
            expect(display.locator("#qr")).to_be_visible()

            # A guest sends two photos at once from the phone.
            guest = phone.new_page()
            watch(guest, errors, "guest")
            guest.goto(f"{base}/")
            guest.set_input_files("#choose", files=[upload_file("red", 1),
                                                    upload_file("blue", 2)])
            placed = guest.locator(".upload[data-state=placed]")
            expect(placed).to_have_count(2, timeout=TIMEOUT_MS)
            cells = wall_cells(base)
            assert len(cells) == 2

            # The display shows exactly those two cells, each with its own tile.
            expect_display(display, cells.values())
            shown = {(row, col): np.array(rgb) for row, col, *rgb, alpha in
                     display.evaluate(FILLED_CELLS, [COLS, ROWS]) if alpha == 255}
            assert set(shown) == set(cells.values())
            served = {cell: tile_colour(base, photo_id) for photo_id, cell in cells.items()}
            for cell, colour in served.items():
                others = [other for key, other in served.items() if key != cell]
                distance = np.abs(shown[cell] - colour).max()
                assert distance <= 8, (cell, shown[cell], colour)
                assert all(distance < np.abs(shown[cell] - other).max() for other in others)
            expect(display.locator("#count")).to_have_text(f"2 of {COLS * ROWS} photos")

            # The guest's page says where each landed, and zooms the wall to it.
            for item in placed.all():
                photo_id = item.get_attribute("data-id")
                row, col = cells[photo_id]
                answer = get_json(base, f"/api/photos/{photo_id}")
                assert (answer["status"], answer["row"], answer["col"]) == ("placed", row, col)
                expect(item.locator(".spot-caption")).to_have_text(
                    f"Row {row + 1}, column {col + 1}")
                guest.wait_for_function(SPOT_DRAWN, arg=item.element_handle(),
                                        timeout=TIMEOUT_MS)
            red = guest.locator(".upload", has_text="red.jpg").get_attribute("data-id")
            blue = guest.locator(".upload", has_text="blue.jpg").get_attribute("data-id")

            # The host signs in with the printed link; the token leaves the address bar.
            admin = tv.new_page()
            watch(admin, errors, "admin")
            admin.goto(f"{base}/admin#token={server['token']}")
            expect(admin.locator("#console")).to_be_visible(timeout=TIMEOUT_MS)
            assert admin.evaluate("() => location.hash") == ""
            expect(admin.locator('[data-count="placed"]')).to_have_text("2", timeout=TIMEOUT_MS)

            # ... picks the red photo's cell and takes it off (two clicks).
            row, col = cells[red]
            admin.locator("#pick-row").fill(str(row + 1))
            admin.locator("#pick-col").fill(str(col + 1))
            admin.locator("#pick-cell button[type=submit]").click()
            expect(admin.locator("#cell-text")).to_have_text(
                f"Row {row + 1}, column {col + 1}: photo {red[:8]}.", timeout=TIMEOUT_MS)
            admin.locator("#remove").click()
            expect(admin.locator("#remove")).to_have_text("Click again to take it off")
            admin.locator("#remove").click()
            expect(admin.locator("#message")).to_contain_text("off the wall", timeout=TIMEOUT_MS)
            expect_display(display, [cells[blue]])
            assert get_json(base, f"/api/photos/{red}")["status"] == "removed"
            expect(admin.locator('[data-count="placed"]')).to_have_text("1", timeout=TIMEOUT_MS)

        # The server is gone: the display says so, and misses (here: loses) a tile meanwhile.
        expect(display.locator("#connection")).to_be_visible(timeout=TIMEOUT_MS)
        display.evaluate(FORGET_CELL, list(cells[blue]))
        expect_display(display, [])

        with live_server(event, port=port) as server:
            # Found again by itself, and the wall re-fetched: the lost tile is back.
            expect(display.locator("#connection")).to_be_hidden(timeout=TIMEOUT_MS)
            expect_display(display, [cells[blue]])

            # A reloaded guest page remembers its photos and what became of them.
            guest.reload()
            expect(guest.locator(f'.upload[data-id="{red}"] .upload-status')).to_have_text(
                "This photo was taken off the wall by the host.", timeout=TIMEOUT_MS)
            row, col = cells[blue]
            expect(guest.locator(f'.upload[data-id="{blue}"] .spot-caption')).to_have_text(
                f"Row {row + 1}, column {col + 1}", timeout=TIMEOUT_MS)

            # The host (still signed in) holds new photos for approval; a new one waits...
            admin.locator("#moderation").check()
            expect(admin.locator("#moderation")).to_be_enabled()  # disabled while it is sent
            expect(admin.locator("#moderation")).to_be_checked()
            assert get_json(base, "/api/info")["moderation"] is True
            guest.set_input_files("#choose", files=[upload_file("green", 3)])
            green = guest.locator(".upload", has_text="green.jpg")
            expect(green.locator(".upload-status")).to_have_text(
                "Received! It will appear once the host has approved it.", timeout=TIMEOUT_MS)
            expect(admin.locator("#pending li")).to_have_count(1, timeout=TIMEOUT_MS)
            admin.locator("#pending li button", has_text="Approve").click()

            # ... and, approved, arrives on the display live, over the new connection.
            expect(green).to_have_attribute("data-state", "placed", timeout=TIMEOUT_MS)
            cells_now = wall_cells(base)
            assert set(cells_now) == {blue, green.get_attribute("data-id")}
            expect_display(display, cells_now.values())
            expect(admin.locator("#pending li")).to_have_count(0)
            assert errors == []
    finally:
        tv.close()
        phone.close()


# What the display holds, cell by cell: the photo id it drew there.
SHOWN_IDS = """() => Object.fromEntries([...window.mosaicistDisplay.wall.cells.values()]
  .filter((tile) => tile.image).map((tile) => [`${tile.row},${tile.col}`, tile.id]))"""


def settled_wall(base: str, quiet: float = 3.0, limit: float = 30.0) -> dict:
    """``/api/wall`` once its version has not changed for ``quiet`` seconds."""
    deadline = time.monotonic() + limit
    wall = get_json(base, "/api/wall")
    since = time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, "the wall kept changing"
        time.sleep(0.3)
        now = get_json(base, "/api/wall")
        if now["version"] != wall["version"]:
            wall, since = now, time.monotonic()
    return wall


def test_display_follows_photos_moving(browser, tmp_path):
    """Without --final the server moves photos when uploads pause; the display follows."""
    target = write_target(tmp_path / "target.png")
    rng = np.random.default_rng(11)
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 960, "height": 540})
    try:
        with live_server(tmp_path / "event", target=target, final=False) as server:
            base = server["base"]
            display = context.new_page()
            watch(display, errors, "display")
            display.goto(f"{base}/display")
            display.wait_for_function("() => window.mosaicistDisplay.version >= 0",
                                      timeout=TIMEOUT_MS)
            page_token = display.evaluate(
                "() => document.querySelector('meta[name=mosaicist-token]').content")
            # Photos of many colours, several per request, sent faster than they fit best.
            for batch in range(4):
                request = urllib.request.Request(
                    f"{base}/api/photos", method="POST",
                    headers={"X-Mosaicist-Token": page_token})
                colours = rng.integers(0, 256, (8, 3)).tolist()
                fields = [("photo", f"p{batch}-{index}.jpg", photo(tuple(rgb), batch * 8 + index))
                          for index, rgb in enumerate(colours)]
                body, content_type = multipart(fields)
                request.add_header("Content-Type", content_type)
                with urllib.request.urlopen(request, data=body, timeout=30) as answer:
                    assert answer.status == 201
            wall = settled_wall(base)
            want = {f"{tile['row']},{tile['col']}": tile["id"] for tile in wall["tiles"]}
            assert len(want) == 32
            display.wait_for_function(
                "([version, count]) => window.mosaicistDisplay.version === version"
                " && window.mosaicistDisplay.wall.waiting === 0"
                " && window.mosaicistDisplay.wall.filled === count",
                arg=[wall["version"], len(want)], timeout=TIMEOUT_MS)
            assert display.evaluate(SHOWN_IDS) == want
            expect_display(display, [tuple(map(int, key.split(","))) for key in want])
            assert errors == []
    finally:
        context.close()


def multipart(fields: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body of files: (field, file name, bytes) each."""
    boundary = "mosaicist-test-boundary"
    parts = []
    for field, name, data in fields:
        parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
                     f"filename=\"{name}\"\r\nContent-Type: image/jpeg\r\n\r\n".encode())
        parts.append(data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"



#: Photo names a guest's phone may send: markup, script, quotes and line breaks, as text.
HOSTILE_UPLOADS = ("<img src=x onerror=alert(1)>.jpg", "'><svg onload=alert(2)>.jpg",
                   "<script>alert(3)</script>.jpg", "javascript:alert(4)\u2028.jpg")


def test_hostile_photo_names_stay_text_for_guests_and_host(browser, tmp_path):
    """Names a guest sends show as text on the guest's page; the host's list stays whole."""
    from playwright.sync_api import expect

    target = write_target(tmp_path / "<img src=x onerror=alert(5)>.png")
    errors: list[str] = []
    dialogs: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    context.on("page", lambda page: page.on(
        "dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss())))
    try:
        with live_server(tmp_path / "event", target=target, extra=("--moderation",)) as server:
            base = server["base"]
            guest = context.new_page()
            watch(guest, errors, "guest")
            guest.goto(f"{base}/")
            colours = list(COLOURS.values()) * 2
            guest.set_input_files("#choose", files=[
                {"name": name, "mimeType": "image/jpeg", "buffer": photo(colours[seed], seed)}
                for seed, name in enumerate(HOSTILE_UPLOADS)])
            held = guest.locator(".upload", has_text="once the host has approved it")
            expect(held).to_have_count(len(HOSTILE_UPLOADS), timeout=TIMEOUT_MS)
            for name in HOSTILE_UPLOADS:
                expect(guest.locator(".upload", has_text=name)).to_have_count(1)

            admin = context.new_page()
            watch(admin, errors, "admin")
            admin.goto(f"{base}/admin#token={server['token']}")
            expect(admin.locator("#pending li")).to_have_count(len(HOSTILE_UPLOADS),
                                                               timeout=TIMEOUT_MS)
            # The server tells the host no guest's file name: nothing of them to show.
            metas = admin.locator("#pending li .photo-meta").all_text_contents()
            assert not any("alert" in meta for meta in metas), metas
            for page in (guest, admin):
                injected = "[onerror], [onload], script:not([src])"
                assert page.evaluate(
                    "(selector) => document.querySelectorAll(selector).length", injected) == 0
            assert dialogs == [] and errors == []
    finally:
        context.close()
