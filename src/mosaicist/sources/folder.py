"""A folder of image files, scanned recursively."""

from __future__ import annotations

import contextlib
import errno
import multiprocessing
import os
import re
import signal
import stat
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from .._runtime import (
    TERMINATING_SIGNALS,
    end_with_parent,
    forking,
    signals_held_while_starting,
    stop_process_pool,
    worker_count,
)
from ..aspect import SQUARE, height_for
from ..crop import Window
from ..errors import SourceError, counted
from ..imaging import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    missing_reader,
    open_image,
    read_tile_file,
    to_rgb,
)
from .base import (
    DecodedTile,
    SourceEntry,
    TileSource,
    absolute_path,
    change_stamp,
    is_transient,
    name_to_text,
    readable,
    text_to_name,
    warn_of_scan,
)

#: Change stamp of a link whose file is missing, or of a file whose status cannot be
#: read (no file's: see :func:`change_stamp`).
MISSING_STAMP = -1
#: Files handed to a worker process at a time: large enough to amortise the
#: inter-process round trip, small enough to keep progress smooth.
DECODE_BATCH = 128
#: The pictures a folder's files are read as, for messages (:data:`IMAGE_EXTENSIONS` has
#: every extension).
_PICTURE_FILES = "JPEG, PNG, WebP, TIFF, BMP, GIF, HEIC and AVIF"


def _watch_parent(parent_pid: int) -> None:
    """Initialise a decoding worker: make it end when the process that started it ends.

    A worker whose parent was killed (``kill -9``, a crash) would otherwise
    wait forever for work from a parent that is gone
    (:func:`mosaicist._runtime.end_with_parent`; the parent's thread that
    started the worker is the one iterating :meth:`FolderSource.decode`).

    Parameters
    ----------
    parent_pid : int
        PID of the process that made the pool.
    """
    # The parent alone answers Ctrl+C and SIGTERM (both reach the whole
    # process group): it stops its workers itself, and a worker that unwound
    # on its own would only print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for number in TERMINATING_SIGNALS:
        signal.signal(number, signal.SIG_DFL)
    # Forked with both blocked (signals_held_while_starting): one that came meanwhile
    # is dropped (SIGINT) or ends the worker quietly (SIGTERM) only now.
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD_SIGNALS)
    end_with_parent(parent_pid)


#: The signals that reach a whole process group to stop it (Ctrl+C's, ``kill``'s, and a
#: closed terminal's).
_HELD_SIGNALS = frozenset({signal.SIGINT, *TERMINATING_SIGNALS})


#: What a worker returns per file: pixels, content hash, error, crop window, signature,
#: and whether the error may pass (:func:`~mosaicist.sources.base.is_transient`).
_Decoded = tuple[bytes | None, str | None, str | None, Window | None, tuple[int, ...] | None,
                 bool]


def _decode_batch(
    paths: list[str], width_px: int, aspect: tuple[int, int], crop: str,
    colour_profiles: str = "ignore",
) -> list[_Decoded]:
    results: list[_Decoded] = []
    for path in paths:
        if path.endswith(os.sep):
            results.append(_folder_outcome(path))
            continue
        try:
            tile, digest = read_tile_file(path, width_px, aspect, crop, colour_profiles)
            results.append((tile.pixels.tobytes(), digest, None, tile.window, tile.signature,
                            False))
        except ImageReadError as error:
            results.append((None, None, readable(str(error)), None, None, False))
        except OSError as error:
            reason = error.strerror or str(error)
            # Only a missing target: a loop of links does not "exist" either, but its
            # target is there (the link names another link of the loop).
            if (error.errno == errno.ENOENT and os.path.islink(path)
                    and not os.path.exists(path)):
                with contextlib.suppress(OSError):  # the link itself may go meanwhile
                    reason = f"a link to {os.readlink(path)}, which is not there"
            elif error.errno == errno.ELOOP:
                with contextlib.suppress(OSError):
                    reason = f"a link to {os.readlink(path)}, which loops back on itself"
            # The scan found this file: not finding it now (or a folder above it) says
            # it was removed, or its drive or share went away, while indexing. Not the
            # outcome of the file as scanned, so not remembered: with the drive back,
            # the same stamps would otherwise keep its photos out until each changed.
            # The next scan decides (gone: dropped; there: read). See decode for the
            # files the scan did not find either.
            gone = error.errno in (errno.ENOENT, errno.ENOTDIR)
            if gone and not os.path.lexists(path):
                reason = "not there any more (removed, or its drive went away, while indexing)"
            # Decoding reads from memory (its errors are ImageReadErrors): this is the
            # file's read, which a flaky share or a lack of descriptors can fail for now.
            results.append((None, None, readable(reason), None, None,
                            gone or is_transient(error)))
        except Exception as error:  # noqa: BLE001 - one bad file must never stop indexing
            message = readable(f"cannot decode: {type(error).__name__}: {error}")
            results.append((None, None, message, None, None, False))
    return results


def _folder_outcome(path: str) -> _Decoded:
    """The outcome of a folder that the scan could not list (see :meth:`FolderSource.scan`).

    Listed again for its reason, which the scan could not pass on (an entry
    carries a path, not an error).
    """
    try:
        with os.scandir(path) as listing:
            for _ in listing:  # a listing may fail part way, as /proc/1/map_files does
                pass
    except OSError as error:
        reason = readable(f"cannot read this folder: {error.strerror or error}; "
                          f"its photos are left out")
        return None, None, reason, None, None, is_transient(error)
    # It lists now: the next scan lists its photos, so this failure must not be kept.
    return (None, None, "this folder could not be read while scanning; its photos are left "
            "out", None, None, True)


def _imports_of_decoding() -> None:
    """Import here what a decoding worker imports on first need, before it is forked.

    Every Pillow plugin (a photo of any format; the target's thread may be
    loading them) and imagecodecs (PNG's faster reader). Forked children then
    find them loaded, instead of waiting forever for the locks of imports
    another thread had begun (see :func:`mosaicist._runtime.forking`).
    """
    Image.init()
    with contextlib.suppress(ImportError):
        import imagecodecs

        # Its codecs load on first use, each a module of its own: PNG's is the one read.
        getattr(imagecodecs, "png_decode", None)


def _process_context() -> Any:
    """The multiprocessing context of the decoding workers: fork on Linux (cheap to start)."""
    return multiprocessing.get_context("fork" if sys.platform == "linux" else None)


def _decode_pooled(
    batches: Sequence[list[str]], workers: int, width_px: int, aspect: tuple[int, int],
    crop: str, colour_profiles: str = "ignore",
) -> Iterator[list[_Decoded]]:
    """Decode ``batches`` in a pool of ``workers`` processes; yield each one's results in order.

    A worker that ends abruptly (a decoder crashing on a damaged file, the
    kernel killing it for memory) breaks the whole pool, every batch in
    flight with it. The batch it broke at is then decoded again in a process
    of its own (:func:`_decode_isolated`), which finds the file that ends the
    process and reports it as a bad file; a new pool takes the rest, and the
    batches the broken pool had finished are kept. So one such file is
    skipped like any other bad file, instead of ending the index run (and
    every later run, which would meet it again).
    """
    context = _process_context()
    done: dict[int, list[_Decoded]] = {}
    start = 0
    while start < len(batches):
        executor = ProcessPoolExecutor(
            max_workers=workers, mp_context=context,
            initializer=_watch_parent, initargs=(os.getpid(),),
        )
        finished = False
        try:
            futures: dict[int, Future[list[_Decoded]]] = {}
            broken = False
            try:
                # The first submission forks every worker.
                with forking(_imports_of_decoding), signals_held_while_starting(_HELD_SIGNALS):
                    for index in range(start, len(batches)):
                        if index not in done:
                            futures[index] = executor.submit(_decode_batch, batches[index],
                                                             width_px, aspect, crop,
                                                             colour_profiles)
            except BrokenProcessPool:
                broken = True
            while not broken and start < len(batches):
                results = done.pop(start, None)
                if results is None:
                    try:
                        results = futures[start].result()
                    except BrokenProcessPool:
                        broken = True
                        break
                yield results
                start += 1
            if broken:
                # Keep what the broken pool finished; only the rest is decoded again.
                for index, future in futures.items():
                    if (index > start and future.done() and not future.cancelled()
                            and future.exception() is None):
                        done[index] = future.result()
            else:
                finished = True
        finally:
            if finished:
                executor.shutdown(wait=True)
            else:
                stop_process_pool(executor)
        if broken:
            yield _decode_isolated(context, batches[start], width_px, aspect, crop,
                                   colour_profiles)
            start += 1


def _decode_and_send(
    sender: Any, parent_pid: int, paths: list[str], width_px: int, aspect: tuple[int, int],
    crop: str, colour_profiles: str = "ignore",
) -> None:
    """Run in a process of its own: decode ``paths`` and send the results to the parent."""
    _watch_parent(parent_pid)
    sender.send(_decode_batch(paths, width_px, aspect, crop, colour_profiles))
    sender.close()


def _decode_alone(
    context: Any, paths: list[str], width_px: int, aspect: tuple[int, int], crop: str,
    colour_profiles: str = "ignore",
) -> list[_Decoded] | int:
    """Decode ``paths`` in a new process: the results, or its exit code if it ended without them."""
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_decode_and_send,
        args=(sender, os.getpid(), paths, width_px, aspect, crop, colour_profiles),
        daemon=True,
    )
    with forking(_imports_of_decoding), signals_held_while_starting(_HELD_SIGNALS):
        process.start()
    sender.close()  # else the receiver would never see the end of a process that died
    try:
        try:
            results: list[_Decoded] = receiver.recv()
        except EOFError:
            process.join()
            return process.exitcode if process.exitcode is not None else -1
        return results
    finally:
        receiver.close()
        if process.is_alive():
            # Interrupted while it worked, or it hangs on after sending.
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()


def _crash_reason(exitcode: int) -> str:
    """Why a decoding process ended without a result, from its exit code (a bad file's reason)."""
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        if -exitcode == signal.SIGKILL:
            return f"the decoding process was killed ({name}; out of memory?) while reading it"
        return f"the decoder crashed on it ({name})"
    return f"the decoding process ended abruptly (exit status {exitcode}) while reading it"


def _decode_isolated(
    context: Any, paths: list[str], width_px: int, aspect: tuple[int, int], crop: str,
    colour_profiles: str = "ignore",
) -> list[_Decoded]:
    """Decode a batch that broke a pool: in one new process, and file by file if that ends too.

    The batch may be innocent (a pool breaks every batch in flight), so it is
    first decoded whole; only if that process ends abruptly too is each file
    decoded in a process of its own, and those that end theirs are bad files.
    """
    results = _decode_alone(context, paths, width_px, aspect, crop, colour_profiles)
    if isinstance(results, list):
        return results
    decoded: list[_Decoded] = []
    for path in paths:
        single = _decode_alone(context, [path], width_px, aspect, crop, colour_profiles)
        if isinstance(single, list):
            decoded.extend(single)
        else:
            decoded.append((None, None, _crash_reason(single), None, None, False))
    return decoded


#: What may pad the end of a file name unseen (spaces of any kind, tabs, newlines) and
#: the dots Windows drops there: not part of the extension (:func:`_extension`).
_NAME_END_PADDING = re.compile(r"[\s.]+\Z")


def _extension(name: str) -> str:
    """The extension a folder's file is taken by, lower case: ``".jpg"``, or ``""`` for none.

    Trailing spaces and dots are not part of it: ``"photo.jpg "`` and
    ``"photo.jpg."`` are JPEG files to their owner (Windows and its shares
    drop such ends from names, and a name copied from elsewhere may carry
    them unseen); read by their content, they decode as any other, and their
    ids keep the names as they are. Such files were left out without a word.

    Examples
    --------
    >>> _extension("Photo.JPG "), _extension("photo.png.."), _extension("notes")
    ('.jpg', '.png', '')
    """
    stem = _NAME_END_PADDING.sub("", name)
    dot = stem.rfind(".")
    return stem[dot:].lower() if dot > 0 else ""


def _is_link(item: os.DirEntry[str]) -> bool:
    """Whether a folder entry is a symbolic link (False where even that cannot be known)."""
    try:
        return item.is_symlink()
    except OSError:
        return False


class FolderSource(TileSource):
    """Every image file under a folder, in sorted relative-POSIX-path order.

    Files whose extension is not an image extension (see
    :data:`mosaicist.imaging.IMAGE_EXTENSIONS`) and hidden files and folders
    (names starting with ``.``) are ignored; so are HEIC, HEIF and AVIF files
    where the plugin that reads them is missing, with one warning per scan
    naming it (:func:`mosaicist.imaging.missing_reader`). Symbolic links to files are
    followed; links to folders are not (they could loop, or list photos twice),
    with one warning per scan naming them. A subfolder that
    cannot be read (no permission, a mount that is gone) is a bad entry,
    ``sub/``, reported and skipped like a bad file; one removed while
    scanning is left out; only the folder itself being unreadable is an
    error (:exc:`~mosaicist.errors.SourceError`, from :meth:`scan`). Each tile's
    ``source_id`` is its relative path as text (:func:`~mosaicist.sources.base.name_to_text`:
    bytes of names that are not UTF-8 are written ``\\xHH``).

    Parameters
    ----------
    root : path-like
        The folder.
    show_progress : bool
        Unused here (the index draws the decoding progress); kept for a
        uniform constructor.
    workers : int, optional
        Decoding processes; defaults to the number of usable cores.
    """

    def __init__(
        self, root: str | os.PathLike[str], show_progress: bool = False, workers: int | None = None
    ) -> None:
        self.root = absolute_path(root)  # one key (one index) for every spelling
        if not self.root.is_dir():
            raise SourceError(f"{self.root}: not a folder")
        # The index stores the key as text. Escaped only where the name is not
        # UTF-8, so that the keys (and indexes) of all other folders stay as they were.
        self.name = readable(str(self.root))
        if self.name != str(self.root):
            self.name = name_to_text(str(self.root))
        self.key = f"folder:{self.name}"
        self.workers = workers or worker_count()
        self.show_progress = show_progress
        # Files the last scan left out by their extension, by extension (left_out_note).
        self._other_files: dict[str, int] = {}

    def scan(self) -> list[SourceEntry]:
        """List image files recursively, sorted by relative POSIX path."""
        entries: list[SourceEntry] = []
        # Extensions whose format needs a plugin: why it cannot be read (None: it can), and
        # how many such files were left out. Asked once per extension and scan.
        unreadable: dict[str, str | None] = {}
        left_out: dict[str, int] = {}
        # Files left out by their extension, by extension: said if the library is empty.
        others: dict[str, int] = {}
        # Links to folders, by relative path: left out, and said.
        linked_folders: list[str] = []
        # Photo names that are no regular files (a FIFO, a device): never read, and said.
        special_files: list[str] = []
        pending = [("", str(self.root))]
        while pending:
            prefix, directory = pending.pop()
            try:
                # The listing itself may fail part way (a folder that may be opened but
                # not read, such as /proc/1/map_files; a share that drops): caught here
                # too, with what it listed before kept.
                with os.scandir(directory) as iterator:
                    for item in iterator:
                        self._take(item, prefix, entries, pending, unreadable, left_out,
                                   others, linked_folders, special_files)
            except OSError as error:
                if not prefix:
                    # Nothing of the library can be listed: an empty scan would publish
                    # an empty library over the one indexed.
                    raise SourceError(f"{self.name}: cannot read the folder: "
                                      f"{readable(error.strerror or str(error))}") from None
                if error.errno in (errno.ENOENT, errno.ENOTDIR):
                    # Removed (or replaced by a file) between its listing and its own:
                    # gone like a file removed while scanning, and the next scan agrees.
                    continue
                # A bad entry like a bad file (reported and skipped, never fatal), with a
                # stamp no file has: remembered as failed while the scan stays the same,
                # so a re-run does not try it again; once it can be read its photos
                # change the scan and are indexed. The trailing separator of its
                # locator tells the decoder it is a folder (see _folder_outcome).
                entries.append(SourceEntry(prefix, 0, MISSING_STAMP, directory + os.sep))
        for why, count in left_out.items():
            warn_of_scan(f"mosaicist: warning: {name_to_text(str(self.root))}: "
                         f"{counted(count, 'file')} left out: {why}")
        if linked_folders:
            linked_folders.sort()
            shown = ", ".join(linked_folders[:3]) + (", ..." if len(linked_folders) > 3 else "")
            links = counted(len(linked_folders), "link to a folder", "links to folders")
            warn_of_scan(f"mosaicist: warning: {name_to_text(str(self.root))}: {links} "
                         f"left out (links to folders are not followed): {shown}")
        if special_files:
            special_files.sort()
            shown = ", ".join(special_files[:3]) + (", ..." if len(special_files) > 3 else "")
            warn_of_scan(f"mosaicist: warning: {name_to_text(str(self.root))}: "
                         f"{counted(len(special_files), 'file')} left out (not regular "
                         f"files: a pipe, a device or a socket is never read): {shown}")
        self._other_files = others
        entries.sort(key=lambda entry: entry.source_id)
        return entries

    def left_out_note(self) -> str | None:
        """How many files the last scan left out as no pictures by their extension, and which.

        Returns
        -------
        str or None
            ``"6 files left out by their extension: 3 .cr2, 3 .txt; tiles are
            read from ..."``; None when the scan left out none.
        """
        others = getattr(self, "_other_files", None)
        if not others:
            return None
        kinds = sorted(others.items(), key=lambda kind: (-kind[1], kind[0]))
        # (No extension ends in a space, which a reader could not see: see _extension.)
        shown = ", ".join(f"{count:,} {extension or 'without one'}"
                          for extension, count in kinds[:3])
        if len(kinds) > 3:
            shown += ", ..."
        return (f"{counted(sum(others.values()), 'file')} left out by their extension: "
                f"{name_to_text(shown)}; tiles are read from {_PICTURE_FILES} files")

    @staticmethod
    def _take(
        item: os.DirEntry[str], prefix: str, entries: list[SourceEntry],
        pending: list[tuple[str, str]], unreadable: dict[str, str | None],
        left_out: dict[str, int], others: dict[str, int] | None = None,
        linked_folders: list[str] | None = None, special_files: list[str] | None = None,
    ) -> None:
        """Add one folder entry of :meth:`scan`: a photo to ``entries``, a folder to ``pending``.

        Errors about the entry itself are handled here, so that an
        :class:`OSError` that reaches :meth:`scan` is the listing's own.
        """
        name = item.name
        if name.startswith("."):
            return
        extension = _extension(name)
        image_name = extension in IMAGE_EXTENSIONS
        if image_name and extension not in unreadable:
            unreadable[extension] = missing_reader(extension)
        try:
            if item.is_dir(follow_symlinks=False):
                pending.append((prefix + name_to_text(name) + "/", item.path))
                return
            if linked_folders is not None and _is_link(item) and item.is_dir():
                # Never followed (a loop, or the same photos twice under two names),
                # and said: a linked folder of photos left out without a word looked
                # like a library that had lost them.
                linked_folders.append(prefix + name_to_text(name))
                return
            if not image_name:
                if others is not None:
                    # Links to folders too: they are left out as well (never followed).
                    others[extension] = others.get(extension, 0) + 1
                return
            why = unreadable[extension]
            if why is not None:
                # Left out, not failed: a failure is remembered until the
                # file changes, and the file is fine once the plugin is there.
                left_out[why] = left_out.get(why, 0) + 1
                return
            status = item.stat()
        except OSError as error:
            if image_name and (error.errno != errno.ENOENT or _is_link(item)):
                # A link to a photo that is not there (a drive not mounted), or
                # a photo whose status this user may not read (a folder it may
                # list but not search): a bad file, reported (its read fails)
                # and skipped, with a stamp no file has, so that it is read as
                # soon as it can be. Such files were left out without a word.
                entries.append(SourceEntry(prefix + name_to_text(name), 0,
                                           MISSING_STAMP, item.path))
            # Else a file removed while scanning.
            return
        if not stat.S_ISREG(status.st_mode):
            # A FIFO, a device, a socket, or a link to one: reading it could wait forever
            # or never end (/dev/zero), so it is left out, and said (a pipe named
            # photo.jpg was left out without a word).
            if special_files is not None:
                special_files.append(prefix + name_to_text(name))
            return
        entries.append(
            SourceEntry(prefix + name_to_text(name), status.st_size,
                        change_stamp(status), item.path)
        )

    #: Its pictures are files that may embed ICC profiles: :meth:`decode` takes
    #: ``colour_profiles``.
    reads_profiles = True

    def decode(
        self, entries: Sequence[SourceEntry], width_px: int, aspect: tuple[int, int] = SQUARE,
        crop: str = "centre", *, colour_profiles: str = "ignore",
    ) -> Iterator[DecodedTile]:
        """Decode files in parallel worker processes, yielding in order.

        ``colour_profiles`` (``ignore`` or ``convert``) says whether the files'
        embedded ICC profiles are applied (:mod:`mosaicist._profiles`).
        """
        paths = [str(entry.locator) for entry in entries]
        # Small enough batches that every worker gets several (large photos are
        # slow each), large enough to amortise the round trip for small ones.
        size = max(1, min(DECODE_BATCH, len(paths) // (self.workers * 8)))
        batches = [paths[start:start + size] for start in range(0, len(paths), size)]
        shape = (height_for(width_px, aspect), width_px, 3)
        position = 0
        results_iter: Iterator[list[_Decoded]]
        if self.workers <= 1 or len(paths) <= 16:
            results_iter = (_decode_batch(batch, width_px, aspect, crop, colour_profiles)
                            for batch in batches)
        else:
            results_iter = _decode_pooled(batches, self.workers, width_px, aspect, crop,
                                          colour_profiles)
        try:
            for results in results_iter:
                for raw, digest, error, window, signature, transient in results:
                    entry = entries[position]
                    position += 1
                    if (transient and entry.mtime_ns == MISSING_STAMP
                            and not str(entry.locator).endswith(os.sep)):
                        # A file the scan could not find or read the status of (a link
                        # to nothing): its stamp changes as soon as its status can be
                        # read, which reading it needs too, so its failure is kept
                        # while the scan stays the same, not tried again every run.
                        transient = False
                    pixels = None if raw is None else np.frombuffer(raw, np.uint8).reshape(shape)
                    yield DecodedTile(entry, pixels, digest, error, window, signature, transient)
        finally:
            # No worker outlives the decode, however it ends (see _watch_parent
            # for when the parent itself is killed).
            close = getattr(results_iter, "close", None)
            if close is not None:
                close()

    def open_original(self, entry: SourceEntry) -> Image.Image:
        """Open the original file (EXIF orientation applied, converted to RGB)."""
        image = open_image(self.path_of(entry.source_id))
        return to_rgb(ImageOps.exif_transpose(image))

    def local_path(self, entry: SourceEntry) -> str | None:
        """Return the absolute path of the tile's file."""
        return str(self.path_of(entry.source_id))

    def path_of(self, source_id: str) -> Path:
        """Return the file that ``source_id`` names under the folder.

        Parameters
        ----------
        source_id : str
            A tile id of this source (a relative path as text, see
            :func:`~mosaicist.sources.base.text_to_name`).

        Returns
        -------
        pathlib.Path
            The file's absolute path.

        Raises
        ------
        SourceError
            When the id is not a relative path inside the folder (``../``,
            an absolute path, a NUL byte): ids come from files that may
            have been edited.
        """
        # Checked after unescaping, since "\\x2e\\x2e" is ".." too.
        parts = text_to_name(source_id).split("/")
        separators = [sep for sep in (os.sep, os.altsep) if sep is not None and sep != "/"]
        if any(
            part in ("", ".", "..") or "\0" in part or Path(part).anchor
            or any(separator in part for separator in separators)
            for part in parts
        ):
            raise SourceError(f"{readable(source_id)!r}: not a file of {self.name}")
        return self.root.joinpath(*parts)

    def local_root(self) -> Path | None:
        """Return the folder, symbolic links resolved."""
        return self.root.resolve()
