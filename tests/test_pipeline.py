"""The whole pipeline through the Python API: metrics, transforms, tint, overlay, re-render."""

import functools
import io
import struct
import zlib

import numpy as np
import pytest
from conftest import make_colour_folder, noisy_target, record_results
from PIL import Image

from mosaicist import MosaicOptions, Placements
from mosaicist import make_mosaic as _make_mosaic
from mosaicist.colour import encode
from mosaicist.errors import MosaicistError, OptionError
from mosaicist.render import render_placements
from mosaicist.transforms import AUGMENT_SETS, apply_transform

# These tests check mechanisms on the seed's method (no caps, no tint unless given);
# the default preset is tested on its own (test_options, test_pipeline).
make_mosaic = functools.partial(_make_mosaic, preset="seed")


def smooth_folder(root, count=60, size=16, seed=0):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    for index in range(count):
        base = rng.uniform(0, 255, 3)
        gx, gy = rng.uniform(-150, 150, 3), rng.uniform(-150, 150, 3)
        image = base + gx * x[..., None] + gy * y[..., None]
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / f"s{index:03d}.png")
    return root


@pytest.fixture
def target():
    return noisy_target()


def reference_picks(target, tiles, cell, metric="seed", augment="none"):
    """Brute force over every (tile, transform) candidate in the metric's encoding."""
    codes = AUGMENT_SETS[augment]
    tile_px = tiles.shape[1]
    rows, cols = target.shape[0] // cell, target.shape[1] // cell
    top, left = (target.shape[0] - rows * cell) // 2, (target.shape[1] - cols * cell) // 2
    crop = target[top:top + rows * cell, left:left + cols * cell]
    factor = tile_px // cell
    up = encode(crop, metric).repeat(factor, 0).repeat(factor, 1).astype(np.int64)
    candidates = np.stack(
        [apply_transform(encode(tiles, metric), code) for code in codes], axis=1
    ).reshape(-1, tile_px, tile_px, 3).astype(np.int64)
    picks = []
    for r in range(rows):
        for c in range(cols):
            block = up[r * tile_px:(r + 1) * tile_px, c * tile_px:(c + 1) * tile_px]
            distances = ((candidates - block) ** 2).sum(axis=(1, 2, 3))
            picks.append(int(np.argmin(distances)))
    picks = np.array(picks)
    return picks // len(codes), np.asarray(codes)[picks % len(codes)]


@pytest.mark.parametrize(("metric", "augment"), [("seed", "none"), ("lab", "flips"),
                                                 ("oklab", "all"), ("seed", "rotations")])
def test_picks_are_optimal_over_transforms_and_colour_spaces(tmp_path, target, metric, augment):
    folder = smooth_folder(tmp_path / "tiles")
    mosaic = make_mosaic(target, folder, cell_px=8, tile_px=16, metric=metric, augment=augment,
                         cache_dir=tmp_path / "cache")
    tiles = np.asarray(mosaic.library.tiles)
    expected_tiles, expected_transforms = reference_picks(target, tiles, 8, metric, augment)
    assert np.array_equal(mosaic.placements.tile, expected_tiles)
    assert np.array_equal(mosaic.placements.transform, expected_transforms)
    # The rendered tile is the transformed library tile.
    first = apply_transform(tiles[expected_tiles[0]][None], int(expected_transforms[0]))[0]
    assert np.array_equal(mosaic.image[:16, :16], first)


def test_tint_moves_tiles_toward_their_cells(tmp_path, target):
    folder = smooth_folder(tmp_path / "tiles")
    plain = make_mosaic(target, folder, cell_px=8, tile_px=16, cache_dir=tmp_path / "c")
    tinted = make_mosaic(target, folder, cell_px=8, tile_px=16, tint=1.0,
                         cache_dir=tmp_path / "c")
    assert tinted.metrics["tint"] == 1.0 and tinted.metrics["mean_tint_shift"] > 0
    # Full tint: every tile's mean colour equals its cell's (up to clipping and rounding).
    rows, cols = tinted.grid.rows, tinted.grid.cols
    tile_means = tinted.image.reshape(rows, 16, cols, 16, 3).mean(axis=(1, 3))
    cell_means = tinted.grid.cells.reshape(rows, cols, -1, 3).mean(axis=2)
    assert np.abs(tile_means - cell_means).mean() < 3.0
    assert tinted.metrics["ciede2000_mean_view"] < plain.metrics["ciede2000_mean_view"]
    assert tinted.placements.objective <= plain.placements.objective


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif", ".dzi"])
@pytest.mark.parametrize("settings", [{}, {"tint": 0.5, "overlay": 0.2, "augment": "flips"}])
def test_metrics_measured_while_writing_are_those_of_the_picture(tmp_path, target, suffix,
                                                                  settings):
    from mosaicist.metrics import fidelity_metrics

    folder = smooth_folder(tmp_path / "tiles")
    made = functools.partial(make_mosaic, target, folder, cell_px=8, tile_px=16,
                             cache_dir=tmp_path / "c", **settings)
    asked_first = made()
    expected = asked_first.metrics
    assert "metrics" in asked_first.timings
    written = made()
    assert "metrics" not in written.timings  # measured only when asked for, or written
    drawn = 0
    bands = written.renderer.bands

    def counted():
        nonlocal drawn
        drawn += 1
        return bands()

    written.renderer.bands = counted
    written.write(tmp_path / f"out{suffix}")
    assert drawn == 1  # the picture was drawn once, for the file and the metrics
    assert "metrics" in written.timings
    assert written.metrics == expected
    assert drawn == 1
    crop = target[:40, :56]
    assert expected["psnr_full"] == pytest.approx(
        fidelity_metrics(written.image, crop, 16)["psnr_full"])
    assert written.report()["metrics"] == expected


def test_metrics_survive_a_write_that_fails_midway(tmp_path, target):
    folder = smooth_folder(tmp_path / "tiles")
    made = functools.partial(make_mosaic, target, folder, cell_px=8, tile_px=16,
                             cache_dir=tmp_path / "c")
    expected = made().metrics
    mosaic = made()
    bands = mosaic.renderer.bands

    def failing():
        for index, band in enumerate(bands()):
            if index == 2:
                raise OSError("a tile went missing")
            yield band

    mosaic.renderer.bands = failing
    with pytest.raises(OSError, match="went missing"):
        mosaic.write(tmp_path / "out.png")
    assert not (tmp_path / "out.png").exists()
    mosaic.renderer.bands = bands
    assert mosaic.metrics == expected  # measured whole, not from the first bands


def test_metrics_are_measured_at_the_match_size_when_written_larger(tmp_path, target):
    folder = smooth_folder(tmp_path / "tiles", size=32)
    expected = make_mosaic(target, folder, cell_px=8, tile_px=16, cache_dir=tmp_path / "c")
    mosaic = make_mosaic(target, folder, cell_px=8, tile_px=32, match_px=16,
                         cache_dir=tmp_path / "c")
    mosaic.write(tmp_path / "out.png")
    assert mosaic.renderer.tile_px == 32
    assert mosaic.metrics["psnr_full"] == pytest.approx(expected.metrics["psnr_full"])
    assert mosaic.metrics["ciede2000_mean_view"] == pytest.approx(
        expected.metrics["ciede2000_mean_view"])
    # And the report says so: a print's report and 'score' of its file differed unexplained.
    assert mosaic.metrics["measured_tile_px"] == 16
    assert expected.metrics["measured_tile_px"] == 16


def test_overlay_is_a_blend_with_the_target(tmp_path, target):
    folder = make_colour_folder(tmp_path / "tiles", 20, size=16)
    plain = make_mosaic(target, folder, cell_px=8, tile_px=8, cache_dir=tmp_path / "c")
    blended = make_mosaic(target, folder, cell_px=8, tile_px=8, overlay=0.25,
                          cache_dir=tmp_path / "c")
    crop = target[:40, :56]
    expected = np.rint(0.75 * plain.image + 0.25 * crop).astype(np.uint8)
    assert np.abs(blended.image.astype(int) - expected).max() <= 1
    assert blended.metrics["overlay"] == 0.25


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_placements_round_trip_and_render_again(tmp_path, target, suffix):
    folder = smooth_folder(tmp_path / "tiles")
    mosaic = make_mosaic(target, folder, cell_px=8, tile_px=16, augment="all", tint=0.5,
                         metric="lab", cache_dir=tmp_path / "c")
    path = tmp_path / f"placements{suffix}"
    mosaic.placements.write(path)
    again = Placements.read(path)
    assert again.source_ids == mosaic.placements.source_ids
    assert np.array_equal(again.transform, mosaic.placements.transform)
    assert np.allclose(again.tint, mosaic.placements.tint, atol=1e-4)
    if suffix == ".csv":
        again.options = MosaicOptions(metric="lab")
        image = render_placements(again, 16, tiles=str(folder), cache_dir=tmp_path / "c")
    else:
        image = render_placements(again, cache_dir=tmp_path / "c")
    # Same tiles, transforms and tint: the same picture (tint rounded to 1e-4).
    assert np.abs(image.astype(int) - mosaic.image.astype(int)).max() <= 1
    bigger = render_placements(Placements.read(tmp_path / f"placements{suffix}"), 48,
                               tiles=str(folder), cache_dir=tmp_path / "c")
    assert bigger.shape == (mosaic.grid.rows * 48, mosaic.grid.cols * 48, 3)


def test_bad_options_are_clear_errors(tmp_path, target):
    folder = make_colour_folder(tmp_path / "tiles", 5, size=8)
    with pytest.raises(MosaicistError, match="metric"):
        make_mosaic(target, folder, cell_px=8, tile_px=8, metric="xyz")
    with pytest.raises(MosaicistError, match="tint"):
        make_mosaic(target, folder, cell_px=8, tile_px=8, tint=1.5)
    with pytest.raises(MosaicistError, match="approximate"):
        make_mosaic(target, folder, cell_px=8, tile_px=8, search="approximate", tint=0.5)


def _png_with_late_orientation(path, pixels, orientation=6):
    """A PNG whose EXIF orientation follows its pixels (the header shows no turn)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    data = buffer.getvalue()
    exif = Image.Exif()
    exif[0x0112] = orientation
    payload = exif.tobytes()
    chunk = (struct.pack(">I", len(payload)) + b"eXIf" + payload
             + struct.pack(">I", zlib.crc32(payload, zlib.crc32(b"eXIf"))))
    end = data.rfind(b"IEND") - 4
    path.write_bytes(data[:end] + chunk + data[end:])
    return path


def test_target_file_read_while_the_library_opens(tmp_path, target):
    folder = make_colour_folder(tmp_path / "tiles", 6, size=8)
    path = tmp_path / "target.png"
    Image.fromarray(target).save(path)
    from_file = make_mosaic(path, folder, cell_px=8, tile_px=8)
    from_array = make_mosaic(target, folder, cell_px=8, tile_px=8)
    assert np.array_equal(from_file.placements.tile, from_array.placements.tile)
    assert from_file.timings["index"] > 0

    # Pixels that cannot be decoded past a good header: the file's error, raised
    # once the library is open, and the library's own error wins over it.
    broken = tmp_path / "broken.png"
    broken.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    with pytest.raises(MosaicistError, match="broken.png"):
        make_mosaic(broken, folder, cell_px=8, tile_px=8)
    with pytest.raises(MosaicistError, match="no usable tile"):
        make_mosaic(broken, make_colour_folder(tmp_path / "empty", 0, size=8), cell_px=8,
                    tile_px=8)
    # A missing or oversized file fails before the library is touched.
    for bad, pattern in ((tmp_path / "missing.png", "missing.png"), (path, "target limit")):
        fresh = tmp_path / f"cache-{bad.name}"
        with pytest.raises(MosaicistError, match=pattern):
            make_mosaic(bad, folder, cell_px=8, tile_px=8, max_target_pixels=100,
                        cache_dir=fresh)
        assert not fresh.exists()


def test_target_turned_by_exif_after_its_pixels(tmp_path, target):
    folder = make_colour_folder(tmp_path / "tiles", 6, size=8)
    path = _png_with_late_orientation(tmp_path / "late.png", target[:40, :64])
    turned = np.ascontiguousarray(np.rot90(target[:40, :64], -1))
    # The header says 64 x 40; the picture, turned, is 40 x 64: planned again.
    mosaic = make_mosaic(path, folder, tile_px=8, cells=40)
    expected = make_mosaic(turned, folder, tile_px=8, cells=40)
    assert (mosaic.grid.rows, mosaic.grid.cols) == (expected.grid.rows, expected.grid.cols)
    assert mosaic.grid.rows > mosaic.grid.cols
    assert np.array_equal(mosaic.placements.tile, expected.placements.tile)


def test_repetition_limits_hold_and_infeasible_caps_fail_early(tmp_path, target):
    from mosaicist.match import verify_placement  # noqa: F401 - the module's own checker
    from mosaicist.metrics import repetition_metrics

    folder = smooth_folder(tmp_path / "tiles", count=40)
    plain = make_mosaic(target, folder, cell_px=8, tile_px=16, cache_dir=tmp_path / "c")
    capped = make_mosaic(target, folder, cell_px=8, tile_px=16, max_uses=1,
                         cache_dir=tmp_path / "c")
    uses = np.bincount(capped.placements.tile)
    assert uses.max() == 1
    assert capped.placements.objective >= plain.placements.objective
    greedy = make_mosaic(target, folder, cell_px=8, tile_px=16, max_uses=1, assign="greedy",
                         cache_dir=tmp_path / "c")
    assert capped.placements.objective <= greedy.placements.objective
    spaced = make_mosaic(target, folder, cell_px=8, tile_px=16, max_uses=3, min_spacing=3,
                         augment="flips", tint=0.3, cache_dir=tmp_path / "c")
    metrics = repetition_metrics(spaced.placements.tile_grid())
    assert metrics["max_uses"] <= 3
    assert metrics["closest_repeat"] is None or metrics["closest_repeat"] >= 3
    assert spaced.report()["assignment"]["gap"] >= 0
    # Fewer tile uses than cells: an error that says how many tiles are needed.
    with pytest.raises(MosaicistError, match="35"):
        make_mosaic(target, folder, cell_px=8, tile_px=16, max_uses=1, limit=20,
                    cache_dir=tmp_path / "c")


def test_first_lists_are_short_where_the_grid_needs_most_of_the_library():
    from mosaicist.match._capped import (
        FIRST_CANDIDATES,
        FULL_FIRST_CANDIDATES,
        first_candidates,
    )

    # 32,400 cells, 50,000 tiles used once at most: 65% of the uses allowed.
    assert first_candidates(32_400, 50_000, 135, 240, 1, 1) == FULL_FIRST_CANDIDATES
    # Twice each: 32%; the seed's 5,040 cells: 10%.
    assert first_candidates(32_400, 50_000, 135, 240, 2, 1) == FIRST_CANDIDATES
    assert first_candidates(5_040, 50_000, 63, 80, 1, 1) == FIRST_CANDIDATES
    # Spacing alone caps the uses too: 10 x 10 cells 5 apart hold a tile 4 times.
    assert first_candidates(100, 40, 10, 10, None, 5) == FULL_FIRST_CANDIDATES
    assert first_candidates(100, 400, 10, 10, None, 5) == FIRST_CANDIDATES


def watch_first_lists(monkeypatch) -> tuple[list, list]:
    """The ``k`` of each search of the nearest tiles, and each result of the warm lists."""
    from mosaicist.match import _capped

    asked: list = []
    nearest = _capped.LibrarySearch.nearest

    def counted(self, cells, k):
        asked.append(k)
        return nearest(self, cells, k)

    monkeypatch.setattr(_capped.LibrarySearch, "nearest", counted)
    return asked, record_results(monkeypatch, _capped, "warm_candidates")


@pytest.mark.parametrize(("tint", "augment"), [(0.0, "none"), (0.4, "flips")])
@pytest.mark.parametrize(("full_load", "warm_load", "whole"),
                         [(0.5, 0.05, None), (1e9, 0.05, None), (1e9, 1e9, None),
                          (1e9, 1e9, "dense"), (1e9, 1e9, "auction")])
def test_capped_mosaic_is_the_certified_optimum_over_the_library(tmp_path, target, tint,
                                                                 augment, full_load,
                                                                 warm_load, whole,
                                                                 monkeypatch):
    from scipy.optimize import linear_sum_assignment

    from mosaicist.match import _capped, _flow, match_exact
    from mosaicist.match._exact import search_scale

    # With short first lists (the grid needs most of the library) and with long ones;
    # with warm lists, alone or joining the nearest tiles, and without; or (a small
    # library) every tile listed for every cell, or the auction over every pair.
    monkeypatch.setattr(_capped, "FULL_LOAD", full_load)
    monkeypatch.setattr(_capped, "WARM_LOAD", warm_load)
    if whole != "dense":
        monkeypatch.setattr(_capped, "DENSE_TILES", 0)
    if whole != "auction":
        monkeypatch.setattr(_capped, "AUCTION_TILES", 0)
    # One use per tile here: the auction takes it when told to (it needs copies).
    monkeypatch.setattr(_capped, "AUCTION_COPIES", 1)
    auctions = record_results(monkeypatch, _capped, "capped_auction")
    asked, warm_lists = watch_first_lists(monkeypatch)
    folder = smooth_folder(tmp_path / "tiles", count=45)
    mosaic = make_mosaic(target, folder, cell_px=8, tile_px=16, max_uses=1, tint=tint,
                         augment=augment, cache_dir=tmp_path / "c")
    # Loaded grids list the tiles of least distance plus estimated prices instead of
    # their nearest (without transforms, whose best variant the bound's space does
    # not know; tinted too; one use per tile, so that spacing cannot bind).
    assert len(warm_lists) == (warm_load < 1)
    listed = bool(warm_lists) and augment == "none" and _flow.can_repair()
    # The auction runs where the compiled loops do (else the dense lists decide).
    assert len(auctions) == (whole == "auction")
    if whole:
        # Proven at once: no search of the library at all.
        assert asked == [] and mosaic.report()["assignment"]["pricing_rounds"] == 0
    elif listed:
        cells, tiles, distances = warm_lists[0]
        assert len(cells) == len(tiles) == len(distances) > 0
        assert asked == []
    else:
        assert not warm_lists or warm_lists[0] is None
        assert asked[0] == (_capped.FULL_FIRST_CANDIDATES if full_load < 1
                            else _capped.FIRST_CANDIDATES)
    report = mosaic.report()["assignment"]
    assert report["certified"] and report["gap"] == 0.0
    # Every cell-tile distance (best transform), exactly, then the dense optimum.
    request_tiles = np.asarray(mosaic.library.tiles)
    from mosaicist.match import MatchRequest

    request = MatchRequest(mosaic.grid, mosaic.library, mosaic.options)
    variants = request.variants
    everything = match_exact(request.cell_vectors, request.candidates, request.geometry,
                             request.features, k=len(request.candidates), tint=tint,
                             search_units=True)
    full = np.full((len(mosaic.grid), len(request_tiles)), np.iinfo(np.int64).max)
    tiles = everything.candidates // variants
    rows = np.broadcast_to(np.arange(len(mosaic.grid))[:, None], tiles.shape)
    np.minimum.at(full, (rows, tiles), everything.candidate_distances)
    cells, chosen = linear_sum_assignment(full)
    optimum = int(full[cells, chosen].sum())
    scale = search_scale(request.geometry, tint)
    assert report["objective"] == pytest.approx(optimum / scale, rel=1e-12)
    placed = full[np.arange(len(mosaic.grid)), mosaic.placements.tile]
    assert int(placed.sum()) == optimum
    assert len(set(mosaic.placements.tile.tolist())) == len(mosaic.grid)


@pytest.mark.parametrize(("tint", "augment"), [(0.0, "none"), (0.5, "flips")])
def test_auction_proves_the_capped_optimum_and_spacing_follows(tmp_path, target, tint,
                                                               augment, monkeypatch):
    from scipy.optimize import linear_sum_assignment

    from mosaicist.match import MatchRequest, _capped, _flow, match_exact
    from mosaicist.match._assign import tile_capacity, verify_placement
    from mosaicist.match._exact import search_scale

    if not _flow.can_repair():
        pytest.skip("the auction needs the compiled loops")
    # A small library that must fill the grid several times over, spaced: the optimum
    # over every pair comes from the auction, its proof from every pair, and only the
    # spacing rounds run on the lists around it (a list shorter than the library).
    monkeypatch.setattr(_capped, "AUCTION_LISTS", 5)
    monkeypatch.setattr(_capped, "AUCTION_COPIES", 2)
    auctions = record_results(monkeypatch, _capped, "capped_auction")
    folder = smooth_folder(tmp_path / "tiles", count=12)
    probe = make_mosaic(target, folder, cell_px=8, tile_px=16, cache_dir=tmp_path / "c")
    cells = len(probe.grid)
    uses = -(-cells // 12) + 1
    mosaic = make_mosaic(target, folder, cell_px=8, tile_px=16, max_uses=uses,
                         min_spacing=2, tint=tint, augment=augment, cache_dir=tmp_path / "c")
    assert len(auctions) == 1 and auctions[0] is not None
    grid = mosaic.grid
    verify_placement(mosaic.placements.tile, grid.rows, grid.cols, uses, 2)
    report = mosaic.report()["assignment"]
    assert report["certified"] and report["pricing_rounds"] == 0
    # The lower bound is the capped optimum without spacing, over every pair.
    request = MatchRequest(grid, mosaic.library, mosaic.options)
    everything = match_exact(request.cell_vectors, request.candidates, request.geometry,
                             request.features, k=len(request.candidates), tint=tint,
                             search_units=True)
    full = np.full((cells, 12), np.iinfo(np.int64).max)
    rows = np.broadcast_to(np.arange(cells)[:, None], everything.candidates.shape)
    np.minimum.at(full, (rows, everything.candidates // request.variants),
                  everything.candidate_distances)
    cap = tile_capacity(grid.rows, grid.cols, uses, 2)
    replicas = np.repeat(full, cap, axis=1)
    chosen = linear_sum_assignment(replicas)
    optimum = int(replicas[chosen].sum())
    scale = search_scale(request.geometry, tint)
    assert report["lower_bound"] == pytest.approx(optimum / scale, rel=1e-12)
    assert report["objective"] >= report["lower_bound"] * (1 - 1e-12)
    placed = full[np.arange(cells), mosaic.placements.tile]
    assert report["objective"] == pytest.approx(int(placed.sum()) / scale, rel=1e-12)


def test_warm_lists_join_the_nearest_where_spacing_binds(tmp_path, target, monkeypatch):
    from mosaicist.match import _capped, _flow
    from mosaicist.match._assign import verify_placement

    if not _flow.can_repair():
        pytest.skip("the warm prices need the compiled loops")
    monkeypatch.setattr(_capped, "WARM_LOAD", 0.05)
    monkeypatch.setattr(_capped, "DENSE_TILES", 0)
    monkeypatch.setattr(_capped, "AUCTION_TILES", 0)
    asked, warm_lists = watch_first_lists(monkeypatch)
    folder = smooth_folder(tmp_path / "tiles", count=30)
    mosaic = make_mosaic(target, folder, cell_px=8, tile_px=16, max_uses=2, min_spacing=3,
                         tint=0.5, cache_dir=tmp_path / "c")
    # Two uses a tile: spacing binds, and the rounds need the nearest tiles' proofs.
    assert warm_lists and warm_lists[0] is not None
    assert asked[0] == _capped.FULL_FIRST_CANDIDATES
    grid = mosaic.grid
    verify_placement(mosaic.placements.tile, grid.rows, grid.cols, 2, 3)
    assert mosaic.report()["assignment"]["gap"] >= 0


@pytest.mark.parametrize("tint", [0.0, 0.5, 1.0])
def test_warm_points_measure_the_distance_the_tint_leaves(tmp_path, target, tint):
    """A tint of strength A leaves (1 - A) of a shift of the cell's colour to pay."""
    from dataclasses import replace

    from mosaicist.match import MatchRequest, _capped
    from mosaicist.match._exact import cell_terms

    folder = smooth_folder(tmp_path / "tiles", count=20)
    mosaic = make_mosaic(target, folder, cell_px=8, tile_px=16, cache_dir=tmp_path / "c")
    request = MatchRequest(mosaic.grid, mosaic.library, replace(mosaic.options, tint=tint))
    rng = np.random.default_rng(5)
    cells = rng.integers(20, 200, (6, *request.cell_vectors.shape[1:])).astype(np.uint8)
    shift = np.array([30, -12, 7])
    shifted = (cells.astype(np.int64) + shift).astype(np.uint8)
    points, tile_points = _capped.warm_points(
        request, cell_terms(cells, request.geometry, request.features))
    moved, again = _capped.warm_points(
        request, cell_terms(shifted, request.geometry, request.features))
    np.testing.assert_array_equal(tile_points, again)
    assert len(tile_points) == len(mosaic.library)
    # Fewer components where a library's points would take gigabytes.
    from mosaicist.match._features import LARGE_LIBRARY

    assert _capped.warm_dimensions(LARGE_LIBRARY) == _capped.WARM_DIMENSIONS
    assert _capped.warm_dimensions(LARGE_LIBRARY + 1) == _capped.LARGE_WARM_DIMENSIONS
    assert points.shape[1] == tile_points.shape[1]
    # Every block moves by the shift. Tinted, the points carry the means apart from
    # the rest, so the shift costs its squared length per block, times the blocks,
    # times (1 - A)^2; untinted, what the kept components see of it.
    features = request.features
    blocks = np.asarray(features.basis).shape[1] // 3
    dimensions = min(_capped.warm_dimensions(len(mosaic.library)), len(features.basis))
    basis = np.asarray(features.basis, np.float64)[:dimensions]
    kept = basis.reshape(dimensions, -1, 3).sum(axis=1) @ shift
    expected = ((1 - tint) ** 2 * blocks * float(shift @ shift)) if tint else float(kept @ kept)
    distance = ((moved.astype(np.float64) - points) ** 2).sum(axis=1)
    np.testing.assert_allclose(distance, expected, rtol=1e-3, atol=1e-2)


def test_greedy_with_a_minimum_of_uses_says_the_optimal_assignment_places_the_tiles(
        tmp_path, target, capsys):
    # The report's method said "optimal", and nothing else that greedy had not run.
    folder = smooth_folder(tmp_path / "tiles", count=30)
    mosaic = make_mosaic(target, folder, cell_px=8, tile_px=16, min_uses=1, assign="greedy",
                         cache_dir=tmp_path / "c", quiet=False)
    assert (np.bincount(mosaic.placements.tile, minlength=30) >= 1).all()
    assert mosaic.assignment.method == "optimal"
    assert ("mosaicist: note: assign greedy does not keep min_uses 1: the tiles are placed by "
            "the optimal assignment") in capsys.readouterr().err
    make_mosaic(target, folder, cell_px=8, tile_px=16, min_uses=1, assign="greedy",
                cache_dir=tmp_path / "c")
    make_mosaic(target, folder, cell_px=8, tile_px=16, max_uses=2, assign="greedy",
                cache_dir=tmp_path / "c", quiet=False)
    assert "note" not in capsys.readouterr().err


def test_use_all_puts_every_photo_somewhere(tmp_path, target, monkeypatch):
    from mosaicist.match import _capped

    folder = smooth_folder(tmp_path / "tiles", count=30)  # 35 cells: every tile once
    mosaic = make_mosaic(target, folder, cell_px=8, tile_px=16, min_uses=1, augment="flips",
                         tint=0.3, cache_dir=tmp_path / "c")
    uses = np.bincount(mosaic.placements.tile, minlength=30)
    assert (uses >= 1).all() and uses.sum() == 35
    assert mosaic.options.min_uses == 1 and mosaic.matcher == "assignment"
    # Together with a cap and spacing.
    spaced = make_mosaic(target, folder, cell_px=8, tile_px=16, min_uses=1, max_uses=2,
                         min_spacing=2, cache_dir=tmp_path / "c")
    uses = np.bincount(spaced.placements.tile, minlength=30)
    assert (uses >= 1).all() and uses.max() <= 2
    with pytest.raises(MosaicistError, match="min_uses 2 needs 60 cells for the 30 tiles"):
        make_mosaic(target, folder, cell_px=8, tile_px=16, min_uses=2, cache_dir=tmp_path / "c")
    monkeypatch.setattr(_capped, "MINIMUM_PAIRS", 100)
    with pytest.raises(MosaicistError, match="min_uses needs every cell-tile distance"):
        make_mosaic(target, folder, cell_px=8, tile_px=16, min_uses=1, cache_dir=tmp_path / "c")


@pytest.mark.parametrize("limits", [
    {"max_uses": 3, "min_spacing": 3},
    {"max_uses": 3, "min_spacing": 3, "min_uses": 2},
    {"min_spacing": 3, "min_uses": 3},
])
def test_every_photo_thrice_three_cells_apart_fills_a_grid_made_for_it(tmp_path, target,
                                                                       limits):
    from mosaicist.metrics import repetition_metrics

    # 5 x 6 cells, 10 photos: a placement of each photo 3 times, 3 cells apart, exists,
    # and was refused ("no placement keeps equal tiles min_spacing 3 cells apart", or
    # "3 of the 10 tiles cannot each fill 3 cells") where greedy got stuck.
    folder = smooth_folder(tmp_path / "tiles", count=10)
    mosaic = make_mosaic(target[:40, :48], folder, cell_px=8, tile_px=8,
                         cache_dir=tmp_path / "c", **limits)
    assert (mosaic.grid.rows, mosaic.grid.cols) == (5, 6)
    assert (np.bincount(mosaic.placements.tile, minlength=10) == 3).all()
    assert repetition_metrics(mosaic.placements.tile_grid())["closest_repeat"] >= 3
    assignment = mosaic.report()["assignment"]
    assert assignment["objective"] >= assignment["lower_bound"]


@pytest.mark.parametrize("preset", ["varied", "balanced"])
def test_adaptive_cells_from_a_single_photo_under_a_presets_limits(tmp_path, target, preset):
    # The capped search asked a one-tile library for lists, and the exact search, which
    # gives one tile no lists, failed an assertion.
    folder = smooth_folder(tmp_path / "tiles", count=1)
    mosaic = _make_mosaic(target, folder, preset=preset, adaptive=1, detail=0.0, cell_px=8,
                          tile_px=8, cache_dir=tmp_path / "c")
    assert len(mosaic.placements) == 4 * 35  # every cell split once
    assert (mosaic.placements.tile == 0).all()


def test_a_presets_limits_bend_to_a_small_library_and_given_ones_do_not(tmp_path, target):
    from mosaicist.match import fit_limits
    from mosaicist.metrics import repetition_metrics

    folder = smooth_folder(tmp_path / "tiles", count=12)
    # 35 cells, 12 tiles: "varied" wants 2 uses 5 cells apart; 3 uses fit, and then a
    # spacing at which the three copies of each tile fill at most a third of the places
    # that spacing leaves them on a 5 x 7 grid (2: 12 places each); 4 uses leave the
    # spacing rounds a quarter of the tiles' count of places to spare (3 did: 1).
    mosaic = make_mosaic(target, folder, cell_px=8, tile_px=16, preset="varied",
                         cache_dir=tmp_path / "c")
    fitted = mosaic.options
    assert (mosaic.grid.rows, mosaic.grid.cols) == (5, 7)
    assert (fitted.max_uses, fitted.min_spacing) == (4, 2)
    counts = repetition_metrics(mosaic.placements.tile_grid())
    assert counts["max_uses"] <= 4 and counts["closest_repeat"] >= fitted.min_spacing
    assert mosaic.report()["settings"]["max_uses"] == 4
    # Given limits are kept: too tight for the library is an error before any work.
    with pytest.raises(MosaicistError, match="max_uses 2"):
        make_mosaic(target, folder, cell_px=8, tile_px=16, preset="varied", max_uses=2,
                    cache_dir=tmp_path / "c")
    # Enough tiles: nothing changes.
    options = MosaicOptions(preset="varied")
    assert fit_limits(options, 35, 40, 5, 7) is options
    loose = fit_limits(MosaicOptions(preset="varied", min_spacing=3), 35, 12, 5, 7)
    assert (loose.max_uses, loose.min_spacing) == (4, 3)
    seed = MosaicOptions(preset="seed")
    assert fit_limits(seed, 35, 1, 5, 7) == seed
    # The default preset's wishes bend the same way: one tile fills 35 cells, side by side.
    only = fit_limits(MosaicOptions(), 35, 1, 5, 7)
    assert (only.max_uses, only.min_spacing) == (35, 1)
    assert not only.given("max_uses") and not only.given("min_spacing")
    # A few dozen photos on 63 x 80 cells: at spacing 5 each of 50 photos would fill 101
    # of its 208 places (the rounds fail), at 4 of its 320; 100 photos keep spacing 5.
    assert fit_limits(MosaicOptions(), 5040, 50, 63, 80).min_spacing == 4
    assert fit_limits(MosaicOptions(), 5040, 100, 63, 80).min_spacing == 5
    assert fit_limits(MosaicOptions(), 5040, 20, 63, 80).min_spacing == 2
    assert fit_limits(MosaicOptions(min_spacing=5), 5040, 50, 63, 80).min_spacing == 5
    # Places to spare for the spacing rounds: 386 photos on 202 x 256 cells at 134 uses
    # would leave 12 (the rounds failed), 135 leave 398; 99 photos at 523 leave 65, more
    # than a quarter of their count, and keep it. A given limit, or no spacing, keeps
    # the fewest uses.
    assert fit_limits(MosaicOptions(), 51712, 386, 202, 256).max_uses == 135
    assert fit_limits(MosaicOptions(), 51712, 99, 202, 256).max_uses == 523
    assert fit_limits(MosaicOptions(max_uses=134), 51712, 386, 202, 256).max_uses == 134
    assert fit_limits(MosaicOptions(min_spacing=1), 51712, 386, 202, 256).max_uses == 134


def test_the_default_look_uses_each_tile_once_apart_and_corrects_colour(tmp_path, target):
    from mosaicist.metrics import repetition_metrics

    folder = smooth_folder(tmp_path / "tiles", count=60)  # 35 cells, 60 tiles
    default = _make_mosaic(target, folder, cell_px=8, tile_px=16, cache_dir=tmp_path / "c")
    seed = _make_mosaic(target, folder, cell_px=8, tile_px=16, preset="seed",
                        cache_dir=tmp_path / "c")
    options = default.options
    assert options.preset == "balanced" and not options.given("max_uses")
    assert (options.max_uses, options.min_spacing, options.tint, options.contrast) \
        == (1, 5, 1.0, 0.5)
    counts = repetition_metrics(default.placements.tile_grid())
    assert counts["distinct_tiles"] == len(default.placements)
    assert counts["max_uses"] == 1
    assert repetition_metrics(seed.placements.tile_grid())["max_uses"] > 1
    # Every tile's mean colour moved to its cell's.
    assert (default.placements.tint != 0).any() and default.metrics["tint"] == 1.0
    assert default.metrics["mean_tint_shift"] > 0
    assert default.placements.has_gain
    # Colour correction makes up for giving up repeats: closer at viewing scale.
    assert default.metrics["ciede2000_mean_view"] < seed.metrics["ciede2000_mean_view"]


def test_the_auction_takes_small_libraries_of_many_copies():
    from mosaicist.match._capped import AUCTION_COPIES, AUCTION_PAIRS, auction_fits

    # 400 photos at 130 uses on 51,712 cells; 1,000 at 52.
    assert auction_fits(51_712, 400, 1, 130) and auction_fits(51_712, 1_000, 1, 52)
    # Few copies (the lists' rounds are quick), no cap, too many places per cell,
    # too many pairs, too many tiles: not.
    assert not auction_fits(5_040, 1_000, 1, AUCTION_COPIES - 1)
    assert not auction_fits(5_040, 100, 1, None)
    assert not auction_fits(5_040, 100, 1, 200)
    assert not auction_fits(AUCTION_PAIRS // 400 + 1, 400, 1, 200)
    assert not auction_fits(51_712, 1_000, 2, 52)
    assert not auction_fits(400_000, 50_000, 1, 8)


@pytest.mark.parametrize("start", ["auction", "zero", "far"])
def test_the_auctions_proof_reaches_every_pair_from_any_start(monkeypatch, start):
    from scipy.optimize import linear_sum_assignment

    from mosaicist.match import _capped, _flow

    if not _flow.can_repair():
        pytest.skip("the auction needs the compiled loops")
    rng = np.random.default_rng(8)
    # Crowds of alike cells over 30 tiles of 4 uses: the proof needs prices on most tiles.
    kind = rng.integers(0, 4, 100)
    full = (rng.integers(0, 5_000, (4, 30))[kind] + rng.integers(0, 300, (100, 30))) * 7
    auction = _capped.capped_auction

    def started(distances, cap):
        placed, estimate = auction(distances, cap)
        # The lists the proof starts from, drawn at worse prices: pairs beat the first
        # prices, join the lists, and the prices are found again.
        if start == "zero":
            estimate = np.zeros_like(estimate)
        elif start == "far":
            estimate = rng.integers(0, 50_000, estimate.shape)
        return placed, estimate

    monkeypatch.setattr(_capped, "capped_auction", started)
    monkeypatch.setattr(_capped, "AUCTION_LISTS", 3)
    beaten = record_results(monkeypatch, _capped, "_beaten")
    priced = record_results(monkeypatch, _capped, "tile_prices")
    search = type("Dense", (), {"dense": lambda self: full.copy()})()
    near, near_distances, placed = _capped._proven_by_auction(search, 4)
    replicas = np.repeat(full, 4, axis=1)
    cells, columns = linear_sum_assignment(replicas)
    assert int(full[np.arange(100), placed].sum()) == int(replicas[cells, columns].sum())
    # The lists hold each cell's tile, best first, and their distances.
    assert (near == placed[:, None]).any(axis=1).all()
    assert np.array_equal(near_distances, np.take_along_axis(full, near, axis=1))
    assert (np.diff(near_distances, axis=1) >= 0).all()
    # From a poor start, pairs beat the first prices and join the lists; the last
    # prices prove the placement over every pair: no pair below its cell's cost, and
    # prices only on full tiles.
    if start == "far":
        assert len(beaten) > 1 and len(beaten[0][0]) > 0
    assert len(beaten[-1][0]) == 0
    tiles, prices = priced[-1]
    price = np.zeros(30, np.int64)
    price[tiles] = prices
    paid = full[np.arange(100), placed] + price[placed]
    assert ((full + price[None, :]) >= paid[:, None]).all()
    full_tiles = np.bincount(placed, minlength=30) == 4
    assert (price[~full_tiles] == 0).all()


@pytest.mark.parametrize(("array", "shape"), [
    (np.random.default_rng(0).random((24, 24, 3)), "(24, 24, 3), dtype float64"),
    (np.zeros((24, 24, 4), np.uint8), "(24, 24, 4), dtype uint8"),
    (np.zeros((24, 24), np.uint8), "(24, 24), dtype uint8"),
])
def test_a_target_array_of_another_shape_or_type_is_refused_by_name(tmp_path, array, shape):
    folder = make_colour_folder(tmp_path / "tiles", 4)
    with pytest.raises(OptionError) as caught:
        make_mosaic(array, folder, cell_px=8, tile_px=8, cache_dir=tmp_path / "cache")
    assert str(caught.value) == (f"a target array must be (H, W, 3) uint8, got shape {shape}; "
                                 "a PIL image of any mode is converted")
    assert caught.value.parameters == ("target",)
    assert not (tmp_path / "cache").exists()  # refused before the library was indexed


@pytest.mark.parametrize(("inputs", "message"), [
    ({"target": None}, "target must be a path, an (H, W, 3) uint8 array or a PIL image, "
                       "got None"),
    ({"target": 5}, "target must be a path, an (H, W, 3) uint8 array or a PIL image, got 5"),
    ({"target": [[0, 0, 0]]}, "target must be a path, an (H, W, 3) uint8 array or a PIL "
                              "image, got a list"),
    ({"tiles": None}, "tiles must be a source spec (a text: a folder, 'cifar10'...), a path, "
                      "a TileSource or a TileLibrary, got None"),
    ({"tiles": b"tiles"}, "tiles must be a source spec (a text: a folder, 'cifar10'...), a "
                          "path, a TileSource or a TileLibrary, got b'tiles'"),
    ({"tiles": 5}, "tiles must be a source spec (a text: a folder, 'cifar10'...), a path, "
                   "a TileSource or a TileLibrary, got 5"),
    ({"options": "seed"}, "options must be a MosaicOptions or a mapping of settings, "
                          "got a str"),
    ({"options": {"cell_px": 8, "colour": "red"}},
     "options holds names that are not settings: colour"),
    ({"options": {"version": 4, "cell_px": 8}},
     "options holds names that are not settings: version; settings saved with a version are "
     "read by MosaicOptions.from_json"),
    ({"options": {"cell_px": "8"}}, "cell_px must be a whole number, got '8'"),
    ({"cache_dir": 5}, "cache_dir must be a path (a text or a path object), got 5"),
    ({"cache_dir": b"cache"}, "cache_dir must be a path (a text or a path object), got b'cache'"),
])
def test_inputs_of_another_type_are_refused_by_name(tmp_path, target, inputs, message):
    folder = make_colour_folder(tmp_path / "tiles", 4)
    arguments = {"target": target, "tiles": folder, "cache_dir": tmp_path / "cache"} | inputs
    with pytest.raises(OptionError) as caught:
        _make_mosaic(**arguments)
    assert str(caught.value) == message
    assert not (tmp_path / "cache").exists()


def test_options_may_be_a_mapping_of_settings(tmp_path, target):
    folder = make_colour_folder(tmp_path / "tiles", 40, size=8)
    settings = {"cell_px": 8, "tile_px": 8, "preset": "seed", "tint": 0.5}
    mosaic = _make_mosaic(target, folder, options=settings, cache_dir=tmp_path / "cache")
    assert mosaic.options == MosaicOptions(**settings)
    assert mosaic.options.given("tint") and not mosaic.options.given("max_uses")
    # Keywords still replace what the options hold.
    again = _make_mosaic(target, folder, options=settings, tint=0.0, cache_dir=tmp_path / "cache")
    assert again.options == MosaicOptions(**settings | {"tint": 0.0})
    assert np.array_equal(_make_mosaic(target, folder, options={}, cell_px=8, tile_px=8,
                                       cache_dir=tmp_path / "cache").placements.tile,
                          _make_mosaic(target, folder, cell_px=8, tile_px=8,
                                       cache_dir=tmp_path / "cache").placements.tile)


def test_the_docstring_names_the_default_preset():
    # It said the defaults were the seed's method; the default preset is balanced.
    from mosaicist.options import DEFAULT_PRESET

    doc = " ".join(_make_mosaic.__doc__.split())
    assert f"by default ``{DEFAULT_PRESET}``" in doc
    assert "``preset=\"seed\"`` is the seed's method, exactly" in doc
    assert "default settings this is the seed's method" not in doc
    assert MosaicOptions().preset == DEFAULT_PRESET != "seed"
    assert "With the defaults (preset ``seed``)" not in MosaicOptions.__doc__


def test_cells_and_tiles_rounded_to_different_shapes_are_warned_about(tmp_path, target, capsys):
    folder = make_colour_folder(tmp_path / "tiles", 5, size=8)
    make_mosaic(target, folder, cell_px=16, tile_px=32, aspect="3:2", cache_dir=tmp_path / "c",
                quiet=False)
    assert "4.8% wider than the target" in capsys.readouterr().err
    make_mosaic(target, folder, cell_px=15, tile_px=33, aspect="3:2", cache_dir=tmp_path / "c",
                quiet=False)
    assert "wider" not in capsys.readouterr().err


def test_a_matcher_that_cannot_run_here_is_said_alone_before_indexing(tmp_path, target, capsys,
                                                                       monkeypatch):
    # None in sys.modules makes "import torch" raise ImportError.
    monkeypatch.setitem(__import__("sys").modules, "torch", None)
    folder = make_colour_folder(tmp_path / "tiles", 5, size=8)
    with pytest.raises(MosaicistError, match="PyTorch is not installed"):
        _make_mosaic(target, folder, device="cuda", cache_dir=tmp_path / "c", quiet=False)
    assert capsys.readouterr().err == ""  # not the note on the preset's dropped settings
    assert not (tmp_path / "c").exists()


def test_the_api_reports_the_time_it_drew_for_and_a_total(tmp_path, target):
    folder = make_colour_folder(tmp_path / "tiles", 5, size=8)
    mosaic = make_mosaic(target, folder, cell_px=8, tile_px=8, cache_dir=tmp_path / "c")
    mosaic.write(tmp_path / "out.png")
    timings = mosaic.report()["timings"]
    assert timings["render"] > 0
    phases = sum(value for name, value in timings.items() if name != "total")
    assert timings["total"] == pytest.approx(phases, abs=1e-3)
    # Drawn in memory: timed too.
    mosaic = make_mosaic(target, folder, cell_px=8, tile_px=8, cache_dir=tmp_path / "c",
                         compute_metrics=False)
    assert mosaic.image.shape[2] == 3 and mosaic.report()["timings"]["render"] > 0


def test_a_target_array_changed_afterwards_changes_nothing(tmp_path, target):
    # The overlay and the metrics read the caller's array when drawn: a buffer
    # reused for the next frame changed a finished mosaic's picture and SSIM.
    folder = make_colour_folder(tmp_path / "tiles", 20, size=8)
    settings = {"cell_px": 8, "tile_px": 8, "overlay": 0.5, "cache_dir": tmp_path / "c"}
    kept = make_mosaic(target.copy(), folder, **settings)
    reused = target.copy()
    mosaic = make_mosaic(reused, folder, **settings)
    reused[:] = 0
    assert np.array_equal(mosaic.image, kept.image)
    assert mosaic.metrics == kept.metrics


@pytest.mark.parametrize("kind", ["array", "picture"])
def test_array_and_picture_targets_are_held_to_the_pixel_limit(tmp_path, target, kind):
    # Only files were checked: a broadcast view of 10^10 pixels costs nothing to
    # pass and was copied whole into cells.
    given = target if kind == "array" else Image.fromarray(target)
    folder = make_colour_folder(tmp_path / "tiles", 4, size=8)
    with pytest.raises(OptionError) as caught:
        make_mosaic(given, folder, cell_px=8, tile_px=8, max_target_pixels=100,
                    cache_dir=tmp_path / "c")
    assert str(caught.value) == ("target: 56x40 = 2,240 pixels is over the target limit of 100 "
                                 "pixels (raise it with max_target_pixels)")
    assert not (tmp_path / "c").exists()
    huge = np.broadcast_to(target[:1, :1], (100_000, 100_000, 3))
    with pytest.raises(OptionError, match="is over the target limit"):
        make_mosaic(huge, folder, cell_px=8, tile_px=8, cache_dir=tmp_path / "c")


def test_target_paths_from_home_are_read_and_recorded(tmp_path, target, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    Image.fromarray(target).save(tmp_path / "bear.png")
    folder = make_colour_folder(tmp_path / "tiles", 4, size=8)
    mosaic = make_mosaic("~/bear.png", folder, cell_px=8, tile_px=8, cache_dir=tmp_path / "c")
    assert mosaic.placements.target == str((tmp_path / "bear.png").resolve())


class _BytesPath:
    def __fspath__(self) -> bytes:
        return b"bear.png"


def test_a_path_object_naming_bytes_is_refused_by_name(tmp_path, target):
    folder = make_colour_folder(tmp_path / "tiles", 4, size=8)
    with pytest.raises(OptionError) as caught:
        make_mosaic(_BytesPath(), folder, cell_px=8, tile_px=8, cache_dir=tmp_path / "c")
    assert str(caught.value) == ("target must be a path, an (H, W, 3) uint8 array or a PIL "
                                 "image, got a _BytesPath naming bytes")
    mosaic = make_mosaic(target, folder, cell_px=8, tile_px=8, cache_dir=tmp_path / "c")
    for path in (b"out.png", _BytesPath()):
        with pytest.raises(OptionError, match="^path must be a path"):
            mosaic.write(path)
        with pytest.raises(OptionError, match="^path must be a path"):
            mosaic.write_report(path)


def test_mosaic_outputs_under_home_and_unwritable_reports(tmp_path, target, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    folder = make_colour_folder(tmp_path / "tiles", 4, size=8)
    mosaic = make_mosaic(target, folder, cell_px=8, tile_px=8, cache_dir=tmp_path / "c")
    mosaic.write("~/out.png")
    mosaic.write_report("~/out.json")
    assert (tmp_path / "out.png").is_file() and (tmp_path / "out.json").is_file()
    # Raw FileNotFoundError / IsADirectoryError naming a hidden temporary before.
    for path, reason in ((tmp_path / "no" / "r.json", "No such file or directory"),
                         (tmp_path, "a folder, not a file")):
        with pytest.raises(MosaicistError) as caught:
            mosaic.write_report(path)
        assert str(caught.value) == f"{path}: cannot write the report: {reason}"
    # Extra keys: NumPy scalars and arrays are numbers and lists; anything else is named.
    mosaic.write_report(tmp_path / "r.json", wall=np.float32(1.5), sizes=np.arange(2))
    written = __import__("json").loads((tmp_path / "r.json").read_text())
    assert written["wall"] == 1.5 and written["sizes"] == [0, 1]
    with pytest.raises(OptionError) as caught:
        mosaic.write_report(tmp_path / "bad.json", when={1})
    assert str(caught.value) == "write_report's when is not JSON data: a set"
    assert not (tmp_path / "bad.json").exists()


def test_a_picture_that_cannot_be_read_is_one_error_naming_the_target(tmp_path, target):
    # A lazily opened picture whose file is cut short, or one already closed:
    # Pillow's OSError / ValueError came out of make_mosaic as they were.
    folder = make_colour_folder(tmp_path / "tiles", 4, size=8)
    whole = io.BytesIO()
    Image.fromarray(target).save(whole, "PNG")
    cut = Image.open(io.BytesIO(whole.getvalue()[:len(whole.getvalue()) // 2]))
    closed = Image.open(io.BytesIO(whole.getvalue()))
    closed.close()
    for picture in (cut, closed):
        with pytest.raises(MosaicistError, match="^target: cannot read the picture: ") as caught:
            make_mosaic(picture, folder, cell_px=8, tile_px=8, cache_dir=tmp_path / "c")
        assert "\n" not in str(caught.value)


def test_a_report_is_strict_json_where_the_gap_has_no_lower_bound(tmp_path):
    # Greedy's lower bound is the nearest tiles' total: 0 where a flat target has a flat
    # photo of its colour, and the gap was written as Infinity (refused by strict
    # parsers: JavaScript's JSON.parse, the studio's JSONResponse).
    import json

    tiles = tmp_path / "tiles"
    tiles.mkdir()
    for number, colour in enumerate([(200, 10, 10), (10, 200, 10), (10, 10, 200)]):
        Image.new("RGB", (16, 16), colour).save(tiles / f"c{number}.png")
    target = np.zeros((48, 64, 3), np.uint8) + np.array([200, 10, 10], np.uint8)
    mosaic = _make_mosaic(target, tiles, {"assign": "greedy", "cell_px": 16, "tile_px": 16,
                                          "max_uses": 6, "preset": "seed"},
                          cache_dir=tmp_path / "cache")
    assignment = mosaic.report()["assignment"]
    assert mosaic.assignment.gap == float("inf") and assignment["gap"] is None
    mosaic.write_report(tmp_path / "r.json")
    json.loads((tmp_path / "r.json").read_text(),
               parse_constant=lambda name: pytest.fail(f"not strict JSON: {name}"))


def test_a_library_short_of_the_cells_places_every_photo_by_default(tmp_path, target):
    # 35 cells and 30 photos: the default preset's cap rises to 2, and every photo then
    # fills a cell (the best-fitting ones alone, twice each, before).
    from mosaicist.match import fit_limits

    folder = make_colour_folder(tmp_path / "tiles", 30)
    mosaic = _make_mosaic(target, folder, cell_px=8, tile_px=8, cache_dir=tmp_path / "c")
    assert len(mosaic.placements) == 35
    assert len(np.unique(mosaic.placements.tile)) == 30
    assert mosaic.options.min_uses == 1 and not mosaic.options.given("min_uses")
    assert mosaic.report()["settings"]["min_uses"] == 1
    # A limit given, or enough photos, or adaptive cells: no minimum is added.
    assert fit_limits(MosaicOptions(max_uses=2), 35, 30, 5, 7).min_uses == 0
    assert fit_limits(MosaicOptions(min_uses=0), 35, 30, 5, 7).min_uses == 0
    assert fit_limits(MosaicOptions(), 35, 40, 5, 7).min_uses == 0
    assert fit_limits(MosaicOptions(adaptive=1), 35, 30, 5, 7).min_uses == 0
    assert fit_limits(MosaicOptions(preset="seed"), 35, 30, 5, 7).min_uses == 0


def _wide_photos(folder, count=40):
    # 2:1 photos: a flat colour with a busy strip at the left, so centre and subject
    # crops cut different pictures.
    folder.mkdir()
    rng = np.random.default_rng(7)
    for index in range(count):
        photo = np.full((24, 48, 3), rng.integers(0, 256, 3), np.uint8)
        photo[:, :16] = rng.integers(0, 256, (24, 16, 3))
        Image.fromarray(photo).save(folder / f"w{index:03d}.png")
    return folder


def test_a_make_from_an_opened_library_records_the_crop_it_matched(tmp_path, target):
    # TileLibrary.open cuts centred crops: the default preset's "subject" was recorded
    # anyway, and a render of the make's own placements drew other pictures.
    from mosaicist import TileLibrary
    from mosaicist.render import placements_renderer

    folder = _wide_photos(tmp_path / "wide")
    cache = tmp_path / "cache"
    library = TileLibrary.open(folder, match_px=8, cache_dir=cache)
    mosaic = _make_mosaic(target, library, cell_px=8, tile_px=8, cache_dir=cache)
    assert (mosaic.options.crop, mosaic.options.colour_profiles) == ("centre", "ignore")
    assert not mosaic.options.given("crop")  # the preset's, fitted: a replace resolves it
    mosaic.placements.write(tmp_path / "p.json", quiet=True)
    drawn = placements_renderer(Placements.read(tmp_path / "p.json"),
                                cache_dir=cache).image()
    assert np.array_equal(drawn, mosaic.image)
    # Given, a crop that cuts the tiles otherwise is refused by name.
    with pytest.raises(OptionError,
                       match="opened with centre crops, but crop is 'subject'; open it"):
        _make_mosaic(target, library, cell_px=8, tile_px=8, crop="subject", cache_dir=cache)
    with pytest.raises(OptionError, match="colour_profiles is 'convert'"):
        _make_mosaic(target, library, cell_px=8, tile_px=8, colour_profiles="convert",
                     cache_dir=cache)
    subject = TileLibrary.open(folder, match_px=8, cache_dir=cache, crop="subject")
    made = _make_mosaic(target, subject, cell_px=8, tile_px=8, preset="seed",
                        cache_dir=cache)
    assert made.options.crop == "subject"


def test_a_crop_that_changes_nothing_on_an_opened_library_stands(tmp_path, target):
    # Square photos of one size at a square aspect are their own windows: any crop cuts
    # them whole, and the library indexes them once.
    from mosaicist import TileLibrary

    photos = np.random.default_rng(2).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
    np.save(tmp_path / "tiles.npy", photos)
    library = TileLibrary.open(tmp_path / "tiles.npy", match_px=8, cache_dir=tmp_path / "c")
    made = _make_mosaic(target, library, cell_px=8, tile_px=8, crop="subject",
                        cache_dir=tmp_path / "c")
    assert made.options.crop == "subject"
