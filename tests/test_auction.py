"""The auction over every cell-tile pair of a small library (match._auction)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from mosaicist.match import _auction, _flow
from mosaicist.match._auction import capped_auction


def capped_optimum(distances: np.ndarray, cap: int) -> int:
    """The least total with at most ``cap`` cells per tile, by brute force (replicas)."""
    replicas = np.repeat(distances, cap, axis=1)
    cells, columns = linear_sum_assignment(replicas)
    return int(replicas[cells, columns].sum())


def cases(seed: int, count: int):
    """Distance matrices with their caps: random, coarse (many ties), alike cells."""
    rng = np.random.default_rng(seed)
    for trial in range(count):
        cells = int(rng.integers(1, 30))
        tiles = int(rng.integers(1, 9))
        least = -(-cells // tiles)
        cap = int(rng.integers(least, least + 3))
        kind = trial % 4
        if kind == 0:
            distances = rng.integers(0, 1000, (cells, tiles))
        elif kind == 1:
            # Tinted search units: large multiples of a common factor, many ties.
            distances = rng.integers(0, 3, (cells, tiles)) * 10_000_000_000
        elif kind == 2:
            # A crowd: every cell wants the same tiles in the same order (a sky).
            distances = (np.repeat(rng.integers(0, 50, (1, tiles)), cells, axis=0)
                         + rng.integers(0, 2, (cells, 1)))
        else:
            distances = np.zeros((cells, tiles), np.int64)
        yield distances.astype(np.int64), cap


@pytest.mark.parametrize("compiled", [True, False])
def test_the_auction_finds_the_capped_optimum(compiled):
    if compiled and not _flow.can_repair():
        pytest.skip("the compiled loop needs Numba")
    for distances, cap in cases(3, 120 if compiled else 24):
        solved = capped_auction(distances, cap, compiled=compiled)
        assert solved is not None
        tile, price = solved
        cells, tiles = distances.shape
        assert tile.shape == (cells,) and price.shape == (tiles,)
        assert tile.min() >= 0 and tile.max() < tiles
        assert np.bincount(tile, minlength=tiles).max() <= cap
        total = int(distances[np.arange(cells), tile].sum())
        assert total == capped_optimum(distances, cap), (distances, cap)
        assert (price >= 0).all()


def test_a_larger_crowd_with_many_places_per_tile():
    if not _flow.can_repair():
        pytest.skip("the compiled loop needs Numba")
    rng = np.random.default_rng(11)
    # 300 cells of three kinds over 12 tiles of 30 places: the crowds outbid each other.
    kind = rng.integers(0, 3, 300)
    centres = rng.integers(0, 10_000, (3, 12))
    distances = centres[kind] + rng.integers(0, 40, (300, 12))
    tile, _ = capped_auction(distances, 30)
    assert int(distances[np.arange(300), tile].sum()) == capped_optimum(distances, 30)


def test_the_auction_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="cannot hold"):
        capped_auction(np.zeros((5, 2), np.int64), 2)
    with pytest.raises(ValueError, match="non-negative"):
        capped_auction(np.array([[1, -1]]), 1)
    with pytest.raises(ValueError, match="integer"):
        capped_auction(np.array([[0.5, 1.0]]), 1)
    tile, price = capped_auction(np.zeros((0, 3), np.int64), 1)
    assert tile.shape == (0,) and price.shape == (3,)
    # Costs whose scaled values would overflow: None, and the caller takes another way.
    huge = np.array([[0, 1 << 60], [1 << 60, 1]], np.int64)
    assert capped_auction(huge, 1) is None


def test_the_auction_is_optional(monkeypatch):
    # Without the compiled loops there is no auction (the lists' rounds solve instead).
    monkeypatch.setattr(_auction, "_compiled_loop", lambda loop: None)
    assert capped_auction(np.array([[1, 2], [2, 1]]), 1) is None


@pytest.mark.parametrize("numba", [False, True])
def test_a_large_auction_without_numba_is_noted_once(tmp_path, monkeypatch, capsys, numba):
    from conftest import make_colour_folder

    from mosaicist import make_mosaic
    from mosaicist.match import _capped

    if numba and not _auction.auction_runs():
        pytest.skip("the compiled loop needs Numba")
    if not numba:
        monkeypatch.setattr(_auction, "_compiled_loop", lambda loop: None)
    monkeypatch.setattr(_capped, "_noted_slow", False)
    # 240 cells, 20 tiles of 16 uses: an auction's problem, noted from 4,000 pairs here.
    monkeypatch.setattr(_capped, "SLOW_WITHOUT_NUMBA_PAIRS", 4_000)
    folder = make_colour_folder(tmp_path / "tiles", 20)
    target = np.random.default_rng(0).integers(0, 256, (60, 64, 3), dtype=np.uint8)
    settings = {"preset": "seed", "cell_px": 4, "tile_px": 4, "max_uses": 16}
    for show in (True, True, False):
        make_mosaic(target, folder, settings, cache_dir=tmp_path / "c", show_progress=show,
                    quiet=not show)
    notes = [line for line in capsys.readouterr().err.splitlines() if "note:" in line]
    if numba:
        assert notes == []
    else:
        assert notes == [
            "mosaicist: note: without Numba, matching 240 cells to 20 tiles under a use cap "
            "can take minutes instead of seconds; for speed install the fast extra: "
            'python3 -m pip install ".[fast]" in the mosaicist checkout']
    # Quiet (no progress): nothing, however slow.
    monkeypatch.setattr(_capped, "_noted_slow", False)
    make_mosaic(target, folder, settings, cache_dir=tmp_path / "c", quiet=True)
    assert "note:" not in capsys.readouterr().err
    # Not quiet, without bars (output piped to a log): the note, still.
    make_mosaic(target, folder, settings, cache_dir=tmp_path / "c", show_progress=False,
                quiet=False)
    assert ("note: without Numba" in capsys.readouterr().err) is not numba
