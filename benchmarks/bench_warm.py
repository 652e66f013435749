"""Warm lists for full grids (issue 10): the certified ``--max-uses 1`` run with and without.

Workload: Starry Night cropped to 16:9 and resized to 3840x2160 (built and
cached as ``bench_million.py`` does), 16 px cells (32,400 cells), all
50,000 ``cifar10/train`` tiles, ``--preset seed --max-uses 1`` (load 0.65,
where the warm lists apply); or any other target with ``--target``, at its
own size or resized (Pillow, Lanczos) to about ``--cells`` cells.

The two cases run in one process, one after the other, ``--repeat`` times
(``mosaicist.match._capped.WARM_CANDIDATES`` set to 0 turns the warm lists
off): this machine's speed drifts by 10-30% over minutes, so only
interleaved runs compare. A first run fills the index and feature cache.
Printed per run: wall and CPU seconds, the match phase, the pricing
rounds, whether the result is certified, and its objective (equal in both
cases: both are the certified optimum).

Run (from the repository root)::

    python benchmarks/bench_warm.py
    python benchmarks/bench_warm.py --target targets/kelley_arctic_ice.jpg --cell 12
    python benchmarks/bench_warm.py --target targets/cameratrap_african_elephants.jpg \\
        --cells 30000 --warm-only
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_million import build_target  # noqa: E402
from common import (  # noqa: E402
    cache_dir,
    cache_file,
    data_dir,
    machine,
    positive_int,
    require_file,
    require_pictures,
)
from PIL import Image  # noqa: E402

from mosaicist import make_mosaic  # noqa: E402
from mosaicist.match import _capped  # noqa: E402


def resized_target(target: Path, cells: int, cell_px: int, cache: Path) -> Path:
    """``target`` resized to about ``cells`` cells of ``cell_px``, cached as PNG.

    The grid keeps the target's aspect: ``columns = round(sqrt(cells * w / h))``,
    ``rows = round(cells / columns)``, each ``cell_px`` wide.
    """
    with Image.open(target) as image:
        width, height = image.size
        columns = max(1, round((cells * width / height) ** 0.5))
        rows = max(1, round(cells / columns))
        path = cache / f"{target.stem}_{columns}x{rows}_cells_{cell_px}px.png"
        if not path.exists():
            resized = image.convert("RGB").resize(
                (columns * cell_px, rows * cell_px), Image.Resampling.LANCZOS)
            with cache_file(path) as partial:
                resized.save(partial)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="the shared data folder (default: ../shared/data)")
    parser.add_argument("--cache-dir", help="generated data, caches (default: benchmarks/.cache)")
    parser.add_argument("--target", help="target, relative to the data folder "
                        "(default: Starry Night at 3840x2160)")
    parser.add_argument("--cell", type=positive_int, default=16, help="cell size in pixels")
    parser.add_argument("--cells", type=positive_int,
                        help="resize the target to about this many cells (keeps its aspect)")
    parser.add_argument("--warm-only", action="store_true",
                        help="run with warm lists only (without them some photos take long)")
    parser.add_argument("--tiles", default="cifar10/train", help="tiles, relative to the data")
    parser.add_argument("--repeat", type=positive_int, default=1, help="rounds of both cases")
    args = parser.parse_args()
    data = data_dir(args.data)
    cache = cache_dir(args.cache_dir)
    # Before any work: the default target is Starry Night, and a tile folder without
    # pictures would stop the first make with a traceback.
    require_file(data / (args.target or "targets/starry_night_google_1280.jpg"), "--target")
    require_pictures(data / args.tiles, "--tiles")
    target = data / args.target if args.target else build_target(data, cache)
    if args.cells:
        target = resized_target(target, args.cells, args.cell, cache)
    settings = dict(preset="seed", max_uses=1, cell_px=args.cell)
    print(machine(), flush=True)
    print(f"workload: {target.name}, {args.cell} px cells, tiles {args.tiles}", flush=True)
    make_mosaic(target, data / args.tiles, cache_dir=cache / "warm", preset="seed",
                cell_px=args.cell)  # fills the index and feature cache
    warm = _capped.WARM_CANDIDATES
    for _ in range(args.repeat):
        cases = [("warm lists", warm)] + ([] if args.warm_only else [("without", 0)])
        for name, candidates in cases:
            _capped.WARM_CANDIDATES = candidates
            cpu, wall = time.process_time(), time.perf_counter()
            mosaic = make_mosaic(target, data / args.tiles, cache_dir=cache / "warm", **settings)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            assignment = mosaic.assignment
            assert assignment is not None
            print(f"{name:>10}: {wall:6.1f} s wall, {cpu:6.1f} s CPU, match "
                  f"{mosaic.timings['match']:6.1f} s, {assignment.pricing_rounds} rounds, "
                  f"certified {assignment.certified}, objective {assignment.objective}, "
                  f"{len(assignment.tile):,} cells", flush=True)
    _capped.WARM_CANDIDATES = warm


if __name__ == "__main__":
    main()
