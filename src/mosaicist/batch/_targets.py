"""What a batch makes: its targets, from files, folders, list files and videos.

A batch is given items on the command line; each is

* an image file (any :data:`~mosaicist.imaging.IMAGE_EXTENSIONS`; a GIF is
  its first frame, as for ``make``): one target, output ``<stem>.<format>``;
* a video file (:data:`VIDEO_SUFFIXES`): every frame a target, outputs
  ``<video stem>-<frame:06d>.<format>`` (frames counted from 0);
* a folder: the images and videos directly inside it, in sorted name order
  (hidden files and other extensions are left out, subfolders are not
  entered);
* a list file (:data:`LIST_SUFFIXES`): one image, video or folder per line,
  relative paths taken from the list's folder; blank lines and lines
  starting with ``#`` are skipped. It is read as UTF-8, with or without a
  byte-order mark (a name's bytes that are not UTF-8 are that file's name),
  or as UTF-16 with its byte-order mark.

Problems with one item (a missing file, a pipe, a folder or list file that
names no target, a name whose output another target already writes) reject
that item only, with a one-line reason; the rest of the batch goes on.
"""

from __future__ import annotations

import codecs
import errno
import os
import re
import stat
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..imaging import IMAGE_EXTENSIONS
from ..paths import expanded

#: Suffixes read as videos, every frame a target (decoded with PyAV).
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg",
                            ".ts", ".wmv", ".flv", ".ogv", ".3gp"})
#: Suffixes read as list files: one target per line.
LIST_SUFFIXES = frozenset({".txt", ".list", ".lst"})


def frame_stem(video_stem: str, index: int) -> str:
    """The output stem of frame ``index`` (from 0) of a video: ``clip-000012``.

    Parameters
    ----------
    video_stem : str
        The video's own output stem.
    index : int
        The frame's position in the video, from 0.

    Returns
    -------
    str
    """
    return f"{video_stem}-{index:06d}"


@dataclass(frozen=True)
class BatchTarget:
    """One item of a batch: an image, or a video whose frames are targets.

    Attributes
    ----------
    path : pathlib.Path
        The file, absolute.
    name : str
        The file as the user named it (for messages).
    stem : str
        Its output stem (a video's frames add ``-<frame:06d>``).
    video : bool
        Whether every frame of it is a target.
    folder : pathlib.Path or None
        The folder (resolved) it was found in, named directly or in a list
        file; None for a file named itself.
    """

    path: Path
    name: str
    stem: str
    video: bool
    folder: Path | None = field(default=None, compare=False)

    def output_stem(self, frame: int | None = None) -> str:
        """The output stem of this image, or of frame ``frame`` of this video.

        Parameters
        ----------
        frame : int, optional
            The frame's position, from 0; None for an image.

        Returns
        -------
        str
        """
        return self.stem if frame is None else frame_stem(self.stem, frame)


@dataclass(frozen=True)
class Rejected:
    """An item that is not a usable target, and why (one line)."""

    name: str
    message: str


def collect_targets(
    items: Iterable[str | os.PathLike[str]],
) -> tuple[list[BatchTarget], list[Rejected]]:
    """Expand the batch's items into targets, in order.

    Parameters
    ----------
    items : iterable of path-like
        Image files, video files, folders and list files (see the module's
        description).

    Returns
    -------
    targets : list of BatchTarget
        Each image and video once (a file named twice counts once), in the
        order given, folders expanded in sorted name order.
    rejected : list of Rejected
        Items that cannot be used: missing, unreadable, not a regular file
        (a pipe), of another kind, a folder without an image or video, a
        list naming a list or nothing, a link in a folder whose target is
        missing, or an output name another target already has.
    """
    targets: list[BatchTarget] = []
    rejected: list[Rejected] = []
    seen: set[Path] = set()
    images: dict[str, Path] = {}
    videos: dict[str, Path] = {}

    def add(path: Path, shown: str, folder: Path | None = None) -> None:
        resolved = path.resolve()
        if resolved in seen:
            return
        seen.add(resolved)
        video = path.suffix.lower() in VIDEO_SUFFIXES
        stem = path.stem
        clash = _clash(_folded(stem), video, images, videos)
        if clash is not None:
            rejected.append(Rejected(shown, f"its outputs would have the names of {clash}'s; "
                                            "rename one of them"))
            return
        (videos if video else images)[_folded(stem)] = resolved
        targets.append(BatchTarget(resolved, shown, stem, video, folder))

    for item in items:
        # "~" as make_mosaic and the list files' lines read it (the command line's shell
        # has expanded it already).
        path = expanded(item)
        shown = str(item)
        problem = _unusable(path)
        if problem is not None:
            rejected.append(Rejected(shown, problem))
        elif path.is_dir():
            entries, broken = _folder_entries(path)
            rejected.extend(broken)
            if not entries and not broken:
                # Named to be made: a wrong folder must not pass for a finished batch.
                rejected.append(Rejected(shown, _EMPTY_FOLDER))
            for entry in entries:
                add(entry, str(entry), path.resolve())
        elif path.suffix.lower() in LIST_SUFFIXES:
            try:
                lines = _list_lines(path.read_bytes())
            except (OSError, UnicodeDecodeError) as error:
                rejected.append(Rejected(shown, f"cannot read list file: {_reason(error)}"))
                continue
            named_any = False
            for number, line in enumerate(lines, 1):
                text = line.strip()
                if not text or text.startswith("#"):
                    continue
                named_any = True
                named = expanded(text)
                if not named.is_absolute():
                    named = path.parent / named
                where = f"{shown}:{number}: {text}"
                problem = _unusable(named)
                if problem is None and named.suffix.lower() in LIST_SUFFIXES:
                    problem = "a list file cannot name another list file"
                if problem is not None:
                    rejected.append(Rejected(where, problem))
                elif named.is_dir():
                    entries, broken = _folder_entries(named)
                    rejected.extend(broken)
                    if not entries and not broken:
                        rejected.append(Rejected(where, _EMPTY_FOLDER))
                    for entry in entries:
                        add(entry, str(entry), named.resolve())
                else:
                    add(named, str(named))
            if not named_any:
                rejected.append(Rejected(shown, "no image, video or folder in this list file "
                                                "(only blank lines and # comments)"))
        else:
            add(path, shown)
    return targets, rejected


#: Why a folder named as an item gives no target.
_EMPTY_FOLDER = ("no image or video in this folder (subfolders are not entered; "
                 "hidden files and other extensions are left out)")


def _list_lines(data: bytes) -> list[str]:
    """The lines of a list file's bytes, each a file name as the file system spells it.

    The bytes of names, decoded as :func:`os.fsdecode` decodes names (UTF-8
    on most systems, its bytes that are not UTF-8 kept: ``ls > list.txt`` in
    a folder of Latin-1 names writes the names' own bytes, and they name
    those files); UTF-16 with its byte-order mark (a Windows "Unicode"
    text), as UTF-8. Split at line ends only (LF, CR LF, CR): the
    other separators :meth:`str.splitlines` knows (form feed, U+2028...)
    may be part of a name.
    """
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        data = data.decode("utf-16").encode("utf-8")
    else:
        # A UTF-8 byte-order mark (Notepad's) is not part of the first line.
        data = data.removeprefix(codecs.BOM_UTF8)
    # Decoded as the file system decodes names: where its encoding is not UTF-8 (LC_ALL=C),
    # a name's other letters are held as its bytes there, and were "not found" as text.
    return re.split(r"\r\n|\r|\n", os.fsdecode(data))


#: Why a pipe or a device gives no target.
_NOT_REGULAR = "not a regular file (a pipe or device); save it to a file first"


def _unusable(path: Path) -> str | None:
    """Why ``path`` cannot be an item of a batch, or None."""
    try:
        # Not Path.exists(): it raises for a name too long or a folder on the way that
        # cannot be searched, which would end the whole batch for one item.
        status = path.stat()
    except OSError as error:
        return _missing(path) if error.errno in (errno.ENOENT, errno.ENOTDIR) else _reason(error)
    except ValueError:  # a NUL in the name
        return _missing(path)
    if stat.S_ISDIR(status.st_mode):
        return None if os.access(path, os.R_OK | os.X_OK) else "folder is not readable"
    if not stat.S_ISREG(status.st_mode):
        # Opening a pipe blocks until something writes to it, in this process (videos
        # and list files are read here), where no signal can stop the batch.
        return _NOT_REGULAR
    suffix = path.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS | VIDEO_SUFFIXES | LIST_SUFFIXES:
        known = "an image, a video, a folder or a list file (.txt)"
        return f"not {known}: unknown extension {suffix or '(none)'!r}"
    return None


def _missing(path: Path) -> str:
    """What a missing item was meant to be, as ``make`` says it: "target file not found"."""
    suffix = path.suffix.lower()
    if suffix in LIST_SUFFIXES:
        return "list file not found"
    if suffix in IMAGE_EXTENSIONS | VIDEO_SUFFIXES:
        return "target file not found"
    return "target file or folder not found"  # a folder, most likely


def _folder_entries(folder: Path) -> tuple[list[Path], list[Rejected]]:
    """The images and videos directly in ``folder``, in sorted name order.

    A link named as an image or a video whose target is missing (or a loop of
    links), and a pipe or a device so named (or a link to one), are rejected
    by name, not left out: they were meant as targets (they were dropped
    without a word, where a tile folder names them).
    """
    wanted = IMAGE_EXTENSIONS | VIDEO_SUFFIXES
    entries = []
    broken = []
    for entry in sorted(os.scandir(folder), key=lambda entry: entry.name):
        if entry.name.startswith(".") or Path(entry.name).suffix.lower() not in wanted:
            continue
        try:
            mode = entry.stat().st_mode  # through links
        except OSError as error:  # ELOOP, ENOENT: a broken link
            broken.append(Rejected(entry.path, f"broken link: {_reason(error)}"))
            continue
        if stat.S_ISREG(mode):
            entries.append(Path(entry.path))
        elif not stat.S_ISDIR(mode):  # a folder so named is left out, as folders are
            broken.append(Rejected(entry.path, _NOT_REGULAR))
    return entries, broken


def _folded(stem: str) -> str:
    """``stem`` as a file system that ignores case (and Unicode's forms) compares names.

    macOS's and Windows' usual file systems take ``Bear.png`` and ``bear.png`` (or an
    ``é`` composed and decomposed) for one file: two targets so named wrote one output,
    the second over the first, and a resumed batch then skipped the second as done.
    """
    return unicodedata.normalize("NFC", stem).casefold()


def _clash(stem: str, video: bool, images: dict[str, Path], videos: dict[str, Path]
           ) -> Path | None:
    """The target whose outputs a new target's would overwrite, or None (stems folded:
    :func:`_folded`)."""
    if video:
        if stem in videos:
            return videos[stem]
        frame = re.compile(re.escape(stem) + r"-\d{6,}")
        return next((path for name, path in images.items() if frame.fullmatch(name)), None)
    if stem in images:
        return images[stem]
    found = re.fullmatch(r"(.*)-\d{6,}", stem)
    if found is not None and found.group(1) in videos:
        return videos[found.group(1)]
    return None


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__
