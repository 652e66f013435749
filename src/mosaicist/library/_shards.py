"""Tiles kept in several packed files: the index's slots, shard files, and the sharded array.

An index's rows point at its pixels by *slot*. Slots below
:data:`SHARD_SLOTS` are in the generation's packed file ``tiles-<G>.u8``
(``slot * tile_bytes`` bytes in), as they always were. Slots from
:data:`SHARD_SLOTS` on are in *shard files*, which the manifest's ``shards``
table lists: shard ``(file, first_slot, tile_count)`` holds slots ``first_slot``
to ``first_slot + count - 1``, in order. A shard file is written whole by one
process (a Dask worker decoding its part of the source: :func:`write_shard`),
complete and flushed to disk before the transaction that lists it commits,
and never written again; it is deleted once no row points into it.

A library published from shards keeps them: its tiles are the runs of
consecutive slots of each shard, in library order (:class:`ShardedTiles`),
never copied into one array, so a cluster's indexing ends without a copy of
the whole library. :class:`SlotSpace` finds any slot's pixels, whichever file
holds them.
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import errno
import json
import os
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..aspect import height_for
from ..dedupe import mirrored_tile_signatures
from ..errors import MosaicistError
from ..sources import SourceEntry, TileSource
from ._manifest import failure_row, store_path

#: First slot of the shard files; slots below it are in ``tiles-<G>.u8``.
SHARD_SLOTS = 1 << 40
#: Name of every shard file: ``shard-<token>.u8``, its rows in ``shard-<token>.rows.json``.
SHARD_PREFIX = "shard-"
#: Tiles whose signatures a shard writer computes together.
_SIGN_EVERY = 256


class Shard(NamedTuple):
    """A row of the ``shards`` table: ``tile_count`` slots from ``first_slot`` are in ``file``."""

    file: str
    first_slot: int
    tile_count: int


def read_shards(connection: sqlite3.Connection) -> list[Shard]:
    """The manifest's shards, by first slot (reads only)."""
    rows = connection.execute("SELECT file, first_slot, tile_count FROM shards ORDER BY first_slot")
    return [Shard(*row) for row in rows]


def next_shard_slot(shards: Sequence[Shard]) -> int:
    """The first slot after every listed shard's: where the next shard's slots begin."""
    return max([SHARD_SLOTS, *(shard.first_slot + shard.tile_count for shard in shards)])


def rows_path(shard_file: Path) -> Path:
    """The rows file that goes with ``shard-<token>.u8``."""
    return shard_file.with_name(shard_file.name[:-len(".u8")] + ".rows.json")


class SlotSpace:
    """Where each slot's pixels are: the generation's packed file, or a shard file.

    Parameters
    ----------
    directory : pathlib.Path
        The index's folder.
    generation : int
        The generation of ``tiles-<G>.u8``, which holds the slots below
        :data:`SHARD_SLOTS`.
    shards : sequence of Shard
        The ``shards`` table.
    shape : (int, int, int)
        One tile's shape, ``(height, width, 3)``.
    """

    def __init__(self, directory: Path, generation: int, shards: Sequence[Shard],
                 shape: tuple[int, ...]) -> None:
        self.directory = directory
        self.store = store_path(directory, generation)
        self.shards = sorted(shards, key=lambda shard: shard.first_slot)
        self.shape = tuple(shape)
        self.tile_bytes = int(np.prod(shape))
        self._firsts = [shard.first_slot for shard in self.shards]

    @property
    def sharded(self) -> bool:
        """Whether any slot is in a shard file."""
        return bool(self.shards)

    def damaged(self, what: str) -> MosaicistError:
        """The one-line error for a manifest whose rows are damaged.

        Parameters
        ----------
        what : str
            What is wrong with them, for the message.

        Returns
        -------
        MosaicistError
            Naming the manifest, the damage and how to rebuild the index.
        """
        return MosaicistError(f"{self.directory / 'manifest.sqlite'}: index is damaged "
                              f"({what}); delete {self.directory} to rebuild it")

    def slot_array(self, values: Iterator[object] | Sequence[object], count: int) -> np.ndarray:
        """The manifest's slot values as an int64 array, refusing any that is no slot.

        Parameters
        ----------
        values : iterable
            ``count`` slot values as the manifest gave them.
        count : int
            How many.

        Returns
        -------
        numpy.ndarray
            ``(count,)`` int64 slots.

        Raises
        ------
        MosaicistError
            For a value that is not a whole number (the column's type is only
            advisory in SQLite), or a negative one: either would otherwise
            raise raw, or index the packed file from its end (another tile).
        """
        try:
            slots = np.fromiter(values, dtype=np.int64, count=count)
        except (ValueError, TypeError, OverflowError):
            raise self.damaged("a tile's slot is not a whole number") from None
        self._refuse_negative(slots)
        return slots

    def _refuse_negative(self, slots: np.ndarray) -> None:
        if len(slots) and int(slots.min()) < 0:
            raise self.damaged(f"a tile's slot is {int(slots.min())}")

    def locate(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each slot's file (-1: the packed file, else the shard's number) and tile in it.

        Raises
        ------
        MosaicistError
            For a slot that no shard holds, or a negative one (a damaged manifest).
        """
        slots = np.asarray(slots, np.int64)
        # NumPy would read a negative slot from the file's end: another tile.
        self._refuse_negative(slots)
        files = np.full(len(slots), -1, np.int64)
        local = slots.copy()
        sharded = slots >= SHARD_SLOTS
        if sharded.any():
            firsts = np.asarray(self._firsts, np.int64)
            counts = np.asarray([shard.tile_count for shard in self.shards], np.int64)
            found = np.searchsorted(firsts, slots[sharded], side="right") - 1
            offset = slots[sharded] - firsts[np.maximum(found, 0)]
            if len(firsts) == 0 or (found < 0).any() or (offset >= counts[found]).any():
                raise self.damaged("a tile is in no shard")
            files[sharded], local[sharded] = found, offset
        return files, local

    def path_of(self, file: int) -> Path:
        """The path of file number ``file`` (-1: the packed file)."""
        return self.store if file < 0 else self.directory / self.shards[file].file

    def check(self, slots: np.ndarray) -> None:
        """Refuse slots whose file is missing, not a file, or shorter than they need.

        Raises
        ------
        MosaicistError
            Naming the file and what it lacks.
        """
        files, local = self.locate(slots)
        for file in np.unique(files).tolist():
            needed = int(local[files == file].max()) + 1
            path = self.path_of(file)
            if path.is_dir():
                # Its size is the folder's, which could pass for tiles.
                raise unreadable_file(IsADirectoryError(errno.EISDIR, "Is a directory",
                                                        str(path)), path, self.directory)
            size = path.stat().st_size if path.exists() else 0
            if size < needed * self.tile_bytes:
                raise MosaicistError(
                    f"{path}: index is damaged ({size} bytes for {needed} tiles of "
                    f"{self.tile_bytes} bytes); delete {self.directory} to rebuild it")

    def gather(self, slots: np.ndarray) -> np.ndarray:
        """The pixels of ``slots``, in their order: ``(len(slots), *shape)`` uint8 (a copy)."""
        files, local = self.locate(slots)
        out = np.empty((len(files), *self.shape), np.uint8)
        for file in np.unique(files).tolist():
            rows = np.flatnonzero(files == file)
            memory = np.memmap(self.path_of(file), np.uint8, "r").reshape(-1, *self.shape)
            out[rows] = memory[local[rows]]
            del memory
        return out

    def library_tiles(self, slots: np.ndarray) -> np.ndarray | ShardedTiles:
        """The tiles at ``slots`` (in library order) as one array-like, mapped, never copied.

        Tiles of one file at consecutive slots are one run; one run is a plain
        memory map of its file, several a :class:`ShardedTiles`.

        Raises
        ------
        FileNotFoundError
            When a file is gone (a writer swapped files: read the manifest again).
        ValueError
            When a file is shorter than the slots need.
        """
        files, local = self.locate(slots)
        if len(files) == 0:
            return np.zeros((0, *self.shape), np.uint8)
        breaks = np.flatnonzero((np.diff(files) != 0) | (np.diff(local) != 1)) + 1
        starts = np.concatenate(([0], breaks))
        stops = np.concatenate((breaks, [len(files)]))
        if len(starts) > 1 and not self.sharded:
            # Only after an interrupted publish on one machine; the next update repacks it.
            memory = np.memmap(self.store, np.uint8, "r", shape=(int(local.max()) + 1,
                                                                 *self.shape))
            return np.asarray(memory[local])
        runs = [(str(self.path_of(int(files[start]))), int(local[start]), int(stop - start))
                for start, stop in zip(starts.tolist(), stops.tolist(), strict=True)]
        if len(runs) == 1:
            path, first, count = runs[0]
            memory = np.memmap(path, np.uint8, "r", shape=(first + count, *self.shape))
            return memory[first:first + count]
        return ShardedTiles.open(runs, self.shape)


def unreadable_file(error: OSError, path: Path, directory: Path) -> MosaicistError:
    """The one-line error for a packed or shard file of the index that cannot be read.

    Parameters
    ----------
    error : OSError
        Why it cannot be read (its ``filename``, if any, is the file named).
    path : pathlib.Path
        The file, where ``error`` does not name one.
    directory : pathlib.Path
        The index's folder (deleting it rebuilds the index).

    Returns
    -------
    MosaicistError
        Naming the file and the problem (and, for a damaged index, how to rebuild it).
    """
    name = error.filename if error.filename is not None else path
    if isinstance(error, IsADirectoryError):
        return MosaicistError(f"{name}: index is damaged (a folder where its packed tiles "
                              f"file must be); delete {directory} to rebuild it")
    reason = (error.strerror or str(error)).lower()
    return MosaicistError(f"{name}: cannot read the tile index ({reason})")


class ShardedTiles:
    """Tiles in library order, kept in runs over several memory-mapped files.

    Behaves as the ``(N, H, W, 3)`` uint8 array the library's tiles are
    everywhere else: ``len``, ``shape``, ``dtype``, indexing the first axis
    with an int, a slice, an integer or boolean array (then any basic index
    of the other axes), ``reshape`` keeping the first axis, and ``numpy.asarray``
    (which copies the whole library: the pipeline reads tiles a chunk at a
    time). A slice within one run is a view of its map; anything else is a
    copy. It pickles as its files' names and runs, never its pixels, so a
    Dask worker maps the same files from the shared cache.

    Parameters
    ----------
    runs : sequence of (str, int, int)
        ``(file, first tile in the file, tiles)`` of each run, in library order.
    shape : tuple of int
        One tile's shape in the files, ``(height, width, 3)``.
    tail : tuple of int, optional
        One tile's shape as this array shows it (after :meth:`reshape`).
    """

    def __init__(self, runs: Sequence[tuple[str, int, int]], shape: tuple[int, ...],
                 tail: tuple[int, ...] | None = None) -> None:
        if not runs:
            raise ValueError("a sharded array needs at least one run")
        self._runs = [(str(path), int(first), int(count)) for path, first, count in runs]
        self._file_shape = tuple(shape)
        self._tail = tuple(shape) if tail is None else tuple(tail)
        if int(np.prod(self._tail)) != int(np.prod(self._file_shape)):
            raise ValueError(f"cannot show tiles of {self._file_shape} as {self._tail}")
        ends: dict[str, int] = {}
        for path, first, count in self._runs:
            ends[path] = max(ends.get(path, 0), first + count)
        maps = {path: np.memmap(path, np.uint8, "r", shape=(end, *self._file_shape))
                for path, end in ends.items()}
        self._maps = list(maps.values())
        self._pieces = [maps[path][first:first + count].reshape(count, *self._tail)
                        for path, first, count in self._runs]
        lengths = [count for _, _, count in self._runs]
        self._starts = [0, *np.cumsum(lengths).tolist()]
        self.shape: tuple[int, ...] = (self._starts[-1], *self._tail)
        self.dtype = np.dtype(np.uint8)

    @classmethod
    def open(cls, runs: Sequence[tuple[str, int, int]], shape: tuple[int, ...]) -> ShardedTiles:
        """Map the ``runs`` of files of tiles of ``shape`` (see the class)."""
        return cls(runs, shape)

    # -- what an array has -------------------------------------------------------------

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        """Bytes of the elements."""
        return self.size

    @property
    def runs(self) -> list[tuple[str, int, int]]:
        """``(file, first tile, tiles)`` of each run, in library order."""
        return list(self._runs)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ShardedTiles(shape={self.shape}, runs={len(self._runs)})"

    def __iter__(self) -> Iterator[np.ndarray]:
        for piece in self._pieces:
            yield from piece

    def __array__(self, dtype: object = None, copy: bool | None = None) -> np.ndarray:
        if copy is False:
            raise ValueError("a sharded library cannot be shown as one array without a copy")
        whole = np.concatenate(self._pieces) if len(self._pieces) > 1 else \
            np.array(self._pieces[0])
        return whole if dtype is None else whole.astype(dtype)  # type: ignore[call-overload]

    def __reduce__(self) -> tuple:
        return (ShardedTiles, (self._runs, self._file_shape, self._tail))

    def reshape(self, *shape: int | tuple[int, ...]) -> ShardedTiles:
        """The same tiles seen with another tile shape; the first axis must stay ``len(self)``."""
        wanted = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], tuple) \
            else tuple(int(value) for value in shape)  # type: ignore[arg-type]
        if not wanted or wanted[0] != len(self):
            raise ValueError(f"a sharded array keeps its first axis ({len(self)}), "
                             f"not {wanted[:1]}")
        tail = list(wanted[1:])
        elements = int(np.prod(self._file_shape))
        if tail.count(-1) == 1:
            known = int(np.prod([value for value in tail if value != -1]))
            tail[tail.index(-1)] = elements // max(1, known)
        return ShardedTiles(self._runs, self._file_shape, tuple(tail))

    def section(self, start: int, stop: int) -> np.ndarray | ShardedTiles:
        """Tiles ``start:stop`` as their runs, mapped (``self[start:stop]`` copies across runs)."""
        start, stop, _ = slice(start, stop).indices(len(self))
        runs = []
        for (path, first, count), offset in zip(self._runs, self._starts, strict=False):
            low, high = max(start, offset), min(stop, offset + count)
            if low < high:
                runs.append((path, first + low - offset, high - low))
        if len(runs) == 1 and self._tail == self._file_shape:
            path, first, count = runs[0]
            memory = np.memmap(path, np.uint8, "r", shape=(first + count, *self._file_shape))
            return memory[first:first + count]
        if not runs:
            return np.empty((0, *self._tail), np.uint8)
        return ShardedTiles(runs, self._file_shape, self._tail)

    def astype(self, dtype: object) -> np.ndarray:
        """A copy of every tile as ``dtype``."""
        return np.asarray(self).astype(dtype)  # type: ignore[call-overload]

    @property
    def _mmap(self) -> _PagesOfMaps:
        # What mosaicist._runtime.release_pages looks for on a memory map: it
        # drops the pages of every file at once.
        return _PagesOfMaps(self._maps)

    # -- indexing ----------------------------------------------------------------------

    def __getitem__(self, key: object) -> np.ndarray:
        if isinstance(key, tuple):
            if not key:
                return np.asarray(self)
            head, rest = key[0], key[1:]
            picked = self[head]
            if isinstance(head, (int, np.integer)):
                return picked[rest]
            return picked[(slice(None), *rest)]
        if isinstance(key, (int, np.integer)):
            position = int(key) + (len(self) if int(key) < 0 else 0)
            if not 0 <= position < len(self):
                raise IndexError(f"index {int(key)} is out of bounds for {len(self)} tiles")
            piece = bisect.bisect_right(self._starts, position) - 1
            return self._pieces[piece][position - self._starts[piece]]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                return self._range(start, max(start, stop))
            return self._take(np.arange(start, stop, step))
        if key is Ellipsis:
            return np.asarray(self)
        index = np.asarray(key)
        if index.dtype == bool:
            if index.shape != (len(self),):
                raise IndexError(f"a boolean index of {index.shape} for {len(self)} tiles")
            index = np.flatnonzero(index)
        elif not np.issubdtype(index.dtype, np.integer):
            if index.size:
                raise IndexError(f"tiles are indexed by integers, not {index.dtype}")
            index = index.astype(np.int64)
        return self._take(index)

    def _range(self, start: int, stop: int) -> np.ndarray:
        if stop <= start:
            return np.empty((0, *self._tail), np.uint8)
        first = bisect.bisect_right(self._starts, start) - 1
        last = bisect.bisect_right(self._starts, stop - 1) - 1
        if first == last:
            offset = self._starts[first]
            return self._pieces[first][start - offset:stop - offset]
        parts = [self._pieces[first][start - self._starts[first]:]]
        parts += self._pieces[first + 1:last]
        parts.append(self._pieces[last][:stop - self._starts[last]])
        return np.concatenate(parts)

    def _take(self, index: np.ndarray) -> np.ndarray:
        flat = index.astype(np.int64).ravel()
        flat = np.where(flat < 0, flat + len(self), flat)
        if len(flat) and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"an index is out of bounds for {len(self)} tiles")
        out = np.empty((len(flat), *self._tail), np.uint8)
        piece_of = np.searchsorted(np.asarray(self._starts), flat, side="right") - 1
        order = np.argsort(piece_of, kind="stable")
        edges = np.flatnonzero(np.diff(piece_of[order])) + 1
        for group in np.split(order, edges):
            if len(group):
                piece = int(piece_of[group[0]])
                out[group] = self._pieces[piece][flat[group] - self._starts[piece]]
        return out.reshape(*index.shape, *self._tail)


class _PagesOfMaps:
    """``madvise`` on several memory maps at once (see :attr:`ShardedTiles._mmap`)."""

    def __init__(self, maps: Sequence[np.memmap]) -> None:
        self._maps = maps

    def madvise(self, advice: int) -> None:
        for memory in self._maps:
            mapping = getattr(memory, "_mmap", None)
            if mapping is not None:
                with contextlib.suppress(OSError, ValueError, AttributeError):
                    mapping.madvise(advice)


# -- shard files ---------------------------------------------------------------------


#: Fields of a row of ``tiles`` in a rows file (those of
#: :class:`~mosaicist.library._update.IndexedTile`), and of a row of ``failures``.
_ROW_FIELDS = 12
_FAILURE_FIELDS = 4


class ShardRows(NamedTuple):
    """What a shard file holds, as written beside it.

    ``tiles`` are rows of ``staged`` (:class:`~mosaicist.library._update.IndexedTile`
    fields) with slots counted from the shard's first tile; ``failures``
    are rows of ``failures``.
    """

    tiles: list[tuple]
    failures: list[tuple]


def write_shard(
    source: TileSource, entries: Sequence[SourceEntry], width: int, aspect: tuple[int, int],
    crop: str, directory: Path, *, colour_profiles: str = "ignore",
) -> tuple[str, int, int]:
    """Decode ``entries`` into a new shard file of the index in ``directory``.

    The pixels go to ``shard-<token>.u8`` and the rows (source id, slot in
    the shard, size, modification time, content hash, crop window,
    signature; and the failures) to ``shard-<token>.rows.json``, each
    written under a ``.part`` name, flushed to disk and renamed, pixels
    first: a rows file names a whole shard. What a killed writer leaves is
    a ``.part`` file, removed by the next update; one that cannot write (a
    full disk, a folder gone or read-only) leaves nothing and says so in one
    line. Decoding runs in this process: on a cluster the workers are the
    parallelism.

    Parameters
    ----------
    source : TileSource
        Decodes the entries.
    entries : sequence of SourceEntry
        The entries, in library order.
    width : int
        The tiles' width (``match_px``).
    aspect : (int, int)
        Their aspect.
    crop : str
        How their crop windows are placed (``centre`` or ``subject``).
    directory : pathlib.Path
        The index's folder (it must exist).
    colour_profiles : {"ignore", "convert"}
        Whether the pictures' embedded ICC profiles are applied, as the
        index's own tiles were decoded (its ``colour_profiles``).

    Returns
    -------
    (str, int, int)
        The shard file's name, its tiles, and the entries that failed.

    Raises
    ------
    ShardWriteError
        When the shard or its rows cannot be written (no space left, the
        folder removed or read-only), naming the file as it would have been
        called; its ``.part`` files are removed.
    """
    # Imported here: _update imports this module. Its decode is the one a single
    # machine's update runs, so that the shard's tiles are that index's, tile for tile.
    from ._update import TileFormat, _write_all, decode_tiles

    single = copy.copy(source)
    if hasattr(single, "workers"):
        single.workers = 1  # a worker process of a cluster starts no pool of its own
    token = uuid.uuid4().hex
    shard = directory / f"{SHARD_PREFIX}{token}.u8"
    rows_file = rows_path(shard)
    tiles: list[tuple] = []
    failures: list[tuple] = []
    unsigned: list[tuple[int, np.ndarray]] = []

    def sign() -> None:
        if unsigned:
            hashes, mirrors, colours = mirrored_tile_signatures(
                np.stack([pixels for _, pixels in unsigned]))
            for (row, _), phash, mirror, colour in zip(
                    unsigned, hashes.tolist(), mirrors.tolist(), colours.tolist(), strict=True):
                packed = colour[0] << 16 | colour[1] << 8 | colour[2]
                tiles[row] = (*tiles[row][:9], signed_hash(phash), packed, signed_hash(mirror))
            unsigned.clear()

    shape = (height_for(width, aspect), width, 3)
    partial = shard.with_name(shard.name + ".part")
    try:
        with _writing(shard):
            # Unbuffered: a buffered file's close flushes what a failed write left in its
            # buffer, and its OSError (a full disk's, again) replaced the one-line error.
            handle = open(partial, "wb", buffering=0)  # noqa: SIM115 - closed below
        try:
            decoded_tiles = decode_tiles(single, entries, TileFormat(
                width, aspect, crop, colour_profiles=colour_profiles))
            for decoded in decoded_tiles:
                entry = decoded.entry
                if decoded.pixels is None or decoded.content_hash is None:
                    failures.append(failure_row(entry.source_id, entry.size, entry.mtime_ns,
                                                decoded.error, decoded.transient))
                    continue
                if decoded.pixels.shape != shape:
                    failures.append((entry.source_id, entry.size, entry.mtime_ns,
                                     f"the source made a tile of {decoded.pixels.shape}, "
                                     f"not {shape}"))
                    continue
                with _writing(shard):
                    _write_all(handle, np.ascontiguousarray(decoded.pixels, np.uint8).tobytes())
                window = decoded.window
                row = (entry.source_id, len(tiles), entry.size, entry.mtime_ns,
                       decoded.content_hash,
                       *((None,) * 4 if window is None else tuple(int(v) for v in window)))
                if decoded.signature is not None:
                    tiles.append((*row, *signature_columns(decoded.signature)))
                else:
                    tiles.append((*row, None, None, None))
                    unsigned.append((len(tiles) - 1, decoded.pixels))
                    if len(unsigned) >= _SIGN_EVERY:
                        sign()
            sign()
            with _writing(shard):
                # fsync and close are where a full disk may first say so (NFS, delayed
                # allocation), not only the writes.
                os.fsync(handle.fileno())
                handle.close()
        finally:
            with contextlib.suppress(OSError):
                handle.close()  # after an error: its own error, if any, would replace it
        with _writing(shard):
            os.replace(partial, shard)
        with _writing(rows_file):
            _write_rows(rows_file, ShardRows(tiles, failures))
    except BaseException:
        for leftover in (partial, shard, rows_file.with_name(rows_file.name + ".part")):
            # OSError, not only FileNotFoundError: a folder gone or read-only refuses
            # these too, and that error would replace the one that says why.
            with contextlib.suppress(OSError):
                leftover.unlink()
        raise
    return shard.name, len(tiles), len(failures)


class ShardWriteError(MosaicistError):
    """A shard file, or its rows, that could not be written (the message names it).

    A worker's error, sent back to the run as it is: the run tells a folder
    removed under it from one that cannot be written
    (:class:`mosaicist.distributed._index.ClusterDecoder`).
    """


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Make an ``OSError`` of the block a :class:`ShardWriteError` naming ``path``.

    Only around writes: an error of the source's own (reading a picture) is
    not the index's, and keeps its own words.
    """
    # Imported here: _update imports this module.
    from ._update import _write_error

    try:
        yield
    except OSError as error:
        # The file as it is called once written, not its ``.part`` (removed): a full
        # disk's write names no file at all.
        raise ShardWriteError(str(_write_error(path, error))) from None


def read_shard_rows(directory: Path, shard_file: str) -> ShardRows:
    """The rows written beside ``shard_file`` by :func:`write_shard`.

    Raises
    ------
    MosaicistError
        When the rows file is missing or unreadable (a shard is only listed
        with its rows).
    """
    path = rows_path(directory / shard_file)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        tiles = [tuple(row) for row in data["tiles"]]
        failures = [tuple(row) for row in data["failures"]]
    except OSError as error:
        # The reason alone: the error's own text repeats the path after it.
        raise MosaicistError(f"{path}: cannot read a shard's rows "
                             f"({error.strerror or error})") from None
    except (ValueError, KeyError, TypeError):
        raise MosaicistError(f"{path}: cannot read a shard's rows (the file is damaged: "
                             f"not the rows a worker writes)") from None
    # Rows of a worker from before the mirrors' hashes have one column less.
    if (any(len(row) not in (_ROW_FIELDS - 1, _ROW_FIELDS) for row in tiles)
            or any(len(row) != _FAILURE_FIELDS for row in failures)):
        raise MosaicistError(f"{path}: cannot read a shard's rows (the file is damaged: "
                             f"not the rows a worker writes)")
    return ShardRows(tiles, failures)


def _write_rows(path: Path, rows: ShardRows) -> None:
    partial = path.with_name(path.name + ".part")
    # dumps, not dump: only the former runs json's C encoder.
    text = json.dumps({"tiles": rows.tiles, "failures": rows.failures}, ensure_ascii=False,
                      separators=(",", ":"))
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def signed_hash(phash: int) -> int:
    """A 64-bit hash as the signed integer SQLite stores."""
    return phash - (1 << 64) if phash >= 1 << 63 else phash


def signature_columns(signature: Sequence[int]) -> tuple[int, int, int | None]:
    """A source's signature as the manifest's ``phash``, ``mean_rgb`` and ``phash_mirror``.

    Parameters
    ----------
    signature : sequence of int
        ``(hash, packed mean colour, mirror's hash)``, or ``(hash, packed mean
        colour)`` from a source that does not give the mirror's
        (:attr:`mosaicist.sources.DecodedTile.signature`).

    Returns
    -------
    (int, int, int or None)
        The hashes as signed 64-bit numbers; None where the mirror's is not given.
    """
    mirror = signed_hash(signature[2]) if len(signature) > 2 else None
    return signed_hash(signature[0]), signature[1], mirror
