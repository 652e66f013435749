"""CIFAR and image-array tile sources, on small files fabricated in the official formats."""

from __future__ import annotations

import functools
import http.server
import io
import os
import pickle
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mosaicist.errors import SourceError
from mosaicist.imaging import content_hash, square_thumbnail
from mosaicist.sources import arrays as arrays_module
from mosaicist.sources import cifar as cifar_module
from mosaicist.sources import download, open_source
from mosaicist.sources.arrays import ArrayFileSource, galaxy10_source
from mosaicist.sources.base import SourceEntry, change_stamp
from mosaicist.sources.cifar import CifarSource
from mosaicist.sources.download import DatasetFile

h5py = pytest.importorskip("h5py")

CIFAR10_TRAIN_COUNTS = (3, 2, 4, 1, 2)
CIFAR10_TEST_COUNT = 3


# --------------------------------------------------------------------------- helpers


def _records(count: int, seed: int) -> np.ndarray:
    """Random CIFAR pixel records, ``(count, 3072)`` channel-major uint8."""
    return np.random.default_rng(seed).integers(0, 256, (count, 3072), dtype=np.uint8)


def _hwc(record: np.ndarray) -> np.ndarray:
    return record.reshape(3, 32, 32).transpose(1, 2, 0)


def _binary_batch(records: np.ndarray, label_bytes: int) -> bytes:
    labels = np.arange(len(records) * label_bytes, dtype=np.uint8).reshape(-1, label_bytes) % 10
    return np.concatenate([labels, records], axis=1).tobytes()


def _python_batch(records: np.ndarray, cifar100: bool = False) -> bytes:
    batch: dict[bytes, object] = {
        b"batch_label": b"training batch 1 of 5",
        b"data": records,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(records))],
    }
    if cifar100:
        batch[b"fine_labels"] = [i % 100 for i in range(len(records))]
        batch[b"coarse_labels"] = [i % 20 for i in range(len(records))]
    else:
        batch[b"labels"] = [i % 10 for i in range(len(records))]
    return pickle.dumps(batch, protocol=2)


def _cifar10_data() -> tuple[list[np.ndarray], np.ndarray]:
    train = [_records(count, seed) for seed, count in enumerate(CIFAR10_TRAIN_COUNTS)]
    return train, _records(CIFAR10_TEST_COUNT, 99)


def _write_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _cifar10_files(fmt: str) -> dict[str, bytes]:
    train, test = _cifar10_data()
    if fmt == "bin":
        files = {
            f"cifar-10-batches-bin/data_batch_{i + 1}.bin": _binary_batch(batch, 1)
            for i, batch in enumerate(train)
        }
        files["cifar-10-batches-bin/test_batch.bin"] = _binary_batch(test, 1)
        files["cifar-10-batches-bin/batches.meta.txt"] = b"airplane\n"
        return files
    files = {
        f"cifar-10-batches-py/data_batch_{i + 1}": _python_batch(batch)
        for i, batch in enumerate(train)
    }
    files["cifar-10-batches-py/test_batch"] = _python_batch(test)
    return files


def _write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _expected_cifar10() -> tuple[list[str], list[np.ndarray]]:
    train, test = _cifar10_data()
    records = [*np.concatenate(train), *test]
    total_train = sum(CIFAR10_TRAIN_COUNTS)
    ids = [f"cifar10/train/{i}" for i in range(total_train)]
    ids += [f"cifar10/test/{i}" for i in range(CIFAR10_TEST_COUNT)]
    return ids, records


def _check_cifar10(source: CifarSource) -> None:
    ids, records = _expected_cifar10()
    entries = source.scan()
    assert [entry.source_id for entry in entries] == ids
    tiles = list(source.decode(entries, 32))
    assert [tile.entry for tile in tiles] == entries
    for tile, record in zip(tiles, records, strict=True):
        assert tile.error is None
        assert tile.pixels is not None and tile.pixels.shape == (32, 32, 3)
        assert tile.pixels.dtype == np.uint8
        np.testing.assert_array_equal(tile.pixels, _hwc(record))
        assert tile.content_hash == content_hash(record.tobytes())


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1; yields (folder, base URL)."""
    root = tmp_path / "served"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root))
    )
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _md5(path: Path) -> str:
    import hashlib

    return hashlib.md5(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("fmt", ["bin", "py"])
def test_cifar10_tarball(tmp_path: Path, fmt: str) -> None:
    tarball = _write_tar(tmp_path / f"cifar-10-{fmt}.tar.gz", _cifar10_files(fmt))
    source = CifarSource("cifar10", str(tarball), cache_dir=tmp_path / "cache")
    assert source.key == f"cifar10:{tarball.absolute()}"
    _check_cifar10(source)
    stat = tarball.stat()
    entry = source.scan()[0]
    assert (entry.size, entry.mtime_ns) == (stat.st_size, change_stamp(stat))


@pytest.mark.parametrize("fmt", ["bin", "py"])
def test_cifar_content_hashes_are_those_its_tiles_decode_with(tmp_path: Path, fmt: str) -> None:
    # What the index compares where a batch file's stamp is too recent to trust: the
    # default (hashing the entry's local file) knows no CIFAR rows and gave None, so
    # every image was decoded again.
    tarball = _write_tar(tmp_path / f"cifar-10-{fmt}.tar.gz", _cifar10_files(fmt))
    source = CifarSource("cifar10", str(tarball), cache_dir=tmp_path / "cache")
    entries = source.scan()
    picked = [entries[-1], SourceEntry("cifar10/train/999999", 0, 0), *entries[:3], entries[7]]
    decoded = [tile.content_hash for tile in source.decode(picked, 32)]
    hashes = list(source.content_hashes(picked))
    assert hashes == decoded and hashes[1] is None and None not in hashes[2:]


@pytest.mark.parametrize("fmt", ["bin", "py"])
@pytest.mark.parametrize("parent", [False, True])
def test_cifar10_extracted_folder(tmp_path: Path, fmt: str, parent: bool) -> None:
    root = _write_folder(tmp_path / "data", _cifar10_files(fmt))
    inner = root / ("cifar-10-batches-bin" if fmt == "bin" else "cifar-10-batches-py")
    source = CifarSource("cifar10", str(root if parent else inner), cache_dir=tmp_path)
    _check_cifar10(source)
    entries = source.scan()
    # Each entry carries the stat of its own batch file.
    last_train = entries[sum(CIFAR10_TRAIN_COUNTS) - 1]
    batch5 = inner / ("data_batch_5.bin" if fmt == "bin" else "data_batch_5")
    assert last_train.size == batch5.stat().st_size


@pytest.mark.parametrize("fmt", ["bin", "py"])
def test_cifar100(tmp_path: Path, fmt: str) -> None:
    train, test = _records(4, 1), _records(2, 2)
    if fmt == "bin":
        files = {
            "cifar-100-binary/train.bin": _binary_batch(train, 2),
            "cifar-100-binary/test.bin": _binary_batch(test, 2),
        }
    else:
        files = {
            "cifar-100-python/train": _python_batch(train, cifar100=True),
            "cifar-100-python/test": _python_batch(test, cifar100=True),
            "cifar-100-python/meta": pickle.dumps({b"fine_label_names": [b"apple"]}, protocol=2),
        }
    tarball = _write_tar(tmp_path / "c100.tar.gz", files)
    source = open_source(f"cifar100:{tarball}", tmp_path / "cache")
    assert isinstance(source, CifarSource)
    entries = source.scan()
    assert [e.source_id for e in entries] == [
        "cifar100/train/0", "cifar100/train/1", "cifar100/train/2", "cifar100/train/3",
        "cifar100/test/0", "cifar100/test/1",
    ]
    tiles = list(source.decode(entries, 32))
    for tile, record in zip(tiles, [*train, *test], strict=True):
        np.testing.assert_array_equal(tile.pixels, _hwc(record))
        assert tile.content_hash == content_hash(record.tobytes())


def test_cifar_resize_open_original_and_unknown_entries(tmp_path: Path) -> None:
    tarball = _write_tar(tmp_path / "c10.tar.gz", _cifar10_files("bin"))
    source = CifarSource("cifar10", str(tarball), cache_dir=tmp_path)
    entries = source.scan()
    _, records = _expected_cifar10()
    tiles = list(source.decode(entries[-2:], 16))
    expected = square_thumbnail(Image.fromarray(_hwc(records[-2]), "RGB"), 16)
    assert tiles[0].pixels is not None and tiles[0].pixels.shape == (16, 16, 3)
    np.testing.assert_array_equal(tiles[0].pixels, expected)

    original = source.open_original(entries[4])
    assert original.mode == "RGB" and original.size == (32, 32)
    np.testing.assert_array_equal(np.asarray(original), _hwc(records[4]))

    # Entries rebuilt from their ids alone (no locator) still decode.
    bare = [SourceEntry(e.source_id, e.size, e.mtime_ns) for e in entries[3:6]]
    by_id = list(source.decode(bare, 32))
    np.testing.assert_array_equal(by_id[1].pixels, _hwc(records[4]))

    strangers = [SourceEntry("cifar10/train/999", 0, 0), SourceEntry("cifar100/test/0", 0, 0)]
    decoded = list(source.decode([strangers[0], entries[0], strangers[1]], 32))
    assert decoded[0].error and decoded[2].error and decoded[1].error is None
    assert decoded[0].pixels is None
    with pytest.raises(SourceError):
        source.open_original(strangers[0])


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return os.system, (f"touch {marker}",)

    files = _cifar10_files("py")
    files["cifar-10-batches-py/data_batch_3"] = pickle.dumps(
        {b"data": Exploit()}, protocol=2
    )
    root = _write_folder(tmp_path / "data", files)
    with pytest.raises(SourceError) as caught:
        CifarSource("cifar10", str(root), cache_dir=tmp_path).scan()
    message = str(caught.value)
    assert "\n" not in message and "data_batch_3" in message and "refusing" in message
    assert not marker.exists()


def test_pickle_naming_numpy_1_modules_is_read(tmp_path: Path) -> None:
    # The official files name numpy.core.multiarray (numpy < 2); numpy 2
    # writes numpy._core.multiarray. Both must be admitted.
    files = _cifar10_files("py")
    for name, data in files.items():
        legacy = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
        assert b"numpy.core.multiarray\n" in legacy
        files[name] = legacy
    root = _write_folder(tmp_path / "data", files)
    _check_cifar10(CifarSource("cifar10", str(root), cache_dir=tmp_path))


def test_pickle_of_wrong_content_is_refused(tmp_path: Path) -> None:
    files = _cifar10_files("py")
    files["cifar-10-batches-py/test_batch"] = pickle.dumps({b"data": [1, 2, 3]}, protocol=2)
    tarball = _write_tar(tmp_path / "c10.tar.gz", files)
    with pytest.raises(SourceError, match="test_batch"):
        CifarSource("cifar10", str(tarball), cache_dir=tmp_path).scan()


@pytest.mark.parametrize("problem", ["missing", "not_a_tar", "empty_folder", "ragged", "cifar100"])
def test_bad_cifar_paths(tmp_path: Path, problem: str) -> None:
    path = tmp_path / "thing"
    if problem == "not_a_tar":
        path.write_bytes(b"this is not a tarball at all")
    elif problem == "empty_folder":
        path.mkdir()
    elif problem == "ragged":
        files = _cifar10_files("bin")
        files["cifar-10-batches-bin/test_batch.bin"] += b"\x00" * 7
        _write_folder(path, files)
    elif problem == "cifar100":
        _write_folder(path, _cifar10_files("bin"))
    dataset = "cifar100" if problem == "cifar100" else "cifar10"
    # A missing copy is refused as the source is opened (before anything is indexed).
    with pytest.raises(SourceError) as caught:
        CifarSource(dataset, str(path), cache_dir=tmp_path).scan()
    message = str(caught.value)
    assert "\n" not in message and str(path) in message


def test_open_source_cifar10_downloads_from_registry(
    tmp_path: Path, http_root: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, base = http_root
    tarball = _write_tar(root / "cifar-10-binary.tar.gz", _cifar10_files("bin"))
    monkeypatch.setitem(
        download.DATASETS,
        "cifar10",
        DatasetFile(f"{base}/cifar-10-binary.tar.gz", _md5(tarball), "cifar-10-binary.tar.gz"),
    )
    cache = tmp_path / "cache"
    source = open_source("cifar10", cache)
    assert isinstance(source, CifarSource)
    assert source.key == "cifar10"
    _check_cifar10(source)
    downloaded = cache / "downloads" / "cifar-10-binary.tar.gz"
    assert downloaded.read_bytes() == tarball.read_bytes()
    # A second source finds the download in place: no server needed.
    monkeypatch.setitem(
        download.DATASETS,
        "cifar10",
        DatasetFile("http://127.0.0.1:1/gone", _md5(tarball), "cifar-10-binary.tar.gz"),
    )
    assert len(open_source("cifar10", cache).scan()) == len(_expected_cifar10()[0])


def _gzip_stream(path: Path, header: tarfile.TarInfo, data_bytes: int) -> Path:
    """A gzipped tar of one member of ``data_bytes`` zero bytes, written a step at a time."""
    import gzip

    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(header.tobuf(format=tarfile.GNU_FORMAT))
        padded = data_bytes + (-data_bytes % 512)
        step = bytes(1 << 20)
        while padded:
            out.write(step[:min(padded, len(step))])
            padded -= min(padded, len(step))
        out.write(bytes(1024))
    return path


@pytest.mark.parametrize("kind", [tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE])
def test_a_huge_extended_tar_header_is_refused_before_it_is_read(
    tmp_path: Path, kind: bytes
) -> None:
    # tarfile reads such a header whole: 40 MB of zeros, a 40 KB archive, became 80 MB
    # in memory (and 3 GB from a 3 MB archive). A limit of 1 MiB tells them apart.
    header = tarfile.TarInfo("././@LongLink")
    header.type = kind
    header.size = 40 << 20
    tarball = _gzip_stream(tmp_path / "bomb.tar.gz", header, header.size)
    with pytest.raises(SourceError, match=r"bomb\.tar\.gz: not a readable CIFAR-10 tarball "
                                          r"\(an extended header of 41,943,040 bytes is over"):
        CifarSource("cifar10", str(tarball), cache_dir=tmp_path).scan()


def test_a_sparse_tar_member_is_refused(tmp_path: Path) -> None:
    # A GNU 1.0 sparse map is read a number at a time into a list: unbounded memory.
    tarball = tmp_path / "sparse.tar"
    with tarfile.open(tarball, "w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
        info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                            "GNU.sparse.realsize": "3073", "GNU.sparse.name": info.name}
        data = b"99999999\n" + b"0\n" * 4000
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    with pytest.raises(SourceError, match="a sparse member, which a CIFAR tarball never has"):
        CifarSource("cifar10", str(tarball), cache_dir=tmp_path).scan()


def test_a_tarball_of_countless_members_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each member costs the reader a TarInfo kept for the archive's life: a 2 MB
    # archive of a million empty members took 400 MB and 40 seconds.
    monkeypatch.setattr(cifar_module, "TAR_MAX_MEMBERS", 50)
    files = {f"junk/{i}": b"" for i in range(60)} | _cifar10_files("bin")
    tarball = _write_tar(tmp_path / "many.tar.gz", files)
    with pytest.raises(SourceError, match=r"many\.tar\.gz: more than 50 members"):
        CifarSource("cifar10", str(tarball), cache_dir=tmp_path).scan()
    # The batches first: what follows them is not read at all.
    files = _cifar10_files("bin") | {f"junk/{i}": b"" for i in range(60)}
    _check_cifar10(CifarSource("cifar10", str(_write_tar(tmp_path / "ok.tar.gz", files)),
                               cache_dir=tmp_path))


@pytest.mark.parametrize("cut", [0, 1, 2, 3, 4, 10, 100, 600])
def test_a_truncated_tarball_is_one_line(tmp_path: Path, cut: int) -> None:
    # Cut after 3 bytes, tarfile's gzip reader raised TypeError (a traceback).
    whole = _write_tar(tmp_path / "whole.tar.gz", _cifar10_files("bin")).read_bytes()
    tarball = tmp_path / "cut.tar.gz"
    tarball.write_bytes(whole[:cut])
    with pytest.raises(SourceError) as caught:
        CifarSource("cifar10", str(tarball), cache_dir=tmp_path).scan()
    assert str(tarball) in str(caught.value) and "\n" not in str(caught.value)


def test_tar_links_and_traversing_names_neither_read_nor_write_outside(tmp_path: Path) -> None:
    # Nothing is extracted: a member named ../../x is only read, and a link member,
    # even to a valid batch outside the archive, is not followed.
    outside = _write_folder(tmp_path / "outside", _cifar10_files("bin"))
    files = _cifar10_files("bin")
    tarball = tmp_path / "links.tar"
    with tarfile.open(tarball, "w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            if name.endswith("data_batch_1.bin"):
                info.type = tarfile.SYMTYPE
                info.linkname = str(outside / name)
                archive.addfile(info)
            elif name.endswith("data_batch_2.bin"):
                info.type = tarfile.LNKTYPE
                info.linkname = "../../../outside/" + name
                archive.addfile(info)
            else:
                info.name = "../../" + name
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(SourceError, match="holds no complete set of CIFAR-10 batches"):
        CifarSource("cifar10", str(tarball), cache_dir=tmp_path / "cache").scan()
    assert sorted(tmp_path.rglob("*")) == before


def test_a_dataset_that_cannot_be_fetched_says_where_to_put_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mosaicist.errors import DownloadError

    monkeypatch.setenv("MOSAICIST_DOWNLOAD_URL_GALAXY10_SDSS", "http://127.0.0.1:1/g.h5")
    for spec, variable, name in (
        ("cifar100", "MOSAICIST_DOWNLOAD_URL_CIFAR100", "cifar-100-binary.tar.gz"),
        ("galaxy10-sdss", "MOSAICIST_DOWNLOAD_URL_GALAXY10_SDSS", "Galaxy10.h5"),
    ):
        monkeypatch.setenv(variable, "http://127.0.0.1:1/x")
        with pytest.raises(DownloadError) as caught:
            open_source(spec, tmp_path / "cache").scan()
        message = str(caught.value)
        assert "\n" not in message and "http://127.0.0.1:1/x" in message
        assert message.endswith(f"save it as {tmp_path / 'cache' / 'downloads' / name}")


# --------------------------------------------------------------------------- arrays


def test_tarball_members_are_read_in_bounded_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cifar_module, "_MEMBER_READ_BYTES", 1000)
    for fmt in ("bin", "py"):
        tarball = _write_tar(tmp_path / f"c10-{fmt}.tar.gz", _cifar10_files(fmt))
        _check_cifar10(CifarSource("cifar10", str(tarball), cache_dir=tmp_path))


def test_an_oversized_tarball_member_is_refused_before_it_is_read(tmp_path: Path) -> None:
    # One record more than an official batch holds: 31 MB of zeros, a 30 KB archive.
    size = 10_001 * 3073
    tarball = tmp_path / "c10.tar.gz"
    with tarfile.open(tarball, "w:gz", compresslevel=1) as archive:
        info = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
        info.size = size
        archive.addfile(info, io.BytesIO(bytes(size)))
    with pytest.raises(SourceError, match=r"data_batch_1\.bin: 30,733,073 bytes is more than "
                                          r"a CIFAR-10 train batch can be \(30,730,000 bytes\)"):
        CifarSource("cifar10", str(tarball), cache_dir=tmp_path).scan()


def test_an_oversized_batch_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    folder = _write_folder(tmp_path / "c10", _cifar10_files("py"))
    batch = folder / "cifar-10-batches-py" / "data_batch_1"
    os.truncate(batch, 64 << 20)  # sparse: no disk, but read whole it would be 64 MB
    with pytest.raises(SourceError, match="data_batch_1: 67,108,864 bytes is more than"):
        CifarSource("cifar10", str(folder), cache_dir=tmp_path).scan()


def _images(count: int, side: int = 8, seed: int = 5, channels: int | None = 3) -> np.ndarray:
    shape = (count, side, side) if channels is None else (count, side, side, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _check_array_source(source: ArrayFileSource, images: np.ndarray, prefix: str) -> None:
    entries = source.scan()
    assert [e.source_id for e in entries] == [f"{prefix}/{i}" for i in range(len(images))]
    tiles = list(source.decode(entries, images.shape[1]))
    for tile, image in zip(tiles, images, strict=True):
        assert tile.error is None
        rgb = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
        np.testing.assert_array_equal(tile.pixels, rgb)
        assert tile.content_hash == content_hash(np.ascontiguousarray(image).tobytes())


def test_h5_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = _images(11)
    path = tmp_path / "stars.h5"
    with h5py.File(path, "w") as handle:
        handle["images"] = images
        handle["ans"] = np.arange(11)
        handle["extra/grey"] = _images(3, channels=None)
    monkeypatch.setattr(arrays_module, "READ_CHUNK", 4)  # several chunks
    source = open_source(path, tmp_path)
    assert isinstance(source, ArrayFileSource)
    assert source.key == f"array:{path.absolute()}:images"
    _check_array_source(source, images, "stars")

    entries = source.scan()
    # Scattered and out-of-order entries are read correctly too.
    picked = [entries[10], entries[0], entries[5], entries[0]]
    tiles = list(source.decode(picked, 8))
    for tile, index in zip(tiles, [10, 0, 5, 0], strict=True):
        np.testing.assert_array_equal(tile.pixels, images[index])

    resized = next(source.decode(entries[:1], 4))
    assert resized.pixels is not None and resized.pixels.shape == (4, 4, 3)
    assert np.asarray(source.open_original(entries[3])).shape == (8, 8, 3)

    grey = open_source(f"{path}:extra/grey", tmp_path)
    with h5py.File(path, "r") as handle:
        _check_array_source(grey, handle["extra/grey"][()], "stars")


def test_h5_missing_key_lists_available(tmp_path: Path) -> None:
    path = tmp_path / "data.hdf5"
    with h5py.File(path, "w") as handle:
        handle["pictures"] = _images(2)
        handle["labels"] = np.arange(2)
    with pytest.raises(SourceError) as caught:
        ArrayFileSource(path, None)
    message = str(caught.value)
    assert "'images'" in message and "pictures" in message and "labels" in message
    assert str(path) in message and "\n" not in message


def test_npz_and_npy_sources(tmp_path: Path) -> None:
    images, other = _images(5, seed=1), _images(3, seed=2)
    named = tmp_path / "named.npz"
    np.savez(named, labels=np.arange(5), images=images)
    _check_array_source(ArrayFileSource(named, None), images, "named")

    first = tmp_path / "first.npz"
    np.savez_compressed(first, arr_0=other, arr_1=images)
    _check_array_source(ArrayFileSource(first, None), other, "first")
    _check_array_source(ArrayFileSource(first, "arr_1"), images, "first")
    with pytest.raises(SourceError, match="arr_0, arr_1"):
        ArrayFileSource(first, "nope")

    npy = tmp_path / "grey.npy"
    grey = _images(6, side=5, channels=None)
    np.save(npy, grey)
    source = open_source(npy, tmp_path)
    assert source.key == f"array:{npy.absolute()}"
    _check_array_source(source, grey, "grey")


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((4, 8, 8, 3), dtype=np.float32),
        np.zeros((4, 8, 8, 4), dtype=np.uint8),
        np.zeros((4, 8), dtype=np.uint8),
        np.zeros((2, 3, 8, 8, 3), dtype=np.uint8),
    ],
)
def test_bad_arrays_are_refused(tmp_path: Path, array: np.ndarray) -> None:
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(SourceError) as caught:
        ArrayFileSource(path, None)
    message = str(caught.value)
    assert str(path) in message and str(array.shape) in message and str(array.dtype) in message
    assert "\n" not in message


def test_unreadable_array_files(tmp_path: Path) -> None:
    for name in ("broken.h5", "broken.npz", "broken.npy"):
        path = tmp_path / name
        path.write_bytes(b"garbage, not an array file")
        with pytest.raises(SourceError, match=name):
            ArrayFileSource(path, None)
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(SourceError, match="objects.npy"):
        ArrayFileSource(objects, None)


def _h5_with_links(tmp_path: Path) -> Path:
    path = tmp_path / "links.h5"
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as handle:
        handle["images"] = _images(3, seed=9)
    with h5py.File(path, "w") as handle:
        handle["images"] = _images(3)
        handle["alias"] = h5py.SoftLink("/images")
        handle["dangling"] = h5py.SoftLink("/nothing")
        handle["loop"] = h5py.SoftLink("/loop")
        handle["elsewhere"] = h5py.ExternalLink(str(other), "/images")
        handle["gone"] = h5py.ExternalLink(str(tmp_path / "missing.h5"), "/images")
        handle.create_group("group")["through"] = h5py.SoftLink("/elsewhere")
        secret = tmp_path / "secret.txt"
        secret.write_bytes(bytes(range(256)))
        handle.create_dataset("external", shape=(1, 4, 4, 3), dtype=np.uint8,
                              external=[(str(secret), 0, 48)])
        layout = h5py.VirtualLayout(shape=(3, 8, 8, 3), dtype=np.uint8)
        layout[:] = h5py.VirtualSource(str(other), "images", shape=(3, 8, 8, 3))
        handle.create_virtual_dataset("virtual", layout)
    return path


@pytest.mark.parametrize(("key", "reason"), [
    ("dangling", "a soft link points to nothing"),
    ("loop", "more than 32 soft links"),
    ("elsewhere", "'elsewhere' is a link to another file"),
    ("gone", "'gone' is a link to another file"),
    ("group/through", "'elsewhere' is a link to another file"),
    ("external", "keeps its data in external files"),
    ("virtual", "is a virtual dataset"),
])
def test_h5_links_and_storage_outside_the_file_are_refused(
    tmp_path: Path, key: str, reason: str
) -> None:
    path = _h5_with_links(tmp_path)
    with pytest.raises(SourceError) as caught:
        ArrayFileSource(path, key)
    message = str(caught.value)
    assert message.startswith(f"{path}:{key}: ") and reason in message and "\n" not in message


def test_h5_soft_link_inside_the_file_is_followed(tmp_path: Path) -> None:
    path = _h5_with_links(tmp_path)
    _check_array_source(ArrayFileSource(path, "alias"), _images(3), "links")


def test_h5_corrupt_chunk_skips_only_its_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = _images(40)
    path = tmp_path / "chunked.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("images", data=images, chunks=(2, 8, 8, 3), compression="gzip")
    with h5py.File(path, "r") as handle:
        chunk = handle["images"].id.get_chunk_info(5)  # images 10 and 11
    data = bytearray(path.read_bytes())
    data[chunk.byte_offset:chunk.byte_offset + chunk.size] = b"\xff" * chunk.size
    path.write_bytes(bytes(data))
    source = ArrayFileSource(path, None)
    tiles = list(source.decode(source.scan(), 8))
    assert [index for index, tile in enumerate(tiles) if tile.error] == [10, 11]
    assert "chunked.h5:images[10]" in str(tiles[10].error)
    for index, tile in enumerate(tiles):
        if index not in (10, 11):
            np.testing.assert_array_equal(tile.pixels, images[index])
    with pytest.raises(SourceError, match=r"images\[11\]"):
        source.open_original(source.scan()[11])


def test_h5_reads_are_bounded_in_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = _images(10)
    path = tmp_path / "blocks.h5"
    with h5py.File(path, "w") as handle:
        handle["images"] = images
    monkeypatch.setattr(arrays_module, "READ_BLOCK_BYTES", 3 * images[0].nbytes)
    source = ArrayFileSource(path, None)
    reads: list[int] = []
    read = source._read
    monkeypatch.setattr(source, "_read", lambda store, at: reads.append(len(at)) or read(store, at))
    _check_array_source(source, images, "blocks")
    assert reads == [3, 3, 3, 1]


def test_images_over_the_tile_limit_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.npy"
    np.save(path, _images(2, side=8))
    monkeypatch.setattr(arrays_module, "TILE_MAX_PIXELS", 63)
    with pytest.raises(SourceError, match="8x8 = 64 pixels are over the limit of 63"):
        ArrayFileSource(path, None)


def _npz_declaring(path: Path, shape: tuple[int, ...], payload: bytes, compression: int) -> Path:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w", compression) as archive:
        archive.writestr("images.npy", header.getvalue() + payload)
    return path


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_npz_header_is_checked_against_the_member_before_allocating(
    tmp_path: Path, compression: int
) -> None:
    # Declares a terabyte in a member of 192 bytes: refused from the header.
    path = _npz_declaring(tmp_path / "liar.npz", (10**12 // 192, 8, 8, 3), bytes(192),
                          compression)
    with pytest.raises(SourceError, match="liar.npz:images: the header declares"):
        ArrayFileSource(path, None)


def test_npz_stored_members_are_read_on_demand_and_compressed_ones_capped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = _images(6)
    stored, compressed = tmp_path / "stored.npz", tmp_path / "packed.npz"
    np.savez(stored, images=images)
    np.savez_compressed(compressed, images=images)
    source = ArrayFileSource(stored, None)
    _check_array_source(source, images, "stored")
    # Read from the file on demand, never loaded whole.
    assert source._array is None
    store, handle = source._open_store()
    assert isinstance(store, arrays_module._FileImages)
    handle.close()
    monkeypatch.setattr(arrays_module, "NPZ_LOAD_MAX_BYTES", images.nbytes - 1)
    source = ArrayFileSource(compressed, None)
    with pytest.raises(SourceError, match="packed.npz:images: a compressed member of"):
        list(source.decode(source.scan(), 8))
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, images=np.array([{"a": 1}], dtype=object))
    with pytest.raises(SourceError, match="found shape"):
        ArrayFileSource(pickled, None)


def test_galaxy10_source_downloads(
    tmp_path: Path, http_root: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, base = http_root
    images = _images(3, side=12)
    served = root / "Galaxy10.h5"
    with h5py.File(served, "w") as handle:
        handle["images"] = images
        handle["ans"] = np.arange(3)
    monkeypatch.setitem(
        download.DATASETS,
        "galaxy10-sdss",
        DatasetFile(f"{base}/Galaxy10.h5", _md5(served), "Galaxy10.h5"),
    )
    source = galaxy10_source("sdss", cache_dir=tmp_path / "cache")
    assert source.key == "galaxy10-sdss"
    _check_array_source(source, images, "galaxy10-sdss")
    assert (tmp_path / "cache" / "downloads" / "Galaxy10.h5").is_file()
    assert open_source("galaxy10-sdss", tmp_path / "cache").key == "galaxy10-sdss"


def test_galaxy10_without_h5py_fails_before_downloading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The file is gigabytes of HDF5: without h5py, say so before fetching it.
    monkeypatch.setitem(sys.modules, "h5py", None)  # 'import h5py' raises ImportError

    def no_download(*args: object, **kwargs: object) -> Path:
        raise AssertionError("downloaded although h5py is missing")

    monkeypatch.setattr(arrays_module, "fetch_dataset", no_download)
    for spec in ("galaxy10", "galaxy10-sdss"):
        with pytest.raises(SourceError) as caught:
            open_source(spec, tmp_path / "cache")
        message = str(caught.value)
        assert "h5py" in message and '".[h5]"' in message and "\n" not in message
    assert not (tmp_path / "cache" / "downloads").exists()


def test_array_and_cifar_keys_are_the_same_for_every_spelling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 'a/../x' and 'x' are one file: one key, so one index (not decoded twice).
    np.save(tmp_path / "grey.npy", _images(2, side=5, channels=None))
    np.savez(tmp_path / "named.npz", images=_images(2))
    tarball = _write_tar(tmp_path / "c10.tar.gz", _cifar10_files("bin"))
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path)
    for name, expected in (
        ("grey.npy", f"array:{tmp_path / 'grey.npy'}"),
        ("named.npz", f"array:{tmp_path / 'named.npz'}:images"),
        ("named.npz:images", f"array:{tmp_path / 'named.npz'}:images"),
    ):
        for spelling in (name, f"a/../{name}", f"{tmp_path}/a/../{name}"):
            assert open_source(spelling, tmp_path / "cache").key == expected, spelling
    for spelling in ("c10.tar.gz", "a/../c10.tar.gz", "./a/../c10.tar.gz"):
        source = open_source(f"cifar10:{spelling}", tmp_path / "cache")
        assert source.key == f"cifar10:{tarball}", spelling


def test_dataset_tiles_of_an_aspect_with_windows_and_signatures(tmp_path: Path) -> None:
    from mosaicist.crop import Window, window_size
    from mosaicist.dedupe import signature
    from mosaicist.imaging import thumbnail

    tarball = _write_tar(tmp_path / "c10.tar.gz", _cifar10_files("bin"))
    source = CifarSource("cifar10", str(tarball), cache_dir=tmp_path)
    assert source.image_size() == (32, 32)
    entries = source.scan()
    _, records = _expected_cifar10()
    square = next(source.decode(entries[:1], 32))
    assert square.window == Window(0, 0, 32, 32)
    assert square.signature[:2] == signature(_hwc(records[0]))  # of the photo's centre square
    for crop in ("centre", "subject"):
        wide = list(source.decode(entries[:2], 24, (3, 2), crop))
        for tile, record in zip(wide, records[:2], strict=True):
            assert tile.pixels.shape == (16, 24, 3)
            assert (tile.window.width, tile.window.height) == window_size(32, 32, (3, 2))
            expected = thumbnail(Image.fromarray(_hwc(record)), 24, (3, 2), tile.window)
            np.testing.assert_array_equal(tile.pixels, expected)
        # A photo signs the same whatever the tiles' shape and crop.
        assert wide[0].signature == square.signature
    images = _images(3, side=12)
    np.save(tmp_path / "tiles.npy", images)
    array = ArrayFileSource(tmp_path / "tiles.npy")
    tall = list(array.decode(array.scan(), 8, (2, 3), "subject"))
    assert [tile.pixels.shape for tile in tall] == [(12, 8, 3)] * 3
    assert all(tile.window.height == 12 and tile.window.width == 8 for tile in tall)


@pytest.mark.parametrize("spec", ["~no-such-user-of-mosaicist/photos",
                                  "~no-such-user-of-mosaicist/tiles.npy"])
def test_a_home_of_no_user_is_a_source_not_found(spec):
    # Path.expanduser raised "RuntimeError: Could not determine home directory."
    from mosaicist.errors import MosaicistError
    from mosaicist.sources import open_source

    with pytest.raises(MosaicistError, match="no-such-user-of-mosaicist"):
        open_source(spec, None)


def test_an_array_image_read_that_may_pass_is_marked(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # An EIO on one image of an .npy/.h5 file was remembered like a damaged image, and
    # the library skipped that image for good; a damaged one stays remembered.
    import errno

    images = _images(6)
    path = tmp_path / "stars.npy"
    np.save(path, images)
    source = ArrayFileSource(path, None)

    class Flaky:
        def __getitem__(self, position: int) -> np.ndarray:
            if position == 2:
                raise OSError(errno.EIO, "Input/output error")
            if position == 4:
                raise ValueError("a damaged chunk")
            return images[position]

    def read_block_of_flaky(store, positions):  # the block fails: image by image
        return ArrayFileSource._read_block(source, Flaky(), positions)

    monkeypatch.setattr(source, "_read", lambda store, positions: (_ for _ in ()).throw(
        OSError(errno.EIO, "Input/output error")))
    monkeypatch.setattr(source, "_read_block", read_block_of_flaky)
    tiles = list(source.decode(source.scan(), 8))
    assert [tile.error is not None for tile in tiles] == [False, False, True, False, True, False]
    assert tiles[2].transient and "Input/output error" in tiles[2].error
    assert not tiles[4].transient


# ------------------------------------------------------------ files that lie or change


def _in_a_child(script: str, *arguments: str) -> str:
    """Run ``script`` in a child process (a bus error would kill pytest); return its output."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", script, *arguments],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr)  # -7: SIGBUS
    return done.stdout


_DECODE_AFTER_A_CUT = """
import sys
from pathlib import Path
from mosaicist.sources.arrays import ArrayFileSource
source = ArrayFileSource(Path(sys.argv[1]))
entries = source.scan()
decoding = source.decode(entries, 8)
tiles = [] if sys.argv[3] == "before" else [next(decoding)]
with open(sys.argv[1], 'r+b') as handle:
    handle.truncate(int(sys.argv[2]))
try:
    tiles += decoding
except Exception as error:
    print(type(error).__name__, error)
else:
    print([tile.error is None for tile in tiles])
    print(next(tile.error for tile in tiles if tile.error))
"""


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("kind", ["npy", "npz"])
def test_an_array_file_cut_short_after_it_was_opened_fails_its_images_not_the_process(
    tmp_path: Path, kind: str, order: str
) -> None:
    # .npy files and stored .npz members were memory mapped: saved again in place
    # (truncated) while mosaicist read them, the process died of a bus error; once
    # C-ordered files were read on demand, Fortran-ordered ones were still mapped.
    images = np.asarray(_images(2000, side=16), order=order)  # 1.5 MB: whole pages cut
    path = tmp_path / f"tiles.{kind}"
    if kind == "npy":
        np.save(path, images)
    else:
        np.savez(path, images=images)
    # Cut while the images are read: those past the end fail, one by one.
    flags, message = _in_a_child(_DECODE_AFTER_A_CUT, str(path), "300000", "during").splitlines()
    assert flags.startswith("[True, ") and flags.endswith(", False]")
    assert message.startswith(f"cannot read {path}") and "cut short" in message
    # Cut before: the file as it is now is refused, in one line.
    np.save(path, images) if kind == "npy" else np.savez(path, images=images)
    output = _in_a_child(_DECODE_AFTER_A_CUT, str(path), "300000", "before")
    assert output.startswith(f"SourceError {path}") and len(output.splitlines()) == 1


def test_a_npy_declaring_more_than_it_holds_is_one_line_without_warnings(
    tmp_path: Path
) -> None:
    import warnings

    cut = tmp_path / "cut.npy"
    np.save(cut, _images(100))
    cut.write_bytes(cut.read_bytes()[:300])
    huge = tmp_path / "huge.npy"
    header = io.BytesIO()
    # Its byte count overflows 64 bits: numpy warned on stderr before failing.
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (2**62, 8, 8, 3)})
    huge.write_bytes(header.getvalue() + bytes(100))
    for path in (cut, huge):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(SourceError) as caught:
                ArrayFileSource(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: the header declares")
        assert "but the file holds" in message


def test_a_fortran_ordered_npy_is_read(tmp_path: Path) -> None:
    images = _images(5)
    path = tmp_path / "fortran.npy"
    np.save(path, np.asfortranarray(images))
    _check_array_source(ArrayFileSource(path), images, "fortran")


def test_array_reads_of_scattered_runs(tmp_path: Path) -> None:
    images = _images(20)
    path = tmp_path / "runs.npy"
    np.save(path, images)
    source = ArrayFileSource(path)
    store, handle = source._open_store()
    try:
        picked = np.array([0, 1, 2, 7, 9, 10, 19])
        np.testing.assert_array_equal(store[picked], images[picked])
        np.testing.assert_array_equal(store[3:6], images[3:6])
        np.testing.assert_array_equal(store[np.int64(4)], images[4])
        assert store[np.array([], dtype=np.int64)].shape == (0, 8, 8, 3)
        with pytest.raises(IndexError):
            store[20]
    finally:
        handle.close()


@pytest.mark.parametrize("layout", ["contiguous", "chunked", "partly written"])
def test_an_h5_dataset_declaring_images_it_never_stored_is_refused(
    tmp_path: Path, layout: str
) -> None:
    # A 1.4 kB file declaring a billion images: the scan listed them all and ran out
    # of memory (or, smaller, made black tiles from the fill value).
    path = tmp_path / "empty.h5"
    with h5py.File(path, "w") as handle:
        if layout == "contiguous":
            handle.create_dataset("images", shape=(10**9, 8, 8, 3), dtype=np.uint8)
        elif layout == "chunked":
            handle.create_dataset("images", shape=(10**9, 8, 8, 3), dtype=np.uint8,
                                  chunks=(64, 8, 8, 3), compression="gzip")
        else:
            dataset = handle.create_dataset("images", shape=(256, 8, 8, 3), dtype=np.uint8,
                                            chunks=(64, 8, 8, 3))
            dataset[:100] = _images(100)
    with pytest.raises(SourceError) as caught:
        ArrayFileSource(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:images: ") and "never written" in message


def test_a_compressed_h5_dataset_written_whole_is_read(tmp_path: Path) -> None:
    images = _images(130)
    path = tmp_path / "packed.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("images", data=images, chunks=(64, 8, 8, 3), compression="gzip")
    _check_array_source(ArrayFileSource(path), images, "packed")


def _non_utf8(directory: Path, name: bytes) -> Path:
    path = Path(os.fsdecode(bytes(directory) + b"/" + name))
    try:
        path.touch()
        path.unlink()
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    return path


def test_array_and_cifar_files_of_non_utf8_names_have_text_keys_and_ids(tmp_path: Path) -> None:
    # The index hashes and stores the key as UTF-8: a name with a Latin-1 byte was a
    # UnicodeEncodeError traceback from 'mosaicist index'.
    from mosaicist.library import TileLibrary

    images = _images(3)
    npy = _non_utf8(tmp_path, b"caf\xe9.npy")
    np.save(npy, images)
    source = open_source(str(npy), tmp_path / "cache")
    assert source.key == f"array:{tmp_path}/caf\\xe9.npy" and source.name == "caf\\xe9.npy"
    _check_array_source(source, images, "caf\\xe9")
    library = TileLibrary.open(str(npy), match_px=8, cache_dir=tmp_path / "cache")
    assert len(library) == 3

    tarball = _write_tar(_non_utf8(tmp_path, b"c\xe9.tar.gz"), _cifar10_files("bin"))
    cifar = open_source(f"cifar10:{tarball}", tmp_path / "cache")
    assert cifar.key == f"cifar10:{tmp_path}/c\\xe9.tar.gz"
    cifar.key.encode("utf-8")
    _check_cifar10(cifar)


def test_an_extracted_cifar_batch_cut_short_after_it_was_read_is_no_crash(
    tmp_path: Path
) -> None:
    # Memory mapped, a batch file cut short later (extracted again over it) killed the
    # process with a bus error on the next read of the source.
    folder = _write_folder(tmp_path / "extracted", _cifar10_files("bin"))
    script = """
import sys
from pathlib import Path
from mosaicist.sources.cifar import CifarSource
source = CifarSource("cifar10", sys.argv[1], cache_dir=Path(sys.argv[1]))
entries = source.scan()
for batch in (Path(sys.argv[1]) / "cifar-10-batches-bin").iterdir():
    batch.write_bytes(b"")
print(sum(tile.error is None for tile in source.decode(entries, 32)))
"""
    total = sum(CIFAR10_TRAIN_COUNTS) + CIFAR10_TEST_COUNT
    assert _in_a_child(script, str(folder)).split() == [str(total)]


@pytest.mark.parametrize("split", ["test", "train"])
def test_cifar10_colon_a_split_says_that_splits_cannot_be_chosen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, split: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SourceError) as caught:  # as the source is opened
        open_source(f"cifar10:{split}", tmp_path / "cache").scan()
    message = str(caught.value)
    assert message.startswith(f"cifar10:{split}: ") and "no split can be chosen" in message
    assert "--limit 50000" in message and "\n" not in message


def test_an_npz_whose_first_array_is_no_images_names_the_others(tmp_path: Path) -> None:
    # Said only that arr_0 (labels, saved first) was no image array.
    path = tmp_path / "labelled.npz"
    np.savez(path, np.arange(5), _images(5))
    with pytest.raises(SourceError) as caught:
        ArrayFileSource(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:arr_0: expected an N x H x W x 3")
    assert message.endswith("the file also holds arr_1: name the images as labelled.npz:KEY")
    _check_array_source(ArrayFileSource(path, "arr_1"), _images(5), "labelled")
    with pytest.raises(SourceError) as caught:
        ArrayFileSource(path, "arr_0")  # named: no hint
    assert "also holds" not in str(caught.value)


@pytest.mark.parametrize(("array", "hint"), [
    (np.zeros((4, 3, 8, 8), dtype=np.uint8), "(channels first? save array.transpose(0, 2, 3, 1))"),
    (np.zeros((4, 8, 8, 4), dtype=np.uint8), "(RGBA? save array[..., :3])"),
    (np.zeros((4, 8, 8, 3), dtype=np.float32), "(floats? scale them to 0-255"),
    (np.zeros((4, 8, 8), dtype=np.int16), "(save array.astype(numpy.uint8) if its values"),
    (np.zeros((4, 8, 8, 3), dtype=bool), "(save array.astype(numpy.uint8) if its values"),
    (np.zeros((4, 8), dtype=np.uint8), None),
    # One RGB photo saved as H x W x 3 read as 16 grey tiles 3 px wide, a grey mosaic.
    (np.zeros((16, 16, 3), dtype=np.uint8), "(one colour picture? save array[numpy.newaxis]"),
    (np.zeros((16, 16, 4), dtype=np.uint8), "(one RGBA picture? save array[numpy.newaxis, "),
])
def test_a_refused_array_says_what_it_looks_like(
    tmp_path: Path, array: np.ndarray, hint: str | None
) -> None:
    path = tmp_path / "odd.npy"
    np.save(path, array)
    with pytest.raises(SourceError) as caught:
        ArrayFileSource(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: expected an N x H x W x 3")
    assert (hint in message) if hint else message.endswith(f"dtype {array.dtype}")


@pytest.mark.parametrize("dataset", ["cifar10", "galaxy10-sdss"])
def test_a_bad_copy_in_the_download_cache_says_to_delete_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dataset: str
) -> None:
    # A file saved there by hand (as a failed download advises) is used without a
    # checksum; a broken one failed every run, without saying how to get past it.
    spec = download.DATASETS[dataset]
    monkeypatch.setitem(download.DATASETS, dataset,
                        DatasetFile("http://127.0.0.1:1/gone", spec.md5, spec.filename))
    copy = tmp_path / "cache" / "downloads" / spec.filename
    copy.parent.mkdir(parents=True)
    copy.write_bytes(b"half a file")
    with pytest.raises(SourceError) as caught:
        open_source(dataset, tmp_path / "cache").scan()
    message = str(caught.value)
    assert message.startswith(str(copy)) and message.endswith("; delete it to download it again")
    assert "\n" not in message


def test_specs_that_read_as_a_dataset_with_a_location_say_how_to_give_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 'galaxy10:FILE' was "not a known dataset (..., galaxy10, ...)", 'cifar10 PATH' (a
    # space for the colon) the same, and 'cifar10 ' with its space unseen in the message.
    monkeypatch.chdir(tmp_path)
    cases = {
        "galaxy10:copy.h5": "galaxy10:copy.h5: galaxy10 takes no :PATH; give a local copy "
                            "of it as the path of its .h5 file",
        "Galaxy10-SDSS:x": "Galaxy10-SDSS:x: galaxy10-sdss takes no :PATH",
        "cifar10 data/cifar": "cifar10 data/cifar: no such folder or file; a local copy of "
                              "cifar10 is given as cifar10:PATH",
        "cifar10 ": "'cifar10 ': no such folder or file; a local copy of cifar10 is given as "
                    "cifar10:PATH",
        " ": "' ': no such folder or file, and not a known dataset (cifar10, cifar100, "
             "galaxy10, galaxy10-sdss, galaxy10-decals)",
        "cifar10x": "cifar10x: no such folder or file, and not a known dataset",
    }
    for spec, expected in cases.items():
        with pytest.raises(SourceError) as caught:
            open_source(spec, tmp_path / "cache")
        assert str(caught.value).startswith(expected), (spec, str(caught.value))


def test_a_cifar_location_that_is_a_pipe_is_not_said_to_be_missing(tmp_path: Path) -> None:
    # 'cifar10:/dev/null' said "/dev/null: no such CIFAR-10 tarball or folder".
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes here")
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    with pytest.raises(SourceError, match=r"pipe: not a CIFAR-10 tarball or folder \(a special"):
        open_source(f"cifar10:{pipe}", tmp_path / "cache").scan()


def test_a_folder_named_as_a_dataset_spec_is_named_but_the_dataset_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mosaicist.sources import shadowed_folder

    monkeypatch.chdir(tmp_path)
    for name in ("cifar10", "galaxy10-decals", "cifar10:copy"):
        assert shadowed_folder(name) is None
        (tmp_path / name).mkdir()
        assert shadowed_folder(name) == Path(name)
    assert shadowed_folder("./cifar10") is None and shadowed_folder("CIFAR10") is None
    (tmp_path / "galaxy10:copy").mkdir()  # galaxy10:PATH is no dataset spec: the folder is read
    assert shadowed_folder("galaxy10:copy") is None
    (tmp_path / "copy").mkdir()  # a missing copy is refused as the source is opened
    source = open_source("cifar10:copy", tmp_path / "cache")
    assert isinstance(source, CifarSource) and source.key == f"cifar10:{tmp_path / 'copy'}"


@pytest.mark.parametrize("read_bytes", [8 << 20, 50])  # many planes a read, and one
@pytest.mark.parametrize("channels", [3, None, 1])
def test_a_fortran_ordered_npy_gives_the_c_ordered_files_tiles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_bytes: int, channels: int | None
) -> None:
    monkeypatch.setattr(arrays_module, "_FORTRAN_READ_BYTES", read_bytes)
    monkeypatch.setattr(arrays_module, "READ_CHUNK", 7)  # blocks that start inside the array
    images = _images(23, side=6, channels=channels)
    c_path, f_path = tmp_path / "c.npy", tmp_path / "f.npy"
    np.save(c_path, images)
    np.save(f_path, np.asfortranarray(images))
    ordered, fortran = ArrayFileSource(c_path), ArrayFileSource(f_path)
    store, handle = fortran._open_store()
    assert isinstance(store, arrays_module._FileImages)  # not a memory map
    handle.close()
    for picked in (list(range(23)), [22, 0, 5, 5, 13, 1]):
        expected = list(ordered.decode([ordered.scan()[i] for i in picked], 6))
        got = list(fortran.decode([fortran.scan()[i] for i in picked], 6))
        assert [tile.error for tile in got] == [None] * len(picked)
        for one, other in zip(got, expected, strict=True):
            np.testing.assert_array_equal(one.pixels, other.pixels)
            assert one.content_hash == other.content_hash
    entry = fortran.scan()[17]
    np.testing.assert_array_equal(np.asarray(fortran.open_original(entry)),
                                  np.asarray(ordered.open_original(ordered.scan()[17])))
