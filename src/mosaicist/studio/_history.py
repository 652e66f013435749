"""The studio's history of runs: one SQLite row per run, its files in a folder of its own.

Layout, under the cache folder (:func:`mosaicist.paths.cache_dir`)::

    studio/history.sqlite     one row per run (WAL journal, synchronous FULL)
    studio/runs/<id>/         the run's files: mosaic.png, mosaic.dzi, report.json...

Every change is one SQLite transaction, so a crash or a ``kill -9`` at any
moment leaves each row as it was before or after the change, never half
written; a finished run (status ``done``, its report and outputs recorded) is
therefore never lost. A row is written before its folder is made and deleted
before its folder is removed, so a folder without a row is always debris of
an interrupted delete (or create), removed when the history is next opened.
Runs still ``queued`` or ``running`` when the server stopped are marked
``interrupted`` by :meth:`History.mark_interrupted` when it starts again.

Each run names the stored target picture it was made from (``target``, the
id of ``studio/targets/<id>.jpg|png``; a drawing again inherits its
source's): :meth:`History.targets_in_use` tells the studio which uploads a
run still needs (its command line names it, and an overlay drawn again
reads it). Rows written before that column existed are read from their
command line and report, which name the stored picture's path.

A history that cannot be read or written (a damaged database, a full or
read-only disk) raises :class:`HistoryError`: a fault of the server's side,
not of a request; a full disk, :class:`HistoryFullError` (answered 507, as
the package's servers answer any full disk).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from ..errors import MosaicistError
from ..library._manifest import is_out_of_space
from ..paths import expanded, identity_alive, process_identity
from ..web import plain_name
from ._worker import clear_folder

#: Statuses of a run; the last four are final.
STATUSES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
ACTIVE_STATUSES = ("queued", "running")
FINAL_STATUSES = ("done", "failed", "cancelled", "interrupted")
#: Kinds of output file a run may have (the keys of :attr:`Run.outputs`).
OUTPUT_KINDS = ("png", "jpeg", "tiff", "deepzoom_zip", "placements_csv", "placements_json",
                "report", "thumbnail", "viewer")
#: The sentence of a run cut off by a restart.
INTERRUPTED_MESSAGE = "The run was cut off when the studio stopped before it finished."
#: The sentence of a run whose record in the history is damaged (an unknown status).
DAMAGED_MESSAGE = "This run's record in the history is damaged."
#: Fields :meth:`History.update` may change.
UPDATABLE = ("status", "target_name", "tiles", "settings", "command", "report", "error",
             "outputs")
#: Seconds a connection waits for another writer (another thread or process).
BUSY_TIMEOUT_SECONDS = 30.0

_ID = re.compile(r"[0-9a-f]{32}")
#: A stored target's path as a command line or report names it (``.../targets/<id>.png``).
_TARGET_PATH = re.compile(r"targets[/\\]([0-9a-f]{32})\.(?:jpg|png)(?![0-9A-Za-z])")
# The owner locks this process holds, by lock file (a POSIX lock belongs to the
# process, and closing any descriptor of the file would release it: one each).
_OWNED: dict[str, int] = {}
_OWNED_GUARD = threading.Lock()


def _forget_owned() -> None:
    # A forked child holds none of its parent's locks.
    _OWNED.clear()


os.register_at_fork(after_in_child=_forget_owned)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    status TEXT NOT NULL,
    target_name TEXT NOT NULL,
    tiles TEXT NOT NULL,
    settings TEXT NOT NULL,
    command TEXT NOT NULL,
    report TEXT,
    error TEXT,
    outputs TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_created ON runs(created);
"""
#: Columns added since the first schema, with their SQL types (added when missing).
_ADDED_COLUMNS = {"target": "TEXT", "maker": "TEXT"}
_COLUMNS = ("id", "created", "status", "target_name", "tiles", "settings", "command", "report",
            "error", "outputs", "target", "maker")


class HistoryError(MosaicistError):
    """The history cannot be read or written: a fault of the server's side, not the request's."""

    #: What the package's apps answer it with (see :mod:`mosaicist.web._errors`).
    http_status = 503


class HistoryFullError(HistoryError):
    """The history cannot grow: the disk that holds it is full."""

    #: As the package's apps answer any full disk (see :mod:`mosaicist.web._errors`).
    http_status = 507


@dataclass(frozen=True)
class Run:
    """One run of the studio, as the history holds it.

    Attributes
    ----------
    id : str
        A uuid4 in hex (32 characters); also the job id of its make job.
    created : float
        When it was made (``time.time()``).
    status : str
        ``queued``, ``running``, ``done``, ``failed``, ``cancelled`` or ``interrupted``.
    target_name : str
        Display name of the target.
    tiles : str
        The tile source spec (``cifar10``, a folder...).
    settings : dict
        ``MosaicOptions.to_json()`` of the run.
    command : str
        The equivalent ``mosaicist`` command line.
    report : dict or None
        The make report (as ``mosaicist make --report`` writes it) once done.
    error : str or None
        One sentence saying why it failed (or was cut off).
    folder : pathlib.Path
        ``<cache>/studio/runs/<id>/``: its files.
    outputs : dict
        Kind (see :data:`OUTPUT_KINDS`) -> file name inside ``folder``.
    target : str or None
        The id of the stored target picture it was made from (None: not
        recorded, or not one of the studio's uploads).
    """

    id: str
    created: float
    status: str
    target_name: str
    tiles: str
    settings: dict[str, Any]
    command: str
    report: dict[str, Any] | None
    error: str | None
    folder: Path
    outputs: dict[str, str] = field(default_factory=dict)
    target: str | None = None

    @property
    def finished(self) -> bool:
        """Whether the run has a final status (it will not change by itself)."""
        return self.status in FINAL_STATUSES

    def output_path(self, kind: str) -> Path | None:
        """The file of output ``kind``, or None when the run has none of that kind.

        Only a plain file name inside :attr:`folder` counts: a name the
        history holds that leads elsewhere (an absolute path, ``..``) is
        none, so that nothing outside the run's folder is read or served.
        """
        name = self.outputs.get(kind)
        return self.folder / name if _plain_name(name) else None

    def to_json(self) -> dict[str, Any]:
        """The run as a JSON-ready dictionary (``folder`` as a string)."""
        return {"id": self.id, "created": self.created, "status": self.status,
                "target_name": self.target_name, "tiles": self.tiles,
                "settings": self.settings, "command": self.command, "report": self.report,
                "error": self.error, "folder": str(self.folder), "outputs": dict(self.outputs),
                "target": self.target}


class History:
    """The runs of the studio, kept in SQLite under ``<cache_dir>/studio/``.

    Safe to use from several threads and processes at once: each call opens
    its own connection, and each change is one transaction.

    Parameters
    ----------
    cache_dir : path-like
        The cache folder (``--cache-dir``); the history lives in its
        ``studio`` subfolder, created when missing.

    Raises
    ------
    HistoryError
        When the history database cannot be opened or is not one.
    """

    def __init__(self, cache_dir: str | Path) -> None:
        self.root = expanded(cache_dir).absolute() / "studio"
        self.runs_folder = self.root / "runs"
        self.database = self.root / "history.sqlite"
        self._lock = threading.Lock()
        try:
            self.runs_folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise HistoryError(f"{self.root}: cannot create the studio's folder: "
                                 f"{error.strerror or error}") from None
        with self._connect() as connection:
            # WAL: readers never wait for the writer; FULL: a committed change
            # survives a power cut, not only a crash of the process.
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(_SCHEMA)
            self._add_columns(connection)
        self._remove_orphans()

    # -- reading ----------------------------------------------------------------------

    def get(self, run_id: str) -> Run | None:
        """Return the run ``run_id``, or None when there is none (or the id is malformed)."""
        if not isinstance(run_id, str) or not _ID.fullmatch(run_id):
            return None
        with self._connect() as connection:
            self._interrupt_orphans(connection)
            row = connection.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM runs WHERE id = ?", (run_id,)).fetchone()
        return None if row is None else self._run(row)

    def runs(self) -> list[Run]:
        """Every run, newest first."""
        with self._connect() as connection:
            self._interrupt_orphans(connection)
            rows = connection.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM runs ORDER BY created DESC, rowid DESC"
            ).fetchall()
        # A row whose id is not one (a damaged history) names no folder of its own.
        return [self._run(row) for row in rows if isinstance(row[0], str) and _ID.fullmatch(row[0])]

    def targets_in_use(self) -> set[str]:
        """The ids of the stored targets that runs of the history were made from.

        Every run counts, whatever its status: its command line names the
        picture, and a run drawn again with an overlay reads it. A row
        without a recorded target (written before the column existed) is
        read from the paths its command line and report name.

        Returns
        -------
        set of str

        Raises
        ------
        HistoryError
            When the history cannot be read.
        """
        with self._connect() as connection:
            rows = connection.execute("SELECT target, command, report FROM runs").fetchall()
        found: set[str] = set()
        for target, command, report in rows:
            if isinstance(target, str) and _ID.fullmatch(target):
                found.add(target)
                continue
            for text in (command, report):
                if isinstance(text, str):
                    found.update(_TARGET_PATH.findall(text))
        return found

    def folder(self, run_id: str) -> Path:
        """The folder of run ``run_id`` (whether or not it exists)."""
        if not _ID.fullmatch(run_id):
            raise MosaicistError(f"{run_id!r} is not a run id")
        return self.runs_folder / run_id

    # -- changing ---------------------------------------------------------------------

    def create(self, *, target_name: str, tiles: str, settings: dict[str, Any],
               command: str, target: str | None = None) -> Run:
        """Record a new run, ``queued``, and make its empty folder.

        Parameters
        ----------
        target_name : str
            Display name of the target.
        tiles : str
            The tile source spec.
        settings : dict
            ``MosaicOptions.to_json()`` of the run.
        command : str
            The equivalent command line.
        target : str, optional
            The id of the stored target picture it is made from.

        Returns
        -------
        Run
            The new run.
        """
        if target is not None and not _ID.fullmatch(target):
            raise ValueError(f"{target!r} is not a stored target's id")
        run_id = uuid.uuid4().hex
        # The studio that makes it: another on the same cache tells whether it still can.
        values = (run_id, time.time(), "queued", str(target_name), str(tiles),
                  _dump(settings), str(command), None, None, _dump({}), target,
                  process_identity())
        with self._connect() as connection, _transaction(connection):
            connection.execute(
                f"INSERT INTO runs({', '.join(_COLUMNS)}) VALUES "
                f"({', '.join('?' * len(_COLUMNS))})", values)
        # After the row: a folder without a row is debris (see _remove_orphans).
        self.folder(run_id).mkdir(parents=True, exist_ok=True)
        run = self.get(run_id)
        assert run is not None
        return run

    def update(self, run_id: str, **fields: Any) -> Run:
        """Change fields of run ``run_id`` in one transaction; return the run as it is now.

        Parameters
        ----------
        run_id : str
            The run.
        **fields
            Any of ``status``, ``target_name``, ``tiles``, ``settings``,
            ``command``, ``report``, ``error`` and ``outputs``.

        Raises
        ------
        KeyError
            When there is no such run.
        ValueError
            For a field that cannot be changed or a status that is not one.
        """
        run = self.transition(run_id, None, **fields)
        if run is None:
            raise KeyError(run_id)
        return run

    def transition(self, run_id: str, expected: tuple[str, ...] | None, **fields: Any
                   ) -> Run | None:
        """Change fields of a run only while its status is one of ``expected``.

        The check and the change are one transaction, so that a run's final
        status is written once: a job that ends as it is cancelled cannot
        turn a ``cancelled`` run back into ``done``.

        Parameters
        ----------
        run_id : str
            The run.
        expected : tuple of str, or None
            The statuses the run may be in (None: any).
        **fields
            As for :meth:`update`.

        Returns
        -------
        Run or None
            The run after the change; None when there is no such run or its
            status was not expected (nothing changed then).
        """
        unknown = set(fields) - set(UPDATABLE)
        if unknown:
            raise ValueError(f"run fields that cannot be changed: {', '.join(sorted(unknown))}")
        if "status" in fields and fields["status"] not in STATUSES:
            raise ValueError(f"unknown run status {fields['status']!r}")
        if not isinstance(run_id, str) or not _ID.fullmatch(run_id):
            return None
        values = {name: _dump(value) if name in ("settings", "report", "outputs") else value
                  for name, value in fields.items()}
        with self._connect() as connection, _transaction(connection):
            row = connection.execute("SELECT status FROM runs WHERE id = ?",
                                     (run_id,)).fetchone()
            if row is None or (expected is not None and row[0] not in expected):
                return None
            if values:
                assignments = ", ".join(f"{name} = ?" for name in values)
                connection.execute(f"UPDATE runs SET {assignments} WHERE id = ?",
                                   (*values.values(), run_id))
        return self.get(run_id)

    def delete(self, run_id: str) -> bool:
        """Delete run ``run_id``: its row, then its folder.

        Returns
        -------
        bool
            Whether there was such a run.

        Raises
        ------
        MosaicistError
            When the run is still queued or running (cancel it first).
        """
        if not isinstance(run_id, str) or not _ID.fullmatch(run_id):
            return False
        with self._connect() as connection, _transaction(connection):
            row = connection.execute("SELECT status FROM runs WHERE id = ?",
                                     (run_id,)).fetchone()
            if row is None:
                return False
            if row[0] in ACTIVE_STATUSES:
                raise MosaicistError(f"run {run_id} is {row[0]}; cancel it before deleting it")
            connection.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        shutil.rmtree(self.folder(run_id), ignore_errors=True)
        return True

    def mark_interrupted(self) -> int:
        """Mark the runs left ``queued`` or ``running`` as ``interrupted``; return how many.

        Called when the studio starts: no job of an earlier server survives
        it. Their folders are emptied, as a cancelled run's are: an
        interrupted run lists no output, so none it finished before the
        studio ended (a PNG written before the Deep Zoom pyramid) may stay
        there unreachable, nor any temporary file a writer left. The
        calling process becomes the history's owner (a lock it holds until
        it ends): while another studio on the same cache folder owns it,
        the runs are that studio's, nothing is marked and 0 is returned.
        """
        if not self._own():
            return 0
        return self._interrupt(lambda maker: maker is None or maker == process_identity()
                               or not identity_alive(maker))

    def _interrupt(self, cut: Callable[[str | None], bool],
                   connection: sqlite3.Connection | None = None) -> int:
        """Mark the queued and running runs whose maker ``cut`` says ended; return how many.

        On ``connection`` where given (a reader's own: a second one cost 0.7 ms a look).
        """
        with (contextlib.nullcontext(connection) if connection is not None
              else self._connect()) as connection:
            rows = [(run_id, maker if isinstance(maker, str) else None)
                    for run_id, maker in connection.execute(
                        "SELECT id, maker FROM runs WHERE status IN ('queued', 'running')")]
            said: dict[str | None, bool] = {}  # a studio's many runs: asked once
            for _, maker in rows:
                if maker not in said:
                    said[maker] = cut(maker)
            ids = [run_id for run_id, maker in rows if said[maker]]
            if not ids:
                return 0  # read only: a studio's every look at a run passes here
            with _transaction(connection):
                connection.executemany(
                    "UPDATE runs SET status = 'interrupted', error = ? "
                    "WHERE id = ? AND status IN ('queued', 'running')",
                    [(INTERRUPTED_MESSAGE, run_id) for run_id in ids])
        for run_id in ids:
            if isinstance(run_id, str) and _ID.fullmatch(run_id):
                clear_folder(self.folder(run_id))
        return len(ids)

    def _interrupt_orphans(self, connection: sqlite3.Connection) -> None:
        """Mark the runs of another studio that ended without finishing them (on ``connection``).

        Its jobs died with it (a ``kill -9``), and a studio marks runs only
        as it starts, and only as the history's owner: run by a second
        studio on the same cache, they stayed ``running`` for good, where
        neither cancelling nor deleting could reach them.
        """
        me = process_identity()
        self._interrupt(lambda maker: maker is not None and maker != me
                        and not identity_alive(maker), connection)

    # -- plumbing ---------------------------------------------------------------------

    def _own(self) -> bool:
        """Take the owner's lock (``studio/owner.lock``) unless another process holds it."""
        path = str(self.root / "owner.lock")
        with _OWNED_GUARD:
            if path in _OWNED:
                return True  # this process owns it already
            try:
                descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as error:
                raise HistoryError(f"{path}: cannot open the studio's lock: "
                                     f"{error.strerror or error}") from None
            try:
                fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(descriptor)
                return False
            # Kept open for the life of the process: the kernel releases the lock then.
            _OWNED[path] = descriptor
            return True

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            connection = sqlite3.connect(self.database, timeout=BUSY_TIMEOUT_SECONDS,
                                         isolation_level=None, check_same_thread=False)
        except sqlite3.Error as error:
            raise HistoryError(f"{self.database}: cannot open the studio's history: "
                                 f"{error}") from None
        try:
            connection.execute("PRAGMA synchronous=FULL")
            yield connection
        except sqlite3.DatabaseError as error:
            # SQLITE_FULL, and the "disk I/O error" of a -shm file that cannot grow (on
            # a read too): said as a full disk, not as a history that cannot be used.
            if is_out_of_space(error, self.root):
                raise HistoryFullError(f"{self.database}: the disk is full: the studio's "
                                       f"history cannot grow") from None
            raise HistoryError(f"{self.database}: the studio's history cannot be used: "
                                 f"{error}") from None
        finally:
            connection.close()

    @staticmethod
    def _add_columns(connection: sqlite3.Connection) -> None:
        """Add the columns a history made by an earlier version lacks (one transaction)."""
        with _transaction(connection):
            present = {row[1] for row in connection.execute("PRAGMA table_info(runs)")}
            for name, kind in _ADDED_COLUMNS.items():
                if name not in present:
                    connection.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")

    def _run(self, row: tuple) -> Run:
        """A row as a run; a damaged field reads as empty, never as an error.

        The history is a file on the user's disk: a row changed by hand or
        by another version must not take the whole history down with it
        (it was a 500 for every listing). Its outputs keep only the known
        kinds with plain file names, so none leads outside its folder.
        """
        values = dict(zip(_COLUMNS, row, strict=True))
        status = values["status"]
        error = values["error"] if isinstance(values["error"], str) else None
        if status not in STATUSES:
            status, error = "failed", error or DAMAGED_MESSAGE
        try:
            created = float(values["created"])
        except (TypeError, ValueError):
            created = 0.0
        if not math.isfinite(created):
            created = 0.0
        outputs = _load(values["outputs"], dict) or {}
        return Run(
            id=values["id"], created=created, status=status,
            target_name=_text(values["target_name"]), tiles=_text(values["tiles"]),
            settings=_load(values["settings"], dict) or {}, command=_text(values["command"]),
            report=_load(values["report"], dict), error=error,
            folder=self.runs_folder / values["id"],
            outputs={kind: name for kind, name in outputs.items()
                     if kind in OUTPUT_KINDS and _plain_name(name)},
            target=values["target"] if isinstance(values["target"], str)
            and _ID.fullmatch(values["target"]) else None,
        )

    def _remove_orphans(self) -> None:
        """Remove run folders that have no row (an interrupted create or delete)."""
        with self._lock, self._connect() as connection:
            known = {row[0] for row in connection.execute("SELECT id FROM runs")}
        try:
            entries = list(self.runs_folder.iterdir())
        except OSError:
            return
        for entry in entries:
            if _ID.fullmatch(entry.name) and entry.name not in known and entry.is_dir():
                # A create in another process may be between its row and its folder;
                # a folder made in the last minute is left for the next opening.
                with contextlib.suppress(OSError):
                    if time.time() - entry.stat().st_mtime > 60:
                        shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """One immediate transaction: the writer lock is taken first, so checks hold.

    A statement or ``COMMIT`` that fails is rolled back where SQLite has not
    rolled the transaction back itself (it may on ``SQLITE_FULL`` and
    ``SQLITE_IOERR``): a ``ROLLBACK`` then failed with "cannot rollback - no
    transaction is active", and that error hid the one that said why.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
        raise


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, allow_nan=False)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _load(text: object, kind: type) -> Any:
    """A JSON column of type ``kind``; None when it is missing, damaged or of another type.

    NaN and infinity are refused as damage too: no answer of the studio could hold them.
    """
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, kind) else None


def _text(value: object) -> str:
    """A text column, or ``""`` when it holds something else."""
    return value if isinstance(value, str) else ""


def _plain_name(name: object) -> TypeGuard[str]:
    """Whether ``name`` is a text and one ordinary file name (:func:`~mosaicist.web.plain_name`)."""
    return isinstance(name, str) and plain_name(name, hidden=True)


