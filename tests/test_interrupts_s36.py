"""Session 36: interrupts and crashes at unlucky moments, and the advice of a refused render.

Each race found by signalling commands at random moments is reproduced here
at the step where it happens (a monkeypatched step, never a sleep).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_colour_folder
from test_lifecycle import _group_members

from mosaicist import MosaicOptions
from mosaicist.cli import main
from mosaicist.errors import OptionError
from mosaicist.placements import Placements
from mosaicist.render import IndexPictures, MosaicRenderer


def _quartered_placements(options: MosaicOptions, **more) -> Placements:
    """One cell split into four quarters: a depth-1 adaptive grid."""
    rect = np.array([[0, 0, .5, .5], [.5, 0, .5, .5], [0, .5, .5, .5], [.5, .5, .5, .5]])
    return Placements(1, 1, np.arange(4), np.zeros(4, np.int64),
                      [f"t{index:03d}.png" for index in range(4)], rect=rect, options=options,
                      **more)


def test_a_tile_size_adaptive_cells_cannot_halve_names_the_flag_and_sizes_that_can(tmp_path):
    # It said "cells down to 1/2 of a tile need tile sizes that divide by 2; 31x31 px do
    # not": neither the flag to change nor a size that would do.
    tiles = make_colour_folder(tmp_path / "tiles", 4)
    path = tmp_path / "p.json"
    _quartered_placements(MosaicOptions(cell_px=8, tile_px=8, adaptive=1),
                          source=str(tiles)).write(path)
    result = CliRunner().invoke(main, ["render", str(path), "-o", str(tmp_path / "m.png"),
                                       "--tile-px", "31", "-q"])
    assert result.exit_code == 1
    assert result.output == (f"mosaicist: error: {path}: cells down to 1/2 of a tile need a "
                             "--tile-px that divides by 2, such as 30 or 32; 31x31 px tiles "
                             "do not\n")
    assert not (tmp_path / "m.png").exists()


def test_the_sizes_offered_for_rectangular_tiles_have_heights_that_halve_too():
    # At 3:2, 8 px wide tiles are 5 px tall, 10 px ones 7: neither halves.
    options = MosaicOptions(aspect="3:2", cell_px=6, tile_px=6, adaptive=1)
    tiles = np.zeros((4, 6, 9, 3), np.uint8)
    placements = _quartered_placements(options)
    from mosaicist.render import placements_renderer

    with pytest.raises(OptionError) as error:
        placements_renderer(placements, options.replace(tile_px=9), tiles="unused")
    assert str(error.value) == ("the placements: cells down to 1/2 of a tile need a tile_px "
                                "that divides by 2 with its height, such as 6 or 12; 9x6 px "
                                "tiles do not")
    assert error.value.parameters == ("tile_px",)
    # Drawn directly, the renderer says the same, without a file to name.
    with pytest.raises(OptionError, match=r"need a tile_px that divides by 2 with its height, "
                                          r"such as 6 or 12; 9x6 px"):
        MosaicRenderer(placements, IndexPictures(tiles, placements.tile)).image()


def test_a_size_at_the_end_of_the_range_offers_the_one_side_there_is():
    from mosaicist.adaptive import halving_widths

    assert halving_widths(3, (1, 1), 4, 1024) == [4]
    assert halving_widths(1023, (1, 1), 64, 1024) == [960, 1024]
    assert halving_widths(1024, (1, 1), 2048, 1024) == []


# --- a batch interrupted while its pool starts a process -----------------------------------

# `mosaicist batch ARGS` whose pool's processes, as they start (the imports before their
# initializer, which a spawned process does with this script as its main module), say
# so with a file and wait for a gate. MODE "launch": the interrupt comes instead inside
# the batch's own start of the process, just after it began.
STARTING_WORKERS = '''
import os, signal, sys, time
from pathlib import Path

# Through the environment: a pool's process gets the batch's arguments as its own.
ready, gate = Path(os.environ["TEST_READY"]), Path(os.environ["TEST_GATE"])
if __name__ == "__mp_main__":  # a pool's process, importing what it needs
    ready.touch()
    deadline = time.monotonic() + 60
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
elif __name__ == "__main__":
    if sys.argv[1] == "launch":
        from multiprocessing import util

        started = util.spawnv_passfds

        def interrupted_start(path, arguments, descriptors):
            pid = started(path, arguments, descriptors)
            if any(b"spawn_main" in os.fsencode(part) for part in arguments):  # no tracker
                ready.touch()
                signal.raise_signal(signal.SIGINT)
            return pid

        util.spawnv_passfds = interrupted_start
    sys.argv = ["mosaicist", "batch", *sys.argv[2:]]
    from mosaicist.__main__ import run
    run()
'''


@pytest.fixture(scope="module")
def batch_inputs(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("batch")
    tiles = make_colour_folder(root / "tiles", 8)
    rng = np.random.default_rng(4)
    targets = []
    for index in range(2):
        targets.append(root / f"t{index}.png")
        Image.fromarray(rng.integers(0, 256, (16, 24, 3), np.uint8)).save(targets[-1])
    return root, tiles, targets


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process groups")
@pytest.mark.parametrize("mode", ["importing", "launch"])
def test_ctrl_c_while_the_pool_starts_a_process_prints_one_line(batch_inputs, tmp_path, mode):
    # importing: Ctrl+C reached the process group while a pool's process still imported
    # (it ignores SIGINT only from its initializer): its KeyboardInterrupt traceback came
    # under "interrupted". launch: an interrupt inside the pool's start of a process left
    # it unknown to the pool: "EOFError: Ran out of input" and its traceback.
    root, tiles, targets = batch_inputs
    script = tmp_path / "starting.py"
    script.write_text(STARTING_WORKERS)
    ready, gate = tmp_path / "ready", tmp_path / "gate"
    with open(tmp_path / "stderr.txt", "wb") as stderr_file:
        run = subprocess.Popen(
            [sys.executable, str(script), mode, *map(str, targets),
             "--tiles", str(tiles), "-o", str(tmp_path / "out"), "--workers", "2",
             "--cell", "8", "--tile-px", "8", "--preset", "seed", "--cache-dir",
             str(root / "cache"), "-q"],
            env={**os.environ, "MOSAICIST_THREADS": "2", "TEST_READY": str(ready),
                 "TEST_GATE": str(gate)}, stdout=subprocess.DEVNULL,
            stderr=stderr_file, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ready.exists(), (tmp_path / "stderr.txt").read_text()
        if mode == "importing":
            os.killpg(run.pid, signal.SIGINT)  # as Ctrl+C in a terminal
        run.wait(timeout=60)
        gate.touch()
        # Every process of the batch ends: none is left waiting for work.
        deadline = time.monotonic() + 60
        while _group_members(run.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _group_members(run.pid)
    finally:
        gate.touch()
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    stderr = (tmp_path / "stderr.txt").read_text(errors="replace")
    assert (run.returncode, stderr) == (130, "mosaicist: error: interrupted\n")
    assert not list((tmp_path / "out").glob("*.png"))
