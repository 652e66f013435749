"""Benchmarks' rough edges (session 37): checks before a checkout, counts, one "kept" line.

* ``bench_versions`` added its ``git worktree`` (a checkout of the earlier
  commit) and its run folder before it looked for the data its cases read: a
  data folder without the galaxies cost the checkout, then stopped at the
  first case that read them.
* ``bench_seed`` printed "5040 cells" and one message without the
  ``benchmark:`` prefix the others have.
* ``bench_gigapixel --keep`` printed the folder it kept twice.

Nothing here reads the shared data: each test makes a tiny data folder; the
children the benchmarks start are replaced by in-process runs or by a failure.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner
from test_benchmarks_s36 import STARRY, bench, one_line_exit, write_picture

from mosaicist.cli import main


def test_versions_checks_its_data_before_the_checkout(tmp_path, monkeypatch):
    versions = bench("bench_versions")
    for name in (STARRY, "cameratrap_american_black_bear.jpg"):
        write_picture(tmp_path / "targets" / name, (64, 48))
    write_picture(tmp_path / "cifar10" / "train" / "cat" / "0.jpg")
    (tmp_path / "galaxy-zoo").mkdir()  # a partial copy: no galaxies
    # git worktree add (and every other child) must not be reached.
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("it went on"))
    cache = tmp_path / "cache"
    message = one_line_exit(versions, monkeypatch, "--before", "HEAD", "--data", str(tmp_path),
                            "--cache-dir", str(cache))
    galaxies = tmp_path / "galaxy-zoo"
    assert message == f"benchmark: tiles: no pictures in {galaxies}; pass --data PATH"
    assert not (cache / "runs").exists() or not list((cache / "runs").iterdir())


def _seed_data(root, extra_png: bool = False):
    """Starry Night as 32 x 40 cells of 16 px (1,280 cells), and four 32 px JPEG tiles."""
    write_picture(root / "targets" / STARRY, (640, 512))
    for index in range(4):
        write_picture(root / "cifar10" / "train" / "cat" / f"{index}.jpg")
    if extra_png:  # the library takes it; the seed's list reads .jpg files only
        write_picture(root / "cifar10" / "train" / "cat" / "4.png")
    return root


def _fake_child():
    """``run_child`` that runs nothing: the end-to-end runs are not what is tested."""
    child_run = bench("common").ChildRun
    return lambda args, **keywords: child_run([str(a) for a in args], 0, 1.0, 2**20, "")


def test_seed_counts_have_separators(tmp_path, monkeypatch, capsys):
    seed = bench("bench_seed")
    monkeypatch.setattr(seed, "run_child", _fake_child())
    data = _seed_data(tmp_path / "data")
    monkeypatch.setattr(sys, "argv", ["bench_seed.py", "--data", str(data), "--cache-dir",
                                      str(tmp_path / "cache"), "--seed-cells", "2",
                                      "--brute-cells", "3", "--repeat", "1"])
    seed.main()
    printed = capsys.readouterr().out
    assert "32 x 40 = 1,280 cells of 16 px" in printed
    assert "1,280 cells in " in printed and "1280 cells" not in printed
    assert "seed: load 4 tiles" in printed


def test_seed_list_mismatch_is_a_benchmark_message(tmp_path, monkeypatch):
    seed = bench("bench_seed")
    monkeypatch.setattr(seed, "run_child", _fake_child())
    data = _seed_data(tmp_path / "data", extra_png=True)
    monkeypatch.setattr(sys, "argv", ["bench_seed.py", "--data", str(data), "--cache-dir",
                                      str(tmp_path / "cache"), "--seed-cells", "2",
                                      "--brute-cells", "3", "--repeat", "1"])
    with pytest.raises(SystemExit) as stopped:
        seed.main()
    assert stopped.value.code == (
        "benchmark: the seed's tile list has 4 JPEGs but mosaicist's library of "
        f"{data / 'cifar10' / 'train'} has 5 tiles; the comparison needs a folder of .jpg "
        "files only")
    assert not list((tmp_path / "cache" / "runs").iterdir())


def test_gigapixel_keep_names_the_folder_once(tmp_path, monkeypatch, capsys):
    gigapixel = bench("bench_gigapixel")
    data = tmp_path / "data"
    write_picture(data / "targets" / STARRY, (64, 48))
    for index in range(4):
        write_picture(data / "cifar10" / "train" / "cat" / f"{index}.jpg")

    def in_process(args, **keywords):
        # python -m mosaicist ARGS, here: a child costs a second.
        arguments = [str(argument) for argument in args[3:]]
        result = CliRunner().invoke(main, arguments)
        assert result.exit_code == 0, result.output
        return bench("common").ChildRun(arguments, 0, 1.0, 2**20, "")

    monkeypatch.setattr(gigapixel, "run_child", in_process)
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", [
        "bench_gigapixel.py", "--data", str(data), "--cache-dir", str(tmp_path / "cache"),
        "--out", str(out), "--cols", "4", "--rows", "3", "--cell", "4", "--tile-px", "8",
        "--skip-tiff", "--keep"])
    gigapixel.main()
    printed = capsys.readouterr().out
    assert printed.count(str(out)) == 1, printed
    assert f"outputs kept in {out}" in printed
    assert (out / "mural.dzi").is_file()
