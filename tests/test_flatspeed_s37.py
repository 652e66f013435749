"""Identical cells are searched once (session 37: flat targets were slow).

On a flat target every cell is identical, and the assignment's pricing
rounds searched each of them again and again (a flat colour of 5,504 cells
from 3,000 photos spent 414 s in 32 rounds). :func:`match_exact` now
searches each distinct cell once and gives its twins the result, each
under its own limit: the results must stay exactly those of searching
every cell.
"""

import numpy as np
import pytest
from conftest import check_twins_searched_once, smooth_tiles

from mosaicist.grid import Geometry
from mosaicist.match import _exact as exact
from mosaicist.match import compute_features, match_exact
from mosaicist.match._exact import alike_cells, cell_terms, dense_distances

_tiles = smooth_tiles


@pytest.fixture
def small_chunks(monkeypatch):
    """Several groups, chunks and sample blocks even on these small inputs."""
    monkeypatch.setattr(exact, "TILE_CHUNK", 64)
    monkeypatch.setattr(exact, "CELL_GROUP", 8)
    monkeypatch.setattr(exact, "SEED_SAMPLE", 16)


def _searched_one_by_one(vectors, tiles, geometry, features, **options):
    """``match_exact`` as before: the cells' terms without their twins (each cell searched)."""
    terms = cell_terms(vectors, geometry, features)
    alone = exact.CellTerms(terms.bound_rows, terms.norm2, terms.flat, terms.sums,
                            terms.tail_norm)
    return match_exact(vectors, tiles, geometry, features, cell_terms=alone, **options)


def test_a_flat_grid_is_searched_as_one_cell(small_chunks):
    """400 identical cells cost the pairs of one: the evaluations were 400 times as many."""
    rng = np.random.default_rng(3)
    geometry = Geometry(4, 8)
    tiles = _tiles(rng, 300, 8)
    features = compute_features(tiles, geometry)
    flat = np.broadcast_to(np.array([199, 238, 41], np.uint8), (400, 4, 4, 3)).copy()
    vectors = geometry.cell_vectors(flat)
    one = match_exact(vectors[:1], tiles, geometry, features, k=6, tint=1.0)
    grid = match_exact(vectors, tiles, geometry, features, k=6, tint=1.0)
    assert grid.evaluated == one.evaluated
    assert (grid.candidates == one.candidates[0]).all()
    assert (grid.candidate_distances == one.candidate_distances[0]).all()
    assert (grid.tile == one.tile[0]).all()


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize(("k", "hundredths"), [(1, 0), (5, 0), (5, 100), (12, 50)])
def test_twins_with_their_own_limits_get_what_their_own_searches_get(k, hundredths):
    """Twins searched once, each with its own limit and upper, as when searched one by one:
    the same tiles, distances and cut-offs, also against every pair's distance."""
    rng = np.random.default_rng(10 + k + hundredths)
    geometry = Geometry(4, 8)
    tiles = _tiles(rng, 400, 8)
    tiles[333] = tiles[21]  # equal tiles: ties go to the lower position
    features = compute_features(tiles, geometry)
    distinct = _tiles(rng, 12, 4)
    distinct[5] = distinct[4][::-1]  # the same sums and norm, other pixels
    cells = distinct[rng.integers(0, len(distinct), 90)]
    vectors = geometry.cell_vectors(cells)
    check_twins_searched_once(rng, vectors, tiles, geometry, features, k, hundredths)


def test_cells_are_alike_only_when_every_pixel_is():
    """Twins by their pixels, the first as their mark; equal sums and norms are not enough."""
    rng = np.random.default_rng(4)
    geometry = Geometry(4, 8)
    distinct = rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    mirrored = distinct[0][:, ::-1]  # same channel sums and squared norm as cell 0
    cells = np.stack([distinct[0], mirrored, distinct[1], distinct[0], mirrored, distinct[2],
                      distinct[1]])
    vectors = geometry.cell_vectors(cells)
    terms = cell_terms(vectors, geometry, compute_features(_tiles(rng, 20, 8), geometry))
    assert terms.alike is not None
    assert terms.alike.tolist() == [0, 1, 2, 0, 1, 5, 2]
    assert terms.take(np.array([6, 3, 1])).alike.tolist() == [2, 0, 1]
    assert alike_cells(vectors[:1], terms.sums[:1], terms.norm2[:1]).tolist() == [0]


@pytest.mark.parametrize("hundredths", [0, 100])
def test_every_distance_of_twins_is_computed_once_and_copied(hundredths, monkeypatch):
    """``dense_distances`` of a grid with twins: the rows of its distinct cells, copied."""
    rng = np.random.default_rng(8)
    geometry = Geometry(4, 8)
    tiles = _tiles(rng, 50, 8)
    features = compute_features(tiles, geometry)
    distinct = _tiles(rng, 3, 4)
    cells = distinct[[0, 1, 0, 2, 2, 0]]
    vectors = geometry.cell_vectors(cells)
    one_by_one = np.stack([dense_distances(vectors[cell:cell + 1], tiles, geometry, features,
                                           hundredths / 100)[0] for cell in range(6)])
    computed: list[int] = []
    squared = exact._squared_differences
    monkeypatch.setattr(exact, "tint_correction", lambda *args: False)
    monkeypatch.setattr(exact, "_squared_differences",
                        lambda cells, tiles: computed.append(len(cells)) or squared(cells, tiles))
    every = dense_distances(vectors, tiles, geometry, features, hundredths / 100)
    np.testing.assert_array_equal(every, one_by_one)
    assert computed == ([3] if hundredths else [])


def test_cells_without_twins_taken_in_any_order_keep_their_own_results():
    """Distinct cells taken out of order (as the pricing rounds take them) are not moved:
    their results were once put in the order of their first positions."""
    rng = np.random.default_rng(12)
    geometry = Geometry(4, 8)
    tiles = _tiles(rng, 60, 8)
    features = compute_features(tiles, geometry)
    vectors = geometry.cell_vectors(_tiles(rng, 8, 4))
    terms = cell_terms(vectors, geometry, features)
    order = np.array([5, 0, 7, 2, 6, 1])
    taken = match_exact(vectors[order], tiles, geometry, features, k=3,
                        cell_terms=terms.take(order))
    each = match_exact(vectors, tiles, geometry, features, k=3)
    np.testing.assert_array_equal(taken.candidates, each.candidates[order])
    np.testing.assert_array_equal(taken.tile, each.tile[order])
