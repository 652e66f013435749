"""Approximate search (session 34): repeated tiles, and the oracle on small hostile cases."""

from __future__ import annotations

import numpy as np
import pytest

from mosaicist.grid import Geometry
from mosaicist.match import _approximate as approximate
from mosaicist.match import brute_force, compute_features, match_approximate, match_exact

CELL, TILE = 4, 8


@pytest.fixture(autouse=True)
def _faiss_on_one_thread():
    """FAISS on one OpenMP thread: on busy shared cores its threads' spinning cost
    ten times these tiny searches."""
    try:
        import faiss
    except ImportError:
        yield
        return
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


def smooth_images(rng: np.random.Generator, count: int, side: int) -> np.ndarray:
    """Random gradients plus a little noise (structured, like photos at this size)."""
    y, x = np.mgrid[0:side, 0:side] / max(1, side - 1)
    base = rng.uniform(0, 255, (count, 1, 1, 3))
    gx = rng.uniform(-120, 120, (count, 1, 1, 3))
    gy = rng.uniform(-120, 120, (count, 1, 1, 3))
    images = base + gx * x[None, :, :, None] + gy * y[None, :, :, None]
    images += rng.normal(0, 6, images.shape)
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def test_the_graph_finds_the_photos_of_a_library_full_of_repeated_tiles():
    # A few flat frames copied hundreds of times (blank pages, black video frames, or
    # the identical mirror images --augment makes of a flat tile) beside the photos:
    # in a graph linking every copy, each copy's links all went to other copies (at
    # distance 0), and walks that reached them never got out: 5 greys of 150 copies
    # among 400 photos left 40-80% of the cells far from their optimum.
    pytest.importorskip("faiss")
    rng = np.random.default_rng(11)
    greys = np.repeat(np.array([0, 60, 120, 180, 250], np.uint8), 150)
    frames = np.broadcast_to(greys[:, None, None, None], (len(greys), TILE, TILE, 3))
    tiles = np.concatenate([frames, smooth_images(rng, 400, TILE)])
    tiles = np.ascontiguousarray(tiles[rng.permutation(len(tiles))])
    cells = smooth_images(rng, 300, CELL)
    geometry = Geometry(CELL, TILE)
    features = compute_features(tiles, geometry)
    exact = match_exact(cells, tiles, geometry, features)
    result = match_approximate(cells, tiles, geometry, features, structure="graph")
    assert np.mean(result.distance == exact.distance) >= 0.99
    assert result.distance.sum() <= exact.distance.sum() * 1.001
    # A cell whose best tile is a grey gets its first copy, as the exact search gives it.
    grey_cells = np.isin(exact.tile, np.flatnonzero(tiles.reshape(len(tiles), -1).std(1) == 0))
    assert np.array_equal(result.tile[grey_cells], exact.tile[grey_cells])


@pytest.fixture(scope="module")
def small_library() -> tuple[np.ndarray, np.ndarray, Geometry]:
    """300 photos, the first 20 each copied again at the end, and 40 cells."""
    rng = np.random.default_rng(5)
    photos = smooth_images(rng, 300, TILE)
    return smooth_images(rng, 40, CELL), np.concatenate([photos, photos[:20]]), Geometry(CELL, TILE)


def test_a_cached_graph_naming_rows_that_do_not_exist_is_rebuilt(small_library, tmp_path):
    faiss = pytest.importorskip("faiss")
    cells, tiles, geometry = small_library
    first = match_approximate(cells, tiles, geometry, cache_dir=tmp_path, structure="graph")
    [entry] = tmp_path.iterdir()
    index = faiss.read_index(str(entry))
    # Copies are linked once: 300 points for 320 tiles.
    assert index.ntotal == 300
    ids = faiss.vector_to_array(index.id_map)
    faiss.copy_array_to_vector(ids + len(tiles), index.id_map)
    faiss.write_index(index, str(entry))
    again = match_approximate(cells, tiles, geometry, cache_dir=tmp_path, structure="graph")
    assert np.array_equal(again.tile, first.tile)
    assert ((again.tile >= 0) & (again.tile < 300)).all()


def test_writing_a_graph_removes_the_graphs_that_linked_every_copy(small_library, tmp_path):
    pytest.importorskip("faiss")
    cells, tiles, geometry = small_library
    # A graph of version 2 (every copy linked) of this very generation is never read
    # again: its key is not made any more.
    retired = tmp_path / "hnsw-v2-g4-faiss-n320-m16-e200-p32-0123456789abcdef.faiss"
    retired.write_bytes(b"a graph linking every copy")
    lists = tmp_path / "ivf-v2-g4-faiss-n320-l40-p32-t24-i10-0123456789abcdef.faiss"
    lists.write_bytes(b"lists of this generation, still read")
    match_approximate(cells, tiles, geometry, cache_dir=tmp_path, structure="graph",
                      generation=4)
    names = sorted(path.name for path in tmp_path.iterdir())
    assert retired.name not in names and lists.name in names
    assert [name[:10] for name in names if name.startswith("hnsw")] == ["hnsw-v3-g4"]


@pytest.mark.parametrize("copies_first", [False, True])
def test_copies_give_the_first_copy_as_the_exact_search_does(small_library, copies_first):
    # The graph links each distinct point once, as its first tile (library order, not
    # the bound rows' order): a cell whose best photo has a copy gets the photo.
    pytest.importorskip("faiss")
    cells, tiles, geometry = small_library
    if copies_first:
        # Copies before their photos too.
        tiles = np.concatenate([tiles[300:], tiles[:300]])
    features = compute_features(tiles, geometry)
    exact = match_exact(cells, tiles, geometry, features)
    result = match_approximate(cells, tiles, geometry, features, structure="graph",
                               candidates=len(tiles))
    assert np.array_equal(result.tile, exact.tile)
    assert np.array_equal(result.distance, exact.distance)


def test_distinct_point_rows_keep_the_lowest_library_position():
    points = np.array([[1, 2], [0, 0], [1, 2], [0, 0], [3, 3]], np.float32)
    order = np.array([4, 0, 2, 3, 1])
    # Rows 0 and 2 share a point (positions 4 and 2), rows 1 and 3 (0 and 3).
    assert approximate._distinct_point_rows(points, order).tolist() == [1, 2, 4]


def _library(rng: np.random.Generator, kind: str, count: int, side: int) -> np.ndarray:
    if kind == "extreme":
        return (rng.integers(0, 2, (count, side, side, 3)) * 255).astype(np.uint8)
    if kind == "equal":
        one = rng.integers(0, 256, (1, side, side, 3), dtype=np.uint8)
        return np.repeat(one, count, axis=0)
    if kind == "flat":
        levels = rng.integers(0, 256, (count, 1, 1, 3), dtype=np.uint8)
        return np.ascontiguousarray(np.broadcast_to(levels, (count, side, side, 3)))
    return rng.integers(0, 256, (count, side, side, 3), dtype=np.uint8)


@pytest.mark.parametrize("structure", ["numpy", "lists", "graph"])
@pytest.mark.parametrize(("cell", "tile"), [(1, 1), (3, 7), (2, 6)])
@pytest.mark.parametrize("kind", ["random", "extreme", "equal", "flat"])
def test_small_hostile_libraries_against_the_brute_force(monkeypatch, structure, cell, tile,
                                                         kind):
    # Libraries of 1, 2, 7, 8 (the least for two lists) and 9 tiles; cells in chunks of
    # 16, so that 33 cells make three.
    if structure == "numpy":
        monkeypatch.setattr(approximate, "_load_faiss", lambda: None)
        structure = "lists"
    else:
        pytest.importorskip("faiss")
    monkeypatch.setattr(approximate, "CELL_CHUNK", 16)
    rng = np.random.default_rng(cell * 100 + tile)
    geometry = Geometry(cell, tile)
    for tile_count in (1, 2, 7, 8, 9):
        tiles = _library(rng, kind, tile_count, tile)
        cells = _library(rng, "random", 33, cell)
        cells[0], cells[1] = 0, 255
        vectors = geometry.cell_vectors(cells)
        reference = brute_force(cells, tiles, tile)
        result = match_approximate(vectors, tiles, geometry, structure=structure)
        assert ((result.tile >= 0) & (result.tile < tile_count)).all()
        assert (result.distance >= reference.distance).all()
        # Every tile a candidate and every list probed: the brute force's picks, ties to
        # the lowest position.
        every = match_approximate(vectors, tiles, geometry, structure=structure,
                                  candidates=tile_count,
                                  **({"nprobe": tile_count} if structure == "lists" else {}))
        assert np.array_equal(every.tile, reference.tile)
        assert np.array_equal(every.distance, reference.distance)
