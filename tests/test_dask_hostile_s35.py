"""Clusters that misbehave (session 35): nothing listening, no workers, other versions, a kill.

- A port where nothing listens was said after all of Dask's 10 s of retries.
- A scheduler without workers, or a worker of another mosaicist, failed an
  index only after its update had made the index folder (an empty manifest).
- A worker of another mosaicist went unnoticed; one of another NumPy made
  Dask print its table of versions, with the source line of its warning, -q
  or not.
- A worker killed amid a render costs only time: the same file, byte for byte.

The clusters are ``dask scheduler`` and ``dask worker`` processes on
127.0.0.1 (as in test_distributed.py), or a scheduler in this process; all
are stopped at the end.
"""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_colour_folder, noisy_target
from PIL import Image

from mosaicist import __version__, make_mosaic
from mosaicist.distributed import _cluster, client_for, index_library, write_on_cluster
from mosaicist.errors import MosaicistError
from mosaicist.options import MosaicOptions
from mosaicist.render import placements_renderer

# The extra "dask" (in "test"); mosaicist.distributed itself imports it only when used.
distributed = pytest.importorskip("distributed")

from test_distributed import (  # noqa: E402 - Dask's clusters, once Dask is known there
    WAIT_SECONDS,
    SubprocessCluster,
    run_killing_worker_b,
)


def closed_port() -> int:
    """A port of 127.0.0.1 where nothing listens (one just closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_port_where_nothing_listens_is_said_at_once(monkeypatch):
    # `mosaicist index photos --scheduler tcp://127.0.0.1:8788` (a port mistyped): 11 s,
    # Dask's retries, then "(Timed out trying to connect to ... after 10 s: Connection
    # refused)". A refusal is tried again briefly only (a scheduler just starting).
    monkeypatch.setattr(_cluster, "CONNECT_SECONDS", 6)
    monkeypatch.setattr(_cluster, "REFUSED_SECONDS", 0.5, raising=False)
    address = f"tcp://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    with pytest.raises(MosaicistError) as raised, client_for(address):
        pass
    assert time.monotonic() - started < 3
    assert str(raised.value) == (f"{address}: cannot reach the Dask scheduler (connection "
                                 f"refused); is 'dask scheduler' running there, and is "
                                 f"--scheduler its address?")


def test_a_scheduler_that_starts_listening_within_the_refusals_is_reached(monkeypatch):
    # Still tried again for a moment: `dask scheduler & mosaicist ...` in a script.
    monkeypatch.setattr(_cluster, "REFUSED_SECONDS", 5, raising=False)
    port = closed_port()
    listener: list[distributed.LocalCluster] = []

    def start_later() -> None:
        time.sleep(0.5)
        listener.append(distributed.LocalCluster(
            n_workers=0, processes=False, protocol="tcp://", host="127.0.0.1",
            scheduler_kwargs={"port": port}, dashboard_address="127.0.0.1:0"))

    import threading

    starter = threading.Thread(target=start_later)
    starter.start()
    try:
        _cluster.check_scheduler(f"tcp://127.0.0.1:{port}", seconds=8)
    finally:
        starter.join(WAIT_SECONDS)
        for cluster in listener:
            cluster.close()


def test_a_scheduler_without_workers_writes_nothing(tmp_path, monkeypatch):
    # The update took its lock and made the index folder (an empty manifest) before it
    # asked for a worker, 10 s later: a refused run left the cache changed.
    monkeypatch.setattr(_cluster, "CONNECT_SECONDS", 0.5)
    tiles = make_colour_folder(tmp_path / "tiles", 6, size=8)
    cluster = distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp://",
                                       host="127.0.0.1", dashboard_address="127.0.0.1:0")
    try:
        address = cluster.scheduler_address
        with pytest.raises(MosaicistError) as raised, client_for(address) as client:
            index_library(client, tiles, 8, tmp_path / "cache")
    finally:
        cluster.close()
    assert str(raised.value) == (f"the Dask scheduler at {address} has no workers; start "
                                 f"some with 'dask worker {address}'")
    assert not (tmp_path / "cache").exists()


def test_dasks_table_of_versions_is_one_line():
    from distributed.utils import asciitable

    table = "Mismatched versions found\n\n" + asciitable(
        ["Package", "Client", "Scheduler", "Workers"],
        [("numpy", "2.4.6", "2.4.6", "1.26.4"),
         ("python", "3.11.7.final.0", "3.11.7.final.0", {"3.12.1.final.0", "3.11.7.final.0"}),
         ("lz4", None, "4.3.3", "MISSING")])
    assert _cluster.versions_differ(table) == (
        "the Dask cluster runs other versions than this machine (numpy: 2.4.6 here, 1.26.4 on "
        "the workers; python: 3.11.7 here, 3.11.7, 3.12.1 on the workers; lz4: none here, "
        "4.3.3 on the scheduler); its results may differ from this machine's: install the "
        "same versions on every machine")


# -- a cluster of subprocesses -------------------------------------------------------

#: A worker's preload: another mosaicist, and (as Dask sees it) another NumPy.
OTHER_VERSIONS = """
import distributed.versions as versions
if not getattr(versions.get_package_info, "other", False):  # Dask imports it twice
    said = versions.get_package_info
    def other(packages):
        return {**said(packages), "numpy": "1.26.4"}
    other.other = True
    versions.get_package_info = other
import mosaicist
mosaicist.__version__ = "0.0.9"
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dask")
    there = SubprocessCluster(folder)
    try:
        yield there
    finally:
        there.stop()


def test_a_worker_of_other_versions_is_said_in_one_line(cluster, tmp_path, capsys):
    # Another mosaicist: the run went on with it. Another NumPy: Dask's warning, a table
    # of lines under the source line of its call, with -q too.
    preload = tmp_path / "other_versions.py"
    preload.write_text(OTHER_VERSIONS)
    tiles = make_colour_folder(tmp_path / "tiles", 6, size=8)
    cluster._start("other", ["worker", cluster.address, "--nthreads", "1", "--no-nanny",
                             "--host", "127.0.0.1", "--no-dashboard", "--preload", str(preload),
                             "--local-directory", str(tmp_path / "other")])
    try:
        with client_for(cluster.address) as watcher:
            watcher.wait_for_workers(1, timeout=WAIT_SECONDS)
            worker = _cluster.worker_addresses(watcher)[0]
        capsys.readouterr()
        with pytest.raises(MosaicistError) as raised:
            with client_for(cluster.address, quiet=False) as there:
                index_library(there, tiles, 8, tmp_path / "cache")
        errors = capsys.readouterr().err
    finally:
        cluster.kill("other")
        del cluster.processes["other"]
    assert str(raised.value) == (f"{worker}: this Dask worker runs mosaicist 0.0.9, this "
                                 f"machine {__version__}; install the same mosaicist, with the "
                                 f"same extras, on every worker")
    assert errors.splitlines() == [
        "mosaicist: warning: the Dask cluster runs other versions than this machine (numpy: "
        f"{np.__version__} here, 1.26.4 on the workers); its results may differ from this "
        "machine's: install the same versions on every machine"]
    assert not (tmp_path / "cache").exists()


def test_a_worker_killed_mid_render_changes_no_byte(cluster, tmp_path):
    tiles = make_colour_folder(tmp_path / "tiles", 40, size=48, seed=4)
    target = tmp_path / "target.png"
    Image.fromarray(noisy_target()).save(target)
    options = MosaicOptions(cell_px=2, tile_px=8, preset="seed")  # 20 x 28 cells
    mosaic = make_mosaic(target, tiles, options, cache_dir=tmp_path / "cache")
    # Drawn at 48 px from the original photos: each row of cells a task of some work.
    larger = mosaic.placements.options.replace(tile_px=48)
    renderer = placements_renderer(mosaic.placements, larger, cache_dir=tmp_path / "cache")
    renderer.write(tmp_path / "one.png")
    for name in ("worker-a", "worker-b"):
        cluster.start_worker(name)
    try:
        def render_there(there) -> bool:
            return write_on_cluster(there, renderer, tmp_path / "two.png",
                                    cache_dir=tmp_path / "cache", rows_per_task=1)

        drawn = run_killing_worker_b(
            cluster, render_there,
            lambda busy: any(str(key).startswith("draw_rows") for key in busy),
            "the worker was never caught drawing")
    finally:
        cluster.kill("worker-a")
    assert drawn is True
    digest = [hashlib.sha1(Path(tmp_path / name).read_bytes()).hexdigest()
              for name in ("one.png", "two.png")]
    assert digest[0] == digest[1]


def test_a_refusal_hidden_by_a_cut_off_try_is_still_said(monkeypatch):
    # On a loaded machine Dask's last try within the short window was cut off by its time,
    # its cause "no answer in time": the run waited all of Dask's 10 s (a flaky CI run).
    import asyncio

    tries: list[float] = []

    async def cut_off(address, timeout, **arguments):
        tries.append(timeout)
        if len(tries) == 1:
            raise OSError(f"Timed out trying to connect to {address} after {timeout} s: "
                          "no answer in time")
        return "connected"

    monkeypatch.setattr(_cluster, "REFUSED_SECONDS", 0.3, raising=False)
    refused = f"tcp://127.0.0.1:{closed_port()}"
    with pytest.raises(_cluster._Refused):
        asyncio.run(_cluster._connect(cut_off, refused, 6, {}))
    # Where something listens, the rest of the time is Dask's, as before.
    tries.clear()
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        address = f"tcp://127.0.0.1:{listening.getsockname()[1]}"
        assert asyncio.run(_cluster._connect(cut_off, address, 6, {})) == "connected"
    assert tries == [0.3, pytest.approx(5.7)]
