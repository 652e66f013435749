"""Progress bars on stderr, shown only to a person watching a terminal.

A program without a terminal (the studio's job processes) follows the same
bars with :func:`progress_listener`: while one is set, every bar reports its
description, count and total to it, drawn or not.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from functools import cache
from typing import TYPE_CHECKING, Any

from ._forks import renew_locks_after_fork

if TYPE_CHECKING:
    from tqdm import tqdm

#: ``listener(description, done, total)``: a bar's progress (total None when unknown).
ProgressListener = Callable[[str, float, "float | None"], None]
_listener: ProgressListener | None = None
_listener_lock = threading.Lock()
renew_locks_after_fork(globals(), "_listener_lock")


@contextlib.contextmanager
def progress_listener(listener: ProgressListener) -> Iterator[None]:
    """Report every progress bar made in the block to ``listener``, from any thread.

    The listener is called on each update with the bar's description, its
    count so far and its total (None when unknown), and must be thread-safe
    and quick. One listener per process: this one replaces any other for
    the block.
    """
    global _listener
    with _listener_lock:
        previous, _listener = _listener, listener
    try:
        yield
    finally:
        with _listener_lock:
            _listener = previous


@cache
def _listened_bar_class() -> type:
    """The tqdm bar that also reports to a listener, made once tqdm is imported."""
    from tqdm import tqdm

    class ListenedBar(tqdm):
        """A tqdm bar that also reports to the listener (tqdm counts nothing when disabled)."""

        def __init__(self, *args: Any, listener: ProgressListener, **kwargs: Any) -> None:
            self._listener = listener
            self._description = str(kwargs.get("desc") or "")
            self._count = float(kwargs.get("initial") or 0)
            super().__init__(*args, **kwargs)
            self._listener(self._description, self._count, kwargs.get("total"))

        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            self._count += 1 if n is None else n
            self._listener(self._description, self._count, self.total)
            return shown

    return ListenedBar


class _QuietBar:
    """What a disabled tqdm bar does, without importing tqdm (0.013 s of every quiet start).

    It keeps its total and count, as tqdm's does, and draws nothing.
    """

    def __init__(self, total: float | None, initial: float = 0) -> None:
        self.total = total
        self.n: float = initial

    def update(self, n: float | None = 1) -> None:
        self.n += 1 if n is None else n

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _QuietBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_enabled(quiet: bool = False) -> bool:
    """Return whether progress bars should be drawn (stderr is a TTY and not quiet).

    A program started with its standard error closed has ``sys.stderr`` None
    (or a stream that fails): no bars then.
    """
    stream = sys.stderr
    try:
        return not quiet and stream is not None and stream.isatty()
    except (OSError, ValueError):  # closed, or a descriptor gone
        return False


def progress_bar(
    total: int | None, description: str, unit: str = "it", enabled: bool = True, **kwargs: Any
) -> tqdm:
    """Return a tqdm progress bar on stderr, disabled when ``enabled`` is false.

    While a :func:`progress_listener` is set, the bar also reports to it.
    """
    listener = _listener
    if listener is None and not enabled:
        return _QuietBar(total, kwargs.get("initial") or 0)
    settings = dict(total=total, desc=description, unit=unit, disable=not enabled,
                    file=sys.stderr, leave=False, dynamic_ncols=True, **kwargs)
    if listener is not None:
        return _listened_bar_class()(listener=listener, **settings)
    from tqdm import tqdm

    return tqdm(**settings)
