"""The Python API used hostilely from a script: NUL paths, placements made by hand and written."""

import os

import numpy as np
import pytest
from conftest import make_colour_folder, noisy_target

from mosaicist import MosaicistError, OptionError, Placements, make_mosaic


class BytesPath(os.PathLike):
    """A path object naming bytes (``os.fspath`` gives bytes)."""

    def __init__(self, name: bytes) -> None:
        self.name = name

    def __fspath__(self) -> bytes:
        return self.name


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory):
    root = tmp_path_factory.mktemp("mosaic")
    folder = make_colour_folder(root / "tiles", 12, size=8)
    return make_mosaic(noisy_target(), folder, cell_px=8, tile_px=8, preset="seed",
                       cache_dir=root / "cache", compute_metrics=False)


@pytest.mark.parametrize("parameter", ["target", "target_path", "tiles", "cache_dir"])
def test_make_refuses_a_path_holding_a_nul_by_name(tmp_path, parameter):
    # os.stat raised "ValueError: embedded null byte" (a traceback naming nothing).
    arguments = {"target": noisy_target(), "tiles": str(tmp_path), "cache_dir": tmp_path}
    name = parameter.removesuffix("_path")
    arguments[name] = f"{tmp_path}/a\0b.png"
    if parameter == "target_path":
        arguments[name] = tmp_path / "a\0b.png"
    with pytest.raises(OptionError, match=f"^{name} must be a path, got .* NUL character"):
        make_mosaic(arguments.pop("target"), arguments.pop("tiles"), **arguments)


def test_make_refuses_a_cache_path_object_naming_bytes(tmp_path):
    with pytest.raises(OptionError, match="^cache_dir must be a path .* naming bytes"):
        make_mosaic(noisy_target(), str(tmp_path), cache_dir=BytesPath(b"/tmp/cache"))


@pytest.mark.parametrize("write", ["write", "write_report"])
def test_mosaic_refuses_an_output_path_holding_a_nul(tmp_path, mosaic, write):
    with pytest.raises(OptionError, match="^path must be a path, got .* NUL character"):
        getattr(mosaic, write)(f"{tmp_path}/a\0b.png")
    assert not list(tmp_path.iterdir())


def one_cell(**keywords):
    """Placements of one cell, with ``keywords`` replacing its arguments."""
    arguments = {"rows": 1, "cols": 1, "tile": [0], "distance": [0], "source_ids": ["a.png"]}
    return Placements(**(arguments | keywords))


def test_placements_read_tile_ids_from_a_generator():
    # The check of the ids used the generator up: "source_ids has 0 entries".
    placements = Placements(1, 2, [0, 1], [0, 0], (name for name in ["a.png", "b.png"]))
    assert placements.source_ids == ["a.png", "b.png"]


@pytest.mark.parametrize(("keywords", "words"), [
    ({"tint": np.zeros(5)}, "tint must be 3 numbers a cell, an (N, 3) array, got shape (5,)"),
    ({"tint": np.zeros((1, 2))}, "tint must be 3 numbers a cell"),
    ({"gain": np.ones(4)}, "gain must be 3 numbers a cell"),
    ({"rect": [0, 0, 1]}, "rect must be 4 numbers a cell, an (N, 4) array, got shape (3,)"),
])
def test_placements_of_the_wrong_shape_name_the_field(keywords, words):
    # NumPy's "cannot reshape array of size 5 into shape (3)" named no field.
    with pytest.raises(ValueError) as raised:
        one_cell(**keywords)
    assert str(raised.value) == words or str(raised.value).startswith(words)


def test_placements_refuse_a_rectangle_of_texts_by_name():
    # "could not convert string to float: 'abcd'".
    with pytest.raises(OptionError, match="^rect must be numbers"):
        one_cell(rect="abcd")


def test_placements_refuse_a_uint64_position_past_int64_as_such():
    # It wrapped to -1: "tile has a negative library position, -1".
    with pytest.raises(ValueError, match="position past 9,007,199,254,740,992: "
                                         "18,446,744,073,709,551,615$"):
        one_cell(tile=np.array([2**64 - 1], np.uint64))


@pytest.mark.parametrize("keywords", [
    {"tile": [2**60]},  # past what a placements file holds
    {"distance": np.array([2**63 + 5], np.uint64)},  # past int64
])
def test_placements_a_file_cannot_hold_are_refused_when_made(keywords):
    # They were kept and written, and the file was refused when read back.
    with pytest.raises(ValueError, match="past"):
        one_cell(**keywords)


@pytest.mark.parametrize(("keywords", "words"), [
    ({"source": 3}, "source must be a text"),
    ({"target": 3.5}, "target must be a text"),
    ({"source": "a\0b"}, "source holds a NUL character"),
    ({"hashes": {"a.png": "x"}}, "hashes must map tile ids"),
    ({"hashes": {"a.png": 7}}, "hashes must map tile ids"),
    ({"hashes": ["a.png"]}, "hashes must be a mapping"),
])
def test_placements_refuse_what_a_file_would_not_read_back(keywords, words):
    with pytest.raises(OptionError, match=f"^{words}"):
        one_cell(**keywords)


@pytest.mark.parametrize("suffix", ["json", "csv"])
@pytest.mark.parametrize(("tile_id", "problem"), [
    ("", "is empty"),
    ("../outside.png", "leaves the library folder"),
    ("/etc/passwd", "is an absolute path"),
    ("\udcff.png", "is not valid Unicode text"),
])
def test_placements_refuse_to_write_tile_ids_read_would_refuse(tmp_path, suffix, tile_id,
                                                               problem):
    # JSON was written and then refused by read; CSV raised UnicodeEncodeError (a
    # lone surrogate) half-way through.
    placements = Placements(1, 2, [0, 1], [0, 0], ["fine.png", tile_id])
    path = tmp_path / f"p.{suffix}"
    with pytest.raises(MosaicistError, match=f"^{path}: cannot write the placements file: "
                                             f"the tile id of cell 1 {problem}"):
        placements.write(path)
    assert not list(tmp_path.iterdir())


def test_placements_made_by_hand_round_trip_through_both_files(tmp_path):
    placements = Placements(
        1, 2, np.array([3, 5], np.uint32), np.array([7, 9], np.uint64), ("a.png", "b.png"),
        np.array([0, 1]), np.array([[1.5, -2, 0], [0, 0, 0.25]]),
        gain=np.array([[1, 2, 0.5], [1, 1, 1]]), chroma=[0.5, 1], source="photos",
        target="bear.jpg", hashes={"a.png": "0" * 32})
    for suffix in ("json", "csv"):
        placements.write(tmp_path / f"p.{suffix}")
        back = Placements.read(tmp_path / f"p.{suffix}")
        for field in ("tile", "distance", "transform", "tint", "gain", "chroma"):
            assert np.array_equal(getattr(back, field), getattr(placements, field)), field
        assert back.source_ids == ["a.png", "b.png"]
    assert back.source is None  # a CSV file records no source
    assert Placements.read(tmp_path / "p.json").hashes == {"a.png": "0" * 32}
