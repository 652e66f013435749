"""Deep Zoom pyramids: layout, every level the reduction of the one below, atomic output."""

import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from conftest import dead_pid
from PIL import Image

from mosaicist import Placements
from mosaicist.errors import MosaicistError
from mosaicist.render import (
    DeepZoomLayout,
    files_folder,
    read_layout,
    read_level,
    reduce_half,
    write_deep_zoom,
)


def bands_of(image, height):
    for top in range(0, image.shape[0], height):
        yield image[top:top + height]


def noise(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("width", "height", "tile_size", "overlap", "band"),
    [(300, 170, 64, 1, 32), (37, 53, 8, 2, 5), (1, 1, 254, 1, 1), (513, 257, 254, 1, 100),
     (40, 24, 16, 0, 7)],
)
def test_each_level_is_the_one_below_reduced(tmp_path, width, height, tile_size, overlap, band):
    image = noise(height, width, width)
    path = tmp_path / "m.dzi"
    layout = write_deep_zoom(bands_of(image, band), width, height, path, tile_size=tile_size,
                             overlap=overlap, format="png", workers=2)
    assert read_layout(path) == layout
    expected = image
    for level in range(layout.deepest_level, -1, -1):
        assert np.array_equal(read_level(path, level), expected), level
        expected = reduce_half(expected)
    assert layout.level_size(0) == (1, 1)


def test_tile_files_and_overlap(tmp_path):
    path = tmp_path / "mural.dzi"
    layout = write_deep_zoom(bands_of(noise(600, 1000), 64), 1000, 600, path, tile_size=254,
                             overlap=1, format="jpeg", quality=80)
    root = ElementTree.parse(path).getroot()
    assert root.get("Format") == "jpeg" and root.get("TileSize") == "254"
    assert root.get("Overlap") == "1"
    assert root[0].get("Width") == "1000" and root[0].get("Height") == "600"
    deepest = files_folder(path) / str(layout.deepest_level)
    assert layout.deepest_level == 10
    names = sorted(p.name for p in deepest.iterdir())
    assert len(names) == 4 * 3 and "3_2.jpeg" in names
    # Inner tiles carry one pixel of overlap on each side; edge tiles only inward.
    assert Image.open(deepest / "0_0.jpeg").size == (255, 255)
    assert Image.open(deepest / "1_1.jpeg").size == (256, 256)
    assert Image.open(deepest / "3_2.jpeg").size == (1000 - 762 + 1, 600 - 508 + 1)
    total = sum(len(list(level.iterdir())) for level in files_folder(path).iterdir())
    assert total == layout.tile_total()
    # JPEG is lossy; the assembled picture is still the input, closely.
    error = np.abs(read_level(path, layout.deepest_level).astype(int) - noise(600, 1000))
    assert error.mean() < 25


@pytest.mark.parametrize("tile_format", ["webp", "png"])
def test_other_formats(tmp_path, tile_format):
    path = tmp_path / "m.dzi"
    write_deep_zoom(bands_of(noise(20, 30), 6), 30, 20, path, tile_size=16, format=tile_format)
    assert (files_folder(path) / "5" / f"1_1.{tile_format}").exists()


def test_interrupted_pyramid_leaves_nothing(tmp_path):
    def failing():
        yield noise(16, 64)
        raise KeyboardInterrupt

    path = tmp_path / "m.dzi"
    with pytest.raises(KeyboardInterrupt):
        write_deep_zoom(failing(), 64, 64, path, tile_size=16, format="png")
    assert list(tmp_path.iterdir()) == []


def test_rewrite_replaces_the_old_pyramid(tmp_path):
    path = tmp_path / "m.dzi"
    write_deep_zoom(bands_of(noise(40, 40), 8), 40, 40, path, tile_size=8, format="png")
    write_deep_zoom(bands_of(noise(10, 12, 3), 8), 12, 10, path, tile_size=8, format="png")
    assert read_layout(path).width == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.dzi", "m_files"]
    assert sorted(int(p.name) for p in files_folder(path).iterdir()) == list(range(5))


def test_wrong_band_sizes(tmp_path):
    with pytest.raises(ValueError, match="ended after"):
        write_deep_zoom(iter([noise(5, 10)]), 10, 8, tmp_path / "m.dzi")
    with pytest.raises(ValueError, match="bands must be"):
        write_deep_zoom(iter([noise(8, 9)]), 10, 8, tmp_path / "m.dzi")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [({"tile_size": 0}, "dzi_tile_size must be between 1 and 4096"),
     ({"overlap": 200}, "dzi_overlap must be between 0 and 127"),
     ({"format": "gif"}, "unknown dzi_format 'gif'"), ({"quality": 0}, "quality")],
)
def test_bad_settings(tmp_path, options, message):
    with pytest.raises(MosaicistError, match=message):
        write_deep_zoom(iter([]), 10, 10, tmp_path / "m.dzi", **options)


def test_layout_counts():
    layout = DeepZoomLayout(102400, 76800, 254, 1)
    assert layout.deepest_level == 17
    assert layout.tile_counts(17) == (404, 303)
    assert layout.level_size(0) == (1, 1)
    assert layout.tile_span(0, 500) == (0, 255) and layout.tile_span(1, 500) == (253, 500)


def test_read_layout_errors(tmp_path):
    with pytest.raises(MosaicistError, match="not found"):
        read_layout(tmp_path / "none.dzi")
    (tmp_path / "bad.dzi").write_text("<html/>")
    with pytest.raises(MosaicistError, match="bad.dzi: not a Deep Zoom descriptor"):
        read_layout(tmp_path / "bad.dzi")


def test_outputs_get_the_usual_file_mode(tmp_path):
    from mosaicist.paths import current_umask

    path = tmp_path / "m.dzi"
    write_deep_zoom(bands_of(noise(20, 30), 6), 30, 20, path, tile_size=16, format="png")
    expected = 0o666 & ~current_umask()
    assert path.stat().st_mode & 0o777 == expected  # not mkstemp's 0600
    tile = files_folder(path) / "0" / "0_0.png"
    assert tile.stat().st_mode & 0o777 == expected


def test_read_layout_refuses_odd_descriptors(tmp_path):
    path = tmp_path / "odd.dzi"
    path.write_text('<Image xmlns="http://schemas.microsoft.com/deepzoom/2009" Format="gif" '
                    'Overlap="1" TileSize="254"><Size Width="10" Height="10"/></Image>')
    with pytest.raises(MosaicistError, match="odd.dzi: not a valid Deep Zoom descriptor"):
        read_layout(path)
    path.write_text(path.read_text().replace("gif", "png"))
    assert read_layout(path) == DeepZoomLayout(10, 10, 254, 1, "png")


DZI_NAMESPACE = "http://schemas.microsoft.com/deepzoom/2008"


def descriptor_text(width="10", height="10", tile_size="254", overlap="1", before="",
                    after=""):
    return (f'<?xml version="1.0"?>{before}<Image xmlns="{DZI_NAMESPACE}" Format="png" '
            f'Overlap="{overlap}" TileSize="{tile_size}"><Size Width="{width}" '
            f'Height="{height}"/></Image>{after}')


def entity_bomb(depth=9):
    entities = '<!ENTITY e0 "0123456789">' + "".join(
        f'<!ENTITY e{level} "{f"&e{level - 1};" * 10}">' for level in range(1, depth + 1))
    return f"<!DOCTYPE Image [{entities}]>"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (descriptor_text(width=str(10**40)), "Width '1000000000000000000000000000000000000000' "
                                             "is not a whole number from 1 to 2147483647"),
        (descriptor_text(height=str(2**31)), "Height '2147483648' is not a whole number"),
        (descriptor_text(tile_size="9" * 5000), "TileSize '9999"),
        (descriptor_text(tile_size="8192"), "TileSize '8192' is not a whole number from 1 to 4096"),
        (descriptor_text(overlap="200"), "Overlap '200' is not a whole number from 0 to 127"),
        (descriptor_text(overlap="-1"), "Overlap '-1'"),
        (descriptor_text(width="\uff11\uff10"), "Width '\uff11\uff10' is not a whole number"),
        (descriptor_text(width="1_0"), "Width '1_0' is not a whole number"),
        (descriptor_text(width="&w;", before='<!DOCTYPE Image [<!ENTITY w "10">]>'),
         "it declares a DTD"),
        (descriptor_text(width="&e9;", before=entity_bomb()), "it declares a DTD"),
        (descriptor_text(after="<!--" + "x" * 70_000 + "-->"), "over 64 KiB"),
    ],
    ids=["huge-width", "height-2^31", "5000-digits", "tile-8192", "overlap-over-half",
         "negative", "fullwidth-digits", "underscore", "entity", "bomb", "70-KB"],
)
def test_read_layout_refuses_hostile_descriptors_in_one_line(tmp_path, text, message):
    """Sizes no pyramid has, DTDs and oversized files are refused, naming the file.

    A width of 10^40 was read as it stood (and read_level then asked NumPy for
    an array of that many pixels); a TileSize over the settings' 4096, an
    overlap over half a tile, digits of other scripts, a DTD's entities and a
    file of any length were all accepted.
    """
    path = tmp_path / "hostile.dzi"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MosaicistError) as raised:
        read_layout(path)
    error = str(raised.value)
    assert error.startswith(f"{path}: not a ") and "\n" not in error
    assert message in error, error


def test_read_layout_accepts_the_utf16_and_2009_descriptors_of_other_writers(tmp_path):
    path = tmp_path / "other.dzi"
    text = descriptor_text(width=" 300 ", overlap="0").replace("2008", "2009")
    path.write_bytes(text.replace('version="1.0"', 'version="1.0" encoding="UTF-16"')
                     .encode("utf-16"))
    assert read_layout(path) == DeepZoomLayout(300, 10, 254, 0, "png")
    # A DTD is found in any encoding, before anything of it is expanded.
    path.write_bytes(descriptor_text(width="&e9;", before=entity_bomb())
                     .replace('version="1.0"', 'version="1.0" encoding="UTF-16"')
                     .encode("utf-16"))
    with pytest.raises(MosaicistError, match="it declares a DTD"):
        read_layout(path)


def reference_levels(image):
    """Every level, deepest first, by the documented rule in plain integer NumPy."""
    levels = [image]
    while levels[-1].shape[:2] != (1, 1):
        level = levels[-1]
        if level.shape[0] % 2:
            level = np.concatenate([level, level[-1:]], axis=0)
        if level.shape[1] % 2:
            level = np.concatenate([level, level[:, -1:]], axis=1)
        blocks = level.astype(np.int64).reshape(level.shape[0] // 2, 2, level.shape[1] // 2, 2, 3)
        levels.append(((blocks.sum(axis=(1, 3)) + 2) // 4).astype(np.uint8))
    return levels[::-1]


@pytest.mark.parametrize(
    ("width", "height", "tile_size", "overlap", "band"),
    [(1, 1, 1, 0, 1), (1, 9, 1, 0, 2), (257, 3, 254, 1, 1), (3, 255, 254, 127, 64),
     (129, 65, 2, 1, 5), (64, 64, 64, 32, 13), (33, 17, 4, 2, 3)],
)
def test_every_tile_file_is_the_brute_force_level_with_its_overlaps(
        tmp_path, width, height, tile_size, overlap, band):
    """Each level's tiles, overlaps included, cut from a brute-force reduction; nothing else.

    The other pyramid tests read each tile's own square back (the overlap
    dropped); this one compares every tile file whole, and the file list.
    """
    image = noise(height, width, width * 31 + height)
    path = tmp_path / "m.dzi"
    write_deep_zoom(bands_of(image, band), width, height, path, tile_size=tile_size,
                    overlap=overlap, format="png", workers=2)
    levels = reference_levels(image)
    folder = files_folder(path)
    assert sorted(os.listdir(folder), key=int) == [str(level) for level in range(len(levels))]
    for number, level in enumerate(levels):
        rows, columns = -(-level.shape[0] // tile_size), -(-level.shape[1] // tile_size)
        names = {f"{column}_{row}.png" for column in range(columns) for row in range(rows)}
        assert set(os.listdir(folder / str(number))) == names, number
        for column in range(columns):
            for row in range(rows):
                top, left = max(0, row * tile_size - overlap), max(0, column * tile_size - overlap)
                expected = level[top:(row + 1) * tile_size + overlap,
                                 left:(column + 1) * tile_size + overlap]
                with Image.open(folder / str(number) / f"{column}_{row}.png") as tile:
                    assert np.array_equal(np.asarray(tile.convert("RGB")), expected), (
                        number, column, row)


def test_read_level_of_a_damaged_pyramid_names_the_tile(tmp_path):
    """A missing, truncated or resized tile is one MosaicistError naming it.

    They raised FileNotFoundError and PIL's UnidentifiedImageError (a
    traceback), and a tile of another size was decoded whole before its size
    was looked at.
    """
    path = tmp_path / "m.dzi"
    layout = write_deep_zoom(bands_of(noise(20, 30), 6), 30, 20, path, tile_size=16,
                             format="png")
    level = files_folder(path) / str(layout.deepest_level)
    (level / "1_0.png").unlink()
    with pytest.raises(MosaicistError, match=r"1_0\.png: cannot read the Deep Zoom tile"):
        read_level(path, layout.deepest_level)
    (level / "1_0.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(MosaicistError, match=r"1_0\.png: cannot read the Deep Zoom tile"):
        read_level(path, layout.deepest_level)
    Image.new("RGB", (17, 16)).save(level / "1_0.png")
    with pytest.raises(MosaicistError, match=r"1_0\.png: tile is 16x17 \(rows x columns\), "
                                             r"expected 17x15"):
        read_level(path, layout.deepest_level)
    assert read_level(path, layout.deepest_level - 1).shape == (10, 15, 3)


def test_next_write_removes_temporaries_of_dead_writers_only(tmp_path):
    path = tmp_path / "m.dzi"
    dead, live = dead_pid(), os.getppid()
    # Staging and old folders as atomic_folder names them, and as earlier versions did.
    stale = [f".m_files.{dead}-a1b2c3d4.part", f".m_files.{dead}-a1b2c3d4.old",
             f".m_files.partial-{dead}"]
    kept = [
        f".m_files.{live}-a1b2c3d4.part", f".m_files.partial-{live}",  # concurrent writes
        f".m_files.partial-{os.getpid()}",  # another thread's
        f".other_files.{dead}-a1b2c3d4.part", f".other_files.partial-{dead}",  # elsewhere
        f".m_files.partial-{dead}.txt",
    ]
    for name in stale + kept:
        (tmp_path / name / "3").mkdir(parents=True)
        (tmp_path / name / "3" / "0_0.png").write_bytes(b"tile")
    write_deep_zoom(bands_of(noise(8, 8), 8), 8, 8, path, tile_size=8, format="png")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.dzi", "m_files", *kept])


def test_write_killed_midway_is_cleaned_up_by_the_next(tmp_path):
    path = tmp_path / "m.dzi"
    script = f"""
import signal, sys, numpy as np
from mosaicist.render import write_deep_zoom
def bands():
    yield np.zeros((16, 64, 3), np.uint8)
    print("writing", flush=True)
    signal.pause()
write_deep_zoom(bands(), 64, 64, {str(path)!r}, tile_size=16, format="png", workers=1)
"""
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "writing\n"  # inside the write, tiles staged
    finally:
        writer.kill()
        writer.wait()
    # Its staging folder, and its writer's lock: both hidden, named by its PID.
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and left[1].startswith(".m_files."), left
    assert left[0].startswith(f".m.dzi.{writer.pid}-") and left[0].endswith(".part.lock"), left
    write_deep_zoom(bands_of(noise(8, 8), 8), 8, 8, path, tile_size=8, format="png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.dzi", "m_files"]


def test_rectangular_mosaic_pyramid_and_viewer(tmp_path):
    from test_render import rectangle_placements

    from mosaicist import MosaicOptions
    from mosaicist.render import IndexPictures, MosaicRenderer
    from mosaicist.viewer import read_viewer_data, write_viewer

    rng = np.random.default_rng(4)
    tiles = rng.integers(0, 256, (6, 6, 9, 3), dtype=np.uint8)  # 9 wide, 6 high: 3:2
    placements = rectangle_placements(5, 7, 6)
    renderer = MosaicRenderer(placements, IndexPictures(tiles, placements.tile))
    options = MosaicOptions(dzi_tile_size=16, dzi_format="png")
    renderer.write(tmp_path / "wall.dzi", options)
    layout = read_layout(tmp_path / "wall.dzi")
    assert (layout.width, layout.height) == (7 * 9, 5 * 6)
    assert np.array_equal(read_level(tmp_path / "wall.dzi", layout.deepest_level),
                          renderer.image())
    # The viewer maps the pointer to a row and column with the cells' own width and height.
    data = read_viewer_data(tmp_path / "wall.html")
    assert (data["rows"], data["cols"], data["cell_px"], data["cell_height"]) == (5, 7, 9, 6)
    # Placements of another shape do not describe this pyramid.
    square = Placements(5, 7, placements.tile, placements.distance, placements.source_ids)
    with pytest.raises(MosaicistError, match="not a 7x5 grid of square cells"):
        write_viewer(tmp_path / "wall.dzi", square)
    tall = Placements(5, 7, placements.tile, placements.distance, placements.source_ids,
                      options=MosaicOptions(aspect="2:3"))
    with pytest.raises(MosaicistError, match="grid of 2:3 cells"):
        write_viewer(tmp_path / "wall.dzi", tall)


def test_a_users_page_or_manifest_beside_the_pyramid_is_not_overwritten(tmp_path):
    from test_render import random_placements

    from mosaicist import MosaicOptions
    from mosaicist.render import IndexPictures, MosaicRenderer

    tiles = np.random.default_rng(5).integers(0, 256, (4, 6, 6, 3), dtype=np.uint8)
    placements = random_placements(3, 4, 4)
    renderer = MosaicRenderer(placements, IndexPictures(tiles, placements.tile))
    options = MosaicOptions(dzi_tile_size=16, dzi_format="png")
    path, page = tmp_path / "site.dzi", tmp_path / "site.html"
    manifest = tmp_path / "site.viewer.json"
    renderer.write(path, options)
    renderer.write(path, options)  # our own page and manifest are replaced
    assert page.is_file() and manifest.is_file()
    ours = page.read_bytes()
    for companion, what in ((page, "viewer page"), (manifest, "viewer manifest")):
        kept = companion.read_bytes()
        companion.write_text("<h1>my own page</h1>\n" if companion == page else '{"mine": 1}\n')
        with pytest.raises(MosaicistError) as caught:
            renderer.write(path, options)
        assert str(caught.value).startswith(f"{companion}: is not a {what} mosaicist wrote")
        assert "\n" not in str(caught.value)
        assert b"mine" in companion.read_bytes() or b"my own" in companion.read_bytes()
        companion.write_bytes(kept)
    renderer.write(path, options)
    assert page.read_bytes() == ours


@pytest.mark.parametrize("name", ["2023", "07", "\u0663", "\u00b2", "64"])
def test_a_tile_folder_holding_a_folder_no_level_has_is_not_replaced(tmp_path, name):
    """``NAME_files/2023/`` is the user's: refused before any work, not deleted.

    Any name of digits passed for a level folder (``str.isdigit``: ``2023``,
    ``07``, an Arabic-Indic three, a superscript two), so writing the pyramid
    deleted such a folder with everything in it.
    """
    from mosaicist import MosaicOptions
    from mosaicist.render import DEEP_ZOOM

    path = tmp_path / "m.dzi"
    write_deep_zoom(bands_of(noise(20, 30), 6), 30, 20, path, tile_size=16, format="png")
    options = MosaicOptions(dzi_tile_size=16, dzi_format="png")
    DEEP_ZOOM.check(path, 30, 20, options)  # its own pyramid: replaced
    (files_folder(path) / name).mkdir()
    (files_folder(path) / name / "photo.jpg").write_bytes(b"mine")
    with pytest.raises(MosaicistError, match=f"m_files: holds what is not a Deep Zoom "
                                             f"pyramid's \\({name}\\)"):
        DEEP_ZOOM.check(path, 30, 20, options)


def _renderer_and_options(rows, cols, seed=6):
    from test_render import random_placements

    from mosaicist import MosaicOptions
    from mosaicist.render import IndexPictures, MosaicRenderer

    tiles = np.random.default_rng(seed).integers(0, 256, (4, 6, 6, 3), dtype=np.uint8)
    placements = random_placements(rows, cols, 4, seed=seed)
    renderer = MosaicRenderer(placements, IndexPictures(tiles, placements.tile))
    return renderer, MosaicOptions(dzi_tile_size=16, dzi_format="png")


@pytest.mark.parametrize("where", ["descriptor", "page"])
def test_a_rewrite_stopped_after_its_tiles_leaves_nothing_of_the_old_describing_them(
        tmp_path, monkeypatch, where):
    # Stopped between the new tiles' swap and the new descriptor (or page), the old
    # descriptor (or the old page, which embeds its pyramid's size) stayed beside the
    # new tiles: a viewer then asked for levels and tiles that were not there.
    import contextlib

    import mosaicist.viewer
    from mosaicist.render import _deepzoom
    from mosaicist.viewer import read_viewer_data

    path = tmp_path / "m.dzi"
    big, options = _renderer_and_options(5, 7)
    big.write(path, options)
    assert read_layout(path).width == 42 and path.with_suffix(".html").exists()

    @contextlib.contextmanager
    def interrupted(final, *arguments, **keywords):
        raise KeyboardInterrupt
        yield  # pragma: no cover

    def interrupted_page(*arguments, **keywords):
        raise KeyboardInterrupt

    if where == "descriptor":
        monkeypatch.setattr(_deepzoom, "atomic_path", interrupted)
    else:
        monkeypatch.setattr(mosaicist.viewer, "write_viewer", interrupted_page)
    small, _ = _renderer_and_options(2, 3)
    with pytest.raises(KeyboardInterrupt):
        small.write(path, options)
    levels = sorted(int(level.name) for level in files_folder(path).iterdir())
    assert levels == list(range(6))  # the new 18x12 pyramid's tiles are in place
    if path.exists():  # the new descriptor, then
        assert read_layout(path).width == 18
    assert not path.with_suffix(".html").exists()
    assert not (tmp_path / "m.viewer.json").exists()
    monkeypatch.undo()
    small.write(path, options)
    assert read_layout(path).width == read_viewer_data(path.with_suffix(".html"))["width"] == 18
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "m.dzi", "m.html", "m.viewer.json", "m_files"]


def test_a_rewrite_leaves_a_page_that_is_not_ours_alone(tmp_path):
    # The old page and manifest go only when mosaicist wrote them.
    path = tmp_path / "m.dzi"
    write_deep_zoom(bands_of(noise(8, 8), 8), 8, 8, path, tile_size=8, format="png")
    page = tmp_path / "m.html"
    page.write_text("<h1>my own page</h1>\n")
    write_deep_zoom(bands_of(noise(6, 5), 6), 5, 6, path, tile_size=8, format="png")
    assert page.read_text() == "<h1>my own page</h1>\n" and read_layout(path).width == 5


def test_a_descriptor_or_viewer_that_is_a_link_is_refused_before_any_work(tmp_path):
    # Written through the link, the descriptor landed in the link's folder under its
    # target's name, with no tiles beside it (they went beside the link).
    from mosaicist import MosaicOptions
    from mosaicist.render import check_output

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = tmp_path / "m.dzi"
    path.symlink_to(elsewhere / "real.dzi")
    with pytest.raises(MosaicistError, match=r"m\.dzi: the Deep Zoom descriptor is a symbolic"):
        check_output(path, 8, 8, MosaicOptions())
    with pytest.raises(MosaicistError, match="symbolic link"):
        write_deep_zoom(bands_of(noise(8, 8), 8), 8, 8, path, tile_size=8, format="png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "m.dzi"]
    assert list(elsewhere.iterdir()) == []
    path.unlink()
    (tmp_path / "m.html").symlink_to(elsewhere / "page.html")
    with pytest.raises(MosaicistError, match=r"m\.html: the viewer page is a symbolic link"):
        check_output(path, 8, 8, MosaicOptions())


def test_a_full_disk_writing_the_viewer_names_the_page(tmp_path, monkeypatch):
    # "mosaicist: error: No space left on device", naming no file.
    import contextlib
    import errno

    import mosaicist.viewer._page as page_module

    @contextlib.contextmanager
    def full(final, *arguments, **keywords):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        yield  # pragma: no cover

    monkeypatch.setattr(page_module, "atomic_path", full)
    renderer, options = _renderer_and_options(2, 3)
    with pytest.raises(MosaicistError) as caught:
        renderer.write(tmp_path / "m.dzi", options)
    assert str(caught.value) == (f"{tmp_path / 'm.html'}: cannot write the viewer page: "
                                 "No space left on device")


def _as_written_by_another_tool(path, spelling):
    """Respell a pyramid's ``Format="jpeg"`` and rename its tiles to match, as other tools do."""
    path.write_text(path.read_text().replace('Format="jpeg"', f'Format="{spelling}"'))
    for tile in files_folder(path).rglob("*.jpeg"):
        tile.rename(tile.with_suffix(f".{spelling}"))


@pytest.mark.parametrize("spelling", ["jpg", "JPG"])
def test_a_pyramid_whose_descriptor_says_jpg_is_read_from_its_jpg_tiles(tmp_path, spelling):
    # Format="jpg" was read as "jpeg", and its tiles looked for as N_M.jpeg: not found.
    path = tmp_path / "m.dzi"
    image = noise(20, 30)
    layout = write_deep_zoom(bands_of(image, 8), 30, 20, path, tile_size=8, format="jpeg")
    expected = read_level(path, layout.deepest_level)
    _as_written_by_another_tool(path, spelling)
    read = read_layout(path)
    assert read.format == "jpeg" and read.tile_extension == spelling
    assert np.array_equal(read_level(path, layout.deepest_level), expected)
    # Its descriptor, written again, names the same tiles.
    assert f'Format="{spelling}"' in read.descriptor()
    assert layout.tile_extension == "jpeg" and 'Format="jpeg"' in layout.descriptor()


def test_a_second_writer_of_a_pyramid_is_refused_while_the_first_writes(tmp_path):
    # Two runs writing one m.dzi at once: the later one's descriptor or page could
    # end up over the earlier one's tiles (or the reverse), sizes and all.
    import threading

    from mosaicist import MosaicOptions
    from mosaicist.render import check_output
    from mosaicist.render._deepzoom import lock_files

    path = tmp_path / "m.dzi"
    started, go = threading.Event(), threading.Event()
    first = noise(16, 24, 1)
    outcome = {}

    def held_bands():
        yield first[:8]
        started.set()
        assert go.wait(60)
        yield first[8:]

    def write_first():
        try:
            outcome["layout"] = write_deep_zoom(held_bands(), 24, 16, path, tile_size=8,
                                                format="png")
        except BaseException as error:  # reported by the main thread
            outcome["error"] = error

    writer = threading.Thread(target=write_first)
    writer.start()
    try:
        assert started.wait(60)
        with pytest.raises(MosaicistError, match=r"m\.dzi: another run \(process [0-9]+\) "
                                                 "is writing this Deep Zoom pyramid"):
            write_deep_zoom(bands_of(noise(8, 10, 2), 8), 10, 8, path, tile_size=8,
                            format="png")
        # Said before any work, at the output check.
        with pytest.raises(MosaicistError, match="is writing this Deep Zoom pyramid"):
            check_output(path, 10, 8, MosaicOptions())
    finally:
        go.set()
        writer.join(60)
    assert not writer.is_alive() and "error" not in outcome
    assert read_layout(path) == outcome["layout"]
    assert np.array_equal(read_level(path, outcome["layout"].deepest_level), first)
    # Released, and its file gone: the next write goes ahead.
    assert lock_files(path) == []
    check_output(path, 10, 8, MosaicOptions())
    write_deep_zoom(bands_of(noise(8, 10, 2), 8), 10, 8, path, tile_size=8, format="png")
    assert read_layout(path).width == 10 and lock_files(path) == []


def test_a_writer_killed_holding_the_lock_does_not_block_the_next(tmp_path):
    # The kernel lets go of a dead process's flock; its lock file goes with its temporaries.
    from mosaicist.render._deepzoom import lock_files

    path = tmp_path / "m.dzi"
    script = (
        "import sys, numpy as np\n"
        "from mosaicist.render import write_deep_zoom\n"
        "def bands():\n"
        "    yield np.zeros((8, 8, 3), np.uint8)\n"
        "    print('writing', flush=True)\n"
        "    sys.stdin.readline()\n"
        "    yield np.zeros((8, 8, 3), np.uint8)\n"
        f"write_deep_zoom(bands(), 8, 16, {str(path)!r}, tile_size=8, format='png')\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "writing\n"
        with pytest.raises(MosaicistError, match=f"process {child.pid}"):
            write_deep_zoom(bands_of(noise(8, 8), 8), 8, 8, path, tile_size=8, format="png")
    finally:
        child.kill()
        child.wait(60)
        child.stdin.close()
        child.stdout.close()
    assert [lock.name.split("-")[0] for lock in lock_files(path)] == [f".m.dzi.{child.pid}"]
    write_deep_zoom(bands_of(noise(8, 8), 8), 8, 8, path, tile_size=8, format="png")
    assert read_layout(path).height == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.dzi", "m_files"]


def test_a_pyramid_named_by_a_relative_path_is_written_past_its_own_lock(tmp_path, monkeypatch):
    # The writer's lock file, made with an absolute name, was not known as its own
    # among those listed beside a relative "m.dzi": every write refused itself.
    from mosaicist.render._deepzoom import lock_files

    monkeypatch.chdir(tmp_path)
    write_deep_zoom(bands_of(noise(8, 8), 8), 8, 8, "m.dzi", tile_size=8, format="png")
    assert read_layout("m.dzi").width == 8 and lock_files("m.dzi") == []
