"""FolderSource: scanning order, ignored files, bad files reported and skipped, odd names."""

from __future__ import annotations

import errno
import faulthandler
import gc
import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import BAD_FILES, GOOD_FILES, make_colour_folder, make_odd_folder
from PIL import Image

from mosaicist import imaging
from mosaicist.cli import main
from mosaicist.errors import SourceError
from mosaicist.imaging import decode_tile_bytes
from mosaicist.library import TileLibrary
from mosaicist.sources import SourceEntry, open_source
from mosaicist.sources import folder as folder_module
from mosaicist.sources.base import name_to_text, text_to_name
from mosaicist.sources.folder import FolderSource


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    return make_odd_folder(tmp_path_factory.mktemp("odd"))


def test_scan_order_and_ignored_files(odd):
    ids = [entry.source_id for entry in FolderSource(odd).scan()]
    assert ids == sorted(GOOD_FILES + list(BAD_FILES))
    assert not any(part.startswith(".") for source_id in ids for part in source_id.split("/"))
    assert not any(source_id.startswith("loop/") for source_id in ids)


def test_scan_sorts_by_relative_posix_path(tmp_path):
    for name in ("b.png", "a/z.png", "a-b.png", "A.png", "a/b/c.png"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        make_colour_folder(tmp_path / "_", 1)
        (tmp_path / "_" / "t000.png").rename(path)
    ids = [entry.source_id for entry in FolderSource(tmp_path).scan()]
    assert ids == sorted(["b.png", "a/z.png", "a-b.png", "A.png", "a/b/c.png"])


def test_not_a_folder(tmp_path):
    with pytest.raises(SourceError, match="not a folder"):
        FolderSource(tmp_path / "missing")


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_files_are_reported_and_skipped(odd, tmp_path, workers, monkeypatch):
    monkeypatch.setattr("mosaicist.sources.folder.DECODE_BATCH", 4)
    source = FolderSource(odd, workers=workers)
    library = TileLibrary.open(source, 8, cache_dir=tmp_path / "cache")
    assert library.source_ids == GOOD_FILES
    assert library.tiles.shape == (len(GOOD_FILES), 8, 8, 3)
    failed = dict(library.stats.failed)
    assert sorted(failed) == sorted(BAD_FILES)
    for name, word in BAD_FILES.items():
        assert word in failed[name], (name, failed[name])
    for position, name in enumerate(library.source_ids):
        expected = decode_tile_bytes((odd / name).read_bytes(), 8)
        np.testing.assert_array_equal(library.tiles[position], expected)
    # Failures are remembered, not decoded again, and still reported.
    again = TileLibrary.open(FolderSource(odd, workers=workers), 8, cache_dir=tmp_path / "cache")
    assert again.stats.decoded == 0
    assert sorted(dict(again.stats.failed)) == sorted(BAD_FILES)


def test_decoding_workers_are_forked_with_the_parents_objects_frozen(odd, tmp_path,
                                                                   monkeypatch):
    """A worker never collects garbage it inherited (a finaliser waiting on the parent's
    threads hung it: a PyAV stream left from an earlier batch)."""
    def watch(parent_pid: int) -> None:
        (tmp_path / f"frozen-{os.getpid()}").write_text(str(gc.get_freeze_count()))

    monkeypatch.setattr(folder_module, "_watch_parent", watch)
    monkeypatch.setattr("mosaicist.sources.folder.DECODE_BATCH", 4)
    library = TileLibrary.open(FolderSource(odd, workers=2), 8, cache_dir=tmp_path / "cache")
    assert library.source_ids == GOOD_FILES
    counts = [int(path.read_text()) for path in tmp_path.glob("frozen-*")]
    assert counts and all(count > 0 for count in counts)
    assert gc.get_freeze_count() == 0


def test_pixel_limit_monkeypatched(odd, tmp_path, monkeypatch):
    monkeypatch.setattr(imaging, "TILE_MAX_PIXELS", 1000)
    library = TileLibrary.open(FolderSource(odd, workers=1), 8, cache_dir=tmp_path)
    failed = dict(library.stats.failed)
    assert "over the limit" in failed["jpeg/plain.jpg"]
    assert "png/deep/rgba.png" in library.source_ids  # 256 pixels: under the limit


def test_index_command_reports_skips(odd, tmp_path):
    result = CliRunner().invoke(main, ["index", str(odd), "--tile-px", "8",
                                       "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"{len(BAD_FILES)} skipped" in result.stderr
    assert f"{len(GOOD_FILES)} tiles" in result.stderr
    for name in BAD_FILES:
        assert f"skipped {name}" in result.stderr
    assert "Traceback" not in result.output


def test_open_source_resolves_folder(odd, tmp_path):
    assert isinstance(open_source(str(odd), tmp_path), FolderSource)
    source = FolderSource(odd)
    entry = next(entry for entry in source.scan() if entry.source_id == "jpeg/exif6.jpg")
    original = source.open_original(entry)
    assert original.mode == "RGB" and original.size == (24, 40)


#: Tile files whose names are not valid UTF-8 (or hold a backslash, the
#: escape character), by colour, and the tile ids they get.
ODD_NAMES = {
    b"caf\xe9.png": ((250, 20, 20), "caf\\xe9.png"),
    b"back\\slash.png": ((20, 250, 20), "back\\\\slash.png"),
    b"d\xff/x.png": ((20, 20, 250), "d\\xff/x.png"),
    b"plain.png": ((128, 128, 128), "plain.png"),
}


def make_odd_names_folder(root):
    for name, (colour, _) in ODD_NAMES.items():
        path = os.path.join(os.fsencode(root), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(np.full((12, 12, 3), colour, np.uint8)).save(os.fsdecode(path), "PNG")
    return root


def test_names_to_text_round_trip():
    for raw in (b"caf\xe9.jpg", b"a\\b.jpg", b"a\\xe9.jpg", b"\\\\x41", b"\xff\xfe/\x80.png",
                "café/日本.png".encode(), b"plain.png"):
        name = os.fsdecode(raw)
        text = name_to_text(name)
        text.encode("utf-8")  # plain text: never a surrogate
        assert os.fsencode(text_to_name(text)) == raw
    assert name_to_text(os.fsdecode(b"caf\xe9.jpg")) == "caf\\xe9.jpg"
    assert name_to_text("café.jpg") == "café.jpg"
    # A lone backslash (ids written before escaping) is taken as it is.
    assert text_to_name("a\\b.jpg") == "a\\b.jpg"


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="names are bytes on Linux")
def test_names_round_trip_where_the_file_systems_encoding_is_ascii(tmp_path):
    # Under LC_ALL=C without UTF-8 mode, 日本3.png is held as its bytes' surrogates: the
    # text 日本3.png went back unchanged, and render said the placed photos were moved
    # or removed (the viewer answered 404 for their originals).
    from conftest import run_with_ascii_file_names

    # The script is ASCII (its names escaped): the C locale reads it so.
    script = tmp_path / "check.py"
    script.write_text(
        "import os, sys\n"
        "from mosaicist.sources.base import name_to_text, text_to_name\n"
        "assert sys.getfilesystemencoding() == 'ascii', sys.getfilesystemencoding()\n"
        "folder = os.fsencode(sys.argv[1])\n"
        "japanese = '\\u65e5\\u672c3.png'\n"
        "for raw in (japanese.encode(), b'caf\\xe9.jpg', '\\xe9/x.png'.encode(), b'plain.png'):\n"
        "    name = os.fsdecode(raw)\n"
        "    text = name_to_text(name)\n"
        "    text.encode('utf-8')\n"
        "    assert text_to_name(text) == name, (ascii(text), ascii(name))\n"
        "    path = os.path.join(folder, raw)\n"
        "    os.makedirs(os.path.dirname(path), exist_ok=True)\n"
        "    open(path, 'wb').close()\n"
        "    assert os.path.exists(os.path.join(sys.argv[1], text_to_name(text)))\n"
        "assert name_to_text(os.fsdecode(japanese.encode())) == japanese\n", encoding="ascii")
    folder = tmp_path / "names"
    folder.mkdir()
    result = run_with_ascii_file_names(script, str(folder))
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="names are bytes on Linux")
def test_names_not_utf8_index_make_and_render(tmp_path):
    folder = make_odd_names_folder(tmp_path / "tiles")
    source = FolderSource(folder)
    ids = [entry.source_id for entry in source.scan()]
    assert ids == sorted(text for _, text in ODD_NAMES.values())
    for entry in source.scan():
        assert os.fsencode(source.path_of(entry.source_id)) == os.fsencode(entry.locator)
    # A target whose four cells are the four tiles' colours, in file order.
    colours = [colour for colour, _ in ODD_NAMES.values()]
    target = tmp_path / "target.png"
    Image.fromarray(np.repeat(np.array([colours], np.uint8), 8, 1).repeat(8, 0)).save(target)
    cache = ["--cache-dir", str(tmp_path / "cache")]
    runner = CliRunner()
    indexed = runner.invoke(main, ["index", str(folder), "--tile-px", "8", *cache])
    assert indexed.exit_code == 0, indexed.output
    assert "4 tiles" in indexed.stderr
    made = runner.invoke(main, ["make", str(target), "--tiles", str(folder), "--tile-px", "8",
                                "--cell", "8", "-o", str(tmp_path / "made.png"), "--preset", "seed",
                                "--placements", str(tmp_path / "made.json"), *cache])
    assert made.exit_code == 0, made.output
    document = json.loads((tmp_path / "made.json").read_text(encoding="utf-8"))
    assert document["cells"]["tile"] == [text for _, text in ODD_NAMES.values()]
    made_csv = runner.invoke(main, ["make", str(target), "--tiles", str(folder), "--tile-px",
                                    "8", "--cell", "8", "-o", str(tmp_path / "made2.png"),
                                    "--preset", "seed",
                                    "--placements", str(tmp_path / "made.csv"), *cache])
    assert made_csv.exit_code == 0, made_csv.output
    assert "caf\\xe9.png" in (tmp_path / "made.csv").read_text(encoding="utf-8")
    # Rendering from the placements opens the very files the ids name.
    rendered = runner.invoke(main, ["render", str(tmp_path / "made.json"),
                                    "-o", str(tmp_path / "rendered.png")])
    assert rendered.exit_code == 0, rendered.output
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "rendered.png")),
                                  np.asarray(Image.open(tmp_path / "made.png")))


def test_ids_outside_the_folder_are_refused(tmp_path):
    source = FolderSource(make_colour_folder(tmp_path / "tiles", 1))
    (tmp_path / "secret.png").write_bytes((tmp_path / "tiles" / "t000.png").read_bytes())
    assert source.open_original(SourceEntry("t000.png", 0, 0)).size == (12, 12)
    for source_id in ("../secret.png", "\\x2e\\x2e/secret.png", "/etc/passwd", "a//b.png",
                      "./t000.png", "", "t000.png\\x00"):
        with pytest.raises(SourceError, match="not a file of"):
            source.open_original(SourceEntry(source_id, 0, 0))


def test_decoding_workers_return_windows_and_signatures(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(4)
    for index in range(20):  # more than the pool's threshold
        width, height = [(60, 24), (24, 60), (30, 30)][index % 3]
        picture = np.full((height, width, 3), 90, np.uint8)
        picture[:10, :10] = rng.integers(0, 256, (10, 10, 3))  # detail in a corner
        Image.fromarray(picture).save(folder / f"p{index:02d}.png")
    serial = FolderSource(folder, workers=1)
    pooled = FolderSource(folder, workers=2)
    entries = serial.scan()
    one = list(serial.decode(entries, 12, (3, 2), "subject"))
    two = list(pooled.decode(entries, 12, (3, 2), "subject"))
    for first, second in zip(one, two, strict=True):
        assert first.pixels.shape == (8, 12, 3)
        np.testing.assert_array_equal(first.pixels, second.pixels)
        assert first.window == second.window and first.signature == second.signature
        assert first.signature is not None
    # Wide photos slide their 3:2 window toward the detail at the left.
    assert one[0].window == (0, 0, 36, 24)


def test_folder_key_is_the_same_for_every_spelling(tmp_path, monkeypatch):
    # 'a/../lib' and 'lib' are one folder: one key, so one index (not decoded twice).
    make_colour_folder(tmp_path / "lib", 2)
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path)
    plain = FolderSource(tmp_path / "lib")
    for spelling in ("lib", "a/../lib", "./a/../lib/", str(tmp_path / "a" / ".." / "lib")):
        source = open_source(spelling, tmp_path / "cache")
        assert source.key == plain.key == f"folder:{tmp_path / 'lib'}", spelling


def test_a_spelling_through_a_link_and_up_opens_the_folder_the_system_opens(tmp_path,
                                                                            monkeypatch):
    # 'link/..' is the link target's parent: dropping '..' as text named another folder.
    make_colour_folder(tmp_path / "real" / "photos", 3)
    (tmp_path / "real" / "sub").mkdir()
    make_colour_folder(tmp_path / "photos", 1)  # what the text alone would name
    (tmp_path / "link").symlink_to(tmp_path / "real" / "sub")
    monkeypatch.chdir(tmp_path)
    source = open_source("link/../photos", tmp_path / "cache")
    assert len(source.scan()) == 3
    assert os.path.realpath(source.root) == str(tmp_path / "real" / "photos")


@pytest.mark.skipif(sys.platform != "linux", reason="the workers must be forked to share the fake")
@pytest.mark.parametrize("crashing", [["t013.png"], ["t002.png", "t029.png"]])
def test_a_file_that_crashes_its_decoder_is_skipped_not_fatal(tmp_path, monkeypatch, crashing):
    # A decoder that dies on a damaged file (a segfault, the kernel killing it for
    # memory) broke the whole pool: the index run ended in a BrokenProcessPool
    # traceback, and so did every later run, which met the same file again.
    folder = make_colour_folder(tmp_path / "photos", 30)
    monkeypatch.setattr("mosaicist.sources.folder.DECODE_BATCH", 3)
    real_read = folder_module.read_tile_file

    def read_or_crash(path, *args, **kwargs):
        if os.path.basename(path) in crashing:
            faulthandler.disable()  # pytest's would print the crash's stack
            os.kill(os.getpid(), signal.SIGSEGV)
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(folder_module, "read_tile_file", read_or_crash)
    library = TileLibrary.open(FolderSource(folder, workers=2), 8, cache_dir=tmp_path / "cache")
    expected = [f"t{index:03d}.png" for index in range(30) if f"t{index:03d}.png" not in crashing]
    assert library.source_ids == expected
    failed = dict(library.stats.failed)
    assert sorted(failed) == crashing
    assert all("SIGSEGV" in reason for reason in failed.values())
    monkeypatch.undo()
    # The tiles are those a decode without crashes makes, in library order.
    clean = TileLibrary.open(FolderSource(folder, workers=1), 8, cache_dir=tmp_path / "clean")
    kept = [clean.source_ids.index(source_id) for source_id in expected]
    np.testing.assert_array_equal(np.asarray(library.tiles), np.asarray(clean.tiles)[kept])


@pytest.mark.parametrize("workers", [
    1,
    pytest.param(2, marks=pytest.mark.skipif(
        sys.platform != "linux", reason="the workers must be forked to share the fake")),
])
def test_reads_that_may_pass_are_marked_and_tried_again(tmp_path, monkeypatch, workers):
    # A read that failed with EIO (a flaky share) was remembered like a bad file: the
    # photo stayed out of the library on every later run, until the file changed.
    folder = make_colour_folder(tmp_path / "photos", 20)
    (folder / "broken.png").write_bytes(b"not a picture")
    monkeypatch.setattr("mosaicist.sources.folder.DECODE_BATCH", 3)
    real_read = imaging.read_tile_bytes
    refused = {"t005.png": errno.EIO, "t011.png": errno.EACCES}

    def read_tile_bytes(path):
        name = Path(path).name
        if name in refused:
            raise OSError(refused[name], os.strerror(refused[name]), str(path))
        return real_read(path)

    monkeypatch.setattr(imaging, "read_tile_bytes", read_tile_bytes)
    source = FolderSource(folder, workers=workers)
    entries = source.scan()
    marks = {tile.entry.source_id: (tile.error is not None, tile.transient)
             for tile in source.decode(entries, 8)}
    assert {name for name, (failed, _) in marks.items() if failed} == {
        "broken.png", "t005.png", "t011.png"}
    assert [name for name, (_, transient) in marks.items() if transient] == ["t005.png"]
    cache = tmp_path / "cache"
    first = TileLibrary.open(FolderSource(folder, workers=workers), 8, cache_dir=cache)
    assert sorted(dict(first.stats.failed)) == ["broken.png", "t005.png", "t011.png"]
    monkeypatch.undo()
    # Only the read that may pass is tried again: the bad file, and the one this user
    # could not read (its permissions change its stamp when they are fixed), are not.
    again = TileLibrary.open(FolderSource(folder, workers=workers), 8, cache_dir=cache)
    assert again.stats.decoded == 1
    assert sorted(dict(again.stats.failed)) == ["broken.png", "t011.png"]
    assert "t005.png" in again.source_ids


def test_a_loop_of_links_is_reported_as_a_loop(tmp_path):
    # Both links of a loop were reported as links "to a file which is not there",
    # though each names the other, which is there.
    folder = make_colour_folder(tmp_path / "photos", 2)
    (folder / "loop1.png").symlink_to("loop2.png")
    (folder / "loop2.png").symlink_to("loop1.png")
    (folder / "gone.png").symlink_to("nothere.png")
    library = TileLibrary.open(FolderSource(folder, workers=1), 8, cache_dir=tmp_path / "cache")
    assert library.source_ids == ["t000.png", "t001.png"]
    failed = dict(library.stats.failed)
    assert failed["loop1.png"] == "a link to loop2.png, which loops back on itself"
    assert failed["loop2.png"] == "a link to loop1.png, which loops back on itself"
    assert failed["gone.png"] == "a link to nothere.png, which is not there"


class _EntryWithoutStatus:
    """A folder entry whose status cannot be read, as in a folder without search permission."""

    def __init__(self, entry):
        self._entry = entry
        self.name, self.path = entry.name, entry.path

    def is_dir(self, follow_symlinks=True):
        return self._entry.is_dir(follow_symlinks=follow_symlinks)

    def is_symlink(self):
        return self._entry.is_symlink()

    def stat(self, follow_symlinks=True):
        raise PermissionError(13, "Permission denied", self.path)


class _Listing:
    """An ``os.scandir`` listing whose entries pass through ``each`` (a generator function)."""

    def __init__(self, listing, each):
        self._listing, self._each = listing, each

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._listing.close()

    def __iter__(self):
        return self._each(self._listing)


def test_a_photo_whose_status_cannot_be_read_is_reported_not_left_out(tmp_path, monkeypatch):
    # A folder that may be listed but not searched (mode r--) lists its photos, whose
    # status then cannot be read: they were left out without a word. (Root reads
    # them all, so the refusal is simulated.)
    folder = make_colour_folder(tmp_path / "photos", 3)
    (folder / "notes.txt").write_text("not a photo")
    real_scandir = os.scandir

    def without_status(entries):
        for entry in entries:
            yield _EntryWithoutStatus(entry) if entry.name != "t000.png" else entry

    def scandir(path="."):
        if os.fspath(path) == str(folder):
            return _Listing(real_scandir(path), without_status)
        return real_scandir(path)

    monkeypatch.setattr(folder_module.os, "scandir", scandir)
    entries = FolderSource(folder, workers=1).scan()
    assert [entry.source_id for entry in entries] == ["t000.png", "t001.png", "t002.png"]
    assert [entry.mtime_ns for entry in entries[1:]] == [folder_module.MISSING_STAMP] * 2
    real_read = folder_module.read_tile_file

    def read(path, *args):
        if os.path.basename(path) != "t000.png":  # refused, as the status was
            raise PermissionError(13, "Permission denied", path)
        return real_read(path, *args)

    monkeypatch.setattr(folder_module, "read_tile_file", read)
    library = TileLibrary.open(FolderSource(folder, workers=1), 8, cache_dir=tmp_path / "cache")
    assert library.source_ids == ["t000.png"]
    assert dict(library.stats.failed) == {"t001.png": "Permission denied",
                                          "t002.png": "Permission denied"}


@pytest.fixture
def heif_unregistered(monkeypatch):
    """Pillow as it starts: no HEIF opener (the live wall's tests may have registered one)."""
    from mosaicist import imaging as _extras

    Image.init()  # Pillow's own plugins in the registry that is put back afterwards
    monkeypatch.setattr(Image, "ID", [name for name in Image.ID if name != "HEIF"])
    monkeypatch.setattr(Image, "OPEN", {name: value for name, value in Image.OPEN.items()
                                        if name != "HEIF"})
    monkeypatch.setattr(_extras, "_heif_opener", False)


def save_heic(path, colour):
    pillow_heif = pytest.importorskip("pillow_heif")
    picture = np.full((16, 24, 3), colour, np.uint8)
    pillow_heif.from_pillow(Image.fromarray(picture)).save(str(path), quality=95)


@pytest.mark.parametrize("workers", [1, 2])
def test_heic_avif_and_misnamed_photos_are_indexed(tmp_path, heif_unregistered, workers):
    # .heic and .avif files were left out of the scan without a word, though
    # pillow-heif (the live extra) and Pillow's own AVIF reader were there.
    from PIL import features

    kinds = {"a.heic": (200, 40, 40), "b.AVIF": (40, 200, 40), "c.PNG": (40, 40, 200),
             "d.jpg": (200, 200, 40), "e.HEIF": (40, 200, 200)}
    if not features.check_module("avif"):
        del kinds["b.AVIF"]
    # Copies enough for a pool of decoding processes (over 16 files).
    colours = {f"{copy}{name}": colour for copy in range(4) for name, colour in kinds.items()}
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, colour in colours.items():
        if name.endswith(("heic", "HEIF")):
            save_heic(folder / name, colour)
        else:
            kind = "AVIF" if name.endswith("AVIF") else "PNG"  # d.jpg is a PNG
            Image.new("RGB", (24, 16), colour).save(folder / name, kind)
    Image.new("RGB", (24, 16)).save(folder / "no_extension", "PNG")  # ignored: no extension
    library = TileLibrary.open(FolderSource(folder, workers=workers), 8,
                               cache_dir=tmp_path / "cache")
    assert library.source_ids == sorted(colours)
    assert not library.stats.failed
    for position, name in enumerate(library.source_ids):
        mean = library.tiles[position].reshape(-1, 3).mean(axis=0)
        assert np.abs(mean - colours[name]).max() <= 6, (name, mean)
    source = FolderSource(folder, workers=1)
    entry = next(entry for entry in source.scan() if entry.source_id == "0a.heic")
    original = source.open_original(entry)
    assert original.size == (24, 16) and original.mode == "RGB"


def test_heic_photos_without_the_plugin_are_left_out_in_one_line(
    tmp_path, heif_unregistered, monkeypatch, capsys
):
    folder = tmp_path / "photos"
    (folder / "deep").mkdir(parents=True)
    save_heic(folder / "a.heic", (200, 40, 40))
    save_heic(folder / "deep" / "b.HEIC", (40, 200, 40))
    Image.new("RGB", (12, 12), (1, 2, 3)).save(folder / "c.png")
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # not installed
    library = TileLibrary.open(FolderSource(folder, workers=1), 8, cache_dir=tmp_path / "cache",
                              quiet=False)
    # Left out, not failed: a failure would be remembered after the plugin is installed.
    assert library.source_ids == ["c.png"] and not library.stats.failed
    lines = [line for line in capsys.readouterr().err.splitlines() if "pillow-heif" in line]
    assert len(lines) == 1
    assert "2 files left out" in lines[0] and "HEIC" in lines[0]


def _refusing_scandir(monkeypatch, refused, after=None):
    """Make ``os.scandir`` refuse to list the folder ``refused`` (root reads every folder).

    With ``after``, the listing fails after that many entries, as ``/proc/1/map_files``
    does (it opens, then refuses to be read); else it fails at once.
    """
    real_scandir = os.scandir

    def failing_part_way(entries):
        for count, entry in enumerate(entries):
            if count == after:
                break
            yield entry
        raise PermissionError(13, "Permission denied", str(refused))

    def scandir(path="."):
        if isinstance(path, int) or os.fspath(path).rstrip(os.sep) != str(refused):
            return real_scandir(path)
        if after is None:
            raise PermissionError(13, "Permission denied", str(refused))
        return _Listing(real_scandir(path), failing_part_way)

    monkeypatch.setattr(folder_module.os, "scandir", scandir)


@pytest.mark.parametrize("after", [None, 1])
def test_an_unreadable_subfolder_is_reported_and_skipped(tmp_path, monkeypatch, after):
    # `mosaicist index /` ended with "error: /proc/1/map_files: Permission denied": a
    # folder whose listing fails part way stopped the whole index.
    folder = make_colour_folder(tmp_path / "photos", 2)
    make_colour_folder(folder / "private", 2, seed=1)
    _refusing_scandir(monkeypatch, folder / "private", after)
    cache = tmp_path / "cache"
    library = TileLibrary.open(FolderSource(folder, workers=1), 8, cache_dir=cache)
    private = [name for name in library.source_ids if name.startswith("private/")]
    assert len(private) == (1 if after else 0)  # what was listed before the failure is kept
    assert library.source_ids == sorted(["t000.png", "t001.png", *private])
    reason = "cannot read this folder: Permission denied; its photos are left out"
    assert library.stats.failed == [("private/", reason)]
    # Remembered, not tried again, still reported.
    again = TileLibrary.open(FolderSource(folder, workers=1), 8, cache_dir=cache)
    assert again.stats.decoded == 0 and again.stats.failed == [("private/", reason)]
    # Readable again: its photos are indexed and the failure goes.
    monkeypatch.undo()
    readable = TileLibrary.open(FolderSource(folder, workers=1), 8, cache_dir=cache)
    assert readable.source_ids == ["private/t000.png", "private/t001.png", "t000.png",
                                   "t001.png"]
    assert not readable.stats.failed


def test_an_unreadable_subfolder_is_not_fatal_on_the_command_line(tmp_path, monkeypatch):
    folder = make_colour_folder(tmp_path / "photos", 2)
    make_colour_folder(folder / "map_files", 1)
    _refusing_scandir(monkeypatch, folder / "map_files", after=0)
    result = CliRunner().invoke(main, ["index", str(folder), "--tile-px", "8",
                                       "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "skipped map_files/: cannot read this folder: Permission denied" in result.output


def test_a_subfolder_removed_while_scanning_is_left_out(tmp_path, monkeypatch, capsys):
    import shutil

    folder = make_colour_folder(tmp_path / "photos", 2)
    make_colour_folder(folder / "gone", 2)
    real_scandir = os.scandir

    def scandir(path="."):
        if path == str(folder / "gone"):
            shutil.rmtree(path)  # after the top folder's listing named it
        return real_scandir(path)

    monkeypatch.setattr(folder_module.os, "scandir", scandir)
    library = TileLibrary.open(FolderSource(folder, workers=1), 8, cache_dir=tmp_path / "cache")
    assert library.source_ids == ["t000.png", "t001.png"] and not library.stats.failed
    assert "gone" not in capsys.readouterr().err  # gone like a file removed meanwhile


def test_an_unreadable_top_folder_is_an_error(tmp_path, monkeypatch):
    folder = make_colour_folder(tmp_path / "photos", 2)
    source = FolderSource(folder, workers=1)
    _refusing_scandir(monkeypatch, folder)
    with pytest.raises(SourceError, match="photos: cannot read the folder: Permission denied"):
        source.scan()


def test_an_empty_source_spec_is_refused_not_the_current_folder_indexed():
    # Path("") is ".": TileLibrary.open("") indexed every picture under the current folder.
    from mosaicist.sources import SourceError, open_source

    with pytest.raises(SourceError, match="a tile source spec is empty"):
        open_source("", cache_dir=None)
