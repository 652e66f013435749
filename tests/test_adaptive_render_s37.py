"""Drawing adaptive cells: the vectorised bands against a drawing one leaf at a time.

The renderer draws the leaves of one size in a band together (their tiles
reduced by block sums, copied into the band as a grid of cells of that
size); these tests draw every leaf alone, by the definition (the mean of
each ``2^d x 2^d`` block, rounded; the leaf's own transform and tint; its
rectangle's pixels), and ask for the same bytes.
"""

from __future__ import annotations

import numpy as np
import pytest

from mosaicist.placements import Placements
from mosaicist.render._pictures import IndexPictures
from mosaicist.render._renderer import MosaicRenderer, dress_tiles, reduce_tiles
from mosaicist.transforms import SHAPE_KEEPING


def random_quadtree(rows: int, cols: int, depth: int, rng: np.random.Generator) -> np.ndarray:
    """``(N, 4)`` rectangles ``(x, y, w, h)`` of a random quadtree over ``rows x cols`` cells.

    Each square splits with even odds down to ``depth`` levels, so every
    size appears, mixed within bands.
    """
    rects: list[tuple[float, float, float]] = []

    def visit(x: float, y: float, side: float, level: int) -> None:
        if level < depth and rng.random() < 0.5:
            half = side / 2
            for dy in (0.0, half):
                for dx in (0.0, half):
                    visit(x + dx, y + dy, half, level + 1)
        else:
            rects.append((x, y, side))

    for row in range(rows):
        for col in range(cols):
            visit(float(col), float(row), 1.0, 0)
    return np.array([(x, y, side, side) for x, y, side in rects], np.float64)


def per_leaf_drawing(placements: Placements, tiles: np.ndarray, metric: str) -> np.ndarray:
    """The picture drawn one leaf at a time, each tile reduced by its block means."""
    assert placements.rect is not None
    tile_height, tile_px = tiles.shape[1:3]
    picture = np.zeros((placements.rows * tile_height, placements.cols * tile_px, 3), np.uint8)
    for leaf, (x, y, w, _) in enumerate(placements.rect.tolist()):
        factor = round(1 / w)
        height, across = tile_height // factor, tile_px // factor
        tile = tiles[placements.tile[leaf]].astype(np.float64)
        reduced = np.rint(tile.reshape(height, factor, across, factor, 3).mean(axis=(1, 3)))
        one = slice(leaf, leaf + 1)
        dressed = dress_tiles(reduced.astype(np.uint8)[None], placements.transform[one],
                              placements.tint[one], metric, placements.gain[one],
                              placements.chroma[one],
                              None if placements.mean is None else placements.mean[one])
        top, left = round(y * tile_height), round(x * tile_px)
        picture[top:top + height, left:left + across] = dressed[0]
    return picture


@pytest.mark.parametrize(("tile_px", "tile_height", "metric", "seed"), [
    (16, 16, "seed", 0),
    (24, 16, "seed", 1),
    (16, 16, "lab", 2),
    (8, 24, "oklab", 3),
])
def test_bands_draw_what_each_leaf_drawn_alone_gives(tile_px, tile_height, metric, seed):
    rng = np.random.default_rng(seed)
    rows, cols, depth = 3, 5, 3
    rect = random_quadtree(rows, cols, depth, rng)
    count = len(rect)
    assert len(np.unique(rect[:, 2])) == depth + 1
    tiles = rng.integers(0, 256, (7, tile_height, tile_px, 3), np.uint8)
    codes = np.arange(8) if tile_px == tile_height else np.asarray(SHAPE_KEEPING)
    # Every leaf shifted, gained and (outside sRGB) paled: each is then dressed the same
    # way alone as among others, whatever the others are.
    tint = rng.uniform(1, 12, (count, 3)) * rng.choice([-1, 1], (count, 3))
    placements = Placements(
        rows, cols, rng.integers(0, len(tiles), count), np.zeros(count, np.int64),
        [f"t{index}.png" for index in range(count)], rng.choice(codes, count), tint,
        gain=rng.uniform(0.6, 0.9, (count, 3)),
        # sRGB's chroma takes a matrix product over the pixels of all tiles dressed at once.
        chroma=np.ones(count) if metric == "seed" else rng.uniform(0.3, 0.8, count),
        mean=rng.uniform(60, 180, (count, 3)) if metric == "seed" else None, rect=rect)
    renderer = MosaicRenderer(placements, IndexPictures(tiles, placements.tile), metric)
    drawn = renderer.image()
    assert drawn.shape == (rows * tile_height, cols * tile_px, 3)
    assert np.array_equal(drawn, per_leaf_drawing(placements, tiles, metric))


def test_bands_of_plain_tiles_hold_each_leaf_reduced():
    # No transform or tint: the band is the reduced tiles themselves, at their rectangles.
    rng = np.random.default_rng(7)
    rect = random_quadtree(2, 3, 2, rng)
    count = len(rect)
    tiles = rng.integers(0, 256, (5, 16, 16, 3), np.uint8)
    placements = Placements(2, 3, rng.integers(0, 5, count), np.zeros(count, np.int64),
                            [f"t{index}.png" for index in range(count)], rect=rect)
    drawn = MosaicRenderer(placements, IndexPictures(tiles, placements.tile)).image()
    assert np.array_equal(drawn, per_leaf_drawing(placements, tiles, "seed"))


@pytest.mark.parametrize("factor", [2, 4, 16, 32])
def test_reduced_tiles_are_the_rounded_block_means(factor):
    rng = np.random.default_rng(factor)
    side = 2 * factor
    tiles = rng.integers(0, 256, (3, side, side, 3), np.uint8)
    # Blocks of 255 (the largest sums: 255 x 32^2 does not fit 16 bits) and blocks whose
    # mean is a half (rounded to even, as numpy.rint rounds): 0 and 1 half and half.
    tiles[0, :factor, :factor] = 255
    tiles[1] = 0
    tiles[1, :, ::2] = 1
    tiles[1, :factor, factor:] = 2
    tiles[1, :factor, factor:, :][:, ::2] = 3
    expected = np.rint(tiles.reshape(3, 2, factor, 2, factor, 3).mean(axis=(2, 4)))
    reduced = reduce_tiles(tiles, factor)
    assert reduced.dtype == np.uint8 and reduced.shape == (3, 2, 2, 3)
    assert np.array_equal(reduced, expected)
    assert (reduced[0, 0, 0] == 255).all()
    # 0.5 rounds to 0 and 2.5 to 2 (to even), not up.
    assert (reduced[1, 1, 0] == 0).all() and (reduced[1, 0, 1] == 2).all()
