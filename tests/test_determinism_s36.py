"""The same photos give the same index however it was reached (session 36).

Each test indexes one small set of photos two ways (files created in
another order with other modification times, at once or bit by bit, by one
or by two decoding processes, through another spelling of the folder, under
another locale and hash seed) and compares what a match reads: the source
ids in library order, the tile pixels, and the manifest's rows less the
columns that say where and when (slot, change stamp).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
from conftest import make_jpeg_photos

from mosaicist.library import TileLibrary
from mosaicist.sources.folder import FolderSource

#: Every setting the tests index with: subject windows of non-square tiles, so that
#: each photo's crop window (chosen from its pixels) is part of what is compared.
SETTINGS = {"aspect": "3:2", "crop": "subject", "colour_profiles": "convert"}


def _indexed(folder: Path, cache: Path, workers: int = 1) -> TileLibrary:
    return TileLibrary.open(FolderSource(folder, workers=workers), 8, cache_dir=cache,
                            **SETTINGS)  # type: ignore[arg-type]


def _state(library: TileLibrary) -> tuple[list[str], bytes, list[tuple]]:
    """What the library serves: ids in order, pixels, and its rows less slot and stamp."""
    with sqlite3.connect(library.directory / "manifest.sqlite") as connection:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(tiles)")
                   if row[1] not in ("slot", "mtime_ns")]
        rows = connection.execute(
            f"SELECT {', '.join(columns)} FROM tiles ORDER BY position").fetchall()
    connection.close()
    return list(library.source_ids), np.ascontiguousarray(library.tiles).tobytes(), rows


def _copy(photos: Path, names: list[str], folder: Path, stamp_base: int | None = None) -> Path:
    """Copy ``names`` of ``photos`` into ``folder`` in the given order, optionally restamped."""
    folder.mkdir(parents=True, exist_ok=True)
    for offset, name in enumerate(names):
        shutil.copyfile(photos / name, folder / name)
        if stamp_base is not None:
            stamp = (stamp_base + 7919 * offset) * 10**6
            os.utime(folder / name, ns=(stamp, stamp))
    return folder


def test_creation_order_and_modification_times_do_not_change_the_index(tmp_path):
    photos = make_jpeg_photos(tmp_path / "photos", count=10)
    names = sorted(os.listdir(photos))
    forward = _copy(photos, names, tmp_path / "forward")
    # Created last to first, dated from 2001 on: the listing's order and the stamps differ.
    backward = _copy(photos, names[::-1], tmp_path / "backward", stamp_base=10**9)

    first = _state(_indexed(forward, tmp_path / "c1"))
    second = _state(_indexed(backward, tmp_path / "c2"))

    assert first[0] == names
    assert first == second


def test_an_index_built_bit_by_bit_is_the_index_built_at_once(tmp_path):
    photos = make_jpeg_photos(tmp_path / "photos", count=12)
    names = sorted(os.listdir(photos))
    at_once = _state(_indexed(_copy(photos, names, tmp_path / "whole"), tmp_path / "c1"))

    folder = _copy(photos, names[::2], tmp_path / "grown")
    cache = tmp_path / "c2"
    _indexed(folder, cache)
    _copy(photos, names[1::2], folder)
    assert _state(_indexed(folder, cache)) == at_once
    # Some removed (the last among them), indexed, then put back.
    for name in names[3:6] + names[-1:]:
        (folder / name).unlink()
    assert _indexed(folder, cache).source_ids == names[:3] + names[6:-1]
    _copy(photos, names[3:6] + names[-1:], folder)
    assert _state(_indexed(folder, cache)) == at_once


def test_two_decoding_processes_index_as_one_does(tmp_path):
    # Over 16 photos: fewer are decoded in this process whatever the workers.
    photos = make_jpeg_photos(tmp_path / "photos", count=20)

    assert _state(_indexed(photos, tmp_path / "c1", workers=1)) == \
        _state(_indexed(photos, tmp_path / "c2", workers=2))


def test_names_that_differ_only_by_normalisation_or_case_are_four_photos(tmp_path):
    # Linux keeps "café" in its two Unicode forms, and "a.jpg" beside "A.JPG", as four
    # files: each is its own tile, under its own name, not one photo twice.
    photos = make_jpeg_photos(tmp_path / "photos", count=4)
    sources = sorted(os.listdir(photos))
    names = [unicodedata.normalize("NFC", "café.jpg"), unicodedata.normalize("NFD", "café.jpg"),
             "a.jpg", "A.JPG"]
    odd = tmp_path / "odd"
    odd.mkdir()
    for source, name in zip(sources, names, strict=True):
        shutil.copyfile(photos / source, odd / name)

    library = _indexed(odd, tmp_path / "c1")
    plain = _indexed(photos, tmp_path / "c2")

    assert sorted(library.source_ids) == sorted(names) and len(set(library.source_ids)) == 4
    for source, name in zip(sources, names, strict=True):
        assert np.array_equal(library.tiles[library.source_ids.index(name)],
                              plain.tiles[plain.source_ids.index(source)]), name


def test_relative_absolute_and_linked_spellings_index_alike(tmp_path, monkeypatch):
    photos = make_jpeg_photos(tmp_path / "photos", count=6)
    link = tmp_path / "link"
    link.symlink_to(photos, target_is_directory=True)
    expected = _state(_indexed(photos, tmp_path / "c1"))

    monkeypatch.chdir(tmp_path)
    assert _state(_indexed(Path("photos"), tmp_path / "c2")) == expected
    assert _state(_indexed(Path("./sub/../photos/"), tmp_path / "c3")) == expected
    # Through the link, in a cache of its own (decoded, not taken from the first index).
    assert _state(_indexed(link, tmp_path / "c4")) == expected


def test_locale_time_zone_thread_counts_and_hash_seed_do_not_change_the_index(tmp_path):
    photos = make_jpeg_photos(tmp_path / "photos", count=17)  # decoded by a pool of two
    names = sorted(os.listdir(photos))
    shutil.copyfile(photos / names[0], photos / unicodedata.normalize("NFD", "é.jpg"))
    expected = _state(_indexed(photos, tmp_path / "c1"))
    script = (
        "import sys, hashlib, pickle\n"
        "from pathlib import Path\n"
        "sys.path.insert(0, sys.argv[3])\n"
        "from test_determinism_s36 import _indexed, _state\n"
        "state = _state(_indexed(Path(sys.argv[1]), Path(sys.argv[2]), workers=2))\n"
        "print(hashlib.sha256(pickle.dumps(state)).hexdigest())\n"
    )
    environment = {**os.environ, "LANG": "C", "LC_ALL": "C", "TZ": "Asia/Kolkata",
                   "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2",
                   "PYTHONHASHSEED": "12345", "MOSAICIST_THREADS": "2"}
    ran = subprocess.run([sys.executable, "-c", script, str(photos), str(tmp_path / "c2"),
                          str(Path(__file__).parent)], env=environment, capture_output=True,
                         text=True, timeout=120)

    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == hashlib.sha256(pickle.dumps(expected)).hexdigest()
