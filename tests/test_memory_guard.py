"""Plans that cannot fit in memory are refused in one line, before any work.

The out-of-memory kill itself is never reproduced (it harms the whole
machine): the estimates are checked directly, and the memory available is
stood for by ``_MOSAICIST_AVAILABLE_MEMORY`` or passed in.
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_colour_folder
from PIL import Image

from mosaicist import _runtime, make_mosaic
from mosaicist.cli import main
from mosaicist.errors import MosaicistError, OptionError
from mosaicist.options import MosaicOptions
from mosaicist.pipeline import check_make_memory, make_memory
from mosaicist.render import OUTPUT_FORMATS
from mosaicist.render._formats import check_output_memory, output_memory

GB = 1_000_000_000


@pytest.fixture()
def small_make(tmp_path):
    """A 48x40 target and 20 tiles: a make of 30 cells of 8 px."""
    target = tmp_path / "target.png"
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(target)
    return target, make_colour_folder(tmp_path / "tiles", 20)


def test_available_memory_is_overridden_by_the_private_variable(monkeypatch):
    monkeypatch.setenv(_runtime._MEMORY_ENV, "12345")
    assert _runtime.available_memory() == 12345


def test_available_memory_is_the_least_of_the_kernel_and_a_cgroup_limit(monkeypatch, tmp_path):
    monkeypatch.delenv(_runtime._MEMORY_ENV, raising=False)
    (tmp_path / "memory.max").write_text("1000000000\n")
    (tmp_path / "memory.current").write_text("600000000\n")
    # Inactive file cache is reclaimed before a kill: it counts as room.
    (tmp_path / "memory.stat").write_text("anon 400000000\ninactive_file 100000000\n")
    monkeypatch.setattr(_runtime, "_CGROUP_ROOT", tmp_path)
    monkeypatch.setattr(_runtime, "_CGROUP_V1_MEMORY", tmp_path / "absent")
    monkeypatch.setattr(_runtime, "_meminfo_available", lambda: 8 * GB)
    assert _runtime.available_memory() == 500_000_000
    (tmp_path / "memory.max").write_text("max\n")  # no limit: the kernel's figure
    assert _runtime.available_memory() == 8 * GB


def test_the_reported_plan_is_refused_by_its_estimate():
    # big12.png, 4000x3000, --cell 1 --tile-px 1024: killed at 22.5 GB before the fix.
    options = MosaicOptions(cell_px=1, tile_px=1024)
    assert make_memory(3000, 4000, options)["peak"] > 22 * GB
    with pytest.raises(OptionError) as caught:
        check_make_memory(3000, 4000, options, available=22 * GB)
    message = caught.value.message(lambda name: "--" + name.replace("_", "-"))
    assert message.startswith("12,000,000 cells matched against 32x32 px tiles need about ")
    assert "22.0 GB available" in message
    assert "--cell-px" in message and "--preset seed" in message
    assert "\n" not in message


def test_resampled_cells_count_at_the_compared_size():
    # 3 px cells against 32 px tiles are resampled to 32x32: 3,072 bytes a cell and more.
    options = MosaicOptions(cell_px=3, match_px=32, preset="seed")
    assert make_memory(1000, 1000, options)["compared"] >= 1_000_000 * 32 * 32 * 3
    with pytest.raises(OptionError, match="a smaller match_px"):
        check_make_memory(1000, 1000, options, available=2 * GB)


def test_the_estimate_stays_below_measured_peaks():
    # Measured (peak resident less a small make's): 30,000 cells of 2 px, default preset,
    # 50,000 CIFAR photos, 820 MB (session 52; 285 MB with an older assignment, whose
    # estimate let through a 144,000-cell plan that then used 6.85 GB against 1.7
    # estimated); 53,200 cells of 3 px against 32 px tiles, seed, 176 MB for 39,900 more
    # cells.
    balanced = make_memory(150, 200, MosaicOptions(cell_px=2, match_px=32,
                                                   compute_metrics=False))
    assert 600_000_000 < balanced["peak"] < 820_000_000
    seed = make_memory(200, 200, MosaicOptions(cell_px=3, match_px=32, preset="seed",
                                               compute_metrics=False))
    assert seed["peak"] < 40_000 * 4_400


def test_everyday_makes_are_not_refused_on_a_small_machine():
    # The seed's workload (80 x 63 cells of 16 px) and a 12-megapixel photo at 8 px cells.
    check_make_memory(63, 80, MosaicOptions(), available=GB)
    check_make_memory(375, 500, MosaicOptions(cell_px=8), available=8 * GB)


def test_streamed_outputs_are_bounded_by_a_band_not_the_picture():
    # A 30-gigapixel Deep Zoom pyramid or PNG of 32 px tiles streams: a few bands, not 90 GB.
    for suffix in (".dzi", ".png", ".tif"):
        output = OUTPUT_FORMATS[suffix]
        options = MosaicOptions(tile_px=32)
        assert output_memory(output, 200_000, 150_000, options) < 100_000_000
        check_output_memory(f"big{suffix}", output, 200_000, 150_000, options, available=GB)


def test_a_band_too_wide_for_memory_is_refused():
    # The reported output: 4,000 tiles of 1,024 px across, each band 12.6 GB.
    with pytest.raises(OptionError) as caught:
        check_output_memory("huge.png", OUTPUT_FORMATS[".png"], 4_096_000, 3_072_000,
                            MosaicOptions(cell_px=1, tile_px=1024), available=22 * GB)
    message = caught.value.message(lambda name: "--" + name.replace("_", "-"))
    assert message.startswith("huge.png: a 4,096,000x3,072,000 px PNG output is drawn in "
                              "bands of 4,096,000x1,024 px, which need about 25.2 GB")
    assert message.endswith("use a smaller --tile-px")


def test_a_picture_encoded_whole_counts_whole():
    webp = OUTPUT_FORMATS[".webp"]
    options = MosaicOptions(tile_px=64)
    assert output_memory(webp, 10_000, 10_000, options) >= 100_000_000 * 11
    with pytest.raises(OptionError, match=r"WebP output is encoded whole, in memory"):
        check_output_memory("a.webp", webp, 10_000, 10_000, options, available=GB)


def test_cli_refuses_a_make_that_cannot_fit_before_any_work(monkeypatch, small_make, tmp_path):
    target, tiles = small_make
    # Room for the output's bands (2.3 kB), not for the grid's matching (340 kB).
    monkeypatch.setenv(_runtime._MEMORY_ENV, "100000")
    output = tmp_path / "out.png"
    result = CliRunner().invoke(main, ["make", str(target), "--tiles", str(tiles), "--cell",
                                       "8", "--tile-px", "8", "-o", str(output), "--cache-dir",
                                       str(tmp_path / "cache"), "-q"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mosaicist: error: 30 cells matched against 8x8 px tiles need "
                               "about ")
    assert "100.0 kB available: use a larger --cell" in lines[0]
    assert not output.exists()
    assert not (tmp_path / "cache").exists()  # refused before the library was indexed


def test_api_refuses_by_setting_name_and_the_image_whole(monkeypatch, small_make, tmp_path):
    target, tiles = small_make
    monkeypatch.setenv(_runtime._MEMORY_ENV, "1000")
    with pytest.raises(OptionError, match=r"^30 cells .* use a larger cell_px"):
        make_mosaic(target, tiles, cell_px=8, tile_px=8, cache_dir=tmp_path / "cache")
    monkeypatch.delenv(_runtime._MEMORY_ENV)
    mosaic = make_mosaic(target, tiles, cell_px=8, tile_px=8, cache_dir=tmp_path / "cache",
                         compute_metrics=False)
    # 48x40 px of 8 px tiles: 5,760 bytes and a band of 1,152 more.
    monkeypatch.setenv(_runtime._MEMORY_ENV, "6000")
    with pytest.raises(MosaicistError, match=r"whole 48x40 px picture needs about 6.9 kB.*"
                                             r"Mosaic\.write"):
        _ = mosaic.image
    with pytest.raises(OptionError, match="use a smaller tile_px"):
        mosaic.write(tmp_path / "out.webp")
    assert not (tmp_path / "out.webp").exists()
    monkeypatch.setenv(_runtime._MEMORY_ENV, "7000")
    assert mosaic.image.shape == (40, 48, 3)
