"""Bringing a tile index up to date with its source, crash-safely.

An update runs under the index's ``write.lock`` in three stages:

**plan** (:func:`_plan`)
    Scan the source and compare each entry's size and modification time with
    the published, staged and failed rows of the manifest; entries that match
    none are decoded. A match whose stamp is too recent to vouch for the
    content ("racy", below) is checked by the content's hash first. When the
    scan is the one last published, nothing is staged, no stamp is racy and
    no failure that may pass waits to be tried again, stop there ("nothing
    changed").
**decode** (:func:`_decode_into_store`)
    Decode those entries, append their pixels to the current packed file
    ``tiles-<G>.u8`` after every slot in use, and record them in the
    ``staged`` table (failures in ``failures``) in batches: each batch's
    pixels are fsynced before the transaction that commits its rows.
    A new index of a folder first looks for its entries in the indexes of
    other folders (:class:`_MovedTiles`): a library moved, renamed, copied or
    reached through a link is the same files, and their tiles are taken from
    the index of the path it had instead of being decoded again.
**publish** (:func:`_publish`)
    Lay out the library in scan order; when its slots are not ``0..N-1`` in
    order, copy the pixels to a new packed file ``tiles-<G+1>.u8`` (durably,
    under a temporary name) so that readers get one contiguous memory map.
    Then replace the published rows, clear ``staged`` and set ``generation``
    in one transaction, and only then delete the old packed file.

Why an interrupted update loses nothing already indexed: published pixels
are never written to (new pixels only go after ``next_slot``, and a repack
writes a new file), so readers, who see only the published rows, keep
seeing the last published library. Every committed ``staged`` row points at
pixels that reached the disk before the row committed, so the next update
reuses them instead of decoding again; pixels of a batch that did not commit
lie after the committed ``next_slot`` and are cut off by the next update.
Until the publishing transaction commits, the manifest still names the old
packed file, which is still there.

What an interrupted update can leave behind, the next one removes once it
holds the lock (:func:`_remove_leftovers`): a repack's temporary
``tiles-<G>.u8.part`` and packed files of other generations. A failed update
removes them itself where it can, and cuts the packed file back to its
committed slots, so that a full disk is not kept full. The temporaries of
killed writers of the caches beside the index (features, prepared tiles,
near-duplicates) go too, once their writer has been gone a while.

**On a cluster** (:mod:`mosaicist.distributed`) the decode stage is done
elsewhere (a ``decoder``): the cluster's workers each decode a part of the
entries into a shard file of their own, and each finished shard is listed
in the ``shards`` table with its rows staged in one transaction (see
:mod:`mosaicist.library._shards`). Publishing then keeps the shards as they
are (no copy in library order) and moves to a new generation, the packed
file of the old one kept as a shard where the library still uses it.
Every cluster update adds shards; past :data:`MOST_SHARDS` the smallest are
copied into one new shard at publishing (:func:`_merge_small_shards`). An
update without a decoder lays such a library out in one packed file again.

**Racy stamps** (as "racy git" names them). A file system keeps times in
ticks (a few milliseconds; a second on some, two on FAT), so a file
written again, at its old size, in the tick in which an update read it
keeps its stamp, and comparing stamps alone would keep the tile of the
first content for good. A stamp is therefore only trusted once it is
safely older than the moment the entry's content was read
(:func:`_is_racy`): each publish records that moment for its rows (the
wall clock when the plan, after the scan, was made: every row of the
library was read, or its stamp seen unchanged, after that) as the meta
value ``stamps_checked_ns``, and ``staged_checked_ns`` for the staged rows
of an update that did not publish. A later update asks the
source for the content hash of every entry whose stamp matches a row but
is racy (:meth:`~mosaicist.sources.TileSource.content_hashes`: a file's
bytes hashed, no decoding) and decodes those whose hash differs; ``racy``
(how many published rows were racy when published) keeps such an index
from the "nothing changed" stop until they were checked. A library whose
files are older than a few seconds is never read again. (A failure, which
has no hash, is trusted by its stamp: it is reported on every run.)

Why a killed update never blocks the next one: the lock is a POSIX record
lock (``lockf``), which belongs to the process that took it. The kernel
drops it when that process dies, even while other processes (the decoding
workers it forked, which share the open file) live on, and forked children
never hold it. The workers end with their parent anyway
(:mod:`mosaicist.sources.folder`), and SIGTERM unwinds an update like an
interrupt (:func:`mosaicist._runtime.unwind_on_terminate`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import os
import re
import shutil
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np

from .._runtime import unwind_on_terminate
from ..aspect import SQUARE, format_aspect, height_for
from ..crop import Window
from ..dedupe import SIGNATURE_PX, mirrored_tile_signatures
from ..errors import MosaicistError, printable
from ..imaging import ImageReadError, content_hash, decode_tile, read_tile_bytes
from ..paths import CACHE_ENV, remove_dead_temporaries, sync_folder
from ..progress import progress_bar
from ..sources import DecodedTile, SourceEntry, TileSource
from ..sources.base import scan_warnings
from ._manifest import (
    ORDER_FILE,
    SCHEMA_VERSION,
    SIGNATURE_RULE,
    connect,
    connect_read_only,
    failure_row,
    get_meta,
    is_out_of_space,
    manifest_errors,
    meta_count,
    new_publication,
    order_path,
    order_stamp,
    partial_path,
    retry_pending,
    set_meta,
    store_path,
    transaction,
    upgrade,
)
from ._shards import (
    SHARD_PREFIX,
    SHARD_SLOTS,
    Shard,
    SlotSpace,
    next_shard_slot,
    read_shards,
    signature_columns,
)

#: Decoded tiles committed per transaction during an update.
COMMIT_EVERY = 2048
#: ...or after this many seconds, whichever comes first.
COMMIT_SECONDS = 2.0
#: Tiles copied at a time when writing a packed file in library order.
COPY_CHUNK = 8192
#: Shards a library published from a cluster may use before its smallest are merged
#: into one: each is a file to open and a memory map, and every cluster update adds
#: some (see :func:`_merge_small_shards`).
MOST_SHARDS = 64
#: Decoded tiles whose signatures are computed together (bounded memory, vectorised).
SIGN_EVERY = 256
#: Bytes of packed tiles read at a time to sign the rows of an older index.
_SIGN_BYTES = 64 << 20
#: Photos signed anew per committed transaction where an index's signatures are of the
#: rule before (:func:`_resign_photos`), and the threads that read and decode them (the
#: reads wait on the disk, the decodes release the interpreter).
RESIGN_EVERY = 1024
RESIGN_THREADS = min(8, os.cpu_count() or 1)
#: The ``signature_rule`` of a manifest some of whose rows lack their mirrors' hashes
#: (``phash_mirror``): the first grouping of near-duplicates gives them theirs
#: (:func:`sign_mirrors`), not a plain update (only the grouping reads them).
_RULE_BEFORE_MIRRORS = 2
#: How every JPEG file starts (SOI, then a marker).
_JPEG_START = b"\xff\xd8\xff"

#: Files of an index folder that an update may have left: packed files
#: (``tiles-<G>.u8``, removed unless G is the published generation), a
#: repack's temporary (``tiles-<G>.u8.part``) and the temporaries earlier
#: versions named ``.tiles-<G>.u8.<random>.part.u8``.
_LEFTOVER = re.compile(r"tiles-\d+\.u8(\.part)?|\.tiles-\d+\.u8\..*\.part\.u8")
#: Seconds a dead writer's temporary in the index's folders must have been left unchanged
#: before an update removes it (:func:`~mosaicist.paths.remove_dead_temporaries`): its PID
#: is only checked on this machine, and a writer elsewhere that shares the cache
#: (:mod:`mosaicist.distributed`) may be a while between two writes.
DEAD_TEMPORARY_AGE = 3600.0
#: Seconds between tries of an index lock whose wait the kernel refused as a deadlock.
LOCK_POLL_SECONDS = 0.05
#: Files of shards (:mod:`mosaicist.library._shards`), removed unless the manifest lists them.
_SHARD_FILE = re.compile(re.escape(SHARD_PREFIX) + r"[0-9a-f]+\.(u8|rows\.json)(\.part)?")
#: How long before the moment an entry's content was read its stamp must lie to vouch for
#: that content (see "Racy stamps" above), for a stamp in whole seconds: a file system that
#: keeps seconds (two on FAT), and a second more for its clock and this machine's.
RACY_COARSE_NS = 3 * 10**9
#: ...and for a stamp with a fraction of a second: ticks of milliseconds, and a share's
#: clock up to a second behind this machine's.
RACY_FINE_NS = 10**9


@dataclass(frozen=True)
class TileFormat:
    """What an index holds: tiles ``width`` pixels wide of ``aspect``, cut by ``crop``.

    Attributes
    ----------
    width : int
        The tiles' width (``match_px``).
    aspect : (int, int)
        Their aspect; the height is ``height_for(width, aspect)``.
    crop : str
        How the source places the crop windows: ``centre`` or ``subject``
        (:mod:`mosaicist.crop`).
    method : str
        What that crop does here, for the manifest: ``centre``, ``subject``
        or ``detail`` (:func:`mosaicist.crop.crop_method`).
    colour_profiles : str
        Whether the pictures' embedded ICC profiles were applied: ``ignore``
        or ``convert`` (:mod:`mosaicist._profiles`); for a source whose
        pictures carry none (:attr:`~mosaicist.sources.TileSource.reads_profiles`
        false) the value its crop's presets use, the tiles being the same.
    """

    width: int
    aspect: tuple[int, int] = SQUARE
    crop: str = "centre"
    method: str = "centre"
    colour_profiles: str = "ignore"

    @property
    def height(self) -> int:
        """The tiles' height."""
        return height_for(self.width, self.aspect)

    @property
    def tile_bytes(self) -> int:
        """Bytes of one tile in the packed file."""
        return self.width * self.height * 3


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
        including those that failed in earlier runs and are unchanged. The
        reason of a failure that may pass (a read that failed for a reason of
        the moment) says it will be tried again next run.
    seconds : float
        Wall time of the update.
    """

    tiles: int = 0
    decoded: int = 0
    reused: int = 0
    removed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


class IndexedTile(NamedTuple):
    """A tile whose pixels are in the packed file: a row of ``staged``.

    The fields are in the table's column order, so that a row goes to
    ``executemany`` as it is. The crop window and the signature may be None
    (rows of schema 1).
    """

    source_id: str
    slot: int
    size: int
    mtime_ns: int
    content_hash: str
    crop_left: int | None = None
    crop_top: int | None = None
    crop_width: int | None = None
    crop_height: int | None = None
    phash: int | None = None
    mean_rgb: int | None = None
    phash_mirror: int | None = None


class PublishedTile(NamedTuple):
    """A row of ``tiles``: a tile of the published library at ``position``.

    The fields of :class:`IndexedTile`, in the same order, then ``position``;
    so the publish stage can lay out a library of staged and published rows
    without converting one to the other.
    """

    source_id: str
    slot: int
    size: int
    mtime_ns: int
    content_hash: str
    crop_left: int | None
    crop_top: int | None
    crop_width: int | None
    crop_height: int | None
    phash: int | None
    mean_rgb: int | None
    phash_mirror: int | None
    position: int


class Failure(NamedTuple):
    """A row of ``failures``: an entry that could not be decoded, and why.

    The fields are in the table's column order, so that a row goes to
    ``executemany`` as it is.
    """

    source_id: str
    size: int
    mtime_ns: int
    error: str


@dataclass(frozen=True)
class UpdatePlan:
    """What the plan stage found and decided.

    Attributes
    ----------
    entries : list of SourceEntry
        The source's scan, in library order.
    digest : str
        :func:`_scan_digest` of ``entries``; stored when the update publishes.
    generation : int
        Generation of the packed file the published tiles are in.
    next_slot : int
        First slot of that file that no committed row uses; decoded pixels go
        there and after.
    published, staged, failures : dict
        The manifest's ``tiles``, ``staged`` and ``failures`` rows by source id.
    to_decode : list of SourceEntry
        Entries that match none of those rows by size and modification time,
        or whose racy stamp matches but not their content, in scan order.
    checked_ns : int
        The wall clock, in nanoseconds, when the rows were compared with the
        scan: recorded as ``stamps_checked_ns`` when the update publishes.
    """

    entries: list[SourceEntry]
    digest: str
    generation: int
    next_slot: int
    published: dict[str, PublishedTile]
    staged: dict[str, IndexedTile]
    failures: dict[str, Failure]
    to_decode: list[SourceEntry]
    checked_ns: int = 0


class Decoder(Protocol):
    """Decodes an update's entries somewhere else (a cluster) and stages them as shards.

    Called under the write lock with the entries the plan chose, in library
    order. It must stage each finished part with :func:`stage_shard` (the
    shard file complete on disk first) and count ``stats.decoded``; what it
    staged is kept if it is interrupted.

    It must decode as :func:`decode_tiles` does, ``tile.colour_profiles``
    included; one that does so says it with a true attribute
    ``converts_profiles``. Without it, an index whose tiles are to have their
    profiles converted is decoded here instead (tiles of the other setting
    must never join it).
    """

    def __call__(
        self, source: TileSource, entries: Sequence[SourceEntry], tile: TileFormat,
        directory: Path, connection: sqlite3.Connection, stats: UpdateStats,
        show_progress: bool,
    ) -> None: ...


def decode_tiles(source: TileSource, entries: Sequence[SourceEntry],
                 tile: TileFormat) -> Iterator[DecodedTile]:
    """``source.decode`` of ``entries`` into ``tile``'s tiles, called as the source takes it.

    Sources written before aspects take two arguments (square centre crops
    are what they did), and those written before profiles four; only a
    source that reads profiles
    (:attr:`~mosaicist.sources.TileSource.reads_profiles`) is given
    ``colour_profiles``, and only ``convert`` (``ignore`` is every decode's
    default).

    Parameters
    ----------
    source : TileSource
        Decodes the entries.
    entries : sequence of SourceEntry
        What to decode.
    tile : TileFormat
        The tiles' size, aspect, crop and colour profiles.

    Returns
    -------
    iterator of DecodedTile
        The source's, one per entry in order.
    """
    if tile.colour_profiles == "convert" and getattr(source, "reads_profiles", False):
        return source.decode(entries, tile.width, tile.aspect, tile.crop,  # type: ignore[call-arg]
                             colour_profiles="convert")
    if tile.aspect == SQUARE and tile.crop == "centre":
        return source.decode(entries, tile.width)
    return source.decode(entries, tile.width, tile.aspect, tile.crop)


def index_profiles(connection: sqlite3.Connection) -> str:
    """How the tiles of the manifest's index were decoded: ``ignore`` or ``convert``.

    The meta value ``colour_profiles``; an index without it was made before the
    setting existed, when profiles were ignored, but for those of the version that
    converted them all (its meta value ``decode`` 2).
    """
    recorded = get_meta(connection, "colour_profiles")
    if recorded is not None:
        return recorded
    return "convert" if get_meta(connection, "decode") == "2" else "ignore"


def update_index(
    source: TileSource, tile: TileFormat | int, directory: Path, show_progress: bool,
    quiet: bool, *, decoder: Decoder | None = None,
) -> UpdateStats:
    """Bring the index of ``source`` in ``directory`` up to date and publish it.

    Waits for any other process updating the same index (``write.lock``),
    so that updates run one at a time; readers are never blocked. An
    interrupted update (an exception, ``KeyboardInterrupt``, a crash) keeps
    what it committed, and the next one resumes from it (see the module
    docstring).

    Where the index's folder cannot be written (a shared or write-protected
    cache), nothing is written: the index is only read, and used as it is
    when the source's scan is the published one
    (:func:`_unchanged_read_only`).

    Parameters
    ----------
    source : TileSource
        The source to index.
    tile : TileFormat or int
        The tiles' size, aspect and crop (an int: square centre crops of that side).
    directory : pathlib.Path
        The index's folder (it must exist).
    show_progress : bool
        Draw a progress bar on stderr while decoding.
    quiet : bool
        Do not print skipped entries, what the scan left out (links to folders,
        pipes) or that we wait for another process.
    decoder : Decoder, optional
        Decode elsewhere, into shards (a cluster, see :mod:`mosaicist.distributed`);
        the published library then keeps its shards.

    Returns
    -------
    UpdateStats
        What the update did.

    Raises
    ------
    MosaicistError
        When the packed file is shorter than the manifest says it is, or a
        file of the index cannot be written (a full disk...); the message
        names the file. When the index folder cannot be written and the
        index is not up to date.
    """
    started = time.perf_counter()
    if isinstance(tile, int):
        tile = TileFormat(tile)
    if (decoder is not None and tile.colour_profiles == "convert"
            and getattr(source, "reads_profiles", False)
            and not getattr(decoder, "converts_profiles", False)):
        decoder = None  # it would decode profiles ignored: see Decoder
    with unwind_on_terminate(), _write_lock(directory, quiet) as refused, \
            manifest_errors(directory), scan_warnings(not quiet):
        connection = None if refused is not None else _connect_writer(directory)
        if connection is None:
            if refused is None:  # the disk is full: an index up to date is still served
                refused = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            stats = _unchanged_read_only(source, directory, refused, tile)
        else:
            try:
                stats = _update_locked(source, tile, directory, connection, show_progress,
                                       decoder)
            finally:
                connection.close()
    stats.seconds = time.perf_counter() - started
    if stats.failed and not quiet:
        for source_id, reason in stats.failed[:20]:
            # A warning as the folder's others are (files left out), not an error: the
            # index goes on without the file.
            print(printable(f"mosaicist: warning: skipped {source_id}: {reason}"),
                  file=sys.stderr)
        if len(stats.failed) > 20:
            print(f"mosaicist: warning: ... and {len(stats.failed) - 20:,} more skipped",
                  file=sys.stderr)
    return stats


# The lock file's lock belongs to the process, so threads of one process
# updating the same index wait for each other here (by index folder).
_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()
#: Lock files on which this process holds (or is taking) the ``flock`` of older versions
#: (:func:`_lock_as_older_versions`), by descriptor: closed in forked children.
_flocked: set[int] = set()


def _forget_thread_locks() -> None:
    # A forked child holds none of its parent's locks, whatever they were at the fork.
    global _thread_locks_guard
    _thread_locks_guard = threading.Lock()
    _thread_locks.clear()
    # A flock belongs to the open file, which the child shares: were the child to keep
    # it open (a decoding worker), its parent's lock would outlive a parent killed.
    for descriptor in list(_flocked):
        with contextlib.suppress(OSError):
            os.close(descriptor)
    _flocked.clear()


os.register_at_fork(after_in_child=_forget_thread_locks)


#: Why a lock file cannot be opened in a folder that cannot be written (by this user,
#: or at all): the index is then only read (see :func:`_write_lock`).
_NOT_WRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


@contextlib.contextmanager
def _write_lock(directory: Path, quiet: bool) -> Iterator[OSError | None]:
    """Hold the index's ``write.lock`` for the block, waiting for it if needed.

    The lock is a POSIX record lock on the file, which belongs to the
    process that holds it: the kernel releases it when that process dies
    (``kill -9`` included), whatever other processes still have the file
    open, and forked children (decoding workers) never hold it. So a lock
    is only ever waited for while its holder runs. The holder writes its
    PID in the file, so that a waiting process can say whom it waits for.
    The ``flock`` that versions before the record lock took is taken too
    (:func:`_lock_as_older_versions`), so that one of those, still running
    on a shared cache, never updates the index at the same time.

    Parameters
    ----------
    directory : pathlib.Path
        The index's folder.
    quiet : bool
        Do not say on stderr that we wait for another process.

    Yields
    ------
    OSError or None
        None while the lock is held; where the lock file cannot be opened
        for writing because the folder or the file is not writable, the
        error, and the block runs without the lock (it must write nothing).

    Raises
    ------
    MosaicistError
        When the lock file cannot be opened for another reason, or locked.
    """
    path = directory / "write.lock"
    with _thread_locks_guard:
        thread_lock = _thread_locks.setdefault(os.path.realpath(directory), threading.Lock())
    if not thread_lock.acquire(blocking=False):
        if not quiet:
            print(f"mosaicist: waiting for another thread that is updating the index in "
                  f"{directory}", file=sys.stderr)
        thread_lock.acquire()
    try:
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                                 0o666)
        except OSError as error:
            if is_not_writable(error):
                # A read-only cache can still serve an index that is up to date.
                yield error
                return
            raise MosaicistError(f"{path}: cannot open the index's lock: "
                                 f"{error.strerror or error}") from None
        try:
            _lock_file(descriptor, path, quiet)
            _lock_as_older_versions(descriptor, path, quiet)
            _record_holder(descriptor)
            try:
                yield None
            finally:
                with contextlib.suppress(OSError):
                    os.ftruncate(descriptor, 0)
                with contextlib.suppress(OSError):
                    # Whoever else has the file open (a child forked meanwhile by
                    # another thread): the flock is of the open file, released here.
                    # Before the record lock: the next writer of this version, let in
                    # by it, found this flock still held and said it waited for "an
                    # older version of mosaicist" (1 in 3 of two indexes started at once).
                    fcntl.flock(descriptor, fcntl.LOCK_UN)
                with contextlib.suppress(OSError):
                    fcntl.lockf(descriptor, fcntl.LOCK_UN)
        finally:
            # Closing also releases the locks, should unlocking have failed.
            _flocked.discard(descriptor)
            os.close(descriptor)
    finally:
        thread_lock.release()


def _lock_file(descriptor: int, path: Path, quiet: bool) -> None:
    """Take the POSIX lock of the open ``write.lock``, waiting while a live process holds it."""
    if _lock_now(descriptor, path):
        return
    if not quiet:
        holder = _holder(descriptor)
        who = "another process" if holder is None else f"process {holder}"
        print(f"mosaicist: waiting for {who} that is updating this index ({path})",
              file=sys.stderr)
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX)
        return
    except OSError as error:
        if error.errno != errno.EDEADLK:
            raise MosaicistError(f"{path}: cannot lock the index: "
                                 f"{error.strerror or error}") from None
    # The kernel detects deadlocks per process, not per thread: two threaded processes
    # (two studios), each waiting in one thread for a lock the other holds in another
    # thread, can be told EDEADLK where nothing is stuck. No update holds two index
    # locks at once, so poll until the holder lets go.
    while not _lock_now(descriptor, path):
        time.sleep(LOCK_POLL_SECONDS)


def _lock_as_older_versions(descriptor: int, path: Path, quiet: bool) -> None:
    """Take the ``flock`` of ``write.lock`` too, waiting while an older mosaicist holds it.

    Versions before the record lock (the first ones, of index schema 1)
    locked the index with ``flock``, which Linux keeps apart from record
    locks: one of them still running on a shared cache (another virtual
    environment, a server not restarted) and this version took the index
    together, and the second writer cut off or overwrote the pixels the
    first had appended, or removed the packed file it was about to publish.
    Taken after the record lock, so only one process of this version ever
    waits here. A file system without ``flock`` (the older versions could
    not lock there) is not waited on.
    """
    _flocked.add(descriptor)  # before taking it: a child forked meanwhile closes its copy
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except OSError as error:
        if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            _flocked.discard(descriptor)
            if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                return
            raise MosaicistError(f"{path}: cannot lock the index: "
                                 f"{error.strerror or error}") from None
    if not quiet:
        print(f"mosaicist: waiting for an older version of mosaicist that is updating "
              f"this index ({path})", file=sys.stderr)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
    except OSError as error:
        raise MosaicistError(f"{path}: cannot lock the index: "
                             f"{error.strerror or error}") from None


def _lock_now(descriptor: int, path: Path) -> bool:
    """Take the lock if it is free now; False while another process holds it."""
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as error:
        if error.errno not in (errno.EACCES, errno.EAGAIN):
            raise MosaicistError(f"{path}: cannot lock the index: "
                                 f"{error.strerror or error}") from None
    return False


def _record_holder(descriptor: int) -> None:
    """Write this process's PID in the lock file (only for messages: a full disk is no error)."""
    with contextlib.suppress(OSError):
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)


def _holder(descriptor: int) -> int | None:
    """Return the PID the lock's holder wrote in the lock file, if it did."""
    try:
        text = os.pread(descriptor, 32, 0).decode("ascii").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def _update_locked(
    source: TileSource,
    tile: TileFormat,
    directory: Path,
    connection: sqlite3.Connection,
    show_progress: bool,
    decoder: Decoder | None = None,
) -> UpdateStats:
    """Plan, decode and publish; the caller holds the write lock.

    Each stage commits on its own (see the module docstring), so an interrupt
    between or inside stages leaves a manifest the next update resumes from.

    Parameters
    ----------
    source : TileSource
        The source to index.
    tile : TileFormat
        The tiles' size, aspect and crop.
    directory : pathlib.Path
        The index's folder.
    connection : sqlite3.Connection
        The manifest.
    show_progress : bool
        Draw a progress bar on stderr while decoding.
    decoder : Decoder, optional
        Decodes into shards instead of this process into the packed file.

    Returns
    -------
    UpdateStats
        What the update did, less ``seconds``.
    """
    upgrade(connection)
    publication = get_meta(connection, "publication")
    if publication is None:
        # An index from before the tokens: name its rows, so that readers snapshot them.
        with transaction(connection):
            new_publication(connection)
        publication = get_meta(connection, "publication")
    _remove_leftovers(directory, meta_count(connection, "generation"),
                      read_shards(connection), publication)
    # A killed run's temporaries in the caches beside the index (features, prepared
    # tiles, near-duplicates) stay when another run finished the same entry first.
    remove_dead_temporaries(directory, min_age=DEAD_TEMPORARY_AGE)
    _settle_signature_rule(connection, tile)
    planned = _plan(source, tile, directory, connection)
    if isinstance(planned, UpdateStats):
        _sign_published(directory, tile, connection)
        _resign_photos(source, tile, directory, connection, show_progress, mirrors=False)
        return planned  # nothing changed since the last publish
    plan = planned
    stats = UpdateStats(reused=len(plan.entries) - len(plan.to_decode))
    if plan.to_decode:
        if decoder is None:
            # A new index of a folder may be one indexed before under another path.
            moved = (_MovedTiles.find(source, tile, directory, plan.to_decode)
                     if not plan.published else None)
            next_slot = _decode_into_store(
                source, plan.to_decode, tile, store_path(directory, plan.generation),
                connection, plan.published, plan.next_slot, show_progress, stats,
                decoded_tiles=None if moved is None else moved.tiles(source, tile),
            )
            if moved is not None:
                stats.decoded -= moved.taken
                stats.reused += moved.taken
        else:
            next_slot = plan.next_slot
            decoder(source, plan.to_decode, tile, directory, connection, stats, show_progress)
        # The decode committed its rows to the manifest, not to the plan.
        plan = replace(
            plan, next_slot=next_slot, staged=_read_staged(connection),
            failures=_read_failures(connection),
        )
    if not directory.is_dir():
        # The manifest's commits went to files no longer listed (the cache deleted or
        # unmounted): the publish would "succeed", and leave no index.
        raise folder_removed(directory)
    _publish(plan, tile, directory, connection, stats, sharded=decoder is not None)
    _sign_published(directory, tile, connection)
    _resign_photos(source, tile, directory, connection, show_progress, mirrors=False)
    return stats


def folder_removed(directory: Path) -> MosaicistError:
    """The one-line error for an index folder removed during the run (on a cluster too).

    Parameters
    ----------
    directory : pathlib.Path
        The index's folder.

    Returns
    -------
    MosaicistError
        Naming ``directory``, saying to run again.
    """
    return MosaicistError(f"{directory}: the index folder was removed during the run (its "
                          f"cache deleted or unmounted?); run again to index anew")


def _connect_writer(directory: Path) -> sqlite3.Connection | None:
    """Open the manifest for the update, or return None where the disk is too full to.

    On a full disk SQLite may not even read the manifest for writing (it
    cannot grow the log's ``-shm`` file): the index is then only read, as in
    a folder that cannot be written (:func:`_unchanged_read_only`), so that
    an index that is up to date still serves.
    """
    try:
        return connect(directory, read_only_when_full=False)
    except sqlite3.OperationalError as error:
        if is_out_of_space(error, directory):
            return None
        raise


def _unchanged_read_only(source: TileSource, directory: Path, refused: OSError,
                         tile: TileFormat | None = None) -> UpdateStats:
    """Stats of an index that its folder's being read-only does not stop from being used.

    Only reads, without the write lock (readers never need it: they read a
    published state): when the source's scan is the one last published and
    nothing is staged, as for the "nothing changed" fast path of
    :func:`_plan`, the published library is the right one. Anything else
    needs an update, which cannot be made. Failures that may pass are not
    tried again here (that needs writing): they are reported, and the
    published library served. Rows published with racy stamps are checked
    by their content's hash (reading only), and must all match. An index
    decoded with the other ``colour_profiles`` serves only where none of its
    pictures decodes otherwise with this one.

    Parameters
    ----------
    source : TileSource
        The source; scanned here unless its fingerprint is enough.
    directory : pathlib.Path
        The index's folder.
    refused : OSError
        Why its lock file could not be opened for writing (``ENOSPC``: the
        disk is too full for SQLite to write the manifest).
    tile : TileFormat, optional
        The tiles wanted (default: a square centre crop's, profiles ignored).

    Returns
    -------
    UpdateStats
        As :func:`_unchanged_stats`.

    Raises
    ------
    MosaicistError
        When the index is missing or is not up to date with the source.
    """
    if (directory / "manifest.sqlite").is_file():
        digest, count, entries = _scan_summary(source)
        connection = connect_read_only(directory)
        try:
            if _published_digest(connection) == digest and (
                    not _racy_pending(connection)
                    or not _racy_changes(source, connection, entries)) and (
                    index_profiles(connection) == (tile or TileFormat(0)).colour_profiles
                    or not _reprofiled(source, [_read_published(connection)],
                                       source.scan() if entries is None else entries)):
                return _unchanged_stats(connection, count)
        finally:
            connection.close()
    raise not_writable(directory, refused)


def _racy_changes(source: TileSource, connection: sqlite3.Connection,
                  entries: list[SourceEntry] | None) -> bool:
    """Whether a published row of racy stamp no longer hashes as its entry (reads only).

    For an index that cannot be written, whose scan is the published one.
    """
    if entries is None:
        entries = source.scan()
    published = _read_published(connection)
    checked = _meta_time(connection, "stamps_checked_ns")
    racy: list[tuple[int, str]] = []
    for position, entry in enumerate(entries):
        row = published.get(entry.source_id)
        if row is not None and _is_racy(entry.mtime_ns, checked):
            racy.append((position, row.content_hash))
    return bool(_changed_content(source, entries, racy))


def not_writable(directory: Path, refused: OSError) -> MosaicistError:
    """The error for an index that needs writing in a cache that refuses it (one line)."""
    reason = (refused.strerror or str(refused)).lower()
    if refused.errno == errno.ENOSPC:
        return MosaicistError(
            f"{directory}: cannot bring the tile index up to date: {reason}; free some "
            f"space or give another cache (--cache-dir or {CACHE_ENV})")
    return MosaicistError(
        f"{directory}: cannot bring the tile index up to date: the cache folder is not "
        f"writable ({reason}); make it writable or give a writable cache (--cache-dir or "
        f"{CACHE_ENV})"
    )


def is_not_writable(error: OSError) -> bool:
    """Whether ``error`` says a folder or file cannot be written (permissions, read-only)."""
    return error.errno in _NOT_WRITABLE


def _remove_leftovers(directory: Path, generation: int, shards: Sequence[Shard] = (),
                      publication: str | None = None) -> None:
    """Delete the files that interrupted updates left in the index folder.

    Only the lock holder writes these files, so under the lock none of them
    is being written: a repack's temporary, and packed files of generations
    other than the published one (no row points into them; a reader that
    still maps one keeps its map, and one about to open it reads the
    manifest again, see ``TileLibrary._read``); and shard files that no
    ``shards`` row lists (a worker's unfinished ``.part``, or a shard whose
    update stopped before staging it), with the rows files of all shards; and
    order snapshots of other publications than ``publication``.

    Parameters
    ----------
    directory : pathlib.Path
        The index's folder.
    generation : int
        The published generation, whose packed file is kept.
    shards : sequence of Shard
        The ``shards`` table: their files are kept.
    publication : str, optional
        The published rows' token, whose order snapshot is kept.
    """
    keep = {store_path(directory, generation).name, *(shard.file for shard in shards)}
    if publication is not None:
        keep.add(order_path(directory, publication).name)
    with os.scandir(directory) as items:
        leftovers = [item.path for item in items if item.name not in keep and (
            _LEFTOVER.fullmatch(item.name) or _SHARD_FILE.fullmatch(item.name)
            or ORDER_FILE.fullmatch(item.name))]
    for leftover in leftovers:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
            os.unlink(leftover)


def _write_error(path: Path, error: OSError) -> MosaicistError:
    """Return the one-line error for ``error`` while writing ``path``, a file of the index."""
    if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return MosaicistError(f"{path}: {os.strerror(error.errno or errno.ENOSPC).lower()} "
                              f"while writing the tile index; free some space and run again")
    return MosaicistError(f"{path}: cannot write the tile index: {error.strerror or error}")


def _create(path: str, flags: int) -> int:
    """``open`` opener: open read-write, creating the file if needed (as ``touch`` would)."""
    return os.open(path, flags | os.O_CREAT, 0o666)


def _write_all(handle: io.RawIOBase, data: bytes) -> None:
    """Write all of ``data`` at the file's position (an unbuffered write may take less)."""
    view = memoryview(data)
    while view:
        written = handle.write(view)
        if not written:
            raise OSError(errno.EIO, "the write made no progress")
        view = view[written:]


# -- plan -------------------------------------------------------------------------------


def _plan(
    source: TileSource, tile: TileFormat, directory: Path, connection: sqlite3.Connection
) -> UpdatePlan | UpdateStats:
    """Scan the source and decide which entries to decode.

    An entry needs decoding unless a published, staged or failed row has its
    size and modification time: those were decoded (or failed) before and
    their outcome is committed, which is what makes an interrupted update
    resume where it stopped. A failure that may pass (a read that failed for a
    reason of the moment) matches no stamp (:func:`~._manifest.failure_row`):
    its entry is decoded again. A row whose stamp is racy (:func:`_is_racy`)
    only counts when the entry's content still hashes as the row's
    (:func:`_changed_content`).

    The stage's only writes are the ``meta`` values of a new manifest, and
    ``staged_checked_ns`` before rows are staged, each in one transaction;
    everything else is read, so an interrupt here loses nothing.

    Parameters
    ----------
    source : TileSource
        The source; scanned here.
    tile : TileFormat
        The tiles' size, aspect and crop.
    directory : pathlib.Path
        The index's folder.
    connection : sqlite3.Connection
        The manifest.

    Returns
    -------
    UpdatePlan or UpdateStats
        The plan; or, when the scan is the one last published, nothing is
        staged, no failure may pass and no published stamp is racy (so the
        published library is already the right one), the
        update's final stats, read from the manifest without comparing rows.
        A source whose scan follows from a few facts
        (:meth:`TileSource.scan_fingerprint`) is then not even scanned.

    Raises
    ------
    MosaicistError
        When the packed file is shorter than the published and staged rows need;
        when the source lists nothing where the index has tiles (kept as it is).
    """
    _initialise_meta(connection, source.key, tile, directory)
    generation = meta_count(connection, "generation")
    next_slot = meta_count(connection, "next_slot")

    # Only a publish stores the digest, and it empties ``staged``: staged rows
    # mean a later update did not finish, and the comparison below must
    # publish or drop them even though the scan is the published one.
    digest, count, entries = _scan_summary(source)
    # Tiles decoded with the other colour_profiles are checked below: those whose
    # pictures decode otherwise are decoded again.
    reprofile = index_profiles(connection) != tile.colour_profiles
    # Rows of schema 1, unsigned, whose tiles would not sign as their photos do: decoded
    # again below, for their photos' signatures (see _resign_from_photos).
    resign = _resign_from_photos(connection, tile)
    # A failure that may pass is tried again on every run, until it no longer fails:
    # the scan being unchanged says nothing about whether a share still falters.
    if (_published_digest(connection) == digest and not retry_pending(connection)
            and not _racy_pending(connection) and not reprofile and not resign):
        return _unchanged_stats(connection, count)
    if entries is None:
        entries = source.scan()
    # After the scan: whatever is read from here on (hashes, decodes) was read later.
    checked_ns = _clock_ns()

    published = _read_published(connection)
    staged = _read_staged(connection)
    if not entries and (published or staged):
        # An indexed library whose source now lists nothing is most often a drive or a
        # share that is not mounted (its mount point an empty folder): publishing that
        # would throw away every photo's tile, all to be decoded again once it is back.
        # An empty library is an error anyway, so the index is kept as it was.
        raise MosaicistError(
            f"{source.name}: no usable tile images found: it lists no images now "
            f"(a drive or share not mounted?); the index of its "
            f"{len(published) or len(staged):,} tiles is kept for when they are back")
    failures = _read_failures(connection)
    _check_store(directory, generation, tile, published, staged, connection)
    # The decode cuts the packed file back to next_slot: one below a slot in use
    # (a damaged manifest) would cut off tiles that rows point at, which are there.
    in_store = [row.slot for rows in (published, staged) for row in rows.values()
                if row.slot < SHARD_SLOTS]
    next_slot = max(next_slot, max(in_store, default=-1) + 1)

    if reprofile:
        # Their rows are dropped (their slots kept in use until the publish): matched
        # by none, they are decoded again, and an old slot of the same content is not
        # taken back for them (see _decode_into_store).
        changed = _reprofiled(source, [published, staged], entries)
        published = {key: row for key, row in published.items() if key not in changed}
        staged = {key: row for key, row in staged.items() if key not in changed}
        # Gone from the manifest too: the decode re-reads the staged rows, and one of
        # the other setting must not be published where its entry fails to decode now.
        with transaction(connection):
            connection.executemany("DELETE FROM staged WHERE source_id = ?",
                                   [(source_id,) for source_id in changed])
    published_checked = _meta_time(connection, "stamps_checked_ns")
    staged_checked = _meta_time(connection, "staged_checked_ns")
    decode = [False] * len(entries)
    # Racy matches: (position in entries, the hash of the row's content).
    racy: list[tuple[int, str]] = []
    for position, entry in enumerate(entries):
        stamp = (entry.size, entry.mtime_ns)
        old = published.get(entry.source_id)
        if (old is not None and (old.size, old.mtime_ns) == stamp
                and not (resign and _unsigned(old))):
            if _is_racy(entry.mtime_ns, published_checked):
                racy.append((position, old.content_hash))
            continue
        new = staged.get(entry.source_id)
        if (new is not None and (new.size, new.mtime_ns) == stamp
                and not (resign and _unsigned(new))):
            if _is_racy(entry.mtime_ns, staged_checked):
                racy.append((position, new.content_hash))
            continue
        failure = failures.get(entry.source_id)
        if failure is not None and (failure.size, failure.mtime_ns) == stamp:
            # Trusted even when racy: a failure has no content hash to check, and unlike
            # a stale tile it is reported on every run (a file saved again is seen).
            continue
        decode[position] = True
    for position in _changed_content(source, entries, racy):
        decode[position] = True
    to_decode = [entry for entry, chosen in zip(entries, decode, strict=True) if chosen]
    if to_decode and staged_checked is None:
        # The moment the rows about to be staged are read after (see "Racy stamps").
        with transaction(connection):
            set_meta(connection, "staged_checked_ns", checked_ns)
    return UpdatePlan(
        entries=entries, digest=digest, generation=generation, next_slot=next_slot,
        published=published, staged=staged, failures=failures, to_decode=to_decode,
        checked_ns=checked_ns,
    )


def _signs_as_photo(tile: TileFormat) -> bool:
    """Whether a tile of ``tile``'s format signs as its photo does, from its own pixels.

    A photo's signature is computed from its centre square at
    :data:`~mosaicist.dedupe.SIGNATURE_PX` pixels (see :mod:`mosaicist.dedupe`):
    a square centre tile of that size is that very picture. A tile of any
    other size or shape signs a few bits apart, enough to group
    ``--dedupe`` otherwise than its photo's signature does.
    """
    return tile.width == tile.height == SIGNATURE_PX and tile.method == "centre"


def _decoded_at_signature_scale(tile: TileFormat) -> bool:
    """Whether a JPEG decoded for ``tile``'s format was decoded at its signature's scale.

    The rule before :data:`~._manifest.SIGNATURE_RULE` signed a JPEG from the
    decode drafted for its tile, which depends on the tile's size and shape
    only, not on where the tile is cut (centre or subject): square tiles of
    :data:`~mosaicist.dedupe.SIGNATURE_PX` pixels were decoded at the
    signature's own scale, and their signatures stand (the default preset's
    subject crop included: no library of it is decoded again).
    """
    return tile.width == tile.height == SIGNATURE_PX


def _unsigned(row: IndexedTile | PublishedTile) -> bool:
    """Whether ``row`` has no signature (a row of schema 1)."""
    return row.phash is None or row.mean_rgb is None


def _resign_from_photos(connection: sqlite3.Connection, tile: TileFormat) -> bool:
    """Whether the manifest's unsigned rows are to be decoded again, for their photos' signatures.

    Rows of schema 1 have no signature. Those of an index of square centre
    tiles at :data:`~mosaicist.dedupe.SIGNATURE_PX` pixels (the default) are
    signed from their tiles (:func:`_sign_published`), which is what their
    photos give. At any other size (``--tile-px 48`` made ``px48``) a tile
    signs a few bits apart from its photo, and ``--dedupe`` kept other
    photos than it does with a fresh index: such rows are decoded again,
    once, as a fresh index decodes them (reads only).
    """
    if _signs_as_photo(tile) or get_meta(connection, "signed") == "1":
        return False
    return any(connection.execute(
        f"SELECT 1 FROM {table} WHERE phash IS NULL OR mean_rgb IS NULL LIMIT 1").fetchone()
        for table in ("tiles", "staged"))


def _settle_signature_rule(connection: sqlite3.Connection, tile: TileFormat) -> None:
    """Record the rule a manifest's signatures stand at, where nothing is to sign anew now.

    Until rule 2, a JPEG was signed from the decode drafted for its tile: at
    another DCT scale than its signature's own for any tiles but square ones
    at :data:`~mosaicist.dedupe.SIGNATURE_PX` pixels, centre or subject
    (whose decode was the signature's). Until rule 3, no row had its
    mirror's hash (``phash_mirror``). A manifest without the meta value
    ``signature_rule`` of such other tiles, some of whose rows are signed,
    keeps it unset here: :func:`_resign_photos` signs its JPEGs anew after
    the update. So does one whose signing anew was interrupted
    (``resign_after`` set), even with every row signed: its last batch may
    have committed before the new generation was published, which retires
    the caches made from the old signatures (the cached leaders of
    near-duplicates). Every other one gets its rule now (in one transaction):
    a new manifest, one of rule 2, one of square tiles of that size however
    cut (:func:`_decoded_at_signature_scale`), or one of schema 1 whose rows
    are all still to sign (by this version, so by the rule of now). The rule
    is :data:`~._manifest.SIGNATURE_RULE` where every signed row has its
    mirror's hash (one of rule 2 that an older version's run touched
    nothing of among them), else :data:`_RULE_BEFORE_MIRRORS`: its rows
    get their mirrors' hashes when near-duplicates are first grouped
    (:func:`sign_mirrors`), not in every user's first update.
    """
    rule = get_meta(connection, "signature_rule")
    if rule == str(SIGNATURE_RULE) or get_meta(connection, "resign_after") is not None:
        return
    if rule == "2" or _decoded_at_signature_scale(tile) or not any(
            connection.execute(f"SELECT 1 FROM {table} WHERE phash IS NOT NULL LIMIT 1"
                               ).fetchone() for table in ("tiles", "staged")):
        settled = _RULE_BEFORE_MIRRORS if _lacks_mirrors(connection) else SIGNATURE_RULE
        if rule != str(settled):
            with transaction(connection):
                set_meta(connection, "signature_rule", settled)


def _lacks_mirrors(connection: sqlite3.Connection) -> bool:
    """Whether a signed row of the manifest has no mirror's hash (signed before rule 3)."""
    return any(connection.execute(
        f"SELECT 1 FROM {table} WHERE phash IS NOT NULL AND phash_mirror IS NULL LIMIT 1"
    ).fetchone() for table in ("tiles", "staged"))


def _resign_photos(source: TileSource, tile: TileFormat, directory: Path,
                   connection: sqlite3.Connection, show_progress: bool, *,
                   mirrors: bool) -> None:
    """Sign the published rows of an index of a rule before anew, once.

    For a manifest left below :data:`~._manifest.SIGNATURE_RULE` by
    :func:`_settle_signature_rule`. After an update published
    (``mirrors`` False), only where a manifest without ``signature_rule`` of
    tiles other than square ones at :data:`~mosaicist.dedupe.SIGNATURE_PX`
    pixels has JPEG rows (rule 1: signed from the decode drafted for its
    tile, a few bits off their photos' own signatures): those are signed
    anew, their mirrors' hashes with them (the same decode). The rows only
    without their mirrors' hashes (rule 2) are left as they are: only a
    grouping of near-duplicates reads those, and signing them can take
    many seconds (the photos read again) on every user's first update
    after upgrading. With ``mirrors`` (:func:`sign_mirrors`, for the first
    grouping), every row without its mirror's hash is signed too. A row is
    signed as a fresh index signs it:

    - in an index of square centre tiles at that size, from its packed tile,
      which is the photo's signature picture (no photo is read);
    - else, where its photo is a local file that still hashes as the row's
      content, from the photo (:func:`~mosaicist.imaging.decode_tile` at
      :data:`~mosaicist.dedupe.SIGNATURE_PX` pixels: the signature's own
      decode, the tile's pixels kept as they are).

    A photo changed since (the next update decodes it), or a picture of a
    dataset or an array at another size, keeps its row's signature, without
    a mirror's hash (its hash stands for it: its mirrored copies are grouped
    with it from their side only). So does a photo that cannot be read now
    (a drive offline, a file locked), for now: the manifest is then left at
    rule 2 (:data:`_RULE_BEFORE_MIRRORS`), so that the next grouping tries
    again the rows still without their mirrors' hashes, as a fresh index
    would have them, instead of leaving them so for good. So is one of
    which an update signed the JPEGs and some row still lacks its mirror's.

    Crash-safe as the rest of the update: batches of :data:`RESIGN_EVERY`
    rows (in ``source_id`` order) commit with the meta value
    ``resign_after``, the last id done, from which an interrupted run's next
    signing goes on. Once all are done, where a signature changed, the
    library moves to the next generation (its packed file linked, or copied,
    under the new name), so that the caches named by the generation (the
    cached leaders of near-duplicates, the libraries without them) are made
    again from the signatures of now; ``signature_rule`` is set in the same
    transaction, with a new ``publication``.
    """
    rule = get_meta(connection, "signature_rule")
    if rule == str(SIGNATURE_RULE):
        return
    resumed = get_meta(connection, "resign_after")
    jpegs_stale = rule is None and not _decoded_at_signature_scale(tile)
    if not mirrors and not jpegs_stale:
        if rule is None:
            # An older version's signing, interrupted: only mirrors' hashes can be left to
            # sign, by the first grouping (from resign_after, which bumps the generation).
            with transaction(connection):
                set_meta(connection, "signature_rule", _RULE_BEFORE_MIRRORS)
        return
    from_tiles = _signs_as_photo(tile)
    # A dataset's or an array's pictures are no files: only their packed tiles are at hand.
    rows = [] if source.local_root() is None and not from_tiles else connection.execute(
        "SELECT source_id, size, mtime_ns, content_hash, phash, mean_rgb, phash_mirror, slot "
        "FROM tiles WHERE source_id > ? AND (phash_mirror IS NULL OR ?) ORDER BY source_id",
        (resumed or "", jpegs_stale and not from_tiles)).fetchall()
    space = (SlotSpace(directory, meta_count(connection, "generation"), read_shards(connection),
                       (tile.height, tile.width, 3)) if from_tiles and rows else None)

    # The ids of photos that could not be read (list.append: safe from the pool's threads).
    unread: list[str] = []

    def signed_anew(row: tuple) -> tuple[int, ...] | None:
        try:
            path = source.local_path(SourceEntry(row[0], row[1], row[2], None))
            if path is None:
                return None
            try:
                data = read_tile_bytes(path)
            except OSError:
                unread.append(row[0])
                return None
            if ((row[6] is not None or not mirrors) and not data.startswith(_JPEG_START)) or (
                    content_hash(data) != row[3]):
                # Another picture than a JPEG signs as before: only its mirror's hash
                # is missing, and only where asked for (``mirrors``).
                return None
            return decode_tile(data, SIGNATURE_PX,
                               colour_profiles=tile.colour_profiles).signature
        except (OSError, ImageReadError, MosaicistError):
            return None

    def signed_batch(batch: list[tuple]) -> Iterator[Sequence[int] | None]:
        if space is None:
            return pool.map(signed_anew, batch)
        slots = np.fromiter((row[7] for row in batch), np.int64, len(batch))
        columns = _signature_columns(space.gather(slots))
        return ((_HASH_MASK & phash, colour, _HASH_MASK & mirror)
                for phash, colour, mirror in zip(*columns, strict=True))

    changed = resumed is not None  # a batch committed before may have changed some
    pool = ThreadPoolExecutor(RESIGN_THREADS)
    chunk = RESIGN_EVERY if space is None else max(
        1, min(RESIGN_EVERY, _SIGN_BYTES // tile.tile_bytes))
    try:
        with progress_bar(len(rows), "updating near-duplicate signatures", unit="img",
                          enabled=show_progress and bool(rows)) as bar:
            for start in range(0, len(rows), chunk):
                batch = rows[start:start + chunk]
                updates = []
                for row, signature in zip(batch, signed_batch(batch), strict=True):
                    bar.update(1)
                    if signature is None:
                        continue
                    columns = signature_columns(signature)
                    if columns != tuple(row[4:7]):
                        updates.append((*columns, row[0]))
                with transaction(connection):
                    connection.executemany(
                        "UPDATE tiles SET phash = ?, mean_rgb = ?, phash_mirror = ? "
                        "WHERE source_id = ?", updates)
                    set_meta(connection, "resign_after", batch[-1][0])
                changed = changed or bool(updates)
    finally:
        # An interrupt: the photos not yet begun are not read.
        pool.shutdown(wait=True, cancel_futures=True)
    # Rows an interrupted run could not read are not known here: tried again next time.
    retry = bool(unread) or (resumed is not None and connection.execute(
        "SELECT 1 FROM tiles WHERE source_id <= ? AND phash_mirror IS NULL LIMIT 1",
        (resumed,)).fetchone() is not None) or (not mirrors and _lacks_mirrors(connection))
    generation = meta_count(connection, "generation")
    old_store = store_path(directory, generation)
    moved = changed and _link_store(old_store, store_path(directory, generation + 1))
    with transaction(connection):
        if changed:
            set_meta(connection, "generation", generation + 1)
            new_publication(connection)
        set_meta(connection, "signature_rule",
                 _RULE_BEFORE_MIRRORS if retry else SIGNATURE_RULE)
        connection.execute("DELETE FROM meta WHERE name = 'resign_after'")
    if moved and old_store.name not in {shard.file for shard in read_shards(connection)}:
        with contextlib.suppress(FileNotFoundError):
            old_store.unlink()


def sign_mirrors(source: TileSource, tile: TileFormat, directory: Path, published: str,
                 show_progress: bool, quiet: bool) -> tuple[str, int] | None:
    """Give the published rows without their mirrors' hashes theirs, for a grouping.

    An index of an older version (signature rule 2, see
    :data:`~._manifest.SIGNATURE_RULE`) keeps its rows without their
    mirrors' hashes through its updates (:func:`_resign_photos`): only the
    grouping of near-duplicates reads them. The first grouping calls this:
    under the write lock, the rows are signed as :func:`_resign_photos`
    says (resumably: an interrupted or incomplete signing is taken up by
    the next grouping). Nothing is done, and the lock not even waited for,
    where the manifest's rule is already the rule of now; nor where the
    folder cannot be written (a read-only index: each row's hash stands for
    its mirror's), nor where the index no longer publishes the library read
    at ``published`` (another run's update since: its signatures would be
    of other rows).

    Parameters
    ----------
    source : TileSource
        The library's source (its photos are read where its tiles are not
        their signature pictures).
    tile : TileFormat
        The tiles' size, aspect and crop.
    directory : pathlib.Path
        The index's folder.
    published : str
        The manifest's state the library was read in
        (:func:`~._manifest.order_stamp`).
    show_progress : bool
        Draw a progress bar on stderr while signing.
    quiet : bool
        Do not say that we wait for another process updating the index.

    Returns
    -------
    (str, int) or None
        Where the signing moved the library to a new state (a signature
        changed: the next generation, so that caches made from the old
        signatures are not served), that state and generation: the same
        rows and pixels, for the caller to go on with. Else None.
    """
    with manifest_errors(directory):
        reader = connect(directory)
        try:
            if get_meta(reader, "signature_rule") == str(SIGNATURE_RULE):
                return None
        finally:
            reader.close()
    with unwind_on_terminate(), _write_lock(directory, quiet) as refused, \
            manifest_errors(directory):
        writer = None if refused is not None else _connect_writer(directory)
        if writer is None:
            return None  # read-only, or a disk too full to write
        try:
            if (order_stamp(writer) != published
                    or get_meta(writer, "signature_rule") == str(SIGNATURE_RULE)):
                return None
            upgrade(writer)  # a library opened without updating may lack the column
            _resign_photos(source, tile, directory, writer, show_progress, mirrors=True)
            writer.execute("BEGIN")
            try:
                moved = order_stamp(writer), meta_count(writer, "generation")
            finally:
                writer.execute("COMMIT")
        finally:
            writer.close()
    return None if moved[0] == published else moved


def _note_missing_mirrors(connection: sqlite3.Connection, rows: Iterable[IndexedTile]) -> None:
    """Set the manifest back to :data:`_RULE_BEFORE_MIRRORS` where ``rows`` lack mirrors' hashes.

    In the caller's transaction, as ``rows`` are staged: rows signed without
    their mirrors' hashes (a cluster worker of an older version; tiles taken
    from the index of a moved folder made by one) get them from the first
    grouping of near-duplicates (:func:`sign_mirrors`), which a manifest of
    the rule of now would skip.
    """
    if (get_meta(connection, "signature_rule") == str(SIGNATURE_RULE)
            and any(row.phash is not None and row.phash_mirror is None for row in rows)):
        set_meta(connection, "signature_rule", _RULE_BEFORE_MIRRORS)


def _link_store(store: Path, destination: Path) -> bool:
    """Give the packed file ``store`` the name ``destination`` too, durably; False when none.

    A hard link where the file system makes them, else a copy (written as
    ``tiles-<G>.u8.part`` and renamed once flushed). A ``destination`` left
    by an interrupted run is replaced. The manifest still names ``store``:
    an interrupt leaves ``destination`` to the next update's cleanup.
    """
    if not store.exists():
        return False  # a library all in shards, or empty: nothing in the packed file
    partial = partial_path(destination)
    try:
        with contextlib.suppress(FileNotFoundError):
            destination.unlink()
        try:
            os.link(store, destination)
        except OSError:  # no hard links here (FAT, some shares): a copy
            with open(store, "rb") as original, open(partial, "wb") as copy:
                shutil.copyfileobj(original, copy, 16 << 20)
                copy.flush()
                os.fsync(copy.fileno())
            os.replace(partial, destination)
    except OSError as error:
        raise _write_error(destination, error) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    sync_folder(destination.parent)
    return True


def _reprofiled(source: TileSource, tables: Sequence[Mapping[str, IndexedTile | PublishedTile]],
                entries: Iterable[SourceEntry]) -> set[str]:
    """The ids of rows of ``tables`` whose pictures decode otherwise under the other
    ``colour_profiles``.

    Asked of the source (:meth:`~mosaicist.sources.TileSource.converting_profiles`,
    headers only) for the entries that have a row of their stamp in any of the
    tables; a picture it cannot tell of counts as changed. A source whose
    pictures carry no profile has none.
    """
    if not getattr(source, "reads_profiles", False):
        return set()

    def has_row(entry: SourceEntry) -> bool:
        stamp = (entry.size, entry.mtime_ns)
        return any((row := rows.get(entry.source_id)) is not None
                   and (row.size, row.mtime_ns) == stamp for rows in tables)

    matched = [entry for entry in entries if has_row(entry)]
    answers = source.converting_profiles(matched)
    return {entry.source_id for entry, converts in zip(matched, answers, strict=True)
            if converts is not False}


def _clock_ns() -> int:
    """The wall clock in nanoseconds, against which stamps are judged racy (:func:`_is_racy`)."""
    return time.time_ns()


def _is_racy(stamp: int, checked_ns: int | None) -> bool:
    """Whether ``stamp`` is too recent to vouch for content read after ``checked_ns``.

    A file written again in the clock tick of its stamp keeps the stamp, so
    the content read in that tick may not be the file's any more. A stamp in
    whole seconds may come from a file system of one- or two-second ticks
    (:data:`RACY_COARSE_NS`); a finer one from a tick of milliseconds
    (:data:`RACY_FINE_NS`). A stamp after the moment (a clock ahead, a file
    dated in the future) is racy too.

    Parameters
    ----------
    stamp : int
        The entry's change stamp, in nanoseconds.
    checked_ns : int or None
        The wall clock when the row was compared with its entry or read
        (None: not recorded, by a version before this check; trusted).

    Returns
    -------
    bool
        True when the content must be checked by its hash.
    """
    if checked_ns is None:
        return False
    margin = RACY_COARSE_NS if stamp % 10**9 == 0 else RACY_FINE_NS
    return stamp >= checked_ns - margin


def _meta_time(connection: sqlite3.Connection, name: str) -> int | None:
    """A moment kept in ``meta`` (``stamps_checked_ns``...), or None when unset or unreadable."""
    value = get_meta(connection, name)
    try:
        return None if value is None else int(value)
    except ValueError:
        return 0  # damaged: every stamp after 1970 is racy, so checked rather than trusted


def _racy_pending(connection: sqlite3.Connection) -> bool:
    """Whether rows or failures were published with racy stamps, to check by content now."""
    value = get_meta(connection, "racy", "0")
    return value != "0"


def _changed_content(
    source: TileSource, entries: Sequence[SourceEntry], racy: Sequence[tuple[int, str]]
) -> list[int]:
    """The positions among ``racy`` whose entries no longer hash as their rows' content.

    The source hashes the entries' content without decoding
    (:meth:`~mosaicist.sources.TileSource.content_hashes`); an entry whose
    hash it cannot tell counts as changed (it is decoded, and its tile kept
    where its decoded content hashes the same).

    Parameters
    ----------
    source : TileSource
        The source of ``entries``.
    entries : sequence of SourceEntry
        The scan.
    racy : sequence of (int, str)
        Position in ``entries`` of each racy match, and its row's content hash.

    Returns
    -------
    list of int
        Positions to decode.
    """
    if not racy:
        return []
    hashes = iter(source.content_hashes([entries[position] for position, _ in racy]))
    changed = []
    try:
        for position, stored in racy:
            # A source that yields fewer hashes than asked for: the rest are decoded.
            found = next(hashes, None)
            if found is None or found != stored:
                changed.append(position)
    finally:
        close = getattr(hashes, "close", None)
        if close is not None:
            close()
    return changed


def _initialise_meta(connection: sqlite3.Connection, source_key: str, tile: TileFormat,
                     directory: Path) -> None:
    """Give a new manifest its ``meta`` values, in one transaction; else do nothing.

    All or none of the values commit, so a manifest that has ``schema`` has
    them all. A new manifest's first generation is the first that no file in
    the index folder is named by (:func:`_first_unused_generation`).
    """
    with transaction(connection):
        if get_meta(connection, "schema") is None:
            set_meta(connection, "schema", SCHEMA_VERSION)
            set_meta(connection, "source_key", source_key)
            set_meta(connection, "tile_px", tile.width)
            set_meta(connection, "tile_height", tile.height)
            set_meta(connection, "aspect", format_aspect(tile.aspect))
            set_meta(connection, "crop", tile.method)
            set_meta(connection, "colour_profiles", tile.colour_profiles)
            # A manifest whose rows lost their meta (damaged) keeps its tiles in tiles-0.u8.
            rows = any(connection.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()
                       for table in ("tiles", "staged", "shards"))
            set_meta(connection, "generation", 0 if rows else _first_unused_generation(directory))
            set_meta(connection, "next_slot", 0)


#: The library generation in a file's name: the caches kept beside the manifest
#: (features, near-duplicate leaders, packed tiles without near-duplicates, approximate
#: indexes, previews: ``...-g<G>-...``) and the packed tiles (``tiles-<G>.u8``).
_GENERATION_IN_NAME = re.compile(r"(?:-g|^tiles-)(?P<generation>\d+)(?=[-.])")


def _first_unused_generation(directory: Path) -> int:
    """The first library generation above any that a file under ``directory`` is named by.

    The caches beside the manifest are named by the library's generation and
    size, not checked against its pixels in full (the leaders of
    near-duplicates not at all). A manifest made again where one was removed
    (a damaged index deleted, a cache cleaned by hand) started again at
    generation 0, and a library of as many other photos was served the
    removed one's features, near-duplicates and packed tiles; it now starts
    above them. Reads the names only, once per new manifest.
    """
    highest = -1
    for _, folders, files in os.walk(directory):
        for name in (*folders, *files):
            found = _GENERATION_IN_NAME.search(name)
            if found is not None:
                highest = max(highest, int(found.group("generation")))
    return highest + 1


def _unchanged_stats(connection: sqlite3.Connection, scanned: int) -> UpdateStats:
    """Stats of an update that found the published library up to date.

    Reads the manifest only. ``failed`` comes from the ``failures`` table,
    in source id order.
    """
    stats = UpdateStats(reused=scanned)
    stats.tiles = connection.execute("SELECT COUNT(*) FROM tiles").fetchone()[0]
    stats.failed = connection.execute(
        "SELECT source_id, error FROM failures ORDER BY source_id"
    ).fetchall()
    return stats


#: The columns of ``staged``, which ``tiles`` shares (it adds ``position``).
_COLUMNS = ", ".join(IndexedTile._fields)
_PLACES = ", ".join("?" * len(IndexedTile._fields))


def _read_published(connection: sqlite3.Connection) -> dict[str, PublishedTile]:
    """Return the ``tiles`` rows by source id (reads only)."""
    rows = connection.execute(f"SELECT {_COLUMNS}, position FROM tiles")
    return {tile.source_id: tile for tile in map(PublishedTile._make, rows)}


def _read_staged(connection: sqlite3.Connection) -> dict[str, IndexedTile]:
    """Return the ``staged`` rows by source id (reads only)."""
    rows = connection.execute(f"SELECT {_COLUMNS} FROM staged")
    return {tile.source_id: tile for tile in map(IndexedTile._make, rows)}


def _read_failures(connection: sqlite3.Connection) -> dict[str, Failure]:
    """Return the ``failures`` rows by source id (reads only)."""
    rows = connection.execute("SELECT source_id, size, mtime_ns, error FROM failures")
    return {failure.source_id: failure for failure in map(Failure._make, rows)}


def _scan_summary(source: TileSource) -> tuple[str, int, list[SourceEntry] | None]:
    """The digest stored as ``scan_digest`` for ``source`` now, its entry count, its scan.

    A source whose scan follows from a few facts (:meth:`TileSource.scan_fingerprint`)
    is not scanned (the scan is then None): its fingerprint is digested instead.
    """
    fingerprint = source.scan_fingerprint()
    if fingerprint is None:
        entries = source.scan()
        return _scan_digest(entries), len(entries), entries
    return _text_digest(fingerprint[0]), fingerprint[1], None


def _scan_digest(entries: Sequence[SourceEntry]) -> str:
    """Digest of a scan (ids, sizes, modification times) to detect 'nothing changed'.

    Stored only by a publish, so it always describes the published library.
    """
    return _text_digest("\n".join(f"{e.source_id}\0{e.size}\0{e.mtime_ns}" for e in entries))


def _text_digest(text: str) -> str:
    """The digest stored as ``scan_digest``: of a scan, or of a source's fingerprint."""
    hasher = hashlib.blake2b(digest_size=16)
    hasher.update(text.encode("utf-8", "surrogateescape"))
    return hasher.hexdigest()


def _published_digest(connection: sqlite3.Connection) -> str | None:
    """The digest of the published library's scan, or None while rows are staged."""
    if connection.execute("SELECT 1 FROM staged LIMIT 1").fetchone():
        return None
    return get_meta(connection, "scan_digest")


def _check_store(
    directory: Path,
    generation: int,
    tile: TileFormat,
    published: Mapping[str, PublishedTile],
    staged: Mapping[str, IndexedTile],
    connection: sqlite3.Connection,
) -> None:
    """Refuse to update a packed file that is shorter than the tiles it must hold.

    Appending to a truncated file would silently fill the missing tiles with
    zeros; checking before the decode stage opens the file means a damaged
    index is reported with nothing written.

    Parameters
    ----------
    directory : pathlib.Path
        The index's folder.
    generation : int
        Generation of the current packed file.
    tile : TileFormat
        The tiles' size, aspect and crop.
    published, staged : mapping
        The manifest's ``tiles`` and ``staged`` rows, whose slots must exist.
    connection : sqlite3.Connection
        The manifest (for its ``shards``).

    Raises
    ------
    MosaicistError
        When ``tiles-<generation>.u8``, or a shard file, lacks a slot that a row uses.
    """
    slots = [row.slot for row in published.values()] + [row.slot for row in staged.values()]
    if not slots:
        return
    shape = (tile.height, tile.width, 3)
    space = SlotSpace(directory, generation, read_shards(connection), shape)
    space.check(space.slot_array(slots, len(slots)))


# -- decode -----------------------------------------------------------------------------


def _decode_into_store(
    source: TileSource,
    to_decode: Sequence[SourceEntry],
    tile: TileFormat,
    store: Path,
    connection: sqlite3.Connection,
    published: Mapping[str, PublishedTile],
    next_slot: int,
    show_progress: bool,
    stats: UpdateStats,
    *,
    decoded_tiles: Iterator[DecodedTile] | None = None,
) -> int:
    """Decode entries, appending pixels to ``store``; commit in crash-safe batches.

    Every ``COMMIT_EVERY`` entries or ``COMMIT_SECONDS`` seconds, and when
    decoding ends for any reason (an interrupt included), the pixels written
    so far are flushed and fsynced, then one transaction records the batch
    (each row with its crop window and its signature, computed here
    :data:`SIGN_EVERY` tiles at a time):
    its ``staged`` rows, its ``failures`` (and drops failures of entries that
    now decoded) and the new ``next_slot``. A committed row therefore never
    points at pixels that are not on disk, and whatever is committed is kept
    by a later update. Readers do not see staged rows: nothing is published.

    Parameters
    ----------
    source : TileSource
        Decodes the entries.
    to_decode : sequence of SourceEntry
        The entries to decode.
    tile : TileFormat
        The tiles' size, aspect and crop.
    store : pathlib.Path
        The current packed file; created when missing.
    connection : sqlite3.Connection
        The manifest.
    published : mapping of str to PublishedTile
        The published rows: an entry whose content hashes as its published
        tile's, with the same crop window, reuses that tile's slot.
    next_slot : int
        First slot that no committed row uses.
    show_progress : bool
        Draw a progress bar on stderr.
    stats : UpdateStats
        ``decoded`` is counted up here.
    decoded_tiles : iterator of DecodedTile, optional
        The outcome of each of ``to_decode``, in any order, instead of the
        source's decode (:meth:`_MovedTiles.tiles`); closed however the
        stage ends.

    Returns
    -------
    int
        The ``next_slot`` committed last.
    """
    tile_bytes = tile.tile_bytes
    shape = (tile.height, tile.width, 3)
    pending_rows: list[IndexedTile] = []
    # Pixels of the last rows of pending_rows, whose signatures are not computed yet.
    unsigned: list[np.ndarray] = []
    pending_failures: list[Failure] = []
    last_commit = time.monotonic()
    committed_slot = next_slot
    try:
        # Unbuffered: a failed write leaves nothing in a buffer to flush later.
        handle = open(store, "r+b", buffering=0, opener=_create)  # noqa: SIM115
    except OSError as error:
        raise _write_error(store, error) from None

    with handle, progress_bar(len(to_decode), "indexing", unit="img",
                              enabled=show_progress) as bar:
        # Pixels past the committed next_slot belong to a batch that never
        # committed (an interrupted update): no row points at them.
        try:
            handle.truncate(next_slot * tile_bytes)
            handle.seek(next_slot * tile_bytes)
        except OSError as error:
            raise _write_error(store, error) from None

        def sign() -> None:
            if not unsigned:
                return
            hashes, colours, mirrors = _signature_columns(np.stack(unsigned))
            first = len(pending_rows) - len(unsigned)
            for index, columns in enumerate(zip(hashes, colours, mirrors, strict=True)):
                row = pending_rows[first + index]
                pending_rows[first + index] = row._replace(
                    phash=columns[0], mean_rgb=columns[1], phash_mirror=columns[2])
            unsigned.clear()

        def commit() -> None:
            nonlocal last_commit, committed_slot
            sign()
            # Pixels reach the disk before the rows that point at them commit.
            try:
                os.fsync(handle.fileno())
            except OSError as error:
                raise _write_error(store, error) from None
            with transaction(connection):
                connection.executemany(
                    f"INSERT OR REPLACE INTO staged({_COLUMNS}) VALUES ({_PLACES})",
                    pending_rows,
                )
                _note_missing_mirrors(connection, pending_rows)
                connection.executemany(
                    "INSERT OR REPLACE INTO failures(source_id, size, mtime_ns, error) "
                    "VALUES (?, ?, ?, ?)",
                    pending_failures,
                )
                connection.executemany(
                    "DELETE FROM failures WHERE source_id = ?",
                    [(row.source_id,) for row in pending_rows],
                )
                set_meta(connection, "next_slot", next_slot)
            committed_slot = next_slot
            pending_rows.clear()
            pending_failures.clear()
            last_commit = time.monotonic()

        succeeded = False
        if decoded_tiles is None:
            decoded_tiles = decode_tiles(source, to_decode, tile)
        try:
            for decoded in decoded_tiles:
                entry = decoded.entry
                stats.decoded += 1
                bar.update(1)
                if decoded.pixels is None or decoded.content_hash is None:
                    pending_failures.append(Failure(*failure_row(
                        entry.source_id, entry.size, entry.mtime_ns, decoded.error,
                        decoded.transient)))
                elif decoded.pixels.shape != shape:
                    pending_failures.append(
                        Failure(
                            entry.source_id, entry.size, entry.mtime_ns,
                            f"the source made a tile of {decoded.pixels.shape}, not {shape}",
                        )
                    )
                else:
                    old = published.get(entry.source_id)
                    window = _window_columns(decoded.window)
                    # The same window too: the same bytes are other pictures in an image
                    # array saved again reshaped (32 x 32 as 16 x 64), whose window moves.
                    if (old is not None and old.content_hash == decoded.content_hash
                            and window == (old.crop_left, old.crop_top, old.crop_width,
                                           old.crop_height)):
                        slot = old.slot  # touched but not changed: keep the pixels we have
                    else:
                        slot = next_slot
                        try:
                            _write_all(
                                handle, np.ascontiguousarray(decoded.pixels, np.uint8).tobytes()
                            )
                        except OSError as error:
                            raise _write_error(store, error) from None
                        next_slot += 1
                    row = IndexedTile(entry.source_id, slot, entry.size, entry.mtime_ns,
                                      decoded.content_hash, *window)
                    if decoded.signature is not None:
                        sign()  # the rows still unsigned must stay the last ones
                        phash, colour, mirror = signature_columns(decoded.signature)
                        pending_rows.append(row._replace(phash=phash, mean_rgb=colour,
                                                         phash_mirror=mirror))
                    else:
                        # A source that does not sign: from the pixels, a batch at a time.
                        pending_rows.append(row)
                        unsigned.append(decoded.pixels)
                        if len(unsigned) >= SIGN_EVERY:
                            sign()
                if (
                    len(pending_rows) + len(pending_failures) >= COMMIT_EVERY
                    or time.monotonic() - last_commit > COMMIT_SECONDS
                ):
                    commit()
            succeeded = True
        finally:
            # Stop the source's workers first, however the loop ended.
            close = getattr(decoded_tiles, "close", None)
            if close is not None:
                close()
            committed = False
            try:
                # Also on KeyboardInterrupt or an error: keep what was decoded.
                if pending_rows or pending_failures:
                    commit()
                committed = True
            except (sqlite3.Error, MosaicistError):
                if succeeded:
                    raise
                # The loop's own error goes on: this commit failing too (a full disk
                # refuses the manifest after the packed file) replaced it, and the
                # packed file the disk would not grow was told as "manifest.sqlite".
            finally:
                if not (succeeded and committed):
                    # What no committed row points at (a partial tile, a batch
                    # whose commit failed) would only hold space, on a disk
                    # that may be full, until the next update cut it off.
                    with contextlib.suppress(OSError):
                        handle.truncate(committed_slot * tile_bytes)
    return next_slot


#: Indexes of other folders that a new folder index looks in for its tiles, the
#: most recently updated first (see :class:`_MovedTiles`).
MOST_EARLIER_INDEXES = 16
#: Entries looked up in another folder's index before all its rows are read.
_SAMPLED_ENTRIES = 32
#: A manifest's ``phash`` is a signed 64-bit number; a signature's hash is not.
_HASH_MASK = (1 << 64) - 1


@dataclass
class _EarlierIndex:
    """The published rows of another folder's index of the same tiles, to take pixels from."""

    space: SlotSpace
    rows: dict[str, PublishedTile]
    checked_ns: int | None


@dataclass
class _MovedTiles:
    """Tiles of a folder's new index found in the index of the folder it was before.

    A folder's index is keyed by its path, so a library that was moved or
    renamed (or is reached through another path, a symbolic link) gets a new,
    empty index. Its files are the same files: each entry whose relative path
    and size are those of a published row of an index of another folder, of
    the same tile size, aspect, crop and colour profiles, takes that row's
    pixels, crop window, content hash and signature instead of being decoded,
    which is what its decode would give. The row must vouch for the file: its
    change stamp is the file's and not racy (:func:`_is_racy`; a ``mv`` or a
    link keeps the stamps), or else the file's bytes hash as the row's
    content (a copy). Any other entry is decoded, as is one whose earlier
    index cannot be read (it is only read, never locked: a published state
    is never written to, and a file it replaced since is simply not used).

    Attributes
    ----------
    found : list of (_EarlierIndex, list of (SourceEntry, PublishedTile))
        The entries each earlier index holds, with their rows there.
    rest : list of SourceEntry
        The entries to decode.
    taken : int
        Tiles taken so far by :meth:`tiles` (not decoded).
    """

    found: list[tuple[_EarlierIndex, list[tuple[SourceEntry, PublishedTile]]]]
    rest: list[SourceEntry]
    taken: int = 0

    @classmethod
    def find(cls, source: TileSource, tile: TileFormat, directory: Path,
             entries: Sequence[SourceEntry]) -> _MovedTiles | None:
        """Look for ``entries`` in the indexes of other folders beside ``directory``.

        Parameters
        ----------
        source : TileSource
            The source; only a folder's (its key ``folder:...``) is looked for.
        tile : TileFormat
            The tiles of the index, which the earlier one's must be.
        directory : pathlib.Path
            The new index's folder, ``indexes/<source>/<tiles>``.
        entries : sequence of SourceEntry
            The entries to decode.

        Returns
        -------
        _MovedTiles or None
            None when no entry was found.
        """
        if not source.key.startswith("folder:"):
            return None
        remaining = {entry.source_id: entry for entry in entries}
        found: list[tuple[_EarlierIndex, list[tuple[SourceEntry, PublishedTile]]]] = []
        for earlier_dir in _earlier_indexes(directory):
            earlier = _read_earlier_index(earlier_dir, tile, list(remaining.values()))
            if earlier is None:
                continue
            trusted: list[tuple[SourceEntry, PublishedTile]] = []
            to_hash: list[tuple[SourceEntry, PublishedTile]] = []
            for source_id, entry in remaining.items():
                row = earlier.rows.get(source_id)
                if row is None or row.size != entry.size:
                    continue
                if _unsigned(row) and not _signs_as_photo(tile):
                    continue  # signed from its tile, it would not sign as its photo
                if row.mtime_ns == entry.mtime_ns and not _is_racy(entry.mtime_ns,
                                                                    earlier.checked_ns):
                    trusted.append((entry, row))
                else:
                    to_hash.append((entry, row))
            if to_hash:
                # A copy's stamps are new: its files' bytes must be the rows' content.
                changed = set(_changed_content(
                    source, [entry for entry, _ in to_hash],
                    [(position, row.content_hash) for position, (_, row) in enumerate(to_hash)]))
                trusted += [pair for position, pair in enumerate(to_hash)
                            if position not in changed]
            if not trusted:
                continue
            try:
                earlier.space.check(earlier.space.slot_array([row.slot for _, row in trusted],
                                                             len(trusted)))
            except (OSError, MosaicistError):
                continue
            for entry, _ in trusted:
                del remaining[entry.source_id]
            found.append((earlier, trusted))
            if not remaining:
                break
        if not found:
            return None
        rest = [entry for entry in entries if entry.source_id in remaining]
        return cls(found, rest)

    def tiles(self, source: TileSource, tile: TileFormat) -> Iterator[DecodedTile]:
        """The tiles found, from their earlier index, then the decode of the rest.

        Pixels are copied :data:`COPY_CHUNK` tiles at a time; a chunk that
        cannot be read (its file replaced since) is decoded with the rest.
        """
        rest = list(self.rest)
        for earlier, pairs in self.found:
            for start in range(0, len(pairs), COPY_CHUNK):
                chunk = pairs[start:start + COPY_CHUNK]
                slots = np.asarray([row.slot for _, row in chunk], np.int64)
                try:
                    pixels = earlier.space.gather(slots)
                except (OSError, ValueError, MosaicistError):
                    rest += [entry for entry, _ in pairs[start:]]
                    break
                for (entry, row), tile_pixels in zip(chunk, pixels, strict=True):
                    columns = (row.crop_left, row.crop_top, row.crop_width, row.crop_height)
                    window = (None if any(value is None for value in columns)
                              else Window(*(int(value or 0) for value in columns)))
                    signature: tuple[int, ...] | None = None
                    if row.phash is not None and row.mean_rgb is not None:
                        signature = (row.phash & _HASH_MASK, row.mean_rgb)
                        if row.phash_mirror is not None:
                            signature = (*signature, row.phash_mirror & _HASH_MASK)
                    self.taken += 1
                    yield DecodedTile(entry, tile_pixels, row.content_hash, None, window,
                                      signature)
        if rest:
            yield from decode_tiles(source, rest, tile)


def _earlier_indexes(directory: Path) -> list[Path]:
    """The folders of other sources' indexes of ``directory``'s tiles, the latest first.

    At most :data:`MOST_EARLIER_INDEXES`, each with a manifest.
    """
    own = directory.parent
    found: list[tuple[int, Path]] = []
    try:
        with os.scandir(own.parent) as items:
            others = [Path(item.path) / directory.name for item in items
                      if item.name != own.name and item.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    for other in others:
        try:
            found.append((max(os.stat(other / name).st_mtime_ns
                              for name in ("manifest.sqlite", "manifest.sqlite-wal")
                              if os.path.exists(other / name)), other))
        except (OSError, ValueError):  # no manifest (max of nothing), or gone meanwhile
            continue
    found.sort(key=lambda item: item[0], reverse=True)
    return [other for _, other in found[:MOST_EARLIER_INDEXES]]


def _read_earlier_index(directory: Path, tile: TileFormat,
                        entries: Sequence[SourceEntry]) -> _EarlierIndex | None:
    """The published state of another folder's index of ``tile``'s tiles, or None.

    None when it is not a folder's, holds other tiles (size, aspect, crop
    method, colour profiles), cannot be read, or has none of a few of
    ``entries`` (by id and size): its rows are only all read when it may
    hold them (a million rows take seconds).
    """
    wanted = {"tile_px": str(tile.width), "tile_height": str(tile.height),
              "aspect": format_aspect(tile.aspect), "crop": tile.method}
    try:
        connection = connect_read_only(directory)
    except (sqlite3.Error, OSError, MosaicistError):  # a newer version's index among them
        return None
    try:
        connection.execute("BEGIN")
        key = get_meta(connection, "source_key") or ""
        if (not key.startswith("folder:")
                or any(get_meta(connection, name) != value for name, value in wanted.items())
                or index_profiles(connection) != tile.colour_profiles):
            return None
        if (get_meta(connection, "signature_rule")
                not in (str(SIGNATURE_RULE), str(_RULE_BEFORE_MIRRORS))
                and not _decoded_at_signature_scale(tile)):
            # Its JPEGs may be signed by the rule before (see _resign_photos), and this
            # index would keep their signatures for good: its photos are decoded. (Rows
            # of rule 2 lack their mirrors' hashes at most: the new index's first grouping
            # gives them theirs, see _note_missing_mirrors.)
            return None
        step = max(1, len(entries) // _SAMPLED_ENTRIES)
        sample = entries[::step][:_SAMPLED_ENTRIES]
        if not any(connection.execute("SELECT 1 FROM tiles WHERE source_id = ? AND size = ?",
                                      (entry.source_id, entry.size)).fetchone()
                   for entry in sample):
            return None
        rows = _read_published(connection)
        generation = meta_count(connection, "generation")
        shards = read_shards(connection)
        checked_ns = _meta_time(connection, "stamps_checked_ns")
        connection.execute("COMMIT")
    except (sqlite3.Error, ValueError, TypeError):
        return None
    finally:
        connection.close()
    if not rows:
        return None
    space = SlotSpace(directory, generation, shards, (tile.height, tile.width, 3))
    return _EarlierIndex(space, rows, checked_ns)


def _window_columns(window: Window | None) -> tuple[int | None, ...]:
    """A crop window as the manifest's four columns (NULL when the source gave none)."""
    if window is None:
        return (None, None, None, None)
    return tuple(int(value) for value in window)


def _signature_columns(tiles: np.ndarray) -> tuple[list[int], list[int], list[int]]:
    """The manifest's ``phash``, ``mean_rgb`` and ``phash_mirror`` of ``(N, H, W, 3)`` tiles.

    The hashes as signed 64-bit numbers, as SQLite stores them.
    """
    hashes, mirrors, colours = mirrored_tile_signatures(tiles)
    packed = (colours[:, 0].astype(np.int64) << 16) | (colours[:, 1].astype(np.int64) << 8) \
        | colours[:, 2].astype(np.int64)
    return hashes.view(np.int64).tolist(), packed.tolist(), mirrors.view(np.int64).tolist()



def _sign_published(directory: Path, tile: TileFormat, connection: sqlite3.Connection) -> None:
    """Give every published row without one its signature, from the packed tiles.

    Rows of schema 1 have none: in an index of square centre tiles at
    :data:`~mosaicist.dedupe.SIGNATURE_PX` pixels they are computed once,
    from the pixels already in the packed file (no decoding, and the
    photos' own signatures), in committed batches, and then ``signed`` is
    set, so later updates skip even the check. In other indexes the plan
    decoded them again for their photos' signatures
    (:func:`_resign_from_photos`): only those whose photo could not be
    decoded are left, and signed here from their tiles. Every row decoded
    since has its signature.
    """
    if get_meta(connection, "signed") == "1":
        return
    rows = connection.execute(
        "SELECT source_id, slot FROM tiles WHERE phash IS NULL OR mean_rgb IS NULL ORDER BY slot"
    ).fetchall()
    if rows:
        generation = meta_count(connection, "generation")
        space = SlotSpace(directory, generation, read_shards(connection),
                          (tile.height, tile.width, 3))
        slots = np.fromiter((row[1] for row in rows), np.int64, len(rows))
        chunk = max(1, min(COPY_CHUNK, _SIGN_BYTES // tile.tile_bytes))
        for start in range(0, len(rows), chunk):
            hashes, colours, mirrors = _signature_columns(
                space.gather(slots[start:start + chunk]))
            with transaction(connection):
                connection.executemany(
                    "UPDATE tiles SET phash = ?, mean_rgb = ?, phash_mirror = ? "
                    "WHERE source_id = ?",
                    zip(hashes, colours, mirrors, (row[0] for row in rows[start:start + chunk]),
                        strict=True),
                )
    with transaction(connection):
        if not connection.execute(
            "SELECT 1 FROM tiles WHERE phash IS NULL OR mean_rgb IS NULL LIMIT 1"
        ).fetchone():
            set_meta(connection, "signed", 1)


# -- publish ----------------------------------------------------------------------------


def _publish(
    plan: UpdatePlan,
    tile: TileFormat,
    directory: Path,
    connection: sqlite3.Connection,
    stats: UpdateStats,
    sharded: bool = False,
) -> None:
    """Publish the library the scan describes, and fill in ``stats``.

    When the published rows are already that library and nothing is staged,
    only the scan's digest is recorded. Otherwise, when the library's slots
    are not ``0..N-1`` in order, its pixels are first copied in library order
    to ``tiles-<G+1>.u8``, durably and under a temporary name, while the
    manifest still names ``tiles-<G>.u8``. One transaction then swaps the
    manifest to the new library (:func:`_swap_manifest`), and only after it
    commits is the old packed file deleted. An interrupt before that commit
    leaves the published library and the staged rows as they were, and the
    next update publishes again (a new packed file that was not published is
    overwritten by the next repack). An interrupt after the commit can only
    leave the old packed file behind, unused.

    A ``sharded`` publish (after a cluster decoded the entries into shards)
    copies nothing: the rows keep their slots, in the shards and the packed
    file alike, and the library moves to generation G+1 (so that caches
    keyed by it are made again). ``tiles-<G>.u8``, where the library still
    uses it, is listed as a shard from then on, under its own name. Where
    the library would use more than :data:`MOST_SHARDS` shards, the
    smallest are first copied into one (:func:`_merge_small_shards`). Shard
    files that no published row uses are deleted after the commit.

    Parameters
    ----------
    plan : UpdatePlan
        The plan, with ``staged``, ``failures`` and ``next_slot`` as the
        decode stage committed them.
    tile : TileFormat
        The tiles' size, aspect and crop.
    directory : pathlib.Path
        The index's folder.
    connection : sqlite3.Connection
        The manifest.
    stats : UpdateStats
        ``tiles``, ``failed`` and ``removed`` are set here.
    sharded : bool
        Keep the library in its shards instead of one packed file.
    """
    final, failed = _final_library(plan)
    stats.failed = failed
    stats.tiles = len(final)
    scanned_ids = {entry.source_id for entry in plan.entries}
    stats.removed = sum(1 for source_id in plan.published if source_id not in scanned_ids)

    if _is_published(final, plan.published) and not plan.staged:
        with transaction(connection):
            # Entries that failed and have since gone from the source must not
            # be reported again by the next runs' fast path.
            _keep_failures(connection, failed)
            set_meta(connection, "scan_digest", plan.digest)
            _record_checked(connection, plan, final)
            _record_profiles(connection, tile)
        return

    shards = read_shards(connection)
    space = SlotSpace(directory, plan.generation, shards, (tile.height, tile.width, 3))
    old_store = space.store
    generation = plan.generation
    next_slot = plan.next_slot
    slots = np.fromiter((row.slot for row in final), dtype=np.int64, count=len(final))
    published_slots: Sequence[int]
    if sharded:
        generation += 1
        next_slot = 0
        in_store = slots < SHARD_SLOTS
        if in_store.any():
            kept_store = Shard(old_store.name, next_shard_slot(shards), plan.next_slot)
            shards = [*shards, kept_store]
            slots = np.where(in_store, slots + kept_store.first_slot, slots)
        used = _shards_used(shards, slots)
        if len(used) > MOST_SHARDS:
            merged, slots, used = _merge_small_shards(directory, shards, used, slots,
                                                      (tile.height, tile.width, 3))
            shards = [*shards, merged]
        published_slots = slots.tolist()
    elif np.array_equal(slots, np.arange(len(final))):
        published_slots = slots.tolist()  # Python ints: SQLite cannot bind NumPy's
    else:
        # Out of order, every reader has to copy the tiles out of the map
        # (see TileLibrary._read); in order, they map one contiguous array.
        generation += 1
        _write_packed(space, store_path(directory, generation), slots)
        published_slots = range(len(final))
        next_slot = len(final)
    if not sharded:
        used = _shards_used(shards, np.asarray(published_slots, np.int64))
    _swap_manifest(
        connection, final, published_slots, failed, generation, next_slot, plan.digest, used,
        plan, tile,
    )
    if generation != plan.generation and old_store.name not in {shard.file for shard in used}:
        with contextlib.suppress(FileNotFoundError):
            old_store.unlink()
    for shard in shards:
        if shard not in used:
            with contextlib.suppress(FileNotFoundError):
                (directory / shard.file).unlink()


def _merge_small_shards(
    directory: Path, shards: Sequence[Shard], used: Sequence[Shard], slots: np.ndarray,
    shape: tuple[int, int, int],
) -> tuple[Shard, np.ndarray, list[Shard]]:
    """Copy the tiles of the smallest shards ``slots`` uses into one new shard.

    Enough of the smallest are merged that half of :data:`MOST_SHARDS`
    remain: each merge copies only small shards (a library that grew by many
    small cluster updates), and the next one comes after as many updates
    again. The new shard holds the tiles in library order, after every
    listed shard's slots, written whole and flushed under a temporary name
    (:func:`_write_packed`) before the publishing transaction lists it; an
    interrupt before that leaves a shard file that no row lists, which the
    next update removes. The merged shards' files are deleted once no
    published row uses them.

    Parameters
    ----------
    directory : pathlib.Path
        The index's folder.
    shards : sequence of Shard
        Every listed shard (``slots`` are all in them).
    used : sequence of Shard
        Those that hold at least one of ``slots``.
    slots : numpy.ndarray
        int64 slot of each tile of the library, in library order.
    shape : tuple of int
        One tile's ``(height, width, 3)``.

    Returns
    -------
    (Shard, numpy.ndarray, list of Shard)
        The new shard, ``slots`` with the merged tiles' slots in it, and the
        shards those use.
    """
    by_size = sorted(used, key=lambda shard: (shard.tile_count, shard.first_slot))
    merging = by_size[:len(used) - MOST_SHARDS // 2 + 1]
    starts = np.array([shard.first_slot for shard in merging], np.int64)
    ends = starts + np.array([shard.tile_count for shard in merging], np.int64)
    order = np.argsort(starts)
    starts, ends = starts[order], ends[order]
    shard_of = np.searchsorted(starts, slots, side="right") - 1
    moved = np.flatnonzero((shard_of >= 0) & (slots < ends[np.maximum(shard_of, 0)]))
    merged = Shard(f"{SHARD_PREFIX}{uuid.uuid4().hex}.u8", next_shard_slot(shards), len(moved))
    # The generation is not read: every slot of a sharded library is in a shard.
    _write_packed(SlotSpace(directory, 0, shards, shape), directory / merged.file, slots[moved])
    slots = slots.copy()
    slots[moved] = merged.first_slot + np.arange(len(moved))
    return merged, slots, [*(shard for shard in used if shard not in merging), merged]


def _shards_used(shards: Sequence[Shard], slots: np.ndarray) -> list[Shard]:
    """The shards that hold at least one of ``slots``."""
    ordered = np.sort(slots)
    used = []
    for shard in shards:
        low = int(np.searchsorted(ordered, shard.first_slot))
        if low < len(ordered) and ordered[low] < shard.first_slot + shard.tile_count:
            used.append(shard)
    return used


def stage_shard(
    connection: sqlite3.Connection, shard_file: str, tiles: Sequence[tuple],
    failures: Sequence[tuple],
) -> None:
    """List a finished shard file and stage its rows, in one transaction.

    The shard's slots follow every listed shard's; each row's slot, counted
    from the shard's first tile, becomes its slot in the index. A tile whose
    content hashes as its published tile's, with the same crop window,
    keeps the published slot (the shard's copy goes unused). The shard
    file must be complete on disk: once this commits, staged rows point
    into it.

    Parameters
    ----------
    connection : sqlite3.Connection
        The manifest (the caller holds the write lock).
    shard_file : str
        The shard's name in the index folder.
    tiles : sequence of tuple
        Rows of ``staged`` with slots counted from the shard's first tile.
    failures : sequence of tuple
        Rows of ``failures``.
    """
    with transaction(connection):
        first = next_shard_slot(read_shards(connection))
        # IndexedTile(*row): a worker from before the mirrors' hashes wrote one column less.
        rows = [row._replace(slot=first + row.slot)
                for row in (IndexedTile(*tile_row) for tile_row in tiles)]
        if connection.execute("SELECT 1 FROM tiles LIMIT 1").fetchone():
            # With the crop windows: the same bytes may be other pictures (see
            # _decode_into_store).
            connection.execute("CREATE TEMP TABLE IF NOT EXISTS decoded_windows("
                               "source_id TEXT PRIMARY KEY, content_hash TEXT, crop_left, "
                               "crop_top, crop_width, crop_height)")
            connection.execute("DELETE FROM decoded_windows")
            connection.executemany(
                "INSERT OR REPLACE INTO decoded_windows VALUES (?, ?, ?, ?, ?, ?)",
                [(row.source_id, row.content_hash, row.crop_left, row.crop_top,
                  row.crop_width, row.crop_height) for row in rows])
            unchanged = dict(connection.execute(
                "SELECT source_id, slot FROM tiles AS old JOIN decoded_windows AS new "
                "USING (source_id) WHERE old.content_hash = new.content_hash "
                "AND old.crop_left IS new.crop_left AND old.crop_top IS new.crop_top "
                "AND old.crop_width IS new.crop_width AND old.crop_height IS new.crop_height"))
            if unchanged:
                rows = [row._replace(slot=unchanged.get(row.source_id, row.slot))
                        for row in rows]
        if tiles:
            connection.execute("INSERT INTO shards(file, first_slot, tile_count) VALUES (?, ?, ?)",
                               (shard_file, first, len(tiles)))
        connection.executemany(
            f"INSERT OR REPLACE INTO staged({_COLUMNS}) VALUES ({_PLACES})", rows)
        # A worker of a version from before the mirrors' hashes: its rows are given them
        # by the first grouping of near-duplicates, as an index of rule 2's.
        _note_missing_mirrors(connection, rows)
        connection.executemany(
            "INSERT OR REPLACE INTO failures(source_id, size, mtime_ns, error) "
            "VALUES (?, ?, ?, ?)", [tuple(failure) for failure in failures])
        connection.executemany("DELETE FROM failures WHERE source_id = ?",
                               [(row.source_id,) for row in rows])


def _final_library(
    plan: UpdatePlan,
) -> tuple[list[IndexedTile | PublishedTile], list[tuple[str, str]]]:
    """Lay out the library to publish: every scanned entry that has pixels.

    A staged tile wins over a published one of the same stamp, since it was
    decoded later. Entries with neither fail, with the reason recorded.
    Pure: reads the plan, writes nothing.

    Parameters
    ----------
    plan : UpdatePlan
        The plan, with the rows the decode stage committed.

    Returns
    -------
    final : list of IndexedTile or PublishedTile
        The library, in scan order: each tile's staged or published row. (Its
        published ``position``, if any, is the old one; only ``slot`` counts.)
    failed : list of (str, str)
        ``(source_id, reason)`` of the other entries, in scan order.
    """
    # The rows themselves, not copies: libraries run to millions of tiles,
    # and NamedTuples are costly to create and to keep for the GC.
    final: list[IndexedTile | PublishedTile] = []
    failed: list[tuple[str, str]] = []
    for entry in plan.entries:
        stamp = (entry.size, entry.mtime_ns)
        new = plan.staged.get(entry.source_id)
        old = plan.published.get(entry.source_id)
        if new is not None and (new.size, new.mtime_ns) == stamp:
            final.append(new)
        elif old is not None and (old.size, old.mtime_ns) == stamp:
            final.append(old)
        else:
            failure = plan.failures.get(entry.source_id)
            reason = failure.error if failure is not None else "could not be decoded"
            failed.append((entry.source_id, reason))
    return final, failed


def _is_published(
    final: Sequence[IndexedTile | PublishedTile], published: Mapping[str, PublishedTile]
) -> bool:
    """Whether the published rows hold exactly ``final``: same tiles, slots and order.

    Only ids, slots and positions are compared: a tile of ``final`` that is
    not a published row comes from ``staged``, which the caller checks.
    """
    if len(final) != len(published):
        return False
    for position, tile in enumerate(final):
        old = published.get(tile.source_id)
        if old is None or old.slot != tile.slot or old.position != position:
            return False
    return True


def _swap_manifest(
    connection: sqlite3.Connection,
    final: Sequence[IndexedTile | PublishedTile],
    slots: Sequence[int],
    failed: Sequence[tuple[str, str]],
    generation: int,
    next_slot: int,
    digest: str,
    shards: Sequence[Shard] = (),
    plan: UpdatePlan | None = None,
    tile: TileFormat | None = None,
) -> None:
    """Publish ``final`` in one transaction, so readers see the old library or the new.

    The transaction replaces the ``tiles`` rows and the ``shards``, empties
    ``staged``, keeps only the failures of entries in ``failed``, and sets
    ``generation``, ``next_slot`` and ``scan_digest`` (and, given the
    ``plan``, when its rows were checked: :func:`_record_checked`). The pixels of
    ``final`` must already be on disk in ``tiles-<generation>.u8`` or the
    shards, tile ``final[i]`` at ``slots[i]`` (which differs from
    ``final[i].slot`` after a repack).

    Parameters
    ----------
    connection : sqlite3.Connection
        The manifest.
    final : sequence of IndexedTile or PublishedTile
        The library, in library order.
    slots : sequence of int
        Each tile's slot in ``tiles-<generation>.u8``.
    failed : sequence of (str, str)
        ``(source_id, reason)`` of the scanned entries that have no tile.
    generation, next_slot : int
        The packed file's generation and its first unused slot.
    digest : str
        The scan's digest.
    shards : sequence of Shard
        The shard files that ``slots`` point into.
    plan : UpdatePlan, optional
        The plan whose scan ``final`` is.
    tile : TileFormat, optional
        The tiles' format: its ``colour_profiles`` is now every tile's.
    """
    with transaction(connection):
        connection.execute("DELETE FROM shards")
        connection.executemany("INSERT INTO shards(file, first_slot, tile_count) VALUES (?, ?, ?)",
                               [tuple(shard) for shard in shards])
        connection.execute("DELETE FROM tiles")
        connection.executemany(
            f"INSERT INTO tiles({_COLUMNS}, position) VALUES ({_PLACES}, ?)",
            # Plain tuples: a NamedTuple per tile makes big libraries measurably slower.
            [
                (row.source_id, slot, *row[2:len(IndexedTile._fields)], position)
                for position, (row, slot) in enumerate(zip(final, slots, strict=True))
            ],
        )
        connection.execute("DELETE FROM staged")
        connection.execute(
            "DELETE FROM failures WHERE source_id IN (SELECT source_id FROM tiles)"
        )
        _keep_failures(connection, failed)
        set_meta(connection, "generation", generation)
        set_meta(connection, "next_slot", next_slot)
        set_meta(connection, "scan_digest", digest)
        if plan is not None:
            _record_checked(connection, plan, final)
        if tile is not None:
            _record_profiles(connection, tile)
        new_publication(connection)


def _record_profiles(connection: sqlite3.Connection, tile: TileFormat) -> None:
    """Record, in the publishing transaction, how the published tiles were decoded."""
    set_meta(connection, "colour_profiles", tile.colour_profiles)
    connection.execute("DELETE FROM meta WHERE name = 'decode'")  # 2d8a941's, now said so


def _record_checked(connection: sqlite3.Connection, plan: UpdatePlan,
                    final: Sequence[IndexedTile | PublishedTile]) -> None:
    """Record, in the publishing transaction, when the published rows were checked.

    ``stamps_checked_ns`` is the plan's moment; ``racy`` how many of the
    published rows have stamps racy against it, which the next update
    checks by content; the staged rows' moment goes with them.
    """
    stamps = np.fromiter((row.mtime_ns for row in final), np.int64, count=len(final))
    whole = stamps % 10**9 == 0
    racy = int(np.count_nonzero(
        stamps >= plan.checked_ns - np.where(whole, RACY_COARSE_NS, RACY_FINE_NS)))
    set_meta(connection, "stamps_checked_ns", plan.checked_ns)
    set_meta(connection, "racy", racy)
    connection.execute("DELETE FROM meta WHERE name = 'staged_checked_ns'")


def _keep_failures(connection: sqlite3.Connection, failed: Sequence[tuple[str, str]]) -> None:
    """Delete the recorded failures of every entry but those in ``failed`` (in a transaction)."""
    # A temporary table rather than "NOT IN (?, ?, ...)": there may be more
    # failures than SQLite takes parameters in one statement.
    connection.execute("CREATE TEMP TABLE IF NOT EXISTS keep(source_id TEXT PRIMARY KEY)")
    connection.execute("DELETE FROM keep")
    connection.executemany("INSERT OR IGNORE INTO keep VALUES (?)",
                           [(source_id,) for source_id, _ in failed])
    connection.execute("DELETE FROM failures WHERE source_id NOT IN (SELECT source_id FROM keep)")


def _write_packed(source: SlotSpace, destination: Path, slots: np.ndarray) -> None:
    """Write the tiles at ``slots`` of ``source`` to ``destination``, in that order, durably.

    The file is written as ``tiles-<G>.u8.part`` and renamed only once
    complete and flushed to disk, so the manifest transaction that names it
    never refers to a partial file. On any failure the temporary is removed
    (and one that a crash left is removed by the next update).

    Parameters
    ----------
    source : SlotSpace
        Where the tiles are: the packed file and the shards.
    destination : pathlib.Path
        The packed file to write.
    slots : numpy.ndarray
        int64 slots of ``source``, in the order to write them.
    """
    partial = partial_path(destination)
    try:
        with open(partial, "wb", buffering=0) as handle:
            for start in range(0, len(slots), COPY_CHUNK):
                chunk = source.gather(slots[start:start + COPY_CHUNK])
                _write_all(handle, np.ascontiguousarray(chunk).tobytes())
            os.fsync(handle.fileno())
        os.replace(partial, destination)
    except OSError as error:
        raise _write_error(partial, error) from None
    finally:
        # Whatever stopped the copy, no partial copy is left to fill the disk.
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    sync_folder(destination.parent)
