"""Exactness of the PyTorch matcher against the brute-force integer reference.

Runs on the CPU (no GPU needed): both kernels, int8 and float64, take the
same code path on any device apart from the products themselves. On a
machine with a GPU the same tests run there with
``MOSAICIST_TEST_DEVICE=cuda python3 -m pytest tests/test_gpu.py``.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from itertools import pairwise

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mosaicist.errors import MosaicistError, OptionError  # noqa: E402
from mosaicist.grid import Geometry  # noqa: E402
from mosaicist.match import _gpu as gpu  # noqa: E402
from mosaicist.match import brute_force  # noqa: E402
from mosaicist.match._gpu import digit_count, match_torch  # noqa: E402
from mosaicist.progress import progress_listener  # noqa: E402

#: Where the searches run: the CPU unless a GPU is named for a run on one.
DEVICE = os.environ.get("MOSAICIST_TEST_DEVICE", "cpu")
GEOMETRIES = [(16, 32), (8, 32), (4, 4), (6, 10), (8, 4)]
KERNELS = ["float64", "int8"]


def smooth_images(rng: np.random.Generator, count: int, side: int, noise: float = 6) -> np.ndarray:
    """Gradients plus a little noise: many near-equal distances, unlike uniform noise."""
    y, x = np.mgrid[0:side, 0:side] / max(1, side - 1)
    base = rng.uniform(0, 255, (count, 1, 1, 3))
    gx = rng.uniform(-120, 120, (count, 1, 1, 3))
    gy = rng.uniform(-120, 120, (count, 1, 1, 3))
    images = base + gx * x[None, :, :, None] + gy * y[None, :, :, None]
    images += rng.normal(0, noise, images.shape)
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def assert_same_as_brute_force(cells: np.ndarray, tiles: np.ndarray, tile_px: int,
                               kernel: str) -> None:
    geometry = Geometry(cells.shape[1], tile_px)
    result = match_torch(geometry.cell_vectors(cells), tiles, geometry, device=DEVICE,
                         kernel=kernel)
    reference = brute_force(cells, tiles, tile_px)
    assert result.tile.dtype == np.int64
    assert result.distance.dtype == np.int64
    assert np.array_equal(result.tile, reference.tile)
    assert np.array_equal(result.distance, reference.distance)
    assert result.evaluated == len(cells) * len(tiles)


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: these tensors are tiny, and on a busy machine the
    thread pool's spinning costs ten times the work itself."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def small_chunks(monkeypatch):
    """Budgets so small that there are several tile chunks, cell blocks and groups."""
    monkeypatch.setattr(gpu, "MAX_TILE_CHUNK", 64)
    monkeypatch.setattr(gpu, "BLOCK_BYTES", 32 * 64 * 8)
    # Below one block: every group is a single block of 32 cells.
    monkeypatch.setattr(gpu, "CELL_BYTES", 1)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(("cell", "tile"), GEOMETRIES)
def test_random_data_matches_brute_force(cell, tile, kernel):
    rng = np.random.default_rng(cell * 100 + tile)
    tiles = rng.integers(0, 256, (100, tile, tile, 3), dtype=np.uint8)
    cells = rng.integers(0, 256, (37, cell, cell, 3), dtype=np.uint8)
    assert_same_as_brute_force(cells, tiles, tile, kernel)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(("cell", "tile"), GEOMETRIES)
def test_structured_data_with_ties_matches_brute_force(cell, tile, kernel, small_chunks):
    rng = np.random.default_rng(cell * 7 + tile)
    tiles = smooth_images(rng, 160, tile)
    cells = smooth_images(rng, 80, cell, noise=10)
    # Duplicates in other tile chunks (of 64) than the original: the earlier copy must win.
    tiles[100:130] = tiles[0:30]
    tiles[130:160] = tiles[0:30]
    # Flat tiles that tie with each other for flat cells.
    tiles[70] = tiles[110] = tiles[150] = 90
    cells[:3] = 90
    cells[3:6] = 91
    assert_same_as_brute_force(cells, tiles, tile, kernel)


def test_several_chunks_really_happen(small_chunks):
    tile_chunk, cell_block, cell_group, _ = gpu._plan(Geometry(16, 32), "int8", 80)
    assert (tile_chunk, cell_block, cell_group) == (64, 32, 32)


def test_huge_vectors_keep_small_cell_groups():
    # 1024 px cells and tiles: 3 MiB per vector, so only a few cells at a time.
    tile_chunk, cell_block, cell_group, _ = gpu._plan(Geometry(1024, 1024), "float64", 10_000)
    assert tile_chunk == 16
    assert cell_block == cell_group == 32


@pytest.mark.parametrize("kernel", KERNELS)
def test_extreme_values_do_not_overflow(kernel):
    # Largest magnitudes: black cells against white tiles and the reverse,
    # with blocks of 256 and 1024 pixels (two and three int8 digits).
    for cell, tile in [(2, 32), (1, 32), (16, 64)]:
        tiles = np.zeros((24, tile, tile, 3), np.uint8)
        tiles[::2] = 255
        tiles[5, :, :, 1] = 254
        cells = np.zeros((20, cell, cell, 3), np.uint8)
        cells[::3] = 255
        cells[1, 0, 0, 0] = 128
        assert_same_as_brute_force(cells, tiles, tile, kernel)


def test_split_contraction_matches(monkeypatch):
    # Force several pieces of the int8 contraction (normally only for sides > 147).
    monkeypatch.setattr(gpu, "K_SPLIT", 64)
    rng = np.random.default_rng(5)
    tiles = rng.integers(0, 256, (40, 20, 20, 3), dtype=np.uint8)
    cells = rng.integers(0, 256, (30, 10, 10, 3), dtype=np.uint8)
    assert_same_as_brute_force(cells, tiles, 20, "int8")


def test_upscaling_weight_in_the_centred_form():
    # D = w |a'|^2 - 2 <a', S'_b> + |b'|^2 with w = factor^2: one cell value
    # against one tile, where the replicated cell covers 4 x 4 tile pixels.
    cells = np.full((1, 1, 1, 3), 10, np.uint8)
    tiles = np.full((1, 4, 4, 3), 13, np.uint8)
    geometry = Geometry(1, 4)
    result = match_torch(cells, tiles, geometry, device=DEVICE, kernel="int8")
    assert result.distance.tolist() == [16 * 3 * 3 * 3]


def test_digits_reconstruct_block_sums():
    for weight in (1, 4, 16, 256, 257, 1024, 65793, 65794):
        count = digit_count(weight)
        sums = torch.tensor([[-128 * weight, 127 * weight, 0, -1, 1, 12345 % (weight + 1)]],
                            dtype=torch.int32)
        digits = gpu._digits(torch, sums, count, 8).to(torch.int64)
        rebuilt = sum(digits[k, 0, :6] * 256**k for k in range(count))
        assert torch.equal(rebuilt, sums[0].to(torch.int64))
    assert [digit_count(w) for w in (1, 4, 257, 258, 65793, 65794)] == [1, 2, 2, 3, 3, 4]


def test_memory_mapped_read_only_tiles(tmp_path):
    rng = np.random.default_rng(3)
    np.save(tmp_path / "tiles.npy", rng.integers(0, 256, (50, 8, 8, 3), dtype=np.uint8))
    tiles = np.load(tmp_path / "tiles.npy", mmap_mode="r")
    cells = rng.integers(0, 256, (9, 4, 4, 3), dtype=np.uint8)
    cells.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same_as_brute_force(cells, tiles, 8, "float64")


def test_default_kernel_is_float64_on_cpu_and_int8_on_recent_gpus(monkeypatch):
    assert gpu._default_kernel(torch, torch.device("cpu")) == "float64"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert gpu._default_kernel(torch, torch.device("cuda")) == "int8"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    assert gpu._default_kernel(torch, torch.device("cuda")) == "float64"


def test_no_cells_gives_empty_result():
    geometry = Geometry(4, 8)
    tiles = np.zeros((3, 8, 8, 3), np.uint8)
    result = match_torch(np.zeros((0, 4, 4, 3), np.uint8), tiles, geometry, device=DEVICE)
    assert result.tile.shape == (0,) and result.distance.dtype == np.int64


def test_missing_torch_is_a_one_line_error(monkeypatch):
    # None in sys.modules makes "import torch" raise ImportError.
    monkeypatch.setitem(sys.modules, "torch", None)
    geometry = Geometry(4, 8)
    with pytest.raises(MosaicistError, match=r'pip install "\.\[gpu\]"') as caught:
        match_torch(np.zeros((1, 4, 4, 3), np.uint8), np.zeros((1, 8, 8, 3), np.uint8),
                    geometry, device=DEVICE)
    assert "\n" not in str(caught.value)


def test_unavailable_cuda_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    geometry = Geometry(4, 8)
    with pytest.raises(MosaicistError, match="CUDA is not available") as caught:
        match_torch(np.zeros((1, 4, 4, 3), np.uint8), np.zeros((1, 8, 8, 3), np.uint8),
                    geometry)
    assert "\n" not in str(caught.value)
    # The command line names its own flag, not the Python keyword (device='cpu').
    assert isinstance(caught.value, OptionError)
    assert "use --device cpu" in caught.value.message(lambda name: "--" + name)


@pytest.mark.parametrize(
    ("cells", "tiles", "kwargs", "message"),
    [
        ((1, 4, 4, 3), (1, 8, 8, 3), {"device": "nonsense"}, "unknown torch device"),
        ((1, 4, 4, 3), (1, 8, 8, 3), {"kernel": "float16"}, "unknown kernel"),
        ((1, 5, 5, 3), (1, 8, 8, 3), {}, "do not fit 4x4"),
        ((1, 4, 4, 3), (1, 9, 9, 3), {}, "do not fit 8x8"),
        ((1, 4, 4, 3), (0, 8, 8, 3), {}, "no tiles"),
    ],
)
def test_bad_arguments_are_reported(cells, tiles, kwargs, message):
    options = {"device": DEVICE, **kwargs}
    with pytest.raises(MosaicistError, match=message):
        match_torch(np.zeros(cells, np.uint8), np.zeros(tiles, np.uint8), Geometry(4, 8),
                    **options)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(("cell", "tile"), [((8, 6), (16, 12)), ((6, 9), (21, 32)),
                                            ((16, 11), (32, 21))])
def test_rectangles_match_brute_force(cell, tile, kernel, small_chunks):
    from test_match import smooth_images as rectangles

    (cell_w, cell_h), (tile_w, tile_h) = cell, tile
    rng = np.random.default_rng(tile_w * tile_h)
    tiles = rectangles(rng, 150, tile_w, height=tile_h)
    cells = rectangles(rng, 40, cell_w, height=cell_h)
    geometry = Geometry(cell_w, tile_w, cell_h, tile_h)
    result = match_torch(geometry.cell_vectors(cells), tiles, geometry, device=DEVICE,
                         kernel=kernel)
    reference = brute_force(cells, tiles)
    assert np.array_equal(result.tile, reference.tile)
    assert np.array_equal(result.distance, reference.distance)


def test_tiles_turned_the_wrong_way_are_refused():
    # 32 wide and 21 high, for a geometry of tiles 21 wide and 32 high.
    with pytest.raises(MosaicistError, match="do not fit 21x32 RGB"):
        match_torch(np.zeros((2, 32, 21, 3), np.uint8), np.zeros((2, 21, 32, 3), np.uint8),
                    Geometry(6, 21, 9, 32), device=DEVICE)


def test_cuda_ordinal_beyond_the_visible_devices_is_a_one_line_error(monkeypatch):
    # cuda:1 on a machine with one GPU: torch.device accepts it, CUDA fails later.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    geometry = Geometry(4, 8)
    with pytest.raises(OptionError, match=r"cuda:1 asked for but only 1 CUDA device") as caught:
        match_torch(np.zeros((1, 4, 4, 3), np.uint8), np.zeros((1, 8, 8, 3), np.uint8),
                    geometry, device="cuda:1")
    assert "\n" not in str(caught.value)
    assert "--device cuda:1" in caught.value.message(lambda name: "--" + name)


def test_device_torch_knows_but_cannot_use_is_a_one_line_error():
    if torch.backends.mps.is_available():
        pytest.skip("MPS is usable here")
    geometry = Geometry(4, 8)
    # On a CPU build torch raises a NotImplementedError of some sixty lines.
    with pytest.raises(MosaicistError, match=r"torch device mps cannot be used") as caught:
        match_torch(np.zeros((1, 4, 4, 3), np.uint8), np.zeros((1, 8, 8, 3), np.uint8),
                    geometry, device="mps", kernel="float64")
    assert "\n" not in str(caught.value)


def out_of_memory_after(monkeypatch, function: str, failures: int) -> list[int]:
    """Make ``gpu.<function>`` raise torch's OutOfMemoryError on its first ``failures`` calls."""
    original = getattr(gpu, function)
    calls = [0]

    def failing(*args, **kwargs):
        calls[0] += 1
        if calls[0] <= failures:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(*args, **kwargs)

    monkeypatch.setattr(gpu, function, failing)
    return calls


@pytest.mark.parametrize("kernel", KERNELS)
def test_out_of_memory_retries_with_smaller_chunks(monkeypatch, small_chunks, kernel):
    monkeypatch.setattr(gpu, "CELL_BYTES", 64 * 48 * 8)  # groups of 64 cells, blocks of 32
    rng = np.random.default_rng(11)
    tiles = smooth_images(rng, 150, 8)
    cells = smooth_images(rng, 100, 4)
    tiles[120:150] = tiles[0:30]
    geometry = Geometry(4, 8)
    # The first group fails in its second tile chunk, the retried one in its first.
    scorer = "_int8_scores" if kernel == "int8" else "_tile_norms"
    original = getattr(gpu, scorer)
    calls = [0]

    def failing(*args, **kwargs):
        calls[0] += 1
        if calls[0] in (3, 5):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(*args, **kwargs)

    monkeypatch.setattr(gpu, scorer, failing)
    plans = []
    match_group = gpu._match_group

    def recording(*args):
        plans.append(args[6])
        return match_group(*args)

    monkeypatch.setattr(gpu, "_match_group", recording)
    reports = []
    with progress_listener(lambda name, done, total: reports.append((done, total))):
        result = match_torch(geometry.cell_vectors(cells), tiles, geometry, device=DEVICE,
                             kernel=kernel)
    reference = brute_force(cells, tiles, 8)
    assert np.array_equal(result.tile, reference.tile)
    assert np.array_equal(result.distance, reference.distance)
    # Two retries, each with smaller tile chunks or cell groups than the last.
    used = [plan for i, plan in enumerate(plans) if i == 0 or plan != plans[i - 1]]
    assert len(used) == 3, plans
    assert all(b[0] <= a[0] and b[2] <= a[2] and b != a for a, b in pairwise(used))
    # The bar forgets the failed passes and ends full.
    assert reports[-1][0] == reports[-1][1]


def test_out_of_memory_at_the_smallest_chunks_is_a_one_line_error(monkeypatch):
    calls = out_of_memory_after(monkeypatch, "_tile_norms", 10**9)
    geometry = Geometry(4, 8)
    with pytest.raises(MosaicistError, match=r"ran out of memory even with the smallest "
                                             r"chunks \(8 tiles by 32 cells\)") as caught:
        match_torch(np.zeros((5, 4, 4, 3), np.uint8), np.zeros((20, 8, 8, 3), np.uint8),
                    geometry, device=DEVICE, kernel="int8")
    assert "\n" not in str(caught.value)
    # Raised after the handler: the failed chunk's tensors are not kept alive by it.
    assert caught.value.__context__ is None
    assert 1 < calls[0] < 40


def test_other_runtime_errors_are_not_taken_for_out_of_memory(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(gpu, "_tile_norms", broken)
    geometry = Geometry(4, 8)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        match_torch(np.zeros((5, 4, 4, 3), np.uint8), np.zeros((20, 8, 8, 3), np.uint8),
                    geometry, device=DEVICE)
    assert gpu._is_out_of_memory(torch, RuntimeError("CUBLAS_STATUS_ALLOC_FAILED when calling"))
    assert gpu._is_out_of_memory(torch, torch.OutOfMemoryError("CUDA out of memory."))


def test_budgets_follow_free_device_memory(monkeypatch):
    cuda = torch.device("cuda")
    full = gpu._budget_bytes()
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (100 << 30, 141 << 30))
    assert gpu._initial_shrink(torch, cuda) == 1
    # A MIG slice or a busy GPU with 1 GiB free: budgets within half of it.
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1 << 30, 10 << 30))
    shrink = gpu._initial_shrink(torch, cuda)
    assert gpu._budget_bytes(shrink) <= 1 << 29 < gpu._budget_bytes(shrink // 2)
    assert full > 1 << 30
    small = gpu._plan(Geometry(16, 32), "int8", 100_000, shrink)
    large = gpu._plan(Geometry(16, 32), "int8", 100_000)
    assert small[0] < large[0] and small[2] < large[2]
    # Nothing free at all: the smallest chunks, not an endless loop.
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (0, 10 << 30))
    assert gpu._plan(Geometry(16, 32), "int8", 100_000, gpu._initial_shrink(torch, cuda))[:3] \
        == (8, 32, 32)
    assert gpu._initial_shrink(torch, torch.device("cpu")) == 1


def test_unpinnable_host_memory_falls_back_to_plain_buffers(monkeypatch):
    empty = torch.empty

    def no_pinning(*args, pin_memory=False, **kwargs):
        if pin_memory:
            raise RuntimeError("CUDA error: out of memory (cudaHostAlloc)")
        return empty(*args, **kwargs)

    monkeypatch.setattr(torch, "empty", no_pinning)
    buffers, pinned = gpu._host_buffers(torch, (4, 8, 8, 3), True)
    assert not pinned and len(buffers) == 2 and buffers[0].shape == (4, 8, 8, 3)


@pytest.mark.parametrize(("cell", "tile"), [(16, 32), (1, 4), (2, 32), (6, 10)])
def test_int8_products_respect_the_cuda_int_mm_limits(monkeypatch, small_chunks, cell, tile):
    # torch._int_mm on CUDA (cuBLASLt) refuses what the CPU accepts: 16 rows or
    # fewer, sizes not multiples of 8, and layouts other than row-major times
    # column-major. The CPU run checks every product against those limits.
    original = torch._int_mm

    def cuda_like(left, right):
        assert left.dtype == right.dtype == torch.int8
        assert left.shape[0] > 16
        assert left.shape[1] % 8 == 0 and right.shape[1] % 8 == 0
        assert left.shape[1] == right.shape[0]
        assert left.is_contiguous() and right.T.is_contiguous()
        assert left.data_ptr() % 16 == 0 and right.data_ptr() % 16 == 0
        return original(left, right)

    monkeypatch.setattr(torch, "_int_mm", cuda_like)
    monkeypatch.setattr(gpu, "K_SPLIT", 64)
    rng = np.random.default_rng(cell + tile)
    tiles = rng.integers(0, 256, (70, tile, tile, 3), dtype=np.uint8)
    cells = rng.integers(0, 256, (45, cell, cell, 3), dtype=np.uint8)
    assert_same_as_brute_force(cells, tiles, tile, "int8")


def test_checks_before_the_work_make_no_cuda_context(monkeypatch):
    # check_runs runs in the process that forks tile decoders afterwards.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    empty = torch.empty

    def no_device(*args, device=None, **kwargs):
        assert device is None, "a tensor on the device makes a CUDA context"
        return empty(*args, **kwargs)

    monkeypatch.setattr(torch, "empty", no_device)
    gpu.GpuMatcher().check_runs(None)


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        # A CUDA build whose libraries are missing: ctypes raises OSError while torch loads.
        (OSError("libcudart.so.12: cannot open shared object file: No such file or directory"),
         "libcudart.so.12"),
        # The same from torch._C: an ImportError, which is not "PyTorch is not installed".
        (ImportError("libcudnn.so.9: cannot open shared object file"), "libcudnn.so.9"),
        # A package torch needs, not torch itself.
        (ModuleNotFoundError("No module named 'typing_extensions'", name="typing_extensions"),
         "typing_extensions"),
    ],
)
def test_a_broken_torch_install_is_a_one_line_error(monkeypatch, error, shown):
    import builtins

    real_import = builtins.__import__

    def broken_import(name, *args, **kwargs):
        if name == "torch":
            raise error
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", broken_import)
    with pytest.raises(MosaicistError, match="PyTorch is installed but cannot be imported") \
            as caught:
        gpu.GpuMatcher().check_runs(None)
    message = str(caught.value)
    assert shown in message and "\n" not in message and "not installed" not in message


def test_unavailable_cuda_says_why_in_its_one_line_not_in_a_warning(monkeypatch):
    # A CUDA build of torch on a machine without a driver (or with one too old
    # for it) answers False and says why in a warning of several lines.
    def no_driver():
        warnings.warn("CUDA initialization: Found no NVIDIA driver on your system. Please check "
                      "that you have an NVIDIA GPU and installed a driver (Triggered internally "
                      "at /pytorch/c10/cuda/CUDAFunctions.cpp:109.)", UserWarning, stacklevel=2)
        return False

    monkeypatch.setattr(torch.cuda, "is_available", no_driver)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with pytest.raises(OptionError, match="CUDA is not available") as caught:
            gpu.GpuMatcher().check_runs(None)
    assert shown == []
    message = caught.value.message(lambda name: "--" + name)
    assert "torch warned: CUDA initialization: Found no NVIDIA driver" in message
    assert "Triggered internally" not in message and "\n" not in message
    assert message.endswith("use --device cpu or a CUDA build of PyTorch")


def test_a_device_that_holds_no_data_is_a_one_line_error():
    # "meta" tensors are made without fail but cannot be read back: the probe
    # must catch that, not the end of the search (NotImplementedError there).
    with pytest.raises(MosaicistError, match=r"torch device meta cannot be used: Cannot "
                                             r"copy out of meta tensor") as caught:
        match_torch(np.zeros((3, 4, 4, 3), np.uint8), np.zeros((5, 8, 8, 3), np.uint8),
                    Geometry(4, 8), device="meta", kernel="float64")
    assert "\n" not in str(caught.value)


def test_the_probe_names_torchs_warning_when_the_device_fails(monkeypatch):
    # A GPU older than the build supports: torch warns at first use, then its
    # first kernel fails with "no kernel image"; both go into one line.
    zeros = torch.zeros

    def too_old(*args, device=None, **kwargs):
        if device is not None and torch.device(device).type == "cpu":
            warnings.warn("Found GPU0 Tesla K80 which is of cuda capability 3.7.\n    PyTorch "
                          "no longer supports this GPU because it is too old.", UserWarning,
                          stacklevel=2)
            raise RuntimeError("CUDA error: no kernel image is available for execution on the "
                               "device\nCUDA kernel errors might be asynchronously reported")
        return zeros(*args, device=device, **kwargs)

    monkeypatch.setattr(torch, "zeros", too_old)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with pytest.raises(MosaicistError, match="no kernel image") as caught:
            gpu._resolve_device(torch, "cpu")
    assert shown == []
    assert str(caught.value) == (
        "torch device cpu cannot be used: CUDA error: no kernel image is available for "
        "execution on the device (torch warned: Found GPU0 Tesla K80 which is of cuda "
        "capability 3.7.)")
    # A warning from a device that works is shown as torch gave it.
    monkeypatch.setattr(torch, "zeros", lambda *args, device=None, **kwargs: (
        warnings.warn("a caveat", UserWarning, stacklevel=2), zeros(*args, **kwargs))[1])
    with pytest.warns(UserWarning, match="a caveat"):
        assert gpu._resolve_device(torch, "cpu") == torch.device("cpu")


def test_a_cublas_handle_that_cannot_be_made_is_taken_for_out_of_memory(monkeypatch):
    # On a nearly full GPU the first product of a process fails to make cuBLAS's
    # handle with this error, not an out-of-memory one; with the cache emptied it works.
    handle = "CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`"
    original = gpu._tile_norms
    calls = [0]

    def failing(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError(handle)
        return original(*args, **kwargs)

    monkeypatch.setattr(gpu, "_tile_norms", failing)
    rng = np.random.default_rng(8)
    tiles = smooth_images(rng, 40, 8)
    cells = smooth_images(rng, 33, 4)
    geometry = Geometry(4, 8)
    result = match_torch(cells, tiles, geometry, device=DEVICE, kernel="float64")
    reference = brute_force(cells, tiles, 8)
    assert np.array_equal(result.tile, reference.tile)
    assert np.array_equal(result.distance, reference.distance)
    assert calls[0] > 1


@pytest.mark.parametrize(("raised", "said"), [
    (RuntimeError("CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`"),
     "CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`"),
    # torch's own message goes on for a paragraph of allocator statistics: its first sentence.
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
                            "capacity of 139.8 GiB of which 1.2 GiB is free. Including..."),
     "CUDA out of memory"),
])
def test_the_last_out_of_memory_line_says_what_failed(monkeypatch, raised, said):
    def failing(*args, **kwargs):
        raise raised

    monkeypatch.setattr(gpu, "_tile_norms", failing)
    with pytest.raises(MosaicistError, match="even with the smallest chunks") as caught:
        match_torch(np.zeros((5, 4, 4, 3), np.uint8), np.zeros((20, 8, 8, 3), np.uint8),
                    Geometry(4, 8), device=DEVICE, kernel="float64")
    message = str(caught.value)
    # On CUDA the free memory comes between the chunks and the cause.
    assert re.search(r"\(8 tiles by 32 cells\)( \([^)]* GiB\))?: " + re.escape(said)
                     + "; free it from other programs", message), message
    assert "\n" not in message and "Tried to allocate" not in message


@pytest.mark.parametrize("settings", [
    {"preset": "seed"},
    {"preset": "seed", "aspect": "3:2", "limit": 20},
    {"preset": "seed", "cell_px": 5, "tile_px": 7},
    # Given as a flag, the chroma is applied to the GPU's picks as to the CPU's.
    {"preset": "seed", "chroma": 1},
    # The metric and the transforms are in what it is given, as for the exact search.
    {"preset": "seed", "metric": "lab"},
    {"preset": "seed", "metric": "oklab", "augment": "rotations"},
    {"preset": "seed", "augment": "all", "aspect": "3:2"},
])
def test_the_gpu_matcher_places_what_the_exact_search_places(tmp_path, monkeypatch, settings):
    # GpuMatcher on this CPU: the whole pipeline, candidates and geometry as a
    # mosaic gives them, against the exact search on the same settings.
    from conftest import noisy_target
    from PIL import Image

    from mosaicist import make_mosaic

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    searched = []
    original = gpu.match_torch

    def on_this_device(cells, tiles, geometry, device, *args, **kwargs):
        searched.append(device)
        return original(cells, tiles, geometry, DEVICE, *args, **kwargs)

    monkeypatch.setattr(gpu, "match_torch", on_this_device)
    folder = tmp_path / "tiles"
    folder.mkdir()
    for index, picture in enumerate(smooth_images(np.random.default_rng(4), 16, 12)):
        Image.fromarray(picture).save(folder / f"t{index:03d}.png")
    # Flat tiles, each twice (ties: the lower library position wins), and cells of their colours.
    target = noisy_target()
    for index, colour in enumerate([(10, 200, 30), (128, 128, 128), (250, 250, 5)]):
        flat = np.full((12, 12, 3), colour, np.uint8)
        Image.fromarray(flat).save(folder / f"t{20 + index:03d}.png")
        Image.fromarray(flat).save(folder / f"t{30 + index:03d}.png")
        target[index * 10:index * 10 + 10, :20] = colour
    base = {"cell_px": 8, "tile_px": 16, "cache_dir": tmp_path / "cache", **settings}
    on_gpu = make_mosaic(target, folder, device="cuda", **base)
    on_cpu = make_mosaic(target, folder, **base)
    assert (on_gpu.matcher, on_cpu.matcher) == ("gpu", "exact") and searched == ["cuda"]
    first, second = on_gpu.placements, on_cpu.placements
    assert np.array_equal(first.tile, second.tile)
    assert np.array_equal(first.distance, second.distance)
    assert first.distance.dtype == second.distance.dtype
    assert np.array_equal(first.transform, second.transform)
    # Both kinds of pick: smooth tiles, and the first of each pair of flat ones (16 to 18).
    assert len(np.unique(first.tile)) > 3 and 0 < np.isin(first.tile, [16, 17, 18]).sum()
    assert not np.isin(first.tile, [19, 20, 21]).any()  # the second of each pair


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("tile_count", [1, 63, 64, 65, 129])
@pytest.mark.parametrize("cell_count", [1, 31, 32, 33, 65])
def test_counts_around_the_chunk_sizes(small_chunks, kernel, tile_count, cell_count):
    # Chunks of 64 tiles and groups of 32 cells: counts just below, at and above them,
    # with copies of tile 0 on both sides of each chunk boundary (the first copy wins).
    rng = np.random.default_rng(tile_count * 100 + cell_count)
    tiles = smooth_images(rng, tile_count, 8)
    for copy in (63, 64, 127, 128):
        if copy < tile_count:
            tiles[copy] = tiles[0]
    cells = smooth_images(rng, cell_count, 4)
    cells[::3] = tiles[0, ::2, ::2]  # the copies tie exactly for these cells
    assert_same_as_brute_force(cells, tiles, 8, kernel)


@pytest.mark.parametrize("kernel", KERNELS)
def test_the_library_reaches_the_device_in_chunks_within_the_budget(monkeypatch, kernel):
    # Tiles of 8 x 8 x 3 = 192 values, 768 bytes as int32: a budget of 16 of them.
    monkeypatch.setattr(gpu, "TILE_BYTES", 16 * 768)
    seen = []
    get = gpu._TileStream.get

    def recording(self, start, stop):
        moved = get(self, start, stop)
        seen.append(moved.shape[0])
        return moved

    monkeypatch.setattr(gpu._TileStream, "get", recording)
    operands = []
    digits = gpu._digits

    def recording_digits(torch, sums, *args):
        operands.append(sums.shape[0])
        return digits(torch, sums, *args)

    monkeypatch.setattr(gpu, "_digits", recording_digits)
    rng = np.random.default_rng(2)
    tiles = smooth_images(rng, 300, 8)
    cells = smooth_images(rng, 40, 4)
    assert_same_as_brute_force(cells, tiles, 8, kernel)
    assert max(seen) == 16 and sum(seen) == 300
    assert all(count <= 16 for count in operands)


@pytest.mark.parametrize("dtype", [np.uint16, np.int64, np.float64])
def test_pixels_of_another_type_are_refused_by_name(dtype):
    # uint16 cells were cast and gave wrong picks silently (session 35).
    with pytest.raises(MosaicistError, match="cell_vectors must hold uint8"):
        match_torch(np.zeros((2, 4, 4, 3), dtype), np.zeros((3, 8, 8, 3), np.uint8),
                    Geometry(4, 8), device=DEVICE)
    with pytest.raises(MosaicistError, match="tiles must hold uint8"):
        match_torch(np.zeros((2, 4, 4, 3), np.uint8), np.zeros((3, 8, 8, 3), dtype),
                    Geometry(4, 8), device=DEVICE)
