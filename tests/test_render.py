"""Streaming renders: tiles from originals, bands, the overlay in bands, large outputs."""

import functools

import numpy as np
import pytest
from conftest import make_colour_folder, make_jpeg_photos, noisy_target
from PIL import Image

from mosaicist import Placements
from mosaicist import make_mosaic as _make_mosaic
from mosaicist.errors import MosaicistError
from mosaicist.imaging import square_thumbnail
from mosaicist.render import (
    IndexPictures,
    MosaicRenderer,
    OriginalPictures,
    TargetOverlay,
    dress_tiles,
    render_mosaic,
)
from mosaicist.sources import open_source
from mosaicist.transforms import TRANSFORM_NAMES

# These tests check mechanisms on the seed's method (no caps, no tint unless given);
# the default preset is tested on its own (test_options, test_pipeline).
make_mosaic = functools.partial(_make_mosaic, preset="seed")


@pytest.fixture
def target():
    return noisy_target()


def random_placements(rows, cols, count, seed=0, tint=False):
    rng = np.random.default_rng(seed)
    tiles = rng.integers(0, count, rows * cols)
    transforms = rng.integers(0, 8, rows * cols).astype(np.int8)
    shifts = rng.normal(0, 20, (rows * cols, 3)) if tint else None
    return Placements(rows, cols, tiles, np.zeros(rows * cols, np.int64),
                      [f"t{tile:03d}.png" for tile in tiles.tolist()], transforms, shifts)


def test_bands_assemble_the_whole_with_transforms_and_tint():
    rng = np.random.default_rng(1)
    tiles = rng.integers(0, 256, (9, 6, 6, 3), dtype=np.uint8)
    placements = random_placements(4, 5, 9, tint=True)
    renderer = MosaicRenderer(placements, IndexPictures(tiles, placements.tile), "lab")
    bands = list(renderer.bands())
    assert [band.shape for band in bands] == [(6, 30, 3)] * 4
    image = renderer.image()
    assert np.array_equal(np.concatenate(bands), image)
    dressed = dress_tiles(tiles[placements.tile], placements.transform, placements.tint, "lab")
    for cell in (0, 7, 19):
        row, col = divmod(cell, 5)
        assert np.array_equal(image[row * 6:(row + 1) * 6, col * 6:(col + 1) * 6], dressed[cell])
    # The in-memory helper is the same picture.
    same = render_mosaic(tiles, placements.tile_grid(), placements.transform, placements.tint,
                         "lab")
    assert np.array_equal(same, image)


def test_original_pictures_are_cached_and_bounded(tmp_path):
    folder = make_colour_folder(tmp_path / "tiles", 12, size=20)
    source = open_source(str(folder), cache_dir=tmp_path / "c")
    placements = random_placements(6, 8, 12, seed=3)
    tile_px = 24
    # Room for 5 decoded tiles only: rows must still come out right.
    pictures = OriginalPictures(source, placements.source_ids, tile_px,
                                cache_bytes=5 * tile_px * tile_px * 3, workers=2)
    renderer = MosaicRenderer(placements, pictures)
    image = renderer.image()
    assert len(pictures.cache) <= 5
    for cell in (0, 13, 47):
        row, col = divmod(cell, 8)
        original = Image.open(folder / placements.source_ids[cell])
        expected = dress_tiles(square_thumbnail(original, tile_px)[None],
                               placements.transform[cell:cell + 1])[0]
        block = image[row * tile_px:(row + 1) * tile_px, col * tile_px:(col + 1) * tile_px]
        assert np.array_equal(block, expected)
    # A large cache decodes each distinct tile once.
    counting = OriginalPictures(source, placements.source_ids, tile_px)
    MosaicRenderer(placements, counting).image()
    assert counting.decoded == len(set(placements.source_ids))


def test_a_missing_original_names_the_tile(tmp_path):
    folder = make_colour_folder(tmp_path / "tiles", 3, size=8)
    source = open_source(str(folder), cache_dir=tmp_path / "c")
    placements = random_placements(1, 2, 3)
    (folder / placements.source_ids[1]).unlink()
    with pytest.raises(MosaicistError, match=placements.source_ids[1]):
        MosaicRenderer(placements, OriginalPictures(source, placements.source_ids, 8)).image()


@pytest.mark.parametrize(("crop_shape", "size"), [((12, 16), (64, 48)), ((40, 56), (20, 14)),
                                                   ((7, 9), (90, 70))])
def test_overlay_in_bands_equals_the_whole(crop_shape, size):
    rng = np.random.default_rng(2)
    crop = rng.integers(0, 256, crop_shape + (3,), dtype=np.uint8)
    width, height = size
    overlay = TargetOverlay(crop, width, height, 0.4)
    whole = overlay.band(0, height)
    assert whole.shape == (height, width, 3)
    parts = np.concatenate([overlay.band(top, min(height, top + 3))
                            for top in range(0, height, 3)])
    assert np.array_equal(parts, whole)
    # An enlargement keeps the picture: its block means follow the target's.
    if width > crop_shape[1]:
        factor_y, factor_x = height / crop_shape[0], width / crop_shape[1]
        centre = whole[int(factor_y * 3.5), int(factor_x * 4.5)]
        assert np.abs(centre - crop[3, 4]).max() <= 1e-3 + np.ptp(crop[2:5, 3:6], axis=(0, 1)).max()
    mosaic = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    blended = overlay.blend(mosaic, 0)
    expected = np.clip(np.rint(0.6 * mosaic + 0.4 * whole), 0, 255)
    assert np.abs(blended.astype(int) - expected).max() <= 1


def test_larger_output_draws_from_originals(tmp_path, target):
    folder = make_colour_folder(tmp_path / "tiles", 20, size=96)
    mosaic = make_mosaic(target, folder, cell_px=8, tile_px=96, cache_dir=tmp_path / "c")
    assert mosaic.library.match_px == 32  # compared at 32, drawn at 96
    assert mosaic.placements.options.tile_px == 96
    assert mosaic.placements.options.match_px == 32
    assert mosaic.report()["output_size"] == {"width": 7 * 96, "height": 5 * 96}
    image = mosaic.image
    assert image.shape == (5 * 96, 7 * 96, 3)
    first = np.asarray(Image.open(folder / mosaic.placements.source_ids[0]).convert("RGB"))
    assert np.array_equal(image[:96, :96], first)
    # Compared at 32: the same picks as a 32 px mosaic.
    small = make_mosaic(target, folder, cell_px=8, tile_px=32, cache_dir=tmp_path / "c")
    assert np.array_equal(small.placements.tile, mosaic.placements.tile)
    assert mosaic.metrics["psnr_view"] == small.metrics["psnr_view"]


def test_streamed_write_equals_the_image(tmp_path, target):
    folder = make_colour_folder(tmp_path / "tiles", 20, size=16)
    mosaic = make_mosaic(target, folder, cell_px=8, tile_px=16, overlay=0.3,
                         cache_dir=tmp_path / "c")
    mosaic.renderer.write(tmp_path / "m.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "m.png")), mosaic.image)


# --- rectangular tiles ----------------------------------------------------------------------


def rectangle_placements(rows, cols, count, aspect="3:2", seed=0):
    from mosaicist import MosaicOptions
    from mosaicist.transforms import SHAPE_KEEPING

    rng = np.random.default_rng(seed)
    tiles = rng.integers(0, count, rows * cols)
    transforms = rng.choice(SHAPE_KEEPING, rows * cols).astype(np.int8)
    return Placements(rows, cols, tiles, np.zeros(rows * cols, np.int64),
                      [f"t{tile:03d}.png" for tile in tiles.tolist()], transforms,
                      rng.normal(0, 20, (rows * cols, 3)),
                      options=MosaicOptions(aspect=aspect, tile_px=9, cell_px=3))


@pytest.mark.parametrize(("tile_w", "tile_h", "aspect"), [(9, 6, "3:2"), (6, 9, "2:3"),
                                                          (8, 6, "4:3")])
def test_rectangular_tiles_draw_cols_times_width_by_rows_times_height(tile_w, tile_h, aspect):
    rng = np.random.default_rng(tile_w)
    tiles = rng.integers(0, 256, (7, tile_h, tile_w, 3), dtype=np.uint8)
    placements = rectangle_placements(4, 5, 7, aspect)
    renderer = MosaicRenderer(placements, IndexPictures(tiles, placements.tile), "lab")
    assert (renderer.tile_px, renderer.tile_height) == (tile_w, tile_h)
    assert (renderer.width, renderer.height) == (5 * tile_w, 4 * tile_h)
    bands = list(renderer.bands())
    assert [band.shape for band in bands] == [(tile_h, 5 * tile_w, 3)] * 4
    image = renderer.image()
    assert image.shape == (4 * tile_h, 5 * tile_w, 3)
    dressed = dress_tiles(tiles[placements.tile], placements.transform, placements.tint, "lab")
    for cell in (0, 7, 19):
        row, col = divmod(cell, 5)
        drawn = image[row * tile_h:(row + 1) * tile_h, col * tile_w:(col + 1) * tile_w]
        assert np.array_equal(drawn, dressed[cell])
    plain = render_mosaic(tiles, placements.tile_grid())
    assert plain.shape == (4 * tile_h, 5 * tile_w, 3)
    assert np.array_equal(plain[tile_h:2 * tile_h, :tile_w], tiles[placements.tile[5]])


def test_overlay_of_rectangular_cells_in_bands_equals_the_whole():
    rng = np.random.default_rng(3)
    tiles = rng.integers(0, 256, (5, 6, 9, 3), dtype=np.uint8)
    placements = rectangle_placements(3, 4, 5)
    crop = rng.integers(0, 256, (3 * 2, 4 * 3, 3), dtype=np.uint8)
    renderer = MosaicRenderer(placements, IndexPictures(tiles, placements.tile), "lab")
    renderer.overlay = TargetOverlay(crop, renderer.width, renderer.height, 0.4)
    whole = TargetOverlay(crop, renderer.width, renderer.height, 0.4).band(0, renderer.height)
    plain = MosaicRenderer(placements, IndexPictures(tiles, placements.tile), "lab").image()
    expected = np.clip(np.rint(0.6 * plain + 0.4 * whole), 0, 255).astype(np.uint8)
    assert np.array_equal(renderer.image(), expected)


def test_quarter_turns_of_rectangular_tiles_are_refused():
    tiles = np.zeros((2, 6, 9, 3), np.uint8)
    placements = rectangle_placements(2, 2, 2)
    placements.transform[1] = 2  # rot90: a 9x6 tile would become 6x9
    with pytest.raises(MosaicistError, match="rot90.*9x6 px tiles"):
        MosaicRenderer(placements, IndexPictures(tiles, placements.tile)).image()
    with pytest.raises(ValueError, match="rot270 does not keep the shape of 3:2 tiles"):
        Placements(1, 1, [0], [0], ["a.png"], [4], options=placements.options)


def test_tile_pictures_of_the_wrong_shape_are_refused():
    placements = rectangle_placements(1, 2, 2)
    square = IndexPictures(np.zeros((2, 6, 6, 3), np.uint8), placements.tile)
    square.tile_height = 4  # a picture source that lies about its tiles
    with pytest.raises(MosaicistError, match="tile pictures are 6x6 px, expected 6x4"):
        MosaicRenderer(placements, square).image()


def test_index_pictures_release_mapped_tiles_as_they_go(tmp_path, monkeypatch):
    """Drawing many distinct tiles of a mapped index releases its pages every few
    thousand cells: the kernel maps 64 KB around each tile touched, and 32,400
    distinct tiles of a million-tile library had added 1.3 GB to a render's memory."""
    from mosaicist.render import _pictures

    path = tmp_path / "tiles.npy"
    tiles = np.lib.format.open_memmap(path, "w+", np.uint8, (40_000, 4, 4, 3))
    tiles[:] = np.arange(40_000, dtype=np.int64)[:, None, None, None] % 251
    tiles.flush()
    mapped = np.load(path, mmap_mode="r")
    released = []
    monkeypatch.setattr(_pictures, "release_pages", lambda array: released.append(array))
    rows, cols = 135, 240  # the 3840 x 2160 mosaic at 16 px cells, each cell its own tile
    positions = np.random.default_rng(3).permutation(40_000)[:rows * cols]
    pictures = IndexPictures(mapped, positions)
    for row in range(rows):
        band = pictures.fetch(np.arange(row * cols, (row + 1) * cols))
        assert np.array_equal(band, np.asarray(mapped[positions[row * cols:(row + 1) * cols]]))
    # Every few thousand cells (every 65,536 before: never in this render).
    assert len(released) >= 4
    assert all(array is mapped for array in released)


@pytest.mark.parametrize("metric", ["seed", "lab", "oklab"])
def test_dressed_tiles_are_the_formula_and_leave_their_input_alone(metric):
    from mosaicist.colour import encoded_means, from_space, to_space

    rng = np.random.default_rng(11)
    tiles = rng.integers(0, 256, (9, 6, 5, 3), dtype=np.uint8)
    before = tiles.copy()
    gain = rng.uniform(0.4, 1.8, (9, 3))
    tint = rng.normal(0, 12 if metric == "seed" else 0.05, (9, 3))
    values = to_space(tiles, metric)
    mean = values.mean(axis=(1, 2), keepdims=True)
    # A shifted tile is drawn about the mean the matcher scored: its encoded levels'.
    centre = mean if metric == "seed" else encoded_means(values, metric)[:, None, None, :]
    expected = from_space(centre + gain[:, None, None, :] * (values - mean)
                          + tint[:, None, None, :], metric)
    dressed = dress_tiles(tiles, None, tint, metric, gain)
    np.testing.assert_array_equal(dressed, expected)
    np.testing.assert_array_equal(tiles, before)
    # Values past the range are clipped, whole or from scratch space.
    far = np.full((2, 3), 900.0)
    np.testing.assert_array_equal(dress_tiles(tiles[:2], tint=far, metric="seed"),
                                  np.full((2, 6, 5, 3), 255, np.uint8))
    shifted = np.full((1, 2, 2, 3), -3.6)
    assert from_space(shifted.copy(), "seed", overwrite=True).tolist() == from_space(
        shifted, "seed").tolist()


# --- the render command: what a placements file records, and what it cannot ---------------


def _cli(*args):
    from click.testing import CliRunner

    from mosaicist.cli import main

    return CliRunner().invoke(main, [str(arg) for arg in args])


def _one_line_error(result, *words):
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mosaicist: error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def made(tmp_path):
    """Make a tinted Lab mosaic with an overlay: its folder, target, tiles and cache."""
    Image.fromarray(noisy_target()[:32, :48]).save(tmp_path / "target.png")
    tiles = make_colour_folder(tmp_path / "tiles", 12)

    def make(*extra, tiles=tiles):
        result = _cli("make", tmp_path / "target.png", "--tiles", tiles, "--preset", "seed",
                      "--cell", 8, "--tile-px", 8, "--cache-dir", tmp_path / "cache", "-q",
                      *extra)
        assert result.exit_code == 0, result.output

    return tmp_path, make


def _pixels(path):
    return np.asarray(Image.open(path)).astype(int)


def test_csv_render_warns_of_settings_it_lacks_and_takes_metric_and_crop(made):
    root, make = made
    make("--metric", "lab", "--tint", "0.6", "-o", root / "m.png", "--placements",
         root / "p.json")
    Placements.read(root / "p.json").write(root / "p.csv")
    common = ("--tiles", root / "tiles", "--tile-px", 8, "--cache-dir", root / "cache")
    # Its tints are Lab units: drawn as sRGB levels, the picture differs, and it says so once.
    drawn = _cli("render", root / "p.csv", "-o", root / "r.png", *common)
    assert drawn.exit_code == 0, drawn.output
    warnings = [line for line in drawn.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, drawn.stderr
    assert f"{root / 'p.csv'}: a CSV placements file records no settings" in warnings[0]
    assert "--placements NAME.json" in warnings[0] and "--metric" in warnings[0]
    assert "px tiles" not in warnings[0]  # --tile-px was given
    assert np.abs(_pixels(root / "r.png") - _pixels(root / "m.png")).max() > 1
    # Without --tile-px, the tile size it draws at (the default preset's) is said too.
    sized = _cli("render", root / "p.csv", "-o", root / "u.png", "--tiles", root / "tiles",
                 "--cache-dir", root / "cache")
    assert sized.exit_code == 0 and "no overlay, 32 px tiles, 1:1 tiles)" in sized.stderr, \
        sized.output
    assert "give --metric, --crop, --colour-profiles and --aspect" in sized.stderr
    # The shape given, it is not said among what is assumed.
    shaped = _cli("render", root / "p.csv", "-o", root / "s.png", "--aspect", "1:1", *common)
    assert shaped.exit_code == 0 and "1:1 tiles" not in shaped.stderr, shaped.output
    # Told some, it says the others (told the crop alone, a 3:2 make's CSV came out square
    # without a word).
    some = _cli("render", root / "p.csv", "-o", root / "c.png", "--crop", "centre", *common)
    assert some.exit_code == 0 and "1:1 tiles" in some.stderr, some.output
    assert "--crop centre" not in some.stderr
    assert "give --metric, --colour-profiles and --aspect" in some.stderr
    # Told every one, it draws the same picture, without the warning.
    told = _cli("render", root / "p.csv", "-o", root / "t.png", "--metric", "lab",
                "--crop", "centre", "--colour-profiles", "ignore", "--aspect", "1:1", *common)
    assert told.exit_code == 0 and "warning" not in told.stderr, told.output
    assert np.abs(_pixels(root / "t.png") - _pixels(root / "m.png")).max() <= 1
    # A JSON file records them: another value would draw a picture it was not matched for.
    _one_line_error(_cli("render", root / "p.json", "-o", root / "j.png", "--metric", "seed",
                         *common), "--metric", "p.json", "records lab")
    same = _cli("render", root / "p.json", "-o", root / "j.png", "--metric", "lab", *common)
    assert same.exit_code == 0, same.output


def test_csv_render_draws_a_default_make_as_made_and_another_when_told(made):
    # Wide photos, detailed at the left: the seed preset cuts them at the centre, the
    # default one around their detail. A CSV records neither: it is drawn as a make
    # without options draws, and says so.
    root, make = made
    rng = np.random.default_rng(6)
    wide = root / "wide"
    wide.mkdir()
    for index in range(12):
        photo = np.empty((16, 48, 3), np.uint8)
        photo[:] = rng.integers(0, 256, 3)
        photo[:, :12] = rng.integers(0, 256, (16, 12, 3))
        Image.fromarray(photo).save(wide / f"w{index:02d}.png")
    common = ("--tiles", wide, "--tile-px", 8, "--cache-dir", root / "cache")
    make("--preset", "balanced", "-o", root / "d.png", "--placements", root / "d.csv",
         tiles=wide)
    drawn = _cli("render", root / "d.csv", "-o", root / "dr.png", *common)
    assert drawn.exit_code == 0 and "records no settings" in drawn.stderr, drawn.output
    assert "--crop subject" in drawn.stderr
    assert np.abs(_pixels(root / "dr.png") - _pixels(root / "d.png")).max() <= 1
    # A seed make's CSV: told its crop, the same picture, the crop no longer said.
    make("-o", root / "m.png", "--placements", root / "p.csv", tiles=wide)
    told = _cli("render", root / "p.csv", "-o", root / "r.png", "--crop", "centre", *common)
    assert told.exit_code == 0 and "--crop" not in told.stderr, told.output
    assert np.abs(_pixels(root / "r.png") - _pixels(root / "m.png")).max() <= 1
    untold = _cli("render", root / "p.csv", "-o", root / "u.png", *common)
    assert untold.exit_code == 0 and "records no settings" in untold.stderr
    assert np.abs(_pixels(root / "u.png") - _pixels(root / "m.png")).max() > 1


def _edited(root, name, **changes):
    import json

    document = json.loads((root / "p.json").read_text())
    for key, value in changes.items():
        place, _, field = key.rpartition(".")
        (document[place] if place else document)[field] = value
    (root / name).write_text(json.dumps(document))
    return root / name


def test_overlay_refuses_a_target_that_no_longer_holds_the_grid(made):
    root, make = made
    make("--overlay", "0.5", "-o", root / "m.png", "--placements", root / "p.json")
    target = str(root / "target.png")
    # A crop window outside the target: an IndexError traceback from the overlay's bands.
    _one_line_error(_cli("render", _edited(root, "crop.json", **{"crop.left": 1000}), "-o",
                         root / "r.png", "--cache-dir", root / "cache"),
                    "crop.json", "crop (left 1,000, top 0) puts the grid",
                    "outside the 48x32 px target")
    # The target replaced by a smaller picture: blended stretched without a word.
    Image.open(target).resize((24, 16)).save(target)
    _one_line_error(_cli("render", root / "p.json", "-o", root / "r.png",
                         "--cache-dir", root / "cache"), target, "24x16 target")
    assert not (root / "r.png").exists()
    # No target named: "None: the overlay needs...".
    _one_line_error(_cli("render", _edited(root, "none.json", target=None), "-o",
                         root / "r.png", "--cache-dir", root / "cache"),
                    "none.json: the overlay (0.5) needs the target picture, and this file "
                    "names none")


def test_target_crop_checks_the_window_and_names_the_problem(tmp_path):
    from mosaicist.render import target_crop

    Image.fromarray(noisy_target()[:20, :30]).save(tmp_path / "t.png")
    placements = random_placements(2, 3, 4)
    placements.target = str(tmp_path / "t.png")
    placements.options = placements.options.replace(cell_px=8)
    placements.crop = (6, 4)
    assert target_crop(placements).shape == (16, 24, 3)
    placements.crop = (7, 4)
    with pytest.raises(MosaicistError, match="24x16 window at \\(7, 4\\) does not lie inside "
                                             "this 30x20 target"):
        target_crop(placements)
    placements.target = None
    with pytest.raises(MosaicistError, match="^the overlay needs the target picture, and these "
                                             "placements do not name one$"):
        target_crop(placements)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif", ".dzi"])
def test_render_of_a_make_is_the_same_file_byte_for_byte(made, suffix):
    root, make = made
    make("--tint", "0.4", "-o", root / f"m{suffix}", "--placements", root / "p.json")
    result = _cli("render", root / "p.json", "-o", root / f"r{suffix}", "--cache-dir",
                  root / "cache", "-q")
    assert result.exit_code == 0, result.output
    if suffix != ".dzi":
        assert (root / f"r{suffix}").read_bytes() == (root / f"m{suffix}").read_bytes()
        return
    made_tiles = sorted(path.relative_to(root / "m_files")
                        for path in (root / "m_files").rglob("*"))
    assert made_tiles == sorted(path.relative_to(root / "r_files")
                                for path in (root / "r_files").rglob("*"))
    for name in made_tiles:
        if (root / "m_files" / name).is_file():
            assert (root / "r_files" / name).read_bytes() == (root / "m_files" / name).read_bytes()


@pytest.mark.parametrize("extra", [(), ("--aspect", "3:2", "--crop", "subject")])
def test_render_of_a_make_from_jpeg_photos_is_the_make(made, extra):
    # The index decodes JPEGs with libjpeg-turbo at any n/8 scale; a render from the
    # originals scaled them by Pillow's 1/2-1/8 and Lanczos: tens of levels apart.
    root, make = made
    photos = make_jpeg_photos(root / "photos")
    make("-o", root / "m.png", "--placements", root / "p.json", *extra, tiles=photos)
    result = _cli("render", root / "p.json", "-o", root / "r.png", "--cache-dir",
                  root / "cache", "-q")
    assert result.exit_code == 0, result.output
    assert (root / "r.png").read_bytes() == (root / "m.png").read_bytes()


@pytest.mark.parametrize("case", ["turned", "split"])
def test_placements_not_drawable_at_the_size_asked_are_named_before_any_work(made, case):
    # Found while drawing, after the output was begun, the error named no file.
    root, make = made
    make("-o", root / "m.png", "--placements", root / "p.json")
    recorded = Placements.read(root / "p.json")
    rows, cols = recorded.rows, recorded.cols
    count = rows * cols
    if case == "turned":
        # A quarter turn, asked to draw 3:2 tiles.
        path, flags = root / "q.csv", ("--aspect", "3:2")
        edited = Placements(rows, cols, recorded.tile, recorded.distance, recorded.source_ids,
                            np.full(count, TRANSFORM_NAMES.index("rot90"), np.int8))
    else:
        # The first cell split into four halves a side, asked to draw 7 px tiles.
        path, flags = root / "q.json", ("--tile-px", "7")
        rect = [[0, 0, 0.5, 0.5], [0.5, 0, 0.5, 0.5], [0, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]]
        rect += [[col, row, 1, 1] for row in range(rows) for col in range(cols)][1:]
        ids = recorded.source_ids[:1] * 3 + recorded.source_ids
        edited = Placements(rows, cols, np.r_[recorded.tile[:1].repeat(3), recorded.tile],
                            np.zeros(count + 3, np.int64), ids, rect=np.array(rect),
                            options=recorded.options, source=recorded.source)
    edited.write(path)
    result = _cli("render", path, "-o", root / "r.dzi", "--tiles", root / "tiles",
                  "--cache-dir", root / "cache", "-q", *flags)
    _one_line_error(result, f"{path}: ", "px")
    assert not [name for name in root.iterdir() if name.name.startswith(("r.", "r_", ".r"))]


def test_a_library_moved_since_the_make_names_the_placements_and_tiles(made):
    # Said alone, the folder gone did not tell where it came from, nor what to give.
    root, make = made
    make("-o", root / "m.png", "--placements", root / "p.json")
    (root / "tiles").rename(root / "moved")
    _one_line_error(_cli("render", root / "p.json", "-o", root / "r.png", "--cache-dir",
                         root / "cache"),
                    f"{root / 'p.json'}: the tile source it records cannot be used",
                    f"{root / 'tiles'}: no such folder", "pass --tiles")
    result = _cli("render", root / "p.json", "-o", root / "r.png", "--tiles", root / "moved",
                  "--cache-dir", root / "cache", "-q")
    assert result.exit_code == 0, result.output
    assert (root / "r.png").read_bytes() == (root / "m.png").read_bytes()


def test_render_refuses_to_write_over_the_target_or_a_placed_tile(made):
    root, make = made
    make("-o", root / "m.png", "--placements", root / "p.json")
    target = root / "target.png"
    before = target.read_bytes()
    # The target it names, written over without a word (make refuses it).
    _one_line_error(_cli("render", root / "p.json", "-o", target, "--cache-dir",
                         root / "cache"), f"{target}: the output is also the target")
    assert target.read_bytes() == before
    placed = Placements.read(root / "p.json").source_ids[0]
    photo = root / "tiles" / placed
    before = photo.read_bytes()
    _one_line_error(_cli("render", root / "p.json", "-o", root / "tiles" / ".." / "tiles" / placed,
                         "--cache-dir", root / "cache"),
                    f"the output is also the original of the placed tile {placed}")
    assert photo.read_bytes() == before
    # A Deep Zoom viewer page is written beside its pyramid: named as a tile, it counts too.
    html = root / "tiles" / "page.html"
    html.write_bytes(before)
    edited = Placements.read(root / "p.json")
    edited.source_ids[0] = "page.html"
    edited.write(root / "q.json")
    _one_line_error(_cli("render", root / "q.json", "-o", root / "tiles" / "page.dzi",
                         "--cache-dir", root / "cache"), "page.html")
    assert html.read_bytes() == before and not (root / "tiles" / "page_files").exists()


def test_render_functions_name_an_argument_of_the_wrong_type(tmp_path):
    from mosaicist.errors import OptionError
    from mosaicist.render import placements_renderer, render_placements

    placements = random_placements(2, 2, 3)
    with pytest.raises(OptionError, match="^placements must be Placements .*got a str$"):
        render_placements("p.json")  # an AttributeError: 'str' object has no attribute...
    with pytest.raises(OptionError, match="^options must be a MosaicOptions, got a dict$"):
        placements_renderer(placements, {"tile_px": 8})
    with pytest.raises(OptionError, match="^tiles must be a tile source spec .*got 5$"):
        render_placements(placements, tiles=5)
    # A bare TypeError from os.fspath, naming nothing.
    for call in (render_placements, placements_renderer):
        with pytest.raises(OptionError, match="^cache_dir must be a path .*got 5$"):
            call(placements, tiles=str(tmp_path), cache_dir=5)


@pytest.mark.parametrize(("grid", "words"), [
    # A negative position drew the library's last tile without a word.
    (np.array([[0, -1]]), "tile_grid must hold positions from 0 to 2 .*got -1 to 0"),
    (np.array([[0, 3]]), "tile_grid must hold positions from 0 to 2 .*got 0 to 3"),
    (np.array([0, 1]), "tile_grid must be a \\(rows, cols\\) array"),
    (np.array([[0.0, 1.0]]), "tile_grid must be a \\(rows, cols\\) array .*float64"),
])
def test_render_mosaic_names_a_bad_tile_grid(grid, words):
    from mosaicist.errors import OptionError

    tiles = np.zeros((3, 4, 4, 3), np.uint8)
    with pytest.raises(OptionError, match=words):
        render_mosaic(tiles, grid)
    with pytest.raises(OptionError, match="tiles must be an \\(M, tile_height, tile_px, 3\\)"):
        render_mosaic(tiles.astype(np.float64), np.array([[0, 1]]))


def test_index_pictures_refuse_positions_outside_the_library():
    tiles = np.zeros((3, 4, 4, 3), np.uint8)
    for positions in ([0, -1], [0, 3]):
        with pytest.raises(MosaicistError, match="do not all lie in a library of 3 tiles"):
            IndexPictures(tiles, np.array(positions))


class _FakeStats:
    """What os.statvfs answers, for a file system of chosen free space and files."""

    def __init__(self, free_bytes: int, free_files: int, block: int = 4096) -> None:
        self.f_frsize = self.f_bsize = block
        self.f_bavail = free_bytes // block
        self.f_files = 10 * free_files + 1
        self.f_favail = free_files
        self.f_flag = 0


def test_an_output_that_cannot_fit_its_file_system_is_refused_before_any_work(
        tmp_path, monkeypatch):
    # 1 px cells and 1024 px tiles planned terapixels, written for hours until the disk
    # was full.
    from mosaicist.render import _formats

    monkeypatch.setattr(_formats.os, "statvfs", lambda _: _FakeStats(2 * 10**9, 10**6))
    width = height = 2_000_000  # 4 terapixels: 11.6 GB at deflate's best
    with pytest.raises(MosaicistError) as refused:
        _formats.check_output(tmp_path / "mural.tif", width, height)
    message = str(refused.value)
    assert "mural.tif" in message and "needs at least 11.6 GB" in message
    assert "(4.0 terapixels)" in message
    assert "2.0 GB free" in message and "\n" not in message
    # What fits is not refused, nor is anything where the file system cannot say.
    _formats.check_output(tmp_path / "fits.png", 10_000, 10_000)

    def unknown(_):
        raise OSError("no statvfs here")

    monkeypatch.setattr(_formats.os, "statvfs", unknown)
    _formats.check_output(tmp_path / "mural.tif", width, height)


def test_an_output_of_more_files_than_its_file_system_holds_is_refused(tmp_path, monkeypatch):
    from mosaicist.render import _formats

    class ManyFiles(_formats.OutputFormat):
        name, suffixes = "many", (".many",)

        def least_room(self, width, height, options):
            return 0, width * height

        def write(self, path, picture, options, show_progress=False):
            raise AssertionError("never written")

    monkeypatch.setitem(_formats.OUTPUT_FORMATS._entries, ".many", ManyFiles())
    monkeypatch.setattr(_formats.os, "statvfs", lambda _: _FakeStats(10**15, 1000))
    with pytest.raises(MosaicistError, match=r"needs 1,024 files; its file system has room "
                                             r"for 1,000 more"):
        _formats.check_output(tmp_path / "x.many", 32, 32)
    _formats.check_output(tmp_path / "x.many", 10, 10)


def test_a_deep_zoom_pyramid_counts_a_file_per_tile(tmp_path, monkeypatch):
    from mosaicist.render import _deepzoom, _formats

    # 1 px cells of a 4000x3000 target at 1024 px tiles: 260 million tiles of 4 kB at least,
    # refused for their count first (session 35); the disk's checks past that bound.
    with pytest.raises(MosaicistError, match=r"is 260,066,169 tile files, over the 1,000,000"):
        _formats.check_output(tmp_path / "huge.dzi", 4_096_000, 3_072_000)
    monkeypatch.setattr(_deepzoom, "MOST_TILE_FILES", 10**12)
    monkeypatch.setattr(_formats.os, "statvfs", lambda _: _FakeStats(100 * 10**9, 10**7))
    with pytest.raises(MosaicistError, match=r"huge\.dzi: a 4,096,000x3,072,000 px Deep Zoom "
                                             r"output \(12\.6 terapixels\) needs at least 1\.1 TB"):
        _formats.check_output(tmp_path / "huge.dzi", 4_096_000, 3_072_000)
    monkeypatch.setattr(_formats.os, "statvfs", lambda _: _FakeStats(10**16, 10**7))
    with pytest.raises(MosaicistError, match=r"needs 260,06\d,\d{3} files"):
        _formats.check_output(tmp_path / "huge.dzi", 4_096_000, 3_072_000)
    # A 7.9-gigapixel mural (400 x 300 cells of 256 px) fits a disk of a few GB free.
    monkeypatch.setattr(_formats.os, "statvfs", lambda _: _FakeStats(5 * 10**9, 10**6))
    _formats.check_output(tmp_path / "mural.dzi", 102_400, 76_800)


def test_a_placed_tile_gone_from_the_library_is_refused_before_any_drawing(made, monkeypatch):
    # Found at its row while drawing ("gone.png: cannot open the tile's original"), after
    # the rows above it were drawn (hours into a mural), and without naming the file.
    from mosaicist.render import _pictures

    root, make = made
    make("-o", root / "m.png", "--placements", root / "p.json")
    placements = Placements.read(root / "p.json")
    placements.write(root / "p.csv")
    last = placements.source_ids[-1]
    (root / "tiles" / last).rename(root / "moved.png")
    fetched = []
    monkeypatch.setattr(_pictures.OriginalPictures, "fetch",
                        lambda self, cells: fetched.append(cells))
    placed = len(set(placements.source_ids))
    for name in ("p.json", "p.csv"):
        _one_line_error(_cli("render", root / name, "-o", root / "r.png", "--tiles",
                             root / "tiles", "--cache-dir", root / "cache", "-q"),
                        f"{root / name}: 1 of the {placed} placed tiles is not a file of "
                        f"{(root / 'tiles').resolve()} ('{last}')", "moved or removed")
    assert not fetched and not (root / "r.png").exists()
    assert sorted(path.name for path in root.iterdir() if path.name.startswith(".")) == []
    # An id that names no file of a folder is counted the same way.
    placements.source_ids[0] = "./" + placements.source_ids[0]
    placements.write(root / "q.json")
    _one_line_error(_cli("render", root / "q.json", "-o", root / "r.png", "--cache-dir",
                         root / "cache", "-q"), f"{root / 'q.json'}: 2 of the ")
    # Another library (the wrong --tiles): none of them is there.
    (root / "other").mkdir()
    _one_line_error(_cli("render", root / "p.json", "-o", root / "r.png", "--tiles",
                         root / "other", "--cache-dir", root / "cache", "-q"),
                    f"{root / 'p.json'}: none of the {placed} placed tiles is a file of")


def test_a_folder_that_takes_no_files_is_not_called_a_full_disk(tmp_path, monkeypatch):
    # 'make t.jpg -o /proc/a.png' said the output "needs 19.1 kB; its file system has
    # 0 bytes free": /proc reports 0 free blocks, but it is no disk and takes no files.
    import errno
    import os
    import tempfile

    from mosaicist.render import _formats

    class NoDisk(_FakeStats):
        f_blocks = 0

    monkeypatch.setattr(_formats.os, "statvfs", lambda _: NoDisk(0, 0))
    for code, reason in ((errno.EACCES, "permission denied"),
                         (errno.ENOENT, "its file system takes no new files")):
        def refused(*args, code=code, **kwargs):
            raise OSError(code, os.strerror(code))

        with monkeypatch.context() as patched:
            patched.setattr(tempfile, "mkstemp", refused)
            with pytest.raises(MosaicistError) as caught:
                _formats.check_output(tmp_path / "a.png", 2560, 2016)
        message = str(caught.value)
        assert message.startswith(f"{tmp_path / 'a.png'}: files cannot be made in the "
                                  f"output folder {tmp_path} ({reason})"), message
        assert "free" not in message and "\n" not in message
    # One that takes files but reports no size cannot say what is free: not refused,
    # and the probe leaves nothing behind.
    _formats.check_output(tmp_path / "a.png", 2560, 2016)
    assert list(tmp_path.iterdir()) == []
    # A real full disk is still one, its size in megapixels, not "0.0 gigapixels".
    monkeypatch.setattr(_formats.os, "statvfs", lambda _: _FakeStats(0, 10))
    with pytest.raises(MosaicistError, match=r"\(5\.2 megapixels\) needs at least .* "
                                             r"has 0 bytes free"):
        _formats.check_output(tmp_path / "a.png", 2560, 2016)


def test_an_output_in_proc_is_refused_as_a_folder_not_a_full_disk(tmp_path):
    # As root, /proc passed the permission checks and was called a full disk.
    import os

    if not os.path.isdir("/proc/self") or os.geteuid() != 0:
        pytest.skip("needs Linux's /proc, writable to root's permission checks")
    Image.fromarray(noisy_target()[:32, :48]).save(tmp_path / "target.png")
    tiles = make_colour_folder(tmp_path / "tiles", 4)
    result = _cli("make", tmp_path / "target.png", "--tiles", tiles, "-o", "/proc/a.png",
                  "--cell", 8, "--tile-px", 8, "--cache-dir", tmp_path / "cache", "-q")
    _one_line_error(result, "/proc/a.png: files cannot be made in the output folder /proc")
    assert "free" not in result.stderr


def test_changed_tiles_refuses_a_file_past_the_tile_size_limit_unread(tmp_path, monkeypatch):
    # The check that a placed photo is the one matched read the file whole, whatever its
    # size: a tile's own reader now refuses it (as changed) before reading.
    from mosaicist import imaging
    from mosaicist.imaging import content_hash
    from mosaicist.render import changed_tiles

    folder = make_colour_folder(tmp_path / "tiles", 2)
    names = sorted(path.name for path in folder.iterdir())
    data = (folder / names[0]).read_bytes()
    hashes = {name: content_hash((folder / name).read_bytes()) for name in names}
    source = open_source(str(folder), cache_dir=tmp_path / "c")
    assert changed_tiles(source, hashes) == []
    monkeypatch.setattr(imaging, "TILE_MAX_FILE_BYTES", len(data) - 1)
    assert changed_tiles(source, hashes)[:1] == [names[0]]


@pytest.mark.parametrize(("settings", "message"), [
    ({"transforms": np.full(6, 9)}, r"^transforms: has codes outside 0 to 7"),
    ({"transforms": np.zeros(5)}, r"^transforms: has 5 entries for a grid of 3x2 cells"),
    ({"tint": np.zeros((6, 2))}, r"^tint"),
    ({"tint": np.full((6, 3), np.nan)}, r"^tint: has values that are not finite"),
    ({"metric": "xyz"}, r"^metric must be seed, lab or oklab, got 'xyz'"),
    ({"metric": 5}, r"^metric must be seed, lab or oklab, got 5"),
])
def test_render_mosaic_names_the_parameter_that_cannot_be_used(settings, message):
    # Bare ValueErrors from the placements' own checks, and any metric taken as sRGB.
    from mosaicist.errors import OptionError
    from mosaicist.render import render_mosaic

    tiles = np.zeros((4, 8, 8, 3), np.uint8)
    with pytest.raises(OptionError, match=message):
        render_mosaic(tiles, np.zeros((2, 3), np.int64), **settings)


def test_render_notes_an_aspect_other_than_the_recorded_one(made):
    """``render p.json --aspect 3:2`` on a 1:1 file changed the mosaic's shape without a word."""
    root, make = made
    make("-o", root / "m.png", "--placements", root / "p.json")
    common = ("--tiles", root / "tiles", "--cache-dir", root / "cache")
    other = _cli("render", root / "p.json", "-o", root / "o.png", "--aspect", "3:2", *common)
    assert other.exit_code == 0, other.output
    notes = [line for line in other.stderr.splitlines() if line.startswith("mosaicist: note")]
    assert len(notes) == 1 and "--aspect 3:2 is not the 1:1" in notes[0], other.stderr
    same = _cli("render", root / "p.json", "-o", root / "s.png", "--aspect", "1:1", *common)
    assert same.exit_code == 0 and "mosaicist: note" not in same.stderr, same.output


def test_render_refuses_a_bad_value_before_saying_what_a_csv_lacks(made):
    """A bad --metric came after the CSV's warning, which named every setting but it."""
    root, make = made
    make("-o", root / "m.png", "--placements", root / "p.csv")
    result = _cli("render", root / "p.csv", "-o", root / "r.png", "--metric", "foo",
                  "--tiles", root / "tiles", "--cache-dir", root / "cache")
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--metric" in lines[0] and "warning" not in lines[0], lines
