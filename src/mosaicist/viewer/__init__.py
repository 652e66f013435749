"""The Deep Zoom viewer: a self-contained page beside each pyramid, and a local server.

:func:`write_viewer` writes ``NAME.html`` (OpenSeadragon inlined, with a label
naming the photo under the pointer); :func:`serve_viewer` serves it on
localhost (``mosaicist view``).
"""

from ._page import find_viewer, folder_source_root, read_viewer_data, write_viewer
from ._server import make_server, serve_viewer

__all__ = [
    "find_viewer",
    "folder_source_root",
    "make_server",
    "read_viewer_data",
    "serve_viewer",
    "write_viewer",
]
