"""The studio's live preview: seconds from a setting change to the preview picture.

Workload (issue 13): a target (Starry Night, 1280 x 1014, by default) and the
50,000 ``cifar10/train`` JPEGs as a folder source, indexed once (warm cache);
one :class:`mosaicist.studio._preview.Previewer`, as the studio keeps it, asked
for a preview of about 2,000 cells after each change of a setting, starting
from the default preset (``balanced``: each photo once, 5 cells apart, tint 1,
contrast 0.5). The goal: under 1 second once the library is warm, for every
change, the default preset included.

Printed per change, once the library is warm (the first preview reads and
reduces it; the other colour metrics are described in the background
meanwhile, and the benchmark waits for that): the seconds of the first
preview after the change (what the page waits for; a change to another
index, such as the aspect or the seed preset's centre crops, also pays for
warming that library), the best of ``--repeat`` more, the cells and distinct
tiles of the preview, and the first preview's phases (open, describe,
search, assign, render). Also the time of the very first preview (reading
and reducing the library) and the process's peak RSS.

Run (from the repository root; about a minute with a warm index)::

    python benchmarks/bench_preview.py
    python benchmarks/bench_preview.py --target skimage_astronaut.png --repeat 5
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cache_dir, data_dir, machine, non_negative_int, print_table  # noqa: E402

#: (label, settings given, preview cells), in the order a person might change them.
CHANGES = (
    ("default (balanced)", {}, 2000),
    ("tint 0.5", {"tint": 0.5}, 2000),
    ("tint 0", {"tint": 0.0}, 2000),
    ("max uses 2", {"max_uses": 2}, 2000),
    ("max uses 3, spacing 3", {"max_uses": 3, "min_spacing": 3}, 2000),
    ("metric lab", {"metric": "lab"}, 2000),
    ("metric oklab", {"metric": "oklab"}, 2000),
    ("contrast 0", {"contrast": 0.0}, 2000),
    ("cells 1,000 (mosaic)", {"cells": 1000}, 2000),
    ("cells 20,000 (mosaic)", {"cells": 20000}, 2000),
    ("preview of 5,000 cells", {}, 5000),
    ("aspect 3:2", {"aspect": "3:2"}, 2000),
    ("augment flips", {"augment": "flips"}, 2000),
    ("augment all", {"augment": "all"}, 2000),
    ("preset seed (centre crops)", {"preset": "seed"}, 2000),
    ("default again", {}, 2000),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="shared data folder [default: ../shared/data]")
    parser.add_argument("--cache-dir", help="cache folder [default: benchmarks/.cache]")
    parser.add_argument("--target", default="starry_night_google_1280.jpg",
                        help="a file of targets/ in the data folder")
    parser.add_argument("--tiles", default="cifar10/train", help="tile folder in the data folder")
    parser.add_argument("--repeat", type=non_negative_int, default=3,
                        help="previews after the first")
    args = parser.parse_args()

    from mosaicist.library import TileLibrary
    from mosaicist.options import MosaicOptions
    from mosaicist.studio._preview import Previewer

    data = data_dir(args.data)
    cache = cache_dir(args.cache_dir)
    target = data / "targets" / args.target
    tiles = str(data / args.tiles)
    for path, what in ((target, "--target"), (data / args.tiles, "--tiles")):
        if not path.exists():
            sys.exit(f"benchmark: {what}: {path} not found")
    print(f"machine: {machine()}")
    print(f"target: {target.name}; tiles: {tiles}; cache: {cache}", flush=True)
    # Every index the changes need, as an index job of the studio would make it.
    for settings in ({}, {"aspect": "3:2"}, {"preset": "seed"}):
        options = MosaicOptions(**settings)
        started = time.perf_counter()
        library = TileLibrary.open(tiles, options.match_px or 32, cache_dir=cache,
                                   aspect=options.aspect_ratio, crop=options.crop)
        print(f"index {settings or 'default'}: {len(library)} tiles, "
              f"{time.perf_counter() - started:.2f} s", flush=True)

    previewer = Previewer(cache)
    started = time.perf_counter()
    _, info = previewer.preview(target, tiles, MosaicOptions())
    print(f"first preview (reads and reduces the library, describes it in sRGB): "
          f"{time.perf_counter() - started:.2f} s; phases {info['timings']}", flush=True)
    started = time.perf_counter()
    previewer.warm_up(tiles, MosaicOptions())
    print(f"then warm in Lab and Oklab too (in the background while the page shows the "
          f"first preview): {time.perf_counter() - started:.2f} s more", flush=True)

    rows = []
    worst = 0.0
    for label, settings, cells in CHANGES:
        options = MosaicOptions(**settings)
        started = time.perf_counter()
        _, info = previewer.preview(target, tiles, options, cells=cells)
        first = time.perf_counter() - started
        again = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            previewer.preview(target, tiles, options, cells=cells)
            again.append(time.perf_counter() - started)
        worst = max(worst, first)
        phases = " ".join(f"{name} {value:.2f}" for name, value in info["timings"].items())
        rows.append([label, f"{first:.2f} s", f"{min(again):.2f} s" if again else "-",
                     f"{info['cols']}x{info['rows']}", info["distinct_tiles"],
                     info["relaxed"], phases])
        print(f"  {label}: {first:.2f} s", file=sys.stderr, flush=True)
    print()
    print_table(rows, header=["change", "first", "best again", "grid", "distinct", "relaxed",
                              "phases of the first (s)"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\nslowest first preview after a change: {worst:.2f} s (goal < 1 s); "
          f"peak RSS {peak:.2f} GiB")


if __name__ == "__main__":
    main()
