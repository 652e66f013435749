"""Where the work runs: the ``--scheduler`` address and the Dask client for it.

``--scheduler`` takes three forms:

``tcp://HOST:PORT`` (or ``tls://``, or a bare ``HOST:PORT``)
    A running Dask scheduler (``dask scheduler``) with its workers
    (``dask worker``); the client connects and leaves it running. What
    answers there is asked first (:func:`check_scheduler`): nothing, a
    server of another protocol, or a worker's address, is one line within
    seconds.
``local``
    A :class:`distributed.LocalCluster` of one worker process per usable
    core (:func:`mosaicist._runtime.worker_count`), started for the run and
    stopped after it.
``local:N``
    The same with ``N`` worker processes.

A local cluster listens on 127.0.0.1 only (scheduler, workers and their
status pages), each worker is one process of one thread (decoding and the
exact search are CPU-bound and release the GIL only in part), and it is
stopped however the block ends. Ctrl+C or SIGTERM while it starts is held
until it has started (a second one is not), then the cluster is stopped and
the signal takes its usual course; its workers ignore Ctrl+C, which a
terminal sends them too, from the moment they start
(:func:`_workers_start_with_interrupts_blocked`, :mod:`._local_worker`):
the run stops them.

While a run waits on its tasks, a scheduler lost, or a cluster left without
workers for :data:`NO_WORKER_SECONDS`, ends it in one line
(:func:`task_result`, :func:`completed`) instead of a traceback or a wait
for ever. Dask is imported only here, when a client is asked for, so that a
run without ``--scheduler`` never imports it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, ClassVar

from .._runtime import THREADS_ENV, worker_count
from ..errors import MosaicistError, OptionError, counted, install_extra, printable
from ..sources import TileSource, source_spec
from ..sources.base import path_text

if TYPE_CHECKING:
    from distributed import Client, Future, LocalCluster

#: Most worker processes ``local:N`` starts.
MOST_LOCAL_WORKERS = 256
#: Starts of a local cluster tried, when one of its worker processes dies as it starts.
LOCAL_STARTS = 3
#: Seconds to wait for a remote scheduler to answer before giving up.
CONNECT_SECONDS = 10
#: Seconds a connection refused (nothing listens there) is tried again before the run
#: says so: a scheduler started a moment before may not listen yet, and a port mistyped
#: was 10 s of Dask's retries before its one line.
REFUSED_SECONDS = 3
#: Seconds a run waits on its tasks while the cluster has no worker, before it stops.
NO_WORKER_SECONDS = 60
#: Seconds a run waits on its tasks while the scheduler does not answer (stopped, hung).
NO_ANSWER_SECONDS = 60
#: Seconds between checks that the cluster still has a worker, while a run waits.
WATCH_SECONDS = 1
#: Seconds a connected scheduler has to answer, past the connection's own time.
_ANSWER_SECONDS = 2

#: Dask settings of a local cluster (the same suit ``dask worker`` processes:
#: see docs/cluster.md):
#:
#: * the workers' housekeeping (stack samples for the dashboard's profiles,
#:   system and memory monitors) at a slower pace, about 1% of a core per
#:   process when idle instead of 3 to 4%;
#: * the C library's memory allocator left as it is in any other process.
#:   Dask sets ``MALLOC_TRIM_THRESHOLD_`` for its workers, which also turns
#:   off glibc's growing threshold for mapping large blocks: every buffer of a
#:   decoded photo was then mapped afresh and faulted in page by page (20
#:   times the page faults, 9% more CPU time indexing 12-megapixel photos).
LOCAL_SETTINGS = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.interval": "1s",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.tick.interval": "100ms",
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
}

#: The module a local cluster's workers preload (their Ctrl+C ignored).
LOCAL_WORKER_PRELOAD = "mosaicist.distributed._local_worker"

_REMOTE = re.compile(r"(?:(?P<scheme>tcp|tls)://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+)"
                     r":(?P<port>[0-9]{1,5})/?")
#: A count of local workers: ASCII digits only (``str.isdigit`` takes "²", which int() refuses).
_COUNT = re.compile(r"[0-9]+")
_DASK_WHERE = re.compile(r"^in <[^>]*>: ")
#: What a connection that fails at once says of a host that is there, but not the
#: scheduler (refused), or of one that cannot be reached at all: retrying for long changes
#: nothing (a name not found, which may be the resolver's time out, is retried as Dask does).
_REFUSALS = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)
#: The Python words before an operating system's own ("ConnectionRefusedError: [Errno 111] ").
_PYTHON_WORDS = re.compile(r"^(?:[A-Za-z]+(?:Error|Exception): )?(?:\[Errno -?[0-9]+\] )?")
_INSTALL_HINT = f"--scheduler needs Dask: {install_extra('dask')}"


@dataclass(frozen=True)
class Scheduler:
    """A parsed ``--scheduler`` value.

    Attributes
    ----------
    address : str or None
        The remote scheduler's address (``tcp://host:8786``); None for a
        local cluster.
    workers : int
        Worker processes of a local cluster (0 for a remote scheduler).
    """

    address: str | None
    workers: int = 0

    @property
    def local(self) -> bool:
        """Whether the run starts its own cluster on this machine."""
        return self.address is None

    def __str__(self) -> str:
        return self.address if self.address is not None else f"local:{self.workers}"


def parse_scheduler(text: str) -> Scheduler:
    """Read a ``--scheduler`` value.

    Parameters
    ----------
    text : str
        ``tcp://HOST:PORT``, ``tls://HOST:PORT``, ``HOST:PORT``, ``local`` or
        ``local:N``.

    Returns
    -------
    Scheduler
        The address, or the number of local workers.

    Raises
    ------
    OptionError
        For anything else, naming ``scheduler``.

    Examples
    --------
    >>> parse_scheduler("local:2")
    Scheduler(address=None, workers=2)
    >>> parse_scheduler("10.0.0.5:8786").address
    'tcp://10.0.0.5:8786'
    """
    value = text.strip()
    if value == "local":
        return Scheduler(None, worker_count())
    if value.startswith("local:"):
        count = value[len("local:"):]
        # Leading zeros off, and a few digits at most: Python refuses to read numbers of
        # thousands of digits (a traceback, not this one line).
        digits = count.lstrip("0")[:5] or "0"
        if not _COUNT.fullmatch(count) or not 1 <= int(digits) <= MOST_LOCAL_WORKERS:
            raise OptionError("{scheduler} local:N needs N from 1 to {most}, got {value!r}",
                              most=MOST_LOCAL_WORKERS, value=text)
        return Scheduler(None, int(digits))
    match = _REMOTE.fullmatch(value)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise OptionError("{scheduler} must be tcp://HOST:PORT, local or local:N, got {value!r}",
                          value=text)
    return Scheduler(f"{match['scheme'] or 'tcp'}://{match['host']}:{match['port']}")


@contextlib.contextmanager
def client_for(address: str | Scheduler, *, quiet: bool = True) -> Iterator[Client]:
    """A Dask client for ``address``, for the duration of the block.

    ``local`` and ``local:N`` start a local cluster bound to 127.0.0.1
    and stop it (workers included) when the block ends, however it ends; a
    remote scheduler is connected to, and left running.

    Parameters
    ----------
    address : str or Scheduler
        A ``--scheduler`` value (see :func:`parse_scheduler`).
    quiet : bool
        Keep Dask's own log lines (warnings included) off stderr.

    Yields
    ------
    distributed.Client
        The client; ``client.scheduler_info()["workers"]`` lists the workers.

    Raises
    ------
    OptionError
        For an address that cannot be read.
    MosaicistError
        When Dask is not installed, or the scheduler cannot be reached.

    Examples
    --------
    >>> with client_for("local:2") as client:  # doctest: +SKIP
    ...     client.submit(sum, [1, 2]).result()
    3
    """
    scheduler = address if isinstance(address, Scheduler) else parse_scheduler(address)
    try:
        import distributed
    except ImportError:
        raise MosaicistError(_INSTALL_HINT) from None
    level = logging.ERROR if quiet else logging.WARNING
    if scheduler.local:
        # Its scheduler runs in this process: the tasks it logs as failed (their workers
        # died: "marked as failed because 4 workers died", "Couldn't gather keys") are
        # the run's to say, in its own one line.
        with _quiet_dask(level), _quiet_dask(logging.CRITICAL if quiet else level,
                                             _LOCAL_SCHEDULER_LOGGERS), \
                _local_client(scheduler.workers, level) as client:
            yield client
        return
    with _quiet_dask(level), _without_reconnect_noise():
        # Asked first, on a connection of its own: Dask's client waits for ever on a
        # peer that accepts and says nothing, and on one that speaks another protocol
        # (a status page's port, a worker's) it fails with an error of any kind and
        # leaves a half-made client whose exit takes 20 s and prints a traceback.
        remote = scheduler.address
        assert remote is not None
        check_scheduler(remote)
        from distributed.versions import VersionMismatchWarning

        try:
            with warnings.catch_warnings(record=True) as said:
                # Dask warns of other versions on the cluster with a table of many lines,
                # the source line of its call and all, -q or not: said in one line here.
                warnings.simplefilter("always", VersionMismatchWarning)
                client = distributed.Client(remote, timeout=CONNECT_SECONDS,
                                            set_as_default=False)
        except Exception as error:  # noqa: BLE001 - any failure to connect is one line
            raise MosaicistError(f"{remote}: cannot reach the Dask scheduler "
                                 f"({_reason(error)})") from None
        for warning in said:
            if not isinstance(warning.message, VersionMismatchWarning):
                warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                       warning.lineno, source=warning.source)
            elif not quiet:
                print(printable(f"mosaicist: warning: {versions_differ(str(warning.message))}"),
                      file=sys.stderr)
        try:
            yield client
        except BaseException:
            # A client that lost its scheduler logs the cancelling of its reconnecting
            # as an error with a traceback (whatever the level of "distributed"): the
            # run has its own one line to say.
            with _silent_dask():
                client.close()
            raise
        else:
            client.close()


def check_scheduler(address: str, seconds: float | None = None) -> None:
    """Make sure a Dask scheduler answers at ``address``, within about ``seconds``.

    Connects as a client does (with Dask's TLS settings for ``tls://``), asks
    the server who it is, and disconnects, on a thread of its own, so that
    nothing here waits much longer than ``seconds`` (default
    :data:`CONNECT_SECONDS`) whatever the other end does.

    Parameters
    ----------
    address : str
        ``tcp://HOST:PORT`` or ``tls://HOST:PORT``.
    seconds : float, optional
        How long to keep trying to connect.

    Raises
    ------
    MosaicistError
        In one line: nothing answers (refused, no route, unknown host), TLS
        is not set up, the other end says nothing, speaks another protocol,
        or is a Dask worker or nanny rather than the scheduler.
    """
    seconds = CONNECT_SECONDS if seconds is None else seconds
    if address.startswith("tls://"):
        from distributed.security import Security

        if Security().get_connection_args("client").get("ssl_context") is None:
            raise MosaicistError(f"{address}: tls:// needs Dask's TLS settings (the "
                                 f"distributed.comm.tls options of the Dask configuration: "
                                 f"ca-file, client.cert, client.key)")
    outcome: dict[str, Any] = {}
    thread = threading.Thread(target=_ask_identity, args=(address, seconds, outcome),
                              name="mosaicist-scheduler-check", daemon=True)
    thread.start()
    # A daemon thread, joined for a bounded time: a name lookup that hangs is not waited for.
    thread.join(seconds + 2 * _ANSWER_SECONDS)
    error = outcome.get("error")
    if "identity" not in outcome and error is None or outcome.get("timed_out"):
        # Dask's connect gives up with an OSError after ``seconds``: what outlasts
        # it was connected, and then sent nothing (a server of another protocol
        # that waits for its client to speak first, a scheduler that hangs).
        raise MosaicistError(f"{address}: no Dask scheduler answers there (it accepted the "
                             f"connection but never answered)")
    if isinstance(error, _Refused):
        raise MosaicistError(f"{address}: cannot reach the Dask scheduler ({error}); is "
                             f"'dask scheduler' running there, and is --scheduler its address?")
    if isinstance(error, OSError):
        raise MosaicistError(f"{address}: cannot reach the Dask scheduler ({_reason(error)})")
    if error is not None:
        # Bytes of another protocol read as a Dask message fail in any way, a
        # MemoryError for a length of exabytes among them.
        raise MosaicistError(f"{address}: not a Dask scheduler (it answered in another "
                             f"protocol)")
    identity = outcome["identity"]
    kind = identity.get("type") if isinstance(identity, dict) else None
    if kind in ("Worker", "Nanny"):
        scheduler = identity.get("scheduler")
        hint = f" ({scheduler})" if isinstance(scheduler, str) else ""
        raise MosaicistError(f"{address}: this is a Dask {kind.lower()}, not the scheduler; "
                             f"give --scheduler the scheduler's address{hint}")
    if not isinstance(kind, str):
        raise MosaicistError(f"{address}: not a Dask scheduler (it did not say what it is)")


def _ask_identity(address: str, seconds: float, outcome: dict[str, Any]) -> None:
    """On a thread: connect to ``address``, ask its identity, and note what happened."""
    import asyncio

    from distributed.comm import connect
    from distributed.security import Security

    async def ask() -> None:
        arguments = Security().get_connection_args("client")
        comm = await _connect(connect, address, seconds, arguments)
        try:
            await comm.write({"op": "identity", "reply": True})
            outcome["identity"] = await comm.read()
        finally:
            comm.abort()

    async def bounded() -> None:
        # Dask's connect reads the other end's handshake without a time limit.
        await asyncio.wait_for(ask(), seconds + _ANSWER_SECONDS)

    try:
        asyncio.run(bounded())
    except TimeoutError:
        outcome["timed_out"] = True
    except BaseException as error:  # noqa: BLE001 - reported by check_scheduler
        outcome["error"] = error


class _Refused(OSError):
    """A connection refused (or without a route) for :data:`REFUSED_SECONDS`: said at once."""


async def _connect(connect: Any, address: str, seconds: float, arguments: dict[str, Any]
                   ) -> Any:
    """Dask's ``connect`` to ``address`` for ``seconds``, or :class:`_Refused` much sooner.

    Dask tries again until its time is up whatever the failure: a port
    where nothing listens took all of :data:`CONNECT_SECONDS` to say so. A
    refusal that lasts :data:`REFUSED_SECONDS` ends the wait; any other
    failure (no answer, a name not found) has the rest of the time, as
    before, and is said as Dask says it over the whole time.
    """
    first = min(seconds, REFUSED_SECONDS)
    try:
        return await connect(address, timeout=first, **arguments)
    except OSError as error:
        # On a loaded machine Dask's last try may be cut off by the time, its cause then
        # no answer rather than the refusal: one plain connection says which it is.
        refusal = _refusal(error) or await _refused_now(address)
        if refusal is not None:
            raise _Refused(refusal) from None
        if first >= seconds:
            raise
    try:
        return await connect(address, timeout=seconds - first, **arguments)
    except OSError as error:
        if not str(error).startswith("Timed out trying to connect"):
            raise
        # Said over the whole wait ("after 10 s"), with the last failure as its cause.
        raise OSError(f"Timed out trying to connect to {address} after {seconds:g} s"
                      ) from error.__cause__


async def _refused_now(address: str) -> str | None:
    """The operating system's words if a plain TCP connection to ``address`` is refused now.

    None for an address of another protocol, one that takes the connection (closed at
    once) or one that does not answer within a second.
    """
    import asyncio
    import urllib.parse

    parts = urllib.parse.urlsplit(address)
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if parts.scheme != "tcp" or host is None or port is None:
        return None
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=1.0)
    except TimeoutError:
        return None
    except OSError as error:
        # The system's words: asyncio's own ("Connect call failed (...)") name no reason.
        return os.strerror(error.errno).lower() if error.errno in _REFUSALS else None
    writer.close()
    return None


def _refusal(error: BaseException) -> str | None:
    """The operating system's words for a refused connection behind ``error``, or None."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in _REFUSALS:
            return (cause.strerror or os.strerror(cause.errno)).lower()
        cause = cause.__cause__ or cause.__context__
    return None


def worker_addresses(client: Client) -> list[str]:
    """The addresses of the workers the scheduler knows now, sorted.

    Parameters
    ----------
    client : distributed.Client
        The cluster.

    Returns
    -------
    list of str
    """
    return sorted(client.nthreads())


def not_shared(path: object, what: str, shared: str = "cache",
               where: str = "this worker") -> MosaicistError:
    """The one-line error of a worker that does not see ``what`` (at ``path``).

    Workers read the library, the cache and the outputs at the paths the
    client gives (docs/cluster.md): what one does not see is a filesystem
    that is not shared, named as such. ``where`` is ``"a worker"`` where the
    client says it of a worker's result.
    """
    return MosaicistError(f"{path}: {what} is not on {where}; the {shared} must be on a "
                          f"filesystem every worker shares")


def worker_spec(source: TileSource) -> str:
    """The spec by which the workers open ``source``: its path as the path itself.

    :func:`~mosaicist.sources.source_spec` is text (placements files and
    reports hold it), where a path that is not UTF-8 is escaped
    (``caf\\xe9``, :func:`~mosaicist.sources.base.path_text`): no worker found
    that path, and a run on a cluster failed saying the folder or file was not
    there. Here such a path is given as the name :func:`os.fsdecode` gives,
    which Dask pickles as it is.

    Parameters
    ----------
    source : TileSource
        An opened source.

    Returns
    -------
    str
        A spec that :func:`~mosaicist.sources.open_source` resolves to ``source``.
    """
    spec = source_spec(source)
    # A folder's root; an array file's, or a local CIFAR copy's, path.
    for path in (getattr(source, "root", None), getattr(source, "_path", None)):
        if isinstance(path, os.PathLike):
            name = os.fspath(path)
            text = path_text(name)
            if text != name and text in spec:
                return spec.replace(text, name, 1)
    return spec


def require_workers(client: Client, seconds: float | None = None) -> int:
    """Wait until the cluster has a worker (up to ``seconds``); return how many it has.

    Parameters
    ----------
    client : distributed.Client
        The cluster.
    seconds : float, optional
        The longest wait (default :data:`CONNECT_SECONDS`, as it is at the call).

    Returns
    -------
    int
        The workers the scheduler knows once one has joined.

    Raises
    ------
    MosaicistError
        When no worker joined in time, or the client lost its scheduler.
    """
    if client.status in ("closing", "closed"):
        _check_connected(client)  # Dask's wait fails on it with an AttributeError
    try:
        # A client reconnecting to its scheduler waits here, and goes on if it is back.
        client.wait_for_workers(1, timeout=CONNECT_SECONDS if seconds is None else seconds)
    except TimeoutError:
        # A scheduler lost between two stages of a run (killed, its machine gone): the
        # client reconnected in vain and closed, and the wait said it had no workers
        # ("the Dask scheduler at  has no workers", its address forgotten).
        _check_connected(client)
        address = _client_address(client)
        raise MosaicistError(f"the Dask scheduler at {address} has no workers; start some "
                             f"with 'dask worker {address}'") from None
    except OSError:
        # Not the wait's end (a TimeoutError, itself an OSError): its connection failed,
        # the scheduler gone while the client had yet to notice.
        raise lost_scheduler(client) from None
    _check_imports(client)
    try:
        return len(worker_addresses(client))
    except OSError:
        # Lost since the wait: Dask's error names its connection's objects and Python's
        # errors ("in <TCP (closed) ...>: ConnectionResetError: [Errno 104] ...").
        raise lost_scheduler(client) from None


def _client_address(client: Client) -> str:
    """The address of ``client``'s scheduler, also once the client has lost it (or "").

    Dask forgets it as a client that lost its scheduler closes
    (``scheduler_info()`` is then empty, ``client.scheduler`` None): the
    address the client was made with, or its local cluster's, is kept.
    """
    for owner, name in (("scheduler", "address"), ("cluster", "scheduler_address"),
                        (None, "_start_arg")):
        with contextlib.suppress(Exception):
            holder = client if owner is None else getattr(client, owner, None)
            address = getattr(holder, name, None)
            # A closed cluster's is "<Not Connected>".
            if isinstance(address, str) and "://" in address:
                return address
    return ""


def lost_scheduler(client: Client | None, kept: str = "") -> MosaicistError:
    """The one-line error of a run whose client lost its scheduler (naming it), then ``kept``."""
    address = _client_address(client) if client is not None else ""
    where = f" at {address}" if address else ""
    return MosaicistError(f"lost the connection to the Dask scheduler{where}; its tasks are "
                          f"cancelled{kept}")


def _check_connected(client: Client) -> None:
    """Refuse to go on with a client that lost its scheduler (reconnecting, or closed).

    Raises
    ------
    MosaicistError
        Naming the scheduler.
    """
    if not _connected(client):
        raise lost_scheduler(client)


def versions_differ(table: str) -> str:
    """Dask's table of the versions a cluster mixes, as one line.

    Parameters
    ----------
    table : str
        The text of a ``VersionMismatchWarning`` (``Mismatched versions
        found``, then rows of package, client, scheduler and workers).

    Returns
    -------
    str
        ``the Dask cluster runs other versions than this machine (numpy:
        2.4.6 here, 1.26.4 on the workers); ...``.
    """
    differences = []
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not line.lstrip().startswith("|") or cells[0] == "Package":
            continue
        package, here, scheduler, workers = (_version_text(cell) for cell in cells)
        places = [f"{here} here"]
        if scheduler != here:
            places.append(f"{scheduler} on the scheduler")
        if workers != here:
            places.append(f"{workers} on the workers")
        differences.append(f"{package}: {', '.join(places)}")
    listed = f" ({'; '.join(differences)})" if differences else ""
    return (f"the Dask cluster runs other versions than this machine{listed}; its results may "
            f"differ from this machine's: install the same versions on every machine")


def _version_text(cell: str) -> str:
    """A cell of Dask's table of versions in plain words ("3.11.7", "none", "a, b")."""
    text = re.sub(r"\.final\.0\b", "", cell)  # Python's own: "3.11.7.final.0"
    if text.startswith("{") and text.endswith("}"):  # the workers' several versions
        text = ", ".join(sorted(part.strip().strip("'\"") for part in text[1:-1].split(",")))
    return "none" if text in ("None", "MISSING", "UNKNOWN", "") else text


#: What a worker says of the mosaicist it runs: an expression any version can answer.
_WORKER_VERSION = "__import__('mosaicist').__version__"


def _check_imports(client: Client) -> None:
    """Make sure every worker can import mosaicist, whose functions its tasks are.

    A worker without it dies reading its first task (Dask unpickles tasks on
    its connection to the scheduler): the run then said its cluster had lost
    every worker, or that its tasks had killed them (out of memory?).
    ``eval`` of an import is sent, which any worker can unpickle; it answers
    with the version it imports, which must be this machine's (another
    version's tasks, or index, are not this one's: the run went on).

    Raises
    ------
    MosaicistError
        Naming the first worker that cannot, and why, or that runs another
        version of mosaicist.
    """
    from .. import __version__

    outcome: dict[str, dict[str, Any]] = {}

    def ask() -> None:
        with contextlib.suppress(Exception):  # a scheduler gone: the run says so itself
            outcome["answers"] = client.run(eval, _WORKER_VERSION, on_error="return")

    # On a thread, joined for a bounded time: a worker that does not answer (stopped,
    # its machine hung) is Dask's to drop, not a reason to wait here.
    thread = threading.Thread(target=ask, name="mosaicist-worker-check", daemon=True)
    thread.start()
    thread.join(CONNECT_SECONDS)
    for worker, answer in sorted(outcome.get("answers", {}).items()):
        if isinstance(answer, ImportError):
            reason = f"{type(answer).__name__}: {answer}"
            raise MosaicistError(f"{worker}: this Dask worker cannot import mosaicist "
                                 f"({reason}); install the same mosaicist, with the same "
                                 f"extras, on every worker")
        if isinstance(answer, str) and answer != __version__:
            raise MosaicistError(f"{worker}: this Dask worker runs mosaicist {answer}, this "
                                 f"machine {__version__}; install the same mosaicist, with the "
                                 f"same extras, on every worker")


def task_result(future: Future, killed: str, *, kept: str = "") -> Any:
    """A task's result, or the one-line reason it failed.

    Parameters
    ----------
    future : distributed.Future
        The task.
    killed : str
        What to say when the task killed every worker it was given to.
    kept : str
        Said after a lost scheduler: what the run keeps of its work.

    Raises
    ------
    MosaicistError
        The task killed its workers, or the connection to the scheduler was
        lost (Dask then cancels every task of the client).
    Exception
        The task's own error, as it raised it.
    """
    from distributed.client import FutureCancelledError
    from distributed.comm import CommClosedError
    from distributed.scheduler import KilledWorker

    watch = WorkerWatch(future.client)
    try:
        while True:
            if future.done():
                return future.result()  # or the task's own error, a TimeoutError included
            try:
                return future.result(timeout=WATCH_SECONDS)
            except TimeoutError:
                # The wait ran out, or the task raised it: asked again above once done
                # (done as the wait ran out, it is no error).
                if not future.done():
                    watch.check()
    except KilledWorker:
        raise MosaicistError(killed) from None
    except CommClosedError:
        # The result's gathering lost its connection: the scheduler went away as the task
        # finished (an OSError, which a caller took for the task's own: "a worker could not
        # write the index: in <TCP (closed) ConnectionPool.gather ...>: Stream is closed").
        raise lost_scheduler(future.client, kept) from None
    except FutureCancelledError as error:
        # Not a cancelling of ours (those futures are not waited for): the
        # scheduler went away, or cancelled it itself.
        # A task submitted while the client was reconnecting is cancelled without a
        # reason when it gives up ("cancelled a task (unknown)"): the scheduler is lost too.
        if error.reason == "scheduler-connection-lost" or not _connected(future.client):
            raise lost_scheduler(future.client, kept) from None
        raise MosaicistError(f"the Dask scheduler{_scheduler_address(future)} cancelled a task "
                             f"({error.reason}){kept}") from None


class WorkerWatch:
    """How long the cluster has had no worker, checked while a run waits on its tasks.

    Dask waits for ever for a worker to run a task that has none: every
    worker of a cluster without nannies gone (killed, out of memory), the
    run waited without a word. Past :data:`NO_WORKER_SECONDS` without one,
    it stops. So it does past :data:`NO_ANSWER_SECONDS` of a scheduler that
    keeps its connections but does not answer (stopped, hung): the question
    itself then waited for ever.

    Parameters
    ----------
    client : distributed.Client
        The cluster.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self.since: float | None = None
        self.silent_since: float | None = None

    def check(self) -> None:
        """Note whether the cluster has a worker now.

        Raises
        ------
        MosaicistError
            When it has had none for :data:`NO_WORKER_SECONDS`, or the
            scheduler has not answered for :data:`NO_ANSWER_SECONDS`.
        """
        try:
            workers = self.client.nthreads(callback_timeout=_ANSWER_SECONDS)
        except TimeoutError:
            self._silent()
            return
        except Exception:  # noqa: BLE001 - a scheduler gone: its tasks are cancelled, not here
            return
        self.silent_since = None
        if workers:
            self.since = None
            return
        now = time.monotonic()
        if self.since is None:
            self.since = now
        elif now - self.since >= NO_WORKER_SECONDS:
            address = _client_address(self.client)
            raise MosaicistError(f"the Dask scheduler at {address} has had no workers for "
                                 f"{NO_WORKER_SECONDS:g} s (all lost?); start some with "
                                 f"'dask worker {address}'")

    def _silent(self) -> None:
        """Note a question the scheduler left unanswered; raise once it has been too long."""
        now = time.monotonic()
        if self.silent_since is None:
            self.silent_since = now
        elif now - self.silent_since >= NO_ANSWER_SECONDS:
            # Its address as this client knows it: asking the scheduler would wait again.
            address = getattr(self.client.scheduler, "address", None)
            where = f" at {address}" if isinstance(address, str) else ""
            raise MosaicistError(f"the Dask scheduler{where} has not answered for "
                                 f"{NO_ANSWER_SECONDS:g} s (stopped, or hung?); the run stops")


def completed(running: Any, watch: WorkerWatch) -> Iterator[Future]:
    """The futures of a :class:`distributed.as_completed` as they finish, checking ``watch``.

    Futures may be added to ``running`` while this is iterated.

    Parameters
    ----------
    running : distributed.as_completed
        The tasks waited on.
    watch : WorkerWatch
        Checked whenever no task finished for a while, so that a cluster
        left without workers ends the wait instead of hanging it.

    Yields
    ------
    distributed.Future
        Each finished task, in the order they finish.

    Raises
    ------
    MosaicistError
        From ``watch``, when the cluster has had no worker for too long.
    """
    while True:
        batch = running.next_batch(block=False)
        if batch:
            yield from batch
            continue
        if running.is_empty():
            return
        with running.thread_condition:
            running.thread_condition.wait(timeout=WATCH_SECONDS)
        if running.queue.empty():
            watch.check()


def _scheduler_address(future: Future) -> str:
    """`` at ADDRESS`` of the scheduler of ``future``'s client, or nothing."""
    with contextlib.suppress(Exception):
        address = _client_address(future.client)
        if address:
            return f" at {address}"
    return ""


def _connected(client: Any) -> bool:
    """Whether ``client`` (a Dask client, or anything else) has not lost its scheduler."""
    return getattr(client, "status", "running") in ("running", "newly-created")


@contextlib.contextmanager
def _local_client(workers: int, level: int) -> Iterator[Client]:
    """A client of a new local cluster, both closed after; started with signals held.

    A ``KeyboardInterrupt`` raised inside Dask's start-up leaves a cluster
    half made, which nothing can close cleanly: Dask's own exit hook then
    fails on it with a long traceback. So Ctrl+C and SIGTERM are held until
    the client is up (:class:`_HeldSignals`); one that came is then
    delivered, once both are closed.
    """
    import distributed

    from .._runtime import resource_tracker_without_hangups

    stack = contextlib.ExitStack()
    held = _HeldSignals()
    try:
        with held, _workers_start_with_interrupts_blocked():
            resource_tracker_without_hangups()  # the spawned workers' semaphores are its
            cluster = stack.enter_context(_local_cluster(workers, level))
            client = distributed.Client(cluster, set_as_default=False)
            stack.callback(client.close)  # closed before its cluster
    except BaseException:
        stack.close()
        if held.received is not None:
            # Ctrl+C reaches the workers too (a terminal signals the whole process
            # group), whose start then fails: what was asked for is to stop.
            held.deliver()
        raise
    if held.received is not None:
        stack.close()
        held.deliver()
    try:
        yield client
    except BaseException:
        # Stopped amid its tasks (an interrupt, an error): the nannies here log the
        # workers they stop, or kill after a few seconds, as warnings of Dask's; the
        # run has its own one line to say.
        with _silent_dask():
            stack.close()
        raise
    stack.close()


class _HeldSignals:
    """In the block, SIGINT, SIGTERM and SIGHUP are noted instead of acted on (main thread).

    Only signals that have their usual action are held (Ctrl+C's
    ``KeyboardInterrupt``; SIGTERM's and SIGHUP's end of the process, or the
    command line's unwinding: :func:`~mosaicist._runtime.usual_terminate_handler`):
    a handler that the application installed is left alone. A second one while held is
    acted on at once, so that a start-up that hangs can still be stopped.
    The previous handlers are back after the block; :meth:`deliver` then
    sends the signal that came, to take its usual course.

    Attributes
    ----------
    received : int or None
        The first signal that came in the block.
    """

    #: The blocks holding signals now (see :func:`_stop_asked`).
    holding: ClassVar[list[_HeldSignals]] = []

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _HeldSignals:
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be set, and only run, in the main thread
        _HeldSignals.holding.append(self)
        from .._runtime import TERMINATING_SIGNALS, usual_interrupt_handler, usual_terminate_handler

        if usual_interrupt_handler(signal.getsignal(signal.SIGINT)):
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._note)
        for number in TERMINATING_SIGNALS:
            if usual_terminate_handler(signal.getsignal(number)):
                self._previous[number] = signal.signal(number, self._note)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._restore()
        with contextlib.suppress(ValueError):
            _HeldSignals.holding.remove(self)

    def _note(self, number: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = number
            return
        self._restore()
        signal.raise_signal(number)  # the second one: its usual action, now

    def _restore(self) -> None:
        for number, handler in self._previous.items():
            if signal.getsignal(number) == self._note:
                signal.signal(number, handler)
        self._previous.clear()

    def deliver(self) -> None:
        """Send the signal that came while held (after the block); raise if it returns."""
        if self.received is not None:
            signal.raise_signal(self.received)
        # Its handler changed meanwhile and let it pass: still, the run was asked to stop.
        raise KeyboardInterrupt


def _stop_asked() -> bool:
    """Whether a signal that a :class:`_HeldSignals` block holds now asked the run to stop."""
    return any(held.received is not None for held in _HeldSignals.holding)


@contextlib.contextmanager
def _workers_start_with_interrupts_blocked() -> Iterator[None]:
    """Start the processes that multiprocessing spawns in the block with SIGINT blocked.

    Ctrl+C reaches the whole process group, a local cluster's worker
    processes too, and one that came while a worker's Python started or
    imported Dask, before it ignores SIGINT (:mod:`._local_worker`),
    printed its ``KeyboardInterrupt`` traceback ("Fatal Python error:
    init_import_site", or one from ``spawn_main``) under the run's one
    line. A process begins with the signal mask of the thread that starts
    it, and Dask starts its workers from threads of its own: so each
    spawn in the block is made with SIGINT blocked in the thread that makes
    it (as :mod:`multiprocessing.resource_tracker` starts its own process);
    the worker then ignores SIGINT, and one that came meanwhile is dropped.
    The main thread's mask stays as it was, so that a second Ctrl+C still
    stops a start-up that hangs (:class:`_HeldSignals`). Dask's default
    start method (spawn) only; the function replaced is multiprocessing's
    own, used by its spawn and forkserver starts.
    """
    from multiprocessing import util

    spawn = getattr(util, "spawnv_passfds", None)
    if spawn is None or not hasattr(signal, "pthread_sigmask"):
        yield
        return

    def spawn_without_interrupts(*args: Any, **kwargs: Any) -> Any:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            return spawn(*args, **kwargs)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    util.spawnv_passfds = spawn_without_interrupts
    try:
        yield
    finally:
        if util.spawnv_passfds is spawn_without_interrupts:
            util.spawnv_passfds = spawn


@contextlib.contextmanager
def _local_cluster(workers: int, level: int) -> Iterator[LocalCluster]:
    """A LocalCluster of ``workers`` single-threaded processes on 127.0.0.1, stopped after.

    A start that failed for a worker process that died as it started is
    tried again, unless a signal held meanwhile asked the run to stop
    (:func:`_stop_asked`): a SIGTERM to the process group ends the workers
    that are starting too, and the whole start was tried again (seconds)
    before the run stopped.
    """
    import dask
    from distributed import LocalCluster
    from distributed.deploy.spec import SpecCluster

    # Each worker's own thread pools (the search's, BLAS's) share this machine's cores
    # with the other workers: without a share each would take them all.
    share = str(max(1, worker_count() // workers))
    environment = {THREADS_ENV: share, "OMP_NUM_THREADS": share, "OPENBLAS_NUM_THREADS": share,
                   "MKL_NUM_THREADS": share}
    with dask.config.set(LOCAL_SETTINGS):
        for start in range(1, LOCAL_STARTS + 1):
            before = set(SpecCluster._instances)
            try:
                # The workers ignore Ctrl+C, which a terminal sends them too: this
                # process stops them (see _local_worker).
                preload = [*dask.config.get("distributed.worker.preload", []),
                           LOCAL_WORKER_PRELOAD]
                cluster = LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                    dashboard_address="127.0.0.1:0", worker_dashboard_address="127.0.0.1:0",
                    silence_logs=level, env=environment, preload=preload,
                )
                break
            except BaseException as error:
                _forget_half_made(set(SpecCluster._instances) - before)
                if _worker_died_starting(error) and start < LOCAL_STARTS and not _stop_asked():
                    # A worker process killed as it started (out of memory, a stray
                    # kill) failed the whole cluster: once running, a killed worker
                    # is replaced by its nanny and costs only time, so does it here.
                    continue
                if isinstance(error, (OSError, TimeoutError, RuntimeError)):
                    raise MosaicistError(
                        f"cannot start a local Dask cluster of {counted(workers, 'worker')} "
                        f"({_reason(error)})") from None
                raise
        try:
            yield cluster
        finally:
            cluster.close()


def _worker_died_starting(error: BaseException) -> bool:
    """Whether a local cluster failed to start because a worker process failed to.

    Dask's words for it: "Nanny failed to start." (the process ended before
    it said it was ready), after "Nanny failed to start worker process".
    """
    return isinstance(error, RuntimeError) and str(error).startswith("Nanny failed to start")


def _forget_half_made(clusters: set[Any]) -> None:
    """Stop clusters whose start was cut short, as far as they stop, and drop them.

    Dask closes every cluster it knows at exit, and fails with a long
    traceback on one cut short (an interrupt inside its start-up): the
    process is ending anyway, and its worker processes end with it.
    """
    from distributed.deploy.spec import SpecCluster

    for cluster in clusters:
        with contextlib.suppress(BaseException):
            cluster.close(timeout=2)
        SpecCluster._instances.discard(cluster)


#: The loggers of a local cluster's scheduler (in the run's own process).
_LOCAL_SCHEDULER_LOGGERS = ("distributed.scheduler",)


@contextlib.contextmanager
def _quiet_dask(level: int, names: tuple[str, ...] = ("distributed", "dask", "tornado")
                ) -> Iterator[None]:
    """Set the level of Dask's loggers (or of ``names``) for the block, and put it back after."""
    loggers = [logging.getLogger(name) for name in names]
    before = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, old in zip(loggers, before, strict=True):
            logger.setLevel(old)


class _NoReconnectNoise(logging.Filter):
    """Leave out the client's log of a scheduler it lost and could not reach again.

    Dask logs it as an error ("Failed to reconnect to scheduler after 10.00
    seconds, closing client") above the run's own line, which says so.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` is kept: any but the client's giving up on its scheduler."""
        return not (isinstance(record.msg, str)
                    and record.msg.startswith("Failed to reconnect to scheduler"))


@contextlib.contextmanager
def _without_reconnect_noise() -> Iterator[None]:
    """No record of a client giving up on its lost scheduler in the block (see above)."""
    client_log = logging.getLogger("distributed.client")
    noise = _NoReconnectNoise()
    client_log.addFilter(noise)
    try:
        yield
    finally:
        client_log.removeFilter(noise)


@contextlib.contextmanager
def _silent_dask() -> Iterator[None]:
    """No log record of Dask's at all in the block (its loggers have levels of their own)."""
    manager = logging.Logger.manager
    names = [name for name in list(manager.loggerDict)
             if name.split(".")[0] in ("distributed", "dask", "tornado")]
    loggers = [logging.getLogger(name) for name in names]
    before = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, before, strict=True):
            logger.setLevel(level)


def _reason(error: BaseException) -> str:
    """The first line of ``error``, with its cause's when Dask's connect gave up on one."""
    text = str(error).strip().splitlines()
    # Dask's comm errors start with the object that failed: "in <TCP ...>: ", and go on
    # with the Python error's name and number: the user reads the words after them.
    reason = _PYTHON_WORDS.sub("", _DASK_WHERE.sub("", text[0])) if text else ""
    if not reason:
        reason = "no answer in time" if isinstance(error, TimeoutError) else \
            type(error).__name__
    cause = error.__cause__
    if reason.startswith("Timed out trying to connect") and cause is not None:
        # Dask retried until its time was up: the last failure says why (a refused
        # connection, an unknown host).
        reason = f"{reason}: {_reason(cause)}"
    return reason
