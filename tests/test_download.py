"""Downloads against a local HTTP server: success, checksum, resume, restart, locking,
and the ways a network fails (stalls, web pages, 416, 500, redirect loops, a full disk,
Ctrl+C, no network at all)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.server
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pytest

from mosaicist.errors import DownloadError
from mosaicist.sources import download
from mosaicist.sources.download import DATASETS, DatasetFile, dataset_url, fetch, fetch_dataset

PAYLOAD = bytes(range(256)) * 400  # 100 KiB
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


@dataclass
class ServerState:
    """What the test server sends, and what it was asked."""

    payload: bytes = PAYLOAD
    honour_range: bool = True
    truncate_next: int = 0  # how many coming responses stop half way
    ranges: list[str | None] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    # "html": a captive portal's page; "stall": half the body, then silence until
    # `release` is set; "stall-headers": silence before the status line; "500";
    # "416": every Range refused; "slow": the body in small pieces; "misaligned": a
    # Range answered from 100 bytes before where it was asked to start; "html-trickle":
    # the portal page as a file, its first byte alone, then the rest.
    mode: str = "normal"
    content_type: str = "application/octet-stream"
    release: threading.Event = field(default_factory=threading.Event)


PORTAL_PAGE = b"<!DOCTYPE html><html><body>Please log in to the hotel Wi-Fi</body></html>"


class _Handler(http.server.BaseHTTPRequestHandler):
    state: ServerState

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802 - the http.server naming
        state = self.server.state  # type: ignore[attr-defined]
        if self.path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if state.mode == "stall-headers":
            state.release.wait(30)
            return
        if state.mode == "500":
            self.send_error(500, "Internal Server Error")
            return
        if state.mode == "html-trickle":
            state.statuses.append(200)
            self.send_response(200)
            self.send_header("Content-Type", state.content_type)
            self.send_header("Content-Length", str(1 + len(PORTAL_PAGE)))
            self.end_headers()
            self.wfile.write(b"\n")
            self.wfile.flush()
            time.sleep(0.2)
            self.wfile.write(PORTAL_PAGE)
            return
        if state.mode == "html":
            state.ranges.append(self.headers.get("Range"))
            state.statuses.append(200)
            self.send_response(200)
            self.send_header("Content-Type", state.content_type)
            self.send_header("Content-Length", str(len(PORTAL_PAGE)))
            self.end_headers()
            self.wfile.write(PORTAL_PAGE)
            return
        if self.path != "/file.bin":
            self.send_error(404, "Not Found")
            state.statuses.append(404)
            return
        requested = self.headers.get("Range")
        state.ranges.append(requested)
        body = state.payload
        if requested and state.mode == "416":
            state.statuses.append(416)
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        if requested and state.honour_range:
            start = int(requested.removeprefix("bytes=").split("-")[0])
            if state.mode == "misaligned":
                start = max(1, start - 100)
        if start:
            self.send_response(206)
            self.send_header(
                "Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}"
            )
            state.statuses.append(206)
        else:
            self.send_response(200)
            state.statuses.append(200)
        rest = body[start:]
        self.send_header("Content-Length", str(len(rest)))
        self.send_header("Content-Type", state.content_type)
        self.end_headers()
        if state.mode == "stall":
            self.wfile.write(rest[: len(rest) // 2])
            self.wfile.flush()
            state.release.wait(30)
            return
        if state.mode == "slow":
            for piece in range(0, len(rest), len(rest) // 8 + 1):
                self.wfile.write(rest[piece:piece + len(rest) // 8 + 1])
                self.wfile.flush()
                time.sleep(0.01)
            return
        if state.truncate_next:
            state.truncate_next -= 1
            # Half the promised body, then the connection drops.
            self.wfile.write(rest[: len(rest) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(rest)


@pytest.fixture
def server() -> Iterator[tuple[str, ServerState]]:
    """A local HTTP server in a background thread; yields (file URL, state)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    state = ServerState()
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}/file.bin", state
    finally:
        state.release.set()  # a stalled handler ends now
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_fetch_downloads_and_verifies(server: tuple[str, ServerState], tmp_path: Path) -> None:
    url, state = server
    destination = tmp_path / "sub" / "file.bin"
    assert fetch(url, PAYLOAD_MD5, destination, show_progress=True) == destination
    assert destination.read_bytes() == PAYLOAD
    assert not (tmp_path / "sub" / "file.bin.part").exists()
    assert not (tmp_path / "sub" / "file.bin.lock").exists()
    assert state.ranges == [None]


def test_fetch_returns_existing_file_without_network(tmp_path: Path) -> None:
    destination = tmp_path / "file.bin"
    destination.write_bytes(b"already here")
    # Nothing listens on this address: any network access would fail.
    assert fetch("http://127.0.0.1:1/none", "0" * 32, destination) == destination
    assert destination.read_bytes() == b"already here"


def test_checksum_mismatch_discards_the_download(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, _ = server
    destination = tmp_path / "file.bin"
    with pytest.raises(DownloadError) as caught:
        fetch(url, "0" * 32, destination)
    message = str(caught.value)
    assert "\n" not in message
    assert "file.bin" in message and "0" * 32 in message and PAYLOAD_MD5 in message
    assert not destination.exists()
    assert not (tmp_path / "file.bin.part").exists()


def test_sha256_is_checked_too(server: tuple[str, ServerState], tmp_path: Path) -> None:
    url, _ = server
    good = hashlib.sha256(PAYLOAD).hexdigest()
    assert fetch(url, None, tmp_path / "a.bin", sha256=good).read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match="SHA-256"):
        fetch(url, None, tmp_path / "b.bin", sha256="f" * 64)
    assert not (tmp_path / "b.bin").exists()


def test_interrupted_download_resumes_with_range(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, state = server
    state.truncate_next = 1
    destination = tmp_path / "file.bin"
    part = tmp_path / "file.bin.part"
    with pytest.raises(DownloadError) as caught:
        fetch(url, PAYLOAD_MD5, destination)
    assert url in str(caught.value) and "\n" not in str(caught.value)
    assert not destination.exists()
    kept = part.stat().st_size
    assert 0 < kept < len(PAYLOAD)

    assert fetch(url, PAYLOAD_MD5, destination) == destination
    assert destination.read_bytes() == PAYLOAD
    assert state.ranges == [None, f"bytes={kept}-"]
    assert state.statuses == [200, 206]
    assert not part.exists()


def test_server_ignoring_range_restarts_cleanly(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, state = server
    state.honour_range = False
    part = tmp_path / "file.bin.part"
    part.write_bytes(b"stale bytes that must not be kept")
    destination = fetch(url, PAYLOAD_MD5, tmp_path / "file.bin")
    assert destination.read_bytes() == PAYLOAD
    assert state.ranges == [f"bytes={len(b'stale bytes that must not be kept')}-"]
    assert state.statuses == [200]


def test_http_error_names_the_url(server: tuple[str, ServerState], tmp_path: Path) -> None:
    url, _ = server
    missing = url.replace("file.bin", "missing.bin")
    with pytest.raises(DownloadError, match="404") as caught:
        fetch(missing, PAYLOAD_MD5, tmp_path / "missing.bin")
    assert missing in str(caught.value)
    assert not (tmp_path / "missing.bin").exists()


def test_connection_refused_is_a_download_error(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="127.0.0.1:1"):
        fetch("http://127.0.0.1:1/file.bin", PAYLOAD_MD5, tmp_path / "file.bin", timeout=5)


def test_an_address_that_is_no_url_is_a_download_error(tmp_path: Path) -> None:
    # MOSAICIST_DOWNLOAD_URL_CIFAR10=notaurl ended in a 77-line traceback.
    with pytest.raises(DownloadError, match="notaurl: download failed"):
        fetch("notaurl", PAYLOAD_MD5, tmp_path / "file.bin")
    assert not (tmp_path / "file.bin").exists()


def test_concurrent_fetches_download_once(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, state = server
    destination = tmp_path / "file.bin"
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(fetch(url, PAYLOAD_MD5, destination))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not errors
    assert results == [destination] * 4
    assert destination.read_bytes() == PAYLOAD
    # The lock serialises them; whoever waited finds the file done.
    assert len(state.ranges) == 1


def test_registry_and_url_override(
    server: tuple[str, ServerState], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert set(DATASETS) == {"cifar10", "cifar100", "galaxy10", "galaxy10-sdss"}
    assert DATASETS["cifar10"].md5 == "c32a1d4ab5d03f1284b67883e8d87530"
    assert DATASETS["cifar100"].md5 == "03b5dce01913d631647c71ecec9e9cb8"
    for spec in DATASETS.values():
        assert spec.md5 or spec.sha256
    url, _ = server
    monkeypatch.setenv("MOSAICIST_DOWNLOAD_URL_GALAXY10_SDSS", url)
    assert dataset_url("galaxy10-sdss") == url
    monkeypatch.setitem(
        download.DATASETS, "galaxy10-sdss", DatasetFile(DATASETS["galaxy10-sdss"].url,
                                                        PAYLOAD_MD5, "g.h5")
    )
    assert fetch_dataset("galaxy10-sdss", tmp_path).read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match="unknown dataset"):
        fetch_dataset("mnist", tmp_path)


# --------------------------------------------------------------------------- networks that fail


def _one_line(error: pytest.ExceptionInfo[DownloadError]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_a_captive_portal_page_does_not_overwrite_the_partial_file(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    # The portal answered the resume with its login page (200, the whole
    # "file"), which replaced the 50 KB already downloaded, then failed the checksum.
    url, state = server
    destination = tmp_path / "file.bin"
    part = tmp_path / "file.bin.part"
    state.truncate_next = 1
    with pytest.raises(DownloadError):
        fetch(url, PAYLOAD_MD5, destination)
    kept = part.read_bytes()
    assert 0 < len(kept) < len(PAYLOAD)

    state.mode = "html"
    with pytest.raises(DownloadError) as caught:
        fetch(url, PAYLOAD_MD5, destination)
    assert "web page instead of the file" in _one_line(caught) and url in str(caught.value)
    assert part.read_bytes() == kept
    assert not destination.exists()

    state.mode = "normal"
    assert fetch(url, PAYLOAD_MD5, destination).read_bytes() == PAYLOAD
    assert state.ranges[-1] == f"bytes={len(kept)}-" and state.statuses[-1] == 206


@pytest.mark.parametrize("content_type", ["text/html", "application/octet-stream"])
def test_a_web_page_is_refused_by_its_type_or_its_first_bytes(
    server: tuple[str, ServerState], tmp_path: Path, content_type: str
) -> None:
    url, state = server
    state.mode = "html"
    state.content_type = content_type
    with pytest.raises(DownloadError, match="web page instead of the file"):
        fetch(url, PAYLOAD_MD5, tmp_path / "file.bin")
    assert list(tmp_path.iterdir()) in ([], [tmp_path / "file.bin.lock"])


@pytest.mark.parametrize("where", ["stall", "stall-headers"])
def test_a_stalled_server_times_out_and_keeps_what_came(
    server: tuple[str, ServerState], tmp_path: Path, where: str
) -> None:
    url, state = server
    state.mode = where
    part = tmp_path / "file.bin.part"
    with pytest.raises(DownloadError) as caught:
        fetch(url, PAYLOAD_MD5, tmp_path / "file.bin", timeout=0.5)
    assert "timed out" in _one_line(caught) and url in str(caught.value)
    assert not (tmp_path / "file.bin").exists()
    if where == "stall":
        assert part.stat().st_size == len(PAYLOAD) // 2
        state.mode = "normal"
        assert fetch(url, PAYLOAD_MD5, tmp_path / "file.bin").read_bytes() == PAYLOAD
        assert state.statuses[-1] == 206


def test_a_slow_server_is_waited_for(server: tuple[str, ServerState], tmp_path: Path) -> None:
    url, state = server
    state.mode = "slow"
    assert fetch(url, PAYLOAD_MD5, tmp_path / "file.bin").read_bytes() == PAYLOAD


def test_416_for_a_whole_partial_file_completes_it(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, state = server
    state.mode = "416"
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD)
    assert fetch(url, PAYLOAD_MD5, tmp_path / "file.bin").read_bytes() == PAYLOAD
    assert state.statuses == [416]


@pytest.mark.parametrize(("mode", "stale", "statuses"), [
    # Bytes of some other file kept from an earlier attempt: the server sends the rest (206).
    ("normal", b"x" * 1000, [206, 200]),
    # A partial file as long as the real one (or longer): the server has nothing to add.
    ("416", b"x" * (len(PAYLOAD) + 10), [416, 200]),
], ids=["206-after-other-bytes", "416-after-too-many"])
def test_a_resumed_file_that_fails_its_checksum_is_fetched_again(
    server: tuple[str, ServerState], tmp_path: Path, mode: str, stale: bytes,
    statuses: list[int],
) -> None:
    # Each ended in "checksum mismatch", the user left to run it again.
    url, state = server
    state.mode = mode
    (tmp_path / "file.bin.part").write_bytes(stale)
    assert fetch(url, PAYLOAD_MD5, tmp_path / "file.bin").read_bytes() == PAYLOAD
    assert state.statuses == statuses
    assert not (tmp_path / "file.bin.part").exists()


@pytest.mark.parametrize("stale", [b"", b"stale"], ids=["fresh", "range-ignored"])
def test_a_whole_download_that_fails_its_checksum_is_not_fetched_twice(
    server: tuple[str, ServerState], tmp_path: Path, stale: bytes
) -> None:
    url, state = server
    state.honour_range = False  # a partial file is then rewritten from the start
    if stale:
        (tmp_path / "file.bin.part").write_bytes(stale)
    with pytest.raises(DownloadError, match="checksum mismatch"):
        fetch(url, "0" * 32, tmp_path / "file.bin")
    assert state.statuses == [200]


@pytest.mark.parametrize(("path", "mode", "expected"), [
    ("/file.bin", "500", "HTTP error 500"),
    ("/loop", "normal", "HTTP error 302"),
])
def test_server_errors_and_redirect_loops_are_one_line(
    server: tuple[str, ServerState], tmp_path: Path, path: str, mode: str, expected: str
) -> None:
    url, state = server
    state.mode = mode
    address = url.replace("/file.bin", path)
    with pytest.raises(DownloadError) as caught:
        fetch(address, PAYLOAD_MD5, tmp_path / "file.bin", timeout=5)
    assert expected in _one_line(caught) and address in str(caught.value)
    assert not (tmp_path / "file.bin").exists()
    assert not (tmp_path / "file.bin.part").exists()


class _Failing:
    """A file whose writes fail (with ``error``) once ``room`` bytes are written."""

    def __init__(self, handle: BinaryIO, room: int, error: BaseException) -> None:
        self.handle, self.room, self.error = handle, room, error

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            raise self.error
        self.room -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self.handle, name)

    def __enter__(self) -> _Failing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


def _fail_writes_after(
    monkeypatch: pytest.MonkeyPatch, room: int, error: BaseException
) -> None:
    monkeypatch.setattr(download, "_CHUNK_BYTES", 4096)

    def failing_open(path: Path, mode: str = "r") -> object:
        handle = open(path, mode)  # noqa: SIM115 - closed by the wrapper
        return _Failing(handle, room, error) if "b" in mode and mode != "rb" else handle

    monkeypatch.setattr(download, "open", failing_open, raising=False)


def test_a_full_disk_names_the_file_and_keeps_the_part(
    server: tuple[str, ServerState], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Said "download interrupted ... run again to resume", as if the network had failed.
    url, state = server
    _fail_writes_after(monkeypatch, 3 * 4096, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    part = tmp_path / "file.bin.part"
    with pytest.raises(DownloadError) as caught:
        fetch(url, PAYLOAD_MD5, tmp_path / "file.bin")
    kept = part.stat().st_size
    assert 0 < kept <= 3 * 4096
    assert _one_line(caught).startswith(
        f"{part}: cannot write after {kept:,} bytes (No space left on device)"
    )
    assert not (tmp_path / "file.bin").exists()
    monkeypatch.undo()
    assert fetch(url, PAYLOAD_MD5, tmp_path / "file.bin").read_bytes() == PAYLOAD
    assert state.ranges[-1] == f"bytes={kept}-"


def test_ctrl_c_mid_download_leaves_only_a_partial_file_that_resumes(
    server: tuple[str, ServerState], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, state = server
    _fail_writes_after(monkeypatch, 2 * 4096, KeyboardInterrupt())
    destination = tmp_path / "file.bin"
    with pytest.raises(KeyboardInterrupt):
        fetch(url, PAYLOAD_MD5, destination)
    assert not destination.exists()
    kept = (tmp_path / "file.bin.part").stat().st_size
    assert 0 < kept <= 2 * 4096
    monkeypatch.undo()
    assert fetch(url, PAYLOAD_MD5, destination).read_bytes() == PAYLOAD
    assert state.ranges[-1] == f"bytes={kept}-" and state.statuses[-1] == 206


def test_offline_says_what_to_fetch_from_where_and_where_to_put_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Said only "<url>: download failed: Connection refused".
    monkeypatch.setenv("MOSAICIST_DOWNLOAD_URL_CIFAR10", "http://127.0.0.1:1/cifar.tar.gz")
    with pytest.raises(DownloadError) as caught:
        fetch_dataset("cifar10", tmp_path / "downloads")
    message = _one_line(caught)
    destination = tmp_path / "downloads" / "cifar-10-binary.tar.gz"
    assert message.startswith("http://127.0.0.1:1/cifar.tar.gz: download failed: ")
    assert message.endswith(
        "to skip the download, fetch http://127.0.0.1:1/cifar.tar.gz by other means and save "
        f"it as {destination}"
    )
    assert not destination.exists()


def test_offline_on_the_command_line_is_one_line_and_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner
    from PIL import Image

    from mosaicist.cli import main

    target = tmp_path / "target.png"
    Image.new("RGB", (32, 32), (200, 10, 10)).save(target)
    monkeypatch.setenv("MOSAICIST_DOWNLOAD_URL_CIFAR10", "http://127.0.0.1:1/cifar.tar.gz")
    result = CliRunner().invoke(main, ["make", str(target), "--tiles", "cifar10", "--cache-dir",
                                       str(tmp_path / "cache"), "-o", str(tmp_path / "out.png")])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "http://127.0.0.1:1/cifar.tar.gz" in lines[0]
    assert str(tmp_path / "cache" / "downloads" / "cifar-10-binary.tar.gz") in lines[0]
    assert not (tmp_path / "out.png").exists()


def test_a_range_answered_from_elsewhere_is_not_written_over_the_part(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    # A 206 starting before the kept bytes was written over them from the start of the
    # part, which then failed its checksum and was discarded.
    url, state = server
    state.truncate_next = 1
    destination = tmp_path / "file.bin"
    with pytest.raises(DownloadError):
        fetch(url, PAYLOAD_MD5, destination)
    state.mode = "misaligned"
    assert fetch(url, PAYLOAD_MD5, destination).read_bytes() == PAYLOAD
    assert state.statuses == [200, 206, 200]
    assert state.ranges[1] is not None and state.ranges[2] is None


def test_a_web_page_whose_first_bytes_come_alone_is_refused(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    # The first read held only a newline, so the page (sent as a file) was written out.
    url, state = server
    state.mode = "html-trickle"
    with pytest.raises(DownloadError, match="web page instead of the file"):
        fetch(url, PAYLOAD_MD5, tmp_path / "file.bin")
    assert not (tmp_path / "file.bin.part").exists()


@pytest.mark.parametrize("problem", ["read-only", "full", "a file"])
def test_a_cache_folder_that_cannot_be_written_is_one_download_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, problem: str
) -> None:
    # A raw PermissionError (or NotADirectoryError) from opening the lock file or
    # making the folder; the command line showed no way out.
    folder = tmp_path / "downloads"
    if problem == "a file":
        folder.write_bytes(b"")
    else:
        code = errno.EACCES if problem == "read-only" else errno.ENOSPC

        def refusing_open(path: Path, mode: str = "r") -> object:
            raise OSError(code, os.strerror(code), str(path))

        monkeypatch.setattr(download, "open", refusing_open, raising=False)
    monkeypatch.setenv("MOSAICIST_DOWNLOAD_URL_CIFAR10", "http://127.0.0.1:1/cifar.tar.gz")
    with pytest.raises(DownloadError) as caught:
        fetch_dataset("cifar10", folder)
    message = _one_line(caught)
    assert message.startswith(f"{folder}: cannot download into this folder (")
    assert "--cache-dir" in message


# --------------------------------------------------------------------------- endless bodies


class _EndlessHandler(http.server.BaseHTTPRequestHandler):
    """Sends bytes until the client hangs up (8 MiB at most), or declares a huge length."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802 - the http.server naming
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if self.path == "/declared.bin":
            self.send_header("Content-Length", str(10**12))
        self.end_headers()  # otherwise no length: the body runs until the connection closes
        with contextlib.suppress(OSError):
            for _ in range(128):
                self.wfile.write(PAYLOAD[:64 << 10])


@pytest.fixture
def endless() -> Iterator[str]:
    """A local HTTP server whose bodies never end; yields its base address."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EndlessHandler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_an_endless_body_is_stopped_at_twice_the_datasets_size(
    endless: str, server: tuple[str, ServerState], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No cap: a server or proxy that never ended the body filled the disk (here it
    # stops after 8 MiB, and the download then failed only its checksum).
    monkeypatch.setitem(download.DATASETS, "cifar10",
                        DatasetFile(f"{endless}/cifar.tar.gz", PAYLOAD_MD5, "c.tar.gz",
                                    size=len(PAYLOAD)))
    with pytest.raises(DownloadError) as caught:
        fetch_dataset("cifar10", tmp_path)
    message = _one_line(caught)
    limit = download.SIZE_MARGIN * len(PAYLOAD)
    assert message.startswith(f"{endless}/cifar.tar.gz: the server sent more than the "
                              f"{limit:,} bytes this file can have")
    assert "partial download was deleted" in message
    assert not (tmp_path / "c.tar.gz.part").exists() and not (tmp_path / "c.tar.gz").exists()
    # A length declared over the cap is refused before a byte is written: a part kept
    # from an earlier attempt stays for the next.
    (tmp_path / "c.tar.gz.part").write_bytes(PAYLOAD[:1000])
    monkeypatch.setitem(download.DATASETS, "cifar10",
                        DatasetFile(f"{endless}/declared.bin", PAYLOAD_MD5, "c.tar.gz",
                                    size=len(PAYLOAD)))
    with pytest.raises(DownloadError, match=r"declares 1,000,000,000,000 bytes, more than"):
        fetch_dataset("cifar10", tmp_path)
    assert (tmp_path / "c.tar.gz.part").read_bytes() == PAYLOAD[:1000]
    assert not (tmp_path / "c.tar.gz").exists()
    # The whole file, at its size, is under the cap; every registered dataset has one.
    url, _ = server
    monkeypatch.setitem(download.DATASETS, "cifar10",
                        DatasetFile(url, PAYLOAD_MD5, "c.tar.gz", size=len(PAYLOAD)))
    assert fetch_dataset("cifar10", tmp_path).read_bytes() == PAYLOAD
    monkeypatch.undo()
    assert all(spec.size for spec in DATASETS.values())


def test_opening_an_array_of_tiles_imports_no_http_or_ssl() -> None:
    # The HTTP and SSL modules are 0.013 s of every command that opens an array of
    # tiles (its module imports this one) and never downloads.
    import subprocess
    import sys

    code = ("import sys, mosaicist.sources.arrays, mosaicist.sources.cifar\n"
            "print(sorted({'http.client', 'ssl', 'urllib.request'} & set(sys.modules)))")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=60, check=True).stdout
    assert shown.strip() == "[]"


def test_a_cache_on_a_file_system_without_locks_still_downloads(
    server: tuple[str, ServerState], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Some network file systems refuse flock (ENOLCK): the download was a raw OSError.
    url, state = server

    def refused(descriptor: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(download.fcntl, "flock", refused)
    destination = tmp_path / "file.bin"
    assert fetch(url, PAYLOAD_MD5, destination) == destination
    assert destination.read_bytes() == PAYLOAD
