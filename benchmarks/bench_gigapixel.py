"""Gigapixel benchmark: a 400 x 300-cell mosaic at 256 px tiles (7.9 gigapixels).

What it measures
----------------
* Target: Starry Night (shared data), centre-cropped to 4:3 and resized with
  Pillow LANCZOS to ``cols * cell x rows * cell`` (cached), cut into
  ``--cols x --rows`` cells of ``--cell`` px. Tiles: the 50,000 CIFAR-10
  training JPEGs (a folder source), compared at 32 px and drawn at
  ``--tile-px`` from the original files.
* Each step runs as its own child process, whose wall time and peak RSS are
  printed (``os.wait4``; see ``common.run_child``):
    1. ``mosaicist make ... --tile-px 256 -o mural.dzi --placements mural.json``:
       index (warm after the first run), match, then the Deep Zoom pyramid
       (JPEG tiles, 254 + 1 overlap) and its viewer, streamed;
    2. ``mosaicist render mural.json -o mural.tif --tile-px 256``: the same
       picture as a tiled, pyramidal, deflate BigTIFF from the placements.
  Goal: peak RSS under 2 GB in both, whatever the output size.
* Afterwards it checks the pyramid's shape (levels, tile count, deepest
  level size) and the TIFF's pages, prints sizes on disk, and deletes the
  outputs unless ``--keep``.

Run (from the repository root)::

    python benchmarks/bench_gigapixel.py                       # 7.9 gigapixels
    python benchmarks/bench_gigapixel.py --cols 100 --rows 75  # a quick check
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    cache_dir,
    cache_file,
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


def make_target(data: Path, cache: Path, width: int, height: int) -> Path:
    """Starry Night fitted to ``width x height`` (cached)."""
    path = cache / f"starry-{width}x{height}.png"
    if not path.exists():
        with Image.open(data / "targets" / "starry_night_google_1280.jpg") as picture:
            fitted = ImageOps.fit(picture.convert("RGB"), (width, height),
                                  Image.Resampling.LANCZOS)
        with cache_file(path) as partial:
            fitted.save(partial)
    return path


def folder_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="shared data folder [../shared/data]")
    parser.add_argument("--cache-dir", help="benchmark cache [benchmarks/.cache]")
    parser.add_argument("--out", help="output folder, empty or new [a new one under "
                                      "<cache>/runs]")
    parser.add_argument("--cols", type=positive_int, default=400, help="cells across [400]")
    parser.add_argument("--rows", type=positive_int, default=300, help="cells down [300]")
    parser.add_argument("--cell", type=positive_int, default=4, help="target pixels per cell [4]")
    parser.add_argument("--tile-px", type=positive_int, default=256,
                        help="tile side in the output, pixels [256]")
    parser.add_argument("--skip-tiff", action="store_true", help="only the Deep Zoom step")
    parser.add_argument("--keep", action="store_true",
                        help="keep the outputs (the Deep Zoom pyramid, the TIFF, the placements "
                             "and report) in --out")
    args = parser.parse_args()

    data = data_dir(args.data)
    cache = cache_dir(args.cache_dir)
    if args.out:
        out = Path(args.out).expanduser()
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            # The folder is removed at the end: never one that holds something else.
            sys.exit(f"benchmark: --out: {out} exists and is not an empty folder")
        out.mkdir(parents=True, exist_ok=True)
    else:
        # A folder of this run's own: a fixed one, emptied first, was another run's too.
        out = fresh_dir(cache / "runs", "gigapixel-")
    try:
        _run(args, data, cache, out)
    finally:
        # A failed or interrupted run's outputs too (gigabytes at full size).
        if args.keep:
            print(f"outputs kept in {out}")
        else:
            shutil.rmtree(out, ignore_errors=True)


def _run(args: argparse.Namespace, data: Path, cache: Path, out: Path) -> None:
    """Make the Deep Zoom mural (and the TIFF) into ``out``; print the table and checks."""
    # Before any work: a missing one would stop the run with a traceback (the target)
    # or a child's error after the target's resize (the tiles).
    require_file(data / "targets" / "starry_night_google_1280.jpg", "target")
    tiles = require_pictures(data / "cifar10" / "train", "tiles")
    target = make_target(data, cache, args.cols * args.cell, args.rows * args.cell)
    library_cache = cache / "mosaicist-cache"
    width, height = args.cols * args.tile_px, args.rows * args.tile_px
    print(machine())
    print(f"{args.cols} x {args.rows} cells at {args.tile_px} px: {width} x {height} px, "
          f"{width * height / 1e9:.2f} gigapixels; tiles {tiles}")

    dzi = out / "mural.dzi"
    placements = out / "mural.json"
    report = out / "make-report.json"
    make = run_child(
        [*mosaicist_command(), "make", target, "--tiles", tiles, "--cell", args.cell,
         "--tile-px", args.tile_px, "-o", dzi, "--placements", placements,
         "--report", report, "--cache-dir", library_cache, "-q"],
    ).check()
    timings = json.loads(report.read_text())["timings"]
    rows = [["make -> mural.dzi (+ viewer)", seconds(make.seconds), gib(make.peak_rss_bytes),
             f"{width * height / 1e6 / max(timings['render'], 1e-9):.1f}",
             gib(folder_bytes(out / "mural_files"))]]

    if not args.skip_tiff:
        tiff = out / "mural.tif"
        render = run_child(
            [*mosaicist_command(), "render", placements, "-o", tiff, "--tile-px", args.tile_px,
             "--cache-dir", library_cache, "-q"],
        ).check()
        rows.append(["render -> mural.tif (pyramidal)", seconds(render.seconds),
                     gib(render.peak_rss_bytes), f"{width * height / 1e6 / render.seconds:.1f}",
                     gib(folder_bytes(tiff))])

    print()
    print_table(rows, ["step", "wall", "peak RSS", "MP/s written", "on disk"])
    print(f"make phases: index {seconds(timings['index'])}, match {seconds(timings['match'])}, "
          f"metrics {seconds(timings.get('metrics', 0.0))}, "
          f"pyramid {seconds(timings['render'])}")

    # Shape checks: the whole pyramid is there, the TIFF has every level.
    from mosaicist.render import files_folder, read_layout

    layout = read_layout(dzi)
    written = sum(1 for item in files_folder(dzi).rglob("*.jpeg"))
    assert (layout.width, layout.height) == (width, height), layout
    assert written == layout.tile_total(), (written, layout.tile_total())
    assert (out / "mural.html").exists()
    print(f"Deep Zoom: {layout.deepest_level + 1} levels, {written:,} tiles, "
          f"viewer {folder_bytes(out / 'mural.html') / 2**20:.1f} MiB")
    if not args.skip_tiff:
        import tifffile

        with tifffile.TiffFile(out / "mural.tif") as handle:
            page = handle.pages[0]
            levels = [level.shape for level in handle.series[0].levels]
            print(f"TIFF: BigTIFF {handle.is_bigtiff}, tiled {page.is_tiled}, "
                  f"{len(levels)} levels, top {levels[0]}, smallest {levels[-1]}")
            assert levels[0] == (height, width, 3)
    peak = max(make.peak_rss_bytes, render.peak_rss_bytes if not args.skip_tiff else 0)
    print(f"peak RSS goal (< 2 GB): {'met' if peak < 2e9 else 'NOT met'} ({peak / 1e9:.2f} GB)")


if __name__ == "__main__":
    main()
