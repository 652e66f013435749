"""The prepared library: tiles in the metric's colour space, times their transforms.

A candidate is a (tile, transform) pair. With ``k`` transforms the matcher
sees a *prepared* library of ``M * k`` tiles where candidate ``v`` is tile
``v // k`` under transform ``transforms[v % k]``: ties between equal
candidates therefore go to the lowest library position, then to the first
transform. The prepared library is also encoded in the metric's colour space
(see :mod:`mosaicist.colour`), and cached beside the index as one
memory-mapped file.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .._runtime import release_pages
from ..colour import encode
from ..paths import (
    atomic_path,
    build_lock,
    mark_used,
    remove_older_generations,
    reserve_space,
)
from ..progress import progress_bar
from ..transforms import AUGMENT_SETS, apply_transform, augment_transforms

#: Tiles encoded at a time.
_CHUNK = 4096
#: A prepared library's cache file, with its library generation (from the ``key``).
_PREPARED = re.compile(r"prepared-.*-g(?P<generation>\d+)-n\d+\.u8")
#: The generation at the start of a ``key`` (``g<G>-n<N>``).
_KEY_GENERATION = re.compile(r"g(\d+)-")


def prepare_tiles(
    tiles: np.ndarray,
    metric: str,
    augment: str,
    directory: Path | None,
    key: str,
    show_progress: bool = False,
    aspect: tuple[int, int] = (1, 1),
) -> np.ndarray:
    """Return the prepared library: tiles encoded for ``metric``, times the transforms.

    Parameters
    ----------
    tiles : numpy.ndarray
        ``(M, H, W, 3)`` uint8 library tiles.
    metric : str
        ``seed``, ``lab`` or ``oklab``.
    augment : str
        A key of :data:`AUGMENT_SETS`.
    directory : pathlib.Path or None
        Cache folder; the result is computed in memory when None.
    key : str
        Identity of the library state (e.g. its generation and size).
    show_progress : bool
        Draw a progress bar.
    aspect : tuple of int
        The tiles' aspect ``(W, H)``: rectangular tiles take only the
        transforms that keep their shape (:func:`~mosaicist.transforms.augment_transforms`).

    Returns
    -------
    numpy.ndarray
        ``(M * k, H, W, 3)`` uint8, memory-mapped when cached (in memory where
        the cache cannot take it: read-only or full). For the seed metric
        without augmentation, ``tiles`` itself.

    Notes
    -----
    Writing a new entry removes the prepared libraries of earlier library
    generations (the ``g<G>`` of ``key``) from ``directory``. A process that
    needs an entry another is preparing waits for it and reads it
    (:func:`~mosaicist.paths.build_lock`).
    """
    transforms = augment_transforms(augment, aspect)
    if metric == "seed" and len(transforms) == 1:
        return tiles
    shape = (len(tiles) * len(transforms), *tiles.shape[1:3], 3)
    if transforms != AUGMENT_SETS[augment]:
        augment += "-" + "".join(str(code) for code in transforms)
    if directory is None:
        out = np.empty(shape, np.uint8)
        _fill(out, tiles, metric, transforms, show_progress)
        return out
    path = directory / f"prepared-{metric}-{augment}-{key}.u8"
    prepared = _read_entry(path, tiles, metric, transforms)
    if prepared is not None:
        return prepared
    note = (f"mosaicist: waiting for another process preparing these tiles ({path})"
            if show_progress else None)
    # Another process may be preparing this entry: its result is read, not made again.
    with build_lock(path, note=note):
        prepared = _read_entry(path, tiles, metric, transforms)
        if prepared is not None:
            return prepared
        try:
            with atomic_path(path) as partial:
                out = np.memmap(partial, np.uint8, "w+", shape=shape)
                # Filling a sparse map on a full disk would die of SIGBUS, not raise.
                reserve_space(partial)
                _fill(out, tiles, metric, transforms, show_progress)
                out.flush()
                del out
                # Mapped before it is published: a newer generation may remove it at once.
                prepared = np.memmap(partial, np.uint8, "r", shape=shape)
        except OSError:
            # A read-only or full cache only costs preparing them in memory.
            out = np.empty(shape, np.uint8)
            _fill(out, tiles, metric, transforms, show_progress)
            return out
    found = _KEY_GENERATION.match(key)
    if found is not None:
        remove_older_generations(directory, _PREPARED, int(found.group(1)))
    return prepared


#: Tiles prepared again to check a cached entry (evenly spaced, the first and last
#: among them).
ENTRY_SAMPLE = 64


def _read_entry(path: Path, tiles: np.ndarray, metric: str, transforms: tuple[int, ...]
                ) -> np.ndarray | None:
    """The prepared library of ``tiles`` cached at ``path``, mapped; None where missing,
    cut short, damaged or stale.

    The name says the library's generation and size only, which a rebuilt
    index starts again, and a file of the right size can hold other bytes
    (zeroed by a crash, copied from another cache): a sample of tiles
    (:data:`ENTRY_SAMPLE`) is prepared again and compared. Before, such a
    file was read as it was, and the mosaic was made of the wrong pixels
    without a word.
    """
    count, variants = len(tiles), len(transforms)
    shape = (count * variants, *tiles.shape[1:3], 3)
    # Mapped, an entry stays readable when a process of a newer generation removes it.
    try:
        if not path.is_file() or path.stat().st_size != int(np.prod(shape)):
            return None
        prepared = np.memmap(path, np.uint8, "r", shape=shape)
        positions = np.unique(np.linspace(0, count - 1, min(count, ENTRY_SAMPLE)).astype(np.int64))
        encoded = encode(np.asarray(tiles[positions]), metric)
        for slot, code in enumerate(transforms):
            if not np.array_equal(prepared[positions * variants + slot],
                                  apply_transform(encoded, code)):
                return None
    except (OSError, ValueError):  # gone, unreadable, a folder in its place, empty
        return None
    mark_used(path)
    return prepared


def _fill(
    out: np.ndarray, tiles: np.ndarray, metric: str, transforms: tuple[int, ...],
    show_progress: bool,
) -> None:
    variants = len(transforms)
    with progress_bar(len(tiles), "preparing", unit="tile", enabled=show_progress) as bar:
        for start in range(0, len(tiles), _CHUNK):
            part = encode(np.asarray(tiles[start:start + _CHUNK]), metric)
            stop = start + len(part)
            block = out[start * variants:stop * variants].reshape(
                len(part), variants, *part.shape[1:]
            )
            for slot, code in enumerate(transforms):
                block[:, slot] = apply_transform(part, code)
            release_pages(tiles)
            release_pages(out)
            bar.update(len(part))
