"""The seed's workload: seed loop vs mosaicist, per cell and end to end.

What it measures
----------------
Workload: ``targets/starry_night_google_1280.jpg`` (shared data), 16 px cells,
32 px tiles, all 50,000 images of ``cifar10/train`` as a folder source
(library order = sorted relative path): 63 x 80 = 5,040 cells.

* **Seed loop** - a faithful re-implementation of the seed blog's matcher:
  tiles as a list of int16 ``32x32x3`` arrays; each 16 px cell scaled up x2 by
  pixel replication (``np.repeat``, what ``cv2.resize(..., INTER_AREA)``
  does for an exact x2 enlargement); for each cell ``np.linalg.norm(tile -
  cell)`` against every tile in a Python loop, then ``argmin``; cells spread
  over a ``multiprocessing.Pool`` of ``os.cpu_count()`` processes. Run on an
  evenly spaced sample of cells (``--seed-cells``) and extrapolated.
* **mosaicist matcher** - ``match_exact`` with cached (warm) features on all
  5,040 cells (best of ``--repeat``).
* **End to end** - ``mosaicist make`` in a child process, cold (fresh, empty
  cache: indexing 50k JPEGs + features + match + render + PNG write) and warm
  (same cache again); wall time and the child's peak RSS (``os.wait4``).
* **Exactness** - fraction of cells whose mosaicist pick equals the seed
  loop's pick (its sample) and ``brute_force``'s integer optimum (a larger
  sample, ``--brute-cells``). The seed's argmin over float norms can only
  differ from the integer optimum on exact ties; both are reported.

Goals: matcher >= 1000x faster per cell than the seed loop; end to end >= 200x
with a warm index; every pick the brute-force optimum (fraction 1.0).

Run (from the repository root)::

    python benchmarks/bench_seed.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from mosaicist.errors import counted

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    cache_dir,
    data_dir,
    fresh_dir,
    gib,
    machine,
    mosaicist_command,
    positive_int,
    print_table,
    require_file,
    require_pictures,
    run_child,
    seconds,
)

CELL_PX = 16
TILE_PX = 32
TARGET = "targets/starry_night_google_1280.jpg"

_SEED_TILES: list[np.ndarray] = []


def load_seed_tiles(folder: Path) -> list[np.ndarray]:
    """The seed's tile list: every image, sorted relative path, as int16 (32, 32, 3)."""
    from PIL import Image

    tiles = []
    for path in sorted(folder.rglob("*.jpg"), key=lambda p: p.relative_to(folder).as_posix()):
        with Image.open(path) as image:
            tiles.append(np.asarray(image.convert("RGB"), dtype=np.int16))
    return tiles


def _seed_init(tiles: list[np.ndarray]) -> None:
    global _SEED_TILES
    _SEED_TILES = tiles


def seed_match_cell(cell: np.ndarray) -> int:
    """The seed's inner loop for one cell: float norm against every tile, argmin."""
    factor = TILE_PX // CELL_PX
    big = np.repeat(np.repeat(cell, factor, axis=0), factor, axis=1).astype(np.int16)
    distances = [np.linalg.norm(tile - big) for tile in _SEED_TILES]
    return int(np.argmin(distances))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run: python benchmarks/bench_seed.py",
    )
    parser.add_argument("--data", help="shared data folder (default: ../shared/data)")
    parser.add_argument("--cache-dir", help="generated data, caches (default: benchmarks/.cache)")
    parser.add_argument("--seed-cells", type=positive_int, default=40,
                        help="cells the seed loop runs on, evenly spaced (default 40)")
    parser.add_argument("--brute-cells", type=positive_int, default=300,
                        help="cells checked against brute_force (default 300)")
    parser.add_argument("--repeat", type=positive_int, default=3,
                        help="warm match_exact repeats, best taken (default 3)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the run's mosaicist cache and mosaic afterwards")
    args = parser.parse_args()

    from mosaicist.grid import make_grid
    from mosaicist.imaging import read_target

    data = data_dir(args.data)
    cache = cache_dir(args.cache_dir)
    folder = data / "cifar10" / "train"
    target_path = data / TARGET
    require_file(target_path, "target")
    require_pictures(folder, "tiles")
    print(f"machine: {machine()}")

    grid = make_grid(read_target(target_path), CELL_PX, name=str(target_path))
    cell_count = len(grid.cells)
    print(f"workload: {target_path.name}, {grid.rows} x {grid.cols} = "
          f"{counted(cell_count, 'cell')} of {CELL_PX} px, {TILE_PX} px tiles, tiles {folder}",
          flush=True)

    # --- End to end, cold then warm (child processes) -----------------------------------
    runs = fresh_dir(cache / "runs", "seed-")
    try:
        _measure(args, grid, folder, target_path, runs)
    finally:
        # On failure too: the cold run's cache holds hundreds of MB.
        if args.keep:
            print(f"cache and mosaic kept under {runs}")
        else:
            shutil.rmtree(runs, ignore_errors=True)


def _measure(args: argparse.Namespace, grid, folder: Path, target_path: Path,
             runs: Path) -> None:
    """Run every measurement with ``runs`` as the run's own cache; print the table."""
    from mosaicist.grid import Geometry
    from mosaicist.library import TileLibrary
    from mosaicist.match import brute_force, cached_features, match_exact

    cell_count = len(grid.cells)
    # The seed's method (each cell's exact nearest tile), not the default look with
    # its repetition limits and colour correction: the same work as the seed loop's.
    command = mosaicist_command() + [
        "make", target_path, "--tiles", folder, "--cell", CELL_PX, "--tile-px", TILE_PX,
        "--preset", "seed", "--cache-dir", runs / "cache", "-q", "-o", runs / "mosaic.png",
    ]
    print("mosaicist make, cold cache ...", flush=True)
    cold = run_child(command).check()
    print("mosaicist make, warm cache ...", flush=True)
    warm = run_child(command).check()

    # --- mosaicist matcher, warm features -----------------------------------------------
    library = TileLibrary.open(folder, TILE_PX, cache_dir=runs / "cache")
    tile_count = len(library)
    geometry = Geometry(CELL_PX, TILE_PX)
    cell_vectors = geometry.cell_vectors(grid.cells)
    features = cached_features(library.tiles, geometry, library.features_dir, library.generation)
    best = float("inf")
    result = None
    for _ in range(args.repeat):
        started = time.perf_counter()
        result = match_exact(cell_vectors, library.tiles, geometry, features)
        best = min(best, time.perf_counter() - started)
    ours_per_cell = best / cell_count

    # --- Seed loop on a sample ----------------------------------------------------------
    print("loading the seed's tile list ...", flush=True)
    started = time.perf_counter()
    seed_tiles = load_seed_tiles(folder)
    seed_load = time.perf_counter() - started
    if len(seed_tiles) != tile_count:
        # The seed's list reads only .jpg files; the library takes every picture.
        sys.exit(f"benchmark: the seed's tile list has {counted(len(seed_tiles), 'JPEG')} but "
                 f"mosaicist's library of {folder} has {counted(tile_count, 'tile')}; the "
                 "comparison needs a folder of .jpg files only")
    sample = np.unique(np.linspace(0, cell_count - 1, args.seed_cells).astype(np.int64))
    workers = os.cpu_count() or 1
    print(f"seed loop on {counted(len(sample), 'cell')} with {workers} processes ...",
          flush=True)
    with Pool(workers, initializer=_seed_init, initargs=(seed_tiles,)) as pool:
        pool.map(int, range(workers))  # workers started before timing
        started = time.perf_counter()
        seed_picks = np.array(pool.map(seed_match_cell, list(grid.cells[sample]), chunksize=1))
        seed_seconds = time.perf_counter() - started
    del seed_tiles
    seed_per_cell = seed_seconds / len(sample)
    seed_grid = seed_load + seed_per_cell * cell_count

    # --- brute_force (integer) on a larger sample ----------------------------------------
    brute_sample = np.unique(np.linspace(0, cell_count - 1, args.brute_cells).astype(np.int64))
    print(f"brute_force on {counted(len(brute_sample), 'cell')} ...", flush=True)
    started = time.perf_counter()
    brute = brute_force(grid.cells[brute_sample], library.tiles, TILE_PX)
    brute_seconds = time.perf_counter() - started

    ours = result.tile
    same_seed = float(np.mean(ours[sample] == seed_picks))
    same_brute_tile = float(np.mean(ours[brute_sample] == brute.tile))
    same_brute_distance = float(np.mean(result.distance[brute_sample] == brute.distance))
    ratio = seed_per_cell / ours_per_cell
    speedup_warm = seed_grid / warm.seconds
    speedup_cold = seed_grid / cold.seconds

    print()
    print_table([
        [f"seed loop (Pool of {workers}), per cell", seconds(seed_per_cell),
         f"{counted(len(sample), 'cell')} in {seed_seconds:.1f} s"],
        ["mosaicist match_exact (warm), per cell", seconds(ours_per_cell),
         f"{counted(cell_count, 'cell')} in {best:.3f} s; {result.evaluated:,} exact evals"],
        ["per-cell speed-up", f"{ratio:,.0f}x", "goal >= 1000x: "
         + ("met" if ratio >= 1000 else "NOT met")],
        [f"seed: load {tile_count:,} tiles", seconds(seed_load), "single process, PIL"],
        ["seed: whole grid (extrapolated)", seconds(seed_grid), "load + per cell x cells"],
        ["mosaicist make, cold cache", seconds(cold.seconds),
         f"peak RSS {gib(cold.peak_rss_bytes)}"],
        ["mosaicist make, warm cache", seconds(warm.seconds),
         f"peak RSS {gib(warm.peak_rss_bytes)}"],
        ["end-to-end speed-up, warm", f"{speedup_warm:,.0f}x",
         "goal >= 200x: " + ("met" if speedup_warm >= 200 else "NOT met")],
        ["end-to-end speed-up, cold", f"{speedup_cold:,.0f}x", ""],
        ["brute_force (int64), per cell", seconds(brute_seconds / len(brute_sample)),
         f"{counted(len(brute_sample), 'cell')} in {brute_seconds:.1f} s"],
        ["picks == seed loop's", f"{same_seed:.4f}", f"{counted(len(sample), 'cell')}"],
        ["picks == brute_force (tile)", f"{same_brute_tile:.4f}",
         f"{counted(len(brute_sample), 'cell')}"],
        ["distance == brute_force optimum", f"{same_brute_distance:.4f}",
         f"{counted(len(brute_sample), 'cell')} (goal 1.0)"],
    ], ["figure", "value", "detail"])
    print(f"\nobjective (all cells): {int(result.distance.sum()):,}")
    del library, features


if __name__ == "__main__":
    main()
