"""Exactness of the matcher against a brute-force integer reference."""

import numpy as np
import pytest

from mosaicist.grid import Geometry
from mosaicist.match import _exact as match
from mosaicist.match import (
    brute_force,
    cached_features,
    compute_features,
    exact_distances,
    match_exact,
)


def smooth_images(rng, count, side, noise=6):
    """Natural-ish images: random gradients plus a little noise, so bounds prune."""
    y, x = np.mgrid[0:side, 0:side] / max(1, side - 1)
    base = rng.uniform(0, 255, (count, 1, 1, 3))
    gx = rng.uniform(-120, 120, (count, 1, 1, 3))
    gy = rng.uniform(-120, 120, (count, 1, 1, 3))
    images = base + gx * x[None, :, :, None] + gy * y[None, :, :, None]
    images += rng.normal(0, noise, images.shape)
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


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
                                                                    monkeypatch):
    # Past the budget the cells stay uint8 (memory bounded on huge grids).
    monkeypatch.setattr(match, "CONVERTED_CELLS_BYTES", converted_bytes)
    monkeypatch.setattr(match, "CELL_GROUP", 32)
    rng = np.random.default_rng(8)
    tiles = smooth_images(rng, 600, 16)
    cells = smooth_images(rng, 120, 8, noise=10)
    geometry = Geometry(8, 16)
    search = match._ExactSearch(geometry.cell_vectors(cells), tiles, geometry,
                                compute_features(tiles, geometry), 1, 0)
    assert search.cell_flat.dtype == (np.uint8 if converted_bytes == 0 else np.int32)
    result = match_exact(geometry.cell_vectors(cells), tiles, geometry, k=3)
    upscaled = geometry.cell_vectors(cells).repeat(2, axis=1).repeat(2, axis=2)
    flat = tiles.reshape(len(tiles), -1).astype(np.int64)
    for index, cell in enumerate(upscaled.reshape(len(cells), -1).astype(np.int64)):
        distances = ((flat - cell) ** 2).sum(axis=1)
        expected = np.lexsort((np.arange(len(tiles)), distances))[:3]
        assert result.candidates[index].tolist() == expected.tolist()
        assert result.candidate_distances[index].tolist() == distances[expected].tolist()


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
    # Another generation is another entry.
    cached_features(tiles, geometry, tmp_path, generation=1)
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 2


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
    upscaled = geometry.cell_vectors(cells).repeat(2, axis=1).repeat(2, axis=2)
    flat = tiles.reshape(len(tiles), -1).astype(np.int64)
    for index, cell in enumerate(upscaled.reshape(len(cells), -1).astype(np.int64)):
        distances = ((flat - cell) ** 2).sum(axis=1)
        expected = np.lexsort((np.arange(len(tiles)), distances))[:k]
        assert result.candidates[index].tolist() == expected.tolist()
        assert result.candidate_distances[index].tolist() == distances[expected].tolist()
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
    geometry = Geometry(cells.shape[1], tile_px)
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
