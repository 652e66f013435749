"""Hostile clients against the studio's and the live wall's servers, on 127.0.0.1 only.

Each server runs in a thread on a free loopback port with a small generated
target. Every answer must be a clear status (a 4xx with one sentence, JSON
under ``/api/``), the server's log (its stderr, captured) must hold no
traceback and no failure line, and nothing accepted may be lost. Every test
sends at most a few hundred requests and stops by itself.

Covered: pictures that are bombs, empty, cut short, lying about their type,
or odd but good (CMYK, 16-bit, palette with transparency, animated, ICC
profiles, a large EXIF block, HEIC where pillow-heif is installed); file
names with folders, NUL, right-to-left marks, 1,000 characters; malformed
forms (no boundary, two files, repeated fields, a body over the limit sent
in chunks, a client gone mid-body); traversal in every route that takes a
name (encoded and double-encoded); HEAD, OPTIONS and wrong methods on every
route; one guest sending 20 photos at once; two tabs deleting one run.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import bomb_png, gradient
from PIL import Image

from mosaicist.live import Event, Live, make_live_app
from mosaicist.live import _app as live_app
from mosaicist.studio import Studio, make_studio_app
from mosaicist.studio import _app as studio_app
from mosaicist.web import WebServer, bind

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

#: What no file served may contain: the secret next to the served folders.
SECRET = "not for any client"


# --- pictures -----------------------------------------------------------------------------


def picture_bytes(kind: str, mode: str = "RGB", size: tuple[int, int] = (64, 48),
                  seed: int = 1, **save: object) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.integers(0, 256, 3) + rng.normal(0, 25, (size[1], size[0], 3)),
                     0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, kind, **save)
    return buffer.getvalue()


def animated(kind: str) -> bytes:
    frames = [Image.fromarray(np.full((48, 64, 3), value, np.uint8)) for value in (20, 220, 120)]
    buffer = io.BytesIO()
    frames[0].save(buffer, kind, save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buffer.getvalue()


def sixteen_bit_png() -> bytes:
    values = (np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 21).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, "PNG")
    return buffer.getvalue()


def big_exif_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000  # ImageDescription: most of a JPEG segment's 64 KB
    exif[0x0112] = 6  # rotated: applied
    return picture_bytes("JPEG", exif=exif.tobytes())


def icc_jpeg(padding: int = 0) -> bytes:
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return picture_bytes("JPEG", icc_profile=profile + b"\0" * padding)


def huge_jpeg_header() -> bytes:
    """A small JPEG whose frame header claims 65,000 x 65,000 pixels."""
    data = bytearray(picture_bytes("JPEG"))
    start = data.find(b"\xff\xc0")
    data[start + 5:start + 9] = (65000).to_bytes(2, "big") * 2
    return bytes(data)


#: Pictures refused, with a word the one-sentence refusal holds.
REFUSED = {
    "bomb.png": (bomb_png(100_000, 100_000), "over the limit"),
    "bomb.jpg": (huge_jpeg_header(), "over the limit"),
    "empty.jpg": (b"", "empty"),
    "cut.jpg": (picture_bytes("JPEG")[:300], "cannot be read"),
    "cut.png": (picture_bytes("PNG")[:200], "cannot be read"),
    "notes.jpg": (b"just some text, not a picture\n" * 4, "not a picture"),
    "drawing.png": (b'<svg xmlns="http://www.w3.org/2000/svg" width="99" height="99"/>',
                    "not a picture"),
    "icon.jpg": (picture_bytes("ICO", size=(32, 32)), "not a picture"),
    "strip.png": (picture_bytes("PNG", size=(4000, 1)), "at least 16 pixels"),
}

#: Odd pictures that are photos all the same: taken by both servers.
TAKEN = {
    "cmyk.jpg": picture_bytes("JPEG", "CMYK"),
    "deep.png": sixteen_bit_png(),
    "palette.png": picture_bytes("PNG", "P", transparency=0),
    "grey-alpha.png": picture_bytes("PNG", "LA"),
    "moving.gif": animated("GIF"),
    "moving.webp": animated("WEBP"),
    "moving.png": animated("PNG"),
    "profiled.jpg": icc_jpeg(),
    "profiled-large.jpg": icc_jpeg(padding=300_000),
    "exif.jpg": big_exif_jpeg(),
    "really-a.png": picture_bytes("PNG"),  # named .png, sent as a JPEG's name below
}


# --- servers ------------------------------------------------------------------------------


@contextlib.contextmanager
def studio_server(folder: Path) -> Iterator[dict]:
    """A studio on 127.0.0.1 with a home folder, a secret beside it, and a client."""
    home = folder / "home"
    (home / "photos").mkdir(parents=True)
    (folder / "secret.txt").write_text(SECRET)
    studio = Studio(cache_dir=folder / "cache", home=home)
    listener = bind("127.0.0.1", 0)
    port = listener.getsockname()[1]
    server = WebServer(make_studio_app(studio, host="127.0.0.1", port=port), listener,
                       on_stop=studio.begin_stop).start()
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                          headers={"X-Mosaicist-Token": studio.token})
    try:
        yield {"studio": studio, "port": port, "client": client}
    finally:
        client.close()
        server.stop()
        studio.close()


@contextlib.contextmanager
def live_server(folder: Path, *, rate: float = 0, grid: tuple[int, int] = (4, 3)
                ) -> Iterator[dict]:
    """A live wall on 127.0.0.1, a guest's client and the host's."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "secret.txt").write_text(SECRET)
    target = folder / "target.png"
    Image.fromarray(gradient(80, 60)).save(target)
    event = Event.open(folder / "event", target=target, grid=grid,
                       settings={"tile_px": 16, "match_px": 8})
    live = Live(event, rate=rate)
    listener = bind("127.0.0.1", 0)
    port = listener.getsockname()[1]
    server = WebServer(make_live_app(live, host="127.0.0.1", port=port), listener,
                       on_stop=live.begin_stop).start()
    event.start()
    base = f"http://127.0.0.1:{port}"
    guest = httpx.Client(base_url=base, timeout=30, headers={"X-Mosaicist-Token": event.page_token},
                         limits=httpx.Limits(max_connections=32))
    host = httpx.Client(base_url=base, timeout=30,
                        headers={"Authorization": f"Bearer {event.admin_token}"})
    try:
        yield {"live": live, "event": event, "port": port, "guest": guest, "host": host}
    finally:
        guest.close()
        host.close()
        server.stop()
        live.close()


@pytest.fixture(scope="module")
def studio(tmp_path_factory) -> Iterator[dict]:
    with studio_server(tmp_path_factory.mktemp("studio")) as served:
        yield served


@pytest.fixture(scope="module")
def wall(tmp_path_factory) -> Iterator[dict]:
    with live_server(tmp_path_factory.mktemp("live")) as served:
        yield served


@pytest.fixture
def quiet_log(capfd) -> Iterator[None]:
    """The servers' log (stderr) during the test holds no traceback and no failure."""
    capfd.readouterr()
    yield
    logged = capfd.readouterr().err
    assert "Traceback" not in logged and " failed: " not in logged, logged


def exchange(port: int, method: str, target: bytes, headers: dict[str, str] | None = None,
             body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One request sent as written (no client normalises its path): status, headers, body."""
    lines = [method.encode() + b" " + target + b" HTTP/1.1",
             f"Host: 127.0.0.1:{port}".encode(), b"Connection: close"]
    lines += [f"{name}: {value}".encode("latin-1") for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT", "PATCH", "DELETE"):
        lines.append(f"Content-Length: {len(body)}".encode())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    head, _, content = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    answer_headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        answer_headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), answer_headers, content


def one_sentence(response: httpx.Response) -> str:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    body = response.json()
    assert list(body) == ["error"], body
    message = body["error"]
    assert message and "\n" not in message and "Traceback" not in message, message
    return str(message)


# --- pictures and names -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_bad_pictures_are_refused_in_one_sentence_naming_the_file(studio, wall, quiet_log,
                                                                  name):
    data, words = REFUSED[name]
    stored = sorted(wall["event"].photos_folder.iterdir())
    for response in (studio["client"].post("/api/targets", files={"file": (name, data)}),
                     wall["guest"].post("/api/photos", files={"photo": (name, data)})):
        message = one_sentence(response)
        assert message.startswith(f"{name}: ") and words in message, message
    assert sorted(wall["event"].photos_folder.iterdir()) == stored  # nothing kept


@pytest.mark.parametrize("name", sorted(TAKEN))
def test_odd_but_good_pictures_are_taken_without_their_metadata(studio, wall, quiet_log, name):
    data = TAKEN[name]
    sent_as = "really-a.jpg" if name == "really-a.png" else name
    made = studio["client"].post("/api/targets", files={"file": (sent_as, data)})
    assert made.status_code == 201, made.text
    target = made.json()
    assert target["name"] == sent_as and {target["width"], target["height"]} == {64, 48}
    stored = studio["client"].get(f"/api/targets/{target['id']}")
    with Image.open(io.BytesIO(stored.content)) as picture:
        assert picture.mode == "RGB" and not picture.info.get("icc_profile")
        assert not picture.getexif()
    sent = wall["guest"].post("/api/photos", files={"photo": (sent_as, data)})
    assert sent.status_code in (201, 202), sent.text
    photo_id = sent.json()["id"]
    with Image.open(wall["event"].photos_folder / f"{photo_id}.jpg") as kept:
        assert kept.mode == "RGB" and not kept.info.get("icc_profile") and not kept.getexif()


def test_heic_photos_are_taken_by_the_wall_and_named_by_the_studio(studio, wall, quiet_log):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    data = picture_bytes("HEIF")
    sent = wall["guest"].post("/api/photos", files={"photo": ("IMG_0001.HEIC", data)})
    assert sent.status_code in (201, 202), sent.text
    # The studio takes the formats `make` reads everywhere; a HEIC target is named.
    refused = studio["client"].post("/api/targets", files={"file": ("IMG_0001.HEIC", data)})
    assert one_sentence(refused).startswith("IMG_0001.HEIC: not a picture")


HOSTILE_NAMES = ["../../etc/passwd.jpg", "a/b\\c.jpg", "nul\x00byte.jpg", "x" * 1000 + ".jpg",
                 "\u202egpj.exe.jpg", "\u200fright-to-left.jpg", "..", "/", "C:\\x\\y.jpg",
                 "%2e%2e%2fescape.jpg", "line\r\nbreak.jpg"]


def test_hostile_file_names_never_name_a_file(studio, wall, quiet_log):
    data = picture_bytes("JPEG", seed=7)
    for index, name in enumerate(HOSTILE_NAMES):
        made = studio["client"].post("/api/targets", files={"file": (name, data)})
        assert made.status_code == 201, (name, made.text)
        shown = made.json()["name"]
        assert shown and len(shown) <= 80, shown
        assert not re.search(r"[/\\\x00-\x1f\x7f\u200e\u200f\u202a-\u202e]", shown), shown
        sent = wall["guest"].post("/api/photos",
                                  files={"photo": (name, picture_bytes("JPEG", seed=100 + index))})
        assert sent.status_code in (201, 202), (name, sent.text)
    names = [path.name for path in wall["event"].photos_folder.iterdir()]
    assert all(re.fullmatch(r"[0-9a-f]{32}\.jpg", name) for name in names), names
    assert all(re.fullmatch(r"[0-9a-f]{32}\.(jpg|png|json)", path.name)
               for path in studio["studio"].targets.iterdir())


# --- forms --------------------------------------------------------------------------------


def multipart(field: str, data: bytes, name: str = "a.jpg", boundary: bytes = b"XX") -> bytes:
    return (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="' + field.encode()
            + b'"; filename="' + name.encode() + b'"\r\n\r\n' + data + b"\r\n--" + boundary
            + b"--\r\n")


def test_malformed_forms_are_refused_in_one_sentence(studio, wall, quiet_log):
    data = picture_bytes("JPEG", seed=3)
    for served, route, field in ((studio, "/api/targets", "file"),
                                 (wall, "/api/photos", "photo")):
        client = served["client"] if served is studio else served["guest"]
        cases = [
            {"content": data, "headers": {"Content-Type": "multipart/form-data"}},
            {"content": data, "headers": {"Content-Type": "multipart/form-data; boundary="}},
            {"content": b"--XX\r\nnonsense", "headers": {
                "Content-Type": "multipart/form-data; boundary=XX"}},
            {"content": b"", "headers": {"Content-Type": "multipart/form-data; boundary=XX"}},
            {"content": data, "headers": {"Content-Type": "image/jpeg"}},
            {"files": {"other": ("a.jpg", data)}},
            {"data": {field: "not a file"}},
            {"files": [(field, ("a.jpg", data))] * 11},
            {"files": {field: ("a.jpg", data)}, "data": {"note": ["x"] * 20}},
            {"content": multipart(field, data)[:-8],  # no closing boundary
             "headers": {"Content-Type": "multipart/form-data; boundary=XX"}},
            {"content": b"--XX\r\nContent-Disposition: form-data; name=\"" + field.encode()
             + b'"; filename="a.jpg"\r\nX-Long: ' + b"a" * 100_000 + b"\r\n\r\n" + data
             + b"\r\n--XX--\r\n",
             "headers": {"Content-Type": "multipart/form-data; boundary=XX"}},
        ]
        for case in cases:
            one_sentence(client.post(route, **case))
    # Two files where one is expected: the studio takes one picture, the wall up to ten.
    two = [("file", ("a.jpg", data)), ("file", ("b.jpg", data))]
    assert "one picture" in one_sentence(studio["client"].post("/api/targets", files=two))
    both = wall["guest"].post("/api/photos", files=[
        ("photo", ("a.jpg", picture_bytes("JPEG", seed=31))),
        ("photo", ("b.jpg", picture_bytes("JPEG", seed=32)))])
    assert both.status_code in (201, 202) and len(both.json()["photos"]) == 2


@pytest.mark.parametrize("which", ["studio", "live"])
def test_a_body_over_the_limit_sent_in_chunks_is_refused(tmp_path, monkeypatch, capfd, which):
    # A small limit, so that going past it takes a fraction of a second.
    limit = 256 * 1024
    monkeypatch.setattr(studio_app if which == "studio" else live_app, "MAX_BODY", limit)
    served_by = studio_server if which == "studio" else live_server
    field, route = ("file", "/api/targets") if which == "studio" else ("photo", "/api/photos")
    with served_by(tmp_path) as served:
        client = served["client"] if which == "studio" else served["guest"]

        def body() -> Iterator[bytes]:  # no Content-Length: sent chunked
            yield b'--XX\r\nContent-Disposition: form-data; name="' + field.encode() + (
                b'"; filename="a.jpg"\r\n\r\n')
            for _ in range(8):
                yield b"\xff" * (64 * 1024)
            yield b"\r\n--XX--\r\n"

        response = client.post(route, content=body(),
                               headers={"Content-Type": "multipart/form-data; boundary=XX"})
        assert response.status_code == 413, response.text
        assert "larger than" in one_sentence(response)
        # And the server still answers.
        assert client.get("/api/state" if which == "studio" else "/api/info").status_code == 200
    logged = capfd.readouterr().err
    assert "Traceback" not in logged and " failed: " not in logged, logged


def cut_off(port: int, token: str, route: str, field: str, how: str) -> None:
    """An upload whose client goes away a third of the way through its body."""
    data = multipart(field, picture_bytes("JPEG", seed=9))
    head = (f"POST {route} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Mosaicist-Token: {token}\r\n"
            f"Content-Type: multipart/form-data; boundary=XX\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode()
    connection = socket.create_connection(("127.0.0.1", port), timeout=5)
    connection.sendall(head + data[:len(data) // 3])
    time.sleep(0.05)
    if how == "reset":
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    elif how == "half-close":
        connection.shutdown(socket.SHUT_WR)
        time.sleep(0.05)
    connection.close()


def test_a_client_gone_mid_body_leaves_nothing_behind(tmp_path, studio, quiet_log):
    # With a rate limit, so that uploads in flight are counted (three at a time per guest).
    with live_server(tmp_path, rate=30) as served:
        live, event = served["live"], served["event"]
        for how in ("close", "reset", "half-close", "close"):
            cut_off(served["port"], event.page_token, "/api/photos", "photo", how)
        deadline = time.monotonic() + 2
        while live.in_flight("127.0.0.1") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert live.in_flight("127.0.0.1") == 0
        assert not list(event.photos_folder.iterdir())
        # The guest is not told "this device is sending photos already".
        sent = served["guest"].post("/api/photos",
                                    files={"photo": ("a.jpg", picture_bytes("JPEG", seed=9))})
        assert sent.status_code == 201, sent.text
        assert len(list(event.photos_folder.iterdir())) == 1
    before = sorted(studio["studio"].targets.iterdir())
    for how in ("close", "reset", "half-close"):
        cut_off(studio["port"], studio["studio"].token, "/api/targets", "file", how)
    assert studio["client"].get("/api/state").status_code == 200
    assert sorted(studio["studio"].targets.iterdir()) == before


# --- addresses and methods ------------------------------------------------------------------


TRAVERSALS = [b"..%2f..%2fsecret.txt", b"..%252f..%252fsecret.txt", b"%2e%2e/%2e%2e/secret.txt",
              b"../../secret.txt", b"..%5c..%5csecret.txt", b"%2e%2e%5c%2e%2e%5csecret.txt",
              b"%c0%ae%c0%ae/secret.txt", b"%2fetc%2fpasswd", b".%2e/.%2e/.%2e/secret.txt",
              b"a%00.jpg", b"%ff", b"x" * 300]
STUDIO_NAMED = [b"/assets/{}", b"/assets/openseadragon/{}", b"/api/examples/{}",
                b"/api/targets/{}", b"/api/jobs/{}", b"/api/jobs/{}/events", b"/api/runs/{}",
                b"/api/runs/{}/events", b"/api/runs/{}/files/png", b"/runs/{}/view/",
                b"/runs/{}/view/mosaic.html"]
LIVE_NAMED = [b"/assets/{}", b"/api/photos/{}", b"/api/tiles/{}", b"/api/tiles/{}.jpg",
              b"/api/admin/photos/{}", b"/api/admin/photos/{}.jpg"]


def test_no_route_that_takes_a_name_leads_outside(studio, wall, quiet_log):
    admin = {"Authorization": f"Bearer {wall['event'].admin_token}"}
    for served, routes, headers in ((studio, STUDIO_NAMED, {}), (wall, LIVE_NAMED, admin)):
        for route in routes:
            for name in TRAVERSALS:
                target = route.replace(b"{}", name)
                status, _, body = exchange(served["port"], "GET", target, headers)
                assert status in (400, 403, 404, 405, 414), (target, status, body[:200])
                assert SECRET.encode() not in body and b"root:" not in body, target


STUDIO_ROUTES = ["/", "/assets/studio.js", "/api/state", "/api/examples/cat", "/api/targets",
                 "/api/targets/example", "/api/folders", "/api/index", "/api/jobs/x",
                 "/api/jobs/x/events", "/api/jobs/x/cancel", "/api/preview", "/api/command",
                 "/api/runs", "/api/runs/x", "/api/runs/x/events", "/api/runs/x/cancel",
                 "/api/runs/x/render", "/api/runs/x/files/png", "/runs/x/view",
                 "/runs/x/view/mosaic.html", "/nothing", "/api/nothing"]
LIVE_ROUTES = ["/", "/display", "/admin", "/assets/guest.js", "/api/info", "/api/photos",
               "/api/photos/x", "/api/wall", "/api/events", "/api/tiles/x.jpg",
               "/api/target.jpg", "/api/wall.jpg", "/api/qr.svg", "/api/admin/state",
               "/api/admin/photos/x.jpg", "/api/admin/photos/x/approve", "/api/admin/pause",
               "/api/admin/moderation", "/api/admin/complete", "/api/admin/sheets.pdf",
               "/nothing", "/api/nothing"]


def test_every_route_answers_head_options_and_wrong_methods(studio, wall, quiet_log):
    for served, routes, headers in (
        (studio, STUDIO_ROUTES, {"X-Mosaicist-Token": studio["studio"].token}),
        (wall, LIVE_ROUTES, {"Authorization": f"Bearer {wall['event'].admin_token}"}),
    ):
        for route in routes:
            for method in ("HEAD", "OPTIONS", "PUT", "PATCH", "TRACE", "get"):
                status, answer, body = exchange(served["port"], method, route.encode(), headers)
                assert status < 500, (route, method, status, body[:200])
                if method == "HEAD":
                    assert body == b"", (route, body[:100])
                else:  # nothing but GET, HEAD, POST and DELETE is ever answered
                    assert status == 405 and "allow" in answer, (route, method, status)
                    if route.startswith("/api/"):
                        assert list(json.loads(body)) == ["error"]


@pytest.mark.parametrize("target", [b"/api/jobs/%00", b"/api/photos/%ff", b"/api/runs/%zz",
                                    b"/api/info%0a", b"/api/" + b"a" * 3000],
                         ids=["nul", "not-utf8", "bad-escape", "line-break", "too-long"])
def test_a_malformed_address_under_the_api_is_refused_in_json(studio, wall, quiet_log, target):
    """The page's scripts read every answer under /api/ as JSON: a path with a NUL, a
    malformed escape or bytes that are not UTF-8 was refused there in plain text
    ('the address is not a valid path'), which they could not read."""
    for served in (studio, wall):
        status, headers, body = exchange(served["port"], "GET", target)
        assert status in (400, 414), (target, status)
        assert headers["content-type"] == "application/json", (target, headers)
        assert list(json.loads(body)) == ["error"]
    # Elsewhere plain text, as before.
    status, headers, body = exchange(studio["port"], "GET", b"/assets/%00")
    assert status == 400 and headers["content-type"].startswith("text/plain")


def test_the_viewer_of_a_run_that_is_not_there_is_not_found(studio, quiet_log):
    """'/runs/ID/view' was redirected to '/runs/ID/view/' whatever ID was, unescaped:
    'a%3Fb' (an id with '?') was sent to '/runs/a?b/view/', another address."""
    for run_id in (b"nope", b"a%3Fb", b"a%23b", b"0" * 32, b"%E2%82%AC"):
        status, headers, _ = exchange(studio["port"], "GET", b"/runs/" + run_id + b"/view")
        assert status == 404 and "location" not in headers, (run_id, status, headers)


def test_an_underlay_cell_larger_than_the_page_is_refused(wall, quiet_log):
    """The underlay drew a cell larger than the page one to a page, cut off at its edge
    ('tile_cm=30' on A4: a 200 and a PDF of cropped cells), where the print sheets
    refuse such a tile."""
    host = wall["host"]
    for query, words in (("tile_cm=30", "a 30 cm cell does not fit on an A4 page; at most 18.9"),
                         ("paper=letter&tile_cm=25", "a 25 cm cell does not fit on a Letter")):
        message = one_sentence(host.get(f"/api/admin/underlay.pdf?{query}"))
        assert message.startswith(words), message
    largest = host.get("/api/admin/underlay.pdf?tile_cm=18.9")
    assert largest.status_code == 200 and largest.content.startswith(b"%PDF")


# --- concurrency -----------------------------------------------------------------------------


def all_at_once(calls: list) -> list:
    """Run the calls in threads released together; their results in order."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_twenty_photos_at_once_from_one_guest_are_all_kept(tmp_path, quiet_log):
    photos = [picture_bytes("JPEG", seed=200 + index) for index in range(20)]
    with live_server(tmp_path) as served:
        guest = served["guest"]
        answers = all_at_once([
            (lambda data=data: guest.post("/api/photos", files={"photo": ("p.jpg", data)}))
            for data in photos])
        assert sorted({answer.status_code for answer in answers}) == [201, 202]
        ids = [answer.json()["id"] for answer in answers]
        assert len(set(ids)) == 20
        assert all(guest.get(f"/api/photos/{photo_id}").status_code == 200 for photo_id in ids)
        counts = served["host"].get("/api/admin/state").json()["counts"]
        assert (counts["received"], counts["placed"], counts["overflow"]) == (20, 12, 8)
        assert len(list(served["event"].photos_folder.iterdir())) == 20
        # The same photo twice at once is one photo.
        same = all_at_once([
            (lambda: guest.post("/api/photos", files={"photo": ("p.jpg", photos[0])}))] * 2)
        assert {answer.json()["id"] for answer in same} == {ids[0]}


def test_twenty_photos_at_once_under_the_rate_limit_are_kept_or_refused_to_retry(
        tmp_path, quiet_log):
    photos = [picture_bytes("JPEG", seed=300 + index) for index in range(20)]
    with live_server(tmp_path, rate=30) as served:
        guest = served["guest"]
        answers = all_at_once([
            (lambda data=data: guest.post("/api/photos", files={"photo": ("p.jpg", data)}))
            for data in photos])
        taken = [answer for answer in answers if answer.status_code in (201, 202)]
        refused = [answer for answer in answers if answer not in taken]
        assert 1 <= len(taken) <= live_app.MAX_UPLOADS_PER_CLIENT
        assert all(answer.status_code == 429 and int(answer.headers["Retry-After"]) > 0
                   for answer in refused)
        assert all("wait" in one_sentence(answer) for answer in refused)
        counts = served["host"].get("/api/admin/state").json()["counts"]
        assert counts["received"] == len(taken) == len(list(
            served["event"].photos_folder.iterdir()))


def test_two_tabs_deleting_one_run_at_once(studio, quiet_log):
    history = studio["studio"].history
    client = studio["client"]
    for _ in range(5):
        run = history.create(target_name="t.png", tiles="/nowhere", settings={},
                             command="mosaicist make t.png")
        history.update(run.id, status="done")
        address = f"/api/runs/{run.id}"
        answers = all_at_once([functools.partial(client.delete, address),
                               functools.partial(client.delete, address),
                               functools.partial(client.post, f"{address}/cancel"),
                               functools.partial(client.get, address)])
        deleted, again, cancel, shown = answers
        assert sorted([deleted.status_code, again.status_code]) == [200, 404]
        assert cancel.status_code in (404, 409) and shown.status_code in (200, 404)
        for answer in (again if again.status_code == 404 else deleted, cancel):
            one_sentence(answer)
        assert history.get(run.id) is None and not history.folder(run.id).exists()
