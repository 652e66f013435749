"""A folder of image files, scanned recursively."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import stat
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .._runtime import end_with_parent, stop_process_pool, worker_count
from ..aspect import SQUARE, height_for
from ..crop import Window
from ..errors import SourceError, printable
from ..imaging import IMAGE_EXTENSIONS, ImageReadError, read_tile_file, settle_colour_key, to_rgb
from .base import (
    DecodedTile,
    SourceEntry,
    TileSource,
    absolute_path,
    change_stamp,
    name_to_text,
    readable,
    text_to_name,
)

#: Change stamp of a link whose file is missing (no file's: see :func:`change_stamp`).
MISSING_STAMP = -1
#: Files handed to a worker process at a time: large enough to amortise the
#: inter-process round trip, small enough to keep progress smooth.
DECODE_BATCH = 128
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
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    end_with_parent(parent_pid)


#: What a worker returns per file: pixels, content hash, error, crop window, signature.
_Decoded = tuple[bytes | None, str | None, str | None, Window | None, tuple[int, int] | None]


def _decode_batch(
    paths: list[str], width_px: int, aspect: tuple[int, int], crop: str
) -> list[_Decoded]:
    results: list[_Decoded] = []
    for path in paths:
        try:
            tile, digest = read_tile_file(path, width_px, aspect, crop)
            results.append((tile.pixels.tobytes(), digest, None, tile.window, tile.signature))
        except ImageReadError as error:
            results.append((None, None, readable(str(error)), None, None))
        except OSError as error:
            reason = error.strerror or str(error)
            if os.path.islink(path) and not os.path.exists(path):
                with contextlib.suppress(OSError):  # the link itself may go meanwhile
                    reason = f"a link to {os.readlink(path)}, which is not there"
            results.append((None, None, readable(reason), None, None))
        except Exception as error:  # noqa: BLE001 - one bad file must never stop indexing
            message = readable(f"cannot decode: {type(error).__name__}: {error}")
            results.append((None, None, message, None, None))
    return results


class FolderSource(TileSource):
    """Every image file under a folder, in sorted relative-POSIX-path order.

    Files whose extension is not an image extension (see
    :data:`mosaicist.imaging.IMAGE_EXTENSIONS`) and hidden files and folders
    (names starting with ``.``) are ignored. Symbolic links to files are
    followed; links to folders are not (they could loop). Each tile's
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

    def scan(self) -> list[SourceEntry]:
        """List image files recursively, sorted by relative POSIX path."""
        entries: list[SourceEntry] = []
        pending = [("", str(self.root))]
        while pending:
            prefix, directory = pending.pop()
            try:
                iterator = os.scandir(directory)
            except OSError as error:
                print(printable(f"mosaicist: warning: {name_to_text(directory)}: {error.strerror}"),
                      file=sys.stderr)
                continue
            with iterator:
                for item in iterator:
                    name = item.name
                    if name.startswith("."):
                        continue
                    try:
                        if item.is_dir(follow_symlinks=False):
                            pending.append((prefix + name_to_text(name) + "/", item.path))
                            continue
                        dot = name.rfind(".")
                        if dot <= 0 or name[dot:].lower() not in IMAGE_EXTENSIONS:
                            continue
                        status = item.stat()
                    except OSError:
                        if item.is_symlink():
                            # A link to a photo that is not there (a drive not mounted): a
                            # bad file, reported and skipped, with a stamp no file has, so
                            # that it is read as soon as its photo is back.
                            entries.append(SourceEntry(prefix + name_to_text(name), 0,
                                                       MISSING_STAMP, item.path))
                        # Else a file removed while scanning.
                        continue
                    if not stat.S_ISREG(status.st_mode):
                        # A link to a folder (never followed), a FIFO, a device...
                        continue
                    entries.append(
                        SourceEntry(prefix + name_to_text(name), status.st_size,
                                    change_stamp(status), item.path)
                    )
        entries.sort(key=lambda entry: entry.source_id)
        return entries

    def decode(
        self, entries: Sequence[SourceEntry], width_px: int, aspect: tuple[int, int] = SQUARE,
        crop: str = "centre",
    ) -> Iterator[DecodedTile]:
        """Decode files in parallel worker processes, yielding in order."""
        paths = [str(entry.locator) for entry in entries]
        # Small enough batches that every worker gets several (large photos are
        # slow each), large enough to amortise the round trip for small ones.
        size = max(1, min(DECODE_BATCH, len(paths) // (self.workers * 8)))
        batches = [paths[start:start + size] for start in range(0, len(paths), size)]
        shape = (height_for(width_px, aspect), width_px, 3)
        position = 0
        if self.workers <= 1 or len(paths) <= 16:
            results_iter: Iterator[list] = (_decode_batch(batch, width_px, aspect, crop)
                                            for batch in batches)
            executor = None
        else:
            context = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
            executor = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=context,
                initializer=_watch_parent, initargs=(os.getpid(),),
            )
            count = len(batches)
            results_iter = executor.map(_decode_batch, batches, [width_px] * count,
                                        [aspect] * count, [crop] * count)
        finished = False
        try:
            for results in results_iter:
                for raw, digest, error, window, signature in results:
                    entry = entries[position]
                    position += 1
                    pixels = None if raw is None else np.frombuffer(raw, np.uint8).reshape(shape)
                    yield DecodedTile(entry, pixels, digest, error, window, signature)
            finished = True
        finally:
            # No worker outlives the decode, however it ends (see _watch_parent
            # for when the parent itself is killed).
            if executor is not None:
                if finished:
                    executor.shutdown(wait=True)
                else:
                    stop_process_pool(executor)

    def open_original(self, entry: SourceEntry) -> Image.Image:
        """Open the original file (EXIF orientation applied, converted to RGB)."""
        image = Image.open(self.path_of(entry.source_id))
        settle_colour_key(image)
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
