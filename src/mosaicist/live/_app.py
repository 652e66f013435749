"""The live wall's web app: the guests', display and host pages, and their JSON API.

Routes (JSON unless said otherwise; errors are ``{"error": "one sentence"}``):

=========================================  ==============================================
``GET /``                                  the guests' upload page (its token in it)
``GET /display``, ``GET /admin``           the display page, the host's page
``GET /assets/{name}``                     the pages' scripts, styles and icons
``GET /api/info``                          grid, tile shape, limits, paused, moderation,
                                           the guests' link (``--url``, else null)
``POST /api/photos``                       upload photos (multipart, field ``photo``,
                                           repeatable): 201 placed, 202 pending
``GET /api/photos/{id}``                   one photo's status and cell
``GET /api/wall``                          every placed photo's cell, and the version
``GET /api/events``                        changes as server-sent events (503 past
                                           16 open, or 4 from one address)
``GET /api/tiles/{id}.jpg``                a placed photo's tile as shown
``GET /api/target.jpg``                    the target as cut for the wall
``GET /api/wall.jpg?width=N``              the wall now
``GET /api/qr.svg``                        QR code of the guests' link
``GET /api/admin/state``                   counts, flags, pending and overflow lists
``GET /api/admin/photos/{id}.jpg``         a photo (for moderation), at most 512 px
``POST /api/admin/photos/{id}/approve``    put a pending photo on the wall
``POST /api/admin/photos/{id}/reject``     refuse (delete) a pending photo
``DELETE /api/admin/photos/{id}``          remove a photo (its cell frees)
``POST /api/admin/pause``                  ``{"paused": bool}``
``POST /api/admin/moderation``             ``{"on": bool}``
``POST /api/admin/complete``               ``{"source": "received"|"library", "max_uses"}``
``GET /api/admin/export?format=F``         download the wall: ``png``, ``tiff``, ``dzi`` (zip)
``GET /api/admin/sheets.pdf``              print sheets (``paper=a4|letter``, ``tile_cm``)
``GET /api/admin/underlay.pdf``            the underlay grid (same parameters)
=========================================  ==============================================

Server-sent events (``GET /api/events``): ``tile`` ``{"id", "row", "col",
"version"}`` (a photo placed), ``moved`` (the same plus ``from_row``,
``from_col``), ``removed`` ``{"id", "row", "col", "version"}``, ``state``
``{"paused", "moderation", "version"}``, and ``reset`` ``{"version"}``: sent
first on every connection and whenever a reader fell behind, meaning
"fetch ``/api/wall`` again". Rows and columns count from 0 at the top left.

Every request passes the guard of :mod:`mosaicist.web` first (``Host``,
token and origin of state-changing requests, sizes). The host's routes
also need ``Authorization: Bearer <admin token>`` (401 without it, 403
with another); a request that carries the right bearer token needs no page
token, so scripts can use the API with the admin token alone (a browser
never sends a bearer header across sites without a CORS approval, which
this server never gives). A script's state-changing request without any
token is told so and how to send one, one with a wrong bearer token that it
is not the admin token; only a page is told to reload (its token is from an
earlier start). Guests' uploads are limited per client address
(photos per minute, and three requests at a time), and in all: at most
:data:`UPLOADS_QUEUED` upload requests of at most :data:`UPLOAD_BYTES_QUEUED`
together are received, wait for their turn or are decoded at once; more are
refused at once, 503 with ``Retry-After`` (the guests' page sends again by
itself), so that a burst of guests neither fills the memory nor stalls the
display. ``HEAD`` on the host's downloads answers their headers without
writing the file. The same photo sent again from one address within ten
minutes (a phone retrying after a lost answer, also one lost to a crash of
the server) is answered as its first upload.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import hmac
import ipaddress
import json
import math
import os
import re
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .._runtime import worker_count
from ..errors import MosaicistError, alternatives
from ..web import (
    TOKEN_HEADER,
    FileAnswer,
    Guard,
    UploadQueue,
    WebError,
    WebServer,
    bind,
    content_type,
    download_head,
    make_app,
    open_inside,
    package_folder,
    read_json,
    sigterm_as_interrupt,
    url_hosts,
)
from ..web._errors import form_header_too_long
from ..web._guard import NO_TOKEN_REFUSAL_KEY
from ._event import (
    MAX_PHOTO_BYTES,
    UPLOAD_MEMORY_SECONDS,
    Conflict,
    Event,
    NotFound,
    Paused,
    Prepared,
    _read_rgb,
    photo_formats,
)
from ._extras import MissingExtra, missing_notes
from ._outputs import EXPORTS, export_wall
from ._qr import qr_svg
from ._sheets import PAPERS, write_sheets, write_underlay

#: The placeholder of the pages that becomes the pages' token.
TOKEN_PLACEHOLDER = "{{MOSAICIST_TOKEN}}"
#: The pages, by route.
PAGES = {"/": "guest.html", "/display": "display.html", "/admin": "admin.html"}
#: Most photos in one upload request, and the largest request body.
MAX_FILES = 10
MAX_BODY = 100 * 2**20
#: Largest JSON request body.
MAX_JSON_BYTES = 16 * 1024
#: Photos a client may send per minute by default (``--rate``), and at once.
DEFAULT_RATE = 30
BURST = 10
#: Clients whose upload allowance is remembered (the oldest forgotten first).
RATE_CLIENTS = 10_000
#: Upload requests one client may have in flight at once, with a rate limit. The guests'
#: page sends one at a time; without a cap, one device could open every connection with a
#: body of :data:`MAX_BODY` each (gigabytes held in memory and spooled to disk) before its
#: rate allowance was taken, which happens once a body is read.
MAX_UPLOADS_PER_CLIENT = 3
#: Upload requests in the server at once, from every guest: being received, waiting for
#: their turn to be decoded, and decoded. More are refused (503, sent again by the page):
#: they would wait longer than a phone does, and some of the server's 64 connections
#: (``web._serve.MAX_CONNECTIONS``) stay free for the display and the host.
UPLOADS_QUEUED = 48
#: The bytes those requests may declare in all: each may be up to :data:`MAX_BODY`, held in
#: memory from its form until its photos are stored.
UPLOAD_BYTES_QUEUED = 512 * 2**20
#: Seconds a guest is asked to wait before sending again when the queue is full.
BUSY_RETRY_SECONDS = 5
#: Seconds between looks at an upload of the same photo still being received (a retry
#: waiting for its first request, on the event loop: no thread waits).
RETRY_POLL_SECONDS = 0.05
#: Seconds during which the same photo sent again by the same client is its earlier
#: upload (a phone retrying after a lost answer), and how many such uploads are kept.
RETRY_SECONDS = UPLOAD_MEMORY_SECONDS
RETRY_UPLOADS = 10_000
#: Seconds a retry waits for the same photo's first request, still being received.
RETRY_WAIT_SECONDS = 60.0
#: Events a slow reader may fall behind before it is told to reset.
BACKLOG = 1000
#: Event streams open at once, in all and from one client address: each holds one of the
#: server's connections (``web._serve.MAX_CONNECTIONS``), which uploads need too.
MAX_EVENT_STREAMS = 16
MAX_EVENT_STREAMS_PER_CLIENT = 4
#: Seconds between keep-alive comments of an idle event stream, and between checks for a stop.
KEEP_ALIVE_SECONDS = 15.0
EVENT_POLL_SECONDS = 0.5
#: Headers of the event stream's answer.
EVENT_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: Widths of ``wall.jpg``.
WALL_WIDTHS = (16, 4096)
#: Side of the host's view of a photo.
PREVIEW_SIDE = 512
#: The pages' content security policy: everything from this server, nothing inline.
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; "
               "img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; "
               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class Feed:
    """The wall's changes, pushed to every open event stream.

    :meth:`publish` may be called from any thread; each reader has an
    asyncio queue on its own loop. A reader more than :data:`BACKLOG`
    events behind loses them and gets one ``reset`` instead.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._readers: set[_Reader] = set()

    def subscribe(self, client: str = "") -> _Reader | None:
        """A new reader for ``client``, or None when :data:`MAX_EVENT_STREAMS` are open
        (or :data:`MAX_EVENT_STREAMS_PER_CLIENT` from that client)."""
        reader = _Reader(asyncio.get_running_loop(), client)
        with self._lock:
            if len(self._readers) >= MAX_EVENT_STREAMS or sum(
                    other.client == client for other in self._readers
            ) >= MAX_EVENT_STREAMS_PER_CLIENT:
                return None
            self._readers.add(reader)
        return reader

    def unsubscribe(self, reader: _Reader) -> None:
        with self._lock:
            self._readers.discard(reader)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        text = event_text(kind, data)
        version = int(data.get("version", 0))
        with self._lock:
            readers = list(self._readers)
        for reader in readers:
            with contextlib.suppress(RuntimeError):  # its loop has closed
                reader.loop.call_soon_threadsafe(reader.push, text, version)

    @property
    def readers(self) -> int:
        with self._lock:
            return len(self._readers)


class _Reader:
    def __init__(self, loop: asyncio.AbstractEventLoop, client: str = "") -> None:
        self.loop = loop
        self.client = client
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    def push(self, text: str, version: int) -> None:
        if self.queue.qsize() >= BACKLOG:
            while not self.queue.empty():
                self.queue.get_nowait()
            text = event_text("reset", {"version": version})
        self.queue.put_nowait(text)


def event_text(kind: str, data: dict[str, Any]) -> str:
    """One server-sent event."""
    return f"event: {kind}\ndata: {json.dumps(data, allow_nan=False)}\n\n"


class RateLimit:
    """Photos per minute per client: a bucket of :data:`BURST` photos refilled steadily.

    Parameters
    ----------
    per_minute : float
        Photos a client may send per minute; 0 turns the limit off.
    """

    def __init__(self, per_minute: float, burst: int = BURST) -> None:
        self.rate = per_minute / 60.0
        self.burst = max(burst, 1)
        self._lock = threading.Lock()
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = (
            collections.OrderedDict())

    def take(self, client: str, count: int = 1, *, peek: bool = False) -> float:
        """Take ``count`` photos from ``client``'s allowance; return 0, or seconds to wait.

        With ``peek``, only say whether ``count`` would be allowed.
        """
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            level, then = self._buckets.pop(client, (float(self.burst), now))
            level = min(float(self.burst), level + (now - then) * self.rate)
            wait = 0.0
            if count > level:
                wait = (count - level) / self.rate if count <= self.burst else math.inf
            elif not peek:
                level -= count
            self._buckets[client] = (level, now)
            while len(self._buckets) > RATE_CLIENTS:
                self._buckets.popitem(last=False)
            return wait



class Live:
    """The state behind the wall's app: the event, its feed, limits and the fallback library.

    Parameters
    ----------
    event : Event
        The opened event (closed by :meth:`close`).
    rate : float
        Photos per minute per client (0: no limit).
    guest_url : str, optional
        The guests' link as phones reach it (QR code); default: the address
        the display page was opened with.
    fallback : str, optional
        A tile source spec to complete empty cells from.
    cache_dir : path-like, optional
        Where the fallback's index lives.
    """

    def __init__(self, event: Event, *, rate: float = DEFAULT_RATE,
                 guest_url: str | None = None, fallback: str | None = None,
                 cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.event = event
        self.assets = package_folder("mosaicist.live", "assets")
        self.feed = Feed()
        event.listen(self.feed.publish)
        self.rate = RateLimit(rate)
        self.guest_url = guest_url
        self.fallback = fallback
        self.cache_dir = cache_dir
        self.stopping = threading.Event()
        # Each photo being decoded holds its pixels and a core: a few at a time; the
        # others wait on the event loop, not in the threads every other route needs.
        self.uploads = UploadQueue(
            decoders=max(2, worker_count()), queued=UPLOADS_QUEUED,
            held_bytes=UPLOAD_BYTES_QUEUED, largest=MAX_BODY, retry_after=BUSY_RETRY_SECONDS,
            busy="the wall is busy with many photos arriving at once; send this one again "
                 "in a few seconds")
        self._library: Any = None
        self._library_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._target_jpeg: bytes | None = None
        self._wall_jpeg: tuple[tuple[int, int], bytes] | None = None
        self._qr: tuple[str, bytes] | None = None
        self._closed = False
        self._recent: collections.OrderedDict[tuple[str, bytes], tuple[str, float]] = (
            collections.OrderedDict())
        self._receiving: dict[tuple[str, bytes], threading.Event] = {}
        self._recent_lock = threading.Lock()
        self._in_flight: collections.Counter[str] = collections.Counter()
        self._in_flight_lock = threading.Lock()
        # Uploads recorded before a restart: a phone that lost its answer to a crash and
        # sends again must find its photo, not put it on the wall a second time.
        now, clock = time.time(), time.monotonic()
        for client, digest, photo_id, received in event.recent_uploads():
            self._recent[(client, digest)] = (photo_id, clock - max(0.0, now - received))
        while len(self._recent) > RETRY_UPLOADS:
            self._recent.popitem(last=False)

    @contextlib.contextmanager
    def uploading(self, client: str) -> Iterator[None]:
        """Count an upload request of ``client`` in flight while in the block.

        Part of the per-client limit: without one (``rate`` 0, as for a load
        test from one address) any number may be in flight.

        Parameters
        ----------
        client : str
            Who sends (the rate limit's key).

        Raises
        ------
        WebError
            429 when :data:`MAX_UPLOADS_PER_CLIENT` of its requests are in flight.
        """
        with self._in_flight_lock:
            if self.rate.rate > 0 and self._in_flight[client] >= MAX_UPLOADS_PER_CLIENT:
                raise WebError(429, "this device is sending photos already; wait for them "
                                    "to arrive and send again", {"Retry-After": "5"})
            self._in_flight[client] += 1
        try:
            yield
        finally:
            with self._in_flight_lock:
                self._in_flight[client] -= 1
                if not self._in_flight[client]:
                    del self._in_flight[client]

    def in_flight(self, client: str) -> int:
        """Upload requests of ``client`` in flight now.

        Parameters
        ----------
        client : str
            Who sends (the rate limit's key).

        Returns
        -------
        int
        """
        with self._in_flight_lock:
            return self._in_flight[client]

    def begin_stop(self) -> None:
        """Tell the event streams to end: the server is stopping."""
        self.stopping.set()

    def close(self) -> None:
        """Stop the planner and close the event (safe to call twice)."""
        self.begin_stop()
        if not self._closed:
            self._closed = True
            self.event.close()

    # -- guests --------------------------------------------------------------------------

    def accept(self, uploads: list[tuple[bytes, str]], client: str = "") -> list[dict[str, Any]]:
        """Check, store and place uploaded photos; all are refused if one is.

        Returns each photo's answer (:meth:`Event.answer`), after its commit.
        The same bytes sent again by the same ``client`` within
        :data:`RETRY_SECONDS`, while the first upload is still on the wall
        or waiting, are that upload: a phone that lost the answer and sends
        again must not put the photo on the wall twice. Decoded in the
        calling thread, whatever else is being decoded; the server uses
        :meth:`accept_queued`.

        Parameters
        ----------
        uploads : list of (bytes, str)
            Each photo's bytes and the file name the phone gave.
        client : str
            Who sent them (the rate limit's key), so that a retry is known
            as one.

        Returns
        -------
        list of dict
            One answer per upload, in order.

        Raises
        ------
        MosaicistError
            When a photo is refused (not a picture, too small...); a
            :class:`Conflict` when the same photo from the same client is
            being received already.
        """
        keys = _upload_keys(uploads, client)
        with self._claimed(keys) as mine:
            answers, fresh = self._answered(keys, mine)
            self._store(uploads, keys, answers, fresh)
            return _in_order(keys, answers)

    async def accept_queued(self, uploads: list[tuple[bytes, str]],
                            client: str = "") -> list[dict[str, Any]]:
        """:meth:`accept`, for the server: the photos decoded when :attr:`uploads` has room.

        Waiting for a turn to decode, or for the same photo's first request
        to end, holds no worker thread: a burst of guests must not stall the
        display and the host's page, whose routes need those threads.

        Parameters
        ----------
        uploads : list of (bytes, str)
            Each photo's bytes and the file name the phone gave.
        client : str
            Who sent them.

        Returns
        -------
        list of dict
            One answer per upload, in order.

        Raises
        ------
        MosaicistError
            As :meth:`accept`.
        """
        # Hashed in a thread: up to 100 MB would hold the event loop for a while.
        keys = await anyio.to_thread.run_sync(_upload_keys, uploads, client)
        async with self._claimed_waiting(keys) as mine:
            answers, fresh = await anyio.to_thread.run_sync(self._answered, keys, mine)
            if fresh:
                await self.uploads.decode(self._store, uploads, keys, answers, fresh)
            return _in_order(keys, answers)

    def _answered(self, keys: list[tuple[str, bytes]], mine: set[tuple[str, bytes]]
                  ) -> tuple[list[dict[str, Any] | None], list[int]]:
        """The answers of the uploads received before (None for the others), and the
        indices of those to store: claimed here, first of their bytes in the request.

        Raises
        ------
        Conflict
            When one is neither received before nor claimed here (its first
            request did not end in time).
        """
        answers: list[dict[str, Any] | None] = []
        for key in keys:
            earlier = self._earlier(key)
            answers.append(None if earlier is None else self.event.answer(earlier))
        if any(answer is None and keys[index] not in mine
               for index, answer in enumerate(answers)):
            raise Conflict("this photo is being received from this device already; "
                           "wait a moment and look at the wall")
        first = {key: keys.index(key) for key in keys}
        fresh = [index for index, answer in enumerate(answers)
                 if answer is None and first[keys[index]] == index]
        return answers, fresh

    def _store(self, uploads: list[tuple[bytes, str]], keys: list[tuple[str, bytes]],
               answers: list[dict[str, Any] | None], fresh: list[int]) -> None:
        """Decode, store and record the ``fresh`` uploads (all or none), their answers put
        in ``answers``."""
        prepared: list[Prepared] = []
        try:
            for index in fresh:
                data, name = uploads[index]
                prepared.append(self.event.prepare(data, name))
        except BaseException:
            for item in prepared:
                self.event.discard(item)
            raise
        for position, (index, item) in enumerate(zip(fresh, prepared, strict=True)):
            try:
                answers[index] = answer = self.event.receive(item, keys[index])
            except BaseException:
                for rest in prepared[position + 1:]:
                    self.event.discard(rest)
                raise
            self._remember(keys[index], answer["id"])

    def _claim(self, key: tuple[str, bytes], mine: set[tuple[str, bytes]]
               ) -> threading.Event | None:
        """Claim ``key`` into ``mine``: None when claimed (here, now or before), else the
        event its holder sets once it is done."""
        if key in mine:  # the same photo twice in one request
            return None
        with self._recent_lock:
            busy = self._receiving.get(key)
            if busy is None:
                self._receiving[key] = threading.Event()
                mine.add(key)
            return busy

    def _release(self, mine: set[tuple[str, bytes]]) -> None:
        with self._recent_lock:
            for key in mine:
                self._receiving.pop(key).set()

    @contextlib.contextmanager
    def _claimed(self, keys: list[tuple[str, bytes]]) -> Iterator[set[tuple[str, bytes]]]:
        """Claim the uploads ``keys`` while in the block: yields those claimed here.

        A retry that arrives while the first request is still being received
        waits for it (up to :data:`RETRY_WAIT_SECONDS`) and then finds it as an earlier
        upload; past that it is refused as a conflict.
        """
        deadline = time.monotonic() + RETRY_WAIT_SECONDS
        mine: set[tuple[str, bytes]] = set()
        try:
            for key in keys:
                while (busy := self._claim(key, mine)) is not None:
                    if not busy.wait(max(0.0, deadline - time.monotonic())):
                        break
            yield mine
        finally:
            self._release(mine)

    @contextlib.asynccontextmanager
    async def _claimed_waiting(self, keys: list[tuple[str, bytes]]
                               ) -> AsyncIterator[set[tuple[str, bytes]]]:
        """:meth:`_claimed` on the event loop: a retry waits for its first request there."""
        deadline = time.monotonic() + RETRY_WAIT_SECONDS
        mine: set[tuple[str, bytes]] = set()
        try:
            for key in keys:
                while (busy := self._claim(key, mine)) is not None:
                    # Looked at now and then: the first request ends in a thread or on
                    # this loop, and a short sleep here holds neither.
                    while not busy.is_set() and time.monotonic() < deadline:
                        await anyio.sleep(RETRY_POLL_SECONDS)
                    if not busy.is_set():
                        break
            yield mine
        finally:
            self._release(mine)

    def _earlier(self, key: tuple[str, bytes]) -> Any:
        """The photo an upload ``key`` (client, digest) became lately, while it is still up
        or waiting; None otherwise."""
        with self._recent_lock:
            found = self._recent.get(key)
        if found is None or time.monotonic() - found[1] > RETRY_SECONDS:
            return None
        with contextlib.suppress(NotFound):
            photo = self.event.photo(found[0])
            if photo.status in ("placed", "pending", "overflow"):
                return photo
        return None

    def _remember(self, key: tuple[str, bytes], photo_id: str) -> None:
        with self._recent_lock:
            self._recent[key] = (photo_id, time.monotonic())
            self._recent.move_to_end(key)
            while len(self._recent) > RETRY_UPLOADS:
                self._recent.popitem(last=False)

    def info(self) -> dict[str, Any]:
        """``GET /api/info``."""
        event = self.event
        tile_w, tile_h = event.settings.tile_size
        return {"grid": {"cols": event.settings.cols, "rows": event.settings.rows},
                "tile": {"width": tile_w, "height": tile_h}, "paused": event.paused,
                "moderation": event.moderation, "final": event.final,
                "max_photo_bytes": MAX_PHOTO_BYTES, "max_files": MAX_FILES,
                "formats": list(photo_formats()), "version": event.version,
                # The display shows this link beside its QR code (which has it): without
                # it, the page showed the address it was opened by (127.0.0.1 on the
                # laptop), a link no phone reaches. None: the page's own address is right.
                "guest_url": self.guest_url}

    def guest_link(self, host: str) -> str:
        """The guests' link: ``--url``, else this server under the name the request used.

        Parameters
        ----------
        host : str
            The request's ``Host`` value (already checked by the guard).

        Returns
        -------
        str
        """
        return self.guest_url or f"http://{host}/"

    def qr(self, host: str) -> bytes:
        """The QR code of the guests' link, as SVG (kept while the link stays the same).

        Parameters
        ----------
        host : str
            The request's ``Host`` value (see :meth:`guest_link`).

        Returns
        -------
        bytes
        """
        url = self.guest_link(host)
        with self._cache_lock:
            if self._qr is not None and self._qr[0] == url:
                return self._qr[1]
        svg = qr_svg(url)
        with self._cache_lock:
            self._qr = (url, svg)
        return svg

    def target_jpeg(self) -> bytes:
        """The target as cut for the wall, as JPEG (:meth:`Event.target_jpeg`, made once)."""
        with self._cache_lock:
            cached = self._target_jpeg
        if cached is None:
            cached = self.event.target_jpeg()
            with self._cache_lock:
                self._target_jpeg = cached
        return cached

    def wall_jpeg(self, width: int) -> bytes:
        """The wall now, as JPEG (:meth:`Event.wall_jpeg`, kept until the wall changes).

        Parameters
        ----------
        width : int
            The most pixels wide.

        Returns
        -------
        bytes
        """
        key = (self.event.version, width)
        with self._cache_lock:
            if self._wall_jpeg is not None and self._wall_jpeg[0] == key:
                return self._wall_jpeg[1]
        picture = self.event.wall_jpeg(width)
        with self._cache_lock:
            self._wall_jpeg = (key, picture)
        return picture

    # -- the host ------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """``GET /api/admin/state``."""
        event = self.event
        return {"counts": event.counts(), "paused": event.paused,
                "moderation": event.moderation, "final": event.final,
                "version": event.version, "pending": event.listing("pending"),
                "overflow": event.listing("overflow"), "fallback": self.fallback is not None,
                "readers": self.feed.readers, "guest_url": self.guest_url}

    def preview(self, photo_id: str) -> bytes:
        """A photo as stored, at most :data:`PREVIEW_SIDE` px, as JPEG (for moderation).

        Parameters
        ----------
        photo_id : str
            The photo's id.

        Returns
        -------
        bytes

        Raises
        ------
        NotFound
            When there is no such photo, or its picture is no longer kept.
        """
        event = self.event
        photo = event.photo(photo_id)
        path = event.picture_path(photo)
        try:
            picture = _read_rgb(path)
        except OSError:
            raise NotFound("this photo's picture is no longer kept") from None
        picture.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
        from io import BytesIO

        buffer = BytesIO()
        picture.save(buffer, "JPEG", quality=85)
        return buffer.getvalue()

    def library(self) -> Any:
        """The fallback library, indexed on first use."""
        if self.fallback is None:
            raise Conflict("no fallback library was given; start the wall with --fallback "
                           "SOURCE, or complete from the photos received")
        with self._library_lock:
            if self._library is None:
                from ..library import TileLibrary

                options = self.event.settings.options
                self._library = TileLibrary.open(self.fallback, options.match_px or 16,
                                                 cache_dir=self.cache_dir, aspect=options.aspect,
                                                 crop=options.crop,
                                                 colour_profiles=options.colour_profiles)
            return self._library

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /api/admin/complete``: fill the empty cells.

        Parameters
        ----------
        body : dict
            The request's JSON: ``source`` (``"received"``, the default: the
            photos received; or ``"library"``: the ``--fallback`` source)
            and ``max_uses`` (1 to 1000: how often one picture may fill cells).

        Returns
        -------
        dict
            ``filled``: the cells filled; the event's ``counts`` and ``version``.

        Raises
        ------
        WebError
            400 for a bad ``source`` or ``max_uses``.
        Conflict
            For the library, when the wall was started without ``--fallback``.
        """
        source = body.get("source", "received")
        max_uses = body.get("max_uses")
        if max_uses is not None and (not isinstance(max_uses, int) or isinstance(max_uses, bool)
                                     or not 1 <= max_uses <= 1000):
            raise WebError(400, "max_uses must be a whole number from 1 to 1000")
        if source == "received":
            filled = self.event.complete_from_received(max_uses or 2)
        elif source == "library":
            filled = self.event.complete_from_library(self.library(), max_uses or 1)
        else:
            raise WebError(400, "source must be \"received\" or \"library\"")
        return {"filled": filled, "counts": self.event.counts(), "version": self.event.version}


def _upload_keys(uploads: list[tuple[bytes, str]], client: str) -> list[tuple[str, bytes]]:
    """Each upload's key: its client and the digest of its bytes."""
    return [(client, hashlib.sha256(data).digest()) for data, _ in uploads]


def _in_order(keys: list[tuple[str, bytes]], answers: list[dict[str, Any] | None]
              ) -> list[dict[str, Any]]:
    """One answer per upload: the same photo twice in one request is one photo."""
    first = {key: keys.index(key) for key in keys}
    joined = [answers[first[key]] if answer is None else answer
              for key, answer in zip(keys, answers, strict=True)]
    return [answer for answer in joined if answer is not None]


def _check_admin(request: Request, token: str) -> None:
    given = request.headers.get("authorization")
    if given is None:
        raise WebError(401, "this needs the host's admin token (Authorization: Bearer TOKEN)",
                       {"WWW-Authenticate": "Bearer"})
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        value.strip().encode("utf-8", "replace"), token.encode("utf-8")
    ):
        raise WebError(403, "the admin token is not this wall's")




def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if not isinstance(value, bool):
        raise WebError(400, f"send {{\"{name}\": true}} or {{\"{name}\": false}}")
    return value


async def _call(function: Callable[..., Any], *args: Any) -> Any:
    """Run ``function`` in a worker thread, its expected failures as HTTP refusals."""
    with _refusals():
        return await run_in_threadpool(function, *args)


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """The wall's expected failures in the block, as HTTP refusals."""
    try:
        yield
    except NotFound as error:
        raise WebError(404, str(error)) from None
    except Conflict as error:
        raise WebError(409, str(error)) from None
    except Paused as error:
        raise WebError(503, str(error), {"Retry-After": "30"}) from None
    except MissingExtra as error:
        # This server lacks a package: not the request's fault, and asking again won't help.
        raise WebError(501, str(error)) from None


def _routes(live: Live) -> list[Route]:
    """Every route of the wall (see the module docstring)."""
    event = live.event

    def page(name: str) -> Callable[[Request], Any]:
        async def answer(request: Request) -> Response:
            opened = open_inside(live.assets, [name])
            if opened is None:
                raise WebError(404, "this page is not installed; reinstall mosaicist")
            with opened[1] as handle:
                text = handle.read().decode("utf-8")
            return Response(text.replace(TOKEN_PLACEHOLDER, event.page_token), 200,
                            {"Content-Security-Policy": PAGE_POLICY},
                            media_type="text/html; charset=utf-8")

        return answer

    async def assets(request: Request) -> Response:
        parts = request.path_params["route"].split("/")
        # The pages are served at their routes only, with their token.
        opened = None if parts[-1].endswith(".html") else open_inside(live.assets, parts)
        if opened is None:
            raise WebError(404, "nothing is served at this address")
        return FileAnswer(opened[1], content_type(opened[0].name))

    async def info(request: Request) -> Response:
        return JSONResponse(live.info())

    async def upload(request: Request) -> Response:
        if event.paused:
            raise WebError(503, "uploads are paused by the host; try again in a moment",
                           {"Retry-After": "30"})
        client = request.client.host if request.client else "unknown"
        wait = live.rate.take(client, 1, peek=True)
        if wait:
            raise _too_many(wait)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise WebError(400, "send the photos as files in the form field 'photo'")
        with live.uploading(client):
            async with live.uploads.admitted(request):
                return await _received(request, client)

    async def _received(request: Request, client: str) -> Response:
        uploads: list[tuple[bytes, str]] = []
        try:
            async with request.form(max_files=MAX_FILES, max_fields=MAX_FILES + 8,
                                    max_part_size=64 * 1024) as form:
                for sent in form.getlist("photo"):
                    if isinstance(sent, UploadFile):
                        data = await sent.read(MAX_PHOTO_BYTES + 1)
                        uploads.append((data, sent.filename or ""))
        except HTTPException as error:
            if isinstance(error, WebError):
                raise
            if form_header_too_long(error):
                # A file name of thousands of characters: "not a form of at most 10
                # photos" sent the guest looking for a fault that was not there.
                raise WebError(400, "a photo's file name is too long; rename it and send "
                                    "it again") from None
            raise WebError(400, f"the upload is not a form of at most {MAX_FILES} photos in "
                                "the field 'photo'") from None
        if not uploads:
            raise WebError(400, "send the photos as files in the form field 'photo'")
        wait = live.rate.take(client, len(uploads))
        if wait:
            raise _too_many(wait)
        with _refusals():
            answers = await live.accept_queued(uploads, client)
        status = 201 if any(answer["status"] == "placed" for answer in answers) else 202
        if len(answers) == 1:
            return JSONResponse(_guest_answer(answers[0]), status)
        return JSONResponse({"photos": [_guest_answer(answer) for answer in answers]}, status)

    async def photo(request: Request) -> Response:
        found = await _call(event.photo, request.path_params["id"])
        return JSONResponse(event.answer(found))

    async def wall(request: Request) -> Response:
        return JSONResponse(await _call(event.wall))

    async def events(request: Request) -> Response:
        if request.method == "HEAD":
            # The headers alone: a stream that never ends would never end this answer
            # either, and would hold a connection and a reader.
            return Response(media_type="text/event-stream", headers=EVENT_HEADERS)
        # Streams never end on their own: without a cap, a page opened in many tabs
        # (or a script) would hold every connection, and uploads would get 503.
        reader = live.feed.subscribe(request.client.host if request.client else "unknown")
        if reader is None:
            raise WebError(503, "too many displays are open; close one and reload this page",
                           {"Retry-After": "10"})
        version = event.version

        async def stream() -> AsyncIterator[str]:
            try:
                yield "retry: 2000\n\n"
                yield event_text("reset", {"version": version})
                quiet = 0.0
                while not live.stopping.is_set():
                    try:
                        text = await asyncio.wait_for(reader.queue.get(), EVENT_POLL_SECONDS)
                    except TimeoutError:
                        quiet += EVENT_POLL_SECONDS
                        if quiet >= KEEP_ALIVE_SECONDS:
                            quiet = 0.0
                            yield ": keep-alive\n\n"
                        continue
                    quiet = 0.0
                    yield text
            finally:
                live.feed.unsubscribe(reader)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers=EVENT_HEADERS)

    def placed_tile(photo_id: str) -> tuple[Path, BinaryIO] | None:
        """The tile file of a placed photo, opened; None when it is not on the wall."""
        found = event.photo(photo_id)
        # The event's lock was held as long as a completion from the library took: waited
        # for on the event loop, it froze every answer of the server meanwhile (the
        # display's stream, uploads, the host's page). Held briefly now, it is still never
        # waited for on the event loop: here it holds a worker thread only.
        with event.lock:
            if found.status == "placed" and found.cell is not None:
                return open_inside(event.tiles_folder, [event.tile_path(found).name])
        return None

    async def tile(request: Request) -> Response:
        name = request.path_params["name"]
        if not name.endswith(".jpg"):
            raise WebError(404, "there is no such tile")
        opened = await _call(placed_tile, name[:-4])
        if opened is None:
            raise WebError(404, "this photo is not on the wall")
        return FileAnswer(opened[1], "image/jpeg")

    async def target(request: Request) -> Response:
        return Response(await _call(live.target_jpeg), media_type="image/jpeg")

    async def wall_picture(request: Request) -> Response:
        width = _number(request.query_params.get("width"), "width", 1024, *WALL_WIDTHS)
        return Response(await _call(live.wall_jpeg, int(width)), media_type="image/jpeg")

    async def qr(request: Request) -> Response:
        host = request.headers.get("host", "")
        return Response(await _call(live.qr, host), media_type="image/svg+xml")

    # -- the host --------------------------------------------------------------------------

    def admin(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def checked(request: Request) -> Response:
            _check_admin(request, event.admin_token)
            response: Response = await handler(request)
            return response

        return checked

    async def state(request: Request) -> Response:
        return JSONResponse(await _call(live.state))

    async def preview(request: Request) -> Response:
        name = request.path_params["name"]
        if not name.endswith(".jpg"):
            raise WebError(404, "there is no such photo")
        return Response(await _call(live.preview, name[:-4]), media_type="image/jpeg")

    async def decide(request: Request) -> Response:
        photo_id, action = request.path_params["id"], request.path_params["action"]
        if action == "approve":
            return JSONResponse(await _call(event.approve, photo_id))
        if action == "reject":
            return JSONResponse(await _call(event.reject, photo_id))
        raise WebError(404, "nothing is served at this address")

    async def remove(request: Request) -> Response:
        return JSONResponse(await _call(event.remove, request.path_params["id"]))

    async def pause(request: Request) -> Response:
        paused = _flag(await read_json(request, MAX_JSON_BYTES), "paused")
        await _call(event.set_flag, "paused", paused)
        return JSONResponse(await _call(live.state))

    async def moderation(request: Request) -> Response:
        on = _flag(await read_json(request, MAX_JSON_BYTES), "on")
        await _call(event.set_flag, "moderation", on)
        return JSONResponse(await _call(live.state))

    async def complete(request: Request) -> Response:
        return JSONResponse(await _call(live.complete, await read_json(request, MAX_JSON_BYTES)))

    stem = Path(event.settings.target_name).stem or "wall"

    async def export(request: Request) -> Response:
        kind = request.query_params.get("format", "png").lower()
        if kind not in EXPORTS:
            raise WebError(400, f"format must be {alternatives(EXPORTS)}")
        if request.method == "HEAD":
            # Starlette answers HEAD on a GET route by running it: the whole wall would be
            # written, for an answer without a body.
            name = EXPORTS[kind]
            return download_head(content_type(name), f"{stem}-{name}")
        path = await _call(export_wall, event, kind)
        return _download(event.exports_folder, path, f"{stem}-{path.name}")

    def printed(writer: Callable[..., int], what: str) -> Callable[[Request], Any]:
        async def answer(request: Request) -> Response:
            paper = request.query_params.get("paper", "a4").lower()
            if paper not in PAPERS:
                raise WebError(400, f"paper must be {' or '.join(PAPERS)}")
            tile_cm = _number(request.query_params.get("tile_cm"), "tile_cm", 5.0, 1.0, 30.0)
            path = event.exports_folder / f"{what}-{paper}-{tile_cm:g}cm.pdf"
            if request.method == "HEAD":
                # Checked as GET checks it (a tile too large for the paper is refused),
                # but not drawn: HEAD reads no body.
                await _call(functools.partial(writer, check_only=True), event, path, paper,
                            tile_cm)
                return download_head(content_type(path.name), f"{stem}-{path.name}")
            await _call(writer, event, path, paper, tile_cm)
            return _download(event.exports_folder, path, f"{stem}-{path.name}")

        return answer

    read = ["GET"]
    return [
        *(Route(route, page(name), methods=read) for route, name in PAGES.items()),
        Route("/assets/{route:path}", assets, methods=read),
        Route("/api/info", info, methods=read),
        Route("/api/photos", upload, methods=["POST"]),
        Route("/api/photos/{id}", photo, methods=read),
        Route("/api/wall", wall, methods=read),
        Route("/api/events", events, methods=read),
        Route("/api/tiles/{name}", tile, methods=read),
        Route("/api/target.jpg", target, methods=read),
        Route("/api/wall.jpg", wall_picture, methods=read),
        Route("/api/qr.svg", qr, methods=read),
        Route("/api/admin/state", admin(state), methods=read),
        Route("/api/admin/photos/{name}", admin(preview), methods=read),
        Route("/api/admin/photos/{id}/{action}", admin(decide), methods=["POST"]),
        Route("/api/admin/photos/{id}", admin(remove), methods=["DELETE"]),
        Route("/api/admin/pause", admin(pause), methods=["POST"]),
        Route("/api/admin/moderation", admin(moderation), methods=["POST"]),
        Route("/api/admin/complete", admin(complete), methods=["POST"]),
        Route("/api/admin/export", admin(export), methods=read),
        Route("/api/admin/sheets.pdf", admin(printed(write_sheets, "sheets")), methods=read),
        Route("/api/admin/underlay.pdf", admin(printed(write_underlay, "underlay")),
              methods=read),
    ]


def _too_many(wait: float) -> WebError:
    seconds = 60 if math.isinf(wait) else max(1, math.ceil(wait))
    return WebError(429, "too many photos from this device at once; wait a little and send "
                         "them again", {"Retry-After": str(seconds)})


#: What a number in a query reads as: digits, a point, an optional sign.
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")


def _number(text: str | None, name: str, default: float, low: float, high: float) -> float:
    if text is None or text == "":
        return default
    # A plain decimal number: float() also takes "1_000", " 12 " and "inf".
    if _PLAIN_NUMBER.fullmatch(text) is None:
        raise WebError(400, f"{name} must be a number")
    value = float(text)
    if not (low <= value <= high):
        raise WebError(400, f"{name} must be between {low:,g} and {high:,g}")
    return value


def _guest_answer(answer: dict[str, Any]) -> dict[str, Any]:
    """The upload's answer: ``{"id", "row", "col"}`` when placed, else the status."""
    if answer["status"] == "placed":
        return {"id": answer["id"], "row": answer["row"], "col": answer["col"]}
    return {key: value for key, value in answer.items() if key not in ("row", "col")}


def _download(folder: Path, path: Path, name: str) -> Response:
    opened = open_inside(folder, [path.name])
    if opened is None:
        raise WebError(500, "the file just written cannot be read back")
    return FileAnswer(opened[1], content_type(path.name), download=name)


class _BearerScripts:
    """Lets a request with the right admin bearer token pass the guard without a page token.

    The guard asks state-changing requests for the pages' token; a script
    that has the admin token has no page. A browser never sends an
    ``Authorization`` header on another site's behalf (it needs a CORS
    approval this server never gives), so that header proves as much as
    the token; the guard still checks ``Host`` and ``Origin``. A bearer
    header with another token on a host's route (``/api/admin/``) passes the
    same way, to be refused by the route as a wrong admin token, and so does
    a request with neither header there, to hear that it needs the admin
    token (the routes refuse anything without it, so no page token is
    needed to keep other sites' pages out). Elsewhere a wrong bearer token
    is refused by the guard, in the words the host's routes use for it.
    """

    def __init__(self, app: Guard, admin_token: str, page_token: str) -> None:
        self.app = app
        self._admin = admin_token.encode()
        self._page = page_token.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = scope.get("headers", [])
            given = [value for key, value in headers if key == b"authorization"]
            has_token = any(key == TOKEN_HEADER.encode() for key, _ in headers)
            hosts = str(scope.get("path", "")).startswith("/api/admin/")
            passes = False
            wrong = False
            if not has_token and len(given) == 1:
                scheme, _, value = given[0].strip().partition(b" ")
                right = hmac.compare_digest(value.strip(), self._admin)
                bearer = scheme.lower() == b"bearer"
                # A bearer header on a host's route: the route itself checks the token
                # (every one is wrapped in ``admin``), so a script with a wrong one hears
                # "the admin token is not this wall's", not "reload the page".
                passes = bearer and (right or hosts)
                wrong = bearer and not passes
            elif not has_token and not given and hosts:
                # No token of either kind on a host's route: the route answers 401
                # "this needs the host's admin token", which is what a script lacks.
                passes = True
            if passes:
                scope = dict(scope, headers=[*headers, (TOKEN_HEADER.encode(), self._page)])
            elif wrong:
                # Refused by the guard (no page token), in the host's routes' words.
                scope = dict(scope, **{NO_TOKEN_REFUSAL_KEY: WRONG_ADMIN_TOKEN})
        await self.app(scope, receive, send)


#: The refusal of a script's state-changing request that carries no token of either kind.
NO_TOKEN = ("this request has no token: photos are sent from the guests' page (which holds "
            "its token), or by a script with the admin token printed at start, as "
            "Authorization: Bearer TOKEN")
#: The refusal of one whose bearer token is not the admin token (as the host's routes say).
WRONG_ADMIN_TOKEN = "the admin token is not this wall's"


def make_live_app(live: Live, *, host: str, port: int) -> Any:
    """The wall's ASGI app for a server bound to ``host:port``.

    Its shutdown stops the planner and closes the event.

    Parameters
    ----------
    live : Live
        The wall to serve.
    host : str
        The address the server is bound to: requests must name it (or one
        of its names) in ``Host``.
    port : int
        The port it is bound to (not 0).

    Returns
    -------
    ASGI app
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        live.begin_stop()
        await anyio.to_thread.run_sync(live.close)

    guard = make_app(_routes(live), host=host, port=port, name="live",
                     token=live.event.page_token, methods=("GET", "HEAD", "POST", "DELETE"),
                     max_body=MAX_BODY, lifespan=lifespan,
                     # Phones open the guests' link (--url): the server must answer to its name.
                     aliases=_guest_hosts(live.guest_url))
    # A script has no page to reload: it is told how scripts send photos.
    guard.no_token = NO_TOKEN
    return _BearerScripts(guard, live.event.admin_token, live.event.page_token)


def _guest_hosts(url: str | None) -> tuple[str, ...]:
    """The ``Host`` values of the guests' link (``--url``); none without one.

    Raises
    ------
    MosaicistError
        When the link is not an ``http://`` or ``https://`` URL with a host name.
    """
    if url is None:
        return ()
    try:
        return url_hosts(url)
    except ValueError:
        raise MosaicistError(f"--url {url!r}: give the guests' link as http://NAME:PORT/, "
                             "the address phones reach this server by") from None


def _lan_address() -> str | None:
    """This machine's address on its local network, as guests' phones would reach it."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        # Connecting a UDP socket sends nothing; it only picks the outgoing interface.
        probe.connect(("192.0.2.1", 9))
        address = probe.getsockname()[0]
        if not ipaddress.ip_address(address).is_loopback:
            return str(address)
    return None


def _shown_host(host: str) -> str:
    name = host.strip("[]")
    if name in ("0.0.0.0", "", "::"):
        return _lan_address() or "127.0.0.1"
    return f"[{name}]" if ":" in name else name


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def serve_live(
    event_folder: str | os.PathLike[str],
    *,
    target: str | os.PathLike[str] | None = None,
    grid: tuple[int, int] | None = None,
    settings: dict[str, Any] | None = None,
    final: bool | None = None,
    moderation: bool | None = None,
    expected: int | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    rate: float = DEFAULT_RATE,
    guest_url: str | None = None,
    fallback: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    announce: Callable[[str], object] = print,
    warn: Callable[[str], object] | None = None,
) -> None:
    """Serve the wall until interrupted (``mosaicist live``).

    Opens (or resumes) the event in ``event_folder`` (see
    :meth:`mosaicist.live.Event.open` for ``target``, ``grid``, ``settings``,
    ``final``, ``moderation`` and ``expected``), serves it on ``host:port``,
    and announces the guests', display and host links (the host's with its
    admin token) through ``announce``. ``rate`` is photos per minute per
    client (0: no limit); ``guest_url`` the link phones reach the server by
    (the QR code); ``fallback`` a tile source to complete empty cells from.
    Each package of the ``live`` extra that is missing is named through
    ``warn`` (default: a line on stderr) with what will not work and the
    command that installs it.

    Parameters
    ----------
    event_folder : str or path-like
        The event's folder (made when missing).
    target, grid, settings, final, moderation, expected
        As for :meth:`mosaicist.live.Event.open`.
    host : str
        The address to listen on (``0.0.0.0``: every network, for phones).
    port : int
        The port (0: a free one).
    rate : float
        Photos per minute per client (0: no limit).
    guest_url : str, optional
        The link phones reach the server by, in the QR code (default: this
        server under the name each page was loaded by).
    fallback : str, optional
        A tile source spec to complete empty cells from.
    cache_dir : str or path-like, optional
        Cache folder for the fallback's index.
    announce : callable
        Called with each line of the links to show.
    warn : callable, optional
        Called with each warning line (default: a line on stderr).

    Raises
    ------
    MosaicistError
        When the address cannot be listened on, ``guest_url`` is not an
        ``http://`` or ``https://`` link, or the event cannot be opened (see
        :meth:`mosaicist.live.Event.open`).
    """
    _guest_hosts(guest_url)  # a malformed link is named before anything starts
    listener = bind(host, port)
    try:
        event = Event.open(event_folder, target=target, grid=grid, settings=settings,
                           final=final, expected=expected, moderation=moderation)
    except BaseException:
        listener.close()
        raise
    bound = listener.getsockname()[1]
    base = f"http://{_shown_host(host)}:{bound}"
    if guest_url is None and host.strip("[]") in ("0.0.0.0", "", "::"):
        guest_url = f"{base}/"
    try:
        live = Live(event, rate=rate, guest_url=guest_url, fallback=fallback,
                    cache_dir=cache_dir)
    except BaseException:
        event.close()
        listener.close()
        raise
    server = WebServer(make_live_app(live, host=host, port=bound), listener,
                       on_stop=live.begin_stop)

    def started() -> None:
        event.start()
        # Said at the start, not when a guest's HEIC photo is refused at the party.
        for note in missing_notes():
            (warn or _to_stderr)(note)
        counts = event.counts()
        announce(f"mosaicist live: event {event.folder} ({event.settings.cols}x"
                 f"{event.settings.rows} cells, {counts['placed']} placed, "
                 f"{counts['pending'] + counts['overflow']} waiting"
                 f"{', final' if event.final else ''})")
        announce(f"mosaicist live: guests: {guest_url or base + '/'}")
        announce(f"mosaicist live: display: {base}/display")
        announce(f"mosaicist live: admin: {base}/admin#token={event.admin_token}")
        announce(f"mosaicist live: admin token: {event.admin_token} (press Ctrl+C to stop)")

    with sigterm_as_interrupt():
        try:
            server.run_until_interrupted(started)
        finally:
            live.close()


