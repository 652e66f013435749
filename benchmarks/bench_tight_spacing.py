"""A tight spacing on a small grid: the exact placement by CP-SAT against SciPy's HiGHS.

Workload: ``--grids`` random problems of ``--rows x --cols`` cells and
``--tiles`` tiles of at most ``--max-uses`` uses, ``--min-spacing`` apart
(default: 7 x 7 cells, 17 tiles of 3 uses, 4 apart, where every 4 x 4 window
needs 16 of the 17 tiles and greedy cannot place the grid). Costs are exact
integers ``|cell - tile|^2`` between random features, the cells crowding
around two colours. Each grid is assigned with every tile listed by each
cell (``mosaicist.match.assign_tiles``), once with OR-Tools installed (the
exact placement by CP-SAT on its deterministic work budget) and once with
the solver set to SciPy (the exact placement by HiGHS within its time
limit). Printed per grid: wall time and objective of each, and the
difference.

Run from the repository root::

    python benchmarks/bench_tight_spacing.py
    python benchmarks/bench_tight_spacing.py --grids 5 --tiles 18
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, positive_int, print_table  # noqa: E402


def costs(rng: np.random.Generator, cells: int, tiles: int) -> np.ndarray:
    """``(cells, tiles)`` integer squared distances, the cells crowding around two colours."""
    tile_features = rng.integers(0, 40, (tiles, 3))
    centres = rng.integers(0, 40, (2, 3))
    cell_features = centres[rng.integers(0, 2, cells)] + rng.integers(-2, 3, (cells, 3))
    difference = cell_features[:, None, :] - tile_features[None, :, :]
    return (difference**2).sum(-1).astype(np.int64)


def assign(full: np.ndarray, args: argparse.Namespace, solver: str) -> tuple[float, int]:
    """Seconds and objective of one assignment with ``solver`` ("auto" or "lapjv")."""
    from mosaicist.match import _assign

    _assign.SOLVER = solver
    order = np.argsort(full, axis=1, kind="stable")
    distances = np.take_along_axis(full, order, axis=1)
    started = time.perf_counter()
    result = _assign.assign_tiles(order, distances, args.rows, args.cols,
                                  max_uses=args.max_uses, min_spacing=args.min_spacing,
                                  tile_count=args.tiles)
    return time.perf_counter() - started, int(result.objective)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=positive_int, default=7, help="grid rows (default 7)")
    parser.add_argument("--cols", type=positive_int, default=7, help="grid columns (default 7)")
    parser.add_argument("--tiles", type=positive_int, default=17, help="tiles (default 17)")
    parser.add_argument("--max-uses", type=positive_int, default=3,
                        help="most uses of one tile (default 3)")
    parser.add_argument("--min-spacing", type=positive_int, default=4,
                        help="least distance between cells of one tile (default 4)")
    parser.add_argument("--grids", type=positive_int, default=3,
                        help="random grids, seeds 0, 1, ... (default 3)")
    args = parser.parse_args()
    try:
        import ortools.sat.python.cp_model  # noqa: F401
    except ImportError:
        sys.exit("benchmark: CP-SAT needs OR-Tools (pip install '.[fast]')")
    from mosaicist.match import check_feasible

    check_feasible(args.rows * args.cols, args.tiles, args.max_uses, args.rows, args.cols,
                   args.min_spacing)
    print(machine())
    print(f"workload: {args.rows} x {args.cols} cells, {args.tiles} tiles of at most "
          f"{args.max_uses} uses, {args.min_spacing} apart")
    rows = []
    for seed in range(args.grids):
        full = costs(np.random.default_rng(seed), args.rows * args.cols, args.tiles)
        highs_seconds, highs = assign(full, args, "lapjv")
        cp_seconds, cp = assign(full, args, "auto")
        rows.append([seed, f"{highs_seconds:.2f} s", f"{highs:,}", f"{cp_seconds:.2f} s",
                     f"{cp:,}", f"{(cp - highs) / highs * 100:+.1f}%"])
    print_table(rows, ["seed", "HiGHS", "objective", "CP-SAT", "objective", "difference"])


if __name__ == "__main__":
    main()
