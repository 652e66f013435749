"""The auction over every pair against the lists' rounds (issue 10): a few hundred photos, a poster.

Workload: ``--photos N`` photos drawn at random (seed 1, as ``bench_capped.py``
draws them) from the tile folder, a target resized to about ``--cells``
cells (as ``bench_warm.py`` resizes it), the default preset (its use limit
raised to fill the grid, spacing 5). Each round makes the mosaic twice in
this process: with the auction (:mod:`mosaicist.match._auction`, the
default where it fits) and with the lists' pricing rounds
(``mosaicist.match._capped.AUCTION_TILES`` set to 0). A first make fills the
index and loads the compiled loops, so that neither case pays for them.
Printed per run: wall and match seconds, the pricing and spacing rounds,
whether the capped optimum is certified, its lower bound (the same both ways
wherever both finish) and the gap after spacing.

Run (from the repository root)::

    python benchmarks/bench_auction.py --photos 400 --cells 60000
    python benchmarks/bench_auction.py --photos 400 --cells 30000 \\
        --target targets/cameratrap_american_black_bear.jpg
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_capped import drawn_photos  # noqa: E402
from common import cache_dir, data_dir, fresh_dir, machine, positive_int  # noqa: E402

from mosaicist import make_mosaic  # noqa: E402
from mosaicist.match import _capped  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="the shared data folder (default: ../shared/data)")
    parser.add_argument("--cache-dir", help="generated data, caches (default: benchmarks/.cache)")
    parser.add_argument("--target", default="targets/starry_night_google_1280.jpg",
                        help="target, relative to the data folder")
    parser.add_argument("--tiles", default="cifar10/train", help="tiles, relative to the data")
    parser.add_argument("--photos", type=positive_int, default=400,
                        help="photos drawn from the tiles")
    parser.add_argument("--cells", type=positive_int, default=60_000, help="about this many cells")
    parser.add_argument("--repeat", type=positive_int, default=1, help="rounds of both cases")
    args = parser.parse_args()
    data = data_dir(args.data)
    target = data / args.target
    for path, what in ((target, "--target"), (data / args.tiles, "--tiles")):
        if not path.exists():
            sys.exit(f"benchmark: {what}: {path} not found")
    runs = fresh_dir(cache_dir(args.cache_dir) / "runs", "auction-")
    try:
        _run(args, target, data, runs)
    finally:
        # The drawn photos' links and a cold cache of their own: never reused.
        shutil.rmtree(runs, ignore_errors=True)


def _run(args: argparse.Namespace, target: Path, data: Path, runs: Path) -> None:
    """Draw the photos into ``runs``, warm up, then time both cases ``--repeat`` times."""
    tiles = drawn_photos(data / args.tiles, args.photos, runs / "photos")
    settings = dict(cells=args.cells, cache_dir=runs / "cache")
    print(machine(), flush=True)
    print(f"workload: {args.target}, about {args.cells:,} cells, {args.photos} photos drawn "
          f"from {args.tiles}, default preset", flush=True)
    make_mosaic(target, tiles, **settings)  # the index, the compiled loops
    limit = _capped.AUCTION_TILES
    try:
        for _ in range(args.repeat):
            for name, tiles_allowed in (("auction", limit), ("lists", 0)):
                _capped.AUCTION_TILES = tiles_allowed
                wall = time.perf_counter()
                mosaic = make_mosaic(target, tiles, **settings)
                wall = time.perf_counter() - wall
                done = mosaic.assignment
                assert done is not None
                print(f"{name:>8}: {wall:6.1f} s wall, match {mosaic.timings['match']:6.1f} s, "
                      f"{len(done.tile):,} cells, {mosaic.options.max_uses} uses, spacing "
                      f"{mosaic.options.min_spacing}, pricing rounds {done.pricing_rounds}, "
                      f"spacing rounds {done.iterations}, certified {done.certified}, lower "
                      f"bound {done.lower_bound:.10g}, gap {done.gap:.3%}", flush=True)
    finally:
        _capped.AUCTION_TILES = limit


if __name__ == "__main__":
    main()
