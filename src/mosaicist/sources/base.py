"""The interface every tile source implements."""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image


class SourceEntry(NamedTuple):
    """One candidate tile as a source lists it, before decoding.

    A named tuple, because a scan makes one per file (millions, in big
    libraries) and tuples are the cheapest records to create.

    Attributes
    ----------
    source_id : str
        Stable, unique name of the tile in its source: a folder's relative
        POSIX path (``cats/0001.jpg``) or a dataset's ``cifar10/train/12345``.
    size : int
        Size in bytes of the file that holds the tile (for datasets, the
        container file); with ``mtime_ns`` it tells the index whether the tile
        may have changed since it was indexed.
    mtime_ns : int
        Modification time of that file, in nanoseconds.
    locator : Any
        Whatever the source needs to find the tile again (a path, an index).
    """

    source_id: str
    size: int
    mtime_ns: int
    locator: Any = None


@dataclass
class DecodedTile:
    """The outcome of decoding one entry: pixels and hash, or an error."""

    entry: SourceEntry
    pixels: np.ndarray | None
    content_hash: str | None
    error: str | None = None


class TileSource(abc.ABC):
    """A collection of tile images in a defined order.

    Attributes
    ----------
    key : str
        Stable identity of the source, used to name its index in the cache
        (e.g. ``folder:/abs/path`` or ``cifar10``).
    name : str
        Human-readable name for messages.
    """

    key: str
    name: str

    @abc.abstractmethod
    def scan(self) -> list[SourceEntry]:
        """List the source's entries in library order (may download first)."""

    @abc.abstractmethod
    def decode(self, entries: Sequence[SourceEntry], side_px: int) -> Iterator[DecodedTile]:
        """Decode ``entries`` into ``side_px`` square thumbnails, yielding in order.

        A bad entry yields a :class:`DecodedTile` whose ``error`` says why;
        it never raises for one bad entry.
        """

    @abc.abstractmethod
    def open_original(self, entry: SourceEntry) -> Image.Image:
        """Open the tile's original image at full resolution (for re-rendering)."""

    def local_path(self, entry: SourceEntry) -> str | None:
        """Return the original file's path when the tile is a local file, else None."""
        return None

    def local_root(self) -> Path | None:
        """Return the folder that source ids are relative paths in, when the tiles are local files.

        A Deep Zoom viewer links each cell to its original under this folder.
        None (the default) for datasets and image arrays.
        """
        return None
