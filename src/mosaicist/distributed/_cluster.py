"""Where the work runs: the ``--scheduler`` address and the Dask client for it.

``--scheduler`` takes three forms:

``tcp://HOST:PORT`` (or ``tls://``, or a bare ``HOST:PORT``)
    A running Dask scheduler (``dask scheduler``) with its workers
    (``dask worker``); the client connects and leaves it running.
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
the signal takes its usual course. Dask is imported only here, when a client
is asked for, so that a run without ``--scheduler`` never imports it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from .._runtime import THREADS_ENV, worker_count
from ..errors import MosaicistError, OptionError, install_extra

if TYPE_CHECKING:
    from distributed import Client, LocalCluster

#: Most worker processes ``local:N`` starts.
MOST_LOCAL_WORKERS = 256
#: Seconds to wait for a remote scheduler to answer before giving up.
CONNECT_SECONDS = 10

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

_REMOTE = re.compile(r"(?:(?P<scheme>tcp|tls)://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+)"
                     r":(?P<port>\d{1,5})/?")
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
        if not count.isdigit() or not 1 <= int(count) <= MOST_LOCAL_WORKERS:
            raise OptionError("{scheduler} local:N needs N from 1 to {most}, got {value!r}",
                              most=MOST_LOCAL_WORKERS, value=text)
        return Scheduler(None, int(count))
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
        with _quiet_dask(level), _local_client(scheduler.workers, level) as client:
            yield client
        return
    with _quiet_dask(level):
        try:
            client = distributed.Client(scheduler.address, timeout=CONNECT_SECONDS,
                                        set_as_default=False)
        except (OSError, TimeoutError) as error:
            raise MosaicistError(f"{scheduler.address}: cannot reach the Dask scheduler "
                                 f"({_reason(error)})") from None
        try:
            yield client
        finally:
            client.close()


def worker_addresses(client: Client) -> list[str]:
    """The addresses of the workers the scheduler knows now, sorted."""
    return sorted(client.nthreads())


def require_workers(client: Client, seconds: float = CONNECT_SECONDS) -> int:
    """Wait until the cluster has a worker (up to ``seconds``); return how many it has.

    Raises
    ------
    MosaicistError
        When no worker joined in time.
    """
    try:
        client.wait_for_workers(1, timeout=seconds)
    except (OSError, TimeoutError):
        address = client.scheduler_info().get("address", "")
        raise MosaicistError(f"the Dask scheduler at {address} has no workers; start some "
                             f"with 'dask worker {address}'") from None
    return len(worker_addresses(client))


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

    stack = contextlib.ExitStack()
    held = _HeldSignals()
    try:
        with held:
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
    with stack:
        yield client


class _HeldSignals:
    """In the block, SIGINT and SIGTERM are noted instead of acted on (main thread only).

    Only signals that have their usual action are held (Ctrl+C's
    ``KeyboardInterrupt``, SIGTERM's end of the process): a handler that
    the application installed is left alone. A second one while held is
    acted on at once, so that a start-up that hangs can still be stopped.
    The previous handlers are back after the block; :meth:`deliver` then
    sends the signal that came, to take its usual course.

    Attributes
    ----------
    received : int or None
        The first signal that came in the block.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _HeldSignals:
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be set, and only run, in the main thread
        usual = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
        for number, handler in usual.items():
            if signal.getsignal(number) is handler:
                self._previous[number] = signal.signal(number, self._note)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._restore()

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


@contextlib.contextmanager
def _local_cluster(workers: int, level: int) -> Iterator[LocalCluster]:
    """A LocalCluster of ``workers`` single-threaded processes on 127.0.0.1, stopped after."""
    import dask
    from distributed import LocalCluster
    from distributed.deploy.spec import SpecCluster

    # Each worker's own thread pools (the search's, BLAS's) share this machine's cores
    # with the other workers: without a share each would take them all.
    share = str(max(1, worker_count() // workers))
    environment = {THREADS_ENV: share, "OMP_NUM_THREADS": share, "OPENBLAS_NUM_THREADS": share,
                   "MKL_NUM_THREADS": share}
    with dask.config.set(LOCAL_SETTINGS):
        before = set(SpecCluster._instances)
        try:
            cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address="127.0.0.1:0", worker_dashboard_address="127.0.0.1:0",
                silence_logs=level, env=environment,
            )
        except BaseException as error:
            _forget_half_made(set(SpecCluster._instances) - before)
            if isinstance(error, (OSError, TimeoutError, RuntimeError)):
                raise MosaicistError(f"cannot start a local Dask cluster of {workers} workers "
                                     f"({_reason(error)})") from None
            raise
        try:
            yield cluster
        finally:
            cluster.close()


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


@contextlib.contextmanager
def _quiet_dask(level: int) -> Iterator[None]:
    """Set the level of Dask's loggers for the block, and put it back after."""
    loggers = [logging.getLogger(name) for name in ("distributed", "dask", "tornado")]
    before = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, old in zip(loggers, before, strict=True):
            logger.setLevel(old)


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
