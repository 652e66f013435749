"""Tile sources: one URI-like spec resolves to a reader.

===========================  ============================================
spec                         source
===========================  ============================================
``DIR``                      a folder, scanned recursively
``cifar10``, ``cifar100``    downloaded on first use into the cache
``cifar10:PATH``             a local tarball or extracted folder
``galaxy10``                 astroNN Galaxy10 DECaLS (h5), downloaded
``galaxy10-sdss``            astroNN Galaxy10 SDSS (h5), downloaded
``FILE.h5[:KEY]``            an ``N x H x W x 3`` uint8 array (key ``images``)
``FILE.npz[:KEY]``           likewise (first array, or ``KEY``)
``FILE.npy``                 likewise
===========================  ============================================
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import SourceError
from ..paths import expanded
from .base import DecodedTile, SourceEntry, TileSource

ARRAY_SUFFIXES = (".h5", ".hdf5", ".npz", ".npy")

__all__ = ["DecodedTile", "SourceEntry", "TileSource", "open_source", "source_spec"]


def source_spec(source: TileSource) -> str:
    """Return a spec that :func:`open_source` resolves back to ``source``.

    Parameters
    ----------
    source : TileSource
        An opened source; its ``key`` says where it came from.

    Returns
    -------
    str
        A folder path, an array file (with ``:KEY`` when one was named) or
        a dataset name.
    """
    key = source.key
    if key.startswith("folder:"):
        return key[len("folder:"):]
    if key.startswith("array:"):
        rest = key[len("array:"):]
        return rest
    return key


def _split_key(spec: str) -> tuple[str, str | None]:
    """Split ``FILE.h5:KEY`` into the file and the key (None when absent)."""
    lowered = spec.lower()
    for suffix in ARRAY_SUFFIXES:
        position = lowered.rfind(suffix + ":")
        if position != -1:
            end = position + len(suffix)
            return spec[:end], spec[end + 1:] or None
    return spec, None


def open_source(
    spec: str | os.PathLike[str],
    cache_dir: Path,
    show_progress: bool = False,
) -> TileSource:
    """Resolve a tile source spec to a :class:`TileSource`.

    Parameters
    ----------
    spec : str or path-like
        See the module docstring for the accepted forms.
    cache_dir : pathlib.Path
        Where downloads are kept.
    show_progress : bool
        Draw progress bars for downloads and decoding.

    Raises
    ------
    SourceError
        When the spec names nothing usable, or is no text or path at all
        (None, bytes, a number).
    """
    # Checked here, where the text is needed, so that every caller (the API, a
    # placements file, a worker) gets one line instead of os.fspath's TypeError.
    text = os.fspath(spec) if isinstance(spec, str | os.PathLike) else None
    if not isinstance(text, str):
        shown = "None" if spec is None else f"a {type(spec).__name__}"
        raise SourceError(f"a tile source must be a source spec (a text) or a path, got {shown}")
    lowered = text.lower()
    for dataset in ("cifar10", "cifar100"):
        if lowered == dataset or lowered.startswith(dataset + ":"):
            from .cifar import CifarSource

            location = text[len(dataset) + 1:] or None
            return CifarSource(dataset, location, cache_dir=cache_dir,
                               show_progress=show_progress)
    if lowered in ("galaxy10", "galaxy10-sdss", "galaxy10-decals"):
        from .arrays import galaxy10_source

        variant = "sdss" if lowered == "galaxy10-sdss" else "decals"
        return galaxy10_source(variant, cache_dir=cache_dir, show_progress=show_progress)
    path = expanded(text)
    if path.is_dir():
        from .folder import FolderSource

        return FolderSource(path, show_progress=show_progress)
    file_part, key = _split_key(text)
    if file_part.lower().endswith(ARRAY_SUFFIXES):
        from .arrays import ArrayFileSource

        file_path = expanded(file_part)
        if not file_path.is_file():
            raise SourceError(f"{file_path}: tile source file not found")
        return ArrayFileSource(file_path, key, show_progress=show_progress)
    if not path.exists():
        raise SourceError(
            f"{text}: no such folder or file, and not a known dataset "
            "(cifar10, cifar100, galaxy10, galaxy10-sdss)"
        )
    raise SourceError(
        f"{text}: not a tile source (expected a folder, a dataset name, or an "
        ".h5/.npz/.npy image array)"
    )


def __dir__() -> list[str]:
    # The public names and the module's own dunders; not the helpers and imports of
    # this file (os, Path, SourceError), which are no API.
    return sorted([*__all__, *(name for name in globals() if name.startswith("__"))])
