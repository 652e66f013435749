"""Placements: CSV and JSON round trips, and files that must be refused before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mosaicist.errors import MosaicistError
from mosaicist.placements import CSV_HEADER, Placements, tile_id_problem


def test_csv_round_trip(tmp_path):
    placements = Placements(
        2, 3,
        np.array([0, 4, 4, 1, 2, 3], np.int64),
        np.array([10, 0, 7, 123456789012, 5, 6], np.int64),
        ["a.png", "dir/b c.png", "dir/b c.png", 'q"uote,comma.jpg', "é.png", "x/y/z.png"],
    )
    path = tmp_path / "placements.csv"
    placements.write_csv(path)
    assert path.read_text().splitlines()[0] == ",".join(CSV_HEADER)
    assert len(path.read_text().splitlines()) == 1 + 6
    back = Placements.read_csv(path)
    assert (back.rows, back.cols) == (2, 3)
    np.testing.assert_array_equal(back.tile, placements.tile)
    np.testing.assert_array_equal(back.distance, placements.distance)
    assert back.source_ids == placements.source_ids
    assert back.objective == placements.objective
    assert back.tile_grid().tolist() == [[0, 4, 4], [1, 2, 3]]
    assert list(tmp_path.iterdir()) == [path]


def _document() -> dict:
    placements = Placements(
        2, 2, np.array([0, 1, 2, 1]), np.array([3.5, 0.0, 1.25, 2.0]),
        ["a.png", "sub/b.png", "c.png", "sub/b.png"],
        np.array([0, 1, 0, 0], np.int8), np.full((4, 3), 0.5),
        gain=np.full((4, 3), 1.5), chroma=np.array([0.5, 0.0, 1.0, 0.25]), source="tiles/",
        target="t.png", crop=(1, 2),
    )
    return json.loads(json.dumps(placements.to_json()))


def test_json_round_trip_keeps_every_field():
    back = Placements.from_json(_document())
    assert (back.rows, back.cols, back.crop) == (2, 2, (1, 2))
    assert Placements(1, 1, [0], [0], ["a"], crop=[np.int64(3), 4]).crop == (3, 4)
    assert back.source_ids == ["a.png", "sub/b.png", "c.png", "sub/b.png"]
    assert back.tile.tolist() == [0, 1, 2, 1] and back.transform.tolist() == [0, 1, 0, 0]
    assert back.distance.tolist() == [3.5, 0.0, 1.25, 2.0]
    assert (back.tint == 0.5).all() and (back.gain == 1.5).all()
    assert back.chroma.tolist() == [0.5, 0.0, 1.0, 0.25]


def _set(path: str, value: object):
    def change(document: dict) -> object:
        *parents, last = path.split(".")
        place = document
        for name in parents:
            place = place[name] if not name.isdigit() else place[int(name)]
        if last.isdigit():
            place[int(last)] = value
        else:
            place[last] = value
        return document
    return change


#: Hostile or broken documents and a word the error must contain.
HOSTILE = {
    "zero rows": (_set("rows", 0), "rows"),
    "negative cols": (_set("cols", -3), "cols"),
    "rows as text": (_set("rows", "2"), "rows"),
    "rows as bool": (_set("rows", True), "rows"),
    "rows as float": (_set("rows", 2.0), "rows"),
    "grid larger than the cells": (_set("rows", 10**9), "cells"),
    "grid of 10^10 cells": (lambda d: {**d, "rows": 10**5, "cols": 10**5}, "cells"),
    "short tile list": (lambda d: {**d, "cells": {**d["cells"], "tile": ["a.png"]}}, "cells.tile"),
    "null tile": (_set("cells.tile.0", None), "cells.tile[0]"),
    "tile leaves the library": (_set("cells.tile.1", "../../etc/passwd"), "library"),
    "tile deep ..": (_set("cells.tile.1", "sub/../../x.png"), "library"),
    "absolute tile": (_set("cells.tile.2", "/etc/passwd"), "absolute"),
    "empty tile": (_set("cells.tile.2", ""), "empty"),
    "NUL in tile": (_set("cells.tile.2", "a\0b.png"), "NUL"),
    "null position": (_set("cells.position.0", None), "cells.position[0]"),
    "negative position": (_set("cells.position.3", -5), "cells.position[3]"),
    "huge position": (_set("cells.position.3", 10**30), "cells.position[3]"),
    "nan distance": (_set("cells.distance.0", float("nan")), "cells.distance[0]"),
    "text distance": (_set("cells.distance.0", "1"), "cells.distance[0]"),
    "unknown transform": (_set("cells.transform.0", "spin"), "cells.transform[0]"),
    "transform as number": (_set("cells.transform.0", 7), "cells.transform[0]"),
    "short tint": (_set("cells.tint.0", [1]), "cells.tint[0]"),
    "text tint": (_set("cells.tint.0", "x"), "cells.tint[0]"),
    "infinite tint": (_set("cells.tint.0", [1, float("inf"), 0]), "cells.tint[0]"),
    "zero gain": (_set("cells.gain.1", [1, 0, 1]), "cells.gain[1]"),
    "unknown metric": (_set("settings.metric", "zzz"), "metric"),
    "tile_px 0": (_set("settings.tile_px", 0), "tile_px"),
    "settings null": (_set("settings", None), "settings"),
    "cells null": (_set("cells", None), "cells"),
    "cells a list": (_set("cells", []), "cells"),
    "no crop": (lambda d: {k: v for k, v in d.items() if k != "crop"}, "crop"),
    "negative crop": (_set("crop.left", -1), "crop.left"),
    "source a number": (_set("source", 5), "source"),
    "top-level array": (lambda d: [d], "format"),
    "top-level null": (lambda d: None, "format"),
    "no format": (lambda d: {**d, "format": "other"}, "format"),
    "version text": (_set("version", "2"), "version"),
    # True == 1 and 2.0 == 2: read as versions, the settings were ignored or misread.
    "version true": (_set("version", True), "version True"),
    "version float": (_set("version", 2.0), "version 2.0"),
    # A lone surrogate ("\udcff" in JSON) reached the index as a UnicodeEncodeError.
    "surrogate in tile": (_set("cells.tile.1", "\udcff.png"), "cells.tile[1]"),
    "version 99": (_set("version", 99), "version"),
    # An OverflowError traceback: whole numbers are kept as int64.
    "distance beyond int64": (_set("cells.distance.0", 10**40), "cells.distance[0]"),
    # Drawn, they overflowed the colour conversions (RuntimeWarnings, NaN cast to pixels).
    "tint of 1e308": (_set("cells.tint.0", [1e308, -1e308, 0]), "cells.tint[0]"),
    "gain of 1e308": (_set("cells.gain.1", [1e308, 1, 1]), "cells.gain[1]"),
    # Messages of thousands of characters: the whole value was quoted.
    "rows of 400 digits": (_set("rows", -10**400), "rows"),
    "crop of 400 digits": (_set("crop.top", -10**400), "crop.top"),
    "version of 400 digits": (_set("version", 10**400), "version"),
    "source a long list": (_set("source", list(range(1000))), "source must be a text"),
    "target a long object": (_set("target", {str(n): n for n in range(500)}), "target"),
    "metric a long text": (_set("settings.metric", "x" * 5000), "metric"),
    "chroma above 1": (_set("cells.chroma.0", 1.5), "cells.chroma[0]"),
    "negative chroma": (_set("cells.chroma.1", -0.5), "cells.chroma[1]"),
    "chroma true": (_set("cells.chroma.1", True), "cells.chroma[1]"),
    "chroma null": (_set("cells.chroma.2", None), "cells.chroma[2]"),
    "chroma text": (_set("cells.chroma.2", "0.5"), "cells.chroma[2]"),
    "short chroma list": (_set("cells.chroma", [0.5]), "cells.chroma"),
    # Whole numbers past a float's range: "int too large to convert to float", naming
    # neither the cell nor the field.
    "chroma of 400 digits": (_set("cells.chroma.3", 10**400), "cells.chroma[3]"),
    "tint of 400 digits": (_set("cells.tint.0", [1, 10**400, 0]), "cells.tint[0]"),
    "gain of 400 digits": (_set("cells.gain.1", [10**400, 1, 1]), "cells.gain[1]"),
    "distance of 400 digits": (_set("cells.distance.0", 10**400), "cells.distance[0]"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_placements_json_is_one_clear_error(tmp_path, case):
    change, word = HOSTILE[case]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(change(_document())))
    with pytest.raises(MosaicistError) as caught:
        Placements.read(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and word in message, message
    assert "\n" not in message and len(message) - len(str(path)) < 250


@pytest.mark.parametrize(("old", "new", "words"), [
    # Read as a dict, the last of each won without a word: a merge gone wrong drew
    # another grid, or the cells of another make.
    ('"rows":2', '"rows":2,"rows":3', "an object names 'rows' twice"),
    ('"cells":{', '"cells":{"tile":["x.png","x.png","x.png","x.png"],',
     "an object names 'tile' twice"),
    ('"crop":{', '"crop":{"top":0,', "an object names 'top' twice"),
])
def test_a_key_given_twice_in_placements_json_is_refused(tmp_path, old, new, words):
    text = json.dumps(_document(), separators=(",", ":"))
    assert old in text
    path = tmp_path / "p.json"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(MosaicistError) as caught:
        Placements.read(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: not a valid placements file (") and words in message


def test_a_whole_number_of_thousands_of_digits_in_json_is_one_plain_error(tmp_path):
    # Python refused it with advice for programmers ("use sys.set_int_max_str_digits()").
    text = json.dumps(_document(), separators=(",", ":"))
    path = tmp_path / "p.json"
    path.write_text(text.replace('"position":[0,', '"position":[' + "9" * 5000 + ",", 1))
    with pytest.raises(MosaicistError) as caught:
        Placements.read(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: not a valid placements file (a whole number too long "
                              "to read (") and "5000 digits" in message, message
    assert "sys.set_int_max_str_digits" not in message
    # Long numbers that Python reads are left to the checks that name their field.
    path.write_text(text.replace('"position":[0,', '"position":[' + "9" * 400 + ",", 1))
    with pytest.raises(MosaicistError, match=r"cells\.position\[0\] must be a whole number"):
        Placements.read(path)


def test_placements_read_from_a_file_know_it(tmp_path):
    # A later message about them (a placed tile gone from the library) names the file.
    placements = Placements(1, 2, np.array([0, 1]), np.array([1, 2]), ["a.png", "b.png"])
    assert placements.path is None
    for name in ("p.csv", "p.json"):
        placements.write(tmp_path / name)
        assert Placements.read(tmp_path / name).path == tmp_path / name


def test_deeply_nested_placements_json_is_one_clear_error(tmp_path):
    path = tmp_path / "p.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(MosaicistError, match="not a valid placements file"):
        Placements.read(path)


def _csv(tmp_path, text: str):
    path = tmp_path / "p.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "word"), [
    ("row,col,tile\n0,0,a.png\n", "distance"),
    ("row,col,tile,distance,position\n0,0,a.png,1,0\n0,0,b.png,1,1\n", "line 3"),
    ("row,col,tile,distance,position\n0,0,a.png,1,0\n0,2,b.png,1,1\n", "grid"),
    ("row,col,tile,distance,position\n-1,0,a.png,1,0\n", "at least 0"),
    ("row,col,tile,distance,position\nx,0,a.png,1,0\n", "row"),
    ("row,col,tile,distance,position\n0,0,a.png,1,99999999999999999999999\n", "position"),
    ("row,col,tile,distance,position\n0,0,a.png,nan,0\n", "distance"),
    ("row,col,tile,distance,position\n0,0,../x.png,1,0\n", "library"),
    ("row,col,tile,distance,position,transform\n0,0,a.png,1,0,spin\n", "transform"),
    ("row,col,tile,distance,position,transform,tint_0,tint_1,tint_2\n"
     "0,0,a.png,1,0,identity,1,inf,0\n", "tint"),
    ("row,col,tile,distance,position,transform,tint_0,tint_1,tint_2,gain_0,gain_1,gain_2\n"
     "0,0,a.png,1,0,identity,0,0,0,1,-1,1\n", "gain"),
    ("row,col,tile,distance,position\n", "no rows"),
    ("", "the file is empty"),
    # An OverflowError traceback: read as an int64.
    ("row,col,tile,distance,position\n0,0,a.png,99999999999999999999,0\n", "int64"),
    # A csv.Error traceback (the csv module's field limit).
    pytest.param("row,col,tile,distance,position\n0,0," + "a" * 200_000 + ",1,0\n",
                 "field limit", id="a field of 200,000 characters"),
    # The second "tile" column won without a word.
    ("row,col,tile,distance,position,tile\n0,0,a.png,1,0,b.png\n", "'tile' twice"),
    # A grid without its cells' sizes, tints without their blue: defaults without a word.
    ("row,col,tile,distance,position,x,y\n0,0,a.png,1,0,0,0\n", "x, y but not w, h"),
    ("row,col,tile,distance,position,tint_0,tint_1\n0,0,a.png,1,0,1,2\n", "not tint_2"),
    ("row,col,tile,distance,position,gain_0\n0,0,a.png,1,0,2\n", "not gain_1, gain_2"),
    # Python's int() reads these as 20 and 2: another tile.
    ("row,col,tile,distance,position\n0,0,a.png,1,2_0\n", "position must be a whole number"),
    ("row,col,tile,distance,position\n0,0,a.png,1,\u0662\n", "position must be a whole number"),
    # "must be a number, got '1.0'": it is one, but not a whole one.
    ("row,col,tile,distance,position\n0,0,a.png,1,0\n1.0,0,b.png,1,1\n",
     "line 3: row must be a whole number, got '1.0'"),
    # A message of thousands of characters quoting the field.
    pytest.param("row,col,tile,distance,position\n0,0,a.png,1," + "9" * 5000 + "\n",
                 "position", id="a position of 5000 digits"),
    ("row,col,tile,distance,position,transform,tint_0,tint_1,tint_2\n"
     "0,0,a.png,1,0,identity,1e300,0,0\n", "tint"),
])
def test_hostile_placements_csv_is_one_clear_error(tmp_path, text, word):
    path = _csv(tmp_path, text)
    with pytest.raises(MosaicistError) as caught:
        Placements.read(path)
    message = str(caught.value)
    assert word in message and "\n" not in message, message
    assert len(message) - len(str(path)) < 250, message


def test_a_csv_line_too_long_is_refused_before_it_is_read_whole(tmp_path, monkeypatch):
    import mosaicist.placements as module

    monkeypatch.setattr(module, "MAX_CSV_LINE", 1000)
    path = _csv(tmp_path, "row,col,tile,distance,position\n0,0," + "a" * 2000 + "\n")
    with pytest.raises(MosaicistError, match="line 2 is longer than 1,000 characters"):
        Placements.read(path)
    # A line of the limit, with a quoted newline inside a field, still reads.
    name = "a\n" + "b" * 900 + ".png"
    _csv(tmp_path, f'row,col,tile,distance,position\n0,0,"{name}",1,0\n')
    assert Placements.read(path).source_ids == [name]


def test_an_unreadable_placements_file_is_one_clear_error(tmp_path, monkeypatch):
    placements = Placements(1, 1, np.array([0]), np.array([1]), ["a.png"])
    for name in ("p.json", "p.csv"):
        placements.write(tmp_path / name)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("builtins.open", refuse)
    monkeypatch.setattr("pathlib.Path.read_text", refuse)
    for name in ("p.json", "p.csv"):
        with pytest.raises(MosaicistError) as caught:
            Placements.read(tmp_path / name)
        message = str(caught.value)
        assert message == f"{tmp_path / name}: cannot read the placements file: Permission denied"
    # A folder it may not search: the file's status cannot be had either (an OSError).
    monkeypatch.setattr("pathlib.Path.stat", refuse)
    for name in ("p.json", "p.csv"):
        with pytest.raises(MosaicistError) as caught:
            Placements.read(tmp_path / name)
        message = str(caught.value)
        assert message == f"{tmp_path / name}: cannot read the placements file: Permission denied"


@pytest.mark.parametrize(("call", "words"), [
    (lambda: Placements.read(None), "path must be a path, got None"),
    (lambda: Placements.read(5), "path must be a path, got 5"),
    (lambda: Placements.read_csv(["p.csv"]), "path must be a path, got a list"),
    (lambda: Placements("2", 1, [0, 0], [0, 0], ["a", "b"]), "rows must be a whole number"),
    (lambda: Placements(1, 2.0, [0, 0], [0, 0], ["a", "b"]), "cols must be a whole number"),
    (lambda: Placements(1, 1, [0], [0], ["a"], options={"tile_px": 8}),
     "options must be a MosaicOptions, got a dict"),
    # Drawn from the end of the library (a negative index), or an IndexError when written.
    (lambda: Placements(1, 2, [0, -1], [0, 0], ["a", "b"]), "tile has a negative"),
    (lambda: Placements(1, 1, [0], [0], ["a"], [99]), "transform has codes outside 0 to 7"),
    (lambda: Placements(1, 1, [0], [0], ["a"], tint=[[1e308, 0, 0]]), "tint"),
    (lambda: Placements(1, 1, [0], [0], ["a"], gain=[[1e308, 1, 1]]), "gain"),
    # Kept as given: a ValueError (unpacking) when written, or a file read refuses.
    (lambda: Placements(1, 1, [0], [0], ["a"], crop=(3,)),
     r"crop must be \(left, top\), two whole numbers of at least 0, got \(3,\)"),
    (lambda: Placements(1, 1, [0], [0], ["a"], crop=("1", 0)), "crop must be"),
    (lambda: Placements(1, 1, [0], [0], ["a"], crop=(0, -2)), "crop must be"),
])
def test_placements_of_the_wrong_type_or_range_name_the_parameter(call, words):
    with pytest.raises(ValueError, match=words):
        call()


_FULL_HEADER = ("row,col,tile,distance,position,transform,tint_0,tint_1,tint_2,"
                "gain_0,gain_1,gain_2\n")


@pytest.mark.parametrize(("lines", "message"), [
    # The last line cut after tint_0: its other tints and gains took their defaults.
    (["0,0,a.png,1,0,identity,1,2,3,1,1,1", "0,1,b.png,1,1,identity,4"],
     "line 3 has 7 fields, the header has 12"),
    # A line with a field too many: the extra was dropped without a word.
    (["0,0,a.png,1,0,identity,1,2,3,1,1,1,9", "0,1,b.png,1,1,identity,4,5,6,1,1,1"],
     "line 2 has 13 fields, the header has 12"),
    (["0,0,a.png,1,0,identity,1,2,3,1,1,1", "", "0,1"],
     "line 4 has 2 fields, the header has 12"),
    (["0,0,a.png,1,0,identity,1,2,3,1,1,1", "x"], "line 3 has 1 field, the header has 12"),
])
def test_csv_line_of_another_field_count_is_refused(tmp_path, lines, message):
    path = _csv(tmp_path, _FULL_HEADER + "\n".join(lines) + "\n")
    with pytest.raises(MosaicistError) as caught:
        Placements.read(path)
    assert str(caught.value) == f"{path}: not a valid placements file ({message})"


def test_csv_line_numbers_count_blank_lines_and_quoted_newlines(tmp_path):
    path = _csv(tmp_path, 'row,col,tile,distance,position\n0,0,"a\nb.png",1,0\n\n'
                          '0,0,c.png,1,1\n')
    with pytest.raises(MosaicistError, match="line 5: cell .* is also on line 2"):
        Placements.read(path)


def test_old_csv_without_the_newer_columns_still_reads(tmp_path):
    path = _csv(tmp_path, "row,col,tile,distance,position\n0,0,a.png,1,0\n0,1,b.png,2,1\n")
    back = Placements.read(path)
    assert back.source_ids == ["a.png", "b.png"]
    assert (back.tint == 0).all() and (back.gain == 1).all()
    assert back.transform.tolist() == [0, 0]


def test_csv_settings_are_those_of_a_make_without_options(tmp_path):
    # A CSV records no settings: they are the default preset's, what a make without
    # options writes (the likeliest maker of a CSV), and known not to be recorded.
    from mosaicist import MosaicOptions

    placements = Placements(1, 2, np.array([0, 1]), np.array([1, 2]), ["a.png", "b.png"],
                            options=MosaicOptions(preset="seed", crop="centre"))
    placements.write(tmp_path / "p.csv")
    placements.write(tmp_path / "p.json")
    back = Placements.read(tmp_path / "p.csv")
    assert back.options.to_json() == MosaicOptions().to_json()
    assert not back.settings_recorded and Placements.read(tmp_path / "p.json").settings_recorded


def test_tile_id_problem_allows_library_paths_only():
    for good in ("a.png", "sub/b c.png", "..hidden.png", "a..b/c.png", "data_batch_1:17",
                 "caf\\xe9.png", "C:x.png"):
        assert tile_id_problem(good) is None, good
    for bad in ("", "/abs.png", "../x.png", "a/../../x.png", "a/..", "a\0.png", "\udcff.png",
                "é\ud800"):
        assert tile_id_problem(bad) is not None, bad


def test_files_saved_with_a_byte_order_mark_read_back(tmp_path):
    # Excel's "CSV UTF-8" and Notepad start the file with U+FEFF: the CSV read as
    # having no "row" column, the JSON as not JSON.
    placements = Placements(1, 2, np.array([0, 1]), np.array([1, 2]), ["é.png", "b.png"])
    for name in ("p.csv", "p.json"):
        path = tmp_path / name
        placements.write(path)
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
        back = Placements.read(path)
        assert back.source_ids == ["é.png", "b.png"]
        assert back.tile_grid().tolist() == [[0, 1]]


def test_a_placements_path_that_is_a_folder_says_so(tmp_path):
    with pytest.raises(MosaicistError, match="not a regular file"):
        Placements.read(tmp_path)
    with pytest.raises(MosaicistError, match="not found"):
        Placements.read(tmp_path / "missing.csv")


def test_tile_hashes_round_trip_and_are_checked(tmp_path):
    digest = "0123456789abcdef" * 2
    placements = Placements(1, 2, np.array([0, 1]), np.array([1, 2]), ["a.png", "b.png"],
                            hashes={"a.png": digest, "b.png": digest[::-1]})
    path = tmp_path / "p.json"
    placements.write(path)
    assert Placements.read(path).hashes == {"a.png": digest, "b.png": digest[::-1]}
    document = json.loads(path.read_text())
    # A cell's tile swapped by hand: the old tile's hash has nothing left to check.
    edited = json.loads(path.read_text())
    edited["cells"]["tile"] = [tile.replace("b.png", "c.png")
                               for tile in edited["cells"]["tile"]]
    path.write_text(json.dumps(edited))
    swapped = Placements.read(path)
    assert swapped.source_ids == ["a.png", "c.png"] and swapped.hashes == {"a.png": digest}
    for hashes, words in [([1], "hashes must be an object"),
                          ({"c.png": "xyz"}, "not a content hash"),
                          ({"a.png": "xyz"}, "not a content hash"),
                          ({"a.png": 5}, "not a content hash")]:
        path.write_text(json.dumps(document | {"hashes": hashes}))
        with pytest.raises(MosaicistError, match=words):
            Placements.read(path)


def test_tile_hashes_are_looked_up_once_when_asked_and_not_pickled():
    import pickle

    asked: list[list[str]] = []

    def lookup(ids):
        asked.append(ids)
        return {name: "f" * 32 for name in ids}

    placements = Placements(1, 3, np.array([0, 1, 0]), np.array([1, 2, 1]),
                            ["a.png", "b.png", "a.png"], hashes=lookup)
    copy = pickle.loads(pickle.dumps(placements))  # a worker's copy: no library in it
    assert copy.hashes is None and asked == []
    assert placements.to_json()["hashes"] == {"a.png": "f" * 32, "b.png": "f" * 32}
    assert placements.hashes == {"a.png": "f" * 32, "b.png": "f" * 32}
    assert asked == [["a.png", "b.png"]]


def test_a_placements_file_that_cannot_be_written_is_named(tmp_path):
    from mosaicist.errors import OptionError

    placements = Placements(1, 1, np.array([0]), np.array([1]), ["a.png"])
    (tmp_path / "folder.csv").mkdir()
    for path in (tmp_path / "missing" / "p.json", tmp_path / "folder.csv"):
        # The system's error named the temporary file (".p.json.123-x.part.json").
        with pytest.raises(MosaicistError, match=f"^{path}: cannot write the placements file: "):
            placements.write(path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["folder.csv"]
    with pytest.raises(OptionError, match="^path must be a path, got None$"):
        placements.write(None)


def test_placements_paths_under_home_are_expanded(tmp_path, monkeypatch):
    # write("~/p.json") said "cannot write the placements file: No such file or directory".
    monkeypatch.setenv("HOME", str(tmp_path))
    placements = Placements(1, 2, np.array([0, 1]), np.array([3, 4]), ["a.png", "b.png"])
    for name in ("~/p.json", "~/p.csv"):
        placements.write(name)
        assert (tmp_path / name[2:]).is_file()
        assert Placements.read(name).source_ids == ["a.png", "b.png"]


@pytest.mark.parametrize("rect", [[1e308, 0, 1e308, 1e308], [0, 1e308, 1, 1e308]])
def test_cell_rectangles_of_huge_numbers_are_one_error_without_a_warning(tmp_path, rect):
    # x + w overflowed: a RuntimeWarning on stderr above the error (two lines), and from a
    # CSV file "cannot convert float infinity to integer", naming neither line nor field.
    import warnings

    rects = np.array([[0, 0, 1, 1], [1, 0, 1, 1]], np.float64)
    placements = Placements(1, 2, np.array([0, 1]), np.array([1, 2]), ["a.png", "b.png"],
                            rect=rects)
    for name, words in (("p.json", "cells.rect[1]"), ("p.csv", "line 3: x, y, w and h")):
        placements.write(tmp_path / name)
        if name == "p.json":
            document = json.loads((tmp_path / name).read_text())
            document["cells"]["rect"][1] = rect
            (tmp_path / name).write_text(json.dumps(document))
        else:
            lines = (tmp_path / name).read_text().splitlines()
            lines[2] = lines[2].rsplit(",", 4)[0] + "," + ",".join(map(repr, rect))
            (tmp_path / name).write_text("\n".join(lines) + "\n")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(MosaicistError) as caught:
                Placements.read(tmp_path / name)
        assert words in str(caught.value), caught.value


def _placed(ids: list[str], path) -> Placements:
    """One row of placements over ``ids``, written to and read back from ``path`` (a CSV)."""
    Placements(1, len(ids), np.arange(len(ids)), np.zeros(len(ids), np.int64), ids).write_csv(path)
    return Placements.read(path)


def test_placed_images_gone_from_an_array_are_refused_before_any_drawing(tmp_path):
    # 'mosaicist render p.csv -o out.png --tiles lib.npy' after the array lost images
    # drew the rows above the first missing one, then failed naming the tile only.
    from mosaicist.render import placements_renderer

    rng = np.random.default_rng(0)
    np.save(tmp_path / "lib.npy", rng.integers(0, 256, (4, 8, 8, 3), np.uint8))
    tiles = str(tmp_path / "lib.npy")
    placements = _placed(["lib/0", "lib/3", "lib/5", "lib/4", "lib/5"], tmp_path / "p.csv")
    with pytest.raises(MosaicistError) as caught:
        placements_renderer(placements, tiles=tiles)
    assert str(caught.value) == (
        f"{tmp_path / 'p.csv'}: 2 of the 4 placed tiles are not in lib.npy ('lib/5', "
        "'lib/4'): moved or removed since the placements were made, or another library")
    kept = _placed(["lib/0", "lib/3"], tmp_path / "kept.csv")
    assert placements_renderer(kept, tiles=tiles).image().shape == (32, 64, 3)


def test_an_array_s_ids_of_another_name_are_refused_before_drawing_or_taken_as_renamed(
        tmp_path):
    # 'other/3' among ids of lib.npy passed the check (its position only) and failed
    # after every row was drawn, as "other/3: not in lib.npy"; and the same array saved
    # as photos.npy could not draw its own placements ("lib/2: not in photos.npy").
    from mosaicist.render import placements_renderer

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 8, 8, 3), np.uint8)
    np.save(tmp_path / "lib.npy", images)
    tiles = str(tmp_path / "lib.npy")
    mixed = _placed(["lib/0", "other/3", "lib/1"], tmp_path / "p.csv")
    with pytest.raises(MosaicistError) as caught:
        placements_renderer(mixed, tiles=tiles)
    assert str(caught.value) == (
        f"{tmp_path / 'p.csv'}: 1 of the 3 placed tiles is not in lib.npy ('other/3'): "
        "moved or removed since the placements were made, or another library")
    # One other name throughout: the array renamed since, its positions taken.
    placements = _placed(["lib/2", "lib/0", "lib/2"], tmp_path / "q.csv")
    drawn = placements_renderer(placements, tiles=tiles).image()
    (tmp_path / "lib.npy").rename(tmp_path / "photos.npy")
    renamed = placements_renderer(placements, tiles=str(tmp_path / "photos.npy"))
    assert renamed.placements.source_ids == ["photos/2", "photos/0", "photos/2"]
    assert np.array_equal(renamed.image(), drawn)
    assert placements.source_ids == ["lib/2", "lib/0", "lib/2"]  # the caller's, as read
    # Past its images, refused by the names the file gives.
    with pytest.raises(MosaicistError, match=r"q2\.csv: 1 of the 2 placed tiles is not in "
                                             r"photos\.npy \('lib/9'\)"):
        placements_renderer(_placed(["lib/9", "lib/1"], tmp_path / "q2.csv"),
                            tiles=str(tmp_path / "photos.npy"))


def test_an_array_saved_again_with_other_images_is_said_changed(tmp_path):
    # A folder's changed photos were named by the render's warning; an array's (.npy,
    # .npz, .h5) were drawn as they are now without a word: no hashes were recorded.
    from mosaicist import make_mosaic
    from mosaicist.render import placements_renderer

    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (12, 8, 8, 3), np.uint8)
    np.save(tmp_path / "lib.npy", images)
    target = tmp_path / "t.png"
    Image.fromarray(rng.integers(0, 256, (16, 24, 3), np.uint8)).save(target)
    mosaic = make_mosaic(target, str(tmp_path / "lib.npy"), cell_px=4, tile_px=8,
                         cache_dir=tmp_path / "cache")
    mosaic.placements.write(tmp_path / "p.json")
    placements = Placements.read(tmp_path / "p.json")
    placed = sorted(set(placements.source_ids))
    assert sorted(placements.hashes) == placed
    assert placements_renderer(placements).changed_tiles == []
    first = int(placed[0].rpartition("/")[2])
    images[first] = 255 - images[first]
    np.save(tmp_path / "lib.npy", images)
    assert placements_renderer(placements).changed_tiles == [placed[0]]
    # Renamed as well: the same images said changed, by the ids the array gives now.
    (tmp_path / "lib.npy").rename(tmp_path / "photos.npy")
    renderer = placements_renderer(placements, tiles=str(tmp_path / "photos.npy"))
    assert renderer.changed_tiles == ["photos/" + placed[0].rpartition("/")[2]]


def test_placed_images_a_cifar_copy_lacks_are_refused_before_any_drawing(tmp_path):
    # A local CIFAR-10 copy of two images per batch: "cifar10/train/10" is not in it.
    from mosaicist.render import placements_renderer

    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = rng.integers(0, 256, (2, 3072), np.uint8)
        labels = np.zeros((2, 1), np.uint8)
        (folder / name).write_bytes(np.concatenate([labels, records], axis=1).tobytes())
    tiles = f"cifar10:{folder}"
    placements = _placed(["cifar10/train/9", "cifar10/train/10", "cifar10/test/1"],
                         tmp_path / "p.csv")
    with pytest.raises(MosaicistError, match=r"p\.csv: 1 of the 3 placed tiles is not in "
                                             r"CIFAR-10 .*\('cifar10/train/10'\)"):
        placements_renderer(placements, tiles=tiles)
    kept = _placed(["cifar10/train/9", "cifar10/test/1"], tmp_path / "kept.csv")
    assert placements_renderer(kept, tiles=tiles).image().shape == (32, 64, 3)
