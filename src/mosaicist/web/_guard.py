"""The guard in front of every app: checks each request before the app sees it.

:class:`Guard` is plain ASGI middleware, the outermost layer of an app made
by :func:`mosaicist.web.make_app`. For every request it

- refuses a ``Host`` that does not name the server (421), too many headers
  (431), a method the app does not take (405), a request target that is not
  an origin-form path of valid percent-encoded UTF-8 without control
  characters (400, 414), a query string above its limit (414), and a body
  above the limit (413);
- for state-changing methods, asks for the server's token in
  ``X-Mosaicist-Token`` and, when the browser names the page's origin
  (``Origin``) or says the request comes from another site
  (``Sec-Fetch-Site``), for the server's own origin (403). A page is told
  to reload (its token is from an earlier start, or it is another site's);
  a request without a token that no browser sent (a script's, which never
  had a page) is told that it needs the page's token, and how a script
  authenticates where the app has a way;
- adds the security headers (no sniffing, no referrer, no framing, a
  content security policy without remote sources) to every answer;
- answers an exception that escaped the app with status 500 and one
  sentence, and logs one line, so that the server never prints a traceback.
"""

from __future__ import annotations

import hmac
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import anyio

from ._errors import API_PREFIX, WebError, error_response, log_failure, sentence
from ._hosts import HostCheck

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The header that carries the server's token on state-changing requests.
TOKEN_HEADER = "x-mosaicist-token"
#: Methods that change state: they need the token.
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Headers a browser sends with every state-changing request of a page (``Origin``), or
#: of any page to a trustworthy origin such as localhost (``Sec-Fetch-Site``); scripts
#: (curl, Python's urllib and requests) send neither unless told to.
BROWSER_HEADERS = (b"origin", b"sec-fetch-site")
#: The ASGI scope key where a middleware in front of the guard that recognised another
#: credential in a request (a script's bearer token) puts the refusal of that request for
#: want of the page's token, said instead of the guard's own words.
NO_TOKEN_REFUSAL_KEY = "mosaicist.no_token_refusal"
#: Longest request target accepted (the pages' own URLs are far shorter).
MAX_TARGET = 2048
#: Longest query string accepted: the studio's folder browser sends a path there (at most
#: 4,096 bytes, three times that percent-encoded); the other routes, a few short numbers.
MAX_QUERY = 16 * 1024
#: Most header lines in one request (as Python's http.client allows), and their bytes.
MAX_HEADERS = 100
MAX_HEADER_BYTES = 16 * 1024
#: A percent sign not followed by two hex digits.
BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
#: Control characters (NUL included), which no route contains.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: A refused request's body read before the connection is closed: bytes, seconds.
DRAIN_BYTES = 64 * 1024
DRAIN_SECONDS = 1.0
#: Served with every answer that does not set its own policy: nothing may be loaded.
DEFAULT_POLICY = ("default-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
                  "form-action 'none'")
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    # Other sites' pages may not embed or read what is served here.
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


class BodyTooLarge(WebError):
    """A request body over the guard's limit, raised while the app reads it."""


def decode_target(raw: bytes) -> str | int:
    """The decoded path of an origin-form request target, or the status refusing it.

    Parameters
    ----------
    raw : bytes
        The target as sent, before any decoding (the ASGI ``raw_path``).

    Returns
    -------
    str or int
        The percent-decoded UTF-8 path; or 414 for a target over
        :data:`MAX_TARGET` bytes, 400 for one that is not a plain path, has
        a malformed escape, is not UTF-8 or holds a control character.
    """
    if len(raw) > MAX_TARGET:
        return 414
    if not raw.startswith(b"/") or raw.startswith(b"//"):
        return 400
    if BAD_ESCAPE.search(raw):
        return 400
    try:
        route = urllib.parse.unquote_to_bytes(raw).decode("utf-8")
    except UnicodeError:
        return 400
    return 400 if CONTROL.search(route) else route


class Guard:
    """ASGI middleware checking every request for a server bound to ``hosts``.

    Parameters
    ----------
    app : ASGI app
        The app behind the guard.
    hosts : HostCheck
        The ``Host`` values that name the server.
    name : str
        Named in the log line of a failed request (``view``, ``studio``).
    token : str or None
        The secret state-changing requests must carry; None: the app takes
        no state-changing request at all.
    methods : iterable of str
        The methods the app answers; others get 405.
    max_body : int
        Largest request body in bytes.
    no_token : str, optional
        The refusal of a state-changing request that carries no token and
        that no browser sent (a script's): what it needs, and how a script
        authenticates where the app has a way. By default, that the app's
        page sends its token with every change (see :func:`no_token_refusal`).

    Attributes
    ----------
    no_token : str
        That refusal; an app made by :func:`mosaicist.web.make_app` may set
        its own here.
    """

    def __init__(self, app: ASGIApp, *, hosts: HostCheck, name: str, token: str | None,
                 methods: Iterable[str], max_body: int, no_token: str | None = None) -> None:
        self.app = app
        self.hosts = hosts
        self.name = name
        self.token = token
        self.no_token = no_token or no_token_refusal(name)
        self.methods = frozenset(methods)
        if token is None:
            self.methods -= STATE_CHANGING
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # websockets: none are served
            await send({"type": "websocket.close", "code": 1008})
            return
        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = _with_security_headers(message.get("headers", []))
            await send(message)

        raw = scope.get("raw_path") or scope["path"].encode("utf-8")
        raw = raw.split(b"?", 1)[0]
        path = scope.get("path", "")
        refusal = self._check(scope, raw)
        if refusal is not None:
            status, message, headers = refusal
            # A refused request is the connection's last: what follows it is not trusted.
            # Its body is read first (when small), or closing with unread data would reset
            # the connection before the client reads the answer.
            headers["Connection"] = "close"
            if status != 413:
                await _drain(receive)
            shown = path if isinstance(decode_target(raw), str) else _shown_path(raw)
            await error_response(shown, status, message, headers)(scope, receive, guarded_send)
            return
        route = decode_target(raw)
        assert isinstance(route, str)
        scope["path"] = route
        try:
            await self.app(scope, self._limited(receive), guarded_send)
        except Exception as error:  # noqa: BLE001 - the last line of defence
            log_failure(self.name, scope["method"], route, error)
            if not started:
                await error_response(route, 500, sentence(500))(scope, receive, guarded_send)

    def _check(self, scope: Scope, raw: bytes) -> tuple[int, str, dict[str, str]] | None:
        """The refusal of a request as (status, sentence, headers); None when it may pass."""
        headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        if len(headers) > MAX_HEADERS:
            return 431, f"the request has more than {MAX_HEADERS} header lines", {}
        if sum(len(key) + len(value) for key, value in headers) > MAX_HEADER_BYTES:
            return 431, f"the request's headers are larger than {MAX_HEADER_BYTES} bytes", {}
        hosts = [value for key, value in headers if key == b"host"]
        if len(hosts) != 1:
            return 400, "the request must name this server in exactly one Host header", {}
        host = hosts[0].decode("latin-1")
        if not self.hosts.allows(host):
            return 421, "this server does not answer to that host name", {}
        route = decode_target(raw)
        if isinstance(route, int):
            return route, sentence(route) if route != 400 else (
                "the address is not a valid path"), {}
        if len(scope.get("query_string", b"")) > MAX_QUERY:
            # Else up to the server's head limit (128 KB) reached the app, parsed for
            # every request that asks for one of its values.
            return 414, sentence(414), {}
        method = scope["method"]
        if method not in self.methods:
            allowed = ", ".join(sorted(self.methods))
            return 405, "this server does not accept that method", {"Allow": allowed}
        if method in STATE_CHANGING:
            problem = self._check_sender(headers, host, scope.get(NO_TOKEN_REFUSAL_KEY))
            if problem is not None:
                return 403, problem, {}
        lengths = [value for key, value in headers if key == b"content-length"]
        if lengths and (not lengths[0].isdigit() or int(lengths[0]) > self.max_body):
            return 413, _too_large(self.max_body), {}
        return None

    def _check_sender(self, headers: list[tuple[bytes, bytes]], host: str,
                      instead: str | None = None) -> str | None:
        """Why a state-changing request may not come from where it does; None: it may.

        ``instead``: the refusal for want of the token that a middleware in
        front of the guard chose (:data:`NO_TOKEN_REFUSAL_KEY`).
        """
        values = {key: value.decode("latin-1") for key, value in headers}
        given = values.get(TOKEN_HEADER.encode())
        if self.token is None or given is None or not hmac.compare_digest(
            given.encode("utf-8", "replace"), self.token.encode("utf-8")
        ):
            if instead is not None:
                return instead
            missing = given is None or not given.strip()  # blank: a script's unset $TOKEN
            if missing and not any(key in values for key in BROWSER_HEADERS):
                # No browser sent it, so no page did: a script, which never had a page to
                # reload ("reload the page" sent its author looking for one).
                return self.no_token
            # In words a guest or a studio user can act on: "token" meant nothing to them,
            # and a server started again (a new token) is the common cause.
            return (f"this page is from an earlier start of mosaicist {self.name} (or from "
                    "elsewhere); reload the page and try again")
        origin = values.get(b"origin")
        if origin is not None and not self.hosts.same_origin(origin, host):
            return "requests from another site's page are refused"
        if values.get(b"sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return "requests from another site's page are refused"
        return None

    def _limited(self, receive: Receive) -> Receive:
        """``receive``, raising :class:`BodyTooLarge` once the body passes the limit."""
        total = 0

        async def limited() -> Message:
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > self.max_body:
                    raise BodyTooLarge(413, _too_large(self.max_body))
            return message

        return limited


def no_token_refusal(name: str) -> str:
    """The guard's refusal of a script's state-changing request without a token, by default.

    Parameters
    ----------
    name : str
        The app, as in ``mosaicist NAME`` (``studio``).

    Returns
    -------
    str
        One sentence: that the request lacks the token the app's page sends.
    """
    return (f"this request has no token: mosaicist {name} takes changes from its own page "
            "only, which sends this server's token with each one")


async def _drain(receive: Receive) -> None:
    """Read and drop a refused request's body: at most :data:`DRAIN_BYTES`, a second long."""
    left = DRAIN_BYTES
    with anyio.move_on_after(DRAIN_SECONDS):
        while left > 0:
            message = await receive()
            if message["type"] != "http.request":
                return
            left -= len(message.get("body", b""))
            if not message.get("more_body", False):
                return


def _shown_path(raw: bytes) -> str:
    """The path a refusal of an undecodable request target is answered for.

    Under :data:`~._errors.API_PREFIX` as sent, the API's own (so that the
    refusal is JSON, as the page's scripts read every answer there); else ``/``.
    """
    return API_PREFIX if raw.startswith(API_PREFIX.encode()) else "/"


def _too_large(limit: int) -> str:
    return f"the request body is larger than the {limit / 2**20:g} MB this server takes"


def _with_security_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The headers of an answer, with the security headers (and a default policy) added."""
    result = list(headers)
    names = {key.lower() for key, _ in result}
    for key, value in SECURITY_HEADERS:
        if key not in names:
            result.append((key, value))
    if b"content-security-policy" not in names:
        result.append((b"content-security-policy", DEFAULT_POLICY.encode()))
    if b"cache-control" not in names:
        result.append((b"cache-control", b"no-cache"))
    return result
