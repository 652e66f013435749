"""Identical photos (the same picture twice in a library) counted as one photo."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_colour_folder, noisy_target
from PIL import Image

from mosaicist import dedupe as dedupe_module
from mosaicist.cli import main
from mosaicist.dedupe import identical_leaders, tile_signatures
from mosaicist.errors import OptionError
from mosaicist.library import TileLibrary
from mosaicist.match._assign import spacing_violations
from mosaicist.options import MosaicOptions
from mosaicist.pipeline import make_mosaic
from mosaicist.sources.folder import FolderSource


def brute_force_leaders(tiles: np.ndarray, hashes: np.ndarray, colours: np.ndarray
                        ) -> np.ndarray:
    """The first earlier tile of the same signature and the same bytes, pair by pair."""
    leaders = np.arange(len(tiles))
    for tile in range(len(tiles)):
        for earlier in range(tile):
            if (hashes[earlier] == hashes[tile] and (colours[earlier] == colours[tile]).all()
                    and np.array_equal(tiles[earlier], tiles[tile])):
                leaders[tile] = earlier
                break
    return leaders


@pytest.mark.parametrize("seed", range(12))
def test_identical_leaders_are_the_first_tile_of_the_same_pixels(seed):
    rng = np.random.default_rng(seed)
    count = int(rng.integers(2, 60))
    distinct = rng.integers(0, 256, (max(1, count // 3), 4, 5, 3), dtype=np.uint8)
    tiles = distinct[rng.integers(0, len(distinct), count)].copy()
    # Near misses: one value off another tile, which must stay a photo of its own.
    for tile in rng.integers(0, count, count // 4):
        tiles[tile, 0, 0, 0] ^= 1
    hashes, colours = tile_signatures(tiles)
    if seed % 3 == 0:
        # Signatures that all collide (flat pictures hash alike): the bytes decide alone.
        hashes[:] = 7
        colours[:] = 100
    expected = brute_force_leaders(tiles, hashes, colours)
    np.testing.assert_array_equal(identical_leaders(hashes, colours, tiles), expected)


def test_identical_leaders_read_groups_larger_than_a_chunk(monkeypatch):
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    tiles = base[rng.integers(0, 3, 41)].copy()
    tiles[[5, 17, 30], 1, 1, 1] ^= 255
    hashes = np.zeros(41, np.uint64)
    colours = np.zeros((41, 3), np.uint8)
    hashes[20:] = 1  # two signatures, the second holding copies of the first's tiles too
    expected = brute_force_leaders(tiles, hashes, colours)
    for chunk in (1, 48 * 3, 48 * 30, 1 << 20):
        monkeypatch.setattr(dedupe_module, "IDENTICAL_CHUNK_BYTES", chunk)
        np.testing.assert_array_equal(identical_leaders(hashes, colours, tiles), expected)


def test_tiles_of_another_signature_are_not_compared():
    tiles = np.zeros((3, 2, 2, 3), np.uint8)
    hashes = np.array([1, 2, 1], np.uint64)
    colours = np.zeros((3, 3), np.uint8)
    np.testing.assert_array_equal(identical_leaders(hashes, colours, tiles), [0, 1, 0])
    with pytest.raises(ValueError, match="one per tile"):
        identical_leaders(hashes[:2], colours, tiles)
    assert identical_leaders(hashes[:0], colours[:0], tiles[:0]).shape == (0,)


def copied_folder(root, count=30, every=1):
    """``count`` random-colour photos, then a byte copy of every ``every``-th one."""
    make_colour_folder(root, count, size=12, seed=4)
    for number in range(0, count, every):
        (root / f"u{number:03d}.png").write_bytes((root / f"t{number:03d}.png").read_bytes())
    return root


def test_a_library_without_its_identical_photos(tmp_path, monkeypatch):
    folder = copied_folder(tmp_path / "photos", 12, every=3)
    # A re-encoded copy is a near-duplicate, not identical: it stays.
    with Image.open(folder / "t001.png") as image:
        image.save(folder / "v001.jpg", quality=60)
    cache = tmp_path / "cache"
    library = TileLibrary.open(FolderSource(folder, workers=1), 8, cache_dir=cache)
    kept = library.without_identical()
    assert kept.identical_dropped == 4 and len(kept) == len(library) - 4
    assert not [name for name in kept.source_ids if name.startswith("u")]
    assert "v001.jpg" in kept.source_ids
    assert kept.source_ids == [name for name in library.source_ids if not name.startswith("u")]
    np.testing.assert_array_equal(
        kept.tiles, library.tiles[[library.source_ids.index(name) for name in kept.source_ids]])
    assert kept.without_identical() is kept
    # Near-duplicates take the identical ones with them.
    near = library.without_copies(6, "drop")
    assert near.duplicates_dropped >= 4 and near.identical_dropped == 0
    assert library.without_copies(None, "keep") is library
    with pytest.raises(OptionError, match="identical_photos"):
        library.without_copies(None, "merge")
    # A warm run reads the leaders back.
    reopened = TileLibrary.open(FolderSource(folder, workers=1), 8, cache_dir=cache)

    def refused(*args, **kwargs):
        raise AssertionError("grouped again")

    monkeypatch.setattr("mosaicist.library._index.identical_leaders", refused)
    assert reopened.without_identical().source_ids == kept.source_ids


def close_pairs_of_one_picture(mosaic, folder) -> int:
    """Pairs of cells closer than the run's spacing that show the same file contents."""
    contents = {name: (folder / name).read_bytes() for name in set(mosaic.placements.source_ids)}
    picture = {data: number for number, data in enumerate(sorted(set(contents.values())))}
    shown = np.array([picture[contents[name]] for name in mosaic.placements.source_ids])
    grid = mosaic.grid
    first, _ = spacing_violations(shown, grid.rows, grid.cols, mosaic.options.min_spacing)
    return len(first)


def test_the_default_preset_places_a_copied_photo_as_one(tmp_path):
    folder = copied_folder(tmp_path / "photos", 30)
    target = noisy_target()
    cache = tmp_path / "cache"
    made = make_mosaic(target, folder, cell_px=4, tile_px=8, cache_dir=cache)
    report = made.report()
    assert report["identical_dropped"] == 30 and report["tiles"] == 30
    assert report["settings"]["identical_photos"] == "drop"
    assert made.options.min_spacing > 1
    assert close_pairs_of_one_picture(made, folder) == 0
    # Every photo at least once (the library is short of the cells), each counted once.
    assert len(set(made.placements.source_ids)) == 30
    # Kept, the copies are two photos: the same picture twice within the spacing.
    kept = make_mosaic(target, folder, cell_px=4, tile_px=8, cache_dir=cache,
                       identical_photos="keep")
    assert kept.report()["identical_dropped"] == 0 and len(kept.library) == 60
    assert close_pairs_of_one_picture(kept, folder) > 0
    # The seed's method keeps every file, as it always did.
    seed = make_mosaic(target, folder, cell_px=4, tile_px=8, cache_dir=cache, preset="seed")
    assert len(seed.library) == 60 and seed.options.identical_photos == "keep"


def test_the_command_line_says_how_many_identical_photos_went(tmp_path):
    folder = copied_folder(tmp_path / "photos", 10, every=2)
    target = tmp_path / "target.png"
    Image.fromarray(noisy_target()).save(target)
    runner = CliRunner()
    flags = ["--tiles", str(folder), "--cell", "8", "--tile-px", "8", "--cache-dir",
             str(tmp_path / "cache"), "-o", str(tmp_path / "out.png")]
    made = runner.invoke(main, ["make", str(target), *flags, "--report",
                                str(tmp_path / "report.json")])
    assert made.exit_code == 0, made.output
    assert "5 identical dropped" in made.stderr
    assert json.loads((tmp_path / "report.json").read_text())["identical_dropped"] == 5
    kept = runner.invoke(main, ["make", str(target), *flags, "--identical-photos", "keep"])
    assert kept.exit_code == 0 and "identical" not in kept.stderr
    bad = runner.invoke(main, ["make", str(target), *flags, "--identical-photos", "merge"])
    assert bad.exit_code != 0 and "--identical-photos" in bad.stderr
    assert "Traceback" not in bad.output


def test_settings_written_before_the_setting_keep_identical_photos():
    written = MosaicOptions(preset="balanced").to_json()
    assert written["identical_photos"] == "drop"
    del written["identical_photos"]
    written["version"] = 6
    assert MosaicOptions.from_json(written).identical_photos == "keep"
    assert MosaicOptions().identical_photos == "drop"
    assert MosaicOptions(preset="varied").identical_photos == "drop"
    with pytest.raises(ValueError, match="identical_photos"):
        MosaicOptions(identical_photos="some")


def _black_folder(tmp_path):
    """Twelve files of other sizes, the same black tile."""
    folder = tmp_path / "black"
    folder.mkdir()
    for number in range(12):
        Image.new("RGB", (20 + number, 20), (0, 0, 0)).save(folder / f"b{number}.png")
    return folder


def test_a_refusal_under_a_limit_does_not_blame_the_identical_photos(tmp_path):
    """--limit 5 takes 5 tiles however many copies are left out: "identical_photos keep
    keeps them" advised a setting that changed nothing."""
    folder = _black_folder(tmp_path)
    for number in range(8):
        Image.new("RGB", (20, 20), (30 * number, 40, 50)).save(folder / f"c{number}.png")
    target = noisy_target()
    with pytest.raises(OptionError) as error:
        make_mosaic(target, folder, cell_px=8, tile_px=8, max_uses=1, limit=5,
                    cache_dir=tmp_path / "cache")
    assert "the library has 5;" in str(error.value)
    assert "identical" not in str(error.value)


def test_a_refusal_counts_the_identical_photos_left_out(tmp_path):
    folder = _black_folder(tmp_path)
    target = noisy_target()
    with pytest.raises(OptionError) as error:
        make_mosaic(target, folder, cell_px=8, tile_px=8, max_uses=1,
                    cache_dir=tmp_path / "cache")
    assert "the library has 1 (11 left out as identical to another: identical_photos keep " \
           "keeps them)" in str(error.value)
    assert set(error.value.parameters) == {"max_uses", "identical_photos"}
    with pytest.raises(OptionError) as kept:
        make_mosaic(target, folder, cell_px=8, tile_px=8, max_uses=1, identical_photos="keep",
                    cache_dir=tmp_path / "cache")
    assert "the library has 12; add tiles" in str(kept.value)
    assert len(make_mosaic(target, folder, cell_px=8, tile_px=8, max_uses=3,
                           identical_photos="keep", cache_dir=tmp_path / "cache").library) == 12


def test_a_refusal_counts_the_near_duplicates_left_out(tmp_path):
    # "the library has 1" said nothing of the eleven near-duplicates --dedupe dropped.
    folder = _black_folder(tmp_path)
    target = noisy_target()
    with pytest.raises(OptionError) as error:
        make_mosaic(target, folder, cell_px=8, tile_px=8, max_uses=1, dedupe=4,
                    identical_photos="keep", cache_dir=tmp_path / "cache")
    assert "the library has 1 (11 left out as near-duplicates of another under dedupe)" \
        in str(error.value), str(error.value)
    assert set(error.value.parameters) == {"max_uses", "dedupe"}
    # (With dedupe, identical photos are among its near-duplicates: counted there.)
    for number in range(3):
        Image.new("RGB", (20 + number, 20), (0, 0, 1)).save(folder / f"n{number}.png")
    with pytest.raises(OptionError) as both:
        make_mosaic(target, folder, cell_px=8, tile_px=8, max_uses=1, dedupe=4,
                    cache_dir=tmp_path / "cache")
    assert "has 1 (14 left out as near-duplicates of another under dedupe)" in str(both.value)
    # Both counts, where a caller has both, in one parenthesis.
    from mosaicist.errors import naming_identical

    refusal = OptionError("{max_uses} is too low: the library has {tiles}", tiles="3")
    assert naming_identical(refusal, 2, 5).message() == (
        "max_uses is too low: the library has 3 (2 left out as identical to another: "
        "identical_photos keep keeps them; 5 left out as near-duplicates of another under "
        "dedupe)")
    assert naming_identical(refusal, 0, 0) is refusal


def test_refusals_outside_the_capped_matcher_count_the_identical_photos_too(tmp_path):
    # Adaptive leaves are refused by their own check, and the studio's preview by its
    # own: both said "the library has 1" and left the eleven copies unexplained.
    from mosaicist.studio._preview import Previewer

    folder = _black_folder(tmp_path)
    target = noisy_target()
    cache = tmp_path / "cache"
    hint = "the library has 1 (11 left out as identical to another: identical_photos keep"
    with pytest.raises(OptionError) as adaptive:
        make_mosaic(target, folder, cell_px=8, tile_px=8, max_uses=1, adaptive=2,
                    cache_dir=cache)
    assert hint in str(adaptive.value)
    with pytest.raises(OptionError) as kept:
        make_mosaic(target, folder, cell_px=8, tile_px=8, max_uses=1, adaptive=2,
                    identical_photos="keep", cache_dir=cache)
    assert "left out" not in str(kept.value)
    path = tmp_path / "target.png"
    Image.fromarray(target).save(path)
    with pytest.raises(OptionError) as preview:
        Previewer(cache).preview(path, str(folder),
                                 MosaicOptions(cell_px=8, tile_px=8, max_uses=1), cells=100)
    assert hint in str(preview.value)
    # Near-duplicates dropped by dedupe are counted apart: no word of identical photos.
    with pytest.raises(OptionError) as deduped:
        Previewer(cache).preview(path, str(folder),
                                 MosaicOptions(cell_px=8, tile_px=8, max_uses=1, dedupe=4),
                                 cells=100)
    assert "left out" not in str(deduped.value)


def test_the_studio_preview_leaves_identical_photos_out_as_the_make_does(tmp_path,
                                                                          preview_picks):
    from mosaicist.studio._preview import Previewer

    folder = copied_folder(tmp_path / "photos", 30)
    target = tmp_path / "target.png"
    Image.fromarray(noisy_target()).save(target)
    cache = tmp_path / "cache"
    for mode, copies in (("drop", False), ("keep", True)):
        options = MosaicOptions(cell_px=4, tile_px=8, identical_photos=mode)
        made = make_mosaic(target, folder, options, cache_dir=cache)  # indexes it too
        Previewer(cache).preview(target, str(folder), options, cells=140)
        # The preview's positions are in the whole library, copies included.
        whole = TileLibrary.open(str(folder), 8, cache_dir=cache, update=False,
                                 crop="subject", colour_profiles="convert")
        shown = {whole.source_ids[position] for position in preview_picks["tile"].tolist()}
        assert any(name.startswith("u") for name in shown) == copies, mode
        assert any(name.startswith("u") for name in made.placements.source_ids) == copies
