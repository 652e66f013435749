"""Every preset on every shared target: cost, variety and fidelity, judged independently.

For each target of ``targets/`` (or ``--targets``) and each preset of
:data:`mosaicist.options.PRESETS` (or ``--presets``), one ``mosaicist make``
with the CIFAR-10 train JPEGs (or ``--tiles``) in a child process, its cell
size chosen so that the grid has about ``--cells`` cells (the seed's 5,040 by
default). Printed per run: wall time and its ratio to the ``seed`` preset on
the same target, peak RSS, distinct tiles, most uses of a tile, closest
repeat (from the report), and the fidelity that the shared
``tools/viewscale.py`` measures (independent of mosaicist): PSNR, SSIM and
CIEDE2000 at one pixel per cell (k = 1) and at viewing scale (k = 4), and
the colourfulness of mosaic and target. These are the figures a default
preset is chosen by (issue 10: at least 90% distinct tiles where the
library allows, CIEDE2000 within 10% of the seed preset's or better,
colourfulness within 10% of the target's, no tile twice within 5 cells).

Run (from the repository root; minutes per capped preset on large grids)::

    python benchmarks/bench_presets.py
    python benchmarks/bench_presets.py --targets skimage_astronaut.png --presets seed varied
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    cache_dir,
    data_dir,
    fresh_dir,
    gib,
    machine,
    mosaicist_command,
    print_table,
    run_child,
)


def viewscale(tool: Path, mosaic: Path, target: Path, cell: int) -> dict[str, float]:
    """The shared tool's figures: psnr1 ssim1 de1 psnr4 ssim4 de4 colour colour_target."""
    printed = subprocess.run([sys.executable, str(tool), str(mosaic), str(target), "--cell",
                              str(cell), "--all"], capture_output=True, text=True, check=True)
    words = printed.stdout.split()
    return {words[i]: float(words[i + 1]) for i in range(0, len(words) - 1, 2)}


def main() -> None:
    from mosaicist.options import PRESETS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="shared data folder (default: ../shared/data)")
    parser.add_argument("--cache-dir", help="generated data, caches (default: benchmarks/.cache)")
    parser.add_argument("--tiles", default="cifar10/train",
                        help="tile folder, relative to the data folder")
    parser.add_argument("--targets", nargs="*", help="target file names (default: all)")
    parser.add_argument("--presets", nargs="*", default=list(PRESETS), help="presets to run")
    parser.add_argument("--cells", type=int, default=5040, help="about this many cells")
    args = parser.parse_args()

    data = data_dir(args.data)
    tool = data.parent / "tools" / "viewscale.py"
    if not tool.is_file():
        sys.exit(f"benchmark: {tool} not found (the independent fidelity measure)")
    names = args.targets or sorted(path.name for path in (data / "targets").iterdir()
                                   if path.suffix.lower() in (".jpg", ".png"))
    runs = fresh_dir(cache_dir(args.cache_dir) / "runs", "presets-")
    print(f"machine: {machine()}")
    print(f"tiles: {args.tiles}; presets: {', '.join(args.presets)}", flush=True)
    rows = []
    for name in names:
        target = data / "targets" / name
        with Image.open(target) as picture:
            width, height = picture.size
        cell = max(4, round(math.sqrt(width * height / args.cells)))
        seed_seconds = None
        for preset in args.presets:
            output = runs / f"{Path(name).stem}-{preset}.png"
            report_path = runs / "report.json"
            print(f"{name} ({cell} px cells), {preset} ...", flush=True)
            child = run_child([*mosaicist_command(), "make", target, "--tiles",
                               data / args.tiles, "--cell", cell, "--preset", preset, "-o",
                               output, "--report", report_path, "--cache-dir",
                               runs / "cache", "-q"])
            if child.returncode != 0:
                rows.append([name, preset, "error: " + child.output.strip().splitlines()[-1]])
                continue
            report = json.loads(report_path.read_text())
            seed_seconds = seed_seconds or child.seconds
            figures = viewscale(tool, output, target, cell)
            metrics = report["metrics"]
            cells = report["grid"]["rows"] * report["grid"]["cols"]
            rows.append([
                name, preset, f"{cells:,}", f"{child.seconds:.1f} s",
                f"{child.seconds / seed_seconds:.1f}x", gib(child.peak_rss_bytes),
                f"{report['distinct_tiles'] / cells:.0%}", str(metrics["max_uses"]),
                str(metrics["closest_repeat"]),
                f"{figures['psnr1']:.2f}", f"{figures['de1']:.2f}",
                f"{figures['ssim4']:.3f}", f"{figures['de4']:.2f}",
                f"{figures['colour']:.1f} / {figures['colour_target']:.1f}",
            ])
    print()
    print_table(rows, ["target", "preset", "cells", "wall", "vs seed", "peak RSS",
                       "distinct", "max uses", "closest", "PSNR k1", "dE k1", "SSIM k4",
                       "dE k4", "colour / target"])


if __name__ == "__main__":
    main()
