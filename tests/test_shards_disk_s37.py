"""A shard of a cluster's index that cannot be written: a full disk, a folder read-only or gone.

A worker writing its part of the index into a shard file let the raw
``OSError`` escape (``[Errno 28] No space left on device``, naming no file or
its ``.part``), and the run said "a worker could not write the index: No
space left on device". It must say in one line which shard file could not
be written and why, run no part again (a full disk is no dying worker),
publish nothing, and keep what was indexed before. A folder removed during
the run (its cache deleted) was said to be "not on this worker", as if the
cache were not shared.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import make_colour_folder

from mosaicist.errors import MosaicistError
from mosaicist.library import TileLibrary
from mosaicist.library._shards import SHARD_PREFIX, write_shard
from mosaicist.sources.folder import FolderSource

distributed = pytest.importorskip("distributed")

from mosaicist.distributed import _index, client_for, index_library  # noqa: E402

#: Seconds to wait for the parts still running after a run stopped.
WAIT_SECONDS = 60


def _shard_files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith(SHARD_PREFIX))


@contextlib.contextmanager
def _fsync_fails(number: int) -> Iterator[None]:
    """``os.fsync`` fails with ``number`` in this process, as a full disk's may (NFS)."""
    real = os.fsync

    def refused(descriptor: int) -> None:
        raise OSError(number, os.strerror(number))

    os.fsync = refused
    try:
        yield
    finally:
        os.fsync = real


@pytest.mark.parametrize(("number", "said"), [
    (errno.ENOSPC, "no space left on device while writing the tile index; free some space "
                   "and run again"),
    (errno.EROFS, "cannot write the tile index: Read-only file system"),
], ids=["full", "read-only"])
def test_a_shard_that_cannot_be_written_is_one_line_naming_it(tmp_path, number, said):
    tiles = make_colour_folder(tmp_path / "tiles", 5, size=8)
    folder = tmp_path / "index"
    folder.mkdir()
    source = FolderSource(tiles, workers=1)
    with pytest.raises(MosaicistError) as raised, _fsync_fails(number):
        write_shard(source, source.scan(), 8, (1, 1), "centre", folder)
    assert re.fullmatch(rf"{re.escape(str(folder))}/shard-[0-9a-f]{{32}}\.u8: {re.escape(said)}",
                        str(raised.value))
    assert list(folder.iterdir()) == []  # no .part left


def test_a_shard_write_past_the_room_left_is_one_line_and_leaves_nothing(tmp_path):
    # Writing past RLIMIT_FSIZE fails as a full disk does (EFBIG, Python ignoring SIGXFSZ),
    # at a write: the buffered file's close then flushed again, and its raw OSError won.
    resource = pytest.importorskip("resource")
    tiles = make_colour_folder(tmp_path / "tiles", 12, size=64)
    folder = tmp_path / "index"
    folder.mkdir()
    source = FolderSource(tiles, workers=1)
    entries = source.scan()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    ignored = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, hard))  # 5 tiles of 64 px and a bit
    try:
        with pytest.raises(MosaicistError) as raised:
            write_shard(source, entries, 64, (1, 1), "centre", folder)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, ignored)
    assert re.fullmatch(rf"{re.escape(str(folder))}/shard-[0-9a-f]{{32}}\.u8: cannot write the "
                        rf"tile index: File too large", str(raised.value))
    assert list(folder.iterdir()) == []
    # With room, the same entries make a whole shard.
    name, count, failed = write_shard(source, entries, 64, (1, 1), "centre", folder)
    assert (count, failed) == (12, 0)
    assert (folder / name).stat().st_size == 12 * 64 * 64 * 3


# -- on a local cluster ---------------------------------------------------------------


@pytest.fixture(scope="module")
def client():
    with client_for("local:2") as cluster_client:
        yield cluster_client


def _settle(client) -> None:
    """Wait for the parts a stopped run left running (they finish on their own)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.05)


def _count(folder: Path, table: str) -> int:
    connection = sqlite3.connect(folder / "manifest.sqlite")
    try:
        return connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        connection.close()


def test_a_full_disk_on_a_worker_is_one_line_run_once_keeping_what_was_indexed(
        client, tmp_path, monkeypatch):
    # It said "a worker could not write the index: No space left on device", no file named.
    tiles = make_colour_folder(tmp_path / "tiles", 8, size=8)
    cache = tmp_path / "cache"
    index_library(client, tiles, 8, cache, part_entries=4)
    folder = next(cache.glob("indexes/*/px8"))
    make_colour_folder(tmp_path / "more", 16, size=8)
    for name in ("t012.png", "t013.png", "t014.png", "t015.png",
                 "t008.png", "t009.png", "t010.png", "t011.png"):
        shutil.copy(tmp_path / "more" / name, tiles / name)
    calls = tmp_path / "calls"
    calls.mkdir()
    decode = _index.decode_part

    def full_disk(spec, cache, tile, directory, part):
        last = any(entry.source_id == "t015.png" for entry in part.entries)
        (calls / f"{'last' if last else 'other'}-{uuid.uuid4().hex}").touch()
        if not last:
            return decode(spec, cache, tile, directory, part)
        real = os.fsync

        def no_room(descriptor):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        os.fsync = no_room  # in this worker, for this part only
        try:
            return decode(spec, cache, tile, directory, part)
        finally:
            os.fsync = real

    monkeypatch.setattr(_index, "decode_part", full_disk)
    with pytest.raises(MosaicistError) as raised:
        index_library(client, tiles, 8, cache, part_entries=4)
    _settle(client)
    assert re.fullmatch(rf"{re.escape(str(folder))}/shard-[0-9a-f]{{32}}\.u8: no space left on "
                        rf"device while writing the tile index; free some space and run "
                        rf"again; the parts finished are kept", str(raised.value))
    # Not run again on another worker: it would fail the same way.
    assert len(list(calls.glob("last-*"))) == 1
    # Nothing published: the library indexed before stands; the new part may be staged.
    assert _count(folder, "tiles") == 8
    staged = _count(folder, "staged")
    assert staged in (0, 4)
    assert not any(name.endswith(".part") for name in _shard_files(folder))
    monkeypatch.setattr(_index, "decode_part", decode)
    library = index_library(client, tiles, 8, cache, part_entries=4)
    assert library.stats is not None and library.stats.decoded == 8 - staged
    single = TileLibrary.open(tiles, 8, cache_dir=tmp_path / "single")
    assert library.source_ids == single.source_ids
    assert np.asarray(library.tiles).tobytes() == np.asarray(single.tiles).tobytes()


def test_an_index_folder_removed_mid_run_is_said_so_not_unshared(client, tmp_path, monkeypatch):
    # The worker found no index folder and said "...: the index folder is not on this
    # worker; the cache must be on a filesystem every worker shares": it is, but gone.
    tiles = make_colour_folder(tmp_path / "tiles", 12, size=8)
    cache = tmp_path / "cache"
    decode = _index.decode_part

    def removed(spec, cache, tile, directory, part):
        if any(entry.source_id == "t011.png" for entry in part.entries):
            # Gone at once, as an unmounted folder is (rm -r empties it first: a run can
            # then meet a shard's rows gone, its folder still there, and say so).
            gone = f"{directory}.gone"
            with contextlib.suppress(FileNotFoundError):
                os.rename(directory, gone)
            shutil.rmtree(gone, ignore_errors=True)
        return decode(spec, cache, tile, directory, part)

    monkeypatch.setattr(_index, "decode_part", removed)
    with pytest.raises(MosaicistError) as raised:
        index_library(client, tiles, 8, cache, part_entries=4)
    _settle(client)
    folder = next(cache.glob("indexes/*")) / "px8"
    assert str(raised.value) == (f"{folder}: the index folder was removed during the run (its "
                                 f"cache deleted or unmounted?); run again to index anew")
    assert not folder.exists()
    monkeypatch.setattr(_index, "decode_part", decode)
    library = index_library(client, tiles, 8, cache, part_entries=4)
    assert library.stats is not None and library.stats.decoded == 12
