"""Running on a Dask cluster, the awkward cases: names, counts and a worker's last words.

One local cluster of two worker processes for the module (its start is the
cost), stopped at the end; small libraries, cut into many tasks so that the
workers do the work.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_colour_folder, noisy_target
from PIL import Image

from mosaicist import make_mosaic
from mosaicist.distributed import (
    _cluster,
    client_for,
    index_library,
    make_on_cluster,
    parse_scheduler,
    write_on_cluster,
)
from mosaicist.errors import MosaicistError, OptionError
from mosaicist.library import TileLibrary
from mosaicist.options import MosaicOptions
from mosaicist.placements import Placements
from mosaicist.render import placements_renderer

# The extra "dask" (in "test"); mosaicist.distributed itself imports it only when used.
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    with client_for("local:2") as cluster_client:
        yield cluster_client


def digest(path: Path) -> str:
    """Every byte of a file, or of every file under a folder with their names."""
    hasher = hashlib.sha1()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            hasher.update(os.fsencode(file.relative_to(path)) + b"\0")
        hasher.update(file.read_bytes())
    return hasher.hexdigest()


def latin1(folder: Path, name: bytes) -> Path:
    """``folder / name`` for a name that is not UTF-8 (as :func:`os.fsdecode` gives it)."""
    return Path(os.fsdecode(os.fsencode(folder) + b"/" + name))


# -- no cluster ----------------------------------------------------------------------


def test_a_local_count_of_thousands_of_digits_is_one_line():
    # int() refuses strings of over 4,300 digits: a ValueError's traceback, not the one line.
    for bad in ("local:" + "9" * 5000, "local:" + "1" * 4301):
        with pytest.raises(OptionError, match="local:N needs N from 1 to 256") as raised:
            parse_scheduler(bad)
        assert raised.value.parameters == ("scheduler",)
    assert parse_scheduler("local:" + "0" * 5000 + "2").workers == 2
    with pytest.raises(OptionError, match="local:N needs N from 1 to 256"):
        parse_scheduler("local:" + "0" * 5000)


@pytest.mark.parametrize(("workers", "said"), [(1, "1 worker"), (3, "3 workers")])
def test_a_local_cluster_that_cannot_start_counts_its_workers(monkeypatch, workers, said):
    # "cannot start a local Dask cluster of 1 workers".
    def refused(*args, **kwargs):
        raise OSError("no free port")

    monkeypatch.setattr(distributed, "LocalCluster", refused)
    with pytest.raises(MosaicistError) as raised:
        with client_for(f"local:{workers}"):
            pass
    assert str(raised.value) == f"cannot start a local Dask cluster of {said} (no free port)"


def test_counts_agree_with_their_number():
    assert _cluster.counted(1, "tile") == "1 tile"
    assert _cluster.counted(0, "tile") == "0 tiles"
    assert _cluster.counted(12_345, "worker") == "12,345 workers"


def connect_failure(cause: BaseException) -> OSError:
    """Dask's error of a connection that failed until its time ran out, after ``cause``."""
    error = OSError("Timed out trying to connect to tcp://127.0.0.1:9 after 10 s")
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(("cause", "said"), [
    (OSError("in <distributed.comm.tcp.TCPConnector object at 0x7f0c>: ConnectionRefusedError: "
             "[Errno 111] Connection refused"), "Connection refused"),
    (OSError("[Errno -2] Name or service not known"), "Name or service not known"),
    (TimeoutError(), "no answer in time"),
], ids=["refused", "unknown-host", "timeout"])
def test_an_unreachable_scheduler_is_said_in_plain_words(cause, said):
    # "(... after 10 s: ConnectionRefusedError: [Errno 111] Connection refused)", and
    # "(... after 1 s: TimeoutError)": Python's names, in a user's one line.
    assert _cluster._reason(connect_failure(cause)) == (
        f"Timed out trying to connect to tcp://127.0.0.1:9 after 10 s: {said}")


# -- a local cluster -----------------------------------------------------------------


def test_a_local_workers_heartbeat_to_a_scheduler_gone_is_not_logged(client):
    # A worker being stopped amid a heartbeat (after a Ctrl+C) logged "Failed to
    # communicate with scheduler during heartbeat." with a traceback of Dask's under the
    # run's one line: a local cluster's scheduler is the run's, so that is the run stopping.
    def kept(message: str) -> bool:
        import logging

        record = logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1, message,
                                   None, None)
        return logging.getLogger("distributed.worker").filter(record)

    for message, expected in (("Failed to communicate with scheduler during heartbeat.", False),
                              ("Failed to log closing event", False),
                              ("Compute Failed\nKey: x", False),
                              ("Unable to connect to scheduler: refused", True)):
        assert set(client.run(kept, message).values()) == {expected}, message


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="names that are not UTF-8")
def test_a_library_whose_path_is_not_utf8_is_indexed_matched_and_drawn_on_a_cluster(
        client, tmp_path):
    # The workers were sent the source's spec as text, where such a path is escaped
    # ("caf\xe9"): no worker found it, and the run failed saying it was not there.
    tiles = make_colour_folder(latin1(tmp_path, b"caf\xe9 tiles"), 40, size=16, seed=6)
    target = tmp_path / "target.png"
    Image.fromarray(noisy_target()).save(target)
    one = TileLibrary.open(tiles, 8, cache_dir=tmp_path / "one")
    two = index_library(client, tiles, 8, tmp_path / "two", part_entries=10)
    assert one.source_ids == two.source_ids
    assert np.asarray(one.tiles).tobytes() == np.asarray(two.tiles).tobytes()
    assert two.stats is not None and two.stats.decoded == 40
    options = MosaicOptions(cell_px=4, tile_px=8, preset="seed")
    made = make_mosaic(target, tiles, options, cache_dir=tmp_path / "one")
    with distributed.get_task_stream(client=client) as tasks:
        there = make_on_cluster(client, target, tiles, options, cache_dir=tmp_path / "two",
                                block_cells=40, range_tiles=15)
    assert "search_range" in {task["key"].split("-")[0] for task in tasks.data}
    assert np.array_equal(made.placements.tile, there.placements.tile)
    # Drawn larger than the index: from the original photos, by the workers.
    made.placements.write(tmp_path / "placements.json")
    placements = Placements.read(tmp_path / "placements.json")
    larger = placements.options.replace(tile_px=12)
    renderer = placements_renderer(placements, larger, tiles=str(tiles),
                                   cache_dir=tmp_path / "one")
    renderer.write(tmp_path / "here.png", larger)
    assert write_on_cluster(client, renderer, tmp_path / "there.png", larger,
                            cache_dir=tmp_path / "one", rows_per_task=3)
    assert digest(tmp_path / "here.png") == digest(tmp_path / "there.png")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="names that are not UTF-8")
def test_an_array_file_whose_path_is_not_utf8_is_indexed_on_a_cluster(client, tmp_path):
    pixels = np.random.default_rng(3).integers(0, 256, (50, 12, 12, 3), dtype=np.uint8)
    array = latin1(tmp_path, b"\xff tiles.npy")
    np.save(array, pixels)
    one = TileLibrary.open(array, 8, cache_dir=tmp_path / "one")
    two = index_library(client, array, 8, tmp_path / "two", part_entries=16)
    assert one.source_ids == two.source_ids
    assert np.asarray(one.tiles).tobytes() == np.asarray(two.tiles).tobytes()


def test_the_workers_are_sent_a_plain_path_as_it_is(tmp_path):
    from mosaicist.sources import open_source

    folder = make_colour_folder(tmp_path / "café \\x41 tiles", 2)
    assert _cluster.worker_spec(open_source(str(folder), cache_dir=tmp_path)) == str(folder)

