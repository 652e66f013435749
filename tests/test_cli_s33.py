"""Command-line behaviour fixed in session 33: each test failed before its fix."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_colour_folder
from PIL import Image

from mosaicist.cli import main
from mosaicist.paths import dangling_link


def _random_picture(path: Path, height: int, width: int, seed: int) -> Path:
    """A picture of random pixels saved at ``path``."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def _loop(folder: Path, name: str) -> Path:
    """``name`` in ``folder``: a link to a link back to it."""
    first, second = folder / name, folder / f"other-{name}"
    os.symlink(second.name, first)
    os.symlink(first.name, second)
    return first


def test_dangling_link_tells_a_loop_a_missing_target_and_a_plain_missing_name(tmp_path):
    loop = _loop(tmp_path, "a.json")
    assert dangling_link(loop) == "a link that loops back on itself"
    broken = tmp_path / "b.json"
    os.symlink("gone.json", broken)
    assert dangling_link(broken) == "a link to gone.json, which is not there"
    assert dangling_link(tmp_path / "never.json") is None
    (tmp_path / "real.json").write_text("{}")
    os.symlink("real.json", tmp_path / "fine.json")
    assert dangling_link(tmp_path / "fine.json") is None


@pytest.mark.parametrize("arguments", [["view"], ["render", "--tiles", "x", "-o", "out.png"],
                                       ["index"]])
def test_a_loop_of_links_is_named_as_one_not_as_missing(tmp_path, arguments):
    loop = _loop(tmp_path, "mosaic.html")
    result = CliRunner().invoke(main, [*arguments, str(loop)])
    assert result.exit_code != 0
    assert "loops back on itself" in result.output, result.output
    assert "Traceback" not in result.output


def test_score_takes_cell_and_aspect_from_json_placements(tmp_path):
    # A mosaic of 8 px 4:3 cells scored with its JSON placements and no --cell was refused:
    # "the placements are for --cell 8, not --cell 16".
    target = _random_picture(tmp_path / "t.png", 48, 64, seed=0)
    library = make_colour_folder(tmp_path / "lib", 12, size=8)
    mosaic, placements = tmp_path / "m.png", tmp_path / "p.json"
    cache = ["--cache-dir", str(tmp_path / "cache")]
    made = CliRunner().invoke(main, ["make", str(target), "--tiles", str(library), "--cell",
                                     "8", "--aspect", "4:3", "--placements", str(placements),
                                     "-o", str(mosaic), "-q", "--preset", "seed", *cache])
    assert made.exit_code == 0, made.output
    scored = CliRunner().invoke(main, ["score", str(mosaic), str(target), "--placements",
                                       str(placements)])
    assert scored.exit_code == 0, scored.output
    given = CliRunner().invoke(main, ["score", str(mosaic), str(target), "--placements",
                                      str(placements), "--cell", "8", "--aspect", "4:3"])
    assert given.exit_code == 0, given.output
    assert scored.stdout == given.stdout
    # A --cell given that differs from the record is still refused, naming the file.
    other = CliRunner().invoke(main, ["score", str(mosaic), str(target), "--placements",
                                      str(placements), "--cell", "4"])
    assert other.exit_code != 0 and "p.json" in other.output


@pytest.mark.parametrize("folder", ["/tmp/a\0b", b"/tmp/folder"])
def test_a_cache_folder_holding_a_nul_or_given_as_bytes_is_refused_by_name(folder):
    from mosaicist.errors import OptionError
    from mosaicist.paths import cache_dir

    with pytest.raises(OptionError, match="cache_dir"):
        cache_dir(folder)


def test_the_options_docstring_shows_the_current_settings_version():
    import mosaicist.options as options

    assert f'{{"version": {options.SETTINGS_VERSION}, ' in options.__doc__


@pytest.mark.parametrize(("name", "words"), [
    ("mosaic.png", "takes it for a photo"),
    ("mural.dzi", "takes its pyramid's tiles for photos"),
    (".hidden/mosaic.png", None),
    (".mosaic.png", None),
])
def test_an_output_written_into_the_tile_library_is_warned_of(tmp_path, name, words):
    # make -o tiles/mosaic.png is allowed, but the next index took the mosaic for a photo
    # (and a pyramid's thousands of tiles for photos) without a word.
    target = _random_picture(tmp_path / "t.png", 32, 32, seed=1)
    library = make_colour_folder(tmp_path / "lib", 6, size=8)
    output = library / name
    output.parent.mkdir(exist_ok=True)
    result = CliRunner().invoke(main, ["make", str(target), "--tiles", str(library), "--cell",
                                       "8", "--tile-px", "8", "-o", str(output), "--preset",
                                       "seed", "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    if words is None:
        assert "inside the tile library" not in result.stderr
    else:
        assert words in result.stderr and "inside the tile library" in result.stderr


def test_a_small_output_on_a_full_disk_is_told_to_free_space_not_to_use_larger_cells(
        tmp_path, monkeypatch):
    # 'a 128x96 px PNG output (0.0 megapixels) needs at least 4.1 kB; its file system has 0
    # bytes free; use larger cells or smaller tiles': the disk was full, the picture small.
    from mosaicist.errors import MosaicistError
    from mosaicist.render import _formats, check_output

    real = os.statvfs(tmp_path)

    class Full:
        f_frsize, f_bsize, f_blocks = real.f_frsize, real.f_bsize, real.f_blocks
        f_bavail, f_files, f_favail = 0, real.f_files, real.f_favail

    monkeypatch.setattr(_formats.os, "statvfs", lambda folder: Full)
    with pytest.raises(MosaicistError) as error:
        check_output(tmp_path / "m.png", 128, 96)
    message = str(error.value)
    assert "megapixels" not in message and "larger cells" not in message
    assert "free some space or write the output elsewhere" in message
    with pytest.raises(MosaicistError, match=r"\(0\.1 gigapixels\).*or use larger cells"):
        check_output(tmp_path / "m.png", 10_000, 10_000)


def test_a_folder_of_unreadable_files_says_how_many_were_tried(tmp_path):
    # It said only "no usable tile images found", as for a folder with no pictures at all.
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"x")
    (folder / "b.png").write_bytes(b"yy")
    result = CliRunner().invoke(main, ["index", str(folder), "--cache-dir",
                                       str(tmp_path / "cache"), "-q"])
    assert result.exit_code == 1
    assert "no usable tile images found (2 files could not be read)" in result.stderr


@pytest.mark.parametrize(("arguments", "example"), [
    (["make", "t.png", "--tiles", "lib", "-o", "out.png/"], "out.png"),
    (["make", "t.png", "--tiles", "lib", "--report", "r.json/"], "report.json"),
    # The example is one the option takes (placements are .json or .csv, not out.png).
    (["make", "t.png", "--tiles", "lib", "--placements", "out/"], "placements.json"),
    (["render", "p.json", "-o", "out.png/"], "out.png"),
    (["score", "m.png", "t.png", "--json", "s.json/"], "out.json"),
    (["batch", "t.png", "--tiles", "lib", "-o", "out", "--report", "out/"], "report.json"),
])
def test_a_file_to_write_that_ends_with_a_slash_is_refused(tmp_path, arguments, example,
                                                           monkeypatch):
    # Path drops a trailing slash: 'make -o out.png/' wrote the file out.png.
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 2
    assert f"as a folder does; name the file (for example {example})" in result.output
    assert not (tmp_path / "out.png").exists()
