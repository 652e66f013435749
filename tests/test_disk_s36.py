"""A full disk under the writers of the command line.

Writing past a lowered file-size limit (``RLIMIT_FSIZE``; Python ignores
SIGXFSZ) fails with EFBIG ("File too large") as a write to a full disk fails
with ENOSPC; the library's index, being small, fits. A failing run must say
one line naming the file, exit 1, leave nothing under the output's names and
no temporaries, and a later run with room must succeed and reuse what was
indexed.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from mosaicist.cli import main

resource = pytest.importorskip("resource")

#: The file-size limit: above the index's files (its manifest's log reaches about
#: 150 kB) and a Deep Zoom tile, below every output tried.
LIMIT = 256 << 10


@contextlib.contextmanager
def _file_size_limit(limit: int) -> Iterator[None]:
    """Make writing a file past ``limit`` bytes fail, as on a full disk."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    ignored = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, ignored)


def _mosaicist(limit: int | None, *arguments: object) -> Result:
    """Run the command line in-process, under a file-size limit of ``limit`` bytes."""
    with _file_size_limit(limit) if limit else contextlib.nullcontext():
        return CliRunner().invoke(main, [str(argument) for argument in arguments])


@pytest.fixture
def grid(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """A library of 12 noisy tiles, a target, and settings that make a 640x480 mosaic.

    Noise does not compress: every output is hundreds of kB, over :data:`LIMIT`.
    """
    rng = np.random.default_rng(36)
    library = tmp_path / "lib"
    library.mkdir()
    for number in range(12):
        tile = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        tile[..., number % 3] |= 0x80
        Image.fromarray(tile).save(library / f"t{number:02d}.png")
    target = tmp_path / "target.png"
    Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(target)
    return library, target, ["--cell", "1", "--tile-px", "8", "--preset", "seed", "--quiet"]


def _left(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def _indexed() -> dict[str, tuple[int, int]]:
    """Each packed-tiles file of the cache, with its inode and modification time."""
    cache = Path(os.environ["MOSAICIST_CACHE_DIR"])
    return {os.fspath(path.relative_to(cache)): (path.stat().st_ino, path.stat().st_mtime_ns)
            for path in cache.rglob("tiles-*.u8")}


def test_a_viewer_page_refused_by_a_full_disk_takes_its_pyramid_back(tmp_path, grid):
    # The tiles and descriptor fit, the page (hundreds of kB: it inlines its viewer)
    # did not: the run failed, but m.dzi and m_files stayed, a pyramid that looked
    # finished (batch counts one without its page as cut short), and its tiles held
    # the room the next try needed.
    library, target, settings = grid
    out = tmp_path / "out"
    out.mkdir()
    command = ["make", target, "--tiles", library, "-o", out / "m.dzi", "--dzi-format", "png",
               *settings, "--cell", "4"]
    failed = _mosaicist(LIMIT, *command)
    assert failed.exit_code == 1
    assert failed.stderr == (f"mosaicist: error: {out / 'm.html'}: cannot write the viewer "
                             "page: File too large\n")
    assert _left(out) == []
    indexed = _indexed()
    assert len(indexed) == 1
    made = _mosaicist(None, *command)
    assert made.exit_code == 0, made.output
    assert _left(out) == ["m.dzi", "m.html", "m.viewer.json", "m_files"]
    assert _indexed() == indexed  # the index made by the failed run, used as it was


def test_a_name_too_long_for_its_folder_is_refused_naming_the_output(tmp_path):
    # Path.is_dir raised OSError "File name too long" from the output's check: no
    # MosaicistError from the API, and no word of what was too long on the command line.
    from mosaicist.errors import MosaicistError
    from mosaicist.render import check_output

    path = tmp_path / ("a" * 252 + ".png")
    with pytest.raises(MosaicistError) as caught:
        check_output(path, 8, 8)
    assert str(caught.value) == (f"{path}: the output's name is 256 bytes, over the 255 its "
                                 "file system allows; give a shorter name")
    assert _left(tmp_path) == []


def test_a_pyramid_whose_viewer_manifest_name_is_too_long_says_how_long_its_own_may_be(
        tmp_path, grid):
    # NAME.dzi of 250 bytes is a legal name, but NAME.viewer.json is 258: "File name too
    # long", naming a file the user never gave, with no word of what to give instead.
    library, target, settings = grid
    path = tmp_path / ("b" * 246 + ".dzi")
    failed = _mosaicist(None, "make", target, "--tiles", library, "-o", path, *settings)
    assert failed.exit_code == 1
    assert failed.stderr.endswith(
        ".dzi: the name of the viewer manifest beside it is 258 bytes, over the 255 its file "
        "system allows; give a name of at most 247 bytes\n"), failed.stderr
    assert _left(tmp_path) == ["lib", "target.png"]
    shorter = tmp_path / ("b" * 243 + ".dzi")
    assert _mosaicist(None, "make", target, "--tiles", library, "-o", shorter,
                      *settings, "--cell", "4").exit_code == 0
