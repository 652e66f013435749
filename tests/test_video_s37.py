"""Videos read as players show them: non-square pixels, mirrors, counts, partial frames."""

from __future__ import annotations

import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from mosaicist.batch import read_frames, video_info
from mosaicist.batch._video import VideoWarning, square_size

av = pytest.importorskip("av")

CODEC = "libx264" if "libx264" in av.codecs_available else "mpeg4"
WIDTH, HEIGHT = 64, 48


def _quadrants(width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """Four flat colours, one to a quadrant: each mirror and turn of it is another picture."""
    picture = np.empty((height, width, 3), np.uint8)
    top, left = height // 2, width // 2
    picture[:top, :left] = (220, 40, 40)
    picture[:top, left:] = (40, 200, 40)
    picture[top:, :left] = (40, 40, 220)
    picture[top:, left:] = (230, 230, 60)
    return picture


def _clip(path: Path, pictures: list[np.ndarray], *, codec: str = CODEC,
          pixel_aspect: Fraction | None = None, turn: int | None = None,
          hflip: bool = False, vflip: bool = False, options: dict | None = None) -> None:
    """A video of ``pictures``, its pixels' shape and display matrix as given."""
    height, width = pictures[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=12)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = options or {}
        if pixel_aspect is not None:
            stream.codec_context.sample_aspect_ratio = pixel_aspect
        if turn is not None:
            stream.set_display_rotation(turn, hflip=hflip, vflip=vflip)
        for picture in pictures:
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _error(given: np.ndarray, wanted: np.ndarray) -> float:
    assert given.shape == wanted.shape
    return float(np.abs(given.astype(np.int16) - wanted).mean())


@pytest.mark.parametrize(("pixel_aspect", "size"), [
    (Fraction(16, 15), (68, 48)),  # PAL 4:3 (a DV camera's 720x576 is 768x576 on screen)
    (Fraction(64, 45), (91, 48)),  # PAL 16:9 (a DVD's 720x576 is 1024x576)
    (Fraction(8, 9), (64, 54)),  # NTSC 4:3: pixels taller than wide
])
def test_non_square_pixels_are_read_at_their_shape(tmp_path, pixel_aspect, size):
    # A DVD's, a DV camera's or a broadcast's 720x576 frames were read as stored: every
    # mosaic of a 16:9 DVD squashed to 5:4, faces and circles 30% narrow.
    clip = tmp_path / "anamorphic.mp4"
    _clip(clip, [_quadrants()] * 2, pixel_aspect=pixel_aspect)
    info = video_info(clip)
    assert (info.width, info.height) == size
    frames = list(read_frames(clip))
    assert len(frames) == 2
    wanted = np.asarray(av.VideoFrame.from_ndarray(_quadrants(), format="rgb24").reformat(
        width=size[0], height=size[1]).to_ndarray(format="rgb24"))
    assert all(frame.shape == (size[1], size[0], 3) for frame in frames)
    assert _error(frames[0], wanted) < 8
    # The frame limit counts the pixels shown, which the mosaic is made of.
    from mosaicist.errors import MosaicistError

    with pytest.raises(MosaicistError, match="over the target limit|limit"):
        next(read_frames(clip, max_pixels=size[0] * size[1] - 1))
    assert next(read_frames(clip, max_pixels=size[0] * size[1])).shape[:2] == size[::-1]


def test_square_pixels_stretch_the_short_side():
    assert square_size(720, 576, Fraction(64, 45)) == (1024, 576)
    assert square_size(720, 576, Fraction(16, 15)) == (768, 576)
    assert square_size(720, 480, Fraction(10, 11)) == (720, 528)
    assert square_size(720, 480, None) == square_size(720, 480, Fraction(1)) == (720, 480)


@pytest.mark.skipif(not hasattr(av.video.stream.VideoStream, "set_display_rotation"),
                    reason="this PyAV cannot write a display matrix")
@pytest.mark.parametrize(("turn", "hflip", "vflip", "shown"), [
    (0, True, False, lambda p: p[:, ::-1]),  # a front camera's selfie, mirrored
    (0, False, True, lambda p: p[::-1]),
    (90, True, False, lambda p: np.rot90(p)[:, ::-1]),
    (90, False, True, lambda p: np.rot90(p)[::-1]),
    (-90, True, False, lambda p: np.rot90(p, -1)[:, ::-1]),
    (90, False, False, np.rot90),  # no mirror: as before
    (180, False, False, lambda p: np.rot90(p, 2)),
])
def test_a_mirroring_display_matrix_is_undone(tmp_path, turn, hflip, vflip, shown):
    # A display matrix with a mirror (a selfie clip, a mirrored webcam) was read by its
    # rotation alone: FFmpeg calls a left-right mirror a turn of 180 degrees, and the
    # mosaic came out upside down and still mirrored.
    clip = tmp_path / "mirrored.mp4"
    _clip(clip, [_quadrants()], turn=turn, hflip=hflip, vflip=vflip)
    wanted = shown(_quadrants())
    frame = next(read_frames(clip))
    assert _error(frame, wanted) < 8
    info = video_info(clip)
    assert (info.height, info.width) == wanted.shape[:2]


@pytest.mark.parametrize("suffix", [".mkv", ".ts"])
def test_a_header_without_a_count_estimates_it_from_the_duration(tmp_path, suffix):
    # Matroska and MPEG-TS headers count no frames: a batch of a long MKV had no end to
    # its progress. Its duration times its rate is the count's estimate.
    clip = tmp_path / f"clip{suffix}"
    _clip(clip, [_quadrants()] * 10)
    info = video_info(clip)
    assert info.estimated
    assert info.frames is not None and abs(info.frames - 10) <= 1
    assert len(list(read_frames(clip))) == 10
    mp4 = tmp_path / "clip.mp4"
    _clip(mp4, [_quadrants()] * 10)
    assert (video_info(mp4).frames, video_info(mp4).estimated) == (10, False)


def _noisy(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(9)
    return [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(count)]


@pytest.mark.parametrize("codec", [CODEC, "mpeg2video"])
def test_an_mpeg_ts_cut_inside_its_last_frame_leaves_it_out_and_says_so(tmp_path, codec):
    # A TV capture stopped mid-frame gave that frame's missing part, a grey or green smear
    # the decoder flags, as the video's last target, without a word.
    whole = tmp_path / "whole.ts"
    _clip(whole, _noisy(4), codec=codec, options={"bf": "0"} if codec == "libx264" else {})
    with av.open(str(whole)) as container:
        places = [(packet.pos, packet.size) for packet in container.demux(video=0)
                  if packet.size]
    frames = list(read_frames(whole))
    assert len(frames) == 4
    position, size = places[-1]
    cut = tmp_path / "cut.ts"
    cut.write_bytes(whole.read_bytes()[:(position + size // 2) // 188 * 188])  # TS packets
    said: list[str] = []
    given = list(read_frames(cut, note=said.append))
    assert said == [f"{cut}: its last frame is partial (the file is cut short): left out"]
    assert len(given) == 3
    assert all(np.array_equal(one, two) for one, two in zip(given, frames, strict=False))
    # Without a listener, said once as a warning; a whole file says nothing.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(list(read_frames(cut))) == 3
        assert len(list(read_frames(whole))) == 4
    assert [str(warning.message) for warning in caught
            if issubclass(warning.category, VideoWarning)] == [said[0]]
    # A frame damaged amid the file (a TS packet lost on air) is kept, as players show it:
    # only a partial last frame is left out.
    position, size = places[2]
    lost = (position + size // 2) // 188 * 188
    damaged = tmp_path / "damaged.ts"
    damaged.write_bytes(whole.read_bytes()[:lost] + whole.read_bytes()[lost + 188:])
    said.clear()
    assert len(list(read_frames(damaged, note=said.append))) == 4
    assert said == []


def test_batch_says_a_partial_last_frame_in_one_line(tmp_path):
    # The command line said it in Python's own words (the warning's module, line and source
    # line); now one line, above the bar, and nothing with --quiet.
    from click.testing import CliRunner
    from conftest import make_colour_folder

    from mosaicist.cli import main

    whole = tmp_path / "whole.ts"
    _clip(whole, _noisy(4), options={"bf": "0"})
    with av.open(str(whole)) as container:
        position, size = [(packet.pos, packet.size) for packet in container.demux(video=0)
                          if packet.size][-1]
    cut = tmp_path / "cut.ts"
    cut.write_bytes(whole.read_bytes()[:(position + size // 2) // 188 * 188])
    tiles = make_colour_folder(tmp_path / "tiles", 8)
    for quiet, out in ((False, "loud"), (True, "quiet")):
        result = CliRunner().invoke(main, ["batch", str(cut), "--tiles", str(tiles), "-o",
                                           str(tmp_path / out), "--cell", "16", "--tile-px",
                                           "8", "--workers", "1", "--preset", "seed",
                                           *(["--quiet"] if quiet else [])])
        assert result.exit_code == 0, result.output
        said = [line for line in result.output.splitlines() if "partial" in line]
        if quiet:
            assert said == []
        else:
            assert said == [f"mosaicist: warning: {cut}: its last frame is partial (the file "
                            "is cut short): left out"]
            assert "VideoWarning" not in result.output
        assert len(list((tmp_path / out).glob("*.png"))) == 3
