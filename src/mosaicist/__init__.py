"""mosaicist: fast, exact and scalable photomosaics.

The pipeline, in reading order (each stage a module or package)::

    sources -> library --+
                         +-> match -> placements -> render -> image / Deep Zoom -> viewer
    target  -> grid -----+                               \\-> metrics (report)

with :mod:`~mosaicist.options` (every setting, declared once),
:mod:`~mosaicist.pipeline` (:func:`make_mosaic`) and :mod:`~mosaicist.cli` on
top. See ``docs/architecture.md``.
"""

from .errors import MosaicistError, OptionError
from .grid import Geometry, Grid, make_grid
from .library import TileLibrary
from .match import Matcher, register_matcher
from .options import MosaicOptions
from .pipeline import Mosaic, make_mosaic
from .placements import Placements
from .render import OutputFormat, register_format

__all__ = [
    "Geometry",
    "Grid",
    "Matcher",
    "Mosaic",
    "MosaicOptions",
    "MosaicistError",
    "OptionError",
    "OutputFormat",
    "Placements",
    "TileLibrary",
    "make_grid",
    "make_mosaic",
    "register_format",
    "register_matcher",
]

__version__ = "0.1.0"
