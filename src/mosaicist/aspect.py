"""The shape of cells and tiles: an aspect ratio ``W:H`` and the sizes it gives.

Every size a user gives (``--cell``, ``--tile-px``, ``--match-px``) is a
*width*; the height follows from the aspect, rounded to the nearest whole
pixel and at least one: :func:`height_for`. A ``1:1`` aspect (the default)
gives square cells and tiles, as before aspects existed.
"""

from __future__ import annotations

import math
import re
import sys

from .errors import OptionError

#: The square aspect, the default.
SQUARE = (1, 1)
#: Largest ratio between the sides (a tile 16 times wider than high, or higher than wide).
MOST_ELONGATED = 16

#: Most digits of a side: a screen's resolution (``1920x1080``) fits, and a side is never so
#: long that it costs time to read or shows up unreadable in a folder name.
MOST_DIGITS = 4

# ASCII digits only: "\d" also takes other scripts' digits ("１:２"), which a typo
# or a pasted character can bring in unseen.
_ASPECT = re.compile(r"^\s*(\d+)\s*[:x/]\s*(\d+)\s*$", re.ASCII)


def parse_aspect(text: str) -> tuple[int, int]:
    """Read ``"W:H"`` (also ``"WxH"``, ``"W/H"``) as a reduced ``(W, H)`` pair.

    Raises
    ------
    OptionError
        Naming ``aspect`` and the reason: text that is not two positive whole
        numbers, sides more than :data:`MOST_ELONGATED` times apart, or a side
        of more than :data:`MOST_DIGITS` digits.

    Examples
    --------
    >>> parse_aspect("3:2"), parse_aspect("1920x1080"), parse_aspect("1:1")
    ((3, 2), (16, 9), (1, 1))
    """
    found = _ASPECT.match(text) if isinstance(text, str) else None
    if found is None:
        raise OptionError("{aspect} must be two positive whole numbers as W:H (e.g. 3:2), "
                          "got {value}", value=_repr(text))
    # Leading zeros say nothing, and int() refuses a string of thousands of digits even
    # when all but one are zeros.
    sides = [side.lstrip("0") or "0" for side in found.groups()]
    if any(len(side) > 2 * MOST_DIGITS for side in sides):
        # So long that no ratio or reduction is worth working out (nor int() allowed).
        raise OptionError("{aspect} sides must have at most {digits} digits, got {value}",
                          digits=MOST_DIGITS, value=_repr(text))
    return _checked(int(sides[0]), int(sides[1]), text)


def aspect_pair(aspect: object) -> tuple[int, int]:
    """``aspect`` checked and reduced: ``"3:2"`` or ``(6, 4)`` -> ``(3, 2)``.

    For the Python API, where an aspect is given as text (see
    :func:`parse_aspect`) or as a pair of whole numbers (Python or NumPy
    ints; a list will do).

    Raises
    ------
    OptionError
        Naming ``aspect``, for anything else (``5``, ``(1, 2, 3)``,
        ``(1.5, 1)``) and for pairs :func:`parse_aspect` would refuse.

    Examples
    --------
    >>> aspect_pair("3:2"), aspect_pair((6, 4)), aspect_pair([1, 1])
    ((3, 2), (3, 2), (1, 1))
    """
    if isinstance(aspect, str):
        return parse_aspect(aspect)
    # A NumPy integer exists only once NumPy is imported: checking an aspect does not import it.
    numpy = sys.modules.get("numpy")
    whole_types: tuple[type, ...] = (int,) if numpy is None else (int, numpy.integer)
    if (isinstance(aspect, tuple | list) and len(aspect) == 2
            and all(isinstance(side, whole_types) and not isinstance(side, bool)
                    for side in aspect)):
        width, height = (int(side) for side in aspect)
        if width > 0 and height > 0:
            return _checked(width, height, aspect)
    raise OptionError("{aspect} must be a text W:H (e.g. '3:2') or a pair of positive whole "
                      "numbers (W, H), got {value}", value=_repr(aspect))


def _checked(width: int, height: int, shown: object) -> tuple[int, int]:
    """``(width, height)`` reduced, or :class:`OptionError` saying why it cannot be used."""
    if width <= 0 or height <= 0:
        raise OptionError("{aspect} must be two positive whole numbers as W:H (e.g. 3:2), "
                          "got {value}", value=_repr(shown))
    if max(width, height) > MOST_ELONGATED * min(width, height):
        # Said the way round it was given: 1000:1 is wider than 16:1, not 1:16.
        most = f"{MOST_ELONGATED}:1" if width > height else f"1:{MOST_ELONGATED}"
        raise OptionError("{aspect} {value} is more elongated than {most}",
                          value=_shown(shown), most=most)
    limit = 10 ** MOST_DIGITS
    if width >= limit or height >= limit:
        raise OptionError("{aspect} sides must have at most {digits} digits, got {value}",
                          digits=MOST_DIGITS, value=_repr(shown))
    common = math.gcd(width, height)
    return width // common, height // common


def _repr(value: object) -> str:
    """``value`` for a message, short whatever it holds (see ``options.shown_value``)."""
    from .options import shown_value

    return shown_value(value)


def _shown(aspect: object) -> str:
    """An aspect as the user gave it, for messages: text as it is, a pair as ``W:H``."""
    if isinstance(aspect, str):
        # Leading zeros pass the length check of the sides: a text of any length gets here.
        return aspect if len(aspect) <= 40 else _repr(aspect)
    # A pair's sides may be ints too long to print (10**5000): shown by their length.
    return f"{_repr(aspect[0])}:{_repr(aspect[1])}"  # type: ignore[index]


def height_for(width: int, aspect: tuple[int, int]) -> int:
    """Height in pixels of a cell or tile ``width`` pixels wide at ``aspect``.

    Examples
    --------
    >>> height_for(16, (3, 2)), height_for(32, (4, 3)), height_for(32, (2, 3))
    (11, 24, 48)
    """
    aspect_width, aspect_height = aspect
    return max(1, (2 * width * aspect_height + aspect_width) // (2 * aspect_width))


def format_aspect(aspect: tuple[int, int]) -> str:
    """``(3, 2)`` -> ``"3:2"``."""
    return f"{aspect[0]}:{aspect[1]}"
