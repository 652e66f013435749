"""What is drawn at print sizes is what was scored (session 35).

When tiles are drawn larger than they were matched (``tile_px`` above
``match_px``: a print, drawn from the originals), a tile's mean differs a
little from its index thumbnail's. The tint's shift, the gains and the
chroma were measured and scored about the thumbnail's mean, so the drawn
tile is dressed about that mean (recorded in the placements as ``mean``),
and a render of the saved placements draws the same picture. Tiny libraries
and targets, made here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mosaicist import make_mosaic
from mosaicist.errors import MosaicistError
from mosaicist.library import TileLibrary
from mosaicist.options import MosaicOptions
from mosaicist.placements import Placements
from mosaicist.render import placements_renderer, render_placements


def _photos(root, count=10, seed=0):
    """``count`` textured, colourful photos of 40-80 px a side: larger than the tiles drawn."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        height, width = rng.integers(40, 80, 2).tolist()
        y, x = np.mgrid[0:height, 0:width]
        pixels = (rng.integers(60, 196, 3) + x[..., None] / width * rng.uniform(-70, 70, 3)
                  + y[..., None] / height * rng.uniform(-70, 70, 3)
                  + rng.normal(0, 18, (height, width, 3)))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / f"p{index:02d}.png")
    return root


def _grey_target() -> np.ndarray:
    """Two greys side by side, 16 x 16 px."""
    target = np.full((16, 16, 3), 128, np.uint8)
    target[:, 8:] = 96
    return target


def _make(tmp_path, target, **settings):
    library = _photos(tmp_path / "photos")
    options = MosaicOptions(cell_px=4, match_px=8, compute_metrics=False, **settings)
    return make_mosaic(target, str(library), options)


def _off_grey(image: np.ndarray) -> float:
    """The share of pixels whose channels are not all equal."""
    return float((image.max(axis=2) != image.min(axis=2)).mean())


@pytest.mark.parametrize("metric", ["seed", "lab", "oklab"])
@pytest.mark.parametrize("tile_px", [16, 24, 20])  # 2x, 3x and 2.5x the match size
def test_grey_target_stays_grey_at_print_sizes(tmp_path, metric, tile_px):
    # The default preset moves each tile to its cell's mean and takes away its chroma:
    # a grey target's mosaic is grey, at the size it was matched and at any other.
    mosaic = _make(tmp_path, _grey_target(), metric=metric, tile_px=tile_px)
    assert mosaic.image.shape == (4 * tile_px, 4 * tile_px, 3)
    assert _off_grey(mosaic.image) == 0.0


def test_drawn_tile_reduced_to_the_match_size_has_the_scored_mean(tmp_path):
    # A mid-toned target (no clipping), tiles drawn at twice the match size: each drawn
    # tile, averaged over 2 x 2 blocks (which keeps its mean), has the mean that was
    # scored, the thumbnail's moved by its shift, within the drawing's rounding.
    rng = np.random.default_rng(4)
    target = np.clip(rng.normal(128, 20, (16, 16, 3)), 70, 190).astype(np.uint8)
    mosaic = _make(tmp_path, target, metric="seed", tile_px=16, preset="seed", tint=0.6)
    placements = mosaic.placements
    assert placements.mean is not None
    drawn = (mosaic.image.reshape(4, 16, 4, 16, 3).transpose(0, 2, 1, 3, 4)
             .reshape(16, 16, 16, 3).astype(float))
    reduced = drawn.reshape(16, 8, 2, 8, 2, 3).mean(axis=(2, 4))
    scored = placements.mean + placements.tint
    assert np.abs(reduced.mean(axis=(1, 2)) - scored).max() <= 0.5


def test_scored_mean_is_the_thumbnails(tmp_path):
    # What placements record as each tile's mean is that of the thumbnail it was matched as.
    mosaic = _make(tmp_path, _grey_target(), metric="seed", tile_px=16)
    thumbnails = np.asarray(mosaic.library.tiles)[mosaic.placements.tile].astype(float)
    assert np.allclose(mosaic.placements.mean, thumbnails.mean(axis=(1, 2)))


@pytest.mark.parametrize("metric", ["seed", "lab"])
def test_render_of_saved_placements_draws_the_make(tmp_path, metric):
    mosaic = _make(tmp_path, _grey_target(), metric=metric, tile_px=20)
    as_json, as_csv = tmp_path / "p.json", tmp_path / "p.csv"
    mosaic.placements.write(as_json)
    mosaic.placements.write(as_csv)
    from_json = render_placements(Placements.read(as_json))
    assert np.array_equal(from_json, mosaic.image)
    # CSV files record no settings: the make's are given.
    from_csv = placements_renderer(Placements.read(as_csv), mosaic.options,
                                   tiles=str(tmp_path / "photos")).image()
    assert np.array_equal(from_csv, mosaic.image)


@pytest.mark.parametrize("metric", ["seed", "oklab"])
def test_placements_without_means_are_read_and_drawn_as_scored(tmp_path, metric):
    # Files written before the means were recorded: read, and at a print size drawn
    # about the means of the thumbnails made again, as the make drew them.
    mosaic = _make(tmp_path, _grey_target(), metric=metric, tile_px=24)
    document = mosaic.placements.to_json()
    del document["cells"]["mean"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(document))
    old = Placements.read(path)
    assert old.mean is None
    drawn = render_placements(old)
    assert np.array_equal(drawn, mosaic.image)
    assert old.mean is None  # the caller's placements are left as they were
    # At the size tiles were matched at, the thumbnails themselves are drawn.
    assert render_placements(old, tile_px=8).shape == (32, 32, 3)


def test_unchanged_tiles_record_no_means(tmp_path):
    # The seed's method changes no tile: its files stay as they were.
    mosaic = _make(tmp_path, _grey_target(), preset="seed", tile_px=16)
    assert mosaic.placements.mean is None
    assert "mean" not in mosaic.placements.to_json()["cells"]


def test_bad_means_in_a_file_are_refused_by_name(tmp_path):
    mosaic = _make(tmp_path, _grey_target(), tile_px=16)
    document = mosaic.placements.to_json()
    document["cells"]["mean"][3] = [1, "x", 2]
    with pytest.raises(ValueError, match=r"cells\.mean\[3\] must be three finite numbers"):
        Placements.from_json(document)


def test_hashes_are_those_of_the_photos_matched(tmp_path):
    # Another run re-indexes a photo edited after this make opened its library: the
    # placements do not record the edited photo's hash for the photo that was matched.
    library = _photos(tmp_path / "photos", count=1)  # every cell holds p00.png
    opened = TileLibrary.open(str(library), 8)
    before = opened.content_hashes(["p00.png"])["p00.png"]
    mosaic = make_mosaic(_grey_target(), opened,
                         MosaicOptions(cell_px=4, match_px=8, tile_px=8, preset="seed",
                                       max_uses=None, compute_metrics=False))
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(library / "p00.png")
    TileLibrary.open(str(library), 8)  # another run's update
    assert set(mosaic.placements.source_ids) == {"p00.png"}
    recorded = mosaic.placements.to_json().get("hashes") or {}
    assert recorded.get("p00.png", before) == before


def test_content_hashes_of_a_library_read_before_an_update_are_refused(tmp_path):
    library = _photos(tmp_path / "photos", count=2)
    opened = TileLibrary.open(str(library), 8)
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(library / "p01.png")
    TileLibrary.open(str(library), 8)
    with pytest.raises(MosaicistError, match="the tile index changed since this library was read"):
        opened.content_hashes(["p00.png", "p01.png"])
    # A library read now answers.
    assert len(TileLibrary.open(str(library), 8, update=False).content_hashes(["p01.png"])) == 1
