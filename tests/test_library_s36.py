"""Session 36: an index on a full cache disk, caches of a removed index, future placements."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_colour_folder
from PIL import Image

from mosaicist.cli import main
from mosaicist.errors import MosaicistError
from mosaicist.library import TileLibrary
from mosaicist.placements import Placements
from mosaicist.sources.folder import FolderSource


def open_library(folder: Path, cache: Path) -> TileLibrary:
    return TileLibrary.open(FolderSource(folder, workers=1), 8, cache_dir=cache)


def _target(path: Path) -> Path:
    pixels = np.random.default_rng(5).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _make(target: Path, folder: Path, cache: Path, output: Path, *more: str):
    return CliRunner().invoke(main, ["make", str(target), "--tiles", str(folder), "--cell", "8",
                                     "--tile-px", "8", "--preset", "seed", "-o", str(output),
                                     "-q", "--cache-dir", str(cache), *more])


# --- a full cache disk ---------------------------------------------------------------------


def _disk_full(monkeypatch) -> None:
    """Make SQLite fail as on a full tmpfs: it cannot grow the ``-shm`` file of the log.

    Every statement of a connection fails with ``SQLITE_IOERR_SHMSIZE`` ("disk I/O
    error"), except on a manifest opened ``immutable`` (which takes no ``-shm``).
    """
    real_connect = sqlite3.connect

    def shm_error() -> sqlite3.OperationalError:
        error = sqlite3.OperationalError("disk I/O error")
        error.sqlite_errorcode = sqlite3.SQLITE_IOERR_SHMSIZE
        return error

    class FullDisk(sqlite3.Connection):
        def execute(self, *args, **kwargs):
            raise shm_error()

        def executescript(self, *args, **kwargs):
            raise shm_error()

    def connect(database, *args, **kwargs):
        if "immutable=1" in str(database):
            return real_connect(database, *args, **kwargs)
        return real_connect(database, *args, factory=FullDisk, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", connect)


def test_a_complete_index_on_a_full_disk_still_makes_the_mosaic(tmp_path, monkeypatch):
    # On a full tmpfs SQLite could not grow manifest.sqlite-shm to read the index, and
    # `make` stopped: "manifest.sqlite: cannot use the tile index: disk I/O error".
    folder = make_colour_folder(tmp_path / "tiles", 10, size=8)
    target, cache = _target(tmp_path / "t.png"), tmp_path / "cache"
    made = _make(target, folder, cache, tmp_path / "before.png")
    assert made.exit_code == 0, made.output
    _disk_full(monkeypatch)
    again = _make(target, folder, cache, tmp_path / "after.png")
    assert again.exit_code == 0, again.output
    assert (tmp_path / "after.png").read_bytes() == (tmp_path / "before.png").read_bytes()


def test_an_index_that_needs_updating_on_a_full_disk_says_so(tmp_path, monkeypatch):
    folder = make_colour_folder(tmp_path / "tiles", 6)
    cache = tmp_path / "cache"
    before = open_library(folder, cache)
    make_colour_folder(tmp_path / "more", 1, seed=9)
    shutil.copy(tmp_path / "more" / "t000.png", folder / "new.png")
    _disk_full(monkeypatch)
    with pytest.raises(MosaicistError) as caught:
        open_library(folder, cache)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{before.directory}: ")
    assert "no space left on device; free some space" in message
    # A new cache on the full disk: no index to serve, and the message says why.
    with pytest.raises(MosaicistError, match="no space left on device") as caught:
        open_library(folder, tmp_path / "other-cache")
    assert "disk I/O error" not in str(caught.value)


# --- caches of a removed index --------------------------------------------------------------


def _folder_with_copy(folder: Path, seed: int, original: int, copy: int) -> Path:
    """Ten random tiles, tile ``copy`` the same picture as tile ``original``."""
    make_colour_folder(folder, 10, size=8, seed=seed)
    shutil.copy(folder / f"t{original:03d}.png", folder / f"t{copy:03d}.png")
    return folder


def test_an_index_made_again_is_not_served_the_removed_ones_caches(tmp_path):
    # A new manifest started at generation 0 again, and the features, near-duplicate
    # leaders and packed tiles without duplicates left beside it, named g0-n10, were
    # served to another library of 10 photos: the wrong tiles dropped and drawn.
    folder = _folder_with_copy(tmp_path / "tiles", 1, 0, 1)
    target, cache = _target(tmp_path / "t.png"), tmp_path / "cache"
    made = _make(target, folder, cache, tmp_path / "old.png", "--dedupe", "0")
    assert made.exit_code == 0, made.output
    old = open_library(folder, cache)
    assert [group.tolist() for group in old.duplicate_groups(0)] == [[0, 1]]
    (old.directory / "manifest.sqlite").unlink()
    for packed in old.directory.glob("tiles-*.u8"):
        packed.unlink()
    shutil.rmtree(folder)
    _folder_with_copy(folder, 2, 2, 3)

    made = _make(target, folder, cache, tmp_path / "again.png", "--dedupe", "0")
    assert made.exit_code == 0, made.output
    fresh = _make(target, folder, tmp_path / "fresh", tmp_path / "fresh.png", "--dedupe", "0")
    assert fresh.exit_code == 0, fresh.output
    assert (tmp_path / "again.png").read_bytes() == (tmp_path / "fresh.png").read_bytes()
    again = open_library(folder, cache)
    assert [group.tolist() for group in again.duplicate_groups(0)] == [[2, 3]]
    np.testing.assert_array_equal(np.asarray(again.without_duplicates(0).tiles),
                                  np.asarray(open_library(folder, tmp_path / "fresh")
                                             .without_duplicates(0).tiles))


# --- placements of a future version ---------------------------------------------------------


def test_placements_of_a_newer_version_say_to_upgrade(tmp_path):
    placements = Placements(1, 2, np.array([0, 1]), np.array([0.0, 1.0]), ["a.png", "b.png"])
    document = placements.to_json()
    newer, older = tmp_path / "newer.json", tmp_path / "older.json"
    newer.write_text(json.dumps({**document, "version": 4}))
    older.write_text(json.dumps({**document, "version": 0}))
    with pytest.raises(MosaicistError) as caught:
        Placements.read(newer)
    message = str(caught.value)
    assert "made by a newer mosaicist" in message and "upgrade mosaicist" in message
    assert "version 4" in message and "\n" not in message
    with pytest.raises(MosaicistError) as caught:
        Placements.read(older)
    assert "version 0 is not valid" in str(caught.value)
    assert "upgrade" not in str(caught.value)
