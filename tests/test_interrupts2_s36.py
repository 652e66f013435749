"""Session 36: a live wall's disk filling as SQLite reports it, and interrupts as processes start.

Each race found by signalling commands at random moments is reproduced here
at the step where it happens (a monkeypatched step, never a sleep).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from conftest import gradient, make_colour_folder
from PIL import Image
from test_lifecycle import _group_members
from test_live_api import Wall, photo_bytes

from mosaicist.live import Event

# --- a live wall whose -shm file cannot grow -----------------------------------------------


@pytest.fixture
def wall(tmp_path) -> Iterator[Wall]:
    target = tmp_path / "couple.png"
    Image.fromarray(gradient(90, 60)).save(target)
    made = Wall(tmp_path / "event", target)
    yield made
    made.close()


class _ShmCannotGrow:
    """The event's database connection, its next ``COMMIT`` failing as SQLite fails on a
    full disk where the log's ``-shm`` file cannot grow: "disk I/O error",
    ``SQLITE_IOERR_SHMSIZE``."""

    def __init__(self, connection) -> None:
        self.connection = connection
        self.failures = 1

    def execute(self, sql: str, *args: object):
        if sql == "COMMIT" and self.failures:
            self.failures -= 1
            error = sqlite3.OperationalError("disk I/O error")
            error.sqlite_errorcode = sqlite3.SQLITE_IOERR_SHMSIZE
            raise error
        return self.connection.execute(sql, *args)

    def __getattr__(self, name: str):
        return getattr(self.connection, name)


def test_a_shm_file_that_cannot_grow_is_a_full_disk_to_the_wall(wall):
    # SQLite's "disk I/O error" for a -shm file it could not grow was answered 500, as a
    # fault of the server's, where SQLITE_FULL was answered 507 (the disk is full).
    wall.event._db = _ShmCannotGrow(wall.event._db)
    refused = wall.upload(("a.jpg", photo_bytes(100)))
    assert refused.status_code == 507 and refused.json() == {"error": "the server's disk is full"}
    assert wall.stored() == [] and wall.event.version == 0
    placed = wall.upload(("b.jpg", photo_bytes(101)))
    assert placed.status_code == 201
    folder = wall.event.folder
    wall.close()
    again = Event.open(folder)
    try:
        assert again.version == 1 and list(again.photos) == [placed.json()["id"]]
    finally:
        again.close()


# --- an index interrupted while its decoding pool forks a worker ----------------------------

# `mosaicist index ARGS` whose decoding workers, forked and before their initializer (the
# moment they still answer signals with the parent's handlers), say so with a file and
# wait for a gate.
STARTING_DECODERS = '''
import os, sys, time
from pathlib import Path

from mosaicist.sources import folder

ready, gate = Path(os.environ["TEST_READY"]), Path(os.environ["TEST_GATE"])
watch = folder._watch_parent


def starting(parent_pid):
    ready.touch()
    deadline = time.monotonic() + 30
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    watch(parent_pid)


folder._watch_parent = starting
sys.argv = ["mosaicist", "index", *sys.argv[1:]]
from mosaicist.__main__ import run
run()
'''


@pytest.mark.skipif(sys.platform != "linux", reason="forked workers, POSIX process groups")
@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_the_decoding_pool_forks_a_worker_is_said_once(tmp_path, number):
    # A worker forked just before Ctrl+C still had the parent's handlers: "Exception in
    # initializer:" and a KeyboardInterrupt traceback came under "interrupted", and
    # SIGTERM printed a SystemExit traceback from every worker.
    tiles = make_colour_folder(tmp_path / "tiles", 20, size=8)
    script = tmp_path / "starting.py"
    script.write_text(STARTING_DECODERS)
    ready, gate = tmp_path / "ready", tmp_path / "gate"
    with open(tmp_path / "stderr.txt", "wb") as stderr_file:
        run = subprocess.Popen(
            [sys.executable, str(script), str(tiles), "--cache-dir", str(tmp_path / "cache"),
             "-q"],
            env={**os.environ, "MOSAICIST_THREADS": "2", "TEST_READY": str(ready),
                 "TEST_GATE": str(gate)}, stdout=subprocess.DEVNULL, stderr=stderr_file,
            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ready.exists(), (tmp_path / "stderr.txt").read_text()
        os.killpg(run.pid, number)  # as Ctrl+C in a terminal, or `kill` of the group
        # The workers meet the signal only now, as their initializer would run.
        gate.touch()
        run.wait(timeout=60)
        deadline = time.monotonic() + 30
        while _group_members(run.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _group_members(run.pid)
    finally:
        gate.touch()
        if run.poll() is None or _group_members(run.pid):
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    stderr = (tmp_path / "stderr.txt").read_text(errors="replace")
    said = "mosaicist: error: interrupted\n" if number == signal.SIGINT else ""
    assert (run.returncode, stderr) == (128 + number, said)


# --- Ctrl+C while a local Dask cluster starts its workers ------------------------------------

# Processes spawned, as Dask starts a local cluster's workers, from a thread started while
# the cluster starts: each writes whether it began with SIGINT blocked. The first one is
# also the first that multiprocessing's spawn starts in the process (which starts its
# resource tracker from that thread).
STARTING_WORKERS = '''
import signal, sys, threading
from pathlib import Path


def blocked():
    return signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])


def report(path):
    Path(path).write_text(str(blocked()))


def start_workers(folder):
    context = __import__("multiprocessing").get_context("spawn")
    for name in ("first", "second"):
        worker = context.Process(target=report, args=(str(Path(folder) / name),))
        worker.start()
        worker.join()


if __name__ == "__main__":
    from multiprocessing import util

    from mosaicist.distributed._cluster import _workers_start_with_interrupts_blocked

    spawn = util.spawnv_passfds
    with _workers_start_with_interrupts_blocked():
        loop = threading.Thread(target=start_workers, args=(sys.argv[1],))
        loop.start()
        loop.join()
        # Not in this process's main thread: a second Ctrl+C stops a start that hangs.
        Path(sys.argv[1], "main").write_text(str(blocked()))
    assert util.spawnv_passfds is spawn  # processes start as they did, after the start
'''


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signal masks")
def test_a_local_clusters_workers_start_with_ctrl_c_kept_from_them(tmp_path):
    # Ctrl+C reaches the whole process group: a worker process still starting (Python's
    # start-up, Dask's imports, before its preload ignores SIGINT) printed its
    # KeyboardInterrupt traceback ("Fatal Python error: init_import_site", or one from
    # spawn_main) under the run's one line.
    script = tmp_path / "cluster.py"
    script.write_text(STARTING_WORKERS)
    finished = subprocess.run([sys.executable, str(script), str(tmp_path)],
                              capture_output=True, text=True, timeout=60)
    assert finished.returncode == 0, finished.stderr
    assert (tmp_path / "first").read_text() == (tmp_path / "second").read_text() == "True"
    assert (tmp_path / "main").read_text() == "False"


def test_a_cluster_start_that_sigterm_failed_is_not_tried_again(monkeypatch):
    # SIGTERM to the process group ends the worker processes that are starting too
    # ("Nanny failed to start"): the run started the whole cluster again, up to twice,
    # before it stopped as asked.
    import logging

    pytest.importorskip("distributed")
    import distributed

    from mosaicist.distributed import _cluster
    from mosaicist.errors import MosaicistError

    starts: list[int] = []

    def failing_start(*args, **kwargs):
        if not starts:
            signal.raise_signal(signal.SIGTERM)  # held: noted, the start goes on
        starts.append(1)
        raise RuntimeError("Nanny failed to start.")

    def delivered(self) -> None:
        raise SystemExit(128 + self.received)  # as SIGTERM's unwinding; not this process's end

    monkeypatch.setattr(distributed, "LocalCluster", failing_start)
    monkeypatch.setattr(_cluster._HeldSignals, "deliver", delivered)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with pytest.raises(SystemExit) as stopped, _cluster._local_client(1, logging.ERROR):
        pass
    assert stopped.value.code == 143 and len(starts) == 1
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    # A worker that died as it started, with no stop asked, is still tried again.
    starts.append(0)  # no SIGTERM this time
    with pytest.raises(MosaicistError, match="cannot start a local Dask cluster"), \
            _cluster._local_client(1, logging.ERROR):
        pass
    assert len(starts) == 1 + 1 + _cluster.LOCAL_STARTS
