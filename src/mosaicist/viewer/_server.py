"""A local server for a mosaic's viewer page (``mosaicist view``).

It serves the page, its ``.dzi`` and pyramid tiles, and the originals of the
photos the page lists, nothing else.
"""

from __future__ import annotations

import functools
import http.server
import mimetypes
import os
import re
import socket
import sys
import urllib.parse
import webbrowser
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import MosaicistError
from ._page import ORIGINAL_ROUTE, find_viewer, read_viewer_data


class _ViewerServer(http.server.ThreadingHTTPServer):
    """Serves one viewer page, its pyramid and its originals."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], page: Path, data: dict[str, Any]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.page = page
        self.folder = page.parent
        prefix = urllib.parse.unquote(str(data["tile_source"]["Image"]["Url"]))
        # One folder beside the page (NAME_files/); anything else serves no tiles.
        valid = re.fullmatch(r"[^/\\]+/", prefix) and prefix not in ("./", "../")
        self.tiles_prefix = prefix if valid else None
        self.sources = [str(source) for source in data["sources"]]
        root = data.get("source_root")
        self.source_root = Path(root) if isinstance(root, str) and root else None
        super().__init__(address, functools.partial(_ViewerHandler, directory=str(self.folder)))

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet when the browser drops a connection; report anything else."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def original(self, text: str) -> Path | None:
        """Return the original file of source index ``text``, or None when refused."""
        if not text.isascii() or not text.isdigit() or self.source_root is None:
            return None
        index = int(text)
        if index >= len(self.sources):
            return None
        parts = self.sources[index].split("/")
        if any(part in ("", ".", "..") or "\\" in part or "\0" in part for part in parts):
            return None
        path = self.source_root.joinpath(*parts)  # lexically under source_root
        return path if path.is_file() else None


class _ViewerHandler(http.server.SimpleHTTPRequestHandler):
    server: _ViewerServer

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: the viewer is a local tool."""

    def list_directory(self, path: str | os.PathLike[str]) -> None:
        """Never list folders."""
        self.send_error(404)
        return None

    def send_head(self) -> Any:
        """Route a GET or HEAD: the page, the pyramid, an original, else 404."""
        route = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        page = "/" + self.server.page.name
        if route == "/":
            self.send_response(302)
            self.send_header("Location", urllib.parse.quote(page))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if route.startswith(f"/{ORIGINAL_ROUTE}/"):
            original = self.server.original(route[len(ORIGINAL_ROUTE) + 2:])
            if original is None:
                self.send_error(404)
                return None
            return self._send_file(original)
        if route == page or route == page[:-len(".html")] + ".dzi":
            return super().send_head()
        prefix = f"/{self.server.tiles_prefix}"
        if self.server.tiles_prefix is not None and route.startswith(prefix):
            parts = route[len(prefix):].split("/")
            if all(part not in ("", ".", "..") and "\\" not in part for part in parts):
                return super().send_head()
        self.send_error(404)
        return None

    def _send_file(self, path: Path) -> Any:
        try:
            handle = open(path, "rb")  # closed by the base class
        except OSError:
            self.send_error(404)
            return None
        size = os.fstat(handle.fileno()).st_size
        self.send_response(200)
        self.send_header("Content-Type", mimetypes.guess_type(path.name)[0]
                         or "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        return handle


def make_server(
    path: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 0
) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Build the server of a viewer without starting it.

    Parameters
    ----------
    path : path-like
        ``NAME.html``, ``NAME.dzi`` or a folder holding exactly one viewer.
    host : str
        Address to listen on.
    port : int
        Port; 0 picks a free one.

    Returns
    -------
    server : http.server.ThreadingHTTPServer
        Call ``serve_forever()`` (for instance in a thread), then
        ``shutdown()`` and ``server_close()``.
    url : str
        The page's address, ``http://HOST:PORT/NAME.html``.

    Raises
    ------
    MosaicistError
        When the path is not a viewer or the address cannot be listened on.
    """
    page = find_viewer(path).absolute()
    data = read_viewer_data(page)
    try:
        server = _ViewerServer((host, port), page, data)
    except (KeyError, TypeError) as error:
        raise MosaicistError(f"{page}: not a valid mosaicist viewer page ({error})") from None
    except OSError as error:
        raise MosaicistError(
            f"cannot listen on {host}:{port}: {error.strerror or error}"
        ) from None
    bound = server.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    return server, f"http://{shown}:{bound}/{urllib.parse.quote(page.name)}"


def serve_viewer(
    path: str | os.PathLike[str],
    *,
    open_browser: bool = True,
    host: str = "127.0.0.1",
    port: int = 0,
    announce: Callable[[str], object] = print,
) -> None:
    """Serve a mosaic's viewer on localhost until interrupted (``mosaicist view``).

    Serves the page, its ``.dzi`` and tiles, and the originals of the photos
    it lists under ``/mosaicist-original/<source index>`` (only those, and
    only from the page's source folder).

    Parameters
    ----------
    path : path-like
        ``NAME.html``, ``NAME.dzi`` or a folder holding exactly one viewer.
    open_browser : bool
        Open the page in the default browser.
    host : str
        Address to listen on (loopback by default).
    port : int
        Port; 0 picks a free one.
    announce : callable
        Called with one line naming the page's URL once it is being served.

    Raises
    ------
    MosaicistError
        When the path is not a viewer or the address cannot be listened on.
    """
    server, url = make_server(path, host=host, port=port)
    try:
        announce(f"Serving {url} (press Ctrl+C to stop)")
        if open_browser:
            webbrowser.open(url)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()



