"""Errors that are reported to the user as one clear line."""

from __future__ import annotations

import string
import sys
import unicodedata
from collections.abc import Callable, Iterable
from typing import Any


class MosaicistError(Exception):
    """A problem with the user's input or environment.

    The command line prints ``str(error)`` as one line on stderr and exits
    with a non-zero status, without a traceback.
    """


class SourceError(MosaicistError):
    """A tile source that cannot be resolved or read at all."""


class DownloadError(MosaicistError):
    """A download failed or its checksum did not match."""


class OptionError(MosaicistError, ValueError):
    """A setting whose value mosaicist cannot use; the message names the parameter.

    The message is a template in which every ``{name}`` that is not among
    ``values`` is a parameter: ``str(error)`` shows it as the Python name
    (``max_uses``), and :meth:`message` lets the command line show the flag
    that sets it instead (``--max-uses``). Values are inserted as they are,
    never parsed as template text.

    Parameters
    ----------
    template : str
        E.g. ``"{max_uses} must be at least 1, got {value}"``.
    **values : object
        The non-parameter fields of the template.

    Examples
    --------
    >>> error = OptionError("{max_uses} must be at least 1, got {value}", value=0)
    >>> str(error)
    'max_uses must be at least 1, got 0'
    >>> error.message(lambda name: "--" + name.replace("_", "-"))
    '--max-uses must be at least 1, got 0'
    >>> error.parameters
    ('max_uses',)
    """

    def __init__(self, template: str, **values: object) -> None:
        self.template = template
        self.values = values
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field]
        self.parameters = tuple(dict.fromkeys(f for f in fields if f not in values))
        super().__init__(self.message())

    def message(self, name_of: Callable[[str], str] = str) -> str:
        """Return the message with each parameter shown as ``name_of(parameter)``.

        Parameters
        ----------
        name_of : callable
            Turns a parameter's Python name into the name to show, such as the
            command line's flag; by default the Python name itself.

        Returns
        -------
        str
            The message, with the values inserted as they are.
        """
        names = {parameter: name_of(parameter) for parameter in self.parameters}
        return self.template.format(**names, **self.values)

    def __reduce__(self) -> tuple:
        # Exceptions pickle their args; ours are keyword values (worker processes), and
        # a subclass comes back as itself (whose __init__ takes the template and values).
        return (_rebuild_option_error, (type(self), self.template, self.values))


def _rebuild_option_error(kind: type[OptionError], template: str, values: dict
                          ) -> OptionError:
    return kind(template, **values)


def naming_identical(error: OptionError, dropped: int, near_duplicates: int = 0, *,
                     limit: int | None = None, tiles: int = 0) -> OptionError:
    """``error``, where it counts the library's tiles, saying that ``dropped`` were left out.

    ``identical_photos="drop"`` (the default preset's) counts each set of
    identical photos once: 30 copies of one picture are a library of one
    tile, and a refusal for too few tiles should say where the others went;
    so should one after ``dedupe`` left near-duplicates out. Errors that do
    not count the library (``"the library has {tiles}"``), or already say
    this, come back as they are.

    Parameters
    ----------
    error : OptionError
        The refusal.
    dropped : int
        Photos left out as identical to another.
    near_duplicates : int
        Photos left out as near-duplicates of another (``dedupe``).
    limit, tiles : int, optional
        The ``limit`` setting, and the tiles the library counts (limited or
        not): where the limit takes as many as it may, the photos left out
        change nothing (keeping them does not lengthen the first ``limit``)
        and are not named (it advised ``identical_photos keep`` in vain).

    Returns
    -------
    OptionError
        ``error`` itself, or a copy of it with the count of those left out.
    """
    counted_at = "the library has {tiles}"
    if limit is not None and tiles >= limit:
        return error
    if (not (dropped or near_duplicates) or type(error) is not OptionError
            or counted_at not in error.template or "dropped" in error.values
            or "near_dropped" in error.values):
        return error
    reasons, values = [], {}
    if dropped:
        reasons.append("{dropped} left out as identical to another: {identical_photos} keep "
                       "keeps them")
        values["dropped"] = f"{dropped:,}"
    if near_duplicates:
        reasons.append("{near_dropped} left out as near-duplicates of another under {dedupe}")
        values["near_dropped"] = f"{near_duplicates:,}"
    template = error.template.replace(counted_at, counted_at + " (" + "; ".join(reasons) + ")")
    return OptionError(template, **values, **error.values)


def check_range(
    parameter: str, value: object, low: int | float, high: int | float | None = None,
    unit: str = "", *, whole: bool = False,
) -> Any:
    """Raise :class:`OptionError` unless ``value`` is a number and ``low <= value <= high``.

    The type is checked before the range, so that a text, None or a bool is
    refused by name rather than compared (a bool is an int to Python, and
    ``True`` would pass a range of whole numbers).

    Parameters
    ----------
    parameter : str
        Name of the parameter, shown in the message.
    value : object
        Its value: an int or float, or a NumPy integer or floating scalar;
        with ``whole``, an int or a NumPy integer scalar only.
    low, high : int or float
        Inclusive limits; ``high`` None means no upper limit.
    unit : str
        Unit named after the limits (``"pixels"``).
    whole : bool
        Whether the value must be a whole number (a float such as ``32.0``
        is refused: it would end up in file names and array shapes).

    Returns
    -------
    int or float
        ``value`` as a Python ``int`` (with ``whole``, or when it is an
        integer) or ``float``, ready for file names and messages.

    Raises
    ------
    OptionError
        Naming ``parameter``, for a value of the wrong type or out of range.

    Examples
    --------
    >>> import numpy as np
    >>> check_range("match_px", np.int64(16), 1, 1024, whole=True)
    16
    >>> check_range("match_px", "32", 1, 1024, whole=True)
    Traceback (most recent call last):
    ...
    mosaicist.errors.OptionError: match_px must be a whole number, got '32'
    """
    number = as_number(parameter, value, whole=whole)
    if not (number >= low if high is None else low <= number <= high):
        # The value as given (the command line shows the text typed: "--tint 5", "got 5").
        raise OptionError("{" + parameter + "} must be {range}, got {value}",
                          range=range_wording(low, high, unit), value=number)
    return number


def range_wording(low: int | float, high: int | float | None = None, unit: str = "") -> str:
    """A range as messages say it after "must be": ``"between 1 and 1024 pixels"``.

    Whole limits are shown as whole numbers (``0``, not ``0.0``), and a unit
    given in the plural agrees with a single 1 (``"at least 1 pixel"``).

    Parameters
    ----------
    low, high : int or float
        Inclusive limits; ``high`` None means no upper limit.
    unit : str
        Unit named after the limits, in the plural (``"pixels"``).

    Returns
    -------
    str
        ``"at least LOW UNIT"`` or ``"between LOW and HIGH UNIT"``.

    Examples
    --------
    >>> range_wording(1, unit="pixels"), range_wording(0.0, 1.0), range_wording(0.01, 1000)
    ('at least 1 pixel', 'between 0 and 1', 'between 0.01 and 1000')
    """
    unit = f" {unit}" if unit else ""
    if high is None:
        # "at least 1 pixel", not "1 pixels" (units are given in the plural).
        least = unit[:-1] if low == 1 and unit.endswith("s") else unit
        return f"at least {_limit_shown(low)}{least}"
    return f"between {_limit_shown(low)} and {_limit_shown(high)}{unit}"


def _limit_shown(limit: int | float) -> str:
    if isinstance(limit, float) and limit.is_integer():
        return str(int(limit))
    return str(limit)


def as_number(parameter: str, value: object, *, whole: bool = False) -> Any:
    """``value`` as a Python ``int`` or ``float``, or :class:`OptionError` naming ``parameter``.

    Accepts Python ints and floats and NumPy integer and floating scalars
    (``np.int64(16)``, what indexing an array gives); refuses bools (NumPy's
    too), texts, None and everything else. With ``whole``, floats are
    refused too, even ``32.0``.

    Examples
    --------
    >>> import numpy as np
    >>> as_number("tint", np.float32(0.5)), as_number("cell_px", np.int64(8), whole=True)
    (0.5, 8)
    """
    # A NumPy scalar exists only once NumPy is imported: the checks do not import it (the
    # command line checks its settings before any stage, or help, needs NumPy).
    numpy = sys.modules.get("numpy")
    if isinstance(value, bool) or (numpy is not None and isinstance(value, numpy.bool_)):
        pass  # refused below: True is no count of pixels
    elif isinstance(value, int) or (numpy is not None and isinstance(value, numpy.integer)):
        return int(value)
    elif not whole and (isinstance(value, float)
                        or (numpy is not None and isinstance(value, numpy.floating))):
        return float(value)
    raise OptionError("{" + parameter + "} must be {kind}, got {value!r}",
                      kind="a whole number" if whole else "a number", value=value)


def as_flag(parameter: str, value: object) -> bool:
    """``value`` as a ``bool``, or :class:`OptionError` naming ``parameter``.

    Accepts Python's and NumPy's bools; refuses everything else, where
    Python's truth would take ``"no"`` for true and ``0`` for false.

    Examples
    --------
    >>> import numpy as np
    >>> as_flag("quiet", np.True_), as_flag("quiet", False)
    (True, False)
    """
    numpy = sys.modules.get("numpy")
    if isinstance(value, bool) or (numpy is not None and isinstance(value, numpy.bool_)):
        return bool(value)
    try:
        shown = repr(value)
    except Exception:  # noqa: BLE001 - a hostile object's repr: said by its type
        shown = ""
    if not shown or len(shown) > 60:
        shown = shown_type(value)
    raise OptionError("{" + parameter + "} must be true or false, got {value}", value=shown)


def shown_type(value: object) -> str:
    """A value of the wrong type as messages show it: short numbers and None as they are
    (``5``, ``None``, ``b'x'``), anything else by its type (``a dict``), never a long repr."""
    if value is None or (isinstance(value, int | float | bytes) and len(repr(value)) <= 40):
        return repr(value)
    name = type(value).__name__
    # "an" before a vowel's sound: NumPy's ndarray is said "en-dee-array".
    vowel = name[:1].lower() in "aeiou" or name.startswith("nd")
    return f"{'an' if vowel else 'a'} {name}"


#: Escapes of the control characters most often found in names.
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    r"""``text`` (a message, or a file name in one) with its non-printable characters escaped.

    A newline in a file name would split a one-line message, and an escape
    character (ESC) would reach the terminal as a control sequence; each
    such character is written as :func:`ascii` writes it (``\n``,
    ``\x1b``, ``\u202e``), and a byte of a name that is not UTF-8 (a lone
    surrogate, as :func:`os.fsdecode` gives it) as ``\xHH``. Printable
    characters, accented letters included, are kept. For display only: the
    result is not reversible.

    Examples
    --------
    >>> printable("bad\nname\x1b[31m.png")
    'bad\\nname\\x1b[31m.png'
    >>> printable("café.jpg")
    'café.jpg'
    >>> printable("Screenshot 10.42.17\u202fPM.png") == "Screenshot 10.42.17\u202fPM.png"
    True
    """
    if text.isprintable():
        return text  # the common case, checked at C speed
    # Spaces other than ' ' (a no-break space, macOS's narrow one in screenshot names)
    # are not "printable" to Python, but print as spaces: kept.
    return "".join(character if character.isprintable()
                   or unicodedata.category(character) == "Zs" else _escaped(character)
                   for character in text)


def _escaped(character: str) -> str:
    if character in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[character]
    code = ord(character)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def counted(count: int, word: str, plural: str | None = None) -> str:
    """``count`` with thousands separators and ``word`` agreeing with it.

    The one way messages say how many of something there are.

    Parameters
    ----------
    count : int
        How many.
    word : str
        The singular (``"tile"``, ``"3:2 cell"``).
    plural : str, optional
        The plural where it is not ``word`` + ``"s"`` (``"matches"``).

    Returns
    -------
    str
        E.g. ``"1 tile"``, ``"1,500 tiles"``, ``"0 tiles"``.

    Examples
    --------
    >>> counted(1, "tile"), counted(1500, "tile"), counted(0, "group")
    ('1 tile', '1,500 tiles', '0 groups')
    >>> counted(2240, "3:2 cell"), counted(2, "match", "matches")
    ('2,240 3:2 cells', '2 matches')
    """
    return f"{count:,} {word if count == 1 else plural or word + 's'}"


def alternatives(names: Iterable[str]) -> str:
    """Choices as messages list them: ``"a, b or c"`` (``"use centre or subject"``).

    Parameters
    ----------
    names : iterable of str
        The choices, in the order to give them.

    Returns
    -------
    str
        The names joined by commas, the last by "or".

    Examples
    --------
    >>> alternatives(["centre", "subject"]), alternatives(["seed", "lab", "oklab"])
    ('centre or subject', 'seed, lab or oklab')
    >>> alternatives(["cpu"])
    'cpu'
    """
    choices = list(names)
    if len(choices) < 2:
        return "".join(choices)
    return f"{', '.join(choices[:-1])} or {choices[-1]}"


def install_extra(extra: str) -> str:
    """The command that installs an optional extra, as messages give it.

    mosaicist installs from its checkout (it is not on PyPI, where
    ``pip install "mosaicist[gpu]"`` would find nothing).

    Examples
    --------
    >>> install_extra("gpu")
    'python3 -m pip install ".[gpu]" in the mosaicist checkout'
    """
    return f'python3 -m pip install ".[{extra}]" in the mosaicist checkout'
