"""A photo and its left-right mirrored copy are grouped by every index (session 37).

The index stores each photo's mirror's hash (``phash_mirror``) beside its hash;
an index made before (signature rule 2, simulated: the column emptied and the
rule set back) gets them once, from its packed tiles or its photos, when its
near-duplicates are first grouped (since session 38; its updates before leave
it as it is). Also: an index folder removed during a run fails it in one line;
a shard's rows file that cannot be read is said in plain words.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import noisy_target, record_results
from PIL import Image

from mosaicist import make_mosaic
from mosaicist.cli import main
from mosaicist.dedupe import DEFAULT_THRESHOLD, hamming
from mosaicist.errors import MosaicistError
from mosaicist.library import TileLibrary, _index, _update
from mosaicist.library._manifest import SIGNATURE_RULE
from mosaicist.library._shards import read_shard_rows, write_shard
from mosaicist.sources.folder import FolderSource

#: Photos in the folder, each with a mirrored copy.
_PHOTOS = 4


def mirrored_folder(root: Path) -> Path:
    """JPEG photos ``pNN.jpg`` of a lopsided structure, each with ``pNN-m.jpg``, mirrored."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(11)
    for index in range(_PHOTOS):
        coarse = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
        coarse[:, :3] //= 3  # dark on the left: the mirror's structure is another one
        photo = Image.fromarray(coarse).resize((60, 40), Image.BICUBIC)
        photo.save(root / f"p{index:02d}.jpg", quality=92)
        photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / f"p{index:02d}-m.jpg",
                                                              quality=92)
    return root


def open_library(folder: Path, cache: Path, px: int = 16, **settings) -> TileLibrary:
    return TileLibrary.open(FolderSource(folder, workers=1), px, cache_dir=cache, **settings)


def pairs_of(library: TileLibrary) -> list[list[str]]:
    return sorted(sorted(library.source_ids[position] for position in group.tolist())
                  for group in library.duplicate_groups(DEFAULT_THRESHOLD))


def expected_pairs() -> list[list[str]]:
    return [[f"p{index:02d}-m.jpg", f"p{index:02d}.jpg"] for index in range(_PHOTOS)]


def as_rule_2(directory: Path) -> None:
    """Make the index in ``directory`` look made before the mirrors' hashes."""
    connection = sqlite3.connect(directory / "manifest.sqlite", isolation_level=None)
    try:
        connection.execute("BEGIN")
        connection.execute("UPDATE tiles SET phash_mirror = NULL")
        connection.execute("UPDATE meta SET value = '2' WHERE name = 'signature_rule'")
        connection.execute("COMMIT")
    finally:
        connection.close()


def stored_rows(library: TileLibrary) -> list[tuple]:
    """The published rows without their storage (slots)."""
    connection = sqlite3.connect(library.directory / "manifest.sqlite")
    try:
        return connection.execute(
            "SELECT source_id, position, size, mtime_ns, content_hash, crop_left, crop_top, "
            "crop_width, crop_height, phash, mean_rgb, phash_mirror FROM tiles "
            "ORDER BY position").fetchall()
    finally:
        connection.close()


def rule_of(library: TileLibrary) -> str:
    connection = sqlite3.connect(library.directory / "manifest.sqlite")
    try:
        return connection.execute(
            "SELECT value FROM meta WHERE name = 'signature_rule'").fetchone()[0]
    finally:
        connection.close()


def test_an_index_groups_each_photo_with_its_mirrored_copy(tmp_path):
    folder = mirrored_folder(tmp_path / "photos")
    library = open_library(folder, tmp_path / "cache")
    hashes, _ = library.signatures()
    ids = library.source_ids
    # The case is not empty: without the mirrors, no copy is within the threshold.
    for index in range(_PHOTOS):
        photo, copy = ids.index(f"p{index:02d}.jpg"), ids.index(f"p{index:02d}-m.jpg")
        assert int(hamming(hashes[photo:photo + 1], hashes[copy])[0]) > DEFAULT_THRESHOLD
    assert pairs_of(library) == expected_pairs()
    assert all(row[-1] is not None for row in stored_rows(library))
    kept = library.without_duplicates(DEFAULT_THRESHOLD)
    assert len(kept) == _PHOTOS and kept.duplicates_dropped == _PHOTOS


def test_index_duplicates_and_make_dedupe_take_the_mirrored_copies(tmp_path):
    folder = mirrored_folder(tmp_path / "photos")
    cache = tmp_path / "cache"
    listed = CliRunner().invoke(main, ["index", str(folder), "--tile-px", "8", "--duplicates",
                                       "--cache-dir", str(cache)])
    assert listed.exit_code == 0, listed.output
    assert f"{_PHOTOS} near-duplicates in {_PHOTOS} groups" in listed.stderr, listed.stderr
    lines = listed.stdout.splitlines()
    for index in range(_PHOTOS):
        assert any(line in (f"p{index:02d}.jpg", f"p{index:02d}-m.jpg") for line in lines)
    # Each copy's distance is to the kept photo's mirror image (not the 30-odd bits to the
    # photo itself, over the threshold the group was formed at).
    copies = [line for line in lines if line.startswith("    ")]
    assert len(copies) == _PHOTOS
    for line in copies:
        bits = int(line.rsplit("(", 1)[1].split(" ")[0])
        assert bits <= DEFAULT_THRESHOLD and line.endswith(", mirrored)"), line
    mosaic = make_mosaic(noisy_target(), str(folder), preset="seed", cell_px=8, tile_px=8,
                         dedupe=DEFAULT_THRESHOLD, cache_dir=cache)
    assert mosaic.report()["duplicates_dropped"] == _PHOTOS
    placed = {name.removesuffix("-m.jpg").removesuffix(".jpg")
              for name in set(mosaic.placements.source_ids)}
    # Only one of each pair is placed: every name placed stands for one photo.
    assert len(placed) == len(set(mosaic.placements.source_ids))


@pytest.mark.parametrize("settings", [{"px": 16}, {"px": 32}, {"px": 32, "crop": "subject"}],
                         ids=["16px", "32px-centre", "32px-subject"])
def test_an_index_made_before_the_mirrors_gets_them_at_its_first_grouping_once(
        tmp_path, monkeypatch, settings):
    # Since session 38 its updates leave it as it is (rule 2): only the grouping of
    # near-duplicates reads the mirrors' hashes, and it asks for them.
    folder = mirrored_folder(tmp_path / "photos")
    fresh = open_library(folder, tmp_path / "fresh", **settings)
    cache = tmp_path / "old"
    old = open_library(folder, cache, **settings)
    as_rule_2(old.directory)
    with monkeypatch.context() as older_version:
        # An older version's grouping, which does not sign them: its leaders are cached so.
        older_version.setattr(_index, "sign_mirrors", lambda *arguments: None)
        assert pairs_of(old) == []
    signed = record_results(monkeypatch, _update, "decode_tile")
    updated = open_library(folder, cache, **settings)
    assert signed == [] and updated.stats.decoded == 0
    assert updated.generation == old.generation and rule_of(updated) == "2"
    assert all(row[-1] is None for row in stored_rows(updated))
    assert pairs_of(updated) == expected_pairs()
    # Square centre tiles at 32 px are their photos' signature pictures: none is read.
    from_tiles = settings == {"px": 32}
    assert len(signed) == (0 if from_tiles else 2 * _PHOTOS)
    assert updated.generation == old.generation + 1  # the cached leaders are not served
    assert stored_rows(updated) == stored_rows(fresh)
    assert rule_of(updated) == str(SIGNATURE_RULE)
    signed.clear()
    again = open_library(folder, cache, **settings)
    assert pairs_of(again) == expected_pairs()
    assert signed == [] and again.generation == updated.generation


def test_an_interrupted_signing_of_the_mirrors_goes_on_where_it_stopped(tmp_path, monkeypatch):
    folder = mirrored_folder(tmp_path / "photos")
    fresh = open_library(folder, tmp_path / "fresh")
    cache = tmp_path / "old"
    as_rule_2(open_library(folder, cache).directory)
    decode = _update.decode_tile
    calls: list[int] = []

    def interrupted(*arguments, **keywords):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return decode(*arguments, **keywords)

    monkeypatch.setattr(_update, "RESIGN_EVERY", 3)
    monkeypatch.setattr(_update, "RESIGN_THREADS", 1)
    monkeypatch.setattr(_update, "decode_tile", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pairs_of(open_library(folder, cache))
    signed = record_results(monkeypatch, _update, "decode_tile")
    resumed = open_library(folder, cache)
    assert signed == []  # an update alone leaves the rest to the next grouping
    assert pairs_of(resumed) == expected_pairs()
    assert len(signed) == 2 * _PHOTOS - 3  # the first batch committed
    assert stored_rows(resumed) == stored_rows(fresh)


def shard_decoder(part_entries: int):
    """A decoder that writes shards of ``part_entries`` entries and stages them, as a cluster."""

    def decode(source, entries, tile, directory, connection, stats, show_progress):
        for start in range(0, len(entries), part_entries):
            name, _, _ = write_shard(source, entries[start:start + part_entries], tile.width,
                                     tile.aspect, tile.crop, directory,
                                     colour_profiles=tile.colour_profiles)
            rows = read_shard_rows(directory, name)
            _update.stage_shard(connection, name, rows.tiles, rows.failures)
            stats.decoded += len(entries[start:start + part_entries])

    return decode


def test_shards_store_the_mirrors_as_one_machine_does(tmp_path):
    folder = mirrored_folder(tmp_path / "photos")
    one = open_library(folder, tmp_path / "one", aspect="3:2")
    two = open_library(folder, tmp_path / "two", aspect="3:2", decoder=shard_decoder(3))
    assert list(two.directory.glob("shard-*.u8"))
    assert stored_rows(two) == stored_rows(one)
    assert np.asarray(two.tiles).tobytes() == np.asarray(one.tiles).tobytes()
    assert pairs_of(two) == pairs_of(one) == expected_pairs()


def test_rows_of_a_worker_from_before_the_mirrors_are_staged(tmp_path):
    folder = mirrored_folder(tmp_path / "photos")

    def old_worker(source, entries, tile, directory, connection, stats, show_progress):
        name, _, _ = write_shard(source, entries, tile.width, tile.aspect, tile.crop,
                                 directory, colour_profiles=tile.colour_profiles)
        rows = read_shard_rows(directory, name)
        _update.stage_shard(connection, name, [row[:11] for row in rows.tiles], rows.failures)
        stats.decoded += len(entries)

    library = open_library(folder, tmp_path / "cache", decoder=old_worker)
    assert len(library) == 2 * _PHOTOS
    # Without their mirrors' hashes, given them by the first grouping, from the photos.
    assert rule_of(library) == "2"
    assert pairs_of(library) == expected_pairs()
    assert all(row[-1] is not None for row in stored_rows(library))


def test_a_shard_rows_file_missing_is_said_in_plain_words(tmp_path):
    with pytest.raises(MosaicistError) as raised:
        read_shard_rows(tmp_path, "shard-0123.u8")
    assert str(raised.value) == (f"{tmp_path / 'shard-0123.rows.json'}: cannot read a shard's "
                                 f"rows (No such file or directory)")
    (tmp_path / "shard-0123.rows.json").write_text('{"tiles": [[1, 2]], "failures": []}')
    with pytest.raises(MosaicistError, match=r"rows \(the file is damaged"):
        read_shard_rows(tmp_path, "shard-0123.u8")


def test_an_index_folder_removed_during_the_run_fails_it_in_one_line(tmp_path, monkeypatch):
    folder = mirrored_folder(tmp_path / "photos")
    cache = tmp_path / "cache"
    decode = _update.decode_tiles

    def removed_midway(*arguments, **keywords):
        for number, decoded in enumerate(decode(*arguments, **keywords)):
            if number == 2:
                shutil.rmtree(cache / "indexes")
            yield decoded

    monkeypatch.setattr(_update, "decode_tiles", removed_midway)
    result = CliRunner().invoke(main, ["index", str(folder), "--tile-px", "8",
                                       "--cache-dir", str(cache), "-q"])
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert lines[0].endswith(": the index folder was removed during the run (its cache "
                             "deleted or unmounted?); run again to index anew"), lines[0]
    assert str(cache / "indexes") in lines[0]

