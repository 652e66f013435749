"""CIFAR-10 and CIFAR-100 as tile sources.

Both the binary and the python (pickled) distributions are read, as the
tarball or as an extracted folder. Library order is the training images, in
batch order, then the test images; source ids are
``<dataset>/train/<i>`` and ``<dataset>/test/<i>``, numbered from 0 within
each split.

A tarball is read, never extracted: nothing is written anywhere, and only
regular members are read (links are skipped, so they cannot point at other
files). The archive's own bookkeeping is bounded too: at most
:data:`TAR_MAX_MEMBERS` members, extended (pax, GNU long name) headers of at
most :data:`TAR_HEADER_MAX_BYTES`, and no sparse members, which no CIFAR
tarball has, so a small hostile archive cannot make the reader hold gigabytes.

The python distribution is a pickle. It is read with an unpickler that admits
only the few numpy reconstructors such files need, so a tampered file cannot
run code.
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
import shlex
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..aspect import SQUARE
from ..errors import MosaicistError, SourceError
from ..imaging import IMAGE_EXTENSIONS, array_tile, content_hash
from .base import (
    DecodedTile,
    SourceEntry,
    TileSource,
    absolute_path,
    change_stamp,
    path_text,
)
from .download import fetch_dataset

#: Side of a CIFAR image, and bytes of its pixels (R, G and B planes).
SIDE = 32
PIXEL_BYTES = 3 * SIDE * SIDE

#: Tiles decoded per vectorised step, which bounds the memory of a step.
_DECODE_CHUNK = 1024

#: Images in each official batch file, by dataset and split. A batch may hold
#: fewer (subsets, test fixtures) but never more, so a file or tarball member
#: is refused by its size alone, before it is read.
_BATCH_RECORDS = {"cifar10": {"train": 10_000, "test": 10_000},
                  "cifar100": {"train": 50_000, "test": 10_000}}
#: Bytes a python-format batch may spend on each image beside its pixels
#: (label, file name, pickle framing; the official files spend about 32).
_PICKLE_RECORD_EXTRA = 256
#: Bytes read from a tarball member per step.
_MEMBER_READ_BYTES = 1 << 20

#: Members a tarball may have (the official ones have fewer than ten); each costs
#: memory in the reader, and an archive of empty members compresses to nothing.
TAR_MAX_MEMBERS = 10_000
#: Largest extended header (pax, GNU long name or link) of a tarball member,
#: which the reader holds in memory whole.
TAR_HEADER_MAX_BYTES = 1 << 20

#: Folder entries looked at, at most, to tell whether a folder that holds no CIFAR
#: batches holds pictures (said in the refusal).
_PICTURE_LOOK_ENTRIES = 10_000

_DISPLAY = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
#: The split names, which ``cifar10:test`` may be mistaken to choose.
_SPLITS = ("train", "test")


class _TarLimit(tarfile.TarError):
    """A tarball beyond the reader's bounds (a TarError, so tarfile passes it on)."""


class _BoundedTarInfo(tarfile.TarInfo):
    """A tar header that refuses what would be read into memory unbounded.

    tarfile reads a pax or GNU long-name header's data whole, and a sparse
    member's map a number at a time into a list, before the caller sees the
    member: a few megabytes of compressed zeros become gigabytes in memory.
    These overrides run first.
    """

    def _proc_member(self, archive: Any) -> Any:
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise _TarLimit(f"{self.name}: a sparse member, which a CIFAR tarball never has")
        if self.type in _EXTENDED_HEADER_TYPES and self.size > TAR_HEADER_MAX_BYTES:
            raise _TarLimit(
                f"an extended header of {self.size:,} bytes is over the limit of "
                f"{TAR_HEADER_MAX_BYTES:,}"
            )
        return super()._proc_member(archive)  # type: ignore[misc]  # private, not in typeshed

    def _proc_gnusparse_10(self, *args: Any) -> None:
        # A pax-described sparse member; its map is read from the member's data.
        raise _TarLimit(f"{self.name}: a sparse member, which a CIFAR tarball never has")


_EXTENDED_HEADER_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
                          tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)


@dataclass(frozen=True)
class _Layout:
    """One distribution format of a dataset: its folder and batch files."""

    folder: str
    batches: tuple[tuple[str, str], ...]  # (split, file name) in library order
    label_bytes: int | None  # bytes before each binary record; None for pickles


_LAYOUTS: dict[str, tuple[_Layout, ...]] = {
    "cifar10": (
        _Layout(
            "cifar-10-batches-bin",
            tuple(("train", f"data_batch_{i}.bin") for i in range(1, 6))
            + (("test", "test_batch.bin"),),
            1,
        ),
        _Layout(
            "cifar-10-batches-py",
            tuple(("train", f"data_batch_{i}") for i in range(1, 6)) + (("test", "test_batch"),),
            None,
        ),
    ),
    "cifar100": (
        _Layout("cifar-100-binary", (("train", "train.bin"), ("test", "test.bin")), 2),
        _Layout("cifar-100-python", (("train", "train"), ("test", "test")), None),
    ),
}


def _batch_max_bytes(dataset: str, layout: _Layout, split: str) -> int:
    """The most bytes a batch file of ``split`` can have in this format."""
    records = _BATCH_RECORDS[dataset][split]
    if layout.label_bytes is None:
        return records * (PIXEL_BYTES + _PICKLE_RECORD_EXTRA) + _MEMBER_READ_BYTES
    return records * (layout.label_bytes + PIXEL_BYTES)


def _check_batch_size(size: int, dataset: str, layout: _Layout, split: str, where: str) -> None:
    """Refuse a batch whose size no batch of this format can have, before reading it."""
    most = _batch_max_bytes(dataset, layout, split)
    if size > most:
        raise SourceError(
            f"{where}: {size:,} bytes is more than a {_DISPLAY[dataset]} {split} batch can be "
            f"({most:,} bytes)"
        )
    if layout.label_bytes is not None and size % (layout.label_bytes + PIXEL_BYTES):
        raise SourceError(
            f"{where}: {size:,} bytes is not a whole number of "
            f"{layout.label_bytes + PIXEL_BYTES}-byte CIFAR records"
        )


def _read_member(handle: Any, size: int, where: str) -> bytearray:
    """Read exactly ``size`` bytes of a tarball member or file, a bounded step at a time."""
    data = bytearray(size)
    view = memoryview(data)
    filled = 0
    while filled < size:
        count = handle.readinto(view[filled:filled + _MEMBER_READ_BYTES])
        if not count:
            raise SourceError(f"{where}: ends after {filled:,} of {size:,} bytes")
        filled += count
    return data


@dataclass
class _Batch:
    split: str
    container: Path
    pixels: np.ndarray  # (N, 3072) uint8, channel-major records


def _to_hwc(rows: np.ndarray) -> np.ndarray:
    """Channel-major records ``(k, 3072)`` to ``(k, 32, 32, 3)`` images."""
    # Interleaving the three planes with stack is several times faster than
    # a contiguous copy of the transposed view.
    plane = SIDE * SIDE
    stacked = np.stack([rows[:, :plane], rows[:, plane:2 * plane], rows[:, 2 * plane:]], axis=-1)
    return stacked.reshape(-1, SIDE, SIDE, 3)


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """The one use of ``_codecs.encode`` that protocol-2 pickles of bytes make."""
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError("refusing _codecs.encode other than to latin-1")
    return text.encode("latin-1")


def _numpy_reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return _reconstruct


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that resolves only what CIFAR python batches reference.

    The official files (pickled by Python 2) need numpy's array
    reconstructor, ``ndarray`` and ``dtype``; batches re-pickled by Python 3
    with protocol 2 also encode bytes through ``_codecs.encode``, admitted
    here only for latin-1 text. Every other global is refused.
    """

    _ALLOWED: dict[tuple[str, str], Any] = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def _load_pickled_batch(data: bytes | bytearray, where: str) -> np.ndarray:
    """Unpickle a python-format batch and return its ``(N, 3072)`` pixel rows."""
    try:
        batch = _BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
    except MosaicistError:
        raise
    except Exception as error:  # a hostile or broken pickle can raise anything
        raise SourceError(
            f"{where}: not a CIFAR python batch ({' '.join(str(error).split())})"
        ) from None
    pixels = batch.get(b"data", batch.get("data")) if isinstance(batch, dict) else None
    if (
        not isinstance(pixels, np.ndarray)
        or pixels.dtype != np.uint8
        or pixels.ndim != 2
        or pixels.shape[1] != PIXEL_BYTES
    ):
        raise SourceError(f"{where}: not a CIFAR python batch (no N x 3072 uint8 'data' array)")
    return np.ascontiguousarray(pixels)


def _binary_records(data: np.ndarray, label_bytes: int, where: str) -> np.ndarray:
    """View a binary batch's bytes as ``(N, 3072)`` pixel rows, skipping labels."""
    record = label_bytes + PIXEL_BYTES
    if data.size % record:
        raise SourceError(
            f"{where}: {data.size:,} bytes is not a whole number of {record}-byte CIFAR records"
        )
    return data.reshape(-1, record)[:, label_bytes:]


def _read_batch_file(path: Path, dataset: str, layout: _Layout, split: str) -> np.ndarray:
    where = str(path)
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            _check_batch_size(size, dataset, layout, split, where)
            # Read whole (a batch is at most tens of megabytes, as a tarball's are), not
            # memory mapped: a mapped file cut short later (extracted again over it)
            # would kill the process with a bus error when read.
            data = _read_member(handle, size, where)
    except OSError as error:
        raise SourceError(f"{path}: cannot read CIFAR batch ({error.strerror or error})") from None
    if layout.label_bytes is None:
        return _load_pickled_batch(data, where)
    return _binary_records(np.frombuffer(data, dtype=np.uint8), layout.label_bytes, where)


def _read_folder(folder: Path, dataset: str) -> list[_Batch]:
    """Read the batches of an extracted distribution (or the folder above one)."""
    for layout in _LAYOUTS[dataset]:
        for candidate in (folder, folder / layout.folder):
            files = [candidate / name for _, name in layout.batches]
            if all(file.is_file() for file in files):
                return [
                    _Batch(split, file, _read_batch_file(file, dataset, layout, split))
                    for (split, _), file in zip(layout.batches, files, strict=True)
                ]
    message = (f"{folder}: no {_DISPLAY[dataset]} batches found (expected the binary or python "
               f"distribution, e.g. {_LAYOUTS[dataset][0].folder}/)")
    if _holds_pictures(folder):
        # A folder of photos (CIFAR-10 exported as JPEGs, say) named as the dataset's
        # copy: the folder source reads it, and the message must say how to ask for it.
        # Its path alone is the spec wherever a source is given (--tiles, index's SOURCE).
        message += (f"; it holds pictures: a folder of pictures is given as its path alone "
                    f"(--tiles {shlex.quote(path_text(folder))}), without '{dataset}:'")
    raise SourceError(message)


def _holds_pictures(folder: Path) -> bool:
    """Whether a picture file (by its extension) is under ``folder``, as a folder source reads it.

    Looks at no more than :data:`_PICTURE_LOOK_ENTRIES` entries, so that a
    mistaken ``cifar10:~`` answers at once; hidden names and links to folders
    are passed over, as the folder source passes them over.
    """
    pending = [folder]
    seen = 0
    while pending and seen < _PICTURE_LOOK_ENTRIES:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    seen += 1
                    if seen > _PICTURE_LOOK_ENTRIES:
                        break
                    if entry.name.startswith("."):
                        continue
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(Path(entry.path))
                            continue
                    except OSError:
                        continue
                    # Trailing spaces and dots end no extension (see the folder source's).
                    _, extension = os.path.splitext(entry.name.rstrip(" ."))
                    if extension.lower() in IMAGE_EXTENSIONS:
                        return True
        except OSError:
            continue  # an unreadable subfolder: the others may tell
    return False


def _complete_layout(dataset: str, members: dict[str, bytearray]) -> _Layout | None:
    """The distribution format whose batches are all in ``members``, if any."""
    for layout in _LAYOUTS[dataset]:
        if all(name in members for _, name in layout.batches):
            return layout
    return None


def _read_tarball(path: Path, dataset: str) -> list[_Batch]:
    """Read the batches straight from a distribution tarball, in one pass."""
    wanted = {name: (layout, split) for layout in _LAYOUTS[dataset]
              for split, name in layout.batches}
    members: dict[str, bytearray] = {}
    try:
        # Streaming mode reads the gzip once, front to back.
        with tarfile.open(path, mode="r|*", tarinfo=_BoundedTarInfo) as archive:
            for count, member in enumerate(archive, 1):
                if count > TAR_MAX_MEMBERS:
                    raise SourceError(
                        f"{path}: more than {TAR_MAX_MEMBERS:,} members, which no "
                        f"{_DISPLAY[dataset]} tarball has"
                    )
                name = member.name.rsplit("/", 1)[-1]
                if member.isfile() and name in wanted and name not in members:
                    where = f"{path}: {name}"
                    # The header's size is checked before a byte is read.
                    _check_batch_size(member.size, dataset, *wanted[name], where)
                    handle = archive.extractfile(member)
                    if handle is not None:
                        members[name] = _read_member(handle, member.size, where)
                    if _complete_layout(dataset, members) is not None:
                        break  # what follows (meta files, or anything) is not needed
    # TypeError: tarfile's gzip reader calls ord() on a byte a 3-byte file lacks.
    except (tarfile.TarError, OSError, EOFError, zlib.error, TypeError) as error:
        raise SourceError(
            f"{path}: not a readable {_DISPLAY[dataset]} tarball ({' '.join(str(error).split())})"
        ) from None
    for layout in _LAYOUTS[dataset]:
        if all(name in members for _, name in layout.batches):
            batches = []
            for split, name in layout.batches:
                where = f"{path}: {name}"
                if layout.label_bytes is None:
                    pixels = _load_pickled_batch(members[name], where)
                else:
                    raw = np.frombuffer(members[name], dtype=np.uint8)
                    pixels = _binary_records(raw, layout.label_bytes, where)
                batches.append(_Batch(split, path, pixels))
            return batches
    raise SourceError(f"{path}: tarball holds no complete set of {_DISPLAY[dataset]} batches")


def read_cifar(path: Path, dataset: str) -> list[_Batch]:
    """Read a local CIFAR distribution: a tarball or an extracted folder.

    Raises
    ------
    SourceError
        When ``path`` is missing or holds no complete distribution.
    """
    if path.is_dir():
        return _read_folder(path, dataset)
    if path.is_file():
        return _read_tarball(path, dataset)
    if path.exists():  # a device or a pipe: "no such" would deny what the user sees
        raise SourceError(f"{path}: not a {_DISPLAY[dataset]} tarball or folder (a special "
                          "file, such as a device or a pipe)")
    raise SourceError(f"{path}: no such {_DISPLAY[dataset]} tarball or folder")


class CifarSource(TileSource):
    """CIFAR-10 or CIFAR-100, downloaded into the cache or read from a local copy.

    Parameters
    ----------
    dataset : {"cifar10", "cifar100"}
        Which dataset.
    path : str or None
        A local tarball or extracted folder (binary or python format); None
        downloads the binary tarball into ``cache_dir / "downloads"``.
    cache_dir : pathlib.Path
        The cache folder.
    show_progress : bool
        Draw a progress bar while downloading.
    """

    def __init__(
        self,
        dataset: str,
        path: str | None,
        cache_dir: Path,
        show_progress: bool = False,
    ) -> None:
        if dataset not in _LAYOUTS:
            raise SourceError(f"{dataset}: unknown CIFAR dataset (expected cifar10 or cifar100)")
        self.dataset = dataset
        self._cache_dir = Path(cache_dir)
        self._show_progress = show_progress
        self._path = absolute_path(path) if path else None  # one key for every spelling
        self._given = path
        if self._path is None:
            self.key = dataset
            self.name = _DISPLAY[dataset]
        else:
            # Text (the index stores the key): a path that is not UTF-8 is escaped.
            self.key = f"{dataset}:{path_text(self._path)}"
            self.name = f"{_DISPLAY[dataset]} ({path_text(self._path)})"
        if self._path is not None and not self._path.exists():
            # Refused before anything is indexed: the index of a missing copy was made first.
            raise SourceError(self._missing())
        self._batches: list[_Batch] | None = None
        self._offsets = np.zeros(1, dtype=np.int64)
        self._split_start: dict[str, int] = {}
        self._split_count: dict[str, int] = {}

    def _load(self) -> list[_Batch]:
        if self._batches is None:
            if self._path is None:
                tarball = fetch_dataset(
                    self.dataset, self._cache_dir / "downloads", self._show_progress
                )
                try:
                    batches = read_cifar(tarball, self.dataset)
                except SourceError as error:
                    # Downloads are verified, so this copy was put there by hand (as a
                    # failed download suggests), and is used as it is until removed.
                    raise SourceError(f"{error}; delete it to download it again") from None
            else:
                if not self._path.exists():
                    raise SourceError(self._missing())
                batches = read_cifar(self._path, self.dataset)
            counts = [len(batch.pixels) for batch in batches]
            self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            # Train batches all precede the test batch, so each split is one
            # contiguous run of library positions.
            for batch, start, count in zip(batches, self._offsets, counts, strict=False):
                self._split_start.setdefault(batch.split, int(start))
                self._split_count[batch.split] = self._split_count.get(batch.split, 0) + count
            self._batches = batches
        return self._batches

    def _missing(self) -> str:
        """What to say of a local copy that is not there."""
        assert self._path is not None
        if self._given in _SPLITS:
            # cifar10:test reads like a choice of split, which it is not.
            return (f"{self.dataset}:{self._given}: no CIFAR tarball or folder "
                    f"{self._path}; '{self.dataset}:PATH' reads a local copy, and no split "
                    f"can be chosen (the library is the training images, then the test "
                    f"images: --limit 50000 keeps the training ones)")
        return f"{self._path}: no such {_DISPLAY[self.dataset]} tarball or folder"

    def scan(self) -> list[SourceEntry]:
        """List every image, training images first; downloads on first use."""
        entries: list[SourceEntry] = []
        for batch in self._load():
            stat = batch.container.stat()
            first = self._split_start[batch.split]
            start = len(entries)
            prefix = f"{self.dataset}/{batch.split}/"
            entries.extend(
                SourceEntry(prefix + str(start + row - first), stat.st_size, change_stamp(stat),
                            start + row)
                for row in range(len(batch.pixels))
            )
        return entries

    def _position(self, entry: SourceEntry) -> int:
        """Library position of ``entry``: its locator, else parsed from its id."""
        if isinstance(entry.locator, (int, np.integer)):
            return int(entry.locator)
        parts = entry.source_id.split("/")
        if len(parts) == 3 and parts[0] == self.dataset and parts[1] in self._split_start:
            index = int(parts[2]) if parts[2].isdigit() else -1
            if 0 <= index < self._split_count[parts[1]]:
                return self._split_start[parts[1]] + index
        return -1

    def _gather(self, positions: np.ndarray) -> np.ndarray:
        """Pixel rows ``(k, 3072)`` for valid library positions, batch by batch."""
        batches = self._load()
        owner = np.searchsorted(self._offsets, positions, side="right") - 1
        if len(positions) and owner[0] == owner[-1] and (
            positions[-1] - positions[0] == len(positions) - 1
        ) and np.all(np.diff(positions) == 1):
            # The usual case, a run of consecutive tiles: a view, no copy.
            first = positions[0] - self._offsets[owner[0]]
            return batches[owner[0]].pixels[first:first + len(positions)]
        rows = np.empty((len(positions), PIXEL_BYTES), dtype=np.uint8)
        for index in np.unique(owner):
            selected = owner == index
            rows[selected] = batches[index].pixels[positions[selected] - self._offsets[index]]
        return rows

    def _chunks(self, entries: Sequence[SourceEntry]
                ) -> Iterator[tuple[Sequence[SourceEntry], list[bool], np.ndarray]]:
        """The entries a few thousand at a time: each chunk, which are in the dataset, their rows.

        The rows ``(k, 3072)`` are those of the entries marked True, in order
        (:meth:`_gather`).
        """
        self._load()
        total = int(self._offsets[-1])
        for start in range(0, len(entries), _DECODE_CHUNK):
            chunk = entries[start:start + _DECODE_CHUNK]
            positions = np.fromiter((self._position(e) for e in chunk), np.int64, len(chunk))
            valid = (positions >= 0) & (positions < total)
            yield chunk, valid.tolist(), self._gather(positions[valid])

    def decode(
        self, entries: Sequence[SourceEntry], width_px: int, aspect: tuple[int, int] = SQUARE,
        crop: str = "centre",
    ) -> Iterator[DecodedTile]:
        """Yield the entries' tiles in order, a few thousand at a time."""
        for chunk, valid, rows in self._chunks(entries):
            images = _to_hwc(rows)
            slot = 0
            for entry, ok in zip(chunk, valid, strict=True):
                if not ok:
                    yield DecodedTile(entry, None, None, f"{entry.source_id}: not in {self.name}")
                    continue
                tile = array_tile(images[slot], width_px, aspect, crop)
                yield DecodedTile(entry, tile.pixels, content_hash(rows[slot].data),
                                  window=tile.window, signature=tile.signature)
                slot += 1

    def content_hashes(self, entries: Sequence[SourceEntry]) -> Iterator[str | None]:
        """The hashes :meth:`decode` would give the entries (their pixel rows), without tiles.

        The index asks for them where a batch file's stamp is too recent to
        trust (see :meth:`TileSource.content_hashes`): the rows are hashed
        as :meth:`decode` hashes them; an entry that is not in the dataset is
        None (decoded, to say so).
        """
        for _, valid, rows in self._chunks(entries):
            hashes = iter(content_hash(row.data) for row in rows)
            yield from (next(hashes) if ok else None for ok in valid)

    def image_size(self) -> tuple[int, int] | None:
        """Every CIFAR image is 32 x 32."""
        return (SIDE, SIDE)

    def open_original(self, entry: SourceEntry) -> Image.Image:
        """Return the 32 x 32 RGB image of ``entry``."""
        self._load()
        position = self._position(entry)
        if not 0 <= position < int(self._offsets[-1]):
            raise SourceError(f"{entry.source_id}: not in {self.name}")
        rows = self._gather(np.array([position], dtype=np.int64))
        return Image.fromarray(_to_hwc(rows)[0], "RGB")
