"""An index signed by the rule before session 36's is signed again from its photos, once.

Until then a JPEG's near-duplicate signature came from the decode drafted for
its tile, so an index of tiles other than square ones at ``SIGNATURE_PX``
stored signatures a few bits apart from what a fresh index stores now. Such
an index (its manifest without the meta value ``signature_rule``) is simulated
here: the meta value deleted and the JPEG rows' ``phash`` changed.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from conftest import record_results
from PIL import Image

from mosaicist.dedupe import DEFAULT_THRESHOLD
from mosaicist.library import TileLibrary, _index, _update
from mosaicist.library._manifest import SIGNATURE_RULE
from mosaicist.sources.folder import FolderSource

#: Bits a simulated signature of the old rule differs by (past the default threshold).
_OLD_RULE_BITS = 0x0F0F_0F0F


def jpeg_near_copies(root: Path, count: int = 6) -> Path:
    """``count`` 3:2 JPEG photos, each with a re-encoded copy, and one PNG."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(5)
    for index in range(count):
        small = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
        photo = Image.fromarray(small).resize((120, 80), Image.BICUBIC)
        photo.save(root / f"p{index:02d}a.jpg", quality=92)
        photo.save(root / f"p{index:02d}b.jpg", quality=60)
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(root / "z.png")
    return root


def open_library(folder: Path, cache: Path, **settings) -> TileLibrary:
    return TileLibrary.open(FolderSource(folder, workers=1), settings.pop("match_px", 48),
                            cache_dir=cache, **settings)


def as_old_rule(directory: Path) -> None:
    """Make the index in ``directory`` look signed by the old rule: its JPEG rows' hashes moved."""
    connection = sqlite3.connect(directory / "manifest.sqlite", isolation_level=None)
    try:
        connection.execute("BEGIN")
        connection.execute("DELETE FROM meta WHERE name = 'signature_rule'")
        # Every other JPEG row only: a copy then lies far from its photo.
        connection.execute("UPDATE tiles SET phash = (phash | ?1) - (phash & ?1) "
                           "WHERE source_id LIKE '%b.jpg'", (_OLD_RULE_BITS,))
        connection.execute("COMMIT")
    finally:
        connection.close()


def meta_of(directory: Path) -> dict[str, str]:
    connection = sqlite3.connect(directory / "manifest.sqlite")
    try:
        return dict(connection.execute("SELECT name, value FROM meta").fetchall())
    finally:
        connection.close()


def assert_signed_alike(got: TileLibrary, want: TileLibrary) -> None:
    assert got.source_ids == want.source_ids
    for mine, theirs in zip(got.signatures(), want.signatures(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    got_groups = got.duplicate_groups(DEFAULT_THRESHOLD)
    assert [group.tolist() for group in got_groups] == [
        group.tolist() for group in want.duplicate_groups(DEFAULT_THRESHOLD)]
    assert got_groups  # the copies are found: the case is not empty
    assert (got.without_duplicates(DEFAULT_THRESHOLD).source_ids
            == want.without_duplicates(DEFAULT_THRESHOLD).source_ids)


@pytest.mark.parametrize("settings", [{"match_px": 48}, {"match_px": 32, "aspect": "2:3"}],
                         ids=["48px", "2:3"])
def test_an_index_of_the_old_rule_is_signed_again_from_its_photos_once(
        tmp_path, monkeypatch, settings):
    folder = jpeg_near_copies(tmp_path / "photos")
    fresh = open_library(folder, tmp_path / "fresh", **settings)
    assert meta_of(fresh.directory)["signature_rule"] == str(SIGNATURE_RULE)
    cache = tmp_path / "old"
    old = open_library(folder, cache, **settings)
    as_old_rule(old.directory)
    # Caches made from the old signatures (by an older version's run, which signs
    # nothing when grouping): leaders, and the library without its copies.
    with monkeypatch.context() as older_version:
        older_version.setattr(_index, "sign_mirrors", lambda *arguments: None)
        stale_groups = old.duplicate_groups(DEFAULT_THRESHOLD)
        old.without_duplicates(DEFAULT_THRESHOLD)
    assert len(stale_groups) < len(fresh.duplicate_groups(DEFAULT_THRESHOLD))

    signed = record_results(monkeypatch, _update, "decode_tile")
    resigned = open_library(folder, cache, **settings)
    assert len(signed) == 12  # the JPEGs, at the signature's scale; not the PNG
    assert resigned.stats.decoded == 0  # the tiles stay as they are
    np.testing.assert_array_equal(np.asarray(resigned.tiles), np.asarray(old.tiles))
    assert resigned.generation == old.generation + 1
    assert_signed_alike(resigned, fresh)
    assert meta_of(resigned.directory)["signature_rule"] == str(SIGNATURE_RULE)

    # Once: the next run reads no photo.
    signed.clear()
    again = open_library(folder, cache, **settings)
    assert signed == [] and again.stats.decoded == 0
    assert again.generation == resigned.generation
    assert_signed_alike(again, fresh)


def test_a_photo_touched_since_is_signed_alike_with_the_rest(tmp_path):
    folder = jpeg_near_copies(tmp_path / "photos")
    fresh = open_library(folder, tmp_path / "fresh")
    cache = tmp_path / "old"
    as_old_rule(open_library(folder, cache).directory)
    touched = folder / "p01b.jpg"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    mixed = open_library(folder, cache)
    assert mixed.stats.decoded == 1
    assert_signed_alike(mixed, fresh)


def test_an_interrupted_signing_goes_on_where_it_stopped(tmp_path, monkeypatch):
    folder = jpeg_near_copies(tmp_path / "photos")
    fresh = open_library(folder, tmp_path / "fresh")
    cache = tmp_path / "old"
    old = open_library(folder, cache)
    as_old_rule(old.directory)
    decode = _update.decode_tile
    calls: list[int] = []

    def interrupted(*arguments, **keywords):
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt
        return decode(*arguments, **keywords)

    monkeypatch.setattr(_update, "RESIGN_EVERY", 4)
    monkeypatch.setattr(_update, "RESIGN_THREADS", 1)
    monkeypatch.setattr(_update, "decode_tile", interrupted)
    with pytest.raises(KeyboardInterrupt):
        open_library(folder, cache)
    assert "signature_rule" not in meta_of(old.directory)

    signed = record_results(monkeypatch, _update, "decode_tile")
    resumed = open_library(folder, cache)
    assert len(signed) == 12 - 4  # the first batch committed
    assert_signed_alike(resumed, fresh)
    assert not list(old.directory.glob("tiles-*.u8.part"))
    assert [path.name for path in old.directory.glob("tiles-*.u8")] == [
        f"tiles-{resumed.generation}.u8"]


@pytest.mark.parametrize("crop", ["centre", "subject"])
def test_a_square_index_at_32_px_keeps_its_signatures_without_reading(tmp_path, monkeypatch,
                                                                        crop):
    # However cut: the decode was drafted for the tile's size and shape alone, and the
    # default preset's subject-cut libraries would all have been decoded again.
    folder = jpeg_near_copies(tmp_path / "photos")
    cache = tmp_path / "cache"
    old = open_library(folder, cache, match_px=32, crop=crop)
    want = old.signatures()
    connection = sqlite3.connect(old.directory / "manifest.sqlite", isolation_level=None)
    connection.execute("DELETE FROM meta WHERE name = 'signature_rule'")
    connection.close()
    signed = record_results(monkeypatch, _update, "decode_tile")
    opened = open_library(folder, cache, match_px=32, crop=crop)
    assert signed == [] and opened.generation == old.generation
    assert meta_of(opened.directory)["signature_rule"] == str(SIGNATURE_RULE)
    for got, expected in zip(opened.signatures(), want, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_an_index_whose_signatures_stand_keeps_its_generation(tmp_path):
    folder = jpeg_near_copies(tmp_path / "photos")
    cache = tmp_path / "cache"
    old = open_library(folder, cache)
    connection = sqlite3.connect(old.directory / "manifest.sqlite", isolation_level=None)
    connection.execute("DELETE FROM meta WHERE name = 'signature_rule'")
    connection.close()
    # Signed by the rule of now already (made between the two versions): nothing
    # changes, and no cache is made stale.
    opened = open_library(folder, cache)
    assert opened.generation == old.generation
    assert meta_of(opened.directory)["signature_rule"] == str(SIGNATURE_RULE)


def test_a_moved_folder_takes_no_signature_of_the_old_rule(tmp_path):
    folder = jpeg_near_copies(tmp_path / "photos")
    fresh = open_library(folder, tmp_path / "fresh")
    cache = tmp_path / "cache"
    as_old_rule(open_library(folder, cache).directory)
    moved = tmp_path / "moved"
    shutil.move(folder, moved)
    opened = open_library(moved, cache)
    assert opened.stats.decoded == len(fresh)
    assert meta_of(opened.directory)["signature_rule"] == str(SIGNATURE_RULE)
    for got, want in zip(opened.signatures(), fresh.signatures(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_moved_folder_takes_signatures_of_the_new_rule(tmp_path):
    folder = jpeg_near_copies(tmp_path / "photos")
    cache = tmp_path / "cache"
    first = open_library(folder, cache)
    moved = tmp_path / "moved"
    shutil.move(folder, moved)
    opened = open_library(moved, cache)
    assert opened.stats.decoded == 0 and opened.stats.reused == len(first)
    for got, want in zip(opened.signatures(), first.signatures(), strict=True):
        np.testing.assert_array_equal(got, want)
