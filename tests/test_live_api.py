"""The live wall's HTTP API on a real server: uploads good and bad, guests, the host, outputs."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import socket
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import bomb_png, gradient
from PIL import Image

from mosaicist.errors import MosaicistError, OptionError
from mosaicist.live import Event, Live, make_live_app
from mosaicist.live import _app as live_app
from mosaicist.live import _event as live_event
from mosaicist.web import WebServer, bind

GRID = (6, 4)
SETTINGS = {"tile_px": 16, "match_px": 8}


def photo_bytes(seed: int, size: tuple[int, int] = (60, 40), kind: str = "JPEG",
                **save: object) -> bytes:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, 3)
    pixels = np.clip(base + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, kind, **save)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def target(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("target") / "couple.png"
    Image.fromarray(gradient(90, 60)).save(path)
    return path


class Wall:
    """A wall served on 127.0.0.1 in a thread, and clients for guests and the host."""

    def __init__(self, folder: Path, target: Path, *, grid=GRID, rate: float = 0,
                 fallback: str | None = None, **open_args: object) -> None:
        self.event = Event.open(folder, target=target, grid=grid, settings=dict(SETTINGS),
                                **open_args)
        self.live = Live(self.event, rate=rate, fallback=fallback)
        listener = bind("127.0.0.1", 0)
        self.port = listener.getsockname()[1]
        self.server = WebServer(make_live_app(self.live, host="127.0.0.1", port=self.port),
                                listener, on_stop=self.live.begin_stop).start()
        self.event.start()
        self.base = f"http://127.0.0.1:{self.port}"
        self.guest = httpx.Client(base_url=self.base, timeout=30,
                                  headers={"X-Mosaicist-Token": self.event.page_token})
        self.host = httpx.Client(base_url=self.base, timeout=60, headers={
            "Authorization": f"Bearer {self.event.admin_token}"})
        self.anyone = httpx.Client(base_url=self.base, timeout=30)

    def upload(self, *files: tuple[str, bytes]) -> httpx.Response:
        return self.guest.post("/api/photos", files=[("photo", (name, data, "image/jpeg"))
                                                     for name, data in files])

    def stored(self) -> list[Path]:
        return sorted(self.event.photos_folder.iterdir())

    def close(self) -> None:
        for client in (self.guest, self.host, self.anyone):
            client.close()
        self.server.stop()
        self.live.close()


@pytest.fixture
def make_wall(tmp_path, target) -> Iterator:
    walls: list[Wall] = []

    def make(**args: object) -> Wall:
        wall = Wall(tmp_path / f"event{len(walls)}", target, **args)
        walls.append(wall)
        return wall

    yield make
    for wall in walls:
        wall.close()


@pytest.fixture
def wall(make_wall) -> Wall:
    return make_wall()


# --- guests ------------------------------------------------------------------------------


def test_a_photo_is_placed_stored_and_shown(wall):
    answer = wall.upload(("me.jpg", photo_bytes(1)))
    assert answer.status_code == 201
    placed = answer.json()
    assert set(placed) == {"id", "row", "col"}
    assert 0 <= placed["row"] < GRID[1] and 0 <= placed["col"] < GRID[0]
    assert wall.anyone.get(f"/api/photos/{placed['id']}").json() == {
        "id": placed["id"], "status": "placed", "row": placed["row"], "col": placed["col"]}
    shown = wall.anyone.get("/api/wall").json()
    assert shown["grid"] == {"cols": GRID[0], "rows": GRID[1]}
    assert shown["tiles"] == [placed] and shown["version"] == 1
    tile = wall.anyone.get(f"/api/tiles/{placed['id']}.jpg?at=whatever")
    assert tile.status_code == 200 and tile.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(tile.content)).size == (16, 16)
    # Stored under its generated id only.
    assert [path.name for path in wall.stored()] == [f"{placed['id']}.jpg"]


def test_several_photos_in_one_upload(wall):
    answer = wall.upload(*[(f"p{i}.jpg", photo_bytes(i)) for i in range(3)])
    assert answer.status_code == 201
    photos = answer.json()["photos"]
    assert len(photos) == 3 and len({(p["row"], p["col"]) for p in photos}) == 3


def exif_photo() -> bytes:
    """A 60x40 JPEG whose EXIF says 'rotate 90 degrees' and holds a GPS position."""
    image = Image.fromarray(gradient(60, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the camera was turned
    exif[0x010F] = "PhoneMaker"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (51.0, 30.0, 0.0)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes(), icc_profile=b"\0" * 128,
               comment=b"secret")
    return buffer.getvalue()


def test_orientation_applied_and_metadata_stripped(wall):
    placed = wall.upload(("phone.jpg", exif_photo())).json()
    stored = wall.stored()[0].read_bytes()
    tile = wall.anyone.get(f"/api/tiles/{placed['id']}.jpg").content
    for data in (stored, tile):
        with Image.open(io.BytesIO(data)) as image:
            assert not image.getexif() and "icc_profile" not in image.info
            assert "comment" not in image.info
        assert b"PhoneMaker" not in data and b"secret" not in data
    with Image.open(io.BytesIO(stored)) as image:
        assert image.size == (40, 60)  # turned upright


def test_heic_photos_are_accepted(wall):
    pillow_heif = pytest.importorskip("pillow_heif")
    if not pillow_heif.libheif_info().get("HEIF"):
        pytest.skip("this pillow-heif has no HEIC encoder to make a test photo")
    buffer = io.BytesIO()
    Image.fromarray(gradient(64, 48)).save(buffer, "HEIF", quality=80)
    answer = wall.upload(("IMG_0001.HEIC", buffer.getvalue()))
    assert answer.status_code == 201, answer.text
    with Image.open(wall.stored()[0]) as image:
        assert image.format == "JPEG" and image.size == (64, 48)


def test_avif_photos_are_accepted_by_their_content(wall):
    # Refused as "not a picture in a format the wall accepts" although Pillow reads AVIF.
    from PIL import features

    if not features.check("avif"):
        pytest.skip("this Pillow reads no AVIF")
    buffer = io.BytesIO()
    Image.fromarray(gradient(64, 48)).save(buffer, "AVIF", quality=80)
    answer = wall.upload(("IMG_0002.jpg", buffer.getvalue()))  # the name says nothing
    assert answer.status_code == 201, answer.text
    with Image.open(wall.stored()[0]) as image:
        assert image.format == "JPEG" and image.size == (64, 48)
    assert "AVIF" in wall.anyone.get("/api/info").json()["formats"]


#: The start of an AVIF file from a phone: an ISO-BMFF ``ftyp`` box of brand ``avif``
#: (``mif1``, a HEIF brand, among its compatible ones).
AVIF_START = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + bytes(64)


def test_where_avif_cannot_be_read_an_avif_photo_is_refused_saying_so(wall, monkeypatch):
    from mosaicist import imaging

    monkeypatch.setattr(imaging, "avif_readable", lambda: False)
    monkeypatch.setattr(live_event, "avif_readable", lambda: False)
    answer = wall.upload(("IMG_0003.AVIF", AVIF_START))
    assert answer.status_code == 400
    message = answer.json()["error"]
    assert message.startswith("IMG_0003.AVIF: an AVIF photo cannot be read here")
    assert "pillow-avif-plugin" in message and "HEIC" not in message and "\n" not in message
    assert wall.stored() == []
    assert "AVIF" not in wall.anyone.get("/api/info").json()["formats"]


#: The start of a HEIC file from a phone: an ISO-BMFF ``ftyp`` box of brand ``heic``.
HEIC_START = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)
#: How the README installs an extra (mosaicist is not on PyPI).
LIVE_INSTALL = 'python3 -m pip install ".[live]"'


def test_without_pillow_heif_a_heic_photo_is_refused_naming_the_live_extra(wall, monkeypatch):
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # its import raises ImportError
    answer = wall.upload(("IMG_0001.HEIC", HEIC_START))
    assert answer.status_code == 400
    message = answer.json()["error"]
    assert message.startswith("IMG_0001.HEIC: ") and "HEIC" in message[15:]
    assert "live extra" in message and LIVE_INSTALL in message and "\n" not in message
    assert wall.stored() == []
    assert "HEIF" not in wall.anyone.get("/api/info").json()["formats"]
    # Other photos still land.
    assert wall.upload(("a.jpg", photo_bytes(1))).status_code == 201


def test_without_segno_the_qr_code_names_the_live_extra(wall, monkeypatch):
    monkeypatch.setitem(sys.modules, "segno", None)
    answer = wall.anyone.get("/api/qr.svg")
    assert answer.status_code == 501  # the server lacks it: not the request's fault
    message = answer.json()["error"]
    assert "QR code" in message and "live extra" in message and LIVE_INSTALL in message
    assert "\n" not in message


def test_the_start_names_each_missing_package_of_the_live_extra(tmp_path, target, monkeypatch):
    monkeypatch.setitem(sys.modules, "segno", None)
    monkeypatch.setitem(sys.modules, "pillow_heif", None)
    said: list[str] = []
    warned: list[str] = []

    def announce(line: str) -> None:
        said.append(line)
        if "admin token" in line:
            raise KeyboardInterrupt  # as Ctrl+C: the server stops once it has started

    live_app.serve_live(tmp_path / "e", target=target, grid=GRID, settings=dict(SETTINGS),
                        port=0, announce=announce, warn=warned.append)
    assert any("admin token" in line for line in said)
    assert len(warned) == 2, warned
    qr, heic = warned
    assert "segno" in qr and "QR code" in qr and LIVE_INSTALL in qr
    assert "pillow-heif" in heic and "HEIC" in heic and LIVE_INSTALL in heic
    assert all("\n" not in line for line in warned)


def test_the_start_is_quiet_with_the_live_extra(tmp_path, target):
    pytest.importorskip("segno")
    pytest.importorskip("pillow_heif")
    warned: list[str] = []

    def announce(line: str) -> None:
        if "admin token" in line:
            raise KeyboardInterrupt

    live_app.serve_live(tmp_path / "e", target=target, grid=GRID, settings=dict(SETTINGS),
                        port=0, announce=announce, warn=warned.append)
    assert warned == []


def truncated() -> bytes:
    data = photo_bytes(3, (200, 150))
    return data[: len(data) // 2]


def ppm() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(gradient(30, 30)).save(buffer, "PPM")
    return buffer.getvalue()


BAD_UPLOADS = {
    "truncated": (truncated(), "cannot be read"),
    "not an image": (b"%PDF-1.4 this is not a photo at all\n" * 20, "not a picture"),
    "empty": (b"", "empty"),
    "wrong type": (ppm(), "not a picture in a format the wall accepts"),
    "html as jpeg": (b"<html><script>alert(1)</script></html>", "not a picture"),
    "pixel bomb": (bomb_png(30000, 30000), "over the limit"),
    "too small": (photo_bytes(4, (10, 10)), "at least 16 pixels"),
    # 30 px high, but 15 once reduced to the 2048 px kept: checked on what is kept.
    "too thin once reduced": (photo_bytes(4, (4096, 30), "PNG"),
                              "reduced to at most 2048 pixels, the photo is 2048x15"),
}


@pytest.mark.parametrize("kind", list(BAD_UPLOADS))
def test_bad_uploads_are_refused_in_one_sentence_and_nothing_is_kept(wall, kind):
    data, words = BAD_UPLOADS[kind]
    answer = wall.upload(("../../etc/photo.jpg", data))
    assert answer.status_code == 400
    message = answer.json()["error"]
    assert words in message and "\n" not in message and "Traceback" not in message
    assert message.startswith("photo.jpg")  # the name, without its folders
    assert wall.stored() == [] and wall.anyone.get("/api/wall").json()["tiles"] == []


def test_a_huge_upload_is_refused(wall, monkeypatch):
    monkeypatch.setattr(live_event, "MAX_PHOTO_BYTES", 200_000)
    monkeypatch.setattr(live_app, "MAX_PHOTO_BYTES", 200_000)
    big = photo_bytes(5, (1500, 1000), "PNG")
    assert len(big) > 200_000
    answer = wall.upload(("big.png", big))
    assert answer.json() == {"error": "big.png: the file is larger than the limit of 0.19 MiB"}
    assert answer.status_code == 400
    # Above the whole request's limit, the guard refuses it before reading it.
    with socket.create_connection(("127.0.0.1", wall.port), timeout=10) as connection:
        connection.sendall(
            f"POST /api/photos HTTP/1.1\r\nHost: 127.0.0.1:{wall.port}\r\n"
            f"X-Mosaicist-Token: {wall.event.page_token}\r\n"
            "Content-Type: multipart/form-data; boundary=x\r\n"
            f"Content-Length: {live_app.MAX_BODY + 1}\r\n\r\n".encode())
        assert connection.recv(64).startswith(b"HTTP/1.1 413")
    assert wall.stored() == []


def test_one_bad_photo_refuses_the_whole_upload(wall):
    answer = wall.upload(("good.jpg", photo_bytes(6)), ("bad.jpg", truncated()))
    assert answer.status_code == 400 and answer.json()["error"].startswith("bad.jpg")
    assert wall.stored() == [] and wall.event.counts()["received"] == 0


@pytest.mark.parametrize("name", ["../../../tmp/evil.jpg", "..\\..\\evil.jpg", "/etc/passwd",
                                  "a/b/c.jpg", ".hidden.jpg", "x\x00y.jpg", "é" * 300 + ".jpg"])
def test_path_like_names_never_name_a_file(wall, name, tmp_path):
    answer = wall.upload((name, photo_bytes(7)))
    assert answer.status_code == 201
    photo_id = answer.json()["id"]
    assert [path.name for path in wall.stored()] == [f"{photo_id}.jpg"]
    assert not (tmp_path / "evil.jpg").exists()
    assert not any(path.name.endswith("evil.jpg") for path in tmp_path.rglob("*"))


def test_malformed_uploads(wall):
    assert wall.guest.post("/api/photos", json={"photo": "x"}).status_code == 400
    missing = wall.guest.post("/api/photos", files={"other": ("a.jpg", photo_bytes(8))})
    assert missing.status_code == 400 and "'photo'" in missing.json()["error"]
    many = wall.guest.post("/api/photos", files=[("photo", (f"{i}.jpg", b"x"))
                                                 for i in range(live_app.MAX_FILES + 1)])
    assert many.status_code == 400 and "at most" in many.json()["error"]
    # A name of thousands of characters: the parser refuses the part's header, and the
    # answer said the upload was not a form of at most 10 photos.
    named = wall.guest.post("/api/photos", files={"photo": ("a" * 5000 + ".jpg",
                                                            photo_bytes(8), "image/jpeg")})
    assert named.status_code == 400, named.text
    assert named.json()["error"] == ("a photo's file name is too long; rename it and send "
                                     "it again")
    assert wall.stored() == []


def test_guests_need_the_page_token_and_origin(wall):
    files = {"photo": ("a.jpg", photo_bytes(9), "image/jpeg")}
    assert wall.anyone.post("/api/photos", files=files).status_code == 403
    wrong = wall.anyone.post("/api/photos", files=files, headers={"X-Mosaicist-Token": "nope"})
    assert wrong.status_code == 403
    foreign = wall.guest.post("/api/photos", files=files,
                              headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403
    rebinding = wall.guest.post("/api/photos", files=files, headers={"Host": "evil.example"})
    assert rebinding.status_code == 421
    assert wall.stored() == []


def test_pages_carry_the_page_token_not_the_admin_token(wall):
    for route in ("/", "/display", "/admin"):
        page = wall.anyone.get(route)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert wall.event.page_token in page.text and "{{MOSAICIST_TOKEN}}" not in page.text
        assert wall.event.admin_token not in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
    assert wall.anyone.get("/assets/guest.html").status_code == 404
    assert wall.anyone.get("/assets/../_event.py").status_code in (400, 404)
    assert wall.anyone.get("/api/qr.svg").text.lstrip().startswith("<svg")


def test_guests_see_only_what_is_theirs_or_on_the_wall(make_wall):
    wall = make_wall(moderation=True)
    held = wall.upload(("a.jpg", photo_bytes(10)))
    assert held.status_code == 202
    assert held.json() == {"id": held.json()["id"], "status": "pending", "reason": "moderation"}
    photo_id = held.json()["id"]
    assert wall.anyone.get(f"/api/tiles/{photo_id}.jpg").status_code == 404
    assert wall.anyone.get(f"/api/admin/photos/{photo_id}.jpg").status_code == 401
    assert wall.anyone.get("/api/photos/" + "0" * 32).status_code == 404
    assert wall.anyone.get("/api/photos/../event.sqlite").status_code == 404
    assert wall.anyone.get("/api/tiles/../../event.sqlite").status_code == 404


def test_upload_rate_is_limited_per_client(make_wall):
    wall = make_wall(rate=6)
    answers = [wall.upload((f"{i}.jpg", photo_bytes(i))) for i in range(live_app.BURST + 1)]
    assert [answer.status_code for answer in answers[:-1]] == [201] * live_app.BURST
    assert answers[-1].status_code == 429 and int(answers[-1].headers["retry-after"]) >= 1


# --- the host ----------------------------------------------------------------------------


ADMIN_CALLS = [("GET", "/api/admin/state", None), ("POST", "/api/admin/pause", {"paused": True}),
               ("POST", "/api/admin/moderation", {"on": True}),
               ("GET", "/api/admin/export?format=png", None),
               ("GET", "/api/admin/sheets.pdf", None),
               ("POST", "/api/admin/complete", {"source": "received"}),
               ("DELETE", "/api/admin/photos/" + "a" * 32, None)]


@pytest.mark.parametrize(("method", "route", "body"), ADMIN_CALLS)
def test_admin_routes_need_the_admin_token(wall, method, route, body):
    page = {"X-Mosaicist-Token": wall.event.page_token}
    missing = wall.anyone.request(method, route, json=body, headers=page)
    assert missing.status_code == 401 and "admin token" in missing.json()["error"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = wall.anyone.request(method, route, json=body,
                                headers=page | {"Authorization": "Bearer not-it"})
    assert wrong.status_code == 403
    page_as_admin = {"Authorization": f"Bearer {wall.event.page_token}"}
    guest_token = wall.anyone.request(method, route, json=body, headers=page | page_as_admin)
    assert guest_token.status_code == 403
    assert not wall.event.paused and not wall.event.moderation


@pytest.mark.parametrize(("method", "route", "body"), ADMIN_CALLS)
def test_a_script_with_a_wrong_admin_token_is_told_so(wall, method, route, body):
    # A script has no page: "reload the page" would send its author the wrong way.
    for given in ("Bearer not-it", "Bearer", "bearer " + "x" * 200):
        wrong = wall.anyone.request(method, route, json=body, headers={"Authorization": given})
        assert wrong.status_code == 403
        assert wrong.json() == {"error": "the admin token is not this wall's"}
    foreign = wall.anyone.request(method, route, json=body,
                                  headers={"Authorization": "Bearer not-it",
                                           "Origin": "http://evil.example"})
    assert foreign.status_code == 403
    assert not wall.event.paused and not wall.event.moderation


@pytest.mark.parametrize(("method", "route", "body"), ADMIN_CALLS)
def test_a_script_without_any_token_is_told_it_needs_the_admin_token(wall, method, route,
                                                                      body):
    # It heard "this request lacks the page's token; reload the page" on a POST.
    bare = wall.anyone.request(method, route, json=body)
    assert bare.status_code == 401
    assert bare.json() == {
        "error": "this needs the host's admin token (Authorization: Bearer TOKEN)"}
    foreign = wall.anyone.request(method, route, json=body,
                                  headers={"Origin": "http://evil.example"})
    assert foreign.status_code in (401, 403)
    assert not wall.event.paused and not wall.event.moderation


def test_every_host_route_checks_the_admin_token(wall):
    # A bearer header on /api/admin/ passes the page-token check: the route must refuse it.
    routes = [route for route in live_app._routes(wall.live)
              if route.path.startswith("/api/admin/")]
    assert routes and all(route.endpoint.__name__ == "checked" for route in routes)


def test_a_script_with_the_admin_token_needs_no_page(wall):
    assert wall.host.post("/api/admin/pause", json={"paused": True}).status_code == 200
    assert wall.event.paused
    # ... but a browser page of another site still cannot use it.
    foreign = wall.host.post("/api/admin/pause", json={"paused": False},
                             headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403 and wall.event.paused


def test_pause_refuses_uploads(wall):
    wall.host.post("/api/admin/pause", json={"paused": True})
    refused = wall.upload(("a.jpg", photo_bytes(11)))
    assert refused.status_code == 503 and "paused" in refused.json()["error"]
    assert wall.host.post("/api/admin/pause", json={"paused": "no"}).status_code == 400
    wall.host.post("/api/admin/pause", json={"paused": False})
    assert wall.upload(("a.jpg", photo_bytes(11))).status_code == 201
    assert wall.stored() and len(wall.stored()) == 1


def test_moderation_approve_and_reject(wall):
    wall.host.post("/api/admin/moderation", json={"on": True})
    first, second = (wall.upload((f"{i}.jpg", photo_bytes(i))).json()["id"] for i in (12, 13))
    state = wall.host.get("/api/admin/state").json()
    assert [item["id"] for item in state["pending"]] == [first, second]
    assert state["counts"]["pending"] == 2 and state["counts"]["placed"] == 0
    preview = wall.host.get(f"/api/admin/photos/{first}.jpg")
    assert preview.status_code == 200 and preview.headers["content-type"] == "image/jpeg"
    approved = wall.host.post(f"/api/admin/photos/{first}/approve").json()
    assert approved["status"] == "placed"
    assert wall.anyone.get("/api/wall").json()["tiles"][0]["id"] == first
    rejected = wall.host.post(f"/api/admin/photos/{second}/reject").json()
    assert rejected["status"] == "rejected"
    assert not (wall.event.photos_folder / f"{second}.jpg").exists()
    again = wall.host.post(f"/api/admin/photos/{second}/approve")
    assert again.status_code == 409
    assert wall.host.post("/api/admin/photos/" + "b" * 32 + "/approve").status_code == 404


def test_remove_frees_the_cell_for_the_overflow(make_wall):
    wall = make_wall(grid=(2, 2))
    placed = [wall.upload((f"{i}.jpg", photo_bytes(i))).json() for i in range(4)]
    waiting = wall.upload(("late.jpg", photo_bytes(20)))
    assert waiting.status_code == 202 and waiting.json()["reason"] == "full"
    assert [item["id"] for item in wall.host.get("/api/admin/state").json()["overflow"]] == [
        waiting.json()["id"]]
    gone = wall.host.delete(f"/api/admin/photos/{placed[1]['id']}").json()
    assert gone["status"] == "removed"
    assert not (wall.event.photos_folder / f"{placed[1]['id']}.jpg").exists()
    late = wall.anyone.get(f"/api/photos/{waiting.json()['id']}").json()
    assert late["status"] == "placed"
    ids = {tile["id"] for tile in wall.anyone.get("/api/wall").json()["tiles"]}
    assert placed[1]["id"] not in ids and waiting.json()["id"] in ids and len(ids) == 4
    assert wall.anyone.get(f"/api/tiles/{placed[1]['id']}.jpg").status_code == 404


def read_events(wall: Wall, count: int, out: list, ready: threading.Event) -> None:
    with httpx.Client(base_url=wall.base, timeout=30) as client, client.stream(
        "GET", "/api/events"
    ) as stream:
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                out.append((kind, json.loads(line[6:])))
                ready.set()
                if len(out) >= count:
                    return


def test_event_stream_announces_tiles_and_removals(wall):
    events: list = []
    ready = threading.Event()
    reader = threading.Thread(target=read_events, args=(wall, 3, events, ready), daemon=True)
    reader.start()
    assert ready.wait(10)
    placed = wall.upload(("a.jpg", photo_bytes(21))).json()
    wall.host.delete(f"/api/admin/photos/{placed['id']}")
    reader.join(10)
    assert [kind for kind, _ in events] == ["reset", "tile", "removed"]
    assert events[0][1] == {"version": 0}
    assert events[1][1] == placed | {"version": 1}
    assert events[2][1] == placed | {"version": 2}


def test_exports_and_print_sheets(wall):
    for index in range(5):
        wall.upload((f"{index}.jpg", photo_bytes(30 + index)))
    png = wall.host.get("/api/admin/export?format=png")
    assert png.status_code == 200 and "attachment" in png.headers["content-disposition"]
    with Image.open(io.BytesIO(png.content)) as image:
        assert image.size == (GRID[0] * 16, GRID[1] * 16)
        picture = np.asarray(image.convert("RGB"))
    # A placed photo's cell shows its tile as served.
    first = wall.anyone.get("/api/wall").json()["tiles"][0]
    shown = np.asarray(Image.open(io.BytesIO(
        wall.anyone.get(f"/api/tiles/{first['id']}.jpg").content)).convert("RGB"))
    cell = picture[first["row"] * 16:(first["row"] + 1) * 16,
                   first["col"] * 16:(first["col"] + 1) * 16]
    assert np.array_equal(cell, shown)
    tiff = wall.host.get("/api/admin/export?format=tiff")
    assert tiff.status_code == 200 and tiff.content[:2] in (b"II", b"MM")
    dzi = wall.host.get("/api/admin/export?format=dzi")
    with zipfile.ZipFile(io.BytesIO(dzi.content)) as archive:
        names = archive.namelist()
    assert "wall.dzi" in names and any(name.startswith("wall_files/") for name in names)
    assert wall.host.get("/api/admin/export?format=gif").status_code == 400
    for route in ("/api/admin/sheets.pdf?paper=letter&tile_cm=4", "/api/admin/underlay.pdf"):
        pdf = wall.host.get(route)
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
        assert pdf.content.count(b"/Type /Page\n") + pdf.content.count(b"/Type /Page ") >= 1
    assert wall.host.get("/api/admin/sheets.pdf?paper=a3").status_code == 400
    assert wall.host.get("/api/admin/sheets.pdf?tile_cm=500").status_code == 400
    # Within the sizes taken (1-30 cm) but over what an A4 page takes: said with the most.
    large = wall.host.get("/api/admin/sheets.pdf?paper=a4&tile_cm=25")
    assert large.status_code == 400
    assert re.fullmatch(r"a 25 cm tile does not fit on an A4 page; at most 1\d\.\d cm",
                        large.json()["error"]), large.json()
    largest = float(large.json()["error"].split()[-2])
    assert wall.host.get(f"/api/admin/sheets.pdf?paper=a4&tile_cm={largest}").status_code == 200
    letter = wall.host.get("/api/admin/sheets.pdf?paper=letter&tile_cm=25").json()["error"]
    assert "on a Letter page" in letter
    assert wall.anyone.get("/api/wall.jpg?width=100").status_code == 200
    assert wall.anyone.get("/api/wall.jpg?width=0").status_code == 400
    # Only plain numbers: float() took "1_000", " 100 " and "1e2" as widths.
    for width in ("1_000", "%20100%20", "1e2", "nan", "0x64"):
        answer = wall.anyone.get(f"/api/wall.jpg?width={width}")
        assert answer.status_code == 400 and answer.json()["error"] == "width must be a number"
    assert wall.anyone.get("/api/wall.jpg?width=100.0").status_code == 200
    assert wall.anyone.get("/api/target.jpg").headers["content-type"] == "image/jpeg"


def test_print_sheets_survive_a_damaged_stored_photo(wall):
    # A stored photo damaged on disk made the whole sheets.pdf a 500.
    placed = [wall.upload((f"{index}.jpg", photo_bytes(40 + index))).json() for index in range(3)]
    damaged = wall.event.picture_path(wall.event.photo(placed[1]["id"]))
    damaged.write_bytes(b"not a JPEG any more")
    pdf = wall.host.get("/api/admin/sheets.pdf?tile_cm=4")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    damaged.unlink()
    assert wall.host.get("/api/admin/sheets.pdf?tile_cm=4").status_code == 200


def test_complete_from_received_photos_and_from_the_library(make_wall, tmp_path):
    library = tmp_path / "library"
    library.mkdir()
    for index in range(30):
        (library / f"l{index:02d}.jpg").write_bytes(photo_bytes(100 + index, (20, 20)))
    wall = make_wall(fallback=str(library))
    for index in range(8):
        wall.upload((f"{index}.jpg", photo_bytes(40 + index)))
    refused = wall.host.post("/api/admin/complete", json={"source": "received", "max_uses": 1})
    assert refused.status_code == 409
    done = wall.host.post("/api/admin/complete", json={"source": "received", "max_uses": 3})
    assert done.status_code == 200 and done.json()["filled"] == GRID[0] * GRID[1] - 8
    tiles = wall.anyone.get("/api/wall").json()["tiles"]
    assert len(tiles) == GRID[0] * GRID[1] and len({t["id"] for t in tiles}) == len(tiles)
    # Each received photo fills at most 3 cells.
    sources = [wall.event.photos[t["id"]].picture_id for t in tiles]
    assert max(sources.count(source) for source in set(sources)) <= 3
    full = wall.host.post("/api/admin/complete", json={"source": "library"})
    assert full.status_code == 409 and "no empty cell" in full.json()["error"]
    # Free some cells, then complete them from the library.
    for tile in tiles[:5]:
        wall.host.delete(f"/api/admin/photos/{tile['id']}")
    library_done = wall.host.post("/api/admin/complete", json={"source": "library"}).json()
    assert library_done["counts"]["empty"] == 0 and library_done["filled"] >= 5
    assert wall.host.post("/api/admin/complete", json={"source": "x"}).status_code == 400
    assert wall.host.post("/api/admin/complete",
                          json={"source": "received", "max_uses": "3"}).status_code == 400


@pytest.mark.parametrize("final", [True, False], ids=["final", "moving"])
def test_a_final_wall_never_moves_a_photo(make_wall, final):
    wall = make_wall(final=final)
    events: list = []
    ready = threading.Event()
    reader = threading.Thread(target=read_events, args=(wall, 10_000, events, ready),
                              daemon=True)
    reader.start()
    assert ready.wait(10)
    placed = {}
    for index in range(16):
        answer = wall.upload((f"{index}.jpg", photo_bytes(80 + index))).json()
        placed[answer["id"]] = (answer["row"], answer["col"])
    # A quiet moment: a moving wall re-optimises now, a final one does not.
    deadline = time.monotonic() + (live_event.QUIET_SECONDS + 0.5 if final else 10)
    while wall.event.planner.rounds == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert wall.event.planner.rounds == 0 if final else wall.event.planner.rounds >= 1
    now = {tile["id"]: (tile["row"], tile["col"])
           for tile in wall.anyone.get("/api/wall").json()["tiles"]}
    moved = [data for kind, data in events if kind == "moved"]
    if final:
        assert now == placed and not moved and wall.event.planner.moved == 0
    else:
        # Whatever moved was announced, and the wall is then the best arrangement. A round
        # may have run during the uploads on a loaded machine, and another be moving photos
        # now, its announcements on their way: wait (bounded) for the wall to settle.
        deadline = time.monotonic() + 10
        while True:
            announced = {data["id"]: (data["row"], data["col"])
                         for kind, data in list(events) if kind == "moved"}
            changed = {photo: cell for photo, cell in now.items() if placed[photo] != cell}
            if (announced == changed and wall.event.placer.optimum() == {}
                    or time.monotonic() > deadline):
                break
            time.sleep(0.1)
            now = {tile["id"]: (tile["row"], tile["col"])
                   for tile in wall.anyone.get("/api/wall").json()["tiles"]}
        assert announced == changed
        assert wall.event.placer.optimum() == {}


# --- the event folder ----------------------------------------------------------------------


def test_resuming_gives_back_the_same_wall(make_wall, target):
    wall = make_wall()
    for index in range(6):
        wall.upload((f"{index}.jpg", photo_bytes(50 + index)))
    wall.host.post("/api/admin/moderation", json={"on": True})
    pending = wall.upload(("held.jpg", photo_bytes(60))).json()["id"]
    time.sleep(live_event.QUIET_SECONDS + 0.5)  # let a re-optimisation run, if any
    before = wall.anyone.get("/api/wall").json()
    tokens = (wall.event.admin_token, wall.event.page_token)
    folder = wall.event.folder
    wall.close()
    again = Wall(folder, target)
    try:
        assert again.anyone.get("/api/wall").json() == before
        assert (again.event.admin_token, again.event.page_token) == tokens
        assert again.event.moderation
        assert again.anyone.get(f"/api/photos/{pending}").json()["status"] == "pending"
    finally:
        again.close()


@pytest.mark.parametrize("priced_again", [False, True])
def test_a_resumed_final_wall_places_the_next_photos_as_if_never_stopped(tmp_path, target,
                                                                         priced_again):
    # The forecast's prices and its random generator were not kept: after a restart the
    # next photos went elsewhere than in a run never stopped (with no prices until the
    # planner priced again, then with prices of another random sample).
    def run(folder: Path, restart: bool) -> list[tuple[int, int]]:
        event = Event.open(folder, target=target, grid=GRID, settings=dict(SETTINGS),
                           final=True, expected=20)
        for seed in range(11):
            event.receive(event.prepare(photo_bytes(seed), "a.jpg"))
            event.planner.step()  # the background planner's work, in a fixed order
        if restart:
            event.close()
            event = Event.open(folder)
            if priced_again:
                event.planner.step()
        cells = []
        try:
            for seed in range(100, 110):
                answer = event.receive(event.prepare(photo_bytes(seed), "b.jpg"))
                cells.append((answer["row"], answer["col"]))
                event.planner.step()
        finally:
            event.close()
        return cells

    assert run(tmp_path / "stopped", True) == run(tmp_path / "never", False)


@pytest.mark.parametrize("code", ["ENOLCK", "EOPNOTSUPP"])
def test_a_file_system_without_locks_is_named_not_another_wall(tmp_path, target, monkeypatch,
                                                                code):
    # It said "another 'mosaicist live' runs on this event folder" where no other ran.
    def refuse(descriptor, operation):
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))

    monkeypatch.setattr(live_event.fcntl, "flock", refuse)
    with pytest.raises(MosaicistError, match="refuses file locks") as caught:
        Event.open(tmp_path / "e", target=target, grid=GRID, settings=dict(SETTINGS))
    assert "another" not in str(caught.value)


def test_an_unopenable_lock_file_is_one_line(tmp_path, target):
    folder = tmp_path / "e"
    folder.mkdir()
    (folder / "event.lock").mkdir()  # a folder where the lock file goes
    with pytest.raises(MosaicistError, match="event.lock: cannot open the event's lock file"):
        Event.open(folder, target=target, grid=GRID, settings=dict(SETTINGS))


def test_a_resumed_event_keeps_its_target_grid_and_look(tmp_path, target):
    event = Event.open(tmp_path / "e", target=target, grid=GRID, settings=dict(SETTINGS))
    with pytest.raises(MosaicistError, match="another 'mosaicist live'"):
        Event.open(tmp_path / "e")
    event.close()
    other = tmp_path / "other.png"
    Image.fromarray(gradient(50, 50)[::-1].copy()).save(other)
    with pytest.raises(MosaicistError, match="another target"):
        Event.open(tmp_path / "e", target=other)
    with pytest.raises(MosaicistError, match="grid is 6x4"):
        Event.open(tmp_path / "e", grid=(5, 5))
    with pytest.raises(OptionError, match="tint"):
        Event.open(tmp_path / "e", settings={"tint": 0.2})
    with pytest.raises(MosaicistError, match="needs its TARGET"):
        Event.open(tmp_path / "new")
    resumed = Event.open(tmp_path / "e", settings={"jpeg_quality": 80})
    assert resumed.settings.options.jpeg_quality == 80 and resumed.settings.cols == 6
    resumed.close()


@pytest.mark.parametrize("kept", ["photos/holiday.jpg", "tiles/a.jpg", "exports/.b.png",
                                  "notes.txt"])
def test_a_new_event_never_takes_over_a_folder_in_use(tmp_path, target, kept):
    # Resuming tidies photos/, tiles/ and exports/: a folder of the user's own files (the
    # tiles' folder, ".") must be refused before any of them is touched.
    folder = tmp_path / "mine"
    path = folder / kept
    path.parent.mkdir(parents=True)
    path.write_bytes(photo_bytes(74))
    with pytest.raises(MosaicistError, match="not empty"):
        Event.open(folder, target=target, grid=GRID, settings=dict(SETTINGS))
    assert path.read_bytes() == photo_bytes(74)
    assert sorted(item.relative_to(folder).as_posix() for item in folder.rglob("*")
                  if item.is_file()) == [kept]


def test_a_new_event_may_use_an_empty_folder(tmp_path, target):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".DS_Store").write_bytes(b"x")
    Event.open(tmp_path / "empty", target=target, grid=GRID, settings=dict(SETTINGS)).close()
    Event.open(tmp_path / "empty").close()


def test_leftovers_of_a_crash_are_tidied(make_wall, target):
    wall = make_wall()
    kept = wall.upload(("a.jpg", photo_bytes(70))).json()
    folder = wall.event.folder
    wall.close()
    (tile,) = (folder / "tiles").iterdir()
    tile.unlink()  # the placed photo's tile was lost: it is drawn again
    # A photo stored but never recorded, a tile of nothing, a half-written file.
    (folder / "photos" / ("c" * 32 + ".jpg")).write_bytes(photo_bytes(71))
    (folder / "tiles" / ("d" * 32 + "-3.jpg")).write_bytes(b"x")
    (folder / "photos" / ".x.jpg.123-abc.part.jpg").write_bytes(b"x")
    event = Event.open(folder)
    try:
        assert sorted(path.name for path in (folder / "photos").iterdir()) == [
            f"{kept['id']}.jpg"]
        assert [path.name for path in (folder / "tiles").iterdir()] == [tile.name]
    finally:
        event.close()


@pytest.mark.parametrize("linked", ["photos", "tiles", "exports"])
def test_a_state_folder_that_is_a_link_is_refused_and_nothing_outside_is_deleted(
        make_wall, target, tmp_path, linked):
    # Tidying deletes what is not the event's own: through a link (photos/ -> ~/Pictures)
    # that deleted the user's files outside the event folder.
    wall = make_wall()
    wall.upload(("a.jpg", photo_bytes(75)))
    folder = wall.event.folder
    wall.close()
    pictures = tmp_path / "Pictures"
    pictures.mkdir()
    (pictures / "holiday.jpg").write_bytes(photo_bytes(76))
    (pictures / ".hidden.jpg").write_bytes(b"x")
    for path in (folder / linked).iterdir():
        path.unlink()
    (folder / linked).rmdir()
    (folder / linked).symlink_to(pictures, target_is_directory=True)
    with pytest.raises(MosaicistError, match="symbolic link") as refused:
        Event.open(folder)
    assert "\n" not in str(refused.value) and linked in str(refused.value)
    assert sorted(path.name for path in pictures.iterdir()) == [".hidden.jpg", "holiday.jpg"]


def test_a_folder_inside_photos_or_tiles_is_left_alone(make_wall, target):
    wall = make_wall()
    kept = wall.upload(("a.jpg", photo_bytes(77))).json()
    folder = wall.event.folder
    wall.close()
    for name in ("photos", "tiles"):
        (folder / name / "mine").mkdir()
        (folder / name / "mine" / "note.txt").write_bytes(b"x")
    event = Event.open(folder)
    try:
        assert event.photo(kept["id"]).status == "placed"
        assert (folder / "photos" / "mine" / "note.txt").exists()
        assert (folder / "tiles" / "mine" / "note.txt").exists()
    finally:
        event.close()


@pytest.mark.parametrize("damage", ["empty", "half"])
def test_a_damaged_tile_is_drawn_again_on_resume(make_wall, target, damage):
    # Tiles are written without an fsync: a power cut can leave one empty or cut short.
    wall = make_wall()
    placed = wall.upload(("a.jpg", photo_bytes(72))).json()
    folder = wall.event.folder
    wall.close()
    (tile,) = (folder / "tiles").iterdir()
    tile.write_bytes(b"" if damage == "empty" else tile.read_bytes()[:100])
    event = Event.open(folder)
    try:
        assert event.counts()["placed"] == 1
        assert event.photo(placed["id"]).cell is not None
        with Image.open(tile) as image:
            image.load()
    finally:
        event.close()


def test_a_damaged_event_folder_is_refused_in_one_sentence(make_wall, target):
    wall = make_wall()
    wall.upload(("a.jpg", photo_bytes(73)))
    folder = wall.event.folder
    wall.close()
    (picture,) = (folder / "photos").iterdir()
    (tile,) = (folder / "tiles").iterdir()
    picture.unlink()
    tile.unlink()
    with pytest.raises(MosaicistError, match="cannot be drawn") as refused:
        Event.open(folder)
    assert "\n" not in str(refused.value)
    (folder / "target.png").write_bytes(b"")
    with pytest.raises(MosaicistError, match="target picture cannot be read"):
        Event.open(folder)


def test_the_command_line_names_its_flags(tmp_path, target):
    from click.testing import CliRunner

    from mosaicist.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["live", str(target), "--grid", "4", "--event",
                                  str(tmp_path / "e"), "--port", "0"])
    assert result.exit_code != 0 and "--grid" in result.output
    result = runner.invoke(main, ["live", str(target), "--grid", "4x3", "--tint", "2",
                                  "--event", str(tmp_path / "e"), "--port", "0"])
    assert result.exit_code != 0 and "--tint" in result.output
    result = runner.invoke(main, ["live"])
    assert result.exit_code != 0 and "TARGET" in result.output
    with contextlib.suppress(FileNotFoundError):
        assert not (tmp_path / "e" / "event.sqlite").exists()


def test_a_wall_over_pillows_bomb_limit_opens_and_tidies_a_killed_export(tmp_path, target,
                                                                          monkeypatch):
    # A wall over Pillow's default limit (150 x 150 tiles of 96 px: 207 million pixels)
    # could not open: its own target.png was refused as a decompression bomb.
    from PIL import Image as PillowImage

    monkeypatch.setattr(PillowImage, "MAX_IMAGE_PIXELS", 1000)
    event = Event.open(tmp_path / "e", target=target, grid=GRID, settings=dict(SETTINGS))
    event.close()
    assert PillowImage.MAX_IMAGE_PIXELS == 1000
    # A Deep Zoom export killed mid-way left its hidden staging folder for good.
    staging = tmp_path / "e" / "exports" / ".deepzoom-abcd1234"
    (staging / "wall_files" / "0").mkdir(parents=True)
    (staging / "wall_files" / "0" / "0_0.jpeg").write_bytes(b"x")
    again = Event.open(tmp_path / "e")
    try:
        assert again.target.shape[:2] == (GRID[1] * 16, GRID[0] * 16)
        assert not staging.exists()
    finally:
        again.close()


def test_event_streams_are_capped_so_uploads_keep_a_connection(wall):
    # Streams never end: a display page opened in many tabs, or a script, held every
    # connection of the server, and then uploads were answered 503.
    per_client = live_app.MAX_EVENT_STREAMS_PER_CLIENT
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(httpx.Client(base_url=wall.base, timeout=30))
        for _ in range(per_client):
            opened = stack.enter_context(client.stream("GET", "/api/events"))
            assert opened.status_code == 200
        refused = wall.anyone.get("/api/events")
        assert refused.status_code == 503 and "too many displays" in refused.json()["error"]
        assert refused.headers["Retry-After"]
        assert wall.upload(("a.jpg", photo_bytes(30))).status_code in (201, 202)
    # Closed streams give their places back.
    deadline = time.monotonic() + 10
    while wall.live.feed.readers and time.monotonic() < deadline:
        time.sleep(0.05)
    with wall.anyone.stream("GET", "/api/events") as again:
        assert again.status_code == 200


def test_head_of_the_event_stream_ends_and_holds_no_reader(wall):
    # HEAD of the stream never ended: it held its connection (the next request on it was
    # never answered) and one of the few readers a device may have.
    with httpx.Client(base_url=wall.base, timeout=10) as client:
        for _ in range(live_app.MAX_EVENT_STREAMS_PER_CLIENT + 1):
            head = client.head("/api/events")
            assert head.status_code == 200 and head.content == b""
            assert head.headers["content-type"].startswith("text/event-stream")
            assert client.get("/api/info").status_code == 200
    assert wall.live.feed.readers == 0
    with wall.anyone.stream("GET", "/api/events") as stream:
        assert stream.status_code == 200


def test_feed_caps_streams_in_all_and_per_client():
    import asyncio

    async def fill() -> tuple[int, bool, bool]:
        feed = live_app.Feed()
        taken = [feed.subscribe(f"10.0.0.{number}") for number in
                 range(live_app.MAX_EVENT_STREAMS)]
        full = feed.subscribe("10.0.1.1") is None
        feed.unsubscribe(taken[0])  # type: ignore[arg-type]
        again = feed.subscribe("10.0.1.1") is not None
        return feed.readers, full, again

    readers, full, again = asyncio.run(fill())
    assert full and again and readers == live_app.MAX_EVENT_STREAMS


def test_damaged_stored_photos_neither_stop_moves_nor_repeats(make_wall):
    # A stored picture damaged on disk: a move of its photo failed in the planner every
    # second for good, a completion by repeats and an approval answered 500.
    wall = make_wall(grid=(3, 2))
    wall.host.post("/api/admin/pause", json={"paused": False})
    placed = [wall.upload((f"{index}.jpg", photo_bytes(60 + index))).json() for index in range(2)]
    photo = wall.event.photo(placed[0]["id"])
    wall.event.picture_path(photo).write_bytes(b"damaged")
    before = np.asarray(Image.open(wall.event.tile_path(photo)).convert("RGB"))
    taken = {tile["row"] * 3 + tile["col"] for tile in wall.anyone.get("/api/wall").json()["tiles"]}
    free = min(set(range(6)) - taken)
    with wall.event.lock:
        moved = wall.event.apply_moves({photo.number: free}, wall.event.changes)
    assert moved == 1 and photo.cell == free
    after = np.asarray(Image.open(wall.event.tile_path(photo)).convert("RGB"))
    assert after.shape == before.shape
    done = wall.host.post("/api/admin/complete", json={"source": "received", "max_uses": 3})
    assert done.status_code == 200 and done.json()["counts"]["empty"] == 0

    held = make_wall(moderation=True)
    pending = held.upload(("p.jpg", photo_bytes(70))).json()["id"]
    held.event.picture_path(held.event.photo(pending)).write_bytes(b"damaged")
    refused = held.host.post(f"/api/admin/photos/{pending}/approve")
    assert refused.status_code == 409 and "can no longer be read" in refused.json()["error"]
    assert held.host.post(f"/api/admin/photos/{pending}/reject").status_code == 200


def test_a_photo_sent_again_after_a_lost_answer_is_placed_once(wall):
    # A phone that lost the answer (a timeout on a slow network) sends the same photo
    # again: it was stored and put on the wall twice.
    data = photo_bytes(90)
    first = wall.upload(("a.jpg", data)).json()
    again = wall.upload(("a (retry).jpg", data)).json()
    assert again == first and len(wall.stored()) == 1
    assert len(wall.anyone.get("/api/wall").json()["tiles"]) == 1
    twice = wall.upload(("b.jpg", photo_bytes(91)), ("b.jpg", photo_bytes(91))).json()
    assert twice["photos"][0] == twice["photos"][1] and len(wall.stored()) == 2
    # Another device's copy is its own photo; one the host removed may be sent again.
    assert wall.live.accept([(data, "a.jpg")], "10.0.0.9")[0]["id"] != first["id"]
    wall.host.delete(f"/api/admin/photos/{first['id']}")
    assert wall.upload(("a.jpg", data)).json()["id"] != first["id"]


def test_retries_arriving_together_make_one_photo(wall):
    data = photo_bytes(92)
    answers: list = []
    threads = [threading.Thread(target=lambda: answers.append(
        wall.live.accept([(data, "a.jpg")], "10.0.0.7")[0])) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answers) == 4 and len({answer["id"] for answer in answers}) == 1
    assert len(wall.stored()) == 1


def test_a_retry_whose_first_request_never_ends_is_a_conflict(wall, monkeypatch):
    import hashlib

    monkeypatch.setattr(live_app, "RETRY_WAIT_SECONDS", 0.2)
    data = photo_bytes(93)
    key = ("10.0.0.8", hashlib.sha256(data).digest())
    wall.live._receiving[key] = threading.Event()  # a first request still being received
    try:
        with pytest.raises(live_event.Conflict, match="being received from this device"):
            wall.live.accept([(data, "a.jpg")], "10.0.0.8")
    finally:
        wall.live._receiving.pop(key).set()
    assert wall.live.accept([(data, "a.jpg")], "10.0.0.8")[0]["status"] == "placed"


# --- a full disk, damaged folders, retries across restarts ----------------------------------


class _FullAtCommit:
    """The event's database connection, its next ``COMMIT``s failing as on a full disk."""

    def __init__(self, connection, failures: int = 1) -> None:
        self.connection = connection
        self.failures = failures

    def execute(self, sql: str, *args: object):
        import sqlite3

        if sql == "COMMIT" and self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return self.connection.execute(sql, *args)

    def __getattr__(self, name: str):
        return getattr(self.connection, name)


def test_a_commit_failing_on_a_full_disk_is_refused_clearly_and_the_wall_goes_on(wall):
    # In WAL mode the disk fills at COMMIT: the transaction was left open, every later
    # upload failed with "cannot start a transaction within a transaction" (500) until a
    # restart, and the wall's version was left one ahead of the database's.
    wall.event._db = _FullAtCommit(wall.event._db)
    refused = wall.upload(("a.jpg", photo_bytes(100)))
    assert refused.status_code == 507 and refused.json() == {"error": "the server's disk is full"}
    assert wall.stored() == [] and list(wall.event.tiles_folder.iterdir()) == []
    assert wall.event.version == 0 and wall.event.counts()["received"] == 0
    placed = wall.upload(("b.jpg", photo_bytes(101)))
    assert placed.status_code == 201
    assert wall.anyone.get("/api/wall").json()["version"] == 1
    folder = wall.event.folder
    wall.close()
    again = Event.open(folder)
    try:
        assert again.version == 1 and list(again.photos) == [placed.json()["id"]]
    finally:
        again.close()


def test_planning_that_keeps_failing_on_a_full_disk_is_said_once(wall, monkeypatch, capsys):
    # Every attempt printed its failure: a line each 1.25 s for as long as the disk was full.
    import errno

    def failing(error: Exception):
        def step() -> None:
            raise error
        return step

    planner = wall.event.planner
    planner.stop()  # driven by hand: each attempt at a given time
    monkeypatch.setattr(planner, "step", failing(OSError(errno.ENOSPC, "No space left on device")))
    for second in range(100):
        assert planner.attempt(now=1000.0 + second * 1.25) is False
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 1 and "No space left on device" in said[0]
    # Said again when the reason changes, after a long while, and when it works again.
    monkeypatch.setattr(planner, "step", failing(ValueError("other")))
    assert planner.attempt(now=1200.0) is False
    assert planner.attempt(now=1201.0) is False
    assert planner.attempt(now=1200.0 + live_event.FAILURE_REPEAT_SECONDS) is False
    monkeypatch.setattr(planner, "step", lambda: None)
    assert planner.attempt(now=2000.0) is True
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 3
    assert "other" in said[0] and "still fails (103 times" in said[1] and "works again" in said[2]


def _tiles_fail(monkeypatch) -> None:
    """Writing a tile fails as on a full disk (photos are still written)."""
    import errno

    save = live_event._save_jpeg

    def failing(pixels, path, quality, *, durable=False):
        if path.parent.name == "tiles":
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(pixels, path, quality, durable=durable)

    monkeypatch.setattr(live_event, "_save_jpeg", failing)


def test_a_tile_that_cannot_be_written_leaves_nothing_behind(wall, monkeypatch):
    # The tile was written before the undo's try: the stored photo stayed in photos/ and a
    # photo of nobody's stayed in the forecast's sample.
    _tiles_fail(monkeypatch)
    refused = wall.upload(("a.jpg", photo_bytes(102)))
    assert refused.status_code == 507 and "disk is full" in refused.json()["error"]
    assert wall.stored() == [] and list(wall.event.tiles_folder.iterdir()) == []
    placer = wall.event.placer
    assert not placer._sample[:placer.count].any() and wall.event._seq == 0
    monkeypatch.undo()
    assert wall.upload(("b.jpg", photo_bytes(103))).status_code == 201


def test_an_approval_on_a_full_disk_leaves_the_photo_waiting_and_off_every_cell(make_wall,
                                                                              monkeypatch):
    # The photo kept the cell it was given: rejecting it then cleared that cell of the wall
    # (another photo's, by then) and announced it removed.
    wall = make_wall(moderation=True)
    held = wall.upload(("a.jpg", photo_bytes(104))).json()["id"]
    _tiles_fail(monkeypatch)
    refused = wall.host.post(f"/api/admin/photos/{held}/approve")
    assert refused.status_code == 507
    photo = wall.event.photo(held)
    assert photo.status == "pending" and photo.cell is None
    monkeypatch.undo()
    version = wall.event.version
    assert wall.host.post(f"/api/admin/photos/{held}/reject").json()["status"] == "rejected"
    assert wall.event.version == version  # nothing left the wall


def test_removing_a_photo_refills_its_cell_past_an_unreadable_waiting_photo(make_wall):
    # The oldest photo of the overflow had lost its stored picture: the removal answered
    # 409 (though made) and the cell stayed empty while readable photos waited.
    wall = make_wall(grid=(2, 1))
    answers = [wall.upload((f"{index}.jpg", photo_bytes(110 + index))).json()
               for index in range(4)]
    assert [answer.get("reason") for answer in answers] == [None, None, "full", "full"]
    wall.event.picture_path(wall.event.photo(answers[2]["id"])).unlink()
    gone = wall.host.delete(f"/api/admin/photos/{answers[0]['id']}")
    assert gone.status_code == 200 and gone.json()["status"] == "removed"
    assert wall.anyone.get(f"/api/photos/{answers[3]['id']}").json()["status"] == "placed"
    assert wall.anyone.get(f"/api/photos/{answers[2]['id']}").json()["reason"] == "full"


@pytest.mark.parametrize("damage", ["empty", "zeroed"])
def test_an_emptied_state_file_never_costs_the_photos(make_wall, target, damage):
    # An event.sqlite emptied by damage read as "not an event folder yet; give TARGET and
    # --grid": doing so made a new event there, which deleted every guest's photo.
    wall = make_wall()
    wall.upload(("a.jpg", photo_bytes(120)))
    folder = wall.event.folder
    wall.close()
    state = folder / "event.sqlite"
    state.write_bytes(b"" if damage == "empty" else bytes(state.stat().st_size))
    for name in ("event.sqlite-wal", "event.sqlite-shm"):
        (folder / name).unlink(missing_ok=True)
    kept = sorted((folder / "photos").iterdir())
    assert len(kept) == 1
    for args in ({}, {"target": target, "grid": GRID, "settings": dict(SETTINGS)}):
        with pytest.raises(MosaicistError) as refused:
            Event.open(folder, **args)
        assert "\n" not in str(refused.value)
        assert "event.sqlite" in str(refused.value) or "cannot be read" in str(refused.value)
    assert sorted((folder / "photos").iterdir()) == kept


def test_a_new_event_killed_before_its_settings_were_saved_is_made_again(tmp_path, target):
    folder = tmp_path / "e"
    Event.open(folder, target=target, grid=GRID, settings=dict(SETTINGS)).close()
    # As a run killed between making event.sqlite (and target.png) and saving its settings.
    import sqlite3

    with contextlib.closing(sqlite3.connect(folder / "event.sqlite")) as connection:
        connection.execute("DELETE FROM meta")
        connection.commit()
    for made in ("photos", "tiles", "exports"):
        (folder / made).rmdir()
    Event.open(folder, target=target, grid=GRID, settings=dict(SETTINGS)).close()


def test_a_photo_sent_again_after_a_crash_is_placed_once(make_wall, target):
    # The answer was lost to a crash after the commit; the guest sent the photo again to
    # the restarted wall, which only remembered recent uploads in memory: placed twice.
    wall = make_wall()
    data = photo_bytes(130)
    first = wall.live.accept([(data, "a.jpg")], "10.0.0.5")[0]
    folder = wall.event.folder
    wall.close()
    event = Event.open(folder, target=target)
    live = Live(event, rate=0)
    try:
        assert live.accept([(data, "a.jpg")], "10.0.0.5")[0] == first
        assert live.accept([(data, "a.jpg")], "10.0.0.6")[0]["id"] != first["id"]
        assert event.counts()["received"] == 2
    finally:
        live.close()


def test_a_body_shorter_than_its_length_and_links_out_of_the_folder_serve_nothing(wall,
                                                                                  tmp_path):
    # Checked and found right: a cut upload stores nothing and the wall goes on; a tile
    # replaced by a link to a file outside, and encoded climbs out of a folder, are 404.
    body = (b'--x\r\nContent-Disposition: form-data; name="photo"; filename="a.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n" + photo_bytes(140)[:500])
    with socket.create_connection(("127.0.0.1", wall.port), timeout=10) as connection:
        connection.sendall(
            f"POST /api/photos HTTP/1.1\r\nHost: 127.0.0.1:{wall.port}\r\n"
            f"X-Mosaicist-Token: {wall.event.page_token}\r\n"
            "Content-Type: multipart/form-data; boundary=x\r\n"
            f"Content-Length: {len(body) + 5000}\r\n\r\n".encode() + body)
        connection.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            connection.recv(256)
    placed = wall.upload(("b.jpg", photo_bytes(141))).json()
    assert [path.stem for path in wall.stored()] == [placed["id"]]
    secret = tmp_path / "secret.txt"
    secret.write_text("not for guests")
    tile = wall.event.tile_path(wall.event.photo(placed["id"]))
    tile.unlink()
    tile.symlink_to(secret)
    shown = wall.anyone.get(f"/api/tiles/{placed['id']}.jpg")
    assert shown.status_code == 404 and b"not for guests" not in shown.content
    for route in ("/assets/..%2f_event.py", "/assets/%2e%2e/_app.py", "/assets/%2fetc%2fpasswd",
                  "/api/tiles/..%2f..%2fevent.sqlite", "/api/tiles/%2e%2e%2fevent.sqlite.jpg",
                  "/assets/..%5c_event.py", "//etc/passwd"):
        answer = wall.anyone.get(route)
        assert answer.status_code in (400, 404), route
        assert b"import" not in answer.content and b"root:" not in answer.content


def test_a_completion_failing_on_a_full_disk_leaves_the_wall_taking_photos(make_wall,
                                                                          monkeypatch):
    # A completion that failed part-way took back one sequence number per empty cell, not
    # per fill made: the next uploads reused the numbers of photos on the wall and were
    # all refused (UNIQUE constraint failed: photos.seq) until a restart.
    wall = make_wall(grid=(4, 2))
    for index in range(2):
        assert wall.upload((f"{index}.jpg", photo_bytes(150 + index))).status_code == 201
    save = live_event._save_jpeg
    written: list = []

    def second_tile_fails(pixels, path, quality, *, durable=False):
        import errno

        if path.parent.name == "tiles":
            written.append(path)
            if len(written) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return save(pixels, path, quality, durable=durable)

    monkeypatch.setattr(live_event, "_save_jpeg", second_tile_fails)
    refused = wall.host.post("/api/admin/complete", json={"source": "received", "max_uses": 4})
    assert refused.status_code == 507
    monkeypatch.undo()
    assert list(wall.event.tiles_folder.iterdir()) and wall.event.counts()["placed"] == 2
    for index in range(3):
        assert wall.upload((f"n{index}.jpg", photo_bytes(160 + index))).status_code == 201
    assert wall.event.counts()["placed"] == 5


@pytest.mark.parametrize("damage", [
    "UPDATE meta SET value = '{' WHERE key = 'settings'",
    "UPDATE meta SET value = '{}' WHERE key = 'settings'",
    "DELETE FROM meta WHERE key = 'admin_token'",
    "UPDATE photos SET pixels = x'00'",
    "UPDATE photos SET cell = 99999",
], ids=["settings-json", "settings-empty", "token", "pixels", "cell"])
def test_damaged_values_in_the_state_are_refused_in_one_sentence(make_wall, damage):
    # SQLite checks its pages, not the values kept in them: these gave tracebacks.
    import sqlite3

    wall = make_wall()
    wall.upload(("a.jpg", photo_bytes(170)))
    folder = wall.event.folder
    wall.close()
    with contextlib.closing(sqlite3.connect(folder / "event.sqlite")) as connection:
        connection.execute(damage)
        connection.commit()
    with pytest.raises(MosaicistError, match="state is damaged") as refused:
        Event.open(folder)
    assert "\n" not in str(refused.value)
    # The folder is not locked by the refused attempt.
    with pytest.raises(MosaicistError, match="state is damaged"):
        Event.open(folder)


def test_one_device_cannot_hold_many_uploads_in_flight(make_wall):
    # Each request's rate allowance is taken once its body is read: one device could open
    # every connection of the server with a body of MAX_BODY, all held at once.
    wall = make_wall(rate=600)
    cap = live_app.MAX_UPLOADS_PER_CLIENT
    head = (f"POST /api/photos HTTP/1.1\r\nHost: 127.0.0.1:{wall.port}\r\n"
            f"X-Mosaicist-Token: {wall.event.page_token}\r\n"
            "Content-Type: multipart/form-data; boundary=x\r\n"
            f"Content-Length: {10 * 2**20}\r\n\r\n").encode()
    part = b'--x\r\nContent-Disposition: form-data; name="photo"; filename="a.jpg"\r\n\r\n'
    with contextlib.ExitStack() as stack:
        for _ in range(cap):
            connection = stack.enter_context(
                socket.create_connection(("127.0.0.1", wall.port), timeout=10))
            connection.sendall(head + part + b"x" * 1000)  # ... and the rest never comes
        deadline = time.monotonic() + 10
        while wall.live.in_flight("127.0.0.1") < cap and time.monotonic() < deadline:
            time.sleep(0.02)
        assert wall.live.in_flight("127.0.0.1") == cap
        refused = wall.upload(("b.jpg", photo_bytes(180)))
        assert refused.status_code == 429 and refused.headers["retry-after"]
        assert "sending photos already" in refused.json()["error"]
    deadline = time.monotonic() + 10
    while wall.live.in_flight("127.0.0.1") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert wall.upload(("b.jpg", photo_bytes(180))).status_code == 201
    assert len(wall.stored()) == 1


def test_the_guests_link_given_with_url_is_answered_under_its_name(tmp_path, target):
    # README: "give --url when phones reach it under another name". The server answered
    # only to its address, so phones that opened the link (its QR code) got 421.
    event = Event.open(tmp_path / "e", target=target, grid=GRID, settings=dict(SETTINGS))
    listener = bind("127.0.0.1", 0)
    port = listener.getsockname()[1]
    live = Live(event, rate=0, guest_url=f"http://Wall.Local:{port}/")
    server = WebServer(make_live_app(live, host="127.0.0.1", port=port), listener,
                       on_stop=live.begin_stop).start()
    event.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                          headers={"Host": f"wall.local:{port}"}) as phone:
            page = phone.get("/")
            assert page.status_code == 200 and event.page_token in page.text
            sent = phone.post("/api/photos", headers={
                "X-Mosaicist-Token": event.page_token, "Origin": f"http://wall.local:{port}",
                "Sec-Fetch-Site": "same-origin"},
                files=[("photo", ("me.jpg", photo_bytes(1), "image/jpeg"))])
            assert sent.status_code == 201, sent.text
            # Other names are still refused (DNS rebinding), and so are other sites' pages.
            assert phone.get("/", headers={"Host": f"other.local:{port}"}).status_code == 421
            assert phone.get("/", headers={"Host": "wall.local:1"}).status_code == 421
            assert phone.post("/api/photos", headers={
                "X-Mosaicist-Token": event.page_token, "Origin": "http://evil.example"},
                files=[("photo", ("a.jpg", photo_bytes(2), "image/jpeg"))]).status_code == 403
    finally:
        server.stop()
        live.close()


@pytest.mark.parametrize("url", ["wall.local:8000", "ftp://wall.local/", "http://:8000/",
                                 "http://wall.local:99999/", "http://user@wall.local/"])
def test_a_guests_link_that_is_no_http_link_is_refused_before_the_start(tmp_path, target, url,
                                                                        monkeypatch):
    def no_start(*args: object) -> None:
        raise AssertionError("the server started with a malformed --url")

    monkeypatch.setattr(live_app, "bind", no_start)
    with pytest.raises(MosaicistError, match="--url") as refused:
        live_app.serve_live(tmp_path / "e", target=target, grid=GRID,
                            settings=dict(SETTINGS), guest_url=url, announce=lambda line: None)
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "e").exists()
