"""The live wall as its guests and host meet it when things go wrong.

The wall runs in a thread on 127.0.0.1 (a free port) with a small
generated target. A full disk while the host downloads the wall must read
as the server's trouble (507, said on its terminal), like an upload that
meets it, not as a bad request naming the laptop's folders; an export must
have no holes when the planner moves photos meanwhile; a display whose
tile failed to load (the server away for a moment) must draw it again
once it reconciles with the server, as it promises to heal itself; the
host's second click takes a photo off while guests keep sending; a start
that fails leaves no folder behind; completing an empty wall from its
photos says that there are none.
"""

from __future__ import annotations

import errno
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import gradient
from PIL import Image

from mosaicist.errors import MosaicistError
from mosaicist.live import Event, Live, make_live_app
from mosaicist.live._outputs import WallPictures
from mosaicist.render import MosaicRenderer
from mosaicist.web import WebServer, bind

COLS, ROWS = 4, 3
SETTINGS = {"tile_px": 16, "match_px": 8}
TIMEOUT_MS = 10_000

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def photo(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.integers(0, 256, 3) + rng.normal(0, 20, (40, 60, 3)), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


class Wall:
    """A wall served in a thread, with a client holding the admin token."""

    def __init__(self, folder: Path, *, final: bool = True, planner: bool = True) -> None:
        target = folder.parent / "target.png"
        Image.fromarray(gradient(80, 60)).save(target)
        self.event = Event.open(folder, target=target, grid=(COLS, ROWS),
                                settings=dict(SETTINGS), final=final)
        self.live = Live(self.event, rate=0)
        listener = bind("127.0.0.1", 0)
        port = listener.getsockname()[1]
        self.server = WebServer(make_live_app(self.live, host="127.0.0.1", port=port),
                                listener, on_stop=self.live.begin_stop).start()
        if planner:
            self.event.start()
        self.base = f"http://127.0.0.1:{port}"
        self.host = httpx.Client(base_url=self.base, timeout=30, headers={
            "Authorization": f"Bearer {self.event.admin_token}"})

    def upload(self, seed: int) -> dict:
        answer = self.host.post("/api/photos", files={"photo": (f"{seed}.jpg", photo(seed))})
        assert answer.status_code == 201, answer.text
        return answer.json()

    def close(self) -> None:
        self.host.close()
        self.server.stop()
        self.live.close()


@pytest.fixture
def wall(tmp_path) -> Iterator[Wall]:
    made = Wall(tmp_path / "event")
    yield made
    made.close()


@pytest.mark.parametrize("kind", ["png", "tiff", "dzi"])
def test_an_export_on_a_full_disk_is_the_servers_trouble(wall, monkeypatch, capfd, kind):
    wall.upload(1)

    def full(self, path, *args, **kwargs):
        # As the writers do: the OSError becomes a one-line error naming their file.
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as error:
            raise MosaicistError(f"{path}: cannot write output: {error.strerror}") from None

    monkeypatch.setattr(MosaicRenderer, "write", full)
    answer = wall.host.get("/api/admin/export", params={"format": kind})
    assert answer.status_code == 507, answer.text
    assert answer.json() == {"error": "the server's disk is full"}
    assert str(wall.event.folder) not in answer.text
    # Said on the terminal of whoever runs the wall, once.
    logged = capfd.readouterr().err
    assert logged.count("GET /api/admin/export failed") == 1, logged
    assert "Traceback" not in logged
    assert not [path for path in wall.event.exports_folder.iterdir()]

    # Any other failure to write is the server's too: 500, not "bad request".
    def broken(self, path, *args, **kwargs):
        raise MosaicistError(f"{path}: cannot write output: Input/output error")

    monkeypatch.setattr(MosaicRenderer, "write", broken)
    answer = wall.host.get("/api/admin/export", params={"format": kind})
    assert answer.status_code == 500, answer.text
    assert answer.json()["error"].startswith(f"the {kind} export could not be written")

    monkeypatch.undo()
    answer = wall.host.get("/api/admin/export", params={"format": kind})
    assert answer.status_code == 200 and answer.content


# The cells of the display's canvas whose middle pixel is drawn.
DRAWN_CELLS = """([cols, rows]) => {
  const canvas = document.getElementById("tiles");
  const context = canvas.getContext("2d");
  const drawn = [];
  for (let row = 0; row < rows; row += 1) {
    for (let col = 0; col < cols; col += 1) {
      const x = Math.floor((col + 0.5) * canvas.width / cols);
      const y = Math.floor((row + 0.5) * canvas.height / rows);
      if (context.getImageData(x, y, 1, 1).data[3] === 255) drawn.push([row, col]);
    }
  }
  return drawn;
}"""


def test_a_tile_that_failed_to_load_is_drawn_at_the_next_reconciliation(wall, browser):
    lost, kept = wall.upload(1), wall.upload(2)
    context = browser.new_context(viewport={"width": 640, "height": 480},
                                  reduced_motion="reduce")
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        # The server is away just when the display asks for this one tile.
        lost_tile = f"**/api/tiles/{lost['id']}.jpg*"
        page.route(lost_tile, lambda route: route.abort("connectionrefused"))
        page.goto(f"{wall.base}/display")
        page.wait_for_function(f"""([cols, rows]) => ({DRAWN_CELLS})([cols, rows])
                                   .some(([row, col]) => row === {kept['row']}
                                                         && col === {kept['col']})""",
                               arg=[COLS, ROWS], timeout=TIMEOUT_MS)
        page.wait_for_function("() => window.mosaicistDisplay.wall.waiting === 0",
                               timeout=TIMEOUT_MS)
        assert [lost["row"], lost["col"]] not in page.evaluate(DRAWN_CELLS, [COLS, ROWS])
        # It is back: the display's reconciliation (on reconnecting, once a minute) must
        # draw what it could not, not take the failed tile for one it shows.
        page.unroute(lost_tile)
        page.evaluate("() => window.mosaicistDisplay.sync()")
        page.wait_for_function(f"""([cols, rows]) => ({DRAWN_CELLS})([cols, rows]).length
                                   === 2""", arg=[COLS, ROWS], timeout=TIMEOUT_MS)
        assert sorted(map(tuple, page.evaluate(DRAWN_CELLS, [COLS, ROWS]))) == sorted(
            [(lost["row"], lost["col"]), (kept["row"], kept["col"])])
        assert errors == []
    finally:
        context.close()


def _wait_for_placed(page, count: int) -> None:
    """Wait until the admin page counts ``count`` photos on the wall."""
    page.wait_for_function("(count) => document.querySelector('[data-count=placed]')"
                           "?.textContent === count", arg=str(count), timeout=TIMEOUT_MS)


def _pick(page, photo: dict) -> None:
    """Pick the cell of an uploaded ``photo`` in the admin page's form."""
    page.fill("#pick-row", str(photo["row"] + 1))
    page.fill("#pick-col", str(photo["col"] + 1))
    page.press("#pick-col", "Enter")


@contextmanager
def _admin_page(wall, browser, route=None) -> Iterator[tuple[Any, list[str]]]:
    """The wall's admin page, open, and the script errors it raises meanwhile.

    ``route``, when given, handles the page's requests for the wall's snapshot.
    """
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        if route is not None:
            page.route("**/api/wall*", route)
        page.goto(f"{wall.base}/admin#token={wall.event.admin_token}")
        yield page, errors
    finally:
        context.close()


def test_the_second_click_takes_the_photo_off_while_guests_keep_sending(wall, browser):
    first = wall.upload(1)
    with _admin_page(wall, browser) as (page, errors):
        _wait_for_placed(page, 1)
        _pick(page, first)
        remove = page.locator("#remove")
        remove.click()
        assert remove.text_content() == "Click again to take it off"
        # A guest's photo lands between the host's two clicks; the page refreshes.
        wall.upload(2)
        _wait_for_placed(page, 2)
        page.wait_for_timeout(300)  # the wall's part of the refresh
        assert remove.text_content() == "Click again to take it off"
        remove.click()
        _wait_for_placed(page, 1)
        assert wall.host.get(f"/api/photos/{first['id']}").json()["status"] == "removed"
        assert errors == []


def test_a_cell_picked_before_the_wall_arrives_is_shown_with_it(wall, browser):
    # The counts come before the wall's snapshot (a second request): a host who picks a
    # cell in between had the pick dropped (the grid was not known yet), and the photo's
    # button never showed (a test that picked right after the counts timed out under
    # load). The first snapshot fails here, so the pick surely comes before one arrives.
    first = wall.upload(1)
    snapshots = []

    def first_fails(route):
        snapshots.append(route.request.url)
        if len(snapshots) == 1:
            route.abort()
        else:
            route.continue_()

    with _admin_page(wall, browser, first_fails) as (page, errors):
        _wait_for_placed(page, 1)
        assert len(snapshots) == 1
        _pick(page, first)
        remove = page.locator("#remove")
        remove.wait_for(state="visible", timeout=TIMEOUT_MS)
        assert len(snapshots) >= 2
        assert remove.get_attribute("data-id") == first["id"]
        # A pick outside the grid once it is known shows nothing.
        page.fill("#pick-row", str(10_000))
        page.press("#pick-row", "Enter")
        assert page.locator("#cell-text").text_content().startswith(
            f"Row {first['row'] + 1:,}, column {first['col'] + 1:,}")
        assert errors == []


def test_a_failed_start_leaves_no_folder_behind(tmp_path):
    not_a_picture = tmp_path / "couple.png"
    not_a_picture.write_text("not a picture")
    # Resuming with a misspelt --event; a new wall whose target cannot be read or is missing.
    for folder, target, grid in [(tmp_path / "wedidng", None, None),
                                 (tmp_path / "new" / "wedding", not_a_picture, (4, 3)),
                                 (tmp_path / "gone", tmp_path / "missing.png", (4, 3))]:
        with pytest.raises(MosaicistError):
            Event.open(folder, target=target, grid=grid, settings=dict(SETTINGS))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["couple.png"]
    # A wall that exists is left as it was by a start that fails on it.
    made = Wall(tmp_path / "wedding")
    made.upload(1)
    made.close()
    before = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*"))
    with pytest.raises(MosaicistError, match="grid"):
        Event.open(tmp_path / "wedding", grid=(5, 5))
    assert sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*")) == before
    Event.open(tmp_path / "wedding").close()


def test_completing_an_empty_wall_from_its_photos_says_there_are_none(wall):
    answer = wall.host.post("/api/admin/complete", json={"source": "received", "max_uses": 1000})
    assert answer.status_code == 409
    assert answer.json()["error"].startswith("no guest's photo is on the wall yet to repeat")
    assert "max_uses" not in answer.json()["error"]
    wall.upload(1)
    answer = wall.host.post("/api/admin/complete", json={"source": "received", "max_uses": 1000})
    assert answer.status_code == 200, answer.text
    assert answer.json()["filled"] == COLS * ROWS - 1


def test_an_export_has_no_holes_when_photos_move_meanwhile(tmp_path, monkeypatch):
    # Not final: photos move to better cells once uploads pause, as the host downloads.
    wall = Wall(tmp_path / "event", final=False, planner=False)
    try:
        first, second = wall.upload(1), wall.upload(2)
        event = wall.event
        numbers = {photo.id: photo.number for photo in event.placed()}
        cell = {answer["id"]: answer["row"] * COLS + answer["col"] for answer in (first, second)}
        swap = {numbers[first["id"]]: cell[second["id"]],
                numbers[second["id"]]: cell[first["id"]]}
        moved: list[int] = []
        fetch = WallPictures.fetch

        def planner_meanwhile(self, cells):
            # The planner's moves land while the export reads the tiles.
            if not moved:
                moved.append(event.apply_moves(swap, event.changes))
            return fetch(self, cells)

        monkeypatch.setattr(WallPictures, "fetch", planner_meanwhile)
        answer = wall.host.get("/api/admin/export", params={"format": "png"})
        assert answer.status_code == 200, answer.text
        assert moved == [0]
        exported = np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB"))
        tile_h, tile_w = exported.shape[0] // ROWS, exported.shape[1] // COLS
        for tile in wall.host.get("/api/wall").json()["tiles"]:
            shown = np.asarray(Image.open(io.BytesIO(
                wall.host.get(f"/api/tiles/{tile['id']}.jpg").content)).convert("RGB"))
            top, left = tile["row"] * tile_h, tile["col"] * tile_w
            assert np.array_equal(exported[top:top + tile_h, left:left + tile_w], shown)
        # Once the export is written, the moves go through.
        assert event.apply_moves(swap, event.changes) == 2
    finally:
        wall.close()
