"""Targets of many identical cells under the default preset: solved once per kind of cell.

A line drawing, a logo or a blank page has thousands of cells whose pixels
are the same. Under the default preset (each photo at most once where the
library allows) they all want the same tiles; the cell-by-cell pricing
rounds let such a crowd in a few hundred a round (a line drawing of 9,690
cells: 687 s and no proof; 30,000 cells never finished), so grids of few
kinds of cell are solved as a transportation problem of the kinds instead
(:mod:`mosaicist.match._groups`).

Targets, drawn by the benchmark at 3,200 x 2,400 px:

* ``drawing``: white paper, black lines and a red ellipse (3 colours);
* ``logo``: four flat colour fields and bars of lettering on white;
* ``blank``: a white page, every cell alike;
* ``swatches``: 16 x 16 flat fields of 256 colours (a chart, pixel art): at
  full tint (the default preset's) every flat cell, whatever its colour, is
  the same distance from every tile, and one kind (session 43: as 256 kinds
  of one colour each they tied on every tile, and the make took minutes);
* ``ramp``: a smooth colour ramp (black, red-violet, green and white
  corners). At full tint its cells a colour apart are one kind, thousands of
  small kinds in all. Kinds of a few cells must go the cells' way (session
  44: 4,800 cells took 528 s by kinds, 45 s by cells); at 30,000 cells the
  kinds hold tens of cells, and go by kinds with warm lists.
  ``--forced-kinds`` measures the kinds' way.

A target may also be a picture, named relative to the data folder
(``targets/skimage_rocket.jpg``): photos with a few crowds of identical cells
among thousands of lone ones (a caption bar, a clipped white sky, a black
backdrop) go by kinds too (session 45), and ``--baseline`` measures them the
cells' way. ``--flags`` adds options to every make (``--flags="--preset seed
--max-uses 1"``: the elephants' minute).

Each case is ``mosaicist make TARGET --tiles cifar10/train --cells N`` (the
default preset, warm index) in a child process. Printed: wall time, the
match's own seconds, peak RSS, whether the assignment was certified, its
pricing rounds, distinct tiles. With ``--baseline`` the same make runs with
the kinds switched off (the cells' pricing rounds, as before), stopped after
``--baseline-limit`` seconds; with ``--forced-kinds``, with every grid solved
by kinds, stopped likewise. With ``--photos N`` the library is ``N``
photos drawn at random (seed 1) from ``--tiles``: where they are fewer than
the cells, the default preset places every photo at least once (a minimum
of uses, which the kinds keep too).

Run (from the repository root)::

    python benchmarks/bench_kinds.py
    python benchmarks/bench_kinds.py --targets drawing --cells 10000 --baseline
    python benchmarks/bench_kinds.py --photos 3000 --cells 10000 --baseline
    python benchmarks/bench_kinds.py --targets swatches --cells 10000
    python benchmarks/bench_kinds.py --targets ramp --cells 5000 10000 --forced-kinds
    python benchmarks/bench_kinds.py --targets targets/skimage_rocket.jpg --cells 30000 \
        --baseline
    python benchmarks/bench_kinds.py --targets targets/cameratrap_african_elephants.jpg \
        --cells 30000 --baseline --flags="--preset seed --max-uses 1"
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    cache_dir,
    data_dir,
    drawn_libraries,
    fresh_dir,
    gib,
    machine,
    mosaicist_command,
    positive_int,
    print_table,
    run_child,
)

TARGETS = ("drawing", "logo", "blank", "swatches", "ramp")
#: The make with the kinds switched off: every grid goes to the cells' pricing rounds.
CELLS_ONLY = ("import sys; import mosaicist.match._groups as groups; "
              "groups.CROWDED_SHARE = groups.LARGE_CROWDED_SHARE = 2.0; "
              "from mosaicist.cli import main; "
              "sys.argv = ['mosaicist', *sys.argv[1:]]; main()")
#: The make with every grid solved by kinds, however small they are.
KINDS_ONLY = ("import sys; import mosaicist.match._groups as groups; "
              "groups.GROUPED_SHARE = 1.0; groups.CROWDED_SHARE = 0.0; "
              "from mosaicist.cli import main; sys.argv = ['mosaicist', *sys.argv[1:]]; main()")


def draw_target(name: str, width: int = 3200, height: int = 2400) -> Image.Image:
    """One of :data:`TARGETS`, flat colours without antialiasing."""
    image = Image.new("RGB", (width, height), (255, 255, 255))
    pen = ImageDraw.Draw(image)
    if name == "drawing":
        for step in range(1, 8):
            pen.line([(0, step * height // 8), (width, step * height // 9)], fill=(0, 0, 0),
                     width=9)
            pen.line([(step * width // 8, 0), (step * width // 7, height)], fill=(0, 0, 0),
                     width=9)
        pen.ellipse([width // 4, height // 4, 3 * width // 4, 3 * height // 4],
                    outline=(200, 30, 30), width=25)
    elif name == "logo":
        colours = [(230, 57, 70), (29, 53, 87), (69, 123, 157), (241, 250, 238)]
        for index, colour in enumerate(colours):
            left = width // 10 + index * width // 5
            pen.rectangle([left, height // 6, left + width // 6, height // 2], fill=colour)
        rng = np.random.default_rng(0)
        for row in range(3):
            top = 3 * height // 5 + row * height // 10
            left = width // 10
            while left < 9 * width // 10:
                bar = int(rng.integers(width // 60, width // 20))
                pen.rectangle([left, top, left + bar, top + height // 20], fill=(29, 53, 87))
                left += bar + width // 80
    elif name == "swatches":
        colours = np.random.default_rng(0).integers(0, 256, (16, 16, 3))
        for row in range(16):
            for column in range(16):
                pen.rectangle([column * width // 16, row * height // 16,
                               (column + 1) * width // 16 - 1, (row + 1) * height // 16 - 1],
                              fill=tuple(int(value) for value in colours[row, column]))
    elif name == "ramp":
        across = np.linspace(0.0, 1.0, width)[None, :]
        down = np.linspace(0.0, 1.0, height)[:, None]
        ramp = np.empty((height, width, 3))
        ramp[..., 0] = across
        ramp[..., 1] = down
        ramp[..., 2] = (145 * across + 109 * down + across * down) / 255
        return Image.fromarray(np.rint(255 * ramp).astype(np.uint8))
    elif name != "blank":
        raise ValueError(f"unknown target {name!r}")
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="shared data folder (default: ../shared/data)")
    parser.add_argument("--cache-dir", help="generated data, caches (default: benchmarks/.cache)")
    parser.add_argument("--tiles", default="cifar10/train",
                        help="tile folder, relative to the data folder")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), metavar="TARGET",
                        help=f"drawn here ({', '.join(TARGETS)}) or a picture relative to "
                             "the data folder (default: every drawn one)")
    parser.add_argument("--flags", default="",
                        help="options added to every make, as one string (--flags=\"--preset "
                             "seed --max-uses 1\")")
    parser.add_argument("--cells", nargs="+", type=positive_int, default=[10000, 30000],
                        metavar="N", help="about N cells (make's --cells; default 10000 30000)")
    parser.add_argument("--baseline", action="store_true",
                        help="also run each case with the kinds switched off")
    parser.add_argument("--forced-kinds", action="store_true",
                        help="also run each case with every grid solved by kinds")
    parser.add_argument("--baseline-limit", type=positive_int, default=900, metavar="SECONDS",
                        help="stop a baseline or forced run after this long (default 900)")
    parser.add_argument("--photos", type=positive_int, metavar="N",
                        help="a library of N photos drawn from --tiles (default: all of them)")
    args = parser.parse_args()
    tiles = data_dir(args.data) / args.tiles
    if not tiles.exists():
        sys.exit(f"benchmark: --tiles: {tiles} not found")
    for name in args.targets:
        if name not in TARGETS and not (data_dir(args.data) / name).is_file():
            sys.exit(f"benchmark: --targets: {name!r} is neither drawn here "
                     f"({', '.join(TARGETS)}) nor a picture in {data_dir(args.data)}")
    runs = fresh_dir(cache_dir(args.cache_dir) / "runs", "kinds-")
    try:
        _run(args, tiles, runs)
    finally:
        shutil.rmtree(runs, ignore_errors=True)


def _run(args: argparse.Namespace, tiles: Path, runs: Path) -> None:
    print(f"machine: {machine()}")
    print(f"tiles: {args.tiles}" + (f", {args.photos:,} photos drawn at random"
                                     if args.photos else ""), flush=True)
    if args.photos:
        tiles = drawn_libraries(tiles, [args.photos], runs)[args.photos]
    targets = {}
    for name in args.targets:
        if name in TARGETS:
            targets[name] = runs / f"{name}.png"
            draw_target(name).save(targets[name])
        else:
            targets[name] = data_dir(args.data) / name
    common = ["--tiles", tiles, "--cache-dir", runs / "cache", "-q",
              *shlex.split(args.flags)]
    if args.flags:
        print(f"flags: {args.flags}")
    # The index (and the default preset's search features), built once.
    first = targets[args.targets[0]]
    run_child([*mosaicist_command(), "make", first, *common, "--cells", "100",
               "-o", runs / "warm-up.png"]).check()
    table = []
    for name in args.targets:
        for cells in args.cells:
            ways = [("default", [*mosaicist_command()])]
            limited = ["timeout", str(args.baseline_limit), sys.executable, "-c"]
            if args.baseline:
                ways.append(("cells", [*limited, CELLS_ONLY]))
            if args.forced_kinds:
                ways.append(("kinds", [*limited, KINDS_ONLY]))
            for way, command in ways:
                print(f"{name}, {cells:,} cells, {way} ...", flush=True)
                report_path = runs / "report.json"
                report_path.unlink(missing_ok=True)
                child = run_child([*command, "make", targets[name], *common, "--cells", cells,
                                   "-o", runs / "mosaic.png", "--report", report_path])
                if way != "default" and child.returncode == 124:
                    table.append([Path(name).stem, f"{cells:,}", way,
                                  f"> {args.baseline_limit} s", "(stopped)",
                                  gib(child.peak_rss_bytes), "-", "-", "-", "-", "-"])
                    continue
                child.check()
                report = json.loads(report_path.read_text())
                assignment = report["assignment"] or {}
                table.append([
                    Path(name).stem, f"{cells:,}", way, f"{child.seconds:.1f} s",
                    f"{report['timings']['match']:.1f} s", gib(child.peak_rss_bytes),
                    {True: "yes", False: "no"}.get(assignment.get("certified"), "-"),
                    f"{100 * assignment['gap']:.3f}%" if assignment else "-",
                    str(assignment.get("pricing_rounds", "-")),
                    f"{report['distinct_tiles']:,}",
                    # The ways agree to the last digit where each is certified.
                    str(assignment['objective']) if assignment else "-",
                ])
    print()
    print_table(table, ["target", "cells", "solved by", "wall", "match", "peak RSS",
                        "certified", "gap", "rounds", "distinct", "objective"])


if __name__ == "__main__":
    main()
