"""A killed ``mosaicist index``: no process outlives it, and the next run neither waits nor differs.

A killed ``mosaicist render`` (any signal, any output format): the output's name holds the
previous output whole, or the new one, never a part of one; the next run cleans up.

Every wait here is tied to the event it waits for (a committed batch, a line
on stderr, a process gone), with generous bounds; none asserts on time.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_colour_folder

from mosaicist.library import TileLibrary
from mosaicist.library._index import _index_dir
from mosaicist.sources.folder import FolderSource

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and locks")

#: Bound of every wait on an event; reached only when the event never comes.
PATIENCE = 60.0

# `mosaicist index` whose decoding of the files named z* waits for a gate
# file: deterministically mid-run once the first batches have committed.
GATED_INDEX = textwrap.dedent("""
    import os, sys, time
    from mosaicist.library import _update
    from mosaicist.sources import folder

    _update.COMMIT_EVERY = 4
    original = folder._decode_batch
    gate = sys.argv[3]

    def gated_decode(paths, *tile):
        if any(os.path.basename(path).startswith("z") for path in paths):
            while not os.path.exists(gate):
                time.sleep(0.02)
        return original(paths, *tile)

    folder._decode_batch = gated_decode
    from mosaicist.cli import main

    sys.argv = ["mosaicist", "index", sys.argv[1], "--tile-px", "8", "--crop", "centre",
                "--cache-dir", sys.argv[2]]
    main()
""")


def _environment() -> dict[str, str]:
    # Two decoding workers, so that the pool is used, on any machine.
    return {**os.environ, "MOSAICIST_THREADS": "2", "PYTHONUNBUFFERED": "1"}


def _group_members(group: int) -> list[int]:
    """PIDs of live (not zombie) processes in process group ``group``, from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name in parentheses may hold spaces: fields follow the last ')'.
        fields = status[status.rindex(")") + 2:].split()
        state, process_group = fields[0], int(fields[2])
        if process_group == group and state not in ("Z", "X"):
            members.append(int(entry))
    return members


def _wait_for(predicate, what: str):
    deadline = time.monotonic() + PATIENCE
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def _staged_rows(directory: Path) -> int:
    try:
        connection = sqlite3.connect(f"file:{directory / 'manifest.sqlite'}?mode=ro", uri=True)
        try:
            return connection.execute("SELECT COUNT(*) FROM staged").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.Error:
        return 0  # not created yet


def _manifest_rows(directory: Path) -> list[tuple]:
    connection = sqlite3.connect(directory / "manifest.sqlite")
    try:
        return connection.execute(
            "SELECT source_id, position, slot, size, mtime_ns, content_hash FROM tiles "
            "ORDER BY position"
        ).fetchall()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> Path:
    folder = make_colour_folder(tmp_path_factory.mktemp("lifecycle") / "tiles", 24)
    rng = np.random.default_rng(1)
    from PIL import Image

    for index in range(12):
        pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"z{index:03d}.png")
    return folder


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize("kill_signal", [signal.SIGKILL, signal.SIGTERM])
def test_killed_index_leaves_no_process_and_next_run_finishes(tiles, tmp_path, kill_signal):
    cache = tmp_path / "cache"
    gate = tmp_path / "gate"
    directory = _index_dir(cache, FolderSource(tiles).key, 8)
    # A file, not a pipe: a pipe that surviving workers keep open never ends.
    with open(tmp_path / "stderr.txt", "wb") as stderr_file:
        run = subprocess.Popen(
            [sys.executable, "-c", GATED_INDEX, str(tiles), str(cache), str(gate)],
            env=_environment(), stdout=subprocess.DEVNULL, stderr=stderr_file,
            start_new_session=True,  # its own process group: where its workers are too
        )
    group = run.pid
    try:
        _wait_for(lambda: _staged_rows(directory) > 0, "a committed batch")
        assert len(_group_members(group)) > 1, "the decoding workers should be running"
        os.kill(run.pid, kill_signal)
        run.wait(timeout=PATIENCE)
        stderr = (tmp_path / "stderr.txt").read_text(errors="replace")
        if kill_signal == signal.SIGTERM:
            # SIGTERM unwinds: the process exits as a SIGTERM would, without a traceback.
            assert run.returncode == 128 + signal.SIGTERM, stderr
            assert "Traceback" not in stderr, stderr
        _wait_for(lambda: not _group_members(group), "the killed run's workers to end")
    finally:
        gate.touch()  # lets workers that outlived their parent (the bug) finish...
        if _group_members(group):
            os.killpg(group, signal.SIGKILL)  # ...or ends them, so no test leaves any
        if run.poll() is None:
            run.kill()
            run.wait()

    resumed = subprocess.run(
        [sys.executable, "-m", "mosaicist", "index", str(tiles), "--tile-px", "8",
         "--crop", "centre", "--cache-dir", str(cache)],
        env=_environment(), capture_output=True, text=True, timeout=PATIENCE,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "waiting" not in resumed.stderr
    fresh = TileLibrary.open(FolderSource(tiles, workers=1), 8, cache_dir=tmp_path / "fresh")
    library = TileLibrary.open(FolderSource(tiles, workers=1), 8, cache_dir=cache, update=False)
    assert library.source_ids == fresh.source_ids and len(library) == 36
    np.testing.assert_array_equal(library.tiles, fresh.tiles)
    rows = _manifest_rows(directory)
    assert rows == _manifest_rows(fresh.directory)
    assert sorted(path.name for path in directory.glob("tiles-*")) == ["tiles-0.u8"]


# A process that takes the index lock, forks a child that keeps the lock file
# open (as the decoding workers did) and dies without unlocking.
DIE_HOLDING_LOCK = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from mosaicist.library._update import _write_lock

    with _write_lock(Path(sys.argv[1]), True):
        child = os.fork()
        if child == 0:
            null = os.open(os.devnull, os.O_RDWR)
            for stream in (0, 1, 2):  # so that the test's pipes reach their end
                os.dup2(null, stream)
            time.sleep(120)
            os._exit(0)
        print(child, flush=True)
        os._exit(0)
""")

TAKE_LOCK = textwrap.dedent("""
    import sys
    from pathlib import Path
    from mosaicist.library._update import _write_lock

    with _write_lock(Path(sys.argv[1]), False):
        print("locked", flush=True)
        sys.stdin.readline()
""")


def test_lock_of_a_dead_holder_is_not_waited_for(tmp_path):
    holder = subprocess.run([sys.executable, "-c", DIE_HOLDING_LOCK, str(tmp_path)],
                            capture_output=True, text=True, timeout=PATIENCE)
    assert holder.returncode == 0, holder.stderr
    orphan = int(holder.stdout)
    try:
        # Before: the orphan's inherited lock made this wait for as long as it lived.
        taker = subprocess.run([sys.executable, "-c", TAKE_LOCK, str(tmp_path)], input="\n",
                               capture_output=True, text=True, timeout=PATIENCE)
        assert taker.returncode == 0 and taker.stdout == "locked\n", taker.stderr
        assert "waiting" not in taker.stderr
    finally:
        os.kill(orphan, signal.SIGKILL)


def test_waiting_for_a_live_holder_names_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", TAKE_LOCK, str(tmp_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    waiter = None
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        assert (tmp_path / "write.lock").read_text().strip() == str(holder.pid)
        waiter = subprocess.Popen([sys.executable, "-c", TAKE_LOCK, str(tmp_path)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        assert waiter.stderr is not None
        message = waiter.stderr.readline()
        assert f"waiting for process {holder.pid} that is updating this index" in message
        holder.communicate("\n", timeout=PATIENCE)
        assert waiter.stdout is not None and waiter.stdout.readline() == "locked\n"
        waiter.communicate("\n", timeout=PATIENCE)
        assert waiter.returncode == 0
    finally:
        for process in (holder, waiter):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


# --- outputs: a render killed while it writes ---------------------------------------------

# `mosaicist ARGS` whose drawing waits after its first band, a gate file touched:
# the output's temporary (or a pyramid's staging folder) is then on disk.
HELD_WRITE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from mosaicist import render

    ready = Path(sys.argv[1])
    original = render.MosaicRenderer.bands

    def held_bands(self):
        for number, band in enumerate(original(self)):
            yield band
            if number == 0:
                ready.touch()
                time.sleep(120)

    render.MosaicRenderer.bands = held_bands
    sys.argv = ["mosaicist", *sys.argv[2:]]
    from mosaicist.__main__ import run
    run()
""")

# `mosaicist ARGS` writing a Deep Zoom pyramid that waits once its tiles are in place,
# before its descriptor is written.
HELD_DESCRIPTOR = textwrap.dedent("""
    import contextlib, sys, time
    from pathlib import Path
    from mosaicist.render import _deepzoom

    ready = Path(sys.argv[1])
    original = _deepzoom.atomic_path

    @contextlib.contextmanager
    def held(final, *arguments, **keywords):
        ready.touch()
        time.sleep(120)
        with original(final, *arguments, **keywords) as temporary:
            yield temporary

    _deepzoom.atomic_path = held
    sys.argv = ["mosaicist", *sys.argv[2:]]
    from mosaicist.__main__ import run
    run()
""")


@pytest.fixture(scope="module")
def drawn(tmp_path_factory) -> tuple[Path, Path]:
    """Placements (a 5x3 grid) of a small library, and the cache that indexed it."""
    from click.testing import CliRunner
    from PIL import Image

    from mosaicist.cli import main

    root = tmp_path_factory.mktemp("drawn")
    tiles = make_colour_folder(root / "tiles", 12, size=16)
    target = root / "target.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (24, 40, 3), np.uint8)).save(target)
    placements, cache = root / "p.json", root / "cache"
    made = CliRunner().invoke(main, [
        "make", str(target), "--tiles", str(tiles), "--preset", "seed", "--cell", "8",
        "--tile-px", "8", "-o", str(root / "m.png"), "--placements", str(placements),
        "--cache-dir", str(cache), "-q"])
    assert made.exit_code == 0, made.output
    return placements, cache


def _render(drawn: tuple[Path, Path], output: Path, tile_px: int) -> None:
    from click.testing import CliRunner

    from mosaicist.cli import main

    placements, cache = drawn
    result = CliRunner().invoke(main, ["render", str(placements), "-o", str(output),
                                       "--tile-px", str(tile_px), "--cache-dir", str(cache),
                                       "-q"])
    assert result.exit_code == 0, result.output


def _signal_held(script: str, drawn: tuple[Path, Path], output: Path, kill_signal: int,
                 tmp_path: Path) -> tuple[int, int, str]:
    """Run ``render`` held by ``script``, signal it there; return its PID, status and stderr."""
    placements, cache = drawn
    ready = tmp_path / "ready"
    with open(tmp_path / "stderr.txt", "wb") as stderr_file:
        run = subprocess.Popen(
            [sys.executable, "-c", script, str(ready), "render", str(placements), "-o",
             str(output), "--tile-px", "32", "--cache-dir", str(cache), "-q"],
            env=_environment(), stdout=subprocess.DEVNULL, stderr=stderr_file,
            start_new_session=True,
        )
    try:
        _wait_for(lambda: ready.exists() or run.poll() is not None, "the write to begin")
        assert ready.exists(), (tmp_path / "stderr.txt").read_text(errors="replace")
        os.kill(run.pid, kill_signal)
        run.wait(timeout=PATIENCE)
        _wait_for(lambda: not _group_members(run.pid), "the killed run's processes to end")
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    stderr = (tmp_path / "stderr.txt").read_text(errors="replace")
    assert "Traceback" not in stderr, stderr
    expected = {signal.SIGINT: 130, signal.SIGTERM: 128 + signal.SIGTERM,
                signal.SIGKILL: -signal.SIGKILL}[kill_signal]
    assert run.returncode == expected, stderr
    return run.pid, run.returncode, stderr


def _contents(folder: Path) -> dict[str, bytes | None]:
    """Everything below ``folder`` by relative path: a file's bytes, None for a folder."""
    return {path.relative_to(folder).as_posix(): None if path.is_dir() else path.read_bytes()
            for path in sorted(folder.rglob("*"))}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize(("name", "kill_signal"), [
    ("m.png", signal.SIGKILL), ("m.jpg", signal.SIGINT), ("m.tif", signal.SIGTERM),
    ("m.webp", signal.SIGKILL), ("m.dzi", signal.SIGTERM), ("m.dzi", signal.SIGKILL),
], ids=lambda value: signal.Signals(value).name if isinstance(value, int) else value)
def test_a_render_killed_while_writing_keeps_the_previous_output_whole(
        drawn, tmp_path, name, kill_signal):
    output = tmp_path / "out" / name
    output.parent.mkdir()
    _render(drawn, output, 16)  # the previous output, of another size
    before = _contents(output.parent)
    pid, _, _ = _signal_held(HELD_WRITE, drawn, output, kill_signal, tmp_path)
    after = _contents(output.parent)
    if kill_signal == signal.SIGKILL:
        # Nothing could clean up: the killed run's temporaries, hidden and named by its PID.
        left = {key for key in after if key not in before}
        assert left and all(key.startswith(".") and f".{pid}-" in key for key in left), left
        after = {key: value for key, value in after.items() if key not in left}
    assert after == before
    _render(drawn, output, 32)  # the next run writes it, and removes what a killed one left
    assert not [path for path in output.parent.iterdir() if path.name.startswith(".")]
    if name.endswith(".dzi"):
        from mosaicist.render import read_layout
        from mosaicist.viewer import read_viewer_data

        assert read_layout(output).width == 160
        assert read_viewer_data(output.with_suffix(".html"))["width"] == 160
    else:
        from PIL import Image

        with Image.open(output) as picture:
            picture.load()
            assert picture.size == (160, 96)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize("kill_signal", [signal.SIGINT, signal.SIGKILL],
                         ids=lambda value: signal.Signals(value).name)
def test_a_pyramid_rewrite_killed_once_its_tiles_are_in_leaves_no_old_descriptor(
        drawn, tmp_path, kill_signal):
    # The old descriptor (80x48) and viewer page stayed beside the new tiles (160x96):
    # a viewer asked for levels and tiles that were not there.
    from mosaicist.render import files_folder, read_layout
    from mosaicist.viewer import read_viewer_data

    output = tmp_path / "out" / "m.dzi"
    output.parent.mkdir()
    _render(drawn, output, 16)
    _signal_held(HELD_DESCRIPTOR, drawn, output, kill_signal, tmp_path)
    assert sorted(int(level.name) for level in files_folder(output).iterdir()) == list(range(9))
    assert sorted(path.name for path in output.parent.iterdir()
                  if not path.name.startswith(".")) == ["m_files"]
    _render(drawn, output, 32)
    assert read_layout(output).width == 160
    assert read_viewer_data(output.with_suffix(".html"))["width"] == 160
    assert sorted(path.name for path in output.parent.iterdir()) == [
        "m.dzi", "m.html", "m.viewer.json", "m_files"]


# A command whose interrupt lands inside a callback from C, where Python can only hand it
# to sys.unraisablehook (as in llvmlite's callbacks while Numba loads its cache); then it
# waits, as a long run would. argv[1]: "SIGINT" or "SIGTERM".
DROPPED_INTERRUPT = textwrap.dedent("""
    import ctypes, os, signal, sys, time
    import click
    from mosaicist import cli

    sent = getattr(signal, sys.argv[1])

    @cli.main.command("dropped")
    def dropped():
        @ctypes.CFUNCTYPE(None)
        def callback():
            signal.raise_signal(sent)
            for _ in range(1000):  # where the handler runs: inside the callback
                pass

        callback()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.01)
        click.echo("finished")

    sys.argv = ["mosaicist", "dropped"]
    cli.OWNS_PROCESS = True  # as mosaicist.__main__.run says
    cli.main()
""")


@pytest.mark.parametrize(("name", "status", "message"), [
    ("SIGINT", 130, "mosaicist: error: interrupted\n"), ("SIGTERM", 143, "")])
def test_an_interrupt_dropped_inside_a_c_callback_still_stops_the_command(name, status,
                                                                          message):
    # It printed "Exception ignored on calling ctypes callback function ... KeyboardInterrupt"
    # and the command ran to its end, exit status 0.
    done = subprocess.run([sys.executable, "-c", DROPPED_INTERRUPT, name], capture_output=True,
                          text=True, timeout=PATIENCE, env=_environment())
    assert (done.returncode, done.stdout, done.stderr) == (status, "", message), done.stderr


# A command interrupted while a thread that never ends is left behind, as one whose start
# the interrupt cut short (it then waits forever for a lock the main thread held).
STUCK_THREAD = textwrap.dedent("""
    import sys, threading
    from mosaicist import cli

    cli._EXIT_GRACE_SECONDS = 0.5

    @cli.main.command("stuck")
    def stuck():
        threading.Thread(target=threading.Event().wait).start()
        raise KeyboardInterrupt

    sys.argv = ["mosaicist", "stuck"]
    cli.OWNS_PROCESS = True  # as mosaicist.__main__.run says
    cli.main()
""")


def test_an_interrupted_command_ends_though_a_thread_never_does():
    # The interpreter's exit waited for the thread: the interrupted command never ended.
    process = subprocess.Popen([sys.executable, "-c", STUCK_THREAD], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=PATIENCE)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 130
    assert stderr == "mosaicist: error: interrupted\n"


def test_the_next_writer_finds_no_older_version_s_lock_held(tmp_path, monkeypatch):
    # Two indexes started at once: the first let go of its record lock, then of the flock
    # that older versions take; the second, let in between, found the flock held and said
    # it waited for "an older version of mosaicist" (1 in 3 tries). The flock goes first.
    import fcntl

    from mosaicist.library import _update

    released: list[str] = []
    lockf, flock = fcntl.lockf, fcntl.flock

    def recorded_lockf(descriptor, operation, *args):
        if operation == fcntl.LOCK_UN:
            # The moment another writer of this version may take the record lock: the
            # flock must be free by then.
            other = os.open(tmp_path / "write.lock", os.O_RDWR)
            try:
                flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                flock(other, fcntl.LOCK_UN)
                released.append("flock free")
            except OSError:
                released.append("flock held")
            finally:
                os.close(other)
        return lockf(descriptor, operation, *args)

    monkeypatch.setattr(_update.fcntl, "lockf", recorded_lockf)
    with _update._write_lock(tmp_path, True) as refused:
        assert refused is None
    assert released == ["flock free"]
