"""The studio's background jobs: each in a process of its own, followed, cancellable.

A job (make a mosaic, draw saved placements again, index a tile source) runs
in a child process (:mod:`mosaicist.studio._worker`), started in a session
of its own so that its process group holds it and every process it starts.
Its events come back on a pipe; a thread per job reads them, keeps the job's
state, writes the run's history and passes the events on to subscribers.

- **Cancel** sends SIGTERM to the group, then SIGKILL after
  :data:`CANCEL_GRACE_SECONDS`; it returns once the job has ended and its
  run is marked ``cancelled``. Nothing is left behind: the group is killed
  again when its leader exits (stragglers included), and the files of a run
  that did not finish are removed from its folder.
- **A crash** of the child (killed by the system, a segfault, an uncaught
  error) marks the job ``failed`` with one sentence saying so.
- **The studio dying** takes its jobs with it: each child asks the kernel to
  kill it when the studio's job-starting thread ends (``PR_SET_PDEATHSIG``),
  and its own workers do the same.
- **Queues**: make and render jobs run :attr:`Jobs.max_parallel` at a time
  in the order started, index jobs likewise in a queue of their own; an
  index job asked for while the same one is queued or running is that job.

Events
------
:meth:`Jobs.subscribe` returns a :class:`Subscription`: iterate it in a
thread (``for event in subscription``) or in an event loop (``async for
event in subscription``); either ends after the job's final event. A
subscriber first gets the job's current state (a ``progress`` event whose
``data`` holds ``state``), then every event from then on, and the final
event (``done``, ``failed`` or ``cancelled``) even when it subscribed after
the end. Progress events are coalesced for a slow reader (only the latest
of a stage waits; each stage it reached is seen), so a subscription holds a
bounded number of events. For server-sent
events, :meth:`Subscription.aget` with a timeout lets the server send a
keep-alive comment when nothing happened.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MosaicistError
from ..options import MosaicOptions
from ..paths import expanded
from ._command import given_settings
from ._history import History, Run
from ._worker import OUTPUT_FILES, clear_folder

#: Seconds a cancelled job gets to end on SIGTERM before it is killed.
CANCEL_GRACE_SECONDS = 3.0
#: Seconds :meth:`Jobs.cancel` and :meth:`Jobs.shutdown` wait for a job to end after SIGKILL.
KILL_WAIT_SECONDS = 10.0
#: Finished jobs kept for :meth:`Jobs.status` (the oldest are forgotten first).
FINISHED_KEPT = 200
#: Lines of a job's stderr kept (to explain a crash).
LOG_LINES = 200
#: Log events passed on per job (warnings of the library: skipped files, notes).
LOG_EVENTS = 100
#: Events a subscriber may have waiting besides the latest progress.
SUBSCRIBER_BACKLOG = 1000
#: Seconds between checks that a job's process is still there while its pipe is quiet.
FOLLOW_POLL_SECONDS = 0.5
#: Job states; the last three are final.
FINAL_STATES = ("done", "failed", "cancelled")


@dataclass
class JobEvent:
    """Something that happened to a job.

    Attributes
    ----------
    kind : str
        ``progress``, ``log``, ``done``, ``failed`` or ``cancelled``.
    stage : str
        What the job is doing (a progress bar's description: ``indexing``,
        ``matching``, ``writing mosaic.png``...).
    done : float
        Progress of the stage so far.
    total : float or None
        Its end, when known.
    message : str
        A line for the user (``log``), or the sentence saying why it failed.
    data : dict
        ``done``: the job's result (``outputs`` and ``report`` of a run; the
        index figures and ``skipped`` files of an index job). Every event
        has ``job`` and ``state``; a run's events have ``run``.
    """

    kind: str
    stage: str = ""
    done: float = 0.0
    total: float | None = None
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        """Whether this is a job's last event."""
        return self.kind in FINAL_STATES

    def to_json(self) -> dict[str, Any]:
        """The event as a JSON-ready dictionary (for a server-sent event's ``data``)."""
        return {"kind": self.kind, "stage": self.stage, "done": self.done, "total": self.total,
                "message": self.message, "data": self.data}


class Subscription:
    """The events of one job for one reader; see the module docstring.

    Iterating (in a thread or with ``async for``) ends after the final
    event. :meth:`get` and :meth:`aget` wait at most ``timeout`` seconds and
    return None when nothing came (or the subscription ended: see
    :attr:`ended`). Call :meth:`close` when the reader goes away.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: collections.deque[JobEvent] = collections.deque()
        self._ready = threading.Condition(self._lock)
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._final_queued = False
        self._final_taken = False
        self._closed = False
        self.on_close: list[Any] = []

    @property
    def ended(self) -> bool:
        """Whether the final event was taken (or the subscription closed)."""
        return self._final_taken or self._closed

    def put(self, event: JobEvent) -> None:
        """Queue ``event`` (called by the job; progress events coalesce)."""
        with self._lock:
            if self._closed or self._final_queued:
                return
            last = self._events[-1] if self._events else None
            if (event.kind == "progress" and last is not None and last.kind == "progress"
                    and last.stage == event.stage):
                # A stage's later progress replaces its earlier, never another stage's: a
                # slow reader (a loaded machine) missed "writing mosaic.png" altogether.
                self._events[-1] = event
            elif len(self._events) >= SUBSCRIBER_BACKLOG and not event.final:
                return  # a reader this far behind loses log lines, never the end
            else:
                self._events.append(event)
            self._final_queued = event.final
            self._ready.notify_all()
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # its loop has closed
                loop.call_soon_threadsafe(_wake, future)

    def _take(self) -> JobEvent | None:
        if not self._events:
            return None
        event = self._events.popleft()
        if event.final:
            self._final_taken = True
        return event

    def get(self, timeout: float | None = None) -> JobEvent | None:
        """The next event, waiting at most ``timeout`` seconds (None: until one comes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not self._events and not self.ended:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._ready.wait(remaining)
            return self._take()

    async def aget(self, timeout: float | None = None) -> JobEvent | None:
        """The next event, waiting in the event loop at most ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            with self._lock:
                if self._events or self.ended:
                    return self._take()
                future: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, future))
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return None
            try:
                await asyncio.wait_for(future, remaining)
            except TimeoutError:
                with self._lock:
                    self._waiters = [item for item in self._waiters if item[1] is not future]
                    if not self._events:
                        return None

    def close(self) -> None:
        """Stop receiving events (the reader went away)."""
        with self._lock:
            self._closed = True
            self._events.clear()
            self._ready.notify_all()
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_wake, future)
        for callback in self.on_close:
            callback(self)

    def __iter__(self) -> Iterator[JobEvent]:
        while True:
            event = self.get()
            if event is None:
                return
            yield event
            if event.final:
                return

    async def __aiter__(self) -> AsyncIterator[JobEvent]:
        while True:
            event = await self.aget()
            if event is None:
                return
            yield event
            if event.final:
                return


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass
class _Job:
    id: str
    kind: str  # "make", "render" or "index"
    lane: str  # "runs" or "index"
    spec: dict[str, Any]
    run_id: str | None = None
    key: str | None = None
    state: str = "queued"
    stage: str = ""
    done: float = 0.0
    total: float | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    process: subprocess.Popen[bytes] | None = None
    cancel_requested: bool = False
    exited: bool = False  # its process group was cleared; its leader is (being) reaped
    log: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=LOG_LINES))
    log_events: int = 0
    subscribers: list[Subscription] = field(default_factory=list)
    finished: threading.Event = field(default_factory=threading.Event)
    created: float = field(default_factory=time.time)

    def base(self) -> dict[str, Any]:
        data: dict[str, Any] = {"job": self.id, "state": self.state}
        if self.run_id is not None:
            data["run"] = self.run_id
        return data


class Jobs:
    """The studio's background jobs (see the module docstring).

    Parameters
    ----------
    history : History
        Where make and render runs are recorded.
    cache_dir : path-like
        The cache folder (indexes, downloads) the jobs use.
    max_parallel : int
        Make and render jobs run at once (index jobs: as many again, in
        their own queue).

    Attributes
    ----------
    on_run_end : callable or None
        Called with a run's id once its make or render job has ended and
        the run is recorded, in the thread that followed it, with no lock
        held (the studio removes the uploads no run needs any more).
    """

    def __init__(self, history: History, cache_dir: str | Path, max_parallel: int = 1) -> None:
        if max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")
        self.history = history
        self.cache_dir = expanded(cache_dir).absolute()
        self.max_parallel = max_parallel
        self.on_run_end: Callable[[str], object] | None = None
        self._lock = threading.RLock()
        self._jobs: dict[str, _Job] = {}
        self._waiting: dict[str, collections.deque[str]] = {"runs": collections.deque(),
                                                           "index": collections.deque()}
        self._closing = False
        # One long-lived thread starts every child: the kernel's parent-death
        # signal follows the thread that started a child, not its process.
        self._launches: queue.Queue[_Job | None] = queue.Queue()
        self._launcher = threading.Thread(target=self._launch_loop, name="mosaicist-jobs",
                                          daemon=True)
        self._launcher.start()

    # -- starting -----------------------------------------------------------------------

    def start_make(self, run: Run, target: Path, tiles: str, options: MosaicOptions) -> None:
        """Queue the make job of ``run`` (its job id is the run's id).

        Parameters
        ----------
        run : Run
            A run just created in the history (status ``queued``).
        target : pathlib.Path
            The target picture.
        tiles : str
            The tile source spec.
        options : MosaicOptions
            The settings; the job rebuilds them from those given, as
            ``mosaicist make`` does from its flags.
        """
        spec = {"kind": "make", "target": str(Path(target).absolute()),
                "target_name": run.target_name, "tiles": tiles,
                "settings": given_settings(options), "folder": str(run.folder),
                "cache_dir": str(self.cache_dir)}
        self._add(_Job(run.id, "make", "runs", spec, run_id=run.id))

    def start_render(self, run: Run, source_run: Run, tile_px: int) -> None:
        """Queue a job drawing ``source_run``'s placements again at ``tile_px`` into ``run``.

        Raises
        ------
        MosaicistError
            When ``source_run`` has no saved placements (it did not finish).
        """
        placements = source_run.output_path("placements_json")
        if placements is None or not placements.is_file():
            raise MosaicistError(f"run {source_run.id} has no saved placements to draw again")
        report = source_run.output_path("report")
        spec = {"kind": "render", "placements": str(placements), "tile_px": int(tile_px),
                "folder": str(run.folder), "cache_dir": str(self.cache_dir),
                "report": None if report is None else str(report), "source_run": source_run.id}
        self._add(_Job(run.id, "render", "runs", spec, run_id=run.id))

    def start_index(self, tiles: str, options: MosaicOptions, target: Path | None = None
                    ) -> str:
        """Queue indexing ``tiles`` as a make with ``options`` would; return the job id.

        While the same index (source, tile size, aspect, crop, colour
        profiles) is already queued or being made, that job's id is returned.

        Parameters
        ----------
        tiles : str
            The tile source spec.
        options : MosaicOptions
            The mosaic's settings: the index is made at their tile size,
            aspect, crop and colour profiles.
        target : pathlib.Path, optional
            The target, when known: with ``cells`` or ``print_size`` the
            tile size make compares at follows from its size.

        Raises
        ------
        MosaicistError
            When the target cannot be read or the sizes do not fit it.
        """
        if target is not None:
            from ..imaging import target_size
            from ..sizing import fit_options, options_plan

            size = target_size(target, options.max_target_pixels)
            options = fit_options(options, options_plan(options, size, str(target)))
        # Every setting that makes the index another (as TileLibrary.open takes them):
        # one left out would index at its default, not at what the preview and the
        # run then open, and they would find no index. And the copies the job counts.
        settings = {name: value for name, value in given_settings(options).items()
                    if name in ("preset", "aspect", "crop", "colour_profiles", "dedupe",
                                "identical_photos")}
        settings["match_px"] = options.match_px
        key = json.dumps([tiles, options.match_px, options.aspect, options.crop,
                          options.colour_profiles, options.dedupe, options.identical_photos])
        with self._lock:
            for job in self._jobs.values():
                if job.key == key and job.state not in FINAL_STATES:
                    return job.id
            job_id = uuid.uuid4().hex
            spec = {"kind": "index", "tiles": tiles, "settings": settings,
                    "cache_dir": str(self.cache_dir)}
            self._add(_Job(job_id, "index", "index", spec, key=key))
        return job_id

    def _add(self, job: _Job) -> None:
        with self._lock:
            if self._closing:
                raise MosaicistError("the studio is shutting down; no new job can start")
            if job.id in self._jobs:
                raise MosaicistError(f"job {job.id} exists already")
            self._jobs[job.id] = job
            self._waiting[job.lane].append(job.id)
            self._forget_old()
            self._pump()

    # -- following ----------------------------------------------------------------------

    def status(self, job_id: str) -> dict[str, Any]:
        """The state of job ``job_id``.

        Returns
        -------
        dict
            ``id``, ``kind``, ``state`` (``queued``, ``running``, ``done``,
            ``failed``, ``cancelled``), ``stage``, ``done``, ``total``,
            ``skipped`` (an index job's skipped files: ``{"id", "reason"}``),
            ``skipped_count``, ``error`` (one sentence), ``result`` (the
            final data), ``run`` (the run's id, for a make or render job).

        Raises
        ------
        KeyError
            When there is no such job (or it was forgotten long ago).
        """
        with self._lock:
            job = self._jobs[job_id]
            result = job.result or {}
            return {"id": job.id, "kind": job.kind, "state": job.state, "stage": job.stage,
                    "done": job.done, "total": job.total,
                    "skipped": list(result.get("skipped", [])),
                    "skipped_count": int(result.get("skipped_count", 0)),
                    "error": job.error, "result": job.result, "run": job.run_id}

    def subscribe(self, job_id: str) -> Subscription:
        """Follow job ``job_id``'s events (see the module docstring).

        Raises
        ------
        KeyError
            When there is no such job.
        """
        subscription = Subscription()
        with self._lock:
            job = self._jobs[job_id]
            subscription.put(JobEvent("progress", job.stage, job.done, job.total,
                                      data=job.base()))
            if job.state in FINAL_STATES:
                subscription.put(self._final_event(job))
            else:
                job.subscribers.append(subscription)
                subscription.on_close.append(lambda sub: self._unsubscribe(job, sub))
        return subscription

    def _unsubscribe(self, job: _Job, subscription: Subscription) -> None:
        with self._lock, contextlib.suppress(ValueError):
            job.subscribers.remove(subscription)

    def drawing_from(self, run_id: str) -> bool:
        """Whether a render job drawing run ``run_id``'s placements is queued or running."""
        with self._lock:
            return any(job.kind == "render" and job.spec.get("source_run") == run_id
                       and job.state not in FINAL_STATES for job in self._jobs.values())

    def targets(self) -> set[Path]:
        """The target pictures of the make jobs still queued or running."""
        with self._lock:
            return {Path(job.spec["target"]) for job in self._jobs.values()
                    if job.kind == "make" and job.state not in FINAL_STATES}

    def active(self) -> list[str]:
        """The ids of the jobs queued or running."""
        with self._lock:
            return [job.id for job in self._jobs.values() if job.state not in FINAL_STATES]

    # -- stopping -----------------------------------------------------------------------

    def cancel(self, job_id: str) -> bool:
        """Cancel job ``job_id`` and wait until it has ended.

        A queued job is dropped; a running one gets SIGTERM, then SIGKILL
        after :data:`CANCEL_GRACE_SECONDS`. Blocks until the job's process
        group is gone and its run is marked ``cancelled`` (a few seconds at
        most): call it from a worker thread, not an event loop.

        Returns
        -------
        bool
            Whether the job was cancelled (False: no such job, or it had
            ended already).
        """
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state in FINAL_STATES:
                return False
            job.cancel_requested = True
            if job.process is None:
                # Not started: it never will be.
                with contextlib.suppress(ValueError):
                    self._waiting[job.lane].remove(job.id)
                if job.state == "queued":
                    self._finish(job, "cancelled", None, None)
                    return True
        self._stop(job)
        return job.state == "cancelled"

    def _stop(self, job: _Job) -> None:
        """Terminate a started job's process group and wait for its reader to finish it."""
        # The launcher may be starting it right now; it then sees cancel_requested.
        deadline = time.monotonic() + KILL_WAIT_SECONDS
        while job.process is None and not job.finished.is_set():
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        if job.process is not None:
            self._signal(job, signal.SIGTERM)
            if not job.finished.wait(CANCEL_GRACE_SECONDS):
                self._signal(job, signal.SIGKILL)
        job.finished.wait(KILL_WAIT_SECONDS)

    def _signal(self, job: _Job, number: int) -> None:
        """Signal a job's process group, unless its leader has been reaped (its id is free)."""
        with self._lock:
            if job.process is not None and not job.exited:
                _signal_group(job.process.pid, number)

    def shutdown(self) -> None:
        """Cancel every job, wait for their processes to end and stop the launcher.

        Afterwards no new job can start. Safe to call twice.
        """
        with self._lock:
            self._closing = True
            ids = [job.id for job in self._jobs.values() if job.state not in FINAL_STATES]
        # Queued ones first, so that none starts while the running ones stop.
        for job_id in sorted(ids, key=lambda item: self._jobs[item].process is not None):
            self.cancel(job_id)
        self._launches.put(None)
        self._launcher.join(KILL_WAIT_SECONDS)

    # -- running ------------------------------------------------------------------------

    def _pump(self) -> None:
        """Hand waiting jobs to the launcher while their lane has room (lock held)."""
        if self._closing:
            return
        for lane, waiting in self._waiting.items():
            running = sum(1 for job in self._jobs.values()
                          if job.lane == lane and job.state == "running")
            while waiting and running < self.max_parallel:
                job = self._jobs[waiting.popleft()]
                job.state = "running"
                running += 1
                if job.run_id is not None:
                    with contextlib.suppress(MosaicistError):
                        self.history.transition(job.run_id, ("queued",), status="running")
                self._launches.put(job)

    def _launch_loop(self) -> None:
        while True:
            job = self._launches.get()
            if job is None:
                return
            try:
                self._launch(job)
            except Exception as error:  # noqa: BLE001 - the job fails, the studio goes on
                with self._lock:
                    self._finish(job, "failed", f"the job could not start: {error}", None)

    def _launch(self, job: _Job) -> None:
        with self._lock:
            if job.cancel_requested or self._closing:
                self._finish(job, "cancelled", None, None)
                return
        read_end, write_end = os.pipe()
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "mosaicist.studio._worker", str(write_end),
                 str(os.getpid())],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                pass_fds=(write_end,), start_new_session=True, close_fds=True,
                env=os.environ | {"PYTHONUNBUFFERED": "1"},
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        with self._lock:
            job.process = process
        assert process.stdin is not None and process.stderr is not None
        threading.Thread(target=self._read_log, args=(job, process.stderr),
                         name=f"mosaicist-job-log-{job.id[:8]}", daemon=True).start()
        threading.Thread(target=self._follow, args=(job, process, read_end),
                         name=f"mosaicist-job-{job.id[:8]}", daemon=True).start()
        try:
            process.stdin.write(json.dumps(job.spec).encode())
            process.stdin.close()
        except OSError:
            pass  # it died at once: its reader reports why

    def _read_log(self, job: _Job, stream: Any) -> None:
        """Keep the tail of a job's stderr; pass the library's own lines on as log events."""
        with stream:
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip()
                if not line:
                    continue
                with self._lock:
                    job.log.append(line)
                    if line.startswith("mosaicist: ") and job.log_events < LOG_EVENTS:
                        job.log_events += 1
                        self._publish(job, JobEvent("log", job.stage, job.done, job.total,
                                                    line[len("mosaicist: "):], job.base()))

    def _follow(self, job: _Job, process: subprocess.Popen[bytes], read_end: int) -> None:
        """Read a job's events until its process ends; then finish the job."""
        final: dict[str, Any] | None = None
        buffer = b""
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            os.set_blocking(read_end, False)
            exited = False
            while final is None:
                # The pipe ends when every holder is gone; the leader's own exit
                # ends the reading too, should one of its children outlive it.
                readable, _, _ = select.select([pipe], [], [], FOLLOW_POLL_SECONDS)
                chunk = b""
                if readable:
                    with contextlib.suppress(BlockingIOError):
                        chunk = pipe.read(65536) or b""
                    if not chunk:
                        break  # end of file
                elif exited:
                    break  # drained after the leader's exit
                else:
                    exited = _has_exited(process)
                    continue
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    if event.get("kind") in ("done", "failed"):
                        final = event
                    elif event.get("kind") == "progress":
                        self._progress(job, event)
        # The leader's exit does not end its group: take down any process left in it.
        returncode = _wait_and_clear_group(process, job, self._lock)
        if final is not None and final["kind"] == "done" and returncode == 0 \
                and not job.cancel_requested:
            self._complete(job, final.get("data") or {})
        elif job.cancel_requested:
            with self._lock:
                self._finish(job, "cancelled", None, None)
        elif final is not None and final["kind"] == "failed":
            with self._lock:
                self._finish(job, "failed", str(final.get("message") or "the job failed"), None)
        else:
            with self._lock:
                self._finish(job, "failed", self._crash_sentence(job, returncode), None)
        if job.run_id is not None and self.on_run_end is not None:
            self.on_run_end(job.run_id)

    def _progress(self, job: _Job, event: dict[str, Any]) -> None:
        with self._lock:
            job.stage = str(event.get("stage") or "")
            job.done = float(event.get("done") or 0)
            total = event.get("total")
            job.total = None if total is None else float(total)
            self._publish(job, JobEvent("progress", job.stage, job.done, job.total,
                                        data=job.base()))

    def _complete(self, job: _Job, data: dict[str, Any]) -> None:
        """A job that succeeded: record its run, then tell its subscribers."""
        if job.run_id is not None:
            outputs = {kind: name for kind, name in (data.get("outputs") or {}).items()
                       if kind in OUTPUT_FILES}
            try:
                run = self.history.transition(job.run_id, ("running", "queued"),
                                              status="done", outputs=outputs,
                                              report=data.get("report"), error=None)
            except MosaicistError as error:
                with self._lock:
                    self._finish(job, "failed", f"The finished mosaic could not be recorded: "
                                                f"{error}", None)
                return
            if run is None:  # deleted or cancelled meanwhile
                with self._lock:
                    self._finish(job, "cancelled", None, None, record=False)
                return
        with self._lock:
            self._finish(job, "done", None, data, record=False)

    def _finish(self, job: _Job, state: str, error: str | None, result: dict[str, Any] | None,
                record: bool = True) -> None:
        """Give a job its final state, record its run, tell its subscribers (lock held)."""
        if job.state in FINAL_STATES:
            return
        job.state, job.error, job.result = state, error, result
        if job.run_id is not None and record:
            # The job ends whatever the history can take (a full disk...): its
            # subscribers and the queue must not wait for it.
            with contextlib.suppress(MosaicistError):
                self.history.transition(job.run_id, ("queued", "running"), status=state,
                                        error=error)
            # A run that did not finish keeps no file: none is half-written, and
            # none of its outputs would be listed.
            clear_folder(self.history.folder(job.run_id))
        event = self._final_event(job)
        self._publish(job, event)
        job.subscribers.clear()
        job.finished.set()
        self._pump()

    def _final_event(self, job: _Job) -> JobEvent:
        return JobEvent(job.state, job.stage, job.done, job.total, job.error or "",
                        job.base() | ({"result": job.result} if job.result else {}))

    def _publish(self, job: _Job, event: JobEvent) -> None:
        for subscription in list(job.subscribers):
            subscription.put(event)

    def _crash_sentence(self, job: _Job, returncode: int) -> str:
        if returncode < 0:
            try:
                name = signal.Signals(-returncode).name
            except ValueError:
                name = f"signal {-returncode}"
            why = " (the system may have run out of memory)" if -returncode == signal.SIGKILL \
                else ""
            return f"The job's process was killed by {name}{why} before it finished."
        last = next((line for line in reversed(job.log) if line.strip()), "")
        detail = f": {last[:200]}" if last and not last.startswith(" ") else ""
        return f"The job's process stopped unexpectedly with exit status {returncode}{detail}."

    def _forget_old(self) -> None:
        """Forget the oldest finished jobs beyond :data:`FINISHED_KEPT` (lock held)."""
        finished = sorted((job for job in self._jobs.values() if job.state in FINAL_STATES),
                          key=lambda job: job.created)
        for job in finished[:max(0, len(finished) - FINISHED_KEPT)]:
            del self._jobs[job.id]


def _signal_group(group: int, number: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, number)


def _has_exited(process: subprocess.Popen[bytes]) -> bool:
    """Whether a job's leader has exited (it is not reaped: see :func:`_wait_and_clear_group`)."""
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _wait_and_clear_group(process: subprocess.Popen[bytes], job: _Job,
                          lock: threading.RLock) -> int:
    """Wait for a job's leader to exit, kill what is left of its group, then reap it.

    The leader is waited for without being reaped (``WNOWAIT``): until it is
    reaped its PID, the group's id, cannot be given to another process, so
    the group is killed, and the job marked as exited (under ``lock``, which
    every signal to the group is sent under), before it is.
    """
    with contextlib.suppress(ChildProcessError, InterruptedError):
        os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
    with lock:
        _signal_group(process.pid, signal.SIGKILL)
        job.exited = True
    return process.wait()
