"""mosaicist: fast, exact and scalable photomosaics."""

from .errors import MosaicistError
from .grid import Geometry, Grid, make_grid
from .library import TileLibrary
from .mosaic import Mosaic, make_mosaic
from .placements import Placements

__all__ = [
    "Geometry",
    "Grid",
    "Mosaic",
    "MosaicistError",
    "Placements",
    "TileLibrary",
    "make_grid",
    "make_mosaic",
]

__version__ = "0.1.0"
