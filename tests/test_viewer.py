"""The Deep Zoom viewer page, its server, and the page in a real browser."""

from __future__ import annotations

import _thread
import base64
import colorsys
import contextlib
import html
import http.client
import io
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mosaicist.errors import MosaicistError
from mosaicist.placements import Placements
from mosaicist.render import read_layout, write_deep_zoom
from mosaicist.viewer import (
    find_viewer,
    folder_source_root,
    make_server,
    manifest_path,
    read_manifest,
    read_viewer_data,
    serve_viewer,
    write_viewer,
)

ROOT = Path(__file__).resolve().parents[1]

# The test mosaic: ROWS x COLS cells of CELL_PX pixels, each a solid colour
# standing for one of SOURCES photos; two cells we look at in the browser.
ROWS, COLS, CELL_PX, SOURCES = 30, 40, 32, 20
PROBES = ((7, 11, 3), (22, 31, 16))  # (row, col, source index)
NAME = "my mural"  # a space, to check that URLs are encoded


def source_id(index: int) -> str:
    """Some sources in a sub-folder whose name needs URL-encoding, some at the root."""
    return f"sub dir/t{index:02d}.png" if index % 2 == 0 else f"t{index:02d}.png"


def palette(count: int) -> np.ndarray:
    """``count`` well-separated RGB colours."""
    colours = [
        colorsys.hsv_to_rgb(index / count, 0.9, 0.55 + 0.4 * (index % 2)) for index in range(count)
    ]
    return np.round(np.array(colours) * 255).astype(np.uint8)


def write_pyramid(image: np.ndarray, dzi_path: Path) -> None:
    """Write a Deep Zoom pyramid of ``image`` (PNG tiles, so colours are exact)."""
    bands = (image[top:top + 64] for top in range(0, image.shape[0], 64))
    write_deep_zoom(bands, image.shape[1], image.shape[0], dzi_path, format="png")


def write_photos(folder: Path, colours: np.ndarray) -> Path:
    """One plain 24 px photo per source, in the colour of its index."""
    for index in range(SOURCES):
        path = folder / source_id(index)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24, 24), tuple(int(v) for v in colours[index])).save(path)
    return folder


def make_mosaic(folder: Path) -> tuple[Path, Placements, np.ndarray]:
    """A tile folder, placements over it and their pyramid; return (dzi, placements, colours)."""
    colours = palette(SOURCES)
    tiles = write_photos(folder / "tiles", colours)
    rng = np.random.default_rng(7)
    cells = rng.integers(0, SOURCES, ROWS * COLS)
    cells[:SOURCES] = np.arange(SOURCES)  # every source is used
    for row, col, index in PROBES:
        cells[row * COLS + col] = index
    placements = Placements(
        ROWS, COLS, cells.astype(np.int64), np.zeros(ROWS * COLS, np.int64),
        [source_id(index) for index in cells], source=str(tiles),
    )
    image = np.repeat(np.repeat(colours[cells].reshape(ROWS, COLS, 3), CELL_PX, 0), CELL_PX, 1)
    out = folder / "out"
    out.mkdir()
    dzi = out / f"{NAME}.dzi"
    write_pyramid(image, dzi)
    return dzi, placements, colours


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    """One cache folder, so one manifest key, for the module's shared mosaics and its tests."""
    folder = tmp_path_factory.mktemp("viewer-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOSAICIST_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(autouse=True)
def _same_key(_isolated_cache, module_cache, monkeypatch):
    """Sign and verify manifests with the module's key (after conftest's per-test cache)."""
    monkeypatch.setenv("MOSAICIST_CACHE_DIR", str(module_cache))


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory, module_cache) -> tuple[Path, Placements, np.ndarray]:
    """The test mosaic with its viewer page written (shared: tests only read it)."""
    dzi, placements, colours = make_mosaic(tmp_path_factory.mktemp("viewer"))
    write_viewer(dzi, placements, source_root=folder_source_root(placements))
    return dzi, placements, colours


def decode_cells(data: dict) -> list[str]:
    """The per-cell source ids packed in a viewer's data."""
    dtype = {1: "<u1", 2: "<u2", 4: "<u4"}[data["index_bytes"]]
    indexes = np.frombuffer(base64.b64decode(data["cells"]), dtype)
    return [data["sources"][index] for index in indexes.tolist()]


# --- the page -------------------------------------------------------------------------------


def test_read_layout(mosaic):
    dzi, _, _ = mosaic
    info = read_layout(dzi)
    assert (info.format, info.overlap, info.tile_size) == ("png", 1, 254)
    assert (info.width, info.height) == (COLS * CELL_PX, ROWS * CELL_PX)
    assert info.deepest_level == 11  # ceil(log2(1280))
    assert sorted(int(p.name) for p in dzi.with_name(f"{NAME}_files").iterdir()) == list(range(12))


def test_page_embeds_the_grid_the_sources_and_a_relative_tile_url(mosaic):
    dzi, placements, _ = mosaic
    page = dzi.with_suffix(".html")
    data = read_viewer_data(page)
    assert (data["rows"], data["cols"], data["cell_px"]) == (ROWS, COLS, CELL_PX)
    assert (data["width"], data["height"], data["deepest_level"]) == (1280, 960, 11)
    assert data["sources"] == sorted({source_id(index) for index in range(SOURCES)})
    assert data["index_bytes"] == 1
    assert decode_cells(data) == placements.source_ids
    image = data["tile_source"]["Image"]
    assert image == {
        "xmlns": "http://schemas.microsoft.com/deepzoom/2008",
        "Url": "my%20mural_files/",
        "Format": "png",
        "Overlap": "1",
        "TileSize": "254",
        "Size": {"Width": "1280", "Height": "960"},
    }
    tiles = Path(placements.source)
    assert data["source_root"] == str(tiles)
    assert data["source_root_url"] == tiles.as_uri() + "/"
    assert data["title"] == NAME
    text = page.read_text()
    assert "<title>my mural</title>" in text
    assert 'id="mosaicist-label"' in text
    assert "//! openseadragon 6.1.1" in text  # inlined, not linked
    assert "<script src" not in text and "<link" not in text and "<img" not in text
    assert "sourceMappingURL" not in text
    assert text.count("data:image/png;base64,") == 16  # 4 buttons x 4 states


def test_index_width_grows_with_the_number_of_sources(tmp_path):
    rows, cols = 15, 20  # 300 distinct sources: two bytes per cell
    ids = [f"photos/{index:04d}.jpg" for index in range(rows * cols)][::-1]
    placements = Placements(rows, cols, np.arange(rows * cols), np.zeros(rows * cols), ids)
    dzi = tmp_path / "wide.dzi"
    write_pyramid(np.zeros((rows * 4, cols * 4, 3), np.uint8), dzi)
    data = read_viewer_data(write_viewer(dzi, placements, title="A <b>&</b> title"))
    assert data["index_bytes"] == 2
    assert decode_cells(data) == ids
    assert data["source_root"] is None and data["source_root_url"] is None
    text = dzi.with_suffix(".html").read_text()
    assert "<title>A &lt;b&gt;&amp;&lt;/b&gt; title</title>" in text
    assert "<b>" not in text.split("<script", 1)[1].split("</script>", 1)[0]
    assert data["title"] == "A <b>&</b> title"


def test_page_is_written_atomically(tmp_path):
    dzi, placements, _ = make_mosaic(tmp_path)
    page = dzi.with_suffix(".html")
    page.write_text("previous page\n")
    manifest_path(page).write_text("{}")
    real_write_text = Path.write_text

    def interrupted(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2], *args, **kwargs)
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(Path, "write_text", interrupted)
        write_viewer(dzi, placements)
    assert page.read_text() == "previous page\n"
    assert sorted(p.name for p in dzi.parent.iterdir()) == [f"{NAME}.dzi", f"{NAME}.html",
                                                              f"{NAME}_files"]
    assert not manifest_path(page).exists()  # the old one is gone with the old page
    assert write_viewer(dzi, placements) == page
    assert read_viewer_data(page)["rows"] == ROWS
    assert manifest_path(page).is_file()
    assert not [p for p in dzi.parent.iterdir() if ".part" in p.name]
    umask = os.umask(0o022)
    os.umask(umask)
    assert page.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_page_errors(tmp_path, mosaic):
    dzi, placements, _ = mosaic
    missing = tmp_path / "missing.dzi"
    with pytest.raises(MosaicistError, match="missing.dzi: Deep Zoom descriptor not found"):
        write_viewer(missing, placements)
    bad = tmp_path / "bad.dzi"
    bad.write_text("<html/>")
    with pytest.raises(MosaicistError, match="bad.dzi: not a Deep Zoom descriptor"):
        write_viewer(bad, placements)
    other = Placements(ROWS, COLS + 1, np.zeros(ROWS * (COLS + 1), np.int64),
                       np.zeros(ROWS * (COLS + 1)), ["a.png"] * (ROWS * (COLS + 1)))
    with pytest.raises(MosaicistError, match="not a 41x30 grid of square cells"):
        write_viewer(dzi, other)
    # Placements whose cells do not fill their grid cannot even be made.
    with pytest.raises(ValueError, match="tile has 3 entries for a grid of 40x30 cells"):
        Placements(ROWS, COLS, np.zeros(3, np.int64), np.zeros(3), ["a.png"] * 3)


def test_folder_source_root(tmp_path):
    placements = Placements(1, 1, np.zeros(1, np.int64), np.zeros(1), ["x"])
    assert folder_source_root(placements) is None
    placements.source = "cifar10"
    assert folder_source_root(placements) is None
    placements.source = str(tmp_path)
    assert folder_source_root(placements) == tmp_path


def test_vendored_openseadragon_matches_its_pin():
    assets = ROOT / "src/mosaicist/viewer/assets"
    script = (ROOT / "scripts/vendor_openseadragon.sh").read_text()
    assert "VERSION=6.1.1\n" in script
    assert (assets / "openseadragon.min.js").read_text().startswith("//! openseadragon 6.1.1\n")
    assert "OpenSeadragon contributors" in (assets / "LICENSE.txt").read_text()
    assert "6.1.1" in (assets / "README.md").read_text()


# --- finding and serving a viewer ------------------------------------------------------------


def test_find_viewer(tmp_path, mosaic):
    dzi, placements, _ = mosaic
    page = dzi.with_suffix(".html")
    assert find_viewer(dzi) == page
    assert find_viewer(page) == page
    assert find_viewer(dzi.parent) == page
    with pytest.raises(MosaicistError, match=r"nothing\.dzi: no such file or folder"):
        find_viewer(tmp_path / "nothing.dzi")
    with pytest.raises(MosaicistError, match="no mosaicist viewer"):
        find_viewer(tmp_path)
    (tmp_path / "other.html").write_text("<html><body>hello</body></html>")
    with pytest.raises(MosaicistError, match=r"other\.html: not a mosaicist viewer page"):
        find_viewer(tmp_path / "other.html")
    (tmp_path / "lonely.dzi").write_text("<Image/>")
    with pytest.raises(MosaicistError, match=r"lonely\.dzi: no viewer lonely\.html beside it"):
        find_viewer(tmp_path / "lonely.dzi")
    two = tmp_path / "two"
    two.mkdir()
    for name in ("a", "b"):
        (two / f"{name}.html").write_text(page.read_text())
    with pytest.raises(MosaicistError, match=r"holds 2 viewers \(a\.html, b\.html\)"):
        find_viewer(two)
    with pytest.raises(MosaicistError, match="nothing.html"):
        make_server(tmp_path / "nothing.html")


@contextlib.contextmanager
def serving(path: Path):
    """Serve a viewer in a thread; yield its page URL."""
    server, url = make_server(path)
    with server:
        yield url


def fetch(url: str, path: str, headers: dict[str, str] | None = None,
          method: str = "GET") -> tuple[int, bytes, http.client.HTTPMessage]:
    """Send ``path`` verbatim (no client-side normalisation); return status, body, headers."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read(), response.headers
    finally:
        connection.close()


def test_server_serves_the_page_tiles_and_listed_originals_only(mosaic):
    dzi, placements, _ = mosaic
    page = dzi.with_suffix(".html")
    tiles = Path(placements.source)
    (dzi.parent / "secret.txt").write_text("not for the browser")
    data = read_viewer_data(page)
    with serving(dzi.parent) as url:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/my%20mural.html")
        status, body, headers = fetch(url, "/")
        assert status == 302 and headers["Location"] == "/my%20mural.html"
        status, body, headers = fetch(url, "/my%20mural.html")
        assert status == 200 and body == page.read_bytes()
        assert headers["Content-type"].startswith("text/html")
        assert fetch(url, "/my%20mural.dzi")[1] == dzi.read_bytes()
        status, body, headers = fetch(url, "/my%20mural_files/11/2_1.png?x=1")
        assert status == 200 and headers["Content-type"] == "image/png"
        assert body == (dzi.parent / f"{NAME}_files/11/2_1.png").read_bytes()
        for index in (0, 1, len(data["sources"]) - 1):
            status, body, headers = fetch(url, f"/mosaicist-original/{index}")
            assert status == 200 and headers["Content-Type"] == "image/png"
            assert body == (tiles / data["sources"][index]).read_bytes()
        refused = [
            f"/mosaicist-original/{len(data['sources'])}",
            "/mosaicist-original/-1",
            "/mosaicist-original/",
            "/mosaicist-original/sub%20dir/t00.png",
            "/mosaicist-original/../secret.txt",
            "/mosaicist-original/%2e%2e/secret.txt",
            "/secret.txt",
            "/my%20mural_files/../secret.txt",
            "/my%20mural_files/%2e%2e/secret.txt",
            "/my%20mural_files/11/../../secret.txt",
            "/my%20mural_files/",
            "/my%20mural_files/11/",
            "/%2e%2e/%2e%2e/etc/passwd",
            "/../../etc/passwd",
            "/my%20mural_files/11/9_9.png",
        ]
        for path in refused:
            status, body, _ = fetch(url, path)
            assert status == 404, path
            assert b"not for the browser" not in body


def test_server_refuses_listed_ids_outside_the_source_folder(tmp_path):
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    Image.new("RGB", (4, 4)).save(tiles / "in.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "outside.png")
    ids = ["in.png", "../outside.png", str(tmp_path / "outside.png"), "./in.png"]
    placements = Placements(1, 4, np.zeros(4, np.int64), np.zeros(4), ids)
    dzi = tmp_path / "m.dzi"
    write_pyramid(np.zeros((8, 32, 3), np.uint8), dzi)
    write_viewer(dzi, placements, source_root=tiles)
    sources = read_viewer_data(dzi.with_suffix(".html"))["sources"]
    with serving(dzi) as url:
        for index, source in enumerate(sources):
            assert fetch(url, f"/mosaicist-original/{index}")[0] == (
                200 if source == "in.png" else 404
            ), source


def small_viewer(folder: Path, ids: list[str], source_root: Path | None = None) -> Path:
    """A 1-row viewer over ``ids`` in ``folder/site``, one 8 px cell per id; return its page."""
    placements = Placements(1, len(ids), np.zeros(len(ids), np.int64), np.zeros(len(ids)), ids)
    dzi = folder / "site" / "m.dzi"
    dzi.parent.mkdir(exist_ok=True)
    write_pyramid(np.zeros((8, 8 * len(ids), 3), np.uint8), dzi)
    return write_viewer(dzi, placements, source_root=source_root)


def edit_page_data(page: Path, **changes) -> None:
    """Rewrite values of the JSON a page embeds, as an attacker editing the page would."""
    text = page.read_text()
    old = re.search(r'id="mosaicist-data">(.*?)</script>', text, re.DOTALL).group(1)
    data = {**json.loads(old), **changes}
    page.write_text(text.replace(old, json.dumps(data)))


def test_server_ignores_what_a_crafted_page_names(tmp_path):
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    Image.new("RGB", (4, 4)).save(tiles / "t.png")
    (tmp_path / "secret.txt").write_text("not for the browser")
    page = small_viewer(tmp_path, ["t.png", "u.png"], source_root=tiles)
    # The page now claims its originals are the secret, and its tiles the folder above.
    edit_page_data(page, source_root=str(tmp_path), sources=["secret.txt", "t.png"],
                   tile_source={"Image": {"Url": "../"}})
    with serving(page) as url:
        assert fetch(url, "/m.html")[0] == 200
        status, body, _ = fetch(url, "/mosaicist-original/0")
        assert status == 200 and body == (tiles / "t.png").read_bytes()  # the manifest's
        assert fetch(url, "/mosaicist-original/1")[0] == 404  # u.png does not exist
        assert fetch(url, "/m_files/3/0_0.png")[0] == 200  # the manifest's tile folder
        for path in ("/../m.dzi", "/../secret.txt", "/secret.txt", "/3/0_0.png"):
            assert fetch(url, path)[0] == 404, path
    # Nor does the server need the page's data at all.
    edit_page_data(page, sources=None, tile_source=None)
    with serving(page) as url:
        assert fetch(url, "/mosaicist-original/0")[1] == (tiles / "t.png").read_bytes()


def test_server_trusts_only_a_signed_manifest(tmp_path, monkeypatch, capsys):
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    Image.new("RGB", (4, 4)).save(tiles / "t.png")
    (tmp_path / "secret.txt").write_text("not for the browser")
    page = small_viewer(tmp_path, ["t.png"], source_root=tiles)
    manifest = manifest_path(page)
    assert manifest.name == "m.viewer.json" and manifest.parent == page.parent
    trusted, problem = read_manifest(page)
    assert problem is None and trusted.source_root == tiles and trusted.sources == ("t.png",)
    assert (trusted.page, trusted.descriptor, trusted.tiles) == ("m.html", "m.dzi", "m_files")
    signed = manifest.read_text()
    body = json.loads(signed)

    def check(expected: str) -> None:
        """Page, descriptor and tiles are served, no original; the notice says why."""
        server, _ = make_server(page)
        server.stop()
        assert server.notice is not None and expected in server.notice, server.notice
        assert "no original photos" in server.notice
        with serving(page) as url:
            for path in ("/m.html", "/m.dzi", "/m_files/3/0_0.png"):
                assert fetch(url, path)[0] == 200, path
            assert fetch(url, "/mosaicist-original/0")[0] == 404

    manifest.write_text(json.dumps({**body, "source_root": str(tmp_path),
                                    "sources": ["secret.txt"]}))
    check("m.viewer.json: not signed by this user's mosaicist")
    manifest.write_text("{not json")
    check("m.viewer.json: not a readable viewer manifest")
    manifest.unlink()
    check("m.html: no manifest m.viewer.json beside it")
    manifest.write_text(signed)
    monkeypatch.setenv("MOSAICIST_CACHE_DIR", str(tmp_path / "another-cache"))
    check("not signed by this user's mosaicist")  # made with another key
    # serve_viewer says it once, on stderr.
    capsys.readouterr()
    serve_viewer(page, open_browser=False, announce=lambda line: _thread.interrupt_main())
    err = capsys.readouterr().err
    assert err.count("not signed by this user's mosaicist") == 1 and err.count("\n") == 1


def test_server_refuses_symlinks_out_of_their_root(tmp_path):
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    Image.new("RGB", (4, 4), "red").save(tiles / "t.png")
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.new("RGB", (4, 4), "blue").save(outside / "secret.png")
    (outside / "3").mkdir()
    Image.new("RGB", (4, 4), "blue").save(outside / "3" / "0_0.png")
    (tiles / "link.png").symlink_to(outside / "secret.png")
    (tiles / "alias.png").symlink_to(tiles / "t.png")  # stays inside: served
    (tiles / "sub").symlink_to(outside, target_is_directory=True)
    page = small_viewer(tmp_path, ["t.png", "link.png", "alias.png", "sub/secret.png"],
                        source_root=tiles)
    sources = read_viewer_data(page)["sources"]
    folder = page.parent
    (folder / "m_files" / "5" / "9_9.png").symlink_to(outside / "secret.png")
    (folder / "m_files" / "9").symlink_to(outside / "3", target_is_directory=True)
    with serving(page) as url:
        expected = {"t.png": 200, "alias.png": 200, "link.png": 404, "sub/secret.png": 404}
        for index, source in enumerate(sources):
            assert fetch(url, f"/mosaicist-original/{index}")[0] == expected[source], source
        assert fetch(url, "/m_files/5/0_0.png")[0] == 200
        assert fetch(url, "/m_files/5/9_9.png")[0] == 404
        assert fetch(url, "/m_files/9/0_0.png")[0] == 404
    # A descriptor, or the whole tile folder, that leads out of the page's folder.
    (folder / "m.dzi").rename(outside / "m.dzi")
    (folder / "m.dzi").symlink_to(outside / "m.dzi")
    with serving(page) as url:
        assert fetch(url, "/m.html")[0] == 200
        assert fetch(url, "/m.dzi")[0] == 404
    (folder / "m_files").rename(outside / "m_files")
    (folder / "m_files").symlink_to(outside / "m_files", target_is_directory=True)
    # Nothing of it would be served: said at once rather than as a blank page.
    with pytest.raises(MosaicistError, match="tile folder leads out of the page's folder"):
        make_server(page)


@pytest.mark.parametrize("name", ["tab\there", "new\nline", "back\\slash"])
def test_server_refuses_a_page_no_address_can_name(tmp_path, name):
    """A name with a control character or a backslash: one line, not a page that never loads.

    The web layer answers 400 to any path holding a control character and 404
    to a file name with a backslash: the server announced such a page, and
    the browser then got an error page instead of it.
    """
    placements = Placements(1, 2, np.zeros(2, np.int64), np.zeros(2), ["t.png", "u.png"])
    dzi = tmp_path / f"{name}.dzi"
    write_pyramid(np.zeros((8, 16, 3), np.uint8), dzi)
    page = write_viewer(dzi, placements)
    with pytest.raises(MosaicistError, match="control character or a backslash cannot be served"):
        make_server(page)


def test_server_refuses_a_viewer_whose_tiles_are_gone(tmp_path):
    """A deleted tile folder is one line naming it, from the server and from 'mosaicist view'.

    It was served as if whole: a blank page, each tile a 404, and a notice
    that spoke of "serving the page and its tiles".
    """
    from click.testing import CliRunner

    from mosaicist.cli import main

    page = small_viewer(tmp_path, ["t.png"])
    with serving(page) as url:
        assert fetch(url, "/m_files/3/0_0.png")[0] == 200
    (page.parent / "m_files").rename(tmp_path / "elsewhere")
    with pytest.raises(MosaicistError, match=r"m_files: the viewer's Deep Zoom tile folder is "
                                             r"missing"):
        make_server(page)
    result = CliRunner().invoke(main, ["view", str(page), "--no-browser"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    error = result.stderr.strip().splitlines()
    assert len(error) == 1 and "m_files: the viewer's Deep Zoom tile folder is missing" in error[0]


def test_server_checks_the_host_header(mosaic):
    dzi, _, _ = mosaic
    with serving(dzi) as url:
        port = urllib.parse.urlsplit(url).port
        for host, status in [
            (f"127.0.0.1:{port}", 200), (f"localhost:{port}", 200), (f"LocalHost:{port}", 200),
            (f"[::1]:{port}", 200),
            (f"evil.example:{port}", 421), ("evil.example", 421), (f"127.0.0.1:{port + 1}", 421),
            ("127.0.0.1", 421), (f"127.0.0.1.evil.example:{port}", 421), ("", 421),
            (f"[::1:{port}", 421), (f"localhost:{port}:{port}", 421),
        ]:
            assert fetch(url, "/my%20mural.html", {"Host": host})[0] == status, host


def raw_status(url: str, request: bytes) -> int:
    """Send raw bytes to the server; return the status of its answer."""
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    assert match, (request[:80], answer[:200])
    return int(match.group(1))


def test_server_answers_every_bad_request_without_a_traceback(mosaic, capsys):
    dzi, _, _ = mosaic
    with serving(dzi) as url:
        host = f"Host: {urllib.parse.urlsplit(url).netloc}\r\n".encode()

        def get(target: bytes, method: bytes = b"GET", version: bytes = b"HTTP/1.1") -> bytes:
            return method + b" " + target + b" " + version + b"\r\n" + host + b"\r\n"

        assert raw_status(url, get(b"/my%20mural.html")) == 200
        bad = [
            get(b"/my%20mural.html\x00"), get(b"/\x00/etc/passwd"), get(b"/%00"),
            get(b"/my%20mural.html%00"), get(b"/my%20mural_files/11/0_0.png%00.png"),
            get(b"/%zz"), get(b"/my%20mural.html%"), get(b"/%ff%fe"), get(b"/\xff"),
            get(b"/%0d%0aSet-Cookie:%20x"), get(b"/" + b"a" * 5000), get(b"/" + b"a" * 70000),
            get(b"/my%20mural.html", b"DELETE"), get(b"/", b"PROPFIND"), get(b"/", b"BREW"),
            get(b"/", b"get"), get(b"*", b"OPTIONS"), get(b"*"), get(b"http://evil.example/"),
            get(b"/", version=b"FOO/1.1"), get(b"/mosaicist-original/99999999999999999999"),
            get(b"/mosaicist-original/%00"), get(b"/mosaicist-original/\xd9\xa3"),
            b"GET / HTTP/1.1\r\n\r\n",  # no Host
            get(b"/").replace(b"\r\n\r\n", b"\r\n" + host + b"\r\n"),  # two
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\x00:1\r\n\r\n",
            b"GET / HTTP/1.1\r\n" + host + b"X: " + b"y" * 70000 + b"\r\n\r\n",
            b"GET / HTTP/1.1\r\n" + host + b"".join(b"X%d: y\r\n" % i for i in range(200))
            + b"\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) + b"\r\n\r\n",
            b"GET\r\n\r\n", b"GET / HTTP/1.1 extra\r\n\r\n",
        ]
        for request in bad:
            assert 400 <= raw_status(url, request) < 500, request[:80]
        assert raw_status(url, get(b"/my%20mural.dzi", b"HEAD")) == 200
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_server_has_no_originals_without_a_source_folder(tmp_path):
    placements = Placements(1, 2, np.zeros(2, np.int64), np.zeros(2), ["t.png", "u.png"])
    Image.new("RGB", (4, 4)).save(tmp_path / "t.png")
    dzi = tmp_path / "m.dzi"
    write_pyramid(np.zeros((8, 16, 3), np.uint8), dzi)
    write_viewer(dzi, placements)
    with serving(dzi.with_suffix(".html")) as url:
        assert fetch(url, "/m.html")[0] == 200
        assert fetch(url, "/mosaicist-original/0")[0] == 404


def announced_url(line: str) -> str:
    """The address in the line ``mosaicist view`` starts with ("" when it names none)."""
    found = re.search(r"http://\S+", line)
    return found.group() if found else ""


@pytest.mark.parametrize("open_browser", [True, False])
def test_serve_viewer_announces_opens_and_stops_on_interrupt(mosaic, monkeypatch, open_browser):
    dzi, _, _ = mosaic
    opened: list[str] = []
    lines: list[str] = []
    pages: list[bytes] = []

    def visit(url: str) -> None:
        # Runs while serve_viewer serves: fetch the page, then press Ctrl+C (whatever
        # the fetch did: a line read wrongly must fail the test, not leave it serving).
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                pages.append(response.read())
        finally:
            _thread.interrupt_main()

    def announce(line: str) -> None:
        lines.append(line)
        if not open_browser:
            threading.Thread(target=visit, args=(announced_url(line),), daemon=True).start()

    def fake_open(url: str) -> bool:
        opened.append(url)
        threading.Thread(target=visit, args=(url,), daemon=True).start()
        return True

    monkeypatch.setattr("webbrowser.open", fake_open)
    serve_viewer(dzi, open_browser=open_browser, announce=announce)
    assert len(lines) == 1
    # As 'mosaicist studio' starts: the command, the address, how to stop.
    assert re.fullmatch(r"mosaicist view: http://\S+ \(press Ctrl\+C to stop\)", lines[0]), \
        lines[0]
    url = announced_url(lines[0])
    assert url.startswith("http://127.0.0.1:") and url.endswith("/my%20mural.html")
    assert opened == ([url] if open_browser else [])
    assert pages == [dzi.with_suffix(".html").read_bytes()]
    with pytest.raises(OSError):  # the server is closed
        urllib.request.urlopen(url, timeout=2)


def test_serve_viewer_errors_name_the_path(tmp_path):
    with pytest.raises(MosaicistError, match=str(tmp_path / "gone.dzi")):
        serve_viewer(tmp_path / "gone.dzi", open_browser=False)


# --- in a browser ----------------------------------------------------------------------------




# Runs in every page before its own scripts. The page sets window.mosaicistViewer
# right after making its viewer, before any tile can load, so the handler sees
# every tile failure.
TEST_HOOKS = """(() => {
  const state = {failed: 0, viewer: undefined};
  window.__mosaicist_test = state;
  Object.defineProperty(window, "mosaicistViewer", {
    configurable: true,
    get() { return state.viewer; },
    set(viewer) {
      state.viewer = viewer;
      viewer.addHandler("tile-load-failed", () => { state.failed++; });
    },
  });
})();"""

OPENED = """() => {
  const viewer = window.mosaicistViewer;
  return viewer !== undefined && viewer.world.getItemCount() > 0;
}"""

# Zoom to the deepest level (one image pixel per screen pixel), centred on an image point.
# OpenSeadragon updates in its own animation-frame callback, queued before ours:
# after two frames it has updated (and drawn) for this view at least once.
ZOOM_TO = """([x, y, zoom]) => {
  const viewport = window.mosaicistViewer.viewport;
  viewport.zoomTo(zoom === null ? viewport.imageToViewportZoom(1) : zoom, null, true);
  viewport.panTo(viewport.imageToViewportCoordinates(x, y), true);
  return new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
}"""

# The tiles of the view are loaded and drawn, and the one drawn at image point
# (x, y) is of the deepest level. A state, not a count of events: tiles that
# loaded before the wait began (all of them, when the home view already drew
# the deepest level) count as well.
LOADED = """([x, y]) => {
  const viewer = window.mosaicistViewer;
  const item = viewer.world.getItemAt(0);
  const data = window.mosaicist.data;
  const size = Number(data.tile_source.Image.TileSize);
  const column = Math.floor(x / size), row = Math.floor(y / size);
  return item.getFullyLoaded() && !viewer.world.needsDraw()
    && item.lastDrawn.some((drawn) => drawn.level === data.deepest_level && drawn.tile.loaded
                           && drawn.tile.x === column && drawn.tile.y === row);
}"""

# Page coordinates of an image point.
PAGE_POINT = """([x, y]) => {
  const viewer = window.mosaicistViewer;
  const point = viewer.viewport.imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y));
  const box = viewer.element.getBoundingClientRect();
  return [point.x + box.left, point.y + box.top];
}"""


def look_at_cell(page, row: int, col: int, cell_px: int = CELL_PX) -> tuple[float, float]:
    """Zoom to the deepest level on a cell, wait for its tiles; return its page position."""
    centre = ((col + 0.5) * cell_px, (row + 0.5) * cell_px)
    page.evaluate(ZOOM_TO, [*centre, None])
    page.wait_for_function(LOADED, arg=list(centre), timeout=30_000)
    x, y = page.evaluate(PAGE_POINT, list(centre))
    page.mouse.move(x, y)
    return x, y


def check_label_and_pixels(
    page, colours: np.ndarray, cells: list[tuple[int, int, int]], cell_px: int = CELL_PX,
    tolerance: int = 8,
) -> None:
    """Hover each cell: the label names its source and the tile drawn there has its colour."""
    from playwright.sync_api import expect

    label = page.locator("#mosaicist-label")
    for row, col, index in cells:
        x, y = look_at_cell(page, row, col, cell_px)
        expect(label).to_have_text(f"{source_id(index)} \u00b7 row {row}, col {col}",
                                   timeout=30_000)
        expect(label).to_be_visible(timeout=30_000)
        shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"), np.int32)
        drawn = shot[round(y), round(x)]
        nearest = int(np.argmin(np.abs(colours.astype(np.int32) - drawn).sum(1)))
        assert nearest == index, (drawn, row, col)
        assert np.abs(drawn - colours[index]).max() <= tolerance, (drawn, row, col)


@contextlib.contextmanager
def watched_page(browser):
    """A 640x480 page in its own context, and the list its script errors land in."""
    context = browser.new_context(viewport={"width": 640, "height": 480})
    context.add_init_script(TEST_HOOKS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield context, page, errors
    finally:
        context.close()


def open_viewer(page, url: str) -> None:
    page.goto(url)
    page.wait_for_function(OPENED, timeout=30_000)


def test_browser_served_viewer(browser, mosaic, tmp_path):
    dzi, placements, colours = mosaic
    tiles = Path(placements.source)
    with watched_page(browser) as (context, page, errors):
        responses: list[tuple[str, int]] = []
        page.on("response", lambda response: responses.append((response.url, response.status)))
        with serving(dzi.parent) as url:
            open_viewer(page, url)
            check_label_and_pixels(page, colours, list(PROBES))
            deepest = f"/my%20mural_files/{read_layout(dzi).deepest_level}/"
            assert any(deepest in url and status == 200 for url, status in responses)
            assert page.evaluate("window.__mosaicist_test.failed") == 0

            # Outside the image (zoomed out, left of it) the label is hidden and empty.
            page.evaluate(ZOOM_TO, [640, 480, page.evaluate(
                "window.mosaicistViewer.viewport.getMinZoom()")])
            left, middle = page.evaluate(PAGE_POINT, [0, 480])
            assert left > 10
            page.mouse.move(left / 2, middle)
            label = page.locator("#mosaicist-label")
            page.wait_for_function(
                "document.getElementById('mosaicist-label').hidden", timeout=30_000)
            assert label.text_content() == ""

            # A click opens the original, served by the viewer's server.
            row, col, index = PROBES[1]
            x, y = look_at_cell(page, row, col)
            with context.expect_page(timeout=30_000) as opened:
                page.mouse.click(x, y)
            original = opened.value
            sources = read_viewer_data(dzi.with_suffix(".html"))["sources"]
            expected = f"{url.rsplit('/', 1)[0]}/mosaicist-original/"
            assert original.url == expected + str(sources.index(source_id(index)))
            body = page.request.get(original.url).body()
            assert body == (tiles / source_id(index)).read_bytes()

            shot = tmp_path / "viewer.png"
            look_at_cell(page, *PROBES[0][:2])
            page.screenshot(path=str(shot))
        assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        assert Image.open(shot).size == (640, 480)
        assert errors == []


def test_browser_viewer_from_disk(browser, mosaic):
    dzi, placements, colours = mosaic
    tiles = Path(placements.source)
    with watched_page(browser) as (context, page, errors):
        open_viewer(page, dzi.with_suffix(".html").as_uri())
        check_label_and_pixels(page, colours, [PROBES[1], (0, 0, 0)])
        assert page.evaluate("window.__mosaicist_test.failed") == 0
        # A click opens the original file itself (here in "sub dir": URL-encoded).
        row, col, index = PROBES[1]
        assert " " in source_id(index)
        x, y = look_at_cell(page, row, col)
        with context.expect_page(timeout=30_000) as opened:
            page.mouse.click(x, y)
        assert opened.value.url == (tiles / source_id(index)).as_uri()
        assert errors == []


# --- end to end: ``mosaicist make ... -o NAME.dzi``, then ``mosaicist view`` ------------------

MADE_ROWS, MADE_COLS, MADE_TILE_PX = 12, 16, 64


@pytest.fixture(scope="module")
def made(tmp_path_factory, module_cache) -> tuple[Path, np.ndarray, np.ndarray, Path]:
    """A Deep Zoom mosaic made by the real command line from solid-colour photos.

    Every target cell has the colour of one photo, so the exact match (the
    seed preset: repeats allowed) puts that photo there: the placements are
    known beforehand. Returns the
    ``.dzi``, the expected source index of each cell, the colours and the
    photo folder.
    """
    root = tmp_path_factory.mktemp("made")
    colours = palette(SOURCES)
    photos = write_photos(root / "photos", colours)
    expected = (np.arange(MADE_ROWS)[:, None] * 3 + np.arange(MADE_COLS) * 7) % SOURCES
    target = np.repeat(np.repeat(colours[expected], 8, 0), 8, 1)
    Image.fromarray(target).save(root / "target.png")
    out = root / "out"
    out.mkdir()
    made = subprocess.run(
        [sys.executable, "-m", "mosaicist", "make", root / "target.png", "--tiles", photos,
         "--cell", "8", "--tile-px", str(MADE_TILE_PX), "-o", out / "mural.dzi",
         "--placements", out / "mural.json", "--quiet", "--preset", "seed"],
        capture_output=True, text=True, timeout=120,
    )
    assert made.returncode == 0, made.stderr
    return out / "mural.dzi", expected, colours, photos


def test_made_viewer_embeds_the_placements(made):
    dzi, expected, _, photos = made
    ids = [source_id(index) for index in expected.ravel().tolist()]
    assert Placements.read(dzi.with_name("mural.json")).source_ids == ids
    data = read_viewer_data(dzi.with_suffix(".html"))
    assert (data["rows"], data["cols"], data["cell_px"]) == (MADE_ROWS, MADE_COLS, MADE_TILE_PX)
    assert decode_cells(data) == ids
    assert data["tile_source"]["Image"]["Url"] == "mural_files/"
    assert data["tile_source"]["Image"]["Size"] == {"Width": "1024", "Height": "768"}
    assert data["source_root"] == str(photos)
    assert find_viewer(dzi.parent) == dzi.with_suffix(".html")


def test_browser_made_viewer_through_mosaicist_view(browser, made, tmp_path):
    dzi, expected, colours, _ = made
    server = subprocess.Popen(
        [sys.executable, "-m", "mosaicist", "view", dzi, "--no-browser"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(
        target=lambda: [lines.put(line) for line in server.stderr], daemon=True
    )
    reader.start()
    try:
        announced = lines.get(timeout=30)
        assert "no original photos" not in announced  # its manifest is trusted
        match = re.search(r"http://127\.0\.0\.1:\d+/mural\.html", announced)
        assert match, announced
        with watched_page(browser) as (_, page, errors):
            open_viewer(page, match.group(0))
            assert page.evaluate("window.mosaicist.data.deepest_level") == 10  # 1024 x 768
            probes = [(2, 3, int(expected[2, 3])), (9, 12, int(expected[9, 12]))]
            assert probes[0][2] != probes[1][2]
            check_label_and_pixels(page, colours, probes, MADE_TILE_PX, tolerance=12)
            assert page.evaluate("window.__mosaicist_test.failed") == 0
            shot = tmp_path / "made.png"
            page.screenshot(path=str(shot))
            assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
            assert shot.stat().st_size > 0
            assert errors == []
    finally:
        server.send_signal(signal.SIGINT)
        try:
            returncode = server.wait(timeout=10)
        finally:
            server.kill()
    reader.join(timeout=10)
    rest = "".join(lines.get_nowait() for _ in range(lines.qsize()))
    assert returncode == 0 and "Traceback" not in rest, rest


def test_serve_viewer_notice_stays_one_printable_line(tmp_path, capsys):
    """A folder name with a newline or a terminal escape is shown escaped in the notice."""
    folder = tmp_path / "we\nird\x1b[31m"
    folder.mkdir()
    page = small_viewer(folder, ["t.png"])
    manifest_path(page).unlink()  # so that the notice names the page
    capsys.readouterr()
    serve_viewer(page, open_browser=False, announce=lambda line: _thread.interrupt_main())
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err, repr(err)
    assert "we\\nird\\x1b[31m" in err and "no manifest m.viewer.json" in err
    assert err.startswith("mosaicist: warning: "), err  # as the other warnings say


def test_cli_view_errors_are_one_line(tmp_path, mosaic):
    """Each input that is not a viewer, or an address in use, is one line naming it."""
    from click.testing import CliRunner

    from mosaicist.cli import main

    picture = tmp_path / "photo.png"
    Image.new("RGB", (4, 4), (200, 10, 10)).save(picture)
    (tmp_path / "empty").mkdir()
    dzi, _, _ = mosaic
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases = [
            ([str(picture)], f"{picture}: not a mosaicist viewer page"),
            ([str(tmp_path / "gone.dzi")], "gone.dzi: no such file or folder"),
            ([str(tmp_path / "empty")], "empty: no mosaicist viewer (NAME.html) in this folder"),
            ([str(dzi), "--port", str(port)], f"cannot listen on 127.0.0.1:{port}"),
        ]
        if hasattr(os, "mkfifo"):  # a pipe exists but is no page, and is never opened
            os.mkfifo(tmp_path / "pipe.html")
            cases.append(([str(tmp_path / "pipe.html")],
                          "pipe.html: viewer page is not a regular file"))
        for arguments, expected in cases:
            result = CliRunner().invoke(main, ["view", *arguments, "--no-browser"])
            assert result.exit_code == 1, (arguments, result.output)
            assert "Traceback" not in result.output
            error = result.stderr.strip().splitlines()
            assert len(error) == 1 and error[0].startswith("mosaicist: error: "), result.stderr
            assert expected in error[0], error[0]


# --- hostile names: photos, targets and outputs named as markup or script -------------------

#: Tile names that would run or break a page if written into it unescaped; a
#: ``/`` puts part of a name in a sub-folder, since no file name holds one.
HOSTILE_NAMES = (
    "<img src=x onerror=alert(1)>.png",
    '"><script>alert(2)</script>.png',
    "javascript:alert(3).png",
    "</script><script>alert(4)</script>.png",
    "a\u2028b\u2029c.png",
    "q'\"`${alert(5)}{{x}}.png",
    "new\nline\ttab.png",
    "<!--<script>.png",
    "&amp;&lt;&#x27;.png",
    "]]></x><svg onload=alert(6)>.png",
)
#: The output's name: markup and quotes in the page's title and its tile folder's URL.
HOSTILE_OUTPUT = "<img src=x onerror=alert(7)>'\"<!--"

# Record every dialog (and dismiss it, so the page goes on) and every CSP violation.
DIALOG_HOOKS = """(() => {
  window.__mosaicist_violations = [];
  document.addEventListener("securitypolicyviolation", (event) => {
    window.__mosaicist_violations.push(event.violatedDirective);
  });
})();"""

# Markup and script a page would run if something put them in it: each sets a flag.
INJECT = """() => {
  window.__mosaicist_ran = [];
  const holder = document.createElement("div");
  holder.innerHTML = '<img src="data:," onerror="window.__mosaicist_ran.push(1)">'
    + '<img src="x" onerror="window.__mosaicist_ran.push(2)">';
  document.body.append(holder);
  const script = document.createElement("script");
  script.textContent = "window.__mosaicist_ran.push(3)";
  document.body.append(script);
  return new Promise((resolve) => setTimeout(resolve, 300));
}"""


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, module_cache) -> tuple[Path, list[str]]:
    """``mosaicist make`` over photos with hostile names, from a target with one.

    Every photo has its own colour and the target is those colours, cell by
    cell (the seed preset matches exactly): cell ``i`` shows photo ``i``.
    Returns the ``.dzi`` and the source id of each cell.
    """
    root = tmp_path_factory.mktemp("hostile")
    colours = palette(len(HOSTILE_NAMES))
    for index, name in enumerate(HOSTILE_NAMES):
        path = root / "photos" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24, 24), tuple(int(v) for v in colours[index])).save(path, "PNG")
    target = root / "<svg onload=alert(8)>.png"
    Image.fromarray(np.repeat(np.repeat(colours[None], 8, 0), 8, 1)).save(target)
    out = root / "out"
    out.mkdir()
    dzi = out / f"{HOSTILE_OUTPUT}.dzi"
    made = subprocess.run(
        [sys.executable, "-m", "mosaicist", "make", target, "--tiles", root / "photos",
         "--cell", "8", "--tile-px", "16", "-o", dzi, "--quiet", "--preset", "seed"],
        capture_output=True, text=True, timeout=120,
    )
    assert made.returncode == 0, made.stderr
    return dzi, list(HOSTILE_NAMES)


def test_hostile_names_are_escaped_in_the_page_and_manifest(hostile):
    dzi, names = hostile
    page = dzi.with_suffix(".html")
    text = page.read_text(encoding="utf-8")
    # The names add no element: the page's own scripts only, and one title.
    assert len(re.findall(r"<script", text, re.IGNORECASE)) == 3
    assert len(re.findall(r"</script", text, re.IGNORECASE)) == 3
    assert text.count("<title>") == 1 and text.count("<!--") == 0
    title = re.search(r"<title>(.*?)</title>", text, re.DOTALL).group(1)
    assert title == "&lt;img src=x onerror=alert(7)&gt;&#x27;&quot;&lt;!--"
    for name in names:
        if "<" in name:  # JSON leaves other names as they are, and they are harmless there
            assert name not in text
    data = read_viewer_data(page)
    assert data["title"] == HOSTILE_OUTPUT
    assert sorted(data["sources"]) == sorted(names)
    assert decode_cells(data) == names
    assert urllib.parse.unquote(data["tile_source"]["Image"]["Url"]) == f"{HOSTILE_OUTPUT}_files/"
    manifest = json.loads(manifest_path(page).read_text(encoding="ascii"))
    assert sorted(manifest["sources"]) == sorted(names)


def check_hostile_page(page, url: str, names: list[str]) -> None:
    """Open a viewer; its labels show the names as text, nothing runs, no dialog opens."""
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    open_viewer(page, url)
    assert page.title() == HOSTILE_OUTPUT
    for col, name in enumerate(names):
        centre = [(col + 0.5) * 16, 8]
        x, y = page.evaluate(PAGE_POINT, centre)
        page.mouse.move(x, y)
        expected = f"{name} \u00b7 row 0, col {col}"
        page.wait_for_function(
            "(text) => document.getElementById('mosaicist-label').textContent === text",
            arg=expected, timeout=30_000)
        # Text only: the label holds no element.
        assert page.evaluate("document.getElementById('mosaicist-label').children.length") == 0
    assert page.evaluate("document.querySelectorAll('script').length") == 3
    assert page.evaluate("document.querySelectorAll('img[onerror], svg, iframe').length") == 0
    assert dialogs == []


def test_browser_hostile_names_stay_text_from_disk_and_served(browser, hostile):
    dzi, names = hostile
    for served in (False, True):
        with watched_page(browser) as (context, page, errors), contextlib.ExitStack() as stack:
            url = (stack.enter_context(serving(dzi.with_suffix(".html"))) if served
                   else dzi.with_suffix(".html").as_uri())
            check_hostile_page(page, url, names)
            assert page.evaluate("window.__mosaicist_test.failed") == 0
            assert errors == []


def test_browser_page_from_disk_forbids_injected_script(browser, hostile):
    """Opened from disk (no server, no header), the page's own policy forbids inline script.

    Its scripts run (the viewer opens); markup or a script element put into
    it later, as an unescaped name would be, does not.
    """
    dzi, _ = hostile
    page_path = dzi.with_suffix(".html")
    for url, served in ((page_path.as_uri(), False), (None, True)):
        with watched_page(browser) as (context, page, errors), contextlib.ExitStack() as stack:
            if served:
                url = stack.enter_context(serving(page_path))
            context.add_init_script(DIALOG_HOOKS)
            open_viewer(page, url)
            page.evaluate(INJECT)
            assert page.evaluate("window.__mosaicist_ran") == [], served
            assert "script-src-elem" in page.evaluate("window.__mosaicist_violations"), served
            assert errors == []


def test_page_policy_allows_only_its_own_scripts(hostile):
    """The page's meta policy lists the hash of each of its scripts, and no 'unsafe-inline'."""
    import hashlib

    text = dzi_text = hostile[0].with_suffix(".html").read_text(encoding="utf-8")
    policy = html.unescape(re.search(
        r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', text).group(1))
    assert text.index("Content-Security-Policy") < text.index("<script")
    script_src = next(part.split()[1:] for part in policy.split(";")
                      if part.split()[:1] == ["script-src"])
    scripts = re.findall(r"<script>(.*?)</script>", dzi_text, re.DOTALL)
    assert len(scripts) == 2
    assert sorted(script_src) == sorted(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in scripts)
    assert "'unsafe-inline'" not in script_src and "object-src 'none'" in policy
    assert "base-uri 'none'" in policy


def test_browser_long_and_odd_source_ids_stay_text(browser, tmp_path):
    """A 1 MB source id, and ids with controls and escapes, are shown whole as text."""
    ids = ["<b>" * (1 << 18) + ".png", "\\u0000\\x00\\\"'\u2028.png", "</script>\x01.png"]
    page_path = small_viewer(tmp_path, ids)
    assert read_viewer_data(page_path)["sources"] == sorted(ids)
    with watched_page(browser) as (context, page, errors):
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        open_viewer(page, page_path.as_uri())
        for col, source in enumerate(ids):
            x, y = page.evaluate(PAGE_POINT, [col * 8 + 4, 4])
            page.mouse.move(x, y)
            page.wait_for_function(
                "(text) => document.getElementById('mosaicist-label').textContent === text",
                arg=f"{source} \u00b7 row 0, col {col}", timeout=30_000)
        assert page.evaluate("document.querySelectorAll('b').length") == 0
        assert dialogs == [] and errors == []


@pytest.mark.skipif(sys.platform in ("darwin", "win32"), reason="names must be UTF-8 there")
def test_browser_output_name_that_is_not_utf8(browser, tmp_path):
    """``-o`` naming bytes that are not UTF-8: the page is written, shown and opened from disk.

    Writing it raised UnicodeEncodeError (a traceback from ``mosaicist make``);
    serving it must say in one line why it cannot be, not crash.
    """
    ids = ["t\udcff.png", "u.png"]  # an id as no source gives it, with a byte that is no text
    placements = Placements(1, 2, np.zeros(2, np.int64), np.zeros(2), ids)
    dzi = tmp_path / os.fsdecode(b"m\xff<b>.dzi")
    write_pyramid(np.full((8, 16, 3), 200, np.uint8), dzi)
    page_path = write_viewer(dzi, placements)
    text = page_path.read_text(encoding="utf-8")
    assert "<title>m\ufffd&lt;b&gt;</title>" in text
    data = read_viewer_data(page_path)
    assert data["tile_source"]["Image"]["Url"] == "m%FF%3Cb%3E_files/"
    assert data["sources"] == ids
    with watched_page(browser) as (context, page, errors):
        open_viewer(page, page_path.as_uri())
        page.wait_for_function("window.mosaicistViewer.world.getItemAt(0).getFullyLoaded()",
                               timeout=30_000)
        assert page.evaluate("window.__mosaicist_test.failed") == 0
        assert page.title() == "m\ufffd<b>"
        assert errors == []
    with pytest.raises(MosaicistError, match=r"m\\xff<b>\.html: a page whose name is not UTF-8"):
        make_server(page_path)


def test_served_page_policy_forbids_other_sources(hostile):
    """``mosaicist view`` sends a policy with the page: nothing from elsewhere, no framing."""
    dzi, _ = hostile
    with serving(dzi.with_suffix(".html")) as url:
        path = urllib.parse.urlsplit(url).path
        status, body, headers = fetch(url, path)
    assert status == 200 and body == dzi.with_suffix(".html").read_bytes()
    policy = headers["content-security-policy"]
    for directive in ("default-src 'none'", "frame-ancestors 'none'", "base-uri 'none'",
                      "form-action 'none'"):
        assert directive in policy, policy
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"


def test_a_viewer_of_a_pyramid_with_jpg_tiles_asks_for_jpg_tiles(tmp_path):
    # The page's tile source said Format "jpeg" for a descriptor saying "jpg", so the
    # viewer fetched N_M.jpeg tiles where the pyramid has N_M.jpg ones.
    placements = Placements(1, 2, np.zeros(2, np.int64), np.zeros(2), ["a.png", "b.png"])
    dzi = tmp_path / "m.dzi"
    write_deep_zoom([np.zeros((8, 16, 3), np.uint8)], 16, 8, dzi, format="jpeg")
    dzi.write_text(dzi.read_text().replace('Format="jpeg"', 'Format="JPG"'))
    for tile in (tmp_path / "m_files").rglob("*.jpeg"):
        tile.rename(tile.with_suffix(".JPG"))
    page = write_viewer(dzi, placements)
    assert read_viewer_data(page)["tile_source"]["Image"]["Format"] == "JPG"
    with serving(page) as url:
        status, body, _ = fetch(url, "/m_files/4/0_0.JPG")
    assert status == 200 and body == (tmp_path / "m_files" / "4" / "0_0.JPG").read_bytes()


@pytest.mark.parametrize("tile_size", [16, 64, 254])
def test_browser_viewer_keeps_four_screens_of_tiles(browser, tmp_path, tile_size):
    # OpenSeadragon's 200 decoded tiles are not one screen of 64 px tiles: each pan fetched
    # them all again (session 35).
    image = np.zeros((96, 128, 3), np.uint8)
    dzi = tmp_path / "small.dzi"
    write_deep_zoom([image], 128, 96, dzi, tile_size=tile_size, format="png")
    placements = Placements(3, 4, np.zeros(12, np.int64), np.zeros(12, np.int64), ["a.png"] * 12)
    write_viewer(dzi, placements)
    with watched_page(browser) as (_, page, errors):
        open_viewer(page, dzi.with_suffix(".html").as_uri())
        kept = page.evaluate("window.mosaicistViewer.maxImageCacheCount")
        screen = page.evaluate("window.screen.width * window.screen.height"
                               " * (window.devicePixelRatio || 1) ** 2")
        assert errors == []
    from mosaicist.viewer._page import MOST_CACHED_TILES

    expected = min(MOST_CACHED_TILES, max(200, 4 * -(-screen // (tile_size * tile_size))))
    assert kept == expected
    assert kept > 200 if tile_size <= 64 else kept == 200


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_mosaicist_view_stopped_by_a_signal_exits_0(mosaic, stop):
    """``kill`` stops 'view' as Ctrl+C does, exit 0 (it ended by SIGTERM's default: -15;
    by SIGHUP's, a terminal closed, -1)."""
    dzi, _, _ = mosaic
    server = subprocess.Popen(
        [sys.executable, "-m", "mosaicist", "view", dzi, "--no-browser"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        announced = server.stderr.readline()
        assert "mosaicist view: http://127.0.0.1:" in announced, announced
        server.send_signal(stop)
        returncode = server.wait(timeout=20)
    finally:
        server.kill()
    rest = server.stderr.read()
    server.stderr.close()
    assert returncode == 0, (returncode, rest)
    assert "Traceback" not in rest, rest
