"""Image arrays in ``.h5``/``.hdf5``, ``.npz`` and ``.npy`` files as tile sources.

The array must be ``N x H x W x 3`` uint8 (RGB) or ``N x H x W`` uint8
(greyscale, replicated to RGB; ``N x H x W x 1`` is taken as greyscale too).
Images are read in contiguous chunks, so an HDF5 file or a memory-mapped
``.npy`` larger than memory can be used; an ``.npz`` member cannot be memory
mapped and is loaded whole.

Source ids are ``<file stem>/<i>`` (``i`` the index along the first axis) and
the source key is ``array:<absolute path>:<key>`` (``array:<absolute path>``
for a ``.npy``). The Galaxy10 datasets are such arrays, downloaded on first
use (:func:`galaxy10_source`).
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import SourceError
from ..imaging import content_hash, square_thumbnail
from .base import DecodedTile, SourceEntry, TileSource
from .download import fetch_dataset

#: Images read from the file per step; bounds the memory of decoding.
READ_CHUNK = 1024

_LOAD_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError)

_GALAXY10 = {
    "decals": ("galaxy10", "Galaxy10 DECaLS"),
    "sdss": ("galaxy10-sdss", "Galaxy10 SDSS"),
}


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _import_h5py(path: Path) -> Any:
    try:
        import h5py
    except ImportError:
        raise SourceError(
            f'{path}: reading HDF5 files needs h5py: pip install "mosaicist[h5]"'
        ) from None
    return h5py


class ArrayFileSource(TileSource):
    """The images of an ``N x H x W x 3`` uint8 array stored in a file.

    Parameters
    ----------
    file_path : pathlib.Path
        An ``.h5``/``.hdf5``, ``.npz`` or ``.npy`` file.
    key : str or None
        The dataset (HDF5, default ``images``) or member (``.npz``, default
        ``images`` when present, else the first array). A ``.npy`` holds one
        array and takes no key.
    show_progress : bool
        Accepted for symmetry with the other sources; reading shows no bar.
    source_key : str, optional
        Overrides the source's key (the Galaxy10 datasets use their name).
    id_prefix : str, optional
        Overrides the source-id prefix (default: the file's stem).
    name : str, optional
        Overrides the human-readable name.

    Raises
    ------
    SourceError
        When the file is missing or unreadable, the key is missing, or the
        array has the wrong shape or type.
    """

    def __init__(
        self,
        file_path: Path,
        key: str | None = None,
        show_progress: bool = False,
        *,
        source_key: str | None = None,
        id_prefix: str | None = None,
        name: str | None = None,
    ) -> None:
        self._path = Path(file_path).expanduser().absolute()
        suffix = self._path.suffix.lower()
        if suffix in (".h5", ".hdf5"):
            self._kind = "h5"
        elif suffix in (".npz", ".npy"):
            self._kind = suffix[1:]
        else:
            raise SourceError(f"{self._path}: not an .h5, .hdf5, .npz or .npy file")
        if not self._path.is_file():
            raise SourceError(f"{self._path}: array file not found")
        self._show_progress = show_progress
        self._array: np.ndarray | None = None  # .npy memory map or loaded .npz member
        self._key, shape, dtype = self._inspect(key)
        self._check(shape, dtype)
        self._count = int(shape[0])
        self.key = source_key or (
            f"array:{self._path}" if self._kind == "npy" else f"array:{self._path}:{self._key}"
        )
        self._prefix = id_prefix or self._path.stem
        self.name = name or (
            self._path.name if self._kind == "npy" else f"{self._path.name}:{self._key}"
        )

    def _where(self) -> str:
        return f"{self._path}" if self._kind == "npy" else f"{self._path}:{self._key}"

    def _inspect(self, key: str | None) -> tuple[str, tuple[int, ...], np.dtype]:
        """Resolve the key and return it with the array's shape and dtype."""
        if self._kind == "h5":
            h5py = _import_h5py(self._path)
            key = key or "images"
            try:
                with h5py.File(self._path, "r") as handle:
                    if key not in handle:
                        names: list[str] = []
                        handle.visititems(
                            lambda name, item: names.append(name)
                            if isinstance(item, h5py.Dataset) else None
                        )
                        raise SourceError(
                            f"{self._path}: no dataset {key!r} "
                            f"(available: {', '.join(names) or 'none'})"
                        )
                    dataset = handle[key]
                    if not isinstance(dataset, h5py.Dataset):
                        raise SourceError(f"{self._path}:{key}: is an HDF5 group, not an array")
                    return key, tuple(dataset.shape), dataset.dtype
            except SourceError:
                raise
            except _LOAD_ERRORS as error:
                raise SourceError(
                    f"{self._path}: not a readable HDF5 file ({_one_line(error)})"
                ) from None
        if self._kind == "npy":
            if key:
                raise SourceError(
                    f"{self._path}: a .npy file holds a single array and takes no key "
                    f"(got {key!r})"
                )
            try:
                array = np.load(self._path, mmap_mode="r", allow_pickle=False)
            except _LOAD_ERRORS as error:
                raise SourceError(
                    f"{self._path}: not a readable .npy file ({_one_line(error)})"
                ) from None
            self._array = array
            return "", tuple(array.shape), array.dtype
        try:
            with np.load(self._path, allow_pickle=False) as archive:
                members = list(archive.files)
                if key is None:
                    if not members:
                        raise SourceError(f"{self._path}: the .npz file holds no arrays")
                    key = "images" if "images" in members else members[0]
                if key not in members:
                    raise SourceError(
                        f"{self._path}: no array {key!r} "
                        f"(available: {', '.join(members) or 'none'})"
                    )
                array = archive[key]
        except SourceError:
            raise
        except _LOAD_ERRORS as error:
            raise SourceError(
                f"{self._path}: not a readable .npz file ({_one_line(error)})"
            ) from None
        self._array = array
        return key, tuple(array.shape), array.dtype

    def _check(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        greyscale = len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)
        rgb = len(shape) == 4 and shape[3] == 3
        if dtype != np.uint8 or not (greyscale or rgb) or min(shape[1:3], default=0) < 1:
            raise SourceError(
                f"{self._where()}: expected an N x H x W x 3 (or N x H x W) uint8 image array, "
                f"found shape {shape} dtype {dtype}"
            )

    def scan(self) -> list[SourceEntry]:
        """List the images in array order."""
        stat = self._path.stat()
        prefix = f"{self._prefix}/"
        return [
            SourceEntry(prefix + str(i), stat.st_size, stat.st_mtime_ns, i)
            for i in range(self._count)
        ]

    def _position(self, entry: SourceEntry) -> int:
        if isinstance(entry.locator, (int, np.integer)):
            position = int(entry.locator)
        else:
            prefix, _, index = entry.source_id.rpartition("/")
            position = int(index) if prefix == self._prefix and index.isdigit() else -1
        return position if 0 <= position < self._count else -1

    def _read(self, store: Any, positions: np.ndarray) -> np.ndarray:
        """Read the images at ``positions`` (in that order) from ``store``."""
        low, high = int(positions.min()), int(positions.max()) + 1
        if high - low <= 4 * len(positions):
            # Nearby images: one contiguous slab read is the fastest access.
            return np.asarray(store[low:high])[positions - low]
        unique = np.unique(positions)
        # HDF5 point selection needs increasing, distinct indices.
        block = np.asarray(store[unique])
        return block[np.searchsorted(unique, positions)]

    def _open_store(self) -> tuple[Any, Any]:
        """Return (array-like, handle to close or None)."""
        if self._kind == "h5":
            h5py = _import_h5py(self._path)
            handle = h5py.File(self._path, "r")
            return handle[self._key], handle
        return self._array, None

    def _to_rgb(self, image: np.ndarray) -> np.ndarray:
        if image.ndim == 3 and image.shape[2] == 3:
            return image
        grey = image.reshape(image.shape[0], image.shape[1])
        return np.repeat(grey[:, :, None], 3, axis=2)

    def decode(self, entries: Sequence[SourceEntry], side_px: int) -> Iterator[DecodedTile]:
        """Yield the entries' thumbnails in order, reading in chunks of :data:`READ_CHUNK`."""
        try:
            store, handle = self._open_store()
        except _LOAD_ERRORS as error:
            raise SourceError(f"{self._where()}: cannot read ({_one_line(error)})") from None
        try:
            for start in range(0, len(entries), READ_CHUNK):
                chunk = entries[start:start + READ_CHUNK]
                positions = np.fromiter((self._position(e) for e in chunk), np.int64, len(chunk))
                valid = positions >= 0
                error_text = None
                images = np.empty((0,), dtype=np.uint8)
                if valid.any():
                    try:
                        images = self._read(store, positions[valid])
                    except _LOAD_ERRORS as error:
                        error_text = f"cannot read {self._where()}: {_one_line(error)}"
                slot = 0
                for entry, ok in zip(chunk, valid.tolist(), strict=True):
                    if not ok:
                        message = f"{entry.source_id}: not in {self.name}"
                        yield DecodedTile(entry, None, None, message)
                        continue
                    if error_text is not None:
                        yield DecodedTile(entry, None, None, error_text)
                        continue
                    raw = np.ascontiguousarray(images[slot])
                    slot += 1
                    rgb = self._to_rgb(raw)
                    if rgb.shape[:2] != (side_px, side_px):
                        pixels = square_thumbnail(Image.fromarray(rgb, "RGB"), side_px)
                    else:
                        pixels = np.ascontiguousarray(rgb)
                    yield DecodedTile(entry, pixels, content_hash(raw.data))
        finally:
            if handle is not None:
                handle.close()

    def open_original(self, entry: SourceEntry) -> Image.Image:
        """Return the entry's image at its stored resolution, as RGB."""
        position = self._position(entry)
        if position < 0:
            raise SourceError(f"{entry.source_id}: not in {self.name}")
        store, handle = self._open_store()
        try:
            image = np.asarray(store[position])
        finally:
            if handle is not None:
                handle.close()
        return Image.fromarray(np.ascontiguousarray(self._to_rgb(image)), "RGB")


def galaxy10_source(variant: str, cache_dir: Path, show_progress: bool = False) -> ArrayFileSource:
    """Return a Galaxy10 dataset (astroNN) as a tile source, downloading it on first use.

    Parameters
    ----------
    variant : {"decals", "sdss"}
        Galaxy10 DECaLS (17,736 images of 256 x 256) or the original
        Galaxy10 SDSS (21,785 images of 69 x 69).
    cache_dir : pathlib.Path
        The cache folder; the file goes to ``cache_dir / "downloads"``.
    show_progress : bool
        Draw a progress bar while downloading.

    Returns
    -------
    ArrayFileSource
        With key ``galaxy10`` or ``galaxy10-sdss`` and source ids
        ``galaxy10/<i>`` or ``galaxy10-sdss/<i>``.
    """
    if variant not in _GALAXY10:
        raise SourceError(f"{variant}: unknown Galaxy10 variant (expected decals or sdss)")
    dataset, display = _GALAXY10[variant]
    path = fetch_dataset(dataset, Path(cache_dir) / "downloads", show_progress)
    return ArrayFileSource(
        path, "images", show_progress, source_key=dataset, id_prefix=dataset, name=display
    )
