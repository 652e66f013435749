"""Deep Zoom pyramids (``NAME.dzi`` + ``NAME_files/``), written from a stream of bands.

A Deep Zoom image is a pyramid of levels, level 0 one pixel and the deepest
level the full picture, each cut into square tiles that overlap their
neighbours by ``overlap`` pixels; viewers such as OpenSeadragon load only the
tiles on screen. mosaicist builds every level at once from horizontal bands of
the full-size picture (one row of cells at a time, straight from the tile
images): the deepest level is cut into tiles as its rows arrive, and the
same rows, reduced 2x with :func:`mosaicist.render.reduce_half`, feed the
level above, and so on. No level is ever held whole: each keeps one row of
Deep Zoom tiles plus the overlap.

Tiles go to a hidden staging folder that is renamed to ``NAME_files`` when
the pyramid is complete (:func:`mosaicist.paths.atomic_folder`), and
``NAME.dzi`` is written last, so an interrupted run never leaves a partial
pyramid under the final names. When a pyramid is written over another, the
old descriptor and viewer page go just before the old tiles are replaced:
a run stopped at any moment leaves the old pyramid whole, or the new tiles
with no descriptor or page of the old one describing them (the next run
writes them again). A viewer page that cannot be written takes its pyramid's
descriptor with it (and its tiles, when the disk refused the page): a failed
run never leaves a pyramid that looks finished. The staging folder is named
after the writing process: one left by a run killed too hard to clean up
(``kill -9``) is removed by the next write to the same place, once that
process is gone.

One pyramid has one writer at a time: two runs writing the same ``NAME.dzi``
at once could leave the descriptor or page of one over the tiles of the
other. A writer holds an ``flock`` on a file of its own beside it
(:func:`lock_files`) from its first tile to its page (the kernel releases it
when the process dies, however it dies); a second writer is refused in one
line, at its output check when the first is already writing, else when it
comes to write.
"""

from __future__ import annotations

import contextlib
import errno
import io
import math
import os
import random
import re
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .._runtime import byte_words, worker_count
from ..errors import MosaicistError, OptionError, alternatives, check_range
from ..options import (
    DZI_FORMAT,
    DZI_FORMAT_ALIASES,
    DZI_FORMATS,
    DZI_MAX_TILE_SIZE,
    DZI_OVERLAP,
    DZI_TILE_SIZE,
    DZI_TILE_SIZE_RANGE,
)
from ..paths import (
    _temporary_prefix,
    _temporary_stem,
    atomic_folder,
    atomic_path,
    locks_refused,
    output_path,
    process_alive,
    refuse_long_name,
    remove_stale_temporaries,
)
from ..progress import progress_bar
from ._formats import LEAST_BYTES_PER_PIXEL, OutputFormat, Picture
from ._pyramid import HalvingStream, half_size, level_count

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from ..options import MosaicOptions

#: Tile formats, by the name used in ``.dzi`` files and tile file names.
TILE_FORMATS = DZI_FORMATS
#: Accepted spellings of the formats.
FORMAT_ALIASES = DZI_FORMAT_ALIASES
DEEPZOOM_NAMESPACE = "http://schemas.microsoft.com/deepzoom/2008"
#: JPEG / WebP quality of the tiles when none is given.
DEFAULT_QUALITY = 90
#: Namespaces read (the 2009 one is the same schema, renamed).
DEEPZOOM_NAMESPACES = (DEEPZOOM_NAMESPACE, "http://schemas.microsoft.com/deepzoom/2009")
#: Most tile files a pyramid may have. The 7.9-gigapixel mosaic of the README has
#: 163,414 at the default 254 px; a million is about 48 gigapixels at 254 px, and small
#: tiles on a large picture (16 px on a 2560x1920 mosaic: 25,613; 1 px: 6.6 million) make
#: a pyramid that takes hours to write, copy or delete and a viewer that never keeps up.
MOST_TILE_FILES = 1_000_000


@dataclass(frozen=True)
class DeepZoomLayout:
    """Sizes of a Deep Zoom pyramid.

    Attributes
    ----------
    width, height : int
        Full-size (deepest level) picture.
    tile_size : int
        Side of a tile without its overlap.
    overlap : int
        Pixels each tile repeats from its neighbours on every shared side.
    format : str
        ``jpeg``, ``png`` or ``webp``.
    extension : str
        The tiles' file extension as the descriptor spells it (``jpg``,
        ``JPEG``...), when it is not ``format``: viewers such as OpenSeadragon
        fetch ``<column>_<row>.<Format>`` with the descriptor's ``Format``
        verbatim, so a pyramid written by another tool with ``Format="jpg"``
        has ``.jpg`` tiles. Empty: ``format`` (the pyramids mosaicist writes).
    """

    width: int
    height: int
    tile_size: int = DZI_TILE_SIZE
    overlap: int = DZI_OVERLAP
    format: str = DZI_FORMAT
    extension: str = ""

    @property
    def tile_extension(self) -> str:
        """The tile files' extension, without the dot: :attr:`extension`, else :attr:`format`."""
        return self.extension or self.format

    @property
    def deepest_level(self) -> int:
        """Index of the full-size level (level 0 is 1x1)."""
        return level_count(self.width, self.height) - 1

    def level_size(self, level: int) -> tuple[int, int]:
        """Return ``(width, height)`` of ``level``: the full size halved, rounding up.

        Parameters
        ----------
        level : int
            0 (one pixel) to :attr:`deepest_level` (the full size).

        Returns
        -------
        tuple of int
            The level's size in pixels.
        """
        width, height = self.width, self.height
        for _ in range(self.deepest_level - level):
            width, height = half_size(width), half_size(height)
        return width, height

    def tile_counts(self, level: int) -> tuple[int, int]:
        """Return ``(columns, rows)`` of tiles at ``level``.

        Parameters
        ----------
        level : int
            0 (one pixel) to :attr:`deepest_level` (the full size).

        Returns
        -------
        tuple of int
            How many tiles cover the level across and down (the last of each may be smaller).
        """
        width, height = self.level_size(level)
        return -(-width // self.tile_size), -(-height // self.tile_size)

    def tile_span(self, index: int, extent: int) -> tuple[int, int]:
        """Pixel span ``[start, stop)`` of tile ``index`` along a side of ``extent``.

        Parameters
        ----------
        index : int
            The tile's column (along the width) or row (along the height), from 0.
        extent : int
            The level's width or height in pixels, which the span never passes.

        Returns
        -------
        tuple of int
            ``(start, stop)``: the tile's own pixels, widened by the overlap
            on each side that has a neighbour.
        """
        start = max(0, index * self.tile_size - self.overlap)
        stop = min(extent, (index + 1) * self.tile_size + self.overlap)
        return start, stop

    def tile_total(self) -> int:
        """Number of tiles in the whole pyramid."""
        total = 0
        for level in range(self.deepest_level + 1):
            columns, rows = self.tile_counts(level)
            total += columns * rows
        return total

    def descriptor(self) -> str:
        """Return the ``.dzi`` XML."""
        # Imported here: it brings urllib and http.client, 13 ms of every command's start.
        from xml.sax.saxutils import quoteattr

        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Image xmlns={quoteattr(DEEPZOOM_NAMESPACE)} Format={quoteattr(self.tile_extension)} "
            f'Overlap="{self.overlap}" TileSize="{self.tile_size}">\n'
            f'  <Size Width="{self.width}" Height="{self.height}"/>\n'
            "</Image>\n"
        )


def files_folder(path: str | os.PathLike[str]) -> Path:
    """Return the tile folder of a ``.dzi``: ``NAME.dzi`` -> ``NAME_files``.

    Parameters
    ----------
    path : str or os.PathLike
        The descriptor.

    Returns
    -------
    pathlib.Path
        The folder beside it, whether or not it exists.
    """
    path = Path(path)
    return path.with_name(f"{path.stem}_files")


#: A level folder's name: a pyramid of sides under 2^63 has at most 64 levels, so a
#: folder named ``2023`` (or in other scripts' digits, which ``str.isdigit`` takes)
#: is the user's, not a level, and is not deleted with the pyramid it sits in.
_LEVEL_NAME = re.compile(r"[0-9]|[1-5][0-9]|6[0-3]")
#: ``.NAME_files.partial-<pid>``: the staging folder of earlier versions.
_LEGACY_STAGING = re.compile(r"\.(?P<final>.+)\.partial-(?P<pid>[0-9]{1,10})")


#: A tile file's name in a level folder: ``<column>_<row>.<format>`` (``jpg``, or in
#: upper case, as other writers spell it: :func:`read_level` reads those too).
_TILE_NAME = re.compile(r"[0-9]{1,10}_[0-9]{1,10}\.(?:jpeg|jpg|png|webp)", re.IGNORECASE)


def _strangers(folder: Path) -> list[str]:
    """What in a pyramid's tile folder no pyramid holds, by path under it, in name order.

    A pyramid holds level folders (:data:`_LEVEL_NAME`) of tile files
    (:data:`_TILE_NAME`). Hidden names are a file browser's (``.DS_Store``),
    not the user's. Level folders are looked into too: a folder of photos
    sorted into ``0/``, ``1/``... (a tile library named ``NAME_files``) was
    taken for a pyramid and replaced whole, photos and all.

    Raises
    ------
    OSError
        When a folder cannot be read.
    """
    strangers: list[str] = []
    with os.scandir(folder) as entries:
        levels = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if _LEVEL_NAME.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                levels.append(entry.name)
            else:
                strangers.append(entry.name)
    for level in levels:
        with os.scandir(folder / level) as entries:
            strangers.extend(f"{level}/{entry.name}" for entry in entries
                             if not entry.name.startswith(".")
                             and not (_TILE_NAME.fullmatch(entry.name)
                                      and entry.is_file(follow_symlinks=False)))
    return sorted(strangers)


def _remove_legacy_staging(final: Path) -> None:
    """Remove ``.NAME_files.partial-<pid>`` folders left by earlier versions that were killed.

    Today's temporaries are removed by :func:`mosaicist.paths.atomic_folder`
    itself; these older names carry the writer's PID too, and are removed
    only once that process is gone.
    """
    with contextlib.suppress(OSError):
        for entry in os.scandir(final.parent):
            match = _LEGACY_STAGING.fullmatch(entry.name)
            if (
                match is not None and match["final"] == final.name
                and entry.is_dir(follow_symlinks=False)
                and int(match["pid"]) != os.getpid() and not process_alive(int(match["pid"]))
            ):
                shutil.rmtree(entry.path, ignore_errors=True)


def check_layout(tile_size: int, overlap: int, tile_format: str) -> str:
    """Validate Deep Zoom settings; return the canonical format name.

    Parameters
    ----------
    tile_size : int
        Side of a tile without its overlap, in pixels (``dzi_tile_size``).
    overlap : int
        Pixels each tile repeats from its neighbours (``dzi_overlap``).
    tile_format : str
        The tiles' format, in any accepted spelling and case (``dzi_format``).

    Returns
    -------
    str
        ``jpeg``, ``png`` or ``webp``: the name tile files and descriptors use.

    Raises
    ------
    OptionError
        For a tile size outside 1..4096, an overlap outside
        ``0..tile_size // 2`` or an unknown format, naming the setting
        (``dzi_tile_size``, ``dzi_overlap``, ``dzi_format``).
    """
    tile_size = check_range("dzi_tile_size", tile_size, 1, DZI_MAX_TILE_SIZE, "pixels",
                            whole=True)
    if isinstance(overlap, bool) or not isinstance(overlap, int | np.integer):
        # An overlap of 1.5 (or True) went into the descriptor as written, "1.5",
        # which no viewer (nor read_layout) takes, or failed in an array's shape.
        check_range("dzi_overlap", overlap, 0, tile_size // 2, "pixels", whole=True)
    if not 0 <= overlap <= tile_size // 2:
        raise OptionError(
            "{dzi_overlap} must be between 0 and {most} pixels (half the tile size), got {value}",
            most=tile_size // 2, value=overlap,
        )
    # Not a text (None, a number): refused by name, as an unknown spelling is.
    name = FORMAT_ALIASES.get(tile_format.lower()) if isinstance(tile_format, str) else None
    if name is None:
        raise OptionError("unknown {dzi_format} {value!r}; use {known}", value=tile_format,
                          known=alternatives(TILE_FORMATS))
    return name


def _least_fitting_tile_size(width: int, height: int, above: int) -> int | None:
    """The smallest tile side over ``above`` whose pyramid has at most :data:`MOST_TILE_FILES`
    tiles, within :data:`DZI_TILE_SIZE_RANGE`; None when even the largest has more."""
    low, high = max(above + 1, DZI_TILE_SIZE_RANGE[0]), DZI_TILE_SIZE_RANGE[1]
    if low > high or DeepZoomLayout(width, height, high).tile_total() > MOST_TILE_FILES:
        return None
    # Fewer tiles the larger they are: bisect for the first side that fits.
    while low < high:
        middle = (low + high) // 2
        if DeepZoomLayout(width, height, middle).tile_total() > MOST_TILE_FILES:
            low = middle + 1
        else:
            high = middle
    return low


def check_tile_files(path: str | os.PathLike[str], width: int, height: int,
                     tile_size: int) -> None:
    """Refuse, before any work, a pyramid of more than :data:`MOST_TILE_FILES` tile files.

    Parameters
    ----------
    path : path-like
        The descriptor, named in the message.
    width, height : int
        The picture's size in pixels.
    tile_size : int
        Side of a tile without its overlap (``dzi_tile_size``), already checked.

    Raises
    ------
    OptionError
        Saying how many files the pyramid would have, and the smallest
        ``dzi_tile_size`` that fits (else larger cells or smaller ``tile_px``).
    """
    count = DeepZoomLayout(width, height, tile_size).tile_total()
    if count <= MOST_TILE_FILES:
        return
    fitting = _least_fitting_tile_size(width, height, tile_size)
    advice = ("use {dzi_tile_size} {fitting} or more" if fitting is not None else
              "use larger cells or a smaller {tile_px}")
    raise OptionError(
        "{path}: a {width}x{height} px Deep Zoom pyramid of {side} px tiles is {count} tile "
        "files, over the {most} a pyramid may have; " + advice,
        path=str(path), width=f"{width:,}", height=f"{height:,}", side=f"{tile_size:,}",
        count=f"{count:,}", most=f"{MOST_TILE_FILES:,}", fitting=fitting)


def _encode(tile: np.ndarray, tile_format: str, quality: int) -> bytes:
    tile = np.ascontiguousarray(tile)
    if tile_format == "jpeg":
        # Imported here, where it is used: commands that write no pyramid skip its import.
        import simplejpeg

        # simplejpeg (libjpeg-turbo) releases the GIL, so tiles encode in parallel.
        return simplejpeg.encode_jpeg(tile, quality=quality, colorspace="RGB",
                                      colorsubsampling="444")
    buffer = io.BytesIO()
    if tile_format == "png":
        Image.fromarray(tile, "RGB").save(buffer, format="PNG", compress_level=1)
    else:
        Image.fromarray(tile, "RGB").save(buffer, format="WEBP", quality=quality, method=4)
    return buffer.getvalue()


class _TileSink:
    """Encodes and writes tiles on a few threads, with a bounded queue."""

    def __init__(self, folder: Path, tile_format: str, quality: int, workers: int,
                 bar) -> None:
        self.folder = folder
        self.format = tile_format
        self.quality = quality
        self.extension = "jpeg" if tile_format == "jpeg" else tile_format
        self.pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="mosaicist-dzi")
        self.pending: deque[Future] = deque()
        # Each pending tile is a copy; a few per thread keeps memory small.
        self.limit = 8 * max(1, workers)
        self.bar = bar

    def _write(self, tile: np.ndarray, path: Path) -> None:
        # ``tile`` is the encoder's own copy: the level's buffer is reused.
        data = _encode(tile, self.format, self.quality)
        with open(path, "wb") as handle:
            handle.write(data)

    def put(self, tile: np.ndarray, level: int, column: int, row: int) -> None:
        path = self.folder / str(level) / f"{column}_{row}.{self.extension}"
        self.pending.append(self.pool.submit(self._write, tile, path))
        while len(self.pending) > self.limit:
            self.pending.popleft().result()
            self.bar.update(1)

    def drain(self) -> None:
        while self.pending:
            self.pending.popleft().result()
            self.bar.update(1)

    def close(self, cancel: bool = False) -> None:
        self.pool.shutdown(wait=True, cancel_futures=cancel)


#: Rows a level takes in at a time: its buffer holds one tile row (with the
#: overlaps) plus this many rows, whatever the height of the incoming bands.
SLICE_ROWS = 64


class _LevelCutter:
    """Cuts one level into tiles as its rows arrive; passes them, halved, upward.

    Rows go into a buffer allocated once, of one tile row (overlaps included)
    plus :data:`SLICE_ROWS`; rows no tile still needs are dropped by moving
    the rest up. Tiles are copied out as they are handed to the encoders, so
    the buffer can be reused at once.
    """

    def __init__(self, layout: DeepZoomLayout, level: int, sink: _TileSink,
                 above: _LevelCutter | None) -> None:
        self.layout = layout
        self.level = level
        self.width, self.height = layout.level_size(level)
        self.columns, self.rows = layout.tile_counts(level)
        self.sink = sink
        # The level above gets this one's rows halved as they arrive.
        self.upward = None if above is None else (HalvingStream(self.width), above)
        capacity = min(self.height, layout.tile_size + 2 * layout.overlap + SLICE_ROWS)
        self.buffer = np.empty((capacity, self.width, 3), np.uint8)
        self.filled = 0  # rows of buffer in use
        self.buffer_top = 0  # level row of buffer[0]
        self.next_row = 0  # next tile row to cut

    @property
    def received(self) -> int:
        """Rows of this level taken in so far."""
        return self.buffer_top + self.filled

    def push(self, band: np.ndarray) -> None:
        for start in range(0, band.shape[0], SLICE_ROWS):
            self._take(band[start:start + SLICE_ROWS])

    def _take(self, rows: np.ndarray) -> None:
        count = rows.shape[0]
        if self.received + count > self.height:
            raise ValueError(f"level {self.level} got {self.received + count} rows, "
                             f"expected {self.height}")
        self.buffer[self.filled:self.filled + count] = rows
        self.filled += count
        self._cut()
        if self.upward is not None:
            halving, above = self.upward
            above.push(halving.push(rows))

    def finish(self) -> None:
        if self.received != self.height:
            raise ValueError(
                f"the picture ended after {self.received} rows, expected {self.height}"
            )
        self._cut()
        if self.upward is not None:
            halving, above = self.upward
            above.push(halving.finish())
            above.finish()

    def _cut(self) -> None:
        layout = self.layout
        while self.next_row < self.rows:
            top, bottom = layout.tile_span(self.next_row, self.height)
            if self.received < bottom:
                return
            strip = self.buffer[top - self.buffer_top:bottom - self.buffer_top]
            for column in range(self.columns):
                left, right = layout.tile_span(column, self.width)
                self.sink.put(strip[:, left:right].copy(), self.level, column, self.next_row)
            self.next_row += 1
            # Rows above the next tile row's top (its overlap included) are done.
            keep_from = layout.tile_span(self.next_row, self.height)[0]
            if self.next_row < self.rows and keep_from > self.buffer_top:
                drop = keep_from - self.buffer_top
                kept = self.filled - drop
                self.buffer[:kept] = self.buffer[drop:self.filled]
                self.filled = kept
                self.buffer_top = keep_from


#: How long a writer tries for a pyramid's lock before refusing: long enough for two
#: runs started together to settle which goes first, short beside any write.
LOCK_PATIENCE_S = 0.5
#: The pyramids each thread holds the lock of (so that writing the page, inside a
#: pyramid's write, does not wait on its own lock).
_held = threading.local()
#: What ends a writer's lock file: after the temporaries' ``.part`` (see below).
_LOCK_SUFFIX = ".part.lock"


def _held_paths() -> set[str]:
    paths: set[str] = _held.__dict__.setdefault("paths", set())
    return paths


def _lock_name(path: Path) -> Path:
    """The name a pyramid's writers lock by: ``NAME.dzi``, its suffix in lower case.

    ``NAME.dzi`` and ``NAME.DZI`` are two files on most file systems, but
    their pyramids share ``NAME_files`` and ``NAME.html``: their writers must
    exclude each other.
    """
    return path.with_suffix(".dzi")


def _descriptors(path: Path) -> list[Path]:
    """Every descriptor beside ``path`` whose tiles are ``path``'s: ``NAME.dzi`` in any case."""
    stem = path.stem
    try:
        # A folder of that name is no descriptor (and unlinking it would fail the write).
        names = [entry.name for entry in os.scandir(path.parent if str(path.parent) else ".")
                 if not entry.is_dir(follow_symlinks=False)]
    except OSError:
        return [path]
    return [path.with_name(name) for name in names
            if name.startswith(stem) and name[len(stem):].lower() == ".dzi"]


def lock_files(path: str | os.PathLike[str]) -> list[Path]:
    """Return the writers' lock files of the pyramid at ``path``, live or left by a killed run.

    Each writer locks a file of its own, named as the temporaries of
    :func:`mosaicist.paths.atomic_path` are (``.NAME.dzi.<pid>-<random>.part.lock``):
    one left by a run killed too hard to remove it (``kill -9``) is removed
    with the dead run's other temporaries by the next write, and no lock file
    beside the output outlives a run that could clean up.

    Parameters
    ----------
    path : str or os.PathLike
        The descriptor.

    Returns
    -------
    list of pathlib.Path
        The lock files beside it, in name order.
    """
    path = _lock_name(Path(path))
    pattern = re.compile(rf"\.{re.escape(_temporary_stem(path))}\.[0-9]+-[a-z0-9_]{{8}}"
                         rf"{re.escape(_LOCK_SUFFIX)}")
    try:
        names = sorted(entry.name for entry in os.scandir(path.parent if str(path.parent)
                                                             else "."))
    except OSError:
        return []
    return [path.with_name(name) for name in names if pattern.fullmatch(name)]


def _holder(lock: Path) -> bool:
    """Whether a live writer holds ``lock`` (a shared look, which its exclusive lock blocks)."""
    assert fcntl is not None
    try:
        descriptor = os.open(lock, os.O_RDONLY)
    except OSError:
        return False  # gone: released
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False  # a file system without flock: nothing to tell
    finally:
        os.close(descriptor)  # which also lets go of the look
    return False


def _being_written(path: Path, holders: list[Path]) -> MosaicistError:
    """The refusal of a second writer, naming the first one's process."""
    found = re.search(r"\.([0-9]+)-[a-z0-9_]{8}\.part\.lock$", holders[0].name)
    who = "another run" if found is None else f"another run (process {found[1]})"
    return MosaicistError(f"{path}: {who} is writing this Deep Zoom pyramid; wait for it to "
                          "end, or choose another output name")


def refuse_if_being_written(path: str | os.PathLike[str]) -> None:
    """Refuse, before any work, to write a pyramid that another run is writing now.

    Parameters
    ----------
    path : str or os.PathLike
        The descriptor.

    Raises
    ------
    MosaicistError
        When another writer holds a lock of the pyramid (:func:`lock_files`), naming it.
    """
    path = Path(path)
    if fcntl is None or os.path.abspath(_lock_name(path)) in _held_paths():
        return
    holders = [lock for lock in lock_files(path) if _holder(lock)]
    if holders:
        raise _being_written(path, holders)


@contextlib.contextmanager
def writing_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the lock of the pyramid at ``path`` for the block; refuse when another run holds one.

    The writer makes and locks (``flock``, which the kernel releases when the
    process ends, however it ends) a file of its own (:func:`lock_files`),
    then looks for another writer's held lock. Of two writers, the later to
    lock sees the other's; two that see each other both let go and try again
    after a random pause, for :data:`LOCK_PATIENCE_S`, so one goes ahead.
    Re-entrant within a thread.

    Parameters
    ----------
    path : str or os.PathLike
        The descriptor.

    Raises
    ------
    MosaicistError
        When another writer holds a lock of the pyramid, or the lock file
        cannot be made, naming the descriptor.
    """
    path = Path(path)
    key = os.path.abspath(_lock_name(path))
    held = _held_paths()
    if fcntl is None or key in held:
        yield
        return
    if _lock_name(path) != path:
        # Else the lock files of this spelling's killed writers would never be swept:
        # the write's own temporaries (atomic_path) are named after ``path``.
        remove_stale_temporaries(_lock_name(path))
    deadline = time.monotonic() + LOCK_PATIENCE_S
    while True:
        try:
            descriptor, name = tempfile.mkstemp(prefix=_temporary_prefix(_lock_name(path)),
                                                suffix=_LOCK_SUFFIX, dir=path.parent)
        except OSError as error:
            raise MosaicistError(f"{path}: cannot make the writer's lock beside it: "
                                 f"{error.strerror or error}") from None
        own = Path(name)
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX)
            except OSError as error:
                if not locks_refused(error):
                    raise MosaicistError(f"{path}: cannot lock the pyramid for writing: "
                                         f"{error.strerror or error}") from None
                # A file system without flock: written unlocked, as before.
            holders = [lock for lock in lock_files(path)
                       if lock.name != own.name and _holder(lock)]
            if not holders:
                held.add(key)
                try:
                    yield
                finally:
                    held.discard(key)
                return
        finally:
            # Removed while still held: a writer looking at it then finds it gone.
            with contextlib.suppress(OSError):
                own.unlink()
            os.close(descriptor)
        if time.monotonic() >= deadline:
            raise _being_written(path, holders)
        time.sleep(random.uniform(0.01, 0.05))


def write_deep_zoom(
    bands: Iterable[np.ndarray],
    width: int,
    height: int,
    path: str | os.PathLike[str],
    *,
    tile_size: int = DZI_TILE_SIZE,
    overlap: int = DZI_OVERLAP,
    format: str = DZI_FORMAT,
    quality: int = DEFAULT_QUALITY,
    workers: int | None = None,
    show_progress: bool = False,
) -> DeepZoomLayout:
    """Write a Deep Zoom pyramid from the full-size picture's horizontal bands.

    Parameters
    ----------
    bands : iterable of numpy.ndarray
        ``(h, width, 3)`` uint8 bands, top to bottom, of any heights summing
        to ``height``; each is used once and may be discarded afterwards.
    width, height : int
        Full size of the picture.
    path : path-like
        ``NAME.dzi``; tiles go to ``NAME_files/<level>/<column>_<row>.<format>``.
    tile_size : int
        Tile side without overlap (254 with overlap 1 makes 256 px tiles).
    overlap : int
        Pixels shared with each neighbouring tile.
    format : {"jpeg", "png", "webp"}
        Tile image format (``png`` is lossless).
    quality : int
        JPEG / WebP quality, 1-100.
    workers : int, optional
        Encoding threads (default: the usable cores).
    show_progress : bool
        Draw a progress bar of tiles written.

    Returns
    -------
    DeepZoomLayout
        The pyramid's sizes.

    Raises
    ------
    MosaicistError
        For bad settings, when the files cannot be written, or when another
        run is writing the same pyramid (:func:`writing_lock`).
    ValueError
        When the bands do not add up to ``width x height``.
    """
    path = output_path(path)  # else pathlib's TypeError for bytes, naming nothing
    if path.suffix.lower() != ".dzi":
        raise MosaicistError(f"{path}: a Deep Zoom output must end in .dzi")
    _refuse_link(path, "Deep Zoom descriptor")
    tile_format = check_layout(tile_size, overlap, format)
    quality = check_range("jpeg_quality", quality, 1, 100, whole=True)
    # Python ints (NumPy integers are taken too): they go into the descriptor and the
    # level count (a NumPy width failed there on bit_length, a float in an array shape).
    for name, side in (("width", width), ("height", height)):
        if isinstance(side, bool) or not isinstance(side, int | np.integer):
            check_range(name, side, 1, None, "pixels", whole=True)  # says why, by name
    width, height = int(width), int(height)
    if width < 1 or height < 1:
        raise MosaicistError(f"{path}: cannot write an empty {width}x{height} picture")
    check_tile_files(path, width, height, int(tile_size))
    layout = DeepZoomLayout(width, height, int(tile_size), int(overlap), tile_format)
    if workers is None:
        workers = worker_count()
    with writing_lock(path):
        _write_levels(bands, path, layout, quality, workers, show_progress)
    return layout


def _write_levels(bands: Iterable[np.ndarray], path: Path, layout: DeepZoomLayout,
                  quality: int, workers: int, show_progress: bool) -> None:
    """Write the tiles of every level, then the descriptor (see :func:`write_deep_zoom`)."""
    width, tile_format = layout.width, layout.format
    completed = False
    # Until the new tiles are complete, the old ones stay beside them (atomic_folder).
    staged = False
    try:
        _remove_legacy_staging(files_folder(path))
        with atomic_folder(files_folder(path)) as staging, progress_bar(
            layout.tile_total(), "writing Deep Zoom tiles", unit="tile", enabled=show_progress
        ) as bar:
            for level in range(layout.deepest_level + 1):
                (staging / str(level)).mkdir()
            sink = _TileSink(staging, tile_format, quality, workers, bar)
            try:
                cutter: _LevelCutter | None = None
                for level in range(layout.deepest_level + 1):
                    cutter = _LevelCutter(layout, level, sink, cutter)
                assert cutter is not None  # there is always a level 0
                for band in bands:
                    band = np.asarray(band)
                    if band.dtype != np.uint8 or band.ndim != 3 or band.shape[1:] != (width, 3):
                        raise ValueError(
                            f"bands must be (h, {width}, 3) uint8, got {band.shape} {band.dtype}"
                        )
                    cutter.push(band)
                cutter.finish()
                sink.drain()
                completed = True
            finally:
                sink.close(cancel=not completed)
            # Last before the old tiles are replaced: stopped after that, no descriptor
            # or page of the old pyramid would describe the new one's tiles.
            _withdraw(path)
        staged = True
        # The descriptor last: a pyramid is only announced once all its tiles are there.
        with atomic_path(path) as temporary:
            Path(temporary).write_text(layout.descriptor())
    except OSError as error:
        held = "" if staged or error.errno not in _FULL_DISK else _old_tiles_held(path)
        raise MosaicistError(
            f"{path}: cannot write the Deep Zoom pyramid: {error.strerror or error}{held}"
        ) from None


#: What a write to a full disk (or past a quota) fails with.
_FULL_DISK = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


def _old_tiles_held(path: Path) -> str:
    """Why a rewrite that the disk refused needed more room than the pyramid it replaces.

    The new tiles are staged beside the old ones, which go only once the new
    ones are complete: a disk with room for one pyramid but not two refuses
    the rewrite, however much the old pyramid would free. Said, with the old
    tiles' size, so that the user knows what deleting them first would free;
    empty when there were no old tiles.
    """
    held = 0
    folders = [files_folder(path)]
    try:
        while folders:
            with os.scandir(folders.pop()) as items:
                for item in items:
                    if item.is_dir(follow_symlinks=False):
                        folders.append(Path(item.path))
                    else:
                        held += item.stat(follow_symlinks=False).st_blocks * 512
    except OSError:  # gone, or unreadable: no size to tell
        return ""
    if not held:
        return ""
    return (f"; the old pyramid's tiles in {files_folder(path).name} ({byte_words(held)}) "
            "stay until the new ones are complete, so a rewrite needs room for both: delete "
            "the old pyramid first or free more space")


def _refuse_link(path: Path, what: str) -> None:
    """Refuse a pyramid's file that is a symbolic link, before any work.

    A viewer finds a pyramid's files by their names side by side
    (``NAME.dzi``, ``NAME_files``, ``NAME.html``): written through a link,
    one of them would land in another folder, or under another name, than
    the others.
    """
    if path.is_symlink():
        raise MosaicistError(
            f"{path}: the {what} is a symbolic link, and a Deep Zoom pyramid's files must sit "
            "side by side under their own names; give the folder it leads to or another "
            "output name")


def _withdraw(path: Path) -> None:
    """Remove the descriptor at ``path``, and the viewer page and manifest beside it if ours.

    Called once the new pyramid's tiles are staged, just before they replace
    the old ones: the old descriptor and page (which embeds its pyramid's
    size and grid) would otherwise describe the new tiles until they are
    written again, and forever if the run stops in between. A page or
    manifest that is not ours is left alone.
    """
    from ..viewer._manifest import manifest_path

    page = path.with_suffix(".html")
    # The manifest before its page, as the viewer writes them: a manifest never
    # outlives the page whose sources it lists.
    for companion, marker in ((manifest_path(page), _MARKERS[1]), (page, _MARKERS[0])):
        if not companion.is_symlink() and _ours(companion, marker):
            companion.unlink(missing_ok=True)
    # NAME.DZI and NAME.dzi both describe NAME_files: the other spelling's descriptor
    # would describe the new tiles with the old pyramid's size.
    for descriptor in {path, *_descriptors(path)}:
        with contextlib.suppress(FileNotFoundError):
            descriptor.unlink()


def _unannounce(path: Path, remove_tiles: bool) -> None:
    """Take back a pyramid whose viewer page could not be written.

    Its descriptor goes, with whatever of the page and manifest is ours
    (:func:`_withdraw`), so that no finished-looking output outlives a
    failed run. With ``remove_tiles`` (the page failed on the disk: a full
    one, most often) its tiles go too: they serve nothing without a
    descriptor, and a rewrite stages its new tiles beside them, so a
    retry on a disk that just ran out of space would need their room
    twice. After an interrupt they stay, as any interrupted rewrite's do:
    removing millions of files would hold up the stop.
    """
    with contextlib.suppress(OSError):
        _withdraw(path)
    if remove_tiles:
        shutil.rmtree(files_folder(path), ignore_errors=True)


class DeepZoomFormat(OutputFormat):
    """``NAME.dzi``: a Deep Zoom pyramid, plus ``NAME.html``, its viewer, when placements are known.

    Settings: ``dzi_tile_size``, ``dzi_overlap``, ``dzi_format`` and
    ``jpeg_quality`` (default :data:`DEFAULT_QUALITY`) of
    :class:`~mosaicist.options.MosaicOptions`.
    """

    name = "Deep Zoom"
    suffixes = (".dzi",)

    def check(self, path: Path, width: int, height: int, options: MosaicOptions) -> None:
        """Check the pyramid's settings (a pyramid has no size limit) and the names it takes.

        ``NAME_files`` is replaced whole: an existing one must be a pyramid
        (level folders only), never a folder that holds other files. The
        viewer's page and manifest are replaced too: existing ones must be
        files this program wrote (:func:`_ours`), never a page of the user's.
        None of the names may be a symbolic link (:func:`_refuse_link`). The
        key that signs the manifest is made now if there is none
        (:func:`mosaicist.viewer._manifest.signing_key`).

        Parameters
        ----------
        path : pathlib.Path
            The descriptor, named in the message.
        width, height : int
            The picture's size in pixels (any size fits a pyramid).
        options : MosaicOptions
            The settings it will be written with: the pyramid's layout.

        Raises
        ------
        OptionError
            When the layout settings are not valid (:func:`check_layout`), or
            the pyramid would have too many tile files (:func:`check_tile_files`).
        MosaicistError
            When one of the names cannot be replaced, naming it, another run
            is writing this pyramid now (:func:`refuse_if_being_written`), or
            the manifest's signing key can be neither read nor made.
        """
        check_layout(options.dzi_tile_size, options.dzi_overlap, options.dzi_format)
        check_tile_files(path, width, height, options.dzi_tile_size)
        refuse_long_name(path, "Deep Zoom descriptor")
        for companion, what in self.companions(path):
            # NAME.viewer.json is 7 bytes longer than NAME.dzi: a legal output name
            # could still make an illegal companion, found after every tile.
            refuse_long_name(companion, what, shown=path)
        _refuse_link(path, "Deep Zoom descriptor")
        refuse_if_being_written(path)
        for companion, what in self.companions(path)[1:]:
            _refuse_link(companion, what)
        folder = files_folder(path)
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            raise MosaicistError(f"{folder}: is not a folder, and the pyramid's tiles go "
                                 "there; move it or choose another output name")
        if folder.is_dir():
            try:
                strangers = _strangers(folder)
            except OSError as error:
                raise MosaicistError(f"{folder}: cannot read: {error.strerror or error}") from None
            if strangers:
                shown = ", ".join(strangers[:3]) + (", ..." if len(strangers) > 3 else "")
                raise MosaicistError(
                    f"{folder}: holds what is not a Deep Zoom pyramid's ({shown}), and the "
                    "pyramid replaces that folder whole; move them or choose another output "
                    "name")
        for (companion, what), marker in zip(self.companions(path)[1:], _MARKERS, strict=True):
            if companion.is_dir():
                raise MosaicistError(f"{companion}: the {what} is a directory")
            if companion.exists() and not _ours(companion, marker):
                raise MosaicistError(f"{companion}: is not a {what} mosaicist wrote, and the "
                                     f"{what} replaces it; move it or choose another output name")
        from ..viewer._manifest import signing_key

        # The page's manifest is signed last of all: a cache folder that cannot take the
        # key is said now, not after every tile is written.
        signing_key()

    def reads(self, options: MosaicOptions) -> frozenset[str]:
        """The pyramid's layout, and the quality of JPEG or WebP tiles (no resolution).

        Parameters
        ----------
        options : MosaicOptions
            The settings of the run: the quality is read only for tiles that have one.

        Returns
        -------
        frozenset of str
            The names of the settings read.
        """
        layout = frozenset({"dzi_tile_size", "dzi_overlap", "dzi_format"})
        return layout if options.dzi_format == "png" else layout | {"jpeg_quality"}

    def least_room(self, width: int, height: int, options: MosaicOptions) -> tuple[int, int]:
        """A file per tile of every level, a folder per level, the descriptor and the page;
        the levels' pixels (a third more than the picture's) at the least a pixel takes,
        and the page's inlined viewer.

        Parameters
        ----------
        width, height : int
            The picture's size in pixels.
        options : MosaicOptions
            The settings it will be written with: the pyramid's layout sets the tile count.

        Returns
        -------
        tuple of int
            ``(bytes, files)``, both lower bounds.
        """
        from ..viewer._page import least_page_bytes

        layout = DeepZoomLayout(width, height, options.dzi_tile_size, options.dzi_overlap,
                                options.dzi_format)
        files = layout.tile_total() + layout.deepest_level + 1 + 2
        # The page (written by every command, which knows the placements) inlines its
        # viewer, hundreds of kB: without it a nearly full disk took the whole pyramid,
        # then failed on the page.
        pixels = math.ceil(width * height * 4 / 3 * LEAST_BYTES_PER_PIXEL)
        return pixels + least_page_bytes(), files

    def companions(self, path: Path) -> tuple[tuple[Path, str], ...]:
        """The tile folder, and the viewer's page and manifest.

        Parameters
        ----------
        path : pathlib.Path
            The descriptor.

        Returns
        -------
        tuple of (pathlib.Path, str)
            Each other path, with a few words on what it holds.
        """
        from ..viewer._manifest import manifest_path

        page = path.with_suffix(".html")
        return ((files_folder(path), "Deep Zoom tile folder"), (page, "viewer page"),
                (manifest_path(page), "viewer manifest"))

    def write(
        self, path: Path, picture: Picture, options: MosaicOptions, show_progress: bool = False
    ) -> None:
        """Write the pyramid, then its viewer page.

        The page is written only when ``picture`` knows its placements.

        Parameters
        ----------
        path : pathlib.Path
            The descriptor; the tiles go to :func:`files_folder` of it, the page
            beside it as ``NAME.html``.
        picture : Picture
            What to write: its size, its bands of rows and, for the page, its placements.
        options : MosaicOptions
            The settings to write with: the pyramid's layout and the tiles' quality.
        show_progress : bool
            Draw a progress bar.

        Raises
        ------
        MosaicistError
            When a file cannot be written, naming it, or when another run is
            writing the same pyramid (:func:`writing_lock`).
        """
        quality = DEFAULT_QUALITY if options.jpeg_quality is None else options.jpeg_quality
        # Held to the page's end: else another run's pyramid could get this one's page.
        with writing_lock(path):
            self._write_locked(path, picture, options, quality, show_progress)

    def _write_locked(self, path: Path, picture: Picture, options: MosaicOptions,
                      quality: int, show_progress: bool) -> None:
        write_deep_zoom(picture.bands, picture.width, picture.height, path,
                        tile_size=options.dzi_tile_size, overlap=options.dzi_overlap,
                        format=options.dzi_format, quality=quality, show_progress=show_progress)
        if picture.placements is not None:
            from ..viewer import write_viewer

            page = path.with_suffix(".html")
            try:
                write_viewer(path, picture.placements, source_root=picture.source_root)
            except BaseException as error:
                # A pyramid without its page is cut short (batch makes it again): its
                # descriptor, left, announced a finished output from a failed run.
                _unannounce(path, remove_tiles=isinstance(error, OSError))
                if not isinstance(error, OSError):
                    raise
                # Else a full disk here says "No space left on device", naming no file.
                raise MosaicistError(
                    f"{page}: cannot write the viewer page: {error.strerror or error}"
                ) from None


#: What begins every viewer page and manifest this program writes (the page's
#: ``<meta name="generator">``, the manifest's ``format``), in the order of
#: :meth:`DeepZoomFormat.companions` after the tile folder.
_MARKERS = (b'<meta name="generator" content="mosaicist">',
            b'{"format": "mosaicist-viewer-manifest"')
#: Bytes of a companion's beginning searched for its marker.
_MARKER_SPAN = 4096


def _ours(path: Path, marker: bytes) -> bool:
    """Whether the file at ``path`` holds ``marker`` near its start (one of ours).

    A file that cannot be read is not ours: writing would replace what the
    user put there.
    """
    try:
        with open(path, "rb") as handle:
            return marker in handle.read(_MARKER_SPAN)
    except OSError:
        return False


DEEP_ZOOM = DeepZoomFormat()


#: Most bytes a ``.dzi`` descriptor may hold: ours are about 200, anyone's a few hundred.
DESCRIPTOR_MAX_BYTES = 64 * 1024
#: Largest width or height read from a descriptor: what a signed 32-bit integer
#: holds, far above any picture that can be written (a side of 2^31 pixels is
#: 2^31 pixels even one pixel high), and a bound that keeps sizes, level counts
#: and the arrays of :func:`read_level` sane whatever a file says.
DESCRIPTOR_MAX_SIDE = 2**31 - 1
#: A size in a descriptor: plain ASCII digits (no sign, ``_`` or other scripts' digits).
_DIGITS = re.compile(r"[0-9]{1,10}")


def _whole(attributes: dict[str, str], name: str, low: int, high: int) -> int:
    """The attribute ``name`` as a whole number from ``low`` to ``high``, else ValueError."""
    text = attributes[name].strip()
    if not _DIGITS.fullmatch(text) or not low <= int(text) <= high:
        raise ValueError(f"{name} {attributes[name][:40]!r} is not a whole number "
                         f"from {low} to {high}")
    return int(text)


class _Declared(Exception):
    """Raised from the expat handler that sees a DTD."""


def _declares_dtd(data: bytes) -> bool:
    """Whether the XML ``data`` has a document type declaration, in any encoding.

    Expat stops at the declaration, before any entity is expanded; a file
    that is not well-formed before it is left to the real parse to refuse.
    """
    from xml.parsers import expat

    def declared(*_: object) -> None:
        raise _Declared

    checker = expat.ParserCreate()
    checker.StartDoctypeDeclHandler = declared
    try:
        checker.Parse(data, True)
    except _Declared:
        return True
    except expat.ExpatError:
        return False
    return False


def read_layout(path: str | os.PathLike[str]) -> DeepZoomLayout:
    """Read a ``.dzi`` descriptor's sizes (2008 or 2009 Deep Zoom namespace).

    Only what a pyramid can be is accepted: a file of at most
    :data:`DESCRIPTOR_MAX_BYTES` without a DTD (so no entities), sides of 1
    to :data:`DESCRIPTOR_MAX_SIDE` pixels, a tile size of 1 to 4096 pixels,
    an overlap of at most half of it (the settings' own limits) and a known
    tile format, each number in plain digits.

    Parameters
    ----------
    path : str or os.PathLike
        The descriptor.

    Returns
    -------
    DeepZoomLayout
        Its picture size, tile size, overlap and tile format (the format's
        spelling in the file kept as the tiles' :attr:`~DeepZoomLayout.extension`).

    Raises
    ------
    MosaicistError
        When the file is missing or is not a Deep Zoom descriptor mosaicist
        can use, in one line naming it.
    """
    import xml.etree.ElementTree as ElementTree

    path = Path(path)
    if not path.is_file():
        raise MosaicistError(f"{path}: Deep Zoom descriptor not found")
    try:
        with open(path, "rb") as handle:
            # Read no more than a descriptor can hold: a huge file named .dzi is refused
            # without being loaded.
            data = handle.read(DESCRIPTOR_MAX_BYTES + 1)
    except OSError as error:
        raise MosaicistError(
            f"{path}: cannot read the Deep Zoom descriptor ({error.strerror or error})") from None
    if len(data) > DESCRIPTOR_MAX_BYTES:
        raise MosaicistError(f"{path}: not a Deep Zoom descriptor (over "
                             f"{DESCRIPTOR_MAX_BYTES // 1024} KiB)")
    if _declares_dtd(data):
        # A descriptor never needs a DTD, and entities are how XML files blow up
        # (nested expansion) or pull in other files: refused whatever the parser allows.
        raise MosaicistError(f"{path}: not a Deep Zoom descriptor (it declares a DTD, "
                             "which a descriptor never has)")
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as error:
        raise MosaicistError(f"{path}: not a Deep Zoom descriptor ({error})") from None
    namespace, _, tag = root.tag.rpartition("}")
    namespace = namespace.lstrip("{")
    if tag != "Image" or namespace not in DEEPZOOM_NAMESPACES:
        raise MosaicistError(f"{path}: not a Deep Zoom descriptor (root is {root.tag[:80]!r})")
    size = root.find(f"{{{namespace}}}Size")
    try:
        if size is None:
            raise ValueError("no Size element")
        spelled = root.attrib["Format"]
        tile_format = FORMAT_ALIASES.get(spelled.lower(), "")
        if not tile_format:
            raise ValueError(f"tile format {spelled[:40]!r}")
        tile_size = _whole(root.attrib, "TileSize", 1, DZI_MAX_TILE_SIZE)
        layout = DeepZoomLayout(
            _whole(size.attrib, "Width", 1, DESCRIPTOR_MAX_SIDE),
            _whole(size.attrib, "Height", 1, DESCRIPTOR_MAX_SIDE),
            tile_size, _whole(root.attrib, "Overlap", 0, tile_size // 2), tile_format,
            # The spelling is kept: it is the tiles' extension ("jpg" names N_M.jpg files).
            "" if spelled == tile_format else spelled,
        )
    except KeyError as error:
        raise MosaicistError(
            f"{path}: not a valid Deep Zoom descriptor (no {error.args[0]})") from None
    except ValueError as error:
        raise MosaicistError(f"{path}: not a valid Deep Zoom descriptor ({error})") from None
    return layout


def read_level(path: str | os.PathLike[str], level: int) -> np.ndarray:
    """Assemble one level of a written pyramid (overlaps removed) for checks and tests.

    Parameters
    ----------
    path : str or os.PathLike
        The pyramid's descriptor; the tiles are read from :func:`files_folder` of it.
    level : int
        0 (one pixel) to the layout's deepest level (the full size).

    Returns
    -------
    numpy.ndarray
        ``(height, width, 3)`` uint8 picture of ``level``.

    Raises
    ------
    MosaicistError
        When the descriptor is not usable, or a tile is missing, not a picture
        or not the size the layout gives it, naming it.
    """
    layout = read_layout(path)
    folder = files_folder(path) / str(level)
    width, height = layout.level_size(level)
    columns, rows = layout.tile_counts(level)
    out = np.zeros((height, width, 3), np.uint8)
    for row in range(rows):
        top, bottom = layout.tile_span(row, height)
        for column in range(columns):
            left, right = layout.tile_span(column, width)
            tile_path = folder / f"{column}_{row}.{layout.tile_extension}"
            try:
                with Image.open(tile_path) as tile:
                    # The size from the header, before decoding: a damaged or replaced
                    # tile of another size is refused without being decoded.
                    if tile.size != (right - left, bottom - top):
                        raise MosaicistError(
                            f"{tile_path}: tile is {tile.size[1]}x{tile.size[0]} (rows x "
                            f"columns), expected {bottom - top}x{right - left}")
                    pixels = np.asarray(tile.convert("RGB"))
            except (OSError, ValueError, Image.DecompressionBombError) as error:
                # Missing, truncated or not a picture: one line naming the tile.
                reason = getattr(error, "strerror", None) or error
                raise MosaicistError(f"{tile_path}: cannot read the Deep Zoom tile "
                                     f"({reason})") from None
            # Keep each tile's own square (drop the overlap it repeats).
            y0 = row * layout.tile_size
            x0 = column * layout.tile_size
            y1 = min(height, y0 + layout.tile_size)
            x1 = min(width, x0 + layout.tile_size)
            out[y0:y1, x0:x1] = pixels[y0 - top:y1 - top, x0 - left:x1 - left]
    return out
