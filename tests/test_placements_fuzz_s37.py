"""Placements files read fast give what json gives: fuzzed against the json-only reader.

:func:`mosaicist.placements._load_json_fast` reads the cells' arrays of
numbers without json; every file must read to the values of the json-based
path (``_load_json`` and the checks of :meth:`Placements.from_json`), or be
refused with the same first error. Here seeded random mutations of small
files (grid and adaptive cells, with and without tints, gains, chroma and
means) are read both ways; a longer run of the same idea lives outside the
suite.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest

from mosaicist import placements as placements_module
from mosaicist.errors import MosaicistError
from mosaicist.placements import Placements
from mosaicist.transforms import TRANSFORM_NAMES

#: Texts put in place of a number in a file: JSON's odd spellings and what JSON refuses.
NUMBER_TEXTS = [
    "-0", "0", "-0.0", "0.0e0", "1E5", "1e+05", "1e-05", "1e400", "-1e400", "1e-400", "NaN",
    "Infinity", "-Infinity", "01", "+1", ".5", "5.", "0x10", '"5"', "[1]", "[]", "1.0",
    "5e-324", "1" + "0" * 400, "9007199254740993", "9223372036854775808", "true", "null",
    "0.5", "1", "2", "1000000", "1000000.0000001", "-1", "1e", "00", "-01",
]
_NUMBER = re.compile(r"(?<=[\[,:])-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"
                     r"(?=[\],}])")
_KEY = re.compile(r'[{,]"[a-z]+":')


def _placements(seed: int, rect: bool, whole: bool, changed: bool) -> Placements:
    """Small placements: adaptive cells or a grid, whole or float distances, tiles changed."""
    rng = np.random.default_rng(seed)
    rows, cols = 2, 3
    rects = None
    if rect:  # the first level-0 cell split in four
        cells = [[x, y, 1.0, 1.0] for y in range(rows) for x in range(cols) if (x, y) != (0, 0)]
        rects = np.array(cells + [[0.0, 0.0, 0.5, 0.5], [0.5, 0.0, 0.5, 0.5],
                                  [0.0, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]])
    count = rows * cols if rects is None else len(rects)
    extra = {}
    if changed:
        extra = {"gain": rng.uniform(0.5, 2, (count, 3)), "chroma": rng.uniform(0, 1, count),
                 "mean": rng.normal(50, 20, (count, 3))}
    return Placements(
        rows, cols, rng.integers(0, 100, count),
        rng.integers(0, 10**6, count) if whole else rng.uniform(0, 1e4, count),
        [str(rng.choice(["a.jpg", 'b,"c".jpg', "é.jpg"])) for _ in range(count)],
        rng.integers(0, len(TRANSFORM_NAMES), count).astype(np.int8),
        rng.normal(0, 10, (count, 3)) if changed else None,
        rect=rects, source="photos/", target="t.png", **extra)


def _mutated(text: str, rng: random.Random) -> str:
    """``text`` with one random change, most often to a number of the cells."""
    cells = text.index('"cells":')
    kind = rng.randrange(10)
    if kind < 5:
        spans = [match.span() for match in _NUMBER.finditer(text, cells)]
        start, stop = rng.choice(spans)
        return text[:start] + rng.choice(NUMBER_TEXTS) + text[stop:]
    if kind == 5:  # white space after a separator
        spots = [match.end() for match in re.finditer(r"[,:\[]", text)]
        spot = rng.choice(spots)
        return text[:spot] + rng.choice([" ", "\r\n", "\t", "\n"]) + text[spot:]
    if kind == 6:  # a key of the cells spelled with an escape
        keys = [match.start() for match in _KEY.finditer(text, cells)]
        start = text.index('"', rng.choice(keys))
        return text[:start + 1] + f"\\u{ord(text[start + 1]):04x}" + text[start + 2:]
    if kind == 7:  # a key given twice, a trailing comma, a second document
        return rng.choice([text.replace('"tint":', '"tint":[],"tint":', 1),
                           text.replace("]}", "],}", 1), text + "{}"])
    if kind == 8:
        spot = rng.randrange(cells, len(text))
        return text[:spot] + text[spot + 1:]
    spot = rng.randrange(cells, len(text))
    return text[:spot] + rng.choice("-.eE0[],") + text[spot:]


def _outcome(path: Path) -> tuple[str, object]:
    """What reading ``path`` gives: the first error's text, or every value read."""
    try:
        read = Placements.read(path)
    except MosaicistError as error:
        return "error", str(error)
    values = {}
    for name in ("tile", "distance", "transform", "tint", "gain", "chroma", "mean", "rect"):
        array = getattr(read, name)
        # Bytes, so that -0.0 and 0.0 differ, and dtypes are compared.
        values[name] = None if array is None else (str(array.dtype), array.tobytes())
    values["ids"] = read.source_ids
    return "read", values


def _outcome_by_json(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, object]:
    """:func:`_outcome` with the fast reader off: json reads every number, as it always did."""
    with monkeypatch.context() as patched:
        patched.setattr(placements_module, "_load_json_fast", lambda text: None)
        return _outcome(path)


@pytest.mark.parametrize(("rect", "whole", "changed"),
                         [(False, False, True), (True, True, True), (False, True, False)])
def test_mutated_files_read_as_json_reads_them(tmp_path, monkeypatch, rect, whole, changed):
    placements = _placements(7, rect, whole, changed)
    path = tmp_path / "p.json"
    placements.write(path)
    base = path.read_text(encoding="utf-8")
    rng = random.Random(f"{rect}-{whole}-{changed}")
    outcomes = {"read": 0, "error": 0}
    for _ in range(150):
        text = _mutated(base, rng)
        path.write_text(text, encoding="utf-8")
        fast = _outcome(path)
        assert fast == _outcome_by_json(path, monkeypatch), text
        outcomes[fast[0]] += 1
    # Both kinds were tried: files read and files refused.
    assert outcomes["read"] >= 20 and outcomes["error"] >= 20, outcomes


def test_whole_minus_zero_in_a_float_field_reads_as_zero(tmp_path, monkeypatch):
    # json reads "-0" as the whole number 0 (then 0.0); float("-0") is -0.0, which the
    # fast reader kept, and a file saved again wrote "-0.0" where it had "-0".
    placements = _placements(3, False, False, True)
    placements.tint[0] = [123.0, -0.0, 5.0]
    placements.chroma[0] = 0.125
    path = tmp_path / "p.json"
    placements.write(path)
    text = path.read_text(encoding="utf-8")
    assert '"tint":[[123.0,-0.0,5.0],' in text and '"chroma":[0.125,' in text
    path.write_text(text.replace('"tint":[[123.0,', '"tint":[[-0,')
                    .replace('"chroma":[0.125,', '"chroma":[-0,'), encoding="utf-8")
    read = Placements.read(path)
    assert read.tint[0].tolist() == [0.0, -0.0, 5.0]
    assert not np.signbit(read.tint[0, 0]) and np.signbit(read.tint[0, 1])
    assert read.chroma[0] == 0.0 and not np.signbit(read.chroma[0])
    assert _outcome(path) == _outcome_by_json(path, monkeypatch)


def test_long_double_distances_are_written_as_numbers(tmp_path):
    # Their items are NumPy scalars, not floats: JSON files held "np.longdouble('0.1')"
    # (refused when read back), CSV files the same in place of the number.
    distance = np.array([0.1, 2.5, 1e-300, 7.0, 3.0, 4.0], np.longdouble)
    placements = Placements(2, 3, np.arange(6), distance, ["a.jpg"] * 6)
    assert placements.distance.dtype == np.float64
    for name in ("p.json", "p.csv"):
        placements.write(tmp_path / name)
        assert "longdouble" not in (tmp_path / name).read_text(encoding="utf-8")
        read = Placements.read(tmp_path / name)
        assert read.distance.tolist() == [0.1, 2.5, 1e-300, 7.0, 3.0, 4.0]


def test_long_double_distance_past_float64_is_refused():
    if np.finfo(np.longdouble).max <= np.finfo(np.float64).max:
        pytest.skip("this platform's long double is float64")
    huge = np.array([np.longdouble(10) ** 400], np.longdouble)
    with pytest.raises(ValueError, match="distance has values that are not finite numbers"):
        Placements(1, 1, [0], huge, ["a.jpg"])
