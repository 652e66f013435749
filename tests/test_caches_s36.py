"""Damaged and stale cache entries beside the index: features and prepared libraries.

An entry is named by the library's generation and size only, which an index
rebuilt from nothing starts again (generation 0), and a file can hold other
bytes under the right name and size (zeroed by a crash, copied from another
cache). Each such entry must be made again, never read as it is: the oracle
is what a fresh cache gives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mosaicist.grid import Geometry
from mosaicist.match import cached_features, compute_features, prepare_tiles

#: Arrays of a features entry compared with a fresh computation.
COMPARED = ("mean", "basis", "bound", "order", "residual", "norm2", "channel_sums", "tail_norm",
            "pooled")


def _tiles(count: int = 40, side: int = 8, seed: int = 3) -> np.ndarray:
    """Smooth random tiles (blurred noise, as photos are: the bound's components matter)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (count, side // 2, side // 2, 3), dtype=np.uint8)
    return np.ascontiguousarray(coarse.repeat(2, axis=1).repeat(2, axis=2))


def _assert_features_equal(found, expected) -> None:
    for name in COMPARED:
        np.testing.assert_array_equal(np.asarray(getattr(found, name)),
                                      np.asarray(getattr(expected, name)), err_msg=name)


def _entry(folder: Path) -> Path:
    (entry,) = [path for path in folder.iterdir() if not path.name.startswith(".")]
    return entry


def _zero_data(path: Path) -> None:
    """Zero an .npy file's data, keeping its header (a crash's lost pages)."""
    with path.open("rb") as stream:
        assert np.lib.format.read_magic(stream) == (1, 0)  # what np.save writes here
        np.lib.format.read_array_header_1_0(stream)
        header = stream.tell()
    data = bytearray(path.read_bytes())
    data[header:] = bytes(len(data) - header)
    path.write_bytes(bytes(data))


GEOMETRY = Geometry(4, 8)  # block sums of 2 x 2 pixels: the pooled.npy map too


def test_features_of_a_library_rebuilt_with_other_photos_are_computed_again(tmp_path):
    # An index rebuilt from nothing is generation 0 again, of as many tiles: the
    # entry of the old photos was read, and the search picked from their sums.
    old = _tiles()
    cached_features(old, GEOMETRY, tmp_path, generation=0)
    new = old.copy()
    new[len(old) // 3] = _tiles(1, seed=9)[0]  # a tile the entry's check looks at
    found = cached_features(new, GEOMETRY, tmp_path, generation=0)
    _assert_features_equal(found, compute_features(new, GEOMETRY))
    # The entry was replaced: the next run reads the new tiles' features.
    _assert_features_equal(cached_features(new, GEOMETRY, tmp_path, generation=0),
                           compute_features(new, GEOMETRY))


def test_features_of_another_library_copied_in_are_computed_again(tmp_path):
    other, ours = tmp_path / "other", tmp_path / "ours"
    other.mkdir()
    ours.mkdir()
    cached_features(_tiles(seed=5), GEOMETRY, other, generation=0)
    _entry(other).rename(ours / _entry(other).name)
    tiles = _tiles()
    _assert_features_equal(cached_features(tiles, GEOMETRY, ours, generation=0),
                           compute_features(tiles, GEOMETRY))


@pytest.mark.parametrize("name", ["bound", "basis", "mean", "order", "pooled", "norm2"])
def test_a_features_array_zeroed_after_its_header_is_computed_again(tmp_path, name):
    tiles = _tiles()
    cached_features(tiles, GEOMETRY, tmp_path, generation=0)
    _zero_data(_entry(tmp_path) / f"{name}.npy")
    _assert_features_equal(cached_features(tiles, GEOMETRY, tmp_path, generation=0),
                           compute_features(tiles, GEOMETRY))


def test_a_features_array_of_another_shape_is_computed_again(tmp_path):
    # An array of another option set's entry (another grid, another size) in its place.
    tiles = _tiles()
    cached_features(tiles, GEOMETRY, tmp_path, generation=0)
    entry = _entry(tmp_path)
    np.save(entry / "norm2.npy", np.zeros(len(tiles) + 1, np.int64))
    np.save(entry / "basis.npy", np.eye(12, dtype=np.float32))
    _assert_features_equal(cached_features(tiles, GEOMETRY, tmp_path, generation=0),
                           compute_features(tiles, GEOMETRY))


def test_a_sound_features_entry_is_read_not_computed_again(tmp_path, monkeypatch):
    # The check must not refuse good entries: every run would compute them anew.
    from mosaicist.match import _features

    for geometry, count in ((GEOMETRY, 300), (Geometry(8, 8), 5), (Geometry(2, 8), 1)):
        tiles = _tiles(count)
        folder = tmp_path / f"{geometry.cell_px}-{count}"
        folder.mkdir()
        expected = cached_features(tiles, geometry, folder, generation=0)
        calls: list[int] = []
        original = _features.compute_features

        def counted(*arguments, _calls=calls, _original=original, **keywords):
            _calls.append(1)
            return _original(*arguments, **keywords)

        monkeypatch.setattr(_features, "compute_features", counted)
        found = cached_features(tiles, geometry, folder, generation=0)
        monkeypatch.setattr(_features, "compute_features", original)
        assert calls == []
        _assert_features_equal(found, expected)


@pytest.mark.parametrize("damage", ["zeroed", "other library", "rebuilt"])
def test_a_prepared_library_of_other_bytes_is_prepared_again(tmp_path, damage):
    # Read by its size alone: a zeroed file, or another library's of as many tiles,
    # was drawn from as it was (the mosaic made of other pixels, without a word).
    tiles = _tiles()
    expected = prepare_tiles(tiles, "lab", "flips", None, "g0-n40")
    if damage == "rebuilt":
        old = tiles.copy()
        old[len(tiles) // 3] = 0
        prepare_tiles(old, "lab", "flips", tmp_path, "g0-n40")
    elif damage == "other library":
        prepare_tiles(_tiles(seed=5), "lab", "flips", tmp_path, "g0-n40")
    else:
        prepare_tiles(tiles, "lab", "flips", tmp_path, "g0-n40")
    (entry,) = tmp_path.glob("prepared-*.u8")
    if damage == "zeroed":
        entry.write_bytes(bytes(entry.stat().st_size))
    np.testing.assert_array_equal(prepare_tiles(tiles, "lab", "flips", tmp_path, "g0-n40"),
                                  expected)
    # Replaced: read as it is from now on.
    again = prepare_tiles(tiles, "lab", "flips", tmp_path, "g0-n40")
    assert isinstance(again, np.memmap)
    np.testing.assert_array_equal(again, expected)


def test_a_prepared_entry_that_is_a_folder_is_prepared_in_memory(tmp_path):
    tiles = _tiles()
    (tmp_path / "prepared-lab-none-g0-n40.u8").mkdir()
    np.testing.assert_array_equal(prepare_tiles(tiles, "lab", "none", tmp_path, "g0-n40"),
                                  prepare_tiles(tiles, "lab", "none", None, "g0-n40"))
