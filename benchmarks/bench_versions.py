"""Two versions of mosaicist on the same work: are the outputs identical, is either slower?

For a change that must not change behaviour (a refactor), this runs a fixed
set of ``make``, ``render``, ``index`` and ``score`` commands on the shared
data with the working tree and with an earlier commit (checked out with
``git worktree`` under the cache folder), each with its own cache, then:

* **Outputs** - compares every file the two runs wrote: pictures, CSV
  placements, Deep Zoom tiles and viewer pages byte for byte; JSON placements
  by their cells, rows and columns and by their settings (version 1 files
  keep settings as top-level keys, version 2 in ``settings``); reports
  without their timings.
* **Speed** - alternates the two versions for ``--rounds`` rounds (order
  swapped every round): a warm ``make`` of the seed workload (child process,
  wall time), ``match_exact`` on it (best of 5, in a child), and a cold
  ``index`` of the 50,000 CIFAR-10 JPEGs into an empty cache. Prints medians,
  bests and the ratios after / before.

Both trees are byte-compiled first, as an installed package is (a sandbox
with ``PYTHONDONTWRITEBYTECODE`` would otherwise compile every module on
every run, which weighs longer sources).

Run (from the repository root)::

    python benchmarks/bench_versions.py --before a24c951
    python benchmarks/bench_versions.py --before HEAD~3 --quick   # skip the slow cases
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    cache_dir,
    data_dir,
    fresh_dir,
    positive_int,
    print_table,
    require_file,
    require_pictures,
)

ROOT = Path(__file__).resolve().parents[1]
STARRY = "targets/starry_night_google_1280.jpg"
BEAR = "targets/cameratrap_american_black_bear.jpg"

#: (name, slow, arguments); ``{data}`` is the shared data folder.
CASES = [
    ("plain", False, ["make", "{data}/" + STARRY, "--tiles", "{data}/cifar10/train",
                      "-o", "plain.png", "--placements", "plain.json", "--report", "plain.r.json"]),
    ("plain-csv", False, ["make", "{data}/" + STARRY, "--tiles", "{data}/cifar10/train",
                          "-o", "plain.jpg", "--placements", "plain.csv"]),
    ("capped", True, ["make", "{data}/" + STARRY, "--tiles", "{data}/cifar10/train",
                      "--limit", "8000", "--max-uses", "2", "--min-spacing", "5", "--tint", "0.5",
                      "-o", "capped.png", "--placements", "capped.json",
                      "--report", "capped.r.json"]),
    ("lab", False, ["make", "{data}/" + STARRY, "--tiles", "{data}/cifar10/train", "--limit",
                    "10000", "--metric", "lab", "--augment", "flips", "--tint", "0.3",
                    "-o", "lab.png", "--placements", "lab.json"]),
    ("approximate", False, ["make", "{data}/" + STARRY, "--tiles", "{data}/cifar10/train",
                            "--search", "approximate", "-o", "approx.png",
                            "--placements", "approx.json"]),
    ("originals", False, ["make", "{data}/" + STARRY, "--tiles", "{data}/cifar10/train",
                          "--limit", "3000", "--cell", "32", "--tile-px", "96", "--overlay",
                          "0.3", "-o", "big.tif", "--placements", "big.json"]),
    ("deep-zoom", False, ["make", "{data}/" + STARRY, "--tiles", "{data}/cifar10/train",
                          "--limit", "3000", "--cell", "32", "-o", "m.dzi",
                          "--placements", "dzi.json"]),
    ("greedy", True, ["make", "{data}/" + BEAR, "--tiles", "{data}/cifar10/train", "--cell", "32",
                      "--limit", "4000", "--max-uses", "1", "--assign", "greedy",
                      "-o", "greedy.webp", "--placements", "greedy.csv"]),
    ("galaxies", False, ["make", "{data}/" + BEAR, "--tiles", "{data}/galaxy-zoo", "--cell", "32",
                         "--augment", "all", "--tint", "0.7", "--metric", "oklab",
                         "--tile-px", "24", "-o", "galaxy.png", "--placements", "galaxy.json"]),
    ("render", False, ["render", "plain.json", "-o", "rerender.png", "--tile-px", "16"]),
    ("render-big", False, ["render", "big.json", "-o", "rerender-big.jpg", "--tile-px", "40",
                           "--quality", "80"]),
    ("render-csv", True, ["render", "greedy.csv", "--tiles", "{data}/cifar10/train",
                          "-o", "rerender-greedy.png"]),
    ("render-dzi", False, ["render", "lab.json", "-o", "rerender-lab.dzi", "--dzi-tile-size",
                           "128", "--dzi-overlap", "2", "--dzi-format", "png"]),
    ("score", False, ["score", "plain.png", "{data}/" + STARRY, "--placements", "plain.csv",
                      "--json", "score.json"]),
]

MATCH_SCRIPT = r"""
import sys, time
from mosaicist.grid import Geometry, make_grid
from mosaicist.imaging import read_target
from mosaicist.library import TileLibrary
from mosaicist.match import cached_features, match_exact
library = TileLibrary.open(sys.argv[1], 32, cache_dir=sys.argv[2])
grid = make_grid(read_target(sys.argv[3]), 16)
geometry = Geometry(16, 32)
cells = geometry.cell_vectors(grid.cells)
features = cached_features(library.tiles, geometry, library.features_dir, library.generation)
best = float("inf")
for _ in range(5):
    started = time.perf_counter()
    result = match_exact(cells, library.tiles, geometry, features)
    best = min(best, time.perf_counter() - started)
print(best)
"""


def run_mosaicist(source: Path, cache: Path, arguments: list[str], cwd: Path) -> float:
    """Run ``python -m mosaicist ARGUMENTS`` with the tree at ``source``; return its wall time.

    Its standard output is kept in ``cwd/<command>.out`` (``score`` prints its
    metrics there), to be compared too.
    """
    environment = dict(os.environ, PYTHONPATH=str(source), MOSAICIST_CACHE_DIR=str(cache))
    quiet = [] if arguments[0] == "score" else ["-q"]
    started = time.perf_counter()
    with open(cwd / f"{arguments[0]}.out", "a") as output:
        done = subprocess.run([sys.executable, "-m", "mosaicist", *arguments, *quiet],
                              cwd=cwd, env=environment, check=False, stdout=output)
    if done.returncode != 0:
        # Its error went to the terminal; name the command rather than a traceback of ours.
        sys.exit(f"benchmark: mosaicist {' '.join(arguments)} failed (exit {done.returncode}) "
                 f"with the tree at {source}")
    return time.perf_counter() - started


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def same_json(before: Path, after: Path) -> bool:
    """Placements by cells and settings; reports without timings; anything else whole."""
    old, new = json.loads(before.read_text()), json.loads(after.read_text())
    if old.get("format") == "mosaicist-placements":
        def settings(document: dict) -> dict:
            if document["version"] == 1:
                return {key: document[key] for key in ("cell_px", "tile_px", "match_px", "metric",
                                                       "augment", "tint", "overlay")}
            return document["settings"]

        shared = set(settings(old)) & set(settings(new))
        return (old["cells"], old["rows"], old["cols"], old["source"], old["crop"]) == (
            new["cells"], new["rows"], new["cols"], new["source"], new["crop"]
        ) and all(settings(old)[key] == settings(new)[key] for key in shared)
    if "timings" in old:
        for report in (old, new):
            for key in ("timings", "settings", "matcher"):
                report.pop(key, None)
            if report.get("assignment"):
                report["assignment"].pop("seconds", None)
    return old == new


def compare_outputs(before: Path, after: Path) -> list[list[str]]:
    """One row per file the first run wrote: ``[file, same/DIFFERENT/missing]``."""
    rows = []
    for path in sorted(before.rglob("*")):
        relative = path.relative_to(before)
        if path.is_dir() or relative.parts[0] == "cache":
            continue
        other = after / relative
        if not other.exists():
            verdict = "missing"
        elif path.suffix == ".json":
            verdict = "same" if same_json(path, other) else "DIFFERENT"
        else:
            verdict = "same" if digest(path) == digest(other) else "DIFFERENT"
        rows.append([str(relative), verdict])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the earlier commit (any git revision)")
    parser.add_argument("--data", help="shared data folder (default: ../shared/data)")
    parser.add_argument("--cache-dir", help="generated data, caches (default: benchmarks/.cache)")
    parser.add_argument("--rounds", type=positive_int, default=5, help="A/B rounds (default 5)")
    parser.add_argument("--quick", action="store_true",
                        help="skip the slow cases (repetition limits: minutes each)")
    parser.add_argument("--keep", action="store_true",
                        help="keep both runs' outputs and caches (<cache>/runs/versions-*) "
                             "afterwards")
    args = parser.parse_args()

    data = data_dir(args.data)
    # Before the worktree (a checkout, removed again) and the run folder: a missing input
    # would otherwise stop the first case that reads it, after both.
    require_file(data / STARRY, "target")
    require_file(data / BEAR, "target")
    require_pictures(data / "cifar10" / "train", "tiles")
    require_pictures(data / "galaxy-zoo", "tiles")
    # A folder of this run's own: a fixed one, emptied first, was another run's too.
    work = fresh_dir(cache_dir(args.cache_dir) / "runs", "versions-")
    checkout = work / "before-tree"
    # --force: a run killed outright leaves its worktree registered though its folder
    # is gone (removed above), and git would refuse the same path again.
    added = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--force", "--detach",
                            str(checkout), args.before], check=False, capture_output=True,
                           text=True)
    if added.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        reason = (added.stderr.strip().splitlines() or ["git worktree add failed"])[-1]
        sys.exit(f"benchmark: --before {args.before}: {reason}")
    trees = {"before": checkout / "src", "after": ROOT / "src"}
    try:
        for tree in trees.values():
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree)], check=True)
        for side, tree in trees.items():
            out = work / side
            out.mkdir()
            for name, slow, arguments in CASES:
                if slow and args.quick:
                    continue
                filled = [argument.replace("{data}", str(data)) for argument in arguments]
                seconds = run_mosaicist(tree, out / "cache", filled, out)
                print(f"{side:>6} {name:<12} {seconds:7.2f} s", flush=True)
        rows = compare_outputs(work / "before", work / "after")
        print()
        print_table([row for row in rows if "_files/" not in row[0]], ["file", "outputs"])
        tiles = [row for row in rows if "_files/" in row[0]]
        same_tiles = sum(row[1] == "same" for row in tiles)
        print(f"Deep Zoom tiles: {same_tiles} of {len(tiles)} identical")
        print("ALL OUTPUTS IDENTICAL" if all(row[1] == "same" for row in rows)
              else "OUTPUTS DIFFER")

        times: dict[str, dict[str, list[float]]] = {
            side: {"make": [], "match": [], "index": []} for side in trees}
        target = data / STARRY
        tiles_folder = data / "cifar10" / "train"
        for round_number in range(args.rounds):
            order = list(trees) if round_number % 2 == 0 else list(trees)[::-1]
            for side in order:
                tree, cache = trees[side], work / side / "cache"
                times[side]["make"].append(run_mosaicist(
                    tree, cache, ["make", str(target), "--tiles", str(tiles_folder), "-o",
                                  str(work / f"ab-{side}.png")], work / side))
                environment = dict(os.environ, PYTHONPATH=str(tree))
                found = subprocess.run(
                    [sys.executable, "-c", MATCH_SCRIPT, str(tiles_folder), str(cache),
                     str(target)], env=environment, check=True, capture_output=True, text=True)
                times[side]["match"].append(float(found.stdout.split()[-1]))
                empty = work / f"cold-{side}"
                shutil.rmtree(empty, ignore_errors=True)
                times[side]["index"].append(
                    run_mosaicist(tree, empty, ["index", str(tiles_folder)], work / side))
        table = []
        for key, label in (("make", "make, warm"), ("match", "match_exact, warm"),
                           ("index", "index 50k JPEGs, cold")):
            before, after = times["before"][key], times["after"][key]
            table.append([
                label,
                f"{statistics.median(before):.3f} / {min(before):.3f} s",
                f"{statistics.median(after):.3f} / {min(after):.3f} s",
                f"{statistics.median(after) / statistics.median(before):.3f} / "
                f"{min(after) / min(before):.3f}",
            ])
        print()
        print_table(table, ["figure (median / best)", f"before ({args.before})", "after",
                            "after / before"])
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(checkout)],
                       check=False, capture_output=True)
        # Two trees' outputs and caches, a cold 50k index each: over a GB.
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
