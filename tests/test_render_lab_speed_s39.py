"""The dressing of Lab and Oklab tiles without ``pow`` (session 39).

:func:`mosaicist.render.dress_tiles` moves each tile in the metric's colour
space and draws it back in sRGB. In Lab and Oklab that went through
:func:`mosaicist.colour.from_space`, whose cubes and sRGB encode took a
``pow`` per value (most of the time of a dressing). The renderer now draws
with cubes by products and the encode by buckets of linear light and the
exact edges of the 255 levels. Checked here: the encode draws every value
at the level the ``pow`` encode does, on both sides of every level's edge;
the tiles are drawn as the float64 steps through ``to_space`` and
``from_space`` draw them, greys exactly grey, whatever the blocks. How much
faster it is, ``benchmarks/bench_render.py --metric lab --metric oklab`` prints.
"""

from __future__ import annotations

import numpy as np
import pytest

from mosaicist import colour
from mosaicist.colour import encoded_means, encoded_unit, from_space, to_space
from mosaicist.render import _renderer
from mosaicist.render._renderer import dress_tiles


def float64_steps(tiles: np.ndarray, tint: np.ndarray | None, metric: str,
                  gain: np.ndarray | None, chroma: np.ndarray | None,
                  scored_mean: np.ndarray | None) -> np.ndarray:
    """Lab or Oklab tiles dressed step by step through the public conversions, in float64.

    ``centre + chroma * gain * (values - mean) + tint`` (chroma on ``a`` and
    ``b`` only), drawn by :func:`mosaicist.colour.from_space`. ``centre`` is
    the scored mean of a changed tile where given; else, for a shifted tile,
    the mean of its 8-bit encoding; else its own mean. ``gain`` and ``chroma``
    are None where they change nothing, as :func:`dress_tiles` passes them on.
    """
    count = len(tiles)
    values = to_space(tiles, metric)
    mean = values.mean(axis=(1, 2), keepdims=True)
    shift = np.zeros((count, 3)) if tint is None else tint
    changed = (shift != 0).any(axis=1)
    if gain is not None:
        changed |= (gain != 1).any(axis=1)
    if chroma is not None:
        changed |= chroma != 1
    centre = mean.copy()
    if scored_mean is not None:
        centre[changed, 0, 0] = scored_mean[changed]
    elif tint is not None:
        shifted = (shift != 0).any(axis=1)
        centre[shifted, 0, 0] = encoded_means(values[shifted], metric)
    if gain is not None or chroma is not None:
        values -= mean
        if gain is not None:
            values *= gain[:, None, None, :]
        if chroma is not None:
            values[..., 1:] *= chroma[:, None, None, None]
        values += centre
    else:
        values += centre - mean
    values += shift[:, None, None, :]
    return from_space(values, metric)


def adversarial_tiles(rng: np.random.Generator, count: int, height: int,
                      width: int) -> np.ndarray:
    """Noise, grey photos, flat colours and black-and-white tiles, in turn."""
    tiles = rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8)
    tiles[1::4] = rng.integers(0, 256, (len(tiles[1::4]), height, width, 1), dtype=np.uint8)
    tiles[2::4] = rng.integers(0, 256, (len(tiles[2::4]), 1, 1, 3), dtype=np.uint8)
    tiles[3::4] = rng.choice(np.array([0, 255], np.uint8), (len(tiles[3::4]), height, width, 1))
    return tiles


def moves_of(rng: np.random.Generator, tiles: np.ndarray, metric: str,
             names: tuple[str, ...]) -> dict[str, np.ndarray | None]:
    """Shifts of a few levels, gains, chroma factors (some 0) and scored means, as named."""
    count = len(tiles)
    unit = encoded_unit(metric)
    tint = rng.normal(0.0, 12.0, (count, 3)) * unit
    tint[::6, 1:] = -encoded_means(to_space(tiles[::6], metric), metric)[:, 1:]  # to a grey
    tint[::5] = 0.0  # some tiles not shifted
    chroma = rng.uniform(0.0, 1.3, count)
    chroma[::6] = 0.0
    scored = (encoded_means(to_space(tiles, metric), metric)
              + rng.uniform(-0.5, 0.5, (count, 3)) * unit)
    moves: dict[str, np.ndarray | None] = {
        "tint": tint, "gain": rng.uniform(0.3, 2.5, (count, 3)), "chroma": chroma,
        "scored_mean": scored,
    }
    return {name: value if name in names else None for name, value in moves.items()}


def test_the_encode_draws_every_value_at_the_level_pow_draws_it():
    # 2,000 float64 numbers on each side of each of the 255 level edges, the ends of the
    # range, values outside it, and a million across it: the level of the old encode.
    edges = colour._srgb8_edges()
    bits = edges.view(np.int64)[:, None] + np.arange(-2000, 2000)[None, :]
    rng = np.random.default_rng(39)
    linear = np.concatenate([
        bits.view(np.float64).ravel(),
        [-1.0, -0.0, 0.0, 5e-324, 0.0031308, 1.0, np.nextafter(1.0, 2.0), 7.0],
        rng.uniform(-0.1, 1.1, 1_000_000), rng.uniform(0.0, 0.004, 100_000),
    ])
    drawn = colour._srgb8_levels(linear, np.empty(linear.shape, np.uint8))
    np.testing.assert_array_equal(drawn, colour._srgb8(linear))
    # Each edge is where the level changes: one level up, at the last float below it.
    assert (colour._srgb8(edges) == np.arange(1, 256)).all()
    assert (colour._srgb8(np.nextafter(edges, 0.0)) == np.arange(0, 255)).all()


@pytest.mark.parametrize("metric", ["lab", "oklab"])
@pytest.mark.parametrize("names", [("tint", "gain", "chroma", "scored_mean"), ("tint",),
                                   ("tint", "scored_mean"), ("chroma",), ("gain", "tint")])
@pytest.mark.parametrize("block", [100, 1 << 15])
def test_lab_and_oklab_tiles_are_drawn_as_the_float64_steps_draw_them(monkeypatch, metric,
                                                                      names, block):
    # Tiles of 12 x 10 px: a block of 100 pixels takes one tile at a time, 1 << 15 all.
    monkeypatch.setattr(_renderer, "DRESS_PIXELS", block)
    rng = np.random.default_rng(len(names) + block)
    tiles = adversarial_tiles(rng, 36, 12, 10)
    moves = moves_of(rng, tiles, metric, names)
    drawn = dress_tiles(tiles, None, moves["tint"], metric, moves["gain"], moves["chroma"],
                        moves["scored_mean"])
    expected = float64_steps(tiles, moves["tint"], metric, moves["gain"], moves["chroma"],
                             moves["scored_mean"])
    np.testing.assert_array_equal(drawn, expected)


@pytest.mark.parametrize("metric", ["lab", "oklab"])
def test_a_grey_photo_moved_to_a_grey_is_drawn_exactly_grey(metric):
    # Grey photos, gained, paled and shifted to greys of other lightness: a and b stay
    # exactly 0, and every pixel is drawn with its three channels equal.
    rng = np.random.default_rng(6)
    tiles = np.repeat(rng.integers(0, 256, (20, 16, 16, 1), dtype=np.uint8), 3, axis=3)
    tint = np.zeros((20, 3))
    tint[:, 0] = rng.uniform(-30.0, 30.0, 20) * encoded_unit(metric)
    gain = np.repeat(rng.uniform(0.3, 2.0, (20, 1)), 3, axis=1)
    drawn = dress_tiles(tiles, None, tint, metric, gain, rng.uniform(0.0, 1.0, 20))
    assert (drawn[..., 0] == drawn[..., 1]).all() and (drawn[..., 1] == drawn[..., 2]).all()
    assert len(np.unique(drawn)) > 50


@pytest.mark.parametrize("metric", ["lab", "oklab"])
def test_a_chunk_of_lab_and_oklab_tiles_is_drawn_as_the_float64_steps_draw_it(metric):
    # 256 tiles of 32 px (a quarter megapixel, a chunk of a band), dressed as the default
    # preset does, against the float64 steps through to_space and from_space (as the
    # renderer took them before session 39, a few tiles at a time). The speed is measured
    # by benchmarks/bench_render.py, not here.
    rng = np.random.default_rng(39)
    tiles = adversarial_tiles(rng, 256, 32, 32)
    moves = moves_of(rng, tiles, metric, ("tint", "gain", "chroma", "scored_mean"))
    arguments = (moves["tint"], metric, moves["gain"], moves["chroma"], moves["scored_mean"])
    step = max(1, _renderer.DRESS_PIXELS // (32 * 32))
    parts = []
    for start in range(0, len(tiles), step):
        here = slice(start, start + step)
        parts.append(float64_steps(tiles[here], moves["tint"][here], metric,
                                   moves["gain"][here], moves["chroma"][here],
                                   moves["scored_mean"][here]))
    np.testing.assert_array_equal(dress_tiles(tiles, None, *arguments), np.concatenate(parts))
