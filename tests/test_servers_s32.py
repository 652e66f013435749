"""Hostile clients of the hardened web server (session 32): on 127.0.0.1 only, bounded.

One device must not be able to hold every connection of a server that
other machines reach (the live wall on an event's Wi-Fi): it gets at most
``MAX_CONNECTIONS_PER_CLIENT``, and the others are still answered.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import time
from collections.abc import Iterator

import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from mosaicist.web import WebServer, _serve, bind, make_app


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


@contextlib.contextmanager
def served() -> Iterator[int]:
    """A guarded app answering ``/`` on 127.0.0.1; its port."""
    listener = bind("127.0.0.1", 0)
    port = listener.getsockname()[1]
    app = make_app([Route("/", hello)], host="127.0.0.1", port=port, name="test")
    with WebServer(app, listener):
        yield port


def answered(port: int) -> bool:
    """Whether ``GET /`` on a new connection is answered 200 (False: closed, refused)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        return response.status == 200 and response.read() == b"hello"
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def idle_connections(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that send nothing (each may be closed by the server)."""
    return [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]


def wait_for(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_one_device_cannot_hold_every_connection(monkeypatch):
    # 64 idle connections from one phone had every other guest, the display and the host
    # answered 503 for as long as it kept them (re-opened every 30 s: for ever).
    monkeypatch.setattr(_serve, "MAX_CONNECTIONS_PER_CLIENT", 3, raising=False)
    # The test's client is this machine; counted here as another machine would be.
    monkeypatch.setattr(_serve, "_is_this_machine", lambda host: False, raising=False)
    with served() as port:
        held = idle_connections(port, 3)
        try:
            assert not answered(port)  # a fourth is closed as it opens
            # The held ones are still served, and once one goes, a new one is too.
            held[0].sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                            "Connection: close\r\n\r\n".encode())
            assert held[0].recv(65536).startswith(b"HTTP/1.1 200")
            held.pop(0).close()
            assert wait_for(lambda: answered(port))
        finally:
            for connection in held:
                connection.close()


def test_this_machines_own_clients_are_not_capped(monkeypatch):
    # The display and the host's page on the laptop, or a tunnel forwarding every guest,
    # come from a loopback address: only the server's overall limit applies to them.
    monkeypatch.setattr(_serve, "MAX_CONNECTIONS_PER_CLIENT", 2, raising=False)
    with served() as port:
        held = idle_connections(port, 6)
        try:
            assert answered(port)
        finally:
            for connection in held:
                connection.close()


@pytest.mark.parametrize(("host", "own"), [
    ("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("192.168.1.20", False), ("fe80::1%eth0", False), ("::ffff:10.0.0.2", False),
    ("not-an-address", False),
])
def test_which_clients_are_this_machine(host, own):
    assert _serve._is_this_machine(host) is own


def test_a_request_head_sent_a_byte_at_a_time_has_one_deadline(monkeypatch):
    # Every byte restarted the idle timer, also within a request's head: a client that
    # sent one byte of its head just before each timeout held the connection for ever.
    monkeypatch.setattr(_serve, "REQUEST_IDLE_SECONDS", 0.6)
    head = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 40
    with served() as port, socket.create_connection(("127.0.0.1", port), timeout=10) as held:
        started = time.monotonic()
        closed = False
        for byte in head:
            try:
                held.sendall(bytes([byte]))
            except OSError:  # closed by the server: what is wanted
                closed = True
                break
            time.sleep(0.1)  # well within the timeout between bytes
        held.settimeout(5)
        if not closed:
            try:
                closed = held.recv(1024) == b""
            except OSError:
                closed = True
        assert closed
        assert time.monotonic() - started < 4.0  # the 4 s the head took to send: not waited
        assert answered(port)  # a request sent whole is answered as before


def test_past_the_servers_connections_the_refusal_says_when_to_come_back(monkeypatch):
    # uvicorn's own 503 (past MAX_CONNECTIONS) was plain text without Retry-After nor the
    # security headers every other answer has.
    import json

    monkeypatch.setattr(_serve, "MAX_CONNECTIONS", 2)
    with served() as port:
        held = idle_connections(port, 2)
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/")
            response = connection.getresponse()
            body = response.read()
            connection.close()
        finally:
            for socket_ in held:
                socket_.close()
        assert response.status == 503
        assert response.getheader("Retry-After") == str(_serve.BUSY_RETRY_SECONDS)
        assert response.getheader("X-Content-Type-Options") == "nosniff"
        assert list(json.loads(body)) == ["error"]
        assert wait_for(lambda: answered(port))  # served again once they are gone
