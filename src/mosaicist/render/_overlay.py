"""The target blended over the mosaic (the "overlay"), made band by band."""

from __future__ import annotations

import numpy as np
from PIL import Image


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
        ``(rows * cell_height, cols * cell_px, 3)`` uint8 grid crop of the target
        (cells of any aspect: rows and columns are scaled apart).
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
        """Return rows ``top:bottom`` of the target at the output size (float32).

        Parameters
        ----------
        top, bottom : int
            The rows of the output, ``bottom`` excluded.

        Returns
        -------
        numpy.ndarray
            ``(bottom - top, width, 3)`` float32 values, 0 to 255, unrounded.
        """
        if self.whole is not None:
            return self.whole[top:bottom].astype(np.float32)
        first, second, weight = (part[top:bottom] for part in self.rows)
        left, right, across = self.columns
        upper = self.crop[first].astype(np.float32)
        lower = self.crop[second].astype(np.float32)
        rows = upper + (lower - upper) * weight[:, None, None]
        return rows[:, left] + (rows[:, right] - rows[:, left]) * across[None, :, None]

    def blend(self, band: np.ndarray, top: int) -> np.ndarray:
        """Blend the target over ``band`` (rows from ``top``) in chunks of rows.

        Parameters
        ----------
        band : numpy.ndarray
            ``(h, width, 3)`` uint8 rows of the mosaic; left as they are.
        top : int
            The output row of ``band``'s first row, to take the same rows of the target.

        Returns
        -------
        numpy.ndarray
            The blended rows, uint8, in a new array of ``band``'s shape.
        """
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


