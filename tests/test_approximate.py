"""Approximate search: valid picks, exact distances, near-exact results, index cache."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import count_builds, in_threads

from mosaicist.grid import Geometry
from mosaicist.match import (
    MatchResult,
    TileFeatures,
    compute_features,
    match_approximate,
    match_exact,
)
from mosaicist.match import _approximate as approximate

CELL, TILE = 8, 16


def smooth_images(rng: np.random.Generator, count: int, side: int, noise: float = 6) -> np.ndarray:
    """Random gradients plus noise: structured enough for PCA and clustering to matter."""
    y, x = np.mgrid[0:side, 0:side] / max(1, side - 1)
    base = rng.uniform(0, 255, (count, 1, 1, 3))
    gx = rng.uniform(-120, 120, (count, 1, 1, 3))
    gy = rng.uniform(-120, 120, (count, 1, 1, 3))
    images = base + gx * x[None, :, :, None] + gy * y[None, :, :, None]
    images += rng.normal(0, noise, images.shape)
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def pixel_distance(cells: np.ndarray, tiles: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """The objective by brute force: each cell upscaled by pixel replication vs its tile."""
    factor = TILE // CELL
    upscaled = cells.repeat(factor, axis=1).repeat(factor, axis=2).astype(np.int64)
    difference = upscaled - tiles[chosen].astype(np.int64)
    return (difference * difference).reshape(len(cells), -1).sum(axis=1)


@pytest.fixture(scope="module")
def easy_data() -> tuple[np.ndarray, np.ndarray, TileFeatures, MatchResult]:
    """Tiles that are noisy upscaled copies of the cells, plus distractors.

    Returns the cells, the tiles, their features and the exact result.
    """
    rng = np.random.default_rng(3)
    cells = smooth_images(rng, 200, CELL)
    copies = cells.repeat(TILE // CELL, axis=1).repeat(TILE // CELL, axis=2).astype(np.int16)
    copies = copies + rng.integers(-8, 9, copies.shape)
    tiles = np.concatenate([
        np.clip(copies, 0, 255).astype(np.uint8),
        smooth_images(rng, 1800, TILE),
    ])
    tiles = tiles[rng.permutation(len(tiles))]
    geometry = Geometry(CELL, TILE)
    features = compute_features(tiles, geometry)
    return cells, tiles, features, match_exact(cells, tiles, geometry, features)


def without_faiss(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the FAISS import fail, as on a machine without the optional extra."""
    monkeypatch.setattr(approximate, "_load_faiss", lambda: None)


def use_backend(backend: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """``numpy``: no FAISS; ``faiss-lists``, ``faiss-graph``: FAISS and that structure.

    Returns the keyword that picks the structure (skipped where FAISS is not installed).
    """
    if backend == "numpy":
        without_faiss(monkeypatch)
        return {}
    pytest.importorskip("faiss")
    return {"structure": backend.removeprefix("faiss-")}


BACKENDS = ["numpy", "faiss-lists", "faiss-graph"]
#: The function that builds each backend's index.
BUILDERS = {"numpy": "_build_numpy", "faiss-lists": "_build_faiss", "faiss-graph": "_build_graph"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_easy_data_valid_exact_distances_and_optimum(easy_data, backend, monkeypatch):
    structure = use_backend(backend, monkeypatch)
    cells, tiles, features, exact = easy_data
    geometry = Geometry(CELL, TILE)
    result = match_approximate(cells, tiles, geometry, features, **structure)
    assert result.tile.dtype == np.int64 and result.tile.shape == (len(cells),)
    assert ((result.tile >= 0) & (result.tile < len(tiles))).all()
    # Every reported distance is the exact objective of the reported tile.
    assert np.array_equal(result.distance, pixel_distance(cells, tiles, result.tile))
    assert (result.distance >= exact.distance).all()
    assert np.mean(result.distance == exact.distance) >= 0.99
    assert np.mean(result.tile == exact.tile) >= 0.99


def test_random_data_distances_are_exact(monkeypatch):
    # Unstructured data, small lists and few probes: results may be far from
    # optimal, but must still be valid tiles with their exact distances.
    without_faiss(monkeypatch)
    rng = np.random.default_rng(5)
    tiles = rng.integers(0, 256, (500, TILE, TILE, 3), dtype=np.uint8)
    cells = rng.integers(0, 256, (50, CELL, CELL, 3), dtype=np.uint8)
    geometry = Geometry(CELL, TILE)
    result = match_approximate(cells, tiles, geometry, nprobe=1, nlist=40, candidates=3)
    assert ((result.tile >= 0) & (result.tile < len(tiles))).all()
    assert np.array_equal(result.distance, pixel_distance(cells, tiles, result.tile))


def test_scanning_every_list_is_exact(easy_data, monkeypatch):
    # Probing all lists with enough candidates leaves only the bound's
    # ranking between the scan and the exact re-rank: the result is exact.
    without_faiss(monkeypatch)
    cells, tiles, features, exact = easy_data
    geometry = Geometry(CELL, TILE)
    result = match_approximate(cells, tiles, geometry, features, nlist=16, nprobe=16,
                               candidates=200)
    assert np.array_equal(result.tile, exact.tile)
    assert np.array_equal(result.distance, exact.distance)


def test_a_graph_walked_deep_enough_is_exact(easy_data, tmp_path):
    # Keeping as many candidates as there are tiles, the walk reaches every tile of the
    # (connected) graph: only the re-rank is left, which is exact.
    pytest.importorskip("faiss")
    cells, tiles, features, exact = easy_data
    geometry = Geometry(CELL, TILE)
    result = match_approximate(cells, tiles, geometry, features, candidates=len(tiles),
                               structure="graph", cache_dir=tmp_path)
    assert np.array_equal(result.tile, exact.tile)
    assert np.array_equal(result.distance, exact.distance)
    # FAISS is used by default, and then the graph.
    default = match_approximate(cells, tiles, geometry, features, cache_dir=tmp_path)
    assert [path.name[:5] for path in tmp_path.iterdir()] == ["hnsw-"]
    assert np.mean(default.tile == exact.tile) >= 0.99
    # The lists' own settings ask for the lists, with FAISS too.
    match_approximate(cells, tiles, geometry, features, cache_dir=tmp_path, nprobe=4)
    assert sorted(path.name[:5] for path in tmp_path.iterdir()) == ["hnsw-", "ivf-v"]


def test_structures_are_checked():
    geometry = Geometry(CELL, TILE)
    cells = np.zeros((2, CELL, CELL, 3), np.uint8)
    tiles = np.zeros((20, TILE, TILE, 3), np.uint8)
    with pytest.raises(ValueError, match="structure"):
        match_approximate(cells, tiles, geometry, structure="tree")
    # Before any work, even with no cells to match.
    with pytest.raises(ValueError, match="structure"):
        match_approximate(cells[:0], tiles, geometry, structure="tree")
    # The graph needs FAISS.
    with pytest.raises(ImportError):
        match_approximate(cells, tiles, geometry, use_faiss=False, structure="graph")


def test_non_multiple_geometry(monkeypatch):
    # tile_px not a multiple of cell_px: cells are resampled, no block sums.
    without_faiss(monkeypatch)
    rng = np.random.default_rng(9)
    geometry = Geometry(6, 10)
    tiles = smooth_images(rng, 400, 10)
    cells = geometry.cell_vectors(smooth_images(rng, 40, 6))
    result = match_approximate(cells, tiles, geometry)
    difference = cells.astype(np.int64) - tiles[result.tile].astype(np.int64)
    assert np.array_equal(result.distance, (difference**2).reshape(len(cells), -1).sum(axis=1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_index_is_cached_and_reused(easy_data, backend, tmp_path, monkeypatch):
    structure = use_backend(backend, monkeypatch)
    cells, tiles, features, exact = easy_data
    geometry = Geometry(CELL, TILE)
    first = match_approximate(cells, tiles, geometry, features, cache_dir=tmp_path, **structure)
    entries = [path for path in tmp_path.iterdir() if not path.name.startswith(".")]
    assert len(entries) == 1
    assert not [path for path in tmp_path.iterdir() if path.name.endswith(".part")]
    # Not written again (a write renames a new file into place); a read stamps the time.
    stamp = entries[0].stat().st_ino

    builds = []
    name = BUILDERS[backend]
    original = getattr(approximate, name)

    def build(*args):
        # Builds run in the caller's thread (an interrupt stops them); only
        # the reading of a cached index goes to another.
        assert threading.current_thread() is threading.main_thread()
        builds.append(1)
        return original(*args)

    monkeypatch.setattr(approximate, name, build)
    second = match_approximate(cells, tiles, geometry, features, cache_dir=tmp_path, **structure)
    assert builds == []
    assert entries[0].stat().st_ino == stamp
    assert np.array_equal(first.tile, second.tile)
    assert np.array_equal(first.distance, second.distance)

    # Other parameters make another entry; a damaged entry is rebuilt.
    match_approximate(cells, tiles, geometry, features, cache_dir=tmp_path, dimensions=8,
                      **structure)
    assert builds == [1]
    entries[0].write_bytes(b"damaged")
    third = match_approximate(cells, tiles, geometry, features, cache_dir=tmp_path, **structure)
    assert builds == [1, 1]
    assert np.array_equal(first.distance, third.distance)
    # Cut short (a graph is mapped from its file, not read whole): rebuilt, not a crash.
    whole = entries[0].read_bytes()
    entries[0].write_bytes(whole[:len(whole) // 2])
    fourth = match_approximate(cells, tiles, geometry, features, cache_dir=tmp_path, **structure)
    assert builds == [1, 1, 1]
    assert np.array_equal(first.distance, fourth.distance)
    assert entries[0].read_bytes() == whole


def test_a_graph_that_cannot_be_mapped_is_read_not_rebuilt(easy_data, tmp_path, monkeypatch):
    faiss = pytest.importorskip("faiss")
    if not getattr(faiss, "IO_FLAG_MMAP_IFC", 0):
        pytest.skip("this FAISS reads graphs whole anyway")
    cells, tiles, features, _ = easy_data
    geometry = Geometry(CELL, TILE)
    first = match_approximate(cells, tiles, geometry, features, cache_dir=tmp_path,
                              structure="graph")
    read = faiss.read_index
    flags_seen = []

    def unmappable(path, flags=0):
        flags_seen.append(flags)
        if flags:
            raise RuntimeError("mmap failed")
        return read(path)

    monkeypatch.setattr(faiss, "read_index", unmappable)
    monkeypatch.setattr(approximate, "_build_graph", lambda *args: pytest.fail("rebuilt"))
    second = match_approximate(cells, tiles, geometry, features, cache_dir=tmp_path,
                               structure="graph")
    assert flags_seen == [faiss.IO_FLAG_MMAP_IFC, 0]
    assert np.array_equal(first.tile, second.tile)


def test_empty_cells():
    geometry = Geometry(CELL, TILE)
    tiles = np.zeros((20, TILE, TILE, 3), np.uint8)
    result = match_approximate(np.zeros((0, CELL, CELL, 3), np.uint8), tiles, geometry)
    assert result.tile.shape == (0,) and result.distance.shape == (0,)


def test_faiss_import_failure_falls_back(monkeypatch):
    # sys.modules[name] = None makes "import faiss" raise ImportError.
    monkeypatch.setitem(sys.modules, "faiss", None)
    assert approximate._load_faiss() is None
    with pytest.raises(ImportError):
        match_approximate(np.zeros((2, CELL, CELL, 3), np.uint8),
                          np.zeros((20, TILE, TILE, 3), np.uint8), Geometry(CELL, TILE),
                          use_faiss=True)


def test_a_faiss_that_cannot_be_imported_costs_only_speed(tmp_path, monkeypatch):
    # A broken install raised AttributeError (or OSError) from "import faiss", which
    # went up as a traceback instead of falling back to NumPy's lists.
    import warnings

    (tmp_path / "faiss").mkdir()
    (tmp_path / "faiss" / "__init__.py").write_text(
        'raise AttributeError("_ARRAY_API not found")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "faiss", raising=False)
    monkeypatch.setattr(approximate, "_faiss_failure", None, raising=False)
    rng = np.random.default_rng(4)
    cells, tiles = smooth_images(rng, 30, CELL), smooth_images(rng, 9, TILE)
    geometry = Geometry(CELL, TILE)
    with pytest.warns(RuntimeWarning, match=r"FAISS is installed but cannot be imported "
                                            r"\(AttributeError: _ARRAY_API not found\)"):
        result = match_approximate(cells, tiles, geometry, cache_dir=tmp_path / "cache")
    assert [entry.suffix for entry in (tmp_path / "cache").iterdir()] == [".npz"]
    exact = match_exact(cells, tiles, geometry)
    assert np.array_equal(result.tile, exact.tile)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        assert approximate._load_faiss() is None


@pytest.mark.parametrize(("cell", "tile"), [((6, 9), (21, 32))])
def test_rectangular_cells_get_true_distances_and_mostly_exact_picks(cell, tile, monkeypatch):
    from test_match import smooth_images as rectangles

    from mosaicist.match import _features

    monkeypatch.setattr(_features, "BOUND_GRID", 8)  # a quick PCA
    (cell_w, cell_h), (tile_w, tile_h) = cell, tile
    rng = np.random.default_rng(tile_w)
    geometry = Geometry(cell_w, tile_w, cell_h, tile_h)
    tiles = rectangles(rng, 800, tile_w, height=tile_h)
    cells = geometry.cell_vectors(rectangles(rng, 80, cell_w, height=cell_h))
    features = compute_features(tiles, geometry)
    found = match_approximate(cells, tiles, geometry, features, use_faiss=False)
    exact = match_exact(cells, tiles, geometry, features)
    factor = geometry.factor
    upscaled = cells.repeat(factor, axis=1).repeat(factor, axis=2).astype(np.int64)
    true = ((upscaled - tiles[found.tile].astype(np.int64)) ** 2).reshape(len(cells), -1).sum(1)
    assert np.array_equal(found.distance, true)
    assert np.all(found.distance >= exact.distance)
    assert np.mean(found.tile == exact.tile) > 0.9


@pytest.mark.parametrize("backend", BACKENDS)
def test_cells_in_small_chunks_give_the_same_result(easy_data, backend, monkeypatch):
    structure = use_backend(backend, monkeypatch)
    cells, tiles, features, _ = easy_data
    geometry = Geometry(CELL, TILE)
    whole = match_approximate(cells, tiles, geometry, features, **structure)
    # Chunks of 7 cells: the last one is partial, every buffer is remade.
    monkeypatch.setattr(approximate, "CELL_CHUNK", 7)
    chunked = match_approximate(cells, tiles, geometry, features, **structure)
    assert np.array_equal(whole.tile, chunked.tile)
    assert np.array_equal(whole.distance, chunked.distance)
    assert (whole.evaluated, whole.bounded) == (chunked.evaluated, chunked.bounded)


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunks_shared_out_among_threads_give_the_one_thread_result(easy_data, backend,
                                                                     monkeypatch):
    structure = use_backend(backend, monkeypatch)
    cells, tiles, features, _ = easy_data
    geometry = Geometry(CELL, TILE)
    monkeypatch.setattr(approximate, "CELL_CHUNK", 9)
    monkeypatch.setenv("MOSAICIST_THREADS", "1")
    alone = match_approximate(cells, tiles, geometry, features, **structure)
    threads = set()
    rerank = approximate._rerank

    def spy(*args, **kwargs):
        threads.add(threading.current_thread().name)
        return rerank(*args, **kwargs)

    monkeypatch.setattr(approximate, "_rerank", spy)
    monkeypatch.setenv("MOSAICIST_THREADS", "3")
    faiss = approximate._load_faiss()
    before = None if faiss is None else faiss.omp_get_max_threads()
    shared = match_approximate(cells, tiles, geometry, features, **structure)
    assert any(name.startswith("mosaicist-match") for name in threads)
    assert np.array_equal(alone.tile, shared.tile)
    assert np.array_equal(alone.distance, shared.distance)
    assert (alone.evaluated, alone.bounded) == (shared.evaluated, shared.bounded)
    if faiss is not None:
        # The workers walk on one core each; the caller's own setting is unchanged.
        assert faiss.omp_get_max_threads() == before


def test_the_graph_walks_cells_from_dark_to_bright_with_the_same_picks(easy_data,
                                                                     monkeypatch):
    pytest.importorskip("faiss")
    cells, tiles, features, _ = easy_data
    geometry = Geometry(CELL, TILE)
    order = approximate._brightness_order(cells)
    brightness = cells.reshape(len(cells), -1).sum(axis=1)
    assert sorted(order.tolist()) == list(range(len(cells)))
    assert (np.diff(brightness[order]) >= 0).all()
    monkeypatch.setattr(approximate, "CELL_CHUNK", 5)
    walked = match_approximate(cells, tiles, geometry, features, structure="graph")
    # The same cells in the grid's own order: each cell's pick is its own.
    monkeypatch.setattr(approximate, "_brightness_order", lambda vectors: np.arange(len(vectors)))
    in_order = match_approximate(cells, tiles, geometry, features, structure="graph")
    assert np.array_equal(walked.tile, in_order.tile)
    assert np.array_equal(walked.distance, in_order.distance)
    assert (walked.evaluated, walked.bounded) == (in_order.evaluated, in_order.bounded)
    # And each is right for its own cell, not its neighbour in the walk.
    assert np.array_equal(walked.distance, pixel_distance(cells, tiles, walked.tile))


def test_candidate_bounds_match_the_bound_rows_and_mark_missing_ones():
    rng = np.random.default_rng(2)
    bound = rng.normal(size=(50, 6)).astype(np.float32)
    cell_rows = rng.normal(size=(9, 6)).astype(np.float32)
    found = rng.integers(-1, 50, (9, 5))
    bounds = approximate._candidate_bounds(bound, found, cell_rows)
    expected = np.einsum("ijk,ik->ij", bound[np.maximum(found, 0)].astype(np.float64), cell_rows)
    present = found >= 0
    assert np.allclose(bounds[present], expected[present], rtol=1e-5, atol=1e-5)
    assert np.isinf(bounds[~present]).all()


def test_rerank_picks_the_exact_optimum_among_candidates_ties_to_lowest_position():
    # Every tile appears twice and each cell's candidates come in twin pairs
    # (in random order, with gaps of -1), so every optimum is a tie.
    rng = np.random.default_rng(4)
    unique = smooth_images(rng, 60, TILE)
    shuffle = rng.permutation(120)
    tiles = np.concatenate([unique, unique])[shuffle]
    cells = smooth_images(rng, 40, CELL)
    geometry = Geometry(CELL, TILE)
    features = compute_features(tiles, geometry)
    cell_rows, cell_norm2, _ = approximate.cell_bound_rows(cells, geometry, features)
    row_of = np.argsort(features.order)
    copies = [row_of[np.flatnonzero(shuffle % 60 == image)] for image in range(60)]
    found = np.full((len(cells), 14), -1)
    for cell in range(len(cells)):
        pairs = np.concatenate([copies[image] for image in rng.choice(60, 6, replace=False)])
        found[cell, rng.choice(14, 12, replace=False)] = rng.permutation(pairs)
    found[0] = -1
    found[0, 3] = 5  # a cell with a single candidate
    distance, tile, evaluated, bounded = approximate._rerank(
        cells, cell_rows, cell_norm2, found, features, features.pooled, geometry)
    assert bounded == int((found >= 0).sum())
    assert len(cells) <= evaluated <= bounded
    for cell in range(len(cells)):
        listed = features.order[found[cell][found[cell] >= 0]]
        true = pixel_distance(np.repeat(cells[cell:cell + 1], len(listed), axis=0), tiles, listed)
        best = true.min()
        assert distance[cell] == best
        assert tile[cell] == listed[true == best].min()


def test_the_search_loads_no_compiler_it_does_not_use():
    # Deciding whether compiled loops could run must not import Numba (0.4 s a process):
    # a re-rank of a few pairs per cell stays on NumPy's path.
    import subprocess
    import sys

    script = (
        "import sys, numpy as np\n"
        "from mosaicist.grid import Geometry\n"
        "from mosaicist.match import match_approximate\n"
        "rng = np.random.default_rng(0)\n"
        "cells = rng.integers(0, 256, (50, 4, 4, 3), dtype=np.uint8)\n"
        "tiles = rng.integers(0, 256, (300, 8, 8, 3), dtype=np.uint8)\n"
        "result = match_approximate(cells, tiles, Geometry(4, 8), use_faiss=False)\n"
        "assert len(result.tile) == 50\n"
        "print('numba' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "False"


def one_tile_changed_in_place(monkeypatch):
    """Tiles, and the same tiles with one changed, whose sampled rows are the same.

    The PCA is fitted on a small sample that leaves the changed tile out, and
    the tile keeps its place among the rows that the cache key once sampled:
    only its own row, and those it passes, differ.
    """
    from mosaicist.match import _features

    monkeypatch.setattr(_features, "PCA_SAMPLE", 64)
    rng = np.random.default_rng(3)
    tiles = smooth_images(rng, 2000, TILE)
    geometry = Geometry(CELL, TILE)
    features = compute_features(tiles, geometry)
    sample = set(np.unique(np.linspace(0, 1999, 64).astype(np.int64)).tolist())
    spread = set(np.unique(np.linspace(0, 1999, 256).astype(np.int64)).tolist())
    rank = np.empty(len(tiles), np.int64)
    rank[features.order] = np.arange(len(tiles))
    for tile in range(len(tiles)):
        if tile in sample or rank[tile] < 1000 or rank[tile] in spread:
            continue
        changed = tiles.copy()
        changed[tile] = np.clip(changed[tile] + rng.integers(-20, 21, changed[tile].shape),
                                0, 255)
        moved = compute_features(changed, geometry)
        new_rank = int(np.flatnonzero(moved.order == tile)[0])
        passed = set(range(min(rank[tile], new_rank), max(rank[tile], new_rank) + 1))
        if new_rank != rank[tile] and not passed & spread:
            return tiles, features, changed, moved
    pytest.fail("no tile to change")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_changed_library_never_reuses_the_index_of_the_old_one(backend, tmp_path,
                                                                   monkeypatch):
    # The key sampled a few rows of the features: a library with one tile changed, whose
    # rows there stayed the same, read the index of its old rows (the changed tile stood
    # where it no longer was, and its neighbours' rows were where it had been).
    structure = use_backend(backend, monkeypatch)
    tiles, features, changed, moved = one_tile_changed_in_place(monkeypatch)
    geometry = Geometry(CELL, TILE)
    cells = geometry.cell_vectors(smooth_images(np.random.default_rng(4), 300, CELL))
    match_approximate(cells, tiles, geometry, features, cache_dir=tmp_path, **structure)
    fresh = match_approximate(cells, changed, geometry, moved, **structure)
    builds = []
    name = BUILDERS[backend]
    original = getattr(approximate, name)

    def build(*args):
        builds.append(1)
        return original(*args)

    monkeypatch.setattr(approximate, name, build)
    cached = match_approximate(cells, changed, geometry, moved, cache_dir=tmp_path,
                               **structure)
    assert builds == [1]
    if backend != "faiss-graph":  # a rebuilt graph may differ in a few picks (see the module)
        assert np.array_equal(cached.tile, fresh.tile)
    # The library's generation names the index too: the same features at another
    # generation (a library changed and changed back) make another.
    match_approximate(cells, changed, geometry, moved, cache_dir=tmp_path, generation=7,
                      **structure)
    assert builds == [1, 1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_writing_a_generations_index_removes_the_older_generations(easy_data, backend,
                                                                   tmp_path, monkeypatch):
    structure = use_backend(backend, monkeypatch)
    cells, tiles, features, exact = easy_data
    geometry = Geometry(CELL, TILE)
    (tmp_path / "v6-seed-none-g2-n2000-side16-f2-s1-d256").mkdir()  # the features' own
    legacy = tmp_path / "ivf-v1-numpy-n2000-l179-p32-t24-i10-0123456789abcdef.npz"
    legacy.write_bytes(b"an index named before the generations")
    older = match_approximate(cells, tiles, geometry, features, cache_dir=tmp_path,
                              generation=2, **structure)
    other = match_approximate(cells, tiles, geometry, features, cache_dir=tmp_path,
                              generation=2, dimensions=8, **structure)
    indexes = sorted(path.name for path in tmp_path.iterdir() if path.name[:4] in ("ivf-", "hnsw"))
    assert len(indexes) == 2 and all("-g2-" in name for name in indexes)
    newer = match_approximate(cells, tiles, geometry, features, cache_dir=tmp_path,
                              generation=3, **structure)
    left = sorted(path.name for path in tmp_path.iterdir())
    assert len(left) == 2 and "v6-seed-none-g2-n2000-side16-f2-s1-d256" in left
    assert [name for name in left if name.startswith(("ivf-", "hnsw-"))][0].count("-g3-") == 1
    # Still the index's results: valid, exact distances, near the exact search's.
    for result in (older, other, newer):
        assert np.array_equal(result.distance, pixel_distance(cells, tiles, result.tile))
        assert np.mean(result.tile == exact.tile) >= 0.99
    if backend != "faiss-graph":
        assert np.array_equal(older.tile, newer.tile)


def test_the_matcher_names_the_index_by_the_librarys_generation(easy_data, tmp_path,
                                                                 monkeypatch):
    from types import SimpleNamespace

    without_faiss(monkeypatch)
    cells, tiles, features, exact = easy_data
    library = SimpleNamespace(generation=5, features_dir=tmp_path)
    request = SimpleNamespace(cell_vectors=cells, candidates=tiles,
                              geometry=Geometry(CELL, TILE), features=features,
                              show_progress=False, library=library)
    result = approximate.ApproximateMatcher().match(request)
    assert [path.name.split("-")[2] for path in tmp_path.iterdir()] == ["g5"]
    assert np.mean(result.tile == exact.tile) >= 0.99


@pytest.mark.parametrize("backend", ["numpy", "faiss-lists"])
def test_a_library_of_repeated_tiles_gives_every_cell_a_tile(backend, monkeypatch):
    # Repeated tiles made repeated k-means centres: all of a photo's copies went to the
    # first of its centres, and a cell whose probes met only the others (empty lists)
    # had no candidate at all and was given no tile (position 2**63 - 1).
    structure = use_backend(backend, monkeypatch)
    rng = np.random.default_rng(7)
    photos = rng.integers(0, 256, (2, TILE, TILE, 3), dtype=np.uint8)
    tiles = photos[rng.integers(0, 2, 200)]
    cells = rng.integers(0, 256, (30, CELL, CELL, 3), dtype=np.uint8)
    geometry = Geometry(CELL, TILE)
    exact = match_exact(cells, tiles, geometry)
    for nlist, nprobe in [(16, 1), (16, 2), (25, 3)]:
        result = match_approximate(cells, tiles, geometry, nlist=nlist, nprobe=nprobe,
                                   candidates=2, **structure)
        assert ((result.tile >= 0) & (result.tile < len(tiles))).all()
        assert np.array_equal(result.distance, pixel_distance(cells, tiles, result.tile))
    # Probing as many lists as there are distinct photos, and keeping every tile of
    # them, reaches every tile: the result is exact (ties to the first copy).
    result = match_approximate(cells, tiles, geometry, nlist=16, nprobe=2,
                               candidates=len(tiles), **structure)
    assert np.array_equal(result.tile, exact.tile)
    assert np.array_equal(result.distance, exact.distance)


@pytest.mark.parametrize("name", ["candidates", "nprobe", "nlist", "dimensions"])
@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_counts_below_one_or_not_whole_are_refused_by_name(name, value):
    # 0 was taken as the default and -3 as 1, silently; 2.5 failed deep in NumPy or FAISS.
    geometry = Geometry(CELL, TILE)
    cells = np.zeros((2, CELL, CELL, 3), np.uint8)
    tiles = np.zeros((20, TILE, TILE, 3), np.uint8)
    with pytest.raises(ValueError, match=rf"^{name} must be a whole number of at least 1"):
        match_approximate(cells, tiles, geometry, use_faiss=False, **{name: value})


def test_counts_above_what_there_is_are_clamped(monkeypatch):
    without_faiss(monkeypatch)
    rng = np.random.default_rng(2)
    tiles = rng.integers(0, 256, (40, TILE, TILE, 3), dtype=np.uint8)
    cells = rng.integers(0, 256, (5, CELL, CELL, 3), dtype=np.uint8)
    geometry = Geometry(CELL, TILE)
    huge = 10**9
    result = match_approximate(cells, tiles, geometry, candidates=huge, nprobe=huge,
                               nlist=huge, dimensions=np.int64(huge))
    # Every list probed and every tile a candidate: exact.
    exact = match_exact(cells, tiles, geometry)
    assert np.array_equal(result.tile, exact.tile)
    assert np.array_equal(result.distance, exact.distance)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_entry_holding_an_index_of_other_dimensions_is_rebuilt(easy_data, backend,
                                                                  tmp_path, monkeypatch):
    # An index of the right tile count but another point width (here one built with
    # dimensions=8, put under the default's name) was read, and the search failed on it.
    structure = use_backend(backend, monkeypatch)
    cells, tiles, features, _ = easy_data
    geometry = Geometry(CELL, TILE)
    first = match_approximate(cells, tiles, geometry, features, cache_dir=tmp_path / "a",
                              **structure)
    match_approximate(cells, tiles, geometry, features, cache_dir=tmp_path / "b",
                      dimensions=8, **structure)
    [entry] = (tmp_path / "a").iterdir()
    [other] = (tmp_path / "b").iterdir()
    whole = entry.read_bytes()
    entry.write_bytes(other.read_bytes())
    again = match_approximate(cells, tiles, geometry, features, cache_dir=tmp_path / "a",
                              **structure)
    assert np.array_equal(again.distance, pixel_distance(cells, tiles, again.tile))
    if backend != "faiss-graph":  # a rebuilt graph may differ in a few picks
        assert np.array_equal(again.tile, first.tile)
        assert entry.read_bytes() == whole


def test_a_numpy_entry_with_rows_out_of_range_is_rebuilt(easy_data, tmp_path, monkeypatch):
    without_faiss(monkeypatch)
    cells, tiles, features, _ = easy_data
    geometry = Geometry(CELL, TILE)
    first = match_approximate(cells, tiles, geometry, features, cache_dir=tmp_path)
    [entry] = tmp_path.iterdir()
    with np.load(entry) as stored:
        parts = dict(stored)
    parts["rows"] = parts["rows"] + len(tiles)
    with open(entry, "wb") as handle:
        np.savez(handle, **parts)
    again = match_approximate(cells, tiles, geometry, features, cache_dir=tmp_path)
    assert np.array_equal(again.tile, first.tile)
    assert np.array_equal(again.distance, first.distance)


def test_a_numpy_entry_whose_array_header_is_damaged_is_rebuilt(easy_data, tmp_path,
                                                                monkeypatch):
    # NumPy read the damaged header (an unclosed bracket) before the archive's checksum,
    # and its tokenizer's TokenError went up to the caller as a traceback.
    import struct
    import zipfile

    without_faiss(monkeypatch)
    cells, tiles, features, _ = easy_data
    geometry = Geometry(CELL, TILE)
    first = match_approximate(cells, tiles, geometry, features, cache_dir=tmp_path)
    [entry] = tmp_path.iterdir()
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': ((3, 33), }"
    header = header.ljust(64 - 10 - 1) + b"\n"
    with zipfile.ZipFile(entry, "w") as archive:
        archive.writestr("centroids.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header))
                         + header)
    again = match_approximate(cells, tiles, geometry, features, cache_dir=tmp_path)
    assert np.array_equal(again.tile, first.tile)
    assert np.array_equal(again.distance, first.distance)
    with np.load(entry) as stored:  # rebuilt in its place
        assert set(stored) == {"centroids", "rows", "offsets"}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_a_pipe_under_the_entrys_name_costs_only_the_cache(easy_data, tmp_path, monkeypatch):
    # The write refused the pipe as an "output" that is not a regular file, and the
    # run failed on its cache; a folder there was already just not written.
    without_faiss(monkeypatch)
    cells, tiles, features, _ = easy_data
    geometry = Geometry(CELL, TILE)
    first = match_approximate(cells, tiles, geometry, features, cache_dir=tmp_path)
    [entry] = tmp_path.iterdir()
    entry.unlink()
    os.mkfifo(entry)
    again = match_approximate(cells, tiles, geometry, features, cache_dir=tmp_path)
    assert np.array_equal(again.tile, first.tile)
    assert np.array_equal(again.distance, first.distance)


def test_a_faiss_entry_naming_tiles_that_do_not_exist_is_rebuilt(easy_data, tmp_path):
    # The inverted file stores each tile's id: one damaged there was handed to the
    # re-rank, which failed on a tile position past the library's end.
    faiss = pytest.importorskip("faiss")
    cells, tiles, features, _ = easy_data
    geometry = Geometry(CELL, TILE)
    first = match_approximate(cells, tiles, geometry, features, cache_dir=tmp_path,
                              structure="lists")
    [entry] = tmp_path.iterdir()
    index = faiss.read_index(str(entry))
    lists = index.invlists
    for number in range(index.nlist):
        size = lists.list_size(number)
        if size:
            faiss.rev_swig_ptr(lists.get_ids(number), size)[:] += len(tiles)
    faiss.write_index(index, str(entry))
    again = match_approximate(cells, tiles, geometry, features, cache_dir=tmp_path,
                              structure="lists")
    assert np.array_equal(again.tile, first.tile)
    assert np.array_equal(again.distance, first.distance)


def test_an_entry_too_large_to_read_is_rebuilt(easy_data, tmp_path, monkeypatch):
    # A size field damaged into a huge one makes FAISS's read fail to allocate
    # (std::bad_alloc, a MemoryError), which went up to the caller.
    faiss = pytest.importorskip("faiss")
    cells, tiles, features, _ = easy_data
    geometry = Geometry(CELL, TILE)
    first = match_approximate(cells, tiles, geometry, features, cache_dir=tmp_path,
                              structure="lists")

    def unreadable(*args):
        raise MemoryError("std::bad_alloc")

    monkeypatch.setattr(faiss, "read_index", unreadable)
    again = match_approximate(cells, tiles, geometry, features, cache_dir=tmp_path,
                              structure="lists")
    assert np.array_equal(again.tile, first.tile)
    assert np.array_equal(again.distance, first.distance)


# `mosaicist ARGS` whose approximate search goes slowly, a chunk of 16 cells per thread:
# argv[1] is touched once the threads' re-ranks have begun.
SLOW_SEARCH = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from mosaicist.match import _approximate

    ready = Path(sys.argv[1])
    original = _approximate._rerank

    def slow(*arguments):
        ready.touch()
        time.sleep(0.2)
        return original(*arguments)

    _approximate._rerank = slow
    _approximate.CELL_CHUNK = 16
    sys.argv = ["mosaicist", *sys.argv[2:]]
    from mosaicist.__main__ import run
    run()
""")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="POSIX signals, /proc")
def test_an_interrupt_during_the_threaded_search_is_one_line_and_ends_every_thread(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(5)
    np.save(tmp_path / "tiles.npy", smooth_images(rng, 300, TILE))
    Image.fromarray(smooth_images(rng, 1, 160)[0]).save(tmp_path / "target.png")
    ready, output = tmp_path / "ready", tmp_path / "mosaic.png"
    run = subprocess.Popen(
        [sys.executable, "-c", SLOW_SEARCH, str(ready), "make", str(tmp_path / "target.png"),
         "--tiles", str(tmp_path / "tiles.npy"), "--cell", "8", "--tile-px", "16",
         "--preset", "seed", "--search", "approximate", "-o", str(output), "-q"],
        env={**os.environ, "MOSAICIST_THREADS": "3"}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        while not ready.exists() and run.poll() is None:
            time.sleep(0.01)
        assert ready.exists(), run.communicate()[1]
        os.kill(run.pid, signal.SIGINT)
        _, stderr = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert (run.returncode, stderr) == (130, "mosaicist: error: interrupted\n")
    assert not output.exists()
    left = [entry for entry in Path("/proc").iterdir()
            if entry.name.isdigit() and _in_group(entry, run.pid)]
    assert not left


def _in_group(process: Path, group: int) -> bool:
    """Whether the live process at ``process`` (a /proc entry) is in process group ``group``."""
    try:
        fields = (process / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # ended meanwhile
        return False
    return fields[0] != "Z" and int(fields[2]) == group


def test_two_threads_needing_the_same_index_build_it_once(easy_data, tmp_path, monkeypatch):
    without_faiss(monkeypatch)
    cells, tiles, features, exact = easy_data
    geometry = Geometry(CELL, TILE)
    builds = count_builds(monkeypatch, approximate, "_build_numpy")
    results = in_threads(2, lambda: match_approximate(cells, tiles, geometry, features,
                                                      cache_dir=tmp_path, generation=0))
    assert builds == [1]
    assert np.array_equal(results[0].tile, results[1].tile)
    assert np.mean(results[0].tile == exact.tile) >= 0.99
    assert len(list(tmp_path.iterdir())) == 1  # the index, and no lock file left


def test_the_approximate_matcher_imports_faiss_while_the_target_decodes():
    # prepare() runs while the main thread would wait for the target's pixels.
    pytest.importorskip("faiss")
    code = textwrap.dedent("""
        import sys
        from mosaicist.match import ApproximateMatcher
        from mosaicist.options import MosaicOptions
        assert "faiss" not in sys.modules
        ApproximateMatcher().prepare(MosaicOptions(search="approximate"))
        assert "faiss" in sys.modules
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
