"""What is drawn is what was scored (session 35): the renderer checked against the matcher.

An oracle recomputes every cell's tile as the matcher models it (its
transform, contrast gains, chroma factor and tint shift, from the placements,
on the index thumbnails in the metric's 8-bit encoding) and checks that its
distance to the cell is the one scored, that the drawn picture is that
model rounded (sRGB) and that a render of the saved placements draws the
same picture. Small random libraries and targets, made here.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mosaicist import make_mosaic
from mosaicist.colour import encode, encoded_unit, grey_parts
from mosaicist.grid import Geometry
from mosaicist.placements import Placements
from mosaicist.render import dress_tiles, placements_renderer, render_placements
from mosaicist.transforms import apply_transform


def _library(root, count=24, seed=0):
    """``count`` colourful photos of random sizes and shapes (ramps, so transforms show)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        height, width = rng.integers(20, 48, 2).tolist()
        y, x = np.mgrid[0:height, 0:width]
        pixels = (rng.integers(40, 216, 3) + x[..., None] / width * rng.uniform(-60, 60, 3)
                  + y[..., None] / height * rng.uniform(-60, 60, 3)
                  + rng.normal(0, 6, (height, width, 3)))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / f"t{index:02d}.png")
    return root


def _target(height=32, width=48, seed=1):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    picture = (np.stack([40 + x * 3, 50 + y * 4, 60 + (x + y) * 2], -1)
               + rng.normal(0, 8, (height, width, 3)))
    return np.clip(picture, 0, 255).astype(np.uint8)


def _modelled(mosaic) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's tile as the matcher models it (float, encoded units), and the cells."""
    placements, options = mosaic.placements, mosaic.options
    geometry = Geometry(options.cell_px, options.match_px, options.cell_height,
                        options.match_height)
    cells = encode(geometry.cell_vectors(mosaic.grid.cells), options.metric).astype(float)
    factor = geometry.factor
    cells = cells.repeat(factor, axis=1).repeat(factor, axis=2)
    tiles = encode(np.asarray(mosaic.library.tiles)[placements.tile], options.metric)
    grey, weights = grey_parts(options.metric)
    scale = 1 / encoded_unit(options.metric)
    model = np.empty(tiles.shape)
    for cell, tile in enumerate(tiles.astype(float)):
        tile = apply_transform(tile, int(placements.transform[cell]))
        mean = tile.mean(axis=(0, 1))
        deviation = (tile - mean) * placements.gain[cell]
        keep = placements.chroma[cell]
        deviation = keep * deviation + (1 - keep) * (deviation @ weights)[..., None] * grey
        model[cell] = mean + deviation + placements.tint[cell] * scale
    return model, cells


def _drawn_cells(mosaic) -> np.ndarray:
    placements, image = mosaic.placements, mosaic.image
    height, width = image.shape[0] // placements.rows, image.shape[1] // placements.cols
    return (image.reshape(placements.rows, height, placements.cols, width, 3)
            .transpose(0, 2, 1, 3, 4).reshape(len(placements), height, width, 3))


LOOKS = {
    "seed": {"preset": "seed"},
    "tint": {"preset": "seed", "tint": 0.5},
    "tint-hundredths": {"preset": "seed", "tint": 0.333},
    "adaptive-tint": {"preset": "seed", "tint": 0.2, "tint_max": 0.9},
    "contrast-chroma": {"preset": "seed", "tint": 1, "contrast": 0.5, "chroma": 1},
    "augment-all": {"preset": "seed", "tint": 0.5, "contrast": 1, "chroma": 0.5,
                    "augment": "all"},
    "balanced": {},
    "balanced-resampled-cells": {"cell_px": 6},
    "balanced-3:2": {"aspect": "3:2", "cell_px": 12, "tile_px": 18, "augment": "all"},
}


@pytest.mark.parametrize("look", list(LOOKS))
def test_drawn_tiles_are_the_scored_ones_rounded(tmp_path, look):
    settings = {"cell_px": 8, "tile_px": 16, **LOOKS[look]}
    mosaic = make_mosaic(_target(), str(_library(tmp_path / "lib")), **settings)
    model, cells = _modelled(mosaic)
    placements = mosaic.placements
    # The distances scored are those of the model...
    np.testing.assert_allclose(((model - cells) ** 2).sum(axis=(1, 2, 3)),
                               placements.distance, rtol=1e-9, atol=1e-6)
    # ...and the picture drawn (sRGB, drawn at the size matched) is the model rounded,
    # clipped where a shift or a gain pushed it past black or white.
    np.testing.assert_array_equal(_drawn_cells(mosaic), np.clip(np.rint(model), 0, 255))


@pytest.mark.parametrize("metric", ["lab", "oklab"])
def test_lab_oklab_drawn_tiles_are_the_scored_ones_within_rounding(tmp_path, metric):
    mosaic = make_mosaic(_target(), str(_library(tmp_path / "lib")), cell_px=8, tile_px=16,
                         metric=metric, contrast=0.5)
    model, cells = _modelled(mosaic)
    np.testing.assert_allclose(((model - cells) ** 2).sum(axis=(1, 2, 3)),
                               mosaic.placements.distance, rtol=1e-9, atol=1e-6)
    drawn = encode(_drawn_cells(mosaic), metric).astype(float)
    # The mean of each tile as drawn is the scored one, up to the rounding to 8-bit sRGB
    # (no pixel of these mid-tone tiles leaves the gamut).
    np.testing.assert_allclose(drawn.mean(axis=(1, 2)), model.mean(axis=(1, 2)), atol=0.6)


@pytest.mark.parametrize("metric", ["seed", "lab", "oklab"])
def test_default_look_on_a_grey_target_is_drawn_grey(tmp_path, metric):
    # The default look's chroma (K = 1) and full tint move a photo on a grey cell to grey:
    # in Lab and Oklab the shift was measured from the tile's mean in whole encoded levels
    # and added to its unrounded values, which kept up to half a level of chroma, and some
    # pixels were drawn a level off grey.
    rng = np.random.default_rng(4)
    y, x = np.mgrid[0:32, 0:48]
    grey = np.clip(40 + x * 3 + rng.normal(0, 10, (32, 48)), 0, 255).astype(np.uint8)
    mosaic = make_mosaic(np.repeat(grey[..., None], 3, axis=2), str(_library(tmp_path / "lib")),
                         cell_px=8, tile_px=16, metric=metric)
    assert not mosaic.placements.chroma.any()
    image = mosaic.image
    assert (image == image[..., :1]).all()


@pytest.mark.parametrize("metric", ["lab", "oklab"])
def test_dress_tiles_moves_a_colourful_tile_onto_a_grey_mean_exactly(metric):
    rng = np.random.default_rng(7)
    tiles = np.clip(rng.integers(60, 200, 3) + rng.normal(0, 25, (64, 8, 8, 3)), 0, 255).astype(
        np.uint8)
    unit = encoded_unit(metric)
    levels = encode(tiles, metric).reshape(len(tiles), -1, 3)
    tile_means = levels.mean(axis=1, dtype=np.float64)
    cell_means = np.full((len(tiles), 3), 128.0)
    cell_means[:, 0] = rng.integers(20, 90, len(tiles))
    # As the pipeline records it: the full shift to the cell's mean, in the metric's units.
    shift = 1.0 * (cell_means - tile_means) * unit
    dressed = dress_tiles(tiles, tint=shift, metric=metric, chroma=np.zeros(len(tiles)))
    assert (dressed == dressed[..., :1]).all()


@pytest.mark.parametrize("settings", [
    {"tile_px": 16},
    {"tile_px": 40, "match_px": 16, "metric": "lab", "augment": "all"},
    {"tile_px": 18, "cell_px": 12, "aspect": "3:2", "metric": "oklab"},
])
def test_render_of_saved_placements_draws_the_make(tmp_path, settings):
    tiles = str(_library(tmp_path / "lib"))
    mosaic = make_mosaic(_target(), tiles, **{"cell_px": 8, **settings})
    for name in ("p.json", "p.csv"):
        path = tmp_path / name
        mosaic.placements.write(path)
        read = Placements.read(path)
        if name.endswith(".json"):
            again = render_placements(read)
        else:
            # A CSV records no settings: drawn with the make's.
            again = placements_renderer(read, mosaic.options, tiles=tiles).image()
        np.testing.assert_array_equal(again, mosaic.image)


def test_report_psnr_is_the_objective_for_the_seed_method(tmp_path):
    mosaic = make_mosaic(_target(), str(_library(tmp_path / "lib")), preset="seed", cell_px=6,
                         tile_px=16, compute_metrics=True)
    image = mosaic.image
    mse = mosaic.placements.objective / image.size
    assert mosaic.metrics["psnr_full"] == pytest.approx(10 * np.log10(255**2 / mse), abs=1e-9)
