"""The tile library: an on-disk, incrementally updated index of tile thumbnails.

A source (:mod:`mosaicist.sources`) lists and decodes tile images; the
library indexes them once at the size they are compared at (``match_px``
wide, of the cells' aspect, each photo cut by its crop window),
in a packed memory-mapped array with an SQLite manifest, and later updates
decode only what changed. See :class:`TileLibrary`.
"""

from ._index import (
    MissingIndexError,
    TileLibrary,
    TileStamp,
    UpdateStats,
    stored_stamps,
    stored_windows,
)

__all__ = ["MissingIndexError", "TileLibrary", "TileStamp", "UpdateStats", "stored_stamps",
           "stored_windows"]
