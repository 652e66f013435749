"""The studio's HTTP API on a real server: every route, bad input, events, restarts."""

from __future__ import annotations

import _thread
import contextlib
import http.client
import io
import json
import os
import queue
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import bomb_png, gradient
from PIL import Image

from mosaicist.errors import MosaicistError
from mosaicist.options import settings as declared_settings
from mosaicist.studio import Studio, make_studio_app, serve_studio
from mosaicist.web import WebServer, bind

#: Small mosaics: a 64 x 48 target in 8 px cells (8 x 6 cells), 16 px tiles.
SETTINGS = {"cell_px": 8, "tile_px": 16}
#: A mosaic that takes a while to write (8192 x 6144 pixels): to cancel it while it runs.
SLOW = {"cell_px": 8, "tile_px": 1024}
PHOTOS = 30


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    """One cache (so one viewer key) for the module's servers, their jobs and its tests."""
    folder = tmp_path_factory.mktemp("studio-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOSAICIST_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(autouse=True)
def _same_cache(_isolated_cache, module_cache, monkeypatch):
    monkeypatch.setenv("MOSAICIST_CACHE_DIR", str(module_cache))


def write_photos(folder: Path, count: int, seed: int) -> Path:
    """``count`` small photos of random colours with some texture."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        base = rng.integers(0, 256, 3)
        picture = np.clip(base + rng.normal(0, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(picture).save(folder / f"p{index:02d}.png")
    return folder


def png_bytes(picture: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A home with a tile folder, another root, and things outside both."""
    base = tmp_path_factory.mktemp("world")
    home = base / "home"
    tiles = write_photos(home / "tiles", PHOTOS, 1)
    (home / "tiles" / "sub").mkdir()
    (home / ".secret-folder").mkdir()
    other = write_photos(base / "other-root" / "more", 12, 2)
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not for the browser")
    write_photos(outside / "photos", 4, 3)
    (home / "escape").symlink_to(outside, target_is_directory=True)
    return {"home": home, "tiles": tiles, "other": other.parent, "outside": outside}


class Api:
    """An httpx client of a studio server that sends the page's token on changes."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.client = httpx.Client(base_url=url, timeout=60)

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def post(self, path: str, body=None, *, headers=None, **kwargs) -> httpx.Response:
        headers = {"X-Mosaicist-Token": self.token} | (headers or {})
        if body is not None:
            kwargs["json"] = body
        return self.client.post(path, headers=headers, **kwargs)

    def delete(self, path: str, headers=None) -> httpx.Response:
        return self.client.delete(path, headers={"X-Mosaicist-Token": self.token}
                                  | (headers or {}))

    def events(self, path: str, timeout: float = 90) -> list[tuple[str, dict]]:
        """Read a server-sent event stream to its end: [(event, data)]."""
        found: list[tuple[str, dict]] = []
        deadline = time.monotonic() + timeout
        with self.client.stream("GET", path) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            kind = None
            for line in response.iter_lines():
                assert time.monotonic() < deadline, found[-3:]
                if line.startswith("event: "):
                    kind = line[len("event: "):]
                elif line.startswith("data: "):
                    found.append((kind, json.loads(line[len("data: "):])))
        return found

    def upload(self) -> dict:
        response = self.post("/api/targets", files={"file": ("my target.png", WORLD_TARGET,
                                                             "image/png")})
        assert response.status_code == 201, response.text
        return response.json()

    def make(self, settings: dict, tiles: str) -> str:
        target = self.upload()
        response = self.post("/api/runs", {"target": target["id"], "tiles": tiles,
                                           "settings": settings})
        assert response.status_code == 202, response.text
        return response.json()["id"]


WORLD_TARGET = png_bytes(gradient(64, 48))


@contextlib.contextmanager
def studio_server(cache: Path, world: dict) -> Iterator[tuple[Api, Studio, WebServer]]:
    """A studio served by uvicorn in a thread on 127.0.0.1."""
    studio = Studio(cache_dir=cache, roots=[world["other"]], home=world["home"])
    listener = bind("127.0.0.1", 0)
    app = make_studio_app(studio, host="127.0.0.1", port=listener.getsockname()[1])
    server = WebServer(app, listener, on_stop=studio.begin_stop)
    server.start()
    api = Api(server.url, studio.token)
    try:
        yield api, studio, server
    finally:
        api.client.close()
        server.stop()
        studio.close()


@pytest.fixture(scope="module")
def served(module_cache, world):
    with studio_server(module_cache, world) as served:
        yield served


@pytest.fixture(scope="module")
def api(served) -> Api:
    return served[0]


@pytest.fixture(scope="module")
def indexed(api, world) -> str:
    """The tile folder indexed at SETTINGS; its spec."""
    tiles = str(world["tiles"])
    response = api.post("/api/index", {"tiles": tiles, "settings": SETTINGS})
    assert response.status_code == 202, response.text
    job = response.json()["job"]
    events = api.events(f"/api/jobs/{job}/events")
    assert events[-1][0] == "done", events[-1]
    return tiles


@pytest.fixture(scope="module")
def finished(api, indexed) -> str:
    """A run made from the indexed tiles, finished."""
    run_id = api.make(SETTINGS, indexed)
    events = api.events(f"/api/runs/{run_id}/events")
    assert events[-1][0] == "done", events[-1]
    return run_id


def fetch(url: str, path: str, headers: dict[str, str] | None = None,
          method: str = "GET") -> tuple[int, bytes, http.client.HTTPMessage]:
    """Send ``path`` verbatim (no client-side normalisation)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read(), response.headers
    finally:
        connection.close()


def error_of(response: httpx.Response) -> str:
    """The one sentence of an error answer (checked to be one)."""
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    message = body["error"]
    assert message and "\n" not in message and "Traceback" not in message
    return message


def workers_of(parent: int) -> list[int]:
    """PIDs of job processes started by the studio in process ``parent``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            words = (entry / "cmdline").read_bytes().split(b"\0")
            if b"mosaicist.studio._worker" in words and str(parent).encode() in words:
                found.append(int(entry.name))
    return found


def wait_until(check, timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def wait_running(api: Api, run_id: str) -> None:
    """Wait until a run's job has started writing (its process is there)."""
    wait_until(lambda: api.get(f"/api/runs/{run_id}").json().get("progress", {}).get("stage")
               not in (None, ""), 60, "the run to start")


# --- the page and its files -----------------------------------------------------------------


def test_page_carries_the_token_and_a_strict_policy(api):
    response = api.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert f'<meta name="mosaicist-token" content="{api.token}">' in response.text
    assert "{{MOSAICIST_TOKEN}}" not in response.text
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe" not in policy and "http" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert api.get("/assets/studio.js").headers["content-type"].startswith("text/javascript")
    assert api.get("/assets/studio.css").headers["content-type"].startswith("text/css")
    script = api.get("/assets/openseadragon/openseadragon.min.js")
    assert script.status_code == 200 and script.text.startswith("//! openseadragon")
    assert api.get("/assets/openseadragon/images/home_rest.png").status_code == 200
    # The page is served at / only (with its token), and nothing outside the asset folders.
    for path in ("/assets/studio.html", "/assets/", "/assets/openseadragon/",
                 "/assets/../_app.py", "/assets/%2e%2e/_app.py", "/assets/..%2f_app.py",
                 "/assets/openseadragon/../../studio/_app.py",
                 "/assets/openseadragon/%2e%2e/%2e%2e/viewer/_server.py",
                 "/assets/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/assets/.hidden",
                 "/assets/openseadragon/%252e%252e/_page.py"):
        status, body, _ = fetch(api.url, path)
        assert status in (400, 404), path
        assert b"import" not in body and b"root:" not in body, path


def test_state(api, world):
    state = api.get("/api/state").json()
    assert state["version"]
    assert state["home"] == str(world["home"].resolve())
    assert state["roots"] == [str(world["home"].resolve()), str(world["other"].resolve())]
    assert state["sources"] == ["cifar10", "cifar100", "galaxy10"]
    names = [item["name"] for item in state["settings"]]
    assert names == [declared.name for declared in declared_settings()]
    tint = next(item for item in state["settings"] if item["name"] == "tint")
    assert tint | {"help": ""} == {
        "name": "tint", "label": "Colour correction", "help": "", "kind": "float",
        "optional": False, "default": 0.0, "choices": None, "low": 0, "high": 1, "unit": "",
        "section": "match", "group": "basic"}
    search = next(item for item in state["settings"] if item["name"] == "search")
    assert "exact" in search["choices"] and search["group"] == "advanced"
    assert {preset["name"] for preset in state["presets"]} == {"seed", "balanced", "varied"}
    assert [preset["name"] for preset in state["presets"] if preset["default"]] == ["balanced"]
    assert {"name": "astronaut", "title": "Astronaut"}.items() <= state["examples"][0].items()


def test_examples(api):
    response = api.get("/api/examples/astronaut")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(response.content)).size[0] > 0
    for name in ("nope", "..", "astronaut.jpg", "%2e%2e"):
        assert api.get(f"/api/examples/{name}").status_code == 404, name
    made = api.post("/api/targets/example", {"name": "astronaut"})
    assert made.status_code == 201
    assert set(made.json()) == {"id", "name", "width", "height"}
    assert api.get(f"/api/targets/{made.json()['id']}").status_code == 200
    assert "no example" in error_of(api.post("/api/targets/example", {"name": "nope"}))
    assert api.post("/api/targets/example", {"name": ["astronaut"]}).status_code == 404


# --- targets ------------------------------------------------------------------------------


def test_upload_a_target(api, world):
    target = api.upload()
    assert target["name"] == "my target.png"
    assert (target["width"], target["height"]) == (64, 48)
    response = api.get(f"/api/targets/{target['id']}")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(response.content))), gradient(64, 48))
    assert api.upload()["id"] == target["id"]  # the same picture is stored once


@pytest.mark.parametrize("upload, status, words", [
    ({"file": ("notes.txt", b"hello, not a picture", "text/plain")}, 400, "not a picture"),
    ({"file": ("empty.png", b"", "image/png")}, 400, "empty"),
    ({"file": ("bomb.png", bomb_png(60000, 60000), "image/png")}, 400, "over the limit"),
    ({"file": ("cut.png", WORLD_TARGET[:200], "image/png")}, 400, "cannot be read"),
    ({"picture": ("a.png", WORLD_TARGET, "image/png")}, 400, "form field 'file'"),
])
def test_bad_uploads(api, upload, status, words):
    response = api.post("/api/targets", files=upload)
    assert response.status_code == status
    assert words in error_of(response)


def test_upload_framing_is_checked(api):
    assert "form field" in error_of(api.post("/api/targets", {"file": "x"}))
    two = [("file", ("a.png", WORLD_TARGET, "image/png")),
           ("file", ("b.png", WORLD_TARGET, "image/png"))]
    two_files = api.post("/api/targets", files=two)
    assert two_files.status_code == 400
    assert "one picture" in error_of(two_files)  # the studio's sentence, not Starlette's
    broken = api.post("/api/targets", content=b"--x\r\nnonsense",
                      headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert broken.status_code == 400
    assert "file name" not in error_of(broken)
    # One picture under a name of thousands of characters: the parser refuses the part's
    # header, and the answer said to send one picture "and nothing else".
    long_name = api.post("/api/targets",
                         files={"file": ("a" * 5000 + ".png", WORLD_TARGET, "image/png")})
    assert long_name.status_code == 400
    assert "file name is too long" in error_of(long_name)
    assert api.post("/api/targets", files={"file": ("a" * 2000 + ".png", WORLD_TARGET,
                                                    "image/png")}).status_code == 201
    # A body over the limit is refused from its announced length, before it is read.
    parts = urllib.parse.urlsplit(api.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.putrequest("POST", "/api/targets")
    for name, value in {"X-Mosaicist-Token": api.token, "Content-Length": str(200 * 2**20),
                        "Content-Type": "multipart/form-data; boundary=x"}.items():
        connection.putheader(name, value)
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and "larger than" in json.loads(response.read())["error"]
    connection.close()


def test_stored_targets_by_id_only(api):
    for target, status in [("zz", 400), ("0" * 32, 404), ("A" * 32, 400),
                           ("..%2f..%2fetc%2fpasswd", 404), ("%2e%2e", 400)]:
        assert fetch(api.url, f"/api/targets/{target}")[0] == status, target


# --- folders ------------------------------------------------------------------------------


def test_folders(api, world):
    home = world["home"].resolve()
    listing = api.get("/api/folders").json()
    assert listing == {"path": str(home), "parent": None, "images": 0,
                       "folders": [{"name": "tiles", "path": str(home / "tiles")}]}
    tiles = api.get("/api/folders", params={"path": str(world["tiles"])}).json()
    assert tiles["images"] == PHOTOS and tiles["parent"] == str(home)
    assert tiles["folders"] == [{"name": "sub", "path": str(home / "tiles" / "sub")}]
    other = api.get("/api/folders", params={"path": str(world["other"])}).json()
    assert other["parent"] is None and [f["name"] for f in other["folders"]] == ["more"]
    for path, status in [
        ("/", 403), ("/etc", 403), (str(world["outside"]), 403),
        (str(home / "escape"), 403), (str(home / "escape" / "photos"), 403),
        (str(home / ".." / "outside"), 403), (str(home) + "/../../..", 403),
        ("tiles", 400), ("~nobody-here", 400), ("\x00", 400), (str(home / ("a" * 300)), 400),
        (str(home / "missing"), 404), (str(world["tiles"] / "p00.png"), 404),
    ]:
        response = api.get("/api/folders", params={"path": path})
        assert response.status_code == status, path
        message = error_of(response)
        assert "not for the browser" not in message


def test_folders_whose_names_are_not_utf8_are_left_out(api, world):
    # Such a name cannot go to the page in JSON (the listing was a 500), nor come back.
    more = world["other"] / "more"
    (more / "plain").mkdir()
    os.mkdir(os.fsencode(more) + b"/caf\xe9")
    try:
        response = api.get("/api/folders", params={"path": str(more)})
        assert response.status_code == 200, response.text
        assert response.json()["folders"] == [{"name": "plain", "path": str(more / "plain")}]
        assert response.json()["images"] == 12
    finally:
        os.rmdir(os.fsencode(more) + b"/caf\xe9")
        (more / "plain").rmdir()


def test_a_root_or_home_whose_path_is_not_utf8_leaves_the_page_working(tmp_path):
    # The page's state names the roots in JSON: such a --root made GET /api/state (the
    # first thing the page asks) a 500, and the whole studio unusable.
    odd = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9"))
    odd.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    with pytest.raises(MosaicistError, match=r"caf\\xe9: the folder's path is not UTF-8"):
        Studio(cache_dir=tmp_path / "cache", roots=[odd], home=home)
    studio = Studio(cache_dir=tmp_path / "cache", home=odd)
    try:
        assert studio.roots == [] and studio.state()["home"] is None
        json.dumps(studio.state(), ensure_ascii=False).encode("utf-8")
    finally:
        studio.close()


# --- settings, command line, preview ------------------------------------------------------


def test_command(api, indexed):
    target = api.upload()
    response = api.post("/api/command", {"target": target["id"], "tiles": indexed,
                                         "settings": {**SETTINGS, "max_uses": 2}})
    command = response.json()["command"]
    assert command.startswith("mosaicist make ") and command.endswith(" -o mosaic.png")
    assert f"--tiles {indexed}" in command
    assert "--cell 8 --tile-px 16" in command and "--max-uses 2" in command


@pytest.mark.parametrize("route", ["/api/command", "/api/preview", "/api/runs"])
def test_bad_settings_targets_and_tiles(api, indexed, world, route):
    target = api.upload()["id"]
    good = {"target": target, "tiles": indexed, "settings": SETTINGS}
    cases = [
        ({"settings": {"max_uses": 0}}, 400, "\u201cmost uses of one photo\u201d must be at "
                                             "least 1"),
        ({"settings": {"tint": "lots"}}, 400, "must be a number"),
        ({"settings": {"metric": "rainbow"}}, 400, "unknown \u201ccolour matching\u201d"),
        ({"settings": {"colour": 1}}, 400, "unknown setting 'colour'"),
        # Registry values: a run was recorded (and failed) for these; the command shown.
        ({"settings": {"search": "zz"}}, 400, "unknown"),
        ({"settings": {"device": "\u0000"}}, 400, "unknown"),
        ({"settings": [1, 2]}, 400, "settings must be an object"),
        ({"target": "0" * 32}, 404, "choose it again"),
        ({"target": "../../etc/passwd"}, 400, "choose a picture"),
        ({"target": None}, 400, "choose a picture"),
        ({"tiles": ""}, 400, "choose the photos"),
        ({"tiles": "/etc"}, 403, "outside the folders"),
        ({"tiles": str(world["home"] / "escape" / "photos")}, 403, "outside the folders"),
        ({"tiles": "cifar10:/etc"}, 400, "give the full path"),
        ({"tiles": str(world["home"] / "nothing")}, 400, "no such folder"),
        ({"tiles": str(world["home"] / "nothing.npz")}, 400, "no such array file"),
        ({"tiles": str(world["tiles"] / "p00.png")}, 400, "not a tile source"),
    ]
    for change, status, words in cases:
        response = api.post(route, good | change)
        assert response.status_code == status, (change, response.text)
        assert words in error_of(response), (change, response.text)
    for body in (b"{", b"[1]", b"\"text\"", b"[" * 100000, b"{\"settings\": NaN}"):
        response = api.post(route, content=body,
                            headers={"Content-Type": "application/json"})
        assert response.status_code == 400, body[:20]
        error_of(response)
    response = api.post(route, content=b" " * (300 * 1024),
                        headers={"Content-Type": "application/json"})
    assert response.status_code == 413


def test_what_the_target_and_settings_rule_out_is_refused_before_a_run(api, indexed):
    # These were recorded as runs that then failed (the message naming settings by their
    # Python names and the picture by its path in the studio's cache), and previewed
    # where make refuses them.
    target = api.upload()
    runs = len(api.get("/api/runs").json())
    cases = [
        ({"max_target_pixels": 1}, ("/api/preview", "/api/runs"),
         "my target.png: 64x48 = 3,072 pixels is over the target limit of 1 pixel (raise it "
         "with \u201clargest picture accepted\u201d)"),
        ({"adaptive": 6}, ("/api/preview", "/api/runs"),
         "\u201csmaller cells where there is detail\u201d 6 halves cells 6 times"),
        ({"cells": 1}, ("/api/preview", "/api/runs"),
         "\u201cnumber of cells\u201d 1 chooses cells of 48 px, but \u201ccell size in the "
         "picture\u201d is 8"),
        # What the tiles rule out too, once a preview warmed them: a run was recorded,
        # then failed.
        ({"min_uses": 2}, ("/api/preview", "/api/runs"),  # 30 photos twice: 60 of 48 cells
         "\u201cleast uses of every photo\u201d 2 needs 60 cells for the 30 tiles"),
        ({"max_uses": 1, "min_spacing": 0},
         ("/api/preview", "/api/runs"), "need at least 48 tiles, but the library has 30"),
    ]
    for change, routes, words in cases:
        for route in routes:
            response = api.post(route, {"target": target["id"], "tiles": indexed,
                                        "settings": SETTINGS | change})
            assert response.status_code == 400, (route, change, response.text)
            message = error_of(response)
            assert words in message and "/studio/" not in message, (route, message)
    assert len(api.get("/api/runs").json()) == runs


def test_a_print_size_is_indexed_at_the_tile_size_it_gives_the_target(api, world):
    # The print decides the tile size, so the index's: indexed without the target, the
    # tiles were indexed at the default 32 px, and the preview of the print (10 px
    # tiles) said "not indexed yet" however often the page indexed them.
    target = api.upload()
    tiles = str(world["other"] / "more")
    printed = {"cell_px": 8, "print_size": "2.032x1.524cm", "dpi": 100}
    body = {"target": target["id"], "tiles": tiles, "settings": printed}
    assert "not indexed yet" in error_of(api.post("/api/preview", body))
    job = api.post("/api/index", body).json()["job"]
    final = api.events(f"/api/jobs/{job}/events")[-1]
    assert final[0] == "done" and final[1]["data"]["result"]["match_px"] == 10, final
    response = api.post("/api/preview", body)
    assert response.status_code == 200, response.text
    # Sizes the target rules out are refused as the preview and the run refuse them.
    response = api.post("/api/index", body | {"settings": printed | {"print_size": "1x1mm"}})
    assert response.status_code == 400 and "\u201cprint size\u201d 1x1mm" in error_of(response)
    response = api.post("/api/index", body | {"settings": printed | {"max_target_pixels": 1}})
    assert error_of(response).startswith("my target.png: 64x48 = 3,072 pixels is over")
    assert api.post("/api/index", body | {"target": "0" * 32}).status_code == 404


def test_preview(api, indexed, world):
    target = api.upload()["id"]
    body = {"target": target, "tiles": indexed, "settings": SETTINGS}
    response = api.post("/api/preview", body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    picture = Image.open(io.BytesIO(response.content))
    assert picture.format == "JPEG" and picture.size[0] > 0
    assert int(response.headers["x-mosaicist-cells"]) == 48
    assert float(response.headers["x-mosaicist-seconds"]) >= 0
    command = urllib.parse.unquote(response.headers["x-mosaicist-command"])
    assert command == api.post("/api/command", body).json()["command"]
    # Tiles not indexed at these settings yet: one sentence saying so.
    response = api.post("/api/preview", body | {"tiles": str(world["other"])})
    assert response.status_code == 400
    error_of(response)


# --- jobs ---------------------------------------------------------------------------------


def test_index_job(api, indexed):
    response = api.post("/api/index", {"tiles": indexed, "settings": SETTINGS})
    assert response.status_code == 202
    job = response.json()["job"]
    events = api.events(f"/api/jobs/{job}/events")
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "progress" and kinds[-1] == "done" and kinds.count("done") == 1
    assert all(data["data"]["job"] == job for _, data in events)
    status = api.get(f"/api/jobs/{job}").json()
    assert status["state"] == "done" and status["skipped"] == []
    assert api.post(f"/api/jobs/{job}/cancel").json()["cancelled"] is False
    # A late subscriber gets the final event at once.
    assert api.events(f"/api/jobs/{job}/events")[-1][0] == "done"
    for path in ("/api/jobs/" + "0" * 32, "/api/jobs/nope", "/api/jobs/nope/events"):
        assert api.get(path).status_code == 404, path
    assert api.post("/api/jobs/nope/cancel").status_code == 404


# --- runs ---------------------------------------------------------------------------------


def test_a_finished_run(api, finished, world):
    run = api.get(f"/api/runs/{finished}").json()
    assert run["status"] == "done" and run["error"] is None
    assert run["target_name"] == "my target.png" and run["tiles"] == str(world["tiles"])
    assert run["settings"]["cell_px"] == 8 and run["settings"]["tile_px"] == 16
    assert run["command"].startswith("mosaicist make ")
    assert run["report"]["grid"]["cols"] == 8 and run["report"]["grid"]["rows"] == 6
    assert {"png", "jpeg", "tiff", "deepzoom_zip", "placements_csv", "placements_json",
            "report", "thumbnail", "viewer"} <= set(run["outputs"])
    assert "folder" not in run
    listed = api.get("/api/runs").json()
    assert finished in [item["id"] for item in listed]
    created = [item["created"] for item in listed]
    assert created == sorted(created, reverse=True)
    # Every output downloads, named after the target.
    for kind in run["outputs"]:
        response = api.get(run["files"][kind])
        assert response.status_code == 200, kind
        disposition = response.headers.get("content-disposition")
        if kind == "thumbnail":
            assert disposition is None and response.headers["content-type"] == "image/jpeg"
        else:
            assert disposition.startswith('attachment; filename="my-target-'), disposition
    png = Image.open(io.BytesIO(api.get(run["files"]["png"]).content))
    assert png.size == (128, 96)
    with zipfile.ZipFile(io.BytesIO(api.get(run["files"]["deepzoom_zip"]).content)) as archive:
        assert any(name.endswith(".dzi") for name in archive.namelist())
    for kind in ("nope", "folder", "..", "%2e%2e"):
        assert fetch(api.url, f"/api/runs/{finished}/files/{kind}")[0] == 404, kind


def test_a_runs_viewer(api, finished, world):
    run = api.get(f"/api/runs/{finished}").json()
    page = api.get(run["viewer_url"])
    assert page.status_code == 200 and "mosaicist-data" in page.text
    policy = page.headers["content-security-policy"]
    assert "frame-ancestors 'self'" in policy and "http" not in policy
    assert page.headers["x-frame-options"] == "SAMEORIGIN"
    base = f"/runs/{finished}/view/"
    response = api.get(f"/runs/{finished}/view", follow_redirects=False)
    assert response.status_code == 302 and response.headers["location"] == base
    response = api.get(base, follow_redirects=False)
    assert response.status_code == 302 and response.headers["location"] == run["viewer_url"]
    assert api.get(base + "mosaic.dzi").headers["content-type"] == "application/xml"
    assert api.get(base + "mosaic_files/0/0_0.jpeg").status_code == 200
    # The originals its signed manifest lists, from the tile folder.
    original = api.get(base + "mosaicist-original/0")
    assert original.status_code == 200
    assert original.content in {path.read_bytes() for path in world["tiles"].glob("*.png")}
    for path in ("mosaicist-original/999", "../../api/state", "%2e%2e/%2e%2e/api/state",
                 "mosaic_files/../report.json", "report.json", "placements.json",
                 "mosaic.viewer.json", "mosaicist-original/..%2f..%2fsecret.txt"):
        status, body, _ = fetch(api.url, base + path)
        assert status == 404, path
    for run_id in ("0" * 32, "nope", "..", finished.upper()):
        assert fetch(api.url, f"/runs/{run_id}/view/mosaic.html")[0] == 404, run_id


def test_render_again_and_delete(api, finished):
    for tile_px, words in [(0, "\u201ctile size\u201d must be between 1 and 1024"),
                           ("big", "must be a whole number"), (None, "must be set"),
                           (5000, "between 1 and 1024")]:
        response = api.post(f"/api/runs/{finished}/render", {"tile_px": tile_px})
        assert response.status_code == 400 and words in error_of(response), tile_px
    assert api.post(f"/api/runs/{'0' * 32}/render", {"tile_px": 8}).status_code == 404
    response = api.post(f"/api/runs/{finished}/render", {"tile_px": 8})
    assert response.status_code == 202
    again = response.json()["id"]
    assert again != finished
    events = api.events(f"/api/runs/{again}/events")
    assert events[-1][0] == "done", events[-1]
    run = api.get(f"/api/runs/{again}").json()
    assert run["settings"]["tile_px"] == 8 and run["command"].startswith("mosaicist render ")
    png = Image.open(io.BytesIO(api.get(run["files"]["png"]).content))
    assert png.size == (64, 48)
    assert api.post(f"/api/runs/{again}/cancel").status_code == 409  # it is done
    # Delete: the run, its files and its viewer are gone.
    assert api.delete(f"/api/runs/{again}").json() == {"deleted": again}
    assert api.get(f"/api/runs/{again}").status_code == 404
    assert api.get(run["files"]["png"]).status_code == 404
    assert api.get(run["viewer_url"]).status_code == 404
    assert api.delete(f"/api/runs/{again}").status_code == 404
    assert again not in [item["id"] for item in api.get("/api/runs").json()]
    assert api.get(f"/api/runs/{finished}").json()["status"] == "done"


def test_a_run_keeps_the_name_its_page_uploaded_the_target_as(api, indexed):
    # Two uploads of one file are one stored picture, which takes the latest upload's name:
    # a run made from the first tab was named (and its downloads too) after the second.
    first = api.post("/api/targets", files={"file": ("holiday.png", WORLD_TARGET, "image/png")})
    second = api.post("/api/targets", files={"file": ("../x.png", WORLD_TARGET, "image/png")})
    assert first.json()["id"] == second.json()["id"]
    assert (first.json()["name"], second.json()["name"]) == ("holiday.png", "x.png")
    target = first.json()["id"]
    made = []
    try:
        for sent, shown in (("holiday.png", "holiday.png"), (None, "x.png"),
                            ("a/b\\c\x00.png", "c.png")):
            body = {"target": target, "tiles": indexed, "settings": SETTINGS}
            if sent is not None:
                body["target_name"] = sent
            response = api.post("/api/runs", body)
            assert response.status_code == 202, response.text
            made.append(response.json()["id"])
            assert api.get(f"/api/runs/{made[-1]}").json()["target_name"] == shown
        refused = api.post("/api/runs", {"target": target, "tiles": indexed,
                                         "settings": SETTINGS, "target_name": 5})
        assert refused.status_code == 400 and "target_name" in error_of(refused)
    finally:
        for run_id in made:
            api.post(f"/api/runs/{run_id}/cancel")
            api.events(f"/api/runs/{run_id}/events")
            assert api.delete(f"/api/runs/{run_id}").status_code == 200


def test_cancel_a_running_and_a_queued_run(api, indexed):
    running = api.make(SLOW, indexed)
    queued = api.make(SETTINGS, indexed)  # one run at a time: this one waits
    wait_running(api, running)
    assert api.get(f"/api/runs/{queued}").json()["status"] == "queued"
    assert api.delete(f"/api/runs/{running}").status_code == 409  # cancel it first
    response = api.post(f"/api/runs/{queued}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert api.events(f"/api/runs/{queued}/events")[-1][0] == "cancelled"
    stream: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: stream.put(api.events(f"/api/runs/{running}/events")),
                     daemon=True).start()
    response = api.post(f"/api/runs/{running}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    events = stream.get(timeout=30)
    assert events[0][0] == "progress" and events[-1][0] == "cancelled"
    run = api.get(f"/api/runs/{running}").json()
    assert run["status"] == "cancelled" and run["outputs"] == []
    assert workers_of(os.getpid()) == []
    assert api.delete(f"/api/runs/{running}").status_code == 200


def test_head_of_a_running_jobs_event_stream_ends(api, indexed):
    # HEAD of a stream that never ends never ended either: the connection was held (and
    # its next request never answered) until the job ended.
    running = api.make(SLOW, indexed)
    try:
        wait_running(api, running)
        with httpx.Client(base_url=api.url, timeout=10) as client:
            for path in (f"/api/runs/{running}/events", f"/api/jobs/{running}/events"):
                head = client.head(path)
                assert head.status_code == 200 and head.content == b""
                assert head.headers["content-type"].startswith("text/event-stream")
                # The same connection answers the next request.
                assert client.get(f"/api/runs/{running}").json()["status"] == "running"
            assert client.head("/api/jobs/nope/events").status_code == 404
            assert client.head("/api/runs/nope/events").status_code == 404
    finally:
        assert api.post(f"/api/runs/{running}/cancel").status_code == 200
    assert api.delete(f"/api/runs/{running}").status_code == 200


def test_a_mosaic_being_drawn_again_is_not_deleted_under_it(api, indexed):
    # Deleted, its placements went with it, and the queued render failed naming a file
    # in the studio's cache.
    source = api.make(SETTINGS, indexed)
    assert api.events(f"/api/runs/{source}/events")[-1][0] == "done"
    running = api.make(SLOW, indexed)  # the render waits behind it
    again = api.post(f"/api/runs/{source}/render", {"tile_px": 8}).json()["id"]
    response = api.delete(f"/api/runs/{source}")
    assert response.status_code == 409 and "drawn again" in error_of(response)
    for run_id in (again, running):
        assert api.post(f"/api/runs/{run_id}/cancel").json()["status"] == "cancelled"
    for run_id in (source, again, running):
        assert api.delete(f"/api/runs/{run_id}").status_code == 200, run_id


@pytest.mark.parametrize("method, path", [
    ("POST", "/api/targets"), ("POST", "/api/targets/example"), ("POST", "/api/index"),
    ("POST", "/api/jobs/x/cancel"), ("POST", "/api/preview"), ("POST", "/api/command"),
    ("POST", "/api/runs"), ("POST", "/api/runs/x/cancel"), ("DELETE", "/api/runs/x"),
    ("POST", "/api/runs/x/render"),
])
def test_changes_need_the_token_and_the_page_origin(api, method, path):
    host = urllib.parse.urlsplit(api.url).netloc
    token = {"X-Mosaicist-Token": api.token}
    for headers in ({}, {"X-Mosaicist-Token": "x" * 43}, token | {"Origin": "http://evil.example"},
                    token | {"Origin": "null"}, token | {"Sec-Fetch-Site": "cross-site"}):
        response = api.client.request(method, path, headers=headers, content=b"{}")
        assert response.status_code == 403, headers
        error_of(response)
        if not headers:
            # No page at all (a script): told that changes come from the studio's page,
            # not to reload one (session 35).
            assert "this request has no token: mosaicist studio" in response.text
            assert "reload" not in response.text
        elif "Origin" not in headers and "Sec-Fetch-Site" not in headers:
            # Said in words a studio user can act on ("token" meant nothing to them).
            assert "earlier start of mosaicist studio" in response.text
            assert "token" not in response.text
    response = api.client.request(method, path, content=b"{}",
                                  headers=token | {"Host": f"evil.example:{host.split(':')[1]}"})
    assert response.status_code == 421


def test_reads_need_this_host_only(api):
    port = urllib.parse.urlsplit(api.url).port
    for path in ("/", "/api/state", "/api/runs", "/api/folders", "/assets/studio.js"):
        assert fetch(api.url, path, {"Host": f"rebind.example:{port}"})[0] == 421, path
        assert fetch(api.url, path, {"Host": f"localhost:{port}"})[0] == 200, path
    assert fetch(api.url, "/api/state", method="PUT")[0] == 405
    response = api.get("/api/nothing")
    assert response.status_code == 404 and error_of(response)
    for path in ("/api/runs/nope", "/api/runs/" + "0" * 32, "/api/runs/nope/events"):
        assert api.get(path).status_code == 404, path
    assert api.post("/api/runs/nope/cancel").status_code == 404
    assert api.delete("/api/runs/nope").status_code == 404


# --- stopping and restarting --------------------------------------------------------------


def test_stopping_the_server_cancels_its_jobs_and_ends_its_streams(module_cache, world,
                                                                    indexed):
    with studio_server(module_cache, world) as (api, studio, server):
        run_id = api.make(SLOW, indexed)
        wait_running(api, run_id)
        assert workers_of(os.getpid())
        stream: queue.Queue = queue.Queue()

        def follow() -> None:
            try:
                stream.put(api.events(f"/api/runs/{run_id}/events"))
            except httpx.HTTPError as error:  # the server went away mid-stream
                stream.put(error)

        threading.Thread(target=follow, daemon=True).start()
        time.sleep(0.3)
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 15
        assert studio.history.get(run_id).status == "cancelled"
        assert workers_of(os.getpid()) == []
        stream.get(timeout=10)  # the event stream ended with the server


def test_serve_studio_opens_the_browser_and_stops_on_interrupt(module_cache, world,
                                                                 monkeypatch, capsys):
    opened: list[str] = []
    pages: list[str] = []

    def visit(url: str) -> None:
        # Runs while serve_studio serves: read the page, then press Ctrl+C (whatever
        # happened, so that a failed read fails the test instead of hanging it).
        try:
            pages.append(httpx.get(url, timeout=30).text)
        finally:
            _thread.interrupt_main()

    def fake_open(url: str) -> bool:
        opened.append(url)
        threading.Thread(target=visit, args=(url,), daemon=True).start()
        return True

    monkeypatch.setattr("webbrowser.open", fake_open)
    monkeypatch.setenv("HOME", str(world["home"]))
    # Ctrl+C as a person presses it, whatever an earlier test (a Dask cluster) left.
    previous_interrupt = signal.signal(signal.SIGINT, signal.default_int_handler)
    lines: list[str] = []
    handler = signal.getsignal(signal.SIGTERM)
    try:
        serve_studio(cache_dir=module_cache, roots=[world["other"]], announce=lines.append)
    finally:
        signal.signal(signal.SIGINT, previous_interrupt)
    assert len(lines) == 1 and lines[0].startswith("mosaicist studio: http://127.0.0.1:")
    url = lines[0].split()[2]
    assert opened == [url] and 'name="mosaicist-token"' in pages[0]
    assert signal.getsignal(signal.SIGTERM) is handler
    # Stopped for good: its thread is gone (not merely marked so by an interrupted join).
    port = urllib.parse.urlsplit(url).port
    assert f"mosaicist-web-{port}" not in [thread.name for thread in threading.enumerate()]
    with pytest.raises(httpx.HTTPError):  # the server is closed
        httpx.get(url, timeout=2)
    assert capsys.readouterr().err == ""
    with pytest.raises(MosaicistError, match="not a folder"):
        serve_studio(cache_dir=module_cache, roots=[world["home"] / "missing"],
                     open_browser=False)


def start_studio_process(cache: Path, world: dict) -> tuple[subprocess.Popen, Api]:
    """``mosaicist studio`` in a process of its own; return it and a client of it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mosaicist", "studio", "--no-browser", "--cache-dir", str(cache),
         "--root", str(world["other"])],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env=os.environ | {"HOME": str(world["home"])},
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stderr],
                     daemon=True).start()
    while True:
        line = lines.get(timeout=60)
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        if match:
            break
    page = httpx.get(match.group(0) + "/", timeout=30).text
    token = re.search(r'name="mosaicist-token" content="([^"]+)"', page).group(1)
    return process, Api(match.group(0), token)


def test_restart_marks_a_cut_off_run_and_keeps_finished_ones(tmp_path, world, indexed):
    cache = tmp_path / "cache"
    process, api = start_studio_process(cache, world)
    try:
        done = api.make(SETTINGS, str(world["tiles"]))
        assert api.events(f"/api/runs/{done}/events")[-1][0] == "done"
        cut = api.make(SLOW, str(world["tiles"]))
        wait_running(api, cut)
        assert workers_of(process.pid)
        process.kill()  # a crash: no shutdown at all
        process.wait(timeout=10)
        wait_until(lambda: not workers_of(process.pid), 15, "the job to die with the studio")
    finally:
        api.client.close()
        process.kill()
        process.wait()
    with studio_server(cache, world) as (again, studio, _):
        assert studio.interrupted == 1
        runs = {run["id"]: run for run in again.get("/api/runs").json()}
        assert runs[cut]["status"] == "interrupted" and "cut off" in runs[cut]["error"]
        assert runs[cut]["outputs"] == []
        assert runs[done]["status"] == "done"
        assert again.get(runs[done]["files"]["png"]).status_code == 200
        assert again.get(runs[done]["viewer_url"]).status_code == 200
        assert again.events(f"/api/runs/{cut}/events") == [
            ("interrupted", {"kind": "interrupted", "stage": "", "done": 0, "total": None,
                             "message": runs[cut]["error"],
                             "data": {"run": cut, "state": "interrupted"}})]
        assert again.events(f"/api/runs/{done}/events")[-1][0] == "done"
        assert not [path for path in (cache / "studio" / "runs" / cut).rglob("*")]
    # Stopped with SIGTERM, the studio cancels its run and leaves no process.
    process, api = start_studio_process(cache, world)
    try:
        run_id = api.make(SLOW, str(world["tiles"]))
        wait_running(api, run_id)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert not workers_of(process.pid)
    finally:
        api.client.close()
        process.kill()
        process.wait()
    with studio_server(cache, world) as (again, studio, _):
        assert studio.interrupted == 0
        assert again.get(f"/api/runs/{run_id}").json()["status"] == "cancelled"


# --- a damaged history, cut-off requests -----------------------------------------------------


def insert_run(studio: Studio, **columns) -> str:
    """A row written into the history as a hand or another program might have left it."""
    run = studio.history.create(target_name="hand-made.png", tiles="cifar10", settings={},
                                command="mosaicist make hand-made.png")
    studio.history.update(run.id, status="done")
    with contextlib.closing(sqlite3.connect(studio.history.database)) as connection:
        for name, value in columns.items():
            connection.execute(f"UPDATE runs SET {name} = ? WHERE id = ?", (value, run.id))
        connection.commit()
    return run.id


def test_history_entries_that_lead_outside_the_runs_folder_are_not_used(served, finished,
                                                                         tmp_path):
    # A viewer or placements named by a full path (or with '..') in the history were
    # served and drawn again from wherever they pointed.
    api, studio, _ = served
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(studio.history.folder(finished), elsewhere)
    outputs = {"viewer": str(elsewhere / "mosaic.html"),
               "placements_json": str(elsewhere / "placements.json"),
               "report": f"../{finished}/report.json", "png": "mosaic.png\x00.txt",
               "thumbnail": 5, "folder": "mosaic.png"}
    run_id = insert_run(studio, outputs=json.dumps(outputs))
    try:
        run = api.get(f"/api/runs/{run_id}")
        assert run.status_code == 200 and run.json()["outputs"] == []
        assert run.json()["viewer_url"] is None and run.json()["files"] == {}
        for path in ("mosaic.html", "mosaic.dzi", ""):
            assert fetch(api.url, f"/runs/{run_id}/view/{path}")[0] == 404, path
        for kind in outputs:
            assert api.get(f"/api/runs/{run_id}/files/{kind}").status_code == 404, kind
        runs = len(api.get("/api/runs").json())
        response = api.post(f"/api/runs/{run_id}/render", {"tile_px": 8})
        assert response.status_code == 409, response.text
        assert len(api.get("/api/runs").json()) == runs
    finally:
        studio.history.delete(run_id)


def test_a_damaged_history_row_does_not_take_the_history_down(served):
    # Each of these made every listing of the history a 500.
    api, studio, _ = served
    damaged = [insert_run(studio, settings="{not json"), insert_run(studio, outputs="[1, 2]"),
               insert_run(studio, created="yesterday"), insert_run(studio, status="weird"),
               insert_run(studio, report="NaN"), insert_run(studio, report="[1]")]
    try:
        response = api.get("/api/runs")
        assert response.status_code == 200, response.text
        assert set(damaged) <= {run["id"] for run in response.json()}
        for run_id in damaged:
            run = api.get(f"/api/runs/{run_id}")
            assert run.status_code == 200, run_id
        weird = api.get(f"/api/runs/{damaged[3]}").json()
        assert weird["status"] == "failed" and "damaged" in weird["error"]
        assert api.get(f"/api/runs/{damaged[0]}").json()["settings"] == {}
        assert api.get(f"/api/runs/{damaged[4]}").json()["report"] is None
        # A damaged row can still be deleted.
        assert api.delete(f"/api/runs/{damaged[3]}").status_code == 200
    finally:
        for run_id in damaged:
            studio.history.delete(run_id)


def test_a_run_whose_files_are_gone_offers_none_of_them_and_is_not_drawn_again(served,
                                                                               indexed):
    api, studio, _ = served
    source = api.make(SETTINGS, indexed)
    assert api.events(f"/api/runs/{source}/events")[-1][0] == "done"
    for name in ("placements.json", "thumbnail.jpg"):
        (studio.history.folder(source) / name).unlink()
    # What was deleted from the disk is not offered: no broken thumbnail or download.
    run = api.get(f"/api/runs/{source}").json()
    assert run["thumbnail_url"] is None and "thumbnail" not in run["files"]
    assert "placements_json" not in run["outputs"] and "png" in run["outputs"]
    runs = len(api.get("/api/runs").json())
    response = api.post(f"/api/runs/{source}/render", {"tile_px": 8})
    assert response.status_code == 409 and "placements" in error_of(response)
    assert len(api.get("/api/runs").json()) == runs  # no failed run left in the history
    assert api.delete(f"/api/runs/{source}").status_code == 200


def test_an_upload_cut_off_mid_body_is_no_failure_of_the_server(served, capfd):
    # The person closed the page mid-upload: the terminal showed "POST /api/targets
    # failed: ClientDisconnect", the line of a fault of the server.
    from conftest import post_cut_off

    api, studio, server = served
    port = urllib.parse.urlsplit(api.url).port
    app = make_studio_app(studio, host="127.0.0.1", port=port)
    part = (b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + WORLD_TARGET)
    headers = [(b"x-mosaicist-token", studio.token.encode()),
               (b"content-type", b"multipart/form-data; boundary=zz"),
               (b"content-length", str(len(part) + 100).encode())]
    capfd.readouterr()
    sent = post_cut_off(app, "/api/targets", port, headers, part[:len(part) // 2])
    assert sent[0]["status"] == 400
    assert "failed" not in capfd.readouterr().err


def test_a_history_row_whose_id_is_no_run_id_neither_stops_the_studio_nor_is_listed(
        tmp_path, world):
    # Left running by a damaged history, it made the studio refuse to start ("'../x' is
    # not a run id") when its runs were marked as cut off.
    Studio(cache_dir=tmp_path, home=world["home"]).close()
    with contextlib.closing(sqlite3.connect(tmp_path / "studio" / "history.sqlite")) as db:
        db.execute("INSERT INTO runs(id, created, status, target_name, tiles, settings, "
                   "command, report, error, outputs) VALUES ('../../x', 1, 'running', 'n', "
                   "'cifar10', '{}', 'c', NULL, NULL, '{}')")
        db.commit()
    studio = Studio(cache_dir=tmp_path, home=world["home"])
    try:
        assert studio.interrupted == 1
        assert studio.history.runs() == []
    finally:
        studio.close()


def test_a_run_whose_report_is_damaged_is_still_drawn_again(served, indexed):
    # The render failed with "unexpected JSONDecodeError": the source's report only
    # lends the new one its figures.
    api, studio, _ = served
    source = api.make(SETTINGS, indexed)
    assert api.events(f"/api/runs/{source}/events")[-1][0] == "done"
    (studio.history.folder(source) / "report.json").write_text("{damaged")
    again = api.post(f"/api/runs/{source}/render", {"tile_px": 8}).json()["id"]
    assert api.events(f"/api/runs/{again}/events")[-1][0] == "done"
    run = api.get(f"/api/runs/{again}").json()
    assert run["status"] == "done" and run["report"]["tile_px"] == 8
    for run_id in (again, source):
        assert api.delete(f"/api/runs/{run_id}").status_code == 200


def test_a_history_that_cannot_be_used_is_a_fault_of_the_server_not_of_the_request(
        tmp_path, world):
    # A damaged database under a serving studio answered 400, telling the page that what
    # it sent was wrong.
    with studio_server(tmp_path / "cache", world) as (api, studio, _):
        assert api.get("/api/runs").status_code == 200
        database = studio.history.database
        for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
            if path.exists():
                path.write_bytes(b"not a database " * 500)
        for response in (api.get("/api/runs"), api.get(f"/api/runs/{'0' * 32}"),
                         api.delete(f"/api/runs/{'0' * 32}")):
            assert response.status_code == 503, response.text
            assert "history" in error_of(response)
        # What does not touch the history still answers.
        assert api.get("/api/state").status_code == 200


# --- uploaded targets nobody needs ---------------------------------------------------------


def age(path: Path, seconds: float) -> None:
    """Make ``path`` look last changed ``seconds`` ago."""
    when = time.time() - seconds
    os.utime(path, (when, when))


def stored_target(studio: Studio, api: Api, picture: np.ndarray, name: str) -> Path:
    """Upload ``picture``; its stored file, made to look two days old (with its description)."""
    response = api.post("/api/targets", files={"file": (name, png_bytes(picture), "image/png")})
    assert response.status_code == 201, response.text
    path = studio.targets / f"{response.json()['id']}.png"
    for file in (path, path.with_suffix(".json")):
        age(file, 2 * 24 * 3600)
    return path


def test_uploaded_targets_nothing_needs_are_removed_and_the_others_kept(tmp_path, world,
                                                                         indexed):
    # Every upload stayed in the studio's folder forever.
    cache = tmp_path / "cache"
    with studio_server(cache, world) as (api, studio, _):
        unused = stored_target(studio, api, gradient(40, 30), "unused.png")
        made = stored_target(studio, api, gradient(48, 32), "made.png")
        old_row = stored_target(studio, api, gradient(36, 36), "old-row.png")
        recent = studio.targets / f"{api.upload()['id']}.png"
        # A row of a history written before runs recorded their target: its command names it.
        with contextlib.closing(sqlite3.connect(studio.history.database)) as db:
            db.execute("INSERT INTO runs(id, created, status, target_name, tiles, settings, "
                       "command, outputs) VALUES (?, 1, 'done', 'n', 'cifar10', '{}', ?, '{}')",
                       ("1" * 32, f"mosaicist make '{old_row}' --tiles cifar10"))
            db.commit()
        run_id = api.post("/api/runs", {"target": made.stem, "tiles": indexed,
                                        "settings": SETTINGS}).json()["id"]
        assert api.events(f"/api/runs/{run_id}/events")[-1][0] == "done"
        age(made, 2 * 24 * 3600)
        # Not the studio's: a link and other names are never removed.
        outside = tmp_path / "outside.png"
        outside.write_bytes(b"x")
        link = studio.targets / f"{'2' * 32}.png"
        link.symlink_to(outside)
        other = studio.targets / "notes.txt"
        other.write_text("mine")
        for path in (link, other):
            os.utime(path, (1, 1), follow_symlinks=False)
        # The run ended: the target no run refers to was removed with its description (by
        # the thread that followed the run, just after its end was told).
        wait_until(lambda: not unused.exists(), 30, "the unused target to be removed")
        assert not unused.with_suffix(".json").exists()
        assert made.exists() and old_row.exists() and recent.exists()
        assert link.is_symlink() and outside.exists() and other.exists()
        assert studio.clean_targets() == []
        # Its run deleted, the picture goes too; one used since (a preview) stays.
        api.post("/api/command", {"target": old_row.stem, "tiles": indexed,
                                  "settings": SETTINGS})
        assert api.delete(f"/api/runs/{run_id}").status_code == 200
        assert not made.exists()
        with contextlib.closing(sqlite3.connect(studio.history.database)) as db:
            db.execute("DELETE FROM runs WHERE id = ?", ("1" * 32,))
            db.commit()
        assert studio.clean_targets() == [] and old_row.exists()
        response = api.post("/api/command", {"target": made.stem, "tiles": indexed,
                                             "settings": SETTINGS})
        assert response.status_code == 404 and "choose it again" in error_of(response)
        for file in (recent, recent.with_suffix(".json")):
            age(file, 2 * 24 * 3600)
    # At the start of the next studio.
    with studio_server(cache, world) as (api, studio, _):
        assert not recent.exists() and old_row.exists()


def test_the_target_of_a_run_still_being_made_is_kept(tmp_path, world, indexed):
    cache = tmp_path / "cache"
    with studio_server(cache, world) as (api, studio, _):
        target = stored_target(studio, api, gradient(64, 48), "slow.png")
        running = api.post("/api/runs", {"target": target.stem, "tiles": indexed,
                                         "settings": SLOW}).json()["id"]
        queued = api.post("/api/runs", {"target": target.stem, "tiles": indexed,
                                        "settings": SETTINGS}).json()["id"]
        wait_running(api, running)
        age(target, 2 * 24 * 3600)
        # Even with its rows gone from under it (a hand-edited history), the jobs hold it.
        with contextlib.closing(sqlite3.connect(studio.history.database)) as db:
            db.execute("UPDATE runs SET target = NULL, command = 'x' WHERE id IN (?, ?)",
                       (running, queued))
            db.commit()
        assert studio.clean_targets() == [] and target.exists()
        assert api.post(f"/api/runs/{running}/cancel").json()["status"] == "cancelled"
        assert api.events(f"/api/runs/{queued}/events")[-1][0] == "done", "its target is gone"
        for run_id in (running, queued):
            assert api.delete(f"/api/runs/{run_id}").status_code == 200
        assert not target.exists()


def _has_cuda() -> bool:
    try:
        import torch
    except Exception:  # noqa: BLE001 - any broken or missing torch: no CUDA here
        return False
    return bool(torch.cuda.is_available())


@pytest.mark.skipif(_has_cuda(), reason="this machine has CUDA")
@pytest.mark.parametrize("route", ["/api/preview", "/api/runs"])
def test_a_device_this_machine_lacks_is_refused_before_a_run_is_recorded(api, indexed, route):
    # Each run asked for on the GPU of a machine without one was recorded, and failed, in
    # the history.
    target = api.upload()["id"]
    runs = len(api.get("/api/runs").json())
    response = api.post(route, {"target": target, "tiles": indexed,
                                "settings": {**SETTINGS, "device": "cuda"}})
    assert response.status_code == 400
    assert "NVIDIA graphics card" in error_of(response)
    assert len(api.get("/api/runs").json()) == runs
