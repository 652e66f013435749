"""The benchmarks without their data: one line naming what is missing, before any work.

A benchmark given a data folder that lacks its inputs (``--data`` pointed at the
wrong place, a partial copy) must say which input is missing and where it looked,
in one line, before it starts children or makes run folders: not stop minutes in
with a traceback. Nothing here reads the shared data folder: each test makes a
small one of its own (or none), and the heavy steps are replaced by a failure.
"""

from __future__ import annotations

import importlib
import signal
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
STARRY = "starry_night_google_1280.jpg"


def bench(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py``, leaving ``sys.path`` and the SIGTERM handler alone."""
    handler = signal.getsignal(signal.SIGTERM)
    path = list(sys.path)
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path[:] = path
        signal.signal(signal.SIGTERM, handler)


def write_picture(path: Path, size: tuple[int, int] = (32, 32)) -> Path:
    """A small gradient picture at ``path``."""
    width, height = size
    ramp = np.linspace(0, 255, width * height, dtype=np.float32).reshape(height, width)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.stack([ramp] * 3, axis=-1).astype(np.uint8)).save(path)
    return path


def stop_heavy_work(module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every step that does the benchmark's work fail the test when reached."""
    for heavy in ("run_child", "run", "make_target", "make_mosaic", "bench_index", "_measure"):
        if hasattr(module, heavy):
            monkeypatch.setattr(module, heavy, lambda *a, **k: pytest.fail("it went on"))


def one_line_exit(module: ModuleType, monkeypatch: pytest.MonkeyPatch,
                  *arguments: str) -> str:
    """Run ``module.main()`` with ``arguments``; return its one-line exit message."""
    monkeypatch.setattr(sys, "argv", [f"{module.__name__}.py", *arguments])
    with pytest.raises(SystemExit) as stopped:
        module.main()
    message = stopped.value.code
    assert isinstance(message, str) and "\n" not in message, message
    assert message.startswith("benchmark: ") and message.endswith("; pass --data PATH")
    return message


def test_require_pictures_and_file(tmp_path):
    common = bench("common")
    with pytest.raises(SystemExit, match=r"tiles: .*/none not found; pass --data PATH"):
        common.require_pictures(tmp_path / "none", "tiles")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "cat" / "notes.txt").write_text("not a picture")
    with pytest.raises(SystemExit, match=r"tiles: no pictures in .*/empty; pass --data PATH"):
        common.require_pictures(tmp_path / "empty", "tiles")
    folder = write_picture(tmp_path / "full" / "cat" / "0.JPG").parent.parent
    assert common.require_pictures(folder, "tiles") == folder
    with pytest.raises(SystemExit, match=r"target: .*/cat not found"):
        common.require_file(folder / "cat", "target")  # a folder is not the file
    assert common.require_file(folder / "cat" / "0.JPG", "target") == folder / "cat" / "0.JPG"


def test_dask_index_without_cifar(tmp_path, monkeypatch):
    """It ran its first child, which failed with a traceback printed in the benchmark's exit."""
    dask_bench = bench("bench_dask")
    stop_heavy_work(dask_bench, monkeypatch)
    message = one_line_exit(dask_bench, monkeypatch, "index", "--data", str(tmp_path),
                            "--cache-dir", str(tmp_path / "cache"))
    assert f"{tmp_path / 'cifar10' / 'train'} not found" in message


@pytest.mark.parametrize("module_name", ["bench_million", "bench_dask"])
def test_million_library_without_cifar(module_name, tmp_path, monkeypatch):
    """The library's build stacked no images: ValueError "need at least one array to stack"."""
    module = bench(module_name)
    stop_heavy_work(module, monkeypatch)
    (tmp_path / "cifar10" / "train").mkdir(parents=True)
    arguments = ["million"] if module_name == "bench_dask" else []
    message = one_line_exit(module, monkeypatch, *arguments, "--tiles", "12", "--data",
                            str(tmp_path), "--cache-dir", str(tmp_path / "cache"))
    assert f"no CIFAR-10 JPEGs in {tmp_path / 'cifar10'}" in message
    assert not list((tmp_path / "cache").iterdir())


def test_million_target_missing(tmp_path, monkeypatch):
    """A cached library, no Starry Night: FileNotFoundError from Pillow."""
    million = bench("bench_million")
    stop_heavy_work(million, monkeypatch)
    cache = tmp_path / "cache"
    cache.mkdir()
    np.save(cache / "million-12-s0.npy", np.zeros((12, 32, 32, 3), np.uint8))
    message = one_line_exit(million, monkeypatch, "--tiles", "12", "--build-only", "--data",
                            str(tmp_path), "--cache-dir", str(cache))
    assert f"target: {tmp_path / 'targets' / STARRY} not found" in message


@pytest.mark.parametrize("present", ["nothing", "the target"])
def test_gigapixel_without_its_inputs(present, tmp_path, monkeypatch):
    """No target: FileNotFoundError; no tiles: the make's error after the target's resize."""
    gigapixel = bench("bench_gigapixel")
    stop_heavy_work(gigapixel, monkeypatch)
    if present == "the target":
        write_picture(tmp_path / "targets" / STARRY, (64, 48))
    cache = tmp_path / "cache"
    message = one_line_exit(gigapixel, monkeypatch, "--data", str(tmp_path),
                            "--cache-dir", str(cache))
    missing = "cifar10/train" if present == "the target" else f"targets/{STARRY}"
    assert f"{tmp_path / missing} not found" in message
    assert not (cache / "runs").exists() or not list((cache / "runs").iterdir())


@pytest.mark.parametrize("present", ["an empty targets folder", "the target"])
def test_warm_without_its_inputs(present, tmp_path, monkeypatch):
    """Without --target: FileNotFoundError for Starry Night; no pictures: MosaicistError."""
    warm = bench("bench_warm")
    stop_heavy_work(warm, monkeypatch)
    (tmp_path / "targets").mkdir()
    (tmp_path / "cifar10" / "train").mkdir(parents=True)
    if present == "the target":
        write_picture(tmp_path / "targets" / STARRY, (64, 48))
    message = one_line_exit(warm, monkeypatch, "--data", str(tmp_path),
                            "--cache-dir", str(tmp_path / "cache"))
    if present == "the target":
        assert message.startswith("benchmark: --tiles: no pictures in ")
    else:
        assert f"--target: {tmp_path / 'targets' / STARRY} not found" in message


def test_adaptive_without_tiles(tmp_path, monkeypatch):
    """The targets were there, the tiles not: SourceError from the first make."""
    adaptive = bench("bench_adaptive")
    stop_heavy_work(adaptive, monkeypatch)
    write_picture(tmp_path / "targets" / STARRY, (64, 48))
    message = one_line_exit(adaptive, monkeypatch, "--data", str(tmp_path), "--targets", STARRY,
                            "--cache-dir", str(tmp_path / "cache"))
    assert f"tiles: {tmp_path / 'cifar10' / 'train'} not found" in message
