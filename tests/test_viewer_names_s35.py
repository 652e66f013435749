"""The Deep Zoom viewer over photos with awkward file names (session 35).

A library's photos may have any name a POSIX file can: a backslash, bytes that
are not UTF-8, control characters, ``%``, ``#``, ``?``, spaces, 255 bytes.
A folder's tile ids write a backslash as ``\\\\`` and a byte that is not UTF-8
as ``\\xHH`` (:func:`mosaicist.sources.base.name_to_text`); the viewer took
those ids for paths, so the originals of such photos never opened: the
manifest listed none of them, the page opened from disk linked files that are
not there, and the server refused the names the web layer refuses in
addresses (a backslash, a control character).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import sys
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mosaicist.placements import Placements
from mosaicist.render import write_deep_zoom
from mosaicist.sources.base import text_to_name
from mosaicist.sources.folder import FolderSource
from mosaicist.viewer import make_server, read_manifest, read_viewer_data, write_viewer
from mosaicist.web import open_inside

pytestmark = pytest.mark.skipif(sys.platform in ("darwin", "win32"),
                                reason="file names are bytes on Linux only")

#: Names as bytes, some in a sub-folder: what users' folders hold.
AWKWARD = (
    b"back\\slash.png", b"caf\xe9.png", b"nl\nx.png", b"tab\tx.png", b"pct%41.png",
    b"hash#x.png", b"q?x=1.png", b"sp ace.png", "\u00e9t\u00e9 \u4e2d.png".encode(),
    b"-dash.png", b"a" * 251 + b".png", b"quo\"te'&amp;.png",
    b"<\\script><img src=x onerror=alert(1)>.png", b"sub dir/in\\sub.png",
    b"sub dir/x\xff.png", b"sub dir/%2e%2e.png",
)


def library(folder: Path) -> tuple[Path, list[str]]:
    """A folder of tiny photos under the awkward names; its tile ids, as the folder lists them."""
    root = folder / "library"
    for index, name in enumerate(AWKWARD):
        path = Path(os.fsdecode(os.path.join(os.fsencode(root), name)))
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), (index * 15, 40, 200 - index * 10)).save(path, format="PNG")
    ids = sorted(entry.source_id for entry in FolderSource(root).scan())
    assert len(ids) == len(AWKWARD)
    return root, ids


def viewer(folder: Path, ids: list[str], source_root: Path) -> Path:
    """A one-row viewer, one 8 px cell per id, in ``folder/site``; return its page."""
    placements = Placements(1, len(ids), np.zeros(len(ids), np.int64), np.zeros(len(ids)), ids)
    dzi = folder / "site" / "m.dzi"
    dzi.parent.mkdir()
    write_deep_zoom([np.zeros((8, 8 * len(ids), 3), np.uint8)], 8 * len(ids), 8, dzi,
                    format="png")
    return write_viewer(dzi, placements, source_root=source_root)


def fetch(url: str, path: str) -> tuple[int, bytes]:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.fixture()
def site(tmp_path) -> tuple[Path, Path, list[str]]:
    """The library, the page over it, and the page's source ids (its index order)."""
    root, ids = library(tmp_path)
    page = viewer(tmp_path, ids, root)
    return root, page, read_viewer_data(page)["sources"]


def test_manifest_names_the_file_of_every_original(site):
    """Each original is listed as its file's path: escapes undone, none left out.

    The manifest listed ids holding a backslash as null (``back\\\\slash.png``
    and ``caf\\xe9.png`` named no file as written), so five of these photos
    had no original.
    """
    root, page, sources = site
    manifest, problem = read_manifest(page)
    assert problem is None and manifest is not None
    assert manifest.source_root == root.absolute()
    assert len(manifest.sources) == len(sources) == len(AWKWARD)
    for source, path in zip(sources, manifest.sources, strict=True):
        assert path is not None, source
        assert path == text_to_name(source)
        assert (root / path).is_file(), source


def test_every_original_opens_from_the_viewer_server(site):
    """``mosaicist view``: each original, fetched as the page asks for it, is its photo."""
    root, page, sources = site
    server, url = make_server(page)
    with server:
        for index, source in enumerate(sources):
            status, body = fetch(url, f"/mosaicist-original/{index}")
            assert status == 200, source
            assert body == (root / text_to_name(source)).read_bytes(), source


def test_ids_that_unescape_out_of_the_folder_are_never_served(tmp_path):
    """``\\x2e\\x2e`` is ``..`` and ``\\x2f`` a slash once unescaped: checked after that."""
    root = tmp_path / "library"
    root.mkdir()
    Image.new("RGB", (4, 4)).save(root / "in.png")
    (tmp_path / "secret.txt").write_text("not for the browser")
    (root / "..secret.txt").write_text("a name, not a way out")
    crafted = ["\\x2e\\x2e/secret.txt", "in.png\\x2f..\\x2f..\\x2fsecret.txt",
               "\\x2e\\x2e\\x2fsecret.txt", "\\x2f" + str(tmp_path / "secret.txt")[1:],
               "in\\x00.png", "../secret.txt", "./in.png", "sub//in.png"]
    page = viewer(tmp_path, ["in.png", "\\x2e\\x2esecret.txt", *crafted], root)
    sources = read_viewer_data(page)["sources"]
    manifest, _ = read_manifest(page)
    assert manifest is not None
    listed = {source: path for source, path in zip(sources, manifest.sources, strict=True)}
    assert listed["in.png"] == "in.png" and listed["\\x2e\\x2esecret.txt"] == "..secret.txt"
    assert all(listed[source] is None for source in crafted)
    server, url = make_server(page)
    with server:
        for index, source in enumerate(sources):
            status, body = fetch(url, f"/mosaicist-original/{index}")
            assert b"not for the browser" not in body, source
            assert status == (200 if listed[source] is not None else 404), source


def test_open_inside_takes_names_from_the_disk_as_they_are(tmp_path):
    """A backslash or a control character is refused in an address, not in a listed name."""
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("not for the browser")
    for name in ("back\\slash.png", "nl\nx.png", "tab\tx.png"):
        (root / name).write_bytes(b"photo")
        assert open_inside(root, [name]) is None  # from an address: refused, as before
        opened = open_inside(root, [name], disk_names=True)
        assert opened is not None, name
        with opened[1] as handle:
            assert handle.read() == b"photo"
    (root / "out").symlink_to(tmp_path / "secret.txt")
    for parts in (["..", "secret.txt"], ["a/../../secret.txt"], ["in\0.png"], [""], ["out"],
                  [str(tmp_path / "secret.txt")]):
        assert open_inside(root, parts, hidden=True, disk_names=True) is None, parts


def test_page_opened_from_disk_links_each_original_file(site, browser):
    """From disk, a click opens ``file://`` URLs: each must name the photo's own bytes."""
    root, page, sources = site
    with contextlib.closing(browser.new_page()) as tab:
        errors: list[str] = []
        tab.on("pageerror", lambda error: errors.append(str(error)))
        tab.goto(page.as_uri())
        tab.wait_for_function("window.mosaicist !== undefined", timeout=30_000)
        urls = tab.evaluate("(count) => Array.from({length: count}, "
                            "(_, index) => window.mosaicist.originalUrl({index: index}))",
                            len(sources))
        assert errors == []
    for source, url in zip(sources, urls, strict=True):
        parts = urllib.parse.urlsplit(url)
        assert parts.scheme == "file" and not parts.query and not parts.fragment, url
        path = urllib.parse.unquote_to_bytes(parts.path)
        assert path == os.fsencode(root / text_to_name(source)), (source, url)


def test_names_put_no_markup_or_script_into_the_page(site, browser):
    """Names holding ``<img onerror>``, quotes and ``&`` are shown as text, never run."""
    root, page, sources = site
    text = page.read_text(encoding="utf-8")
    assert "<img" not in text.lower()  # the name's markup is escaped in the page's data
    assert text.lower().count("<script") == 3  # the data, OpenSeadragon, the viewer's own
    with contextlib.closing(browser.new_page()) as tab:
        dialogs: list[str] = []
        tab.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        tab.goto(page.as_uri())
        tab.wait_for_function("window.mosaicist !== undefined", timeout=30_000)
        assert tab.evaluate("window.mosaicist.data.sources") == sources
        assert tab.evaluate("document.querySelectorAll('img[onerror], body > img').length") == 0
        assert dialogs == []


@pytest.mark.parametrize("name, shown", [
    ("out/m #?%&é.dzi", "mosaicist view 'out/m #?%&é.dzi'"),
    ("-m.dzi", "mosaicist view ./-m.dzi"),
    ("plain.dzi", "mosaicist view plain.dzi"),
])
def test_the_view_hint_is_a_command_the_shell_runs_as_written(capsys, name, shown):
    # Not quoted, "m #?%&é.dzi" broke at the "#" and "-m.dzi" read as an option.
    from mosaicist.cli import _view_hint

    _view_hint(Path(name))
    assert capsys.readouterr().err.strip() == f"mosaicist: explore it with: {shown}"
