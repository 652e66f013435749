"""Hostile checks of how tiles look: transforms, tints, colour spaces, and near-duplicates.

Small fixtures only (tiny tiles made with NumPy and Pillow); each test well under a second.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mosaicist import dedupe as dedupe_module
from mosaicist import make_mosaic
from mosaicist.colour import METRICS, encode, encoded_unit, from_space, to_space
from mosaicist.dedupe import COLOUR_TOLERANCE, duplicate_leaders, hamming
from mosaicist.placements import Placements
from mosaicist.render import render_placements
from mosaicist.render._renderer import dress_tiles
from mosaicist.transforms import TRANSFORM_NAMES

_QUICK = settings(max_examples=60, deadline=None)


def _greys(levels: np.ndarray) -> np.ndarray:
    """``(..., 3)`` uint8 greys of ``levels``."""
    return np.repeat(np.asarray(levels, np.uint8)[..., None], 3, axis=-1)


# -- greys stay grey ---------------------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
def test_every_grey_converts_to_a_colourless_value_and_back(metric):
    greys = _greys(np.arange(256))
    values = to_space(greys, metric)
    if metric != "seed":
        # Exactly colourless, not the float rounding of the white point against the
        # matrices (a part in 10^5), which a tint's shift then carries over a rounding edge.
        assert not values[:, 1:].any()
    assert np.array_equal(from_space(values, metric), greys)


@pytest.mark.parametrize("metric", ["lab", "oklab"])
def test_a_colourless_value_is_drawn_grey_at_every_lightness(metric):
    top = 100.0 if metric == "lab" else 1.0
    lightness = np.linspace(0.0, top, 100001)
    values = np.stack([lightness, np.zeros_like(lightness), np.zeros_like(lightness)], -1)
    drawn = from_space(values, metric).astype(np.int64)
    assert (drawn.max(axis=1) == drawn.min(axis=1)).all()
    # Monotone in lightness, black to white.
    assert (np.diff(drawn[:, 0]) >= 0).all() and drawn[0, 0] == 0 and drawn[-1, 0] == 255


@_QUICK
@given(metric=st.sampled_from(METRICS), tile_level=st.integers(0, 255),
       cell_level=st.integers(0, 255), hundredths=st.integers(0, 100),
       gain=st.floats(0.25, 4.0), chroma=st.floats(0.0, 1.0), texture=st.integers(0, 80))
def test_a_grey_tile_tinted_toward_a_grey_cell_is_drawn_grey(
        metric, tile_level, cell_level, hundredths, gain, chroma, texture):
    # The shift as the pipeline computes it: from the encoded means, in the metric's units.
    rng = np.random.default_rng(tile_level)
    levels = np.clip(tile_level + rng.integers(-texture, texture + 1, (6, 6)), 0, 255)
    tile = _greys(levels)[None]
    cell = _greys(np.full((6, 6), cell_level))
    tile_mean = encode(tile[0], metric).reshape(-1, 3).mean(axis=0)
    cell_mean = encode(cell, metric).reshape(-1, 3).mean(axis=0)
    shift = hundredths / 100 * (cell_mean - tile_mean) * encoded_unit(metric)
    drawn = dress_tiles(tile, np.zeros(1, np.int8), shift[None], metric,
                        np.full((1, 3), gain), np.array([chroma])).astype(np.int64)
    assert (drawn.max(axis=-1) == drawn.min(axis=-1)).all()


@pytest.mark.parametrize("metric", ["lab", "oklab"])
def test_a_flat_grey_photo_on_a_flat_grey_target_is_drawn_grey(metric, tmp_path):
    # Drawn (112, 111, 111) with --metric lab --tint 0.25: a grey photo turned pink.
    (tmp_path / "tiles").mkdir()
    Image.fromarray(_greys(np.full((8, 8), 69 if metric == "lab" else 158))).save(
        tmp_path / "tiles" / "grey.png")
    target = _greys(np.full((8, 8), 254 if metric == "lab" else 15))
    tint = 0.25 if metric == "lab" else 0.19
    image, _ = make_mosaic(target, str(tmp_path / "tiles"), preset="seed", cell_px=8,
                           tile_px=8, metric=metric, tint=tint, quiet=True,
                           cache_dir=tmp_path / "cache")
    pixels = np.unique(image.reshape(-1, 3), axis=0)
    assert len(pixels) == 1 and len(set(pixels[0].tolist())) == 1, pixels


# -- transforms are what they say -------------------------------------------------------------


def _asymmetric(width: int, height: int) -> np.ndarray:
    """An ``(H, W, 3)`` picture that no symmetry of the rectangle maps onto itself."""
    y, x = np.mgrid[0:height, 0:width]
    planes = [x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1),
              (x * 3 + y * 7) * 4 % 256]
    return np.stack(planes, -1).astype(np.uint8)


_EXPECTED = {
    "identity": lambda picture: picture,
    "mirror": lambda picture: picture[:, ::-1],
    "rot90": lambda picture: np.rot90(picture, 1),  # counter-clockwise
    "rot180": lambda picture: picture[::-1, ::-1],
    "rot270": lambda picture: np.rot90(picture, 3),
    "transpose": lambda picture: picture.transpose(1, 0, 2),
    "flip": lambda picture: picture[::-1],
    "transverse": lambda picture: np.rot90(picture, 2).transpose(1, 0, 2),
}


@pytest.mark.parametrize(("name", "aspect"), [
    *((name, "1:1") for name in _EXPECTED),
    *((name, "3:2") for name in ("identity", "mirror", "rot180", "flip")),
])
def test_a_target_that_is_a_transformed_photo_gets_that_transform_drawn(name, aspect, tmp_path):
    # One photo; the target is it under a transform: with every transform a candidate, the
    # exact match is that transform, drawn as the picture itself, and the saved placements
    # draw the same bytes again.
    width, height = (8, 8) if aspect == "1:1" else (12, 8)
    photo = _asymmetric(width, height)
    (tmp_path / "tiles").mkdir()
    Image.fromarray(photo).save(tmp_path / "tiles" / "photo.png")
    target = np.ascontiguousarray(_EXPECTED[name](photo))
    options = {"preset": "seed", "cell_px": width, "tile_px": width, "match_px": width,
               "aspect": aspect, "augment": "all", "crop": "centre", "quiet": True,
               "cache_dir": tmp_path / "cache"}
    image, placements = make_mosaic(target, str(tmp_path / "tiles"), **options)
    assert [TRANSFORM_NAMES[code] for code in placements.transform.tolist()] == [name]
    assert np.array_equal(image, target)
    placements.write(tmp_path / "placements.json")
    drawn = render_placements(Placements.read(tmp_path / "placements.json"),
                              tiles=str(tmp_path / "tiles"), cache_dir=tmp_path / "cache")
    assert np.array_equal(drawn, image)


# -- a saved placements file draws the same picture again -------------------------------------


def _hostile_library(root):
    """Flat black, white, grey and red photos, a few textured ones, and a grey ramp."""
    root.mkdir()
    rng = np.random.default_rng(11)
    for name, colour in (("black", 0), ("white", 255), ("grey", 128), ("red", (255, 0, 0))):
        Image.fromarray(np.full((10, 10, 3), colour, np.uint8)).save(root / f"flat-{name}.png")
    for index in range(5):
        pixels = np.clip(rng.integers(0, 256, 3) + rng.normal(0, 40, (12, 10, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(root / f"photo-{index}.png")
    Image.fromarray(_greys(np.tile(np.arange(0, 250, 25), (10, 1)))).save(root / "ramp.png")
    return str(root)


def _hostile_target() -> np.ndarray:
    """Cells of pure black, pure white, grey, saturated colours and a ramp: 6 x 4 cells of 4 px."""
    target = np.zeros((16, 24, 3), np.uint8)
    target[:4, 4:8] = 255
    target[:4, 8:12] = 128
    target[:4, 12:16] = (0, 0, 255)
    target[:4, 16:20] = (255, 255, 0)
    target[4:] = _asymmetric(24, 12)
    return target


@pytest.fixture(scope="module")
def hostile_tiles(tmp_path_factory):
    """The hostile library's folder and a cache with its index, shared by the module."""
    folder = tmp_path_factory.mktemp("looks")
    return _hostile_library(folder / "tiles"), folder / "cache"


@pytest.mark.parametrize(("metric", "augment", "tint", "tint_max", "contrast", "chroma"), [
    ("seed", "none", 0.0, None, 0.0, 0.0),
    ("seed", "all", 1.0, None, 1.0, 1.0),
    ("seed", "flips", 0.01, 1.0, 0.5, 0.77),
    ("lab", "all", 0.37, None, 1.0, 0.0),
    ("lab", "none", 0.0, 1.0, 0.0, 1.0),
    ("oklab", "all", 1.0, None, 1.0, 1.0),
    ("oklab", "rotations", 0.5, 1.0, 0.0, 0.5),
])
def test_saved_placements_draw_the_same_picture_whatever_the_look(
        hostile_tiles, tmp_path, metric, augment, tint, tint_max, contrast, chroma):
    tiles, cache = hostile_tiles
    # No division by zero or NaN on flat tiles and cells (underflow is fine).
    with np.errstate(divide="raise", invalid="raise", over="raise"):
        image, placements = make_mosaic(
            _hostile_target(), tiles, cell_px=4, tile_px=10, match_px=10, metric=metric,
            augment=augment, tint=tint, tint_max=tint_max, contrast=contrast, chroma=chroma,
            max_uses=None, min_spacing=0, crop="centre", quiet=True, cache_dir=cache)
        placements.write(tmp_path / "placements.json")
        drawn = render_placements(Placements.read(tmp_path / "placements.json"), tiles=tiles,
                                  cache_dir=cache)
    assert np.array_equal(drawn, image)
    assert np.isfinite(placements.tint).all() and np.isfinite(placements.gain).all()
    assert np.isfinite(placements.chroma).all()


# -- near-duplicates ---------------------------------------------------------------------------


def _brute_leaders(hashes, colours, threshold):
    """The documented walk: in library order, a tile is dropped when near an earlier kept one."""
    near = hamming(hashes[:, None], hashes[None, :]) <= threshold
    near &= np.abs(colours[:, None].astype(int) - colours[None, :].astype(int)).max(-1) <= (
        COLOUR_TOLERANCE)
    leaders = np.arange(len(hashes))
    kept = np.zeros(len(hashes), bool)
    for position in range(len(hashes)):
        earlier = np.flatnonzero(near[position, :position] & kept[:position])
        if len(earlier):
            leaders[position] = earlier[0]
        else:
            kept[position] = True
    return leaders


@pytest.mark.parametrize("threshold", [10, 16, 32, 63, 64])
def test_loose_thresholds_give_the_walk_in_order_without_comparing_every_pair(
        threshold, monkeypatch):
    # At 64 bits every hash is near every other: 20,000 photos took two and a half minutes
    # (every pair compared), where their mean colours tell most of them apart.
    rng = np.random.default_rng(threshold)
    count = 1500
    hashes = rng.integers(0, 2**63, count, dtype=np.int64).astype(np.uint64) << np.uint64(1)
    colours = rng.integers(0, 256, (count, 3)).astype(np.uint8)
    colours[:300] = rng.integers(100, 130, (300, 3))  # a crowd of browns, as photos have
    colours[300:320] = 0  # and some black frames
    compared: list[int] = []
    real_hamming = dedupe_module.hamming

    def counted(first, second):
        compared.append(np.size(first))
        return real_hamming(first, second)

    monkeypatch.setattr(dedupe_module, "hamming", counted)
    leaders = duplicate_leaders(hashes, colours, threshold)
    monkeypatch.undo()
    np.testing.assert_array_equal(leaders, _brute_leaders(hashes, colours, threshold))
    assert sum(compared) < 120 * count  # every pair is over 1.1 million
