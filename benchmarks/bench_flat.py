"""Photos on flat white and black: how much of each tile's own detail a cell keeps.

The default look moves each tile's colour to its cell's and its contrast
toward the cell's; on a flat white or black cell that once left the tile a
uniform patch (the photos vanished). The tint now stops short of black and
white (:mod:`mosaicist.match._contrast`). Printed per target (flat white,
flat black, and a photo for comparison) and preset: the mean over cells of
each drawn tile's standard deviation (luma) divided by the same tile's own,
the least such share over cells, and the output's mean brightness.

Tiles: the first ``--tiles N`` CIFAR-10 training JPEGs of the shared data.

Run (from the repository root)::

    python benchmarks/bench_flat.py
    python benchmarks/bench_flat.py --tiles 1000 --presets seed balanced
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    cache_dir,
    data_dir,
    fresh_dir,
    machine,
    positive_int,
    print_table,
)

from mosaicist import make_mosaic  # noqa: E402
from mosaicist.options import PRESETS  # noqa: E402

#: Rec. 601 luma weights: what the eye reads as a tile's detail.
LUMA = np.array([0.299, 0.587, 0.114])


def _luma_spread(blocks: np.ndarray) -> np.ndarray:
    """Standard deviation of luma over each ``(N, H, W, 3)`` block."""
    return (blocks.astype(np.float64) @ LUMA).reshape(len(blocks), -1).std(axis=1)


def detail_kept(mosaic) -> tuple[float, float, float]:
    """Mean and least share of each tile's own luma spread that its cell shows; mean level."""
    image = mosaic.image
    placements = mosaic.placements
    height, width = mosaic.options.tile_height, mosaic.options.tile_px
    drawn = image.reshape(placements.rows, height, placements.cols, width, 3) \
        .transpose(0, 2, 1, 3, 4).reshape(-1, height, width, 3)
    own = np.asarray(mosaic.library.tiles)[placements.tile]
    share = _luma_spread(drawn) / np.maximum(_luma_spread(own), 1e-9)
    return float(share.mean()), float(share.min()), float(image.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="shared data folder (default: ../shared/data)")
    parser.add_argument("--cache-dir", help="generated data, caches (default: benchmarks/.cache)")
    parser.add_argument("--tiles", type=positive_int, default=1000,
                        help="CIFAR-10 tiles (default 1000)")
    parser.add_argument("--presets", nargs="+", default=["seed", "balanced"],
                        choices=sorted(PRESETS), help="presets to compare")
    args = parser.parse_args()

    data = data_dir(args.data)
    sources = sorted((data / "cifar10" / "train").rglob("*.jpg"))[:args.tiles]
    if not sources:
        sys.exit(f"benchmark: no JPEGs in {data / 'cifar10' / 'train'}; pass --data PATH")
    starry = data / "targets" / "starry_night_google_1280.jpg"
    if not starry.is_file():
        sys.exit(f"benchmark: {starry} not found; pass --data PATH")
    runs = fresh_dir(cache_dir(args.cache_dir) / "runs", "flat-")
    try:
        _run(args, sources, starry, runs)
    finally:
        # A fresh folder per run (links and a cold cache): never worth keeping.
        shutil.rmtree(runs, ignore_errors=True)


def _run(args: argparse.Namespace, sources: list[Path], starry: Path, runs: Path) -> None:
    """Link the tiles into ``runs``, make every target with every preset, print the table."""
    library = runs / "tiles"
    library.mkdir()
    for index, source in enumerate(sources):
        (library / f"t{index:05d}.jpg").symlink_to(source.resolve())
    photo = np.asarray(Image.open(starry).convert("RGB").resize((320, 256)))
    targets = {"flat white": np.full((256, 320, 3), 255, np.uint8),
               "flat black": np.zeros((256, 320, 3), np.uint8),
               "Starry Night": photo}
    print(f"machine: {machine()}")
    print(f"tiles: {len(sources)} CIFAR-10 JPEGs; 16 px cells, 32 px tiles (20 x 16 cells)")
    rows = []
    for name, target in targets.items():
        for preset in args.presets:
            mosaic = make_mosaic(target, library, preset=preset, cache_dir=runs / "cache",
                                 compute_metrics=False)
            mean, least, level = detail_kept(mosaic)
            rows.append([name, preset, f"{mean:.3f}", f"{least:.3f}", f"{level:.1f}"])
    print_table(rows, ["target", "preset", "detail kept (mean)", "least", "mean level"])

if __name__ == "__main__":
    main()
