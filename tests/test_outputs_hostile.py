"""Outputs under hostile conditions: format limits, odd names, rewrites, the viewer."""


import numpy as np
import pytest
from conftest import held_by_another_thread
from PIL import Image

from mosaicist.errors import MosaicistError
from mosaicist.render import check_output, read_layout, read_level, write_deep_zoom, write_image
from mosaicist.render._deepzoom import refuse_if_being_written, writing_lock


@pytest.mark.parametrize(("width", "height"), [(65501, 8), (8, 65501), (65535, 8)])
def test_a_jpeg_past_libjpegs_limit_is_refused_before_any_work(tmp_path, width, height):
    # libjpeg encodes (and decodes) at most 65500 px a side: a 65501-65535 px JPEG,
    # accepted by the check, failed only when written, after all the work.
    with pytest.raises(MosaicistError) as error:
        check_output(tmp_path / "a.jpg", width, height)
    assert str(error.value) == (
        f"{tmp_path / 'a.jpg'}: {width:,}x{height:,} pixels is over the JPEG limit of "
        "65,500 pixels a side; use .png, .tif or .dzi")


@pytest.mark.parametrize(("width", "height"), [(65500, 8), (1, 65500)])
def test_a_jpeg_at_the_limit_is_written_and_read_back(tmp_path, width, height):
    path = tmp_path / "a.jpg"
    check_output(path, width, height)
    pixels = np.full((height, width, 3), 200, np.uint8)
    write_image(path, [pixels], width, height)
    with Image.open(path) as image:
        assert image.size == (width, height)
        assert np.abs(np.asarray(image).astype(int) - 200).max() <= 2


def _noise(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_a_pyramid_written_under_another_case_of_dzi_leaves_no_stale_descriptor(tmp_path):
    # m.dzi and m.DZI are two files but share m_files: the old m.dzi stayed, describing
    # a 300x200 pyramid whose tiles had become the 10x8 one's (its deep levels missing).
    write_deep_zoom([_noise(200, 300)], 300, 200, tmp_path / "m.dzi", tile_size=16,
                    format="png")
    write_deep_zoom([_noise(8, 10, 1)], 10, 8, tmp_path / "m.DZI", tile_size=16,
                    format="png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.DZI", "m_files"]
    layout = read_layout(tmp_path / "m.DZI")
    assert (layout.width, layout.height) == (10, 8)
    assert np.array_equal(read_level(tmp_path / "m.DZI", layout.deepest_level), _noise(8, 10, 1))
    # A folder of such a name is not a descriptor: left alone, and the write goes on.
    (tmp_path / "m.Dzi").mkdir()
    write_deep_zoom([_noise(8, 10, 2)], 10, 8, tmp_path / "m.dzi", tile_size=16, format="png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.Dzi", "m.dzi", "m_files"]


def test_writers_of_one_pyramid_under_two_cases_of_dzi_exclude_each_other(tmp_path):
    # Their lock files were named after each spelling, so both wrote m_files at once.
    with held_by_another_thread(writing_lock(tmp_path / "m.dzi")):
        with pytest.raises(MosaicistError, match="another run .* is writing this Deep Zoom"):
            refuse_if_being_written(tmp_path / "m.DZI")
        with pytest.raises(MosaicistError, match="another run .* is writing this Deep Zoom"):
            write_deep_zoom([_noise(8, 10)], 10, 8, tmp_path / "m.DZI")
    assert not (tmp_path / "m.DZI").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_a_pyramid_whose_viewer_page_cannot_fit_is_refused_before_any_work(tmp_path,
                                                                           monkeypatch):
    # The page inlines OpenSeadragon (about 350 kB): on a disk with 200 kB free the
    # check passed, the whole pyramid was written, and the page then failed.
    import os

    from mosaicist.render import _formats

    real = os.statvfs(tmp_path)
    blocks_free = 200_000 // real.f_frsize

    class Nearly:
        f_frsize, f_bsize, f_blocks = real.f_frsize, real.f_bsize, real.f_blocks
        f_bavail, f_files, f_favail = blocks_free, real.f_files, real.f_favail

    monkeypatch.setattr(_formats.os, "statvfs", lambda folder: Nearly)
    with pytest.raises(MosaicistError, match=r"m\.dzi: a 40x30 px Deep Zoom output needs "
                                             r"at least .* kB; its file system has"):
        check_output(tmp_path / "m.dzi", 40, 30)
    check_output(tmp_path / "m.png", 40, 30)  # a picture alone still fits
