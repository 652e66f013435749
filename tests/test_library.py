"""TileLibrary: incremental updates, crash safety, concurrency, damaged indexes."""

from __future__ import annotations

import errno
import multiprocessing
import os
import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_colour_folder
from PIL import Image

from mosaicist import imaging
from mosaicist.errors import MosaicistError, OptionError
from mosaicist.imaging import decode_tile_bytes
from mosaicist.library import TileLibrary
from mosaicist.library import _update as library_module
from mosaicist.library._shards import read_shard_rows, write_shard
from mosaicist.sources import open_source
from mosaicist.sources.folder import FolderSource


def check_pixels(library, folder):
    """Every tile equals a fresh decode of its file, in sorted order."""
    assert library.source_ids == sorted(library.source_ids)
    assert library.tiles.shape == (len(library), library.match_px, library.match_px, 3)
    for position, name in enumerate(library.source_ids):
        expected = decode_tile_bytes((folder / name).read_bytes(), library.match_px)
        np.testing.assert_array_equal(library.tiles[position], expected, err_msg=name)


def open_library(folder, cache, tile_px=8, **kwargs):
    return TileLibrary.open(FolderSource(folder, workers=1), tile_px, cache_dir=cache, **kwargs)


def bump_mtime(path, seconds=10):
    status = path.stat()
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns + seconds * 10**9))


def test_files_replaced_with_their_size_and_time_kept_are_read_again(tmp_path):
    # cp -p, rsync -t and tar keep a file's modification time: a file of the same size put
    # in place that way, or two files swapped, kept their stamps, and the index served the
    # old tiles (the placements named the wrong files).
    folder = tmp_path / "tiles"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for name in ("a.bmp", "b.bmp", "c.bmp", "d.bmp"):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / name)
    cache = tmp_path / "cache"
    open_library(folder, cache)
    time.sleep(0.05)  # past the file system's clock tick
    replaced = folder / "b.bmp"
    status = replaced.stat()
    Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(replaced)
    os.utime(replaced, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert replaced.stat().st_size == status.st_size
    assert replaced.stat().st_mtime_ns == status.st_mtime_ns
    first, second = folder / "a.bmp", folder / "d.bmp"
    times = first.stat(), second.stat()
    os.replace(first, folder / "swap")
    os.replace(second, first)
    os.replace(folder / "swap", second)
    os.utime(first, ns=(times[0].st_atime_ns, times[0].st_mtime_ns))
    os.utime(second, ns=(times[1].st_atime_ns, times[1].st_mtime_ns))
    again = open_library(folder, cache)
    assert again.stats.decoded == 3
    check_pixels(again, folder)


@pytest.mark.parametrize("tile_px", [8, 16])
def test_index_then_reuse(tmp_path, tile_px):
    folder = make_colour_folder(tmp_path / "tiles", 12)
    first = open_library(folder, tmp_path / "cache", tile_px)
    assert first.stats.decoded == 12 and first.stats.tiles == 12
    assert first.source_ids == [f"t{i:03d}.png" for i in range(12)]
    check_pixels(first, folder)
    second = open_library(folder, tmp_path / "cache", tile_px)
    assert second.stats.decoded == 0 and second.stats.reused == 12
    assert second.generation == first.generation
    check_pixels(second, folder)
    readonly = open_library(folder, tmp_path / "cache", tile_px, update=False)
    assert readonly.stats is None
    check_pixels(readonly, folder)


def test_add_modify_touch_delete(tmp_path):
    folder = make_colour_folder(tmp_path / "tiles", 10)
    cache = tmp_path / "cache"
    open_library(folder, cache)
    # Add in the middle of the sort order.
    Image.fromarray(np.full((12, 12, 3), 7, np.uint8)).save(folder / "t004b.png")
    added = open_library(folder, cache)
    assert added.stats.decoded == 1 and added.stats.tiles == 11
    assert added.source_ids[5] == "t004b.png"
    check_pixels(added, folder)
    # Modify one: new content and a new mtime.
    Image.fromarray(np.full((12, 12, 3), 200, np.uint8)).save(folder / "t002.png")
    bump_mtime(folder / "t002.png")
    modified = open_library(folder, cache)
    assert modified.stats.decoded == 1
    assert (modified.tiles[2] == 200).all()
    check_pixels(modified, folder)
    # Touch one: same bytes, new mtime -> decoded (to check) but same pixels.
    size_before = sum(path.stat().st_size for path in modified.directory.glob("tiles-*.u8"))
    bump_mtime(folder / "t007.png")
    touched = open_library(folder, cache)
    assert touched.stats.decoded == 1
    size_after = sum(path.stat().st_size for path in touched.directory.glob("tiles-*.u8"))
    assert size_after == size_before
    check_pixels(touched, folder)
    assert open_library(folder, cache).stats.decoded == 0
    # Delete two.
    (folder / "t000.png").unlink()
    (folder / "t009.png").unlink()
    deleted = open_library(folder, cache)
    assert deleted.stats.decoded == 0 and deleted.stats.removed == 2
    assert "t000.png" not in deleted.source_ids and len(deleted) == 9
    check_pixels(deleted, folder)
    # Everything at once.
    Image.fromarray(np.full((12, 12, 3), 99, np.uint8)).save(folder / "a.png")
    (folder / "t005.png").unlink()
    Image.fromarray(np.full((12, 12, 3), 1, np.uint8)).save(folder / "t003.png")
    bump_mtime(folder / "t003.png")
    mixed = open_library(folder, cache)
    assert mixed.stats.decoded == 2 and mixed.stats.removed == 1
    check_pixels(mixed, folder)
    check_pixels(open_library(folder, cache, update=False), folder)


def interrupt_after(monkeypatch, count, on_interrupt=None):
    """Make FolderSource.decode raise KeyboardInterrupt after ``count`` tiles."""
    original = FolderSource.decode

    def decode(self, entries, tile_px):
        for number, decoded in enumerate(original(self, entries, tile_px)):
            if number == count:
                if on_interrupt is not None:
                    on_interrupt()
                raise KeyboardInterrupt
            yield decoded

    monkeypatch.setattr(FolderSource, "decode", decode)


def test_interrupted_first_index_resumes(tmp_path, monkeypatch):
    folder = make_colour_folder(tmp_path / "tiles", 20)
    cache = tmp_path / "cache"
    monkeypatch.setattr(library_module, "COMMIT_EVERY", 3)
    seen = []
    interrupt_after(monkeypatch, 7, lambda: seen.append(_published(folder, cache)))
    with pytest.raises(KeyboardInterrupt):
        open_library(folder, cache)
    assert seen == [None]  # nothing published yet while the update ran
    assert _published(folder, cache) is None
    monkeypatch.undo()
    resumed = open_library(folder, cache)
    assert resumed.stats.decoded == 13 and resumed.stats.tiles == 20
    check_pixels(resumed, folder)


def _published(folder, cache):
    try:
        return open_library(folder, cache, update=False).source_ids
    except MosaicistError as error:
        assert "no usable tile" in str(error)
        return None


def test_interrupted_update_keeps_published_state(tmp_path, monkeypatch):
    folder = make_colour_folder(tmp_path / "tiles", 10)
    cache = tmp_path / "cache"
    before = open_library(folder, cache)
    ids_before = list(before.source_ids)
    pixels_before = np.array(before.tiles)
    for index in range(6):
        Image.fromarray(np.full((12, 12, 3), 10 * index, np.uint8)).save(folder / f"n{index}.png")
    Image.fromarray(np.full((12, 12, 3), 250, np.uint8)).save(folder / "t001.png")
    bump_mtime(folder / "t001.png")
    (folder / "t008.png").unlink()
    monkeypatch.setattr(library_module, "COMMIT_EVERY", 2)
    during = []

    def look():
        reader = open_library(folder, cache, update=False)
        during.append((list(reader.source_ids), np.array(reader.tiles)))

    interrupt_after(monkeypatch, 4, look)
    with pytest.raises(KeyboardInterrupt):
        open_library(folder, cache)
    after = open_library(folder, cache, update=False)
    for ids, pixels in during + [(after.source_ids, np.array(after.tiles))]:
        assert ids == ids_before
        np.testing.assert_array_equal(pixels, pixels_before)
    monkeypatch.undo()
    resumed = open_library(folder, cache)
    assert resumed.stats.decoded == 7 - 4
    assert resumed.stats.removed == 1 and len(resumed) == 15
    check_pixels(resumed, folder)


def _open_in_process(folder, cache, queue):
    library = open_library(folder, cache)
    queue.put((library.source_ids, np.array(library.tiles).tobytes(), library.stats.decoded))


def test_concurrent_updates(tmp_path):
    folder = make_colour_folder(tmp_path / "tiles", 40)
    cache = tmp_path / "cache"
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [
        context.Process(target=_open_in_process, args=(folder, cache, queue)) for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    final = open_library(folder, cache)
    assert final.stats.decoded == 0
    check_pixels(final, folder)
    for ids, pixels, _decoded in results:
        assert ids == final.source_ids
        assert pixels == np.array(final.tiles).tobytes()
    assert sum(decoded for _, _, decoded in results) == 40


def test_concurrent_reader_and_writer_threads(tmp_path):
    import threading

    folder = make_colour_folder(tmp_path / "tiles", 12)
    cache = tmp_path / "cache"
    open_library(folder, cache)
    errors = []
    stop = threading.Event()

    def read():
        while not stop.is_set():
            try:
                reader = open_library(folder, cache, update=False)
                assert reader.tiles.shape[0] == len(reader.source_ids)
            except Exception as error:  # noqa: BLE001
                errors.append(error)

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for index in range(4):
            (folder / f"t{index:03d}.png").unlink()
            open_library(folder, cache)
    finally:
        stop.set()
        thread.join()
    assert errors == []
    check_pixels(open_library(folder, cache), folder)


def _truncate_store(library):
    store = library.directory / f"tiles-{library.generation}.u8"
    store.write_bytes(store.read_bytes()[: store.stat().st_size // 2])
    return store


def test_truncated_packed_file_is_reported(tmp_path):
    folder = make_colour_folder(tmp_path / "tiles", 6)
    cache = tmp_path / "cache"
    _truncate_store(open_library(folder, cache))
    for update in (False, True):
        with pytest.raises(MosaicistError, match="damaged.*delete"):
            open_library(folder, cache, update=update)


def test_truncated_packed_file_is_reported_when_updating(tmp_path):
    folder = make_colour_folder(tmp_path / "tiles", 6)
    cache = tmp_path / "cache"
    _truncate_store(open_library(folder, cache))
    Image.fromarray(np.full((12, 12, 3), 50, np.uint8)).save(folder / "z.png")
    with pytest.raises(MosaicistError, match="damaged.*delete"):
        open_library(folder, cache)


def test_missing_packed_file_is_reported(tmp_path):
    folder = make_colour_folder(tmp_path / "tiles", 3)
    cache = tmp_path / "cache"
    library = open_library(folder, cache)
    (library.directory / f"tiles-{library.generation}.u8").unlink()
    started = time.perf_counter()
    for update in (False, True):
        with pytest.raises(MosaicistError, match="damaged.*delete"):
            open_library(folder, cache, update=update)
    assert time.perf_counter() - started < 5


def _edit_manifest(library, statement):
    connection = sqlite3.connect(library.directory / "manifest.sqlite")
    try:
        connection.execute(statement)
        connection.commit()
    finally:
        connection.close()


def test_a_negative_slot_in_the_manifest_is_reported_not_read_from_the_end(tmp_path):
    # NumPy reads slot -1 as the packed file's last tile: the library served another
    # photo's tile in its place, and an update repacked it so, for good.
    folder = make_colour_folder(tmp_path / "tiles", 6)
    cache = tmp_path / "cache"
    _edit_manifest(open_library(folder, cache), "UPDATE tiles SET slot = -1 WHERE position = 2")
    for update in (False, True):
        with pytest.raises(MosaicistError, match=r"damaged \(a tile's slot is -1\).*delete"):
            open_library(folder, cache, update=update)
    bump_mtime(folder / "t004.png")
    with pytest.raises(MosaicistError, match="damaged.*delete"):
        open_library(folder, cache)


@pytest.mark.parametrize(("statement", "updates"), [
    ("UPDATE tiles SET slot = 'x' WHERE position = 2", (True, False)),
    ("UPDATE meta SET value = 'x' WHERE name = 'generation'", (True, False)),
    ("UPDATE meta SET value = '-3' WHERE name = 'next_slot'", (True,)),  # only updates read it
])
def test_manifest_values_that_are_no_numbers_are_reported_in_one_line(tmp_path, statement,
                                                                       updates):
    # They raised ValueError from int() or NumPy: a traceback.
    folder = make_colour_folder(tmp_path / "tiles", 6)
    cache = tmp_path / "cache"
    _edit_manifest(open_library(folder, cache), statement)
    bump_mtime(folder / "t004.png")
    for update in updates:
        with pytest.raises(MosaicistError, match="manifest.sqlite: index is damaged.*delete"):
            open_library(folder, cache, update=update)


@pytest.mark.parametrize("statement", [
    "UPDATE meta SET value = '0' WHERE name = 'next_slot'",
    "DELETE FROM meta",
])
def test_a_next_slot_below_the_tiles_in_use_never_cuts_them_off(tmp_path, statement):
    # The decode cut the packed file back to next_slot before appending: every
    # published tile past it was lost, and the index had to be rebuilt.
    folder = make_colour_folder(tmp_path / "tiles", 6)
    cache = tmp_path / "cache"
    _edit_manifest(open_library(folder, cache), statement)
    Image.fromarray(np.full((12, 12, 3), 50, np.uint8)).save(folder / "t002.png")
    bump_mtime(folder / "t002.png")
    again = open_library(folder, cache)
    assert again.stats.decoded == 1
    check_pixels(again, folder)


@pytest.mark.parametrize("blocked", ["indexes", "index"])
def test_a_file_where_the_index_folder_goes_is_named_in_one_line(tmp_path, blocked):
    # A raw FileExistsError or NotADirectoryError: "File exists", and a traceback
    # from the Python API.
    folder = make_colour_folder(tmp_path / "tiles", 3)
    cache = tmp_path / "cache"
    directory = open_library(folder, cache).directory
    blocker = cache / "indexes" if blocked == "indexes" else directory
    shutil.rmtree(blocker)
    blocker.write_text("not a folder")
    with pytest.raises(MosaicistError, match=r"px8: cannot make the tile index's folder: a "
                                             r"file is in its way \(.*\); move it"):
        open_library(folder, cache)


def test_a_library_that_lists_nothing_keeps_its_index(tmp_path):
    # A drive not mounted leaves its mount point an empty folder: the update published
    # the empty library over the index, and every photo was decoded again once back.
    folder = make_colour_folder(tmp_path / "tiles", 4)
    cache = tmp_path / "cache"
    first = open_library(folder, cache)
    away = tmp_path / "away"
    folder.rename(away)
    folder.mkdir()
    with pytest.raises(MosaicistError, match="tiles: no usable tile.*4 tiles is kept"):
        open_library(folder, cache)
    folder.rmdir()
    away.rename(folder)
    again = open_library(folder, cache)
    assert (again.stats.decoded, again.stats.reused) == (0, 4)
    assert again.generation == first.generation
    check_pixels(again, folder)


def test_no_usable_tile(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MosaicistError, match="empty.*no usable tile"):
        open_library(empty, tmp_path / "cache")
    (empty / "broken.png").write_text("nope")
    with pytest.raises(MosaicistError, match="empty.*no usable tile"):
        open_library(empty, tmp_path / "cache")


def test_tile_px_range(tmp_path):
    with pytest.raises(MosaicistError, match="match_px must be between 1 and 1024"):
        open_library(tmp_path, tmp_path / "cache", tile_px=0)


def test_limit(tmp_path):
    folder = make_colour_folder(tmp_path / "tiles", 5)
    library = open_library(folder, tmp_path / "cache")
    assert library.limit(None) is library and library.limit(9) is library
    three = library.limit(3)
    assert len(three) == 3 and three.source_ids == library.source_ids[:3]
    np.testing.assert_array_equal(three.tiles, library.tiles[:3])
    with pytest.raises(MosaicistError, match="at least 1"):
        library.limit(0)


def test_failures_of_removed_files_are_not_reported_again(tmp_path):
    folder = make_colour_folder(tmp_path / "tiles", 3)
    (folder / "broken.png").write_bytes(b"not a picture")
    first = open_library(folder, tmp_path / "cache")
    assert [source_id for source_id, _ in first.stats.failed] == ["broken.png"]
    (folder / "broken.png").unlink()
    # The library's rows are unchanged: only the scan differs...
    second = open_library(folder, tmp_path / "cache")
    assert second.stats.failed == [] and len(second) == 3
    # ...and the next run, which finds nothing changed, does not bring it back.
    third = open_library(folder, tmp_path / "cache")
    assert third.stats.failed == [] and third.stats.decoded == 0


def test_a_link_to_a_missing_photo_is_skipped_by_name_and_read_once_it_is_back(tmp_path):
    # A library of links to a drive that is not mounted lost those photos without a word.
    folder = make_colour_folder(tmp_path / "tiles", 3)
    elsewhere = tmp_path / "drive" / "photo.png"
    (folder / "linked.png").symlink_to(elsewhere)
    first = open_library(folder, tmp_path / "cache")
    failed = dict(first.stats.failed)
    assert list(failed) == ["linked.png"] and len(first) == 3
    assert f"a link to {elsewhere}, which is not there" in failed["linked.png"]
    assert dict(open_library(folder, tmp_path / "cache").stats.failed) == failed
    elsewhere.parent.mkdir()
    Image.fromarray(np.full((12, 12, 3), 77, np.uint8)).save(elsewhere)
    back = open_library(folder, tmp_path / "cache")
    assert back.stats.failed == [] and back.stats.decoded == 1 and len(back) == 4
    check_pixels(back, folder)


def fail_reads_of(monkeypatch, name, number=errno.EIO, times=1):
    """Make the next ``times`` reads of the file ``name`` fail with ``number``, as a share might."""
    original = imaging.read_tile_bytes
    failures = [times]

    def read_tile_bytes(path):
        if Path(path).name == name and failures[0] > 0:
            failures[0] -= 1
            raise OSError(number, os.strerror(number), str(path))
        return original(path)

    monkeypatch.setattr(imaging, "read_tile_bytes", read_tile_bytes)


@pytest.mark.parametrize("number", [errno.EIO, errno.EMFILE, errno.ESTALE])
def test_a_read_that_fails_for_now_is_tried_again_next_run(tmp_path, monkeypatch, number):
    # A flaky share or a lack of descriptors failed a photo's read once: the failure was
    # remembered with the file's stamp, and the "nothing changed" shortcut skipped it as
    # well, so the photo stayed out of the library until the file itself changed.
    folder = make_colour_folder(tmp_path / "tiles", 4)
    (folder / "broken.png").write_bytes(b"not a picture")
    cache = tmp_path / "cache"
    fail_reads_of(monkeypatch, "t002.png", number)
    first = open_library(folder, cache)
    failed = dict(first.stats.failed)
    assert sorted(failed) == ["broken.png", "t002.png"] and len(first) == 3
    assert os.strerror(number) in failed["t002.png"]
    # Nothing changed in the folder, and the read works now: the photo comes in, and
    # the bad file is not decoded again.
    second = open_library(folder, cache)
    assert second.stats.decoded == 1
    assert "will be tried again next run" in failed["t002.png"]
    assert "tried again" not in failed["broken.png"]
    assert [source_id for source_id, _ in second.stats.failed] == ["broken.png"]
    clean = open_library(folder, tmp_path / "clean")
    assert second.source_ids == clean.source_ids
    np.testing.assert_array_equal(np.asarray(second.tiles), np.asarray(clean.tiles))
    check_pixels(second, folder)
    # And then nothing is decoded again.
    third = open_library(folder, cache)
    assert third.stats.decoded == 0 and third.stats.failed == second.stats.failed


def test_a_read_that_keeps_failing_for_now_is_tried_on_every_run(tmp_path, monkeypatch):
    folder = make_colour_folder(tmp_path / "tiles", 3)
    cache = tmp_path / "cache"
    fail_reads_of(monkeypatch, "t001.png", errno.ETIMEDOUT, times=2)
    for decoded in (3, 1):
        library = open_library(folder, cache)
        assert library.stats.decoded == decoded and len(library) == 2
        assert [source_id for source_id, _ in library.stats.failed] == ["t001.png"]
    recovered = open_library(folder, cache)
    assert recovered.stats.decoded == 1 and recovered.stats.failed == [] and len(recovered) == 3
    check_pixels(recovered, folder)


def test_a_read_that_failed_for_now_in_a_shard_is_tried_again(tmp_path, monkeypatch):
    # A cluster's workers write their failures beside their shards: the same rule.
    folder = make_colour_folder(tmp_path / "tiles", 3)
    (folder / "broken.png").write_bytes(b"not a picture")
    directory = tmp_path / "index"
    directory.mkdir()
    source = FolderSource(folder, workers=1)
    fail_reads_of(monkeypatch, "t000.png")
    shard, tiles, failed = write_shard(source, source.scan(), 8, (1, 1), "centre", directory)
    assert (tiles, failed) == (2, 2)
    rows = {row[0]: row for row in read_shard_rows(directory, shard).failures}
    assert rows["t000.png"][1] < 0 and "tried again" in rows["t000.png"][3]
    assert rows["broken.png"][1] == (folder / "broken.png").stat().st_size


@pytest.mark.parametrize("update", [False, True])
def test_a_folder_in_place_of_the_packed_file_is_named_in_one_line(tmp_path, update):
    # The Python API raised a raw IsADirectoryError from the memory map.
    folder = make_colour_folder(tmp_path / "tiles", 3)
    cache = tmp_path / "cache"
    library = open_library(folder, cache)
    store = library.directory / f"tiles-{library.generation}.u8"
    store.unlink()
    store.mkdir()
    with pytest.raises(MosaicistError, match=r"tiles-\d+\.u8: index is damaged \(a folder"):
        open_library(folder, cache, update=update)
    # Also when the update has files to decode (a folder's size passed for tiles).
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(folder / "new.png")
    with pytest.raises(MosaicistError, match=r"tiles-\d+\.u8: index is damaged \(a folder"):
        open_library(folder, cache, update=update)


def _disk_full_after(monkeypatch, calls):
    """Make the index's writes fail as on a full disk from call ``calls`` on, half-written."""
    real_write_all = library_module._write_all
    count = [0]

    def write_all(handle, data):
        count[0] += 1
        if count[0] >= calls:
            real_write_all(handle, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write_all(handle, data)

    monkeypatch.setattr(library_module, "_write_all", write_all)


def _leftovers(directory):
    return sorted(path.name for path in directory.iterdir() if "part" in path.name)


def test_full_disk_while_decoding(tmp_path, monkeypatch):
    folder = make_colour_folder(tmp_path / "tiles", 10)
    cache = tmp_path / "cache"
    monkeypatch.setattr(library_module, "COMMIT_EVERY", 3)
    _disk_full_after(monkeypatch, 6)
    with pytest.raises(MosaicistError) as caught:
        open_library(folder, cache)
    message = str(caught.value)
    assert "\n" not in message and "no space left on device" in message
    store = next((cache / "indexes").glob("*/px8/tiles-0.u8"))
    assert message.startswith(f"{store}: ")
    # Five tiles committed (the last two in the failure's own commit); the
    # half-written sixth does not stay on the full disk.
    assert store.stat().st_size == 5 * 8 * 8 * 3
    monkeypatch.undo()
    resumed = open_library(folder, cache)
    assert resumed.stats.decoded == 5
    check_pixels(resumed, folder)


def test_full_disk_while_repacking(tmp_path, monkeypatch):
    folder = make_colour_folder(tmp_path / "tiles", 10)
    cache = tmp_path / "cache"
    before = open_library(folder, cache)
    # A tile that sorts first: the library is written again in the new order.
    Image.fromarray(np.full((12, 12, 3), 3, np.uint8)).save(folder / "a.png")
    monkeypatch.setattr(library_module, "COPY_CHUNK", 4)
    _disk_full_after(monkeypatch, 3)  # the new tile, the first chunk, then full
    with pytest.raises(MosaicistError) as caught:
        open_library(folder, cache)
    message = str(caught.value)
    assert "\n" not in message and "no space left on device" in message
    assert message.startswith(f"{before.directory / 'tiles-1.u8.part'}: ")
    assert _leftovers(before.directory) == []
    assert open_library(folder, cache, update=False).source_ids == before.source_ids
    monkeypatch.undo()
    after = open_library(folder, cache)
    assert after.stats.decoded == 0 and len(after) == 11
    check_pixels(after, folder)
    assert sorted(path.name for path in after.directory.glob("tiles-*")) == ["tiles-1.u8"]


def test_full_disk_in_the_manifest(tmp_path, monkeypatch):
    folder = make_colour_folder(tmp_path / "tiles", 3)
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL

    def swap_manifest(*args):
        raise full

    monkeypatch.setattr(library_module, "_swap_manifest", swap_manifest)
    with pytest.raises(MosaicistError, match=r"manifest\.sqlite: no space left on device"):
        open_library(folder, tmp_path / "cache")


def test_leftovers_of_interrupted_updates_are_removed(tmp_path):
    folder = make_colour_folder(tmp_path / "tiles", 4)
    cache = tmp_path / "cache"
    library = open_library(folder, cache)
    directory = library.directory
    planted = ["tiles-1.u8.part", ".tiles-1.u8.x1y2z3.part.u8", "tiles-7.u8"]
    for name in planted:
        (directory / name).write_bytes(b"\0" * 4096)
    (directory / "notes.txt").write_text("not ours to remove\n")
    again = open_library(folder, cache)  # nothing changed: the fast path cleans up too
    assert again.stats.decoded == 0
    assert not any((directory / name).exists() for name in planted)
    assert (directory / "notes.txt").exists() and (directory / "tiles-0.u8").exists()
    check_pixels(again, folder)


def make_shapes_folder(root):
    """Photos of three shapes (wide, tall, square), random pixels."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(3)
    for index, (width, height) in enumerate([(30, 12), (12, 30), (18, 18), (40, 20)]):
        picture = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(picture).save(root / f"s{index}.png")
    return root


def test_an_index_per_aspect_and_crop(tmp_path):
    folder = make_shapes_folder(tmp_path / "tiles")
    cache = tmp_path / "cache"
    square = open_library(folder, cache, 12)
    assert square.directory.name == "px12" and (square.match_px, square.match_height) == (12, 12)
    wide = open_library(folder, cache, 12, aspect="3:2")
    assert wide.directory.name == "px12-3x2-centre"
    assert wide.tiles.shape == (4, 8, 12, 3) and wide.aspect == (3, 2)
    tall = open_library(folder, cache, 12, aspect=(4, 6), crop="subject")
    assert tall.aspect == (2, 3) and tall.tiles.shape == (4, 18, 12, 3)
    assert tall.directory.name in ("px12-2x3-subject", "px12-2x3-detail")
    assert "aspect='2:3'" in repr(tall)
    for library in (wide, tall):
        for position, name in enumerate(library.source_ids):
            expected = decode_tile_bytes((folder / name).read_bytes(), 12,
                                         aspect=library.aspect, crop=library.crop)
            np.testing.assert_array_equal(library.tiles[position], expected)
    # Each variant is its own index: updating one decodes nothing of the others.
    assert open_library(folder, cache, 12, aspect="3:2").stats.decoded == 0
    assert open_library(folder, cache, 12).stats.decoded == 0
    # The manifest says what the index holds.
    connection = sqlite3.connect(tall.directory / "manifest.sqlite")
    meta = dict(connection.execute("SELECT name, value FROM meta").fetchall())
    connection.close()
    assert (meta["tile_px"], meta["tile_height"], meta["aspect"]) == ("12", "18", "2:3")
    assert meta["crop"] == tall.directory.name.split("-")[-1]
    with pytest.raises(MosaicistError, match="aspect"):
        open_library(folder, cache, 12, aspect="0:2")
    with pytest.raises(MosaicistError, match="unknown crop 'middle'"):
        open_library(folder, cache, 12, crop="middle")


def test_sources_of_one_shape_index_once_for_both_crops(tmp_path):
    from mosaicist.sources.arrays import ArrayFileSource

    images = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    np.save(tmp_path / "tiles.npy", images)
    source = ArrayFileSource(tmp_path / "tiles.npy")
    assert source.image_size() == (16, 16)
    centre = TileLibrary.open(source, 8, cache_dir=tmp_path / "cache")
    subject = TileLibrary.open(source, 8, cache_dir=tmp_path / "cache", crop="subject")
    assert subject.directory == centre.directory and subject.stats.decoded == 0
    assert subject.crop == "centre"
    # Another aspect cuts them: there the crop counts.
    wide = TileLibrary.open(source, 8, cache_dir=tmp_path / "cache", aspect="2:1",
                            crop="subject")
    assert wide.tiles.shape == (5, 4, 8, 3) and wide.directory != centre.directory


def test_a_source_that_makes_tiles_of_the_wrong_size_fails_those_tiles(tmp_path):
    from mosaicist.sources import DecodedTile, SourceEntry, TileSource

    class Sloppy(TileSource):
        key = name = "sloppy"

        def scan(self):
            return [SourceEntry(f"t{index}", 1, 1, index) for index in range(3)]

        def decode(self, entries, width_px, aspect=(1, 1), crop="centre"):
            for entry in entries:
                side = width_px if entry.locator != 1 else width_px + 1
                yield DecodedTile(entry, np.zeros((side, side, 3), np.uint8), "h")

        def open_original(self, entry):
            raise NotImplementedError

    library = TileLibrary.open(Sloppy(), 4, cache_dir=tmp_path)
    assert library.source_ids == ["t0", "t2"]
    assert "not (4, 4, 3)" in dict(library.stats.failed)["t1"]
    # Tiles without a signature from their source are signed from their pixels.
    hashes, _ = library.signatures()
    assert len(hashes) == 2


def test_an_opened_library_must_have_the_tiles_size(tmp_path):
    from conftest import noisy_target

    from mosaicist.errors import OptionError
    from mosaicist.pipeline import make_mosaic

    folder = make_shapes_folder(tmp_path / "tiles")
    wide = open_library(folder, tmp_path / "cache", 12, aspect="3:2")
    with pytest.raises(OptionError, match="indexed at 12x8 px, but match_px and aspect make "
                                          "12x12 px"):
        make_mosaic(noisy_target(), wide, preset="seed", cell_px=8, tile_px=12)
    mosaic = make_mosaic(noisy_target(), wide, preset="seed", cell_px=6, tile_px=12,
                         aspect="3:2")
    assert mosaic.image.shape == (mosaic.grid.rows * 8, mosaic.grid.cols * 12, 3)


def test_an_unchanged_array_library_opens_without_listing_its_images(tmp_path, monkeypatch):
    """An array file's scan follows from its size, time and shape: an unchanged one is not
    listed again (a million entries took 1.8 s a make), a changed one is."""
    from mosaicist.sources.arrays import ArrayFileSource

    # The file is written just now: judged a minute on, its stamp is not racy (a file
    # written in the index's own clock tick is checked by content on the next run).
    monkeypatch.setattr(library_module, "_clock_ns", lambda: time.time_ns() + 60 * 10**9)
    path = tmp_path / "tiles.npy"
    rng = np.random.default_rng(4)
    np.save(path, rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8))
    scans = []
    scan = ArrayFileSource.scan
    monkeypatch.setattr(ArrayFileSource, "scan",
                        lambda self: scans.append(1) or scan(self))
    first = TileLibrary.open(ArrayFileSource(path), 8, cache_dir=tmp_path / "cache")
    assert first.stats.decoded == 6 and len(scans) == 1
    again = TileLibrary.open(ArrayFileSource(path), 8, cache_dir=tmp_path / "cache")
    assert len(scans) == 1 and again.stats.decoded == 0 and again.stats.reused == 6
    assert np.array_equal(np.asarray(again.tiles), np.asarray(first.tiles))
    # Two more images (another size and time): listed, and the new ones decoded.
    bigger = np.concatenate([np.load(path), rng.integers(0, 256, (2, 8, 8, 3), np.uint8)])
    np.save(path, bigger)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    grown = TileLibrary.open(ArrayFileSource(path), 8, cache_dir=tmp_path / "cache")
    assert len(scans) == 2 and len(grown) == 8
    assert np.array_equal(np.asarray(grown.tiles), bigger)
    # Unchanged since: not listed again.
    assert TileLibrary.open(ArrayFileSource(path), 8, cache_dir=tmp_path / "cache"
                            ).stats.decoded == 0 and len(scans) == 2


class _InterruptedConnection:
    """A connection that is interrupted (as by a signal) around one statement."""

    def __init__(self, connection, statement, before):
        self.connection, self.statement, self.before = connection, statement, before

    def execute(self, sql, *arguments):
        if sql == self.statement and self.before:
            raise KeyboardInterrupt
        result = self.connection.execute(sql, *arguments)
        if sql == self.statement and not self.before:
            raise KeyboardInterrupt
        return result

    @property
    def in_transaction(self):
        return self.connection.in_transaction


@pytest.mark.parametrize(("statement", "before"),
                         [("BEGIN IMMEDIATE", False), ("COMMIT", True)])
def test_an_interrupt_next_to_begin_or_commit_leaves_no_transaction_open(tmp_path, statement,
                                                                         before):
    import sqlite3

    from mosaicist.library._manifest import transaction

    connection = sqlite3.connect(tmp_path / "m.sqlite", isolation_level=None)
    connection.execute("CREATE TABLE t (x)")
    interrupted = _InterruptedConnection(connection, statement, before)
    with pytest.raises(KeyboardInterrupt), transaction(interrupted):
        connection.execute("INSERT INTO t VALUES (1)")
    # Rolled back, and the next transaction starts (it failed "within a transaction").
    assert not connection.in_transaction
    assert connection.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0
    with transaction(connection):
        connection.execute("INSERT INTO t VALUES (2)")
    assert connection.execute("SELECT x FROM t").fetchall() == [(2,)]


# -- the order snapshot (``order-<publication>.npz``) ----------------------------------


@pytest.fixture
def snapshot_every_library(monkeypatch):
    """Snapshot libraries of any size (by default only from 10,000 tiles)."""
    from mosaicist.library import _manifest

    monkeypatch.setattr(_manifest, "ORDER_SNAPSHOT_TILES", 1)
    return _manifest


def _publication(directory):
    connection = sqlite3.connect(directory / "manifest.sqlite")
    try:
        return connection.execute(
            "SELECT value FROM meta WHERE name = 'publication'").fetchone()[0]
    finally:
        connection.close()


def test_a_publication_is_opened_from_its_snapshot(tmp_path, monkeypatch,
                                                   snapshot_every_library):
    folder = make_colour_folder(tmp_path / "tiles", 12)
    cache = tmp_path / "cache"
    first = open_library(folder, cache)
    directory = first.directory
    snapshots = sorted(path.name for path in directory.glob("order-*.npz"))
    assert snapshots == [f"order-{_publication(directory)}.npz"]
    # Later opens read the snapshot, not the rows: the same library.
    reads = []
    real = snapshot_every_library.read_order
    monkeypatch.setattr("mosaicist.library._index.read_order",
                        lambda *args: reads.append(real(*args)) or reads[-1])
    again = open_library(folder, cache, update=False)
    assert reads and reads[-1] is not None
    assert again.source_ids == first.source_ids
    np.testing.assert_array_equal(np.asarray(again.tiles), np.asarray(first.tiles))
    check_pixels(again, folder)


def test_changed_rows_are_never_read_from_an_old_snapshot(tmp_path, snapshot_every_library):
    folder = make_colour_folder(tmp_path / "tiles", 10)
    cache = tmp_path / "cache"
    first = open_library(folder, cache)
    directory = first.directory
    before = _publication(directory)
    # A tile added in the middle of the order: the rows change, and so does the token.
    Image.fromarray(np.full((12, 12, 3), 7, np.uint8)).save(folder / "t004b.png")
    added = open_library(folder, cache)
    assert _publication(directory) != before
    assert added.source_ids[5] == "t004b.png"
    check_pixels(added, folder)
    check_pixels(open_library(folder, cache, update=False), folder)
    # Only the current publication keeps a snapshot.
    assert [path.name for path in directory.glob("order-*.npz")] == [
        f"order-{_publication(directory)}.npz"]
    # A removed tile, then an unchanged update: the token moves with the rows only.
    (folder / "t001.png").unlink()
    removed = open_library(folder, cache)
    token = _publication(directory)
    assert "t001.png" not in removed.source_ids
    unchanged = open_library(folder, cache)
    assert _publication(directory) == token
    assert unchanged.source_ids == removed.source_ids
    check_pixels(unchanged, folder)


@pytest.mark.parametrize("damage", ["garbage", "empty", "cut", "bit flip", "short",
                                    "wrong dtype"])
def test_a_damaged_snapshot_costs_only_the_query(tmp_path, snapshot_every_library, damage):
    folder = make_colour_folder(tmp_path / "tiles", 6)
    cache = tmp_path / "cache"
    first = open_library(folder, cache)
    snapshot = next(first.directory.glob("order-*.npz"))
    if damage == "garbage":
        snapshot.write_bytes(b"not a zip at all" * 10)
    elif damage == "empty":
        snapshot.write_bytes(b"")
    elif damage == "cut":
        snapshot.write_bytes(snapshot.read_bytes()[:-40])
    elif damage == "bit flip":
        data = bytearray(snapshot.read_bytes())
        data[len(data) // 3] ^= 0x10  # inside a stored array: its checksum fails
        snapshot.write_bytes(bytes(data))
    elif damage == "short":
        np.savez(snapshot.open("wb"), ids=np.frombuffer(b"t000.png", np.uint8),
                 slots=np.arange(6, dtype=np.int64))
    else:
        np.savez(snapshot.open("wb"), ids=np.zeros(3, np.float32),
                 slots=np.arange(6, dtype=np.int64))
    again = open_library(folder, cache, update=False)
    assert again.source_ids == first.source_ids
    check_pixels(again, folder)


def test_a_snapshot_that_cannot_be_written_is_left_out(tmp_path, monkeypatch,
                                                       snapshot_every_library):
    folder = make_colour_folder(tmp_path / "tiles", 5)
    cache = tmp_path / "cache"

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "read-only", str(args[0]))

    monkeypatch.setattr(snapshot_every_library, "atomic_path", refuse)
    library = open_library(folder, cache)
    assert not list(library.directory.glob("order-*.npz"))
    check_pixels(library, folder)


def test_ids_a_snapshot_cannot_hold_are_read_with_sql(tmp_path, snapshot_every_library):
    directory = tmp_path / "index"
    directory.mkdir()
    slots = np.arange(2, dtype=np.int64)
    write, read = snapshot_every_library.write_order, snapshot_every_library.read_order
    write(directory, "ab12", "s", ["a\0b", "c"], slots)
    write(directory, "ab12", "s", ["a\udcff", "\ud800"], slots)
    assert not list(directory.glob("order-*"))
    # Names that are not UTF-8 (kept as surrogate escapes) go through whole.
    write(directory, "cd34", "s", ["caf\udce9.png", "x.png"], slots)
    ids, read_slots = read(directory, "cd34", "s")
    assert ids == ["caf\udce9.png", "x.png"]
    np.testing.assert_array_equal(read_slots, slots)
    assert read(directory, "ffff", "s") is None
    # Made under other meta values: not these rows.
    assert read(directory, "cd34", "t") is None


def test_rows_published_without_a_new_token_are_not_read_from_the_snapshot(
        tmp_path, monkeypatch, snapshot_every_library):
    # A version of mosaicist from before the tokens, sharing the cache, publishes new rows
    # and leaves the token as it was: its scan digest and slots still tell.
    folder = make_colour_folder(tmp_path / "tiles", 6)
    cache = tmp_path / "cache"
    first = open_library(folder, cache)
    token = _publication(first.directory)
    monkeypatch.setattr(library_module, "new_publication", lambda connection: None)
    Image.fromarray(np.full((12, 12, 3), 9, np.uint8)).save(folder / "t002b.png")
    (folder / "t004.png").unlink()
    older = open_library(folder, cache)
    assert _publication(first.directory) == token
    assert "t002b.png" in older.source_ids and "t004.png" not in older.source_ids
    check_pixels(older, folder)
    again = open_library(folder, cache, update=False)
    assert again.source_ids == older.source_ids
    check_pixels(again, folder)


def test_an_index_from_before_the_tokens_gets_one(tmp_path, snapshot_every_library):
    folder = make_colour_folder(tmp_path / "tiles", 4)
    cache = tmp_path / "cache"
    directory = open_library(folder, cache).directory
    for snapshot in directory.glob("order-*.npz"):
        snapshot.unlink()
    connection = sqlite3.connect(directory / "manifest.sqlite")
    with connection:
        connection.execute("DELETE FROM meta WHERE name = 'publication'")
    connection.close()
    assert not list(open_library(folder, cache, update=False).directory.glob("order-*.npz"))
    again = open_library(folder, cache)  # the update names the rows; the read keeps them
    assert [path.name for path in directory.glob("order-*.npz")] == [
        f"order-{_publication(directory)}.npz"]
    check_pixels(again, folder)


def test_stale_snapshots_are_removed_by_the_next_update(tmp_path, snapshot_every_library):
    folder = make_colour_folder(tmp_path / "tiles", 4)
    cache = tmp_path / "cache"
    directory = open_library(folder, cache).directory
    (directory / "order-0123abcd.npz").write_bytes(b"old")
    open_library(folder, cache)
    assert [path.name for path in directory.glob("order-*.npz")] == [
        f"order-{_publication(directory)}.npz"]


def test_readers_and_a_writer_with_snapshots(tmp_path, snapshot_every_library):
    test_concurrent_reader_and_writer_threads(tmp_path)


@pytest.mark.parametrize(("changes", "message"), [
    ({"tile_px": "32"}, "match_px must be a whole number, got '32'"),
    ({"tile_px": None}, "match_px must be a whole number, got None"),
    # These two passed the range check and left folders pxTrue/ and px32.0/ behind.
    ({"tile_px": True}, "match_px must be a whole number, got True"),
    ({"tile_px": 32.0}, "match_px must be a whole number, got 32.0"),
    ({"aspect": 5}, "aspect must be a text W:H"),
    ({"aspect": (1, 2, 3)}, "aspect must be a text W:H"),  # was taken as 1:2
    ({"aspect": "10000:1"}, "aspect 10000:1 is more elongated than 16:1"),
    ({"crop": None}, "unknown crop None; use centre or subject"),
    ({"crop": ["subject"]}, "unknown crop ['subject']; use centre or subject"),
])
def test_open_refuses_bad_settings_by_name_before_writing_to_the_cache(tmp_path, changes,
                                                                         message):
    folder = make_colour_folder(tmp_path / "tiles", 3)
    cache = tmp_path / "cache"
    with pytest.raises(OptionError) as caught:
        open_library(folder, cache, **changes)
    assert str(caught.value).startswith(message)
    assert not cache.exists() or not list(cache.rglob("px*"))


@pytest.mark.parametrize(("source", "shown"), [(None, "None"), (b"tiles", "b'tiles'"),
                                               (5, "5"), (["tiles"], "a list")])
def test_open_refuses_a_source_of_another_type(tmp_path, source, shown):
    with pytest.raises(OptionError) as caught:
        TileLibrary.open(source, 8, cache_dir=tmp_path / "cache")
    assert str(caught.value) == ("source must be a source spec (a text), a path or a "
                                 f"TileSource, got {shown}")
    assert not (tmp_path / "cache").exists()
    # Any caller of open_source (a placements file read back, a worker) gets one line too.
    with pytest.raises(MosaicistError, match="^a tile source must be a source spec"):
        open_source(source, tmp_path / "cache")


def test_open_takes_numpy_integers_as_the_numbers_they_hold(tmp_path):
    folder = make_colour_folder(tmp_path / "tiles", 3)
    library = open_library(folder, tmp_path / "cache", tile_px=np.int64(8),
                           aspect=(np.int64(6), np.int64(4)))
    assert type(library.match_px) is int and library.aspect == (3, 2)
    assert library.directory.name == "px8-3x2-centre"


def test_limit_and_dedupe_refuse_what_is_no_whole_number(tmp_path):
    folder = make_colour_folder(tmp_path / "tiles", 5)
    library = open_library(folder, tmp_path / "cache")
    for count in ("3", 1.5, True, [3]):
        with pytest.raises(OptionError, match="^limit must be a whole number, got"):
            library.limit(count)
    assert len(library.limit(np.int64(2))) == 2
    for threshold in ("x", 1.5, None, True):
        with pytest.raises(OptionError, match="^dedupe must be a whole number, got"):
            library.without_duplicates(threshold)
        with pytest.raises(OptionError, match="^dedupe must be a whole number, got"):
            library.duplicate_leaders(threshold)
    assert len(library.without_duplicates(np.int64(0))) == 5
    assert not list(library.directory.glob("dedupe-t[!0-9]*"))


# -- a cache that cannot be written ---------------------------------------------------------


def refuse_the_lock(monkeypatch, number=errno.EACCES):
    """Make the index's lock file fail to open as in a cache this process cannot write.

    Root writes in read-only folders all the same: the refusal is made here.
    """
    real = os.open

    def refusing(path, flags, *args, **kwargs):
        if os.fspath(path).endswith("write.lock"):
            raise OSError(number, os.strerror(number), os.fspath(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(library_module.os, "open", refusing)


def test_a_read_only_cache_serves_an_index_with_a_read_to_try_again(tmp_path, monkeypatch):
    # Trying the read again needs writing: the published library is served meanwhile.
    folder = make_colour_folder(tmp_path / "tiles", 3)
    cache = tmp_path / "cache"
    fail_reads_of(monkeypatch, "t000.png")
    open_library(folder, cache)
    refuse_the_lock(monkeypatch)
    served = open_library(folder, cache)
    assert len(served) == 2 and served.stats.decoded == 0
    assert [source_id for source_id, _ in served.stats.failed] == ["t000.png"]


def index_files(directory):
    """Each file of an index folder (but SQLite's log files) with its size and time."""
    return {path.relative_to(directory): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in directory.rglob("*") if not path.name.endswith(("-wal", "-shm"))}


@pytest.mark.parametrize("number", [errno.EACCES, errno.EROFS])
def test_a_read_only_cache_serves_an_index_that_is_up_to_date(tmp_path, monkeypatch, number):
    # A shared cache that the user cannot write failed to open the index's lock, even
    # though its index needed no update.
    folder = make_colour_folder(tmp_path / "tiles", 6)
    cache = tmp_path / "cache"
    first = open_library(folder, cache)
    before = index_files(first.directory)
    refuse_the_lock(monkeypatch, number)
    again = open_library(folder, cache)
    assert (again.stats.tiles, again.stats.reused, again.stats.decoded) == (6, 6, 0)
    check_pixels(again, folder)
    assert index_files(first.directory) == before

    # An index that must change (or be made) cannot be: one line naming the folder.
    Image.new("RGB", (12, 12), "red").save(folder / "t100.png")
    for tile_px in (8, 16):
        with pytest.raises(MosaicistError) as raised:
            open_library(folder, cache, tile_px)
        message = str(raised.value)
        assert "\n" not in message and "cache folder is not writable" in message
        assert message.startswith(str(first.directory.parent / f"px{tile_px}"))
    assert index_files(first.directory) == before


def cli_make(folder, target, cache, output, *extra):
    """Run ``mosaicist make`` in this process; return click's result."""
    from click.testing import CliRunner

    from mosaicist.cli import main

    args = ["make", target, "--tiles", folder, "--cell", 8, "--tile-px", 8, "--cache-dir",
            cache, "-o", output, *extra]
    return CliRunner().invoke(main, [str(arg) for arg in args])


def make_target(path):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path)
    return path


def test_make_with_a_cache_whose_index_cannot_be_locked(tmp_path, monkeypatch):
    folder = make_colour_folder(tmp_path / "tiles", 30)
    target = make_target(tmp_path / "target.png")
    cache = tmp_path / "cache"
    assert cli_make(folder, target, cache, tmp_path / "a.png").exit_code == 0
    refuse_the_lock(monkeypatch)
    result = cli_make(folder, target, cache, tmp_path / "b.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    Image.new("RGB", (12, 12), "red").save(folder / "t100.png")
    result = cli_make(folder, target, cache, tmp_path / "c.png")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "cache folder is not writable (permission denied)" in result.stderr


def test_make_with_a_cache_that_cannot_make_folders(tmp_path, monkeypatch):
    # An index made by 'mosaicist index' alone has no features folder yet; in a read-only
    # cache, making it failed the whole make, and a new index folder failed unexplained.
    from pathlib import Path

    folder = make_colour_folder(tmp_path / "tiles", 30)
    target = make_target(tmp_path / "target.png")
    cache = tmp_path / "cache"
    open_library(folder, cache, 8)
    refuse_the_lock(monkeypatch)
    real = Path.mkdir

    def refusing(path, *args, **kwargs):
        if str(path).startswith(str(cache)) and not path.exists():
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refusing)
    result = cli_make(folder, target, cache, tmp_path / "a.png", "--preset", "seed")
    assert result.exit_code == 0, result.output
    assert not any(path.name == "features" for path in cache.rglob("*"))
    result = cli_make(folder, target, cache, tmp_path / "b.png", "--preset", "seed",
                      "--tile-px", 16)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "cache folder is not writable (permission denied)" in result.stderr


#: Runs a command (then a shell's script and its arguments) in a mount namespace of its
#: own, where the script can mount a folder read-only, seen by nothing else.
PRIVATE_MOUNTS = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c"]
#: The script: the folder "$0" mounted over itself read-only, then the command run.
READ_ONLY_MOUNT = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'


def run_on_read_only_mount(folder, *command):
    """Run ``command`` where ``folder`` is on a read-only mount; None where none can be made."""
    import subprocess
    import sys

    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return None
    probe = subprocess.run([*PRIVATE_MOUNTS, READ_ONLY_MOUNT, str(folder), "true"],
                           capture_output=True, timeout=60)
    if probe.returncode != 0:
        return None
    return subprocess.run([*PRIVATE_MOUNTS, READ_ONLY_MOUNT, str(folder), *command],
                          capture_output=True, text=True, timeout=120)


def test_a_cache_on_a_read_only_file_system_serves_its_index(tmp_path):
    # On a read-only mount SQLite cannot make the manifest's -shm file and says "unable
    # to open database file" (not the read-only error of a folder without write
    # permission): an index that was up to date could not be used at all, and one that
    # needed an update failed with SQLite's words instead of "not writable".
    import sys

    folder = make_colour_folder(tmp_path / "tiles", 6)
    cache = tmp_path / "cache"
    first = open_library(folder, cache)
    before = index_files(first.directory)
    script = (
        "import sys\n"
        "from mosaicist.errors import MosaicistError\n"
        "from mosaicist.library import TileLibrary\n"
        "from mosaicist.sources.folder import FolderSource\n"
        "try:\n"
        "    library = TileLibrary.open(FolderSource(sys.argv[1], workers=1), 8,\n"
        "                               cache_dir=sys.argv[2])\n"
        "    print('served', len(library), library.stats.decoded, library.stats.reused)\n"
        "except MosaicistError as error:\n"
        "    print('error', error)\n"
    )
    command = (sys.executable, "-c", script, str(folder), str(cache))
    result = run_on_read_only_mount(cache, *command)
    if result is None:
        pytest.skip("no private read-only mounts here (unshare)")
    assert result.stdout.strip() == "served 6 0 6", result.stdout + result.stderr
    Image.new("RGB", (12, 12), "red").save(folder / "t100.png")
    result = run_on_read_only_mount(cache, *command)
    assert result is not None
    message = result.stdout.strip()
    assert message.startswith(f"error {first.directory}") and "\n" not in message
    assert "cache folder is not writable (read-only file system)" in message
    assert index_files(first.directory) == before


def writes_in_read_only_folders(folder):
    """Whether this process writes in folders without write permission (root does)."""
    probe = folder / "probe"
    probe.mkdir()
    probe.chmod(0o555)
    try:
        (probe / "file").touch()
    except PermissionError:
        return False
    finally:
        probe.chmod(0o755)
    return True


def set_writable(root, writable):
    """``chmod -R u+w`` or ``a-w`` on ``root``."""
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | 0o200 if writable else mode & ~0o222)


def test_make_with_a_read_only_cache(tmp_path):
    # The real thing (see the tests above for root): SQLite cannot read its manifest
    # where it cannot make the log's files beside it, and every cache of derived
    # arrays (features, prepared tiles, the approximate search's index) is made in
    # memory instead.
    if writes_in_read_only_folders(tmp_path):
        pytest.skip("root can write to read-only folders")
    folder = make_colour_folder(tmp_path / "tiles", 30)
    target = make_target(tmp_path / "target.png")
    cache = tmp_path / "cache"
    assert cli_make(folder, target, cache, tmp_path / "a.png").exit_code == 0
    set_writable(cache, False)
    try:
        before = {path: path.stat().st_mtime_ns for path in cache.rglob("*")}
        for number, extra in enumerate([[], ["--metric", "lab", "--augment", "flips"],
                                         ["--search", "approximate"]]):
            result = cli_make(folder, target, cache, tmp_path / f"{number}.png", *extra)
            assert result.exit_code == 0, result.output
        assert (tmp_path / "a.png").read_bytes() == (tmp_path / "0.png").read_bytes()
        assert {path: path.stat().st_mtime_ns for path in cache.rglob("*")} == before
        Image.new("RGB", (12, 12), "red").save(folder / "t100.png")
        result = cli_make(folder, target, cache, tmp_path / "c.png")
        assert result.exit_code != 0 and "Traceback" not in result.output
        assert result.stderr.strip().splitlines() == [result.stderr.strip()]
        assert "cache folder is not writable (permission denied)" in result.stderr
    finally:
        set_writable(cache, True)


def test_array_files_that_are_no_arrays_get_a_one_line_reason(tmp_path):
    # A text file named .npy was "pickled (object) data ... allow_pickle=", which
    # misleads; an HDF5 dataset with a null data space ended in a TypeError traceback.
    from mosaicist.errors import SourceError

    text = tmp_path / "notes.npy"
    text.write_text("hello, not an array\n")
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    for path in (text, empty):
        with pytest.raises(SourceError, match=r"not a \.npy file \(it does not start with"):
            open_source(str(path), tmp_path / "cache")
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "null.h5", "w") as handle:
        handle.create_dataset("images", data=h5py.Empty("u1"))
    with pytest.raises(SourceError, match="null.h5:images: is an empty HDF5 dataset"):
        open_source(str(tmp_path / "null.h5"), tmp_path / "cache")


def test_an_array_saved_again_reshaped_is_indexed_again(tmp_path):
    # The same bytes in pictures of another shape hashed as the old images, so every
    # stale tile was kept (the index keeps the tile of content that hashes the same).
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    path = tmp_path / "pictures.npy"
    np.save(path, images)
    TileLibrary.open(str(path), 16, cache_dir=tmp_path / "cache")
    np.save(path, images.reshape(4, 16, 64, 3))
    os.utime(path, ns=(time.time_ns() + 10**9,) * 2)  # a new stamp on any file system
    again = TileLibrary.open(str(path), 16, cache_dir=tmp_path / "cache")
    fresh = TileLibrary.open(str(path), 16, cache_dir=tmp_path / "fresh")
    np.testing.assert_array_equal(np.asarray(again.tiles), np.asarray(fresh.tiles))


def test_an_array_file_replaced_after_its_source_was_made_is_read_anew(tmp_path):
    # The .npy was mapped when the source was made, but scanned later: a file renamed
    # over it in between was indexed from the old map under the new file's stamp, and
    # the next runs kept those stale tiles ("unchanged").
    from mosaicist.sources.arrays import ArrayFileSource

    rng = np.random.default_rng(6)
    path = tmp_path / "pictures.npy"
    np.save(path, rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8))
    source = ArrayFileSource(path)
    newer = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "newer.npy", newer)
    os.replace(tmp_path / "newer.npy", path)
    library = TileLibrary.open(source, 8, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(np.asarray(library.tiles), newer)
    np.testing.assert_array_equal(np.asarray(source.open_original(source.scan()[4])), newer[4])
    again = TileLibrary.open(str(path), 8, cache_dir=tmp_path / "cache")
    assert again.stats.decoded == 0
    np.testing.assert_array_equal(np.asarray(again.tiles), newer)


def test_a_new_manifest_opened_while_another_process_makes_it_waits(tmp_path, monkeypatch):
    # Another process's first connect holds the new manifest's write lock (rollback
    # journal, before WAL): switching to WAL was refused at once, "database is locked",
    # when two runs opened a new index together.
    from mosaicist.library import _manifest

    other = sqlite3.connect(tmp_path / "manifest.sqlite", isolation_level=None)
    other.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    other.execute("BEGIN IMMEDIATE")
    waits = []

    def other_commits(seconds):
        waits.append(seconds)
        if other.in_transaction:
            other.execute("COMMIT")

    monkeypatch.setattr(_manifest.time, "sleep", other_commits)
    connection = _manifest.connect(tmp_path)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("SELECT count(*) FROM tiles").fetchone()[0] == 0
    finally:
        connection.close()
        other.close()
    assert waits


def test_an_index_required_without_updating_is_not_made_empty_when_missing(tmp_path):
    # Opened without updating, a missing index was made anew, empty, and reported as
    # "no usable tile images found": the photos were blamed for a deleted cache.
    import pickle

    from mosaicist.library._index import MissingIndexError

    folder = make_colour_folder(tmp_path / "tiles", 3)
    cache = tmp_path / "cache"
    with pytest.raises(MissingIndexError, match="tile index of .* is not there") as caught:
        open_library(folder, cache, update=False, require_index=True)
    assert not caught.value.directory.exists()
    assert "no usable tile" not in str(caught.value)
    again = pickle.loads(pickle.dumps(caught.value))  # as worker processes send it
    assert (again.directory, str(again)) == (caught.value.directory, str(caught.value))
    library = open_library(folder, cache)
    assert len(open_library(folder, cache, update=False, require_index=True)) == 3
    shutil.rmtree(library.directory)
    with pytest.raises(MissingIndexError):
        open_library(folder, cache, update=False, require_index=True)
