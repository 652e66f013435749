"""The hardened local web server every mosaicist page is served by.

Starlette routes behind one guard, served by uvicorn on a socket bound
first. :func:`bind` takes the address (port 0: a free one);
:func:`make_app` puts the routes behind :class:`Guard`, which answers only
requests that name this server in ``Host`` (421 otherwise), refuses
state-changing requests without the server's token or from another site's
page (403), malformed paths and oversized bodies, adds the security headers,
and turns every error into one sentence (JSON under ``/api/``), never a
traceback; :class:`WebServer` serves it in the foreground or in a thread and
stops cleanly. :func:`open_inside` and :class:`FileAnswer` serve files
only from inside a resolved root folder, symlinks checked.
:class:`UploadQueue` bounds the uploads taken in at once and decodes them a
few at a time, without a worker thread waiting for its turn.
"""

from ._app import DEFAULT_MAX_BODY, make_app, new_token
from ._errors import API_PREFIX, WebError, error_response, read_json
from ._files import (
    FileAnswer,
    content_type,
    download_head,
    locate_inside,
    open_inside,
    open_resolved,
    package_folder,
    plain_name,
    resolved_folder,
)
from ._guard import TOKEN_HEADER, Guard, decode_target
from ._hosts import HostCheck, url_hosts
from ._serve import WebServer, bind, sigterm_as_interrupt
from ._uploads import UploadQueue

__all__ = [
    "API_PREFIX",
    "DEFAULT_MAX_BODY",
    "TOKEN_HEADER",
    "FileAnswer",
    "Guard",
    "HostCheck",
    "UploadQueue",
    "WebError",
    "WebServer",
    "bind",
    "content_type",
    "decode_target",
    "download_head",
    "error_response",
    "locate_inside",
    "make_app",
    "new_token",
    "open_inside",
    "open_resolved",
    "package_folder",
    "plain_name",
    "read_json",
    "resolved_folder",
    "sigterm_as_interrupt",
    "url_hosts",
]
