"""Hostile batches: videos cut short, and Dask runs that lose a worker or their scheduler."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_colour_folder
from conftest import shifted_picture as _picture
from PIL import Image

from mosaicist.batch import read_frames
from mosaicist.errors import MosaicistError

av = pytest.importorskip("av")

#: Seconds any wait on a subprocess may take.
WAIT_SECONDS = 60


def _noisy_frames(count: int, width: int = 48, height: int = 32) -> list[np.ndarray]:
    """Frames that do not compress to nothing: every packet has data of its own."""
    rng = np.random.default_rng(4)
    return [np.clip(_picture(width, height, index).astype(np.int16)
                    + rng.integers(-30, 30, (height, width, 3)), 0, 255).astype(np.uint8)
            for index in range(count)]


def _faststart_mp4(path: Path, frames: list[np.ndarray]) -> list[tuple[int, int]]:
    """An MP4 with its index first (as phones and the web write them); its packets' places."""
    height, width = frames[0].shape[:2]
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream(codec, rate=12)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for picture in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        return sorted((packet.pos, packet.size) for packet in container.demux(video=0)
                      if packet.size)


@pytest.mark.parametrize("cut", ["between frames", "amid a frame"])
def test_a_video_cut_short_gives_its_frames_then_says_so(tmp_path, cut):
    # Decoded with threads, a file cut short ended without a word where its data did: a
    # batch made the frames there were and encoded a video of the first seconds as if it
    # were the clip ("3 targets: 3 made, 0 failed" of a clip of 12 frames).
    whole = tmp_path / "whole.mp4"
    places = _faststart_mp4(whole, _noisy_frames(12))
    assert len(list(read_frames(whole))) == 12
    position, size = places[6]
    end = position if cut == "between frames" else position + size // 2
    short = tmp_path / "short.mp4"
    short.write_bytes(whole.read_bytes()[:end])
    given = []
    with pytest.raises(MosaicistError) as raised:
        given.extend(read_frames(short))
    assert str(raised.value) == (f"{short}: cannot read video: the file is cut short, its last "
                                 "frames are missing")
    assert 1 <= len(given) <= 6  # those whose data is whole came first
    assert all(frame.shape == (32, 48, 3) for frame in given)


# -- Dask ---------------------------------------------------------------------------------


class _Recorded:
    """A context manager that notes the exception its block ended with."""

    def __init__(self) -> None:
        self.ended_with: BaseException | None = None
        self.closed = False

    def __enter__(self) -> _Recorded:
        return self

    def __exit__(self, kind, error, trace) -> None:
        self.ended_with, self.closed = error, True


def _runner(client=None, *managers):
    pytest.importorskip("distributed")
    from mosaicist.batch._run import _DaskRunner

    runner = _DaskRunner.__new__(_DaskRunner)
    runner.client = client
    runner._stack = contextlib.ExitStack()
    for manager in managers:
        runner._stack.enter_context(manager)
    return runner


def test_a_dask_batch_stopped_by_an_error_closes_its_client_with_it():
    # The client of a run that lost its scheduler closes quietly only when told why its
    # block ends (client_for); the batch closed it as a run that had succeeded, and Dask
    # logged its cancelled reconnecting as an ERROR with a traceback above the one line.
    client = _Recorded()
    runner = _runner(None, client)
    lost = MosaicistError("lost the connection to the Dask scheduler")
    try:
        raise lost
    except MosaicistError:
        runner.abort()
    assert client.closed and client.ended_with is lost


def test_a_dask_batch_that_finishes_closes_its_client_as_finished():
    client = _Recorded()
    _runner(None, client).close()
    assert client.closed and client.ended_with is None


class _Future:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def result(self):
        raise self.error


def test_a_dask_job_whose_result_cannot_be_gathered_lost_the_scheduler():
    # A job done as the scheduler died: gathering its result failed with Dask's
    # CommClosedError, reported as that frame's failure "its worker failed: CommClosedError:
    # in <TCP (closed) ConnectionPool.gather local=tcp://...>", and the run went on.
    pytest.importorskip("distributed")
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError

    runner = _runner()
    for error in (CommClosedError("in <TCP (closed) ConnectionPool.gather>: Stream is closed"),
                  FutureCancelledError("key", "scheduler-connection-lost")):
        with pytest.raises(MosaicistError) as raised:
            runner.result(_Future(error))
        assert str(raised.value) == ("lost the connection to the Dask scheduler; its tasks are "
                                     "cancelled; the outputs made are kept")


class _Client:
    def __init__(self, status: str, error: BaseException | None = None) -> None:
        self.status, self.error, self.sent = status, error, []

    def scatter(self, data, hash=True):
        if self.error is not None:
            raise self.error
        return data

    def submit(self, function, *arguments, pure=True):
        self.sent.append(arguments)
        return arguments


def test_a_dask_job_sent_after_the_scheduler_is_gone_ends_the_run_in_one_line():
    # A video frame's scatter waited 10 s for the lost scheduler, then ended the run with
    # Dask's own words: "mosaicist: error: Timed out trying to connect to tcp://...".
    from mosaicist.batch._run import _Work
    from mosaicist.batch._worker import Job
    from mosaicist.options import MosaicOptions

    job = Job("clip.mp4 frame 3", None, "/out/clip-000003.png", "/tiles", MosaicOptions(), "/c")
    work = _Work(job, np.zeros((4, 4, 3), np.uint8), None)  # type: ignore[arg-type]
    for client in (_Client("connecting"),
                   _Client("running", OSError("Timed out trying to connect to tcp://x:1"))):
        with pytest.raises(MosaicistError, match="^lost the connection to the Dask scheduler"):
            _runner(client).submit(work)
        assert client.sent == []
    running = _Client("running")
    _runner(running).submit(work)
    assert len(running.sent) == 1


#: A Dask worker preload: the target named "killer" ends its worker process, as the
#: kernel's out-of-memory killer would.
_KILLER_PRELOAD = '''
import os

import mosaicist.batch._worker as worker_module

original = getattr(worker_module, "_original_make_target", worker_module.make_target)
worker_module._original_make_target = original


def make_target(job, frame=None):
    if "killer" in job.name:
        os._exit(1)
    return original(job, frame)


worker_module.make_target = make_target
'''


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Dask's nannies and signals")
def test_a_target_that_kills_its_local_dask_worker_fails_alone_in_one_line(tmp_path):
    # Its failure was Dask's paragraph ("its worker failed: KilledWorker: Attempted to run
    # task 'make_target-...' on 4 different workers ... see https://..."), under the local
    # scheduler's own ERROR log lines ("Task ... marked as failed because 4 workers died");
    # and a target beside it on the worker, charged with the same deaths, failed with it.
    pytest.importorskip("distributed")
    tiles = make_colour_folder(tmp_path / "tiles", 12, size=8)
    targets = tmp_path / "targets"
    targets.mkdir()
    for name in ("a-killer", "b", "c"):
        Image.fromarray(_picture(24, 16)).save(targets / f"{name}.png")
    preload = tmp_path / "killer_preload.py"
    preload.write_text(_KILLER_PRELOAD)
    env = dict(os.environ, MOSAICIST_CACHE_DIR=str(tmp_path / "cache"),
               DASK_DISTRIBUTED__WORKER__PRELOAD=f'["{preload}"]',
               # Failed at its first death (Dask's default is 3 more tries, 4 deaths).
               DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="0")
    done = subprocess.run([sys.executable, "-m", "mosaicist", "batch", str(targets), "--tiles",
                           str(tiles), "-o", str(tmp_path / "out"), "--cell", "8", "--tile-px",
                           "8", "-q", "--scheduler", "local:1"],
                          capture_output=True, text=True, env=env, timeout=WAIT_SECONDS)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"mosaicist: error: {targets / 'a-killer.png'}: the worker process making it died "
        "each time it was tried (out of memory?)"], done.stderr
    assert sorted(path.name for path in (tmp_path / "out").glob("*.png")) == ["b.png", "c.png"]


def test_a_job_whose_dask_workers_all_died_is_one_plain_line():
    pytest.importorskip("distributed")
    from distributed.scheduler import KilledWorker

    from mosaicist.batch._run import _lost_job

    killed = KilledWorker("make_target-2f6d", "tcp://127.0.0.1:40000", 3)
    assert _lost_job(killed) == ("the worker process making it died each time it was tried "
                                 "(out of memory?)")
    assert _lost_job(ValueError("odd")) == "its worker failed: ValueError: odd"
