"""Batches and videos: throughput against one ``make`` per target, resume, and flicker.

Targets are made from the shared data: ``--targets`` crops (4:3, random
position and size, seeded) of the shared ``targets/`` pictures, resized to
``--size``; the video is a ``--seconds`` pan and zoom over Starry Night at
``--fps`` and ``--video-size``, written with PyAV (H.264); with ``--cut``, two
shots of half that each: a slow pan over Starry Night, then a cut to a slow
pan over the camera-trap elephants. Tiles: the CIFAR-10 train JPEGs (``--tiles``),
indexed once in the benchmark cache. Each command runs as a child process
(wall time, peak RSS of its largest process).

Printed:

1. **One ``make`` per target** (the first ``--make`` targets): seconds per
   target, each paying for the interpreter, opening the library and its
   features; their outputs are compared byte for byte with the batch's.
2. **The batch** of all targets on the local pool (one worker per core),
   then the first ``--scaling`` targets on 1 and on 2 workers, and a second
   run of the whole batch, which finds every output done (resume).
3. **The video**: for each ``--video PRESET:S,S...`` (preset and
   ``--stable`` strengths), the frames made and encoded into a video: seconds, the mean
   fraction of cells whose tile changes from frame to frame, the mean
   absolute pixel change between consecutive frames (0-255; the source
   video's own change for reference), and the fidelity it costs (mean SSIM
   and CIEDE2000 at viewing scale, from mosaicist's metrics).
4. **Per shot** (``--cut``): for each run, each shot's mean SSIM at viewing
   scale over its frames, over the last :data:`SHOT_END` frames of the first
   shot (where a pan has moved furthest from the tiles held) and of the first
   frame after the cut, and the share of cells changing tile per frame
   within each shot and at the cut (the stability rule of
   :mod:`mosaicist.batch._stable` matches a new scene afresh).

Run (from the repository root)::

    python benchmarks/bench_batch.py            # 200 targets, a 20 s video: about an hour
    python benchmarks/bench_batch.py --quick    # 24 targets, a 4 s video: a few minutes
    python benchmarks/bench_batch.py --video-only --cut --seconds 4 --video seed:0,1,10
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    cache_dir,
    cache_file,
    data_dir,
    fresh_dir,
    gib,
    machine,
    mosaicist_command,
    positive_float,
    positive_int,
    print_table,
    run_child,
)

#: The picture the video pans over.
VIDEO_SOURCE = "starry_night_google_1280.jpg"
#: The picture of the second shot, after the cut (``--cut``).
CUT_SOURCE = "cameratrap_african_elephants.jpg"
#: Frames at the end of the first shot whose SSIM is shown apart (``--cut``).
SHOT_END = 5


def frame_size(text: str) -> tuple[int, int]:
    """``argparse`` type: ``WxH``, two positive integers."""
    width, _, height = text.lower().partition("x")
    try:
        size = (int(width), int(height))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WxH (e.g. 256x192)") from None
    if min(size) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: width and height must be at least 1")
    return size


def video_runs_wanted(text: str) -> list[tuple[str, float]]:
    """``argparse`` type: ``PRESET:S,S...``, a preset and its ``--stable`` strengths."""
    preset, colon, strengths = text.partition(":")
    try:
        values = [float(value) for value in strengths.split(",")]
    except ValueError:
        values = []
    if not colon or not preset or not values or not all(0 <= value <= 10 for value in values):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not PRESET:S,S... with strengths from 0 to 10 (e.g. seed:0,0.5)")
    return [(preset, value) for value in values]


def make_targets(data: Path, folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    """``count`` seeded 4:3 crops of the shared targets, resized to ``size`` (made once)."""
    width, height = size
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted((data / "targets").glob("*.*"))
    rng = np.random.default_rng(15)
    made = []
    for number in range(count):
        path = folder / f"t{number:04d}.jpg"
        made.append(path)
        source = sources[number % len(sources)]
        scale, left, top = rng.uniform(0.3, 1.0), rng.uniform(), rng.uniform()
        if path.exists():
            continue
        with Image.open(source) as image:
            picture = image.convert("RGB")
        crop_w = max(width, min(picture.width, int(picture.height * 4 / 3)) * scale)
        crop_h = crop_w * 3 / 4
        x = left * (picture.width - crop_w)
        y = top * (picture.height - crop_h)
        box = (x, y, x + crop_w, y + crop_h)
        # Written whole under its final name: a killed run leaves no cut-short JPEG to reuse.
        with cache_file(path) as partial:
            picture.resize(size, Image.Resampling.LANCZOS, box=box).save(partial, quality=92)
    return made


def make_video(data: Path, path: Path, seconds: float, fps: int, size: tuple[int, int],
               cut: bool = False) -> tuple[int, int | None]:
    """The video, ``seconds`` long (made once): its frame count and first frame after the cut.

    A pan and slow zoom over Starry Night; with ``cut``, two shots of
    ``seconds / 2`` (:func:`shot_views`): a slow pan over Starry Night, then
    one over :data:`CUT_SOURCE` (None: no cut).
    """
    import av

    frames = round(seconds * fps)
    cut_at = frames // 2 if cut else None
    if path.exists():
        return frames, cut_at
    if cut:
        assert cut_at is not None
        views = itertools.chain(shot_views(data / "targets" / VIDEO_SOURCE, cut_at, size),
                                shot_views(data / "targets" / CUT_SOURCE, frames - cut_at, size))
    else:
        views = pan_views(data / "targets" / VIDEO_SOURCE, frames, size)
    width, height = size
    # A temporary of this run's own (its suffix tells PyAV the container), renamed whole.
    with cache_file(path) as partial:
        with av.open(str(partial), "w") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": "18"}
            for view in views:
                frame = av.VideoFrame.from_ndarray(view, format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return frames, cut_at


def pan_views(source: Path, frames: int, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """``frames`` views of ``source``: a pan across it and a slow zoom (the plain video)."""
    width, height = size
    with Image.open(source) as image:
        picture = image.convert("RGB")
    for index in range(frames):
        progress = index / max(1, frames - 1)
        crop_w = picture.width * (0.6 - 0.15 * progress)
        crop_h = crop_w * height / width
        x = progress * (picture.width - crop_w)
        y = (picture.height - crop_h) * (0.3 + 0.2 * progress)
        yield np.asarray(picture.resize(size, Image.Resampling.BILINEAR,
                                        box=(x, y, x + crop_w, y + crop_h)))


def shot_views(source: Path, frames: int, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """``frames`` views of ``source`` for a shot of ``--cut``: a slow pan, no zoom.

    The picture resized to twice the frame's width (taller where the frame
    needs it), the frame's window moved right from its top left by a third
    of the frame's width over the shot: the two-shot clip of the session-30
    figures in ``benchmarks/README.md``.
    """
    width, height = size
    with Image.open(source) as image:
        scale = max(2 * width / image.width, height / image.height)
        picture = np.asarray(image.convert("RGB").resize(
            (max(2 * width, int(image.width * scale)),
             max(height, int(image.height * scale)))))
    room = picture.shape[1] - width
    for index in range(frames):
        x = round(index * room / max(1, frames - 1) / 3)
        yield np.ascontiguousarray(picture[:height, x:x + width])


def shot_figures(report: dict, picks: Path, stem: str, frames: int, cut: int
                 ) -> list[str]:
    """Per shot: SSIM at viewing scale and the share of cells changing tile per frame.

    ``report`` is the batch's report, ``picks`` its folder of frames' picks
    (``OUTDIR/.mosaicist-batch/picks``), ``cut`` the first frame of the
    second shot. Returns the table's cells (see :func:`main`'s fourth part).
    """
    from mosaicist.batch import Picks, cell_changes

    ssim = [float("nan")] * frames
    for entry in report["targets"]:
        index = int(entry["name"].rsplit(" frame ", 1)[1])
        ssim[index] = (entry["metrics"] or {}).get("ssim_view", float("nan"))
    loaded = [Picks.load(str(picks / f"{stem}-{index:06d}.npz")) for index in range(frames)]
    changes = cell_changes([None if found is None else (found.tile, found.transform)
                            for found in loaded])  # changes[i]: frame i to frame i + 1
    changes = [float("nan") if change is None else change for change in changes]

    def mean(values: list[float]) -> str:
        return f"{np.mean(values):.3f}" if values else "-"

    def share(values: list[float]) -> str:
        return f"{100 * np.mean(values):.1f}%" if values else "-"

    return [mean(ssim[:cut]), mean(ssim[max(0, cut - SHOT_END):cut]), mean(ssim[cut:cut + 1]),
            mean(ssim[cut:]), share(changes[:cut - 1]), share(changes[cut - 1:cut]),
            share(changes[cut:])]


def source_change(path: Path) -> float:
    """Mean absolute change between consecutive frames of the source video (0-255)."""
    import av

    from mosaicist.batch import mean_change

    changes, previous = [], None
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            picture = frame.to_ndarray(format="rgb24")
            if previous is not None:
                changes.append(mean_change(previous, picture))
            previous = picture
    return float(np.mean(changes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="shared data folder (default: ../shared/data)")
    parser.add_argument("--cache-dir", help="generated data, caches (default: benchmarks/.cache)")
    parser.add_argument("--tiles", default="cifar10/train", help="tile folder under --data")
    parser.add_argument("--targets", type=positive_int, default=200, help="targets in the batch")
    parser.add_argument("--size", type=frame_size, default="256x192", help="target size WxH")
    parser.add_argument("--cell", type=positive_int, default=8, help="cell side (target pixels)")
    parser.add_argument("--tile-px", type=positive_int, default=32,
                        help="tile side (output pixels)")
    parser.add_argument("--preset", default="balanced", help="preset of the batch")
    parser.add_argument("--make", type=positive_int, default=5,
                        help="targets also made one by one")
    parser.add_argument("--scaling", type=positive_int, default=24,
                        help="targets made on 1 and on 2 workers")
    parser.add_argument("--seconds", type=positive_float, default=20.0, help="video length")
    parser.add_argument("--fps", type=positive_int, default=25, help="video frame rate")
    parser.add_argument("--video-size", type=frame_size, default="160x120",
                        help="video frame size WxH")
    parser.add_argument("--video", type=video_runs_wanted, action="append", default=None,
                        metavar="PRESET:S,S...",
                        help="a preset of the video runs and its --stable strengths "
                             "(repeatable; default: seed:0,0.1,0.25,0.5,1 and balanced:0,0.25)")
    parser.add_argument("--cut", action="store_true",
                        help="make the video two shots (a pan over Starry Night, a cut to a "
                             "pan over the elephants); print each shot's SSIM and cells "
                             "changing per frame")
    parser.add_argument("--video-only", action="store_true",
                        help="only the video runs (no batches of images, no make)")
    parser.add_argument("--quick", action="store_true",
                        help="24 targets, 8 for scaling, 3 made one by one, a 4 s video at "
                             "12 fps, strengths 0 and 0.5")
    parser.add_argument("--keep", action="store_true",
                        help="keep the run's folder (the batches' outputs, the videos)")
    args = parser.parse_args()
    default_runs = "seed:0,0.5 balanced:0,0.5" if args.quick else \
        "seed:0,0.1,0.25,0.5,1 balanced:0,0.25"
    if args.quick:
        args.targets, args.scaling, args.make = 24, 8, 3
        args.seconds, args.fps = 4.0, 12
    video_runs = [run for wanted in args.video or map(video_runs_wanted, default_runs.split())
                  for run in wanted]
    size, video_size = args.size, args.video_size
    data = data_dir(args.data)
    cache = cache_dir(args.cache_dir)
    if not (data / args.tiles).is_dir():
        sys.exit(f"benchmark: --tiles: {data / args.tiles} not found")
    print(machine())
    targets = [] if args.video_only else make_targets(
        data, cache / f"batch-targets-{size[0]}x{size[1]}", args.targets, size)
    video = cache / (f"batch-video-{video_size[0]}x{video_size[1]}-{args.seconds:g}s-"
                     f"{args.fps}fps{'-cut' if args.cut else ''}.mp4")
    frames, cut = make_video(data, video, args.seconds, args.fps, video_size, args.cut)
    runs = fresh_dir(cache / "runs", "batch-")
    try:
        _run(args, data, cache, runs, targets, video, frames, video_runs, cut)
    finally:
        # The outputs of every batch and the videos: tens of MB a run, never reused.
        if args.keep:
            print(f"kept: {runs}")
        else:
            shutil.rmtree(runs, ignore_errors=True)


def _run(args: argparse.Namespace, data: Path, cache: Path, runs: Path, targets: list[Path],
         video: Path, frames: int, video_runs: list[tuple[str, float]],
         cut: int | None = None) -> None:
    """The batches and the video runs, with ``runs`` as the run's folder; print the tables.

    ``cut``: the first frame of the video's second shot (``--cut``), else None.
    """
    size = args.size
    tiles = data / args.tiles
    grid = ["--cell", str(args.cell), "--tile-px", str(args.tile_px)]
    env = {"MOSAICIST_CACHE_DIR": str(cache)}
    mosaicist = mosaicist_command()
    run_child([*mosaicist, "index", tiles, "-q"], env=env).check()
    made = "no targets (--video-only)" if args.video_only else \
        f"{len(targets)} targets of {size[0]}x{size[1]}, preset {args.preset}"
    print(f"tiles: {tiles} ; {made}; cells of {args.cell} px, tiles of {args.tile_px} px; "
          f"runs in {runs}", flush=True)
    if not args.video_only:
        _images(args, runs, targets, tiles, grid, env, mosaicist)
    _videos(args, runs, video, frames, video_runs, cut, tiles, grid, env, mosaicist)


def _images(args: argparse.Namespace, runs: Path, targets: list[Path], tiles: Path,
            grid: list[str], env: dict[str, str], mosaicist: list[str]) -> None:
    """One ``make`` per target, the batches of images and the resumed batch: the first table."""
    rows = []
    one_by_one = runs / "make"
    one_by_one.mkdir()
    times = []
    for target in targets[:args.make]:
        child = run_child([*mosaicist, "make", target, "--tiles", tiles, *grid, "--preset",
                           args.preset, "-o", one_by_one / f"{target.stem}.png", "-q"],
                          env=env).check()
        times.append(child.seconds)
    per_make = float(np.mean(times))
    rows.append([f"make, one per target ({len(times)})", f"{per_make:.2f}",
                 f"{1 / per_make:.2f}", f"{per_make * len(targets):.0f} (projected)", ""])

    def batch(name: str, items: list[Path], *extra: object) -> tuple[float, dict]:
        out = runs / name
        report = runs / f"{name}.json"
        listing = runs / f"{name}.txt"
        listing.write_text("".join(f"{item}\n" for item in items))
        child = run_child([*mosaicist, "batch", listing, "--tiles", tiles, "-o", out, *grid,
                           "--preset", args.preset, "--report", report, "-q", *extra],
                          env=env).check()
        figures = json.loads(report.read_text())
        per = child.seconds / max(1, len(items))
        rows.append([f"batch {name} ({len(items)})", f"{per:.2f}", f"{1 / per:.2f}",
                     f"{child.seconds:.0f}", gib(child.peak_rss_bytes)])
        return child.seconds, figures

    whole, _ = batch("all", targets)
    same = sum((runs / "all" / path.name).read_bytes() == path.read_bytes()
               for path in one_by_one.glob("*.png"))
    scaling = targets[:args.scaling]
    one, _ = batch("1-worker", scaling, "--workers", 1)
    two, _ = batch("2-workers", scaling, "--workers", 2)
    _, figures = batch("all", targets)
    assert figures["skipped"] == len(targets), figures
    rows[-1][0] = f"batch again: all {len(targets)} done (resume)"
    print()
    print_table(rows, ["run", "s/target", "targets/s", "total s", "peak RSS"])
    speedup = per_make * len(targets) / whole
    print(f"outputs equal to make's: {same} of {len(times)}; 1 -> 2 workers: {one / two:.2f}x; "
          f"batch of all vs one make per target: {speedup:.2f}x")


def _videos(args: argparse.Namespace, runs: Path, video: Path, frames: int,
            video_runs: list[tuple[str, float]], cut: int | None, tiles: Path,
            grid: list[str], env: dict[str, str], mosaicist: list[str]) -> None:
    """The video runs: the table of flicker and fidelity, and with a cut, the one per shot."""
    video_size = args.video_size
    shots = "" if cut is None else f", cut to another shot at frame {cut}"
    print(f"\nvideo: {video.name}, {frames} frames of {video_size[0]}x{video_size[1]}{shots}; "
          f"source's mean pixel change {source_change(video):.2f} (the same at any scale)")
    rows = []
    shot_rows = []
    for preset, strength in video_runs:
        name = f"video-{preset}-{strength:g}"
        out = runs / name
        report = runs / f"{name}.json"
        child = run_child([*mosaicist, "batch", video, "--tiles", tiles, "-o", out, *grid,
                           "--preset", preset, "--stable", strength, "--video",
                           runs / f"{name}.mp4", "--report", report, "-q"], env=env).check()
        figures = json.loads(report.read_text())
        flicker = figures["flicker"][video.stem]
        fidelity = figures["fidelity"]
        rows.append([preset, f"{strength:g}", f"{child.seconds:.0f}",
                     f"{child.seconds / frames:.2f}",
                     f"{100 * flicker['cell_change']:.1f}%",
                     f"{figures['video']['pixel_change']:.2f}",
                     f"{fidelity['ssim_view']:.3f}", f"{fidelity['ciede2000_mean_view']:.2f}",
                     figures["video"]["codec"]])
        if cut is not None:
            shot_rows.append([preset, f"{strength:g}", *shot_figures(
                figures, out / ".mosaicist-batch" / "picks", video.stem, frames, cut)])
        shutil.rmtree(out)  # frames: hundreds of megabytes
    print_table(rows, ["preset", "stable", "s", "s/frame", "cells changed", "pixel change",
                       "SSIM view", "CIEDE2000", "codec"])
    if shot_rows:
        print(f"\nper shot (frames 0-{cut - 1}, then {cut}-{frames - 1}): mean SSIM at "
              "viewing scale; cells changing tile per frame")
        print_table(shot_rows, [
            "preset", "stable", "SSIM shot 1", f"SSIM last {SHOT_END} of 1",
            "SSIM first of 2", "SSIM shot 2", "changing, shot 1", "changing at the cut",
            "changing, shot 2"])


if __name__ == "__main__":
    main()
