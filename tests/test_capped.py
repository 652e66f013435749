"""The capped assignment's routes (``mosaicist.match._capped``) against each other."""

from dataclasses import replace

import numpy as np
import pytest
from conftest import noisy_target
from test_pipeline import smooth_folder

from mosaicist import make_mosaic
from mosaicist.match import MatchRequest, _capped


@pytest.mark.parametrize("augment, tint, minimum", [("none", 0.0, 1), ("flips", 0.4, 1),
                                                    ("none", 0.3, 2)])
def test_minimum_lists_in_blocks_of_tiles_equal_the_whole_matrixs(tmp_path, monkeypatch,
                                                                  augment, tint, minimum):
    """Past the distances kept whole, each tile's nearest cells come a block at a time.

    Before, such grids listed each cell's nearest tiles alone, and the library came
    into the lists by the pricing rounds (5,000 photos on 10,672 cells: 25 rounds).
    """
    target = noisy_target()
    folder = smooth_folder(tmp_path / "tiles", count=14, seed=3)
    mosaic = make_mosaic(target, folder, cell_px=8, tile_px=16, augment=augment,
                         cache_dir=tmp_path / "c")
    options = replace(mosaic.options, max_uses=4, min_spacing=1, min_uses=minimum, tint=tint)
    request = MatchRequest(mosaic.grid, mosaic.library, options)
    monkeypatch.setattr(_capped, "AUCTION_TILES", 0)
    monkeypatch.setattr(_capped, "DENSE_TILES", 0)
    monkeypatch.setattr(_capped, "FIRST_CANDIDATES", 2)
    monkeypatch.setattr(_capped, "FULL_FIRST_CANDIDATES", 2)
    whole = _capped.assign_with_minimum(request, _capped.LibrarySearch(request))
    seen = []
    original = _capped.LibrarySearch.tile_blocks

    def blocks(self, pairs=_capped.BLOCK_PAIRS):
        # Blocks of 3 tiles: several blocks, the last one short.
        for block in original(self, 3 * len(request.cell_vectors) * request.variants):
            seen.append(len(block[0]))
            yield block

    monkeypatch.setattr(_capped.LibrarySearch, "tile_blocks", blocks)
    monkeypatch.setattr(_capped, "MINIMUM_PAIRS", 0)
    search = _capped.LibrarySearch(request)
    blocked = _capped.assign_with_minimum(request, search)
    assert seen == [3, 3, 3, 3, 2]
    assert whole.certified and blocked.certified
    assert blocked.objective == whole.objective == blocked.lower_bound
    uses = np.bincount(blocked.tile, minlength=14)
    assert (uses >= minimum).all() and uses.max() <= 4
    # Each cell's transform is its tile's best one, as the whole matrix says.
    dense = _capped.LibrarySearch(request)
    every = dense.dense()
    cells = np.arange(len(blocked.tile))
    np.testing.assert_array_equal(blocked.distance, every[cells, blocked.tile])
    np.testing.assert_array_equal(search.candidate_of(blocked.tile),
                                  dense.candidate_of(blocked.tile))


@pytest.mark.parametrize("blocks", [False, True])
def test_minimum_lists_beside_warm_lists_reach_the_same_optimum(tmp_path, monkeypatch, blocks):
    """Past the distances kept whole, a crowded grid's cells list their warm tiles too.

    Without them, the minimum's pricing rounds found a crowd's far tiles a few at a
    time: 5,000 photos on 10,672 cells 52.0 s, 24.2 s with them (22.3 s with blocks).
    """
    target = noisy_target()
    folder = smooth_folder(tmp_path / "tiles", count=14, seed=5)
    mosaic = make_mosaic(target, folder, cell_px=8, tile_px=16, cache_dir=tmp_path / "c")
    options = replace(mosaic.options, max_uses=3, min_spacing=1, min_uses=1, tint=0.3)
    request = MatchRequest(mosaic.grid, mosaic.library, options)
    for name in ("AUCTION_TILES", "DENSE_TILES"):
        monkeypatch.setattr(_capped, name, 0)
    for name in ("FIRST_CANDIDATES", "FULL_FIRST_CANDIDATES"):
        monkeypatch.setattr(_capped, name, 2)
    whole = _capped.assign_with_minimum(request, _capped.LibrarySearch(request))
    monkeypatch.setattr(_capped, "MINIMUM_PAIRS", 0)
    monkeypatch.setattr(_capped, "MINIMUM_BLOCK_PAIRS", 10**9 if blocks else 0)
    monkeypatch.setattr(_capped, "WARM_LOAD", 0.01)
    listed = []
    original = _capped.warm_candidates

    def warm(*arguments):
        listed.append(original(*arguments))
        return listed[-1]

    monkeypatch.setattr(_capped, "warm_candidates", warm)
    warmed = _capped.assign_with_minimum(request, _capped.LibrarySearch(request))
    assert len(listed) == 1
    if listed[0] is None:
        pytest.skip("the warm prices need the compiled loops")
    assert warmed.certified and warmed.objective == whole.objective == warmed.lower_bound
    assert (np.bincount(warmed.tile, minlength=14) >= 1).all()


@pytest.mark.parametrize("augment, tint", [("none", 0.0), ("flips", 0.4), ("none", 1.0)])
def test_rows_are_each_cells_pairs_with_every_tile(tmp_path, augment, tint):
    # A kind's distance to every tile, drawn by GEMMs for several kinds at once: the
    # same distances, and the same transforms recorded, as its pairs one by one.
    target = noisy_target()
    folder = smooth_folder(tmp_path / "tiles", count=14, seed=3)
    mosaic = make_mosaic(target, folder, cell_px=8, tile_px=16, augment=augment,
                         cache_dir=tmp_path / "c")
    options = replace(mosaic.options, max_uses=4, min_spacing=1, tint=tint)
    request = MatchRequest(mosaic.grid, mosaic.library, options)
    cells = np.array([0, 5, 5, 17])
    by_rows = _capped.LibrarySearch(request)
    rows = by_rows.rows(cells)
    by_pairs = _capped.LibrarySearch(request)
    every = np.arange(by_pairs.tile_count)
    expected = np.stack([by_pairs.pairs(np.full(len(every), cell), every) for cell in cells])
    assert rows.shape == (4, 14) and rows.dtype == np.int64
    np.testing.assert_array_equal(rows, expected)
    for (rows_cells, rows_candidates), (pair_cells, pair_candidates) in zip(
            by_rows._pairs, by_pairs._pairs, strict=True):
        np.testing.assert_array_equal(rows_cells, pair_cells)
        np.testing.assert_array_equal(rows_candidates, pair_candidates)


def test_a_minimum_of_uses_past_exact_floats_is_still_the_exact_optimum(tmp_path):
    """Tinted distances of large tiles pass 2^53: the split by slots gave up on exactness.

    Three 256 px cells, two near-identical black tiles and a white one,
    every tile used once: SciPy's float64 assignment put the cells one
    place wrong (398 search units) and was reported certified. The
    integer solver finds the optimum of every placement.
    """
    import itertools

    px = 256
    tiles = np.zeros((3, px, px, 3), np.uint8)
    tiles[0] = 255
    tiles[2, 0, 0, 0] = 1
    cells = np.full((3, px, px, 3), 255, np.uint8)
    cells[0, 5, 5, 0] = 254
    np.save(tmp_path / "tiles.npy", tiles)
    mosaic = make_mosaic(np.concatenate(list(cells), axis=1), tmp_path / "tiles.npy",
                         preset="seed", cell_px=px, tile_px=px, match_px=px, tint=0.01,
                         min_uses=1, compute_metrics=False, cache_dir=tmp_path / "cache")

    def units(cell: np.ndarray, tile: np.ndarray) -> int:
        # Search units at tint h = 1 hundredth: 10^4 n |d|^2 + (h^2 - 200 h) sum_c D_c^2.
        difference = cell.astype(np.int64).reshape(-1, 3) - tile.astype(np.int64).reshape(-1, 3)
        sums = difference.sum(axis=0)
        return (10_000 * len(difference) * int((difference * difference).sum())
                + (1 - 200) * sum(int(value) ** 2 for value in sums))

    full = [[units(cell, tile) for tile in tiles] for cell in cells]
    placed = [int(tile) for tile in mosaic.placements.tile]
    best = min(sum(full[cell][order[cell]] for cell in range(3))
               for order in itertools.permutations(range(3)))
    assert sum(full[cell][placed[cell]] for cell in range(3)) == best
    assert mosaic.assignment.certified
