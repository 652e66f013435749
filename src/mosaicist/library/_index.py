"""The tile library: an on-disk index of square tile thumbnails.

Layout of one index (one per source and ``match_px``), under the cache::

    indexes/<name>-<hash of source key>/px<match_px>/
        manifest.sqlite     tile manifest (SQLite, WAL)
        tiles-<G>.u8        packed uint8 pixels, N x match_px x match_px x 3
        write.lock          held by the one process updating the index

The manifest's ``tiles`` table is the *published* library: each tile's source
id, library position, slot in the packed file, size, modification time and
content hash. Readers only ever see a published state, read in one SQLite
transaction, so they never see a half-written index.

Updating (``TileLibrary.update``) decodes only new or changed entries. Their
pixels are appended to the current packed file and recorded in a ``staged``
table in batches, each batch flushed to disk before its rows commit; an
interrupted update therefore keeps every committed batch and the next update
resumes from there. Publishing then writes a new packed file in library order
when the order changed (so the published array is one contiguous memory map)
and swaps the manifest in a single transaction.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import MosaicistError, OptionError, check_range
from ..options import TILE_PX_RANGE
from ..paths import atomic_path
from ..paths import cache_dir as default_cache_dir
from ..progress import progress_bar
from ..sources import SourceEntry, TileSource, open_source

SCHEMA_VERSION = 1
#: Decoded tiles committed per transaction during an update.
COMMIT_EVERY = 2048
#: ...or after this many seconds, whichever comes first.
COMMIT_SECONDS = 2.0
#: Tiles copied at a time when writing a packed file in library order.
COPY_CHUNK = 8192

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tiles (
    source_id TEXT PRIMARY KEY, position INTEGER NOT NULL, slot INTEGER NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, content_hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS staged (
    source_id TEXT PRIMARY KEY, slot INTEGER NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, content_hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS failures (
    source_id TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    error TEXT NOT NULL);
"""


@dataclass
class UpdateStats:
    """What an index update did.

    Attributes
    ----------
    tiles : int
        Tiles in the published library.
    decoded : int
        Entries decoded in this run.
    reused : int
        Entries taken from the existing index without decoding.
    removed : int
        Tiles dropped because their entries disappeared from the source.
    failed : list of (str, str)
        ``(source_id, reason)`` for every entry that could not be used,
        including those that failed in earlier runs and are unchanged.
    seconds : float
        Wall time of the update.
    """

    tiles: int = 0
    decoded: int = 0
    reused: int = 0
    removed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def _index_dir(cache: Path, source_key: str, match_px: int) -> Path:
    digest = hashlib.sha1(source_key.encode()).hexdigest()[:12]
    tail = re.sub(r"[^A-Za-z0-9._-]+", "_", source_key.rstrip("/").split("/")[-1])[:40]
    return cache / "indexes" / f"{tail or 'source'}-{digest}" / f"px{match_px}"


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=60, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.executescript(_SCHEMA)
    return connection


@contextlib.contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _meta(connection: sqlite3.Connection, name: str, default: str | None = None) -> str | None:
    row = connection.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return default if row is None else row[0]


def _set_meta(connection: sqlite3.Connection, name: str, value: object) -> None:
    connection.execute(
        "INSERT INTO meta(name, value) VALUES (?, ?) "
        "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        (name, str(value)),
    )


@contextlib.contextmanager
def _write_lock(directory: Path, quiet: bool) -> Iterator[None]:
    with open(directory / "write.lock", "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not quiet:
                print(
                    "mosaicist: waiting for another process that is updating this index",
                    file=sys.stderr,
                )
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
            stats = _update(source, match_px, directory, show_progress, quiet)
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
            connection = _connect(directory / "manifest.sqlite")
            try:
                connection.execute("BEGIN")
                generation = int(_meta(connection, "generation", "0"))
                rows = connection.execute(
                    "SELECT source_id, slot FROM tiles ORDER BY position"
                ).fetchall()
                connection.execute("COMMIT")
            finally:
                connection.close()
            source_ids = [row[0] for row in rows]
            slots = np.fromiter((row[1] for row in rows), dtype=np.int64, count=len(rows))
            store = directory / f"tiles-{generation}.u8"
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
    connection = _connect(directory / "manifest.sqlite")
    try:
        return int(_meta(connection, "generation", "0"))
    finally:
        connection.close()


def _update(
    source: TileSource, match_px: int, directory: Path, show_progress: bool, quiet: bool
) -> UpdateStats:
    started = time.perf_counter()
    with _write_lock(directory, quiet):
        connection = _connect(directory / "manifest.sqlite")
        try:
            stats = _update_locked(source, match_px, directory, connection, show_progress)
        finally:
            connection.close()
    stats.seconds = time.perf_counter() - started
    if stats.failed and not quiet:
        for source_id, reason in stats.failed[:20]:
            print(f"mosaicist: skipped {source_id}: {reason}", file=sys.stderr)
        if len(stats.failed) > 20:
            print(f"mosaicist: ... and {len(stats.failed) - 20} more skipped", file=sys.stderr)
    return stats


def _update_locked(
    source: TileSource,
    match_px: int,
    directory: Path,
    connection: sqlite3.Connection,
    show_progress: bool,
) -> UpdateStats:
    tile_bytes = match_px * match_px * 3
    with _transaction(connection):
        if _meta(connection, "schema") is None:
            _set_meta(connection, "schema", SCHEMA_VERSION)
            _set_meta(connection, "source_key", source.key)
            _set_meta(connection, "tile_px", match_px)
            _set_meta(connection, "generation", 0)
            _set_meta(connection, "next_slot", 0)
    generation = int(_meta(connection, "generation", "0"))
    next_slot = int(_meta(connection, "next_slot", "0"))

    entries = source.scan()
    digest = _scan_digest(entries)
    if _meta(connection, "scan_digest") == digest and not connection.execute(
        "SELECT 1 FROM staged LIMIT 1"
    ).fetchone():
        # Nothing changed since the last published update: skip the comparison.
        stats = UpdateStats(reused=len(entries))
        stats.tiles = connection.execute("SELECT COUNT(*) FROM tiles").fetchone()[0]
        stats.failed = connection.execute(
            "SELECT source_id, error FROM failures ORDER BY source_id"
        ).fetchall()
        return stats
    published = {
        row[0]: row[1:]
        for row in connection.execute(
            "SELECT source_id, slot, size, mtime_ns, content_hash, position FROM tiles"
        )
    }
    staged = {
        row[0]: row[1:]
        for row in connection.execute(
            "SELECT source_id, slot, size, mtime_ns, content_hash FROM staged"
        )
    }
    failures = {
        row[0]: row[1:]
        for row in connection.execute("SELECT source_id, size, mtime_ns, error FROM failures")
    }

    _check_store(directory, generation, match_px, published, staged)

    stats = UpdateStats()
    to_decode: list[SourceEntry] = []
    for entry in entries:
        stamp = (entry.size, entry.mtime_ns)
        old = published.get(entry.source_id)
        if old is not None and (old[1], old[2]) == stamp:
            continue
        new = staged.get(entry.source_id)
        if new is not None and (new[1], new[2]) == stamp:
            continue
        failure = failures.get(entry.source_id)
        if failure is not None and (failure[0], failure[1]) == stamp:
            continue
        to_decode.append(entry)
    stats.reused = len(entries) - len(to_decode)

    if to_decode:
        next_slot = _decode_into_store(
            source, to_decode, match_px, directory / f"tiles-{generation}.u8", connection,
            published, next_slot, show_progress, stats,
        )
        staged = {
            row[0]: row[1:]
            for row in connection.execute(
                "SELECT source_id, slot, size, mtime_ns, content_hash FROM staged"
            )
        }
        failures = {
            row[0]: row[1:]
            for row in connection.execute("SELECT source_id, size, mtime_ns, error FROM failures")
        }

    # The library as it should be published: every scanned entry that has pixels.
    final: list[tuple[str, int, int, int, str]] = []
    failed: list[tuple[str, str]] = []
    for entry in entries:
        stamp = (entry.size, entry.mtime_ns)
        new = staged.get(entry.source_id)
        old = published.get(entry.source_id)
        if new is not None and (new[1], new[2]) == stamp:
            final.append((entry.source_id, new[0], new[1], new[2], new[3]))
        elif old is not None and (old[1], old[2]) == stamp:
            final.append((entry.source_id, old[0], old[1], old[2], old[3]))
        else:
            failure = failures.get(entry.source_id)
            reason = failure[2] if failure is not None else "could not be decoded"
            failed.append((entry.source_id, reason))
    stats.failed = failed
    stats.tiles = len(final)
    scanned_ids = {entry.source_id for entry in entries}
    stats.removed = sum(1 for source_id in published if source_id not in scanned_ids)

    slots = np.fromiter((row[1] for row in final), dtype=np.int64, count=len(final))
    same_rows = len(final) == len(published) and all(
        (row[0] in published and published[row[0]][0] == row[1] and published[row[0]][4] == i)
        for i, row in enumerate(final)
    )
    if same_rows and not staged:
        with _transaction(connection):
            _set_meta(connection, "scan_digest", digest)
        return stats

    store = directory / f"tiles-{generation}.u8"
    new_generation = generation
    if not np.array_equal(slots, np.arange(len(final))):
        new_generation = generation + 1
        _write_packed(store, directory / f"tiles-{new_generation}.u8", slots, tile_bytes)
        final = [(row[0], i, row[2], row[3], row[4]) for i, row in enumerate(final)]
    with _transaction(connection):
        connection.execute("DELETE FROM tiles")
        connection.executemany(
            "INSERT INTO tiles(source_id, position, slot, size, mtime_ns, content_hash) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(row[0], i, row[1], row[2], row[3], row[4]) for i, row in enumerate(final)],
        )
        connection.execute("DELETE FROM staged")
        connection.execute(
            "DELETE FROM failures WHERE source_id IN (SELECT source_id FROM tiles)"
        )
        live_failures = [(source_id,) for source_id, _ in failed]
        connection.execute("CREATE TEMP TABLE IF NOT EXISTS keep(source_id TEXT PRIMARY KEY)")
        connection.execute("DELETE FROM keep")
        connection.executemany("INSERT OR IGNORE INTO keep VALUES (?)", live_failures)
        connection.execute(
            "DELETE FROM failures WHERE source_id NOT IN (SELECT source_id FROM keep)"
        )
        _set_meta(connection, "generation", new_generation)
        repacked = new_generation != generation
        _set_meta(connection, "next_slot", len(final) if repacked else next_slot)
        _set_meta(connection, "scan_digest", digest)
    if new_generation != generation:
        with contextlib.suppress(FileNotFoundError):
            store.unlink()
    return stats


def _scan_digest(entries: Sequence[SourceEntry]) -> str:
    """Digest of a scan (ids, sizes, modification times) to detect 'nothing changed'."""
    hasher = hashlib.blake2b(digest_size=16)
    hasher.update(
        "\n".join(f"{e.source_id}\0{e.size}\0{e.mtime_ns}" for e in entries).encode(
            "utf-8", "surrogateescape"
        )
    )
    return hasher.hexdigest()


def _check_store(
    directory: Path, generation: int, match_px: int, published: dict, staged: dict
) -> None:
    """Refuse to update a packed file that is shorter than the tiles it must hold.

    Appending to a truncated file would silently fill the missing tiles with zeros.
    """
    slots = [row[0] for row in published.values()] + [row[0] for row in staged.values()]
    if not slots:
        return
    tile_bytes = match_px * match_px * 3
    store = directory / f"tiles-{generation}.u8"
    size = store.stat().st_size if store.exists() else 0
    needed = max(slots) + 1
    if size < needed * tile_bytes:
        raise MosaicistError(
            f"{store}: index is damaged ({size} bytes for {needed} tiles of "
            f"{tile_bytes} bytes); delete {directory} to rebuild it"
        )


def _decode_into_store(
    source: TileSource,
    to_decode: Sequence[SourceEntry],
    match_px: int,
    store: Path,
    connection: sqlite3.Connection,
    published: dict[str, tuple],
    next_slot: int,
    show_progress: bool,
    stats: UpdateStats,
) -> int:
    """Decode entries, appending pixels to ``store``; commit in crash-safe batches."""
    tile_bytes = match_px * match_px * 3
    store.touch(exist_ok=True)
    pending_rows: list[tuple[str, int, int, int, str]] = []
    pending_failures: list[tuple[str, int, int, str]] = []
    last_commit = time.monotonic()

    with open(store, "r+b") as handle, progress_bar(
        len(to_decode), "indexing", unit="img", enabled=show_progress
    ) as bar:
        handle.seek(next_slot * tile_bytes)
        handle.truncate()

        def commit() -> None:
            nonlocal last_commit
            handle.flush()
            os.fsync(handle.fileno())
            with _transaction(connection):
                connection.executemany(
                    "INSERT OR REPLACE INTO staged(source_id, slot, size, mtime_ns, content_hash) "
                    "VALUES (?, ?, ?, ?, ?)",
                    pending_rows,
                )
                connection.executemany(
                    "INSERT OR REPLACE INTO failures(source_id, size, mtime_ns, error) "
                    "VALUES (?, ?, ?, ?)",
                    pending_failures,
                )
                connection.executemany(
                    "DELETE FROM failures WHERE source_id = ?",
                    [(row[0],) for row in pending_rows],
                )
                _set_meta(connection, "next_slot", next_slot)
            pending_rows.clear()
            pending_failures.clear()
            last_commit = time.monotonic()

        try:
            for decoded in source.decode(to_decode, match_px):
                entry = decoded.entry
                stats.decoded += 1
                bar.update(1)
                if decoded.pixels is None or decoded.content_hash is None:
                    pending_failures.append(
                        (entry.source_id, entry.size, entry.mtime_ns, decoded.error or "unusable")
                    )
                else:
                    old = published.get(entry.source_id)
                    if old is not None and old[3] == decoded.content_hash:
                        slot = old[0]  # touched but not changed: keep the pixels we have
                    else:
                        slot = next_slot
                        handle.write(np.ascontiguousarray(decoded.pixels, np.uint8).tobytes())
                        next_slot += 1
                    pending_rows.append(
                        (entry.source_id, slot, entry.size, entry.mtime_ns, decoded.content_hash)
                    )
                if (
                    len(pending_rows) + len(pending_failures) >= COMMIT_EVERY
                    or time.monotonic() - last_commit > COMMIT_SECONDS
                ):
                    commit()
        finally:
            # Also on KeyboardInterrupt: keep what was decoded.
            if pending_rows or pending_failures:
                commit()
    return next_slot


def _write_packed(source: Path, destination: Path, slots: np.ndarray, tile_bytes: int) -> None:
    """Write the tiles at ``slots`` of ``source`` to ``destination``, in that order, durably."""
    with atomic_path(destination, durable=True) as partial, open(partial, "wb") as handle:
        if len(slots):
            memory = np.memmap(source, dtype=np.uint8, mode="r").reshape(-1, tile_bytes)
            for start in range(0, len(slots), COPY_CHUNK):
                chunk = memory[slots[start:start + COPY_CHUNK]]
                handle.write(np.ascontiguousarray(chunk).tobytes())
            del memory
