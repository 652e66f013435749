"""Placements: which tile, transformed and tinted how, goes in which cell.

Matching makes them; rendering and reporting use them. They are saved as CSV
(one row per cell) and as JSON: the same cells plus everything needed to
render again without matching (the tile source, the target and its crop, and
the mosaic's settings, serialised by :meth:`MosaicOptions.to_json
<mosaicist.options.MosaicOptions.to_json>`)::

    {"format": "mosaicist-placements", "version": 2,
     "source": "photos/", "target": "/abs/bear.jpg", "crop": {"left": 3, "top": 0},
     "settings": {"version": 4, "preset": "seed", "cell_px": 16, "tile_px": 32, ...},
     "rows": 63, "cols": 80,
     "cells": {"tile": [...], "position": [...], "distance": [...],
               "transform": [...], "tint": [[...], ...]}}

Files of version 1 (settings as top-level keys) are still read.

A contrast transfer adds ``cells.gain`` (three positive numbers a cell) and a
chroma transfer ``cells.chroma`` (a number from 0 to 1 a cell), each only
where some value is not 1; CSV files then have the columns ``gain_0..2`` and
``chroma``, where an empty field reads as 1.

Where tiles are changed (a tint, gains or chroma factors), ``cells.mean``
(three numbers a cell; CSV columns ``mean_0..2``) records each cell's tile
mean as the matcher measured it: its index thumbnail's, in the metric's
8-bit encoding and the metric's units. The change is drawn about it, so
that a tile drawn at another size than it was matched (a print's, from its
original, whose mean differs a little from its thumbnail's) is given the
colour that was scored; a render of the file draws what the make drew.
Files without it (written before it was recorded) are drawn about each
drawn tile's own mean.

Placements of local files and image arrays add ``"hashes": {"tile id":
"content hash", ...}`` (:func:`mosaicist.imaging.content_hash` of each
placed tile's file, or of its image's bytes in the array, when it was
matched), so that a later render can say which tiles changed since
(:func:`mosaicist.render.changed_tiles`); readers that do not know the key
ignore it. Where the library's index changed since it was read (another
run updated it), the hashes as they were are not known: the file is saved
without them, with one warning line saying so.

Placements of a target read from a file add ``"target_pixels": {"width": W,
"height": H, "hash": "content hash"}`` (:class:`TargetPixels`: the target's
size and the content hash of its pixels as they were matched), so that a
later render's overlay can say that the target changed since
(:func:`mosaicist.render.placements_renderer`); files without it (written
before it was recorded, or of a target given in memory) are not checked. A
file whose crop puts its grid outside the target it records is refused when
read.

Adaptive cells (cells of several sizes, see :mod:`mosaicist.adaptive`) add
``cells.rect``: each cell's ``[x, y, w, h]`` in level-0 cells (a level-``d``
cell is ``2^-d`` a side, at a multiple of its side), and such files are of
version 3; files without it are uniform grids. CSV files then have the
columns ``x,y,w,h`` too (``row`` and ``col`` name the level-0 cell).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import itertools
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MosaicistError, OptionError, alternatives, counted, printable, shown_type
from .imaging import content_hash
from .options import MosaicOptions
from .paths import atomic_path, dangling_link, expanded
from .transforms import SHAPE_KEEPING, TRANSFORM_NAMES, transform_code

CSV_HEADER = (
    "row", "col", "tile", "distance", "position", "transform", "tint_0", "tint_1", "tint_2",
)
#: Columns added when a contrast transfer set gains.
GAIN_HEADER = ("gain_0", "gain_1", "gain_2")
#: Column added when a chroma transfer set factors.
CHROMA_HEADER = ("chroma",)
#: Columns of the tiles' means as the matcher measured them (where tiles are changed).
MEAN_HEADER = ("mean_0", "mean_1", "mean_2")
JSON_FORMAT = "mosaicist-placements"
JSON_VERSION = 2
#: Version of files with cell rectangles (adaptive cells).
RECT_VERSION = 3
#: CSV columns of cell rectangles.
RECT_HEADER = ("x", "y", "w", "h")
#: Most levels a cell rectangle may be split by (sides down to 2^-this).
MAX_RECT_LEVEL = 16
#: Settings that version 1 files kept as top-level keys.
_V1_SETTINGS = ("cell_px", "tile_px", "match_px", "metric", "augment", "tint", "overlay")


@dataclass(frozen=True)
class TargetPixels:
    """A target picture as it was matched: its size and its pixels' content hash.

    Recorded in JSON placements (``target_pixels``), so that a render that
    blends the target over the mosaic (the overlay) can tell a target
    edited, replaced or resized since the make (:meth:`change`).

    Parameters
    ----------
    width, height : int
        The decoded picture's size in pixels (after its EXIF orientation).
    digest : str
        :func:`mosaicist.imaging.content_hash` of its ``(height, width, 3)``
        uint8 RGB pixels, row-major, as :func:`mosaicist.imaging.read_target`
        decodes them with the placements' ``colour_profiles``.

    Raises
    ------
    OptionError
        For sizes that are not whole numbers of at least 1, or a digest that
        is not a content hash (32 hex digits).
    """

    width: int
    height: int
    digest: str

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer) \
                    or value < 1:
                raise OptionError("{" + name + "} must be a whole number of at least 1, "
                                  "got {value}", value=_shown(value))
            object.__setattr__(self, name, int(value))
        if not _is_content_hash(self.digest):
            raise OptionError("{digest} must be a content hash (32 hex digits), got {value}",
                              value=_shown(self.digest))

    @classmethod
    def of(cls, pixels: np.ndarray) -> TargetPixels:
        """The size and content hash of a decoded target, ``(H, W, 3)`` uint8."""
        whole = np.ascontiguousarray(pixels, np.uint8)
        return cls(whole.shape[1], whole.shape[0], content_hash(whole.data.cast("B")))

    def change(self, pixels: np.ndarray) -> str | None:
        """What differs in ``pixels`` (the target as read now) from this record; None: nothing.

        Returns
        -------
        str or None
            ``"1,200x800 px then, 600x400 now"`` for a resized (or replaced)
            picture, ``"same 600x400 px, other pixels"`` for an edited one.
        """
        height, width = pixels.shape[:2]
        if (width, height) != (self.width, self.height):
            return f"{self.width:,}x{self.height:,} px then, {width:,}x{height:,} now"
        if TargetPixels.of(pixels).digest != self.digest:
            return f"same {width:,}x{height:,} px, other pixels"
        return None

    def to_json(self) -> dict[str, Any]:
        """The record as placements files hold it."""
        return {"width": self.width, "height": self.height, "hash": self.digest}

    @classmethod
    def from_json(cls, value: object) -> TargetPixels:
        """Read :meth:`to_json`'s object, or raise a ValueError naming the bad field."""
        if not isinstance(value, Mapping):
            # As _field names the other fields' types ("crop must be an object, got str").
            raise ValueError(f"target_pixels must be an object, got {type(value).__name__}")
        width = _count(_field(value, "width", int, "a whole number", "target_pixels."),
                       "target_pixels.width")
        height = _count(_field(value, "height", int, "a whole number", "target_pixels."),
                        "target_pixels.height")
        digest = _field(value, "hash", str, "a text", "target_pixels.")
        if not _is_content_hash(digest):
            raise ValueError(f"target_pixels.hash is not a content hash (32 hex digits): "
                             f"{_shown(digest)}")
        return cls(width, height, digest)


class Placements:
    """The tile chosen for every cell of a grid.

    Parameters
    ----------
    rows, cols : int
        Grid shape.
    tile : numpy.ndarray
        ``(rows * cols,)`` int64 library position of each cell's tile, row-major.
    distance : numpy.ndarray
        ``(rows * cols,)`` exact objective of each pick (int64; float64 when
        tinting, where it is the distance after the tint).
    source_ids : list of str
        Source id of each cell's tile.
    transform : numpy.ndarray, optional
        ``(rows * cols,)`` int8 transform code of each tile (see
        :data:`mosaicist.transforms.TRANSFORM_NAMES`; 0, the identity, by default).
    gain : numpy.ndarray, optional
        ``(rows * cols, 3)`` float64 factor on each tile's spread around its
        mean, per channel of the same colour space, applied before the tint
        (contrast transfer); ones by default.
    chroma : numpy.ndarray, optional
        ``(rows * cols,)`` float64 factor in ``[0, 1]`` on each tile's chroma
        around its mean (each pixel's deviation less the grey of its
        lightness), applied after the gains; None: chroma kept.
    mean : numpy.ndarray, optional
        ``(rows * cols, 3)`` float64 mean of each cell's tile as the matcher
        measured it (its index thumbnail's, in the 8-bit encoding of
        ``options.metric``, in that space's units, as ``tint``): the tint,
        gains and chroma are drawn about it at any drawn size (see
        :func:`mosaicist.render.dress_tiles`). None (files made before it was
        recorded): each drawn tile's own mean.
    tint : numpy.ndarray, optional
        ``(rows * cols, 3)`` float64 colour shift added to each tile, in the
        units of the colour space of ``options.metric`` (sRGB levels for
        ``seed``, Lab units for ``lab``, Oklab units for ``oklab``); zeros by
        default.
    options : MosaicOptions, optional
        The settings the mosaic was made with (default: ``MosaicOptions()``,
        also for a CSV file, which records none); among them the ``aspect`` of cells and tiles, so
        that a render draws tiles of the same shape.
    source : str, optional
        Spec of the tile source (see :func:`mosaicist.sources.open_source`).
    target : str, optional
        Path of the target picture.
    crop : tuple of int
        ``(left, top)`` of the grid's crop in the target.
    rect : numpy.ndarray, optional
        ``(N, 4)`` ``(x, y, w, h)`` of each cell in level-0 cells, for cells
        of several sizes (adaptive cells): squares of side ``2^-d`` at
        multiples of their side that tile the ``rows x cols`` grid exactly
        (see :func:`check_rects`); the per-cell arrays then have ``N``
        entries in that order. None: the uniform grid, row-major.
    hashes : mapping or callable, optional
        Each placed tile's content hash when it was matched (saved in JSON;
        :func:`mosaicist.render.changed_tiles`), or a function of the placed
        tiles' ids that gives them, called when they are first asked for
        (only a JSON file needs them).
    target_pixels : TargetPixels, optional
        The target's size and pixels' content hash as it was matched (saved
        in JSON with the target), so that a render's overlay can say that
        the target changed since. None: not known.

    Attributes
    ----------
    settings_recorded : bool
        Whether ``options`` are those the mosaic was made with: False for a
        CSV file, which records no settings (its tints may be in another
        metric's units, its photos cut otherwise, its overlay left out).
    path : pathlib.Path or None
        The file the placements were read from (:meth:`read`), for messages
        about them that come later (a placed tile no longer in the library);
        None for placements made in memory.

    Raises
    ------
    ValueError
        When the arrays do not fit a ``rows x cols`` grid, hold values out of
        range (a library position below 0 or past 2^53, a whole-number
        distance past int64, an unknown transform code, a tint or gain
        beyond :data:`MAX_SHIFT`), or a transform turns
        rectangular tiles (a quarter turn or a diagonal mirror);
        :class:`~mosaicist.errors.OptionError` (a ValueError) naming the
        parameter for one of the wrong type (``source`` and ``target`` not
        texts, ``hashes`` that are not 32 hex digits, ``target_pixels`` not
        a :class:`TargetPixels`).
    """

    def __init__(
        self,
        rows: int,
        cols: int,
        tile: np.ndarray,
        distance: np.ndarray,
        source_ids: list[str],
        transform: np.ndarray | None = None,
        tint: np.ndarray | None = None,
        *,
        gain: np.ndarray | None = None,
        chroma: np.ndarray | None = None,
        mean: np.ndarray | None = None,
        options: MosaicOptions | None = None,
        source: str | None = None,
        target: str | None = None,
        crop: tuple[int, int] = (0, 0),
        rect: np.ndarray | None = None,
        hashes: Mapping[str, str] | Callable[[list[str]], Mapping[str, str]] | None = None,
        target_pixels: TargetPixels | None = None,
    ) -> None:
        for name, value in (("rows", rows), ("cols", cols)):
            if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
                raise OptionError("{" + name + "} must be a whole number, got {value}",
                                  value=shown_type(value))
        rows, cols = int(rows), int(cols)
        if options is not None and not isinstance(options, MosaicOptions):
            raise OptionError("{options} must be a MosaicOptions, got {value}",
                              value=shown_type(options))
        count = rows * cols
        if rows < 1 or cols < 1:
            raise ValueError("a grid has at least one row and one column, got "
                             f"{_grid(rows, cols)}")
        # Named, with the shape given: NumPy's "cannot reshape array of size 3 into shape
        # (4)" or "could not convert string to float" named no parameter.
        self.rect = (None if rect is None
                     else _in_rows("rect", _numbers("rect", rect), 4).astype(np.float64))
        if self.rect is not None:
            check_rects(rows, cols, self.rect)
            count = len(self.rect)
        self.rows = rows
        self.cols = cols
        # Checked before the casts: a position 0.5 became tile 0 and a transform code
        # 300 an OverflowError, a NaN distance summed into the objective, an id 5 (or
        # the letters of one text) failed at drawing.
        positions = _numbers("tile", tile, whole=True).reshape(-1)
        # Before the cast: a uint64 position past int64 became a negative one ("tile has a
        # negative library position, -1"), and one past what a placements file holds
        # was kept, written, and refused by read.
        if len(positions) and int(positions.max()) > _MAX_POSITION:
            raise ValueError(f"tile has a library position past {_MAX_POSITION:,}: "
                             f"{int(positions.max()):,}")
        self.tile = positions.astype(np.int64)
        self.distance = _numbers("distance", distance).reshape(-1)
        if self.distance.dtype.kind == "f" and self.distance.dtype.itemsize > 8:
            # np.longdouble: its items are no Python floats, and were written as
            # "np.longdouble('0.1')" (a file read refuses) or raised json's TypeError. One
            # past float64's range becomes infinite, refused below.
            with np.errstate(over="ignore"):
                self.distance = self.distance.astype(np.float64)
        if not np.isfinite(self.distance).all():
            raise ValueError("distance has values that are not finite numbers")
        if np.issubdtype(self.distance.dtype, np.integer) and len(self.distance) and not (
                _INT64[0] <= int(self.distance.min()) and int(self.distance.max()) <= _INT64[1]):
            # A uint64 past int64: kept, written, and refused by read.
            raise ValueError("distance has whole numbers past int64")
        # A list first: a generator was used up by the check of its items, and read as
        # no ids at all ("source_ids has 0 entries").
        ids = (None if isinstance(source_ids, str | bytes) or not isinstance(source_ids, Iterable)
               else list(source_ids))
        if ids is None or not all(isinstance(name, str) for name in ids):
            raise OptionError("{source_ids} must be a list of texts (tile ids), got {value}",
                              value=shown_type(source_ids))
        self.source_ids = ids
        codes = len(TRANSFORM_NAMES)
        if transform is None:
            self.transform = np.zeros(count, np.int8)
        else:
            given = _numbers("transform", transform, whole=True).reshape(-1)
            if len(given) and not (0 <= given.min() and given.max() < codes):
                raise ValueError(f"transform has codes outside 0 to {codes - 1}")
            self.transform = given.astype(np.int8)
        self.tint = (np.zeros((count, 3), np.float64) if tint is None
                     else _in_rows("tint", _numbers("tint", tint), 3).astype(np.float64))
        self.gain = (np.ones((count, 3), np.float64) if gain is None
                     else _in_rows("gain", _numbers("gain", gain), 3).astype(np.float64))
        self.chroma = (np.ones(count, np.float64) if chroma is None
                       else _numbers("chroma", chroma).astype(np.float64).reshape(-1))
        self.mean = (None if mean is None
                     else _in_rows("mean", _numbers("mean", mean), 3).astype(np.float64))
        for name, length in (("tile", len(self.tile)), ("distance", len(self.distance)),
                             ("source_ids", len(self.source_ids)),
                             ("transform", len(self.transform)), ("tint", len(self.tint)),
                             ("gain", len(self.gain)), ("chroma", len(self.chroma)),
                             ("mean", count if self.mean is None else len(self.mean))):
            if length != count:
                raise ValueError(f"{name} has {length:,} entries for a grid of "
                                 f"{_grid(rows, cols)}"
                                 + ("" if self.rect is None else f" split into {count:,}"))
        if len(self.tile) and int(self.tile.min()) < 0:
            raise ValueError(f"tile has a negative library position, {int(self.tile.min())}")
        # Past MAX_SHIFT the colour conversions overflow (warnings, NaN cast to pixels).
        if not (np.abs(self.tint) <= MAX_SHIFT).all():
            raise ValueError(f"tint has values that are not finite numbers within "
                             f"+-{MAX_SHIFT:g}")
        if not ((self.gain > 0) & (self.gain <= MAX_SHIFT)).all():
            raise ValueError(f"gain has values that are not positive numbers up to {MAX_SHIFT:g}")
        if not ((self.chroma >= 0) & (self.chroma <= 1)).all():
            raise ValueError("chroma has values that are not numbers from 0 to 1")
        if self.mean is not None and not (np.abs(self.mean) <= MAX_SHIFT).all():
            raise ValueError(f"mean has values that are not finite numbers within "
                             f"+-{MAX_SHIFT:g}")
        self.options = MosaicOptions() if options is None else options
        if self.options.aspect_ratio[0] != self.options.aspect_ratio[1]:
            turned = np.setdiff1d(np.unique(self.transform), SHAPE_KEEPING)
            if len(turned):
                code = int(turned[0])
                name = TRANSFORM_NAMES[code] if 0 <= code < len(TRANSFORM_NAMES) else str(code)
                kept = alternatives(TRANSFORM_NAMES[code] for code in SHAPE_KEEPING)
                raise ValueError(f"transform {name} does not keep the shape of "
                                 f"{self.options.aspect} tiles (use {kept})")
        # Checked as read checks them: a number or a NUL here made a file read refuses.
        self.source = _given_text(source, "source")
        self.target = _given_text(target, "target")
        # Written as it is, a crop of another shape made a file that read refuses, or a
        # ValueError (unpacking) while writing it.
        if not (isinstance(crop, tuple | list) and len(crop) == 2 and all(
                isinstance(part, int | np.integer) and not isinstance(part, bool | np.bool_)
                and part >= 0 for part in crop)):
            raise OptionError("{crop} must be (left, top), two whole numbers of at least 0, "
                              "got {value}", value=_shown(crop))
        self.crop = (int(crop[0]), int(crop[1]))
        if target_pixels is not None and not isinstance(target_pixels, TargetPixels):
            raise OptionError("{target_pixels} must be a TargetPixels, got {value}",
                              value=shown_type(target_pixels))
        self.target_pixels = target_pixels
        self.settings_recorded = True
        self.path: Path | None = None
        self._hashes = None if hashes is None or callable(hashes) else _given_hashes(hashes)
        self._hash_lookup = hashes if callable(hashes) else None
        # Why the lookup could not give the hashes (None: it gave them, or was not asked),
        # said when a JSON file is written without them.
        self._hashes_missing: str | None = None

    def __repr__(self) -> str:
        return f"Placements({self.rows}x{self.cols}, source={self.source!r})"

    def __getstate__(self) -> dict[str, Any]:
        # The lookup holds the library (memory maps, an index): a copy sent to another
        # process (a Dask worker drawing bands) keeps only what is known.
        state = self.__dict__.copy()
        state["_hash_lookup"] = None
        return state

    @property
    def hashes(self) -> dict[str, str] | None:
        """Each placed tile's content hash when it was matched (None: not known)."""
        if self._hash_lookup is not None:
            lookup, self._hash_lookup = self._hash_lookup, None
            try:
                self._hashes = dict(lookup(list(dict.fromkeys(self.source_ids))))
            except MosaicistError as error:
                self._hashes = None  # an index that cannot say: saved without them
                self._hashes_missing = str(error)
        return self._hashes

    def with_ids_renamed(self, rename: Callable[[str], str]) -> Placements:
        """A copy whose tile ids (and the hashes recorded for them) are ``rename(id)``.

        Parameters
        ----------
        rename : callable
            Each tile id's new id; ids that were distinct must stay distinct.
        """
        renamed = copy.copy(self)
        renamed.source_ids = [rename(source_id) for source_id in self.source_ids]
        hashes = self.hashes
        renamed._hash_lookup = None
        renamed._hashes = (None if hashes is None
                           else {rename(source_id): digest for source_id, digest in hashes.items()})
        return renamed

    def __len__(self) -> int:
        return len(self.tile)

    @property
    def adaptive(self) -> bool:
        """Whether the cells have several sizes (:attr:`rect` is set)."""
        return self.rect is not None

    def cell_rows(self) -> np.ndarray:
        """``(N,)`` int64 level-0 row of each cell (the band it is drawn in)."""
        if self.rect is None:
            return np.arange(len(self)) // self.cols
        return np.floor(self.rect[:, 1]).astype(np.int64)

    @property
    def objective(self) -> int | float:
        """Sum of the exact distances over all cells."""
        total = self.distance.sum()
        return int(total) if np.issubdtype(self.distance.dtype, np.integer) else float(total)

    def tile_grid(self) -> np.ndarray:
        """Library positions as a ``(rows, cols)`` array.

        Raises
        ------
        ValueError
            For cells of several sizes, which are no ``rows x cols`` array.
        """
        if self.rect is not None:
            raise ValueError("adaptive cells of several sizes have no tile grid; use tile "
                             "and rect")
        return self.tile.reshape(self.rows, self.cols)

    def write_csv(self, path: str | os.PathLike[str]) -> None:
        """Write one row per cell (atomically).

        Columns: ``row,col,tile,distance,position,transform,tint_0..2``,
        ``mean_0..2`` when the tiles' scored means are recorded (:attr:`mean`),
        ``gain_0..2`` when a contrast transfer set any gain, and ``chroma``
        when a chroma transfer set any factor; ``tile`` is the
        tile's source id, ``position`` its library position, ``transform`` a
        name from :data:`mosaicist.transforms.TRANSFORM_NAMES`.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write; an existing one is replaced only once the new
            one is whole.

        Raises
        ------
        MosaicistError
            When the file cannot be written (naming it, not the temporary
            file it is written as), or a tile id is one :meth:`read` would
            refuse (empty, absolute, leaving the library: nothing is written);
            :class:`~mosaicist.errors.OptionError` when ``path`` is not a path.
        """
        if self.rect is None:
            rows, cols = np.divmod(np.arange(len(self)), self.cols)
        else:
            rows, cols = self.cell_rows(), np.floor(self.rect[:, 0]).astype(np.int64)
        # Columns as arrays (numbers) or lists of texts, in the header's order.
        columns: list[Any] = [rows, cols, self.source_ids, self.distance, self.tile,
                              [TRANSFORM_NAMES[code] for code in self.transform.tolist()],
                              *self.tint.T]
        header: tuple[str, ...] = CSV_HEADER
        if self.mean is not None:
            columns += [*self.mean.T]
            header = (*header, *MEAN_HEADER)
        if self.has_gain:
            columns += [*self.gain.T]
            header = (*header, *GAIN_HEADER)
        if self.has_chroma:
            columns.append(self.chroma)
            header = (*header, *CHROMA_HEADER)
        if self.rect is not None:
            columns += [*self.rect.T]
            header = (*header, *RECT_HEADER)
        self._check_ids(path)
        with _writing(path) as temporary, open(
                temporary, "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerow(header)
            for text in _csv_rows(columns, len(self)):
                handle.write(text)

    @property
    def has_gain(self) -> bool:
        """Whether a contrast transfer set any gain (other than 1)."""
        return bool((self.gain != 1.0).any())

    @property
    def has_chroma(self) -> bool:
        """Whether a chroma transfer set any factor (other than 1)."""
        return bool((self.chroma != 1.0).any())

    def to_json(self) -> dict[str, Any]:
        """Return the JSON document (see the module's description)."""
        return self._document({name: (values if isinstance(values, list) else values.tolist())
                               for name, values in self._cell_fields().items()})

    def _cell_fields(self) -> dict[str, Any]:
        """The document's ``cells``: arrays of numbers, lists of texts, in the file's order."""
        return {
            "tile": self.source_ids,
            "position": self.tile,
            "distance": self.distance,
            "transform": [TRANSFORM_NAMES[code] for code in self.transform.tolist()],
            "tint": self.tint,
            **({"gain": self.gain} if self.has_gain else {}),
            **({"chroma": self.chroma} if self.has_chroma else {}),
            **({"mean": self.mean} if self.mean is not None else {}),
            **({"rect": self.rect} if self.rect is not None else {}),
        }

    def _document(self, cells: Any) -> dict[str, Any]:
        """The JSON document around ``cells``."""
        left, top = self.crop
        return {
            "format": JSON_FORMAT,
            "version": JSON_VERSION if self.rect is None else RECT_VERSION,
            "source": self.source,
            "target": self.target,
            # Only with the target it describes: a render checks the file it names.
            **({"target_pixels": self.target_pixels.to_json()}
               if self.target and self.target_pixels is not None else {}),
            "crop": {"left": left, "top": top},
            "settings": self.options.to_json(),
            "rows": self.rows,
            "cols": self.cols,
            "cells": cells,
            **({"hashes": self.hashes} if self.hashes else {}),
        }

    def write_json(self, path: str | os.PathLike[str], *, quiet: bool = False) -> None:
        """Write :meth:`to_json` atomically.

        Where the tiles' content hashes cannot be known (the library's index
        changed since it was read), the file is written without them, and one
        warning line on stderr names the file and says why.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write; an existing one is replaced only once the new
            one is whole.
        quiet : bool
            Print no warning.

        Raises
        ------
        MosaicistError
            When the file cannot be written (naming it, not the temporary
            file it is written as), or a tile id is one :meth:`read` would
            refuse (empty, absolute, leaving the library: nothing is written);
            :class:`~mosaicist.errors.OptionError` when ``path`` is not a path.
        """
        self._check_ids(path)
        with _writing(path) as temporary:
            # The text json.dumps(self.to_json(), separators=(",", ":")) gives, written a
            # piece at a time: the cells' numbers as Python objects and the whole text
            # took about 6 times the file's size, and json's encoder a call per number.
            with open(temporary, "w", encoding="utf-8") as handle:
                for text in _json_pieces(self._document(self._cell_fields())):
                    handle.write(text)
        if self._hashes_missing is not None and not quiet:
            # Else a later render's "N of the tiles changed since" went silent, unexplained.
            print(printable(f"mosaicist: warning: {_as_path(path)}: saved without the tiles' "
                            "content hashes, so a render of it cannot say which photos "
                            f"changed since: {self._hashes_missing}"), file=sys.stderr)

    def _check_ids(self, path: object) -> None:
        """Refuse to write tile ids that :meth:`read` refuses (:func:`tile_id_problem`).

        Placements made in memory may hold any text (an empty id for a cell
        with no photo); written, such a file was refused when read back, or
        a lone surrogate raised UnicodeEncodeError half-way through a CSV.

        Raises
        ------
        MosaicistError
            Naming the file, the first cell whose id cannot be written, and why.
        """
        for tile_id in dict.fromkeys(self.source_ids):
            problem = tile_id_problem(tile_id)
            if problem:
                raise MosaicistError(
                    f"{_as_path(path)}: cannot write the placements file: the tile id of cell "
                    f"{self.source_ids.index(tile_id):,} {problem}: {_shown(tile_id)}")

    def write(self, path: str | os.PathLike[str], *, quiet: bool = False) -> None:
        """Write CSV or JSON by the file's extension.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write: JSON when it ends in ``.json`` (any case), CSV otherwise.
        quiet : bool
            Print no warning (:meth:`write_json`'s, of a file saved without
            the tiles' content hashes).

        Raises
        ------
        MosaicistError
            When the file cannot be written (naming it, not the temporary
            file it is written as), or a tile id is one :meth:`read` would
            refuse (empty, absolute, leaving the library: nothing is written);
            :class:`~mosaicist.errors.OptionError` when ``path`` is not a path.
        """
        if str(_as_path(path)).lower().endswith(".json"):
            self.write_json(path, quiet=quiet)
        else:
            self.write_csv(path)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Placements:
        """Read placements written by :meth:`write_csv` or :meth:`write_json`.

        Parameters
        ----------
        path : str or os.PathLike
            The file: read as JSON when it ends in ``.json`` (any case), as CSV otherwise.

        Returns
        -------
        Placements
            The placements the file records.

        Raises
        ------
        MosaicistError
            When the file is missing or not a placements file (one line,
            naming the file); :class:`~mosaicist.errors.OptionError` when
            ``path`` is not a path.
        """
        path = _as_path(path)
        try:
            # A folder it may not look into: exists() raises PermissionError (an OSError
            # that the message below names), where a missing file is False.
            if not path.exists():
                raise MosaicistError(
                    f"{path}: {dangling_link(path) or 'placements file not found'}")
            if not path.is_file():
                raise MosaicistError(f"{path}: placements file is not a regular file")
        except OSError as error:
            raise MosaicistError(f"{path}: cannot read the placements file: "
                                 f"{error.strerror or error}") from None
        try:
            # utf-8-sig: editors and spreadsheets may start the file with a byte-order mark.
            if path.suffix.lower() == ".json" or _starts_as_json(path):
                text = path.read_text(encoding="utf-8-sig")
                if not text.strip():
                    # "Expecting value: line 1 column 1 (char 0)" for a file left empty.
                    raise MosaicistError(_EMPTY_FILE)
                document = _load_json_fast(text)
                numbers_read = document is not None
                if document is None:
                    document = _load_json(text)
                del text  # the file's size in memory, no longer needed
                placements = cls._from_document(document, numbers_read=numbers_read)
            else:
                if path.stat().st_size == 0:
                    raise MosaicistError(_EMPTY_FILE)
                placements = cls.read_csv(path)
        except UnicodeDecodeError:
            # A picture given for the placements: "'utf-8' codec can't decode byte 0x89"
            # said nothing of what to give.
            raise MosaicistError(f"{path}: not a valid placements file (not UTF-8 text; a "
                                 "placements file is .csv or .json)") from None
        except (ValueError, KeyError, TypeError, IndexError, RecursionError, OverflowError,
                csv.Error) as error:
            # Cut short: a message may quote the file (a setting's value of any length).
            raise MosaicistError(f"{path}: not a valid placements file ({_cut(str(error))})") \
                from None
        except MosaicistError as error:
            raise MosaicistError(f"{path}: {_cut(str(error))}") from None
        except OSError as error:  # unreadable (permissions, an I/O error)
            raise MosaicistError(f"{path}: cannot read the placements file: "
                                 f"{error.strerror or error}") from None
        placements.path = path
        return placements

    @classmethod
    def from_json(cls, data: object) -> Placements:
        """Make placements from a document of :meth:`to_json` (version 1 to 3).

        The whole document is checked (:func:`check_document`) before any
        array is made or any file opened.

        Parameters
        ----------
        data : object
            The parsed JSON document.

        Returns
        -------
        Placements
            The placements, with the settings the document records.

        Raises
        ------
        MosaicistError
            When ``data`` is not a placements document this mosaicist reads.
        ValueError
            When a field is missing or malformed (the message names it).
        """
        return cls._from_document(data)

    @classmethod
    def _from_document(cls, data: object, numbers_read: bool = False) -> Placements:
        """:meth:`from_json`; where ``numbers_read``, cell fields may be NumPy arrays.

        Such arrays (of :func:`_load_json_fast`) hold the values json gives,
        all good (:func:`_surely_valid`).
        """
        if not isinstance(data, Mapping) or data.get("format") != JSON_FORMAT:
            raise ValueError("missing format marker")
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            # True == 1 and 2.0 == 2 in Python: neither is a version a writer puts there.
            raise MosaicistError(f"placements version {_shown(version)} is not valid "
                                 f"(a whole number, 1 to {RECT_VERSION})")
        if version == 1:
            settings = {"version": 1, **{name: data[name] for name in _V1_SETTINGS
                                         if name in data}}
        elif version in (JSON_VERSION, RECT_VERSION):
            settings = _field(data, "settings", Mapping, "an object")
        elif version > RECT_VERSION:
            # Said as a newer settings version is: the remedy is a newer mosaicist.
            raise MosaicistError(
                f"placements of version {_shown(version)} were made by a newer mosaicist "
                f"(this one reads versions 1 to {RECT_VERSION}); upgrade mosaicist to "
                f"read them"
            )
        else:
            raise MosaicistError(f"placements version {_shown(version)} is not valid "
                                 f"(a whole number, 1 to {RECT_VERSION})")
        rows = _count(_field(data, "rows", int, "a whole number"), "rows")
        cols = _count(_field(data, "cols", int, "a whole number"), "cols")
        crop = _field(data, "crop", Mapping, "an object")
        left = _count(_field(crop, "left", int, "a whole number", "crop."), "crop.left", 0)
        top = _count(_field(crop, "top", int, "a whole number", "crop."), "crop.top", 0)
        cells = _field(data, "cells", Mapping, "an object")
        optional = tuple(name for name in ("gain", "chroma", "mean", "rect")
                         if name in cells and (name != "rect" or version == RECT_VERSION))
        listed = (list, np.ndarray) if numbers_read else list
        columns = {name: _field(cells, name, listed, "a list", "cells.")
                   for name in (*_CELL_FIELDS, *optional)}
        check_cells(rows, cols, columns)
        options = MosaicOptions.from_json(settings)
        target_pixels = (None if data.get("target_pixels") is None
                         else TargetPixels.from_json(data["target_pixels"]))
        if target_pixels is not None:
            _check_grid_inside(rows, cols, (left, top), options, target_pixels)
        # One str per distinct id (200,000 cells of 300 photos hold 300), one look-up
        # per distinct transform.
        distinct: dict[str, str] = {}
        tiles = [distinct.setdefault(tile, tile) for tile in columns["tile"]]
        codes = {name: transform_code(name) for name in set(columns["transform"])}
        return cls(
            rows,
            cols,
            np.asarray(columns["position"], np.int64),
            _distances(columns["distance"]),
            tiles,
            np.array([codes[name] for name in columns["transform"]], np.int8),
            np.asarray(columns["tint"], np.float64).reshape(-1, 3),
            gain=np.asarray(columns["gain"], np.float64).reshape(-1, 3) if "gain" in columns
            else None,
            chroma=np.asarray(columns["chroma"], np.float64) if "chroma" in columns else None,
            mean=np.asarray(columns["mean"], np.float64).reshape(-1, 3) if "mean" in columns
            else None,
            options=options,
            source=_optional_text(data.get("source"), "source"),
            target=_optional_text(data.get("target"), "target"),
            crop=(left, top),
            hashes=_hashes(data.get("hashes"), columns["tile"]),
            target_pixels=target_pixels,
            rect=np.asarray(columns["rect"], np.float64) if "rect" in columns else None,
        )

    @classmethod
    def read_csv(cls, path: str | os.PathLike[str]) -> Placements:
        """Read placements written by :meth:`write_csv` (also the older 5-column form).

        A CSV file records no settings: they are read as the default
        preset's (``MosaicOptions()``, what a ``make`` without options
        writes), and :attr:`settings_recorded` is False. Columns
        that later versions added may be missing from the header (their
        defaults then), but every line must have as many fields as the header.

        Parameters
        ----------
        path : str or os.PathLike
            The CSV file.

        Returns
        -------
        Placements
            The placements, with the default preset's settings.

        Raises
        ------
        ValueError
            When a row or a field is malformed (the message names it and its line).
        OSError
            When the file cannot be read.
        """
        path = _as_path(path)
        with open(path, newline="", encoding="utf-8-sig") as handle:
            header, texts, lines = _read_csv_columns(handle)
        if all(name in header for name in RECT_HEADER):
            placements = cls._read_rect_csv(texts, lines)
        else:
            placements = cls._read_grid_csv(texts, lines)
        placements.settings_recorded = False
        return placements

    @classmethod
    def _read_grid_csv(cls, texts: dict[str, _CsvColumn], lines: np.ndarray) -> Placements:
        """Placements of a uniform grid from CSV columns (``lines``: their line numbers)."""
        row, col = (_csv_parsed(texts[name], int, None, len(lines), np.int64)
                    for name in ("row", "col"))
        order: np.ndarray | None = None
        # Past 2^31 no grid fits MAX_CELLS: such files are explained by the loop below.
        if (row is not None and col is not None and int(row.min()) >= 0
                and int(col.min()) >= 0 and int(row.max()) < 2**31 and int(col.max()) < 2**31):
            key = (row << 31) | col
            order = np.argsort(key, kind="stable")
            if (np.diff(key[order]) == 0).any():
                order = None
        if row is None or col is None or order is None:
            # A field that is no whole number, a negative or repeated cell, or one far
            # past any grid: said of the first line holding one, as it is read.
            where: dict[tuple[int, int], int] = {}
            numbered = zip(lines.tolist(), _csv_items(texts["row"]), _csv_items(texts["col"]),
                           strict=True)
            for index, (line, row_text, col_text) in enumerate(numbered):
                cell = (_csv_number(row_text, "row", line, int),
                        _csv_number(col_text, "col", line, int))
                if cell[0] < 0 or cell[1] < 0:
                    raise ValueError(f"line {line}: row and col must be at least 0")
                if cell in where:
                    raise ValueError(f"line {line}: cell {cell} is also on line "
                                     f"{int(lines[where[cell]])}")
                where[cell] = index
            rows = max(row for row, _ in where) + 1
            cols = max(col for _, col in where) + 1
        else:
            rows = int(row.max()) + 1
            cols = int(col.max()) + 1
        if len(lines) != rows * cols or order is None:
            raise ValueError(f"{counted(len(lines), 'cell')} listed for a grid of "
                             f"{_grid(rows, cols)}, which needs {rows * cols:,}")
        if (np.diff(order) != 1).any():  # rows given out of cell order (a hand edit)
            texts = {name: _csv_taken(column, order) for name, column in texts.items()}
            lines = lines[order]
        return cls._from_csv_columns(rows, cols, texts, lines)

    @classmethod
    def _read_rect_csv(cls, texts: dict[str, _CsvColumn], lines: np.ndarray) -> Placements:
        """Placements of cells of several sizes from CSV columns ``x,y,w,h``."""
        corner = _csv_group(texts, RECT_HEADER, lines, float)
        # Past the grid any file may describe: x + w overflowed to infinity (a
        # RuntimeWarning, then "cannot convert float infinity to integer").
        far = np.flatnonzero((np.abs(corner) > MAX_CELLS).any(axis=1))
        if len(far):
            raise ValueError(f"line {lines[far[0]]}: x, y, w and h must lie within "
                             f"{MAX_CELLS:,} cells, got {_shown(corner[far[0]].tolist())}")
        rows = max(math.ceil(float((corner[:, 1] + corner[:, 3]).max())), 1)
        cols = max(math.ceil(float((corner[:, 0] + corner[:, 2]).max())), 1)
        return cls._from_csv_columns(rows, cols, texts, lines, corner)

    @classmethod
    def _from_csv_columns(cls, rows: int, cols: int, texts: dict[str, _CsvColumn],
                          lines: np.ndarray, rect: np.ndarray | None = None) -> Placements:
        """Placements from CSV columns in cell order (``lines``: their line numbers)."""
        tiles = texts["tile"]
        assert isinstance(tiles, list)
        named = texts.get("transform")
        columns: dict[str, Any] = {
            "tile": tiles,
            "position": _csv_group(texts, ("position",), lines, int, whole_overflow=True),
            "distance": _csv_group(texts, ("distance",), lines, float)[:, 0],
            "transform": (["identity"] * len(lines) if named is None
                          else [name or "identity" for name in named]),
            "tint": _csv_group(texts, ("tint_0", "tint_1", "tint_2"), lines, float, 0.0),
            "gain": _csv_group(texts, GAIN_HEADER, lines, float, 1.0),
            "chroma": _csv_group(texts, CHROMA_HEADER, lines, float, 1.0)[:, 0],
        }
        if isinstance(columns["position"], np.ndarray):
            columns["position"] = columns["position"][:, 0]
        if all(name in texts for name in MEAN_HEADER):
            columns["mean"] = _csv_group(texts, MEAN_HEADER, lines, float)
        if rect is not None:
            columns["rect"] = rect
        check_cells(rows, cols, columns)
        distance = texts["distance"]
        is_float = any(mark in _csv_joined(distance).lower() for mark in (".", "e", "n"))
        whole: np.ndarray | None = None
        if not is_float:
            # Every field is a whole number float() read: int() reads it too.
            numbers = [int(value) for value in _csv_items(distance)]
            try:
                whole = np.array(numbers, np.int64)
            except OverflowError:
                for line, value in zip(lines.tolist(), numbers, strict=True):
                    if not _INT64[0] <= value <= _INT64[1]:
                        raise ValueError(f"line {line}: distance must be a whole number "
                                         f"within int64, got {_shown(value)}") from None
                raise
        codes = {name: transform_code(name) for name in set(columns["transform"])}
        return cls(
            rows, cols,
            np.asarray(columns["position"], np.int64),
            columns["distance"] if whole is None else whole,
            tiles,
            np.array([codes[name] for name in columns["transform"]], np.int8),
            columns["tint"],
            gain=columns["gain"],
            chroma=columns["chroma"],
            mean=columns.get("mean"),
            # What a make without options writes: the likeliest maker of a CSV.
            options=MosaicOptions(),
            rect=rect,
        )


#: Cells written at a time: the text of a few MB, not the whole file's.
_WRITE_BATCH = 16384
_JSON_SEPARATORS = (",", ":")


def _json_pieces(document: Mapping[str, Any]) -> Iterator[str]:
    """The text of ``json.dumps(document, separators=(",", ":")) + "\\n"``, in pieces.

    ``document["cells"]`` maps names to lists of texts or to NumPy arrays of
    numbers (written as their ``tolist()`` would be, a batch of cells at a time).
    """
    yield "{"
    for number, (key, value) in enumerate(document.items()):
        yield ("," if number else "") + json.dumps(key) + ":"
        if key != "cells":
            yield json.dumps(value, separators=_JSON_SEPARATORS)
            continue
        yield "{"
        for field, (name, values) in enumerate(value.items()):
            yield ("," if field else "") + json.dumps(name) + ":"
            if isinstance(values, np.ndarray):
                yield from _json_numbers(values)
            else:
                yield json.dumps(values, separators=_JSON_SEPARATORS)
        yield "}"
    yield "}\n"


def _json_numbers(values: np.ndarray) -> Iterator[str]:
    """The JSON text of ``values.tolist()`` (numbers, one or two dimensions), in pieces.

    As json writes them, a number is its ``repr`` (shortest round-trip text),
    but here a batch of them is formatted in one ``%`` operation.
    """
    width = values.shape[1] if values.ndim == 2 else 0
    one = "[" + ",".join(["%r"] * width) + "]" if width else "%r"
    full = ",".join([one] * _WRITE_BATCH)
    yield "["
    for start in range(0, len(values), _WRITE_BATCH):
        batch = values[start:start + _WRITE_BATCH]
        template = full if len(batch) == _WRITE_BATCH else ",".join([one] * len(batch))
        yield ("," if start else "") + template % tuple(batch.ravel().tolist())
    yield "]"


def _csv_rows(columns: list[Any], count: int) -> Iterator[str]:
    """The CSV lines (``csv.writer``'s) of ``count`` rows, a batch of rows at a time.

    ``columns`` are arrays of numbers (written as their ``repr``, as csv
    writes ``str`` of them) or lists of texts (quoted where csv quotes them).
    """
    quoted: dict[str, str] = {}
    buffer = io.StringIO()
    quoting = csv.writer(buffer)

    def field(text: str) -> str:
        # As csv.writer writes it (in quotes where it holds a comma, a quote, a line
        # break); each distinct text once.
        if text not in quoted:
            buffer.seek(0)
            buffer.truncate()
            quoting.writerow([text, ""])
            quoted[text] = buffer.getvalue()[:-len(",\r\n")]
        return quoted[text]

    line = ",".join("%r" if isinstance(column, np.ndarray) else "%s"
                    for column in columns) + "\r\n"
    full = line * _WRITE_BATCH
    for start in range(0, count, _WRITE_BATCH):
        batch = [column[start:start + _WRITE_BATCH] for column in columns]
        batch = [part.tolist() if isinstance(part, np.ndarray) else list(map(field, part))
                 for part in batch]
        rows = len(batch[0])
        template = full if rows == _WRITE_BATCH else line * rows
        yield template % tuple(itertools.chain.from_iterable(zip(*batch, strict=True)))


#: A CSV column as read: texts of up to _CSV_NARROW ASCII characters as bytes
#: (an array of fixed width, about the file's size), others as a list of str.
_CsvColumn = np.ndarray | list[str]
#: Rows read at a time, and parsed into columns.
_CSV_BATCH = 8192
#: Widest field kept as bytes (a float's shortest text has at most 24 characters).
_CSV_NARROW = 32
#: Columns kept as texts (tile ids, transform names): one str per distinct text.
_CSV_TEXT_COLUMNS = ("tile", "transform")


def _read_csv_columns(handle: Any) -> tuple[list[str], dict[str, _CsvColumn], np.ndarray]:
    """The header, the columns and each row's line number of a placements CSV file.

    Rows are read a batch at a time into columns: numeric ones as arrays of
    bytes (the file's size in memory, not a dict and a str object per field).

    Raises
    ------
    ValueError
        For a header lacking a column or naming one twice, a line of another
        number of fields than the header, no rows, or a line longer than
        :data:`MAX_CSV_LINE`.
    """
    reader = csv.reader(_bounded_lines(handle))
    header = next(reader, None) or []
    missing = [name for name in ("row", "col", "tile", "distance", "position")
               if name not in header]
    if missing:
        raise ValueError(f"no {', '.join(missing)} column")
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        # Read as a dict, the last of them would win without a word.
        raise ValueError(f"the header names {_shown(', '.join(twice))} twice")
    for group in (RECT_HEADER, ("tint_0", "tint_1", "tint_2"), GAIN_HEADER, MEAN_HEADER):
        present = [name for name in group if name in header]
        if present and len(present) < len(group):
            # The others would take their defaults (a grid, no tint, no gain).
            lacking = ", ".join(name for name in group if name not in header)
            raise ValueError(f"the header has {', '.join(present)} but not {lacking}")
    pieces: list[list[Any]] = [[] for _ in header]
    distinct: dict[str, str] = {}
    lines: list[int] = []
    batch: list[list[str]] = []

    def flush() -> None:
        for index, texts in enumerate(zip(*batch, strict=True)):
            if header[index] in _CSV_TEXT_COLUMNS:
                # One str per distinct id: 200,000 cells of 300 photos hold 300.
                pieces[index].append([distinct.setdefault(text, text) for text in texts])
            else:
                pieces[index].append(_csv_narrow(texts))
        batch.clear()

    start = reader.line_num + 1
    for fields in reader:
        if fields:  # blank lines are skipped, as csv.DictReader does
            # A cut or merged line would otherwise take defaults for the
            # fields it lacks (or drop those it has too many of) without a word.
            if len(fields) != len(header):
                raise ValueError(f"line {start} has {counted(len(fields), 'field')}, "
                                 f"the header has {len(header):,}")
            batch.append(fields)
            lines.append(start)
            if len(batch) == _CSV_BATCH:
                flush()
        start = reader.line_num + 1
    if batch:
        flush()
    if not lines:
        raise ValueError("no rows")
    columns = {name: _csv_joined_pieces(parts) for name, parts in zip(header, pieces,
                                                                          strict=True)}
    return header, columns, np.array(lines, np.int64)


def _csv_narrow(texts: tuple[str, ...]) -> _CsvColumn:
    """A batch of fields as fixed-width bytes where that keeps them as they are."""
    joined = "".join(texts)
    # NumPy drops trailing NULs of bytes ("1\0" would read as "1"), and encodes only ASCII.
    if joined.isascii() and "\0" not in joined and max(map(len, texts)) <= _CSV_NARROW:
        return np.array(texts, dtype="S")
    return list(texts)


def _csv_joined_pieces(parts: list[Any]) -> _CsvColumn:
    """One column from its batches: bytes where every batch is, else a list of str."""
    if parts and all(isinstance(part, np.ndarray) for part in parts):
        return np.concatenate(parts)
    return [text for part in parts for text in _csv_items(part)]


def _csv_items(column: _CsvColumn) -> list[str]:
    """A column's fields as str."""
    if isinstance(column, np.ndarray):
        return [text.decode("ascii") for text in column.tolist()]
    return list(column)


def _csv_joined(column: _CsvColumn) -> str:
    """A column's fields joined (to look for a character in any of them)."""
    if isinstance(column, np.ndarray):
        return b"".join(column.tolist()).decode("ascii")
    return "".join(column)


def _csv_taken(column: _CsvColumn, order: np.ndarray) -> _CsvColumn:
    """A column's fields in ``order``."""
    if isinstance(column, np.ndarray):
        return column[order]
    return [column[index] for index in order.tolist()]


def _csv_group(texts: Mapping[str, _CsvColumn], names: tuple[str, ...], lines: np.ndarray,
               kind: type, default: float | None = None,
               whole_overflow: bool = False) -> Any:
    """Columns ``names`` as an ``(N, len(names))`` array of ``kind`` (int64 or float64).

    Each field is read as :func:`_csv_number` reads it; a missing column or,
    with a ``default``, an empty field is the default. The columns are parsed
    whole; where one is not all good numbers, the fields are read again line
    by line, a line's fields in ``names`` order, so that the error names the
    first bad field of the file.

    Parameters
    ----------
    whole_overflow : bool
        Where a whole number does not fit int64, return the numbers as a list
        of Python ints (its range checked later, naming the cell) rather
        than raise.

    Raises
    ------
    ValueError
        Naming the line and column of the first field that is not a (finite) number.
    """
    dtype = np.int64 if kind is int else np.float64
    parsed = [_csv_parsed(texts.get(name), kind, default, len(lines), dtype) for name in names]
    if all(values is not None for values in parsed):
        return np.stack(parsed, axis=1)  # type: ignore[arg-type]
    given = [texts.get(name) for name in names]
    items = [None if column is None else _csv_items(column) for column in given]
    values: list[list[Any]] = [
        [_csv_number(None if column is None else column[index], name, line, kind, default)
         for column, name in zip(items, names, strict=True)]
        for index, line in enumerate(lines.tolist())]
    try:
        return np.array(values, dtype)
    except OverflowError:
        if whole_overflow:
            return [value for (value, *_) in values]
        raise


def _csv_parsed(column: _CsvColumn | None, kind: type, default: float | None, count: int,
                dtype: type) -> np.ndarray | None:
    """A column's numbers at once, or None where some field is not a good one."""
    if column is None:
        return np.full(count, default, dtype)
    if not isinstance(column, np.ndarray):
        return None  # fields of other characters, or long ones: read one by one
    items = column.tolist()
    blank = None
    if default is not None:
        blank = column == b""
        if blank.any():
            items = [text for text, empty in zip(items, blank.tolist(), strict=True)
                     if not empty]
        else:
            blank = None
    if b"_" in b"".join(items):
        return None
    try:
        values: np.ndarray = np.array(list(map(kind, items)), dtype)
    except (ValueError, OverflowError):
        return None
    if kind is float and not np.isfinite(values).all():
        return None
    if blank is None:
        return values
    whole: np.ndarray = np.full(count, default, dtype)
    whole[~blank] = values
    return whole


#: Cell fields every placements document has (``gain`` and ``chroma`` are optional).
_CELL_FIELDS = ("tile", "position", "distance", "transform", "tint")
#: Most cells a placements file may describe: a 1.5-gigapixel target at 4 px
#: cells has about 94 million.
MAX_CELLS = 100_000_000
#: Largest library position (far beyond any library, and within int64).
_MAX_POSITION = 2**53
#: Largest size of a tint shift or a contrast gain: far beyond any a match
#: makes (gains stay within 1/4 and 4, shifts within the colour space), and
#: small enough that drawing them overflows no colour conversion.
MAX_SHIFT = 1e6
#: Whole-number distances must fit int64 (they are sums of squared differences).
_INT64 = (-(2**63), 2**63 - 1)


def _numbers(name: str, values: object, whole: bool = False) -> np.ndarray:
    """``values`` as an array of numbers (whole ones where ``whole``: of an integer type,
    or floats without a fraction), or an error naming ``name``: texts, truth values and
    objects are no numbers, and a whole-number field of fractions is not rounded without
    a word.

    Raises
    ------
    OptionError
        For values of the wrong type (``tile=[0.5]``, ``tint=[["a", "b", "c"]]``).
    """
    try:
        array = np.asarray(values)
    except (ValueError, TypeError):  # ragged nesting
        array = np.asarray(None)
    numeric = (np.integer, np.floating)
    wrong = bool(array.size) and (array.dtype == np.bool_ or not any(
        np.issubdtype(array.dtype, kind) for kind in numeric))
    if whole and not wrong and np.issubdtype(array.dtype, np.floating):
        # np.zeros(n) is a float array of whole numbers; 0.5, NaN or 1e300 hold none.
        with np.errstate(invalid="ignore"):
            wrong = not bool((np.isfinite(array) & (array == np.round(array))
                              & (np.abs(array) < 2.0**63)).all())
    if wrong:
        kind = "whole numbers (within int64)" if whole else "numbers"
        # A list holding an int past int64 (or texts and numbers mixed) is an array of
        # objects: named by the type given, not by NumPy's.
        raise OptionError("{" + name + "} must be " + kind + ", got {value}",
                          value=f"an array of {array.dtype}" if array.dtype != object
                          else shown_type(values))
    return array


def _in_rows(name: str, values: np.ndarray, width: int) -> np.ndarray:
    """``values`` as rows of ``width`` numbers, or a ValueError naming ``name`` and the shape."""
    if values.size % width or (values.ndim > 1 and values.shape[-1] != width):
        raise ValueError(f"{name} must be {width} numbers a cell, an (N, {width}) array, "
                         f"got shape {values.shape}")
    return values.reshape(-1, width)


def _given_text(value: object, name: str) -> str | None:
    """A ``source`` or ``target`` given to :class:`Placements`: a text without NUL, or None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise OptionError("{" + name + "} must be a text (a path or a source spec), got {value}",
                          value=shown_type(value))
    if "\0" in value:
        raise OptionError("{" + name + "} holds a NUL character: {value}", value=_shown(value))
    return value


def _is_content_hash(digest: object) -> bool:
    """Whether ``digest`` is a content hash as placements files hold them (32 hex digits)."""
    return (isinstance(digest, str) and len(digest) == 32
            and all(char in "0123456789abcdef" for char in digest))


def _given_hashes(hashes: object) -> dict[str, str]:
    """The ``hashes`` given to :class:`Placements` as a mapping, checked as read checks them."""
    if not isinstance(hashes, Mapping):
        raise OptionError("{hashes} must be a mapping of tile ids to content hashes, or a "
                          "function giving one, got {value}", value=shown_type(hashes))
    for key, digest in hashes.items():
        if not isinstance(key, str) or not _is_content_hash(digest):
            # Kept, they were written, and the file refused when read back.
            raise OptionError("{hashes} must map tile ids (texts) to content hashes (32 hex "
                              "digits), got {value}", value=_shown({key: digest}))
    return dict(hashes)


def check_cells(rows: int, cols: int, columns: Mapping[str, list[Any]]) -> None:
    """Check the cells of a placements file, before anything is allocated or opened.

    Parameters
    ----------
    rows, cols : int
        The grid's shape.
    columns : mapping of str to list
        ``tile`` (tile ids), ``position`` (library positions), ``distance``,
        ``transform`` (names), ``tint`` (three numbers per cell) and
        optionally ``gain`` (three positive numbers per cell), ``chroma``
        (a number from 0 to 1 per cell) and ``mean`` (three numbers per
        cell), one entry per cell in row-major
        order; or, with ``rect`` (four numbers per cell:
        see :func:`check_rects`), one entry per rectangle.

    Raises
    ------
    ValueError
        Naming the first bad field and cell: a list of the wrong length, an
        entry of the wrong type or out of range, a tile id that is not a
        relative path inside the library (see :func:`tile_id_problem`).
    """
    count = rows * cols
    if count > MAX_CELLS:
        raise ValueError(f"a grid of {_grid(rows, cols)} has more than {MAX_CELLS:,}")
    if "rect" in columns:
        count = len(columns["rect"])
        if count > MAX_CELLS:
            raise ValueError(f"cells.rect has more than {MAX_CELLS:,} cells")
        for index, value in enumerate(_unless_valid(columns, "rect")):
            if not (isinstance(value, list) and len(value) == 4
                    and all(_is_finite_number(part) for part in value)):
                raise ValueError(f"cells.rect[{index}] must be four finite numbers "
                                 f"[x, y, w, h], got {_shown(value)}")
        check_rects(rows, cols, np.array(columns["rect"], np.float64).reshape(-1, 4))
    for name, values in columns.items():
        if len(values) != count:
            raise ValueError(f"cells.{name} has {len(values):,} entries for a grid of "
                             f"{_grid(rows, cols)}"
                             + (f" split into {count:,}" if "rect" in columns else ""))
    for index, tile in enumerate(_unless_valid(columns, "tile")):
        problem = "is not a text" if not isinstance(tile, str) else tile_id_problem(tile)
        if problem:
            raise ValueError(f"cells.tile[{index}] {problem}: {_shown(tile)}")
    for index, position in enumerate(_unless_valid(columns, "position")):
        if (not isinstance(position, int) or isinstance(position, bool)
                or not 0 <= position <= _MAX_POSITION):
            raise ValueError(f"cells.position[{index}] must be a whole number from 0 to "
                             f"{_MAX_POSITION}, got {_shown(position)}")
    for index, distance in enumerate(_unless_valid(columns, "distance")):
        if not _is_finite_number(distance) or (
                isinstance(distance, int) and not _INT64[0] <= distance <= _INT64[1]):
            raise ValueError(f"cells.distance[{index}] must be a finite number (a whole one "
                             f"within int64), got {_shown(distance)}")
    for index, name in enumerate(_unless_valid(columns, "transform")):
        if name not in TRANSFORM_NAMES:
            raise ValueError(f"cells.transform[{index}] must be one of "
                             f"{alternatives(TRANSFORM_NAMES)}, got {_shown(name)}")
    for field, least in (("tint", None), ("gain", 0.0), ("mean", None)):
        values = columns.get(field, [])
        for index, value in enumerate(_unless_valid(columns, field)):
            if not (isinstance(value, list) and len(value) == 3
                    and all(_is_finite_number(part) for part in value)
                    and (least is None or all(part > least for part in value))):
                kind = "positive " if least is not None else ""
                raise ValueError(f"cells.{field}[{index}] must be three finite {kind}numbers, "
                                 f"got {_shown(value)}")
        # Past MAX_SHIFT drawing overflows the colour conversions (NaN cast to pixels).
        large = np.flatnonzero((np.abs(np.array(values, np.float64).reshape(-1, 3))
                                > MAX_SHIFT).any(axis=1))
        if len(large):
            raise ValueError(f"cells.{field}[{large[0]}] must be three numbers within "
                             f"+-{MAX_SHIFT:g}, got {_shown(_listed(values[large[0]]))}")
    for index, value in enumerate(_unless_valid(columns, "chroma")):
        if not (_is_finite_number(value) and 0 <= value <= 1):
            raise ValueError(f"cells.chroma[{index}] must be a number from 0 to 1, "
                             f"got {_shown(value)}")


#: Width of the cell fields of several numbers a cell, and the least each number exceeds.
_ROW_FIELDS: dict[str, tuple[int, float | None]] = {
    "tint": (3, None), "gain": (3, 0.0), "mean": (3, None), "rect": (4, None)}


def _unless_valid(columns: Mapping[str, Any], field: str) -> list[Any]:
    """``columns[field]`` to check one by one, or no entries where all are surely good.

    The checks of :func:`check_cells`, done on whole arrays: where they find
    nothing wrong, the loop over the entries (which says which is wrong, and
    how) is left out. NumPy arrays (of a CSV file) are given as lists of
    Python numbers, as JSON gives them.
    """
    values = columns.get(field, [])
    try:
        valid = _surely_valid(field, values)
    except (TypeError, ValueError, OverflowError):  # unhashable, ragged, past a float
        valid = False
    return [] if valid else _listed(values)


def _listed(values: Any) -> Any:
    return values.tolist() if isinstance(values, np.ndarray) else values


def _surely_valid(field: str, values: Any) -> bool:
    """Whether every entry of a cell field passes :func:`check_cells` (False: maybe not)."""
    if field == "tile":
        return not isinstance(values, np.ndarray) and all(
            isinstance(tile, str) and tile_id_problem(tile) is None
            for tile in dict.fromkeys(values))
    if field == "transform":
        return not isinstance(values, np.ndarray) and set(values) <= set(TRANSFORM_NAMES)
    width, least = _ROW_FIELDS.get(field, (0, None))
    if isinstance(values, np.ndarray):
        array = values
    else:
        # bool is no number here, nor a text NumPy would read as one.
        if width:
            if set(map(type, values)) != {list} or set(map(len, values)) != {width}:
                return False
            values = [part for value in values for part in value]
        kinds = set(map(type, values))
        if not kinds or not kinds <= ({int} if field == "position" else {int, float}):
            return False
        if field == "distance" and kinds == {int, float}:
            return False  # a whole number past int64 among floats
        array = np.array(values, np.int64 if kinds == {int} else np.float64)
        if width:
            # Flattened above: the shape check below wanted rows, and so every JSON
            # file's tints, gains and means were checked again one number at a time.
            array = array.reshape(-1, width)
    if array.dtype.kind not in "iuf" or (width and array.shape[1:] != (width,)):
        return False
    if field == "position":
        return array.dtype.kind in "iu" and bool(
            not len(array) or (int(array.min()) >= 0 and int(array.max()) <= _MAX_POSITION))
    if not np.isfinite(array).all():
        return False
    if field == "chroma":
        return bool(((array >= 0) & (array <= 1)).all())
    if field == "distance" or field == "rect":
        return True
    return bool((np.abs(array) <= MAX_SHIFT).all() and (least is None or (array > least).all()))


def _check_grid_inside(rows: int, cols: int, crop: tuple[int, int], options: MosaicOptions,
                       target: TargetPixels) -> None:
    """Refuse a grid whose crop puts it outside the target the same file records.

    A make writes both from one target, so they always agree; a crop edited
    by hand did not, and was found only by a render's overlay, whose message
    blamed the target ("replaced or edited since?") rather than this file.

    Raises
    ------
    ValueError
        Naming the crop, the grid's size in pixels and the target's.
    """
    left, top = crop
    width, height = cols * options.cell_px, rows * options.cell_height
    if left + width > target.width or top + height > target.height:
        raise ValueError(f"crop (left {left:,}, top {top:,}) puts the grid of "
                         f"{_grid(rows, cols)}, {width:,}x{height:,} px, outside the "
                         f"{target.width:,}x{target.height:,} px target of target_pixels")


def check_rects(rows: int, cols: int, rect: np.ndarray) -> None:
    """Check that cell rectangles tile a ``rows x cols`` grid exactly.

    Each rectangle ``(x, y, w, h)`` (level-0 cells) must be a square of side
    ``2^-d`` (``d`` from 0 to :data:`MAX_RECT_LEVEL`) at a multiple of its
    side, inside the grid. Such quadtree squares either nest or are
    disjoint, so they tile the grid exactly when no square lies inside
    another (or repeats one) and their areas add up to the grid's: both are
    checked on whole-number keys, level by level, without painting pixels.

    Raises
    ------
    ValueError
        Naming the first bad rectangle (its index), an overlap or a gap.
    """
    rect = np.asarray(rect, np.float64).reshape(-1, 4)
    x, y, w, h = rect.T
    # A hostile file's 1e308 + 1e308 is infinite, and so refused: without its
    # RuntimeWarning, a second line under the one error.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        level = -np.log2(w)
        whole = np.isfinite(level) & (level == np.round(level))
        level = np.where(whole, np.round(level), -1).astype(np.int64)
        bad = ~whole | (level < 0) | (level > MAX_RECT_LEVEL) | (h != w)
        side = np.where(bad, 1.0, w)
        bad |= (x / side != np.floor(x / side)) | (y / side != np.floor(y / side))
        bad |= (x < 0) | (y < 0) | (x + w > cols) | (y + h > rows)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise ValueError(f"cells.rect[{index}] {_shown(rect[index].tolist())} is not a square "
                         f"of side 2^-d (d 0 to {MAX_RECT_LEVEL}) at a multiple of its side "
                         f"inside the grid of {_grid(rows, cols)}")
    if not len(rect):
        raise ValueError("cells.rect is empty")
    deepest = int(level.max())
    # Position of each square in units of its own side, and of every coarser square holding it.
    column = (x * (1 << level)).astype(np.int64)
    row = (y * (1 << level)).astype(np.int64)
    keys = {}
    for depth in range(deepest + 1):
        at = level == depth
        keys[depth] = np.sort(row[at] * (cols << depth) + column[at])
        if len(keys[depth]) > 1 and (np.diff(keys[depth]) == 0).any():
            raise ValueError(f"cells.rect has two equal cells of side 2^-{depth}: they overlap")
    for depth in range(1, deepest + 1):
        at = np.flatnonzero(level == depth)
        for coarser in range(depth):
            shift = depth - coarser
            key = (row[at] >> shift) * (cols << coarser) + (column[at] >> shift)
            inside = np.isin(key, keys[coarser])
            if inside.any():
                index = int(at[np.flatnonzero(inside)[0]])
                raise ValueError(f"cells.rect[{index}] lies inside a larger cell: they overlap")
    # Areas in units of the deepest level's squares, in whole numbers.
    area = np.left_shift(1, 2 * (deepest - level)).sum(dtype=np.int64)
    if area != rows * cols * (1 << (2 * deepest)):
        raise ValueError(f"cells.rect leaves gaps: the cells cover "
                         f"{area / (1 << (2 * deepest)):g} of the grid's {rows * cols} cells")


def tile_id_problem(tile_id: str) -> str | None:
    """Say why a tile id cannot name a tile of a library, or return None.

    A tile id is the tile's path relative to its library's folder, ``/``
    between folders (or a dataset's own name for an image): it must not be
    empty, absolute, hold a NUL, a lone surrogate or a ``..`` step. Sources check again where
    they open files (:meth:`FolderSource.path_of
    <mosaicist.sources.FolderSource.path_of>`, which also knows the
    platform's other separators), so that resolving an id never leaves the
    library.
    """
    if not tile_id:
        return "is empty"
    if "\0" in tile_id:
        return "holds a NUL character"
    if not tile_id.isascii():
        try:
            tile_id.encode("utf-8")
        except UnicodeEncodeError:
            # JSON may escape a lone surrogate ("\udcff"); ids are valid text (a name's
            # bytes that are not UTF-8 are written \xHH), and the index refuses others.
            return "is not valid Unicode text (a lone surrogate)"
    if tile_id.startswith("/"):
        return "is an absolute path"
    if ".." in tile_id.split("/"):
        return "leaves the library folder (..)"
    return None


def _field(document: Mapping[str, Any], name: str, kind: type | tuple[type, ...], what: str,
           prefix: str = "") -> Any:
    if name not in document:
        raise ValueError(f"no {prefix}{name}")
    value = document[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{prefix}{name} must be {what}, got {type(value).__name__}")
    return value


def _load_json(text: str) -> Any:
    """Parse a placements document: keys given twice refused, Python's advice left out."""
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except ValueError as error:
        # A whole number of thousands of digits: "...; use sys.set_int_max_str_digits() to
        # increase the limit", advice for programmers. (A parse_int hook would say it
        # better, but triples the time of reading the cells' numbers.)
        message, _, advice = str(error).partition("; use sys.set_int_max_str_digits")
        if advice:
            raise ValueError(f"a whole number too long to read ({message})") from None
        raise


#: JSON's white space.
_JSON_SPACE = re.compile(r"[ \t\n\r]*")
#: JSON numbers: whole (json gives an int), with a fraction or an exponent (a float), any.
_JSON_WHOLE = r"-?(?:0|[1-9][0-9]*+)"
_JSON_FLOAT = _JSON_WHOLE + r"(?:\.[0-9]++(?:[eE][-+]?+[0-9]++)?+|[eE][-+]?+[0-9]++)"
_JSON_NUMBER = _JSON_WHOLE + r"(?:\.[0-9]++)?+(?:[eE][-+]?+[0-9]++)?+"


def _json_array(number: str, width: int) -> re.Pattern[str]:
    """A JSON array of ``number`` (of rows of ``width`` of them), as the writer writes it."""
    item = number if not width else r"\[" + ",".join([number] * width) + r"\]"
    return re.compile(rf"\[(?:{item},)*+{item}\]")


#: Cell fields read as arrays: the arrays' text, and how each number is read and kept.
_FAST_FIELDS: dict[str, list[tuple[re.Pattern[str], type, type]]] = {
    "position": [(_json_array(_JSON_WHOLE, 0), int, np.int64)],
    "distance": [(_json_array(_JSON_WHOLE, 0), int, np.int64),
                 (_json_array(_JSON_FLOAT, 0), float, np.float64)],
    "chroma": [(_json_array(_JSON_NUMBER, 0), float, np.float64)],
    **{name: [(_json_array(_JSON_NUMBER, width), float, np.float64)]
       for name, (width, _) in _ROW_FIELDS.items()},
}
#: Characters of an array's text parsed at a time.
_PARSE_BATCH = 1 << 20


def _load_json_fast(text: str) -> dict[str, Any] | None:
    """``_load_json(text)``, with the cells' numbers as NumPy arrays; None: read it so.

    json makes a Python object per number (about 6 times the file's size in
    memory), and the reader then arrays of them. Here the document's two
    outer objects are walked as json walks them, every other value read by
    json itself, and each cell field of numbers as the writer writes it (no
    white space) is matched whole, then its numbers' texts read by ``int``
    and ``float``, the functions json reads them with: the same values. A
    document this walk does not know (white space in an array, mixed whole
    and other distances, a key given twice, any error) or holding a value
    :func:`check_cells` would refuse gives None, so that it is read by
    :func:`_load_json`, which raises the error it always raised.
    """
    decoder = json.JSONDecoder(object_pairs_hook=_unique_keys)
    try:
        document, end = _fast_object(text, _after_space(text, 0), decoder, True)
    except (ValueError, IndexError, OverflowError, RecursionError):
        return None
    return document if _after_space(text, end) == len(text) else None


def _after_space(text: str, position: int) -> int:
    """The position of the first character at or after ``position`` that is not white space."""
    match = _JSON_SPACE.match(text, position)
    return match.end() if match else position


def _fast_object(text: str, position: int, decoder: json.JSONDecoder,
                 outer: bool) -> tuple[dict[str, Any], int]:
    """The JSON object at ``position`` and the position after it (:func:`_load_json_fast`).

    Raises
    ------
    ValueError
        Where the text is not as expected (json then says what is wrong).
    """
    if text[position] != "{":
        raise ValueError("no object")
    pairs = []
    while True:
        position = _after_space(text, position + 1)
        if text[position] != '"':
            raise ValueError("no key")
        key, position = decoder.raw_decode(text, position)  # a string, as json reads keys
        position = _after_space(text, position)
        if text[position] != ":":
            raise ValueError("no colon")
        position = _after_space(text, position + 1)
        value: Any = None
        if outer and key == "cells" and text[position] == "{":
            value, position = _fast_object(text, position, decoder, False)
        elif not outer and key in _FAST_FIELDS and text[position] == "[":
            value, position = _fast_numbers(text, position, key)
        if value is None:
            value, position = decoder.raw_decode(text, position)
            if not outer and key in _CSV_TEXT_COLUMNS and isinstance(value, list):
                # One str per distinct text (json makes one per cell), as the CSV reader.
                distinct: dict[Any, Any] = {}
                value = [distinct.setdefault(item, item) if isinstance(item, str) else item
                         for item in value]
        pairs.append((key, value))
        position = _after_space(text, position)
        if text[position] == "}":
            break
        if text[position] != ",":
            raise ValueError("no comma")
    document = dict(pairs)
    if len(document) != len(pairs):
        raise ValueError("a key twice")
    return document, position + 1


def _fast_numbers(text: str, position: int, field: str) -> tuple[np.ndarray | None, int]:
    """Cell field ``field``'s array of numbers at ``position``, and the position after it.

    None where the array is not one of numbers as the writer writes them.

    Raises
    ------
    ValueError
        For numbers :func:`check_cells` would refuse (or may: past int64, or a float's
        range), to be read as json reads them, and refused as they always were.
    """
    found = next(((match.end(), number, dtype) for pattern, number, dtype in _FAST_FIELDS[field]
                  if (match := pattern.match(text, position))), None)
    if found is None:
        return None, position
    end, number, dtype = found
    values = np.concatenate([_parsed_numbers(texts, number, dtype)
                             for texts in _number_texts(text, position + 1, end - 1)])
    width = _ROW_FIELDS.get(field, (0, None))[0]
    if width:
        values = values.reshape(-1, width)
    if not _surely_valid(field, values):
        raise ValueError(f"cells.{field} has a bad value")
    return values, end


def _parsed_numbers(texts: list[str], number: type, dtype: type) -> np.ndarray:
    """The numbers of ``texts`` read by ``number`` (``int`` or ``float``) as json gives them.

    json reads ``-0`` (no fraction, no exponent) as the whole number 0, which
    becomes 0.0 in a field of floats; ``float("-0")`` is -0.0, written back
    as ``-0.0``. (Every other whole number's float is the same either way.)
    """
    values: np.ndarray = np.fromiter(map(number, texts), dtype, len(texts))
    if number is float and not values.all():  # some zero: any of them "-0"?
        negative = np.flatnonzero((values == 0) & np.signbit(values)).tolist()
        values[[index for index in negative if texts[index] == "-0"]] = 0.0
    return values


def _number_texts(text: str, start: int, stop: int) -> Iterator[list[str]]:
    """The numbers' texts in ``text[start:stop]`` (the inside of a matched array), in batches."""
    while start < stop:
        cut = text.find(",", min(start + _PARSE_BATCH, stop), stop)
        cut = stop if cut < 0 else cut
        # Rows' brackets dropped: "[1,2,3],[4,5,6]" holds the numbers 1 to 6.
        yield text[start:cut].replace("[", "").replace("]", "").split(",")
        start = cut + 1


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a key given twice (the last would win without a word)."""
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"an object names {_shown(key)} twice")
            seen.add(key)
    return document


def _grid(rows: object, cols: object) -> str:
    """A grid's size as every message and summary gives it: columns x rows, ``"40x30 cells"``.

    Examples
    --------
    >>> _grid(30, 40), _grid(10**6, 10**6), _grid(1, "2")
    ('40x30 cells', '1,000,000x1,000,000 cells', "'2'x1 cells")
    """
    def side(value: object) -> str:
        # A file may give anything: a number of any length is cut as _shown cuts.
        whole = isinstance(value, int) and not isinstance(value, bool)
        return f"{value:,}" if whole and len(f"{value:,}") <= 40 else _shown(value)

    return f"{side(cols)}x{side(rows)} cells"


def _shown(value: object) -> str:
    """A value for a message: its repr, cut short (a hostile file may hold huge ones)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_finite_number(value: object) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        # A whole number past a float's range (JSON allows any digits): no number here.
        return False


def _distances(values: list[Any] | np.ndarray) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return values  # read as JSON gives them: whole numbers as int64, others float64
    if all(isinstance(value, int) for value in values):
        return np.array(values, np.int64)
    return np.array(values, np.float64)


def _csv_number(text: str | None, name: str, line: int, kind: type,
                default: float | None = None) -> Any:
    """One CSV field as a number of ``kind`` (``default`` where it is missing or empty)."""
    if text in (None, "") and default is not None:
        return default
    try:
        # Python's int() and float() also read "1_000" and other scripts' digits ("٢"):
        # a typo or a stray character would then name another tile or number.
        if not (isinstance(text, str) and text.isascii() and "_" not in text):
            raise ValueError
        value = kind(text)
    except (TypeError, ValueError):
        # "1.0" is a number: a row, a column or a position is a whole one.
        what = "a whole number" if kind is int else "a number"
        raise ValueError(f"line {line}: {name} must be {what}, got {_shown(text)}") from None
    if kind is float and not math.isfinite(value):
        raise ValueError(f"line {line}: {name} must be a finite number, got {_shown(text)}")
    return value


#: Longest CSV line read (far beyond a placements line, whose fields the csv
#: module limits to 131,072 characters anyway): a file of one huge line is
#: refused before it is all in memory.
MAX_CSV_LINE = 1 << 20


def _bounded_lines(handle: Any) -> Iterator[str]:
    """The lines of a text file, refusing one longer than :data:`MAX_CSV_LINE` characters."""
    number = 0
    while True:
        line = handle.readline(MAX_CSV_LINE + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_CSV_LINE:
            raise ValueError(f"line {number} is longer than {MAX_CSV_LINE:,} characters")
        yield line


@contextlib.contextmanager
def _writing(path: object) -> Iterator[Path]:
    """A temporary file beside ``path``, renamed into place on success (:func:`atomic_path`).

    An error names ``path``: the system's names the temporary file.
    """
    final = _as_path(path)
    try:
        with atomic_path(final) as temporary:
            yield temporary
    except OSError as error:
        raise MosaicistError(f"{final}: cannot write the placements file: "
                             f"{error.strerror or error}") from None


def _as_path(path: object) -> Path:
    if not isinstance(path, str | os.PathLike):
        raise OptionError("{path} must be a path, got {value}", value=shown_type(path))
    if isinstance(path, str) and not path:
        # Path("") is ".": "placements file is not a regular file" named the folder.
        raise OptionError("{path} is empty: give the placements file")
    try:
        # "~/p.json", as make's outputs, targets and tile folders are read.
        given = expanded(path)
    except TypeError:  # a PathLike giving bytes
        raise OptionError("{path} must be a path, got {value}",
                          value=shown_type(path)) from None
    if "\0" in str(given):
        # No file has such a name: writing raised "ValueError: embedded null byte".
        raise OptionError("{path} must be a path, got {value} (it holds a NUL character)",
                          value=_shown(str(given)))
    return given


#: The refusal of a placements file with nothing in it (JSON or CSV).
_EMPTY_FILE = "not a valid placements file (the file is empty)"


def _starts_as_json(path: Path) -> bool:
    """Whether a file not named ``.json`` starts as a JSON object does (a CSV never does).

    A JSON placements file saved as ``.txt`` or without an extension was
    read as CSV: "no row, col, tile, distance, position column".
    """
    with open(path, "rb") as handle:
        head = handle.read(64)
    return head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n").startswith(b"{")


def _cut(message: str, most: int = 200) -> str:
    """A message cut to ``most`` characters (one quoting a huge value from a file)."""
    return message if len(message) <= most else message[:most - 3] + "..."


def _count(value: object, name: str, least: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ValueError(f"{name} must be a whole number of at least {least}, "
                         f"got {_shown(value)}")
    return value


def _text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a text, got {shown_type(value)}")
    return value


def _hashes(value: object, tiles: list[Any]) -> dict[str, str] | None:
    """The optional ``hashes``: each placed tile's content hash when it was matched."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError("hashes must be an object of tile ids and their content hashes")
    placed = set(tiles)
    for key, digest in value.items():
        if not _is_content_hash(digest):
            raise ValueError(f"hashes[{_shown(key)}] is not a content hash (32 hex digits)")
    # A tile no cell holds any more (a file edited by hand to swap a photo) has
    # nothing to check: its hash is dropped, not the file refused.
    return {key: digest for key, digest in value.items() if key in placed}


def _optional_text(value: object, name: str) -> str | None:
    """The optional ``source`` or ``target``: a path or source spec, or None."""
    if value is None:
        return None
    text = _text(value, name)
    if "\0" in text:
        # No file has such a name: os.path.realpath raised "embedded null byte" (a
        # traceback) where render checked its files apart.
        raise ValueError(f"{name} holds a NUL character: {_shown(text)}")
    return text
