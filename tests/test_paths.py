"""Atomic outputs: temporaries named so that a killed run's leftovers are removed later."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import dead_pid

from mosaicist.errors import MosaicistError, OptionError
from mosaicist.paths import (
    atomic_folder,
    atomic_path,
    cache_dir,
    check_distinct,
    process_alive,
    remove_stale_temporaries,
)


def test_temporaries_carry_the_writers_pid(tmp_path):
    final = tmp_path / "out.png"
    with atomic_path(final) as temporary:
        assert temporary.name.startswith(f".out.png.{os.getpid()}-")
        assert temporary.name.endswith(".part.png")
        temporary.write_bytes(b"x")
    assert final.read_bytes() == b"x" and sorted(tmp_path.iterdir()) == [final]


def test_a_killed_writers_leftovers_go_at_the_next_write(tmp_path):
    dead, live = dead_pid(), os.getpid()
    final = tmp_path / "out.png"
    stale_file = tmp_path / f".out.png.{dead}-abcd1234.part.png"
    stale_folder = tmp_path / f".out.png.{dead}-abcd_123.part"
    stale_old = tmp_path / f".out.png.{dead}-zzzzzzzz.old"
    live_file = tmp_path / f".out.png.{live}-abcd1234.part.png"
    other_output = tmp_path / f".out.png.5.{dead}-abcd1234.part.png"  # of "out.png.5"
    old_style = tmp_path / ".out.png.abcd1234.part.png"
    stale_file.write_bytes(b"half")
    stale_folder.mkdir()
    (stale_folder / "inner.png").write_bytes(b"half")
    stale_old.mkdir()
    for kept in (live_file, other_output, old_style):
        kept.write_bytes(b"keep")
    with atomic_path(final) as temporary:
        temporary.write_bytes(b"done")
    left = sorted(path.name for path in tmp_path.iterdir())
    assert left == sorted([final.name, live_file.name, other_output.name, old_style.name])


def test_a_folder_write_removes_a_killed_writers_folder(tmp_path):
    dead = dead_pid()
    final = tmp_path / "pyramid"
    stale = tmp_path / f".pyramid.{dead}-q1w2e3r4.part"
    (stale / "deep").mkdir(parents=True)
    with atomic_folder(final) as folder:
        (folder / "a").write_text("new")
    assert not stale.exists() and (final / "a").read_text() == "new"
    assert remove_stale_temporaries(final) == []


@pytest.mark.parametrize("pid", [0, -1, 2**40])
def test_impossible_pids_are_not_alive(pid):
    assert not process_alive(pid)


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux's /proc")
def test_a_killed_writer_not_yet_reaped_has_ended(tmp_path):
    """A pool worker killed with its batch stays a zombie until someone reaps it: its
    leftovers go all the same (a resumed batch had kept one)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        # Exited, not waited for: a zombie, which kill(pid, 0) still reaches.
        for _ in range(200):
            with open(f"/proc/{child.pid}/stat", "rb") as stat:
                if stat.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    break
            time.sleep(0.02)
        else:
            pytest.fail("the child never exited")
        os.kill(child.pid, 0)
        assert not process_alive(child.pid)
        final = tmp_path / "out.png"
        stale = tmp_path / f".out.png.{child.pid}-abcd1234.part.png"
        stale.write_bytes(b"half")
        assert remove_stale_temporaries(final) == [stale]
    finally:
        child.wait()
    assert process_alive(os.getpid())


def test_a_cache_folder_that_cannot_be_one_is_named(tmp_path, monkeypatch):
    # --cache-dir FILE said "target.png: File exists"; --cache-dir "" indexed into the
    # current folder.
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(MosaicistError, match="cache folder is a file"):
        cache_dir(afile)
    monkeypatch.setenv("MOSAICIST_CACHE_DIR", str(afile))
    with pytest.raises(MosaicistError, match="MOSAICIST_CACHE_DIR"):
        cache_dir()
    with pytest.raises(OptionError, match="cache_dir is empty"):
        cache_dir("")
    assert cache_dir(tmp_path / "made") == tmp_path / "made" and (tmp_path / "made").is_dir()


@pytest.mark.parametrize("given", [5, 1.5, ["x"]])
def test_a_cache_folder_of_another_type_is_named(tmp_path, given):
    # TileLibrary.open(cache_dir=5) failed with os.fspath's TypeError, naming nothing.
    from mosaicist import TileLibrary

    with pytest.raises(OptionError, match="cache_dir must be a path"):
        cache_dir(given)
    (tmp_path / "tiles").mkdir()
    with pytest.raises(OptionError, match="cache_dir must be a path"):
        TileLibrary.open(tmp_path / "tiles", 16, cache_dir=given)


def test_outputs_through_links_and_devices(tmp_path):
    real = tmp_path / "real.txt"
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    with atomic_path(link) as temporary:
        temporary.write_text("through")
    assert link.is_symlink() and real.read_text() == "through"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(MosaicistError, match="not a regular file"):
        with atomic_path(fifo) as temporary:
            temporary.write_text("never")
    assert fifo.is_fifo()
    with pytest.raises(MosaicistError, match="the report is also the output"):
        check_distinct([(tmp_path / "a.png", "output"), (None, "placements"),
                        (tmp_path / "." / "a.png", "report")])


@pytest.mark.parametrize("path", ["a\0b.png", b"a\0b.png"])
def test_check_distinct_names_a_path_holding_a_nul(tmp_path, path):
    # os.path.realpath raised a bare ValueError ("embedded null byte").
    with pytest.raises(MosaicistError, match=r"the placements path holds a NUL character"):
        check_distinct([(tmp_path / "a.png", "output"), (path, "placements")])


def test_an_output_under_a_file_says_the_folder_is_a_file(tmp_path):
    from mosaicist.paths import check_writable

    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"not a folder")
    with pytest.raises(MosaicistError, match=r"video folder .*photo\.jpg is a file, not a folder"):
        check_writable(photo / "v.mp4", "video")
    with pytest.raises(MosaicistError, match=r"video folder .*missing does not exist"):
        check_writable(tmp_path / "missing" / "v.mp4", "video")


def test_a_folder_replace_stopped_between_its_renames_puts_the_old_one_back(
        tmp_path, monkeypatch):
    # Ctrl+C after the old folder was renamed aside, before the new one was renamed
    # in: the new one was deleted and the old one left hidden, nothing under the name.
    final = tmp_path / "pyramid"
    final.mkdir()
    (final / "a").write_text("old")
    real = os.replace
    calls = []

    def stopped_second(source, destination):
        calls.append(source)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(source, destination)

    monkeypatch.setattr(os, "replace", stopped_second)
    with pytest.raises(KeyboardInterrupt):
        with atomic_folder(final) as folder:
            (folder / "a").write_text("new")
    monkeypatch.undo()
    assert Path(calls[1]).name.endswith(".part")  # stopped before the new folder went in
    assert (final / "a").read_text() == "old"
    assert sorted(tmp_path.iterdir()) == [final]

    def refused_first(source, destination):
        raise PermissionError(13, "Permission denied", str(source))

    monkeypatch.setattr(os, "replace", refused_first)
    with pytest.raises(PermissionError):
        with atomic_folder(final) as folder:
            (folder / "a").write_text("new")
    monkeypatch.undo()
    # The old folder kept, and no empty folder made for it to go aside into.
    assert (final / "a").read_text() == "old"
    assert sorted(tmp_path.iterdir()) == [final]


@pytest.mark.skipif(not hasattr(os, "statvfs"), reason="POSIX statvfs")
def test_an_output_on_a_read_only_file_system_says_so(tmp_path, monkeypatch):
    # It said "permission denied", which no chmod fixes.
    from mosaicist.paths import check_writable

    class ReadOnly:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(os, "access", lambda *arguments, **keywords: False)
    monkeypatch.setattr(os, "statvfs", lambda path: ReadOnly())
    with pytest.raises(MosaicistError, match=r"o\.png: output is not writable \(read-only file "
                                             r"system\)$"):
        check_writable(tmp_path / "o.png")
    ReadOnly.f_flag = 0
    with pytest.raises(MosaicistError, match=r"not writable \(permission denied\)$"):
        check_writable(tmp_path / "o.png")


def test_an_output_name_near_the_limit_gets_a_temporary(tmp_path):
    # A legal name of 240 bytes failed with "File name too long": its temporary's
    # name is about 30 bytes longer.
    final = tmp_path / ("é" * 118 + ".png")  # 240 bytes in UTF-8
    with atomic_path(final) as temporary:
        assert len(os.fsencode(temporary.name)) <= 255
        temporary.write_bytes(b"long")
    assert final.read_bytes() == b"long"
    # A killed writer's leftover of that name goes at the next write, and only its own.
    with atomic_path(final) as temporary:
        stale = temporary.with_name(temporary.name.replace(f".{os.getpid()}-",
                                                           f".{dead_pid()}-"))
        stale.write_bytes(b"half")
        temporary.write_bytes(b"again")
    other = tmp_path / ("é" * 118 + ".jpg")
    with atomic_path(other) as temporary:
        temporary.write_bytes(b"other")
    assert stale.exists()
    with atomic_path(final) as temporary:
        temporary.write_bytes(b"third")
    assert sorted(tmp_path.iterdir()) == sorted([final, other])
    folder = tmp_path / ("f" * 250)
    with atomic_folder(folder) as staging:
        (staging / "a").write_text("in")
    assert (folder / "a").read_text() == "in"


# -- build locks: a second builder of a cache entry waits for the first ---------------------

def test_a_second_build_lock_waits_for_the_first_then_the_lock_file_goes(tmp_path):
    import threading

    from mosaicist.paths import build_lock

    entry = tmp_path / "entry.npz"
    events = []

    def second():
        with build_lock(entry, poll=0.01) as locked:
            events.append(("second", locked))

    with build_lock(entry, poll=0.01) as locked:
        events.append(("first", locked))
        waiter = threading.Thread(target=second)
        waiter.start()
        # Bounded: without the lock the second thread is in within this wait.
        for _ in range(50):
            if len(events) > 1:
                break
            time.sleep(0.01)
        events.append(("first leaves", True))
    waiter.join(30)
    assert not waiter.is_alive()
    assert events == [("first", True), ("first leaves", True), ("second", True)]
    assert list(tmp_path.iterdir()) == []


def test_a_killed_lock_holder_lets_the_waiter_in(tmp_path):
    import threading

    from mosaicist.paths import build_lock

    entry = tmp_path / "entry"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom mosaicist.paths import build_lock\n"
         f"with build_lock({str(entry)!r}) as locked:\n"
         "    print(locked, flush=True)\n    time.sleep(600)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "True"
        got = []

        def wait():
            with build_lock(entry, poll=0.01) as locked:
                got.append(locked)

        waiter = threading.Thread(target=wait)
        waiter.start()
        waiter.join(0.3)
        assert got == []  # the holder lives: no way in
        holder.kill()
        waiter.join(30)
        assert got == [True]
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def test_an_interrupt_stops_a_process_waiting_for_a_build_lock(tmp_path):
    import signal

    from mosaicist.paths import build_lock

    entry = tmp_path / "entry"
    with build_lock(entry) as locked:
        assert locked
        waiter = subprocess.Popen(
            [sys.executable, "-c",
             "from mosaicist.paths import build_lock\n"
             f"with build_lock({str(entry)!r}, note='waiting'):\n    print('in')\n"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert waiter.stderr is not None and waiter.stderr.readline().strip() == "waiting"
            waiter.send_signal(signal.SIGINT)
            out, err = waiter.communicate(timeout=30)
        finally:
            waiter.kill()
            waiter.wait()
    assert waiter.returncode != 0 and "KeyboardInterrupt" in err and "in" not in out


def test_where_no_lock_can_be_had_the_block_runs_unlocked(tmp_path, monkeypatch):
    import errno

    from mosaicist import paths

    def refused(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    with monkeypatch.context() as patched:
        patched.setattr(paths, "open_lock", refused)
        with paths.build_lock(tmp_path / "entry") as locked:
            assert locked is False
    fcntl = pytest.importorskip("fcntl")

    def no_locks(descriptor, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with paths.build_lock(tmp_path / "entry") as locked:
        assert locked is False
    assert list(tmp_path.iterdir()) == []


def test_a_folder_of_no_size_that_takes_no_files_is_refused_before_the_work(tmp_path,
                                                                            monkeypatch):
    # 'make ... --report /proc/r.json' did all the work, then could not write the report:
    # /proc passes the permission checks, reports no size, and takes no new file.
    import errno
    import tempfile

    from mosaicist import paths

    class NoSize:
        f_blocks = f_bavail = f_files = f_favail = f_flag = 0
        f_frsize = f_bsize = 4096

    def refused(*args, **kwargs):
        raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))

    monkeypatch.setattr(paths.os, "statvfs", lambda _: NoSize())
    with monkeypatch.context() as patched:
        patched.setattr(tempfile, "mkstemp", refused)
        with pytest.raises(MosaicistError, match=r"r\.json: files cannot be made in the report "
                           r"file folder .* \(its file system takes no new files\)"):
            paths.check_writable(tmp_path / "r.json", "report file")
    # A folder of no size that takes files (a probe made and removed) passes.
    paths.check_writable(tmp_path / "r.json", "report file")
    assert list(tmp_path.iterdir()) == []


def test_a_process_identity_is_not_a_later_process_given_its_pid():
    # A studio's run names the process that makes it; a PID reused by another process
    # (started at another time) must not keep a dead studio's run "running".
    import os

    from mosaicist.paths import identity_alive, process_identity

    mine = process_identity()
    pid, _, start = mine.partition(":")
    assert pid == str(os.getpid()) and identity_alive(mine)
    if start:  # Linux: the start time tells them apart
        assert not identity_alive(f"{pid}:{int(start) + 1}")
    assert identity_alive(f"{pid}:")  # no start recorded: the PID alone
    for broken in ("", "x:1", "-1:5", "9" * 30 + ":1"):
        assert not identity_alive(broken)


def test_a_failed_folder_write_under_a_umask_of_777_leaves_nothing_behind(tmp_path):
    # mkdtemp made the staging folder with no permissions, which rmtree could not list:
    # each failed Deep Zoom write left a hidden .NAME_files.<pid>-<random>.part behind.
    import shutil

    script = ("import os, sys\n"
              "from mosaicist.paths import atomic_folder\n"
              "os.umask(0o777)\n"
              "try:\n"
              "    with atomic_folder(sys.argv[1]):\n"
              "        raise RuntimeError('the write failed')\n"
              "except RuntimeError:\n"
              "    pass\n")
    folder = tmp_path / "out"
    folder.mkdir()
    command = [sys.executable, "-c", script, str(folder / "x_files")]
    if os.geteuid() == 0:  # root reads any folder: run without the capabilities that let it
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("root, and no setpriv to run without its file capabilities")
        dropped = "-dac_override,-dac_read_search,-fowner"
        command = [setpriv, f"--inh-caps={dropped}", f"--bounding-set={dropped}", "--",
                   *command]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert os.listdir(folder) == []
