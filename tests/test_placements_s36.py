"""Reading big placements files: columns parsed at once, within a memory bound."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from mosaicist.errors import MosaicistError
from mosaicist.placements import Placements


def _placements(rows: int, cols: int) -> Placements:
    count = rows * cols
    rng = np.random.default_rng(0)
    return Placements(rows, cols, rng.integers(0, 300, count), rng.random(count) * 1000,
                      [f"photos/img_{i:03d}.jpg" for i in rng.integers(0, 300, count)],
                      rng.integers(0, 8, count).astype(np.int8), rng.normal(0, 5, (count, 3)))


def test_reading_a_20000_cell_csv_takes_a_small_multiple_of_its_size(tmp_path):
    path = tmp_path / "big.csv"
    _placements(200, 100).write_csv(path)
    size = path.stat().st_size
    tracemalloc.start()
    try:
        placements = Placements.read(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # A dict and a str per field took about 10 times the file's size (70 MB of 7 MB).
    assert peak < 5 * size, f"{peak:,} bytes to read {size:,}"
    assert len(placements) == 20_000


def test_a_csv_of_shuffled_lines_reads_as_the_written_one(tmp_path):
    original = _placements(3, 4)
    path = tmp_path / "p.csv"
    original.write_csv(path)
    header, *lines = path.read_text().splitlines()
    path.write_text("\n".join([header, *lines[::-1]]) + "\n")
    read = Placements.read(path)
    assert read.source_ids == original.source_ids
    np.testing.assert_array_equal(read.tile, original.tile)
    np.testing.assert_array_equal(read.tint, original.tint)
    np.testing.assert_array_equal(read.distance, original.distance)


@pytest.mark.parametrize(("field", "text", "message"), [
    ("tint_1", "1\0", "line 3: tint_1 must be a number, got '1\\x00'"),
    ("tint_1", "1_0", "line 3: tint_1 must be a number, got '1_0'"),
    ("position", "٢", "line 3: position must be a whole number, got '٢'"),
    ("distance", "nan", "line 3: distance must be a finite number, got 'nan'"),
    ("tint_0", "", "line 3: tint_0 must be a number"),
])
def test_a_bad_field_is_named_by_line_and_column(tmp_path, field, text, message):
    path = tmp_path / "p.csv"
    _placements(2, 2).write_csv(path)
    header, *lines = path.read_text().splitlines()
    fields = lines[1].split(",")
    fields[header.split(",").index(field)] = text
    lines[1] = ",".join(fields)
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    if field == "tint_0":  # an empty tint reads as no tint
        assert Placements.read(path).tint[1, 0] == 0
        return
    with pytest.raises(MosaicistError) as error:
        Placements.read(path)
    assert f"({message})" in str(error.value)


def test_the_first_bad_line_is_named_whatever_its_column(tmp_path):
    path = tmp_path / "p.csv"
    _placements(2, 2).write_csv(path)
    header, *lines = path.read_text().splitlines()
    names = header.split(",")
    first, second = lines[1].split(","), lines[0].split(",")
    first[names.index("tint_2")] = "x"
    second[names.index("tint_0")] = "y"  # a column read earlier, on a later line
    path.write_text("\n".join([header, ",".join(second), ",".join(first), *lines[2:]]) + "\n")
    with pytest.raises(MosaicistError, match="line 2: tint_0 must be a number, got 'y'"):
        Placements.read(path)
