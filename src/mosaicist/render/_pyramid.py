"""Image pyramids built from a stream of horizontal bands.

Every pyramid mosaicist writes (Deep Zoom levels, the sub-resolutions of a
pyramidal TIFF) uses one reduction, :func:`reduce_half`, so that each level
equals the level below reduced 2x, exactly. :class:`HalvingStream` applies it
to bands of any height as they arrive, so a level is never held whole.
"""

from __future__ import annotations

import operator

import numpy as np
from PIL import Image


def half_size(size: int) -> int:
    """Return the side of the next smaller level: ``ceil(size / 2)``.

    Parameters
    ----------
    size : int
        A width or height in pixels.

    Returns
    -------
    int
        The side of the level above, in which an odd last pixel keeps a pixel of its own.
    """
    return (size + 1) // 2


def level_count(width: int, height: int) -> int:
    """Return the number of Deep Zoom levels: the 1x1 level 0 up to full size.

    Parameters
    ----------
    width, height : int
        Full size of the picture in pixels.

    Returns
    -------
    int
        ``ceil(log2(max(width, height))) + 1``, computed exactly.
    """
    # ceil(log2(n)) without floating point: exact for any size. operator.index takes
    # NumPy integers (sizes computed with NumPy have no bit_length) and refuses floats.
    return (max(operator.index(width), operator.index(height), 1) - 1).bit_length() + 1


def reduce_half(image: np.ndarray) -> np.ndarray:
    """Reduce an image 2x: the rounded mean of each 2x2 block.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W, C)`` uint8.

    Returns
    -------
    numpy.ndarray
        ``(ceil(H / 2), ceil(W / 2), C)`` uint8. Each pixel is
        ``(a + b + c + d + 2) // 4`` over its block; where an odd last row or
        column leaves a block short, the missing pixels repeat the edge, so
        an edge pixel is the rounded mean of the pixels it covers.
    """
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        return np.empty((half_size(height), half_size(width)) + image.shape[2:], np.uint8)
    if image.ndim == 3 and image.shape[2] == 3:
        # Pillow's 2x2 reduction computes exactly this (rounded block means,
        # edge blocks over the pixels they have), several times faster.
        return np.asarray(Image.fromarray(np.ascontiguousarray(image), "RGB").reduce(2))
    if height % 2:
        image = np.concatenate([image, image[-1:]], axis=0)
    if width % 2:
        image = np.concatenate([image, image[:, -1:]], axis=1)
    sums = image[0::2].astype(np.uint16)
    sums += image[1::2]
    blocks = sums[:, 0::2]
    blocks += sums[:, 1::2]
    blocks += 2
    blocks >>= 2
    return blocks.astype(np.uint8)


class HalvingStream:
    """Reduce a stream of bands 2x, as :func:`reduce_half` would the whole.

    Bands of any height go in top to bottom with :meth:`push`; the reduced
    rows come out as soon as their two source rows have arrived. An odd row
    left over is held for the next band, and :meth:`finish` reduces a final
    odd row on its own.

    Parameters
    ----------
    width : int
        Width of the incoming bands.
    """

    def __init__(self, width: int) -> None:
        self.width = width
        self._held: np.ndarray | None = None
        # The trailing shape of the bands (channels), for an empty result of the same kind.
        self._pixel: tuple[int, ...] = (3,)

    def push(self, band: np.ndarray) -> np.ndarray:
        """Add ``band`` (``(h, width, C)`` uint8); return the reduced rows now complete.

        Parameters
        ----------
        band : numpy.ndarray
            The next rows, below those pushed before; any height, 0 included.

        Returns
        -------
        numpy.ndarray
            ``(k, ceil(width / 2), C)`` uint8 reduced rows, ``k`` possibly 0.

        Raises
        ------
        ValueError
            When ``band`` is not ``width`` pixels wide.
        """
        if band.shape[1] != self.width:
            raise ValueError(f"band is {band.shape[1]} px wide, expected {self.width}")
        self._pixel = band.shape[2:]
        if self._held is not None:
            band = np.concatenate([self._held, band], axis=0)
            self._held = None
        if band.shape[0] % 2:
            self._held = band[-1:].copy()
            band = band[:-1]
        if band.shape[0] == 0:
            return np.empty((0, half_size(self.width)) + band.shape[2:], np.uint8)
        return reduce_half(band)

    def finish(self) -> np.ndarray:
        """Return the reduction of a held odd last row (empty when none)."""
        held, self._held = self._held, None
        if held is None:
            return np.empty((0, half_size(self.width), *self._pixel), np.uint8)
        return reduce_half(held)
