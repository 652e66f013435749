"""Big placements files written and read a batch at a time: the same text, the same values."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from mosaicist import placements as placements_module
from mosaicist.errors import MosaicistError
from mosaicist.placements import Placements
from mosaicist.transforms import TRANSFORM_NAMES

#: Floats whose shortest text is unusual: subnormal, tiny, negative zero, inexact sums.
ODD_FLOATS = [1e-300, 5e-324, -0.0, 0.1 + 0.2, 1 / 3, 2.0**-1074 * 3, 123456.789e-10,
              9007199254740993.0, 1e16, 1e-5, 0.0001, 999999.9999999999]


def _random_placements(seed: int, rect: bool = False, whole: bool = False) -> Placements:
    """Small placements of random and odd values in every field."""
    rng = np.random.default_rng(seed)
    rows, cols = 3, 4
    rects = None
    if rect:  # one level-0 cell split in four
        cells = [[x, y, 1.0, 1.0] for y in range(rows) for x in range(cols) if (x, y) != (1, 1)]
        rects = np.array(cells + [[1.0, 1.0, 0.5, 0.5], [1.5, 1.0, 0.5, 0.5],
                                  [1.0, 1.5, 0.5, 0.5], [1.5, 1.5, 0.5, 0.5]])
    count = rows * cols if rects is None else len(rects)

    def odd(shape: tuple[int, ...], scale: float) -> np.ndarray:
        values = rng.normal(0, scale, shape).ravel()
        picks = rng.random(values.size) < 0.4
        values[picks] = rng.choice(ODD_FLOATS, picks.sum()) * rng.choice([-1, 1], picks.sum())
        return np.clip(values, -1e5, 1e5).reshape(shape)

    distance = (rng.integers(0, 2**62, count) if whole
                else np.abs(odd((count,), 1e4)))
    if whole:
        distance[0] = 2**63 - 1
    position = rng.integers(0, 2**53, count)
    position[0] = 2**53
    return Placements(
        rows, cols, position, distance,
        [rng.choice(["a.jpg", "b/c d.png", 'e,"f".jpg', "g\nh.jpg", "é.jpg"])
         for _ in range(count)],
        rng.integers(0, len(TRANSFORM_NAMES), count).astype(np.int8), odd((count, 3), 20),
        gain=np.abs(odd((count, 3), 2)) + 5e-324, chroma=np.clip(np.abs(odd((count,), 1)), 0, 1),
        mean=odd((count, 3), 50), rect=rects, source="photos/", target="t.png", crop=(1, 2))


def _assert_same(read: Placements, written: Placements, crop: bool = True) -> None:
    for name in ("tile", "distance", "transform", "tint", "gain", "chroma", "mean", "rect"):
        left, right = getattr(read, name), getattr(written, name)
        if right is None:
            assert left is None, name
            continue
        assert left.dtype == right.dtype, name
        # Bit for bit: -0.0 is not 0.0 here.
        assert left.tobytes() == right.tobytes(), name
    assert read.source_ids == written.source_ids
    assert (read.rows, read.cols) == (written.rows, written.cols)
    assert not crop or read.crop == written.crop  # CSV files record no crop


def _reference_csv(placements: Placements) -> str:
    """The CSV text as the writer made it before it wrote a batch of rows at a time."""
    if placements.rect is None:
        rows, cols = np.divmod(np.arange(len(placements)), placements.cols)
    else:
        rows, cols = (np.floor(placements.rect[:, 1]).astype(np.int64),
                      np.floor(placements.rect[:, 0]).astype(np.int64))
    names = [TRANSFORM_NAMES[code] for code in placements.transform.tolist()]
    columns = [rows.tolist(), cols.tolist(), placements.source_ids,
               placements.distance.tolist(), placements.tile.tolist(), names,
               *(placements.tint[:, c].tolist() for c in range(3))]
    header = list(placements_module.CSV_HEADER)
    extra = [(placements.mean is not None, placements.mean, placements_module.MEAN_HEADER),
             (placements.has_gain, placements.gain, placements_module.GAIN_HEADER),
             (placements.has_chroma, placements.chroma[:, None], ("chroma",)),
             (placements.rect is not None, placements.rect, placements_module.RECT_HEADER)]
    for present, values, names_ in extra:
        if present:
            columns += [values[:, c].tolist() for c in range(len(names_))]
            header += names_
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(zip(*columns, strict=True))
    return buffer.getvalue()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("rect", [False, True])
def test_odd_numbers_are_written_as_json_and_csv_wrote_them_and_read_back_exactly(
        tmp_path, seed, rect):
    written = _random_placements(seed, rect=rect, whole=bool(seed % 2))
    json_path, csv_path = tmp_path / "p.json", tmp_path / "p.csv"
    written.write(json_path)
    written.write(csv_path)
    # The text json.dumps gives (json.loads reads the same values), and csv.writer's.
    reference = json.dumps(written.to_json(), separators=(",", ":")) + "\n"
    assert json_path.read_text() == reference
    assert json.loads(json_path.read_text()) == json.loads(reference)
    assert csv_path.read_bytes().decode("utf-8") == _reference_csv(written)
    _assert_same(Placements.read(json_path), written)
    # Read without a Python object per number, to the values json.loads gives.
    fast = placements_module._load_json_fast(json_path.read_text())
    assert fast is not None
    assert isinstance(fast["cells"]["tint"], np.ndarray)
    assert {name: (value.tolist() if isinstance(value, np.ndarray) else value)
            for name, value in fast["cells"].items()} == json.loads(reference)["cells"]
    _assert_same(Placements.read(csv_path), written, crop=False)


def test_files_as_json_dumps_writes_them_otherwise_read_the_same(tmp_path):
    written = _random_placements(7, whole=True)
    document = written.to_json()
    document["cells"]["tint"] = [[int(part) for part in row] for row in written.tint.tolist()]
    for number, text in enumerate([json.dumps(document), json.dumps(document, indent=2),
                                   json.dumps(document, separators=(",", ":"))]):
        path = tmp_path / f"p{number}.json"
        path.write_text(text)
        expected = Placements.from_json(json.loads(text))
        _assert_same(Placements.read(path), expected)


def test_valid_json_rows_are_checked_whole_not_number_by_number(monkeypatch):
    # The check of rows of numbers flattened them, found no rows, and every file's
    # tints, gains and means were checked again one number at a time (a third of a read).
    document = _random_placements(1).to_json()

    def one_by_one(value: object) -> bool:
        raise AssertionError("checked one number at a time")

    monkeypatch.setattr(placements_module, "_is_finite_number", one_by_one)
    Placements.from_json(document)


def _edited(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


EDITS = [
    ('"position":[', '"position":[1.5,'),
    ('"position":[', '"position":[-1,'),
    ('"position":[', '"position":[18446744073709551616,'),
    ('"position":[', '"position":[01,'),
    ('"position":[', '"position":[' + "9" * 5000 + ","),
    ('"distance":[', '"distance":[1e400,'),
    ('"distance":[', '"distance":[+1.5,'),
    ('"distance":[', '"distance":[.5,'),
    ('"distance":[', '"distance":[1.,'),
    ('"distance":[', '"distance":[NaN,'),
    ('"tint":[', '"tint":[[1,2],'),
    ('"tint":[', '"tint":[[1,2,2000000.0],'),
    ('"tint":[', '"tint":[[1,2,3],,'),
    ('"gain":[', '"gain":[[1,0,1],'),
    ('"chroma":[', '"chroma":[1.5,'),
    ('"mean":[', '"mean":[[1,2,1e999],'),
    ('"mean":[', '"mean":[[1,2,' + "1" * 400 + "],"),
    ('"tile":[', '"tile":[3,'),
    ('"cells":{', '"cells":{"tint":[],'),
    ('"rows":', '"rows":2,"rows":'),
    ('"format"', '"format":1,"format"'),
    ("}\n", "},\n"),
    ("}\n", "}}\n"),
    ('"cols":', '"cols":-'),
]


@pytest.mark.parametrize(("old", "new"), EDITS)
def test_bad_files_are_refused_with_the_error_json_read_gave(tmp_path, monkeypatch, old, new):
    path = tmp_path / "p.json"
    _random_placements(2).write(path)
    path.write_text(_edited(path.read_text(), old, new))
    with pytest.raises(MosaicistError) as fast:
        Placements.read(path)
    # Read as it was read before: json.loads first, then the document checked.
    monkeypatch.setattr(placements_module, "_load_json_fast", lambda text: None)
    with pytest.raises(MosaicistError) as slow:
        Placements.read(path)
    assert str(fast.value) == str(slow.value)
    assert "\n" not in str(fast.value)


def test_mixed_whole_and_fractional_numbers_read_as_json_reads_them(tmp_path):
    written = _random_placements(3)
    text = json.dumps(written.to_json(), separators=(",", ":"))
    distances = [1, *written.distance.tolist()[1:]]  # a whole number among floats
    text = text.replace(json.dumps(written.distance.tolist(), separators=(",", ":")),
                        json.dumps(distances, separators=(",", ":")), 1)
    path = tmp_path / "p.json"
    path.write_text(text)
    read = Placements.read(path)
    assert read.distance.dtype == np.float64
    assert read.distance.tolist() == [1.0, *written.distance.tolist()[1:]]


@pytest.mark.parametrize(("name", "text"), [("p.json", ""), ("p.json", "\n  \n"),
                                            ("p.json", "\ufeff"), ("p.csv", "")])
def test_an_empty_placements_file_is_said_to_be_empty(tmp_path, name, text):
    # "Expecting value: line 1 column 1 (char 0)" said nothing of a file left empty.
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MosaicistError) as error:
        Placements.read(path)
    assert str(error.value) == f"{path}: not a valid placements file (the file is empty)"


@pytest.mark.parametrize("name", ["p.txt", "placements", "p.JSON.bak"])
def test_a_json_placements_file_under_another_name_is_read_as_json(tmp_path, name):
    # It was read as CSV: "no row, col, tile, distance, position column".
    written = _random_placements(3)
    written.write(tmp_path / "p.json")
    expected = Placements.read(tmp_path / "p.json")
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf\n " + (tmp_path / "p.json").read_bytes())
    _assert_same(Placements.read(path), expected)
    # A CSV file under any name is read as CSV still.
    written.write(tmp_path / "p.csv")
    (tmp_path / "p.csv").rename(path)
    assert np.array_equal(Placements.read(path).tile, written.tile)
