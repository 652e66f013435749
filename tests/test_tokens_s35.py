"""The guard tells a script without a token from a page to reload (session 35).

A state-changing request without the page's token was always told "this page
is from an earlier start of mosaicist NAME (or from elsewhere); reload the
page", also when no page sent it: a script (curl, Python) never had one.
Only the words differ now: every request refused before is still refused.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mosaicist.web import Guard, make_app
from mosaicist.web._guard import NO_TOKEN_REFUSAL_KEY

TOKEN = "the-right-token"
HOST = "127.0.0.1:8000"
RELOAD = "reload the page and try again"
ANOTHER_SITE = "requests from another site's page are refused"


def _request(app: Any, method: str, path: str, headers: dict[str, str],
             extra: dict[str, Any] | None = None) -> tuple[int, str]:
    """``method`` on ``path`` of the ASGI ``app`` (called directly): status and body."""
    body = b"{}"
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000),
             "headers": [(b"host", HOST.encode()), (b"content-length", b"2"),
                         *((key.lower().encode(), value.encode())
                           for key, value in headers.items())],
             **(extra or {})}
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    text = b"".join(message.get("body", b"") for message in sent[1:]).decode()
    return sent[0]["status"], text


@pytest.fixture
def recorded() -> tuple[Guard, list[str]]:
    """An app with a token whose one route records each request that reached it."""
    reached: list[str] = []

    async def change(request: Request) -> JSONResponse:
        reached.append(request.method)
        return JSONResponse({"done": True})

    app = make_app([Route("/api/change", change, methods=["POST", "PUT", "PATCH", "DELETE"])],
                   host="127.0.0.1", port=8000, name="studio", token=TOKEN,
                   methods=("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"))
    return app, reached


def _error(text: str) -> str:
    return str(json.loads(text)["error"])


def test_a_script_without_a_token_is_told_it_needs_the_pages_token(recorded) -> None:
    # curl -X POST http://127.0.0.1:PORT/api/index printed "this page is from an earlier
    # start of mosaicist studio (or from elsewhere); reload the page and try again".
    app, reached = recorded
    for headers in ({}, {"X-Mosaicist-Token": ""}, {"X-Mosaicist-Token": "  "},
                    {"Content-Type": "application/json", "User-Agent": "curl/8.5.0"}):
        status, text = _request(app, "POST", "/api/change", headers)
        assert status == 403, headers
        assert _error(text) == ("this request has no token: mosaicist studio takes changes "
                                "from its own page only, which sends this server's token "
                                "with each one"), headers
    # Outside the API the same words, as one line of text.
    status, text = _request(app, "POST", "/elsewhere", {})
    assert status == 403 and text.startswith("this request has no token: mosaicist studio")
    assert reached == []


def test_a_browser_page_is_still_told_to_reload(recorded) -> None:
    # A page's token from an earlier start, and a browser's request without a token (a page
    # of another site, or one cached from before): a page, which can be reloaded.
    app, reached = recorded
    for headers in ({"X-Mosaicist-Token": "from-an-earlier-start"},
                    {"X-Mosaicist-Token": TOKEN + "x"},
                    {"Origin": f"http://{HOST}"}, {"Origin": "http://evil.example"},
                    {"Origin": "null"}, {"Sec-Fetch-Site": "same-origin"},
                    {"Sec-Fetch-Site": "cross-site"},
                    {"X-Mosaicist-Token": "", "Origin": f"http://{HOST}"},
                    {"X-Mosaicist-Token": "old", "Origin": "http://evil.example"}):
        status, text = _request(app, "POST", "/api/change", headers)
        assert status == 403, headers
        assert _error(text) == ("this page is from an earlier start of mosaicist studio (or "
                                f"from elsewhere); {RELOAD}"), headers
    assert reached == []


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_nothing_refused_before_gets_through(recorded, method: str) -> None:
    app, reached = recorded
    refused = [{}, {"X-Mosaicist-Token": ""}, {"X-Mosaicist-Token": "wrong"},
               {"X-Mosaicist-Token": TOKEN.upper()}, {"X-Mosaicist-Token": TOKEN[:-1]},
               {"Authorization": f"Bearer {TOKEN}"}, {"Origin": f"http://{HOST}"},
               {"Sec-Fetch-Site": "same-origin"},
               {"X-Mosaicist-Token": TOKEN, "Origin": "http://evil.example"},
               {"X-Mosaicist-Token": TOKEN, "Origin": "null"},
               {"X-Mosaicist-Token": TOKEN, "Sec-Fetch-Site": "cross-site"},
               {"X-Mosaicist-Token": TOKEN, "Sec-Fetch-Site": "same-site"}]
    for headers in refused:
        status, text = _request(app, method, "/api/change", headers)
        assert status == 403, headers
    # A middleware's words for a request without the token change the words only.
    status, text = _request(app, method, "/api/change", {},
                            {NO_TOKEN_REFUSAL_KEY: "the admin token is not this wall's"})
    assert (status, _error(text)) == (403, "the admin token is not this wall's")
    status, text = _request(app, method, "/api/change",
                            {"X-Mosaicist-Token": TOKEN, "Origin": "http://evil.example"},
                            {NO_TOKEN_REFUSAL_KEY: "other words"})
    assert (status, _error(text)) == (403, ANOTHER_SITE)
    assert reached == []
    # The token, from a script or from the page itself, passes as before.
    for headers in ({"X-Mosaicist-Token": TOKEN},
                    {"X-Mosaicist-Token": TOKEN, "Origin": f"http://{HOST}",
                     "Sec-Fetch-Site": "same-origin"}):
        assert _request(app, method, "/api/change", headers)[0] == 200, headers
    assert reached == [method, method]


def test_an_app_names_how_its_scripts_authenticate(recorded) -> None:
    app, reached = recorded
    app.no_token = "this request has no token: send Authorization: Bearer TOKEN"
    assert _error(_request(app, "POST", "/api/change", {})[1]) == app.no_token
    assert RELOAD in _error(_request(app, "POST", "/api/change", {"Origin": "null"})[1])
    assert Guard(app.app, hosts=app.hosts, name="x", token=TOKEN, methods=["POST"],
                 max_body=10, no_token="own words").no_token == "own words"
    assert reached == []


def test_an_app_without_a_token_still_takes_no_change() -> None:
    async def change(request: Request) -> JSONResponse:
        raise AssertionError("reached")

    app = make_app([Route("/x", change, methods=["POST"])], host="127.0.0.1", port=8000,
                   name="view")
    for headers in ({}, {"X-Mosaicist-Token": "anything"}, {"Origin": f"http://{HOST}"}):
        assert _request(app, "POST", "/x", headers)[0] == 405


def test_the_studio_tells_a_script_and_a_page_apart(tmp_path: Path) -> None:
    from mosaicist.studio import Studio, make_studio_app

    home = tmp_path / "home"
    home.mkdir()
    studio = Studio(cache_dir=tmp_path / "cache", home=home, token=TOKEN)
    try:
        app = make_studio_app(studio, host="127.0.0.1", port=8000)
        status, text = _request(app, "POST", "/api/runs", {})
        assert status == 403 and _error(text).startswith(
            "this request has no token: mosaicist studio takes changes from its own page")
        status, text = _request(app, "DELETE", "/api/runs/x", {"Origin": f"http://{HOST}"})
        assert status == 403 and RELOAD in _error(text)
        status, text = _request(app, "POST", "/api/runs", {"X-Mosaicist-Token": "old"})
        assert status == 403 and RELOAD in _error(text)
    finally:
        studio.close()


@pytest.fixture
def live_wall(tmp_path: Path) -> Any:
    from mosaicist.live import Event, Live

    target = tmp_path / "target.png"
    Image.fromarray(np.full((40, 60, 3), 120, np.uint8)).save(target)
    event = Event.open(tmp_path / "event", target=target, grid=(6, 4),
                       settings={"tile_px": 16, "match_px": 8})
    live = Live(event, rate=0)
    yield live
    live.close()


def test_the_live_wall_refuses_as_before_in_the_guards_words(live_wall: Any) -> None:
    # Its own rewording of the guard's answer (a second body written over the first) is
    # gone: the guard says each refusal itself.
    from mosaicist.live import make_live_app
    from mosaicist.live._app import NO_TOKEN, WRONG_ADMIN_TOKEN

    event = live_wall.event
    app = make_live_app(live_wall, host="127.0.0.1", port=8000)
    page = {"X-Mosaicist-Token": event.page_token}
    cases = [({}, NO_TOKEN), ({"X-Mosaicist-Token": ""}, NO_TOKEN),
             ({"Authorization": "Basic eDp5"}, NO_TOKEN),
             ({"Authorization": "Bearer a", "authorization": "Bearer b"}, NO_TOKEN),
             ({"Authorization": "Bearer not-it"}, WRONG_ADMIN_TOKEN),
             ({"Authorization": "Bearer not-it", "Origin": f"http://{HOST}"},
              WRONG_ADMIN_TOKEN),
             ({"Authorization": f"Bearer {event.page_token}"}, WRONG_ADMIN_TOKEN),
             ({"X-Mosaicist-Token": "old"}, RELOAD), ({"Origin": f"http://{HOST}"}, RELOAD),
             ({"X-Mosaicist-Token": "old", "Authorization": f"Bearer {event.admin_token}"},
              RELOAD),
             (page | {"Origin": "http://evil.example"}, ANOTHER_SITE),
             ({"Authorization": f"Bearer {event.admin_token}",
               "Origin": "http://evil.example"}, ANOTHER_SITE)]
    for headers, words in cases:
        status, text = _request(app, "POST", "/api/photos", headers)
        assert status == 403, headers
        assert words in _error(text), headers
    assert list(event.photos_folder.iterdir()) == []
    # The host's routes: a page's token or none is not the admin token.
    for headers in ({}, page, {"Authorization": "Bearer not-it"}, {"Origin": f"http://{HOST}"}):
        status, _ = _request(app, "POST", "/api/admin/pause", headers)
        assert status in (401, 403), headers
    assert not event.paused
