"""Exact brute-force matching on a GPU (or any PyTorch device).

Every cell is compared with every tile, so the picks are the exact minimum
of the seed's objective, ties going to the lowest library position, exactly
as :func:`mosaicist.match.match_exact` and :func:`mosaicist.match.brute_force`
give them. A GPU does the ``cells x tiles`` dot products fast enough that
pruning is not needed.

Arithmetic
----------
For a compared cell vector ``a`` (``m = 3 h w`` values for compared
vectors of ``h x w`` pixels, see :class:`~mosaicist.grid.Geometry`; square
or not) and a tile ``b`` (``n = 3 match_height match_px``
values, block sums ``S_b`` over ``w = factor^2`` pixels) the objective is
``D = w |a|^2 - 2 <a, S_b> + |b|^2``: the squared distance between ``b``
and ``A``, the cell scaled up by pixel replication.

Shifting every pixel by 128 changes no difference, so ``D = |A' - b'|^2``
with ``A' = A - 128`` and ``b' = b - 128``, values in ``[-128, 127]``.
Because ``A'`` repeats each ``a'_p`` over a block of ``w`` pixels,
``|A'|^2 = w |a'|^2`` and ``<A', b'> = <a', S'_b>`` with
``S'_b = S_b - 128 w`` the block sums of ``b'``, hence::

    D = w |a'|^2 - 2 <a', S'_b> + |b'|^2.

The first term is the same for every tile of a cell, so the search takes
the minimum of ``E = |b'|^2 - 2 <a', S'_b>`` and adds it afterwards.

Kernels
-------
``"int8"`` (default on CUDA)
    The pooled form: ``a'`` fits int8, but ``S'_b`` lies in
    ``[-128 w, 127 w]``, so it is split into ``L`` balanced base-256 digits
    (``S' = sum_l 256^l d_l``, ``d_l`` in ``[-128, 127]``; ``L = 1`` for
    ``w = 1``, 2 for ``w <= 257``, at most 4) and ``<a', S'_b>`` is ``L``
    int8 x int8 -> int32 products (``torch._int_mm``, tensor cores)
    recombined with shifts. That is ``L m`` multiply-adds per pair against
    ``n = w m`` for the full-resolution form (``L <= w`` always, e.g. 2 m
    against 4 m for 16 px cells on 32 px tiles), and no upscaled cells are
    stored. Each int32 product is at most ``128 * 128 * K`` in magnitude, so
    the contraction is split into pieces of ``K <= 65536`` values (never
    reached below ``h w = 21845``, a 147 px square); pieces and digits are combined in int32
    while every partial sum provably fits, else int64. ``torch._int_mm`` on
    CUDA needs more than 16 rows and sizes that are multiples of 8: cells,
    tiles and the contraction are padded with zeros (which add nothing) and
    padded columns are dropped before the minimum.
``"float64"`` (default elsewhere)
    One float64 product ``a' S'^T`` per block. Every partial sum is an
    integer far below ``2^53`` (``|<a', S'_b>| <= 16384 n``), so whatever
    order the BLAS adds in, the result is exact. Used on CPUs, where int8
    products are not accelerated (PyTorch 2.13's CPU ``_int_mm`` took 260 s
    for a 4096 x 3072 x 4096 product that float64 did in 1.6 s), and on
    GPUs older than compute capability 7.5. No float32/TF32 anywhere, so PyTorch's matmul precision
    settings cannot change a result.

Memory
------
Tiles are streamed in chunks (they may be a memory map) through two
reusable host buffers (pinned on CUDA, so the copy of one chunk overlaps the
work on the previous one), pooled and split into digits on the device. A
tile chunk holds at most :data:`TILE_BYTES` as int32 on the device; each
``cells x tiles`` block of scores holds at most :data:`BLOCK_BYTES` at its
widest dtype (a few such blocks live at once: the digit products, ``E``
and its minimum), and the centred cells stay on the device in groups of at
most :data:`CELL_BYTES` (counted as float64). Peak device memory is
therefore a couple of GiB at most, whatever the sizes. On CUDA these
budgets are halved until they fit in half of the free device memory (a
MIG slice, a GPU shared with other programs), and a
``torch.OutOfMemoryError`` (or cuBLAS failing to allocate, or to make its
handle) drops the group of cells being searched, empties PyTorch's cache
and searches it again with halved budgets; at the smallest chunks it is one
:class:`~mosaicist.errors.MosaicistError` line saying what failed. Pinned host memory that
cannot be had gives ordinary buffers and synchronous copies. The running
``(minimum, lowest index)`` per cell is merged chunk by chunk with a
strict ``<``: ``argmin`` returns the first minimum within a chunk and
earlier chunks win ties across chunks (CUDA's ``argmin`` breaks ties between
threads by index too, and every score is an exact integer, so the order of
a reduction never matters).

Devices
-------
Any PyTorch device name: ``cuda`` (the current GPU), ``cuda:N`` (checked
against the visible devices, so ``cuda:1`` on a one-GPU machine, or one
hidden by ``CUDA_VISIBLE_DEVICES``, is a one-line error), ``cpu``. Every
device is probed with a one-element tensor written there and read back
first, so a device PyTorch knows but cannot use (a CPU build asked for
``mps``, ``meta``, a GPU the build has no kernels for) fails in one line
too. Where torch says why CUDA cannot be used in a warning (no driver, one
too old for the build), the reason goes into that line instead; a torch
that is installed but cannot be imported (a CUDA library missing) is one
line as well. The tests run on a GPU with ``MOSAICIST_TEST_DEVICE=cuda`` and
``benchmarks/bench_gpu.py`` checks exactness there.
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import MosaicistError, OptionError, alternatives, install_extra
from ..grid import Geometry
from ..progress import progress_bar
from ._features import checked_search
from ._registry import Matcher, MatchRequest, MatchResult

if TYPE_CHECKING:
    import torch

    from ..options import MosaicOptions

#: Largest device block of ``cells x tiles`` scores, in bytes at its widest dtype.
BLOCK_BYTES = 256 << 20
#: Largest tile chunk on the device, in bytes as int32 (pixels while pooling).
TILE_BYTES = 256 << 20
#: Most tiles per chunk, whatever the tile size (bounds the host buffers).
MAX_TILE_CHUNK = 16384
#: Largest group of centred cells kept on the device at once, in bytes.
CELL_BYTES = 1 << 30
#: Longest contraction of one int8 product: 128 * 128 * 65536 = 2^30 fits int32.
K_SPLIT = 65536
#: Row multiple of the padded cell blocks (``torch._int_mm`` needs > 16 rows).
ROW_MULTIPLE = 32
#: Column and contraction multiple of ``torch._int_mm``.
COL_MULTIPLE = 8
#: Largest divisor of the memory budgets (far below it the chunks are at their minimum).
MAX_SHRINK = 1 << 20

KERNELS = ("int8", "float64")
INSTALL_HINT = f"install the gpu extra: {install_extra('gpu')}"
#: The refusal of a CUDA device that PyTorch cannot use (``value`` the device, ``why`` what
#: torch warned). A template, so that the studio can say it in its own words.
CUDA_UNAVAILABLE = ("{device} {value} asked for but CUDA is not available (PyTorch finds no "
                    "usable NVIDIA GPU{why}); use {device} cpu or a CUDA build of PyTorch")
#: The refusal of a setting the GPU search cannot honour (``value`` the device).
GPU_EXACT_ONLY = ("{device} {value} runs the exact nearest-tile search only (any {metric} and "
                  "{augment}; no {tint}, {tint_max}, {contrast} or repetition limits)")


def _first_line(error: BaseException | str) -> str:
    """The first line of what ``error`` says, without torch's "(Triggered internally at ...)"."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return re.sub(r"\s*\(Triggered internally at [^)]*\)\.?$", "", text).strip()


def _import_torch() -> Any:
    """Import PyTorch, or raise a one-line :class:`MosaicistError`."""
    try:
        import torch
    except ModuleNotFoundError as error:
        if error.name != "torch":
            # A package torch needs is missing, not torch itself.
            raise MosaicistError(f"PyTorch is installed but cannot be imported: "
                                 f"{_first_line(error)}; {INSTALL_HINT}") from None
        raise MosaicistError(f"PyTorch is not installed; {INSTALL_HINT}") from None
    except Exception as error:  # noqa: BLE001 - a broken install raises several kinds
        # A CUDA build whose libraries cannot be loaded (an ImportError or
        # OSError naming libcudart.so...), one built against another numpy...
        raise MosaicistError(f"PyTorch is installed but cannot be imported: "
                             f"{_first_line(error)}; {INSTALL_HINT}") from None
    return torch


def _quietly(call: Any) -> tuple[Any, list[str]]:
    """``call()`` and the first lines of the warnings it gave, which are not shown.

    torch says why CUDA cannot be used (no driver, a driver too old for the
    build) in a multi-line warning, not in the answer: the reason goes into
    the one-line error instead.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = call()
    return value, [_first_line(warning.message) for warning in caught]


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def digit_count(weight: int) -> int:
    """Balanced base-256 digits needed for block sums of ``weight`` centred pixels.

    ``L`` digits in ``[-128, 127]`` cover ``[-128 R, 127 R]`` with
    ``R = (256^L - 1) / 255``; centred block sums lie in ``[-128 w, 127 w]``.
    """
    digits = 1
    while (256**digits - 1) // 255 < weight:
        digits += 1
    return digits


def _resolve_device(
    torch: Any, device: str | torch.device, probe: bool = True
) -> torch.device:
    """Return ``device`` as a ``torch.device``, checked to be usable.

    A CUDA device is checked against the visible devices (``cuda:1`` on a
    machine with one GPU, or with ``CUDA_VISIBLE_DEVICES`` hiding it), and
    with ``probe`` any device is given a one-element tensor, so that a
    device PyTorch knows but cannot use fails here in one line rather than
    mid-search. Without ``probe`` no CUDA context is made: the checks made
    before any work run in a process that may fork tile decoders afterwards.
    """
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        # torch lists the signatures it accepts on the lines after the first.
        raise MosaicistError(f"unknown torch device {device!r}: {_first_line(error)}") from None
    if resolved.type == "cuda":
        (available, visible), reasons = _quietly(
            lambda: (torch.cuda.is_available(), torch.cuda.device_count()))
        if not available:
            # An OptionError, so that the command line names its flag (--device cpu).
            raise OptionError(
                CUDA_UNAVAILABLE, value=str(resolved),
                why="".join(f"; torch warned: {r}" for r in reasons[:1]))
        if resolved.index is not None and resolved.index >= visible:
            seen = ("1 CUDA device is visible (cuda:0" if visible == 1 else
                    f"{visible:,} CUDA devices are visible (cuda:0 to cuda:{visible - 1}")
            raise OptionError(
                "{device} {value} asked for but only {seen}; CUDA_VISIBLE_DEVICES renumbers "
                "them)", value=str(resolved), seen=seen)
    if not probe:
        return resolved
    failed: str | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # Written on the device and read back: a device that allocates but
            # holds no data ("meta"), or a GPU this build has no kernels for, fails here.
            torch.zeros(1, device=resolved).cpu()
        except Exception as error:  # noqa: BLE001 - torch raises several kinds here
            failed = _first_line(error)
    if failed is not None:
        # torch's warning, when it gave one, says why (a GPU too old for this build).
        why = "".join(f" (torch warned: {_first_line(w.message)})" for w in caught[:1])
        raise MosaicistError(f"torch device {resolved} cannot be used: {failed}{why}")
    for warning in caught:
        # It works: what torch said is shown as it would have been.
        warnings.warn_explicit(warning.message, warning.category, warning.filename,
                               warning.lineno)
    return resolved


def _default_kernel(torch: Any, device: torch.device) -> str:
    """int8 tensor-core products on CUDA GPUs that have them, else float64."""
    if device.type == "cuda" and torch.cuda.get_device_capability(device) >= (7, 5):
        return "int8"
    return "float64"


def _plan(
    geometry: Geometry, kernel: str, cell_count: int, shrink: int = 1
) -> tuple[int, int, int, int]:
    """Return ``(tile_chunk, cell_block, cell_group, contraction)`` sizes.

    ``contraction`` is the (padded, for int8) length of the compared vectors.
    ``shrink`` divides every memory budget (a power of two, raised when the
    device has little free memory or runs out of it).
    """
    length = geometry.length
    tile_values = geometry.pixels * 3
    contraction = _round_up(length, COL_MULTIPLE) if kernel == "int8" else length
    # Pixels are widened to int32 for pooling: that is the largest per-tile buffer.
    per_tile = 4 * max(tile_values, contraction)
    tile_chunk = max(COL_MULTIPLE, min(MAX_TILE_CHUNK, TILE_BYTES // shrink // per_tile))
    tile_chunk = tile_chunk // COL_MULTIPLE * COL_MULTIPLE
    # Cells are float64 for that kernel: 8 bytes per value bounds both kernels.
    cells_fit = max(ROW_MULTIPLE,
                    CELL_BYTES // shrink // (8 * contraction) // ROW_MULTIPLE * ROW_MULTIPLE)
    # Score blocks are int64/float64 at their widest.
    cell_block = max(ROW_MULTIPLE, BLOCK_BYTES // shrink // (8 * tile_chunk))
    cell_block = cell_block // ROW_MULTIPLE * ROW_MULTIPLE
    cell_block = min(cell_block, cells_fit, _round_up(max(cell_count, 1), ROW_MULTIPLE))
    cell_group = max(cell_block, cells_fit // cell_block * cell_block)
    return tile_chunk, cell_block, cell_group, contraction


def _budget_bytes(shrink: int = 1) -> int:
    """A generous bound on the device memory one search allocates at ``shrink``.

    The pooling step holds the uint8 chunk and two int32 copies of it, the
    int8 score step a few int32 blocks next to the int64 result, and the
    cell group is there throughout; cuBLAS's workspace and the allocator's
    rounding come on top, hence the third block and tile chunk.
    """
    return (CELL_BYTES + 3 * TILE_BYTES + 3 * BLOCK_BYTES) // shrink


def _initial_shrink(torch: Any, device: torch.device) -> int:
    """The smallest power-of-two ``shrink`` whose budget is at most half the free memory.

    Only CUDA reports its free memory; other devices get the full budgets.
    Half, because other processes, the CUDA context and fragmentation need
    room too, and an out-of-memory error costs a retry.
    """
    if device.type != "cuda":
        return 1
    try:
        free, _total = torch.cuda.mem_get_info(device)
    except RuntimeError:
        return 1
    shrink = 1
    while _budget_bytes(shrink) > free // 2 and shrink < MAX_SHRINK:
        shrink *= 2
    return shrink


def _is_out_of_memory(torch: Any, error: BaseException) -> bool:
    """Whether ``error`` is the device (or cuBLAS, or pinned host memory) running out.

    cuBLAS makes its handle on the first product of a process: on a GPU that
    is nearly full that fails as ``CUBLAS_STATUS_NOT_INITIALIZED when calling
    cublasCreate(handle)``, not as an out-of-memory error, and succeeds once
    PyTorch's cache is emptied.
    """
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        sign in text for sign in ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED",
                                  "CUBLAS_STATUS_NOT_INITIALIZED")
    )


def _memory_line(torch: Any, device: torch.device) -> str:
    """``"x.x GiB free of y.y GiB"`` on CUDA, else an empty string."""
    if device.type != "cuda":
        return ""
    try:
        free, total = torch.cuda.mem_get_info(device)
    except RuntimeError:
        return ""
    return f" ({free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB)"


class _TileStream:
    """Copy tile chunks from a (memory-mapped) array to the device.

    Two host buffers alternate: on CUDA they are pinned and the copy is
    asynchronous, and an event per buffer keeps a buffer from being refilled
    while its previous copy is still in flight. When pinned memory cannot be
    had (a container's locked-memory limit), the buffers are ordinary and
    each copy is synchronous: slower, never wrong.
    """

    def __init__(self, torch: Any, tiles: np.ndarray, chunk: int, device: torch.device) -> None:
        self.torch = torch
        self.tiles = tiles
        self.device = device
        shape = (min(chunk, len(tiles)), *tiles.shape[1:])
        self.buffers, pinned = _host_buffers(torch, shape, device.type == "cuda")
        self.events = [torch.cuda.Event() if pinned else None for _ in range(2)]
        self.turn = 0

    def get(self, start: int, stop: int) -> torch.Tensor:
        """Return tiles ``start:stop`` as a uint8 tensor on the device."""
        turn = self.turn
        self.turn ^= 1
        event = self.events[turn]
        if event is not None:
            event.synchronize()
        host = self.buffers[turn][: stop - start]
        host.numpy()[...] = self.tiles[start:stop]
        if event is None:
            # On the CPU the tensor is used (and finished with) before this
            # buffer is refilled two chunks later, so no copy is needed; from
            # pageable memory a copy to a GPU returns once the host side is read.
            return host.to(self.device)
        moved = host.to(self.device, non_blocking=True)
        event.record()
        return moved


def _host_buffers(torch: Any, shape: tuple[int, ...], pin: bool) -> tuple[list[Any], bool]:
    """Two uint8 host buffers of ``shape``, pinned if asked and possible; and whether pinned."""
    if pin:
        try:
            return [torch.empty(shape, dtype=torch.uint8, pin_memory=True)
                    for _ in range(2)], True
        except RuntimeError:
            pass
    return [torch.empty(shape, dtype=torch.uint8) for _ in range(2)], False


def _centred_sums(torch: Any, raw: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """Block sums of the centred tiles, ``S' = S - 128 w``: ``(T, m)`` int32."""
    count = raw.shape[0]
    (height, width), factor = geometry.shape, geometry.factor
    pixels = raw.to(torch.int32) - 128
    if factor == 1:
        return pixels.reshape(count, -1)
    blocks = pixels.reshape(count, height, factor, width, factor, 3)
    return blocks.sum(dim=(2, 4), dtype=torch.int32).reshape(count, -1)


def _tile_norms(torch: Any, raw: torch.Tensor) -> torch.Tensor:
    """``|b'|^2`` per tile over its centred pixels, int64."""
    flat = raw.reshape(raw.shape[0], -1).to(torch.int32) - 128
    # Each square is at most 2^14, so int32 holds rows of up to 2^17 values.
    if flat.shape[1] <= 1 << 16:
        return (flat * flat).sum(dim=1, dtype=torch.int32).to(torch.int64)
    return (flat * flat).to(torch.int64).sum(dim=1)


def _digits(torch: Any, sums: torch.Tensor, count: int, contraction: int) -> torch.Tensor:
    """Split centred block sums into ``count`` balanced base-256 int8 digits.

    Returns ``(count, T_pad, contraction)`` int8, zero-padded to the sizes
    ``torch._int_mm`` accepts.
    """
    tiles, length = sums.shape
    padded_tiles = _round_up(tiles, COL_MULTIPLE)
    out = torch.zeros((count, padded_tiles, contraction), dtype=torch.int8, device=sums.device)
    rest = sums
    for digit in range(count):
        # Bitwise and of two's complement gives the low byte of negatives too.
        low = ((rest + 128) & 255) - 128
        out[digit, :tiles, :length] = low.to(torch.int8)
        rest = (rest - low) >> 8
    return out


def match_torch(
    cell_vectors: np.ndarray,
    tiles: np.ndarray,
    geometry: Geometry,
    device: str | torch.device = "cuda",
    show_progress: bool = False,
    *,
    kernel: str | None = None,
) -> MatchResult:
    """Find, for every cell, the tile of minimum objective by exhaustive search.

    The result is identical to :func:`mosaicist.match.match_exact`: exact
    integer distances, ties going to the lowest library position. See the
    module documentation for the arithmetic, the kernels and the memory used.

    Parameters
    ----------
    cell_vectors : numpy.ndarray
        ``(N, h, w, 3)`` uint8 from :meth:`Geometry.cell_vectors` (``Geometry.shape``).
    tiles : numpy.ndarray
        ``(M, match_height, match_px, 3)`` uint8 in library order (may be memory-mapped).
    geometry : Geometry
        How cells and tiles are compared.
    device : str or torch.device
        PyTorch device to compute on (``"cuda"``, ``"cuda:1"``, ``"cpu"``...).
    show_progress : bool
        Draw a progress bar over the tiles.
    kernel : {"int8", "float64"}, optional
        Force a kernel; by default int8 on CUDA GPUs of compute capability
        7.5 or newer, float64 elsewhere. Both are exact.

    Returns
    -------
    MatchResult
        ``tile`` and ``distance`` as int64 arrays; ``evaluated`` is ``N * M``.

    Raises
    ------
    MosaicistError
        When PyTorch is not installed or cannot be imported, the device is
        unknown or cannot be used (CUDA asked for but unavailable), the
        arrays do not fit the geometry, or the device runs out of memory even
        with the smallest chunks.
    """
    torch = _import_torch()
    where = _resolve_device(torch, device)
    if kernel is None:
        kernel = _default_kernel(torch, where)
    if kernel not in KERNELS:
        raise MosaicistError(f"unknown kernel {kernel!r}; use {alternatives(KERNELS)}")
    (height, width), (match_height, match_px) = geometry.shape, geometry.match_shape
    if cell_vectors.ndim != 4 or cell_vectors.shape[1:] != (height, width, 3):
        raise MosaicistError(
            f"cell vectors of shape {cell_vectors.shape} do not fit {width}x{height} RGB"
        )
    if tiles.ndim != 4 or tiles.shape[1:] != (match_height, match_px, 3):
        raise MosaicistError(
            f"tiles of shape {tiles.shape} do not fit {match_px}x{match_height} RGB"
        )
    # Pixels of another type (uint16, float) were cast and gave wrong picks silently.
    cell_vectors, tiles = checked_search(cell_vectors, tiles, geometry, None)
    count, tile_count = len(cell_vectors), len(tiles)
    if tile_count == 0:
        raise MosaicistError("no tiles to match against")
    if count == 0:
        empty = np.empty(0, np.int64)
        return MatchResult(empty, empty.copy(), 0)

    weight = geometry.weight
    shrink = _initial_shrink(torch, where)
    plan = _plan(geometry, kernel, count, shrink)
    digits = digit_count(weight) if kernel == "int8" else 1
    # |<a', S'>| <= 16384 n and |b'|^2 <= 16384 n; the digit terms can reach
    # twice their sum's bound before cancelling, hence the margin of 4.
    narrow = 4 * 3 * 16384 * geometry.pixels * 3 < 2**31
    flat_cells = cell_vectors.reshape(count, geometry.length)
    best_distance = np.empty(count, np.int64)
    best_tile = np.empty(count, np.int64)
    # Events, pinned buffers and streams belong to the chosen GPU, not the current one.
    guard = torch.cuda.device(where) if where.type == "cuda" else contextlib.nullcontext()

    with guard, torch.inference_mode(), progress_bar(
        tile_count * math.ceil(count / plan[2]), "matching", unit="tile",
        enabled=show_progress,
    ) as bar:
        passed = 0  # tiles the bar has been told of, also when disabled
        group_start = 0
        stream: _TileStream | None = None
        while group_start < count:
            if stream is None:
                stream = _TileStream(torch, tiles, plan[0], where)
            group_stop = min(count, group_start + plan[2])
            done = [0]

            def advance(tiles_done: int, done: list[int] = done) -> None:
                done[0] += tiles_done
                bar.update(tiles_done)

            out_of_memory: str | None = None
            try:
                value, index = _match_group(
                    torch, flat_cells[group_start:group_stop], stream, where, geometry,
                    kernel, plan, digits, narrow, advance)
            except Exception as error:
                if not _is_out_of_memory(torch, error):
                    raise
                # Only its first sentence (torch's goes on with the allocator's
                # statistics), not the error, whose traceback holds the group's tensors.
                out_of_memory = _first_line(error).split(". ")[0].rstrip(".")
            if out_of_memory is not None:
                # Outside the except block, so the traceback no longer holds the
                # failed group's tensors when the cache is emptied.
                stream = None
                if where.type == "cuda":
                    torch.cuda.synchronize(where)
                    torch.cuda.empty_cache()
                # Halve the budgets until the sizes change: a budget above its
                # cap (MAX_TILE_CHUNK, the cell count) changes nothing when halved.
                smaller, plan_shrink = plan, shrink
                while smaller == plan and plan_shrink < MAX_SHRINK:
                    plan_shrink *= 2
                    smaller = _plan(geometry, kernel, count, plan_shrink)
                if smaller == plan:
                    raise MosaicistError(
                        f"the torch device {where} ran out of memory even with the "
                        f"smallest chunks ({plan[0]:,} tiles by {plan[1]:,} cells)"
                        f"{_memory_line(torch, where)}: {out_of_memory}; free it from other "
                        "programs or match on the CPU")
                shrink, plan = plan_shrink, smaller
                bar.update(-done[0])
                bar.total = passed + tile_count * math.ceil((count - group_start) / plan[2])
                continue
            passed += done[0]
            # D = w |a'|^2 + E: the cell's constant term, added back now that
            # the minimum is known.
            centred = flat_cells[group_start:group_stop].astype(np.int64) - 128
            best_distance[group_start:group_stop] = (
                weight * np.einsum("ij,ij->i", centred, centred) + value
            )
            best_tile[group_start:group_stop] = index
            group_start = group_stop

    return MatchResult(best_tile, best_distance, count * tile_count)


def _match_group(
    torch: Any,
    cells: np.ndarray,
    stream: _TileStream,
    where: torch.device,
    geometry: Geometry,
    kernel: str,
    plan: tuple[int, int, int, int],
    digits: int,
    narrow: bool,
    advance: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """``(minimum of E, lowest tile index)`` for one group of flat cells, over all tiles.

    Everything this allocates on the device is local, so an out-of-memory
    error leaves nothing behind once it has been handled.
    """
    tile_chunk, cell_block, _, contraction = plan
    tile_count = len(stream.tiles)
    group = _upload_cells(torch, cells, where, kernel, contraction)
    rows = len(cells)
    value = torch.full((rows,), torch.iinfo(torch.int64).max, dtype=torch.int64,
                       device=where)
    index = torch.zeros((rows,), dtype=torch.int64, device=where)
    for start in range(0, tile_count, tile_chunk):
        stop = min(tile_count, start + tile_chunk)
        raw = stream.get(start, stop)
        norms = _tile_norms(torch, raw)
        sums = _centred_sums(torch, raw, geometry)
        del raw
        if kernel == "int8":
            operand = _digits(torch, sums, digits, contraction)
            # Padded like the digits' tile axis; padded columns are dropped below.
            norms_row = torch.zeros(operand.shape[1], dtype=torch.int32 if narrow
                                    else torch.int64, device=where)
            norms_row[: stop - start] = norms
        else:
            operand = sums.to(torch.float64)
            norms_row = norms.to(torch.float64)
        del sums
        for block_start in range(0, rows, cell_block):
            block = group[block_start:block_start + cell_block]
            if kernel == "int8":
                scores = _int8_scores(torch, block, operand, norms_row, narrow)
            else:
                scores = norms_row - 2.0 * (block @ operand.T)
            scores = scores[:, : stop - start]
            # argmin gives the first minimum, i.e. the lowest tile index (on
            # CUDA too: its reduction breaks ties between threads by index).
            position = scores.argmin(dim=1)
            lowest = scores.gather(1, position[:, None])[:, 0].to(torch.int64)
            live = min(cell_block, rows - block_start)
            lowest, position = lowest[:live], position[:live]
            current = value[block_start:block_start + live]
            # Strict: on equal scores the earlier chunk keeps its tile.
            better = lowest < current
            value[block_start:block_start + live] = torch.where(better, lowest, current)
            index[block_start:block_start + live] = torch.where(
                better, position + start, index[block_start:block_start + live]
            )
        advance(stop - start)
    return value.cpu().numpy(), index.cpu().numpy()


def _upload_cells(
    torch: Any, flat: np.ndarray, device: torch.device, kernel: str, contraction: int
) -> torch.Tensor:
    """Centred cells on the device: int8 zero-padded for int8, else float64."""
    rows, length = flat.shape
    # A fresh int16 copy: the input may be read-only, which torch.from_numpy warns about.
    centred = torch.from_numpy(flat.astype(np.int16) - 128).to(device)
    if kernel != "int8":
        return centred.to(torch.float64)
    padded = torch.zeros((_round_up(rows, ROW_MULTIPLE), contraction), dtype=torch.int8,
                         device=device)
    padded[:rows, :length] = centred.to(torch.int8)
    return padded


def _int8_scores(
    torch: Any, block: torch.Tensor, digits: torch.Tensor, norms: torch.Tensor, narrow: bool
) -> torch.Tensor:
    """``E = |b'|^2 - 2 <a', S'_b>`` for a block of cells and a chunk of tiles.

    ``block`` is ``(C, K)`` int8 and ``digits`` ``(L, T, K)`` int8; the digit
    products are combined highest first (Horner), in int32 when ``narrow``.
    """
    accumulate = torch.int32 if narrow else torch.int64
    contraction = block.shape[1]
    dot: torch.Tensor | None = None
    for digit in range(digits.shape[0] - 1, -1, -1):
        part: torch.Tensor | None = None
        for k_start in range(0, contraction, K_SPLIT):
            k_stop = min(contraction, k_start + K_SPLIT)
            # tiles.T of a contiguous (T, K) tensor: the layout cuBLAS's int8 GEMM takes.
            left, right = block, digits[digit]
            if contraction > K_SPLIT:
                # Contiguous pieces keep the plain layouts the int8 GEMM is known to take.
                left = left[:, k_start:k_stop].contiguous()
                right = right[:, k_start:k_stop].contiguous()
            product = torch._int_mm(left, right.T).to(accumulate)
            part = product if part is None else part + product
        assert part is not None
        dot = part if dot is None else dot * 256 + part
    assert dot is not None
    return norms - 2 * dot


class GpuMatcher(Matcher):
    """The exact search as integer GEMMs on an NVIDIA GPU with PyTorch (:func:`match_torch`)."""

    name = "gpu"
    devices = ("cuda",)

    def unsupported(self, options: MosaicOptions) -> OptionError | None:
        # The metric and the transforms are in the vectors and candidates it is given
        # (as the exact search's); tints and gains change the ranking it makes.
        if options.tint or options.contrast or options.tint_max is not None:
            return OptionError(GPU_EXACT_ONLY, value="cuda")
        return None

    def check_runs(self, options: MosaicOptions) -> None:
        _resolve_device(_import_torch(), "cuda", probe=False)

    def match(self, request: MatchRequest) -> MatchResult:
        return match_torch(request.cell_vectors, request.candidates, request.geometry, "cuda",
                           request.show_progress)
