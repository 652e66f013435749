"""Where mosaicist keeps its caches, and writing files and folders atomically.

Every file or folder mosaicist makes (outputs, reports, caches, indexes) is
written under a temporary name beside its final one and renamed into place
when complete, with :func:`atomic_path` or :func:`atomic_folder`: a reader
never sees a half-written file under the final name, and an interrupted run
leaves at most a hidden temporary behind, which it removes when it can.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import re
import shutil
import stat
import sys
import tempfile
import time
import tokenize
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import platformdirs

from .errors import MosaicistError, OptionError, shown_type

CACHE_ENV = "MOSAICIST_CACHE_DIR"

#: What ``np.load`` raises for a cached ``.npy``/``.npz`` file that is missing,
#: damaged or cut short (a truncated archive is a ``BadZipFile``; a damaged array
#: header can fail NumPy's tokenizer or parser): the caller treats the entry as absent
#: and makes it again.
STORED_ARRAY_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile,
                       SyntaxError, tokenize.TokenError)


#: A URL's start, its scheme and ``//`` (``https://``, ``file://``...; a Windows drive,
#: ``C:\\``, has no ``//``): no local path, and ``Path`` would fold its ``//``.
URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def expanded(path: str | os.PathLike[str]) -> Path:
    """``path`` with ``~`` expanded; a ``~user`` of no user here stays as written.

    ``Path.expanduser`` raises ``RuntimeError`` ("Could not determine home
    directory") there; as written, the name is then not found like any other.

    Parameters
    ----------
    path : str or os.PathLike
        A path as a user gave it.

    Returns
    -------
    pathlib.Path
        The path, ``~`` expanded where it can be.
    """
    given = Path(path)
    try:
        return given.expanduser()
    except RuntimeError:
        return given


def dangling_link(path: str | os.PathLike[str]) -> str | None:
    """Why ``path``, which does not exist, is a link that leads nowhere; None otherwise.

    ``Path.exists`` is False both for a missing name and for a link whose target
    is missing or loops back on itself; "not found" for the latter sends a user
    looking for a file that is there.

    Parameters
    ----------
    path : str or os.PathLike
        A path that ``exists()`` said is not there.

    Returns
    -------
    str or None
        "a link that loops back on itself", "a link to TARGET, which is not
        there", or None when ``path`` is no link (or cannot be read).
    """
    try:
        if not os.path.islink(path):
            return None
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "a link that loops back on itself"
        with contextlib.suppress(OSError):
            return f"a link to {os.readlink(path)}, which is not there"
    return None


def first_missing(path: str | os.PathLike[str]) -> Path | None:
    """The outermost of ``path`` and its parents that does not exist (None: it exists).

    What a run that makes ``path`` makes: removed again where the run is
    refused before it wrote anything, so that the disk is left as it was.

    Parameters
    ----------
    path : path-like
        A folder about to be made (with its parents).

    Returns
    -------
    pathlib.Path or None
        The first folder that would be made, or None when ``path`` exists.
    """
    path = Path(path)
    if path.exists():
        return None
    while not path.parent.exists() and path.parent != path:
        path = path.parent
    return path


def output_path(path: object) -> Path:
    """An output ``path`` (a mosaic's, a writer's), ``~`` expanded as the cache's and tiles' are.

    Anything but a text or a path object naming text is refused by name,
    rather than as pathlib's ``TypeError``.

    Parameters
    ----------
    path : object
        What the caller gave as the file to write.

    Returns
    -------
    pathlib.Path
        The file to write.

    Raises
    ------
    OptionError
        Naming ``path``, for anything else, an empty text, or a NUL in it.
    """
    text = os.fspath(path) if isinstance(path, str | os.PathLike) else None
    if not isinstance(text, str):
        shown = shown_type(path) + (" naming bytes" if isinstance(path, os.PathLike) else "")
        raise OptionError("{path} must be a path (a text or a path object), got {value}",
                          value=shown)
    if not text:
        # Else the current folder (Path("") is "."), refused as a format-less output or
        # as a busy rename target: a message about neither.
        raise OptionError("{path} is empty: give the file to write")
    refuse_nul("path", text)
    return expanded(text)


def refuse_nul(parameter: str, text: str, kind: str = "a path") -> None:
    """Refuse a path ``text`` holding a NUL character, naming ``parameter``.

    No file has such a name: the system calls raise "ValueError: embedded
    null byte", a traceback naming no parameter, once the work has begun.

    Parameters
    ----------
    parameter : str
        The setting or argument that gave it.
    text : str
        The path as given.
    kind : str
        What it must be, as the message says it ("a path", "a folder").

    Raises
    ------
    OptionError
        Naming ``parameter``, where ``text`` holds a NUL.
    """
    if "\0" in text:
        from .options import shown_value

        raise OptionError("{" + parameter + "} must be " + kind + ", got {value} (it holds a "
                          "NUL character)", value=shown_value(text))


def cache_dir(override: str | os.PathLike[str] | None = None, *, create: bool = True) -> Path:
    """Return the cache directory, creating it if needed.

    Parameters
    ----------
    override : path-like, optional
        An explicit directory (the ``--cache-dir`` option). When omitted, the
        environment variable ``MOSAICIST_CACHE_DIR`` is used, and failing that
        the platform's user cache directory (``platformdirs``).
    create : bool
        Make the folder where it is missing. False only names it (a file in
        its place is refused all the same): for a caller that has yet to
        check its other inputs, so that a run refused for them leaves no
        cache folder behind.

    Returns
    -------
    pathlib.Path
        The absolute cache directory.

    Raises
    ------
    OptionError
        When ``override`` is not a usable folder name, or none is given and
        no home folder is known for the default one.
    MosaicistError
        When the folder cannot be made.
    """
    what = "cache folder"
    if override is not None:
        if not isinstance(override, str | os.PathLike):
            # Else os.fspath's bare TypeError, naming nothing (TileLibrary.open(cache_dir=5)).
            raise OptionError("{cache_dir} must be a path (a text or a path object), got "
                              "{value}", value=shown_type(override))
        given = os.fspath(override)
        if isinstance(given, bytes):
            raise OptionError("{cache_dir} must be a folder as text (str or pathlib.Path), "
                              "got bytes")
        if not given.strip():
            # Path("") is the current folder: the index would land wherever the run was.
            raise OptionError("{cache_dir} is empty; give a folder")
        refuse_nul("cache_dir", given, "a folder")
        path = Path(override)
    elif os.environ.get(CACHE_ENV):
        path = Path(os.environ[CACHE_ENV])
        what = f"cache folder ({CACHE_ENV})"
    else:
        try:
            default: str | None = platformdirs.user_cache_dir("mosaicist", appauthor=False)
        except RuntimeError:  # "could not determine the home directory"
            default = None
        if default is None or Path(default).parts[:1] == ("~",):
            # No home folder known (HOME unset or relative, no password entry): a traceback,
            # or, from an older platformdirs, "~/.cache/mosaicist" as it is, a folder "~"
            # wherever the run was.
            raise OptionError(f"no home folder is known for the cache; set {CACHE_ENV} "
                              "or give {cache_dir}")
        path = Path(default)
    # A "~user" of no user is a name in the current folder, as the shell reads it.
    path = expanded(path).absolute()
    if not create:
        if path.exists() and not path.is_dir():
            raise MosaicistError(f"{path}: the {what} is a file, not a folder")
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        # A link that leads nowhere is "there" to mkdir: said as what it is (a cache
        # linked to a disk not mounted read "is a file").
        link = dangling_link(path)
        raise MosaicistError(f"{path}: the {what} is " + (
            link or "a file, not a folder")) from None
    except OSError as error:
        raise MosaicistError(f"{path}: cannot make the {what}: "
                             f"{error.strerror or error}") from None
    return path


@contextlib.contextmanager
def atomic_path(
    final: str | os.PathLike[str], suffix: str | None = None, *, durable: bool = False,
    sweep: bool = True,
) -> Iterator[Path]:
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
    durable : bool
        Flush the file to disk before the rename (for data that later
        commits rely on, such as an index's packed tiles, and outputs, so
        that a power cut leaves the whole file or the one before under the
        final name); a file system that cannot flush is left unflushed.
    sweep : bool
        Remove dead writers' temporaries of ``final`` first (a scan of its
        folder). A writer of many files in one folder sweeps it once
        itself (:func:`remove_dead_temporaries`) and passes False: a scan
        per file would cost time quadratic in the files.
    """
    final = _written_through(Path(final))
    if suffix is None:
        suffix = final.suffix
    if sweep:
        remove_stale_temporaries(final)
    handle, temporary = tempfile.mkstemp(
        prefix=_temporary_prefix(final), suffix=f".part{suffix}", dir=final.parent
    )
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        yield temporary_path
        # mkstemp makes the file 0600; outputs get the usual mode, as open() would.
        with contextlib.suppress(FileNotFoundError):
            temporary_path.chmod(0o666 & ~current_umask())
        if durable:
            descriptor = os.open(temporary_path, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            except OSError as error:
                # A file system that cannot flush (some FUSE and network ones) still writes.
                if error.errno not in _CANNOT_SYNC:
                    raise
            finally:
                os.close(descriptor)
        try:
            os.replace(temporary_path, final)
        except OSError as error:
            # Named by the final file, not the hidden temporary that the user never asked for.
            raise type(error)(error.errno, error.strerror, os.fspath(final)) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary_path.unlink()
        raise


def sync_folder(folder: str | os.PathLike[str]) -> None:
    """Make the renames in ``folder`` durable, where the platform can sync a folder.

    Windows, and some FUSE and network file systems, cannot open or sync a
    folder (PermissionError, EINVAL): the files are written all the same.
    """
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


#: What ``fsync`` raises where a file system cannot flush at all (rather than failing to).
_CANNOT_SYNC = frozenset({errno.EINVAL, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", 95)})


def _written_through(final: Path) -> Path:
    """The file that writing ``final`` replaces: a symbolic link's target, not the link.

    Renaming a finished file over a link would replace the link and leave
    its target as it was; over a device (``/dev/null``) or a pipe it would
    put a plain file in its place, so those are refused
    (:func:`check_writable` says so before any work).
    """
    if final.is_symlink():
        final = Path(os.path.realpath(final))
    _refuse_special(final)
    return final


def _refuse_special(path: Path, what: str = "output", shown: Path | None = None) -> None:
    """Refuse a device, pipe or socket at ``path`` (named ``shown``, as the user gave it)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise MosaicistError(f"{shown or path}: {what} is not a regular file (a device, pipe "
                             "or socket); give a file name")


def check_distinct(paths: Iterable[tuple[str | os.PathLike[str] | None, str]]) -> None:
    """Raise :class:`MosaicistError` when two of a command's files are the same file.

    Writing a mosaic over its own target, or a report over the mosaic,
    would lose one of them after all the work.

    Parameters
    ----------
    paths : iterable of (path-like or None, str)
        Each file (None: not given) and what it is (``"output"``,
        ``"target"``...), in the order the message should name them.
    """
    seen: dict[str, str] = {}
    for path, what in paths:
        if path is None:
            continue
        if "\0" in os.fsdecode(path):
            # realpath's ValueError ("embedded null byte") was a traceback.
            raise MosaicistError(f"{os.fsdecode(path)!r}: the {what} path holds a NUL "
                                 "character, which no file name can")
        key = os.path.normcase(os.path.realpath(os.fspath(path)))
        if key in seen:
            raise MosaicistError(f"{path}: the {what} is also the {seen[key]}; "
                                 "give each its own file")
        seen[key] = what


@contextlib.contextmanager
def atomic_folder(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a new empty folder beside ``final``; put it in place of ``final`` on success.

    An existing ``final`` is replaced whole: it is renamed aside, the new
    folder renamed in, and the old one deleted, so ``final`` holds either
    the old folder or the complete new one at every moment but the instant
    between the two renames. On an exception the new folder is removed, and
    an old folder already renamed aside is put back.

    Parameters
    ----------
    final : path-like
        The folder to create or replace.
    """
    final = Path(final)
    remove_stale_temporaries(final)
    temporary = Path(tempfile.mkdtemp(prefix=_temporary_prefix(final), suffix=".part",
                                      dir=final.parent))
    aside: Path | None = None
    try:
        yield temporary
        with contextlib.suppress(FileNotFoundError):
            temporary.chmod(0o777 & ~current_umask())
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=_temporary_prefix(final), suffix=".old",
                                        dir=final.parent))
            aside = old / final.name
            os.replace(final, aside)
            os.replace(temporary, final)
            _remove_made_folder(old)
        else:
            os.replace(temporary, final)
    except BaseException:
        if aside is not None:
            if not os.path.lexists(final):
                # Stopped between the two renames (Ctrl+C, a failed rename): without
                # this, neither the old folder nor the new one would be under the name.
                with contextlib.suppress(OSError):
                    os.replace(aside, final)
            if os.path.lexists(final):  # else the old folder stays aside, not deleted
                _remove_made_folder(aside.parent)
        _remove_made_folder(temporary)
        raise


def _remove_made_folder(path: Path, *, ignore_errors: bool = True) -> None:
    """Remove a folder made by a writer (this process, or a dead one), whatever it holds.

    Under a umask of 777 :func:`tempfile.mkdtemp` makes it with no
    permissions at all, which :func:`shutil.rmtree` cannot list: a failed
    Deep Zoom write left a hidden ``.NAME_files.<pid>-<random>.part`` behind
    at each run. Its owner may always give it back its permissions first.
    """
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    shutil.rmtree(path, ignore_errors=ignore_errors)


def _temporary_prefix(final: Path) -> str:
    # The writer's PID in the name lets a later run tell a dead writer's
    # leftovers from a live one's (see remove_stale_temporaries).
    return f".{_temporary_stem(final)}.{os.getpid()}-"


#: Longest file name, in bytes, of the usual file systems (ext4, XFS, APFS, NTFS's 255 units).
_NAME_MAX = 255
#: What a temporary's name adds to the stem besides the final's suffix: two dots, a PID
#: (at most 10 digits), a dash, 8 random characters and ``.part``.
_TEMPORARY_EXTRA = 2 + 10 + 1 + 8 + len(".part")


def _temporary_stem(final: Path) -> str:
    """What names ``final`` in the names of its temporaries: its name, cut where too long.

    A temporary's name is about 30 bytes longer than the final one, so a
    name near the limit (a legal output) would make an illegal temporary
    ("File name too long"). A long name is cut, with a hash of the whole
    so that names cut alike still have temporaries of their own.
    """
    encoded = os.fsencode(final.name)
    room = _NAME_MAX - _TEMPORARY_EXTRA - len(os.fsencode(final.suffix))
    if len(encoded) <= room:
        return final.name
    digest = hashlib.sha256(encoded).hexdigest()[:8]
    # Cut on a character boundary; the stem needs to be the same each time, not the name.
    cut = encoded[:max(1, room - len(digest) - 1)].decode("utf-8", "ignore")
    return f"{cut}~{digest}"


def process_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this machine and has not ended.

    A process that was killed but not yet reaped by its parent (a zombie: the
    worker of a killed pool, until whoever adopted it waits for it) still
    answers ``kill(pid, 0)``; it writes nothing more, so it counts as ended.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return not _zombie(pid)


def process_identity(pid: int | None = None) -> str:
    """``"<pid>:<start>"``: a process, told apart from a later one given its PID again.

    ``start`` is when the process started (Linux's ``/proc/<pid>/stat``, in
    clock ticks since boot); empty where it cannot be read.

    Parameters
    ----------
    pid : int, optional
        The process (default: this one).
    """
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{_start_time(pid) or ''}"


def identity_alive(identity: str) -> bool:
    """Whether the process :func:`process_identity` named is still running.

    A PID now held by a process that started at another time is another
    process: the one named has ended. A start that cannot be read (not
    Linux) leaves the PID alone to tell.
    """
    pid_text, _, start = identity.partition(":")
    if not pid_text.isascii() or not pid_text.isdigit() or len(pid_text) > 10:
        return False
    pid = int(pid_text)
    if not process_alive(pid):
        return False
    now = _start_time(pid)
    return not (start and now and start != now)


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (``/proc/<pid>/stat``'s 22nd field), or None."""
    fields = _stat_fields(pid)
    return fields[19].decode("ascii", "replace") if len(fields) > 19 else None


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has ended and waits to be reaped (Linux's ``/proc``; else False)."""
    return _stat_fields(pid)[:1] in ([b"Z"], [b"X"])


def _stat_fields(pid: int) -> list[bytes]:
    """``/proc/<pid>/stat``'s fields from the state on (empty where it cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read()
    except OSError:
        return []
    # They follow the command's name, which is in parentheses and may hold any.
    return fields[fields.rfind(b")") + 1:].split()


def remove_stale_temporaries(final: str | os.PathLike[str]) -> list[Path]:
    """Remove what writers of ``final`` that died left beside it; return what was removed.

    :func:`atomic_path` and :func:`atomic_folder` name their temporaries
    ``.<name>.<pid>-<random>.part<suffix>`` (and ``.old`` for a folder being
    replaced; a name too long to leave room for the rest is cut, and a hash
    of it added). One whose process no longer exists was left by a run that
    was killed (``kill -9``, a power cut) before it could clean up; a live
    writer's temporaries are never touched. Every writer calls this first,
    so leftovers last only until the next write of the same output.

    Parameters
    ----------
    final : path-like
        The output whose leftovers to remove.
    """
    final = Path(final)
    pattern = re.compile(rf"\.{re.escape(_temporary_stem(final))}\.(\d+)-[a-z0-9_]{{8}}\."
                         "(part|old)")
    removed: list[Path] = []
    try:
        entries = list(os.scandir(final.parent if str(final.parent) else "."))
    except OSError:
        return removed
    for entry in entries:
        found = pattern.match(entry.name)
        if found is None or process_alive(int(found.group(1))):
            continue
        _remove_entry(entry, removed)
    return removed


def _remove_entry(entry: os.DirEntry[str], removed: list[Path]) -> None:
    """Delete a file or a whole folder (never a link's target), noting it in ``removed``."""
    path = Path(entry.path)
    with contextlib.suppress(OSError):
        if entry.is_dir(follow_symlinks=False):
            _remove_made_folder(path, ignore_errors=False)  # noted only once it is gone
        else:
            path.unlink()
        removed.append(path)


#: Any temporary of :func:`atomic_path` or :func:`atomic_folder` (``.<name>.<pid>-<random>.part``
#: then the final's suffix, or ``.old``), or of earlier versions' cache writers
#: (``.<name>.<pid>.part``): the writer's PID is group 1.
_TEMPORARY = re.compile(r"\..+\.(\d+)(?:-[a-z0-9_]{8})?\.(?:part|old)(?:\.[^.]*)?")


def remove_dead_temporaries(folder: str | os.PathLike[str], min_age: float = 0.0, *,
                            below: bool = True) -> list[Path]:
    """Remove every temporary that a writer which has ended left in ``folder`` and below.

    :func:`remove_stale_temporaries` runs before each write of an output, so
    a killed writer's temporary stays when no one writes that output again
    (another process finished it meanwhile): a cache sweeps its folders
    with this now and then. A temporary is removed only when the process
    named in it is not alive on this machine and nothing in it changed for
    ``min_age`` seconds (a writer on another machine that shares the folder
    has a PID that means nothing here, but it keeps its temporary changing).

    Parameters
    ----------
    folder : path-like
        The folder to sweep, with its subfolders.
    min_age : float
        Seconds a temporary must have been left unchanged.
    below : bool
        Sweep the subfolders too (False: ``folder`` alone, say an output
        folder beside pyramids of millions of tiles).

    Returns
    -------
    list of pathlib.Path
        What was removed.
    """
    removed: list[Path] = []
    now = time.time()
    # Without ``below``, the walk's first step only: ``folder`` itself.
    for parent, folders, files in itertools.islice(os.walk(folder), None if below else 1):
        for name in [*folders, *files]:
            found = _TEMPORARY.fullmatch(name)
            if found is None:
                continue
            if name in folders:
                folders.remove(name)  # a temporary folder is removed or kept whole
            path = Path(parent, name)
            if process_alive(int(found.group(1))) or now - _last_change(path) < min_age:
                continue
            with contextlib.suppress(OSError):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed.append(path)
    return removed


def _last_change(path: Path) -> float:
    """Latest modification time of ``path`` and, for a folder, of what it holds."""
    try:
        latest = path.lstat().st_mtime
        if path.is_dir() and not path.is_symlink():
            with os.scandir(path) as entries:
                for entry in entries:
                    latest = max(latest, entry.stat(follow_symlinks=False).st_mtime)
    except OSError:
        return time.time()  # changing under us: a live writer's
    return latest


#: Seconds a cache entry of the current generation may go unused (:func:`mark_used`)
#: before the writer of another entry of its kind removes it: a library that grows by
#: files sorting last keeps its generation, and its earlier sizes' entries (``n<N>``,
#: those a ``--limit N`` would read) would otherwise stay forever.
UNUSED_ENTRY_AGE = 30 * 24 * 3600.0


def mark_used(path: str | os.PathLike[str]) -> None:
    """Stamp a cache entry as read now (its modification time), where the cache allows.

    :func:`remove_older_generations` removes the entries left unused for
    :data:`UNUSED_ENTRY_AGE`; a read-only cache is left as it is.
    """
    with contextlib.suppress(OSError):
        os.utime(path)


def remove_older_generations(
    folder: str | os.PathLike[str], kind: re.Pattern[str], generation: int,
    unused_for: float = UNUSED_ENTRY_AGE,
) -> list[Path]:
    """Remove the entries of ``folder`` of ``kind`` made for generations before ``generation``.

    A cache entry named for a library generation (``g<G>`` in its name) is
    never used again once a later generation is published; without this, a
    library's cache grows by one set of entries each time it changes. A
    process still reading an older entry keeps what it opened or
    memory-mapped (POSIX keeps an unlinked file until it is closed); one
    that has yet to open it finds it gone and makes it again. Entries of
    any generation that were neither written nor read (:func:`mark_used`)
    for ``unused_for`` seconds go too. Temporaries (hidden names) are left
    to their writers.

    Parameters
    ----------
    folder : path-like
        The folder holding the entries (files or folders).
    kind : re.Pattern
        Matches (whole) the names of one kind of entry, with the
        generation in the group named ``generation``.
    generation : int
        The generation just written: entries of earlier ones go.
    unused_for : float
        Seconds after which an entry of this or a later generation that
        has not been used goes as well.

    Returns
    -------
    list of pathlib.Path
        What was removed.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    stale = time.time() - unused_for
    for entry in entries:
        found = kind.fullmatch(entry.name)
        if found is None or entry.name.startswith("."):
            continue
        if int(found["generation"]) >= generation:
            try:
                if entry.stat(follow_symlinks=False).st_mtime >= stale:
                    continue
            except OSError:
                continue
        _remove_entry(entry, removed)
    return removed


#: What :func:`reserve_space` takes as "this file system cannot reserve": it then goes on
#: without, as before (glibc emulates the call where the file system lacks it).
_CANNOT_RESERVE = {errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS,
                   getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}


def reserve_space(path: str | os.PathLike[str]) -> None:
    """Allocate the disk blocks of the whole file at ``path``, before it is written through a map.

    A memory map of a freshly made file is sparse: writing into it allocates
    the blocks page by page, and a page that cannot be allocated (a full
    disk, a quota) kills the process with SIGBUS instead of raising. With
    the blocks reserved first, a full disk is an :class:`OSError` here.
    Where the platform has no ``posix_fallocate``, or the file system
    cannot reserve, nothing is done.

    Parameters
    ----------
    path : path-like
        The file, at its final size.

    Raises
    ------
    OSError
        When the space cannot be had (``ENOSPC``, ``EDQUOT``...).
    """
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is None:
        return
    descriptor = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(descriptor).st_size
        if size > 0:
            try:
                fallocate(descriptor, 0, size)
            except OSError as error:
                if error.errno not in _CANNOT_RESERVE:
                    raise
    finally:
        os.close(descriptor)


def check_writable(path: str | os.PathLike[str], what: str = "output") -> None:
    """Raise :class:`MosaicistError` unless a file can be created at ``path``.

    Parameters
    ----------
    path : path-like
        The file to be written.
    what : str
        What the file is, for the message (``"report file"``...).
    """
    path = Path(path)
    refuse_long_name(path, what)
    # A link is written through (see atomic_path): its target's folder takes the file.
    written = Path(os.path.realpath(path)) if path.is_symlink() else path
    parent = written.parent if str(written.parent) else Path(".")
    if written.is_dir():
        raise MosaicistError(f"{path}: {what} is a directory")
    _refuse_special(written, what, path)
    if not parent.is_dir():
        problem = "is a file, not a folder" if parent.exists() else "does not exist"
        raise MosaicistError(f"{path}: {what} folder {parent} {problem}")
    if not os.access(parent, os.W_OK | os.X_OK) or (
            written.exists() and not os.access(written, os.W_OK)):
        # access() answers no for a read-only file system too, where no permission helps.
        reason = "read-only file system" if _read_only(parent) else "permission denied"
        raise MosaicistError(f"{path}: {what} is not writable ({reason})")
    with contextlib.suppress(OSError, AttributeError):  # no statvfs on Windows
        if os.statvfs(parent).f_blocks == 0:
            # A file system of no size (/proc, /sys) passes the checks above and then
            # takes no file: found after all the work (a report under /proc).
            refused = refuses_files(parent)
            if refused:
                raise MosaicistError(f"{path}: files cannot be made in the {what} folder "
                                     f"{parent} ({refused}); write the {what} elsewhere")


def refuse_long_name(path: str | os.PathLike[str], what: str = "output",
                     shown: str | os.PathLike[str] | None = None) -> None:
    """Raise :class:`MosaicistError` when the name of ``path`` is too long for its folder.

    Every look at such a path (``exists``, ``is_dir``) raised OSError "File
    name too long", a message naming no setting, or in the API not a
    :class:`MosaicistError` at all.

    Parameters
    ----------
    path : path-like
        The file to be written; its last part is measured, in bytes.
    what : str
        What the file is, for the message (``"report file"``...).
    shown : path-like, optional
        The path the user gave, named first in the message (default: ``path``),
        where ``path`` is a file written beside it.
    """
    path = Path(path)
    size = len(os.fsencode(path.name))
    if size <= _NAME_MAX:
        return  # within every usual file system's limit, without asking
    try:
        longest = os.pathconf(path.parent if str(path.parent) else ".", "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # no such folder, or no pathconf (Windows)
        longest = _NAME_MAX
    if size <= longest:
        return
    over = f"is {size:,} bytes, over the {longest:,} its file system allows"
    if shown is None:
        raise MosaicistError(f"{path}: the {what}'s name {over}; give a shorter name")
    # The companion's name is the given one's, with more: say how long the given one may be.
    allowed = longest - (size - len(os.fsencode(Path(shown).name)))
    raise MosaicistError(f"{shown}: the name of the {what} beside it {over}; give a name of "
                         f"at most {allowed:,} bytes")


def refuses_files(folder: Path) -> str | None:
    """Why a file cannot be made in ``folder``, found by making one; None where it can."""
    try:
        descriptor, name = tempfile.mkstemp(prefix=".mosaicist-probe-", dir=folder)
    except OSError as error:
        if error.errno in (errno.EACCES, errno.EPERM):
            return "permission denied"
        if error.errno == errno.EROFS:
            return "read-only file system"
        if error.errno == errno.ENOENT:
            # /proc's answer for a folder that is there: "no such file" would mislead.
            return "its file system takes no new files"
        return (error.strerror or str(error)).lower()
    os.close(descriptor)
    try:
        os.unlink(name)
    except OSError:
        pass
    return None


def _read_only(folder: Path) -> bool:
    """Whether ``folder`` is on a file system mounted read-only (False where unknown)."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs on Windows
        return False


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


#: ``flock``/``lockf`` errors of a file system that has no such locks (some network
#: ones): ENOLCK, EOPNOTSUPP, ENOSYS, EINVAL. Shared by every lock of the project, so
#: that "held by another" (``BlockingIOError``) is never confused with "refused here".
LOCKS_REFUSED = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})


def locks_refused(error: OSError) -> bool:
    """Whether ``error``, raised by ``flock`` or ``lockf``, says the file system has no locks."""
    return error.errno in LOCKS_REFUSED


#: Seconds between tries of a lock that another builder holds: polled rather than waited
#: for in the kernel, so that an interrupt (Ctrl+C, SIGTERM turned into one) stops a
#: waiting process at once, and a thread waits no longer than this past its holder.
BUILD_LOCK_POLL = 0.1


def open_lock(path: Path) -> int:
    """Open (creating) the lock file at ``path``; not inherited by programs run from here.

    Parameters
    ----------
    path : pathlib.Path
        The lock file.

    Returns
    -------
    int
        Its descriptor, open for reading and writing (for ``fcntl.flock``).
    """
    return os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)


@contextlib.contextmanager
def build_lock(final: str | os.PathLike[str], poll: float = BUILD_LOCK_POLL,
               note: str | None = None) -> Iterator[bool]:
    """Hold the lock of the cache entry ``final`` while the block builds it.

    Two processes (or threads) that need the same missing entry would each
    build it in full; with this, the second waits for the first, then finds
    the entry in place (the caller looks again once it holds the lock). The
    lock is an ``flock`` on a hidden file beside the entry
    (``.<name>.lock``), which the kernel releases when its holder dies
    (``kill -9`` included), so a killed builder's waiter builds in its
    place. The holder removes the file as it lets go; a waiter that then
    finds it holds the lock of a removed file tries again on the new one.

    Parameters
    ----------
    final : path-like
        The entry to build (a file or a folder).
    poll : float
        Seconds between tries while another holds the lock.
    note : str, optional
        Printed on stderr, once, when the lock is held by another (what is
        being waited for).

    Yields
    ------
    bool
        True while the lock is held; False where no lock can be had (no
        ``fcntl`` on Windows, a read-only or missing folder, a file system
        that refuses locks): the block then builds as without a lock.
    """
    fcntl = _fcntl()
    final = Path(final)
    path = final.with_name(f".{final.name}.lock")
    descriptor = None if fcntl is None else _locked_descriptor(fcntl, path, poll, note)
    if descriptor is None:
        # A cache that cannot take a lock costs only the double build, as before locks.
        yield False
        return
    _held_locks.add(descriptor)
    try:
        yield True
    finally:
        # Removed while still held, so that no one locks the file after it is gone.
        with contextlib.suppress(OSError):
            path.unlink()
        _held_locks.discard(descriptor)
        os.close(descriptor)  # releases the lock


#: Descriptors of the build locks this process holds.
_held_locks: set[int] = set()


def _forget_held_locks() -> None:
    # An flock belongs to the open file, which a forked child shares: a child that
    # outlived its parent (or a pool forked during a build) would hold the lock on.
    for descriptor in _held_locks:
        with contextlib.suppress(OSError):
            os.close(descriptor)
    _held_locks.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_held_locks)


def _fcntl() -> Any | None:
    """The ``fcntl`` module, or None where there is none (Windows)."""
    try:
        import fcntl
    except ImportError:
        return None
    return fcntl


def _locked_descriptor(fcntl: Any, path: Path, poll: float, note: str | None) -> int | None:
    """The open lock file at ``path``, locked (waiting while another holds it); None if refused."""
    noted = False
    while True:
        try:
            descriptor = open_lock(path)
        except OSError:
            return None
        try:
            locked = _try_lock(fcntl, descriptor)
            while locked is False:
                if note is not None and not noted:
                    print(note, file=sys.stderr)
                    noted = True
                time.sleep(poll)
                locked = _try_lock(fcntl, descriptor)
            if locked and _same_file(path, descriptor):
                return descriptor
        except BaseException:
            os.close(descriptor)
            raise
        os.close(descriptor)
        if locked is None:
            # No one can lock it on this file system: it would only be left lying there.
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        # Its holder removed the file on letting go: another may stand there now.


def _try_lock(fcntl: Any, descriptor: int) -> bool | None:
    """Take the lock without waiting: True if taken, False if held by another, None if refused."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        # Refused (:data:`LOCKS_REFUSED`), or any other failure of the lock alone: a
        # cache entry built without it costs only a possible double build.
        return None
    return True


def _same_file(path: Path, descriptor: int) -> bool:
    """Whether ``path`` still names the open file ``descriptor``."""
    try:
        named, opened = os.stat(path), os.fstat(descriptor)
    except OSError:
        return False
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)
