"""Hostile options and files given to ``make`` and ``render``: one-line errors, nothing lost."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_colour_folder
from PIL import Image

from mosaicist.cli import main


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(3)
    target = root / "target.png"
    Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(target)
    tiles = make_colour_folder(root / "tiles", 12)
    return root, target, tiles


def run(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def assert_one_line_error(result, *words):
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mosaicist: error: ")
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize("flag", ["-o", "--report"])
def test_make_refuses_to_write_over_a_photo_of_its_library(setup, tmp_path, flag):
    # "-o tiles/a.png" replaced the user's photo a.png with the mosaic, without a word.
    root, target, tiles = setup
    photo = sorted(tiles.glob("*.png"))[3]
    before = photo.read_bytes()
    args = ["make", target, "--tiles", tiles, "--cell", 8, "--tile-px", 8, "-q",
            "--cache-dir", root / "cache"]
    if flag == "-o":
        args += ["-o", tiles / ".." / tiles.name / photo.name]
    else:
        args += ["-o", tmp_path / "m.png", "--report", photo]
    assert_one_line_error(run(*args), f"is also the photo {photo.name} of the tile library")
    assert photo.read_bytes() == before
    assert not (tmp_path / "m.png").exists()  # refused before any work


def test_make_may_write_a_new_file_in_the_library_folder(setup, tmp_path):
    root, target, tiles = setup
    output = tmp_path / "lib"
    output.mkdir()
    (output / "a.png").write_bytes((tiles / "t000.png").read_bytes())
    (output / ".hidden.png").write_bytes(b"not a photo the library lists")
    result = run("make", target, "--tiles", output, "--cell", 8, "--tile-px", 8, "-q",
                 "--preset", "seed", "-o", output / "b.png", "--report", output / ".hidden.png",
                 "--cache-dir", root / "cache")
    assert result.exit_code == 0, result.output
    assert (output / "b.png").is_file()


def test_render_refuses_to_write_over_a_photo_no_cell_holds(setup, tmp_path):
    # render refused only the photos it places; the others were written over all the same.
    root, target, tiles = setup
    placements = tmp_path / "p.json"
    result = run("make", target, "--tiles", tiles, "--cell", 16, "--tile-px", 8, "-q",
                 "--preset", "seed", "-o", tmp_path / "m.png", "--placements", placements,
                 "--limit", 2, "--cache-dir", root / "cache")
    assert result.exit_code == 0, result.output
    photo = sorted(tiles.glob("*.png"))[-1]  # beyond --limit 2: placed in no cell
    before = photo.read_bytes()
    assert_one_line_error(run("render", placements, "-o", photo, "--cache-dir", root / "cache"),
                          f"is also the photo {photo.name} of the tile library")
    assert photo.read_bytes() == before


@pytest.mark.parametrize(("keywords", "words"), [
    ({"tile": [0.5]}, "tile must be whole numbers"),  # was drawn as tile 0
    ({"tile": [True]}, "tile must be whole numbers"),
    ({"tile": [2**70]}, "tile must be whole numbers"),  # was an OverflowError
    ({"transform": [300]}, "transform has codes outside 0 to 7"),  # was an OverflowError
    ({"transform": [1.5]}, "transform must be whole numbers"),
    ({"tile": [float("nan")]}, "tile must be whole numbers"),  # was a bare ValueError
    ({"distance": ["x"]}, "distance must be numbers"),  # was kept, failing at the sum
    ({"distance": [float("nan")]}, "distance has values that are not finite"),
    ({"source_ids": [5]}, "source_ids must be a list of texts"),  # failed at drawing
    ({"source_ids": "a"}, "source_ids must be a list of texts"),  # its letters were the ids
    ({"tint": [["a", "b", "c"]]}, "tint must be numbers"),
    ({"gain": [[None, 1, 1]]}, "gain must be numbers"),
    ({"chroma": ["1"]}, "chroma must be numbers"),
])
def test_placements_refuse_arrays_of_the_wrong_kind_by_name(keywords, words):
    from mosaicist.placements import Placements

    arguments = {"tile": [0], "distance": [0], "source_ids": ["a.png"]} | keywords
    with pytest.raises(ValueError, match=words):
        Placements(1, 1, **arguments)


def test_placements_keep_whole_numbers_of_any_integer_type():
    from mosaicist.placements import Placements

    placements = Placements(1, 2, np.array([3, 4], np.uint16), np.array([1.5, 2]), ["a", "b"],
                            transform=np.array([0, 7], np.int64), chroma=[0, 1])
    assert placements.tile.tolist() == [3, 4] and placements.tile.dtype == np.int64
    assert placements.transform.tolist() == [0, 7] and placements.transform.dtype == np.int8
    assert placements.distance.tolist() == [1.5, 2.0]
    assert placements.chroma.tolist() == [0.0, 1.0]
    # A float array of whole numbers (np.zeros) is a list of positions too.
    assert Placements(1, 2, np.zeros(2), [0, 0], ["a", "b"]).tile.tolist() == [0, 0]


@pytest.mark.parametrize("name", ["p.csv", "p.json"])
def test_render_of_placements_without_a_source_names_the_file(setup, tmp_path, name):
    # "these placements do not name their tile source": which file, and why?
    from mosaicist.placements import Placements

    root, target, tiles = setup
    placements = Placements(1, 1, [0], [0], ["t000.png"])  # made in memory: no source
    placements.write(tmp_path / name)
    result = run("render", tmp_path / name, "-o", tmp_path / "r.png", "-q")
    assert_one_line_error(result, f"{tmp_path / name}: no tile source", "--tiles")
    assert not (tmp_path / "r.png").exists()


@pytest.mark.parametrize("key", ["target", "source"])
def test_render_of_a_file_naming_a_path_with_a_nul_is_one_line(setup, tmp_path, key):
    # A target "a\0b.png" reached os.path.realpath: "ValueError: embedded null byte", a traceback.
    import json

    from mosaicist.placements import Placements

    root, target, tiles = setup
    placements = Placements(1, 1, [0], [0], ["t000.png"], source=str(tiles), target=str(target))
    document = placements.to_json()
    document[key] = "a\0b.png"
    (tmp_path / "p.json").write_text(json.dumps(document))
    result = run("render", tmp_path / "p.json", "-o", tmp_path / "r.png", "-q")
    assert_one_line_error(result, f"{tmp_path / 'p.json'}: not a valid placements file",
                          f"{key} holds a NUL character")


@pytest.mark.parametrize("name", ["p.json", "p.csv"])
def test_placements_paths_with_a_nul_are_refused_by_name(tmp_path, name):
    # Writing raised "ValueError: embedded null byte"; reading said "not found".
    from mosaicist.errors import OptionError
    from mosaicist.placements import Placements

    placements = Placements(1, 1, [0], [0], ["t000.png"])
    with pytest.raises(OptionError, match="path must be a path.*holds a NUL character"):
        placements.write(str(tmp_path / ("a\0" + name)))
    with pytest.raises(OptionError, match="path must be a path.*holds a NUL character"):
        Placements.read(str(tmp_path / ("a\0" + name)))
    assert list(tmp_path.iterdir()) == []


def test_placements_paths_that_are_empty_are_refused_by_name():
    # Path("") is ".": reading said ".: placements file is not a regular file".
    from mosaicist.errors import OptionError
    from mosaicist.placements import Placements

    with pytest.raises(OptionError, match="path is empty: give the placements file"):
        Placements.read("")
    with pytest.raises(OptionError, match="path is empty"):
        Placements(1, 1, [0], [0], ["t000.png"]).write("")
