"""Serving files from a folder without ever serving anything outside it.

A file is named by its path relative to a root folder, one name per
component. :func:`open_inside` checks every name (no empty, ``.``, ``..``,
hidden, separator or control-character names; names listed from the disk,
a library's photos, may hold any character a file name can), resolves the
path with every symlink followed (``realpath`` strict: it must exist),
requires the result to lie inside the resolved root and to be a regular
file, and then opens that resolved path one component at a time from the
root with ``O_NOFOLLOW``: a symlink swapped in after the check, anywhere
along the path, makes the open fail instead of leading elsewhere. Links that stay
inside the root are served; links that lead out of it are not.

:class:`FileAnswer` streams an opened file (``HEAD``: headers only);
:func:`download_head` answers ``HEAD`` on a file made on request.
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import re
import stat
import urllib.parse
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import BinaryIO

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..errors import MosaicistError

#: Bytes read and sent at a time.
CHUNK = 256 * 1024
#: Longest file name served.
MAX_NAME = 255
CONTENT_TYPES = {".dzi": "application/xml", ".html": "text/html; charset=utf-8",
                 ".jpeg": "image/jpeg", ".jpg": "image/jpeg", ".png": "image/png",
                 ".webp": "image/webp", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".json": "application/json",
                 ".svg": "image/svg+xml", ".csv": "text/csv; charset=utf-8",
                 ".zip": "application/zip", ".tif": "image/tiff", ".tiff": "image/tiff",
                 ".txt": "text/plain; charset=utf-8", ".md": "text/plain; charset=utf-8"}
#: What a name from an address may not hold: a separator, a control character.
_NAME_REFUSED = re.compile(r"[/\\\x00-\x1f\x7f]")
#: What a name listed from the disk may not hold: what no file name holds, and
#: this system's separators (a backslash is one on Windows only).
_DISK_NAME_REFUSED = re.compile("[/\0" + re.escape(os.sep + (os.altsep or "")) + "]")
_FOLLOW = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def plain_name(name: str, *, hidden: bool = False, disk_name: bool = False) -> bool:
    """Whether ``name`` is one ordinary file or folder name.

    Not empty, not ``.`` or ``..``, no ``/``, ``\\`` or control character, at
    most :data:`MAX_NAME` characters, and (unless ``hidden``) not starting
    with a dot.

    Parameters
    ----------
    name : str
        One name, as taken from a request's path.
    hidden : bool
        Accept a name starting with a dot.
    disk_name : bool
        The name was listed from the disk (a library's photo, named in a
        signed viewer manifest), not taken from an address: a backslash or a
        control character is then part of it, as a POSIX file name may hold
        them. Still no ``/``, NUL, or separator of this system.

    Returns
    -------
    bool
    """
    refused = _DISK_NAME_REFUSED if disk_name else _NAME_REFUSED
    return (
        0 < len(name) <= MAX_NAME and name not in (".", "..")
        and (hidden or not name.startswith("."))
        and refused.search(name) is None
    )


def resolved_folder(path: str | os.PathLike[str]) -> Path | None:
    """``path`` with every symlink resolved, when it is an existing folder; else None.

    Parameters
    ----------
    path : str or path-like
        The folder to serve from, as given.

    Returns
    -------
    pathlib.Path or None
    """
    try:
        real = Path(os.path.realpath(path, strict=True))
    except (OSError, ValueError):
        return None
    return real if real.is_dir() else None


def locate_inside(root: Path, parts: Iterable[str], *, hidden: bool = False,
                  disk_names: bool = False) -> Path | None:
    """The regular file ``root/parts...`` resolves to, when it lies inside ``root``.

    Parameters
    ----------
    root : pathlib.Path
        A folder, already resolved (:func:`resolved_folder`).
    parts : iterable of str
        The names from ``root`` to the file; each must be :func:`plain_name`.
    hidden : bool
        Accept names starting with a dot.
    disk_names : bool
        The names were listed from the disk, not taken from an address: they
        may hold a backslash or a control character (see :func:`plain_name`).

    Returns
    -------
    pathlib.Path or None
        The resolved file; None when a name is refused, nothing is there, it
        is not a regular file, or it resolves outside ``root``.
    """
    names = list(parts)
    if not names or not all(plain_name(name, hidden=hidden, disk_name=disk_names)
                            for name in names):
        return None
    try:
        real = Path(os.path.realpath(root.joinpath(*names), strict=True))
        mode = os.stat(real).st_mode
    except (OSError, ValueError):
        return None
    return real if real.is_relative_to(root) and stat.S_ISREG(mode) else None


def open_resolved(root: Path, real: Path) -> BinaryIO | None:
    """Open ``real`` (resolved, inside the resolved ``root``) without following any link.

    Each component below ``root`` is opened relative to its parent with
    ``O_NOFOLLOW``; the last one must be a regular file. None when any of
    that fails (a component was replaced by a link, the file vanished).

    Parameters
    ----------
    root : pathlib.Path
        A folder, already resolved (:func:`resolved_folder`).
    real : pathlib.Path
        The resolved file below ``root`` (:func:`locate_inside`).

    Returns
    -------
    binary file or None
        The file open for reading; the caller closes it.
    """
    try:
        names = real.relative_to(root).parts
    except ValueError:
        return None
    if not names:
        return None
    descriptors: list[int] = []
    try:
        folder = os.open(root, _FOLLOW | os.O_DIRECTORY)
        descriptors.append(folder)
        for name in names[:-1]:
            folder = os.open(name, _FOLLOW | os.O_DIRECTORY, dir_fd=folder)
            descriptors.append(folder)
        # O_NONBLOCK: a FIFO put in place does not hang the open (no effect on files).
        descriptor = os.open(names[-1], _FOLLOW | os.O_NONBLOCK, dir_fd=folder)
    except OSError:
        return None
    finally:
        for opened in descriptors:
            os.close(opened)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            os.close(descriptor)
            return None
        os.set_blocking(descriptor, True)
    except OSError:
        os.close(descriptor)
        return None
    return os.fdopen(descriptor, "rb")


def open_inside(root: Path, parts: Iterable[str], *, hidden: bool = False,
                disk_names: bool = False) -> tuple[Path, BinaryIO] | None:
    """:func:`locate_inside`, then :func:`open_resolved`: the file and its open handle.

    Parameters
    ----------
    root : pathlib.Path
        A folder, already resolved (:func:`resolved_folder`).
    parts : iterable of str
        The names from ``root`` to the file; each must be :func:`plain_name`.
    hidden : bool
        Accept names starting with a dot.
    disk_names : bool
        The names were listed from the disk (the originals a signed viewer
        manifest names), not taken from an address: they may hold a
        backslash or a control character (see :func:`plain_name`).

    Returns
    -------
    tuple of (pathlib.Path, binary file) or None
        The resolved file and its open handle (the caller closes it); None
        when either step refuses it.
    """
    real = locate_inside(root, parts, hidden=hidden, disk_names=disk_names)
    if real is None:
        return None
    handle = open_resolved(root, real)
    return None if handle is None else (real, handle)


def content_type(name: str) -> str:
    """The media type of a file name, by its suffix.

    Parameters
    ----------
    name : str
        A file name or path; only its suffix counts, in any case.

    Returns
    -------
    str
        The ``Content-Type`` value (``application/octet-stream`` when unknown).
    """
    suffix = os.path.splitext(name)[1].lower()
    return CONTENT_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or (
        "application/octet-stream")


class FileAnswer(Response):
    """Streams an already opened file, closing it when done.

    Parameters
    ----------
    handle : binary file
        Opened by :func:`open_inside` (or :func:`open_resolved`).
    media_type : str
        Its ``Content-Type``.
    download : str, optional
        Send it as an attachment with this file name (``Content-Disposition``).
    headers : mapping, optional
        More headers (a content security policy for pages).
    """

    def __init__(self, handle: BinaryIO, media_type: str, *, download: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.handle = handle
        self.size = os.fstat(handle.fileno()).st_size
        extra = dict(headers or {})
        extra["content-length"] = str(self.size)
        if download is not None:
            extra["content-disposition"] = _disposition(download)
        super().__init__(None, 200, extra, media_type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with contextlib.closing(self.handle):
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            if scope["method"] == "HEAD":
                await send({"type": "http.response.body", "body": b""})
                return
            left = self.size
            while True:
                chunk = await anyio.to_thread.run_sync(self.handle.read, min(CHUNK, left))
                left -= len(chunk)
                done = not chunk or left <= 0
                await send({"type": "http.response.body", "body": chunk, "more_body": not done})
                if done:
                    break


def download_head(media_type: str, download: str) -> Response:
    """The answer to ``HEAD`` on a download that ``GET`` makes first: its headers alone.

    The file's type and name, without its length: ``GET`` writes the file
    (an export, a PDF) before sending it, work that a ``HEAD`` request, which
    reads no body, must not set off.

    Parameters
    ----------
    media_type : str
        The file's ``Content-Type``.
    download : str
        The file name it is sent as (``Content-Disposition``).

    Returns
    -------
    starlette.responses.Response
    """
    answer = Response(None, 200, {"content-disposition": _disposition(download)}, media_type)
    del answer.headers["content-length"]  # not 0: the length of a file not written
    return answer


def _disposition(name: str) -> str:
    """``attachment`` with the name as ASCII and as RFC 5987 UTF-8."""
    # A name from a file name that is not UTF-8 holds surrogate escapes, which UTF-8
    # cannot encode: each becomes a replacement character.
    name = "".join("\ufffd" if 0xD800 <= ord(char) <= 0xDFFF else char for char in name)
    ascii_name = "".join(char if 32 <= ord(char) < 127 and char not in '"\\;' else "_"
                         for char in name)
    quoted = urllib.parse.quote(name, safe="")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quoted}"


def package_folder(package: str, name: str) -> Path:
    """The resolved folder ``name`` installed with ``package`` (its pages and scripts).

    Parameters
    ----------
    package : str
        The dotted name of the package, e.g. ``mosaicist.studio``.
    name : str
        The folder's name inside it, e.g. ``assets``.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    MosaicistError
        When the folder is not installed.
    """
    folder = resolved_folder(str(resources.files(package).joinpath(name)))
    if folder is None:
        raise MosaicistError(f"the installed package has no {package}/{name} folder; "
                             "reinstall mosaicist")
    return folder
