"""Every setting of a mosaic, declared once: its default, its check and its help.

:class:`MosaicOptions` is the one object that carries the settings of a
mosaic from wherever they are given (the command line, the Python API, a
web page) to the pipeline, to the report and to the placements file, and
back to ``render``. It is frozen and validated when made: a value that
mosaicist cannot use raises :class:`~mosaicist.errors.OptionError`, whose
message names the parameter (``max_uses``), or, on the command line, the
flag that sets it (``--max-uses``).

Each field is declared with :func:`setting`: its default, its help text, its
command-line flag and the checks of its value. The command line builds its
options from these declarations (:func:`settings`), so a new setting is one
field here.

Presets
-------
A preset is a named bundle of settings (:data:`PRESETS`); ``preset`` picks
one, and every setting given explicitly overrides it. Settings neither given
nor in the preset take their declared defaults, which are the seed's method:
``preset="seed"`` is exactly the defaults. The default preset is
:data:`DEFAULT_PRESET`.

Serialised form
---------------
:meth:`MosaicOptions.to_json` and :meth:`MosaicOptions.from_json` are the
one codec for the report and the placements file::

    {"version": 7, "preset": "seed", "cell_px": 16, "tile_px": 32, "match_px": 32, ...}

``version`` is :data:`SETTINGS_VERSION`. Every setting is written, so reading
back gives the same options whatever the defaults are by then. Reading
accepts any version up to the current one: settings a file does not have
take their defaults under the ``seed`` preset (they did not exist when it
was written), and unknown names are refused.
"""

from __future__ import annotations

import dataclasses
import decimal
import difflib
import functools
import math
import string
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

# The choices and limits from a module that imports nothing: help and the settings'
# checks run before any stage, and must not wait for NumPy and Pillow.
from ._choices import (
    AUGMENT_SETS,
    COLOUR_PROFILE_MODES,
    CROP_MODES,
    DEDUPE_THRESHOLD,
    DEFAULT_DPI,
    DPI_RANGE,
    IDENTICAL_PHOTO_MODES,
    METRICS,
    TARGET_MAX_PIXELS,
)
from .aspect import format_aspect, height_for, parse_aspect
from .errors import MosaicistError, OptionError, alternatives, check_range, range_wording

#: Version of the serialised settings (:meth:`MosaicOptions.to_json`); 2 added ``preset``,
#: 3 ``min_uses``, ``contrast`` and ``tint_max``, 4 ``aspect``, ``crop``, ``dedupe``,
#: ``cells``, ``print_size``, ``dpi``, ``adaptive``, ``detail`` and ``max_target_pixels``,
#: 5 ``chroma``, 6 ``colour_profiles``, 7 ``identical_photos``. A new setting must default
#: to what mosaicist did before it existed.
SETTINGS_VERSION = 7

#: Accepted range of ``cell_px`` (target pixels per cell side).
CELL_PX_RANGE = (1, 1024)
#: Accepted range of tile sides: ``tile_px`` (drawn) and ``match_px`` (indexed and compared).
TILE_PX_RANGE = (1, 1024)
#: Least and most levels of adaptive cells (``adaptive``); sizes are chosen for them
#: in ``2^depth`` steps (:mod:`mosaicist.sizing`).
ADAPTIVE_RANGE = (0, 6)
#: Largest side tiles are compared at by default (larger outputs are drawn from originals).
DEFAULT_MATCH_LIMIT = 64
#: Side tiles are compared at when ``tile_px`` is above :data:`DEFAULT_MATCH_LIMIT`.
LARGE_TILE_MATCH_PX = 32
#: How repetition limits are solved.
ASSIGN_METHODS = ("optimal", "greedy")
#: Deep Zoom tile formats, and the spellings accepted for them.
DZI_FORMATS = ("jpeg", "png", "webp")
DZI_FORMAT_ALIASES = {"jpg": "jpeg", **{name: name for name in DZI_FORMATS}}
#: Deep Zoom defaults: 254 px tiles with 1 px overlap make 256 px image files.
DZI_TILE_SIZE = 254
DZI_OVERLAP = 1
DZI_FORMAT = "jpeg"
#: Accepted range of ``dzi_tile_size``, the tile side of the pyramids mosaicist writes.
#: Below 16 px (one JPEG or WebP block) a tile file is mostly headers, a pyramid has
#: millions of them and a screen of the viewer needs thousands of requests; above
#: 2048 px each request is megabytes and the viewer's cache of 200 decoded tiles
#: (OpenSeadragon's default) gigabytes of memory.
DZI_TILE_SIZE_RANGE = (16, 2048)
#: Largest tile side of a pyramid read (:func:`mosaicist.render.read_layout`: other tools
#: write larger ones) or written by :func:`mosaicist.render.write_deep_zoom` directly.
DZI_MAX_TILE_SIZE = 4096
#: Largest whole number any setting takes, bounded or not: what NumPy's int64 arrays and
#: the solvers hold (a larger count, ``max_uses=10**400``, overflowed deep inside).
LARGEST_WHOLE = 2**63 - 1
#: Most digits of a number shown whole in a message; a longer one is shown by its length
#: (Python refuses to print ints of over 4,300 digits at all).
SHOWN_DIGITS = 30

_SETTING = "mosaicist.setting"


@dataclass(frozen=True)
class Preset:
    """A named bundle of settings.

    Attributes
    ----------
    name : str
        Its name (the value of the ``preset`` setting).
    description : str
        What it is for, in one sentence.
    settings : mapping
        The settings it sets; the others keep their defaults.
    """

    name: str
    description: str
    settings: Mapping[str, Any]


#: The presets, by name.
PRESETS = {
    preset.name: preset
    for preset in (
        Preset("seed", "the seed's method: each cell's exact nearest tile, in sRGB, tiles "
               "repeated as often as they fit", {}),
        Preset("balanced", "every tile at most once where the library has enough (else "
               "every tile at least once and as few times as it allows), never two alike "
               "within 5 cells, each tile's mean "
               "colour moved to its cell's, its contrast halfway to the cell's and its colour "
               "variation down to the cell's (grey on grey), photos cut around their subject, "
               "colour profiles converted, identical photos once",
               {"max_uses": 1, "min_spacing": 5, "tint": 1.0, "contrast": 0.5, "chroma": 1.0,
                "crop": "subject", "colour_profiles": "convert",
                "identical_photos": "drop"}),
        Preset("varied", "no tile more than twice, never two alike within 5 cells, tiles "
               "tinted halfway to their cells' colours, photos cut around their subject, "
               "colour profiles converted, identical photos once",
               {"max_uses": 2, "min_spacing": 5, "tint": 0.5, "crop": "subject",
                "colour_profiles": "convert", "identical_photos": "drop"}),
    )
}
#: The preset of settings not given: chosen by ``benchmarks/bench_presets.py``
#: over the shared targets (see ``benchmarks/README.md``).
DEFAULT_PRESET = "balanced"


class _Unset:
    """The default of every field: "not given", resolved from the preset or the declaration."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()


def _in_hundredths(name: str, value: float | None) -> float | None:
    """A strength rounded to whole hundredths (as the match applies it), refused if it
    rounds a strength that was asked for to 0."""
    if value is None:
        return None
    # Half up, on the number as written: round() of value * 100 went half to even (0.025
    # to 0.02 but 0.015 to 0.02, 0.005 refused), and 0.145 * 100 is 14.4999...
    rounded = float(decimal.Decimal(repr(float(value))).quantize(
        decimal.Decimal("0.01"), rounding=decimal.ROUND_HALF_UP))
    if value > 0 and rounded == 0:
        raise OptionError("{" + name + "} is applied in hundredths: {value} would be 0 (off); "
                          "give 0.01 or more, or 0 for off", value=value)
    return rounded


def default_match_px(tile_px: int) -> int:
    """Side tiles are compared at when not given: ``tile_px`` up to 64, else 32.

    Comparing at print sizes (hundreds of pixels) would cost hundreds of
    times more for no visible gain: a cell is judged from afar.
    """
    return tile_px if tile_px <= DEFAULT_MATCH_LIMIT else LARGE_TILE_MATCH_PX


@dataclass(frozen=True)
class Setting:
    """The declaration of one setting, beside its default.

    Attributes
    ----------
    name : str
        The parameter's name (the field of :class:`MosaicOptions`).
    default : object
        Its default.
    kind : type
        ``int``, ``float``, ``str`` or ``bool``.
    optional : bool
        Whether None is a value (``max_uses=None``: no limit).
    help : str
        What it does. ``{name}`` stands for another setting, shown as its
        parameter name or flag (see :meth:`describe`).
    flag : str or None
        Its command-line flag (``--cell``); None when the command line does
        not set it.
    choices : tuple of str, or None
        The accepted values, for settings with a fixed set. Settings chosen
        from a registry (``search``, ``device``) are checked against it when
        the mosaic is made.
    low, high : int or float, or None
        Inclusive range of numbers (None: unbounded).
    unit : str
        Unit of the range, for messages.
    metavar : str or None
        What the command line shows for the value (``PX``, ``K``).
    section : str
        Which part of the work it belongs to: ``grid``, ``match``,
        ``picture``, ``output`` or ``report``.
    """

    name: str
    default: Any
    kind: type
    optional: bool
    help: str
    flag: str | None
    choices: tuple[str, ...] | None
    low: int | float | None
    high: int | float | None
    unit: str
    metavar: str | None
    section: str

    def describe(self, name_of: Callable[[str], str] = str) -> str:
        """Return the help text with each named setting shown as ``name_of(name)``."""
        return OptionError(self.help).message(name_of)

    def check(self, value: Any) -> Any:
        """Return ``value`` if it is valid for this setting, as a plain Python value.

        Ints given for a number become floats, and NumPy scalars (what
        indexing an array or a data frame gives: ``np.int64(16)``,
        ``np.float32(0.5)``, ``np.bool_(True)``) the Python values they hold,
        so that the settings print, compare and serialise as if typed in.

        Raises
        ------
        OptionError
            Naming the setting and what is wrong.
        """
        if value is None:
            if self.optional:
                return None
            raise OptionError("{" + self.name + "} must be set, got None")
        if self.kind in (int, float) and self.low is not None:
            # Before the conversion: float(10**400) overflows.
            refuse_huge(self.name, value, self.low, self.high, self.unit)
        given = value
        value = _plain(value, self.kind)
        if not isinstance(value, self.kind) or (self.kind is int and isinstance(value, bool)):
            # An optional setting says None is its "none" (max_uses="none", as the
            # command line's help words it, named only what None stands in for).
            raise OptionError(
                "{" + self.name + "} must be {kind}, got {value}",
                kind=_KIND_NAMES[self.kind] + (" or None" if self.optional else ""),
                value=shown_value(value),
            )
        if self.choices is not None and value not in self.choices:
            raise OptionError("unknown {" + self.name + "} {value}; use {known}",
                              value=shown_value(value), known=alternatives(self.choices))
        if self.low is not None and isinstance(value, int | float):
            # The value as given: tint=5 is said "got 5", not the float it became.
            check_range(self.name, given, self.low, self.high, self.unit)
        return value


_KIND_NAMES = {int: "a whole number", float: "a number", str: "a text", bool: "true or false"}


def _scalar_types(python: type, numpy_name: str) -> tuple[type[Any], ...]:
    """``python`` and NumPy's scalar type ``numpy_name`` (``"integer"``), for ``isinstance``.

    NumPy's only where it is imported: no value can be a NumPy scalar before, and
    the checks (help, the command line's settings) need not import it.
    """
    numpy = sys.modules.get("numpy")
    return (python,) if numpy is None else (python, getattr(numpy, numpy_name))


def _is_numpy(value: object, numpy_name: str) -> bool:
    """Whether ``value`` is a NumPy scalar of type ``numpy_name`` (``"str_"``)."""
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, getattr(numpy, numpy_name))


def _digits(number: int) -> int:
    """How many decimal digits ``abs(number)`` has, without printing it."""
    number = abs(number)
    if number < 10:
        return 1
    # The logarithm is a float, off by one near powers of ten: settled exactly.
    exponent = int(math.log10(number))
    while 10**exponent > number:
        exponent -= 1
    while 10 ** (exponent + 1) <= number:
        exponent += 1
    return exponent + 1


def shown_value(value: object) -> str:
    """``value`` as a message shows it: its repr, a long number by its length, a long
    text cut short, so that a hostile value still makes one short line.

    Parameters
    ----------
    value : object
        Anything a caller or a file gave.

    Returns
    -------
    str
        At most 60 characters: a whole number of up to :data:`SHOWN_DIGITS`
        digits as written, a longer one as ``"a number of N digits"``, anything
        else as its repr, cut short (or by its type where the repr fails).

    Examples
    --------
    >>> shown_value("16"), shown_value(10**400), shown_value(-(10**40))
    ("'16'", 'a number of 401 digits', 'a negative number of 41 digits')
    """
    if (isinstance(value, _scalar_types(int, "integer"))
            and not isinstance(value, _scalar_types(bool, "bool_"))):
        number = int(value)
        if _digits(number) <= SHOWN_DIGITS:
            return str(number)
        return f"a {'negative ' if number < 0 else ''}number of {_digits(number)} digits"
    try:
        text = repr(value)
    except Exception:
        # A pair holding an int too long to print, or a class whose repr fails.
        return f"a {type(value).__name__}"
    return text if len(text) <= 2 * SHOWN_DIGITS else text[:2 * SHOWN_DIGITS - 3] + "..."


def _too_long(value: object) -> bool:
    """Whether ``value`` printed whole would be longer than :func:`shown_value` shows."""
    if (isinstance(value, _scalar_types(int, "integer"))
            and not isinstance(value, _scalar_types(bool, "bool_"))):
        return _digits(int(value)) > SHOWN_DIGITS
    try:
        return len(str(value)) > 2 * SHOWN_DIGITS
    except Exception:
        return True  # an int too long to print, inside a pair


def short_refusal(error: OptionError) -> OptionError:
    """``error`` again, with each value too long to show whole shown by :func:`shown_value`.

    Parameters
    ----------
    error : OptionError
        A refusal whose values may be anything a caller gave (a text of
        200,000 characters, a number of thousands of digits, a long list).

    Returns
    -------
    OptionError
        ``error`` itself when every value is short; else one of the same
        class, naming the same parameters, each long value shown as
        :func:`shown_value` shows it (its repr cut short, or a number by its
        length) in place of its conversion (``{value!r}``).

    Examples
    --------
    >>> str(short_refusal(OptionError("{aspect} cannot be {value!r}", value="1" * 5000)))
    "aspect cannot be '11111111111111111111111111111111111111111111111111111111..."
    """
    long = {name for name, value in error.values.items() if _too_long(value)}
    if not long:
        return error
    template = []
    for literal, name, spec, conversion in string.Formatter().parse(error.template):
        template.append(literal.replace("{", "{{").replace("}", "}}"))
        if name is None:
            continue
        if name in long:
            template.append("{" + name + "}")  # shown_value gives the repr itself
        else:
            template.append("{" + name + (f"!{conversion}" if conversion else "")
                            + (f":{spec}" if spec else "") + "}")
    values = {name: shown_value(value) if name in long else value
              for name, value in error.values.items()}
    return type(error)("".join(template), **values)


def refuse_huge(parameter: str, value: object, low: int | float,
                high: int | float | None = None, unit: str = "") -> None:
    """Raise :class:`OptionError` naming ``parameter`` for a whole number beyond
    :data:`LARGEST_WHOLE` either way; anything else is left to
    :func:`~mosaicist.errors.check_range`.

    Parameters
    ----------
    parameter : str
        Name of the parameter, shown in the message.
    value : object
        Its value, of any type.
    low, high : int or float
        The range the value must lie in (``high`` None: up to :data:`LARGEST_WHOLE`).
    unit : str
        Unit named after the limits (``"pixels"``).

    Raises
    ------
    OptionError
        Saying the range, and the number by its length when it is long.
    """
    if (not isinstance(value, _scalar_types(int, "integer"))
            or isinstance(value, _scalar_types(bool, "bool_"))):
        return
    if -LARGEST_WHOLE <= int(value) <= LARGEST_WHOLE:  # compared as Python ints, not uint64
        return
    if high is None or high >= LARGEST_WHOLE:
        # "between 1 and 9223372036854775807" read as a riddle where the setting has no
        # limit of its own; the number given is over what a whole number can hold here.
        # (Not "of at most 19 digits": 9999999999999999999 has 19 and is over it too.)
        raise OptionError("{" + parameter + "} must be {range} and at most {largest}, got "
                          "{value}", range=range_wording(low, None, unit),
                          largest=f"{LARGEST_WHOLE:,}", value=shown_value(value))
    raise OptionError("{" + parameter + "} must be {range}, got {value}",
                      range=range_wording(low, high, unit), value=shown_value(value))


def check_whole(parameter: str, value: object, low: int, high: int | None = None,
                unit: str = "") -> int:
    """Return ``value`` as a Python ``int`` if it is a whole number from ``low`` to ``high``.

    :func:`~mosaicist.errors.check_range` with ``whole=True``, and numbers
    beyond :data:`LARGEST_WHOLE` refused in a short message
    (:func:`refuse_huge`), not printed in full or carried on to overflow.

    Parameters
    ----------
    parameter : str
        Name of the parameter, shown in the message.
    value : object
        Its value: an int or a NumPy integer scalar.
    low, high : int
        Inclusive limits; ``high`` None means up to :data:`LARGEST_WHOLE`.
    unit : str
        Unit named after the limits (``"pixels"``).

    Returns
    -------
    int
        The value.

    Raises
    ------
    OptionError
        Naming ``parameter``, for a value of the wrong type or out of range.

    Examples
    --------
    >>> import numpy as np
    >>> check_whole("cells", np.int64(24), 1)
    24
    >>> check_whole("dpi", 10**400, 1, 65535)
    Traceback (most recent call last):
    ...
    mosaicist.errors.OptionError: dpi must be between 1 and 65535, got a number of 401 digits
    """
    refuse_huge(parameter, value, low, high, unit)
    number: int = check_range(parameter, value, low, high, unit, whole=True)
    return number


def _plain(value: Any, kind: type) -> Any:
    """``value`` as a Python ``kind`` where it is a number or truth value of that kind.

    A bool is no number here (``True`` is refused as a size), and a float no
    whole number (``16.0`` is refused as a count): what is left unconverted
    is refused by the caller's type check, by name.
    """
    if kind is bool:
        return bool(value) if _is_numpy(value, "bool_") else value
    if kind is str:
        return str(value) if _is_numpy(value, "str_") else value
    if isinstance(value, _scalar_types(bool, "bool_")):
        return value
    if isinstance(value, _scalar_types(int, "integer")) and kind in (int, float):
        return kind(value)
    if isinstance(value, _scalar_types(float, "floating")) and kind is float:
        # Adding 0.0 turns -0.0 into 0.0: "--tint -0" is no tint, not "tint: -0.0" in
        # the report and the placements file.
        return float(value) + 0.0
    return value


def setting(
    default: Any,
    help: str,
    *,
    flag: str | None = "",
    choices: tuple[str, ...] | None = None,
    low: int | float | None = None,
    high: int | float | None = None,
    unit: str = "",
    metavar: str | None = None,
    section: str,
) -> Any:
    """Declare a field of :class:`MosaicOptions` (see :class:`Setting`).

    ``flag=""`` (the default) derives the flag from the name:
    ``max_uses`` -> ``--max-uses``.
    """
    declared = {"default": default, "help": help, "flag": flag, "choices": choices, "low": low,
                "high": high, "unit": unit, "metavar": metavar, "section": section}
    # The field itself defaults to "unset", so that a preset can tell what was given.
    return field(default=_UNSET, metadata={_SETTING: declared})


class UnknownSettingError(OptionError, TypeError):
    """Keywords that are not settings: a :class:`TypeError` as for any unexpected keyword
    argument, and an :class:`OptionError` as for any other setting mosaicist cannot use."""


def unknown_settings(names: Iterable[str]) -> UnknownSettingError:
    """The error for keywords that are not settings, each with the nearest setting's name."""
    # The names as a value, not in the template: a name is any text ("a}" too).
    return UnknownSettingError("unknown settings: {names}", names=suggested(names))


#: Most unknown names a message lists; the rest are counted.
SHOWN_NAMES = 10


def suggested(names: Iterable[str]) -> str:
    """``names`` that are not settings, sorted, each with the nearest setting's name.

    A name is any text a caller or a request gave (200,000 characters, or
    thousands of names): each is shown cut short (:func:`shown_value`) and
    at most :data:`SHOWN_NAMES` are listed, the rest counted.
    """
    fields = list(_fields())
    ordered = sorted(names)
    shown = []
    for name in ordered[:SHOWN_NAMES]:
        text = shown_value(name).strip("'")
        # A long name is no typo of a setting: not worth difflib's time.
        close = (difflib.get_close_matches(name, fields, n=1)
                 if len(name) <= 2 * SHOWN_DIGITS else [])
        shown.append(f"{text} (did you mean {close[0]}?)" if close else text)
    return ", ".join(shown) + _more(len(ordered))


def _more(count: int) -> str:
    """The tail of a list of ``count`` names cut at :data:`SHOWN_NAMES`."""
    return f" and {count - SHOWN_NAMES} more" if count > SHOWN_NAMES else ""


@dataclass(frozen=True)
class MosaicOptions:
    """The settings of a mosaic, validated.

    Make one with keyword arguments (every setting has a default), change
    one with :meth:`replace`. Settings not given come from the ``preset``
    (:data:`PRESETS`), else from their declared defaults. The default preset
    is :data:`DEFAULT_PRESET` (``balanced``); with ``preset="seed"`` every
    setting not given takes its declared default, and a mosaic is the seed's
    method exactly.

    Raises
    ------
    OptionError
        When a value cannot be used; the message names the parameter.

    Examples
    --------
    >>> options = MosaicOptions(cell_px=8, tint=0.5, max_uses=2)
    >>> options.match_px  # the default: tile_px up to 64
    32
    >>> options.replace(tile_px=48).match_px  # a default follows tile_px
    48
    >>> MosaicOptions(match_px=32).replace(tile_px=256).match_px  # a given one stays
    32
    >>> varied = MosaicOptions(preset="varied", tint=0.2)  # a preset; tint given wins
    >>> (varied.max_uses, varied.min_spacing, varied.tint)
    (2, 5, 0.2)
    >>> MosaicOptions(tint=2)
    Traceback (most recent call last):
    ...
    mosaicist.errors.OptionError: tint must be between 0 and 1, got 2
    """

    preset: str = setting(
        DEFAULT_PRESET, "A bundle of settings: " + "; ".join(
            f"{preset.name}: {preset.description}" for preset in PRESETS.values()
        ) + ". Settings given explicitly override it.", choices=tuple(PRESETS), metavar=None,
        section="grid")
    # -- the grid and the tiles ----------------------------------------------------------
    cell_px: int = setting(
        16, "Target pixels per cell side.", flag="--cell",
        low=CELL_PX_RANGE[0], high=CELL_PX_RANGE[1], unit="pixels", metavar="PX", section="grid")
    tile_px: int = setting(
        32, "Output pixels per tile side (up to 1024; large outputs are streamed).",
        low=TILE_PX_RANGE[0], high=TILE_PX_RANGE[1], unit="pixels", metavar="PX",
        section="grid")
    match_px: int | None = setting(
        None, "Side at which tiles are indexed and compared [default: {tile_px} up to 64, "
        "else 32]; larger outputs are drawn from the original images.",
        low=TILE_PX_RANGE[0], high=TILE_PX_RANGE[1], unit="pixels", metavar="PX",
        section="grid")
    aspect: str = setting(
        "1:1", "Shape of cells and tiles as width:height (e.g. 3:2, 4:3, 2:3); "
        "{cell_px}, {tile_px} and {match_px} give widths, heights follow.",
        metavar="W:H", section="grid")
    cells: int | None = setting(
        None, "About N cells: the {cell_px} whose grid on the target has a count nearest "
        "to N (ties: the larger cell).", low=1, metavar="N", section="grid")
    print_size: str | None = setting(
        None, "Make the output print at this size (unit cm, mm or in; cm when left out) at "
        "{dpi}: the target is centre-cropped to the print's shape and {tile_px} chosen so that "
        "the output is nearest to its pixels.", flag="--print", metavar="WxH[cm|mm|in]",
        section="grid")
    limit: int | None = setting(
        None, "Use only the first N tiles in library order.", low=1, metavar="N",
        section="grid")
    adaptive: int = setting(
        0, "Split a cell into four where the target has detail, down to DEPTH levels (cells "
        "then come in sizes {cell_px}/2^d; {cell_px}, {tile_px}, {match_px} and their heights "
        "must divide by 2^DEPTH); 0: one size.", low=ADAPTIVE_RANGE[0], high=ADAPTIVE_RANGE[1],
        metavar="DEPTH",
        section="grid")
    detail: float = setting(
        12.0, "With {adaptive}: a cell splits when the standard deviation of its luma "
        "(Rec. 601, 0-255) is above this.", low=0, high=255, metavar="T", section="grid")
    crop: str = setting(
        "centre", "Where each photo is cut to the tiles' shape: centre, or subject (on the "
        "faces found, with the faces extra; else on the most detail), as the balanced and "
        "varied presets do.",
        choices=CROP_MODES, section="grid")
    dedupe: int | None = setting(
        None, "Drop photos near-identical to an earlier one in library order: perceptual "
        "hashes at most T bits apart and mean colours close [T when given alone: "
        f"{DEDUPE_THRESHOLD}].", low=0, high=64, unit="bits", metavar="T", section="grid")
    identical_photos: str = setting(
        "keep", "Photos whose tiles are identical pixel for pixel (the same picture copied "
        "twice): keep every one (the seed's method), or drop all but the first, as the "
        "balanced and varied presets do, so that use limits and spacing count them as one "
        "photo ({dedupe} drops them too).",
        choices=IDENTICAL_PHOTO_MODES, section="grid")
    colour_profiles: str = setting(
        "ignore", "Embedded ICC colour profiles of the target, the tiles and the originals: "
        "convert (to sRGB, so that photos saved in a wider space, Adobe RGB or a phone's "
        "Display P3, keep their colours), as the balanced and varied presets do, or ignore "
        "(the stored values taken as sRGB, as the seed's reader does).",
        choices=COLOUR_PROFILE_MODES, section="grid")
    max_target_pixels: int = setting(
        TARGET_MAX_PIXELS, "Refuse targets of more pixels than this (checked from the file's "
        "header before decoding, against decompression bombs); raise it for larger murals.",
        low=1, unit="pixels", metavar="N", section="grid")
    # -- matching -------------------------------------------------------------------------
    metric: str = setting(
        "seed", "Per-pixel distance: sRGB (the seed's), CIE Lab or Oklab.",
        choices=tuple(METRICS), section="match")
    augment: str = setting(
        "none", "Mirror and 90-degree variants of each tile join the candidates (for "
        "rectangular {aspect} only those that keep the shape: mirror, half turn, flip).",
        choices=tuple(AUGMENT_SETS), section="match")
    tint: float = setting(
        0.0, "Move each tile's mean colour toward its cell's by this fraction, rounded to "
        "hundredths (tiles are ranked after the shift).", low=0, high=1, metavar="A",
        section="match")
    tint_max: float | None = setting(
        None, "Raise a tile's tint above the tint, up to this (rounded to hundredths), where "
        "its mean colour would "
        "still be further from its cell's than the cell's own texture spread (flat cells the "
        "library covers poorly: dark skies, deep colours).", low=0, high=1, metavar="A",
        section="match")
    contrast: float = setting(
        0.0, "Move each tile's contrast toward its cell's by this fraction: each channel's "
        "spread around the tile's mean is scaled by (cell spread / tile spread) to this power, "
        "between 1/4 and 4 (the best few tiles are re-ranked after it).", low=0, high=1,
        metavar="B", section="match")
    chroma: float = setting(
        0.0, "Move each tile's colour variation (its chroma around its own mean colour) "
        "toward its cell's, never above the tile's own: scaled by (cell chroma spread / tile "
        "chroma spread) to this power, at most 1. 1: a tile on a grey cell is drawn grey; "
        "0: tiles keep their colours.", low=0, high=1, metavar="K", section="match")
    max_uses: int | None = setting(
        None, "Use no tile more than K times (solved as a global assignment); 'none': no "
        "limit, whatever the preset says.",
        low=1, metavar="K", section="match")
    min_uses: int = setting(
        0, "Use every library tile at least K times (the gift mosaic: every photo "
        "somewhere); 0: no minimum.", low=0, metavar="K", section="match")
    min_spacing: int = setting(
        1, "Cells holding the same tile are at least D cells apart (Chebyshev).",
        low=0, metavar="D", section="match")
    assign: str = setting(
        "optimal", "How {max_uses}/{min_spacing} are solved.", choices=ASSIGN_METHODS,
        section="match")
    search: str = setting(
        "exact", "exact: the true minimum for every cell; approximate: a graph of nearest "
        "neighbours (an inverted file without FAISS) with exact re-ranking, for very large "
        "libraries.", section="match")
    device: str = setting(
        "cpu", "cuda: exact integer search on an NVIDIA GPU (needs the gpu extra).",
        section="match")
    # -- the picture ----------------------------------------------------------------------
    overlay: float = setting(
        0.0, "Blend the target over the mosaic with this weight (a visible cheat, "
        "reported as such).", low=0, high=1, metavar="B", section="picture")
    # -- output files ---------------------------------------------------------------------
    dpi: int | None = setting(
        None, "Resolution recorded in the output file (PNG, JPEG, TIFF, WebP) and, with "
        "{print_size}, the print's [default: 300 with {print_size}, else none recorded].",
        low=DPI_RANGE[0], high=DPI_RANGE[1], unit="dpi", metavar="D", section="output")
    jpeg_quality: int | None = setting(
        None, "JPEG/WebP quality, also of Deep Zoom tiles [default: 92; 90 for Deep Zoom].",
        flag="--quality", low=1, high=100, metavar="Q", section="output")
    dzi_tile_size: int = setting(
        DZI_TILE_SIZE, "Deep Zoom tile side, without overlap.",
        low=DZI_TILE_SIZE_RANGE[0], high=DZI_TILE_SIZE_RANGE[1], unit="pixels", metavar="PX",
        section="output")
    dzi_overlap: int = setting(
        DZI_OVERLAP, "Pixels each Deep Zoom tile shares with its neighbours.",
        low=0, unit="pixels", metavar="PX", section="output")
    dzi_format: str = setting(
        DZI_FORMAT, "Deep Zoom tile format.", choices=DZI_FORMATS, section="output")
    # -- the report -----------------------------------------------------------------------
    compute_metrics: bool = setting(
        True, "Measure the mosaic's fidelity and repetition for the report.", flag=None,
        section="report")
    # The settings given (not resolved from the preset or a default; see replace).
    _given: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            self._resolve()
        except OptionError as error:
            # Checks outside this module (parse_aspect) quote what they were given;
            # a value of 200,000 characters made a message of that length.
            raise short_refusal(error) from None

    def _resolve(self) -> None:
        """Resolve every setting from the given values, the preset and the defaults,
        and check them, alone and together."""
        declarations = settings()
        given = frozenset(declared.name for declared in declarations
                          if getattr(self, declared.name) is not _UNSET)
        object.__setattr__(self, "_given", given)
        preset = self.preset if "preset" in given else DEFAULT_PRESET
        bundle = PRESETS[setting_named("preset").check(preset)].settings
        for declared in declarations:
            value = getattr(self, declared.name)
            if value is _UNSET:
                value = bundle.get(declared.name, declared.default)
            if declared.name == "dzi_format" and isinstance(value, str):
                value = DZI_FORMAT_ALIASES.get(value.lower(), value)
            object.__setattr__(self, declared.name, declared.check(value))
        if self.match_px is None:
            object.__setattr__(self, "match_px", default_match_px(self.tile_px))
        object.__setattr__(self, "aspect", format_aspect(parse_aspect(self.aspect)))
        ratio = parse_aspect(self.aspect)
        for name, range_ in (("cell_px", CELL_PX_RANGE), ("tile_px", TILE_PX_RANGE),
                             ("match_px", TILE_PX_RANGE)):
            # The ranges cap widths; a tall aspect must not carry a height past them
            # (1:16 at tile_px 1024 made tiles 16,384 pixels tall).
            height = height_for(getattr(self, name), ratio)
            if height > range_[1]:
                raise OptionError("{" + name + "} {value} at {aspect} {shape} is {height} "
                                  "pixels tall, over the {most} a side may be",
                                  value=getattr(self, name), shape=self.aspect, height=height,
                                  most=range_[1])
        if self.print_size is not None:
            # Here, not at the top: the sizing module's plans need NumPy, help does not.
            from .sizing import format_print_size, parse_print_size

            object.__setattr__(self, "print_size",
                               format_print_size(parse_print_size(self.print_size)))
            if self.dpi is None:
                object.__setattr__(self, "dpi", DEFAULT_DPI)
        # The match ranks tints in whole hundredths: the strength recorded and drawn is
        # the one ranked (0.333 was ranked at 0.33 but drawn at 0.333; 0.004 ranked as
        # no tint and drawn as one).
        for name in ("tint", "tint_max"):
            object.__setattr__(self, name, _in_hundredths(name, getattr(self, name)))
        # A preset's tint range follows a tint given on its own: "--tint 0.3" means
        # that strength everywhere, as it did before presets, and "--tint-max 0.5"
        # caps a stronger preset tint rather than contradicting it.
        if "tint" in given and "tint_max" not in given:
            object.__setattr__(self, "tint_max", None)
        if ("tint_max" in given and "tint" not in given and self.tint_max is not None
                and self.tint > self.tint_max):
            object.__setattr__(self, "tint", self.tint_max)
        if ("min_uses" in given and "max_uses" not in given and self.max_uses is not None
                and self.min_uses > self.max_uses):
            object.__setattr__(self, "max_uses", self.min_uses)
        if self.max_uses is not None and self.min_uses > self.max_uses:
            raise OptionError(
                "{min_uses} {low} is above {max_uses} {high}; lower {min_uses} or raise "
                "{max_uses}", low=self.min_uses, high=self.max_uses)
        if self.adaptive and self.min_uses:
            # Refused here, before a library is indexed, not when the cells are split. Named
            # as given (--use-all is --min-uses 1).
            from .match._assign import MinimumUsesError

            raise MinimumUsesError("{adaptive} does not combine with {min_uses} {low} yet",
                                   low=self.min_uses)
        if self.tint_max is not None and self.tint_max < self.tint:
            raise OptionError("{tint_max} {high} is below {tint} {low}",
                              low=self.tint, high=self.tint_max)
        if self.dzi_overlap > self.dzi_tile_size // 2:
            raise OptionError(
                "{dzi_overlap} must be {range} (half of {dzi_tile_size}), got {value}",
                range=range_wording(0, self.dzi_tile_size // 2, "pixels"),
                value=self.dzi_overlap,
            )

    def given(self, name: str) -> bool:
        """Whether setting ``name`` was given (not taken from the preset or its default).

        Parameters
        ----------
        name : str
            The setting's Python name (``max_uses``); any other name was never given.

        Returns
        -------
        bool
            True when it was passed when made, in a :meth:`replace`, or read from a file.
        """
        return name in self._given

    @property
    def aspect_ratio(self) -> tuple[int, int]:
        """``aspect`` as a reduced ``(width, height)`` pair."""
        return parse_aspect(self.aspect)

    @property
    def cell_height(self) -> int:
        """Height of a cell in target pixels (``cell_px`` is its width)."""
        return height_for(self.cell_px, self.aspect_ratio)

    @property
    def tile_height(self) -> int:
        """Height of a tile in output pixels (``tile_px`` is its width)."""
        return height_for(self.tile_px, self.aspect_ratio)

    @property
    def match_height(self) -> int:
        """Height at which tiles are indexed and compared (``match_px`` is the width)."""
        assert self.match_px is not None
        return height_for(self.match_px, self.aspect_ratio)

    @property
    def repetition_limited(self) -> bool:
        """Whether ``max_uses``, ``min_uses`` or ``min_spacing`` limits how tiles repeat."""
        return self.max_uses is not None or self.min_uses > 0 or self.min_spacing > 1

    def replace(self, **changes: Any) -> MosaicOptions:
        """Return a copy with ``changes``, validated.

        Settings that were given keep their values; the others are resolved
        again, so that they follow a new ``preset``, and ``match_px``, when
        it was not given, follows a new ``tile_px``. Settings read back from
        a file were all given: a saved mosaic is drawn larger from what it
        was matched at.

        Parameters
        ----------
        **changes : object
            New values by setting name; they count as given.

        Returns
        -------
        MosaicOptions
            The copy.

        Raises
        ------
        UnknownSettingError
            For a name that is not a setting (a :class:`TypeError`, as for
            any unexpected keyword, and an :class:`OptionError`).
        """
        unknown = set(changes) - set(_fields())
        if unknown:
            raise unknown_settings(unknown)
        values = {name: getattr(self, name) for name in self._given}
        return MosaicOptions(**(values | changes))

    def fitted(self, **changes: Any) -> MosaicOptions:
        """Return a copy with ``changes`` to settings that were not given, which stay so.

        For a preset's wishes fitted to the job (a library too small for its
        use limit): the values change, and they still count as the
        preset's, so that a later :meth:`replace` resolves them afresh.

        Parameters
        ----------
        **changes : object
            New values by setting name, for settings that were not given.

        Returns
        -------
        MosaicOptions
            The copy, validated, with the same settings given as this one.

        Raises
        ------
        ValueError
            When a change is to a setting that was given (a caller's mistake:
            a given setting is never fitted).
        OptionError
            When the changed settings are not valid together.
        """
        given = self._given & set(changes)
        if given:
            raise ValueError(f"given settings cannot be fitted: {', '.join(sorted(given))}")
        values = {name: getattr(self, name) for name in _fields()}
        copy = MosaicOptions(**(values | changes))
        object.__setattr__(copy, "_given", self._given)
        return copy

    def to_json(self) -> dict[str, Any]:
        """Return the settings as a JSON-ready dictionary, with their ``version``."""
        return {"version": SETTINGS_VERSION,
                **{name: getattr(self, name) for name in _fields()}}

    @classmethod
    def from_json(cls, data: object) -> MosaicOptions:
        """Read settings written by :meth:`to_json` (this or an earlier version).

        Parameters
        ----------
        data : object
            The parsed JSON; anything else than a settings object is refused.

        Returns
        -------
        MosaicOptions
            The settings, all counting as given (a missing one takes the seed's value).

        Raises
        ------
        MosaicistError
            When ``data`` is not a settings object of a version this
            mosaicist reads, or holds names that are not settings.
        OptionError
            When a value is not valid.
        """
        if not isinstance(data, Mapping):
            raise MosaicistError(f"settings must be an object, got {type(data).__name__}")
        if "version" not in data:
            raise MosaicistError("settings have no version")
        version = data["version"]
        # Shown short: a file's version or names may be any length (an int too long to print).
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise MosaicistError(f"settings version {shown_value(version)} is not valid")
        if version > SETTINGS_VERSION:
            raise MosaicistError(
                f"settings of version {shown_value(version)} are newer than this mosaicist "
                f"reads ({SETTINGS_VERSION}); upgrade mosaicist"
            )
        values = {name: value for name, value in data.items() if name != "version"}
        unknown = set(values) - set(_fields())
        if unknown:
            names = sorted(shown_value(name).strip("'") for name in unknown)
            raise MosaicistError(f"unknown settings: {', '.join(names[:SHOWN_NAMES])}"
                                 f"{_more(len(names))}")
        # Every setting is written, so a missing one did not exist yet: the mosaic
        # was made as the seed's method does without it.
        for declared in settings():
            values.setdefault(declared.name, "seed" if declared.name == "preset"
                              else declared.default)
        for name in ("tint", "tint_max"):
            # Written before tints were kept in hundredths: 0.004 was matched as no
            # tint, which it now is, rather than a file refused.
            value = values[name]
            if isinstance(value, float) and 0 < value < 0.005:
                values[name] = 0.0
        values |= _dzi_layout_in_range(values["dzi_tile_size"], values["dzi_overlap"])
        return cls(**values)


#: The largest Deep Zoom tile side that files were once written with (read, brought into
#: :data:`DZI_TILE_SIZE_RANGE`).
_OLD_DZI_TILE_SIZE_HIGH = 4096


def _dzi_layout_in_range(tile_size: object, overlap: object) -> dict[str, int]:
    """A saved Deep Zoom layout brought into :data:`DZI_TILE_SIZE_RANGE`, when it is whole.

    Files written when any tile side from 1 to 4096 was taken are read, not
    refused: the layout only cuts the output into files, so the nearest side
    allowed (and an overlap within half of it) draws the same picture. Values
    of the wrong kind are left for the settings' own checks to refuse.
    """
    whole = _scalar_types(int, "integer")
    if not isinstance(tile_size, whole) or isinstance(tile_size, bool):
        return {}
    if not 1 <= int(tile_size) <= _OLD_DZI_TILE_SIZE_HIGH:
        # Never taken (0, -5, a million): the settings' own check refuses it by name.
        return {}
    low, high = DZI_TILE_SIZE_RANGE
    side = min(max(int(tile_size), low), high)
    if side == tile_size:
        return {}
    layout = {"dzi_tile_size": side}
    if isinstance(overlap, whole) and not isinstance(overlap, bool):
        # A side of 4096 took overlaps up to 2048; only a side made smaller moves it.
        layout["dzi_overlap"] = min(int(overlap), side // 2)
    return layout


def _checked_init(generated: Callable[..., None]) -> Callable[..., None]:
    """The dataclass's ``__init__``, refusing unknown keywords with the nearest setting's name.

    Python's own ``TypeError`` ("unexpected keyword argument 'max_use'")
    suggested nothing, where :meth:`MosaicOptions.replace` and ``make_mosaic``
    do.
    """
    @functools.wraps(generated)
    def init(self: MosaicOptions, *args: Any, **kwargs: Any) -> None:
        unknown = set(kwargs) - set(_fields())
        if unknown:
            raise unknown_settings(unknown)
        generated(self, *args, **kwargs)

    return init


MosaicOptions.__init__ = _checked_init(MosaicOptions.__init__)  # type: ignore[method-assign]


@cache
def _fields() -> tuple[str, ...]:
    return tuple(item.name for item in dataclasses.fields(MosaicOptions)
                 if _SETTING in item.metadata)


@cache
def settings() -> tuple[Setting, ...]:
    """Return the declaration of every setting, in the order of :class:`MosaicOptions`."""
    hints = typing.get_type_hints(MosaicOptions)
    declared = []
    for item in dataclasses.fields(MosaicOptions):
        if _SETTING not in item.metadata:
            continue
        hint = hints[item.name]
        arguments = typing.get_args(hint)
        optional = isinstance(hint, types.UnionType) and type(None) in arguments
        kind = next(arg for arg in arguments if arg is not type(None)) if optional else hint
        metadata = dict(item.metadata[_SETTING])
        if metadata["flag"] == "":
            metadata["flag"] = "--" + item.name.replace("_", "-")
        declared.append(Setting(name=item.name, kind=kind,
                                optional=optional, **metadata))
    return tuple(declared)


def setting_names() -> tuple[str, ...]:
    """Return the name of every setting, in the order of :class:`MosaicOptions`."""
    return _fields()


def setting_named(name: str) -> Setting:
    """Return the declaration of the setting ``name``.

    Raises
    ------
    KeyError
        When no setting has that name.
    """
    for declared in settings():
        if declared.name == name:
            return declared
    raise KeyError(name)
