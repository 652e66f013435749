"""Indexing throughput: 50,000 small JPEGs and 200 twelve-megapixel photos.

What it measures
----------------
* ``mosaicist index <shared>/cifar10/train --tile-px 32`` into a fresh, empty
  cache (cold): 50,000 32x32 JPEGs -> images/s (goal >= 5,000/s), then the same
  command again with nothing changed (warm re-index: scan + stat only).
* 200 large photos: 4000x3000 JPEGs (quality 90) that this script makes once
  from the 10 shared targets (random crop, resize, horizontal flip, colour
  shift and a light grain so file sizes are camera-like; deterministic) and
  caches in ``benchmarks/.cache/photos12mp/``. Indexed with
  ``mosaicist index ... --tile-px 64`` into a fresh cache -> photos/s and
  photos/s per core (goal >= 25/s per core), then re-indexed warm.

Each index run is a child process (``python -m mosaicist index``); the wall
time printed is the whole command (interpreter start, scan, decode, publish),
the "index" time is the update's own ``seconds`` as mosaicist reports it.
"Cold" means an empty mosaicist cache; the operating system's page cache may
still hold the files (run ``sync; echo 3 > /proc/sys/vm/drop_caches`` first for
a cold disk).

Run (from the repository root)::

    python benchmarks/bench_index.py
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    cache_dir,
    cache_file,
    data_dir,
    fresh_dir,
    gib,
    machine,
    mosaicist_command,
    print_table,
    run_child,
    seconds,
)

PHOTO_SIZE = (4000, 3000)
PHOTO_COUNT = 200
PHOTO_QUALITY = 90


def _make_photo(job: tuple[str, str, int]) -> int:
    from PIL import Image, ImageOps

    source, destination, number = job
    rng = np.random.default_rng([7, number])
    with Image.open(source) as opened:
        image = opened.convert("RGB")
    width, height = image.size
    # Random crop of 60-100% of each side, then resize to 12 MP.
    crop_w = int(width * rng.uniform(0.6, 1.0))
    crop_h = int(height * rng.uniform(0.6, 1.0))
    left = int(rng.integers(0, width - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    image = image.crop((left, top, left + crop_w, top + crop_h))
    image = image.resize(PHOTO_SIZE, Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    # Colour shift: per-channel gain and offset through lookup tables.
    bands = []
    for band in image.split():
        gain, offset = rng.uniform(0.85, 1.15), rng.uniform(-15, 15)
        table = np.clip(np.rint(np.arange(256) * gain + offset), 0, 255).astype(np.uint8)
        bands.append(band.point(table.tolist()))
    pixels = np.asarray(Image.merge("RGB", bands), dtype=np.int16)
    # Light grain, so the JPEG carries camera-like detail (and size).
    grain = rng.integers(-4, 5, size=pixels.shape[:2], dtype=np.int16)[:, :, None]
    pixels = np.clip(pixels + grain, 0, 255).astype(np.uint8)
    with cache_file(Path(destination)) as partial:
        Image.fromarray(pixels).save(partial, "JPEG", quality=PHOTO_QUALITY)
    return os.path.getsize(destination)


def make_photos(data: Path, cache: Path) -> Path:
    """Create (once) the 200 twelve-megapixel JPEGs; return their folder."""
    folder = cache / "photos12mp"
    folder.mkdir(parents=True, exist_ok=True)
    targets = sorted(path for path in (data / "targets").iterdir()
                     if path.suffix.lower() in (".jpg", ".jpeg", ".png"))
    jobs = []
    for number in range(PHOTO_COUNT):
        destination = folder / f"photo{number:03d}.jpg"
        if not destination.exists():
            jobs.append((str(targets[number % len(targets)]), str(destination), number))
    if jobs:
        print(f"making {len(jobs)} 4000x3000 JPEGs in {folder} (once) ...", flush=True)
        with Pool(os.cpu_count()) as pool:
            pool.map(_make_photo, jobs, chunksize=1)
    return folder


def index_run(source: Path, tile_px: int, cache: Path):
    """One ``mosaicist index`` child; returns the run and mosaicist's own update seconds."""
    run = run_child(mosaicist_command() + [
        "index", source, "--tile-px", tile_px, "--cache-dir", cache,
    ]).check()
    found = re.search(r"skipped in ([0-9.]+) s", run.output)
    return run, float(found.group(1)) if found else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run: python benchmarks/bench_index.py",
    )
    parser.add_argument("--data", help="shared data folder (default: ../shared/data)")
    parser.add_argument("--cache-dir", help="generated data, caches (default: benchmarks/.cache)")
    parser.add_argument("--skip-cifar", action="store_true", help="skip the 50k CIFAR-10 part")
    parser.add_argument("--skip-photos", action="store_true", help="skip the 12 MP photos part")
    args = parser.parse_args()

    data = data_dir(args.data)
    cache = cache_dir(args.cache_dir)
    cores = os.cpu_count() or 1
    print(f"machine: {machine()}")
    rows: list[list[object]] = []
    goals: list[str] = []

    if not args.skip_cifar:
        folder = data / "cifar10" / "train"
        count = sum(1 for _ in folder.rglob("*.jpg"))
        if not count:
            sys.exit(f"benchmark: no JPEGs in {folder}; pass --data PATH")
        index_cache = fresh_dir(cache / "runs", "index-cifar-")
        try:
            print(f"indexing {count:,} CIFAR-10 JPEGs, cold ...", flush=True)
            cold, cold_own = index_run(folder, 32, index_cache)
            print("re-indexing, warm ...", flush=True)
            warm, warm_own = index_run(folder, 32, index_cache)
        finally:
            # On failure or interruption too: a cold 50k index is hundreds of MB.
            shutil.rmtree(index_cache, ignore_errors=True)
        rate = count / cold.seconds
        rows += [
            ["cifar10/train 50k, cold", seconds(cold.seconds), f"{rate:,.0f} img/s",
             f"{count / cold_own:,.0f} img/s", gib(cold.peak_rss_bytes)],
            ["cifar10/train 50k, warm re-index", seconds(warm.seconds), "", seconds(warm_own),
             gib(warm.peak_rss_bytes)],
        ]
        goals.append(f"CIFAR-10 cold: {rate:,.0f} images/s (goal >= 5,000/s: "
                     f"{'met' if rate >= 5000 else 'NOT met'})")

    if not args.skip_photos:
        folder = make_photos(data, cache)
        files = sorted(folder.glob("*.jpg"))
        sizes = [path.stat().st_size for path in files]
        print(f"{len(files)} photos, {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]}, mean "
              f"{np.mean(sizes) / 1e6:.1f} MB", flush=True)
        index_cache = fresh_dir(cache / "runs", "index-photos-")
        try:
            print("indexing photos at --tile-px 64, cold ...", flush=True)
            cold, cold_own = index_run(folder, 64, index_cache)
            print("re-indexing, warm ...", flush=True)
            warm, warm_own = index_run(folder, 64, index_cache)
        finally:
            shutil.rmtree(index_cache, ignore_errors=True)
        rate = len(files) / cold.seconds
        rows += [
            [f"{len(files)} photos 12 MP, cold", seconds(cold.seconds),
             f"{rate:.1f} photo/s = {rate / cores:.1f}/s/core",
             f"{len(files) / cold_own:.1f} photo/s", gib(cold.peak_rss_bytes)],
            [f"{len(files)} photos 12 MP, warm re-index", seconds(warm.seconds), "",
             seconds(warm_own), gib(warm.peak_rss_bytes)],
        ]
        goals.append(f"12 MP photos cold: {rate / cores:.1f} photos/s per core on {cores} cores "
                     f"(goal >= 25/s per core: {'met' if rate / cores >= 25 else 'NOT met'})")

    print()
    print_table(rows, ["run", "wall (child)", "rate (wall)", "index's own", "peak RSS"])
    print()
    for line in goals:
        print(line)


if __name__ == "__main__":
    main()
