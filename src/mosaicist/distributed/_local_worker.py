"""Dask preload of a local cluster's workers (``--scheduler local``): Ctrl+C is the run's.

A terminal sends Ctrl+C's SIGINT to every process of its foreground group,
the worker processes of a local cluster among them. Each then printed a
traceback of Dask's (its event loop cancelled, then ``KeyboardInterrupt``)
under the run's one line, while the run itself was already stopping its
cluster, workers included. So a local cluster's workers ignore SIGINT from
the moment Dask imports this module (as the worker is made, before it
takes any task); the run that started them stops them, however it ends.
SIGTERM keeps its usual action.

A worker stopped amid a task also warned of the task's cancelling (Dask's
``distributed.worker.state_machine`` logger, whose only warning that is,
and which Dask says happens only as a worker closes): the run stopping its
own cluster is no news, so that logger keeps to errors here.

A task that raises is logged by its worker too (``Compute Failed``, with
the task's traceback), and a local cluster's workers write to the run's
own stderr: a tile that cannot be drawn printed a screenful of those above
the run's one line. The error goes back to the run, which says it; the
worker's record of it is left out (:class:`NoComputeFailed`).

A worker being stopped amid a heartbeat to the scheduler logged the
heartbeat's failure as an error, with a traceback of Dask's (its connection
closed under it): now and then, a screenful under the run's one line after
a Ctrl+C. A local cluster's scheduler lives in the run's process, so that a
worker that cannot reach it is one the run is stopping, or one whose run
has ended: no news either (:data:`STOPPING_NOISE`).
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from .._runtime import quiet_picture_warnings

logging.getLogger("distributed.worker.state_machine").setLevel(logging.ERROR)


#: The starts of Dask's messages of a worker that lost its scheduler: for a local
#: cluster's worker, the run stopping it (or ended).
STOPPING_NOISE = (
    "Failed to communicate with scheduler during heartbeat",
    "Failed to log closing event",
)


class NoComputeFailed(logging.Filter):
    """Leave out a worker's record of a task that raised (the run reports the error), and
    those of a scheduler lost as the run stops (:data:`STOPPING_NOISE`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` is kept: any but a ``Compute Failed`` or a stopping's noise."""
        if not isinstance(record.msg, str):
            return True
        return not record.msg.startswith(("Compute Failed", *STOPPING_NOISE))


def quiet_task_errors() -> None:
    """Filter the task errors out of Dask's worker logger (once)."""
    worker_log = logging.getLogger("distributed.worker")
    if not any(isinstance(kept, NoComputeFailed) for kept in worker_log.filters):
        worker_log.addFilter(NoComputeFailed())


def ignore_interrupts() -> None:
    """Ignore SIGINT in this process (only the main thread can set a handler)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def dask_setup(worker: Any) -> None:
    """Dask's preload hook, run as the worker starts: SIGINT stays ignored."""
    # Again, in case something set a handler since the import.
    ignore_interrupts()
    quiet_task_errors()
    quiet_picture_warnings()


ignore_interrupts()
quiet_task_errors()
quiet_picture_warnings()
