"""Dask benchmark: indexing and searching on a LocalCluster against one machine's pool.

What it measures
----------------
``index`` (the default): for each library, on the same cores,

* **plain decoding** in 1 and 2 processes: every file read and made a tile
  (``mosaicist.imaging.read_tile_file``, centre crop, 32 px) in a
  ``multiprocessing.Pool``, nothing written: what the hardware gives, and
  its own 1 -> 2 scaling (two vCPUs rarely give 2x);
* **today's pool**: ``TileLibrary.open`` into a fresh cache with
  ``MOSAICIST_THREADS`` = 1 and 2 (one process decodes in place; two are a
  process pool);
* **Dask**: ``mosaicist.distributed.index_library`` on a ``LocalCluster`` of 1 and
  2 worker processes into a fresh cache (the cluster started beforehand; its
  start-up, and the workers' first imports, printed apart).

Overhead = Dask / pool - 1 at the same number of processes (goal <= 10%),
in wall time (each configuration's fastest of ``--repeat`` interleaved runs:
the machine's other load only adds to it) and in CPU seconds of all the
processes of the run (median); scaling = 1-process time / 2-process time,
for each, against plain decoding's. Libraries: the 50,000 ``cifar10/train`` JPEGs (``--files N``
for a subset: a folder of links to the first N in library order) and 200
twelve-megapixel photos (made once by ``bench_index.py``'s generator;
``--photos 0`` skips them).

``million``: a synthetic library of ``--tiles`` tiles (default 2,000,000:
``bench_million.py``'s derived CIFAR variants, 32 px, built once as an
``.npy``), indexed by a ``LocalCluster`` of 2 workers into a fresh cache,
then searched exactly (``--preset seed``, 16 px cells) for a target of
``--cells`` cells, on the same cluster, twice: cold (the workers first make
each range's search features) and warm. Printed: seconds per phase, peak
RSS of each worker (``VmHWM``, read in the workers after each phase; the
workers are restarted between phases) and of the client process. Goal:
peak RSS per worker < 2 GB.

Every measured run is its own child process (fresh interpreter, fresh cache).

Run (from the repository root)::

    python benchmarks/bench_dask.py index                 # 50k CIFAR + 200 photos
    python benchmarks/bench_dask.py index --quick         # 10k CIFAR, no photos
    python benchmarks/bench_dask.py million               # 2,000,000 tiles
    python benchmarks/bench_dask.py million --quick       # 200,000 tiles
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    cache_dir,
    cache_folder,
    data_dir,
    fresh_dir,
    machine,
    non_negative_int,
    positive_int,
    print_table,
    require_pictures,
    run_child,
)

TILE_PX = 32
CELL_PX = 16


# -- children ------------------------------------------------------------------------


def _decode_batch(paths: list[str]) -> int:
    from mosaicist.imaging import read_tile_file

    for path in paths:
        read_tile_file(path, TILE_PX, (1, 1), "centre")
    return len(paths)


def _cpu() -> float:
    """CPU seconds of this process and of the children it waited for."""
    import resource

    return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


def child_plain(folder: str, processes: int) -> dict:
    from mosaicist.sources.folder import FolderSource

    paths = [str(entry.locator) for entry in FolderSource(folder).scan()]
    batches = [paths[start:start + 128] for start in range(0, len(paths), 128)]
    cpu, started = _cpu(), time.perf_counter()
    if processes == 1:
        done = sum(map(_decode_batch, batches))
    else:
        with Pool(processes) as pool:
            done = sum(pool.imap_unordered(_decode_batch, batches))
    return {"seconds": time.perf_counter() - started, "cpu": _cpu() - cpu, "files": done}


def child_pool(folder: str, cache: str) -> dict:
    from mosaicist.library import TileLibrary

    cpu = _cpu()
    library = TileLibrary.open(folder, TILE_PX, cache_dir=cache, crop="centre")
    assert library.stats is not None
    return {"seconds": library.stats.seconds, "cpu": _cpu() - cpu, "tiles": len(library)}


def child_cluster(folder: str, cache: str, workers: int) -> dict:
    from mosaicist.distributed import client_for, index_library

    started = time.perf_counter()
    with client_for(f"local:{workers}") as client:
        client.wait_for_workers(workers)
        _warm_up(client)
        up = time.perf_counter() - started
        cpu = _cpu() + _worker_cpu(client)
        library = index_library(client, folder, TILE_PX, cache, crop="centre")
        cpu = _cpu() + _worker_cpu(client) - cpu
        rss = _worker_peaks(client)
    assert library.stats is not None
    return {"seconds": library.stats.seconds, "cpu": cpu, "tiles": len(library),
            "startup": up, "worker_rss": rss}


def _worker_cpu(client: object) -> float:
    return sum(client.run(time.process_time).values())  # type: ignore[attr-defined]


def child_million(npy: str, cache: str, cells: int, workers: int) -> dict:
    import numpy as np

    from mosaicist.distributed import client_for, index_library, make_on_cluster
    from mosaicist.options import MosaicOptions

    rows = max(1, int(round((cells * 9 / 16) ** 0.5)))
    cols = max(1, cells // rows)
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:rows * CELL_PX, 0:cols * CELL_PX]
    target = np.clip(np.stack([x % 256, y % 256, (x + y) % 256], -1)
                     + rng.normal(0, 20, (rows * CELL_PX, cols * CELL_PX, 3)),
                     0, 255).astype(np.uint8)
    figures: dict = {"cells": rows * cols}
    with client_for(f"local:{workers}") as client:
        client.wait_for_workers(workers)
        _warm_up(client)
        started = time.perf_counter()
        library = index_library(client, npy, TILE_PX, cache, crop="centre")
        figures["index"] = time.perf_counter() - started
        figures["tiles"] = len(library)
        figures["index_worker_rss"] = _worker_peaks(client)
        figures["index_client_rss"] = _peak_rss()
        options = MosaicOptions(preset="seed", cell_px=CELL_PX, tile_px=TILE_PX)
        for state in ("cold", "warm"):
            client.restart()  # each phase's own peaks
            _warm_up(client)
            started = time.perf_counter()
            mosaic = make_on_cluster(client, target, library, options, cache_dir=cache)
            figures[f"make_{state}"] = time.perf_counter() - started
            figures[f"match_{state}"] = mosaic.timings["match"]
            figures[f"search_worker_rss_{state}"] = _worker_peaks(client)
    figures["client_rss"] = _peak_rss()
    return figures


def _warm_up(client: object) -> None:
    """Import what the tasks use in every worker (a long-running cluster has, once)."""
    import importlib

    def load() -> None:
        for name in ("mosaicist.distributed._index", "mosaicist.distributed._match",
                     "mosaicist.imaging", "mosaicist.sources.folder"):
            importlib.import_module(name)

    client.run(load)  # type: ignore[attr-defined]


def _peak_rss() -> int:
    """This process's peak RSS in bytes: ``VmHWM``, which, unlike ``ru_maxrss``, starts
    again at exec (a LocalCluster's workers are spawned by the client's process, whose
    high-water mark ``ru_maxrss`` would carry over)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _worker_peaks(client: object) -> list[int]:
    return sorted(client.run(_peak_rss).values())  # type: ignore[attr-defined]


CHILDREN = {"plain": child_plain, "pool": child_pool, "cluster": child_cluster,
            "million": child_million}


def run(kind: str, *args: object, env: dict | None = None) -> dict:
    """Run child ``kind`` in a fresh interpreter; return its figures (and its wall and RSS)."""
    done = run_child([sys.executable, __file__, "_child", kind, json.dumps(list(args))],
                     env=env).check()
    figures = json.loads(done.output.strip().splitlines()[-1])
    figures["wall"] = done.seconds
    figures["peak_rss"] = done.peak_rss_bytes
    return figures


# -- the benchmarks ------------------------------------------------------------------


def subset_folder(source: Path, cache: Path, count: int | None) -> Path:
    """``source`` itself, or a folder of links to its first ``count`` images (library order)."""
    if count is None:
        return source
    from mosaicist.sources.folder import FolderSource

    folder = cache / f"{source.name}-first-{count}"
    if not folder.exists():
        with cache_folder(folder) as partial:
            for entry in FolderSource(source).scan()[:count]:
                link = partial / entry.source_id
                link.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(entry.locator, link)
    return folder


def bench_index(folder: Path, cache: Path, label: str, repeat: int) -> list[list[object]]:
    """Plain decoding, today's pool and Dask at 1 and 2 processes on ``folder``.

    The runs are interleaved ``repeat`` times; each configuration keeps its
    fastest wall time (the machine's other load only ever adds to it) and
    its median CPU seconds (all its processes).
    """
    runs: dict[tuple[str, int], list[dict]] = {}
    for _ in range(repeat):
        for processes in (1, 2):
            threads = {"MOSAICIST_THREADS": str(processes)}
            for kind in ("plain", "pool", "cluster"):
                arguments: list[object] = [str(folder)]
                scratch = fresh_dir(cache / "runs", f"{kind}-") if kind != "plain" else None
                if scratch is not None:
                    arguments.append(str(scratch))
                if kind != "pool":
                    arguments.append(processes)
                try:
                    runs.setdefault((kind, processes), []).append(run(kind, *arguments,
                                                                      env=threads))
                finally:
                    # A failed or interrupted run's cache too: never reused.
                    if scratch is not None:
                        shutil.rmtree(scratch, ignore_errors=True)
    wall = {key: min(run["seconds"] for run in values) for key, values in runs.items()}
    cpu = {key: sorted(run["cpu"] for run in values)[len(values) // 2]
           for key, values in runs.items()}
    files = runs["plain", 1][0]["files"]
    rows: list[list[object]] = []
    for kind, name in (("plain", "plain decoding"), ("pool", "today's pool"),
                       ("cluster", "Dask LocalCluster")):
        one, two = wall[kind, 1], wall[kind, 2]
        rows.append([f"{label}: {name}", f"{one:.1f} s", f"{two:.1f} s",
                     f"{files / two:,.0f}/s", f"{one / two:.2f}x",
                     f"{cpu[kind, 1] * 1000 / files:.2f} / {cpu[kind, 2] * 1000 / files:.2f}"])
    for processes in (1, 2):
        rows.append([f"{label}: Dask overhead at {processes} process(es)",
                     f"{(wall['cluster', processes] / wall['pool', processes] - 1) * 100:+.1f}%",
                     "", "", "",
                     f"{(cpu['cluster', processes] / cpu['pool', processes] - 1) * 100:+.1f}%"])
    last = runs["cluster", 2][-1]
    rows.append([f"{label}: cluster start-up (2 workers), worker peak RSS",
                 f"{last['startup']:.1f} s", f"{max(last['worker_rss']) / 2**30:.2f} GiB",
                 "", "", ""])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", default="index", choices=("index", "million"))
    parser.add_argument("--quick", action="store_true",
                        help="index: 10,000 CIFAR files, no photos; million: 200,000 tiles")
    parser.add_argument("--files", type=positive_int, default=None,
                        help="CIFAR files (default: all)")
    parser.add_argument("--photos", type=non_negative_int, default=200,
                        help="12 MP photos (0: skip; at most 200)")
    parser.add_argument("--repeat", type=positive_int, default=None,
                        help="index: interleaved runs of each configuration (default 3; "
                             "--quick: 2)")
    parser.add_argument("--tiles", type=positive_int, default=2_000_000,
                        help="synthetic library size")
    parser.add_argument("--cells", type=positive_int, default=8_100,
                        help="cells of the searched target")
    parser.add_argument("--data", help="shared data folder (default: ../shared/data)")
    parser.add_argument("--cache-dir", help="generated data, caches (default: benchmarks/.cache)")
    args = parser.parse_args()
    if args.photos > 200:
        parser.error(f"--photos: at most 200 (bench_index.py makes 200), got {args.photos}")
    data, cache = data_dir(args.data), cache_dir(args.cache_dir)
    print(machine())
    if args.what == "index":
        files = 10_000 if args.quick and args.files is None else args.files
        photos = 0 if args.quick else args.photos
        repeat = args.repeat or (2 if args.quick else 3)
        # Checked here: the first child to read it would fail with a traceback.
        cifar = require_pictures(data / "cifar10" / "train", "CIFAR-10 tiles")
        rows = bench_index(subset_folder(cifar, cache, files), cache,
                           f"{files or 50_000:,} CIFAR", repeat)
        if photos:
            from bench_index import make_photos

            folder = subset_folder(make_photos(data, cache), cache,
                                   None if photos == 200 else photos)
            rows += bench_index(folder, cache, f"{photos} photos 12 MP", repeat)
        print_table(rows, ["library: what", "1 process", "2 processes", "rate at 2",
                           "1 -> 2", "CPU ms/file (1 / 2)"])
        return
    from bench_million import build_library

    tiles = 200_000 if args.quick else args.tiles
    npy = build_library(data, cache, tiles, 0)
    scratch = fresh_dir(cache / "runs", "dask-million-")
    try:
        figures = run("million", str(npy), str(scratch), args.cells, 2)
    finally:
        # The index and search features of the synthetic library: GBs at 2,000,000 tiles.
        shutil.rmtree(scratch, ignore_errors=True)
    rows = [
        ["tiles, cells", f"{figures['tiles']:,}", f"{figures['cells']:,}"],
        ["index on 2 workers", f"{figures['index']:.0f} s",
         f"{figures['tiles'] / figures['index']:,.0f} tiles/s"],
        ["  peak RSS per worker", *[f"{value / 2**30:.2f} GiB"
                                    for value in figures["index_worker_rss"]]],
        ["  client peak RSS", f"{figures['index_client_rss'] / 2**30:.2f} GiB", ""],
    ]
    for state, what in (("cold", "ranges' features made"), ("warm", "features cached")):
        rows += [
            [f"make (exact, seed), {what}", f"{figures[f'make_{state}']:.0f} s",
             f"match {figures[f'match_{state}']:.0f} s"],
            ["  peak RSS per worker", *[f"{value / 2**30:.2f} GiB"
                                        for value in figures[f"search_worker_rss_{state}"]]],
        ]
    rows.append(["client process peak RSS", f"{figures['client_rss'] / 2**30:.2f} GiB", ""])
    print_table(rows)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_child":
        print(json.dumps(CHILDREN[sys.argv[2]](*json.loads(sys.argv[3]))))
    else:
        main()
