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
stopped however the block ends. Dask is imported only here, when a client is
asked for, so that a run without ``--scheduler`` never imports it.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._runtime import THREADS_ENV, worker_count
from ..errors import MosaicistError, OptionError

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
_INSTALL_HINT = "--scheduler needs Dask: pip install 'mosaicist[dask]'"


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
        with _quiet_dask(level), _local_cluster(scheduler.workers, level) as cluster:
            client = distributed.Client(cluster, set_as_default=False)
            try:
                yield client
            finally:
                client.close()
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
def _local_cluster(workers: int, level: int) -> Iterator[LocalCluster]:
    """A LocalCluster of ``workers`` single-threaded processes on 127.0.0.1, stopped after."""
    import dask
    from distributed import LocalCluster

    # Each worker's own thread pools (the search's, BLAS's) share this machine's cores
    # with the other workers: without a share each would take them all.
    share = str(max(1, worker_count() // workers))
    environment = {THREADS_ENV: share, "OMP_NUM_THREADS": share, "OPENBLAS_NUM_THREADS": share,
                   "MKL_NUM_THREADS": share}
    with dask.config.set(LOCAL_SETTINGS):
        try:
            cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address="127.0.0.1:0", worker_dashboard_address="127.0.0.1:0",
                silence_logs=level, env=environment,
            )
        except (OSError, TimeoutError, RuntimeError) as error:
            raise MosaicistError(f"cannot start a local Dask cluster of {workers} workers "
                                 f"({_reason(error)})") from None
        try:
            yield cluster
        finally:
            cluster.close()


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
