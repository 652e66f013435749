"""The dressing of tiles a cache-sized block at a time (session 38).

:func:`mosaicist.render.dress_tiles` moves each tile in colour: its spread by a
gain, its chroma by a factor, its mean to a shifted one. In sRGB (the default
preset's space) the steps are folded into one map per channel and applied to
channel planes, a block of :data:`~mosaicist.render._renderer.DRESS_PIXELS`
pixels at a time; in Lab and Oklab the steps run as before, a few tiles at a
time. Checked here: the pixels are those of the formula in float64 step by
step, whatever the blocks (tiles cut into rows where one is larger than a
block); a grey cell's tile is drawn exactly grey; and the memory a chunk of
tiles takes to dress stays a few bytes a pixel, not the 32 of float64
copies of the whole chunk.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from mosaicist.colour import grey_parts
from mosaicist.render import _renderer
from mosaicist.render._renderer import dress_tiles


def step_by_step(tiles: np.ndarray, tint: np.ndarray | None, gain: np.ndarray | None,
                 chroma: np.ndarray | None, scored_mean: np.ndarray | None) -> np.ndarray:
    """sRGB tiles dressed by the documented formula, one float64 step after another.

    ``centre + s g (v - mean) + (1 - s) (w @ (g (v - mean))) g0 + tint`` with
    ``g0 = (1, 1, 1)``, ``centre`` the scored mean of a changed tile, else its own.
    """
    count = len(tiles)
    values = tiles.astype(np.float64)
    mean = values.mean(axis=(1, 2), keepdims=True)
    gains = np.ones((count, 3)) if gain is None else gain
    factor = np.ones(count) if chroma is None else chroma
    shift = np.zeros((count, 3)) if tint is None else tint
    centre = mean.copy()
    if scored_mean is not None:
        changed = (shift != 0).any(axis=1) | (gains != 1).any(axis=1) | (factor != 1)
        centre[changed, 0, 0] = scored_mean[changed]
    weights = grey_parts("seed")[1]
    deviation = gains[:, None, None, :] * (values - mean)
    lightness = deviation @ weights
    moved = (factor[:, None, None, None] * deviation
             + ((1 - factor)[:, None, None] * lightness)[..., None])
    drawn = centre + moved + shift[:, None, None, :]
    return np.clip(np.rint(drawn), 0, 255).astype(np.uint8)


def random_moves(rng: np.random.Generator, count: int) -> dict[str, np.ndarray]:
    """Gains, chroma factors, shifts and scored means as the default preset makes them."""
    return {
        "gain": rng.uniform(0.3, 2.5, (count, 3)),
        "chroma": rng.uniform(0.0, 1.2, count),
        "tint": rng.normal(0.0, 40.0, (count, 3)),
        "scored_mean": rng.uniform(0.0, 255.0, (count, 3)),
    }


@pytest.mark.parametrize("moves", [("gain", "chroma", "tint", "scored_mean"),
                                   ("tint",), ("tint", "scored_mean"), ("chroma",),
                                   ("gain", "tint")])
@pytest.mark.parametrize("block", [100, 1 << 15])
def test_srgb_tiles_are_drawn_as_the_formula_says_whatever_the_blocks(monkeypatch, moves,
                                                                      block):
    # Tiles of 12 x 10 px: a block of 100 pixels cuts each one into rows (its mean must
    # still be the whole tile's), and 1 << 15 takes all 37 at once.
    monkeypatch.setattr(_renderer, "DRESS_PIXELS", block)
    rng = np.random.default_rng(38)
    tiles = rng.integers(0, 256, (37, 12, 10, 3), dtype=np.uint8)
    tiles[::5] = rng.integers(0, 256, (8, 12, 10, 1), dtype=np.uint8)  # some grey photos
    given = {name: value for name, value in random_moves(rng, len(tiles)).items()
             if name in moves}
    given.setdefault("gain", None)
    given.setdefault("chroma", None)
    given.setdefault("tint", None)
    given.setdefault("scored_mean", None)
    drawn = dress_tiles(tiles, None, given["tint"], "seed", given["gain"], given["chroma"],
                        given["scored_mean"])
    expected = step_by_step(tiles, given["tint"], given["gain"], given["chroma"],
                            given["scored_mean"])
    np.testing.assert_array_equal(drawn, expected)


@pytest.mark.parametrize("metric", ["lab", "oklab"])
def test_lab_and_oklab_tiles_are_drawn_alike_whatever_the_blocks(monkeypatch, metric):
    rng = np.random.default_rng(3)
    tiles = rng.integers(0, 256, (23, 8, 8, 3), dtype=np.uint8)
    moves = random_moves(rng, len(tiles))
    moves["tint"] /= 4.0 if metric == "lab" else 1000.0  # a few levels of each space
    moves["scored_mean"] = None
    drawn = {}
    for block in (64, 1 << 15):  # one tile at a time, all at once
        monkeypatch.setattr(_renderer, "DRESS_PIXELS", block)
        drawn[block] = dress_tiles(tiles, None, moves["tint"], metric, moves["gain"],
                                   moves["chroma"])
    np.testing.assert_array_equal(drawn[64], drawn[1 << 15])


def test_a_grey_cells_tile_is_drawn_exactly_grey(monkeypatch):
    # A grey cell gives its tile a chroma factor of exactly 0, equal gains, and a shift
    # that takes the tile's scored mean to the cell's grey: every pixel drawn is grey.
    monkeypatch.setattr(_renderer, "DRESS_PIXELS", 300)
    rng = np.random.default_rng(5)
    tiles = rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    count = len(tiles)
    scored = tiles.reshape(count, -1, 3).mean(axis=1) + rng.uniform(-0.5, 0.5, (count, 3))
    cell_grey = rng.uniform(20.0, 235.0, (count, 1))
    tint = cell_grey - scored
    gain = np.repeat(rng.uniform(0.2, 3.0, (count, 1)), 3, axis=1)
    drawn = dress_tiles(tiles, None, tint, "seed", gain, np.zeros(count), scored)
    assert (drawn[..., 0] == drawn[..., 1]).all() and (drawn[..., 1] == drawn[..., 2]).all()
    assert len(np.unique(drawn)) > 100  # the tiles' lightness patterns, not flat greys


def test_dressing_a_chunk_of_tiles_takes_a_few_bytes_a_pixel():
    # 1,024 tiles of 32 px, as the renderer dresses them a row at a time: float64 copies of
    # the whole chunk (24 bytes a pixel, and a lightness of 8 more) went to memory and back
    # at every step; a block at a time, the chunk takes its planes and its output only.
    rng = np.random.default_rng(7)
    count = 1024
    tiles = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    moves = random_moves(rng, count)
    pixels = tiles.size // 3
    tracemalloc.start()
    try:
        drawn = dress_tiles(tiles, None, moves["tint"], "seed", moves["gain"], moves["chroma"],
                            moves["scored_mean"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert drawn.shape == tiles.shape
    assert peak < 8 * pixels + (4 << 20)
