"""``mosaicist live`` killed during a burst of uploads: nothing acknowledged is lost.

The command runs in a child process on 127.0.0.1 (port 0). Guests upload
from several threads; the server is killed with SIGKILL while answers are
in flight, restarted on the same event folder, and every photo a guest was
told was received must be on the wall (in ``--final`` mode, in the very
cell it was given), the folder must hold nothing else, and the wall must
stay identical across further restarts, graceful or not.
"""

from __future__ import annotations

import io
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import gradient
from PIL import Image

GRID = "10x8"
START_SECONDS = 60


def photo(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.integers(0, 256, 3) + rng.normal(0, 25, (48, 64, 3)), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


class Server:
    """``mosaicist live`` in a child process, its links read from its announcement."""

    def __init__(self, folder: Path, *args: str) -> None:
        environment = dict(os.environ, PYTHONUNBUFFERED="1", MOSAICIST_THREADS="1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mosaicist", "live", *args, "--event", str(folder),
             "--port", "0", "--rate", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
            start_new_session=True)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.process.stdout],
                         daemon=True).start()
        deadline = time.monotonic() + START_SECONDS
        self.url = self.token = ""
        while not self.token:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.process.kill()
                raise AssertionError(
                    f"the server did not start: {self.process.stderr.read()}") from None
            if found := re.search(r"guests: (http://\S+/)", line):
                self.url = found.group(1).rstrip("/")
            if found := re.search(r"admin token: (\S+)", line):
                self.token = found.group(1)
        page = httpx.get(self.url + "/", timeout=10).text
        self.page_token = re.search(r'name="mosaicist-token" content="([^"]+)"', page).group(1)

    def wall(self) -> dict:
        return httpx.get(self.url + "/api/wall", timeout=10).json()

    def settled(self, quiet: float = 2.0, limit: float = 20.0) -> dict:
        """The wall once it has not changed for ``quiet`` seconds."""
        wall, since, deadline = self.wall(), time.monotonic(), time.monotonic() + limit
        while time.monotonic() - since < quiet and time.monotonic() < deadline:
            time.sleep(0.25)
            now = self.wall()
            if now != wall:
                wall, since = now, time.monotonic()
        return wall

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)


def burst(server: Server, kill_after: int, senders: int = 4) -> list[dict]:
    """Upload from ``senders`` threads; SIGKILL the server once ``kill_after`` are answered."""
    acknowledged: list[dict] = []
    lock = threading.Lock()
    killed = threading.Event()

    def send(sender: int) -> None:
        with httpx.Client(base_url=server.url, timeout=10,
                          headers={"X-Mosaicist-Token": server.page_token}) as client:
            for index in range(40):
                if killed.is_set():
                    return
                try:
                    answer = client.post("/api/photos", files={
                        "photo": (f"{sender}-{index}.jpg", photo(sender * 100 + index))})
                except httpx.HTTPError:
                    return  # the server is gone: this photo was never acknowledged
                if answer.status_code == 201:
                    with lock:
                        acknowledged.append(answer.json())
                        if len(acknowledged) >= kill_after and not killed.is_set():
                            killed.set()
                            server.kill()

    threads = [threading.Thread(target=send, args=(sender,)) for sender in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert killed.is_set(), "the burst ended before the kill"
    return acknowledged


@pytest.fixture
def target(tmp_path) -> Path:
    path = tmp_path / "logo.png"
    Image.fromarray(gradient(120, 90)).save(path)
    return path


@pytest.mark.parametrize("final", [True, False], ids=["final", "moving"])
def test_sigkill_during_a_burst_loses_nothing_acknowledged(tmp_path, target, final):
    folder = tmp_path / "event"
    first = Server(folder, str(target), "--grid", GRID, "--tile-px", "16", "--match-px", "8",
                   *(["--final"] if final else []))
    try:
        acknowledged = burst(first, kill_after=int(np.random.default_rng().integers(15, 30)))
    finally:
        if first.process.poll() is None:
            first.kill()
    assert first.process.returncode == -signal.SIGKILL

    resumed = Server(folder)
    try:
        wall = resumed.wall()
        cells = {(tile["row"], tile["col"]) for tile in wall["tiles"]}
        assert len(cells) == len(wall["tiles"])  # one photo per cell
        on_wall = {tile["id"]: (tile["row"], tile["col"]) for tile in wall["tiles"]}
        for answer in acknowledged:
            assert answer["id"] in on_wall, "an acknowledged photo was lost"
            status = httpx.get(f"{resumed.url}/api/photos/{answer['id']}", timeout=10).json()
            assert status["status"] == "placed"
            if final:
                assert on_wall[answer["id"]] == (answer["row"], answer["col"])
        # Only what the wall holds is kept: unacknowledged leftovers were tidied.
        stored = {path.stem for path in (folder / "photos").iterdir()}
        assert stored == set(on_wall)
        assert wall["version"] >= len(wall["tiles"])
        settled = resumed.settled()  # a moving wall re-optimises once it is quiet
        assert resumed.stop() == 0
    finally:
        if resumed.process.poll() is None:
            resumed.kill()
    if final:
        assert settled == wall

    # Graceful or not, a restart gives the same wall back.
    again = Server(folder)
    try:
        assert again.wall() == settled
        again.kill()
    finally:
        if again.process.poll() is None:
            again.kill()
    last = Server(folder)
    try:
        assert last.wall() == settled
    finally:
        last.stop()
    for server in (first, resumed, again, last):
        assert server.process.poll() is not None


#: A guest's phone in a child process: sends photos ``START..STOP`` to the wall (resumed, or
#: made when new) one by one through :meth:`Live.accept`, each when a line comes on stdin,
#: printing each answer once it is back. No planner: placements are then a function of the
#: photos and their order alone.
PHONE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from test_live_lifecycle import photo
from mosaicist.live import Event, Live
folder, target, start, stop = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
event = Event.open(folder, target=target, grid=(5, 4), settings={"tile_px": 16, "match_px": 8},
                   final=True)
live = Live(event, rate=0)
print("ready", flush=True)
for seed in range(start, stop):
    if not sys.stdin.readline():
        break
    (answer,) = live.accept([(photo(seed), f"{seed}.jpg")], "phone")
    print(json.dumps(dict(answer, seed=seed)), flush=True)
live.close()
"""


def run_phone(folder: Path, target: Path, start: int, stop: int,
              kill_after: int | None = None, delay: float = 0.0) -> list[dict]:
    """The answers the phone got; SIGKILL it ``delay`` s into the photo after its
    ``kill_after``-th answer."""
    import json

    process = subprocess.Popen(
        [sys.executable, "-c", PHONE, str(Path(__file__).parent), str(folder), str(target),
         str(start), str(stop)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=dict(os.environ, MOSAICIST_THREADS="1"),
        start_new_session=True)
    answers: list[dict] = []
    try:
        assert process.stdin is not None and process.stdout is not None
        assert process.stdout.readline().startswith("ready")
        for _ in range(start, stop):
            process.stdin.write("\n")
            process.stdin.flush()
            if kill_after is not None and len(answers) >= kill_after:
                time.sleep(delay)  # somewhere in the receiving of this photo, or after
                process.kill()
                break
            answers.append(json.loads(process.stdout.readline()))
        process.stdin.close()
        process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    if kill_after is None:
        assert process.returncode == 0, process.stderr.read() if process.stderr else ""
    return answers


def test_killed_at_random_moments_the_wall_is_the_uninterrupted_one(tmp_path, target):
    # The phone resends the photo it was sending when the wall died (its answer never came),
    # as a guest would: it must be that upload, not a second copy.
    from mosaicist.live import Event, Live

    rng = np.random.default_rng(2026)
    folder, photos = tmp_path / "event", 26  # 20 cells: the last photos overflow
    told: dict[int, dict] = {}
    start = 0
    for _ in range(4):
        # A photo takes some milliseconds: kills land before, during and after its commit.
        answers = run_phone(folder, target, start, photos, int(rng.integers(1, 5)),
                            float(rng.uniform(0.0, 0.015)))
        told.update({answer["seed"]: answer for answer in answers})
        start = max(told) + 1  # the one in flight is sent again
    told.update({answer["seed"]: answer for answer in run_phone(folder, target, start, photos)})
    assert sorted(told) == list(range(photos))

    uninterrupted = Event.open(tmp_path / "whole", target=target, grid=(5, 4),
                               settings={"tile_px": 16, "match_px": 8}, final=True)
    live = Live(uninterrupted, rate=0)
    try:
        expected = {seed: live.accept([(photo(seed), f"{seed}.jpg")], "phone")[0]
                    for seed in range(photos)}
    finally:
        live.close()
    event = Event.open(folder)
    try:
        guests = [p for p in event.photos.values() if p.origin == "guest"]
        assert len(guests) == photos  # each photo once, none lost, none twice
        for seed, answer in told.items():
            now = event.answer(event.photo(answer["id"]))
            assert now == {key: value for key, value in answer.items() if key != "seed"}
            shown = {key: value for key, value in expected[seed].items() if key != "id"}
            assert {key: value for key, value in now.items() if key != "id"} == shown
        kept = {p.id for p in guests if p.status in ("placed", "overflow")}
        assert {path.stem for path in event.photos_folder.iterdir()} == kept
        assert {path.name for path in event.tiles_folder.iterdir()} == {
            event.tile_path(p).name for p in guests if p.status == "placed"}
        assert event.version == sum(p.status == "placed" for p in guests)
    finally:
        event.close()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_the_same_signal_twice_is_one_stop_exit_0(tmp_path, target, stop):
    """Ctrl+C twice, or GNU timeout's second SIGTERM, 0.1 s apart: one clean stop.

    The second was raised inside the server's stop: the clean-up was cut
    short, exit 130 ("interrupted"), once SIGABRT from a thread left running.
    """
    first = Server(tmp_path / "event", str(target), "--grid", GRID)
    httpx.post(first.url + "/api/photos", files={"photo": ("a.jpg", photo(1), "image/jpeg")},
               headers={"X-Mosaicist-Token": first.page_token}, timeout=30)
    first.process.send_signal(stop)
    time.sleep(0.1)
    first.process.send_signal(stop)
    assert first.process.wait(30) == 0
    rest = first.process.stderr.read()
    assert "Traceback" not in rest and "interrupted" not in rest, rest
    again = Server(tmp_path / "event")
    try:
        assert len(again.settled()["tiles"]) == 1
    finally:
        assert again.stop() == 0


def test_a_server_stop_dropped_where_it_was_raised_is_delivered_again():
    """A second signal before the first interrupt was seen raises it again, once seen not.

    In its first second a wall's stop can land where Python drops what a
    handler raised (a module compiled for an import); ignoring the repeats
    then left the server running for good.
    """
    from mosaicist import _runtime

    previous = signal.signal(signal.SIGTERM, _runtime.stop_serving)
    try:
        _runtime.forget_server_stop()
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)
        # Seen (it passed through this frame): the same stop, ignored.
        signal.raise_signal(signal.SIGTERM)
        assert _runtime.server_stop_asked()
        _runtime._server_stop[0][1].seen = False  # as if dropped
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)
    finally:
        sys.settrace(None)
        signal.signal(signal.SIGTERM, previous)
        _runtime.forget_server_stop()
