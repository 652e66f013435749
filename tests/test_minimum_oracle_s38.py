"""An oracle sweep of the certified pricing rounds with a minimum of uses.

The pricing rounds with ``min_uses`` repair the last optimum (a surcharge past each
tile's minimum, a convex arc to the sink) and raise placed cells' outside columns
with those of cells left outside (commit 9c1e1e2). Neither may change the certified
optimum: seeded random grids, tiles, caps and minimums, against a dense reference
that knows nothing of lists, prices or repairs.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from test_assign import DenseSearch, full_distances, top_k

from mosaicist.errors import MosaicistError
from mosaicist.match import _assign, _flow, assign_tiles, check_feasible
from mosaicist.match._assign import ShortLists


def dense_minimum_optimum(full: np.ndarray, min_uses: int, max_uses: int) -> int:
    """The least summed distance with each tile used by ``min_uses`` to ``max_uses`` cells.

    Each tile is expanded to ``min_uses`` compulsory columns and ``max_uses - min_uses``
    optional ones. Dummy rows, one per column the cells leave empty, may take only
    optional columns at no cost, so the square assignment fills every compulsory
    column with a cell: exact in integers, with no large penalty to outweigh the
    distances.

    Parameters
    ----------
    full : numpy.ndarray
        ``(N, T)`` integer distances of every cell to every tile.
    min_uses, max_uses : int
        Fewest and most cells of each tile (``T * min_uses <= N <= T * max_uses``).

    Returns
    -------
    int
        The optimum of the capped assignment with that minimum.
    """
    count, tiles = full.shape
    assert tiles * min_uses <= count <= tiles * max_uses
    compulsory = np.tile(np.arange(max_uses) < min_uses, tiles)
    cost = np.repeat(full.astype(np.float64), max_uses, axis=1)
    dummies = tiles * max_uses - count
    dummy = np.where(compulsory, np.inf, 0.0)[None, :].repeat(dummies, axis=0)
    rows, columns = linear_sum_assignment(np.concatenate([cost, dummy]))
    cells = rows < count
    tile = columns[cells] // max_uses
    uses = np.bincount(tile, minlength=tiles)
    assert (min_uses <= uses).all() and (uses <= max_uses).all()
    return int(full[rows[cells], tile].sum())


def brute_minimum_optimum(full: np.ndarray, min_uses: int, max_uses: int) -> int:
    """The same optimum by trying every placement (tiny cases only)."""
    count, tiles = full.shape
    best = None
    for placement in itertools.product(range(tiles), repeat=count):
        uses = np.bincount(placement, minlength=tiles)
        if (uses < min_uses).any() or (uses > max_uses).any():
            continue
        total = int(full[np.arange(count), list(placement)].sum())
        best = total if best is None else min(best, total)
    assert best is not None
    return best


@pytest.mark.parametrize("seed", range(12))
def test_the_dense_reference_is_the_brute_force_optimum(seed: int) -> None:
    """Reference against every placement of 6 cells on 3 tiles (and 7 on 2)."""
    rng = np.random.default_rng(seed)
    for cells, tiles in [(6, 3), (7, 2)]:
        full = full_distances(rng, cells, tiles, clusters=None if seed % 2 else 2)
        for min_uses in range(cells // tiles + 1):
            for max_uses in range(max(min_uses, 1, -(-cells // tiles)), cells + 1):
                assert (dense_minimum_optimum(full, min_uses, max_uses)
                        == brute_minimum_optimum(full, min_uses, max_uses))


@dataclass
class Case:
    """One assignment: its grid, library, limits and lists."""

    rows: int
    cols: int
    tiles: int
    max_uses: int
    min_uses: int
    listed: int
    min_spacing: int
    clusters: int | None

    @property
    def cells(self) -> int:
        """Cells of the grid."""
        return self.rows * self.cols

    @property
    def feasible(self) -> bool:
        """Whether the caps and the minimum can both be met (no spacing)."""
        return self.tiles * self.min_uses <= self.cells <= self.tiles * self.max_uses


def random_case(seed: int) -> Case:
    """A seeded case: crowded (cells near the caps' room) or loose, about a third infeasible."""
    rng = np.random.default_rng(seed)
    rows, cols = int(rng.integers(4, 16)), int(rng.integers(5, 21))
    cells = rows * cols
    max_uses = int(rng.integers(1, 7))
    min_uses = int(rng.integers(0, min(max_uses, 3) + 1))
    # Tiles between those the caps need and those the minimum allows, within 5..150.
    fewest = -(-cells // max_uses)
    most = cells // min_uses if min_uses else 150
    kind = rng.integers(0, 6)
    if kind == 0:
        tiles = fewest - int(rng.integers(1, 4))  # too few for the caps
    elif kind == 1 and min_uses:
        tiles = most + int(rng.integers(1, 4))  # too many for the minimum
    elif kind in (2, 3):
        tiles = fewest + int(rng.integers(0, 3))  # crowded
    else:
        tiles = int(rng.integers(fewest, max(fewest, most) + 1))
    tiles = int(np.clip(tiles, 5, 150))
    return Case(rows, cols, tiles, max_uses, min_uses, listed=int(rng.integers(1, 9)),
                min_spacing=int(rng.integers(0, 2)),
                clusters=None if rng.random() < 0.5 else int(rng.integers(2, 6)))


def case_distances(case: Case, seed: int) -> np.ndarray:
    """The case's ``(cells, tiles)`` distances."""
    rng = np.random.default_rng(seed + 1_000_000)
    return full_distances(rng, case.cells, case.tiles, clusters=case.clusters)


def check_certified(case: Case, full: np.ndarray) -> _assign.Assignment | None:
    """The case's assignment against the dense reference, every limit checked apart.

    Returns the assignment (None where the limits cannot be met, as expected).
    """
    candidates, distances = top_k(full, case.listed)

    def assign() -> _assign.Assignment:
        return assign_tiles(candidates, distances, case.rows, case.cols,
                            max_uses=case.max_uses, min_spacing=case.min_spacing,
                            search=DenseSearch(full), min_uses=case.min_uses,
                            tile_count=case.tiles)

    limits = (case.cells, case.tiles, case.max_uses, case.rows, case.cols, case.min_spacing,
              case.min_uses)
    if not case.feasible:
        # The callers' count check says so before any work; the assignment raises too
        # (too few tiles for the caps, or ``ShortLists`` for a minimum the grid lacks).
        with pytest.raises(MosaicistError):
            check_feasible(*limits)
        with pytest.raises(MosaicistError):
            assign()
        return None
    check_feasible(*limits)
    result = assign()
    tile = np.asarray(result.tile)
    assert tile.shape == (case.cells,) and (tile >= 0).all() and (tile < case.tiles).all()
    uses = np.bincount(tile, minlength=case.tiles)
    assert (uses >= case.min_uses).all() and (uses <= case.max_uses).all()
    taken = full[np.arange(case.cells), tile]
    assert np.array_equal(result.distance, taken)
    assert result.objective == int(taken.sum())
    optimum = dense_minimum_optimum(full, case.min_uses, case.max_uses)
    assert result.certified, f"not certified after {result.pricing_rounds} rounds"
    assert result.lower_bound == result.objective == optimum
    assert result.gap == 0.0
    return result


def tight_case(seed: int) -> tuple[Case, np.ndarray]:
    """A harsher seeded case and its distances: minimums or caps with little slack.

    Tiles near ``cells / min_uses`` (few spare cells past the minimums) or near
    ``cells / max_uses`` (a crowd at the caps), lists of one or two tiles mostly,
    and distances with many ties, from one or two clusters, or large.
    """
    rng = np.random.default_rng(seed)
    rows, cols = int(rng.integers(4, 16)), int(rng.integers(5, 21))
    cells = rows * cols
    min_uses = int(rng.integers(1, 4))
    max_uses = int(rng.integers(min_uses, 7))
    if rng.random() < 0.5:
        tiles = cells // min_uses - int(rng.integers(0, 3))
    else:
        tiles = -(-cells // max_uses) + int(rng.integers(0, 3))
    tiles = int(np.clip(tiles, 5, 150))
    if tiles * min_uses > cells:
        tiles = cells // min_uses
    max_uses = max(max_uses, -(-cells // tiles))
    case = Case(rows, cols, tiles, max_uses, min_uses, listed=int(rng.choice([1, 1, 2, 3, 8])),
                min_spacing=int(rng.integers(0, 2)), clusters=None)
    style = int(rng.integers(0, 4))
    if style == 0:  # a handful of distinct colours: ties everywhere
        tile_features = rng.integers(0, 4, (tiles, 2))
        cell_features = rng.integers(0, 4, (cells, 2))
    elif style == 1:  # cells crowd on one or two colours, most tiles far from them
        tile_features = rng.integers(0, 60, (tiles, 3))
        centres = rng.integers(0, 60, (int(rng.integers(1, 3)), 3))
        cell_features = (centres[rng.integers(0, len(centres), cells)]
                         + rng.integers(-2, 3, (cells, 3)))
    elif style == 2:  # distances in the tens of billions
        tile_features = rng.integers(0, 10**5, (tiles, 3))
        cell_features = rng.integers(0, 10**5, (cells, 3))
    else:  # a few tiles far past every cell: their minimum outweighs the first surcharge
        tile_features = rng.integers(0, 40, (tiles, 3))
        far = rng.random(tiles) < 0.05
        tile_features[far] += rng.integers(300, 3000, (int(far.sum()), 1))
        cell_features = rng.integers(0, 40, (cells, 3))
    diff = cell_features[:, None, :] - tile_features[None, :, :]
    return case, (diff**2).sum(-1).astype(np.int64)


@pytest.fixture(params=["fresh", "repaired"])
def rounds_solve(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every sweep with the rounds' repairs (Numba's loops) and with fresh solves."""
    if request.param == "repaired" and not _flow.can_repair():
        pytest.skip("Numba is not installed")
    if request.param == "fresh":
        monkeypatch.setattr(_flow, "can_repair", lambda: False)
    return request.param


# Seeds of the sweep (``random_case``): feasible and not, each kind of crowding.
SWEEP_SEEDS = list(range(24))


@pytest.mark.parametrize("seed", SWEEP_SEEDS)
def test_certified_minimum_is_the_dense_optimum(seed: int, rounds_solve: str) -> None:
    case = random_case(seed)
    check_certified(case, case_distances(case, seed))


def check_short_of_rounds(case: Case, full: np.ndarray, rounds: int,
                          monkeypatch: pytest.MonkeyPatch) -> _assign.Assignment | None:
    """The case with ``rounds`` pricing rounds at most: a valid placement and bound.

    Returns None where the lists the rounds left cannot give every tile its minimum
    (:class:`ShortLists`: the caller then lists more cells, as ``assign_tiles`` says).
    """
    monkeypatch.setattr(_assign, "MAX_PRICING_ROUNDS", rounds)
    try:
        result = assign_tiles(*top_k(full, case.listed), case.rows, case.cols,
                              max_uses=case.max_uses, min_spacing=case.min_spacing,
                              search=DenseSearch(full), min_uses=case.min_uses,
                              tile_count=case.tiles)
    except ShortLists as short:
        assert case.min_uses and len(short.tiles)
        return None
    tile = np.asarray(result.tile)
    uses = np.bincount(tile, minlength=case.tiles)
    assert (uses >= case.min_uses).all() and (uses <= case.max_uses).all()
    taken = full[np.arange(case.cells), tile]
    assert np.array_equal(result.distance, taken)
    assert result.objective == int(taken.sum())
    optimum = dense_minimum_optimum(full, case.min_uses, case.max_uses)
    assert 0 <= result.lower_bound <= optimum <= result.objective
    # Short of the proof, the best the lists hold may still meet the bound.
    assert not result.certified or result.lower_bound == result.objective == optimum
    return result


# Sweep seeds proven in a few rounds (``min_uses`` 0 in the last two), whose lists
# short of them give every tile its minimum.
SHORT_SEEDS = [18, 21, 45, 47, 50, 118, 2, 31]


@pytest.mark.parametrize("seed", SHORT_SEEDS)
def test_out_of_rounds_the_bound_holds(seed: int, rounds_solve: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    case = random_case(seed)
    full = case_distances(case, seed)
    proven = check_certified(case, full)
    assert proven is not None and proven.pricing_rounds >= 2
    for rounds in sorted({0, 1, proven.pricing_rounds // 2, proven.pricing_rounds - 1}):
        # Uncertified, unless the best the lists hold meets the bound (checked there).
        unproven = check_short_of_rounds(case, full, rounds, monkeypatch)
        # Without a round, the first lists alone may leave a tile short.
        assert unproven is not None or rounds == 0


# Tight seeds (``tight_case``) whose proof took the most rounds in a sweep of 1,200:
# 12-21 rounds (more than 40 on 5 of them before 9c1e1e2), where few cells spare past
# the minimums or the caps.
TIGHT_SEEDS = [87, 93, 412, 998, 1045, 1062, 1091, 1139]


@pytest.mark.parametrize("seed", TIGHT_SEEDS)
def test_tight_minimum_is_the_dense_optimum(seed: int, rounds_solve: str) -> None:
    check_certified(*tight_case(seed))
