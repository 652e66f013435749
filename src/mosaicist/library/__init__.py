"""The tile library: an on-disk, incrementally updated index of tile thumbnails.

A source (:mod:`mosaicist.sources`) lists and decodes tile images; the
library indexes them once at the side they are compared at (``match_px``),
in a packed memory-mapped array with an SQLite manifest, and later updates
decode only what changed. See :class:`TileLibrary`.
"""

from ._index import TileLibrary, UpdateStats

__all__ = ["TileLibrary", "UpdateStats"]
