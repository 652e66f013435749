"""Session 34: hostile checks of the library index and its near-duplicate grouping."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from mosaicist import dedupe
from mosaicist.cli import main
from mosaicist.errors import MosaicistError
from mosaicist.library import TileLibrary


def test_swatches_of_one_hash_are_grouped_by_colour_not_each_against_every_kept_one(
        monkeypatch):
    # Flat pictures hash as one whatever their colour: a library of colour swatches
    # (or a still scene whose colours vary) paired every tile with every kept one
    # (50,000 swatches: 29 s of checks); their mean colours tell them apart.
    checked = [0]
    hamming = dedupe.hamming

    def counted_hamming(first, second):
        checked[0] += np.size(first)
        return hamming(first, second)

    monkeypatch.setattr(dedupe, "hamming", counted_hamming)
    levels = np.arange(0, 256, 20)  # 20 apart: no two near in colour (tolerance 12)
    colours = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    colours = colours[np.random.default_rng(0).permutation(len(colours))[:2000]]
    # Every 10th tile a copy, off by a few levels, of the tile 5 before it.
    copies = np.arange(10, len(colours), 10)
    colours[copies] = np.clip(colours[copies - 5].astype(int) + 3, 0, 255)
    colours = colours.astype(np.uint8)
    hashes = np.zeros(len(colours), np.uint64)

    leaders = dedupe.duplicate_leaders(hashes, colours, 6)

    expected = np.arange(len(colours))
    expected[copies] = copies - 5
    assert np.array_equal(leaders, expected)
    assert checked[0] < 2_000_000  # 14,117,000 when each was checked against every kept one


def test_a_folder_of_files_that_are_no_pictures_says_what_it_left_out(tmp_path):
    # It said "no usable tile images found", as of an empty folder, of a folder of
    # camera RAW files: the user could not tell they were not even tried.
    folder = tmp_path / "raw"
    (folder / "hidden").mkdir(parents=True)
    for name in ("IMG_1.CR2", "IMG_2.CR2", "IMG_3.cr2", "notes.txt", "README", "a.xcf",
                 "photo.jpg "):
        (folder / name).write_bytes(b"x")
    (folder / ".DS_Store").write_bytes(b"x")  # hidden: never counted
    (folder / "sub").mkdir()  # a folder is no file left out
    result = CliRunner().invoke(main, ["index", str(folder), "--cache-dir",
                                       str(tmp_path / "cache"), "-q"])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    # "photo.jpg " is read by its extension without the trailing space (session 35).
    assert ("raw: no usable tile images found (1 file could not be read; 6 files left out by "
            "their extension: 3 .cr2, 1 without one, 1 .txt, ...; tiles are read from JPEG, PNG, "
            "WebP, TIFF, BMP, GIF, HEIC and AVIF files)") in result.stderr

    # With files that were tried too, both are said; an empty folder says neither.
    (folder / "bad.png").write_bytes(b"not a png")
    with pytest.raises(MosaicistError, match=r"found \(2 files could not be read; 6 files "
                                             r"left out by their extension: "):
        TileLibrary.open(folder, match_px=8, cache_dir=tmp_path / "cache")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MosaicistError, match=r"empty: no usable tile images found$"):
        TileLibrary.open(empty, match_px=8, cache_dir=tmp_path / "cache")
