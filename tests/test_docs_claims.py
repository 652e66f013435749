"""Claims of README.md and docs/ that a reader checks by hand, kept true by tests.

Each test names the passage it holds to; when one fails, fix the code or the
passage, not the test alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mosaicist import TileLibrary
from mosaicist.aspect import height_for
from mosaicist.crop import centre_window, choose_window, crop_method


def test_heights_round_half_up_not_as_python_round():
    """README, Rectangular tiles: `width * H / W` rounded half up, at least 1."""
    assert height_for(5, (2, 1)) == 3  # Python's round(2.5) is 2
    assert height_for(3, (2, 1)) == 2
    assert height_for(16, (3, 2)) == 11
    assert height_for(96, (3, 2)) == 64
    assert height_for(32, (3, 2)) == 21
    assert height_for(1, (16, 1)) == 1


def _stripes(width: int, height: int, period: int) -> Image.Image:
    columns = (np.arange(width) // period) % 2 * 255
    grey = np.broadcast_to(columns.astype(np.uint8), (height, width))
    return Image.fromarray(np.stack([grey] * 3, axis=-1))


def _checkerboard(width: int, height: int, period: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    grey = ((x // period + y // period) % 2 * 255).astype(np.uint8)
    return Image.fromarray(np.stack([grey] * 3, axis=-1))


def test_flat_photo_is_cut_in_the_middle_and_even_texture_about_there():
    """README, Crops: a flat photo is cut as `centre` would, even texture about there."""
    middle = centre_window(300, 200)
    flat = Image.new("RGB", (300, 200), (120, 80, 40))
    assert choose_window(flat, (1, 1), "subject") == middle
    # About there: within a pixel of the 96-pixel grey copy (300 / 96 photo pixels).
    for picture in (_stripes(300, 200, 3), _checkerboard(300, 200, 4)):
        window = choose_window(picture, (1, 1), "subject")
        assert abs(window.left - middle.left) <= 300 / 96 + 1
        assert (window.top, window.width, window.height) == (0, 200, 200)


def _square_folder(root: Path) -> Path:
    root.mkdir()
    rng = np.random.default_rng(4)
    for index in range(3):
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"t{index}.png")
    return root


def test_a_folder_of_square_photos_has_a_subject_index_beside_px32(tmp_path):
    """README, Crops: a folder declares no size, so its 1:1 subject index is its own."""
    folder = _square_folder(tmp_path / "photos")
    cache = tmp_path / "cache"
    centre = TileLibrary.open(folder, match_px=8, cache_dir=cache, crop="centre")
    subject = TileLibrary.open(folder, match_px=8, cache_dir=cache, crop="subject")
    assert centre.directory.name == "px8"
    assert subject.directory.name == f"px8-1x1-{crop_method('subject')}"
    # The same tiles: square photos are their own windows under both crops.
    assert np.array_equal(np.asarray(centre.tiles), np.asarray(subject.tiles))


def test_an_array_of_square_images_keeps_px32_under_subject(tmp_path):
    """README, Crops: a source that declares one square size keeps `px<N>` at 1:1."""
    images = np.random.default_rng(5).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    path = tmp_path / "tiles.npy"
    np.save(path, images)
    library = TileLibrary.open(str(path), match_px=8, cache_dir=tmp_path / "cache",
                               crop="subject")
    assert library.directory.name == "px8"
