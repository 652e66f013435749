"""The whole pipeline: target + library -> placements -> picture and report.

::

    target --> grid (cells) -----------+
                                       +--> matcher --> placements --> renderer --> file
    source --> library (index) --------+                          \\--> metrics --> report

:func:`make_mosaic` runs it with one :class:`~mosaicist.options.MosaicOptions`:
the grid is cut (:mod:`mosaicist.grid`), the library indexed or updated
(:mod:`mosaicist.library`), a matcher chosen from the settings and run
(:mod:`mosaicist.match`), its picks recorded as
:class:`~mosaicist.placements.Placements`, and a renderer prepared
(:mod:`mosaicist.render`); the picture is drawn when asked for.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ._runtime import check_memory, one_blas_thread
from .colour import _OFFSET, encoded_unit
from .errors import (
    MosaicistError,
    OptionError,
    as_flag,
    naming_identical,
    printable,
    shown_type,
)
from .grid import Geometry, Grid, make_grid
from .imaging import over_target_limit, picture_array, read_target, target_path, target_size
from .library import TileLibrary
from .match import Assignment, Matcher, MatchRequest, MatchResult, fitted_matcher
from .match._capped import fit_limits, with_spacing_giving_way
from .match._contrast import finish, mean_shifts
from .match._registry import check_device_runs, matcher_for_limits
from .options import MosaicOptions, setting_names, suggested
from .paths import atomic_path, output_path, refuse_nul
from .paths import cache_dir as default_cache_dir
from .placements import Placements, TargetPixels
from .render import IndexPictures, MosaicRenderer, OriginalPictures, TargetOverlay
from .sizing import SizePlan, fit_options, options_plan, small_originals_warning
from .sources import TileSource, open_source, source_spec

if TYPE_CHECKING:
    from .metrics import FidelityMeter

Target = str | os.PathLike[str] | np.ndarray | Image.Image
Tiles = str | os.PathLike[str] | TileSource | TileLibrary

# What a make holds for each cell, measured (peak resident memory, /usr/bin/time -v, over
# grids of 1,850 to 480,000 cells, less that of a smaller grid) and rounded down: the
# estimate errs low, so that only a plan that clearly cannot fit is refused.
#: Bytes per cell of the exact search, past the cell's own pixels (155 measured: 1 px
#: cells against 32 px tiles, compared at the cells' size).
SEARCH_BYTES_PER_CELL = 128
#: Copies of each cell resampled to the compared size (``match_px``) held at once: the
#: vectors, their colour encoding, their features (1.43 measured: 3 px cells, 32 px tiles).
COMPARED_COPIES = 1.25
#: Bytes per cell of the optimal assignment that a use limit or a spacing needs: its
#: candidate lists, warm prices and flow graph. Measured with the default preset from
#: CIFAR-10 (peak less a 1,849-cell make's 0.36 GB), on grids of 20,000 cells and more:
#: 29 KB (30,000 cells of 2 px, 50,000 photos), 30 KB (51,712 cells, 2,000 photos), 33 KB
#: (26,208 cells, 50,000 photos), 45 KB (20,160 and 144,000 cells, 2,000 photos) and 84 KB
#: (51,712 cells, 50,000 photos: each photo used once at least); 17 KB on 5,040 cells.
#: It grows with the grid faster than the grid (longer lists, more rounds) and with how
#: many uses each photo takes, which the plan does not know yet: this errs low (8,000
#: before session 52, measured on an older assignment, let through plans that used 4-8x
#: their estimate and were killed for memory).
ASSIGNMENT_BYTES_PER_CELL = 24_000
#: Bytes per cell of the fidelity metrics at viewing scale (3,700 measured, 4 px views).
METRICS_BYTES_PER_CELL = 3_000


@dataclass
class Mosaic:
    """A finished mosaic.

    Unpacks as ``image, placements = make_mosaic(...)``.

    Attributes
    ----------
    placements : Placements
        The tile of every cell (with the settings, source and target).
    grid : Grid
        The target's cells.
    library : TileLibrary
        The tiles used (after ``limit``), at the size they were compared.
    renderer : MosaicRenderer
        Draws the picture at the output size, band by band: :meth:`write`
        streams it to a file of any size; :attr:`image` holds it whole in
        memory.
    options : MosaicOptions
        The settings it was made with.
    matcher : str
        Name of the matcher that placed the tiles (see :data:`mosaicist.match.MATCHERS`).
    timings : dict
        Seconds per phase: ``index``, ``match``, ``render`` (drawing, in
        :attr:`image` or :meth:`write`), ``metrics`` once they are measured;
        ``total`` where the caller timed the whole run (:meth:`report` gives
        the phases' sum otherwise).
    metrics : dict or None
        Fidelity and repetition measures (see :mod:`mosaicist.metrics`), when
        ``options.compute_metrics``. They are measured when first asked for,
        or while :meth:`write` draws the picture at the size tiles were
        compared, from the very bands it writes (the picture is then drawn
        once, not twice).
    assignment : Assignment or None
        The repetition-limited assignment's certificate, when limits were set.
    sizes : SizePlan or None
        How the sizes were chosen (``cells``, ``print_size``, ``dpi``; see
        :mod:`mosaicist.sizing`): the crop, grid, tile and output sizes.
    """

    placements: Placements
    grid: Grid
    library: TileLibrary
    renderer: MosaicRenderer
    options: MosaicOptions
    matcher: str
    timings: dict[str, float] = field(default_factory=dict)
    assignment: Assignment | None = None
    sizes: SizePlan | None = None
    _image: np.ndarray | None = field(default=None, repr=False)
    _metrics: dict[str, Any] | None = field(default=None, repr=False)
    _measurement: _Measurement | None = field(default=None, repr=False)
    # Held while the metrics are measured: a mosaic written to two files, or
    # written and asked for its metrics, from threads at once, measures once.
    _measuring: threading.Lock = field(default_factory=threading.Lock, init=False,
                                       repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        # A lock does not pickle (nor copy): a copy gets a lock of its own.
        return {name: value for name, value in self.__dict__.items() if name != "_measuring"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._measuring = threading.Lock()

    @property
    def metrics(self) -> dict[str, Any] | None:
        """The fidelity and repetition measures, measured at the first request."""
        if self._measurement is not None:
            # Waits for a thread measuring them meanwhile (while writing, say),
            # and measures only what that thread left unmeasured.
            with self._measuring:
                measurement = self._measurement
                if measurement is not None:
                    started = time.perf_counter()
                    meter = measurement.meter()
                    with one_blas_thread():  # see write
                        for band in measurement.renderer.bands():
                            meter.add(band)
                        self._finish_metrics(meter, time.perf_counter() - started)
        return self._metrics

    @metrics.setter
    def metrics(self, value: dict[str, Any] | None) -> None:
        with self._measuring:
            self._metrics, self._measurement = value, None

    def _finish_metrics(self, meter: FidelityMeter, seconds: float) -> None:
        assert self._measurement is not None  # called while the metrics are due
        started = time.perf_counter()
        self._metrics = self._measurement.finish(meter)
        self._measurement = None
        self.timings["metrics"] = seconds + time.perf_counter() - started

    @property
    def image(self) -> np.ndarray:
        """The whole picture, ``(rows * tile_height, cols * tile_px, 3)`` uint8, drawn once.

        For outputs too large for memory use :meth:`write`.

        Raises
        ------
        MosaicistError
            Before drawing, when the picture is larger than the memory available.
        """
        if self._image is None:
            width, height = self.renderer.width, self.renderer.height
            # The picture whole, plus the band being drawn into it.
            needed = (height + self.renderer.tile_height) * width * 3

            def refusal(needed: str, free: str) -> MosaicistError:
                return MosaicistError(
                    f"the whole {width:,}x{height:,} px picture needs about {needed} of "
                    f"memory; this machine has {free} available: write it to a file with "
                    "Mosaic.write, which streams it")

            check_memory(needed, refusal)
            started = time.perf_counter()
            self._image = self.renderer.image()
            self.timings["render"] = (self.timings.get("render", 0.0)
                                      + time.perf_counter() - started)
        return self._image

    def __iter__(self) -> Iterator:
        yield self.image
        yield self.placements

    def write(self, path: str | os.PathLike[str], *, show_progress: bool = False) -> None:
        """Stream the picture to ``path`` in the format its suffix names.

        See :meth:`MosaicRenderer.write <mosaicist.render.MosaicRenderer.write>`;
        the output settings are those of :attr:`options`, and the time taken
        is added to ``timings["render"]``.

        Parameters
        ----------
        path : str or path-like
            The output file (``~`` expanded); its suffix names the format.
        show_progress : bool
            Draw a progress bar.

        Raises
        ------
        OptionError
            For a ``path`` that is no path, or an empty one.
        MosaicistError
            For a suffix that names no output format, or a file that cannot
            be written (nothing is left under its name).
        """
        path = output_path(path)
        # The writer and the metrics split their work over threads of their own;
        # BLAS's threads, started by their small products, would spin beside them.
        with one_blas_thread():
            self._write(path, show_progress)

    def _write(self, path: Path, show_progress: bool) -> None:
        # One thread measures; another writing meanwhile (a second file) just writes,
        # rather than wait for the first or measure the same picture again.
        measuring = self._measuring.acquire(blocking=False)
        try:
            self._write_measuring(path, show_progress, measuring)
        finally:
            if measuring:
                self._measuring.release()

    def _write_measuring(self, path: Path, show_progress: bool, measuring: bool) -> None:
        started = time.perf_counter()
        measurement = self._measurement if measuring else None
        if measurement is None or measurement.renderer is not self.renderer:
            self.renderer.write(path, self.options, show_progress=show_progress)
            self.timings["render"] = (self.timings.get("render", 0.0)
                                      + time.perf_counter() - started)
            return
        # The picture written is the one measured: the metrics read each band
        # as the writer draws it (the writer's threads compress meanwhile).
        meter = measurement.meter()
        spent = 0.0

        def measure(band: np.ndarray) -> None:
            nonlocal spent
            started = time.perf_counter()
            meter.add(band)
            spent += time.perf_counter() - started

        self.renderer.write(path, self.options, show_progress=show_progress, observe=measure)
        # The metrics read the bands as they were written: their time is their own phase's.
        self.timings["render"] = (self.timings.get("render", 0.0)
                                  + time.perf_counter() - started - spent)
        if meter.rows == self.placements.rows:  # a writer that drew every band once
            self._finish_metrics(meter, spent)

    def report(self) -> dict[str, Any]:
        """Return the run report as a JSON-ready dictionary."""
        metrics = self.metrics  # measured first: their time belongs in the timings
        # The phases follow one another: without a caller's wall-clock total, their sum.
        timings = {"total": sum(self.timings.values())} | self.timings
        stats = self.library.stats
        return {
            "grid": {"rows": self.grid.rows, "cols": self.grid.cols, "cell_px": self.grid.cell_px,
                     "cell_height": self.grid.cell_height},
            "tile_px": self.options.tile_px,
            "match_px": self.options.match_px,
            "tiles": len(self.library),
            "skipped": len(stats.failed) if stats else 0,
            "duplicates_dropped": self.library.duplicates_dropped,
            "identical_dropped": self.library.identical_dropped,
            "source": self.library.source.name,
            "objective": self.placements.objective,
            "search": self.options.search,
            "device": self.options.device,
            "matcher": self.matcher,
            "distinct_tiles": int(len(np.unique(self.placements.tile))),
            "output_size": {"width": self.renderer.width, "height": self.renderer.height},
            "settings": self.options.to_json(),
            "metrics": metrics,
            "assignment": _assignment_report(self.assignment),
            "sizes": None if self.sizes is None else self.sizes.report(),
            "timings": {name: round(value, 4) for name, value in timings.items()},
        }

    def write_report(self, path: str | os.PathLike[str], **extra: object) -> None:
        """Write :meth:`report` (plus ``extra`` keys) as JSON, atomically.

        Parameters
        ----------
        path : str or path-like
            The JSON file to write (``~`` expanded).
        **extra : object
            Top-level keys added to the report (a caller's wall-clock time,
            say); one named like a key of the report replaces it. NumPy
            scalars and arrays are written as numbers and lists; NaN and
            infinities, which JSON has no numbers for, are refused.

        Raises
        ------
        OptionError
            For a ``path`` that is no path (or an empty one), or an ``extra``
            value that is not JSON data (before anything is written).
        MosaicistError
            When the file cannot be written.
        """
        path = output_path(path)
        for key, value in extra.items():
            try:
                # NaN and infinities too: Python writes them as NaN and Infinity, which
                # strict parsers (a browser's JSON.parse) refuse, as the report never holds.
                json.dumps(value, default=_json_value, allow_nan=False)
            except (TypeError, ValueError):
                raise OptionError("write_report's {key} is not JSON data: {value}",
                                  key=key, value=shown_type(value)) from None
        text = json.dumps(self.report() | extra, indent=2, default=_json_value) + "\n"
        try:
            with atomic_path(path) as temporary:
                Path(temporary).write_text(text)
        except IsADirectoryError:
            raise MosaicistError(f"{path}: cannot write the report: a folder, not a file") \
                from None
        except OSError as error:
            raise MosaicistError(f"{path}: cannot write the report: "
                                 f"{error.strerror or error}") from None


def _json_value(value: object) -> object:
    """A NumPy scalar or array as JSON holds it (a caller's extra report keys)."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON data")


def _assignment_report(assignment: Assignment | None) -> dict[str, Any] | None:
    if assignment is None:
        return None
    shown = ("method", "objective", "lower_bound", "gap", "certified", "candidates_used",
             "iterations", "pricing_rounds", "seconds")
    report = {}
    for item in fields(assignment):
        if item.name in shown:
            value = getattr(assignment, item.name)
            value = value.item() if isinstance(value, np.generic) else value
            # A gap over a lower bound of 0 is infinite: JSON has no such number
            # ("Infinity" is refused by strict parsers), so it is null, "none to give".
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            report[item.name] = value
    return {name: report[name] for name in shown}


def make_mosaic(
    target: Target,
    tiles: Tiles = "cifar10",
    options: MosaicOptions | Mapping[str, Any] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    show_progress: bool = False,
    quiet: bool = True,
    **settings: Any,
) -> Mosaic:
    """Make a photomosaic of ``target`` from a tile library.

    Settings not given come from the ``preset``, by default ``balanced``
    (:data:`~mosaicist.options.DEFAULT_PRESET`): every tile at most once where
    the library has enough, never two alike within 5 cells, each tile's mean
    colour moved to its cell's, its contrast halfway and its colour variation
    down to the cell's, photos cut around their subject (see
    :data:`~mosaicist.options.PRESETS`).

    ``preset="seed"`` is the seed's method, exactly: each cell of ``cell_px``
    target pixels gets the tile of minimum squared difference to the cell
    scaled up to ``match_px`` (see :class:`mosaicist.grid.Geometry`); ties go
    to the lowest library position.

    Parameters
    ----------
    target : path-like, numpy.ndarray or PIL.Image.Image
        The picture to reproduce: a file (``~`` is expanded; a URL is
        refused), an ``(H, W, 3)`` uint8 RGB array, or a picture (of any
        mode; converted to RGB as a file's pixels are: 16- and 32-bit
        integer greyscale, ``I;16`` and ``I``, from 0..65535, see
        :mod:`mosaicist.imaging`). An array or picture is held to
        ``max_target_pixels`` as a file is, and the part of it used is
        copied: changing it afterwards changes nothing in the mosaic.
    tiles : str, path-like, TileSource or TileLibrary
        A source spec (``"cifar10"``, a folder, ``"file.h5:images"``...) or an
        opened library, whose tiles are cut and decoded as it was opened: the
        ``crop`` and ``colour_profiles`` not given follow it (and are recorded
        so); given ones that would cut or decode its tiles otherwise are refused.
    options : MosaicOptions or mapping, optional
        The settings (default: ``MosaicOptions()``, the default preset). A
        mapping of setting names to values, such as ``{"cell_px": 8}``, is
        taken as ``MosaicOptions(**mapping)``: those settings count as given.
    cache_dir : path-like, optional
        Where indexes and downloads live.
    show_progress : bool
        Draw progress bars on stderr.
    quiet : bool
        Print no notes or warnings on stderr (tile files skipped, preset
        settings a matcher runs without, print sizes rounded); the default.
    **settings
        Settings that replace those of ``options``: any field of
        :class:`~mosaicist.options.MosaicOptions` (``cell_px``, ``tile_px``,
        ``metric``, ``tint``, ``max_uses``...).

    Returns
    -------
    Mosaic
        ``image`` and ``placements`` (and the grid, library, timings, metrics).

    Raises
    ------
    OptionError
        For settings that cannot be used or combined, and for a ``target``,
        ``tiles`` or ``options`` of a type not listed above, an empty
        ``tiles`` text, or a target array that is not ``(H, W, 3)`` uint8
        (before any work).
    MosaicistError
        For a target or tile source that cannot be read.

    Examples
    --------
    >>> from mosaicist import make_mosaic
    >>> image, placements = make_mosaic("bear.jpg", "photos/")  # doctest: +SKIP
    >>> image, placements = make_mosaic(
    ...     "bear.jpg", "galaxy10", augment="all", tint=0.5, max_uses=2, min_spacing=5
    ... )  # doctest: +SKIP
    """
    options = _as_options(options)
    if settings:
        options = options.replace(**settings)
    return _make_mosaic(target, tiles, options, cache_dir=cache_dir,
                        show_progress=as_flag("show_progress", show_progress),
                        quiet=as_flag("quiet", quiet))


#: How the notes :func:`make_mosaic` prints name a setting: by its Python name
#: (``max_uses``), as the API's errors do, unless the caller says otherwise for a while
#: (:func:`settings_named_by`; the command line names the flag that sets it, ``--max-uses``).
_setting_name: ContextVar[Callable[[str], str]] = ContextVar("mosaicist_setting_name",
                                                             default=str)


@contextlib.contextmanager
def settings_named_by(name_of: Callable[[str], str]) -> Iterator[None]:
    """Show each setting as ``name_of(name)`` in the notes printed within the block.

    The notes are printed as the mosaic is made, not raised as an
    :class:`~mosaicist.errors.OptionError` that the caller can word itself:
    the command line names its flags through this (``--max-uses``, where the
    Python API's notes say ``max_uses``).

    Parameters
    ----------
    name_of : callable
        Turns a setting's Python name into the name to show.

    Examples
    --------
    >>> with settings_named_by(lambda name: "--" + name.replace("_", "-")):
    ...     _note("{detail} applies only with adaptive cells")  # doctest: +SKIP
    """
    token = _setting_name.set(name_of)
    try:
        yield
    finally:
        _setting_name.reset(token)


def _note(template: str, **values: object) -> None:
    """Print a note on stderr; each ``{name}`` of ``template`` not in ``values`` is a setting.

    Settings are named as :func:`settings_named_by` says (by default their
    Python names); values are inserted as they are, as in an
    :class:`~mosaicist.errors.OptionError`'s message.
    """
    text = OptionError(template, **values).message(_setting_name.get())
    print(printable(f"mosaicist: note: {text}"), file=sys.stderr)


def note_settings(options: MosaicOptions, dropped: tuple[str, ...] | None = None) -> None:
    """Note on stderr the settings that change nothing, or less than asked, for any target.

    What ``options`` alone tell (``make`` says it before any work, ``batch``
    once for all its targets): a matcher asked for that runs without the
    preset's settings it cannot honour (``dropped``, from
    :func:`~mosaicist.match.fitted_matcher`; looked up when None), a detail
    threshold without adaptive cells, the greedy assignment with a minimum
    of uses, an assignment method where no repetition limit applies.

    Raises
    ------
    MosaicistError
        Where ``dropped`` is None and no matcher honours ``options``, or the
        one that would cannot run here (nothing is noted then).
    """
    if dropped is None:
        matcher, options, dropped = fitted_matcher(options)
        matcher.check_runs(options)  # a missing package or device is said alone
    if dropped:
        _note("{search} {search_value} on {device} {device_value} runs without the preset's "
              + ", ".join("{" + name + "}" for name in dropped),
              search_value=options.search, device_value=options.device)
    if options.given("detail") and not options.adaptive:
        # A detail threshold splits only adaptive cells: without them it changes nothing.
        _note("{detail} applies only with adaptive cells ({adaptive} 0 here); it is ignored")
    if options.min_uses and options.assign == "greedy":
        _note_greedy_minimum(options.min_uses)
    if options.given("assign") and not options.repetition_limited:
        # Only a repetition limit is assigned: each cell otherwise takes its nearest tile.
        _note("{assign} {value} applies only with a repetition limit ({max_uses}, {min_uses} "
              "or {min_spacing}); each cell takes its nearest tile", value=options.assign)


def _note_greedy_minimum(low: int) -> None:
    # The greedy pass cannot promise a minimum: the optimal assignment keeps it (the
    # report's method said so, and nothing else did).
    _note("{assign} greedy does not keep {min_uses} {low}: the tiles are placed by the "
          "optimal assignment", low=low)


def _make_mosaic(
    target: Target,
    tiles: Tiles,
    options: MosaicOptions,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    show_progress: bool = False,
    quiet: bool = True,
    label: str | None = None,
    wrap: Callable[[Matcher, MatchRequest], Matcher] | None = None,
) -> Mosaic:
    """:func:`make_mosaic`'s steps; ``wrap`` replaces each request's matcher (video frames).

    ``label`` names the target in messages when it is no path.
    """
    # Inputs of the wrong type fail here by name, not as a TypeError deep inside.
    _check_inputs(target, tiles, cache_dir)
    if isinstance(tiles, TileLibrary):
        options = _fitted_to_library(options, tiles)
    # Settings no matcher can honour fail here, before any reading or indexing;
    # the default preset's wishes give way to a matcher that was asked for.
    try:
        matcher, options, dropped = fitted_matcher(options)
    except OptionError:
        # A device this machine cannot use is said first: else --device cuda with --tint
        # asked for the tint to go, and only then said that there is no GPU.
        check_device_runs(options)
        raise
    matcher.check_runs(options)  # a missing package or device is said alone, before the note
    if not quiet:
        note_settings(options, dropped)
    if wrap is not None and options.adaptive:
        raise OptionError("{stable} does not combine with {adaptive}")
    started = time.perf_counter()
    name = str(target) if isinstance(target, (str, os.PathLike)) else None
    label = name or label or "target"
    given = options
    reading = _TargetReading(target, options.max_target_pixels, label, options.colour_profiles)
    # Cells and tiles asked for as a count or a print size become pixels here,
    # from the target's size; a print crops the target to its shape first.
    sizes, options = _plan(given, reading.size, label, quiet)
    # The library opens while the target decodes (on two cores, the smaller
    # of the two comes free); the header was read and the plan checked first,
    # so that a refused plan leaves no decoding behind (a caller that goes on,
    # a studio or a batch, would hold the picture's memory until it finished).
    reading.start()
    library = _open_library(tiles, options, cache_dir, show_progress, quiet)
    matcher.prepare(options)
    pixels = reading.pixels()
    if (pixels.shape[1], pixels.shape[0]) != reading.size:
        # An orientation the header did not show (a PNG's EXIF after its pixels).
        sizes, options = _plan(given, (pixels.shape[1], pixels.shape[0]), label, quiet)
        library = _open_library(tiles, options, cache_dir, show_progress, quiet)
    left, top, width, height = sizes.crop
    region = pixels[top:top + height, left:left + width]
    if isinstance(target, np.ndarray):
        # The overlay and the metrics read the target when drawn: the caller's
        # buffer (a video's next frame, say) must not change a finished mosaic.
        region = np.array(region)
    grid = make_grid(region, options.cell_px, name=label, cell_height=options.cell_height)
    # Offsets in the whole target, as placements and crops of it expect.
    grid = replace(grid, left=grid.left + left, top=grid.top + top)
    index_done = time.perf_counter()

    try:
        if options.adaptive:
            from .adaptive import match_adaptive

            # Cells split where the target has detail, matched at their own sizes.
            found = match_adaptive(grid, library, options, matcher, name, show_progress)
            options, request, placements = found.options, found.request, found.placements
            matcher = matcher_for_limits(matcher, options)  # the one that matched the leaves
            result = MatchResult(placements.tile, placements.distance,
                                 assignment=found.assignment)
            match_done = time.perf_counter()
        else:
            # A preset's repetition limits bend to a small library; given ones do not.
            options = fit_limits(options, len(grid), len(library.limit(options.limit)),
                                 grid.rows, grid.cols)
            if (options.min_uses and not given.min_uses and options.assign == "greedy"
                    and not quiet):  # a minimum the fit set (note_settings said the others)
                _note_greedy_minimum(options.min_uses)
            def attempt(options: MosaicOptions) -> tuple[MatchRequest, MatchResult]:
                nonlocal matcher
                request = MatchRequest(grid, library, options, show_progress, notes=not quiet)
                # Limits fitted away: the matcher that the recorded settings would choose.
                matcher = matcher_for_limits(matcher, options)
                chosen = matcher if wrap is None else wrap(matcher, request)
                return request, finish(request, chosen.match(request))

            (request, result), options = with_spacing_giving_way(options, attempt)
            match_done = time.perf_counter()
            placements = _placements(request, result, name)
    except OptionError as error:
        # Every refusal that counts the library's tiles (adaptive leaves', a video's
        # frames', the capped matcher's) says how many identical photos were left out.
        raise naming_identical(error, library.identical_dropped, library.duplicates_dropped,
                               limit=options.limit, tiles=len(library)) from None
    if placements.target is not None:
        # The target as matched, so that a later render's overlay can tell it changed.
        placements.target_pixels = reading.target_pixels
    if not quiet and (options.print_size is not None or options.tile_px != options.match_px):
        small = small_originals_warning(request.library.source, placements.source_ids,
                                        options.tile_px, options.tile_height)
        if small:
            print(printable(f"mosaicist: warning: {small}"), file=sys.stderr)
    crop = region[grid.top - top:grid.top - top + grid.rows * grid.cell_height,
                  grid.left - left:grid.left - left + grid.cols * grid.cell_px]
    source_root = request.library.source.local_root()
    at_match_size = _renderer(
        placements, IndexPictures(request.library.tiles, placements.tile), options, crop,
        source_root,
    )
    renderer = at_match_size
    if options.tile_px != options.match_px:
        pictures = OriginalPictures(
            request.library.source, placements.source_ids, options.tile_px,
            aspect=options.aspect_ratio, crop=request.library.crop,
            windows=request.library.windows_for(placements.source_ids),
            colour_profiles=request.library.colour_profiles)
        renderer = _renderer(placements, pictures, options, crop, source_root)
    timings = {"index": index_done - started, "match": match_done - index_done, "render": 0.0}
    mosaic = Mosaic(placements, grid, request.library, renderer, options, matcher.name, timings,
                    assignment=result.assignment, sizes=sizes)
    if options.compute_metrics:
        # Fidelity is measured at the size tiles were compared (the picture as
        # matched), streamed: only its viewing-scale reduction is kept. Drawn larger
        # from the originals, the picture would cost its every pixel (a 131-megapixel
        # Deep Zoom make: 0.5 s of metrics -> 35 s): the report says the size measured,
        # and 'mosaicist score' measures the file.
        mosaic._measurement = _Measurement(at_match_size, crop, grid, placements)
    return mosaic


def _as_options(options: object) -> MosaicOptions:
    """``make_mosaic``'s ``options`` as :class:`MosaicOptions` (None: the defaults).

    A mapping is read as keyword arguments: ``options={"cell_px": 8}`` is
    what a caller holding settings in a dictionary means. Names that are not
    settings are refused by name rather than dropped.
    """
    if options is None:
        return MosaicOptions()
    if isinstance(options, MosaicOptions):
        return options
    if not isinstance(options, Mapping):
        raise OptionError("{options} must be a MosaicOptions or a mapping of settings, "
                          "got {value}", value=shown_type(options))
    unknown = sorted(map(str, set(options) - set(setting_names())))
    if unknown:
        # A saved report's "settings" carry a version: read those as such.
        hint = ("; settings saved with a version are read by MosaicOptions.from_json"
                if "version" in unknown else "")
        raise OptionError("{options} holds names that are not settings: {names}" + hint,
                          names=suggested(unknown))
    return MosaicOptions(**options)


def _check_inputs(target: object, tiles: object, cache_dir: object = None) -> None:
    """Refuse a ``target``, ``tiles`` or ``cache_dir`` of a type :func:`make_mosaic` does
    not take."""
    if not isinstance(target, str | os.PathLike | np.ndarray | Image.Image):
        raise OptionError("{target} must be a path, an (H, W, 3) uint8 array or a PIL image, "
                          "got {value}", value=shown_type(target))
    if isinstance(target, os.PathLike) and not isinstance(os.fspath(target), str):
        # Else pathlib's TypeError, naming no parameter.
        raise OptionError("{target} must be a path, an (H, W, 3) uint8 array or a PIL image, "
                          "got {value} naming bytes", value=shown_type(target))
    if isinstance(target, np.ndarray):
        _check_target_array(target)
    if not isinstance(tiles, str | os.PathLike | TileSource | TileLibrary):
        raise OptionError("{tiles} must be a source spec (a text: a folder, 'cifar10'...), "
                          "a path, a TileSource or a TileLibrary, got {value}",
                          value=shown_type(tiles))
    if isinstance(tiles, str) and not tiles:
        # Path("") is the current folder: an empty text (an unset variable, a blank
        # field) would index whatever folder the program runs in.
        raise OptionError("{tiles} is empty: give a folder, a dataset name ('cifar10'...) "
                          "or an array file")
    # Else a bare TypeError from pathlib, naming nothing, once the target is read.
    if cache_dir is not None and not isinstance(cache_dir, str | os.PathLike):
        raise OptionError("{cache_dir} must be a path (a text or a path object), got {value}",
                          value=shown_type(cache_dir))
    for parameter, value in (("target", target), ("tiles", tiles), ("cache_dir", cache_dir)):
        if isinstance(value, str | os.PathLike):
            text = os.fspath(value)
            if isinstance(text, str):  # a path object naming bytes is refused below
                refuse_nul(parameter, text)
    if isinstance(cache_dir, os.PathLike) and not isinstance(os.fspath(cache_dir), str):
        raise OptionError("{cache_dir} must be a path (a text or a path object), got {value} "
                          "naming bytes", value=shown_type(cache_dir))


def _check_target_array(target: np.ndarray) -> None:
    if target.ndim != 3 or target.shape[2] != 3 or target.dtype != np.uint8:
        raise OptionError("a {target} array must be (H, W, 3) uint8, got shape {shape}, "
                          "dtype {dtype}; a PIL image of any mode is converted",
                          shape=target.shape, dtype=str(target.dtype))


def make_memory(rows: int, cols: int, options: MosaicOptions, cell_px: int | None = None,
                cell_height: int | None = None) -> dict[str, int]:
    """Estimate the memory a make of ``rows x cols`` cells holds at its peak, by part.

    An estimate from the sizes alone, before any work: the cells' pixels,
    the exact search's state, the cells resampled to the compared size, the
    optimal assignment's candidate lists (with a use limit or a spacing)
    and the fidelity metrics (when computed). Each part is a measured cost
    per cell, rounded down (see :data:`ASSIGNMENT_BYTES_PER_CELL`...): the
    total errs low. The matching and the metrics come one after the other,
    so the peak counts the larger of the two. The picture's bands come with
    the output (:func:`mosaicist.render.output_memory`).

    Parameters
    ----------
    rows, cols : int
        The grid.
    options : MosaicOptions
        The settings, with the sizes fitted (``match_px``, ``cell_px``).
    cell_px, cell_height : int, optional
        A cell's size in target pixels (default: that of ``options``).

    Returns
    -------
    dict of str to int
        Bytes: ``cells``, ``search``, ``compared``, ``assignment``, ``metrics``
        and ``peak``, the estimate of the whole.
    """
    assert options.match_px is not None  # resolved by MosaicOptions
    cell_px = options.cell_px if cell_px is None else cell_px
    cell_height = options.cell_height if cell_height is None else cell_height
    count = rows * cols
    geometry = Geometry(cell_px, options.match_px, cell_height, options.match_height)
    resampled = geometry.factor == 1 and geometry.shape != geometry.cell_shape
    assigned = options.assign == "optimal" and (
        options.max_uses is not None or options.min_uses > 0 or options.min_spacing > 1)
    parts = {
        "cells": count * cell_px * cell_height * 3,
        "search": count * SEARCH_BYTES_PER_CELL,
        "compared": int(count * geometry.length * COMPARED_COPIES) if resampled else 0,
        "assignment": count * ASSIGNMENT_BYTES_PER_CELL if assigned else 0,
        "metrics": count * METRICS_BYTES_PER_CELL if options.compute_metrics else 0,
    }
    matching = parts["search"] + parts["compared"] + parts["assignment"]
    parts["peak"] = parts["cells"] + max(matching, parts["metrics"])
    return parts


def check_make_memory(rows: int, cols: int, options: MosaicOptions,
                      available: int | None = None, *, cell_px: int | None = None,
                      cell_height: int | None = None) -> None:
    """Refuse, before any work, a make whose grid cannot fit in the memory available.

    Parameters
    ----------
    rows, cols : int
        The grid.
    options : MosaicOptions
        The settings, with the sizes fitted.
    available : int, optional
        Bytes available (default: :func:`mosaicist._runtime.available_memory`).
    cell_px, cell_height : int, optional
        A cell's size in target pixels (default: that of ``options``).

    Raises
    ------
    OptionError
        When :func:`make_memory`'s estimate is over ``available``; the message
        names the settings that make it smaller.
    """
    parts = make_memory(rows, cols, options, cell_px, cell_height)
    count = rows * cols
    # A cell count chose the cell's size: a larger cell_px would be refused as a second
    # choice of it ("give one of them"), so the count the user gave is what to lower.
    advice = ["fewer {cells}" if options.cells is not None else "a larger {cell_px}"]
    if parts["compared"] > parts["search"]:
        advice.append("a smaller {match_px}")
    if parts["assignment"]:
        # The seed's method lists no candidates: each cell its nearest tile.
        advice.append("{preset} seed (no use limit or spacing)")
    assert options.match_px is not None  # resolved by MosaicOptions

    def refusal(needed: str, free: str) -> OptionError:
        return OptionError(
            "{count} {cells_noun} matched against {size} px tiles need about {needed} of memory; "
            "this machine has {free} available: use " + " or ".join(advice), count=f"{count:,}",
            cells_noun="cell" if count == 1 else "cells",
            size=f"{options.match_px}x{options.match_height}", needed=needed, free=free)

    check_memory(parts["peak"], refusal, available)


def _plan(options: MosaicOptions, size: tuple[int, int], label: str, quiet: bool
          ) -> tuple[SizePlan, MosaicOptions]:
    """The size plan for a target of ``size`` and the options it fits (checked, noted)."""
    sizes = options_plan(options, size, name=label)
    options = fit_options(options, sizes)
    # Before the library opens or the matching starts: a grid that cannot fit in memory
    # was ended by the kernel, hours in, taking the machine's other work with it.
    check_make_memory(sizes.rows, sizes.cols, options, cell_px=sizes.cell_px,
                      cell_height=sizes.cell_height)
    if options.adaptive:
        from .adaptive import check_adaptive

        check_adaptive(options)  # before any indexing
    if sizes.print_size is not None and not quiet:
        print(printable(f"mosaicist: note: {sizes.describe()}"), file=sys.stderr)
        if sizes.print_warning():
            print(printable(f"mosaicist: warning: {sizes.print_warning()}"), file=sys.stderr)
    if not quiet and sizes.shape_warning():
        print(printable(f"mosaicist: warning: {sizes.shape_warning()}"), file=sys.stderr)
    return sizes, options


class _TargetReading:
    """A target picture decoding on a thread of its own, its size known at once.

    A file's header is read (and refused, with the file's name, when it is
    missing, no picture or over ``max_pixels``) when made; its pixels decode
    from :meth:`start` on, on a daemon thread, so that an interrupt never
    waits for them, while the caller opens the library. The caller starts
    them once the plan the size makes is checked: a plan refused leaves no
    decoding behind. :meth:`pixels` starts them if need be, joins the thread
    and raises what the decoding raised.

    Attributes
    ----------
    target_pixels : TargetPixels or None
        A file's size and pixels' content hash, measured on the decoding
        thread once its pixels are there (while the library opens), for the
        placements to record; None for a picture in memory.
    """

    def __init__(self, target: Target, max_pixels: int, label: str = "target",
                 colour_profiles: str = "ignore") -> None:
        self._pixels: np.ndarray | None = None
        self.target_pixels: TargetPixels | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if not isinstance(target, (str, os.PathLike)):
            self._pixels = _as_target(target, max_pixels, label, colour_profiles)
            self.size = (self._pixels.shape[1], self._pixels.shape[0])
            return
        self.size = target_size(target, max_pixels)
        self._thread = threading.Thread(target=self._decode,
                                        args=(target, max_pixels, colour_profiles),
                                        name="mosaicist-target", daemon=True)

    def start(self) -> None:
        """Start decoding the file's pixels, if not started (a picture in memory has them)."""
        if self._thread is not None and self._thread.ident is None:
            self._thread.start()

    def _decode(self, target: str | os.PathLike[str], max_pixels: int,
                colour_profiles: str) -> None:
        try:
            pixels = read_target(target, max_pixels, colour_profiles=colour_profiles)
            # Here, not when a JSON file is written: hashing then would keep every
            # target's pixels alive as long as its placements.
            self.target_pixels = TargetPixels.of(pixels)
            self._pixels = pixels
        except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
            self._error = error

    def pixels(self) -> np.ndarray:
        """The decoded picture (waits for it); what decoding raised, raised here."""
        if self._thread is not None:
            self.start()
            self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        assert self._pixels is not None  # set by the constructor or the thread
        return self._pixels


def _as_target(target: Target, max_pixels: int, label: str = "target",
               colour_profiles: str = "ignore") -> np.ndarray:
    if isinstance(target, np.ndarray):
        _check_target_array(target)
    if isinstance(target, np.ndarray | Image.Image):
        # The limit holds for pictures in memory too: a broadcast view of any
        # size costs nothing to pass, but its cells would be copied whole.
        width, height = ((target.shape[1], target.shape[0]) if isinstance(target, np.ndarray)
                         else target.size)
        if width * height > max_pixels:
            raise over_target_limit(label, width, height, max_pixels)
    if isinstance(target, np.ndarray):
        return target
    if isinstance(target, Image.Image):
        return picture_array(target, label, max_pixels, colour_profiles=colour_profiles)
    return read_target(target, max_pixels, colour_profiles=colour_profiles)


def _fitted_to_library(options: MosaicOptions, library: TileLibrary) -> MosaicOptions:
    """``options`` with the crop and colour profiles that ``library`` was opened with.

    An opened library's tiles are cut and decoded as it was opened
    (``TileLibrary.open`` defaults to centred crops and ignored profiles),
    whatever the options say: the default preset's ``subject`` and
    ``convert`` were recorded in the placements of a make from centred
    tiles, and a render of them drew other pictures than the make did.
    Settings that were not given follow the library, so that what is
    recorded is what was matched (the target's profile is read as the
    tiles' were); given ones that would cut or decode the tiles otherwise
    are refused, naming the setting. Where they would change nothing (a
    source whose pictures are their own windows, or carry no profiles)
    they stand.
    """
    changes: dict[str, str] = {}
    if not library.cuts_as_opened(options.crop):
        if options.given("crop"):
            raise OptionError(
                "the library was opened with {opened} crops, but {crop} is {value!r}; open it "
                "with the same crop, or leave {crop} out to use the library's",
                opened=library.crop, value=options.crop)
        changes["crop"] = library.crop
    if (library.source.reads_profiles
            and options.colour_profiles != library.colour_profiles):
        if options.given("colour_profiles"):
            raise OptionError(
                "the library was opened with colour profiles {opened}, but {colour_profiles} "
                "is {value!r}; open it with the same value, or leave {colour_profiles} out to "
                "use the library's", opened=library.colour_profiles,
                value=options.colour_profiles)
        changes["colour_profiles"] = library.colour_profiles
    return options.fitted(**changes) if changes else options


def _open_library(
    tiles: Tiles, options: MosaicOptions, cache_dir: str | os.PathLike[str] | None,
    show_progress: bool, quiet: bool,
) -> TileLibrary:
    assert options.match_px is not None  # resolved by MosaicOptions
    if isinstance(tiles, TileLibrary):
        if (tiles.match_px, tiles.match_height) != (options.match_px, options.match_height):
            raise OptionError(
                "the library was indexed at {indexed} px, but {match_px} and {aspect} make "
                "{value} px", indexed=f"{tiles.match_px}x{tiles.match_height}",
                value=f"{options.match_px}x{options.match_height}")
        library = tiles
    else:
        if not isinstance(tiles, TileSource):
            # Named before the cache is made: a source that names nothing (a mistyped
            # folder) is refused with no cache folder left behind.
            tiles = open_source(tiles, cache_dir=default_cache_dir(cache_dir, create=False),
                                show_progress=show_progress)
        library = TileLibrary.open(tiles, options.match_px, cache_dir=cache_dir,
                                   show_progress=show_progress, quiet=quiet,
                                   aspect=options.aspect_ratio, crop=options.crop,
                                   colour_profiles=options.colour_profiles)
    return library.without_copies(options.dedupe, options.identical_photos)


def _placements(request: MatchRequest, result: MatchResult, target: str | None) -> Placements:
    """The matcher's picks as placements: tile, transform and tint shift of every cell."""
    options, grid, library = request.options, request.grid, request.library
    variants = request.variants
    tile = result.tile // variants
    transform = np.asarray(request.transforms, np.int8)[result.tile % variants]
    shifts = tint_shifts(request, result)
    changed = (shifts is not None or result.gain is not None or result.chroma is not None)
    source_ids = [library.source_ids[index] for index in tile.tolist()]
    return Placements(
        grid.rows, grid.cols, tile, result.distance, source_ids, transform, shifts,
        gain=result.gain, chroma=result.chroma, options=options,
        # The means the changes were scored about, drawn about at every size.
        mean=scored_means(request, result.tile) if changed else None,
        source=source_spec(library.source),
        target=None if target is None else str(target_path(target).resolve()),
        crop=(grid.left, grid.top),
        # Read from the index when a JSON file asks for them (56 ms for 5,040 tiles),
        # where the tiles are files a user may edit (a folder's or an array's).
        hashes=library.content_hashes if library.source.tracks_changes() else None,
    )


def tint_shifts(request: MatchRequest, result: MatchResult) -> np.ndarray | None:
    """Each pick's tint shift, in the metric's units, or None where nothing is tinted.

    Each tile's mean moves toward its cell's by the tint fraction, its
    lightness held back near black and white where the match held it
    (:func:`mosaicist.match._contrast.mean_shifts`).

    Parameters
    ----------
    request : MatchRequest
        The match's request.
    result : MatchResult
        Its result, finished (:func:`mosaicist.match._contrast.finish`).

    Returns
    -------
    numpy.ndarray or None
        ``(N, 3)`` float64 shifts.
    """
    options = request.options
    if not options.tint and result.tint is None:
        return None
    count = len(result.tile)
    cell_means = request.cell_vectors.reshape(count, -1, 3).mean(axis=1, dtype=np.float64)
    tile_means = request.features.channel_sums[result.tile] / request.geometry.pixels
    applied = options.tint if result.tint is None else result.tint
    asked = options.tint if result.chroma_tint is None else result.chroma_tint
    return mean_shifts(cell_means, tile_means, applied, asked,
                       options.metric) * encoded_unit(options.metric)


def scored_means(request: MatchRequest, variants: np.ndarray) -> np.ndarray:
    """The mean of each of ``variants`` (tiles of the request's features), as it was scored.

    That of the index thumbnail's 8-bit encoding in the metric
    (:func:`mosaicist.colour.encoded_means`), in the metric's units: what
    the tint's shift is measured from, and the gains and chroma are scored
    about (:attr:`mosaicist.placements.Placements.mean`).

    Parameters
    ----------
    request : MatchRequest
        The match's request.
    variants : numpy.ndarray
        ``(N,)`` picks of the matcher (tile variants: a tile under a transform).

    Returns
    -------
    numpy.ndarray
        ``(N, 3)`` float64 means.
    """
    metric = request.options.metric
    # The levels of Lab's and Oklab's a and b start at -128 units (colour.encode); sRGB's at 0.
    offset = np.zeros(3) if metric == "seed" else _OFFSET
    levels = request.features.channel_sums[np.asarray(variants)] / request.geometry.pixels
    return (levels - offset) * encoded_unit(metric)


def _renderer(
    placements: Placements, pictures: IndexPictures | OriginalPictures, options: MosaicOptions,
    crop: np.ndarray, source_root: Path | None,
) -> MosaicRenderer:
    renderer = MosaicRenderer(placements, pictures, options.metric, source_root=source_root)
    if options.overlay:
        renderer.overlay = TargetOverlay(crop, renderer.width, renderer.height, options.overlay)
    return renderer


@dataclass
class _Measurement:
    """What a mosaic's metrics need, kept until they are measured."""

    renderer: MosaicRenderer  # the picture at the size tiles were compared
    crop: np.ndarray
    grid: Grid
    placements: Placements

    def meter(self) -> FidelityMeter:
        """A fresh meter for the bands of :attr:`renderer`, top to bottom."""
        from .metrics import FidelityMeter

        return FidelityMeter(self.crop, self.renderer.tile_px, self.grid.cell_px,
                             tile_height=self.renderer.tile_height,
                             cell_height=self.grid.cell_height,
                             aspect=self.placements.options.aspect_ratio)

    def finish(self, meter: FidelityMeter) -> dict[str, Any]:
        """The metrics: ``meter``'s fidelity, which has read every band, and the repetition."""
        from .metrics import repetition_metrics

        placements = self.placements
        options = placements.options
        metrics = meter.result()
        if placements.rect is None:
            metrics.update(repetition_metrics(placements.tile_grid()))
        else:
            from .adaptive import leaf_repetition

            metrics.update(leaf_repetition(placements.tile, placements.rect))
            metrics["cells"] = len(placements)
        metrics["tint"] = options.tint
        metrics["tint_max"] = options.tint_max
        metrics["contrast"] = options.contrast
        # How far the gains moved the tiles' spreads, as a geometric mean factor.
        metrics["mean_gain_change"] = float(np.exp(np.abs(np.log(placements.gain)).mean()))
        metrics["chroma"] = options.chroma
        # How much of the tiles' chroma was kept, on average over the cells.
        metrics["mean_chroma_factor"] = float(placements.chroma.mean())
        metrics["overlay"] = options.overlay
        # The tiles' size in the picture measured: the size they were compared at, which
        # is the file's unless tiles were drawn larger (or smaller) from the originals.
        metrics["measured_tile_px"] = self.renderer.tile_px
        metrics["mean_tint_shift"] = float(np.linalg.norm(placements.tint, axis=1).mean())
        return metrics
