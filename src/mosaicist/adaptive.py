"""Adaptive cells: a quadtree that splits cells where the target has detail.

With ``adaptive = DEPTH`` each cell of the uniform grid may split into four
equal children, and each child again, down to ``DEPTH`` levels: a cell at
level ``d`` is ``cell_px / 2^d`` by ``cell_height / 2^d`` target pixels and
is drawn as a tile of ``tile_px / 2^d`` by ``tile_height / 2^d``.

**Criterion.** A cell splits when the standard deviation of its luma
(Rec. 601: ``Y = 0.299 R + 0.587 G + 0.114 B``, 0-255) is above ``detail``.
The spread of the cell's values is what one tile cannot follow: a tile's best
case is to match the cell's mean and, at best, its texture; a cell of one
flat colour is reproduced by any tile of that colour, while an edge or a
face across a cell is lost in one tile. The standard deviation measures
exactly that lost structure (it is the root-mean-square error of drawing the
cell flat), in the units of the picture, so a threshold reads directly as
"grey levels of detail"; edge energy would also fire on fine, even texture
(grass, canvas) that a tile of similar texture renders well. Each level's
statistics come from block sums of the finest level (one pass over the
target, in bounded chunks), all cells at once. They are whole numbers (luma
in thousandths of a grey level: ``299 R + 587 G + 114 B``) and the spread is
compared with ``detail`` exactly, so a cell whose spread is ``detail`` itself
(grey stripes 10 and 30 at ``detail = 10``) stays whole, as "above" says.

**Leaves.** The cells that do not split, each with its ``level`` and its
position ``(y, x)`` in *units* of the finest level (``2^DEPTH`` units per
level-0 cell side), ordered by their level-0 cell (row-major) and, inside
it, in quadtree (Z) order. Their rectangles in level-0 cell units,
``(x, y, w, h)`` with ``w = h = 2^-level``, are what placements record.

**Matching.** A leaf at level ``d`` is compared with the tiles at their full
``match_px`` size, the leaf scaled up exactly as a uniform cell of its size
would be (:class:`~mosaicist.grid.Geometry` of the level), so distances
have the same units at every level. Without repetition limits each leaf gets
its exact nearest tile (the mosaic's matcher, one level at a time). With
limits, one assignment covers every leaf of every size: the uses of a tile
count leaves of any size, and spacing is measured between leaf centres
(Chebyshev, in level-0 cells; see :class:`~mosaicist.match._assign.Layout`),
which for level-0 leaves is the uniform grid's distance. A leaf's distance is
not weighted by its area: a small leaf competes for a tile as a whole cell
does, which spreads the best tiles over the detail the split was made for.
The assignment starts from the lists the uniform grid's matcher starts from
(:class:`~mosaicist.match._capped.CappedMatcher`): where the leaves need a
fair share of the library's uses, each leaf's tiles of least distance plus
the estimated final prices, estimated for the leaves of every size at once
in the shallowest level's space (:func:`_warm_leaves`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np

from .aspect import height_for
from .errors import OptionError, check_range
from .grid import Grid
from .imaging import target_path
from .options import CELL_PX_RANGE, TILE_PX_RANGE, MosaicOptions

if TYPE_CHECKING:
    from .library import TileLibrary
    from .match import Assignment, Matcher, MatchRequest, MatchResult
    from .match._capped import LibrarySearch
    from .placements import Placements

#: Rec. 601 luma weights of R, G, B.
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
#: The same weights in thousandths: luma x 1000 is a whole number, summed exactly.
_LUMA_THOUSANDTHS = (299, 587, 114)
#: Largest ``pixels`` for which ``pixels * sum of squares`` of a block fits in int64.
_EXACT_INT64_PIXELS = math.isqrt((2**63 - 1) // (255_000 ** 2))
#: Target pixels whose luma is summed at a time.
_CHUNK_PIXELS = 1 << 22


def check_adaptive(options: MosaicOptions) -> None:
    """Raise :class:`OptionError` naming ``adaptive`` when the sizes do not halve ``DEPTH`` times.

    Every level halves the cell, the tile drawn and the tile compared, both
    ways, so each of those sizes must divide by ``2^DEPTH``.
    """
    depth = options.adaptive
    if not depth:
        return
    step = 1 << depth
    assert options.match_px is not None
    sizes = {"cell": ("cell_px", options.cell_px, options.cell_height, CELL_PX_RANGE[1]),
             "tile": ("tile_px", options.tile_px, options.tile_height, TILE_PX_RANGE[1]),
             "match": ("match_px", options.match_px, options.match_height, TILE_PX_RANGE[1])}
    for what, (setting, width, height, most) in sizes.items():
        if width % step or height % step:
            # The widths that would do: a height rounded from the aspect (21 for 32 at
            # 3:2) is not for the user to work out.
            fits = halving_widths(width, options.aspect_ratio, step, most)
            hint = (" or ".join(str(fit) for fit in fits) + " would do") if fits else ""
            # The setting is a template field, so that the command line shows its flag.
            advice = "; {" + setting + "} {hint}" if hint else ""
            raise OptionError(
                "{adaptive} {value} halves cells {times}, so {what} sizes must divide "
                "by {step}: {what} is {size} px" + advice,
                value=depth, what=what, step=step, hint=hint,
                times="once" if depth == 1 else f"{depth} times", size=f"{width}x{height}")


def halving_widths(width: int, aspect: tuple[int, int], step: int, most: int) -> list[int]:
    """The nearest widths below and above ``width`` whose sides divide by ``step``.

    Only widths the settings take, whose width and height at ``aspect`` are
    both at most ``most`` (the size's limit), at most one on each side: the
    next width that halves 6 times at 2:3 above 670 px is 768, but that is
    1152 px tall, which the settings refuse. Used for cells and tiles here
    and for the tiles a render draws adaptive placements at.

    Examples
    --------
    >>> halving_widths(30, (1, 1), 4, 1024)
    [28, 32]
    >>> halving_widths(2, (1, 1), 4, 1024)
    [4]
    """
    def fits(candidate: int) -> bool:
        height = height_for(candidate, aspect)
        return candidate % step == 0 and height % step == 0 and height <= most

    below = next((w for w in range(min(width, most + 1) - 1, 0, -1) if fits(w)), None)
    above = next((w for w in range(width + 1, most + 1) if fits(w)), None)
    return [w for w in (below, above) if w is not None]


@dataclass(frozen=True)
class Leaves:
    """The cells of an adaptive grid (see the module's description).

    Attributes
    ----------
    rows, cols : int
        The level-0 grid.
    depth : int
        Most levels of splitting; a level-0 cell is ``2^depth`` units a side.
    level : numpy.ndarray
        ``(N,)`` int8 level of each leaf.
    y, x : numpy.ndarray
        ``(N,)`` int64 top-left corner of each leaf, in units.
    """

    rows: int
    cols: int
    depth: int
    level: np.ndarray
    y: np.ndarray
    x: np.ndarray

    def __len__(self) -> int:
        return len(self.level)

    @property
    def size(self) -> np.ndarray:
        """``(N,)`` side of each leaf in units."""
        return np.left_shift(1, self.depth - self.level.astype(np.int64))

    @property
    def cell(self) -> np.ndarray:
        """``(N,)`` row-major index of each leaf's level-0 cell."""
        return (self.y >> self.depth) * self.cols + (self.x >> self.depth)

    def rect(self) -> np.ndarray:
        """``(N, 4)`` float64 ``(x, y, w, h)`` in level-0 cells (exact dyadic fractions)."""
        unit = float(1 << self.depth)
        side = self.size / unit
        return np.stack([self.x / unit, self.y / unit, side, side], axis=1)

    def pixels(self, cell_px: int, cell_height: int) -> np.ndarray:
        """``(N, 4)`` int64 ``(x, y, w, h)`` in pixels of level-0 cells ``cell_px x cell_height``.

        With the target's cell size these are target pixels (of the grid's
        crop); with ``tile_px x tile_height``, output pixels.
        """
        unit, size = 1 << self.depth, self.size
        return np.stack([self.x * cell_px // unit, self.y * cell_height // unit,
                         size * cell_px // unit, size * cell_height // unit], axis=1)

    def layout(self) -> Any:
        """The leaves' centres for spacing (:class:`~mosaicist.match._assign.Layout`)."""
        from .match._assign import Layout

        # Doubled units keep the centres whole numbers.
        size = self.size
        centre = np.stack([2 * self.y + size, 2 * self.x + size], axis=1)
        return Layout(centre, 2 << self.depth)


def split_cells(grid: Grid, depth: int, detail: float) -> Leaves:
    """Split ``grid``'s cells where their luma spread is above ``detail``, down to ``depth``.

    Parameters
    ----------
    grid : Grid
        The uniform grid (level 0); ``cell_px`` and ``cell_height`` divide by ``2^depth``.
    depth : int
        Most levels of splitting (0: the grid's cells).
    detail : float
        Standard deviation of luma (0-255) above which a cell splits.

    Returns
    -------
    Leaves
        The cells that do not split, in level-0 row-major and Z order.

    Raises
    ------
    OptionError
        Naming ``detail`` when it is not a number from 0 to 255 (NaN included).
    """
    detail = check_range("detail", detail, 0, 255)
    count = len(grid)
    if depth == 0:
        zero = np.zeros(count, np.int64)
        rows, cols = np.divmod(np.arange(count), grid.cols)
        return Leaves(grid.rows, grid.cols, 0, zero.astype(np.int8), rows, cols)
    sums, squares = _block_sums(grid, depth - 1)
    split: np.ndarray | None = None
    found: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
    for level in range(depth + 1):
        side = 1 << level
        present = (np.ones((count, 1, 1), bool) if split is None
                   else split.repeat(2, axis=1).repeat(2, axis=2))
        if level < depth:
            block = 1 << (depth - 1 - level)
            shape = (count, side, block, side, block)
            s = sums.reshape(shape).sum(axis=(2, 4))
            q = squares.reshape(shape).sum(axis=(2, 4))
            pixels = (grid.cell_height >> level) * (grid.cell_px >> level)
            split = present & _spread_above(s, q, pixels, detail)
            leaf = present & ~split
        else:
            leaf = present
        cell, sub_y, sub_x = np.nonzero(leaf)
        found.append((level, cell, sub_y, sub_x))
    levels, ys, xs, keys = [], [], [], []
    for level, cell, sub_y, sub_x in found:
        shift = depth - level
        row, col = np.divmod(cell.astype(np.int64), grid.cols)
        local_y, local_x = sub_y.astype(np.int64) << shift, sub_x.astype(np.int64) << shift
        levels.append(np.full(len(cell), level, np.int8))
        ys.append((row << depth) + local_y)
        xs.append((col << depth) + local_x)
        keys.append(cell.astype(np.int64) * (1 << (2 * depth)) + _interleave(local_y, local_x))
    order = np.argsort(np.concatenate(keys), kind="stable")
    return Leaves(grid.rows, grid.cols, depth, np.concatenate(levels)[order],
                  np.concatenate(ys)[order], np.concatenate(xs)[order])


def _spread_above(sums: np.ndarray, squares: np.ndarray, pixels: int,
                  detail: float) -> np.ndarray:
    """Whether each block's luma spread is above ``detail``, decided exactly.

    ``sums`` and ``squares`` are whole-number sums over ``pixels`` pixels of
    luma in thousandths; the spread is above ``detail`` when ``pixels *
    squares - sums^2`` (``(1000 * pixels)^2`` times the variance) is above
    ``(1000 * detail * pixels)^2``, compared in integers.
    """
    # The largest numerator a block of spread at most ``detail`` can have.
    bound = math.floor((Fraction(detail) * 1000 * pixels) ** 2)
    if pixels <= _EXACT_INT64_PIXELS:
        numerator = pixels * squares - sums * sums
        return numerator > min(bound, np.iinfo(np.int64).max)
    # Blocks this large are few (at most the target's pixels / 11,900): Python integers.
    numerator = squares.astype(object) * pixels - sums.astype(object) ** 2
    return np.asarray(numerator > bound, bool)


def _interleave(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Morton (Z-order) code of small non-negative ``(y, x)``: y's bits odd, x's even."""
    code = np.zeros(len(y), np.int64)
    for bit in range(16):
        code |= ((x >> bit) & 1) << (2 * bit)
        code |= ((y >> bit) & 1) << (2 * bit + 1)
    return code


def _block_sums(grid: Grid, level: int) -> tuple[np.ndarray, np.ndarray]:
    """Luma sums and sums of squares of every cell's blocks at ``level``, luma in thousandths.

    Returns two ``(N, 2^level, 2^level)`` int64 arrays (block rows, block
    columns), exact: a cell of 1024 x 1024 pixels sums squares up to 6.8e16.
    """
    count, side = len(grid), 1 << level
    height, width = grid.cell_height >> level, grid.cell_px >> level
    sums = np.empty((count, side, side), np.int64)
    squares = np.empty((count, side, side), np.int64)
    chunk = max(1, _CHUNK_PIXELS // (grid.cell_height * grid.cell_px))
    red, green, blue = _LUMA_THOUSANDTHS
    for start in range(0, count, chunk):
        cells = grid.cells[start:start + chunk]
        luma = (cells[..., 0].astype(np.int64) * red + cells[..., 1].astype(np.int64) * green
                + cells[..., 2].astype(np.int64) * blue)
        blocks = luma.reshape(len(cells), side, height, side, width)
        sums[start:start + chunk] = blocks.sum(axis=(2, 4))
        squares[start:start + chunk] = (blocks * blocks).sum(axis=(2, 4))
    return sums, squares


def leaf_cells(grid: Grid, leaves: Leaves, level: int) -> tuple[np.ndarray, np.ndarray]:
    """The leaves of ``level`` and their target pixels.

    Returns
    -------
    index, cells : numpy.ndarray
        ``(n,)`` positions in ``leaves`` and ``(n, cell_height / 2^level,
        cell_px / 2^level, 3)`` uint8 pixels.
    """
    index = np.flatnonzero(leaves.level == level)
    side = 1 << level
    height, width = grid.cell_height >> level, grid.cell_px >> level
    view = grid.cells.reshape(len(grid), side, height, side, width, 3)
    shift = leaves.depth - level
    mask = side - 1
    sub_y = (leaves.y[index] >> shift) & mask
    sub_x = (leaves.x[index] >> shift) & mask
    cells = view[leaves.cell[index], sub_y, :, sub_x, :]
    return index, np.ascontiguousarray(cells)


@dataclass(frozen=True)
class LeafSpacingNeeds:
    """What a spacing ``D`` asks of the library on an adaptive layout (necessary counts).

    Attributes
    ----------
    block : int
        Most leaves of one ``high x wide`` block of level-0 cells: their
        centres are pairwise closer than ``D``, so each needs its own tile.
    high, wide : int
        The block's size in level-0 cells: ``D`` clipped to the grid.
    lone : int
        Leaves that no other leaf is ``D`` or more away from: each tile of
        one fills that leaf alone.
    """

    block: int
    high: int
    wide: int
    lone: int


def leaf_spacing_needs(leaves: Leaves, min_spacing: int) -> LeafSpacingNeeds:
    """Count the leaves that a spacing of ``min_spacing`` level-0 cells keeps apart.

    The counts of :func:`~mosaicist.match._assign.check_feasible` (a ``D x
    D`` block, the lone cells of :func:`~mosaicist.match._assign.lone_cells`)
    for leaves of several sizes, with distances between leaf centres as the
    spacing measures them (:meth:`Leaves.layout`).

    Parameters
    ----------
    leaves : Leaves
        The layout.
    min_spacing : int
        ``D``, in level-0 cells (``<= 1``: no spacing, nothing counted).

    Returns
    -------
    LeafSpacingNeeds
        The counts (all 0 where ``min_spacing <= 1``).
    """
    if min_spacing <= 1 or not len(leaves):
        return LeafSpacingNeeds(0, 0, 0, 0)
    rows, cols = leaves.rows, leaves.cols
    high, wide = min(min_spacing, rows), min(min_spacing, cols)
    per_cell = np.bincount(leaves.cell, minlength=rows * cols).reshape(rows, cols)
    # Sums over every high x wide window, from a summed-area table.
    table = np.zeros((rows + 1, cols + 1), np.int64)
    table[1:, 1:] = per_cell.cumsum(axis=0).cumsum(axis=1)
    windows = (table[high:, wide:] - table[:-high, wide:] - table[high:, :-wide]
               + table[:-high, :-wide])
    layout = leaves.layout()
    centre_y, centre_x = layout.centre[:, 0], layout.centre[:, 1]
    # A leaf's farthest other leaf along an axis is at an end of the centres' range; a
    # spacing past the grid's longer side keeps every leaf lone (and stays in int64).
    reach = min(min_spacing, max(rows, cols)) * layout.unit
    farthest_y = np.maximum(centre_y - centre_y.min(), centre_y.max() - centre_y)
    farthest_x = np.maximum(centre_x - centre_x.min(), centre_x.max() - centre_x)
    lone = int(np.count_nonzero((farthest_y < reach) & (farthest_x < reach)))
    return LeafSpacingNeeds(int(windows.max()), high, wide, lone)


def check_leaves_feasible(
    leaves: Leaves, tiles: int, max_uses: int | None, min_spacing: int
) -> None:
    """Raise before any heavy work when the spacing cannot fit the leaves with ``tiles``.

    :func:`~mosaicist.match._assign.check_feasible` checks the counts of a
    uniform grid; this checks those of the leaves (:func:`leaf_spacing_needs`):
    the most leaves of a ``D x D`` block, each a tile of its own, and the
    lone leaves, a tile each, beside ``cap`` leaves a tile for the others
    (``cap`` the lesser of ``max_uses`` and the spacing's own limit per tile).
    Without them, a library short of either was found short only after the
    spacing rounds had searched in vain (seconds to minutes).

    Parameters
    ----------
    leaves : Leaves
        The layout.
    tiles : int
        Library tiles available.
    max_uses : int or None
        Most uses of one tile (None: unlimited).
    min_spacing : int
        Minimum Chebyshev distance between leaf centres holding one tile, in level-0 cells.

    Raises
    ------
    OptionError
        Naming ``min_spacing``, with how many tiles the leaves need.
    """
    from .errors import counted
    from .match._assign import lone_cells_refusal, spacing_capacity

    needs = leaf_spacing_needs(leaves, min_spacing)
    count = len(leaves)
    spacing_cap = spacing_capacity(leaves.rows, leaves.cols, min_spacing)
    if spacing_cap is None or not count:
        # No spacing: the use cap alone is check_feasible's count.
        return
    caps = [cap for cap in (max_uses, spacing_cap) if cap is not None]
    cap = min(caps)
    lone = needs.lone
    with_lone = lone + -(-(count - lone) // cap) if cap > 1 else count
    grid = f"{leaves.cols}x{leaves.rows}"
    if tiles < needs.block and needs.block >= with_lone:
        raise OptionError(
            "{min_spacing} {spacing} needs at least {block} different tiles (the {cells} in a "
            "{high} x {wide} block of the {grid} grid are all closer than {spacing} to each "
            "other), but the library has {tiles}; add tiles or lower {min_spacing}",
            spacing=min_spacing, block=f"{needs.block:,}",
            cells=counted(needs.block, "cell"), high=needs.high, wide=needs.wide, grid=grid,
            tiles=f"{tiles:,}")
    if lone and tiles < with_lone:
        raise lone_cells_refusal(count, cap, min_spacing, with_lone, tiles, grid, lone)


def leaves_memory(leaves: Leaves, grid_cells: int, options: MosaicOptions) -> int:
    """Estimated peak bytes of matching ``leaves`` (:func:`~mosaicist.pipeline.make_memory`).

    Each level's leaves are counted as cells of their own size, and the
    parts added up; the metrics, measured on the level-0 grid, count its
    ``grid_cells``.
    """
    from .pipeline import make_memory

    total = {"cells": 0, "search": 0, "compared": 0, "assignment": 0}
    for level in np.unique(leaves.level).tolist():
        count = int(np.count_nonzero(leaves.level == level))
        parts = make_memory(1, count, options, options.cell_px >> level,
                            options.cell_height >> level)
        for name in total:
            total[name] += parts[name]
    metrics = make_memory(1, grid_cells, options)["metrics"]
    matching = total["search"] + total["compared"] + total["assignment"]
    return total["cells"] + max(matching, metrics)


def check_leaves_memory(leaves: Leaves, grid_cells: int, options: MosaicOptions,
                        available: int | None = None) -> None:
    """Refuse, before matching, leaves whose matching cannot fit in the memory available.

    Parameters
    ----------
    leaves : Leaves
        The adaptive cells.
    grid_cells : int
        Cells of the level-0 grid they were split from.
    options : MosaicOptions
        The settings, with the sizes fitted.
    available : int, optional
        Bytes available (default: :func:`mosaicist._runtime.available_memory`).

    Raises
    ------
    OptionError
        When :func:`leaves_memory` is over ``available``; the message names
        the settings that make fewer leaves.
    """
    from ._runtime import check_memory
    from .errors import counted

    def refusal(needed: str, free: str) -> OptionError:
        return OptionError(
            "{grid} split into {count} where their detail is above {detail} {detail_value} "
            "need about {needed} of memory to match; this machine has {free} available: use "
            "a higher {detail}, a smaller {adaptive} or "
            + ("fewer {cells}" if options.cells is not None else "a larger {cell_px}"),
            grid=counted(grid_cells, "cell"), count=f"{len(leaves):,}",
            detail_value=f"{options.detail:g}", needed=needed, free=free)

    check_memory(leaves_memory(leaves, grid_cells, options), refusal, available)


def level_options(options: MosaicOptions, level: int) -> MosaicOptions:
    """``options`` with cells of ``level`` (``cell_px / 2^level``), every other setting as is.

    Settings fitted to the job (a preset's limits, a tint dropped for a
    matcher) stay as they are, and those given stay given.
    """
    values = {item.name: getattr(options, item.name)
              for item in dataclasses.fields(options) if item.init}
    values["cell_px"] = options.cell_px >> level
    copy = MosaicOptions(**values)
    object.__setattr__(copy, "_given", options._given)
    return copy


@dataclass
class AdaptiveMatch:
    """What :func:`match_adaptive` found.

    Attributes
    ----------
    leaves : Leaves
        The cells.
    placements : Placements
        The tile of every leaf, with its rectangle.
    options : MosaicOptions
        The settings, with a preset's limits fitted to the leaves.
    request : MatchRequest
        A request of the first level matched (its ``library`` is the tiles in use).
    assignment : Assignment or None
        The repetition-limited assignment over every leaf, when limits were set.
    """

    leaves: Leaves
    placements: Placements
    options: MosaicOptions
    request: MatchRequest
    assignment: Assignment | None


def match_adaptive(
    grid: Grid, library: TileLibrary, options: MosaicOptions, matcher: Matcher,
    target: str | None = None, show_progress: bool = False,
) -> AdaptiveMatch:
    """Split the grid's cells (:func:`split_cells`) and give every leaf a tile.

    Parameters
    ----------
    grid : Grid
        The uniform grid.
    library : TileLibrary
        The whole library (``options.limit`` applies).
    options : MosaicOptions
        The settings (``adaptive`` > 0).
    matcher : Matcher
        The matcher for the settings (used level by level without limits).
    target : str, optional
        Path of the target, recorded in the placements.
    show_progress : bool
        Draw progress bars.

    Raises
    ------
    OptionError
        When the sizes do not halve (``adaptive``), or ``min_uses`` is set.
    """
    from .match import MatchRequest
    from .match._assign import MinimumUsesError
    from .match._capped import fit_limits, with_spacing_giving_way
    from .match._registry import matcher_for_limits

    check_adaptive(options)
    if options.min_uses:
        raise MinimumUsesError("{adaptive} does not combine with {min_uses} {low} yet",
                               low=options.min_uses)
    leaves = split_cells(grid, options.adaptive, options.detail)
    # The plan's memory check counted the level-0 cells; split, they may be 4^DEPTH times as
    # many, each with its own candidates (a MemoryError or the kernel's killer, minutes in).
    check_leaves_memory(leaves, len(grid), options)
    tile_count = len(library.limit(options.limit))
    options = fit_limits(options, len(leaves), tile_count, grid.rows, grid.cols)
    levels = []
    for level in np.unique(leaves.level).tolist():
        index, cells = leaf_cells(grid, leaves, level)
        levels.append((level, index, Grid(1, len(index), grid.cell_px >> level, 0, 0, cells,
                                          grid.cell_height >> level)))

    def requests(options: MosaicOptions) -> list[tuple[np.ndarray, MatchRequest]]:
        return [(index, MatchRequest(level_grid, library, level_options(options, level),
                                     show_progress)) for level, index, level_grid in levels]

    assignment = None
    if options.repetition_limited:
        def attempt(options: MosaicOptions) -> tuple[list, list, Assignment]:
            parts = requests(options)
            return (parts, *_assign_leaves(parts, leaves, options))

        (parts, results, assignment), options = with_spacing_giving_way(options, attempt)
    else:
        parts = requests(options)
        # Limits fitted away: the matcher that the recorded settings would choose.
        fitted = matcher_for_limits(matcher, options)
        results = [fitted.match(request) for _, request in parts]
    placements = _placements(parts, results, leaves, options, grid, target)
    return AdaptiveMatch(leaves, placements, options, parts[0][1], assignment)


class _LevelSearch:
    """The library searches of every level as one search over all leaves (their order)."""

    def __init__(self, searches: list[Any], part_of: np.ndarray, local: np.ndarray) -> None:
        self.searches = searches
        self.part_of = part_of
        self.local = local
        self.tile_count = searches[0].tile_count
        scales = {search.scale for search in searches}
        if len(scales) != 1:
            raise ValueError(f"levels search in different units: {sorted(scales)}")
        self.scale = scales.pop()

    def _split(self, cells: np.ndarray) -> list[tuple[int, np.ndarray]]:
        cells = np.asarray(cells, np.int64)
        return [(part, np.flatnonzero(self.part_of[cells] == part))
                for part in range(len(self.searches))]

    def nearest(self, cells: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._gather(cells, k, lambda search, local, where: search.nearest(local, k))

    def below(self, cells: np.ndarray, price: np.ndarray, limit: np.ndarray, k: int,
              upper: np.ndarray | None = None, among: np.ndarray | None = None,
              ) -> tuple[np.ndarray, np.ndarray]:
        # The bounds are per cell, as the limits: each size's search starts from its cells'.
        return self._gather(cells, k, lambda search, local, where: search.below(
            local, price, np.asarray(limit)[where], k,
            upper=None if upper is None else np.asarray(upper)[where], among=among))

    def _gather(self, cells: np.ndarray, k: int, call: Any) -> tuple[np.ndarray, np.ndarray]:
        cells = np.asarray(cells, np.int64)
        tiles = np.full((len(cells), k), -1, np.int64)
        distances: np.ndarray | None = None
        for part, where in self._split(cells):
            if not len(where):
                continue
            found, found_distances = call(self.searches[part], self.local[cells[where]], where)
            if distances is None:
                distances = np.full((len(cells), k), np.iinfo(np.int64).max,
                                    found_distances.dtype)
            tiles[where, :found.shape[1]] = found
            distances[where, :found.shape[1]] = found_distances
        if distances is None:
            distances = np.full((len(cells), k), np.iinfo(np.int64).max, np.int64)
        return tiles, distances

    def pairs(self, cells: np.ndarray, tiles: np.ndarray) -> np.ndarray:
        cells = np.asarray(cells, np.int64)
        out = np.zeros(len(cells), np.int64)
        for part, where in self._split(cells):
            if len(where):
                out[where] = self.searches[part].pairs(self.local[cells[where]],
                                                       np.asarray(tiles)[where])
        return out


def _assign_leaves(
    parts: list[tuple[np.ndarray, MatchRequest]], leaves: Leaves, options: MosaicOptions
) -> tuple[list[MatchResult], Assignment]:
    """One repetition-limited assignment over the leaves of every level."""
    from .match import MatchResult
    from .match._assign import assign_tiles, check_feasible, spacing_binds
    from .match._capped import (
        FULL_FIRST_CANDIDATES,
        WARM_ONLY,
        LibrarySearch,
        _by_cell,
        first_candidates,
        warm_grid_cap,
    )

    request = parts[0][1]
    count, tile_count = len(leaves), len(request.library)
    rows, cols = leaves.rows, leaves.cols
    max_uses, min_spacing = options.max_uses, options.min_spacing
    # check_feasible counts a D x D block and the lone cells of a uniform grid; small
    # leaves pack more of both, which the spacing rounds would otherwise find in vain.
    # The leaves' count first: the grid's, said first, named fewer tiles than they need
    # (13, then 16 once 13 were given, on a 7 x 7 grid split whole at spacing 2).
    check_leaves_feasible(leaves, tile_count, max_uses, min_spacing)
    check_feasible(count, tile_count, max_uses, rows, cols, min_spacing)
    part_of = np.empty(count, np.int64)
    local = np.empty(count, np.int64)
    for part, (index, _) in enumerate(parts):
        part_of[index] = part
        local[index] = np.arange(len(index))
    searches = [LibrarySearch(level_request) for _, level_request in parts]
    search = _LevelSearch(searches, part_of, local)
    # The first lists as the uniform grid's matcher draws them (CappedMatcher.match): where
    # the leaves need a fair share of the library's uses, each lists its tiles of least
    # distance plus the estimated final prices. With its nearest tiles alone, a short
    # library's crowds reached into it a little further each pricing round (3,000 photos
    # on 30,354 leaves: 22 rounds, 227 s).
    warm_cap = warm_grid_cap(count, tile_count, rows, cols, max_uses, min_spacing)
    warm = None
    if warm_cap is not None and options.assign == "optimal":
        warm = _warm_leaves(parts, leaves, searches[0], search, warm_cap)
    nearest = (warm is None or not WARM_ONLY
               or spacing_binds(rows, cols, max_uses, min_spacing))
    if warm is not None and not nearest:
        tiles, distances = _by_cell(*warm, count)
        warm = None
    else:
        first = FULL_FIRST_CANDIDATES if warm is not None else first_candidates(
            count, tile_count, rows, cols, max_uses, min_spacing)
        tiles, distances = search.nearest(np.arange(count), first)
    assignment = assign_tiles(
        tiles, distances, rows, cols, max_uses=max_uses, min_spacing=min_spacing,
        method=options.assign, search=search, show_progress=request.show_progress,
        layout=leaves.layout(), extra=warm, nearest=nearest,
    )
    if search.scale != 1:
        assignment = dataclasses.replace(
            assignment, distance=assignment.distance / search.scale,
            objective=assignment.objective / search.scale,
            lower_bound=assignment.lower_bound / search.scale)
    results = []
    for (index, _), level_search in zip(parts, searches, strict=True):
        results.append(MatchResult(level_search.candidate_of(assignment.tile[index]),
                                   assignment.distance[index]))
    return results, assignment


def _warm_leaves(
    parts: list[tuple[np.ndarray, MatchRequest]], leaves: Leaves, shallow: LibrarySearch,
    search: _LevelSearch, cap: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Each leaf's warm tiles (:func:`~mosaicist.match._capped.warm_candidates`), or None.

    The prices are estimated for the leaves of every size at once, as their
    uses are counted together, in one space: the bound's space of the
    shallowest level (``parts[0]``, searched by ``shallow``), whose blocks
    are the finest. A deeper leaf is placed there scaled up by pixel
    replication to that level's cell size, which it is compared as exactly
    as at its own size (replication twice is replication once). The tiles
    chosen are measured exactly (``search.pairs``, at each leaf's own level).
    None where the estimate does not apply (transforms, no Numba).
    """
    from .colour import encode
    from .match._capped import WARM_CANDIDATES, warm_candidates
    from .match._exact import CellTerms, cell_terms

    request = parts[0][1]
    features = request.features
    if (WARM_CANDIDATES < 1 or any(level_request.variants != 1 for _, level_request in parts)
            or len(features.order) != search.tile_count):
        return None  # checked before the leaves are scaled (warm_candidates checks again)
    geometry, metric = request.geometry, request.options.metric
    base = int(leaves.level[parts[0][0][0]])
    count = len(leaves)
    bound_rows: np.ndarray | None = None
    sums = np.zeros((count, 3), np.int64)
    for part, (index, level_request) in enumerate(parts):
        if part == 0:
            terms = shallow.cell_terms()
            rows, part_sums = terms.bound_rows, terms.sums
        else:
            factor = 1 << (int(leaves.level[index[0]]) - base)
            cells = level_request.grid.cells
            # Scaled up a block of leaves at a time: the copies stay a few megabytes.
            block = max(1, _CHUNK_PIXELS // (cells.shape[1] * cells.shape[2] * factor * factor))
            found = []
            for start in range(0, len(cells), block):
                scaled = np.asarray(cells[start:start + block]).repeat(factor, axis=1).repeat(
                    factor, axis=2)
                found.append(cell_terms(encode(geometry.cell_vectors(scaled), metric),
                                        geometry, features))
            rows = np.concatenate([terms.bound_rows for terms in found])
            part_sums = np.concatenate([terms.sums for terms in found])
        if bound_rows is None:
            bound_rows = np.zeros((count, rows.shape[1]), rows.dtype)
        bound_rows[index] = rows
        sums[index] = part_sums
    assert bound_rows is not None
    # warm_points reads the bound rows and the channel sums only.
    empty = np.zeros(0, np.int64)
    return warm_candidates(
        request, search, cap,
        CellTerms(bound_rows, empty, empty.reshape(0, 0), sums, empty.astype(float)))


def _placements(
    parts: list[tuple[np.ndarray, MatchRequest]], results: list[MatchResult], leaves: Leaves,
    options: MosaicOptions, grid: Grid, target: str | None,
) -> Placements:
    """Every leaf's tile, transform, tint, gain and chroma, as for a uniform grid, by level."""
    from .match._contrast import finish
    from .pipeline import scored_means, tint_shifts
    from .placements import Placements
    from .sources import source_spec

    count = len(leaves)
    tile = np.zeros(count, np.int64)
    transform = np.zeros(count, np.int8)
    shifts = np.zeros((count, 3))
    gain = np.ones((count, 3))
    chroma = np.ones(count)
    # Each leaf's tile mean as it was scored (its full thumbnail's), which a reduced tile
    # is drawn about: its own mean is off it by the reduction's rounding.
    mean = np.zeros((count, 3))
    distances = []
    for (index, request), result in zip(parts, results, strict=True):
        result = finish(request, result)
        variants = request.variants
        tile[index] = result.tile // variants
        transform[index] = np.asarray(request.transforms, np.int8)[result.tile % variants]
        mean[index] = scored_means(request, result.tile)
        shifted = tint_shifts(request, result)
        if shifted is not None:
            shifts[index] = shifted
        if result.gain is not None:
            gain[index] = result.gain
        if result.chroma is not None:
            chroma[index] = result.chroma
        distances.append((index, result.distance))
    kind = np.result_type(*(distance.dtype for _, distance in distances))
    distance = np.zeros(count, kind)
    for index, values in distances:
        distance[index] = values
    library = parts[0][1].library
    return Placements(
        grid.rows, grid.cols, tile, distance,
        [library.source_ids[position] for position in tile.tolist()], transform, shifts,
        gain=gain, chroma=chroma, options=options, source=source_spec(library.source),
        mean=mean if (shifts != 0).any() or (gain != 1).any() or (chroma != 1).any() else None,
        # As make's uniform placements: "~/x.png" is the home's, not a folder "~" here.
        target=None if target is None else str(target_path(target).resolve()),
        crop=(grid.left, grid.top), rect=leaves.rect(),
        # As make's uniform placements record them: without, render could not say that a
        # photo had changed since an adaptive make.
        hashes=None if library.source.local_root() is None else library.content_hashes,
    )


#: Sweep passes of :func:`_closest_centres` before a k-d tree finishes the groups left.
SWEEP_PASSES = 128


def leaf_repetition(tile: np.ndarray, rect: np.ndarray) -> dict[str, Any]:
    """Repetition measures of leaves: distinct tiles, most uses, closest repeat.

    ``closest_repeat`` is the least Chebyshev distance between the centres
    of two leaves holding the same tile, in level-0 cells (the spacing's
    measure), or None when no tile repeats. It is exact, found by a sweep
    (see :func:`_closest_centres`) whose work grows with the leaves of a
    tile near each other, not with every pair of them.

    Parameters
    ----------
    tile : numpy.ndarray
        ``(N,)`` tile of each leaf.
    rect : numpy.ndarray
        ``(N, 4)`` ``(x, y, w, h)`` of each leaf in level-0 cells: squares
        that do not overlap, as the leaves of a grid (:meth:`Leaves.rect`).

    Returns
    -------
    dict
        ``distinct_tiles``, ``max_uses`` and ``closest_repeat``.
    """
    tile = np.asarray(tile, np.int64)
    _, inverse, counts = np.unique(tile, return_inverse=True, return_counts=True)
    result: dict[str, Any] = {"distinct_tiles": int(len(counts)),
                              "max_uses": int(counts.max(initial=0)), "closest_repeat": None}
    if counts.max(initial=0) < 2:
        return result
    rect = np.asarray(rect, np.float64).reshape(-1, 4)
    repeated = np.flatnonzero(counts[inverse.ravel()] > 1)
    centre = rect[repeated, :2] + rect[repeated, 2:] / 2
    # Two squares that do not overlap lie apart along an axis by half their
    # sides' sum, so no pair is closer than the smallest side.
    floor = float(rect[repeated, 2].min())
    result["closest_repeat"], _ = _closest_centres(inverse.ravel()[repeated], centre, floor)
    return result


def _closest_centres(group: np.ndarray, centre: np.ndarray, floor: float
                     ) -> tuple[float, int]:
    """The least Chebyshev distance between two ``centre`` points of one ``group``.

    Every group has two points or more. A sweep along the axis the points
    spread over most: the points sorted by (group, that coordinate), each
    one is compared with the next ones of its group until they are
    ``best`` or more ahead along the axis (no later one can then be
    closer), ``best`` shrinking as pairs are found. Comparing each point
    with every later one of its group, as before, took time in proportion
    to the points times the most uses of a tile: a minute for 100,000
    leaves of 20 tiles, far longer than their matching. It stops at
    ``floor``, a distance no pair can be under. Where many points of a
    group share a coordinate along the axis (a tile down whole columns),
    the sweep would pass once per point of the longest such line (22 s for
    a million leaves of 50 tiles in columns): past :data:`SWEEP_PASSES`
    passes, the groups still open are finished by a k-d tree (each point's
    nearest other point, the groups kept apart by an offset across; 3 s
    for a million points). Returned with the sweep's passes past the
    successors (its work: each pass is one vector step).
    """
    spread = centre.max(axis=0) - centre.min(axis=0)
    along_axis = 0 if spread[0] >= spread[1] else 1
    order = np.lexsort((centre[:, 1 - along_axis], centre[:, along_axis], group))
    group = group[order]
    along, across = centre[order, along_axis], centre[order, 1 - along_axis]
    count = len(group)
    # The successors in that order give a distance that some pair reaches.
    alive = np.flatnonzero(group[1:] == group[:-1])
    best = float(np.maximum(along[alive + 1] - along[alive],
                            np.abs(across[alive + 1] - across[alive])).min())
    step = 2
    while alive.size and best > floor:
        if step - 2 >= SWEEP_PASSES:
            return min(best, _closest_by_tree(group, along, across, group[alive])), step - 2
        partner = alive + step
        held = np.minimum(partner, count - 1)
        # Sorted along the axis within a group: once a partner is best ahead,
        # every later one is too.
        near = ((partner < count) & (group[held] == group[alive])
                & (along[held] - along[alive] < best))
        alive, partner = alive[near], partner[near]
        if alive.size:
            best = min(best, float(np.maximum(along[partner] - along[alive],
                                              np.abs(across[partner] - across[alive])).min()))
        step += 1
    return best, step - 2


def _closest_by_tree(group: np.ndarray, along: np.ndarray, across: np.ndarray,
                     open_groups: np.ndarray) -> float:
    """The least Chebyshev distance within the groups ``open_groups``, by a k-d tree.

    The points of each group are moved across by the group's number times
    more than the points' whole extent, so that a point's nearest other
    point is one of its own group (each has two or more). Centres are
    multiples of a power of two under 2^53 after the move, so distances
    are exact.
    """
    from scipy.spatial import cKDTree

    keep = np.isin(group, open_groups)
    along, across, group = along[keep], across[keep], group[keep]
    # Groups renumbered 0.. so that the offsets stay small.
    _, rank = np.unique(group, return_inverse=True)
    extent = float(np.ptp(along)) + float(np.ptp(across)) + 1.0
    points = np.column_stack((along, across + rank.ravel() * (2.0 * extent)))
    distance, _ = cKDTree(points).query(points, k=2, p=np.inf)
    return float(distance[:, 1].min())
