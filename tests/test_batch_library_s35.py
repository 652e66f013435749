"""A batch makes every mosaic with one library, or stops saying that it changed (session 35).

Another process indexing the library again while a batch runs (photos added,
edited or removed, then ``mosaicist index``) mixed two libraries in one
batch: workers that opened the index later used the new one while the
batch recorded the old one's fingerprint. The change is made here between
targets, deterministically: by a runner that makes the batch's jobs one at
a time in this process and calls a hook before each (the workers' code is
the pool's), or directly between calls of a worker's function.
"""

from __future__ import annotations

import os
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest
from conftest import make_colour_folder, shifted_picture, write_frames
from PIL import Image

from mosaicist import MosaicOptions, TileLibrary
from mosaicist.batch import _run, _worker, batch_mosaics, library_fingerprint
from mosaicist.errors import MosaicistError

CELL = 8
OPTIONS = MosaicOptions(preset="seed", cell_px=CELL, tile_px=CELL, match_px=CELL)
CHANGED = "the library changed while the batch ran"


@pytest.fixture(autouse=True)
def _fresh_worker(monkeypatch):
    """Every test is a fresh worker process: no library kept open from another test."""
    monkeypatch.setattr(_worker, "_libraries", {})


def _index(tiles: Path, cache: Path) -> TileLibrary:
    """Index (or index again) ``tiles``, as ``mosaicist index`` does."""
    return TileLibrary.open(str(tiles), CELL, cache_dir=cache)


def _add_photo(tiles: Path, cache: Path) -> None:
    """Another process adds a photo to the library and indexes it."""
    Image.fromarray(np.full((12, 12, 3), 200, np.uint8)).save(tiles / "zz-added.png")
    _index(tiles, cache)


def _job(name: str, target: Path, out: Path, tiles: Path, cache: Path, library: str = ""
         ) -> _worker.Job:
    return _worker.Job(name, str(target), str(out / name), str(tiles), OPTIONS, str(cache),
                       library=library)


@pytest.fixture
def folders(tmp_path):
    """A library of 12 photos (indexed), three targets and an output folder."""
    tiles = make_colour_folder(tmp_path / "tiles", 12)
    cache = tmp_path / "cache"
    _index(tiles, cache)
    targets = tmp_path / "targets"
    targets.mkdir()
    for index in range(3):
        Image.fromarray(shifted_picture(32, 24, 5 * index)).save(targets / f"img{index}.png")
    out = tmp_path / "out"
    out.mkdir()
    return tiles, cache, targets, out


def test_a_worker_refuses_a_library_indexed_again_during_the_batch(folders):
    # A worker kept the library it opened first and a fresh one read the new index: one
    # batch's mosaics were made with two libraries, all recorded as the first.
    tiles, cache, targets, out = folders
    batch_library = library_fingerprint(_index(tiles, cache))
    made = _worker.make_target(_job("a.png", targets / "img0.png", out, tiles, cache,
                                    batch_library))
    assert made.ok, made.message
    _add_photo(tiles, cache)
    kept = _worker.make_target(_job("b.png", targets / "img1.png", out, tiles, cache,
                                    batch_library))
    assert not kept.ok and kept.library_changed
    assert kept.message.startswith(f"{tiles}: {CHANGED}"), kept.message
    assert "\n" not in kept.message and not (out / "b.png").exists()
    # A process that opens the library only now (started late, or replacing one that
    # died) reads the new index: refused too.
    _worker._libraries.clear()
    fresh = _worker.make_target(_job("c.png", targets / "img2.png", out, tiles, cache,
                                     batch_library))
    assert not fresh.ok and fresh.library_changed and CHANGED in fresh.message
    assert not (out / "c.png").exists()


def test_a_worker_reads_a_library_published_again_for_a_later_batch(folders):
    # The workers of a cluster outlive a batch: the next batch, after photos were added,
    # was made with the library the workers had kept, and recorded as the new one.
    tiles, cache, targets, out = folders
    assert len(_worker.open_library(str(tiles), OPTIONS, str(cache))) == 12
    _add_photo(tiles, cache)
    assert len(_worker.open_library(str(tiles), OPTIONS, str(cache))) == 13
    # The same with the batches' fingerprints: each batch gets its own library.
    Image.fromarray(np.full((12, 12, 3), 30, np.uint8)).save(tiles / "zzz-another.png")
    later = library_fingerprint(_index(tiles, cache))
    assert len(_worker.open_library(str(tiles), OPTIONS, str(cache), later)) == 14


def test_an_index_published_again_with_the_same_photos_is_no_change(folders):
    # A run that publishes the same photos again (a file touched: its stamp changed, its
    # content not) must not stop a batch.
    tiles, cache, targets, out = folders
    batch_library = library_fingerprint(_index(tiles, cache))
    first = _worker.open_library(str(tiles), OPTIONS, str(cache), batch_library)
    touched = tiles / "t003.png"
    later = touched.stat().st_mtime_ns + 5_000_000_000
    os.utime(touched, ns=(later, later))
    _index(tiles, cache)
    assert not first.is_current()
    again = _worker.open_library(str(tiles), OPTIONS, str(cache), batch_library)
    assert again.is_current() and len(again) == 12


class _InlineRunner(_run._Runner):
    """The batch's jobs made here, one at a time, each after :attr:`hook` (see the module)."""

    hook = staticmethod(lambda job: None)

    def __init__(self, workers: int, threads: int) -> None:
        self.workers = self.capacity = 1

    def submit(self, work: _run._Work) -> Future:
        type(self).hook(work.job)
        future: Future = Future()
        future.set_result(_worker.make_target(work.job, work.frame))
        return future

    def wait(self, pending):
        return set(pending)

    def close(self) -> None:
        pass


def _change_before(monkeypatch, name: str, tiles: Path, cache: Path) -> None:
    """Run the batch in this process; a photo is added and indexed before job ``name``."""
    def hook(job: _worker.Job) -> None:
        if job.name.endswith(name) and not (tiles / "zz-added.png").exists():
            _add_photo(tiles, cache)

    monkeypatch.setattr(_InlineRunner, "hook", staticmethod(hook))
    monkeypatch.setattr(_run, "_LocalRunner", _InlineRunner)


def test_a_batch_of_images_never_mixes_two_libraries(folders, monkeypatch):
    tiles, cache, targets, out = folders
    _change_before(monkeypatch, "img1.png", tiles, cache)
    # The batch stops at the first target that finds the library changed (the others
    # would each fail with the same line), in one line naming the library.
    with pytest.raises(MosaicistError) as caught:
        batch_mosaics(targets, tiles, out, OPTIONS, cache_dir=cache)
    assert str(caught.value).startswith(f"{tiles}: {CHANGED}")
    assert "\n" not in str(caught.value)
    assert sorted(path.name for path in out.glob("*.png")) == ["img0.png"]
    # Run again: the output made with the old library is made again, not skipped.
    monkeypatch.setattr(_InlineRunner, "hook", staticmethod(lambda job: None))
    again = batch_mosaics(targets, tiles, out, OPTIONS, cache_dir=cache)
    assert [entry.status for entry in again.results] == ["made"] * 3


def test_a_stable_video_batch_stops_its_chain_and_video_when_the_library_changes(
        folders, monkeypatch, tmp_path):
    # Frames after the change were made with the new library (their picks, naming the old
    # one, were dropped) and the video encoded from frames of two libraries.
    tiles, cache, _, out = folders
    clips = tmp_path / "clips"
    clips.mkdir()
    write_frames(clips / "clip.mp4", [shifted_picture(32, 24, shift) for shift in range(4)])
    video = tmp_path / "mosaic.mp4"
    _change_before(monkeypatch, "frame 2", tiles, cache)
    with pytest.raises(MosaicistError, match=CHANGED):
        batch_mosaics(clips, tiles, out, OPTIONS, cache_dir=cache, stable=0.5, video=video)
    assert not video.exists()
    assert sorted(path.name for path in out.glob("*.png"))[:2] == ["clip-000000.png",
                                                                    "clip-000001.png"]
    monkeypatch.setattr(_InlineRunner, "hook", staticmethod(lambda job: None))
    again = batch_mosaics(clips, tiles, out, OPTIONS, cache_dir=cache, stable=0.5, video=video)
    assert [entry.status for entry in again.results] == ["made"] * 4
    assert again.video is not None and video.is_file()
