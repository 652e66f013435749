"""Running mosaicist on a Dask cluster (``--scheduler``; the ``dask`` extra).

:func:`client_for` gives a :class:`distributed.Client` for a ``--scheduler``
value: a running scheduler (``tcp://host:8786``) or a local cluster started
for the run (``local``, ``local:N``). With it:

- :func:`index_library` indexes a source with the decoding spread over the
  workers, each part into a shard of the index (the same library, tile for
  tile, as one machine makes);
- :func:`cluster_matching` runs the exact matchers on the workers, a block of
  cells per task (the same picks); :func:`make_on_cluster` does both for a
  whole mosaic;
- :func:`write_on_cluster` draws a picture's rows of cells on the workers and
  writes them here (the same file).

The workers must see the library, the cache and the outputs at the same
paths as this process (a shared filesystem). Dask is imported only when a
client is asked for: without ``--scheduler`` nothing here imports it.
"""

from ._cluster import (
    Scheduler,
    WorkerWatch,
    check_scheduler,
    client_for,
    completed,
    parse_scheduler,
    require_workers,
    task_result,
    worker_addresses,
)
from ._index import ClusterDecoder, index_library
from ._make import make_on_cluster
from ._match import ClusterCappedMatcher, ClusterExactMatcher, cluster_matching
from ._render import write_on_cluster

__all__ = [
    "ClusterCappedMatcher",
    "ClusterDecoder",
    "ClusterExactMatcher",
    "Scheduler",
    "WorkerWatch",
    "check_scheduler",
    "client_for",
    "cluster_matching",
    "completed",
    "index_library",
    "make_on_cluster",
    "parse_scheduler",
    "require_workers",
    "task_result",
    "worker_addresses",
    "write_on_cluster",
]
