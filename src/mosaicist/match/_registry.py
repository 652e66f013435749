"""Matchers: the ways of giving every cell a tile, in one table.

A :class:`Matcher` says what it supports (the ``search`` setting it answers,
the devices it runs on, whether it honours repetition limits, and any other
setting it cannot honour) and matches a :class:`MatchRequest`. The table,
:data:`MATCHERS`, holds the built-in ones (exact, approximate, GPU, capped
assignment; see :mod:`mosaicist.match`) and any added with
:func:`register_matcher`; :func:`matcher_for` picks the one that a mosaic's
settings ask for.

A matcher defined outside the package is checked as it runs: an exception
from its methods, or a result of the wrong shape, type or range, is a
:class:`~mosaicist._registry.PluginError` naming it (one line on the command
line), never a traceback or a wrong mosaic.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
import types
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from .._registry import PluginError, Registry, check_name, describe, guard_plugin, guarded
from ..colour import encode
from ..errors import MosaicistError, OptionError, alternatives, counted
from ..grid import Geometry, Grid
from ..transforms import AUGMENT_SETS, augment_transforms
from ._features import TileFeatures, cached_features
from ._prepare import prepare_tiles

if TYPE_CHECKING:
    from ..library import TileLibrary
    from ..options import MosaicOptions
    from ._assign import Assignment


@dataclass
class MatchResult:
    """The best tile for every cell.

    Attributes
    ----------
    tile : numpy.ndarray
        ``(N,)`` int64 library position of each cell's tile.
    distance : numpy.ndarray
        ``(N,)`` exact objective of each pick: int64, or float64 after a tint
        (the objective after the tile's colour shift).
    evaluated : int
        Exact distance evaluations made (for benchmarks).
    bounded : int
        Cell-tile pairs whose lower bound was computed (for benchmarks).
    candidates : numpy.ndarray or None
        ``(N, k)`` int64: each cell's ``k`` best tiles, best first (only when
        more than one was asked for); missing entries (fewer than ``k``
        tiles) hold ``-1``.
    candidate_distances : numpy.ndarray or None
        ``(N, k)`` exact distances of ``candidates``, of the dtype of
        ``distance`` (missing: int64 max, or infinity after a tint).
    assignment : Assignment or None
        The repetition-limited assignment and its certificate, when limits
        were solved (see :mod:`mosaicist.match._assign`).
    gain : numpy.ndarray or None
        ``(N, 3)`` gain of each pick's spread per channel, when contrast
        was transferred (see :mod:`mosaicist.match._contrast`).
    tint : numpy.ndarray or None
        ``(N,)`` tint strength of each pick, when it differs from cell to
        cell (``tint_max``, or held back near black and white); otherwise
        every pick has ``options.tint``.
    chroma_tint : numpy.ndarray or None
        ``(N,)`` strength each pick's mean chroma moves toward its cell's,
        when it differs from cell to cell (``tint_max``); otherwise every
        pick's is ``options.tint``. It differs from ``tint`` where the tint
        was held back near black and white, in lightness only (see
        :mod:`mosaicist.match._contrast`).
    chroma : numpy.ndarray or None
        ``(N,)`` factor in ``[0, 1]`` on each pick's chroma, when it was moved
        toward its cell's (``options.chroma``; see :mod:`mosaicist.match._contrast`).
    """

    tile: np.ndarray
    distance: np.ndarray
    evaluated: int = 0
    bounded: int = 0
    candidates: np.ndarray | None = None
    candidate_distances: np.ndarray | None = None
    assignment: Assignment | None = None
    gain: np.ndarray | None = None
    tint: np.ndarray | None = None
    chroma: np.ndarray | None = None
    chroma_tint: np.ndarray | None = None


class MatchRequest:
    """What a matcher is given: the cells, the library and the settings.

    The candidates a matcher chooses from are the library's tiles in the
    metric's colour space, each under every transform of ``augment``:
    candidate ``v`` is library tile ``v // variants`` under transform
    ``transforms[v % variants]`` (see :mod:`mosaicist.match._prepare`).
    :attr:`candidates` and :attr:`features` are made on first use (and
    cached on disk beside the index), so a matcher that needs neither pays
    for neither.

    Parameters
    ----------
    grid : Grid
        The target's cells.
    library : TileLibrary
        The whole library (``options.limit`` is applied here).
    options : MosaicOptions
        The mosaic's settings.
    show_progress : bool
        Whether matchers may draw progress bars.
    notes : bool
        Whether matchers may print notes for a person on stderr (a command
        run without ``--quiet``, bars or none).
    """

    def __init__(
        self, grid: Grid, library: TileLibrary, options: MosaicOptions, show_progress: bool = False,
        *, notes: bool = False,
    ) -> None:
        self.grid = grid
        self.options = options
        self.show_progress = show_progress
        self.notes = notes or show_progress
        self.whole_library = library
        #: The tiles in use: the first ``options.limit`` of the library.
        self.library = library.limit(options.limit)
        assert options.match_px is not None  # resolved by MosaicOptions
        self.geometry = Geometry(options.cell_px, options.match_px, grid.cell_height,
                                 options.match_height)
        if grid.cell_px != options.cell_px:
            raise ValueError(f"the grid's cells are {grid.cell_px} px wide, but cell_px is "
                             f"{options.cell_px}")
        if len(grid.cells) != len(grid):
            # A hand-made grid: the built-in matchers gave as many picks as cells, and the
            # check of a plugin's result refused its right answer for the rows and columns.
            raise ValueError(f"the grid holds {counted(len(grid.cells), 'cell')}, but its "
                             f"{grid.rows:,} rows of {grid.cols:,} make "
                             f"{counted(len(grid), 'cell')}")
        tile_shape = tuple(library.tiles.shape[1:3])
        if len(library) and tile_shape != self.geometry.match_shape:
            raise OptionError(
                "the library's tiles are {width}x{height} px, but {match_px} {value} at "
                "{aspect} {shape} needs {wanted}", width=tile_shape[1], height=tile_shape[0],
                value=options.match_px, shape=options.aspect,
                wanted=f"{options.match_px}x{options.match_height}",
            )
        #: Transform codes tried for every tile (those that keep the shape of
        #: rectangular tiles; see :func:`mosaicist.transforms.augment_transforms`).
        self.transforms = augment_transforms(options.augment, options.aspect_ratio)

    @property
    def _augment_key(self) -> str:
        """``augment``, with the codes kept when rectangular tiles keep only some."""
        if self.transforms == AUGMENT_SETS[self.options.augment]:
            return self.options.augment
        return self.options.augment + "-" + "".join(map(str, self.transforms))

    @property
    def variants(self) -> int:
        """Candidates per library tile (transforms tried)."""
        return len(self.transforms)

    @cached_property
    def cell_vectors(self) -> np.ndarray:
        """``(N, h, w, 3)`` uint8: the cells as compared (``geometry.shape``), in the metric's
        colour space."""
        return encode(self.geometry.cell_vectors(self.grid.cells), self.options.metric)

    @cached_property
    def _whole_candidates(self) -> np.ndarray:
        # Prepared for the whole library, so that one cache entry serves every limit.
        library = self.whole_library
        return prepare_tiles(
            library.tiles, self.options.metric, self.options.augment, library.features_dir,
            f"g{library.generation}-n{len(library)}", self.show_progress,
            aspect=self.options.aspect_ratio,
        )

    @cached_property
    def candidates(self) -> np.ndarray:
        """``(len(library) * variants, match_height, match_px, 3)`` uint8 candidate tiles."""
        return self._whole_candidates[: len(self.library) * self.variants]

    @cached_property
    def features(self) -> TileFeatures:
        """The exact search's features of :attr:`candidates` (cached beside the index)."""
        if len(self.library) == 0:
            # As the searches say it (the matchers read the features first).
            raise ValueError("no tiles to match against")
        library = self.whole_library
        features = cached_features(
            self._whole_candidates, self.geometry, library.features_dir, library.generation,
            self.show_progress, variant=f"{self.options.metric}-{self._augment_key}",
        )
        return features.limit(len(self.candidates))


class Matcher(abc.ABC):
    """A way of giving every cell a tile.

    Attributes
    ----------
    name : str
        Its key in :data:`MATCHERS`, shown in reports.
    search : str
        The value of the ``search`` setting it answers (``"exact"``...).
    devices : tuple of str
        Values of the ``device`` setting it runs on.
    repetition_limits : bool
        Whether it honours ``max_uses`` and ``min_spacing`` (a matcher that
        does is chosen when they are set, one that does not otherwise).
    """

    name: str
    search: str = "exact"
    devices: tuple[str, ...] = ("cpu",)
    repetition_limits: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Every caller (make, batch, the studio, adaptive cells) gets the same failures.
        guard_plugin(cls, "matcher", _GUARDED_METHODS)
        if _from_package(cls):
            return
        for method, check in _GUARDED_METHODS.items():
            # A method a plugin inherits from a class that is no Matcher (a mixin, a base
            # shared with other tools) is not in its own class's namespace, where
            # guard_plugin looks: unguarded, its broken result reached the pipeline as a
            # traceback. Guarded here, on the class that brings it into a Matcher.
            function = getattr(cls, method, None)
            if (method not in cls.__dict__ and inspect.isfunction(function)
                    and not getattr(function, "__guarded__", False)
                    and not _from_package(function)):
                setattr(cls, method, guarded("matcher", function, check, method))

    def unsupported(self, options: MosaicOptions) -> OptionError | None:
        """Return why this matcher cannot honour ``options``, or None when it can.

        The default honours every setting; a matcher that cannot (a tint, a
        colour space...) returns an :class:`OptionError` naming it.

        Parameters
        ----------
        options : MosaicOptions
            The mosaic's settings.

        Returns
        -------
        OptionError or None
            The problem, returned rather than raised, so that the caller can
            try other matchers or reset the preset's settings first.
        """
        return None

    def check_runs(self, options: MosaicOptions) -> None:
        """Raise :class:`MosaicistError` when this machine cannot run the matcher.

        Called before any reading or indexing, so that a missing package or
        device is said first and alone. The default runs everywhere.

        Parameters
        ----------
        options : MosaicOptions
            The mosaic's settings (the device, for instance).

        Raises
        ------
        MosaicistError
            When a package or device the matcher needs is missing, naming it.
        """
        return None

    def prepare(self, options: MosaicOptions) -> None:
        """Load what :meth:`match` will need, while the target decodes.

        Called when the library is open, before the target's pixels are
        waited for (a PNG target decodes outside the interpreter lock), by
        every make of a mosaic (each frame of a video too): it must be cheap
        once done. The default loads nothing; the approximate search imports
        FAISS here.

        Parameters
        ----------
        options : MosaicOptions
            The mosaic's settings.
        """
        return None

    @abc.abstractmethod
    def match(self, request: MatchRequest) -> MatchResult:
        """Give every cell of ``request`` a candidate.

        Parameters
        ----------
        request : MatchRequest
            The target's cells, the library's candidates and the settings.

        Returns
        -------
        MatchResult
            ``tile``: ``(N,)`` int64 index of each cell's candidate in
            ``request.candidates`` (tile ``v // variants``, transform
            ``v % variants``); ``distance``: its objective (int64, or
            float64 after a tint); ``assignment`` when repetition was limited.
        """

    def __repr__(self) -> str:
        return f"<matcher {self.name}: search {self.search} on {', '.join(self.devices)}>"


#: Matchers by name, in the order they are considered.
MATCHERS: Registry[Matcher] = Registry("matcher")

#: The refusals of :func:`matcher_for` for a search and a device that exist but do not go
#: together (``value`` the search, ``device_value`` the device). Templates, so that the
#: studio can say them in its own words.
NOT_ON_DEVICE = "{search} {value} does not run on {device} {device_value}; use {known}"
WITHOUT_REPETITION_LIMITS = ("{search} {value} on {device} {device_value} does not combine "
                             "with repetition limits ({max_uses}, {min_uses}, {min_spacing})")
NEEDS_REPETITION_LIMITS = ("{search} {value} on {device} {device_value} needs repetition limits "
                           "({max_uses}, {min_uses}, {min_spacing})")


def _from_package(thing: Any) -> bool:
    """Whether ``thing`` (a class or function) is defined in the mosaicist package."""
    return str(getattr(thing, "__module__", "")).partition(".")[0] == "mosaicist"


def _guard_instance_methods(matcher: Matcher) -> None:
    """Guard the methods set on ``matcher`` itself (``matcher.match = f``), as its class's are.

    Such a callable hides the guarded method of the class: unguarded, its
    broken result reached the pipeline as a traceback.
    """
    own = getattr(matcher, "__dict__", {})
    for method, check in _GUARDED_METHODS.items():
        function = own.get(method)
        if not callable(function) or getattr(function, "__guarded__", False):
            continue

        def call(self: Matcher, *args: Any, _function: Any = function, **kwargs: Any) -> Any:
            return _function(*args, **kwargs)

        # A bound method forwards __guarded__ to its function: a second registration
        # does not wrap it again.
        setattr(matcher, method, types.MethodType(guarded("matcher", call, check, method),
                                                  matcher))


def register_matcher(matcher: Matcher, *, replace: bool = False) -> Matcher:
    """Add ``matcher`` to :data:`MATCHERS` under its name; return it.

    Its ``name``, ``search`` and ``devices`` must each be one lower-case
    word (they are typed on command lines and written in reports), and it
    must be reachable: a matcher that answers the same search, on the same
    devices, with the same ``repetition_limits`` as one registered before it
    would never be chosen, and is refused.

    Parameters
    ----------
    matcher : Matcher
        The matcher (an instance, not the class).
    replace : bool
        Allow replacing a matcher of the same name (it takes that one's place
        in the order).

    Returns
    -------
    Matcher
        ``matcher``.

    Raises
    ------
    TypeError
        When ``matcher`` is no :class:`Matcher` instance, or one of its
        attributes has the wrong type.
    ValueError
        When a name is not one lower-case word, the name is taken (and
        ``replace`` is false), or the matcher could never be chosen.
    """
    if not isinstance(matcher, Matcher):
        if isinstance(matcher, type) and issubclass(matcher, Matcher):
            raise TypeError(f"register_matcher takes a matcher, not its class: "
                            f"use {matcher.__qualname__}()")
        raise TypeError(f"register_matcher takes a Matcher, got {type(matcher).__name__}")
    cls = type(matcher)
    where = f"matcher {cls.__module__}.{cls.__qualname__}"
    check_name(getattr(matcher, "name", None), f"the name of {where}")
    check_name(matcher.search, f"the search of {where}")
    devices = matcher.devices
    if isinstance(devices, str) or not isinstance(devices, tuple | list) or not devices:
        raise TypeError(f"the devices of {where} must be a tuple of names such as ('cpu',), "
                        f"got {devices!r}")
    for device in devices:
        check_name(device, f"each device of {where}")
    if not isinstance(matcher.repetition_limits, bool):
        raise TypeError(f"repetition_limits of {where} must be True or False, "
                        f"got {matcher.repetition_limits!r}")
    what = describe("matcher", matcher)
    # matcher_for takes the first fit: one fitting nowhere that an earlier one does not
    # would be registered in vain, and the mosaics asked of it made by another.
    earlier: dict[str, str] = {}  # device -> the first matcher that would take it
    for other in MATCHERS.values():
        if other.name == matcher.name:
            break  # replaced in place: only those before it come first
        if other.search == matcher.search and other.repetition_limits == matcher.repetition_limits:
            for device in other.devices:
                earlier.setdefault(device, other.name)
    if all(device in earlier for device in devices):
        limits = "with" if matcher.repetition_limits else "without"
        first = ", ".join(dict.fromkeys(earlier[device] for device in devices))
        raise ValueError(
            f"{what} would never be chosen: {first} "
            f"answer search {matcher.search!r} on {', '.join(devices)} {limits} repetition "
            "limits before it; give it a search of its own, or its name to replace one")
    if not _from_package(cls):
        _guard_instance_methods(matcher)
    return MATCHERS.register(matcher.name, matcher, replace=replace)


def _plugin_error(matcher: Matcher, problem: str) -> PluginError:
    return PluginError(f"{describe('matcher', matcher)} is broken: {problem}")


def _checked_problem(matcher: Matcher, problem: object, args: tuple[Any, ...]) -> Any:
    """A plugin's ``unsupported()`` answer, when it is one (None or an error to raise)."""
    if problem is None or isinstance(problem, MosaicistError):
        return problem
    raise _plugin_error(matcher, f"unsupported() returned {type(problem).__name__} "
                                 f"{problem!r}, not an OptionError or None")


def _array(matcher: Matcher, value: object, field: str, shape: tuple[int, ...],
           kinds: str) -> np.ndarray:
    """``value`` as an array of ``shape`` whose dtype kind is in ``kinds``, or a PluginError."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:  # ragged lists and the like
        raise _plugin_error(matcher, f"its result's {field} is no array ({error})") from None
    if array.shape != shape:
        raise _plugin_error(matcher, f"its result's {field} has shape {array.shape}, "
                                     f"not {shape}")
    if array.dtype.kind not in kinds:
        wanted = "integers" if kinds == "iu" else "numbers"
        raise _plugin_error(matcher, f"its result's {field} holds {array.dtype}, not {wanted}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise _plugin_error(matcher, f"its result's {field} holds NaN or infinity")
    return array


def _checked_indices(matcher: Matcher, value: object, field: str, shape: tuple[int, ...],
                     count: int, request: MatchRequest, missing: bool = False) -> np.ndarray:
    """Candidate positions of ``shape`` in ``[0, count)`` (or -1 when ``missing``), as int64."""
    array = _array(matcher, value, field, shape, "iu")
    if array.size:
        low, high = array.min(), array.max()
        if (low < (-1 if missing else 0)) or high >= count:
            bad = low if low < 0 else high
            raise _plugin_error(
                matcher, f"its result's {field} holds {bad}, out of range: candidates are "
                f"0 to {count - 1} ({len(request.library)} tiles x {request.variants} "
                "transforms)")
    return array.astype(np.int64, copy=False)


def _distances(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float64 if array.dtype.kind == "f" else np.int64, copy=False)


def _checked_result(matcher: Matcher, result: object, args: tuple[Any, ...]) -> MatchResult:
    """A plugin's :class:`MatchResult` checked against its request, arrays in their dtypes.

    A pick out of range would draw another tile, or wrap around to the last
    ones; a NaN distance would reach the report: both are refused here.
    """
    request = args[0]
    if not isinstance(result, MatchResult):
        raise _plugin_error(matcher, f"match() returned {type(result).__name__}, not a "
                                     "MatchResult")
    cells = len(request.grid)
    count = len(request.library) * request.variants
    tile = _checked_indices(matcher, result.tile, "tile", (cells,), count, request)
    distance = _distances(_array(matcher, result.distance, "distance", (cells,), "iuf"))
    fields: dict[str, Any] = {"tile": tile, "distance": distance}
    for counter in ("evaluated", "bounded"):
        value = getattr(result, counter)
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise _plugin_error(matcher, f"its result's {counter} is {value!r}, not a count")
    if result.candidates is not None:
        candidates = np.asarray(result.candidates)
        shape = (cells, candidates.shape[1] if candidates.ndim == 2 else 0)
        fields["candidates"] = _checked_indices(matcher, candidates, "candidates", shape,
                                                count, request, missing=True)
        if result.candidate_distances is None:
            raise _plugin_error(matcher, "its result has candidates but no "
                                         "candidate_distances")
        # Missing entries hold the dtype's largest value or infinity.
        found = np.asarray(result.candidate_distances)
        if found.shape != shape or found.dtype.kind not in "iuf" or np.isnan(found).any():
            raise _plugin_error(matcher, f"its result's candidate_distances has shape "
                                         f"{found.shape} of {found.dtype}, not {shape} of "
                                         "numbers")
        fields["candidate_distances"] = _distances(found)
    if result.gain is not None:
        gain = _array(matcher, result.gain, "gain", (cells, 3), "iuf")
        if (gain <= 0).any():
            raise _plugin_error(matcher, "its result's gain holds values that are not positive")
        fields["gain"] = gain.astype(np.float64, copy=False)
    if result.tint is not None:
        tint = _array(matcher, result.tint, "tint", (cells,), "iuf")
        if ((tint < 0) | (tint > 1)).any():
            raise _plugin_error(matcher, "its result's tint holds values outside 0 to 1")
        fields["tint"] = tint.astype(np.float64, copy=False)
    if result.chroma_tint is not None:
        asked = _array(matcher, result.chroma_tint, "chroma_tint", (cells,), "iuf")
        if ((asked < 0) | (asked > 1)).any():
            raise _plugin_error(matcher, "its result's chroma_tint holds values outside 0 to 1")
        fields["chroma_tint"] = asked.astype(np.float64, copy=False)
    if result.chroma is not None:
        chroma = _array(matcher, result.chroma, "chroma", (cells,), "iuf")
        if ((chroma < 0) | (chroma > 1)).any():
            raise _plugin_error(matcher, "its result's chroma holds values outside 0 to 1")
        fields["chroma"] = chroma.astype(np.float64, copy=False)
    if result.assignment is not None:
        from ._assign import Assignment

        if not isinstance(result.assignment, Assignment):
            raise _plugin_error(matcher, f"its result's assignment is "
                                         f"{type(result.assignment).__name__}, not an "
                                         "Assignment")
    return dataclasses.replace(result, **fields)


#: The methods of a plugin matcher that are guarded, and the check of each one's answer.
_GUARDED_METHODS: dict[str, Any] = {"match": _checked_result, "unsupported": _checked_problem,
                                    "check_runs": None, "prepare": None}


#: Settings a preset may ask for that some matchers cannot honour.
PRESET_WISHES = ("max_uses", "min_uses", "min_spacing", "tint", "tint_max", "contrast",
                 "chroma", "metric", "augment")


def fitted_matcher(options: MosaicOptions) -> tuple[Matcher, MosaicOptions, tuple[str, ...]]:
    """Return the matcher for ``options``, letting the preset's wishes give way to it.

    A matcher chosen explicitly (``search="approximate"``, ``device="cuda"``)
    may not honour what the default preset asks for (repetition limits, a
    tint, a contrast transfer). Settings that were given always count and
    make an error; settings that only came from the preset fall back to
    their declared defaults (the seed's method) when that lets a matcher run.

    Parameters
    ----------
    options : MosaicOptions
        The mosaic's settings, which know which were given (:meth:`MosaicOptions.given`).

    Returns
    -------
    matcher : Matcher
        As :func:`matcher_for`.
    options : MosaicOptions
        ``options``, or a copy with the preset settings in the way reset.
    dropped : tuple of str
        Names of the settings reset (empty when none).

    Raises
    ------
    OptionError
        When no matcher fits even so, as :func:`matcher_for` says.
    """
    from ..options import setting_named

    try:
        return matcher_for(options), options, ()
    except OptionError:
        plain = {
            name: setting_named(name).default for name in PRESET_WISHES
            if not options.given(name) and getattr(options, name) != setting_named(name).default
        }
        if not plain:
            raise
        fitted = options.fitted(**plain)
        # Still no matcher: the given settings are in the way, and this error names them.
        return matcher_for(fitted), fitted, tuple(plain)


def check_device_runs(
    options: MosaicOptions,
    check: Callable[[Matcher, MosaicOptions], None] | None = None,
) -> None:
    """Refuse ``options.device`` where no matcher runs on it on this machine.

    Checked before what the device cannot do (a tint on the GPU, say): else
    ``--device cuda --tint 0.5`` asked for the tint to go, and only then said
    that there is no GPU.

    Parameters
    ----------
    options : MosaicOptions
        The settings; a device no matcher declares is left to the matchers'
        own refusal (:func:`matcher_for`).
    check : callable, optional
        ``check(matcher, options)``, raising where ``matcher`` cannot run here
        (default: :meth:`Matcher.check_runs`; the studio says it in its own words).

    Raises
    ------
    MosaicistError
        The first matcher's refusal, where none that declares the device runs here.
    """
    failed: MosaicistError | None = None
    for matcher in MATCHERS.values():
        if options.device not in matcher.devices:
            continue
        try:
            if check is None:
                matcher.check_runs(options)
            else:
                check(matcher, options)
        except MosaicistError as error:
            failed = failed or error
        else:
            return
    if failed is not None:
        raise failed


def matcher_for_limits(matcher: Matcher, options: MosaicOptions) -> Matcher:
    """Return ``matcher``, or :func:`matcher_for` ``options`` where they no longer limit as it does.

    A preset's repetition limits fitted to a small library
    (:func:`._capped.fit_limits`) may leave nothing to limit: the matcher
    chosen for the limits would then run where the settings recorded with
    the mosaic, made again, run another (the exact search ranks contrast
    transfers, the assignment's lists do not), and the two mosaics differ.

    Parameters
    ----------
    matcher : Matcher
        The matcher chosen for the settings before they were fitted.
    options : MosaicOptions
        The fitted settings.

    Returns
    -------
    Matcher
        ``matcher`` where it answers ``options``, else the one that does, prepared.
    """
    if matcher.repetition_limits == options.repetition_limited:
        return matcher
    fitted = matcher_for(options)
    fitted.prepare(options)
    return fitted


def matcher_for(options: MosaicOptions) -> Matcher:
    """Return the matcher that ``options`` ask for.

    That is the first matcher of :data:`MATCHERS` that answers
    ``options.search`` on ``options.device``, honours repetition limits when
    they are set (and only then), and supports the other settings.

    Parameters
    ----------
    options : MosaicOptions
        The mosaic's settings: ``search``, ``device``, the repetition limits
        and whatever a matcher may not support.

    Returns
    -------
    Matcher
        The registered matcher.

    Raises
    ------
    OptionError
        When no matcher fits, naming the settings in the way.
    """
    from ..options import short_refusal

    try:
        return _matcher_for(options)
    except OptionError as error:
        # A search or device of any length reaches here: the options take any name.
        raise short_refusal(error) from None


def _matcher_for(options: MosaicOptions) -> Matcher:
    searches = list(dict.fromkeys(matcher.search for matcher in MATCHERS.values()))
    if options.search not in searches:
        raise OptionError("unknown {search} {value!r}; use {known}", value=options.search,
                          known=alternatives(searches))
    answering = [matcher for matcher in MATCHERS.values() if matcher.search == options.search]
    devices = list(dict.fromkeys(device for matcher in answering for device in matcher.devices))
    every_device = list(dict.fromkeys(device for matcher in MATCHERS.values()
                                      for device in matcher.devices))
    if options.device not in every_device:
        # No matcher knows it: a typo, not a search that runs elsewhere.
        raise OptionError("unknown {device} {value!r}; use {known}", value=options.device,
                          known=alternatives(every_device))
    # From here the search and the device are known names: unquoted, as the notes say them.
    if options.device not in devices:
        # ``devices`` (unused here) lets the studio name each by its label.
        raise OptionError(NOT_ON_DEVICE, value=options.search, device_value=options.device,
                          known=alternatives(devices), devices=tuple(devices))
    limited = options.repetition_limited
    for matcher in answering:
        if options.device in matcher.devices and matcher.repetition_limits == limited:
            problem = matcher.unsupported(options)
            if problem is not None:
                raise problem
            return matcher
    raise OptionError(WITHOUT_REPETITION_LIMITS if limited else NEEDS_REPETITION_LIMITS,
                      value=options.search, device_value=options.device)
