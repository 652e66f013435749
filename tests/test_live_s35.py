"""The live wall under load: completions that leave the wall free meanwhile, stay valid, and
hold little memory; and what a guest's requests can make the wall do (session 35)."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from conftest import gradient, make_jpeg_photos
from PIL import Image
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import mosaicist.match._assign as assign_module
import mosaicist.paths as paths_module
from mosaicist.live import Event, Live
from mosaicist.live import _event as live_event
from mosaicist.render import OriginalPictures
from mosaicist.web import make_app

GRID = (6, 4)
SETTINGS = {"tile_px": 16, "match_px": 8}
#: Seconds a step that must not wait for the completion is given (it takes milliseconds).
PROMPT = 10


def photo_bytes(seed: int, size: tuple[int, int] = (60, 40)) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.integers(0, 256, 3) + rng.normal(0, 20, (size[1], size[0], 3)),
                     0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def wall(tmp_path) -> Iterator[tuple[Event, Live]]:
    """An event of 6 x 4 cells (its planner not started) with a fallback library of 30."""
    target = tmp_path / "target.png"
    Image.fromarray(gradient(90, 60)).save(target)
    library = make_jpeg_photos(tmp_path / "library", 30)
    event = Event.open(tmp_path / "event", target=target, grid=GRID, settings=dict(SETTINGS))
    live = Live(event, rate=0, fallback=str(library))
    try:
        yield event, live
    finally:
        live.close()


def upload(event: Event, seed: int) -> dict:
    return event.receive(event.prepare(photo_bytes(seed), f"{seed}.jpg"))


@pytest.fixture
def matching(monkeypatch) -> tuple[threading.Event, threading.Event]:
    """``(started, go)``: a completion's match signals ``started``, then waits for ``go``."""
    started, go = threading.Event(), threading.Event()
    original = assign_module.assign_tiles

    def held(*arguments, **keywords):
        started.set()
        assert go.wait(30)
        return original(*arguments, **keywords)

    monkeypatch.setattr(assign_module, "assign_tiles", held)
    return started, go


def in_background(work: Callable[[], object]) -> tuple[threading.Thread, list]:
    """``work()`` started on a thread; the list gets its result or its exception."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def check_valid(event: Event) -> list[live_event.Photo]:
    """The placed photos, after checking the wall holds each in one cell, one per cell, as
    the placer, the files and the stored state say."""
    placed = event.placed()
    cells = [photo.cell for photo in placed]
    assert len(cells) == len(set(cells))
    for photo in placed:
        assert event.placer.cell_of(photo.number) == photo.cell
        assert event.tile_path(photo).is_file()
    assert int((event.placer.cell_photo >= 0).sum()) == len(placed)
    # Every tile file is a placed photo's: a dropped fill left none behind.
    assert sorted(path.name for path in event.tiles_folder.iterdir()) == sorted(
        event.tile_path(photo).name for photo in placed)
    return placed


def test_an_upload_is_placed_while_a_library_completion_matches(wall, matching, monkeypatch):
    # The completion held the event's lock through its match and its drawing (a minute and
    # more for a wall of thousands of cells): every guest's upload, and every page that
    # needs the lock, waited for it.
    event, live = wall
    started, go = matching
    fetched: list[int] = []
    fetch = OriginalPictures.fetch

    def counted_fetch(self, cells):
        fetched.append(len(cells))
        return fetch(self, cells)

    monkeypatch.setattr(OriginalPictures, "fetch", counted_fetch)
    monkeypatch.setattr(live_event, "FILL_BLOCK", 5, raising=False)
    first = upload(event, 1)
    library = live.library()
    completion, filled = in_background(lambda: event.complete_from_library(library, 1))
    try:
        assert started.wait(PROMPT)
        receiver, answers = in_background(lambda: upload(event, 2))
        receiver.join(PROMPT)
        assert answers and answers[0]["status"] == "placed"  # not waiting for the completion
        assert event.wall()["tiles"]  # nor the wall's pages
    finally:
        go.set()
        completion.join(60)
        if "receiver" in locals():
            receiver.join(60)
    assert isinstance(filled[0], int)
    # The cell the upload took (empty when the completion began) kept its photo.
    mine = event.photo(answers[0]["id"])
    assert mine.status == "placed" and (mine.cell // GRID[0], mine.cell % GRID[0]) == (
        answers[0]["row"], answers[0]["col"])
    assert event.photo(first["id"]).status == "placed"
    placed = check_valid(event)
    assert len(placed) == GRID[0] * GRID[1] and filled[0] == GRID[0] * GRID[1] - 2
    # Each library photo within its limit (1), and no picture of a dropped fill kept.
    fills = [photo for photo in placed if photo.origin == "library"]
    assert max(Counter(photo.source for photo in fills).values()) == 1
    assert sorted(path.stem for path in event.photos_folder.iterdir()) == sorted(
        photo.id for photo in placed)
    # Drawn a few pictures at a time (all at once: 200 KB a cell, gigabytes for a large wall).
    assert fetched and max(fetched) <= 5 and sum(fetched) == GRID[0] * GRID[1] - 1
    # As stored: the event opened again has the same wall.
    shown = event.wall()
    folder = event.folder
    live.close()
    again = Event.open(folder)
    try:
        assert again.wall() == shown
    finally:
        again.close()


def test_a_photo_removed_while_its_repeats_are_matched_is_not_repeated(wall, matching):
    event, _ = wall
    started, go = matching
    placed = [upload(event, seed) for seed in range(1, 9)]
    completion, filled = in_background(lambda: event.complete_from_received(4))
    try:
        assert started.wait(PROMPT)
        remover, removed = in_background(lambda: event.remove(placed[0]["id"]))
        remover.join(PROMPT)
        assert removed and removed[0]["status"] == "removed"
        receiver, answers = in_background(lambda: upload(event, 20))
        receiver.join(PROMPT)
        assert answers and answers[0]["status"] == "placed"
    finally:
        go.set()
        completion.join(60)
    assert isinstance(filled[0], int)
    shown = check_valid(event)
    repeats = [photo for photo in shown if photo.origin == "repeat"]
    assert len(repeats) == filled[0] > 0
    assert all(photo.source != placed[0]["id"] for photo in shown)
    sources = {photo.id for photo in shown if photo.origin == "guest"}
    assert {photo.source for photo in repeats} <= sources
    # At most 4 uses of one photo, its own cell included.
    assert max(Counter(photo.source for photo in repeats).values()) <= 3
    # The 7 photos left, the upload and the repeats the answer counts: the cells of the
    # removed photo's repeats, and its own, are left for the host to complete again.
    assert len(shown) == 7 + 1 + filled[0]
    assert event.counts()["empty"] == GRID[0] * GRID[1] - len(shown)


def test_one_completion_at_a_time_and_no_moves_meanwhile(wall, matching):
    event, live = wall
    started, go = matching
    for seed in range(1, 9):
        upload(event, seed)
    completion, filled = in_background(lambda: event.complete_from_received(4))
    try:
        assert started.wait(PROMPT)
        with pytest.raises(live_event.Conflict, match="being completed already"):
            event.complete_from_library(live.library(), 1)
        # A move into a cell the completion is filling would leave the cell it left empty.
        some = event.placed()[0]
        free = int(event.placer.free[0])
        assert event.apply_moves({some.number: free}, event.changes) == 0
    finally:
        go.set()
        completion.join(60)
    assert filled == [GRID[0] * GRID[1] - 8]
    check_valid(event)


def test_a_small_library_completes_a_wall_its_nearest_alone_cannot_fill(tmp_path, monkeypatch):
    # Every cell of a grey wall lists the same few grey photos first: with each used at
    # most twice they cannot fill every cell, but the library can. The completion was
    # refused ("cells have no allowed tile among their 4 nearest; relax max_uses").
    monkeypatch.setattr(live_event, "COMPLETION_CANDIDATES", 4)
    target = tmp_path / "grey.png"
    Image.fromarray(np.full((60, 80, 3), 128, np.uint8)).save(target)
    library = tmp_path / "library"
    library.mkdir()
    rng = np.random.default_rng(5)
    colours = [(120, 128, 130), (130, 126, 128), (125, 131, 124), (128, 128, 128),
               (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    for index, colour in enumerate(colours):
        pixels = np.clip(np.array(colour) + rng.normal(0, 3, (20, 20, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(library / f"l{index}.png")
    event = Event.open(tmp_path / "event", target=target, grid=(4, 3), settings=dict(SETTINGS))
    live = Live(event, rate=0, fallback=str(library))
    try:
        assert event.complete_from_library(live.library(), 2) == 12
        placed = check_valid(event)
        uses = Counter(photo.source for photo in placed)
        assert len(placed) == 12 and max(uses.values()) == 2
        # The grey photos are all used as far as the limit allows.
        assert sum(uses[f"l{index}.png"] for index in range(4)) == 8
    finally:
        live.close()


def test_writing_a_tile_does_not_scan_the_event_folders(wall, monkeypatch):
    # Each tile and photo written swept its folder of dead writers' temporaries first: a
    # scan of up to 40,000 tiles for every upload, under the event's lock. Opening the
    # event already removes what in those folders is not its own.
    event, _ = wall
    scans: list[object] = []
    sweep = paths_module.remove_stale_temporaries

    def counted(final):
        scans.append(final)
        return sweep(final)

    monkeypatch.setattr(paths_module, "remove_stale_temporaries", counted)
    answer = upload(event, 3)
    assert answer["status"] == "placed" and scans == []
    # A dead writer's leftover there is still removed, when the event is opened again.
    leftover = event.tiles_folder / ".x.jpg.999999999-abcdefgh.part.jpg"
    leftover.write_bytes(b"half a tile")
    folder = event.folder
    event.close()
    again = Event.open(folder)
    try:
        assert not leftover.exists()
        assert again.photo(answer["id"]).status == "placed"
    finally:
        again.close()


def test_an_upload_is_placed_while_moved_tiles_are_drawn(wall, monkeypatch):
    # A re-optimisation drew every moved photo's tile (its stored photo decoded again, tens
    # of milliseconds for a phone's) under the event's lock: 133 moves held it 6 seconds.
    event, _ = wall
    first, second = upload(event, 1), upload(event, 2)
    mover = event.photo(first["id"])
    free = int(event.placer.free[0])
    moves = {mover.number: free}
    drawing, go = threading.Event(), threading.Event()
    untinted = event._untinted

    def held(photo, shown_by=None):
        drawing.set()
        assert go.wait(30)
        return untinted(photo, shown_by=shown_by)

    monkeypatch.setattr(event, "_untinted", held)
    mover_thread, moved = in_background(lambda: event.apply_moves(moves, event.changes))
    try:
        assert drawing.wait(PROMPT)
        receiver, answers = in_background(lambda: upload(event, 3))
        receiver.join(PROMPT)
        assert answers and answers[0]["status"] == "placed"
    finally:
        go.set()
        mover_thread.join(60)
    # The wall changed while they were drawn: the moves are stale, and their tile is gone.
    assert moved == [0]
    assert event.photo(first["id"]).cell == mover.cell
    check_valid(event)
    # Planned again on the wall as it is, they are made.
    free = int(event.placer.free[0])
    assert event.apply_moves({mover.number: free}, event.changes) == 1
    assert event.photo(first["id"]).cell == free
    assert event.photo(second["id"]).status == "placed"
    check_valid(event)
    shown = event.wall()
    folder = event.folder
    event.close()
    again = Event.open(folder)
    try:
        assert again.wall() == shown
    finally:
        again.close()


def scans_of(data: bytes) -> list[bytes]:
    """The scans of a JPEG (each SOS segment with its entropy-coded data)."""
    found, position = [], 0
    while (start := data.find(b"\xff\xda", position)) >= 0:
        end = start + 2
        while True:  # to the next marker that is neither stuffing (FF 00) nor a restart
            end = data.index(b"\xff", end)
            if data[end + 1] != 0 and not 0xD0 <= data[end + 1] <= 0xD7:
                break
            end += 2
        found.append(data[start:end])
        position = end
    return found


def test_a_jpeg_of_thousands_of_scans_is_refused_before_it_is_decoded(wall):
    # Each scan of a progressive JPEG is a pass over all its pixels: a crafted file of many
    # tiny ones (23 bytes each) held a decoder 16 seconds for 670 KB, and a guest's few
    # photos of 40 MB stopped every decoder of the wall for hours.
    event, _ = wall
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 130, 140)).save(buffer, "JPEG", progressive=True)
    normal = buffer.getvalue()
    assert 1 < len(scans_of(normal)) <= 12
    crafted = normal[:-2] + min(scans_of(normal), key=len) * 2000 + b"\xff\xd9"
    with pytest.raises(live_event.MosaicistError,
                       match=r"^many\.jpg: this JPEG is stored in 2,0\d\d passes .* as the "
                             r"camera saved it$"):
        event.prepare(crafted, "many.jpg")
    assert list(event.photos_folder.iterdir()) == []
    # A progressive photo as cameras and browsers write it is taken.
    assert event.receive(event.prepare(normal, "fine.jpg"))["status"] == "placed"


def asgi_get(app, target: bytes) -> tuple[int, bytes]:
    """``GET target`` straight into an ASGI app; its status and body."""
    path, _, query = target.partition(b"?")
    scope = {"type": "http", "method": "GET", "path": path.decode(), "raw_path": path,
             "query_string": query, "headers": [(b"host", b"127.0.0.1:8000")],
             "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 8000),
             "client": ("127.0.0.1", 50000), "root_path": ""}
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(message.get("body", b"") for message in sent[1:])


def test_a_long_query_string_is_refused_as_a_long_path_is():
    # The guard capped the path at 2 KB and let any query string through, up to the server's
    # head limit (128 KB), to the app.
    async def width(request: Request) -> Response:
        return JSONResponse({"width": request.query_params.get("width")})

    app = make_app([Route("/api/wall.jpg", width)], host="127.0.0.1", port=8000, name="live")
    status, body = asgi_get(app, b"/api/wall.jpg?width=640&at=" + b"1" * 8000)
    assert (status, json.loads(body)) == (200, {"width": "640"})
    status, body = asgi_get(app, b"/api/wall.jpg?width=640&at=" + b"1" * 20_000)
    assert (status, json.loads(body)) == (
        414, {"error": "the address is longer than this server accepts"})


def test_the_studio_refuses_a_jpeg_of_thousands_of_scans_as_the_wall_does():
    # The studio's uploads (targets) had no such limit: one crafted file held its decoder.
    from mosaicist.studio._uploads import decode_upload

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 130, 140)).save(buffer, "JPEG", progressive=True)
    normal = buffer.getvalue()
    crafted = normal[:-2] + min(scans_of(normal), key=len) * 2000 + b"\xff\xd9"
    with pytest.raises(live_event.MosaicistError, match=r"^many\.jpg: this JPEG is stored in "):
        decode_upload(crafted, "many.jpg")
    assert decode_upload(normal, "fine.jpg")[0].size == (64, 48)


@pytest.mark.skipif(__import__("mosaicist.imaging").imaging.simplejpeg is None,
                    reason="libjpeg-turbo's strict decode (fast)")
def test_an_upload_whose_jpeg_data_end_early_is_refused_not_stored_grey():
    """A header claiming 9,000 x 9,000 pixels over 32 x 32 was stored as 81 megapixels."""
    from mosaicist.studio._uploads import decode_upload

    buffer = io.BytesIO()
    Image.fromarray(gradient(480, 320)).save(buffer, "JPEG", quality=90)
    whole = buffer.getvalue()
    cut = whole[:len(whole) * 2 // 3] + b"\xff\xd9"  # in the scan's data, its marker back
    with Image.open(io.BytesIO(cut)) as image:
        image.load()  # Pillow reads it, every block past the cut grey
    with pytest.raises(live_event.MosaicistError, match=r"^cut\.jpg: the picture cannot be "
                                                        r"read: its image data end before"):
        decode_upload(cut, "cut.jpg")
    assert decode_upload(whole, "whole.jpg")[0].size == (480, 320)
