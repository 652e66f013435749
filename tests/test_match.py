"""Exactness of the matcher against a brute-force integer reference."""

import numpy as np
import pytest
from conftest import count_builds, in_threads

from mosaicist.grid import Geometry
from mosaicist.match import _exact as match
from mosaicist.match import _kernels as kernels
from mosaicist.match import (
    brute_force,
    cached_features,
    compute_features,
    exact_distances,
    match_exact,
)


def smooth_images(rng, count, side, noise=6, height=None):
    """Natural-ish images: random gradients plus a little noise, so bounds prune.

    ``side`` wide and ``height`` high (default ``side``).
    """
    height = side if height is None else height
    y = np.mgrid[0:height, 0:side][0] / max(1, height - 1)
    x = np.mgrid[0:height, 0:side][1] / max(1, side - 1)
    base = rng.uniform(0, 255, (count, 1, 1, 3))
    gx = rng.uniform(-120, 120, (count, 1, 1, 3))
    gy = rng.uniform(-120, 120, (count, 1, 1, 3))
    images = base + gx * x[None, :, :, None] + gy * y[None, :, :, None]
    images += rng.normal(0, noise, images.shape)
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


@pytest.fixture(autouse=True, params=["compiled", "numpy"])
def pair_loops(request, monkeypatch):
    """Every test here runs with the compiled pair loops (Numba) and with NumPy's."""
    if request.param == "compiled" and not kernels.numba_available():
        pytest.skip("Numba is not installed")
    monkeypatch.setattr(kernels, "USE_NUMBA", request.param == "compiled")
    return request.param


def assert_nearest_by_brute_force(result, geometry, cells, tiles, k):
    """``result``'s ``k`` candidates and distances are the brute-force ones (ties by position)."""
    factor = geometry.factor
    upscaled = geometry.cell_vectors(cells).repeat(factor, axis=1).repeat(factor, axis=2)
    flat = tiles.reshape(len(tiles), -1).astype(np.int64)
    for index, cell in enumerate(upscaled.reshape(len(cells), -1).astype(np.int64)):
        distances = ((flat - cell) ** 2).sum(axis=1)
        expected = np.lexsort((np.arange(len(tiles)), distances))[:k]
        assert result.candidates[index].tolist() == expected.tolist()
        assert result.candidate_distances[index].tolist() == distances[expected].tolist()


def test_pair_dots_equal_integer_reference(tmp_path):
    rng = np.random.default_rng(11)
    cells = rng.integers(0, 256, (40, 300), dtype=np.uint8)
    tiles = rng.integers(0, 1021, (90, 300)).astype(np.uint16)
    mapped = np.lib.format.open_memmap(tmp_path / "tiles.npy", "w+", np.uint16, tiles.shape)
    mapped[:] = tiles
    cell_index = rng.integers(0, 40, 5000)
    tile_index = rng.integers(0, 90, 5000)
    reference = np.einsum("ij,ij->i", cells[cell_index].astype(np.int64),
                          tiles[tile_index].astype(np.int64))
    for rows in (cells, cells.astype(np.int32)):
        for tile_rows in (tiles, mapped):
            for accumulate in (np.int32, np.int64):
                dots = kernels.pair_dots(rows, tile_rows, cell_index, tile_index, accumulate)
                assert dots.dtype == np.int64
                assert np.array_equal(dots, reference)
    assert len(kernels.pair_dots(cells, tiles, cell_index[:0], tile_index[:0], np.int32)) == 0


def test_pair_dots_past_int32_need_int64():
    cells = np.full((1, 40_000), 255, np.int64)
    tiles = np.full((1, 40_000), 1020, np.uint16)
    dots = kernels.pair_dots(cells, tiles, np.array([0]), np.array([0]), np.int64)
    assert dots.tolist() == [40_000 * 255 * 1020]


def test_compiled_loops_load_once_numpy_has_evaluated_enough(monkeypatch, pair_loops):
    if pair_loops != "compiled":
        pytest.skip("about loading the compiled loops")
    monkeypatch.setattr(kernels, "USE_NUMBA", None)
    monkeypatch.setattr(kernels, "_evaluated_by_numpy", 0)
    monkeypatch.setattr(kernels, "COMPILE_AFTER_VALUES", 10_000)
    monkeypatch.setattr(kernels, "COMPILE_AT_ONCE", 5_000)
    kernels._compiled_loop.cache_clear()
    rng = np.random.default_rng(3)
    cells = rng.integers(0, 256, (5, 300), dtype=np.uint8)
    tiles = rng.integers(0, 256, (7, 300), dtype=np.uint8)
    pairs = (np.arange(10) % 5, np.arange(10) % 7)
    reference = np.einsum("ij,ij->i", cells[pairs[0]].astype(np.int64),
                          tiles[pairs[1]].astype(np.int64))
    loaded = []
    for _ in range(4):  # 3,000 values a call: the fourth passes 10,000
        assert np.array_equal(kernels.pair_dots(cells, tiles, *pairs, np.int32), reference)
        loaded.append(kernels._compiled_loop.cache_info().currsize > 0)
    assert loaded == [False, False, False, True]
    kernels._compiled_loop.cache_clear()
    monkeypatch.setattr(kernels, "_evaluated_by_numpy", 0)
    many = (np.arange(20) % 5, np.arange(20) % 7)  # 6,000 values at once
    kernels.pair_dots(cells, tiles, *many, np.int32)
    assert kernels._compiled_loop.cache_info().currsize > 0


def test_a_loop_numba_cannot_compile_falls_back_to_numpy(monkeypatch, pair_loops):
    if pair_loops != "compiled":
        pytest.skip("about the compiled loops")
    import numba

    def refuses(*arguments):
        raise numba.core.errors.TypingError("cannot type these arrays")

    monkeypatch.setattr(kernels, "_compiled_loop", lambda loop: refuses)
    cells = np.arange(12, dtype=np.uint8).reshape(2, 6)
    tiles = np.arange(18, dtype=np.uint16).reshape(3, 6)
    with pytest.warns(RuntimeWarning, match="Numba could not compile"):
        dots = kernels.pair_dots(cells, tiles, np.array([0, 1]), np.array([2, 0]), np.int32)
    assert dots.tolist() == [int(cells[0].astype(int) @ tiles[2]),
                             int(cells[1].astype(int) @ tiles[0])]
    assert kernels.USE_NUMBA is False  # restored by the fixture's monkeypatch


def test_compiled_loops_run_where_numba_has_nowhere_to_cache(monkeypatch, pair_loops):
    if pair_loops != "compiled":
        pytest.skip("about the compiled loops")
    from numba.core import caching

    # A read-only installation and home: Numba finds no folder for its cache.
    monkeypatch.setattr(caching.CacheImpl, "_locator_classes", [])
    kernels._compiled_loop.cache_clear()
    try:
        cells = np.arange(12, dtype=np.uint8).reshape(2, 6)
        tiles = np.arange(18, dtype=np.uint16).reshape(3, 6)
        dots = kernels.pair_dots(cells, tiles, np.array([1]), np.array([2]), np.int32)
        assert dots.tolist() == [int(cells[1].astype(int) @ tiles[2])]
    finally:
        kernels._compiled_loop.cache_clear()


@pytest.mark.parametrize("k", [1, 3, 8])
def test_merged_k_best_equal_a_sort_of_all_pairs(k):
    rng = np.random.default_rng(k)
    count, unset = 30, np.iinfo(np.int64).max
    best_distance = np.full((count, k), unset, np.int64)
    best_tile = np.full((count, k), unset, np.int64)
    seen = {}
    for _ in range(6):
        cells = rng.integers(0, count, 200)
        tiles = rng.integers(0, 25, 200)
        # A pair's distance is a function of the pair (repeats are re-evaluations);
        # few values, so ties between tiles are common.
        distances = (cells * 7 + tiles * 3) % 11
        match._merge_best(best_distance, best_tile, cells, tiles, distances)
        seen.update(zip(zip(cells.tolist(), tiles.tolist(), strict=True), distances.tolist(),
                        strict=True))
    for cell in range(count):
        ranked = sorted((distance, tile) for (c, tile), distance in seen.items() if c == cell)
        ranked = (ranked + [(unset, unset)] * k)[:k]
        assert list(zip(best_distance[cell].tolist(), best_tile[cell].tolist(),
                        strict=True)) == ranked


GEOMETRIES = [(16, 32), (8, 32), (4, 4), (6, 10), (8, 4), (3, 9), (5, 15), (32, 32)]


@pytest.mark.parametrize(("cell", "tile"), GEOMETRIES)
def test_random_data_matches_brute_force(cell, tile):
    rng = np.random.default_rng(cell * 100 + tile)
    tiles = rng.integers(0, 256, (700, tile, tile, 3), dtype=np.uint8)
    cells = rng.integers(0, 256, (60, cell, cell, 3), dtype=np.uint8)
    geometry = Geometry(cell, tile)
    result = match_exact(geometry.cell_vectors(cells), tiles, geometry)
    reference = brute_force(cells, tiles, tile)
    assert np.array_equal(result.tile, reference.tile)
    assert np.array_equal(result.distance, reference.distance)


@pytest.mark.parametrize(("cell", "tile"), [(16, 32), (8, 16), (6, 10)])
def test_structured_data_with_pruning_matches_brute_force(cell, tile, monkeypatch):
    # Small chunks so that several chunks, groups and threshold updates happen.
    monkeypatch.setattr(match, "TILE_CHUNK", 256)
    monkeypatch.setattr(match, "CELL_GROUP", 32)
    monkeypatch.setattr(match, "SEED_SAMPLE", 64)
    rng = np.random.default_rng(7)
    tiles = smooth_images(rng, 2000, tile)
    cells = smooth_images(rng, 200, cell, noise=10)
    geometry = Geometry(cell, tile)
    result = match_exact(geometry.cell_vectors(cells), tiles, geometry)
    reference = brute_force(cells, tiles, tile)
    assert np.array_equal(result.tile, reference.tile)
    assert np.array_equal(result.distance, reference.distance)
    # The bounds must actually prune on structured data, or this is brute force.
    assert result.evaluated < 0.2 * len(cells) * len(tiles)


@pytest.mark.parametrize("converted_bytes", [0, 1 << 40])
def test_cell_rows_kept_as_bytes_on_huge_grids_give_the_same_result(converted_bytes,
                                                                    monkeypatch, pair_loops):
    # Past the budget the cells stay uint8 (memory bounded on huge grids), and so they
    # do for the compiled loops, which read bytes as fast.
    monkeypatch.setattr(match, "CONVERTED_CELLS_BYTES", converted_bytes)
    monkeypatch.setattr(match, "CELL_GROUP", 32)
    rng = np.random.default_rng(8)
    tiles = smooth_images(rng, 600, 16)
    cells = smooth_images(rng, 120, 8, noise=10)
    geometry = Geometry(8, 16)
    search = match._ExactSearch(geometry.cell_vectors(cells), tiles, geometry,
                                compute_features(tiles, geometry), 1, 0)
    kept = converted_bytes == 0 or pair_loops == "compiled"
    assert search.cell_flat.dtype == (np.uint8 if kept else np.int32)
    result = match_exact(geometry.cell_vectors(cells), tiles, geometry, k=3)
    assert_nearest_by_brute_force(result, geometry, cells, tiles, 3)


def test_ties_go_to_the_lowest_library_position():
    rng = np.random.default_rng(11)
    tiles = smooth_images(rng, 400, 8)
    # Exact duplicates far apart in library order, and a flat cell that ties.
    tiles[350] = tiles[20]
    tiles[399] = tiles[20]
    tiles[100] = 40
    tiles[300] = 40
    cells = np.concatenate([tiles[[20]], np.full((1, 8, 8, 3), 40, np.uint8)])
    geometry = Geometry(8, 8)
    result = match_exact(geometry.cell_vectors(cells), tiles, geometry)
    assert result.tile.tolist() == [20, 100]
    assert result.distance.tolist() == [0, 0]


def test_near_ties_are_resolved_exactly():
    # Two tiles whose distances differ by 1 on a huge total: float32 cannot
    # tell them apart, the integer re-check must.
    cell = np.full((1, 16, 16, 3), 255, np.uint8)
    tiles = np.zeros((3, 32, 32, 3), np.uint8)
    tiles[1, 0, 0, 0] = 1  # distance smaller by 2*255 - 1 than tile 0
    tiles[2, 0, 0, 0] = 2
    tiles[2, 0, 0, 1] = 0
    geometry = Geometry(16, 32)
    result = match_exact(geometry.cell_vectors(cell), tiles, geometry)
    reference = brute_force(cell, tiles, 32)
    assert result.tile.tolist() == reference.tile.tolist() == [2]
    assert result.distance.tolist() == reference.distance.tolist()


def test_exact_distances_use_int64_when_int32_could_overflow():
    geometry = Geometry(1, 128)  # 3 * 128^2 * 255 * 255 * ... exceeds int32
    cell = np.full((1, 1, 1, 3), 255, np.uint8)
    tiles = np.full((2, 128, 128, 3), 255, np.uint8)
    tiles[1] = 0
    features = compute_features(tiles, geometry)
    vectors = geometry.cell_vectors(cell)
    flat = vectors.reshape(1, -1)
    norm2 = (flat.astype(np.int64) ** 2).sum(axis=1)
    distances = exact_distances(
        flat, norm2, features.pooled, features.norm2, geometry.weight,
        np.array([0, 0]), np.array([0, 1]),
    )
    assert distances.tolist() == [0, 128 * 128 * 3 * 255 * 255]


def test_limit_uses_a_prefix_of_the_library():
    rng = np.random.default_rng(5)
    tiles = smooth_images(rng, 500, 16)
    cells = smooth_images(rng, 50, 8)
    geometry = Geometry(8, 16)
    features = compute_features(tiles, geometry).limit(123)
    result = match_exact(geometry.cell_vectors(cells), tiles[:123], geometry, features)
    reference = brute_force(cells, tiles[:123], 16)
    assert np.array_equal(result.tile, reference.tile)
    assert result.tile.max() < 123


def test_cached_features_round_trip(tmp_path):
    rng = np.random.default_rng(6)
    tiles = smooth_images(rng, 300, 32)
    geometry = Geometry(16, 32)
    first = cached_features(tiles, geometry, tmp_path, generation=0)
    entries = list(tmp_path.iterdir())
    assert len(entries) == 1 and entries[0].is_dir()
    second = cached_features(tiles, geometry, tmp_path, generation=0)
    for name in ("mean", "basis", "bound", "order", "residual", "norm2"):
        assert np.array_equal(getattr(first, name), getattr(second, name))
    assert np.array_equal(np.asarray(first.pooled), np.asarray(second.pooled))
    # A damaged entry is recomputed, not trusted.
    (entries[0] / "bound.npy").write_bytes(b"garbage")
    third = cached_features(tiles, geometry, tmp_path, generation=0)
    assert np.array_equal(third.bound, first.bound)
    # One whose array header fails NumPy's parser or tokenizer (tracebacks: SyntaxError,
    # TokenError).
    import tokenize

    for at, byte in ((10, "'"), (11, "(")):
        damaged = bytearray((entries[0] / "bound.npy").read_bytes())
        damaged[at] = ord(byte)
        (entries[0] / "bound.npy").write_bytes(bytes(damaged))
        with pytest.raises((SyntaxError, tokenize.TokenError)):
            np.load(entries[0] / "bound.npy")
        again = cached_features(tiles, geometry, tmp_path, generation=0)
        assert np.array_equal(again.bound, first.bound)
    # Another generation is another entry, which replaces the older one's.
    cached_features(tiles, geometry, tmp_path, generation=1)
    entries = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1 and "-g1-" in entries[0].name


def test_real_picture_matches_brute_force():
    # Real image content from the repository's example picture: tiles are
    # crops of one part of the painting, cells come from another.
    from pathlib import Path

    from mosaicist.grid import make_grid
    from mosaicist.imaging import read_target

    picture = read_target(Path(__file__).resolve().parents[1] / "examples" / "starry_night.jpg")
    top = picture[:480]
    tiles = np.stack([
        top[y:y + 32, x:x + 32]
        for y in range(0, 448, 12) for x in range(0, 1248, 12)
    ])
    grid = make_grid(picture[520:840, 200:840], 16)
    geometry = Geometry(16, 32)
    result = match_exact(geometry.cell_vectors(grid.cells), tiles, geometry)
    sample = np.arange(0, len(grid), 7)
    reference = brute_force(grid.cells[sample], tiles, 32)
    assert np.array_equal(result.tile[sample], reference.tile)
    assert np.array_equal(result.distance[sample], reference.distance)


@pytest.mark.parametrize("k", [2, 5, 40])
def test_k_best_candidates_are_exact(k, monkeypatch):
    monkeypatch.setattr(match, "TILE_CHUNK", 128)
    monkeypatch.setattr(match, "CELL_GROUP", 16)
    monkeypatch.setattr(match, "SEED_SAMPLE", 32)
    rng = np.random.default_rng(12)
    tiles = smooth_images(rng, 600, 16)
    tiles[500] = tiles[3]  # a duplicate: ties ordered by position
    cells = smooth_images(rng, 40, 8)
    cells[0] = tiles[3].reshape(8, 2, 8, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8)
    geometry = Geometry(8, 16)
    result = match_exact(geometry.cell_vectors(cells), tiles, geometry, k=k)
    assert_nearest_by_brute_force(result, geometry, cells, tiles, k)
    assert np.array_equal(result.tile, result.candidates[:, 0])


def test_k_larger_than_library():
    rng = np.random.default_rng(13)
    tiles = smooth_images(rng, 5, 4)
    cells = smooth_images(rng, 3, 4)
    geometry = Geometry(4, 4)
    result = match_exact(geometry.cell_vectors(cells), tiles, geometry, k=9)
    assert result.candidates.shape == (3, 5)
    assert sorted(result.candidates[0].tolist()) == [0, 1, 2, 3, 4]


def tinted_reference(cells, tiles, tile_px, strength):
    geometry = Geometry(cells.shape[2], tile_px, cells.shape[1], tiles.shape[1])
    factor = geometry.factor
    upscaled = geometry.cell_vectors(cells).repeat(factor, axis=1).repeat(factor, axis=2)
    flat_cells = upscaled.reshape(len(cells), -1, 3).astype(np.float64)
    flat_tiles = tiles.reshape(len(tiles), -1, 3).astype(np.float64)
    picks, values = [], []
    for cell in flat_cells:
        shift = strength * (cell.mean(axis=0) - flat_tiles.mean(axis=1))  # (M, 3)
        tinted = flat_tiles + shift[:, None, :]
        distances = ((cell[None] - tinted) ** 2).sum(axis=(1, 2))
        picks.append(int(np.argmin(distances)))
        values.append(distances[picks[-1]])
    return np.array(picks), np.array(values)


@pytest.mark.parametrize(("cell", "tile", "strength"), [(8, 16, 0.5), (4, 4, 1.0), (6, 10, 0.25)])
def test_tinted_ranking_matches_reference(cell, tile, strength, monkeypatch):
    monkeypatch.setattr(match, "TILE_CHUNK", 128)
    monkeypatch.setattr(match, "CELL_GROUP", 16)
    rng = np.random.default_rng(21)
    tiles = smooth_images(rng, 500, tile)
    cells = smooth_images(rng, 60, cell)
    geometry = Geometry(cell, tile)
    result = match_exact(geometry.cell_vectors(cells), tiles, geometry, tint=strength)
    picks, values = tinted_reference(cells, tiles, tile, strength)
    assert np.array_equal(result.tile, picks)
    assert np.allclose(result.distance, values, rtol=1e-9, atol=1e-6)
    # Tinting can only bring tiles closer.
    plain = match_exact(geometry.cell_vectors(cells), tiles, geometry)
    assert np.all(result.distance <= plain.distance + 1e-6)


def test_rows_kept_with_the_features_follow_the_tint(monkeypatch):
    """One features object searched at several strengths (as the pricing rounds do) gives
    each strength's own results: the derived rows are kept per strength, never mixed."""
    monkeypatch.setattr(match, "TILE_CHUNK", 128)
    monkeypatch.setattr(match, "CELL_GROUP", 16)
    rng = np.random.default_rng(22)
    tiles = smooth_images(rng, 400, 16)
    cells = smooth_images(rng, 50, 8)
    geometry = Geometry(8, 16)
    vectors = geometry.cell_vectors(cells)
    shared = compute_features(tiles, geometry)
    for strength in (0.0, 0.3, 1.0, 0.3, 0.0, 0.7, 0.9, 0.2, 0.3):
        kept = match_exact(vectors, tiles, geometry, shared, k=5, tint=strength)
        fresh = match_exact(vectors, tiles, geometry, compute_features(tiles, geometry), k=5,
                            tint=strength)
        assert np.array_equal(kept.candidates, fresh.candidates)
        assert np.array_equal(kept.candidate_distances, fresh.candidate_distances)
    from mosaicist.match._features import DERIVED_KEPT
    assert len(shared._derived) <= DERIVED_KEPT


# --- rectangular cells and tiles (an aspect other than 1:1) ---------------------------------

#: (cell width, cell height, tile width, tile height): the same whole multiple both ways
#: (block sums), tall ones, the width a multiple but not the height, and sizes that are
#: multiples of nothing (the cell resampled), as 3:2, 4:3, 2:3, 1:3 and 16:9 give them.
RECTANGLES = [(16, 11, 32, 22), (8, 12, 16, 24), (5, 15, 10, 30), (16, 11, 32, 21),
              (9, 6, 32, 21), (6, 9, 21, 32), (10, 15, 8, 12), (7, 2, 21, 6)]


@pytest.fixture
def small_bound_grid(monkeypatch):
    """At most 8 blocks a side: unequal blocks on more sides, and a fast PCA."""
    from mosaicist.match import _features

    monkeypatch.setattr(_features, "BOUND_GRID", 8)


def rectangles(rng, count, width, height, structured):
    if structured:
        return smooth_images(rng, count, width, noise=10, height=height)
    return rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize(("cell_w", "cell_h", "tile_w", "tile_h"), RECTANGLES)
@pytest.mark.parametrize("structured", [False, True])
def test_rectangles_match_brute_force(cell_w, cell_h, tile_w, tile_h, structured, monkeypatch,
                                      small_bound_grid):
    monkeypatch.setattr(match, "TILE_CHUNK", 128)
    monkeypatch.setattr(match, "CELL_GROUP", 16)
    monkeypatch.setattr(match, "SEED_SAMPLE", 32)
    rng = np.random.default_rng(cell_w * 1000 + cell_h * 100 + tile_w + tile_h)
    tiles = rectangles(rng, 400, tile_w, tile_h, structured)
    cells = rectangles(rng, 30, cell_w, cell_h, structured)
    geometry = Geometry(cell_w, tile_w, cell_h, tile_h)
    vectors = geometry.cell_vectors(cells)
    assert vectors.shape[1:3] == geometry.shape
    result = match_exact(vectors, tiles, geometry)
    reference = brute_force(cells, tiles)
    assert np.array_equal(result.tile, reference.tile)
    assert np.array_equal(result.distance, reference.distance)
    if structured and geometry.length >= 300:
        # The rectangular bound prunes, or this would be brute force.
        assert result.evaluated < 0.3 * len(cells) * len(tiles)


@pytest.mark.parametrize(("cell_w", "cell_h", "tile_w", "tile_h"),
                         [(16, 11, 32, 22), (9, 6, 32, 21), (6, 9, 21, 32)])
def test_rectangles_k_best_and_tint_match_references(cell_w, cell_h, tile_w, tile_h,
                                                      monkeypatch, small_bound_grid):
    monkeypatch.setattr(match, "TILE_CHUNK", 128)
    monkeypatch.setattr(match, "CELL_GROUP", 16)
    rng = np.random.default_rng(tile_w * tile_h)
    tiles = smooth_images(rng, 200, tile_w, height=tile_h)
    cells = smooth_images(rng, 20, cell_w, height=cell_h)
    geometry = Geometry(cell_w, tile_w, cell_h, tile_h)
    features = compute_features(tiles, geometry)
    vectors = geometry.cell_vectors(cells)
    factor = geometry.factor
    upscaled = vectors.repeat(factor, axis=1).repeat(factor, axis=2).astype(np.int64)
    flat = tiles.reshape(len(tiles), -1).astype(np.int64)
    result = match_exact(vectors, tiles, geometry, features, k=4)
    for index, cell in enumerate(upscaled.reshape(len(cells), -1)):
        distances = ((flat - cell) ** 2).sum(axis=1)
        expected = np.lexsort((np.arange(len(tiles)), distances))[:4]
        assert result.candidates[index].tolist() == expected.tolist()
    tinted = match_exact(vectors, tiles, geometry, features, tint=0.6)
    picks, values = tinted_reference(cells, tiles, tile_w, 0.6)
    assert np.array_equal(tinted.tile, picks)
    assert np.allclose(tinted.distance, values, rtol=1e-9, atol=1e-6)


@pytest.mark.parametrize(("height", "width", "steps"),
                         [(21, 32, (3, 4)), (43, 24, None), (17, 17, None), (12, 16, (2, 2))])
def test_rectangular_bound_never_exceeds_the_distance(height, width, steps, small_bound_grid):
    from mosaicist.match._features import BoundGrid, cell_bound_rows

    rng = np.random.default_rng(height * width)
    tiles = smooth_images(rng, 150, width, noise=25, height=height)
    cells = smooth_images(rng, 30, width, noise=25, height=height)
    geometry = Geometry(width, width, height, height)
    blocks = BoundGrid.of(geometry)
    rows, cols = blocks.shape
    # Every side gets a useful number of blocks, prime ones too (unequal blocks).
    assert rows >= min(height, 8) // 2 and cols >= min(width, 8) // 2
    # Equal blocks (not always square) where a step fits, else unequal ones (prime sides).
    assert blocks.steps == steps
    features = compute_features(tiles, geometry)
    cell_rows, _, _ = cell_bound_rows(cells, geometry, features)
    bounds = cell_rows.astype(np.float64) @ features.bound.astype(np.float64).T
    flat_cells = cells.reshape(len(cells), -1).astype(np.int64)
    flat_tiles = tiles.reshape(len(tiles), -1).astype(np.int64)[features.order]
    exact = (flat_cells**2).sum(1)[:, None] - 2 * flat_cells @ flat_tiles.T \
        + (flat_tiles**2).sum(1)[None, :]
    assert np.all(bounds <= exact)
    # And it is a useful bound: most of the distance on these smooth pictures.
    assert np.median(bounds / np.maximum(exact, 1)) > 0.5


@pytest.mark.parametrize("tint", [0.0, 0.5])
@pytest.mark.parametrize(("cell_px", "match_px", "cell_height", "match_height"),
                         [(12, 32, 0, 0), (8, 16, 0, 0), (16, 32, 0, 0), (8, 43, 6, 17)])
def test_tail_column_bound_never_exceeds_the_distance(cell_px, match_px, cell_height,
                                                      match_height, tint, small_bound_grid):
    """The bound with the tail norms' column, full and coarse, is a bound, tinted too.

    It is nearly exact on flat cells (a sky), where the components alone
    bound worst: a textured tile's detail is all in its tail.
    """
    from mosaicist.match._features import BOUND_SLACK, cell_bound_rows

    geometry = Geometry(cell_px, match_px, cell_height, match_height)
    height, width = geometry.shape
    rng = np.random.default_rng(cell_px * match_px)
    tiles = smooth_images(rng, 120, geometry.match_px, noise=30,
                          height=geometry.match_height)
    textured = smooth_images(rng, 20, width, noise=30, height=height)
    flat = np.clip(rng.uniform(0, 255, (20, 1, 1, 3))
                   + rng.normal(0, 2, (20, height, width, 3)), 0, 255).astype(np.uint8)
    cells = np.concatenate([textured, flat])
    features = compute_features(tiles, geometry)
    hundredths = round(tint * 100)
    search = match._ExactSearch(cells, tiles, geometry, features, 1, hundredths)
    search.coarse_rows()
    exact = match.dense_distances(cells, tiles, geometry, features, tint)[:, features.order]
    exact = exact / search.distance_scale
    full = search.cell_rows.astype(np.float64) @ search.bound_rows.astype(np.float64).T
    coarse = search.coarse_cells.astype(np.float64) @ search.coarse_tiles.astype(np.float64).T
    assert np.all(full <= exact)
    assert np.all(coarse <= exact)
    if not tint:
        # Without the column: the components' bound only, much looser on flat cells.
        rows, _, _ = cell_bound_rows(cells, geometry, features)
        # The components' columns and the row and column terms, less the tail's square.
        width = len(features.basis) + 2
        rows = rows.astype(np.float64)
        rows[:, width - 2] -= geometry.weight * (1 - BOUND_SLACK) * search.cell_tail ** 2
        components = rows[:, :width] @ features.bound[:, :width].astype(np.float64).T
        assert np.all(components <= full + 1e-3 * np.abs(exact) + 1)
        # On flat cells the column closes most of what the components leave (where
        # they leave more than the float32 slack: with every component kept and no
        # blocks to average over, there is no tail).
        missed = exact[20:] - components[20:]
        if np.median(missed) > 1e-3 * np.median(exact[20:]):
            assert np.median((exact[20:] - full[20:]) / np.maximum(missed, 1)) < 0.3
        else:
            assert features.tail_norm.max() < 1e-3 * np.sqrt(exact.max())


def test_rectangular_features_cache_apart_from_square_ones(tmp_path):
    rng = np.random.default_rng(4)
    tall = smooth_images(rng, 50, 16, height=24)
    wide = smooth_images(rng, 50, 24, height=16)
    cached_features(tall, Geometry(8, 16, 12, 24), tmp_path, generation=0)
    cached_features(wide, Geometry(12, 24, 8, 16), tmp_path, generation=0)
    names = sorted(path.name for path in tmp_path.iterdir() if not path.name.startswith("."))
    assert len(names) == 2 and all("shape" in name for name in names)
    again = cached_features(tall, Geometry(8, 16, 12, 24), tmp_path, generation=0)
    assert again.pooled.shape == (50, 12 * 8 * 3)


@pytest.mark.parametrize(("k", "tint"), [(1, 0.0), (6, 0.0), (6, 0.5), (40, 1.0)])
def test_search_among_some_tiles_with_prices_and_limits(k, tint, monkeypatch):
    """``among`` searches only those tiles: the k least of distance plus price below the limit.

    The oracle is every pair's distance (:func:`dense_distances`, itself
    checked against brute force), restricted to the tiles, ranked by
    distance plus price, ties by position.
    """
    from mosaicist.match._exact import dense_distances

    monkeypatch.setattr(match, "TILE_CHUNK", 64)
    monkeypatch.setattr(match, "CELL_GROUP", 8)
    monkeypatch.setattr(match, "SEED_SAMPLE", 16)
    rng = np.random.default_rng(31 + k)
    tiles = smooth_images(rng, 500, 16)
    tiles[401] = tiles[7]  # equal tiles: ties go to the lower position
    cells = smooth_images(rng, 30, 8)
    geometry = Geometry(8, 16)
    vectors = geometry.cell_vectors(cells)
    features = compute_features(tiles, geometry)
    every = dense_distances(vectors, tiles, geometry, features, tint)
    among = np.unique(np.concatenate([rng.choice(500, 150, replace=False), [7, 401]]))
    price = np.where(rng.random(500) < 0.3, rng.integers(0, every.max() // 20, 500), 0)
    total = every + price
    # Limits between each cell's nearest and farthest tile among those searched.
    limit = np.quantile(total[:, among], rng.uniform(0.02, 0.5, len(cells)), axis=1)
    limit = np.diagonal(limit).astype(np.int64) if limit.ndim == 2 else limit.astype(np.int64)
    result = match_exact(vectors, tiles, geometry, features, k=k, tint=tint, price=price,
                         limit=limit, search_units=True, among=among)
    found = result.candidates if k > 1 else result.tile[:, None]
    values = result.candidate_distances if k > 1 else result.distance[:, None]
    for cell in range(len(cells)):
        ranked = among[np.lexsort((among, total[cell, among]))]
        expected = ranked[total[cell, ranked] < limit[cell]][:k]
        got = found[cell][found[cell] >= 0]
        assert got.tolist() == expected.tolist()
        assert values[cell][:len(got)].tolist() == total[cell, expected].tolist()
    with pytest.raises(ValueError, match="among"):
        match_exact(vectors, tiles, geometry, features, among=np.zeros(0, np.int64))


def test_a_numba_that_is_found_but_does_not_import_leaves_numpy_to_do_it(monkeypatch):
    # numba_available() only looks the package up (importing it costs 0.4 s): an
    # installation that then fails to import must cost speed, not the result.
    monkeypatch.setattr(kernels, "USE_NUMBA", True)
    monkeypatch.setattr(kernels, "numba_available", lambda: True)
    monkeypatch.setattr(kernels, "_numba", lambda: None)
    kernels._compiled_loop.cache_clear()
    try:
        rng = np.random.default_rng(12)
        tiles = smooth_images(rng, 300, 16)
        cells = smooth_images(rng, 40, 8, noise=10)
        geometry = Geometry(8, 16)
        assert kernels.compiled_loops_allowed()
        result = match_exact(geometry.cell_vectors(cells), tiles, geometry, k=2)
    finally:
        kernels._compiled_loop.cache_clear()
    assert_nearest_by_brute_force(result, geometry, cells, tiles, 2)


def test_squared_differences_are_exact_by_products_and_beyond_their_range():
    from mosaicist.match._exact import _squared_differences

    rng = np.random.default_rng(2)
    # Channel sums of a tinted search (products within float64's integers), and sums
    # too large for them (the differences themselves).
    for largest in (255 * 1024 * 4, 1 << 28):
        cells = rng.integers(-largest, largest, (30, 3))
        tiles = rng.integers(-largest, largest, (20, 3))
        difference = cells[:, None, :] - tiles[None, :, :]
        expected = np.einsum("ijc,ijc->ij", difference, difference)
        assert np.array_equal(_squared_differences(cells, tiles), expected)


def test_cell_bound_rows_shared_out_among_threads_are_the_one_thread_rows(monkeypatch):
    from mosaicist.match import _features

    rng = np.random.default_rng(11)
    tiles = smooth_images(rng, 60, 16)
    cells = smooth_images(rng, 50, 8)
    geometry = Geometry(8, 16)
    features = compute_features(tiles, geometry)
    monkeypatch.setattr(_features, "CELL_BLOCK", 7)
    monkeypatch.setenv("MOSAICIST_THREADS", "1")
    alone = _features.cell_bound_rows(cells, geometry, features)
    monkeypatch.setenv("MOSAICIST_THREADS", "3")
    shared = _features.cell_bound_rows(cells, geometry, features)
    for one, other in zip(alone, shared, strict=True):
        assert np.array_equal(one, other)


def test_two_threads_needing_the_same_features_compute_them_once(tmp_path, monkeypatch):
    from mosaicist.match import _features

    tiles = smooth_images(np.random.default_rng(6), 60, 32)
    geometry = Geometry(16, 32)
    expected = compute_features(tiles, geometry)
    builds = count_builds(monkeypatch, _features, "compute_features")
    results = in_threads(2, lambda: cached_features(tiles, geometry, tmp_path, generation=0))
    assert builds == [1]
    for features in results:
        assert np.array_equal(features.bound, expected.bound)
        assert np.array_equal(np.asarray(features.pooled), np.asarray(expected.pooled))
    assert [path for path in tmp_path.iterdir() if path.name.startswith(".")] == []


def test_a_killed_features_builder_leaves_the_work_to_its_waiter(tmp_path, monkeypatch):
    import subprocess
    import sys
    import threading

    from mosaicist.match import _features

    script = (
        "import sys, time\nimport numpy as np\n"
        "from mosaicist.grid import Geometry\nfrom mosaicist.match import _features\n"
        "def stuck(*arguments, **keywords):\n"
        "    print('building', flush=True)\n    time.sleep(600)\n"
        "_features.compute_features = stuck\n"
        "tiles = np.random.default_rng(6).integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)\n"
        f"_features.cached_features(tiles, Geometry(8, 16), __import__('pathlib').Path("
        f"{str(tmp_path)!r}), 0)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "building"
        tiles = np.random.default_rng(6).integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
        builds = count_builds(monkeypatch, _features, "compute_features")
        got: list = []
        waiter = threading.Thread(
            target=lambda: got.append(cached_features(tiles, Geometry(8, 16), tmp_path, 0)))
        waiter.start()
        waiter.join(0.3)
        assert builds == []  # waits while the builder lives
        holder.kill()
        waiter.join(60)
        assert builds == [1] and len(got) == 1
        assert np.array_equal(got[0].bound, compute_features(tiles, Geometry(8, 16)).bound)
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


@pytest.mark.parametrize("tint", [0.0, 0.3, 1.0])
def test_dense_distances_with_the_compiled_tint_correction_are_numpys(tint, pair_loops,
                                                                        monkeypatch):
    """The tint's correction of every distance, compiled in one pass, is NumPy's exactly.

    The correction took two thirds of the distances a minimum of uses computes (its
    ten passes over each block); compiled, one.
    """
    from mosaicist.match._exact import dense_distances

    rng = np.random.default_rng(17)
    tiles = smooth_images(rng, 70, 16, noise=40)
    cells = smooth_images(rng, 45, 8, noise=40)
    geometry = Geometry(8, 16)
    vectors = geometry.cell_vectors(cells)
    features = compute_features(tiles, geometry)
    monkeypatch.setattr(kernels, "COMPILE_AFTER_TINTED", 0)
    every = dense_distances(vectors, tiles, geometry, features, tint)
    monkeypatch.setattr(kernels, "USE_NUMBA", False)
    reference = dense_distances(vectors, tiles, geometry, features, tint)
    np.testing.assert_array_equal(every, reference)
    # Each is the search's own distance, pair by pair.
    from mosaicist.match._exact import pair_distances

    cell_index, tile_index = np.divmod(np.arange(every.size), every.shape[1])
    pairs = pair_distances(vectors, tiles, geometry, features, cell_index, tile_index, tint)
    np.testing.assert_array_equal(every.ravel(), pairs)


@pytest.mark.parametrize("k", [1, 5])
def test_the_sample_pass_evaluates_only_cells_whose_limits_it_can_lower(k, monkeypatch):
    """A cell whose limit admits fewer than ``k`` sample tiles gets no sample evaluations.

    Its exact distances there could not lower its threshold (the ``k``-th
    best stays unset): a price check's cells, limited at their costs,
    evaluated 12 million such pairs for nothing. The results stay the exact
    ``k`` least below each limit.
    """
    from mosaicist.match._exact import dense_distances

    monkeypatch.setattr(match, "SEED_SAMPLE", 64)
    rng = np.random.default_rng(17 + k)
    tiles = smooth_images(rng, 400, 16)
    cells = smooth_images(rng, 40, 8)
    geometry = Geometry(8, 16)
    vectors = geometry.cell_vectors(cells)
    features = compute_features(tiles, geometry)
    every = dense_distances(vectors, tiles, geometry, features)
    ranked = np.sort(every, axis=1)
    # Half the cells limited far below every tile (no bound admits one), half past
    # their 200th.
    tight = np.arange(len(cells)) % 2 == 0
    limit = np.where(tight, -ranked[:, -1], ranked[:, 200] + 1)
    search = match._ExactSearch(vectors, tiles, geometry, features, k, 0, limit=limit)
    evaluated = search.seed_pass()
    assert evaluated > 0
    assert (search.best_tile[tight] == np.iinfo(np.int64).max).all()
    unlimited = match._ExactSearch(vectors, tiles, geometry, features, k, 0)
    assert unlimited.seed_pass() >= len(cells) * k
    result = match_exact(vectors, tiles, geometry, features, k=k, limit=limit,
                         search_units=True)
    found = result.candidates if k > 1 else result.tile[:, None]
    for cell in range(len(cells)):
        order = np.lexsort((np.arange(len(tiles)), every[cell]))
        expected = order[every[cell, order] < limit[cell]][:k]
        assert found[cell][found[cell] >= 0].tolist() == expected.tolist()
