"""mosaicist: fast, exact and scalable photomosaics.

The pipeline, in reading order (each stage a module or package)::

    sources -> library --+
                         +-> match -> placements -> render -> image / Deep Zoom -> viewer
    target  -> grid -----+                               \\-> metrics (report)

with :mod:`~mosaicist.options` (every setting, declared once),
:mod:`~mosaicist.pipeline` (:func:`make_mosaic`) and :mod:`~mosaicist.cli` on
top. See ``docs/architecture.md``.

The names below are imported on first use, so that a command that needs one
stage (``mosaicist index``) does not pay for importing all of them. A plugin
(``docs/architecture.md``) needs only these: :class:`Matcher`, the
:class:`MatchRequest` it is given and the :class:`MatchResult` it returns,
:func:`register_matcher`; :class:`OutputFormat`, the :class:`Picture` it
writes, :func:`register_format`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

    from .errors import MosaicistError, OptionError
    from .grid import Geometry, Grid, make_grid
    from .library import TileLibrary
    from .match import Matcher, MatchRequest, MatchResult, register_matcher
    from .options import MosaicOptions
    from .pipeline import Mosaic, make_mosaic
    from .placements import Placements
    from .render import OutputFormat, Picture, register_format

#: Public name -> the module that defines it.
_PUBLIC = {
    "Geometry": "grid",
    "Grid": "grid",
    "MatchRequest": "match",
    "MatchResult": "match",
    "Matcher": "match",
    "Mosaic": "pipeline",
    "MosaicOptions": "options",
    "MosaicistError": "errors",
    "OptionError": "errors",
    "OutputFormat": "render",
    "Picture": "render",
    "Placements": "placements",
    "TileLibrary": "library",
    "make_grid": "grid",
    "make_mosaic": "pipeline",
    "register_format": "render",
    "register_matcher": "match",
}

__all__ = [
    "Geometry",
    "Grid",
    "MatchRequest",
    "MatchResult",
    "Matcher",
    "Mosaic",
    "MosaicOptions",
    "MosaicistError",
    "OptionError",
    "OutputFormat",
    "Picture",
    "Placements",
    "TileLibrary",
    "make_grid",
    "make_mosaic",
    "register_format",
    "register_matcher",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        import importlib

        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    # The public names and the module's own dunders; not the helpers of this file
    # (TYPE_CHECKING, annotations), which are no API.
    return sorted([*__all__, *(name for name in globals() if name.startswith("__"))])
