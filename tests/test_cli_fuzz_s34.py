"""Command-line bugs found by fuzzing the commands in session 34: each test failed before its fix.

The fuzzer (random hostile flags, paths and values, run in subprocesses with a
timeout) recorded every run that ended in a traceback, hung, exited 0 where it
should have failed, or said something misleading.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mosaicist.cli import main

#: A ``~user`` that names no user on any machine running the tests.
NO_USER = "~no-such-user-of-mosaicist"


def _random_picture(path: Path, height: int, width: int, seed: int) -> Path:
    """A picture of random pixels saved at ``path``."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def _error_line(result) -> str:
    """The (first) error line of a failed command; fails on a traceback or another exception.

    ``batch`` follows a target's error with its summary line.
    """
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert result.exit_code not in (0, None), result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines()
              if line.startswith("mosaicist: error: ")]
    assert errors, result.output
    return errors[0]


@pytest.mark.parametrize("arguments", [
    ["view", f"{NO_USER}/m.dzi", "--no-browser"],
    ["live", "--event", f"{NO_USER}/event"],
    ["batch", f"{NO_USER}/t.png", "--tiles", "lib", "-o", "out"],
    ["batch", "t.png", "--tiles", f"{NO_USER}/lib", "-o", "out"],
    ["studio", "--no-browser", "--root", f"{NO_USER}/photos"],
])
def test_a_tilde_user_of_no_user_is_a_name_in_the_current_folder(tmp_path, monkeypatch,
                                                                  arguments):
    # "~nobody/x" (no such user) is read as the shell reads it, a name in the current
    # folder; the commands expanded it again and ended in "RuntimeError: Could not
    # determine home directory." with a traceback.
    monkeypatch.chdir(tmp_path)
    _random_picture(tmp_path / "t.png", 16, 16, seed=0)
    (tmp_path / "lib").mkdir()
    result = CliRunner().invoke(main, arguments)
    line = _error_line(result)
    assert NO_USER in line, line


def test_a_cache_folder_under_a_tilde_user_of_no_user_is_made_in_the_current_folder(
        tmp_path, monkeypatch):
    # 'make --cache-dir ~nobody/cache' ended in "RuntimeError: Could not determine home
    # directory." with a traceback.
    monkeypatch.chdir(tmp_path)
    _random_picture(tmp_path / "t.png", 16, 16, seed=0)
    library = tmp_path / "lib"
    library.mkdir()
    for index in range(4):
        _random_picture(library / f"{index}.png", 8, 8, seed=index + 1)
    result = CliRunner().invoke(main, ["index", "lib", "--tile-px", "4", "-q",
                                       "--cache-dir", f"{NO_USER}/cache"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / NO_USER / "cache" / "indexes").is_dir()


def _small_library(folder: Path, count: int = 6) -> Path:
    """``count`` random 8 px photos in ``folder``."""
    folder.mkdir()
    for index in range(count):
        _random_picture(folder / f"{index}.png", 8, 8, seed=index + 1)
    return folder


@pytest.mark.parametrize("relative", [False, True])
def test_a_command_run_in_a_deleted_folder_says_so(tmp_path, monkeypatch, relative):
    # Run where the current folder was deleted (another terminal's 'rm -r'), 'make' said
    # only "mosaicist: error: No such file or directory" (its default output lies there),
    # and 'index' of a relative folder that it could not find, of a folder still there.
    target = _random_picture(tmp_path / "t.png", 16, 16, seed=0)
    library = _small_library(tmp_path / "lib")
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    arguments = (["index", "lib"] if relative
                 else ["make", str(target), "--tiles", str(library), "--cell", "8",
                       "--tile-px", "8", "-q"])
    line = _error_line(CliRunner().invoke(main, arguments))
    assert line.endswith("the current folder no longer exists (deleted or moved while in "
                         "use); change to an existing folder and run the command again"), line
    assert line.startswith("mosaicist: error: lib: ") == relative, line


def test_live_refuses_a_fallback_that_names_nothing_before_the_wall_opens(tmp_path,
                                                                         monkeypatch):
    # 'live --fallback' was looked up only when the host completed the grid from it, at the
    # end of the event: a mistyped folder served the wall without a word.
    import mosaicist.live

    def opened(*args, **kwargs):
        raise AssertionError("the wall opened")

    monkeypatch.setattr(mosaicist.live, "serve_live", opened)
    target = _random_picture(tmp_path / "t.png", 16, 16, seed=0)
    event = tmp_path / "event"
    result = CliRunner().invoke(main, ["live", str(target), "--grid", "2x2", "--port", "0",
                                       "--event", str(event),
                                       "--fallback", str(tmp_path / "photoz")])
    line = _error_line(result)
    assert line == (f"mosaicist: error: {tmp_path / 'photoz'}: no such folder or file, and "
                    "not a known dataset (cifar10, cifar100, galaxy10, galaxy10-sdss, "
                    "galaxy10-decals) (--fallback)"), line
    assert not event.exists()
