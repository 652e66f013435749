"""The warm prices' auction on alike cells (issue 10, session 39).

A line drawing at 30,000 cells with the default preset is 27,000 white cells,
all at one point of the warm prices' space. Each cell of the auction's sample
redrew its list against every object whenever the crowd's bids made it stale,
every few bids: 1,024 such cells among 5,000 objects took 140 s, and the make
did not leave the auction in minutes. A point's list is now drawn once for
all the cells at it.
"""

from __future__ import annotations

import numpy as np

from mosaicist.match import _warm


def _crowd(seed: int, alike: int, others: int, objects: int) -> tuple[np.ndarray, np.ndarray]:
    """``alike`` cells at one point and ``others`` elsewhere, integer coordinates (exact
    products, so that lists drawn one row or many at a time are the same)."""
    rng = np.random.default_rng(seed)
    cells = np.vstack([np.full((alike, 4), 3.0), rng.integers(-20, 21, (others, 4))])
    return rng.permutation(cells).astype(np.float64), rng.integers(-20, 21, (objects, 4)) * 1.0


def test_distinct_rows_and_where_each_row_is():
    points = np.array([[1.0, 2.0], [0.0, 5.0], [1.0, 2.0], [1.0, -2.0], [0.0, 5.0]])
    distinct, inverse = _warm._distinct_rows(points)
    assert len(distinct) == 3 == len({tuple(row) for row in points.tolist()})
    assert np.array_equal(distinct[inverse], points)


def test_alike_cells_are_drawn_once_with_the_same_prices(monkeypatch):
    """Lists drawn for each distinct point: the auction's prices and owners as when
    every cell drew its own, with a small share of the rows drawn."""
    cells, objects = _crowd(0, alike=300, others=60, objects=900)
    drawn_rows = []
    draw = _warm._draw

    def counting(select, points, *args, **kwargs):
        drawn_rows.append(len(points))
        return draw(select, points, *args, **kwargs)

    monkeypatch.setattr(_warm, "_draw", counting)
    price, owner = _warm.auction(cells, objects)
    once = sum(drawn_rows)

    drawn_rows.clear()
    # Every cell its own row, as before.
    monkeypatch.setattr(_warm, "_distinct_rows",
                        lambda points: (points, np.arange(len(points))))
    every_price, every_owner = _warm.auction(cells, objects)
    assert np.array_equal(price, every_price) and np.array_equal(owner, every_owner)
    assert once * 10 < sum(drawn_rows)
    # The auction's result: each cell its own object.
    assert len(np.unique(owner)) == len(cells) and (owner >= 0).all()
