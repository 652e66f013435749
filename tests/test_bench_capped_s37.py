"""bench_capped's ways to reproduce the spacing rounds' resets: --draw and --target-px.

Only the arguments and their refusals, and the two small helpers they run: no
``mosaicist make`` is started (the steps that would start one fail the test),
and nothing reads the shared data folder: each test makes a tiny one.
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


def bench_capped() -> ModuleType:
    """Import ``benchmarks/bench_capped.py``, leaving ``sys.path`` and SIGTERM's handler alone."""
    handler = signal.getsignal(signal.SIGTERM)
    path = list(sys.path)
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module("bench_capped")
    finally:
        sys.path[:] = path
        signal.signal(signal.SIGTERM, handler)


def write_picture(path: Path, size: tuple[int, int]) -> Path:
    """A small colour ramp of ``size`` (width, height) at ``path``."""
    width, height = size
    ramp = np.linspace(0, 255, width * height, dtype=np.float32).reshape(height, width)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.stack([ramp, ramp[::-1], 255 - ramp], axis=-1).astype(np.uint8)).save(path)
    return path


def small_data(root: Path, target_size: tuple[int, int] = (40, 30)) -> Path:
    """A data folder with ``targets/t.png`` and a tile folder of five photos."""
    write_picture(root / "targets" / "t.png", target_size)
    for number in range(5):
        write_picture(root / "tiles" / f"p{number}.png", (8, 8))
    return root


def exit_message(module: ModuleType, monkeypatch: pytest.MonkeyPatch, *arguments: str) -> str:
    """Run ``main()`` with ``arguments`` (no child may start); return its exit message."""
    monkeypatch.setattr(module, "run_child", lambda *a, **k: pytest.fail("a make started"))
    monkeypatch.setattr(sys, "argv", ["bench_capped.py", *arguments])
    with pytest.raises(SystemExit) as stopped:
        module.main()
    return str(stopped.value.code)


def test_draw_without_photos_is_refused(monkeypatch, capsys, tmp_path):
    module = bench_capped()
    data = small_data(tmp_path / "data")
    code = exit_message(module, monkeypatch, "--data", str(data), "--tiles", "tiles",
                        "--target", "targets/t.png", "--draw", "first")
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == "2"
    assert error.endswith("--draw: needs --photos N (the number of photos to draw)")


def test_unknown_draw_rule_is_refused(monkeypatch, capsys, tmp_path):
    module = bench_capped()
    code = exit_message(module, monkeypatch, "--photos", "3", "--draw", "last")
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == "2"
    assert "--draw: invalid choice: 'last'" in error and "'first'" in error


@pytest.mark.parametrize("size", ["0", "-5", "ten"])
def test_target_px_must_be_a_positive_integer(monkeypatch, capsys, size):
    module = bench_capped()
    code = exit_message(module, monkeypatch, "--target-px", size)
    assert code == "2"
    assert "--target-px" in capsys.readouterr().err


@pytest.mark.parametrize("size", ["40", "41", "1000"])
def test_target_px_not_below_the_target_is_refused(monkeypatch, tmp_path, size):
    module = bench_capped()
    data = small_data(tmp_path / "data")
    cache = tmp_path / "cache"
    message = exit_message(module, monkeypatch, "--data", str(data), "--tiles", "tiles",
                           "--target", "targets/t.png", "--target-px", size,
                           "--cache-dir", str(cache))
    assert message == (f"benchmark: --target-px {int(size):,}: the target "
                       f"{data / 'targets' / 't.png'} is only 40 x 30 px; give a size below 40")
    assert not cache.exists()  # refused before any run folder is made


def test_target_px_on_an_unreadable_target_is_one_line(monkeypatch, tmp_path):
    module = bench_capped()
    data = small_data(tmp_path / "data")
    (data / "targets" / "bad.png").write_bytes(b"not a picture")
    message = exit_message(module, monkeypatch, "--data", str(data), "--tiles", "tiles",
                           "--target", "targets/bad.png", "--target-px", "16",
                           "--cache-dir", str(tmp_path / "cache"))
    assert message.startswith(f"benchmark: --target: cannot read {data / 'targets' / 'bad.png'}")
    assert "\n" not in message


def test_draw_first_takes_the_first_in_name_order(tmp_path):
    module = bench_capped()
    folder = tmp_path / "class"
    for name in ("b.png", "a.png", "d.png", "c.png"):
        write_picture(folder / name, (4, 4))
    first = module.drawn_photos(folder, 2, tmp_path / "first", "first")
    assert [link.resolve().name for link in sorted(first.iterdir())] == ["a.png", "b.png"]
    drawn = module.drawn_photos(folder, 9, tmp_path / "random")
    assert sorted(link.resolve().name for link in drawn.iterdir()) == [
        "a.png", "b.png", "c.png", "d.png"]


def test_shrunk_target_keeps_the_proportions(tmp_path):
    module = bench_capped()
    target = write_picture(tmp_path / "t.png", (40, 30))
    shrunk = module.shrunk_target(target, 20, tmp_path / "small.png")
    with Image.open(shrunk) as picture:
        assert (picture.size, picture.mode) == ((20, 15), "RGB")
