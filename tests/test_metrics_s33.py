"""Quality metrics against independent references, and ``score`` on hostile input.

The references here are written out plainly (box means by pixel replication,
scikit-image's SSIM and CIEDE2000, pairs of cells compared one by one), so
that a shortcut in :mod:`mosaicist.metrics` that drifts from its definition
shows. ``score`` of a mosaic made with JSON placements must measure the grid
``make`` measured, also where ``--print`` moved it off the target's centre.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_colour_folder
from PIL import Image

from mosaicist import make_mosaic
from mosaicist.aspect import height_for
from mosaicist.cli import main
from mosaicist.errors import OptionError
from mosaicist.metrics import repetition_metrics, score_mosaic
from mosaicist.placements import Placements

FIDELITY = ("psnr_full", "psnr_view", "ssim_view", "ssim_rgb_view", "ciede2000_mean_view",
            "ciede2000_p95_view", "colourfulness_view", "target_colourfulness_view")


# --- references ---------------------------------------------------------------------------


def _area_means(picture: np.ndarray, cell: tuple[int, int], view: tuple[int, int]) -> np.ndarray:
    """Every ``cell`` (w, h) block reduced to ``view`` (w, h) by exact area means: each
    pixel repeated ``view`` times, then blocks of ``cell`` averaged (floats)."""
    (cell_w, cell_h), (view_w, view_h) = cell, view
    grown = np.repeat(np.repeat(picture.astype(np.float64), view_h, 0), view_w, 1)
    rows, cols = grown.shape[0] // cell_h, grown.shape[1] // cell_w
    return grown.reshape(rows, cell_h, cols, cell_w, 3).mean((1, 3))


def _scaled_rounded(crop: np.ndarray, cell: tuple[int, int], tile: tuple[int, int]) -> np.ndarray:
    """``crop`` area-scaled so each cell becomes a tile, rounded half to even, exactly."""
    (cell_w, cell_h), (tile_w, tile_h) = cell, tile
    grown = np.repeat(np.repeat(crop.astype(np.int64), tile_h, 0), tile_w, 1)
    sums = grown.reshape(grown.shape[0] // cell_h, cell_h, grown.shape[1] // cell_w,
                         cell_w, 3).sum((1, 3))
    quotient, remainder = np.divmod(sums, cell_w * cell_h)
    twice = 2 * remainder
    up = (twice > cell_w * cell_h) | ((twice == cell_w * cell_h) & (quotient % 2 == 1))
    return quotient + up


def _colourfulness(picture: np.ndarray) -> float:
    red, green, blue = picture[..., 0], picture[..., 1], picture[..., 2]
    red_green, yellow_blue = red - green, 0.5 * (red + green) - blue
    return float(np.hypot(red_green.std(), yellow_blue.std())
                 + 0.3 * np.hypot(red_green.mean(), yellow_blue.mean()))


def _reference(mosaic, crop, cell, tile, view) -> dict:
    skimage_metrics = pytest.importorskip("skimage.metrics")
    skimage_colour = pytest.importorskip("skimage.color")
    seen, wanted = _area_means(mosaic, tile, view), _area_means(crop, cell, view)
    full_error = np.mean((mosaic - _scaled_rounded(crop, cell, tile)) ** 2)
    view_error = np.mean((seen - wanted) ** 2)
    window = min(7, *seen.shape[:2])
    window -= 1 - window % 2
    luma = np.array([0.299, 0.587, 0.114])
    differences = skimage_colour.deltaE_ciede2000(skimage_colour.rgb2lab(wanted / 255),
                                                  skimage_colour.rgb2lab(seen / 255))
    return {
        "psnr_full": min(100.0, 10 * math.log10(255**2 / full_error)) if full_error else 100.0,
        "psnr_view": min(100.0, 10 * math.log10(255**2 / view_error)) if view_error else 100.0,
        "ssim_view": None if window < 3 else skimage_metrics.structural_similarity(
            wanted @ luma, seen @ luma, data_range=255, win_size=window),
        "ssim_rgb_view": None if window < 3 else skimage_metrics.structural_similarity(
            wanted, seen, channel_axis=2, data_range=255, win_size=window),
        "ciede2000_mean_view": float(differences.mean()),
        "ciede2000_p95_view": float(np.percentile(differences, 95)),
        "colourfulness_view": _colourfulness(seen),
        "target_colourfulness_view": _colourfulness(wanted),
    }


def _target(kind: str, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "grey":
        return np.repeat(rng.integers(0, 256, (height, width, 1)), 3, 2).astype(np.uint8)
    if kind == "dark":
        return rng.integers(0, 6, (height, width, 3)).astype(np.uint8)
    if kind == "bright":
        return rng.integers(250, 256, (height, width, 3)).astype(np.uint8)
    return rng.integers(0, 256, (height, width, 3)).astype(np.uint8)


@pytest.mark.parametrize(
    ("kind", "aspect", "cell_px", "tile_px", "view_px", "cols", "rows"),
    [
        ("colour", (1, 1), 8, 16, 4, 7, 5),     # the judge's own case
        ("grey", (1, 1), 10, 10, 4, 5, 3),      # sizes 4 does not divide
        ("dark", (3, 2), 12, 9, 4, 4, 5),       # 3:2 cells, 4 x 3 at view
        ("bright", (2, 3), 7, 5, 3, 3, 4),      # 2:3 cells, odd sizes throughout
        ("colour", (1, 1), 13, 6, 1, 9, 2),     # 1 pixel a cell: 9 x 2, no SSIM
        ("colour", (4, 3), 5, 11, 5, 2, 7),     # tiles larger, not multiples
    ],
)
def test_score_equals_an_independent_reference(tmp_path, kind, aspect, cell_px, tile_px,
                                               view_px, cols, rows):
    rng = np.random.default_rng(cell_px * 31 + tile_px)
    cell = (cell_px, height_for(cell_px, aspect))
    tile = (tile_px, height_for(tile_px, aspect))
    view = (view_px, height_for(view_px, aspect))
    # A target a few pixels over whole cells: the centre crop is part of the test.
    width, height = cols * cell[0] + cell[0] - 1, rows * cell[1] + 1
    target = _target(kind, width, height, rng)
    left, top = (width - cols * cell[0]) // 2, (height - rows * cell[1]) // 2
    crop = target[top:top + rows * cell[1], left:left + cols * cell[0]]
    rough = np.asarray(Image.fromarray(crop).resize((cols * tile[0], rows * tile[1]),
                                                    Image.NEAREST), np.int64)
    mosaic = np.clip(rough + rng.integers(-40, 41, rough.shape), 0, 255).astype(np.uint8)
    Image.fromarray(target).save(tmp_path / "target.png")
    Image.fromarray(mosaic).save(tmp_path / "mosaic.png")

    scored = score_mosaic(tmp_path / "mosaic.png", tmp_path / "target.png", cell_px,
                          view_px=view_px, aspect=aspect)

    expected = _reference(mosaic.astype(np.int64), crop, cell, tile, view)
    for key, value in expected.items():
        if value is None:
            assert scored[key] is None, key
        else:
            assert scored[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key


def _closest_by_pairs(grid: np.ndarray) -> dict:
    cells: dict = {}
    for (row, col), tile in np.ndenumerate(grid):
        cells.setdefault(tile, []).append((row, col))
    apart = [max(abs(a - c), abs(b - d)) for places in cells.values()
             for (a, b), (c, d) in itertools.combinations(places, 2)]
    return {"distinct_tiles": len(cells), "max_uses": max(map(len, cells.values())),
            "closest_repeat": min(apart) if apart else None}


def test_repetition_equals_every_pair_compared():
    rng = np.random.default_rng(33)
    for _ in range(150):
        rows, cols = (int(side) for side in rng.integers(1, 16, 2))
        shape = rng.integers(3)
        if shape == 0:  # random, from few tiles to more tiles than cells
            grid = rng.integers(0, int(rng.integers(1, rows * cols + 3)), (rows, cols))
        elif shape == 1:  # staggered stripes
            down, across = (int(step) for step in rng.integers(1, 7, 2))
            grid = (np.arange(rows)[:, None] * down + np.arange(cols) * across) % int(
                rng.integers(1, 12))
        else:  # every tile once but one, placed anywhere
            grid = rng.permutation(rows * cols).reshape(rows, cols)
            grid[rng.integers(rows), rng.integers(cols)] = grid[rng.integers(rows),
                                                                rng.integers(cols)]
        assert repetition_metrics(grid) == _closest_by_pairs(grid), grid.tolist()


def test_score_json_of_black_on_black_is_strict_json(tmp_path):
    """Flat black against flat black: PSNR without an error, SSIM of no variance, CIEDE2000
    of nothing; every figure a plain number (no NaN or Infinity tokens) or null."""
    black = np.zeros((8, 8, 3), np.uint8)
    Image.fromarray(black).save(tmp_path / "target.png")
    Image.fromarray(black[:2, :2]).save(tmp_path / "small.png")
    Image.fromarray(black).save(tmp_path / "mosaic.png")
    for mosaic, view in (("mosaic.png", "4"), ("small.png", "1")):
        written = tmp_path / f"{mosaic}.{view}.json"
        result = CliRunner().invoke(main, ["score", str(tmp_path / mosaic),
                                           str(tmp_path / "target.png"), "--cell", "4",
                                           "--view-px", view, "--json", str(written)])
        assert result.exit_code == 0, result.output
        metrics = json.loads(written.read_text(), parse_constant=pytest.fail)
        assert metrics["psnr_view"] == metrics["psnr_full"] == 100.0
        assert metrics["ciede2000_mean_view"] == 0.0
        assert metrics["ssim_view"] == (1.0 if view == "4" else None)


# --- JSON placements place the grid -------------------------------------------------------


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return make_colour_folder(tmp_path_factory.mktemp("tiles"), 12)


@pytest.mark.parametrize(
    ("width", "height"),
    [
        (64, 30),  # the print's 1:1 crop holds 7x7 cells, the whole target 16x7
        (30, 29),  # 7x7 cells either way, but the print's grid starts a pixel to the left
    ],
)
def test_score_with_json_placements_measures_the_grid_a_print_make_measured(
        tmp_path, library, width, height):
    """``make --print`` crops the target to the print's shape before cutting cells: its
    grid is not the whole target's centre grid. ``score`` refused such a mosaic (the
    size fits no grid of the target) or measured it a pixel off; JSON placements record
    where the grid is."""
    target = tmp_path / "target.png"
    Image.fromarray(np.random.default_rng(width).integers(
        0, 256, (height, width, 3), dtype=np.uint8)).save(target)
    made = make_mosaic(target, library, preset="seed", cell_px=4, print_size="1x1in",
                       dpi=24, cache_dir=tmp_path / "cache")
    centre = ((width - width // 4 * 4) // 2, (height - height // 4 * 4) // 2)
    assert made.placements.crop != centre  # else this test tests nothing
    Image.fromarray(made.image).save(tmp_path / "mosaic.png")
    made.placements.write_json(tmp_path / "placements.json")

    scored = score_mosaic(tmp_path / "mosaic.png", target, 4,
                          tile_grid=Placements.read(tmp_path / "placements.json"))

    assert (scored["rows"], scored["cols"]) == (made.grid.rows, made.grid.cols)
    assert {key: scored[key] for key in FIDELITY} == {key: made.metrics[key]
                                                      for key in FIDELITY}


@pytest.fixture(scope="module")
def rectangular(tmp_path_factory, library):
    """A 3:2 mosaic (6x6 cells of 6x4 px) with its JSON placements, and its target."""
    root = tmp_path_factory.mktemp("rectangular")
    target = root / "target.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (26, 40, 3), dtype=np.uint8)
                    ).save(target)
    made = make_mosaic(target, library, preset="seed", cell_px=6, tile_px=9, aspect="3:2",
                       cache_dir=root / "cache")
    Image.fromarray(made.image).save(root / "mosaic.png")
    made.placements.write_json(root / "placements.json")
    return root, target, made


def test_score_of_a_rectangular_mosaic_with_its_json_placements_equals_its_report(
        rectangular):
    root, target, made = rectangular
    placements = Placements.read(root / "placements.json")
    scored = score_mosaic(root / "mosaic.png", target, 6, aspect="3:2", tile_grid=placements)
    assert (scored["cell_px"], scored["aspect"]) == (6, "3:2")
    assert {key: scored[key] for key in FIDELITY} == {key: made.metrics[key]
                                                      for key in FIDELITY}


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (["--cell", "5", "--aspect", "3:2"], "are for --cell 6, not --cell 5"),
        # An --aspect not given is the recorded one: only one given otherwise differs.
        (["--cell", "6", "--aspect", "1:1"], "are for --aspect 3:2, not --aspect 1:1"),
        (["--cell", "5", "--aspect", "1:1"],
         "are for --cell 6 and --aspect 3:2, not --cell 5 and --aspect 1:1"),
        (["--cell", "5"], "are for --cell 6, not --cell 5"),
    ],
)
def test_score_refuses_cells_other_than_the_json_placements_record(rectangular, given, said):
    """Other cells cut the target elsewhere: measured, they described another region."""
    root, target, _ = rectangular
    result = CliRunner().invoke(main, ["score", str(root / "mosaic.png"), str(target),
                                       "--placements", str(root / "placements.json"), *given])
    assert result.exit_code == 1
    assert result.stderr == f"mosaicist: error: {root / 'placements.json'}: the placements {said}\n"


def test_score_refuses_json_placements_whose_grid_the_target_cannot_hold(rectangular,
                                                                           tmp_path):
    root, _, _ = rectangular
    smaller = tmp_path / "smaller.png"
    Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(smaller)
    placements = Placements.read(root / "placements.json")
    # The target they record is named first: this one is not it.
    with pytest.raises(OptionError, match=r"the placements are for another target: "
                       r".*smaller.png is not the picture they were made from \(40x26 px "
                       r"then, 40x20 now\)"):
        score_mosaic(root / "mosaic.png", smaller, 6, aspect="3:2", tile_grid=placements)
    # Placements that record no target's pixels (earlier versions): the grid's fit says it.
    placements.target_pixels = None
    with pytest.raises(OptionError, match=r"the placements are 6x6 cells from \(2, 1\) but "
                       r".*smaller.png is 40x20 pixels, too small for them at cell_px 6"):
        score_mosaic(root / "mosaic.png", smaller, 6, aspect="3:2", tile_grid=placements)


def test_views_too_large_for_memory_are_refused_before_measuring(tmp_path, monkeypatch):
    # score --view-px 64 on 100 x 100 cells ran to a MemoryError (or the kernel's killer)
    # after minutes; it is refused from the grid's size, naming --view-px.
    import mosaicist._runtime

    rng = np.random.default_rng(3)
    target = tmp_path / "t.png"
    mosaic = tmp_path / "m.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(target)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(mosaic)
    monkeypatch.setattr(mosaicist._runtime, "available_memory", lambda: 10_000_000)
    score_mosaic(mosaic, target, 8, view_px=4)  # 64 cells of 16 view pixels: fits
    with pytest.raises(OptionError, match=r"view_px 64 on 64 cells needs about .* smaller "
                                          r"view_px") as error:
        score_mosaic(mosaic, target, 8, view_px=64)
    assert error.value.parameters == ("view_px",)
