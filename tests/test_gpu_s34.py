"""The PyTorch matcher on the CPU (session 34): hostile devices and the brute-force oracle."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mosaicist.errors import MosaicistError  # noqa: E402
from mosaicist.grid import Geometry  # noqa: E402
from mosaicist.match import _gpu as gpu  # noqa: E402
from mosaicist.match import brute_force, match_exact, match_torch  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: these tensors are tiny (see tests/test_gpu.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("device", [None, 3.5, "bogus"])
def test_a_device_torch_cannot_name_is_one_line(device):
    # torch.device(None) answers with the signatures it accepts, over several lines.
    geometry = Geometry(2, 4)
    with pytest.raises(MosaicistError, match="unknown torch device") as caught:
        match_torch(np.zeros((1, 2, 2, 3), np.uint8), np.zeros((1, 4, 4, 3), np.uint8),
                    geometry, device)
    assert "\n" not in str(caught.value)


def _library(rng: np.random.Generator, kind: str, count: int, side: int) -> np.ndarray:
    if kind == "extreme":
        return (rng.integers(0, 2, (count, side, side, 3)) * 255).astype(np.uint8)
    if kind == "flat":
        levels = rng.integers(0, 256, (count, 1, 1, 3), dtype=np.uint8)
        return np.ascontiguousarray(np.broadcast_to(levels, (count, side, side, 3)))
    if kind == "copies":
        one = rng.integers(0, 256, (3, side, side, 3), dtype=np.uint8)
        return one[rng.integers(0, 3, count)]
    return rng.integers(0, 256, (count, side, side, 3), dtype=np.uint8)


@pytest.mark.parametrize("kernel", ["float64", "int8"])
@pytest.mark.parametrize(("cell", "tile"), [(1, 1), (3, 7), (2, 6), (1, 17), (5, 3)])
@pytest.mark.parametrize("kind", ["random", "extreme", "flat", "copies"])
def test_odd_sizes_and_hostile_libraries_give_the_brute_force(monkeypatch, kernel, cell, tile,
                                                              kind):
    # Chunks of 8 tiles and 32 cells: 1, 7, 8, 9 and 17 tiles fall either side of them.
    monkeypatch.setattr(gpu, "MAX_TILE_CHUNK", 8)
    monkeypatch.setattr(gpu, "BLOCK_BYTES", 32 * 8 * 8)
    monkeypatch.setattr(gpu, "CELL_BYTES", 1)
    rng = np.random.default_rng(cell * 100 + tile)
    geometry = Geometry(cell, tile)
    for tile_count in (1, 7, 8, 9, 17):
        tiles = _library(rng, kind, tile_count, tile)
        cells = _library(rng, "extreme" if kind == "flat" else "random", 33, cell)
        cells[0], cells[1] = 0, 255
        vectors = geometry.cell_vectors(cells)
        result = match_torch(vectors, tiles, geometry, "cpu", kernel=kernel)
        reference = brute_force(cells, tiles, tile)
        assert np.array_equal(result.tile, reference.tile)
        assert np.array_equal(result.distance, reference.distance)
        exact = match_exact(vectors, tiles, geometry)
        assert np.array_equal(exact.tile, reference.tile)
