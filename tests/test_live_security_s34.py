"""The live wall's server keeps answering, and serves only what it should (session 34).

Each test serves a small wall (6 x 4 cells of 16 px) on a free 127.0.0.1
port in a thread, and stops it when done.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import gradient
from PIL import Image

from mosaicist.live import Event, Live, make_live_app
from mosaicist.web import WebServer, bind

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def jpeg_bytes(width: int = 60, height: int = 40) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(gradient(width, height)).save(buffer, "JPEG")
    return buffer.getvalue()


@contextlib.contextmanager
def served_wall(folder: Path) -> Iterator[tuple[httpx.Client, Event]]:
    """A wall served on 127.0.0.1 in a thread, and a guest's client (the pages' token)."""
    target = folder.parent / "target.png"
    Image.fromarray(gradient(90, 60)).save(target)
    event = Event.open(folder, target=target, grid=(6, 4),
                       settings={"tile_px": 16, "match_px": 8})
    live = Live(event, rate=0)
    listener = bind("127.0.0.1", 0)
    server = WebServer(make_live_app(live, host="127.0.0.1", port=listener.getsockname()[1]),
                       listener, on_stop=live.begin_stop).start()
    event.start()
    guest = httpx.Client(base_url=server.url, timeout=30,
                         headers={"X-Mosaicist-Token": event.page_token})
    try:
        yield guest, event
    finally:
        guest.close()
        server.stop()
        live.close()


def test_a_tile_asked_for_while_the_wall_is_busy_does_not_stop_the_server(tmp_path,
                                                                          monkeypatch):
    # The tile route waited for the event's lock on the server's event loop. A completion
    # from the fallback library holds that lock while it matches the whole library and
    # draws every empty cell (seconds, more with a large library): one tile asked for
    # meanwhile (the display follows every fill) froze every answer of the server, the
    # display's stream, guests' uploads and the host's page included.
    with served_wall(tmp_path / "event") as (guest, event):
        placed = guest.post("/api/photos", files={"photo": ("a.jpg", jpeg_bytes(),
                                                            "image/jpeg")})
        assert placed.status_code == 201, placed.text
        photo_id = placed.json()["id"]
        asked, release = threading.Event(), threading.Event()
        looked_up = event.photo

        def photo(wanted: str):  # the tile route's first step, just before the lock
            asked.set()
            return looked_up(wanted)

        monkeypatch.setattr(event, "photo", photo)
        answers: list[int] = []
        held = threading.Event()

        def busy_wall() -> None:  # as a completion from the library holds the lock
            with event.lock:
                held.set()
                release.wait()

        holder = threading.Thread(target=busy_wall)
        tile = threading.Thread(target=lambda: answers.append(
            guest.get(f"/api/tiles/{photo_id}.jpg").status_code))
        holder.start()
        try:
            assert held.wait(10)
            tile.start()
            assert asked.wait(10)
            time.sleep(0.2)  # the tile's request reaches the lock
            info = guest.get("/api/info", timeout=5)
            assert info.status_code == 200
            assert not answers  # the tile still waits for the wall
        finally:
            release.set()
            holder.join()
            if tile.ident is not None:  # started
                tile.join()
        assert answers == [200]
