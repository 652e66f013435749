"""The target's grid of cells, and the vectors that matching compares.

The grid follows the seed exactly: ``cols = floor(W / cell_px)``,
``rows = floor(H / cell_px)``, and the target is centre-cropped to
``rows * cell_px`` by ``cols * cell_px`` pixels with offsets
``floor((W - cols * cell_px) / 2)`` and ``floor((H - rows * cell_px) / 2)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import MosaicistError, check_range
from .options import CELL_PX_RANGE


@dataclass(frozen=True)
class Grid:
    """The cells of a target picture.

    Attributes
    ----------
    rows, cols : int
        Number of cells down and across.
    cell_px : int
        Target pixels per cell side.
    left, top : int
        Offsets of the centre crop in the target.
    cells : numpy.ndarray
        ``(rows * cols, cell_px, cell_px, 3)`` uint8, row-major (cell
        ``r * cols + c`` is row ``r``, column ``c``).
    """

    rows: int
    cols: int
    cell_px: int
    left: int
    top: int
    cells: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)``."""
        return self.rows, self.cols

    def __len__(self) -> int:
        return self.rows * self.cols


def make_grid(target: np.ndarray, cell_px: int, name: str = "target") -> Grid:
    """Cut ``target`` into whole cells of ``cell_px`` pixels, centre-cropped.

    Parameters
    ----------
    target : numpy.ndarray
        ``(H, W, 3)`` uint8 picture.
    cell_px : int
        Cell side in target pixels.
    name : str
        Name of the target for error messages.

    Raises
    ------
    OptionError
        When ``cell_px`` is outside :data:`~mosaicist.options.CELL_PX_RANGE`.
    MosaicistError
        When the target is smaller than one cell.
    """
    check_range("cell_px", cell_px, *CELL_PX_RANGE, "pixels")
    height, width = target.shape[:2]
    cols, rows = width // cell_px, height // cell_px
    if rows < 1 or cols < 1:
        raise MosaicistError(
            f"{name}: {width}x{height} pixels is smaller than one {cell_px}x{cell_px} cell"
        )
    left = (width - cols * cell_px) // 2
    top = (height - rows * cell_px) // 2
    crop = target[top:top + rows * cell_px, left:left + cols * cell_px]
    cells = (
        crop.reshape(rows, cell_px, cols, cell_px, 3)
        .transpose(0, 2, 1, 3, 4)
        .reshape(rows * cols, cell_px, cell_px, 3)
    )
    return Grid(rows, cols, cell_px, left, top, np.ascontiguousarray(cells))


def area_weights(source_px: int, target_px: int) -> np.ndarray:
    """Return the ``(target_px, source_px)`` matrix of exact area-averaging weights.

    Output pixel ``i`` covers ``[i * s, (i + 1) * s)`` in input pixels, with
    ``s = source_px / target_px``; its value is the overlap-weighted mean of
    the input pixels it covers. Each row sums to 1.
    """
    scale = source_px / target_px
    starts = np.arange(target_px)[:, None] * scale
    ends = starts + scale
    pixel = np.arange(source_px)[None, :]
    overlap = np.clip(np.minimum(ends, pixel + 1) - np.maximum(starts, pixel), 0, None)
    return overlap / scale


@dataclass(frozen=True)
class Geometry:
    """How cells and tiles are compared.

    Tiles are compared at ``match_px`` (the side they are indexed at, not
    necessarily the side they are drawn at). When ``match_px`` is a multiple
    of ``cell_px`` (factor ``f``), the cell is compared at its own resolution
    with each tile's ``f x f`` block sums:
    the seed's objective (cell scaled up by pixel replication, squared
    difference summed over the tile's pixels) equals
    ``f^2 |a|^2 - 2 <a, S_b> + |b|^2``. Otherwise each cell is resampled to
    ``match_px`` by exact area averaging, rounded to 8 bits, and compared pixel
    by pixel with the tile (``f = 1``).

    Attributes
    ----------
    cell_px, match_px : int
        The sizes.
    side : int
        Side of the compared cell vectors (``cell_px`` or ``match_px``).
    factor : int
        Tile pixels per compared pixel side (``match_px // side``).
    """

    cell_px: int
    match_px: int

    @property
    def side(self) -> int:
        """Side of the compared vectors."""
        return self.cell_px if self.match_px % self.cell_px == 0 else self.match_px

    @property
    def factor(self) -> int:
        """Tile pixels per compared pixel side."""
        return self.match_px // self.side

    @property
    def weight(self) -> int:
        """``factor ** 2``: tile pixels per compared pixel."""
        return self.factor**2

    def cell_vectors(self, cells: np.ndarray) -> np.ndarray:
        """Return the cells as compared: ``(N, side, side, 3)`` uint8."""
        if self.side == self.cell_px:
            return cells
        weights = area_weights(self.cell_px, self.match_px)
        out = np.empty((len(cells), self.side, self.side, 3), np.uint8)
        block = max(1, (1 << 22) // (self.side * self.side * 3))
        for start in range(0, len(cells), block):
            part = cells[start:start + block].astype(np.float64)
            resampled = np.einsum("ij,njkc,lk->nilc", weights, part, weights, optimize=True)
            out[start:start + block] = np.clip(np.rint(resampled), 0, 255).astype(np.uint8)
        return out

    def pool_tiles(self, tiles: np.ndarray) -> np.ndarray:
        """Return each tile's ``factor x factor`` block sums: ``(k, side, side, 3)`` uint32."""
        factor = self.factor
        if factor == 1:
            return tiles.astype(np.uint32)
        side = self.side
        blocks = np.asarray(tiles).reshape(len(tiles), side, factor, side, factor, 3)
        if factor > 8:
            return blocks.sum(axis=(2, 4), dtype=np.uint32)
        # Adding strided slices is several times faster than a multi-axis sum.
        total = blocks[:, :, 0, :, 0].astype(np.uint32)
        for row in range(factor):
            for col in range(factor):
                if row or col:
                    total += blocks[:, :, row, :, col]
        return total
