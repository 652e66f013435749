"""Where each photo of a live wall goes: the cost of a photo in a cell, and the placement rule.

**The cost** of photo ``p`` in cell ``c`` is the summed squared difference,
at the size photos are compared (``match_px``, in the colour space of the
``metric`` setting, 8-bit units), between the cell and the photo *after its
tint*: the tint moves the photo's mean colour a fraction ``A`` of the way to
the cell's, so with ``a'`` and ``t'`` the cell and the photo less their mean
colours, ``n`` pixels and ``d`` the difference of the means,

    cost = |a' - t'|^2 + n (1 - A)^2 |d|^2

(the cross term vanishes: ``a' - t'`` sums to zero in every channel). It is
rounded to whole units (int64), computed for many pairs at once as one
matrix product.

**The rule.** Photos arrive one by one in an order nobody controls, and each
must be shown within a second. Placing each in the free cell where it fits
best (greedy) lets early photos take cells that later ones would have
filled much better, and leaves the last photos the cells nobody fits. The
rule used here looks ahead with *prices*:

1. **Forecast.** The photos received so far are taken as a sample of those
   still to come: each is repeated (at most :data:`FORECAST_REPEATS` times)
   until the sample is as large as the count of free cells, and the sample
   is assigned to the free cells at least total cost, exactly (the min-cost
   assignment of :mod:`mosaicist.match`, each cell at most once). Its dual
   solution gives every free cell a price: the least amount that makes the
   forecast's assignment optimal (:func:`mosaicist.match._assign.tile_prices`).
   A cell many photos fit well has a high price; a cell only few photos fit
   (its good candidates are scarce) has none, so that it is kept for them.
2. **Place.** A new photo goes to the free cell of least cost plus price
   (ties to the lowest cell): where it fits best *compared with the
   alternatives the forecast expects for that cell*. Prices are recomputed
   in the background as the sample grows (:data:`FORECAST_GROWTH`).
3. **Re-optimise** (unless ``--final``). When the wall is quiet, the photos
   on it are reassigned over their cells and the free ones at least total
   cost, exactly, and the photos whose cell changed move. At any quiet
   moment the wall is then the best arrangement of the photos received; in
   ``--final`` mode (printed boards) a placed photo never moves and the
   prices alone carry the look-ahead. (The exact assignment is solved on
   the whole cost matrix up to :data:`DENSE_PAIRS` photo-cell pairs.)

``benchmarks/bench_live.py`` measures the rule against placing all the
photos at once optimally, over random arrival orders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..colour import encode, encoded_unit
from ..match._assign import _edges, _solve, assign_tiles, tile_prices

#: Most times one received photo stands for future ones in the forecast sample.
FORECAST_REPEATS = 4
#: Extra candidate cells each forecast photo lists beyond its repeats.
FORECAST_EXTRA = 160
#: The forecast is recomputed once the received photos grew by this fraction (or by
#: :data:`FORECAST_STEP` photos, whichever is larger), or the free cells shrank by it.
FORECAST_GROWTH = 0.1
FORECAST_STEP = 8
#: Photos received before any forecast: fewer say too little about the rest.
FORECAST_MINIMUM = 8
#: Photo-cell pairs up to which a re-optimisation solves the whole cost matrix exactly.
DENSE_PAIRS = 16_000_000
#: First candidate cells each photo lists in a re-optimisation of a larger wall.
OPTIMUM_CANDIDATES = 32
#: Photos whose costs are computed in one matrix product (bounds the float32 block).
BLOCK = 512


@dataclass(frozen=True)
class Vectors:
    """Pictures as compared: each less its mean colour, its energy and its mean.

    Attributes
    ----------
    centred : numpy.ndarray
        ``(n, L)`` float32: the pixels in the metric's 8-bit units, less the
        picture's mean colour (``L = 3 * pixels``).
    energy : numpy.ndarray
        ``(n,)`` float64: ``|centred|^2``.
    mean : numpy.ndarray
        ``(n, 3)`` float64: the mean colour.
    """

    centred: np.ndarray
    energy: np.ndarray
    mean: np.ndarray

    def __len__(self) -> int:
        return len(self.centred)

    @property
    def pixels(self) -> int:
        """Pixels of one picture."""
        return self.centred.shape[1] // 3

    def take(self, index: np.ndarray) -> Vectors:
        """The pictures ``index`` (positions)."""
        return Vectors(self.centred[index], self.energy[index], self.mean[index])


def picture_vectors(pixels: np.ndarray, metric: str = "seed") -> Vectors:
    """The :class:`Vectors` of ``(n, H, W, 3)`` uint8 sRGB pictures in ``metric``'s space.

    Parameters
    ----------
    pixels : numpy.ndarray
        ``(n, H, W, 3)`` uint8 sRGB pictures, all of one size.
    metric : str
        The colour space costs are measured in (the ``metric`` setting).

    Returns
    -------
    Vectors
    """
    pixels = np.asarray(pixels, np.uint8)
    count = len(pixels)
    values = encode(pixels.reshape(count, -1, 3), metric).astype(np.float32)
    mean = values.mean(axis=1, dtype=np.float64)
    centred = (values - mean[:, None, :].astype(np.float32)).reshape(count, -1)
    energy = np.einsum("ij,ij->i", centred, centred, dtype=np.float64)
    return Vectors(np.ascontiguousarray(centred), energy, mean)


def tint_shift(photo_mean: np.ndarray, cell_mean: np.ndarray, tint: float,
               metric: str) -> np.ndarray:
    """The shift that tints a photo for its cell, as :func:`mosaicist.render.dress_tiles` takes.

    ``tint`` of the way from the photo's mean colour to the cell's, in the
    metric's own units (the vectors are in its 8-bit encoding).
    """
    return tint * (np.asarray(cell_mean) - np.asarray(photo_mean)) * encoded_unit(metric)


class WallCosts:
    """The cost of photos in the cells of one wall (see the module docstring).

    Parameters
    ----------
    cells : Vectors
        The wall's cells at the compared size, row-major.
    tint : float
        The fraction of the way each photo's mean colour moves to its cell's.
    """

    def __init__(self, cells: Vectors, tint: float) -> None:
        self.cells = cells
        self.tint = float(tint)
        self._mean_weight = cells.pixels * (1.0 - self.tint) ** 2

    def __len__(self) -> int:
        return len(self.cells)

    def pair_costs(self, photos: Vectors, cells: np.ndarray) -> np.ndarray:
        """``(n,)`` int64 cost of photo ``i`` in ``cells[i]``.

        Parameters
        ----------
        photos : Vectors
            ``n`` photos.
        cells : numpy.ndarray
            ``(n,)`` cells, row-major, one per photo.

        Returns
        -------
        numpy.ndarray
        """
        chosen = self.cells.take(np.asarray(cells, np.int64))
        products = np.einsum("ij,ij->i", photos.centred, chosen.centred, dtype=np.float64)
        means = photos.mean - chosen.mean
        total = (photos.energy + chosen.energy - 2.0 * products
                 + self._mean_weight * np.einsum("ic,ic->i", means, means))
        return np.rint(np.maximum(total, 0.0)).astype(np.int64)

    def costs(self, photos: Vectors, cells: np.ndarray | None = None) -> np.ndarray:
        """``(len(photos), len(cells))`` int64 costs (all cells when ``cells`` is None).

        Parameters
        ----------
        photos : Vectors
            The photos, one row each.
        cells : numpy.ndarray, optional
            The cells, row-major, one column each (default: every cell).

        Returns
        -------
        numpy.ndarray
        """
        if cells is not None and len(photos) < BLOCK and 2 * len(cells) >= len(self.cells):
            # Most cells, few photos: the product with every cell beats copying the cells.
            return self.costs(photos)[:, np.asarray(cells, np.int64)]
        chosen = self.cells if cells is None else self.cells.take(np.asarray(cells, np.int64))
        out = np.empty((len(photos), len(chosen)), np.int64)
        for start in range(0, len(photos), BLOCK):
            part = photos.take(np.arange(start, min(len(photos), start + BLOCK)))
            if len(part) == 1:
                # One photo (each arrival): a single-threaded matrix-vector product. BLAS
                # threads cost more than they gain here, many times more on a busy machine.
                products = np.einsum("ij,j->i", chosen.centred, part.centred[0])[None, :]
            else:
                products = part.centred @ chosen.centred.T
            means = part.mean[:, None, :] - chosen.mean[None, :, :]
            total = (part.energy[:, None] + chosen.energy[None, :]
                     - 2.0 * products.astype(np.float64)
                     + self._mean_weight * np.einsum("ijc,ijc->ij", means, means))
            out[start:start + len(part)] = np.rint(np.maximum(total, 0.0))
        return out


def cheapest(costs: np.ndarray, prices: np.ndarray | None = None) -> int:
    """Position of the least ``costs + prices`` (ties: the first)."""
    total = costs if prices is None else costs + prices
    return int(np.argmin(total))


def forecast_prices(type_costs: np.ndarray, repeats: np.ndarray) -> np.ndarray:
    """Prices of the free cells from the forecast assignment (see the module docstring).

    Parameters
    ----------
    type_costs : numpy.ndarray
        ``(n, F)`` int64 cost of each sample photo in each free cell.
    repeats : numpy.ndarray
        ``(n,)`` how many future photos each sample photo stands for; their
        sum is at most ``F``.

    Returns
    -------
    numpy.ndarray
        ``(F,)`` int64 non-negative prices; zeros when the forecast proves
        nothing (no sample, or no prices prove its assignment optimal).
    """
    types, free = type_costs.shape
    prices = np.zeros(free, np.int64)
    repeats = np.asarray(repeats, np.int64)
    chosen = np.flatnonzero(repeats > 0)
    if free == 0 or not len(chosen):
        return prices
    k = int(min(free, repeats.max() + FORECAST_EXTRA))
    costs = type_costs[chosen]
    if k < free:
        nearest = np.argpartition(costs, k - 1, axis=1)[:, :k]
    else:
        nearest = np.broadcast_to(np.arange(free), (len(chosen), free))
    nearest_costs = np.take_along_axis(costs, nearest, axis=1)
    order = np.lexsort((nearest, nearest_costs), axis=1)
    nearest = np.take_along_axis(nearest, order, axis=1)
    nearest_costs = np.take_along_axis(nearest_costs, order, axis=1)
    # Each sample photo becomes as many identical choosers as it has repeats.
    rows = np.repeat(np.arange(len(chosen)), repeats[chosen])
    candidates = nearest[rows].astype(np.int64)
    distances = nearest_costs[rows]
    edges = _edges(candidates, distances, np.full(len(rows), k))
    # Choosers whose lists are used up take an outside column at their list's tail:
    # the relaxation stays a valid forecast, and its prices are exact for it.
    choice = _solve(len(rows), edges, np.ones(len(edges.row), bool), 1, edges.tail)
    found = tile_prices(edges, choice, 1, edges.tail)
    if found is not None:
        cells, values = found
        prices[cells] = values
    return prices


def forecast_sample(count: int, free: int, coming: int,
                    rng: np.random.Generator) -> np.ndarray:
    """How many future photos each of ``count`` received ones stands for.

    The sample is as large as the photos still ``coming``, the ``free``
    cells, and :data:`FORECAST_REPEATS` times ``count``, whichever is least.
    Each received photo stands for the same number, the remainder spread at
    random (with more photos than the sample, a random set stands for one each).
    """
    repeats = np.zeros(count, np.int64)
    size = min(free, coming, count * FORECAST_REPEATS)
    if size <= 0:
        return repeats
    base, extra = divmod(size, count)
    repeats[:] = base
    if extra:
        repeats[rng.choice(count, extra, replace=False)] += 1
    return repeats


def optimal_cells(costs: np.ndarray) -> np.ndarray:
    """The min-cost assignment of photos to distinct cells: each photo's cell.

    Parameters
    ----------
    costs : numpy.ndarray
        ``(P, C)`` int64, ``P <= C``: photo ``p`` in cell ``c``.

    Returns
    -------
    numpy.ndarray
        ``(P,)`` int64 cell of each photo, distinct. Up to
        :data:`DENSE_PAIRS` pairs it is solved exactly on the whole matrix
        (``scipy.optimize.linear_sum_assignment``, a few seconds for a
        4,000-photo wall); above, by :func:`mosaicist.match.assign_tiles`
        on each photo's nearest cells (photos choose cells, each cell at
        most once), its lists grown from ``costs`` while that pays.
    """
    photos, cells = costs.shape
    if photos > cells:
        raise ValueError(f"{photos} photos cannot take distinct cells of {cells}")
    if photos == 0:
        return np.zeros(0, np.int64)
    if photos * cells <= DENSE_PAIRS:
        from scipy.optimize import linear_sum_assignment

        rows, chosen = linear_sum_assignment(costs)
        out = np.empty(photos, np.int64)
        out[rows] = chosen
        return out

    def nearest(k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, cells)
        if k < cells:
            index = np.argpartition(costs, k - 1, axis=1)[:, :k]
        else:
            index = np.broadcast_to(np.arange(cells), costs.shape).copy()
        values = np.take_along_axis(costs, index, axis=1)
        order = np.lexsort((index, values), axis=1)
        return (np.take_along_axis(index, order, axis=1).astype(np.int64),
                np.take_along_axis(values, order, axis=1))

    first, first_costs = nearest(OPTIMUM_CANDIDATES)
    assignment = assign_tiles(first, first_costs, 1, photos, max_uses=1,
                              more_candidates=nearest, max_candidates=cells)
    return np.asarray(assignment.tile, np.int64)


class Placer:
    """The placement state of one wall: which photo is in which cell, and the prices.

    Pure bookkeeping and arithmetic, no files: the event store
    (:mod:`._event`) calls it under its lock and records what it decides.

    Parameters
    ----------
    costs : WallCosts
        The wall's cells and tint.
    final : bool
        Never move a placed photo (:meth:`optimum` then moves nothing).
    expected : int, optional
        Photos expected in all (default: one per cell): the forecast's horizon.
    seed : int
        Seed of the forecast's random sample (placements are reproducible).

    Attributes
    ----------
    cell_photo : numpy.ndarray
        ``(C,)`` the photo in each cell (its number), ``-1`` when free.
    """

    def __init__(self, costs: WallCosts, *, final: bool = False, expected: int | None = None,
                 seed: int = 0) -> None:
        self.costs = costs
        self.final = final
        self.expected = len(costs) if expected is None else int(expected)
        self.rng = np.random.default_rng(seed)
        cells = len(costs)
        self.cell_photo = np.full(cells, -1, np.int64)
        length = costs.cells.centred.shape[1]
        self._centred = np.zeros((64, length), np.float32)
        self._energy = np.zeros(64)
        self._mean = np.zeros((64, 3))
        self._cell = np.zeros(64, np.int64)
        self._movable = np.zeros(64, bool)
        self._sample = np.zeros(64, bool)
        self.count = 0
        self.prices = np.zeros(cells, np.int64)
        self._priced = (0, cells)

    # -- photos --------------------------------------------------------------------------

    def add(self, vectors: Vectors, *, movable: bool = True, sample: bool = True) -> int:
        """Record one photo (``vectors`` of one picture); return its number.

        Parameters
        ----------
        vectors : Vectors
            The photo's vectors (one picture).
        movable : bool
            Re-optimisation may move it (never in ``final`` mode).
        sample : bool
            It joins the forecast's sample (guests' photos do, completion
            fills do not).

        Returns
        -------
        int
            The photo's number, from 0 in the order added.
        """
        if self.count == len(self._centred):
            grow = len(self._centred) * 2
            self._centred = np.resize(self._centred, (grow, self._centred.shape[1]))
            self._energy = np.resize(self._energy, grow)
            self._mean = np.resize(self._mean, (grow, 3))
            self._cell = np.resize(self._cell, grow)
            self._movable = np.resize(self._movable, grow)
            self._sample = np.resize(self._sample, grow)
        number = self.count
        self._centred[number] = vectors.centred[0]
        self._energy[number] = vectors.energy[0]
        self._mean[number] = vectors.mean[0]
        self._cell[number] = -1
        self._movable[number] = movable and not self.final
        self._sample[number] = sample
        self.count += 1
        return number

    def vectors(self, numbers: np.ndarray | list[int]) -> Vectors:
        """The :class:`Vectors` of photos ``numbers``.

        Parameters
        ----------
        numbers : numpy.ndarray or list of int
            Photo numbers (:meth:`add`).

        Returns
        -------
        Vectors
        """
        index = np.asarray(numbers, np.int64)
        return Vectors(self._centred[index], self._energy[index], self._mean[index])

    def cell_of(self, number: int) -> int:
        """The cell of photo ``number``, ``-1`` when it is not on the wall.

        Parameters
        ----------
        number : int
            The photo's number.

        Returns
        -------
        int
        """
        return int(self._cell[number])

    @property
    def free(self) -> np.ndarray:
        """The free cells, ascending."""
        return np.flatnonzero(self.cell_photo < 0)

    def cost(self, number: int, cell: int) -> int:
        """The cost of photo ``number`` in ``cell``.

        Parameters
        ----------
        number : int
            The photo's number.
        cell : int
            The cell, row-major from 0.

        Returns
        -------
        int
        """
        return int(self.costs.costs(self.vectors([number]), np.array([cell]))[0, 0])

    def choose(self, number: int) -> int:
        """The free cell photo ``number`` goes to under the rule; ``-1`` when the wall is full.

        The rule: least cost plus the cell's forecast price, so that a cell
        later photos would fit better is kept for them.

        Parameters
        ----------
        number : int
            The photo's number.

        Returns
        -------
        int
        """
        free = self.free
        if not len(free):
            return -1
        row = self.costs.costs(self.vectors([number]), free)[0]
        return int(free[cheapest(row, self.prices[free])])

    def put(self, number: int, cell: int) -> None:
        """Place photo ``number`` in the free ``cell``.

        Parameters
        ----------
        number : int
            The photo's number; it must not be on the wall.
        cell : int
            The cell, row-major from 0.

        Raises
        ------
        ValueError
            When the cell is taken or the photo is on the wall already.
        """
        if self.cell_photo[cell] >= 0:
            raise ValueError(f"cell {cell} holds photo {self.cell_photo[cell]} already")
        if self._cell[number] >= 0:
            raise ValueError(f"photo {number} is in cell {self._cell[number]} already")
        self.cell_photo[cell] = number
        self._cell[number] = cell

    def take_off(self, number: int) -> int:
        """Take photo ``number`` off the wall; return the cell it freed (``-1``: none).

        Parameters
        ----------
        number : int
            The photo's number.

        Returns
        -------
        int
        """
        cell = int(self._cell[number])
        if cell >= 0:
            self.cell_photo[cell] = -1
            self._cell[number] = -1
        return cell

    def forget(self, number: int) -> None:
        """Take photo ``number`` off the wall and out of the forecast's sample (removed).

        Parameters
        ----------
        number : int
            The photo's number.
        """
        self.take_off(number)
        self._sample[number] = False
        self._movable[number] = False

    # -- forecast ------------------------------------------------------------------------

    def forecast_due(self) -> bool:
        """Whether the sample or the free cells changed enough since the last prices."""
        sampled = int(self._sample[:self.count].sum())
        if sampled < FORECAST_MINIMUM:
            return False
        priced, free_then = self._priced
        free = int((self.cell_photo < 0).sum())
        grown = sampled - priced >= max(FORECAST_STEP, FORECAST_GROWTH * priced)
        shrunk = free_then - free >= max(1, FORECAST_GROWTH * free_then)
        return bool(free) and (grown or shrunk)

    def forecast_input(self) -> tuple[Vectors, np.ndarray, np.ndarray, tuple[int, int]]:
        """What a forecast needs, copied: the sample, the free cells, repeats, and a stamp."""
        sample = np.flatnonzero(self._sample[:self.count])
        free = self.free
        repeats = forecast_sample(len(sample), len(free), self.expected - len(sample), self.rng)
        return self.vectors(sample), free, repeats, (len(sample), len(free))

    def compute_prices(self, sample: Vectors, free: np.ndarray,
                       repeats: np.ndarray) -> np.ndarray:
        """The forecast's prices of ``free`` (no state changes: may run without the lock).

        Parameters
        ----------
        sample, free, repeats
            As :meth:`forecast_input` gives them: the sampled photos, the
            free cells, and how many future photos each sampled one stands for.

        Returns
        -------
        numpy.ndarray
            ``(len(free),)`` int64 price of each free cell.
        """
        if not len(free) or not len(sample):
            return np.zeros(len(free), np.int64)
        return forecast_prices(self.costs.costs(sample, free), repeats)

    def set_prices(self, free: np.ndarray, prices: np.ndarray, stamp: tuple[int, int]) -> None:
        """Install prices computed for ``free`` (those of cells filled since go unused).

        Parameters
        ----------
        free : numpy.ndarray
            The free cells the prices were computed for.
        prices : numpy.ndarray
            Their prices (:meth:`compute_prices`).
        stamp : tuple of int
            The stamp of :meth:`forecast_input`, which :meth:`forecast_due`
            compares with to tell when to price again.
        """
        self.prices[:] = 0
        self.prices[free] = prices
        self._priced = stamp

    def forecast_state(self) -> tuple[tuple[int, int], dict[str, Any], np.ndarray]:
        """What the placement rule depends on beyond the photos: kept with the event's state.

        Returns
        -------
        stamp : tuple of int
            The sample and free cells the prices were computed for.
        rng : dict
            The state of the forecast's random generator (JSON-serialisable).
        prices : numpy.ndarray
            ``(C,)`` int64 price of each cell.
        """
        return self._priced, dict(self.rng.bit_generator.state), self.prices.copy()

    def restore_forecast(self, stamp: tuple[int, int], rng: dict[str, Any],
                         prices: np.ndarray) -> None:
        """Put back what :meth:`forecast_state` gave (a resumed event places as if never stopped).

        Parameters
        ----------
        stamp, rng, prices
            As :meth:`forecast_state` gives them.

        Raises
        ------
        ValueError
            When they do not fit this wall (nothing is changed then).
        """
        # Everything is checked before anything is installed: a damaged stamp refused after
        # the prices and the generator were put back left the wall with half a forecast.
        try:
            prices = np.asarray(prices, np.int64)
            sampled, free = (int(value) for value in stamp)
            generator = np.random.default_rng()
            generator.bit_generator.state = rng
        except (TypeError, ValueError, KeyError, OverflowError) as error:
            raise ValueError(f"the forecast does not fit this wall ({error})") from None
        if prices.shape != self.prices.shape or (prices < 0).any():
            # Prices are never negative (forecast_prices): a negative one drew photos in.
            raise ValueError("the forecast does not fit this wall")
        self.rng = generator
        self.prices[:] = prices
        self._priced = (sampled, free)

    def update_prices(self) -> None:
        """Recompute the prices now when due (the synchronous form, for simulations)."""
        if self.forecast_due():
            sample, free, repeats, stamp = self.forecast_input()
            self.set_prices(free, self.compute_prices(sample, free, repeats), stamp)

    # -- re-optimisation -----------------------------------------------------------------

    def optimum_input(self) -> tuple[np.ndarray, np.ndarray, Vectors]:
        """What a re-optimisation needs, copied: the movable photos, their cells and free ones.

        Empty in ``final`` mode (nothing moves).
        """
        on_wall = np.flatnonzero((self._cell[:self.count] >= 0) & self._movable[:self.count])
        if self.final:
            on_wall = on_wall[:0]
        cells = np.sort(np.concatenate((self._cell[on_wall], self.free)))
        return on_wall, cells, self.vectors(on_wall)

    def compute_optimum(self, photos: np.ndarray, cells: np.ndarray,
                        vectors: Vectors) -> dict[int, int]:
        """The moves that make the arrangement of ``photos`` over ``cells`` optimal.

        ``{photo: new cell}`` for the photos whose cell changes (no state
        changes: may run without the lock; see :meth:`optimum_input`).

        Parameters
        ----------
        photos, cells, vectors
            As :meth:`optimum_input` gives them: the movable photos on the
            wall, the cells they may take (theirs and the free ones), and
            the photos' vectors.

        Returns
        -------
        dict of int to int
        """
        if not len(photos):
            return {}
        best = cells[optimal_cells(self.costs.costs(vectors, cells))]
        now = self._cell[photos]
        return {int(photo): int(cell) for photo, cell, was in zip(photos, best, now, strict=True)
                if cell != was}

    def optimum(self) -> dict[int, int]:
        """The moves that make the movable photos' arrangement optimal: ``{photo: new cell}``.

        The movable photos on the wall are assigned at least total cost over
        their own cells and the free ones; photos that cannot move keep
        their cells. Empty in ``final`` mode.
        """
        return self.compute_optimum(*self.optimum_input())

    def objective(self, numbers: np.ndarray | None = None) -> int:
        """Summed cost of the photos on the wall (or of ``numbers``, all placed).

        Parameters
        ----------
        numbers : numpy.ndarray, optional
            Photo numbers, each on the wall (default: every photo on it).

        Returns
        -------
        int
        """
        placed = (np.flatnonzero(self._cell[:self.count] >= 0) if numbers is None
                  else np.asarray(numbers, np.int64))
        if not len(placed):
            return 0
        return int(self.costs.pair_costs(self.vectors(placed), self._cell[placed]).sum())

    def apply(self, moves: dict[int, int]) -> None:
        """Carry out ``moves`` (from :meth:`optimum`): every photo off first, then on.

        Off first, so that photos may swap cells.

        Parameters
        ----------
        moves : dict of int to int
            The new cell of each photo to move, by the photo's number.
        """
        for photo in moves:
            self.take_off(photo)
        for photo, cell in moves.items():
            self.put(photo, cell)
