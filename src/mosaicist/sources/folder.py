"""A folder of image files, scanned recursively."""

from __future__ import annotations

import multiprocessing
import os
import stat
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .._runtime import worker_count
from ..errors import SourceError
from ..imaging import IMAGE_EXTENSIONS, ImageReadError, read_tile_file, to_rgb
from .base import DecodedTile, SourceEntry, TileSource

#: Files handed to a worker process at a time: large enough to amortise the
#: inter-process round trip, small enough to keep progress smooth.
DECODE_BATCH = 128


def _decode_batch(
    paths: list[str], side_px: int
) -> list[tuple[bytes | None, str | None, str | None]]:
    results: list[tuple[bytes | None, str | None, str | None]] = []
    for path in paths:
        try:
            pixels, digest = read_tile_file(path, side_px)
            results.append((pixels.tobytes(), digest, None))
        except ImageReadError as error:
            results.append((None, None, str(error)))
        except OSError as error:
            results.append((None, None, error.strerror or str(error)))
        except Exception as error:  # noqa: BLE001 - one bad file must never stop indexing
            results.append((None, None, f"cannot decode: {type(error).__name__}: {error}"))
    return results


class FolderSource(TileSource):
    """Every image file under a folder, in sorted relative-POSIX-path order.

    Files whose extension is not an image extension (see
    :data:`mosaicist.imaging.IMAGE_EXTENSIONS`) and hidden files and folders
    (names starting with ``.``) are ignored. Symbolic links to files are
    followed; links to folders are not (they could loop).

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
        self.root = Path(root).expanduser().absolute()
        if not self.root.is_dir():
            raise SourceError(f"{self.root}: not a folder")
        self.key = f"folder:{self.root}"
        self.name = str(self.root)
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
                print(f"mosaicist: warning: {directory}: {error.strerror}", file=sys.stderr)
                continue
            with iterator:
                for item in iterator:
                    name = item.name
                    if name.startswith("."):
                        continue
                    try:
                        if item.is_dir(follow_symlinks=False):
                            pending.append((prefix + name + "/", item.path))
                            continue
                        dot = name.rfind(".")
                        if dot <= 0 or name[dot:].lower() not in IMAGE_EXTENSIONS:
                            continue
                        status = item.stat()
                    except OSError:
                        # A dangling link or a file removed while scanning.
                        continue
                    if not stat.S_ISREG(status.st_mode):
                        # A link to a folder (never followed), a FIFO, a device...
                        continue
                    entries.append(
                        SourceEntry(prefix + name, status.st_size, status.st_mtime_ns, item.path)
                    )
        entries.sort(key=lambda entry: entry.source_id)
        return entries

    def decode(self, entries: Sequence[SourceEntry], side_px: int) -> Iterator[DecodedTile]:
        """Decode files in parallel worker processes, yielding in order."""
        paths = [str(entry.locator) for entry in entries]
        # Small enough batches that every worker gets several (large photos are
        # slow each), large enough to amortise the round trip for small ones.
        size = max(1, min(DECODE_BATCH, len(paths) // (self.workers * 8)))
        batches = [paths[start:start + size] for start in range(0, len(paths), size)]
        shape = (side_px, side_px, 3)
        position = 0
        if self.workers <= 1 or len(paths) <= 16:
            results_iter: Iterator[list] = (_decode_batch(batch, side_px) for batch in batches)
            executor = None
        else:
            context = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
            executor = ProcessPoolExecutor(max_workers=self.workers, mp_context=context)
            results_iter = executor.map(_decode_batch, batches, [side_px] * len(batches))
        try:
            for results in results_iter:
                for raw, digest, error in results:
                    entry = entries[position]
                    position += 1
                    pixels = None if raw is None else np.frombuffer(raw, np.uint8).reshape(shape)
                    yield DecodedTile(entry, pixels, digest, error)
        finally:
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)

    def open_original(self, entry: SourceEntry) -> Image.Image:
        """Open the original file (EXIF orientation applied, converted to RGB)."""
        image = Image.open(self.root / entry.source_id)
        return to_rgb(ImageOps.exif_transpose(image))

    def local_path(self, entry: SourceEntry) -> str | None:
        """Return the absolute path of the tile's file."""
        return str(self.root / entry.source_id)

    def local_root(self) -> Path | None:
        """Return the folder, symbolic links resolved."""
        return self.root.resolve()
