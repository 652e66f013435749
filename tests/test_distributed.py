"""Running on a Dask cluster: the same index, picks and files as one machine.

A local cluster of two worker processes (module-wide), and a cluster of
subprocesses (``dask scheduler`` and two ``dask worker``, on 127.0.0.1),
all stopped at the end. Small libraries and grids, cut into many tasks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_colour_folder, make_jpeg_photos, make_odd_folder, noisy_target
from PIL import Image

from mosaicist import make_mosaic
from mosaicist._runtime import release_pages
from mosaicist.distributed import (
    _cluster,
    _index,
    client_for,
    index_library,
    make_on_cluster,
    parse_scheduler,
    write_on_cluster,
)
from mosaicist.errors import MosaicistError, OptionError
from mosaicist.library import TileLibrary
from mosaicist.library._shards import SHARD_SLOTS, ShardedTiles
from mosaicist.options import MosaicOptions
from mosaicist.placements import Placements
from mosaicist.render import placements_renderer

# The extra "dask" (in "test"); mosaicist.distributed itself imports it only when used.
distributed = pytest.importorskip("distributed")

#: Seconds any wait on a subprocess cluster may take.
WAIT_SECONDS = 60


# -- no cluster ----------------------------------------------------------------------


def test_scheduler_addresses():
    assert parse_scheduler("local:3").workers == 3
    assert parse_scheduler("local").workers >= 1
    assert parse_scheduler("10.0.0.5:8786").address == "tcp://10.0.0.5:8786"
    assert parse_scheduler("tls://node-1.example:9000").address == "tls://node-1.example:9000"
    assert parse_scheduler("tcp://[::1]:8786").address == "tcp://[::1]:8786"
    for bad in ("local:0", "local:x", "remote", "tcp://host", "tcp://host:99999", "http://h:1"):
        with pytest.raises(OptionError) as raised:
            parse_scheduler(bad)
        assert raised.value.parameters == ("scheduler",)


def test_scheduler_numbers_are_ascii_digits_only():
    # "²" is a digit to str.isdigit but not to int(): a ValueError's traceback.
    for bad in ("local:\u00b2", "local:\u0662", "tcp://host:\uff18\uff17\uff18\uff16"):
        with pytest.raises(OptionError) as raised:
            parse_scheduler(bad)
        assert raised.value.parameters == ("scheduler",)


def test_nothing_imports_dask_without_a_scheduler(tmp_path):
    tiles = make_colour_folder(tmp_path / "tiles", 12)
    target = tmp_path / "target.png"
    Image.fromarray(noisy_target()).save(target)
    code = f"""
import sys
from mosaicist.cli import main
for args in (["index", {str(tiles)!r}, "--tile-px", "8", "-q"],
             ["make", {str(target)!r}, "--tiles", {str(tiles)!r}, "--cell", "8", "--tile-px", "8",
              "--preset", "seed", "-o", {str(tmp_path / "out.png")!r}, "-q"],
             ["make", "--help"], ["index", "--help"], ["render", "--help"]):
    try:
        main(args)
    except SystemExit as end:
        assert not end.code, (args, end.code)
print(sorted(name for name in sys.modules if name.split(".")[0] in ("dask", "distributed")))
"""
    env = dict(os.environ, MOSAICIST_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert "--scheduler ADDRESS" in done.stdout


def test_sharded_tiles_behave_as_the_array(tmp_path):
    rng = np.random.default_rng(3)
    whole = rng.integers(0, 256, (23, 2, 3, 3), dtype=np.uint8)
    # Three files; runs that skip tiles and come back to a file.
    files = [tmp_path / f"f{number}.u8" for number in range(3)]
    layout = [(0, 0, 5), (1, 2, 7), (0, 7, 4), (2, 0, 7)]  # (file, first tile, count)
    contents = [np.zeros((12, 2, 3, 3), np.uint8) for _ in files]
    at = 0
    for file, first, count in layout:
        contents[file][first:first + count] = whole[at:at + count]
        at += count
    for path, content in zip(files, contents, strict=True):
        path.write_bytes(content.tobytes())
    tiles = ShardedTiles([(str(files[file]), first, count) for file, first, count in layout],
                         (2, 3, 3))
    assert len(tiles) == 23 and tiles.shape == whole.shape and tiles.dtype == np.uint8
    assert np.array_equal(np.asarray(tiles), whole)
    keys = [0, 5, -1, -23, slice(None), slice(3, 9), slice(4, 5), slice(20, 40), slice(9, 3),
            slice(None, None, 3), slice(None, None, -2), np.array([22, 0, 5, 5, 11, 16]),
            [3, 1, 2], np.array([], np.int64), np.arange(23) % 3 == 0,
            np.array([[1, 2], [21, 0]]), (slice(2, 14), 1), (4, 0, 2), (np.array([3, 19]),
                                                                        slice(None), 1)]
    for key in keys:
        assert np.array_equal(tiles[key], whole[key]), key
    for bad in (23, -24, np.array([0, 23]), np.ones(5, bool)):
        with pytest.raises(IndexError):
            tiles[bad]
    flat = tiles.reshape(len(tiles), -1)
    assert flat.shape == (23, 18)
    assert np.array_equal(flat[np.array([4, 17])], whole.reshape(23, -1)[[4, 17]])
    with pytest.raises(ValueError):
        tiles.reshape(46, -1)
    # Pickled as files and runs, not pixels.
    data = pickle.dumps(tiles)
    assert len(data) < 1000
    assert np.array_equal(np.asarray(pickle.loads(data)), whole)
    assert np.array_equal(np.stack(list(tiles)), whole)
    release_pages(tiles)  # type: ignore[arg-type]


# -- a local cluster -----------------------------------------------------------------


@pytest.fixture(scope="module")
def client():
    with client_for("local:2") as cluster_client:
        yield cluster_client


def test_local_workers_share_the_cores(client):
    """Each of local:2's workers sizes its own thread pools to its share of the cores."""
    from mosaicist._runtime import worker_count

    def threads() -> tuple[str | None, int]:
        import os

        from mosaicist._runtime import worker_count as inside
        return os.environ.get("MOSAICIST_THREADS"), inside()

    share = max(1, worker_count() // 2)
    for setting, count in client.run(threads).values():
        assert setting == str(share)
        assert count == share


def test_local_workers_keep_the_allocator_as_it_is(client):
    """No MALLOC_TRIM_THRESHOLD_ from Dask's nanny: it cost 9% CPU decoding large photos."""

    def trim() -> str | None:
        import os

        return os.environ.get("MALLOC_TRIM_THRESHOLD_")

    assert set(client.run(trim).values()) == {None}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="listening sockets")
def test_a_local_cluster_listens_on_127_0_0_1_only(client):
    psutil = pytest.importorskip("psutil")
    here = psutil.Process()
    listening = [(process.pid, connection.laddr.ip)
                 for process in [here, *here.children(recursive=True)]
                 for connection in process.net_connections(kind="inet")
                 if connection.status == psutil.CONN_LISTEN]
    workers = set(client.run(os.getpid).values())
    assert workers <= {pid for pid, _ in listening}  # each worker listens: it is in the list
    assert {ip for _, ip in listening} == {"127.0.0.1"}


def manifest(library: TileLibrary) -> tuple[list, list]:
    """The published rows without their storage (slots), and the failures."""
    connection = sqlite3.connect(library.directory / "manifest.sqlite")
    try:
        tiles = connection.execute(
            "SELECT source_id, position, size, mtime_ns, content_hash, crop_left, crop_top, "
            "crop_width, crop_height, phash, mean_rgb, phash_mirror FROM tiles ORDER BY position"
        ).fetchall()
        failures = connection.execute("SELECT * FROM failures ORDER BY source_id").fetchall()
    finally:
        connection.close()
    return tiles, failures


def assert_same_library(one: TileLibrary, other: TileLibrary) -> None:
    assert one.source_ids == other.source_ids
    assert np.asarray(one.tiles).tobytes() == np.asarray(other.tiles).tobytes()
    assert manifest(one) == manifest(other)
    assert one.stats is not None and other.stats is not None
    assert sorted(one.stats.failed) == sorted(other.stats.failed)


def slot_of(library: TileLibrary, source_id: str) -> int:
    connection = sqlite3.connect(library.directory / "manifest.sqlite")
    try:
        return connection.execute("SELECT slot FROM tiles WHERE source_id = ?",
                                  (source_id,)).fetchone()[0]
    finally:
        connection.close()


def shard_files(library: TileLibrary) -> list[str]:
    return sorted(path.name for path in library.directory.glob("shard-*"))


def test_index_on_a_cluster_is_the_index_of_one_machine(client, tmp_path):
    tiles = make_odd_folder(tmp_path / "odd")
    make_colour_folder(tiles / "colours", 40, size=20)
    for crop in ("centre", "subject"):
        one = TileLibrary.open(tiles, 16, cache_dir=tmp_path / "one", crop=crop, aspect="3:2")
        two = index_library(client, tiles, 16, tmp_path / "two", crop=crop, aspect="3:2",
                            part_entries=5)
        assert_same_library(one, two)
        assert isinstance(two.tiles, ShardedTiles)
        assert len(shard_files(two)) >= 5  # one per part, kept as they are
        assert two.stats is not None and two.stats.decoded == one.stats.decoded
    # Opened again (no update): the same shards, mapped.
    again = TileLibrary.open(tiles, 16, cache_dir=tmp_path / "two", crop="subject",
                             aspect="3:2", update=False)
    assert np.array_equal(np.asarray(again.tiles), np.asarray(two.tiles))


def test_cluster_updates_are_incremental_and_mix_with_one_machine(client, tmp_path):
    tiles = make_colour_folder(tmp_path / "tiles", 60, size=16)

    def both(decoded: int) -> TileLibrary:
        one = TileLibrary.open(tiles, 8, cache_dir=tmp_path / "one")
        two = index_library(client, tiles, 8, tmp_path / "two", part_entries=7)
        assert_same_library(one, two)
        assert two.stats is not None and two.stats.decoded == decoded
        return two

    first = both(60)
    generation = first.generation
    # Nothing changed: nothing decoded, nothing sent out.
    assert both(0).generation == generation
    # A file added in the middle of the library order, one changed, one touched (decoded
    # again, its pixels kept where they are), one removed.
    Image.fromarray(np.full((16, 16, 3), 7, np.uint8)).save(tiles / "t010b.png")
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(tiles / "t030.png")
    touched = tiles / "t020.png"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    slot_before = slot_of(first, "t020.png")
    (tiles / "t045.png").unlink()
    later = both(3)
    assert later.generation > generation
    assert slot_of(later, "t020.png") == slot_before
    # One machine updates the sharded index: one packed file again, the same library.
    (tiles / "t000.png").unlink()
    one_machine = TileLibrary.open(tiles, 8, cache_dir=tmp_path / "two")
    assert isinstance(one_machine.tiles, np.memmap) and not shard_files(one_machine)
    assert_same_library(TileLibrary.open(tiles, 8, cache_dir=tmp_path / "one"), one_machine)
    # ... and the cluster again on top of it: that packed file is kept as a shard.
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tiles / "t050a.png")
    mixed = both(1)
    connection = sqlite3.connect(mixed.directory / "manifest.sqlite")
    kept = [row[0] for row in connection.execute("SELECT file FROM shards")]
    low = connection.execute("SELECT COUNT(*) FROM tiles WHERE slot < ?",
                             (SHARD_SLOTS,)).fetchone()[0]
    connection.close()
    assert any(name.startswith("tiles-") for name in kept) and low == 0


def test_many_cluster_updates_merge_their_smallest_shards(client, tmp_path, monkeypatch):
    """Past MOST_SHARDS the smallest shards become one: the same library, no file left."""
    from mosaicist.library import _update

    monkeypatch.setattr(_update, "MOST_SHARDS", 4)
    tiles = make_colour_folder(tmp_path / "tiles", 40, size=16)

    def listed(library: TileLibrary) -> list[str]:
        connection = sqlite3.connect(library.directory / "manifest.sqlite")
        try:
            return sorted(row[0] for row in connection.execute("SELECT file FROM shards"))
        finally:
            connection.close()

    first = index_library(client, tiles, 8, tmp_path / "two", part_entries=5)
    assert_same_library(TileLibrary.open(tiles, 8, cache_dir=tmp_path / "one"), first)
    # Eight parts, merged down to two shards: the largest kept, the rest in one.
    assert len(listed(first)) == 2
    assert set(shard_files(first)) == set(listed(first))
    for step in range(3):
        # Each update adds small shards; past four the smallest are merged again.
        for index in range(3):
            Image.fromarray(np.full((16, 16, 3), 10 * step + index, np.uint8)).save(
                tiles / f"t0{step}{index}x.png")
        (tiles / f"t03{step}.png").unlink()
        later = index_library(client, tiles, 8, tmp_path / "two", part_entries=1)
        assert_same_library(TileLibrary.open(tiles, 8, cache_dir=tmp_path / "one"), later)
        assert len(listed(later)) <= 4
        assert set(shard_files(later)) == set(listed(later))
    # A merge stopped before it is published leaves the library as it was.
    Image.fromarray(np.full((16, 16, 3), 99, np.uint8)).save(tiles / "t099x.png")
    Image.fromarray(np.full((16, 16, 3), 98, np.uint8)).save(tiles / "t098x.png")
    Image.fromarray(np.full((16, 16, 3), 97, np.uint8)).save(tiles / "t097x.png")
    before = TileLibrary.open(tiles, 8, cache_dir=tmp_path / "two", update=False)
    kept = np.asarray(before.tiles).copy()
    written = _update._write_packed

    def write_then_stop(*args):
        written(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(_update, "_write_packed", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        index_library(client, tiles, 8, tmp_path / "two", part_entries=1)
    monkeypatch.setattr(_update, "_write_packed", written)
    unchanged = TileLibrary.open(tiles, 8, cache_dir=tmp_path / "two", update=False)
    assert np.array_equal(np.asarray(unchanged.tiles), kept)
    resumed = index_library(client, tiles, 8, tmp_path / "two", part_entries=1)
    assert_same_library(TileLibrary.open(tiles, 8, cache_dir=tmp_path / "one"), resumed)
    assert set(shard_files(resumed)) == set(listed(resumed))


def test_an_interrupted_cluster_update_keeps_its_finished_parts(client, tmp_path, monkeypatch):
    tiles = make_colour_folder(tmp_path / "tiles", 50, size=16)
    staged = []
    real = _index.stage_shard

    def stage_then_stop(connection, shard, rows, failures):
        if len(staged) == 3:
            raise KeyboardInterrupt
        real(connection, shard, rows, failures)
        staged.append(len(rows) + len(failures))

    monkeypatch.setattr(_index, "stage_shard", stage_then_stop)
    with pytest.raises(KeyboardInterrupt):
        index_library(client, tiles, 8, tmp_path / "two", part_entries=5)
    monkeypatch.setattr(_index, "stage_shard", real)
    resumed = index_library(client, tiles, 8, tmp_path / "two", part_entries=5)
    assert resumed.stats is not None and resumed.stats.decoded == 50 - sum(staged)
    assert_same_library(TileLibrary.open(tiles, 8, cache_dir=tmp_path / "one"), resumed)
    # Shards of the stopped run that were never staged (parts still running when it
    # stopped may finish later) are removed by the next update.
    deadline = time.monotonic() + WAIT_SECONDS
    while any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    index_library(client, tiles, 8, tmp_path / "two")
    connection = sqlite3.connect(resumed.directory / "manifest.sqlite")
    listed = {row[0] for row in connection.execute("SELECT file FROM shards")}
    connection.close()
    assert set(shard_files(resumed)) == listed


def test_a_worker_that_writes_its_shard_elsewhere_fails_the_index_in_one_line(
        client, tmp_path, monkeypatch):
    # A worker whose own disk has a folder at the index's path (of a run of its own)
    # wrote its shard there: "<rows file>: cannot read a shard's rows ([Errno 2] ...)".
    tiles = make_colour_folder(tmp_path / "tiles", 12, size=8)
    decode = _index.decode_part

    def on_its_own_disk(spec, cache, tile, directory, part):
        own = Path(directory).with_name("own-disk")
        own.mkdir(exist_ok=True)
        return decode(spec, cache, tile, str(own), part)

    monkeypatch.setattr(_index, "decode_part", on_its_own_disk)
    with pytest.raises(MosaicistError) as raised:
        index_library(client, tiles, 8, tmp_path / "cache", part_entries=4)
    folder = next((tmp_path / "cache").glob("indexes/*/px8"))
    assert re.fullmatch(rf"{re.escape(str(folder))}: a worker wrote its part of the index "
                        rf"elsewhere \(shard-\w+\.u8 is not here\); the cache must be on a "
                        rf"filesystem every worker shares", str(raised.value))
    monkeypatch.setattr(_index, "decode_part", decode)
    library = index_library(client, tiles, 8, tmp_path / "cache", part_entries=4)
    assert library.stats is not None and library.stats.decoded == 12


def digest(path: Path) -> str:
    """Every byte of a file, or of every file under a folder with their names."""
    hasher = hashlib.sha1()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        hasher.update(str(file.relative_to(path)).encode() + b"\0" if path.is_dir() else b"")
        hasher.update(file.read_bytes())
    return hasher.hexdigest()


@pytest.mark.parametrize("settings", [
    {"preset": "seed"},
    {"preset": "seed", "metric": "lab", "augment": "flips", "tint": 0.5, "overlay": 0.3},
    {"max_uses": 2, "min_spacing": 2, "contrast": 0.5, "tint": 1.0, "chroma": 1.0},
], ids=["seed", "lab-flips-tint", "capped-contrast-chroma"])
def test_make_and_render_on_a_cluster_give_the_files_of_one_machine(client, tmp_path,
                                                                    settings, monkeypatch):
    from mosaicist.match import _capped

    # Lists of the nearest tiles, searched by the workers (a library this small
    # would otherwise be listed whole on the client, :func:`_capped.dense_lists`).
    monkeypatch.setattr(_capped, "DENSE_TILES", 0)
    monkeypatch.setattr(_capped, "AUCTION_TILES", 0)
    tiles = make_colour_folder(tmp_path / "tiles", 120, size=24, seed=4)
    for number in range(0, 120, 3):
        # Copies later in the library: ties between ranges, which the first must win.
        (tiles / f"u{number:03d}.png").write_bytes((tiles / f"t{number:03d}.png").read_bytes())
    target = tmp_path / "target.png"
    Image.fromarray(noisy_target()).save(target)
    options = MosaicOptions(cell_px=4, tile_px=8, **settings)  # 10 x 14 cells
    one = make_mosaic(target, tiles, options, cache_dir=tmp_path / "one")
    with distributed.get_task_stream(client=client) as tasks:
        two = make_on_cluster(client, target, tiles, options, cache_dir=tmp_path / "two",
                              block_cells=40, range_tiles=50)  # 4 blocks x 4 ranges
    ran = {task["key"].split("-")[0] for task in tasks.data}  # mosaicist-index-...: parts
    assert {"mosaicist", "prepare_range", "search_range"} <= ran
    for name in ("tile", "distance", "transform", "tint", "gain", "chroma"):
        assert np.array_equal(getattr(one.placements, name), getattr(two.placements, name))
    assert two.placements.has_chroma == ("chroma" in settings)
    first, second = one.report(), two.report()
    for report in (first, second):
        report.pop("timings")
        if report["assignment"]:
            report["assignment"].pop("seconds")
    assert first == second
    for output in ("mosaic.png", "mosaic.jpg", "mosaic.dzi"):
        one.write(tmp_path / f"one-{output}")
        assert write_on_cluster(client, two.renderer, tmp_path / f"two-{output}", two.options,
                                cache_dir=tmp_path / "two", rows_per_task=3)
        if output.endswith(".dzi"):
            assert digest(tmp_path / "one-mosaic_files") == digest(tmp_path / "two-mosaic_files")
        else:
            assert digest(tmp_path / f"one-{output}") == digest(tmp_path / f"two-{output}")
    # Drawn again from the original photos, larger: the same pyramid.
    two.placements.write(tmp_path / "placements.json")
    placements = Placements.read(tmp_path / "placements.json")
    larger = placements.options.replace(tile_px=20)
    renderer = placements_renderer(placements, larger, cache_dir=tmp_path / "two")
    renderer.write(tmp_path / "here.dzi", larger)
    assert write_on_cluster(client, renderer, tmp_path / "there.dzi", larger,
                            cache_dir=tmp_path / "two", rows_per_task=4)
    assert digest(tmp_path / "here_files") == digest(tmp_path / "there_files")


@pytest.mark.parametrize("dropping", [{"dedupe": 2}, {"identical_photos": "drop"}])
def test_a_deduplicated_library_is_drawn_by_the_workers_the_first_time(client, tmp_path,
                                                                        dropping):
    # Its packed tiles are mapped before they are renamed into place: the workers were
    # sent the temporary's name and the run failed, saying the index was not on them.
    # Identical photos left out go the same way (the workers leave them out too).
    tiles = make_colour_folder(tmp_path / "tiles", 30, size=16, seed=2)
    for number in range(0, 30, 5):
        (tiles / f"u{number:03d}.png").write_bytes((tiles / f"t{number:03d}.png").read_bytes())
    target = tmp_path / "target.png"
    Image.fromarray(noisy_target()).save(target)
    options = MosaicOptions(cell_px=4, tile_px=8, preset="seed", **dropping)
    one = make_mosaic(target, tiles, options, cache_dir=tmp_path / "one")
    one.write(tmp_path / "one.png")
    two = make_on_cluster(client, target, tiles, options, cache_dir=tmp_path / "two")
    assert write_on_cluster(client, two.renderer, tmp_path / "two.png", two.options,
                            cache_dir=tmp_path / "two", rows_per_task=3)
    assert digest(tmp_path / "one.png") == digest(tmp_path / "two.png")


def test_a_render_of_jpeg_photos_on_a_cluster_is_the_make(client, tmp_path):
    # At the size tiles were matched at, the client cuts JPEG photos as the index cut
    # them (libjpeg-turbo's scaled decoding); the workers cut them with Pillow's.
    photos = make_jpeg_photos(tmp_path / "photos", seed=5)
    target = tmp_path / "target.png"
    Image.fromarray(noisy_target()).save(target)
    options = MosaicOptions(cell_px=4, tile_px=8, preset="seed")
    made = make_mosaic(target, photos, options, cache_dir=tmp_path / "cache")
    made.write(tmp_path / "made.png")
    made.placements.write(tmp_path / "placements.json")
    renderer = placements_renderer(Placements.read(tmp_path / "placements.json"),
                                   cache_dir=tmp_path / "cache")
    assert write_on_cluster(client, renderer, tmp_path / "there.png", options,
                            cache_dir=tmp_path / "cache", rows_per_task=3)
    assert digest(tmp_path / "made.png") == digest(tmp_path / "there.png")


def test_a_killed_runs_scratch_folder_is_removed_by_the_next_match(client, tmp_path):
    # A run killed mid-match (SIGKILL: no finally) left the grid's cells in the cache's
    # scratch folder for good, up to hundreds of megabytes a run.
    from mosaicist.distributed import _match

    tiles = make_colour_folder(tmp_path / "tiles", 30, size=8)
    target = tmp_path / "target.png"
    Image.fromarray(noisy_target()).save(target)
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    dead = int(ended.stdout)
    cache = tmp_path / "cache"
    host = _match._host()
    folders = {name: cache / "cluster" / f"match-{name}-0123abcd" for name in
               (f"{host}-{dead}", f"{host}-{os.getpid()}", f"elsewhere-{dead}")}
    for folder in folders.values():
        folder.mkdir(parents=True)
        (folder / "cells.npy").write_bytes(b"cells")
    make_on_cluster(client, target, tiles, MosaicOptions(cell_px=4, tile_px=8, preset="seed"),
                    cache_dir=cache, block_cells=40)
    assert not folders[f"{host}-{dead}"].exists()
    # A live run's, and another machine's (whose processes this one cannot know), are kept.
    assert folders[f"{host}-{os.getpid()}"].is_dir()
    assert folders[f"elsewhere-{dead}"].is_dir()
    assert sorted(path.name for path in (cache / "cluster").iterdir()) == sorted(
        folder.name for folder in folders.values() if folder.exists())


def test_a_cluster_write_stopped_midway_closes_its_bands_while_the_client_is_open(
        client, tmp_path, monkeypatch):
    # Interrupted, the bands' generator was closed only after the cluster had gone: its
    # futures' cancelling printed "Exception ignored ... IOLoop is closed".
    from mosaicist.distributed import _render

    tiles = make_colour_folder(tmp_path / "tiles", 20, size=8)
    target = tmp_path / "target.png"
    Image.fromarray(noisy_target()).save(target)
    options = MosaicOptions(cell_px=4, tile_px=8)
    mosaic = make_on_cluster(client, target, tiles, options, cache_dir=tmp_path / "c")
    made = []
    real_bands = _render._cluster_bands

    def recorded(*args, **kwargs):
        made.append(real_bands(*args, **kwargs))
        return made[-1]

    def interrupted(path, picture, options, show_progress):
        next(iter(picture.bands))
        raise KeyboardInterrupt

    monkeypatch.setattr(_render, "_cluster_bands", recorded)
    monkeypatch.setattr(_render, "write_output", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_on_cluster(client, mosaic.renderer, tmp_path / "out.png", mosaic.options,
                         cache_dir=tmp_path / "c", rows_per_task=2)
    assert len(made) == 1 and made[0].gi_frame is None  # closed, its futures cancelled


def test_a_worker_without_the_index_fails_a_render_in_one_line(client, tmp_path):
    # The index's tiles went to the workers as a ShardedTiles, which maps its files as it
    # is unpickled: a worker without them died reading its task, three times over, and
    # the run blamed the task's memory (or, with no nanny to restart it, waited for ever).
    tiles = make_colour_folder(tmp_path / "tiles", 20, size=8)
    target = tmp_path / "target.png"
    Image.fromarray(noisy_target()).save(target)
    mosaic = make_mosaic(target, tiles, MosaicOptions(cell_px=4, tile_px=8),
                         cache_dir=tmp_path / "cache")
    workers = set(client.nthreads())
    # As if the workers were on another filesystem: the files gone, this process's maps kept.
    for path in (tmp_path / "cache").rglob("*.u8"):
        path.unlink()
    with pytest.raises(MosaicistError, match="the index is not on this worker; the cache must "
                                             "be on a filesystem every worker shares"):
        write_on_cluster(client, mosaic.renderer, tmp_path / "out.png", mosaic.options,
                         cache_dir=tmp_path / "cache", rows_per_task=2)
    assert set(client.nthreads()) == workers  # none died (a new one has a new address)


def test_a_worker_without_the_index_fails_a_match_in_one_line(tmp_path):
    # It said "<tiles>: no usable tile images found", of a folder of tiles that is there.
    from mosaicist.distributed import _match

    tiles = make_colour_folder(tmp_path / "tiles", 4, size=8)
    index = tmp_path / "elsewhere" / "indexes" / "tiles" / "px8"
    job = _match.MatchJob(str(tiles), str(tmp_path / "elsewhere"), str(index), 1, 4,
                          MosaicOptions(tile_px=8), 8, str(tmp_path / "cells.npy"))
    with pytest.raises(MosaicistError) as raised:
        _match._library(job)
    assert str(raised.value) == (f"{index}: the index folder is not on this worker; the cache "
                                 f"must be on a filesystem every worker shares")


def test_a_worker_with_an_empty_index_folder_fails_a_match_in_one_line(tmp_path):
    # Its own disk has the folder (made by a run of its own), not the index: it said
    # "<tiles>: no usable tile images found", of a folder of tiles that is there.
    from mosaicist.distributed import _match

    tiles = make_colour_folder(tmp_path / "tiles", 4, size=8)
    index = tmp_path / "elsewhere" / "indexes" / "tiles" / "px8"
    index.mkdir(parents=True)
    job = _match.MatchJob(str(tiles), str(tmp_path / "elsewhere"), str(index), 1, 4,
                          MosaicOptions(tile_px=8), 8, str(tmp_path / "cells.npy"))
    with pytest.raises(MosaicistError) as raised:
        _match._library(job)
    assert str(raised.value) == (f"{index}: the index is not on this worker; the cache "
                                 f"must be on a filesystem every worker shares")


def test_an_unreachable_scheduler_is_one_line(monkeypatch):
    monkeypatch.setattr(_cluster, "CONNECT_SECONDS", 1)
    with pytest.raises(MosaicistError, match="cannot reach the Dask scheduler"):
        with client_for("tcp://127.0.0.1:9"):
            pass


class FakeServer:
    """A TCP server on 127.0.0.1 that is no Dask scheduler, in a thread, closed after.

    ``silent``: accepts and says nothing; ``http``: answers a request as a web
    server does (a status page's port); ``garbage``: a few bytes that look
    like the start of a Dask message.
    """

    def __init__(self, mode: str) -> None:
        import socket

        self.mode = mode
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections: list = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.connections.append(connection)
            with contextlib.suppress(OSError):
                if self.mode == "http":
                    connection.recv(65536)
                    connection.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                elif self.mode == "garbage":
                    connection.recv(65536)
                    connection.sendall((1).to_bytes(8, "little") + (4).to_bytes(8, "little")
                                       + b"junk")

    def close(self) -> None:
        self.listener.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def quick_connect(monkeypatch):
    """Connection attempts that give up after a second."""
    monkeypatch.setattr(_cluster, "CONNECT_SECONDS", 1)
    monkeypatch.setattr(_cluster, "_ANSWER_SECONDS", 0.5)


@pytest.mark.parametrize(("mode", "message"), [
    # Dask's handshake read waited for ever.
    ("silent", "no Dask scheduler answers there (it accepted the connection but never "
               "answered)"),
    # Read as a Dask message: "out of memory" (a length of exabytes), or a traceback, then
    # 20 s more at the exit closing the half-made client, with another traceback.
    ("http", "not a Dask scheduler (it answered in another protocol)"),
    ("garbage", "not a Dask scheduler (it answered in another protocol)"),
])
def test_an_address_where_no_scheduler_answers_is_one_line_and_quick(quick_connect, mode,
                                                                      message):
    server = FakeServer(mode)
    try:
        started = time.monotonic()
        with pytest.raises(MosaicistError) as raised, client_for(server.address):
            pass
        assert str(raised.value) == f"{server.address}: {message}"
        assert time.monotonic() - started < 5
    finally:
        server.close()


def test_tls_without_its_settings_is_one_line():
    # Dask raised a TypeError deep in its connect (a traceback, then 20 s at the exit).
    with pytest.raises(MosaicistError, match=r"^tls://127\.0\.0\.1:9: tls:// needs Dask's "
                                             r"TLS settings"):
        with client_for("tls://127.0.0.1:9"):
            pass


def test_an_unknown_host_says_why(quick_connect):
    with pytest.raises(MosaicistError) as raised, client_for("tcp://no-such-host.invalid:8786"):
        pass
    message = str(raised.value)
    assert message.startswith("tcp://no-such-host.invalid:8786: cannot reach the Dask "
                              "scheduler (Timed out trying to connect")
    assert len(message.splitlines()) == 1 and "<" not in message  # no Dask object names


class FinishedAtTheTimeout:
    """A future whose wait for its result runs out just as it finishes (a busy machine)."""

    client = None

    def __init__(self, own_error: BaseException | None = None) -> None:
        self.own_error = own_error
        self.waits = 0

    def result(self, timeout=None):
        self.waits += 1
        if self.own_error is not None:
            raise self.own_error
        if self.waits == 1:
            raise TimeoutError(f"timed out after {timeout} s.")  # as Dask's wait runs out
        return "rows"

    def done(self) -> bool:
        return self.waits > 0  # finished during the first wait


def test_a_task_that_finishes_as_its_wait_runs_out_gives_its_result():
    # The wait's own TimeoutError was taken for the task's: "error: timed out after 1 s.",
    # now and then, from a render or a match on a loaded machine.
    assert _cluster.task_result(FinishedAtTheTimeout(), "killed") == "rows"
    own = TimeoutError("the task's own")
    with pytest.raises(TimeoutError) as raised:
        _cluster.task_result(FinishedAtTheTimeout(own), "killed")
    assert raised.value is own


def test_signals_while_held_come_after_the_block():
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT has another handler here")
    held = _cluster._HeldSignals()
    with held:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # its handler runs here: noted, nothing raised
    assert held.received == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        held.deliver()
    # SIGTERM is held too (not delivered here: it would end the tests).
    before = signal.getsignal(signal.SIGTERM)
    if before is signal.SIG_DFL:
        held = _cluster._HeldSignals()
        with held:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
        assert held.received == signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    # A second Ctrl+C is not held: a start-up that hangs can still be stopped.
    with pytest.raises(KeyboardInterrupt), _cluster._HeldSignals():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_sigterm_held_under_the_command_lines_unwinding_unwinds_after_the_block():
    # The command line gave SIGTERM its default action while a local cluster started,
    # so that it was held: delivered after, it ended the process by the signal (-15,
    # not 143, and SIGHUP's -1) in 4 of 6 stops a second or two in.
    from mosaicist._runtime import TERMINATING_SIGNALS, unwind_on_terminate

    if any(signal.getsignal(number) is not signal.SIG_DFL for number in TERMINATING_SIGNALS):
        pytest.skip("SIGTERM or SIGHUP has another handler here")
    for number in TERMINATING_SIGNALS:
        with pytest.raises(SystemExit) as stopped, unwind_on_terminate():
            held = _cluster._HeldSignals()
            with held:
                os.kill(os.getpid(), number)
                time.sleep(0.05)  # noted, nothing raised
            assert held.received == number
            held.deliver()
        assert stopped.value.code == 128 + number
    # An application's own handler is left alone.
    seen = []
    before = signal.signal(signal.SIGTERM, lambda number, frame: seen.append(number))
    try:
        with _cluster._HeldSignals() as held:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
        assert held.received is None and seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, before)


def test_the_resource_tracker_starts_with_sighup_blocked(tmp_path):
    # A terminal closed under a batch killed the tracker with the group; the one
    # started again printed a KeyError traceback for each semaphore released.
    script = ("from multiprocessing import resource_tracker as tracker\n"
              "from mosaicist._runtime import resource_tracker_without_hangups as start\n"
              "start()\n"
              "status = open(f'/proc/{tracker._resource_tracker._pid}/status').read()\n"
              "print(next(line for line in status.splitlines() if line.startswith('SigBlk')))\n")
    if not Path("/proc/self/status").exists():
        pytest.skip("no /proc here")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    blocked = int(done.stdout.split()[-1], 16)
    assert blocked & (1 << (signal.SIGHUP - 1))


def _marked(psutil, marker: str) -> list[int]:
    """The processes (not zombies) whose environment carries ``marker``."""
    found = []
    for process in psutil.process_iter(["environ", "status"]):
        environ = process.info["environ"] or {}
        if environ.get("MOSAICIST_TEST_MARK") == marker and \
                process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(process.pid)
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals and /proc")
def test_ctrl_c_while_a_local_cluster_starts_is_one_line(tmp_path):
    # Interrupted inside Dask's start-up, the cluster was left half made and Dask's
    # exit hook printed a long traceback after our one line.
    psutil = pytest.importorskip("psutil")
    tiles = make_colour_folder(tmp_path / "tiles", 30, size=16)
    target = tmp_path / "target.png"
    Image.fromarray(noisy_target()).save(target)
    marker = f"cluster-start-{os.getpid()}-{time.monotonic_ns()}"
    env = dict(os.environ, MOSAICIST_CACHE_DIR=str(tmp_path / "cache"),
               MOSAICIST_TEST_MARK=marker)
    mosaicist = [sys.executable, "-m", "mosaicist"]
    # Indexed first: the first process the run starts is then its cluster's worker.
    subprocess.run([*mosaicist, "index", str(tiles), "--tile-px", "8", "-q"], env=env,
                   check=True, timeout=WAIT_SECONDS)
    process = subprocess.Popen(
        [*mosaicist, "make", str(target), "--tiles", str(tiles), "--tile-px", "8", "--cell", "8",
         "-o", str(tmp_path / "out.png"), "-q", "--scheduler", "local:1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        parent = psutil.Process(process.pid)
        deadline = time.monotonic() + WAIT_SECONDS
        while process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(psutil.Error):
                if parent.children():
                    break
            time.sleep(0.002)
        assert process.poll() is None, "the run ended before its cluster started"
        process.send_signal(signal.SIGINT)  # Ctrl+C, to the run's own process
        _, errors = process.communicate(timeout=WAIT_SECONDS)
    finally:
        _kill_group_if_running(process)
    _assert_interrupted_quietly(psutil, process, errors, marker)
    assert not (tmp_path / "out.png").exists()


def test_a_task_that_fails_on_a_local_cluster_is_one_line(tmp_path):
    # The workers of a local cluster write to the run's stderr, and each logged the
    # failed task with its traceback ("Compute Failed"), -q or not, above the one line.
    tiles = make_colour_folder(tmp_path / "tiles", 12, size=8)
    target = tmp_path / "target.png"
    Image.fromarray(noisy_target()).save(target)
    env = dict(os.environ, MOSAICIST_CACHE_DIR=str(tmp_path / "cache"))
    mosaicist = [sys.executable, "-m", "mosaicist"]
    subprocess.run([*mosaicist, "make", str(target), "--tiles", str(tiles), "--cell", "8",
                    "--tile-px", "8", "--preset", "seed", "-o", str(tmp_path / "out.png"),
                    "--placements", str(tmp_path / "out.json"), "-q"],
                   env=env, check=True, timeout=WAIT_SECONDS)
    for photo in tiles.iterdir():
        photo.write_bytes(b"no longer a picture")
    # Drawn larger than the index: from the original photos, by the workers.
    done = subprocess.run([*mosaicist, "render", str(tmp_path / "out.json"), "-o",
                           str(tmp_path / "again.png"), "--tile-px", "16", "-q",
                           "--scheduler", "local:2"],
                          capture_output=True, text=True, env=env, timeout=WAIT_SECONDS)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    # The file itself, not its id in the library (session 32: 't3.png' alone).
    assert re.fullmatch(r"mosaicist: error: .*/t\d+\.png: cannot open the tile's original: .*",
                        lines[0])
    assert str(tiles) in lines[0]
    assert not (tmp_path / "again.png").exists()


def _kill_group_if_running(process: subprocess.Popen) -> None:
    """Kill a test's run (started in a session of its own) if it still runs."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _assert_interrupted_quietly(psutil, process: subprocess.Popen, errors: str,
                                marker: str) -> None:
    """The run ended as Ctrl+C ends it, in one line, and left nothing running."""
    assert process.returncode == 130
    assert errors.splitlines() == ["mosaicist: error: interrupted"], errors
    # Nothing left running: no nanny, worker or resource tracker.
    deadline = time.monotonic() + 20
    while _marked(psutil, marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _marked(psutil, marker)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals and /proc")
def test_ctrl_c_in_a_terminal_mid_run_is_one_line(tmp_path):
    # A terminal's Ctrl+C reaches every process of its group, a local cluster's workers
    # too: each printed a traceback of Dask's under the run's one line, and a worker
    # stopped amid a task a warning of its cancelling (without -q).
    psutil = pytest.importorskip("psutil")
    tiles = make_colour_folder(tmp_path / "tiles", 8, size=8)
    marker = f"ctrl-c-{os.getpid()}-{time.monotonic_ns()}"
    started = tmp_path / "started"
    code = f"""
import pathlib, time
from mosaicist.distributed import _index
def wait_here(client, seconds=10):
    # The cluster is up, and its worker busy with a task: the run is under way. (A short
    # task: a worker is stopped after it, or killed after 4 s.)
    busy = client.submit(time.sleep, 1.5, pure=False)
    while not any(client.processing().values()):
        time.sleep(0.01)
    pathlib.Path({str(started)!r}).touch()
    time.sleep({WAIT_SECONDS})
_index.require_workers = wait_here
from mosaicist.cli import main
main(["index", {str(tiles)!r}, "--tile-px", "8", "--scheduler", "local:1"])
"""
    env = dict(os.environ, MOSAICIST_CACHE_DIR=str(tmp_path / "cache"),
               MOSAICIST_TEST_MARK=marker)
    process = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while not started.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert started.exists(), "the run never started"
        os.killpg(process.pid, signal.SIGINT)  # to the whole group, as a terminal does
        _, errors = process.communicate(timeout=WAIT_SECONDS)
    finally:
        _kill_group_if_running(process)
    _assert_interrupted_quietly(psutil, process, errors, marker)


# -- a cluster of subprocesses -------------------------------------------------------


#: A command (then a shell's script and its arguments) run in a mount namespace of its
#: own, where the script can mount a folder over another, seen by nothing else.
HIDING = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c"]


def can_hide(folder: Path) -> bool:
    """Whether a process can be started here to which ``folder`` is empty (see HIDING)."""
    if not sys.platform.startswith("linux"):
        return False
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(
            [*HIDING, 'mount -t tmpfs tmpfs "$0" && test -z "$(ls -A "$0")"', str(folder)],
            capture_output=True, timeout=WAIT_SECONDS).returncode == 0
    return False


class SubprocessCluster:
    """``dask scheduler`` and ``dask worker`` processes on 127.0.0.1, each in its own group."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.processes: dict[str, subprocess.Popen] = {}
        scheduler_file = folder / "scheduler.json"
        self._start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", "0",
                                  "--no-dashboard", "--scheduler-file", str(scheduler_file)])
        deadline = time.monotonic() + WAIT_SECONDS
        self.address = None
        while self.address is None:
            # The file appears before Dask has written it (empty, or half of it): a
            # loaded machine read it empty (JSONDecodeError in a clean-clone CI run).
            with contextlib.suppress(OSError, ValueError, KeyError):
                self.address = json.loads(scheduler_file.read_text())["address"]
            if self.address is None:
                if time.monotonic() > deadline:
                    # Not left running: the fixture's finally never sees a cluster
                    # whose making failed (a scheduler outlived a failed CI run).
                    self.stop()
                    raise TimeoutError(f"no scheduler address in {scheduler_file}")
                time.sleep(0.1)

    def start_worker(self, name: str, hidden: Path | None = None) -> None:
        """A worker; one to which ``hidden`` is an empty folder, as if on another machine."""
        self._start(name, ["worker", self.address, "--name", name, "--nthreads", "1",
                           "--no-nanny", "--host", "127.0.0.1", "--no-dashboard",
                           "--local-directory", str(self.folder / name)], hidden)

    def _start(self, name: str, arguments: list[str], hidden: Path | None = None) -> None:
        command = [sys.executable, "-m", "dask", *arguments]
        if hidden is not None:
            command = [*HIDING, 'mount -t tmpfs tmpfs "$0" && exec "$@"', str(hidden),
                       *command]
        log = open(self.folder / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        self.processes[name] = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            cwd=self.folder)
        log.close()

    def kill(self, name: str) -> None:
        process = self.processes[name]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=WAIT_SECONDS)

    def stop(self) -> None:
        for name, process in reversed(list(self.processes.items())):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.kill(name)


@pytest.fixture(scope="module")
def subprocess_cluster(tmp_path_factory):
    cluster = SubprocessCluster(tmp_path_factory.mktemp("dask"))
    try:
        for name in ("worker-a", "worker-b"):
            cluster.start_worker(name)
        yield cluster
    finally:
        cluster.stop()


def test_the_command_line_on_a_running_scheduler(subprocess_cluster, tmp_path):
    tiles = make_colour_folder(tmp_path / "tiles", 30, size=16)
    target = tmp_path / "target.png"
    Image.fromarray(noisy_target()).save(target)
    env = dict(os.environ, MOSAICIST_CACHE_DIR=str(tmp_path / "cache"))
    address = subprocess_cluster.address

    def mosaicist(*arguments: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mosaicist", *arguments],
                              capture_output=True, text=True, env=env, timeout=WAIT_SECONDS)

    indexed = mosaicist("index", str(tiles), "--tile-px", "8", "--scheduler", address)
    assert indexed.returncode == 0, indexed.stderr
    assert "30 tiles of 8 px" in indexed.stderr and "30 decoded" in indexed.stderr
    common = ["--tiles", str(tiles), "--cell", "4", "--tile-px", "8", "--preset", "seed"]
    made = mosaicist("make", str(target), *common, "-o", str(tmp_path / "there.png"),
                     "--placements", str(tmp_path / "there.json"), "--scheduler", address)
    assert made.returncode == 0, made.stderr
    here = mosaicist("make", str(target), *common, "-o", str(tmp_path / "here.png"))
    assert here.returncode == 0, here.stderr
    assert digest(tmp_path / "here.png") == digest(tmp_path / "there.png")
    rendered = mosaicist("render", str(tmp_path / "there.json"), "-o",
                         str(tmp_path / "again.png"), "--scheduler", address)
    assert rendered.returncode == 0, rendered.stderr
    assert digest(tmp_path / "again.png") == digest(tmp_path / "there.png")
    bad = mosaicist("index", str(tiles), "--scheduler", "local:0")
    assert bad.returncode == 1
    assert bad.stderr.strip() == ("mosaicist: error: --scheduler local:N needs N from 1 to "
                                  "256, got 'local:0'")


def test_the_command_line_on_what_is_no_scheduler_is_one_line(subprocess_cluster, tmp_path):
    """A worker's address, or a port of another protocol: one line, at once, nothing after."""
    tiles = make_colour_folder(tmp_path / "tiles", 4, size=8)
    env = dict(os.environ, MOSAICIST_CACHE_DIR=str(tmp_path / "cache"))
    with client_for(subprocess_cluster.address) as watcher:
        watcher.wait_for_workers(1, timeout=WAIT_SECONDS)
        worker = sorted(watcher.nthreads())[0]
    server = FakeServer("http")
    try:
        for address, message in (
                (worker, f"{worker}: this is a Dask worker, not the scheduler; give "
                         f"--scheduler the scheduler's address ({subprocess_cluster.address})"),
                (server.address, f"{server.address}: not a Dask scheduler (it answered in "
                                 f"another protocol)")):
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-m", "mosaicist", "index", str(tiles), "--tile-px", "8",
                 "--scheduler", address], capture_output=True, text=True, env=env,
                timeout=WAIT_SECONDS)
            # Before: a traceback (or "out of memory"), then 20 s closing a half-made client.
            assert done.returncode == 1
            assert done.stderr.splitlines() == [f"mosaicist: error: {message}"]
            assert time.monotonic() - started < 15
    finally:
        server.close()


def _a_task_running(client):
    """A task of ``WAIT_SECONDS`` submitted to the cluster's worker, once it runs there."""
    client.wait_for_workers(1, timeout=WAIT_SECONDS)
    future = client.submit(time.sleep, WAIT_SECONDS, pure=False)
    deadline = time.monotonic() + WAIT_SECONDS
    while not any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return future


class Records(logging.Handler):
    """Every log record of a logger, kept (Dask's loggers do not reach pytest's)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_scheduler_lost_mid_run_is_one_line(tmp_path, quick_connect):
    # Dask cancels every task of a client that lost its scheduler: the run ended with a
    # traceback of FutureCancelledError, and closing the client logged another.
    cluster = SubprocessCluster(tmp_path)
    records = Records()
    logging.getLogger("distributed.client").addHandler(records)
    try:
        cluster.start_worker("worker-a")
        started = time.monotonic()
        with pytest.raises(MosaicistError) as raised:
            with client_for(cluster.address) as there:
                future = _a_task_running(there)
                cluster.kill("scheduler")
                started = time.monotonic()
                _index._result(future, "tiles")
        assert str(raised.value) == (f"lost the connection to the Dask scheduler at "
                                     f"{cluster.address}; its tasks are cancelled; the parts "
                                     f"finished are kept")
        assert time.monotonic() - started < 30  # the client's own reconnecting, then closing
        assert not [record for record in records.records if record.levelno >= logging.ERROR]
    finally:
        logging.getLogger("distributed.client").removeHandler(records)
        cluster.kill("worker-a")  # without a scheduler, it would take 10 s to stop
        cluster.stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGSTOP")
def test_a_scheduler_that_stops_answering_stops_the_run(tmp_path, monkeypatch):
    # A scheduler stopped (or hung) keeps its connections open: the watch's question
    # of how many workers it has waited for ever, and so did the run.
    monkeypatch.setattr(_cluster, "NO_ANSWER_SECONDS", 1)
    monkeypatch.setattr(_cluster, "WATCH_SECONDS", 0.2)
    monkeypatch.setattr(_cluster, "_ANSWER_SECONDS", 0.5)
    cluster = SubprocessCluster(tmp_path)
    scheduler = cluster.processes["scheduler"]
    outcome: dict[str, BaseException] = {}
    try:
        cluster.start_worker("worker-a")
        with client_for(cluster.address) as there:
            future = _a_task_running(there)
            os.kill(scheduler.pid, signal.SIGSTOP)

            def wait() -> None:
                try:
                    _index._result(future, "tiles")
                except BaseException as error:  # noqa: BLE001 - looked at below
                    outcome["error"] = error

            # On a thread: without the bound, the wait never ends.
            waiting = threading.Thread(target=wait, daemon=True)
            waiting.start()
            waiting.join(WAIT_SECONDS)
            os.kill(scheduler.pid, signal.SIGCONT)
        assert isinstance(outcome.get("error"), MosaicistError), outcome
        assert str(outcome["error"]) == (f"the Dask scheduler at {cluster.address} has not "
                                         f"answered for 1 s (stopped, or hung?); the run stops")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(scheduler.pid, signal.SIGCONT)
        cluster.kill("worker-a")
        cluster.stop()


def test_a_cluster_left_without_workers_stops_the_run(tmp_path, monkeypatch):
    # Its only worker (no nanny) killed: Dask waits for ever for another, and so did the run.
    monkeypatch.setattr(_cluster, "NO_WORKER_SECONDS", 1)
    monkeypatch.setattr(_cluster, "WATCH_SECONDS", 0.2)
    cluster = SubprocessCluster(tmp_path)
    try:
        cluster.start_worker("worker-a")
        with client_for(cluster.address) as there:
            there.wait_for_workers(1, timeout=WAIT_SECONDS)
            futures = [there.submit(time.sleep, WAIT_SECONDS, pure=False) for _ in range(2)]
            deadline = time.monotonic() + WAIT_SECONDS
            while not any(there.processing().values()) and time.monotonic() < deadline:
                time.sleep(0.01)
            cluster.kill("worker-a")
            message = (f"the Dask scheduler at {cluster.address} has had no workers for 1 s "
                       f"(all lost?); start some with 'dask worker {cluster.address}'")
            running = distributed.as_completed(futures, loop=there.loop)
            for wait in (lambda: _cluster.task_result(futures[0], "killed"),
                         lambda: next(_cluster.completed(running, _cluster.WorkerWatch(there)))):
                started = time.monotonic()
                with pytest.raises(MosaicistError) as raised:
                    wait()
                assert str(raised.value) == message
                assert time.monotonic() - started < 10
    finally:
        cluster.stop()


def run_killing_worker_b(cluster, work, caught, never):
    """``work(client)`` on a thread, with worker-b killed once ``caught(its tasks)``; its result.

    Fails the test with ``never`` when worker-b was never caught, and with
    ``work``'s error when it raised.
    """
    outcome: dict[str, object] = {}

    def run_there() -> None:
        with client_for(cluster.address) as there:
            try:
                outcome["result"] = work(there)
            except BaseException as error:  # noqa: BLE001 - reported below
                outcome["error"] = error

    runner = threading.Thread(target=run_there)
    with client_for(cluster.address) as watcher:
        watcher.wait_for_workers(2, timeout=WAIT_SECONDS)
        victim = next(address for address, info in
                      watcher.scheduler_info(n_workers=-1)["workers"].items()
                      if info["name"] == "worker-b")
        runner.start()
        killed = False
        deadline = time.monotonic() + WAIT_SECONDS
        while runner.is_alive() and time.monotonic() < deadline:
            if caught(watcher.processing(workers=[victim]).get(victim, [])):
                cluster.kill("worker-b")
                killed = True
                break
            time.sleep(0.002)
        runner.join(WAIT_SECONDS)
    assert killed, never
    assert "error" not in outcome, outcome.get("error")
    return outcome["result"]


def test_a_worker_killed_mid_run_costs_only_its_parts(subprocess_cluster, tmp_path):
    rng = np.random.default_rng(8)
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    for number in range(160):
        base = rng.integers(0, 256, 3)
        pixels = np.clip(base + rng.normal(0, 30, (180, 240, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(tiles / f"p{number:03d}.png")
    one = TileLibrary.open(tiles, 16, cache_dir=tmp_path / "one")

    def index_there(there):
        return index_library(there, tiles, 16, tmp_path / "two", part_entries=4)

    # Mid-run: parts already staged, and this worker holds some.
    two = run_killing_worker_b(
        subprocess_cluster, index_there,
        lambda busy: bool(busy) and bool(list((tmp_path / "two").rglob("shard-*.u8"))),
        "the worker was never caught with a part")
    assert isinstance(two, TileLibrary)
    assert_same_library(one, two)
    assert two.stats is not None and two.stats.decoded == 160


def test_a_worker_killed_mid_match_changes_no_pick(subprocess_cluster, tmp_path):
    tiles = make_colour_folder(tmp_path / "tiles", 120, size=16, seed=6)
    target = tmp_path / "target.png"
    Image.fromarray(noisy_target()).save(target)
    options = MosaicOptions(cell_px=2, tile_px=8, preset="seed")  # 20 x 28 cells
    one = make_mosaic(target, tiles, options, cache_dir=tmp_path / "one")
    if subprocess_cluster.processes["worker-b"].poll() is not None:
        subprocess_cluster.start_worker("worker-b")  # killed by the test before

    def make_there(there):
        # Many small tasks: 12 ranges of the library times 70 blocks of cells.
        return make_on_cluster(there, target, tiles, options, cache_dir=tmp_path / "two",
                               block_cells=8, range_tiles=10)

    # Amid the search.
    two = run_killing_worker_b(
        subprocess_cluster, make_there,
        lambda busy: any(str(key).startswith("search_range") for key in busy),
        "the worker was never caught searching")
    for name in ("tile", "distance", "transform", "tint", "gain"):
        assert np.array_equal(getattr(one.placements, name), getattr(two.placements, name))


def test_a_worker_without_mosaicist_is_one_line(tmp_path, monkeypatch):
    # It died reading its first task: "... has had no workers for 60 s (all lost?)".
    monkeypatch.setattr(_cluster, "NO_WORKER_SECONDS", 5)
    tiles = make_colour_folder(tmp_path / "tiles", 12, size=8)
    preload = tmp_path / "no_mosaicist.py"
    preload.write_text("import sys\nsys.modules['mosaicist'] = None  # not installed\n")
    (tmp_path / "dask").mkdir()
    cluster = SubprocessCluster(tmp_path / "dask")
    try:
        cluster._start("bare", ["worker", cluster.address, "--nthreads", "1", "--no-nanny",
                                "--host", "127.0.0.1", "--no-dashboard", "--preload",
                                str(preload)])
        with client_for(cluster.address) as there:
            there.wait_for_workers(1, timeout=WAIT_SECONDS)
            worker = _cluster.worker_addresses(there)[0]
            with pytest.raises(MosaicistError) as raised:
                index_library(there, tiles, 8, tmp_path / "cache")
    finally:
        cluster.stop()
    assert str(raised.value).startswith(f"{worker}: this Dask worker cannot import mosaicist "
                                        f"(ModuleNotFoundError: ")
    assert str(raised.value).endswith("); install the same mosaicist, with the same extras, "
                                      "on every worker")


def test_a_worker_that_cannot_see_the_tiles_leaves_the_index_as_it_was(tmp_path):
    # Every file of its parts was recorded as a failure ("No such file or directory"), which
    # the next updates skip as unchanged: even on one machine, the index left them out.
    tiles = make_colour_folder(tmp_path / "tiles", 20, size=8)
    if not can_hide(tiles):
        pytest.skip("no mount namespaces here (unshare)")
    (tmp_path / "dask").mkdir()
    cluster = SubprocessCluster(tmp_path / "dask")
    try:
        cluster.start_worker("elsewhere", hidden=tiles)
        with client_for(cluster.address) as there:
            there.wait_for_workers(1, timeout=WAIT_SECONDS)
            with pytest.raises(MosaicistError) as raised:
                index_library(there, tiles, 8, tmp_path / "cache")
    finally:
        if "elsewhere" in cluster.processes:
            cluster.kill("elsewhere")  # no need to wait for it to close
        cluster.stop()
    assert re.fullmatch(rf"{re.escape(str(tiles))}/t0\d\d\.png: this file of the tiles is not on "
                        rf"a worker; the tiles must be on a filesystem every worker shares",
                        str(raised.value))
    library = TileLibrary.open(tiles, 8, cache_dir=tmp_path / "cache")
    assert len(library) == 20
    assert library.stats is not None and library.stats.decoded == 20


def test_a_batch_on_a_local_cluster_writes_the_files_of_one_machine(tmp_path):
    from mosaicist.batch import batch_mosaics

    tiles = make_colour_folder(tmp_path / "tiles", 30, size=16, seed=2)
    targets = tmp_path / "targets"
    targets.mkdir()
    Image.fromarray(noisy_target()).save(targets / "a.png")
    Image.fromarray(noisy_target()[::-1, ::-1].copy()).save(targets / "b.png")
    options = MosaicOptions(cell_px=4, tile_px=8)
    outputs = {}
    for name, scheduler in (("one", None), ("two", "local:2")):
        result = batch_mosaics(targets, tiles, tmp_path / name, options, scheduler=scheduler,
                               cache_dir=tmp_path / f"cache-{name}")
        assert [target.status for target in result.results] == ["made", "made"], result.results
        outputs[name] = {path.name: path.read_bytes()
                         for path in sorted((tmp_path / name).glob("*.png"))}
    assert len(outputs["one"]) == 2 and outputs["one"] == outputs["two"]
