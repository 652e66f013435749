"""Contrast transfer: distances and gains against a float brute force, and the pipeline's use."""

import functools

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import noisy_target
from test_match import smooth_images
from test_pipeline import smooth_folder

from mosaicist import MosaicOptions, Placements
from mosaicist import make_mosaic as _make_mosaic
from mosaicist.cli import main
from mosaicist.colour import encode, grey_parts, lightness_axis
from mosaicist.errors import MosaicistError
from mosaicist.grid import Geometry
from mosaicist.match import _contrast, compute_features
from mosaicist.render import render_placements
from mosaicist.transforms import AUGMENT_SETS, apply_transform

# These tests check mechanisms on the seed's method (no caps, no tint unless given);
# the default preset is tested on its own (test_options, test_pipeline).
make_mosaic = functools.partial(_make_mosaic, preset="seed")


def brute_transfer(upscaled_cell, tile, strength, tint, metric="seed"):
    """Distance, gain and tint of one pair, from the pixels: gain, then tint, then L2.

    With a gain, the tint stops ``ROOM`` lightness spreads short of black and white, in
    lightness only: the mean's chroma still moves by the tint asked for.
    """
    cell = upscaled_cell.reshape(-1, 3).astype(np.float64)
    values = tile.reshape(-1, 3).astype(np.float64)
    cell_mean, tile_mean = cell.mean(axis=0), values.mean(axis=0)
    cell_sigma, tile_sigma = cell.std(axis=0), values.std(axis=0)
    gain = np.ones(3)
    spread = tile_sigma > 0
    gain[spread] = (cell_sigma[spread] / tile_sigma[spread]) ** strength
    gain = np.clip(gain, *_contrast.GAIN_LIMITS)
    asked = tint
    if strength:
        weights, low, high = lightness_axis(metric)
        mean, shift = weights @ tile_mean, weights @ (cell_mean - tile_mean)
        room = _contrast.ROOM * (weights @ tile_sigma)
        end = high - room if shift > 0 else low + room
        if shift != 0 and (end - mean) / shift >= 0:
            tint = min(tint, np.floor((end - mean) / shift * 100 + 1e-9) / 100)
    difference = cell_mean - tile_mean
    grey, weights = grey_parts(metric)
    lightness = (weights @ difference) * grey  # the grey of the difference's lightness
    shift = tint * difference + (asked - tint) * (difference - lightness)
    drawn = tile_mean + gain * (values - tile_mean) + shift
    return float(((drawn - cell) ** 2).sum()), gain, tint


@pytest.mark.parametrize(("cell_px", "tile_px", "strength", "tint"),
                         [(8, 16, 0.5, 0.0), (4, 4, 1.0, 1.0), (6, 12, 0.3, 0.45)])
def test_transfer_matches_brute_force(cell_px, tile_px, strength, tint):
    rng = np.random.default_rng(cell_px + tile_px)
    tiles = smooth_images(rng, 40, tile_px, noise=20)
    tiles[3] = 77  # a flat tile: no spread, gain 1
    cells = smooth_images(rng, 12, cell_px, noise=30)
    geometry = Geometry(cell_px, tile_px)
    features = compute_features(tiles, geometry)
    candidates = rng.integers(0, len(tiles), (len(cells), 5))
    candidates[:, 0] = 3
    candidates[2, 4] = -1
    distance, gain, applied = _contrast.transfer(geometry.cell_vectors(cells), tiles, geometry,
                                                 features, candidates, strength, tint)
    factor = geometry.factor
    upscaled = geometry.cell_vectors(cells).repeat(factor, 1).repeat(factor, 2)
    for row in range(len(cells)):
        for column, tile in enumerate(candidates[row].tolist()):
            if tile < 0:
                assert distance[row, column] == np.inf
                assert np.all(gain[row, column] == 1.0)
                continue
            expected, expected_gain, expected_tint = brute_transfer(upscaled[row], tiles[tile],
                                                                    strength, tint)
            assert distance[row, column] == pytest.approx(expected, rel=1e-9, abs=1e-6)
            assert np.allclose(gain[row, column], expected_gain, rtol=1e-9)
            assert applied[row, column] == pytest.approx(expected_tint)
    assert np.all(gain[:, 0] == 1.0)


def test_gains_respect_the_limits():
    geometry = Geometry(4, 4)
    flat_cell = np.full((1, 4, 4, 3), 128, np.uint8)
    busy_tile = np.zeros((1, 4, 4, 3), np.uint8)
    busy_tile[0, ::2] = 255
    busy_cell = busy_tile.copy()
    calm_tile = np.full((1, 4, 4, 3), 128, np.uint8)
    calm_tile[0, 0, 0] = 131
    tiles = np.concatenate([busy_tile, calm_tile])
    features = compute_features(tiles, geometry)
    cells = np.concatenate([flat_cell, busy_cell])
    _, gain, _ = _contrast.transfer(cells, tiles, geometry, features,
                                    np.array([[0, 1], [0, 1]]), 1.0, 0.0)
    assert np.all(gain[0, 0] == _contrast.GAIN_LIMITS[0])  # a busy tile on a flat cell
    assert np.all(gain[1, 1] == _contrast.GAIN_LIMITS[1])  # a calm tile on a busy cell
    assert np.allclose(gain[1, 0], 1.0)  # the same spread


def test_transfer_of_cells_without_any_candidate():
    # Every candidate missing (-1): reshaping no tiles at all raised a ValueError.
    geometry = Geometry(4, 4)
    tiles = np.full((2, 4, 4, 3), 90, np.uint8)
    features = compute_features(tiles, geometry)
    cells = np.zeros((3, 4, 4, 3), np.uint8)
    distance, gain, applied = _contrast.transfer(cells, tiles, geometry, features,
                                                 np.full((3, 2), -1), 0.5, 0.456)
    assert distance.shape == (3, 2) and np.isinf(distance).all()
    assert gain.shape == (3, 2, 3) and np.all(gain == 1.0)
    assert np.all(applied == 0.46)


def reference_contrast_picks(target, tiles, cell, strength, tint, metric, augment):
    """Brute force over every (tile, transform) candidate after gain and tint."""
    codes = AUGMENT_SETS[augment]
    tile_px = tiles.shape[1]
    rows, cols = target.shape[0] // cell, target.shape[1] // cell
    top, left = (target.shape[0] - rows * cell) // 2, (target.shape[1] - cols * cell) // 2
    crop = target[top:top + rows * cell, left:left + cols * cell]
    factor = tile_px // cell
    up = encode(crop, metric).repeat(factor, 0).repeat(factor, 1)
    candidates = np.stack(
        [apply_transform(encode(tiles, metric), code) for code in codes], axis=1
    ).reshape(-1, tile_px, tile_px, 3)
    picks, gains = [], []
    for r in range(rows):
        for c in range(cols):
            block = up[r * tile_px:(r + 1) * tile_px, c * tile_px:(c + 1) * tile_px]
            found = [brute_transfer(block, candidate, strength, tint, metric)
                     for candidate in candidates]
            best = int(np.argmin([distance for distance, _, _ in found]))
            picks.append(best)
            gains.append(found[best][1])
    picks = np.array(picks)
    return picks // len(codes), np.asarray(codes)[picks % len(codes)], np.array(gains)


@pytest.mark.parametrize(("metric", "augment", "strength", "tint"),
                         [("seed", "none", 1.0, 0.0), ("lab", "flips", 0.6, 0.5)])
def test_reranking_every_candidate_is_the_brute_force_optimum(
    tmp_path, monkeypatch, metric, augment, strength, tint
):
    # Re-ranking the whole library turns the short list into the exact optimum.
    monkeypatch.setattr(_contrast, "CANDIDATES", 10_000)
    target = noisy_target()[:32, :48]
    folder = smooth_folder(tmp_path / "tiles", count=25)
    mosaic = make_mosaic(target, folder, cell_px=8, tile_px=16, metric=metric,
                         augment=augment, contrast=strength, tint=tint,
                         cache_dir=tmp_path / "c")
    tiles = np.asarray(mosaic.library.tiles)
    expected, transforms, gains = reference_contrast_picks(target, tiles, 8, strength, tint,
                                                           metric, augment)
    assert np.array_equal(mosaic.placements.tile, expected)
    assert np.array_equal(mosaic.placements.transform, transforms)
    assert np.allclose(mosaic.placements.gain, gains, rtol=1e-9)
    assert mosaic.metrics["contrast"] == strength
    assert mosaic.metrics["mean_gain_change"] > 1.0


def test_render_applies_the_gains(tmp_path):
    target = noisy_target()
    folder = smooth_folder(tmp_path / "tiles")
    mosaic = make_mosaic(target, folder, cell_px=8, tile_px=16, contrast=1.0,
                         cache_dir=tmp_path / "c")
    placements = mosaic.placements
    assert placements.has_gain
    tiles = np.asarray(mosaic.library.tiles)[placements.tile].astype(np.float64)
    drawn = mosaic.image.reshape(mosaic.grid.rows, 16, mosaic.grid.cols, 16, 3)
    drawn = drawn.transpose(0, 2, 1, 3, 4).reshape(-1, 16, 16, 3).astype(np.float64)
    mean = tiles.mean(axis=(1, 2), keepdims=True)
    expected = mean + placements.gain[:, None, None, :] * (tiles - mean)
    unclipped = (expected >= 0) & (expected <= 255)
    assert np.abs(drawn - np.rint(np.clip(expected, 0, 255)))[unclipped].max() <= 1
    # Spreads move toward the cells': the mosaic follows the target more closely.
    plain = make_mosaic(target, folder, cell_px=8, tile_px=16, cache_dir=tmp_path / "c")
    assert not plain.placements.has_gain
    assert mosaic.metrics["mean_gain_change"] > 1.0
    assert plain.metrics["mean_gain_change"] == 1.0


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_gains_round_trip_and_render_again(tmp_path, suffix):
    folder = smooth_folder(tmp_path / "tiles")
    mosaic = make_mosaic(noisy_target(), folder, cell_px=8, tile_px=16, contrast=0.7, tint=0.3,
                         metric="oklab", cache_dir=tmp_path / "c")
    path = tmp_path / f"placements{suffix}"
    mosaic.placements.write(path)
    again = Placements.read(path)
    assert np.allclose(again.gain, mosaic.placements.gain, atol=1e-4)
    if suffix == ".csv":
        again.options = MosaicOptions(metric="oklab")
        image = render_placements(again, 16, tiles=str(folder), cache_dir=tmp_path / "c")
    else:
        assert again.options.contrast == 0.7
        image = render_placements(again, cache_dir=tmp_path / "c")
    assert np.abs(image.astype(int) - mosaic.image.astype(int)).max() <= 1


def test_placements_without_gains_keep_the_old_columns(tmp_path):
    folder = smooth_folder(tmp_path / "tiles", count=10)
    mosaic = make_mosaic(noisy_target(), folder, cell_px=8, tile_px=16,
                         cache_dir=tmp_path / "c")
    mosaic.placements.write(tmp_path / "p.csv")
    mosaic.placements.write(tmp_path / "p.json")
    assert "gain" not in (tmp_path / "p.csv").read_text().splitlines()[0]
    assert '"gain"' not in (tmp_path / "p.json").read_text()
    assert np.all(Placements.read(tmp_path / "p.csv").gain == 1.0)


@pytest.mark.parametrize("bad", ["0", "-1.5", "nan", "inf"])
def test_bad_gains_in_a_placements_file_are_clear_errors(tmp_path, bad):
    folder = smooth_folder(tmp_path / "tiles", count=10)
    mosaic = make_mosaic(noisy_target(), folder, cell_px=8, tile_px=16, contrast=0.5,
                         cache_dir=tmp_path / "c")
    path = tmp_path / "p.csv"
    mosaic.placements.write(path)
    lines = path.read_text().splitlines()
    fields = lines[1].split(",")
    fields[-1] = bad
    lines[1] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(MosaicistError, match="p.csv.*gain"):
        Placements.read(path)


def test_contrast_settings_that_do_not_combine_are_clear_errors(tmp_path):
    folder = smooth_folder(tmp_path / "tiles", count=10)
    target = noisy_target()
    with pytest.raises(MosaicistError, match="contrast"):
        make_mosaic(target, folder, cell_px=8, tile_px=16, contrast=1.5)
    with pytest.raises(MosaicistError, match="approximate"):
        make_mosaic(target, folder, cell_px=8, tile_px=16, contrast=0.5, search="approximate")
    with pytest.raises(MosaicistError, match="tint_max 0.2 is below tint 0.5"):
        make_mosaic(target, folder, cell_px=8, tile_px=16, tint=0.5, tint_max=0.2)
    from PIL import Image

    Image.fromarray(target).save(tmp_path / "t.png")
    result = CliRunner().invoke(main, [
        "make", str(tmp_path / "t.png"), "--tiles", str(folder), "--cell", "8",
        "--contrast", "0.5", "--search", "approximate", "-o", str(tmp_path / "m.png"), "-q"])
    assert result.exit_code != 0 and "--contrast" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "m.png").exists()
    result = CliRunner().invoke(main, [
        "make", str(tmp_path / "t.png"), "--tiles", str(folder), "--cell", "8",
        "--tint", "0.6", "--tint-max", "0.3", "-o", str(tmp_path / "m.png"), "-q"])
    assert result.exit_code != 0 and "--tint-max 0.3 is below --tint 0.6" in result.output


@pytest.mark.parametrize("tint", [0.0, 0.5])
def test_contrast_with_repetition_limits_applies_gains_to_the_assignment(tmp_path, tint):
    target = noisy_target()[:40, :48]
    folder = smooth_folder(tmp_path / "tiles", count=40)
    capped = make_mosaic(target, folder, cell_px=8, tile_px=16, max_uses=1, tint=tint,
                         cache_dir=tmp_path / "c")
    both = make_mosaic(target, folder, cell_px=8, tile_px=16, max_uses=1, tint=tint,
                       contrast=0.8, cache_dir=tmp_path / "c")
    # The same certified assignment; the gains are those of each assigned pair.
    assert both.assignment.certified
    assert np.array_equal(both.placements.tile, capped.placements.tile)
    tiles = np.asarray(both.library.tiles)
    rows, cols = both.grid.rows, both.grid.cols
    cells = both.grid.cells.reshape(rows * cols, 8, 8, 3)
    for index in range(0, rows * cols, 3):
        block = cells[index].repeat(2, 0).repeat(2, 1)
        distance, gain, _ = brute_transfer(block, tiles[both.placements.tile[index]], 0.8, tint)
        assert both.placements.distance[index] == pytest.approx(distance, rel=1e-9, abs=1e-6)
        assert np.allclose(both.placements.gain[index], gain)


@pytest.mark.parametrize(("metric", "tint", "tint_max"), [("seed", 0.0, 1.0), ("lab", 0.3, 0.8)])
def test_adaptive_tint_raises_the_tint_where_the_mean_is_still_off(tmp_path, metric, tint,
                                                                   tint_max):
    # A dark, flat sky with a busy strip: no smooth tile is that dark.
    target = noisy_target()
    target[:24] = np.clip(np.random.default_rng(1).normal(12, 2, target[:24].shape), 0,
                          255).astype(np.uint8)
    folder = smooth_folder(tmp_path / "tiles")
    plain = make_mosaic(target, folder, cell_px=8, tile_px=16, tint=tint, metric=metric,
                        cache_dir=tmp_path / "c")
    adapted = make_mosaic(target, folder, cell_px=8, tile_px=16, tint=tint, tint_max=tint_max,
                          metric=metric, cache_dir=tmp_path / "c")
    assert np.array_equal(adapted.placements.tile, plain.placements.tile)
    # Reference: the least strength that brings the mean error to the cell's spread.
    rows, cols = adapted.grid.rows, adapted.grid.cols
    cells = encode(adapted.grid.cells.reshape(rows * cols, 8, 8, 3), metric).astype(float)
    tiles = encode(np.asarray(adapted.library.tiles)[adapted.placements.tile], metric)
    cell_mean = cells.mean(axis=(1, 2))
    tile_mean = tiles.astype(float).mean(axis=(1, 2))
    spread = np.sqrt(((cells - cell_mean[:, None, None]) ** 2).sum(axis=3).mean(axis=(1, 2)))
    error = np.linalg.norm(cell_mean - tile_mean, axis=1)
    wanted = 1 - np.maximum(spread, _contrast.TOLERANCE_FLOOR) / np.maximum(error, 1e-12)
    expected = np.clip(np.ceil(wanted * 100 - 1e-9) / 100, tint, tint_max)
    unit = 1.0 if metric == "seed" else None
    shifts = adapted.placements.tint
    if unit is not None:
        assert np.allclose(shifts, expected[:, None] * (cell_mean - tile_mean), atol=1e-3)
    raised = expected > tint + 1e-9
    assert raised[: 3 * cols].all()  # the dark sky
    # Where not capped by tint_max, the mean error is within the cell's spread.
    within = raised & (expected < tint_max)
    residual = (1 - expected) * error
    assert (residual[within] <= np.maximum(spread, 4.0)[within] + 1e-6).all()
    # Only the mean term changes, and it only falls: no distance rises.
    assert (adapted.placements.distance <= plain.placements.distance + 1e-6).all()
    assert adapted.metrics["mean_tint_shift"] > plain.metrics["mean_tint_shift"]
    assert adapted.metrics["ciede2000_mean_view"] < plain.metrics["ciede2000_mean_view"]


def test_adaptive_tint_distances_match_brute_force(tmp_path):
    target = noisy_target()[:32, :40]
    folder = smooth_folder(tmp_path / "tiles", count=30)
    mosaic = make_mosaic(target, folder, cell_px=8, tile_px=16, tint=0.2, tint_max=0.9,
                         contrast=0.5, max_uses=1, cache_dir=tmp_path / "c")
    tiles = np.asarray(mosaic.library.tiles)
    cells = mosaic.grid.cells.reshape(-1, 8, 8, 3)
    placements = mosaic.placements
    for index in range(len(cells)):
        block = cells[index].repeat(2, 0).repeat(2, 1).astype(float)
        tile = tiles[placements.tile[index]].astype(float)
        # The strength from the stored shift: shift = a (mean(c) - mean(t)).
        difference = block.mean(axis=(0, 1)) - tile.mean(axis=(0, 1))
        strength = (placements.tint[index] @ difference) / max(difference @ difference, 1e-12)
        distance, gain, _ = brute_transfer(block, tile, 0.5, round(float(strength), 2))
        assert placements.distance[index] == pytest.approx(distance, rel=1e-6, abs=1e-3)
        assert np.allclose(placements.gain[index], gain)


@pytest.mark.parametrize(("cell", "tile"), [((8, 6), (16, 12)), ((6, 9), (21, 32))])
def test_transfer_of_rectangles_matches_brute_force(cell, tile):
    (cell_w, cell_h), (tile_w, tile_h) = cell, tile
    rng = np.random.default_rng(tile_w)
    tiles = smooth_images(rng, 30, tile_w, noise=20, height=tile_h)
    cells = smooth_images(rng, 8, cell_w, noise=30, height=cell_h)
    geometry = Geometry(cell_w, tile_w, cell_h, tile_h)
    features = compute_features(tiles, geometry)
    candidates = rng.integers(0, len(tiles), (len(cells), 4))
    vectors = geometry.cell_vectors(cells)
    distance, gain, _ = _contrast.transfer(vectors, tiles, geometry, features, candidates, 0.5,
                                           0.3)
    factor = geometry.factor
    upscaled = vectors.repeat(factor, 1).repeat(factor, 2)
    for row in range(len(cells)):
        for column, index in enumerate(candidates[row].tolist()):
            expected, expected_gain, _ = brute_transfer(upscaled[row], tiles[index], 0.5, 0.3)
            assert distance[row, column] == pytest.approx(expected, rel=1e-9, abs=1e-6)
            assert np.allclose(gain[row, column], expected_gain, rtol=1e-9)
    # The adaptive tint measures means over the rectangle's pixels too.
    strengths = _contrast.adaptive_tint(vectors, geometry, features, candidates[:, 0], 0.0, 1.0)
    flat = vectors.reshape(len(cells), -1, 3).astype(np.float64)
    cell_means = flat.mean(axis=1)
    error = np.linalg.norm(cell_means - tiles[candidates[:, 0]].reshape(len(cells), -1, 3)
                           .mean(axis=1), axis=1)
    spread = np.sqrt(((flat - cell_means[:, None]) ** 2).sum(axis=2).mean(axis=1))
    tolerance = np.maximum(spread, _contrast.TOLERANCE_FLOOR)
    # The least tint (in hundredths) that brings the mean error within the cell's spread.
    assert np.all((1 - strengths) * error <= tolerance + 1e-9)
    lower = strengths > 0
    assert np.all((1 - (strengths[lower] - 0.01)) * error[lower] > tolerance[lower] - 1e-9)


def test_transfer_and_adaptive_tint_are_the_same_compiled_or_not(monkeypatch):
    from types import SimpleNamespace

    from mosaicist.match import _flow, _kernels

    if not _flow.can_repair():
        pytest.skip("needs the compiled loops")
    rng = np.random.default_rng(4)
    cells = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    tiles = rng.integers(0, 256, (9, 8, 8, 3), dtype=np.uint8)
    tiles[3] = 77  # a flat tile: no spread, gain 1
    features = SimpleNamespace(
        pooled=None, channel_sums=tiles.reshape(9, -1, 3).sum(axis=1, dtype=np.int64))
    geometry = SimpleNamespace(pixels=64, weight=1)
    candidates = rng.integers(-1, 9, (40, 4))
    results = []
    for compiled in (False, True):
        # The sums by the compiled loops, or by NumPy: the same integers, the same floats.
        monkeypatch.setattr(_kernels, "USE_NUMBA", compiled)
        tint = _contrast.adaptive_tint(cells, geometry, features, candidates[:, 0] % 9,
                                       0.3, 0.9)
        distance, gain, applied = _contrast.transfer(cells, tiles, geometry, features,
                                                     candidates, 0.5, tint)
        results.append((tint, distance, gain, applied))
    for left, right in zip(*results, strict=True):
        assert np.array_equal(left, right)
    assert np.isinf(results[0][1][candidates < 0]).all()


@pytest.mark.parametrize("metric", ["seed", "lab", "oklab"])
def test_the_tint_stops_short_of_black_and_white(metric):
    rng = np.random.default_rng(9)
    tiles = encode(smooth_images(rng, 30, 8, noise=20), metric)
    rgb_cells = np.stack([np.full((8, 8, 3), 255, np.uint8), np.zeros((8, 8, 3), np.uint8),
                          np.full((8, 8, 3), 128, np.uint8)])
    cells = encode(rgb_cells, metric)
    geometry = Geometry(8, 8)
    features = compute_features(tiles, geometry)
    candidates = np.tile(np.arange(len(tiles)), (len(cells), 1))
    distance, gain, applied = _contrast.transfer(cells, tiles, geometry, features, candidates,
                                                 0.5, 1.0, metric)
    for row in range(len(cells)):
        for column in range(len(tiles)):
            expected, expected_gain, expected_tint = brute_transfer(cells[row], tiles[column],
                                                                    0.5, 1.0, metric)
            assert distance[row, column] == pytest.approx(expected, rel=1e-9, abs=1e-6)
            assert np.allclose(gain[row, column], expected_gain, rtol=1e-9)
            assert applied[row, column] == pytest.approx(expected_tint)
    # Flat white and black cells: least gains, tints held back, each mean lightness
    # left at least ROOM of the tile's spread from the end (a mid-grey cell: no limit).
    weights, low, high = lightness_axis(metric)
    values = tiles.reshape(len(tiles), -1, 3).astype(float)
    mean, sigma = values.mean(axis=1) @ weights, values.std(axis=1) @ weights
    shift = cells.reshape(3, -1, 3).mean(axis=1) @ weights
    drawn = mean + applied * (shift[:, None] - mean)
    assert np.all(gain[:2] == _contrast.GAIN_LIMITS[0])
    assert (applied[:2] < 1.0).mean() > 0.9
    room = _contrast.ROOM * sigma
    assert np.all(drawn[0] <= np.maximum(high - room, mean) + 1e-6)
    assert np.all(drawn[1] >= np.minimum(low + room, mean) - 1e-6)
    assert np.all(applied[2] == 1.0)
    # Without a gain the tint is as asked.
    assert np.all(_contrast.transfer(cells, tiles, geometry, features, candidates, 0.0, 1.0,
                                     metric)[2] == 1.0)


@pytest.mark.parametrize("max_uses", [1, None], ids=["assigned", "re-ranked"])
@pytest.mark.parametrize("level", [255, 0])
def test_photos_stay_visible_on_a_flat_white_or_black_target(tmp_path, level, max_uses):
    # The default look (tint 1, contrast 0.5): on a flat white or black target each tile
    # used to be moved to the very end of the range at its least gain, half clipped away
    # (a quarter of its spread, less than two thirds of that kept: about 0.16 here).
    target = np.full((48, 64, 3), level, np.uint8)
    folder = smooth_folder(tmp_path / "tiles", count=60, seed=3)
    mosaic = _make_mosaic(target, folder, cell_px=8, tile_px=16, max_uses=max_uses,
                          cache_dir=tmp_path / "c")
    assert mosaic.options.tint == 1.0 and mosaic.options.contrast == 0.5
    rows, cols = mosaic.grid.rows, mosaic.grid.cols
    luma = np.array([0.299, 0.587, 0.114])
    drawn = mosaic.image.reshape(rows, 16, cols, 16, 3).transpose(0, 2, 1, 3, 4)
    drawn = drawn.reshape(rows * cols, 16, 16, 3).astype(float) @ luma
    tiles = np.asarray(mosaic.library.tiles)[mosaic.placements.tile]
    own = tiles.astype(float) @ luma
    share = drawn.std(axis=(1, 2)) / own.std(axis=(1, 2))
    # Up close the photos keep a fifth of their spread (ROOM: about 0.22 at the least gain)...
    assert share.mean() >= 0.2
    assert share.min() >= 0.12
    # ...and from afar the target is still white or black, and grey: held back short of
    # the end in lightness only, a tile is drawn a grey, not a tinge of its own colour
    # (every pixel's channels 15-26 levels apart here before).
    assert abs(drawn.mean() - level) <= 15
    assert (mosaic.image == mosaic.image[..., :1]).all()
    # The picture is drawn with the tints the picks were ranked and measured by.
    cell = np.full((16, 16, 3), level, np.uint8)
    for index in range(rows * cols):
        _, gain, tint = brute_transfer(cell, tiles[index], 0.5, 1.0)
        assert tint < 1.0
        # Held back in lightness only: the drawn mean is a grey (the cell's chroma).
        difference = level - tiles[index].reshape(-1, 3).mean(axis=0)
        shift = tint * difference + (1.0 - tint) * (difference - (luma @ difference))
        assert np.allclose(mosaic.placements.tint[index], shift)
        drawn_mean = tiles[index].reshape(-1, 3).mean(axis=0) + mosaic.placements.tint[index]
        assert np.ptp(drawn_mean) < 1e-9
        # The default's chroma transfer too: a flat grey cell takes the photos' colours.
        factor, distance = brute_chroma(cell, tiles[index], gain, 1.0, tint, asked=1.0)
        assert mosaic.placements.chroma[index] == pytest.approx(factor, abs=1e-6)
        assert mosaic.placements.distance[index] == pytest.approx(distance, rel=1e-9)


# -- chroma ------------------------------------------------------------------------------


def brute_chroma(upscaled_cell, tile, gain, strength, tint=0.0, metric="seed", asked=None):
    """Factor and distance of one pair from the pixels: gain, chroma factor, tint, then L2.

    ``asked``: the tint asked for, which the mean's chroma moves by (default ``tint``).
    """
    grey, weights = grey_parts(metric)
    cell = upscaled_cell.reshape(-1, 3).astype(np.float64)
    values = tile.reshape(-1, 3).astype(np.float64)
    cell_mean, tile_mean = cell.mean(axis=0), values.mean(axis=0)
    drawn = gain * (values - tile_mean)
    across = drawn - np.outer(drawn @ weights, grey)
    wanted = cell - cell_mean
    wanted = wanted - np.outer(wanted @ weights, grey)
    energy = (across ** 2).sum()
    factor = 1.0 if energy == 0 else min(1.0, np.sqrt((wanted ** 2).sum() / energy)) ** strength
    difference = cell_mean - tile_mean
    asked = tint if asked is None else asked
    shift = tint * difference + (asked - tint) * (difference - (weights @ difference) * grey)
    drawn = tile_mean + drawn - (1 - factor) * across + shift
    return factor, float(((drawn - cell) ** 2).sum())


@pytest.mark.parametrize(("cell_px", "tile_px", "strength", "metric"),
                         [(8, 16, 1.0, "seed"), (4, 4, 0.5, "seed"), (6, 12, 1.0, "lab")])
def test_chroma_factors_match_brute_force(cell_px, tile_px, strength, metric):
    rng = np.random.default_rng(cell_px * tile_px)
    tiles = smooth_images(rng, 30, tile_px, noise=25)
    tiles[2] = np.linspace(0, 255, tile_px)[None, :, None].astype(np.uint8)  # no chroma
    cells = smooth_images(rng, 10, cell_px, noise=30)
    cells[0] = cells[0].mean(axis=-1, keepdims=True).astype(np.uint8)  # a grey cell (sRGB)
    geometry = Geometry(cell_px, tile_px)
    features = compute_features(tiles, geometry)
    picks = rng.integers(0, len(tiles), len(cells))
    picks[1] = 2
    gain = rng.uniform(0.25, 4.0, (len(cells), 3))
    gain[1] = 1.7  # equal gains keep a grey tile grey
    cell_vectors = geometry.cell_vectors(cells)
    factor, change = _contrast.chroma_factors(cell_vectors, tiles, geometry, features, picks,
                                              gain, strength, metric)
    upscaled = cell_vectors.repeat(geometry.factor, 1).repeat(geometry.factor, 2)
    for row, tile in enumerate(picks.tolist()):
        expected, after = brute_chroma(upscaled[row], tiles[tile], gain[row], strength,
                                       metric=metric)
        _, before = brute_chroma(upscaled[row], tiles[tile], gain[row], 0.0, metric=metric)
        assert factor[row] == pytest.approx(expected, rel=1e-9, abs=1e-6)
        assert change[row] == pytest.approx(after - before, rel=1e-6, abs=1e-6)
    if metric == "seed":
        assert factor[1] == 1.0  # a tile without chroma has none to move
    if metric == "seed":
        assert factor[0] == pytest.approx(0.0, abs=1e-6)  # a grey cell: a grey tile
    assert ((factor >= 0) & (factor <= 1)).all()
    off, unchanged = _contrast.chroma_factors(cell_vectors, tiles, geometry, features, picks,
                                              gain, 0.0, metric)
    assert (off == 1.0).all() and (unchanged == 0.0).all()


@pytest.mark.parametrize("metric", ["seed", "lab", "oklab"])
@pytest.mark.parametrize(("cell_px", "tile_px"), [(8, 16), (4, 4), (16, 32)])
def test_chroma_factors_of_grey_and_flat_cells_are_exactly_0(metric, cell_px, tile_px):
    # A cell without chroma (grey, or one flat colour) has |Q c~|^2 = 0, so s = 0 for every
    # K > 0; float cancellation once left it at 1e-16 or so, which a small K lifts to most
    # of the tile's colours (K = 0.01: 0.83 in sRGB).
    rng = np.random.default_rng(cell_px + tile_px)
    tiles = smooth_images(rng, 40, tile_px, noise=25)
    cells = smooth_images(rng, 300, cell_px, noise=30)
    cells[:200] = cells[:200].mean(axis=-1, keepdims=True).astype(np.uint8)  # grey (sRGB)
    cells[200:] = rng.integers(0, 256, (100, 1, 1, 3), dtype=np.uint8)  # flat colours
    geometry = Geometry(cell_px, tile_px)
    features = compute_features(encode(tiles, metric), geometry)
    cell_vectors = encode(geometry.cell_vectors(cells), metric)
    picks = rng.integers(0, len(tiles), len(cells))
    gain = rng.uniform(0.25, 4.0, (len(cells), 3))
    for strength in (1.0, 0.1, 0.01):
        factor, change = _contrast.chroma_factors(cell_vectors, encode(tiles, metric), geometry,
                                                  features, picks, gain, strength, metric)
        assert (factor == 0.0).all(), (strength, factor.max())
        for row in range(200, 210):
            upscaled = cell_vectors[row].repeat(geometry.factor, 0).repeat(geometry.factor, 1)
            _, after = brute_chroma(upscaled, encode(tiles, metric)[picks[row]], gain[row],
                                    strength, metric=metric)
            _, before = brute_chroma(upscaled, encode(tiles, metric)[picks[row]], gain[row],
                                     0.0, metric=metric)
            assert change[row] == pytest.approx(after - before, rel=1e-6, abs=1e-6)


def grey_target():
    """The pipeline tests' target, grey (equal channels)."""
    return np.repeat(noisy_target().mean(axis=-1, keepdims=True), 3, axis=-1).astype(np.uint8)


def chroma_left(image, side):
    """Mean squared chroma (across the greys, sRGB) of the cells of ``image``."""
    values = image.astype(np.float64)
    return float(((values - values.mean(axis=-1, keepdims=True)) ** 2).sum(axis=-1).mean())


def test_chroma_draws_a_grey_target_in_grey(tmp_path):
    folder = smooth_folder(tmp_path / "tiles")
    settings = {"cell_px": 8, "tile_px": 16, "tint": 1.0, "contrast": 0.5,
                "cache_dir": tmp_path / "c"}
    plain = make_mosaic(grey_target(), folder, **settings)
    grey = make_mosaic(grey_target(), folder, chroma=1.0, **settings)
    assert not plain.placements.has_chroma and grey.placements.has_chroma
    assert grey.placements.chroma.max() < 0.05
    assert chroma_left(grey.image, 16) < 0.01 * chroma_left(plain.image, 16)
    # Only the chroma moved: the same tiles, gains and tints, each distance lower.
    assert (grey.placements.tile == plain.placements.tile).all()
    assert np.allclose(grey.placements.gain, plain.placements.gain)
    assert (grey.placements.distance <= plain.placements.distance + 1e-6).all()
    assert grey.metrics["chroma"] == 1.0
    assert grey.metrics["mean_chroma_factor"] < 0.05
    assert plain.metrics["mean_chroma_factor"] == 1.0
    assert grey.metrics["ciede2000_mean_view"] < plain.metrics["ciede2000_mean_view"]


@pytest.mark.parametrize("max_uses", [None, 1])
def test_chroma_distances_match_the_pixels(tmp_path, max_uses):
    target = noisy_target()[:32, :40]
    target[:16] = target[:16].mean(axis=-1, keepdims=True).astype(np.uint8)  # half grey
    folder = smooth_folder(tmp_path / "tiles", count=30)
    mosaic = make_mosaic(target, folder, cell_px=8, tile_px=16, tint=0.5, contrast=0.5,
                         chroma=0.7, max_uses=max_uses, cache_dir=tmp_path / "c")
    tiles = np.asarray(mosaic.library.tiles)
    cells = mosaic.grid.cells.reshape(-1, 8, 8, 3)
    placements = mosaic.placements
    for index in range(len(cells)):
        block = cells[index].repeat(2, 0).repeat(2, 1)
        tile = tiles[placements.tile[index]]
        difference = block.mean(axis=(0, 1)) - tile.mean(axis=(0, 1))
        strength = (placements.tint[index] @ difference) / max(difference @ difference, 1e-12)
        factor, distance = brute_chroma(block, tile, placements.gain[index], 0.7, strength)
        assert placements.chroma[index] == pytest.approx(factor, rel=1e-9, abs=1e-6)
        assert placements.distance[index] == pytest.approx(distance, rel=1e-6, abs=1e-3)
    assert placements.chroma[:10].mean() < placements.chroma[-10:].mean()


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_chroma_round_trips_and_renders_again(tmp_path, suffix):
    folder = smooth_folder(tmp_path / "tiles")
    mosaic = make_mosaic(grey_target(), folder, cell_px=8, tile_px=16, tint=1.0, contrast=0.5,
                         chroma=0.6, cache_dir=tmp_path / "c")
    path = tmp_path / f"placements{suffix}"
    mosaic.placements.write(path)
    again = Placements.read(path)
    assert np.array_equal(again.chroma, mosaic.placements.chroma)
    if suffix == ".csv":
        image = render_placements(again, 16, tiles=str(folder), cache_dir=tmp_path / "c")
    else:
        assert again.options.chroma == 0.6
        image = render_placements(again, cache_dir=tmp_path / "c")
    assert np.array_equal(image, mosaic.image)


def test_placements_without_chroma_keep_the_old_columns(tmp_path):
    folder = smooth_folder(tmp_path / "tiles", count=10)
    mosaic = make_mosaic(noisy_target(), folder, cell_px=8, tile_px=16, contrast=0.5,
                         cache_dir=tmp_path / "c")
    mosaic.placements.write(tmp_path / "p.csv")
    mosaic.placements.write(tmp_path / "p.json")
    assert "chroma" not in (tmp_path / "p.csv").read_text().splitlines()[0]
    assert "chroma" not in __import__("json").loads((tmp_path / "p.json").read_text())["cells"]
    assert np.all(Placements.read(tmp_path / "p.csv").chroma == 1.0)


@pytest.mark.parametrize("bad", ["-0.1", "1.5", "nan", "inf", "x"])
def test_bad_chroma_in_a_placements_file_is_a_clear_error(tmp_path, bad):
    folder = smooth_folder(tmp_path / "tiles", count=10)
    mosaic = make_mosaic(grey_target(), folder, cell_px=8, tile_px=16, chroma=1.0,
                         cache_dir=tmp_path / "c")
    path = tmp_path / "p.csv"
    mosaic.placements.write(path)
    lines = path.read_text().splitlines()
    assert lines[0].endswith(",chroma")
    fields = lines[1].split(",")
    fields[-1] = bad
    lines[1] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(MosaicistError, match="p.csv.*chroma"):
        Placements.read(path)
    document = mosaic.placements.to_json()
    document["cells"]["chroma"][0] = 2
    (tmp_path / "p.json").write_text(__import__("json").dumps(document))
    with pytest.raises(MosaicistError, match=r"p.json.*chroma\[0\]"):
        Placements.read(tmp_path / "p.json")


@pytest.mark.parametrize("bad", ["-0.5", "1.5", "nan"])
def test_chroma_out_of_range_is_refused(tmp_path, bad):
    result = CliRunner().invoke(main, ["make", "x.png", "--tiles", str(tmp_path),
                                       "--chroma", bad])
    assert result.exit_code != 0
    assert "--chroma" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("metric", ["seed", "lab", "oklab"])
def test_dress_tiles_scales_only_the_chroma(metric):
    from mosaicist.colour import to_space
    from mosaicist.render import dress_tiles

    rng = np.random.default_rng(3)
    tiles = smooth_images(rng, 6, 16, noise=20)
    factors = np.array([0.0, 0.0, 0.5, 0.5, 1.0, 1.0])

    def split(pictures):
        values = to_space(pictures, metric).reshape(len(pictures), -1, 3)
        deviations = values - values.mean(axis=1, keepdims=True)
        grey, weights = grey_parts(metric)
        along = deviations @ weights
        across = deviations - along[..., None] * grey
        return along, np.sqrt((across ** 2).sum(axis=(1, 2)))

    along, across = split(tiles)
    drawn = dress_tiles(tiles, metric=metric, chroma=factors)
    along_drawn, across_drawn = split(drawn)
    assert np.array_equal(drawn[4:], tiles[4:])
    # The chroma scaled by each factor, the lightness pattern kept (up to 8-bit rounding,
    # and pixels clipped at the gamut's edge in Lab and Oklab).
    assert np.allclose(across_drawn[:4], factors[:4] * across[:4], rtol=0.1,
                       atol=0.05 * across.max())
    assert np.corrcoef(along[0], along_drawn[0])[0, 1] > 0.95
