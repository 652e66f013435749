"""Colour profiles in the studio, the live wall and ``score``: a wide-gamut photo (a phone's
Display P3) reads there as ``make`` reads it with the same settings (``colour_profiles``:
converted under the default preset, ignored under ``--preset seed``)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_profiles import _PROFILE, _encoded, _error, _in_wide, _saturation, _srgb_colours

from mosaicist import make_mosaic
from mosaicist.errors import OptionError
from mosaicist.imaging import decode_tile_bytes, read_target
from mosaicist.live import Event
from mosaicist.metrics import read_placements, score_mosaic
from mosaicist.options import MosaicOptions
from mosaicist.studio._preview import Previewer
from mosaicist.studio._uploads import accept_target
from mosaicist.studio._worker import EventWriter, run_make

#: A 64 x 64 target of flat 16 px patches (8 x 8 cells of 8 px), in sRGB.
SRGB = np.repeat(np.repeat(_srgb_colours(), 2, axis=0), 2, axis=1)
#: The same picture as a wide-gamut photo stores it: its values, and its profile.
STORED = _in_wide(SRGB)
#: The presets, and the picture each reads of such a photo.
READINGS = [("balanced", SRGB), ("seed", STORED)]


def _phone_jpeg() -> bytes:
    return _encoded(STORED, "JPEG", _PROFILE, quality=95, subsampling=0)


def _cell_means(picture: np.ndarray, cols: int, rows: int) -> np.ndarray:
    height, width = picture.shape[:2]
    cells = picture[:height - height % rows, :width - width % cols].astype(np.float64)
    return cells.reshape(rows, cells.shape[0] // rows, cols, cells.shape[1] // cols,
                         3).mean(axis=(1, 3))


@pytest.fixture(scope="module")
def flat_tiles(tmp_path_factory) -> Path:
    """80 flat-coloured tiles without a profile: tinted, each cell shows its target colour."""
    folder = tmp_path_factory.mktemp("flat") / "tiles"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for index in range(80):
        colour = rng.integers(0, 256, 3).astype(np.uint8)
        Image.fromarray(np.broadcast_to(colour, (8, 8, 3)).copy()).save(
            folder / f"f{index:02d}.png")
    return folder


# --- the studio -----------------------------------------------------------------------------


def test_an_uploaded_phone_photo_keeps_its_colour_profile_and_nothing_else(tmp_path):
    """A JPEG upload was stored without its profile: a run converting profiles read the
    phone's values as sRGB. Its RGB profile is kept now, and applied as each run says."""
    path, info = accept_target(_phone_jpeg(), "phone.jpg", tmp_path)
    with Image.open(path) as stored:
        assert stored.info.get("icc_profile") == _PROFILE
        assert not stored.getexif()
    assert _error(read_target(path, colour_profiles="convert"), SRGB) < 3
    assert _error(read_target(path, colour_profiles="ignore"), STORED) < 3
    # The same values without the profile are another picture, stored apart.
    plain, plain_info = accept_target(_encoded(STORED, "JPEG", None, quality=95,
                                               subsampling=0), "plain.jpg", tmp_path)
    assert plain_info["id"] != info["id"]
    with Image.open(plain) as stored:
        assert "icc_profile" not in stored.info
    # A profile of another colour space than the stored picture's is not kept.
    cmyk_profile = _PROFILE[:16] + b"CMYK" + _PROFILE[20:]
    odd, _ = accept_target(_encoded(STORED, "PNG", cmyk_profile), "odd.png", tmp_path)
    with Image.open(odd) as stored:
        assert "icc_profile" not in stored.info


def _studio_run(tmp_path: Path, target: Path, tiles: Path, settings: dict) -> np.ndarray:
    """The mosaic of a studio ``make`` job, run in this process as its worker runs it."""
    descriptor = os.open(tmp_path / "events.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        result = run_make({"target": str(target), "target_name": target.name,
                           "tiles": str(tiles), "settings": settings,
                           "folder": str(tmp_path / "run"), "cache_dir": str(tmp_path / "c")},
                          EventWriter(descriptor))
    finally:
        os.close(descriptor)
    with Image.open(tmp_path / "run" / result["outputs"]["png"]) as picture:
        return np.asarray(picture.convert("RGB"))


@pytest.mark.parametrize(("preset", "expected"), READINGS, ids=["balanced", "seed"])
def test_a_studio_run_and_its_preview_read_a_phone_photo_as_make_does(
        tmp_path, flat_tiles, preset, expected):
    upload = tmp_path / "phone.jpg"
    upload.write_bytes(_phone_jpeg())
    stored, _ = accept_target(upload.read_bytes(), upload.name, tmp_path / "targets")
    # Tinted all the way (seed's own tint is none): each cell shows its target colour.
    settings = {"preset": preset, "cell_px": 8, "tile_px": 8, "tint": 1.0}
    studio = _studio_run(tmp_path, stored, flat_tiles, settings)
    made = make_mosaic(upload, flat_tiles, MosaicOptions(**settings), cache_dir=tmp_path / "c",
                       compute_metrics=False).image
    assert studio.shape == made.shape == (64, 64, 3)
    studio_cells, made_cells = _cell_means(studio, 8, 8), _cell_means(made, 8, 8)
    assert np.abs(studio_cells - made_cells).mean() < 2.5
    assert np.abs(studio_cells - _cell_means(expected, 8, 8)).mean() < 3
    # The preview (from the index the run made) reads the target as the run did.
    jpeg, info = Previewer(tmp_path / "c").preview(stored, str(flat_tiles),
                                                   MosaicOptions(**settings), cells=64)
    assert (info["cols"], info["rows"]) == (8, 8)
    with Image.open(io.BytesIO(jpeg)) as picture:
        preview_cells = _cell_means(np.asarray(picture.convert("RGB")), 8, 8)
    # (Approximate: its reduced target blurs the patches' edges a little. The readings
    # differ by 15 levels.)
    assert np.abs(preview_cells - studio_cells).mean() < 5


def test_the_preview_keeps_a_target_read_each_way(tmp_path, flat_tiles):
    """Its cache of targets is by setting too: seed after balanced is not the converted one."""
    target, _ = accept_target(_phone_jpeg(), "phone.jpg", tmp_path / "targets")
    previewer = Previewer(tmp_path / "c")
    means = {}
    for preset in ("balanced", "seed", "balanced"):
        settings = MosaicOptions(preset=preset, cell_px=8, tile_px=8, tint=1.0)
        make_mosaic(target, flat_tiles, settings, cache_dir=tmp_path / "c",
                    compute_metrics=False)  # indexed at these settings
        jpeg = previewer.preview(target, str(flat_tiles), settings, cells=64)[0]
        with Image.open(io.BytesIO(jpeg)) as picture:
            means[preset] = _saturation(np.asarray(picture.convert("RGB")))
    assert means["balanced"] > means["seed"] + 3


# --- the live wall ---------------------------------------------------------------------------


@pytest.fixture
def wide_target(tmp_path) -> Path:
    path = tmp_path / "couple.png"
    path.write_bytes(_encoded(STORED, "PNG", _PROFILE))
    return path


def _guest_photo() -> tuple[bytes, np.ndarray]:
    """A guest's phone photo of a flat wide-gamut red (PNG: exact), and its stored values."""
    red = np.full((40, 40, 3), (200, 30, 30), np.uint8)
    return _encoded(red, "PNG", _PROFILE), red


@pytest.mark.parametrize("preset", ["balanced", "seed"])
def test_a_guests_phone_photo_and_the_target_follow_the_events_setting(
        tmp_path, wide_target, preset):
    event = Event.open(tmp_path / "event", target=wide_target, grid=(4, 4),
                       settings={"preset": preset, "tile_px": 16, "match_px": 8})
    try:
        converting = preset == "balanced"
        assert event.settings.options.colour_profiles == ("convert" if converting
                                                          else "ignore")
        # The target as the wall shows it: its 16 px patches cut at 16 px tiles.
        expected = SRGB if converting else STORED
        assert _error(event.target, expected) < 3
        data, red = _guest_photo()
        prepared = event.prepare(data, "IMG_0001.png")
        try:
            wanted = (decode_tile_bytes(data, 16, colour_profiles="convert")
                      if converting else red[:16, :16])
            assert _error(prepared.tile, wanted) < 1.5
            if converting:
                assert _saturation(prepared.tile) > _saturation(red) + 20
            # Stored as converted: moves, prints and repeats read the same colours.
            with Image.open(prepared.path) as stored:
                kept = np.asarray(stored.convert("RGB"))
                assert "icc_profile" not in stored.info
            assert _error(kept[:16, :16], wanted) < 3
        finally:
            event.discard(prepared)
    finally:
        event.close()


def test_a_wall_keeps_its_colour_profiles_setting_when_resumed(tmp_path, wide_target):
    folder = tmp_path / "event"
    Event.open(folder, target=wide_target, grid=(4, 4),
               settings={"tile_px": 16, "match_px": 8}).close()
    with pytest.raises(OptionError, match="made with .* convert, not ignore"):
        Event.open(folder, settings={"colour_profiles": "ignore"})
    Event.open(folder, settings={"colour_profiles": "convert"}).close()


# --- score ------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["balanced", "seed"])
def test_score_reads_the_target_as_the_make_did(tmp_path, flat_tiles, wide_target, preset):
    mosaic = make_mosaic(wide_target, flat_tiles, preset=preset, cell_px=8, tile_px=8,
                         cache_dir=tmp_path / "c")
    picture = tmp_path / "mosaic.png"
    Image.fromarray(mosaic.image).save(picture)
    mosaic.placements.write_json(tmp_path / "placements.json")
    placements = read_placements(tmp_path / "placements.json")
    reported = mosaic.report()["metrics"]
    scored = score_mosaic(picture, wide_target, 8, tile_grid=placements)
    assert scored["psnr_view"] == pytest.approx(reported["psnr_view"], abs=1e-6)
    other = "ignore" if preset == "balanced" else "convert"
    assert score_mosaic(picture, wide_target, 8, colour_profiles=other)["psnr_view"] != (
        pytest.approx(reported["psnr_view"], abs=0.5))
    # Without settings recorded, as a make without options: the default preset's.
    plain = score_mosaic(picture, wide_target, 8)
    assert plain == score_mosaic(picture, wide_target, 8, colour_profiles="convert")
    with pytest.raises(OptionError, match="unknown colour_profiles 'yes'"):
        score_mosaic(picture, wide_target, 8, colour_profiles="yes")
