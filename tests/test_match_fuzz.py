"""Fuzzing the matchers' promises against brute-force oracles on many small seeded cases.

Each property draws tens to hundreds of small random cases (hostile data
included: equal, black, white, duplicate tiles, tiles one pixel apart, cells
equal to tiles, only 0 and 255) and compares the matcher with an oracle that
takes no shortcut: every cell-tile pair computed from the documented formula.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest

from mosaicist.grid import Geometry
from mosaicist.match import _exact, _features, compute_features, match_exact
from mosaicist.match import _kernels as kernels

UNSET = np.iinfo(np.int64).max
#: Times the cases of every property (set MOSAICIST_MATCH_FUZZ_ROUNDS to search longer).
ROUNDS = int(os.environ.get("MOSAICIST_MATCH_FUZZ_ROUNDS", "1"))


@pytest.fixture(params=["compiled", "numpy"])
def pair_loops(request, monkeypatch):
    """With the compiled pair loops (Numba, loaded at once) and with NumPy's."""
    if request.param == "compiled" and not kernels.numba_available():
        pytest.skip("Numba is not installed")
    monkeypatch.setattr(kernels, "USE_NUMBA", request.param == "compiled")
    return request.param


@pytest.fixture
def small_chunks(monkeypatch):
    """Small chunks, groups, samples and bound grids: every pass of the search on tiny cases."""
    monkeypatch.setattr(_exact, "TILE_CHUNK", 8)
    monkeypatch.setattr(_exact, "CELL_GROUP", 4)
    monkeypatch.setattr(_exact, "SEED_SAMPLE", 4)
    monkeypatch.setattr(_exact, "CELL_BLOCK", 8)
    monkeypatch.setattr(_exact, "COARSE_DIMENSIONS", 3)
    monkeypatch.setattr(_features, "BOUND_GRID", 4)


# --- hostile data ---------------------------------------------------------------------------

KINDS = ("random", "equal", "black", "white", "duplicates", "one-pixel", "cells-are-tiles",
         "extremes", "smooth", "few-levels")


def _images(rng, kind: str, count: int, height: int, width: int) -> np.ndarray:
    shape = (count, height, width, 3)
    if kind == "equal":
        return np.broadcast_to(rng.integers(0, 256, shape[1:], dtype=np.uint8), shape).copy()
    if kind == "black":
        return np.zeros(shape, np.uint8)
    if kind == "white":
        return np.full(shape, 255, np.uint8)
    if kind == "extremes":
        return (rng.integers(0, 2, shape) * 255).astype(np.uint8)
    if kind == "few-levels":
        return rng.choice(np.array([0, 1, 254, 255, 128], np.uint8), shape)
    if kind == "one-pixel":
        base = rng.integers(1, 255, shape[1:], dtype=np.uint8)
        out = np.broadcast_to(base, shape).copy()
        for index in range(count):
            y, x, c = rng.integers(0, height), rng.integers(0, width), rng.integers(0, 3)
            out[index, y, x, c] += rng.choice([-1, 1])
        return out
    if kind == "smooth":
        y, x = np.mgrid[0:height, 0:width]
        base = rng.uniform(0, 255, (count, 1, 1, 3))
        slope = rng.uniform(-60, 60, (count, 2, 1, 1, 3))
        images = base + slope[:, 0] * y[None, :, :, None] + slope[:, 1] * x[None, :, :, None]
        return np.clip(np.rint(images + rng.normal(0, 4, shape)), 0, 255).astype(np.uint8)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    if kind == "duplicates":
        images[rng.integers(0, count, count)] = images[rng.integers(0, count, count)]
    return images


def _geometry(rng) -> Geometry:
    """Square or not, block sums (a whole factor) or resampled cells."""
    if rng.random() < 0.6:
        cell_w, cell_h = (int(v) for v in rng.integers(1, 5, 2))
        if rng.random() < 0.4:
            cell_h = cell_w
        factor = int(rng.integers(1, 4))
        return Geometry(cell_w, cell_w * factor, cell_h, cell_h * factor)
    cell_w, cell_h = (int(v) for v in rng.integers(1, 7, 2))
    tile_w, tile_h = (int(v) for v in rng.integers(1, 9, 2))
    return Geometry(cell_w, tile_w, cell_h, tile_h)


def _case(rng):
    """A geometry, cells and tiles of random kinds, at sizes a brute force does in moments."""
    geometry = _geometry(rng)
    count = int(rng.choice([1, 1, 2, 5, 13, 30]))
    tile_count = int(rng.choice([1, 1, 2, 3, 7, 20, 45]))
    tile_kind = str(rng.choice(KINDS))
    cell_kind = str(rng.choice(KINDS))
    tiles = _images(rng, tile_kind, tile_count, geometry.match_height, geometry.match_px)
    cells = _images(rng, cell_kind if cell_kind != "cells-are-tiles" else "random", count,
                    geometry.cell_height, geometry.cell_px)
    vectors = geometry.cell_vectors(cells)
    if cell_kind == "cells-are-tiles" or tile_kind == "cells-are-tiles":
        # Some tiles are exactly some cells as compared (distance 0).
        upscaled = _upscaled(vectors, geometry)
        for index in rng.integers(0, tile_count, min(tile_count, count)):
            tiles[index] = upscaled[rng.integers(0, count)].reshape(tiles.shape[1:])
    return geometry, vectors, tiles, (tile_kind, cell_kind)


def _upscaled(vectors: np.ndarray, geometry: Geometry) -> np.ndarray:
    """``(N, n * 3)`` int64 compared cells at the tiles' size (the objective's definition)."""
    factor = geometry.factor
    upscaled = vectors.repeat(factor, axis=1).repeat(factor, axis=2)
    return upscaled.reshape(len(vectors), -1).astype(np.int64)


def _search_units(vectors, tiles, geometry, hundredths):
    """Every pair's objective in search units, straight from the pixels: ``(N, M)`` int64.

    ``D = |u - t|^2`` over the tile's pixels; tinted by ``A = p / 100``,
    ``D n 100^2 - (200 p - p^2) |sum(u) - sum(t)|^2`` (the tinted objective
    times ``n 100^2``, exactly).
    """
    cells = _upscaled(vectors, geometry)
    flat = tiles.reshape(len(tiles), -1).astype(np.int64)
    difference = cells[:, None, :] - flat[None, :, :]
    plain = (difference**2).sum(axis=2)
    if not hundredths:
        return plain
    pixels = geometry.pixels
    sums = difference.reshape(len(cells), len(tiles), pixels, 3).sum(axis=2)
    return plain * pixels * 10_000 - (200 * hundredths - hundredths**2) * (sums**2).sum(axis=2)


def _ranked(row: np.ndarray, among: np.ndarray) -> np.ndarray:
    """``among`` by ``row`` then position."""
    return among[np.lexsort((among, row[among]))]


# --- exact search ----------------------------------------------------------------------------

CASES = 120 * ROUNDS


@pytest.mark.usefixtures("small_chunks")
def test_exact_search_is_the_brute_force_nearest_and_k_best(pair_loops):
    rng = np.random.default_rng(20261205 + (pair_loops == "numpy"))
    checked = 0
    for case in range(CASES):
        geometry, vectors, tiles, kinds = _case(rng)
        hundredths = int(rng.choice([0, 0, 1, 33, 50, 99, 100]))
        tint = hundredths / 100
        k = int(rng.choice([1, 1, 2, 3, 8, 64]))
        features = compute_features(tiles, geometry)
        every = _search_units(vectors, tiles, geometry, hundredths)
        result = match_exact(vectors, tiles, geometry, features, k=k, tint=tint,
                             search_units=True)
        label = (case, geometry, kinds, hundredths, k, len(vectors), len(tiles))
        positions = np.arange(len(tiles))
        for cell in range(len(vectors)):
            expected = _ranked(every[cell], positions)
            assert result.tile[cell] == expected[0], label
            assert result.distance[cell] == every[cell, expected[0]], label
            if k > 1:
                width = min(k, len(tiles))
                # Lists as long as the library where it is shorter than k (one tile too).
                assert result.candidates.shape == (len(vectors), width), label
                assert result.candidates[cell].tolist() == expected[:width].tolist(), label
                assert result.candidate_distances[cell].tolist() == \
                    every[cell, expected[:width]].tolist(), label
        # The objective's units: the same picks, distances divided by the scale.
        plain = match_exact(vectors, tiles, geometry, features, k=k, tint=tint)
        assert np.array_equal(plain.tile, result.tile), label
        scale = geometry.pixels * 10_000 if hundredths else 1
        np.testing.assert_allclose(plain.distance, result.distance / scale, rtol=1e-12)
        checked += 1
    assert checked == CASES


@pytest.mark.usefixtures("small_chunks")
def test_exact_search_with_prices_limits_among_and_upper_is_the_brute_force(pair_loops):
    """As the assignment's pricing rounds call it: ``k`` least of distance plus price,
    below each cell's limit, among some tiles, from an ``upper`` hint that holds."""
    rng = np.random.default_rng(77 + (pair_loops == "numpy"))
    for case in range(CASES):
        geometry, vectors, tiles, kinds = _case(rng)
        hundredths = int(rng.choice([0, 0, 25, 100]))
        k = int(rng.choice([1, 2, 5]))
        features = compute_features(tiles, geometry)
        every = _search_units(vectors, tiles, geometry, hundredths)
        tile_count = len(tiles)
        price = np.where(rng.random(tile_count) < 0.5,
                         rng.integers(0, max(1, int(every.max()) // 3 + 1), tile_count), 0)
        price = price.astype(np.int64)
        total = every + price
        among = None
        searched = np.arange(tile_count)
        if rng.random() < 0.5:
            searched = np.unique(rng.integers(0, tile_count, int(rng.integers(1, tile_count + 1))))
            among = rng.permutation(searched)
        limit = None
        if rng.random() < 0.6:
            low, high = int(total.min()), int(total.max())
            limit = rng.integers(low, high + 2, len(vectors)).astype(np.int64)
            if rng.random() < 0.3:
                limit[:] = total[np.arange(len(vectors)), rng.integers(0, tile_count, len(vectors))]
        upper = None
        if among is None and rng.random() < 0.4 and tile_count >= k:
            # A true hint: the k-th best (or more).
            kth = np.sort(total, axis=1)[:, k - 1]
            upper = kth + rng.integers(0, 3, len(vectors)) * rng.integers(0, 50, len(vectors))
        result = match_exact(vectors, tiles, geometry, features, k=k, tint=hundredths / 100,
                             price=price, limit=limit, upper=upper, search_units=True,
                             among=among)
        found = result.candidates if k > 1 else result.tile[:, None]
        values = result.candidate_distances if k > 1 else result.distance[:, None]
        label = (case, geometry, kinds, hundredths, k, among is not None, limit is not None,
                 upper is not None)
        for cell in range(len(vectors)):
            ranked = _ranked(total[cell], searched)
            if limit is not None:
                ranked = ranked[total[cell, ranked] < limit[cell]]
            expected = ranked[:k]
            got = found[cell][found[cell] >= 0]
            assert got.tolist() == expected.tolist(), (label, cell)
            assert values[cell][:len(got)].tolist() == total[cell, expected].tolist(), label


@pytest.mark.parametrize("tint", [0.0, 0.5])
def test_k_best_of_a_library_of_one_tile_are_lists_of_one(tint):
    """Lists asked for (k > 1) come back as lists even when the library holds one tile:
    the contrast transfer reads them (a one-photo library with --contrast raised an
    AssertionError, a traceback)."""
    rng = np.random.default_rng(9)
    geometry = Geometry(2, 4)
    tiles = rng.integers(0, 256, (1, 4, 4, 3), dtype=np.uint8)
    vectors = geometry.cell_vectors(rng.integers(0, 256, (3, 2, 2, 3), dtype=np.uint8))
    every = _search_units(vectors, tiles, geometry, int(tint * 100))
    for search_units in (True, False):
        result = match_exact(vectors, tiles, geometry, k=16, tint=tint,
                             search_units=search_units)
        assert result.candidates is not None and result.candidates.shape == (3, 1)
        assert result.candidates[:, 0].tolist() == [0, 0, 0]
        scale = 1 if search_units or not tint else geometry.pixels * 10_000
        np.testing.assert_allclose(result.candidate_distances[:, 0], every[:, 0] / scale)
        assert result.tile.tolist() == [0, 0, 0]
    # Below its limit, or not at all.
    limited = match_exact(vectors, tiles, geometry, k=4, tint=tint, search_units=True,
                          limit=every[:, 0] + np.array([1, 0, 0]))
    assert limited.candidates.tolist() == [[0], [-1], [-1]]


def test_a_library_of_one_tile_with_contrast_makes_a_mosaic(tmp_path):
    from PIL import Image

    from mosaicist import make_mosaic

    rng = np.random.default_rng(4)
    folder = tmp_path / "tiles"
    folder.mkdir()
    Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / "t.png")
    target = tmp_path / "target.png"
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(target)
    mosaic = make_mosaic(target, folder, preset="seed", cell_px=8, tile_px=8, contrast=0.5,
                         tint=0.5, cache_dir=tmp_path / "c")
    assert mosaic.placements.tile.tolist() == [0, 0, 0, 0]


# --- through a match request: metric, augment, aspect, contrast ------------------------------

class _Source:
    name = "fuzz"


def _request(tmp_path, rng, case: int, *, tile_count: int, rows: int, cols: int,
             tile_kind: str = "random", cell_kind: str = "random", **settings):
    """A :class:`MatchRequest` over a library made in memory (its caches under ``tmp_path``)."""
    from mosaicist.aspect import height_for, parse_aspect
    from mosaicist.grid import make_grid
    from mosaicist.library import TileLibrary
    from mosaicist.match import MatchRequest
    from mosaicist.options import MosaicOptions

    options = MosaicOptions(preset="seed", **settings)
    aspect = parse_aspect(options.aspect) if isinstance(options.aspect, str) else options.aspect
    match_px = options.match_px
    match_height = height_for(match_px, aspect)
    tiles = _images(rng, tile_kind, tile_count, match_height, match_px)
    picture = _images(rng, cell_kind, 1, rows * options.cell_height, cols * options.cell_px)[0]
    directory = tmp_path / f"case{case}"
    directory.mkdir()
    library = TileLibrary(_Source(), match_px, directory, [f"t{i}" for i in range(tile_count)],
                          tiles, case, aspect=aspect)
    grid = make_grid(picture, options.cell_px, cell_height=options.cell_height)
    assert (grid.rows, grid.cols) == (rows, cols)
    return MatchRequest(grid, library, options), tiles


def _candidates_by_hand(request, tiles: np.ndarray) -> np.ndarray:
    """Candidate ``v``: tile ``v // k`` under transform ``v % k``, in the metric's encoding."""
    from mosaicist.colour import encode
    from mosaicist.transforms import apply_transform

    out = [encode(apply_transform(tile[None], code), request.options.metric)[0]
           for tile in tiles for code in request.transforms]
    return np.stack(out)


def _settings(rng) -> dict:
    cell = int(rng.integers(1, 5))
    return {"cell_px": cell, "tile_px": cell * int(rng.integers(1, 4)),
            "metric": str(rng.choice(["seed", "lab", "oklab"])),
            "augment": str(rng.choice(["none", "flips", "rotations", "all"])),
            "aspect": str(rng.choice(["1:1", "1:1", "3:2", "2:3", "4:3"]))}


def test_exact_matcher_picks_the_brute_force_candidate(tmp_path, pair_loops):
    from mosaicist.match import ExactMatcher

    rng = np.random.default_rng(404 + (pair_loops == "numpy"))
    for case in range(40 * ROUNDS):
        settings = _settings(rng)
        hundredths = int(rng.choice([0, 0, 40, 100]))
        request, tiles = _request(
            tmp_path, rng, case, tile_count=int(rng.choice([1, 2, 5, 12])),
            rows=int(rng.integers(1, 4)), cols=int(rng.integers(1, 4)),
            tile_kind=str(rng.choice(KINDS)), cell_kind=str(rng.choice(KINDS)),
            tint=hundredths / 100, **settings)
        candidates = _candidates_by_hand(request, tiles)
        assert np.array_equal(np.asarray(request.candidates), candidates), (case, settings)
        every = _search_units(request.cell_vectors, candidates, request.geometry, hundredths)
        result = ExactMatcher().match(request)
        scale = request.geometry.pixels * 10_000 if hundredths else 1
        for cell in range(len(request.grid)):
            best = _ranked(every[cell], np.arange(len(candidates)))[0]
            assert result.tile[cell] == best, (case, settings, hundredths, cell)
            assert result.distance[cell] == pytest.approx(every[cell, best] / scale, rel=1e-12)


def _transfer_by_hand(cell: np.ndarray, tile: np.ndarray, strength: float, tint: float,
                      metric: str) -> float:
    """The distance after the contrast transfer and the tint, from the module's formula."""
    from mosaicist.colour import grey_parts, lightness_axis
    from mosaicist.match._contrast import GAIN_LIMITS, ROOM

    u, t = cell.astype(np.float64), tile.astype(np.float64)
    cell_mean, tile_mean = u.mean(axis=0), t.mean(axis=0)
    cell_sigma = np.sqrt(((u - cell_mean) ** 2).mean(axis=0))
    tile_sigma = np.sqrt(((t - tile_mean) ** 2).mean(axis=0))
    ratio = np.where(tile_sigma > 0, cell_sigma / np.where(tile_sigma > 0, tile_sigma, 1), 1.0)
    gain = np.clip(ratio**strength, *GAIN_LIMITS)
    a = asked = round(tint * 100) / 100
    if strength:
        axis, low, high = lightness_axis(metric)
        mu, d, room = tile_mean @ axis, (cell_mean - tile_mean) @ axis, ROOM * (tile_sigma @ axis)
        left = high - room - mu if d > 0 else mu - low - room
        if d != 0 and left >= 0:
            a = min(a, np.floor(left / abs(d) * 100 + 1e-9) / 100)
    # Held back in lightness only: the mean's chroma moves by the tint asked for.
    difference = cell_mean - tile_mean
    grey, weights = grey_parts(metric)
    shift = a * difference + (asked - a) * (difference - (weights @ difference) * grey)
    drawn = tile_mean + gain * (t - tile_mean) + shift
    return float(((u - drawn) ** 2).sum())


def test_contrast_distances_are_the_documented_formula(tmp_path, pair_loops):
    from mosaicist.match import ExactMatcher
    from mosaicist.match._contrast import CANDIDATES

    rng = np.random.default_rng(505 + (pair_loops == "numpy"))
    for case in range(40 * ROUNDS):
        settings = _settings(rng)
        hundredths = int(rng.choice([0, 30, 100]))
        strength = float(rng.choice([0.25, 0.5, 1.0]))
        request, tiles = _request(
            tmp_path, rng, case, tile_count=int(rng.choice([1, 2, 6, 20])),
            rows=int(rng.integers(1, 3)), cols=int(rng.integers(1, 4)),
            tile_kind=str(rng.choice(KINDS)), cell_kind=str(rng.choice(KINDS)),
            tint=hundredths / 100, contrast=strength, **settings)
        candidates = _candidates_by_hand(request, tiles)
        geometry = request.geometry
        cells = _upscaled(request.cell_vectors, geometry).reshape(len(request.grid), -1, 3)
        every = _search_units(request.cell_vectors, candidates, geometry, hundredths)
        result = ExactMatcher().match(request)
        width = max(2, CANDIDATES * request.variants)
        label = (case, settings, hundredths, strength)
        for cell in range(len(request.grid)):
            listed = _ranked(every[cell], np.arange(len(candidates)))[:width]
            after = [_transfer_by_hand(cells[cell], candidates[v].reshape(-1, 3), strength,
                                       hundredths / 100, settings["metric"]) for v in listed]
            assert result.distance[cell] == pytest.approx(
                _transfer_by_hand(cells[cell], candidates[result.tile[cell]].reshape(-1, 3),
                                  strength, hundredths / 100, settings["metric"]),
                rel=1e-9, abs=1e-6), label
            assert result.tile[cell] in listed, label
            assert result.distance[cell] <= min(after) * (1 + 1e-9) + 1e-6, label


# --- capped assignment -----------------------------------------------------------------------

def _capped_optimum(full: np.ndarray, cap: int, minimum: int = 0) -> int:
    """The least total with at most ``cap`` and at least ``minimum`` cells a tile, densely.

    Every tile repeated ``cap`` times (``linear_sum_assignment``); the first
    ``minimum`` copies of each tile made so cheap that every optimum fills them.
    """
    from scipy.optimize import linear_sum_assignment

    count, tiles = full.shape
    cap = min(cap, count)
    cost = np.repeat(full.astype(np.float64), cap, axis=1)
    big = float(np.abs(full).max()) * count * 4 + 1
    if minimum:
        cost = cost.reshape(count, tiles, cap)
        cost[:, :, :minimum] -= big
        cost = cost.reshape(count, tiles * cap)
    rows, cols = linear_sum_assignment(cost)
    assert len(rows) == count
    return int(round(full[rows, cols // cap].astype(object).sum()))


def _check_limits(tile: np.ndarray, rows: int, cols: int, max_uses, min_spacing: int,
                  minimum: int, tile_count: int) -> None:
    uses = np.bincount(tile, minlength=tile_count)
    if max_uses is not None:
        assert uses.max() <= max_uses
    assert uses.min() >= minimum
    r, c = np.divmod(np.arange(rows * cols), cols)
    for a, b in itertools.combinations(range(rows * cols), 2):
        if tile[a] == tile[b]:
            assert max(abs(r[a] - r[b]), abs(c[a] - c[b])) >= min_spacing


@pytest.mark.parametrize("path", ["dense", "lists", "auction", "no-numba"])
def test_capped_matcher_is_the_dense_optimum_and_keeps_every_limit(tmp_path, path,
                                                                   monkeypatch):
    """Each way the matcher solves: every pair listed, lists grown by pricing rounds
    (short first lists, warm lists), the auction over every pair."""
    from mosaicist.errors import MosaicistError
    from mosaicist.match import CappedMatcher, _capped, _flow, check_feasible, tile_capacity

    if path != "dense":
        monkeypatch.setattr(_capped, "DENSE_TILES", 0)
    if path == "no-numba":
        # Every compiled loop refused: NumPy's pair loops, no auction, warm prices or repairs.
        from mosaicist.match import _auction, _warm

        monkeypatch.setattr(kernels, "USE_NUMBA", False)
        monkeypatch.setattr(_flow, "can_repair", lambda: False)
        monkeypatch.setattr(_flow, "_compiled_loop", lambda loop: None)
        monkeypatch.setattr(_auction, "_compiled_loop", lambda loop: None)
        monkeypatch.setattr(_warm, "_compiled_loop", lambda loop: None)
    if path in ("lists", "no-numba"):
        monkeypatch.setattr(_capped, "AUCTION_COPIES", 1)
        monkeypatch.setattr(_capped, "AUCTION_TILES", 0 if path == "lists" else 10**6)
        monkeypatch.setattr(_capped, "FIRST_CANDIDATES", 2)
        monkeypatch.setattr(_capped, "FULL_FIRST_CANDIDATES", 1)
        monkeypatch.setattr(_capped, "WARM_CANDIDATES", 2)
    if path == "auction":
        if not _flow.can_repair():
            pytest.skip("the auction needs the compiled loops")
        monkeypatch.setattr(_capped, "AUCTION_COPIES", 1)
        monkeypatch.setattr(_capped, "AUCTION_LISTS", 2)
    from conftest import record_results

    auctions = record_results(monkeypatch, _capped, "capped_auction")
    searches = record_results(monkeypatch, _capped.LibrarySearch, "below")
    rng = np.random.default_rng(606 + len(path))  # "dense" and "lists": the same cases
    solved = certified = refused = 0
    for case in range(120 * ROUNDS):
        settings = _settings(rng)
        rows, cols = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        count = rows * cols
        tile_count = int(rng.choice([1, 2, 3, 5, 9, 16]))
        max_uses = [None, 1, 2, 3, count][int(rng.integers(0, 5))]
        min_spacing = int(rng.choice([0, 1, 1, 2, 3]))
        minimum = int(rng.choice([0, 0, 0, 1, 2]))
        assign = str(rng.choice(["optimal", "optimal", "greedy"]))
        if minimum:
            assign = "optimal"
            if max_uses is not None:
                max_uses = max(max_uses, minimum)
        if max_uses is None and min_spacing <= 1 and not minimum:
            max_uses = 1
        if rng.random() < 0.25 and not minimum:
            # As many cells as the tiles' uses exactly.
            max_uses = int(rng.choice([d for d in range(1, count + 1) if count % d == 0]))
            tile_count = count // max_uses
        hundredths = int(rng.choice([0, 0, 50, 100]))
        request, tiles = _request(
            tmp_path, rng, case, tile_count=tile_count, rows=rows, cols=cols,
            tile_kind=str(rng.choice(KINDS)), cell_kind=str(rng.choice(KINDS)),
            tint=hundredths / 100, max_uses=max_uses, min_spacing=min_spacing,
            min_uses=minimum, assign=assign, **settings)
        label = (case, settings, rows, cols, tile_count, max_uses, min_spacing, minimum, assign,
                 hundredths)
        candidates = _candidates_by_hand(request, tiles)
        every = _search_units(request.cell_vectors, candidates, request.geometry, hundredths)
        variants = request.variants
        full = every.reshape(count, tile_count, variants).min(axis=2)
        try:
            check_feasible(count, tile_count, max_uses, rows, cols, min_spacing, minimum)
            result = CappedMatcher().match(request)
        except MosaicistError:
            refused += 1
            # Refused only where no placement exists: a tiny case is searched whole.
            if tile_count ** count <= 20_000:
                assert _every_placement_breaks(rows, cols, tile_count, max_uses, min_spacing,
                                               minimum), label
            continue
        solved += 1
        tile = result.tile // variants
        _check_limits(tile, rows, cols, max_uses, min_spacing, minimum, tile_count)
        scale = request.geometry.pixels * 10_000 if hundredths else 1
        # Each pick is its tile's best transform, at its exact distance.
        picked = every[np.arange(count), result.tile]
        assert np.array_equal(picked, full[np.arange(count), tile]), label
        np.testing.assert_allclose(result.distance, picked / scale, rtol=1e-12)
        assignment = result.assignment
        objective = int(picked.astype(object).sum())
        assert assignment.objective == pytest.approx(objective / scale, rel=1e-12), label
        cap = tile_capacity(rows, cols, max_uses, min_spacing) or count
        optimum = _capped_optimum(full, cap, minimum)
        assert assignment.lower_bound <= assignment.objective * (1 + 1e-12), label
        assert assignment.lower_bound * scale <= optimum * (1 + 1e-12) + 1e-6, label
        if assign == "optimal" and min_spacing <= 1:
            assert assignment.certified, label
        if assignment.certified:
            certified += 1
            assert assignment.lower_bound == pytest.approx(optimum / scale, rel=1e-12), label
            if min_spacing <= 1:
                assert objective == optimum and assignment.gap == 0.0, label
    print("capped", path, solved, certified, refused, len(auctions), len(searches))
    # The path named ran (or this tests another).
    if path == "auction":
        assert sum(found is not None for found in auctions) >= 10
    if path == "lists":
        assert len(searches) >= 10 and not auctions
    if path == "no-numba":
        assert len(searches) >= 10 and all(found is None for found in auctions)
    assert solved >= 50 * ROUNDS and certified >= 30 * ROUNDS, (solved, certified, refused)


def _every_placement_breaks(rows, cols, tile_count, max_uses, min_spacing, minimum) -> bool:
    count = rows * cols
    r, c = np.divmod(np.arange(count), cols)
    near = [(a, b) for a, b in itertools.combinations(range(count), 2)
            if max(abs(r[a] - r[b]), abs(c[a] - c[b])) < min_spacing]
    for placement in itertools.product(range(tile_count), repeat=count):
        uses = np.bincount(placement, minlength=tile_count)
        if max_uses is not None and uses.max() > max_uses or uses.min() < minimum:
            continue
        if all(placement[a] != placement[b] for a, b in near):
            return False
    return True


# --- approximate search ----------------------------------------------------------------------

@pytest.mark.parametrize(("structure", "use_faiss"),
                         [("lists", False), ("lists", True), ("graph", True)])
@pytest.mark.usefixtures("small_chunks")
def test_approximate_picks_are_exact_among_their_candidates(structure, use_faiss,
                                                             monkeypatch):
    """Every pick is the exact best (ties: lowest position) of the candidates the index
    gave its cell, at its true distance; where every tile is a candidate (all asked
    for, every list probed) the pick is the exact optimum."""
    from mosaicist.match import _approximate, match_approximate

    if use_faiss:
        pytest.importorskip("faiss")
    given = []
    rerank = _approximate._rerank

    def watched(block, cell_rows, cell_norm2, found, features, *rest):
        given.append(np.where(found >= 0, features.order[np.maximum(found, 0)], -1))
        return rerank(block, cell_rows, cell_norm2, found, features, *rest)

    monkeypatch.setattr(_approximate, "_rerank", watched)
    rng = np.random.default_rng(808 + len(structure) + use_faiss)
    whole = 0
    for case in range(60 * ROUNDS):
        geometry, vectors, tiles, kinds = _case(rng)
        every = _search_units(vectors, tiles, geometry, 0)
        features = compute_features(tiles, geometry)
        all_of_them = rng.random() < 0.6
        asked = len(tiles) if all_of_them else int(rng.integers(1, len(tiles) + 1))
        options = {"nprobe": 10_000} if structure == "lists" else {}
        given.clear()
        result = match_approximate(vectors, tiles, geometry, features, candidates=asked,
                                   use_faiss=use_faiss, structure=structure, **options)
        label = (case, geometry, kinds, asked, len(tiles))
        cells = np.arange(len(vectors))
        assert len(given) == 1, label  # one chunk of cells
        assert np.array_equal(result.distance, every[cells, result.tile]), label
        # The graph's walks take the cells from dark to bright, the lists in order.
        walked = (_approximate._brightness_order(vectors) if structure == "graph"
                  else cells)
        for row, cell in enumerate(walked):
            listed = np.unique(given[0][row][given[0][row] >= 0])
            if len(listed):
                assert result.tile[cell] == _ranked(every[cell], listed)[0], label
        if all_of_them and structure == "lists":
            whole += 1
            best = [_ranked(every[cell], np.arange(len(tiles)))[0] for cell in cells]
            assert result.tile.tolist() == best, label
    assert structure == "graph" or whole >= 20 * ROUNDS
