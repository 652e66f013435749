"""Spacing rounds repaired from the last round's optimum instead of solved from scratch."""

from __future__ import annotations

import numpy as np
import pytest

from mosaicist.match import _assign
from mosaicist.match._assign import _solve, assign_tiles, spacing_violations

pytest.importorskip("numba")  # the repairs run compiled


def _objective(solver, choice: np.ndarray) -> int:
    """The total a spacing round minimises: distances, and the surcharge past a minimum."""
    edges = solver.edges
    total = int(edges.dist[choice].sum())
    if solver.minimum and solver.surcharge:
        uses = np.bincount(edges.tile[choice])
        total += solver.surcharge * int(np.maximum(uses - solver.minimum, 0).sum())
    return total


def _problem(rng):
    rows, cols = int(rng.integers(4, 13)), int(rng.integers(4, 13))
    count = rows * cols
    tiles = int(rng.integers(max(4, count // 8), count + 2))
    width = int(min(tiles, rng.integers(4, 24)))
    candidates = np.stack([rng.choice(tiles, width, replace=False) for _ in range(count)])
    # Alike cells (equal distances) as well as distinct ones: the ties of a flat target.
    scale = int(rng.choice([3, 1000]))
    distances = np.sort(rng.integers(0, scale, (count, width)), axis=1).astype(np.int64)
    return rows, cols, tiles, candidates, distances


def test_a_repaired_spacing_round_is_the_optimum_of_its_edges(monkeypatch):
    repaired = []
    original = _assign._Solver._repair_spaced

    def checked(self, allowed):
        choice = original(self, allowed)
        if choice is not None:
            solved = _solve(self.count, self.edges, allowed, self.cap, None, self.minimum,
                            surcharge=self.surcharge)
            assert (solved >= 0).all()
            assert _objective(self, choice) == _objective(self, solved)
            assert allowed[choice].all()
            repaired.append(choice)
        return choice

    monkeypatch.setattr(_assign._Solver, "_repair_spaced", checked)
    placed = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        rows, cols, tiles, candidates, distances = _problem(rng)
        spacing = int(rng.integers(2, 4))
        max_uses = int(rng.integers(2, 5))
        minimum = int(rng.random() < 0.3)
        try:
            result = assign_tiles(candidates, distances, rows, cols, max_uses=max_uses,
                                  min_spacing=spacing, min_uses=minimum, tile_count=tiles)
        except _assign.MosaicistError:
            continue  # too few listed tiles for these limits
        placed += 1
        uses = np.bincount(result.tile, minlength=tiles)
        assert uses.max() <= max_uses, seed
        assert not len(spacing_violations(result.tile, rows, cols, spacing)[0]), seed
    # The sweep reaches what it is for: placements, and rounds repaired.
    assert placed >= 60 and len(repaired) >= 30, (placed, len(repaired))
