"""Indexing a folder under hostile conditions: files that go away while indexing, and more."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import make_colour_folder

from mosaicist import imaging
from mosaicist.library import TileLibrary
from mosaicist.sources.folder import FolderSource


def open_library(folder: Path, cache: Path, tile_px: int = 8) -> TileLibrary:
    return TileLibrary.open(FolderSource(folder, workers=1), tile_px, cache_dir=cache)


def fail_reads_of(monkeypatch, names: set[str], number: int) -> list[str]:
    """Make the next read of each file of ``names`` fail with ``number``; return the reads."""
    original = imaging.read_tile_bytes
    left = set(names)
    reads: list[str] = []

    def read_tile_bytes(path):
        name = Path(path).name
        reads.append(name)
        if name in left:
            left.discard(name)
            raise OSError(number, os.strerror(number), str(path))
        return original(path)

    monkeypatch.setattr(imaging, "read_tile_bytes", read_tile_bytes)
    return reads


@pytest.mark.parametrize("number", [errno.ENOENT, errno.ENOTDIR])
def test_photos_gone_while_indexing_come_back_with_their_drive(tmp_path, monkeypatch, number):
    # A drive or share that went away while indexing (unmounted, unplugged) failed the
    # reads of the photos the scan had listed with "No such file or directory", and the
    # failures were remembered with the files' stamps: with the drive back, the same
    # stamps kept those photos out of the library ("0 decoded", all of them "skipped")
    # until each file changed.
    folder = make_colour_folder(tmp_path / "tiles", 5)
    cache = tmp_path / "cache"
    fail_reads_of(monkeypatch, {"t001.png", "t003.png"}, number)
    first = open_library(folder, cache)
    assert first.source_ids == ["t000.png", "t002.png", "t004.png"]
    assert sorted(dict(first.stats.failed)) == ["t001.png", "t003.png"]
    back = open_library(folder, cache)
    assert back.stats.decoded == 2 and back.stats.failed == []
    clean = open_library(folder, tmp_path / "clean")
    assert back.source_ids == clean.source_ids and len(back) == 5
    np.testing.assert_array_equal(np.asarray(back.tiles), np.asarray(clean.tiles))
    assert open_library(folder, cache).stats.decoded == 0


def test_a_photo_removed_while_indexing_drops_out_next_run(tmp_path, monkeypatch):
    folder = make_colour_folder(tmp_path / "tiles", 3)
    cache = tmp_path / "cache"
    fail_reads_of(monkeypatch, {"t001.png"}, errno.ENOENT)
    open_library(folder, cache)
    (folder / "t001.png").unlink()
    after = open_library(folder, cache)
    assert after.source_ids == ["t000.png", "t002.png"] and after.stats.failed == []
    assert open_library(folder, cache).stats.decoded == 0


def test_a_link_to_nothing_is_not_read_again_on_every_run(tmp_path, monkeypatch):
    # A link whose photo was not there at the scan keeps its failure while the scan
    # stays the same (its stamp changes once the photo is there), so the "nothing
    # changed" shortcut still holds and it is not tried on every run.
    folder = make_colour_folder(tmp_path / "tiles", 2)
    (folder / "t009.png").symlink_to(tmp_path / "elsewhere.png")
    cache = tmp_path / "cache"
    first = open_library(folder, cache)
    assert [name for name, _ in first.stats.failed] == ["t009.png"]
    reads = fail_reads_of(monkeypatch, set(), errno.ENOENT)
    again = open_library(folder, cache)
    assert again.stats.decoded == 0 and reads == []
    assert [name for name, _ in again.stats.failed] == ["t009.png"]
    (folder / "t000.png").rename(tmp_path / "elsewhere.png")
    moved = open_library(folder, cache)
    assert moved.source_ids == ["t001.png", "t009.png"] and moved.stats.failed == []
