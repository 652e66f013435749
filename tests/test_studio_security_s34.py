"""The studio's server serves what it was made to serve, and only that (session 34).

Each test serves a studio on a free 127.0.0.1 port in a thread, with a
small home folder and an isolated cache, and stops it when done.
"""

from __future__ import annotations

import contextlib
import io
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import gradient
from PIL import Image

from mosaicist import make_mosaic
from mosaicist.options import MosaicOptions
from mosaicist.studio import Studio, make_studio_app
from mosaicist.studio._history import History
from mosaicist.web import WebServer, bind

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def png_bytes(width: int = 48, height: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(gradient(width, height)).save(buffer, "PNG")
    return buffer.getvalue()


@contextlib.contextmanager
def served_studio(cache: Path, home: Path, roots: tuple[Path, ...] = ()
                  ) -> Iterator[tuple[httpx.Client, Studio]]:
    """A studio served on 127.0.0.1 in a thread, and a client that carries its token."""
    home.mkdir(parents=True, exist_ok=True)
    studio = Studio(cache_dir=cache, roots=roots, home=home)
    listener = bind("127.0.0.1", 0)
    server = WebServer(make_studio_app(studio, host="127.0.0.1",
                                       port=listener.getsockname()[1]),
                       listener, on_stop=studio.begin_stop)
    server.start()
    client = httpx.Client(base_url=server.url, timeout=30,
                          headers={"X-Mosaicist-Token": studio.token})
    try:
        yield client, studio
    finally:
        client.close()
        server.stop()
        studio.close()


def test_a_stored_target_is_served_from_a_cache_reached_through_a_link(tmp_path):
    # ~/.cache moved to a larger disk and linked back is common. The targets folder was
    # the unresolved path below the link, the file it holds resolved to the real one, and
    # open_inside found that outside the folder: every picture the page showed was
    # "no longer here" right after it was uploaded.
    real = tmp_path / "disk" / "cache"
    real.mkdir(parents=True)
    (tmp_path / "cache").symlink_to(real, target_is_directory=True)
    with served_studio(tmp_path / "cache", tmp_path / "home") as (client, _):
        upload = client.post("/api/targets",
                             files={"file": ("a.png", png_bytes(), "image/png")})
        assert upload.status_code == 201, upload.text
        shown = client.get(f"/api/targets/{upload.json()['id']}")
        assert shown.status_code == 200, shown.text
        assert shown.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(shown.content)).size == (48, 32)


def raw_answer(url: str, request: bytes) -> bytes:
    """What the server at ``url`` answers to ``request`` sent as it is, up to its close."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("malformed", [
    b"Host: {host}\r\nHost: {host}\r\n",  # two Host headers
    b"Host: {host}\r\nContent-Length: x\r\n",  # a length that is no number
    b"Host: {host}\r\nContent-Length: 2\r\nContent-Length: 3\r\n",
])
def test_a_request_that_cannot_be_parsed_is_refused_with_the_security_headers(tmp_path,
                                                                              malformed):
    # uvicorn answered such requests itself, past the guard: "Invalid HTTP request
    # received." without X-Content-Type-Options, the content security policy or any other
    # header every other answer carries.
    with served_studio(tmp_path / "cache", tmp_path / "home") as (client, _):
        url = str(client.base_url).rstrip("/")
        host = url.removeprefix("http://").encode()
        answer = raw_answer(url, b"GET /api/state HTTP/1.1\r\n"
                            + malformed.replace(b"{host}", host) + b"\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in
               (line.partition(":") for line in lines[1:])}
    assert lines[0].startswith("HTTP/1.1 400 ")
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["content-security-policy"].startswith("default-src 'none'")
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert body == b"the request is malformed\n"


def finished_run(cache: Path, tiles: Path) -> str:
    """A finished run of the studio's history made from ``tiles``, with its zoomable view
    (whose manifest lists the photos as originals) and its placements; its id."""
    rng = np.random.default_rng(5)
    tiles.mkdir(parents=True)
    for index in range(12):
        colour = rng.integers(0, 256, 3)
        picture = np.clip(colour + rng.normal(0, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(picture).save(tiles / f"p{index:02d}.png")
    settings = {"cell_px": 8, "tile_px": 16, "preset": "seed"}
    mosaic = make_mosaic(gradient(32, 24), str(tiles), settings, cache_dir=cache)
    history = History(cache)
    run = history.create(target_name="t.png", tiles=str(tiles),
                         settings=MosaicOptions(**settings).to_json(),
                         command="mosaicist make t.png")
    mosaic.write(run.folder / "mosaic.dzi")
    mosaic.placements.write(run.folder / "placements.json")
    history.update(run.id, status="done",
                   outputs={"viewer": "mosaic.html", "placements_json": "placements.json"})
    return run.id


def test_a_runs_photos_are_not_served_once_their_folder_is_no_longer_a_root(tmp_path):
    # A mosaic made while --root named its photos' folder kept serving those photos, as
    # the originals of its zoomable view, after the studio was started again without
    # that root; and drawing it again at a larger tile size (up to 1024 px) read them all.
    cache, private = tmp_path / "cache", tmp_path / "private"
    run_id = finished_run(cache, private / "tiles")
    original = f"/runs/{run_id}/view/mosaicist-original/0"
    with served_studio(cache, tmp_path / "home", roots=(private,)) as (client, _):
        assert client.get(original).status_code == 200  # a root: its photos are served
    with served_studio(cache, tmp_path / "home") as (client, _):
        assert client.get(f"/runs/{run_id}/view/mosaic.html").status_code == 200
        refused = client.get(original)
        assert refused.status_code == 404, refused.headers
        drawn = client.post(f"/api/runs/{run_id}/render", json={"tile_px": 64})
        assert drawn.status_code == 403, drawn.text
        assert "outside the folders this studio may read" in drawn.json()["error"]
        assert len(client.get("/api/runs").json()) == 1  # no run recorded for it


def test_a_malformed_body_after_the_answer_closes_the_connection_without_a_traceback(
        tmp_path, capfd, caplog):
    # A request answered without its body being read (GET with a chunked body), whose
    # next chunk is malformed: uvicorn answered 400 on a connection already answered,
    # h11 refused, and asyncio printed "Fatal error: protocol.data_received() call failed"
    # with a traceback on the server's terminal.
    with served_studio(tmp_path / "cache", tmp_path / "home") as (client, _):
        url = str(client.base_url).rstrip("/")
        host, port = url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as connection:
            connection.sendall(f"GET /api/state HTTP/1.1\r\nHost: {host}:{port}\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".encode())
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += connection.recv(65536)
            head, _, body = answer.partition(b"\r\n\r\n")
            length = int(re.search(rb"content-length: *([0-9]+)", head, re.I).group(1))
            while len(body) < length:
                body += connection.recv(65536)
            assert head.startswith(b"HTTP/1.1 200 ")
            connection.sendall(b"not a chunk size\r\n\r\n")
            rest = b""
            while chunk := connection.recv(65536):  # the server closes the connection
                rest += chunk
        assert rest == b""
        assert client.get("/api/state").status_code == 200  # the server goes on
    # asyncio logs the failure (to the terminal through logging's last resort handler).
    log = capfd.readouterr().err + caplog.text
    assert "Traceback" not in log and "Fatal error" not in log, log
