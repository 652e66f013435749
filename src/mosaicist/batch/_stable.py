"""Temporal stability: a video's cells keep their tiles unless another is clearly better.

A mosaic per frame flickers: two tiles of nearly equal distance to a cell
trade places from one frame to the next at the slightest change of the
picture. With a strength ``s`` (``--stable S``), each cell's tile of the
previous frame costs its distance divided by ``1 + s``:

* **Without repetition limits** a cell keeps its previous tile (and
  transform) when ``d(previous) / (1 + s) <= d(best)``, where ``d`` is the
  distance the matcher ranks by (after the tint, and after the contrast
  transfer when it re-ranks by it), ``best`` this frame's own pick; otherwise
  it takes ``best``. So another tile must be more than ``s`` better (as a
  fraction of the previous tile's distance: ``s = 0.25`` asks for 20% less)
  to replace it.
* **With repetition limits** the assignment is solved exactly as without
  stability (certified over the whole library) on costs where each cell's
  previous tile is discounted that way: keeping tiles is worth ``s`` of their
  distance, weighed against the limits and every other cell. The reported
  distances and objective are the true ones; the certificate (lower bound,
  gap) is that of the discounted problem, which no placement's true
  objective can be below.

**Where the picture changed** the previous tile has lost its reason to stay:
each frame keeps a small picture of every cell (:func:`cell_signature`: its
4 x 4 blocks' mean colours) as it was when the cell's tile was chosen (its
anchor, :func:`anchored_signature`), and a cell whose blocks moved by more
than :data:`CHANGE_LEVELS` (root mean square, in levels of 0-255) from its
anchor is matched afresh; where more than :data:`CUT_SHARE` of the cells
changed so, the frame is a new scene and every cell is. Without this, a
strong stability held the last scene's tiles across a cut (at ``--stable
10`` a tile stays unless another is 11 times closer), moving things left
trails of tiles behind them, and a pan slid the picture away under tiles
that never left. Measured on photos
(`benchmarks/README.md`): a frame against itself with noise, moved by up to
8 pixels or zoomed by 2% changes its cells' blocks by 0.5-23 levels (median),
at most 22% of them past 32 and 6% past 48; a cut to another photo by 53-143
levels, 87-100% of them past 32. The distance a tile has to its cell is no
such measure: the default preset's tint moves every tile to its cell's
colours, and across a cut the previous tiles fitted most cells no worse.

**A flash** (one frame of another picture: a camera flash, a cut away and
back) would be two new scenes, every tile changed into it and again out of
it. A new scene's picks keep the picks of the scene it cut away from
(:attr:`Picks.before`), for one frame: the frame after it, a new scene
against the flash, is compared with them too, and where it is no new scene
against them it resumes them (the tiles held before the flash).

Distances are in the exact search's integer units (``d * 100 // (100 + S)``
with ``S`` the strength in hundredths) or float64 after a contrast
transfer. The first frame, and a frame whose previous one is unknown (it
failed, or the library changed: picks name the library by its fingerprint,
:func:`library_fingerprint`), is the plain mosaic. Strength 0 is off: no
previous tile is considered and every frame is exactly the mosaic ``make``
would make of it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import OptionError
from ..match import MatchRequest, MatchResult
from ..match._assign import assign_tiles, check_feasible
from ..match._capped import (
    FIRST_CANDIDATES,
    CappedMatcher,
    LibrarySearch,
    assign_with_minimum,
)
from ..match._contrast import transfer
from ..match._exact import pair_distances, search_scale
from ..match._registry import Matcher
from ..paths import STORED_ARRAY_ERRORS

if TYPE_CHECKING:
    from ..library import TileLibrary
    from ..options import MosaicOptions
    from ..pipeline import Mosaic
    from ..placements import Placements

#: Largest stability strength (a previous tile then wins unless another is 11x closer).
STRENGTH_RANGE = (0.0, 10.0)
#: Blocks per side of a cell's signature (:func:`cell_signature`).
SIGNATURE_BLOCKS = 4
#: Change of a cell's signature (root mean square, levels of 0-255) from the previous
#: frame past which the cell's picture changed: it is matched afresh (see the module).
CHANGE_LEVELS = 40.0
#: Share of changed cells past which a frame is a new scene, matched afresh whole.
CUT_SHARE = 0.5


def cell_signature(cells: np.ndarray) -> np.ndarray:
    """Each cell's picture in small: the mean colour of its blocks, 4 x 4 of them.

    Parameters
    ----------
    cells : numpy.ndarray
        ``(N, h, w, 3)`` the cells' pixels (:attr:`mosaicist.grid.Grid.cells`).

    Returns
    -------
    numpy.ndarray
        ``(N, b, b', 3)`` uint8 rounded block means, ``b = min(4, h)`` and
        ``b' = min(4, w)`` blocks of near-equal sides.
    """
    cells = np.asarray(cells)
    _, height, width, _ = cells.shape
    sums = cells.astype(np.float64)
    counts = np.ones(1)
    for axis, side in ((1, height), (2, width)):
        edges = np.linspace(0, side, min(SIGNATURE_BLOCKS, side) + 1).round().astype(np.int64)
        sums = np.add.reduceat(sums, edges[:-1], axis=axis)
        counts = np.multiply.outer(counts, np.diff(edges)) if axis == 2 else np.diff(edges)
    means = sums / np.asarray(counts, np.float64)[None, :, :, None]
    return np.clip(np.rint(means), 0, 255).astype(np.uint8)


def anchored_signature(cells: np.ndarray, placements: Placements,
                       previous: Picks | None) -> np.ndarray:
    """Each cell's signature when its tile was chosen: the frame's picks' anchors.

    A cell that took another tile (or transform), or whose picture changed
    since its anchor (it was matched afresh, whatever it found), is anchored
    at this frame's :func:`cell_signature`; one that kept its tile keeps its
    anchor, so that a slow pan, which moves each cell a little a frame,
    is measured from where the tile was chosen and not from frame to frame
    (at ``--stable 10`` the tiles held through a 2 s pan fell from SSIM 0.61
    to 0.15).

    Parameters
    ----------
    cells : numpy.ndarray
        ``(N, h, w, 3)`` this frame's cells.
    placements : Placements
        This frame's picks.
    previous : Picks or None
        The previous frame's picks (None, of another grid, or without
        signatures: every cell is anchored here).
    """
    now = cell_signature(cells)
    if (previous is None or previous.signature is None
            or previous.signature.shape != now.shape or len(previous.tile) != len(now)):
        return now
    anchor = previous.signature
    chosen = ((np.asarray(placements.tile) != previous.tile)
              | (np.asarray(placements.transform) != previous.transform)
              | changed_cells(now, anchor))
    return np.where(chosen[:, None, None, None], now, anchor)


def changed_cells(signature: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Whether each cell's picture changed from ``previous`` to ``signature`` (see the module).

    Parameters
    ----------
    signature, previous : numpy.ndarray
        :func:`cell_signature` of this frame and of the previous one.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` bool: the blocks moved by more than :data:`CHANGE_LEVELS`.
    """
    difference = signature.astype(np.float64) - previous.astype(np.float64)
    rms = np.sqrt(np.mean(np.square(difference).reshape(len(signature), -1), axis=1))
    return rms > CHANGE_LEVELS


def strength_hundredths(strength: float) -> int:
    """The strength as the matcher applies it: whole hundredths, checked."""
    low, high = STRENGTH_RANGE
    if not low <= strength <= high:
        # Whole numbers shown as such: the command line reads "--stable 20" as 20.0.
        shown = int(strength) if float(strength).is_integer() else strength
        raise OptionError("{stable} must be between {low:g} and {high:g}, got {value}",
                          low=low, high=high, value=shown)
    hundredths = round(strength * 100)
    if strength > 0 and hundredths == 0:
        # Rounded to 0 it was off without a word, where some stability was asked for.
        raise OptionError("{stable} is applied in hundredths: {value} would be 0 (off); give "
                          "0.01 or more, or 0 for off", value=strength)
    return hundredths


def discounted(distance: np.ndarray, hundredths: int) -> np.ndarray:
    """``distance / (1 + s)``: integers rounded down exactly (no overflow), floats as they are.

    Parameters
    ----------
    distance : numpy.ndarray
        Objective values, integer or float.
    hundredths : int
        The stability ``s`` in whole hundredths (:data:`STRENGTH_RANGE` times 100).

    Returns
    -------
    numpy.ndarray
        The discounted values, of an integer type for integers (floor).
    """
    distance = np.asarray(distance)
    if np.issubdtype(distance.dtype, np.integer):
        quotient, remainder = np.divmod(distance, 100 + hundredths)
        return quotient * 100 + remainder * 100 // (100 + hundredths)
    return distance * 100 / (100 + hundredths)


class Picks:
    """One frame's choice: each cell's library tile and transform code, and the library's state.

    Attributes
    ----------
    tile : numpy.ndarray
        ``(N,)`` int64 library positions.
    transform : numpy.ndarray
        ``(N,)`` int8 transform codes (:mod:`mosaicist.transforms`).
    rows, cols : int
        The grid.
    generation, tiles : int
        The library index's generation (kept for the record) and the
        library's size when picked.
    signature : numpy.ndarray or None
        The frame's :func:`cell_signature`, or None where unknown (picks
        saved before signatures were kept): then no cell counts as changed.
    library : str
        The library's :func:`library_fingerprint` (positions mean nothing in
        another library, which may have the same generation and size);
        ``''`` where unknown (picks saved before it was kept): then the
        picks apply to no library.
    before : Picks or None
        Where this frame was a new scene: the picks of the frame before it
        (of the same grid and library, without their own ``before``), which
        the next frame resumes when it returns to that scene (see the
        module). None otherwise.
    """

    def __init__(self, tile: np.ndarray, transform: np.ndarray, rows: int, cols: int,
                 generation: int, tiles: int, signature: np.ndarray | None = None, *,
                 library: str = "", before: Picks | None = None) -> None:
        self.tile = np.asarray(tile, np.int64)
        self.transform = np.asarray(transform, np.int8)
        self.rows, self.cols = int(rows), int(cols)
        self.generation, self.tiles = int(generation), int(tiles)
        self.signature = None if signature is None else np.asarray(signature, np.uint8)
        self.library = str(library)
        self.before = before

    def save(self, path: str) -> None:
        """Write to ``path`` (``.npz``), atomically.

        Parameters
        ----------
        path : str
            The file to write.
        """
        from ..paths import atomic_path

        arrays: dict[str, Any] = {
            "tile": self.tile, "transform": self.transform,
            "shape": np.array([self.rows, self.cols, self.generation, self.tiles])}
        if self.signature is not None:
            arrays["signature"] = self.signature
        if self.library:
            arrays["library"] = np.array(self.library)
        if self.before is not None and self.before.signature is not None:
            # Its grid and library are this frame's; without a signature it says nothing.
            arrays.update(before_tile=self.before.tile, before_transform=self.before.transform,
                          before_signature=self.before.signature)
        with atomic_path(path) as temporary, open(temporary, "wb") as handle:
            np.savez(handle, **arrays)

    def digest(self) -> str:
        """A short fingerprint of the picks' contents (not of the file's bytes, which hold times).

        The picks of a frame made from others (:attr:`before`, the library)
        differ whenever those do, so that the records of the frames made
        from them (:meth:`mosaicist.batch._run._Jobs.target`) tell.

        Returns
        -------
        str
            32 hex digits.
        """
        digest = hashlib.sha256()
        shape = np.array([self.rows, self.cols, self.generation, self.tiles], np.int64)
        for array in (shape, self.tile, self.transform):
            digest.update(np.ascontiguousarray(array).tobytes())
        if self.signature is not None:
            digest.update(np.array(self.signature.shape, np.int64).tobytes())
            digest.update(np.ascontiguousarray(self.signature).tobytes())
        # Only where present: the digests of picks saved without them stay what records hold.
        if self.library:
            digest.update(b"library\0" + self.library.encode())
        if self.before is not None and self.before.signature is not None:
            digest.update(b"before\0")
            before: tuple[np.ndarray, ...] = (self.before.tile, self.before.transform,
                                              self.before.signature)
            for array in before:
                digest.update(np.array(array.shape, np.int64).tobytes())
                digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:32]

    @classmethod
    def load(cls, path: str) -> Picks | None:
        """Read picks saved by :meth:`save`; None when missing or damaged.

        A damaged file is read as no previous frame: the next frame is then
        matched afresh rather than failing the batch.

        Parameters
        ----------
        path : str
            The file :meth:`save` wrote.

        Returns
        -------
        Picks or None
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                stored = {name: data[name] for name in data.files}
        except STORED_ARRAY_ERRORS:
            return None  # a truncated archive too
        shape, tile, transform = (stored.get(name) for name in ("shape", "tile", "transform"))
        # Arrays of another kind (a 0-d shape, 2-D or float tiles, transform codes past
        # int8) are a damaged file, read as no previous frame: they raised TypeError, or
        # were cast (wrapped, truncated) into other tiles and transforms.
        if shape is None or tile is None or transform is None or not (
                _integers(shape, 1) and len(shape) == 4):
            return None
        rows, cols, generation, tiles = (int(value) for value in shape)
        if rows < 1 or cols < 1 or tiles < 0 or not _tiles(tile, transform, rows * cols):
            return None
        # A damaged signature is none: the tiles still steer, no cell counts as changed.
        signature = _signature(stored.get("signature"), len(tile))
        library = stored.get("library")
        known = (library is not None and library.ndim == 0 and library.dtype.kind == "U")
        picks = cls(tile, transform, rows, cols, generation, tiles, signature,
                    library=str(library) if known else "")
        before_tile, before_transform = stored.get("before_tile"), stored.get("before_transform")
        before_signature = _signature(stored.get("before_signature"), len(tile))
        if (before_tile is not None and before_transform is not None
                and before_signature is not None
                and _tiles(before_tile, before_transform, len(tile))):
            # Damaged, it is left out: the next frame is compared with this one alone.
            picks.before = cls(before_tile, before_transform, rows, cols, generation, tiles,
                               before_signature, library=picks.library)
        return picks


def _tiles(tile: np.ndarray, transform: np.ndarray, cells: int) -> bool:
    """Whether stored tiles and transform codes are ``cells`` of each, of their kinds."""
    return (_integers(tile, 1) and _integers(transform, 1) and len(tile) == cells
            and tile.shape == transform.shape
            and (not len(transform)
                 or -128 <= int(transform.min()) <= int(transform.max()) <= 127))


def _signature(signature: np.ndarray | None, cells: int) -> np.ndarray | None:
    """A stored :func:`cell_signature` of ``cells`` cells, or None (absent or damaged)."""
    if signature is None or signature.dtype != np.uint8 or signature.ndim != 4 \
            or signature.shape[-1] != 3 or len(signature) != cells:
        return None
    return signature


def _integers(array: np.ndarray, ndim: int) -> bool:
    """Whether ``array`` is an integer array of ``ndim`` dimensions (a stored one, checked)."""
    return array.ndim == ndim and np.issubdtype(array.dtype, np.integer)


class StableMatcher(Matcher):
    """A matcher whose picks keep the previous frame's tiles unless clearly beaten.

    Parameters
    ----------
    inner : Matcher
        The matcher the settings chose (any without repetition limits, or
        the built-in capped assignment).
    previous : numpy.ndarray or None
        ``(N,)`` each cell's candidate in the previous frame (tile times
        variants plus transform; ``-1`` where none); None: the plain match.
    hundredths : int
        The strength in hundredths (see :func:`strength_hundredths`).
    previous_signature : numpy.ndarray, optional
        The previous frame's :func:`cell_signature`: cells whose picture
        changed since are matched afresh (see the module). None: none is.
    before, before_signature : numpy.ndarray, optional
        Where the previous frame was a new scene, the candidates and
        signature of the frame before it (:attr:`Picks.before`): a frame
        that is a new scene against the previous one but not against these
        resumes them (a flash). None: none.
    """

    def __init__(self, inner: Matcher, previous: np.ndarray | None, hundredths: int,
                 previous_signature: np.ndarray | None = None,
                 before: np.ndarray | None = None,
                 before_signature: np.ndarray | None = None) -> None:
        if inner.repetition_limits and not isinstance(inner, CappedMatcher):
            raise OptionError("{stable} works with the built-in matchers, not with {search} "
                              "{value} and repetition limits", value=inner.search)
        self.inner = inner
        self.previous = previous
        self.hundredths = hundredths
        self.previous_signature = previous_signature
        self.before = before
        self.before_signature = before_signature
        #: Cells matched afresh because their picture changed, whether the frame was a
        #: new scene, and whether it resumed ``before`` (set by :meth:`match`).
        self.changed = 0
        self.new_scene = False
        self.resumed = False
        self.name = inner.name
        self.search = inner.search
        self.devices = inner.devices
        self.repetition_limits = inner.repetition_limits

    def match(self, request: MatchRequest) -> MatchResult:
        self.changed, self.new_scene, self.resumed = 0, False, False
        previous = self.previous
        if previous is not None and self.hundredths and self.previous_signature is not None:
            now = cell_signature(request.grid.cells)
            previous, self.changed = _unchanged(now, previous, self.previous_signature)
            self.new_scene = previous is None
            if previous is None and self.before is not None \
                    and self.before_signature is not None:
                # A new scene against the previous frame; the scene before it again?
                previous, changed = _unchanged(now, self.before, self.before_signature)
                if previous is not None:
                    self.changed, self.new_scene, self.resumed = changed, False, True
        if previous is None or not self.hundredths:
            return self.inner.match(request)
        if self.repetition_limits:
            return self._assigned(request, previous)
        return self._kept(request, previous, self.inner.match(request))

    def _kept(self, request: MatchRequest, previous: np.ndarray, result: MatchResult
              ) -> MatchResult:
        """Each cell keeps its previous candidate where its discounted distance is no worse."""
        options = request.options
        cells = np.flatnonzero((previous >= 0) & (previous != result.tile))
        if not len(cells):
            return result
        best, kept = result.tile[cells], previous[cells]
        gains: np.ndarray | None = None
        tints: np.ndarray | None = None
        if options.contrast:
            # Ranked after the contrast transfer, as the exact matcher ranks.
            distance, gain, tint = transfer(request.cell_vectors[cells], request.candidates,
                                            request.geometry, request.features,
                                            np.stack([best, kept], axis=1), options.contrast,
                                            options.tint, options.metric)
            best_distance, kept_distance = distance[:, 0], distance[:, 1]
            kept_objective = kept_distance
            gains, tints = gain[:, 1], tint[:, 1]
        else:
            both = pair_distances(request.cell_vectors, request.candidates, request.geometry,
                                  request.features, np.concatenate([cells, cells]),
                                  np.concatenate([best, kept]), options.tint)
            best_distance, kept_distance = both[:len(cells)], both[len(cells):]
            scale = search_scale(request.geometry, options.tint)
            kept_objective = kept_distance / scale if scale != 1 else kept_distance
        keep = discounted(kept_distance, self.hundredths) <= best_distance
        if not keep.any():
            return result
        where = cells[keep]
        tile = result.tile.copy()
        tile[where] = kept[keep]
        distance = result.distance.copy()
        distance[where] = kept_objective[keep]
        picked_gain, picked_tint = result.gain, result.tint
        if picked_gain is not None and gains is not None:
            picked_gain = picked_gain.copy()
            picked_gain[where] = gains[keep]
        # A kept pick's own tint (held back near the colour range's ends), as its gain.
        picked_asked = result.chroma_tint
        if picked_tint is not None and tints is not None:
            picked_tint = picked_tint.copy()
            picked_tint[where] = tints[keep]
            if picked_asked is not None:
                # Ranked with the tint asked for, which its chroma moves by.
                picked_asked = picked_asked.copy()
                picked_asked[where] = round(options.tint * 100) / 100
        return replace(result, tile=tile, distance=distance, gain=picked_gain,
                       tint=picked_tint, chroma_tint=picked_asked)

    def _assigned(self, request: MatchRequest, previous: np.ndarray) -> MatchResult:
        """The capped assignment with every cell's previous tile discounted."""
        options, grid = request.options, request.grid
        check_feasible(len(grid), len(request.library), options.max_uses, grid.rows, grid.cols,
                       options.min_spacing, options.min_uses)
        variants = request.variants
        # The inner matcher's own searches (a cluster's matcher spreads them over workers).
        make_search = getattr(self.inner, "library_search", LibrarySearch)
        search = _DiscountedSearch(make_search(request),
                                   np.where(previous >= 0, previous // variants, -1),
                                   self.hundredths)
        if options.min_uses:
            assignment = assign_with_minimum(request, search)  # type: ignore[arg-type]
        else:
            tiles, distances = search.nearest(np.arange(len(grid)), FIRST_CANDIDATES)
            assignment = assign_tiles(
                tiles, distances, grid.rows, grid.cols, max_uses=options.max_uses,
                min_spacing=options.min_spacing, method=options.assign, search=search,
                show_progress=request.show_progress,
            )
        # The true distances of the kept tiles, for the placements and the objective.
        cells = np.flatnonzero(assignment.tile == search.previous)
        distance = np.asarray(assignment.distance).copy()
        if len(cells):
            distance[cells] = search.inner.pairs(cells, assignment.tile[cells])
        objective = int(distance.sum(dtype=np.int64))
        lower = assignment.lower_bound
        gap = 0.0 if objective <= lower else (
            float((objective - lower) / lower) if lower > 0 else math.inf)
        scale = search.scale
        assignment = replace(assignment, distance=distance / scale if scale != 1 else distance,
                             objective=objective / scale if scale != 1 else objective,
                             lower_bound=lower / scale if scale != 1 else lower, gap=gap)
        return MatchResult(search.inner.candidate_of(assignment.tile), assignment.distance,
                           assignment=assignment)


def _unchanged(now: np.ndarray, previous: np.ndarray, signature: np.ndarray
               ) -> tuple[np.ndarray | None, int]:
    """``previous`` less the cells whose picture changed (None for a new scene), and their count.

    Parameters
    ----------
    now : numpy.ndarray
        This frame's :func:`cell_signature`.
    previous : numpy.ndarray
        Each cell's candidate in the frame compared with (``-1``: none).
    signature : numpy.ndarray
        That frame's (anchored) signature.
    """
    if now.shape != signature.shape:
        return previous, 0  # another grid: previous_candidates tells
    changed = changed_cells(now, signature)
    count = int(changed.sum())
    if count > CUT_SHARE * len(changed):
        return None, count
    return (np.where(changed, -1, previous) if count else previous), count


class _DiscountedSearch:
    """A :class:`~mosaicist.match._capped.LibrarySearch` whose cells' previous tiles cost less.

    Every answer (nearest lists, pricing searches, pairs, the dense matrix)
    uses the same costs: the search's distances, with the pair of a cell and
    its previous tile discounted (:func:`discounted`), so that the
    assignment's certificate holds for those costs.
    """

    def __init__(self, inner: LibrarySearch, previous: np.ndarray, hundredths: int) -> None:
        self.inner = inner
        self.previous = np.asarray(previous, np.int64)
        self.hundredths = hundredths
        self.tile_count = inner.tile_count
        self.scale = inner.scale

    def nearest(self, cells: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        tiles, distances = self.inner.nearest(cells, k)
        return self._with_previous(cells, tiles, distances, k)

    def below(
        self, cells: np.ndarray, price: np.ndarray, limit: np.ndarray, k: int,
        upper: np.ndarray | None = None, among: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        # ``upper`` bounds the discounted costs, not the search's own: not passed on. The
        # previous tile joins even from outside ``among``, which the protocol allows.
        tiles, distances = self.inner.below(cells, price, limit, k, among=among)
        return self._with_previous(cells, tiles, distances, k, price, limit)

    def pairs(self, cells: np.ndarray, tiles: np.ndarray) -> np.ndarray:
        distances = self.inner.pairs(cells, tiles)
        mine = (tiles == self.previous[cells]) & (tiles >= 0)
        distances[mine] = discounted(distances[mine], self.hundredths)
        return distances

    def dense(self) -> np.ndarray:
        full = self.inner.dense()
        cells = np.flatnonzero(self.previous >= 0)
        tiles = self.previous[cells]
        full[cells, tiles] = discounted(full[cells, tiles], self.hundredths)
        return full

    def _with_previous(
        self, cells: np.ndarray, tiles: np.ndarray, distances: np.ndarray, k: int,
        price: np.ndarray | None = None, limit: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The lists with each cell's previous tile at its discounted cost, re-sorted.

        A previous tile already listed is discounted in place; one not listed
        is measured and joins the list when it is among the ``k`` best by
        discounted cost (plus price, below the limit).
        """
        cells = np.asarray(cells, np.int64)
        previous = self.previous[cells]
        tiles, distances = tiles.copy(), distances.copy()
        listed = (tiles == previous[:, None]) & (previous[:, None] >= 0)
        distances[listed] = discounted(distances[listed], self.hundredths)
        rows = np.flatnonzero((previous >= 0) & ~listed.any(axis=1))
        if len(rows):
            measured = discounted(self.inner.pairs(cells[rows], previous[rows]), self.hundredths)
            extra_tiles = np.full(len(cells), -1, np.int64)
            missing = np.iinfo(np.int64).max
            extra_distances = np.full(len(cells), missing, distances.dtype)
            fits = np.ones(len(rows), bool)
            if limit is not None:
                cost = measured + (0 if price is None else price[previous[rows]])
                fits = cost < np.asarray(limit)[rows]
            extra_tiles[rows[fits]] = previous[rows[fits]]
            extra_distances[rows[fits]] = measured[fits]
            tiles = np.concatenate([tiles, extra_tiles[:, None]], axis=1)
            distances = np.concatenate([distances, extra_distances[:, None]], axis=1)
        if not listed.any() and not len(rows):
            return tiles, distances
        # Best first by cost (distance plus price), missing entries last; ties keep
        # the search's order, the previous tile after tiles listed before it.
        present = tiles >= 0
        cost = np.full(distances.shape, np.iinfo(np.int64).max, np.int64)
        added = distances if price is None else distances + price[np.maximum(tiles, 0)]
        cost[present] = added[present]
        order = np.argsort(cost, axis=1, kind="stable")[:, :k]
        return (np.take_along_axis(tiles, order, axis=1),
                np.take_along_axis(distances, order, axis=1))


def library_fingerprint(library: TileLibrary) -> str:
    """The library's photos, in order, with their contents: a short digest.

    What a library position means: kept in each batch output's record
    (photos added, removed, reordered or edited since an output was made
    make other mosaics, so the output is made again) and in each frame's
    :class:`Picks` (whose positions mean nothing in another library). The
    same for every match size (the same files); settings such as ``limit``
    and ``dedupe`` are in the batch's settings.

    Parameters
    ----------
    library : TileLibrary
        The opened library.

    Returns
    -------
    str
        32 hex digits.
    """
    ids = list(library.source_ids)
    hashes = library.content_hashes(ids)  # none for a dataset's arrays: their ids suffice
    digest = hashlib.sha256()
    for source_id in ids:
        digest.update(f"{source_id}\0{hashes.get(source_id, '')}\n".encode("utf-8",
                                                                          "surrogatepass"))
    return digest.hexdigest()[:32]


def previous_candidates(request: MatchRequest, picks: Picks | None, library: str
                        ) -> np.ndarray | None:
    """Each cell's previous candidate in ``request``'s terms, or None when it does not apply.

    Picks of another grid, of another library (``library``: its
    :func:`library_fingerprint`; picks that name none apply to none) or of
    another size (``limit``, ``dedupe``) say nothing about this frame's
    candidates.
    """
    grid = request.grid
    if (picks is None or (picks.rows, picks.cols) != (grid.rows, grid.cols)
            or not picks.library or picks.library != library
            or picks.tiles != len(request.library)):
        return None
    variants = request.variants
    code_to_variant = np.full(256, -1, np.int64)
    for variant, code in enumerate(request.transforms):
        code_to_variant[int(code) & 255] = variant
    variant_of = code_to_variant[picks.transform.astype(np.int64) & 255]
    valid = (picks.tile >= 0) & (picks.tile < len(request.library)) & (variant_of >= 0)
    return np.where(valid, picks.tile * variants + variant_of, -1)


def frame_picks(mosaic: Mosaic, library: str, previous: Picks | None = None,
                before: Picks | None = None) -> Picks:
    """The picks of a video frame's mosaic, to save for the next frame.

    Parameters
    ----------
    mosaic : Mosaic
        The frame's mosaic.
    library : str
        The library's :func:`library_fingerprint`.
    previous : Picks, optional
        The picks the frame started from (its cells' anchors,
        :func:`anchored_signature`); None: every cell anchored here.
    before : Picks, optional
        Where the frame was a new scene, the picks of the scene it cut away
        from (:attr:`Picks.before`).

    Returns
    -------
    Picks
    """
    placements = mosaic.placements
    if before is not None:
        before = Picks(before.tile, before.transform, before.rows, before.cols,
                       before.generation, before.tiles, before.signature,
                       library=before.library)  # one frame back only
    return Picks(placements.tile, placements.transform, placements.rows, placements.cols,
                 mosaic.library.generation, len(mosaic.library),
                 anchored_signature(mosaic.grid.cells, placements, previous), library=library,
                 before=before)


def stable_mosaic(
    frame: np.ndarray, library: TileLibrary, options: MosaicOptions, previous: Picks | None,
    strength: float, name: str = "frame",
) -> Mosaic:
    """The mosaic of one video frame, its cells keeping ``previous`` tiles (see the module).

    :func:`mosaicist.make_mosaic`'s own steps (sizes, grid, limits fitted to
    the library, the spacing giving way, corrections, renderer and metrics),
    with each request's matcher wrapped in a :class:`StableMatcher`.
    With no previous picks, or strength 0, the result is ``make_mosaic``'s.
    :func:`stable_frame` also gives the picks to save for the next frame.

    Parameters
    ----------
    frame : numpy.ndarray
        ``(H, W, 3)`` uint8 picture.
    library : TileLibrary
        The opened library (at the settings' match size).
    options : MosaicOptions
        The settings.
    previous : Picks or None
        The previous frame's picks (:func:`stable_frame` gives them; picks
        that name another library, or none, are not used).
    strength : float
        ``s`` of the module's rule (0 to 10).
    name : str
        The frame's name for messages.
    """
    return stable_frame(frame, library, options, previous, strength, name)[0]


def stable_frame(
    frame: np.ndarray, library: TileLibrary, options: MosaicOptions, previous: Picks | None,
    strength: float, name: str = "frame", fingerprint: str | None = None,
) -> tuple[Mosaic, Picks]:
    """:func:`stable_mosaic`, and the frame's picks, which the next frame starts from.

    A frame that is a new scene against ``previous`` but not against the
    picks before it (``previous.before``, a flash) starts from those; one
    that is a new scene against both keeps ``previous`` in its picks, for
    the next frame (see the module).

    Parameters
    ----------
    frame, library, options, previous, strength, name
        As for :func:`stable_mosaic`.
    fingerprint : str, optional
        ``library``'s :func:`library_fingerprint`, when known (a batch
        computes it once); else computed here.

    Returns
    -------
    mosaic : Mosaic
        The frame's mosaic.
    picks : Picks
        Its picks, to save for the next frame.
    """
    from ..pipeline import _make_mosaic

    hundredths = strength_hundredths(strength)
    if fingerprint is None:
        fingerprint = library_fingerprint(library)
    wrapped: list[StableMatcher] = []

    def stable(matcher: Matcher, request: MatchRequest) -> Matcher:
        known = previous_candidates(request, previous, fingerprint)
        signature = before = before_signature = None
        if known is not None and previous is not None:
            signature = previous.signature
            if previous.before is not None:
                before = previous_candidates(request, previous.before, fingerprint)
                before_signature = None if before is None else previous.before.signature
        wrapped.append(StableMatcher(matcher, known, hundredths, signature, before,
                                     before_signature))
        return wrapped[-1]

    mosaic = _make_mosaic(frame, library, options, label=name, wrap=stable)
    # The last request's matcher made the picks (the spacing may have given way).
    used = wrapped[-1] if wrapped else None
    started: Picks | None = None  # the picks the frame started from
    if used is not None and used.previous is not None:
        started = previous.before if used.resumed and previous is not None else previous
    cut_from = previous if used is not None and used.new_scene else None
    return mosaic, frame_picks(mosaic, fingerprint, started, cut_from)
