"""Stable videos (``batch --stable``): a flash frame, and picks that name their library."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import banded_tile as _tile
from conftest import shifted_picture as _picture
from conftest import write_frames as _write_frames
from PIL import Image

from mosaicist import MosaicOptions, TileLibrary, make_mosaic
from mosaicist.batch import Picks, StableMatcher, library_fingerprint, stable_frame
from mosaicist.batch._stable import cell_signature, previous_candidates
from mosaicist.cli import main
from mosaicist.grid import make_grid
from mosaicist.match import MatchRequest, fitted_matcher

CELL = TILE = 8
GRID = ["--cell", str(CELL), "--tile-px", str(TILE)]


def _tiles(folder: Path, seed: int, count: int = 48) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        Image.fromarray(_tile(rng)).save(folder / f"t{index:03d}.png")
    return folder


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> Path:
    return _tiles(tmp_path_factory.mktemp("stable") / "tiles", 3)


def _flash(width: int = 64, height: int = 48) -> np.ndarray:
    """A picture unlike :func:`_picture`'s anywhere: a new scene against every one of them."""
    return np.ascontiguousarray(_picture(width, height, 9)[::-1, ::-1, ::-1])


def _request(library: TileLibrary, picture: np.ndarray, **settings):
    matcher, options, _ = fitted_matcher(MosaicOptions(cell_px=CELL, tile_px=TILE, **settings))
    return matcher, MatchRequest(make_grid(picture, CELL), library, options)


def test_a_flash_frame_resumes_the_tiles_of_the_scene_before_it(tiles, tmp_path):
    # A A A F A A, A a slow pan: the frame after the flash was a new scene against the
    # flash, the plain mosaic of the pan, where its tiles had been held (85% of the cells
    # changed from before the flash to after it, at the default preset).
    pictures = [_picture(64, 48, shift) for shift in range(3)]
    pictures += [_flash(), _picture(64, 48, 3), _picture(64, 48, 4)]
    video = tmp_path / "clip.mp4"
    _write_frames(video, pictures)
    out = tmp_path / "out"
    args = ["batch", video, "--tiles", tiles, "-o", out, *GRID, "--stable", 1,
            "--workers", 1, "-q"]
    result = CliRunner().invoke(main, [str(arg) for arg in args])
    assert result.exit_code == 0, result.output
    folder = out / ".mosaicist-batch"
    picks = [Picks.load(str(folder / "picks" / f"clip-{index:06d}.npz")) for index in range(6)]
    assert all(found is not None for found in picks)
    before_flash = picks[2].tile
    assert (picks[3].tile != before_flash).mean() > 0.9  # the flash: a new scene
    for after in picks[4:]:
        assert (after.tile == before_flash).mean() > 0.9
    # The flash keeps the picks before it, one frame only; every picks file names the
    # library as the outputs' records do.
    assert picks[3].before is not None and picks[4].before is None
    np.testing.assert_array_equal(picks[3].before.tile, before_flash)
    records = [json.loads(path.read_text()) for path in (folder / "outputs").glob("*.json")]
    assert {record["library"] for record in records} == {found.library for found in picks}

    # Resumed after the flash (the frames after it lost), the same frames are made.
    made = {index: (out / f"clip-{index:06d}.png").read_bytes() for index in (4, 5)}
    for index in made:
        (out / f"clip-{index:06d}.png").unlink()
    result = CliRunner().invoke(main, [str(arg) for arg in args])
    assert result.exit_code == 0, result.output
    for index, picture in made.items():
        assert (out / f"clip-{index:06d}.png").read_bytes() == picture, index


@pytest.mark.parametrize("settings", [{"preset": "seed"}, {"max_uses": 2}])
def test_only_a_frame_of_the_scene_before_the_flash_resumes_it(tiles, settings):
    library = TileLibrary.open(tiles, TILE)
    scene, later = _picture(64, 48, 0), _picture(64, 48, 1)
    other = np.ascontiguousarray(np.roll(_picture(64, 48, 40), 24, axis=1)[:, :, [1, 2, 0]])
    matcher, request = _request(library, scene, **settings)
    held = matcher.match(request).tile
    held_signature = cell_signature(request.grid.cells)
    _, request = _request(library, _flash(), **settings)
    flash = matcher.match(request).tile
    flash_signature = cell_signature(request.grid.cells)
    hundredths = 1000

    def stable(picture: np.ndarray) -> tuple[StableMatcher, np.ndarray]:
        _, request = _request(library, picture, **settings)
        wrapped = StableMatcher(matcher, flash, hundredths, flash_signature, held,
                                held_signature)
        return wrapped, wrapped.match(request).tile

    # Back to the scene: its tiles, not the flash's nor the plain mosaic's.
    wrapped, picked = stable(later)
    assert wrapped.resumed and not wrapped.new_scene
    assert (picked == held).mean() > 0.9
    # The flash again (a cut to it): its own tiles, from the frame before.
    wrapped, picked = stable(_flash())
    assert not wrapped.resumed and not wrapped.new_scene
    np.testing.assert_array_equal(picked, flash)
    # A third picture: a new scene against both, the plain mosaic.
    wrapped, picked = stable(other)
    assert wrapped.new_scene and not wrapped.resumed
    _, request = _request(library, other, **settings)
    np.testing.assert_array_equal(picked, matcher.match(request).tile)


def test_frames_keep_the_scene_they_cut_from_for_one_frame(tiles):
    library = TileLibrary.open(tiles, TILE)
    options = MosaicOptions(cell_px=CELL, tile_px=TILE, preset="seed")
    previous = None
    kept: list[Picks] = []
    for picture in (_picture(64, 48, 0), _flash(), _flash(), _picture(64, 48, 1)):
        _, previous = stable_frame(picture, library, options, previous, 1)
        kept.append(previous)
    assert kept[0].before is None and kept[2].before is None
    assert kept[1].before is not None
    np.testing.assert_array_equal(kept[1].before.tile, kept[0].tile)
    # A cut away and not back (the flash held for two frames): the third frame is a new
    # scene against the flash's, and keeps them.
    assert kept[3].before is not None
    np.testing.assert_array_equal(kept[3].before.tile, kept[2].tile)


def test_picks_keep_the_scene_before_and_the_library_and_digest_them(tmp_path):
    signature = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    before = Picks(np.array([4, 5]), np.array([0, 1]), 1, 2, 7, 10, signature // 2)
    picks = Picks(np.array([3, 1]), np.array([0, 0]), 1, 2, 7, 10, signature,
                  library="f" * 32, before=before)
    path = str(tmp_path / "p.npz")
    picks.save(path)
    back = Picks.load(path)
    assert back is not None and back.library == "f" * 32 and back.before is not None
    np.testing.assert_array_equal(back.before.tile, [4, 5])
    np.testing.assert_array_equal(back.before.transform, [0, 1])
    np.testing.assert_array_equal(back.before.signature, signature // 2)
    assert back.before.library == back.library and back.digest() == picks.digest()
    # The digest tells picks made from another scene before, or of another library; those
    # saved without either keep the digest earlier records hold.
    plain = Picks(picks.tile, picks.transform, 1, 2, 7, 10, signature)
    other = Picks(before.tile + 1, before.transform, 1, 2, 7, 10, before.signature)
    digests = {plain.digest(), picks.digest(), Picks(
        picks.tile, picks.transform, 1, 2, 7, 10, signature, library="f" * 32,
        before=other).digest(), Picks(picks.tile, picks.transform, 1, 2, 7, 10, signature,
                                      library="e" * 32, before=before).digest()}
    assert len(digests) == 4
    plain.save(path)
    old = Picks.load(path)
    assert old is not None and old.library == "" and old.before is None
    assert old.digest() == plain.digest() == "971a0f527f6e7c6eb24c23d82a6752e0"  # as before
    # A damaged scene before is left out; the picks still steer.
    arrays = dict(np.load(path))
    for damaged in ({"before_tile": np.zeros(3, np.int64)},
                    {"before_signature": np.zeros((2, 4, 4, 3), np.float32)},
                    {"before_transform": np.full(2, 300)}):
        with open(path, "wb") as handle:
            np.savez(handle, **arrays, **{"before_tile": np.zeros(2, np.int64),
                                          "before_transform": np.zeros(2, np.int8),
                                          "before_signature": signature, **damaged})
        loaded = Picks.load(path)
        assert loaded is not None and loaded.before is None, damaged
        np.testing.assert_array_equal(loaded.tile, picks.tile)
    # A library named by something else than one text names none.
    for library in (np.array(["a", "b"]), np.array(7), np.zeros(32, np.uint8)):
        with open(path, "wb") as handle:
            np.savez(handle, **arrays, library=library)
        loaded = Picks.load(path)
        assert loaded is not None and loaded.library == "", library


def test_picks_of_another_library_of_the_same_generation_and_size_are_not_used(tmp_path):
    # Picks named the library by its index's generation and size: those of another
    # library with both the same steered the frame with tiles at the same positions.
    first = TileLibrary.open(_tiles(tmp_path / "first", 1, 40), TILE)
    second = TileLibrary.open(_tiles(tmp_path / "second", 2, 40), TILE)
    assert (first.generation, len(first)) == (second.generation, len(second))
    options = MosaicOptions(cell_px=CELL, tile_px=TILE, preset="seed")
    frame = _picture(64, 48, 0)
    _, picks = stable_frame(frame, first, options, None, 0)
    assert picks.library == library_fingerprint(first) != library_fingerprint(second)
    _, request = _request(first, frame, preset="seed")
    assert previous_candidates(request, picks, picks.library) is not None
    _, request = _request(second, frame, preset="seed")
    assert previous_candidates(request, picks, library_fingerprint(second)) is None
    # Picks that name no library (an earlier version's) apply to none.
    unnamed = Picks(picks.tile, picks.transform, picks.rows, picks.cols, picks.generation,
                    picks.tiles, picks.signature)
    assert previous_candidates(request, unnamed, library_fingerprint(second)) is None
    made = stable_frame(frame, second, options, picks, 10)[0]
    plain = make_mosaic(frame, second, options)
    np.testing.assert_array_equal(made.placements.tile, plain.placements.tile)
