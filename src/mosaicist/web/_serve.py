"""Listening and serving: a socket bound first, then uvicorn on it.

The socket is bound before the app is made (:func:`bind`), so that port 0
becomes a free port the app knows (its ``Host`` check names it) and the
address is taken before anything is announced. :class:`WebServer` runs
uvicorn (HTTP/1.1 with h11; no websockets, no proxy headers, no server
banner) on that socket, in the foreground until stopped or interrupted
(:meth:`WebServer.serve`) or in a thread (:meth:`WebServer.start`, for
tests and embedding), and stops cleanly: the socket is closed, the app's
shutdown has run, no thread is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http import h11_impl
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..errors import MosaicistError
from ._guard import _with_security_headers

#: Seconds open answers (event streams) get to finish when the server stops.
GRACEFUL_SECONDS = 3
#: Seconds an idle kept-alive connection stays open (new ones are cheap on this machine).
KEEP_ALIVE_SECONDS = 2
#: Largest request head (request line and headers) read before refusing it. Larger than
#: the guard's limits, so that an oversized head is read whole and refused with a status
#: (closing a connection with unread data would reset it before the answer is read).
MAX_HEAD = 128 * 1024
#: Most connections served at once; more are answered 503.
MAX_CONNECTIONS = 64
#: Most connections one other machine may hold at once; more are closed as they open.
#: Without it one device (a guest's phone running a script) holding MAX_CONNECTIONS idle
#: connections had every other guest, the display and the host answered 503. A browser
#: opens at most 6 to one server; this machine's own clients (the display and admin pages
#: on the host's laptop, a tunnel forwarding every guest) are not counted.
MAX_CONNECTIONS_PER_CLIENT = 16
#: Seconds a connection may send nothing while a request (its head or body) is awaited.
#: Without a limit a connection that never sends its request (a phone gone from the Wi-Fi
#: mid-upload, a browser's unused preconnection) held one of MAX_CONNECTIONS for ever.
REQUEST_IDLE_SECONDS = 30.0
#: Seconds a client refused past :data:`MAX_CONNECTIONS` is asked to wait (``Retry-After``).
BUSY_RETRY_SECONDS = 5
#: The answer to a request that cannot be parsed at all (its path unknown: plain text).
_MALFORMED = b"the request is malformed\n"
_BUSY = json.dumps({"error": "this server is answering too many connections at once; "
                             "try again in a few seconds"}).encode()


async def _busy(scope: Any, receive: Any, send: Any) -> None:
    """The answer past :data:`MAX_CONNECTIONS`: 503, ``Retry-After``, one sentence in JSON.

    uvicorn's own (plain text, without ``Retry-After`` or the security headers
    the guard adds to every other answer) bypassed the app; it is looked up
    as a module global where uvicorn refuses, so it is replaced there.
    """
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(_BUSY)).encode()), (b"connection", b"close"),
               (b"retry-after", str(BUSY_RETRY_SECONDS).encode())]
    await send({"type": "http.response.start", "status": 503,
                "headers": _with_security_headers(headers)})
    await send({"type": "http.response.body", "body": _BUSY, "more_body": False})


h11_impl.service_unavailable = _busy


def bind(host: str, port: int) -> socket.socket:
    """Return a listening TCP socket on ``host:port`` (port 0: a free one).

    Bound here, before the app is made, so that the app knows its port and
    a taken address fails at once, in one line.

    Parameters
    ----------
    host : str
        The address or name to listen on; an IPv6 address with or without
        its brackets.
    port : int
        The port, or 0 for one the system chooses.

    Returns
    -------
    socket.socket
        The listening socket; the caller closes it.

    Raises
    ------
    MosaicistError
        When the address cannot be listened on (taken, not this machine's).
    """
    name = host.strip("[]")
    family = socket.AF_INET6 if ":" in name else socket.AF_INET
    try:
        listener = socket.create_server((name, port), family=family, backlog=128)
    except (OSError, OverflowError) as error:
        reason = str(getattr(error, "strerror", None) or error)
        # create_server names the address again: "... (while attempting to bind on ...)".
        reason = reason.split(" (while attempting", 1)[0]
        raise MosaicistError(f"cannot listen on {host}:{port}: {reason}") from None
    return listener


class _OneLine(logging.Handler):
    """uvicorn's own errors as one line on the current stderr, never a traceback."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage().splitlines()[0]
        except Exception:  # noqa: BLE001 - a log line must never fail a request
            return
        if message in _CLIENTS_FAULTS:
            return
        print(f"mosaicist: server: {message}", file=sys.stderr, flush=True)


#: uvicorn's lines that follow a client's broken request, not the server's fault: every
#: answer of these apps completes (their handlers answer every error), save one that
#: the connection could no longer take (see :func:`._errors.client_broke_protocol`).
_CLIENTS_FAULTS = frozenset({"ASGI callable returned without completing response."})


def _quiet_uvicorn() -> None:
    """Keep uvicorn's start, stop and bad-request lines out of the terminal."""
    logger = logging.getLogger("uvicorn")
    if not any(isinstance(handler, _OneLine) for handler in logger.handlers):
        logger.addHandler(_OneLine())
    logger.setLevel(logging.ERROR)
    logger.propagate = False
    logging.getLogger("uvicorn.access").disabled = True
    # The form parser warns of each malformed upload ("Expected boundary character...")
    # on stderr; the client gets its 400, the terminal need not hear of it.
    for name in ("python_multipart", "multipart"):
        logging.getLogger(name).setLevel(logging.ERROR)


class _Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection silent while its request is awaited.

    uvicorn closes a connection idle between requests (keep-alive) but
    waits for ever for the first request's head, and for a body once its
    head has come. Here a :data:`REQUEST_IDLE_SECONDS` timer runs while a
    request is awaited: started when the connection opens or an answer
    ends, started again by the first byte of a request's head (the whole
    head must come within it: restarted by every byte, a client sending one
    byte of its head every 29 s held the connection for ever), and by every
    byte of a body; stopped while the app answers a request received whole.
    When it runs out while a request is awaited (and reading was not paused
    to wait for the app), the connection is closed. A connection
    from another machine that already holds :data:`MAX_CONNECTIONS_PER_CLIENT`
    is closed as it opens. A request uvicorn cannot parse (two ``Host``
    headers, a malformed ``Content-Length``) is refused in the guard's way:
    one sentence, with the security headers every other answer carries; one
    whose malformed part comes after it was answered is closed silently.
    """

    _idle: asyncio.TimerHandle | None = None
    #: Whether the head of the request awaited has begun (its deadline is running).
    _head_begun = False

    def _arm(self) -> None:
        self._disarm()
        self._idle = self.loop.call_later(REQUEST_IDLE_SECONDS, self._idle_too_long)

    def _disarm(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _idle_too_long(self) -> None:
        self._idle = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused:
            self._arm()  # the app has not taken what came yet: the silence is not theirs
        elif self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self._client_has_too_many():
            transport.close()  # before anything is read: nothing is answered, nothing waits
            return
        self._head_begun = False
        self._arm()

    def _client_has_too_many(self) -> bool:
        """Whether this connection's client, another machine, holds too many connections."""
        if self.client is None or _is_this_machine(self.client[0]):
            return False
        address = self.client[0]
        clients = (getattr(connection, "client", None) for connection in self.connections)
        held = sum(1 for client in clients if client is not None and client[0] == address)
        return held > MAX_CONNECTIONS_PER_CLIENT

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        state = self.conn.their_state
        if state == h11.IDLE:
            if not self._head_begun:  # the head's first bytes: its deadline starts
                self._head_begun = True
                self._arm()
        elif state == h11.SEND_BODY:
            self._head_begun = False
            self._arm()
        else:
            self._head_begun = False
            self._disarm()  # received whole: the app answers, however long that takes

    def on_response_complete(self) -> None:
        self._head_begun = False
        self._arm()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            # The request was answered already, and what came after its head is malformed
            # (a broken chunk of a body nobody read): nothing more can be said here.
            # uvicorn tried to answer again, and h11's refusal went to the terminal as a
            # traceback ("Fatal error: protocol.data_received() call failed").
            self.transport.close()
            return
        # uvicorn's own answer ("Invalid HTTP request received.") bypassed the app, and so
        # the guard: it went without X-Content-Type-Options and the other security headers.
        headers = [(b"content-type", b"text/plain; charset=utf-8"),
                   (b"content-length", str(len(_MALFORMED)).encode()),
                   (b"connection", b"close")]
        for event in (h11.Response(status_code=400, reason=b"Bad Request",
                                   headers=_with_security_headers(headers)),
                      h11.Data(data=_MALFORMED), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()


def _is_this_machine(host: str) -> bool:
    """Whether a client's address is a loopback one (IPv4 mapped into IPv6 included)."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # a Unix socket's peer or an odd name: counted, as any other client
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, telling the app first when it begins to stop."""

    def __init__(self, config: uvicorn.Config, on_stop: Callable[[], None] | None) -> None:
        super().__init__(config)
        self.on_stop = on_stop

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.on_stop is not None:
            self.on_stop()
        await super().shutdown(sockets=sockets)


class WebServer:
    """An ASGI app served by uvicorn on a socket bound beforehand.

    Parameters
    ----------
    app : ASGI app
        What to serve (made by :func:`mosaicist.web.make_app`).
    listener : socket.socket
        A listening socket (:func:`bind`); the server owns it from now on.
    on_stop : callable, optional
        Called once when the server begins to stop, before it waits for
        open answers to finish: event streams end on it.

    Attributes
    ----------
    host, port : str, int
        The bound address.
    url : str
        ``http://HOST:PORT`` (IPv6 bracketed).
    """

    def __init__(self, app: Any, listener: socket.socket, *,
                 on_stop: Callable[[], None] | None = None) -> None:
        _quiet_uvicorn()
        self.socket = listener
        address = listener.getsockname()
        self.host, self.port = str(address[0]), int(address[1])
        config = uvicorn.Config(
            app, http=_Protocol, ws="none", loop="asyncio", lifespan="on", log_config=None,
            access_log=False, server_header=False, proxy_headers=False,
            timeout_keep_alive=KEEP_ALIVE_SECONDS, timeout_graceful_shutdown=GRACEFUL_SECONDS,
            h11_max_incomplete_event_size=MAX_HEAD, limit_concurrency=MAX_CONNECTIONS,
        )
        self._server = _Uvicorn(config, on_stop)
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        """The server's address, ``http://HOST:PORT``."""
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}"

    def serve(self) -> None:
        """Serve in this thread until :meth:`stop` is called from another thread.

        In the main thread, uvicorn's own handlers of SIGINT and SIGTERM stop
        the server gracefully and raise the signal again once it has
        stopped. :meth:`start` and :meth:`wait` are the usual way instead.
        """
        try:
            self._server.run(sockets=[self.socket])
        finally:
            self.socket.close()

    def start(self, timeout: float = 30.0) -> WebServer:
        """Serve in a background thread; return once the server answers.

        Parameters
        ----------
        timeout : float
            Seconds to wait for the server to answer.

        Returns
        -------
        WebServer
            This server, started.

        Raises
        ------
        MosaicistError
            When the server did not start (its startup failed) within ``timeout``.
        RuntimeError
            When it was started already.
        """
        if self._thread is not None:
            raise RuntimeError("the server was started already")

        def run() -> None:
            try:
                self.serve()
            except BaseException as error:  # noqa: BLE001 - reported by start()
                self._failure = error
            finally:
                self._stopped.set()

        self._thread = threading.Thread(target=run, name=f"mosaicist-web-{self.port}",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._stopped.is_set() or time.monotonic() > deadline:
                self.stop()
                reason = f": {self._failure}" if self._failure else ""
                raise MosaicistError(f"the server on {self.url} did not start{reason}")
            time.sleep(0.01)
        return self

    def wait(self) -> None:
        """Block until the server started by :meth:`start` stops (Ctrl+C interrupts it)."""
        # An event, not Thread.join: on Python 3.11 a join interrupted by Ctrl+C can mark
        # the thread as finished while it still runs (the fix of bpo-45274).
        if self._thread is not None:
            _wait_interruptibly(self._stopped)

    def stop(self) -> None:
        """Stop serving (graceful: open answers get a few seconds), close the socket, join."""
        self._server.should_exit = True
        if self._thread is not None and self._thread is not threading.current_thread():
            _wait_interruptibly(self._stopped)
            self._thread.join()
        self.socket.close()

    def run_until_interrupted(self, on_started: Callable[[], None]) -> None:
        """Serve until Ctrl+C (or SIGTERM, in :func:`sigterm_as_interrupt`), then stop.

        ``on_started`` runs once the server answers (its announcements, a
        browser opened on it); an interrupt at any point ends the serving
        quietly, and the server is stopped whatever ends it.

        Parameters
        ----------
        on_started : callable
            Called with no arguments once the server answers.
        """
        try:
            self.start()
            on_started()
            self.wait()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


#: Seconds between looks at a server's stop while the main thread waits for it.
_STOP_POLL_SECONDS = 0.05


def _wait_interruptibly(stopped: threading.Event) -> None:
    """Wait until ``stopped`` is set, safe to interrupt at any point.

    Not ``Event.wait``: a signal handler that raises (Ctrl+C, the servers'
    SIGTERM) at the Python call that takes its condition's lock back left
    the lock released, and the ``with`` around it then raised
    ``RuntimeError: release unlocked lock`` instead of the interrupt (a
    studio stopped by Ctrl+C printed that traceback and exited 1). Reading
    the flag and sleeping hold no lock, so an interrupt anywhere here is a
    clean ``KeyboardInterrupt``.
    """
    while not stopped.is_set():
        time.sleep(_STOP_POLL_SECONDS)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block SIGTERM raises KeyboardInterrupt, as Ctrl+C does (main thread only).

    A server stopped by ``kill`` then takes the same way out as one stopped
    from the keyboard: its jobs cancelled, nothing left running. Either
    signal again while it stops is the same stop
    (:func:`mosaicist._runtime.stop_serving`), not an interrupt of its
    clean-up. Ctrl+C is taken over only where it has its usual action.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    from .._runtime import forget_server_stop, stop_serving, usual_interrupt_handler

    previous_term = signal.signal(signal.SIGTERM, stop_serving)
    if previous_term is not stop_serving:
        forget_server_stop()  # else the command line's, since it started (cli._Command)
    previous_int = signal.getsignal(signal.SIGINT)
    if usual_interrupt_handler(previous_int):
        signal.signal(signal.SIGINT, stop_serving)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        if usual_interrupt_handler(previous_int):
            signal.signal(signal.SIGINT, previous_int)
