"""Progress bars on stderr, shown only to a person watching a terminal."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


def progress_enabled(quiet: bool = False) -> bool:
    """Return whether progress bars should be drawn (stderr is a TTY and not quiet)."""
    return not quiet and sys.stderr.isatty()


def progress_bar(
    total: int | None, description: str, unit: str = "it", enabled: bool = True, **kwargs: Any
) -> tqdm:
    """Return a tqdm progress bar on stderr, disabled when ``enabled`` is false."""
    return tqdm(
        total=total,
        desc=description,
        unit=unit,
        disable=not enabled,
        file=sys.stderr,
        leave=False,
        dynamic_ncols=True,
        **kwargs,
    )
