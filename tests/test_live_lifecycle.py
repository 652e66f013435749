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
