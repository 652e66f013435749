"""Error answers: one sentence, as JSON under the API prefix and as plain text elsewhere.

No answer ever holds a traceback: expected problems raise :class:`WebError`
(or :class:`~mosaicist.errors.MosaicistError`, shown with status 400), and
anything unexpected is answered with status 500 and one sentence, its reason
going to the server's stderr as one line.

A :class:`~mosaicist.errors.MosaicistError` is the request's fault unless
its class says otherwise: a subclass for a fault of the server's side sets
the class attribute ``http_status`` (see :func:`error_status`)::

    class HistoryError(MosaicistError):
        http_status = 503  # the server's database, not what was sent

and is answered with that status and its message, the message also logged
as one line on the server's stderr (whoever runs the server can act on it).
"""

from __future__ import annotations

import contextlib
import errno
import json
import sys
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ..errors import MosaicistError

#: Paths under which answers are JSON (``{"error": "..."}``).
API_PREFIX = "/api/"

#: What the statuses Starlette raises by itself say, in one sentence.
_SENTENCES = {
    400: "the request is malformed",
    403: "this request is not allowed",
    404: "nothing is served at this address",
    405: "this address does not accept that method",
    413: "the request body is too large",
    414: "the address is longer than this server accepts",
    500: "the server failed to answer this request; its terminal says why",
}


class WebError(HTTPException):
    """An expected refusal: a status and one sentence for the person using the page.

    Parameters
    ----------
    status : int
        The HTTP status (4xx, or 5xx for failures that are not the request's fault).
    message : str
        One sentence, without a trailing full stop.
    headers : mapping, optional
        Extra response headers (``Allow`` with 405).
    """

    def __init__(self, status: int, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status, message, dict(headers) if headers else None)
        self.message = message


def error_response(path: str, status: int, message: str,
                   headers: Mapping[str, str] | None = None) -> Response:
    """The answer refusing a request for ``path`` with ``status`` and ``message``.

    Parameters
    ----------
    path : str
        The request's path: under :data:`API_PREFIX` the answer is JSON
        (``{"error": message}``), else plain text.
    status : int
        The HTTP status.
    message : str
        One sentence saying what was wrong.
    headers : mapping of str to str, optional
        More headers for the answer (``Allow``, ``Retry-After``).

    Returns
    -------
    starlette.responses.Response
    """
    extra = dict(headers or {})
    if path.startswith(API_PREFIX) or path == API_PREFIX.rstrip("/"):
        body = json.dumps({"error": message}).encode("utf-8")
        return Response(body, status, extra, media_type="application/json")
    return Response(f"{message}\n", status, extra, media_type="text/plain")


def sentence(status: int) -> str:
    """A default one-sentence message for ``status``."""
    if status in _SENTENCES:
        return _SENTENCES[status]
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "the request failed"


async def http_error(request: Request, error: Exception) -> Response:
    """Starlette's handler of :class:`~starlette.exceptions.HTTPException` (and WebError)."""
    assert isinstance(error, HTTPException)
    message = error.message if isinstance(error, WebError) else sentence(error.status_code)
    return error_response(request.url.path, error.status_code, message, error.headers)


#: Status of a :class:`MosaicistError` whose class names none: the request's fault.
CLIENT_FAULT = 400


def error_status(error: BaseException) -> int:
    """The status a :class:`MosaicistError` is answered with.

    Parameters
    ----------
    error : BaseException
        The error raised while answering.

    Returns
    -------
    int
        The ``http_status`` attribute of its class when that is an error
        status (an int from 400 to 599), else :data:`CLIENT_FAULT` (400):
        a misspelt or success status must not turn a refusal into an answer
        that looks like success.
    """
    status = getattr(type(error), "http_status", CLIENT_FAULT)
    if isinstance(status, int) and not isinstance(status, bool) and 400 <= status <= 599:
        return status
    return CLIENT_FAULT


async def mosaicist_error(request: Request, error: Exception) -> Response:
    """A :class:`MosaicistError` raised while answering: the user's input, status 400,
    or the server's fault where its class sets ``http_status`` (:func:`error_status`)."""
    status = error_status(error)
    if status >= 500:
        # Nothing the person at the page can change: the terminal says what failed.
        log_failure(getattr(request.app.state, "name", "server"), request.method,
                    request.url.path, error)
    return error_response(request.url.path, status, str(error))


async def unexpected_error(request: Request, error: Exception) -> Response:
    """Anything else: status 500 and one sentence, its reason logged in one line first.

    A full disk is the exception: status 507, saying so, since whoever runs
    the server can act on it (and the page can tell its user to wait).
    """
    if isinstance(error, ClientDisconnect):
        # The client went away mid-body (a page closed, a network dropped): nobody
        # waits for the answer, and nothing failed here that the terminal should show.
        return error_response(request.url.path, 400, "the request was cut off before its end")
    name = getattr(request.app.state, "name", "server")
    log_failure(name, request.method, request.url.path, error)
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return error_response(request.url.path, 507, "the server's disk is full")
    return error_response(request.url.path, 500, _SENTENCES[500])


def form_header_too_long(error: BaseException) -> bool:
    """Whether a form was refused for a part's header over the parser's size limit.

    Starlette answers every form the multipart parser refuses with one
    message ("Invalid multipart data"); the parser's own reason is further
    down the chain of exceptions.
    """
    seen: BaseException | None = error
    for _ in range(8):
        if seen is None:
            return False
        if "header size" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def client_broke_protocol(error: BaseException) -> bool:
    """Whether ``error`` is the HTTP connection's own, after the client broke the protocol.

    A malformed body (a chunk size that is no number) makes uvicorn answer
    400 itself and close the connection; the page's answer then cannot be
    sent, and h11 says so (``LocalProtocolError``): nothing failed here.
    """
    kind = type(error)
    return kind.__name__ == "LocalProtocolError" and kind.__module__.split(".")[0] == "h11"


def log_failure(name: str, method: str, path: str, error: BaseException) -> None:
    """One line on stderr naming a request that failed unexpectedly, never a traceback.

    Logged once: the exception is marked, so that the guard, which sees it
    again (Starlette raises it on after answering), stays silent.
    """
    if (getattr(error, "_mosaicist_logged", False) or isinstance(error, ClientDisconnect)
            or client_broke_protocol(error)):
        # A client gone mid-body is no failure of the server (see unexpected_error).
        return
    with contextlib.suppress(AttributeError):
        error._mosaicist_logged = True  # type: ignore[attr-defined]
    reason = str(error).splitlines()[0] if str(error) else ""
    print(f"mosaicist: {name}: {method} {path} failed: {type(error).__name__}"
          f"{': ' + reason if reason else ''}", file=sys.stderr, flush=True)


#: The handlers every app of this package installs.
EXCEPTION_HANDLERS = {
    HTTPException: http_error,
    MosaicistError: mosaicist_error,
    Exception: unexpected_error,
}


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """A request's body as a JSON object of at most ``max_bytes`` (else a one-sentence 4xx).

    The body is counted as it arrives, so an oversized one is refused
    without being read whole.

    Parameters
    ----------
    request : starlette.requests.Request
        The request whose body to read; an empty body reads as ``{}``.
    max_bytes : int
        The most bytes the body may have.

    Returns
    -------
    dict
        The JSON object.

    Raises
    ------
    WebError
        413 for a body over ``max_bytes``; 400 for one that is not JSON or
        not an object.
    """
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise WebError(413, f"the request body is larger than {max_bytes // 1024} KB")
    try:
        value = json.loads(bytes(body) or b"{}")
    except (ValueError, RecursionError):
        raise WebError(400, "the request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise WebError(400, "the request body must be a JSON object")
    return value
