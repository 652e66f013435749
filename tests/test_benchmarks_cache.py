"""The benchmarks' caches and options: no shared half-written names, one-line errors.

The benchmark scripts (``benchmarks/``, not a package) are imported from their
folder, as they import each other. Their cache writers make small files here
(tiny pictures, a few tiles); nothing reads the shared data folder: the tests
give ``--data`` folders of their own, or stop at the options.
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


def bench(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py``, leaving ``sys.path`` and the SIGTERM handler as they were.

    The scripts put their folder first on the path, and ``common`` turns
    SIGTERM into an exit: right for a benchmark, not for the test process.
    """
    handler = signal.getsignal(signal.SIGTERM)
    path = list(sys.path)
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path[:] = path
        signal.signal(signal.SIGTERM, handler)


def write_picture(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    """A small smooth RGB picture (a gradient) at ``path``."""
    width, height = size
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    pixels = np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], axis=-1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def fake_data(root: Path) -> Path:
    """A shared-data folder in miniature: two CIFAR-like JPEGs per split, Starry Night."""
    for split in ("train", "test"):
        for number in range(2):
            write_picture(root / "cifar10" / split / "cat" / f"{number}.jpg", (32, 32))
    write_picture(root / "targets" / "starry_night_google_1280.jpg")
    return root


def names(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir()}


def failing_save(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> None:
    """Make ``owner.name`` write part of its file, then fail (a full disk, a kill)."""

    def save(*arguments: object, **keywords: object) -> None:
        path = next(argument for argument in arguments if isinstance(argument, (str, Path)))
        Path(path).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(owner, name, save)


# -- the shared helpers ---------------------------------------------------------------------


def test_cache_file_renames_a_finished_file_and_removes_a_failed_one(tmp_path):
    common = bench("common")
    final = tmp_path / "entry.npy"
    with common.cache_file(final) as partial:
        assert partial.parent == tmp_path and partial.name.endswith(".part.npy")
        np.save(partial, np.arange(3))
    assert names(tmp_path) == {"entry.npy"}
    assert np.load(final).tolist() == [0, 1, 2]
    with pytest.raises(RuntimeError), common.cache_file(tmp_path / "other.npy") as partial:
        partial.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert names(tmp_path) == {"entry.npy"}


def test_cache_file_temporaries_differ_between_writers(tmp_path):
    common = bench("common")
    final = tmp_path / "entry.png"
    with common.cache_file(final) as first, common.cache_file(final) as second:
        assert first != second
        first.write_bytes(b"first")
        second.write_bytes(b"second")
    # The inner writer finished first; the outer's complete file replaced it.
    assert final.read_bytes() == b"first"
    assert names(tmp_path) == {"entry.png"}


def test_cache_folder_keeps_the_folder_another_writer_put_in_place(tmp_path):
    common = bench("common")
    final = tmp_path / "links"
    with common.cache_folder(final) as outer:
        (outer / "a").write_text("outer")
        with common.cache_folder(final) as inner:
            (inner / "a").write_text("inner")
    assert (final / "a").read_text() == "inner"
    assert names(tmp_path) == {"links"}
    with pytest.raises(RuntimeError), common.cache_folder(tmp_path / "other") as partial:
        (partial / "a").write_text("half")
        raise RuntimeError("interrupted")
    assert names(tmp_path) == {"links"}


# -- each benchmark's cache writers ---------------------------------------------------------


def test_million_library_built_twice_at_once(tmp_path, monkeypatch):
    """A second build of the same library while the first runs: both end with a whole file."""
    million = bench("bench_million")
    cache = tmp_path / "cache"
    cache.mkdir()
    base = np.arange(5 * 32 * 32 * 3, dtype=np.uint32).astype(np.uint8).reshape(5, 32, 32, 3)
    np.save(cache / "cifar10-60000.npy", base)
    variants = million._variants
    nested: list[Path] = []
    started: list[bool] = []

    def variants_with_a_second_build(*arguments: object) -> np.ndarray:
        if not started:
            started.append(True)
            nested.append(million.build_library(tmp_path, cache, 12, 0))
        return variants(*arguments)

    monkeypatch.setattr(million, "_variants", variants_with_a_second_build)
    path = million.build_library(tmp_path, cache, 12, 0)
    assert nested == [path]
    assert names(cache) == {"cifar10-60000.npy", path.name}
    built = np.load(path)
    assert built.shape == (12, 32, 32, 3)
    assert np.array_equal(built, variants(base, 0, 12, 0, 0))


def test_million_library_build_that_fails_leaves_nothing(tmp_path, monkeypatch):
    million = bench("bench_million")
    cache = tmp_path / "cache"
    cache.mkdir()
    np.save(cache / "cifar10-60000.npy", np.zeros((3, 32, 32, 3), np.uint8))

    def interrupted(*arguments: object) -> np.ndarray:
        raise KeyboardInterrupt

    monkeypatch.setattr(million, "_variants", interrupted)
    with pytest.raises(KeyboardInterrupt):
        million.build_library(tmp_path, cache, 12, 0)
    assert names(cache) == {"cifar10-60000.npy"}


def test_million_cifar_cache_that_fails_leaves_nothing(tmp_path, monkeypatch):
    million = bench("bench_million")
    data = fake_data(tmp_path / "data")
    cache = tmp_path / "cache"
    cache.mkdir()
    failing_save(monkeypatch, million.np, "save")
    with pytest.raises(OSError):
        million.load_cifar(data, cache)
    assert names(cache) == set()


@pytest.mark.parametrize("writer", ["bench_million.build_target", "bench_gigapixel.make_target",
                                    "bench_warm.resized_target", "bench_index._make_photo"])
def test_picture_cache_that_fails_leaves_nothing(writer, tmp_path, monkeypatch):
    module_name, function_name = writer.split(".")
    module = bench(module_name)
    data = fake_data(tmp_path / "data")
    starry = data / "targets" / "starry_night_google_1280.jpg"
    cache = tmp_path / "cache"
    cache.mkdir()
    calls = {
        "build_target": lambda: module.build_target(data, cache),
        "make_target": lambda: module.make_target(data, cache, 40, 30),
        "resized_target": lambda: module.resized_target(starry, 12, 4, cache),
        "_make_photo": lambda: module._make_photo((str(starry), str(cache / "photo.jpg"), 0)),
    }
    monkeypatch.setattr(bench("bench_index"), "PHOTO_SIZE", (40, 30))  # not 12 MP here
    failing_save(monkeypatch, Image.Image, "save")
    with pytest.raises(OSError):
        calls[function_name]()
    assert names(cache) == set()


@pytest.mark.parametrize("writer", ["bench_gigapixel.make_target", "bench_warm.resized_target",
                                    "bench_index._make_photo"])
def test_picture_cache_is_written_whole(writer, tmp_path, monkeypatch):
    module_name, function_name = writer.split(".")
    module = bench(module_name)
    starry = write_picture(tmp_path / "data" / "targets" / "starry_night_google_1280.jpg")
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setattr(bench("bench_index"), "PHOTO_SIZE", (40, 30))
    if function_name == "make_target":
        path = module.make_target(tmp_path / "data", cache, 40, 30)
        assert Image.open(path).size == (40, 30)
    elif function_name == "resized_target":
        path = module.resized_target(starry, 12, 4, cache)
        assert Image.open(path).size[0] % 4 == 0
    else:
        path = cache / "photo.jpg"
        assert module._make_photo((str(starry), str(path), 0)) == path.stat().st_size
        assert Image.open(path).size == (40, 30)
    assert names(cache) == {path.name}


def test_dask_subset_folder_made_twice_at_once(tmp_path, monkeypatch):
    """A second run links the same subset while the first does: the first's folder stays."""
    dask_bench = bench("bench_dask")
    from mosaicist.sources import folder as folder_module

    source = tmp_path / "train"
    for number in range(3):
        write_picture(source / f"{number}.jpg", (32, 32))
    cache = tmp_path / "cache"
    cache.mkdir()
    scan = folder_module.FolderSource.scan
    nested: list[Path] = []
    started: list[bool] = []

    def scan_with_a_second_run(self):  # type: ignore[no-untyped-def]
        if not started:
            started.append(True)
            nested.append(dask_bench.subset_folder(source, cache, 2))
        return scan(self)

    monkeypatch.setattr(folder_module.FolderSource, "scan", scan_with_a_second_run)
    folder = dask_bench.subset_folder(source, cache, 2)
    assert nested == [folder]
    assert names(cache) == {folder.name}
    assert sorted(names(folder)) == ["0.jpg", "1.jpg"]


# -- bad option values: one line, before any work ----------------------------------------------


def run_main(module: ModuleType, monkeypatch: pytest.MonkeyPatch, *arguments: str) -> SystemExit:
    """Run ``module.main()`` with ``arguments``; return how it exited (it must exit)."""
    monkeypatch.setattr(sys, "argv", [f"{module.__name__}.py", *arguments])
    with pytest.raises(SystemExit) as stopped:
        module.main()
    return stopped.value


@pytest.mark.parametrize(("module_name", "arguments", "words"), [
    ("bench_million", ["--seed", "-1", "--build-only"], "argument --seed: -1 must be at least 0"),
    ("bench_assign", ["--seed", "-1"], "argument --seed: -1 must be at least 0"),
    ("bench_adaptive", ["--preset", "nope"], "argument --preset: invalid choice: 'nope'"),
    ("bench_quality", ["--cell", "0"], "argument --cell: 0 must be greater than 0"),
    ("bench_live", ["--tint", "5", "--skip-load"], "argument --tint: 5 must be at most 1"),
    ("bench_live", ["--grid", "bogus"], "the grid must be COLSxROWS, such as 40x30"),
    ("bench_live", ["--crops", "subject,nope"], "--crops: unknown --crop 'nope'"),
    ("bench_dask", ["index", "--photos", "500"], "--photos: at most 200"),
])
def test_bad_option_value_is_one_line(module_name, arguments, words, tmp_path, monkeypatch,
                                      capsys):
    module = bench(module_name)
    for heavy in ("run_child", "build_library", "run", "cifar_files", "placement"):
        if hasattr(module, heavy):
            monkeypatch.setattr(module, heavy, lambda *a, **k: pytest.fail("it went on"))
    data = [] if module_name == "bench_assign" else ["--data", str(tmp_path)]
    stopped = run_main(module, monkeypatch, *data, *arguments)
    assert stopped.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert words in error and "Traceback" not in error


@pytest.mark.parametrize(("module_name", "arguments", "words"), [
    ("bench_quality", ["--targets", "nope.jpg"], "--targets: nope.jpg not in"),
    ("bench_quality", ["--libraries", "galaxy", "--targets", "starry_night_google_1280.jpg"],
     "--libraries: galaxy: "),
    ("bench_live", ["--target", "nope.png", "--skip-load"], "--target: nope.png not in"),
])
def test_missing_input_is_one_line(module_name, arguments, words, tmp_path, monkeypatch):
    module = bench(module_name)
    fake_data(tmp_path)
    for heavy in ("run", "placement", "cifar_files"):
        if hasattr(module, heavy):
            monkeypatch.setattr(module, heavy, lambda *a, **k: pytest.fail("it went on"))
    stopped = run_main(module, monkeypatch, "--data", str(tmp_path), *arguments)
    assert isinstance(stopped.code, str) and "\n" not in stopped.code
    assert stopped.code.startswith("benchmark: ") and words in stopped.code


# -- run folders: each run its own -----------------------------------------------------------


def test_gigapixel_runs_have_folders_of_their_own(tmp_path, monkeypatch):
    """A run's default output folder is its own: another run's outputs are not emptied."""
    gigapixel = bench("bench_gigapixel")
    cache = tmp_path / "cache"
    other = cache / "gigapixel" / "mural.dzi"  # a run in progress, under the old fixed name
    other.parent.mkdir(parents=True)
    other.write_text("another run's")
    outs: list[Path] = []

    def record(args, data, cache, out):  # type: ignore[no-untyped-def]
        (out / "mural.dzi").write_text("this run's")
        outs.append(out)

    monkeypatch.setattr(gigapixel, "_run", record)
    for _ in range(2):
        monkeypatch.setattr(sys, "argv", ["bench_gigapixel.py", "--data", str(tmp_path),
                                          "--cache-dir", str(cache)])
        gigapixel.main()
    assert other.read_text() == "another run's"
    assert len(set(outs)) == 2 and not any(out.exists() for out in outs)


def test_versions_runs_have_folders_of_their_own(tmp_path, monkeypatch):
    versions = bench("bench_versions")
    cache = tmp_path / "cache"
    other = cache / "versions" / "after" / "plain.png"  # a run in progress, old fixed name
    other.parent.mkdir(parents=True)
    other.write_text("another run's")
    worktrees: list[str] = []

    def git(command, **keywords):  # type: ignore[no-untyped-def]
        if "add" in command:
            worktrees.append(command[-2])
        return versions.subprocess.CompletedProcess(command, 1, "", "fatal: stopped here")

    monkeypatch.setattr(versions.subprocess, "run", git)
    # The inputs it checks before any checkout.
    for name in (versions.STARRY, versions.BEAR, "cifar10/train/cat/0.jpg",
                 "galaxy-zoo/train/0.jpg"):
        write_picture(tmp_path / name)
    stopped = run_main(versions, monkeypatch, "--before", "HEAD", "--data", str(tmp_path),
                       "--cache-dir", str(cache))
    assert stopped.code == "benchmark: --before HEAD: fatal: stopped here"
    assert other.read_text() == "another run's"
    assert len(worktrees) == 1 and Path(worktrees[0]).parent.parent == cache / "runs"
    assert not Path(worktrees[0]).parent.exists()
