"""A self-contained HTML viewer for Deep Zoom mosaics.

:func:`write_viewer` writes ``NAME.html`` beside ``NAME.dzi``: one file with
OpenSeadragon (vendored, see ``assets/README.md``) and its button images
inlined, the Deep Zoom descriptor given inline (tiles are loaded from
``NAME_files/`` relative to the page, so nothing else is fetched and the page
works offline, also opened straight from disk) and the placements packed as
JSON: the grid, the distinct source ids and one index per cell. Under the
pointer, a label names the source of the photo there; a click opens the
original when it is a local file.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import html
import json
import os
import re
import urllib.parse
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..aspect import height_for
from ..errors import MosaicistError
from ..paths import atomic_path, dangling_link, expanded
from ..placements import Placements
from ..render._deepzoom import DEEPZOOM_NAMESPACE, files_folder, read_layout
from ..sources.base import text_to_name
from ._manifest import manifest_path, write_manifest

#: Marker of the embedded data, so that a viewer is recognised when read back.
VIEWER_FORMAT = "mosaicist-viewer"
VIEWER_VERSION = 1
#: The served route of the originals: ``/mosaicist-original/<source index>``.
ORIGINAL_ROUTE = "mosaicist-original"
#: OpenSeadragon's navigation buttons (option name, image file stem) and states.
NAV_BUTTONS = (("zoomIn", "zoomin"), ("zoomOut", "zoomout"), ("home", "home"),
               ("fullpage", "fullpage"))
NAV_STATES = (("REST", "rest"), ("GROUP", "grouphover"), ("HOVER", "hover"),
              ("DOWN", "pressed"))

_DATA_PATTERN = re.compile(
    r'<script type="application/json" id="mosaicist-data">(.*?)</script>', re.DOTALL
)


def folder_source_root(placements: Placements) -> Path | None:
    """Return the folder of the placements' tile source when it is a local folder.

    This is the ``source_root`` to give :func:`write_viewer` so that clicking
    a cell opens the original photo. Datasets and image arrays have no
    original files: None.
    """
    spec = placements.source
    if not spec:
        return None
    path = expanded(spec)
    return path.absolute() if path.is_dir() else None


def _asset_bytes(name: str) -> bytes:
    return resources.files("mosaicist.viewer").joinpath("assets", name).read_bytes()


@functools.cache
def least_page_bytes() -> int:
    """The fewest bytes a viewer page takes: the OpenSeadragon it inlines (about 350 kB).

    Counted by :meth:`mosaicist.render.DeepZoomFormat.least_room`, so that a
    pyramid whose page cannot fit is refused before any work.

    Returns
    -------
    int
        The size of the vendored OpenSeadragon, a lower bound of any page's.
    """
    return len(_asset_bytes("openseadragon.min.js"))


def _openseadragon_source() -> str:
    """The vendored OpenSeadragon, ready to inline in a ``<script>``."""
    text = _asset_bytes("openseadragon.min.js").decode("utf-8")
    # The source map is not shipped; without the comment no tool asks for it.
    text = re.sub(r"^//# sourceMappingURL=.*$", "", text, flags=re.MULTILINE)
    if re.search(r"</script|<!--", text, re.IGNORECASE):  # would end the inline script
        raise MosaicistError("the vendored OpenSeadragon cannot be inlined (contains </script)")
    return text


def _nav_images() -> dict[str, dict[str, str]]:
    """OpenSeadragon's ``navImages`` option with every image as a data: URI."""
    images: dict[str, dict[str, str]] = {}
    for option, stem in NAV_BUTTONS:
        images[option] = {
            state: "data:image/png;base64,"
            + base64.b64encode(_asset_bytes(f"images/{stem}_{suffix}.png")).decode("ascii")
            for state, suffix in NAV_STATES
        }
    return images


#: A lone surrogate: a byte of a file name that is not UTF-8, as Python decodes it.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _script_json(value: Any) -> str:
    """JSON that is safe inside a ``<script>`` element (and can be written as UTF-8)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    text = _SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _shown(text: str) -> str:
    """``text`` as a page shows it: bytes of a file name that are not UTF-8 as U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


def _script_hash(script: str) -> str:
    """The CSP source expression that allows one inline script: its SHA-256."""
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def page_meta_policy(scripts: list[str]) -> str:
    """The content security policy a viewer page carries in its ``<meta>``.

    Only the page's own inline scripts run (listed by hash): markup or a
    script that anything put into the page later, an unescaped name for
    one, does not, also where no server sends a policy (the page opened
    from disk or put on a website). Tiles, button images and styles are not
    restricted here: from disk, where tiles load from ``file:`` URLs, no
    ``img-src`` is both strict and portable.
    """
    hashes = " ".join(_script_hash(script) for script in scripts)
    return (f"script-src {hashes}; object-src 'none'; base-uri 'none'; "
            "form-action 'none'")


def _file_urls(sources: list[str]) -> dict[str, Any]:
    r"""``source_files``: the URL paths of the originals whose file name is not their id.

    A folder's ids write a backslash in a file name as ``\\`` and a byte that
    is not UTF-8 as ``\xHH`` (:func:`~mosaicist.sources.base.name_to_text`):
    the page opened from disk linked ``caf%5Cxe9.jpg`` for ``caf\xe9.jpg``, a
    file that is not there. Those few are given here, quoted byte by byte,
    by source index; the page quotes every other id itself (and no key is
    written when there are none).
    """
    files: dict[str, str] = {}
    for index, source in enumerate(sources):
        if "\\" in source:
            name = text_to_name(source)
            files[str(index)] = urllib.parse.quote(os.fsencode(name), safe="/")
    return {"source_files": files} if files else {}


def _leaf_data(placements: Placements) -> tuple[np.ndarray, dict[str, Any]]:
    """Cells of several sizes for the pointer: their order and the packed quadtree.

    The cells are listed by level-0 cell (``order``); ``leaf_start`` (base64
    ``<u4``, ``rows * cols + 1``) is where each level-0 cell's cells begin in
    that list and ``leaves`` (base64, three bytes per cell) their level and
    their top-left ``(y, x)`` inside the level-0 cell, in units of
    ``2^-leaf_depth`` of its side.
    """
    assert placements.rect is not None
    rect = placements.rect
    level = np.rint(-np.log2(rect[:, 2])).astype(np.int64)
    depth = int(level.max())
    unit = 1 << depth
    row, col = np.floor(rect[:, 1]).astype(np.int64), np.floor(rect[:, 0]).astype(np.int64)
    cell = row * placements.cols + col
    order = np.argsort(cell, kind="stable")
    start = np.searchsorted(cell[order], np.arange(placements.rows * placements.cols + 1))
    local_y = np.rint((rect[:, 1] - row) * unit).astype(np.int64)
    local_x = np.rint((rect[:, 0] - col) * unit).astype(np.int64)
    packed = np.stack([level, local_y, local_x], axis=1)[order]
    # Up to 2^8 units a side fit a byte; deeper trees use two.
    width = 1 if unit <= 1 << 8 else 2
    return order, {
        "leaf_depth": depth,
        "leaf_bytes": width,
        "leaf_start": base64.b64encode(start.astype("<u4").tobytes()).decode("ascii"),
        "leaves": base64.b64encode(packed.astype(f"<u{width}").tobytes()).decode("ascii"),
    }


def _cell_data(placements: Placements, order: np.ndarray | None = None
               ) -> tuple[list[str], int, str]:
    """Distinct source ids, the bytes per cell index and the packed indexes (base64)."""
    ids = np.asarray(placements.source_ids, dtype=str)
    if order is not None:
        ids = ids[order]
    sources, inverse = np.unique(ids, return_inverse=True)
    width = 1 if len(sources) <= 1 << 8 else 2 if len(sources) <= 1 << 16 else 4
    packed = inverse.reshape(-1).astype(f"<u{width}").tobytes()
    return sources.tolist(), width, base64.b64encode(packed).decode("ascii")


def write_viewer(
    dzi_path: str | os.PathLike[str],
    placements: Placements,
    *,
    source_root: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> Path:
    """Write ``NAME.html``, a self-contained viewer, beside ``NAME.dzi``.

    Parameters
    ----------
    dzi_path : path-like
        The Deep Zoom descriptor; its tiles are in ``NAME_files/`` beside it.
        Its format, overlap, tile size and size are read from it.
    placements : Placements
        The placements the mosaic was drawn from; the deepest level must be
        a whole number of equal cells of their aspect (square by default),
        ``cols`` across and ``rows`` down.
    source_root : path-like, optional
        The folder the source ids are relative to (a folder tile source; see
        :func:`folder_source_root`). When given, clicking a cell opens its
        original: over ``mosaicist view``'s route when served, as a
        ``file://`` URL when the page is opened from disk. None (datasets,
        arrays): no links.
    title : str, optional
        Page title; defaults to ``NAME``.

    Returns
    -------
    pathlib.Path
        The ``NAME.html`` written (atomically), with ``NAME.viewer.json``
        beside it: the signed manifest of what ``mosaicist view`` may serve
        (see :mod:`mosaicist.viewer._manifest`).

    Raises
    ------
    MosaicistError
        When the descriptor is missing or invalid, or does not fit the grid.
    """
    dzi_path = Path(dzi_path)
    info = read_layout(dzi_path)
    rows, cols = placements.rows, placements.cols
    aspect = placements.options.aspect_ratio
    if (
        rows < 1 or cols < 1 or info.width % cols or info.height % rows
        or info.height // rows != height_for(info.width // cols, aspect)
    ):
        shape = "square" if aspect == (1, 1) else placements.options.aspect
        raise MosaicistError(
            f"{dzi_path}: {info.width}x{info.height} pixels is not a {cols}x{rows} grid "
            f"of {shape} cells; is it the mosaic of these placements?"
        )
    order, leaves = (None, {}) if placements.rect is None else _leaf_data(placements)
    sources, index_bytes, cells = _cell_data(placements, order)
    root = None if source_root is None else expanded(source_root).absolute()
    name = dzi_path.stem
    title = name if title is None else title
    data = {
        "format": VIEWER_FORMAT,
        "version": VIEWER_VERSION,
        "title": _shown(title),
        "rows": rows,
        "cols": cols,
        # A cell's size at the deepest level: the pointer's row and column.
        "cell_px": info.width // cols,
        "cell_height": info.height // rows,
        "width": info.width,
        "height": info.height,
        "deepest_level": info.deepest_level,
        "tile_source": {
            "Image": {
                "xmlns": DEEPZOOM_NAMESPACE,
                # Bytes, so that a name that is not UTF-8 is quoted byte by byte.
                "Url": urllib.parse.quote(os.fsencode(f"{name}_files")) + "/",
                # As the descriptor spells it: OpenSeadragon makes the tiles' names from it.
                "Format": info.tile_extension,
                "Overlap": str(info.overlap),
                "TileSize": str(info.tile_size),
                "Size": {"Width": str(info.width), "Height": str(info.height)},
            }
        },
        "source_root": None if root is None else str(root),
        "source_root_url": None if root is None else root.as_uri().rstrip("/") + "/",
        "original_route": f"{ORIGINAL_ROUTE}/",
        "sources": sources,
        **({} if root is None else _file_urls(sources)),
        "index_bytes": index_bytes,
        "cells": cells,
        **leaves,
    }
    scripts = [_OPENSEADRAGON_SCRIPT.format(openseadragon=_openseadragon_source()),
               _VIEWER_SCRIPT.format(nav_images=_script_json(_nav_images()),
                                     most_cached_tiles=MOST_CACHED_TILES, script=_SCRIPT)]
    page = _PAGE.format(
        title=html.escape(_shown(title)),
        policy=page_meta_policy(scripts),  # hashes and keywords: no quote or markup
        data=_script_json(data),
        openseadragon_script=scripts[0],
        viewer_script=scripts[1],
    )
    html_path = dzi_path.with_suffix(".html")
    # The previous manifest goes first: an interrupted run leaves no manifest
    # that lists the sources of another page.
    with contextlib.suppress(FileNotFoundError):
        manifest_path(html_path).unlink()
    with atomic_path(html_path) as temporary:
        temporary.write_text(page, encoding="utf-8")
    write_manifest(html_path, dzi_path, files_folder(dzi_path), root, sources)
    return html_path


def read_viewer_data(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read back the data a viewer page embeds.

    Parameters
    ----------
    path : path-like
        A ``NAME.html`` written by :func:`write_viewer`.

    Returns
    -------
    dict
        The embedded JSON (grid, tile source, ``sources``, ``source_root``...).

    Raises
    ------
    MosaicistError
        When the file is missing or not a mosaicist viewer.
    """
    path = Path(path)
    if not path.is_file():
        # A pipe or device exists (and reading one could block): say what it is.
        problem = "is not a regular file (a pipe or device)" if path.exists() else "not found"
        raise MosaicistError(f"{path}: viewer page {problem}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        # A picture or other binary file (the pages are UTF-8): not a decoder's message.
        raise MosaicistError(f"{path}: not a mosaicist viewer page (not UTF-8 text)") from None
    except OSError as error:
        raise MosaicistError(
            f"{path}: cannot read the viewer page ({error.strerror or error})") from None
    match = _DATA_PATTERN.search(text)
    try:
        data = json.loads(match.group(1)) if match else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or data.get("format") != VIEWER_FORMAT:
        raise MosaicistError(f"{path}: not a mosaicist viewer page")
    return data


def find_viewer(path: str | os.PathLike[str]) -> Path:
    """Return the viewer page that ``path`` names.

    Parameters
    ----------
    path : path-like
        ``NAME.html``, ``NAME.dzi`` (its ``NAME.html``) or a folder holding
        exactly one viewer page.

    Raises
    ------
    MosaicistError
        When nothing is there, it is not a viewer, or a folder holds none or
        several.
    """
    path = expanded(path)
    if path.is_dir():
        pages = []
        for candidate in sorted(path.glob("*.html")):
            with contextlib.suppress(MosaicistError):
                read_viewer_data(candidate)
                pages.append(candidate)
        if not pages:
            raise MosaicistError(f"{path}: no mosaicist viewer (NAME.html) in this folder")
        if len(pages) > 1:
            names = ", ".join(page.name for page in pages)
            raise MosaicistError(f"{path}: holds {len(pages):,} viewers ({names}); name one")
        return pages[0]
    if not path.exists():
        raise MosaicistError(f"{path}: {dangling_link(path) or 'no such file or folder'}")
    if path.suffix.lower() == ".dzi":
        page = path.with_suffix(".html")
        if not page.is_file():
            raise MosaicistError(f"{path}: no viewer {page.name} beside it")
        path = page
    try:
        read_viewer_data(path)  # raises when it is not a viewer
    except MosaicistError as error:
        if not path.is_file():  # a pipe or device: said as it is
            raise
        if path.suffix.lower() not in (".html", ".htm"):
            # A picture (the mosaic written as a PNG, say) was "not a mosaicist viewer
            # page (not UTF-8 text)": true, but no help to someone who gave the mosaic.
            raise MosaicistError(f"{path}: not a mosaicist viewer page; "
                                 f"{_VIEWER_EXPECTED}") from None
        raise MosaicistError(f"{error}; {_VIEWER_EXPECTED}") from None
    return path


#: What a viewer is, said after a path that is none.
_VIEWER_EXPECTED = ("give NAME.dzi or NAME.html, as 'mosaicist make -o NAME.dzi' writes them, "
                    "or their folder")


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{policy}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="mosaicist">
<title>{title}</title>
<style>
html, body {{ margin: 0; height: 100%; background: #111; overflow: hidden; }}
#mosaicist-viewer {{ position: absolute; inset: 0; }}
#mosaicist-label {{
  position: fixed; z-index: 10; pointer-events: none; max-width: 60vw;
  padding: 3px 7px; border-radius: 4px; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; font: 13px/1.4 system-ui, sans-serif; color: #fff;
  background: rgba(0, 0, 0, 0.75);
}}
#mosaicist-label[hidden] {{ display: none; }}
</style>
</head>
<body>
<div id="mosaicist-viewer"></div>
<div id="mosaicist-label" hidden></div>
<script type="application/json" id="mosaicist-data">{data}</script>
<script>{openseadragon_script}</script>
<script>{viewer_script}</script>
</body>
</html>
"""

#: Most decoded tiles the viewer keeps: four screens of tiles (at least OpenSeadragon's 200),
#: whatever their side; about 130 MB of pixels for four 4K screens of any tile side.
MOST_CACHED_TILES = 20_000

# The two inline scripts, hashed into the page's policy as they are written.
_OPENSEADRAGON_SCRIPT = """
/* OpenSeadragon (https://openseadragon.github.io/), BSD-3-Clause licence:
   Copyright (C) 2009 CodePlex Foundation
   Copyright (C) 2010-2025 OpenSeadragon contributors */
{openseadragon}
"""

_VIEWER_SCRIPT = """
const MOSAICIST_NAV_IMAGES = {nav_images};
const MOST_CACHED_TILES = {most_cached_tiles};
{script}
"""

_SCRIPT = r"""
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("mosaicist-data").textContent);
  const label = document.getElementById("mosaicist-label");
  function unpack(text) {
    const raw = atob(text);
    const out = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  }
  const cells = new DataView(unpack(data.cells).buffer);
  const served = location.protocol === "http:" || location.protocol === "https:";
  const linked = data.source_root !== null && (served || location.protocol === "file:");

  function sourceIndex(cell) {
    if (data.index_bytes === 1) return cells.getUint8(cell);
    if (data.index_bytes === 2) return cells.getUint16(cell * 2, true);
    return cells.getUint32(cell * 4, true);
  }

  // The cell under an image-pixel position of the deepest level, or null.
  function cellAt(x, y) {
    if (!(x >= 0 && y >= 0 && x < data.width && y < data.height)) return null;
    // Pages written before rectangular cells have no cell_height: square cells.
    const row = Math.floor(y / (data.cell_height || data.cell_px));
    const col = Math.floor(x / data.cell_px);
    let index = row * data.cols + col;
    if (leafStarts !== null) return leafAt(x, y, row, col, index);
    return {row: row, col: col, index: index, source: data.sources[sourceIndex(index)]};
  }

  // Cells of several sizes (adaptive): the leaf of level-0 cell "cell" under (x, y).
  const leafStarts = data.leaf_start ? new DataView(unpack(data.leaf_start).buffer) : null;
  const leafBytes = data.leaf_start ? new DataView(unpack(data.leaves).buffer) : null;
  function leafField(leaf, part) {
    const at = leaf * 3 + part;
    return data.leaf_bytes === 2 ? leafBytes.getUint16(at * 2, true) : leafBytes.getUint8(at);
  }
  function leafAt(x, y, row, col, cell) {
    const unit = 1 << data.leaf_depth;
    const cellHeight = data.cell_height || data.cell_px;
    const u = Math.floor((x - col * data.cell_px) * unit / data.cell_px);
    const v = Math.floor((y - row * cellHeight) * unit / cellHeight);
    const first = leafStarts.getUint32(cell * 4, true);
    const last = leafStarts.getUint32(cell * 4 + 4, true);
    for (let leaf = first; leaf < last; leaf++) {
      const level = leafField(leaf, 0), top = leafField(leaf, 1), left = leafField(leaf, 2);
      const side = unit >> level;
      if (v >= top && v < top + side && u >= left && u < left + side) {
        return {row: row, col: col, index: leaf, level: level,
                source: data.sources[sourceIndex(leaf)]};
      }
    }
    return null;
  }

  // Where the original of a cell's photo opens, or null when it is not local.
  function originalUrl(cell) {
    if (!linked) return null;
    const index = sourceIndex(cell.index);
    if (served) return new URL(data.original_route + index, location.href).href;
    // An id whose file name differs from it (a backslash, a byte that is not UTF-8).
    const file = data.source_files && data.source_files[String(index)];
    if (file !== undefined) return data.source_root_url + file;
    return data.source_root_url + data.sources[index].split("/").map(encodeURIComponent).join("/");
  }

  // Decoded tiles kept: OpenSeadragon's 200 hold a few screens of 254 px tiles, but one
  // screen of 64 px tiles takes about 500, and each pan fetched them all again.
  const tileSide = Number(data.tile_source.Image.TileSize) || 254;
  const screenTiles = Math.ceil(window.screen.width * window.screen.height
      * Math.pow(window.devicePixelRatio || 1, 2) / (tileSide * tileSide));
  const cachedTiles = Math.min(MOST_CACHED_TILES, Math.max(200, 4 * screenTiles));

  const viewer = OpenSeadragon({
    element: document.getElementById("mosaicist-viewer"),
    maxImageCacheCount: cachedTiles,
    tileSources: data.tile_source,
    prefixUrl: "",
    navImages: MOSAICIST_NAV_IMAGES,
    drawer: "canvas",
    showNavigator: true,
    navigatorPosition: "BOTTOM_RIGHT",
    maxZoomPixelRatio: 4,
    gestureSettingsMouse: linked ? {clickToZoom: false, dblClickToZoom: false} : {}
  });

  // The cell under a point in viewer-element pixels, or null outside the image.
  function cellAtElementPoint(point) {
    if (viewer.world.getItemCount() === 0) return null;
    const image = viewer.viewport.viewerElementToImageCoordinates(point);
    return cellAt(image.x, image.y);
  }

  let pointer = null;  // last pointer position: {x, y} in client pixels

  function hideLabel() {
    label.textContent = "";
    label.hidden = true;
  }

  function showLabel() {
    if (pointer === null) return hideLabel();
    const box = viewer.element.getBoundingClientRect();
    const cell = cellAtElementPoint(
      new OpenSeadragon.Point(pointer.x - box.left, pointer.y - box.top));
    if (cell === null) return hideLabel();
    label.textContent = cell.source + " \u00b7 row " + cell.row + ", col " + cell.col
      + (cell.level ? " \u00b7 1/" + (1 << cell.level) + " cell" : "");
    label.hidden = false;
    const width = label.offsetWidth, height = label.offsetHeight;
    let left = pointer.x + 14, top = pointer.y + 16;
    if (left + width > window.innerWidth) left = Math.max(0, pointer.x - 8 - width);
    if (top + height > window.innerHeight) top = Math.max(0, pointer.y - 8 - height);
    label.style.left = left + "px";
    label.style.top = top + "px";
  }

  // Capture on the viewer's element: seen before OpenSeadragon's own handlers.
  viewer.element.addEventListener("pointermove", function (event) {
    pointer = viewer.canvas.contains(event.target) ? {x: event.clientX, y: event.clientY} : null;
    showLabel();
  }, true);
  viewer.element.addEventListener("pointerleave", function () {
    pointer = null;
    hideLabel();
  }, true);
  viewer.addHandler("animation", showLabel);
  viewer.addHandler("animation-finish", showLabel);

  viewer.addHandler("canvas-click", function (event) {
    if (!event.quick) return;
    const cell = cellAtElementPoint(event.position);
    const url = cell === null ? null : originalUrl(cell);
    if (url !== null) window.open(url, "_blank", "noopener");
  });
  if (linked) viewer.canvas.style.cursor = "pointer";

  window.mosaicistViewer = viewer;
  window.mosaicist = {viewer: viewer, data: data, cellAt: cellAt, originalUrl: originalUrl};
})();
"""
