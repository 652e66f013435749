"""Tile transforms: the eight symmetries of the square, and the sets ``augment`` adds.

A placement records each tile's transform by code (0 is the identity); the
matcher may try several transforms of every tile (``augment``), and the
renderer applies the recorded one.

Rectangular tiles (an ``aspect`` other than ``1:1``) only take the
transforms that keep their shape: the identity, the mirror, the half turn
and the flip (:data:`SHAPE_KEEPING`). For them each ``augment`` setting
means the part of its set that keeps the shape (:func:`augment_transforms`):
``flips`` the mirror, ``rotations`` the half turn, ``all`` the mirror, the
half turn and the flip.
"""

from __future__ import annotations

import numpy as np

from ._choices import AUGMENT_SETS

#: The eight symmetries of the square (the dihedral group D4), by code.
TRANSFORM_NAMES = (
    "identity", "mirror", "rot90", "rot180", "rot270", "transpose", "flip", "transverse",
)
#: Transforms that map a ``W x H`` rectangle onto itself: identity, mirror, rot180, flip.
SHAPE_KEEPING = (0, 1, 3, 6)


def augment_transforms(augment: str, aspect: tuple[int, int] = (1, 1)) -> tuple[int, ...]:
    """Transform codes tried for every tile under ``augment`` at ``aspect`` ``(W, H)``.

    Square tiles take the whole set of :data:`AUGMENT_SETS`; rectangular ones
    the codes of it that keep their shape (:data:`SHAPE_KEEPING`), in the
    same order, so that the identity stays first.

    Examples
    --------
    >>> augment_transforms("all"), augment_transforms("all", (3, 2))
    ((0, 1, 2, 3, 4, 5, 6, 7), (0, 1, 3, 6))
    >>> augment_transforms("rotations", (2, 3))
    (0, 3)
    """
    codes = AUGMENT_SETS[augment]
    if aspect[0] == aspect[1]:
        return codes
    return tuple(code for code in codes if code in SHAPE_KEEPING)


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
