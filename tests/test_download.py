"""Downloads against a local HTTP server: success, checksum, resume, restart, locking."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

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


class _Handler(http.server.BaseHTTPRequestHandler):
    state: ServerState

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802 - the http.server naming
        state = self.server.state  # type: ignore[attr-defined]
        if self.path != "/file.bin":
            self.send_error(404, "Not Found")
            state.statuses.append(404)
            return
        requested = self.headers.get("Range")
        state.ranges.append(requested)
        body = state.payload
        start = 0
        if requested and state.honour_range:
            start = int(requested.removeprefix("bytes=").split("-")[0])
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
        self.end_headers()
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
