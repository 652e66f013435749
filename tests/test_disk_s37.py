"""A full disk under a tile index's update and under a Deep Zoom pyramid written again.

A real full disk refuses every file at once: the packed tiles the update was
growing, and then the manifest that its last commit (keeping what was decoded)
would grow. Here the packed file's writes fail with ENOSPC and, from then on,
the manifest's commits with SQLite's "database or disk is full". The message
must name the file that could not grow, the packed tiles, not the manifest
whose commit failed after it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from conftest import make_colour_folder

from mosaicist.errors import MosaicistError
from mosaicist.library import TileLibrary
from mosaicist.library import _update as update_module
from mosaicist.sources.folder import FolderSource


def _open_library(folder: Path, cache: Path) -> TileLibrary:
    return TileLibrary.open(FolderSource(folder, workers=1), 8, cache_dir=cache)


def _full_disk_after(monkeypatch: pytest.MonkeyPatch, writes: int) -> None:
    """From the packed file's write number ``writes`` on, the disk is full for every file."""
    real_write_all = update_module._write_all
    real_transaction = update_module.transaction
    full = [False]
    count = [0]

    def write_all(handle, data):
        count[0] += 1
        if count[0] >= writes:
            full[0] = True
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write_all(handle, data)

    @contextlib.contextmanager
    def transaction(connection):
        with real_transaction(connection) as opened:
            yield opened
            if full[0]:
                error = sqlite3.OperationalError("database or disk is full")
                error.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
                raise error

    monkeypatch.setattr(update_module, "_write_all", write_all)
    monkeypatch.setattr(update_module, "transaction", transaction)


def test_a_packed_file_the_full_disk_would_not_grow_is_named_not_the_manifest(
        tmp_path, monkeypatch):
    # The tiles' write failed (ENOSPC, naming tiles-0.u8), then the commit that keeps
    # what was decoded failed on the same full disk, and its error replaced the first:
    # "manifest.sqlite: no space left on device for the tile index".
    folder = make_colour_folder(tmp_path / "tiles", 10)
    cache = tmp_path / "cache"
    monkeypatch.setattr(update_module, "COMMIT_EVERY", 3)
    _full_disk_after(monkeypatch, 5)
    with pytest.raises(MosaicistError) as caught:
        _open_library(folder, cache)
    store = next((cache / "indexes").glob("*/px8/tiles-0.u8"))
    assert str(caught.value) == (f"{store}: no space left on device while writing the tile "
                                 "index; free some space and run again")
    # The three tiles of the batch that committed stay; the fourth, never committed, goes.
    assert store.stat().st_size == 3 * 8 * 8 * 3
    monkeypatch.undo()
    resumed = _open_library(folder, cache)
    assert resumed.stats.decoded == 7 and len(resumed) == 10


def test_a_last_commit_the_full_disk_refused_leaves_no_uncommitted_tiles(tmp_path, monkeypatch):
    # Every tile fitted, then the last commit found the disk full: the manifest is the
    # file that could not grow (named), and the packed file is cut back to its committed
    # tiles (it kept all ten, holding the room the next try needs).
    folder = make_colour_folder(tmp_path / "tiles", 10)
    cache = tmp_path / "cache"
    monkeypatch.setattr(update_module, "COMMIT_EVERY", 4)
    real_write_all = update_module._write_all
    real_transaction = update_module.transaction
    written = [0]

    def write_all(handle, data):
        written[0] += 1
        real_write_all(handle, data)

    @contextlib.contextmanager
    def transaction(connection):
        with real_transaction(connection) as opened:
            yield opened
            if written[0] == 10:  # the last 2 tiles' commit (after batches of 4 and 4)
                error = sqlite3.OperationalError("database or disk is full")
                error.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
                raise error

    monkeypatch.setattr(update_module, "_write_all", write_all)
    monkeypatch.setattr(update_module, "transaction", transaction)
    with pytest.raises(MosaicistError) as caught:
        _open_library(folder, cache)
    store = next((cache / "indexes").glob("*/px8/tiles-0.u8"))
    assert str(caught.value) == (f"{store.with_name('manifest.sqlite')}: no space left on "
                                 "device for the tile index; free some space and run again")
    assert store.stat().st_size == 8 * 8 * 8 * 3
    monkeypatch.undo()
    resumed = _open_library(folder, cache)
    assert resumed.stats.decoded == 2 and len(resumed) == 10
    np.testing.assert_array_equal(resumed.tiles, _open_library(folder, cache).tiles)


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too), by its path there, with its bytes."""
    return {os.fspath(path.relative_to(folder)): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_rewrite_the_full_disk_refused_partway_leaves_the_old_pyramid_whole(
        tmp_path, monkeypatch):
    # On a disk with room for one pyramid but not two, writing it again failed with
    # "No space left on device" alone: nothing said that its new tiles are staged beside
    # the old ones, which the rewrite would only then free.
    from mosaicist.render import _deepzoom, files_folder, write_deep_zoom

    path = tmp_path / "m.dzi"
    picture = np.random.default_rng(37).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    write_deep_zoom(iter([picture]), 40, 40, path, tile_size=8, format="png", workers=1)
    old = _tree(tmp_path)
    real_write = _deepzoom._TileSink._write
    written = [0]

    def write(self, tile, tile_path):
        written[0] += 1
        if written[0] > 10:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(self, tile, tile_path)

    monkeypatch.setattr(_deepzoom._TileSink, "_write", write)
    with pytest.raises(MosaicistError) as caught:
        write_deep_zoom(iter([picture[::-1]]), 40, 40, path, tile_size=8, format="png",
                        workers=1)
    held = sum(tile.stat().st_blocks * 512 for tile in files_folder(path).rglob("*")
               if tile.is_file())
    from mosaicist._runtime import byte_words

    assert str(caught.value) == (
        f"{path}: cannot write the Deep Zoom pyramid: No space left on device; the old "
        f"pyramid's tiles in m_files ({byte_words(held)}) stay until the new ones are "
        "complete, so a rewrite needs room for both: delete the old pyramid first or free "
        "more space")
    assert _tree(tmp_path) == old  # no staging folder left, the old pyramid as it was


def test_a_first_write_the_full_disk_refused_says_no_more(tmp_path, monkeypatch):
    # With no old pyramid, nothing holds room but what the disk already had.
    from mosaicist.render import _deepzoom, write_deep_zoom

    def write(self, tile, tile_path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(_deepzoom._TileSink, "_write", write)
    path = tmp_path / "m.dzi"
    with pytest.raises(MosaicistError) as caught:
        write_deep_zoom(iter([np.zeros((20, 20, 3), np.uint8)]), 20, 20, path, tile_size=8,
                        format="png", workers=1)
    assert str(caught.value) == (f"{path}: cannot write the Deep Zoom pyramid: No space left "
                                 "on device")
    assert list(tmp_path.iterdir()) == []


class _FreeBytes:
    """What os.statvfs answers for a file system with ``free`` bytes and many files free."""

    def __init__(self, free: int) -> None:
        self.f_frsize = self.f_bsize = 4096
        self.f_bavail = free // 4096
        self.f_blocks = 10**6
        self.f_files = self.f_favail = 10**6
        self.f_flag = 0


def test_a_pyramid_refused_for_room_says_the_old_one_keeps_its_room(tmp_path, monkeypatch):
    # Refused on a nearly full disk with a pyramid there, the message said only to free
    # some space: the user, replacing a pyramid, counted the old one's room as free.
    from mosaicist import MosaicOptions
    from mosaicist.render import _formats, check_output, write_deep_zoom

    path = tmp_path / "m.dzi"
    monkeypatch.setattr(_formats.os, "statvfs", lambda folder: _FreeBytes(100_000))
    with pytest.raises(MosaicistError) as fresh:
        check_output(path, 64, 64, MosaicOptions())
    assert str(fresh.value).endswith("free; free some space or write the output elsewhere")
    write_deep_zoom(iter([np.zeros((8, 8, 3), np.uint8)]), 8, 8, path, tile_size=8,
                    format="png", workers=1)
    path.unlink()  # the tiles alone, left by a run stopped before its descriptor, count too
    with pytest.raises(MosaicistError) as again:
        check_output(path, 64, 64, MosaicOptions())
    message = str(again.value)
    assert message.startswith(f"{path}: a 64x64 px Deep Zoom output needs at least ")
    assert message.endswith("; its file system has 98.3 kB free, the output already there "
                            "keeping its room until the new one is complete; free some space, "
                            "delete the old output first or write the output elsewhere")
