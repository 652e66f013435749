"""The index sees every change: files saved again within a clock tick, replaced files,
spellings of one array key, and an update killed right after a change."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mosaicist.imaging import decode_tile_bytes
from mosaicist.library import TileLibrary
from mosaicist.library import _update as library_module
from mosaicist.sources import folder as folder_module
from mosaicist.sources import open_source
from mosaicist.sources.folder import FolderSource

#: A stamp with a fraction of a second (a file system of fine ticks), in nanoseconds.
FINE_STAMP = 1_700_000_000_123_456_789
#: A stamp in whole seconds (a file system of one- or two-second ticks: FAT, some shares).
COARSE_STAMP = 1_700_000_000 * 10**9


def save_bmp(path: Path, seed: int) -> None:
    """A random 12 x 12 picture as BMP: every such file has the same size, whatever its pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def set_stamp(path: Path, stamp: int) -> None:
    os.utime(path, ns=(stamp, stamp))


def open_library(folder: Path, cache: Path) -> TileLibrary:
    return TileLibrary.open(FolderSource(folder, workers=1), 8, cache_dir=cache)


def check_pixels(library: TileLibrary, folder: Path) -> None:
    """Every tile is a fresh decode of its file."""
    for position, name in enumerate(library.source_ids):
        expected = decode_tile_bytes((folder / name).read_bytes(), library.match_px)
        np.testing.assert_array_equal(library.tiles[position], expected, err_msg=name)


@pytest.fixture
def stamps_are_mtimes(monkeypatch):
    """A file's stamp is its modification time alone, which os.utime sets back.

    Stands for a file written again in the same clock tick as before: its status-change
    time, which the stamp also takes (and os.utime cannot set), is then the same too.
    """
    monkeypatch.setattr(folder_module, "change_stamp", lambda status: status.st_mtime_ns)


@pytest.fixture
def clock(monkeypatch):
    """The moment the index judges stamps against, set by the test (a one-item list)."""
    now = [0]
    monkeypatch.setattr(library_module, "_clock_ns", lambda: now[0])
    return now


def count_hashed(monkeypatch, source_class) -> list:
    """Record the ids whose content the index hashes to check racy stamps."""
    hashed: list = []
    original = source_class.content_hashes

    def content_hashes(self, entries):
        hashed.extend(entry.source_id for entry in entries)
        return original(self, entries)

    monkeypatch.setattr(source_class, "content_hashes", content_hashes)
    return hashed


def test_a_file_saved_again_in_the_tick_it_was_indexed_in_is_read_again(
        tmp_path, stamps_are_mtimes, clock, monkeypatch):
    # Rewritten at its size in the tick of its stamp, just after the index read it, a
    # file kept its stamp, and the index kept its first pixels for good.
    folder = tmp_path / "tiles"
    folder.mkdir()
    for seed, name in enumerate(("a.bmp", "b.bmp", "c.bmp")):
        save_bmp(folder / name, seed)
        set_stamp(folder / name, FINE_STAMP)
    cache = tmp_path / "cache"
    clock[0] = FINE_STAMP + 200_000_000  # indexed 0.2 s after the files were written
    assert open_library(folder, cache).stats.decoded == 3
    size = (folder / "b.bmp").stat().st_size
    save_bmp(folder / "b.bmp", 10)
    set_stamp(folder / "b.bmp", FINE_STAMP)
    assert (folder / "b.bmp").stat().st_size == size
    hashed = count_hashed(monkeypatch, FolderSource)
    clock[0] = FINE_STAMP + 100 * 10**9
    again = open_library(folder, cache)
    check_pixels(again, folder)
    # Every racy file is checked by the hash of its bytes; only the changed one is decoded.
    assert sorted(hashed) == ["a.bmp", "b.bmp", "c.bmp"]
    assert again.stats.decoded == 1 and again.stats.reused == 2
    # Checked 100 s after their stamps, they are safely old: never read again.
    hashed.clear()
    clock[0] = FINE_STAMP + 200 * 10**9
    last = open_library(folder, cache)
    assert last.stats.decoded == 0 and hashed == []
    check_pixels(last, folder)


def test_files_older_than_their_index_are_not_read_again(
        tmp_path, stamps_are_mtimes, clock, monkeypatch):
    folder = tmp_path / "tiles"
    folder.mkdir()
    for seed, name in enumerate(("a.bmp", "b.bmp")):
        save_bmp(folder / name, seed)
    set_stamp(folder / "a.bmp", FINE_STAMP)
    set_stamp(folder / "b.bmp", COARSE_STAMP)
    cache = tmp_path / "cache"
    # 2 s later: a fine stamp is safely old, a stamp of whole seconds (a tick of two
    # seconds on FAT) is not.
    clock[0] = COARSE_STAMP + 2 * 10**9
    open_library(folder, cache)
    hashed = count_hashed(monkeypatch, FolderSource)
    clock[0] = COARSE_STAMP + 3_500_000_000
    assert open_library(folder, cache).stats.decoded == 0
    assert hashed == ["b.bmp"]
    hashed.clear()
    # Checked 3.5 s after its stamp, nothing is racy any more: the "nothing changed"
    # stop, without a hash.
    clock[0] = COARSE_STAMP + 4 * 10**9
    again = open_library(folder, cache)
    assert again.stats.decoded == 0 and again.stats.reused == 2 and hashed == []
    check_pixels(again, folder)


def test_racy_stamps_judged_by_tick_size():
    racy = library_module._is_racy
    moment = FINE_STAMP + 10**9 - 1
    assert racy(FINE_STAMP, moment) and not racy(FINE_STAMP, FINE_STAMP + 10**9 + 1)
    assert racy(COARSE_STAMP, COARSE_STAMP + 3 * 10**9)
    assert not racy(COARSE_STAMP, COARSE_STAMP + 3 * 10**9 + 1)
    assert racy(FINE_STAMP + 10**12, FINE_STAMP)  # dated in the future
    assert not racy(FINE_STAMP, None)  # an index made before the check: trusted


def test_a_file_saved_again_after_an_interrupted_update_is_read_again(
        tmp_path, stamps_are_mtimes, clock, monkeypatch):
    # The staged rows of an update that did not publish are judged by when they were read.
    folder = tmp_path / "tiles"
    folder.mkdir()
    names = [f"t{index}.bmp" for index in range(4)]
    for seed, name in enumerate(names):
        save_bmp(folder / name, seed)
        set_stamp(folder / name, FINE_STAMP)
    cache = tmp_path / "cache"
    monkeypatch.setattr(library_module, "COMMIT_EVERY", 1)
    original = FolderSource.decode

    def decode(self, entries, width_px):
        for number, decoded in enumerate(original(self, entries, width_px)):
            if number == 2:
                raise KeyboardInterrupt
            yield decoded

    monkeypatch.setattr(FolderSource, "decode", decode)
    clock[0] = FINE_STAMP + 10**8
    with pytest.raises(KeyboardInterrupt):
        open_library(folder, cache)
    monkeypatch.setattr(FolderSource, "decode", original)
    save_bmp(folder / "t1.bmp", 20)  # staged, then saved again in the same tick
    set_stamp(folder / "t1.bmp", FINE_STAMP)
    clock[0] = FINE_STAMP + 100 * 10**9
    resumed = open_library(folder, cache)
    check_pixels(resumed, folder)
    assert resumed.stats.decoded == 3  # t1 again, and the two never decoded


def test_a_file_moved_over_another_of_its_size_and_time_is_read_again(tmp_path, clock):
    # `mv new old` with new's modification time set to old's: the renamed file's status
    # changes (its ctime), so its stamp does; within the same tick, its stamp is racy.
    # The inode is not compared: network and FUSE file systems renumber files (a mount
    # made again would decode every photo again).
    folder = tmp_path / "tiles"
    folder.mkdir()
    save_bmp(folder / "a.bmp", 1)
    save_bmp(folder / "old.bmp", 2)
    cache = tmp_path / "cache"
    clock[0] = 2**62  # long after every stamp: nothing racy, the stamps alone decide
    open_library(folder, cache)
    recorded = folder_module.change_stamp((folder / "old.bmp").stat())
    save_bmp(tmp_path / "new.bmp", 3)
    old = (folder / "old.bmp").stat()
    set_stamp(tmp_path / "new.bmp", old.st_mtime_ns)
    os.replace(tmp_path / "new.bmp", folder / "old.bmp")
    assert (folder / "old.bmp").stat().st_ino != old.st_ino
    assert (folder / "old.bmp").stat().st_size == old.st_size
    if folder_module.change_stamp((folder / "old.bmp").stat()) == recorded:
        pytest.skip("renamed in the clock tick of the first write (the racy case, above)")
    moved = open_library(folder, cache)
    assert moved.stats.decoded == 1
    check_pixels(moved, folder)


def test_a_moved_file_is_read_again_on_the_real_clock(tmp_path):
    # The same on this machine's clock: by its stamp, or as racy when in the same tick.
    folder = tmp_path / "tiles"
    folder.mkdir()
    save_bmp(folder / "old.bmp", 2)
    cache = tmp_path / "cache"
    open_library(folder, cache)
    save_bmp(tmp_path / "new.bmp", 3)
    old = (folder / "old.bmp").stat()
    set_stamp(tmp_path / "new.bmp", old.st_mtime_ns)
    os.replace(tmp_path / "new.bmp", folder / "old.bmp")
    check_pixels(open_library(folder, cache), folder)


def test_an_array_saved_again_in_its_tick_is_read_again(tmp_path, clock, monkeypatch):
    # An array file is checked by its images' hashes (no tiles made), then decoded.
    from mosaicist.sources import arrays

    monkeypatch.setattr(arrays, "change_stamp", lambda status: status.st_mtime_ns)
    path = tmp_path / "pictures.npy"
    rng = np.random.default_rng(3)
    np.save(path, rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8))
    set_stamp(path, FINE_STAMP)
    cache = tmp_path / "cache"
    clock[0] = FINE_STAMP + 10**8
    TileLibrary.open(str(path), 8, cache_dir=cache)
    hashed = count_hashed(monkeypatch, arrays.ArrayFileSource)
    clock[0] = FINE_STAMP + 100 * 10**9
    same = TileLibrary.open(str(path), 8, cache_dir=cache)
    hashed_unchanged = len(hashed)
    changed = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    changed[:2] = np.load(path)[:2]
    np.save(path, changed)
    set_stamp(path, FINE_STAMP + 150 * 10**9)
    clock[0] = FINE_STAMP + 150 * 10**9 + 10**8  # racy again
    TileLibrary.open(str(path), 8, cache_dir=cache)
    np.save(path, changed[::-1].copy())
    set_stamp(path, FINE_STAMP + 150 * 10**9)
    clock[0] = FINE_STAMP + 300 * 10**9
    again = TileLibrary.open(str(path), 8, cache_dir=cache)
    np.testing.assert_array_equal(np.asarray(again.tiles), changed[::-1])
    assert again.stats.decoded == 4  # the middle image is where it was
    # The unchanged array was checked by its images' hashes, not decoded.
    assert same.stats.decoded == 0 and hashed_unchanged == 5


@pytest.mark.parametrize("key", ["/images", "images/", "//images", "./images"])
def test_spellings_of_an_hdf5_key_name_one_index(tmp_path, key):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "tiles.h5"
    images = np.random.default_rng(1).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("images", data=images)
        handle.create_dataset("more/pictures", data=images[::-1])
    cache = tmp_path / "cache"
    plain = open_source(f"{path}:images", cache)
    assert plain.key == f"array:{path}:images"  # as before: its indexes stay theirs
    first = TileLibrary.open(plain, 8, cache_dir=cache)
    other = open_source(f"{path}:{key}", cache)
    assert other.key == plain.key and other.name == "tiles.h5:images"
    again = TileLibrary.open(other, 8, cache_dir=cache)
    assert again.directory == first.directory and again.stats.decoded == 0
    assert again.source_ids == first.source_ids == ["tiles/0", "tiles/1", "tiles/2"]
    nested = open_source(f"{path}://more//pictures/", cache)
    assert nested.key == f"array:{path}:more/pictures"
    np.testing.assert_array_equal(
        np.asarray(TileLibrary.open(nested, 8, cache_dir=cache).tiles), images[::-1])


def test_an_npz_member_named_by_its_file_name_is_the_same_source(tmp_path):
    path = tmp_path / "tiles.npz"
    images = np.random.default_rng(2).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    np.savez(path, images=images, other=images[::-1])
    cache = tmp_path / "cache"
    plain = open_source(f"{path}:images", cache)
    named = open_source(f"{path}:images.npy", cache)  # as np.load takes it too
    assert named.key == plain.key == f"array:{path}:images"
    assert open_source(f"{path}:other.npy", cache).key == f"array:{path}:other"


# Indexes the folder, killed (SIGKILL) on entering one stage of the update.
KILLED_INDEX = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from mosaicist.library import TileLibrary, _update
    from mosaicist.sources.folder import FolderSource

    def killed(*arguments, **keywords):
        os.kill(os.getpid(), signal.SIGKILL)

    setattr(_update, sys.argv[3], killed)
    TileLibrary.open(FolderSource(sys.argv[1], workers=1), 8, cache_dir=Path(sys.argv[2]))
""")


@pytest.mark.parametrize("stage", ["_decode_into_store", "_publish", "_swap_manifest"])
def test_an_update_killed_right_after_a_change_loses_nothing(tmp_path, stage):
    folder = tmp_path / "tiles"
    folder.mkdir()
    for seed in range(4):
        save_bmp(folder / f"t{seed}.bmp", seed)
    cache = tmp_path / "cache"
    before = open_library(folder, cache)
    published = (list(before.source_ids), np.array(before.tiles))
    save_bmp(folder / "t1.bmp", 11)
    stamp = (folder / "t1.bmp").stat().st_mtime_ns + 10 * 10**9
    set_stamp(folder / "t1.bmp", stamp)
    save_bmp(folder / "t4.bmp", 12)
    (folder / "t2.bmp").unlink()
    run = subprocess.run([sys.executable, "-c", KILLED_INDEX, str(folder), str(cache), stage],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == -signal.SIGKILL, run.stderr
    # Readers still see the library as last published...
    reader = TileLibrary.open(FolderSource(folder, workers=1), 8, cache_dir=cache,
                              update=False)
    assert list(reader.source_ids) == published[0]
    np.testing.assert_array_equal(np.array(reader.tiles), published[1])
    # ...and the next update finishes the change, reusing what the killed one staged.
    resumed = open_library(folder, cache)
    assert resumed.source_ids == ["t0.bmp", "t1.bmp", "t3.bmp", "t4.bmp"]
    assert resumed.stats.decoded == (2 if stage == "_decode_into_store" else 0)
    check_pixels(resumed, folder)


def test_a_read_only_index_checks_its_racy_rows_by_content(
        tmp_path, stamps_are_mtimes, clock):
    # An index whose cache cannot be written serves its library only if it is up to date:
    # a racy row is checked by reading, and a changed one needs the update it cannot make.
    from mosaicist.errors import MosaicistError

    folder = tmp_path / "tiles"
    folder.mkdir()
    for seed, name in enumerate(("a.bmp", "b.bmp")):
        save_bmp(folder / name, seed)
        set_stamp(folder / name, FINE_STAMP)
    clock[0] = FINE_STAMP + 10**8
    directory = open_library(folder, tmp_path / "cache").directory
    refused = PermissionError(13, "Permission denied")
    source = FolderSource(folder, workers=1)
    assert library_module._unchanged_read_only(source, directory, refused).reused == 2
    save_bmp(folder / "b.bmp", 7)
    set_stamp(folder / "b.bmp", FINE_STAMP)
    with pytest.raises(MosaicistError, match="cache folder is not writable"):
        library_module._unchanged_read_only(source, directory, refused)
