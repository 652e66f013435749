"""Embedded ICC profiles: the ``colour_profiles`` setting, ``convert`` (the default preset's)
decoding pictures of a wide-gamut space into sRGB, ``ignore`` (the seed's) as before."""

from __future__ import annotations

import io
import logging
import sqlite3
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageCms

from mosaicist import _profiles, make_mosaic
from mosaicist.cli import main
from mosaicist.errors import OptionError
from mosaicist.imaging import (
    converts_profile,
    decode_tile_bytes,
    picture_array,
    read_original,
    read_target,
)
from mosaicist.library import TileLibrary
from mosaicist.options import PRESETS, MosaicOptions
from mosaicist.render._pictures import OriginalPictures
from mosaicist.sources.folder import FolderSource

# Adobe RGB (1998)'s primaries and white (CIE xy): a wider gamut than sRGB's in the greens
# and the reds' saturation.
_ADOBE = ((0.640, 0.330), (0.210, 0.710), (0.150, 0.060))
_D65 = (0.3127, 0.3290)
_D50_XYZ = np.array([0.9642, 1.0, 0.8249])


def _xyz(x: float, y: float) -> np.ndarray:
    return np.array([x / y, 1.0, (1 - x - y) / y])


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _matrix_profile(primaries=_ADOBE, gamma: float = 2.2) -> bytes:
    """A minimal ICC v2 RGB matrix/TRC profile (display class), colorants adapted to D50."""
    columns = np.stack([_xyz(*xy) for xy in primaries], axis=1)
    scale = np.linalg.solve(columns, _xyz(*_D65))
    to_xyz = columns * scale
    bradford = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367],
                         [0.0389, -0.0685, 1.0296]])
    cone = np.diag((bradford @ _D50_XYZ) / (bradford @ _xyz(*_D65)))
    adapted = np.linalg.inv(bradford) @ cone @ bradford @ to_xyz

    def xyz_tag(values) -> bytes:
        return b"XYZ \0\0\0\0" + b"".join(_s15(v) for v in values)

    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    text = b"Adobe-like test"
    tags = [(b"desc", b"desc\0\0\0\0" + struct.pack(">I", len(text) + 1) + text + b"\0"
             + b"\0" * 12 + b"\0" * 67),
            (b"wtpt", xyz_tag(_D50_XYZ)), (b"rXYZ", xyz_tag(adapted[:, 0])),
            (b"gXYZ", xyz_tag(adapted[:, 1])), (b"bXYZ", xyz_tag(adapted[:, 2])),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve),
            (b"cprt", b"text\0\0\0\0none\0")]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for name, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += name + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"none" + b"\x02\x10\0\0" + b"mntr" + b"RGB "
              + b"XYZ " + b"\0" * 12 + b"acsp" + b"\0" * 4 + b"\0" * 4 + b"\0" * 8
              + b"\0" * 8 + b"\0" * 4 + b"".join(_s15(v) for v in _D50_XYZ) + b"\0" * 4)
    header += b"\0" * (128 - len(header))
    return header + struct.pack(">I", len(tags)) + table + data


_PROFILE = _matrix_profile()


def _srgb_colours() -> np.ndarray:
    """A 32x32 picture of flat patches, saturated colours among them (where gamuts differ)."""
    rng = np.random.default_rng(5)
    patches = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    patches[0, 0], patches[0, 1], patches[0, 2] = (220, 30, 30), (30, 200, 40), (20, 40, 210)
    return np.repeat(np.repeat(patches, 8, axis=0), 8, axis=1)


def _in_wide(srgb: np.ndarray) -> np.ndarray:
    """``srgb``'s pixels as the wide-gamut profile stores them."""
    transform = ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")),
        ImageCms.ImageCmsProfile(io.BytesIO(_PROFILE)), "RGB", "RGB",
        renderingIntent=1)
    return np.asarray(ImageCms.applyTransform(Image.fromarray(srgb), transform))


def _encoded(pixels: np.ndarray, fmt: str, profile: bytes | None, **options) -> bytes:
    out = io.BytesIO()
    extra = {"icc_profile": profile} if profile else {}
    Image.fromarray(pixels).save(out, fmt, **extra, **options)
    return out.getvalue()


def _error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _saturation(pixels: np.ndarray) -> float:
    values = pixels.astype(np.int16)
    return float((values.max(axis=-1) - values.min(axis=-1)).mean())


def _folder(root: Path, profiled: int = 2, plain: int = 4) -> Path:
    """``profiled`` PNGs in the wide space carrying its profile, then ``plain`` ones without."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for index in range(profiled + plain):
        pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        pixels[:8, :8] = (230, 20, 25)  # a saturated red, where the gamuts differ most
        profile = _PROFILE if index < profiled else None
        (root / f"t{index}.png").write_bytes(_encoded(_in_wide(pixels), "PNG", profile))
    return root


def _target(path: Path, profile: bytes | None = _PROFILE) -> Path:
    path.write_bytes(_encoded(_in_wide(np.repeat(np.repeat(_srgb_colours(), 1, 0), 1, 1)),
                              "PNG", profile))
    return path


def test_profile_is_not_srgb():
    """The fixture works: its stored values are far from the sRGB picture's."""
    srgb = _srgb_colours()
    assert _error(_in_wide(srgb), srgb) > 4


@pytest.mark.parametrize(("fmt", "options", "tolerance"), [
    ("PNG", {}, 1.5), ("JPEG", {"quality": 95, "subsampling": 0}, 3.0), ("TIFF", {}, 1.5),
    ("WEBP", {"lossless": True}, 1.5)])
def test_tiles_are_converted_into_srgb_or_kept_exactly(fmt, options, tolerance):
    srgb = _srgb_colours()
    data = _encoded(_in_wide(srgb), fmt, _PROFILE, **options)
    assert _error(decode_tile_bytes(data, 32, colour_profiles="convert"), srgb) < tolerance
    # Ignored (the default), the values are taken as sRGB: exactly a file without the profile.
    plain = decode_tile_bytes(_encoded(_in_wide(srgb), fmt, None, **options), 32)
    assert np.array_equal(decode_tile_bytes(data, 32), plain)
    assert np.array_equal(decode_tile_bytes(data, 32, colour_profiles="ignore"), plain)
    assert _error(plain, srgb) > 4


def test_a_wide_gamut_red_comes_out_more_saturated_converted():
    red = np.full((16, 16, 3), (200, 30, 30), np.uint8)  # stored values, in the wide space
    data = _encoded(red, "PNG", _PROFILE)
    converted = decode_tile_bytes(data, 16, colour_profiles="convert")
    ignored = decode_tile_bytes(data, 16, colour_profiles="ignore")
    assert np.array_equal(ignored, red)
    assert _saturation(converted) > _saturation(ignored) + 20


def test_targets_and_originals_follow_the_setting(tmp_path):
    srgb = _srgb_colours()
    path = tmp_path / "wide.png"
    path.write_bytes(_encoded(_in_wide(srgb), "PNG", _PROFILE))
    stored = _in_wide(srgb)
    assert _error(read_target(path, colour_profiles="convert"), srgb) < 1.5
    assert np.array_equal(read_target(path), stored)
    with Image.open(path) as image:
        assert _error(picture_array(image, colour_profiles="convert"), srgb) < 1.5
    with Image.open(path) as image:
        assert np.array_equal(picture_array(image), stored)
    assert _error(read_original(path, 32, colour_profiles="convert"), srgb) < 1.5
    assert np.array_equal(read_original(path, 32), stored)


def test_exif_jpeg_and_grey_picture():
    """The Pillow path (a JPEG with EXIF) too; an RGB profile on a grey picture keeps it grey."""
    srgb = _srgb_colours()
    exif = Image.Exif()
    exif[0x0112] = 1
    data = _encoded(_in_wide(srgb), "JPEG", _PROFILE, quality=95, subsampling=0,
                    exif=exif.tobytes())
    assert _error(decode_tile_bytes(data, 32, colour_profiles="convert"), srgb) < 3.0
    out = io.BytesIO()
    Image.fromarray(np.full((16, 16), 90, np.uint8), "L").save(out, "PNG", icc_profile=_PROFILE)
    # Replicated, then the RGB profile applied: grey stays grey (both spaces' white is D65).
    tile = decode_tile_bytes(out.getvalue(), 16, colour_profiles="convert")
    assert np.ptp(tile.astype(int), axis=2).max() <= 1


def test_srgb_profile_keeps_the_pixels_exactly():
    srgb = _srgb_colours()
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    tagged = decode_tile_bytes(_encoded(srgb, "PNG", profile), 32, colour_profiles="convert")
    assert np.array_equal(tagged, decode_tile_bytes(_encoded(srgb, "PNG", None), 32))


def test_damaged_profile_decodes_as_before_with_one_warning(caplog, monkeypatch):
    monkeypatch.setattr(_profiles, "_warned", False)
    srgb = _srgb_colours()
    # A header, then garbage where tags should be (its own bytes: a profile seen once).
    damaged = _PROFILE[:128] + b"\xff" * 60 + b"damaged"
    before = _profiles.skipped_profiles()
    plain = decode_tile_bytes(_encoded(srgb, "PNG", None), 32)
    with caplog.at_level(logging.WARNING, logger="mosaicist._profiles"):
        for _ in range(3):
            tile = decode_tile_bytes(_encoded(srgb, "PNG", damaged), 32,
                                     colour_profiles="convert")
            assert np.array_equal(tile, plain)
    assert _profiles.skipped_profiles() == before + 1  # one profile, however many files
    warnings = [record for record in caplog.records if "ICC colour profile" in record.message]
    assert len(warnings) == 1


def test_jpeg_profile_and_header_check(tmp_path):
    data = _encoded(_srgb_colours(), "JPEG", _PROFILE)
    assert _profiles.jpeg_profile(data) == _PROFILE
    assert _profiles.jpeg_profile(_encoded(_srgb_colours(), "JPEG", None)) is None
    (tmp_path / "wide.jpg").write_bytes(data)
    (tmp_path / "plain.png").write_bytes(_encoded(_srgb_colours(), "PNG", None))
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    (tmp_path / "srgb.png").write_bytes(_encoded(_srgb_colours(), "PNG", srgb))
    (tmp_path / "no.png").write_bytes(b"not a picture")
    assert converts_profile(tmp_path / "wide.jpg") is True
    assert converts_profile(tmp_path / "plain.png") is False
    assert converts_profile(tmp_path / "srgb.png") is False
    assert converts_profile(tmp_path / "no.png") is None


def test_the_setting_is_declared_with_its_presets():
    assert MosaicOptions().colour_profiles == "convert"  # the default preset
    assert MosaicOptions(preset="seed").colour_profiles == "ignore"  # the declared default
    assert PRESETS["varied"].settings["colour_profiles"] == "convert"
    assert MosaicOptions(colour_profiles="ignore").colour_profiles == "ignore"
    with pytest.raises(OptionError, match="unknown colour_profiles 'yes'; use ignore or convert"):
        MosaicOptions(colour_profiles="yes")
    with pytest.raises(OptionError, match="unknown colour_profiles"):
        decode_tile_bytes(_encoded(_srgb_colours(), "PNG", None), 8, colour_profiles="on")
    # Settings saved before the setting existed were made with profiles ignored.
    old = MosaicOptions.from_json({"version": 5, "preset": "balanced"})
    assert old.colour_profiles == "ignore"


def test_make_help_lists_the_flag():
    from mosaicist.cli import main

    result = CliRunner().invoke(main, ["make", "--help"])
    assert result.exit_code == 0
    assert "--colour-profiles [ignore|convert]" in result.output


def test_seed_preset_is_todays_method_exactly(tmp_path):
    """With --preset seed, profiles are ignored: the mosaic of pictures carrying one is the
    mosaic of the same values without it, pixel for pixel."""
    tagged = make_mosaic(_target(tmp_path / "a.png"), _folder(tmp_path / "tagged"),
                         preset="seed", cell_px=8, tile_px=8, cache_dir=tmp_path / "c")
    bare_folder = tmp_path / "bare"
    bare_folder.mkdir()
    for path in sorted((tmp_path / "tagged").iterdir()):
        with Image.open(path) as image:
            image.save(bare_folder / path.name)  # the same values, no profile
    bare = make_mosaic(_target(tmp_path / "b.png", None), bare_folder, preset="seed",
                       cell_px=8, tile_px=8, cache_dir=tmp_path / "c")
    assert np.array_equal(tagged.image, bare.image)
    assert tagged.library.colour_profiles == "ignore"
    assert tagged.library.directory.name == "px8"  # the folder seed's indexes always had


def test_each_setting_has_its_own_index(tmp_path):
    folder = _folder(tmp_path / "photos")
    target = _target(tmp_path / "t.png")
    mosaics = {value: make_mosaic(target, folder, preset="seed", crop="subject", cell_px=8,
                                  tile_px=8, colour_profiles=value, cache_dir=tmp_path / "c",
                                  compute_metrics=False)
               for value in ("convert", "ignore", "convert")}  # the first index read again
    converted, ignored = mosaics["convert"].library, mosaics["ignore"].library
    assert converted.directory != ignored.directory
    assert converted.directory.name == "px8-1x1-subject"  # the default preset's own
    assert ignored.directory.name == "px8-1x1-subject-ignore"
    assert converted.stats.decoded == 0 and converted.colour_profiles == "convert"
    tiles = {library.colour_profiles: dict(zip(library.source_ids, library.tiles, strict=True))
             for library in (converted, ignored)}
    for name in ("t0.png", "t1.png"):  # profiled: more saturated converted
        assert _saturation(tiles["convert"][name]) > _saturation(tiles["ignore"][name]) + 5
    for name in ("t2.png", "t3.png", "t4.png", "t5.png"):
        assert np.array_equal(tiles["convert"][name], tiles["ignore"][name])
    # A centre crop converting has a folder of its own too; seed's keeps its name.
    centre = TileLibrary.open(folder, 8, cache_dir=tmp_path / "c", crop="centre",
                              colour_profiles="convert")
    assert centre.directory.name == "px8-1x1-centre-convert"


def test_the_default_preset_converts_target_and_tiles(tmp_path):
    folder = _folder(tmp_path / "photos")
    target = _target(tmp_path / "t.png")
    mosaic = make_mosaic(target, folder, cell_px=8, tile_px=8, cache_dir=tmp_path / "c",
                         compute_metrics=False)
    assert mosaic.options.colour_profiles == "convert"
    assert mosaic.library.colour_profiles == "convert"
    report = mosaic.report()
    assert report["settings"]["colour_profiles"] == "convert"
    saved = tmp_path / "p.json"
    mosaic.placements.write_json(saved)
    assert '"colour_profiles":"convert"' in saved.read_text().replace(" ", "")
    from mosaicist.placements import Placements

    assert Placements.read(saved).options.colour_profiles == "convert"


def _legacy(folder: Path, cache: Path) -> Path:
    """An index of ``folder`` as mosaicist made it for the default preset before the
    setting: subject crops, profiles ignored, in the folder convert uses now."""
    made = TileLibrary.open(folder, 8, cache_dir=cache, crop="subject", colour_profiles="ignore")
    legacy = made.directory.with_name("px8-1x1-subject")
    made.directory.rename(legacy)
    with sqlite3.connect(legacy / "manifest.sqlite") as connection:
        connection.execute("DELETE FROM meta WHERE name = 'colour_profiles'")
    connection.close()
    return legacy


def test_an_older_index_converts_by_decoding_only_its_profiled_pictures(tmp_path):
    folder = _folder(tmp_path / "photos")
    _legacy(folder, tmp_path / "c")
    with pytest.raises(Exception, match="decoded with colour profiles ignored"):
        TileLibrary.open(folder, 8, cache_dir=tmp_path / "c", crop="subject",
                         colour_profiles="convert", update=False)
    brought = TileLibrary.open(folder, 8, cache_dir=tmp_path / "c", crop="subject",
                               colour_profiles="convert")
    assert brought.directory.name == "px8-1x1-subject"
    assert (brought.stats.decoded, brought.stats.reused) == (2, 4)  # t0 and t1 carry one
    fresh = TileLibrary.open(folder, 8, cache_dir=tmp_path / "fresh", crop="subject",
                             colour_profiles="convert")
    assert brought.source_ids == fresh.source_ids
    assert np.array_equal(np.asarray(brought.tiles), np.asarray(fresh.tiles))
    again = TileLibrary.open(folder, 8, cache_dir=tmp_path / "c", crop="subject",
                             colour_profiles="convert")
    assert again.stats.decoded == 0
    # Read without updating, now that it is of this setting.
    TileLibrary.open(folder, 8, cache_dir=tmp_path / "c", crop="subject",
                     colour_profiles="convert", update=False)


def test_a_decoder_that_ignores_profiles_is_not_used_to_convert(tmp_path):
    folder = _folder(tmp_path / "photos", profiled=1, plain=1)
    calls = []

    def decoder(*arguments):
        calls.append(arguments)

    library = TileLibrary.open(folder, 8, cache_dir=tmp_path / "c", crop="subject",
                               colour_profiles="convert", decoder=decoder)
    assert not calls and library.stats.decoded == 2


def test_pictures_without_profiles_share_one_index(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiles.npy"
    np.save(path, rng.integers(0, 256, (6, 12, 20, 3), dtype=np.uint8))
    first = TileLibrary.open(path, 8, cache_dir=tmp_path / "c", crop="subject",
                             colour_profiles="ignore")
    second = TileLibrary.open(path, 8, cache_dir=tmp_path / "c", crop="subject",
                              colour_profiles="convert")
    assert first.directory == second.directory and second.stats.decoded == 0


def test_originals_follow_the_library(tmp_path):
    folder = _folder(tmp_path / "photos", profiled=1, plain=0)
    data = (folder / "t0.png").read_bytes()
    for value in ("convert", "ignore"):
        pictures = OriginalPictures(FolderSource(folder, workers=1), ["t0.png"], 16,
                                    colour_profiles=value)
        expected = decode_tile_bytes(data, 16, colour_profiles=value)
        assert np.array_equal(pictures.fetch(np.array([0]))[0], expected)
    # Unsaid, as the library's default: the crop's presets' value.
    assert OriginalPictures(FolderSource(folder), ["t0.png"], 16,
                            crop="subject").colour_profiles == "convert"
    # Drawn larger than matched, the make's originals are converted as its tiles were.
    target = _target(tmp_path / "t.png")
    for value in ("convert", "ignore"):
        mosaic = make_mosaic(target, folder, preset="seed", cell_px=8, tile_px=16, match_px=8,
                             colour_profiles=value, cache_dir=tmp_path / "c",
                             compute_metrics=False)
        expected = read_original(folder / "t0.png", 16, colour_profiles=value)
        assert np.array_equal(mosaic.image[:16, :16], expected)


def test_the_target_is_read_as_the_setting_says(tmp_path):
    """A one-cell target of a wide-gamut red: converted, it matches the tile of its sRGB
    colour; ignored (--preset seed), the tile of its stored values."""
    stored = np.full((8, 8, 3), (200, 30, 30), np.uint8)
    target = tmp_path / "red.png"
    target.write_bytes(_encoded(stored, "PNG", _PROFILE))
    converted = decode_tile_bytes(target.read_bytes(), 8, colour_profiles="convert")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "converted.png").write_bytes(_encoded(converted, "PNG", None))
    (folder / "stored.png").write_bytes(_encoded(stored, "PNG", None))
    picks = {preset: make_mosaic(target, folder, preset=preset, cell_px=8, tile_px=8,
                                 cache_dir=tmp_path / "c",
                                 compute_metrics=False).placements.source_ids
             for preset in ("balanced", "seed")}
    assert picks == {"balanced": ["converted.png"], "seed": ["stored.png"]}


@pytest.mark.parametrize("preset", ["seed", "balanced"])
@pytest.mark.parametrize("tile_px", [8, 16])
def test_a_render_of_placements_draws_as_the_make_did(tmp_path, preset, tile_px):
    # 'render' opened the originals (and the crop windows and stamps of the index) with the
    # crop's usual setting, not the one the placements record: a seed make that converted
    # profiles rendered again unconverted; and the overlay read the target the same way.
    folder = _folder(tmp_path / "photos", profiled=2, plain=2)
    target = _target(tmp_path / "t.png")
    setting = "convert" if preset == "seed" else "ignore"  # each preset's unusual one
    placements = tmp_path / "p.json"
    mosaic = make_mosaic(target, folder, preset=preset, cell_px=8, tile_px=tile_px,
                         match_px=8, colour_profiles=setting, overlay=0.3,
                         cache_dir=tmp_path / "c", compute_metrics=False)
    made = tmp_path / "made.png"
    mosaic.write(made)
    mosaic.placements.write(placements)
    again = tmp_path / "again.png"
    result = CliRunner().invoke(main, ["render", str(placements), "-o", str(again), "-q",
                                       "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(made)))
