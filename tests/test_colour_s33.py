"""Oracle tests of the colour corrections: every closed form against the pixels, every metric.

The tint, the adaptive tint, the contrast transfer (with its room near black and
white) and the chroma transfer each state in :mod:`mosaicist.match._contrast` the
distance of a pick after them. Here the corrections are applied to the tile's
encoded pixels one by one, as :func:`mosaicist.render._renderer.dress_tiles`
applies them (gain, chroma, shift), and the squared distance to the cell is summed
by brute force, over adversarial tiles and cells (flat, grey, saturated, at 0 and
255, a spread of one level), square and rectangular cells, compared at their own
size (block sums) or resampled.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from mosaicist import make_mosaic
from mosaicist.colour import (
    METRICS,
    decode,
    encode,
    encoded_unit,
    from_space,
    grey_parts,
    lightness_axis,
    to_space,
)
from mosaicist.grid import Geometry
from mosaicist.match import _contrast, compute_features
from mosaicist.render._renderer import dress_tiles
from mosaicist.transforms import apply_transform

KINDS = ("flat", "grey", "extremes", "one level", "black or white", "gradient", "noise")


def adversarial(rng: np.random.Generator, count: int, height: int, width: int) -> np.ndarray:
    """``count`` sRGB pictures, cycling through :data:`KINDS`."""
    out = np.empty((count, height, width, 3), np.uint8)
    y, x = np.mgrid[0:height, 0:width]
    for index in range(count):
        kind = KINDS[index % len(KINDS)]
        if kind == "flat":
            out[index] = rng.integers(0, 256, 3)
        elif kind == "grey":
            out[index] = rng.integers(0, 256, (height, width, 1))
        elif kind == "extremes":
            out[index] = rng.choice([0, 255], (height, width, 3))
        elif kind == "one level":
            out[index] = rng.integers(0, 255, 3) + rng.integers(0, 2, (height, width, 3))
        elif kind == "black or white":
            out[index] = rng.choice([0, 255])
        elif kind == "gradient":
            picture = (rng.uniform(0, 255, 3)
                       + rng.uniform(-150, 150, 3) * (x[..., None] / max(1, width - 1))
                       + rng.uniform(-150, 150, 3) * (y[..., None] / max(1, height - 1)))
            out[index] = np.clip(np.rint(picture), 0, 255)
        else:
            out[index] = rng.integers(0, 256, (height, width, 3))
    return out


def drawn_by_hand(tile: np.ndarray, gain: np.ndarray, chroma: float, shift: np.ndarray,
                  metric: str) -> np.ndarray:
    """``(P, 3)`` encoded float pixels of ``tile`` as drawn: gain, chroma factor, then shift.

    ``shift`` in encoded levels; the order and the grey of each deviation's
    lightness are those of ``dress_tiles``.
    """
    grey, weights = grey_parts(metric)
    values = tile.reshape(-1, 3).astype(np.float64)
    mean = values.mean(axis=0)
    deviation = (values - mean) * gain
    colour = deviation - np.outer(deviation @ weights, grey)
    return mean + deviation - (1.0 - chroma) * colour + shift


def held_back(tile: np.ndarray, cell: np.ndarray, strength: float, tint: float,
              metric: str) -> float:
    """The module's room rule, from the pixels: the tint a pair is drawn with."""
    if not strength:
        return tint
    weights, low, high = lightness_axis(metric)
    tile_values, cell_values = tile.reshape(-1, 3).astype(float), cell.reshape(-1, 3).astype(float)
    mean = weights @ tile_values.mean(axis=0)
    shift = weights @ (cell_values.mean(axis=0) - tile_values.mean(axis=0))
    room = _contrast.ROOM * (weights @ tile_values.std(axis=0))
    left = high - room - mean if shift > 0 else mean - low - room
    if shift != 0 and left >= 0:
        return min(tint, np.floor(left / abs(shift) * 100 + 1e-9) / 100)
    return tint


GEOMETRIES = [Geometry(4, 8), Geometry(3, 3), Geometry(3, 8), Geometry(4, 8, 3, 6),
              Geometry(3, 7, 5, 9), Geometry(1, 1), Geometry(2, 8, 1, 4)]


@pytest.mark.parametrize("metric", METRICS)
def test_every_closed_form_is_the_distance_of_the_corrected_pixels(metric):
    rng = np.random.default_rng(METRICS.index(metric))
    worst = 0.0
    checked = 0
    for geometry in GEOMETRIES:
        tiles = encode(adversarial(rng, 10, *geometry.match_shape), metric)
        sources = adversarial(rng, 10, geometry.cell_height, geometry.cell_px)
        cells = encode(geometry.cell_vectors(sources), metric)
        features = compute_features(tiles, geometry)
        upscaled = cells.repeat(geometry.factor, 1).repeat(geometry.factor, 2)
        picks = rng.permutation(len(tiles))[:len(cells)]
        for strength in (0.0, 0.5, 1.0):
            for tint, tint_max in ((0.0, None), (0.5, None), (1.0, None), (0.2, 0.9)):
                wanted: float | np.ndarray = tint
                if tint_max is not None:
                    wanted = _contrast.adaptive_tint(cells, geometry, features, picks, tint,
                                                     tint_max)
                    assert ((wanted >= tint) & (wanted <= tint_max)).all()
                with warnings.catch_warnings():
                    warnings.simplefilter("error")  # no division by a zero spread anywhere
                    distance, gain, applied = _contrast.transfer(
                        cells, tiles, geometry, features, picks[:, None], strength, wanted,
                        metric)
                    factors = {chroma: _contrast.chroma_factors(
                        cells, tiles, geometry, features, picks, gain[:, 0], chroma, metric)
                        for chroma in (0.0, 0.5, 1.0)}
                for row, tile in enumerate(picks.tolist()):
                    asked = float(np.broadcast_to(wanted, len(cells))[row])
                    expected_tint = held_back(tiles[tile], upscaled[row], strength, asked, metric)
                    assert applied[row, 0] == pytest.approx(expected_tint, abs=1e-12)
                    difference = (upscaled[row].reshape(-1, 3).mean(axis=0)
                                  - tiles[tile].reshape(-1, 3).mean(axis=0))
                    # Held back in lightness only: the chroma moves by the tint asked for.
                    grey, weights = grey_parts(metric)
                    chroma = difference - (weights @ difference) * grey
                    shift = applied[row, 0] * difference + (asked - applied[row, 0]) * chroma
                    for factor, change in factors.values():
                        assert np.isfinite(factor[row]) and 0.0 <= factor[row] <= 1.0
                        drawn = drawn_by_hand(tiles[tile], gain[row, 0], factor[row], shift,
                                              metric)
                        brute = float(((drawn - upscaled[row].reshape(-1, 3)) ** 2).sum())
                        closed = distance[row, 0] + change[row]
                        worst = max(worst, abs(closed - brute) / max(1.0, brute))
                        checked += 1
    assert checked > 1500
    # Float64 rounding only (the largest seen: 3e-11).
    assert worst < 1e-9


def _mosaic_cases():
    for metric in METRICS:
        for tint, contrast, chroma, tint_max, max_uses in (
                (1.0, 0.5, 1.0, None, None), (0.5, 1.0, 0.5, None, 1), (0.2, 0.5, 0.0, 0.9, None),
                (0.5, 0.0, 1.0, 1.0, 2)):
            yield metric, tint, contrast, chroma, tint_max, max_uses


@pytest.mark.parametrize(("metric", "tint", "contrast", "chroma", "tint_max", "max_uses"),
                         list(_mosaic_cases()))
def test_reported_distances_are_those_of_the_placements_as_drawn(
        tmp_path, metric, tint, contrast, chroma, tint_max, max_uses):
    # End to end: each reported distance is the distance of the tile dressed with the
    # placements' own shift, gains and chroma factor (before the drawn pixels are rounded
    # and clipped), on rectangular cells compared at twice their size, with flips.
    rng = np.random.default_rng(len(metric) + int(10 * tint))
    tiles = adversarial(rng, 28, 12, 16)
    np.save(tmp_path / "tiles.npy", tiles)
    cells = adversarial(rng, 12, 6, 8)
    target = cells.reshape(3, 4, 6, 8, 3).transpose(0, 2, 1, 3, 4).reshape(18, 32, 3)
    mosaic = make_mosaic(target, str(tmp_path / "tiles.npy"), preset="seed", cell_px=8,
                         tile_px=16, aspect="4:3", metric=metric, tint=tint, contrast=contrast,
                         chroma=chroma, tint_max=tint_max, max_uses=max_uses, augment="flips",
                         compute_metrics=False, cache_dir=tmp_path / "cache")
    placements = mosaic.placements
    library = np.asarray(mosaic.library.tiles)
    geometry = Geometry(8, 16, 6, 12)
    compared = encode(geometry.cell_vectors(mosaic.grid.cells.reshape(-1, 6, 8, 3)), metric)
    upscaled = compared.repeat(2, 1).repeat(2, 2).astype(np.float64)
    unit = encoded_unit(metric)
    for index in range(len(placements.tile)):
        tile = encode(library[placements.tile[index]], metric)
        if placements.transform[index]:
            tile = apply_transform(tile[None], int(placements.transform[index]))[0]
        drawn = drawn_by_hand(tile, placements.gain[index], float(placements.chroma[index]),
                              placements.tint[index] / unit, metric)
        brute = float(((drawn - upscaled[index].reshape(-1, 3)) ** 2).sum())
        assert placements.distance[index] == pytest.approx(brute, rel=1e-9, abs=1e-6)
    assert np.isfinite(placements.distance).all() and np.isfinite(placements.gain).all()


def test_clipping_in_srgb_only_brings_a_drawn_tile_nearer_its_cell():
    # The README's promise for a shift past black or white: in sRGB, clipping a channel
    # to 0..255 moves it toward the cell's value (which lies inside), so the drawn tile is
    # never farther than the closed form says, beyond rounding to whole levels (half a
    # level a channel). In Lab and Oklab the clip is in linear light, not toward the
    # cell: there it can move a pixel farther (up to twice the distance in Lab, 6% in
    # Oklab, on such tiles), which colour.py's description says.
    rng = np.random.default_rng(11)
    count = 700
    tiles = adversarial(rng, count, 6, 6)
    cells = adversarial(rng, count, 6, 6)[rng.permutation(count)]
    tile_values = tiles.reshape(count, -1, 3).astype(np.float64)
    cell_values = cells.reshape(count, -1, 3).astype(np.float64)
    gain = np.exp(rng.uniform(np.log(0.25), np.log(4.0), (count, 3)))
    chroma = rng.choice([0.0, 0.5, 1.0], count)
    shift = rng.choice([0.5, 1.0], count)[:, None] * (cell_values.mean(axis=1)
                                                      - tile_values.mean(axis=1))
    drawn = dress_tiles(tiles, None, shift, "seed", gain, chroma).reshape(count, -1, 3)
    clipped = 0
    for index in range(count):
        exact = drawn_by_hand(tiles[index], gain[index], chroma[index], shift[index], "seed")
        clipped += bool(((exact < 0) | (exact > 255)).any())
        reach = np.abs(exact - cell_values[index]) + 0.5
        assert (np.abs(drawn[index] - cell_values[index]) <= reach + 1e-9).all()
    assert clipped > count // 4


def test_colour_spaces_round_trip_on_a_dense_sample():
    # Every 5th level of each channel (140,608 colours) and every grey: sRGB -> space ->
    # sRGB is exact, the 8-bit encodings are within half a step and never clipped
    # (checked on all 2^24 colours once: the same figures), greys come back with three
    # equal channels, and decoding greys is monotonic.
    levels = np.unique(np.r_[np.arange(0, 256, 5), 255]).astype(np.uint8)
    rgb = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    greys = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    for metric in METRICS:
        values = to_space(rgb, metric)
        assert np.array_equal(from_space(values.copy(), metric), rgb)
        encoded = encode(rgb, metric)
        offset = np.array([0.0, 128.0, 128.0]) * (metric != "seed")
        error = (encoded - offset) * encoded_unit(metric) - values
        assert np.abs(error).max() <= 0.5 * encoded_unit(metric) + 1e-9
        drawn_greys = decode(encode(greys, metric), metric)
        assert (drawn_greys == drawn_greys[:, :1]).all()
        assert (np.diff(drawn_greys[:, 0].astype(int)) >= 0).all()
        assert np.abs(drawn_greys.astype(int) - greys).max() <= 2
        # Lightness alone, moved anywhere (a tint past white or black): grey, monotonic.
        weights, low, high = lightness_axis(metric)
        lightness = np.linspace(low - 20, high + 20, 2001)
        moved = np.outer(lightness, grey_parts(metric)[0]) + offset
        drawn = decode(moved, metric)
        assert (drawn == drawn[:, :1]).all()
        assert (np.diff(drawn[:, 0].astype(int)) >= 0).all()
        assert drawn[0, 0] == 0 and drawn[-1, 0] == 255
