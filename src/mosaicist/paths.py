"""Where mosaicist keeps its caches, and atomic file writing."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import platformdirs

CACHE_ENV = "MOSAICIST_CACHE_DIR"


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Return the cache directory, creating it if needed.

    Parameters
    ----------
    override : path-like, optional
        An explicit directory (the ``--cache-dir`` option). When omitted, the
        environment variable ``MOSAICIST_CACHE_DIR`` is used, and failing that
        the platform's user cache directory (``platformdirs``).

    Returns
    -------
    pathlib.Path
        The absolute cache directory.
    """
    if override is not None:
        path = Path(override)
    elif os.environ.get(CACHE_ENV):
        path = Path(os.environ[CACHE_ENV])
    else:
        path = Path(platformdirs.user_cache_dir("mosaicist", appauthor=False))
    path = path.expanduser().absolute()
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place on success.

    An exception (or an interrupt) inside the block removes the temporary
    file, so a reader never sees a half-written file under the final name.

    Parameters
    ----------
    final : path-like
        The file to create or replace.
    suffix : str, optional
        Suffix of the temporary file (defaults to the final file's), so that
        writers that pick a format from the extension still work.
    """
    final = Path(final)
    if suffix is None:
        suffix = final.suffix
    handle, temporary = tempfile.mkstemp(
        prefix=f".{final.name}.", suffix=f".part{suffix}", dir=final.parent
    )
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        yield temporary_path
        # mkstemp makes the file 0600; outputs get the usual mode, as open() would.
        with contextlib.suppress(FileNotFoundError):
            temporary_path.chmod(0o666 & ~current_umask())
        os.replace(temporary_path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary_path.unlink()
        raise


def current_umask() -> int:
    """Return the process's file-creation mask (read without changing it where possible)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
