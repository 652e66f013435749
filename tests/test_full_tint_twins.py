"""At full tint, cells a colour apart are twins: searched once, the same results.

At tint 1 the objective is the distance of cell and tile less their means,
so a cell with a colour added to every pixel (a sky's flat cells of a few
hundred shades) is the same distance from every tile, exactly, in search
units. The searches take such cells as they take identical ones
(:func:`mosaicist.match._exact.alike_under_full_tint`); at any other tint
they are different cells.
"""

import numpy as np
import pytest
from conftest import check_twins_searched_once, noisy_target, smooth_tiles

from mosaicist.grid import Geometry
from mosaicist.match import _exact as exact
from mosaicist.match import compute_features
from mosaicist.match._exact import (
    alike_under_full_tint,
    cell_terms,
    dense_distances,
    full_tint,
)
from mosaicist.pipeline import make_mosaic

_tiles = smooth_tiles


def _exact_alike(vectors: np.ndarray, *terms: np.ndarray) -> np.ndarray:
    """Twins by their pixels alone, as before full tint joined cells a colour apart."""
    flat = exact._rows(vectors)
    return exact.alike_cells(vectors, exact._pixel_rows(vectors).sum(axis=1, dtype=np.int64),
                             np.einsum("ij,ij->i", flat, flat, dtype=np.int64))


def _shifted_cells(rng: np.random.Generator, patterns: np.ndarray, count: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``count`` cells, each a random pattern plus a random colour that keeps it in 0..255,
    and each cell's pattern."""
    which = rng.integers(0, len(patterns), count)
    cells = patterns[which].astype(np.int16)
    low = cells.reshape(count, -1, 3).min(axis=1)
    high = cells.reshape(count, -1, 3).max(axis=1)
    shift = rng.integers(-low, 256 - high)
    return (cells + shift[:, None, None, :]).astype(np.uint8), which


@pytest.fixture
def small_chunks(monkeypatch):
    """Several groups, chunks and sample blocks even on these small inputs."""
    monkeypatch.setattr(exact, "TILE_CHUNK", 64)
    monkeypatch.setattr(exact, "CELL_GROUP", 8)
    monkeypatch.setattr(exact, "SEED_SAMPLE", 16)


def test_full_tint_is_the_hundredth_the_searches_round_to():
    assert full_tint(1.0) and full_tint(0.996)
    assert not full_tint(0.99) and not full_tint(0.0) and not full_tint(0.5)


@pytest.mark.parametrize("tint", [0.0, 0.5, 0.99, 1.0])
def test_cells_a_colour_apart_are_the_same_distance_from_every_tile_only_at_full_tint(tint):
    rng = np.random.default_rng(5)
    geometry = Geometry(4, 8)
    tiles = _tiles(rng, 80, 8)
    features = compute_features(tiles, geometry)
    patterns = rng.integers(60, 200, (3, 4, 4, 3)).astype(np.uint8)
    cells, which = _shifted_cells(rng, patterns, 30)
    vectors = geometry.cell_vectors(cells)
    every = dense_distances(vectors, tiles, geometry, features, tint)
    alone = np.stack([dense_distances(vectors[cell:cell + 1], tiles, geometry, features,
                                      tint)[0] for cell in range(len(cells))])
    np.testing.assert_array_equal(every, alone)  # rows copied only where they are equal
    same_rows = {tuple(every[cell]) for cell in np.flatnonzero(which == 0)}
    assert (len(same_rows) == 1) == (tint == 1.0)


def test_twins_at_full_tint_are_cells_of_the_same_pixels_less_a_colour():
    rng = np.random.default_rng(6)
    geometry = Geometry(4, 8)
    pattern = rng.integers(40, 200, (4, 4, 3)).astype(np.uint8)
    other = pattern[:, ::-1]  # the same values in other places
    cells = np.stack([pattern, pattern + np.uint8(3), other, pattern - np.array([5, 0, 30],
                                                                                np.uint8),
                      other + np.array([0, 1, 0], np.uint8), pattern,
                      np.full((4, 4, 3), 17, np.uint8), np.full((4, 4, 3), 250, np.uint8)])
    vectors = geometry.cell_vectors(cells)
    assert alike_under_full_tint(vectors).tolist() == [0, 0, 2, 0, 2, 0, 6, 6]
    features = compute_features(_tiles(rng, 20, 8), geometry)
    assert cell_terms(vectors, geometry, features, 1.0).alike.tolist() == [0, 0, 2, 0, 2, 0,
                                                                           6, 6]
    # At any other tint only identical pixels are twins.
    for tint in (0.0, 0.5, 0.99):
        assert cell_terms(vectors, geometry, features, tint).alike.tolist() == [
            0, 1, 2, 3, 4, 0, 6, 7]


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize("k", [1, 6])
def test_searches_of_twins_at_full_tint_get_what_their_own_searches_get(k):
    """Searched once, each twin under its own limit and upper: the same tiles, distances
    and cut-offs as searched one by one, and the ranking of every pair."""
    rng = np.random.default_rng(20 + k)
    geometry = Geometry(4, 8)
    tiles = _tiles(rng, 300, 8)
    tiles[201] = tiles[17]  # equal tiles: ties go to the lower position
    features = compute_features(tiles, geometry)
    patterns = _tiles(rng, 5, 4) // 2 + 40
    cells, _ = _shifted_cells(rng, patterns, 70)
    vectors = geometry.cell_vectors(cells)
    # 5 patterns searched, not 70 cells.
    check_twins_searched_once(rng, vectors, tiles, geometry, features, k, 100, fewer=5)


def test_the_default_preset_on_flat_cells_of_many_shades_is_the_same_optimum(tmp_path,
                                                                            monkeypatch):
    """A target of flat cells in many shades beside a photo's: the certified optimum is
    the one the cells' own searches give, in fewer evaluations."""
    from conftest import make_colour_folder

    folder = make_colour_folder(tmp_path / "tiles", 200, size=12, seed=3)
    target = noisy_target().copy()
    height, width = target.shape[:2]
    rng = np.random.default_rng(9)
    # The top half in flat 4 x 4 cells of random shades (a sky of many tones).
    for top in range(0, height // 2 - 3, 4):
        for left in range(0, width - 3, 4):
            target[top:top + 4, left:left + 4] = rng.integers(0, 256, 3)
    twins: list[int] = []
    grouped = exact.alike_under_full_tint

    def spied(vectors, *terms):
        alike = grouped(vectors, *terms)
        twins.append(len(alike) - len(np.unique(alike)))
        return alike

    monkeypatch.setattr(exact, "alike_under_full_tint", spied)
    made = make_mosaic(target, folder, cell_px=4, tile_px=8, max_uses=1, min_spacing=1,
                       cache_dir=tmp_path / "cache")
    assert twins and max(twins) >= 60  # 70 flat cells of other shades: one kind
    monkeypatch.setattr(exact, "alike_under_full_tint", _exact_alike)
    before = make_mosaic(target, folder, cell_px=4, tile_px=8, max_uses=1, min_spacing=1,
                         cache_dir=tmp_path / "cache")
    assert made.options.tint == 1.0
    mine, theirs = made.report()["assignment"], before.report()["assignment"]
    assert mine["certified"] and theirs["certified"]
    assert mine["objective"] == pytest.approx(theirs["objective"], rel=1e-12)


def test_kinds_at_full_tint_join_flat_cells_of_every_shade():
    from mosaicist.match._groups import cell_kinds

    rng = np.random.default_rng(7)
    geometry = Geometry(4, 8)
    shades = rng.integers(0, 256, (5, 3)).astype(np.uint8)
    pattern = rng.integers(40, 200, (4, 4, 3)).astype(np.uint8)
    cells = np.stack([np.broadcast_to(shades[0], (4, 4, 3)), pattern,
                      np.broadcast_to(shades[1], (4, 4, 3)), pattern + np.uint8(20),
                      np.broadcast_to(shades[2], (4, 4, 3)), pattern[::-1]])
    vectors = geometry.cell_vectors(cells)
    kinds = cell_kinds(vectors, full_tint=True)
    assert kinds.kind.tolist() == [0, 1, 0, 1, 0, 2]
    assert kinds.first.tolist() == [0, 1, 5] and kinds.size.tolist() == [3, 2, 1]
    exact_kinds = cell_kinds(vectors)
    assert len(exact_kinds.first) == 6


def test_a_picture_of_flat_cells_in_many_shades_is_one_kind_at_full_tint(tmp_path,
                                                                         monkeypatch):
    """Pixel art, a poster, a chart: flat cells of many colours. At full tint they are all
    the same distance from every tile, and one kind; as kinds of one colour each they
    tied on every tile (256 colours of 7,000 cells from 50,000 photos: stopped after 15
    minutes, 4 s as one kind). The optimum is the same."""
    from conftest import make_colour_folder

    from mosaicist.match import _groups

    folder = make_colour_folder(tmp_path / "tiles", 260, size=12, seed=4)
    rng = np.random.default_rng(11)
    shades = rng.integers(0, 256, (40, 3)).astype(np.uint8)
    small = shades[rng.integers(0, len(shades), (12, 16))]
    target = small.repeat(4, axis=0).repeat(4, axis=1)  # 16 x 12 flat cells of 4 px
    kinds: list[int] = []
    grouped = _groups.alike_under_full_tint

    def spied(vectors, *terms):
        alike = grouped(vectors, *terms)
        kinds.append(len(np.unique(alike)))
        return alike

    monkeypatch.setattr(_groups, "alike_under_full_tint", spied)
    made = make_mosaic(target, folder, cell_px=4, tile_px=8, max_uses=1, min_spacing=1,
                       crop="centre", cache_dir=tmp_path / "cache")
    assert kinds == [1]
    monkeypatch.setattr(_groups, "alike_under_full_tint", _exact_alike)
    by_colour = make_mosaic(target, folder, cell_px=4, tile_px=8, max_uses=1, min_spacing=1,
                            crop="centre", cache_dir=tmp_path / "cache")
    mine, theirs = made.report()["assignment"], by_colour.report()["assignment"]
    assert mine["certified"] and theirs["certified"]
    assert mine["objective"] == pytest.approx(theirs["objective"], rel=1e-12)
    assert len(set(made.placements.tile.tolist())) == 192  # every cell its own photo
