"""Tile library and sources, session 33: hostile cases found by hand, each with its fix."""

from __future__ import annotations

import numpy as np
from PIL import Image

from mosaicist.library import TileLibrary
from mosaicist.sources.folder import FolderSource


def _photos_with_a_copy(root):
    """Four random 12 px photos, the last a byte copy of the first (one near-duplicate)."""
    root.mkdir()
    rng = np.random.default_rng(33)
    for index in range(3):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), np.uint8)).save(root / f"t{index}.png")
    (root / "t3.png").write_bytes((root / "t0.png").read_bytes())
    return root


def test_a_changed_grouping_rule_never_serves_the_other_rules_kept_pixels(tmp_path,
                                                                          monkeypatch):
    # The library without near-duplicates keeps its pixels in a packed file of its own,
    # named by the library's generation and size. A grouping rule that keeps as many
    # tiles but other ones (DEDUPE_VERSION raised) read the old rule's file: the ids of
    # the new kept tiles over the old kept tiles' pixels.
    folder = _photos_with_a_copy(tmp_path / "photos")
    library = TileLibrary.open(FolderSource(folder, workers=1), 16, cache_dir=tmp_path / "c")
    first = library.without_duplicates(6)
    assert first.source_ids == ["t0.png", "t1.png", "t2.png"]

    def another_rule(hashes, colours, threshold, mirrors=None):
        return np.array([0, 0, 2, 3])  # t1 dropped as a copy of t0, the copy kept

    monkeypatch.setattr("mosaicist.library._index.DEDUPE_VERSION", 99)
    monkeypatch.setattr("mosaicist.library._index.duplicate_leaders", another_rule)
    second = library.without_duplicates(6)
    assert second.source_ids == ["t0.png", "t2.png", "t3.png"]
    by_id = dict(zip(library.source_ids, range(len(library)), strict=True))
    expected = np.asarray(library.tiles)[[by_id[name] for name in second.source_ids]]
    np.testing.assert_array_equal(np.asarray(second.tiles), expected)
