"""Placements: which tile, transformed and tinted how, goes in which cell.

Matching makes them; rendering and reporting use them. They are saved as CSV
(one row per cell) and as JSON (the same plus everything needed to render
again without matching: the tile source, sizes, colour space, tint and
overlay strengths, the target).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .augment import TRANSFORM_NAMES, transform_code
from .errors import MosaicistError
from .paths import atomic_path

CSV_HEADER = (
    "row", "col", "tile", "distance", "position", "transform", "tint_0", "tint_1", "tint_2",
)
JSON_FORMAT = "mosaicist-placements"
JSON_VERSION = 1


@dataclass
class Placements:
    """The tile chosen for every cell of a grid.

    Attributes
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
    transform : numpy.ndarray
        ``(rows * cols,)`` int8 transform code of each tile (see
        :data:`mosaicist.augment.TRANSFORM_NAMES`; 0 is the identity).
    tint : numpy.ndarray
        ``(rows * cols, 3)`` float64 colour shift added to each tile, in the
        units of the colour space named by ``metadata["metric"]`` (sRGB
        levels for ``seed``, Lab units for ``lab``, Oklab units for ``oklab``).
    metadata : dict
        Source spec, sizes, metric, tint and overlay strengths, target...
    """

    rows: int
    cols: int
    tile: np.ndarray
    distance: np.ndarray
    source_ids: list[str]
    transform: np.ndarray | None = None
    tint: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        count = self.rows * self.cols
        if self.transform is None:
            self.transform = np.zeros(count, np.int8)
        if self.tint is None:
            self.tint = np.zeros((count, 3), np.float64)

    def __len__(self) -> int:
        return self.rows * self.cols

    @property
    def objective(self) -> int | float:
        """Sum of the exact distances over all cells."""
        total = self.distance.sum()
        return int(total) if np.issubdtype(self.distance.dtype, np.integer) else float(total)

    def tile_grid(self) -> np.ndarray:
        """Library positions as a ``(rows, cols)`` array."""
        return self.tile.reshape(self.rows, self.cols)

    def write_csv(self, path: str | os.PathLike[str]) -> None:
        """Write one row per cell (atomically).

        Columns: ``row,col,tile,distance,position,transform,tint_0..2``;
        ``tile`` is the tile's source id, ``position`` its library position,
        ``transform`` a name from :data:`mosaicist.augment.TRANSFORM_NAMES`.
        """
        rows, cols = np.divmod(np.arange(len(self)), self.cols)
        names = [TRANSFORM_NAMES[code] for code in self.transform.tolist()]
        tint = np.round(self.tint, 4)
        with atomic_path(path) as temporary, open(temporary, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_HEADER)
            writer.writerows(
                zip(
                    rows.tolist(), cols.tolist(), self.source_ids, self.distance.tolist(),
                    self.tile.tolist(), names, tint[:, 0].tolist(), tint[:, 1].tolist(),
                    tint[:, 2].tolist(), strict=True,
                )
            )

    def to_json(self) -> dict:
        """Return a JSON-ready dictionary (metadata plus per-cell lists)."""
        return {
            "format": JSON_FORMAT,
            "version": JSON_VERSION,
            **self.metadata,
            "rows": self.rows,
            "cols": self.cols,
            "cells": {
                "tile": self.source_ids,
                "position": self.tile.tolist(),
                "distance": self.distance.tolist(),
                "transform": [TRANSFORM_NAMES[code] for code in self.transform.tolist()],
                "tint": np.round(self.tint, 4).tolist(),
            },
        }

    def write_json(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_json` atomically."""
        with atomic_path(path) as temporary:
            Path(temporary).write_text(json.dumps(self.to_json(), separators=(",", ":")) + "\n")

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write CSV or JSON by the file's extension."""
        if str(path).lower().endswith(".json"):
            self.write_json(path)
        else:
            self.write_csv(path)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Placements:
        """Read placements written by :meth:`write_csv` or :meth:`write_json`.

        Raises
        ------
        MosaicistError
            When the file is missing or not a placements file.
        """
        path = Path(path)
        if not path.is_file():
            raise MosaicistError(f"{path}: placements file not found")
        try:
            if path.suffix.lower() == ".json":
                return cls._from_json(json.loads(path.read_text()))
            return cls.read_csv(path)
        except (ValueError, KeyError, TypeError, IndexError) as error:
            raise MosaicistError(f"{path}: not a valid placements file ({error})") from None

    @classmethod
    def _from_json(cls, data: dict) -> Placements:
        if data.get("format") != JSON_FORMAT:
            raise ValueError("missing format marker")
        cells = data["cells"]
        metadata = {
            key: value for key, value in data.items()
            if key not in ("format", "version", "rows", "cols", "cells")
        }
        distance = np.array(cells["distance"])
        return cls(
            int(data["rows"]),
            int(data["cols"]),
            np.array(cells["position"], np.int64),
            distance,
            list(cells["tile"]),
            np.array([transform_code(name) for name in cells["transform"]], np.int8),
            np.array(cells["tint"], np.float64).reshape(-1, 3),
            metadata,
        )

    @classmethod
    def read_csv(cls, path: str | os.PathLike[str]) -> Placements:
        """Read placements written by :meth:`write_csv` (also the older 5-column form)."""
        with open(path, newline="") as handle:
            records = list(csv.DictReader(handle))
        if not records:
            raise ValueError("no rows")
        rows = max(int(record["row"]) for record in records) + 1
        cols = max(int(record["col"]) for record in records) + 1
        order = sorted(records, key=lambda record: (int(record["row"]), int(record["col"])))
        if len(order) != rows * cols:
            raise ValueError(f"{len(order)} rows for a {rows}x{cols} grid")
        distances = [record["distance"] for record in order]
        is_float = any("." in value or "e" in value.lower() for value in distances)
        return cls(
            rows,
            cols,
            np.array([int(record["position"]) for record in order], np.int64),
            np.array([float(v) if is_float else int(v) for v in distances],
                     np.float64 if is_float else np.int64),
            [record["tile"] for record in order],
            np.array(
                [transform_code(record.get("transform") or "identity") for record in order],
                np.int8,
            ),
            np.array(
                [[float(record.get(f"tint_{c}") or 0.0) for c in range(3)] for record in order],
                np.float64,
            ),
        )
