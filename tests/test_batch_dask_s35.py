"""A batch on a cluster that cannot run it (session 35).

`mosaicist batch TARGETS --tiles LIB -o OUT --scheduler ADDRESS` indexed the
library here (minutes for a large one) and made OUT, its lock files and the
cache folder before it connected to the cluster: a scheduler without
workers, a port where nothing listens or a worker of another mosaicist was
refused only then, with all of that left behind. The cluster is now asked
first, its client kept for the run and closed however the batch ends (a
local cluster's, Ctrl+C while the library is indexed included).

The clusters are schedulers in this process (no worker, or one worker
thread), as in test_dask_hostile_s35.py; each is closed at the end.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_colour_folder
from PIL import Image
from test_refusals_s35 import _tree

from mosaicist import __version__
from mosaicist.batch import _run, batch_mosaics
from mosaicist.cli import main

# The extra "dask" (in "test"); mosaicist.distributed itself imports it only when used.
distributed = pytest.importorskip("distributed")

from mosaicist.distributed import _cluster  # noqa: E402 - with Dask only


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A target and tiles in the current folder; a cache folder that is not there yet."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOSAICIST_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save("target.png")
    make_colour_folder(tmp_path / "tiles", 6, size=8)
    return tmp_path


@pytest.fixture
def in_process_cluster():
    """A scheduler in this process, with ``workers`` worker threads; closed at the end."""
    started: list[distributed.LocalCluster] = []

    def start(workers: int) -> distributed.LocalCluster:
        started.append(distributed.LocalCluster(
            n_workers=workers, processes=False, threads_per_worker=1, protocol="tcp://",
            host="127.0.0.1", dashboard_address="127.0.0.1:0"))
        return started[-1]

    yield start
    for cluster in started:
        cluster.close()


def _refused(root: Path, monkeypatch, scheduler: str) -> str:
    """Run a batch on ``scheduler``: one line, nothing indexed, the disk as it was; the line."""
    def indexed(*arguments):
        raise AssertionError("the library was indexed before the cluster was checked")

    monkeypatch.setattr(_run, "_prepare", indexed)
    before = _tree(root)
    result = CliRunner().invoke(main, ["batch", "target.png", "--tiles", "tiles", "-o", "out",
                                       "--cell", "8", "--tile-px", "8", "--scheduler", scheduler])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output
    assert len(lines) == 1 and lines[0].startswith("mosaicist: error: "), result.stderr
    after = _tree(root)
    assert after == before, (f"made {sorted(set(after) - set(before))}, changed "
                             f"{sorted(k for k in before if after.get(k) != before[k])}")
    return lines[0]


def _clients(cluster: distributed.LocalCluster) -> set[str]:
    """The clients connected to ``cluster``'s scheduler (less its own fire-and-forget one)."""
    return set(cluster.scheduler.clients) - {"fire-and-forget"}


def test_a_cluster_without_workers_is_refused_before_the_library_is_indexed(
        sandbox, monkeypatch, in_process_cluster):
    # The library was indexed, and OUT made with its lock files, before the 10 s wait
    # for a worker ended in 'has no workers'.
    monkeypatch.setattr(_cluster, "CONNECT_SECONDS", 0.3)
    cluster = in_process_cluster(0)
    address = cluster.scheduler_address
    line = _refused(sandbox, monkeypatch, address)
    assert line == (f"mosaicist: error: the Dask scheduler at {address} has no workers; "
                    f"start some with 'dask worker {address}'")
    assert not _clients(cluster)  # its client closed


def test_a_scheduler_address_where_nothing_listens_is_refused_before_any_work(
        sandbox, monkeypatch):
    monkeypatch.setattr(_cluster, "REFUSED_SECONDS", 0.3)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    line = _refused(sandbox, monkeypatch, f"tcp://127.0.0.1:{port}")
    assert "cannot reach the Dask scheduler (connection refused)" in line


def test_a_worker_of_another_mosaicist_is_refused_before_any_work(
        sandbox, monkeypatch, in_process_cluster):
    # What a worker that imports mosaicist 0.0.9 answers when asked its version.
    monkeypatch.setattr(_cluster, "_WORKER_VERSION", "'0.0.9'")
    cluster = in_process_cluster(1)
    line = _refused(sandbox, monkeypatch, cluster.scheduler_address)
    assert f"runs mosaicist 0.0.9, this machine {__version__}" in line
    assert not _clients(cluster)


def test_a_folder_of_other_settings_is_refused_without_making_the_cache(sandbox, monkeypatch):
    # The cache folder was made before the output folder's settings were read.
    state = sandbox / "out" / _run.STATE_FOLDER
    state.mkdir(parents=True)
    (state / "settings.json").write_text('{"version": 1, "tiles": "elsewhere", "settings": {}}')
    (sandbox / "out" / "done.png").write_bytes(b"made before")
    before = _tree(sandbox)
    result = CliRunner().invoke(main, ["batch", "target.png", "--tiles", "tiles", "-o", "out",
                                       "--cell", "8", "--tile-px", "8"])
    assert result.exit_code != 0 and "--overwrite" in result.stderr, result.output
    assert _tree(sandbox) == before


@contextlib.contextmanager
def _in_process_local(started: list, workers: int, level: int):
    """A ``local:N`` cluster as a scheduler and worker threads in this process (fast)."""
    cluster = distributed.LocalCluster(n_workers=workers, processes=False, threads_per_worker=1,
                                       protocol="tcp://", host="127.0.0.1",
                                       dashboard_address="127.0.0.1:0")
    started.append(cluster)
    try:
        yield cluster
    finally:
        cluster.close()


def test_an_interrupted_indexing_stops_the_local_cluster(sandbox, monkeypatch):
    # Ctrl+C while the library is indexed: the local cluster started for the batch (now
    # before the indexing) is stopped with its client, and no output folder is left.
    started: list[distributed.LocalCluster] = []
    monkeypatch.setattr(_cluster, "_local_cluster",
                        lambda workers, level: _in_process_local(started, workers, level))

    def interrupted(*arguments):
        assert started and started[0].status.name == "running"
        raise KeyboardInterrupt

    monkeypatch.setattr(_run, "_prepare", interrupted)
    with pytest.raises(KeyboardInterrupt):
        batch_mosaics("target.png", "tiles", "out", scheduler="local:1", cell_px=8, tile_px=8)
    assert len(started) == 1 and started[0].status.name == "closed"
    assert not _clients(started[0])
    assert not (sandbox / "out").exists()


def test_a_batch_on_a_cluster_makes_its_outputs_and_closes_its_client(
        sandbox, in_process_cluster):
    cluster = in_process_cluster(1)
    result = batch_mosaics("target.png", "tiles", "out", scheduler=cluster.scheduler_address,
                           cell_px=8, tile_px=8, preset="seed")
    assert [entry.status for entry in result.results] == ["made"]
    assert result.workers == 1 and result.scheduler == cluster.scheduler_address
    assert (sandbox / "out" / "target.png").is_file()
    assert not _clients(cluster)
