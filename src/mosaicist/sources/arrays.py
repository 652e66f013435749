"""Image arrays in ``.h5``/``.hdf5``, ``.npz`` and ``.npy`` files as tile sources.

The array must be ``N x H x W x 3`` uint8 (RGB) or ``N x H x W`` uint8
(greyscale, replicated to RGB; ``N x H x W x 1`` is taken as greyscale too;
``H x W x 3`` or ``x 4``, one colour picture rather than grey ones 3 or 4
pixels wide, is refused with the way to save it). Images are read in blocks
of bounded size, so an HDF5 file, a ``.npy`` or an uncompressed ``.npz``
member larger than memory can be used; a compressed ``.npz`` member is
loaded whole, up to :data:`NPZ_LOAD_MAX_BYTES`. A ``.npy``
or uncompressed member is read with positional reads, not memory mapped: a
mapped file that shrinks while it is read (saved again in place by another
program) kills the process with a bus error, where a short read is an error
for the images past the new end. (A Fortran-ordered array, whose images are
strided through the whole file, is read too: a run of images is a run of
bytes in each of its planes.) Sizes are checked from the
headers before anything is read: each image is within the tile pixel limit,
a ``.npy`` file or ``.npz`` member holds the bytes its header declares, and
an HDF5 dataset has its data written (a file of a few kilobytes can declare
a billion images whose storage was never allocated). An HDF5 dataset must lie in
the file itself: links to other files, virtual datasets and external raw
storage are refused. A block that cannot be read is read again image by
image, so only the unreadable images are skipped.

Source ids are ``<file stem>/<i>`` (``i`` the index along the first axis) and
the source key is ``array:<absolute path>:<key>`` (``array:<absolute path>``
for a ``.npy``). The Galaxy10 datasets are such arrays, downloaded on first
use (:func:`galaxy10_source`).
"""

from __future__ import annotations

import math
import os
import pickle
import struct
import threading
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..aspect import SQUARE
from ..errors import SourceError, install_extra
from ..imaging import TILE_MAX_PIXELS, array_tile, content_hash
from .base import (
    DecodedTile,
    SourceEntry,
    TileSource,
    absolute_path,
    change_stamp,
    is_transient,
    path_text,
)
from .download import fetch_dataset

#: Images read from the file per step, at most; bounds the memory of decoding.
READ_CHUNK = 1024
#: Bytes of images read from the file per step, at most (fewer images when large).
READ_BLOCK_BYTES = 64 << 20
#: Largest HDF5 chunk read: a chunk is decompressed whole to read any image in it.
H5_CHUNK_MAX_BYTES = 256 << 20
#: Bytes read at once from a Fortran-ordered array's planes (see ``_FileImages``).
_FORTRAN_READ_BYTES = 8 << 20
#: Largest compressed ``.npz`` member, which is loaded whole (stored ones are read on demand).
NPZ_LOAD_MAX_BYTES = 1 << 30
#: Soft links followed while resolving an HDF5 key (more is a loop).
_MAX_LINK_HOPS = 32

# h5py raises KeyError and RuntimeError for some unreadable objects too.
_LOAD_ERRORS = (OSError, ValueError, EOFError, KeyError, RuntimeError, zipfile.BadZipFile,
                pickle.UnpicklingError)

_GALAXY10 = {
    "decals": ("galaxy10", "Galaxy10 DECaLS"),
    "sdss": ("galaxy10-sdss", "Galaxy10 SDSS"),
}


def _identity(status: os.stat_result) -> tuple[int, int, int, int]:
    """What tells one version of a file from another: its device, inode, size and stamp."""
    return (status.st_dev, status.st_ino, status.st_size, change_stamp(status))


def _h5_key(key: str) -> str:
    """``key`` as the path of an HDF5 object, spelt one way: ``/images/``, ``//images``,
    ``./images`` and ``images`` are all ``images``.

    The key is part of the source key (which names the index), so that every
    spelling of one dataset must give one key: the shortest, which is also
    the spelling keys had before (no index made with it is made again). The
    file's root group, however spelt, stays ``/`` (refused: a group).

    Examples
    --------
    >>> _h5_key("/data//images/"), _h5_key("./images"), _h5_key("/")
    ('data/images', 'images', '/')
    """
    return "/".join(part for part in key.split("/") if part not in ("", ".")) or "/"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _import_h5py(path: Path) -> Any:
    try:
        import h5py
    except ImportError:
        raise SourceError(
            f"{path}: reading HDF5 files needs h5py: {install_extra('h5')}"
        ) from None
    return h5py


def _h5_dataset(h5py: Any, handle: Any, key: str, where: str) -> Any:
    """Resolve ``key`` inside ``handle``'s file to a dataset whose data lies in that file.

    Soft links are followed (a bounded number of times); a link to another
    file, a dangling link, a virtual dataset (its data is in other files) or
    external raw storage (any file on disk) is refused.

    Raises
    ------
    SourceError
        Naming ``where`` and the reason.
    KeyError
        When ``key`` is not in the file at all.
    """
    pending = [part for part in key.split("/") if part]
    group = handle
    hops = 0
    while pending:
        part = pending.pop(0)
        link = group.get(part, getlink=True)
        if link is None:
            if hops:
                raise SourceError(f"{where}: a soft link points to nothing ({part!r} is missing)")
            raise KeyError(key)
        if isinstance(link, h5py.ExternalLink):
            raise SourceError(
                f"{where}: {part!r} is a link to another file ({link.filename}), which is not read"
            )
        if isinstance(link, h5py.SoftLink):
            hops += 1
            if hops > _MAX_LINK_HOPS:
                raise SourceError(f"{where}: more than {_MAX_LINK_HOPS} soft links (a loop?)")
            if link.path.startswith("/"):
                group = handle
            pending = [piece for piece in link.path.split("/") if piece] + pending
            continue
        try:
            item = group[part]
        except KeyError:
            raise SourceError(f"{where}: {part!r} is a dangling link") from None
        if pending and not isinstance(item, h5py.Group):
            raise KeyError(key)
        group = item
    if not isinstance(group, h5py.Dataset):
        raise SourceError(f"{where}: is an HDF5 group, not an array")
    if group.shape is None:
        # A null dataspace (h5py.Empty): no shape at all, which the checks below need.
        raise SourceError(f"{where}: is an empty HDF5 dataset (no data space), not an array")
    if group.is_virtual:
        raise SourceError(f"{where}: is a virtual dataset (its data is in other files), not read")
    if group.external:
        raise SourceError(
            f"{where}: keeps its data in external files ({group.external[0][0]}...), not read"
        )
    if group.chunks is not None:
        chunk_bytes = math.prod(group.chunks) * group.dtype.itemsize
        if chunk_bytes > H5_CHUNK_MAX_BYTES:
            raise SourceError(
                f"{where}: chunks of {chunk_bytes:,} bytes are over the limit of "
                f"{H5_CHUNK_MAX_BYTES:,}"
            )
    return group


def _h5_check_written(h5py: Any, dataset: Any, where: str) -> None:
    """Refuse a dataset whose declared images were never stored (checked from metadata).

    HDF5 allocates storage when data is written, so a file of a kilobyte can
    declare a billion images that read as the fill value: scanning them
    would exhaust memory, for black tiles. A contiguous dataset must have
    its whole size allocated; a chunked one (possibly compressed) every chunk.
    """
    declared = math.prod(dataset.shape) * dataset.dtype.itemsize
    if not declared:
        return
    if dataset.chunks is None:
        stored = dataset.id.get_storage_size()
        if stored < declared:
            raise SourceError(
                f"{where}: declares {declared:,} bytes of images but stores {stored:,} "
                "(never written, or an unfinished file)"
            )
        return
    count_chunks = getattr(dataset.id, "get_num_chunks", None)
    if count_chunks is None:  # pragma: no cover - HDF5 before 1.10.5
        return
    expected = math.prod(-(-side // chunk) for side, chunk in zip(dataset.shape, dataset.chunks,
                                                                  strict=True))
    written = count_chunks()
    if written < expected:
        raise SourceError(
            f"{where}: only {written:,} of its {expected:,} chunks of images are stored "
            "(never written, or an unfinished file)"
        )


def _shape_hint(shape: tuple[int, ...], dtype: np.dtype) -> str:
    """What a refused array most likely is, and how to save it as images (or nothing)."""
    if len(shape) == 3 and shape[2] == 3:
        return " (one colour picture? save array[numpy.newaxis], 1 x H x W x 3)"
    if len(shape) == 3 and shape[2] == 4:
        return " (one RGBA picture? save array[numpy.newaxis, ..., :3], 1 x H x W x 3)"
    if len(shape) == 4 and shape[1] in (1, 3) and shape[3] not in (1, 3):
        return " (channels first? save array.transpose(0, 2, 3, 1))"
    if len(shape) == 4 and shape[3] == 4:
        return " (RGBA? save array[..., :3])"
    if dtype.kind in "fc" and (len(shape) == 3 or (len(shape) == 4 and shape[3] in (1, 3))):
        return " (floats? scale them to 0-255 and save array.astype(numpy.uint8))"
    if dtype.kind in "iub" and dtype != np.uint8 and len(shape) in (3, 4):
        return " (save array.astype(numpy.uint8) if its values are 0-255)"
    return ""


def _npy_header(member: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Read an ``.npy`` header from a file object: (shape, fortran order, dtype)."""
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(member)
    # Version 3 differs from 2 only in allowing UTF-8 field names.
    return np.lib.format.read_array_header_2_0(member)


class _FileImages:
    """The images of a uint8 array stored at ``offset`` in a file, read on demand.

    Indexed as the source indexes its store: by an int, a slice of step 1, or
    an increasing array of distinct ints (one read per run of consecutive
    images). A file found shorter than its header said (it shrank since it
    was inspected) raises :class:`EOFError` for the images past its end,
    where a memory map would have died of a bus error.

    In a Fortran-ordered array the first axis varies fastest: each of an
    image's values lies in its own plane of ``N`` bytes (one per image), so
    a run of images is one run of bytes in every plane (see
    :meth:`_fortran_images`).
    """

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...],
                 fortran: bool = False) -> None:
        self._count = int(shape[0])
        self._image_shape = tuple(int(side) for side in shape[1:])
        self._image_bytes = math.prod(self._image_shape)
        self._offset = offset
        self._fortran = fortran
        self._handle = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
        # Seek and read are two calls on one handle (pread is not portable).
        self._lock = threading.Lock()

    def status(self) -> os.stat_result:
        """The status of the file as opened."""
        return os.fstat(self._handle.fileno())

    def close(self) -> None:
        """Close the file."""
        self._handle.close()

    def _read_into(self, view: memoryview, start: int) -> bool:
        """Fill ``view`` from byte ``start`` of the file; False where the file ends first."""
        filled = 0
        self._handle.seek(start)
        while filled < len(view):
            count = self._handle.readinto(view[filled:])
            if not count:
                return False
            filled += count
        return True

    def _fortran_images(self, low: int, high: int) -> np.ndarray:
        """Images ``low:high`` of a Fortran-ordered array: a run of bytes from each plane.

        Where the run is a good part of its plane (a quarter or more: a
        sequential decode), several planes are read at once, their bytes
        between the runs read and dropped, so that a block of images costs
        a few large reads rather than one per pixel and channel.
        """
        planes, plane_bytes, run = self._image_bytes, self._count, high - low
        if run <= 0:
            return np.empty((0, *self._image_shape), np.uint8)
        values = np.empty((planes, run), np.uint8)
        group = 1
        if run * 4 >= plane_bytes:
            group = max(1, _FORTRAN_READ_BYTES // plane_bytes)
        with self._lock:
            for first in range(0, planes, group):
                taken = min(group, planes - first)
                span = np.empty((taken - 1) * plane_bytes + run, np.uint8)
                if not self._read_into(memoryview(span.data).cast("B"),
                                       self._offset + first * plane_bytes + low):
                    which = f"image {low}" if run == 1 else f"images {low}-{high - 1}"
                    raise EOFError(f"the file ends in the data of {which} "
                                   "(it was cut short after it was opened)")
                values[first:first + taken] = np.lib.stride_tricks.as_strided(
                    span, (taken, run), (plane_bytes, 1), writeable=False)
        # Plane k holds the value at the image index whose first axis varies fastest.
        image = values.reshape(*reversed(self._image_shape), run)
        return np.ascontiguousarray(image.transpose(*reversed(range(image.ndim))))

    def _images(self, low: int, high: int) -> np.ndarray:
        if self._fortran:
            return self._fortran_images(low, high)
        images = np.empty((high - low, *self._image_shape), np.uint8)
        view = memoryview(images.data).cast("B")
        filled = 0
        with self._lock:
            self._handle.seek(self._offset + low * self._image_bytes)
            while filled < len(view):
                count = self._handle.readinto(view[filled:])
                if not count:
                    raise EOFError(
                        f"the file ends in image {low + filled // self._image_bytes} "
                        "(it was cut short after it was opened)"
                    )
                filled += count
        return images

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, slice):
            low, high, step = index.indices(self._count)
            if step != 1:
                raise ValueError("only slices of step 1 are read")
            return self._images(low, max(low, high))
        if isinstance(index, int | np.integer):
            position = int(index)
            if not 0 <= position < self._count:
                raise IndexError(f"image {position} is not in an array of {self._count}")
            return self._images(position, position + 1)[0]
        positions = np.asarray(index, dtype=np.int64)
        images = np.empty((len(positions), *self._image_shape), np.uint8)
        if not len(positions):
            return images
        # Each run of consecutive positions is one read.
        breaks = (np.flatnonzero(np.diff(positions) != 1) + 1).tolist()
        for start, end in zip([0, *breaks], [*breaks, len(positions)], strict=True):
            images[start:end] = self[int(positions[start]):int(positions[end - 1]) + 1]
        return images


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
        self._path = absolute_path(file_path)  # one key for every spelling
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
        self._array: np.ndarray | None = None  # a loaded (compressed) .npz member
        self._npz_member: tuple[zipfile.ZipInfo, int, bool] | None = None
        self._npy_data: tuple[int, bool] | None = None  # (data offset, Fortran order)
        # Taken before the array is opened: see _status.
        self._opened = self._path.stat()
        self._key, shape, dtype = self._inspect(key)
        self._take_shape(shape, dtype)
        # Keys, ids and names are text (the index stores them): a file name that is
        # not UTF-8 is escaped in them.
        text = path_text(self._path)
        self.key = source_key or (
            f"array:{text}" if self._kind == "npy" else f"array:{text}:{self._key}"
        )
        self._prefix = id_prefix or path_text(self._path.stem)
        file_name = path_text(self._path.name)
        self.name = name or (file_name if self._kind == "npy" else f"{file_name}:{self._key}")

    def _take_shape(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        """Check the array's shape and type, and size the reads by them."""
        self._check(shape, dtype)
        self._shape = shape
        self._count = int(shape[0])
        # Fewer images per read when they are large, so a read stays bounded.
        self._block = max(1, min(READ_CHUNK, READ_BLOCK_BYTES // max(1, math.prod(shape[1:]))))

    def _status(self) -> os.stat_result:
        """The file's status when its array was opened; opened again if the file changed since.

        A file replaced since (saved again, renamed over it) would be
        scanned with its new stamp but read as the array first inspected (a
        loaded member, a map, its old layout), and the index would keep those
        stale tiles under the new stamp, for good. The status is taken before
        the array is opened, so a change in between only makes the next scan
        decode again.

        Raises
        ------
        SourceError
            When the file, opened again, is not a usable array any more.
        """
        status = self._path.stat()
        if _identity(status) != _identity(self._opened):
            self._array = None
            self._npz_member = None
            self._npy_data = None
            self._opened = status
            self._key, shape, dtype = self._inspect(self._key or None)
            self._take_shape(shape, dtype)
        return self._opened

    def _where(self) -> str:
        return f"{self._path}" if self._kind == "npy" else f"{self._path}:{self._key}"

    def _inspect(self, key: str | None) -> tuple[str, tuple[int, ...], np.dtype]:
        """Resolve the key and return it with the array's shape and dtype (headers only)."""
        if self._kind == "h5":
            h5py = _import_h5py(self._path)
            key = _h5_key(key) if key else "images"
            try:
                with h5py.File(self._path, "r") as handle:
                    try:
                        dataset = _h5_dataset(h5py, handle, key, f"{self._path}:{key}")
                    except KeyError:
                        names: list[str] = []
                        handle.visititems(
                            lambda name, item: names.append(name)
                            if isinstance(item, h5py.Dataset) else None
                        )
                        raise SourceError(
                            f"{self._path}: no dataset {key!r} "
                            f"(available: {', '.join(names) or 'none'})"
                        ) from None
                    self._key = key
                    self._check(tuple(dataset.shape), dataset.dtype)
                    _h5_check_written(h5py, dataset, f"{self._path}:{key}")
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
                return "", *self._inspect_npy()
            except SourceError:
                raise
            except OSError as error:
                raise SourceError(
                    f"{self._path}: cannot read ({error.strerror or error})"
                ) from None
            except _LOAD_ERRORS as error:
                raise SourceError(
                    f"{self._path}: not a readable .npy file ({_one_line(error)})"
                ) from None
        try:
            return self._inspect_npz(key)
        except SourceError:
            raise
        except _LOAD_ERRORS as error:
            raise SourceError(
                f"{self._path}: not a readable .npz file ({_one_line(error)})"
            ) from None

    def _inspect_npy(self) -> tuple[tuple[int, ...], np.dtype]:
        """Read a ``.npy`` header, checked against the file's size; only the header is read."""
        with open(self._path, "rb") as handle:
            if handle.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
                # np.load takes any other file for a pickle and says so, which
                # misleads about a text file or an image saved under this name.
                raise SourceError(
                    f"{self._path}: not a .npy file (it does not start with the NumPy header)"
                )
            handle.seek(0)
            shape, fortran_order, dtype = _npy_header(handle)
            data_offset = handle.tell()
            size = os.fstat(handle.fileno()).st_size
        self._check(shape, dtype)  # first: an object array's size means nothing
        declared = data_offset + math.prod(shape) * dtype.itemsize
        if size < declared:
            raise SourceError(
                f"{self._path}: the header declares {declared:,} bytes but the file holds "
                f"{size:,} (cut short?)"
            )
        self._npy_data = (data_offset, fortran_order)
        return shape, dtype

    def _inspect_npz(self, key: str | None) -> tuple[str, tuple[int, ...], np.dtype]:
        """Read an ``.npz`` member's header, checked against the member's size."""
        with zipfile.ZipFile(self._path) as archive:
            # Member names as numpy's np.load shows them.
            members = {name.removesuffix(".npy"): name for name in archive.namelist()}
            chosen = key is None
            if key is None:
                if not members:
                    raise SourceError(f"{self._path}: the .npz file holds no arrays")
                key = "images" if "images" in members else next(iter(members))
            if key not in members and key.removesuffix(".npy") in members:
                # The member's file name, which np.load takes too: the same array, and
                # one source key (one index) for both spellings.
                key = key.removesuffix(".npy")
            if key not in members:
                raise SourceError(
                    f"{self._path}: no array {key!r} (available: {', '.join(members) or 'none'})"
                )
            info = archive.getinfo(members[key])
            where = f"{self._path}:{key}"
            if info.flag_bits & 0x1:
                raise SourceError(f"{where}: the member is encrypted")
            with archive.open(info) as member:
                shape, fortran_order, dtype = _npy_header(member)
                data_offset = member.tell()
        self._key = key
        try:
            self._check(shape, dtype)  # first: an object array's size means nothing
        except SourceError as error:
            others = [name for name in members if name != key]
            if not chosen or not others:
                raise
            # The first array was taken for want of a name: say which others there are.
            raise SourceError(
                f"{error}; the file also holds {', '.join(others)}: name the images as "
                f"{path_text(self._path.name)}:KEY"
            ) from None
        declared = data_offset + math.prod(shape) * dtype.itemsize
        if declared != info.file_size:
            raise SourceError(
                f"{where}: the header declares {declared:,} bytes but the member holds "
                f"{info.file_size:,}"
            )
        self._npz_member = (info, data_offset, fortran_order)
        return key, shape, dtype

    def _raw_data(self) -> tuple[int, bool] | None:
        """Where the array's bytes start in the file, and whether in Fortran order.

        None for a compressed ``.npz`` member, which must be loaded.
        """
        if self._kind == "npy":
            assert self._npy_data is not None  # set by _inspect_npy
            return self._npy_data
        assert self._npz_member is not None  # set by _inspect_npz
        info, data_offset, fortran_order = self._npz_member
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        with open(self._path, "rb") as handle:
            handle.seek(info.header_offset)
            local = handle.read(30)
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise SourceError(f"{self._where()}: damaged .npz member header")
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        return info.header_offset + 30 + name_length + extra_length + data_offset, fortran_order

    def _load_npz(self) -> np.ndarray:
        """The compressed ``.npz`` member's array, loaded whole (size-checked)."""
        assert self._npz_member is not None  # set by _inspect_npz
        info, _, _ = self._npz_member
        where = self._where()
        if info.file_size > NPZ_LOAD_MAX_BYTES:
            raise SourceError(
                f"{where}: a compressed member of {info.file_size:,} bytes is over the limit of "
                f"{NPZ_LOAD_MAX_BYTES:,} (save it uncompressed, with numpy.savez, or as .npy)"
            )
        with zipfile.ZipFile(self._path) as archive, archive.open(info) as member:
            array = np.lib.format.read_array(member, allow_pickle=False)
        if array.shape != self._shape:
            raise SourceError(f"{where}: the member changed while it was read")
        return array

    def _check(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        # Three or four columns is one colour picture's channels, not grey images that
        # narrow (a single RGB photo saved as H x W x 3 read as H grey tiles of W x 3 px).
        greyscale = ((len(shape) == 3 and shape[2] not in (3, 4))
                     or (len(shape) == 4 and shape[3] == 1))
        rgb = len(shape) == 4 and shape[3] == 3
        if dtype != np.uint8 or not (greyscale or rgb) or min(shape[1:3], default=0) < 1:
            raise SourceError(
                f"{self._where()}: expected an N x H x W x 3 (or N x H x W) uint8 image array, "
                f"found shape {shape} dtype {dtype}{_shape_hint(shape, dtype)}"
            )
        height, width = shape[1:3]
        if height * width > TILE_MAX_PIXELS:
            raise SourceError(
                f"{self._where()}: images of {width}x{height} = {width * height:,} pixels are "
                f"over the limit of {TILE_MAX_PIXELS:,} pixels"
            )

    def scan(self) -> list[SourceEntry]:
        """List the images in array order."""
        stat = self._status()
        prefix = f"{self._prefix}/"
        return [
            SourceEntry(prefix + str(i), stat.st_size, change_stamp(stat), i)
            for i in range(self._count)
        ]

    def scan_fingerprint(self) -> tuple[str, int]:
        """The scan's ids, sizes and times follow from the prefix, count, size and time."""
        stat = self._status()
        return (f"array\0{self._prefix}\0{self._count}\0{stat.st_size}\0{change_stamp(stat)}",
                self._count)

    def _position(self, entry: SourceEntry) -> int:
        if not isinstance(entry.locator, (int, np.integer)):
            return self.position_of(entry.source_id)
        position = int(entry.locator)
        return position if 0 <= position < self._count else -1

    @property
    def id_prefix(self) -> str:
        """What the tiles' ids are named by before their position: ``<prefix>/<position>``."""
        return self._prefix

    def position_of(self, source_id: str) -> int:
        """The image of the array that ``source_id`` names; -1 for an id that names none.

        Parameters
        ----------
        source_id : str
            A tile id, ``<prefix>/<position>`` (:attr:`id_prefix`).
        """
        prefix, _, index = source_id.rpartition("/")
        if prefix != self._prefix or not (index.isascii() and index.isdigit()) or len(index) > 18:
            return -1
        position = int(index)
        return position if position < self._count else -1

    def tracks_changes(self) -> bool:
        """True: an array file may be saved again with other images since a match."""
        return True

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
        """Return (array-like, handle to close or None).

        Raises
        ------
        SourceError
            When the file cannot be read (one line naming it).
        """
        try:
            return self._open_store_unchecked()
        except SourceError:
            raise
        except _LOAD_ERRORS as error:
            raise SourceError(f"{self._where()}: cannot read ({_one_line(error)})") from None

    def _open_store_unchecked(self) -> tuple[Any, Any]:
        if self._kind == "h5":
            h5py = _import_h5py(self._path)
            handle = h5py.File(self._path, "r")
            try:
                # Checked again: the file may have changed since it was inspected.
                return _h5_dataset(h5py, handle, self._key, self._where()), handle
            except BaseException:
                handle.close()
                raise
        # The file as it is now: the layout read below is that of the inspected file.
        self._status()
        if self._array is not None:
            return self._array, None
        raw = self._raw_data()
        if raw is None:
            self._array = self._load_npz()
            return self._array, None
        offset, fortran_order = raw
        images = _FileImages(self._path, offset, self._shape, fortran_order)
        if _identity(images.status()) != _identity(self._opened):
            images.close()
            raise SourceError(f"{self._where()}: the file changed while it was opened; run again")
        return images, images

    def _read_block(
        self, store: Any, positions: np.ndarray,
    ) -> tuple[np.ndarray, list[tuple[str, bool] | None]]:
        """Read the images at ``positions``, and each one's error (None: read).

        The block is read at once; if that fails it is read again image by
        image, so one damaged chunk costs only the images stored in it. An
        error is its message and whether it may pass (:func:`~.base.is_transient`:
        a share that faltered, too many open files), so that the library
        tries the image again next run.
        """
        try:
            return self._read(store, positions), [None] * len(positions)
        except _LOAD_ERRORS:
            pass
        images = np.zeros((len(positions), *self._shape[1:]), np.uint8)
        errors: list[tuple[str, bool] | None] = []
        for slot, position in enumerate(positions.tolist()):
            try:
                images[slot] = store[position]
                errors.append(None)
            except _LOAD_ERRORS as error:
                errors.append((f"cannot read {self._where()}[{position}]: {_one_line(error)}",
                               is_transient(error)))
        return images, errors

    def _to_rgb(self, image: np.ndarray) -> np.ndarray:
        if image.ndim == 3 and image.shape[2] == 3:
            return image
        grey = image.reshape(image.shape[0], image.shape[1])
        return np.repeat(grey[:, :, None], 3, axis=2)

    def decode(
        self, entries: Sequence[SourceEntry], width_px: int, aspect: tuple[int, int] = SQUARE,
        crop: str = "centre",
    ) -> Iterator[DecodedTile]:
        """Yield the entries' tiles in order, reading bounded blocks of images.

        A block holds at most :data:`READ_CHUNK` images and
        :data:`READ_BLOCK_BYTES` bytes; an image that cannot be read yields an
        error for that image alone.
        """
        store, handle = self._open_store()
        try:
            for start in range(0, len(entries), self._block):
                chunk = entries[start:start + self._block]
                positions = np.fromiter((self._position(e) for e in chunk), np.int64, len(chunk))
                valid = positions >= 0
                errors: list[tuple[str, bool] | None] = []
                images = np.empty((0,), dtype=np.uint8)
                if valid.any():
                    images, errors = self._read_block(store, positions[valid])
                slot = 0
                for entry, ok in zip(chunk, valid.tolist(), strict=True):
                    if not ok:
                        message = f"{entry.source_id}: not in {self.name}"
                        yield DecodedTile(entry, None, None, message)
                        continue
                    failed = errors[slot]
                    slot += 1
                    if failed is not None:
                        yield DecodedTile(entry, None, None, failed[0], transient=failed[1])
                        continue
                    raw = np.ascontiguousarray(images[slot - 1])
                    tile = array_tile(self._to_rgb(raw), width_px, aspect, crop)
                    yield DecodedTile(entry, tile.pixels, content_hash(raw.data),
                                      window=tile.window, signature=tile.signature)
        finally:
            if handle is not None:
                handle.close()

    def content_hashes(self, entries: Sequence[SourceEntry]) -> Iterator[str | None]:
        """The hashes :meth:`decode` would give the entries: their images' bytes, read as there.

        Reads the images block by block as :meth:`decode` does, without making
        tiles of them; an image that cannot be read (or an array that cannot
        be opened now) is None, and is decoded to say why.
        """
        try:
            store, handle = self._open_store()
        except SourceError:
            yield from (None for _ in entries)
            return
        try:
            for start in range(0, len(entries), self._block):
                chunk = entries[start:start + self._block]
                positions = np.fromiter((self._position(e) for e in chunk), np.int64, len(chunk))
                valid = positions >= 0
                hashes: list[str | None] = [None] * len(chunk)
                if valid.any():
                    images, errors = self._read_block(store, positions[valid])
                    for slot, index in enumerate(np.flatnonzero(valid).tolist()):
                        if errors[slot] is None:
                            hashes[index] = content_hash(np.ascontiguousarray(images[slot]).data)
                yield from hashes
        finally:
            if handle is not None:
                handle.close()

    def image_size(self) -> tuple[int, int] | None:
        """Every image of the array has its ``(width, height)``."""
        return (int(self._shape[2]), int(self._shape[1]))

    def open_original(self, entry: SourceEntry) -> Image.Image:
        """Return the entry's image at its stored resolution, as RGB."""
        self._status()  # the file as it is now, not as it was mapped
        position = self._position(entry)
        if position < 0:
            raise SourceError(f"{entry.source_id}: not in {self.name}")
        store, handle = self._open_store()
        try:
            image = np.asarray(store[position])
        except _LOAD_ERRORS as error:
            raise SourceError(
                f"cannot read {self._where()}[{position}]: {_one_line(error)}"
            ) from None
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
    # Checked before the download: the file is HDF5 (gigabytes), useless without h5py.
    _import_h5py(Path(dataset))
    path = fetch_dataset(dataset, Path(cache_dir) / "downloads", show_progress)
    try:
        return ArrayFileSource(
            path, "images", show_progress, source_key=dataset, id_prefix=dataset, name=display
        )
    except SourceError as error:
        # Downloads are verified, so this copy was put there by hand (as a failed
        # download suggests), and is used as it is until removed.
        raise SourceError(f"{error}; delete it to download it again") from None
