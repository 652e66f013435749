"""The shape of cells and tiles: an aspect ratio ``W:H`` and the sizes it gives.

Every size a user gives (``--cell``, ``--tile-px``, ``--match-px``) is a
*width*; the height follows from the aspect, rounded to the nearest whole
pixel and at least one: :func:`height_for`. A ``1:1`` aspect (the default)
gives square cells and tiles, as before aspects existed.
"""

from __future__ import annotations

import math
import re

from .errors import OptionError

#: The square aspect, the default.
SQUARE = (1, 1)
#: Largest ratio between the sides (a tile 16 times wider than high, or higher than wide).
MOST_ELONGATED = 16

_ASPECT = re.compile(r"^\s*(\d{1,4})\s*[:x/]\s*(\d{1,4})\s*$")


def parse_aspect(text: str) -> tuple[int, int]:
    """Read ``"W:H"`` (also ``"WxH"``, ``"W/H"``) as a reduced ``(W, H)`` pair.

    Raises
    ------
    OptionError
        Naming ``aspect``, for text that is not two positive whole numbers or
        for sides more than :data:`MOST_ELONGATED` times apart.

    Examples
    --------
    >>> parse_aspect("3:2"), parse_aspect("1920x1080"), parse_aspect("1:1")
    ((3, 2), (16, 9), (1, 1))
    """
    found = _ASPECT.match(text) if isinstance(text, str) else None
    if found is None or int(found.group(1)) == 0 or int(found.group(2)) == 0:
        raise OptionError("{aspect} must be two positive whole numbers as W:H (e.g. 3:2), "
                          "got {value!r}", value=text)
    width, height = int(found.group(1)), int(found.group(2))
    if max(width, height) > MOST_ELONGATED * min(width, height):
        raise OptionError("{aspect} {value} is more elongated than 1:{most}",
                          value=text, most=MOST_ELONGATED)
    common = math.gcd(width, height)
    return width // common, height // common


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
