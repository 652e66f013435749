"""Writing pictures of any size from a stream of horizontal bands.

A gigapixel mosaic (say 102,400 x 76,800 pixels, 23.6 GB of RGB) cannot be
held in memory, so it is drawn as horizontal bands (one row of cells at a
time) and every writer here consumes those bands as they come, keeping only
a few rows:

* **PNG**: our own encoder. Each row gets the PNG filter (None, Sub, Up or
  Average) that minimises the sum of absolute differences, chosen with NumPy
  for a whole block of rows at once; blocks of about 4 MB are deflated on a
  thread pool as independent raw deflate streams ended with a sync flush
  (byte-aligned, not final), which concatenate into one zlib stream, as
  ``pigz`` does. The Adler-32 checksums of the blocks are combined.
  Deflate is ISA-L's (python-isal, in the ``fast`` extra) when installed:
  at level 1 it is about 3.5 times as fast as zlib's and its files are a
  little smaller; zlib's otherwise. TIFF's deflate tiles use it too.
* **JPEG**: each block of whole MCU rows is encoded by Pillow with a restart
  marker after every MCU row and the same tables; the blocks are spliced into
  one image: the first block's headers with the frame height patched, every
  block's entropy-coded data with its restart markers renumbered to continue
  modulo 8, a restart marker between blocks, one EOI. Restarts make MCU rows
  independent, so the file is byte-identical to Pillow encoding the whole
  picture with ``restart_marker_rows=1``.
* **WebP** cannot be streamed (libwebp encodes a whole picture); the bands
  are gathered into one Pillow image and encoded at the end. Only the
  Pillow's copy (4 bytes a pixel) plus libwebp's ARGB and YUV copies come
  to about 11 bytes a pixel, so WebP outputs are limited to
  :data:`WEBP_MAX_PIXELS` (160 megapixels, under 2 GB) as well as to the
  format's 16383 px a side. Near that limit a detailed picture can still
  outgrow what the format holds (VP8 gives the block headers 512 KB: a
  16,383 x 9,675 px mosaic of 129 px tiles does, one of 12,288 x 12,288 px
  of 64 px tiles does not); libwebp's refusal is then one line naming the
  file and the formats that can (:data:`WEBP_ERRORS`).
* **TIFF**: a tiled (256 x 256) BigTIFF written with tifffile, deflate with
  the horizontal predictor by default, pyramidal by default: reduced
  levels are SubIFDs (subfile type 1), each :func:`mosaicist.render.reduce_half`
  of the level above, down to the first level that fits in one tile. All
  levels are made in one pass: the full-size level streams into the file
  while the reduced levels, produced from the same bands by
  :class:`~mosaicist.render.HalvingStream`, are compressed tile by tile into
  an anonymous spool file beside the output; tifffile then copies their
  pre-compressed tiles into the file. Memory holds one row of tiles per level.

Every writer checks the format's size limit before reading a band, writes to
a temporary file beside the output and renames it into place only when the
file is complete (:func:`mosaicist.paths.atomic_path`).

A resolution (``dpi``, the ``dpi`` setting) is recorded where each format
keeps one, so that a print lab or an editor sizes the picture as planned
(:mod:`mosaicist.sizing`): PNG ``pHYs`` (pixels per metre, rounded: 150 dpi
reads back as 150.01), JPEG JFIF density in dots per inch, TIFF
``XResolution``/``YResolution`` with ``ResolutionUnit`` inch (each reduced
level of the pyramid at the resolution that keeps the same printed size),
and WebP, which has no resolution field of its own, EXIF ``XResolution``/
``YResolution``/``ResolutionUnit``. Without one, no resolution is written
(TIFF keeps tifffile's "no unit"), as before.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import zlib
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .._runtime import OrderedJobs
from ..errors import MosaicistError, OptionError, alternatives
from ..paths import atomic_path, output_path
from ..progress import progress_bar
from ._formats import OutputFormat, Picture, output_format
from ._pyramid import HalvingStream, half_size

try:
    # Intel's ISA-L deflate, with zlib's interface: several times faster (see the module).
    from isal import isal_zlib as _deflate
except ImportError:  # the fast extra is not installed
    _deflate = zlib  # type: ignore[misc]

if TYPE_CHECKING:
    from ..options import MosaicOptions

#: Quality of JPEG and WebP files (and JPEG-compressed TIFF tiles) when none is given.
DEFAULT_QUALITY = 92
#: Largest WebP picture: it is encoded whole, at about 11 bytes a pixel.
WEBP_MAX_PIXELS = 160_000_000
#: zlib level of PNG files (1: the fastest level that compresses).
PNG_LEVEL = 1
#: Pillow's JPEG chroma subsampling: 0 is 4:4:4, which keeps the tiles' colour detail.
JPEG_SUBSAMPLING = 0
#: libwebp's effort, 0 (fast) to 6 (small).
WEBP_METHOD = 4
#: libwebp's ``WebPEncodingError`` codes (as Pillow's "encoding error N" says them) of a
#: picture the format cannot hold, in words; and those of memory running out.
WEBP_ERRORS = {
    "5": "a side is over the format's 16,383 px",
    "6": "its block headers are over the 512 KB the format gives them (a detailed picture "
         "of about 150 megapixels or more)",
    "7": "its coded data is over the 16 MB a partition of the format holds",
    "9": "the file would be over the format's 4 GB",
}
WEBP_OUT_OF_MEMORY = frozenset({"1", "2"})
#: Largest resolution recorded: JPEG's JFIF density is a 16-bit field.
MAX_DPI = 65535
#: Largest JPEG side: libjpeg's ``JPEG_MAX_DIMENSION``, below the format's 65535. Pillow's
#: encoder fails past it ("Maximum supported image dimension is 65500 pixels"), and so
#: does every libjpeg-based reader, so it is refused before any work.
JPEG_MAX_SIDE = 65500
#: EXIF tags of a resolution (WebP): XResolution, YResolution, ResolutionUnit (2: inch).
EXIF_X_RESOLUTION, EXIF_Y_RESOLUTION, EXIF_RESOLUTION_UNIT, EXIF_INCH = 0x011A, 0x011B, 0x0128, 2

#: TIFF compressions; ``lzw`` and ``jpeg`` need the ``imagecodecs`` package.
TIFF_COMPRESSIONS = ("deflate", "none", "lzw", "jpeg")
#: Side of a TIFF tile.
TIFF_TILE = 256
#: zlib level of TIFF deflate tiles: level 1 is about twice as fast as the
#: default 6 and, after the predictor, within about 2% of its size.
TIFF_DEFLATE_LEVEL = 1

#: Raw bytes per block of rows that one thread filters and deflates (PNG) or
#: encodes (JPEG): large enough to amortise the per-block cost, small enough
#: that a block per thread in flight stays far below the memory goal.
BLOCK_BYTES = 1 << 20
#: Raw bytes of rows that the PNG filter handles at once.
FILTER_BYTES = 128 << 10
#: Largest IDAT chunk (the format allows 2**31 - 1 bytes).
PNG_MAX_CHUNK = 1 << 30

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: An empty final deflate block (fixed Huffman codes, end-of-block only).
DEFLATE_FINAL_BLOCK = b"\x03\x00"
JPEG_SOS = 0xDA
JPEG_DRI = 0xDD
JPEG_EOI = b"\xff\xd9"
#: Start-of-frame markers (those carrying the picture's height).
JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


@dataclass(frozen=True)
class _Encoding:
    """What one write asks of an encoder besides the bands and the size."""

    quality: int
    tiff_codec: _TiffCodec | None = None
    pyramid: bool = True
    dpi: int | None = None


class RasterFormat(OutputFormat):
    """An image file streamed from bands by one of this module's encoders.

    Parameters
    ----------
    name : str
        Format name (``"PNG"``).
    suffixes : tuple of str
        Suffixes that select it.
    max_side : int
        Largest width or height the format holds.
    encode : callable
        ``encode(path, bands, width, height, encoding)`` writes the file at
        ``path`` (a temporary beside the output).
    max_pixels : int, optional
        Largest picture mosaicist writes in this format (memory, not the format).
    title : str, optional
        The format's usual spelling in prose (default: ``name``).
    reads : tuple of str
        The output settings it writes with (``dpi``, ``jpeg_quality``).
    """

    def __init__(
        self,
        name: str,
        suffixes: tuple[str, ...],
        max_side: int,
        encode: Callable[[Path, Iterable[np.ndarray], int, int, _Encoding], None],
        max_pixels: int | None = None,
        title: str | None = None,
        reads: tuple[str, ...] = ("dpi",),
    ) -> None:
        self._reads = frozenset(reads)
        self.name = name
        self.title = title or name
        self.suffixes = suffixes
        self.max_side = max_side
        self.encode = encode
        self.max_pixels = max_pixels

    def reads(self, options: MosaicOptions) -> frozenset[str]:
        """The output settings it writes with (see :meth:`OutputFormat.reads`).

        Parameters
        ----------
        options : MosaicOptions
            The settings of the run (not used: a raster format reads the same ones always).

        Returns
        -------
        frozenset of str
            The names given as ``reads`` when the format was made.
        """
        return self._reads

    def check(
        self, path: Path, width: int, height: int, options: MosaicOptions | None = None
    ) -> None:
        """Raise :class:`MosaicistError` when the format cannot hold ``width x height``.

        Parameters
        ----------
        path : pathlib.Path
            The output file, named in the message.
        width, height : int
            The picture's size in pixels.
        options : MosaicOptions, optional
            The settings it will be written with: the limits are the format's, and
            these only say which settings to name when no other format holds the size.

        Raises
        ------
        MosaicistError
            When a side is over :attr:`max_side`, or the picture over :attr:`max_pixels`;
            the message lists the other formats that hold the size (an
            :class:`~mosaicist.errors.OptionError` naming the settings that make the
            picture smaller, where none does).
        """
        if width > self.max_side or height > self.max_side:
            raise _too_large(
                self, f"{path}: {width:,}x{height:,} pixels is over the {self.title} limit of "
                f"{self.max_side:,} pixels a side", width, height, options)
        if self.max_pixels is not None and width * height > self.max_pixels:
            raise _too_large(
                self, f"{path}: {width:,}x{height:,} pixels is over mosaicist's {self.title} "
                f"limit of {self.max_pixels // 1_000_000} megapixels ({self.title} is encoded "
                "whole, in memory)", width, height, options)

    def holds(self, width: int, height: int) -> bool:
        """Whether this format can hold a ``width x height`` picture (see :meth:`check`).

        Parameters
        ----------
        width, height : int
            The picture's size in pixels.

        Returns
        -------
        bool
            False when a side is over :attr:`max_side` or the picture over :attr:`max_pixels`.
        """
        return (width <= self.max_side and height <= self.max_side
                and (self.max_pixels is None or width * height <= self.max_pixels))

    def write(
        self, path: Path, picture: Picture, options: MosaicOptions, show_progress: bool = False
    ) -> None:
        """Stream ``picture`` to ``path`` (see :func:`write_image`).

        Parameters
        ----------
        path : pathlib.Path
            The output file, written atomically.
        picture : Picture
            What to write: its size and its bands of rows.
        options : MosaicOptions
            The settings to write with: ``jpeg_quality`` and ``dpi``.
        show_progress : bool
            Draw a progress bar.

        Raises
        ------
        MosaicistError
            When the file cannot be written, or a setting does not fit the format.
        """
        write_image(path, picture.bands, picture.width, picture.height,
                    quality=options.jpeg_quality, dpi=options.dpi, show_progress=show_progress)


def _too_large(refused: RasterFormat, problem: str, width: int, height: int,
               options: MosaicOptions | None) -> MosaicistError:
    """The refusal of a picture too large for ``refused``: ``problem``, then what holds it.

    The advice lists the other registered formats that hold ``width x height``
    (each by its first suffix; a Deep Zoom pyramid holds any size), never the
    one refused; where none does, the settings that make the picture smaller,
    as the run's ``options`` chose its size (a cell count, a print).
    """
    from ._deepzoom import DeepZoomFormat
    from ._formats import OUTPUT_FORMATS

    seen: set[int] = {id(refused)}
    files, pyramids = [], []
    for suffix, output in OUTPUT_FORMATS.items():
        if id(output) in seen:
            continue
        seen.add(id(output))
        if isinstance(output, RasterFormat) and output.holds(width, height):
            files.append(suffix)
        elif isinstance(output, DeepZoomFormat):
            pyramids.append(suffix)
    if files or pyramids:
        # Single files first, as the other refusals list them (".jpg, .png, .tif or .dzi").
        return MosaicistError(f"{problem}; use {alternatives(sorted(files) + pyramids)}")
    cells = "fewer {cells}" if options is not None and options.cells is not None else (
        "a larger {cell_px}")
    tiles = ("a smaller {print_size} or a lower {dpi}"
             if options is not None and options.print_size is not None else "a smaller {tile_px}")
    # An OptionError: the command line names the flags (--cell, --tile-px).
    return OptionError("{problem}, and no other format holds it: use " + cells + " or " + tiles,
                       problem=problem)


def write_image(
    path: str | os.PathLike[str],
    bands: Iterable[np.ndarray],
    width: int,
    height: int,
    *,
    quality: int | None = None,
    compression: str | None = None,
    pyramid: bool | None = None,
    dpi: int | None = None,
    show_progress: bool = False,
) -> None:
    """Write a picture given as horizontal bands, in the format ``path`` names.

    Only a few rows are held at a time, whatever the picture's size, except
    for WebP, which is encoded whole (about 11 bytes a pixel; see the
    module's description). Limits and options are checked before the first
    band is read.

    Parameters
    ----------
    path : path-like
        The output; its suffix picks the format (a :class:`RasterFormat` in
        :data:`~mosaicist.render.OUTPUT_FORMATS`).
        Written to a temporary file beside it and renamed into place when
        complete: on any error or interrupt (including one raised by
        ``bands``) the temporary is removed and nothing appears at ``path``.
    bands : iterable of numpy.ndarray
        ``(h, width, 3)`` uint8 arrays, top to bottom, of any heights summing
        to ``height``. A band is not modified, and is no longer used once the
        next one is requested, so a caller may reuse its buffer.
    width, height : int
        Size of the picture.
    quality : int, optional
        1-100, for JPEG, WebP and JPEG-compressed TIFF (default
        :data:`DEFAULT_QUALITY`); other formats ignore it.
    compression : str, optional
        TIFF only: ``deflate`` (default, with the horizontal predictor),
        ``none``, ``lzw`` (predictor too) or ``jpeg`` (YCbCr, 4:4:4); the last
        two need the ``imagecodecs`` package.
    pyramid : bool, optional
        TIFF only: also store reduced levels as SubIFDs (default yes).
    dpi : int, optional
        Resolution to record, 1 to :data:`MAX_DPI` dots per inch (see the
        module's description); none is recorded when omitted.
    show_progress : bool
        Draw a progress bar counting rows.

    Raises
    ------
    MosaicistError
        For an unknown extension, a size over the format's limit, an option
        the format cannot honour, a picture its encoder cannot hold (a
        detailed WebP near its limit), or a file that cannot be written.
    MemoryError
        When the WebP encoder runs out of memory.
    ValueError
        For a band of the wrong shape or type, or bands whose heights do not
        sum to ``height``.
    """
    path = output_path(path)  # else pathlib's TypeError for bytes, naming nothing
    raster = output_format(path)
    if not isinstance(raster, RasterFormat):
        raise MosaicistError(f"{path}: {raster.name} is not an image format")
    raster.check(Path(path), width, height)
    if width < 1 or height < 1:
        raise ValueError(f"cannot write a {width}x{height} picture")
    if quality is not None and not 1 <= quality <= 100:
        raise MosaicistError(f"{path}: quality {quality} is not in 1-100")
    if dpi is not None and (isinstance(dpi, bool) or not isinstance(dpi, int)
                            or not 1 <= dpi <= MAX_DPI):
        raise MosaicistError(f"{path}: dpi {dpi!r} is not a whole number in 1-{MAX_DPI}")
    if raster is not TIFF and compression is not None:
        raise MosaicistError(f"{path}: compression applies to TIFF output only")
    if raster is not TIFF and pyramid:
        raise MosaicistError(f"{path}: a pyramid applies to TIFF output only")
    encoding = _Encoding(quality or DEFAULT_QUALITY, pyramid=pyramid is not False, dpi=dpi)
    if raster is TIFF:
        encoding = replace(encoding, tiff_codec=_TiffCodec(path, compression or "deflate",
                                                           encoding.quality))

    with progress_bar(height, f"writing {Path(path).name}", unit="row",
                      enabled=show_progress) as bar:
        checked = _Bands(bands, width, height, bar.update)
        try:
            # Flushed before the rename: after a power cut the final name holds the whole
            # picture or the one before, never an empty file (tens of ms for 100 MB).
            with atomic_path(path, durable=True) as temporary:
                raster.encode(temporary, checked, width, height, encoding)
        except _EncoderRefusal as refusal:
            raise MosaicistError(f"{path}: {refusal}") from None
        except OSError as error:
            if checked.source_failed:
                raise
            if isinstance(error, PermissionError):
                raise MosaicistError(f"{path}: cannot write output (permission denied)") from None
            raise MosaicistError(
                f"{path}: cannot write output: {error.strerror or error}"
            ) from None


class _EncoderRefusal(Exception):
    """An encoder that cannot hold the picture, in words (:func:`write_image` adds the file)."""


class _Bands:
    """The caller's bands, checked as they are pulled.

    Remembers whether an exception came from the caller's iterator, so that
    its ``OSError`` (a tile that cannot be read, say) is not reported as a
    failure to write the output.
    """

    def __init__(
        self, bands: Iterable[np.ndarray], width: int, height: int, advance: Callable[[int], Any]
    ) -> None:
        self._bands = bands
        self.width = width
        self.height = height
        self._advance = advance
        self.source_failed = False

    def __iter__(self) -> Iterator[np.ndarray]:
        rows = 0
        iterator = iter(self._bands)
        index = 0
        while True:
            try:
                band = next(iterator)
            except StopIteration:
                break
            except BaseException:
                self.source_failed = True
                raise
            if (
                not isinstance(band, np.ndarray)
                or band.dtype != np.uint8
                or band.ndim != 3
                or band.shape[1:] != (self.width, 3)
            ):
                shape = getattr(band, "shape", None)
                kind = getattr(band, "dtype", type(band).__name__)
                raise ValueError(
                    f"band {index} is {shape} {kind}, expected (h, {self.width}, 3) uint8"
                )
            rows += band.shape[0]
            if rows > self.height:
                raise ValueError(f"the bands hold more than {self.height} rows")
            index += 1
            if band.shape[0]:
                yield band
                self._advance(band.shape[0])
        if rows != self.height:
            raise ValueError(f"the bands hold {rows} rows, expected {self.height}")


class _RowChunker:
    """Regroup bands of any heights into chunks of exactly ``rows`` rows.

    Chunks are new arrays, never views of a band, so that a chunk still in
    use after the caller has moved on (on a worker thread) cannot change
    under it, and the caller may reuse a band's buffer.
    """

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self._chunk: np.ndarray | None = None
        self._count = 0

    def push(self, band: np.ndarray) -> Iterator[np.ndarray]:
        """Add ``band``; yield every chunk now complete."""
        start = 0
        while start < band.shape[0]:
            if self._chunk is None:
                self._chunk = np.empty((self.rows, *band.shape[1:]), band.dtype)
            take = min(self.rows - self._count, band.shape[0] - start)
            self._chunk[self._count:self._count + take] = band[start:start + take]
            self._count += take
            start += take
            if self._count == self.rows:
                yield self._take()

    def finish(self) -> np.ndarray | None:
        """Return the last, shorter chunk (``None`` when nothing is left)."""
        return self._take() if self._count else None

    def _take(self) -> np.ndarray:
        assert self._chunk is not None  # called with rows in hand
        chunk = self._chunk[:self._count]
        self._chunk, self._count = None, 0
        return chunk


def _blocks(bands: Iterable[np.ndarray], rows: int) -> Iterator[np.ndarray]:
    """Yield the bands regrouped into blocks of ``rows`` rows (the last may be shorter)."""
    chunker = _RowChunker(rows)
    for band in bands:
        yield from chunker.push(band)
    last = chunker.finish()
    if last is not None:
        yield last


# --- PNG -------------------------------------------------------------------


def _write_png_chunk(handle: IO[bytes], kind: bytes, data: bytes | memoryview) -> None:
    # The data written as it is: joined into one bytes object with its length and CRC
    # it was copied twice, 0.04 s for a 7680x4320 mosaic on the writer's main thread.
    handle.write(struct.pack(">I", len(data)) + kind)
    handle.write(data)
    handle.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind))))


def _write_png_data(handle: IO[bytes], data: bytes) -> None:
    for start in range(0, len(data), PNG_MAX_CHUNK):
        _write_png_chunk(handle, b"IDAT", memoryview(data)[start:start + PNG_MAX_CHUNK])


def _adler32_combine(first: int, second: int, second_length: int) -> int:
    """Adler-32 of two byte strings joined, from theirs (zlib's ``adler32_combine``)."""
    base = 65521
    remainder = second_length % base
    low = first & 0xFFFF
    high = (remainder * low) % base
    low += (second & 0xFFFF) + base - 1
    high += ((first >> 16) & 0xFFFF) + ((second >> 16) & 0xFFFF) + base - remainder
    return (low % base) | ((high % base) << 16)


#: Scanlines shorter than this have filter costs (at most 128 a byte) that fit 32 bits.
_NARROW_COST_BYTES = (1 << 32) // 128
#: Scanlines of at least 4 runs of this many bytes choose their filter from the first
#: run of every 4 (contiguous runs: NumPy is several times slower on every 4th byte).
#: Summing every byte's cost was two thirds of the filtering: a 7680x4320 mosaic
#: filtered in 0.116 s of processor time, and in 0.04 s from the sample, for a file
#: 0.02% larger (37.7 MB).
_COST_RUN_BYTES = 768


def _filter_costs(values: np.ndarray, left: np.ndarray, above: np.ndarray) -> np.ndarray:
    """``(4, h)`` sums of the absolute values (bytes read as signed) of each filter's output.

    ``values`` are bytes of each row, ``left`` the bytes 3 before them (0
    before a row's start) and ``above`` the bytes above them, all ``(h, ...)``.
    """
    # A row's cost is at most 128 per byte: 32-bit sums (twice as fast) where they hold it.
    wide = np.uint32 if values[0].size < _NARROW_COST_BYTES else np.uint64
    axes = tuple(range(1, values.ndim))
    costs = np.empty((4, len(values)), wide)
    for index, candidate in enumerate((values, values - left, values - above,
                                       values - _floor_mean(left, above))):
        # |x| of a byte read as signed is min(x, 256 - x): uint8 negation wraps.
        costs[index] = np.minimum(candidate, np.negative(candidate)).sum(axis=axes, dtype=wide)
    return costs


def _floor_mean(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``(first + second) // 2`` of bytes, in bytes: the common bits plus half the others."""
    mean = first & second
    mean += (first ^ second) >> 1
    return mean


def png_filter_rows(rows: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Filter scanlines for PNG, choosing each row's filter adaptively.

    Each row gets the filter among None, Sub, Up and Average whose output
    has the smallest sum of absolute values (bytes read as signed), the
    heuristic the PNG specification recommends; rows of at least four runs of
    :data:`_COST_RUN_BYTES` sum it over the first run of every four (each
    filter's predictions there are still the whole row's). Ties go to the
    first of that order. Paeth is left out: it costs as much as the
    other four together and made no difference to the size of the photographs
    and mosaics we measured.

    Parameters
    ----------
    rows : numpy.ndarray
        ``(h, n)`` uint8 scanlines (``n = 3 * width`` for RGB).
    previous : numpy.ndarray
        ``(n,)`` uint8 scanline above the first row (zeros for the top).

    Returns
    -------
    numpy.ndarray
        ``(h, n + 1)`` uint8: each row's filter type byte, then its bytes.
    """
    height, length = rows.shape
    above = np.empty_like(rows)
    above[0] = previous
    above[1:] = rows[:-1]
    run = _COST_RUN_BYTES
    sampled = (length - 3) // (4 * run) * 4 * run
    if sampled:
        # Runs from the second pixel on, with the bytes 3 before and those above them:
        # each filter's predictions there are the ones it makes in the whole row.
        def runs(part: np.ndarray) -> np.ndarray:
            return part.reshape(height, -1, 4 * run)[:, :, :run]

        costs = _filter_costs(runs(rows[:, 3:3 + sampled]), runs(rows[:, :sampled]),
                              runs(above[:, 3:3 + sampled]))
    else:
        left = np.zeros_like(rows)
        left[:, 3:] = rows[:, :-3]
        costs = _filter_costs(rows, left, above)
    choice = costs.argmin(axis=0)
    out = np.empty((height, length + 1), np.uint8)
    out[:, 0] = choice
    filtered = out[:, 1:]
    for kind in np.flatnonzero(np.bincount(choice, minlength=4)).tolist():
        chosen = choice == kind
        whole = bool(chosen.all())
        here = rows if whole else rows[chosen]
        target = filtered if whole else np.empty_like(here)
        if kind == 0:
            target[...] = here
        elif kind == 1:
            target[:, :3] = here[:, :3]
            np.subtract(here[:, 3:], here[:, :-3], out=target[:, 3:])
        else:
            over = above if whole else above[chosen]
            if kind == 2:
                np.subtract(here, over, out=target)
            else:
                target[:, :3] = here[:, :3] - (over[:, :3] >> 1)
                np.subtract(here[:, 3:], _floor_mean(here[:, :-3], over[:, 3:]),
                            out=target[:, 3:])
        if not whole:
            filtered[chosen] = target
    return out


def _png_block(rows: np.ndarray, previous: np.ndarray, level: int) -> tuple[bytes, int, int]:
    """Filter and deflate one block of rows; return the deflate data, its Adler-32, length."""
    compressor = _deflate.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = []
    checksum = 1
    # Filtering makes several temporaries the size of its input: a few rows
    # at a time keeps them small (and in cache).
    step = max(1, FILTER_BYTES // rows.shape[1])
    for start in range(0, rows.shape[0], step):
        filtered = png_filter_rows(rows[start:start + step], previous)
        previous = rows[min(start + step, rows.shape[0]) - 1]
        parts.append(compressor.compress(filtered.data))
        checksum = zlib.adler32(filtered.data, checksum)
    # A sync flush ends the block byte-aligned and not final, so the next
    # block's independent stream can follow it directly.
    parts.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    return b"".join(parts), checksum, rows.shape[0] * (rows.shape[1] + 1)


def _encode_png(
    path: Path, bands: Iterable[np.ndarray], width: int, height: int, encoding: _Encoding
) -> None:
    with open(path, "wb") as handle:
        _write_png(handle, bands, width, height, PNG_LEVEL, encoding.dpi)


def png_pixels_per_metre(dpi: int) -> int:
    """PNG's ``pHYs`` unit for a resolution: pixels per metre, rounded half up."""
    return (dpi * 10000 * 2 + 254) // (2 * 254)


def _write_png(
    handle: IO[bytes], bands: Iterable[np.ndarray], width: int, height: int, level: int,
    dpi: int | None = None,
) -> None:
    """Stream an 8-bit RGB PNG: filtered rows deflated block by block on threads."""
    handle.write(PNG_SIGNATURE)
    _write_png_chunk(handle, b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    if dpi is not None:
        # Unit 1: the metre, the only physical unit PNG has.
        per_metre = png_pixels_per_metre(dpi)
        _write_png_chunk(handle, b"pHYs", struct.pack(">IIB", per_metre, per_metre, 1))
    row_bytes = 3 * width
    previous = np.zeros(row_bytes, np.uint8)
    # The zlib header zlib itself writes at this level.
    header = zlib.compress(b"", level)[:2]
    checksum = 1

    def emit(results: Iterable[tuple[bytes, int, int]]) -> None:
        nonlocal header, checksum
        for data, adler, length in results:
            _write_png_data(handle, header + data)
            header = b""
            checksum = _adler32_combine(checksum, adler, length)

    with OrderedJobs(name="mosaicist-write") as jobs:
        for block in _blocks(bands, max(1, BLOCK_BYTES // row_bytes)):
            rows = block.reshape(block.shape[0], row_bytes)
            emit(jobs.submit(_png_block, rows, previous, level))
            previous = rows[-1]
        emit(jobs.drain())
    _write_png_data(handle, header + DEFLATE_FINAL_BLOCK + struct.pack(">I", checksum))
    _write_png_chunk(handle, b"IEND", b"")


# --- JPEG ------------------------------------------------------------------


def _jpeg_block(rows: np.ndarray, options: dict) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rows, "RGB").save(buffer, format="JPEG", restart_marker_rows=1, **options)
    return buffer.getvalue()


def _jpeg_mcu_rows(subsampling: int | str) -> int:
    """Pixel rows per MCU row for Pillow's ``subsampling`` option."""
    # Pillow: 0 is 4:4:4, 1 is 4:2:2 (8 rows tall), 2 is 4:2:0 (16 rows).
    return 16 if subsampling in (2, "4:2:0", -1) else 8


class _JpegSplicer:
    """Join baseline JPEGs of consecutive bands into one picture.

    Every band must be encoded with the same options, a restart interval of
    one MCU row, and (but the last) a whole number of MCU rows.
    """

    def __init__(self, handle: IO[bytes], height: int) -> None:
        self.handle = handle
        self.height = height
        self._header: bytes | None = None
        self._restarts = 0

    @staticmethod
    def _parse(data: bytes) -> tuple[int, int]:
        """Return the offsets of the frame height and of the entropy-coded data."""
        if data[:2] != b"\xff\xd8" or data[-2:] != JPEG_EOI:
            raise RuntimeError("the JPEG encoder wrote an unexpected stream")
        position, height_at, restarts = 2, None, False
        while True:
            if data[position] != 0xFF:
                raise RuntimeError("the JPEG encoder wrote an unexpected stream")
            marker = data[position + 1]
            length = int.from_bytes(data[position + 2:position + 4], "big")
            if marker in JPEG_SOF:
                height_at = position + 5
            elif marker == JPEG_DRI:
                restarts = True
            position += 2 + length
            if marker == JPEG_SOS:
                break
        if height_at is None or not restarts:
            # Pillow before 10.2 ignores restart_marker_rows.
            raise RuntimeError(
                "the JPEG encoder wrote no restart markers; streaming JPEG needs Pillow >= 10.2"
            )
        return height_at, position

    def add(self, data: bytes) -> None:
        """Append the JPEG of the next band."""
        height_at, scan_at = self._parse(data)
        header = bytearray(data[:scan_at])
        header[height_at:height_at + 2] = self.height.to_bytes(2, "big")
        if self._header is None:
            self._header = bytes(header)
            self.handle.write(self._header)
        else:
            if header != self._header:
                raise RuntimeError("JPEG bands were encoded with different tables")
            self.handle.write(bytes((0xFF, 0xD0 + self._restarts % 8)))
            self._restarts += 1
        scan = np.frombuffer(data, np.uint8, len(data) - 2 - scan_at, scan_at)
        # In entropy-coded data a 0xFF byte is followed by a stuffed 0x00 or
        # a marker; the only markers there are restarts, RST0-RST7.
        ff = np.flatnonzero(scan[:-1] == 0xFF)
        markers = ff[(scan[ff + 1] & 0xF8) == 0xD0] + 1
        shift = self._restarts % 8
        if shift and markers.size:
            scan = scan.copy()
            scan[markers] = 0xD0 | ((scan[markers] + shift) & 7)
        self.handle.write(scan.data)
        self._restarts += markers.size

    def finish(self) -> None:
        """End the picture."""
        self.handle.write(JPEG_EOI)


def _encode_jpeg(
    path: Path, bands: Iterable[np.ndarray], width: int, height: int, encoding: _Encoding
) -> None:
    with open(path, "wb") as handle:
        options: dict[str, Any] = {"quality": encoding.quality, "subsampling": JPEG_SUBSAMPLING}
        if encoding.dpi is not None:
            # Every block carries the same JFIF header, so the splice keeps it.
            options["dpi"] = (encoding.dpi, encoding.dpi)
        _write_jpeg(handle, bands, width, height, options)


def _write_jpeg(
    handle: IO[bytes], bands: Iterable[np.ndarray], width: int, height: int, options: dict
) -> None:
    """Stream a baseline JPEG: blocks of whole MCU rows encoded on threads, then spliced."""
    mcu = _jpeg_mcu_rows(options.get("subsampling", 0))
    block_rows = max(1, BLOCK_BYTES // (3 * width * mcu)) * mcu
    splicer = _JpegSplicer(handle, height)
    with OrderedJobs(name="mosaicist-write") as jobs:
        for block in _blocks(bands, block_rows):
            for data in jobs.submit(_jpeg_block, block, options):
                splicer.add(data)
        for data in jobs.drain():
            splicer.add(data)
    splicer.finish()


# --- WebP ------------------------------------------------------------------


def _encode_webp(
    path: Path, bands: Iterable[np.ndarray], width: int, height: int, encoding: _Encoding
) -> None:
    """Gather the bands into one picture (libwebp cannot stream) and encode it."""
    options: dict[str, Any] = {"quality": encoding.quality, "method": WEBP_METHOD}
    if encoding.dpi is not None:
        exif = Image.Exif()
        exif[EXIF_X_RESOLUTION] = exif[EXIF_Y_RESOLUTION] = float(encoding.dpi)
        exif[EXIF_RESOLUTION_UNIT] = EXIF_INCH
        options["exif"] = exif.tobytes()
    picture = Image.new("RGB", (width, height))
    top = 0
    for band in bands:
        picture.paste(Image.fromarray(band, "RGB"), (0, top))
        top += band.shape[0]
    try:
        picture.save(path, format="WEBP", **options)
    except ValueError as error:
        # Pillow's "encoding error N", libwebp's WebPEncodingError, after all the drawing:
        # a traceback. Its headers of a detailed picture outgrow the 512 KB that VP8 gives
        # them (a 16,383 x 9,675 px mosaic of 129 px tiles: error 6), whatever the memory.
        code = str(error).rpartition(" ")[2]
        if code in WEBP_OUT_OF_MEMORY:
            raise MemoryError(str(error)) from None
        reason = WEBP_ERRORS.get(code)
        if reason is None:
            raise
        raise _EncoderRefusal(
            f"the WebP encoder (libwebp) cannot hold this {width:,}x{height:,} px picture: "
            f"{reason} (error {code}); use .jpg, .png, .tif or .dzi, or fewer pixels"
        ) from None


# --- TIFF ------------------------------------------------------------------


def _horizontal_delta(tile: np.ndarray) -> np.ndarray:
    """Apply TIFF's horizontal predictor (difference to the pixel on the left)."""
    out = np.empty_like(tile)
    out[:, :1] = tile[:, :1]
    np.subtract(tile[:, 1:], tile[:, :-1], out=out[:, 1:])
    return out


class _TiffCodec:
    """How TIFF tiles are compressed, and the matching tifffile arguments."""

    def __init__(self, path: str | os.PathLike[str], name: str, quality: int) -> None:
        name = name.lower()
        if name not in TIFF_COMPRESSIONS:
            raise MosaicistError(
                f"{path}: unknown TIFF compression {name!r}; use {alternatives(TIFF_COMPRESSIONS)}"
            )
        self.name = name
        self.arguments: dict[str, Any] = {}
        self._encode: Callable[..., bytes] | None = None
        self._options: dict[str, Any] = {}
        if name in ("lzw", "jpeg"):
            try:
                import imagecodecs  # noqa: F401
            except ImportError:
                raise MosaicistError(
                    f"{path}: TIFF compression {name!r} needs the imagecodecs package "
                    "(pip install imagecodecs); deflate and none work without it"
                ) from None
            from tifffile import TIFF

        if name == "deflate":
            self.arguments = {"compression": "adobe_deflate", "predictor": "horizontal"}
        elif name == "lzw":
            self.arguments = {"compression": "lzw", "predictor": "horizontal"}
            self._encode = TIFF.COMPRESSORS[5]
        elif name == "jpeg":
            # What tifffile passes its JPEG encoder for RGB data, so that the
            # tags it writes (YCbCr, subsampling) describe our tiles.
            subsampling = (1, 1)
            self.arguments = {"compression": "jpeg", "subsampling": subsampling}
            self._encode = TIFF.COMPRESSORS[7]
            self._options = {"level": quality, "subsampling": subsampling,
                              "colorspace": "RGB", "outcolorspace": "YCBCR"}

    def encode(self, tile: np.ndarray) -> bytes:
        """Compress one full ``(TIFF_TILE, TIFF_TILE, 3)`` tile."""
        if self.name == "none":
            return tile.tobytes()
        if self.name == "deflate":
            return _deflate.compress(_horizontal_delta(tile).data, TIFF_DEFLATE_LEVEL)
        assert self._encode is not None  # set for lzw and jpeg
        if self.name == "lzw":
            return self._encode(_horizontal_delta(tile))
        return self._encode(tile, **self._options)


def _tiff_tile(codec: _TiffCodec, level: int, rows: np.ndarray, left: int) -> tuple[int, bytes]:
    """Cut, pad and compress the tile at column ``left`` of a row of tiles."""
    part = rows[:, left:left + TIFF_TILE]
    if part.shape[:2] == (TIFF_TILE, TIFF_TILE):
        tile = np.ascontiguousarray(part)
    else:
        # Edge tiles are stored whole; the padding is never shown.
        tile = np.zeros((TIFF_TILE, TIFF_TILE, 3), np.uint8)
        tile[:part.shape[0], :part.shape[1]] = part
    return level, codec.encode(tile)


def tiff_level_sizes(width: int, height: int, pyramid: bool = True) -> list[tuple[int, int]]:
    """Return ``(width, height)`` of each level: full size, then halved until one tile."""
    sizes = [(width, height)]
    while pyramid and (sizes[-1][0] > TIFF_TILE or sizes[-1][1] > TIFF_TILE):
        sizes.append((half_size(sizes[-1][0]), half_size(sizes[-1][1])))
    return sizes


class _TiffPyramid:
    """Cut every level of the pyramid into compressed tiles, from bands of the full size.

    The full-size level's tiles gather in :attr:`level0` for tifffile to
    take; the reduced levels' go to ``spool``, to be copied into the file
    once the full-size level is written.
    """

    def __init__(
        self, sizes: list[tuple[int, int]], codec: _TiffCodec, jobs: OrderedJobs, spool: IO[bytes]
    ) -> None:
        self.sizes = sizes
        self.codec = codec
        self.jobs = jobs
        self.spool = spool
        self.level0: deque[bytes] = deque()
        self.chunkers = [_RowChunker(TIFF_TILE) for _ in sizes]
        # halvers[k] makes level k + 1 from level k.
        self.halvers = [HalvingStream(size[0]) for size in sizes[:-1]]
        self.offsets = [array("Q") for _ in sizes]
        self.lengths = [array("Q") for _ in sizes]

    def push(self, band: np.ndarray) -> None:
        """Add a band of the full-size level."""
        self._rows(0, band)

    def finish(self) -> None:
        """Reduce the odd last rows, flush the last rows of tiles, wait for every tile."""
        for level in range(1, len(self.sizes)):
            self._rows(level, self.halvers[level - 1].finish())
        for level, chunker in enumerate(self.chunkers):
            rows = chunker.finish()
            if rows is not None:
                self._tile_row(level, rows)
        self._store(self.jobs.drain())

    def spooled(self, level: int) -> Iterator[bytes]:
        """Yield the compressed tiles of reduced ``level`` from the spool, in order."""
        for offset, length in zip(self.offsets[level], self.lengths[level], strict=True):
            self.spool.seek(offset)
            yield self.spool.read(length)

    def _rows(self, level: int, rows: np.ndarray) -> None:
        if not rows.shape[0]:
            return
        for chunk in self.chunkers[level].push(rows):
            self._tile_row(level, chunk)
        if level + 1 < len(self.sizes):
            self._rows(level + 1, self.halvers[level].push(rows))

    def _tile_row(self, level: int, rows: np.ndarray) -> None:
        for left in range(0, self.sizes[level][0], TIFF_TILE):
            self._store(self.jobs.submit(_tiff_tile, self.codec, level, rows, left))

    def _store(self, results: Iterable[tuple[int, bytes]]) -> None:
        for level, data in results:
            if level == 0:
                self.level0.append(data)
            else:
                self.spool.seek(0, os.SEEK_END)
                self.offsets[level].append(self.spool.tell())
                self.lengths[level].append(len(data))
                self.spool.write(data)


def _encode_tiff(
    path: Path, bands: Iterable[np.ndarray], width: int, height: int, encoding: _Encoding
) -> None:
    assert encoding.tiff_codec is not None  # write_image makes one for TIFF
    with open(path, "wb") as handle:
        _write_tiff(handle, bands, width, height, encoding.tiff_codec, encoding.pyramid,
                    path.parent, encoding.dpi)


def _tiff_resolution(
    dpi: int | None, width: int, height: int, level_width: int, level_height: int
) -> dict[str, Any]:
    """tifffile's resolution arguments of a level: the same printed size as the full picture."""
    if dpi is None:
        return {}
    return {"resolution": (dpi * level_width / width, dpi * level_height / height),
            "resolutionunit": "INCH"}


def _write_tiff(
    handle: IO[bytes],
    bands: Iterable[np.ndarray],
    width: int,
    height: int,
    codec: _TiffCodec,
    pyramid: bool,
    spool_dir: Path,
    dpi: int | None = None,
) -> None:
    """Stream a tiled BigTIFF, with its reduced levels as SubIFDs when ``pyramid``."""
    import tifffile

    sizes = tiff_level_sizes(width, height, pyramid)
    common = {
        "dtype": np.uint8,
        "photometric": "rgb",
        "planarconfig": "contig",
        "tile": (TIFF_TILE, TIFF_TILE),
        "metadata": None,
        "software": "mosaicist",
        **codec.arguments,
    }
    with (
        OrderedJobs(name="mosaicist-write") as jobs,
        tempfile.TemporaryFile(prefix=".mosaicist-spool-", dir=spool_dir) as spool,
    ):
        levels = _TiffPyramid(sizes, codec, jobs, spool)

        def full_size_tiles() -> Iterator[bytes]:
            for band in bands:
                levels.push(band)
                # Hold the last tile back: once tifffile has every tile of
                # this level it stops asking, and the reduced levels would
                # never see their last rows.
                while len(levels.level0) > 1:
                    yield levels.level0.popleft()
            levels.finish()
            while levels.level0:
                yield levels.level0.popleft()

        writer = tifffile.TiffWriter(handle, bigtiff=True)
        writer.write(full_size_tiles(), shape=(height, width, 3), subifds=len(sizes) - 1,
                     **common, **_tiff_resolution(dpi, width, height, width, height))
        for level, (level_width, level_height) in enumerate(sizes[1:], start=1):
            writer.write(levels.spooled(level), shape=(level_height, level_width, 3),
                         subfiletype=1, **common,
                         **_tiff_resolution(dpi, width, height, level_width, level_height))
        writer.close()


#: The image formats, by name (registered in :mod:`mosaicist.render`).
PNG = RasterFormat("PNG", (".png",), 2**31 - 1, _encode_png)
JPEG = RasterFormat("JPEG", (".jpg", ".jpeg"), JPEG_MAX_SIDE, _encode_jpeg,
                   reads=("dpi", "jpeg_quality"))
WEBP = RasterFormat("WEBP", (".webp",), 16383, _encode_webp, max_pixels=WEBP_MAX_PIXELS,
                    title="WebP", reads=("dpi", "jpeg_quality"))
TIFF = RasterFormat("TIFF", (".tif", ".tiff"), 2**31 - 1, _encode_tiff)
