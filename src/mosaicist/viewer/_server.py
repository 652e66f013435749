"""A local server for a mosaic's viewer page (``mosaicist view``).

What it serves comes from the page's signed manifest (``NAME.viewer.json``,
see :mod:`._manifest`), never from the page: the page, its ``.dzi``, the
tiles ``NAME_files/<level>/<column>_<row>.<format>`` and, under
``/mosaicist-original/<source index>``, the originals the manifest lists.
Without a trusted manifest (outputs of older versions) it serves the page,
``NAME.dzi`` and ``NAME_files/`` by their names, and no originals.

Every file is resolved (symlinks included) and must lie inside its root: the
page's folder, the tile folder (itself inside the page's folder), or the
originals' folder. Requests must name this server in ``Host`` (so a
rebinding DNS name cannot reach it), use GET or HEAD and an origin-form
path of valid percent-encoded UTF-8 without control characters; anything
else is answered with a 4xx status, and no request is ever answered with a
traceback in the log.
"""

from __future__ import annotations

import http.server
import ipaddress
import mimetypes
import os
import re
import shutil
import socket
import stat
import sys
import urllib.parse
import webbrowser
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import MosaicistError
from ._manifest import ViewerManifest, read_manifest
from ._page import ORIGINAL_ROUTE, find_viewer

#: Longest request target accepted (browsers' own URLs here are far shorter).
MAX_TARGET = 2048
#: A tile of the pyramid, relative to its folder: ``<level>/<column>_<row>.<format>``.
TILE_PATTERN = re.compile(r"[0-9]{1,3}/[0-9]{1,9}_[0-9]{1,9}\.(?:jpeg|jpg|png|webp)")
#: A percent sign not followed by two hex digits.
BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
#: Control characters (NUL included), which no served name contains.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
CONTENT_TYPES = {".dzi": "application/xml", ".html": "text/html; charset=utf-8",
                 ".jpeg": "image/jpeg", ".jpg": "image/jpeg", ".png": "image/png",
                 ".webp": "image/webp"}


def _contained(path: Path, root: Path) -> Path | None:
    """``path`` with every symlink resolved, when it is a regular file under ``root``.

    ``root`` is itself resolved already, so a link that leads out of it,
    anywhere along the path, is refused.
    """
    try:
        real = Path(os.path.realpath(path, strict=True))
    except (OSError, ValueError):
        return None
    return real if real.is_relative_to(root) and real.is_file() else None


def _resolved_folder(path: Path) -> Path | None:
    try:
        real = Path(os.path.realpath(path, strict=True))
    except (OSError, ValueError):
        return None
    return real if real.is_dir() else None


def _host_names(host: str) -> tuple[frozenset[str], bool]:
    """The names a ``Host`` header may give for ``host``, and whether any IP literal may.

    A loopback address also answers to the other loopback names. Bound to
    every interface, any IP literal is accepted as well: DNS rebinding needs
    a DNS name, and every name but these is refused.
    """
    name = host.lower().strip("[]")
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        address = None
    names = {f"[{name}]" if address is not None and address.version == 6 else name}
    everywhere = address is not None and address.is_unspecified
    if name == "localhost" or everywhere or (address is not None and address.is_loopback):
        names |= {"127.0.0.1", "localhost", "[::1]"}
    return frozenset(names), everywhere


def _split_host(value: str) -> tuple[str, int] | None:
    """``name[:port]`` of a Host header as (lower-case name, port); None when malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[:end + 1], value[end + 1:]
    else:
        name, colon, port = value.partition(":")
        rest = colon + port
    if not name or rest and not re.fullmatch(r":[0-9]{1,5}", rest):
        return None
    return name, int(rest[1:]) if rest else 80


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return name.startswith("[") == (":" in name)


class _ViewerServer(http.server.ThreadingHTTPServer):
    """Serves one viewer page, its pyramid and the originals its manifest lists."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], page: Path, manifest: ViewerManifest | None,
                 notice: str | None) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.notice = notice
        self.root = page.parent  # resolved by make_server
        descriptor = manifest.descriptor if manifest else f"{page.stem}.dzi"
        tiles = manifest.tiles if manifest else f"{page.stem}_files"
        self.files = {f"/{page.name}": page, f"/{descriptor}": self.root / descriptor}
        self.page_route = f"/{page.name}"
        self.tiles_route = f"/{tiles}/"
        tiles_root = _resolved_folder(self.root / tiles)
        # The tile folder must itself be inside the page's folder.
        inside = tiles_root is not None and tiles_root.is_relative_to(self.root)
        self.tiles_root = tiles_root if inside else None
        source_root = manifest.source_root if manifest else None
        self.source_root = None if source_root is None else _resolved_folder(source_root)
        self.sources = manifest.sources if manifest else ()
        self.host_names, self.any_ip = _host_names(address[0])
        super().__init__(address, _ViewerHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line on stderr, never a traceback; nothing when the browser hung up."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            return
        print(f"mosaicist: view: a request from {client_address[0]} failed: "
              f"{type(error).__name__}: {error}", file=sys.stderr)

    def host_allowed(self, value: str) -> bool:
        """Whether a ``Host`` header names this server (its bound name and port)."""
        host = _split_host(value)
        if host is None or host[1] != self.server_address[1]:
            return False
        return host[0] in self.host_names or (self.any_ip and _is_ip_literal(host[0]))

    def locate(self, route: str) -> Path | None:
        """The file a decoded route names, resolved inside its root; None: not served."""
        if route in self.files:
            return _contained(self.files[route], self.root)
        if route.startswith(self.tiles_route):
            tile = route[len(self.tiles_route):]
            if self.tiles_root is None or not TILE_PATTERN.fullmatch(tile):
                return None
            return _contained(self.tiles_root / tile, self.tiles_root)
        if route.startswith(f"/{ORIGINAL_ROUTE}/"):
            index = route[len(ORIGINAL_ROUTE) + 2:]
            if not re.fullmatch(r"[0-9]{1,9}", index) or self.source_root is None:
                return None
            source = self.sources[int(index)] if int(index) < len(self.sources) else None
            if source is None:
                return None
            return _contained(self.source_root.joinpath(*source.split("/")), self.source_root)
        return None


def _route(target: str) -> str | HTTPStatus:
    """The decoded path of an origin-form request target, or the status refusing it."""
    if len(target) > MAX_TARGET:
        return HTTPStatus.REQUEST_URI_TOO_LONG
    if not target.startswith("/") or target.startswith("//"):
        return HTTPStatus.BAD_REQUEST
    path = target.split("#", 1)[0].split("?", 1)[0]
    if BAD_ESCAPE.search(path):
        return HTTPStatus.BAD_REQUEST
    try:
        # http.server decodes the request line as Latin-1; the URL's bytes are UTF-8.
        route = urllib.parse.unquote_to_bytes(path.encode("latin-1")).decode("utf-8")
    except UnicodeError:
        return HTTPStatus.BAD_REQUEST
    return HTTPStatus.BAD_REQUEST if CONTROL.search(route) else route


class _ViewerHandler(http.server.BaseHTTPRequestHandler):
    server: _ViewerServer
    server_version = "mosaicist-view"
    sys_version = ""
    # An unparsable request line is still answered with a status line (not as HTTP/0.9).
    default_request_version = "HTTP/1.0"
    #: Seconds a connection may stay silent.
    timeout = 60

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: the viewer is a local tool."""

    def parse_request(self) -> bool:
        """The base checks, then the method and the ``Host`` header."""
        if not super().parse_request():
            return False
        if self.command not in ("GET", "HEAD"):
            self._refuse(HTTPStatus.METHOD_NOT_ALLOWED, {"Allow": "GET, HEAD"})
            return False
        hosts = self.headers.get_all("Host") or []
        if len(hosts) != 1:
            self._refuse(HTTPStatus.BAD_REQUEST)
            return False
        if not self.server.host_allowed(hosts[0]):
            self._refuse(HTTPStatus.MISDIRECTED_REQUEST)
            return False
        return True

    def do_GET(self) -> None:
        """Send a file the manifest allows, or refuse."""
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        """As GET, without the body."""
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        route = _route(self.path)
        if isinstance(route, HTTPStatus):
            self._refuse(route)
            return
        if route == "/":
            self.send_response(HTTPStatus.FOUND)
            self.send_header("Location", urllib.parse.quote(self.server.page_route))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path = self.server.locate(route)
        handle = None if path is None else self._open(path)
        if path is None or handle is None:
            self._refuse(HTTPStatus.NOT_FOUND)
            return
        with handle:
            size = os.fstat(handle.fileno()).st_size
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", CONTENT_TYPES.get(path.suffix.lower())
                             or mimetypes.guess_type(path.name)[0] or "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self._common_headers()
            self.end_headers()
            if send_body:
                shutil.copyfileobj(handle, self.wfile)

    @staticmethod
    def _open(path: Path) -> BinaryIO | None:
        # No link may have been put in place of the resolved file since.
        try:
            descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return None
        handle = os.fdopen(descriptor, "rb")
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            handle.close()
            return None
        return handle

    def _common_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        # Other sites' pages may not embed what is served here.
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")

    def _refuse(self, status: HTTPStatus, headers: dict[str, str] | None = None) -> None:
        body = f"{status.value} {status.phrase}\n".encode("ascii")
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self._common_headers()
        self.end_headers()
        self.close_connection = True
        if self.command != "HEAD":
            self.wfile.write(body)


def make_server(
    path: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 0
) -> tuple[_ViewerServer, str]:
    """Build the server of a viewer without starting it.

    Parameters
    ----------
    path : path-like
        ``NAME.html``, ``NAME.dzi`` or a folder holding exactly one viewer.
    host : str
        Address to listen on; requests must name it (or, for a loopback
        address, ``127.0.0.1``, ``localhost`` or ``[::1]``) in ``Host``.
    port : int
        Port; 0 picks a free one.

    Returns
    -------
    server : http.server.ThreadingHTTPServer
        Call ``serve_forever()`` (for instance in a thread), then
        ``shutdown()`` and ``server_close()``. Its ``notice`` is one line
        saying why no originals are served (no trusted manifest), or None.
    url : str
        The page's address, ``http://HOST:PORT/NAME.html``.

    Raises
    ------
    MosaicistError
        When the path is not a viewer or the address cannot be listened on.
    """
    page = find_viewer(path).resolve()
    manifest, problem = read_manifest(page)
    notice = None if problem is None else (
        f"{problem}; serving the page and its tiles only, no original photos "
        "(write the mosaic again to serve them)"
    )
    try:
        server = _ViewerServer((host, port), page, manifest, notice)
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

    Serves what the page's signed manifest ``NAME.viewer.json`` names: the
    page, its ``.dzi`` and tiles, and the originals it lists under
    ``/mosaicist-original/<source index>``. Without a trusted manifest, the
    page and its tiles only, saying so once on stderr.

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
        if server.notice is not None:
            print(f"mosaicist: {server.notice}", file=sys.stderr)
        announce(f"Serving {url} (press Ctrl+C to stop)")
        if open_browser:
            webbrowser.open(url)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
