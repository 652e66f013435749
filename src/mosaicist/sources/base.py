"""The interface every tile source implements."""

from __future__ import annotations

import abc
import contextlib
import errno
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from ..aspect import SQUARE
from ..crop import Window
from ..errors import MosaicistError, printable
from ..imaging import ImageReadError, content_hash, converts_profile, read_tile_bytes
from ..paths import expanded

#: Whether a scan prints what it left out (links to folders, pipes and devices, files
#: it may not list) on stderr; ``-q`` updates scan with it off (:func:`scan_warnings`).
_SCAN_WARNINGS: ContextVar[bool] = ContextVar("scan_warnings", default=True)


@contextlib.contextmanager
def scan_warnings(shown: bool) -> Iterator[None]:
    """Show (or hide, under ``-q``) the warnings of the scans made in this block.

    Parameters
    ----------
    shown : bool
        False to keep the scans' warnings off stderr.
    """
    token = _SCAN_WARNINGS.set(shown)
    try:
        yield
    finally:
        _SCAN_WARNINGS.reset(token)


def warn_of_scan(text: str) -> None:
    """Print one warning of a scan on stderr, unless :func:`scan_warnings` hides them."""
    if _SCAN_WARNINGS.get():
        print(printable(text), file=sys.stderr)


class SourceEntry(NamedTuple):
    """One candidate tile as a source lists it, before decoding.

    A named tuple, because a scan makes one per file (millions, in big
    libraries) and tuples are the cheapest records to create.

    Attributes
    ----------
    source_id : str
        Stable, unique name of the tile in its source: a folder's relative
        POSIX path (``cats/0001.jpg``) or a dataset's ``cifar10/train/12345``.
        Always valid Unicode text: a file name that is not valid UTF-8 is
        written with :func:`name_to_text` (``caf\\xe9.jpg``).
    size : int
        Size in bytes of the file that holds the tile (for datasets, the
        container file); with ``mtime_ns`` it tells the index whether the tile
        may have changed since it was indexed.
    mtime_ns : int
        When that file last changed, in nanoseconds: :func:`change_stamp`, the
        later of its modification and status-change times (the name is the
        index's column, kept from when it was the modification time alone).
    locator : Any
        Whatever the source needs to find the tile again (a path, an index).
    """

    source_id: str
    size: int
    mtime_ns: int
    locator: Any = None


def absolute_path(path: str | os.PathLike[str]) -> Path:
    """``path`` (``~`` expanded) made absolute, with ``..`` dropped where that names the same place.

    ``a/../lib`` and ``lib`` must give one source key (one index), but
    :func:`os.path.abspath` drops ``..`` as text, which is not where the
    system goes after a symbolic link (``link/..`` is the link target's
    parent): there the path is kept as :meth:`pathlib.Path.absolute` gives it.
    Symbolic links are never resolved otherwise, so a folder reached by a
    link keeps its own key.

    Examples
    --------
    >>> str(absolute_path("/photos/old/../new"))
    '/photos/new'
    """
    # A ~user of no user is a name in the current folder, as the shell leaves it.
    given = expanded(path).absolute()
    normalised = Path(os.path.abspath(given))
    if normalised == given or os.path.realpath(normalised) == os.path.realpath(given):
        return normalised
    return given


def change_stamp(status: os.stat_result) -> int:
    """When a file last changed, in nanoseconds, as far as its status can tell.

    The later of its modification time and its status-change time
    (``st_ctime``). The modification time alone can be set back
    (``os.utime``; ``cp -p``, ``rsync -t`` and ``tar`` do it), so a file
    replaced by another of the same size could keep its stamp and the index
    would serve the old tile; the status-change time moves with every write,
    rename and ``utime`` and cannot be set. A change of owner or mode moves
    it too: the tile is then decoded again and found unchanged (its content
    hash), which costs a decode, never a wrong tile.

    Parameters
    ----------
    status : os.stat_result
        The file's status (``os.stat``, ``os.DirEntry.stat``).
    """
    return max(status.st_mtime_ns, status.st_ctime_ns)


# A backslash, or a byte of a file name that is not UTF-8 (which Python's
# file system decoding turns into a lone surrogate U+DC80..U+DCFF).
_NEEDS_ESCAPE = re.compile("[\\\\\udc80-\udcff]")
_ESCAPE = re.compile(r"\\(\\|x[0-9a-fA-F]{2})")


def _escape(match: re.Match[str]) -> str:
    character = match.group()
    if character == "\\":
        return "\\\\"
    return f"\\x{ord(character) - 0xDC00:02x}"


def name_to_text(name: str) -> str:
    r"""Return a file name (or relative path) as plain text that maps back to it exactly.

    File names are bytes on POSIX, and not every byte string is valid UTF-8
    (old disks, network shares): Python hands such names over with each bad
    byte as a lone surrogate, which SQLite, JSON, CSV and terminals refuse.
    Here each such byte is written ``\xHH`` and a backslash ``\\``; every
    other character is kept, so ordinary names are unchanged. The result is
    readable in messages and reversed by :func:`text_to_name`.

    Parameters
    ----------
    name : str
        A name as :func:`os.fsdecode` gives it (``os.scandir``, ``os.listdir``).

    Returns
    -------
    str
        Valid Unicode text.

    Examples
    --------
    >>> name_to_text(os.fsdecode(b"caf\xe9.jpg"))
    'caf\\xe9.jpg'
    >>> name_to_text("café.jpg")
    'café.jpg'
    """
    if name.isascii() and "\\" not in name:
        return name  # the common case, without encoding anything
    text = os.fsencode(name).decode("utf-8", "surrogateescape")
    return _NEEDS_ESCAPE.sub(_escape, text)


def text_to_name(text: str) -> str:
    r"""Return the file name that :func:`name_to_text` wrote as ``text``.

    A backslash that starts neither ``\\`` nor ``\xHH`` is taken as it is,
    so ids written before names were escaped still resolve.

    Parameters
    ----------
    text : str
        Text from :func:`name_to_text` (a tile id of a placements file...).

    Returns
    -------
    str
        The name as :func:`os.fsdecode` gives it, for :func:`open` and
        :mod:`os` calls.

    Examples
    --------
    >>> os.fsencode(text_to_name("caf\\xe9.jpg"))
    b'caf\xe9.jpg'
    """
    if text.isascii() and "\\" not in text:
        return text  # the same in every file system encoding
    # Other letters too go through the bytes: where the file system's encoding is not
    # UTF-8 (LC_ALL=C, an ASCII one), a name such as 日本.png is held as its bytes'
    # surrogates, and the text alone named no file there.
    raw = bytearray()
    start = 0
    for match in _ESCAPE.finditer(text):
        raw += text[start:match.start()].encode("utf-8", "surrogateescape")
        escape = match.group(1)
        raw += b"\\" if escape == "\\" else bytes([int(escape[1:], 16)])
        start = match.end()
    raw += text[start:].encode("utf-8", "surrogateescape")
    return os.fsdecode(bytes(raw))


def readable(text: str) -> str:
    r"""Return ``text`` (a message that may quote file names) as valid Unicode.

    Bytes of names that are not UTF-8 are shown ``\xHH``; the rest is kept.
    For messages only: unlike :func:`name_to_text` it is not reversible.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text


def path_text(path: str | os.PathLike[str]) -> str:
    r"""Return a path as the text that source keys, names and ids hold.

    The path itself when it is valid UTF-8, so that the keys (and indexes)
    of such paths never change; else :func:`name_to_text` of it, since the
    index stores keys as text and a lone surrogate cannot be encoded.

    Parameters
    ----------
    path : str or path-like
        A path as :func:`os.fsdecode` gives it.

    Returns
    -------
    str
        Valid Unicode text.

    Examples
    --------
    >>> path_text("/photos/café.npy"), path_text(os.fsdecode(b"/photos/caf\xe9.npy"))
    ('/photos/café.npy', '/photos/caf\\xe9.npy')
    """
    text = os.fspath(path)
    return text if readable(text) == text else name_to_text(text)


#: ``errno`` values of a read that failed for a reason of the moment, not of the file: the
#: device or a network share faltered (EIO, ETIMEDOUT, ESTALE, a dropped connection), the
#: process or system was short of descriptors or memory (EMFILE, ENFILE, ENOMEM, ENOBUFS),
#: the call was interrupted or would block (EINTR, EAGAIN), the file was busy (EBUSY).
#: Read again later, such a file may well be fine.
TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name) for name in (
        "EIO", "EAGAIN", "EWOULDBLOCK", "EINTR", "EMFILE", "ENFILE", "ENOMEM", "ENOBUFS",
        "ETIMEDOUT", "ESTALE", "EBUSY", "EDEADLK", "ENOLCK", "ECONNRESET", "ECONNABORTED",
        "ECONNREFUSED", "ENETDOWN", "ENETUNREACH", "ENETRESET", "EHOSTDOWN", "EHOSTUNREACH",
        "EREMOTEIO", "ENOLINK", "ECOMM", "ETIME",
    ) if hasattr(errno, name)
)


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` is a failed read that may pass (see :data:`TRANSIENT_ERRNOS`).

    Only an :class:`OSError` with such an ``errno``: a file that is not a
    picture, is truncated or is too large fails the same way every time.

    Parameters
    ----------
    error : BaseException
        What reading a file raised.

    Returns
    -------
    bool
        True when reading it again later may succeed.
    """
    return isinstance(error, OSError) and error.errno in TRANSIENT_ERRNOS


@dataclass
class DecodedTile:
    """The outcome of decoding one entry: pixels and hash, or an error.

    ``window`` is the crop window the pixels show, in the original's
    full-size pixels (after EXIF orientation); None when the source does not
    say (a centred window, then). ``signature`` is the photo's
    near-duplicate signature, ``(hash, packed mean colour, mirror's hash)``
    (:func:`mosaicist.imaging.mirrored_signature`); a source may give
    ``(hash, packed mean colour)`` alone (:func:`mosaicist.dedupe.signature`:
    its mirrored copies are then only grouped with it from their side),
    and None lets the library compute it from the pixels. ``transient``
    marks an ``error`` that may pass (a read that failed for a reason of the
    moment, :func:`is_transient`): the library reports the entry but does
    not remember the failure, and tries it again on the next update; any
    other error is remembered until the entry changes.
    """

    entry: SourceEntry
    pixels: np.ndarray | None
    content_hash: str | None
    error: str | None = None
    window: Window | None = None
    signature: tuple[int, ...] | None = None
    transient: bool = False


class TileSource(abc.ABC):
    """A collection of tile images in a defined order.

    Attributes
    ----------
    key : str
        Stable identity of the source, used to name its index in the cache
        (e.g. ``folder:/abs/path`` or ``cifar10``).
    name : str
        Human-readable name for messages.
    """

    key: str
    name: str
    #: Whether the source's pictures are files that may embed ICC colour profiles,
    #: :meth:`decode` then taking ``colour_profiles`` (``ignore`` or ``convert``) as a
    #: keyword. The library passes it to such sources only; the others' pixels are
    #: taken as sRGB whatever the setting, and they have one index for both.
    reads_profiles: bool = False

    @abc.abstractmethod
    def scan(self) -> list[SourceEntry]:
        """List the source's entries in library order (may download first)."""

    @abc.abstractmethod
    def decode(
        self, entries: Sequence[SourceEntry], width_px: int, aspect: tuple[int, int] = SQUARE,
        crop: str = "centre",
    ) -> Iterator[DecodedTile]:
        """Decode ``entries`` into tiles, yielding in order.

        Each tile is the entry's crop window for ``crop`` (the largest of
        ``aspect``, see :mod:`mosaicist.crop`) resized to ``width_px`` by
        ``height_for(width_px, aspect)``, with the window in
        :attr:`DecodedTile.window`. A bad entry yields a
        :class:`DecodedTile` whose ``error`` says why; it never raises for
        one bad entry. (Sources written before aspects take ``entries`` and
        ``width_px`` only; the library calls them so for square centre crops.
        A source that sets :attr:`reads_profiles` also takes the keyword
        ``colour_profiles``.)

        Parameters
        ----------
        entries : sequence of SourceEntry
            What to decode, from :meth:`scan`.
        width_px : int
            Width of each tile in pixels.
        aspect : tuple of int
            ``(width, height)`` of the tiles' shape, in lowest terms.
        crop : {"centre", "subject"}
            How the window of that shape is placed in each photo.

        Yields
        ------
        DecodedTile
            One per entry, in the order of ``entries``.
        """

    @abc.abstractmethod
    def open_original(self, entry: SourceEntry) -> Image.Image:
        """Open the tile's original image at full resolution (for re-rendering).

        Parameters
        ----------
        entry : SourceEntry
            The tile, as :meth:`scan` listed it.

        Returns
        -------
        PIL.Image.Image
            The whole photo, before any crop.
        """

    def content_hashes(self, entries: Sequence[SourceEntry]) -> Iterator[str | None]:
        """The content hash each entry would decode with now, read without decoding.

        The index asks this of entries it cannot trust by their stamps alone
        (written in the same clock tick as it last read them, see
        :mod:`mosaicist.library._update`): an entry whose hash is the one
        stored is unchanged and is not decoded again. The default reads the
        entry's local file (:meth:`local_path`) and hashes its bytes, which is
        what a folder's tiles store; a source that hashes something else must
        override it (or yield None, and its entries are decoded again).

        Parameters
        ----------
        entries : sequence of SourceEntry
            Entries of :meth:`scan`.

        Yields
        ------
        str or None
            One per entry, in order: the hash :meth:`decode` would give it,
            or None where it cannot be told without decoding (no local file,
            a file that cannot be read now).
        """
        for entry in entries:
            try:
                path = self.local_path(entry)
                yield None if path is None else content_hash(read_tile_bytes(path))
            except (OSError, ImageReadError, MosaicistError):
                yield None

    def converting_profiles(self, entries: Sequence[SourceEntry]) -> Iterator[bool | None]:
        """Whether each entry decodes otherwise with ``colour_profiles="convert"``.

        Asked, once, of the tiles of an index made while profiles were ignored
        that is to serve ``convert``: only those that may change are decoded
        again. The default reads the header of the entry's local file
        (:func:`mosaicist.imaging.converts_profile`), a few at a time on
        threads; an entry without one is False (its pixels carry no profile).

        Parameters
        ----------
        entries : sequence of SourceEntry
            Entries of :meth:`scan`.

        Yields
        ------
        bool or None
            One per entry, in order; None where it cannot be told without
            decoding (a file that cannot be read now).
        """
        from concurrent.futures import ThreadPoolExecutor

        def converts(entry: SourceEntry) -> bool | None:
            try:
                path = self.local_path(entry)
            except (OSError, MosaicistError):
                return None
            return False if path is None else converts_profile(path)

        # Threads: reading headers waits on the disk or the share, not on the interpreter.
        with ThreadPoolExecutor(8) as pool:
            for start in range(0, len(entries), 4096):  # a million futures at once otherwise
                yield from pool.map(converts, entries[start:start + 4096])

    def left_out_note(self) -> str | None:
        """What the last :meth:`scan` left out without reading it, in a few words, or None.

        Said with the error of a library that came out empty, so that a
        folder of files the source does not take (camera RAW files...) is not
        reported as a folder without pictures. None (the default): nothing
        to say.
        """
        return None

    def scan_fingerprint(self) -> tuple[str, int] | None:
        """A cheap stand-in for :meth:`scan`: a text equal whenever the scan is, and its length.

        For sources whose scan follows from a few facts (an array file's size,
        time and shape), so that opening an unchanged library of a million
        images skips making a million entries. None (the default): the
        library compares the scan itself.
        """
        return None

    def image_size(self) -> tuple[int, int] | None:
        """The ``(width, height)`` of every image, when all have one size (datasets, arrays).

        None (the default) when sizes vary or are unknown before decoding. A
        library of one size whose images already have the tiles' aspect makes
        the same tiles under every crop mode, and indexes them once.
        """
        return None

    def local_path(self, entry: SourceEntry) -> str | None:
        """Return the original file's path when the tile is a local file, else None.

        Parameters
        ----------
        entry : SourceEntry
            The tile, as :meth:`scan` listed it.
        """
        return None

    def local_root(self) -> Path | None:
        """Return the folder that source ids are relative paths in, when the tiles are local files.

        A Deep Zoom viewer links each cell to its original under this folder.
        None (the default) for datasets and image arrays.
        """
        return None

    def tracks_changes(self) -> bool:
        """Whether placements record the tiles' content hashes, for a render to compare.

        True for tiles a user may edit since a match: local files (the
        default, where :meth:`local_root` names their folder) and image
        arrays, whose render compares :meth:`content_hashes`; False for a
        dataset's download.
        """
        return self.local_root() is not None
