"""Indexes written by older and newer versions: read or upgraded as a fresh index, or refused.

An index of schema 1 (made before aspects, crop windows and near-duplicate
signatures) is built here as that schema's writer left it: its tables without
the columns schema 2 added, its meta values ``schema``, ``source_key``,
``tile_px``, ``generation``, ``next_slot`` and ``scan_digest`` only.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mosaicist.cli import main
from mosaicist.dedupe import DEFAULT_THRESHOLD, duplicate_leaders, tile_signatures
from mosaicist.errors import MosaicistError
from mosaicist.library import TileLibrary
from mosaicist.library._manifest import connect
from mosaicist.pipeline import make_mosaic
from mosaicist.sources import DecodedTile
from mosaicist.sources.folder import FolderSource

#: The tables as schema 1 made them (mosaicist 9ed94b0, library.py).
SCHEMA_1 = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tiles (
    source_id TEXT PRIMARY KEY, position INTEGER NOT NULL, slot INTEGER NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, content_hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS staged (
    source_id TEXT PRIMARY KEY, slot INTEGER NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, content_hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS failures (
    source_id TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    error TEXT NOT NULL);
"""
#: The meta values a writer of schema 1 set (``scan_digest`` from 0acd6e5 on).
SCHEMA_1_META = ("source_key", "tile_px", "generation", "next_slot", "scan_digest")


def near_copies_folder(root: Path) -> Path:
    """Twelve 3:2 photos, each with a noisy copy: pairs near the default threshold.

    Drawn so that signing the 48 px tiles groups one pair otherwise than
    signing the photos does (checked by the tests that use it).
    """
    root.mkdir()
    rng = np.random.default_rng(2)
    for index in range(12):
        small = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
        base = Image.fromarray(small).resize((72, 48), Image.BICUBIC)
        noisy = np.asarray(base).astype(int) + rng.integers(-40, 41, (48, 72, 3))
        base.save(root / f"p{index:02d}a.png")
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(root / f"p{index:02d}b.png")
    return root


def as_schema_1(directory: Path) -> None:
    """Rewrite the index in ``directory`` as a writer of schema 1 would have left it."""
    manifest = directory / "manifest.sqlite"
    connection = sqlite3.connect(manifest)
    rows = connection.execute(
        "SELECT source_id, position, slot, size, mtime_ns, content_hash FROM tiles").fetchall()
    failures = connection.execute("SELECT source_id, size, mtime_ns, error FROM failures"
                                  ).fetchall()
    meta = dict(connection.execute("SELECT name, value FROM meta").fetchall())
    connection.close()
    for name in ("manifest.sqlite", "manifest.sqlite-wal", "manifest.sqlite-shm"):
        (directory / name).unlink(missing_ok=True)
    for snapshot in directory.glob("order-*.npz"):
        snapshot.unlink()
    connection = sqlite3.connect(manifest, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.executescript(SCHEMA_1)
    connection.execute("BEGIN")
    connection.executemany("INSERT INTO tiles VALUES (?, ?, ?, ?, ?, ?)", rows)
    connection.executemany("INSERT INTO failures VALUES (?, ?, ?, ?)", failures)
    connection.executemany("INSERT INTO meta VALUES (?, ?)",
                           [("schema", "1"), *((name, meta[name]) for name in SCHEMA_1_META)])
    connection.execute("COMMIT")
    connection.close()


def meta_of(directory: Path) -> dict[str, str]:
    connection = sqlite3.connect(directory / "manifest.sqlite")
    try:
        return dict(connection.execute("SELECT name, value FROM meta").fetchall())
    finally:
        connection.close()


def kept_ids(hashes, colours, source_ids):
    leaders = duplicate_leaders(hashes, colours, DEFAULT_THRESHOLD)
    return [source_ids[index] for index in np.flatnonzero(leaders == np.arange(len(leaders)))]


def test_a_schema_1_index_at_48_px_dedupes_as_a_fresh_index(tmp_path):
    folder = near_copies_folder(tmp_path / "photos")
    fresh = TileLibrary.open(FolderSource(folder, workers=1), 48, cache_dir=tmp_path / "fresh")
    fresh_kept = fresh.without_duplicates(DEFAULT_THRESHOLD).source_ids
    cache = tmp_path / "old"
    old = TileLibrary.open(FolderSource(folder, workers=1), 48, cache_dir=cache)
    as_schema_1(old.directory)
    # The case: the 48 px tiles, signed as they are, keep other photos than a fresh index.
    assert kept_ids(*tile_signatures(np.asarray(old.tiles)), old.source_ids) != fresh_kept

    upgraded = TileLibrary.open(FolderSource(folder, workers=1), 48, cache_dir=cache)
    assert upgraded.without_duplicates(DEFAULT_THRESHOLD).source_ids == fresh_kept
    for got, want in zip(upgraded.signatures(), fresh.signatures(), strict=True):
        np.testing.assert_array_equal(got, want)
    assert upgraded.stats.decoded == len(fresh)  # once, for the photos' signatures
    np.testing.assert_array_equal(np.asarray(upgraded.tiles), np.asarray(fresh.tiles))
    meta = meta_of(upgraded.directory)
    assert meta["schema"] == "2" and meta["signed"] == "1"
    # Once: the next run decodes nothing.
    again = TileLibrary.open(FolderSource(folder, workers=1), 48, cache_dir=cache)
    assert again.stats.decoded == 0

    # make --dedupe: the same mosaic as with a fresh index.
    target = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    settings = {"preset": "seed", "cell_px": 8, "tile_px": 48, "dedupe": DEFAULT_THRESHOLD}
    with_fresh = make_mosaic(target, str(folder), cache_dir=tmp_path / "fresh", **settings)
    with_upgraded = make_mosaic(target, str(folder), cache_dir=cache, **settings)
    assert with_upgraded.placements.source_ids == with_fresh.placements.source_ids
    np.testing.assert_array_equal(with_upgraded.image, with_fresh.image)


def test_a_schema_1_index_at_32_px_is_signed_from_its_tiles_without_decoding(
        tmp_path, monkeypatch):
    folder = near_copies_folder(tmp_path / "photos")
    cache = tmp_path / "cache"
    fresh = TileLibrary.open(FolderSource(folder, workers=1), 32, cache_dir=cache)
    want = fresh.signatures()
    as_schema_1(fresh.directory)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(FolderSource, "decode", no_decoding)
    upgraded = TileLibrary.open(FolderSource(folder, workers=1), 32, cache_dir=cache)
    assert upgraded.stats.decoded == 0
    for got, expected in zip(upgraded.signatures(), want, strict=True):
        np.testing.assert_array_equal(got, expected)
    assert meta_of(upgraded.directory)["signed"] == "1"


def test_a_schema_1_photo_that_fails_to_decode_keeps_its_tile_signed(tmp_path, monkeypatch):
    folder = near_copies_folder(tmp_path / "photos")
    cache = tmp_path / "cache"
    old = TileLibrary.open(FolderSource(folder, workers=1), 48, cache_dir=cache)
    as_schema_1(old.directory)
    decode = FolderSource.decode

    def failing_once(self, entries, *args, **kwargs):
        # A read that fails for a reason of the moment (a share faltering), file unchanged.
        for tile in decode(self, entries, *args, **kwargs):
            if tile.entry.source_id == "p00a.png":
                tile = DecodedTile(tile.entry, None, None, "share went away", transient=True)
            yield tile

    monkeypatch.setattr(FolderSource, "decode", failing_once)
    upgraded = TileLibrary.open(FolderSource(folder, workers=1), 48, cache_dir=cache)
    assert upgraded.source_ids == old.source_ids  # the tile kept, as an unchanged file's is
    connection = sqlite3.connect(upgraded.directory / "manifest.sqlite")
    assert connection.execute("SELECT COUNT(*) FROM tiles WHERE phash IS NULL").fetchone() == (0,)
    connection.close()
    assert meta_of(upgraded.directory)["signed"] == "1"
    monkeypatch.setattr(FolderSource, "decode", decode)
    again = TileLibrary.open(FolderSource(folder, workers=1), 48, cache_dir=cache)
    assert again.stats.decoded == 0 and again.source_ids == old.source_ids


def future_index(tmp_path: Path, schema: str = "3") -> tuple[Path, Path, Path]:
    """A folder, a cache, and the index of the folder in it, marked as of ``schema``."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(3):
        Image.new("RGB", (20, 20), (80 * index, 40, 200 - 60 * index)).save(
            folder / f"{index}.png")
    cache = tmp_path / "cache"
    library = TileLibrary.open(FolderSource(folder, workers=1), 8, cache_dir=cache)
    connection = sqlite3.connect(library.directory / "manifest.sqlite")
    connection.execute("UPDATE meta SET value = ? WHERE name = 'schema'", (schema,))
    # A table the newer version no longer has: this one must not make it again.
    connection.execute("DROP TABLE shards")
    connection.commit()
    connection.close()
    return folder, cache, library.directory


def tables_and_meta(directory: Path) -> tuple[set[str], dict[str, str]]:
    connection = sqlite3.connect(directory / "manifest.sqlite")
    try:
        tables = {row[0] for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        return tables, dict(connection.execute("SELECT name, value FROM meta").fetchall())
    finally:
        connection.close()


@pytest.mark.parametrize("update", [True, False])
def test_an_index_of_a_newer_schema_is_refused_and_left_as_it_is(tmp_path, update):
    folder, cache, directory = future_index(tmp_path)
    before = tables_and_meta(directory)
    with pytest.raises(MosaicistError) as refused:
        TileLibrary.open(FolderSource(folder, workers=1), 8, cache_dir=cache, update=update)
    message = str(refused.value)
    assert str(directory / "manifest.sqlite") in message
    assert "newer version of mosaicist" in message and "upgrade mosaicist" in message
    assert "\n" not in message
    assert tables_and_meta(directory) == before  # schema 3 still, no table made


def test_make_and_index_refuse_a_newer_index_in_one_line(tmp_path):
    folder, cache, directory = future_index(tmp_path)
    target = tmp_path / "target.png"
    Image.new("RGB", (16, 16), (90, 120, 30)).save(target)
    runner = CliRunner()
    for arguments in (["make", str(target), "--tiles", str(folder), "--cell", "8",
                       "--tile-px", "8", "--preset", "seed", "-o", str(tmp_path / "out.png")],
                      ["index", str(folder), "--tile-px", "8", "--crop", "centre"]):
        result = runner.invoke(main, [*arguments, "--cache-dir", str(cache)])
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output and result.exception is not None
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "upgrade mosaicist" in lines[0], result.stderr
        assert str(directory / "manifest.sqlite") in lines[0]
    assert not (tmp_path / "out.png").exists()
    assert tables_and_meta(directory)[1]["schema"] == "3"


def test_a_schema_that_is_no_version_reads_as_damaged(tmp_path):
    folder, cache, directory = future_index(tmp_path, schema="two")
    with pytest.raises(MosaicistError, match="index is damaged .*schema is 'two'"):
        TileLibrary.open(FolderSource(folder, workers=1), 8, cache_dir=cache)


def test_a_moved_folder_beside_a_newer_index_is_decoded(tmp_path):
    folder, cache, _ = future_index(tmp_path)
    moved = folder.rename(tmp_path / "moved")
    library = TileLibrary.open(FolderSource(moved, workers=1), 8, cache_dir=cache)
    assert len(library) == 3 and library.stats.decoded == 3


def test_a_manifest_without_a_schema_yet_is_not_refused(tmp_path):
    # A manifest file a first run made a moment ago, before its tables and meta values.
    directory = tmp_path / "index"
    directory.mkdir()
    sqlite3.connect(directory / "manifest.sqlite").close()
    connect(directory).close()
    assert tables_and_meta(directory)[1] == {}


def test_an_update_waits_for_an_older_version_holding_the_index(tmp_path, capsys):
    folder = near_copies_folder(tmp_path / "photos")
    cache = tmp_path / "cache"
    library = TileLibrary.open(FolderSource(folder, workers=1), 16, cache_dir=cache)
    changed = folder / "p00a.png"
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    opened: list[TileLibrary] = []
    # A version before the record lock (up to 99ca1ab) locked write.lock with flock.
    with open(library.directory / "write.lock", "a+b") as older:
        fcntl.flock(older, fcntl.LOCK_EX)
        thread = threading.Thread(target=lambda: opened.append(TileLibrary.open(
            FolderSource(folder, workers=1), 16, cache_dir=cache, quiet=False)))
        thread.start()
        said = ""
        deadline = time.monotonic() + 60
        while "older version" not in said and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
            said += capsys.readouterr().err
        assert "waiting for an older version of mosaicist that is updating this index" in said
        assert thread.is_alive() and not opened  # nothing written while the other writes
        fcntl.flock(older, fcntl.LOCK_UN)
    thread.join(60)
    assert opened and opened[0].stats.decoded == 1
