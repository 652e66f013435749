"""Adaptive cells against a uniform grid of about as many cells: fidelity at equal tile count.

For each shared target, one adaptive mosaic (``--cell`` px cells split down
``--depth`` levels where the luma's spread is above ``--detail``) and one
uniform mosaic whose cell size gives the grid nearest in count to the
adaptive run's leaves, both from the CIFAR-10 train JPEGs at ``--tile-px``.
Both pictures and their target crops are reduced by exact area averaging to
one pixel per ``--view`` target pixels (a common viewing scale, whatever the
cell size), where CIEDE2000 (mean) and SSIM (luma, the metrics module's
window) are measured; PSNR there too.

Run (from the repository root; a few minutes with ``--preset seed``)::

    python benchmarks/bench_adaptive.py
    python benchmarks/bench_adaptive.py --targets skimage_astronaut.png --preset balanced
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    cache_dir,
    data_dir,
    non_negative_float,
    non_negative_int,
    positive_int,
    require_pictures,
)

from mosaicist import make_mosaic  # noqa: E402
from mosaicist.imaging import read_target  # noqa: E402
from mosaicist.metrics import _ssim_luma, delta_e_2000, psnr  # noqa: E402
from mosaicist.options import PRESETS  # noqa: E402

DEFAULT_TARGETS = ("skimage_astronaut.png", "skimage_coffee.png", "starry_night_google_1280.jpg")


def reduce(picture: np.ndarray, width: int, height: int) -> np.ndarray:
    """``picture`` at ``width x height`` by exact area averaging (Pillow's box filter)."""
    return np.asarray(Image.fromarray(picture).resize((width, height), Image.Resampling.BOX))


def view_fidelity(mosaic: np.ndarray, crop: np.ndarray, view: int) -> dict[str, float]:
    """PSNR, SSIM and mean CIEDE2000 of mosaic and crop at one pixel per ``view`` target px."""
    width, height = crop.shape[1] // view, crop.shape[0] // view
    a = reduce(mosaic, width, height).astype(np.float64)
    b = reduce(crop, width, height).astype(np.float64)
    return {"psnr": psnr(float(((a - b) ** 2).mean())),
            "ssim": float(_ssim_luma(a, b) or 0.0),
            "de": float(delta_e_2000(a.astype(np.uint8), b.astype(np.uint8)).mean())}


def run(target: np.ndarray, tiles: Path, cache: Path, preset: str, view: int,
        **settings: object) -> tuple[dict[str, float], int, float]:
    started = time.perf_counter()
    mosaic = make_mosaic(target, tiles, preset=preset, cache_dir=cache, **settings)
    grid = mosaic.grid
    crop = target[grid.top:grid.top + grid.rows * grid.cell_height,
                  grid.left:grid.left + grid.cols * grid.cell_px]
    figures = view_fidelity(mosaic.image, crop, view)
    return figures, len(mosaic.placements), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="shared data folder (default ../shared/data)")
    parser.add_argument("--cache-dir", help="index cache (default benchmarks/.cache)")
    parser.add_argument("--targets", nargs="+", default=list(DEFAULT_TARGETS),
                        help="files of targets/ in the data folder (default: "
                             f"{', '.join(DEFAULT_TARGETS)})")
    parser.add_argument("--cell", type=positive_int, default=32,
                        help="the largest cell, target pixels (default 32)")
    parser.add_argument("--depth", type=non_negative_int, default=2,
                        help="times a cell may be split in four (default 2)")
    parser.add_argument("--detail", type=non_negative_float, default=12.0,
                        help="luma spread above which a cell is split (default 12)")
    parser.add_argument("--tile-px", type=positive_int, default=32,
                        help="tile side, output pixels (default 32)")
    parser.add_argument("--view", type=positive_int, default=8,
                        help="target pixels per viewing-scale pixel (default 8)")
    parser.add_argument("--preset", default="seed", choices=list(PRESETS),
                        help="preset of every run (default seed)")
    args = parser.parse_args()
    data = data_dir(args.data)
    cache = cache_dir(args.cache_dir)
    tiles = require_pictures(data / "cifar10" / "train", "tiles")
    missing = [name for name in args.targets if not (data / "targets" / name).is_file()]
    if missing:
        sys.exit(f"benchmark: --targets: {', '.join(missing)} not in {data / 'targets'}")
    print(f"tiles {tiles}, preset {args.preset}, view 1 px per {args.view} target px")
    print(f"{'target':32} {'run':30} {'cells':>6} {'dE2000':>7} {'SSIM':>6} {'PSNR':>6} "
          f"{'s':>6}")
    for name in args.targets:
        target = read_target(data / "targets" / name, 1 << 28)
        adaptive, leaves, seconds = run(
            target, tiles, cache, args.preset, args.view, cell_px=args.cell,
            tile_px=args.tile_px, adaptive=args.depth, detail=args.detail)
        height, width = target.shape[:2]
        # The uniform cell whose grid count is nearest to the adaptive leaves.
        cell = min(range(2, 4 * args.cell),
                   key=lambda c: abs((width // c) * (height // c) - leaves))
        uniform, cells, uniform_seconds = run(
            target, tiles, cache, args.preset, args.view, cell_px=cell, tile_px=args.tile_px)
        coarse, coarse_cells, coarse_seconds = run(
            target, tiles, cache, args.preset, args.view, cell_px=args.cell,
            tile_px=args.tile_px)
        rows = [(f"uniform {args.cell} px", coarse_cells, coarse, coarse_seconds),
                (f"adaptive {args.cell} px d{args.depth} T{args.detail:g}", leaves, adaptive,
                 seconds),
                (f"uniform {cell} px (same count)", cells, uniform, uniform_seconds)]
        for label, count, figures, spent in rows:
            print(f"{name[:32]:32} {label:30} {count:6d} {figures['de']:7.2f} "
                  f"{figures['ssim']:6.3f} {figures['psnr']:6.2f} {spent:6.1f}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
