"""The default look on extreme jobs (benchmarks/bench_extremes.py): found in session 33.

* The warm prices' auction redrew its lists with BLAS on every core: on two
  cores shared with other work each small product took 40 times as long
  (a flat white target, 2,000 photos: 40 s instead of 13 s).
"""

from __future__ import annotations

import numpy as np
import pytest


def test_the_warm_prices_auction_runs_on_one_blas_thread(monkeypatch):
    # The auction's many small redraws run inside one_blas_thread, as least_priced's do
    # (the c-transform's large products keep BLAS's threads).
    from contextlib import contextmanager

    from mosaicist.match import _warm

    if _warm._compiled_loop(_warm._transform_loop) is None:
        pytest.skip("the warm prices need Numba")
    inside = [0]
    limit = _warm.one_blas_thread

    @contextmanager
    def counted():
        with limit():
            inside[0] += 1
            try:
                yield
            finally:
                inside[0] -= 1

    seen: list[int] = []
    auction = _warm.auction

    def recorded(*arguments):
        seen.append(inside[0])
        return auction(*arguments)

    monkeypatch.setattr(_warm, "one_blas_thread", counted)
    monkeypatch.setattr(_warm, "auction", recorded)
    rng = np.random.default_rng(0)
    prices = _warm.warm_prices(rng.normal(size=(600, 8)), rng.normal(size=(400, 8)), cap=2)
    assert prices is not None and prices.shape == (400,)
    assert seen and all(seen), "the auction ran with BLAS on every core"
