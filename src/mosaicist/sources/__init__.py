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

A dataset name is the dataset even where the current folder holds a folder
of that name (the default must not change with the current folder): that
folder is given as a path, ``./cifar10`` (:func:`shadowed_folder`).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import SourceError
from ..paths import dangling_link, expanded
from .base import DecodedTile, SourceEntry, TileSource, path_text

ARRAY_SUFFIXES = (".h5", ".hdf5", ".npz", ".npy")

_CIFAR = ("cifar10", "cifar100")
_GALAXY10 = ("galaxy10", "galaxy10-sdss", "galaxy10-decals")
#: The names that download a dataset, whatever is in the current folder.
DATASET_NAMES = _CIFAR + _GALAXY10

__all__ = ["DATASET_NAMES", "DecodedTile", "SourceEntry", "TileSource", "open_source",
           "shadowed_folder", "source_spec"]


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
    # The key escapes a name that is not UTF-8 (the index stores text); the spec must
    # name the file itself, so the root or array file's own path replaces the escape.
    for path in (getattr(source, "root", None), getattr(source, "_path", None)):
        if isinstance(path, os.PathLike):
            name = os.fspath(path)
            text = path_text(name)
            if text != name and text in key:
                key = key.replace(text, name, 1)
            break
    if key.startswith("folder:"):
        return key[len("folder:"):]
    if key.startswith("array:"):
        return key[len("array:"):]
    return key


def shadowed_folder(spec: str | os.PathLike[str]) -> Path | None:
    """The folder that a dataset name also names, which :func:`open_source` passes over.

    ``cifar10`` is the dataset even where the current folder holds a folder
    ``cifar10`` (the default ``--tiles`` must not change with the current
    folder); the command line names that folder in a note, and how to use
    it (``./cifar10``).

    Parameters
    ----------
    spec : str or path-like
        A tile source spec.

    Returns
    -------
    pathlib.Path or None
        The folder, relative to the current one, when ``spec`` is read as a
        dataset (a bare name in any case, or ``cifar10:PATH``) and a folder
        of that very name is there; else None.

    Examples
    --------
    >>> shadowed_folder("./cifar10") is None  # a path, never a dataset
    True
    """
    if not isinstance(spec, str):
        return None
    lowered = spec.lower()
    if lowered not in DATASET_NAMES and lowered.split(":", 1)[0] not in _CIFAR:
        return None
    path = Path(spec)
    return path if path.is_dir() else None


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
    if not text:
        # Path("") is the current folder: every picture under it would be indexed.
        raise SourceError("a tile source spec is empty: give a folder, a dataset name "
                          "('cifar10'...) or an array file")
    lowered = text.lower()
    for dataset in _CIFAR:
        if lowered == dataset or lowered.startswith(dataset + ":"):
            from .cifar import CifarSource

            location = text[len(dataset) + 1:] or None
            return CifarSource(dataset, location, cache_dir=cache_dir,
                               show_progress=show_progress)
    if lowered in _GALAXY10:
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
            raise SourceError(_meant(text, _shown(text))
                              or f"{file_path}: tile source file not found")
        return ArrayFileSource(file_path, key, show_progress=show_progress)
    shown = _shown(text)
    if not path.exists():
        if (link := dangling_link(path)) is not None:
            raise SourceError(f"{shown}: {link}")
        raise SourceError(_meant(text, shown) or f"{shown}: no such folder or file, and not a "
                          f"known dataset ({', '.join(DATASET_NAMES)})")
    raise SourceError(
        f"{shown}: not a tile source (expected a folder, a dataset name, or an "
        ".h5/.npz/.npy image array)"
    )


def _shown(text: str) -> str:
    """``text`` as messages show it: quoted where spaces at either end would be unseen
    ("cifar10 : not a known dataset (cifar10, ...)" read as a contradiction)."""
    return text if text.strip() == text else repr(text)


def _meant(text: str, shown: str) -> str | None:
    """The message for a spec that names nothing but reads as a dataset with a location
    (``cifar10 PATH``, ``galaxy10:PATH``); None for any other."""
    lowered = text.lower()
    for dataset in sorted(DATASET_NAMES, key=len, reverse=True):
        rest = lowered[len(dataset):]
        if not lowered.startswith(dataset) or not (rest[:1] == ":" or rest[:1].isspace()):
            continue
        if dataset in _CIFAR:  # a space where the colon goes
            return (f"{shown}: no such folder or file; a local copy of {dataset} is given "
                    f"as {dataset}:PATH")
        # The Galaxy10 files are plain arrays: a local copy is read as one.
        return (f"{shown}: {dataset} takes no :PATH; give a local copy of it as the path of "
                "its .h5 file")
    return None


def __dir__() -> list[str]:
    # The public names and the module's own dunders; not the helpers and imports of
    # this file (os, Path, SourceError), which are no API.
    return sorted([*__all__, *(name for name in globals() if name.startswith("__"))])
