"""Videos in and out of a batch (PyAV), and how much a mosaic video flickers.

Frames are decoded one at a time to ``(H, W, 3)`` uint8 RGB arrays, in
presentation order, so memory holds a few frames whatever the video's
length, and shown as players show them: resampled to square pixels where
the video's pixels are not square (DV, DVD and broadcast video: 720x576 of
pixels 64:45 is shown 1024x576; the shorter side is stretched, so no
detail is lost), then turned upright and unmirrored as their display
matrix says (a phone's portrait clip, stored on its side; a front
camera's mirrored one). A video is
written from the batch's outputs in order: H.264
(``libx264``, quality ``crf`` 18, ``yuv420p`` so that every player plays it)
when FFmpeg has it, else another codec the container takes (see
:data:`CODECS`), converted with BT.709's matrix and described so where the
codec can say it (:data:`DESCRIBED_CODECS`). 4:2:0 chroma needs even sides:
a mosaic with an odd width or height loses its last column or row in the
video (its files keep it).
The video is written under a temporary name and renamed, like every output.

PyAV is the ``video`` extra (``python3 -m pip install ".[video]"``); it is
imported only when a video is read or written.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import struct
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MosaicistError, OptionError, check_range, install_extra
from ..imaging import over_target_limit
from ..paths import atomic_path

#: Codecs tried for a video output, best first, by container suffix.
CODECS: dict[str, tuple[str, ...]] = {
    ".mp4": ("libx264", "h264", "libopenh264", "mpeg4"),
    ".m4v": ("libx264", "h264", "libopenh264", "mpeg4"),
    ".mov": ("libx264", "h264", "libopenh264", "mpeg4"),
    ".mkv": ("libx264", "h264", "libopenh264", "libvpx-vp9", "mpeg4"),
    ".webm": ("libvpx-vp9", "libvpx", "libaom-av1"),
    ".avi": ("libx264", "h264", "mpeg4"),
}
#: Encoder settings (FFmpeg private options) by codec; the rest use their defaults.
CODEC_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"crf": "18", "preset": "medium"},
    "libvpx-vp9": {"crf": "30", "b": "0"},
}
#: Encoders that write a video's colour description (matrix, primaries, transfer, range)
#: into its stream: their frames are converted with BT.709's matrix and described so (see
#: :func:`_bt709`). Players take an undescribed video for BT.709 from HD sizes up and for
#: BT.601 below: a mosaic's reds and greens moved by about 10 levels in one or the other.
DESCRIBED_CODECS = frozenset({"libx264", "libvpx-vp9", "libvpx", "libaom-av1"})
#: The colour description of those videos (FFmpeg's encoder options): sRGB pictures are
#: BT.709's primaries; its transfer is what SDR video players expect.
BT709_OPTIONS = {"colorspace": "bt709", "color_primaries": "bt709", "color_trc": "bt709",
                 "color_range": "tv"}
#: Frame rate of a video made from still images, when none is given.
DEFAULT_FPS = Fraction(25)
#: Frame rates a video out may have (frames per second). The lowest is at least
#: 1/1001, so that no rate in the range becomes 0 as a fraction of denominator 1001 at most.
MIN_FPS, MAX_FPS = 0.01, 1000


def _av() -> Any:
    try:
        import av
    except ImportError:  # pragma: no cover - depends on the installation
        raise MosaicistError(f"videos need PyAV: {install_extra('video')}") from None
    return av


@dataclass(frozen=True)
class VideoInfo:
    """What a video's header says about its pictures.

    Attributes
    ----------
    width, height : int
        Frame size in pixels as :func:`read_frames` gives the frames: in
        square pixels, upright.
    rate : fractions.Fraction or None
        Frames per second (the stream's average rate), when known.
    frames : int or None
        Frame count (an estimate: the frames actually decoded count). From
        the header where it gives one (MP4, MOV); else, with ``estimated``,
        the duration times the rate (Matroska, WebM, MPEG-TS headers give
        no count); None where neither is known.
    estimated : bool
        Whether ``frames`` comes from the duration, not from a count.
    """

    width: int
    height: int
    rate: Fraction | None
    frames: int | None
    estimated: bool = False


def video_info(path: str | Path, max_pixels: int | None = None) -> VideoInfo:
    """Read a video's frame size, rate and frame count from its header.

    The size is the frames' as :func:`read_frames` gives them: in square
    pixels (see :func:`square_size`), upright, sides swapped for a display
    matrix of a quarter turn, which only a decoded frame tells (the first
    is decoded for it). The file's frames are not counted: where the header
    has no count, the duration times the rate stands for it.

    Parameters
    ----------
    path : str or pathlib.Path
        The video file.
    max_pixels : int, optional
        No frame is decoded when the frames' size is over this many pixels
        (:func:`read_frames` refuses such frames); the size unturned is given.

    Returns
    -------
    VideoInfo
        The rate and frame count are None where the header does not say.

    Raises
    ------
    MosaicistError
        When the file cannot be opened or has no video stream.
    """
    av = _av()
    with _reading(path), av.open(str(path)) as container:
        stream = _video_stream(container, path)
        rate = stream.average_rate or stream.guessed_rate
        rate = Fraction(rate) if rate else None
        width, height = square_size(int(stream.width), int(stream.height),
                                    _pixel_aspect(stream))
        frames, estimated = int(stream.frames) or None, False
        if frames is None and rate:
            frames, estimated = _frames_from_duration(container, stream, rate), True
        if (max_pixels is None or width * height <= max_pixels) \
                and _orientation(_first_frame(container, stream))[0]:
            width, height = height, width  # shown upright, as its frames are read
        return VideoInfo(width, height, rate, frames, estimated and frames is not None)


def _frames_from_duration(container: Any, stream: Any, rate: Fraction) -> int | None:
    """The frames ``stream`` holds by its duration (else the file's) at ``rate``; None if unknown.

    A Matroska or MPEG-TS header counts no frames, but says how long the
    video lasts: the batch's progress then has an end, without the file
    read through twice to count them.
    """
    seconds: Fraction | None = None
    if stream.duration and stream.time_base:
        seconds = stream.duration * Fraction(stream.time_base)
    elif container.duration:
        seconds = Fraction(container.duration, 1_000_000)  # FFmpeg's AV_TIME_BASE
    if not seconds or seconds <= 0:
        return None
    return max(1, round(seconds * rate))


def _first_frame(container: Any, stream: Any) -> Any:
    """The first decoded frame (None where none is decoded).

    PyAV says a stream's display matrix only on its frames; a frame that
    cannot be decoded is reported when the frames are read, not here.
    """
    with contextlib.suppress(Exception):
        for frame in container.decode(stream):
            return frame
    return None


def _pixel_aspect(stream: Any) -> Fraction | None:
    """The shape of ``stream``'s pixels (width over height), as players take it; None if unsaid.

    The container's word first (an MP4's ``pasp``, a Matroska's display
    size), else the codec's (an H.264 or MPEG-2 header), as FFmpeg guesses it.
    """
    for owner in (stream, getattr(stream, "codec_context", None)):
        aspect = getattr(owner, "sample_aspect_ratio", None)
        if aspect and aspect > 0:
            return Fraction(aspect)
    return None


#: Pixel shapes taken as square: a rounding of 1:1 (a size's worth of 1 pixel in 1,000)
#: is not worth a resampling, which would blur every frame a little.
_SQUARE_ENOUGH = Fraction(1, 1000)


#: FFmpeg's largest picture (``av_image_check_size``): ``(width + 128) * (height + 128)``
#: under this; its scaler refuses a larger one.
_MOST_RESAMPLED = (2**31 - 1) // 8


def square_size(width: int, height: int, pixel_aspect: Fraction | None) -> tuple[int, int]:
    """A frame's size in square pixels: the side its pixels are short along stretched.

    Parameters
    ----------
    width, height : int
        The stored size.
    pixel_aspect : fractions.Fraction or None
        The pixels' width over their height (the sample aspect ratio: 64:45
        for a 16:9 PAL DVD); None or 1 for square pixels.

    Returns
    -------
    tuple of int
        ``(width, height)``: the width times the pixel aspect where it is
        over 1, the height over it where it is under 1 (rounded, at least 1).

    Examples
    --------
    >>> square_size(720, 576, Fraction(64, 45))
    (1024, 576)
    >>> square_size(720, 480, Fraction(10, 11))
    (720, 528)
    """
    if pixel_aspect is None or abs(pixel_aspect - 1) <= _SQUARE_ENOUGH:
        return width, height
    if pixel_aspect > 1:
        return max(1, round(width * pixel_aspect)), height
    return width, max(1, round(height / pixel_aspect))


#: FFmpeg's display matrix (``AV_FRAME_DATA_DISPLAYMATRIX``): 9 signed 32-bit numbers,
#: little-endian as FFmpeg stores them, of which the first two of each of the first two
#: rows are the picture's turn and mirroring.
_DISPLAY_MATRIX = struct.Struct("<9i")


def _orientation(frame: Any) -> tuple[bool, bool, bool]:
    """How to show ``frame`` as its display matrix says.

    Returns ``(transposed, rows reversed, columns reversed)``.

    The matrix maps each stored pixel to its place on screen: its top left
    2x2 is a quarter turn or none, with or without a mirror (the eight
    orientations a camera writes, as EXIF's). Applied as FFmpeg's player
    and command line apply it (``-autorotate``): transposed first where the
    turn swaps the sides, then reversed along the axes the matrix's signs
    say. Another matrix (a turn other than a quarter, a shear: no camera
    writes one) leaves the frame as stored, as does a frame without one.
    A PyAV too old to give the matrix gives its turn alone (no mirror).
    """
    if frame is None:
        return False, False, False
    matrix = None
    with contextlib.suppress(Exception):  # an older PyAV without side data, or another size
        data = frame.side_data.get("DISPLAYMATRIX")
        if data is not None:
            matrix = _DISPLAY_MATRIX.unpack(bytes(data))
    if matrix is None:
        turns = _quarter_turns(float(getattr(frame, "rotation", 0) or 0))
        # A counter-clockwise quarter turn is numpy's rot90: the transpose, rows reversed.
        return ((turns % 2 == 1), turns in (1, 2), turns in (2, 3))
    a, b, c, d = matrix[0], matrix[1], matrix[3], matrix[4]
    if b == 0 and c == 0 and a and d:
        return False, d < 0, a < 0
    if a == 0 and d == 0 and b and c:
        return True, b < 0, c < 0
    return False, False, False


def _quarter_turns(rotation: float) -> int:
    """Counter-clockwise quarter turns that show a frame of display rotation ``rotation`` upright.

    Only whole quarter turns are applied; another angle (no phone writes
    one) leaves the frame as stored.
    """
    turns = rotation / 90
    return int(turns) % 4 if turns == int(turns) else 0


def upright(frame: Any, pixel_aspect: Fraction | None = None) -> np.ndarray:
    """A decoded frame as ``(H, W, 3)`` uint8 RGB, as players show it.

    Players show a clip filmed upright on a phone (stored on its side, with
    a rotation in its header) upright, a mirrored one unmirrored, and
    non-square pixels (a DVD's) at their shape: so is its mosaic.

    Parameters
    ----------
    frame : av.VideoFrame
        A decoded frame.
    pixel_aspect : fractions.Fraction, optional
        Its pixels' width over their height (see :func:`square_size`):
        resampled (bicubic, as FFmpeg's scaler by default) to square pixels.

    Returns
    -------
    numpy.ndarray
    """
    width, height = square_size(int(frame.width), int(frame.height), pixel_aspect)
    if (width, height) == (frame.width, frame.height):
        picture = frame.to_ndarray(format="rgb24")
    else:
        picture = frame.to_ndarray(format="rgb24", width=width, height=height,
                                   interpolation="BICUBIC")
    transposed, rows_reversed, columns_reversed = _orientation(frame)
    if not (transposed or rows_reversed or columns_reversed):
        return picture
    if transposed:
        picture = picture.transpose(1, 0, 2)
    return np.ascontiguousarray(picture[::-1 if rows_reversed else 1,
                                        ::-1 if columns_reversed else 1])


class VideoWarning(UserWarning):
    """A video read all the same, with something left out (its last frame, partial)."""


def read_frames(path: str | Path, max_pixels: int | None = None,
                note: Callable[[str], None] | None = None) -> Iterator[np.ndarray]:
    """Decode a video's frames, in order, as ``(H, W, 3)`` uint8 RGB arrays.

    Each frame is shown as players show it (see :func:`upright`). The
    file's last frame, where the decoder found it damaged (a recording cut
    inside it, as an MPEG-TS capture stopped: its missing part drawn as a
    grey or green smear), is left out, and said once: wherever it is shown
    (a B-frame is shown before the frame stored ahead of it). A damaged
    frame stored before the end is kept, as players show it.

    Parameters
    ----------
    path : path-like
        The video.
    max_pixels : int, optional
        Refuse frames of more pixels (the ``max_target_pixels`` setting),
        from the header, before decoding any.
    note : callable, optional
        Told, in one line naming ``path``, of a partial last frame left out
        (default: a :class:`VideoWarning`). A file otherwise found cut short
        raises instead, as below.

    Raises
    ------
    MosaicistError
        When the file cannot be read (at any frame: the frames before it
        have been given), or is cut short (after the frames it holds).
    """
    av = _av()
    with _reading(path), av.open(str(path)) as container:
        stream = _video_stream(container, path)
        aspect = _pixel_aspect(stream)
        width, height = square_size(int(stream.width), int(stream.height), aspect)
        if max_pixels is not None and width * height > max_pixels:
            # Worded as a picture over the limit is ("of 1 pixel", "20,000x15,000").
            raise over_target_limit(str(path), width, height, max_pixels)
        if aspect is not None and (width, height) != (stream.width, stream.height) \
                and (width + 128) * (height + 128) >= _MOST_RESAMPLED:
            # A header's pixel shape of 65535:1 under a raised limit: FFmpeg's scaler said
            # "Invalid argument" at the first frame (or Python an overflow, past 2**31).
            raise MosaicistError(
                f"{path}: cannot read video: its pixels' shape ({aspect.numerator}:"
                f"{aspect.denominator}) makes frames of {width:,}x{height:,} pixels, more "
                "than FFmpeg can resample")
        stream.thread_type = "AUTO"
        # A file cut short (a copy or a download stopped, a camera's power lost) decodes
        # without a word to where it stops: the threaded decoder says nothing of a last
        # frame's partial data, and a video of the first seconds passed for the clip.
        cut_short = _data_past_the_end(stream, path) or _segment_past_the_end(path)
        damaged = None  # a packet the demuxer found partial, decoded if the file goes on
        held = None  # a frame the decoder found damaged, given if another follows
        last_stored = None  # the presentation time of the file's last frame (its last packet)
        left_out = False
        for packet in container.demux(stream):
            frames = []
            if damaged is not None and packet.size:
                frames.extend(damaged.decode())
                damaged = None
            if packet.size:
                last_stored = packet.pts
            if packet.is_corrupt and packet.size:
                damaged = packet
            else:
                frames.extend(packet.decode())  # the last packet (empty) flushes the decoder
            for frame in frames:
                if held is not None:
                    if not packet.size and _last_stored(held, last_stored):
                        # The file's last frame, cut inside, is shown before frames stored
                        # ahead of it (a B-frame: two in three of a broadcast's MPEG-2).
                        left_out = True
                    else:
                        # Damaged amid the video (a broadcast's lost packets): shown by
                        # players with its errors hidden; the frames after it need it in place.
                        yield upright(held, aspect)
                    held = None
                if frame.is_corrupt:
                    held = frame
                    continue
                yield upright(frame, aspect)
        if damaged is not None or cut_short:
            # The frames before the cut were given (the decoder flushed at the end).
            raise MosaicistError(f"{path}: cannot read video: the file is cut short, its "
                                 "last frames are missing")
        if held is not None and not left_out and last_stored is not None \
                and held.pts is not None and held.pts != last_stored:
            # Shown last but stored before the end (a P-frame after its B-frames): damaged
            # amid the file, not cut, as the frames stored after it, whole, say.
            yield upright(held, aspect)
            held = None
        if held is not None or left_out:
            # Cut inside its last frame: the part never written is the decoder's guess (a
            # smear of grey or green), not the picture, whose mosaic would pass for the end.
            message = f"{path}: its last frame is partial (the file is cut short): left out"
            if note is not None:
                note(message)
            else:
                warnings.warn(message, VideoWarning, stacklevel=2)


def _last_stored(frame: Any, last_stored: int | None) -> bool:
    """Whether ``frame`` came from the file's last packet, of presentation time ``last_stored``.

    Unknown times (a stream without them) say no: the frame is then left
    out only where it is shown last.
    """
    return frame.pts is not None and last_stored is not None and frame.pts == last_stored


def _data_past_the_end(stream: Any, path: str | Path) -> bool:
    """Whether the container's index places frames' data past the end of the file.

    An MP4's index (its sample table, at its start) lists every frame's
    place in the file: one past the end is a frame cut off. A container
    without such an index (Matroska's cues are written last) says nothing.
    """
    try:
        size = os.stat(path).st_size
        return any(entry.pos >= 0 and entry.pos + entry.size > size
                   for entry in stream.index_entries)
    except (OSError, AttributeError, TypeError):  # an older PyAV without index entries
        return False


#: FFmpeg's disposition of a cover picture (``AV_DISPOSITION_ATTACHED_PIC``).
_ATTACHED_PICTURE = 0x0400


#: EBML IDs (length markers kept) of a Matroska (WebM) file's header and its segment.
_EBML_HEADER, _MATROSKA_SEGMENT = 0x1A45DFA3, 0x18538067


def _segment_past_the_end(path: str | Path) -> bool:
    """Whether a Matroska (WebM) file's segment, as its header sizes it, ends past the file.

    Matroska has no index at its start (its cues are written last), and its
    demuxer stops at the end of the data without a word: the segment's size,
    written when the file was closed, says where its frames end. A file of
    another format, or written live (its segment's size unknown), says nothing.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)  # the EBML header is a few dozen bytes
            size = os.fstat(handle.fileno()).st_size
    except OSError:
        return False
    position = 0
    for wanted in (_EBML_HEADER, _MATROSKA_SEGMENT):
        element = _ebml_number(head, position, keep_marker=True)
        if element is None or element[0] != wanted:
            return False
        length = _ebml_number(head, element[1])
        if length is None:
            return False
        value, position, unknown = length
        if wanted == _MATROSKA_SEGMENT:
            return not unknown and position + value > size
        position += value  # past the EBML header, to the segment
    return False


def _ebml_number(data: bytes, position: int, *, keep_marker: bool = False
                 ) -> tuple[int, int, bool] | None:
    """An EBML variable-length number at ``position``: (value, position after it, all ones).

    Its first byte's leading zeros say how many more bytes it has (at most
    7); an ID keeps that length marker, a size drops it. A size of all ones
    is "unknown" (a file written as it was recorded). None where ``data``
    ends first or the first byte is 0.
    """
    if position >= len(data) or not data[position]:
        return None
    length = 9 - data[position].bit_length()
    if position + length > len(data):
        return None
    value = int.from_bytes(data[position:position + length], "big")
    if not keep_marker:
        value &= (1 << (7 * length)) - 1
    return value, position + length, value == (1 << (7 * length)) - 1


def _video_stream(container: Any, path: str | Path) -> Any:
    """The video stream a player shows: FFmpeg's best of those that are not a cover picture.

    A song's or a podcast's cover art is a video stream of one still (in an
    MP4 or M4A): read as the video, a sound file made one mosaic of its cover.
    Of several video streams, the first was read, whichever the file marks
    as its default (a thumbnail or a second angle before the main picture).
    """
    moving = [stream for stream in container.streams.video
              if not int(getattr(stream, "disposition", 0) or 0) & _ATTACHED_PICTURE]
    if not moving:
        cover = " (only a cover picture)" if container.streams.video else ""
        raise MosaicistError(f"{path}: no video stream in the file{cover}")
    best = container.streams.best("video")
    return best if best in moving else moving[0]


@contextlib.contextmanager
def _reading(path: str | Path) -> Iterator[None]:
    """Turn PyAV's errors while reading ``path`` into one line naming it."""
    av = _av()
    try:
        yield
    except av.error.FFmpegError as error:
        reason = getattr(error, "strerror", None) or str(error)
        with contextlib.suppress(OSError):
            if os.stat(path).st_size == 0:
                # FFmpeg's "Invalid data found" is a damaged file's word: a download that
                # never started, an interrupted copy, is to be fetched again.
                reason = "the file is empty"
        raise MosaicistError(f"{path}: cannot read video: {reason}") from None
    except PermissionError:
        raise MosaicistError(f"{path}: permission denied") from None


def video_codec(path: str | Path) -> str:
    """The codec a video written to ``path`` gets: the first of :data:`CODECS` FFmpeg has.

    Parameters
    ----------
    path : str or pathlib.Path
        The video to write; its suffix names the container.

    Returns
    -------
    str
        FFmpeg's name of the codec.

    Raises
    ------
    MosaicistError
        For a container suffix without codecs here, or when FFmpeg has none.
    """
    av = _av()
    suffix = Path(path).suffix.lower()
    if suffix not in CODECS:
        raise MosaicistError(f"{path}: unknown video format {suffix or '(none)'!r}; use "
                             + ", ".join(sorted(CODECS)))
    for name in CODECS[suffix]:
        with contextlib.suppress(Exception):
            av.codec.Codec(name, "w")
            return name
    raise MosaicistError(f"{path}: this FFmpeg (PyAV) has no encoder for {suffix} videos "
                         f"({', '.join(CODECS[suffix])})")


def video_rate(fps: Fraction | float) -> Fraction:
    """Check a video out's frame rate; return it as the fraction it is written with.

    Parameters
    ----------
    fps : fractions.Fraction or float
        Frames per second, from :data:`MIN_FPS` to :data:`MAX_FPS`. A float
        becomes the nearest fraction of denominator 1001 at most (so that
        1/3 is 1/3, not a float's 6004799503160661/18014398509481984); a
        fraction is kept as it is.

    Returns
    -------
    fractions.Fraction
        The rate.

    Raises
    ------
    OptionError
        For anything else (not a number, infinite, NaN, out of range), naming ``fps``.

    Examples
    --------
    >>> video_rate(1 / 3)
    Fraction(1, 3)
    """
    try:
        value = float(fps)
    except (TypeError, ValueError, OverflowError):
        raise OptionError("{fps} must be a number of frames per second, got {value!r}",
                          value=fps) from None
    # NaN and the infinities fail the range too (no fraction has their value). A whole
    # number is shown as one: the command line reads "--fps 0" as 0.0, not "got 0.0".
    check_range("fps", int(value) if value.is_integer() else value, MIN_FPS, MAX_FPS,
                "frames per second")
    return fps if isinstance(fps, Fraction) else Fraction(value).limit_denominator(1001)


def write_video(
    frames: Iterable[np.ndarray], path: str | Path, fps: Fraction | float = DEFAULT_FPS,
    *, codec: str | None = None,
) -> VideoWritten:
    """Encode ``frames`` into the video ``path``, atomically.

    Parameters
    ----------
    frames : iterable of numpy.ndarray
        ``(H, W, 3)`` uint8 RGB pictures, all of one size (the first sets
        it; odd sides lose their last row or column).
    path : path-like
        The video (its suffix picks the container, see :data:`CODECS`).
    fps : fractions.Fraction or float
        Frames per second (see :func:`video_rate`).
    codec : str, optional
        An FFmpeg encoder (default: :func:`video_codec`).

    Returns
    -------
    VideoWritten
        The frames written, their size, the codec and rate, and the mean
        change between consecutive frames.

    Raises
    ------
    OptionError
        For a frame rate :func:`video_rate` refuses.
    MosaicistError
        When there is no frame, a frame has another size, or encoding fails.
    """
    av = _av()
    path = Path(path)
    rate = video_rate(fps)
    codec = codec or video_codec(path)
    pictures = iter(frames)
    first = next(pictures, None)
    if first is None:
        raise MosaicistError(f"{path}: no frame to write")
    shape = first.shape[:2]
    # 4:2:0 chroma: even sides.
    height, width = shape[0] // 2 * 2, shape[1] // 2 * 2
    if width < 2 or height < 2:
        raise MosaicistError(f"{path}: frames of {shape[1]}x{shape[0]} pixels are too small "
                             "for a video")
    written = VideoWritten(path, codec, rate, width=width, height=height)
    with atomic_path(path) as temporary:
        try:
            with av.open(str(temporary), "w") as container:
                stream = container.add_stream(codec, rate=rate)
                stream.width, stream.height = width, height
                stream.pix_fmt = "yuv420p"
                conversion = _bt709(av) if codec in DESCRIBED_CODECS else None
                stream.options = {**CODEC_OPTIONS.get(codec, {}),
                                  **(BT709_OPTIONS if conversion is not None else {})}
                for picture in itertools.chain([first], pictures):
                    if picture.shape[:2] != shape:
                        raise MosaicistError(
                            f"{path}: frame {written.frames} is {picture.shape[1]}x"
                            f"{picture.shape[0]} pixels, the first was {shape[1]}x{shape[0]}; "
                            "a video's frames have one size")
                    written.add(picture)
                    frame = av.VideoFrame.from_ndarray(
                        np.ascontiguousarray(picture[:height, :width]), format="rgb24")
                    if conversion is not None:
                        frame = frame.reformat(format="yuv420p", **conversion)
                    for packet in stream.encode(frame):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
        except av.error.FFmpegError as error:
            reason = getattr(error, "strerror", None) or str(error)
            raise MosaicistError(f"{path}: cannot write video: {reason}") from None
    return written


def _bt709(av: Any) -> dict[str, Any] | None:
    """:meth:`av.VideoFrame.reformat`'s arguments to BT.709's matrix and video range.

    None where this PyAV cannot say them (PyAV's own conversion, BT.601's,
    is then written without a description, as a codec that has none is).
    """
    try:
        from av.video.reformatter import ColorRange, Colorspace

        conversion = {"dst_colorspace": Colorspace.ITU709, "dst_color_range": ColorRange.MPEG}
        av.VideoFrame(2, 2, "rgb24").reformat(format="yuv420p", **conversion)
    except (ImportError, AttributeError, TypeError, ValueError):  # pragma: no cover - old PyAV
        return None
    return conversion


@dataclass
class VideoWritten:
    """A video :func:`write_video` wrote.

    Attributes
    ----------
    path : pathlib.Path
        The video.
    codec : str
        Its encoder.
    rate : fractions.Fraction
        Frames per second.
    frames : int
        Frames written.
    width, height : int
        Its size (even).
    pixel_change : float or None
        Mean absolute difference between consecutive frames, over every
        pixel and channel (0-255), before encoding; None for one frame.
    """

    path: Path
    codec: str
    rate: Fraction
    frames: int = 0
    width: int = 0
    height: int = 0
    pixel_change: float | None = None
    _changes: list[float] = field(default_factory=list, repr=False)
    _previous: np.ndarray | None = field(default=None, repr=False)

    def add(self, picture: np.ndarray) -> None:
        """Count a frame and its change from the one before.

        Parameters
        ----------
        picture : numpy.ndarray
            The frame as written, ``(height, width, 3)`` uint8.
        """
        if self._previous is not None:
            self._changes.append(mean_change(self._previous, picture))
            self.pixel_change = float(np.mean(self._changes))
        self._previous = picture
        self.frames += 1


def mean_change(before: np.ndarray, after: np.ndarray) -> float:
    """Mean absolute difference of two uint8 pictures of one shape (0-255), in bounded memory.

    Parameters
    ----------
    before, after : numpy.ndarray
        The two pictures, uint8, of one shape (rows first).

    Returns
    -------
    float
        The mean over every value, 0 to 255.
    """
    total = 0
    rows = max(1, (8 << 20) // max(1, before[0].size * 2))
    for top in range(0, len(before), rows):
        one = before[top:top + rows].astype(np.int16)
        two = after[top:top + rows].astype(np.int16)
        total += int(np.abs(one - two).sum(dtype=np.int64))
    return total / max(1, before.size)


def cell_changes(picks: Sequence[tuple[np.ndarray, np.ndarray] | None]) -> list[float | None]:
    """The fraction of cells whose tile (or its transform) changed from each frame to the next.

    Parameters
    ----------
    picks : sequence
        Each frame's ``(tile, transform)`` arrays over its cells, or None
        where unknown.

    Returns
    -------
    list
        One entry per consecutive pair: the fraction changed, or None where
        either frame is unknown or their grids differ.
    """
    changes: list[float | None] = []
    for before, after in zip(picks, picks[1:], strict=False):
        if before is None or after is None or before[0].shape != after[0].shape:
            changes.append(None)
            continue
        changed = (before[0] != after[0]) | (before[1] != after[1])
        changes.append(float(changed.mean()) if changed.size else 0.0)
    return changes
