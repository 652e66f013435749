"""Tile variants: mirror and rotation transforms, and the matching space.

A candidate is a (tile, transform) pair. With ``k`` transforms the matcher
sees a *prepared* library of ``M * k`` tiles where candidate ``v`` is tile
``v // k`` under transform ``transforms[v % k]``: ties between equal
candidates therefore go to the lowest library position, then to the first
transform. The prepared library is also encoded in the metric's colour space
(see :mod:`mosaicist.colour`), and cached beside the index as one
memory-mapped file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .colour import encode
from .library import release_pages
from .progress import progress_bar

#: The eight symmetries of the square (the dihedral group D4), by code.
TRANSFORM_NAMES = (
    "identity", "mirror", "rot90", "rot180", "rot270", "transpose", "flip", "transverse",
)
#: Transform codes added by each ``--augment`` choice.
AUGMENT_SETS = {
    "none": (0,),
    "flips": (0, 1),
    "rotations": (0, 2, 3, 4),
    "all": (0, 1, 2, 3, 4, 5, 6, 7),
}
_CHUNK = 4096


def apply_transform(images: np.ndarray, code: int) -> np.ndarray:
    """Apply transform ``code`` to ``(..., H, W, C)`` images (H, W the last-but-one axes).

    Rotations are counter-clockwise; ``mirror`` flips left-right; ``flip``
    flips top-bottom; ``transpose`` mirrors about the main diagonal and
    ``transverse`` about the other one.
    """
    rows, cols = images.ndim - 3, images.ndim - 2
    if code == 0:
        return images
    if code == 1:
        return images[..., :, ::-1, :]
    if code in (2, 3, 4):
        return np.rot90(images, k=code - 1, axes=(rows, cols))
    if code == 5:
        return np.swapaxes(images, rows, cols)
    if code == 6:
        return images[..., ::-1, :, :]
    if code == 7:
        return np.rot90(np.swapaxes(images, rows, cols), k=2, axes=(rows, cols))
    raise ValueError(f"unknown transform code {code}")


def transform_code(name: str) -> int:
    """Return the code of a transform name (see :data:`TRANSFORM_NAMES`)."""
    try:
        return TRANSFORM_NAMES.index(name)
    except ValueError:
        raise ValueError(f"unknown transform {name!r}") from None


def prepare_tiles(
    tiles: np.ndarray,
    metric: str,
    augment: str,
    directory: Path | None,
    key: str,
    show_progress: bool = False,
) -> np.ndarray:
    """Return the prepared library: tiles encoded for ``metric``, times the transforms.

    Parameters
    ----------
    tiles : numpy.ndarray
        ``(M, T, T, 3)`` uint8 library tiles.
    metric : str
        ``seed``, ``lab`` or ``oklab``.
    augment : str
        A key of :data:`AUGMENT_SETS`.
    directory : pathlib.Path or None
        Cache folder; the result is computed in memory when None.
    key : str
        Identity of the library state (e.g. its generation and size).

    Returns
    -------
    numpy.ndarray
        ``(M * k, T, T, 3)`` uint8, memory-mapped when cached. For the seed
        metric without augmentation, ``tiles`` itself.
    """
    transforms = AUGMENT_SETS[augment]
    if metric == "seed" and len(transforms) == 1:
        return tiles
    count, side = len(tiles), tiles.shape[1]
    shape = (count * len(transforms), side, side, 3)
    if directory is None:
        out = np.empty(shape, np.uint8)
        _fill(out, tiles, metric, transforms, show_progress)
        return out
    path = directory / f"prepared-{metric}-{augment}-{key}.u8"
    if path.exists() and path.stat().st_size == int(np.prod(shape)):
        return np.memmap(path, np.uint8, "r", shape=shape)
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        out = np.memmap(partial, np.uint8, "w+", shape=shape)
        _fill(out, tiles, metric, transforms, show_progress)
        out.flush()
        del out
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return np.memmap(path, np.uint8, "r", shape=shape)


def _fill(
    out: np.ndarray, tiles: np.ndarray, metric: str, transforms: tuple[int, ...],
    show_progress: bool,
) -> None:
    variants = len(transforms)
    with progress_bar(len(tiles), "preparing", unit="tile", enabled=show_progress) as bar:
        for start in range(0, len(tiles), _CHUNK):
            part = encode(np.asarray(tiles[start:start + _CHUNK]), metric)
            stop = start + len(part)
            block = out[start * variants:stop * variants].reshape(
                len(part), variants, *part.shape[1:]
            )
            for slot, code in enumerate(transforms):
                block[:, slot] = apply_transform(part, code)
            release_pages(tiles)
            release_pages(out)
            bar.update(len(part))
