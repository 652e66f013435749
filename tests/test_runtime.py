"""The process's shared pools and BLAS thread limits."""

import contextlib
import gc
import multiprocessing
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import pytest
from conftest import held_by_another_thread
from PIL import Image

from mosaicist._runtime import (
    OrderedJobs,
    forking,
    stop_process_pool,
    thread_pool,
    worker_count,
)
from mosaicist.errors import MosaicistError

#: The pool whose forked worker tears a result (it inherits this global).
_POOL: ProcessPoolExecutor | None = None


def _run_blas_script(script: str) -> None:
    """Run ``script`` in a fresh interpreter with two BLAS threads: it prints ``ok``, or
    ``none`` where threadpoolctl sees no BLAS library (skipped)."""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=dict(os.environ, OPENBLAS_NUM_THREADS="2"), timeout=120)
    assert done.returncode == 0, done.stderr
    if done.stdout.strip() == "none":
        pytest.skip("no BLAS library that threadpoolctl can see")
    assert done.stdout.strip() == "ok"


def test_one_blas_thread_limits_and_restores():
    # In a fresh interpreter: the limit covers the BLAS libraries loaded at its first
    # use, and this test process may have loaded others since (FAISS's, PyTorch's).
    script = """
from threadpoolctl import threadpool_info
import numpy, scipy.linalg
from mosaicist._runtime import one_blas_thread

def threads():
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

before = threads()
if not before:
    print("none")
    raise SystemExit
with one_blas_thread():
    assert set(threads()) == {1}, threads()
    with one_blas_thread():  # nested: still one, and the outer limit survives
        assert set(threads()) == {1}, threads()
    assert set(threads()) == {1}, threads()
assert threads() == before, (threads(), before)
print("ok")
"""
    _run_blas_script(script)


def test_one_blas_thread_overlapping_in_threads_restores_the_limit():
    # Two threads' blocks that overlap without nesting: each used to set its own limit
    # and restore what it found, and the last out restored one thread for the rest of
    # the process (a studio's makes after a preview warmed up beside one). A block in a
    # thread after one in another thread must limit too (threadpoolctl lets only the
    # thread that set a limit change it until that thread restores it).
    script = """
import threading
from threadpoolctl import threadpool_info
import numpy, scipy.linalg
from mosaicist._runtime import one_blas_thread

def threads():
    return set(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas")

before = threads()
if not before or before == {1}:
    print("none")
    raise SystemExit
with one_blas_thread():
    assert threads() == {1}
assert threads() == before
events = {name: threading.Event() for name in
          ("first_in", "both_seen", "first_out", "third_go", "third_seen")}
seen = {}

def first():
    with one_blas_thread():
        events["first_in"].set()
        events["both_seen"].wait(30)
    events["first_out"].set()

def second():
    events["first_in"].wait(30)
    with one_blas_thread():
        seen["both"] = threads()
        events["both_seen"].set()
        events["first_out"].wait(30)
        events["third_go"].set()
        events["third_seen"].wait(30)

def third():
    events["third_go"].wait(30)
    with one_blas_thread():
        seen["third"] = threads()
    events["third_seen"].set()

workers = [threading.Thread(target=work) for work in (first, second, third)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join(60)
assert seen == {"both": {1}, "third": {1}}, seen
assert threads() == before, (threads(), before)

def alone():
    with one_blas_thread():
        seen["alone"] = threads()

worker = threading.Thread(target=alone)
worker.start()
worker.join(60)
assert seen["alone"] == {1}, seen
assert threads() == before, (threads(), before)
print("ok")
"""
    _run_blas_script(script)


def test_thread_pools_are_kept_per_size_and_process():
    assert thread_pool(2) is thread_pool(2)
    assert thread_pool(2) is not thread_pool(3)
    assert sorted(thread_pool(2).map(lambda value: value * value, range(5))) == [0, 1, 4, 9, 16]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_pool():
    pool = thread_pool(2)
    list(pool.map(abs, range(4)))  # the parent's threads exist
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            mine = thread_pool(2)
            result = sum(mine.map(abs, range(-3, 1)))
            os.write(write, b"ok" if mine is not pool and result == 6 else b"no")
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(child, 0)
    assert os.read(read, 2) == b"ok" and status == 0
    os.close(read)


def test_worker_count_follows_the_environment(monkeypatch):
    monkeypatch.setenv("MOSAICIST_THREADS", "3")
    assert worker_count() == 3 and worker_count(most=2) == 2
    monkeypatch.setenv("MOSAICIST_THREADS", "0")
    assert worker_count() == 1
    monkeypatch.setenv("MOSAICIST_THREADS", " 2 ")
    assert worker_count() == 2
    # 'abc', '1.5' or 'nan' ended make and batch with a traceback of int()'s ValueError.
    for value in ("abc", "1.5", "nan", "+-3", "\u0663", "9" * 40):
        monkeypatch.setenv("MOSAICIST_THREADS", value)
        with pytest.raises(MosaicistError) as caught:
            worker_count()
        assert str(caught.value) == (f"MOSAICIST_THREADS must be a whole number of "
                                     f"threads, got {value!r}")


def test_a_thread_count_that_is_no_number_is_one_line_from_the_command(tmp_path):
    # The whole command: one line, status 1, no traceback (the variable is read as the
    # tile folder is opened, before any work).
    folder = tmp_path / "tiles"
    folder.mkdir()
    for index in range(3):
        Image.new("RGB", (8, 8), (80 * index, 40, 200)).save(folder / f"t{index}.png")
    Image.new("RGB", (16, 16), (10, 200, 30)).save(tmp_path / "t.png")
    done = subprocess.run(
        [sys.executable, "-m", "mosaicist", "make", str(tmp_path / "t.png"), "--tiles",
         str(folder), "--cell", "4", "--tile-px", "4", "-o", str(tmp_path / "m.png")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "MOSAICIST_THREADS": "abc",
             "MOSAICIST_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 1
    assert done.stderr == ("mosaicist: error: MOSAICIST_THREADS must be a whole number of "
                           "threads, got 'abc'\n")
    assert not (tmp_path / "m.png").exists()


def _write_half_a_result() -> None:
    """In a forked worker: write a result's header and a little of it, then hang."""
    assert _POOL is not None
    writer = _POOL._result_queue._writer  # type: ignore[attr-defined]
    os.write(writer.fileno(), struct.pack("!i", 1 << 20) + b"half")
    time.sleep(120)


def _pause() -> None:
    time.sleep(120)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks")
def test_a_pool_whose_worker_died_writing_a_result_stops(monkeypatch):
    # A worker killed while it wrote a result (Ctrl+C during `mosaicist index`) left
    # half a message in the results' pipe: the pool's thread waited for the rest, and
    # the interpreter's exit, which joins it, hung forever (1 run in 8).
    global _POOL
    failures: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: failures.append(args.exc_value))
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
    _POOL = pool
    try:
        torn = pool.submit(_write_half_a_result)
        queued = [pool.submit(_pause) for _ in range(3)]
        thread = pool._executor_manager_thread  # type: ignore[attr-defined]
        time.sleep(1.0)  # the pool's thread now reads the torn message
        # As a map's iterator does when it is closed: what has not started is cancelled.
        cancelled = [future.cancel() for future in queued]
        assert any(cancelled) and thread is not None and thread.is_alive()
        started = time.monotonic()
        stop_process_pool(pool)
        assert time.monotonic() - started < 10
        assert not thread.is_alive()
        assert isinstance(torn.exception(timeout=5), BrokenProcessPool)
        assert failures == []  # nothing raised in the pool's thread
    finally:
        _POOL = None


def test_usual_terminate_handlers_are_the_default_and_the_command_lines():
    import signal

    from mosaicist._runtime import (
        TERMINATING_SIGNALS,
        unwind_on_terminate,
        usual_terminate_handler,
    )

    assert usual_terminate_handler(signal.SIG_DFL)
    assert not usual_terminate_handler(signal.SIG_IGN)
    assert not usual_terminate_handler(lambda number, frame: None)
    if all(signal.getsignal(number) is signal.SIG_DFL for number in TERMINATING_SIGNALS):
        with unwind_on_terminate():
            for number in TERMINATING_SIGNALS:
                assert signal.getsignal(number) is not signal.SIG_DFL
                assert usual_terminate_handler(signal.getsignal(number))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX signals")
def test_sighup_unwinds_as_sigterm_does():
    import signal

    from mosaicist._runtime import TERMINATING_SIGNALS, unwind_on_terminate

    assert signal.SIGHUP in TERMINATING_SIGNALS
    cleaned = []
    with pytest.raises(SystemExit) as stop:
        with unwind_on_terminate():
            try:
                signal.raise_signal(signal.SIGHUP)
            finally:
                cleaned.append(True)
    assert stop.value.code == 128 + signal.SIGHUP and cleaned == [True]
    # Back to the default action, and a handler set by the application is left alone.
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
    ignored = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with unwind_on_terminate():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, ignored)


_TWICE = """
import signal, sys
from mosaicist import _runtime
_runtime.REPEAT_GRACE_SECONDS = float(sys.argv[1])
try:
    with _runtime.unwind_on_terminate():
        try:
            signal.raise_signal(signal.SIGTERM)
        finally:
            signal.raise_signal(signal.SIGTERM)  # GNU timeout's second, to the group
            print("cleaned up", flush=True)
except SystemExit as stop:
    print("exit", stop.code, flush=True)
    raise
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX signals")
@pytest.mark.parametrize("grace", [1.0, 0.0])
def test_the_same_terminating_signal_again_at_once_lets_the_clean_up_finish(grace):
    # `timeout` sends SIGTERM to the command and then to its process group: the second
    # ended the process half way through its clean-up (temporaries left beside outputs).
    import subprocess

    done = subprocess.run([sys.executable, "-c", _TWICE, str(grace)], capture_output=True,
                          text=True, timeout=60)
    if grace:
        assert done.returncode == 143, done.stderr
        assert done.stdout.split("\n")[:2] == ["cleaned up", "exit 143"]
        assert "Traceback" not in done.stderr
    else:
        # Past the grace, a second signal ends the process at once, as before.
        assert done.returncode == -signal.SIGTERM and done.stdout == ""


_DROPPED = """
import signal, time
from mosaicist import _runtime

with _runtime.unwind_on_terminate():
    handler = signal.getsignal(signal.SIGTERM)

    def compiled():
        # As C code that clears what a handler run inside it raised (a module compiled
        # for an import): called with no Python frame, the exit reaches none.
        try:
            handler(signal.SIGTERM, None)
        except SystemExit:
            pass

    compiled()
    start = time.monotonic()
    while time.monotonic() - start < 20:
        time.sleep(0.01)
    print("ran on", flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX signals")
def test_a_sigterm_whose_exit_python_drops_is_delivered_again():
    # A SIGTERM landing while a module was compiled for an import (in C, which cleared
    # the handler's SystemExit) was lost: make ran on, wrote its mosaic and exited 0 (4
    # of 60 makes signalled in their first second).
    import subprocess

    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", _DROPPED], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 143, (done.stdout, done.stderr)
    assert done.stdout == "" and time.monotonic() - started < 15


def test_progress_is_off_without_a_usable_standard_error(monkeypatch):
    # An in-process caller of a program started with 2>&- has sys.stderr None: isatty()
    # raised AttributeError; a stream whose descriptor was closed raises ValueError.
    import io

    from mosaicist.progress import progress_enabled

    monkeypatch.setattr(sys, "stderr", None)
    assert progress_enabled() is False
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stderr", closed)
    assert progress_enabled() is False


def test_ordered_jobs_give_results_in_order_with_a_bounded_number_in_flight():
    running = 0
    most = 0
    lock = threading.Lock()

    def job(value: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        # Later jobs finish first: the order must still be the submission's.
        time.sleep(0.002 * (10 - value % 10))
        with lock:
            running -= 1
        return value * value

    results = []
    with OrderedJobs(3, depth=4, name="mosaicist-test") as jobs:
        for value in range(30):
            results.extend(jobs.submit(job, value))
            assert len(jobs._pending) <= 4
        results.extend(jobs.drain())
    assert results == [value * value for value in range(30)]
    assert 1 < most <= 3


def test_ordered_jobs_with_one_worker_run_in_the_callers_thread():
    with OrderedJobs(1) as jobs:
        assert jobs.submit(lambda: threading.current_thread()) == [threading.current_thread()]
        assert list(jobs.drain()) == []


def test_ordered_jobs_left_on_an_error_start_nothing_more():
    started = []

    def job(value: int) -> int:
        started.append(value)
        if value == 0:
            raise ValueError("the first job fails")
        time.sleep(0.01)
        return value

    with (pytest.raises(ValueError, match="first job"),
          OrderedJobs(2, depth=40, name="mosaicist-test-cancel") as jobs):
        for value in range(40):
            jobs.submit(job, value)
        list(jobs.drain())
    # The jobs queued behind the failure were cancelled, not run.
    assert len(started) < 40
    assert not any(thread.name.startswith("mosaicist-test-cancel")
                   for thread in threading.enumerate())


def _child_finalises_garbage(frozen: bool) -> bool:
    """Whether a child forked (in :func:`forking` or not) finalises the parent's garbage."""
    parent = os.getpid()
    read_end, write_end = os.pipe()

    class Cyclic:
        def __del__(self) -> None:
            if os.getpid() != parent:
                os.write(write_end, b"finalised")

    # Only this garbage at the fork: earlier tests' (a pool's, a video container's) has
    # finalisers that wait on threads the child lacks, and the unfrozen child hung on them.
    gc.collect()
    gc.disable()  # the garbage must still be there at the fork
    try:
        garbage = Cyclic()
        garbage.me = garbage  # type: ignore[attr-defined]
        del garbage
        with forking() if frozen else contextlib.nullcontext():
            pid = os.fork()
            if pid == 0:  # the child
                gc.collect()
                os._exit(0)
        os.waitpid(pid, 0)
    finally:
        gc.enable()
        gc.collect()  # the parent's own collector still finalises it
    os.close(write_end)
    try:
        return os.read(read_end, 100) == b"finalised"
    finally:
        os.close(read_end)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_child_forked_in_forking_never_collects_the_parents_garbage():
    assert _child_finalises_garbage(frozen=False)  # what a finaliser waiting on a thread hangs
    assert not _child_finalises_garbage(frozen=True)
    assert gc.get_freeze_count() == 0


def test_forking_blocks_overlap_and_the_last_unfreezes():
    with forking():
        with forking():
            assert gc.get_freeze_count() > 0
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize(("module", "name"), [
    ("mosaicist._profiles", "_lock"), ("mosaicist.imaging", "_heif_registered"),
    ("mosaicist.crop", "_detector_lock"), ("mosaicist.progress", "_listener_lock"),
    ("mosaicist._runtime", "_lock"),
])
def test_a_lock_held_by_another_thread_at_a_fork_is_free_in_the_child(module, name):
    """The tiles' decoding workers are forked while the target is read in a thread.

    Its colour profile's conversion held the profiles' lock at the fork, and
    each worker waited for it for good at its first tile with a profile: the
    make hung (3 runs in 6).
    """
    import importlib

    namespace = importlib.import_module(module)
    with held_by_another_thread(getattr(namespace, name)):
        child = os.fork()
        if child == 0:  # pragma: no cover - the child's exit status is the check
            os._exit(0 if getattr(namespace, name).acquire(timeout=5) else 1)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0


def test_a_fork_waits_for_another_threads_import_to_end(tmp_path, monkeypatch):
    # The index's decoding pool forked while the target's thread imported Pillow's
    # plugins (a first run, compiling them): the workers inherited the plugins' import
    # locks, held by a thread they do not have, and waited for them forever, and so did
    # the make (3 of 3 runs with an empty bytecode cache).
    import importlib

    name = "mosaicist_slow_import_s52"
    (tmp_path / f"{name}.py").write_text("import time\ntime.sleep(0.8)\nVALUE = 7\n")
    (tmp_path / f"{name}_later.py").write_text("VALUE = 8\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    started = threading.Event()

    def importer():
        started.set()
        importlib.import_module(name)

    thread = threading.Thread(target=importer)
    thread.start()
    started.wait()
    time.sleep(0.2)  # the module's body is running now: its import lock is held
    try:
        with forking(prepare=lambda: importlib.import_module(name)):
            pid = os.fork()
            if pid == 0:  # the child: import what the other thread was importing
                try:
                    module = importlib.import_module(name)
                    # A thread of the child imports too: the import lock the fork kept
                    # held is given back in the child.
                    later = []
                    thread_of_child = threading.Thread(
                        target=lambda: later.append(importlib.import_module(f"{name}_later")))
                    thread_of_child.start()
                    thread_of_child.join(10)
                    if not later:
                        os._exit(5)
                    os._exit(0 if module.VALUE == 7 and later[0].VALUE == 8 else 3)
                except BaseException:  # noqa: BLE001
                    os._exit(4)
        deadline = time.monotonic() + 15
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("the forked child waited for the import lock forever")
            time.sleep(0.02)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        thread.join()
        sys.modules.pop(name, None)
        sys.modules.pop(f"{name}_later", None)



def test_the_decoding_workers_imports_are_made_before_they_are_forked():
    # What the decoding workers import on first need is imported first, so that an
    # import another thread has begun is waited for (Pillow's plugins, in the hang).
    import importlib
    import importlib.util

    from mosaicist.sources.folder import _imports_of_decoding

    _imports_of_decoding()
    if importlib.util.find_spec("imagecodecs") is not None:
        assert "imagecodecs._png" in sys.modules  # loaded on first use: the target's thread
    for plugin in [name for name in Image._plugins if f"PIL.{name}" not in sys.modules]:
        with pytest.raises(ImportError):  # a plugin that needs what is not installed (olefile)
            importlib.import_module(f"PIL.{plugin}")


def test_a_fork_waited_for_from_inside_an_import_does_not_stall(tmp_path):
    # A module that, while it is imported, waits for a worker thread that forks: the fork
    # waited for every import in progress to end, that one too, for 30 s.
    (tmp_path / "importing_waits_s52.py").write_text(
        "import os, time\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from mosaicist._runtime import forking\n"
        "def fork_once():\n"
        "    with forking():\n"
        "        pid = os.fork()\n"
        "        if pid == 0:\n"
        "            os._exit(0)\n"
        "    return os.waitpid(pid, 0)[1]\n"
        "started = time.monotonic()\n"
        "with ThreadPoolExecutor(1) as pool:\n"
        "    STATUS = pool.submit(fork_once).result()\n"
        "SECONDS = time.monotonic() - started\n")
    script = "import importing_waits_s52 as m; print(m.STATUS, round(m.SECONDS, 1))"
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    status, seconds = result.stdout.split()
    assert status == "0" and float(seconds) < 10


def test_forking_keeps_what_the_application_froze():
    # The last forking block unfroze everything, the application's own gc.freeze() too
    # (a server that froze its preloaded objects before forking its workers).
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 0
        with forking():
            pass
        assert gc.get_freeze_count() >= frozen
    finally:
        gc.unfreeze()
    with forking():
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0  # nothing frozen before: all unfrozen after
