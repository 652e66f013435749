"""Where a render gets each cell's tile picture: the index, or the original files.

A :class:`TilePictures` returns the pictures of given cells at the output
size, untransformed and untinted (the renderer applies those). When the
output size is the size tiles were indexed at, :class:`IndexPictures` reads
the index's memory map; otherwise :class:`OriginalPictures` decodes each
original once, cuts its crop window (the one the index stored, so a print
shows what was matched; see :mod:`mosaicist.crop`) and resizes it with
Lanczos, keeping a bounded cache. An original file is checked against the tile pixel limit from
its header and decoded no larger than needed where the format allows (JPEG
DCT scaling), and the threads decoding originals share a budget of pixels,
so tiny files that declare huge pictures cannot exhaust memory.
"""

from __future__ import annotations

import abc
import contextlib
import io
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .._profiles import usual_colour_profiles
from .._runtime import release_pages, worker_count
from ..aspect import SQUARE, height_for
from ..crop import Window
from ..errors import MosaicistError
from ..imaging import (
    ImageReadError,
    _draft_for,
    _open_checked,
    decode_tile,
    make_tile,
    read_original,
    read_tile_bytes,
    register_readers_for,
    thumbnail,
)
from ..sources import SourceEntry, TileSource
from ..sources.base import readable


class TilePictures(abc.ABC):
    """Where a render gets each cell's tile picture, at the output size.

    ``fetch(cells)`` returns the pictures of the given cells (indices into
    the placements, row-major), untransformed and untinted; ``tile_px`` is
    their width and ``tile_height`` their height.
    """

    tile_px: int
    tile_height: int

    @abc.abstractmethod
    def fetch(self, cells: np.ndarray) -> np.ndarray:
        """Return ``(len(cells), tile_height, tile_px, 3)`` uint8 pictures.

        Parameters
        ----------
        cells : numpy.ndarray
            Int64 indices of cells in the placements (row-major), in the
            order their pictures are wanted.

        Returns
        -------
        numpy.ndarray
            Each cell's tile picture, untransformed and untinted.
        """


#: Cells drawn from the index between releases of its mapped pages. The kernel maps the
#: pages around each one touched (64 KB), so that 32,400 distinct tiles of a
#: million-tile library had added 1.3 GB to a 3840 x 2160 mosaic's resident memory.
RELEASE_AFTER = 4096


class IndexPictures(TilePictures):
    """Tiles straight from the index's packed thumbnails (output size = index size).

    Parameters
    ----------
    tiles : numpy.ndarray
        ``(M, H, W, 3)`` uint8 library tiles (usually a memory map).
    positions : numpy.ndarray
        Library position of each cell's tile.

    Raises
    ------
    MosaicistError
        When a position is not one of the library's (a negative one would
        draw a tile counted from the end).
    """

    def __init__(self, tiles: np.ndarray, positions: np.ndarray) -> None:
        self.tiles = tiles
        self.positions = np.asarray(positions, np.int64).ravel()
        if len(self.positions) and (self.positions.min() < 0
                                    or self.positions.max() >= len(tiles)):
            raise MosaicistError(
                f"tile positions {int(self.positions.min())} to {int(self.positions.max())} "
                f"do not all lie in a library of {len(tiles)} tiles")
        # (M, height, width, 3): tile_px is the width, as everywhere.
        self.tile_height, self.tile_px = int(tiles.shape[1]), int(tiles.shape[2])
        self._fetched = 0

    def fetch(self, cells: np.ndarray) -> np.ndarray:
        out = np.asarray(self.tiles[self.positions[cells]])
        self._fetched += len(cells)
        if self._fetched > RELEASE_AFTER:
            # Mapped pages of tiles already drawn would otherwise count as ours.
            release_pages(self.tiles)
            self._fetched = 0
        return out


#: Bytes of decoded tile pictures kept for reuse while rendering from originals.
ORIGINALS_CACHE_BYTES = 256 << 20
#: Pixels the threads decoding originals may hold decoded at once (a few bytes
#: each); an original larger than this is decoded alone.
DECODE_BUDGET_PIXELS = 64_000_000


class PixelBudget:
    """Pixels that threads may hold decoded at once; each waits until its share is free.

    Parameters
    ----------
    pixels : int
        The budget. A request above it is granted the whole budget, so a
        large image is decoded alone rather than refused.
    """

    def __init__(self, pixels: int) -> None:
        self.pixels = pixels
        self._free = pixels
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Hold ``pixels`` of the budget (at most all of it) while in the block."""
        share = max(0, min(pixels, self.pixels))
        with self._changed:
            self._changed.wait_for(lambda: self._free >= share)
            self._free -= share
        try:
            yield
        finally:
            with self._changed:
                self._free += share
                self._changed.notify_all()


class OriginalPictures(TilePictures):
    """Tiles made from the library's original images, at any output size.

    Each distinct tile is decoded once while it is in a bounded cache
    (least recently used out first), so a tile repeated across nearby rows
    is not decoded again, and memory stays under ``cache_bytes`` whatever
    the number of distinct tiles. Misses of a row are decoded on threads
    (Pillow releases the GIL while decoding and resizing).

    Parameters
    ----------
    source : TileSource
        The library's source, which opens originals.
    source_ids : list of str
        Source id of each cell's tile.
    tile_px : int
        Output width of each tile (Lanczos; see :func:`mosaicist.imaging.thumbnail`).
    cache_bytes : int
        Most bytes of decoded pictures kept.
    workers : int, optional
        Decoding threads (default: the usable cores).
    decode_pixels : int
        Most pixels the decoding threads hold decoded at once.
    aspect : (int, int)
        The tiles' aspect; their height is ``height_for(tile_px, aspect)``.
    windows : mapping of str to Window, optional
        Each tile's crop window in its original's pixels, as the index stored
        it (:meth:`mosaicist.library.TileLibrary.windows_for`).
    crop : {"centre", "subject"}
        How to place the window of a tile that ``windows`` does not have
        (chosen again on the original: the same as the index's, up to the
        scale it was looked for at).
    as_indexed : bool
        Decode each local file as the index did (:func:`mosaicist.imaging.decode_tile`):
        a render at the size tiles were matched at draws what was matched.
    colour_profiles : {"ignore", "convert"}, optional
        Whether the originals' embedded ICC profiles are applied, as the
        index's tiles were decoded (:attr:`mosaicist.library.TileLibrary.colour_profiles`);
        default: as the presets that use ``crop`` do (``ignore`` for
        ``centre``, ``convert`` for ``subject``), as the library's default is.
    """

    def __init__(
        self,
        source: TileSource,
        source_ids: list[str],
        tile_px: int,
        cache_bytes: int = ORIGINALS_CACHE_BYTES,
        workers: int | None = None,
        decode_pixels: int = DECODE_BUDGET_PIXELS,
        *,
        aspect: tuple[int, int] = SQUARE,
        windows: Mapping[str, Window] | None = None,
        crop: str = "centre",
        as_indexed: bool = False,
        colour_profiles: str | None = None,
    ) -> None:
        self.source = source
        self.source_ids = source_ids
        self.tile_px = tile_px
        self.aspect = aspect
        self.tile_height = height_for(tile_px, aspect)
        self.windows = windows or {}
        self.crop = crop
        self.as_indexed = as_indexed
        self.colour_profiles = (usual_colour_profiles(crop) if colour_profiles is None
                                else colour_profiles)
        self.capacity = max(1, cache_bytes // (tile_px * self.tile_height * 3))
        self.cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.workers = workers or worker_count()
        self.decoded = 0
        self.budget = PixelBudget(decode_pixels)
        # Before fetch's threads open them: see register_readers_for.
        register_readers_for(source_ids)

    def _decode(self, source_id: str) -> np.ndarray:
        entry = SourceEntry(source_id, 0, 0, None)
        window = self.windows.get(source_id)
        path: str | None = None
        try:
            path = self.source.local_path(entry)
            if path is not None and self.as_indexed:
                return self._decode_as_indexed(path)
            if path is not None:
                # Our own reader, not open_original's full-size picture: it checks
                # the header and decodes only as large as the tile needs.
                return read_original(path, self.tile_px, aspect=self.aspect, window=window,
                                     crop=self.crop, slot=self.budget.hold,
                                     colour_profiles=self.colour_profiles)
            # A picture of a dataset or an array: no profile to apply.
            original = self.source.open_original(entry)
            if window is not None:
                return thumbnail(original, self.tile_px, self.aspect, window)
            return make_tile(original, self.tile_px, self.aspect, self.crop).pixels
        except (ImageReadError, OSError, ValueError, SyntaxError) as error:
            # The file itself where there is one: a library's ids are relative to its folder.
            where = readable(os.fspath(path)) if path is not None else source_id
            raise MosaicistError(f"{where}: cannot open the tile's original: {error}") \
                from None

    def _decode_as_indexed(self, path: str | os.PathLike[str]) -> np.ndarray:
        """The tile of a local file as the index made it (see ``as_indexed``)."""
        data = read_tile_bytes(path)
        try:
            # The size decoded, for the threads' shared budget: a JPEG's at the DCT
            # scale decode_tile asks for too (the header's whole size let two 24 MP
            # photos at a time through, on any number of cores). decode_tile checks
            # the header against the tile limit, and names a file that is no image.
            # (Read with Pillow's own limit lifted: a large photo is not warned about.)
            with _open_checked(io.BytesIO(data), None) as image:
                _draft_for(image, self.tile_px, self.aspect, None)
                pixels = image.width * image.height
        except Exception:  # noqa: BLE001 - decode_tile says what is wrong with the file
            pixels = 0
        with self.budget.hold(pixels):
            # Not signed: a signature may need a second decode of a large photo.
            return decode_tile(data, self.tile_px, self.aspect, self.crop,
                               colour_profiles=self.colour_profiles, sign=False).pixels

    def fetch(self, cells: np.ndarray) -> np.ndarray:
        wanted = [self.source_ids[cell] for cell in np.asarray(cells).tolist()]
        missing = [key for key in dict.fromkeys(wanted) if key not in self.cache]
        if missing:
            if self.workers > 1 and len(missing) > 1:
                with ThreadPoolExecutor(min(self.workers, len(missing))) as pool:
                    pictures = list(pool.map(self._decode, missing))
            else:
                pictures = [self._decode(key) for key in missing]
            self.decoded += len(missing)
            for key, picture in zip(missing, pictures, strict=True):
                self.cache[key] = picture
        out = np.empty((len(wanted), self.tile_height, self.tile_px, 3), np.uint8)
        for index, key in enumerate(wanted):
            out[index] = self.cache[key]
            self.cache.move_to_end(key)
        while len(self.cache) > self.capacity:
            self.cache.popitem(last=False)
        return out


