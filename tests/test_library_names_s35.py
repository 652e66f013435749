"""Library files with awkward names, and libraries moved, renamed or reached by another path."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_colour_folder
from PIL import Image

from mosaicist.cli import main
from mosaicist.library import TileLibrary
from mosaicist.sources import folder as folder_module


def _picture(path: Path, value: int) -> None:
    pixels = np.zeros((12, 16, 3), np.uint8)
    pixels[..., 0] = value
    pixels[:6, :, 1] = 255 - value
    Image.fromarray(pixels).save(path, format="PNG")


def test_names_ending_in_spaces_or_dots_are_indexed_and_rerendered(tmp_path):
    # "photo.png " and "photo.png." are pictures to their owner (Windows drops such ends,
    # a name pasted from elsewhere carries them unseen): they were left out without a
    # word, since their extension read ".png " and ".png.".
    library = tmp_path / "lib"
    library.mkdir()
    names = ["plain.png", "space.png ", "dot.png.", "both.PNG .", "tab.png\t"]
    for value, name in enumerate(names):
        _picture(library / name, 40 * value)
    (library / "notes.txt ").write_bytes(b"not a picture")  # still left out by extension
    cache = tmp_path / "cache"

    opened = TileLibrary.open(library, match_px=8, cache_dir=cache)

    assert sorted(opened.source_ids) == sorted(names)
    # A placements file names them as they are, and a render finds each again.
    target = tmp_path / "target.png"
    _picture(target, 100)
    placements = tmp_path / "placements.csv"
    runner = CliRunner()
    made = runner.invoke(main, ["make", str(target), "--tiles", str(library), "--cell", "2",
                                "--tile-px", "8", "--crop", "centre", "--preset", "seed",
                                "--use-all", "-o", str(tmp_path / "made.png"), "--placements",
                                str(placements), "--cache-dir", str(cache), "-q"])
    assert made.exit_code == 0, made.output
    assert all(name in placements.read_text() for name in names)
    rendered = runner.invoke(main, ["render", str(placements), "-o", str(tmp_path / "re.png"),
                                    "--tiles", str(library), "--tile-px", "8", "--crop",
                                    "centre", "--cache-dir", str(cache), "-q"])
    assert rendered.exit_code == 0, rendered.output
    assert np.array_equal(np.asarray(Image.open(tmp_path / "made.png")),
                          np.asarray(Image.open(tmp_path / "re.png")))


def _index(folder: Path, cache: Path) -> TileLibrary:
    return TileLibrary.open(folder, match_px=8, cache_dir=cache, crop="subject")


def _count_decodes(monkeypatch) -> list[str]:
    """Record the ids of every entry the folder source decodes."""
    decoded: list[str] = []
    original = folder_module.FolderSource.decode

    def decode(self, entries, *arguments, **keywords):
        decoded.extend(entry.source_id for entry in entries)
        return original(self, entries, *arguments, **keywords)

    monkeypatch.setattr(folder_module.FolderSource, "decode", decode)
    return decoded


def _same_library(first: TileLibrary, second: TileLibrary) -> None:
    assert first.source_ids == second.source_ids
    assert np.array_equal(np.asarray(first.tiles), np.asarray(second.tiles))
    assert first.windows_for(first.source_ids) == second.windows_for(second.source_ids)
    assert first.content_hashes(first.source_ids) == second.content_hashes(second.source_ids)
    for mine, theirs in zip(first.signatures(), second.signatures(), strict=True):
        assert np.array_equal(mine, theirs)


@pytest.mark.parametrize("how", ["moved", "linked", "copied"])
def test_a_moved_renamed_linked_or_copied_library_takes_its_tiles_from_its_old_index(
        tmp_path, monkeypatch, how):
    # The index is keyed by the folder's path: a library moved or renamed (or reached
    # through a link, or copied) was decoded again from scratch, hours for a large one.
    old = make_colour_folder(tmp_path / "photos", 6)
    (old / "sub").mkdir()
    _picture(old / "sub" / "inner.png", 7)
    cache = tmp_path / "cache"
    _index(old, cache)
    new = tmp_path / "elsewhere" / "renamed"
    new.parent.mkdir()
    if how == "moved":
        old.rename(new)
    elif how == "linked":
        new.symlink_to(old, target_is_directory=True)
    else:
        shutil.copytree(old, new)  # new status-change times: checked by content
    decoded = _count_decodes(monkeypatch)

    again = _index(new, cache)

    assert decoded == []
    assert again.stats is not None
    assert (again.stats.decoded, again.stats.reused) == (0, 7)
    # What a fresh index of the folder would hold, tile for tile.
    monkeypatch.undo()
    _same_library(again, _index(new, tmp_path / "fresh-cache"))


def test_only_unchanged_files_are_taken_from_the_old_index(tmp_path, monkeypatch):
    old = make_colour_folder(tmp_path / "photos", 4)
    cache = tmp_path / "cache"
    _index(old, cache)
    new = tmp_path / "copy"
    shutil.copytree(old, new)
    # The same size, other content; a new file; a file of another size.
    size = (new / "t001.png").stat().st_size
    _picture(new / "t001.png", 200)
    data = (new / "t001.png").read_bytes()
    (new / "t001.png").write_bytes(data[:size] if len(data) >= size
                                   else data + b"\0" * (size - len(data)))
    _picture(new / "t009.png", 90)
    _picture(new / "t002.png", 30)
    decoded = _count_decodes(monkeypatch)

    again = _index(new, cache)

    assert sorted(decoded) == ["t001.png", "t002.png", "t009.png"]
    assert again.stats is not None and again.stats.reused == 2
    monkeypatch.undo()
    _same_library(again, _index(new, tmp_path / "fresh-cache"))


def test_an_index_of_other_tiles_is_not_taken(tmp_path, monkeypatch):
    old = make_colour_folder(tmp_path / "photos", 3)
    cache = tmp_path / "cache"
    TileLibrary.open(old, match_px=8, cache_dir=cache, crop="centre")  # square, centre
    TileLibrary.open(old, match_px=6, cache_dir=cache, crop="subject")  # another size
    new = tmp_path / "moved"
    old.rename(new)
    decoded = _count_decodes(monkeypatch)

    again = _index(new, cache)  # 8 px, subject crop: neither is of its tiles

    assert sorted(decoded) == ["t000.png", "t001.png", "t002.png"]
    assert again.stats is not None and again.stats.decoded == 3


def test_an_old_index_whose_packed_file_is_gone_is_decoded_instead(tmp_path, monkeypatch):
    old = make_colour_folder(tmp_path / "photos", 3)
    cache = tmp_path / "cache"
    first = _index(old, cache)
    for packed in first.directory.glob("tiles-*.u8"):
        os.unlink(packed)
    new = tmp_path / "moved"
    old.rename(new)
    decoded = _count_decodes(monkeypatch)

    again = _index(new, cache)

    assert sorted(decoded) == ["t000.png", "t001.png", "t002.png"]
    monkeypatch.undo()
    _same_library(again, _index(new, tmp_path / "fresh-cache"))


def test_links_to_folders_are_left_out_with_a_warning(tmp_path, capsys):
    # Never followed (a loop, the same photos twice), and they were left out without a
    # word: a linked folder of photos looked like a library that had lost them.
    library = make_colour_folder(tmp_path / "lib", 2)
    elsewhere = make_colour_folder(tmp_path / "elsewhere", 2, seed=1)
    (library / "linked").symlink_to(elsewhere, target_is_directory=True)
    (library / "sub").mkdir()
    (library / "sub" / "more.png").symlink_to(elsewhere, target_is_directory=True)
    (library / "sub" / "self").symlink_to(library / "sub", target_is_directory=True)

    opened = TileLibrary.open(library, match_px=8, cache_dir=tmp_path / "cache", quiet=False)

    assert opened.source_ids == ["t000.png", "t001.png"]
    warnings = capsys.readouterr().err.splitlines()
    assert warnings == [f"mosaicist: warning: {library}: 3 links to folders left out (links "
                        "to folders are not followed): linked, sub/more.png, sub/self"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_photo_names_that_are_no_regular_files_are_left_out_with_a_warning(tmp_path, capsys):
    # A pipe named pipe.jpg and a link to a device named zero.png were left out without a
    # word (never read: a pipe waits for a writer, /dev/zero never ends).
    library = make_colour_folder(tmp_path / "lib", 2)
    os.mkfifo(library / "pipe.jpg")
    (library / "sub").mkdir()
    (library / "sub" / "zero.png").symlink_to("/dev/zero")
    os.mkfifo(library / "notes.txt")  # not a photo's name: left out by its extension

    opened = TileLibrary.open(library, match_px=8, cache_dir=tmp_path / "cache", quiet=False)

    assert opened.source_ids == ["t000.png", "t001.png"]
    warnings = capsys.readouterr().err.splitlines()
    assert warnings == [f"mosaicist: warning: {library}: 2 files left out (not regular "
                        "files: a pipe, a device or a socket is never read): pipe.jpg, "
                        "sub/zero.png"]
    # Quiet, as the API is by default: no warning, as for files skipped.
    TileLibrary.open(library, match_px=8, cache_dir=tmp_path / "other-cache")
    assert capsys.readouterr().err == ""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
@pytest.mark.parametrize("command", ["index", "make"])
def test_what_the_scan_left_out_is_not_said_under_quiet(tmp_path, command):
    # -q is "no progress bars, warnings or summary", yet a link to a folder and a pipe
    # named pipe.jpg were still warned of, by index -q and make -q alike.
    library = make_colour_folder(tmp_path / "lib", 2)
    elsewhere = make_colour_folder(tmp_path / "elsewhere", 2, seed=1)
    (library / "linked").symlink_to(elsewhere, target_is_directory=True)
    os.mkfifo(library / "pipe.jpg")
    target = tmp_path / "target.png"
    Image.new("RGB", (32, 32), (90, 30, 60)).save(target)
    arguments = (["index", str(library)] if command == "index" else
                 ["make", str(target), "--tiles", str(library), "-o", str(tmp_path / "out.png"),
                  "--cell", "8", "--tile-px", "8", "--preset", "seed"])
    cache = ["--cache-dir", str(tmp_path / "cache")]
    quiet = CliRunner().invoke(main, [*arguments, *cache, "-q"])
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == ""
    # Without -q both are said, as before.
    said = CliRunner().invoke(main, [*arguments, *cache])
    assert said.exit_code == 0, said.output
    assert "links to folders are not followed" in said.stderr
    assert "not regular files" in said.stderr
