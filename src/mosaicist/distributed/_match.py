"""Matching on a cluster: blocks of cells times ranges of the library, over the workers.

The exact search is exact cell by cell and tile by tile: a cell's best tile
in the library is the best of the best tiles of its ranges, ties going to
the lowest position; its ``k`` best (with prices and a limit, as an
assignment asks) are the ``k`` best of every range's ``k`` best. So the
cells are cut into blocks, the library into ranges of at most
:data:`RANGE_TILES` tiles, and each (block, range) pair is one Dask task;
joined by (distance, position), the results are those of one machine,
exactly.

Nothing large goes through the scheduler. Each worker opens the library's
index from the shared cache (memory-mapped), and a first round of tasks
computes each range's candidates (in the metric's colour space, times the
transforms) and search features once, into the cache beside the index,
where the workers read them back for every block; the grid's cells are
written to a scratch folder in the cache. A task is sent only its cells'
numbers and its range (and, in pricing rounds, per-cell limits and the file
of the tile prices). A range's features take a few hundred megabytes
whatever the library's size, so a worker's memory stays bounded for
libraries of millions.

With repetition limits (:class:`ClusterCappedMatcher`) the assignment stays
here: the workers return each block's candidate lists (the first ``k``
nearest tiles, then the pricing searches of every round), and the
assignment is solved and certified on them as on one machine.

:func:`cluster_matching` puts these matchers in place of the exact ones of
:data:`mosaicist.match.MATCHERS` for a block of code, so that
:func:`mosaicist.make_mosaic` matches on the cluster unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._runtime import release_pages
from ..errors import MosaicistError
from ..grid import Grid
from ..library import TileLibrary
from ..library._shards import ShardedTiles
from ..match import (
    MATCHERS,
    CappedMatcher,
    ExactMatcher,
    MatchRequest,
    MatchResult,
    TileFeatures,
    cached_features,
    match_exact,
    prepare_tiles,
)
from ..match._capped import LibrarySearch
from ..match._contrast import CANDIDATES, best_after_transfer
from ..match._exact import search_scale
from ..options import MosaicOptions
from ..paths import atomic_path, process_alive
from ..paths import cache_dir as default_cache_dir
from ._cluster import counted, not_shared, require_workers, task_result, worker_spec

if TYPE_CHECKING:
    from distributed import Client

#: Most library tiles in one range: the worker searching it holds their bound
#: rows twice (with 256-component bounds, 2 x 136 MB) and maps their tiles and
#: block sums (600 MB at 32 px), so that a worker stays near 1 GB.
RANGE_TILES = 131_072
#: Fewest and most cells in one task.
BLOCK_CELLS = (256, 16384)
#: Tasks per worker a search is cut into, at least.
TASKS_PER_WORKER = 4


@contextlib.contextmanager
def cluster_matching(
    client: Client, cache_dir: str | os.PathLike[str] | None = None,
    block_cells: int | None = None, range_tiles: int = RANGE_TILES,
) -> Iterator[None]:
    """Run the exact matchers of this process on the cluster of ``client`` in the block.

    The ``exact`` and ``assignment`` entries of :data:`mosaicist.match.MATCHERS`
    are replaced for the block by :class:`ClusterExactMatcher` and
    :class:`ClusterCappedMatcher` (same names, same results), and put back
    after it. Other matchers (approximate, GPU) run here as before.

    Parameters
    ----------
    client : distributed.Client
        The cluster.
    cache_dir : path-like, optional
        The cache, at the same path on every worker.
    block_cells : int, optional
        Cells per task (default: from the grid, the ranges and the workers).
    range_tiles : int
        Most library tiles per range.
    """
    cache = default_cache_dir(cache_dir)
    ours = [ClusterExactMatcher(client, cache, block_cells, range_tiles),
            ClusterCappedMatcher(client, cache, block_cells, range_tiles)]
    previous = {matcher.name: MATCHERS[matcher.name] for matcher in ours}
    for matcher in ours:
        MATCHERS.register(matcher.name, matcher, replace=True)
    try:
        yield
    finally:
        for name, matcher in previous.items():
            MATCHERS.register(name, matcher, replace=True)


@dataclass(frozen=True)
class MatchJob:
    """What a worker needs to rebuild a request: all small, all by reference.

    Attributes
    ----------
    spec, cache : str
        The tile source's spec and the cache folder (shared by every worker).
    directory : str
        The index folder the library must be read from.
    generation, tiles : int
        The library's generation and size (before ``options.limit``), checked.
    options : MosaicOptions
        The request's settings.
    cell_height : int
        The cells' height in target pixels.
    cells : str
        The ``.npy`` file of the grid's cells, in the scratch folder.
    """

    spec: str
    cache: str
    directory: str
    generation: int
    tiles: int
    options: MosaicOptions
    cell_height: int
    cells: str


def scratch_folder(cache: Path) -> Path:
    """A new scratch folder's path for a search of this process, after sweeping dead ones.

    Named by this machine and process, so that the folders of runs of this
    machine that were killed (whose ``finally`` never ran) are known and
    removed here: a grid's cells take up to hundreds of megabytes. Runs of
    other machines sharing the cache are left to their own machine's.
    """
    root = cache / "cluster"
    host = _host()
    with contextlib.suppress(OSError):
        for entry in os.scandir(root):
            found = _SCRATCH.fullmatch(entry.name)
            if found is not None and found["host"] == host and \
                    not process_alive(int(found["pid"])):
                shutil.rmtree(entry.path, ignore_errors=True)
    return root / f"match-{host}-{os.getpid()}-{uuid.uuid4().hex}"


#: A scratch folder's name: ``match-<host>-<pid>-<random>``.
_SCRATCH = re.compile(r"match-(?P<host>[A-Za-z0-9_.]+)-(?P<pid>[0-9]+)-[0-9a-f]+")


def _host() -> str:
    """This machine's name as a scratch folder's name has it (no dashes, no odd characters)."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "_"


class _Search:
    """One request's searches on the cluster: its scratch folder, blocks and ranges."""

    def __init__(self, client: Client, cache: Path, request: MatchRequest,
                 block_cells: int | None, range_tiles: int) -> None:
        self.client = client
        self.request = request
        self.folder = scratch_folder(cache)
        self.workers = require_workers(client)
        self.block_cells = block_cells
        tiles = len(request.library)
        count = -(-tiles // range_tiles)
        self.ranges = [(tiles * number // count, tiles * (number + 1) // count)
                       for number in range(count)]
        self._job: MatchJob | None = None
        self._prices = 0

    def __enter__(self) -> _Search:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def worthwhile(self, cells: int) -> bool:
        """Whether ``cells`` cells make more than one task."""
        return len(self.ranges) > 1 or len(self.cuts(cells)) > 1

    def cuts(self, count: int) -> list[tuple[int, int]]:
        """``(start, stop)`` of each block of ``count`` cells."""
        low, high = BLOCK_CELLS
        blocks = max(1, -(-self.workers * TASKS_PER_WORKER // len(self.ranges)))
        size = self.block_cells or max(low, min(high, -(-count // blocks)))
        return [(start, min(count, start + size)) for start in range(0, count, size)]

    @property
    def job(self) -> MatchJob:
        """The job, with the cells and each range's features where the workers read them."""
        if self._job is None:
            request = self.request
            library = request.whole_library
            if library.positions is not None and not (library.duplicates_dropped
                                                      or library.identical_dropped):
                raise MosaicistError("a library that leaves tiles out can only be matched "
                                     "on one machine")
            self.folder.mkdir(parents=True, exist_ok=True)
            cells = self.folder / "cells.npy"
            with atomic_path(cells) as partial, open(partial, "wb") as handle:
                np.save(handle, request.grid.cells)
            job = MatchJob(
                worker_spec(library.source), str(_cache_of(library)), str(library.directory),
                library.generation, len(library), request.options, request.grid.cell_height,
                str(cells))
            # Each range's features once, by one worker, before any block needs them.
            self._gather([self.client.submit(prepare_range, job, start, stop, pure=False)
                          for start, stop in self.ranges])
            self._job = job
        return self._job

    def save_price(self, price: np.ndarray | None) -> str | None:
        """Write a pricing round's candidate prices to the scratch folder; return the path."""
        if price is None:
            return None
        self._prices += 1
        path = self.folder / f"price-{self._prices}.npy"
        with atomic_path(path) as partial, open(partial, "wb") as handle:
            np.save(handle, np.asarray(price, np.int64))
        return str(path)

    def nearest(self, cells: np.ndarray, k: int, *, price: np.ndarray | None = None,
                limit: np.ndarray | None = None, upper: np.ndarray | None = None,
                search_units: bool = False) -> MatchResult:
        """:func:`~mosaicist.match.match_exact` of ``cells`` over the library, on the workers."""
        job = self.job
        cells = np.asarray(cells, np.int64)
        price_path = self.save_price(price)
        cuts = self.cuts(len(cells))
        futures = [
            self.client.submit(
                search_range, job, cells[begin:end], start, stop, k, price_path,
                None if limit is None else limit[begin:end],
                None if upper is None else upper[begin:end], search_units, pure=False)
            # Range by range, so that a worker keeps working on the range it has loaded.
            for start, stop in self.ranges for begin, end in cuts]
        parts = self._gather(futures)
        variants = self.request.variants
        count = len(self.request.library) * variants
        blocks = [[parts[number * len(cuts) + block] for number in range(len(self.ranges))]
                  for block in range(len(cuts))]
        width = max(1, min(k, count))
        return _concatenated([_merged(ranges, width, k > 1) for ranges in blocks])

    def _gather(self, futures: Sequence[Any]) -> list[Any]:
        try:
            return [_result(future) for future in futures]
        finally:
            for future in futures:
                future.cancel()


class _OnCluster:
    """A matcher whose searches the workers run: the cluster and how to split the work.

    Parameters
    ----------
    client : distributed.Client
        The cluster.
    cache : pathlib.Path
        The cache, shared by every worker.
    block_cells : int, optional
        Cells per task.
    range_tiles : int
        Most library tiles per range.
    """

    def __init__(self, client: Client, cache: Path, block_cells: int | None = None,
                 range_tiles: int = RANGE_TILES) -> None:
        self.client, self.cache = client, cache
        self.block_cells, self.range_tiles = block_cells, range_tiles

    def searches(self, request: MatchRequest) -> _Search:
        """The cluster's searches for ``request`` (a context manager)."""
        return _Search(self.client, self.cache, request, self.block_cells, self.range_tiles)


class ClusterExactMatcher(_OnCluster, ExactMatcher):
    """:class:`~mosaicist.match.ExactMatcher` with its searches run by the workers (see
    :class:`_OnCluster` for the parameters)."""

    def match(self, request: MatchRequest) -> MatchResult:
        with self.searches(request) as search:
            if not search.worthwhile(len(request.grid)):
                return super().match(request)
            cells = np.arange(len(request.grid))
            options = request.options
            # Joined in exact search units, then in the objective's as match_exact gives them.
            if not options.contrast:
                return _in_objective_units(search.nearest(cells, 1, search_units=True), request)
            # As ExactMatcher: each cell's best candidates, re-ranked after the contrast.
            found = _in_objective_units(
                search.nearest(cells, max(2, CANDIDATES * request.variants), search_units=True),
                request)
        return best_after_transfer(request, found)


class ClusterCappedMatcher(_OnCluster, CappedMatcher):
    """:class:`~mosaicist.match.CappedMatcher`: the searches on the workers, the assignment
    here (see :class:`_OnCluster` for the parameters)."""

    _search: _Search | None = None

    def match(self, request: MatchRequest) -> MatchResult:
        with self.searches(request) as search:
            self._search = search
            try:
                return super().match(request)
            finally:
                self._search = None

    def library_search(self, request: MatchRequest) -> LibrarySearch:
        assert self._search is not None
        return ClusterSearch(request, self._search)


class ClusterSearch(LibrarySearch):
    """The library searches of an assignment, those of many cells run on the workers."""

    def __init__(self, request: MatchRequest, search: _Search) -> None:
        super().__init__(request)
        self.search = search

    def nearest_candidates(
        self, cells: np.ndarray, k: int, price: np.ndarray | None, limit: np.ndarray | None,
        upper: np.ndarray | None, among: np.ndarray | None = None,
    ) -> MatchResult:
        # A search of some tiles is small work: it stays here.
        if among is not None or not self.search.worthwhile(len(cells)):
            return super().nearest_candidates(cells, k, price, limit, upper, among)
        return self.search.nearest(cells, k, price=price, limit=limit, upper=upper,
                                   search_units=True)


# -- joining the parts ---------------------------------------------------------------


def _merged(parts: Sequence[MatchResult], width: int, listed: bool) -> MatchResult:
    """One block's results over every range joined: the best ``width`` by (distance, position).

    ``listed``: the parts are ``k``-lists (``candidates``), else single picks.
    """
    if len(parts) == 1:
        return parts[0]
    if listed:
        tiles = np.concatenate([part.candidates for part in parts], axis=1)
        distances = np.concatenate([part.candidate_distances for part in parts],
                                   axis=1)
    else:
        tiles = np.stack([part.tile for part in parts], axis=1)
        distances = np.stack([part.distance for part in parts], axis=1)
    missing = tiles < 0
    unset = np.inf if distances.dtype.kind == "f" else np.iinfo(np.int64).max
    order = np.lexsort((np.where(missing, np.iinfo(np.int64).max, tiles),
                        np.where(missing, unset, distances)), axis=1)[:, :width]
    tiles = np.take_along_axis(tiles, order, axis=1)
    distances = np.take_along_axis(distances, order, axis=1)
    tiles[tiles < 0] = -1
    evaluated = sum(part.evaluated for part in parts)
    bounded = sum(part.bounded for part in parts)
    if not listed:
        return MatchResult(tiles[:, 0].copy(), distances[:, 0].copy(), evaluated, bounded)
    return MatchResult(tiles[:, 0].copy(), distances[:, 0].copy(), evaluated, bounded,
                       tiles, distances)


def _concatenated(parts: Sequence[MatchResult]) -> MatchResult:
    """Block results joined in cell order."""
    def stacked(name: str) -> np.ndarray | None:
        values = [getattr(part, name) for part in parts]
        return None if values[0] is None else np.concatenate(values)

    return MatchResult(np.concatenate([part.tile for part in parts]),
                       np.concatenate([part.distance for part in parts]),
                       sum(part.evaluated for part in parts),
                       sum(part.bounded for part in parts),
                       stacked("candidates"), stacked("candidate_distances"))


def _in_objective_units(found: MatchResult, request: MatchRequest) -> MatchResult:
    """A search's distances in the objective's units, as :func:`~mosaicist.match.match_exact`
    gives them without ``search_units`` (float64 after a tint, missing ones infinite)."""
    scale = search_scale(request.geometry, request.options.tint)
    if scale == 1:
        return found
    unset = np.iinfo(np.int64).max

    def converted(distances: np.ndarray | None) -> np.ndarray | None:
        if distances is None:
            return None
        return np.where(distances == unset, np.inf, distances / scale)

    distance = converted(found.distance)
    assert distance is not None
    return MatchResult(found.tile, distance, found.evaluated, found.bounded, found.candidates,
                       converted(found.candidate_distances))


# -- on the workers ------------------------------------------------------------------


def prepare_range(job: MatchJob, start: int, stop: int) -> None:
    """On a worker: compute (or find) the candidates and features of tiles ``start:stop``."""
    _range(job, start, stop)


def search_range(
    job: MatchJob, cells: np.ndarray, start: int, stop: int, k: int, price_path: str | None,
    limit: np.ndarray | None, upper: np.ndarray | None, search_units: bool,
) -> MatchResult:
    """On a worker: the ``k`` best candidates of ``cells`` among tiles ``start:stop``.

    Positions in the result are the library's (the range's plus its start).
    """
    request = _block_request(job, cells)
    candidates, features = _range(job, start, stop)
    variants = request.variants
    first, last = start * variants, stop * variants
    price = None if price_path is None else np.load(price_path, mmap_mode="r")[first:last]
    found = match_exact(request.cell_vectors, candidates, request.geometry, features, k=k,
                        tint=request.options.tint, price=None if price is None else
                        np.asarray(price), limit=limit, upper=upper, search_units=search_units)
    for values in (found.tile, found.candidates):
        if values is not None:
            values[values >= 0] += first
    # The maps' pages stay in the page cache for the next block, not in this process.
    release_pages(candidates)
    if features.pooled is not None:
        release_pages(features.pooled)
    return found


def _block_request(job: MatchJob, cells: np.ndarray) -> MatchRequest:
    """The request of the job restricted to ``cells``, over the library as the cache holds it."""
    options = job.options
    library = _library(job)
    block = np.ascontiguousarray(np.load(job.cells, mmap_mode="r")[np.asarray(cells)])
    grid = Grid(1, len(block), options.cell_px, 0, 0, block, job.cell_height)
    return MatchRequest(grid, library, options)


@functools.lru_cache(maxsize=1)
def _range(job: MatchJob, start: int, stop: int) -> tuple[Any, TileFeatures]:
    """Candidates and features of the library's tiles ``start:stop`` (kept for the next block).

    The whole library (of the request's ``limit``) is the same cache entry
    as on one machine; a range has a folder of its own beside it. One range
    is kept: the tasks are sent range by range.
    """
    request = _block_request(job, np.zeros(0, np.int64))
    library, options = request.library, request.options
    whole = start == 0 and stop == len(library)
    if whole:
        return request.candidates, request.features
    tiles = _section(library.tiles, start, stop)
    folder = library.features_dir / "ranges" / f"{start}-{stop}"
    folder.mkdir(parents=True, exist_ok=True)
    candidates = prepare_tiles(tiles, options.metric, options.augment, folder,
                               f"g{library.generation}-n{stop - start}",
                               aspect=options.aspect_ratio)
    features = cached_features(candidates, request.geometry, folder, library.generation,
                               variant=f"{options.metric}-{request._augment_key}")
    return candidates, features


def _section(tiles: Any, start: int, stop: int) -> Any:
    """Tiles ``start:stop``, mapped (a view, never a copy of a sharded library)."""
    if isinstance(tiles, ShardedTiles):
        return tiles.section(start, stop)
    return tiles[start:stop]


@functools.lru_cache(maxsize=2)
def _library(job: MatchJob) -> TileLibrary:
    """The published library, read once per worker process (as the pipeline opens it)."""
    options = job.options
    if not Path(job.directory).is_dir():
        # Else opening the library says the source has no tiles, of a folder that is there.
        raise not_shared(job.directory, "the index folder")
    if not (Path(job.directory) / "manifest.sqlite").is_file():
        # A folder of this worker's own (an empty one, made by a run of its own): opened
        # without updating, the library would again look empty.
        raise not_shared(job.directory, "the index")
    library = TileLibrary.open(job.spec, options.match_px or options.tile_px,
                               cache_dir=job.cache, update=False, aspect=options.aspect_ratio,
                               crop=options.crop, colour_profiles=options.colour_profiles)
    library = library.without_copies(options.dedupe, options.identical_photos)
    if (str(library.directory), library.generation, len(library)) != (
            job.directory, job.generation, job.tiles):
        raise MosaicistError(
            f"{job.directory}: this worker sees another index ({library.directory}, "
            f"generation {library.generation}, {counted(len(library), 'tile')}, not generation "
            f"{job.generation} and {counted(job.tiles, 'tile')}); the cache must be on a "
            f"filesystem every worker shares, and the library must not change while matching")
    return library


def _cache_of(library: TileLibrary) -> Path:
    """The cache folder an index folder is in (``<cache>/indexes/<source>/<size>``)."""
    return library.directory.parent.parent.parent


def _result(future: Any) -> Any:
    """A task's result, or the one-line reason it failed."""
    return task_result(future, "a block of cells killed every worker it was given to "
                               "(out of memory?)")
