"""Assembling the mosaic image from placements, and writing images."""

from __future__ import annotations

import abc
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import paths
from .augment import apply_transform
from .colour import from_space, to_space
from .errors import MosaicistError
from .grid import check_sizes
from .imaging import read_target, square_thumbnail
from .library import release_pages
from .placements import Placements
from .sources import SourceEntry, open_source
from .writers import (  # noqa: F401  (output_format and the table are part of this API)
    OUTPUT_FORMATS,
    check_output_size,
    output_format,
    write_image,
)


def check_writable(path: str | os.PathLike[str], what: str = "output") -> None:
    """Raise :class:`MosaicistError` unless a file can be created at ``path``."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise MosaicistError(f"{path}: {what} is a directory")
    if not parent.is_dir():
        raise MosaicistError(f"{path}: {what} folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise MosaicistError(f"{path}: {what} is not writable (permission denied)")


def check_output(
    path: str | os.PathLike[str], width: int, height: int, deep_zoom: dict | None = None
) -> None:
    """Check, before any work, that ``path`` can take a ``width x height`` picture.

    A ``.dzi`` pyramid has no size limit but checks its settings; image
    formats check their side limits. The folder must be writable.

    Raises
    ------
    MosaicistError
        With a one-line message naming ``path``.
    """
    path = Path(path)
    check_writable(path)
    if path.suffix.lower() == ".dzi":
        from .deepzoom import check_layout

        settings = deep_zoom or {}
        check_layout(settings.get("tile_size", 254), settings.get("overlap", 1),
                     settings.get("format", "jpeg"))
        return
    check_output_size(path, width, height)


def source_root(source: object) -> str | None:
    """Return the folder of a tile source's original files, or None when not local."""
    from .sources.folder import FolderSource

    if isinstance(source, FolderSource):
        return str(Path(source.root).resolve())
    return None


def dress_tiles(
    tiles: np.ndarray,
    transforms: np.ndarray | None = None,
    tint: np.ndarray | None = None,
    metric: str = "seed",
) -> np.ndarray:
    """Apply each tile's transform and tint shift.

    Parameters
    ----------
    tiles : numpy.ndarray
        ``(k, T, T, 3)`` uint8 sRGB tiles.
    transforms : numpy.ndarray, optional
        ``(k,)`` transform codes.
    tint : numpy.ndarray, optional
        ``(k, 3)`` shifts in the metric's colour space (see
        :class:`mosaicist.placements.Placements`).
    metric : str
        Colour space of the shifts.
    """
    out = np.asarray(tiles)
    if transforms is not None and np.any(transforms):
        out = out.copy()
        for code in np.unique(transforms).tolist():
            if code:
                chosen = transforms == code
                out[chosen] = apply_transform(out[chosen], code)
    if tint is not None and np.any(tint):
        values = to_space(out, metric) + tint[:, None, None, :]
        out = from_space(values, metric)
    return out


class TilePictures(abc.ABC):
    """Where a render gets each cell's tile picture, at the output size.

    ``fetch(cells)`` returns the pictures of the given cells (indices into
    the placements, row-major), untransformed and untinted.
    """

    tile_px: int

    @abc.abstractmethod
    def fetch(self, cells: np.ndarray) -> np.ndarray:
        """Return ``(len(cells), tile_px, tile_px, 3)`` uint8 pictures."""


class IndexPictures(TilePictures):
    """Tiles straight from the index's packed thumbnails (output size = index size).

    Parameters
    ----------
    tiles : numpy.ndarray
        ``(M, T, T, 3)`` uint8 library tiles (usually a memory map).
    positions : numpy.ndarray
        Library position of each cell's tile.
    """

    def __init__(self, tiles: np.ndarray, positions: np.ndarray) -> None:
        self.tiles = tiles
        self.positions = np.asarray(positions, np.int64).ravel()
        self.tile_px = int(tiles.shape[1])
        self._fetched = 0

    def fetch(self, cells: np.ndarray) -> np.ndarray:
        out = np.asarray(self.tiles[self.positions[cells]])
        self._fetched += len(cells)
        if self._fetched > 65536:
            # Mapped pages of tiles already drawn would otherwise count as ours.
            release_pages(self.tiles)
            self._fetched = 0
        return out


#: Bytes of decoded tile pictures kept for reuse while rendering from originals.
ORIGINALS_CACHE_BYTES = 256 << 20


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
        Output side of each tile (centre square, Lanczos; see
        :func:`mosaicist.imaging.square_thumbnail`).
    cache_bytes : int
        Most bytes of decoded pictures kept.
    workers : int, optional
        Decoding threads (default: the usable cores).
    """

    def __init__(
        self,
        source,
        source_ids: list[str],
        tile_px: int,
        cache_bytes: int = ORIGINALS_CACHE_BYTES,
        workers: int | None = None,
    ) -> None:
        from .match import search_workers

        self.source = source
        self.source_ids = source_ids
        self.tile_px = tile_px
        self.capacity = max(1, cache_bytes // (tile_px * tile_px * 3))
        self.cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.workers = workers or search_workers()
        self.decoded = 0

    def _decode(self, source_id: str) -> np.ndarray:
        try:
            original = self.source.open_original(SourceEntry(source_id, 0, 0, None))
            return square_thumbnail(original, self.tile_px)
        except (OSError, ValueError, SyntaxError) as error:
            raise MosaicistError(f"{source_id}: cannot open the tile's original: {error}") \
                from None

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
        out = np.empty((len(wanted), self.tile_px, self.tile_px, 3), np.uint8)
        for index, key in enumerate(wanted):
            out[index] = self.cache[key]
            self.cache.move_to_end(key)
        while len(self.cache) > self.capacity:
            self.cache.popitem(last=False)
        return out


class TargetOverlay:
    """The target picture at the output size, made band by band for the overlay.

    Enlargement (the usual case: more output pixels per cell than target
    pixels) is bilinear, computed from each output pixel's position alone,
    so any band equals the same rows of the whole enlarged picture and bands
    join without seams; the whole enlargement is never held. A reduction is
    small enough to make at once (bicubic, with Pillow).

    Parameters
    ----------
    target_crop : numpy.ndarray
        ``(rows * cell_px, cols * cell_px, 3)`` uint8 grid crop of the target.
    width, height : int
        Output size.
    strength : float
        Blend weight ``B`` of the target: ``(1 - B) * mosaic + B * target``.
    """

    def __init__(self, target_crop: np.ndarray, width: int, height: int, strength: float) -> None:
        self.strength = strength
        self.width, self.height = width, height
        crop_height, crop_width = target_crop.shape[:2]
        self.whole = None
        if width * height <= crop_width * crop_height:
            self.whole = np.asarray(
                Image.fromarray(target_crop).resize((width, height), Image.Resampling.BICUBIC)
            )
            return
        self.crop = target_crop
        self.columns = _bilinear_taps(crop_width, width)
        self.rows = _bilinear_taps(crop_height, height)

    def band(self, top: int, bottom: int) -> np.ndarray:
        """Return rows ``top:bottom`` of the target at the output size (float32)."""
        if self.whole is not None:
            return self.whole[top:bottom].astype(np.float32)
        first, second, weight = (part[top:bottom] for part in self.rows)
        left, right, across = self.columns
        upper = self.crop[first].astype(np.float32)
        lower = self.crop[second].astype(np.float32)
        rows = upper + (lower - upper) * weight[:, None, None]
        return rows[:, left] + (rows[:, right] - rows[:, left]) * across[None, :, None]

    def blend(self, band: np.ndarray, top: int) -> np.ndarray:
        """Blend the target over ``band`` (rows from ``top``) in chunks of rows."""
        out = np.empty_like(band)
        step = max(1, (1 << 22) // max(1, self.width * 3))
        for start in range(0, band.shape[0], step):
            stop = min(band.shape[0], start + step)
            target = self.band(top + start, top + stop)
            mixed = (1 - self.strength) * band[start:stop] + self.strength * target
            out[start:stop] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
        return out


def _bilinear_taps(source: int, output: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of each output pixel (pixel centres aligned, edges held)."""
    position = (np.arange(output, dtype=np.float64) + 0.5) * (source / output) - 0.5
    position = np.clip(position, 0, source - 1)
    first = np.floor(position).astype(np.int64)
    second = np.minimum(first + 1, source - 1)
    return first, second, (position - first).astype(np.float32)


@dataclass
class MosaicRenderer:
    """Draws placements as a picture, one row of cells at a time.

    Every output (an image in memory, a streamed file, a Deep Zoom pyramid)
    comes from :meth:`bands`, so they agree pixel for pixel.

    Attributes
    ----------
    placements : Placements
        Which tile, transform and tint goes in each cell.
    pictures : TilePictures
        Where tile pictures come from, at the output size.
    metric : str
        Colour space of the tint shifts.
    overlay : TargetOverlay, optional
        The target blended over the mosaic.
    """

    placements: Placements
    pictures: TilePictures
    metric: str = "seed"
    overlay: TargetOverlay | None = None

    @property
    def tile_px(self) -> int:
        """Output pixels per tile side."""
        return self.pictures.tile_px

    @property
    def width(self) -> int:
        """Output width in pixels."""
        return self.placements.cols * self.tile_px

    @property
    def height(self) -> int:
        """Output height in pixels."""
        return self.placements.rows * self.tile_px

    def bands(self) -> Iterator[np.ndarray]:
        """Yield the picture as ``(tile_px, width, 3)`` uint8 bands, one per row of cells."""
        placements = self.placements
        cols, tile_px = placements.cols, self.tile_px
        # Tinting works in float64; dressing a few megapixels at a time bounds that.
        chunk = max(1, (1 << 21) // (tile_px * tile_px))
        for row in range(placements.rows):
            band = np.empty((tile_px, cols, tile_px, 3), np.uint8)
            for start in range(0, cols, chunk):
                stop = min(cols, start + chunk)
                cells = np.arange(row * cols + start, row * cols + stop)
                dressed = dress_tiles(
                    self.pictures.fetch(cells), placements.transform[cells],
                    placements.tint[cells], self.metric,
                )
                band[:, start:stop] = dressed.transpose(1, 0, 2, 3)
            band = band.reshape(tile_px, cols * tile_px, 3)
            if self.overlay is not None:
                band = self.overlay.blend(band, row * tile_px)
            yield band

    def image(self) -> np.ndarray:
        """Return the whole picture in memory (``(height, width, 3)`` uint8)."""
        image = np.empty((self.height, self.width, 3), np.uint8)
        for row, band in enumerate(self.bands()):
            image[row * self.tile_px:(row + 1) * self.tile_px] = band
        return image

    def write(
        self,
        path: str | os.PathLike[str],
        *,
        quality: int | None = None,
        deep_zoom: dict | None = None,
        source_root: str | os.PathLike[str] | None = None,
        show_progress: bool = False,
    ) -> None:
        """Write the picture to ``path``, streaming: never whole in memory.

        Parameters
        ----------
        path : path-like
            ``.png``, ``.jpg``, ``.webp``, ``.tif`` or ``.dzi`` (a Deep Zoom
            pyramid plus its viewer, ``NAME.html``).
        quality : int, optional
            JPEG / WebP quality (also of Deep Zoom tiles).
        deep_zoom : dict, optional
            ``tile_size``, ``overlap`` and ``format`` of a Deep Zoom pyramid.
        source_root : path-like, optional
            Folder of the tiles' original files, for the viewer's links.
        show_progress : bool
            Draw a progress bar.
        """
        write_output(self.bands(), self.width, self.height, path, placements=self.placements,
                     quality=quality, deep_zoom=deep_zoom, source_root=source_root,
                     show_progress=show_progress)


def render_mosaic(
    tiles: np.ndarray,
    tile_grid: np.ndarray,
    transforms: np.ndarray | None = None,
    tint: np.ndarray | None = None,
    metric: str = "seed",
) -> np.ndarray:
    """Assemble a mosaic in memory from tiles at the output size.

    Parameters
    ----------
    tiles : numpy.ndarray
        ``(M, tile_px, tile_px, 3)`` uint8 library tiles.
    tile_grid : numpy.ndarray
        ``(rows, cols)`` library positions.
    transforms, tint : numpy.ndarray, optional
        ``(rows * cols,)`` transform codes and ``(rows * cols, 3)`` tint
        shifts, row-major (see :func:`dress_tiles`).
    metric : str
        Colour space of the tint shifts.

    Returns
    -------
    numpy.ndarray
        ``(rows * tile_px, cols * tile_px, 3)`` uint8 image.
    """
    rows, cols = tile_grid.shape
    placements = Placements(rows, cols, np.asarray(tile_grid).ravel(),
                            np.zeros(rows * cols, np.int64), [""] * (rows * cols),
                            transforms, tint)
    return MosaicRenderer(placements, IndexPictures(tiles, placements.tile), metric).image()


def overlay_target(image: np.ndarray, target_crop: np.ndarray, strength: float) -> np.ndarray:
    """Blend the target over the mosaic: ``(1 - B) * mosaic + B * target``.

    This is the "overlay" (or "cheat") some tools apply silently; mosaicist
    names it and reports its strength. The target is brought to the
    mosaic's size as :class:`TargetOverlay` does.
    """
    if strength <= 0:
        return image
    height, width = image.shape[:2]
    return TargetOverlay(target_crop, width, height, strength).blend(image, 0)


def target_crop_of(placements: Placements) -> np.ndarray:
    """Read the target of JSON placements and cut the grid's crop (for the overlay).

    Raises
    ------
    MosaicistError
        When the placements do not name a target or it is not found.
    """
    metadata = placements.metadata
    target = metadata.get("target")
    if not target or not Path(target).exists():
        raise MosaicistError(f"{target}: the overlay needs the target picture, which is not found")
    cell_px = int(metadata["cell_px"])
    picture = read_target(target)
    crop = metadata.get("crop", {"left": 0, "top": 0})
    return picture[
        crop["top"]:crop["top"] + placements.rows * cell_px,
        crop["left"]:crop["left"] + placements.cols * cell_px,
    ]


def write_output(
    bands: Iterable[np.ndarray],
    width: int,
    height: int,
    path: str | os.PathLike[str],
    *,
    placements: Placements | None = None,
    quality: int | None = None,
    deep_zoom: dict | None = None,
    source_root: str | os.PathLike[str] | None = None,
    show_progress: bool = False,
) -> None:
    """Stream bands to an image file or a Deep Zoom pyramid with its viewer.

    See :meth:`MosaicRenderer.write`.
    """
    path = Path(path)
    if path.suffix.lower() == ".dzi":
        from .deepzoom import write_deep_zoom

        settings = dict(deep_zoom or {})
        if quality is not None:
            settings["quality"] = quality
        write_deep_zoom(bands, width, height, path, show_progress=show_progress, **settings)
        if placements is not None:
            from .viewer import write_viewer

            write_viewer(path, placements, source_root=source_root)
        return
    write_image(path, bands, width, height, quality=quality, show_progress=show_progress)


def save_image(image: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Write an in-memory ``image`` in the format its extension names, atomically."""
    write_image(path, [np.asarray(image, np.uint8)], image.shape[1], image.shape[0])


def placement_renderer(
    placements: Placements,
    tile_px: int | None = None,
    tiles: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    show_progress: bool = False,
) -> tuple[MosaicRenderer, object]:
    """Prepare to render saved placements from the tile library's original images.

    Parameters
    ----------
    placements : Placements
        Read with :meth:`Placements.read`; JSON placements carry their
        source, colour space, tint, overlay and target.
    tile_px : int, optional
        Output pixels per tile side (default: the size recorded in the
        placements), e.g. match at 32 px and print at 512 px. Each tile is
        made from its original image (centre square, Lanczos), not by
        enlarging the index thumbnail.
    tiles : str, optional
        The tile source spec, required for CSV placements, which do not
        record it.
    cache_dir : path-like, optional
        Cache for downloads.
    show_progress : bool
        Show download progress.

    Returns
    -------
    (MosaicRenderer, TileSource)
        The renderer and the opened tile source.
    """
    metadata = placements.metadata
    spec = tiles or metadata.get("source")
    if not spec:
        raise MosaicistError("these placements do not name their tile source; pass --tiles")
    tile_px = int(tile_px or metadata.get("tile_px") or 32)
    check_sizes(1, tile_px)
    source = open_source(spec, cache_dir=paths.cache_dir(cache_dir), show_progress=show_progress)
    renderer = MosaicRenderer(
        placements, OriginalPictures(source, placements.source_ids, tile_px),
        metadata.get("metric", "seed"),
    )
    overlay = float(metadata.get("overlay") or 0.0)
    if overlay > 0:
        renderer.overlay = TargetOverlay(target_crop_of(placements), renderer.width,
                                         renderer.height, overlay)
    return renderer, source


def render_placements(
    placements: Placements,
    tile_px: int | None = None,
    tiles: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    show_progress: bool = False,
) -> np.ndarray:
    """Render saved placements again, in memory (see :func:`placement_renderer`).

    Returns
    -------
    numpy.ndarray
        ``(rows * tile_px, cols * tile_px, 3)`` uint8 image.
    """
    renderer, _ = placement_renderer(placements, tile_px, tiles, cache_dir, show_progress)
    return renderer.image()
