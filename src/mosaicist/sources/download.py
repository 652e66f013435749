"""Resumable, checksum-verified downloads of the datasets mosaicist can use.

A download is written to ``<destination>.part`` beside the final file. An
interrupted download leaves that partial file behind, and the next attempt
asks the server for the rest with an HTTP ``Range`` request; a server that
answers with the whole file instead (status 200) restarts it cleanly, and
one that answers with bytes from elsewhere (a ``Content-Range`` that does
not start where the partial file ends) is asked for the whole file. Only a
complete file whose checksum matches is moved, atomically, to its final name,
so a file under the final name is always complete and verified.

A response that is a web page (a captive portal's login page, say) is
refused before anything is written, so it cannot overwrite a partial file.
A resumed download whose checksum then fails is fetched once more from the
start, since the kept bytes may be from another file or another attempt.
When the network fails, :func:`fetch_dataset` says where the file is
published and where to put a copy fetched by other means, and that any
folder of photos can be the tiles instead.

Each dataset's file has a known size, and :func:`fetch_dataset` stops a
download that grows past :data:`SIZE_MARGIN` times it (a server or proxy
sending an endless body would otherwise fill the disk), or whose declared
length is already over (then before writing anything); the bytes written
are deleted, and no file ever reaches the final name without its checksum.

Two processes fetching the same file serialise on a lock file
(``<destination>.lock``, ``fcntl.flock``); the second finds the file in place
when it gets the lock and returns it without downloading again.

The registry :data:`DATASETS` names the files by dataset. The address of any
of them can be overridden with an environment variable
``MOSAICIST_DOWNLOAD_URL_<NAME>``, where ``<NAME>`` is the dataset name in
upper case with ``-`` replaced by ``_`` (``MOSAICIST_DOWNLOAD_URL_CIFAR10``,
``MOSAICIST_DOWNLOAD_URL_GALAXY10_SDSS``), e.g. to use a local mirror; the
checksums still apply. Tests may instead replace entries of
:data:`DATASETS` (they are read at call time).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    import http.client

from ..errors import DownloadError
from ..paths import locks_refused
from ..progress import progress_bar

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock
    fcntl = None  # type: ignore[assignment]

#: Prefix of the environment variables that override a dataset's address.
URL_ENV_PREFIX = "MOSAICIST_DOWNLOAD_URL_"

_CHUNK_BYTES = 1 << 20
#: A dataset download may grow to this many times the file's known size, no more.
SIZE_MARGIN = 2
_USER_AGENT = "mosaicist (https://pypi.org/project/mosaicist/)"
#: Bytes of a response read before deciding whether it is a web page.
_SNIFF_BYTES = 512
#: How a web page begins (after white space), in lower case.
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body")


class _TransferError(DownloadError):
    """The file could not be fetched (network, HTTP, a web page instead of the file)."""


@dataclass(frozen=True)
class DatasetFile:
    """One downloadable file of a dataset.

    Attributes
    ----------
    url : str
        Where the file is downloaded from.
    md5 : str or None
        Expected MD5 digest (hex) of the file, when known.
    filename : str
        Name of the file in the download cache.
    sha256 : str or None
        Expected SHA-256 digest (hex), for files whose publisher gives that
        instead of (or as well as) an MD5.
    size : int or None
        The file's size in bytes, about (rounded up where the publisher
        gives none); a download is stopped at :data:`SIZE_MARGIN` times it.
        None: not capped.
    """

    url: str
    md5: str | None
    filename: str
    sha256: str | None = None
    size: int | None = None


#: The files behind the dataset tile sources, by dataset name.
DATASETS: dict[str, DatasetFile] = {
    "cifar10": DatasetFile(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        md5="c32a1d4ab5d03f1284b67883e8d87530",
        filename="cifar-10-binary.tar.gz",
        size=170_052_171,
    ),
    "cifar100": DatasetFile(
        url="https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
        md5="03b5dce01913d631647c71ecec9e9cb8",
        filename="cifar-100-binary.tar.gz",
        size=168_513_733,
    ),
    # astroNN publishes SHA-256 digests (not MD5s) for the Galaxy10 files,
    # together with these Zenodo addresses (astroNN.datasets.galaxy10*). Their
    # sizes are those of their image arrays stored raw, an upper bound of the files
    # (about 2.5 GB and 200 MB).
    "galaxy10": DatasetFile(
        url="https://zenodo.org/records/10845026/files/Galaxy10_DECals.h5",
        md5=None,
        filename="Galaxy10_DECals.h5",
        sha256="19aefc477c41bb7f77ff07599a6b82a038dc042f889a111b0d4d98bb755c1571",
        size=17736 * 256 * 256 * 3,
    ),
    "galaxy10-sdss": DatasetFile(
        url="https://zenodo.org/records/10844811/files/Galaxy10.h5",
        md5=None,
        filename="Galaxy10.h5",
        sha256="969a6b1cefcc36e09fffa86febd2f699a4aa19b837ba0427f01b0bc6ded458af",
        size=21785 * 69 * 69 * 3,
    ),
}


def dataset_url(name: str) -> str:
    """Return the address of dataset ``name``, honouring the environment override.

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS`.

    Returns
    -------
    str
        ``MOSAICIST_DOWNLOAD_URL_<NAME>`` when set, else the registered URL.
    """
    variable = URL_ENV_PREFIX + name.upper().replace("-", "_")
    return os.environ.get(variable) or DATASETS[name].url


def fetch_dataset(name: str, directory: Path, show_progress: bool = False) -> Path:
    """Download dataset ``name``'s file into ``directory`` (once) and return its path.

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS`.
    directory : pathlib.Path
        The download cache folder (created if needed).
    show_progress : bool
        Draw a progress bar while downloading.

    Returns
    -------
    pathlib.Path
        The verified file.

    Raises
    ------
    DownloadError
        When the download fails (the message then says where to save a copy
        fetched by other means), grows past :data:`SIZE_MARGIN` times the
        file's size, or its checksum does not match.
    """
    if name not in DATASETS:
        raise DownloadError(f"{name}: unknown dataset (known: {', '.join(sorted(DATASETS))})")
    spec = DATASETS[name]
    url = dataset_url(name)
    destination = Path(directory) / spec.filename
    try:
        return fetch(url, spec.md5, destination, show_progress=show_progress, sha256=spec.sha256,
                     max_bytes=None if spec.size is None else SIZE_MARGIN * spec.size)
    except _TransferError as error:
        # Offline or behind a proxy: the user can fetch the file by other means, or make
        # the mosaic of other photos (every dataset here is a tile source).
        raise DownloadError(
            f"{error}; any folder of photos can be the tiles instead (--tiles FOLDER), or, "
            f"to skip the download, fetch {url} by other means and save it as {destination}"
        ) from None


def fetch(
    url: str,
    md5: str | None,
    destination: Path,
    show_progress: bool = False,
    *,
    sha256: str | None = None,
    timeout: float = 60.0,
    max_bytes: int | None = None,
) -> Path:
    """Download ``url`` to ``destination``, resuming and verifying it.

    Parameters
    ----------
    url : str
        The file's address (``http``, ``https``, or anything urllib opens).
    md5 : str or None
        Expected MD5 digest (hex). None skips the MD5 check; then ``sha256``
        should be given.
    destination : pathlib.Path
        The final file. When it exists already it is returned at once,
        without network access or verification.
    show_progress : bool
        Draw a byte progress bar on stderr.
    sha256 : str, optional
        Expected SHA-256 digest (hex), checked as well when given.
    timeout : float
        Seconds to wait for the server on connecting and on each read.
    max_bytes : int, optional
        Most bytes the file may have: a response declaring more is refused
        before anything is written, one sending more is stopped and the
        partial file deleted. None: no limit.

    Returns
    -------
    pathlib.Path
        ``destination``.

    Raises
    ------
    DownloadError
        On a network or HTTP error, a web page sent instead of the file, or a
        failed write (the partial file is kept, so that the next call
        resumes), or a folder that cannot be written at all, or when the
        complete file's checksum does not match (the partial file is
        deleted; a resumed file is first fetched once more from the start).
    """
    destination = Path(destination)
    if destination.exists():
        return destination
    part = destination.with_name(destination.name + ".part")
    lock = destination.with_name(destination.name + ".lock")
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        lock_file = open(lock, "a+b")  # noqa: SIM115 - closed by the with below
    except OSError as error:
        # A read-only or full cache, or a file where the folder should be.
        raise DownloadError(
            f"{destination.parent}: cannot download into this folder "
            f"({error.strerror or error}); choose another cache folder (--cache-dir, or "
            "MOSAICIST_CACHE_DIR)"
        ) from None
    with lock_file, _locked(lock_file):
        # Another process may have finished the file while we waited.
        if destination.exists():
            return destination
        resumed = _download(url, part, destination.name, show_progress, timeout, max_bytes)
        try:
            _verify(part, destination.name, md5, sha256)
        except DownloadError:
            if not resumed:
                raise
            # The kept bytes may not be this file's (an older attempt, another
            # version, a page a proxy sent): _verify removed them, so this
            # fetches the whole file, once.
            _download(url, part, destination.name, show_progress, timeout, max_bytes)
            _verify(part, destination.name, md5, sha256)
        os.replace(part, destination)
        # Safe while held: anyone who opens the lock later sees the final
        # file before locking, and anyone waiting on it re-checks after.
        lock.unlink(missing_ok=True)
    return destination


@contextlib.contextmanager
def _locked(handle: BinaryIO) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the open lock file.

    A no-op where flock is missing, or refused by the file system (the
    download then runs unlocked, as the cache's own build locks do: see
    :func:`mosaicist.paths.build_lock`); it was a raw ``OSError``.
    """
    locked = fcntl is not None
    if locked:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        except OSError as error:
            if not locks_refused(error):
                raise
            locked = False
    try:
        yield
    finally:
        if locked:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _one_line(reason: object) -> str:
    text = " ".join(str(reason).split())
    return text or type(reason).__name__


def _too_large(url: str, what: str, max_bytes: int, outcome: str) -> _TransferError:
    """The error of a response larger than the file can be (``what`` the server did)."""
    return _TransferError(
        f"{url}: the server {what} more than the {max_bytes:,} bytes this file can have "
        f"(an endless or wrong response); {outcome}"
    )


def _download(
    url: str, part: Path, label: str, show_progress: bool, timeout: float,
    max_bytes: int | None = None, *, resume: bool = True,
) -> bool:
    """Append the rest of ``url`` to ``part`` (or rewrite it when the server cannot resume).

    Returns whether bytes from an earlier attempt were kept (a resume).
    Stops with the partial file deleted once ``part`` would pass ``max_bytes``.
    """
    # Here, not with the module: the HTTP and SSL modules are 0.013 s of every
    # command that opens an array of tiles (which imports this module) and never
    # downloads.
    import http.client
    import urllib.error
    import urllib.request

    offset = part.stat().st_size if resume and part.exists() else 0
    try:
        # Inside: a URL that is not one (an address given in the environment) is a
        # ValueError here.
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            # Nothing left to send: the partial file is already whole (or
            # wrong, which the checksum will tell).
            return True
        raise _TransferError(
            f"{url}: HTTP error {error.code} {_one_line(error.reason)}"
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as error:
        reason = getattr(error, "reason", error)
        # The system's words alone: "[Errno -2] Name or service not known" told a user a
        # number that means nothing to them.
        if isinstance(reason, OSError) and reason.strerror:
            reason = reason.strerror
        raise _TransferError(f"{url}: download failed: {_one_line(reason)}") from None
    if response.status == 206 and not _range_starts_at(response, offset):
        response.close()
        if not offset:
            raise _TransferError(
                f"{url}: the server sent part of the file when asked for all of it "
                f"(Content-Range {response.headers.get('Content-Range')})"
            )
        # Bytes from elsewhere in the file (a server that rounds ranges): written over
        # the kept part they would make it a wrong file; the whole file is asked for.
        return _download(url, part, label, show_progress, timeout, max_bytes, resume=False)
    with response:
        resuming = offset > 0 and response.status == 206
        if not resuming:
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        if max_bytes is not None and total is not None and total > max_bytes:
            # Refused before anything is written: a part kept from before stays.
            raise _too_large(url, f"declares {total:,} bytes,", max_bytes, "nothing was saved")
        received = offset
        try:
            # read1: what has arrived, so that a stall keeps every byte that came.
            chunk = response.read1(_CHUNK_BYTES)
            # A first read may be a few bytes, too few to tell a page from the file.
            while chunk and len(chunk) < _SNIFF_BYTES:
                more = response.read1(_CHUNK_BYTES)
                if not more:
                    break
                chunk += more
        except (OSError, http.client.HTTPException) as error:
            raise _TransferError(
                f"{url}: download interrupted ({_one_line(error)}); run again to resume"
            ) from None
        # Checked before the partial file is opened: rewriting it with a login
        # page would throw away what was already downloaded.
        if _is_web_page(response.headers.get_content_type(), chunk):
            raise _TransferError(
                f"{url}: the server sent a web page instead of the file (a captive portal "
                "or proxy asking to log in?); nothing was saved"
            )
        try:
            output = open(part, "ab" if resuming else "wb")
        except OSError as error:
            raise DownloadError(f"{part}: cannot write ({error.strerror or error})") from None
        over = False
        with (
            output,
            progress_bar(
                total, label, unit="B", enabled=show_progress,
                unit_scale=True, unit_divisor=1024, initial=offset,
            ) as bar,
        ):
            while chunk:
                if max_bytes is not None and received + len(chunk) > max_bytes:
                    over = True  # the file is deleted once closed
                    break
                _write(output, chunk, part, received)
                received += len(chunk)
                bar.update(len(chunk))
                try:
                    chunk = response.read1(_CHUNK_BYTES)
                except (OSError, http.client.HTTPException) as error:
                    raise _TransferError(
                        f"{url}: download interrupted after {received:,} bytes "
                        f"({_one_line(error)}); run again to resume"
                    ) from None
            _write(output, b"", part, received)
    if over:
        assert max_bytes is not None  # set when over is
        # Its bytes cannot be the file's (too many), and a resume would only add to them.
        part.unlink(missing_ok=True)
        raise _too_large(url, "sent", max_bytes, "stopped, and the partial download was deleted")
    if total is not None and received < total:
        raise _TransferError(
            f"{url}: download interrupted after {received:,} of {total:,} bytes; "
            "run again to resume"
        )
    return resuming


def _write(output: BinaryIO, chunk: bytes, part: Path, received: int) -> None:
    """Write ``chunk`` (an empty one flushes), saying which file a disk error hit."""
    try:
        if chunk:
            output.write(chunk)
        else:
            output.flush()
    except OSError as error:
        # A full disk is no network failure: the bytes so far are kept for a resume.
        raise DownloadError(
            f"{part}: cannot write after {received:,} bytes ({error.strerror or error}); "
            "the part downloaded so far is kept, and the next run resumes it"
        ) from None


def _is_web_page(content_type: str, first_chunk: bytes) -> bool:
    """Whether a response is an HTML page: by its type, or by how its body begins."""
    if content_type in ("text/html", "application/xhtml+xml"):
        return True
    return first_chunk[:_SNIFF_BYTES].lstrip().lower().startswith(_HTML_STARTS)


def _range_starts_at(response: http.client.HTTPResponse, offset: int) -> bool:
    """Whether a 206 response's ``Content-Range`` continues at ``offset``."""
    content_range = response.headers.get("Content-Range", "")
    # "bytes 1000-1999/2000"; a missing header is taken on trust.
    if not content_range:
        return True
    try:
        start = int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return False
    return start == offset


def _verify(part: Path, label: str, md5: str | None, sha256: str | None) -> None:
    """Check the complete file's digests; delete it and raise on a mismatch."""
    md5_digest = hashlib.md5(usedforsecurity=False)
    sha_digest = hashlib.sha256()
    with open(part, "rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            if md5 is not None:
                md5_digest.update(chunk)
            if sha256 is not None:
                sha_digest.update(chunk)
    problems = []
    if md5 is not None and md5_digest.hexdigest() != md5.lower():
        problems.append(f"expected MD5 {md5.lower()}, got {md5_digest.hexdigest()}")
    if sha256 is not None and sha_digest.hexdigest() != sha256.lower():
        problems.append(f"expected SHA-256 {sha256.lower()}, got {sha_digest.hexdigest()}")
    if problems:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{label}: checksum mismatch ({'; '.join(problems)}); "
            "the download was discarded"
        )
