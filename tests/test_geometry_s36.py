"""An oracle for the layout over seeded random geometries (session 36).

Each random combination of target size (1 px strips, primes, wide and tall),
cell and tile widths, aspect, cell count, print size and adaptive depth is
either refused in one line or made with tiles of flat, distinct colours, and
then checked against what the README promises: the cells (or adaptive
leaves) cover the grid's window of the target and the output exactly once,
the output is ``cols * tile_px`` by ``rows * tile height``, each cell is
drawn in its tile's colour where the placements say, and each cell's target
pixels are the ones under its window.

Found here:

* ``--adaptive``'s advice named widths whose height at the aspect is over
  the 1024 px a side may be (``--cell 640 or 768 would do`` at 2:3, where
  768 px is 1152 tall and refused in turn).
* ``--cells`` with ``--adaptive 1`` on a target too small said "its sides
  halve 1 times".
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mosaicist import make_mosaic
from mosaicist.adaptive import check_adaptive
from mosaicist.aspect import height_for, parse_aspect
from mosaicist.crop import centre_window
from mosaicist.errors import MosaicistError, OptionError
from mosaicist.options import MosaicOptions
from mosaicist.sizing import cell_px_for_cells, options_plan, plan_sizes

#: Flat tile colours, all distinct: a drawn block's colour says which tile it is.
COLOURS = np.array([((index * 53) % 256, (index * 97 + 30) % 256, (index * 151 + 60) % 256)
                    for index in range(12)], np.uint8)


@pytest.fixture(scope="module")
def flat_tiles(tmp_path_factory) -> Path:
    """A folder of 12 flat-coloured 40 px photos, t000.png ... t011.png (library order)."""
    folder = tmp_path_factory.mktemp("flat-tiles")
    for index, colour in enumerate(COLOURS):
        Image.fromarray(np.full((40, 40, 3), colour, np.uint8)).save(folder / f"t{index:03d}.png")
    return folder


def random_geometry(rng: random.Random) -> tuple[tuple[int, int], dict]:
    """A target size and a random combination of the layout settings."""
    width = rng.choice([1, 7, 13, 31, 97, rng.randint(1, 130), rng.randint(40, 130)])
    height = rng.choice([1, 5, 11, 29, 89, rng.randint(1, 130), rng.randint(40, 130)])
    settings: dict = {"cell_px": rng.choice([1, 2, 3, 4, 8, 12, rng.randint(1, 20)]),
                      "tile_px": rng.choice([1, 2, 4, 5, 8, 16, rng.randint(1, 24)])}
    if rng.random() < 0.5:
        sides = [1, 2, 3, 16, rng.randint(1, 16)]
        settings["aspect"] = f"{rng.choice(sides)}:{rng.choice(sides)}"
    if rng.random() < 0.3:
        del settings["cell_px"]
        settings["cells"] = rng.randint(1, 60)
    if rng.random() < 0.3:
        del settings["tile_px"]
        settings["print_size"] = f"{rng.randint(1, 10)}x{rng.randint(1, 10)}cm"
        settings["dpi"] = rng.choice([10, 30, 72])
    if rng.random() < 0.4:
        settings["adaptive"] = rng.randint(1, 3)
        settings["detail"] = rng.choice([0, 5, 50])
    return (width, height), settings


def check_layout(target: np.ndarray, settings: dict, mosaic) -> None:
    """The documented layout of ``mosaic``, made from ``target`` with flat tiles."""
    options, placements = mosaic.options, mosaic.placements
    plan = options_plan(MosaicOptions(**settings), (target.shape[1], target.shape[0]))
    tile_w, tile_h = options.tile_px, options.tile_height
    cell_w, cell_h = options.cell_px, options.cell_height
    rows, cols = placements.rows, placements.cols
    assert (rows, cols) == (plan.rows, plan.cols)
    assert (cell_w, cell_h, tile_w, tile_h) == (plan.cell_px, plan.cell_height, plan.tile_px,
                                                plan.tile_height)
    # The output is cols * tile_px by rows * tile height, and the plan says so.
    assert mosaic.image.shape == (rows * tile_h, cols * tile_w, 3)
    assert plan.output_size == (cols * tile_w, rows * tile_h)
    # The grid's window is centred in the print crop (or the target), rounding down: the odd
    # pixel is left on the right and at the bottom.
    left, top, grid_w, grid_h = plan.grid_crop
    crop_left, crop_top, crop_w, crop_h = plan.crop
    assert (left - crop_left, top - crop_top) == ((crop_w - grid_w) // 2, (crop_h - grid_h) // 2)
    assert (grid_w, grid_h) == (cols * cell_w, rows * cell_h)
    assert tuple(placements.crop) == (left, top)
    window = target[top:top + grid_h, left:left + grid_w]
    if placements.rect is None:
        rect = np.array([[col, row, 1, 1] for row in range(rows) for col in range(cols)],
                        np.float64)
    else:
        rect = placements.rect
    # Paint each cell's id in the target's window and in the output: each pixel once.
    target_ids = np.full((grid_h, grid_w), -1, np.int64)
    output_ids = np.full(mosaic.image.shape[:2], -1, np.int64)
    level0 = mosaic.grid.cells.reshape(rows, cols, cell_h, cell_w, 3)
    for cell, (x, y, w, h) in enumerate(rect):
        tx, ty, tw, th = (int(round(value * size)) for value, size in
                          ((x, cell_w), (y, cell_h), (w, cell_w), (h, cell_h)))
        ox, oy, ow, oh = (int(round(value * size)) for value, size in
                          ((x, tile_w), (y, tile_h), (w, tile_w), (h, tile_h)))
        assert (target_ids[ty:ty + th, tx:tx + tw] == -1).all(), f"cell {cell} overlaps"
        assert (output_ids[oy:oy + oh, ox:ox + ow] == -1).all(), f"cell {cell} overlaps"
        target_ids[ty:ty + th, tx:tx + tw] = cell
        output_ids[oy:oy + oh, ox:ox + ow] = cell
        # Drawn in its tile's flat colour, where the placements put it.
        drawn = mosaic.image[oy:oy + oh, ox:ox + ow].reshape(-1, 3)
        assert (drawn == COLOURS[placements.tile[cell]]).all(), f"cell {cell} drawn elsewhere"
        # Its level-0 cell's pixels are the target's under the cell's window.
        row, col = int(y), int(x)
        assert np.array_equal(level0[row, col], window[row * cell_h:(row + 1) * cell_h,
                                                       col * cell_w:(col + 1) * cell_w])
    assert (target_ids >= 0).all() and (output_ids >= 0).all(), "a gap between cells"
    if placements.rect is not None:
        # Leaves halve a cell (and its tile) exactly: whole pixels, at most DEPTH times.
        sides = np.rint(1 / rect[:, 2]).astype(np.int64)
        assert (rect[:, 2] == rect[:, 3]).all() and (sides <= 1 << options.adaptive).all()


@pytest.mark.parametrize("seed", range(6))
def test_random_geometries_cover_the_grid_once_and_draw_each_cell_in_place(tmp_path,
                                                                           flat_tiles, seed):
    rng = random.Random(3600 + seed)
    made = refused = 0
    while made < 3:
        size, settings = random_geometry(rng)
        width, height = size
        target = np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)
        try:
            plan = plan_sizes(size, **{name: value for name, value in settings.items()
                                       if name != "detail"})
            if plan.output_size[0] * plan.output_size[1] > 200_000:
                continue
            mosaic = make_mosaic(target, flat_tiles, preset="seed", compute_metrics=False,
                                 cache_dir=tmp_path / "cache", **settings)
        except MosaicistError as error:
            # Refused: one line, naming a setting or the target.
            message = str(error)
            assert "\n" not in message and message, (size, settings)
            assert re.search(r"^target: |cells|cell_px|tile_px|match_px|adaptive|print_size|"
                             r"aspect|dpi", message), message
            refused += 1
            continue
        check_layout(target, settings, mosaic)
        made += 1


@pytest.mark.parametrize("size, settings", [
    ((1, 1), {"cell_px": 1, "tile_px": 1}),                                 # one pixel
    ((300, 1), {"cell_px": 1, "tile_px": 3, "aspect": "16:1"}),             # a 1 px strip
    ((1, 300), {"cell_px": 1, "tile_px": 2, "aspect": "1:16"}),             # a tall strip
    ((97, 200), {"cell_px": 97, "tile_px": 5}),                             # one column
    ((97, 89), {"cell_px": 6, "tile_px": 8, "adaptive": 1, "detail": 0}),   # primes
    ((131, 67), {"cell_px": 16, "tile_px": 16, "aspect": "4:3", "adaptive": 2, "detail": 5}),
    ((100, 70), {"cells": 12, "print_size": "6x3cm", "dpi": 30, "aspect": "2:1",
                 "adaptive": 1, "detail": 0}),
])
def test_extreme_geometries_cover_the_grid_once_and_draw_each_cell_in_place(
        tmp_path, flat_tiles, size, settings):
    width, height = size
    target = np.random.default_rng(7).integers(0, 256, (height, width, 3), np.uint8)
    mosaic = make_mosaic(target, flat_tiles, preset="seed", compute_metrics=False,
                         cache_dir=tmp_path / "cache", **settings)
    check_layout(target, settings, mosaic)


@pytest.mark.parametrize("photo_size", [(41, 30), (30, 41), (40, 31), (50, 3), (7, 50)])
@pytest.mark.parametrize("aspect", ["1:1", "3:2", "5:1"])
def test_tiles_are_cut_from_the_documented_centre_window(tmp_path, photo_size, aspect):
    # A photo whose every pixel differs: the tile drawn at the window's own size is the
    # photo's largest window of the aspect, centred, rounding down (the odd pixel is left on
    # the right or at the bottom).
    width, height = photo_size
    y, x = np.mgrid[0:height, 0:width]
    photo = np.stack([x * 5, y * 5, x * 3 + y], -1).astype(np.uint8)
    folder = tmp_path / "photo"
    folder.mkdir()
    Image.fromarray(photo).save(folder / "p.png")
    window = centre_window(width, height, parse_aspect(aspect))
    assert (window.left, window.top) == ((width - window.width) // 2,
                                         (height - window.height) // 2)
    if height_for(window.width, parse_aspect(aspect)) != window.height:
        pytest.skip("the window's height is rounded from the photo's, not the tile's")
    mosaic = make_mosaic(np.zeros((12, 12, 3), np.uint8), folder, preset="seed", crop="centre",
                         aspect=aspect, cell_px=12, tile_px=window.width,
                         match_px=window.width, compute_metrics=False,
                         cache_dir=tmp_path / "cache")
    assert np.array_equal(mosaic.image[:window.height, :window.width],
                          photo[window.top:window.top + window.height,
                                window.left:window.left + window.width])


def test_adaptive_advice_names_only_widths_whose_heights_a_side_may_have():
    # At 2:3 the cells that halve 6 times are 128, 256, ... 640 px wide (and 768, but that is
    # 1152 px tall): the advice for 670 px names 640 alone.
    options = MosaicOptions(aspect="2:3", cell_px=670, tile_px=128, adaptive=6)
    with pytest.raises(OptionError) as refused:
        check_adaptive(options)
    message = str(refused.value)
    assert message.endswith("cell_px 640 would do"), message
    for width in re.findall(r"(\d+)(?= or| would do)", message):
        MosaicOptions(aspect="2:3", cell_px=int(width), tile_px=128, adaptive=6)


def test_adaptive_advice_for_tiles_names_only_widths_the_settings_take():
    options = MosaicOptions(aspect="2:3", cell_px=128, tile_px=670, match_px=128, adaptive=6)
    with pytest.raises(OptionError, match=r"tile_px 640 would do$"):
        check_adaptive(options)


@pytest.mark.parametrize("depth, words", [(1, "halve once"), (2, "halve 2 times")])
def test_no_cell_that_halves_fitting_the_target_says_how_often_in_words(depth, words):
    with pytest.raises(OptionError) as refused:
        cell_px_for_cells((1, 5), 1, adaptive=depth, name="t")
    message = str(refused.value)
    assert f"(its sides {words})" in message and "1 times" not in message, message
