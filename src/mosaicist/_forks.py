"""Locks a forked child gets anew.

Kept apart (no NumPy, no Pillow): the progress bars use it, which
``mosaicist --help`` loads.
"""

from __future__ import annotations

import os
import threading
from typing import Any


def renew_locks_after_fork(namespace: dict[str, Any], *names: str) -> None:
    """Give a forked child new module-level locks ``names`` of ``namespace`` (a ``globals()``).

    A lock that another thread held when the process forked stays held in
    the child for good: a target read (and its colour profile converted)
    beside the forking of the tiles' decoding workers left each worker
    waiting for the profiles' lock, and the make hung (3 runs in 6).
    """
    if not hasattr(os, "register_at_fork"):
        return

    def renew() -> None:
        for name in names:
            namespace[name] = threading.Lock()

    os.register_at_fork(after_in_child=renew)
