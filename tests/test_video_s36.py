"""Awkward videos in: cover pictures, several video streams, Matroska files cut short."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import shifted_picture as _picture
from conftest import write_frames as _write_frames
from PIL import Image

from mosaicist.batch import read_frames, video_info
from mosaicist.errors import MosaicistError

av = pytest.importorskip("av")

#: FFmpeg's AV_DISPOSITION_ATTACHED_PIC and AV_DISPOSITION_DEFAULT.
ATTACHED_PICTURE, DEFAULT = 0x0400, 0x0001
CODEC = "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _encode(container, stream, pictures) -> None:
    for picture in pictures:
        for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def _with_cover(path: Path, with_video: bool) -> None:
    """An MP4 of sound (silence) with a cover picture, as a song or podcast has; and a video."""
    cover = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(cover, "JPEG")
    with av.open(str(path), "w") as container:
        sound = container.add_stream("aac", rate=8000)
        picture = container.add_stream("mjpeg")
        picture.width = picture.height = 16
        picture.pix_fmt = "yuvj420p"
        picture.disposition = ATTACHED_PICTURE
        if with_video:
            video = container.add_stream(CODEC, rate=12)
            video.width, video.height, video.pix_fmt = 48, 32, "yuv420p"
        packet = av.Packet(cover.getvalue())
        packet.stream, packet.pts, packet.dts = picture, 0, 0
        packet.time_base = Fraction(1, 90000)
        container.mux(packet)
        if with_video:
            _encode(container, video, [_picture(48, 32, index) for index in range(3)])
        silence = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                             layout="mono")
        silence.sample_rate, silence.pts = 8000, 0
        for packet in [*sound.encode(silence), *sound.encode()]:
            container.mux(packet)


@pytest.mark.skipif(not hasattr(av.video.stream.VideoStream, "disposition"),
                    reason="this PyAV cannot write a cover picture")
def test_a_sound_file_with_a_cover_picture_has_no_video(tmp_path):
    # The cover art of a song or podcast (an M4A saved as .mp4) is a video stream of one
    # still: `mosaicist batch song.mp4 --video v.mp4` made one mosaic of the cover and a
    # 1-frame video, exit 0.
    song = tmp_path / "song.mp4"
    _with_cover(song, with_video=False)
    with av.open(str(song)) as container:
        assert [int(stream.disposition) & ATTACHED_PICTURE
                for stream in container.streams.video] == [ATTACHED_PICTURE]
    with pytest.raises(MosaicistError, match="no video stream in the file \\(only a cover"):
        list(read_frames(song))
    with pytest.raises(MosaicistError, match="no video stream"):
        video_info(song)
    # A video with a cover picture is its video.
    clip = tmp_path / "clip.mp4"
    _with_cover(clip, with_video=True)
    frames = list(read_frames(clip))
    assert len(frames) == 3 and frames[0].shape == (32, 48, 3)
    assert (video_info(clip).width, video_info(clip).height) == (48, 32)


@pytest.mark.skipif(not hasattr(av.video.stream.VideoStream, "disposition"),
                    reason="this PyAV cannot mark a default stream")
def test_of_two_video_streams_the_default_is_read(tmp_path):
    # A thumbnail (or a second camera) stored first, the main picture marked as the
    # default, as players show it: the first stream's frames were made.
    clip = tmp_path / "two.mkv"
    with av.open(str(clip), "w") as container:
        thumbnail = container.add_stream(CODEC, rate=12)
        thumbnail.width, thumbnail.height, thumbnail.pix_fmt = 16, 16, "yuv420p"
        thumbnail.disposition = 0
        main_picture = container.add_stream(CODEC, rate=12)
        main_picture.width, main_picture.height, main_picture.pix_fmt = 48, 32, "yuv420p"
        main_picture.disposition = DEFAULT
        _encode(container, thumbnail, [np.full((16, 16, 3), 90, np.uint8)] * 2)
        _encode(container, main_picture, [_picture(48, 32, index) for index in range(4)])
    frames = list(read_frames(clip))
    assert [frame.shape for frame in frames] == [(32, 48, 3)] * 4
    info = video_info(clip)
    assert (info.width, info.height) == (48, 32)


def _matroska(path: Path, count: int, live: bool = False) -> list[tuple[int, int]]:
    """A Matroska video of ``count`` noisy frames; its packets' places in the file."""
    rng = np.random.default_rng(6)
    pictures = [np.clip(_picture(48, 32, index) + rng.integers(-30, 30, (32, 48, 3)), 0,
                        255).astype(np.uint8) for index in range(count)]
    # "live": the segment's size unknown, as a recorder that cannot seek back writes it.
    with av.open(str(path), "w", options={"live": "1"} if live else {}) as container:
        stream = container.add_stream(CODEC, rate=12)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        _encode(container, stream, pictures)
    with av.open(str(path)) as container:
        return sorted((packet.pos, packet.size) for packet in container.demux(video=0)
                      if packet.size)


@pytest.mark.parametrize("cut", ["between frames", "amid a frame"])
def test_a_matroska_video_cut_short_gives_its_frames_then_says_so(tmp_path, cut):
    # An MKV or WebM (OBS's recordings, downloads) cut short read as the whole clip: the
    # batch made the first half of it and wrote its video as if done, exit 0 (the batch
    # says a video cut short as test_batch_s32 shows for an MP4's).
    whole = tmp_path / "whole.mkv"
    places = _matroska(whole, 12)
    assert len(list(read_frames(whole))) == 12
    position, size = places[6]
    end = position if cut == "between frames" else position + size // 2
    short = tmp_path / "short.mkv"
    short.write_bytes(whole.read_bytes()[:end])
    given = []
    with pytest.raises(MosaicistError) as raised:
        given.extend(read_frames(short))
    assert str(raised.value) == (f"{short}: cannot read video: the file is cut short, its last "
                                 "frames are missing")
    assert 1 <= len(given) <= 6 and all(frame.shape == (32, 48, 3) for frame in given)


def test_a_matroska_video_of_unknown_size_is_read_to_its_end(tmp_path):
    # Written live (the segment's size unknown), a file says nothing of its end: read as
    # it is, whole or not, never refused.
    live = tmp_path / "live.mkv"
    _matroska(live, 5, live=True)
    assert len(list(read_frames(live))) == 5
    short = tmp_path / "short.mkv"
    short.write_bytes(live.read_bytes()[:live.stat().st_size * 2 // 3])
    assert 1 <= len(list(read_frames(short))) < 5
    # Another container (an MP4 made by the tests' helper) is not taken for Matroska.
    mp4 = tmp_path / "clip.mp4"
    _write_frames(mp4, [_picture(48, 32, index) for index in range(3)])
    assert len(list(read_frames(mp4))) == 3


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_a_video_out_says_its_colours_as_players_read_them(tmp_path, suffix):
    # Converted with BT.601's matrix and not described, a mosaic video was played with
    # BT.709's from HD sizes up (browsers, mpv, VLC): its colours moved by 10 levels on
    # average, its reds and greens most.
    from mosaicist.batch._video import video_codec, write_video

    if video_codec(tmp_path / f"v{suffix}") not in ("libx264", "libvpx-vp9"):
        pytest.skip("no encoder that describes its colours")
    picture = np.zeros((32, 48, 3), np.uint8)
    picture[:16, :24], picture[:16, 24:] = (220, 30, 40), (30, 200, 60)
    picture[16:, :24], picture[16:, 24:] = (40, 60, 220), (230, 200, 40)
    video = tmp_path / f"v{suffix}"
    write_video([picture] * 2, video, 12)
    with av.open(str(video)) as container:
        frame = next(container.decode(video=0))
        assert (int(frame.colorspace), int(frame.color_range)) == (1, 1)  # BT.709, video range
        # As a player that knows the description, or guesses BT.709, shows it.
        shown = frame.reformat(format="rgb24", src_colorspace="ITU709").to_ndarray()
    assert np.abs(shown.astype(int) - picture).mean() < 4
    assert np.abs(next(read_frames(video)).astype(int) - picture).mean() < 4
