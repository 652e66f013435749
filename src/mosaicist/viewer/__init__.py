"""The Deep Zoom viewer: a self-contained page beside each pyramid, and a local server.

:func:`write_viewer` writes ``NAME.html`` (OpenSeadragon inlined, with a label
naming the photo under the pointer) and its signed manifest
``NAME.viewer.json``; :func:`serve_viewer` serves on localhost
(``mosaicist view``) what that manifest lists, never what the page says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._manifest import ViewerManifest, manifest_path, read_manifest
from ._page import find_viewer, folder_source_root, read_viewer_data, write_viewer

if TYPE_CHECKING:
    from ._server import make_server, serve_viewer

#: The server's names, imported on first use: the web server (uvicorn, Starlette: a
#: quarter of a second) is no part of writing a viewer, nor of refusing a missing page.
_SERVER_NAMES = ("make_server", "serve_viewer")


def __getattr__(name: str) -> Any:
    if name in _SERVER_NAMES:
        from . import _server

        return getattr(_server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "ViewerManifest",
    "find_viewer",
    "folder_source_root",
    "make_server",
    "manifest_path",
    "read_manifest",
    "read_viewer_data",
    "serve_viewer",
    "write_viewer",
]
