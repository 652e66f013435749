"""One way to say counts, choices and grid sizes in messages, and the words that were off."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mosaicist.cli import main
from mosaicist.errors import MosaicistError, OptionError, alternatives, counted


def run(args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def picture(path, size=(16, 16), colour=(200, 40, 40)):
    Image.new("RGB", size, colour).save(path)
    return path


# --- counts ------------------------------------------------------------------------------


def test_counted_says_the_number_with_separators_and_the_word_agreeing():
    assert counted(1, "tile") == "1 tile"
    assert counted(0, "group") == "0 groups"
    assert counted(1500, "tile") == "1,500 tiles"
    assert counted(2240, "3:2 cell") == "2,240 3:2 cells"
    assert counted(2, "match", "matches") == "2 matches"
    assert counted(1, "match", "matches") == "1 match"


def test_every_module_says_counts_with_the_one_helper():
    # Five copies of the same three lines, one of them without the separators.
    import mosaicist.cli
    import mosaicist.distributed._cluster
    import mosaicist.match._assign
    import mosaicist.placements
    import mosaicist.sizing

    for module in (mosaicist.cli, mosaicist.sizing, mosaicist.placements,
                   mosaicist.match._assign):
        assert not hasattr(module, "_counted"), module.__name__
        assert module.counted is counted, module.__name__
    # distributed._match imports it from _cluster: the same function.
    assert mosaicist.distributed._cluster.counted is counted


def test_placements_count_fields_with_separators(tmp_path):
    # "line 2 has 1200 fields": the placements file's own copy had no separators.
    from mosaicist.placements import Placements

    path = tmp_path / "wide.csv"
    Placements(1, 1, np.zeros(1, np.int64), np.zeros(1), ["a.png"]).write(path)
    header, row = path.read_text().splitlines()[:2]
    path.write_text(f"{header}\n{row}{',x' * 1200}\n")
    with pytest.raises(MosaicistError, match=r"has 1,2\d\d fields"):
        Placements.read(path)


def test_files_left_out_are_counted_with_separators(tmp_path, monkeypatch, capsys):
    # "photos: 1000 files left out: ...": the folder's warning had no separators.
    from mosaicist.sources import folder as folder_module

    folder = tmp_path / "photos"
    folder.mkdir()
    for number in range(1000):
        (folder / f"{number}.png").touch()
    (folder / "alone.tif").touch()
    reasons = {".png": "PNG needs a plugin", ".tif": "TIFF needs another"}
    monkeypatch.setattr(folder_module, "missing_reader", reasons.get)
    assert folder_module.FolderSource(folder, workers=1).scan() == []
    lines = capsys.readouterr().err.splitlines()
    assert f"mosaicist: warning: {folder}: 1,000 files left out: PNG needs a plugin" in lines
    assert f"mosaicist: warning: {folder}: 1 file left out: TIFF needs another" in lines


def test_score_headline_counts_uses_with_separators():
    from mosaicist.metrics import headline

    line = headline({"distinct_tiles": 1, "max_uses": 120_000, "closest_repeat": 1})
    assert "1 distinct tile, max 120,000 uses, closest repeat 1" in line


# --- choices -----------------------------------------------------------------------------


def test_alternatives_read_as_a_list_of_choices():
    assert alternatives(["centre", "subject"]) == "centre or subject"
    assert alternatives(["seed", "lab", "oklab"]) == "seed, lab or oklab"
    assert alternatives(iter(["cpu"])) == "cpu"
    assert alternatives([]) == ""


def test_unknown_crop_lists_its_choices_as_a_choice(tmp_path):
    # "unknown --crop 'nope'; use centre, subject" read as a list of both.
    from mosaicist.library import TileLibrary
    from mosaicist.options import MosaicOptions

    with pytest.raises(OptionError, match=r"^unknown crop 'nope'; use centre or subject$"):
        MosaicOptions(crop="nope")
    with pytest.raises(OptionError, match=r"^unknown crop 'nope'; use centre or subject$"):
        TileLibrary.open(tmp_path, 8, cache_dir=tmp_path / "cache", crop="nope")
    result = run(["index", tmp_path, "--crop", "nope"])
    assert result.exit_code != 0
    assert "use centre or subject" in result.output


def test_other_choice_lists_read_the_same_way():
    from mosaicist.match import assign_tiles
    from mosaicist.render._writers import _TiffCodec

    with pytest.raises(OptionError, match=r"; use optimal or greedy$"):
        assign_tiles(np.zeros((1, 1), np.int64), np.zeros((1, 1)), 1, 1, method="best")
    with pytest.raises(MosaicistError, match=r"^a\.tif: unknown TIFF compression 'zip'; use "
                                             r"deflate, none, lzw or jpeg$"):
        _TiffCodec("a.tif", "zip", 90)


def test_a_transform_that_turns_rectangular_tiles_names_the_ones_that_do_not():
    from mosaicist.options import MosaicOptions
    from mosaicist.placements import Placements

    with pytest.raises(ValueError, match=r"\(use identity, mirror, rot180 or flip\)$"):
        Placements(1, 1, np.zeros(1, np.int64), np.zeros(1), ["a.png"],
                   transform=np.array([2]), options=MosaicOptions(aspect="3:2"))


# --- placements files --------------------------------------------------------------------


def test_a_picture_given_as_placements_says_what_a_placements_file_is(tmp_path):
    # "not a valid placements file ('utf-8' codec can't decode byte 0x89 in position 0...)".
    target = picture(tmp_path / "target.png")
    said = (f"mosaicist: error: {target}: not a valid placements file (not UTF-8 text; a "
            "placements file is .csv or .json)\n")
    scored = run(["score", target, target, "--cell", 4, "--placements", target])
    assert scored.exit_code == 1 and scored.stderr == said
    rendered = run(["render", target, "-o", tmp_path / "out.png"])
    assert rendered.exit_code == 1 and rendered.stderr == said


def _write_json(path, **changes):
    from mosaicist.placements import Placements

    Placements(2, 3, np.arange(6), np.zeros(6), [f"{i}.png" for i in range(6)]).write_json(path)
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if key == "cells":
            data["cells"].update(value)
        else:
            data[key] = value
    path.write_text(json.dumps(data))
    return path


def test_grid_sizes_in_placements_messages_are_columns_by_rows(tmp_path):
    # "a 15x20 grid" (rows x columns) where every summary says "20x15 cells".
    from mosaicist.placements import RECT_VERSION, Placements

    with pytest.raises(ValueError, match=r"^tile has 3 entries for a grid of 40x30 cells$"):
        Placements(30, 40, np.zeros(3, np.int64), np.zeros(3), ["a.png"] * 3)
    with pytest.raises(ValueError, match=r"got 5x0 cells$"):
        Placements(0, 5, np.zeros(0, np.int64), np.zeros(0), [])
    short = _write_json(tmp_path / "short.json", cells={"tile": [f"{i}.png" for i in range(5)]})
    with pytest.raises(MosaicistError, match=r"\(cells\.tile has 5 entries for a grid of "
                                             r"3x2 cells\)$"):
        Placements.read(short)
    huge = _write_json(tmp_path / "huge.json", rows=1_000_000, cols=2_000_000)
    with pytest.raises(MosaicistError, match=r"\(a grid of 2,000,000x1,000,000 cells has more "
                                             r"than [\d,]+\)$"):
        Placements.read(huge)
    outside = _write_json(tmp_path / "outside.json", version=RECT_VERSION,
                          cells={"rect": [[x, y, 1, 1] for y in range(2) for x in range(2)]
                                 + [[3, 0, 1, 1], [2, 1, 1, 1]]})
    with pytest.raises(MosaicistError, match=r"inside the grid of 3x2 cells\)$"):
        Placements.read(outside)
    csv_path = tmp_path / "short.csv"
    Placements(2, 3, np.arange(6), np.zeros(6), [f"{i}.png" for i in range(6)]).write(csv_path)
    csv_path.write_text("\n".join(csv_path.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(MosaicistError, match=r"\(5 cells listed for a grid of 3x2 cells, "
                                             r"which needs 6\)$"):
        Placements.read(csv_path)


# --- other words -------------------------------------------------------------------------


def test_a_side_over_a_format_limit_is_said_with_separators_and_the_formats_name():
    from mosaicist.render import check_output

    with pytest.raises(MosaicistError) as error:
        check_output("big.webp", 20480, 15360)
    assert str(error.value) == ("big.webp: 20,480x15,360 pixels is over the WebP limit of "
                                "16,383 pixels a side; use .jpg, .png, .tif or .dzi")


def test_an_index_that_keeps_changing_says_what_to_do(tmp_path, monkeypatch):
    # "index keeps changing under us; try again": who is "us", and why would it change?
    from mosaicist.library import TileLibrary, _index

    folder = tmp_path / "photos"
    folder.mkdir()
    picture(folder / "a.png")
    TileLibrary.open(folder, 8, cache_dir=tmp_path / "cache")

    def replaced(*_args):
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(_index.SlotSpace, "library_tiles", replaced)
    monkeypatch.setattr(_index, "_current_generation", lambda directory: -1)
    monkeypatch.setattr(_index.time, "sleep", lambda seconds: None)
    with pytest.raises(MosaicistError, match=r": the index changed every time it was read "
                                             r"\(another mosaicist run is updating it\); try "
                                             r"again when that run is done$"):
        TileLibrary.open(folder, 8, cache_dir=tmp_path / "cache", update=False)


def test_score_says_no_repeats_in_words(tmp_path):
    # "closest_repeat None" in the table when every cell has its own tile.
    from mosaicist.placements import Placements

    target = picture(tmp_path / "target.png", (8, 4))
    mosaic = picture(tmp_path / "mosaic.png", (8, 4))
    placements = tmp_path / "p.csv"
    Placements(1, 2, np.arange(2), np.zeros(2), ["a.png", "b.png"]).write(placements)
    result = run(["score", mosaic, target, "--cell", 4, "--placements", placements])
    assert result.exit_code == 0, result.output
    table = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert table["closest_repeat"] == "none (no tile repeats)"
    assert table["distinct_tiles"] == "2"
    assert "None" not in result.stdout


# --- a source that is not there, before a cluster starts ---------------------------------


@pytest.fixture
def no_cluster(monkeypatch):
    """Starting a Dask cluster fails the test: each takes seconds to start."""
    import mosaicist.distributed

    def refused(*_args, **_kwargs):
        raise AssertionError("a cluster was started")

    monkeypatch.setattr(mosaicist.distributed, "client_for", refused)


@pytest.mark.usefixtures("no_cluster")
def test_index_of_a_missing_source_fails_before_the_cluster_starts(tmp_path):
    result = run(["index", tmp_path / "nosuch", "--scheduler", "local:2",
                  "--cache-dir", tmp_path / "cache"])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"mosaicist: error: {tmp_path / 'nosuch'}: no such folder")


@pytest.mark.usefixtures("no_cluster")
def test_make_with_missing_tiles_fails_before_the_cluster_starts(tmp_path):
    target = picture(tmp_path / "target.png")
    result = run(["make", target, "--tiles", tmp_path / "nosuch", "--scheduler", "local:2",
                  "--cell", 4, "-o", tmp_path / "out.png", "--cache-dir", tmp_path / "cache"])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"mosaicist: error: {tmp_path / 'nosuch'}: no such folder")
    missing = run(["make", tmp_path / "none.png", "--tiles", tmp_path, "--scheduler",
                   "local:2", "-o", tmp_path / "out.png", "--cache-dir", tmp_path / "cache"])
    assert missing.exit_code == 1 and "none.png" in missing.stderr
    # A bad address is still said first, before the source is looked for (a download).
    address = run(["index", tmp_path / "nosuch", "--scheduler", "nowhere:x"])
    assert address.exit_code == 1 and "--scheduler" in address.stderr
