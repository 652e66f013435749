"""Indexing on a cluster: the entries to decode split over the workers, each part a shard.

The update runs as on one machine (:mod:`mosaicist.library._update`): this
process takes the index's write lock, scans the source and plans what to
decode, so only new or changed entries go out. Only the decode stage
differs (:class:`ClusterDecoder`): the entries are cut into parts of
consecutive entries, in library order, and each part is one Dask task. The
worker that runs it opens the source itself and decodes the part into a
shard file of its own in the index folder (:func:`mosaicist.library._shards.write_shard`),
which must therefore be on a filesystem every worker shares. As each task
finishes, this process lists its shard and stages its rows in one
transaction; the publish then keeps the shards in library order without
copying them, so the index is the one a single machine makes, tile for tile.

A worker that dies mid-part leaves at most a ``.part`` file: Dask runs the
part again on another worker, and the next update removes the leftover. A
part that cannot write its shard (a full disk, a folder that cannot be
written) is not run again, which would fail the same way: the run stops in
one line naming the file, publishing nothing. An interrupted or failed run
keeps every staged shard, and the next run decodes only the rest.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..aspect import SQUARE
from ..crop import crop_method
from ..errors import MosaicistError
from ..library import TileLibrary
from ..library._shards import ShardWriteError, read_shard_rows, rows_path, write_shard
from ..library._update import TileFormat, UpdateStats, folder_removed, stage_shard
from ..paths import cache_dir as default_cache_dir
from ..progress import progress_bar
from ..sources import SourceEntry, TileSource, open_source, source_spec
from ._cluster import (
    WorkerWatch,
    completed,
    not_shared,
    require_workers,
    task_result,
    worker_spec,
)

if TYPE_CHECKING:
    import sqlite3

    from distributed import Client, Future

#: Fewest and most entries in one task (a shard): small parts balance the
#: workers and cost little to run again; large ones make fewer files.
PART_ENTRIES = (16, 4096)
#: Parts per worker the entries are cut into, at most.
PARTS_PER_WORKER = 8
#: Tasks in flight per worker: enough to keep each busy, few enough that the
#: scheduler holds only a window of the entries.
IN_FLIGHT_PER_WORKER = 3


def index_library(
    client: Client,
    source: str | os.PathLike[str] | TileSource = "cifar10",
    match_px: int = 32,
    cache_dir: str | os.PathLike[str] | None = None,
    show_progress: bool = False,
    quiet: bool = True,
    *,
    aspect: tuple[int, int] | str = SQUARE,
    crop: str = "centre",
    part_entries: int | None = None,
    colour_profiles: str | None = None,
) -> TileLibrary:
    """Index ``source`` on the cluster of ``client`` and open the result.

    As :meth:`TileLibrary.open <mosaicist.library.TileLibrary.open>` (same
    index, same library, tile for tile), with the decoding done by the
    workers into shards of the index. The cache must be at the same path on
    every worker (a shared filesystem), and so must a folder of tiles.

    Parameters
    ----------
    client : distributed.Client
        The cluster (:func:`mosaicist.distributed.client_for`).
    source, match_px, cache_dir, show_progress, quiet, aspect, crop
        As for :meth:`TileLibrary.open <mosaicist.library.TileLibrary.open>`.
    part_entries : int, optional
        Entries per task (default: from the number of entries and workers,
        between 16 and 4096).
    colour_profiles : {"ignore", "convert"}, optional
        As for :meth:`TileLibrary.open <mosaicist.library.TileLibrary.open>`
        (default: as the presets that use ``crop`` do); the workers decode
        with it.

    Returns
    -------
    TileLibrary
        The published library.

    Raises
    ------
    MosaicistError
        When the cluster has no worker (before anything is written), a worker
        cannot import this mosaicist, read the source or write the cache, or
        a part fails on every worker it is given to.
    """
    # Before the update takes its lock and makes its folders: a cluster without a worker,
    # or with one of another mosaicist, left an index folder of an empty manifest.
    require_workers(client)
    cache = default_cache_dir(cache_dir)
    decoder = ClusterDecoder(client, cache, part_entries)
    return TileLibrary.open(source, match_px, cache_dir=cache, show_progress=show_progress,
                            quiet=quiet, aspect=aspect, crop=crop, decoder=decoder,
                            colour_profiles=colour_profiles)


class ClusterDecoder:
    """The decode stage of an index update, done by the workers of a cluster.

    See :class:`mosaicist.library._update.Decoder` for the call.

    Parameters
    ----------
    client : distributed.Client
        The cluster.
    cache : pathlib.Path
        The cache folder, where the workers open the source's downloads.
    part_entries : int, optional
        Entries per task.
    """

    #: Its parts decode with the index's ``colour_profiles`` (:func:`decode_part`), so
    #: an index whose profiles are converted is decoded here too, not on one machine.
    converts_profiles = True

    def __init__(self, client: Client, cache: Path, part_entries: int | None = None) -> None:
        self.client = client
        self.cache = cache
        self.part_entries = part_entries
        #: Seconds the last call spent, and its parts.
        self.seconds = 0.0
        self.parts = 0

    def __call__(
        self, source: TileSource, entries: Sequence[SourceEntry], tile: TileFormat,
        directory: Path, connection: sqlite3.Connection, stats: UpdateStats,
        show_progress: bool,
    ) -> None:
        from distributed import as_completed

        started = time.perf_counter()
        workers = require_workers(self.client)
        size = self.part_entries or part_size(len(entries), workers)
        parts = [Part(tuple(entries[start:start + size]))
                 for start in range(0, len(entries), size)]
        self.parts = len(parts)
        spec = source_spec(source)  # as messages name it; the workers get the path itself
        arguments = (worker_spec(source), str(self.cache), tile, str(directory))
        waiting = iter(enumerate(parts))
        running = as_completed(loop=self.client.loop)
        sizes: dict[Future, int] = {}
        token = uuid.uuid4().hex[:12]

        def submit_next() -> None:
            for number, part in waiting:
                future = self.client.submit(decode_part, *arguments, part, pure=False,
                                            key=f"mosaicist-index-{token}-{number}")
                sizes[future] = len(part.entries)
                running.add(future)
                return

        with progress_bar(len(entries), "indexing", unit="img", enabled=show_progress) as bar:
            for _ in range(workers * IN_FLIGHT_PER_WORKER):
                submit_next()
            try:
                for future in completed(running, WorkerWatch(self.client)):
                    try:
                        shard, _tiles, _failed, unseen = _result(future, spec)
                        # Not staged: its files' failures would stay in the index.
                        _check_seen(unseen)
                        _check_written_here(directory, shard)
                        rows = read_shard_rows(directory, shard)
                    except MosaicistError as error:
                        raise _said_of_the_folder(error, directory) from None
                    stage_shard(connection, shard, rows.tiles, rows.failures)
                    rows_path(directory / shard).unlink(missing_ok=True)
                    done = sizes.pop(future)
                    stats.decoded += done
                    bar.update(done)
                    submit_next()
            finally:
                # However this ends, no part keeps running for an update that stopped.
                for future in list(sizes):
                    future.cancel()
        if not directory.is_dir():
            # The manifest's commits went to a file no longer listed: the publish would
            # have "succeeded" with nothing left.
            raise folder_removed(directory)
        self.seconds = time.perf_counter() - started


@dataclass(frozen=True)
class Part:
    """The entries of one task, in library order.

    One object, so that Dask sends it as it is instead of walking every
    entry of a list as a possible task argument (a third of this
    process's time for small files).
    """

    entries: tuple[SourceEntry, ...]


def part_size(entries: int, workers: int) -> int:
    """Entries per task for ``entries`` over ``workers`` (see :data:`PART_ENTRIES`)."""
    low, high = PART_ENTRIES
    return max(low, min(high, -(-entries // (workers * PARTS_PER_WORKER))))


def decode_part(
    spec: str, cache: str, tile: TileFormat, directory: str, part: Part
) -> tuple[str, int, int, tuple[str, ...]]:
    """On a worker: decode the entries of ``part`` of the source ``spec`` into a new shard.

    Returns
    -------
    (str, int, int, tuple of str)
        The shard file's name, its tiles, the entries that failed, and the
        files of the part that are not on this worker (see :func:`_check_seen`).

    Raises
    ------
    MosaicistError
        When this worker would crop differently (no face detector here), or
        cannot see the index folder.
    """
    method = crop_method(tile.crop)
    if method != tile.method:
        raise MosaicistError(f"this worker crops {tile.crop} photos by {method}, the index by "
                             f"{tile.method}: install the same extras on every worker")
    folder = Path(directory)
    if not folder.is_dir():
        raise not_shared(folder, "the index folder")
    # Opened for each part, not kept: a source may map its files (an array
    # file, a dataset's batches), whose pages would otherwise count as this
    # worker's for as long as it lives.
    source = open_source(spec, cache_dir=Path(cache))
    unseen = tuple(path for path in _file_paths(part.entries) if not os.path.lexists(path))
    shard, tiles, failed = write_shard(source, part.entries, tile.width, tile.aspect,
                                       tile.crop, folder, colour_profiles=tile.colour_profiles)
    return shard, tiles, failed, unseen


def _file_paths(entries: Sequence[SourceEntry]) -> list[str]:
    """The files of ``entries`` found by path (a folder's), for the others nothing."""
    return [str(entry.locator) for entry in entries
            if isinstance(entry.locator, str | os.PathLike) and os.path.isabs(entry.locator)]


def _check_seen(unseen: Sequence[str]) -> None:
    """Refuse a part some of whose files its worker could not see, but this process can.

    Those files would be recorded as failures, and an index update skips an
    unchanged failure: the next runs, on one machine too, would have left
    them out for good. A file gone here too was removed since the scan, a
    failure as on one machine.

    Raises
    ------
    MosaicistError
        Naming the first such file.
    """
    here = next((path for path in unseen if os.path.lexists(path)), None)
    if here is not None:
        raise not_shared(here, "this file of the tiles", "tiles", "a worker")


def _check_written_here(directory: Path, shard: str) -> None:
    """Refuse a shard its worker wrote to a folder of its own, at the index's path.

    A worker whose own disk has a folder there (made by a run of its own)
    writes its shard into it: here, its rows were said to be unreadable,
    which named neither the cause nor the cure.

    Raises
    ------
    MosaicistError
        When neither the shard nor its rows are in ``directory`` here.
    """
    if not (directory / shard).exists() and not rows_path(directory / shard).exists():
        raise MosaicistError(f"{directory}: a worker wrote its part of the index elsewhere "
                             f"({shard} is not here); the cache must be on a filesystem every "
                             f"worker shares")


def _said_of_the_folder(error: MosaicistError, directory: Path) -> MosaicistError:
    """What to say of a part that failed: ``error``, or the index folder's removal.

    A folder removed under the run (its cache deleted, unmounted) failed its
    next part on a worker, which said the folder was not on that worker, as
    if the cache were not shared, or that a worker wrote its shard elsewhere.
    A shard that could not be written (no room, a folder read-only) stops
    the run, but the parts staged before stay: the next run decodes the rest.
    """
    if not directory.is_dir():
        return folder_removed(directory)
    if isinstance(error, ShardWriteError):
        return MosaicistError(f"{error}; the parts finished are kept")
    return error


def _result(future: Future, spec: str) -> tuple[str, int, int, tuple[str, ...]]:
    """A part's result, or the one-line reason it failed."""
    try:
        return task_result(future, f"{spec}: a part of the index killed every worker it was "
                                   f"given to (out of memory?); the parts finished are kept",
                           kept="; the parts finished are kept")
    except MosaicistError:
        raise
    except OSError as error:
        where = f"{error.filename}: " if getattr(error, "filename", None) else ""
        raise MosaicistError(f"{where}a worker could not write the index: "
                             f"{error.strerror or error}") from None
