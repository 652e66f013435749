"""Quality metrics: fidelity (PSNR, SSIM, CIEDE2000), repetition, scoring and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_colour_folder
from PIL import Image
from skimage.color import lab2rgb

from mosaicist import MosaicistError, make_mosaic
from mosaicist.cli import main
from mosaicist.errors import OptionError
from mosaicist.metrics import (
    PSNR_CAP_DB,
    delta_e_2000,
    fidelity_metrics,
    headline,
    psnr,
    reduce_cells,
    repetition_metrics,
    score_mosaic,
)
from mosaicist.placements import Placements

FIDELITY_KEYS = {
    "psnr_full", "psnr_view", "ssim_view", "ssim_rgb_view", "ciede2000_mean_view",
    "ciede2000_p95_view", "colourfulness_view", "target_colourfulness_view", "view_px",
}


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def replicate(image: np.ndarray, factor: int) -> np.ndarray:
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


# --- fidelity ---------------------------------------------------------------------------


def test_identical_images_are_perfect():
    crop = random_image(24, 32)  # 3x4 cells of 8 px
    metrics = fidelity_metrics(replicate(crop, 2), crop, 16)
    assert set(metrics) == FIDELITY_KEYS
    # Identical images: PSNR is capped (documented), not infinite, so JSON can hold it.
    assert metrics["psnr_full"] == PSNR_CAP_DB
    assert metrics["psnr_view"] == PSNR_CAP_DB
    assert metrics["ssim_view"] == pytest.approx(1.0)
    assert metrics["ciede2000_mean_view"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["ciede2000_p95_view"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["view_px"] == 4
    json.dumps(metrics, allow_nan=False)


def test_psnr_matches_hand_computation():
    # One 2x2 cell, mosaic at the same size (tile_px = cell_px = 2).
    crop = np.zeros((2, 2, 3), np.uint8)
    mosaic = crop.copy()
    mosaic[0, 0, 0] = 10  # one error of 10 levels in 12 values: MSE = 100 / 12
    expected = 10 * math.log10(255**2 / (100 / 12))
    metrics = fidelity_metrics(mosaic, crop, 2, view_px=2)
    assert metrics["psnr_full"] == pytest.approx(expected)
    # At one pixel per cell the error is averaged over the cell: 10 / 4 in one of 3 values.
    assert fidelity_metrics(mosaic, crop, 2, view_px=1)["psnr_view"] == pytest.approx(
        10 * math.log10(255**2 / (2.5**2 / 3))
    )
    assert psnr(0.0) == PSNR_CAP_DB
    assert psnr(255.0**2) == pytest.approx(0.0)


def test_psnr_full_replicates_the_target():
    # A mosaic that is the target replicated 3x compares perfectly; shifting one
    # replicated block changes exactly its 9 pixels.
    crop = random_image(6, 6, seed=3)
    mosaic = replicate(crop, 3)
    mosaic[:3, :3] = np.clip(mosaic[:3, :3].astype(int) + 4, 0, 255).astype(np.uint8)
    difference = mosaic.astype(float) - replicate(crop, 3)
    expected = 10 * math.log10(255**2 / np.mean(difference**2))
    assert fidelity_metrics(mosaic, crop, 9, view_px=3)["psnr_full"] == pytest.approx(expected)


def test_non_integer_and_downscaled_sizes():
    crop = random_image(16, 24, seed=4)  # 2x3 cells of 8 px
    for tile_px in (12, 4, 5):  # 1.5x (Pillow BOX), 1/2 (box means), 5/8 (BOX)
        mosaic = random_image(2 * tile_px, 3 * tile_px, seed=tile_px)
        metrics = fidelity_metrics(mosaic, crop, tile_px, view_px=3)
        assert 0 < metrics["psnr_full"] < PSNR_CAP_DB
        assert metrics["ciede2000_mean_view"] > 0
    # A mosaic that is the crop's exact 2x2 box means is perfect at viewing scale.
    crop = replicate(random_image(4, 6, seed=5), 2)
    metrics = fidelity_metrics(crop[::2, ::2], crop, 2, view_px=2)
    assert metrics["psnr_full"] == PSNR_CAP_DB
    assert metrics["psnr_view"] == PSNR_CAP_DB


def test_reduce_cells_is_exact_area_averaging():
    image = random_image(6, 9, seed=6).astype(np.float64)  # 2x3 cells of 3 px
    reduced = reduce_cells(image, 3, 1)
    expected = image.reshape(2, 3, 3, 3, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(reduced, expected)
    # 3 px -> 2 px: the middle input pixel is shared half and half.
    row = np.array([[0.0, 30.0, 60.0]])[..., None].repeat(3, axis=2).repeat(3, axis=0)
    np.testing.assert_allclose(reduce_cells(row, 3, 2)[0, :, 0], [10.0, 50.0])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32])
@pytest.mark.parametrize(("cell_w", "cell_h", "view_w", "view_h"),
                         [(4, 4, 1, 1), (8, 8, 4, 4), (6, 4, 3, 2), (16, 16, 16, 16), (8, 6, 2, 1)])
def test_whole_steps_reduce_to_plain_block_means(dtype, cell_w, cell_h, view_w, view_h,
                                                 monkeypatch):
    """Sums taken rows first, then columns, in several bands: the blocks' exact means."""
    import mosaicist.metrics as metrics_module

    monkeypatch.setattr(metrics_module, "_BLOCK_ELEMENTS", cell_w * cell_h * 5 * 3 * 2)
    rng = np.random.default_rng(cell_w * 10 + cell_h)
    top = 255 if dtype == np.uint8 else 60000
    image = rng.integers(0, top, (7 * cell_h, 5 * cell_w, 3)).astype(dtype)
    reduced = reduce_cells(image, cell_w, view_w, cell_h, view_h)
    step_y, step_x = cell_h // view_h, cell_w // view_w
    expected = image.astype(np.float64).reshape(
        7 * view_h, step_y, 5 * view_w, step_x, 3).mean(axis=(1, 3))
    assert reduced.shape == expected.shape and reduced.dtype == np.float64
    np.testing.assert_allclose(reduced, expected, rtol=1e-12)


def test_ssim_on_small_and_tiny_images():
    crop = random_image(8, 8, seed=7)
    other = random_image(8, 8, seed=8)
    # 1x1 cell at 4 px: a 3-pixel window still fits.
    assert fidelity_metrics(other, crop, 8)["ssim_view"] < 0.9
    # 2 px at viewing scale is too small for any SSIM window.
    assert fidelity_metrics(other, crop, 8, view_px=2)["ssim_view"] is None


# CIEDE2000 pairs from G. Sharma, W. Wu, E. N. Dalal (2005), "The CIEDE2000
# colour-difference formula: implementation notes, supplementary test data,
# and mathematical observations", Table 1 (pairs 17 and 25; both in the sRGB gamut).
SHARMA_PAIRS = [
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
]


@pytest.mark.parametrize(("lab_a", "lab_b", "expected"), SHARMA_PAIRS)
def test_ciede2000_matches_sharma(lab_a, lab_b, expected):
    # Through the sRGB path the metrics use: Lab -> sRGB (0..255 floats) -> delta_e_2000.
    rgb_a = lab2rgb(np.array([[lab_a]])) * 255.0
    rgb_b = lab2rgb(np.array([[lab_b]])) * 255.0
    assert delta_e_2000(rgb_a, rgb_b)[0, 0] == pytest.approx(expected, abs=1e-4)


def _awkward_colour_pairs(count: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random colours plus the formula's corner cases: greys, hues across the
    circle's seam, identical pairs, black and white, tiny and huge differences."""
    rng = np.random.default_rng(seed)
    first = rng.uniform(0, 255, (count, 3))
    second = np.clip(first + rng.normal(0, 25, first.shape), 0, 255)
    greys = rng.uniform(0, 255, (50, 1)).repeat(3, axis=1)
    first[:50] = greys
    second[50:100] = greys
    first[100:150], second[100:150] = greys, np.roll(greys, 1, axis=0)
    second[150:200] = first[150:200]  # identical: 0
    second[200:250] = first[200:250] + rng.uniform(-1e-3, 1e-3, (50, 3))
    # Blues and purples whose hues lie either side of a* = 0, b* < 0 (and of +a*).
    first[250:300] = (rng.uniform(120, 130, 50)[:, None] * [1, 0, 0]) + [0, 0, 200]
    second[250:300] = (rng.uniform(0, 10, 50)[:, None] * [1, 0, 0]) + [120, 0, 200]
    first[300:350] = [255, 0, 0] + rng.uniform(0, 5, (50, 3)) * [0, 0, 1]
    second[300:350] = [255, 0, 0] + rng.uniform(0, 5, (50, 3)) * [0, 1, 0]
    first[350], second[350] = (0, 0, 0), (255, 255, 255)
    return np.clip(first, 0, 255), np.clip(second, 0, 255)


def test_lab_conversion_matches_scikit_image():
    from skimage.color import rgb2lab

    from mosaicist.metrics import srgb_to_lab

    first, second = _awkward_colour_pairs()
    colours = np.concatenate([first, second]).reshape(40, -1, 3)
    np.testing.assert_allclose(srgb_to_lab(colours), rgb2lab(colours / 255.0),
                               rtol=0, atol=1e-12)
    every_byte = np.arange(256, dtype=np.uint8)[:, None].repeat(3, axis=1)
    np.testing.assert_allclose(srgb_to_lab(every_byte), rgb2lab(every_byte / 255.0),
                               rtol=0, atol=1e-12)


def test_ciede2000_matches_scikit_image_on_awkward_pairs():
    from skimage.color import deltaE_ciede2000, rgb2lab

    first, second = _awkward_colour_pairs()
    expected = deltaE_ciede2000(rgb2lab(first / 255.0), rgb2lab(second / 255.0))
    np.testing.assert_allclose(delta_e_2000(first, second), expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(delta_e_2000(second, first), expected, rtol=0, atol=1e-9)
    assert (delta_e_2000(first[150:200], first[150:200]) == 0).all()
    # Shapes broadcast as images do, and integers are read as 8-bit levels.
    image = first[:60].reshape(6, 10, 3)
    assert delta_e_2000(image.astype(np.uint8), image.astype(np.uint8)).shape == (6, 10)


@pytest.mark.parametrize("chunk", [1, 7, 4000, 10**6])
def test_ciede2000_in_chunks_is_the_same(monkeypatch, chunk):
    from mosaicist import metrics

    monkeypatch.setattr(metrics, "_DELTA_E_CHUNK", chunk)
    first, second = _awkward_colour_pairs()
    expected = metrics._delta_e_2000(first, second)
    assert np.array_equal(delta_e_2000(first, second), expected)
    images = first.reshape(40, 100, 3), second.reshape(40, 100, 3)
    assert np.array_equal(delta_e_2000(*images), expected.reshape(40, 100))
    # Broadcast shapes are not chunked, and still broadcast.
    assert np.array_equal(delta_e_2000(images[0], second[0]),
                          metrics._delta_e_2000(images[0], second[0]))


def test_lab_of_bytes_is_the_lab_of_their_values():
    from mosaicist.metrics import srgb_to_lab

    rng = np.random.default_rng(3)
    levels = rng.integers(0, 256, (64, 33, 3), dtype=np.uint8)
    levels[0, :3] = [[0, 0, 0], [255, 255, 255], [10, 11, 12]]
    assert np.array_equal(srgb_to_lab(levels), srgb_to_lab(levels.astype(np.float64)))


@pytest.mark.parametrize("rows", [1, 2, 7, 301])
def test_view_ssims_on_two_threads_are_the_same(monkeypatch, rows):
    from mosaicist import metrics

    monkeypatch.setattr(metrics, "_THREADED_SSIM_ELEMENTS", 1)
    monkeypatch.setenv("MOSAICIST_THREADS", "2")  # two threads on a one-core machine too
    rng = np.random.default_rng(rows)
    first = rng.uniform(0, 255, (rows, 37, 3))
    second = rng.uniform(0, 255, (rows, 37, 3))
    ssim, ssim_rgb = metrics._view_ssims(first, second)
    assert ssim == metrics._ssim_luma(first, second)
    assert ssim_rgb == metrics._ssim_rgb(first, second)


@pytest.mark.parametrize(("band_rows", "chunk"), [(1, 8192), (1, 5), (3, 64), (8, 1)])
def test_colours_measured_band_by_band_are_those_of_the_whole_view(monkeypatch, band_rows,
                                                                    chunk):
    # The meter measures CIEDE2000 a few bands at a time, as they come: every figure
    # must be that of the whole picture at once, to the bit.
    from mosaicist import metrics

    monkeypatch.setattr(metrics, "_DELTA_E_CHUNK", chunk)
    rng = np.random.default_rng(band_rows * chunk)
    rows, cols = 13, 11
    mosaic = rng.integers(0, 256, (rows * 8, cols * 8, 3), dtype=np.uint8)
    crop = rng.integers(0, 256, (rows * 4, cols * 4, 3), dtype=np.uint8)
    meter = metrics.FidelityMeter(crop, 8, 4, view_px=2)
    for start in range(0, rows, band_rows):
        meter.add(mosaic[start * 8:min(rows, start + band_rows) * 8])
    measured = meter.result()
    view = metrics.reduce_cells(mosaic, 8, 2)
    target_view = metrics.reduce_cells(crop, 4, 2)
    difference = delta_e_2000(view, target_view)
    assert measured["ciede2000_mean_view"] == float(difference.mean())
    assert measured["ciede2000_p95_view"] == float(np.percentile(difference, 95))
    assert measured["ssim_view"] == metrics._ssim_luma(view, target_view)
    assert measured == metrics.fidelity_metrics(mosaic, crop, 8, view_px=2)


@pytest.mark.parametrize(("height", "width"), [(40, 60), (7, 7), (5, 9), (3, 4), (31, 8)])
def test_ssim_matches_scikit_image(height, width):
    from skimage.metrics import structural_similarity

    from mosaicist.metrics import _LUMA, SSIM_WINDOW, _ssim_luma

    rng = np.random.default_rng(height * width)
    first = rng.uniform(0, 255, (height, width, 3))
    second = np.clip(first + rng.normal(0, 30, first.shape), 0, 255)
    second[: height // 3] = 17.0  # a flat region: variance 0
    window = min(SSIM_WINDOW, height, width)
    window -= 1 - window % 2
    expected = structural_similarity(first @ _LUMA, second @ _LUMA, data_range=255.0,
                                     win_size=window, gaussian_weights=False)
    assert _ssim_luma(first, second) == pytest.approx(expected, abs=1e-12)
    assert _ssim_luma(first, first) == pytest.approx(1.0, abs=1e-12)


def test_ssim_view_is_of_luma_not_of_each_channel():
    # The documented difference from a per-channel SSIM (the judging tool's): a
    # chroma texture that leaves luma unchanged is CIEDE2000's to see, not SSIM's.
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(11)
    crop = rng.integers(100, 131, (8 * 4, 8 * 4, 3)).astype(np.int64)  # a faint texture
    # 0.299 * 15 - 0.587 * 9 + 0.114 * 7 = 0: a step along this leaves luma as it is.
    chroma = rng.integers(-1, 2, crop.shape[:2])[..., None] * np.array([15, -9, 7])
    mosaic = (crop + chroma).astype(np.uint8)
    crop = crop.astype(np.uint8)
    metrics = fidelity_metrics(mosaic, crop, 4)  # 8x8 cells of 4 px, viewed at 4 px
    assert metrics["ssim_view"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["ciede2000_mean_view"] > 3
    per_channel = structural_similarity(crop.astype(float), mosaic.astype(float),
                                        channel_axis=2, data_range=255.0, win_size=7)
    assert per_channel < 0.9
    # The judging tool's SSIM is reported too, beside ours.
    assert metrics["ssim_rgb_view"] == pytest.approx(per_channel, abs=1e-9)


@pytest.mark.parametrize(("view_px", "tile_px"), [(1, 16), (4, 16), (4, 8)])
def test_view_metrics_match_box_means_and_scikit_image(view_px, tile_px):
    # Cross-check against an independent computation: plain block means of each
    # cell, then scikit-image's PSNR, CIEDE2000 and (luma) SSIM.
    from skimage.color import deltaE_ciede2000, rgb2lab
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from mosaicist.metrics import _LUMA

    rows, cols, cell_px = 9, 11, 8
    crop = random_image(rows * cell_px, cols * cell_px, seed=21)
    mosaic = np.clip(replicate(crop, tile_px // cell_px).astype(int)
                     + np.random.default_rng(22).integers(-60, 61, (rows * tile_px,
                                                                   cols * tile_px, 3)),
                     0, 255).astype(np.uint8)

    def blocks(image: np.ndarray, cell: int) -> np.ndarray:
        step = cell // view_px
        return image.reshape(rows * view_px, step, cols * view_px, step, 3).mean(axis=(1, 3))

    view_target, view_mosaic = blocks(crop, cell_px), blocks(mosaic, tile_px)
    metrics = fidelity_metrics(mosaic, crop, tile_px, view_px=view_px)
    assert metrics["psnr_view"] == pytest.approx(
        peak_signal_noise_ratio(view_target, view_mosaic, data_range=255), abs=1e-9)
    difference = deltaE_ciede2000(rgb2lab(view_target / 255), rgb2lab(view_mosaic / 255))
    assert metrics["ciede2000_mean_view"] == pytest.approx(difference.mean(), abs=1e-9)
    assert metrics["ciede2000_p95_view"] == pytest.approx(np.percentile(difference, 95),
                                                          abs=1e-9)
    assert metrics["ssim_view"] == pytest.approx(
        structural_similarity(view_target @ _LUMA, view_mosaic @ _LUMA, data_range=255.0,
                              win_size=7), abs=1e-9)
    assert metrics["ssim_rgb_view"] == pytest.approx(
        structural_similarity(view_target, view_mosaic, channel_axis=2, data_range=255.0,
                              win_size=7), abs=1e-9)
    for key, view in (("colourfulness_view", view_mosaic),
                      ("target_colourfulness_view", view_target)):
        red_green = view[..., 0] - view[..., 1]
        yellow_blue = 0.5 * (view[..., 0] + view[..., 1]) - view[..., 2]
        assert metrics[key] == pytest.approx(
            np.sqrt(red_green.var() + yellow_blue.var())
            + 0.3 * np.sqrt(red_green.mean() ** 2 + yellow_blue.mean() ** 2), abs=1e-9)


def test_colourfulness_of_grey_and_of_red_on_black():
    from mosaicist.metrics import colourfulness

    grey = np.repeat(np.arange(0, 256, 5, dtype=np.uint8)[:, None, None], 3, axis=2)
    assert colourfulness(grey) == 0.0
    half = np.zeros((2, 2, 3), np.uint8)
    half[0, :, 0] = 255  # rg = 255 or 0, yb = 127.5 or 0: std and mean half of each
    assert colourfulness(half) == pytest.approx(1.3 * np.hypot(127.5, 63.75))
    assert colourfulness(np.zeros((0, 3))) == 0.0


def test_scoring_imports_neither_scikit_image_nor_scipy_ndimage():
    # Their imports took 0.4 s of every make; the metrics have their own maths now.
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from mosaicist.metrics import fidelity_metrics\n"
        "rng = np.random.default_rng(0)\n"
        "crop = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)\n"
        "mosaic = np.repeat(np.repeat(crop, 2, 0), 2, 1)\n"
        "assert fidelity_metrics(mosaic, crop, 16)['ssim_view'] > 0.99\n"
        "heavy = sorted(m for m in sys.modules if m.startswith(('skimage', 'scipy.ndimage')))\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_ciede2000_of_uniform_cells():
    crop = np.zeros((4, 8, 3), np.uint8)  # two 4 px cells
    crop[:, :4] = (200, 30, 40)
    crop[:, 4:] = (20, 120, 220)
    mosaic = crop.copy()
    mosaic[:, :4] = (190, 40, 40)  # only the first cell differs
    metrics = fidelity_metrics(mosaic, crop, 4, view_px=1)
    difference = float(delta_e_2000(np.array([190, 40, 40]), np.array([200, 30, 40])))
    assert difference > 1
    assert metrics["ciede2000_mean_view"] == pytest.approx(difference / 2)
    # 95th percentile of [difference, 0] with linear interpolation.
    assert metrics["ciede2000_p95_view"] == pytest.approx(0.95 * difference)


def test_mismatched_sizes_are_errors():
    crop = random_image(16, 24)
    with pytest.raises(MosaicistError, match="not a whole number"):
        fidelity_metrics(random_image(30, 48), crop, 16)
    with pytest.raises(MosaicistError, match="does not fit"):
        fidelity_metrics(random_image(32, 32), crop, 16)
    with pytest.raises(MosaicistError, match="view_px must be between"):
        fidelity_metrics(random_image(32, 48), crop, 16, view_px=0)


# --- repetition -------------------------------------------------------------------------


def brute_closest(grid: np.ndarray) -> int | None:
    rows, cols = np.indices(grid.shape)
    cells = list(zip(grid.ravel(), rows.ravel(), cols.ravel(), strict=True))
    best = None
    for index, (tile, row, col) in enumerate(cells):
        for other, other_row, other_col in cells[index + 1:]:
            if other == tile:
                distance = max(abs(row - other_row), abs(col - other_col))
                best = distance if best is None else min(best, distance)
    return best


def test_no_repeats():
    metrics = repetition_metrics(np.arange(12).reshape(3, 4))
    assert metrics == {"distinct_tiles": 12, "max_uses": 1, "closest_repeat": None}


def test_one_repeat_at_distance_two():
    grid = np.arange(12).reshape(4, 3)
    grid[2, 1] = grid[0, 0]
    assert repetition_metrics(grid) == {
        "distinct_tiles": 11, "max_uses": 2, "closest_repeat": 2,
    }


def test_several_repeated_tiles():
    grid = np.arange(100, 125).reshape(5, 5)
    grid[0, 0] = grid[4, 4] = grid[0, 4] = 7  # tile 7: three uses, each pair 4 apart
    grid[1, 1] = grid[4, 2] = 8  # tile 8: |dr| 3, |dc| 1 -> 3
    assert repetition_metrics(grid) == {
        "distinct_tiles": 25 - 5 + 2, "max_uses": 3, "closest_repeat": 3,
    }
    grid[2, 3] = grid[3, 4] = 8  # two more 8s, diagonal neighbours -> 1
    assert repetition_metrics(grid) == {
        "distinct_tiles": 25 - 7 + 2, "max_uses": 4, "closest_repeat": 1,
    }
    assert brute_closest(grid) == 1


def test_repetition_matches_brute_force():
    rng = np.random.default_rng(9)
    for _ in range(60):
        rows, cols = rng.integers(1, 9, 2)
        grid = rng.integers(0, rng.integers(1, rows * cols * 2 + 1), (rows, cols))
        assert repetition_metrics(grid)["closest_repeat"] == brute_closest(grid)


def test_repetition_on_large_grids():
    # 300x400 cells: one tile everywhere, and one tile on a 20-cell lattice.
    assert repetition_metrics(np.zeros((300, 400), np.int64)) == {
        "distinct_tiles": 1, "max_uses": 120_000, "closest_repeat": 1,
    }
    grid = np.arange(1, 120_001).reshape(300, 400)
    grid[::20, ::20] = 0
    metrics = repetition_metrics(grid)
    assert metrics["max_uses"] == 15 * 20
    assert metrics["closest_repeat"] == 20


# --- scoring files and the CLI ----------------------------------------------------------

CELL = 8
TILE_PX = 8


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A 52x44 target (6x5 cells of 8 px, centre-cropped) and its mosaic and placements."""
    root = tmp_path_factory.mktemp("quality")
    target = root / "target.png"
    Image.fromarray(random_image(44, 52, seed=10)).save(target)
    tiles = make_colour_folder(root / "tiles", 12)
    mosaic = make_mosaic(target, tiles, cell_px=CELL, tile_px=TILE_PX, cache_dir=root / "cache")
    mosaic_path = root / "mosaic.png"
    Image.fromarray(mosaic.image).save(mosaic_path)
    placements = root / "placements.csv"
    mosaic.placements.write_csv(placements)
    return root, target, mosaic_path, placements, mosaic


def test_score_mosaic(scored):
    _, target, mosaic_path, _, mosaic = scored
    metrics = score_mosaic(mosaic_path, target, CELL, tile_grid=mosaic.placements.tile_grid())
    assert (metrics["rows"], metrics["cols"]) == (5, 6)
    assert (metrics["cell_px"], metrics["tile_px"]) == (CELL, TILE_PX)
    assert FIDELITY_KEYS <= set(metrics)
    assert 0 < metrics["psnr_full"] < PSNR_CAP_DB
    assert metrics["psnr_view"] >= metrics["psnr_full"]  # averaging removes tile detail
    assert metrics["distinct_tiles"] <= 12
    assert metrics["closest_repeat"] is not None  # 30 cells from 12 tiles must repeat
    # The metrics are those of the grid's centre crop (offsets 2 and 2).
    crop = np.asarray(Image.open(target))[2:42, 2:50]
    expected = fidelity_metrics(mosaic.image, crop, TILE_PX)
    assert {key: metrics[key] for key in expected} == expected
    line = headline(metrics)
    assert "dB (view)" in line and "distinct tiles" in line and "\n" not in line


def test_score_mosaic_size_mismatch(scored):
    root, target, mosaic_path, _, _ = scored
    wrong = root / "wrong.png"
    Image.fromarray(random_image(40, 50)).save(wrong)
    with pytest.raises(MosaicistError, match="50x40 pixels does not fit the 6x5 cells") as info:
        score_mosaic(wrong, target, CELL)
    assert "\n" not in str(info.value)
    with pytest.raises(MosaicistError, match="mosaic file not found"):
        score_mosaic(root / "missing.png", target, CELL)


def test_headline_without_repetition():
    line = headline({"psnr_view": 22.34, "ssim_view": None, "ciede2000_mean_view": 9.61,
                     "ciede2000_p95_view": 18.0})
    assert line == "PSNR 22.3 dB (view), SSIM n/a, CIEDE2000 9.6 mean / 18.0 p95"
    # Each photo once: "max 1 use", not "max 1 uses".
    once = headline({"distinct_tiles": 5, "max_uses": 1, "closest_repeat": None})
    assert once == "5 distinct tiles, max 1 use, no repeats"
    twice = headline({"distinct_tiles": 3, "max_uses": 2, "closest_repeat": 4})
    assert twice == "3 distinct tiles, max 2 uses, closest repeat 4"
    # One photo in every cell: "1 distinct tile"; thousands with their separators.
    alone = headline({"distinct_tiles": 1, "max_uses": 12, "closest_repeat": 1})
    assert alone == "1 distinct tile, max 12 uses, closest repeat 1"
    many = headline({"distinct_tiles": 5040, "max_uses": 1, "closest_repeat": None})
    assert many.startswith("5,040 distinct tiles")


def test_cli_score_prints_and_writes_json(scored):
    root, target, mosaic_path, placements, _ = scored
    report = root / "score.json"
    result = CliRunner().invoke(main, [
        "score", str(mosaic_path), str(target), "--cell", str(CELL), "--json", str(report),
        "--placements", str(placements),
    ])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    keys = [line.split()[0] for line in lines]
    assert keys[:4] == ["rows", "cols", "cell_px", "tile_px"]
    assert {"psnr_view", "ssim_view", "closest_repeat"} <= set(keys)
    assert len({line.index(line.split()[1], len(line.split()[0])) for line in lines}) == 1
    assert "dB (view)" in result.stderr
    written = json.loads(report.read_text())
    assert written == score_mosaic(
        mosaic_path, target, CELL, tile_grid=Placements.read(placements).tile_grid()
    )
    assert not list(root.glob(".score.json.*"))  # no temporary left behind


def test_cli_score_reads_json_placements(scored):
    root, target, mosaic_path, _, mosaic = scored
    placements = root / "placements.json"
    mosaic.placements.write_json(placements)
    result = CliRunner().invoke(main, [
        "score", str(mosaic_path), str(target), "--cell", str(CELL), "--placements",
        str(placements),
    ])
    assert result.exit_code == 0, result.output
    expected = repetition_metrics(mosaic.placements.tile_grid())["closest_repeat"]
    printed = [line.split() for line in result.stdout.splitlines()]
    assert ["closest_repeat", str(expected)] in printed


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["{root}/missing.png", "{target}"], ["missing.png: mosaic file not found"]),
        (["{mosaic}", "{root}/nothere.png"], ["nothere.png: target file not found"]),
        (["{mosaic}", "{target}", "--cell", "7"], ["does not fit", "at --cell 7"]),
        (["{mosaic}", "{target}", "--placements", "{target}"], ["not a valid placements file"]),
        (["{mosaic}", "{target}", "--json", "{root}/no/dir/x.json"], ["does not exist"]),
        (["{mosaic}", "{target}", "--view-px", "0"], ["--view-px must be between"]),
    ],
)
def test_cli_score_errors(scored, args, words):
    root, target, mosaic_path, _, _ = scored
    filled = [arg.format(root=root, target=target, mosaic=mosaic_path) for arg in args]
    cell = [] if "--cell" in filled else ["--cell", str(CELL)]
    result = CliRunner().invoke(main, ["score", *filled, *cell])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    error = result.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("mosaicist: error: "), result.stderr
    for word in words:
        assert word in error[0], error[0]


@pytest.mark.parametrize(("tile_px", "cell_px"), [(16, 8), (12, 8), (4, 8), (8, 8)])
def test_streamed_fidelity_equals_the_whole(tile_px, cell_px):
    from mosaicist.metrics import fidelity_from_bands

    rng = np.random.default_rng(tile_px)
    rows, cols = 7, 9
    mosaic = rng.integers(0, 256, (rows * tile_px, cols * tile_px, 3), dtype=np.uint8)
    crop = rng.integers(0, 256, (rows * cell_px, cols * cell_px, 3), dtype=np.uint8)
    whole = fidelity_metrics(mosaic, crop, tile_px)
    for per_band in (1, 2, 7):
        bands = (mosaic[top:top + per_band * tile_px]
                 for top in range(0, rows * tile_px, per_band * tile_px))
        streamed = fidelity_from_bands(bands, crop, tile_px, cell_px)
        assert streamed.keys() == whole.keys()
        for key, value in whole.items():
            assert streamed[key] == pytest.approx(value, rel=1e-9), (key, per_band)



def area_average(image: np.ndarray, cell_w: int, cell_h: int, out_w: int,
                 out_h: int) -> np.ndarray:
    """Brute-force area averaging of every cell: each pixel replicated ``out`` times
    both ways, then the means of ``cell``-sized blocks (exact rational weights)."""
    rows, cols = image.shape[0] // cell_h, image.shape[1] // cell_w
    fine = np.repeat(np.repeat(image.astype(np.float64), out_h, axis=0), out_w, axis=1)
    return fine.reshape(rows * out_h, cell_h, cols * out_w, cell_w, 3).mean(axis=(1, 3))


# (cell_w, cell_h, view_w, view_h): reductions, enlargements and mixes, square or not.
UNEVEN_SIZES = [(10, 10, 4, 4), (7, 9, 4, 3), (3, 5, 4, 6), (16, 11, 4, 3), (2, 10, 3, 1),
                (11, 5, 3, 3), (3, 3, 5, 5), (9, 11, 4, 1), (1, 1, 3, 2), (6, 4, 4, 6)]


@pytest.mark.parametrize(("cell_w", "cell_h", "view_w", "view_h"), UNEVEN_SIZES)
def test_reduce_cells_is_brute_force_area_averaging(cell_w, cell_h, view_w, view_h):
    """Bytes are weighted in integers: the exact means, correctly rounded, to the bit."""
    image = random_image(4 * cell_h, 5 * cell_w, seed=cell_w * 100 + cell_h)
    expected = area_average(image, cell_w, cell_h, view_w, view_h)
    assert np.array_equal(reduce_cells(image, cell_w, view_w, cell_h, view_h), expected)
    # Float and wider integer pictures of the same levels: the same means.
    for dtype in (np.float32, np.float64, np.uint16, np.int64):
        np.testing.assert_allclose(
            reduce_cells(image.astype(dtype), cell_w, view_w, cell_h, view_h), expected,
            rtol=1e-12, atol=0)


@pytest.mark.parametrize(("cell_w", "cell_h", "view_w", "view_h"), UNEVEN_SIZES)
def test_reduce_cells_of_bands_is_the_reduction_of_the_whole(cell_w, cell_h, view_w, view_h,
                                                             monkeypatch):
    """Each cell's view depends on that cell alone: a picture reduced a row of cells at
    a time (as a streamed mosaic is) gives the whole picture's view to the last bit.
    An einsum over all cells at once summed in an order that followed their number."""
    import mosaicist.metrics as metrics_module

    rows = 9
    image = random_image(rows * cell_h, 7 * cell_w, seed=cell_h)
    whole = reduce_cells(image, cell_w, view_w, cell_h, view_h)
    parts = [reduce_cells(image[row * cell_h:(row + 1) * cell_h], cell_w, view_w, cell_h,
                          view_h) for row in range(rows)]
    assert np.array_equal(np.concatenate(parts), whole)
    floats = image.astype(np.float64)
    monkeypatch.setattr(metrics_module, "_BLOCK_ELEMENTS", 1)  # one row of cells per band
    assert np.array_equal(reduce_cells(floats, cell_w, view_w, cell_h, view_h),
                          np.concatenate([reduce_cells(floats[:4 * cell_h], cell_w, view_w,
                                                       cell_h, view_h),
                                          reduce_cells(floats[4 * cell_h:], cell_w, view_w,
                                                       cell_h, view_h)]))


@pytest.mark.parametrize(("cell_w", "cell_h", "tile_w", "tile_h"),
                         [(3, 3, 5, 5), (12, 12, 20, 20), (8, 8, 12, 12), (16, 16, 12, 12),
                          (8, 8, 4, 4), (10, 10, 30, 30), (16, 11, 32, 21), (5, 7, 3, 9)])
def test_psnr_full_is_against_the_area_averaged_crop(cell_w, cell_h, tile_w, tile_h):
    """The crop scaled to the mosaic by exact area averaging and rounded to bytes, as
    the matcher compares cells. Pillow's BOX filter, used before, is area averaging
    only when reducing: enlarged 3 -> 5 it repeats pixels ([0, 90, 180] became
    [0, 0, 90, 180, 180], not [0, 30, 90, 150, 180])."""
    rows, cols = 4, 5
    crop = random_image(rows * cell_h, cols * cell_w, seed=tile_w)
    mosaic = random_image(rows * tile_h, cols * tile_w, seed=tile_w + 1)
    scaled = np.rint(area_average(crop, cell_w, cell_h, tile_w, tile_h))
    expected = 10 * math.log10(255**2 / np.mean((mosaic - scaled) ** 2))
    metrics = fidelity_metrics(mosaic, crop, tile_w, tile_height=tile_h,
                               aspect=(cell_w, cell_h))
    assert metrics["psnr_full"] == pytest.approx(expected, abs=1e-12)
    # The crop so scaled is a perfect mosaic.
    perfect = fidelity_metrics(scaled.astype(np.uint8), crop, tile_w, tile_height=tile_h,
                               aspect=(cell_w, cell_h))
    assert perfect["psnr_full"] == PSNR_CAP_DB


def test_psnr_full_of_a_seed_mosaic_is_its_objective(tmp_path):
    """Drawn as matched (no tint), the mosaic's squared error is the matcher's objective:
    cells 12 px, tiles 20 px, compared after exact area averaging."""
    target = tmp_path / "target.png"
    Image.fromarray(random_image(48, 60, seed=31)).save(target)
    tiles = make_colour_folder(tmp_path / "tiles", 30, size=20)
    mosaic = make_mosaic(target, tiles, preset="seed", cell_px=12, tile_px=20,
                         cache_dir=tmp_path / "cache")
    values = mosaic.image.size
    assert mosaic.image.shape == (4 * 20, 5 * 20, 3)
    assert mosaic.metrics["psnr_full"] == pytest.approx(
        10 * math.log10(255**2 * values / mosaic.placements.objective), abs=1e-12)


def test_squared_error_of_a_seed_mosaic_is_its_objective_also_at_ties(tmp_path):
    """Black and white cells of 16 px in 12 px tiles make many means of exactly
    k + 1/2: the matcher's float weights rounded some of them the other way
    than the metrics' exact sums did (611,785,927 against 611,785,770)."""
    from mosaicist.metrics import _squared_error_full

    rng = np.random.default_rng(5)
    target = tmp_path / "target.png"
    Image.fromarray((rng.integers(0, 2, (96, 128, 3)) * 255).astype(np.uint8)).save(target)
    tiles = make_colour_folder(tmp_path / "tiles", 30, size=12)
    mosaic = make_mosaic(target, tiles, preset="seed", cell_px=16, tile_px=12,
                         cache_dir=tmp_path / "cache")
    grid = mosaic.grid
    crop = np.asarray(Image.open(target))[grid.top:grid.top + grid.rows * 16,
                                          grid.left:grid.left + grid.cols * 16]
    assert _squared_error_full(mosaic.image, crop) == mosaic.placements.objective


@pytest.mark.parametrize(("tile_w", "tile_h", "cell_w", "cell_h"),
                         [(16, 16, 8, 8), (12, 12, 8, 8), (5, 5, 8, 8), (4, 4, 8, 8),
                          (7, 4, 7, 4), (5, 1, 8, 6), (21, 6, 7, 2), (32, 21, 16, 11),
                          (3, 16, 3, 16), (2, 5, 6, 1)])
def test_streamed_fidelity_is_exactly_the_whole(tile_w, tile_h, cell_w, cell_h):
    """Bands of any number of cell rows, fed one by one: the very figures of the whole
    (before, the views' float sums and Pillow's resizing depended on the bands)."""
    from mosaicist.metrics import FidelityMeter

    rng = np.random.default_rng(tile_w * 31 + cell_h)
    rows, cols = 11, 6
    mosaic = rng.integers(0, 256, (rows * tile_h, cols * tile_w, 3), dtype=np.uint8)
    crop = rng.integers(0, 256, (rows * cell_h, cols * cell_w, 3), dtype=np.uint8)
    shape = {"tile_height": tile_h, "aspect": (cell_w, cell_h)}
    whole = fidelity_metrics(mosaic, crop, tile_w, **shape)
    for cuts in ([], [1], [2, 3, 7], list(range(1, rows)), sorted(rng.choice(
            np.arange(1, rows), 4, replace=False).tolist())):
        meter = FidelityMeter(crop, tile_w, cell_w, tile_height=tile_h, cell_height=cell_h,
                              aspect=(cell_w, cell_h))
        for top, bottom in zip([0, *cuts], [*cuts, rows], strict=True):
            meter.add(mosaic[top * tile_h:bottom * tile_h])
        assert meter.result() == whole, cuts


def test_pictures_must_hold_8_bit_levels():
    """Other dtypes are measured when they hold whole levels 0..255, alike; anything
    else is refused by name (a cast read 0..1 floats as black and 300 as 44)."""
    from mosaicist.errors import OptionError
    from mosaicist.metrics import FidelityMeter

    crop = random_image(16, 24, seed=41)
    mosaic = random_image(32, 48, seed=42)
    expected = fidelity_metrics(mosaic, crop, 16)
    for dtype in (np.float64, np.float32, np.int64, np.uint16):
        assert fidelity_metrics(mosaic.astype(dtype), crop.astype(dtype), 16) == expected
    with pytest.raises(OptionError, match=r"mosaic must hold 8-bit levels.*0\.0 to 1\.0.*"
                                          "fractions"):
        fidelity_metrics(mosaic / 255.0, crop, 16)
    with pytest.raises(OptionError, match="target_crop must hold 8-bit levels.* to 300"):
        fidelity_metrics(mosaic, np.maximum(crop.astype(np.int64), 0) + 45, 16)
    with pytest.raises(OptionError, match="target_crop must hold 8-bit levels"):
        FidelityMeter(crop - 0.5, 16, 8)
    meter = FidelityMeter(crop, 16, 8)
    with pytest.raises(OptionError, match="band must hold 8-bit levels.*-1"):
        meter.add(mosaic.astype(np.int16) - 1)
    with pytest.raises(OptionError, match="band must hold numbers"):
        meter.add(mosaic.astype(str))



def test_meter_refuses_bands_that_do_not_fit():
    """A band past the crop's last row, or of another width, is named as such; it
    divided by zero (the empty crop's height) or was compared with a resized crop."""
    from mosaicist.metrics import FidelityMeter

    meter = FidelityMeter(random_image(16, 24, seed=43), 16, 8)  # 2x3 cells of 8 px
    with pytest.raises(ValueError, match="a 32x16 band does not fit .* 3 cells of 16x16"):
        meter.add(random_image(16, 32))
    with pytest.raises(ValueError, match="a 48x48 band does not fit .*2 rows of cells left"):
        meter.add(random_image(48, 48))
    meter.add(random_image(32, 48, seed=44))
    with pytest.raises(ValueError, match="0 rows of cells left"):
        meter.add(random_image(16, 48))
    with pytest.raises(ValueError, match="whole rows of 16 px high cells"):
        meter.add(random_image(8, 48))
    assert meter.result() == fidelity_metrics(random_image(32, 48, seed=44),
                                              random_image(16, 24, seed=43), 16)

@pytest.mark.parametrize("level", [0, 255, None])
@pytest.mark.parametrize("cells", [(1, 1), (1, 5), (3, 1)])
def test_identical_pictures_score_exactly_perfect(level, cells):
    """Black, white or random, one cell or a row or column of them, at 1 and 4 px."""
    rows, cols = cells
    crop = (random_image(rows * 4, cols * 4, seed=rows + cols) if level is None
            else np.full((rows * 4, cols * 4, 3), level, np.uint8))
    for view_px in (1, 4):
        metrics = fidelity_metrics(replicate(crop, 3), crop, 12, view_px=view_px)
        assert metrics["psnr_full"] == metrics["psnr_view"] == PSNR_CAP_DB
        assert metrics["ciede2000_mean_view"] == metrics["ciede2000_p95_view"] == 0.0
        assert metrics["colourfulness_view"] == metrics["target_colourfulness_view"]
        if view_px * min(rows, cols) >= 3:
            assert metrics["ssim_view"] == metrics["ssim_rgb_view"] == 1.0
        else:
            assert metrics["ssim_view"] is None and metrics["ssim_rgb_view"] is None

# --- rectangular cells --------------------------------------------------------------------


def test_rectangular_cells_are_reduced_to_their_viewing_shape():
    from mosaicist.metrics import view_height

    assert [view_height(4, aspect) for aspect in ((1, 1), (3, 2), (2, 3), (4, 3), (16, 1))] \
        == [4, 3, 6, 3, 1]
    image = random_image(2 * 6, 3 * 9, seed=4).astype(np.float64)  # 2x3 cells of 9x6
    reduced = reduce_cells(image, 9, 3, cell_height=6, view_height=2)
    assert reduced.shape == (4, 9, 3)
    # Divisible both ways: plain 3x3 box means of each cell.
    assert np.allclose(reduced[0, 0], image[:3, :3].mean(axis=(0, 1)))
    uneven = reduce_cells(image, 9, 4, cell_height=6, view_height=3)
    assert uneven.shape == (6, 12, 3)
    # Each cell's reduction keeps its mean, and cells never blend.
    assert np.allclose(uneven[3:, 4:8].mean(axis=(0, 1)), image[6:, 9:18].mean(axis=(0, 1)))


def test_fidelity_of_rectangular_cells():
    crop = random_image(3 * 11, 4 * 16, seed=5)  # 4x3 cells of 16x11
    mosaic = np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1)  # tiles of 32x22
    metrics = fidelity_metrics(mosaic, crop, 32, tile_height=22, aspect=(3, 2))
    assert metrics["psnr_full"] == PSNR_CAP_DB and metrics["psnr_view"] == PSNR_CAP_DB
    assert (metrics["view_px"], metrics["view_height"]) == (4, 3)
    assert metrics["ciede2000_mean_view"] == pytest.approx(0, abs=1e-9)
    other = fidelity_metrics(random_image(3 * 21, 4 * 32, seed=6), crop, 32, tile_height=21,
                             aspect=(3, 2))
    assert other["psnr_view"] < 30 and other["view_height"] == 3
    with pytest.raises(MosaicistError, match="not a whole number of 32x21 px cells"):
        fidelity_metrics(mosaic, crop, 32, tile_height=21)


def test_score_a_rectangular_mosaic(tmp_path):
    target = random_image(40, 70, seed=7)
    Image.fromarray(target).save(tmp_path / "target.png")
    # 3:2 cells of 12x8 -> 5 cols, 5 rows, offsets 5 and 0; tiles of 24x16.
    crop = target[0:40, 5:65]
    Image.fromarray(np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1)).save(tmp_path / "m.png")
    metrics = score_mosaic(tmp_path / "m.png", tmp_path / "target.png", 12, aspect="3:2")
    assert (metrics["rows"], metrics["cols"], metrics["tile_px"], metrics["tile_height"]) == (
        5, 5, 24, 16)
    assert metrics["aspect"] == "3:2" and metrics["psnr_full"] == PSNR_CAP_DB
    # The target itself is 5 x 5 cells of 14x8 px: not 3:2 tiles.
    with pytest.raises(MosaicistError, match=r"round\(t\*2/3\) at aspect 3:2"):
        score_mosaic(tmp_path / "target.png", tmp_path / "target.png", 12, aspect="3:2")
    refused = CliRunner().invoke(main, ["score", str(tmp_path / "target.png"),
                                        str(tmp_path / "target.png"), "--cell", "12",
                                        "--aspect", "3:2"])
    assert refused.exit_code != 0 and "at --aspect 3:2" in refused.output
    result = CliRunner().invoke(main, ["score", str(tmp_path / "m.png"),
                                       str(tmp_path / "target.png"), "--cell", "12",
                                       "--aspect", "3:2"])
    assert result.exit_code == 0, result.output
    assert "tile_height" in result.output


@pytest.mark.parametrize("overwritten", ["mosaic", "target", "placements"])
def test_cli_score_refuses_json_over_an_input(scored, tmp_path, overwritten):
    """``--json`` naming an input would replace that picture or file with the metrics."""
    _, target, mosaic_path, placements, _ = scored
    inputs = {"mosaic": mosaic_path, "target": target, "placements": placements}
    copies = {}
    for name, path in inputs.items():
        copies[name] = tmp_path / path.name
        copies[name].write_bytes(path.read_bytes())
    before = {name: path.read_bytes() for name, path in copies.items()}
    result = CliRunner().invoke(main, [
        "score", str(copies["mosaic"]), str(copies["target"]), "--cell", str(CELL),
        "--placements", str(copies["placements"]), "--json", str(copies[overwritten]),
    ])
    assert result.exit_code != 0
    error = result.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("mosaicist: error: "), result.stderr
    assert f"the JSON file is also the {overwritten}" in error[0], error[0]
    assert {name: path.read_bytes() for name, path in copies.items()} == before
    assert result.stdout == ""  # refused before any work


def test_cli_score_refuses_an_empty_aspect(scored):
    """An empty ``--aspect`` is a mistake, not a request for square cells."""
    _, target, mosaic_path, _, _ = scored
    result = CliRunner().invoke(main, ["score", str(mosaic_path), str(target), "--cell",
                                       str(CELL), "--aspect", ""])
    assert result.exit_code != 0
    error = result.stderr.strip().splitlines()
    assert len(error) == 1 and "--aspect" in error[0], result.stderr


def _huge_png_header(path, side: int = 100_000) -> None:
    """A PNG whose header declares ``side`` x ``side`` pixels (a decompression bomb's)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("huge", ["mosaic", "target"])
def test_cli_score_refuses_a_huge_declared_size_without_an_unusable_hint(scored, tmp_path,
                                                                         huge):
    """A bomb's header is refused before decoding; ``score`` has no setting to raise it."""
    _, target, mosaic_path, _, _ = scored
    bomb = tmp_path / "bomb.png"
    _huge_png_header(bomb)
    files = {"mosaic": mosaic_path, "target": target, huge: bomb}
    result = CliRunner().invoke(main, ["score", str(files["mosaic"]), str(files["target"]),
                                       "--cell", str(CELL)])
    assert result.exit_code == 1
    error = result.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(f"mosaicist: error: {bomb}: "), result.stderr
    assert "100,000x100,000 = 10,000,000,000 pixels is over the limit" in error[0], error[0]
    assert f"a {huge} may have to be scored" in error[0], error[0]
    assert "max_target_pixels" not in error[0] and "max-target-pixels" not in error[0]


def test_score_names_a_mosaic_that_is_no_path(tmp_path):
    # An array (a mosaic in memory) raised pathlib's TypeError, naming no parameter.
    from mosaicist.errors import OptionError
    from mosaicist.metrics import score_mosaic

    target = tmp_path / "t.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(target)
    with pytest.raises(OptionError, match="mosaic_path must be a path"):
        score_mosaic(np.zeros((8, 8, 3), np.uint8), target, 4)
    with pytest.raises(OptionError, match="target_path must be a path"):
        score_mosaic(target, 5, 4)


# (cell_w, cell_h, view_w, view_h) whose blocks divide the cells: 16-bit sums (up to
# 257 pixels a block), 32-bit ones, added slice by slice or (past 64 a side) summed.
EVEN_SIZES = [(32, 32, 4, 4), (16, 16, 1, 1), (20, 20, 1, 1), (16, 64, 1, 1), (130, 2, 2, 1),
              (6, 4, 3, 2)]


@pytest.mark.parametrize(("cell_w", "cell_h", "view_w", "view_h"), EVEN_SIZES)
@pytest.mark.parametrize("fill", ["random", "white"])
def test_reduce_cells_of_divisible_blocks_sums_bytes_without_overflow(cell_w, cell_h, view_w,
                                                                      view_h, fill):
    image = random_image(3 * cell_h, 4 * cell_w, seed=cell_w * 7 + cell_h)
    if fill == "white":
        image[:] = 255  # the largest sums each width must hold
    expected = area_average(image, cell_w, cell_h, view_w, view_h)
    assert np.array_equal(reduce_cells(image, cell_w, view_w, cell_h, view_h), expected)
    np.testing.assert_array_equal(
        reduce_cells(image.astype(np.uint16), cell_w, view_w, cell_h, view_h), expected)


def _patterned_grid(rng: np.random.Generator, kind: int) -> np.ndarray:
    """A small tile grid of one of the shapes that stress the closest-repeat search."""
    rows, cols = (int(side) for side in rng.integers(1, 15, 2))
    row, col = np.indices((rows, cols))
    if kind == 0:  # random, from few or many tiles
        return rng.integers(0, rng.integers(1, rows * cols + 2), (rows, cols))
    if kind == 1:  # all distinct
        return rng.permutation(rows * cols).reshape(rows, cols)
    if kind == 2:  # one tile everywhere
        return np.zeros((rows, cols), np.int64)
    if kind == 3:  # horizontal stripes of h rows, tiles recurring every few stripes
        return (row // rng.integers(1, 8)) % rng.integers(1, 6)
    if kind == 4:  # a tile every D cells along rows, staggered from row to row
        spacing = int(rng.integers(1, 7))
        return (row % spacing) * spacing + (col + row * rng.integers(0, 4)) % spacing
    # blocks of b x b cells, block tiles recurring
    side = rng.integers(1, 5)
    return ((row // side) * 7 + col // side) % rng.integers(1, 9)


def test_repetition_closest_repeat_matches_brute_force_on_patterns():
    # The block search must stay exact on every shape: stripes, staggered lattices
    # (where the row-major and column-major bounds differ), blocks, the extremes.
    rng = np.random.default_rng(2026)
    for index in range(900):
        grid = _patterned_grid(rng, index % 6)
        assert repetition_metrics(grid)["closest_repeat"] == brute_closest(grid), grid.tolist()


def test_repetition_on_large_patterned_grids():
    # 1000x1000: 7-row stripes, tiles every 7 cells (in place and staggered) and one
    # repeated half; each answer known from its construction.
    row, col = np.indices((1000, 1000))
    stripes = np.repeat(np.arange(143), 7)[:1000, None].repeat(1000, axis=1)
    assert repetition_metrics(stripes) == {
        "distinct_tiles": 143, "max_uses": 7000, "closest_repeat": 1}
    assert repetition_metrics((row % 7) * 7 + col % 7)["closest_repeat"] == 7
    assert repetition_metrics((col - (row % 7) * 7) % 49)["closest_repeat"] == 7
    half = np.random.default_rng(0).permutation(500_000).reshape(500, 1000)
    assert repetition_metrics(np.vstack([half, half]))["closest_repeat"] == 500


def test_cli_score_refuses_json_placements_of_another_target(scored, tmp_path):
    """A target of another size put the recorded grid on another region, scored without a
    word; one of the same size with other pixels is scored, and said to differ."""
    root, target, mosaic_path, _, mosaic = scored
    placements = tmp_path / "placements.json"
    mosaic.placements.write_json(placements)
    picture = np.asarray(Image.open(target))
    bigger = tmp_path / "bigger.png"
    Image.fromarray(np.repeat(np.repeat(picture, 2, axis=0), 2, axis=1)).save(bigger)
    refused = CliRunner().invoke(main, ["score", str(mosaic_path), str(bigger),
                                        "--placements", str(placements)])
    assert refused.exit_code != 0
    assert (f"{placements}: the placements are for another target: {bigger} is not the "
            "picture they were made from (52x44 px then, 104x88 now)") in refused.stderr
    inverted = tmp_path / "inverted.png"
    Image.fromarray(255 - picture).save(inverted)
    scored_anyway = CliRunner().invoke(main, ["score", str(mosaic_path), str(inverted),
                                              "--placements", str(placements)])
    assert scored_anyway.exit_code == 0, scored_anyway.output
    assert (f"mosaicist: warning: {inverted}: not the picture {placements} was made from "
            "(same 52x44 px, other pixels); scored as it is") in scored_anyway.stderr
    assert "target_changed" not in scored_anyway.stdout
    same = CliRunner().invoke(main, ["score", str(mosaic_path), str(target),
                                     "--placements", str(placements)])
    assert same.exit_code == 0 and "warning" not in same.stderr, same.output


def test_score_says_which_setting_other_cells_need(tmp_path):
    """A 3:2 mosaic scored without --aspect was refused naming nothing to change."""
    target = random_image(40, 70, seed=7)
    Image.fromarray(target).save(tmp_path / "target.png")
    crop = target[0:40, 5:65]
    Image.fromarray(np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1)).save(tmp_path / "m.png")
    refused = CliRunner().invoke(main, ["score", str(tmp_path / "m.png"),
                                        str(tmp_path / "target.png"), "--cell", "12"])
    assert refused.exit_code != 0
    assert "tiles of another shape? give the --aspect it was made with" in refused.stderr


@pytest.mark.parametrize("grid, said", [
    (np.zeros(30, int), "tile_grid must be a \\(rows, cols\\) array"),
    (np.array(3), "got shape \\(\\)"),
    (np.zeros((0, 6), int), "got shape \\(0, 6\\)"),
    (np.full((5, 6), 1.5), "tile_grid must hold whole tile ids, got float64"),
    (np.full((5, 6), "a"), "tile_grid must hold whole tile ids"),
])
def test_score_mosaic_names_a_tile_grid_it_cannot_use(scored, grid, said):
    # A 1-D grid failed as "not enough values to unpack (expected 2, got 1)".
    _, target, mosaic_path, _, _ = scored
    with pytest.raises(OptionError, match=said):
        score_mosaic(mosaic_path, target, CELL, tile_grid=grid)


def test_score_at_another_cell_size_says_the_sizes_that_fit(scored):
    # Scored at half its cell size, a mosaic was said to be a 'make --print' one.
    _, target, mosaic_path, _, _ = scored
    with pytest.raises(OptionError) as refused:
        score_mosaic(mosaic_path, target, CELL // 2)
    assert str(refused.value).endswith(f"; made at cell_px {CELL}?")
    assert "--print" not in str(refused.value)
