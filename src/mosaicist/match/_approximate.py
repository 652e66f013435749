"""Approximate nearest-tile search: a graph or an inverted-file index, re-ranked exactly.

``--search approximate`` trades the guarantee of :func:`~mosaicist.match.match_exact`
for speed on large libraries (up to millions of tiles). It works in the space
of the PCA bound that the exact search already computes
(:class:`~mosaicist.match.TileFeatures`):

1. **Index space.** The bound is ``LB = k |g - f|^2 + c`` (``g``, ``f`` the
   cell's and the tile's projected block means, ``c`` the tile's
   within-block variation, ``k`` the scale). Keeping the first ``p``
   components, each tile becomes the point ``[f_1..f_p, e]`` with
   ``e^2 = |f_{p+1..}|^2 + c / k`` and each cell the point ``[g_1..g_p, 0]``, so
   that their squared Euclidean distance is the bound with the cell's
   remaining components taken as zero: an ordinary L2 nearest-neighbour
   problem that keeps the ranking of ``LB`` (and so, closely, of ``D``).
2. **Index** (``structure``). With FAISS importable, a *graph* of nearest
   neighbours (``IndexHNSWFlat``: each tile linked to about
   :data:`GRAPH_NEIGHBOURS` near ones, in layers): each cell walks from an
   entry point towards its nearest tiles, keeping the
   :data:`GRAPH_SEARCH_DEPTH` best seen, and returns its ``candidates``
   nearest (tiles with the same index point, such as copies of one photo,
   are linked once, as the first of them: see :func:`_build_graph`). Else
   *lists*, an inverted file: a coarse k-means (``nlist`` lists, about
   ``LISTS_PER_ROOT * sqrt(M)``: 4,000 lists of 250 tiles for a million)
   partitions the tiles; each cell scans the ``nprobe`` lists
   whose centres are nearest and keeps its ``candidates`` nearest tiles
   (FAISS's ``IndexIVFFlat``, or a NumPy implementation: k-means by GEMM on
   a sample, then one GEMM per list over the cells that probe it). At a
   million tiles a graph walk finds each cell's nearest index points as
   often as 32 probes of 4,000 lists while measuring about 1,000 tiles
   instead of 8,000 (see :func:`match_approximate`'s notes).
3. **Exact re-rank.** The candidates' full bounds (all components) are
   computed; the ``EXACT_FIRST`` lowest are evaluated exactly (integer
   objective, :func:`~mosaicist.match.exact_distances`), and so is every
   other candidate whose bound does not exceed the best exact distance
   found. The result is therefore the exact optimum among the candidates,
   ties to the lowest library position; a cell misses its true optimum only
   when that tile is not among its candidates. Cells go through search and
   re-rank ``CELL_CHUNK`` at a time, one chunk per thread on each core (a
   FAISS search on one core each): the buffers stay small enough for the
   processor's cache (at 4,096 cells the re-rank took twice as long), and
   the re-rank of one chunk runs beside the walk of another.

The built index depends only on the features, so it is cached (when a
``cache_dir`` is given) under a key made of the features' identity (the
library's generation, and a digest of the features) and the index
parameters, written under a temporary name and renamed into place (so a
graph mapped from its file by a running search never changes under it).
Writing one removes the indexes of earlier generations from the folder.
The graph is built by FAISS on all cores, and the order in which the
threads link tiles may differ between builds: a rebuilt graph can differ
from the cached one in a few cells' picks (each still exact among its
candidates), never in what a cached index gives.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._runtime import OrderedJobs, one_blas_thread, worker_count
from ..errors import MosaicistError, OptionError, alternatives
from ..grid import Geometry
from ..paths import (
    STORED_ARRAY_ERRORS,
    atomic_path,
    build_lock,
    mark_used,
    remove_older_generations,
)
from ..progress import progress_bar
from ._exact import _improve, cells_for_dots, exact_distances, match_exact
from ._features import (
    BOUND_TERMS,
    TileFeatures,
    bound_scale,
    cell_bound_rows,
    checked_search,
    compute_features,
)
from ._registry import Matcher, MatchRequest, MatchResult

if TYPE_CHECKING:
    from ..options import MosaicOptions

#: The refusal of a tint or contrast transfer (``value`` the search). A template, so that
#: the studio can say it in its own words (the value by its label, not inside the wording).
APPROXIMATE_UNCORRECTED = "{search} {value} does not combine with {tint}, {tint_max} or {contrast}"
#: Version of the cached index layout and key (bump when either changes).
INDEX_VERSION = 2
#: The same for the graph: 3 since session 34, which links repeated points once.
GRAPH_INDEX_VERSION = 3
#: A cached index named for a library generation (:func:`_cache_key`).
_INDEX_FILE = re.compile(r"(?:ivf|hnsw)-v\d+-g(?P<generation>\d+)-.+\.(?:faiss|npz)")
#: Cached indexes whose keys are never made again: those of version 1, named without a
#: generation, and graphs of version 2 (every repeated point linked). Removed with the
#: older generations'.
_RETIRED_INDEX_FILE = re.compile(
    r"(?:(?:ivf|hnsw)-v1-(?:faiss|numpy)-.+|hnsw-v2-.+)\.(?:faiss|npz)")
#: Index structures: a graph of nearest neighbours (FAISS only), an inverted file.
STRUCTURES = ("graph", "lists")
#: Neighbours each tile links to in the graph (HNSW's ``M``; twice as many on its bottom
#: layer).
GRAPH_NEIGHBOURS = 16
#: Candidates kept while linking each tile into the graph (``efConstruction``): a
#: graph linked with care is walked faster for the same picks (see match_approximate;
#: 200 since session 28: built once in 83 s instead of 42 s at a million tiles, then
#: walked at 52 instead of 64 for the same picks).
GRAPH_BUILD_DEPTH = 200
#: Candidates each cell's walk of the graph keeps (``efSearch``; at least ``candidates``).
GRAPH_SEARCH_DEPTH = 52
#: Leading principal components of the index space.
INDEX_DIMENSIONS = 32
#: Lists of the inverted file per square root of the tile count (4,000 for a
#: million tiles): finer lists than sqrt(M) reach the same share of exact picks
#: with half the tiles scanned (see match_approximate's notes).
LISTS_PER_ROOT = 4
#: Lists scanned per cell.
DEFAULT_NPROBE = 32
#: Candidates per cell whose full bound is computed (the nearest in index space), from
#: the lists.
DEFAULT_CANDIDATES = 32
#: The same from the graph: its walk's nearest are nearer (see match_approximate's notes).
GRAPH_CANDIDATES = 16
#: Candidates (lowest bound first) evaluated exactly for every cell.
EXACT_FIRST = 1
#: Training points per list for the k-means (an evenly spaced sample of tiles).
TRAIN_PER_LIST = 24
#: Lloyd iterations of the k-means.
KMEANS_ITERATIONS = 10
#: Cells searched at a time (bounds the candidate and scan buffers).
CELL_CHUNK = 1024
#: Rows per GEMM when assigning points to centres.
ASSIGN_CHUNK = 32768


#: Why FAISS could not be imported though installed (said once), or None.
_faiss_failure: str | None = None


def _load_faiss() -> Any | None:
    """Return the ``faiss`` module, or None when it is not installed or cannot be imported.

    A broken install (a library it links missing: OSError; one built against
    another NumPy: AttributeError...) costs the NumPy lists' speed, not the
    mosaic: a warning says why, once.
    """
    global _faiss_failure
    if _faiss_failure is not None:
        return None
    try:
        import faiss
    except ImportError:
        return None
    except Exception as error:  # noqa: BLE001 - a broken install raises several kinds
        text = (str(error).strip().splitlines() or [""])[0]
        _faiss_failure = f"{type(error).__name__}{': ' + text if text else ''}"
        warnings.warn(f"FAISS is installed but cannot be imported ({_faiss_failure}); "
                      "the approximate search uses NumPy's inverted lists", RuntimeWarning,
                      stacklevel=2)
        return None
    return faiss


@dataclass
class _NumpyIndex:
    """A NumPy inverted file: list ``j`` holds rows ``rows[offsets[j]:offsets[j + 1]]``."""

    centroids: np.ndarray
    rows: np.ndarray
    offsets: np.ndarray


def _tile_points(bound: np.ndarray, dimensions: int, scale: float) -> np.ndarray:
    """Index-space points ``[f_1..f_p, e]`` of bound rows (``TileFeatures.bound``), float32."""
    total = bound.shape[1] - BOUND_TERMS
    head = bound[:, :dimensions].astype(np.float64)
    # The bound's column term is k |f|^2 + c (slightly loosened); removing the
    # kept components leaves k e^2 = k |f_tail|^2 + c.
    rest = bound[:, total + 1].astype(np.float64) / scale - np.einsum("ij,ij->i", head, head)
    points = np.empty((len(bound), dimensions + 1), np.float32)
    points[:, :dimensions] = head
    points[:, dimensions] = np.sqrt(np.maximum(rest, 0.0))
    return points


def _cell_points(cell_rows: np.ndarray, dimensions: int, scale: float) -> np.ndarray:
    """Index-space points ``[g_1..g_p, 0]`` of the cells (from their bound rows)."""
    points = np.zeros((len(cell_rows), dimensions + 1), np.float32)
    points[:, :dimensions] = cell_rows[:, :dimensions] / np.float32(-2.0 * scale)
    return points


def _nearest_centres(points: np.ndarray, centroids: np.ndarray, count: int) -> np.ndarray:
    """Indices of each point's ``count`` nearest centres (nearest first), by GEMM."""
    centre2 = np.einsum("ij,ij->i", centroids, centroids)
    out = np.empty((len(points), count), np.int64)
    for start in range(0, len(points), ASSIGN_CHUNK):
        part = points[start:start + ASSIGN_CHUNK]
        # |x|^2 is the same for every centre of a row, so it does not change the order.
        distance = centre2[None, :] - 2.0 * (part @ centroids.T)
        if count == 1:
            out[start:start + len(part), 0] = distance.argmin(axis=1)
            continue
        near = np.argpartition(distance, count - 1, axis=1)[:, :count]
        order = np.argsort(np.take_along_axis(distance, near, axis=1), axis=1)
        out[start:start + len(part)] = np.take_along_axis(near, order, axis=1)
    return out


def _kmeans(sample: np.ndarray, lists: int, iterations: int) -> np.ndarray:
    """Lloyd's k-means with GEMM assignment; centres start at random sample points."""
    from scipy import sparse

    rng = np.random.default_rng(0)
    centroids = sample[rng.choice(len(sample), lists, replace=False)].astype(np.float32)
    columns = np.arange(len(sample))
    for _ in range(iterations):
        assign = _nearest_centres(sample, centroids, 1)[:, 0]
        # A sparse membership matrix sums each list's points in one product.
        members = sparse.csr_matrix(
            (np.ones(len(sample), np.float32), (assign, columns)), shape=(lists, len(sample))
        )
        counts = np.bincount(assign, minlength=lists)
        sums = np.asarray(members @ sample)
        filled = counts > 0
        # An empty list keeps its old centre: harmless, it just stays (nearly) empty.
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids


def _training_sample(features: TileFeatures, lists: int, dimensions: int,
                     scale: float) -> np.ndarray:
    """Index-space points of an evenly spaced sample of bound rows.

    Rows are sorted by the first component, so an even spacing over rows is
    a sample stratified along it.
    """
    count = len(features.bound)
    size = min(count, lists * TRAIN_PER_LIST)
    picks = np.unique(np.linspace(0, count - 1, size).astype(np.int64))
    rows = np.empty((len(picks), dimensions + 1), np.float32)
    for start in range(0, len(picks), ASSIGN_CHUNK):
        part = picks[start:start + ASSIGN_CHUNK]
        rows[start:start + len(part)] = _tile_points(features.bound[part], dimensions, scale)
    return rows


def _distinct_rows(sample: np.ndarray) -> np.ndarray:
    """The distinct rows of ``sample``, in their order of first appearance.

    Repeated tiles (copies of a photo, flat black frames) make repeated
    points; a centre started on a repeat of another's point never gets a
    tile (ties go to the first), and a cell whose probes meet only such
    empty lists would have no candidate at all.
    """
    _, first = np.unique(sample, axis=0, return_index=True)
    return sample[np.sort(first)]


def _build_numpy(features: TileFeatures, lists: int, dimensions: int,
                 scale: float) -> _NumpyIndex:
    """Train the k-means on a sample and sort every bound row into its list.

    Lists left empty are dropped, so that every probe scans tiles: the index
    may hold fewer than ``lists`` lists.
    """
    count = len(features.bound)
    sample = _distinct_rows(_training_sample(features, lists, dimensions, scale))
    centroids = _kmeans(sample, min(lists, len(sample)), KMEANS_ITERATIONS)
    assign = np.empty(count, np.int64)
    for start in range(0, count, ASSIGN_CHUNK):
        stop = min(count, start + ASSIGN_CHUNK)
        points = _tile_points(features.bound[start:stop], dimensions, scale)
        assign[start:stop] = _nearest_centres(points, centroids, 1)[:, 0]
    sizes = np.bincount(assign, minlength=len(centroids))
    filled = sizes > 0
    # Renumber the lists that hold tiles 0, 1, ... in their order.
    assign = (np.cumsum(filled) - 1)[assign]
    rows = np.argsort(assign, kind="stable")
    offsets = np.zeros(int(filled.sum()) + 1, np.int64)
    offsets[1:] = np.cumsum(sizes[filled])
    return _NumpyIndex(centroids[filled], rows.astype(np.int64), offsets)


def _build_faiss(faiss: Any, features: TileFeatures, lists: int, dimensions: int,
                 scale: float) -> Any:
    """Train a FAISS ``IndexIVFFlat`` on a sample and add every bound row (id = row).

    No more lists than the sample has distinct points (see :func:`_distinct_rows`).
    """
    width = dimensions + 1
    sample = _distinct_rows(_training_sample(features, lists, dimensions, scale))
    quantizer = faiss.IndexFlatL2(width)
    index = faiss.IndexIVFFlat(quantizer, width, min(lists, len(sample)), faiss.METRIC_L2)
    index.cp.niter = KMEANS_ITERATIONS
    index.cp.max_points_per_centroid = TRAIN_PER_LIST
    # FAISS warns below 39 points per centre; a smaller index just trains on all of them.
    index.cp.min_points_per_centroid = 1
    index.cp.seed = 0
    index.train(sample)
    return _add_every_row(index, features, dimensions, scale)


def _add_every_row(index: Any, features: TileFeatures, dimensions: int, scale: float) -> Any:
    """Add every bound row's index point to the FAISS ``index`` (id = row), a chunk at a time."""
    count = len(features.bound)
    for start in range(0, count, ASSIGN_CHUNK):
        stop = min(count, start + ASSIGN_CHUNK)
        index.add(_tile_points(features.bound[start:stop], dimensions, scale))
    return index


def _distinct_point_rows(points: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Rows of ``points`` to link into the graph: one per distinct point, rising.

    Of rows with the same point, the one whose tile comes first in the
    library (lowest ``order``) is kept: where the copies are the same tile
    (copies of a photo, flat frames, the mirror images of a symmetric
    tile), it is the one the tie rule picks.
    """
    # Each point as one opaque value: sorting those takes a second at a million
    # rows, where np.unique(axis=0) took sixteen.
    keys = np.ascontiguousarray(points).view(np.dtype((np.void, points.shape[1] * 4))).ravel()
    _, group = np.unique(keys, return_inverse=True)
    group = group.ravel()
    first = np.full(group.max() + 1, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, group, order)
    return np.flatnonzero(order == first[group])


def _build_graph(faiss: Any, features: TileFeatures, dimensions: int, scale: float) -> Any:
    """Link the bound rows' distinct index points into a FAISS ``IndexHNSWFlat``.

    Returned inside an ``IndexIDMap`` whose ids are the bound rows. Repeated
    points are linked once (see :func:`_distinct_point_rows`): every copy's
    nearest neighbours are its other copies, at distance 0, so a graph
    linking them all linked each copy only to copies, and a walk that
    reached them never left (5 flat greys of 150 copies among 400 photos:
    40-80% of the cells missed their optimum). Of copies of one tile the
    first is kept, the one the exact search picks.
    """
    count = len(features.bound)
    points = np.empty((count, dimensions + 1), np.float32)
    for start in range(0, count, ASSIGN_CHUNK):
        stop = min(count, start + ASSIGN_CHUNK)
        points[start:stop] = _tile_points(features.bound[start:stop], dimensions, scale)
    rows = _distinct_point_rows(points, np.asarray(features.order))
    graph = faiss.IndexHNSWFlat(dimensions + 1, GRAPH_NEIGHBOURS, faiss.METRIC_L2)
    graph.hnsw.efConstruction = GRAPH_BUILD_DEPTH
    index = faiss.IndexIDMap(graph)
    for start in range(0, len(rows), ASSIGN_CHUNK):
        part = rows[start:start + ASSIGN_CHUNK]
        index.add_with_ids(points[part], part)
    return index


def _graph_of(faiss: Any, index: Any) -> Any | None:
    """The ``IndexHNSWFlat`` inside a graph index (:func:`_build_graph`), or None."""
    inner = getattr(index, "index", None)
    if inner is None:
        return None
    graph = faiss.downcast_index(inner)
    return graph if hasattr(graph, "hnsw") else None


def _graph_ids_fit(faiss: Any, index: Any, count: int) -> bool:
    """Whether the graph ``index`` links 1 to ``count`` points whose ids are rows.

    The ids are stored in the file: a damaged one hands the search tiles that
    do not exist. (A repeated id only costs a candidate; checking for them
    would sort a million ids at every read.)
    """
    ids = faiss.vector_to_array(index.id_map)
    return bool(1 <= len(ids) == index.ntotal <= count and ids.min() >= 0
                and ids.max() < count)


def _cache_key(features: TileFeatures, backend: str, lists: int, dimensions: int,
               structure: str = "lists", generation: int | None = None) -> str:
    """Name of the cached index: the features' identity and the index parameters.

    The identity is the library's ``generation`` (which changes whenever the
    library does; with the tile count, what the features' own cache entry is
    named by), where given, and a digest of the features, which tells apart
    the colour spaces, transforms and geometries of one generation. The
    digest takes in every tile's pixel sums when no generation is given: a
    library changed in one tile whose bound row is not among the few sampled
    (and whose move in the rows' order does not reach them) would otherwise
    read the index built on its old rows. It still cannot see every change
    (a tile swapped for another of the same sums); the generation does.
    """
    count = len(features.bound)
    digest = hashlib.sha1()
    digest.update(np.ascontiguousarray(features.order[:1000]).astype(np.int64).tobytes())
    # A few spread-out bound rows tell apart libraries that share their first tiles.
    spread = np.linspace(0, count - 1, min(count, 256)).astype(np.int64)
    # Rising: the repeats are neighbours (np.unique would import numpy.ma, 5 ms).
    spread = spread[np.diff(spread, prepend=-1) > 0]
    digest.update(np.ascontiguousarray(features.bound[spread]).tobytes())
    digest.update(np.ascontiguousarray(features.basis[:4]).tobytes())
    if generation is None:
        # In memory, and 32 bytes a tile: a million tiles take ~30 ms (the bound rows are
        # mapped from the disk, and all of them would be read for their digest); with a
        # generation, which names every change of the library, the time is saved.
        digest.update(np.ascontiguousarray(features.norm2, np.int64).tobytes())
        digest.update(np.ascontiguousarray(features.channel_sums, np.int64).tobytes())
    library = "" if generation is None else f"g{generation}-"
    if structure == "graph":
        return (f"hnsw-v{GRAPH_INDEX_VERSION}-{library}{backend}-n{count}-m{GRAPH_NEIGHBOURS}-"
                f"e{GRAPH_BUILD_DEPTH}-p{dimensions}-{digest.hexdigest()[:16]}")
    return (
        f"ivf-v{INDEX_VERSION}-{library}{backend}-n{count}-l{lists}-p{dimensions}-"
        f"t{TRAIN_PER_LIST}-i{KMEANS_ITERATIONS}-{digest.hexdigest()[:16]}"
    )


def _index_path(features: TileFeatures, faiss: Any | None, lists: int, dimensions: int,
                cache_dir: Path | None, structure: str,
                generation: int | None = None) -> Path | None:
    """Where the index is cached (None without a cache folder)."""
    if cache_dir is None:
        return None
    backend = "faiss" if faiss is not None else "numpy"
    key = _cache_key(features, backend, lists, dimensions, structure, generation)
    return Path(cache_dir) / (key + (".faiss" if faiss is not None else ".npz"))


def _read_index(path: Path, features: TileFeatures, faiss: Any | None, lists: int,
                graph: bool, dimensions: int) -> Any | None:
    """The index (FAISS or :class:`_NumpyIndex`) cached at ``path``, or None where it is
    missing, damaged or another's (then :func:`_build_and_store` makes it).

    Another's is told by its shape: its tile count, structure, lists and
    point width (an index of other ``dimensions`` fails the search, not the
    read), and for the NumPy lists, rows that are the library's.
    """
    if not path.is_file():
        return None
    try:
        if faiss is not None:
            # A graph's vectors and links are mapped from the file, not copied into
            # memory (a million tiles' graph: 0.03 s instead of 0.25-0.8 s, the same
            # picks); the cache replaces files by renaming, so a mapped one never
            # changes under it. FAISS before 1.10 has no such flag and reads it.
            flags = getattr(faiss, "IO_FLAG_MMAP_IFC", 0) if graph else 0
            try:
                index = faiss.read_index(str(path), flags)
            except RuntimeError:
                if not flags:
                    raise
                # A file system that cannot map it (or a FAISS that will not) must not
                # cost a rebuild at every run: read it whole before calling it damaged.
                index = faiss.read_index(str(path))
            count = len(features.bound)
            if index.d == dimensions + 1 and (
                    _graph_of(faiss, index) is not None
                    and _graph_ids_fit(faiss, index, count) if graph
                    else index.ntotal == count and 1 <= getattr(index, "nlist", 0) <= lists
                    and _ivf_ids_fit(faiss, index, count)):
                mark_used(path)
                return index
        else:
            with np.load(path, allow_pickle=False) as stored:
                loaded = _NumpyIndex(stored["centroids"], stored["rows"], stored["offsets"])
            if _numpy_index_fits(loaded, len(features.bound), dimensions):
                mark_used(path)
                return loaded
    except (*STORED_ARRAY_ERRORS, RuntimeError, MemoryError):
        # A damaged entry (a truncated archive too, or a size field made huge: FAISS
        # fails to allocate it; an array header NumPy's tokenizer fails on, parsed
        # before the archive's checksum is checked) is rebuilt.
        pass
    return None


def _ivf_ids_fit(faiss: Any, index: Any, count: int) -> bool:
    """Whether the ids in the lists of the FAISS inverted file ``index`` are ``0..count-1``.

    The ids are stored in the file: a damaged one hands the search tiles that
    do not exist (a graph's ids are its points' places, always in range).
    """
    lists = index.invlists
    sizes = np.array([lists.list_size(j) for j in range(index.nlist)], np.int64)
    if sizes.sum() != count:
        return False
    ids = np.empty(count, np.int64)
    at = 0
    for j in np.flatnonzero(sizes):
        size = int(sizes[j])
        ids[at:at + size] = faiss.rev_swig_ptr(lists.get_ids(int(j)), size)
        at += size
    if count and (ids.min() < 0 or ids.max() >= count):
        return False
    return bool((np.bincount(ids, minlength=count) == 1).all())


def _numpy_index_fits(index: _NumpyIndex, count: int, dimensions: int) -> bool:
    """Whether ``index`` is a NumPy inverted file of ``count`` rows in ``dimensions + 1``."""
    centroids, rows, offsets = index.centroids, index.rows, index.offsets
    lists = len(offsets) - 1
    return bool(
        centroids.ndim == 2 and centroids.shape == (lists, dimensions + 1) and lists >= 1
        and rows.shape == (count,) and rows.dtype.kind in "iu"
        and offsets.ndim == 1 and offsets.dtype.kind in "iu"
        and offsets[0] == 0 and offsets[-1] == count and (np.diff(offsets) >= 0).all()
        and (count == 0 or (0 <= rows.min() and rows.max() < count))
    )


def _build_and_store(features: TileFeatures, faiss: Any | None, lists: int, dimensions: int,
                     scale: float, path: Path | None, structure: str,
                     generation: int | None = None, show_progress: bool = False) -> Any:
    """Build the index and cache it at ``path`` (when given).

    Once it is written, the indexes of generations before ``generation`` (when
    given) are removed from its folder: they are never read again, and each
    is as large as the library's bound rows. While another process builds
    the same entry, this one waits for it and reads its index instead
    (:func:`~mosaicist.paths.build_lock`); ``show_progress`` says so on stderr.
    """
    if path is None:
        return _build(features, faiss, lists, dimensions, scale, structure)
    with contextlib.suppress(OSError):
        # The lock file lies beside the entry: a folder made here can take it.
        path.parent.mkdir(parents=True, exist_ok=True)
    note = (f"mosaicist: waiting for another process building this index ({path})"
            if show_progress else None)
    # 40-70 s at a million tiles, on cores that the other build would share.
    with build_lock(path, note=note):
        index = _read_index(path, features, faiss, lists, structure == "graph", dimensions)
        if index is not None:
            return index
        index = _build(features, faiss, lists, dimensions, scale, structure)
        # A read-only or full cache only costs the rebuild next time; so does a pipe or
        # a device under the entry's name (refused by atomic_path as an "output").
        with contextlib.suppress(OSError, RuntimeError, MosaicistError):
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as partial:
                if faiss is not None:
                    faiss.write_index(index, str(partial))
                else:
                    with open(partial, "wb") as handle:
                        np.savez(handle, centroids=index.centroids, rows=index.rows,
                                 offsets=index.offsets)
            if generation is not None:
                remove_older_generations(path.parent, _INDEX_FILE, generation)
                with os.scandir(path.parent) as entries:
                    retired = [entry.path for entry in entries
                               if _RETIRED_INDEX_FILE.fullmatch(entry.name)]
                for old in retired:
                    with contextlib.suppress(OSError):
                        os.unlink(old)
    return index


def _build(features: TileFeatures, faiss: Any | None, lists: int, dimensions: int,
           scale: float, structure: str) -> Any:
    """Build the index (a FAISS graph or inverted file, or a :class:`_NumpyIndex`)."""
    if structure == "graph":
        return _build_graph(faiss, features, dimensions, scale)
    if faiss is not None:
        return _build_faiss(faiss, features, lists, dimensions, scale)
    return _build_numpy(features, lists, dimensions, scale)


def _group_by_list(lists: np.ndarray, list_count: int) -> tuple[np.ndarray, np.ndarray]:
    """Order of ``lists`` grouped by value, and where each value's group starts."""
    order = np.argsort(lists, kind="stable")
    starts = np.searchsorted(lists[order], np.arange(list_count + 1))
    return order, starts


def _scan_numpy(index: _NumpyIndex, points: np.ndarray, listed: np.ndarray,
                listed_norm2: np.ndarray, nprobe: int, candidates: int) -> np.ndarray:
    """Each cell's ``candidates`` nearest rows (``-1`` where fewer) within its probed lists.

    ``listed`` holds ``-2 x`` for the index points in list order and
    ``listed_norm2`` their ``|x|^2``. Loops run over lists, never cells: one
    GEMM per list over the cells that probe it. The nearest list of every
    cell is scanned first and fully ranked; its ``candidates``-th distance
    then bounds what can still enter the cell's result, so the other lists
    need only a comparison (a partial sort of every list costs several
    times more), and the few survivors are ranked once at the end.
    """
    count = len(points)
    list_count = len(index.offsets) - 1
    probes = _nearest_centres(points, index.centroids, nprobe)
    near_distance = np.full((count, candidates), np.inf, np.float32)
    near_rows = np.full((count, candidates), -1, np.int64)
    order, starts = _group_by_list(probes[:, 0], list_count)
    for current in np.flatnonzero(np.diff(starts)):
        low, high = index.offsets[current], index.offsets[current + 1]
        if high == low:
            continue
        cells = order[starts[current]:starts[current + 1]]
        # The cell's own |x|^2 is the same in every list, so it is left out:
        # it does not change which tiles are nearest.
        distance = points[cells] @ listed[low:high].T
        distance += listed_norm2[low:high]
        keep = min(candidates, high - low)
        if keep < high - low:
            near = _nearest_columns(distance, keep)
            distance = np.take_along_axis(distance, near, axis=1)
        else:
            near = np.broadcast_to(np.arange(keep), distance.shape)
        near_distance[cells, :keep] = distance
        near_rows[cells, :keep] = index.rows[low + near]
    limit = near_distance.max(axis=1)
    found_cells, found_rows, found_distance = [np.arange(count).repeat(candidates)], \
        [near_rows.ravel()], [near_distance.ravel()]
    if nprobe > 1:
        pairs, starts = _group_by_list(probes[:, 1:].ravel(), list_count)
        for current in np.flatnonzero(np.diff(starts)):
            low, high = index.offsets[current], index.offsets[current + 1]
            if high == low:
                continue
            cells = pairs[starts[current]:starts[current + 1]] // (nprobe - 1)
            distance = points[cells] @ listed[low:high].T
            distance += listed_norm2[low:high]
            hits = np.flatnonzero(distance < limit[cells, None])
            if len(hits) == 0:
                continue
            row, column = np.divmod(hits, high - low)
            found_cells.append(cells[row])
            found_rows.append(index.rows[low + column])
            found_distance.append(distance.ravel()[hits])
    all_cells = np.concatenate(found_cells)
    all_rows = np.concatenate(found_rows)
    all_distance = np.concatenate(found_distance)
    # Ties to the lowest row: of copies of a tile (one point, rows in library order) the
    # first, as the exact search picks it.
    ranked = np.lexsort((all_rows, all_distance, all_cells))
    all_cells, all_rows = all_cells[ranked], all_rows[ranked]
    # Position of each survivor within its cell's run of the sorted order.
    first = np.searchsorted(all_cells, np.arange(count))
    rank = np.arange(len(all_cells)) - first[all_cells]
    take = rank < candidates
    out = np.full((count, candidates), -1, np.int64)
    out[all_cells[take], rank[take]] = all_rows[take]
    return out


def _nearest_columns(distance: np.ndarray, keep: int) -> np.ndarray:
    """Columns of each row's ``keep`` smallest values, ties to the lowest columns.

    ``argpartition`` takes any of the columns tied at the ``keep``-th value:
    of a list holding more copies of a photo than ``keep`` (one index
    point, their rows in library order), it could leave out the first, and
    the cell got a later copy than the exact search gives.
    """
    kth = np.partition(distance, keep - 1, axis=1)[:, keep - 1:keep]
    below = distance < kth
    # Of the ties, as many as there is room for after the values below, leftmost first.
    tied = distance == kth
    room = keep - below.sum(axis=1, keepdims=True)
    chosen = below | (tied & (np.cumsum(tied, axis=1) <= room))
    return np.flatnonzero(chosen).reshape(len(distance), keep) % distance.shape[1]


def _brightness_order(cell_vectors: np.ndarray) -> np.ndarray:
    """Cells in order of their summed pixel values (stable), read a chunk at a time."""
    count = len(cell_vectors)
    brightness = np.empty(count, np.int64)
    for start in range(0, count, CELL_CHUNK):
        block = cell_vectors[start:start + CELL_CHUNK]
        brightness[start:start + len(block)] = block.reshape(len(block), -1).sum(
            axis=1, dtype=np.int64)
    return np.argsort(brightness, kind="stable")


def _candidate_bounds(bound: np.ndarray, found: np.ndarray, cell_rows: np.ndarray) -> np.ndarray:
    """Full bounds (all components, float32 like match_exact's) of each cell's candidates.

    ``found`` holds bound rows, ``-1`` for none (bound ``inf``). One
    candidate column at a time, so the gathered rows stay a few megabytes.
    """
    out = np.empty(found.shape, np.float32)
    for column in range(found.shape[1]):
        rows = found[:, column]
        out[:, column] = np.einsum("ij,ij->i", bound[np.maximum(rows, 0)], cell_rows)
    out[found < 0] = np.inf
    return out


def _rerank(
    block: np.ndarray, cell_rows: np.ndarray, cell_norm2: np.ndarray, found: np.ndarray,
    features: TileFeatures, pooled: np.ndarray, geometry: Geometry,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The exact optimum among each cell's candidates (``found``: bound rows, ``-1`` for none).

    Returns the distances, the tiles, and the counts of exact evaluations
    and of candidate bounds. The ``EXACT_FIRST`` candidates of lowest bound
    are evaluated, then every other whose bound does not exceed the best
    distance so far (it could win, or tie at a lower position).
    """
    count = len(block)
    best_distance = np.full(count, np.iinfo(np.int64).max, np.int64)
    best_tile = np.full(count, np.iinfo(np.int64).max, np.int64)
    cell_flat = cells_for_dots(block, geometry.weight)
    cells = np.arange(count)

    def evaluate(take: np.ndarray, rows: np.ndarray) -> int:
        at = np.broadcast_to(cells[:, None], take.shape)[take]
        tiles = features.order[rows[take]]
        distances = exact_distances(cell_flat, cell_norm2, pooled, features.norm2,
                                    geometry.weight, at, tiles)
        _improve(best_distance, best_tile, at, tiles, distances)
        return len(at)

    bounds = _candidate_bounds(features.bound, found, cell_rows)
    rank = np.argsort(bounds, axis=1, kind="stable")
    found = np.take_along_axis(found, rank, axis=1)
    bounds = np.take_along_axis(bounds, rank, axis=1)
    present = found >= 0
    first = min(EXACT_FIRST, found.shape[1])
    evaluated = evaluate(present[:, :first], found[:, :first])
    threshold = np.nextafter(best_distance.astype(np.float32), np.float32(np.inf))
    rest = present[:, first:] & (bounds[:, first:] <= threshold[:, None])
    if rest.any():
        evaluated += evaluate(rest, found[:, first:])
    return best_distance, best_tile, evaluated, int(present.sum())


def match_approximate(
    cell_vectors: np.ndarray,
    tiles: np.ndarray,
    geometry: Geometry,
    features: TileFeatures | None = None,
    show_progress: bool = False,
    candidates: int | None = None,
    *,
    cache_dir: Path | None = None,
    nprobe: int | None = None,
    nlist: int | None = None,
    dimensions: int | None = None,
    use_faiss: bool | None = None,
    structure: str | None = None,
    generation: int | None = None,
) -> MatchResult:
    """Find a near-best tile for every cell with a graph or an inverted-file index.

    Each cell's candidates come from the index; they are then re-ranked with
    the exact integer objective, so every returned distance is the true
    objective of the returned tile, and the tile is the exact optimum
    whenever it was among the candidates (ties to the lowest position). A
    cell the index gives no candidate at all (its probed lists all empty) is
    searched exactly.

    Parameters
    ----------
    cell_vectors : numpy.ndarray
        ``(N, h, w, 3)`` uint8 from :meth:`Geometry.cell_vectors` (``Geometry.shape``).
    tiles : numpy.ndarray
        ``(M, match_height, match_px, 3)`` uint8 in library order (may be memory-mapped).
    geometry : Geometry
        How cells and tiles are compared.
    features : TileFeatures, optional
        Precomputed (e.g. cached) features of ``tiles``; computed when omitted.
    show_progress : bool
        Draw a progress bar.
    candidates : int, optional
        Candidates per cell taken from the index and re-ranked (default
        ``GRAPH_CANDIDATES`` from the graph, ``DEFAULT_CANDIDATES`` from the
        lists). From the lists, more candidates cost little; the lists
        probed matter more.
    cache_dir : pathlib.Path, optional
        Folder for the trained index (e.g. the library's features folder);
        without it the index is built in memory each call.
    nprobe : int, optional
        Lists scanned per cell (default ``DEFAULT_NPROBE``): the main
        speed/accuracy knob of the lists.
    nlist : int, optional
        Lists of the inverted file (default ``LISTS_PER_ROOT * sqrt(M)``,
        at least 1, at most ``M / 8``; fewer where the k-means sample has
        fewer distinct points, and, without FAISS, where lists are left empty).
    dimensions : int, optional
        Principal components of the index space (default ``INDEX_DIMENSIONS``).
    use_faiss : bool, optional
        Force (True) or forbid (False) FAISS; by default it is used when importable.
    structure : {"graph", "lists"}, optional
        The index (see the module's notes): by default ``"graph"`` where
        FAISS is used and neither ``nprobe`` nor ``nlist`` is given (those
        apply to the lists only), else ``"lists"``; ``"graph"`` needs FAISS.
    generation : int, optional
        The library's generation (:attr:`TileLibrary.generation`): it names
        the cached index, and writing one removes those of earlier
        generations from ``cache_dir``. Without it, the index is known by a
        digest of ``features`` alone, which a library changed in a tile
        whose sums stayed the same would share.

    Returns
    -------
    MatchResult
        ``evaluated`` counts exact evaluations, ``bounded`` candidate bounds.

    Raises
    ------
    ValueError
        No tiles, an unknown ``structure``, or a ``candidates``, ``nprobe``, ``nlist`` or
        ``dimensions`` that is not a whole number of at least 1 (larger than
        the tiles, lists or components there are, one is clamped to them).
    OptionError
        Naming the argument: cells or tiles of another type or shape than
        ``geometry`` compares, or ``features`` of other tiles or another
        geometry (as :func:`~mosaicist.match.match_exact`).
    ImportError
        FAISS asked for (``use_faiss=True`` or the graph) and not installed.

    Notes
    -----
    Measured on the 2-core, 24 GB development machine (shared with other
    jobs), 32,400 cells (a 3840x2160 target, 16 px cells, 32 px tiles),
    CIFAR-derived libraries (``benchmarks/bench_million.py``), FAISS,
    ``candidates=32``, ``p=32``: share of cells with the exact optimum and
    total objective above exact (the 200,000-tile rows on 2,000 of the cells):

    ==========  =====  ======  ============  ===========  ==========
    tiles       nlist  nprobe  tiles/cell    exact cells  objective
    ==========  =====  ======  ============  ===========  ==========
    200,000     1789   24      2,700         99.65%       +0.030%
    200,000     1789   32      3,600         99.75%       +0.013%
    1,000,000   1000   16      16,000        99.53%       +0.045%
    1,000,000   4000   24      6,000         99.33%       +0.065%
    1,000,000   4000   32      8,000         99.62%       +0.037%
    1,000,000   4000   40      10,000        99.71%       +0.030%
    1,000,000   8000   40      5,000         99.50%       +0.049%
    1,000,000   8000   48      6,000         99.62%       +0.034%
    ==========  =====  ======  ============  ===========  ==========

    Search time grows with the tiles scanned per cell (``nprobe * M /
    nlist``) plus the probe of the ``nlist`` centres: the defaults (4,000
    lists, 32 probes at a million tiles) reach the share of exact picks of
    1,000 lists and 16 probes while scanning half the tiles; 8,000 lists
    scan less again but take several times longer to train (k-means on
    ``TRAIN_PER_LIST * nlist`` points, then every tile assigned to its
    list: a few seconds at 4,000 lists with FAISS, paid once, as the index
    is cached). About 4 exact evaluations are made per cell.

    The graph, on the same million tiles and 32,400 cells (FAISS, 2 threads;
    "recall" is the share of cells whose nearest, second and fourth nearest
    index points, by brute force, are among the 32 candidates):

    ==============================  ======  ==========================  =====
    index                           search  recall (1st, 2nd, 4th)      build
    ==============================  ======  ==========================  =====
    lists, 4,000, 32 probes         2.9 s   99.60%, 99.85%, 99.56%      ~20 s
    graph, M 16, depth 40 / 96      1.1 s   99.65%, 99.56%, 99.60%      36 s
    graph, M 32, depth 20 / 64      1.2 s   99.56%, 99.51%, 99.60%      31 s
    graph, M 32, depth 40 / 64      1.4 s   99.75%, 99.90%, 99.75%      58 s
    graph, M 32, depth 40 / 128     2.6 s   99.95%, 99.95%, 99.95%      58 s
    ==============================  ======  ==========================  =====

    (depth: while building / while searching.) In
    ``benchmarks/bench_million.py`` (a fresh process per ``make``, the
    index cached), against the lists' 6.6-6.8 s of match phase, 99.62%
    exact cells and +0.037% objective:

    ===========================  ============  ===========  =========  ==========
    graph                        match phase   exact cells  objective  first run
    ===========================  ============  ===========  =========  ==========
    M 32, depth 40 / 64          4.4 s         99.46%       +0.044%    62.6 s
    M 16, depth 40 / 96          3.0 s         99.18%       +0.091%    45.5 s
    M 16, depth 40 / 128         4.1 s         99.41%       +0.066%    46.6 s
    ===========================  ============  ===========  =========  ==========

    16 neighbours are about as exact as 32, built in 36 s instead of 58 s
    (the first run builds it; the lists train in about 20 s), with a
    smaller file. The exact make's match phase took 27.8-34.0 s in those
    runs (the machine's noise). Then the cells were walked from dark to
    bright (alike cells one after another: about 10% less search) and
    Numba was no longer imported to decide that the re-rank does not need
    it (0.4 s), and with depth 96 the match phase took 2.9 s against the
    exact make's 32.4 s (11.0x), 99.18% of the cells at their optimum,
    +0.091% objective; at depth 128, 3.6 s against 31.7 s (8.8x), 99.41%
    and +0.066%. Depth 96 is the default: the goal (10x, 99%, 0.5%) is met
    on this target, the busiest measured; on a bear photo at 43,200 cells
    and on a grey photo it gave 99.94% and 99.99% of the cells at their
    optimum (+0.056%, +0.003%). More candidates at the same depth barely
    help (48: 99.22%): the walk's depth decides what is found.

    A graph linked with more care is walked faster for the same picks
    (session 18, Starry Night as above; FAISS's search alone, 2 threads,
    then the share of exact cells and the objective over exact, with 32
    candidates):

    ==================  ==========================  ==========================
    linked at depth     walked at depth 64          walked at depth 96
    ==================  ==========================  ==========================
    40 (built 26 s)     0.58 s, 98.64%, +0.144%     0.90 s, 99.18%, +0.091%
    64 (built 40 s)     0.58 s, 99.13%, +0.084%     0.86 s, 99.48%, +0.055%
    100 (built 69 s)    0.65 s, 99.30%, +0.068%     0.99 s, 99.58%, +0.043%
    ==================  ==========================  ==========================

    Then the re-rank, not the walk, was half the match phase: every
    candidate's full bound is a gather of its bound row, and it ran beside
    the walk of the next chunk on the same two cores. From the graph
    linked at depth 100 and walked at 64, candidates 32 / 24 / 16 gave
    99.30% / 99.27% / 99.19% exact cells on Starry Night (+0.068% /
    +0.070% / +0.075%), 99.96% / 99.95% / 99.94% on the camera-trap bear
    (43,200 cells), 99.94% / 99.94% / 99.93% on a forest fire (43,200) and
    99.99% on the grey camera man (57,600), with the match 0.3-0.4 s
    shorter at 16 than at 32: depth 100, 64 and 16 candidates were the
    graph's defaults.

    Session 28 linked it with more care again (Starry Night's 32,400 cells,
    16 candidates, the whole match in one process, best of two; the walks
    on one core each, two side by side):

    ==================  ================  ================  ================
    linked at depth     walked at 64      walked at 56      walked at 48
    ==================  ================  ================  ================
    100 (built 42 s)    0.59 s, 99.19%    0.55 s, 99.05%    0.50 s, 98.98%
    200 (built 83 s)    0.60 s, 99.32%    0.54 s, 99.24%    0.49 s, 99.12%
    300 (built 128 s)                     0.60 s, 99.28%    0.53 s, 99.17%
    ==================  ================  ================  ================

    (at 52: 0.56 s and 99.24% linked at 300; the last column at 100 was
    walked at 52.) Linked at 200 and walked at 52, the picks are as exact
    as before for about 0.08 s less a make, the graph built once in twice
    the time: ``bench_million.py`` 99.19% exact cells, +0.072% (before:
    99.19%, +0.075%), the match phase 25.7x faster than exact; the
    camera-trap bear and the Alaska fire at 38,590 cells 99.93% and 99.92%
    (+0.052%, +0.022%).

    The walks then ran on both cores a chunk at a time (OpenMP), waiting at
    each chunk's end for the slower core, with one core idle through the
    re-rank. Chunks of 1,024 cells, one per thread, each walking on one core,
    took the search and re-rank loop from 0.61-0.63 s to 0.52-0.53 s on the
    same cells (the picks the same), and the make's match phase, with the
    features mapped rather than read, from 1.16 s to 0.77 s.
    """
    # A bad setting is reported before any work.
    if structure is not None and structure not in STRUCTURES:
        raise ValueError(f"structure must be {alternatives(STRUCTURES)}, not {structure!r}")
    for name, value in (("candidates", candidates), ("nprobe", nprobe), ("nlist", nlist),
                        ("dimensions", dimensions)):
        # 0 once meant the default and a negative count 1, silently; a float failed deep
        # in FAISS or NumPy. Counts above what the library holds are clamped.
        if value is not None and (isinstance(value, bool) or not isinstance(value, Integral)
                                  or value < 1):
            raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")
    cell_vectors, tiles = checked_search(cell_vectors, tiles, geometry, features)
    count = len(cell_vectors)
    tile_count = len(tiles)
    if tile_count == 0:
        raise ValueError("no tiles to match against")
    if features is None:
        features = compute_features(tiles, geometry)
    if count == 0:
        return MatchResult(np.zeros(0, np.int64), np.zeros(0, np.int64))
    faiss = _load_faiss() if use_faiss is not False else None
    if (use_faiss or structure == "graph") and faiss is None:
        raise ImportError("faiss is not installed (pip install faiss-cpu)")
    if structure is None:
        # The lists' own settings ask for the lists.
        lists_asked = nprobe is not None or nlist is not None
        structure = "graph" if faiss is not None and not lists_asked else "lists"
    total_dimensions = len(features.basis)
    dimensions = max(1, min(int(dimensions or INDEX_DIMENSIONS), total_dimensions))
    default = GRAPH_CANDIDATES if structure == "graph" else DEFAULT_CANDIDATES
    candidates = max(1, min(int(candidates or default), tile_count))
    if nlist is None:
        nlist = int(round(LISTS_PER_ROOT * np.sqrt(tile_count)))
    nlist = int(nlist)
    # Lists of a handful of tiles only add overhead (and FAISS needs a point per list).
    lists = max(1, min(nlist, tile_count // 8 or 1))
    nprobe = max(1, min(int(nprobe or DEFAULT_NPROBE), lists))
    scale = bound_scale(geometry)

    def find() -> tuple[Path | None, Any | None]:
        path = _index_path(features, faiss, lists, dimensions, cache_dir, structure, generation)
        return path, None if path is None else _read_index(path, features, faiss, lists,
                                                            structure == "graph", dimensions)

    with ThreadPoolExecutor(1, thread_name_prefix="mosaicist-index") as pool:
        # Naming the cached index (a digest of sampled bound rows, 0.03 s at a million
        # tiles) and reading it let go of the interpreter: the cells' bound rows are
        # made meanwhile (a graph is mapped from its file, 0.03 s at a million tiles;
        # the inverted lists are read). Only the reading: a build (a damaged or missing
        # entry) stays in this thread, where an interrupt stops it.
        finding = pool.submit(find)
        cell_rows, cell_norm2, _ = cell_bound_rows(cell_vectors, geometry, features)
        cached, index = finding.result()
    if index is None:
        index = _build_and_store(features, faiss, lists, dimensions, scale, cached, structure,
                                 generation, show_progress)
    if structure == "graph":
        # Set on every use: the cached graph keeps the depth it was built with.
        graph = _graph_of(faiss, index)
        assert graph is not None  # built so, or checked so when read
        graph.hnsw.efSearch = max(GRAPH_SEARCH_DEPTH, candidates)
    elif faiss is None:
        # Lists left empty by the k-means are not kept: the index may have fewer.
        nprobe = min(nprobe, len(index.centroids))
        # Index points in list order (a contiguous block per list), premultiplied
        # by -2 so that each list's distances are one GEMM and one addition.
        listed = np.empty((tile_count, dimensions + 1), np.float32)
        for low in range(0, tile_count, ASSIGN_CHUNK):
            part = index.rows[low:low + ASSIGN_CHUNK]
            listed[low:low + len(part)] = _tile_points(features.bound[part], dimensions, scale)
        listed_norm2 = np.einsum("ij,ij->i", listed, listed)
        listed *= -2.0
    else:
        index.nprobe = min(nprobe, index.nlist)

    pooled = features.pooled if features.pooled is not None else tiles.reshape(tile_count, -1)
    best_distance = np.empty(count, np.int64)
    best_tile = np.empty(count, np.int64)
    evaluated = bounded = 0
    # Chunks go to threads, each walking on one core: side by side they beat one
    # walk on all cores (which waits at each chunk's end for its slowest core, then
    # leaves them idle through the re-rank), and the re-ranks run beside the walks.
    workers = worker_count(most=16) if count > CELL_CHUNK else 1

    def search(where: slice | np.ndarray) -> tuple[slice | np.ndarray, tuple]:
        block = cell_vectors[where]
        rows_here, norm2_here = cell_rows[where], cell_norm2[where]
        points = _cell_points(rows_here, dimensions, scale)
        if faiss is not None:
            if workers > 1:
                # OpenMP's thread count is each thread's own: the caller's is unchanged.
                faiss.omp_set_num_threads(1)
            _, found = index.search(points, candidates)
            found = found.astype(np.int64)
            # What no tile is (FAISS pads with -1) stays out of the re-rank.
            found[(found < 0) | (found >= tile_count)] = -1
        else:
            found = _scan_numpy(index, points, listed, listed_norm2, nprobe, candidates)
        return where, _rerank(block, rows_here, norm2_here, found, features, pooled, geometry)

    def record(results: Iterable[tuple[slice | np.ndarray, tuple]]) -> None:
        nonlocal evaluated, bounded
        for where, reranked in results:
            best_distance[where], best_tile[where] = reranked[:2]
            evaluated += reranked[2]
            bounded += reranked[3]
            bar.update(len(reranked[0]))

    # Cells walk the graph from dark to bright: alike cells one after another
    # reach the same tiles and links while they are in the processor's cache
    # (the walks are otherwise independent, so the picks are the same).
    order = _brightness_order(cell_vectors) if structure == "graph" else None
    # The lists' many small products gain nothing from BLAS's threads (set once
    # for all the threads: the setting is the process's).
    with (one_blas_thread(), OrderedJobs(workers, name="mosaicist-match") as jobs,
          progress_bar(count, "matching", unit="cell", enabled=show_progress) as bar):
        for start in range(0, count, CELL_CHUNK):
            stop = min(count, start + CELL_CHUNK)
            record(jobs.submit(search, slice(start, stop) if order is None
                               else order[start:stop]))
        record(jobs.drain())
    # A cell whose search found no tile at all (every list it probed empty, or a
    # walk that returned nothing) is searched exactly: every cell gets a tile.
    lost = np.flatnonzero(best_tile == np.iinfo(np.int64).max)
    if len(lost):
        rescued = match_exact(cell_vectors[lost], tiles, geometry, features)
        best_tile[lost], best_distance[lost] = rescued.tile, rescued.distance
        evaluated += rescued.evaluated
    return MatchResult(best_tile, best_distance, evaluated, bounded)


class ApproximateMatcher(Matcher):
    """Inverted-file search, re-ranked exactly, for large libraries (:func:`match_approximate`)."""

    name = "approximate"
    search = "approximate"

    def unsupported(self, options: MosaicOptions) -> OptionError | None:
        if options.tint or options.contrast or options.tint_max:
            return OptionError(APPROXIMATE_UNCORRECTED, value=self.search)
        return None

    def prepare(self, options: MosaicOptions) -> None:
        # 0.03 s of imports, while the main thread would otherwise wait for the target.
        _load_faiss()

    def match(self, request: MatchRequest) -> MatchResult:
        return match_approximate(request.cell_vectors, request.candidates, request.geometry,
                                 request.features, request.show_progress,
                                 cache_dir=request.library.features_dir,
                                 generation=request.library.generation)
