"""Assembling the mosaic image from placements, and writing images."""

from __future__ import annotations

import os
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
from .paths import atomic_path
from .placements import Placements
from .progress import progress_bar
from .sources import SourceEntry, open_source

#: Output formats by file extension, with the options used to write them.
OUTPUT_FORMATS: dict[str, tuple[str, dict]] = {
    ".png": ("PNG", {"compress_level": 1}),
    ".jpg": ("JPEG", {"quality": 92, "subsampling": 0}),
    ".jpeg": ("JPEG", {"quality": 92, "subsampling": 0}),
    ".webp": ("WEBP", {"quality": 92, "method": 4}),
    ".tif": ("TIFF", {"compression": "tiff_deflate"}),
    ".tiff": ("TIFF", {"compression": "tiff_deflate"}),
}
#: Largest side each format can hold.
FORMAT_MAX_SIDE = {"PNG": 2**31 - 1, "JPEG": 65535, "WEBP": 16383, "TIFF": 2**31 - 1}


def output_format(path: str | os.PathLike[str]) -> str:
    """Return the Pillow format for ``path``'s extension.

    Raises
    ------
    MosaicistError
        For an unknown extension.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        known = ", ".join(sorted(OUTPUT_FORMATS))
        raise MosaicistError(f"{path}: unknown output format {suffix or '(none)'!r}; use {known}")
    return OUTPUT_FORMATS[suffix][0]


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


def check_output_size(path: str | os.PathLike[str], width: int, height: int) -> None:
    """Raise :class:`MosaicistError` when the format cannot hold ``width x height``."""
    name = output_format(path)
    limit = FORMAT_MAX_SIDE[name]
    if width > limit or height > limit:
        raise MosaicistError(
            f"{path}: {width}x{height} pixels is over the {name} limit of {limit} pixels a side"
        )


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


def render_mosaic(
    tiles: np.ndarray,
    tile_grid: np.ndarray,
    transforms: np.ndarray | None = None,
    tint: np.ndarray | None = None,
    metric: str = "seed",
) -> np.ndarray:
    """Assemble the mosaic.

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
    tile_px = tiles.shape[1]
    image = np.empty((rows, tile_px, cols, tile_px, 3), np.uint8)
    for row in range(rows):
        # One gather per row of cells keeps memory-mapped reads sequential-ish.
        cells = slice(row * cols, (row + 1) * cols)
        row_tiles = dress_tiles(
            np.asarray(tiles[tile_grid[row]]),
            None if transforms is None else transforms[cells],
            None if tint is None else tint[cells],
            metric,
        )
        image[row] = row_tiles.transpose(1, 0, 2, 3)
        if row % 64 == 63:
            release_pages(tiles)
    return image.reshape(rows * tile_px, cols * tile_px, 3)


def overlay_target(image: np.ndarray, target_crop: np.ndarray, strength: float) -> np.ndarray:
    """Blend the target over the mosaic: ``(1 - B) * mosaic + B * target``.

    This is the "overlay" (or "cheat") some tools apply silently; mosaicist
    names it and reports its strength. The target crop is resized to the
    mosaic's size with bicubic interpolation; done in horizontal bands to
    bound memory.
    """
    if strength <= 0:
        return image
    height, width = image.shape[:2]
    resized = np.asarray(
        Image.fromarray(target_crop).resize((width, height), Image.Resampling.BICUBIC)
    )
    out = np.empty_like(image)
    band = max(1, (1 << 22) // max(1, width * 3))
    for start in range(0, height, band):
        stop = start + band
        blended = (1 - strength) * image[start:stop] + strength * resized[start:stop]
        out[start:stop] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


def save_image(image: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Write ``image`` in the format its extension names, atomically."""
    name, options = OUTPUT_FORMATS[Path(path).suffix.lower()]
    picture = Image.fromarray(image, "RGB")
    try:
        with atomic_path(path) as temporary:
            picture.save(temporary, format=name, **options)
    except PermissionError:
        raise MosaicistError(f"{path}: cannot write output (permission denied)") from None
    except OSError as error:
        raise MosaicistError(f"{path}: cannot write output: {error.strerror or error}") from None


def render_placements(
    placements: Placements,
    tile_px: int | None = None,
    tiles: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    show_progress: bool = False,
) -> np.ndarray:
    """Render saved placements again from the tile library's original images.

    Parameters
    ----------
    placements : Placements
        Read with :meth:`Placements.read`; JSON placements carry their
        source, colour space, tint, overlay and target.
    tile_px : int, optional
        Output pixels per tile side (default: the size matched at), e.g. match
        at 32 px and print at 128 px. Each tile is made from its original
        image (centre square, Lanczos), not by enlarging the index thumbnail.
    tiles : str, optional
        The tile source spec, required for CSV placements, which do not
        record it.
    cache_dir : path-like, optional
        Cache for downloads.
    show_progress : bool
        Draw a progress bar.

    Returns
    -------
    numpy.ndarray
        ``(rows * tile_px, cols * tile_px, 3)`` uint8 image.
    """
    metadata = placements.metadata
    spec = tiles or metadata.get("source")
    if not spec:
        raise MosaicistError("these placements do not name their tile source; pass --tiles")
    tile_px = int(tile_px or metadata.get("tile_px") or 32)
    check_sizes(1, tile_px)
    source = open_source(spec, cache_dir=paths.cache_dir(cache_dir), show_progress=show_progress)
    distinct, inverse = np.unique(np.asarray(placements.source_ids, dtype=object),
                                  return_inverse=True)
    thumbnails = np.empty((len(distinct), tile_px, tile_px, 3), np.uint8)
    with progress_bar(len(distinct), "loading tiles", unit="tile", enabled=show_progress) as bar:
        for index, source_id in enumerate(distinct.tolist()):
            try:
                original = source.open_original(SourceEntry(source_id, 0, 0, None))
            except (OSError, ValueError) as error:
                raise MosaicistError(
                    f"{source_id}: cannot open the tile's original: {error}"
                ) from None
            thumbnails[index] = square_thumbnail(original, tile_px)
            bar.update(1)
    grid = inverse.reshape(placements.rows, placements.cols)
    image = render_mosaic(
        thumbnails, grid, placements.transform, placements.tint, metadata.get("metric", "seed")
    )
    overlay = float(metadata.get("overlay") or 0.0)
    if overlay > 0:
        target = metadata.get("target")
        cell_px = int(metadata["cell_px"])
        if not target or not Path(target).exists():
            raise MosaicistError(
                f"{target}: the overlay needs the target picture, which is not found"
            )
        picture = read_target(target)
        crop = metadata.get("crop", {"left": 0, "top": 0})
        target_crop = picture[
            crop["top"]:crop["top"] + placements.rows * cell_px,
            crop["left"]:crop["left"] + placements.cols * cell_px,
        ]
        image = overlay_target(image, target_crop, overlay)
    return image
