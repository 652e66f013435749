"""The nearest-tile searches against a brute force, where the other fuzz tests do not reach.

:mod:`tests.test_match_fuzz` draws many tiny cases with the search's chunks made
small. These cover what tiny cases cannot: tiles of 64 px and more (sums near
int32's and float32's limits, block sums of uint32), the search's own chunk
sizes with threads, tinted ties on large tiles, PyTorch's two kernels on the
CPU, and searches given no cell at all. Every oracle takes no shortcut: each
pair's distance from the cell scaled up to the tile's size (pixel replication)
and the tile, in int64, tinted as :mod:`mosaicist.match._exact` states.
"""

from __future__ import annotations

import numpy as np
import pytest

from mosaicist.grid import Geometry
from mosaicist.match import (
    _exact,
    brute_force,
    compute_features,
    match_approximate,
    match_exact,
    match_torch,
)
from mosaicist.match import _kernels as kernels
from mosaicist.match._exact import cell_terms, dense_distances, pair_distances


@pytest.fixture(params=["compiled", "numpy"])
def pair_loops(request, monkeypatch):
    """With the compiled pair loops (Numba) and with NumPy's."""
    if request.param == "compiled" and not kernels.numba_available():
        pytest.skip("Numba is not installed")
    monkeypatch.setattr(kernels, "USE_NUMBA", request.param == "compiled")
    return request.param


def _images(rng, kind: str, count: int, height: int, width: int) -> np.ndarray:
    shape = (count, height, width, 3)
    if kind == "equal":
        return np.broadcast_to(rng.integers(0, 256, shape[1:], dtype=np.uint8), shape).copy()
    if kind == "black":
        return np.zeros(shape, np.uint8)
    if kind == "white":
        return np.full(shape, 255, np.uint8)
    if kind == "extremes":
        return (rng.integers(0, 2, shape) * 255).astype(np.uint8)
    if kind == "flat":
        colours = rng.integers(0, 256, (count, 1, 1, 3), dtype=np.uint8)
        return np.broadcast_to(colours, shape).copy()
    if kind == "one-level":
        # Equal but for one value one level apart: distances that differ by 1 in 10^9.
        out = np.broadcast_to(rng.integers(1, 255, shape[1:], dtype=np.uint8), shape).copy()
        for index in range(count):
            y, x, c = rng.integers(0, height), rng.integers(0, width), rng.integers(0, 3)
            out[index, y, x, c] += rng.choice([-1, 1])
        return out
    return rng.integers(0, 256, shape, dtype=np.uint8)


KINDS = ("random", "equal", "black", "white", "extremes", "flat", "one-level")


def _upscaled(vectors: np.ndarray, geometry: Geometry) -> np.ndarray:
    """``(N, n * 3)`` int64 compared cells at the tiles' size (the objective's definition)."""
    factor = geometry.factor
    upscaled = vectors.repeat(factor, axis=1).repeat(factor, axis=2)
    return upscaled.reshape(len(vectors), -1).astype(np.int64)


def _search_units(vectors: np.ndarray, tiles: np.ndarray, geometry: Geometry,
                  hundredths: int = 0) -> np.ndarray:
    """``(N, M)`` int64: every pair's objective, tinted by ``A = p / 100`` times ``n 100^2``.

    ``|u - t|^2`` summed over the tile's ``n`` pixels; tinted, ``D n 100^2 - (200 p - p^2)
    |sum(u) - sum(t)|^2``, the tinted objective times ``n 100^2`` exactly.
    """
    cells = _upscaled(vectors, geometry)
    flat = tiles.reshape(len(tiles), -1).astype(np.int64)
    # |u|^2 - 2 <u, t> + |t|^2 as float64 products: every partial sum is an integer
    # far below 2^53, so exact, without an (N, M, n) array.
    dots = np.rint(cells.astype(np.float64) @ flat.T.astype(np.float64)).astype(np.int64)
    plain = (cells * cells).sum(axis=1)[:, None] - 2 * dots + (flat * flat).sum(axis=1)[None]
    if not hundredths:
        return plain
    pixels = geometry.pixels
    difference = (cells.reshape(len(cells), pixels, 3).sum(axis=1)[:, None, :]
                  - flat.reshape(len(flat), pixels, 3).sum(axis=1)[None, :, :])
    return (plain * pixels * 10_000
            - (200 * hundredths - hundredths**2) * (difference**2).sum(axis=2))


def _ranked(row: np.ndarray) -> np.ndarray:
    """Positions by distance, then position."""
    positions = np.arange(len(row))
    return positions[np.lexsort((positions, row))]


#: Tiles of 64 px and more: square, block sums of 16 and 1,024 pixels (uint32), a
#: resampled rectangle with a prime side (unequal bound blocks).
LARGE = [Geometry(16, 64), Geometry(64, 64), Geometry(4, 128), Geometry(5, 64, 7, 43)]


@pytest.mark.parametrize("geometry", LARGE, ids=str)
def test_large_tiles_give_the_brute_force_picks_and_distances(geometry, pair_loops):
    rng = np.random.default_rng(geometry.match_px * 7 + geometry.cell_px)
    for case in range(4):
        tile_kind, cell_kind = (str(kind) for kind in rng.choice(KINDS, 2))
        tiles = _images(rng, tile_kind, int(rng.choice([1, 3, 9])), *geometry.match_shape)
        cells = _images(rng, cell_kind, int(rng.choice([1, 4])), *geometry.cell_shape)
        vectors = geometry.cell_vectors(cells)
        hundredths = int(rng.choice([0, 50, 100]))
        k = int(rng.choice([1, 3]))
        every = _search_units(vectors, tiles, geometry, hundredths)
        result = match_exact(vectors, tiles, geometry, k=k, tint=hundredths / 100,
                             search_units=True)
        label = (case, tile_kind, cell_kind, hundredths, k)
        for cell in range(len(vectors)):
            expected = _ranked(every[cell])
            assert result.tile[cell] == expected[0], label
            assert result.distance[cell] == every[cell, expected[0]], label
            if k > 1:
                width = min(k, len(tiles))
                assert result.candidates[cell].tolist() == expected[:width].tolist(), label
        if not hundredths:
            reference = brute_force(cells, tiles)
            assert np.array_equal(reference.tile, result.tile), label
            assert np.array_equal(reference.distance, result.distance), label


@pytest.mark.parametrize("hundredths", [100, 99, 50])
def test_tinted_ties_on_large_tiles_go_to_the_lowest_position(hundredths):
    """Tiles that are a cell moved by a constant colour: fully tinted, every one is at 0
    (a tie the float32 bounds must not break); less tinted, the smallest move wins."""
    geometry = Geometry(64, 64)
    rng = np.random.default_rng(hundredths)
    cells = rng.integers(60, 196, (2, 64, 64, 3)).astype(np.uint8)
    vectors = geometry.cell_vectors(cells)
    moves = rng.integers(-50, 51, (24, 1, 1, 3))
    moves[[5, 17]] = 0  # the cells themselves, twice
    tiles = (cells[rng.integers(0, 2, 24)].astype(np.int64) + moves).astype(np.uint8)
    every = _search_units(vectors, tiles, geometry, hundredths)
    result = match_exact(vectors, tiles, geometry, tint=hundredths / 100, search_units=True)
    expected = [_ranked(row)[0] for row in every]
    assert result.tile.tolist() == expected
    assert result.distance.tolist() == every[[0, 1], expected].tolist()


def test_threads_and_the_searchs_own_chunks_give_the_brute_force(pair_loops, monkeypatch):
    """More cells than a group (threads), more tiles than the sample and a chunk, many
    exact duplicates across chunks: ties to the lowest position throughout."""
    monkeypatch.setenv("MOSAICIST_THREADS", "2")
    geometry = Geometry(2, 4)
    rng = np.random.default_rng(5)
    distinct = rng.integers(0, 256, (60, 4, 4, 3), dtype=np.uint8)
    count = _exact.TILE_CHUNK + 300
    assert count > _exact.SEED_SAMPLE
    tiles = distinct[rng.integers(0, len(distinct), count)]
    cells = np.concatenate([
        rng.integers(0, 256, (2 * _exact.CELL_GROUP, 2, 2, 3), dtype=np.uint8),
        np.zeros((20, 2, 2, 3), np.uint8), np.full((20, 2, 2, 3), 255, np.uint8),
    ])
    vectors = geometry.cell_vectors(cells)
    for hundredths, k in ((0, 1), (40, 1), (0, 4)):
        every = _search_units(vectors, tiles, geometry, hundredths)
        result = match_exact(vectors, tiles, geometry, k=k, tint=hundredths / 100,
                             search_units=True)
        ranked = np.stack([_ranked(row)[:k] for row in every])
        assert np.array_equal(result.tile, ranked[:, 0]), (hundredths, k)
        assert np.array_equal(result.distance, every[np.arange(len(cells)), ranked[:, 0]])
        if k > 1:
            assert np.array_equal(result.candidates, ranked), (hundredths, k)


@pytest.mark.parametrize("kernel", ["float64", "int8"])
@pytest.mark.parametrize("geometry", [Geometry(16, 64), Geometry(8, 96, 5, 60),
                                      Geometry(4, 4)], ids=str)
def test_torch_on_the_cpu_is_the_brute_force(geometry, kernel):
    pytest.importorskip("torch")
    rng = np.random.default_rng(geometry.match_px + len(kernel))
    for tile_kind, cell_kind in (("random", "random"), ("equal", "black"),
                                 ("extremes", "white"), ("one-level", "flat")):
        tiles = _images(rng, tile_kind, 11, *geometry.match_shape)
        vectors = geometry.cell_vectors(_images(rng, cell_kind, 5, *geometry.cell_shape))
        every = _search_units(vectors, tiles, geometry)
        result = match_torch(vectors, tiles, geometry, "cpu", kernel=kernel)
        expected = [_ranked(row)[0] for row in every]
        assert result.tile.tolist() == expected, (tile_kind, cell_kind)
        assert result.distance.tolist() == every[np.arange(5), expected].tolist()


def test_approximate_search_scanning_everything_is_exact_on_large_tiles():
    """Every tile a candidate from every list: the re-rank alone decides, exactly."""
    geometry = Geometry(16, 64)
    rng = np.random.default_rng(11)
    tiles = np.concatenate([_images(rng, "one-level", 20, 64, 64),
                            _images(rng, "random", 20, 64, 64), np.zeros((3, 64, 64, 3),
                                                                      np.uint8)])
    vectors = geometry.cell_vectors(np.concatenate([
        _images(rng, "random", 6, 16, 16), _images(rng, "flat", 6, 16, 16)]))
    every = _search_units(vectors, tiles, geometry)
    result = match_approximate(vectors, tiles, geometry, candidates=len(tiles),
                               nprobe=10_000, structure="lists", use_faiss=False)
    expected = [_ranked(row)[0] for row in every]
    assert result.tile.tolist() == expected
    assert result.distance.tolist() == every[np.arange(len(vectors)), expected].tolist()


@pytest.mark.parametrize("tint", [0.0, 0.5])
@pytest.mark.parametrize("k", [1, 3])
def test_a_search_given_no_cell_gives_empty_results(tint, k):
    """No cell is no work, as for the approximate and PyTorch searches: it raised
    'cannot reshape array of size 0 into shape (0,newaxis,3)'."""
    geometry = Geometry(2, 4)
    rng = np.random.default_rng(2)
    tiles = rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    features = compute_features(tiles, geometry)
    none = np.zeros((0, 2, 2, 3), np.uint8)
    result = match_exact(none, tiles, geometry, features, k=k, tint=tint)
    assert result.tile.shape == (0,) and result.distance.shape == (0,)
    assert k == 1 or result.candidates.shape == (0, k)
    terms = cell_terms(none, geometry, features)
    assert terms.sums.shape == (0, 3) and terms.flat.shape[0] == 0
    assert dense_distances(none, tiles, geometry, features, tint).shape == (0, 5)
    assert pair_distances(none, tiles, geometry, features, np.zeros(0, np.int64),
                          np.zeros(0, np.int64), tint).shape == (0,)
    reference = brute_force(none, tiles)
    assert reference.tile.shape == (0,) and reference.distance.shape == (0,)


@pytest.mark.parametrize("search", [match_exact, match_approximate])
def test_a_search_given_no_tile_says_so(search):
    """As the PyTorch search says it; it was 'cannot reshape array of size 0 into shape
    (0,newaxis)' from deep in the features."""
    geometry = Geometry(2, 4)
    cells = np.zeros((3, 2, 2, 3), np.uint8)
    with pytest.raises(ValueError, match="^no tiles to match against$"):
        search(cells, np.zeros((0, 4, 4, 3), np.uint8), geometry)
