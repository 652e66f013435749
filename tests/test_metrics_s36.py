"""``make --report`` against the independent measure's own formula, written out here.

The project is judged by a measure kept outside it: target and mosaic read as
Pillow's ``convert("RGB")`` gives them, the target centre-cropped to whole
cells, both reduced to ``k`` x ``k`` pixels a cell by box means of whole
blocks, then scikit-image's PSNR, SSIM over the three channels and CIEDE2000,
and Hasler and Suesstrunk's colourfulness. The report claims to equal it for
square cells whose sizes ``k`` divides, with the target as ``make`` reads it
(the module docstring of :mod:`mosaicist.metrics`): checked here on targets
that are not whole cells, palette and grey targets, an overlay and adaptive
cells, at ``k = 4`` (the report) and ``k = 1`` (``score --view-px 1``).
"""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_colour_folder
from PIL import Image

import mosaicist.metrics
from mosaicist.cli import main
from mosaicist.metrics import fidelity_metrics, score_mosaic, view_height

#: The report's figures and the names the judge prints them under (at k = 4).
JUDGED = {"psnr_view": "psnr", "ssim_rgb_view": "ssim", "ciede2000_mean_view": "de2000",
          "colourfulness_view": "colour", "target_colourfulness_view": "colour_target"}


def _judged(mosaic: np.ndarray, target: np.ndarray, cell_px: int, k: int) -> dict:
    """The judge's figures, its formula written out: ``target`` seed-cropped to whole
    ``cell_px`` cells, both pictures reduced by box means of whole blocks from the top
    left so that a cell is ``k`` x ``k`` pixels."""
    skimage_metrics = pytest.importorskip("skimage.metrics")
    skimage_colour = pytest.importorskip("skimage.color")
    height, width = target.shape[:2]
    rows, cols = height // cell_px, width // cell_px
    top, left = (height - rows * cell_px) // 2, (width - cols * cell_px) // 2
    target = target[top:top + rows * cell_px, left:left + cols * cell_px]

    def reduced(picture: np.ndarray) -> np.ndarray:
        block_y, block_x = picture.shape[0] // (rows * k), picture.shape[1] // (cols * k)
        picture = picture[:rows * k * block_y, :cols * k * block_x].astype(np.float64)
        return picture.reshape(rows * k, block_y, cols * k, block_x, 3).mean((1, 3))

    def colourfulness(picture: np.ndarray) -> float:
        red, green, blue = picture[..., 0], picture[..., 1], picture[..., 2]
        red_green, yellow_blue = red - green, 0.5 * (red + green) - blue
        return float(np.hypot(red_green.std(), yellow_blue.std())
                     + 0.3 * np.hypot(red_green.mean(), yellow_blue.mean()))

    seen, wanted = reduced(mosaic), reduced(target)
    window = min(7, min(wanted.shape[:2]) // 2 * 2 - 1)
    return {
        "psnr": skimage_metrics.peak_signal_noise_ratio(wanted, seen, data_range=255),
        "ssim": skimage_metrics.structural_similarity(wanted, seen, channel_axis=2,
                                                      data_range=255, win_size=window),
        "de2000": float(skimage_colour.deltaE_ciede2000(skimage_colour.rgb2lab(wanted / 255),
                                                        skimage_colour.rgb2lab(seen / 255))
                        .mean()),
        "colour": colourfulness(seen),
        "colour_target": colourfulness(wanted),
    }


def _smooth_picture(width: int, height: int, seed: int) -> np.ndarray:
    """A picture with structure at several scales (gradients and a few blobs)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    planes = [128 + 90 * np.sin(x / rng.uniform(4, 12) + rng.uniform(0, 6))
              * np.cos(y / rng.uniform(4, 12) + rng.uniform(0, 6)) for _ in range(3)]
    noise = rng.normal(0, 12, (height, width, 3))
    return np.clip(np.stack(planes, axis=-1) + noise, 0, 255).astype(np.uint8)


# name: (target mode, cell_px, extra make options); targets 3 and 5 pixels over whole cells.
CASES = {
    "colour": ("RGB", 8, ["--tile-px", "16"]),
    "palette": ("P", 8, ["--tile-px", "8"]),
    "grey": ("L", 4, ["--tile-px", "8", "--preset", "seed"]),
    "overlay": ("RGB", 8, ["--tile-px", "16", "--overlay", "0.4"]),
    "adaptive": ("RGB", 8, ["--tile-px", "16", "--adaptive", "1", "--detail", "20"]),
}


@pytest.mark.parametrize("name", CASES)
def test_make_report_equals_the_judges_formula(tmp_path, name):
    mode, cell_px, options = CASES[name]
    cols, rows = 9, 8  # a view of 9 x 8 pixels at k = 1: both take a window of 7
    picture = Image.fromarray(_smooth_picture(cols * cell_px + 3, rows * cell_px + 5, 36))
    target = tmp_path / "target.png"
    (picture.quantize(48) if mode == "P" else picture.convert(mode)).save(target)
    tiles = make_colour_folder(tmp_path / "tiles", 30)
    mosaic, report = tmp_path / "mosaic.png", tmp_path / "report.json"
    result = CliRunner().invoke(main, ["make", str(target), "--tiles", str(tiles), "--cell",
                                       str(cell_px), "-o", str(mosaic), "--report",
                                       str(report), "--quiet", *options])
    assert result.exit_code == 0, result.output
    measured = json.loads(report.read_text())["metrics"]
    # The judge reads both files as Pillow converts them: these targets have no
    # transparency, profile, orientation or 16-bit values, so read_target agrees.
    written = np.asarray(Image.open(mosaic).convert("RGB"))
    original = np.asarray(Image.open(target).convert("RGB"))

    judged = _judged(written, original, cell_px, 4)
    for ours, theirs in JUDGED.items():
        assert measured[ours] == pytest.approx(judged[theirs], rel=1e-9, abs=1e-9), ours

    closest = score_mosaic(mosaic, target, cell_px, view_px=1)
    judged_closest = _judged(written, original, cell_px, 1)
    for ours in ("psnr_view", "ssim_rgb_view", "ciede2000_mean_view"):
        assert closest[ours] == pytest.approx(judged_closest[JUDGED[ours]], rel=1e-9,
                                              abs=1e-9), ours


def test_view_heights_round_halves_up_as_documented():
    # 5 px at 2:1 is 2.5 px high: 3, as the cells' and tiles' heights (not Python's round).
    assert view_height(5, (2, 1)) == 3
    assert view_height(1, (2, 3)) == 2
    cells = np.zeros((2 * 5, 2 * 10, 3), np.uint8)  # 2 x 2 cells of 10 x 5 px (2:1)
    measured = fidelity_metrics(cells, cells, 10, view_px=5, tile_height=5, aspect=(2, 1))
    assert measured["view_height"] == 3


def test_metrics_docstring_examples_hold():
    failures, tried = doctest.testmod(mosaicist.metrics)
    assert tried > 0 and failures == 0
