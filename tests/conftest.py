"""Shared fixtures: small image folders made with Pillow/numpy, an isolated cache."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Ctrl+C as in a terminal. A suite started in the background by a non-interactive
# shell inherits SIGINT ignored, and would pass that on to the servers its tests
# start and stop with SIGINT (and _thread.interrupt_main would do nothing).
signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never touch the user cache: every test gets its own MOSAICIST_CACHE_DIR."""
    monkeypatch.setenv("MOSAICIST_CACHE_DIR", str(tmp_path_factory.mktemp("cache-env")))


def record_results(monkeypatch, owner, name: str) -> list:
    """Wrap ``owner.name`` for the test: each call's result is appended to the list returned."""
    results: list = []
    function = getattr(owner, name)

    def recorded(*arguments, **keywords):
        results.append(function(*arguments, **keywords))
        return results[-1]

    monkeypatch.setattr(owner, name, recorded)
    return results


def count_builds(monkeypatch, owner, name: str) -> list:
    """Count calls of ``owner.name``: one ``1`` appended per call, to the list returned.

    The first call waits (at most a second) for a second to come, so that two
    builders without a lock between them are both seen building.
    """
    builds: list = []
    original = getattr(owner, name)

    def build(*arguments, **keywords):
        builds.append(1)
        for _ in range(100):
            if len(builds) > 1:
                break
            time.sleep(0.01)
        return original(*arguments, **keywords)

    monkeypatch.setattr(owner, name, build)
    return builds


def in_threads(count: int, work) -> list:
    """``work()`` run on ``count`` threads at once; their results, in order."""
    results: list = [None] * count

    def run(slot: int) -> None:
        results[slot] = work()

    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    return results


@contextlib.contextmanager
def held_by_another_thread(held) -> Iterator[None]:
    """The block runs while another thread is inside ``held`` (a lock or a context manager)."""
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        with held:
            inside.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert inside.wait(10)
        yield
    finally:
        release.set()
        holder.join()


def gradient(width: int, height: int) -> np.ndarray:
    """An (H, W, 3) uint8 picture that differs in every direction (orientation checks)."""
    y, x = np.mgrid[0:height, 0:width]
    planes = [
        x * 255 // max(width - 1, 1),
        y * 255 // max(height - 1, 1),
        (x + y) * 127 // max(width + height - 2, 1),
    ]
    return np.stack(planes, -1).astype(np.uint8)


def noisy_target() -> np.ndarray:
    """A 56x40 smooth colour ramp with noise: a small target for whole-pipeline tests."""
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:40, 0:56]
    picture = np.stack([x * 4, y * 6, (x + y) * 2], -1) + rng.normal(0, 8, (40, 56, 3))
    return np.clip(picture, 0, 255).astype(np.uint8)


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 10))
        + chunk(b"IEND", b"")
    )


#: Files of the odd folder that must be skipped, with a word their reason contains.
BAD_FILES = {
    "dangling.png": "which is not there",  # a link to a missing file: skipped by name
    "bad_bomb.png": "limit",
    "bad_empty.png": "not a readable image",
    "bad_text.jpg": "not a readable image",
    "bad_truncated.jpg": "truncated",
}

#: Every usable file of the odd folder, in library (sorted relative POSIX) order.
GOOD_FILES = [
    "jpeg/cmyk.jpg",
    "jpeg/exif6.jpg",
    "jpeg/grey.jpg",
    "jpeg/plain.jpg",
    "jpeg/progressive.jpg",
    "other/anim.gif",
    "other/img.bmp",
    "other/img.tif",
    "other/img.webp",
    "other/img16.tif",
    "other/wide.png",
    "png/bilevel.png",
    "png/deep/la.png",
    "png/deep/rgba.png",
    "png/i16.png",
    "png/link.png",
    "png/palette.png",
    "png/palette_t.png",
    "png/rgb.png",
]


def make_odd_folder(root: Path) -> Path:
    """A nested folder with every kind of odd file (see GOOD_FILES and BAD_FILES)."""
    (root / "jpeg").mkdir(parents=True)
    (root / "png" / "deep").mkdir(parents=True)
    (root / "other").mkdir()
    (root / ".hidden_dir").mkdir()
    square = Image.fromarray(gradient(40, 40))
    square.save(root / "jpeg/plain.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(gradient(40, 24)).save(root / "jpeg/exif6.jpg", quality=95, exif=exif)
    square.convert("CMYK").save(root / "jpeg/cmyk.jpg", quality=95)
    square.convert("L").save(root / "jpeg/grey.jpg", quality=95)
    square.save(root / "jpeg/progressive.jpg", quality=95, progressive=True)
    square.save(root / "png/rgb.png")
    square.convert("P").save(root / "png/palette.png")
    palette = Image.new("P", (16, 16))  # index 0 red (transparent), index 1 blue
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((0, 0), 1)
    palette.save(root / "png/palette_t.png", transparency=0)
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 200  # fully transparent red -> white
    Image.fromarray(rgba, "RGBA").save(root / "png/deep/rgba.png")
    Image.fromarray(np.zeros((16, 16, 2), np.uint8), "LA").save(root / "png/deep/la.png")
    deep = np.full((16, 16), 65535, np.uint16)
    deep[:8] = 0
    Image.fromarray(deep).save(root / "png/i16.png")
    Image.fromarray(deep).save(root / "other/img16.tif")
    Image.fromarray(np.eye(16, dtype=bool)).save(root / "png/bilevel.png")
    square.save(root / "other/img.webp", lossless=True)
    square.save(root / "other/img.bmp")
    square.save(root / "other/img.tif")
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(root / "other/anim.gif", save_all=True, append_images=frames[1:])
    wide = np.zeros((10, 30, 3), np.uint8)
    wide[:, 10:20] = 255
    Image.fromarray(wide).save(root / "other/wide.png")
    buffer = io.BytesIO()
    square.save(buffer, "JPEG")
    (root / "bad_truncated.jpg").write_bytes(buffer.getvalue()[:300])
    (root / "bad_empty.png").write_bytes(b"")
    (root / "bad_text.jpg").write_text("not a picture\n")
    (root / "bad_bomb.png").write_bytes(bomb_png(60000, 60000))
    (root / ".hidden.png").write_bytes((root / "png/rgb.png").read_bytes())
    (root / ".hidden_dir/x.png").write_bytes((root / "png/rgb.png").read_bytes())
    (root / "notes.txt").write_text("ignored\n")
    (root / "array.npy").write_bytes(b"ignored")
    (root / "README").write_text("ignored\n")
    os.symlink(root, root / "loop")  # a loop: must not be followed
    os.symlink(root / "png", root / "loop.png")  # a folder link named like an image
    os.symlink(root / "missing.png", root / "dangling.png")
    os.symlink(root / "png/rgb.png", root / "png/link.png")  # links to files are followed
    return root


def make_jpeg_photos(root: Path, count: int = 12, seed: int = 3) -> Path:
    """``count`` textured JPEG photos of random sizes (26-59 px a side) named p00.jpg..."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        height, width = rng.integers(26, 60, 2).tolist()
        pixels = np.clip(rng.integers(0, 256, 3) + rng.integers(-60, 60, (height, width, 3)),
                         0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"p{index:02d}.jpg", quality=90)
    return root


def banded_tile(rng: np.random.Generator) -> np.ndarray:
    """An 8 x 8 tile: a random colour with a ramp across it and some noise."""
    base = rng.integers(0, 256, 3)
    ramp = np.linspace(-40, 40, 8)[None, :, None] * rng.choice([-1, 1], 3)
    return np.clip(base + ramp + rng.normal(0, 12, (8, 8, 3)), 0, 255).astype(np.uint8)


def shifted_picture(width: int, height: int, shift: int = 0) -> np.ndarray:
    """Stripes of three slopes, moved along by ``shift``: a video's frame ``shift``."""
    y, x = np.mgrid[0:height, 0:width]
    planes = [(x * 5 + shift * 3) % 256, (y * 6 + shift) % 256, ((x + y) * 3) % 256]
    return np.stack(planes, -1).astype(np.uint8)


def write_frames(path: Path, pictures: list[np.ndarray], rate: int = 12) -> None:
    """A video of ``pictures`` (all of one size), with PyAV (H.264 where it has it)."""
    import av

    height, width = pictures[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4",
                                      rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for picture in pictures:
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def smooth_tiles(rng: np.random.Generator, count: int, side: int) -> np.ndarray:
    """Smooth random tiles with a little noise, so that the search's bounds prune."""
    y, x = np.mgrid[0:side, 0:side] / (side - 1)
    base = rng.uniform(0, 255, (count, 1, 1, 3))
    slope = rng.uniform(-100, 100, (count, 2, 1, 1, 3))
    pictures = base + slope[:, 0] * x[None, :, :, None] + slope[:, 1] * y[None, :, :, None]
    pictures += rng.normal(0, 5, pictures.shape)
    return np.clip(np.rint(pictures), 0, 255).astype(np.uint8)


def check_twins_searched_once(rng: np.random.Generator, vectors: np.ndarray, tiles: np.ndarray,
                              geometry, features, k: int, hundredths: int,
                              fewer: int = 1) -> None:
    """``match_exact`` of cells with twins, each under its own limit and upper, against the
    same cells searched one by one and against the ranking of every pair.

    Twins are searched once (at least ``fewer`` times fewer pairs evaluated), and each
    gets the same tiles, distances and cut-offs as its own search.
    """
    from mosaicist.match import _exact, match_exact

    every = _exact.dense_distances(vectors, tiles, geometry, features, hundredths / 100)
    price = np.where(rng.random(len(tiles)) < 0.4,
                     rng.integers(0, int(every.max()) // 10, len(tiles)), 0).astype(np.int64)
    total = every + price
    ranked = np.lexsort((np.broadcast_to(np.arange(len(tiles)), total.shape), total), axis=1)
    kth = np.take_along_axis(total, ranked[:, k - 1:k], axis=1)[:, 0]
    # Twins with limits from below their nearest to past their k-th best, and true hints.
    limit = np.quantile(total, rng.uniform(0.0, 0.05, len(vectors)), axis=1).diagonal()
    limit = limit.astype(np.int64) + rng.integers(0, 2, len(vectors))
    upper = kth + rng.integers(0, 2, len(vectors)) * rng.integers(0, 1000, len(vectors))
    terms = _exact.cell_terms(vectors, geometry, features)
    alone_terms = _exact.CellTerms(terms.bound_rows, terms.norm2, terms.flat, terms.sums,
                                   terms.tail_norm)
    for search_units in (True, False):
        options = dict(k=k, tint=hundredths / 100, price=price, limit=limit, upper=upper,
                       search_units=search_units)
        once = match_exact(vectors, tiles, geometry, features, **options)
        alone = match_exact(vectors, tiles, geometry, features, cell_terms=alone_terms,
                            **options)
        assert once.evaluated * fewer < alone.evaluated
        np.testing.assert_array_equal(once.tile, alone.tile)
        np.testing.assert_array_equal(once.distance, alone.distance)
        if k > 1:
            np.testing.assert_array_equal(once.candidates, alone.candidates)
            np.testing.assert_array_equal(once.candidate_distances, alone.candidate_distances)
    found = once.candidates if k > 1 else once.tile[:, None]
    for cell in range(len(vectors)):
        expected = ranked[cell][total[cell, ranked[cell]] < limit[cell]][:k]
        assert found[cell][found[cell] >= 0].tolist() == expected.tolist()


def run_with_ascii_file_names(script: Path, *arguments: str) -> subprocess.CompletedProcess:
    """Run the ASCII file ``script`` in a child whose file system encoding is ASCII.

    The C locale without UTF-8 mode (``LC_ALL=C PYTHONUTF8=0``): names that are
    not ASCII are held as their bytes' surrogates there.
    """
    environment = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0",
                   "PYTHONCOERCECLOCALE": "0"}
    return subprocess.run([sys.executable, str(script), *arguments], env=environment,
                          capture_output=True, text=True, timeout=60)


def make_colour_folder(root: Path, count: int, size: int = 12, seed: int = 0) -> Path:
    """``count`` random-colour PNGs named t000.png, t001.png, ..."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"t{index:03d}.png")
    return root


@pytest.fixture
def preview_picks(monkeypatch) -> dict:
    """The studio preview's picks: ``["tile"]`` holds the library position of each cell's
    tile in the last preview drawn (a spy on ``Previewer._draw``)."""
    from mosaicist.studio._preview import Previewer

    picks: dict = {}
    draw = Previewer._draw

    def spy(self, warm, search, chosen, *args):
        picks["tile"] = warm.positions[search.rows[chosen]]
        return draw(self, warm, search, chosen, *args)

    monkeypatch.setattr(Previewer, "_draw", spy)
    return picks


# --- browser tests ----------------------------------------------------------------------------

#: Debian's Chromium, which Playwright drives (no `playwright install`).
CHROMIUM = "/usr/bin/chromium"
#: Set (as scripts/test.sh does where Chromium is installed): a missing browser fails.
REQUIRE_BROWSER = "MOSAICIST_REQUIRE_BROWSER"


def sync_playwright_or_skip():
    """Playwright's sync API, or skip (fail when MOSAICIST_REQUIRE_BROWSER is set)."""
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"Chromium ({CHROMIUM})")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
        missing.append("the playwright package")
    if missing:
        reason = f"browser test needs {' and '.join(missing)}; scripts/test.sh installs both"
        if os.environ.get(REQUIRE_BROWSER):
            pytest.fail(f"{reason} ({REQUIRE_BROWSER} is set)")
        pytest.skip(reason)
    return sync_playwright


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, driven by Playwright."""
    sync_playwright = sync_playwright_or_skip()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def dead_pid() -> int:
    """The id of a process that has exited (and is not running again)."""
    from mosaicist.paths import process_alive

    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    assert not process_alive(child.pid)
    return child.pid


def post_cut_off(app, path: str, port: int, headers: list[tuple[bytes, bytes]],
                 first_part: bytes) -> list[dict]:
    """POST to ``app`` (ASGI, called directly) a body whose client goes away after
    ``first_part``; return the messages the app sent (its answer)."""
    import asyncio

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "headers": [(b"host", f"127.0.0.1:{port}".encode()),
                                              *headers],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", port)}
    incoming = [{"type": "http.request", "body": first_part, "more_body": True},
                {"type": "http.disconnect"}]
    sent: list[dict] = []

    async def receive() -> dict:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent
