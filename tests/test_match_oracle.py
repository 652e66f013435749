"""Whole makes against brute force: picks, limits, certificates, distances and refusals.

Small seeded cases (2-40 cells, 1-60 tiles made with NumPy, hostile kinds included:
black, white, equal tiles, flat colours) go through :func:`mosaicist.make_mosaic` with
a library held in memory, across presets, limits, tint, contrast, chroma, transforms,
metrics, shapes and both searches. Each result is checked against an oracle that takes
no shortcut: every cell-tile distance from the documented formula, the capped optimum
by :func:`scipy.optimize.linear_sum_assignment` on replicated columns, and, for tiny
grids, every placement.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from mosaicist import make_mosaic
from mosaicist.aspect import height_for, parse_aspect
from mosaicist.colour import chroma_projection, encoded_unit
from mosaicist.errors import MosaicistError, OptionError
from mosaicist.library import TileLibrary
from mosaicist.match import MatchRequest, _capped, check_feasible, tile_capacity
from mosaicist.options import MosaicOptions
from mosaicist.sources import open_source
from mosaicist.transforms import apply_transform

KINDS = ("random", "random", "black", "white", "equal", "flat", "few", "duplicates")


def _library(root: Path, tiles: np.ndarray, aspect: str) -> TileLibrary:
    """A library of ``tiles`` (``(M, h, w, 3)``), as an index would open it."""
    (root / "photos").mkdir(parents=True)
    (root / "index").mkdir()
    source = open_source(str(root / "photos"), root / "cache")
    ids = [f"t{index:04d}.png" for index in range(len(tiles))]
    return TileLibrary(source, tiles.shape[2], root / "index", ids, tiles, generation=1,
                       aspect=MosaicOptions(aspect=aspect).aspect_ratio)


def _images(rng, kind: str, count: int, height: int, width: int) -> np.ndarray:
    shape = (count, height, width, 3)
    if kind == "black":
        return np.zeros(shape, np.uint8)
    if kind == "white":
        return np.full(shape, 255, np.uint8)
    if kind == "equal":
        return np.broadcast_to(rng.integers(0, 256, shape[1:], dtype=np.uint8), shape).copy()
    if kind == "flat":
        colours = rng.integers(0, 256, (count, 1, 1, 3), dtype=np.uint8)
        return np.broadcast_to(colours, shape).copy()
    if kind == "few":
        return rng.choice(np.array([0, 128, 255], np.uint8), shape)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    if kind == "duplicates" and count > 1:
        images[rng.integers(0, count, count)] = images[rng.integers(0, count, count)]
    return images


def _exact_units(cells: np.ndarray, candidates: np.ndarray, tint: float) -> np.ndarray:
    """``(N, V)`` every pair's tinted distance times ``10,000 P^2``, in whole numbers.

    ``P`` pixels a tile; the tile is drawn as ``t + a (mean(c) - mean(t))`` with the
    tint ``a`` in hundredths, so ``100 P`` times each difference is a whole number.
    Exact: ties are ties.
    """
    cell = cells.astype(np.int64)
    tile = candidates.astype(np.int64)
    pixels = cell.shape[1]
    hundredths = round(tint * 100)
    shift = hundredths * (cell.sum(axis=1)[:, None, None, :] - tile.sum(axis=1)[None, :, None, :])
    difference = 100 * pixels * (cell[:, None] - tile[None]) - shift
    return (difference**2).sum(axis=(2, 3))


def _capped_optimum(full: np.ndarray, cap: int, minimum: int) -> float:
    """Least total with at most ``cap`` and at least ``minimum`` cells a tile, densely."""
    count, tiles = full.shape
    cap = min(cap, count)
    cost = np.repeat(full, cap, axis=1).reshape(count, tiles, cap)
    # The first ``minimum`` copies of each tile so cheap that every optimum fills them.
    cost[:, :, :minimum] -= float(np.abs(full).max()) * count * 4 + 1
    rows, cols = linear_sum_assignment(cost.reshape(count, tiles * cap))
    assert len(rows) == count
    return float(full[rows, cols // cap].sum())


def _drawn_distance(cell: np.ndarray, tile: np.ndarray, metric: str, gain, shift, chroma
                    ) -> float:
    """A pick's distance as drawn from its placement's gain, shift and chroma factor."""
    cell, tile = cell.astype(np.float64), tile.astype(np.float64)
    mean = tile.mean(axis=0)
    deviation = tile - mean
    if gain is not None:
        deviation = deviation * gain
    if chroma is not None:
        deviation = deviation - (1 - chroma) * deviation @ chroma_projection(metric).T
    drawn = mean + deviation + (0.0 if shift is None else shift)
    return float(((cell - drawn) ** 2).sum())


def _placements_exist(rows: int, cols: int, tiles: int, max_uses, spacing: int,
                      minimum: int) -> bool:
    """Whether any placement keeps the limits: every one tried."""
    count = rows * cols
    r, c = np.divmod(np.arange(count), cols)
    near = [(a, b) for a, b in itertools.combinations(range(count), 2)
            if max(abs(r[a] - r[b]), abs(c[a] - c[b])) < spacing]
    for placement in itertools.product(range(tiles), repeat=count):
        uses = np.bincount(placement, minlength=tiles)
        if (max_uses is None or uses.max() <= max_uses) and uses.min() >= minimum and all(
                placement[a] != placement[b] for a, b in near):
            return True
    return False


def _settings(rng, tile_count: int) -> tuple[str, dict]:
    preset = str(rng.choice(["seed", "seed", "balanced", "varied"]))
    cell = int(rng.integers(1, 4))
    tile_px = cell * int(rng.choice([1, 1, 2, 3])) if rng.random() < 0.8 else int(
        rng.integers(1, 7))
    settings: dict = {"cell_px": cell, "tile_px": tile_px, "compute_metrics": False,
                      "aspect": str(rng.choice(["1:1"] * 6 + ["3:2", "2:3", "4:3"]))}
    if preset != "seed":
        settings["crop"] = "centre"  # the subject crop needs the photos' files
        # Identical tiles (black, white, equal, duplicates) kept as photos of their own
        # for ties under the limits, or dropped as the presets drop them.
        settings["identical_photos"] = "drop" if tile_count % 2 else "keep"
    draw = rng.random
    if draw() < 0.5:
        settings["max_uses"] = int(rng.integers(1, 4))
    if draw() < 0.2:
        settings["min_uses"] = int(rng.integers(1, 3))
        settings["max_uses"] = max(settings.get("max_uses", 0), settings["min_uses"])
    if draw() < 0.4:
        settings["min_spacing"] = int(rng.integers(0, 5))
    if draw() < 0.4:
        settings["tint"] = float(rng.choice([0.25, 0.5, 1.0]))
    if draw() < 0.2:
        settings["contrast"] = float(rng.choice([0.5, 1.0]))
    if draw() < 0.2:
        settings["chroma"] = float(rng.choice([0.5, 1.0]))
    if draw() < 0.1:
        settings["tint_max"] = float(rng.choice([0.5, 1.0]))
        settings["tint"] = min(settings.get("tint", 0.0), settings["tint_max"])
    if draw() < 0.3:
        settings["augment"] = str(rng.choice(["flips", "rotations", "all"]))
    if draw() < 0.2:
        settings["metric"] = str(rng.choice(["lab", "oklab"]))
    if draw() < 0.15:
        settings["limit"] = int(rng.integers(1, tile_count + 2))
    if draw() < 0.15:
        settings["assign"] = "greedy"
    limits_or_colour = ("max_uses", "min_uses", "min_spacing", "tint", "tint_max", "contrast")
    if draw() < 0.15 and not any(name in settings for name in limits_or_colour):
        settings["search"] = "approximate"
    return preset, settings


def _grid(rng) -> tuple[int, int]:
    shape = rng.random()
    if shape < 0.15:
        return 1, int(rng.integers(2, 12))
    if shape < 0.3:
        return int(rng.integers(2, 12)), 1
    rows, cols = (int(side) for side in rng.integers(1, 7, 2))
    return rows, max(cols, 3 - rows)


def _kept_tiles(library: TileLibrary, preset: str, settings: dict) -> int:
    """The tiles a make with these settings matches: without identical ones if it drops them."""
    try:
        options = MosaicOptions(preset=preset, **settings)
    except MosaicistError:
        return len(library)
    return len(library.without_copies(options.dedupe, options.identical_photos))


def _check_case(root: Path, rng, case: int, determinism: bool) -> str:
    """One make against the oracle; returns what was checked (or why it was refused)."""
    rows, cols = _grid(rng)
    tile_count = int(rng.choice([1, 2, 3, 5, 8, 13, 30, 60]))
    tile_kind, cell_kind = str(rng.choice(KINDS)), str(rng.choice(KINDS))
    preset, settings = _settings(rng, tile_count)
    aspect = parse_aspect(settings["aspect"])
    cell, tile_px = settings["cell_px"], settings["tile_px"]
    cell_height = height_for(cell, aspect)
    tiles = _images(rng, tile_kind, tile_count, height_for(tile_px, aspect), tile_px)
    target = _images(rng, cell_kind, 1, rows * cell_height + int(rng.integers(0, cell_height)),
                     cols * cell + int(rng.integers(0, cell)))[0]
    label = (case, rows, cols, tile_count, tile_kind, cell_kind, preset, settings)
    folder = root / f"case{case}"
    library = _library(folder, tiles, settings["aspect"])
    try:
        mosaic = make_mosaic(target, library, preset=preset, cache_dir=folder / "cache",
                             **settings)
    except MosaicistError as error:
        # Refused only where no placement keeps the limits given (a preset's bend), with
        # the tiles the make keeps (identical ones left out where the settings say so).
        kept = _kept_tiles(library, preset, settings)
        count, usable = rows * cols, min(kept, settings.get("limit", kept))
        if "search" not in settings and usable**count <= 20_000:
            assert not _placements_exist(
                rows, cols, usable, settings.get("max_uses"), settings.get("min_spacing", 0),
                settings.get("min_uses", 0)), (label, str(error))
        return "refused"
    options, placements, grid = mosaic.options, mosaic.placements, mosaic.grid
    request = MatchRequest(grid, mosaic.library, options)
    geometry, count = request.geometry, len(grid)
    factor = geometry.factor
    cells = request.cell_vectors.repeat(factor, axis=1).repeat(factor, axis=2).reshape(
        count, -1, 3)
    candidates = np.asarray(request.candidates).reshape(len(request.candidates), -1, 3)
    variants, tile_total = request.variants, len(request.library)
    units = _exact_units(cells, candidates, options.tint)
    every = units / (10_000 * geometry.pixels**2)  # the objective's units
    full = every.reshape(count, tile_total, variants).min(axis=2)
    picked = placements.tile * variants + np.array(
        [list(request.transforms).index(code) for code in placements.transform])
    cell_ids = np.arange(count)

    # Every limit kept (the preset's as fitted to the library).
    uses = np.bincount(placements.tile, minlength=tile_total)
    assert options.max_uses is None or uses.max() <= options.max_uses, label
    assert uses.min() >= options.min_uses, label
    row, col = np.divmod(cell_ids, grid.cols)
    for a, b in itertools.combinations(range(count), 2):
        if placements.tile[a] == placements.tile[b]:
            assert max(abs(row[a] - row[b]), abs(col[a] - col[b])) >= options.min_spacing, label

    # Each distance is the pick's as drawn (gain, tint shift and chroma of its placement).
    for cell in range(count):
        shift = None if placements.tint is None else (
            placements.tint[cell] / encoded_unit(options.metric))
        drawn = _drawn_distance(
            cells[cell], candidates[picked[cell]], options.metric,
            None if placements.gain is None else placements.gain[cell], shift,
            None if placements.chroma is None else placements.chroma[cell])
        assert placements.distance[cell] == pytest.approx(drawn, rel=1e-9, abs=1e-6), label

    plain = not options.contrast and not options.chroma and options.tint_max is None
    if plain:
        # The tinted objective, each pick at its tile's best transform.
        np.testing.assert_allclose(placements.distance, every[cell_ids, picked], rtol=1e-12,
                                   atol=1e-9, err_msg=str(label))
        np.testing.assert_allclose(every[cell_ids, picked], full[cell_ids, placements.tile],
                                   rtol=1e-12, atol=1e-9, err_msg=str(label))
    limited = options.repetition_limited
    if plain and not limited:
        best = np.argmin(units, axis=1)  # ties: the lowest position (tile, then transform)
        if options.search == "exact":
            assert np.array_equal(picked, best), label
        else:
            assert np.array_equal(units[cell_ids, picked], units[cell_ids, best]), label
    if tile_px == geometry.match_px and options.metric == "seed" and plain and not options.tint:
        # The picture holds each placed tile, transformed, where its cell is.
        height, width = geometry.match_shape
        tiles_held = np.asarray(mosaic.library.tiles)
        image = mosaic.image
        for cell in range(count):
            y, x = divmod(cell, grid.cols)
            drawn_tile = apply_transform(tiles_held[placements.tile[cell]][None],
                                         int(placements.transform[cell]))[0]
            assert np.array_equal(
                image[y * height:(y + 1) * height, x * width:(x + 1) * width], drawn_tile), label

    assignment = mosaic.assignment
    if limited:
        assert assignment is not None, label
        cap = tile_capacity(grid.rows, grid.cols, options.max_uses, options.min_spacing) or count
        optimum = _capped_optimum(full, cap, options.min_uses)
        tolerance = 1e-9 * max(1.0, abs(optimum))
        # The bound is proven: never above the optimum, nor the objective above it.
        assert assignment.lower_bound <= optimum + tolerance, label
        assert assignment.lower_bound <= assignment.objective + tolerance, label
        if plain:
            assert assignment.objective == pytest.approx(placements.distance.sum(),
                                                         rel=1e-9, abs=1e-6), label
        if assignment.certified:
            assert assignment.lower_bound == pytest.approx(optimum, rel=1e-9, abs=1e-6), label
            if options.min_spacing <= 1:
                assert assignment.objective == pytest.approx(optimum, rel=1e-9, abs=1e-6), label
        if assignment.gap == 0:
            assert assignment.objective == pytest.approx(assignment.lower_bound, rel=1e-9,
                                                         abs=1e-6), label
    if determinism:
        again = make_mosaic(target, library, preset=preset, cache_dir=folder / "cache",
                            **settings)
        assert np.array_equal(again.placements.tile, placements.tile), label
        assert np.array_equal(again.placements.transform, placements.transform), label
        np.testing.assert_array_equal(again.placements.distance, placements.distance)
    return "certified" if assignment is not None and assignment.certified else "placed"


#: Ways the capped matcher solves, as module settings: every pair listed (a small library),
#: short lists grown by pricing rounds, warm lists, the auction over every pair.
PATHS = {
    "dense": {},
    "lists": {"DENSE_TILES": 0, "AUCTION_TILES": 0, "FIRST_CANDIDATES": 2,
              "FULL_FIRST_CANDIDATES": 1, "WARM_CANDIDATES": 2},
    "warm": {"DENSE_TILES": 0, "AUCTION_TILES": 0, "WARM_LOAD": 0.0, "FIRST_CANDIDATES": 3,
             "FULL_FIRST_CANDIDATES": 1, "WARM_CANDIDATES": 3},
    "auction": {"DENSE_TILES": 0, "AUCTION_COPIES": 1, "AUCTION_LISTS": 2},
}


#: Cases per test, and tests per path (about 20 ms a case).
CASES = 30
CHUNKS = {"dense": 10, "lists": 4, "warm": 3, "auction": 3}


@pytest.mark.parametrize(("path", "chunk"),
                         [(path, chunk) for path, count in CHUNKS.items()
                          for chunk in range(count)])
def test_makes_against_brute_force(tmp_path, monkeypatch, path, chunk):
    for name, value in PATHS[path].items():
        monkeypatch.setattr(_capped, name, value)
    rng = np.random.default_rng([len(path), chunk])
    outcomes = [_check_case(tmp_path, rng, case, determinism=case % 4 == 0)
                for case in range(CASES)]
    # The cases reach what they are for: places, certificates and refusals.
    assert outcomes.count("certified") >= 3 and outcomes.count("refused") <= CASES // 2, outcomes


# --- refusals --------------------------------------------------------------------------------

def test_cells_without_a_cell_far_enough_need_a_tile_each(tmp_path, monkeypatch):
    """6 x 6 cells at spacing 4: the 4 in the middle have no cell 4 away, so each takes a
    tile of its own. At 2 uses a tile that is 4 + 32 / 2 = 20 tiles, not 36 / 2 = 18: 19
    were refused only after 20 s of spacing rounds and an exact search, as a failure of
    the rounds ("no placement ... in 54 spacing rounds or greedily")."""
    with pytest.raises(OptionError, match="need at least 20 tiles under min_spacing 4, but "
                       "the library has 19: the 4 cells in the middle of the 6x6 grid") as error:
        check_feasible(36, 19, 2, 6, 6, 4)
    assert set(error.value.parameters) == {"min_spacing"} and "\n" not in str(error.value)
    check_feasible(36, 20, 2, 6, 6, 4)
    # Through a make: refused before any matching.
    rng = np.random.default_rng(3)
    library = _library(tmp_path, _images(rng, "random", 19, 2, 2), "1:1")
    monkeypatch.setattr(_capped, "assign_tiles", None)  # any matching would fail here
    with pytest.raises(OptionError, match="the 4 cells in the middle of the 6x6 grid"):
        make_mosaic(_images(rng, "random", 1, 12, 12)[0], library, preset="seed", cell_px=2,
                    tile_px=2, max_uses=2, min_spacing=4, cache_dir=tmp_path / "cache")


def test_a_minimum_of_uses_cannot_fill_a_cell_with_no_cell_far_enough(tmp_path):
    """The middle of 5 x 5 cells is 2 from every other: at spacing 3 its tile fills it
    alone, so no 10 tiles fill 2 cells each. That was refused only after the spacing
    rounds, as "no placement keeps equal tiles min_spacing 3 cells apart in 14 spacing
    rounds or greedily; add tiles or relax the limits": more tiles only need more cells."""
    message = ("min_uses 2 cannot be met: 1 of the 10 tiles cannot each fill 2 cells under "
               "min_spacing 3; lower min_uses or relax min_spacing")
    with pytest.raises(MosaicistError) as error:
        check_feasible(25, 10, 4, 5, 5, 3, 2)
    assert str(error.value) == message and set(error.value.parameters) == {
        "min_uses", "min_spacing"}
    check_feasible(25, 10, None, 5, 5, 3, 1)
    check_feasible(25, 10, None, 5, 5, 2, 2)  # 5 x 5 cells have none without a cell 2 away
    rng = np.random.default_rng(4)
    library = _library(tmp_path, _images(rng, "random", 10, 2, 2), "1:1")
    with pytest.raises(MosaicistError) as error:
        make_mosaic(_images(rng, "random", 1, 10, 10)[0], library, preset="seed", cell_px=2,
                    tile_px=2, min_uses=2, min_spacing=3, cache_dir=tmp_path / "cache")
    assert str(error.value) == message


def test_refusals_before_the_work_are_only_where_no_placement_exists():
    """Every count :func:`check_feasible` refuses on grids of up to 8 cells (spacing
    included, cells in the middle of narrow grids too) has no placement at all."""
    refused = 0
    for rows, cols in [(1, 2), (1, 4), (2, 2), (2, 3), (1, 7), (2, 4), (3, 3)]:
        count = rows * cols
        for spacing, max_uses, minimum in itertools.product(range(0, 4), (None, 1, 2, 3),
                                                            (0, 1, 2)):
            for tiles in range(1, 5):
                if tiles**count > 5_000:
                    continue
                try:
                    check_feasible(count, tiles, max_uses, rows, cols, spacing, minimum)
                except MosaicistError:
                    refused += 1
                    assert not _placements_exist(rows, cols, tiles, max_uses, spacing,
                                                 minimum), (rows, cols, spacing, max_uses,
                                                            minimum, tiles)
    assert refused > 100
