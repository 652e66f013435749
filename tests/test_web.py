"""The web foundation: Host check, token and origin, files inside a root, error answers."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import socket
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from mosaicist.errors import MosaicistError
from mosaicist.web import (
    FileAnswer,
    HostCheck,
    WebError,
    WebServer,
    bind,
    content_type,
    decode_target,
    locate_inside,
    make_app,
    open_inside,
    open_resolved,
    plain_name,
    resolved_folder,
    url_hosts,
)

TOKEN = "s3cret-token"
MAX_BODY = 4096


# --- pieces ---------------------------------------------------------------------------------


def test_host_check_names():
    loopback = HostCheck("127.0.0.1", 8000)
    for host in ("127.0.0.1:8000", "localhost:8000", "LOCALHOST:8000", "[::1]:8000"):
        assert loopback.allows(host), host
    for host in ("127.0.0.1:8001", "127.0.0.1", "evil.example:8000", "127.0.0.1.nip.io:8000",
                 "", ":8000", "[::1:8000", "localhost:8000:8000", "localhost:80000",
                 "10.0.0.1:8000", "localhost :8000"):
        assert not loopback.allows(host), host
    assert HostCheck("127.0.0.1", 80).allows("localhost")  # the default port
    six = HostCheck("::1", 9000)
    assert six.allows("[::1]:9000") and six.allows("127.0.0.1:9000")
    assert not six.allows("::1:9000")
    assert six.url_host == "[::1]"
    lan = HostCheck("192.168.1.5", 9000)
    assert lan.allows("192.168.1.5:9000")
    assert not lan.allows("localhost:9000") and not lan.allows("192.168.1.6:9000")
    everywhere = HostCheck("0.0.0.0", 9000)
    assert everywhere.allows("10.1.2.3:9000") and everywhere.allows("localhost:9000")
    assert not everywhere.allows("rebind.example:9000")


def test_host_check_origins():
    check = HostCheck("127.0.0.1", 8000)
    assert check.same_origin("http://127.0.0.1:8000", "127.0.0.1:8000")
    assert check.same_origin("HTTP://LocalHost:8000", "localhost:8000")
    # Same server under another name is another origin for the browser.
    assert not check.same_origin("http://localhost:8000", "127.0.0.1:8000")
    for origin in ("null", "https://127.0.0.1:8000", "http://127.0.0.1:8001",
                   "http://evil.example", "http://127.0.0.1:8000/x", ""):
        assert not check.same_origin(origin, "127.0.0.1:8000"), origin
    assert not check.same_origin("http://evil.example:8000", "evil.example:8000")
    assert HostCheck("127.0.0.1", 80).same_origin("http://127.0.0.1", "127.0.0.1:80")


def test_decode_target():
    assert decode_target(b"/a%20b/c") == "/a b/c"
    assert decode_target(b"/%C3%A9t%C3%A9") == "/\u00e9t\u00e9"
    assert decode_target(b"/%252e%252e/") == "/%2e%2e/"  # decoded once, never twice
    assert decode_target(b"/" + b"a" * 3000) == 414
    for raw in (b"*", b"", b"http://evil.example/", b"//evil.example/x", b"/%zz", b"/a%",
                b"/%ff", b"/%00", b"/%0d%0aX", b"/%7f"):
        assert decode_target(raw) == 400, raw


def test_plain_name():
    for name in ("a.png", "my photo.jpg", "\u00e9t\u00e9", "a..", "a" * 255):
        assert plain_name(name), name
    for name in ("", ".", "..", ".hidden", "a/b", "a\\b", "a\x00", "a\nb", "\x7f",
                 "a" * 256):
        assert not plain_name(name), name
    assert plain_name(".hidden", hidden=True) and plain_name("..a", hidden=True)
    assert not plain_name("..", hidden=True) and not plain_name("..a")


@pytest.fixture()
def tree(tmp_path):
    """A root with files, links inside and out, a FIFO, and a secret beside it."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha")
    (root / "sub" / "b.txt").write_text("beta")
    (root / ".hidden").write_text("hidden")
    (root / "n\u00e4me \u00e9.txt").write_text("unicode")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not for the browser")
    (tmp_path / "secret.txt").write_text("not for the browser")
    (root / "inside-link.txt").symlink_to(root / "sub" / "b.txt")
    (root / "out-link.txt").symlink_to(outside / "secret.txt")
    (root / "relative-out.txt").symlink_to(Path("..") / "secret.txt")
    (root / "out-folder").symlink_to(outside, target_is_directory=True)
    (root / "dangling.txt").symlink_to(tmp_path / "nothing")
    os.mkfifo(root / "fifo")
    return resolved_folder(root), outside


def test_locate_and_open_inside(tree):
    root, outside = tree
    assert locate_inside(root, ["a.txt"]) == root / "a.txt"
    assert locate_inside(root, ["sub", "b.txt"]) == root / "sub" / "b.txt"
    assert locate_inside(root, ["inside-link.txt"]) == root / "sub" / "b.txt"
    for parts in (["out-link.txt"], ["relative-out.txt"], ["out-folder", "secret.txt"],
                  ["..", "secret.txt"], ["sub", "..", "..", "secret.txt"], ["sub"], ["fifo"],
                  [".hidden"], ["dangling.txt"], ["missing"], [], ["a.txt", ""],
                  ["sub/b.txt"], ["a.txt\x00"]):
        assert locate_inside(root, parts) is None, parts
    assert locate_inside(root, [".hidden"], hidden=True) == root / ".hidden"
    path, handle = open_inside(root, ["sub", "b.txt"])
    with handle:
        assert handle.read() == b"beta"
    assert open_inside(root, ["fifo"]) is None  # never blocks on a FIFO


def test_open_resolved_refuses_a_link_swapped_in_after_the_check(tree, tmp_path):
    root, outside = tree
    real = locate_inside(root, ["sub", "b.txt"])
    assert real is not None
    # Between the check and the open, the folder becomes a link to another with that name.
    (outside / "b.txt").write_text("swapped")
    (root / "sub").rename(tmp_path / "old-sub")
    (root / "sub").symlink_to(outside, target_is_directory=True)
    assert open_resolved(root, real) is None
    # And the file itself becoming a link.
    (root / "a2.txt").write_text("x")
    real = locate_inside(root, ["a2.txt"])
    (root / "a2.txt").unlink()
    (root / "a2.txt").symlink_to(outside / "secret.txt")
    assert open_resolved(root, real) is None
    assert open_resolved(root, tmp_path / "secret.txt") is None  # not under the root


def test_content_types():
    assert content_type("x.PNG") == "image/png"
    assert content_type("m.dzi") == "application/xml"
    assert content_type("studio.js").startswith("text/javascript")
    assert content_type("noextension") == "application/octet-stream"


# --- a served app -----------------------------------------------------------------------------


def _app_routes(root: Path) -> list[Route]:
    async def ok(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def echo(request: Request) -> Response:
        return JSONResponse({"length": len(await request.body())})

    async def boom(request: Request) -> Response:
        raise RuntimeError("secret detail\nsecond line")

    async def refused(request: Request) -> Response:
        raise MosaicistError("the picture is too small")

    async def full(request: Request) -> Response:
        raise OSError(28, "No space left on device")

    async def teapot(request: Request) -> Response:
        raise WebError(418, "no coffee here")

    async def page(request: Request) -> Response:
        return PlainTextResponse("page")

    async def files(request: Request) -> Response:
        route = request.path_params["route"]
        opened = open_inside(root, route.split("/"))
        if opened is None:
            raise WebError(404, "nothing is served at this address")
        path, handle = opened
        download = "r\u00e9sum\u00e9 \"1\".txt" if "download" in request.query_params else None
        return FileAnswer(handle, content_type(path.name), download=download)

    return [
        Route("/api/ok", ok, methods=["GET"]), Route("/api/echo", echo, methods=["POST"]),
        Route("/api/boom", boom, methods=["GET"]), Route("/boom", boom, methods=["GET"]),
        Route("/api/refused", refused, methods=["GET"]),
        Route("/api/full", full, methods=["GET"]),
        Route("/api/teapot", teapot, methods=["GET"]),
        Route("/page", page, methods=["GET"]),
        Route("/files/{route:path}", files, methods=["GET"]),
    ]


@contextlib.contextmanager
def served(root: Path, *, token: str | None = TOKEN, host: str = "127.0.0.1", on_stop=None):
    """A guarded app on a real uvicorn server in a thread; yield (server, base URL)."""
    listener = bind(host, 0)
    port = listener.getsockname()[1]
    app = make_app(_app_routes(root), host=host, port=port, name="test", token=token,
                   methods=("GET", "HEAD", "POST", "DELETE"), max_body=MAX_BODY)
    server = WebServer(app, listener, on_stop=on_stop)
    with server:
        yield server, server.url


def fetch(url: str, path: str, headers: dict[str, str] | None = None, method: str = "GET",
          body: bytes | None = None) -> tuple[int, bytes, http.client.HTTPMessage]:
    """Send ``path`` verbatim (no client-side normalisation); return status, body, headers."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read(), response.headers
    finally:
        connection.close()


def raw(url: str, request: bytes) -> bytes:
    """Send raw bytes; return the whole answer (the server closes the connection)."""
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("site")
    root = folder / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha")
    (root / "sub" / "b.txt").write_text("beta")
    (root / "inside-link.txt").symlink_to(root / "a.txt")
    (folder / "secret.txt").write_text("not for the browser")
    (root / "out-link.txt").symlink_to(folder / "secret.txt")
    (root / "out-folder").symlink_to(folder, target_is_directory=True)
    with served(resolved_folder(root)) as (server, url):
        yield url


SECURITY = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY", "Cross-Origin-Resource-Policy": "same-origin"}


def check_security_headers(headers: http.client.HTTPMessage) -> None:
    for name, value in SECURITY.items():
        assert headers[name] == value, name
    policy = headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "http" not in policy


def test_served_files_and_traversal(site):
    status, body, headers = fetch(site, "/files/a.txt")
    assert (status, body) == (200, b"alpha")
    assert headers["Content-Length"] == "5" and headers["Content-Type"].startswith("text/plain")
    check_security_headers(headers)
    assert fetch(site, "/files/sub/b.txt")[1] == b"beta"
    assert fetch(site, "/files/inside-link.txt")[1] == b"alpha"
    # A path through a link out of the root that comes back inside it is inside.
    assert fetch(site, "/files/out-folder/root/a.txt")[1] == b"alpha"
    status, body, headers = fetch(site, "/files/a.txt", method="HEAD")
    assert (status, body, headers["Content-Length"]) == (200, b"", "5")
    status, body, headers = fetch(site, "/files/a.txt?download=1")
    assert headers["Content-Disposition"].startswith("attachment; ")
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9%20%221%22.txt" in headers["Content-Disposition"]
    assert 'filename="r_sum_ _1_.txt"' in headers["Content-Disposition"]
    refused = [
        "/files/../secret.txt", "/files/%2e%2e/secret.txt", "/files/%2E%2E/secret.txt",
        "/files/%252e%252e/secret.txt", "/files/..%2fsecret.txt", "/files/%2e%2e%2fsecret.txt",
        "/files/sub/..%2f..%2fsecret.txt", "/files/sub/%2e%2e/%2e%2e/secret.txt",
        "/files/..%5csecret.txt", "/files/%5c..%5csecret.txt", "/files/out-link.txt",
        "/files/out-folder/secret.txt", "/files/sub",
        "/files/sub/", "/files/", "/files/.%2fa.txt", "/files//a.txt", "/files/a.txt/",
        "/files/%c0%ae%c0%ae/secret.txt", "/../secret.txt", "/files/./a.txt",
    ]
    for path in refused:
        status, body, headers = fetch(site, path)
        assert 400 <= status < 500, path
        assert b"not for the browser" not in body and b"alpha" not in body, path
    for path in ("/files/%00", "/files/a.txt%00.png", "/files/%0d%0aX:%20y", "/files/%ff"):
        assert fetch(site, path)[0] == 400, path


def test_host_header_is_checked(site):
    port = urllib.parse.urlsplit(site).port
    for host, status in [(f"127.0.0.1:{port}", 200), (f"localhost:{port}", 200),
                         (f"[::1]:{port}", 200), (f"evil.example:{port}", 421),
                         (f"127.0.0.1:{port + 1}", 421), ("127.0.0.1", 421), ("", 421)]:
        got, body, headers = fetch(site, "/api/ok", {"Host": host})
        assert got == status, host
        if status == 421:
            assert json.loads(body) == {"error": "this server does not answer to that host name"}
            assert headers["Connection"] == "close"
            check_security_headers(headers)


def test_state_changing_requests_need_the_token_and_the_origin(site):
    host = urllib.parse.urlsplit(site).netloc
    good = {"X-Mosaicist-Token": TOKEN, "Content-Type": "application/json"}
    assert fetch(site, "/api/echo", good, "POST", b"{}")[0] == 200
    assert fetch(site, "/api/echo", good | {"Origin": f"http://{host}"}, "POST", b"{}")[0] == 200
    assert fetch(site, "/api/echo", good | {"Sec-Fetch-Site": "same-origin"}, "POST")[0] == 200
    refused = [
        {"Content-Type": "application/json"},
        {"X-Mosaicist-Token": "wrong"},
        {"X-Mosaicist-Token": TOKEN[:-1]},
        {"X-Mosaicist-Token": ""},
        {"X-Mosaicist-Token": TOKEN + "\u00e9"},
        good | {"Origin": "http://evil.example"},
        good | {"Origin": "null"},
        good | {"Origin": f"https://{host}"},
        good | {"Origin": f"http://{host.replace('127.0.0.1', 'localhost')}"},
        good | {"Sec-Fetch-Site": "cross-site"},
        good | {"Sec-Fetch-Site": "same-site"},
    ]
    for headers in refused:
        encoded = {key: value.encode("utf-8").decode("latin-1") for key, value in headers.items()}
        status, body, _ = fetch(site, "/api/echo", encoded, "POST", b"{}")
        assert status == 403, headers
        message = json.loads(body)["error"]
        assert message.count(".") <= 1 and "\n" not in message
    # DELETE is state-changing too (the route does not exist: refused before routing).
    assert fetch(site, "/api/echo", {}, "DELETE")[0] == 403
    assert fetch(site, "/api/echo", {"X-Mosaicist-Token": TOKEN}, "DELETE")[0] == 405


def test_an_app_without_a_token_takes_no_state_changing_request(tmp_path):
    with served(tmp_path, token=None) as (_, url):
        status, _, headers = fetch(url, "/api/echo", {"X-Mosaicist-Token": TOKEN}, "POST")
        assert status == 405 and "POST" not in headers["Allow"]


def test_error_answers_are_one_sentence_never_a_traceback(site, capsys):
    capsys.readouterr()
    status, body, headers = fetch(site, "/api/boom")
    assert status == 500 and headers["Content-Type"] == "application/json"
    message = json.loads(body)["error"]
    assert "secret detail" not in message and "Traceback" not in message
    status, body, headers = fetch(site, "/boom")
    assert status == 500 and headers["Content-Type"].startswith("text/plain")
    assert body.decode().count("\n") == 1 and b"Traceback" not in body
    check_security_headers(headers)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 2 and "Traceback" not in err, err
    assert lines[0] == "mosaicist: test: GET /api/boom failed: RuntimeError: secret detail"
    # Expected problems are the user's: their sentence, status 400, nothing logged.
    status, body, _ = fetch(site, "/api/refused")
    assert (status, json.loads(body)) == (400, {"error": "the picture is too small"})
    status, body, _ = fetch(site, "/api/teapot")
    assert (status, json.loads(body)) == (418, {"error": "no coffee here"})
    status, body, headers = fetch(site, "/api/nothing")
    assert status == 404 and json.loads(body) == {"error": "nothing is served at this address"}
    status, body, headers = fetch(site, "/nothing")
    assert status == 404 and body == b"nothing is served at this address\n"
    status, body, headers = fetch(site, "/api/ok", {"X-Mosaicist-Token": TOKEN}, "POST")
    assert status == 405 and "GET" in headers["Allow"] and "error" in json.loads(body)
    status, _, headers = fetch(site, "/api/ok", method="PUT")
    assert status == 405 and headers["Allow"] == "DELETE, GET, HEAD, POST"
    assert capsys.readouterr().err == ""


def test_a_body_cut_off_mid_way_is_no_failure_of_the_server(tmp_path, capfd):
    # A JSON body whose client went away printed "POST /api/echo failed:
    # ClientDisconnect", the line of a fault of the server.
    from conftest import post_cut_off

    app = make_app(_app_routes(tmp_path), host="127.0.0.1", port=8000, name="test",
                   token=TOKEN, methods=("GET", "POST"), max_body=MAX_BODY)
    headers = [(b"x-mosaicist-token", TOKEN.encode()),
               (b"content-type", b"application/json"), (b"content-length", b"100")]
    capfd.readouterr()
    sent = post_cut_off(app, "/api/echo", 8000, headers, b'{"a": ')
    assert sent[0]["status"] == 400
    assert "failed" not in capfd.readouterr().err


def test_malformed_uploads_are_not_warned_of_on_the_terminal(tmp_path):
    import logging

    # ("Expected boundary character 45, got 97 at index 2", under the client's 400.)
    with served(tmp_path):  # serving quiets the form parser's warnings
        parser = logging.getLogger("python_multipart.multipart")
        assert not parser.isEnabledFor(logging.WARNING)
        assert parser.isEnabledFor(logging.ERROR)


def test_a_full_disk_is_said_so(site, capsys):
    # An upload that filled the disk was "the server failed to answer": the person at the
    # page could not tell it from a bug, nor its host what to do.
    capsys.readouterr()
    status, body, _ = fetch(site, "/api/full")
    assert (status, json.loads(body)) == (507, {"error": "the server's disk is full"})
    assert capsys.readouterr().err.count("\n") == 1  # still logged, in one line


def test_request_bodies_are_limited(site):
    token = {"X-Mosaicist-Token": TOKEN}
    status, body, _ = fetch(site, "/api/echo", token, "POST", b"x" * MAX_BODY)
    assert (status, json.loads(body)) == (200, {"length": MAX_BODY})
    status, body, headers = fetch(site, "/api/echo", token, "POST", b"x" * (MAX_BODY + 1))
    assert status == 413 and "larger than" in json.loads(body)["error"]
    # A length claimed up front is refused before anything is read.
    host = urllib.parse.urlsplit(site).netloc.encode()
    claim = (b"POST /api/echo HTTP/1.1\r\nHost: " + host + b"\r\nX-Mosaicist-Token: "
             + TOKEN.encode() + b"\r\nContent-Length: 99999999999\r\n\r\n")
    assert raw(site, claim).startswith(b"HTTP/1.1 413 ")
    # Chunked, with no length: counted as it comes.
    chunked = (b"POST /api/echo HTTP/1.1\r\nHost: " + host + b"\r\nX-Mosaicist-Token: "
               + TOKEN.encode() + b"\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
               + (b"800\r\n" + b"y" * 0x800 + b"\r\n") * 3 + b"0\r\n\r\n")
    answer = raw(site, chunked)
    assert answer.startswith(b"HTTP/1.1 413 ") and b"larger than" in answer


def test_malformed_requests_get_a_4xx_status(site, capsys):
    host = f"Host: {urllib.parse.urlsplit(site).netloc}\r\n".encode()
    capsys.readouterr()
    for request in [
        b"GET /api/ok HTTP/1.1\r\n\r\n",
        b"GET /api/ok HTTP/1.1\r\n" + host + host + b"\r\n",
        b"GET http://evil.example/api/ok HTTP/1.1\r\n" + host + b"\r\n",
        b"GET /api/ok HTTP/1.1\r\n" + host + b"".join(b"X%d: y\r\n" % i for i in range(150))
        + b"\r\n",
        b"GET /api/ok HTTP/1.1\r\n" + host + b"X: " + b"y" * 40000 + b"\r\n\r\n",
        b"GET /" + b"a" * 4000 + b" HTTP/1.1\r\n" + host + b"\r\n",
        b"GET /\xff HTTP/1.1\r\n" + host + b"\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) + b"\r\n\r\n",
        b"BREW /api/ok HTTP/1.1\r\n" + host + b"\r\n",
        # A chunk size that is no number: uvicorn answers 400 and closes, and the app's
        # own answer, which could no longer be sent, was logged as the server's failure
        # ("GET /api/ok failed: LocalProtocolError", then "ASGI callable returned without
        # completing response").
        b"GET /api/ok HTTP/1.1\r\n" + host + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /api/echo HTTP/1.1\r\n" + host + b"X-Mosaicist-Token: " + TOKEN.encode()
        + b"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ]:
        answer = raw(site, request)
        match = re.match(rb"HTTP/1\.1 (\d{3}) ", answer)
        assert match and 400 <= int(match.group(1)) < 500, (request[:60], answer[:100])
        assert b"Traceback" not in answer
    assert capsys.readouterr().err == ""


def test_server_start_stop_leaves_nothing(tmp_path):
    stops: list[int] = []
    threads = set(threading.enumerate())
    with served(tmp_path, on_stop=lambda: stops.append(1)) as (server, url):
        port = server.port
        assert url == f"http://127.0.0.1:{port}"
        assert fetch(url, "/api/ok")[0] == 200
        with pytest.raises(MosaicistError, match=f"cannot listen on 127.0.0.1:{port}"):
            bind("127.0.0.1", port)
    assert stops == [1]
    assert set(threading.enumerate()) <= threads
    with pytest.raises(OSError):
        fetch(url, "/api/ok")
    bind("127.0.0.1", port).close()  # the address is free again
    # A server never started releases its address too.
    listener = bind("127.0.0.1", 0)
    port = listener.getsockname()[1]
    idle = WebServer(make_app([], host="127.0.0.1", port=port, name="idle"), listener)
    idle.stop()
    bind("127.0.0.1", port).close()
    with pytest.raises(MosaicistError, match="cannot listen on 203.0.113.1:0"):
        bind("203.0.113.1", 0)  # not an address of this machine


def test_serving_until_interrupted_answers_then_stops_quietly(tmp_path):
    listener = bind("127.0.0.1", 0)
    port = listener.getsockname()[1]
    app = make_app(_app_routes(tmp_path), host="127.0.0.1", port=port, name="test")
    server = WebServer(app, listener)
    threads = set(threading.enumerate())
    answers = []

    def started() -> None:
        answers.append(fetch(server.url, "/api/ok")[0])
        raise KeyboardInterrupt  # Ctrl+C while serving: no traceback, the server stopped

    server.run_until_interrupted(started)
    assert answers == [200]
    assert set(threading.enumerate()) <= threads
    bind("127.0.0.1", port).close()  # the address is free again


def test_an_interrupt_anywhere_in_the_wait_is_a_clean_interrupt(tmp_path):
    # A studio stopped by Ctrl+C printed "RuntimeError: release unlocked lock" and exited 1:
    # the interrupt was raised at the Python call inside Event.wait that takes its lock back.
    listener = bind("127.0.0.1", 0)
    app = make_app(_app_routes(tmp_path), host="127.0.0.1",
                   port=listener.getsockname()[1], name="test")
    server = WebServer(app, listener).start()
    raised = []

    def interrupted_waits() -> None:
        for at_call in range(1, 12):
            calls = 0

            def interrupt(frame, event, arg, at_call=at_call):
                nonlocal calls
                if event == "call":
                    calls += 1
                    if calls == at_call:
                        raise KeyboardInterrupt
                return None

            sys.settrace(interrupt)
            try:
                server.wait()
            except BaseException as error:  # noqa: BLE001 - what the interrupt became
                raised.append(type(error))
            finally:
                sys.settrace(None)

    # In a thread of its own, so that a wait left blocked on its lock fails the test.
    waits = threading.Thread(target=interrupted_waits, daemon=True)
    waits.start()
    waits.join(timeout=15)
    stopping = threading.Thread(target=server.stop, daemon=True)
    stopping.start()
    stopping.join(timeout=15)
    assert not waits.is_alive(), f"a wait blocked after {raised}"
    assert raised == [KeyboardInterrupt] * 11
    assert not stopping.is_alive()  # no lock was left held: the server stopped


def test_ipv6_loopback(tmp_path):
    try:
        bind("::1", 0).close()
    except MosaicistError:
        pytest.skip("no IPv6 loopback here")
    (tmp_path / "a.txt").write_text("six")
    with served(resolved_folder(tmp_path), host="::1") as (server, url):
        assert url.startswith("http://[::1]:")
        assert fetch(url, "/files/a.txt")[1] == b"six"
        assert fetch(url, "/files/a.txt", {"Host": f"evil.example:{server.port}"})[0] == 421


def test_mosaicist_errors_of_the_server_carry_their_status(tmp_path, capsys):
    # Every MosaicistError was a 400, "change what you sent", even one that said the
    # server's own database could not be used.
    class ServerFault(MosaicistError):
        http_status = 503

    class Misspelt(MosaicistError):
        http_status = "503"

    class Success(MosaicistError):
        http_status = 200

    class Subclassed(ServerFault):
        pass

    raised = {"fault": (ServerFault, "the history cannot be read"),
              "subclassed": (Subclassed, "the history is locked"),
              "misspelt": (Misspelt, "refused"), "success": (Success, "refused"),
              "plain": (MosaicistError, "the picture is too small")}

    async def fail(request: Request) -> Response:
        kind, message = raised[request.path_params["kind"]]
        raise kind(message)

    listener = bind("127.0.0.1", 0)
    app = make_app([Route("/api/fail/{kind}", fail, methods=["GET"]),
                    Route("/fail/{kind}", fail, methods=["GET"])],
                   host="127.0.0.1", port=listener.getsockname()[1], name="test",
                   token=TOKEN, methods=("GET",), max_body=MAX_BODY)
    capsys.readouterr()
    with WebServer(app, listener) as server:
        answers = {kind: fetch(server.url, f"/api/fail/{kind}")[:2] for kind in raised}
        plain_text = fetch(server.url, "/fail/fault")[:2]
    assert {kind: (status, json.loads(body)) for kind, (status, body) in answers.items()} == {
        "fault": (503, {"error": "the history cannot be read"}),
        "subclassed": (503, {"error": "the history is locked"}),
        "misspelt": (400, {"error": "refused"}),
        "success": (400, {"error": "refused"}),
        "plain": (400, {"error": "the picture is too small"}),
    }
    assert plain_text == (503, b"the history cannot be read\n")
    # A fault of the server is logged in one line each; the client's errors are not.
    assert capsys.readouterr().err.splitlines() == [
        "mosaicist: test: GET /api/fail/fault failed: ServerFault: the history cannot be read",
        "mosaicist: test: GET /api/fail/subclassed failed: Subclassed: the history is locked",
        "mosaicist: test: GET /fail/fault failed: ServerFault: the history cannot be read",
    ]


def test_host_check_aliases_and_url_hosts():
    # A server reached under a name its runner gave (the live wall's --url) answers to it.
    check = HostCheck("0.0.0.0", 8000, url_hosts("http://Wall.Local:8000/guests"))
    assert check.allows("wall.local:8000") and check.allows("WALL.local:8000")
    assert not check.allows("wall.local:8001") and not check.allows("wall.localx:8000")
    assert check.same_origin("http://wall.local:8000", "wall.local:8000")
    assert not check.same_origin("http://evil.example:8000", "wall.local:8000")
    proxied = HostCheck("127.0.0.1", 8000, url_hosts("https://wall.example"))
    assert proxied.allows("wall.example") and proxied.allows("wall.example:443")
    assert proxied.same_origin("https://wall.example", "wall.example")
    assert not proxied.same_origin("https://evil.example", "wall.example")
    assert not HostCheck("127.0.0.1", 8000).same_origin("https://127.0.0.1:8000",
                                                        "127.0.0.1:8000")
    assert url_hosts("http://[fe80::1]:9000/") == ("[fe80::1]:9000",)
    assert url_hosts("http://wall.local/") == ("wall.local:80", "wall.local")
    for url in ("wall.local", "ftp://wall.local/", "http://", "http://a:99999/",
                "http://u:p@wall.local/"):
        with pytest.raises(ValueError):
            url_hosts(url)


def test_a_download_named_from_a_file_name_that_is_not_utf8_is_sent(tmp_path):
    # The live wall names its exports after the target's file name: one that is not UTF-8
    # (surrogate escapes) made every export download fail with status 500.
    path = tmp_path / "wall.png"
    path.write_bytes(b"png")
    with path.open("rb") as handle:
        answer = FileAnswer(handle, "image/png", download="\udcffwall-wall.png")
    disposition = dict(answer.raw_headers)[b"content-disposition"].decode("latin-1")
    assert disposition == ("attachment; filename=\"_wall-wall.png\"; "
                           "filename*=UTF-8''%EF%BF%BDwall-wall.png")


def test_a_connection_that_never_sends_its_request_is_closed(tmp_path, monkeypatch, capfd):
    # Such connections (a phone gone from the Wi-Fi mid-upload, a browser's unused
    # preconnection) were held for ever: 64 of them and every request was answered 503.
    import anyio

    from mosaicist.web import _serve

    monkeypatch.setattr(_serve, "REQUEST_IDLE_SECONDS", 0.5, raising=False)

    async def slow(request: Request) -> Response:
        await request.body()
        await anyio.sleep(1.5)  # answering takes longer than a request may be silent
        return PlainTextResponse("done")

    listener = bind("127.0.0.1", 0)
    port = listener.getsockname()[1]
    app = make_app([Route("/slow", slow, methods=["GET", "POST"])], host="127.0.0.1",
                   port=port, name="test", token=TOKEN, methods=("GET", "POST"),
                   max_body=MAX_BODY)
    head = f"POST /slow HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Mosaicist-Token: {TOKEN}\r\n"
    with WebServer(app, listener) as server:
        for sent in (b"", b"GET /slow HTTP/1.1\r\nHost: 127.0",
                     (head + "Content-Length: 100\r\n\r\n0123456789").encode()):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
                connection.sendall(sent)
                assert connection.recv(65536) == b"", sent  # closed, nothing answered
        # A request received whole is answered however long that takes, and so is the
        # next one on the same connection.
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            for _ in range(2):
                connection.request("POST", "/slow", body=b"x", headers={
                    "X-Mosaicist-Token": TOKEN})
                answer = connection.getresponse()
                assert (answer.status, answer.read()) == (200, b"done")
        finally:
            connection.close()
        assert fetch(server.url, "/slow")[0] == 200
    assert "failed" not in capfd.readouterr().err
