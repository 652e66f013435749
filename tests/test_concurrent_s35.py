"""Two mosaicist processes on one cache at once (session 35).

Each case runs real ``mosaicist`` processes on a tiny library of PNGs made
here, with timeouts, and checks that the index ends as one run alone makes
it (byte for byte), that a lock whose holder died blocks no one, and that a
library read before another process re-indexed the folder does not mix the
new index's rows with its own tiles.
"""

from __future__ import annotations

import os
import select
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mosaicist.dedupe import tile_signatures
from mosaicist.library import TileLibrary

#: Seconds a mosaicist process of these tests may take before it counts as hung.
PROCESS_SECONDS = 60
#: The published rows of an index, as compared between two indexes of one folder.
_ROWS = ("SELECT source_id, position, slot, size, mtime_ns, content_hash, crop_left, crop_top, "
         "crop_width, crop_height, phash, mean_rgb FROM tiles ORDER BY position")


def _noise_folder(root: Path, count: int, seed: int = 0, side: int = 12) -> Path:
    """``count`` PNGs of random pixels (no two alike) named t000.png, t001.png, ..."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"t{number:03d}.png")
    return root


def _index(folder: Path, cache: Path, *extra: str) -> subprocess.Popen:
    """``mosaicist index`` of ``folder`` into ``cache`` at 8 px centre crops, started."""
    return subprocess.Popen(
        [sys.executable, "-m", "mosaicist", "index", str(folder), "--cache-dir", str(cache),
         "--tile-px", "8", "--crop", "centre", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finished(process: subprocess.Popen) -> str:
    """Wait for ``process`` (it must end well, in time); its stderr."""
    try:
        _, stderr = process.communicate(timeout=PROCESS_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"{process.args} hung")
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    return stderr


def _alone(folder: Path, cache: Path) -> None:
    """Index ``folder`` into ``cache`` as :func:`_index` does, in this process, alone."""
    TileLibrary.open(str(folder), 8, cache_dir=cache, crop="centre")


def _index_folder(cache: Path) -> Path:
    """The one index folder in ``cache``."""
    (folder,) = (cache / "indexes").glob("*/*")
    return folder


def _published(cache: Path) -> tuple[list[tuple], bytes]:
    """The published rows of the one index in ``cache``, and its packed tiles."""
    folder = _index_folder(cache)
    connection = sqlite3.connect(folder / "manifest.sqlite")
    try:
        rows = connection.execute(_ROWS).fetchall()
        (generation,) = connection.execute(
            "SELECT value FROM meta WHERE name = 'generation'").fetchone()
    finally:
        connection.close()
    return rows, (folder / f"tiles-{generation}.u8").read_bytes()


def test_two_index_runs_started_together_make_the_index_of_one_run(tmp_path):
    folder = _noise_folder(tmp_path / "tiles", 40)
    _alone(folder, tmp_path / "alone")
    first, second = (_index(folder, tmp_path / "shared") for _ in range(2))
    outputs = [_finished(first), _finished(second)]
    # One decoded the photos; the other waited for it and found them done.
    assert sorted("40 decoded" in output for output in outputs) == [False, True], outputs
    assert _published(tmp_path / "shared") == _published(tmp_path / "alone")


def test_an_index_killed_while_another_waits_for_its_lock_blocks_nothing(tmp_path):
    folder = _noise_folder(tmp_path / "tiles", 40)
    _alone(folder, tmp_path / "alone")
    cache = tmp_path / "shared"
    index_folder = cache / _index_folder(tmp_path / "alone").relative_to(tmp_path / "alone")
    index_folder.mkdir(parents=True)
    # A live process holds the index's lock, as an index run does while it decodes.
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        "descriptor = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
        "fcntl.lockf(descriptor, fcntl.LOCK_EX)\n"
        "os.write(descriptor, f'{os.getpid()}\\n'.encode())\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n"), str(index_folder / "write.lock")], stdout=subprocess.PIPE,
        text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        waiting = _index(folder, cache)
        # It says whom it waits for, and waits.
        said = _line_within(waiting.stderr, PROCESS_SECONDS)
        assert said.startswith(f"mosaicist: waiting for process {holder.pid} that is "
                                "updating this index"), said
        assert waiting.poll() is None
    finally:
        holder.send_signal(signal.SIGKILL)  # killed holding the lock: the kernel drops it
        holder.wait()
    _finished(waiting)
    assert _published(cache) == _published(tmp_path / "alone")


def _line_within(stream, seconds: float) -> str:
    """The next line of ``stream``, or a failure when none comes in ``seconds``."""
    ready, _, _ = select.select([stream], [], [], seconds)
    assert ready, "nothing said"
    return stream.readline()


def test_signatures_of_a_library_read_before_another_process_indexed_an_edit(tmp_path):
    # The library's tile was the photo before the edit, but its near-duplicate signature
    # was read from the new index, the edited photo's: duplicates were grouped by
    # pictures the library does not hold.
    folder = _noise_folder(tmp_path / "tiles", 6)
    cache = tmp_path / "cache"
    library = TileLibrary.open(str(folder), 8, cache_dir=cache)
    Image.new("RGB", (12, 12), (200, 200, 200)).save(folder / "t003.png")
    _finished(_index(folder, cache))
    hashes, colours = library.signatures()
    # Signed from its own tiles (as a tile the manifest has no signature for is).
    expected_hashes, expected_colours = tile_signatures(np.asarray(library.tiles))
    np.testing.assert_array_equal(colours, expected_colours)
    np.testing.assert_array_equal(hashes, expected_hashes)
    assert tuple(colours[3]) != (200, 200, 200)
    # A library read afterwards serves the stored ones, the edited photo's among them.
    again = TileLibrary.open(str(folder), 8, cache_dir=cache, update=False)
    assert tuple(again.signatures()[1][3]) == (200, 200, 200)


@pytest.mark.parametrize("change", ["last photo removed", "photo edited", "index deleted"])
def test_a_library_knows_when_another_process_published_another(tmp_path, change):
    # A photo removed from the end of the folder keeps the index's generation (its packed
    # file is still in order): a long-lived reader (the studio's previews) that checked
    # the generation went on showing the removed photo.
    folder = _noise_folder(tmp_path / "tiles", 6)
    cache = tmp_path / "cache"
    library = TileLibrary.open(str(folder), 8, cache_dir=cache)
    assert library.is_current()
    TileLibrary.open(str(folder), 8, cache_dir=cache)  # nothing changed: still current
    assert library.is_current()
    if change == "last photo removed":
        os.unlink(folder / "t005.png")
        _finished(_index(folder, cache))
        assert TileLibrary.open(str(folder), 8, cache_dir=cache).generation == library.generation
    elif change == "photo edited":
        Image.new("RGB", (12, 12), "red").save(folder / "t002.png")
        _finished(_index(folder, cache))
    else:
        for item in library.directory.iterdir():
            item.unlink()
        library.directory.rmdir()
    assert not library.is_current()
    assert not library.directory.exists() or (
        library.directory / "manifest.sqlite").is_file()  # asking made nothing
    # A library that leaves tiles out is the same library.
    assert not library.limit(3).is_current()


def test_a_deadlock_the_kernel_reports_between_threaded_processes_is_waited_out(
        tmp_path, monkeypatch):
    # The kernel's deadlock check is per process: two threaded processes each waiting for
    # the other's index lock can be told EDEADLK, which failed the index ("cannot lock the
    # index: Resource deadlock avoided") where the lock would be free a moment later.
    import errno
    import fcntl
    import os

    from mosaicist.library import _update

    calls = []
    real = fcntl.lockf

    def lockf(descriptor, operation, *args):
        calls.append(operation)
        if len(calls) == 1:
            raise OSError(errno.EAGAIN, "held")  # another process holds it
        if len(calls) == 2:
            raise OSError(errno.EDEADLK, "Resource deadlock avoided")
        if len(calls) == 3:
            raise OSError(errno.EAGAIN, "held")  # still held at the first poll
        return real(descriptor, operation, *args)

    monkeypatch.setattr(_update.fcntl, "lockf", lockf)
    monkeypatch.setattr(_update, "LOCK_POLL_SECONDS", 0.001)
    path = tmp_path / "write.lock"
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        _update._lock_file(descriptor, path, quiet=True)
    finally:
        os.close(descriptor)
    assert calls == [fcntl.LOCK_EX | fcntl.LOCK_NB, fcntl.LOCK_EX,
                     fcntl.LOCK_EX | fcntl.LOCK_NB, fcntl.LOCK_EX | fcntl.LOCK_NB]
