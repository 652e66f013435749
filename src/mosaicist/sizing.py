"""Sizes that people think in: a number of cells, a print size and its resolution.

A mosaic's sizes are set in pixels (``cell_px`` target pixels per cell
width, ``tile_px`` output pixels per tile width; heights follow the
``aspect``, see :mod:`mosaicist.aspect`). People think in other terms: "about
2,000 photos", "a 60 x 40 cm print at 150 dpi". Three settings say that, and
:func:`plan_sizes` turns them into pixels, exactly and deterministically:

``cells`` (about N cells)
    The cell width ``c`` (from 1 to 1024 target pixels, and its height at
    most 1024 too) is the one whose grid, ``cols = floor(W / c)`` by
    ``rows = floor(H / height_for(c))`` on the target (after the print crop
    below), has a count ``cols * rows`` nearest to N; between widths equally
    near, the widest cell wins (it covers the most of the target). N must lie
    between the fewest cells that cells of at most 1024 px a side give and the
    most that 1 px cells give, else
    :class:`~mosaicist.errors.OptionError`. ``cells`` replaces ``cell_px``.

``print_size`` (``60x40cm``, ``24x36in``, ``500x700mm``; ``60x40`` is cm) and ``dpi`` (default 300)
    The print is ``round(W * dpi)`` by ``round(H * dpi)`` pixels, W and H in
    inches (1 in = 2.54 cm); 60 x 40 cm at 150 dpi is 3543 x 2362 px.

    1. When the target's shape differs from the print's, the target is first
       centre-cropped to the print's shape (the largest centred window of
       ``W:H``, its other side rounded to the nearest pixel), so the print is
       filled edge to edge; nothing is stretched.
    2. The grid is cut from that crop as always, by ``cells`` if given, else
       by ``cell_px``.
    3. The tile width ``t`` (1 to 1024 px; its height follows the aspect and
       is at most 1024 px too) is the one whose output, ``cols * t`` by
       ``rows * height_for(t)``, is nearest to the print's pixels: the larger
       of the two sides' errors,
       ``|cols * t - print width|`` and ``|rows * height_for(t) - print
       height|``, is smallest; between equally near widths, the larger tile
       wins (the print is trimmed a hair rather than left with a margin).
       ``print_size`` chooses ``tile_px``. The grid keeps whole cells of the
       crop, so its shape may differ from the print's by up to a cell each
       way, and widths come in steps of ``cols`` pixels: with large tiles
       (more pixels than cells across) each side is typically within one
       tile of the print's, with a coarse grid (a row or two) or tiny tiles
       it can be further. The plan says exactly how near
       (:attr:`SizePlan.print_error`), and :meth:`SizePlan.print_warning`
       speaks up when a side is off by more than
       :data:`PRINT_TOLERANCE` (1%).

    With 24 cells, a 3:2 target and square cells (6 x 4), 60 x 40 cm at 150
    dpi gives 591 px tiles and a 3546 x 2364 px output: 60.05 x 40.03 cm.

``dpi`` alone
    Only records the resolution in the output file (PNG ``pHYs``, JPEG JFIF
    density, TIFF ``XResolution``/``YResolution`` in inches, WebP EXIF);
    sizes are unchanged.

At an aspect other than 1:1 the cell's and the tile's heights are each
rounded from their widths, so their shapes may differ (16 x 11 cells and
32 x 21 tiles at 3:2: the picture comes out 4.8% wider than the target);
:meth:`SizePlan.shape_warning` speaks up when they differ by more than
:data:`SHAPE_TOLERANCE` (1%), naming widths that keep the shape exactly.

Settings that a plan chooses may also be given if they agree with it (a
settings block read back from a report does); a given ``cell_px`` that
``cells`` would change, or a given ``tile_px`` that ``print_size`` would
change, is an :class:`~mosaicist.errors.OptionError`.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

import numpy as np

from ._choices import DEFAULT_DPI, DPI_RANGE
from .aspect import aspect_pair, format_aspect, height_for, parse_aspect
from .errors import MosaicistError, OptionError, counted

if TYPE_CHECKING:
    from .options import MosaicOptions
    from .sources import TileSource

#: Units of a print size, in inches per unit.
PRINT_UNITS = {"cm": Fraction(50, 127), "mm": Fraction(5, 127), "in": Fraction(1)}
#: The unit of a print size written without one.
DEFAULT_PRINT_UNIT = "cm"
#: Longest print side: 100 m (larger walls are several prints).
MOST_PRINT_INCHES = Fraction(10_000) * PRINT_UNITS["cm"]
#: Most characters of a print's side, leading zeros aside: 100 m in micrometres has 9
#: digits; longer sides are noise that would fill every message naming the print.
MOST_PRINT_DIGITS = 20
#: Largest fraction of a print's side the output may miss it by without a warning.
PRINT_TOLERANCE = 0.01
#: Largest difference between the tiles' shape and the cells' (each height rounded from its
#: width apart) without a warning: the picture is stretched by that much against the target.
SHAPE_TOLERANCE = 0.01
#: Originals sampled (evenly over the tiles placed) to judge whether they are large enough.
ORIGINALS_SAMPLE = 16

_UNIT_SPELLINGS = {"cm": "cm", "mm": "mm", "in": "in", "inch": "in", "inches": "in", '"': "in"}
_NUMBER = r"(\d+(?:[.,]\d+)?|[.,]\d+)"
_PRINT_SIZE = re.compile(
    rf"^\s*{_NUMBER}\s*[x×*]\s*{_NUMBER}\s*(cm|mm|inches|inch|in|\")?\s*$", re.IGNORECASE
)


class PrintSize(NamedTuple):
    """A print's size: two sides in a unit.

    Attributes
    ----------
    width, height : decimal.Decimal
        The sides, as written (``60``, ``29.7``).
    unit : str
        ``cm``, ``mm`` or ``in``.
    """

    width: Decimal
    height: Decimal
    unit: str

    def inches(self) -> tuple[Fraction, Fraction]:
        """Return the sides in inches, exactly."""
        per_unit = PRINT_UNITS[self.unit]
        return Fraction(self.width) * per_unit, Fraction(self.height) * per_unit

    def pixels(self, dpi: int) -> tuple[int, int]:
        """Return the print's ``(width, height)`` in pixels at ``dpi``, each rounded half up.

        Examples
        --------
        >>> parse_print_size("60x40cm").pixels(150)
        (3543, 2362)
        """
        return tuple(_round_half_up(side * dpi) for side in self.inches())  # type: ignore[return-value]

    def __str__(self) -> str:
        return f"{_decimal_text(self.width)}x{_decimal_text(self.height)}{self.unit}"


def _decimal_text(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _round_half_up(value: Fraction) -> int:
    return int((value + Fraction(1, 2)).__floor__())


def parse_print_size(text: str) -> PrintSize:
    """Read a print size: ``"60x40cm"``, ``"24x36in"``, ``"500 x 700 mm"``, ``"29.7x42"`` (cm).

    Width comes first. Decimals may use a point or a comma; ``x``, ``×`` or
    ``*`` separate the sides; the unit is ``cm`` (the default), ``mm`` or
    ``in`` (also ``inch``, ``inches``, ``"``), in any case.

    Raises
    ------
    OptionError
        Naming ``print_size``, for other text, a side that is zero, a side
        over 100 m, or one of over :data:`MOST_PRINT_DIGITS` digits.

    Examples
    --------
    >>> str(parse_print_size("60x40")), str(parse_print_size("8.5 X 11 inches"))
    ('60x40cm', '8.5x11in')
    """
    from .options import shown_value

    found = _PRINT_SIZE.match(text) if isinstance(text, str) else None
    if found is None:
        # Shown short: a megabyte of text, or an int too long to print, is still one line.
        raise OptionError("{print_size} must be WIDTHxHEIGHT in cm (the default), mm or in "
                          "(e.g. 60x40cm, 24x36in), got {value}", value=shown_value(text))
    if any(len(found.group(index).lstrip("0")) > MOST_PRINT_DIGITS for index in (1, 2)):
        raise OptionError("{print_size} sides must have at most {most} digits, got {value}",
                          most=MOST_PRINT_DIGITS, value=shown_value(text))
    width, height = (Decimal(found.group(index).replace(",", ".")) for index in (1, 2))
    unit = _UNIT_SPELLINGS[(found.group(3) or DEFAULT_PRINT_UNIT).lower()]
    size = PrintSize(width, height, unit)
    if width == 0 or height == 0:
        raise OptionError("{print_size} must have sides above zero, got {value}",
                          value=shown_value(text))
    if max(size.inches()) > MOST_PRINT_INCHES:
        raise OptionError("{print_size} {value} has a side over 100 m",
                          value=shown_value(str(size)).strip("'"))
    return size


def as_print_size(value: object) -> PrintSize:
    """``value`` as a checked :class:`PrintSize`: a text (:func:`parse_print_size`) or one.

    A :class:`PrintSize` made by hand is held to the same rules as a text
    (sides above zero and up to 100 m, a known unit); it is read again from
    its canonical spelling.

    Parameters
    ----------
    value : object
        ``"60x40cm"``, or a :class:`PrintSize`.

    Returns
    -------
    PrintSize
        The print size, as :func:`parse_print_size` reads its text.

    Raises
    ------
    OptionError
        Naming ``print_size``, for anything else and for sides or units a
        text could not have (a negative or NaN side, a unit ``ft``).
    """
    if isinstance(value, PrintSize):
        if not (isinstance(value.width, Decimal) and isinstance(value.height, Decimal)
                and value.width.is_finite() and value.height.is_finite()
                and value.unit in PRINT_UNITS):
            from .options import shown_value

            raise OptionError("{print_size} must have two finite decimal sides and a unit "
                              "cm, mm or in, got {value}", value=shown_value(tuple(value)))
        return parse_print_size(str(value))
    return parse_print_size(value)  # type: ignore[arg-type]


def format_print_size(size: PrintSize) -> str:
    """``PrintSize(60, 40, "cm")`` -> ``"60x40cm"`` (the canonical spelling)."""
    return str(size)


@dataclass(frozen=True)
class SizePlan:
    """The pixel sizes that a target, a cell count and a print size come to.

    Attributes
    ----------
    target_size : tuple of int
        ``(width, height)`` of the target.
    crop : tuple of int
        ``(left, top, width, height)`` of the window the grid is cut from:
        the whole target, or its centre crop to the print's shape.
    cols, rows : int
        The grid.
    cell_px, cell_height : int
        A cell's width and height in target pixels.
    tile_px, tile_height : int
        A tile's width and height in output pixels.
    aspect : str
        Shape of cells and tiles (``"3:2"``).
    cells : int or None
        The number of cells asked for, if any.
    print_size : PrintSize or None
        The print asked for, if any.
    dpi : int or None
        The resolution recorded in the output (and the print's).
    """

    target_size: tuple[int, int]
    crop: tuple[int, int, int, int]
    cols: int
    rows: int
    cell_px: int
    cell_height: int
    tile_px: int
    tile_height: int
    aspect: str = "1:1"
    cells: int | None = None
    print_size: PrintSize | None = None
    dpi: int | None = None

    @property
    def output_size(self) -> tuple[int, int]:
        """``(cols * tile_px, rows * tile_height)``: the picture's size in pixels."""
        return self.cols * self.tile_px, self.rows * self.tile_height

    @property
    def grid_crop(self) -> tuple[int, int, int, int]:
        """``(left, top, width, height)`` of the cells' window in the whole target.

        The grid is centre-cut from :attr:`crop` as from any target
        (:func:`~mosaicist.grid.make_grid`): its offsets are the crop's plus
        half of what whole cells leave of it, rounded down; the mosaic's
        ``grid.left``/``grid.top`` and a placements file's ``crop`` are these.
        """
        left, top, width, height = self.crop
        grid_width, grid_height = self.cols * self.cell_px, self.rows * self.cell_height
        return (left + (width - grid_width) // 2, top + (height - grid_height) // 2,
                grid_width, grid_height)

    @property
    def cropped(self) -> bool:
        """Whether the target was cropped to the print's shape."""
        return self.crop[2:] != self.target_size

    @property
    def print_pixels(self) -> tuple[int, int] | None:
        """The print's ``(width, height)`` in pixels at :attr:`dpi`, when a print was asked for."""
        if self.print_size is None or self.dpi is None:
            return None
        return self.print_size.pixels(self.dpi)

    @property
    def print_error(self) -> tuple[int, int] | None:
        """Output minus print pixels, ``(width, height)``: positive is larger than the print."""
        wanted = self.print_pixels
        if wanted is None:
            return None
        width, height = self.output_size
        return width - wanted[0], height - wanted[1]

    def print_warning(self) -> str | None:
        """A warning when an output side misses the print's by over :data:`PRINT_TOLERANCE`."""
        wanted, error = self.print_pixels, self.print_error
        if wanted is None or error is None:
            return None
        off = max(abs(error[0]) / wanted[0], abs(error[1]) / wanted[1])
        if off <= PRINT_TOLERANCE:
            return None
        width, height = self.output_size
        return (f"the output, {width}x{height} px, is {100 * off:.1f}% off the print's "
                f"{wanted[0]}x{wanted[1]} px: {self.cols}x{self.rows} cells of "
                f"{self.tile_px}x{self.tile_height} px come no nearer; a grid of another "
                "number of cells may")

    @property
    def shape_error(self) -> float:
        """How much wider for its height a tile is than a cell: ``0.048`` is 4.8% wider.

        Cell and tile heights are each rounded from their widths
        (:func:`~mosaicist.aspect.height_for`), so at an aspect other than
        1:1 their shapes may differ, and the picture is then stretched against
        the target by that much (negative: the tiles are narrower, the
        picture taller). Zero for square cells, and whenever both widths are
        multiples of the aspect's width.
        """
        return (self.tile_px * self.cell_height) / (self.tile_height * self.cell_px) - 1

    def shape_warning(self) -> str | None:
        """A warning when tiles and cells differ in shape by over :data:`SHAPE_TOLERANCE`.

        It names the widths nearest to the ones used that keep the shape
        exactly: multiples of the aspect's width, whose heights need no
        rounding.
        """
        from .options import CELL_PX_RANGE, TILE_PX_RANGE

        ratio = 1 + self.shape_error
        off = max(ratio, 1 / ratio) - 1
        if off <= SHAPE_TOLERANCE:
            return None
        step = parse_aspect(self.aspect)[0]
        suggested = []
        for name, width, most in (("cells", self.cell_px, CELL_PX_RANGE[1]),
                                  ("tiles", self.tile_px, TILE_PX_RANGE[1])):
            nearest = max(step, (width + step // 2) // step * step)
            # Within the limit on both sides: at 5:6, 855 px is 1026 px tall.
            if nearest > most or height_for(nearest, parse_aspect(self.aspect)) > most:
                nearest -= step
            if width % step and step <= nearest <= most:
                suggested.append(f"{name} of {nearest} px")
        advice = (f"; widths that are multiples of {step} keep the shape "
                  f"({', '.join(suggested)})") if suggested else ""
        return (f"tiles of {self.tile_px}x{self.tile_height} px are not the shape of cells of "
                f"{self.cell_px}x{self.cell_height} target pixels (each height is rounded "
                f"from its width at {self.aspect}): the picture comes out {100 * off:.1f}% "
                f"{'wider' if ratio > 1 else 'taller'} than the target{advice}")

    def printed_size(self) -> tuple[float, float] | None:
        """The output's sides at :attr:`dpi` in the print's unit (else inches); None without dpi."""
        if self.dpi is None:
            return None
        per_unit = PRINT_UNITS[self.print_size.unit if self.print_size else "in"]
        return tuple(float(Fraction(side, self.dpi) / per_unit)  # type: ignore[return-value]
                     for side in self.output_size)

    def describe(self) -> str:
        """One line for the user: the print, the grid, the tiles, the output and any crop."""
        width, height = self.output_size
        text = (f"{self.cols}x{self.rows} cells of {self.tile_px}x{self.tile_height} px, "
                f"{width}x{height} px")
        printed = self.printed_size()
        if self.print_size is not None and printed is not None:
            wanted = self.print_pixels
            assert wanted is not None
            unit = self.print_size.unit
            text = (f"print {self.print_size} at {self.dpi} dpi ({wanted[0]}x{wanted[1]} px): "
                    f"{text} ({printed[0]:.2f}x{printed[1]:.2f} {unit})")
        if self.cropped:
            left, top, crop_width, crop_height = self.crop
            text += (f"; target cropped to {crop_width}x{crop_height} at ({left}, {top}) "
                     f"from {self.target_size[0]}x{self.target_size[1]} to the print's shape")
        return text

    def report(self) -> dict[str, Any]:
        """Return the plan as a JSON-ready dictionary (the report's ``sizes``).

        ``crop`` is the window the grid is cut from (the target's crop to a
        print's shape, else the whole target), ``grid`` the cells' own window
        in the target (:attr:`grid_crop`).
        """
        left, top, width, height = self.crop
        printed = self.printed_size()
        output_width, output_height = self.output_size
        return {
            "cells_asked": self.cells,
            "crop": {"left": left, "top": top, "width": width, "height": height},
            "cropped": self.cropped,
            "grid": dict(zip(("left", "top", "width", "height"), self.grid_crop, strict=True)),
            "cell": {"width": self.cell_px, "height": self.cell_height},
            "tile": {"width": self.tile_px, "height": self.tile_height},
            "output": {"width": output_width, "height": output_height},
            "dpi": self.dpi,
            "print": None if self.print_size is None else {
                "size": str(self.print_size),
                "pixels": dict(zip(("width", "height"), self.print_pixels or (), strict=True)),
                "error_px": dict(zip(("width", "height"), self.print_error or (), strict=True)),
                "printed": [round(side, 3) for side in printed or ()],
            },
        }


def print_crop(
    target_size: tuple[int, int], print_size: str | PrintSize
) -> tuple[int, int, int, int]:
    """Return ``(left, top, width, height)``: the largest centred window of the print's shape.

    The side that is cut is rounded to the nearest pixel (halves up); the
    offsets are ``floor((W - width) / 2)`` and ``floor((H - height) / 2)``.

    Examples
    --------
    >>> print_crop((400, 200), parse_print_size("60x40cm"))
    (50, 0, 300, 200)
    >>> print_crop((300, 200), parse_print_size("60x40cm"))
    (0, 0, 300, 200)
    """
    print_size = as_print_size(print_size)
    width, height = target_size
    print_width, print_height = print_size.inches()
    if width * print_height > height * print_width:
        width = min(width, max(1, _round_half_up(height * print_width / print_height)))
    else:
        height = min(height, max(1, _round_half_up(width * print_height / print_width)))
    return ((target_size[0] - width) // 2, (target_size[1] - height) // 2, width, height)


def _target_sides(target_size: object, name: str) -> tuple[int, int]:
    """``(width, height)`` of a target as Python ints, or :class:`MosaicistError` naming it."""
    from .options import LARGEST_WHOLE, shown_value

    if (not isinstance(target_size, tuple | list) or len(target_size) != 2
            or not all(isinstance(side, int | np.integer) and not isinstance(side, bool)
                       for side in target_size)):
        raise MosaicistError(f"{name}: a target size must be two whole numbers (width, "
                             f"height), got {shown_value(target_size)}")
    width, height = (int(side) for side in target_size)
    # First: two negative sides multiply to a large number, and were called too large.
    if width < 1 or height < 1:
        raise MosaicistError(f"{name}: a {shown_value(width)}x{shown_value(height)} picture "
                             "has no pixels")
    if width * height > LARGEST_WHOLE:
        # Counts of cells are worked out in int64 (and such sides come from no picture).
        raise MosaicistError(f"{name}: a target of {shown_value(width)} by "
                             f"{shown_value(height)} pixels is too large to cut into cells")
    return width, height


def _heights(widths: np.ndarray, aspect: tuple[int, int]) -> np.ndarray:
    """:func:`~mosaicist.aspect.height_for` of many widths at once."""
    aspect_width, aspect_height = aspect
    return np.maximum(1, (2 * widths * aspect_height + aspect_width) // (2 * aspect_width))


def _halving(widths: np.ndarray, aspect: tuple[int, int], adaptive: int) -> np.ndarray:
    """Those of ``widths`` that, with their heights, divide by ``2^adaptive`` (all at depth 0)."""
    step = 1 << adaptive
    return widths[(widths % step == 0) & (_heights(widths, aspect) % step == 0)]


def _widths(side_range: tuple[int, int], aspect: tuple[int, int], adaptive: int) -> np.ndarray:
    """Widths a plan may choose: in ``side_range`` with their heights, halving ``adaptive`` times.

    The settings cap a cell's or a tile's height as they cap its width
    (``MosaicOptions`` refuses 1:16 cells 200 px wide: 3200 px tall), so a
    width chosen for a count or a print is one whose height stays within it.
    """
    widths = np.arange(side_range[0], side_range[1] + 1, dtype=np.int64)
    widths = widths[_heights(widths, aspect) <= side_range[1]]
    return _halving(widths, aspect, adaptive)


def _times(depth: int) -> str:
    """How often a side halves at adaptive ``depth``, in words: ``once``, ``2 times``."""
    return "once" if depth == 1 else f"{depth} times"


def _check_height(name: str, width: int, aspect: tuple[int, int], most: int) -> None:
    """Refuse a given width whose height at ``aspect`` is over ``most``, as the settings do."""
    height = height_for(width, aspect)
    if height > most:
        raise OptionError("{" + name + "} {value} at {aspect} {shape} is {height} pixels tall, "
                          "over the {most} a side may be", value=width,
                          shape=format_aspect(aspect), height=height, most=most)


def cell_px_for_cells(
    target_size: tuple[int, int], cells: int, aspect: str | tuple[int, int] = "1:1",
    adaptive: int = 0, *, name: str = "target", cropped: bool = False,
) -> int:
    """Return the cell width whose grid on the target has a count nearest to ``cells``.

    Every width from 1 to 1024 target pixels whose height is at most 1024 too
    is tried (the grid of a width ``c`` is ``floor(W / c)`` by
    ``floor(H / height_for(c))``); the nearest count wins, and between
    equally near counts the widest cell.

    Parameters
    ----------
    target_size : tuple of int
        ``(width, height)`` of the target (or of its crop).
    cells : int
        The number of cells wanted.
    aspect : str or tuple of int
        Shape of a cell (``"3:2"``).
    adaptive : int
        Depth of adaptive cells: only widths that, with their heights,
        divide by ``2^adaptive`` are tried (each level halves the cell).
    name : str
        The target's name, for messages.
    cropped : bool
        Whether ``target_size`` is the target's crop to a print's shape (so
        messages say so).

    Raises
    ------
    OptionError
        Naming ``cells``, when no width gives a count that near: ``cells``
        is above the count of the smallest cells, or below that of the
        largest; naming ``adaptive`` when no cell whose sides halve that many
        times fits the target.
    MosaicistError
        When not even the smallest cell fits the target.

    Examples
    --------
    >>> cell_px_for_cells((300, 200), 24)  # 6 x 4 cells of 50 px
    50
    >>> cell_px_for_cells((300, 200), 1)
    200
    """
    from .options import ADAPTIVE_RANGE, CELL_PX_RANGE, check_whole

    width, height = _target_sides(target_size, name)
    cells = check_whole("cells", cells, 1)
    ratio = aspect_pair(aspect)
    adaptive = check_whole("adaptive", adaptive, *ADAPTIVE_RANGE)
    widths = _widths(CELL_PX_RANGE, ratio, adaptive)
    counts = (width // widths) * (height // _heights(widths, ratio))
    usable = counts >= 1
    target = (f"its {width}x{height} crop to the print's shape" if cropped
              else f"{width}x{height} pixels")
    times = _times(adaptive)
    if not usable.any():
        smallest = int(widths.min())
        size = f"{smallest}x{height_for(smallest, ratio)}"
        if adaptive:
            # Not the target's fault alone: smaller cells would fit, but not halve so often.
            raise OptionError("{name}: {target} is smaller than one {size} cell, the smallest "
                              "that {adaptive} {depth} allows (its sides halve {times})",
                              name=name, target=target, size=size, depth=adaptive, times=times)
        raise OptionError("{name}: {target} is smaller than one {size} cell, the smallest "
                          "at {shape}; use another {aspect} or a larger target",
                          name=name, target=target, size=size, shape=format_aspect(ratio))
    widths, counts = widths[usable], counts[usable]
    most, fewest = int(counts.max()), int(counts.min())
    shape = f"{format_aspect(ratio)} " if ratio != (1, 1) else ""
    held = (f"the target's {width}x{height} crop to the print's shape" if cropped
            else f"a {width}x{height} target")
    # Only cells whose sides halve DEPTH times are tried: the same target holds other
    # counts without adaptive cells, so the message says which cells it counted.
    halving = (" in cells whose sides halve {times} ({adaptive} {depth})" if adaptive else "")
    if cells > most:
        raise OptionError("{cells} {value} is more than {held} holds" + halving + ": at most "
                          "{most} ({smallest} px wide)", value=cells, held=held,
                          most=counted(most, shape + "cell"), times=times, depth=adaptive,
                          smallest=int(widths[counts == most].min()))
    if cells < fewest:
        raise OptionError("{cells} {value} is fewer than {held} allows" + halving + ": at "
                          "least {fewest} ({largest} px wide, the largest)", value=cells,
                          held=held, fewest=counted(fewest, shape + "cell"), times=times,
                          depth=adaptive, largest=int(widths[counts == fewest].max()))
    distance = np.abs(counts - cells)
    return int(widths[distance == distance.min()].max())


def tile_px_for_print(
    cols: int, rows: int, print_size: str | PrintSize, dpi: int = DEFAULT_DPI,
    aspect: str | tuple[int, int] = "1:1", adaptive: int = 0,
) -> int:
    """Return the tile width that brings ``cols x rows`` tiles nearest to the print's pixels.

    Every width ``t`` from 1 to 1024 whose height is at most 1024 too is
    tried; the output ``cols * t`` by ``rows * height_for(t)`` is scored by
    the larger of its two sides' errors against :meth:`PrintSize.pixels`; the
    smallest score wins, and between equal scores the larger tile.

    Parameters
    ----------
    cols, rows : int
        The grid.
    print_size : str or PrintSize
        The print (``"60x40cm"``).
    dpi : int
        Its resolution.
    aspect : str or tuple of int
        Shape of a tile.
    adaptive : int
        Depth of adaptive cells: only widths that, with their heights,
        divide by ``2^adaptive`` are tried (each level halves the tile).

    Raises
    ------
    OptionError
        Naming ``print_size`` and ``dpi``, when the print has fewer pixels
        than cells across or down, or needs tiles over 1024 px a side; naming
        ``dpi``, ``aspect`` or ``adaptive``, for values they cannot take.
    ValueError
        When the grid has no cells (``cols`` or ``rows`` below 1, or not
        whole numbers).

    Examples
    --------
    >>> tile_px_for_print(6, 4, "60x40cm", 150)  # 3546 x 2364 for 3543 x 2362
    591
    """
    from .options import ADAPTIVE_RANGE, LARGEST_WHOLE, TILE_PX_RANGE, check_whole, shown_value

    print_size = as_print_size(print_size)
    dpi = check_whole("dpi", dpi, *DPI_RANGE, "dpi")
    ratio = aspect_pair(aspect)
    adaptive = check_whole("adaptive", adaptive, *ADAPTIVE_RANGE)
    if not all(isinstance(side, int | np.integer) and not isinstance(side, bool)
               for side in (cols, rows)):
        raise ValueError(f"a grid is whole numbers of cells, got {shown_value(cols)} by "
                         f"{shown_value(rows)}")
    cols, rows = int(cols), int(rows)
    if min(cols, rows) < 1:
        raise ValueError(f"a grid of {shown_value(cols)}x{shown_value(rows)} cells has none "
                         "to size tiles for")
    if max(cols, rows) > LARGEST_WHOLE:
        raise ValueError(f"a grid of {shown_value(cols)} by {shown_value(rows)} cells is too "
                         "large to size tiles for")
    print_width, print_height = print_size.pixels(dpi)
    if cols > print_width or rows > print_height:
        _refuse_small_print(print_size, dpi, cols, rows)
    widths = _widths(TILE_PX_RANGE, ratio, adaptive)
    if not len(widths):
        raise OptionError("{adaptive} {value} leaves no tile width up to {most} px whose height "
                          "at {aspect} {shape} halves {times}", value=adaptive,
                          most=TILE_PX_RANGE[1], shape=format_aspect(ratio),
                          times=_times(adaptive))
    heights = _heights(widths, ratio)
    errors = np.maximum(np.abs(cols * widths - print_width),
                        np.abs(rows * heights - print_height))
    best = int(widths[errors == errors.min()].max())
    best_height = height_for(best, ratio)
    if best == int(widths.max()) and (cols * best < print_width - best
                                     or rows * best_height < print_height - best_height):
        needed = max(-(-print_width // cols), -(-print_height // rows) * best // best_height)
        # At a tall or wide aspect the largest tile is bounded by its longer side: say both.
        square = ratio == (1, 1)
        raise OptionError("{print_size} {size} at {dpi} {dpi_value} needs tiles about {needed} "
                          "px wide for a grid of {cols}x{rows} cells, over the {most} px that "
                          "tiles may have" + ("" if square else " at {aspect} {shape}")
                          + "; use more cells or a lower {dpi}", size=str(print_size),
                          dpi_value=dpi, needed=f"{needed:,}", cols=cols, rows=rows,
                          most=f"{best:,}" if square else f"{best:,}x{best_height:,}",
                          shape=format_aspect(ratio))
    return best


def _scale_up(value: Fraction, digits: int = 3) -> Decimal:
    """``value`` rounded up to ``digits`` significant digits, as an exact decimal."""
    exponent = Decimal(value.numerator / value.denominator).adjusted() - digits + 1
    steps = math.ceil(value / Fraction(10) ** exponent)
    return Decimal(steps).scaleb(exponent)


def _refuse_small_print(print_size: PrintSize, dpi: int, cols: int, rows: int) -> NoReturn:
    """Refuse a print with fewer pixels than the grid has cells across or down.

    Each cell needs a pixel at least, so the message says what the print
    would be, what the grid needs, and what would do: the least ``dpi``, the
    least print of the same shape at this ``dpi`` (the same shape crops the
    target the same way, so the grid stays), or fewer cells.
    """
    width, height = print_size.pixels(dpi)
    inches = print_size.inches()
    # round(side * dpi) >= cells exactly when side * dpi >= cells - 1/2 (halves round up).
    least = max(Fraction(2 * cells - 1, 2) / side
                for cells, side in zip((cols, rows), inches, strict=True))
    ways = []
    least_dpi = math.ceil(least)
    # Values to type are shown as typed: no thousands separators.
    if least_dpi <= DPI_RANGE[1]:
        ways.append(f"{{dpi}} {least_dpi} or more")
    factor = _scale_up(least / dpi)
    larger_text = str(PrintSize((print_size.width * factor).normalize(),
                                (print_size.height * factor).normalize(), print_size.unit))
    try:
        larger = parse_print_size(larger_text)  # held to what --print takes (100 m, digits)
    except OptionError:
        pass
    else:
        larger_width, larger_height = larger.pixels(dpi)
        if larger_width >= cols and larger_height >= rows:
            ways.append(f"a print of at least {larger} at {{dpi}} {dpi}")
    if cols * rows > 1:
        ways.append("fewer cells")
    raise OptionError("{print_size} {size} is too small at {dpi} {dpi_value}: it would be "
                      "{width}x{height} px, and the grid's {cols}x{rows} cells need at least "
                      "{cols}x{rows} px (a pixel each)"
                      + ("; use " + ", ".join(ways[:-1]) + (", or " if len(ways) > 2 else
                                                            " or " if len(ways) == 2 else "")
                         + ways[-1] if ways else ""),
                      size=str(print_size), dpi_value=dpi, width=f"{width:,}",
                      height=f"{height:,}", cols=f"{cols:,}", rows=f"{rows:,}")


def plan_sizes(
    target_size: tuple[int, int],
    *,
    aspect: str | tuple[int, int] = "1:1",
    cell_px: int = 16,
    tile_px: int = 32,
    cells: int | None = None,
    print_size: str | PrintSize | None = None,
    dpi: int | None = None,
    name: str = "target",
    adaptive: int = 0,
) -> SizePlan:
    """Plan the grid and tile sizes of a mosaic of a target (see the module's rules).

    Parameters
    ----------
    target_size : tuple of int
        ``(width, height)`` of the target in pixels.
    aspect : str
        Shape of cells and tiles, ``"W:H"``.
    cell_px : int
        Cell width in target pixels, used when ``cells`` is None.
    tile_px : int
        Tile width in output pixels, used when ``print_size`` is None.
    cells : int, optional
        About this many cells (chooses the cell width).
    print_size : str or PrintSize, optional
        The print (``"60x40cm"``): crops the target to its shape and chooses
        the tile width.
    dpi : int, optional
        Resolution of the print and of the output file's metadata (default
        :data:`DEFAULT_DPI` with a print size).
    name : str
        The target's name, for messages.
    adaptive : int
        Depth of adaptive cells: the cell width that ``cells`` chooses and
        the tile width that ``print_size`` chooses are ones that, with their
        heights, halve this many times (given widths are left to
        :func:`~mosaicist.adaptive.check_adaptive`).

    Returns
    -------
    SizePlan
        The crop, grid, cell and tile sizes, and the output's size.

    Raises
    ------
    OptionError
        Naming the setting, for values that cannot be met.
    MosaicistError
        When the target (or its crop) is smaller than one cell.

    Examples
    --------
    >>> plan = plan_sizes((300, 200), cells=24, print_size="60x40cm", dpi=150)
    >>> plan.cols, plan.rows, plan.tile_px, plan.output_size, plan.print_error
    (6, 4, 591, (3546, 2364), (3, 2))
    """
    from .options import ADAPTIVE_RANGE, CELL_PX_RANGE, TILE_PX_RANGE, check_whole

    width, height = _target_sides(target_size, name)
    ratio = aspect_pair(aspect)
    # Checked here as well as in the options: the Python API reaches this without them, and a
    # width of 0 divides by zero, a negative or float one gives a grid that makes no sense.
    cell_px = check_whole("cell_px", cell_px, *CELL_PX_RANGE, "pixels")
    tile_px = check_whole("tile_px", tile_px, *TILE_PX_RANGE, "pixels")
    adaptive = check_whole("adaptive", adaptive, *ADAPTIVE_RANGE)
    # Heights are capped as widths are (as the settings do): widths that a count or a print
    # replaces are not held to it.
    if cells is None:
        _check_height("cell_px", cell_px, ratio, CELL_PX_RANGE[1])
    if print_size is None:
        _check_height("tile_px", tile_px, ratio, TILE_PX_RANGE[1])
    if print_size is not None:
        print_size = as_print_size(print_size)
    if dpi is not None:
        dpi = check_whole("dpi", dpi, *DPI_RANGE, "dpi")
    elif print_size is not None:
        dpi = DEFAULT_DPI
    crop = (0, 0, width, height) if print_size is None else print_crop((width, height), print_size)
    if cells is not None:
        cells = check_whole("cells", cells, 1)
        cell_px = cell_px_for_cells(crop[2:], cells, ratio, adaptive, name=name,
                                    cropped=crop[2:] != (width, height))
    cell_height = height_for(cell_px, ratio)
    cols, rows = crop[2] // cell_px, crop[3] // cell_height
    if cols < 1 or rows < 1:
        what = f"its {crop[2]}x{crop[3]} crop to the print's shape" \
            if crop[2:] != (width, height) else f"{width}x{height} pixels"
        raise OptionError("{name}: {what} is smaller than one {size} cell; use smaller cells "
                          "({cell_px}) or a larger target", name=name, what=what,
                          size=f"{cell_px}x{cell_height}")
    if print_size is not None:
        assert dpi is not None
        tile_px = tile_px_for_print(cols, rows, print_size, dpi, ratio, adaptive)
    return SizePlan(
        target_size=(width, height), crop=crop, cols=cols, rows=rows, cell_px=cell_px,
        cell_height=cell_height, tile_px=tile_px, tile_height=height_for(tile_px, ratio),
        aspect=format_aspect(ratio), cells=cells, print_size=print_size, dpi=dpi,
    )


def plan_print(
    target_size: tuple[int, int],
    print_size: str | PrintSize,
    dpi: int = DEFAULT_DPI,
    aspect: str = "1:1",
    cells: int | None = None,
    cell_px: int = 16,
) -> SizePlan:
    """Plan a mosaic that prints at ``print_size`` and ``dpi`` (:func:`plan_sizes` for a print).

    Parameters
    ----------
    target_size : tuple of int
        ``(width, height)`` of the target in pixels.
    print_size : str or PrintSize
        ``"60x40cm"``, ``"24x36in"``, ``"500x700mm"``.
    dpi : int
        The print's resolution.
    aspect : str
        Shape of cells and tiles.
    cells : int, optional
        About this many cells; else cells of ``cell_px``.
    cell_px : int
        Cell width in target pixels when ``cells`` is None.

    Returns
    -------
    SizePlan
        With the crop to the print's shape, the grid, the tile size, the
        output size and how far it is from the print's pixels.

    Examples
    --------
    >>> plan = plan_print((3000, 2000), "60x40cm", dpi=150, cells=2400)
    >>> plan.cols, plan.rows, plan.output_size
    (60, 40, (3540, 2360))
    """
    if print_size is None:
        # Else a plan with no print at all (plan_sizes's for a screen).
        raise OptionError("{print_size} must be a print size such as '60x40cm', got None")
    return plan_sizes(target_size, aspect=aspect, cell_px=cell_px, cells=cells,
                      print_size=print_size, dpi=dpi)


def options_plan(
    options: MosaicOptions, target_size: tuple[int, int], name: str = "target"
) -> SizePlan:
    """Plan a mosaic's sizes from ``options`` and the target's size (see :func:`plan_sizes`).

    Raises
    ------
    OptionError
        Also when ``cell_px`` was given and ``cells`` chooses another, or
        ``tile_px`` was given and ``print_size`` chooses another.
    """
    plan = plan_sizes(target_size, aspect=options.aspect, cell_px=options.cell_px,
                      tile_px=options.tile_px, cells=options.cells,
                      print_size=options.print_size, dpi=options.dpi, name=name,
                      adaptive=options.adaptive)
    if options.given("cell_px") and plan.cell_px != options.cell_px:
        raise OptionError("{cells} {value} chooses cells of {chosen} px, but {cell_px} is "
                          "{given}; give one of them", value=options.cells,
                          chosen=plan.cell_px, given=options.cell_px)
    if options.given("tile_px") and plan.tile_px != options.tile_px:
        raise OptionError("{print_size} {value} at {dpi} {dpi_value} chooses tiles of {chosen} "
                          "px, but {tile_px} is {given}; give one of them",
                          value=options.print_size, dpi_value=plan.dpi, chosen=plan.tile_px,
                          given=options.tile_px)
    return plan


def fit_options(options: MosaicOptions, plan: SizePlan) -> MosaicOptions:
    """Return ``options`` with the cell and tile widths (and ``dpi``) that ``plan`` chose.

    Settings chosen this way stay "not given" (:meth:`MosaicOptions.fitted`),
    and ``match_px``, when not given, follows the new ``tile_px``; with
    ``adaptive``, it is the width nearest to that default which, with its
    height, halves ``adaptive`` times (as the tile width does).
    """
    from .options import default_match_px

    changes: dict[str, Any] = {"cell_px": plan.cell_px, "tile_px": plan.tile_px, "dpi": plan.dpi}
    if not options.given("match_px"):
        changes["match_px"] = default_match_px(plan.tile_px)
        if options.adaptive:
            # Each adaptive level halves the compared tile too; the default width (32 px for
            # large tiles) may not, with its height, at an aspect other than 1:1.
            ratio = parse_aspect(plan.aspect)
            widths = _halving(np.arange(1, plan.tile_px + 1, dtype=np.int64), ratio,
                              options.adaptive)
            if len(widths) and changes["match_px"] not in widths:
                distance = np.abs(widths - changes["match_px"])
                changes["match_px"] = int(widths[distance == distance.min()].max())
    changes = {name: value for name, value in changes.items() if getattr(options, name) != value}
    return options.fitted(**changes) if changes else options


def original_sizes(
    source: TileSource, source_ids: Sequence[str], sample: int = ORIGINALS_SAMPLE
) -> list[tuple[int, int]]:
    """Return the ``(width, height)`` of up to ``sample`` originals among ``source_ids``.

    They are spread evenly over the distinct ids. Local files are measured
    from their headers (EXIF orientation applied), others opened through the
    source (datasets hold small arrays). Originals that cannot be read are
    left out: this only informs a warning.
    """
    from .imaging import target_size
    from .sources import SourceEntry

    distinct = list(dict.fromkeys(source_ids))
    count = min(sample, len(distinct))
    sizes = []
    for source_id in (distinct[index * len(distinct) // count] for index in range(count)):
        entry = SourceEntry(source_id, 0, 0, None)
        try:
            path = source.local_path(entry)
            if path is not None:
                sizes.append(target_size(path))
            else:
                with source.open_original(entry) as image:
                    sizes.append(image.size)
        except Exception:
            # Any failure only means this sample says nothing: the check is advisory.
            continue
    return sizes


#: Enlargement of the originals from which tiles are said to look soft: a few percent
#: is not seen (and "enlarged 1.0x and will look soft" was said of 1.04).
SOFT_ENLARGEMENT = 1.1


def small_originals_warning(
    source: TileSource, source_ids: Sequence[str], tile_px: int, tile_height: int,
    sample: int = ORIGINALS_SAMPLE,
) -> str | None:
    """Return a warning when the sampled originals are typically smaller than the tiles.

    Each sampled original (:func:`original_sizes`) gives its largest window
    of the tiles' shape; when the median of the factors by which those
    windows are enlarged to ``tile_px x tile_height`` is at least
    :data:`SOFT_ENLARGEMENT`, the tiles will look soft. None when they are
    large enough (or none could be read).
    """
    sizes = original_sizes(source, source_ids, sample)
    if not sizes:
        return None
    factors = [max(tile_px / min(width, height * tile_px / tile_height),
                   tile_height / min(height, width * tile_height / tile_px))
               for width, height in sizes]
    factor = statistics.median(factors)
    if factor < SOFT_ENLARGEMENT:
        return None
    typical = sorted(sizes, key=lambda size: size[0] * size[1])[(len(sizes) - 1) // 2]
    return (f"tiles are {tile_px}x{tile_height} px, but the library's photos are about "
            f"{typical[0]}x{typical[1]} (median of {len(sizes)} sampled): they are enlarged "
            f"{factor:.1f}x and will look soft; use larger photos or smaller tiles")
