"""FolderSource: scanning order, ignored files, bad files reported and skipped."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import BAD_FILES, GOOD_FILES, make_colour_folder, make_odd_folder

from mosaicist import imaging
from mosaicist.cli import main
from mosaicist.errors import SourceError
from mosaicist.imaging import decode_tile_bytes
from mosaicist.library import TileLibrary
from mosaicist.sources import open_source
from mosaicist.sources.folder import FolderSource


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    return make_odd_folder(tmp_path_factory.mktemp("odd"))


def test_scan_order_and_ignored_files(odd):
    ids = [entry.source_id for entry in FolderSource(odd).scan()]
    assert ids == sorted(GOOD_FILES + list(BAD_FILES))
    assert not any(part.startswith(".") for source_id in ids for part in source_id.split("/"))
    assert not any(source_id.startswith("loop/") for source_id in ids)


def test_scan_sorts_by_relative_posix_path(tmp_path):
    for name in ("b.png", "a/z.png", "a-b.png", "A.png", "a/b/c.png"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        make_colour_folder(tmp_path / "_", 1)
        (tmp_path / "_" / "t000.png").rename(path)
    ids = [entry.source_id for entry in FolderSource(tmp_path).scan()]
    assert ids == sorted(["b.png", "a/z.png", "a-b.png", "A.png", "a/b/c.png"])


def test_not_a_folder(tmp_path):
    with pytest.raises(SourceError, match="not a folder"):
        FolderSource(tmp_path / "missing")


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_files_are_reported_and_skipped(odd, tmp_path, workers, monkeypatch):
    monkeypatch.setattr("mosaicist.sources.folder.DECODE_BATCH", 4)
    source = FolderSource(odd, workers=workers)
    library = TileLibrary.open(source, 8, cache_dir=tmp_path / "cache")
    assert library.source_ids == GOOD_FILES
    assert library.tiles.shape == (len(GOOD_FILES), 8, 8, 3)
    failed = dict(library.stats.failed)
    assert sorted(failed) == sorted(BAD_FILES)
    for name, word in BAD_FILES.items():
        assert word in failed[name], (name, failed[name])
    for position, name in enumerate(library.source_ids):
        expected = decode_tile_bytes((odd / name).read_bytes(), 8)
        np.testing.assert_array_equal(library.tiles[position], expected)
    # Failures are remembered, not decoded again, and still reported.
    again = TileLibrary.open(FolderSource(odd, workers=workers), 8, cache_dir=tmp_path / "cache")
    assert again.stats.decoded == 0
    assert sorted(dict(again.stats.failed)) == sorted(BAD_FILES)


def test_pixel_limit_monkeypatched(odd, tmp_path, monkeypatch):
    monkeypatch.setattr(imaging, "TILE_MAX_PIXELS", 1000)
    library = TileLibrary.open(FolderSource(odd, workers=1), 8, cache_dir=tmp_path)
    failed = dict(library.stats.failed)
    assert "over the limit" in failed["jpeg/plain.jpg"]
    assert "png/deep/rgba.png" in library.source_ids  # 256 pixels: under the limit


def test_index_command_reports_skips(odd, tmp_path):
    result = CliRunner().invoke(main, ["index", str(odd), "--tile-px", "8",
                                       "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"{len(BAD_FILES)} skipped" in result.stderr
    assert f"{len(GOOD_FILES)} tiles" in result.stderr
    for name in BAD_FILES:
        assert f"skipped {name}" in result.stderr
    assert "Traceback" not in result.output


def test_open_source_resolves_folder(odd, tmp_path):
    assert isinstance(open_source(str(odd), tmp_path), FolderSource)
    source = FolderSource(odd)
    entry = next(entry for entry in source.scan() if entry.source_id == "jpeg/exif6.jpg")
    original = source.open_original(entry)
    assert original.mode == "RGB" and original.size == (24, 40)
