"""``~user`` of no user, and ``~`` with no home known, through the Python API.

``Path.expanduser`` raises "RuntimeError: Could not determine home directory" for
both: the command line turned such names into absolute ones, but the API's callers
(make_mosaic's cache, batch, the viewer, the studio, live) ended in that traceback.
Such a name is read as the shell reads it, a name in the current folder.
"""

from __future__ import annotations

import pwd
from pathlib import Path

import numpy as np
import pytest
from conftest import gradient
from PIL import Image

from mosaicist import paths
from mosaicist.batch import batch_mosaics, collect_targets
from mosaicist.errors import MosaicistError, OptionError
from mosaicist.live import Event
from mosaicist.studio import Studio
from mosaicist.viewer import find_viewer

#: A home of no user on any machine the tests run on.
NOBODY = "~no-such-user-of-mosaicist-s34"


def test_a_cache_folder_of_no_user_is_made_in_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert paths.cache_dir(f"{NOBODY}/cache") == tmp_path / NOBODY / "cache"
    assert (tmp_path / NOBODY / "cache").is_dir()
    monkeypatch.setenv(paths.CACHE_ENV, f"{NOBODY}/env")
    assert paths.cache_dir() == tmp_path / NOBODY / "env"


@pytest.mark.parametrize("platformdirs_says", ["RuntimeError", "~/.cache/mosaicist"])
def test_no_home_known_for_the_default_cache_is_one_line(tmp_path, monkeypatch,
                                                         platformdirs_says):
    # HOME unset and no password entry (a container's odd user): platformdirs raises
    # RuntimeError, or (older ones) gives "~/.cache/mosaicist" unexpanded, where the cache
    # must not land in a folder "~" here.
    def no_entry(uid: int) -> pwd.struct_passwd:
        raise KeyError(uid)

    monkeypatch.chdir(tmp_path)
    for name in ("HOME", "XDG_CACHE_HOME", paths.CACHE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    if platformdirs_says != "RuntimeError":
        monkeypatch.setattr(paths.platformdirs, "user_cache_dir",
                            lambda *arguments, **keywords: platformdirs_says)
    with pytest.raises(OptionError, match=f"^no home folder is known for the cache; set "
                                          f"{paths.CACHE_ENV} or give cache_dir$"):
        paths.cache_dir()
    assert not (tmp_path / "~").exists()
    # A "~/..." path given is the shell's "~" too: a folder of that name here.
    assert paths.expanded("~/t.png") == Path("~/t.png")


def test_a_batch_target_of_no_user_is_not_found(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lib").mkdir()
    (tmp_path / "targets.txt").write_text(f"{NOBODY}/t.png\n")
    result = batch_mosaics([f"{NOBODY}/t.png", "targets.txt"], "lib", f"{NOBODY}/out")
    assert [(item.name, item.status, item.message) for item in result.results] == [
        (f"{NOBODY}/t.png", "failed", "target file not found"),
        (f"targets.txt:1: {NOBODY}/t.png", "failed", "target file not found"),
    ]


def test_a_list_line_of_no_user_names_a_file_beside_the_list(tmp_path):
    folder = tmp_path / "lists" / NOBODY
    folder.mkdir(parents=True)
    Image.fromarray(gradient(8, 8)).save(folder / "t.png")
    listing = tmp_path / "lists" / "targets.txt"
    listing.write_text(f"{NOBODY}/t.png\n")
    found, rejected = collect_targets([listing])
    assert rejected == [] and [target.path for target in found] == [folder / "t.png"]


def test_a_batch_item_starting_with_tilde_is_read_from_home(tmp_path, monkeypatch):
    # The items themselves were not expanded, unlike the output folder, the list files'
    # lines and make_mosaic's target: "~/t.png" was "target file not found".
    monkeypatch.setenv("HOME", str(tmp_path))
    Image.fromarray(gradient(8, 8)).save(tmp_path / "t.png")
    found, rejected = collect_targets(["~/t.png"])
    assert rejected == []
    assert [(target.path, target.name) for target in found] == [(tmp_path / "t.png", "~/t.png")]


def test_a_viewer_of_no_user_is_not_found(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MosaicistError, match=f"^{NOBODY}/v.html: no such file or folder$"):
        find_viewer(f"{NOBODY}/v.html")


def test_a_studio_root_of_no_user_is_not_a_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    with pytest.raises(MosaicistError, match=f"^{NOBODY}/photos: not a folder"):
        Studio(cache_dir=tmp_path / "cache", roots=[f"{NOBODY}/photos"], home=home)


def test_a_studio_cache_of_no_user_is_in_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    studio = Studio(cache_dir=f"{NOBODY}/cache", home=home)
    try:
        assert studio.cache_dir == tmp_path / NOBODY / "cache"
        assert (tmp_path / NOBODY / "cache" / "studio").is_dir()
    finally:
        studio.close()


def test_a_live_event_folder_of_no_user_is_made_in_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "target.png"
    Image.fromarray(np.asarray(gradient(60, 40))).save(target)
    event = Event.open(f"{NOBODY}/event", target=target, grid=(3, 2),
                       settings={"tile_px": 8, "match_px": 4})
    try:
        assert (tmp_path / NOBODY / "event").is_dir()
    finally:
        event.close()


def test_a_source_folder_of_no_user_is_a_name_in_the_current_folder(tmp_path, monkeypatch):
    from mosaicist.sources.base import absolute_path

    monkeypatch.chdir(tmp_path)
    assert absolute_path("~nosuchuser_xyz/c") == tmp_path / "~nosuchuser_xyz" / "c"


def test_a_cache_folder_that_is_a_link_leading_nowhere_is_said_as_such(tmp_path):
    # A loop, or a link to a disk not mounted, was "the cache folder is a file".
    from mosaicist.errors import MosaicistError
    from mosaicist.paths import cache_dir

    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(MosaicistError, match="cache folder is a link that loops back on itself"):
        cache_dir(loop)
    away = tmp_path / "away"
    away.symlink_to(tmp_path / "unmounted" / "cache")
    with pytest.raises(MosaicistError, match="cache folder is a link to .*unmounted.*which "
                                             "is not there"):
        cache_dir(away)
    plain = tmp_path / "plain"
    plain.write_text("")
    with pytest.raises(MosaicistError, match="cache folder is a file, not a folder"):
        cache_dir(plain)
