"""Placements: which tile goes in which cell. Matching makes them; rendering uses them."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass

import numpy as np

from .paths import atomic_path

CSV_HEADER = ("row", "col", "tile", "distance", "position")


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
        ``(rows * cols,)`` int64 exact objective of each pick.
    source_ids : list of str
        Source id of each cell's tile.
    """

    rows: int
    cols: int
    tile: np.ndarray
    distance: np.ndarray
    source_ids: list[str]

    def __len__(self) -> int:
        return self.rows * self.cols

    @property
    def objective(self) -> int:
        """Sum of the exact distances over all cells."""
        return int(self.distance.sum())

    def tile_grid(self) -> np.ndarray:
        """Library positions as a ``(rows, cols)`` array."""
        return self.tile.reshape(self.rows, self.cols)

    def write_csv(self, path: str | os.PathLike[str]) -> None:
        """Write one row per cell: ``row,col,tile,distance,position`` (atomically).

        ``tile`` is the tile's source id; ``position`` its library position.
        """
        with atomic_path(path) as temporary, open(temporary, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_HEADER)
            rows, cols = np.divmod(np.arange(len(self)), self.cols)
            writer.writerows(
                zip(
                    rows.tolist(), cols.tolist(), self.source_ids,
                    self.distance.tolist(), self.tile.tolist(), strict=True,
                )
            )

    @classmethod
    def read_csv(cls, path: str | os.PathLike[str]) -> Placements:
        """Read placements written by :meth:`write_csv`."""
        with open(path, newline="") as handle:
            records = list(csv.DictReader(handle))
        rows = max(int(record["row"]) for record in records) + 1
        cols = max(int(record["col"]) for record in records) + 1
        order = sorted(records, key=lambda record: (int(record["row"]), int(record["col"])))
        return cls(
            rows,
            cols,
            np.array([int(record["position"]) for record in order], np.int64),
            np.array([int(record["distance"]) for record in order], np.int64),
            [record["tile"] for record in order],
        )
