"""Hostile videos read as players show them: cuts inside B-frames, empty files, odd pixels."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from mosaicist.batch import read_frames, video_info
from mosaicist.errors import MosaicistError

av = pytest.importorskip("av")

WIDTH, HEIGHT = 64, 48


def _pictures(count: int) -> list[np.ndarray]:
    """Frames that differ from each other (a flat one would hide a damaged frame)."""
    rng = np.random.default_rng(5)
    base = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    return [np.roll(base, 3 * number, axis=1) for number in range(count)]


def _clip(path: Path, pictures: list[np.ndarray], codec: str = "mpeg2video",
          b_frames: int = 0, pixel_aspect: Fraction | None = None) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=12)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.max_b_frames = b_frames
        if pixel_aspect is not None:
            stream.codec_context.sample_aspect_ratio = pixel_aspect
        for picture in pictures:
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_a_ts_cut_inside_a_b_frame_leaves_that_frame_out(tmp_path):
    # A broadcast's MPEG-2 (IBBP...) capture stopped inside a B-frame: that frame's
    # missing part (a smear) was given as a target, silently, since the P-frame before
    # it in the file is shown after it. Two frames in three of such a capture are B-frames.
    whole = tmp_path / "whole.ts"
    _clip(whole, _pictures(9), b_frames=2)
    with av.open(str(whole)) as container:
        packets = [(packet.pos, packet.size, packet.pts)
                   for packet in container.demux(video=0) if packet.size]
    shown = list(read_frames(whole))
    assert len(shown) == 9
    # The file's last B-frame: shown before a frame stored ahead of it.
    cut_at = max(number for number, packet in enumerate(packets)
                 if number and packet[2] < max(before[2] for before in packets[:number]))
    position, size, _ = packets[cut_at]
    cut = tmp_path / "cut.ts"
    cut.write_bytes(whole.read_bytes()[:(position + size // 2) // 188 * 188])
    with av.open(str(cut)) as container:
        assert any(frame.is_corrupt for frame in container.decode(video=0))
    said: list[str] = []
    given = list(read_frames(cut, note=said.append))
    assert said == [f"{cut}: its last frame is partial (the file is cut short): left out"]
    # Each frame given is one of the whole file's, whole: the partial one is left out.
    assert given and all(any(np.array_equal(frame, one) for one in shown) for frame in given)
    assert len(given) == cut_at  # the frames stored before the cut


def test_a_damaged_frame_shown_last_but_stored_before_the_end_is_kept(tmp_path):
    # A whole broadcast capture with a TS packet lost inside its last P-frame (shown last,
    # stored before the B-frames shown ahead of it): that frame was left out, said as "the
    # file is cut short", of a file that is not. Players show it, as any damaged frame amid.
    whole = tmp_path / "whole.ts"
    _clip(whole, _pictures(9), b_frames=2)
    with av.open(str(whole)) as container:
        packets = [(packet.pos, packet.size, packet.pts)
                   for packet in container.demux(video=0) if packet.size]
    shown_last = max(range(len(packets)), key=lambda number: packets[number][2])
    assert shown_last < len(packets) - 1
    position, size, _ = packets[shown_last]
    lost = (position + size // 2) // 188 * 188
    damaged = tmp_path / "damaged.ts"
    damaged.write_bytes(whole.read_bytes()[:lost] + whole.read_bytes()[lost + 188:])
    with av.open(str(damaged)) as container:
        assert [frame.is_corrupt for frame in container.decode(video=0)][-1]
    said: list[str] = []
    assert len(list(read_frames(damaged, note=said.append))) == 9
    assert said == []


@pytest.mark.parametrize("suffix", [".mp4", ".ts", ".mkv"])
def test_an_empty_video_says_so(tmp_path, suffix):
    # A download that never started (0 bytes) was "Invalid data found when processing
    # input": FFmpeg's words for a damaged file; an empty image says it is empty.
    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    for read in (video_info, lambda path: next(read_frames(path))):
        with pytest.raises(MosaicistError) as caught:
            read(empty)
        assert str(caught.value) == f"{empty}: cannot read video: the file is empty"


@pytest.mark.parametrize("shape", [(65535, 1), (1, 65535), (2**31 - 1, 1)])
def test_a_pixel_shape_too_wide_to_resample_says_so(tmp_path, shape):
    # An MP4 whose 'pasp' box says 65535:1 (damaged, or written by a broken muxer), under a
    # raised --max-target-pixels: "cannot read video: Invalid argument" from FFmpeg's
    # scaler, or past 2**31 a traceback (OverflowError) from PyAV.
    clip = tmp_path / "wide.mp4"
    _clip(clip, _pictures(2), codec="mpeg4", pixel_aspect=Fraction(1, 3))
    data = bytearray(clip.read_bytes())
    box = data.index(b"pasp") + 4  # its horizontal and vertical spacing, 32 bits each
    data[box:box + 8] = struct.pack(">II", *shape)
    clip.write_bytes(bytes(data))
    info = video_info(clip, max_pixels=1)  # the size from the header, nothing decoded
    aspect = Fraction(*shape)
    wanted = ((round(WIDTH * aspect), HEIGHT) if aspect > 1
              else (WIDTH, round(HEIGHT / aspect)))
    assert (info.width, info.height) == wanted
    with pytest.raises(MosaicistError) as caught:
        next(read_frames(clip, max_pixels=10**15))
    assert str(caught.value) == (
        f"{clip}: cannot read video: its pixels' shape ({shape[0]}:{shape[1]}) makes frames "
        f"of {wanted[0]:,}x{wanted[1]:,} pixels, more than FFmpeg can resample")
    # Under the default limit, the limit says it first, as for a picture.
    with pytest.raises(MosaicistError, match="over the target limit"):
        next(read_frames(clip, max_pixels=100_000_000))


@pytest.mark.parametrize("estimate", [12, 2])
def test_the_bar_ends_at_the_frames_read_where_the_count_was_estimated(tmp_path, monkeypatch,
                                                                       estimate):
    # A count estimated from a duration that lies (or a variable frame rate) left the bar at
    # "6/3" or "10/43,200,000": its total now becomes the frames read once they are known.
    import dataclasses

    from conftest import make_colour_folder

    from mosaicist.batch import _run, _video, batch_mosaics

    clip = tmp_path / "clip.mkv"
    _clip(clip, _pictures(4))
    told = _video.video_info

    def lying(path, *arguments, **keywords):
        return dataclasses.replace(told(path, *arguments, **keywords), frames=estimate,
                                   estimated=True)

    monkeypatch.setattr(_video, "video_info", lying)
    bars = []
    made = _run.progress_bar

    def kept(*arguments, **keywords):
        bars.append(made(*arguments, **keywords))
        return bars[-1]

    monkeypatch.setattr(_run, "progress_bar", kept)
    batch_mosaics([clip], make_colour_folder(tmp_path / "tiles", 8), tmp_path / "out",
                  cell_px=16, tile_px=8, preset="seed", workers=1,
                  cache_dir=tmp_path / "cache")
    mosaics = [bar for bar in bars if bar.total in (4, estimate) or bar.n == 4]
    assert mosaics and mosaics[-1].n == 4 and mosaics[-1].total == 4
