"""Bursts of uploads against the live wall's and the studio's servers, on 127.0.0.1 only.

After a speech, sixty guests may send a photo at once. Each upload waits for
one of a few decoding slots; the wait used to happen inside a worker thread
of the server's pool (40 threads), so a burst took every thread and the
display, the host's page and every other route that reads a file stalled
until the burst had been decoded. Here the decoding is held (a monkeypatched
decoder waits for a signal), sixty uploads are sent at once, and while they
wait the display's and the host's routes must answer; then the decoding goes
on and every upload acknowledged must be on record. Uploads beyond the
server's queue are refused at once with 503 and ``Retry-After``, without
their bodies being kept. ``HEAD`` on the host's exports answers its headers
without writing the file.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
from conftest import gradient
from PIL import Image
from starlette.requests import Request

from mosaicist.live import Event, Live, make_live_app
from mosaicist.live import _app as live_app
from mosaicist.live import _event as live_event
from mosaicist.studio import Studio, make_studio_app
from mosaicist.studio import _app as studio_app
from mosaicist.web import UploadQueue, WebError, WebServer, bind

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

#: Uploads sent at once: a room of guests after a speech (under the server's 64 connections).
BURST = 60
#: Seconds a route may take to answer while the burst waits: far more than it needs.
PROMPT_SECONDS = 2.0


def photo_bytes(seed: int, size: tuple[int, int] = (40, 30)) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.integers(0, 256, 3) + rng.normal(0, 20, (size[1], size[0], 3)),
                     0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


class BodiesCounted:
    """ASGI middleware counting the POST requests whose bodies the app has read whole."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.count = 0
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return

        async def counted() -> Any:
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                with self._lock:
                    self.count += 1
            return message

        await self.app(scope, counted, send)

    def wait_for(self, count: int, seconds: float = 20.0) -> None:
        deadline = time.monotonic() + seconds
        while self.count < count:
            assert time.monotonic() < deadline, f"only {self.count} of {count} bodies arrived"
            time.sleep(0.01)


class Gate:
    """Holds every call of a function until opened; counts the calls that came."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.calls = 0
        self._lock = threading.Lock()

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def held(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls += 1
            self.opened.wait(30)
            return function(*args, **kwargs)

        return held


@contextlib.contextmanager
def served(app: Any, port: int, listener: Any, on_stop: Callable[[], None]
           ) -> Iterator[BodiesCounted]:
    counted = BodiesCounted(app)
    server = WebServer(counted, listener, on_stop=on_stop).start()
    try:
        yield counted
    finally:
        server.stop()


@contextlib.contextmanager
def live_wall(folder: Path, *, grid: tuple[int, int] = (8, 8)) -> Iterator[dict[str, Any]]:
    target = folder / "target.png"
    Image.fromarray(gradient(80, 60)).save(target)
    event = Event.open(folder / "event", target=target, grid=grid,
                       settings={"tile_px": 16, "match_px": 8})
    live = Live(event, rate=0)  # every guest here comes from 127.0.0.1
    listener = bind("127.0.0.1", 0)
    port = listener.getsockname()[1]
    try:
        with served(make_live_app(live, host="127.0.0.1", port=port), port, listener,
                    live.begin_stop) as counted:
            event.start()
            yield {"live": live, "event": event, "base": f"http://127.0.0.1:{port}",
                   "bodies": counted}
    finally:
        live.close()


@contextlib.contextmanager
def studio_server(folder: Path) -> Iterator[dict[str, Any]]:
    (folder / "home").mkdir(parents=True)
    studio = Studio(cache_dir=folder / "cache", home=folder / "home")
    listener = bind("127.0.0.1", 0)
    port = listener.getsockname()[1]
    try:
        with served(make_studio_app(studio, host="127.0.0.1", port=port), port, listener,
                    studio.begin_stop) as counted:
            yield {"studio": studio, "base": f"http://127.0.0.1:{port}", "bodies": counted}
    finally:
        studio.close()


def burst(base: str, token: str, route: str, field: str, photos: list[bytes]
          ) -> tuple[ThreadPoolExecutor, httpx.Client, list[Any]]:
    """Send every photo at once, each in its own request; the pool, client and futures."""
    client = httpx.Client(base_url=base, timeout=30, headers={"X-Mosaicist-Token": token},
                          limits=httpx.Limits(max_connections=len(photos)))
    pool = ThreadPoolExecutor(len(photos))
    futures = [pool.submit(client.post, route, files={field: (f"p{index}.jpg", data)})
               for index, data in enumerate(photos)]
    return pool, client, futures


def unanswered(base: str, routes: list[str], headers: dict[str, str] | None = None
               ) -> list[str]:
    """The routes that did not answer 200 within :data:`PROMPT_SECONDS` (stops at the first)."""
    with httpx.Client(base_url=base, timeout=PROMPT_SECONDS, headers=headers) as client:
        for route in routes:
            try:
                status = client.get(route).status_code
            except httpx.TimeoutException:
                return [f"{route}: no answer within {PROMPT_SECONDS:g} s"]
            if status != 200:
                return [f"{route}: {status}"]
    return []


def busy_refusal(answer: httpx.Response) -> bool:
    """Whether ``answer`` is the server's "busy, send again soon" refusal."""
    return (answer.status_code == 503 and int(answer.headers["Retry-After"]) > 0
            and "busy" in answer.json()["error"])


# --- the live wall ----------------------------------------------------------------------------


def test_the_display_and_the_host_are_answered_while_a_burst_of_uploads_waits(
        tmp_path, monkeypatch):
    gate = Gate()
    monkeypatch.setattr(live_event.Event, "prepare", gate.wrap(live_event.Event.prepare))
    photos = [photo_bytes(seed) for seed in range(BURST)]
    with live_wall(tmp_path) as wall:
        event, base = wall["event"], wall["base"]
        pool, client, futures = burst(base, event.page_token, "/api/photos", "photo", photos)
        try:
            wall["bodies"].wait_for(BURST)
            time.sleep(0.2)  # the last bodies read turn into waiting uploads
            stalled = unanswered(base, ["/display", "/assets/display.js", "/api/wall",
                                        "/api/target.jpg", "/api/info"])
            stalled += unanswered(base, ["/admin", "/api/admin/state"],
                                  {"Authorization": f"Bearer {event.admin_token}"})
        finally:
            gate.opened.set()
            answers = [future.result() for future in futures]
            pool.shutdown()
            client.close()
        assert not stalled, stalled
        taken = [answer for answer in answers if answer.status_code in (201, 202)]
        assert all(answer in taken or busy_refusal(answer) for answer in answers), [
            (answer.status_code, answer.text) for answer in answers if answer not in taken]
        assert len(taken) >= live_app.UPLOADS_QUEUED
        # Nothing acknowledged is lost, nothing refused is kept.
        ids = {answer.json()["id"] for answer in taken}
        assert len(ids) == len(taken) == event.counts()["received"]
        assert len(list(event.photos_folder.iterdir())) == len(taken)


def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_uploads_past_the_queue_are_refused_at_once_and_the_others_kept(tmp_path, monkeypatch):
    gate = Gate()
    monkeypatch.setattr(live_event.Event, "prepare", gate.wrap(live_event.Event.prepare))
    monkeypatch.setattr(live_app, "UPLOADS_QUEUED", 2)
    photos = [photo_bytes(100 + seed) for seed in range(6)]
    with live_wall(tmp_path) as wall:
        event, live = wall["event"], wall["live"]
        pool, client, futures = burst(wall["base"], event.page_token, "/api/photos", "photo",
                                      photos)
        try:
            # Refused while the two let in are still held at their decoding: a refusal
            # waits for nothing.
            refused_in_time = wait_until(lambda: sum(future.done() for future in futures) >= 4)
            held = live.uploads.held
        finally:
            gate.opened.set()
            answers = [future.result() for future in futures]
            pool.shutdown()
            client.close()
        assert refused_in_time, [answer.status_code for answer in answers]
        assert held[0] == 2 and 0 < held[1] < 2 * 4096, held
        refused = [answer for answer in answers if answer.status_code == 503]
        taken = [answer for answer in answers if answer.status_code in (201, 202)]
        assert len(refused) == 4 and len(taken) == 2, [answer.status_code for answer in answers]
        for answer in refused:
            assert busy_refusal(answer) and answer.headers["Retry-After"] == str(
                live_app.BUSY_RETRY_SECONDS)
            assert list(answer.json()) == ["error"]
            assert answer.json()["error"].startswith("the wall is busy")
        assert event.counts()["received"] == 2 == len(list(event.photos_folder.iterdir()))
        assert live.uploads.held == (0, 0)


def test_head_on_the_hosts_downloads_writes_nothing(tmp_path):
    with live_wall(tmp_path, grid=(4, 3)) as wall:
        event = wall["event"]
        host = httpx.Client(base_url=wall["base"], timeout=30,
                            headers={"Authorization": f"Bearer {event.admin_token}"})
        with host:
            # Nothing on the wall yet: the sheets are refused as GET refuses them.
            assert host.head("/api/admin/sheets.pdf").status_code == 400
            guest = {"X-Mosaicist-Token": event.page_token}
            assert httpx.post(f"{wall['base']}/api/photos", headers=guest, files={
                "photo": ("a.jpg", photo_bytes(7))}).status_code == 201
            for route, media_type, name in (
                    ("/api/admin/export?format=png", "image/png", "target-wall.png"),
                    ("/api/admin/export?format=tiff", "image/tiff", "target-wall.tif"),
                    ("/api/admin/export?format=dzi", "application/zip",
                     "target-wall-deepzoom.zip"),
                    ("/api/admin/sheets.pdf?tile_cm=4", "application/pdf",
                     "target-sheets-a4-4cm.pdf"),
                    ("/api/admin/underlay.pdf?paper=letter", "application/pdf",
                     "target-underlay-letter-5cm.pdf")):
                answer = host.head(route)
                assert answer.status_code == 200, (route, answer.status_code)
                assert answer.headers["content-type"] == media_type, route
                assert f'filename="{name}"' in answer.headers["content-disposition"], route
                assert answer.headers.get("content-length") != "0", route
            for route in ("/api/admin/export?format=gif", "/api/admin/sheets.pdf?tile_cm=25",
                          "/api/admin/underlay.pdf?paper=a3"):
                assert host.head(route).status_code == 400, route
            assert httpx.head(f"{wall['base']}/api/admin/export").status_code == 401
            assert list(event.exports_folder.iterdir()) == []
            # GET still makes the file.
            answer = host.get("/api/admin/export?format=png")
            assert answer.status_code == 200 and answer.content.startswith(b"\x89PNG")


# --- the queue itself -------------------------------------------------------------------------


def upload_request(body: bytes, *, declared: bool = True) -> tuple[Request, list[bytes]]:
    """A request whose body comes in 100-byte chunks; the request and the chunks left."""
    chunks = [body[start:start + 100] for start in range(0, len(body), 100)] or [b""]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    headers = [(b"content-length", str(len(body)).encode())] if declared else []
    scope = {"type": "http", "method": "POST", "path": "/api/photos", "headers": headers,
             "query_string": b""}
    return Request(scope, receive), chunks


def test_the_upload_queue_bounds_uploads_and_their_bytes():
    queue = UploadQueue(decoders=1, queued=3, held_bytes=1000, largest=600, busy="busy now",
                        retry_after=7)

    async def refused(body: bytes, *, declared: bool = True) -> WebError:
        request, left = upload_request(body, declared=declared)
        with pytest.raises(WebError) as caught:
            async with queue.admitted(request):
                raise AssertionError("let in")
        assert left == [], "the refused body was not read to its end"
        return caught.value

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(queue.admitted(upload_request(b"a" * 500)[0]))
            assert queue.held == (1, 500)
            error = await refused(b"b" * 501)  # over the bytes left
            assert (error.status_code, error.message) == (503, "busy now")
            assert error.headers == {"Retry-After": "7"}
            await stack.enter_async_context(queue.admitted(upload_request(b"c" * 400)[0]))
            # A body of unknown length counts as the largest.
            assert (await refused(b"d", declared=False)).status_code == 503
            await stack.enter_async_context(queue.admitted(upload_request(b"e" * 100)[0]))
            assert queue.held == (3, 1000)
            assert (await refused(b"")).status_code == 503  # over the count
        assert queue.held == (0, 0)
        request, _ = upload_request(b"f", declared=False)
        async with queue.admitted(request):
            assert queue.held == (1, 600)

    anyio.run(main)


def test_decoding_waits_on_the_event_loop_and_runs_in_its_own_threads():
    queue = UploadQueue(decoders=1, queued=3, held_bytes=1000, largest=600, busy="busy")
    decoding = threading.Event()
    release = threading.Event()

    def slow() -> str:
        decoding.set()
        release.wait(10)
        return "slow"

    async def main() -> None:
        shared = anyio.to_thread.current_default_thread_limiter()
        shared.total_tokens = 1  # the shared pool: one thread
        results: list[str] = []
        async with anyio.create_task_group() as group:
            async def decode(function: Callable[[], str]) -> None:
                results.append(await queue.decode(function))

            group.start_soon(decode, slow)
            while not decoding.is_set():
                await anyio.sleep(0.01)
            group.start_soon(decode, lambda: "next")  # waits for the one decoder
            await anyio.sleep(0.05)
            # Neither the decoding nor the wait for it holds the shared thread.
            with anyio.fail_after(5):
                assert await anyio.to_thread.run_sync(lambda: "other route") == "other route"
            assert results == []
            release.set()
        assert results == ["slow", "next"]

    anyio.run(main)


# --- the studio -------------------------------------------------------------------------------


def test_the_studio_answers_while_a_burst_of_uploads_waits(tmp_path, monkeypatch):
    gate = Gate()
    monkeypatch.setattr(studio_app, "accept_target", gate.wrap(studio_app.accept_target))
    # Every upload let in to wait (more than the server's 40 worker threads), none refused.
    monkeypatch.setattr(studio_app, "UPLOADS_QUEUED", BURST)
    photos = [photo_bytes(seed) for seed in range(BURST)]
    with studio_server(tmp_path) as served_studio:
        studio, base = served_studio["studio"], served_studio["base"]
        pool, client, futures = burst(base, studio.token, "/api/targets", "file", photos)
        try:
            served_studio["bodies"].wait_for(BURST)
            time.sleep(0.2)
            stalled = unanswered(base, ["/", "/assets/studio.js", "/api/state", "/api/runs"])
        finally:
            gate.opened.set()
            answers = [future.result() for future in futures]
            pool.shutdown()
            client.close()
        assert not stalled, stalled
        assert [answer.status_code for answer in answers] == [201] * BURST
        stored = {path.stem for path in studio.targets.glob("*.jpg")}
        assert {answer.json()["id"] for answer in answers} == stored
        assert len(stored) == BURST
