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

from .augment import AUGMENT_SETS, prepare_tiles
from .colour import METRICS, encode, encoded_unit
from .errors import MosaicistError
from .grid import Geometry, Grid, check_sizes, make_grid
from .imaging import read_target, to_rgb
from .library import TileLibrary
from .match import cached_features, match_exact
from .paths import atomic_path
from .placements import Placements
from .render import (
    IndexPictures,
    MosaicRenderer,
    OriginalPictures,
    TargetOverlay,
)
from .sources import TileSource, source_spec


@dataclass
class Mosaic:
    """A finished mosaic.

    Unpacks as ``image, placements = make_mosaic(...)``.

    Attributes
    ----------
    placements : Placements
        The tile of every cell.
    grid : Grid
        The target's cells.
    library : TileLibrary
        The tiles used (after ``limit``), at the size they were compared.
    renderer : MosaicRenderer
        Draws the picture at the output size, band by band:
        ``mosaic.renderer.write("mural.dzi")`` streams it to a file of any
        size; :attr:`image` holds it whole in memory.
    timings : dict
        Seconds per phase: ``index``, ``match``, ``render`` (and ``total``
        once the caller adds writing).
    """

    placements: Placements
    grid: Grid
    library: TileLibrary
    renderer: MosaicRenderer
    timings: dict[str, float] = field(default_factory=dict)
    search: str = "exact"
    device: str = "cpu"
    settings: dict = field(default_factory=dict)
    metrics: dict | None = None
    assignment: object | None = None
    _image: np.ndarray | None = field(default=None, repr=False)

    @property
    def image(self) -> np.ndarray:
        """The whole picture, ``(rows * tile_px, cols * tile_px, 3)`` uint8, drawn on first use.

        For outputs too large for memory use ``renderer.write(path)``.
        """
        if self._image is None:
            self._image = self.renderer.image()
        return self._image

    def __iter__(self) -> Iterator:
        yield self.image
        yield self.placements

    def report(self) -> dict:
        """Return the run report as a JSON-ready dictionary."""
        stats = self.library.stats
        return {
            "grid": {"rows": self.grid.rows, "cols": self.grid.cols, "cell_px": self.grid.cell_px},
            "tile_px": self.renderer.tile_px,
            "match_px": self.library.tile_px,
            "tiles": len(self.library),
            "skipped": len(stats.failed) if stats else 0,
            "source": self.library.source.name,
            "objective": self.placements.objective,
            "search": self.search,
            "device": self.device,
            "distinct_tiles": int(len(np.unique(self.placements.tile))),
            "output_size": {"width": self.renderer.width, "height": self.renderer.height},
            "settings": self.settings,
            "metrics": self.metrics,
            "assignment": _assignment_report(self.assignment),
            "timings": {name: round(value, 4) for name, value in self.timings.items()},
        }

    def write_report(self, path: str | os.PathLike[str], **extra: object) -> None:
        """Write :meth:`report` (plus ``extra`` keys) as JSON, atomically."""
        report = self.report() | extra
        with atomic_path(path) as temporary:
            Path(temporary).write_text(json.dumps(report, indent=2) + "\n")


def _assignment_report(assignment: object | None) -> dict | None:
    if assignment is None:
        return None
    keys = ("method", "objective", "lower_bound", "gap", "candidates_used", "iterations", "seconds")
    report = {}
    for key in keys:
        value = getattr(assignment, key, None)
        report[key] = value.item() if isinstance(value, np.generic) else value
    return report


def _as_target(target: str | os.PathLike[str] | np.ndarray | Image.Image) -> np.ndarray:
    if isinstance(target, np.ndarray):
        if target.ndim != 3 or target.shape[2] != 3 or target.dtype != np.uint8:
            raise ValueError("a target array must be (H, W, 3) uint8")
        return target
    if isinstance(target, Image.Image):
        return np.asarray(to_rgb(target), dtype=np.uint8)
    return read_target(target)


#: Most (cell, candidate) entries kept for repetition-limited assignment.
CANDIDATE_BUDGET = 20_000_000


def _check_options(
    metric: str, augment: str, tint: float, overlay: float, max_uses: int | None,
    min_spacing: int, assign: str, search: str, device: str,
) -> None:
    if metric not in METRICS:
        raise MosaicistError(f"unknown metric {metric!r}; use {', '.join(METRICS)}")
    if augment not in AUGMENT_SETS:
        raise MosaicistError(f"unknown augment {augment!r}; use {', '.join(AUGMENT_SETS)}")
    if not 0.0 <= tint <= 1.0:
        raise MosaicistError(f"--tint must be between 0 and 1, got {tint}")
    if not 0.0 <= overlay <= 1.0:
        raise MosaicistError(f"--overlay must be between 0 and 1, got {overlay}")
    if max_uses is not None and max_uses < 1:
        raise MosaicistError(f"--max-uses must be at least 1, got {max_uses}")
    if min_spacing < 0:
        raise MosaicistError(f"--min-spacing must be at least 0, got {min_spacing}")
    if assign not in ("optimal", "greedy"):
        raise MosaicistError(f"unknown assign {assign!r}; use optimal or greedy")
    if search not in ("exact", "approximate"):
        raise MosaicistError(f"unknown search {search!r}; use exact or approximate")
    if device not in ("cpu", "cuda"):
        raise MosaicistError(f"unknown device {device!r}; use cpu or cuda")
    constrained = max_uses is not None or min_spacing > 1
    if device == "cuda" and (search != "exact" or constrained or tint or metric != "seed"
                             or augment != "none"):
        raise MosaicistError(
            "--device cuda runs the plain exact search only (seed metric, no augment, "
            "tint or repetition limits)"
        )
    if search == "approximate" and (constrained or tint):
        raise MosaicistError(
            "--search approximate does not combine with --tint or repetition limits"
        )


def make_mosaic(
    target: str | os.PathLike[str] | np.ndarray | Image.Image,
    tiles: str | os.PathLike[str] | TileSource | TileLibrary = "cifar10",
    *,
    cell_px: int = 16,
    tile_px: int = 32,
    match_px: int | None = None,
    limit: int | None = None,
    metric: str = "seed",
    augment: str = "none",
    tint: float = 0.0,
    overlay: float = 0.0,
    max_uses: int | None = None,
    min_spacing: int = 1,
    assign: str = "optimal",
    search: str = "exact",
    device: str = "cpu",
    quality: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    show_progress: bool = False,
    quiet: bool = True,
) -> Mosaic:
    """Make a photomosaic of ``target`` from a tile library.

    With the defaults this is the seed's method, exactly: each cell of
    ``cell_px`` target pixels gets the tile of minimum squared difference to
    the cell scaled up to ``match_px`` (see :class:`mosaicist.grid.Geometry`);
    ties go to the lowest library position.

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
    match_px : int, optional
        Side at which tiles are indexed and compared with the cells (default:
        ``tile_px`` up to 64, else 32). When it differs from ``tile_px`` the
        picture is drawn from the library's original images at ``tile_px``.
    limit : int, optional
        Use only the first ``limit`` tiles in library order.
    metric : {"seed", "lab", "oklab"}
        Colour space of the per-pixel distance (see :mod:`mosaicist.colour`).
    augment : {"none", "flips", "rotations", "all"}
        Mirror and 90-degree variants of each tile that join the candidates.
    tint : float
        ``A`` in 0..1: each tile's mean colour is moved toward its cell's by
        this fraction (in the metric's colour space), and tiles are ranked by
        their distance after that shift.
    overlay : float
        ``B`` in 0..1: the target blended over the finished mosaic.
    max_uses : int, optional
        No tile is used more than this many times.
    min_spacing : int
        Two cells holding the same tile are at least this many cells apart
        (Chebyshev distance); 1 or less means no constraint.
    assign : {"optimal", "greedy"}
        How repetition limits are solved: a global min-cost assignment, or
        greedily.
    search : {"exact", "approximate"}
        ``exact`` (default) guarantees the minimum for every cell;
        ``approximate`` searches an inverted-file index and re-ranks its
        candidates exactly (much faster on large libraries, not guaranteed).
    device : {"cpu", "cuda"}
        ``cuda`` runs the exact search as integer GEMMs on an NVIDIA GPU with
        PyTorch (the ``gpu`` extra); results are identical.
    quality : bool
        Compute the quality metrics of the report (fidelity, repetition).
    cache_dir : path-like, optional
        Where indexes and downloads live.
    show_progress : bool
        Draw progress bars on stderr.
    quiet : bool
        Suppress warnings about skipped tile files.

    Returns
    -------
    Mosaic
        ``image`` and ``placements`` (and the grid, library, timings, metrics).

    Examples
    --------
    >>> from mosaicist import make_mosaic
    >>> image, placements = make_mosaic("bear.jpg", "photos/")  # doctest: +SKIP
    >>> image, placements = make_mosaic(
    ...     "bear.jpg", "galaxy10", augment="all", tint=0.5, max_uses=2, min_spacing=5
    ... )  # doctest: +SKIP
    """
    check_sizes(cell_px, tile_px)
    match_px = default_match_px(tile_px) if match_px is None else match_px
    check_sizes(cell_px, match_px)
    _check_options(metric, augment, tint, overlay, max_uses, min_spacing, assign, search, device)
    started = time.perf_counter()
    pixels = _as_target(target)
    name = str(target) if isinstance(target, (str, os.PathLike)) else "target"
    grid = make_grid(pixels, cell_px, name=name)
    if isinstance(tiles, TileLibrary):
        library = tiles
        if library.tile_px != match_px:
            raise ValueError(f"library has {library.tile_px} px tiles, asked for {match_px}")
    else:
        library = TileLibrary.open(
            tiles, match_px, cache_dir=cache_dir, show_progress=show_progress, quiet=quiet
        )
    constrained = max_uses is not None or min_spacing > 1
    if constrained:
        from .assign import check_feasible

        check_feasible(len(grid), len(library.limit(limit)), max_uses, grid.rows, grid.cols,
                       min_spacing)
    index_done = time.perf_counter()

    geometry = Geometry(cell_px, match_px)
    cell_vectors = encode(geometry.cell_vectors(grid.cells), metric)
    variants = len(AUGMENT_SETS[augment])
    if device == "cuda":
        from .gpu import match_torch

        library = library.limit(limit)
        result = match_torch(cell_vectors, library.tiles, geometry, "cuda", show_progress)
        chosen, distance = result.tile, result.distance
        features = None
    else:
        prepared = prepare_tiles(
            library.tiles, metric, augment, library.features_dir,
            f"g{library.generation}-n{len(library)}", show_progress,
        )
        features = cached_features(
            prepared, geometry, library.features_dir, library.generation, show_progress,
            variant=f"{metric}-{augment}",
        )
        library = library.limit(limit)
        prepared = prepared[: len(library) * variants]
        features = features.limit(len(prepared))
        if search == "approximate":
            from .approximate import match_approximate

            result = match_approximate(
                cell_vectors, prepared, geometry, features, show_progress,
                cache_dir=library.features_dir,
            )
            chosen, distance = result.tile, result.distance
        elif constrained:
            chosen, distance, assignment = _assign(
                cell_vectors, prepared, geometry, features, variants, grid, tint,
                max_uses, min_spacing, assign, show_progress,
            )
        else:
            result = match_exact(
                cell_vectors, prepared, geometry, features, show_progress, tint=tint
            )
            chosen, distance = result.tile, result.distance
    match_done = time.perf_counter()

    tile_index = chosen // variants
    transforms = np.asarray(AUGMENT_SETS[augment], np.int8)[chosen % variants]
    shifts = None
    if tint and features is not None:
        count = match_px * match_px
        cell_means = cell_vectors.reshape(len(grid), -1, 3).mean(axis=1, dtype=np.float64)
        tile_means = features.channel_sums[chosen] / count
        shifts = tint * (cell_means - tile_means) * encoded_unit(metric)
    placements = Placements(
        grid.rows, grid.cols, tile_index, distance,
        [library.source_ids[index] for index in tile_index.tolist()],
        transforms, shifts,
        {
            "source": source_spec(library.source),
            "cell_px": cell_px,
            "tile_px": tile_px,
            "match_px": match_px,
            "metric": metric,
            "augment": augment,
            "tint": tint,
            "overlay": overlay,
            "target": str(Path(name).resolve()) if name != "target" else None,
            "crop": {"left": grid.left, "top": grid.top},
        },
    )
    target_crop = _crop(pixels, grid)
    at_match_size = MosaicRenderer(placements, IndexPictures(library.tiles, tile_index), metric)
    if overlay:
        at_match_size.overlay = TargetOverlay(target_crop, at_match_size.width,
                                              at_match_size.height, overlay)
    if tile_px == match_px:
        renderer = at_match_size
    else:
        renderer = MosaicRenderer(
            placements, OriginalPictures(library.source, placements.source_ids, tile_px), metric
        )
        if overlay:
            renderer.overlay = TargetOverlay(target_crop, renderer.width, renderer.height,
                                             overlay)
    render_done = time.perf_counter()
    timings = {
        "index": index_done - started,
        "match": match_done - index_done,
        "render": 0.0,
    }
    mosaic = Mosaic(placements, grid, library, renderer, timings, search, device)
    mosaic.settings = {
        "metric": metric, "augment": augment, "tint": tint, "overlay": overlay,
        "max_uses": max_uses, "min_spacing": min_spacing, "assign": assign,
        "match_px": match_px,
    }
    if constrained:
        mosaic.assignment = assignment
    if quality:
        # Fidelity is measured at the size tiles were compared (the picture as
        # matched), streamed: only its viewing-scale reduction is kept.
        mosaic.metrics = _quality(at_match_size, target_crop, grid, placements, tint, overlay,
                                  shifts)
        mosaic.timings["metrics"] = time.perf_counter() - render_done
    return mosaic


def default_match_px(tile_px: int) -> int:
    """Side tiles are compared at when not given: ``tile_px`` up to 64, else 32.

    Comparing at print sizes (hundreds of pixels) would cost hundreds of
    times more for no visible gain: a cell is judged from afar.
    """
    return tile_px if tile_px <= 64 else 32


def _crop(pixels: np.ndarray, grid: Grid) -> np.ndarray:
    return pixels[
        grid.top:grid.top + grid.rows * grid.cell_px, grid.left:grid.left + grid.cols * grid.cell_px
    ]


def _assign(
    cell_vectors: np.ndarray,
    prepared: np.ndarray,
    geometry: Geometry,
    features,
    variants: int,
    grid: Grid,
    tint: float,
    max_uses: int | None,
    min_spacing: int,
    method: str,
    show_progress: bool,
):
    """Each cell's best candidates, then a capacity- and spacing-limited assignment.

    Limits count uses of a library tile whatever its transform, so candidate
    lists are reduced to each tile's best transform before assigning.
    """
    from .assign import MAX_CANDIDATES, assign_tiles

    best_variant: dict = {}

    def candidates(k: int) -> tuple[np.ndarray, np.ndarray]:
        result = match_exact(
            cell_vectors, prepared, geometry, features, show_progress,
            k=k * variants, tint=tint,
        )
        tiles, distances = _best_transform(result.candidates, result.candidate_distances,
                                           variants, k)
        best_variant["candidates"] = result.candidates
        return tiles, distances

    first_k = 16
    tiles, distances = candidates(first_k)
    # Tight caps on small libraries need long lists (up to every tile); keep the
    # candidate arrays near CANDIDATE_BUDGET entries.
    library_size = len(prepared) // variants
    longest = max(MAX_CANDIDATES, min(library_size, CANDIDATE_BUDGET // max(1, len(cell_vectors))))
    assignment = assign_tiles(
        tiles, distances, grid.rows, grid.cols, max_uses=max_uses, min_spacing=min_spacing,
        method=method, more_candidates=candidates, show_progress=show_progress,
        max_candidates=longest,
    )
    # Back from library tiles to the (tile, transform) candidate that won.
    full = best_variant["candidates"]
    valid = full >= 0
    tile_of = np.where(valid, full // variants, -1)
    match_rows = tile_of == assignment.tile[:, None]
    first = match_rows.argmax(axis=1)
    chosen = full[np.arange(len(full)), first]
    return chosen, assignment.distance, assignment


def _best_transform(
    candidates: np.ndarray, distances: np.ndarray, variants: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Reduce (tile, transform) candidate lists to library tiles, best transform first."""
    count, width = candidates.shape
    if variants == 1 and width >= k:
        return candidates[:, :k], distances[:, :k]
    tiles = np.where(candidates >= 0, candidates // variants, -1)
    # Lists are sorted by distance: keep each tile's first (best) occurrence.
    order = np.argsort(tiles, axis=1, kind="stable")
    sorted_tiles = np.take_along_axis(tiles, order, axis=1)
    repeat = np.zeros_like(sorted_tiles, bool)
    repeat[:, 1:] = sorted_tiles[:, 1:] == sorted_tiles[:, :-1]
    duplicate = np.zeros_like(repeat)
    np.put_along_axis(duplicate, order, repeat, axis=1)
    duplicate |= tiles < 0
    rank = np.cumsum(~duplicate, axis=1) - 1
    keep = ~duplicate & (rank < k)
    out_tiles = np.full((count, k), -1, np.int64)
    out_distances = np.full((count, k), np.iinfo(np.int64).max, distances.dtype)
    if np.issubdtype(distances.dtype, np.floating):
        out_distances[:] = np.inf
    rows = np.nonzero(keep)[0]
    out_tiles[rows, rank[keep]] = tiles[keep]
    out_distances[rows, rank[keep]] = distances[keep]
    return out_tiles, out_distances


def _quality(
    renderer: MosaicRenderer, target_crop: np.ndarray, grid: Grid, placements: Placements,
    tint: float, overlay: float, shifts: np.ndarray | None,
) -> dict:
    from .quality import fidelity_from_bands, repetition_metrics

    metrics = fidelity_from_bands(renderer.bands(), target_crop, renderer.tile_px, grid.cell_px)
    metrics.update(repetition_metrics(placements.tile_grid()))
    metrics["tint"] = tint
    metrics["overlay"] = overlay
    metrics["mean_tint_shift"] = (
        float(np.linalg.norm(shifts, axis=1).mean()) if shifts is not None else 0.0
    )
    return metrics
