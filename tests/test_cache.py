"""The caches beside a tile index: full disks, killed writers' temporaries, old generations."""

from __future__ import annotations

import errno
import os
import shutil
import time

import numpy as np
import pytest
from conftest import count_builds, dead_pid, in_threads, make_colour_folder
from PIL import Image

from mosaicist.dedupe import DEDUPE_VERSION
from mosaicist.grid import Geometry
from mosaicist.library import TileLibrary
from mosaicist.library import _update as update_module
from mosaicist.match import cached_features, compute_features, prepare_tiles
from mosaicist.paths import remove_dead_temporaries
from mosaicist.sources.folder import FolderSource


def _open(folder, cache, **kwargs):
    return TileLibrary.open(FolderSource(folder, workers=1), 8, cache_dir=cache, **kwargs)


def _tiles(count=20, side=8):
    return np.random.default_rng(3).integers(0, 256, (count, side, side, 3), dtype=np.uint8)


def _full_disk(monkeypatch, code=errno.ENOSPC):
    calls = []

    def fallocate(descriptor, offset, length):
        calls.append(length)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "posix_fallocate", fallocate, raising=False)
    return calls


# -- 1. a full disk: the space of a memory-mapped entry is reserved before it is filled -------

def test_a_full_cache_disk_prepares_the_library_in_memory(tmp_path, monkeypatch):
    # Filling a sparse memory map on a full disk died of SIGBUS (exit 135), leaving a .part.
    tiles = _tiles()
    expected = prepare_tiles(tiles, "lab", "flips", None, "g0-n20")
    calls = _full_disk(monkeypatch)
    prepared = prepare_tiles(tiles, "lab", "flips", tmp_path, "g0-n20")
    assert calls == [expected.nbytes]
    np.testing.assert_array_equal(prepared, expected)
    assert list(tmp_path.iterdir()) == []


def test_a_full_cache_disk_computes_the_block_sums_in_memory(tmp_path, monkeypatch):
    tiles = _tiles()
    geometry = Geometry(4, 8)  # block sums of 2 x 2 pixels: the pooled.npy map
    expected = compute_features(tiles, geometry)
    calls = _full_disk(monkeypatch)
    features = cached_features(tiles, geometry, tmp_path, 0)
    assert len(calls) == 1
    assert features.pooled is not None and not isinstance(features.pooled, np.memmap)
    for name in ("pooled", "bound", "order", "residual", "norm2", "tail_norm"):
        np.testing.assert_array_equal(getattr(features, name), getattr(expected, name))
    assert list(tmp_path.iterdir()) == []


def test_a_file_system_that_cannot_reserve_still_caches(tmp_path, monkeypatch):
    tiles = _tiles()
    _full_disk(monkeypatch, errno.EOPNOTSUPP)
    prepared = prepare_tiles(tiles, "lab", "none", tmp_path, "g0-n20")
    assert isinstance(prepared, np.memmap)
    np.testing.assert_array_equal(prepared, prepare_tiles(tiles, "lab", "none", None, "g0-n20"))
    assert [path.name for path in tmp_path.iterdir()] == ["prepared-lab-none-g0-n20.u8"]


# -- 2. killed writers' temporaries are swept when the index is opened -----------------------

def _age(path, seconds):
    """Make ``path`` (and what a folder holds) look unchanged for ``seconds``."""
    then = time.time() - seconds
    for inner in [path, *(path.rglob("*") if path.is_dir() else ())]:
        os.utime(inner, (then, then))


def test_dead_writers_temporaries_are_swept_when_the_index_is_opened(tmp_path):
    folder = make_colour_folder(tmp_path / "tiles", 4)
    cache = tmp_path / "cache"
    library = _open(folder, cache)
    features = library.features_dir
    dedupe = library.directory / f"dedupe-v{DEDUPE_VERSION}-t6"
    dedupe.mkdir()
    dead, live = dead_pid(), os.getpid()
    stale = [
        features / f".v6-seed-g0-n4-side8-f1-s1-d256.{dead}-abcd_123.part",
        features / f".prepared-lab-none-g0-n4.u8.{dead}-abcd1234.part.u8",
        dedupe / f".tiles-g0-n3.u8.{dead}.part",  # as earlier versions named them
    ]
    kept = [
        features / f".v6-seed-g0-n4-side8-f1-s1-d256.{live}-abcd_123.part",
        features / f".prepared-lab-none-g0-n4.u8.{live}-abcd1234.part.u8",
        dedupe / f".tiles-g0-n3.u8.{live}.part",
        dedupe / "notes.part",
    ]
    recent = features / f".prepared-seed-flips-g0-n4.u8.{dead}-zzzz9999.part.u8"
    for path in [*stale, *kept, recent]:
        if path.suffix == ".part" and path.name.startswith(".v6"):
            path.mkdir()
            (path / "pooled.npy").write_bytes(b"half")
        else:
            path.write_bytes(b"half")
    for path in [*stale, *kept]:
        _age(path, 2 * update_module.DEAD_TEMPORARY_AGE)
    again = _open(folder, cache)
    assert again.stats.decoded == 0  # the fast path sweeps too
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in kept)
    # Its PID is not alive here, but it changed lately: maybe a writer on another machine.
    assert recent.exists()
    # Opening without updating takes no lock, and sweeps nothing.
    _age(recent, 2 * update_module.DEAD_TEMPORARY_AGE)
    _open(folder, cache, update=False)
    assert recent.exists()


def test_a_sweep_does_not_look_into_a_temporary_folder(tmp_path):
    live = tmp_path / f".entry.{os.getpid()}-abcdefgh.part"
    inner = live / f".inner.{dead_pid()}-abcdefgh.part.npy"
    live.mkdir()
    inner.write_bytes(b"x")
    assert remove_dead_temporaries(tmp_path) == []
    assert inner.exists()


# -- 3. near-duplicate caches are written atomically, and keep newer generations' files ------

def _library_with_a_copy(tmp_path, generations=2):
    """A library of generation ``generations - 1`` whose ``t001b.png`` copies ``t001.png``."""
    folder = make_colour_folder(tmp_path / "tiles", 6)
    shutil.copy(folder / "t001.png", folder / "t001b.png")
    cache = tmp_path / "cache"
    library = _open(folder, cache)
    for step in range(1, generations):
        # A tile that sorts first: the library is packed again, a new generation.
        Image.fromarray(np.full((12, 12, 3), step, np.uint8)).save(folder / f"a{step}.png")
        library = _open(folder, cache)
    assert library.generation == generations - 1
    return folder, cache, library


def test_a_killed_dedupe_writers_temporary_goes_at_the_next_write(tmp_path):
    _, _, library = _library_with_a_copy(tmp_path, 1)
    dead = dead_pid()
    dedupe = library.directory / f"dedupe-v{DEDUPE_VERSION}-t6"
    duplicates = library.directory / "duplicates"
    dedupe.mkdir()
    duplicates.mkdir()
    left = [dedupe / f".tiles-g0-n7.u8.{dead}-abcd1234.part.u8",
            duplicates / f".leaders-v{DEDUPE_VERSION}-g0-n7-t6.npy.{dead}-abcd1234.part.npy"]
    for path in left:
        path.write_bytes(b"half")
    unique = library.without_duplicates(6)
    assert len(unique) == 6 and unique.duplicates_dropped == 1
    assert not any(path.exists() for path in left)
    assert sorted(path.name for path in dedupe.iterdir()) == ["tiles-g0-n7.u8"]
    assert sorted(path.name for path in duplicates.iterdir()) == [
        f"leaders-v{DEDUPE_VERSION}-g0-n7-t6.npy"]


def test_an_interrupted_dedupe_write_leaves_nothing(tmp_path, monkeypatch):
    _, _, library = _library_with_a_copy(tmp_path, 1)
    library.duplicate_leaders(6)
    real = np.ascontiguousarray

    def interrupted(array):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "ascontiguousarray", interrupted)
    with pytest.raises(KeyboardInterrupt):
        library.without_duplicates(6)
    monkeypatch.setattr(np, "ascontiguousarray", real)
    assert list((library.directory / f"dedupe-v{DEDUPE_VERSION}-t6").iterdir()) == []


def test_dedupe_caches_of_newer_generations_and_other_thresholds_are_kept(tmp_path):
    _, _, library = _library_with_a_copy(tmp_path, 2)
    dedupe = library.directory / f"dedupe-v{DEDUPE_VERSION}-t6"
    duplicates = library.directory / "duplicates"
    dedupe.mkdir()
    duplicates.mkdir()
    older = [dedupe / "tiles-g0-n7.u8", duplicates / "leaders-g0-n7-t6.npy"]
    # A process that already reads a newer library, or another threshold, still uses these.
    newer = [dedupe / "tiles-g2-n9.u8", duplicates / "leaders-g2-n9-t6.npy",
             duplicates / "leaders-g1-n8-t3.npy"]
    for path in [*older, *newer]:
        path.write_bytes(b"in use")
    unique = library.without_duplicates(6)
    assert len(unique) == 7
    assert not any(path.exists() for path in older)
    assert all(path.read_bytes() == b"in use" for path in newer)
    assert (dedupe / "tiles-g1-n8.u8").exists()
    assert (duplicates / f"leaders-v{DEDUPE_VERSION}-g1-n8-t6.npy").exists()


def test_leaders_cached_under_another_grouping_version_are_not_read(tmp_path, monkeypatch):
    # Named without the version, leaders grouped by an older rule were served for good.
    from mosaicist.library import _index

    _, _, library = _library_with_a_copy(tmp_path, 1)
    right = library.duplicate_leaders(6)
    cached = library.directory / "duplicates" / f"leaders-v{DEDUPE_VERSION}-g0-n7-t6.npy"
    grouped = np.arange(len(right), dtype=np.int64)  # as another rule grouped them
    np.save(cached, np.append(grouped, _index._leaders_checksum(grouped)))
    assert library.duplicate_leaders(6).tolist() == list(range(len(right)))  # the cache
    monkeypatch.setattr(_index, "DEDUPE_VERSION", DEDUPE_VERSION + 1)
    assert library.duplicate_leaders(6).tolist() == right.tolist()


@pytest.mark.parametrize("damage", ["another kept tile", "out of range", "flipped bytes",
                                    "without its checksum"])
def test_damaged_leaders_in_the_cache_are_grouped_again(tmp_path, damage):
    # An entry of a cached leaders file set to another kept photo's position (or a few
    # bytes flipped) dropped real photos as copies, exit 0, on every later run.
    from mosaicist.library import _index

    _, _, library = _library_with_a_copy(tmp_path, 1)
    right = library.duplicate_leaders(6)
    identical = library.without_identical()
    cached = library.directory / "duplicates" / f"leaders-v{DEDUPE_VERSION}-g0-n7-t6.npy"
    stored = np.load(cached)
    assert stored[:-1].tolist() == right.tolist()
    last = len(right) - 1
    if damage == "another kept tile":
        stored[last] = 0
    elif damage == "out of range":
        stored[last] = 10**6
    elif damage == "flipped bytes":
        stored = stored.copy()
        stored.view(np.uint8)[8 * last + 1] ^= 0x5A
    else:
        stored = stored[:-1].copy()
        stored[last] = 0
    np.save(cached, stored)
    assert library.duplicate_leaders(6).tolist() == right.tolist()
    assert np.load(cached)[-1] == _index._leaders_checksum(right)  # written again, whole
    assert len(library.without_identical()) == len(identical)


@pytest.mark.parametrize("damage", ["zeros", "one tile"])
def test_a_damaged_copy_of_the_kept_tiles_is_written_again(tmp_path, damage):
    # A zero-filled dedupe copy of the right size was used as it was: 447 of 450 cells
    # other than a fresh make's, exit 0.
    _, _, library = _library_with_a_copy(tmp_path, 1)
    right = np.array(library.without_duplicates(6).tiles)
    (store,) = (library.directory / f"dedupe-v{DEDUPE_VERSION}-t6").glob("tiles-*.u8")
    data = bytearray(store.read_bytes())
    if damage == "zeros":
        data = bytearray(len(data))
    else:
        data[:right[0].size] = bytes(255 - value for value in data[:right[0].size])
    store.write_bytes(bytes(data))
    assert np.array_equal(np.array(library.without_duplicates(6).tiles), right)
    assert np.array_equal(np.fromfile(store, np.uint8).reshape(right.shape), right)


# -- 4. entries of earlier library generations go when a new one is written ------------------

def _make_entries(library):
    """What a run makes in the caches: prepared tiles and features, without duplicates too."""
    geometry = Geometry(4, 8)
    for each in (library, library.without_duplicates(6)):
        key = f"g{each.generation}-n{len(each)}"
        candidates = prepare_tiles(each.tiles, "lab", "flips", each.features_dir, key)
        cached_features(candidates, geometry, each.features_dir, each.generation,
                        variant="lab-flips")
        cached_features(each.tiles, geometry, each.features_dir, each.generation)


def _generations(folder):
    return sorted({part for path in folder.iterdir() for part in path.name.split("-")
                   if part[:1] == "g" and part[1:].isdigit()})


def test_only_the_newest_generations_entries_stay(tmp_path):
    folder, cache, library = _library_with_a_copy(tmp_path, 1)
    _make_entries(library)
    reader = np.asarray(prepare_tiles(library.tiles, "lab", "flips", library.features_dir,
                                      "g0-n7")).copy()
    mapped = prepare_tiles(library.tiles, "lab", "flips", library.features_dir, "g0-n7")
    Image.fromarray(np.full((12, 12, 3), 9, np.uint8)).save(folder / "a.png")
    newer = _open(folder, cache)
    assert newer.generation == 1
    _make_entries(newer)
    features = newer.features_dir
    dedupe = newer.directory / f"dedupe-v{DEDUPE_VERSION}-t6"
    for each in (features, dedupe / "features", dedupe, newer.directory / "duplicates"):
        assert _generations(each) == ["g1"], each
    assert len(list(features.glob("v6-*"))) == 2 and len(list(features.glob("prepared-*"))) == 1
    # A reader of the older generation keeps what it had mapped.
    np.testing.assert_array_equal(mapped, reader)
    # A limited library (the same generation, fewer tiles) keeps the full library's entries.
    prepare_tiles(newer.tiles[:4], "lab", "flips", features, "g1-n4")
    assert len(list(features.glob("prepared-*"))) == 2


def test_an_entry_removed_by_a_newer_generation_at_once_is_still_returned(tmp_path,
                                                                          monkeypatch):
    # A process of a newer generation may remove an entry between its publication and
    # its mapping: the entry was then opened by name, and FileNotFoundError failed the run.
    from mosaicist.match import _features, _prepare

    def newer_generation_sweeps(directory, kind, generation):
        for entry in list(directory.iterdir()):
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        return []

    monkeypatch.setattr(_prepare, "remove_older_generations", newer_generation_sweeps)
    monkeypatch.setattr(_features, "remove_older_generations", newer_generation_sweeps)
    tiles = _tiles()
    (tmp_path / "p").mkdir()
    (tmp_path / "f").mkdir()
    prepared = prepare_tiles(tiles, "lab", "flips", tmp_path / "p", "g0-n20")
    assert isinstance(prepared, np.memmap)  # cached, not made in memory
    np.testing.assert_array_equal(prepared, prepare_tiles(tiles, "lab", "flips", None, "g0-n20"))
    geometry = Geometry(4, 8)
    features = cached_features(tiles, geometry, tmp_path / "f", 0)
    assert isinstance(features.pooled, np.memmap)
    np.testing.assert_array_equal(features.pooled, compute_features(tiles, geometry).pooled)


def test_entries_of_the_current_generation_go_after_a_month_unused(tmp_path):
    # A library grown by files that sort last keeps its generation: the entries of its
    # earlier sizes (n60, then n70...) were never removed. Those unused for a month go.
    from mosaicist.paths import UNUSED_ENTRY_AGE

    tiles = _tiles(30)
    geometry = Geometry(4, 8)
    cached_features(tiles[:10], geometry, tmp_path, 0)
    cached_features(tiles[:20], geometry, tmp_path, 0)
    old = time.time() - UNUSED_ENTRY_AGE - 3600
    for entry in tmp_path.iterdir():
        os.utime(entry, (old, old))
    # Read again, the first is in use: its stamp is renewed.
    cached_features(tiles[:10], geometry, tmp_path, 0)
    cached_features(tiles, geometry, tmp_path, 0)
    names = sorted(entry.name.split("-")[3] for entry in tmp_path.iterdir())
    assert names == ["n10", "n30"]
    prepare_tiles(tiles[:20], "lab", "none", tmp_path, "g0-n20")
    os.utime(tmp_path / "prepared-lab-none-g0-n20.u8", (old, old))
    prepare_tiles(tiles, "lab", "none", tmp_path, "g0-n30")
    assert not (tmp_path / "prepared-lab-none-g0-n20.u8").exists()


def test_a_sweep_of_one_folder_leaves_its_subfolders_alone(tmp_path):
    dead = dead_pid()
    top = tmp_path / f".out.png.{dead}-abcdefgh.part.png"
    staged = tmp_path / f".out_files.{dead}-abcdefgh.part"
    deep = tmp_path / "done_files" / "12" / f".0_0.jpeg.{dead}-abcdefgh.part.jpeg"
    live = tmp_path / f".other.png.{os.getpid()}-abcdefgh.part.png"
    staged.mkdir()
    deep.parent.mkdir(parents=True)
    for path in (top, deep, live):
        path.write_bytes(b"half")
    removed = remove_dead_temporaries(tmp_path, below=False)
    assert sorted(removed) == sorted([top, staged])
    assert deep.exists() and live.exists()
    assert remove_dead_temporaries(tmp_path) == [deep]


# -- 2. two builders of one entry: the second waits for the first and reads its entry --------

def test_two_threads_needing_the_same_prepared_library_prepare_it_once(tmp_path, monkeypatch):

    from mosaicist.match import _prepare

    tiles = _tiles()
    expected = prepare_tiles(tiles, "lab", "flips", None, "g0-n20")
    builds = count_builds(monkeypatch, _prepare, "_fill")
    results = in_threads(
        2, lambda: np.asarray(prepare_tiles(tiles, "lab", "flips", tmp_path, "g0-n20")))
    assert builds == [1]
    for prepared in results:
        np.testing.assert_array_equal(prepared, expected)
    assert [path.name for path in tmp_path.iterdir()] == ["prepared-lab-flips-g0-n20.u8"]


def test_an_unreadable_features_folder_computes_the_features_in_memory(tmp_path,
                                                                       monkeypatch):
    # chmod 000 on the features folder failed make with "...: Permission denied" (the
    # entry's is_dir), where every other unreadable cache is computed again.
    import pathlib

    from mosaicist import paths

    tiles = _tiles()
    geometry = Geometry(4, 8)
    expected = compute_features(tiles, geometry)
    folder = tmp_path / "features"
    folder.mkdir()
    real_is_dir = pathlib.Path.is_dir

    def unreadable(path):
        if str(path).startswith(str(folder) + os.sep):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_is_dir(path)

    def refused(path):  # root opens locks anywhere: refused as chmod 000 refuses others
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(pathlib.Path, "is_dir", unreadable)
    monkeypatch.setattr(paths, "open_lock", refused)
    features = cached_features(tiles, geometry, folder, 0)
    np.testing.assert_array_equal(features.bound, expected.bound)


def test_a_read_only_cache_folder_prepares_and_computes_without_a_lock(tmp_path, monkeypatch):
    from mosaicist import paths
    from mosaicist.match import _features, _prepare

    tiles = _tiles()
    geometry = Geometry(4, 8)
    expected = prepare_tiles(tiles, "lab", "flips", None, "g0-n20")
    expected_features = compute_features(tiles, geometry)
    folder = tmp_path / "cache"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.geteuid() == 0:
            # Root writes anywhere: the lock file is refused as a read-only mount would.
            def read_only(path):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

            monkeypatch.setattr(paths, "open_lock", read_only)
        prepares = count_builds(monkeypatch, _prepare, "_fill")
        computes = count_builds(monkeypatch, _features, "compute_features")
        prepared = prepare_tiles(tiles, "lab", "flips", folder, "g0-n20")
        features = cached_features(tiles, geometry, folder, 0)
        assert prepares == [1] and computes == [1]
        np.testing.assert_array_equal(prepared, expected)
        np.testing.assert_array_equal(features.bound, expected_features.bound)
        assert not [path for path in folder.iterdir() if path.name.endswith(".lock")]
    finally:
        folder.chmod(0o755)
