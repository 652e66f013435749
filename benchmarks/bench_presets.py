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
import shutil
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    MAX_COLOUR_ERROR,
    MAX_DELTA_E_RATIO,
    MIN_DISTINCT,
    MIN_REPEAT_DISTANCE,
    as_shown,
    cache_dir,
    data_dir,
    fresh_dir,
    gib,
    machine,
    mosaicist_command,
    positive_int,
    print_table,
    run_child,
    viewscale,
    viewscale_tool,
)


def verdict(row: dict[str, float], seed: dict[str, float] | None, library_allows: bool) -> str:
    """Which of the default's criteria a run misses ('ok' when none)."""
    missed = []
    if library_allows and row["distinct"] < MIN_DISTINCT:
        missed.append("distinct")
    if seed is not None:
        if row["de1"] > MAX_DELTA_E_RATIO * seed["de1"]:
            missed.append("dE k1")
        if row["de4"] > MAX_DELTA_E_RATIO * seed["de4"]:
            missed.append("dE k4")
    if abs(row["colour"] - row["colour_target"]) > MAX_COLOUR_ERROR * row["colour_target"]:
        missed.append("colour")
    if 0 < row["closest"] < MIN_REPEAT_DISTANCE:
        missed.append("repeat")
    return "ok" if not missed else "misses " + ", ".join(missed)


def main() -> None:
    from mosaicist.options import PRESETS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="shared data folder (default: ../shared/data)")
    parser.add_argument("--cache-dir", help="generated data, caches (default: benchmarks/.cache)")
    parser.add_argument("--tiles", default="cifar10/train",
                        help="tile folder, relative to the data folder")
    parser.add_argument("--targets", nargs="*", help="target file names (default: all)")
    parser.add_argument("--presets", nargs="*", default=list(PRESETS), choices=list(PRESETS),
                        help="presets to run")
    parser.add_argument("--candidate", action="append", default=[], metavar="NAME=FLAGS",
                        help="a trial setting run like a preset, e.g. "
                        "'unique=--max-uses 1 --tint 0.5' (repeatable)")
    parser.add_argument("--cells", type=positive_int, default=5040,
                        help="about this many cells")
    parser.add_argument("--keep", action="store_true",
                        help="keep the run's folder (mosaics, index cache) afterwards")
    args = parser.parse_args()
    for candidate in args.candidate:
        if not candidate.partition("=")[0] or "=" not in candidate:
            parser.error(f"--candidate {candidate!r}: expected NAME=FLAGS")

    data = data_dir(args.data)
    tool = viewscale_tool(data)
    if not (data / args.tiles).is_dir():
        sys.exit(f"benchmark: --tiles: {data / args.tiles} not found")
    names = args.targets or sorted(path.name for path in (data / "targets").iterdir()
                                   if path.suffix.lower() in (".jpg", ".png"))
    missing = [name for name in names if not (data / "targets" / name).is_file()]
    if missing:
        sys.exit(f"benchmark: --targets: {', '.join(missing)} not in {data / 'targets'}")
    trials = [(preset, ["--preset", preset]) for preset in args.presets]
    for candidate in args.candidate:
        name, _, flags = candidate.partition("=")
        trials.append((name, flags.split()))
    runs = fresh_dir(cache_dir(args.cache_dir) / "runs", "presets-")
    try:
        _run(args, data, tool, names, trials, runs)
    finally:
        # A cold index cache of its own (hundreds of MB for 50k tiles) and the mosaics.
        if args.keep:
            print(f"kept: {runs}")
        else:
            shutil.rmtree(runs, ignore_errors=True)


def _run(args: argparse.Namespace, data: Path, tool: Path, names: list[str],
         trials: list[tuple[str, list[str]]], runs: Path) -> None:
    """Index once into ``runs``, make every target with every trial, print the table."""
    print(f"machine: {machine()}")
    print(f"tiles: {args.tiles}; runs: {', '.join(name for name, _ in trials)}", flush=True)
    header = ["target", "run", "cells", "wall", "vs seed", "peak RSS", "distinct", "max uses",
              "closest", "PSNR k1", "dE k1", "SSIM k4", "dE k4", "colour / target", "verdict"]
    rows = []
    passed: dict[str, int] = {}
    # Index the library once, so that no run's time includes it.
    run_child([*mosaicist_command(), "index", data / args.tiles, "--cache-dir", runs / "cache",
               "-q"]).check()
    library_size = None
    for name in names:
        target = data / "targets" / name
        with Image.open(target) as picture:
            width, height = picture.size
        # A multiple of 4: viewscale reduces each cell to k x k pixels (k = 4) by whole
        # blocks of cell // k pixels, so any other size compares the mosaic with a
        # shifted crop of the target (7 px cells: its top-left 57%).
        cell = max(4, 4 * round(math.sqrt(width * height / args.cells) / 4))
        seed_seconds = None
        seed_figures = None
        for trial, flags in trials:
            output = runs / f"{Path(name).stem}-{trial}.png"
            report_path = runs / "report.json"
            child = run_child([*mosaicist_command(), "make", target, "--tiles",
                               data / args.tiles, "--cell", cell, *flags, "-o",
                               output, "--report", report_path, "--cache-dir",
                               runs / "cache", "-q"])
            if child.returncode != 0:
                row = [name, trial, "error: " + child.output.strip().splitlines()[-1]]
                rows.append(row)
                print(" | ".join(row), flush=True)
                continue
            report = json.loads(report_path.read_text())
            library_size = report["tiles"]
            # Judged against the target as a colour-managed viewer shows it (the default
            # converts an embedded profile; viewscale reads stored values as sRGB).
            figures = viewscale(tool, output, as_shown(target, runs), cell)
            metrics = report["metrics"]
            cells = report["grid"]["rows"] * report["grid"]["cols"]
            figures["distinct"] = report["distinct_tiles"] / cells
            figures["closest"] = metrics["closest_repeat"] or 0
            if trial == "seed":
                seed_seconds, seed_figures = child.seconds, figures
            judged = verdict(figures, seed_figures, library_size >= cells)
            if judged == "ok":
                passed[trial] = passed.get(trial, 0) + 1
            row = [
                name, trial, f"{cells:,}", f"{child.seconds:.1f} s",
                f"{child.seconds / seed_seconds:.1f}x" if seed_seconds else "-",
                gib(child.peak_rss_bytes),
                f"{figures['distinct']:.0%}", str(metrics["max_uses"]),
                str(metrics["closest_repeat"]),
                f"{figures['psnr1']:.2f}", f"{figures['de1']:.2f}",
                f"{figures['ssim4']:.3f}", f"{figures['de4']:.2f}",
                f"{figures['colour']:.1f} / {figures['colour_target']:.1f}", judged,
            ]
            rows.append(row)
            print(" | ".join(row), flush=True)
    print()
    print_table(rows, header)
    print()
    for trial, _ in trials:
        print(f"{trial}: meets the default's bar on {passed.get(trial, 0)} of {len(names)} "
              "targets")


if __name__ == "__main__":
    main()
