"""Mirror-aware near-duplicates against a messy library and unlucky moments (session 37).

Each case found by attacking ``index --duplicates`` and the one-off signing of
an older index's mirrors (signature rule 2) is reproduced here at the step
where it went wrong (a monkeypatched step, never a sleep).
"""

from __future__ import annotations

import errno
import sqlite3

import pytest
from conftest import record_results
from test_mirror_index_s37 import (
    as_rule_2,
    expected_pairs,
    mirrored_folder,
    open_library,
    pairs_of,
    rule_of,
    stored_rows,
)

from mosaicist.library import TileLibrary, _index, _update
from mosaicist.library._manifest import SIGNATURE_RULE
from mosaicist.sources.folder import FolderSource


def meta_of(library: TileLibrary) -> dict[str, str]:
    connection = sqlite3.connect(library.directory / "manifest.sqlite")
    try:
        return dict(connection.execute("SELECT name, value FROM meta").fetchall())
    finally:
        connection.close()


def test_a_signing_interrupted_after_its_last_batch_still_retires_the_old_leaders(
        tmp_path, monkeypatch):
    # Ctrl-C after the last batch of mirrors' hashes committed, before the new generation
    # was published: the next run set the rule at its start, found nothing left to sign,
    # and kept the generation, so the leaders cached from the hashes without mirrors
    # (by a reader of the old index) were served for good: no mirrored copy grouped.
    folder = mirrored_folder(tmp_path / "photos")
    fresh = open_library(folder, tmp_path / "fresh")
    cache = tmp_path / "old"
    old = open_library(folder, cache)
    as_rule_2(old.directory)
    reader = TileLibrary.open(FolderSource(folder, workers=1), 16, cache_dir=cache,
                              update=False)
    with monkeypatch.context() as older_version:
        # A reader of an older version, which does not sign the mirrors (see
        # test_mirror_index_s37): its leaders cached for this generation.
        older_version.setattr(_index, "sign_mirrors", lambda *arguments: None)
        assert pairs_of(reader) == []

    def interrupted(*arguments, **keywords):
        raise KeyboardInterrupt

    monkeypatch.setattr(_update, "_link_store", interrupted)
    with pytest.raises(KeyboardInterrupt):
        # Since session 38 the first grouping signs them, not the update.
        pairs_of(open_library(folder, cache))
    monkeypatch.undo()
    assert rule_of(old) == "2" and "resign_after" in meta_of(old)
    resumed = open_library(folder, cache)
    assert pairs_of(resumed) == expected_pairs()
    assert resumed.generation == old.generation + 1
    assert stored_rows(resumed) == stored_rows(fresh)
    assert rule_of(resumed) == str(SIGNATURE_RULE)
    assert "resign_after" not in meta_of(resumed)


def test_photos_unreadable_while_their_mirrors_are_signed_get_them_once_readable(
        tmp_path, monkeypatch):
    # A photo that could not be read during the one-off signing (a drive offline, a file
    # locked) kept its row without its mirror's hash for good: the rule was set all the
    # same, and no later update tried again. A deleted photo just drops out.
    folder = mirrored_folder(tmp_path / "photos")
    cache = tmp_path / "old"
    as_rule_2(open_library(folder, cache).directory)
    (folder / "p03.jpg").unlink()
    (folder / "p03-m.jpg").unlink()
    read = _update.read_tile_bytes

    def offline(path):
        if str(path).endswith(("p01.jpg", "p01-m.jpg")):
            raise OSError(errno.EIO, "Input/output error", str(path))
        return read(path)

    monkeypatch.setattr(_update, "read_tile_bytes", offline)
    during = open_library(folder, cache)
    assert pairs_of(during) == expected_pairs()[:1] + expected_pairs()[2:3]
    assert rule_of(during) == "2"  # some rows are still to sign
    monkeypatch.undo()
    signed = record_results(monkeypatch, _update, "decode_tile")
    after = open_library(folder, cache)
    assert signed == []  # an update leaves them to the next grouping (session 38)
    assert pairs_of(after) == expected_pairs()[:3]
    assert len(signed) == 2  # only the two photos that could not be read
    assert after.generation == during.generation + 1  # the leaders cached are retired
    fresh = open_library(folder, tmp_path / "fresh")
    assert stored_rows(after) == stored_rows(fresh)
    assert rule_of(after) == str(SIGNATURE_RULE)
    signed.clear()
    assert pairs_of(open_library(folder, cache)) == expected_pairs()[:3] and signed == []
