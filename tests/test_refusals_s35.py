"""A refused command leaves the disk as it was (session 35).

Every command, and its Python twin, that refuses its input says so in one
line and exits non-zero without having made anything: no output folder, no
cache folder, no index, no lock, no temporary. Each case runs in a sandbox
(its own home, cache and current folder; no ``MOSAICIST_CACHE_DIR``, so the
default cache is under the sandbox's home) whose whole tree is compared
before and after.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mosaicist.cli import main
from mosaicist.errors import MosaicistError

#: A placements file as 'make --placements p.csv' writes it: 2 x 3 cells of one tile.
_CSV = "row,col,tile,distance,position,transform,tint_0,tint_1,tint_2\n" + "".join(
    f"{row},{col},t00.png,0,0,identity,0.0,0.0,0.0\n" for row in range(2) for col in range(3))


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A home (no cache in it yet), a current folder with a target, tiles and odd files."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.delenv("MOSAICIST_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.chdir(work)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save("target.png")
    Path("tiles").mkdir()
    for index in range(3):
        Image.fromarray(np.full((8, 8, 3), index * 80, np.uint8)).save(f"tiles/t{index:02}.png")
    Path("empty").mkdir()
    Path("file.txt").write_text("not a folder\n")
    Path("p.csv").write_text(_CSV)
    return tmp_path


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root``, with a file's size and modification time."""
    tree = {}
    for path in root.rglob("*"):
        status = path.lstat()
        tree[str(path.relative_to(root))] = ((status.st_size, status.st_mtime_ns)
                                             if path.is_file() else (-1, 0))
    return tree


def _refused(root: Path, arguments: list[str]) -> str:
    """Run the command line; check it refused in one line and changed nothing; the line."""
    before = _tree(root)
    result = CliRunner().invoke(main, arguments)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output
    assert len(lines) == 1 and lines[0].startswith("mosaicist: error: "), result.stderr
    after = _tree(root)
    assert after == before, (f"made {sorted(set(after) - set(before))}, changed "
                             f"{sorted(k for k in before if after.get(k) != before[k])}")
    return lines[0]


#: Refusals, each with a word its line must hold.
REFUSALS = {
    # A tile source that names nothing: no cache folder (the default's, or --cache-dir's).
    "make-tiles": (["make", "target.png", "--tiles", "nothere"], "nothere"),
    "make-tiles-cache": (["make", "target.png", "--tiles", "nothere", "--cache-dir", "new"],
                         "nothere"),
    # ... nor the viewer's signing key, which a Deep Zoom output's check makes.
    "make-tiles-dzi": (["make", "target.png", "--tiles", "nothere", "-o", "m.dzi"], "nothere"),
    "index-tiles": (["index", "nothere"], "nothere"),
    "index-tiles-cache": (["index", "nothere", "--cache-dir", "new"], "nothere"),
    "render-tiles": (["render", "p.csv", "-o", "r.png", "--tiles", "nothere"], "nothere"),
    "render-tiles-cache": (["render", "p.csv", "-o", "r.png", "--tiles", "nothere",
                            "--cache-dir", "new"], "nothere"),
    "render-scheduler": (["render", "p.csv", "-o", "r.png", "--tiles", "tiles",
                          "--scheduler", "bogus"], "--scheduler"),
    # No output folder, records or locks for a batch refused.
    "batch-tiles": (["batch", "target.png", "--tiles", "nothere", "-o", "out"], "nothere"),
    "batch-tiles-cache": (["batch", "target.png", "--tiles", "nothere", "-o", "out",
                           "--cache-dir", "new"], "nothere"),
    "batch-under-file": (["batch", "target.png", "--tiles", "tiles", "-o", "file.txt/out"],
                         "file.txt"),
    "batch-format": (["batch", "target.png", "--tiles", "tiles", "-o", "out", "--format",
                      "bmp"], "--format"),
    "batch-cell": (["batch", "target.png", "--tiles", "tiles", "-o", "out", "--cell", "0"],
                   "--cell"),
    # The studio's cache (its history) is made once its roots are known to be folders.
    "studio-root": (["studio", "--no-browser", "--root", "nothere"], "--root"),
    "studio-root-cache": (["studio", "--no-browser", "--root", "nothere", "--cache-dir",
                           "new"], "--root"),
    "live-fallback": (["live", "target.png", "--grid", "4x3", "--fallback", "nothere"],
                      "--fallback"),
    "live-fallback-cache": (["live", "target.png", "--grid", "4x3", "--fallback", "nothere",
                             "--cache-dir", "new"], "--fallback"),
    "live-grid": (["live", "target.png", "--grid", "0x0"], "--grid"),
    "view-missing": (["view", "missing.dzi", "--no-browser"], "missing.dzi"),
    "make-target": (["make", "missing.png", "--tiles", "tiles"], "missing.png"),
    "make-output": (["make", "target.png", "--tiles", "tiles", "-o", "nodir/m.png"], "nodir"),
    "make-format": (["make", "target.png", "--tiles", "tiles", "-o", "m.bmp"], "m.bmp"),
    "score-target": (["score", "target.png", "missing.png"], "missing.png"),
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_refused_command_leaves_the_disk_as_it_was(sandbox, name):
    arguments, word = REFUSALS[name]
    line = _refused(sandbox, arguments)
    assert word in line, line


#: Refused only once the library is read: the index's folder, manifest and write lock made
#: to read it are removed again (they were left behind before session 35's fix).
LIBRARY_REFUSALS = {
    "make-empty": ["make", "target.png", "--tiles", "empty"],
    "index-empty": ["index", "empty"],
    "make-cifar-path": ["make", "target.png", "--tiles", "cifar10:nothere"],
}


@pytest.mark.parametrize("name", sorted(LIBRARY_REFUSALS))
def test_library_refused_after_reading_leaves_no_index(sandbox, name):
    _refused(sandbox, LIBRARY_REFUSALS[name])


def test_batch_of_an_empty_library_makes_no_output_folder(sandbox):
    result = CliRunner().invoke(main, ["batch", "target.png", "--tiles", "empty", "-o", "out"])
    assert result.exit_code == 1, result.output
    assert "no usable tile images" in result.stderr
    assert not (sandbox / "work" / "out").exists()


def test_batch_into_existing_folder_of_other_settings_is_refused_before_indexing(sandbox):
    # The folder's records are read before its lock is taken: refused, no lock file of
    # this run's settings is left in it (nor is the library indexed).
    made = CliRunner().invoke(main, ["batch", "target.png", "--tiles", "tiles", "-o", "out",
                                     "--cell", "8", "--tile-px", "8", "--preset", "seed",
                                     "-q"])
    assert made.exit_code == 0, made.output
    line = _refused(sandbox, ["batch", "target.png", "--tiles", "empty", "-o", "out",
                              "--cell", "4", "--tile-px", "8", "--preset", "seed", "-q"])
    assert "other settings" in line, line


def test_make_mosaic_api_refusing_its_tiles_makes_no_cache(sandbox):
    from mosaicist import make_mosaic

    before = _tree(sandbox)
    with pytest.raises(MosaicistError, match="nothere"):
        make_mosaic("target.png", "nothere", cache_dir="new")
    with pytest.raises(MosaicistError, match="nothere"):
        make_mosaic("target.png", "nothere")
    assert _tree(sandbox) == before


def test_batch_api_refusing_its_tiles_makes_nothing(sandbox):
    from mosaicist.batch import batch_mosaics

    before = _tree(sandbox)
    with pytest.raises(MosaicistError, match="nothere"):
        batch_mosaics(["target.png"], "nothere", "out", cache_dir="new")
    assert _tree(sandbox) == before


def test_studio_api_refusing_a_root_makes_no_cache(sandbox):
    from mosaicist.studio._app import Studio

    before = _tree(sandbox)
    with pytest.raises(MosaicistError, match="--root"):
        Studio(cache_dir="new", roots=["nothere"])
    with pytest.raises(MosaicistError, match="--root"):
        Studio(roots=["nothere"])
    assert _tree(sandbox) == before


def test_cache_dir_named_without_making_it(sandbox):
    from mosaicist.paths import cache_dir

    named = cache_dir("new", create=False)
    assert named == Path("new").absolute() and not named.exists()
    with pytest.raises(MosaicistError, match="is a file"):
        cache_dir("file.txt", create=False)
    assert cache_dir("new").is_dir()  # made as before
    assert os.path.isdir(sandbox / "work" / "new")


def test_render_api_refusing_its_tiles_and_a_render_that_reads_no_index_make_no_cache(
        sandbox):
    # placements_renderer named the cache by making it, and the windows' lookup in the
    # indexes made it too, though it only reads them.
    from mosaicist import Placements
    from mosaicist.render import placements_renderer

    placements = Placements.read("p.csv")
    before = _tree(sandbox)
    with pytest.raises(MosaicistError, match="nothere"):
        placements_renderer(placements, tiles="nothere")
    assert _tree(sandbox) == before
    result = CliRunner().invoke(main, ["render", "p.csv", "-o", "r.png", "--tiles", "tiles"])
    assert result.exit_code == 0, result.output
    assert Path("r.png").is_file()
    assert not (sandbox / "home" / ".cache").exists()
