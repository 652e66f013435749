"""What a command pays before its work starts, and what its progress display writes.

The imports are read from the interpreter's own record (``python -X importtime``) of
the real command, so that the checks see what a user's run imports; no timing is
asserted, only which modules were loaded.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_colour_folder

#: Modules that only some work needs, each costing a tenth of a second or more to import.
HEAVY = ("numba", "llvmlite", "scipy", "ortools", "dask", "distributed", "torch", "cv2",
         "fastapi", "uvicorn", "starlette", "av", "pyvips", "tqdm", "sklearn", "cupy")
#: The matchers and the pipeline: no part of help, nor of refusing a command's inputs.
MATCHING = ("mosaicist.pipeline", "mosaicist.match")


def _imported(*arguments: str, cwd: Path | None = None) -> tuple[set[str], str, int]:
    """Modules a ``python -X importtime`` run imported, its other stderr lines, its status."""
    run = subprocess.run([sys.executable, "-X", "importtime", *arguments], capture_output=True,
                         text=True, timeout=60, cwd=cwd)
    modules, others = set(), []
    for line in run.stderr.splitlines():
        found = re.match(r"import time:\s+\d+ \|\s+\d+ \| +(\S+)$", line)
        if found:
            modules.add(found.group(1))
        elif not line.startswith("import time:"):
            others.append(line)
    return modules, "\n".join(others), run.returncode


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(name for name in names
                  if any(module == name or module.startswith(name + ".") for module in modules))


def test_importing_the_package_loads_no_stage():
    modules, _, status = _imported("-c", "import mosaicist")
    assert status == 0
    assert _loaded(modules, (*HEAVY, "numpy", "PIL", "click")) == []
    assert sorted(module for module in modules if module.startswith("mosaicist.")) == []


@pytest.mark.parametrize("arguments", [["--help"], ["--version"], ["make", "--help"]])
def test_help_and_version_load_no_heavy_module(arguments):
    modules, _, status = _imported("-m", "mosaicist", *arguments)
    assert status == 0
    assert _loaded(modules, HEAVY) == []
    # make's help lists the built-in matchers' searches and devices without them.
    assert _loaded(modules, MATCHING) == []


def test_a_missing_target_is_refused_before_the_matchers_load(tmp_path):
    # The pipeline and its matchers were imported before the first check of make's
    # inputs: a mistyped target waited for them.
    tiles = make_colour_folder(tmp_path / "tiles", 3)
    modules, said, status = _imported("-m", "mosaicist", "make", "missing.png", "--tiles",
                                      str(tiles), cwd=tmp_path)
    assert status == 1
    assert said == "mosaicist: error: missing.png: target file not found"
    assert _loaded(modules, (*HEAVY, *MATCHING)) == []
    assert not (tmp_path / "missing-mosaic.png").exists()


def test_progress_on_a_pipe_is_one_summary_line(tmp_path):
    tiles = make_colour_folder(tmp_path / "tiles", 4)
    run = subprocess.run([sys.executable, "-m", "mosaicist", "index", str(tiles), "--tile-px",
                          "8", "--cache-dir", str(tmp_path / "cache")], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert re.fullmatch(r"mosaicist: 4 tiles of 8 px from .* 4 decoded, .*\n", run.stderr)
    assert "\r" not in run.stderr and "\x1b" not in run.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a pseudo-terminal of Linux")
def test_progress_on_a_narrow_dumb_terminal_redraws_one_short_line(tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    tiles = make_colour_folder(tmp_path / "tiles", 4)
    command = [sys.executable, "-m", "mosaicist", "index", str(tiles), "--tile-px", "8",
               "--cache-dir", str(tmp_path / "cache")]
    pid, terminal = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.environ.update(TERM="dumb", NO_COLOR="1")
        os.environ.pop("COLUMNS", None)
        os.execv(sys.executable, command)
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 20, 0, 0))
    written = b""
    try:
        while select.select([terminal], [], [], 60)[0]:
            chunk = os.read(terminal, 65536)
            if not chunk:
                break
            written += chunk
    except OSError:  # the child closed the terminal
        pass
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(terminal)
    assert os.waitstatus_to_exitcode(status) == 0, written
    text = written.decode()
    assert "\x1b" not in text  # no colour nor cursor movement on a dumb terminal
    *bar, summary = text.split("\r\n")[0].split("\r")
    assert "indexing" in "".join(bar)  # drawn, in place
    assert all(len(drawn) < 20 for drawn in bar), bar  # never wrapped to a new line
    assert summary.startswith("mosaicist: 4 tiles of 8 px")
