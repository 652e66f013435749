"""The tile library: an on-disk index of square tile thumbnails.

Layout of one index (one per source and ``match_px``), under the cache::

    indexes/<name>-<hash of source key>/px<match_px>/
        manifest.sqlite     tile manifest (SQLite, WAL)
        tiles-<G>.u8        packed uint8 pixels, N x match_px x match_px x 3
        write.lock          held by the one process updating the index (its PID inside)

The manifest's ``tiles`` table is the *published* library: each tile's source
id, library position, slot in the packed file, size, modification time and
content hash (see :mod:`mosaicist.library._manifest`). Readers only ever see
a published state, read in one SQLite transaction, so they never see a
half-written index.

Updating (``TileLibrary.open``) decodes only new or changed entries. Their
pixels are appended to the current packed file and recorded in a ``staged``
table in batches, each batch flushed to disk before its rows commit; an
interrupted update therefore keeps every committed batch and the next update
resumes from there. Publishing then writes a new packed file in library order
when the order changed (so the published array is one contiguous memory map)
and swaps the manifest in a single transaction (see
:mod:`mosaicist.library._update`).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

import numpy as np

from ..errors import MosaicistError, OptionError, check_range
from ..options import TILE_PX_RANGE
from ..paths import cache_dir as default_cache_dir
from ..sources import TileSource, open_source
from ._manifest import connect, get_meta, manifest_errors, store_path
from ._update import UpdateStats, update_index


def _index_dir(cache: Path, source_key: str, match_px: int) -> Path:
    digest = hashlib.sha1(source_key.encode()).hexdigest()[:12]
    tail = re.sub(r"[^A-Za-z0-9._-]+", "_", source_key.rstrip("/").split("/")[-1])[:40]
    return cache / "indexes" / f"{tail or 'source'}-{digest}" / f"px{match_px}"


class TileLibrary:
    """A published tile index: tiles in library order, memory-mapped.

    Use :meth:`TileLibrary.open` to index (or update) a source and open it.

    Attributes
    ----------
    source : TileSource
        Where the tiles come from.
    match_px : int
        Side of the square tiles in pixels.
    source_ids : list of str
        Each tile's source id, in library order.
    tiles : numpy.ndarray
        ``(N, match_px, match_px, 3)`` uint8, memory-mapped, in library order.
    directory : pathlib.Path
        The index's folder in the cache.
    generation : int
        Generation of the packed file; changes whenever the library changes.
    stats : UpdateStats or None
        What the update that opened this library did.

    Examples
    --------
    >>> library = TileLibrary.open("photos/", match_px=32)  # doctest: +SKIP
    >>> library.tiles.shape  # doctest: +SKIP
    (1234, 32, 32, 3)
    """

    def __init__(
        self,
        source: TileSource,
        match_px: int,
        directory: Path,
        source_ids: list[str],
        tiles: np.ndarray,
        generation: int,
        stats: UpdateStats | None = None,
    ) -> None:
        self.source = source
        self.match_px = match_px
        self.directory = directory
        self.source_ids = source_ids
        self.tiles = tiles
        self.generation = generation
        self.stats = stats

    def __len__(self) -> int:
        return len(self.source_ids)

    def __repr__(self) -> str:
        return f"TileLibrary({self.source.name!r}, tiles={len(self)}, match_px={self.match_px})"

    @property
    def features_dir(self) -> Path:
        """Folder for cached derived features of this library."""
        path = self.directory / "features"
        path.mkdir(exist_ok=True)
        return path

    def limit(self, count: int | None) -> TileLibrary:
        """Return a library of the first ``count`` tiles (all when None)."""
        if count is None or count >= len(self):
            return self
        if count < 1:
            raise OptionError("{limit} must be at least 1, got {value}", value=count)
        return TileLibrary(
            self.source, self.match_px, self.directory, self.source_ids[:count],
            self.tiles[:count], self.generation, self.stats,
        )

    # -- construction ---------------------------------------------------------------

    @classmethod
    def open(
        cls,
        source: str | os.PathLike[str] | TileSource = "cifar10",
        match_px: int = 32,
        cache_dir: str | os.PathLike[str] | None = None,
        show_progress: bool = False,
        update: bool = True,
        quiet: bool = True,
    ) -> TileLibrary:
        """Index ``source`` at ``match_px`` (incrementally) and open the result.

        Parameters
        ----------
        source : str, path-like or TileSource
            A source spec (see :func:`mosaicist.sources.open_source`) or source.
        match_px : int
            Side of the square tiles, in pixels.
        cache_dir : path-like, optional
            Cache directory (default: ``MOSAICIST_CACHE_DIR`` or the user cache).
        show_progress : bool
            Draw progress bars on stderr.
        update : bool
            Bring the index up to date with the source first (default). With
            False, open the last published index as it is.
        quiet : bool
            Suppress warnings about skipped files.

        Raises
        ------
        MosaicistError
            When the source has no usable tile.
        """
        check_range("match_px", match_px, *TILE_PX_RANGE, "pixels")
        cache = default_cache_dir(cache_dir)
        if not isinstance(source, TileSource):
            source = open_source(source, cache_dir=cache, show_progress=show_progress)
        directory = _index_dir(cache, source.key, match_px)
        directory.mkdir(parents=True, exist_ok=True)
        stats = None
        if update:
            stats = update_index(source, match_px, directory, show_progress, quiet)
        with manifest_errors(directory):
            library = cls._read(source, match_px, directory, stats)
        if len(library) == 0:
            raise MosaicistError(f"{source.name}: no usable tile images found")
        return library

    @classmethod
    def _read(
        cls, source: TileSource, match_px: int, directory: Path, stats: UpdateStats | None
    ) -> TileLibrary:
        tile_bytes = match_px * match_px * 3
        for _attempt in range(5):
            connection = connect(directory)
            try:
                connection.execute("BEGIN")
                generation = int(get_meta(connection, "generation", "0"))
                rows = connection.execute(
                    "SELECT source_id, slot FROM tiles ORDER BY position"
                ).fetchall()
                connection.execute("COMMIT")
            finally:
                connection.close()
            source_ids = [row[0] for row in rows]
            slots = np.fromiter((row[1] for row in rows), dtype=np.int64, count=len(rows))
            store = store_path(directory, generation)
            if not rows:
                empty = np.zeros((0, match_px, match_px, 3), np.uint8)
                return cls(source, match_px, directory, [], empty, generation, stats)
            try:
                slot_count = int(slots.max()) + 1
                memory = np.memmap(
                    store, dtype=np.uint8, mode="r", shape=(slot_count, match_px, match_px, 3)
                )
            except FileNotFoundError:
                if _current_generation(directory) == generation:
                    # Not a writer swapping files: the packed file is gone.
                    raise MosaicistError(
                        f"{store}: index is damaged (packed file missing); "
                        f"delete {directory} to rebuild it"
                    ) from None
                # A writer replaced the packed file between our two reads: read again.
                time.sleep(0.05)
                continue
            except ValueError:
                size = store.stat().st_size if store.exists() else 0
                raise MosaicistError(
                    f"{store}: index is damaged ({size} bytes for {slot_count} tiles of "
                    f"{tile_bytes} bytes); delete {directory} to rebuild it"
                ) from None
            if np.array_equal(slots, np.arange(len(slots))):
                tiles = memory[: len(slots)]
            else:
                # Only after an interrupted publish; the next update repacks it.
                tiles = np.asarray(memory[slots])
            return cls(source, match_px, directory, source_ids, tiles, generation, stats)
        raise MosaicistError(f"{directory}: index keeps changing under us; try again")


def _current_generation(directory: Path) -> int:
    connection = connect(directory)
    try:
        return int(get_meta(connection, "generation", "0"))
    finally:
        connection.close()
