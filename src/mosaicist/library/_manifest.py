"""The index's SQLite manifest and file names, shared by reading and updating.

One index folder holds::

    manifest.sqlite     this manifest (SQLite, WAL)
    tiles-<G>.u8        packed uint8 pixels of generation G, slot by slot
    tiles-<G>.u8.part   a packed file being written (a leftover after a crash)
    write.lock          held by the one process updating the index (its PID inside)
    shard-<token>.u8    packed pixels that a worker of a cluster wrote, and beside it
    shard-<token>.rows.json   their rows (see ``shards`` below)
    order-<publication>.npz   the published library's order, read without SQL (below)

Tables of the manifest:

``meta``
    ``schema``, ``source_key``, ``tile_px`` (the tiles' width), ``tile_height``,
    ``aspect`` (``W:H``), ``crop`` (``centre``, ``subject`` or ``detail``, see
    :func:`mosaicist.crop.crop_method`), ``generation`` (G of the packed
    file the published tiles live in), ``next_slot`` (first slot of that file
    that no committed row uses), ``scan_digest`` (digest of the source's
    scan at the last publish), ``signed`` (``1`` once every published
    row has its signature; rows added later always do), ``signature_rule``
    (:data:`SIGNATURE_RULE` once every signature is of the rule of now; an
    index without it may hold JPEG signatures of the rule before, see
    :func:`mosaicist.library._update._resign_photos`, which keeps its progress
    in ``resign_after``; ``2`` where rows may lack their mirrors' hashes
    until near-duplicates are first grouped), ``publication``
    (a random token, new each time the ``tiles`` rows change), and for
    stamps too recent to vouch for their content (see "Racy stamps" in
    :mod:`mosaicist.library._update`): ``stamps_checked_ns`` (when the
    published rows were last compared with their entries, wall clock in
    nanoseconds), ``racy`` (how many of them were too recent then) and
    ``staged_checked_ns`` (the same moment for the staged rows; unset once
    published). An index without them (made before) trusts its stamps. Manifests of schema
    1 (square centre crops, before aspects) lack ``tile_height``, ``aspect``
    and ``crop``: they are ``tile_px``, ``1:1`` and ``centre``.
``tiles``
    The *published* library: ``source_id``, ``position`` (library order),
    ``slot`` (in ``tiles-<G>.u8``), ``size``, ``mtime_ns``, ``content_hash``,
    then (schema 2) the crop window ``crop_left``, ``crop_top``,
    ``crop_width``, ``crop_height`` in the original's full-size pixels (NULL:
    the centred window, as schema 1 cut), and the photo's signature for
    near-duplicates (:mod:`mosaicist.dedupe`): ``phash`` (the 64-bit hash
    as a signed integer) and ``mean_rgb`` (``R << 16 | G << 8 | B``); NULL
    until computed. Then ``phash_mirror`` (:data:`MIRROR_COLUMN`, added
    later without a new schema: an older version leaves it NULL), the hash
    of the photo mirrored left-right (:func:`mosaicist.dedupe.mirrored_tile_signatures`),
    so that a mirrored copy is grouped with its photo; NULL where not known
    (the row's hash stands for it then): in an older version's index, until
    its near-duplicates are first grouped
    (:func:`mosaicist.library._update.sign_mirrors`).
``staged``
    Tiles decoded by an update but not yet published; same columns, no
    ``position``.
``failures``
    Entries that could not be decoded: ``source_id``, ``size``, ``mtime_ns``,
    ``error``. An entry is not decoded again while its size and time are
    the row's; a failure that may pass (a read that failed for a reason of
    the moment) is stored with ``size`` :data:`RETRY_SIZE`, which no entry
    has, so that the next update decodes the entry again.
``shards``
    Packed files written whole by the workers of a cluster
    (:mod:`mosaicist.library._shards`): ``file`` (``shard-<token>.u8``, or an
    earlier generation's ``tiles-<G>.u8`` kept as it is), ``first_slot``,
    ``tile_count``. Slots from ``2**40`` on are in these files; a slot below is in
    ``tiles-<G>.u8``. Empty for an index made on one machine.

**The order snapshot.** Opening a library needs every tile's ``source_id``
and ``slot`` in library order; for a million tiles the ``SELECT`` and the
Python rows it makes took 1.8 of the 2.0 s of opening. The first reader of a
publication with at least :data:`ORDER_SNAPSHOT_TILES` tiles writes them to
``order-<publication>.npz`` (atomically; it removes the other publications'
snapshots), and later readers load that instead (0.2 s). The token names
the rows it was made from, and the snapshot also keeps the meta values that
every publish changes, even by versions from before the tokens
(:func:`order_stamp`), so it is never read for other rows; one that cannot
be read or written only costs the ``SELECT``.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import overload

import numpy as np

from ..errors import MosaicistError
from ..paths import STORED_ARRAY_ERRORS, atomic_path

SCHEMA_VERSION = 2
#: The rule the manifest's signatures were made by, as its meta value ``signature_rule``.
#: 2: a JPEG is signed from its decode at the signature's own DCT scale, whatever its
#: tiles (before, from the decode drafted for its tile: a few bits apart for tiles other
#: than square ones at :data:`~mosaicist.dedupe.SIGNATURE_PX`).
#: 3: every row signed has its mirror's hash too (``phash_mirror``): an index of rule 2
#: is given them once, from its packed tiles or its photos, when its near-duplicates
#: are first grouped (:func:`mosaicist.library._update.sign_mirrors`); its updates
#: leave it at rule 2 (only the grouping reads the mirrors' hashes), rows indexed since
#: getting theirs at once.
SIGNATURE_RULE = 3

#: Seconds a connection waits for another process's lock on the manifest (SQLite's
#: busy timeout, and the most that :func:`connect` retries switching to WAL).
BUSY_SECONDS = 60.0

#: Tiles from which a publication's order is kept in a snapshot file (below, the
#: ``SELECT`` takes milliseconds).
ORDER_SNAPSHOT_TILES = 10_000
#: Separates the source ids in a snapshot (no path or archive member holds it).
_ID_SEPARATOR = "\0"
#: Names of order snapshots (:func:`order_path`).
ORDER_FILE = re.compile(r"order-[0-9a-f]+\.npz")

#: Columns that schema 2 added to ``tiles`` and ``staged``, in order (all may be NULL).
ADDED_COLUMNS = ("crop_left", "crop_top", "crop_width", "crop_height", "phash", "mean_rgb")
#: The mirror image's hash, added to ``tiles`` and ``staged`` after schema 2 (may be NULL).
#: Not a schema of its own: an older version reads and updates such a manifest as it
#: did (its rows leave the column NULL, and it sets ``signature_rule`` below
#: :data:`SIGNATURE_RULE`, so that this version's first grouping of near-duplicates
#: gives them their mirrors).
MIRROR_COLUMN = "phash_mirror"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tiles (
    source_id TEXT PRIMARY KEY, position INTEGER NOT NULL, slot INTEGER NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, content_hash TEXT NOT NULL,
    crop_left INTEGER, crop_top INTEGER, crop_width INTEGER, crop_height INTEGER,
    phash INTEGER, mean_rgb INTEGER, phash_mirror INTEGER);
CREATE TABLE IF NOT EXISTS staged (
    source_id TEXT PRIMARY KEY, slot INTEGER NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, content_hash TEXT NOT NULL,
    crop_left INTEGER, crop_top INTEGER, crop_width INTEGER, crop_height INTEGER,
    phash INTEGER, mean_rgb INTEGER, phash_mirror INTEGER);
CREATE TABLE IF NOT EXISTS failures (
    source_id TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    error TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS shards (
    file TEXT PRIMARY KEY, first_slot INTEGER NOT NULL UNIQUE, tile_count INTEGER NOT NULL);
"""


#: ``size`` of a failure that may pass: no entry's size is negative, so the row matches
#: no later scan and the entry is decoded again by the next update (see
#: :func:`failure_row`).
RETRY_SIZE = -1
#: Said after the reason of a failure that may pass.
RETRY_NOTE = "this may pass: it will be tried again next run"


def failure_row(source_id: str, size: int, mtime_ns: int, error: str | None,
                transient: bool) -> tuple[str, int, int, str]:
    """The ``failures`` row of an entry that could not be decoded.

    A failure that may pass (:attr:`mosaicist.sources.DecodedTile.transient`)
    gets :data:`RETRY_SIZE` in place of the entry's size, so that it never
    counts as the entry's outcome, and its reason says it will be tried again.

    Parameters
    ----------
    source_id : str
        The entry's id.
    size, mtime_ns : int
        The entry's stamp, as scanned.
    error : str or None
        Why it failed (None: the source did not say).
    transient : bool
        Whether the failure may pass.

    Returns
    -------
    (str, int, int, str)
        ``(source_id, size, mtime_ns, error)``.
    """
    reason = error or "unusable"
    if transient:
        return source_id, RETRY_SIZE, mtime_ns, f"{reason} ({RETRY_NOTE})"
    return source_id, size, mtime_ns, reason


def retry_pending(connection: sqlite3.Connection) -> bool:
    """Whether the manifest holds a failure that may pass (:data:`RETRY_SIZE`), to try again."""
    return connection.execute(
        "SELECT 1 FROM failures WHERE size = ? LIMIT 1", (RETRY_SIZE,)).fetchone() is not None


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
        if is_out_of_space(error, directory):
            raise MosaicistError(
                f"{manifest}: no space left on device for the tile index; "
                f"free some space and run again"
            ) from None
        if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or code is None:
            raise MosaicistError(
                f"{manifest}: index is damaged ({error}); delete {directory} to rebuild it"
            ) from None
        raise MosaicistError(f"{manifest}: cannot use the tile index: {error}") from None


def connect(directory: Path, *, read_only_when_full: bool = True) -> sqlite3.Connection:
    """Open (creating if needed) the manifest of the index in ``directory``.

    The connection is in autocommit mode (``isolation_level=None``): every
    transaction is explicit, so its extent is visible where it is used (see
    :func:`transaction`). Where the folder cannot be written (a shared or
    write-protected cache), the manifest is opened read-only instead
    (:func:`connect_read_only`): it reads as usual, and a write fails with
    SQLite's read-only error. So it is, by default, on a disk too full for
    SQLite to make the log's ``-shm`` file (:func:`is_out_of_space`): a
    complete index is still read there, though it cannot be written.

    Parameters
    ----------
    directory : pathlib.Path
        The index's folder.
    read_only_when_full : bool, optional
        Open the manifest read-only on a full disk (default); False: raise
        SQLite's error instead (for a writer, which must know it cannot write).

    Raises
    ------
    MosaicistError
        For a manifest that a newer mosaicist made (:func:`check_schema`).
    sqlite3.Error
        When the manifest cannot be opened (:func:`manifest_errors` says why in one line).
    """
    connection = sqlite3.connect(directory / "manifest.sqlite", timeout=BUSY_SECONDS,
                                 isolation_level=None)
    try:
        # WAL: readers keep reading the last committed state while a writer commits.
        _use_wal(connection)
        connection.execute("PRAGMA synchronous=NORMAL")
        # Before any table is made: a newer version's manifest is not touched.
        check_schema(connection, directory)
        connection.executescript(_SCHEMA)
    except sqlite3.OperationalError as error:
        connection.close()
        if not (is_read_only_error(error) or _cannot_open_unwritable(error, directory)
                or (read_only_when_full and is_out_of_space(error, directory)
                    and _has_manifest(directory))):
            raise
        return connect_read_only(directory)
    except BaseException:
        connection.close()
        raise
    return connection


def check_schema(connection: sqlite3.Connection, directory: Path) -> None:
    """Refuse a manifest that a newer version of mosaicist made (schema above ours).

    Its tables may mean something else than ours do: read, its rows would be
    misread; updated, this version would bring it "up to date" with its own
    schema (:func:`upgrade` wrote schema 2 over any other), spoiling it for
    the version that made it. A new, empty manifest has no schema yet.

    Parameters
    ----------
    connection : sqlite3.Connection
        The manifest, just opened.
    directory : pathlib.Path
        The index's folder, for the message.

    Raises
    ------
    MosaicistError
        For a schema above :data:`SCHEMA_VERSION`, saying to upgrade mosaicist.
    sqlite3.DatabaseError
        For a schema that is no version (a damaged manifest;
        :func:`manifest_errors` says so in one line).
    """
    if connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
                          ).fetchone() is None:
        return
    value = get_meta(connection, "schema")
    if value is None:
        return
    try:
        schema = int(value)
    except ValueError:
        schema = 0
    if schema < 1:
        raise sqlite3.DatabaseError(f"its schema is {value!r}, not a version of the index")
    if schema > SCHEMA_VERSION:
        raise MosaicistError(
            f"{directory / 'manifest.sqlite'}: this tile index was made by a newer version "
            f"of mosaicist (index schema {schema}; this version reads schemas up to "
            f"{SCHEMA_VERSION}): upgrade mosaicist to use it, or give another cache "
            f"(--cache-dir)")


def _cannot_open_unwritable(error: sqlite3.Error, directory: Path) -> bool:
    """Whether ``error`` is SQLite failing to open the manifest's log in an unwritable folder.

    On a file system mounted read-only (a ``:ro`` volume, a read-only share)
    SQLite cannot make the ``-shm`` file that reading in WAL mode takes, and
    says "unable to open database file" (``SQLITE_CANTOPEN``), not the
    read-only error that a folder without write permission gives: the
    manifest, which is there, must then be read as in such a folder.
    """
    code = getattr(error, "sqlite_errorcode", None)
    return (code is not None and code & 0xFF == sqlite3.SQLITE_CANTOPEN
            and (directory / "manifest.sqlite").is_file()
            and not os.access(directory, os.W_OK))


def _use_wal(connection: sqlite3.Connection) -> None:
    """Put the manifest in WAL mode, waiting while other processes make it.

    Switching a new manifest's journal takes its exclusive lock. While another
    process holds a write lock on it (its own first :func:`connect`, creating
    the tables), SQLite refuses at once, without its busy timeout (waiting
    there could deadlock): several processes opening a new index together
    (two ``make`` runs, the studio and a terminal) failed with "database is
    locked". Refused, the statement is tried again until the busy timeout
    would have run out; the lock is only held for the few statements of a
    connect, or while a writer commits.
    """
    deadline = time.monotonic() + BUSY_SECONDS
    pause = 0.001
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            code = getattr(error, "sqlite_errorcode", None)
            if code is None or code & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


#: Free bytes under which an I/O error of SQLite's is taken for a full disk: SQLite then
#: fails to grow a file by a page or by a 32 KiB block of the ``-shm`` file, and says
#: "disk I/O error" for some of these (``SQLITE_IOERR_*``) rather than ``SQLITE_FULL``.
_NEARLY_FULL_BYTES = 64 * 1024


def is_out_of_space(error: sqlite3.Error, directory: Path) -> bool:
    """Whether SQLite's ``error`` on the manifest in ``directory`` comes of a full disk.

    SQLite says ``SQLITE_FULL`` where a write of the database or its log
    finds no space, but where the ``-shm`` file that reading in WAL mode
    maps cannot be grown, ``SQLITE_IOERR_SHMSIZE`` ("disk I/O error"); a
    full disk also fails other I/O (``SQLITE_IOERR_*``), which is taken for
    it when the folder's file system has (nearly) no space left.
    """
    code = getattr(error, "sqlite_errorcode", None)
    if code in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR_SHMSIZE):
        return True
    if code is None or code & 0xFF != sqlite3.SQLITE_IOERR:
        return False
    try:
        usage = os.statvfs(directory)
    except OSError:
        return False
    return usage.f_bavail * usage.f_frsize < _NEARLY_FULL_BYTES


def _has_manifest(directory: Path) -> bool:
    """Whether ``directory`` holds a manifest with content (not one just made, empty)."""
    try:
        return (directory / "manifest.sqlite").stat().st_size > 0
    except OSError:
        return False


def is_read_only_error(error: sqlite3.Error) -> bool:
    """Whether SQLite refused ``error``'s statement for a file or folder it cannot write."""
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_READONLY


def connect_read_only(directory: Path) -> sqlite3.Connection:
    """Open the existing manifest of the index in ``directory`` for reading only.

    Reading a manifest in write-ahead-log mode takes its ``-shm`` file,
    which SQLite makes beside it: in a folder that cannot be written, where
    the last writer removed it on closing, SQLite refuses to read at all. The
    manifest is then complete without the log (the log is gone too), and
    is read as an unchanging file (``immutable``). So it is on a disk too full
    to grow the ``-shm`` file (:func:`is_out_of_space`), where the log is
    empty. Tables that the version which made the manifest did not have read
    as empty, as :func:`connect` would have made them.

    Raises
    ------
    sqlite3.Error
        When the manifest cannot be opened (it is missing), or cannot be
        read without its log.
    MosaicistError
        For a manifest that a newer mosaicist made (:func:`check_schema`).
    """
    path = directory / "manifest.sqlite"
    uri = path.absolute().as_uri() + "?mode=ro"
    connection = sqlite3.connect(uri, uri=True, timeout=BUSY_SECONDS, isolation_level=None)
    try:
        check_schema(connection, directory)
        _add_missing_tables(connection)
    except sqlite3.OperationalError as error:
        connection.close()
        log = path.with_name(path.name + "-wal")
        if (not (is_read_only_error(error) or _cannot_open_unwritable(error, directory)
                 or (is_out_of_space(error, directory) and _has_manifest(directory)))
                or (log.exists() and log.stat().st_size > 0)):
            # Commits still in the log are not in the file alone: never read it without.
            raise
        connection = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None)
        try:
            check_schema(connection, directory)
            _add_missing_tables(connection)
        except BaseException:
            connection.close()
            raise
    except BaseException:
        connection.close()
        raise
    return connection


def _add_missing_tables(connection: sqlite3.Connection) -> None:
    """Make the tables of :data:`_SCHEMA` that the read-only manifest lacks, empty and temporary."""
    present = {row[0] for row in connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    for statement in _SCHEMA.split(";"):
        found = re.search(r"CREATE TABLE IF NOT EXISTS (\w+)", statement)
        if found is not None and found.group(1) not in present:
            connection.execute(statement.replace("CREATE TABLE", "CREATE TEMP TABLE", 1))


def has_added_columns(connection: sqlite3.Connection) -> bool:
    """Whether the manifest's ``tiles`` table has the columns of schema 2 (reads only)."""
    names = {row[1] for row in connection.execute("PRAGMA table_info(tiles)")}
    return set(ADDED_COLUMNS) <= names


def has_mirror_column(connection: sqlite3.Connection) -> bool:
    """Whether the manifest's ``tiles`` table has :data:`MIRROR_COLUMN` (reads only)."""
    return any(row[1] == MIRROR_COLUMN
               for row in connection.execute("PRAGMA table_info(tiles)"))


def upgrade(connection: sqlite3.Connection) -> None:
    """Bring a manifest of schema 1 to schema 2, in one transaction (by the writer only).

    The new columns are added empty: the windows of schema 1 are the centred
    ones, and the signatures are computed by the update (from the packed
    tiles of a square index at 32 px, without decoding again; from the
    photos, decoded again once, at any other size). So is
    :data:`MIRROR_COLUMN` to a manifest of schema 2 without it, its values
    computed once too (see :data:`SIGNATURE_RULE`).
    """
    with transaction(connection):
        for table in ("tiles", "staged"):
            names = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
            for column in (*ADDED_COLUMNS, MIRROR_COLUMN):
                if column not in names:
                    connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} INTEGER")
        if get_meta(connection, "schema") not in (None, str(SCHEMA_VERSION)):
            set_meta(connection, "schema", SCHEMA_VERSION)


@contextlib.contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the block as one write transaction: all of it commits, or none.

    ``BEGIN IMMEDIATE`` takes the write lock up front, so a transaction never
    fails half-way for want of it. Any exception (an interrupt included)
    rolls back, even one raised just after ``BEGIN`` or just before
    ``COMMIT`` (a SIGTERM's, whose handler runs between any two steps):
    left open, the transaction made the cleanup's next one fail with
    "cannot start a transaction within a transaction".
    """
    try:
        connection.execute("BEGIN IMMEDIATE")
        yield connection
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


@overload
def get_meta(connection: sqlite3.Connection, name: str, default: None = None) -> str | None: ...


@overload
def get_meta(connection: sqlite3.Connection, name: str, default: str) -> str: ...


def get_meta(connection: sqlite3.Connection, name: str, default: str | None = None) -> str | None:
    """Return the ``meta`` value ``name``, or ``default`` when it is not set."""
    row = connection.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return default if row is None else row[0]


def meta_count(connection: sqlite3.Connection, name: str) -> int:
    """Return the ``meta`` value ``name`` that counts something (a generation, a slot), or 0.

    Parameters
    ----------
    connection : sqlite3.Connection
        The manifest.
    name : str
        ``generation`` or ``next_slot``.

    Returns
    -------
    int
        The value; 0 when it is not set.

    Raises
    ------
    sqlite3.DatabaseError
        When the value is not a whole number of 0 or more (a damaged
        manifest; :func:`manifest_errors` says so in one line).
    """
    value = get_meta(connection, name, "0")
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise sqlite3.DatabaseError(f"its {name} is {value!r}, not a whole number of 0 "
                                    f"or more")
    return number


def set_meta(connection: sqlite3.Connection, name: str, value: object) -> None:
    """Set the ``meta`` value ``name`` to ``str(value)``."""
    connection.execute(
        "INSERT INTO meta(name, value) VALUES (?, ?) "
        "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        (name, str(value)),
    )


def new_publication(connection: sqlite3.Connection) -> None:
    """Give the ``tiles`` rows a new ``publication`` token (in the caller's transaction)."""
    set_meta(connection, "publication", secrets.token_hex(8))


def order_path(directory: Path, publication: str) -> Path:
    """Return the order snapshot of ``publication`` in the index ``directory``."""
    return directory / f"order-{publication}.npz"


def order_stamp(connection: sqlite3.Connection) -> str:
    """What a snapshot must have been made under: the meta values every publish changes.

    Beside the token, the scan's digest, the generation and the next free
    slot, which versions of mosaicist from before the tokens change too
    when they publish: a cache shared with one never serves stale rows.
    """
    return "|".join(get_meta(connection, name, "") for name in (
        "publication", "scan_digest", "generation", "next_slot"))


def read_order(directory: Path, publication: str, stamp: str
               ) -> tuple[list[str], np.ndarray] | None:
    """The source ids and slots of ``publication``'s snapshot, or None where there is none.

    A snapshot that is missing, damaged, inconsistent or made under another
    ``stamp`` (:func:`order_stamp`) reads as None (the caller then reads
    the rows with SQL).
    """
    try:
        with np.load(order_path(directory, publication), allow_pickle=False) as stored:
            made_under = stored["stamp"]
            blob = stored["ids"]
            slots = stored["slots"]
    except STORED_ARRAY_ERRORS:
        return None
    if made_under.dtype != np.uint8 or made_under.tobytes() != stamp.encode():
        return None
    if blob.dtype != np.uint8 or blob.ndim != 1 or slots.dtype != np.int64 or slots.ndim != 1:
        return None
    source_ids = blob.tobytes().decode("utf-8", "surrogateescape").split(_ID_SEPARATOR)
    if len(source_ids) != len(slots):
        return None
    return source_ids, slots


def write_order(directory: Path, publication: str, stamp: str, source_ids: Sequence[str],
                slots: np.ndarray) -> None:
    """Keep ``publication``'s order in its snapshot, made under ``stamp``; remove the others.

    Best effort: ids that the snapshot cannot hold, or a folder it cannot be
    written to, leave things as they were.
    """
    if len(source_ids) < ORDER_SNAPSHOT_TILES:
        return
    joined = _ID_SEPARATOR.join(source_ids)
    if joined.count(_ID_SEPARATOR) != len(source_ids) - 1:
        return  # an id holds the separator
    try:
        blob = np.frombuffer(joined.encode("utf-8", "surrogateescape"), np.uint8)
    except UnicodeEncodeError:
        return
    final = order_path(directory, publication)
    try:
        with atomic_path(final) as temporary, open(temporary, "wb") as handle:
            np.savez(handle, stamp=np.frombuffer(stamp.encode(), np.uint8), ids=blob,
                     slots=np.asarray(slots, np.int64))
        with os.scandir(directory) as items:
            others = [item.path for item in items
                      if ORDER_FILE.fullmatch(item.name) and item.name != final.name]
        for other in others:
            with contextlib.suppress(OSError):
                os.unlink(other)
    except OSError:
        return
