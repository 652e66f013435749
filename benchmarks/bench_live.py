"""``mosaicist live``: a load test on 127.0.0.1, and the placement rule against the optimum.

**Load test** (issue 14). ``mosaicist live`` runs in a child process on
127.0.0.1 with a 50 x 40 wall (2,000 cells, the default settings: 64 px
tiles, photos compared at 16 px, tint 0.6, re-optimised when quiet) and no
rate limit. 50 guests (asyncio tasks sharing one ``httpx.AsyncClient``) send
2,000 photos between them, one per request, each as soon as the previous
one is answered; a display (another process) listens to ``/api/events``.
It runs twice: with the default crop (``subject``: faces found with the
``faces`` extra's detector, which costs about 40 ms a photo) and with
``--crop centre``. Under that closed loop a photo's delay is mostly its
wait in the queue (50 guests over the server's rate: Little's law), so a
paced run follows: ``--paced-photos`` (200) sent at ``--pace`` (5) photos a
second, a busy event's rate, where the delay is the time to place one.
The photos are CIFAR-10 test JPEGs enlarged to ``--photo-px`` (320) on their
long side and re-encoded (quality 90), made before the clock starts.
Printed: uploads per second (photos answered / seconds from the first send
to the last answer); the time from sending a photo to its ``tile`` event on
the display's stream (median, p95, max); errors (answers other than 201);
photos lost (answered 201 but not on ``/api/wall`` at the end); and the
server's peak RSS (``VmHWM``). Bounded: 2,000 photos, ``--timeout`` seconds.

**Placement rule.** The rule of :mod:`mosaicist.live._placer` (the
forecast's prices; ``--final``: nothing moves) against placing each photo in
its best free cell (greedy) and against the optimum (every photo placed at
once by an exact assignment, ``scipy.optimize.linear_sum_assignment``), over
``--orders`` random arrival orders: the same photos, the same wall, in
process, the rule's prices recomputed synchronously when due (the server
does it in the background). A 40 x 30 wall of ``--target``; CIFAR-10 test
photos; three cases: as many photos as cells, half as many (the rule told
to expect 600, and not told, so expecting 1,200). Printed: each rule's
total cost as a gap to the optimum (mean, min, max over the orders). The
moving mode (the default) places by the same rule and is re-optimised at
quiet moments, here after every ``--quiet-every`` (50) arrivals and after
the last: it ends at the optimum by construction; printed are its gap just
before the last re-optimisation and the moves it made, per photo.

Run (from the repository root; about 10 minutes on two cores)::

    python benchmarks/bench_live.py
    python benchmarks/bench_live.py --skip-load --orders 3
    python benchmarks/bench_live.py --skip-placement --photos 500 --guests 20
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import json
import multiprocessing
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    data_dir,
    die_with,
    fraction,
    machine,
    non_negative_float,
    positive_float,
    positive_int,
    print_table,
)


def cifar_files(data: Path, count: int, seed: int) -> list[Path]:
    files = sorted((data / "cifar10" / "test").rglob("*.jpg"))
    if len(files) < count:
        sys.exit(f"benchmark: {data / 'cifar10' / 'test'} has {len(files)} photos, "
                 f"{count} are needed")
    rng = np.random.default_rng(seed)
    return [files[index] for index in rng.choice(len(files), count, replace=False)]


# -- the load test --------------------------------------------------------------------------


def make_photos(files: list[Path], long_side: int) -> list[bytes]:
    """Each file enlarged to ``long_side`` px (4:3) and re-encoded: a phone-like JPEG."""
    photos = []
    for path in files:
        with Image.open(path) as image:
            picture = image.convert("RGB").resize((long_side, long_side * 3 // 4),
                                                  Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=90)
        photos.append(buffer.getvalue())
    return photos


def listen(url: str, ready: multiprocessing.Event, stop: multiprocessing.Event,
           out: multiprocessing.Queue) -> None:
    """The display: read ``tile`` events and when each came (a process of its own)."""
    import httpx

    seen: dict[str, float] = {}
    try:
        with httpx.Client(timeout=httpx.Timeout(5.0, read=1.0)) as client, client.stream(
            "GET", url + "/api/events"
        ) as stream:
            kind = None
            lines = stream.iter_lines()
            while not stop.is_set():
                try:
                    line = next(lines)
                except httpx.ReadTimeout:
                    continue
                except StopIteration:
                    break
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    ready.set()
                    if kind == "tile":
                        seen.setdefault(json.loads(line[6:])["id"], time.monotonic())
    except Exception as error:  # noqa: BLE001 - reported by the parent
        out.put({"error": f"{type(error).__name__}: {error}"})
        return
    finally:
        ready.set()
    out.put(seen)


async def guests(url: str, page_token: str, photos: list[bytes], count: int,
                 deadline: float, pace: float = 0.0
                 ) -> tuple[dict[str, float], list[str], float, float]:
    """``count`` guests send ``photos``: each when it can, or photo ``i`` at ``i / pace`` s."""
    import httpx

    sent: dict[str, float] = {}
    errors: list[str] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(photos)):
        queue.put_nowait(index)
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60,
                                 headers={"X-Mosaicist-Token": page_token}) as client:

        async def guest() -> None:
            while not queue.empty() and time.monotonic() < deadline:
                index = queue.get_nowait()
                if pace:
                    await asyncio.sleep(max(0.0, began + index / pace - time.monotonic()))
                started = time.monotonic()
                try:
                    answer = await client.post("/api/photos", files={
                        "photo": (f"IMG_{index:04d}.jpg", photos[index], "image/jpeg")})
                except httpx.HTTPError as error:
                    errors.append(f"{type(error).__name__}")
                    continue
                if answer.status_code == 201:
                    sent[answer.json()["id"]] = started
                else:
                    errors.append(f"{answer.status_code} {answer.text[:80]}")

        began = time.monotonic()
        await asyncio.gather(*(guest() for _ in range(count)))
        ended = time.monotonic()
    return sent, errors, began, ended


def load_test(args: argparse.Namespace, data: Path, photos: list[bytes], crop: str,
              pace: float = 0.0) -> None:
    import httpx

    average = sum(map(len, photos)) / len(photos)
    target = data / "targets" / args.target
    with tempfile.TemporaryDirectory(prefix="bench-live-") as folder:
        command = [sys.executable, "-m", "mosaicist", "live", str(target), "--grid", args.grid,
                   "--event", str(Path(folder) / "event"), "--port", "0", "--rate", "0",
                   "--crop", crop]
        # A session of its own (no Ctrl-C: the finally below stops it), but stopped
        # with the benchmark if that is killed outright.
        server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                                  start_new_session=True,
                                  preexec_fn=functools.partial(die_with, os.getpid()))
        try:
            url = token = ""
            assert server.stdout is not None
            for line in server.stdout:
                if found := re.search(r"guests: (http://\S+)/", line):
                    url = found.group(1)
                if "admin token:" in line:
                    break
            if not url:
                sys.exit("benchmark: the server did not start")
            page = httpx.get(url + "/", timeout=10).text
            token = re.search(r'name="mosaicist-token" content="([^"]+)"', page).group(1)
            ready, stop = multiprocessing.Event(), multiprocessing.Event()
            out: multiprocessing.Queue = multiprocessing.Queue()
            display = multiprocessing.Process(target=listen, args=(url, ready, stop, out))
            display.start()
            ready.wait(30)
            deadline = time.monotonic() + args.timeout
            print(f"{args.guests} guests send {len(photos)} photos "
                  f"(about {average / 1024:.0f} KB each"
                  f"{f', {pace:g} a second' if pace else ''}) ...", flush=True)
            sent, errors, began, ended = asyncio.run(
                guests(url, token, photos, args.guests, deadline, pace))
            time.sleep(1.0)  # the last events reach the display
            stop.set()
            seen = out.get(timeout=30)
            display.join(30)
            if "error" in seen:
                sys.exit(f"benchmark: the display's stream failed: {seen['error']}")
            wall = httpx.get(url + "/api/wall", timeout=30).json()
            status = Path(f"/proc/{server.pid}/status").read_text()
            peak = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
    on_wall = {tile["id"] for tile in wall["tiles"]}
    lost = [photo_id for photo_id in sent if photo_id not in on_wall]
    delays = sorted((seen[photo_id] - started) * 1000 for photo_id, started in sent.items()
                    if photo_id in seen)
    missing_events = len(sent) - len(delays)
    seconds = ended - began
    rows = [
        ("photos answered 201", f"{len(sent)} of {len(photos)}"),
        ("errors (other answers, failures)", f"{len(errors)}" + (f": {errors[:3]}" if errors
                                                                  else "")),
        ("photos lost (201 but not on the wall)", len(lost)),
        ("tile events missing on the display", missing_events),
        ("uploads per second", f"{len(sent) / max(seconds, 1e-9):.1f} ({seconds:.1f} s)"),
        # No delay at all when nothing was answered (a --timeout too short, a failing server).
        ("upload to tile on display, median",
         f"{statistics.median(delays):.0f} ms" if delays else "-"),
        ("upload to tile on display, p95",
         f"{np.percentile(delays, 95):.0f} ms" if delays else "-"),
        ("upload to tile on display, max", f"{delays[-1]:.0f} ms" if delays else "-"),
        ("server peak RSS", f"{peak:.0f} MiB"),
    ]
    arrivals = f"{pace:g} photos a second" if pace else "as fast as answered"
    print_table(rows, header=(f"{args.guests} guests, {arrivals}, --crop {crop}", "value"))


# -- the placement rule ---------------------------------------------------------------------


def placement(args: argparse.Namespace, data: Path) -> None:
    from scipy.optimize import linear_sum_assignment

    from mosaicist.live import _placer
    from mosaicist.live._event import _cells_of, cut_target
    from mosaicist.options import MosaicOptions

    cols, rows = 40, 30
    cells = cols * rows
    match_px = 16
    options = MosaicOptions(tile_px=match_px, match_px=match_px, tint=args.tint)
    picture = cut_target(data / "targets" / args.target, cols, rows, options)
    wall = _placer.WallCosts(_placer.picture_vectors(
        _cells_of(picture, cols, rows, match_px, match_px)), args.tint)
    files = cifar_files(data, cells, 2)
    pixels = np.stack([np.asarray(Image.open(path).convert("RGB").resize(
        (match_px, match_px), Image.Resampling.LANCZOS)) for path in files])
    vectors = _placer.picture_vectors(pixels)
    cases = [("as many photos as cells", cells, None), ("half as many, told", cells // 2,
                                                        cells // 2),
             ("half as many, not told", cells // 2, None)]
    table = []
    for label, count, expected in cases:
        chosen = vectors.take(np.arange(count))
        matrix = wall.costs(chosen)
        best_rows, best_cols = linear_sum_assignment(matrix)
        optimum = int(matrix[best_rows, best_cols].sum())
        gaps: dict[str, list[float]] = {"greedy": [], "rule (--final)": []}
        moved: list[int] = []
        before_settle: list[float] = []
        started = time.perf_counter()
        for order_seed in range(args.orders):
            order = np.random.default_rng(100 + order_seed).permutation(count)
            for rule in (*gaps, "moving"):
                placer = _placer.Placer(wall, final=rule == "rule (--final)",
                                        expected=expected)
                moves = 0
                for arrived, index in enumerate(order, 1):
                    number = placer.add(chosen.take(np.array([index])))
                    if rule != "greedy":
                        placer.update_prices()
                    placer.put(number, placer.choose(number))
                    if rule == "moving" and (arrived % args.quiet_every == 0
                                             or arrived == count):
                        # A quiet moment: the wall is re-optimised, the photos move.
                        if arrived == count:
                            # One gap per order (filtering out zeros instead would fail
                            # on an order already at the optimum).
                            before_settle.append(100 * (placer.objective() / optimum - 1))
                        change = placer.optimum()
                        placer.apply(change)
                        moves += len(change)
                if rule == "moving":
                    # Equal up to the float32 rounding of two computations of the costs.
                    assert abs(placer.objective() - optimum) <= 1e-6 * optimum
                    moved.append(moves)
                else:
                    gaps[rule].append(100 * (placer.objective() / optimum - 1))
        per_order = (time.perf_counter() - started) / args.orders
        for rule, values in gaps.items():
            table.append((label, rule, f"{statistics.mean(values):.2f}%",
                          f"{min(values):.2f}% .. {max(values):.2f}%", ""))
        table.append((label, f"moving, quiet every {args.quiet_every}", "0.00%",
                      f"{statistics.mean(before_settle):.2f}% before the last",
                      f"{statistics.mean(moved) / count:.1f} per photo"))
        print(f"  {label}: {per_order:.1f} s per order", flush=True)
    print_table(table, header=(f"placement, {cols}x{rows} wall, tint {args.tint}, "
                               f"{args.orders} orders", "rule", "gap to optimum", "range",
                               "moves"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="shared data folder [../shared/data]")
    parser.add_argument("--target", default="skimage_astronaut.png",
                        help="a picture of data/targets [skimage_astronaut.png]")
    parser.add_argument("--photos", type=positive_int, default=2000, help="photos sent [2000]")
    parser.add_argument("--guests", type=positive_int, default=50, help="guests at once [50]")
    parser.add_argument("--grid", default="50x40", help="the load test's wall [50x40]")
    parser.add_argument("--photo-px", type=positive_int, default=320,
                        help="long side of a photo [320]")
    parser.add_argument("--timeout", type=positive_float, default=600,
                        help="load test limit, s [600]")
    parser.add_argument("--pace", type=non_negative_float, default=5.0,
                        help="then photos a second of a paced run (0: none) [5]")
    parser.add_argument("--paced-photos", type=positive_int, default=200,
                        help="photos of the paced run [200]")
    parser.add_argument("--crops", default="subject,centre",
                        help="the load test is run with each of these --crop [subject,centre]")
    parser.add_argument("--orders", type=positive_int, default=3, help="random arrival orders [3]")
    parser.add_argument("--tint", type=fraction, default=0.6,
                        help="tint of the placement runs, 0 to 1 [0.6]")
    parser.add_argument("--quiet-every", type=positive_int, default=50,
                        help="arrivals between two quiet moments of the moving wall [50]")
    parser.add_argument("--skip-load", action="store_true", help="leave out the load test")
    parser.add_argument("--skip-placement", action="store_true",
                        help="leave out the placement rule's comparison")
    args = parser.parse_args()
    from mosaicist.crop import CROP_MODES
    from mosaicist.errors import MosaicistError
    from mosaicist.live._event import parse_grid

    # Checked before the photos are made and the server started, which would say it late.
    try:
        parse_grid(args.grid)
    except MosaicistError as error:
        parser.error(str(error))
    for crop in args.crops.split(","):
        if crop not in CROP_MODES:
            parser.error(f"--crops: unknown --crop {crop!r}; use {', '.join(CROP_MODES)}")
    data = data_dir(args.data)
    if not (data / "targets" / args.target).is_file():
        sys.exit(f"benchmark: --target: {args.target} not in {data / 'targets'}")
    print(machine())
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if not args.skip_load:
        files = cifar_files(data, args.photos, 1)
        print(f"making {args.photos} photos of {args.photo_px} px ...", flush=True)
        photos = make_photos(files, args.photo_px)
        for crop in args.crops.split(","):
            load_test(args, data, photos, crop)
        if args.pace:
            for crop in args.crops.split(","):
                load_test(args, data, photos[:args.paced_photos], crop, args.pace)
    if not args.skip_placement:
        placement(args, data)


if __name__ == "__main__":
    main()
