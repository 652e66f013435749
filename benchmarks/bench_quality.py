"""Quality and repetition benchmark: how good are the mosaics, and at what cost.

For each tile library (CIFAR-10 train, the 2,000 Galaxy Zoo images) and each
target, makes mosaics with the settings below and prints the report's
metrics and times:

- ``plain``: the seed's exact method
- ``max-uses 1``: every tile at most once (optimal assignment), and greedy
- ``max-uses 2, min-spacing 5``
- ``augment all``: mirror and rotation variants
- ``tint 0.5``
- ``augment all + tint 0.5`` (the seed's suggested remedy for galaxies)

Run (about 10-20 minutes on 2 cores with the defaults)::

    python benchmarks/bench_quality.py
    python benchmarks/bench_quality.py --targets starry_night_google_1280.jpg --libraries galaxy

Reads ``../shared/data`` (override with ``--data``); indexes go to
``benchmarks/.cache/quality`` (``--cache-dir``) and stay there for the next run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_CACHE, data_dir, positive_int  # noqa: E402

from mosaicist import make_mosaic  # noqa: E402
from mosaicist.errors import MosaicistError  # noqa: E402

LIBRARIES = {"cifar10": "cifar10/train", "galaxy": "galaxy-zoo"}
DEFAULT_TARGETS = ("starry_night_google_1280.jpg", "cameratrap_american_black_bear.jpg")
SETTINGS = {
    "plain": {},
    "max-uses 1": {"max_uses": 1},
    "max-uses 1 greedy": {"max_uses": 1, "assign": "greedy"},
    "max-uses 2, spacing 5": {"max_uses": 2, "min_spacing": 5},
    "augment all": {"augment": "all"},
    "tint 0.5": {"tint": 0.5},
    "augment all + tint 0.5": {"augment": "all", "tint": 0.5},
}
COLUMNS = (
    ("psnr_view", "PSNR", "{:.2f}"),
    ("ssim_view", "SSIM", "{:.3f}"),
    ("ciede2000_mean_view", "dE mean", "{:.2f}"),
    ("ciede2000_p95_view", "dE p95", "{:.2f}"),
    ("distinct_tiles", "distinct", "{}"),
    ("max_uses", "max uses", "{}"),
    ("closest_repeat", "closest", "{}"),
)


def run(target: Path, tiles: Path, settings: dict, cache: Path, cell: int) -> dict:
    """Make one mosaic and return its report, or the error."""
    started = time.perf_counter()
    try:
        # Every setting is the seed's method plus its own change: make_mosaic's default
        # preset (balanced) would cap uses and tint on its own, so "plain" would not be plain.
        mosaic = make_mosaic(target, tiles, preset="seed", cell_px=cell, tile_px=32,
                             cache_dir=cache, **settings)
    except MosaicistError as error:
        return {"error": str(error)}
    report = mosaic.report()
    report["seconds"] = time.perf_counter() - started
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="shared data folder (default: ../shared/data)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE / "quality",
                        help="index cache (default: benchmarks/.cache/quality)")
    parser.add_argument("--targets", nargs="+", default=list(DEFAULT_TARGETS),
                        help="files of targets/ in the data folder (default: "
                             f"{', '.join(DEFAULT_TARGETS)})")
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES),
                        choices=list(LIBRARIES), help="tile libraries (default: both)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS),
                        help="settings to run, each quoted (default: all)")
    parser.add_argument("--cell", type=positive_int, default=16,
                        help="cell size, target pixels (default 16)")
    parser.add_argument("--json", type=Path, help="also write all reports here")
    args = parser.parse_args()
    data = data_dir(args.data)
    missing = [name for name in args.targets if not (data / "targets" / name).is_file()]
    if missing:
        sys.exit(f"benchmark: --targets: {', '.join(missing)} not in {data / 'targets'}")
    for library in args.libraries:
        if not (data / LIBRARIES[library]).is_dir():
            sys.exit(f"benchmark: --libraries: {library}: {data / LIBRARIES[library]} not found")

    results = []
    for library in args.libraries:
        for target_name in args.targets:
            target = data / "targets" / target_name
            print(f"\n## {target_name} with {library} ({args.cell} px cells)")
            header = ["setting", *(label for _, label, _ in COLUMNS), "objective", "match s",
                      "total s"]
            print(" | ".join(header))
            for name in args.settings:
                report = run(target, data / LIBRARIES[library], SETTINGS[name],
                             args.cache_dir, args.cell)
                results.append({"library": library, "target": target_name, "setting": name,
                                 **report})
                if "error" in report:
                    print(f"{name} | error: {report['error']}")
                    continue
                metrics = report["metrics"]
                cells = [name] + [
                    "-" if metrics.get(key) is None else fmt.format(metrics[key])
                    for key, _, fmt in COLUMNS
                ]
                cells += [f"{report['objective']:.4g}", f"{report['timings']['match']:.1f}",
                          f"{report['seconds']:.1f}"]
                print(" | ".join(cells), flush=True)
    _verdicts(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


def _verdicts(results: list[dict]) -> None:
    """Print the issue's two checks where the runs allow them."""
    def find(library: str, target: str, setting: str) -> dict | None:
        for result in results:
            if (result["library"], result["target"], result["setting"]) == (
                library, target, setting
            ) and "error" not in result:
                return result
        return None

    print()
    for target in {result["target"] for result in results}:
        plain = find("galaxy", target, "plain")
        remedy = find("galaxy", target, "augment all + tint 0.5")
        if plain and remedy:
            a, b = plain["metrics"], remedy["metrics"]
            better = (b["ssim_view"] > a["ssim_view"]
                      and b["ciede2000_mean_view"] < a["ciede2000_mean_view"])
            print(f"galaxy {target}: augment+tint SSIM {b['ssim_view']:.3f} vs plain "
                  f"{a['ssim_view']:.3f}, CIEDE2000 {b['ciede2000_mean_view']:.2f} vs "
                  f"{a['ciede2000_mean_view']:.2f}: {'beats' if better else 'DOES NOT beat'} plain")
        for library in ("cifar10", "galaxy"):
            optimal = find(library, target, "max-uses 1")
            greedy = find(library, target, "max-uses 1 greedy")
            if optimal and greedy:
                print(f"{library} {target} max-uses 1: optimal objective "
                      f"{optimal['objective']:.6g} vs greedy {greedy['objective']:.6g} "
                      f"({100 * (greedy['objective'] / optimal['objective'] - 1):.2f}% worse)")


if __name__ == "__main__":
    main()
