"""The Deep Zoom viewer: a self-contained page beside each pyramid, and a local server.

:func:`write_viewer` writes ``NAME.html`` (OpenSeadragon inlined, with a label
naming the photo under the pointer) and its signed manifest
``NAME.viewer.json``; :func:`serve_viewer` serves on localhost
(``mosaicist view``) what that manifest lists, never what the page says.
"""

from ._manifest import ViewerManifest, manifest_path, read_manifest
from ._page import find_viewer, folder_source_root, read_viewer_data, write_viewer
from ._server import make_server, serve_viewer

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
