"""Running on a Dask cluster: a scheduler lost between tasks, workers of little memory.

A remote scheduler killed mid-run was said in one line only while the run
waited on a task; lost between two stages of the run (this process busy, or
between a task's end and its result's gathering), it was a misleading line
("has no workers", with its address left out, or "a worker could not write
the index"), Dask's names, or a traceback, under a log line of Dask's.

Workers started with a small ``--memory-limit`` (``dask worker --memory-limit
200MB``) were restarted by their nannies for every group of rows of a large
render: it failed, where groups of fewer rows fit.

The schedulers here run in this process (``processes=False``, no worker):
a fraction of a second to start, none to stop.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import pytest
from conftest import make_colour_folder, noisy_target

from mosaicist import make_mosaic
from mosaicist.distributed import _cluster, client_for, require_workers, write_on_cluster
from mosaicist.errors import MosaicistError
from mosaicist.options import MosaicOptions
from mosaicist.render import placements_renderer

# The extra "dask" (in "test"); mosaicist.distributed itself imports it only when used.
distributed = pytest.importorskip("distributed")


@pytest.fixture
def quick_connect(monkeypatch):
    """Connections (and a lost scheduler's reconnecting) that give up within a second."""
    monkeypatch.setattr(_cluster, "CONNECT_SECONDS", 0.5)
    monkeypatch.setattr(_cluster, "_ANSWER_SECONDS", 0.5)


def in_process_scheduler():
    """A scheduler on 127.0.0.1 without workers, in this process (closed by the caller)."""
    return distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp://",
                                    host="127.0.0.1", dashboard_address="127.0.0.1:0")


def wait_for_status(client, status: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while client.status != status and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.status == status


class Records(logging.Handler):
    """Every log record that reaches a logger's handlers."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("when", ["reconnecting", "closed"])
def test_a_scheduler_lost_before_a_stage_is_said_as_lost(quick_connect, when):
    # `mosaicist make --scheduler tcp://...` with the scheduler killed while this process
    # matched: "the Dask scheduler at  has no workers; start some with 'dask worker '",
    # under Dask's "ERROR - Failed to reconnect to scheduler after 10.00 seconds"; a
    # client already closed by then failed with a traceback (AttributeError).
    cluster = in_process_scheduler()
    records = Records()
    client_log = logging.getLogger("distributed.client")
    client_log.addHandler(records)
    try:
        address = cluster.scheduler_address
        with pytest.raises(MosaicistError) as raised, client_for(address) as client:
            cluster.close()
            wait_for_status(client, "connecting" if when == "reconnecting" else "closed")
            require_workers(client, 0.2)
        assert str(raised.value) == (f"lost the connection to the Dask scheduler at {address}; "
                                     f"its tasks are cancelled")
        assert not [record.getMessage() for record in records.records
                    if record.levelno >= logging.ERROR]
    finally:
        client_log.removeHandler(records)
        cluster.close()


class FakeClient:
    """What the run asks of a Dask client, for a client in a given state."""

    def __init__(self, status: str = "running", nthreads_error: BaseException | None = None,
                 memory_limit: int = 0, wait_error: BaseException | None = None):
        self.status = status
        self.nthreads_error = nthreads_error
        self.wait_error = wait_error
        self.memory_limit = memory_limit
        self.scheduler = type("Rpc", (), {"address": "tcp://10.0.0.5:8786"})()
        self.submitted: list[tuple] = []

    def wait_for_workers(self, count: int, timeout: float) -> None:
        if self.wait_error is not None:
            raise self.wait_error

    def run(self, *args, **kwargs) -> dict:
        return {}

    def nthreads(self, **kwargs) -> dict:
        if self.nthreads_error is not None:
            raise self.nthreads_error
        return {"tcp://10.0.0.6:4000": 1}

    def scheduler_info(self, n_workers: int = 5) -> dict:
        return {"workers": {"tcp://10.0.0.6:4000": {"memory_limit": self.memory_limit}}}

    def submit(self, function, *arguments, **options) -> DoneFuture:
        """Run the task here, at once (its arguments noted)."""
        self.submitted.append(arguments)
        return DoneFuture(function(*arguments), self)


class DoneFuture:
    """A task of :class:`FakeClient`, run as it was submitted."""

    def __init__(self, value, client: FakeClient) -> None:
        self.value, self.client = value, client

    def done(self) -> bool:
        return True

    def result(self, timeout=None):
        return self.value

    def cancel(self) -> None:
        pass


class FailedFuture:
    """A finished task whose result cannot be had (``error`` raised), of ``client``."""

    def __init__(self, error: BaseException, client: FakeClient) -> None:
        self.error = error
        self.client = client

    def done(self) -> bool:
        return True

    def result(self, timeout=None):
        raise self.error


def test_a_scheduler_lost_as_a_result_is_gathered_is_said_as_lost():
    # The result's gathering failed with Dask's CommClosedError, an OSError: the index
    # said "a worker could not write the index: in <TCP (closed) ConnectionPool.gather
    # local=tcp://127.0.0.1:47506 remote=tcp://127.0.0.1:38786>: Stream is closed".
    from distributed.comm import CommClosedError

    closed = CommClosedError("in <TCP (closed) ConnectionPool.gather local=tcp://127.0.0.1:1 "
                             "remote=tcp://10.0.0.5:8786>: Stream is closed")
    with pytest.raises(MosaicistError) as raised:
        _cluster.task_result(FailedFuture(closed, FakeClient()), "killed",
                             kept="; the parts finished are kept")
    assert str(raised.value) == ("lost the connection to the Dask scheduler at "
                                 "tcp://10.0.0.5:8786; its tasks are cancelled; the parts "
                                 "finished are kept")


def test_a_task_cancelled_by_a_client_that_gave_up_on_its_scheduler_is_said_as_lost():
    # A task submitted while the client reconnected is cancelled without a reason as it
    # gives up: "the Dask scheduler at ... cancelled a task (unknown)".
    from distributed.client import FutureCancelledError

    cancelled = FutureCancelledError("key", None)
    with pytest.raises(MosaicistError) as raised:
        _cluster.task_result(FailedFuture(cancelled, FakeClient("closed")), "killed")
    assert str(raised.value) == ("lost the connection to the Dask scheduler at "
                                 "tcp://10.0.0.5:8786; its tasks are cancelled")
    # A client still connected: the scheduler's own cancelling, said as such.
    with pytest.raises(MosaicistError, match=r"cancelled a task \(unknown\)"):
        _cluster.task_result(FailedFuture(cancelled, FakeClient()), "killed")


def test_a_scheduler_lost_while_waiting_for_workers_is_not_a_lack_of_workers():
    # `mosaicist index photos/ --scheduler tcp://...` on a scheduler without workers yet,
    # killed during the wait: "the Dask scheduler at ... has no workers; start some".
    from distributed.comm import CommClosedError

    lost = FakeClient(wait_error=CommClosedError("in <TCP (closed)>: Stream is closed"))
    with pytest.raises(MosaicistError) as raised:
        require_workers(lost)  # type: ignore[arg-type]
    assert str(raised.value) == ("lost the connection to the Dask scheduler at "
                                 "tcp://10.0.0.5:8786; its tasks are cancelled")
    # The wait's own end (a TimeoutError, which is an OSError too): no workers.
    waited = FakeClient(wait_error=TimeoutError("Only 0/1 workers arrived after 10"))
    with pytest.raises(MosaicistError) as raised:
        require_workers(waited)  # type: ignore[arg-type]
    assert str(raised.value) == ("the Dask scheduler at tcp://10.0.0.5:8786 has no workers; "
                                 "start some with 'dask worker tcp://10.0.0.5:8786'")


def test_a_scheduler_lost_while_workers_are_counted_is_said_as_lost():
    # "mosaicist: error: in <TCP (closed)  local=tcp://127.0.0.1:59562
    # remote=tcp://127.0.0.1:38786>: ConnectionResetError: [Errno 104] Connection reset
    # by peer": Dask's and Python's names, from the count after the workers' check.
    from distributed.comm import CommClosedError

    client = FakeClient(nthreads_error=CommClosedError("in <TCP (closed)>: "
                                                       "ConnectionResetError: [Errno 104]"))
    with pytest.raises(MosaicistError) as raised:
        require_workers(client)  # type: ignore[arg-type]
    assert str(raised.value) == ("lost the connection to the Dask scheduler at "
                                 "tcp://10.0.0.5:8786; its tasks are cancelled")


def digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(("memory_limit", "rows"), [(0, 2), (8 << 30, 2), (16 * 1536, 1)],
                         ids=["unlimited", "8-GB", "a-row-in-16"])
def test_a_render_on_workers_of_little_memory_draws_fewer_rows_per_task(
        tmp_path, memory_limit, rows):
    # `dask worker --memory-limit 200MB`, `mosaicist make ... --tile-px 256 -o m.dzi`: "a
    # group of rows killed every worker it was given to (out of memory?)", where tasks of
    # one row fit. Here rows of 1,536 bytes, two per task without a limit (6 rows, one
    # worker): a sixteenth of the limit holds one.
    tiles = make_colour_folder(tmp_path / "tiles", 20, size=12)
    options = MosaicOptions(cell_px=4, tile_px=8, preset="seed")
    made = make_mosaic(noisy_target()[:24, :32], tiles, options, cache_dir=tmp_path / "cache")
    renderer = placements_renderer(made.placements, options, cache_dir=tmp_path / "cache")
    assert (renderer.placements.rows, renderer.tile_height * renderer.width * 3) == (6, 1536)
    renderer.write(tmp_path / "here.png", options)
    client = FakeClient(memory_limit=memory_limit)
    assert write_on_cluster(client, renderer, tmp_path / "there.png", options,  # type: ignore[arg-type]
                            cache_dir=tmp_path / "cache")
    assert [arguments[1].rows for arguments in client.submitted] == [rows] * (6 // rows)
    assert digest(tmp_path / "here.png") == digest(tmp_path / "there.png")


class FakeCluster:
    """A local cluster that started (closed by the run)."""

    closed = False

    def close(self) -> None:
        self.closed = True


def starts_failing(monkeypatch, failures: list[BaseException]) -> list[FakeCluster]:
    """Make LocalCluster fail with ``failures`` in turn, then start; return those started."""
    started: list[FakeCluster] = []

    def local_cluster(*args, **kwargs) -> FakeCluster:
        if failures:
            raise failures.pop(0)
        started.append(FakeCluster())
        return started[-1]

    monkeypatch.setattr(distributed, "LocalCluster", local_cluster)
    return started


def test_a_local_worker_killed_as_it_starts_costs_only_time(monkeypatch):
    # `mosaicist index photos/ --scheduler local:2`, a worker process killed (out of
    # memory, a stray kill) while the cluster started: "mosaicist: error: cannot start a
    # local Dask cluster of 2 workers (Nanny failed to start.)", in 3 of 10 tries.
    started = starts_failing(monkeypatch, [RuntimeError("Nanny failed to start."),
                                           RuntimeError("Nanny failed to start.")])
    with _cluster._local_cluster(2, logging.ERROR) as cluster:
        assert cluster is started[0]
    assert len(started) == 1 and cluster.closed


def test_a_local_worker_that_never_starts_is_one_line_after_a_few_tries(monkeypatch):
    failures: list[BaseException] = [RuntimeError("Nanny failed to start.")] * 5
    starts_failing(monkeypatch, failures)
    with pytest.raises(MosaicistError) as raised, _cluster._local_cluster(1, logging.ERROR):
        pass
    assert str(raised.value) == ("cannot start a local Dask cluster of 1 worker (Nanny "
                                 "failed to start.)")
    assert len(failures) == 5 - _cluster.LOCAL_STARTS
    # Another failure is not tried again.
    failures = [OSError("no free port"), RuntimeError("Nanny failed to start.")]
    starts_failing(monkeypatch, failures)
    with pytest.raises(MosaicistError, match=r"\(no free port\)$"), \
            _cluster._local_cluster(1, logging.ERROR):
        pass
    assert len(failures) == 1
