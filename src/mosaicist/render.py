"""Assembling the mosaic image from placements, and writing images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import MosaicistError
from .library import release_pages
from .paths import atomic_path

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


def render_mosaic(tiles: np.ndarray, tile_grid: np.ndarray) -> np.ndarray:
    """Assemble the mosaic.

    Parameters
    ----------
    tiles : numpy.ndarray
        ``(M, tile_px, tile_px, 3)`` uint8 library tiles.
    tile_grid : numpy.ndarray
        ``(rows, cols)`` library positions.

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
        image[row] = np.asarray(tiles[tile_grid[row]]).transpose(1, 0, 2, 3)
        if row % 64 == 63:
            release_pages(tiles)
    return image.reshape(rows * tile_px, cols * tile_px, 3)


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
