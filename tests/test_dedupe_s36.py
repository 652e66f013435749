"""Oracles (session 36): near-duplicates, tile transforms and the contrast transfer.

Each check is against an independent brute force on small seeded cases:
the greedy walk in library order for the leaders (chains, still scenes,
flat swatches of many colours, with the halves forced), SciPy's DCT for the
signatures, NumPy's ``flip``/``rot90`` for the transforms (through a whole
make whose target is made of transformed tiles) and, for the contrast
transfer, the gain and tint applied to the pixels of each cell's best
candidates after the tint alone.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from scipy.fft import dct
from test_dedupe_loose_s36 import walk_in_order
from test_match_oracle import _exact_units, _library

from mosaicist import dedupe as dedupe_module
from mosaicist import make_mosaic
from mosaicist.colour import encode, lightness_axis
from mosaicist.dedupe import duplicate_leaders, hamming, tile_signatures
from mosaicist.match import MatchRequest, _contrast
from mosaicist.transforms import TRANSFORM_NAMES, augment_transforms

#: The transforms as the docs name them, in NumPy (rotations counter-clockwise).
NUMPY_TRANSFORMS = {
    "identity": lambda picture: picture,
    "mirror": np.fliplr,
    "rot90": lambda picture: np.rot90(picture, 1),
    "rot180": lambda picture: np.rot90(picture, 2),
    "rot270": lambda picture: np.rot90(picture, 3),
    "transpose": lambda picture: picture.transpose(1, 0, 2),
    "flip": np.flipud,
    "transverse": lambda picture: np.rot90(picture, 2).transpose(1, 0, 2),
}


# --- near-duplicates ------------------------------------------------------------------------

def flipped_bits(value, rng, count):
    for bit in rng.choice(64, count, replace=False).tolist():
        value ^= np.uint64(1) << np.uint64(bit)
    return value


def burst_library(rng, kind, count, threshold):
    """Hashes and colours of a library of one kind of burst."""
    if kind == "still scenes":  # a few scenes, each frame a few unstable bits off
        scenes = rng.integers(0, 2**63, 3, dtype=np.int64).astype(np.uint64)
        hashes = np.array([flipped_bits(scenes[rng.integers(0, 3)], rng,
                                        int(rng.integers(0, threshold // 2 + 2)))
                           for _ in range(count)], np.uint64)
        colours = np.clip(rng.normal(100, 6, (count, 3)), 0, 255).astype(np.uint8)
    elif kind == "swatches":  # flat pictures: one hash, many colours
        hashes = np.zeros(count, np.uint64)
        colours = rng.integers(0, 256, (count, 3)).astype(np.uint8)
    else:  # a drifting chain: each frame near the one before, the ends far apart
        hashes = [rng.integers(0, 2**63, dtype=np.int64).astype(np.uint64)]
        for _ in range(count - 1):
            hashes.append(flipped_bits(hashes[-1], rng, int(rng.integers(0, 3))))
        hashes = np.array(hashes, np.uint64)
        colours = (np.cumsum(rng.integers(-3, 4, (count, 3)), axis=0) % 256).astype(np.uint8)
    order = rng.permutation(count)
    return hashes[order], colours[order]


@pytest.mark.parametrize("kind", ["still scenes", "swatches", "chain"])
@pytest.mark.parametrize("halves", [False, True])
def test_leaders_are_the_walk_in_library_order(kind, halves, monkeypatch):
    if halves:  # every group past two tiles taken by halves, however few its pairs
        monkeypatch.setattr(dedupe_module, "_BUDGET_FACTOR", 0)
        monkeypatch.setattr(dedupe_module, "_BUDGET_FLOOR", 0)
        monkeypatch.setattr(dedupe_module, "_SPLIT_BELOW", 2)
        monkeypatch.setattr(dedupe_module, "_walk_is_cheaper", lambda *args: False)
    rng = np.random.default_rng([len(kind), halves])
    for threshold in (0, 4, 12, 64):
        hashes, colours = burst_library(rng, kind, 90, threshold)
        for given in (colours, None):
            expected = walk_in_order(hashes, given, threshold)
            leaders = duplicate_leaders(hashes, given, threshold)
            np.testing.assert_array_equal(leaders, expected, err_msg=f"{kind} {threshold}")
            # A chain is not followed: every dropped tile is near its leader, which is kept.
            dropped = np.flatnonzero(leaders != np.arange(len(leaders)))
            assert (leaders[leaders[dropped]] == leaders[dropped]).all()
            assert (hamming(hashes[dropped], hashes[leaders[dropped]]) <= threshold).all()
            # Deterministic: the same library gives the same leaders.
            np.testing.assert_array_equal(duplicate_leaders(hashes, given, threshold), leaders)


def reference_hash(picture):
    """64-bit hash by the module's description, with SciPy's DCT (a 32 x 32 picture)."""
    grey = picture[..., 0] * 0.299 + picture[..., 1] * 0.587 + picture[..., 2] * 0.114
    low = dct(dct(grey, axis=0, norm="ortho"), axis=1, norm="ortho")[:8, :8].ravel()
    bits = low - np.median(low) > 0.05
    return np.packbits(bits, bitorder="little").view("<u8")[0]


def test_signatures_are_the_described_hash_alone_or_in_a_batch():
    rng = np.random.default_rng(36)
    pictures = np.concatenate([
        rng.integers(0, 256, (40, 32, 32, 3)),
        np.kron(rng.integers(0, 3, (40, 4, 4, 1)) * 100, np.ones((1, 8, 8, 3))),
        np.broadcast_to(rng.integers(0, 256, (20, 1, 1, 3)), (20, 32, 32, 3)),
    ]).astype(np.uint8)
    hashes, colours = tile_signatures(pictures)
    assert [int(value) for value in hashes] == [int(reference_hash(p)) for p in pictures]
    np.testing.assert_array_equal(
        colours, np.rint(pictures.reshape(len(pictures), -1, 3).mean(axis=1)))
    # Signed one at a time (as a photo is while indexed), the same.
    alone = [int(tile_signatures(picture[None])[0][0]) for picture in pictures]
    assert alone == [int(value) for value in hashes]


def test_a_jpeg_signs_the_same_whatever_the_tiles_it_is_decoded_for():
    from mosaicist.imaging import decode_tile

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:300, 0:400]
    picture = np.stack([x * 0.5 + 40 * np.sin(y / 17), y * 0.7, 255 - x * 0.4], axis=-1)
    picture = np.clip(picture + rng.normal(0, 25, picture.shape), 0, 255).astype(np.uint8)
    data = io.BytesIO()
    Image.fromarray(picture).save(data, "JPEG", quality=30)
    signatures = {decode_tile(data.getvalue(), px, aspect).signature
                  for px, aspect in ((32, (1, 1)), (48, (1, 1)), (32, (2, 3)))}
    assert len(signatures) == 1, signatures


# --- transforms -----------------------------------------------------------------------------

@pytest.mark.parametrize(("aspect", "width", "height"), [("1:1", 6, 6), ("3:2", 6, 4)])
@pytest.mark.parametrize("metric", ["seed", "lab"])
def test_a_target_of_transformed_tiles_is_matched_and_drawn_exactly(
        tmp_path, aspect, width, height, metric):
    # Each cell is a library tile turned by NumPy: the pick is that tile and transform,
    # at distance 0, and the picture drawn is the target itself.
    rng = np.random.default_rng(width + height)
    tiles = rng.integers(0, 256, (5, height, width, 3), dtype=np.uint8)
    names = [name for name in TRANSFORM_NAMES
             if NUMPY_TRANSFORMS[name](tiles[0]).shape == tiles[0].shape]
    picks = rng.integers(0, len(tiles), 3 * len(names))
    cells = [NUMPY_TRANSFORMS[names[index % len(names)]](tiles[tile])
             for index, tile in enumerate(picks.tolist())]
    columns = len(names)
    target = np.concatenate([np.concatenate(cells[row * columns:(row + 1) * columns], axis=1)
                             for row in range(3)])
    library = _library(tmp_path / "library", tiles, aspect)
    mosaic = make_mosaic(target, library, preset="seed", augment="all", cell_px=width,
                         tile_px=width, aspect=aspect, metric=metric, compute_metrics=False,
                         cache_dir=tmp_path / "cache")
    placements = mosaic.placements
    assert placements.tile.tolist() == picks.tolist()
    assert [TRANSFORM_NAMES[code] for code in placements.transform.tolist()] == [
        names[index % len(names)] for index in range(len(picks))]
    assert (placements.distance == 0).all()
    np.testing.assert_array_equal(mosaic.image, target)


# --- contrast transfer ------------------------------------------------------------------------

def drawn_distance(cell, tile, strength, tint, metric):
    """A pair's distance with the contrast transfer and tint applied to its pixels."""
    cell, tile = cell.astype(np.float64), tile.astype(np.float64)
    cell_mean, tile_mean = cell.mean(axis=0), tile.mean(axis=0)
    spread = tile.std(axis=0)
    gain = np.ones(3)
    gain[spread > 0] = (cell.std(axis=0)[spread > 0] / spread[spread > 0]) ** strength
    gain = np.clip(gain, *_contrast.GAIN_LIMITS)
    weights, low, high = lightness_axis(metric)
    mean, shift = weights @ tile_mean, weights @ (cell_mean - tile_mean)
    room = _contrast.ROOM * (weights @ spread)
    end = high - room if shift > 0 else low + room
    if shift != 0 and (end - mean) / shift >= 0:  # held back short of black and white
        tint = min(tint, np.floor((end - mean) / shift * 100 + 1e-9) / 100)
    drawn = tile_mean + gain * (tile - tile_mean) + tint * (cell_mean - tile_mean)
    return float(((drawn - cell) ** 2).sum())


@pytest.mark.parametrize("case", range(6))
def test_contrast_picks_are_the_best_of_the_tinted_short_list(tmp_path, case):
    # The documented search: each cell's CANDIDATES (per transform) nearest after the tint
    # alone, re-ranked by their distances once the gain and the tint are drawn.
    rng = np.random.default_rng([36, case])
    aspect = ("1:1", "3:2")[case % 2]
    metric = ("seed", "lab", "oklab")[case % 3]
    augment = ("none", "all", "flips")[case % 3]
    strength, tint = (1.0, 0.5, 0.3)[case % 3], (0.0, 0.25, 0.5, 1.0)[case % 4]
    cell, tile_px = 2, 4
    height = {"1:1": 4, "3:2": 3}[aspect]
    tiles = rng.integers(0, 256, (40, height, tile_px, 3), dtype=np.uint8)
    target = rng.integers(0, 256, (3 * height // 2, 4 * cell, 3), dtype=np.uint8)
    library = _library(tmp_path / "library", tiles, aspect)
    mosaic = make_mosaic(target, library, preset="seed", cell_px=cell, tile_px=tile_px,
                         aspect=aspect, metric=metric, augment=augment, contrast=strength,
                         tint=tint, compute_metrics=False, cache_dir=tmp_path / "cache")
    request = MatchRequest(mosaic.grid, mosaic.library, mosaic.options)
    factor, count = request.geometry.factor, len(mosaic.grid)
    cells = request.cell_vectors.repeat(factor, axis=1).repeat(factor, axis=2).reshape(
        count, -1, 3)
    codes = augment_transforms(augment, mosaic.options.aspect_ratio)
    names = [TRANSFORM_NAMES[code] for code in codes]
    candidates = np.stack([NUMPY_TRANSFORMS[name](tile) for tile in encode(tiles, metric)
                           for name in names]).reshape(len(tiles) * len(codes), -1, 3)
    placements = mosaic.placements
    picked = placements.tile * len(codes) + np.array(
        [codes.index(code) for code in placements.transform.tolist()])
    short = max(2, _contrast.CANDIDATES * len(codes))
    tinted = _exact_units(cells, candidates, tint)
    for index in range(count):
        listed = np.argsort(tinted[index], kind="stable")[:short]
        best = min(drawn_distance(cells[index], candidates[tile], strength, tint, metric)
                   for tile in listed)
        mine = drawn_distance(cells[index], candidates[picked[index]], strength, tint, metric)
        assert picked[index] in listed
        assert mine == pytest.approx(best, rel=1e-9, abs=1e-6)
        assert placements.distance[index] == pytest.approx(mine, rel=1e-9, abs=1e-6)
