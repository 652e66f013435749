"""Hostile renders: outputs that must not destroy the user's files, damaged inputs, interrupts."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_colour_folder
from PIL import Image

from mosaicist import MosaicOptions
from mosaicist.cli import main
from mosaicist.errors import MosaicistError
from mosaicist.render import DEEP_ZOOM, files_folder, write_deep_zoom


def _photo_library_in_level_folders(root):
    """A tile library sorted into ``0/`` and ``1/``: folder names a pyramid's levels have."""
    make_colour_folder(root / "0", 3, seed=1)
    make_colour_folder(root / "1", 3, seed=2)
    return root


def test_a_tile_folder_whose_level_folders_hold_photos_is_not_replaced(tmp_path):
    """``NAME_files/0/t000.png`` is a photo, not a tile: refused before any work.

    Only the tile folder's own entries were looked at: level-named folders
    passed, whatever they held, so ``make --tiles shots_files -o shots.dzi``
    replaced the library, photos and all, with the pyramid.
    """
    path = tmp_path / "shots.dzi"
    _photo_library_in_level_folders(files_folder(path))
    options = MosaicOptions(dzi_tile_size=16, dzi_format="png")
    with pytest.raises(MosaicistError, match=r"shots_files: holds what is not a Deep Zoom "
                                             r"pyramid's \(0/t000\.png, 0/t001\.png, 0/t002"):
        DEEP_ZOOM.check(path, 30, 20, options)
    assert sorted(p.name for p in (files_folder(path) / "1").iterdir()) == [
        "t000.png", "t001.png", "t002.png"]


def test_a_pyramid_of_its_own_is_still_replaced(tmp_path):
    """Its own tiles (and a file browser's hidden files) pass the closer look."""
    path = tmp_path / "m.dzi"
    for tile_format in ("png", "jpeg", "webp"):
        write_deep_zoom([np.zeros((20, 30, 3), np.uint8)], 30, 20, path, tile_size=16,
                        format=tile_format)
        (files_folder(path) / "5" / ".DS_Store").write_bytes(b"")
        DEEP_ZOOM.check(path, 30, 20, MosaicOptions(dzi_tile_size=16, dzi_format=tile_format))
    # Another writer's spellings, which read_level reads too.
    (files_folder(path) / "5" / "0_0.webp").rename(files_folder(path) / "5" / "0_0.JPG")
    DEEP_ZOOM.check(path, 30, 20, MosaicOptions(dzi_tile_size=16))


def test_make_into_a_library_named_like_the_pyramids_tiles_keeps_the_photos(tmp_path):
    """The whole command: the library ``L_files`` survives ``make --tiles L_files -o L.dzi``."""
    library = _photo_library_in_level_folders(tmp_path / "L_files")
    target = tmp_path / "target.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 24, 3), np.uint8)).save(
        target)
    result = CliRunner().invoke(main, [
        "make", str(target), "--tiles", str(library), "-o", str(tmp_path / "L.dzi"),
        "--cell", "8", "--tile-px", "8", "--preset", "seed", "-q"])
    assert result.exit_code == 1
    assert "holds what is not a Deep Zoom pyramid's (0/t000.png" in result.output
    assert sorted(p.name for p in (library / "0").iterdir()) == [
        "t000.png", "t001.png", "t002.png"]
    assert not (tmp_path / "L.dzi").exists()


def _small_renderer():
    from test_render import random_placements

    from mosaicist.render import IndexPictures, MosaicRenderer

    tiles = np.random.default_rng(6).integers(0, 256, (4, 6, 6, 3), dtype=np.uint8)
    placements = random_placements(3, 5, 4, seed=6)
    return MosaicRenderer(placements, IndexPictures(tiles, placements.tile))


@pytest.mark.parametrize(("damage", "message"), [
    ("a folder at the key", r"cache[/\\]viewer-key: cannot make the key that signs viewer "
                            r"manifests: "),
    ("a file at the cache folder", r"cache: the cache folder \(MOSAICIST_CACHE_DIR\) is a "
                                   r"file"),
])
def test_a_cache_that_cannot_take_the_signing_key_is_said_before_any_tile(
        tmp_path, monkeypatch, damage, message):
    """The key that signs the viewer manifest, named, before the pyramid is begun.

    It was made last of all, after every tile and the page: the run failed at
    its very end, naming the manifest (``m.viewer.json: cannot write the
    viewer manifest: Is a directory``, or ``Read-only file system`` in a
    folder that was writable).
    """
    cache = tmp_path / "cache"
    monkeypatch.setenv("MOSAICIST_CACHE_DIR", str(cache))
    if damage == "a folder at the key":
        (cache / "viewer-key").mkdir(parents=True)
    else:
        cache.write_bytes(b"")
    path = tmp_path / "m.dzi"
    with pytest.raises(MosaicistError, match=message):
        _small_renderer().write(path, MosaicOptions(dzi_tile_size=16, dzi_format="png"))
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["cache"]


def test_a_pyramid_and_its_signed_manifest_are_written_with_a_fresh_cache(tmp_path, monkeypatch):
    """The key made by the check is the one the manifest is signed with."""
    from mosaicist.viewer._manifest import read_manifest

    monkeypatch.setenv("MOSAICIST_CACHE_DIR", str(tmp_path / "new-cache"))
    path = tmp_path / "m.dzi"
    _small_renderer().write(path, MosaicOptions(dzi_tile_size=16, dzi_format="png"))
    manifest, problem = read_manifest(path.with_suffix(".html"))
    assert problem is None and manifest is not None and manifest.descriptor == "m.dzi"


def test_a_home_that_cannot_take_the_cache_says_where_the_key_goes(tmp_path, monkeypatch):
    # A read-only home with a writable --cache-dir: a Deep Zoom make said only
    # "<home>/.cache/mosaicist: cannot make the cache folder: Permission denied", naming a
    # folder it was never given, and not how to give another.
    from mosaicist.viewer import _manifest

    home_cache = tmp_path / "home" / ".cache" / "mosaicist"

    def read_only_home(override=None, *, create=True):
        assert override is None  # the key is the user's, whatever --cache-dir says
        if create:
            raise MosaicistError(f"{home_cache}: cannot make the cache folder: "
                                 "Permission denied")
        return home_cache

    monkeypatch.setattr(_manifest, "cache_dir", read_only_home)
    with pytest.raises(MosaicistError) as raised:
        _manifest.signing_key()
    message = str(raised.value)
    assert message.startswith(f"{home_cache / 'viewer-key'}: cannot make the key that signs "
                              "viewer manifests: cannot make the cache folder: Permission "
                              "denied")
    assert "set MOSAICIST_CACHE_DIR" in message and "\n" not in message
