"""An older index gets its mirrors' hashes when near-duplicates are first grouped (session 38).

An index made before the mirrors' hashes were stored (signature rule 2,
simulated as in :mod:`test_mirror_index_s37`: the column emptied and the
rule set back) was signed anew by its first update after upgrading: seconds
to minutes of photos read again, for every user, though only the grouping
of near-duplicates (``index --duplicates``, ``make --dedupe``) reads them.
Its updates now leave it as it is, and the first grouping signs it
(resumably).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import noisy_target, record_results
from test_library import refuse_the_lock
from test_mirror_index_s37 import (
    _PHOTOS,
    as_rule_2,
    expected_pairs,
    mirrored_folder,
    open_library,
    pairs_of,
    rule_of,
    stored_rows,
)
from test_resign_s36 import as_old_rule, jpeg_near_copies

from mosaicist import make_mosaic
from mosaicist.cli import main
from mosaicist.dedupe import DEFAULT_THRESHOLD
from mosaicist.library import TileLibrary, _update
from mosaicist.library._manifest import SIGNATURE_RULE


def mirrors_unknown(library: TileLibrary) -> list[str]:
    """The ids of the published rows without their mirror's hash."""
    return [row[0] for row in stored_rows(library) if row[-1] is None]


def small_mosaic(folder: Path, cache: Path, **settings) -> tuple[np.ndarray, list[str]]:
    """The image and the tiles placed of a small seed mosaic of ``folder``'s photos."""
    mosaic = make_mosaic(noisy_target(), str(folder), preset="seed", cell_px=8, tile_px=16,
                         cache_dir=cache, **settings)
    return np.asarray(mosaic.image), list(mosaic.placements.source_ids)


def test_a_plain_update_leaves_an_older_index_unsigned_and_its_mosaic_as_it_was(
        tmp_path, monkeypatch):
    folder = mirrored_folder(tmp_path / "photos")
    cache = tmp_path / "cache"
    before = small_mosaic(folder, cache)
    old = open_library(folder, cache)
    as_rule_2(old.directory)
    signed = record_results(monkeypatch, _update, "decode_tile")
    image, placed = small_mosaic(folder, cache)
    indexed = CliRunner().invoke(main, ["index", str(folder), "--tile-px", "16", "--crop",
                                        "centre", "--cache-dir", str(cache)])
    assert indexed.exit_code == 0, indexed.output
    assert "warning" not in indexed.output
    updated = open_library(folder, cache)
    # Each run used this one index (the seed preset's centre crops, at 16 px).
    assert [path.name for path in old.directory.parent.iterdir()] == [old.directory.name]
    # No photo read, no row signed, nothing published anew: the caches stay served.
    assert signed == [] and updated.stats.decoded == 0
    assert sorted(mirrors_unknown(updated)) == sorted(updated.source_ids)
    assert rule_of(updated) == "2" and updated.generation == old.generation
    np.testing.assert_array_equal(image, before[0])
    assert placed == before[1]


def test_index_duplicates_signs_an_older_index_and_groups_the_mirrored_copies(tmp_path):
    folder = mirrored_folder(tmp_path / "photos")
    cache = tmp_path / "cache"
    old = open_library(folder, cache, px=8)
    fresh_rows = stored_rows(old)
    as_rule_2(old.directory)
    # The index of centre crops (the one open_library made), not the default's.
    command = ["index", str(folder), "--tile-px", "8", "--crop", "centre",
               "--cache-dir", str(cache)]
    assert CliRunner().invoke(main, command).exit_code == 0
    assert len(mirrors_unknown(old)) == len(old)  # not without --duplicates
    listed = CliRunner().invoke(main, [*command, "--duplicates"])
    assert listed.exit_code == 0, listed.output
    assert f"{_PHOTOS} near-duplicates in {_PHOTOS} groups" in listed.stderr, listed.stderr
    copies = [line for line in listed.stdout.splitlines() if line.startswith("    ")]
    assert len(copies) == _PHOTOS and all(line.endswith(", mirrored)") for line in copies)
    assert stored_rows(old) == fresh_rows
    assert rule_of(old) == str(SIGNATURE_RULE)


def test_make_dedupe_signs_an_older_index_and_drops_the_mirrored_copies(tmp_path):
    folder = mirrored_folder(tmp_path / "photos")
    cache = tmp_path / "cache"
    old = open_library(folder, cache)
    fresh_rows = stored_rows(old)
    as_rule_2(old.directory)
    small_mosaic(folder, cache)
    assert len(mirrors_unknown(old)) == len(old)  # not without --dedupe
    mosaic = make_mosaic(noisy_target(), str(folder), preset="seed", cell_px=8, tile_px=16,
                         dedupe=DEFAULT_THRESHOLD, cache_dir=cache)
    assert mosaic.report()["duplicates_dropped"] == _PHOTOS
    assert stored_rows(old) == fresh_rows
    assert rule_of(old) == str(SIGNATURE_RULE)


def test_an_interrupted_first_grouping_is_finished_by_a_later_one(tmp_path, monkeypatch):
    folder = mirrored_folder(tmp_path / "photos")
    fresh = open_library(folder, tmp_path / "fresh")
    cache = tmp_path / "old"
    as_rule_2(open_library(folder, cache).directory)
    decode = _update.decode_tile
    calls: list[int] = []

    def interrupted_at_the_fifth(*arguments, **keywords):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return decode(*arguments, **keywords)

    monkeypatch.setattr(_update, "RESIGN_EVERY", 2)
    monkeypatch.setattr(_update, "RESIGN_THREADS", 1)
    monkeypatch.setattr(_update, "decode_tile", interrupted_at_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        open_library(folder, cache).duplicate_groups(DEFAULT_THRESHOLD)
    monkeypatch.setattr(_update, "decode_tile", decode)
    signed = record_results(monkeypatch, _update, "decode_tile")
    updated = open_library(folder, cache)
    assert len(mirrors_unknown(updated)) == 2 * _PHOTOS - 4  # two batches committed
    assert signed == [] and rule_of(updated) == "2"  # an update leaves the rest as it is
    assert pairs_of(updated) == expected_pairs()
    assert len(signed) == 2 * _PHOTOS - 4
    assert stored_rows(updated) == stored_rows(fresh)
    assert rule_of(updated) == str(SIGNATURE_RULE)


def test_an_update_signs_the_jpegs_of_the_rule_before_with_their_mirrors_only(
        tmp_path, monkeypatch):
    # An index older still (no signature_rule, tiles at 48 px): its JPEGs' hashes are off
    # (decoded at their tiles' scale), and are signed anew by its update, their mirrors'
    # with them (the same decode). Its other pictures lack only their mirrors' hashes.
    folder = jpeg_near_copies(tmp_path / "photos")
    fresh = open_library(folder, tmp_path / "fresh")
    cache = tmp_path / "old"
    old = open_library(folder, cache)
    as_old_rule(old.directory)
    connection = sqlite3.connect(old.directory / "manifest.sqlite", isolation_level=None)
    connection.execute("UPDATE tiles SET phash_mirror = NULL")
    connection.close()
    signed = record_results(monkeypatch, _update, "decode_tile")
    updated = open_library(folder, cache)
    assert len(signed) == len(fresh) - 1  # the JPEGs
    assert mirrors_unknown(updated) == ["z.png"] and rule_of(updated) == "2"
    signed.clear()
    groups = updated.duplicate_groups(DEFAULT_THRESHOLD)
    assert len(signed) == 1  # the PNG
    assert [group.tolist() for group in groups] == [
        group.tolist() for group in fresh.duplicate_groups(DEFAULT_THRESHOLD)]
    assert stored_rows(updated) == stored_rows(fresh)
    assert rule_of(updated) == str(SIGNATURE_RULE)


def test_a_moved_folder_takes_the_tiles_of_an_older_index_and_its_grouping_signs_them(
        tmp_path, monkeypatch):
    # An older index is now kept at rule 2 by its updates: a folder moved takes its tiles
    # (not decoded again), and the new index's first grouping gives them their mirrors.
    folder = mirrored_folder(tmp_path / "photos")
    fresh = open_library(folder, tmp_path / "fresh")
    cache = tmp_path / "cache"
    as_rule_2(open_library(folder, cache).directory)
    moved = tmp_path / "moved"
    folder.rename(moved)
    signed = record_results(monkeypatch, _update, "decode_tile")
    opened = open_library(moved, cache)
    assert opened.stats.decoded == 0 and opened.stats.reused == len(fresh)
    assert signed == [] and len(mirrors_unknown(opened)) == len(opened)
    assert rule_of(opened) == "2"
    assert pairs_of(opened) == expected_pairs()
    assert len(signed) == len(fresh)
    assert stored_rows(opened) == stored_rows(fresh)


def test_an_older_index_that_cannot_be_written_is_grouped_by_its_hashes_alone(
        tmp_path, monkeypatch):
    # As before: each row's hash stands for its mirror's, so no mirrored copy is found
    # from the photo's side, and nothing is written; the first grouping that may write
    # signs them.
    folder = mirrored_folder(tmp_path / "photos")
    cache = tmp_path / "cache"
    as_rule_2(open_library(folder, cache).directory)
    assert len(mirrors_unknown(open_library(folder, cache))) == 2 * _PHOTOS
    with monkeypatch.context() as read_only:
        refuse_the_lock(read_only)
        signed = record_results(read_only, _update, "decode_tile")
        served = open_library(folder, cache)
        assert pairs_of(served) == []
        assert signed == [] and len(mirrors_unknown(served)) == 2 * _PHOTOS
    assert pairs_of(open_library(folder, cache)) == expected_pairs()
    assert mirrors_unknown(served) == [] and rule_of(served) == str(SIGNATURE_RULE)
