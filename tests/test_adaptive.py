"""Adaptive cells: the quadtree, placements with rectangles, matching, rendering, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_colour_folder
from PIL import Image

from mosaicist import make_mosaic
from mosaicist.adaptive import Leaves, check_adaptive, leaf_repetition, split_cells
from mosaicist.cli import main
from mosaicist.errors import OptionError
from mosaicist.grid import make_grid
from mosaicist.match import brute_force
from mosaicist.match._assign import Layout, spacing_violations
from mosaicist.options import MosaicOptions
from mosaicist.placements import Placements, check_rects


def textured_target(seed: int = 1) -> np.ndarray:
    """96x64 flat grey with random noise in the top-left 48x32 (2x3 cells of 16 px)."""
    rng = np.random.default_rng(seed)
    target = np.full((64, 96, 3), 120, np.uint8)
    target[:32, :48] = rng.integers(0, 256, (32, 48, 3))
    return target


def covered(rect: np.ndarray, rows: int, cols: int, unit: int) -> np.ndarray:
    """How many rectangles cover each cell of a ``unit``-times finer grid (painted)."""
    paint = np.zeros((rows * unit, cols * unit), np.int64)
    for x, y, w, h in (rect * unit).round().astype(int):
        paint[y:y + h, x:x + w] += 1
    return paint


@pytest.fixture
def tiles(tmp_path):
    return make_colour_folder(tmp_path / "tiles", 200, size=16)


def test_flat_cells_stay_whole_and_detail_splits_to_depth():
    grid = make_grid(textured_target(), 16)
    leaves = split_cells(grid, 2, 10.0)
    level_of_cell = np.zeros(len(grid), int)
    np.maximum.at(level_of_cell, leaves.cell, leaves.level.astype(int))
    textured = np.zeros((4, 6), bool)
    textured[:2, :3] = True
    assert np.array_equal(level_of_cell.reshape(4, 6) == 2, textured)
    assert np.array_equal(level_of_cell.reshape(4, 6) == 0, ~textured)
    assert len(leaves) == 18 + 6 * 16
    target_rects = leaves.pixels(16, 16)
    assert target_rects[:4].tolist() == [[0, 0, 4, 4], [4, 0, 4, 4], [0, 4, 4, 4], [4, 4, 4, 4]]
    assert (leaves.pixels(32, 32) == 2 * target_rects).all()
    assert (covered(leaves.rect(), 4, 6, 4) == 1).all()
    # Z order inside a cell: the first split cell's first four leaves are one 2x2 block.
    first = leaves.rect()[:4]
    assert first[:, :2].tolist() == [[0, 0], [0.25, 0], [0, 0.25], [0.25, 0.25]]


def test_split_follows_the_threshold_and_a_half_textured_cell():
    target = np.full((16, 16, 3), 100, np.uint8)
    target[:8, :8] = np.random.default_rng(0).integers(0, 256, (8, 8, 3))
    grid = make_grid(target, 16)
    leaves = split_cells(grid, 3, 10.0)
    # The cell splits; of its quarters only the textured one splits on, to the last level.
    levels = np.bincount(leaves.level, minlength=4)
    assert levels.tolist() == [0, 3, 0, 16]
    assert (covered(leaves.rect(), 1, 1, 8) == 1).all()
    assert len(split_cells(grid, 3, 255.0)) == 1
    assert len(split_cells(grid, 0, 0.0)) == 1


def test_sizes_must_halve():
    check_adaptive(MosaicOptions(cell_px=16, tile_px=32, adaptive=2))
    with pytest.raises(OptionError, match="adaptive") as error:
        check_adaptive(MosaicOptions(cell_px=12, tile_px=32, adaptive=3))
    assert "cell" in str(error.value)
    with pytest.raises(OptionError, match="tile"):
        check_adaptive(MosaicOptions(cell_px=16, tile_px=18, match_px=16, adaptive=2))


def leaves_placements(rect: np.ndarray, rows: int, cols: int, **more) -> Placements:
    count = len(rect)
    return Placements(rows, cols, np.arange(count), np.arange(count),
                      [f"t{i}.png" for i in range(count)], rect=rect, **more)


def test_rectangles_round_trip_through_json_and_csv(tmp_path):
    leaves = split_cells(make_grid(textured_target(), 16), 2, 10.0)
    tint = np.random.default_rng(2).normal(size=(len(leaves), 3))
    placements = leaves_placements(leaves.rect(), 4, 6, tint=tint)
    for name in ("p.json", "p.csv"):
        placements.write(tmp_path / name)
        again = Placements.read(tmp_path / name)
        assert (again.rows, again.cols) == (4, 6)
        assert np.array_equal(again.rect, placements.rect)
        assert np.array_equal(again.tile, placements.tile)
        assert np.array_equal(again.tint, placements.tint)
    document = json.loads((tmp_path / "p.json").read_text())
    assert document["version"] == 3 and len(document["cells"]["rect"]) == len(leaves)
    # A uniform grid keeps the version-2 form, without rectangles.
    uniform = Placements(1, 2, np.zeros(2), np.zeros(2), ["a", "b"])
    assert "rect" not in uniform.to_json()["cells"] and uniform.to_json()["version"] == 2
    with pytest.raises(ValueError, match="no tile grid"):
        placements.tile_grid()


@pytest.mark.parametrize(("change", "problem"), [
    (lambda r: r[:-1], "gaps"),
    (lambda r: np.vstack([r, r[-1:]]), "overlap"),
    (lambda r: np.vstack([r[1:], [[0, 0, 1, 1]]]), "overlap"),
    (lambda r: np.vstack([r[:-1], [[r[-1, 0] + 0.1, r[-1, 1], 0.25, 0.25]]]), "multiple"),
    (lambda r: np.vstack([r[:-1], [[r[-1, 0], r[-1, 1], 0.25, 0.5]]]), "square"),
    (lambda r: np.vstack([r[:-1], [[6, 0, 1, 1]]]), "inside"),
])
def test_rectangles_that_do_not_tile_the_grid_are_refused(tmp_path, change, problem):
    rect = split_cells(make_grid(textured_target(), 16), 2, 10.0).rect()
    check_rects(4, 6, rect)
    bad = change(rect)
    with pytest.raises(ValueError, match=problem):
        check_rects(4, 6, bad)
    document = leaves_placements(rect, 4, 6).to_json()
    count = len(bad)
    cells = document["cells"]
    cells["rect"] = bad.tolist()
    for name in ("tile", "position", "distance", "transform", "tint"):
        cells[name] = (cells[name] * 2)[:count]
    (tmp_path / "bad.json").write_text(json.dumps(document))
    with pytest.raises(Exception, match=problem):
        Placements.read(tmp_path / "bad.json")


def test_each_leaf_gets_its_exact_nearest_tile(tmp_path, tiles):
    target = textured_target()
    mosaic = make_mosaic(target, tiles, cell_px=16, tile_px=16, adaptive=2, detail=10.0,
                         preset="seed", cache_dir=tmp_path / "cache")
    placements = mosaic.placements
    library = np.asarray(mosaic.library.tiles)
    for index, (x, y, w, _) in enumerate(placements.rect):
        left, top, side = int(x * 16), int(y * 16), int(w * 16)
        cell = target[top:top + side, left:left + side][None]
        expected = brute_force(cell, library)
        assert placements.tile[index] == expected.tile[0]
        assert placements.distance[index] == expected.distance[0]
    assert (covered(placements.rect, 4, 6, 4) == 1).all()


def test_repetition_limits_count_leaves_of_every_size(tmp_path, tiles):
    mosaic = make_mosaic(textured_target(), tiles, cell_px=16, tile_px=16, adaptive=2,
                         detail=10.0, preset="balanced", cache_dir=tmp_path / "cache")
    placements = mosaic.placements
    assert placements.adaptive and len(placements) == 114
    assert len(np.unique(placements.tile)) == len(placements)  # max_uses 1: all distinct
    assert mosaic.metrics["max_uses"] == 1 and mosaic.metrics["cells"] == 114
    assert np.abs(placements.tint).sum() > 0  # the preset's tint applies per leaf


def test_spacing_between_leaves_of_several_sizes(tmp_path, tiles):
    mosaic = make_mosaic(textured_target(), tiles, cell_px=16, tile_px=16, adaptive=2,
                         detail=10.0, preset="seed", max_uses=3, min_spacing=2,
                         cache_dir=tmp_path / "cache")
    placements = mosaic.placements
    assert np.bincount(placements.tile).max() <= 3
    repeat = leaf_repetition(placements.tile, placements.rect)["closest_repeat"]
    assert repeat is not None and repeat >= 2
    # Without the spacing the same leaves repeat tiles closer than that.
    free = make_mosaic(textured_target(), tiles, cell_px=16, tile_px=16, adaptive=2,
                       detail=10.0, preset="seed", max_uses=3, cache_dir=tmp_path / "cache")
    assert leaf_repetition(free.placements.tile, free.placements.rect)["closest_repeat"] < 2


def test_a_spacing_refusal_of_split_cells_names_the_tiles_the_leaves_need(tmp_path):
    # Every cell of a 7 x 7 grid split in four: the grid's count (13 tiles for spacing 2)
    # was said first, and once 13 were given, the leaves' 16.
    target = np.random.default_rng(6).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    tiles = make_colour_folder(tmp_path / "tiles", 4, size=16)
    with pytest.raises(OptionError, match="needs at least 16 different tiles.* has 4;"):
        make_mosaic(target, tiles, cell_px=16, tile_px=16, adaptive=1, detail=0.0,
                    preset="seed", min_spacing=2, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("photos", [16, 20])
def test_split_cells_that_a_lattice_of_leaves_spaces_are_placed(tmp_path, photos):
    # A 7 x 7 grid split whole at spacing 2 (a 14 x 14 grid of leaves, 4 leaves apart) was
    # refused with 16 to 24 photos ("found no placement"): 16 classes of leaves fit.
    target = np.random.default_rng(6).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    tiles = make_colour_folder(tmp_path / "tiles", photos, size=16)
    mosaic = make_mosaic(target, tiles, cell_px=16, tile_px=16, adaptive=1, detail=0.0,
                         preset="seed", min_spacing=2, cache_dir=tmp_path / "cache")
    placements = mosaic.placements
    assert len(placements.tile) == 196
    assert leaf_repetition(placements.tile, placements.rect)["closest_repeat"] >= 2


def test_split_cells_that_only_an_exact_solve_spaces_are_placed(tmp_path):
    # 3 x 5 cells split whole (6 x 10 leaves), 19 photos of at most 4 uses, 2 apart: the
    # lattice classes need 20 photos, and the exact solve skipped adaptive leaves.
    target = np.random.default_rng(6).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    tiles = make_colour_folder(tmp_path / "tiles", 19, size=16)
    mosaic = make_mosaic(target, tiles, cell_px=16, tile_px=16, adaptive=1, detail=0.0,
                         preset="seed", min_spacing=2, max_uses=4,
                         cache_dir=tmp_path / "cache")
    placements = mosaic.placements
    assert len(placements.tile) == 60
    assert np.bincount(placements.tile).max() <= 4
    assert leaf_repetition(placements.tile, placements.rect)["closest_repeat"] >= 2


@pytest.mark.parametrize("seed", range(6))
def test_layout_windows_hold_every_close_pair_and_only_close_pairs(seed):
    from mosaicist.match._assign import _layout_windows

    rng = np.random.default_rng(seed)
    unit, spacing = 4, int(rng.integers(2, 4))
    centre = np.unique(rng.integers(0, 40, (30, 2)), axis=0)
    layout = Layout(centre, unit)
    leaves = len(centre)
    row = np.repeat(np.arange(leaves), 2)
    tile_id = np.tile([0, 1], leaves)
    window, member = _layout_windows(layout, spacing, row, tile_id)
    together = set()
    for group in np.unique(window):
        pairs = member[window == group]
        assert len(set(tile_id[pairs])) == 1
        cells = row[pairs]
        for a in cells:
            for b in cells:
                if a < b:
                    assert np.abs(centre[a] - centre[b]).max() < spacing * unit
                    together.add((a, b))
    for a in range(leaves):
        for b in range(a + 1, leaves):
            if np.abs(centre[a] - centre[b]).max() < spacing * unit:
                assert (a, b) in together


def test_layout_classes_keep_each_class_apart():
    from mosaicist.match._assign import layout_classes

    # Leaves of two sizes: the left half of a 4 x 4 grid split in four, the right whole.
    unit = 4
    centres = [(y * 2 + 1, x * 2 + 1) for y in range(8) for x in range(4)]
    centres += [(y * 4 + 2, x * 4 + 2) for y in range(4) for x in range(2, 4)]
    layout = Layout(np.array(centres, np.int64), unit)
    for spacing in (2, 3):
        kind = layout_classes(layout, spacing)
        assert kind is not None
        close, _ = spacing_violations(kind, 0, 0, spacing, layout)
        assert not len(close)
        assert len(np.unique(kind)) <= (2 * spacing + 3) ** 2


def test_leaf_spacing_is_the_grid_spacing_for_whole_cells():
    # Level-0 leaves on a 3x3 grid: the layout's distance is the uniform grid's.
    rows, cols = np.divmod(np.arange(9), 3)
    leaves = Leaves(3, 3, 2, np.zeros(9, np.int8), rows * 4, cols * 4)
    tile = np.array([0, 1, 0, 2, 3, 4, 0, 5, 6])
    for spacing in (2, 3):
        expected = spacing_violations(tile, 3, 3, spacing)
        found = spacing_violations(tile, 3, 3, spacing, leaves.layout())
        assert sorted(zip(*expected, strict=True)) == sorted(zip(*found, strict=True))
    # Two quarter cells side by side are half a cell apart: too close for spacing 1 < D.
    layout = Layout(np.array([[1, 1], [1, 3]]), 4)
    assert len(spacing_violations(np.array([5, 5]), 1, 1, 2, layout)[0]) == 1


def test_small_leaves_are_drawn_at_their_size(tmp_path, tiles):
    mosaic = make_mosaic(textured_target(), tiles, cell_px=16, tile_px=32, adaptive=2,
                         detail=10.0, preset="seed", cache_dir=tmp_path / "cache")
    image = mosaic.image
    assert image.shape == (4 * 32, 6 * 32, 3)
    library = np.asarray(mosaic.library.tiles)  # indexed at 32 px, drawn at 32 px
    placements = mosaic.placements
    for index in np.flatnonzero(placements.rect[:, 2] == 0.25)[:5]:
        x, y = (placements.rect[index, :2] * 32).astype(int)
        tile = library[placements.tile[index]].astype(float)
        expected = np.rint(tile.reshape(8, 4, 8, 4, 3).mean(axis=(1, 3)))
        assert np.array_equal(image[y:y + 8, x:x + 8], expected)
    whole = np.flatnonzero(placements.rect[:, 2] == 1)[0]
    x, y = (placements.rect[whole, :2] * 32).astype(int)
    assert np.array_equal(image[y:y + 32, x:x + 32], library[placements.tile[whole]])


def _make_adaptive(tmp_path, tiles, *extra):
    """``make`` of the textured target in adaptive cells to out.png and p.json, by the CLI."""
    Image.fromarray(textured_target()).save(tmp_path / "target.png")
    return CliRunner().invoke(main, [
        "make", str(tmp_path / "target.png"), "--tiles", str(tiles), "--cell", "16",
        "--tile-px", "16", "--adaptive", "2", "--detail", "10", "--preset", "seed",
        "-o", str(tmp_path / "out.png"), "--placements", str(tmp_path / "p.json"),
        "--cache-dir", str(tmp_path / "cache"), *extra])


def test_cli_adaptive_end_to_end(tmp_path, tiles):
    runner = CliRunner()
    result = _make_adaptive(tmp_path, tiles)
    assert result.exit_code == 0, result.output
    assert "split into 114" in result.output
    assert Image.open(tmp_path / "out.png").size == (96, 64)
    placements = Placements.read(tmp_path / "p.json")
    assert placements.options.adaptive == 2 and len(placements) == 114
    bad = runner.invoke(main, [
        "make", str(tmp_path / "target.png"), "--tiles", str(tiles), "--cell", "12",
        "--adaptive", "3", "-o", str(tmp_path / "x.png"),
        "--cache-dir", str(tmp_path / "cache")])
    assert bad.exit_code != 0 and "--adaptive 3" in bad.output
    assert "Traceback" not in bad.output


def test_score_measures_the_repetition_of_adaptive_placements(tmp_path, tiles):
    # score --placements raised a ValueError traceback for adaptive cells (no tile grid).
    import json

    runner = CliRunner()
    made = _make_adaptive(tmp_path, tiles, "--report", str(tmp_path / "r.json"))
    assert made.exit_code == 0, made.output
    report = json.loads((tmp_path / "r.json").read_text())["metrics"]
    scored = runner.invoke(main, [
        "score", str(tmp_path / "out.png"), str(tmp_path / "target.png"), "--cell", "16",
        "--placements", str(tmp_path / "p.json"), "--json", str(tmp_path / "s.json")])
    assert scored.exit_code == 0, scored.output
    metrics = json.loads((tmp_path / "s.json").read_text())
    for key in ("distinct_tiles", "max_uses", "closest_repeat"):
        assert metrics[key] == report[key], key
    wrong = runner.invoke(main, [
        "score", str(tmp_path / "out.png"), str(tmp_path / "target.png"), "--cell", "8",
        "--placements", str(tmp_path / "p.json")])
    assert wrong.exit_code != 0 and "Traceback" not in wrong.output


def test_viewer_page_maps_points_to_leaves(tmp_path, tiles):
    import base64

    from mosaicist.viewer._page import read_viewer_data

    mosaic = make_mosaic(textured_target(), tiles, cell_px=16, tile_px=16, adaptive=2,
                         detail=10.0, preset="seed", cache_dir=tmp_path / "cache")
    mosaic.write(tmp_path / "m.dzi")
    data = read_viewer_data(tmp_path / "m.html")
    start = np.frombuffer(base64.b64decode(data["leaf_start"]), "<u4")
    packed = np.frombuffer(base64.b64decode(data["leaves"]), "<u1").reshape(-1, 3)
    index = np.frombuffer(base64.b64decode(data["cells"]), "<u1")
    assert data["leaf_depth"] == 2 and len(start) == 4 * 6 + 1 and start[-1] == 114
    rect = mosaic.placements.rect
    cell = (np.floor(rect[:, 1]) * 6 + np.floor(rect[:, 0])).astype(int)
    order = np.argsort(cell, kind="stable")
    assert np.array_equal(packed[:, 0], np.rint(-np.log2(rect[order, 2])))
    assert np.array_equal(packed[:, 1], np.rint((rect[order, 1] % 1) * 4))
    assert np.array_equal(packed[:, 2], np.rint((rect[order, 0] % 1) * 4))
    ids = np.asarray(mosaic.placements.source_ids)[order]
    assert [data["sources"][i] for i in index] == ids.tolist()


def test_viewer_pointer_finds_the_leaf_in_a_browser(tmp_path, tiles):
    from conftest import sync_playwright_or_skip

    sync_playwright = sync_playwright_or_skip()
    mosaic = make_mosaic(textured_target(), tiles, cell_px=16, tile_px=16, adaptive=2,
                         detail=10.0, preset="seed", cache_dir=tmp_path / "cache")
    mosaic.write(tmp_path / "m.dzi")
    placements = mosaic.placements
    picks = [0, 1, 5, 20, 60, 113]
    points = [[float((placements.rect[i, 0] + placements.rect[i, 2] / 2) * 16),
               float((placements.rect[i, 1] + placements.rect[i, 3] / 2) * 16)] for i in picks]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                             args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto((tmp_path / "m.html").as_uri())
            page.wait_for_function("() => window.mosaicist !== undefined", timeout=30_000)
            found = page.evaluate(
                "(points) => points.map(([x, y]) => window.mosaicist.cellAt(x, y))", points)
        finally:
            browser.close()
    for index, cell in zip(picks, found, strict=True):
        x, y, w, _ = placements.rect[index]
        assert cell["source"] == placements.source_ids[index]
        assert (cell["row"], cell["col"]) == (int(y), int(x))
        assert cell.get("level", 0) == round(-np.log2(w))


def test_check_adaptive_says_once_for_one_level():
    # It said "halves cells 1 times".
    with pytest.raises(OptionError, match=r"^adaptive 1 halves cells once, so cell sizes must "
                                          r"divide by 2: cell is 15x15 px; cell_px 14 or 16 "
                                          r"would do$"):
        check_adaptive(MosaicOptions(cell_px=15, tile_px=32, adaptive=1))
    with pytest.raises(OptionError, match="halves cells 3 times"):
        check_adaptive(MosaicOptions(cell_px=12, tile_px=32, adaptive=3))


def test_a_detail_without_adaptive_cells_is_noted_as_ignored(tmp_path, capsys):
    # '--detail 5' without '--adaptive' ran as if it were not given, without a word.
    tiles = make_colour_folder(tmp_path / "tiles", 6, size=8)
    target = tmp_path / "target.png"
    Image.fromarray(np.full((16, 24, 3), 90, np.uint8)).save(target)
    base = {"preset": "seed", "cell_px": 8, "tile_px": 8}
    made = {"cache_dir": tmp_path / "cache", "quiet": False}
    make_mosaic(target, tiles, {**base, "detail": 5.0}, **made)
    assert "detail applies only with adaptive cells" in capsys.readouterr().err
    make_mosaic(target, tiles, {**base, "detail": 5.0, "adaptive": 1}, **made)
    make_mosaic(target, tiles, base, **made)
    assert "detail" not in capsys.readouterr().err


@pytest.mark.parametrize(("low", "high"), [(10, 30), (0, 255), (100, 101), (7, 250)])
def test_a_cell_whose_spread_is_exactly_the_detail_stays_whole(low, high):
    # Grey stripes 10 and 30 have a luma spread of exactly 10, yet '--detail 10' split the
    # cell: luma in float32 made those greys 10.0000002 and 30.0000006.
    target = np.full((32, 32, 3), low, np.uint8)
    target[:, ::2] = high
    grid = make_grid(target, 32)
    spread = (high - low) / 2
    assert len(split_cells(grid, 2, spread)) == 1
    assert len(split_cells(grid, 2, float(np.nextafter(spread, 0)))) == 16


@pytest.mark.parametrize("detail", [float("nan"), float("inf"), -1.0, 256.0])
def test_split_cells_refuses_a_detail_out_of_range(detail):
    grid = make_grid(textured_target(), 16)
    with pytest.raises(OptionError, match="detail"):
        split_cells(grid, 1, detail)


def test_sizes_that_do_not_halve_name_the_setting_and_widths_that_do(tmp_path):
    # '--cells 50 --adaptive 2 --aspect 3:2' said only "tile is 32x21 px": the default
    # tile width's rounded height, neither the flag to change nor a width that works.
    with pytest.raises(OptionError, match=r"tile is 32x21 px; tile_px 24 or 36 would do$"):
        check_adaptive(MosaicOptions(cell_px=24, aspect="3:2", adaptive=2))
    target = tmp_path / "target.png"
    Image.fromarray(textured_target()).save(target)
    result = CliRunner().invoke(main, ["make", str(target), "--tiles", str(tmp_path),
                                       "--adaptive", "1", "--cell", "16", "--match-px", "7"])
    assert result.exit_code != 0
    assert result.output.strip().endswith("match is 7x7 px; --match-px 6 or 8 would do")
