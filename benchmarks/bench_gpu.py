"""Exhaustive exact matching on a GPU: ``mosaicist.match.match_torch`` timed.

What it measures
----------------
* The library: CIFAR-10's 50,000 training images at 32 px, indexed with
  ``TileLibrary.open(<data>/cifar10/train, 32, cache_dir=...)`` (the first
  run indexes, later runs reuse the cache), or with ``--synthetic N``
  (or when the shared data is absent) ``N`` smooth synthetic tiles.
* The cells: Starry Night (``<data>/targets/starry_night_google_1280.jpg``)
  cut into 16 px cells, or a synthetic 1280 x 1024 picture.
* ``match_torch`` on the device, after a warm-up run on a slice (CUDA
  context, cuBLAS handles, pinned buffers), timed ``--repeat`` times with
  ``torch.cuda.synchronize()`` around each run; the best and median times
  are printed with the time per cell.
* Exactness: ``match_exact`` on an evenly spaced sample of cells must give
  the same tiles and distances; the fraction of identical picks is printed
  and the exit status is 1 when it is not 1.0.

The whole run takes well under three minutes on an H100 once CIFAR-10 is
indexed (indexing 50,000 JPEGs takes some seconds to a minute, once).

Run (from the repository root, on a machine with an NVIDIA GPU)::

    python benchmarks/bench_gpu.py
    python benchmarks/bench_gpu.py --synthetic 200000
    python benchmarks/bench_gpu.py --device cpu --synthetic 5000 --check 64
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Where the shared data may be: next to the repository, or inside it.
DATA_CANDIDATES = (REPO_ROOT.parent / "shared" / "data", REPO_ROOT / "shared" / "data")
TARGET_NAME = "starry_night_google_1280.jpg"


def smooth_images(rng: np.random.Generator, count: int, side: int) -> np.ndarray:
    """Random gradients plus noise: photo-like enough for many near ties."""
    out = np.empty((count, side, side, 3), np.uint8)
    y, x = np.mgrid[0:side, 0:side] / max(1, side - 1)
    for start in range(0, count, 8192):
        size = min(8192, count - start)
        base = rng.uniform(0, 255, (size, 1, 1, 3))
        gx = rng.uniform(-120, 120, (size, 1, 1, 3))
        gy = rng.uniform(-120, 120, (size, 1, 1, 3))
        images = base + gx * x[None, :, :, None] + gy * y[None, :, :, None]
        images += rng.normal(0, 8, images.shape)
        out[start:start + size] = np.clip(np.rint(images), 0, 255)
    return out


def synthetic_target(rng: np.random.Generator, width: int = 1280, height: int = 1024) -> np.ndarray:
    """A smooth swirl with noise, the size of the Starry Night target."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    planes = [
        128 + 100 * np.sin(9 * x + 4 * np.cos(7 * y)),
        128 + 100 * np.cos(6 * y + 3 * np.sin(8 * x)),
        128 + 100 * np.sin(5 * (x + y)),
    ]
    picture = np.stack(planes, -1) + rng.normal(0, 10, (height, width, 3))
    return np.clip(np.rint(picture), 0, 255).astype(np.uint8)


def find_data(override: str | None) -> Path | None:
    """The shared data folder, or None when there is none."""
    if override:
        path = Path(override).expanduser().resolve()
        if not path.is_dir():
            sys.exit(f"bench_gpu: data folder {path} not found")
        return path
    return next((path for path in DATA_CANDIDATES if path.is_dir()), None)


def load_inputs(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    """Return ``(cells, tiles, description)``: real data when present, else synthetic."""
    from mosaicist import TileLibrary, make_grid
    from mosaicist.imaging import read_target

    data = None if args.synthetic else find_data(args.data)
    library_path = data / "cifar10" / "train" if data else None
    target_path = data / "targets" / TARGET_NAME if data else None
    rng = np.random.default_rng(0)
    if library_path is not None and library_path.is_dir():
        cache = Path(args.cache_dir).expanduser().resolve()
        cache.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        library = TileLibrary.open(library_path, args.tile_px, cache_dir=cache)
        print(f"library: {library_path} ({len(library)} tiles, opened/indexed in "
              f"{time.perf_counter() - started:.1f} s)")
        tiles = library.tiles
        description = "cifar10/train"
    else:
        count = args.synthetic or 50_000
        tiles = smooth_images(rng, count, args.tile_px)
        description = f"synthetic {count}"
    if args.limit:
        tiles = tiles[: args.limit]
    if target_path is not None and target_path.is_file():
        target = read_target(target_path)
        description += f", {TARGET_NAME}"
    else:
        target = synthetic_target(rng)
        description += ", synthetic target"
    grid = make_grid(target, args.cell_px)
    return grid.cells, tiles, description


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status (1 when a pick is not exact)."""
    parser = argparse.ArgumentParser(
        description="Time mosaicist.match.match_torch (exhaustive, exact) and check it "
        "against match_exact.",
    )
    parser.add_argument("--data", help="shared data folder (default: ../shared/data)")
    parser.add_argument("--cache-dir", default=str(Path(__file__).resolve().parent / ".cache"),
                        help="mosaicist cache for the indexed library (default: benchmarks/.cache)")
    parser.add_argument("--synthetic", type=int, metavar="N", default=0,
                        help="use N synthetic tiles and a synthetic target instead of the data")
    parser.add_argument("--limit", type=int, default=0, help="use only the first LIMIT tiles")
    parser.add_argument("--cell-px", type=int, default=16, help="cell size (default 16)")
    parser.add_argument("--tile-px", type=int, default=32, help="tile size (default 32)")
    parser.add_argument("--device", default="cuda", help="torch device (default cuda)")
    parser.add_argument("--kernel", choices=("int8", "float64"),
                        help="force a kernel (default: int8 on recent GPUs, else float64)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (default 3)")
    parser.add_argument("--check", type=int, default=256,
                        help="cells checked against match_exact (default 256; 0 skips)")
    args = parser.parse_args(argv)

    import torch

    from mosaicist.grid import Geometry
    from mosaicist.match import compute_features, match_exact
    from mosaicist.match._gpu import _default_kernel, match_torch

    cells, tiles, description = load_inputs(args)
    geometry = Geometry(args.cell_px, args.tile_px)
    vectors = geometry.cell_vectors(cells)
    device = torch.device(args.device)
    if device.type == "cuda" and torch.cuda.is_available():
        name = torch.cuda.get_device_name(device)
    else:
        name = "cpu"
    kernel = args.kernel or (
        _default_kernel(torch, device) if device.type != "cuda" or torch.cuda.is_available()
        else "?"
    )
    print(f"device: {name}; torch {torch.__version__}; kernel {kernel}")
    print(f"data: {description}; cells {len(vectors)} ({args.cell_px} px), "
          f"tiles {len(tiles)} ({args.tile_px} px)")

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    # Warm-up: CUDA context, cuBLAS and the int8 GEMM's kernels, pinned buffers.
    started = time.perf_counter()
    match_torch(vectors[:256], tiles[: min(len(tiles), 8192)], geometry, device=device,
                kernel=args.kernel)
    synchronize()
    print(f"warm-up: {time.perf_counter() - started:.2f} s")

    times = []
    result = None
    for _ in range(max(1, args.repeat)):
        synchronize()
        started = time.perf_counter()
        result = match_torch(vectors, tiles, geometry, device=device, kernel=args.kernel)
        synchronize()
        times.append(time.perf_counter() - started)
    assert result is not None
    best, median = min(times), statistics.median(times)
    pairs = len(vectors) * len(tiles)
    print(f"match_torch: cells {len(vectors)}, tiles {len(tiles)}, "
          f"seconds {best:.3f} (median {median:.3f} of {len(times)}), "
          f"seconds/cell {best / len(vectors):.2e}, pairs/s {pairs / best:.3e}")

    if args.check <= 0:
        return 0
    sample = np.unique(np.linspace(0, len(vectors) - 1, min(args.check, len(vectors)))
                       .astype(np.int64))
    started = time.perf_counter()
    features = compute_features(tiles, geometry)
    feature_seconds = time.perf_counter() - started
    started = time.perf_counter()
    reference = match_exact(vectors[sample], tiles, geometry, features=features)
    exact_seconds = time.perf_counter() - started
    same = (result.tile[sample] == reference.tile) & (
        result.distance[sample] == reference.distance
    )
    fraction = float(same.mean())
    print(f"match_exact on {len(sample)} cells: {exact_seconds:.3f} s "
          f"({exact_seconds / len(sample):.2e} s/cell; features {feature_seconds:.1f} s)")
    print(f"exact picks: {fraction:.4f} ({int(same.sum())}/{len(sample)})")
    if fraction < 1.0:
        wrong = sample[~same][:5]
        print(f"MISMATCH at cells {wrong.tolist()}: torch {result.tile[wrong].tolist()} "
              f"{result.distance[wrong].tolist()}, exact "
              f"{reference.tile[~same][:5].tolist()} {reference.distance[~same][:5].tolist()}")
        return 1
    return 0


if __name__ == "__main__":
    from mosaicist.errors import MosaicistError

    try:
        sys.exit(main())
    except MosaicistError as error:
        sys.exit(f"bench_gpu: {error}")
