"""Scale test of repetition control (``mosaicist.match.assign_tiles``) on synthetic candidates.

Workload: 50,000 tiles with random integer features in a low-dimensional
colour space (``--dim``, default 6: e.g. two blocks of RGB), and grids of
5,040 (63 x 80) and 30,000 (150 x 200) cells whose features crowd around a
few colour clusters (``--clusters``, ``--spread``), so that many cells share
the same nearest tiles -- the hard case for use limits. Distances are exact
integers ``|cell - tile|^2``; each cell's ``k`` nearest tiles come from a
k-d tree (exact, memory bounded by ``N x k``), and ``more_candidates`` asks
the tree again for a longer list, as ``match_exact`` would.

Cases: ``--max-uses 1``, and ``--max-uses 2 --min-spacing 5``, each solved
``optimal`` and ``greedy``. Every case runs in its own child process, so its
peak RSS is its own (data generation included). Printed per case: wall time
of the assignment, peak RSS, objective, lower bound, relative gap, the final
candidate-list length and the spacing rounds.

Run from the repository root::

    python benchmarks/bench_assign.py            # both grids
    python benchmarks/bench_assign.py --cells 5040
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    gib,
    machine,
    non_negative_float,
    non_negative_int,
    positive_int,
    print_table,
    run_child,
)

GRIDS = {5040: (63, 80), 30000: (150, 200)}
CASES = [(1, 1), (2, 5)]


def make_features(
    cells: int, tiles: int, dim: int, clusters: int, spread: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Integer features in 0..255: uniform tiles, cells around a few cluster centres."""
    rng = np.random.default_rng(seed)
    tile_features = rng.integers(0, 256, (tiles, dim)).astype(np.float64)
    centres = rng.uniform(30, 225, (clusters, dim))
    # Unequal cluster sizes, like the large flat areas of a photo.
    weights = rng.dirichlet(np.ones(clusters))
    label = rng.choice(clusters, cells, p=weights)
    cell_features = np.rint(centres[label] + rng.normal(0, spread, (cells, dim)))
    return np.clip(cell_features, 0, 255), tile_features


class Candidates:
    """Each cell's ``k`` nearest tiles (exact), best first, ties by position."""

    def __init__(self, cells: np.ndarray, tiles: np.ndarray) -> None:
        self.cells, self.tiles = cells, tiles
        self.tree = cKDTree(tiles)
        self.calls: list[int] = []
        self.seconds = 0.0

    def __call__(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        started = time.perf_counter()
        self.calls.append(k)
        out_tiles = np.empty((len(self.cells), k), np.int64)
        out_dist = np.empty((len(self.cells), k), np.int64)
        # Chunks keep the (chunk, k, dim) difference array small.
        for start in range(0, len(self.cells), 2048):
            part = self.cells[start : start + 2048]
            _, index = self.tree.query(part, k=k)
            index = index.reshape(len(part), k).astype(np.int64)
            diff = part[:, None, :] - self.tiles[index]
            dist = np.rint((diff * diff).sum(-1)).astype(np.int64)
            order = np.lexsort((index, dist), axis=1)
            out_tiles[start : start + len(part)] = np.take_along_axis(index, order, 1)
            out_dist[start : start + len(part)] = np.take_along_axis(dist, order, 1)
        self.seconds += time.perf_counter() - started
        return out_tiles, out_dist


def run_one(args: argparse.Namespace) -> None:
    """Child: one case; prints one JSON line."""
    from mosaicist.match import assign_tiles, check_feasible

    count = args.cells[0]
    rows, cols = GRIDS[count]
    cells, tiles = make_features(count, args.tiles, args.dim, args.clusters,
                                 args.spread, args.seed)
    check_feasible(count, args.tiles, args.max_uses, rows, cols, args.min_spacing)
    source = Candidates(cells, tiles)
    first_tiles, first_dist = source(args.k)
    shared = np.unique(first_tiles[:, 0]).size
    # Only searches made during the assignment count as its kNN time.
    source.seconds = 0.0
    started = time.perf_counter()
    result = assign_tiles(
        first_tiles, first_dist, rows, cols, max_uses=args.max_uses,
        min_spacing=args.min_spacing, method=args.method, more_candidates=source,
        max_candidates=args.max_k,
    )
    wall = time.perf_counter() - started
    print(json.dumps({
        "seconds": wall,
        "method": result.method,
        "candidate_seconds": source.seconds,
        "objective": result.objective,
        "lower_bound": result.lower_bound,
        "gap": result.gap,
        "k": result.candidates_used,
        "rounds": result.iterations,
        "distinct_best": shared,
        "unconstrained": int(first_dist[:, 0].sum()),
    }))


def main() -> None:
    """Parse arguments; run every case in a child and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, choices=sorted(GRIDS), action="append",
                        help="grid size (repeatable; default: both)")
    parser.add_argument("--tiles", type=positive_int, default=50_000,
                        help="synthetic tiles (default 50,000)")
    parser.add_argument("--dim", type=positive_int, default=6, help="feature dimensions")
    parser.add_argument("--clusters", type=positive_int, default=8,
                        help="colour clusters of the cells")
    parser.add_argument("--spread", type=non_negative_float, default=30.0,
                        help="cluster std. deviation")
    parser.add_argument("--k", type=positive_int, default=16, help="first candidate-list length")
    parser.add_argument("--max-k", type=positive_int, default=256, help="longest list asked for")
    # NumPy refuses a negative seed: each case's child would fail on its own.
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed")
    parser.add_argument("--method", choices=["optimal", "greedy"], help=argparse.SUPPRESS)
    parser.add_argument("--max-uses", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--min-spacing", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.max_k < args.k:
        parser.error(f"--max-k {args.max_k} is shorter than the first list (--k {args.k})")
    if args.one:
        run_one(args)
        return

    print(machine())
    print(f"{args.tiles:,} tiles, {args.dim}-d features, cells in {args.clusters} clusters "
          f"(std {args.spread}), first k {args.k}, k up to {args.max_k}")
    table = []
    for count in args.cells or sorted(GRIDS):
        for max_uses, spacing in CASES:
            for method in ("optimal", "greedy"):
                command = [
                    sys.executable, __file__, "--one", "--cells", count, "--tiles", args.tiles,
                    "--dim", args.dim, "--clusters", args.clusters, "--spread", args.spread,
                    "--k", args.k, "--max-k", args.max_k, "--seed", args.seed,
                    "--method", method, "--max-uses", max_uses, "--min-spacing", spacing,
                ]
                child = run_child(command)
                if child.returncode != 0:
                    # A limit the lists cannot meet is a result too: show the error line.
                    last = child.output.strip().splitlines()[-1] if child.output.strip() else ""
                    label = f"{count:,} cells, uses<={max_uses}" + (
                        f", spacing {spacing}" if spacing > 1 else ""
                    )
                    table.append([label, method, f"{child.seconds:.2f}", "-",
                                  gib(child.peak_rss_bytes), "failed", "-", "-", "-", "-",
                                  "-", "-"])
                    print(f"  {label} {method}: failed: {last}", flush=True)
                    continue
                report = json.loads(child.output.strip().splitlines()[-1])
                table.append([
                    f"{count:,} cells, uses<={max_uses}"
                    + (f", spacing {spacing}" if spacing > 1 else ""),
                    report["method"],
                    f"{report['seconds']:.2f}",
                    f"{report['candidate_seconds']:.2f}",
                    gib(child.peak_rss_bytes),
                    f"{report['objective']:,}",
                    f"{report['lower_bound']:,}",
                    f"{100 * report['gap']:.3f}%",
                    report["k"],
                    report["rounds"],
                    f"{report['unconstrained']:,}",
                    f"{report['distinct_best']:,}",
                ])
                print(f"  {table[-1][0]} {method}: {report['seconds']:.2f} s", flush=True)
    print()
    print_table(table, header=[
        "case", "method", "assign s", "of it kNN s", "peak RSS", "objective", "lower bound",
        "gap", "k", "rounds", "unconstrained", "distinct best",
    ])


if __name__ == "__main__":
    main()
