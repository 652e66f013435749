"""Rendering on a cluster: rows of cells drawn by the workers, written here in order.

Drawing a large mosaic is mostly making its tile pictures: reading the
index, or decoding and resizing each original photo, then the transforms,
contrast and tint. The workers do that, a group of rows of cells per task,
each reading the index or the originals itself (the library and the cache
at the same paths on every machine); this process writes the bands, in
order, with the same writer as on one machine. The writer gets the very
bands :meth:`MosaicRenderer.bands <mosaicist.render.MosaicRenderer.bands>`
would give, one row of cells each, so every output (an image, a TIFF, a
Deep Zoom pyramid) is the same, byte for byte.

A few tasks run ahead of the writer (a bounded window), so memory here
stays bounded whatever the picture's size. Renderers of other kinds of
tile pictures, and adaptive cells, are drawn here as before.
"""

from __future__ import annotations

import contextlib
import functools
import mmap
import os
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..library._shards import ShardedTiles
from ..options import MosaicOptions
from ..paths import cache_dir as default_cache_dir
from ..placements import Placements
from ..render import IndexPictures, MosaicRenderer, OriginalPictures, Picture, write_output
from ..sources import TileSource, open_source
from ._cluster import not_shared, require_workers, task_result, worker_spec

if TYPE_CHECKING:
    from distributed import Client

#: Bytes of picture one task draws, at most (at least one row of cells).
TASK_BYTES = 48 << 20
#: A task's picture is at most this fraction of its worker's memory limit: drawing it
#: takes several times its bytes (the photos decoded and resized, the rows, the result
#: sent back), over the worker's own hundred-odd megabytes.
TASK_MEMORY_SHARE = 1 / 16
#: Tasks per worker drawn ahead of the writer.
AHEAD_PER_WORKER = 2


@dataclass(frozen=True)
class TileFiles:
    """The index's tiles as files and runs, opened by the worker that draws them.

    Sent instead of the :class:`~mosaicist.library._shards.ShardedTiles`
    itself: that maps its files as it is unpickled, and a task argument that
    fails to unpickle ends the worker process (Dask reads it off the
    scheduler's stream), so that a worker without the cache died, and the
    run then waited for ever for a worker, or blamed the task's memory.

    Attributes
    ----------
    arguments : tuple
        ``ShardedTiles``'s own arguments: its runs, the files' tile shape and
        the shape it shows.
    """

    arguments: tuple[Any, ...]

    @classmethod
    def of(cls, tiles: ShardedTiles) -> TileFiles:
        """The files and runs of ``tiles``."""
        _, arguments = tiles.__reduce__()
        return cls(tuple(arguments))

    def open(self) -> ShardedTiles:
        """Map the files here.

        Raises
        ------
        MosaicistError
            When a file is not on this worker.
        """
        runs = self.arguments[0]
        for path in dict.fromkeys(path for path, _, _ in runs):
            if not os.path.isfile(path):
                raise not_shared(path, "the index")
        return ShardedTiles(*self.arguments)


@dataclass(frozen=True)
class BandJob:
    """How a worker makes the tile pictures of a render: by reference, never pixels.

    Attributes
    ----------
    kind : str
        ``index`` (the library's packed tiles) or ``originals`` (the photos).
    tiles : TileFiles or None
        The index's tiles, as files and runs (``index``).
    spec, cache : str
        The tile source's spec and the cache (``originals``).
    tile_px : int
        Output width of a tile.
    aspect : (int, int)
        The tiles' aspect.
    crop : str
        How a window not stored is placed.
    metric : str
        Colour space of the tints.
    options : MosaicOptions
        The placements' settings (for their checks).
    cols : int
        Cells across.
    as_indexed : bool
        Whether the photos are cut as the index cuts them (``originals``; see
        :class:`~mosaicist.render.OriginalPictures`), as where the client draws.
    colour_profiles : str
        Whether the photos' embedded ICC profiles are applied (``originals``), as
        the index's tiles were decoded and the client draws them.
    """

    kind: str
    tiles: TileFiles | None
    spec: str
    cache: str
    tile_px: int
    aspect: tuple[int, int]
    crop: str
    metric: str
    options: MosaicOptions
    cols: int
    as_indexed: bool = False
    colour_profiles: str = "ignore"


def write_on_cluster(
    client: Client,
    renderer: MosaicRenderer,
    path: str | os.PathLike[str],
    options: MosaicOptions | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    show_progress: bool = False,
    rows_per_task: int | None = None,
) -> bool:
    """Write ``renderer``'s picture to ``path``, its rows of cells drawn by the workers.

    The same file as :meth:`MosaicRenderer.write <mosaicist.render.MosaicRenderer.write>`.

    Parameters
    ----------
    client : distributed.Client
        The cluster.
    renderer : MosaicRenderer
        What to draw.
    path : path-like
        The output; its suffix picks the format.
    options : MosaicOptions, optional
        Output settings (quality, Deep Zoom).
    cache_dir : path-like, optional
        The cache, where the workers open the tile source.
    show_progress : bool
        Draw a progress bar.
    rows_per_task : int, optional
        Rows of cells per task (default: about :data:`TASK_BYTES` of picture).

    Returns
    -------
    bool
        Whether the workers drew it (False: it was drawn here, as its tile
        pictures or adaptive cells cannot be drawn elsewhere).
    """
    job = band_job(renderer, default_cache_dir(cache_dir))
    if job is None:
        renderer.write(path, options, show_progress=show_progress)
        return False
    # Closed here, while the client is still open: a write stopped midway (Ctrl+C,
    # SIGTERM) would otherwise cancel its futures after the cluster had closed.
    with contextlib.closing(_cluster_bands(client, job, renderer, rows_per_task)) as bands:
        picture = Picture(bands, renderer.width, renderer.height, renderer.placements,
                          renderer.source_root)
        write_output(path, picture, options, show_progress)
    return True


def band_job(renderer: MosaicRenderer, cache: Path) -> BandJob | None:
    """What workers need to draw ``renderer``'s tiles; None when they cannot."""
    placements, pictures = renderer.placements, renderer.pictures
    if placements.rect is not None:
        return None
    options = placements.options
    if isinstance(pictures, IndexPictures):
        # Files and runs, opened by the workers: not mapped here again.
        files = tile_files(pictures.tiles)
        if files is None:
            return None
        return BandJob("index", files, "", "", pictures.tile_px,
                       options.aspect_ratio, "centre", renderer.metric, options,
                       placements.cols)
    if isinstance(pictures, OriginalPictures):
        return BandJob("originals", None, worker_spec(pictures.source), str(cache),
                       pictures.tile_px, pictures.aspect, pictures.crop, renderer.metric,
                       options, placements.cols, pictures.as_indexed,
                       pictures.colour_profiles)
    return None


def tile_files(tiles: Any) -> TileFiles | None:
    """``tiles`` as files and runs, when they are memory maps of files; else None.

    A sharded library already is; one memory map of a packed file becomes
    its file, first tile and count, found from where the map starts. Nothing
    is opened: the workers map the files (:meth:`TileFiles.open`).
    """
    if isinstance(tiles, ShardedTiles):
        return TileFiles.of(tiles)
    if not isinstance(tiles, np.memmap) or not tiles.filename or len(tiles) == 0:
        return None
    if not tiles.flags.c_contiguous or tiles.dtype != np.uint8:
        return None
    mapping = getattr(tiles, "_mmap", None)
    if mapping is None:
        return None
    # np.memmap maps from the allocation boundary below its offset.
    mapped_from = tiles.offset - tiles.offset % mmap.ALLOCATIONGRANULARITY
    start = tiles.ctypes.data - np.frombuffer(mapping, np.uint8).ctypes.data + mapped_from
    tile_bytes = int(np.prod(tiles.shape[1:]))
    if start % tile_bytes:
        return None
    shape = tuple(tiles.shape[1:])
    return TileFiles(([(str(tiles.filename), start // tile_bytes, len(tiles))], shape, shape))


def _cluster_bands(client: Client, job: BandJob, renderer: MosaicRenderer,
                   rows_per_task: int | None) -> Generator[np.ndarray, None, None]:
    """The picture's bands, one row of cells each, drawn by the workers in groups of rows."""
    placements = renderer.placements
    tile_height = renderer.tile_height
    band_bytes = tile_height * renderer.width * 3
    workers = require_workers(client)
    size = rows_per_task or max(1, min(task_bytes(client) // band_bytes,
                                       -(-placements.rows // (workers * 4))))
    groups = [(start, min(placements.rows, start + size))
              for start in range(0, placements.rows, size)]
    overlay = None
    if renderer.overlay is not None:
        # Sent once to each worker, not with every task.
        overlay = client.scatter(renderer.overlay, broadcast=True, hash=False)
    ahead: list[Any] = []
    waiting = iter(groups)

    def submit_next() -> None:
        for start, stop in waiting:
            ahead.append(client.submit(draw_rows, job, _rows_of(placements, start, stop),
                                       _pictures_of(renderer, start, stop), start, overlay,
                                       pure=False))
            return

    try:
        for _ in range(workers * AHEAD_PER_WORKER):
            submit_next()
        while ahead:
            block = _result(ahead.pop(0))
            submit_next()
            for row in range(len(block) // tile_height):
                yield block[row * tile_height:(row + 1) * tile_height]
    finally:
        for future in ahead:
            future.cancel()


def task_bytes(client: Client) -> int:
    """Bytes of picture one task draws: :data:`TASK_BYTES`, less on workers of little memory.

    Workers started with ``--memory-limit`` are restarted by their nanny past
    95% of it: tasks of the usual size on workers of a few hundred megabytes
    killed every worker they were given to, and the render failed.
    """
    try:
        # Every worker: some versions of Dask list only the first few by default.
        known = client.scheduler_info(n_workers=-1)
    except TypeError:  # a Dask that lists them all, without the keyword
        known = client.scheduler_info()
    except OSError:  # the scheduler lost: the tasks say so
        return TASK_BYTES
    limits = [info.get("memory_limit") or 0 for info in known.get("workers", {}).values()]
    limited = [int(limit) for limit in limits if limit > 0]
    if not limited:
        return TASK_BYTES
    return max(1, min(TASK_BYTES, int(min(limited) * TASK_MEMORY_SHARE)))


def _rows_of(placements: Placements, start: int, stop: int) -> Placements:
    """Rows ``start:stop`` of uniform placements, as placements of their own."""
    cells = slice(start * placements.cols, stop * placements.cols)
    return Placements(stop - start, placements.cols, placements.tile[cells],
                      placements.distance[cells], placements.source_ids[cells],
                      placements.transform[cells], placements.tint[cells],
                      gain=placements.gain[cells], chroma=placements.chroma[cells],
                      mean=None if placements.mean is None else placements.mean[cells],
                      options=placements.options)


def _pictures_of(renderer: MosaicRenderer, start: int, stop: int) -> Any:
    """What rows ``start:stop`` need of the pictures: library positions, or crop windows."""
    pictures = renderer.pictures
    cells = slice(start * renderer.placements.cols, stop * renderer.placements.cols)
    if isinstance(pictures, IndexPictures):
        return pictures.positions[cells]
    assert isinstance(pictures, OriginalPictures)
    return {source_id: pictures.windows[source_id]
            for source_id in pictures.source_ids[cells] if source_id in pictures.windows}


def draw_rows(job: BandJob, placements: Placements, wanted: Any, first_row: int,
              overlay: Any) -> np.ndarray:
    """On a worker: rows of cells ``first_row..`` drawn, ``(rows * tile_height, width, 3)``.

    ``wanted`` is each cell's library position (from the index) or the crop
    windows of the tiles (from the originals).
    """
    pictures: IndexPictures | OriginalPictures
    if job.kind == "index":
        assert job.tiles is not None
        pictures = IndexPictures(job.tiles.open(), wanted)  # type: ignore[arg-type]
    else:
        source = _open(job.spec, job.cache)
        pictures = OriginalPictures(source, placements.source_ids, job.tile_px,
                                    aspect=job.aspect, crop=job.crop, windows=wanted,
                                    as_indexed=job.as_indexed,
                                    colour_profiles=job.colour_profiles)
    renderer = MosaicRenderer(placements, pictures, job.metric)
    height = renderer.tile_height
    out = np.empty((placements.rows * height, renderer.width, 3), np.uint8)
    for row, band in enumerate(renderer.bands()):
        if overlay is not None:
            band = overlay.blend(band, (first_row + row) * height)
        out[row * height:(row + 1) * height] = band
    return out


@functools.lru_cache(maxsize=4)
def _open(spec: str, cache: str) -> TileSource:
    """The tile source ``spec``, opened once per worker process."""
    return open_source(spec, cache_dir=Path(cache))


def _result(future: Any) -> np.ndarray:
    """A group of rows, or the one-line reason it failed."""
    return task_result(future, "a group of rows killed every worker it was given to "
                               "(out of memory?)")
