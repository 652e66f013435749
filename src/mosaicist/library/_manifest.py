"""The index's SQLite manifest and file names, shared by reading and updating.

One index folder holds::

    manifest.sqlite     this manifest (SQLite, WAL)
    tiles-<G>.u8        packed uint8 pixels of generation G, slot by slot
    tiles-<G>.u8.part   a packed file being written (a leftover after a crash)
    write.lock          held by the one process updating the index (its PID inside)

Tables of the manifest:

``meta``
    ``schema``, ``source_key``, ``tile_px``, ``generation`` (G of the packed
    file the published tiles live in), ``next_slot`` (first slot of that file
    that no committed row uses) and ``scan_digest`` (digest of the source's
    scan at the last publish).
``tiles``
    The *published* library: ``source_id``, ``position`` (library order),
    ``slot`` (in ``tiles-<G>.u8``), ``size``, ``mtime_ns``, ``content_hash``.
``staged``
    Tiles decoded by an update but not yet published; same columns, no
    ``position``.
``failures``
    Entries that could not be decoded: ``source_id``, ``size``, ``mtime_ns``,
    ``error``.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import overload

from ..errors import MosaicistError

SCHEMA_VERSION = 1

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


def store_path(directory: Path, generation: int) -> Path:
    """Return the packed tile file of ``generation`` in the index ``directory``."""
    return directory / f"tiles-{generation}.u8"


def partial_path(store: Path) -> Path:
    """Return the temporary name a packed file is written under (``tiles-<G>.u8.part``)."""
    return store.with_name(store.name + ".part")


@contextlib.contextmanager
def manifest_errors(directory: Path) -> Iterator[None]:
    """Report an SQLite error of the manifest in ``directory`` as one line naming it.

    A full disk reads as such, a damaged file with how to rebuild the
    index, anything else (a read-only folder, a busy database) with SQLite's
    words.

    Parameters
    ----------
    directory : pathlib.Path
        The index's folder.

    Raises
    ------
    MosaicistError
        In place of any :class:`sqlite3.Error` raised in the block.
    """
    try:
        yield
    except (sqlite3.ProgrammingError, sqlite3.InterfaceError):
        raise  # a mistake in mosaicist, not in the file
    except sqlite3.DatabaseError as error:
        manifest = directory / "manifest.sqlite"
        code = getattr(error, "sqlite_errorcode", None)
        if code == sqlite3.SQLITE_FULL:
            raise MosaicistError(
                f"{manifest}: no space left on device while writing the tile index; "
                f"free some space and run again"
            ) from None
        if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or code is None:
            raise MosaicistError(
                f"{manifest}: index is damaged ({error}); delete {directory} to rebuild it"
            ) from None
        raise MosaicistError(f"{manifest}: cannot use the tile index: {error}") from None


def connect(directory: Path) -> sqlite3.Connection:
    """Open (creating if needed) the manifest of the index in ``directory``.

    The connection is in autocommit mode (``isolation_level=None``): every
    transaction is explicit, so its extent is visible where it is used (see
    :func:`transaction`).
    """
    connection = sqlite3.connect(directory / "manifest.sqlite", timeout=60, isolation_level=None)
    # WAL: readers keep reading the last committed state while a writer commits.
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.executescript(_SCHEMA)
    return connection


@contextlib.contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the block as one write transaction: all of it commits, or none.

    ``BEGIN IMMEDIATE`` takes the write lock up front, so a transaction never
    fails half-way for want of it. Any exception (an interrupt included)
    rolls back.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


@overload
def get_meta(connection: sqlite3.Connection, name: str, default: None = None) -> str | None: ...


@overload
def get_meta(connection: sqlite3.Connection, name: str, default: str) -> str: ...


def get_meta(connection: sqlite3.Connection, name: str, default: str | None = None) -> str | None:
    """Return the ``meta`` value ``name``, or ``default`` when it is not set."""
    row = connection.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return default if row is None else row[0]


def set_meta(connection: sqlite3.Connection, name: str, value: object) -> None:
    """Set the ``meta`` value ``name`` to ``str(value)``."""
    connection.execute(
        "INSERT INTO meta(name, value) VALUES (?, ?) "
        "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        (name, str(value)),
    )
