"""The whole pipeline: target + library -> placements -> image and report."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import MosaicistError
from .grid import Geometry, Grid, check_sizes, make_grid
from .imaging import read_target, to_rgb
from .library import TileLibrary
from .match import cached_features, match_exact
from .paths import atomic_path
from .placements import Placements
from .render import render_mosaic
from .sources import TileSource


@dataclass
class Mosaic:
    """A finished mosaic.

    Unpacks as ``image, placements = make_mosaic(...)``.

    Attributes
    ----------
    image : numpy.ndarray
        ``(rows * tile_px, cols * tile_px, 3)`` uint8 picture.
    placements : Placements
        The tile of every cell.
    grid : Grid
        The target's cells.
    library : TileLibrary
        The tiles used (after ``limit``).
    timings : dict
        Seconds per phase: ``index``, ``match``, ``render`` (and ``total``
        once the caller adds writing).
    """

    image: np.ndarray
    placements: Placements
    grid: Grid
    library: TileLibrary
    timings: dict[str, float] = field(default_factory=dict)
    search: str = "exact"
    device: str = "cpu"

    def __iter__(self) -> Iterator:
        yield self.image
        yield self.placements

    def report(self) -> dict:
        """Return the run report as a JSON-ready dictionary."""
        stats = self.library.stats
        return {
            "grid": {"rows": self.grid.rows, "cols": self.grid.cols, "cell_px": self.grid.cell_px},
            "tile_px": self.library.tile_px,
            "tiles": len(self.library),
            "skipped": len(stats.failed) if stats else 0,
            "source": self.library.source.name,
            "objective": self.placements.objective,
            "search": self.search,
            "device": self.device,
            "distinct_tiles": int(len(np.unique(self.placements.tile))),
            "output_size": {"width": int(self.image.shape[1]), "height": int(self.image.shape[0])},
            "timings": {name: round(value, 4) for name, value in self.timings.items()},
        }

    def write_report(self, path: str | os.PathLike[str], **extra: object) -> None:
        """Write :meth:`report` (plus ``extra`` keys) as JSON, atomically."""
        report = self.report() | extra
        with atomic_path(path) as temporary:
            Path(temporary).write_text(json.dumps(report, indent=2) + "\n")


def _as_target(target: str | os.PathLike[str] | np.ndarray | Image.Image) -> np.ndarray:
    if isinstance(target, np.ndarray):
        if target.ndim != 3 or target.shape[2] != 3 or target.dtype != np.uint8:
            raise ValueError("a target array must be (H, W, 3) uint8")
        return target
    if isinstance(target, Image.Image):
        return np.asarray(to_rgb(target), dtype=np.uint8)
    return read_target(target)


def make_mosaic(
    target: str | os.PathLike[str] | np.ndarray | Image.Image,
    tiles: str | os.PathLike[str] | TileSource | TileLibrary = "cifar10",
    *,
    cell_px: int = 16,
    tile_px: int = 32,
    limit: int | None = None,
    search: str = "exact",
    device: str = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
    show_progress: bool = False,
    quiet: bool = True,
) -> Mosaic:
    """Make a photomosaic of ``target`` from a tile library, exactly as the seed does.

    Each cell of ``cell_px`` target pixels gets the tile of minimum squared
    difference to the cell scaled up to ``tile_px`` (see
    :class:`mosaicist.grid.Geometry`); ties go to the lowest library position.

    Parameters
    ----------
    target : path-like, numpy.ndarray or PIL.Image.Image
        The picture to reproduce.
    tiles : str, path-like, TileSource or TileLibrary
        A source spec (``"cifar10"``, a folder, ``"file.h5:images"``...) or an
        opened library.
    cell_px : int
        Target pixels per cell side.
    tile_px : int
        Output pixels per tile side.
    limit : int, optional
        Use only the first ``limit`` tiles in library order.
    search : {"exact", "approximate"}
        ``exact`` (default) guarantees the minimum for every cell;
        ``approximate`` searches an inverted-file index and re-ranks its
        candidates exactly (much faster on large libraries, not guaranteed).
    device : {"cpu", "cuda"}
        ``cuda`` runs the exact search as integer GEMMs on an NVIDIA GPU with
        PyTorch (the ``gpu`` extra); results are identical.
    cache_dir : path-like, optional
        Where indexes and downloads live.
    show_progress : bool
        Draw progress bars on stderr.
    quiet : bool
        Suppress warnings about skipped tile files.

    Returns
    -------
    Mosaic
        ``image`` and ``placements`` (and the grid, library and timings).

    Examples
    --------
    >>> from mosaicist import make_mosaic
    >>> image, placements = make_mosaic("bear.jpg", "photos/")  # doctest: +SKIP
    """
    check_sizes(cell_px, tile_px)
    if search not in ("exact", "approximate"):
        raise MosaicistError(f"unknown search {search!r}; use exact or approximate")
    if device not in ("cpu", "cuda"):
        raise MosaicistError(f"unknown device {device!r}; use cpu or cuda")
    if device == "cuda" and search != "exact":
        raise MosaicistError("--device cuda runs the exact search only")
    started = time.perf_counter()
    pixels = _as_target(target)
    name = str(target) if isinstance(target, (str, os.PathLike)) else "target"
    grid = make_grid(pixels, cell_px, name=name)
    if isinstance(tiles, TileLibrary):
        library = tiles
        if library.tile_px != tile_px:
            raise ValueError(f"library has {library.tile_px} px tiles, asked for {tile_px}")
    else:
        library = TileLibrary.open(
            tiles, tile_px, cache_dir=cache_dir, show_progress=show_progress, quiet=quiet
        )
    index_done = time.perf_counter()

    geometry = Geometry(cell_px, tile_px)
    cell_vectors = geometry.cell_vectors(grid.cells)
    if device == "cuda":
        from .gpu import match_torch

        library = library.limit(limit)
        result = match_torch(cell_vectors, library.tiles, geometry, "cuda", show_progress)
    else:
        features = cached_features(
            library.tiles, geometry, library.features_dir, library.generation, show_progress
        )
        library = library.limit(limit)
        features = features.limit(len(library))
        if search == "approximate":
            from .approximate import match_approximate

            result = match_approximate(
                cell_vectors, library.tiles, geometry, features, show_progress
            )
        else:
            result = match_exact(cell_vectors, library.tiles, geometry, features, show_progress)
    match_done = time.perf_counter()

    placements = Placements(
        grid.rows, grid.cols, result.tile, result.distance,
        [library.source_ids[index] for index in result.tile.tolist()],
    )
    image = render_mosaic(library.tiles, placements.tile_grid())
    render_done = time.perf_counter()
    timings = {
        "index": index_done - started,
        "match": match_done - index_done,
        "render": render_done - match_done,
    }
    return Mosaic(image, placements, grid, library, timings, search, device)
