"""Making a guarded app: Starlette routes behind :class:`~._guard.Guard`."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from ._errors import EXCEPTION_HANDLERS
from ._guard import Guard
from ._hosts import HostCheck

#: Largest request body by default (JSON requests).
DEFAULT_MAX_BODY = 1 << 20


def new_token() -> str:
    """A fresh per-server secret for state-changing requests (256 random bits)."""
    return secrets.token_urlsafe(32)


def make_app(
    routes: Sequence[BaseRoute],
    *,
    host: str,
    port: int,
    name: str,
    token: str | None = None,
    methods: Iterable[str] = ("GET", "HEAD"),
    max_body: int = DEFAULT_MAX_BODY,
    lifespan: Callable[[Any], AbstractAsyncContextManager[None]] | None = None,
    aliases: Iterable[str] = (),
) -> Guard:
    """Return an ASGI app serving ``routes`` for a server bound to ``host:port``.

    Every request passes :class:`~mosaicist.web.Guard` first (``Host``,
    method, path, token and origin, body size), every answer carries the
    security headers, and every error is one sentence: JSON
    ``{"error": ...}`` under ``/api/``, plain text elsewhere.

    Parameters
    ----------
    routes : sequence of starlette routes
        What is served.
    host, port : str, int
        The bound address (see :func:`mosaicist.web.bind`).
    name : str
        Named in the log line of a request that failed unexpectedly.
    token : str, optional
        The secret that state-changing requests must carry in
        ``X-Mosaicist-Token`` (:func:`new_token`); without one the app takes
        no state-changing request.
    methods : iterable of str
        The methods answered; others get 405.
    max_body : int
        Largest request body in bytes (413 above).
    lifespan : callable, optional
        Starlette's lifespan context (startup and shutdown of the app).
    aliases : iterable of str
        Other ``Host`` values that name this server (see
        :class:`~mosaicist.web.HostCheck`).

    Returns
    -------
    Guard
        The app; the Starlette app behind it is its ``app`` attribute.
    """
    inner = Starlette(routes=list(routes), exception_handlers=dict(EXCEPTION_HANDLERS),
                      lifespan=lifespan)
    inner.state.name = name
    return Guard(inner, hosts=HostCheck(host, port, tuple(aliases)), name=name, token=token,
                 methods=methods, max_body=max_body)
