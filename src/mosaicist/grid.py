"""The target's grid of cells, and the vectors that matching compares.

The grid follows the seed exactly: ``cols = floor(W / cell_w)``,
``rows = floor(H / cell_h)``, and the target is centre-cropped to
``rows * cell_h`` by ``cols * cell_w`` pixels with offsets
``floor((W - cols * cell_w) / 2)`` and ``floor((H - rows * cell_h) / 2)``.
Cells are ``cell_px`` wide and, at an aspect ``W:H`` other than ``1:1``,
``cell_height`` high (see :mod:`mosaicist.aspect`); square cells have
``cell_height == cell_px``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import MosaicistError, OptionError, check_range, shown_type
from .options import CELL_PX_RANGE, check_whole


@dataclass(frozen=True)
class Grid:
    """The cells of a target picture.

    Attributes
    ----------
    rows, cols : int
        Number of cells down and across.
    cell_px : int
        Target pixels per cell across (the cell's width).
    left, top : int
        Offsets of the centre crop in the target.
    cells : numpy.ndarray
        ``(rows * cols, cell_height, cell_px, 3)`` uint8, row-major (cell
        ``r * cols + c`` is row ``r``, column ``c``).
    cell_height : int
        Target pixels per cell down; 0 when made means ``cell_px`` (square cells).
    """

    rows: int
    cols: int
    cell_px: int
    left: int
    top: int
    cells: np.ndarray
    cell_height: int = 0

    def __post_init__(self) -> None:
        if not self.cell_height:
            object.__setattr__(self, "cell_height", self.cell_px)

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)``."""
        return self.rows, self.cols

    @property
    def cell_shape(self) -> tuple[int, int]:
        """``(cell_height, cell_px)``: a cell's size in target pixels, height first."""
        return self.cell_height, self.cell_px

    def __len__(self) -> int:
        return self.rows * self.cols


def make_grid(
    target: np.ndarray, cell_px: int, name: str = "target", cell_height: int | None = None
) -> Grid:
    """Cut ``target`` into whole cells of ``cell_px`` by ``cell_height`` pixels, centre-cropped.

    Parameters
    ----------
    target : numpy.ndarray
        ``(H, W, 3)`` uint8 picture.
    cell_px : int
        Cell width in target pixels.
    name : str
        Name of the target for error messages.
    cell_height : int, optional
        Cell height in target pixels (default ``cell_px``: square cells).

    Raises
    ------
    OptionError
        When ``cell_px`` is outside :data:`~mosaicist.options.CELL_PX_RANGE`, or
        ``cell_height`` is not a whole number of at least 1.
    MosaicistError
        When the target is smaller than one cell.
    """
    cell_px = check_whole("cell_px", cell_px, *CELL_PX_RANGE, "pixels")
    if not isinstance(target, np.ndarray) or target.ndim != 3 or target.shape[2] != 3 \
            or target.dtype != np.uint8:
        # Else a reshape's ValueError (or an AttributeError) from deep inside.
        shape = getattr(target, "shape", None)
        kind = f"shape {shape}, dtype {target.dtype}" if isinstance(target, np.ndarray) \
            else shown_type(target)
        raise OptionError("{target} must be an (H, W, 3) uint8 array, got {kind}", kind=kind)
    # Any height an aspect gives a cell of up to 1024 px (1:16 makes 16,384); an
    # OptionError, a ValueError as before, also for a float, a bool or a text.
    cell_h = cell_px if cell_height is None else check_whole("cell_height", cell_height, 1)
    height, width = target.shape[:2]
    cols, rows = width // cell_px, height // cell_h
    if rows < 1 or cols < 1:
        raise MosaicistError(
            f"{name}: {width}x{height} pixels is smaller than one {cell_px}x{cell_h} cell"
        )
    left = (width - cols * cell_px) // 2
    top = (height - rows * cell_h) // 2
    crop = target[top:top + rows * cell_h, left:left + cols * cell_px]
    cells = (
        crop.reshape(rows, cell_h, cols, cell_px, 3)
        .transpose(0, 2, 1, 3, 4)
        .reshape(rows * cols, cell_h, cell_px, 3)
    )
    return Grid(rows, cols, cell_px, left, top, np.ascontiguousarray(cells), cell_h)


def area_weights(source_px: int, target_px: int) -> np.ndarray:
    """Return the ``(target_px, source_px)`` matrix of exact area-averaging weights.

    Output pixel ``i`` covers ``[i * s, (i + 1) * s)`` in input pixels, with
    ``s = source_px / target_px``; its value is the overlap-weighted mean of
    the input pixels it covers. Each row sums to 1 (each weight is the
    integer overlap of :func:`area_overlaps` over ``source_px``).
    """
    return area_overlaps(source_px, target_px) / source_px


def area_overlaps(source_px: int, target_px: int) -> np.ndarray:
    """``(target_px, source_px)`` integer overlaps of output and input pixels.

    With lengths scaled by ``source_px * target_px``, output pixel ``i``
    covers ``[i * source_px, (i + 1) * source_px)`` and input pixel ``j``
    covers ``[j * target_px, (j + 1) * target_px)``; every row sums to
    ``source_px``, so the area average is ``overlaps @ values / source_px``.
    Integers, unlike the overlaps of fractional edges, have no stray
    rounding terms.

    Parameters
    ----------
    source_px, target_px : int
        Pixels in and out along one side.

    Returns
    -------
    numpy.ndarray
        ``(target_px, source_px)`` int64 overlaps.
    """
    outputs = np.arange(target_px + 1, dtype=np.int64) * source_px
    inputs = np.arange(source_px + 1, dtype=np.int64) * target_px
    low = np.maximum(outputs[:-1, None], inputs[None, :-1])
    high = np.minimum(outputs[1:, None], inputs[None, 1:])
    return np.clip(high - low, 0, None)


def _weigh(values: np.ndarray, overlaps: np.ndarray, axis: int, wide: type) -> np.ndarray:
    """``sum_j overlaps[i, j] * values[..., j, ...]`` along ``axis``, for every ``i``, as ``wide``.

    Element by element, in a fixed order: every output depends on its own
    inputs only, never on the size of the array (a matrix product's or
    einsum's order of summation does).
    """
    shape = list(values.shape)
    shape[axis] = len(overlaps)
    out: np.ndarray = np.zeros(shape, wide)
    overlaps = overlaps.astype(wide)
    lead = (slice(None),) * axis
    for index, row in enumerate(overlaps):
        into = out[lead + (index,)]
        for source in np.flatnonzero(row):
            into += values[lead + (source,)] * row[source]
    return out


def area_sums(
    part: np.ndarray, cell_px: int, view_px: int, cell_h: int, view_h: int,
) -> tuple[np.ndarray, int]:
    """Area sums of every cell of ``part`` resampled to ``view_h x view_px``, and their divisor.

    Each cell is resampled on its own (edges never blend), with the integer
    overlaps of :func:`area_overlaps` at the reduced ratio, element by
    element: every cell's sums depend on that cell alone, to the last bit.

    Parameters
    ----------
    part : numpy.ndarray
        ``(count * cell_h, cols * cell_px, 3)`` pixels: whole rows of whole cells.
    cell_px, view_px, cell_h, view_h : int
        A cell's width and height in ``part`` and resampled.

    Returns
    -------
    sums : numpy.ndarray
        ``(count, view_h, cols, view_px, 3)``: exact integers (int32 or int64)
        for integer pictures of up to 32 bits, float64 otherwise.
    divisor : int
        What the sums are divided by to give the area means.
    """
    count, cols = part.shape[0] // cell_h, part.shape[1] // cell_px
    # Only the ratio matters: 16 px to 12 is 4 to 3, fewer terms per output.
    across, down = math.gcd(cell_px, view_px), math.gcd(cell_h, view_h)
    source_x, target_x = cell_px // across, view_px // across
    source_y, target_y = cell_h // down, view_h // down
    cells = part.reshape(count * down, source_y, cols * across, source_x, 3)
    if part.dtype == np.uint8 and 255 * source_x * source_y < 1 << 31:
        # Every sum is at most 255 times the weights' total: 32-bit integers hold
        # them, with half the memory traffic of 64.
        wide: type = np.int32
    elif part.dtype.kind in "biu" and part.dtype.itemsize <= 4 and source_x * source_y < 1 << 20:
        wide = np.int64
    else:
        wide = np.float64
    weighted = _weigh(cells, area_overlaps(source_y, target_y), 1, wide)
    weighted = _weigh(weighted, area_overlaps(source_x, target_x), 3, wide)
    return (weighted.reshape(count, view_h, cols, view_px, 3), source_x * source_y)


def rounded_quotient(sums: np.ndarray, divisor: int) -> np.ndarray:
    """``sums / divisor`` rounded half to even (``np.rint``'s rule), as uint8.

    Exact for integer sums under 2^53 and a divisor under 2^26: a quotient
    that is not a tie lies at least ``1 / (2 divisor)`` from one, far more
    than float64's rounding of the division, and a tie is exact in float64.

    Parameters
    ----------
    sums : numpy.ndarray
        Integer sums of 8-bit values, e.g. from :func:`area_sums`.
    divisor : int
        Their divisor.

    Returns
    -------
    numpy.ndarray
        The rounded means, uint8.
    """
    return np.rint(sums / float(divisor)).astype(np.uint8)


@dataclass(frozen=True)
class Geometry:
    """How cells and tiles are compared.

    A cell is ``cell_px`` wide and ``cell_height`` high (target pixels); a
    tile is compared at ``match_px`` by ``match_height`` (the size it is
    indexed at, not necessarily the size it is drawn at). Heights of 0 when
    made mean square: ``Geometry(16, 32)`` is 16 px square cells against
    32 px square tiles.

    When the tile is the same whole multiple ``f`` of the cell both ways
    (``match_px = f cell_px`` and ``match_height = f cell_height``), the
    cell is compared at its own resolution with each tile's ``f x f`` block
    sums: the seed's objective (cell scaled up by pixel replication, squared
    difference summed over the tile's pixels) equals
    ``f^2 |a|^2 - 2 <a, S_b> + |b|^2``. Otherwise each cell is resampled to
    ``match_height x match_px`` by exact area averaging (rows and columns
    separately), rounded to 8 bits, and compared pixel by pixel with the
    tile (``f = 1``).

    Attributes
    ----------
    cell_px, match_px : int
        The widths.
    cell_height, match_height : int
        The heights (0 when made: the width).
    """

    cell_px: int
    match_px: int
    cell_height: int = 0
    match_height: int = 0

    def __post_init__(self) -> None:
        # A public class: Geometry(0, 32) or Geometry("8", 32) was taken, and failed later
        # as a division by zero or a NumPy error naming nothing.
        for name, least in (("cell_px", 1), ("match_px", 1), ("cell_height", 0),
                            ("match_height", 0)):
            value = check_range(name, getattr(self, name), least, None, "pixels", whole=True)
            object.__setattr__(self, name, int(value))
        if not self.cell_height:
            object.__setattr__(self, "cell_height", self.cell_px)
        if not self.match_height:
            object.__setattr__(self, "match_height", self.match_px)

    @property
    def square(self) -> bool:
        """Whether cells and tiles are both square."""
        return self.cell_height == self.cell_px and self.match_height == self.match_px

    @property
    def cell_shape(self) -> tuple[int, int]:
        """``(cell_height, cell_px)``."""
        return self.cell_height, self.cell_px

    @property
    def match_shape(self) -> tuple[int, int]:
        """``(match_height, match_px)``: a tile as compared, height first."""
        return self.match_height, self.match_px

    @property
    def factor(self) -> int:
        """Tile pixels per compared pixel along each side (1 when the cell is resampled)."""
        if self.match_px % self.cell_px:
            return 1
        factor = self.match_px // self.cell_px
        return factor if self.match_height == factor * self.cell_height else 1

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the compared cell vectors: the cell's, or the tile's."""
        factor = self.factor
        return (self.match_height // factor, self.match_px // factor)

    @property
    def side(self) -> int:
        """Side of the compared vectors, for square geometries (see :attr:`shape`).

        Raises
        ------
        ValueError
            For rectangular cells, which have no single side.
        """
        height, width = self.shape
        if height != width:
            raise ValueError(f"a {width}x{height} compared cell has no single side; use shape")
        return width

    @property
    def weight(self) -> int:
        """``factor ** 2``: tile pixels per compared pixel."""
        return self.factor**2

    @property
    def pixels(self) -> int:
        """Pixels of a tile as compared: ``match_height * match_px``."""
        return self.match_height * self.match_px

    @property
    def length(self) -> int:
        """Values of one compared vector: ``3 * height * width`` of :attr:`shape`."""
        height, width = self.shape
        return height * width * 3

    def cell_vectors(self, cells: np.ndarray) -> np.ndarray:
        """Return the cells as compared: ``(N, height, width, 3)`` uint8 (see :attr:`shape`).

        Parameters
        ----------
        cells : numpy.ndarray
            ``(N, cell_height, cell_px, 3)`` uint8 cells, as :attr:`Grid.cells` holds them.

        Returns
        -------
        numpy.ndarray
            ``cells`` itself when they are compared at their own size; otherwise
            each resampled by area averaging to :attr:`shape`.
        """
        if self.factor > 1 or self.shape == self.cell_shape:
            return cells
        height, width = self.shape
        out = np.empty((len(cells), height, width, 3), np.uint8)
        block = max(1, (1 << 22) // (max(height, self.cell_height) * max(width, self.cell_px) * 3))
        for start in range(0, len(cells), block):
            part = np.asarray(cells[start:start + block])
            count = len(part)
            # Cells side by side in one row: each is resampled on its own, in whole numbers,
            # and rounded once (a float product rounded a mean of exactly k + 1/2 either way).
            row = part.transpose(1, 0, 2, 3).reshape(self.cell_height, count * self.cell_px, 3)
            sums, divisor = area_sums(row, self.cell_px, width, self.cell_height, height)
            resampled = rounded_quotient(sums, divisor).reshape(height, count, width, 3)
            out[start:start + count] = resampled.transpose(1, 0, 2, 3)
        return out

    def pool_tiles(self, tiles: np.ndarray) -> np.ndarray:
        """Return each tile's ``factor x factor`` block sums: ``(k, height, width, 3)`` uint32.

        Parameters
        ----------
        tiles : numpy.ndarray
            ``(k, match_height, match_px, 3)`` uint8 tiles, at the size they are compared.

        Returns
        -------
        numpy.ndarray
            The sums, which the cells at their own resolution are compared with
            (the tiles themselves, widened, when :attr:`factor` is 1).
        """
        factor = self.factor
        if factor == 1:
            return tiles.astype(np.uint32)
        height, width = self.shape
        blocks = np.asarray(tiles).reshape(len(tiles), height, factor, width, factor, 3)
        if factor > 8:
            return blocks.sum(axis=(2, 4), dtype=np.uint32)
        # Adding strided slices is several times faster than a multi-axis sum.
        total = blocks[:, :, 0, :, 0].astype(np.uint32)
        for row in range(factor):
            for col in range(factor):
                if row or col:
                    total += blocks[:, :, row, :, col]
        return total
