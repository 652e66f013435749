"""The studio's live preview: a small mosaic with the same settings, in under a second.

The preview is an **approximation** of what ``make`` would do, fast enough to
follow every change of a setting (about 2,000 cells from 50,000 tiles in well
under a second once the library is warm), and it says so in its ``info``:

- **Grid.** The cells of the mosaic's own crop and cell shape (sizes planned
  as ``make`` plans them: ``cells``, ``print_size``, ``aspect``), coarsened
  to about ``cells`` cells when the mosaic has more; the target is kept
  reduced in memory and resampled by exact area averaging.
- **Descriptors.** Each tile and each cell is described at reduced
  resolution in the metric's colour space: its mean colour and its spread
  (from 8 px a side) and its detail as 4 x 4 block means less the mean. The
  distance is the mosaic's objective on those blocks: the detail term plus
  the mean term scaled by ``(1 - tint)^2`` (the closed form of the tint
  shift, as the exact search ranks tiles), over every transform of
  ``augment``.
- **Search.** Every tile is compared with every cell (one blocked float32
  GEMM), keeping each cell's nearest :data:`CANDIDATES` (a threshold from a
  sample of the library, so no per-row sort of the whole library).
- **Limits.** ``max_uses`` and ``min_spacing`` (fitted to the library and
  grid as ``make`` fits a preset's wishes) are met by a greedy assignment:
  cells with the most to lose choose first, each its best candidate still
  free, and cells left without one search the library again for tiles with
  uses left. ``make`` solves a global min-cost assignment instead. What
  ``make`` refuses before any work is refused here too, on the mosaic's own
  grid: limits the library cannot meet (``min_uses`` included, which the
  preview does not show), and cells that do not halve ``adaptive`` times.
- **Colour.** Contrast gains (re-ranking the best :data:`CONTRAST_CANDIDATES`
  without limits, applied after the assignment with them), adaptive tint
  (``tint_max``), the tint held back short of black and white with the
  contrast transfer on, and the overlay as ``make`` applies them; tiles are
  drawn from the index, reduced to the preview's tile size.

Warm state, bounded: at most :data:`MAX_LIBRARIES` libraries (LRU), each
with its reduced tiles (192 bytes a tile) and per colour metric its
descriptors (about 300 bytes a tile); libraries over :data:`MAX_TILES` tiles
are previewed from an even sample of that many. The reduced tiles are also
cached on disk beside the index, so a restarted studio warms up quickly. At
most :data:`MAX_TARGETS` targets are kept, reduced to :data:`TARGET_SIDE`.
"""

from __future__ import annotations

import collections
import contextlib
import io
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from threadpoolctl import threadpool_limits

from .._runtime import one_blas_thread, worker_count
from ..adaptive import check_adaptive
from ..aspect import height_for
from ..colour import (
    METRICS,
    chroma_projection,
    encode,
    encoded_unit,
    lightness_axis,
    to_space,
)
from ..errors import MosaicistError, OptionError, naming_identical
from ..imaging import read_target, target_size
from ..library import MissingIndexError, TileLibrary
from ..match import fitted_matcher
from ..match._assign import check_feasible, tile_capacity
from ..match._capped import fit_limits
from ..match._contrast import (
    GAIN_LIMITS,
    TOLERANCE_FLOOR,
    _room_limit,
    cell_chroma,
    mean_errors,
    mean_shifts,
)
from ..metrics import repetition_metrics
from ..options import MosaicOptions
from ..paths import atomic_path, expanded
from ..render import dress_tiles
from ..sizing import fit_options, options_plan
from ..sources.base import change_stamp
from ..transforms import apply_transform, augment_transforms

#: Cells of a preview when not told.
DEFAULT_CELLS = 2000
#: Fewest and most cells a preview may be asked for.
CELLS_RANGE = (16, 20000)
#: Pixels a side (of the width; heights follow the aspect) at which a cell's and a
#: tile's mean and spread are measured.
STATS_PX = 8
#: Blocks a side of the detail descriptor.
DESCRIPTOR_PX = 4
#: Candidates kept per cell.
CANDIDATES = 32
#: Candidates re-ranked after the contrast transfer (as ``make`` does).
CONTRAST_CANDIDATES = 16
#: Libraries kept warm.
MAX_LIBRARIES = 2
#: Largest library previewed whole; larger ones are previewed from an even sample.
MAX_TILES = 200_000
#: Targets kept decoded (reduced).
MAX_TARGETS = 2
#: Longest side a target is kept at for previews.
TARGET_SIDE = 2048
#: Longest side of a preview picture, about.
PREVIEW_SIDE = 800
#: JPEG quality of the preview.
JPEG_QUALITY = 85
#: Most pixels a side of a JPEG picture may have (the encoder's limit).
JPEG_SIDE = 65_500
#: Tiles sampled to set each cell's search threshold.
THRESHOLD_SAMPLE = 4096
#: Principal axes of the tiles' detail the first pass of the search compares on.
SEARCH_AXES = 20
#: Cells (times transforms) per task of the search, and tiles per block of it.
SCAN_BLOCK = 256
TILE_BLOCK = 4096
#: Cells left without a free candidate that search the library again together, and
#: how many times one cell may.
REFILL_BATCH = 128
REFILL_ROUNDS = 4

_INVERSE = {0: 0, 1: 1, 2: 4, 3: 3, 4: 2, 5: 5, 6: 6, 7: 7}
#: The search's threads (numpy releases the GIL in its products).
_POOL = ThreadPoolExecutor(worker_count(), thread_name_prefix="mosaicist-preview")


def area_matrix(source: int, target: int) -> np.ndarray:
    """``(target, source)`` weights averaging ``source`` samples into ``target`` by overlap.

    Each output sample is the overlap-weighted mean of the input samples it
    covers (exact area averaging, any ratio).
    """
    edges_out = np.arange(target + 1) * (source / target)
    lower = np.maximum(edges_out[:-1, None], np.arange(source)[None, :])
    upper = np.minimum(edges_out[1:, None], np.arange(1, source + 1)[None, :])
    weights = np.clip(upper - lower, 0, None)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def resample(pictures: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-average ``(..., H, W, C)`` pictures to ``(..., height, width, C)`` float32."""
    rows = area_matrix(pictures.shape[-3], height)
    cols = area_matrix(pictures.shape[-2], width)
    values = np.moveaxis(np.asarray(pictures, np.float32), -1, -3)  # (..., C, H, W)
    return np.moveaxis(rows @ values @ cols.T, -3, -1)


def _encoded(pictures: np.ndarray, metric: str) -> np.ndarray:
    """sRGB (uint8 or float) -> the metric's encoded units as float32 (offsets left out)."""
    values = np.clip(np.rint(pictures), 0, 255).astype(np.uint8) \
        if pictures.dtype != np.uint8 else pictures
    scale = 250.0 if metric == "oklab" else 1.0
    return (to_space(values, metric) * scale).astype(np.float32)


@dataclass
class _Features:
    """A set of pictures (tiles or cells) described in one metric's space."""

    means: np.ndarray      # (n, 3) mean colour, encoded units
    spread: np.ndarray     # (n, 3) mean squared deviation from the mean, per pixel
    detail: np.ndarray     # (n, Dh, Dw, 3) block means less the mean
    detail_norm: np.ndarray  # (n,) squared norm of detail
    basis: np.ndarray | None = None      # (Dh*Dw*3, r) principal axes of the tiles' detail
    projected: np.ndarray | None = None  # (n, r) detail on those axes


def _features(stats_pixels: np.ndarray, metric: str, blocks: tuple[int, int]) -> _Features:
    """Describe ``(n, Sh, Sw, 3)`` sRGB pictures (see the module docstring)."""
    encoded = _encoded(stats_pixels, metric)
    means = encoded.mean(axis=(1, 2))
    centred = encoded - means[:, None, None, :]
    spread = (centred * centred).mean(axis=(1, 2))
    detail = np.ascontiguousarray(resample(centred, *blocks))
    flat = detail.reshape(len(detail), -1)
    return _Features(means, spread, detail, np.einsum("ij,ij->i", flat, flat))


def _with_axes(features: _Features) -> _Features:
    """Add the principal axes of the detail (:data:`SEARCH_AXES` of them) and the projection."""
    flat = features.detail.reshape(len(features.detail), -1).astype(np.float64)
    _, vectors = np.linalg.eigh(flat.T @ flat)
    basis = np.ascontiguousarray(vectors[:, ::-1][:, :SEARCH_AXES], np.float32)
    features.basis = basis
    features.projected = np.ascontiguousarray(
        features.detail.reshape(len(features.detail), -1) @ basis)
    return features


@dataclass
class _Target:
    path: Path
    stamp: tuple[int, int]
    size: tuple[int, int]          # (width, height) as make reads it
    pixels: np.ndarray             # reduced (h, w, 3) uint8
    scale: float                   # reduced / original


@dataclass
class _WarmLibrary:
    library: TileLibrary
    positions: np.ndarray          # library positions described (all, or an even sample)
    stats: np.ndarray              # (n, Sh, Sw, 3) uint8 sRGB
    features: dict[str, _Features] = field(default_factory=dict)
    leaders: dict[int, np.ndarray] = field(default_factory=dict)
    # Metrics being described (by the caller or in the background) -> done.
    describing: dict[str, threading.Event] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # The last search matrix, by (metric, tint, rows in use): a change of any other
    # setting reuses it.
    matrix: tuple[tuple, _TileMatrix] | None = None
    others_wanted: bool = False  # describe the other metrics once a preview is made

    def describe(self, metric: str, blocks: tuple[int, int]) -> _Features:
        """The tiles' features in ``metric``: computed once, whichever thread asks first."""
        with self.lock:
            features = self.features.get(metric)
            if features is not None:
                return features
            event = self.describing.get(metric)
            owner = event is None
            if owner:
                event = self.describing[metric] = threading.Event()
        assert event is not None
        if not owner:
            event.wait()
            with self.lock:
                features = self.features.get(metric)
            if features is not None:
                return features
            return self.describe(metric, blocks)  # the other thread failed: try here
        try:
            parts = [_features(self.stats[start:start + 8192], metric, blocks)
                     for start in range(0, len(self.stats), 8192)]
            features = _with_axes(_Features(*(
                np.concatenate([getattr(part, name) for part in parts])
                for name in ("means", "spread", "detail", "detail_norm"))))
            with self.lock:
                self.features[metric] = features
            return features
        finally:
            with self.lock:
                del self.describing[metric]
            event.set()


class Previewer:
    """Makes preview mosaics, keeping libraries and targets warm (see the module docstring).

    Parameters
    ----------
    cache_dir : path-like
        The cache folder where the libraries are indexed.

    Notes
    -----
    Thread-safe: previews are made one at a time.
    """

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.cache_dir = expanded(cache_dir).absolute()
        self._lock = threading.Lock()
        self._libraries: collections.OrderedDict[tuple, _WarmLibrary] = collections.OrderedDict()
        # By path and colour_profiles: a target with a colour profile reads otherwise.
        self._targets: collections.OrderedDict[tuple[Path, str], _Target] = (
            collections.OrderedDict())

    def preview(self, target: str | os.PathLike[str], tiles: str, options: MosaicOptions,
                cells: int = DEFAULT_CELLS) -> tuple[bytes, dict[str, Any]]:
        """A preview of the mosaic of ``target`` from ``tiles`` with ``options``.

        Parameters
        ----------
        target : path-like
            The target picture.
        tiles : str
            The tile source spec; it must be indexed already at these
            settings (an index job does that).
        options : MosaicOptions
            The settings of the mosaic.
        cells : int
            About how many cells the preview has (fewer when the mosaic has
            fewer).

        Returns
        -------
        jpeg : bytes
            The preview picture.
        info : dict
            ``cells``, ``cols``, ``rows``, ``seconds``, ``approximate``
            (always True), ``method``, ``grid`` (the mosaic's own ``cols``
            and ``rows``), ``tiles`` (in use), ``distinct_tiles``,
            ``most_uses`` and ``closest_repeat`` (of the preview's own
            tiles), ``max_uses`` and ``min_spacing`` (the limits, as
            fitted), ``relaxed`` (cells placed breaking a limit),
            ``width``, ``height``, ``tile_px``, ``notes`` (sentences on
            what the preview leaves out) and ``timings`` (seconds per step).

        Raises
        ------
        MosaicistError
            For a target that cannot be read, tiles not indexed yet, or
            settings ``make`` would refuse (an :class:`OptionError`).
        """
        if not CELLS_RANGE[0] <= cells <= CELLS_RANGE[1]:
            raise OptionError("preview cells must be between {low} and {high}, got {value}",
                              low=CELLS_RANGE[0], high=CELLS_RANGE[1], value=cells)
        with self._lock:
            return self._preview(Path(target), str(tiles), options, int(cells))

    def check_limits(self, target: str | os.PathLike[str], tiles: str,
                     options: MosaicOptions) -> None:
        """Refuse, as ``make`` does before any work, limits these tiles cannot keep.

        Only where the tiles are warm here already (a preview of them ran):
        opening an index is a job's work, not a request's; a run of cold
        tiles is refused by its own make, as a failed run.

        Raises
        ------
        MosaicistError
            An :class:`OptionError` where the settings' limits cannot fill the
            mosaic's grid from these tiles (the preview's own refusal).
        """
        with self._lock:
            _, options, _ = fitted_matcher(options)
            plan = options_plan(options, target_size(Path(target), options.max_target_pixels),
                                str(target))
            options = fit_options(options, plan)
            if _library_key(str(tiles), options) not in self._libraries or options.adaptive:
                return
            warm = self._library(str(tiles), options)
            self._checked_limits(warm, self._active_rows(warm, options), options, plan)

    def _checked_limits(self, warm: _WarmLibrary, active: np.ndarray, options: MosaicOptions,
                        plan: Any) -> MosaicOptions:
        """The options with their limits fitted to the mosaic's own grid, as make fits them,
        refused (as make refuses them) where the library cannot keep them."""
        full_cells = plan.cols * plan.rows
        library_size = len(active) if len(warm.positions) == len(warm.library) else \
            _limited_size(warm, options)
        fitted = fit_limits(options, full_cells, library_size, plan.rows, plan.cols)
        try:
            # The minimum of uses too (make refuses it with adaptive cells, whose count
            # differs).
            check_feasible(full_cells, library_size, fitted.max_uses, plan.rows, plan.cols,
                           fitted.min_spacing, 0 if options.adaptive else fitted.min_uses)
        except OptionError as error:
            raise naming_identical(error, _identical_dropped(warm, options),
                                   limit=options.limit, tiles=library_size) from None
        return fitted

    def warm_up(self, tiles: str, options: MosaicOptions) -> None:
        """Make the library of ``tiles`` at ``options`` warm in every colour metric, now.

        A preview does this by itself (the metric it needs first, the others
        in the background); calling it after an index job ends makes the
        first preview quick too. Blocks until done (seconds for 50,000 tiles).

        Raises
        ------
        MosaicistError
            When the tiles are not indexed at these settings.
        """
        with self._lock:
            warm = self._library(str(tiles), options)
        blocks = (height_for(DESCRIPTOR_PX, options.aspect_ratio), DESCRIPTOR_PX)
        for metric in METRICS:
            warm.describe(metric, blocks)

    # -- the steps ------------------------------------------------------------------------

    def _preview(self, target_path: Path, tiles: str, options: MosaicOptions, cells: int
                 ) -> tuple[bytes, dict[str, Any]]:
        started = time.perf_counter()
        timings: dict[str, float] = {}
        notes: list[str] = []
        _, options, dropped = fitted_matcher(options)
        if dropped:
            notes.append(f"{options.search} search on {options.device} runs without the "
                         f"preset's {', '.join(dropped)}")
        target = self._target(target_path, options.max_target_pixels, options.colour_profiles)
        plan = options_plan(options, target.size, str(target_path))
        # Cells and tiles asked for as a count or a print size: the tile size make
        # compares at follows from them, and with it the index.
        options = fit_options(options, plan)
        if options.adaptive:
            check_adaptive(options)  # as make checks it: the preview would hide it
        warm = self._library(tiles, options)
        active = self._active_rows(warm, options)
        mark = time.perf_counter()
        timings["open"] = mark - started

        fitted = self._checked_limits(warm, active, options, plan)
        cols, rows = _preview_grid(plan.cols, plan.rows, cells)
        if options.adaptive:
            notes.append("adaptive cells are not shown in the preview")
        if options.min_uses:
            notes.append("the minimum of uses is not shown in the preview")
        if len(warm.positions) < len(warm.library):
            notes.append(f"previewed from {len(warm.positions):,} of the library's "
                         f"{len(warm.library):,} tiles")
        fitted = fit_limits(options, cols * rows, len(active), rows, cols)
        cap = tile_capacity(rows, cols, fitted.max_uses, fitted.min_spacing)

        # The cells, in the metric's space.
        aspect = options.aspect_ratio
        stats_size = (height_for(STATS_PX, aspect), STATS_PX)
        blocks = (height_for(DESCRIPTOR_PX, aspect), DESCRIPTOR_PX)
        left, top, width, height = _grid_box(plan)
        box = [round(value * target.scale) for value in (left, top, left + width, top + height)]
        crop = target.pixels[box[1]:max(box[3], box[1] + 1), box[0]:max(box[2], box[0] + 1)]
        # Box filtering is area averaging, at any ratio.
        cell_pixels = np.asarray(Image.fromarray(crop).resize(
            (cols * stats_size[1], rows * stats_size[0]), Image.Resampling.BOX), np.float32)
        cell_pixels = cell_pixels.reshape(rows, stats_size[0], cols, stats_size[1], 3) \
            .transpose(0, 2, 1, 3, 4).reshape(rows * cols, *stats_size, 3)
        cell_features = _features(cell_pixels, options.metric, blocks)
        tile_features = self._tile_features(warm, options.metric, blocks)
        mark2 = time.perf_counter()
        timings["describe"] = mark2 - mark

        # Search every transform of every tile.
        transforms = augment_transforms(options.augment, aspect)
        tint = round(options.tint * 100) / 100
        weight = (1 - tint) ** 2 * blocks[0] * blocks[1]
        key = (options.metric, tint, len(active), hash(active.tobytes()))
        matrix = warm.matrix[1] if warm.matrix is not None and warm.matrix[0] == key else None
        search = _Search(tile_features, active, weight, cell_features, transforms, matrix)
        warm.matrix = (key, search.matrix)
        candidate, variant, distance = search.nearest(np.arange(rows * cols), CANDIDATES)
        mark3 = time.perf_counter()
        timings["search"] = mark3 - mark2

        # Limits, then the colour corrections make applies.
        contrast = options.contrast
        if cap is None:
            if contrast:
                distance, _ = _transfer(search, candidate[:, :CONTRAST_CANDIDATES],
                                        variant[:, :CONTRAST_CANDIDATES], contrast, tint,
                                        options.metric)
            best = np.argmin(np.where(candidate[:, :distance.shape[1]] >= 0,
                                      distance, np.inf), axis=1)
            chosen = candidate[np.arange(len(best)), best]
            chosen_variant = variant[np.arange(len(best)), best]
            relaxed = 0
            method = "nearest candidate"
        else:
            chosen, chosen_variant, relaxed = _greedy(search, candidate, variant, distance,
                                                      rows, cols, cap, fitted.min_spacing)
            method = "greedy assignment under the limits"
        if relaxed:
            notes.append(f"{relaxed} cells break the repetition limits in the preview")
        mark4 = time.perf_counter()
        timings["assign"] = mark4 - mark3
        picture = self._draw(warm, search, chosen, chosen_variant, rows, cols, options,
                             tint, crop)
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, "JPEG", quality=JPEG_QUALITY)
        timings["render"] = time.perf_counter() - mark4
        self._describe_others(warm, blocks)
        repetition = repetition_metrics(chosen.reshape(rows, cols))
        seconds = time.perf_counter() - started
        info = {
            "cells": rows * cols, "cols": cols, "rows": rows,
            "seconds": round(seconds, 4), "approximate": True,
            "method": f"reduced-resolution search ({blocks[1]}x{blocks[0]} blocks), {method}",
            "grid": {"cols": plan.cols, "rows": plan.rows},
            "tiles": int(len(active)), "distinct_tiles": repetition["distinct_tiles"],
            "most_uses": repetition["max_uses"], "closest_repeat": repetition["closest_repeat"],
            "max_uses": fitted.max_uses, "min_spacing": fitted.min_spacing,
            "relaxed": int(relaxed), "width": int(picture.shape[1]),
            "height": int(picture.shape[0]), "tile_px": int(picture.shape[1] // cols),
            "notes": notes, "timings": {name: round(value, 4) for name, value in timings.items()},
        }
        return buffer.getvalue(), info

    def _target(self, path: Path, max_pixels: int, colour_profiles: str) -> _Target:
        """The target, decoded once and kept reduced (re-read when the file changes).

        Read as ``make`` reads it: ``colour_profiles`` says whether its
        embedded ICC profile is applied.
        """
        try:
            status = path.stat()
        except OSError:
            raise MosaicistError(f"{path}: target file not found") from None
        stamp = (change_stamp(status), status.st_size)
        key = (path, colour_profiles)
        cached = self._targets.get(key)
        if cached is not None and cached.stamp == stamp:
            self._targets.move_to_end(key)
            if cached.size[0] * cached.size[1] > max_pixels:
                read_target(path, max_pixels)  # raises as make would
            return cached
        pixels = read_target(path, max_pixels, colour_profiles=colour_profiles)
        height, width = pixels.shape[:2]
        scale = min(1.0, TARGET_SIDE / max(width, height))
        reduced = pixels
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            reduced = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BOX))
            scale = size[0] / width
        del pixels
        entry = _Target(path, stamp, (width, height), np.ascontiguousarray(reduced), scale)
        self._targets[key] = entry
        while len(self._targets) > MAX_TARGETS:
            self._targets.popitem(last=False)
        return entry

    def _library(self, tiles: str, options: MosaicOptions) -> _WarmLibrary:
        """The warm library of ``tiles`` at the settings' tile size, aspect, crop and
        ``colour_profiles`` (each its own index, as ``make`` opens it)."""
        key = _library_key(tiles, options)
        _, match_px, *_ = key
        warm = self._libraries.get(key)
        if warm is not None:
            # Indexed again since (photos added, edited, or removed from the end, which
            # keeps the generation), or deleted: read it again.
            if warm.library.is_current():
                self._libraries.move_to_end(key)
                return warm
            del self._libraries[key]  # indexed again (or deleted) since: read it again
        not_indexed = (f"{tiles}: the tiles are not indexed yet at these settings, or none "
                       "of them could be read; index them first (indexing names the files "
                       "it could not read)")
        try:
            # require_index: opening an index that is not there would make an empty one.
            library = TileLibrary.open(tiles, match_px, cache_dir=self.cache_dir,
                                       update=False, aspect=options.aspect_ratio,
                                       crop=options.crop, require_index=True,
                                       colour_profiles=options.colour_profiles)
        except MissingIndexError:
            raise MosaicistError(not_indexed) from None
        except MosaicistError as error:
            if "no usable tile" in str(error):
                # Indexed, but every file failed to decode: the same words as a missing
                # index, which the page has always shown for both.
                raise MosaicistError(not_indexed) from None
            raise
        warm = self._warm(library)
        self._libraries[key] = warm
        while len(self._libraries) > MAX_LIBRARIES:
            self._libraries.popitem(last=False)
        return warm

    def _warm(self, library: TileLibrary) -> _WarmLibrary:
        """Reduce a library's tiles for previews (read back from the disk cache when there)."""
        count = len(library)
        if count > MAX_TILES:
            positions = np.linspace(0, count - 1, MAX_TILES).round().astype(np.int64)
        else:
            positions = np.arange(count)
        stats_size = (height_for(STATS_PX, library.aspect), STATS_PX)
        shape = (len(positions), *stats_size, 3)
        name = (f"preview-{stats_size[1]}x{stats_size[0]}-g{library.generation}-n{count}-"
                f"s{len(positions)}.u8")
        try:
            cache: Path | None = library.features_dir / name
        except OSError:
            cache = None  # a read-only cache: the reduction is redone each time
        stats = None
        if cache is not None and cache.is_file() and cache.stat().st_size == int(np.prod(shape)):
            stats = np.fromfile(cache, np.uint8).reshape(shape)
        if stats is None:
            stats = np.empty(shape, np.uint8)
            for start in range(0, len(positions), 4096):
                part = np.asarray(library.tiles[positions[start:start + 4096]])
                stats[start:start + len(part)] = np.clip(
                    np.rint(resample(part, *stats_size)), 0, 255).astype(np.uint8)
            if cache is not None:
                with contextlib.suppress(OSError):  # a cache: failing costs time only
                    for old in cache.parent.glob("preview-*.u8"):
                        old.unlink()
                    with atomic_path(cache) as temporary:
                        stats.tofile(temporary)
        return _WarmLibrary(library, positions, stats)

    def _tile_features(self, warm: _WarmLibrary, metric: str, blocks: tuple[int, int]
                       ) -> _Features:
        """The library's features in ``metric`` (see :meth:`_describe_others`)."""
        if not warm.features and not warm.describing:
            warm.others_wanted = True
        return warm.describe(metric, blocks)

    def _describe_others(self, warm: _WarmLibrary, blocks: tuple[int, int]) -> None:
        """Describe a new library in the other metrics, in the background.

        Describing 50,000 tiles in Lab or Oklab takes a second or two: done
        after the first preview, while the person looks at it, a change of
        metric then finds them ready.
        """
        if warm.others_wanted:
            warm.others_wanted = False
            others = [name for name in METRICS if name not in warm.features]
            threading.Thread(target=_describe_all, args=(warm, others, blocks),
                             name="mosaicist-preview-warm", daemon=True).start()

    def _active_rows(self, warm: _WarmLibrary, options: MosaicOptions) -> np.ndarray:
        """Rows of the warm arrays in use: near-duplicates dropped, then the first ``limit``."""
        kept_positions = _kept_positions(warm, options.dedupe, options.identical_photos)
        rows = np.flatnonzero(kept_positions[warm.positions])
        if options.limit is not None:
            if len(warm.positions) == len(warm.library):
                rows = rows[:options.limit]
            else:
                # The sample's share of the first ``limit`` kept tiles of the library.
                kept = np.flatnonzero(kept_positions)
                if len(kept) > options.limit:
                    rows = rows[warm.positions[rows] < kept[options.limit - 1] + 1]
        if len(rows) == 0:
            raise MosaicistError("no tiles left to preview with")
        return rows

    def _draw(self, warm: _WarmLibrary, search: _Search, chosen: np.ndarray,
              chosen_variant: np.ndarray, rows: int, cols: int, options: MosaicOptions,
              tint: float, crop: np.ndarray) -> np.ndarray:
        """The preview picture: each chosen tile reduced, transformed, tinted and placed."""
        library = warm.library
        # The longer side about PREVIEW_SIDE, whichever it is: a tall strip of a target
        # drawn at the width of a wide one would be over JPEG's 65,500 rows.
        fitting = min(PREVIEW_SIDE // max(cols, 1),
                      PREVIEW_SIDE * library.match_px // max(1, rows * library.match_height))
        tile_px = min(library.match_px, max(2, fitting))
        tile_height = max(1, round(tile_px * library.match_height / library.match_px))
        if max(cols * tile_px, rows * tile_height) > JPEG_SIDE:
            tile_px = 1  # thousands of cells in a row: a pixel each is all that fits
            tile_height = max(1, round(library.match_height / library.match_px))
        used, inverse = np.unique(chosen, return_inverse=True)
        originals = np.asarray(library.tiles[warm.positions[search.rows[used]]])
        small = np.clip(np.rint(resample(originals, tile_height, tile_px)), 0, 255) \
            .astype(np.uint8)[inverse]
        cell_means = search.cells.means
        tile_means = search.tiles.means[search.rows[chosen]]
        asked: float | np.ndarray = tint
        if options.tint_max is not None:
            asked = _adaptive_tint(search.cells, tile_means, tint, options.tint_max)
        strength = asked
        gain = None
        if options.contrast:
            tile_spread = search.tiles.spread[search.rows[chosen]]
            gain = _gains(search.cells.spread, tile_spread, options.contrast)
            # Held back as the ranking held it (a pair's limit depends on the pair only),
            # after the adaptive tint, as make's finish holds it: in lightness only.
            strength = _held_back(cell_means, tile_means, tile_spread, asked, options.metric)
        shifts = None
        if np.any(strength) or np.any(asked):
            shifts = mean_shifts(cell_means, tile_means, strength, asked,
                                 options.metric) * encoded_unit(options.metric)
        codes = np.asarray(search.transforms, np.int8)[chosen_variant]
        under = None
        chroma = None
        if options.chroma or options.overlay:
            under = resample(crop, rows * tile_height, cols * tile_px)
        if options.chroma:
            assert under is not None
            cells = np.clip(np.rint(under), 0, 255).astype(np.uint8).reshape(
                rows, tile_height, cols, tile_px, 3).transpose(0, 2, 1, 3, 4).reshape(
                rows * cols, tile_height, tile_px, 3)
            # A flip or turn moves pixels, not their spread: the factor is the same.
            chroma = _chroma_factors(cells, small, gain, options.chroma, options.metric)
        dressed = dress_tiles(small, codes, shifts, options.metric, gain, chroma)
        picture = dressed.reshape(rows, cols, tile_height, tile_px, 3).transpose(0, 2, 1, 3, 4) \
            .reshape(rows * tile_height, cols * tile_px, 3)
        if options.overlay:
            assert under is not None
            picture = np.clip(np.rint((1 - options.overlay) * picture + options.overlay * under),
                              0, 255).astype(np.uint8)
        return np.ascontiguousarray(picture)


def _describe_all(warm: _WarmLibrary, metrics: list[str], blocks: tuple[int, int]) -> None:
    """Describe a library in each of ``metrics`` (a background thread's work).

    On one BLAS thread: OpenBLAS's threads, asked for by this thread and by a
    make's at once, deadlocked (the make waiting on a lock in ``dsyrk``, this
    thread spinning in the products for as long as it was left).
    """
    with one_blas_thread():
        for metric in metrics:
            with contextlib.suppress(Exception):  # the foreground will say what is wrong
                warm.describe(metric, blocks)


def _kept_positions(warm: _WarmLibrary, dedupe: int | None,
                    identical_photos: str = "keep") -> np.ndarray:
    """The library positions ``make`` keeps (see :meth:`TileLibrary.without_copies`)."""
    if dedupe is None and identical_photos != "drop":
        return np.ones(len(warm.library), bool)
    key = -1 if dedupe is None else dedupe  # -1: identical photos
    leaders = warm.leaders.get(key)
    if leaders is None:
        leaders = (warm.library.identical_leaders() if dedupe is None
                   else warm.library.duplicate_leaders(dedupe))
        warm.leaders = {key: leaders}  # one grouping kept
    return leaders == np.arange(len(leaders))


def _limited_size(warm: _WarmLibrary, options: MosaicOptions) -> int:
    """Tiles ``make`` would use (the whole library, not the preview's sample)."""
    kept = int(_kept_positions(warm, options.dedupe, options.identical_photos).sum())
    return kept if options.limit is None else min(kept, options.limit)


def _library_key(tiles: str, options: MosaicOptions) -> tuple[str, int, str, str, str]:
    """What a warm library is kept under: its tiles at the settings that make its index."""
    assert options.match_px is not None
    return (tiles, options.match_px, options.aspect, options.crop, options.colour_profiles)


def _identical_dropped(warm: _WarmLibrary, options: MosaicOptions) -> int:
    """Photos ``make`` leaves out as identical to another (none where ``dedupe`` is set:
    its near-duplicates are counted apart, as make counts them)."""
    if options.dedupe is not None or options.identical_photos != "drop":
        return 0
    return len(warm.library) - int(_kept_positions(warm, None, "drop").sum())


def _grid_box(plan: Any) -> tuple[int, int, int, int]:
    """The part of the target the mosaic's cells cover: ``(left, top, width, height)``."""
    left, top, width, height = plan.crop
    covered_width, covered_height = plan.cols * plan.cell_px, plan.rows * plan.cell_height
    return (left + (width - covered_width) // 2, top + (height - covered_height) // 2,
            covered_width, covered_height)


def _preview_grid(cols: int, rows: int, cells: int) -> tuple[int, int]:
    """The mosaic's grid, or one of the same shape with about ``cells`` cells."""
    if cols * rows <= cells:
        return cols, rows
    factor = math.sqrt(cells / (cols * rows))
    coarse_cols, coarse_rows = max(1, round(cols * factor)), max(1, round(rows * factor))
    # One cell across (a strip of a target), the shape is kept only up to there: the
    # other side would otherwise take far more than ``cells``.
    if coarse_cols == 1:
        coarse_rows = min(coarse_rows, cells)
    if coarse_rows == 1:
        coarse_cols = min(coarse_cols, cells)
    return coarse_cols, coarse_rows


class _TileMatrix:
    """The tiles in use as the search compares them, for one metric and tint (kept warm).

    Each tile is ``[axes, sqrt(w) mean, |.|^2]``, stored transposed in
    contiguous blocks of :data:`TILE_BLOCK` tiles: one GEMM per block gives
    ``-2 <c, t> + |t|^2`` on the axes for a block of cells.
    """

    def __init__(self, tiles: _Features, rows: np.ndarray, weight: float) -> None:
        assert tiles.projected is not None
        count = len(rows)
        projected = tiles.projected[rows]
        means = tiles.means[rows]
        axes = projected.shape[1]
        self.full = np.empty((axes + 4, count), np.float32)
        self.full[:axes] = projected.T
        self.full[axes:axes + 3] = math.sqrt(weight) * means.T
        self.full[-1] = np.einsum("ij,ij->i", projected, projected) + weight * np.einsum(
            "ij,ij->i", means, means)
        self.blocks = [np.ascontiguousarray(self.full[:, first:first + TILE_BLOCK])
                       for first in range(0, count, TILE_BLOCK)]
        self.sample = np.sort(np.random.default_rng(0).permutation(count)[:THRESHOLD_SAMPLE])
        self.sample_matrix = np.ascontiguousarray(self.full[:, self.sample])


class _Search:
    """Cells against the library's tiles (in use) under every transform, in one metric.

    Distances are the objective on the descriptors: ``|c~ - T t~|^2 + w |m_c -
    m_t|^2`` (detail, and mean colour weighted by the tint). A first pass
    compares on the detail's principal axes, which never overestimates a
    distance (a projection shortens vectors); the tiles it keeps are then
    measured on the whole detail.
    """

    def __init__(self, tiles: _Features, rows: np.ndarray, weight: float, cells: _Features,
                 transforms: tuple[int, ...], matrix: _TileMatrix | None = None) -> None:
        assert tiles.basis is not None and tiles.projected is not None
        self.tiles, self.rows, self.cells, self.transforms = tiles, rows, cells, transforms
        self.weight = weight
        root = math.sqrt(weight)
        self.matrix = _TileMatrix(tiles, rows, weight) if matrix is None else matrix
        self.blocks, self.sample = self.matrix.blocks, self.matrix.sample
        self.sample_matrix = self.matrix.sample_matrix
        # Each cell once per transform: d(c, T t) = d(T^-1 c, t).
        turned = [apply_transform(cells.detail, _INVERSE[code]).reshape(len(cells.detail), -1)
                  for code in transforms]
        self.turned = np.ascontiguousarray(np.concatenate(turned), np.float32)
        on_axes = self.turned @ tiles.basis
        cell_means = np.tile(cells.means, (len(transforms), 1))
        self.queries = np.ascontiguousarray(np.concatenate(
            [-2 * on_axes, -2 * root * cell_means, np.ones((len(on_axes), 1), np.float32)],
            axis=1), np.float32)
        self.query_norm = np.einsum("ij,ij->i", on_axes, on_axes) + weight * np.einsum(
            "ij,ij->i", cell_means, cell_means)

    @property
    def tile_count(self) -> int:
        """Tiles in use."""
        return len(self.rows)

    def distances(self, queries: np.ndarray, tiles: np.ndarray) -> np.ndarray:
        """The whole descriptor distance of pairs ``(queries[p], tiles[p])``."""
        rows = self.rows[tiles]
        detail = self.tiles.detail[rows].reshape(len(rows), -1)
        cross = np.einsum("ij,ij->i", self.turned[queries], detail)
        cell_count = len(self.cells.means)
        difference = self.cells.means[queries % cell_count] - self.tiles.means[rows]
        return (self.cells.detail_norm[queries % cell_count] + self.tiles.detail_norm[rows]
                - 2 * cross + self.weight * np.einsum("ij,ij->i", difference, difference))

    def nearest(self, cells: np.ndarray, k: int, excluded: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each cell's ``k`` nearest (tile, transform) pairs, best first.

        Returns ``(candidate, variant, distance)``, each ``(len(cells), k)``:
        candidate indices into the tiles in use (``-1`` where a cell has fewer),
        transform slots, and distances (``inf`` where missing). Tiles marked
        in ``excluded`` are left out.
        """
        count = self.tile_count
        cell_count = len(self.cells.means)
        variants = len(self.transforms)
        queries = (np.arange(variants)[:, None] * cell_count + cells[None, :]).ravel()
        blocks, sample = self.blocks, self.sample
        if excluded is not None and excluded.any():
            blocks = []
            for number, block in enumerate(self.blocks):
                block = block.copy()  # the warm matrix stays as it is
                block[-1, excluded[number * TILE_BLOCK:(number + 1) * TILE_BLOCK]] = np.inf
                blocks.append(block)
            sample = sample[~excluded[sample]]
            left = np.flatnonzero(~excluded)
            if len(sample) < min(THRESHOLD_SAMPLE // 4, len(left)):
                # Most of the sample is used up: sample the tiles left.
                sample = np.sort(np.random.default_rng(1).permutation(left)[:THRESHOLD_SAMPLE])
            count = len(left)
        k = min(k, count)
        if k < 1 or len(sample) == 0:
            empty = np.full((len(cells), max(k, 1)), -1, np.int64)
            return empty, np.zeros_like(empty), np.full(empty.shape, np.inf)
        sample_matrix = self.sample_matrix if sample is self.sample else \
            np.ascontiguousarray(self.matrix.full[:, sample])
        # Each query's threshold: the rank-th nearest of a sample (on the axes),
        # rank chosen so that about 2k tiles of the library fall below it for
        # each cell, over all its transforms.
        exact = len(sample) >= count
        rank = k - 1 if exact else max(2, math.ceil(2 * k * len(sample) / (count * variants)))
        rank = min(rank, len(sample) - 1)

        def scan(start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            block = self.queries[queries[start:start + SCAN_BLOCK]]
            limit = np.partition(block @ sample_matrix, rank, axis=1)[:, rank, None]
            rows, cols = [], []
            for number, tiles in enumerate(blocks):
                flat = np.flatnonzero(block @ tiles <= limit)
                if len(flat):
                    rows.append(flat // tiles.shape[1] + start)
                    cols.append(flat % tiles.shape[1] + number * TILE_BLOCK)
            found_rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
            found = np.concatenate(cols) if cols else np.zeros(0, np.int64)
            # The tiles kept, measured on the whole detail.
            return found_rows, found, self.distances(queries[found_rows], found)

        with threadpool_limits(1):  # one BLAS thread per scanning thread
            parts = list(_POOL.map(scan, range(0, len(queries), SCAN_BLOCK)))
        query_rows = np.concatenate([part[0] for part in parts])
        tiles = np.concatenate([part[1] for part in parts])
        distances = np.concatenate([part[2] for part in parts])
        cell_rows = query_rows % len(cells)
        slots = query_rows // len(cells)
        order = np.lexsort((distances, cell_rows))
        cell_rows, tiles, slots, distances = (cell_rows[order], tiles[order], slots[order],
                                              distances[order])
        counts = np.bincount(cell_rows, minlength=len(cells))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank_in_row = np.arange(len(cell_rows)) - starts[cell_rows]
        keep = rank_in_row < k
        candidate = np.full((len(cells), k), -1, np.int64)
        variant = np.zeros((len(cells), k), np.int64)
        distance = np.full((len(cells), k), np.inf)
        where = (cell_rows[keep], rank_in_row[keep])
        candidate[where] = tiles[keep]
        variant[where] = slots[keep]
        distance[where] = np.maximum(distances[keep], 0.0)
        return candidate, variant, distance


def _gains(cell_spread: np.ndarray, tile_spread: np.ndarray, strength: float) -> np.ndarray:
    """Contrast gains ``(sigma_c / sigma_t)^B`` per channel, kept in :data:`GAIN_LIMITS`."""
    ratio = np.sqrt(np.divide(cell_spread, tile_spread, out=np.ones_like(tile_spread),
                              where=tile_spread > 0))
    return np.clip(ratio.astype(np.float64) ** strength, *GAIN_LIMITS)


def _chroma_factors(cells: np.ndarray, tiles: np.ndarray, gain: np.ndarray | None,
                    strength: float, metric: str) -> np.ndarray:
    """Each drawn tile's chroma factor, as ``make``'s ``chroma_factors`` (:mod:`.match._contrast`).

    From the preview's own pixels: ``cells`` and ``tiles`` are ``(N, h, w, 3)``
    uint8 at the drawn size, ``gain`` the tiles' contrast gains (or None).
    """
    chroma = chroma_projection(metric)

    def chroma_energy(pictures: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
        values = to_space(pictures, metric).reshape(len(pictures), -1, 3)
        values -= values.mean(axis=1, keepdims=True)
        if scale is not None:
            values *= scale[:, None, :]
        across = values @ chroma.T
        return (across * across).sum(axis=(1, 2))

    # The cells' from whole numbers, as make sums them: exactly 0 on grey or flat cells
    # (floats left enough there for a small strength to lift a tile's colours).
    wanted = cell_chroma(encode(cells, metric).reshape(len(cells), -1, 3), metric) \
        * encoded_unit(metric) ** 2
    drawn = chroma_energy(tiles, gain)
    ratio = np.ones(len(tiles))
    np.divide(wanted, drawn, out=ratio, where=drawn > 0)
    return np.minimum(np.sqrt(ratio), 1.0) ** strength


def _held_back(cell_means: np.ndarray, tile_means: np.ndarray, tile_spread: np.ndarray,
               tint: float | np.ndarray, metric: str) -> np.ndarray:
    """Each pair's tint stopped short of black and white, as ``make``'s contrast transfer.

    ``(P, 3)`` cell and tile means and tile spreads of the pairs, and the tint
    asked for (hundredths); see :mod:`mosaicist.match._contrast`. Returns
    ``(P,)`` float64 tints.
    """
    # The descriptors are in encoded levels (Oklab scaled by 250) less the chroma
    # offsets, which the lightness weighs 0: its ends are where make has them. The
    # spread is measured at STATS_PX, a little under make's at match_px (an approximation).
    axis, low, high = lightness_axis(metric)
    tile_means = tile_means.astype(np.float64)
    sigma = np.sqrt(tile_spread.astype(np.float64))
    limit = _room_limit(tile_means @ axis, (cell_means.astype(np.float64) - tile_means) @ axis,
                        sigma @ axis, low, high)
    return np.minimum(np.asarray(tint, np.float64), limit)


def _transfer(search: _Search, candidate: np.ndarray, variant: np.ndarray, strength: float,
              tint: float, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Distances and gains of cell-candidate pairs after the contrast transfer and tint.

    With a transfer (``strength``), each pair's tint is held back as ``make``
    holds it (:func:`_held_back`).
    """
    count, width = candidate.shape
    cells = np.repeat(np.arange(count), width)
    assert count == len(search.cells.means)  # every cell, in order
    present = candidate.ravel() >= 0
    tile_rows = search.rows[np.maximum(candidate.ravel(), 0)]
    turned = search.turned[variant.ravel() * count + cells]  # T^-1 c~
    cross = np.einsum("ijc,ijc->ic", turned.reshape(len(cells), -1, 3),
                      search.tiles.detail[tile_rows].reshape(len(cells), -1, 3))
    tile_energy = (search.tiles.detail[tile_rows] ** 2).reshape(len(cells), -1, 3).sum(axis=1)
    cell_energy = (search.cells.detail[cells] ** 2).reshape(len(cells), -1, 3).sum(axis=1)
    gain = _gains(search.cells.spread[cells], search.tiles.spread[tile_rows], strength)
    positions = search.tiles.detail[0].size // 3
    applied: float | np.ndarray = tint
    if strength:
        applied = _held_back(search.cells.means[cells], search.tiles.means[tile_rows],
                             search.tiles.spread[tile_rows], tint, metric)
    shift = (search.cells.means[cells].astype(np.float64)
             - search.tiles.means[tile_rows].astype(np.float64))
    error = mean_errors(shift, np.broadcast_to(np.asarray(applied, np.float64), (len(cells),)),
                        np.full(len(cells), float(tint)), chroma_projection(metric))
    per_channel = (gain * gain * tile_energy - 2 * gain * cross + cell_energy
                   + positions * error ** 2)
    distance = np.where(present, np.maximum(per_channel.sum(axis=1), 0.0), np.inf)
    return distance.reshape(count, width), gain.reshape(count, width, 3)


def _adaptive_tint(cells: _Features, tile_means: np.ndarray, tint: float, tint_max: float
                   ) -> np.ndarray:
    """Each cell's tint under ``tint_max``, as :func:`mosaicist.match._contrast.adaptive_tint`."""
    tolerance = np.maximum(np.sqrt(cells.spread.sum(axis=1)), TOLERANCE_FLOOR)
    error = np.linalg.norm(cells.means - tile_means, axis=1)
    wanted = 1.0 - np.divide(tolerance, error, out=np.ones(len(error)), where=error > 0)
    low = round(tint * 100) / 100
    high = max(low, math.floor(tint_max * 100 + 1e-9) / 100)
    return np.clip(np.ceil(wanted * 100 - 1e-9) / 100, low, high)


def _greedy(search: _Search, candidate: np.ndarray, variant: np.ndarray, distance: np.ndarray,
            rows: int, cols: int, cap: int, spacing: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Give every cell a candidate under the use cap and spacing, greedily.

    Cells choose by decreasing regret (second-best minus best distance), each
    its best candidate with uses left and no equal tile closer than
    ``spacing``. Cells left without one search the library again, among the
    tiles with uses left, for more candidates; after :data:`REFILL_ROUNDS`
    the last ones take their nearest tile regardless (counted as relaxed).
    """
    count = len(candidate)
    tile_count = search.tile_count
    uses = np.zeros(tile_count, np.int64)
    placed: dict[int, list[int]] = {}
    chosen = np.full(count, -1, np.int64)
    chosen_variant = np.zeros(count, np.int64)
    cell_row, cell_col = np.divmod(np.arange(count), cols)
    relaxed = 0

    def free_of_spacing(cell: int, tile: int) -> bool:
        others = placed.get(tile)
        if not others or spacing <= 1:
            return True
        for other in others:
            if max(abs(cell_row[other] - cell_row[cell]),
                   abs(cell_col[other] - cell_col[cell])) < spacing:
                return False
        return True

    def place(cell: int, tile: int, slot: int) -> None:
        chosen[cell] = tile
        chosen_variant[cell] = slot
        uses[tile] += 1
        placed.setdefault(tile, []).append(cell)

    def assign(cells: np.ndarray, lists: np.ndarray, slots: np.ndarray, costs: np.ndarray
               ) -> list[int]:
        best = costs[:, 0]
        second = costs[:, 1] if costs.shape[1] > 1 else np.full(len(costs), np.inf)
        # Cells with one candidate choose first; cells with none, last.
        with np.errstate(invalid="ignore"):  # no candidate at all: inf - inf, set below
            regret = np.where(np.isfinite(second), second - best, np.inf)
        regret[~np.isfinite(best)] = -np.inf
        left = []
        for index in np.argsort(-regret, kind="stable").tolist():
            cell = int(cells[index])
            row = lists[index]
            open_ = np.flatnonzero((row >= 0) & (uses[np.maximum(row, 0)] < cap))
            for position in open_.tolist():
                tile = int(row[position])
                if free_of_spacing(cell, tile):
                    place(cell, tile, int(slots[index, position]))
                    break
            else:
                left.append(cell)
        return left

    waiting = assign(np.arange(count), candidate, variant, distance)
    # Cells left without a free candidate search the tiles with uses left, a batch
    # at a time: each batch's lists are long enough for all of it even when its
    # cells want the same tiles, and the next batch sees what this one took.
    attempts = dict.fromkeys(waiting, 0)
    while waiting:
        full = uses >= cap
        if full.all():
            break
        batch = np.asarray(waiting[:REFILL_BATCH])
        want = min(tile_count, CANDIDATES + 2 * len(batch) // max(cap, 1))
        lists, slots, costs = search.nearest(batch, want, excluded=full)
        left = assign(batch, lists, slots, costs)
        for cell in left:
            attempts[cell] += 1
        waiting = [cell for cell in waiting[REFILL_BATCH:] + left
                   if attempts[cell] < REFILL_ROUNDS]
        stuck = [cell for cell in left if attempts[cell] >= REFILL_ROUNDS]
        if stuck:
            break
    waiting = [cell for cell in attempts if chosen[cell] < 0]
    for cell in waiting:
        # The limits cannot be met from here: the cell's nearest tile, counted.
        row = candidate[cell]
        position = int(np.argmax(row >= 0))
        place(int(cell), int(row[position]), int(variant[cell, position]))
        relaxed += 1
    return chosen, chosen_variant, relaxed
