"""Messages a new user hits (session 35): each says what to do, in the user's own terms."""

from __future__ import annotations

import asyncio
import io
import json
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_jpeg_photos
from PIL import Image

from mosaicist.errors import DownloadError, MosaicistError, SourceError
from mosaicist.placements import Placements
from mosaicist.sources import open_source

# --- a folder of pictures given as cifar10:PATH -----------------------------------------


def test_a_folder_of_pictures_given_as_cifar_says_how_to_give_it(tmp_path: Path) -> None:
    # It said only "no CIFAR-10 batches found (expected the binary or python distribution)",
    # which sent a user with CIFAR-10 exported as JPEGs (by class) looking for batches.
    folder = tmp_path / "cifar jpegs" / "train"
    make_jpeg_photos(folder / "cat", count=2)
    with pytest.raises(SourceError) as caught:
        open_source(f"cifar10:{folder}", tmp_path / "cache").scan()
    message = str(caught.value)
    assert message.startswith(f"{folder}: no CIFAR-10 batches found")
    assert message.endswith(f"a folder of pictures is given as its path alone "
                            f"(--tiles {shlex.quote(str(folder))}), without 'cifar10:'")
    assert "\n" not in message


def test_a_folder_without_pictures_is_not_called_one_of_pictures(tmp_path: Path) -> None:
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a picture")
    (folder / ".hidden.jpg").write_bytes(b"left out, as the folder source leaves it out")
    with pytest.raises(SourceError) as caught:
        open_source(f"cifar100:{folder}", tmp_path / "cache").scan()
    assert str(caught.value) == (f"{folder}: no CIFAR-100 batches found (expected the binary "
                                 "or python distribution, e.g. cifar-100-binary/)")


# --- the download that cannot reach the internet ----------------------------------------


def test_a_failed_download_offers_any_folder_of_photos(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Said "download failed: [Errno 111] Connection refused; to skip the download, fetch
    # ... and save it as ...": no word of the tiles a user already has.
    monkeypatch.setenv("MOSAICIST_DOWNLOAD_URL_CIFAR10", "http://127.0.0.1:1/cifar.tar.gz")
    with pytest.raises(DownloadError) as caught:
        open_source("cifar10", tmp_path / "cache").scan()
    message = str(caught.value)
    assert "\n" not in message and "[Errno" not in message
    assert "download failed: Connection refused; " in message
    assert "any folder of photos can be the tiles instead (--tiles FOLDER)" in message
    destination = tmp_path / "cache" / "downloads" / "cifar-10-binary.tar.gz"
    assert message.endswith(f"save it as {destination}")


# --- mosaicist live: a script's upload without the page's token -------------------------


def _post(app: Any, path: str, headers: dict[str, str], body: bytes = b"x") -> tuple[int, str]:
    """POST ``body`` to the ASGI ``app`` (called directly); its status and body."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000),
             "headers": [(b"host", b"127.0.0.1:8000"),
                         (b"content-length", str(len(body)).encode()),
                         *((key.lower().encode(), value.encode())
                           for key, value in headers.items())]}
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = sent[0]
    text = b"".join(message.get("body", b"") for message in sent[1:]).decode()
    length = dict(start["headers"]).get(b"content-length")
    assert length is None or int(length) == len(text.encode())
    return start["status"], text


@pytest.fixture
def live_wall(tmp_path: Path) -> Any:
    from mosaicist.live import Event, Live

    target = tmp_path / "target.png"
    Image.fromarray(np.full((40, 60, 3), 120, np.uint8)).save(target)
    event = Event.open(tmp_path / "event", target=target, grid=(6, 4),
                       settings={"tile_px": 16, "match_px": 8})
    live = Live(event, rate=0)
    yield live
    live.close()


def test_a_script_without_a_token_is_told_how_to_upload(live_wall: Any) -> None:
    # A script (no page, no token) heard "this page is from an earlier start of mosaicist
    # live (or from elsewhere); reload the page and try again".
    from mosaicist.live import make_live_app

    app = make_live_app(live_wall, host="127.0.0.1", port=8000)
    status, text = _post(app, "/api/photos", {"Content-Type": "image/jpeg"})
    assert status == 403
    NO_TOKEN = json.loads(text)["error"]  # noqa: N806 - the same words throughout
    assert NO_TOKEN.startswith("this request has no token: photos are sent from the guests' "
                               "page") and "reload" not in NO_TOKEN
    assert NO_TOKEN.endswith("by a script with the admin token printed at start, as "
                             "Authorization: Bearer TOKEN")
    # Not a bearer scheme: no token either.
    status, text = _post(app, "/api/photos", {"Authorization": "Basic eDp5"})
    assert (status, json.loads(text)) == (403, {"error": NO_TOKEN})
    # Outside the API the same words, as text.
    assert _post(app, "/upload", {}) == (403, NO_TOKEN + "\n")
    assert list(live_wall.event.photos_folder.iterdir()) == []


def test_a_script_with_a_wrong_admin_token_uploading_is_told_so(live_wall: Any) -> None:
    # It heard "reload the page" too; the host's routes say this of a wrong token.
    from mosaicist.live import make_live_app

    app = make_live_app(live_wall, host="127.0.0.1", port=8000)
    for given in ("Bearer not-it", f"Bearer {live_wall.event.page_token}"):
        status, text = _post(app, "/api/photos", {"Authorization": given})
        assert (status, json.loads(text)) == (403, {"error": "the admin token is not this wall's"})
    assert list(live_wall.event.photos_folder.iterdir()) == []


def test_a_page_is_still_told_to_reload(live_wall: Any) -> None:
    # A page's token from an earlier start, and a browser's request without one (another
    # site's page): the guard's words, which are right for a page.
    from mosaicist.live import make_live_app

    app = make_live_app(live_wall, host="127.0.0.1", port=8000)
    for headers in ({"X-Mosaicist-Token": "from-an-earlier-start"},
                    {"Origin": "http://127.0.0.1:8000"}, {"Sec-Fetch-Site": "cross-site"}):
        status, text = _post(app, "/api/photos", headers)
        assert status == 403 and "reload the page" in json.loads(text)["error"]


def test_a_script_with_the_admin_token_still_uploads(live_wall: Any) -> None:
    from mosaicist.live import make_live_app

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 60, 3), np.uint8)).save(
        buffer, "PNG")
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; "
            f"filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n").encode()
    body += buffer.getvalue() + f"\r\n--{boundary}--\r\n".encode()
    app = make_live_app(live_wall, host="127.0.0.1", port=8000)
    status, text = _post(app, "/api/photos", {
        "Authorization": f"Bearer {live_wall.event.admin_token}",
        "Content-Type": f"multipart/form-data; boundary={boundary}"}, body)
    assert status in (201, 202), text


# --- placements saved without the tiles' content hashes ---------------------------------


def _index_changed(ids: list[str]) -> dict[str, str]:
    raise MosaicistError("/cache/index: the tile index changed since this library was read "
                         "(another run updated it): the content hashes of its photos as they "
                         "were then are not known")


def _placements() -> Placements:
    return Placements(1, 2, np.array([0, 1]), np.array([0, 0]), ["a.jpg", "b.jpg"],
                      hashes=_index_changed)


def test_placements_saved_without_hashes_say_so(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    # Saved without them, silently: a later render could then never say which photos
    # changed since, and nothing told why.
    path = tmp_path / "placements.json"
    _placements().write(path)
    assert "hashes" not in json.loads(path.read_text())
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"mosaicist: warning: {path}: saved without the tiles' content "
                               "hashes, so a render of it cannot say which photos changed since")
    assert lines[0].endswith("the tile index changed since this library was read (another run "
                             "updated it): the content hashes of its photos as they were then "
                             "are not known")


def test_placements_saved_without_hashes_quietly(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    placements = _placements()
    placements.write(tmp_path / "quiet.json", quiet=True)
    placements.write(tmp_path / "placements.csv")  # a CSV file records no hashes anyway
    assert capsys.readouterr().err == ""


def test_placements_of_a_library_updated_since_say_so(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # The real case: another run re-indexed the library between this make's reading
    # and its saving.
    from mosaicist import make_mosaic
    from mosaicist.library import TileLibrary
    from mosaicist.options import MosaicOptions

    library = make_jpeg_photos(tmp_path / "photos", count=3)
    opened = TileLibrary.open(str(library), 8)
    mosaic = make_mosaic(np.full((8, 8, 3), 128, np.uint8), opened,
                         MosaicOptions(cell_px=4, match_px=8, tile_px=8, preset="seed",
                                       max_uses=None, compute_metrics=False))
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(library / "added.png")
    TileLibrary.open(str(library), 8)  # another run's update
    capsys.readouterr()
    mosaic.placements.write(tmp_path / "placements.json")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "saved without the tiles' content hashes" in err
    assert "the tile index changed since this library was read" in err
