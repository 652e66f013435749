"""The live wall as an event's host and guests use it: findings of session 33's hostile tests.

Each wall runs in a thread on 127.0.0.1 (a free port) with a small generated
target; guests and the host talk to it over HTTP, as their pages do.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import gradient
from PIL import Image

from mosaicist.errors import MosaicistError
from mosaicist.live import Event, Live, make_live_app
from mosaicist.web import WebServer, bind

GRID = (4, 3)
SETTINGS = {"tile_px": 16, "match_px": 8}


def photo_bytes(seed: int, size: tuple[int, int] = (48, 32)) -> bytes:
    """A small JPEG of one noisy colour."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, 3)
    pixels = np.clip(base + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


class Wall:
    """A wall served on 127.0.0.1 in a thread, with clients for guests and the host."""

    def __init__(self, folder: Path, target: Path, *, guest_url: str | None = None) -> None:
        self.event = Event.open(folder, target=target, grid=GRID, settings=dict(SETTINGS))
        self.live = Live(self.event, rate=0, guest_url=guest_url)
        listener = bind("127.0.0.1", 0)
        self.port = listener.getsockname()[1]
        self.server = WebServer(make_live_app(self.live, host="127.0.0.1", port=self.port),
                                listener, on_stop=self.live.begin_stop).start()
        self.event.start()
        base = f"http://127.0.0.1:{self.port}"
        self.guest = httpx.Client(base_url=base, timeout=30,
                                  headers={"X-Mosaicist-Token": self.event.page_token})
        self.host = httpx.Client(base_url=base, timeout=60, headers={
            "Authorization": f"Bearer {self.event.admin_token}"})

    def upload(self, data: bytes, name: str = "me.jpg") -> httpx.Response:
        return self.guest.post("/api/photos", files=[("photo", (name, data, "image/jpeg"))])

    def close(self) -> None:
        self.guest.close()
        self.host.close()
        self.server.stop()
        self.live.close()


@pytest.fixture(scope="module")
def target(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("target") / "party.png"
    Image.fromarray(gradient(80, 60)).save(path)
    return path


@pytest.fixture
def make_wall(tmp_path, target) -> Iterator:
    walls: list[Wall] = []

    def make(**args: object) -> Wall:
        wall = Wall(tmp_path / f"event{len(walls)}", target, **args)  # type: ignore[arg-type]
        walls.append(wall)
        return wall

    yield make
    for wall in walls:
        wall.close()


def test_the_display_is_told_the_guests_link_its_qr_code_has(make_wall):
    # The display shows the guests' link in words beside its QR code, from /api/info's
    # guest_url. /api/info had none: with --url (or --host 0.0.0.0), a display opened on
    # the laptop as 127.0.0.1 wrote "127.0.0.1:PORT" under a QR code of the real link.
    wall = make_wall(guest_url="http://wall.local:8000/")
    info = wall.guest.get("/api/info").json()
    assert info["guest_url"] == "http://wall.local:8000/"
    # Without --url the page's own address is the link, as the QR code's is.
    assert make_wall().guest.get("/api/info").json()["guest_url"] is None


def test_a_new_event_is_told_which_of_target_and_grid_it_lacks(tmp_path, target):
    # "mosaicist live party.jpg" without --grid said the new event "needs its TARGET and
    # --grid": the host looked for what was wrong with the target given.
    with pytest.raises(MosaicistError) as no_grid:
        Event.open(tmp_path / "new", target=target)
    assert "needs --grid COLSxROWS" in str(no_grid.value)
    assert "TARGET" not in str(no_grid.value)
    with pytest.raises(MosaicistError) as no_target:
        Event.open(tmp_path / "new", grid=GRID)
    assert str(no_target.value).endswith("a new event needs its TARGET")
    with pytest.raises(MosaicistError, match="needs its TARGET and --grid"):
        Event.open(tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_completing_from_too_few_photos_says_how_many_uses_it_takes(make_wall):
    # The host's page asks for the "most uses of one photo"; the refusal said "11 empty
    # cells need more repeats than 1 photos used at most 2 times allow; raise max_uses",
    # a count that disagreed with its number and no word of how far to raise it.
    wall = make_wall()
    assert wall.upload(photo_bytes(1)).status_code == 201
    refused = wall.host.post("/api/admin/complete", json={"source": "received", "max_uses": 2})
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert "filling 11 empty cells from 1 photo on the wall takes at least 12 uses" in error
    assert "1 photos" not in error
    # The number said is enough.
    done = wall.host.post("/api/admin/complete", json={"source": "received", "max_uses": 12})
    assert done.status_code == 200 and done.json()["filled"] == 11


def test_a_wall_too_large_for_memory_is_refused_before_its_target_is_cut(tmp_path, target,
                                                                         monkeypatch):
    """200 x 200 cells at 1,024 px took all the memory there was before a word."""
    from mosaicist.live import _event

    def never(*args, **kwargs):
        raise AssertionError("the target was cut")

    monkeypatch.setattr(_event, "cut_target", never)
    with pytest.raises(MosaicistError) as error:
        Event.open(tmp_path / "new", target=target, grid=(200, 200), settings={"tile_px": 1024})
    message = str(error.value)
    assert "41,943 megapixels" in message and "--grid" in message and "--tile-px" in message
    assert not (tmp_path / "new").exists()


def test_the_grid_s_help_states_the_wall_s_limits():
    """Written out in the command line (it loads no NumPy for --help): kept to the limits."""
    from click.testing import CliRunner

    from mosaicist.cli import main
    from mosaicist.live import _event

    shown = " ".join(CliRunner().invoke(main, ["live", "--help"]).output.split())
    assert (f"At most {_event.MAX_GRID_SIDE:,} a side and {_event.MAX_CELLS:,} cells, and "
            f"{_event.MAX_WALL_PIXELS // 1_000_000:,} megapixels at --tile-px.") in shown
