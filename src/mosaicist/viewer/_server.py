"""Serving a mosaic's viewer page (``mosaicist view``, and each run in the studio).

What is served comes from the page's signed manifest (``NAME.viewer.json``,
see :mod:`._manifest`), never from the page: the page, its ``.dzi``, the
tiles ``NAME_files/<level>/<column>_<row>.<format>`` and, under
``mosaicist-original/<source index>``, the originals the manifest lists.
Without a trusted manifest (outputs of older versions) the page, ``NAME.dzi``
and ``NAME_files/`` are served by their names, and no originals.

Every file is resolved (symlinks included) and must lie inside its root: the
page's folder, the tile folder (itself inside the page's folder), or the
originals' folder (see :func:`mosaicist.web.open_inside`). A page whose tile
folder is missing or lies elsewhere, or whose name no address can hold, is
refused in one line before anything is served. The server is the
package's hardened one (:mod:`mosaicist.web`): ``Host`` must name it, only
GET and HEAD are answered, malformed requests get a 4xx status, and nothing
is ever answered with a traceback.
"""

from __future__ import annotations

import os
import re
import sys
import urllib.parse
import webbrowser
from collections.abc import Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..errors import MosaicistError, printable
from ..web import (
    FileAnswer,
    WebError,
    WebServer,
    bind,
    content_type,
    make_app,
    open_inside,
    resolved_folder,
    sigterm_as_interrupt,
)
from ._manifest import ViewerManifest, read_manifest
from ._page import ORIGINAL_ROUTE, find_viewer

#: A tile of the pyramid, relative to its folder: ``<level>/<column>_<row>.<format>``,
#: the format in any case: a descriptor's ``Format`` is the extension, as spelled there.
TILE_PATTERN = re.compile(r"[0-9]{1,3}/[0-9]{1,9}_[0-9]{1,9}\.(?i:jpeg|jpg|png|webp)")
#: An original's route: its source index.
INDEX_PATTERN = re.compile(r"[0-9]{1,9}")
#: A byte of a file name that is not UTF-8, as Python decodes it (a lone surrogate).
_NOT_UTF8 = re.compile("[\udc80-\udcff]")
#: What no address served by :mod:`mosaicist.web` can name: a control character
#: (refused in any request's path) or a backslash (refused in any file name).
_NOT_SERVABLE = re.compile(r"[\x00-\x1f\x7f\\]")


def page_policy(frame_ancestors: str = "'none'") -> str:
    """The content security policy of a viewer page.

    The page inlines its script, styles and button images, and loads its
    tiles from this server: nothing from elsewhere.
    """
    return ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
            "img-src 'self' data: blob:; connect-src 'self'; "
            f"frame-ancestors {frame_ancestors}; base-uri 'none'; form-action 'none'")


class ViewerSite:
    """What one viewer page may serve, resolved once.

    Parameters
    ----------
    path : path-like
        ``NAME.html``, ``NAME.dzi`` or a folder holding exactly one viewer.
    embeddable : bool
        Whether pages of the same server may show the page in a frame (the
        studio); otherwise no page may.

    Attributes
    ----------
    page : pathlib.Path
        The page, resolved.
    notice : str or None
        One line saying why no originals are served (no trusted manifest).

    Raises
    ------
    MosaicistError
        When the path is not a viewer, no address can name it (a name that is
        not UTF-8, or holds a control character or a backslash), or its tile
        folder is missing or lies outside the page's folder.
    """

    def __init__(self, path: str | os.PathLike[str], *, embeddable: bool = False) -> None:
        self.page = find_viewer(path).resolve()
        # No address names such a page or its tiles: the web layer refuses paths
        # that are not UTF-8 or hold a control character, and names with a
        # backslash. Said now, not as a page that never loads.
        for defect, pattern in (("is not UTF-8", _NOT_UTF8),
                                ("holds a control character or a backslash", _NOT_SERVABLE)):
            if pattern.search(self.page.stem):
                raise MosaicistError(
                    f"{printable(str(self.page))}: a page whose name {defect} cannot be "
                    "served; open it from disk, or make the mosaic again under another name")
        manifest, problem = read_manifest(self.page)
        self.notice = None if problem is None else (
            f"{problem}; serving the page and its tiles only, no original photos "
            "(write the mosaic again to serve them)"
        )
        self._init_roots(manifest)
        frames = "'self'" if embeddable else "'none'"
        self._page_headers = {"content-security-policy": page_policy(frames),
                              "x-frame-options": "SAMEORIGIN" if embeddable else "DENY"}

    def _init_roots(self, manifest: ViewerManifest | None) -> None:
        self.root = self.page.parent
        self.descriptor = manifest.descriptor if manifest else f"{self.page.stem}.dzi"
        self.tiles = manifest.tiles if manifest else f"{self.page.stem}_files"
        folder = self.root / self.tiles
        tiles_root = resolved_folder(folder)
        # A page without its tiles shows nothing: said now, in one line, not as a
        # page that stays blank. The tile folder must itself be inside the page's
        # folder (the server serves nothing from elsewhere).
        if tiles_root is None:
            raise MosaicistError(
                f"{printable(str(folder))}: the viewer's Deep Zoom tile folder is missing "
                "(moved or deleted); make the mosaic again")
        if not tiles_root.is_relative_to(self.root):
            raise MosaicistError(
                f"{printable(str(folder))}: the viewer's Deep Zoom tile folder leads out of "
                "the page's folder, and nothing outside it is served; put the tiles there")
        self.tiles_root = tiles_root
        source_root = manifest.source_root if manifest else None
        self.source_root = None if source_root is None else resolved_folder(source_root)
        self.sources = manifest.sources if manifest else ()

    def _parts(self, route: str) -> tuple[Path, list[str]] | None:
        """The root and names a route (relative to the site) may name; None: not served."""
        if route in (self.page.name, self.descriptor):
            return self.root, [route]
        if route.startswith(f"{self.tiles}/"):
            tile = route[len(self.tiles) + 1:]
            if not TILE_PATTERN.fullmatch(tile):
                return None
            return self.tiles_root, tile.split("/")
        if route.startswith(f"{ORIGINAL_ROUTE}/"):
            index = route[len(ORIGINAL_ROUTE) + 1:]
            if not INDEX_PATTERN.fullmatch(index) or self.source_root is None:
                return None
            source = self.sources[int(index)] if int(index) < len(self.sources) else None
            return None if source is None else (self.source_root, source.split("/"))
        return None

    def answer(self, route: str, prefix: str = "/") -> Response:
        """The answer to ``prefix + route``: a file the manifest allows, or 404.

        Parameters
        ----------
        route : str
            The decoded path below the site (no leading slash); empty: the
            site itself, redirected to the page.
        prefix : str
            The path the site is served under, ending with a slash.
        """
        if route == "":
            return RedirectResponse(prefix + urllib.parse.quote(self.page.name), 302)
        parts = self._parts(route)
        # An original's file name is the disk's own (a backslash or a control character
        # in it is a photo's name, not a typed address).
        original = route.startswith(f"{ORIGINAL_ROUTE}/")
        opened = None if parts is None else open_inside(*parts, hidden=True,
                                                        disk_names=original)
        if opened is None:
            raise WebError(404, "nothing is served at this address")
        path, handle = opened
        is_page = parts is not None and parts[0] == self.root and route == self.page.name
        return FileAnswer(handle, content_type(path.name),
                          headers=self._page_headers if is_page else None)


class ViewerServer(WebServer):
    """The server of ``mosaicist view``: a :class:`~mosaicist.web.WebServer` of one viewer.

    Attributes
    ----------
    site : ViewerSite
        What it serves.
    notice : str or None
        One line saying why no originals are served, or None.
    """

    def __init__(self, site: ViewerSite, host: str, port: int) -> None:
        listener = bind(host, port)
        bound = listener.getsockname()[1]

        async def serve_route(request: Request) -> Response:
            return site.answer(request.path_params["route"])

        async def no_icon(request: Request) -> Response:
            # Browsers ask every server for its icon: a 404 there was a console error on
            # every page served. No site file has this name (.html, .dzi, NAME_files/).
            return Response(status_code=204)

        app = make_app([Route("/favicon.ico", no_icon, methods=["GET", "HEAD"]),
                        Route("/{route:path}", serve_route, methods=["GET", "HEAD"])],
                       host=host, port=bound, name="view")
        super().__init__(app, listener)
        self.site = site
        self.notice = site.notice


def make_server(
    path: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 0
) -> tuple[ViewerServer, str]:
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
    server : ViewerServer
        Bound, not yet serving: ``start()`` serves in a thread until
        ``stop()`` (or use it as a context manager); ``stop()`` also releases
        the address of one never started. Its
        ``notice`` is one line saying why no originals are served (no
        trusted manifest), or None.
    url : str
        The page's address, ``http://HOST:PORT/NAME.html``.

    Raises
    ------
    MosaicistError
        When the path is not a viewer, cannot be served (see
        :class:`ViewerSite`) or the address cannot be listened on.
    """
    site = ViewerSite(path)
    server = ViewerServer(site, host, port)
    return server, f"{server.url}/{urllib.parse.quote(site.page.name)}"


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
        Called with one line naming the page's URL once it is being served:
        ``mosaicist view: URL (press Ctrl+C to stop)``.

    Raises
    ------
    MosaicistError
        When the path is not a viewer or the address cannot be listened on.
    """
    server, url = make_server(path, host=host, port=port)

    def started() -> None:
        if server.notice is not None:
            # The page's path may hold a newline or a terminal escape: shown escaped.
            print(f"mosaicist: warning: {printable(server.notice)}", file=sys.stderr)
        # As 'mosaicist studio' and 'live' start: the command, then the address.
        announce(f"mosaicist view: {url} (press Ctrl+C to stop)")
        if open_browser:
            webbrowser.open(url)

    # Stopped by ``kill`` as by Ctrl+C: exit 0, as 'studio' and 'live' do (it ended by
    # SIGTERM's default action, status -15, a failure to a supervisor).
    with sigterm_as_interrupt():
        server.run_until_interrupted(started)
