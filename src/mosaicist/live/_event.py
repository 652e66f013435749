"""One event's wall: its folder, its state in SQLite, its photos, and what changes them.

An event lives in one folder (``--event DIR``)::

    DIR/event.sqlite    the state: settings, tokens, flags, every photo and its cell, the
                        placer's last forecast (prices and random generator), and the
                        last uploads' senders and digests (retries are known) (WAL)
    DIR/event.lock      held while a server runs on the folder (one at a time)
    DIR/target.png      the target cut to the wall's shape, at the tiles' size
    DIR/photos/ID.jpg   each photo as received: upright, at most 2048 px, no metadata (its
                        ICC colour profile applied first, under ``colour_profiles=convert``)
    DIR/tiles/ID-CELL.jpg  each placed photo's tile as shown: cut, sized, tinted for its cell
    DIR/exports/        the exported walls and print sheets

``photos/``, ``tiles/`` and ``exports/`` must be real folders: opening an
event deletes what in them is not its own, so a link (to the user's own
pictures) is refused, never followed.

**Nothing acknowledged is lost.** A photo is checked and decoded first
(:func:`mosaicist.studio._uploads.decode_upload`: size, type by content,
pixel limit, whole decode), stored under a generated name and flushed to
disk (file and folder), and only then recorded, with its cell, in one
SQLite transaction (``synchronous=FULL``); the guest's answer is sent after
that commit. Whatever is on disk without a committed row (a crash in
between) was never acknowledged and is removed at the next start; a placed
photo whose tile file is missing gets it drawn again. Starting again on the
same folder therefore resumes exactly: the same photos in the same cells,
the same wall version, the same tokens.

**Changes** (a photo placed, moved, removed) happen under one lock, in the
order their wall versions say, and each is announced to the listeners
(:meth:`Event.listen`: the server's event stream) after its commit. The
placement rule is :mod:`._placer`'s; a background thread recomputes its
prices and, unless the wall is ``final``, re-optimises the arrangement when
uploads pause (see :class:`Planner`). What takes long is done without the
lock, between a copy of what it needs and a commit that checks the wall
again: the moved photos' tiles (moves made stale by a change meanwhile are
dropped) and the completion of the empty cells (a cell taken meanwhile keeps
its photo), so that guests' uploads and the wall's pages never wait on them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import secrets
import shutil
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..aspect import height_for
from ..crop import Window
from ..errors import MosaicistError, OptionError, counted
from ..imaging import (
    _DECODE_ERRORS,
    _PILLOW_LIMIT,
    avif_readable,
    heif_or_avif,
    make_tile,
    missing_reader,
    read_target,
    thumbnail,
)
from ..library._manifest import is_out_of_space
from ..options import MosaicOptions
from ..paths import atomic_path, expanded, locks_refused
from ..render import dress_tiles
from ..studio._uploads import ACCEPTED_FORMATS, decode_upload, display_name
from ._extras import heif_formats, looks_heif, needs_live
from ._placer import Placer, Vectors, WallCosts, picture_vectors, tint_shift

# HEIC photos from iPhones (the live extra): the opener is registered now where pillow-heif
# is installed, so that Pillow can also write HEIF (tests make their photos so).
heif_formats()

#: Version of the folder's layout and schema.
SCHEMA_VERSION = 1
#: Largest photo file accepted, in bytes (a 48-megapixel phone photo is 10 to 25 MB).
MAX_PHOTO_BYTES = 40 * 2**20
#: Most pixels a photo may declare (phones take up to 48 megapixels; bombs are refused
#: from the header).
MAX_PHOTO_PIXELS = 50_000_000
#: Smallest side of a photo, in pixels.
MIN_PHOTO_SIDE = 16
#: Longest side of a photo as stored (enough for a 17 cm print at 300 dpi).
STORED_SIDE = 2048
#: JPEG quality of stored photos and of shown tiles.
STORED_QUALITY = 90
#: Side of a tile in the wall picture kept for ``wall.jpg`` (the guest's zoom).
WALL_TILE_PX = 32
#: How much of the target shows in an empty cell of a picture of the wall (the rest white).
EMPTY_CELL_OPACITY = 0.3
#: Seconds without a change before a re-optimisation (not in final mode).
QUIET_SECONDS = 1.0
#: Longest pause between the planner's attempts while they keep failing (a full disk): the
#: pause doubles from one second up to it, and a change of the wall ends it early.
RETRY_MAX_SECONDS = 30.0
#: A planning failure that goes on, for the same reason, is said again at most this often.
FAILURE_REPEAT_SECONDS = 600.0
#: Completion by repetition keeps a photo's repeats this far (Chebyshev cells) from its place
#: and from each other.
REPEAT_SPACING = 3
#: Candidate photos per empty cell when completing.
COMPLETION_CANDIDATES = 32
#: Most cell-photo pairs listed when a completion from the library needs longer lists, and
#: computed at once while listing (int64 each: 16M is 128 MB).
LIST_ENTRIES = 2**24
#: Library pictures decoded and drawn at once when completing.
FILL_BLOCK = 256
#: Settings of a new wall where the command's defaults do not suit an event: tiles large
#: enough for the display and exports, photos compared at 16 px (the detail that shows
#: from across a room), and a tint that makes the target read while guests still find
#: their own photo's colours.
LIVE_DEFAULTS: dict[str, Any] = {"tile_px": 64, "match_px": 16, "tint": 0.6}
#: The settings that make a wall's look; a resumed event keeps them. (``colour_profiles``:
#: the target and each photo are stored as it decoded them.)
WALL_SETTINGS = ("tile_px", "match_px", "aspect", "crop", "metric", "tint", "colour_profiles")
#: Largest grid side, and most cells.
MAX_GRID_SIDE = 1000
MAX_CELLS = 40_000
#: Most pixels of a wall at its tiles' size (its target is kept whole at that size: a
#: wall of 200 x 200 cells at 1,024 px took all the memory there was before a word).
MAX_WALL_PIXELS = 250_000_000
#: Statuses of a photo.
STATUSES = ("pending", "placed", "overflow", "rejected", "removed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS photos (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE,
    received REAL NOT NULL,
    origin TEXT NOT NULL,
    source TEXT,
    status TEXT NOT NULL,
    cell INTEGER,
    win_left INTEGER NOT NULL, win_top INTEGER NOT NULL,
    win_width INTEGER NOT NULL, win_height INTEGER NOT NULL,
    pixels BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS photos_cell ON photos(cell) WHERE cell IS NOT NULL;
CREATE TABLE IF NOT EXISTS forecast (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    sampled INTEGER NOT NULL,
    free INTEGER NOT NULL,
    rng TEXT NOT NULL,
    prices BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS uploads (
    client TEXT NOT NULL,
    digest BLOB NOT NULL,
    id TEXT NOT NULL,
    received REAL NOT NULL,
    PRIMARY KEY (client, digest)
);
"""
#: Seconds an upload's (client, digest) is kept in the database: a retry of it within this
#: is its first upload, also after a restart (``mosaicist.live._app.RETRY_SECONDS``).
UPLOAD_MEMORY_SECONDS = 600.0


class NotFound(MosaicistError):
    """No such photo (or not one this request may see)."""


class Conflict(MosaicistError):
    """The request does not fit the wall's state (a photo already decided, a full wall...)."""


class Paused(MosaicistError):
    """Uploads are paused by the host."""


@dataclass(frozen=True)
class WallSettings:
    """What an event was made with; fixed for its whole life.

    Attributes
    ----------
    cols, rows : int
        The wall's grid.
    options : MosaicOptions
        ``tile_px``, ``match_px``, ``aspect``, ``crop``, ``metric``, ``tint``,
        ``colour_profiles`` and the output settings.
    target_name : str
        The target's file name (display only).
    target_digest : str
        BLAKE2b of the target file's bytes: the same target is asked for on resuming.
    """

    cols: int
    rows: int
    options: MosaicOptions
    target_name: str
    target_digest: str

    @property
    def cells(self) -> int:
        """Cells of the wall."""
        return self.cols * self.rows

    @property
    def tile_size(self) -> tuple[int, int]:
        """``(width, height)`` of a shown tile."""
        return self.options.tile_px, self.options.tile_height

    @property
    def match_size(self) -> tuple[int, int]:
        """``(width, height)`` of a photo as compared."""
        assert self.options.match_px is not None
        return self.options.match_px, self.options.match_height

    def to_json(self) -> dict[str, Any]:
        """The settings as stored in the event's database (read back by :meth:`from_json`)."""
        return {"cols": self.cols, "rows": self.rows, "settings": self.options.to_json(),
                "target_name": self.target_name, "target_digest": self.target_digest}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WallSettings:
        """Read settings written by :meth:`to_json`.

        Parameters
        ----------
        data : dict
            The stored object.

        Returns
        -------
        WallSettings
        """
        return cls(int(data["cols"]), int(data["rows"]), MosaicOptions.from_json(data["settings"]),
                   str(data["target_name"]), str(data["target_digest"]))


@dataclass
class Photo:
    """One photo of the event, as the server keeps it in memory (mirrors its row)."""

    id: str
    number: int
    seq: int
    received: float
    origin: str
    source: str | None
    status: str
    cell: int | None
    window: Window

    @property
    def picture_id(self) -> str:
        """Whose stored picture it shows (a repeat shows its source's)."""
        return self.source if self.origin == "repeat" and self.source else self.id


@dataclass
class Prepared:
    """An upload checked, decoded, cut and stored, not yet recorded."""

    id: str
    path: Path
    window: Window
    match: np.ndarray
    tile: np.ndarray
    vectors: Vectors = field(repr=False)


@dataclass
class _Fill:
    """A completion's fill of one empty cell, drawn without the lock, not yet recorded."""

    photo: Photo
    match: np.ndarray
    vectors: Vectors = field(repr=False)
    source: Photo | None = None
    #: Its tile at the size of a cell of the wall picture (drawn in at the commit).
    small: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 3), np.uint8),
                              repr=False)
    files: list[Path] = field(default_factory=list)


def _unlink_fills(fills: list[_Fill]) -> None:
    """Remove the files drawn for fills that will not be recorded."""
    for fill in fills:
        for path in fill.files:
            path.unlink(missing_ok=True)


def fade(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` shown at :data:`EMPTY_CELL_OPACITY` over white (in 8-bit integers)."""
    weight = round(EMPTY_CELL_OPACITY * 256)
    return ((pixels.astype(np.uint16) * weight + 255 * (256 - weight) + 128) >> 8).astype(
        np.uint8)


def parse_grid(text: str) -> tuple[int, int]:
    """``"COLSxROWS"`` as ``(cols, rows)``.

    Raises
    ------
    MosaicistError
        When it is not two whole numbers, a side is out of 1 to
        :data:`MAX_GRID_SIDE`, or the cells are more than :data:`MAX_CELLS`.
    """
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(part.isdigit() for part in parts):
        raise MosaicistError(f"the grid must be COLSxROWS, such as 40x30; got {text!r} (--grid)")
    cols, rows = int(parts[0]), int(parts[1])
    if not (1 <= cols <= MAX_GRID_SIDE and 1 <= rows <= MAX_GRID_SIDE):
        raise MosaicistError(f"a grid side must be between 1 and {MAX_GRID_SIDE:,} cells, "
                             f"got {text} (--grid)")
    if cols * rows > MAX_CELLS:
        raise MosaicistError(f"a {text} grid has {cols * rows:,} cells, more than the "
                             f"{MAX_CELLS:,} a live wall takes (--grid)")
    return cols, rows


def photo_formats() -> tuple[str, ...]:
    """Photo formats accepted, by content.

    HEIF (HEIC) only with pillow-heif, the live extra; AVIF where Pillow
    reads it (built with it, 11.3 or later, or pillow-avif-plugin).
    """
    return ACCEPTED_FORMATS + heif_formats() + (("AVIF",) if avif_readable() else ())


def new_id() -> str:
    """A photo id: 128 random bits as hex (unguessable; file names are made from it)."""
    return secrets.token_hex(16)


def is_photo_id(value: str) -> bool:
    """Whether ``value`` has the form of a photo id (so it may name a file)."""
    return len(value) == 32 and all(char in "0123456789abcdef" for char in value)


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _save_jpeg(pixels: np.ndarray, path: Path, quality: int, *, durable: bool = False) -> None:
    """Write ``pixels`` as a new JPEG (no metadata at all) under ``path``, atomically."""
    # No sweep of dead writers' temporaries before each file: that scanned the whole folder
    # (up to 40,000 tiles) for every tile written, under the event's lock for an upload, and
    # a completion of thousands of cells took a quarter of its time doing so. Opening the
    # event removes whatever in photos/ and tiles/ is not its own, and no one else writes
    # there while it is open (event.lock).
    with atomic_path(path, durable=durable, sweep=False) as temporary:
        Image.fromarray(np.ascontiguousarray(pixels), "RGB").save(
            temporary, "JPEG", quality=quality)


def _read_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image.convert("RGB")


#: What a new event's folder holds before its settings are committed (a run killed while
#: making it): making it again may go on over these.
_MAKING = frozenset({"event.lock", "event.sqlite", "event.sqlite-wal", "event.sqlite-shm",
                     "event.sqlite-journal", "target.png"})


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing: list[Path] = []
    path = folder.absolute()
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _unmake(folders: list[Path]) -> None:
    """Remove the folders of a failed start that made them, and what it put in them.

    Only the names a start makes (:data:`_MAKING`, the empty state folders)
    are removed, and a folder only when that leaves it empty: anything else
    that came into it stays.
    """
    for folder in folders:
        for name in _MAKING:
            with contextlib.suppress(OSError):
                (folder / name).unlink()
        for path in (folder / "photos", folder / "tiles", folder / "exports", folder):
            with contextlib.suppress(OSError):
                path.rmdir()


def _check_new_folder(folder: Path, own: frozenset[str] = frozenset({"event.lock"})) -> None:
    """Refuse to make a new event in a folder that holds anything but hidden files.

    An event owns its folder: opening it deletes whatever in ``photos/``,
    ``tiles/`` and ``exports/`` is not its own, so a folder of the user's
    files (``--event .`` beside the tiles' folder ``photos``) must never
    become one. Names in ``own`` are allowed besides.
    """
    try:
        found = sorted(path.name for path in folder.iterdir()
                       if path.name not in own
                       and not (path.name.startswith(".") and path.is_file()))
    except OSError as error:
        raise MosaicistError(f"{folder}: cannot read the event folder "
                             f"({error.strerror or error})") from None
    if found:
        shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        raise MosaicistError(f"{folder}: is not an event folder and is not empty ({shown}); "
                             "give a new or empty folder with --event")


def _check_damaged(folder: Path) -> None:
    """Refuse a folder whose event.sqlite holds no event beside an event's files."""
    try:
        _check_new_folder(folder, _MAKING)
    except MosaicistError:
        raise MosaicistError(
            f"{folder}: the event's state (event.sqlite) is empty or damaged, but the folder "
            "holds an event's files; restore event.sqlite from a backup, or give a new "
            "--event folder") from None


def _own_folder(path: Path) -> None:
    """Make one of the event's state folders, or refuse one that is not a real folder.

    Opening an event deletes what in ``photos/``, ``tiles/`` and ``exports/``
    is not its own: through a symbolic link (to ``~/Pictures``, say, or to a
    folder on another disk) that would delete the user's files outside the
    event folder, so a link is refused, never followed.
    """
    if path.is_symlink():
        raise MosaicistError(f"{path}: is a symbolic link; the event's photos, tiles and "
                             "exports folders must be real folders inside the event folder "
                             "(the wall deletes the files in them that are not its own)")
    if path.exists() and not path.is_dir():
        raise MosaicistError(f"{path}: is not a folder; the event needs a folder there")
    try:
        path.mkdir(exist_ok=True)
    except OSError as error:
        raise MosaicistError(f"{path}: cannot make the event's folder "
                             f"({error.strerror or error})") from None


def _lock_folder(folder: Path) -> int:
    """The open ``event.lock``, locked: one wall per event folder.

    Unlike the cache's build locks, the wall cannot go on without it: two
    walls on one folder would delete each other's photos. A file system
    that refuses locks (some network ones) is said to be the cause, not
    another wall.
    """
    path = folder / "event.lock"
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as error:
        raise MosaicistError(f"{path}: cannot open the event's lock file "
                             f"({error.strerror or error})") from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise MosaicistError(f"{folder}: another 'mosaicist live' runs on this event folder; "
                             "stop it first") from None
    except OSError as error:
        os.close(descriptor)
        if locks_refused(error):
            raise MosaicistError(
                f"{folder}: this file system refuses file locks, which the live wall needs "
                "to keep a second wall off its event folder; use a folder on a local "
                "disk") from None
        raise MosaicistError(f"{path}: cannot lock the event folder "
                             f"({error.strerror or error})") from None
    return descriptor


def cut_target(path: Path, cols: int, rows: int, options: MosaicOptions) -> np.ndarray:
    """The target centre-cut to the wall's shape and resized to ``cols x rows`` tiles.

    Read as ``make`` reads it: its ICC profile applied as ``colour_profiles`` says.
    """
    pixels = read_target(path, options.max_target_pixels,
                         colour_profiles=options.colour_profiles)
    tile_w, tile_h = options.tile_px, options.tile_height
    height, width = pixels.shape[:2]
    # The largest centred window of the wall's shape (cols * tile_w : rows * tile_h).
    scale = min(width / (cols * tile_w), height / (rows * tile_h))
    crop_w, crop_h = cols * tile_w * scale, rows * tile_h * scale
    left, top = (width - crop_w) / 2, (height - crop_h) / 2
    image = Image.fromarray(pixels, "RGB")
    wall = image.resize((cols * tile_w, rows * tile_h), Image.Resampling.LANCZOS,
                        box=(left, top, left + crop_w, top + crop_h), reducing_gap=3.0)
    return np.asarray(wall, np.uint8)


def _cells_of(picture: np.ndarray, cols: int, rows: int, width: int, height: int) -> np.ndarray:
    """A wall-shaped picture resized to ``width x height`` per cell, as ``(N, h, w, 3)`` cells."""
    image = Image.fromarray(picture, "RGB").resize((cols * width, rows * height),
                                                   Image.Resampling.LANCZOS, reducing_gap=3.0)
    array = np.asarray(image, np.uint8)
    return np.ascontiguousarray(
        array.reshape(rows, height, cols, width, 3).transpose(0, 2, 1, 3, 4)
        .reshape(rows * cols, height, width, 3))


class Event:
    """The wall of one event: open it with :meth:`open`, close it with :meth:`close`.

    Attributes
    ----------
    folder : pathlib.Path
        The event folder.
    settings : WallSettings
        Grid, target and settings.
    final : bool
        Placed photos never move.
    admin_token, page_token : str
        The host's secret (admin routes) and the pages' token (state-changing requests).
    """

    def __init__(self, folder: Path, settings: WallSettings, meta: dict[str, str],
                 lock_descriptor: int, connection: sqlite3.Connection, *, final: bool,
                 expected: int | None) -> None:
        self.folder = folder
        self.settings = settings
        self.final = final
        self._lock_descriptor = lock_descriptor
        self._db = connection
        self.admin_token = meta["admin_token"]
        self.page_token = meta["page_token"]
        self.version = int(meta.get("version", "0"))
        self.paused = meta.get("paused") == "1"
        self.moderation = meta.get("moderation") == "1"
        self.created = float(meta.get("created", "0"))
        self.lock = threading.RLock()
        self.export_lock = threading.Lock()
        # Held while the empty cells are completed (one completion at a time): the match
        # and the drawing run without :attr:`lock`, and no photo moves meanwhile.
        self._completion = threading.Lock()
        self.photos: dict[str, Photo] = {}
        self._by_number: dict[int, Photo] = {}
        self._listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self._seq = 0
        self.changed = threading.Condition(self.lock)
        self.changes = 0
        self.last_change = time.monotonic()
        self.photos_folder = folder / "photos"
        self.tiles_folder = folder / "tiles"
        self.exports_folder = folder / "exports"
        for made in (self.photos_folder, self.tiles_folder, self.exports_folder):
            _own_folder(made)
        options = settings.options
        # The event's own file, cut to the wall at the tiles' size: a large wall is over
        # Pillow's default bomb limit (150 x 150 tiles of 96 px: 207 million pixels).
        try:
            with _PILLOW_LIMIT.allowing(None), Image.open(folder / "target.png") as stored:
                self.target = np.asarray(stored.convert("RGB"), np.uint8)
        except (OSError, ValueError) as error:
            # Only damage from outside leaves it so (it is written atomically and durably):
            # say so in one sentence rather than with a traceback.
            raise MosaicistError(f"{folder}: the event's target picture cannot be read "
                                 f"({error}); restore target.png from a backup") from None
        match_w, match_h = settings.match_size
        cells = _cells_of(self.target, settings.cols, settings.rows, match_w, match_h)
        self.cell_vectors = picture_vectors(cells, options.metric)
        self.wall_costs = WallCosts(self.cell_vectors, options.tint)
        self.placer = Placer(self.wall_costs, final=final, expected=expected)
        wall_w = min(WALL_TILE_PX, options.tile_px)
        wall_h = height_for(wall_w, options.aspect_ratio)
        self.wall_tile = (wall_w, wall_h)
        small = Image.fromarray(self.target).resize(
            (settings.cols * wall_w, settings.rows * wall_h), Image.Resampling.BOX)
        self.wall_picture = fade(np.asarray(small, np.uint8))
        self._load()
        self.planner = Planner(self)

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, folder: str | os.PathLike[str], *, target: str | os.PathLike[str] | None = None,
             grid: tuple[int, int] | None = None, settings: dict[str, Any] | None = None,
             final: bool | None = None, expected: int | None = None,
             moderation: bool | None = None) -> Event:
        """Open the event in ``folder``, making it when new; resume it when not.

        Parameters
        ----------
        folder : path-like
            The event folder (made when missing).
        target : path-like, optional
            The target picture: required for a new event; on resuming, when
            given, it must be the one the event was made with.
        grid : (cols, rows), optional
            Required for a new event; on resuming, when given, must match.
        settings : dict, optional
            Settings given (:class:`~mosaicist.options.MosaicOptions` names):
            for a new event over :data:`LIVE_DEFAULTS`; on resuming, the
            wall's look (:data:`WALL_SETTINGS`) must stay as it was, and
            output settings replace the stored ones.
        final : bool, optional
            Never move placed photos (default: as stored, else False).
        expected : int, optional
            Photos expected in all, the placement's forecast horizon.
        moderation : bool, optional
            Turn moderation on or off (default: as stored, else off).

        Raises
        ------
        MosaicistError
            When the folder is in use, is not an event folder (a new event
            needs a new or empty one), its target or a placed photo's
            picture cannot be read, or the target, grid or settings given
            differ from the event's.
        """
        if settings:
            MosaicOptions(**(LIVE_DEFAULTS | settings))  # a bad value fails before any file
        folder = expanded(folder)
        made = _missing_folders(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            _unmake(made)  # the parents made before the failure
            raise MosaicistError(f"{folder}: cannot make the event folder "
                                 f"({error.strerror or error})") from None
        try:
            return cls._open(folder.resolve(), target=target, grid=grid, settings=settings,
                             final=final, expected=expected, moderation=moderation)
        except BaseException:
            # A start that fails (a misspelt --event when resuming, a target that cannot be
            # read) must not leave a folder behind that looks like an event being made.
            _unmake(made)
            raise

    @classmethod
    def _open(cls, folder: Path, *, target: str | os.PathLike[str] | None,
              grid: tuple[int, int] | None, settings: dict[str, Any] | None,
              final: bool | None, expected: int | None, moderation: bool | None) -> Event:
        """:meth:`open` once ``folder`` exists (resolved)."""
        if not (folder / "event.sqlite").exists():
            _check_new_folder(folder)
        descriptor = _lock_folder(folder)
        resuming = False
        try:
            connection = sqlite3.connect(folder / "event.sqlite", isolation_level=None,
                                         check_same_thread=False, timeout=30)
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=FULL")
                connection.executescript(_SCHEMA)
                meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
                given = dict(settings or {})
                if "settings" in meta:
                    resuming = True
                    wall = _resumed(folder, meta, target, grid, given)
                    changes: dict[str, str] = {}
                    if json.dumps(wall.to_json()) != meta["settings"]:
                        changes["settings"] = json.dumps(wall.to_json())
                else:
                    # An event.sqlite without settings: a run killed while making the
                    # event, or the state emptied by damage. Only the first may be made
                    # again: over the photos of the second, the new event deleted them all.
                    _check_damaged(folder)
                    wall = _made(folder, target, grid, MosaicOptions(**(LIVE_DEFAULTS | given)))
                    meta = {"schema": str(SCHEMA_VERSION), "settings": "",
                            "admin_token": secrets.token_urlsafe(24),
                            "page_token": secrets.token_urlsafe(32), "version": "0",
                            "paused": "0", "moderation": "0", "final": "0",
                            "created": repr(time.time())}
                    changes = dict(meta, settings=json.dumps(wall.to_json()))
                if final is not None:
                    changes["final"] = "1" if final else "0"
                if moderation is not None:
                    changes["moderation"] = "1" if moderation else "0"
                if expected is not None:
                    changes["expected"] = str(expected)
                with _transaction(connection, folder):
                    if changes:
                        connection.executemany(
                            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                            list(changes.items()))
                    # Retries are known for a while only: older uploads are forgotten.
                    connection.execute("DELETE FROM uploads WHERE received < ?",
                                       (time.time() - UPLOAD_MEMORY_SECONDS,))
                meta.update(changes)
                stored_expected = meta.get("expected")
                return cls(folder, wall, meta, descriptor, connection,
                           final=meta.get("final") == "1",
                           expected=int(stored_expected) if stored_expected else None)
            except BaseException:
                connection.close()
                raise
        except (sqlite3.DatabaseError, UnicodeDecodeError) as error:
            # SQLite's own message may be undecodable, when the damage is in its schema.
            os.close(descriptor)
            raise MosaicistError(f"{folder}: the event's state cannot be read ({error})") from None
        except MosaicistError:
            os.close(descriptor)
            raise
        except (LookupError, TypeError, ValueError) as error:
            os.close(descriptor)
            if not resuming:
                raise
            # Values SQLite keeps without a check (settings, a photo's pixels, its cell)
            # damaged: one sentence, not a traceback.
            raise MosaicistError(f"{folder}: the event's state is damaged "
                                 f"({type(error).__name__}: {error}); restore event.sqlite "
                                 "from a backup") from None
        except BaseException:
            os.close(descriptor)
            raise

    def _load(self) -> None:
        """Read every photo back, put the placed ones on the wall, tidy the folders."""
        rows = self._db.execute(
            "SELECT id, seq, received, origin, source, status, cell, win_left, win_top, "
            "win_width, win_height, pixels FROM photos ORDER BY seq").fetchall()
        match_w, match_h = self.settings.match_size
        for (photo_id, seq, received, origin, source, status, cell, left, top, width, height,
             pixels) in rows:
            vectors = picture_vectors(
                np.frombuffer(pixels, np.uint8).reshape(1, match_h, match_w, 3),
                self.settings.options.metric)
            number = self.placer.add(vectors, movable=origin == "guest",
                                     sample=origin == "guest" and status != "removed"
                                     and status != "rejected")
            photo = Photo(photo_id, number, seq, received, origin, source, status, cell,
                          Window(left, top, width, height))
            self.photos[photo_id] = photo
            self._by_number[photo.number] = photo
            self._seq = max(self._seq, seq)
            if status == "placed" and cell is not None:
                self.placer.put(number, cell)
        self._load_forecast()
        kept_pictures = {photo.id for photo in self.photos.values()
                         if photo.status in ("pending", "placed", "overflow")
                         and photo.origin != "repeat"}
        for path in self.photos_folder.iterdir():
            # The wall writes files only: a folder in there was put by someone else, and is
            # left as it is (unlinking it failed, and the event could not be opened).
            if (path.stem not in kept_pictures or path.name.startswith(".")) and not (
                    path.is_dir() and not path.is_symlink()):
                path.unlink(missing_ok=True)
        placed = {self._tile_name(photo) for photo in self.photos.values()
                  if photo.status == "placed"}
        present = set()
        for path in self.tiles_folder.iterdir():
            if path.name in placed:
                present.add(path.name)
            elif not (path.is_dir() and not path.is_symlink()):
                path.unlink(missing_ok=True)
        # The event's lock is this process's: a hidden export folder or file (a Deep Zoom
        # export's staging, a temporary) was left by a run that was killed.
        for path in self.exports_folder.iterdir():
            if path.name.startswith("."):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        for photo in self.photos.values():
            if photo.status != "placed":
                continue
            shown = None
            if self._tile_name(photo) in present:
                # Tiles are written without an fsync (they can be drawn again): after a
                # power cut one may be empty or cut short, and is then drawn again.
                with contextlib.suppress(OSError, ValueError):
                    shown = np.asarray(_read_rgb(self.tile_path(photo)), np.uint8)
            if shown is None:
                try:
                    shown = self._write_tile(photo, self._untinted(photo))
                except (OSError, ValueError) as error:
                    raise MosaicistError(
                        f"{self.folder}: the placed photo {photo.id} cannot be drawn: its "
                        f"stored picture cannot be read ({error})") from None
            self._paste(photo, shown)

    def _load_forecast(self) -> None:
        """Put back the placer's last prices, its stamp and its random generator.

        Without them a resumed wall placed the next photos with no prices (as
        greedy) until the planner priced again, then with other prices than
        the run that was stopped (another random sample): a ``--final`` wall
        came out differently for a restart.
        """
        row = self._db.execute(
            "SELECT sampled, free, rng, prices FROM forecast WHERE id = 0").fetchone()
        if row is None:
            return
        sampled, free, rng, prices = row
        # Derived data only: when it does not fit, the planner prices again from the photos.
        with contextlib.suppress(TypeError, ValueError, KeyError):
            self.placer.restore_forecast((sampled, free), json.loads(rng),
                                         np.frombuffer(prices, "<i8"))

    def save_forecast(self) -> None:
        """Store the placer's prices, stamp and random generator with the event (under the lock).

        Called by the planner after it installs new prices, so that a
        resumed event places photos as if it had never stopped.
        """
        (sampled, free), rng, prices = self.placer.forecast_state()
        with _transaction(self._db, self.folder):
            self._db.execute(
                "INSERT OR REPLACE INTO forecast (id, sampled, free, rng, prices) "
                "VALUES (0, ?, ?, ?, ?)", (sampled, free, json.dumps(rng),
                                           np.ascontiguousarray(prices, "<i8").tobytes()))

    # -- lifetime ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background planner (prices, re-optimisation)."""
        self.planner.start()

    def close(self) -> None:
        """Stop the planner, close the database, release the folder (safe to call twice)."""
        self.planner.stop()
        with self.lock:
            if self._lock_descriptor < 0:
                return
            self._db.close()
            os.close(self._lock_descriptor)
            self._lock_descriptor = -1

    def listen(self, listener: Callable[[str, dict[str, Any]], None]) -> None:
        """Call ``listener(kind, data)`` after each change (under the event's lock).

        Parameters
        ----------
        listener : callable
            Called with the kind of change (``"tile"``, ``"moved"``,
            ``"removed"``, ``"state"``) and what changed; it runs under the
            lock, so every upload waits for it: it should be quick.
        """
        self._listeners.append(listener)

    def _announce(self, kind: str, data: dict[str, Any]) -> None:
        for listener in self._listeners:
            listener(kind, data)

    # -- pictures ------------------------------------------------------------------------

    def empty_cell(self, cell: int) -> np.ndarray:
        """What an empty cell shows at the tiles' size: its part of the target, faded.

        Parameters
        ----------
        cell : int
            The cell, row-major from 0.

        Returns
        -------
        numpy.ndarray
            ``(tile height, tile width, 3)`` uint8.
        """
        tile_w, tile_h = self.settings.tile_size
        row, col = divmod(cell, self.settings.cols)
        return fade(self.target[row * tile_h:(row + 1) * tile_h, col * tile_w:(col + 1) * tile_w])

    def _tile_name(self, photo: Photo) -> str:
        return f"{photo.id}-{photo.cell}.jpg"

    def tile_path(self, photo: Photo) -> Path:
        """The file of a placed photo's tile as shown.

        Parameters
        ----------
        photo : Photo
            A placed photo (its cell is part of the name).

        Returns
        -------
        pathlib.Path
        """
        return self.tiles_folder / self._tile_name(photo)

    def picture_path(self, photo: Photo) -> Path:
        """The stored picture a photo shows.

        Parameters
        ----------
        photo : Photo
            Any photo; a repeat shows its source's picture.

        Returns
        -------
        pathlib.Path
        """
        return self.photos_folder / f"{photo.picture_id}.jpg"

    def _untinted(self, photo: Photo, shown_by: Photo | None = None) -> np.ndarray:
        """A photo's tile at the shown size, before its tint.

        With ``shown_by`` (the placed photo that shows the same picture: the
        photo itself when it moves, its original for a repeat), a stored
        picture that can no longer be read (damaged on disk, removed by
        hand) gives way to what the wall shows of it, so that a move, an
        approval or a repeat never fails on it again and again; without,
        or when nothing shows it, that is an error.
        """
        options = self.settings.options
        try:
            picture = _read_rgb(self.picture_path(photo))
        except _DECODE_ERRORS as error:
            if shown_by is None or shown_by.status != "placed" or shown_by.cell is None:
                if shown_by is None:
                    raise
                raise Conflict("this photo's stored picture can no longer be read; "
                               "reject or delete it") from error
            return self.shown_tile(shown_by)
        return thumbnail(picture, options.tile_px, options.aspect_ratio, photo.window)

    def shown_tile(self, photo: Photo) -> np.ndarray:
        """A placed photo as the wall shows it, at the tiles' size.

        Its tile file, or else (a file damaged or removed by hand) its cell of
        the wall picture, enlarged.

        Parameters
        ----------
        photo : Photo
            A placed photo.

        Returns
        -------
        numpy.ndarray
            ``(tile height, tile width, 3)`` uint8.
        """
        with contextlib.suppress(*_DECODE_ERRORS):
            shown = np.asarray(_read_rgb(self.tile_path(photo)), np.uint8)
            if shown.shape[:2] == self.settings.tile_size[::-1]:
                return shown
        assert photo.cell is not None
        wall_w, wall_h = self.wall_tile
        row, col = divmod(photo.cell, self.settings.cols)
        small = self.wall_picture[row * wall_h:(row + 1) * wall_h, col * wall_w:(col + 1) * wall_w]
        return np.asarray(Image.fromarray(small).resize(self.settings.tile_size,
                                                        Image.Resampling.LANCZOS), np.uint8)

    def shift(self, photo: Photo, cell: int) -> np.ndarray:
        """The tint shift of ``photo`` in ``cell`` (see :func:`._placer.tint_shift`).

        Parameters
        ----------
        photo : Photo
            The photo shown.
        cell : int
            The cell it shows in, row-major from 0.

        Returns
        -------
        numpy.ndarray
            The shift of each channel.
        """
        return self._shift(self.placer.vectors([photo.number]).mean[0], cell)

    def _shift(self, mean: np.ndarray, cell: int) -> np.ndarray:
        """The tint shift in ``cell`` of a photo of mean colour ``mean``."""
        options = self.settings.options
        return tint_shift(mean, self.cell_vectors.mean[cell], options.tint, options.metric)

    def tinted(self, photo: Photo, cell: int, pixels: np.ndarray) -> np.ndarray:
        """``pixels`` of ``photo`` tinted as it shows in ``cell``.

        Parameters
        ----------
        photo : Photo
            The photo shown.
        cell : int
            The cell it shows in, row-major from 0.
        pixels : numpy.ndarray
            ``(height, width, 3)`` uint8 of the photo, untinted.

        Returns
        -------
        numpy.ndarray
            The same shape, tinted.
        """
        return self._tinted(self.placer.vectors([photo.number]).mean[0], cell, pixels)

    def _tinted(self, mean: np.ndarray, cell: int, pixels: np.ndarray) -> np.ndarray:
        """:meth:`tinted` for a photo of mean colour ``mean`` (one without a number yet)."""
        return dress_tiles(pixels[None], tint=self._shift(mean, cell)[None],
                           metric=self.settings.options.metric)[0]

    def _write_tile(self, photo: Photo, untinted: np.ndarray) -> np.ndarray:
        assert photo.cell is not None
        shown = self.tinted(photo, photo.cell, untinted)
        _save_jpeg(shown, self.tile_path(photo), STORED_QUALITY)
        return shown

    def _paste(self, photo: Photo, shown: np.ndarray | None = None) -> None:
        """Draw a placed photo into the wall picture (from its tile file when not given)."""
        assert photo.cell is not None
        if shown is None:
            shown = np.asarray(_read_rgb(self.tile_path(photo)), np.uint8)
        self._put_small(photo.cell, self._small(shown))

    def _small(self, shown: np.ndarray) -> np.ndarray:
        """A tile as shown, at the size of a cell of the wall picture."""
        return np.asarray(Image.fromarray(shown).resize(self.wall_tile, Image.Resampling.BOX),
                          np.uint8)

    def _put_small(self, cell: int, small: np.ndarray) -> None:
        """Draw :meth:`_small`'s tile into ``cell`` of the wall picture."""
        wall_w, wall_h = self.wall_tile
        row, col = divmod(cell, self.settings.cols)
        self.wall_picture[row * wall_h:(row + 1) * wall_h, col * wall_w:(col + 1) * wall_w] = small

    def _clear(self, cell: int) -> None:
        wall_w, wall_h = self.wall_tile
        tile_w, tile_h = self.settings.tile_size
        row, col = divmod(cell, self.settings.cols)
        small = np.asarray(Image.fromarray(self.empty_cell(cell)).resize(
            (wall_w, wall_h), Image.Resampling.BOX))
        self.wall_picture[row * wall_h:(row + 1) * wall_h, col * wall_w:(col + 1) * wall_w] = small

    # -- receiving -----------------------------------------------------------------------

    def prepare(self, data: bytes, filename: str) -> Prepared:
        """Check and decode an upload, cut its tile, and store it durably (no lock, no record).

        The slow part of receiving, done outside the lock so that other
        guests' uploads go on meanwhile; :meth:`receive` records it, or
        :meth:`discard` removes it.

        Parameters
        ----------
        data : bytes
            The file as uploaded.
        filename : str
            The name the phone gave it, for messages.

        Returns
        -------
        Prepared

        Raises
        ------
        MosaicistError
            One sentence naming the file: too large, empty, not a photo of an
            accepted format (a HEIC photo without the live extra: the command
            that installs it), over the pixel limit, truncated, too small.
        """
        name = display_name(filename) if filename else "photo"
        formats = photo_formats()
        if "HEIF" not in formats and len(data) <= MAX_PHOTO_BYTES and looks_heif(data):
            # Else it would be "not a picture in a format the wall accepts": true, but it
            # hides that the host can fix it.
            raise MosaicistError(f"{name}: {needs_live('a HEIC photo')}")
        if "AVIF" not in formats and heif_or_avif(data[:64]) == "AVIF":
            # Phones send AVIF more and more: say it cannot be read here, and what would.
            raise MosaicistError(f"{name}: an AVIF photo cannot be read here: "
                                 f"{missing_reader('.avif') or 'Pillow reads no AVIF'}")
        options = self.settings.options
        # A phone's photo in Display P3 converted to sRGB here (under convert), once: what
        # is stored, cut, shown and printed from it is in sRGB, as its tile is.
        picture, _ = decode_upload(data, name, formats=formats, max_bytes=MAX_PHOTO_BYTES,
                                   max_pixels=MAX_PHOTO_PIXELS, draft_side=STORED_SIDE,
                                   accepted_by="the wall",
                                   colour_profiles=options.colour_profiles)
        reduced = max(picture.size) > STORED_SIDE
        if reduced:
            picture.thumbnail((STORED_SIDE, STORED_SIDE), Image.Resampling.LANCZOS,
                              reducing_gap=3.0)
        # Checked on what is kept: a long strip passed when checked before its reduction
        # (20000x17 was stored as 2048x2).
        width, height = picture.size
        if min(width, height) < MIN_PHOTO_SIDE:
            shown = (f"reduced to at most {STORED_SIDE} pixels, the photo is {width}x{height}"
                     if reduced else f"the photo is {width}x{height} pixels")
            raise MosaicistError(f"{name}: {shown}; at least {MIN_PHOTO_SIDE} pixels on each "
                                 "side are needed")
        # A new picture from the pixels alone: no EXIF, GPS, ICC profile or comment survives.
        pixels = np.asarray(picture, np.uint8)
        clean = Image.fromarray(pixels, "RGB")
        assert options.match_px is not None
        cut = make_tile(clean, options.match_px, options.aspect_ratio, options.crop)
        tile = thumbnail(clean, options.tile_px, options.aspect_ratio, cut.window)
        photo_id = new_id()
        path = self.photos_folder / f"{photo_id}.jpg"
        _save_jpeg(pixels, path, STORED_QUALITY, durable=True)
        _fsync_folder(self.photos_folder)
        return Prepared(photo_id, path, cut.window, cut.pixels, tile,
                        picture_vectors(cut.pixels[None], options.metric))

    def discard(self, prepared: Prepared) -> None:
        """Remove a prepared upload that will not be recorded.

        Parameters
        ----------
        prepared : Prepared
            What :meth:`prepare` gave.
        """
        prepared.path.unlink(missing_ok=True)

    def receive(self, prepared: Prepared,
                key: tuple[str, bytes] | None = None) -> dict[str, Any]:
        """Record a prepared upload: placed, pending (moderation) or overflow (full wall).

        Returns the guest's answer (:meth:`answer`), after the commit.

        Parameters
        ----------
        prepared : Prepared
            What :meth:`prepare` gave.
        key : (str, bytes), optional
            Who sent it and its bytes' digest, recorded with it in the same
            transaction (:meth:`recent_uploads`), so that a retry after a
            crash that lost the answer is known as this upload.

        Returns
        -------
        dict

        Raises
        ------
        Paused
            When uploads are paused (the prepared file is removed).
        """
        with self.lock:
            if self.paused:
                self.discard(prepared)
                raise Paused("uploads are paused by the host; try again in a moment")
            self._seq += 1
            number = self.placer.add(prepared.vectors)
            photo = Photo(prepared.id, number, self._seq, time.time(), "guest", None, "pending",
                          None, prepared.window)
            shown = None
            try:
                if not self.moderation:
                    cell = self.placer.choose(number)
                    if cell >= 0:
                        photo.status, photo.cell = "placed", cell
                        # In the try: a tile that cannot be written (a full disk) must
                        # leave neither the stored photo nor a sample photo of nobody's.
                        shown = self._write_tile(photo, prepared.tile)
                    else:
                        photo.status = "overflow"
                with self._write():
                    self._insert(photo, prepared.match)
                    if key is not None:
                        self._db.execute(
                            "INSERT OR REPLACE INTO uploads (client, digest, id, received) "
                            "VALUES (?, ?, ?, ?)", (key[0], key[1], photo.id, photo.received))
                    if photo.status == "placed":
                        self._bump()
            except BaseException:
                self.placer.forget(number)
                self._seq -= 1
                if photo.cell is not None:
                    self.tile_path(photo).unlink(missing_ok=True)
                self.discard(prepared)
                raise
            self.photos[photo.id] = photo
            self._by_number[photo.number] = photo
            if photo.status == "placed":
                assert photo.cell is not None
                self.placer.put(number, photo.cell)
                self._paste(photo, shown)
                self._placed(photo)
            self._touch()
            return self.answer(photo)

    def recent_uploads(self) -> list[tuple[str, bytes, str, float]]:
        """Uploads of the last :data:`UPLOAD_MEMORY_SECONDS`: ``(client, digest, id, received)``.

        As :meth:`receive` recorded them, oldest first; ``received`` is in
        seconds since the epoch.

        Returns
        -------
        list of tuple
        """
        with self.lock:
            rows = self._db.execute(
                "SELECT client, digest, id, received FROM uploads WHERE received >= ? "
                "ORDER BY received", (time.time() - UPLOAD_MEMORY_SECONDS,)).fetchall()
        return [(str(client), bytes(digest), str(photo_id), float(received))
                for client, digest, photo_id, received in rows]

    def _insert(self, photo: Photo, match: np.ndarray) -> None:
        window = photo.window
        self._db.execute(
            "INSERT INTO photos (id, seq, received, origin, source, status, cell, win_left, "
            "win_top, win_width, win_height, pixels) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (photo.id, photo.seq, photo.received, photo.origin, photo.source, photo.status,
             photo.cell, int(window.left), int(window.top), int(window.width),
             int(window.height), np.ascontiguousarray(match, np.uint8).tobytes()))

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """:func:`_transaction` on the event's database; the wall's version as it was when
        it fails (a version bumped by a change never committed was given again after a
        restart, to another change)."""
        version = self.version
        try:
            with _transaction(self._db, self.folder):
                yield
        except BaseException:
            self.version = version
            raise

    def _bump(self, by: int = 1) -> None:
        """Advance the wall's version in the open transaction (committed with the change)."""
        self.version += by
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('version', ?)",
                         (str(self.version),))

    def _placed(self, photo: Photo) -> None:
        assert photo.cell is not None
        row, col = divmod(photo.cell, self.settings.cols)
        self._announce("tile", {"id": photo.id, "row": row, "col": col, "version": self.version})

    def _touch(self) -> None:
        self.changes += 1
        self.last_change = time.monotonic()
        self.changed.notify_all()

    # -- what guests see -----------------------------------------------------------------

    def answer(self, photo: Photo) -> dict[str, Any]:
        """A photo as its guest sees it: ``{"id", "status", "row", "col"}`` (+ ``reason``).

        Parameters
        ----------
        photo : Photo
            The photo.

        Returns
        -------
        dict
            ``status`` is ``placed`` (with its row and column), ``pending``
            (``reason``: ``moderation`` or ``full``), ``rejected`` or ``removed``.
        """
        if photo.status == "placed" and photo.cell is not None:
            row, col = divmod(photo.cell, self.settings.cols)
            return {"id": photo.id, "status": "placed", "row": row, "col": col}
        answer: dict[str, Any] = {"id": photo.id, "status": photo.status, "row": None,
                                  "col": None}
        if photo.status in ("pending", "overflow"):
            answer["status"] = "pending"
            answer["reason"] = "moderation" if photo.status == "pending" else "full"
        return answer

    def photo(self, photo_id: str) -> Photo:
        """The photo ``photo_id``; :class:`NotFound` when there is none.

        Parameters
        ----------
        photo_id : str
            The photo's id, as given to its guest.

        Returns
        -------
        Photo

        Raises
        ------
        NotFound
            For an id that is malformed or names no photo.
        """
        photo = self.photos.get(photo_id) if is_photo_id(photo_id) else None
        if photo is None:
            raise NotFound("there is no photo with that id")
        return photo

    def wall(self) -> dict[str, Any]:
        """``{"grid", "tiles", "version"}``: every placed photo, in cell order."""
        with self.lock:
            cols = self.settings.cols
            tiles = [{"id": photo.id, "row": photo.cell // cols, "col": photo.cell % cols}
                     for photo in sorted((p for p in self.photos.values()
                                          if p.status == "placed" and p.cell is not None),
                                         key=lambda p: p.cell or 0)
                     if photo.cell is not None]
            return {"grid": {"cols": cols, "rows": self.settings.rows}, "tiles": tiles,
                    "version": self.version}

    def wall_jpeg(self, width: int, quality: int = 85) -> bytes:
        """The wall now, ``width`` pixels wide at most, as JPEG.

        Parameters
        ----------
        width : int
            The most pixels wide; a smaller wall is not enlarged.
        quality : int
            JPEG quality, on Pillow's scale.

        Returns
        -------
        bytes
        """
        with self.lock:
            picture = self.wall_picture.copy()
        image = Image.fromarray(picture)
        if width < image.width:
            height = max(1, round(image.height * width / image.width))
            image = image.resize((width, height), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        return buffer.getvalue()

    def target_jpeg(self, width: int = 2048, quality: int = 85) -> bytes:
        """The target as cut for the wall, at most ``width`` pixels wide, as JPEG.

        Parameters
        ----------
        width : int
            The most pixels wide; a smaller target is not enlarged.
        quality : int
            JPEG quality, on Pillow's scale.

        Returns
        -------
        bytes
        """
        image = Image.fromarray(self.target)
        if width < image.width:
            height = max(1, round(image.height * width / image.width))
            image = image.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        return buffer.getvalue()

    # -- the host's changes --------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Photos by status and origin, and the wall's cells and empty cells."""
        with self.lock:
            counts = dict.fromkeys(STATUSES, 0)
            received = fills = 0
            for photo in self.photos.values():
                counts[photo.status] += 1
                if photo.origin == "guest":
                    received += 1
                elif photo.status == "placed":
                    fills += 1
            cells = self.settings.cells
            return {"received": received, **counts, "fills": fills, "cells": cells,
                    "empty": cells - counts["placed"]}

    def listing(self, status: str) -> list[dict[str, Any]]:
        """The photos of one status, oldest first: ``{"id", "received"}``.

        Parameters
        ----------
        status : str
            As stored: ``placed``, ``pending``, ``overflow``, ``rejected``
            or ``removed``.

        Returns
        -------
        list of dict
        """
        with self.lock:
            return [{"id": photo.id, "received": photo.received}
                    for photo in sorted(self.photos.values(), key=lambda p: p.seq)
                    if photo.status == status]

    def set_flag(self, name: str, value: bool) -> None:
        """Set ``paused`` or ``moderation``, durably.

        Parameters
        ----------
        name : {"paused", "moderation"}
            The flag.
        value : bool
            Its new value.
        """
        with self.lock:
            with self._write():
                self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                 (name, "1" if value else "0"))
            setattr(self, name, value)
            self._announce("state", {"paused": self.paused, "moderation": self.moderation,
                                     "version": self.version})

    def approve(self, photo_id: str) -> dict[str, Any]:
        """Put a photo awaiting moderation on the wall (or in the overflow when full).

        Parameters
        ----------
        photo_id : str
            The photo's id.

        Returns
        -------
        dict
            The photo's answer (:meth:`answer`).

        Raises
        ------
        NotFound
            When there is no such photo.
        Conflict
            When it is not awaiting moderation.
        """
        with self.lock:
            photo = self.photo(photo_id)
            if photo.status != "pending":
                raise Conflict(f"this photo is {photo.status}; only a photo awaiting "
                               "moderation can be approved")
            self._put_on_wall(photo, "overflow")
            return self.answer(photo)

    def _put_on_wall(self, photo: Photo, otherwise: str) -> None:
        """Place ``photo`` by the rule, or give it the status ``otherwise`` when full."""
        cell = self.placer.choose(photo.number)
        shown = None
        try:
            if cell >= 0:
                photo.cell = cell
                # A tile that cannot be written (a full disk) must not leave the photo
                # holding a cell: rejecting it then cleared another photo's cell.
                shown = self._write_tile(photo, self._untinted(photo, shown_by=photo))
            with self._write():
                self._db.execute("UPDATE photos SET status = ?, cell = ? WHERE id = ?",
                                 ("placed" if cell >= 0 else otherwise,
                                  cell if cell >= 0 else None, photo.id))
                if cell >= 0:
                    self._bump()
        except BaseException:
            if cell >= 0:
                self.tile_path(photo).unlink(missing_ok=True)
            photo.cell = None
            raise
        if cell >= 0:
            photo.status = "placed"
            self.placer.put(photo.number, cell)
            self._paste(photo, shown)
            self._placed(photo)
        else:
            photo.status = otherwise
        self._touch()

    def reject(self, photo_id: str) -> dict[str, Any]:
        """Refuse a photo awaiting moderation: it is deleted and never shown.

        Parameters
        ----------
        photo_id : str
            The photo's id.

        Returns
        -------
        dict
            The photo's answer (:meth:`answer`).

        Raises
        ------
        NotFound
            When there is no such photo.
        Conflict
            When it is not awaiting moderation.
        """
        with self.lock:
            photo = self.photo(photo_id)
            if photo.status != "pending":
                raise Conflict(f"this photo is {photo.status}; only a photo awaiting "
                               "moderation can be rejected")
            self._drop(photo, "rejected")
            return self.answer(photo)

    def remove(self, photo_id: str) -> dict[str, Any]:
        """Take a photo away for good (its file deleted; its cell, if any, frees up).

        Its repeats go with it; the oldest photo of the overflow takes a freed cell.

        Parameters
        ----------
        photo_id : str
            The photo's id.

        Returns
        -------
        dict
            The photo's answer (:meth:`answer`).

        Raises
        ------
        NotFound
            When there is no such photo.
        Conflict
            When it was rejected or removed already.
        """
        with self.lock:
            photo = self.photo(photo_id)
            if photo.status in ("rejected", "removed"):
                raise Conflict(f"this photo was {photo.status} already")
            repeats = [other for other in self.photos.values()
                       if other.origin == "repeat" and other.source == photo.id
                       and other.status == "placed"]
            for gone in [photo, *repeats]:
                self._drop(gone, "removed")
            self._refill()
            return self.answer(photo)

    def _drop(self, photo: Photo, status: str) -> None:
        cell = photo.cell
        with self._write():
            self._db.execute("UPDATE photos SET status = ?, cell = NULL WHERE id = ?",
                             (status, photo.id))
            if cell is not None:
                self._bump()
        old_tile = self.tile_path(photo) if cell is not None else None
        photo.status, photo.cell = status, None
        self.placer.forget(photo.number)
        if old_tile is not None:
            old_tile.unlink(missing_ok=True)
        if photo.origin != "repeat":
            self.picture_path(photo).unlink(missing_ok=True)
        if cell is not None:
            self._clear(cell)
            row, col = divmod(cell, self.settings.cols)
            self._announce("removed", {"id": photo.id, "row": row, "col": col,
                                       "version": self.version})
        self._touch()

    def _refill(self) -> None:
        """Give freed cells to the overflow, oldest first."""
        waiting = sorted((p for p in self.photos.values() if p.status == "overflow"),
                         key=lambda p: p.seq)
        for photo in waiting:
            if not len(self.placer.free):
                break
            try:
                self._put_on_wall(photo, "overflow")
            except Conflict:
                # Its stored picture can no longer be read: it stays in the overflow for
                # the host to delete, and the next photo takes the cell. Raised here, it
                # refused the removal that had just been made and left the cell empty.
                continue

    # -- re-optimisation (the planner calls these) ---------------------------------------

    def apply_moves(self, moves: dict[int, int], stamp: int) -> int:
        """Move photos (``{number: cell}``) when the wall is unchanged since ``stamp``.

        Returns the number of photos moved (0 when the wall changed meanwhile, or while
        an export or a completion runs). The moved tiles are drawn without the lock;
        a change of the wall while they are drawn makes the moves stale too.

        Parameters
        ----------
        moves : dict of int to int
            The new cell of each photo to move, by the photo's number.
        stamp : int
            The count of the wall's changes the moves were planned at; moves
            planned on a wall that changed since are stale.

        Returns
        -------
        int
        """
        with self.lock:
            if not self._may_move(moves, stamp):
                return 0
            found = [self._by_number.get(number) for number in moves]
            # Copies: the photos change under the lock while their tiles are drawn.
            moved = [Photo(**vars(photo)) for photo in found
                     if photo is not None and photo.status == "placed"]
            if len(moved) != len(found):
                return 0
            means = self.placer.vectors([photo.number for photo in moved]).mean
        # Drawn without the lock: each moved photo's stored picture is decoded again (a
        # phone's photo, 2048 px, takes tens of milliseconds), and a re-optimisation that
        # moved 133 of them held it for 6 seconds, every upload and page waiting.
        drawn: list[tuple[Photo, int, np.ndarray, Path]] = []
        committed = False
        try:
            for photo, mean in zip(moved, means, strict=True):
                cell = moves[photo.number]
                shown = self._tinted(mean, cell, self._untinted(photo, shown_by=photo))
                path = self.tiles_folder / f"{photo.id}-{cell}.jpg"
                drawn.append((photo, cell, self._small(shown), path))
                _save_jpeg(shown, path, STORED_QUALITY)
            with self.lock:
                # The wall may have changed while they were drawn: then they are stale.
                if self._may_move(moves, stamp):
                    with self._write():
                        self._db.executemany("UPDATE photos SET cell = NULL WHERE id = ?",
                                             [(photo.id,) for photo in moved])
                        self._db.executemany("UPDATE photos SET cell = ? WHERE id = ?",
                                             [(cell, photo.id) for photo, cell, _, _ in drawn])
                        self._bump(len(drawn))
                    committed = True
                    return self._moved(drawn, moves)
                return 0
        finally:
            if not committed:
                for _, _, _, path in drawn:
                    path.unlink(missing_ok=True)

    def _may_move(self, moves: dict[int, int], stamp: int) -> bool:
        """Whether ``moves`` planned at ``stamp`` may be made now (under the lock)."""
        if stamp != self.changes or not moves:
            return False
        # An export reads the tiles' files of the cells it saw at its start (under both
        # locks): a move now deleted some of them, and the downloaded wall had holes. A
        # completion fills the cells that were empty at its start, and keeps each repeat
        # apart from its photo's cell then: a move now left a cell empty, or a repeat
        # beside its photo. The moves are planned again once either is done.
        return not (self.export_lock.locked() or self.completing)

    def _moved(self, drawn: list[tuple[Photo, int, np.ndarray, Path]],
               moves: dict[int, int]) -> int:
        """Put the moves committed on the wall and announce them (under the lock)."""
        self.placer.apply(moves)
        version = self.version - len(drawn)
        cols = self.settings.cols
        for copy, cell, small, _ in drawn:
            photo = self.photos[copy.id]
            previous = photo.cell
            assert previous is not None
            stale = self.tile_path(photo)
            photo.cell = cell
            if stale != self.tile_path(photo):
                stale.unlink(missing_ok=True)
            self._put_small(cell, small)
            version += 1
            self._announce("moved", {"id": photo.id, "row": cell // cols, "col": cell % cols,
                                     "from_row": previous // cols,
                                     "from_col": previous % cols, "version": version})
        self.changes += 1
        return len(drawn)

    # -- completion ----------------------------------------------------------------------

    @property
    def completing(self) -> bool:
        """Whether the empty cells are being completed now (no photo moves meanwhile)."""
        return self._completion.locked()

    @contextlib.contextmanager
    def _completing(self) -> Iterator[None]:
        """One completion at a time: a second one (a double click) is refused, not queued."""
        if not self._completion.acquire(blocking=False):
            raise Conflict("the empty cells are being completed already; wait for that to "
                           "finish")
        try:
            yield
        finally:
            self._completion.release()

    def complete_from_received(self, max_uses: int) -> int:
        """Fill every empty cell with a repeat of a photo on the wall; return the count.

        Each photo fills at most ``max_uses`` cells in all (its own
        included), its repeats at least :data:`REPEAT_SPACING` cells from
        its place and from each other (less where the wall is too small for
        that), at least total cost (the exact assignment of :mod:`mosaicist.match`).
        The match and the drawing run without the event's lock (uploads go
        on meanwhile): a cell filled by then keeps its photo, and a photo
        removed by then is not repeated.

        Parameters
        ----------
        max_uses : int
            The most cells one photo may fill, its own included.

        Returns
        -------
        int
            The cells filled.

        Raises
        ------
        Conflict
            When the wall has no empty cell, or too few photos for the limit,
            or a completion runs already.
        """
        if max_uses < 2:
            raise Conflict("completing from the photos received needs at least 2 uses of one "
                           "photo (max_uses; each photo is on the wall once already)")
        with self._completing():
            with self.lock:
                empty = self.placer.free
                # Copies: the photos change under the lock while the cells are matched.
                sources = [Photo(**vars(photo))
                           for photo in sorted(self.photos.values(), key=lambda p: p.seq)
                           if photo.origin == "guest" and photo.status == "placed"]
                if not len(empty):
                    raise Conflict("the wall has no empty cell")
                if not sources:
                    # Else "raise max_uses", which cannot help: no photo is there to repeat.
                    raise Conflict("no guest's photo is on the wall yet to repeat; complete "
                                   "from the fallback library, or once photos have arrived")
                if len(sources) * (max_uses - 1) < len(empty):
                    # Said with the uses it takes: the host's page asks for "most uses of one
                    # photo", and "raise max_uses" left the host guessing by how much.
                    needed = 1 + -(-len(empty) // len(sources))
                    raise Conflict(
                        f"filling {counted(len(empty), 'empty cell')} from "
                        f"{counted(len(sources), 'photo')} on the wall takes at least "
                        f"{needed:,} uses of one photo (max_uses), not {max_uses:,}; allow "
                        "that many, or complete from the fallback library")
                vectors = self.placer.vectors([p.number for p in sources])
                matches = self._match_pixels_of(sources)
            # Without the lock from here to the commit: matching thousands of cells and
            # drawing their tiles takes seconds, and held it stopped every upload and every
            # page of the wall meanwhile.
            costs = self.wall_costs.costs(vectors, empty).T
            cols = self.settings.cols
            empty_rc = np.stack(np.divmod(empty, cols), axis=1).astype(np.int64)
            own = np.array([p.cell for p in sources], np.int64)
            own_rc = np.stack(np.divmod(own, cols), axis=1)
            apart = np.abs(empty_rc[:, None, :] - own_rc[None, :, :]).max(axis=2)
            problem = ""
            # The spacing gives way on walls too small or too empty for it.
            for spacing in range(REPEAT_SPACING, 0, -1):
                try:
                    assignment = _repeats(costs, apart, empty_rc, max_uses - 1, spacing,
                                          self.settings.rows, cols)
                    break
                except MosaicistError as error:
                    problem = str(error)
            else:
                raise Conflict(f"the empty cells cannot be completed from the photos "
                               f"received under these limits ({problem})")
            fills: list[_Fill] = []
            untinted: dict[int, np.ndarray] = {}
            try:
                for cell, choice in zip(empty.tolist(), assignment.tile.tolist(), strict=True):
                    source = sources[choice]
                    if choice not in untinted:  # one picture decoded for all its repeats
                        untinted[choice] = self._untinted(source, shown_by=source)
                    photo = Photo(new_id(), -1, 0, 0.0, "repeat", source.id, "placed", cell,
                                  source.window)
                    fill = _Fill(photo, matches[source.id], vectors.take(np.array([choice])),
                                 source)
                    fills.append(fill)
                    shown = self._tinted(vectors.mean[choice], cell, untinted[choice])
                    _save_jpeg(shown, self.tile_path(photo), STORED_QUALITY)
                    fill.small = self._small(shown)
                    fill.files.append(self.tile_path(photo))
            except BaseException:
                _unlink_fills(fills)
                raise
            with self.lock:
                return self._add_fills(fills)

    def complete_from_library(self, library: Any, max_uses: int) -> int:
        """Fill every empty cell with a photo of a tile library (``--fallback``).

        Each library photo fills at most ``max_uses`` cells, at least total
        cost over the library's nearest candidates (exact assignment; more
        of them where the nearest alone cannot fill every cell). The match
        and the drawing run without the event's lock (uploads go on
        meanwhile): a cell filled by then keeps its photo.

        Parameters
        ----------
        library : TileLibrary
            The ``--fallback`` library, opened at the wall's match size.
        max_uses : int
            The most cells one library photo may fill.

        Returns
        -------
        int
            The cells filled.

        Raises
        ------
        Conflict
            When the wall has no empty cell, or a completion runs already.
        """
        from ..match._assign import MAX_CANDIDATES, assign_tiles
        from ..render import OriginalPictures

        with self._completing():
            with self.lock:
                empty = self.placer.free
            # Without the lock from here to the commit: matching thousands of cells against
            # the library and drawing them takes seconds to minutes, and held it stopped
            # every upload and every page of the wall meanwhile.
            if not len(empty):
                raise Conflict("the wall has no empty cell")
            count = len(library)
            if not count:
                raise Conflict("the fallback library has no photos to complete the wall from")
            if count * max_uses < len(empty):
                needed = -(-len(empty) // count)
                raise Conflict(f"filling {counted(len(empty), 'empty cell')} from "
                               f"{counted(count, 'library photo')} takes at least {needed:,} "
                               f"uses of one photo (max_uses), not {max_uses:,}")
            metric = self.settings.options.metric

            def nearest(k: int) -> tuple[np.ndarray, np.ndarray]:
                return _library_nearest(self.wall_costs, library, empty, metric, k)

            # Lists longer than the first ones where those cannot fill every cell under the
            # limit (a small library whose few good photos every cell lists first: 800
            # photos, 5 uses each, were refused for 3,595 cells), as far as memory allows.
            longest = min(count, max(MAX_CANDIDATES, LIST_ENTRIES // len(empty)))
            try:
                assignment = assign_tiles(*nearest(min(count, COMPLETION_CANDIDATES)), 1,
                                          len(empty), max_uses=max_uses,
                                          more_candidates=nearest,
                                          max_candidates=max(longest, COMPLETION_CANDIDATES))
            except MosaicistError as error:
                raise Conflict(f"the empty cells cannot be completed from the library under "
                               f"these limits ({error})") from None
            chosen = assignment.tile.tolist()
            ids = [library.source_ids[index] for index in chosen]
            options = self.settings.options
            pictures = OriginalPictures(library.source, ids, max(options.tile_px, 256),
                                        aspect=options.aspect_ratio, crop=options.crop,
                                        windows=library.windows_for(ids),
                                        colour_profiles=library.colour_profiles)
            fills: list[_Fill] = []
            try:
                # A block of pictures at a time: all at once held 200 KB per empty cell
                # (8 GB for a wall of 40,000).
                for start in range(0, len(ids), FILL_BLOCK):
                    block = np.arange(start, min(len(ids), start + FILL_BLOCK))
                    for position, picture in zip(block.tolist(), pictures.fetch(block),
                                                 strict=True):
                        cell, index = int(empty[position]), chosen[position]
                        match = np.asarray(library.tiles[index])
                        height, width = picture.shape[:2]
                        photo = Photo(new_id(), -1, 0, 0.0, "library", ids[position][:1000],
                                      "placed", cell, Window(0, 0, width, height))
                        fill = _Fill(photo, match, picture_vectors(match[None], metric))
                        fills.append(fill)
                        _save_jpeg(picture, self.picture_path(photo), STORED_QUALITY,
                                   durable=True)
                        fill.files.append(self.picture_path(photo))
                        shown = self._tinted(fill.vectors.mean[0], cell,
                                             self._untinted(photo))
                        _save_jpeg(shown, self.tile_path(photo), STORED_QUALITY)
                        fill.small = self._small(shown)
                        fill.files.append(self.tile_path(photo))
                # The pictures' names too must be on the disk before their rows are
                # committed: after a power cut, a placed photo without its picture (and
                # without its tile, written without a flush) could not be drawn, and the
                # event would not open.
                _fsync_folder(self.photos_folder)
            except BaseException:
                _unlink_fills(fills)
                raise
            with self.lock:
                return self._add_fills(fills)

    def _add_fills(self, fills: list[_Fill]) -> int:
        """Record completion fills drawn without the lock (one transaction), announce them.

        A fill whose cell was taken meanwhile (an upload, an approval) is
        dropped, as is a repeat whose photo left its cell (removed): the
        photos on the wall stay as they are, each cell holds one, and no
        photo is used more than the completion allowed. Called under the lock.
        """
        kept: list[_Fill] = []
        for fill in fills:
            cell = fill.photo.cell
            assert cell is not None
            source = None if fill.source is None else self.photos.get(fill.source.id)
            if self.placer.cell_photo[cell] >= 0 or (fill.source is not None and (
                    source is None or source.status != "placed"
                    or source.cell != fill.source.cell)):
                _unlink_fills([fill])
            else:
                kept.append(fill)
        added: list[int] = []
        seq = self._seq
        try:
            now = time.time()
            for fill in kept:
                self._seq += 1
                fill.photo.number = self.placer.add(fill.vectors, movable=False, sample=False)
                added.append(fill.photo.number)
                fill.photo.seq, fill.photo.received = self._seq, now
            with self._write():
                for fill in kept:
                    self._insert(fill.photo, fill.match)
                self._bump(len(kept))
        except BaseException:
            for number in added:
                self.placer.forget(number)
            # As it was: taking back one number per fill asked for, when fewer were made,
            # gave later uploads the numbers of photos on the wall (refused as not unique).
            self._seq = seq
            _unlink_fills(kept)
            raise
        version = self.version - len(kept)
        cols = self.settings.cols
        for fill in kept:
            photo = fill.photo
            assert photo.cell is not None
            self.photos[photo.id] = photo
            self._by_number[photo.number] = photo
            self.placer.put(photo.number, photo.cell)
            self._put_small(photo.cell, fill.small)
            version += 1
            self._announce("tile", {"id": photo.id, "row": photo.cell // cols,
                                    "col": photo.cell % cols, "version": version})
        self._touch()
        return len(kept)

    def _match_pixels_of(self, photos: list[Photo]) -> dict[str, np.ndarray]:
        """Each photo's pixels as compared (stored with it), by id: one query for all."""
        match_w, match_h = self.settings.match_size
        wanted = {photo.id for photo in photos}
        found: dict[str, np.ndarray] = {}
        for photo_id, pixels in self._db.execute(
                "SELECT id, pixels FROM photos WHERE status = 'placed' AND origin = 'guest'"):
            if photo_id in wanted:
                found[photo_id] = np.frombuffer(pixels, np.uint8).reshape(match_h, match_w, 3)
        return found

    # -- for exports and sheets ----------------------------------------------------------

    def placed(self) -> list[Photo]:
        """The photos on the wall, in cell order (copies: safe outside the lock)."""
        with self.lock:
            return sorted((Photo(**vars(photo)) for photo in self.photos.values()
                           if photo.status == "placed" and photo.cell is not None),
                          key=lambda p: p.cell or 0)


def _repeats(costs: np.ndarray, apart: np.ndarray, cells: np.ndarray, uses: int, spacing: int,
             rows: int, cols: int) -> Any:
    """The assignment of empty ``cells`` to photos, each at most ``uses`` more times.

    ``costs`` and ``apart`` are ``(E, P)``: each empty cell's cost with each
    photo and its distance (Chebyshev, cells) from the photo's own cell;
    repeats keep ``spacing`` from it and from each other.
    """
    from ..match._assign import Layout, assign_tiles

    too_far = np.iinfo(np.int64).max // 4
    allowed = np.where(apart < spacing, too_far, costs)

    def nearest(k: int) -> tuple[np.ndarray, np.ndarray]:
        # (E, k) as asked, missing entries -1: fewer photos than k, or all too near.
        index = np.full((len(cells), k), -1, np.int64)
        values = np.full((len(cells), k), too_far, np.int64)
        found = min(k, allowed.shape[1])
        order = np.argsort(allowed, axis=1, kind="stable")[:, :found]
        values[:, :found] = np.take_along_axis(allowed, order, axis=1)
        index[:, :found] = np.where(values[:, :found] >= too_far, -1, order)
        return index, values

    first = nearest(COMPLETION_CANDIDATES)
    if (first[0][:, 0] < 0).any():
        raise MosaicistError("some empty cells have no photo far enough from its own place")
    return assign_tiles(*first, rows, cols, max_uses=uses, min_spacing=spacing,
                        more_candidates=nearest, layout=Layout(cells, 1),
                        max_candidates=max(COMPLETION_CANDIDATES, allowed.shape[1]))


def _library_nearest(costs: WallCosts, library: Any, cells: np.ndarray, metric: str,
                     k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` library photos of least cost in each of ``cells``, and their costs.

    ``(len(cells), k)`` each, best first, ties to the lowest library
    position; the library is read a block at a time so that the costs held
    at once stay near :data:`LIST_ENTRIES`.
    """
    count = len(library)
    k = min(k, count)
    best = np.full((len(cells), 0), -1, np.int64)
    best_costs = np.zeros((len(cells), 0), np.int64)
    block = max(256, min(4096, LIST_ENTRIES // max(1, len(cells))))
    for start in range(0, count, block):
        tiles = np.asarray(library.tiles[start:start + block])
        part = costs.costs(picture_vectors(tiles, metric), cells).T
        index = np.concatenate((best, np.broadcast_to(
            np.arange(start, start + len(tiles)), (len(cells), len(tiles)))), axis=1)
        values = np.concatenate((best_costs, part), axis=1)
        if values.size and int(values.max()) >= (np.iinfo(np.int64).max - count) // count:
            # Costs too large for one key (pictures compared at hundreds of pixels).
            order = np.lexsort((index, values), axis=1)[:, :k]
            best = np.take_along_axis(index, order, axis=1)
            best_costs = np.take_along_axis(values, order, axis=1)
            continue
        # Least cost first, then lowest position: one key, so that a partition (linear)
        # picks the same k as a stable sort of the whole row would.
        keys = values * count + index
        if keys.shape[1] > k:
            keys = np.partition(keys, k - 1, axis=1)[:, :k]
        keys.sort(axis=1)
        best, best_costs = keys % count, keys // count
    return best, best_costs


@contextlib.contextmanager
def _transaction(connection: sqlite3.Connection, folder: Path) -> Iterator[None]:
    """One write transaction on the database in ``folder``, committed (durably) or rolled back.

    A failed ``COMMIT`` (in WAL mode most writes reach the disk there, so a
    full disk shows up there) is rolled back too: left open, every later
    ``BEGIN`` failed and the wall took nothing more until restarted. A full
    disk is raised as :class:`OSError` ``ENOSPC``, which the server answers
    with status 507: ``SQLITE_FULL``, and also the "disk I/O error" of a
    ``-shm`` file that cannot grow (:func:`is_out_of_space`), which was
    answered 500, as the server's fault.
    """
    try:
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
            raise
    except sqlite3.OperationalError as error:
        if is_out_of_space(error, folder) or "disk is full" in str(error):
            raise OSError(errno.ENOSPC, "the disk is full: the event's state cannot "
                                        "grow") from error
        raise


def _digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _made(folder: Path, target: str | os.PathLike[str] | None, grid: tuple[int, int] | None,
          options: MosaicOptions) -> WallSettings:
    """The settings of a new event, with its target cut and stored."""
    if target is None or grid is None:
        # Named for what is missing: given a TARGET, "needs its TARGET and --grid" sent the
        # host looking for what was wrong with the target.
        needs = ("its TARGET and --grid COLSxROWS" if target is None and grid is None
                 else "its TARGET" if target is None else "--grid COLSxROWS (e.g. 40x30)")
        raise MosaicistError(f"{folder}: not an event folder yet; a new event needs {needs}")
    path = Path(target)
    if not path.is_file():
        raise MosaicistError(f"{target}: target file not found")
    cols, rows = grid
    pixels = cols * options.tile_px * rows * options.tile_height
    if pixels > MAX_WALL_PIXELS:
        raise MosaicistError(
            f"a wall of {cols}x{rows} cells of {options.tile_px}x{options.tile_height} px is "
            f"{pixels / 1e6:,.0f} megapixels, over the {MAX_WALL_PIXELS / 1e6:,.0f} a live wall "
            "takes; use fewer cells (--grid) or smaller tiles (--tile-px)")
    picture = cut_target(path, cols, rows, options)
    with atomic_path(folder / "target.png", durable=True) as temporary:
        Image.fromarray(picture, "RGB").save(temporary, "PNG", compress_level=6)
    return WallSettings(cols, rows, options, path.name, _digest(path))


def _resumed(folder: Path, meta: dict[str, str], target: str | os.PathLike[str] | None,
             grid: tuple[int, int] | None, given: dict[str, Any]) -> WallSettings:
    """The stored settings, checked against what was given again, output settings updated."""
    if int(meta.get("schema", "0")) > SCHEMA_VERSION:
        raise MosaicistError(f"{folder}: the event was made by a newer mosaicist")
    settings = WallSettings.from_json(json.loads(meta["settings"]))
    if not (folder / "target.png").is_file():
        raise MosaicistError(f"{folder}: the event's target.png is missing")
    if target is not None and Path(target).is_file() and _digest(Path(target)) != (
            settings.target_digest):
        raise MosaicistError(f"{target}: this event was made with another target "
                             f"({settings.target_name}); give that one, or another --event "
                             "folder for a new event")
    if target is not None and not Path(target).is_file():
        raise MosaicistError(f"{target}: target file not found")
    if grid is not None and grid != (settings.cols, settings.rows):
        raise MosaicistError(f"this event's grid is {settings.cols}x{settings.rows}, not "
                             f"{grid[0]}x{grid[1]} (--grid)")
    if not given:
        return settings
    options = settings.options.replace(**given)
    kept, now = settings.options.to_json(), options.to_json()
    for name in WALL_SETTINGS:
        if kept.get(name) != now.get(name):
            raise OptionError(
                "this event was made with {" + name + "} {kept}, not {now}; a wall keeps its "
                "look (start another --event folder to change it)", kept=kept.get(name),
                now=now.get(name))
    return WallSettings(settings.cols, settings.rows, options, settings.target_name,
                        settings.target_digest)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Planner:
    """The event's background thread: the forecast's prices, and re-optimisation.

    It wakes on every change. When the placer says the forecast is due, it
    copies the sample under the lock, computes the prices without it (uploads
    go on meanwhile, placed with the previous prices) and installs them.
    Unless the wall is ``final``, once the wall has been quiet for
    :data:`QUIET_SECONDS` after a change it computes the optimal arrangement
    of the photos on the wall the same way and moves them, when nothing
    changed in between (else it tries again at the next quiet moment).
    A pass that fails (a full disk) is said once on stderr, not at every
    attempt (:meth:`attempt`), and tried again after a pause that doubles up
    to :data:`RETRY_MAX_SECONDS`, or sooner when the wall changes.
    """

    def __init__(self, event: Event) -> None:
        self.event = event
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._optimised = -1
        self.rounds = 0
        self.moved = 0
        self._failure: str | None = None
        self._failures = 0
        self._failure_said = 0.0
        self._pause_seconds = 1.0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="mosaicist-live-planner",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self.event.lock:
            self.event.changed.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def _run(self) -> None:
        event = self.event
        while not self._stop.is_set():
            with event.lock:
                event.changed.wait(0.25)
            if self._stop.is_set():
                return
            if not self.attempt():
                self._pause(self._pause_seconds)
                self._pause_seconds = min(2 * self._pause_seconds, RETRY_MAX_SECONDS)

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less when the wall changes (room on the disk again) or on stop."""
        event = self.event
        deadline = time.monotonic() + seconds
        with event.lock:
            changes = event.changes
            while not self._stop.is_set() and event.changes == changes:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                event.changed.wait(left)

    def attempt(self, now: float | None = None) -> bool:
        """One :meth:`step`; a failure is said on stderr, not raised. Whether it worked.

        A failure that goes on (a full disk fails every attempt) is said
        once, then again only when its reason changes or every
        :data:`FAILURE_REPEAT_SECONDS`, and its end is said too.

        Parameters
        ----------
        now : float, optional
            The time, in :func:`time.monotonic`'s seconds (default: now).

        Returns
        -------
        bool
        """
        now = time.monotonic() if now is None else now
        try:
            self.step()
        except Exception as error:  # noqa: BLE001 - the planner must go on; the wall is safe
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            self._failures += 1
            if reason != self._failure:
                _say(f"mosaicist: live: planning failed: {reason}; trying again "
                     f"(said again when it works or fails otherwise)")
            elif now - self._failure_said >= FAILURE_REPEAT_SECONDS:
                _say(f"mosaicist: live: planning still fails ({self._failures} times in a "
                     f"row): {reason}")
            else:
                return False
            self._failure, self._failure_said = reason, now
            return False
        if self._failure is not None:
            _say(f"mosaicist: live: planning works again (after {self._failures} failures)")
        self._failure, self._failures, self._pause_seconds = None, 0, 1.0
        return True

    def step(self) -> None:
        """One pass: prices when due, then re-optimisation when the wall is quiet."""
        event = self.event
        placer = event.placer
        with event.lock:
            due = placer.forecast_due()
            if due:
                sample, free, repeats, stamp = placer.forecast_input()
        if due:
            prices = placer.compute_prices(sample, free, repeats)
            with event.lock:
                placer.set_prices(free, prices, stamp)
                event.save_forecast()
        if event.final:
            return
        with event.lock:
            quiet = time.monotonic() - event.last_change >= QUIET_SECONDS
            # No moves while an export or a completion runs (:meth:`Event.apply_moves`):
            # not worth planning.
            if (not quiet or self._optimised == event.changes or event.export_lock.locked()
                    or event.completing):
                return
            stamp_changes = event.changes
            arrangement = placer.optimum_input()
        moves = placer.compute_optimum(*arrangement)
        moved = event.apply_moves(moves, stamp_changes) if moves else 0
        with event.lock:
            if moved or not moves:
                self._optimised = event.changes
            self.rounds += 1
            self.moved += moved
