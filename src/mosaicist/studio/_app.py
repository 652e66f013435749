"""The studio's web app: the page, its API, the runs' viewers.

Routes (JSON unless said otherwise; errors are ``{"error": "one sentence"}``):

==========================================  ===========================================
``GET /``                                   the page, with this server's token in it
``GET /assets/{name}``                      the page's scripts, styles and icons
``GET /assets/openseadragon/{path}``        the viewer's vendored OpenSeadragon
``GET /api/state``                          version, roots, sources, settings, presets...
``GET /api/examples/{name}``                an example target picture
``POST /api/targets``                       upload a target (multipart field ``file``)
``POST /api/targets/example``               use an example as the target (``{"name"}``)
``GET /api/targets/{id}``                   a stored target picture
``GET /api/folders?path=P``                 the folders and pictures in a folder
``POST /api/index``                         index a tile source (202 ``{"job"}``)
``GET /api/jobs/{job}``                     a job's state
``GET /api/jobs/{job}/events``              its events (server-sent events)
``POST /api/jobs/{job}/cancel``             cancel it
``POST /api/preview``                       a quick preview (``image/jpeg``)
``POST /api/command``                       the ``mosaicist make`` command of the settings
``POST /api/runs``, ``GET /api/runs``       make a mosaic (202 ``{"id"}``); the history
``GET /api/runs/{id}``                      one run
``GET /api/runs/{id}/events``               its events (server-sent events)
``POST /api/runs/{id}/cancel``              cancel it
``DELETE /api/runs/{id}``                   delete it and its files
``POST /api/runs/{id}/render``              draw it again at another tile size (202)
``GET /api/runs/{id}/files/{kind}``         download one of its outputs
``GET /runs/{id}/view/...``                 its Deep Zoom viewer, as ``mosaicist view``
==========================================  ===========================================

Every request passes the guard of :mod:`mosaicist.web` first: ``Host`` must
name this server; POST and DELETE carry the page's token and come from the
page's own origin. Files are read only inside the folders this studio may
read (the user's home and the ``--root`` folders) and its own cache, and
served only from inside their resolved folders. A history that cannot be
read or written is a fault of the server, answered 503 in one sentence.
Uploaded targets are decoded :data:`UPLOADS_AT_ONCE` at a time, the others
waiting their turn without holding a worker thread; past
:data:`UPLOADS_QUEUED` uploads in the server at once (or
:data:`UPLOAD_BYTES_QUEUED`), more are refused, 503 with ``Retry-After``.

Uploaded targets (``studio/targets/``) are removed once nothing needs them
(:meth:`Studio.clean_targets`, when the studio starts, after each run ends
and after a run is deleted): a picture is kept while a run of the history
was made from it (its command line names it; an overlay drawn again reads
it), while a make job that uses it waits or runs, and for
:data:`TARGETS_KEPT_SECONDS` after it was last uploaded or used (a page
left open keeps the picture it shows). Only the studio's own stored
pictures and their descriptions are ever removed there.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import stat
import sys
import threading
import time
import urllib.parse
import webbrowser
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import __version__
from ..errors import MosaicistError, OptionError
from ..imaging import IMAGE_EXTENSIONS
from ..match import MATCHERS, fitted_matcher
from ..match._gpu import GpuMatcher
from ..options import MosaicOptions, settings
from ..paths import atomic_path, expanded, remove_dead_temporaries
from ..paths import cache_dir as default_cache_dir
from ..sources import ARRAY_SUFFIXES, _split_key
from ..viewer._server import ViewerSite
from ..web import (
    FileAnswer,
    Guard,
    UploadQueue,
    WebError,
    WebServer,
    bind,
    content_type,
    make_app,
    new_token,
    open_inside,
    package_folder,
    read_json,
    resolved_folder,
    sigterm_as_interrupt,
)
from ..web._errors import form_header_too_long
from ._command import command_line, render_command_line
from ._examples import example_path, examples
from ._form import DATASETS, presets_form, settings_form
from ._history import ACTIVE_STATUSES, History, HistoryError, Run
from ._jobs import JobEvent, Jobs, Subscription
from ._preview import Previewer
from ._uploads import MAX_UPLOAD_BYTES, accept_target, display_name
from ._words import check_device_runs, check_runs, cuda_unusable, page_message

#: The placeholder of the page that becomes this server's token.
TOKEN_PLACEHOLDER = "{{MOSAICIST_TOKEN}}"
#: Largest JSON request body.
MAX_JSON_BYTES = 256 * 1024
#: Uploads decoded and stored at once; the others wait their turn.
UPLOADS_AT_ONCE = 2
#: Largest request body at all: an upload and its multipart framing.
MAX_BODY = MAX_UPLOAD_BYTES + 1024 * 1024
#: Uploads in the server at once (being received, waiting for their turn, decoded), and the
#: bytes they may declare in all; more are refused, 503 with Retry-After. The page sends
#: one picture at a time: these bound what a script, or many tabs, can make the studio hold.
UPLOADS_QUEUED = 8
UPLOAD_BYTES_QUEUED = 4 * MAX_BODY
#: Cells of a preview.
PREVIEW_CELLS = 2000
#: Most folders listed in one folder.
MAX_LISTED = 2000
#: Seconds between keep-alive comments of an idle event stream.
KEEP_ALIVE_SECONDS = 15.0
#: Seconds an event stream waits for an event before checking whether the server stops.
EVENT_POLL_SECONDS = 0.5
#: Viewers of runs kept resolved.
VIEWERS_KEPT = 32
#: The page's content security policy: everything from this server, nothing inline.
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; "
               "img-src 'self' data: blob:; connect-src 'self'; frame-src 'self'; "
               "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_ID = re.compile(r"[0-9a-f]{32}")
#: Seconds an uploaded target no run needs is kept after it was last uploaded or used.
TARGETS_KEPT_SECONDS = 24 * 3600.0
#: Seconds between two marks of a stored target as used (see :meth:`Studio._mark_used`).
TARGET_MARK_SECONDS = 3600.0
#: The files of the targets folder that :meth:`Studio.clean_targets` may remove.
_TARGET_FILE = re.compile(r"([0-9a-f]{32})\.(?:jpg|png|json)")
#: Output kinds shown inline (pictures of the page) rather than downloaded.
_INLINE_KINDS = ("thumbnail",)



class Studio:
    """The studio's state behind its web app: history, jobs, preview, targets, roots.

    Making one marks the runs an earlier server left unfinished as
    ``interrupted``. Call :meth:`close` when done: it cancels every job and
    waits until their processes are gone.

    Parameters
    ----------
    cache_dir : path-like, optional
        The cache folder (``--cache-dir``); default :func:`mosaicist.paths.cache_dir`.
    roots : iterable of path-like
        Folders, besides the user's home, whose photos may be used as tiles.
    token : str, optional
        The secret of state-changing requests; a fresh one by default.
    home : path-like, optional
        The user's home (a root; where the folder browser starts).

    Raises
    ------
    MosaicistError
        When a root is not a folder or its path is not UTF-8, or the history
        cannot be opened.
    """

    def __init__(self, cache_dir: str | os.PathLike[str] | None = None,
                 roots: Iterable[str | os.PathLike[str]] = (), *, token: str | None = None,
                 home: str | os.PathLike[str] | None = None) -> None:
        self.assets = package_folder("mosaicist.studio", "assets")
        self.viewer_assets = package_folder("mosaicist.viewer", "assets")
        # Named, not yet made: a studio refused for its roots leaves no cache folder behind.
        self.cache_dir = default_cache_dir(cache_dir, create=False)
        self.token = token or new_token()
        try:
            home_folder = resolved_folder(expanded(home or Path.home()))
        except RuntimeError:  # Path.home(): no home folder known for this user
            home_folder = None
        if home_folder is not None and not _utf8(str(home_folder)):
            # The page names folders in JSON, which holds UTF-8 text only (nor could such a
            # path come back from it): a home of another encoding is not offered.
            home_folder = None
        self.roots: list[Path] = [] if home_folder is None else [home_folder]
        for root in roots:
            folder = resolved_folder(expanded(root))
            if folder is None:
                raise MosaicistError(f"{root}: not a folder (--root)")
            if not _utf8(str(folder)):
                shown = os.fsencode(root).decode("utf-8", "backslashreplace")
                raise MosaicistError(f"{shown}: the folder's path is not UTF-8 text, which "
                                     "the browser page cannot name; rename it (--root)")
            if folder not in self.roots:
                self.roots.append(folder)
        self.home = home_folder or (self.roots[0] if self.roots else None)
        default_cache_dir(cache_dir)  # made now that every input is known to be usable
        self.history = History(self.cache_dir)
        self.interrupted = self.history.mark_interrupted()
        # Below the cache folder with its links resolved: stored pictures are served only
        # from inside a resolved folder (web.open_inside), and a cache reached through a
        # link (~/.cache on another disk) served none of them. The folder's own name stays
        # unresolved: a targets folder that is itself a link is neither served nor cleaned.
        self.targets = Path(os.path.realpath(self.history.root)) / "targets"
        self.targets.mkdir(parents=True, exist_ok=True)
        # Held while a stored target is found and marked as used, and while unused ones
        # are removed: a picture is never removed between the two.
        self._targets_lock = threading.Lock()
        self.jobs = Jobs(self.history, self.cache_dir)
        self.jobs.on_run_end = lambda run_id: self.clean_targets(quiet=True)
        self.previewer = Previewer(self.cache_dir)
        self.stopping = threading.Event()
        self._preview_lock = threading.Lock()
        self._preview_latest = 0
        self._preview_number_lock = threading.Lock()
        # Each upload being decoded holds its picture (up to MAX_UPLOAD_PIXELS, about
        # 0.6 GB at the limit while it is checked and stored): a few at a time. The others
        # wait on the event loop, not in the worker threads every other route needs.
        self.uploads = UploadQueue(
            decoders=UPLOADS_AT_ONCE, queued=UPLOADS_QUEUED, held_bytes=UPLOAD_BYTES_QUEUED,
            largest=MAX_BODY, busy="the studio is busy with other pictures; send this one "
                                   "again in a few seconds")
        self._viewers: OrderedDict[str, ViewerSite] = OrderedDict()
        self._viewers_lock = threading.Lock()
        # Held while a render is started from a run and while a run is deleted: a run
        # being drawn again is not deleted under its render.
        self._sources_lock = threading.Lock()
        self._closed = False
        # Best effort: a folder that cannot be read must not keep the studio from starting.
        self.clean_targets(quiet=True)

    # -- lifetime -------------------------------------------------------------------------

    def begin_stop(self) -> None:
        """Tell the event streams to end: the server is stopping."""
        self.stopping.set()

    def close(self) -> None:
        """Cancel every job and wait until their processes are gone (safe to call twice)."""
        self.begin_stop()
        if not self._closed:
            self._closed = True
            self.jobs.shutdown()

    # -- checks of what the page sends ---------------------------------------------------

    def inside_roots(self, path: Path) -> bool:
        """Whether a resolved path lies in one of the roots.

        Parameters
        ----------
        path : pathlib.Path
            A path with every link resolved, so that a link cannot lead out.

        Returns
        -------
        bool
        """
        return any(path.is_relative_to(root) for root in self.roots)

    def may_read(self, path: Path) -> bool:
        """Whether a resolved path lies in one of the roots or in the studio's cache.

        Parameters
        ----------
        path : pathlib.Path
            A path with every link resolved.

        Returns
        -------
        bool
        """
        return self.inside_roots(path) or path.is_relative_to(
            os.path.realpath(self.cache_dir))

    def _outside(self, shown: str) -> WebError:
        return WebError(403, f"{shown} is outside the folders this studio may read (your home "
                             "folder and those given with --root)")

    def _resolve(self, text: str) -> Path:
        """An absolute path the page sent, resolved; 403 outside the roots."""
        try:
            path = expanded(text)
            if not path.is_absolute():
                raise WebError(400, f"{text}: give the full path of the folder or file")
            real = Path(os.path.realpath(path))
        except (OSError, ValueError):
            raise WebError(400, f"{text}: not a valid path") from None
        if not self.inside_roots(real):
            raise self._outside(text)
        try:
            # Path.is_dir() and friends raise where the path cannot be looked up at all (a
            # name over 255 bytes, a loop of links, no permission): a 400 here, not a 500.
            os.stat(real)
        except (FileNotFoundError, NotADirectoryError):
            pass  # said by the caller, which knows what it looked for
        except OSError as error:
            raise WebError(400, f"{text}: {error.strerror or 'not a valid path'}") from None
        return real

    def tiles_spec(self, value: object) -> str:
        """The tile source a request names: a dataset, or a folder or array file in the roots.

        Parameters
        ----------
        value : object
            The request's ``tiles``, as sent: a dataset name or a full path
            (an array file with ``:KEY`` if need be).

        Returns
        -------
        str
            A source spec, the path resolved.

        Raises
        ------
        WebError
            400 for no usable source; 403 for a path outside the roots.
        """
        if not isinstance(value, str) or not value.strip():
            raise WebError(400, "choose the photos for the tiles: a folder, a collection or an "
                                "array file")
        text = value.strip()
        if text.lower() in DATASETS:
            return text.lower()
        if "\x00" in text or len(text) > 4096:
            raise WebError(400, "the tile source is not a valid path")
        real = self._resolve(text)
        if real.is_dir():
            return str(real)
        file_part, key = _split_key(text)
        if file_part.lower().endswith(ARRAY_SUFFIXES):
            array = self._resolve(file_part)
            if not array.is_file():
                raise WebError(400, f"{file_part}: no such array file")
            return str(array) + ("" if key is None else f":{key}")
        if not real.exists():
            raise WebError(400, f"{text}: no such folder or file")
        raise WebError(400, f"{text}: not a tile source (a folder of photos, or an .h5, .npz "
                            "or .npy image array)")

    def target(self, value: object) -> tuple[Path, dict[str, Any]]:
        """The stored target a request names, and its description.

        Parameters
        ----------
        value : object
            The request's ``target``, as sent: the id :meth:`accept` gave.

        Returns
        -------
        tuple of (pathlib.Path, dict)
            The stored picture, and ``{"id", "name", "width", "height"}``
            as far as known.

        Raises
        ------
        WebError
            400 for no id; 404 when that picture is no longer stored.
        """
        if not isinstance(value, str) or not _ID.fullmatch(value):
            raise WebError(400, "choose a picture first (the target is not an uploaded one)")
        for suffix in (".jpg", ".png"):
            path = self.targets / f"{value}{suffix}"
            if self._mark_used(path):
                info: dict[str, Any] = {"id": value, "name": "target"}
                with contextlib.suppress(OSError, ValueError):
                    described = json.loads(path.with_suffix(".json").read_text("utf-8"))
                    if isinstance(described, dict):
                        info |= {key: described[key] for key in ("name", "width", "height")
                                 if key in described}
                return path, info
        raise WebError(404, "that picture is no longer here; choose it again")

    @staticmethod
    def options(value: object) -> MosaicOptions:
        """The options a request's ``settings`` give (only those the user changed).

        Checked as a run would check them, so that a bad value is refused
        before a run is recorded.

        Parameters
        ----------
        value : object
            The request's ``settings``, as sent: setting names and values,
            or None for the defaults.

        Returns
        -------
        MosaicOptions

        Raises
        ------
        WebError
            400 naming the setting that is unknown or has a bad value.
        """
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise WebError(400, "settings must be an object of setting names and values")
        known = {declared.name for declared in settings()}
        unknown = sorted(str(name) for name in value if name not in known)
        if unknown:
            raise WebError(400, f"unknown setting {unknown[0]!r}")
        try:
            options = MosaicOptions(**value)
            # The settings whose values come from registries (search, device), and their
            # combinations, as a run would check them: refused before a run is recorded.
            try:
                matcher, fitted, _ = fitted_matcher(options)
            except OptionError:
                # A device this computer cannot use is said first: else the page asked
                # for the corrections to be turned off, and then said there is no GPU.
                check_device_runs(options)
                raise
            # And whether this machine runs them (a GPU asked for where there is none):
            # else each such run was recorded, and failed, in the history.
            check_runs(matcher, fitted)
        except MosaicistError as error:
            raise WebError(400, page_message(error)) from None
        return options

    # -- the page's data -----------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """``GET /api/state``."""
        return {
            "version": __version__,
            "roots": [str(root) for root in self.roots],
            "home": None if self.home is None else str(self.home),
            "sources": list(DATASETS),
            "settings": _marked_unusable(settings_form()),
            "presets": presets_form(),
            "examples": [{"name": item["name"], "title": item["title"],
                          "licence": item["licence"]} for item in examples()],
            "max_upload_bytes": MAX_UPLOAD_BYTES,
        }

    def folders(self, text: str | None) -> dict[str, Any]:
        """``GET /api/folders``: the folders in a folder of the roots, and its picture count.

        Parameters
        ----------
        text : str or None
            The folder's full path; None or empty for the home folder.

        Returns
        -------
        dict
            ``path``, ``parent`` (None at a root), ``folders`` (name and
            path of each) and ``images``.

        Raises
        ------
        WebError
            403 outside the roots or for a folder that cannot be read; 404
            for no such folder.
        """
        if text is None or text == "":
            if self.home is None:
                raise WebError(404, "this studio has no folder to browse")
            text = str(self.home)
        real = self._resolve(text)
        if not real.is_dir():
            raise WebError(404, f"{text}: no such folder")
        folders: list[dict[str, str]] = []
        images = 0
        try:
            with os.scandir(real) as entries:
                for entry in entries:
                    if entry.name.startswith(".") or not _utf8(entry.path):
                        # A name that is not UTF-8 cannot go to the page in JSON, nor
                        # come back from it: such a folder cannot be chosen there.
                        continue
                    with contextlib.suppress(OSError):
                        if entry.is_dir():
                            inner = Path(os.path.realpath(entry.path))
                            if self.inside_roots(inner) and len(folders) < MAX_LISTED:
                                folders.append({"name": entry.name, "path": entry.path})
                        elif entry.is_file() and (
                            os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS
                        ):
                            images += 1
        except OSError as error:
            raise WebError(403, f"{text}: cannot be read ({error.strerror or error})") from None
        folders.sort(key=lambda item: (item["name"].casefold(), item["name"]))
        at_root = real in self.roots
        parent = None if at_root or not self.inside_roots(real.parent) else str(real.parent)
        return {"path": str(real), "parent": parent, "folders": folders, "images": images}

    # -- targets -------------------------------------------------------------------------

    def accept(self, data: bytes, filename: str) -> dict[str, Any]:
        """Check and store an uploaded target; return ``{"id", "name", "width", "height"}``.

        Decoded in the calling thread; the server calls it through
        :attr:`uploads`, which decodes a few at a time.

        Parameters
        ----------
        data : bytes
            The file as uploaded.
        filename : str
            The name the browser gave it, shown as the target's name.

        Returns
        -------
        dict
        """
        for _ in range(2):
            try:
                path, info = accept_target(data, filename, self.targets)
            except FileNotFoundError:
                continue  # an old copy was removed as it was found: stored again
            if self._mark_used(path):
                break
        else:
            raise WebError(503, "the picture could not be stored; send it again")
        described = {key: info[key] for key in ("id", "name", "width", "height")}
        with atomic_path(path.with_suffix(".json")) as temporary:
            temporary.write_text(json.dumps(described), encoding="utf-8")
        return described

    def _mark_used(self, path: Path) -> bool:
        """Mark a stored target as used now (its modification time); whether it is there.

        Marked at most every :data:`TARGET_MARK_SECONDS`: the preview reads
        the picture again when its times change, and must not on every change
        of a setting.
        """
        with self._targets_lock:
            try:
                status = path.stat()
                if not stat.S_ISREG(status.st_mode):
                    return False
                if status.st_mtime < time.time() - TARGET_MARK_SECONDS:
                    os.utime(path)
            except OSError:
                return False
            return True

    def clean_targets(self, *, quiet: bool = False) -> list[str]:
        """Remove the uploaded targets nothing needs any more; return the ids removed.

        A stored picture (and its description) is removed when no run of
        the history was made from it, no make job waiting or running uses
        it, and it was neither uploaded nor used (previewed, made...) in the
        last :data:`TARGETS_KEPT_SECONDS`. Only regular files named as the
        studio names them, directly in its targets folder, are removed;
        nothing is when that folder is a link.

        Parameters
        ----------
        quiet : bool
            Keep everything, silently, when the history cannot be read
            (after a run, in a job's thread); otherwise that is raised.

        Returns
        -------
        list of str

        Raises
        ------
        HistoryError
            When the history cannot be read and ``quiet`` is false.
        """
        try:
            return self._clean_targets()
        except (HistoryError, OSError):
            if not quiet:
                raise
            return []

    def _clean_targets(self) -> list[str]:
        if self.targets.is_symlink() or not self.targets.is_dir():
            return []
        removed: list[str] = []
        with self._targets_lock:
            needed = self.history.targets_in_use()
            needed |= {path.stem for path in self.jobs.targets()
                       if path.parent == self.targets}
            oldest = time.time() - TARGETS_KEPT_SECONDS
            stale: dict[str, list[Path]] = {}
            fresh: set[str] = set()
            with os.scandir(self.targets) as entries:
                for entry in entries:
                    match = _TARGET_FILE.fullmatch(entry.name)
                    if match is None or match.group(1) in needed:
                        continue
                    with contextlib.suppress(OSError):
                        if not entry.is_file(follow_symlinks=False):
                            continue
                        if entry.stat(follow_symlinks=False).st_mtime >= oldest:
                            fresh.add(match.group(1))
                        else:
                            stale.setdefault(match.group(1), []).append(Path(entry.path))
            for target_id, paths in stale.items():
                if target_id in fresh:
                    continue  # its picture (or description) was used lately: kept whole
                for path in paths:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                removed.append(target_id)
        # What uploads killed mid-write left (their writer is gone).
        with contextlib.suppress(OSError):
            remove_dead_temporaries(self.targets, 60.0, below=False)
        return sorted(removed)

    def accept_example(self, name: object) -> dict[str, Any]:
        """``POST /api/targets/example``: store one of the examples as a target.

        Parameters
        ----------
        name : object
            The example's name, as sent.

        Returns
        -------
        dict
            As :meth:`accept`.

        Raises
        ------
        WebError
            404 for no such example.
        """
        path = example_path(name) if isinstance(name, str) else None
        if path is None:
            raise WebError(404, f"there is no example called {name!r}")
        title = next(item["title"] for item in examples() if item["name"] == name)
        return self.accept(path.read_bytes(), f"{title}{path.suffix}")

    # -- preview and command line --------------------------------------------------------

    def preview_number(self) -> int:
        """Number a preview request; a newer one makes older waiting ones void."""
        with self._preview_number_lock:
            self._preview_latest += 1
            return self._preview_latest

    def preview(self, number: int, body: dict[str, Any]) -> Response:
        """``POST /api/preview`` (in a worker thread: one preview at a time, newest first).

        Parameters
        ----------
        number : int
            The request's number from :meth:`preview_number`: an older
            request still waiting when a newer one came is refused.
        body : dict
            The request's JSON: ``target``, ``tiles`` and ``settings``.

        Returns
        -------
        starlette.responses.Response
            The preview as JPEG, with its cells, time and command line in
            ``X-Mosaicist-*`` headers.

        Raises
        ------
        WebError
            409 when a newer preview was asked for; 4xx for what the body
            names that cannot be used.
        """
        target, described = self.target(body.get("target"))
        tiles = self.tiles_spec(body.get("tiles"))
        options = self.options(body.get("settings"))
        with self._preview_lock:
            if number != self._preview_latest:
                raise WebError(409, "a newer preview was asked for")
            try:
                picture, info = self.previewer.preview(target, tiles, options, PREVIEW_CELLS)
            except MosaicistError as error:
                raise _refusal(error, target, str(described["name"])) from None
        headers = {"X-Mosaicist-Cells": str(info.get("cells", "")),
                   "X-Mosaicist-Seconds": f"{float(info.get('seconds', 0.0)):.3f}"}
        with contextlib.suppress(OptionError):
            # Percent-encoded UTF-8 (decodeURIComponent): headers carry Latin-1 only.
            headers["X-Mosaicist-Command"] = urllib.parse.quote(
                command_line(str(target), tiles, options), safe=" /:=,'\"-_.~@+")
        return Response(picture, 200, headers, media_type="image/jpeg")

    def command(self, body: dict[str, Any]) -> dict[str, str]:
        """``POST /api/command``: the command line that makes what the page shows.

        Parameters
        ----------
        body : dict
            The request's JSON: ``target``, ``tiles`` and ``settings``.

        Returns
        -------
        dict
            ``{"command": ...}``.
        """
        target, _ = self.target(body.get("target"))
        tiles = self.tiles_spec(body.get("tiles"))
        options = self.options(body.get("settings"))
        try:
            return {"command": command_line(str(target), tiles, options)}
        except OptionError as error:
            raise WebError(400, page_message(error)) from None

    # -- jobs and runs -------------------------------------------------------------------

    def start_index(self, body: dict[str, Any]) -> dict[str, str]:
        """``POST /api/index``: ``tiles``, ``settings`` and, optionally, ``target``.

        With a print size the tile size, and so the index's, follows from
        the target's size: indexed without it, the index would be at the
        tile size of the settings, which neither the preview nor the run
        reads. Otherwise the target is not needed (nor checked).

        Parameters
        ----------
        body : dict
            The request's JSON.

        Returns
        -------
        dict
            ``{"job": ...}``, the indexing job's id.
        """
        tiles = self.tiles_spec(body.get("tiles"))
        options = self.options(body.get("settings"))
        if body.get("target") is None or options.print_size is None:
            return {"job": self.jobs.start_index(tiles, options)}
        target, info = self.target(body.get("target"))
        try:
            return {"job": self.jobs.start_index(tiles, options, target)}
        except MosaicistError as error:
            raise _refusal(error, target, str(info["name"])) from None

    def job_status(self, job_id: str) -> dict[str, Any]:
        """``GET /api/jobs/{job}``.

        Parameters
        ----------
        job_id : str
            The job's id.

        Returns
        -------
        dict
            The job's status and progress.

        Raises
        ------
        WebError
            404 for a job this server does not have.
        """
        try:
            return self.jobs.status(job_id)
        except KeyError:
            raise WebError(404, "there is no such job (it may have ended before the studio "
                                "restarted)") from None

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """``POST /api/jobs/{job}/cancel``.

        Parameters
        ----------
        job_id : str
            The job's id.

        Returns
        -------
        dict
            ``cancelled`` (whether it was still going), and its status.

        Raises
        ------
        WebError
            404 for a job this server does not have.
        """
        self.job_status(job_id)
        cancelled = self.jobs.cancel(job_id)
        return {"cancelled": cancelled, **self.job_status(job_id)}

    def run(self, run_id: str) -> Run:
        """The run ``run_id``; 404 when there is none.

        Parameters
        ----------
        run_id : str
            The run's id in the history.

        Returns
        -------
        Run

        Raises
        ------
        WebError
            404 when the history has no such run.
        """
        run = self.history.get(run_id)
        if run is None:
            raise WebError(404, "there is no such mosaic in the history")
        return run

    def run_json(self, run: Run) -> dict[str, Any]:
        """A run as the page sees it (no server paths).

        Parameters
        ----------
        run : Run
            A run of the history.

        Returns
        -------
        dict
            Its record, with the URLs of its files and viewer, and its
            progress while it runs.
        """
        base = f"/api/runs/{run.id}"
        # Only the files still there: those deleted from the disk (a cleaned cache) would
        # be broken thumbnails and downloads that fail on the page.
        outputs = [kind for kind in run.outputs if _present(run.output_path(kind))]
        viewer = run.outputs.get("viewer") if "viewer" in outputs else None
        result = {
            "id": run.id, "created": run.created, "status": run.status,
            "target_name": run.target_name, "tiles": run.tiles, "settings": run.settings,
            "command": run.command, "report": run.report, "error": run.error,
            "outputs": outputs,
            "files": {kind: f"{base}/files/{kind}" for kind in outputs},
            "thumbnail_url": f"{base}/files/thumbnail" if "thumbnail" in outputs else None,
            "viewer_url": None if viewer is None else (
                f"/runs/{run.id}/view/{urllib.parse.quote(viewer)}"),
        }
        if run.status in ACTIVE_STATUSES:
            with contextlib.suppress(KeyError):
                status = self.jobs.status(run.id)
                result["progress"] = {key: status[key] for key in ("stage", "done", "total")}
        return result

    def start_run(self, body: dict[str, Any]) -> dict[str, str]:
        """``POST /api/runs``: record a run and start making it.

        Parameters
        ----------
        body : dict
            The request's JSON: ``target``, ``tiles`` and ``settings``, and
            ``target_name``, the name the page uploaded the target as (the
            stored picture is shared by every upload of the same file, and
            keeps the name of the latest).

        Returns
        -------
        dict
            ``{"id": ...}``, the new run's id.

        Raises
        ------
        WebError
            4xx for what the body names that cannot be used.
        """
        target, info = self.target(body.get("target"))
        name = _run_target_name(body.get("target_name"), str(info["name"]))
        tiles = self.tiles_spec(body.get("tiles"))
        options = self.options(body.get("settings"))
        try:
            command = command_line(str(target), tiles, options)
        except OptionError as error:
            raise WebError(400, page_message(error)) from None
        _check_sizes(target, name, options)
        try:
            # Limits the tiles cannot keep, refused as the preview refuses them (where a
            # preview warmed those tiles), not recorded as a run that fails.
            self.previewer.check_limits(target, tiles, options)
        except MosaicistError as error:
            raise _refusal(error, target, name) from None
        run = self.history.create(target_name=name, tiles=tiles,
                                  settings=options.to_json(), command=command,
                                  target=str(info["id"]))
        try:
            self.jobs.start_make(run, target, tiles, options)
        except BaseException:
            self.history.update(run.id, status="failed", error="The run could not start.")
            raise
        return {"id": run.id}

    def start_render(self, run_id: str, body: dict[str, Any]) -> dict[str, str]:
        """``POST /api/runs/{id}/render``: the run's placements drawn at another tile size.

        Parameters
        ----------
        run_id : str
            The finished run to draw again.
        body : dict
            The request's JSON: ``tile_px``.

        Returns
        -------
        dict
            ``{"id": ...}``, the new run's id.

        Raises
        ------
        WebError
            404 for no such run; 409 when it is not finished; 400 for a bad
            ``tile_px``; 403 when its photos lie outside the folders this
            studio may read now.
        """
        with self._sources_lock:
            source = self.run(run_id)
            placements = source.output_path("placements_json")
            if source.status != "done" or placements is None:
                raise WebError(409, "only a finished mosaic can be drawn again at another size")
            if not placements.is_file():
                # Checked before the new run is recorded: it would be one that failed.
                raise WebError(409, "this mosaic's saved placements are no longer on disk; "
                                    "it cannot be drawn again")
            try:
                # Its photos are read again: from where this studio may read now. A run made
                # while a --root was given names a folder that may no longer be one.
                self.tiles_spec(source.tiles)
            except WebError as error:
                if error.status_code == 403:
                    raise
            tile_px = body.get("tile_px")
            try:
                options = MosaicOptions.from_json(source.settings).replace(tile_px=tile_px)
            except OptionError as error:
                raise WebError(400, page_message(error)) from None
            run = self.history.create(
                target_name=source.target_name, tiles=source.tiles, settings=options.to_json(),
                command=render_command_line(str(placements), options.tile_px),
                target=source.target)
            try:
                self.jobs.start_render(run, source, options.tile_px)
            except BaseException:
                self.history.update(run.id, status="failed", error="The run could not start.")
                raise
        return {"id": run.id}

    def cancel_run(self, run_id: str) -> dict[str, Any]:
        """``POST /api/runs/{id}/cancel``.

        Parameters
        ----------
        run_id : str
            The run's id.

        Returns
        -------
        dict
            The run as :meth:`run_json` shows it.

        Raises
        ------
        WebError
            404 for no such run; 409 when it is neither waiting nor running.
        """
        run = self.run(run_id)
        if run.status not in ACTIVE_STATUSES:
            raise WebError(409, f"this mosaic is {run.status}; only a waiting or running one "
                                "can be cancelled")
        self.jobs.cancel(run_id)
        return self.run_json(self.run(run_id))

    def delete_run(self, run_id: str) -> dict[str, Any]:
        """``DELETE /api/runs/{id}``: the run and its files.

        Parameters
        ----------
        run_id : str
            The run's id.

        Returns
        -------
        dict
            ``{"deleted": run_id}``.

        Raises
        ------
        WebError
            404 for no such run; 409 while it, or a drawing from it, runs.
        """
        with self._sources_lock:
            run = self.run(run_id)
            if run.status in ACTIVE_STATUSES:
                raise WebError(409, "this mosaic is still being made; cancel it before "
                                    "deleting it")
            if self.jobs.drawing_from(run_id):
                raise WebError(409, "this mosaic is being drawn again at another size; wait "
                                    "for that or cancel it before deleting this one")
            with self._viewers_lock:
                self._viewers.pop(run_id, None)
            try:
                deleted = self.history.delete(run_id)
            except HistoryError:
                raise
            except MosaicistError as error:
                raise WebError(409, str(error)) from None
        if not deleted:
            raise WebError(404, "there is no such mosaic in the history")
        self.clean_targets(quiet=True)
        return {"deleted": run_id}

    def run_file(self, run_id: str, kind: str) -> Response:
        """``GET /api/runs/{id}/files/{kind}``.

        Parameters
        ----------
        run_id : str
            The run's id.
        kind : str
            Which of its outputs (``png``, ``thumbnail``, ``report``...: see
            ``OUTPUT_KINDS`` of the history).

        Returns
        -------
        starlette.responses.Response
            The file, opened inside the run's folder only.

        Raises
        ------
        WebError
            404 for no such run or file.
        """
        run = self.run(run_id)
        name = run.outputs.get(kind)
        folder = resolved_folder(run.folder)
        opened = None if name is None or folder is None else open_inside(folder, [name])
        if opened is None:
            raise WebError(404, f"this mosaic has no {kind.replace('_', ' ')} file")
        path, handle = opened
        download = None if kind in _INLINE_KINDS else _download_name(run.target_name, path.name)
        return FileAnswer(handle, content_type(path.name), download=download)

    def viewer(self, run_id: str) -> ViewerSite:
        """The viewer of a finished run, resolved once (as ``mosaicist view`` would).

        Its original photos are served only from inside the roots or the
        cache (:meth:`may_read`): a run made while another ``--root`` was
        given shows its mosaic, not the photos of a folder no longer one.

        Parameters
        ----------
        run_id : str
            The run's id.

        Returns
        -------
        ViewerSite

        Raises
        ------
        WebError
            404 for no such run, or one with no zoomable view.
        """
        with self._viewers_lock:
            site = self._viewers.get(run_id)
            if site is not None:
                self._viewers.move_to_end(run_id)
                return site
        run = self.run(run_id)
        page = run.output_path("viewer")
        if run.status != "done" or page is None:
            raise WebError(404, "this mosaic has no zoomable view")
        try:
            site = ViewerSite(page, embeddable=True)
        except MosaicistError:
            raise WebError(404, "this mosaic's zoomable view is missing or damaged") from None
        if site.source_root is not None and not self.may_read(site.source_root):
            # Its original photos lie where this studio may no longer read (a --root not
            # given this time): the mosaic is served, the photos are not.
            site.source_root = None
        with self._viewers_lock:
            self._viewers[run_id] = site
            while len(self._viewers) > VIEWERS_KEPT:
                self._viewers.popitem(last=False)
        return site

    def subscribe(self, job_id: str) -> Subscription | None:
        """The events of a job, or None when the jobs of this server never had it.

        Parameters
        ----------
        job_id : str
            The job's id.

        Returns
        -------
        Subscription or None
        """
        try:
            return self.jobs.subscribe(job_id)
        except KeyError:
            return None


def _present(path: Path | None) -> bool:
    """Whether ``path`` names a regular file that is there."""
    try:
        return path is not None and path.is_file()
    except OSError:
        return False


def _utf8(text: str) -> bool:
    """Whether ``text`` (a file name decoded with surrogate escapes) is UTF-8 text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _marked_unusable(form: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The form, its NVIDIA graphics card choice marked where it cannot be used here.

    Only where the built-in GPU search is all that runs on ``cuda`` (a plugin's may
    not need PyTorch).
    """
    on_cuda = [matcher for matcher in MATCHERS.values() if "cuda" in matcher.devices]
    if not on_cuda or not all(isinstance(matcher, GpuMatcher) for matcher in on_cuda):
        return form
    reason = cuda_unusable()
    if reason is None:
        return form
    for item in form:
        if item["name"] == "device" and "cuda" in (item.get("choice_labels") or {}):
            labels = dict(item["choice_labels"])
            labels["cuda"] += " (not available on this computer)"
            item["choice_labels"] = labels
            item["help"] = f"{item['help']} {reason[:1].upper()}{reason[1:]}."
    return form


def _refusal(error: MosaicistError, target: Path, name: str) -> WebError:
    """A 400 saying what ``error`` says: settings by their labels, the stored target by name.

    The stored target's path (a digest in the studio's cache) means nothing
    to the person, who knows the picture by the name it was uploaded as.
    """
    return WebError(400, page_message(error).replace(str(target), name))


def _check_sizes(target: Path, name: str, options: MosaicOptions) -> None:
    """Refuse, as ``make`` would at once, sizes that do not fit the target (400).

    What only the target and the settings decide (the target over the
    pixel limit, more cells than it holds, a cell count or print size
    against the cell or tile size, cells that do not halve ``adaptive``
    times) is refused before a run is recorded, not by a job that fails.
    """
    from ..adaptive import check_adaptive
    from ..imaging import target_size
    from ..sizing import fit_options, options_plan

    try:
        size = target_size(target, options.max_target_pixels)
        fitted = fit_options(options, options_plan(options, size, str(target)))
        if fitted.adaptive:
            check_adaptive(fitted)
    except MosaicistError as error:
        raise _refusal(error, target, name) from None


def _run_target_name(sent: object, stored: str) -> str:
    """The name a run shows its target by: the one its page uploaded it as, else ``stored``.

    Two uploads of the same file are one stored picture, whose description
    takes the latest upload's name: a run made from the first tab was named
    (and its downloads too) after a later upload in another. The page sends
    the name its upload was given back, cleaned here as an upload's is.
    """
    if sent is None:
        return stored
    if not isinstance(sent, str):
        raise WebError(400, "target_name must be text, the name the picture was uploaded as")
    return display_name(sent)


def _download_name(target_name: str, file_name: str) -> str:
    """``<target stem>-<file name>``: ``astronaut-mosaic.png``; ``mosaic.png`` for ``mosaic.jpg``.

    Examples
    --------
    >>> _download_name("m.jpg", "mosaic.png"), _download_name("mosaic.jpg", "mosaic.png")
    ('m-mosaic.png', 'mosaic.png')
    """
    stem = os.path.splitext(target_name)[0]
    stem = re.sub(r"[^\w.-]+", "-", stem, flags=re.UNICODE).strip("-.")[:60] or "mosaic"
    # Left as it is only when it starts with the whole stem ("mosaic" for mosaic.png, not
    # "m" or "place", which would name a download of m.jpg just "mosaic.png").
    named = file_name == stem or file_name.startswith((f"{stem}.", f"{stem}-"))
    return file_name if named else f"{stem}-{file_name}"




def _event_text(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, allow_nan=False, default=str)}\n\n"


async def _events(studio: Studio, subscription: Subscription | None,
                  fallback: Callable[[], tuple[str, dict[str, Any]] | None]
                  ) -> AsyncIterator[str]:
    """A job's events as server-sent events, until its final one or the server stops.

    Without a subscription (a job this server never ran), ``fallback`` gives
    the one final event to send, or None (then the stream just ends).
    """
    if subscription is None:
        final = await run_in_threadpool(fallback)
        if final is not None:
            yield _event_text(*final)
        return
    try:
        yield "retry: 2000\n\n"
        quiet = 0.0
        while not studio.stopping.is_set():
            event: JobEvent | None = await subscription.aget(EVENT_POLL_SECONDS)
            if event is None:
                if subscription.ended:
                    return
                quiet += EVENT_POLL_SECONDS
                if quiet >= KEEP_ALIVE_SECONDS:
                    quiet = 0.0
                    yield ": keep-alive\n\n"
                continue
            quiet = 0.0
            yield _event_text(event.kind, event.to_json())
            if event.final:
                return
    finally:
        subscription.close()


#: Headers of an event stream's answer.
_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _stream(generator: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(generator, media_type="text/event-stream", headers=_STREAM_HEADERS)


def _stream_head() -> Response:
    """An event stream's answer to ``HEAD``: its headers, and an end (a stream never ends)."""
    return Response(media_type="text/event-stream", headers=_STREAM_HEADERS)


def _run_final_event(studio: Studio, run_id: str) -> tuple[str, dict[str, Any]] | None:
    """The final event of a run this server has no job for (finished, or cut off)."""
    run = studio.history.get(run_id)
    if run is None:
        return None
    kind = run.status if run.status not in ACTIVE_STATUSES else "interrupted"
    return kind, {"kind": kind, "stage": "", "done": 0, "total": None,
                  "message": run.error or "", "data": {"run": run.id, "state": kind}}


def _routes(studio: Studio) -> list[Route]:
    """Every route of the studio (see the module docstring)."""

    def threaded(method: Callable[..., Any]) -> Callable[..., Any]:
        return lambda *args: run_in_threadpool(method, *args)

    async def page(request: Request) -> Response:
        text = (studio.assets / "studio.html").read_text("utf-8")
        return Response(text.replace(TOKEN_PLACEHOLDER, studio.token), 200,
                        {"Content-Security-Policy": PAGE_POLICY},
                        media_type="text/html; charset=utf-8")

    def asset(root: Path, parts: list[str]) -> Response:
        if parts == ["studio.html"] and root == studio.assets:
            parts = []  # the page is served at / only, with its token
        opened = open_inside(root, parts) if parts else None
        if opened is None:
            raise WebError(404, "nothing is served at this address")
        path, handle = opened
        return FileAnswer(handle, content_type(path.name))

    async def assets(request: Request) -> Response:
        route = request.path_params["route"]
        if route.startswith("openseadragon/"):
            return asset(studio.viewer_assets, route.split("/")[1:])
        return asset(studio.assets, route.split("/"))

    async def state(request: Request) -> Response:
        return JSONResponse(await threaded(studio.state)())

    async def example(request: Request) -> Response:
        path = example_path(request.path_params["name"])
        folder = None if path is None else resolved_folder(path.parent)
        opened = None if path is None or folder is None else open_inside(folder, [path.name])
        if opened is None:
            raise WebError(404, "there is no such example")
        return FileAnswer(opened[1], content_type(opened[0].name))

    async def upload(request: Request) -> Response:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise WebError(400, "send the picture as a file in the form field 'file'")
        async with studio.uploads.admitted(request):
            return await _received(request)

    async def _received(request: Request) -> Response:
        try:
            async with request.form(max_files=1, max_fields=8) as form:
                sent = form.get("file")
                if not isinstance(sent, UploadFile):
                    raise WebError(400, "send the picture as a file in the form field 'file'")
                data = await sent.read()
                name = sent.filename or ""
        except ClientDisconnect:
            # The upload was cut off (the page closed, the network dropped): nobody waits
            # for an answer, and nothing failed on this side that its terminal should show.
            raise WebError(400, "the upload was cut off before its end") from None
        except HTTPException as error:
            if isinstance(error, WebError):
                raise
            if form_header_too_long(error):
                # A file name of thousands of characters: the form parser refuses the
                # part's header, which said "send one picture ... and nothing else".
                raise WebError(400, "the picture's file name is too long; rename it and "
                                    "send it again") from None
            # Starlette's own answer to a malformed form (two files, too many fields).
            raise WebError(400, "send one picture as a file in the form field 'file', and "
                                "nothing else") from None
        return JSONResponse(await studio.uploads.decode(studio.accept, data, name), 201)

    async def upload_example(request: Request) -> Response:
        body = await read_json(request, MAX_JSON_BYTES)
        # Decoded as an upload is, in its turn: an example is a large picture too.
        return JSONResponse(await studio.uploads.decode(studio.accept_example, body.get("name")),
                            201)

    async def target(request: Request) -> Response:
        path, _ = await threaded(studio.target)(request.path_params["id"])
        opened = open_inside(studio.targets, [path.name])
        if opened is None:
            raise WebError(404, "that picture is no longer here; choose it again")
        return FileAnswer(opened[1], content_type(path.name))

    async def folders(request: Request) -> Response:
        return JSONResponse(await threaded(studio.folders)(request.query_params.get("path")))

    async def index(request: Request) -> Response:
        body = await read_json(request, MAX_JSON_BYTES)
        return JSONResponse(await threaded(studio.start_index)(body), 202)

    async def job(request: Request) -> Response:
        return JSONResponse(await threaded(studio.job_status)(request.path_params["job"]))

    async def job_events(request: Request) -> Response:
        job_id = request.path_params["job"]
        subscription = await threaded(studio.subscribe)(job_id)
        if subscription is None:
            raise WebError(404, "there is no such job (it may have ended before the studio "
                                "restarted)")
        if request.method == "HEAD":
            subscription.close()
            return _stream_head()
        return _stream(_events(studio, subscription, lambda: None))

    async def cancel_job(request: Request) -> Response:
        return JSONResponse(await threaded(studio.cancel_job)(request.path_params["job"]))

    async def preview(request: Request) -> Response:
        body = await read_json(request, MAX_JSON_BYTES)
        number = studio.preview_number()
        response: Response = await threaded(studio.preview)(number, body)
        return response

    async def command(request: Request) -> Response:
        body = await read_json(request, MAX_JSON_BYTES)
        return JSONResponse(await threaded(studio.command)(body))

    async def runs(request: Request) -> Response:
        if request.method == "POST":
            body = await read_json(request, MAX_JSON_BYTES)
            return JSONResponse(await threaded(studio.start_run)(body), 202)

        def listing() -> list[dict[str, Any]]:
            return [studio.run_json(run) for run in studio.history.runs()]

        return JSONResponse(await run_in_threadpool(listing))

    async def run(request: Request) -> Response:
        run_id = request.path_params["id"]
        if request.method == "DELETE":
            return JSONResponse(await threaded(studio.delete_run)(run_id))

        def one() -> dict[str, Any]:
            return studio.run_json(studio.run(run_id))

        return JSONResponse(await run_in_threadpool(one))

    async def run_events(request: Request) -> Response:
        run_id = request.path_params["id"]
        await threaded(studio.run)(run_id)
        if request.method == "HEAD":
            return _stream_head()
        subscription = await threaded(studio.subscribe)(run_id)
        return _stream(_events(studio, subscription, lambda: _run_final_event(studio, run_id)))

    async def cancel_run(request: Request) -> Response:
        return JSONResponse(await threaded(studio.cancel_run)(request.path_params["id"]))

    async def render(request: Request) -> Response:
        body = await read_json(request, MAX_JSON_BYTES)
        return JSONResponse(await threaded(studio.start_render)(request.path_params["id"], body),
                            202)

    async def run_file(request: Request) -> Response:
        params = request.path_params
        response: Response = await threaded(studio.run_file)(params["id"], params["kind"])
        return response

    async def view(request: Request) -> Response:
        run_id = request.path_params["id"]
        route = request.path_params.get("route")
        # Found first: no redirect to a viewer that is not there (nor, for an id holding
        # '?' or '#', to another address).
        site = await threaded(studio.viewer)(run_id)
        if route is None:
            return RedirectResponse(f"/runs/{urllib.parse.quote(run_id, safe='')}/view/", 302)
        return site.answer(route, f"/runs/{run_id}/view/")

    read = ["GET"]
    return [
        Route("/", page, methods=read),
        Route("/assets/{route:path}", assets, methods=read),
        Route("/api/state", state, methods=read),
        Route("/api/examples/{name}", example, methods=read),
        Route("/api/targets", upload, methods=["POST"]),
        Route("/api/targets/example", upload_example, methods=["POST"]),
        Route("/api/targets/{id}", target, methods=read),
        Route("/api/folders", folders, methods=read),
        Route("/api/index", index, methods=["POST"]),
        Route("/api/jobs/{job}", job, methods=read),
        Route("/api/jobs/{job}/events", job_events, methods=read),
        Route("/api/jobs/{job}/cancel", cancel_job, methods=["POST"]),
        Route("/api/preview", preview, methods=["POST"]),
        Route("/api/command", command, methods=["POST"]),
        Route("/api/runs", runs, methods=["GET", "POST"]),
        Route("/api/runs/{id}", run, methods=["GET", "DELETE"]),
        Route("/api/runs/{id}/events", run_events, methods=read),
        Route("/api/runs/{id}/cancel", cancel_run, methods=["POST"]),
        Route("/api/runs/{id}/render", render, methods=["POST"]),
        Route("/api/runs/{id}/files/{kind}", run_file, methods=read),
        Route("/runs/{id}/view", view, methods=read),
        Route("/runs/{id}/view/{route:path}", view, methods=read),
    ]


def make_studio_app(studio: Studio, *, host: str, port: int) -> Guard:
    """The studio's ASGI app for a server bound to ``host:port``.

    Parameters
    ----------
    studio : Studio
        Its state; the app's shutdown closes it (every job cancelled).
    host, port : str, int
        The bound address: requests must name it in ``Host``.

    Returns
    -------
    Guard
        The app (see :func:`mosaicist.web.make_app`).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        studio.begin_stop()
        await anyio.to_thread.run_sync(studio.close)

    return make_app(_routes(studio), host=host, port=port, name="studio", token=studio.token,
                    methods=("GET", "HEAD", "POST", "DELETE"), max_body=MAX_BODY,
                    lifespan=lifespan)


def _loopback(host: str) -> bool:
    """Whether ``host`` names this machine only."""
    name = host.strip("[]").lower()
    try:
        return name == "localhost" or ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _browsable(host: str) -> str:
    """A host a browser on this machine can open for a server bound to ``host``."""
    name = host.strip("[]")
    if name in ("0.0.0.0", ""):
        return "127.0.0.1"
    if name == "::":
        return "[::1]"
    return f"[{name}]" if ":" in name else name


def serve_studio(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    open_browser: bool = True,
    roots: Iterable[str | os.PathLike[str]] = (),
    cache_dir: str | os.PathLike[str] | None = None,
    announce: Callable[[str], object] = print,
) -> None:
    """Serve the studio until interrupted (``mosaicist studio``).

    Parameters
    ----------
    host : str
        Address to listen on (loopback by default).
    port : int
        Port; 0 picks a free one.
    open_browser : bool
        Open the studio in the default browser.
    roots : iterable of path-like
        Folders, besides the user's home, whose photos may be used as tiles.
    cache_dir : path-like, optional
        The cache folder (indexes, downloads, the studio's history).
    announce : callable
        Called with one line naming the studio's URL once it is served.

    Raises
    ------
    MosaicistError
        When the address cannot be listened on, a root is not a folder, or
        the history cannot be opened.
    """
    listener = bind(host, port)
    try:
        studio = Studio(cache_dir=cache_dir, roots=roots)
    except BaseException:
        listener.close()
        raise
    bound = listener.getsockname()[1]
    server = WebServer(make_studio_app(studio, host=host, port=bound), listener,
                       on_stop=studio.begin_stop)
    url = f"http://{_browsable(host)}:{bound}/"

    def started() -> None:
        if studio.interrupted:
            print(f"mosaicist: {studio.interrupted} unfinished "
                  f"{'run was' if studio.interrupted == 1 else 'runs were'} marked as cut off "
                  "by the last stop", file=sys.stderr)
        if not _loopback(host):
            print(f"mosaicist: warning: the studio listens on {host}: other machines that "
                  "can reach this address can use it and see the photos it may read",
                  file=sys.stderr)
        announce(f"mosaicist studio: {url} (press Ctrl+C to stop)")
        if open_browser:
            webbrowser.open(url)

    with sigterm_as_interrupt():
        try:
            server.run_until_interrupted(started)
        finally:
            studio.close()

