"""Uploads let in at once, and the few decoded at a time, without tying up worker threads.

The servers answer the routes that read files or a database in worker
threads (anyio's pool, 40 threads). Decoding an upload takes a core and its
picture's pixels, so only a few are decoded at a time; the others used to
wait for their turn inside a worker thread, and a burst of uploads (sixty
guests sending a photo after a speech) took every thread: the display, the
host's page and every route that reads a file stalled until the burst had
been decoded. :class:`UploadQueue` keeps that wait off the threads and
bounds what waiting uploads hold:

- :meth:`UploadQueue.admitted` lets an upload in while fewer than its
  ``queued`` uploads, holding at most ``held_bytes`` in all (as their
  ``Content-Length`` declares), are in the server; past either, the upload is
  refused at once with 503 and ``Retry-After``, its body read and dropped
  (kept nowhere) so that the client gets to read the refusal;
- :meth:`UploadQueue.decode` runs the decoding in one of ``decoders``
  threads of its own (an anyio capacity limiter, not the shared pool): an
  upload waiting for its turn waits on the event loop, holding no thread.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import anyio
from starlette.requests import ClientDisconnect, Request

from ._errors import WebError

#: Seconds a refused upload's body is read (and dropped) before the refusal is sent; a
#: body still coming after that is cut off with the connection.
DRAIN_SECONDS = 60.0

Result = TypeVar("Result")


class UploadQueue:
    """The uploads a server takes in at once, and the ones it decodes at a time.

    Parameters
    ----------
    decoders : int
        Uploads decoded at once (each in a thread of the queue's own).
    queued : int
        Upload requests in the server at once: being received, waiting for
        a decoder and being decoded. More are refused (503).
    held_bytes : int
        The bytes those requests may declare in all; at least ``largest``.
    largest : int
        The bytes counted for a request that declares no ``Content-Length``
        (the server's largest request body).
    busy : str
        The refusal's sentence, for the person sending.
    retry_after : int
        Seconds the refusal asks the client to wait (``Retry-After``).
    """

    def __init__(self, *, decoders: int, queued: int, held_bytes: int, largest: int,
                 busy: str, retry_after: int = 5) -> None:
        self.decoders = max(1, decoders)
        self.queued = max(1, queued)
        self.largest = largest
        self.held_bytes = max(held_bytes, largest)
        self.busy = busy
        self.retry_after = max(1, retry_after)
        self._lock = threading.Lock()
        self._uploads = 0
        self._bytes = 0
        # Made before the server's event loop runs: anyio makes the limiter of the loop's
        # library at its first use there.
        self._decoding = anyio.CapacityLimiter(self.decoders)

    @property
    def held(self) -> tuple[int, int]:
        """The uploads let in now, and the bytes they declared."""
        with self._lock:
            return self._uploads, self._bytes

    @contextlib.asynccontextmanager
    async def admitted(self, request: Request) -> AsyncIterator[None]:
        """Hold room for ``request``'s upload while in the block, or refuse it at once.

        Parameters
        ----------
        request : starlette.requests.Request
            The upload, its body not read yet.

        Raises
        ------
        WebError
            503 with ``Retry-After`` when the queue is full (by count or by
            bytes); the body has been read and dropped by then, or, when it
            kept coming for :data:`DRAIN_SECONDS`, the answer closes the
            connection.
        """
        size = self._declared(request)
        with self._lock:
            room = (self._uploads < self.queued
                    and self._bytes + size <= self.held_bytes)
            if room:
                self._uploads += 1
                self._bytes += size
        if not room:
            headers = {"Retry-After": str(self.retry_after)}
            if not await _drained(request):
                headers["Connection"] = "close"
            raise WebError(503, self.busy, headers)
        try:
            yield
        finally:
            with self._lock:
                self._uploads -= 1
                self._bytes -= size

    async def decode(self, function: Callable[..., Result], *args: Any) -> Result:
        """``function(*args)`` in one of the queue's decoding threads, once one is free.

        Waiting for a free one holds no thread; cancelled while it runs, the
        call still finishes (its result dropped), as for any worker thread.

        Parameters
        ----------
        function : callable
            The decoding (or any blocking) work.
        *args
            Its arguments.

        Returns
        -------
        object
            What ``function`` returns.
        """
        return await anyio.to_thread.run_sync(function, *args, limiter=self._decoding)

    def _declared(self, request: Request) -> int:
        """The bytes ``request`` declares (the guard has checked the number), else ``largest``."""
        length = request.headers.get("content-length", "")
        return int(length) if length.isdigit() else self.largest


async def _drained(request: Request) -> bool:
    """Read and drop ``request``'s body; whether it was read to its end.

    Answering before the body is read and then closing would reset the
    connection, and a phone would show the upload as cut off rather than
    the refusal. Dropped as it arrives, the body holds no memory.
    """
    with anyio.move_on_after(DRAIN_SECONDS):
        try:
            async for _ in request.stream():
                pass
        except ClientDisconnect:
            return False  # nobody is left to read the refusal
        return True
    return False
