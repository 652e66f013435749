"""Exhaustive exact matching on a GPU: ``mosaicist.match.match_torch`` checked and timed.

What it does, in order (each stage prints its own lines; a stage that fails
prints one ``FAILED`` line, its traceback on stderr, and the next stage runs)
----------------------------------------------------------------------------
1. Environment: Python, numpy, torch and its CUDA version, the device's name,
   compute capability, memory (total and free), ``CUDA_VISIBLE_DEVICES`` and
   the float32 matmul settings (TF32), which must not change any result.
2. Self-test: small cases on the device against the numpy brute force
   (``mosaicist.match.brute_force``), both kernels: square and rectangular
   geometries, one to three int8 digits, the contraction split into pieces,
   extreme values, duplicate tiles in several chunks (ties to the lowest
   position) and the smallest chunk sizes.
3. Inputs: CIFAR-10's 50,000 training images at 32 px and Starry Night cut
   into 16 px cells when ``<data>`` (``../shared/data``) is there, else (or
   with ``--synthetic N``) ``N`` smooth synthetic tiles (50,000 by default) and
   a synthetic 1280 x 1024 picture (5,120 cells).
4. A cold first run of the full search (CUDA context, cuBLASLt heuristics
   for the very shapes timed next), then ``--repeat`` timed runs with
   ``torch.cuda.synchronize()`` around each: best and median seconds,
   seconds per cell, pairs per second and the peak device memory.
5. The other kernel (float64 when int8 is timed) on the device, with TF32
   switched on, over every cell: its picks and distances must equal the
   timed kernel's.
6. ``match_exact`` (the CPU path) on ``--check`` evenly spaced cells: same
   tiles and distances.
7. Out of memory: most of the free device memory is taken, and the search
   must either finish exactly after retrying with smaller chunks or stop with
   one line; the memory is given back afterwards.

The last line is ``RESULT: ...``; the exit status is 0 when every stage ran
and every check was exact, 1 otherwise, 2 when something it needs is missing
(then one line says what). Stages still to run after ``--budget-s`` seconds
are skipped with a line saying so.

How to run it on a lent GPU
---------------------------
From the repository root, with a CUDA build of PyTorch in the environment
(``python -c "import torch; print(torch.cuda.is_available())"`` prints
True; this machine's CPU wheel will not do) and mosaicist importable
(installed, or found through ``src/`` next to this file, which the script
adds to ``sys.path`` itself), run ``python benchmarks/bench_gpu.py`` once
with a limit of about five minutes (``timeout 300``): without
``../shared/data`` it uses synthetic inputs, runs in well under that on an
H100/H200 (most of it is the CPU reference and generating the synthetic
tiles) and needs no network. Keep the whole output: the environment lines
say what was measured, every ``exact`` line must read ``yes``, and
``RESULT`` sums up. ``--device cuda:1`` picks another GPU, ``--kernel
float64`` times the other kernel, ``--skip-oom`` leaves out stage 7 on a
GPU shared with others, and ``--device cpu --synthetic 2000 --check 32``
tries the script itself without a GPU. The unit tests run on the GPU too:
``MOSAICIST_TEST_DEVICE=cuda python -m pytest tests/test_gpu.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT / "src") not in sys.path and (REPO_ROOT / "src" / "mosaicist").is_dir():
    # Run from a bare checkout (a lent machine) without installing it.
    sys.path.insert(0, str(REPO_ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    non_negative_int,
    positive_float,
    positive_int,
)


def missing(what: str) -> NoReturn:
    """Stop with one line on stderr and status 2: something the benchmark needs is not there."""
    print(f"bench_gpu: {what}", file=sys.stderr)
    sys.exit(2)


try:
    import numpy as np
except ImportError:
    missing("numpy is not installed")

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
            missing(f"data folder {path} not found")
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


class Stages:
    """Run stages one after the other; a failure is one line and the next stage still runs."""

    def __init__(self, budget: float) -> None:
        self.started = time.perf_counter()
        self.budget = budget
        self.failed: list[str] = []
        self.skipped: list[str] = []

    def run(self, name: str, stage: Callable[[], Any], default: Any = None) -> Any:
        elapsed = time.perf_counter() - self.started
        if elapsed > self.budget:
            print(f"[{name}] skipped: {elapsed:.0f} s spent of --budget-s {self.budget:.0f}")
            self.skipped.append(name)
            return default
        print(f"[{name}]", flush=True)
        try:
            return stage()
        except Exception as error:  # noqa: BLE001 - one line, then go on
            first = (str(error).strip().splitlines() or [""])[0]
            print(f"[{name}] FAILED: {type(error).__name__}: {first}", flush=True)
            traceback.print_exc(file=sys.stderr)
            self.failed.append(name)
            return default

    def fail(self, name: str) -> None:
        self.failed.append(name)


@contextlib.contextmanager
def patched(module: Any, **values: Any) -> Iterator[None]:
    """Set module attributes for the block (budgets of the matcher), then restore them."""
    old = {name: getattr(module, name) for name in values}
    for name, value in values.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in old.items():
            setattr(module, name, value)


def describe_environment(torch: Any, device: Any) -> str:
    """Print what was measured; return the kernel match_torch picks by default."""
    from mosaicist import __version__
    from mosaicist.match._gpu import _default_kernel

    print(f"python {platform.python_version()}; numpy {np.__version__}; mosaicist {__version__}; "
          f"torch {torch.__version__} (CUDA {torch.version.cuda}); "
          f"{os.cpu_count()} CPUs")
    print(f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}; "
          f"cuda available {torch.cuda.is_available()}; devices {torch.cuda.device_count()}")
    print(f"tf32 matmul {torch.backends.cuda.matmul.allow_tf32}; "
          f"float32 matmul precision {torch.get_float32_matmul_precision()} "
          "(neither may change a result: the kernels are int8 and float64)")
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        free, total = torch.cuda.mem_get_info(device)
        print(f"device {device}: {properties.name}; compute capability "
              f"{properties.major}.{properties.minor}; {properties.multi_processor_count} SMs; "
              f"memory {total / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free")
    else:
        print(f"device {device}: {platform.processor() or platform.machine()}")
    return _default_kernel(torch, device)


def self_test(torch: Any, device: Any, stages: Stages) -> None:
    """Small cases on the device against the numpy brute force, both kernels."""
    from mosaicist.grid import Geometry
    from mosaicist.match import _gpu as gpu
    from mosaicist.match import brute_force

    rng = np.random.default_rng(7)

    def case(cells: np.ndarray, tiles: np.ndarray, geometry: Geometry) -> str:
        reference = brute_force(cells, tiles)
        verdicts = []
        for kernel in ("int8", "float64"):
            result = gpu.match_torch(geometry.cell_vectors(cells), tiles, geometry,
                                     device=device, kernel=kernel)
            same = (np.array_equal(result.tile, reference.tile)
                    and np.array_equal(result.distance, reference.distance))
            verdicts.append(f"{kernel} {'yes' if same else 'NO'}")
            if not same:
                stages.fail("self-test")
        return ", ".join(verdicts)

    def square(cell: int, tile: int, cells: int = 70, tiles: int = 300) -> tuple:
        tile_images = smooth_images(rng, tiles, tile)
        tile_images[tiles - 40:] = tile_images[:40]  # ties across chunks: lowest wins
        return smooth_images(rng, cells, cell), tile_images, Geometry(cell, tile)

    cases: list[tuple[str, tuple, dict]] = [
        (f"{cell} px on {tile} px", square(cell, tile), {})
        for cell, tile in [(16, 32), (8, 32), (4, 4), (6, 10), (8, 4), (2, 32), (1, 32)]
    ]
    rect_cells = smooth_images(rng, 60, 16)[:, :11, :, :].copy()
    rect_tiles = smooth_images(rng, 200, 32)[:, :21, :, :].copy()
    cases.append(("16x11 on 32x21", (rect_cells, rect_tiles, Geometry(16, 32, 11, 21)), {}))
    cases.append(("contraction in pieces of 64", square(10, 20), {"K_SPLIT": 64}))
    cases.append(("smallest chunks", square(16, 32, 100, 200),
                  {"MAX_TILE_CHUNK": 8, "BLOCK_BYTES": 32 * 8 * 8, "CELL_BYTES": 1}))
    extreme_tiles = np.zeros((48, 32, 32, 3), np.uint8)
    extreme_tiles[::2] = 255
    extreme_cells = np.zeros((40, 1, 1, 3), np.uint8)
    extreme_cells[::3] = 255
    cases.append(("black and white, 1 px on 32 px", (extreme_cells, extreme_tiles,
                                                      Geometry(1, 32)), {}))
    for name, (cells, tiles, geometry), budgets in cases:
        with patched(gpu, **budgets):
            print(f"  {name}: exact {case(cells, tiles, geometry)}", flush=True)


def time_runs(torch: Any, device: Any, vectors: np.ndarray, tiles: np.ndarray, geometry: Any,
              kernel: str | None, repeat: int) -> Any:
    """A cold run, then timed runs; return the last result."""
    from mosaicist.match import match_torch

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    started = time.perf_counter()
    result = match_torch(vectors, tiles, geometry, device=device, kernel=kernel)
    synchronize()
    print(f"  first run (new shapes, pinned buffers): {time.perf_counter() - started:.3f} s")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(max(1, repeat)):
        synchronize()
        started = time.perf_counter()
        result = match_torch(vectors, tiles, geometry, device=device, kernel=kernel)
        synchronize()
        times.append(time.perf_counter() - started)
    best, median = min(times), statistics.median(times)
    pairs = len(vectors) * len(tiles)
    peak = (f"; peak device memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
            if device.type == "cuda" else "")
    print(f"  match_torch: cells {len(vectors)}, tiles {len(tiles)}, "
          f"seconds {best:.3f} (median {median:.3f} of {len(times)}), "
          f"seconds/cell {best / len(vectors):.2e}, pairs/s {pairs / best:.3e}{peak}")
    if device.type == "cuda":
        # Nothing may outlive a search but PyTorch's cache of freed blocks.
        print(f"  after the runs: {torch.cuda.memory_allocated(device) / 2**20:.1f} MiB "
              f"allocated, {torch.cuda.memory_reserved(device) / 2**20:.0f} MiB cached")
    return result


def same_picks(name: str, result: Any, tile: np.ndarray, distance: np.ndarray,
               cells: np.ndarray) -> bool:
    """Print whether ``result`` at ``cells`` equals ``tile`` and ``distance``; return it."""
    same = (result.tile[cells] == tile) & (result.distance[cells] == distance)
    print(f"  {name}: exact {'yes' if same.all() else 'NO'} "
          f"({int(same.sum())}/{len(cells)} cells)")
    if not same.all():
        wrong = np.flatnonzero(~same)[:5]
        print(f"  MISMATCH at cells {cells[wrong].tolist()}: torch "
              f"{result.tile[cells[wrong]].tolist()} {result.distance[cells[wrong]].tolist()}, "
              f"reference {tile[wrong].tolist()} {distance[wrong].tolist()}")
    return bool(same.all())


def other_kernel_agrees(torch: Any, device: Any, vectors: np.ndarray, tiles: np.ndarray,
                        geometry: Any, result: Any, timed: str) -> bool:
    """The kernel not timed, with TF32 on, must give the same picks on every cell."""
    from mosaicist.match import match_torch

    other_kernel = "float64" if timed == "int8" else "int8"
    tf32, precision = torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.set_float32_matmul_precision("medium")
    try:
        started = time.perf_counter()
        other = match_torch(vectors, tiles, geometry, device=device, kernel=other_kernel)
        print(f"  {other_kernel} kernel (TF32 on): {time.perf_counter() - started:.3f} s")
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.set_float32_matmul_precision(precision)
    every = np.arange(len(vectors))
    return same_picks(f"{other_kernel} against {timed}, every cell", result, other.tile,
                      other.distance, every)


def cpu_agrees(vectors: np.ndarray, tiles: np.ndarray, geometry: Any, result: Any,
               check: int) -> bool:
    """``match_exact`` on an evenly spaced sample of cells."""
    from mosaicist.match import compute_features, match_exact

    sample = np.unique(np.linspace(0, len(vectors) - 1, min(check, len(vectors)))
                       .astype(np.int64))
    started = time.perf_counter()
    features = compute_features(tiles, geometry)
    feature_seconds = time.perf_counter() - started
    started = time.perf_counter()
    reference = match_exact(vectors[sample], tiles, geometry, features=features)
    seconds = time.perf_counter() - started
    print(f"  match_exact on {len(sample)} cells: {seconds:.3f} s "
          f"({seconds / len(sample):.2e} s/cell; features {feature_seconds:.1f} s)")
    return same_picks("match_torch against match_exact", result, reference.tile,
                      reference.distance, sample)


def out_of_memory(torch: Any, device: Any, vectors: np.ndarray, tiles: np.ndarray,
                  geometry: Any, result: Any, kernel: str | None) -> bool:
    """Take most free memory, start with full budgets: retries then exact, or one line."""
    from mosaicist.errors import MosaicistError
    from mosaicist.match import _gpu as gpu

    if device.type != "cuda":
        print("  (CUDA only)")
        return True
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    # Enough for the CUDA kernels and a few small chunks, not for the full budgets.
    leave = 640 << 20
    try:
        hog = torch.empty(max(0, free - leave), dtype=torch.uint8, device=device)
    except torch.OutOfMemoryError:
        print(f"  could not take {(free - leave) / 2**30:.1f} GiB to provoke it; not tested")
        return True
    attempts: list[tuple] = []
    group = gpu._match_group

    def counted(*args: Any) -> Any:
        attempts.append(args[6])
        return group(*args)

    try:
        with patched(gpu, _initial_shrink=lambda torch, device: 1, _match_group=counted):
            started = time.perf_counter()
            try:
                other = gpu.match_torch(vectors, tiles, geometry, device=device, kernel=kernel)
            except MosaicistError as error:
                text = str(error)
                lines = len(text.splitlines())
                print(f"  stopped after {len(attempts)} attempts with {lines} line(s): {text}")
                return lines == 1
        plans = sorted({plan[:3] for plan in attempts}, reverse=True)
        print(f"  finished in {time.perf_counter() - started:.2f} s with "
              f"{len(plans) - 1} smaller plan(s): {plans}")
        every = np.arange(len(vectors))
        return same_picks("after the retries, every cell", result, other.tile, other.distance,
                          every)
    finally:
        del hog
        torch.cuda.empty_cache()
        free_after, _ = torch.cuda.mem_get_info(device)
        print(f"  memory given back: {free_after / 2**30:.1f} GiB free")


def main(argv: list[str] | None = None) -> int:
    """Run the stages; return the exit status (0 all exact, 1 a failure, 2 something missing)."""
    parser = argparse.ArgumentParser(
        description="Check mosaicist.match.match_torch (exhaustive, exact) on a device "
        "and time it.",
    )
    parser.add_argument("--data", help="shared data folder (default: ../shared/data)")
    parser.add_argument("--cache-dir", default=str(Path(__file__).resolve().parent / ".cache"),
                        help="mosaicist cache for the indexed library (default: benchmarks/.cache)")
    parser.add_argument("--synthetic", type=non_negative_int, metavar="N", default=0,
                        help="use N synthetic tiles and a synthetic target instead of the data")
    parser.add_argument("--limit", type=non_negative_int, default=0,
                        help="use only the first LIMIT tiles")
    parser.add_argument("--cell-px", type=positive_int, default=16, help="cell size (default 16)")
    parser.add_argument("--tile-px", type=positive_int, default=32, help="tile size (default 32)")
    parser.add_argument("--device", default="cuda", help="torch device (default cuda)")
    parser.add_argument("--kernel", choices=("int8", "float64"),
                        help="force a kernel (default: int8 on recent GPUs, else float64)")
    parser.add_argument("--repeat", type=positive_int, default=3, help="timed runs (default 3)")
    parser.add_argument("--check", type=non_negative_int, default=256,
                        help="cells checked against match_exact (default 256; 0 skips)")
    parser.add_argument("--skip-self-test", action="store_true",
                        help="leave out the small exactness cases")
    parser.add_argument("--skip-oom", action="store_true",
                        help="leave out the out-of-memory stage (a GPU shared with others)")
    parser.add_argument("--budget-s", type=positive_float, default=240,
                        help="skip stages that would start after this many seconds (default 240)")
    args = parser.parse_args(argv)

    try:
        from mosaicist.errors import MosaicistError, OptionError
        from mosaicist.grid import Geometry
        from mosaicist.match._gpu import _import_torch, _resolve_device
    except ImportError as error:
        missing(f"cannot import mosaicist ({error}); run from the repository root "
                 "or install it")
    try:
        # One line for a torch that is missing or broken (a CUDA library not found...).
        torch = _import_torch()
    except MosaicistError as error:
        missing(f"{error} (a CUDA build is needed for --device cuda)")
    try:
        device = _resolve_device(torch, args.device)
    except MosaicistError as error:
        print(f"torch {torch.__version__} (CUDA {torch.version.cuda}); "
              f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}")
        text = error.message(lambda name: "--" + name) if isinstance(error, OptionError) \
            else str(error)
        missing(text)

    stages = Stages(args.budget_s)
    default_kernel = stages.run("environment", lambda: describe_environment(torch, device), "?")
    print(f"kernel timed: {args.kernel or default_kernel}")
    if not args.skip_self_test:
        stages.run("self-test", lambda: self_test(torch, device, stages))
    loaded = stages.run("inputs", lambda: load_inputs(args))
    if loaded is None:
        return finish(stages)
    cells, tiles, description = loaded
    geometry = Geometry(args.cell_px, args.tile_px)
    vectors = geometry.cell_vectors(cells)
    print(f"  data: {description}; cells {len(vectors)} ({args.cell_px} px), "
          f"tiles {len(tiles)} ({args.tile_px} px)")
    result = stages.run("timing", lambda: time_runs(torch, device, vectors, tiles, geometry,
                                                    args.kernel, args.repeat))
    if result is None:
        return finish(stages)
    checks: list[tuple[str, Callable[[], bool]]] = [
        ("other kernel", lambda: other_kernel_agrees(torch, device, vectors, tiles, geometry,
                                                     result, args.kernel or default_kernel)),
    ]
    if args.check > 0:
        checks.append(("cpu reference", lambda: cpu_agrees(vectors, tiles, geometry, result,
                                                           args.check)))
    if not args.skip_oom:
        checks.append(("out of memory", lambda: out_of_memory(torch, device, vectors, tiles,
                                                              geometry, result, args.kernel)))
    for name, check in checks:
        if stages.run(name, check, True) is False:
            stages.fail(name)
    return finish(stages)


def finish(stages: Stages) -> int:
    """Print the RESULT line; return the exit status."""
    seconds = time.perf_counter() - stages.started
    if stages.failed:
        print(f"RESULT: FAILED ({', '.join(dict.fromkeys(stages.failed))}) in {seconds:.0f} s")
        return 1
    if stages.skipped:
        print(f"RESULT: INCOMPLETE, no check failed but {', '.join(stages.skipped)} skipped "
              f"(--budget-s) in {seconds:.0f} s")
        return 1
    print(f"RESULT: every check exact in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
