"""How much of the machine mosaicist uses: worker counts and resident memory.

Every pool of threads or processes sizes itself with :func:`worker_count`, so
one environment variable, ``MOSAICIST_THREADS``, bounds them all. Work whose
memory grows with the grid (cells, candidate lists, a picture held whole) is
compared, before it starts, with :func:`available_memory`
(:func:`check_memory`), so that a plan that cannot fit is refused in one
line rather than ended by the kernel's out-of-memory killer.
"""

from __future__ import annotations

import _imp
import contextlib
import ctypes
import gc
import mmap
import os
import re
import signal
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import numpy as np

from ._forks import renew_locks_after_fork
from .errors import MosaicistError

#: Environment variable that sets the number of worker threads and processes.
THREADS_ENV = "MOSAICIST_THREADS"
#: Seconds between a worker process's checks that its parent still runs, where the
#: kernel cannot signal the parent's death (not Linux).
PARENT_POLL_SECONDS = 1.0
#: Seconds a process pool's own thread gets to end once its workers are killed, before
#: it is taken to wait for the rest of a message that a killed worker left unfinished.
POOL_THREAD_GRACE_SECONDS = 0.5
#: ``prctl`` option that asks Linux to signal a process when its parent dies.
_PR_SET_PDEATHSIG = 1
#: Environment variable that replaces the memory :func:`available_memory` finds, in bytes
#: (private: the tests' way to stand for a small machine without filling one).
_MEMORY_ENV = "_MOSAICIST_AVAILABLE_MEMORY"
#: Where Linux mounts the cgroup (v2) hierarchy, and the v1 memory controller.
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_CGROUP_V1_MEMORY = _CGROUP_ROOT / "memory"
#: A cgroup v1 limit at or above this is "no limit" (the kernel's page-aligned maximum).
_CGROUP_V1_UNLIMITED = 1 << 60


def worker_count(most: int | None = None) -> int:
    """Return how many workers a pool should have.

    ``MOSAICIST_THREADS`` when set, else the cores this process may run on;
    never below 1, and never above ``most`` when given.

    Parameters
    ----------
    most : int, optional
        Upper limit for pools whose workers each hold a large buffer.

    Raises
    ------
    MosaicistError
        When ``MOSAICIST_THREADS`` is not a whole number.
    """
    configured = os.environ.get(THREADS_ENV)
    if configured:
        text = configured.strip()
        if re.fullmatch(r"[+-]?[0-9]{1,18}", text) is None:
            raise MosaicistError(f"{THREADS_ENV} must be a whole number of threads, "
                                 f"got {configured!r}")
        count = int(text)
    else:
        try:
            count = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not on Linux
            count = os.cpu_count() or 1
    if most is not None:
        count = min(count, most)
    return max(1, count)


def available_memory() -> int | None:
    """Bytes of memory this process can still take without making the machine swap or kill.

    The least of what the kernel counts as available (``MemAvailable`` in
    ``/proc/meminfo``: free memory plus the page cache it can reclaim) and,
    where this process runs in a control group with a memory limit (a
    container, a systemd slice), that limit less what the group holds
    beyond its reclaimable file cache. Where neither can be read (not
    Linux), the machine's physical memory, which refuses only plans that no
    machine of that size could run. None when nothing can be learnt.

    Returns
    -------
    int or None
        Available bytes, or None when unknown.
    """
    override = os.environ.get(_MEMORY_ENV)
    if override:
        with contextlib.suppress(ValueError):
            return max(0, int(override))
    found = [amount for amount in (_meminfo_available(), *_cgroup_rooms())
             if amount is not None]
    if not found:
        with contextlib.suppress(ValueError, OSError, AttributeError):
            # SC_AVPHYS_PAGES counts free pages only, not the page cache the kernel
            # gives back on demand: too little on any machine that has read files.
            found.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return min(found) if found else None


def check_memory(needed: int, refusal: Callable[[str, str], MosaicistError],
                 available: int | None = None) -> None:
    """Raise ``refusal(needed, available)`` when ``needed`` bytes exceed the memory available.

    Parameters
    ----------
    needed : int
        The estimated peak, in bytes (an estimate that errs low: only a plan
        that clearly cannot fit is refused).
    refusal : callable
        Makes the error from the two amounts as words (``"37.0 GB"``).
    available : int, optional
        The memory available (default: :func:`available_memory`).

    Raises
    ------
    MosaicistError
        What ``refusal`` made, when ``needed`` is over what is available.
    """
    if available is None:
        available = available_memory()
    if available is not None and needed > available:
        raise refusal(byte_words(needed), byte_words(available))


def byte_words(count: int) -> str:
    """A byte count for people: ``512 bytes``, ``3.2 GB``, ``1.1 TB``.

    Parameters
    ----------
    count : int
        Bytes.

    Returns
    -------
    str
        The count in the largest decimal unit it reaches, one decimal.
    """
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:,.1f} {unit}"
    return f"{count} bytes"


def _meminfo_available() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (None where there is none)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # in kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_number(path: Path) -> int | None:
    """The whole number a cgroup file holds; None for ``max``, a missing or odd file."""
    try:
        text = path.read_text(encoding="ascii").strip()
        return None if text == "max" else int(text)
    except (OSError, ValueError):
        return None


def _reclaimable(stat: Path, key: str) -> int:
    """The ``key`` line of a cgroup's ``memory.stat`` (file cache it can give back), or 0."""
    try:
        for line in stat.read_text(encoding="ascii").splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _cgroup_rooms() -> list[int]:
    """Room left under each memory limit of this process's control groups, in bytes.

    The process's own group and each above it that has a limit, in the
    unified hierarchy (version 2: ``memory.max``) and in the memory
    controller's (version 1: ``memory.limit_in_bytes``). What a group holds
    in inactive file cache counts as room (the kernel reclaims it before it
    kills), as container tools count a working set.
    """
    own = {"0": "/", "memory": "/"}
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/cgroup").read_text(encoding="utf-8").splitlines():
            hierarchy, controllers, path = line.split(":", 2)
            for kind in ("0", "memory"):
                if hierarchy == kind or kind in controllers.split(","):
                    own[kind] = path
    rooms = []
    for kind, root, files in (
            ("0", _CGROUP_ROOT, ("memory.max", "memory.current", "inactive_file")),
            ("memory", _CGROUP_V1_MEMORY,
             ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"))):
        group = root / own[kind].lstrip("/")
        if not group.is_relative_to(root) or ".." in group.parts:
            group = root
        for folder in (group, *group.parents):
            limit = _read_number(folder / files[0])
            if limit is not None and limit < _CGROUP_V1_UNLIMITED:
                used = _read_number(folder / files[1]) or 0
                used -= _reclaimable(folder / "memory.stat", files[2])
                rooms.append(max(0, limit - max(0, used)))
            if folder == root:
                break
    return rooms


def end_with_parent(parent_pid: int) -> None:
    """Make this worker process end as soon as the process that started it ends.

    A pool's worker whose parent was killed (``kill -9``, a crash) would
    otherwise wait forever for work from a parent that is gone, holding its
    memory and the pool's resource tracker. On Linux the kernel sends the
    worker SIGKILL when its parent dies (``PR_SET_PDEATHSIG``; strictly, when
    the parent's thread that started the worker ends, so the pool must be
    started by a thread that outlives it); elsewhere a daemon thread polls
    the parent's PID. Call it from the pool's initializer.

    Parameters
    ----------
    parent_pid : int
        PID of the process that made the pool.
    """
    watched_by_kernel = False
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            watched_by_kernel = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    # The parent may have died before the request above took effect.
    if os.getppid() != parent_pid:
        os._exit(1)
    if not watched_by_kernel:
        threading.Thread(
            target=_poll_parent, args=(parent_pid,), name="mosaicist-parent-watch", daemon=True
        ).start()


def stop_process_pool(executor: Any) -> None:
    """Stop a :class:`concurrent.futures.ProcessPoolExecutor` now, work and all.

    ``shutdown`` alone lets each worker finish what it holds; when the work
    stopped early (an error, an interrupt, SIGTERM) nobody wants those
    results, and the parent may be about to exit. The workers are killed,
    queued work is dropped, and the pool's own thread is let go: a worker
    killed while it wrote a result leaves half a message in the results'
    pipe, and that thread would wait for the rest forever (and so would the
    interpreter's exit, which joins it). With every worker gone, this
    process holds the pipe's only writing end; closing it ends that wait.

    Parameters
    ----------
    executor : concurrent.futures.ProcessPoolExecutor
        The pool; unusable afterwards.
    """
    # All taken first: shutdown forgets them.
    processes = dict(getattr(executor, "_processes", None) or {})
    writer = getattr(getattr(executor, "_result_queue", None), "_writer", None)
    thread = getattr(executor, "_executor_manager_thread", None)
    terminate = getattr(executor, "terminate_workers", None)  # Python 3.14+
    if terminate is not None:
        terminate()
    else:
        # Earlier versions have no public way to reach the workers.
        executor.shutdown(wait=False, cancel_futures=True)
        for process in processes.values():
            with contextlib.suppress(OSError, ValueError, AttributeError):
                process.kill()
    for process in processes.values():
        with contextlib.suppress(OSError, ValueError, AttributeError, AssertionError):
            process.join(timeout=5)
    if thread is None or writer is None:
        return
    # Its workers gone, the pool's thread ends at once, unless it is reading half a message.
    thread.join(timeout=POOL_THREAD_GRACE_SECONDS)
    if not thread.is_alive() or any(process.is_alive() for process in processes.values()):
        return
    pending = getattr(thread, "pending_work_items", None)
    if isinstance(pending, dict):
        # Before Python 3.12, the thread failing the pool's work raises on a future
        # already cancelled (as a map's iterator cancels what it has not returned):
        # it is given only the others.
        thread.pending_work_items = {key: item for key, item in list(pending.items())
                                     if not item.future.cancelled()}
    with contextlib.suppress(OSError):
        writer.close()
    thread.join(timeout=5)


#: The signals that stop a command as an interrupt does: SIGTERM (``kill``), and SIGHUP
#: where the platform has it (the terminal or the SSH session closed).
TERMINATING_SIGNALS: tuple[int, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
#: Seconds within which a terminating signal again is the same stop as the first
#: (:func:`unwind_on_terminate`).
REPEAT_GRACE_SECONDS = 1.0


#: Seconds after which a SIGTERM's ``SystemExit`` that never reached Python code is sent again.
DROPPED_STOP_SECONDS = 0.05


class _Stop:
    """A SIGTERM's (or SIGHUP's) ``SystemExit``, raised until Python code sees it.

    (With ``code`` None, a server's stop: ``KeyboardInterrupt``, see
    :func:`stop_serving`.)

    Python runs a handler wherever the main thread is, and raised inside C
    code that clears what it calls raised (a module compiled as it is
    imported: in 6 of 60 makes stopped in their first half second, the
    command ran on, wrote its mosaic and exited 0), the exit vanishes
    without a trace: it never reaches :data:`sys.unraisablehook`. A tracer
    set as it is raised sees it pass through the interrupted frame; until
    it has, the signal is sent again every :data:`DROPPED_STOP_SECONDS`,
    and its handler raises again. Where another tracer is set (a
    debugger's, coverage's), it is left alone and the exit raised once.
    """

    def __init__(self, code: int | None) -> None:
        self.code = code
        self.seen = False

    def _is_it(self, error: BaseException) -> bool:
        if self.code is None:
            return isinstance(error, KeyboardInterrupt)
        return isinstance(error, SystemExit) and error.code == self.code

    def raise_in(self, frame: FrameType | None) -> NoReturn:
        """Raise the exit, watching for it in ``frame`` and the frames it runs in."""
        if sys.gettrace() is not None:
            self.seen = True
        else:
            def trace(traced: FrameType, event: str, arg: Any) -> Any:
                if self.seen:
                    return None
                if event == "exception" and self._is_it(arg[1]):
                    self.seen = True
                    sys.settrace(None)
                    return None
                return trace

            while frame is not None:
                frame.f_trace = trace
                frame = frame.f_back
            sys.settrace(trace)
        if self.code is None:
            raise KeyboardInterrupt
        raise SystemExit(self.code)

    def watch(self, signum: int) -> None:
        """Send ``signum`` again until the exit is seen, from a thread of its own."""
        pid = os.getpid()

        def resend() -> None:
            while True:
                time.sleep(DROPPED_STOP_SECONDS)
                if self.seen or os.getpid() != pid:
                    return
                os.kill(pid, signum)

        threading.Thread(target=resend, name="mosaicist-stop", daemon=True).start()


@contextlib.contextmanager
def unwind_on_terminate() -> Iterator[None]:
    """Make SIGTERM and SIGHUP raise ``SystemExit`` in the block, to unwind like an interrupt.

    Their default action ends the process at once: an index update would
    not commit the batch decoded so far, a writer would leave its
    temporaries, a pool its workers (SIGHUP: a terminal closed under a long
    render left its full-size temporary behind). Raised instead, the block
    unwinds (and cleans up) as it does on an interrupt, and the process
    still exits with the signal's status (143, 129). The same signal again
    within :data:`REPEAT_GRACE_SECONDS` is the same stop (GNU ``timeout``
    signals the command, then its whole process group: two SIGTERMs a few
    microseconds apart, the second of which ended the clean-up half way);
    later, it ends the process at once. Only in the main thread (the only
    one where Python runs signal handlers) and only for signals with their
    usual action (:func:`usual_terminate_handler`), given back after the
    block: a handler that the application installed is left alone, and a
    block inside another is the outer one's.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.getsignal(number) for number in TERMINATING_SIGNALS}
    # Not over an unwinding already set: an inner block (an index update inside a make)
    # gave the default action back at its end, for the rest of the make.
    caught = [number for number, handler in previous.items()
              if usual_terminate_handler(handler) and not getattr(handler, "unwinds", False)]
    ours: list[Any] = []

    def terminate(signum: int, frame: FrameType | None) -> None:
        first = time.monotonic()
        stop = _Stop(128 + signum)

        def again(signum: int, frame: FrameType | None) -> None:
            if not stop.seen:
                stop.raise_in(frame)  # the first was dropped: delivered again
            if time.monotonic() - first < REPEAT_GRACE_SECONDS:
                return
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

        ours.append(again)
        again.usual_terminate = again.unwinds = True  # type: ignore[attr-defined]
        signal.signal(signum, again)
        stop.watch(signum)
        stop.raise_in(frame)

    ours.append(terminate)
    # Usual actions (usual_terminate_handler), over which the command line sets its own.
    terminate.usual_terminate = terminate.unwinds = True  # type: ignore[attr-defined]
    for number in caught:
        signal.signal(number, terminate)
    try:
        yield
    finally:
        for number in caught:
            if any(signal.getsignal(number) is handler for handler in ours):
                signal.signal(number, previous[number])


#: When the last Ctrl+C was raised as ``KeyboardInterrupt`` by :func:`repeat_tolerant_interrupt`.
_last_interrupt: list[float] = []


def repeat_tolerant_interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGINT's handler of a command line that owns its process: Ctrl+C as usual, once.

    Raises ``KeyboardInterrupt`` as Python's own handler does, but a Ctrl+C
    within :data:`REPEAT_GRACE_SECONDS` of the last is the same stop: a second
    one pressed at once cut the first one's clean-up short (a Deep Zoom
    folder's temporary left half written, and a traceback from the
    interpreter's exit). One after that stops the clean-up too, as before.
    """
    now = time.monotonic()
    if _last_interrupt and now - _last_interrupt[0] < REPEAT_GRACE_SECONDS:
        return
    _last_interrupt[:] = [now]
    raise KeyboardInterrupt


#: Seconds after a server's stop within which SIGINT or SIGTERM again is the same stop
#: (:func:`stop_serving`): its graceful shutdown takes a few.
SERVER_STOP_GRACE_SECONDS = 10.0
#: When a server's stop was asked for by :func:`stop_serving`, and its interrupt.
_server_stop: list[tuple[float, _Stop]] = []


def stop_serving(signum: int, frame: FrameType | None) -> None:
    """SIGINT's, SIGTERM's and SIGHUP's handler while a server runs: the first stops it, once.

    Raises ``KeyboardInterrupt`` (delivered again where it was dropped, as
    :class:`_Stop` delivers an exit); the same or the other signal again
    within :data:`SERVER_STOP_GRACE_SECONDS` is the same stop (Ctrl+C
    twice, GNU timeout's second SIGTERM): raised inside the server's stop, a
    second one cut its clean-up short (exit 130, and once SIGABRT from a
    thread the interpreter's exit found running). One after that stops the
    clean-up too.
    """
    if _server_stop:
        first, stop = _server_stop[0]
        if not stop.seen:
            stop.raise_in(frame)  # the first was dropped: delivered again
        if time.monotonic() - first < SERVER_STOP_GRACE_SECONDS:
            return
    stop = _Stop(None)
    _server_stop[:] = [(time.monotonic(), stop)]
    stop.watch(signum)
    stop.raise_in(frame)


def server_stop_asked() -> bool:
    """Whether :func:`stop_serving` has stopped a server since :func:`forget_server_stop`."""
    return bool(_server_stop)


def forget_server_stop() -> None:
    """Take the next SIGINT or SIGTERM as a new stop (a new server starts)."""
    _server_stop.clear()


def forget_interrupt() -> None:
    """Take the next Ctrl+C as a new one (the last was dropped where it was raised)."""
    _last_interrupt.clear()


def usual_interrupt_handler(handler: object) -> bool:
    """Whether ``handler`` is SIGINT's usual action: Python's own, or the command line's
    (:func:`repeat_tolerant_interrupt`, :func:`stop_serving`)."""
    return handler in (signal.default_int_handler, repeat_tolerant_interrupt, stop_serving)


def usual_terminate_handler(handler: object) -> bool:
    """Whether ``handler`` is SIGTERM's (or SIGHUP's) usual action: the default one, which
    ends the process, or the command line's: its end while it loads (``__main__``), its
    unwinding (:func:`unwind_on_terminate`).

    The command line sets its handlers only over these; code that must not
    be interrupted (the start of a local Dask cluster,
    :mod:`mosaicist.distributed`) holds such a signal and delivers it after.
    A handler the application installed is left alone.
    """
    return handler is signal.SIG_DFL or getattr(handler, "usual_terminate", False) is True


def resource_tracker_without_hangups() -> None:
    """Start multiprocessing's resource tracker, unless running, with SIGHUP blocked in it.

    The tracker (the process that unlinks the semaphores of spawned pools)
    ignores SIGINT and SIGTERM but not SIGHUP: a terminal closed under a
    batch or a local Dask cluster killed it with the command's process
    group, and the one started again in its place printed a traceback for
    every semaphore the command then released (``KeyError: '/mp-...'``),
    under the command's clean exit. A process keeps the signal mask it was
    started with; the tracker unblocks only the two it ignores.
    """
    if not hasattr(signal, "pthread_sigmask") or not hasattr(signal, "SIGHUP"):
        return
    from multiprocessing import resource_tracker

    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        resource_tracker.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _poll_parent(parent_pid: int) -> None:
    """End this process as soon as its parent is no longer ``parent_pid``."""
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)


def release_pages(array: np.ndarray) -> None:
    """Drop a memory map's resident pages from this process (they stay in the page cache).

    Streaming once through a large memory-mapped library would otherwise leave
    all of it counted in the process's resident memory. Harmless on arrays
    that are not memory maps, and where ``madvise`` is unavailable.
    """
    mapping = getattr(array, "_mmap", None)
    if mapping is None or not hasattr(mapping, "madvise"):
        return
    with contextlib.suppress(OSError, ValueError, AttributeError):
        mapping.madvise(mmap.MADV_DONTNEED)


_lock = threading.Lock()
_controller: dict[int, Any] = {}
#: Per process, whether a :func:`one_blas_thread` block holds the BLAS limit (a forked
#: child starts with none of its parent's).
_blas_limited: dict[int, bool] = {}
_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}
renew_locks_after_fork(globals(), "_lock")


_forking = {"count": 0, "kept_frozen": False}


@contextlib.contextmanager
def forking(prepare: Callable[[], object] | None = None) -> Iterator[None]:
    """Fork worker processes in this block: a child never collects the parent's objects.

    A forked child inherits every object of the parent, its garbage too, but
    only the thread that forked. The collector, run in the child, finalises
    that garbage, and a finaliser that waits for one of the parent's other
    threads waits forever: a PyAV video stream left over from an earlier
    batch waited for its FFmpeg slice threads, and the indexing worker that
    collected it never decoded a photo. The objects that exist when the
    block starts are frozen (:func:`gc.freeze`: the collector never looks
    at them, in the children it forks here), and unfrozen when the last of
    overlapping blocks ends, unless the process had frozen objects of its
    own before (an application that froze them before forking its own
    workers): those, and ours with them, then stay frozen.

    A child forked while another thread imports a module inherits that
    module's import lock, held by a thread the child does not have, and
    waits forever at its own import of it: the index's decoding workers, for
    Pillow's plugins, which the target's thread was loading (the make hung
    on a first run, with a cold bytecode cache). ``prepare`` imports here,
    first, what the children will import (an import that another thread has
    begun is waited for: the wait is for those modules alone, not for an
    import that is itself waiting for this block); then no import may begin
    until the block ends (:func:`_no_imports_begin`).

    Parameters
    ----------
    prepare : callable, optional
        Imports what the forked children need.
    """
    with _lock:
        if _forking["count"] == 0:
            _forking["kept_frozen"] = gc.get_freeze_count() > 0
            gc.freeze()
        _forking["count"] += 1
    try:
        if prepare is not None:
            prepare()
        with _no_imports_begin():
            yield
    finally:
        with _lock:
            _forking["count"] -= 1
            if _forking["count"] == 0 and not _forking["kept_frozen"]:
                gc.unfreeze()


@contextlib.contextmanager
def _no_imports_begin() -> Iterator[None]:
    """Hold the interpreter's import lock, which a thread takes to begin an import.

    Forked meanwhile, a child holds it too, as the forking thread did: it is
    given back there at once (:func:`_give_back_the_import_lock`).
    """
    _imp.acquire_lock()
    _import_lock_held["count"] += 1
    try:
        yield
    finally:
        _import_lock_held["count"] -= 1
        _imp.release_lock()


#: Levels of the interpreter's import lock that :func:`_no_imports_begin` holds (in the
#: thread that forks).
_import_lock_held = {"count": 0}


def _give_back_the_import_lock() -> None:
    """In a child forked inside :func:`_no_imports_begin`: release the import lock it inherited.

    The child's thread holds it as the forking thread did, and any other thread the
    child starts would wait forever for it at its first import.
    """
    count, _import_lock_held["count"] = _import_lock_held["count"], 0
    for _ in range(count):
        with contextlib.suppress(RuntimeError):  # not this thread's: another thread forked
            _imp.release_lock()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_give_back_the_import_lock)


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with BLAS on one thread (for work already split over threads).

    The BLAS libraries are found once per process, at the first call
    (``threadpoolctl`` looks them up in about 5 ms, which a search of a few
    cells repeated a hundred times in an assignment noticed): NumPy's and
    SciPy's, which the searches' products run on, are loaded by then; one
    loaded later (another package's own) keeps its threads.
    """
    from threadpoolctl import ThreadpoolController

    pid = os.getpid()
    with _lock:
        controller = _controller.get(pid)
        if controller is None:
            controller = _controller[pid] = ThreadpoolController()
        # The limit is the process's, not the thread's, and threadpoolctl lets only the
        # thread that set it change it again: the block that sets it restores it, and
        # blocks that overlap it (other threads', nested ones) leave it alone. Each such
        # block once set its own and restored what it found, one: the last of two
        # overlapping threads left BLAS on one thread for the rest of the process.
        limiter = None
        if not _blas_limited.get(pid):
            limiter = controller.limit(limits=1, user_api="blas")
            _blas_limited[pid] = True
    if limiter is None:
        yield
        return
    try:
        with limiter:
            yield
    finally:
        # A block still running in another thread has BLAS's threads back from here
        # on (slower, not wrong); the next block to start limits them again.
        with _lock:
            _blas_limited[pid] = False


def thread_pool(workers: int) -> ThreadPoolExecutor:
    """A pool of ``workers`` threads kept for the process's life (never shut down by callers).

    Kept per process: a pool's threads do not survive a fork, so a forked
    child makes its own.
    """
    key = (os.getpid(), workers)
    with _lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = ThreadPoolExecutor(workers, thread_name_prefix="mosaicist")
    return pool


class OrderedJobs:
    """A thread pool whose results come back in submission order.

    At most ``depth`` jobs are in flight (by default two more than the
    workers), which bounds the memory their inputs and outputs hold. With one
    worker, jobs run at once in the caller's thread. Leaving the ``with``
    block, on an error or an interrupt too, cancels the jobs not started and
    waits for those running.

    Parameters
    ----------
    workers : int, optional
        Threads (default :func:`worker_count`, at most 16).
    depth : int, optional
        Jobs in flight at most.
    name : str
        Prefix of the threads' names.
    """

    def __init__(self, workers: int | None = None, depth: int | None = None, *,
                 name: str = "mosaicist") -> None:
        # Each thread holds a job's input in flight: at most 16 bounds their memory.
        workers = workers or worker_count(most=16)
        self.workers = workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=name) if workers > 1 else None
        self._depth = depth or workers + 2
        self._pending: deque[Future] = deque()

    def submit(self, function: Callable[..., Any], *args: Any) -> list[Any]:
        """Start ``function(*args)``; return the results now due, oldest first."""
        if self._pool is None:
            return [function(*args)]
        self._pending.append(self._pool.submit(function, *args))
        due = []
        while len(self._pending) > self._depth or (self._pending and self._pending[0].done()):
            due.append(self._pending.popleft().result())
        return due

    def drain(self) -> Iterator[Any]:
        """Yield the results of every job still pending, in order."""
        while self._pending:
            yield self._pending.popleft().result()

    def __enter__(self) -> OrderedJobs:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def quiet_picture_warnings() -> None:
    """Keep Pillow's warnings about damaged metadata off stderr (the command line, its workers).

    A camera's EXIF block whose tag declares more bytes than the block
    holds, a TIFF tag of too many entries, a TIFF cut inside its header:
    Pillow warns (a ``UserWarning`` printed with its own source line, even
    under ``-q``) and then reads the picture, or the read fails and
    mosaicist says why in one line. Only Pillow's ``UserWarning`` is left
    out: its ``DecompressionBombWarning`` is a ``RuntimeWarning``, and the
    limits on pixels are mosaicist's own anyway.
    """
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL(\..*)?$")


@contextlib.contextmanager
def signals_held_while_starting(blocked: frozenset[int]) -> Iterator[None]:
    """Start processes in the block with ``blocked`` kept from them, and no interrupt inside.

    Ctrl+C reaches the whole process group, and a started process answers
    signals with its parent's handlers (forked) or Python's default (spawned:
    a ``KeyboardInterrupt`` traceback from its imports) until its own start
    sets them: one started just before the interrupt printed a traceback
    under the run's "interrupted". A process inherits the signal mask of the
    thread that starts it (as :mod:`multiprocessing.resource_tracker` starts
    its own), so ``blocked`` (SIGINT; SIGTERM too for forks, which inherit a
    Python handler) is blocked here, and the process unblocks it once its
    handlers are set.

    And an interrupt (SIGINT, or SIGTERM, which the command line makes
    unwind) raised inside a pool's start of a process, after the process
    began and before the pool counted it among its own, left it unknown to
    the pool, which could not stop it (a spawned one failed reading its
    start-up data: ``EOFError: Ran out of input``). Such a signal is held
    to the end of the block, and its handler run there. Signals whose
    handlers are not Python's (ignored, or SIGTERM's default), or outside
    the main thread (where handlers cannot be set), are left to the mask.
    """
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no process groups to reach
        yield
        return
    held: list[tuple[int, Any]] = []
    handlers: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for number in (signal.SIGINT, *TERMINATING_SIGNALS):
            handler = signal.getsignal(number)
            if callable(handler):
                handlers[number] = handler
                signal.signal(number, lambda *arguments: held.append(arguments))
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        yield
    finally:
        try:
            for held_number, handler in handlers.items():
                signal.signal(held_number, handler)
        finally:
            # Unblocked last: a signal pending until now meets the usual handler.
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        if held:
            received, frame = held[0]
            handlers[received](received, frame)
