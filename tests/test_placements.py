"""Placements CSV round trip."""

from __future__ import annotations

import numpy as np

from mosaicist.placements import CSV_HEADER, Placements


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
