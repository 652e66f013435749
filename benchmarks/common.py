"""Shared helpers for the benchmark scripts (not a benchmark itself).

Data-path resolution, a cache folder, cache files and folders written under
names of their own and renamed into place (:func:`cache_file`,
:func:`cache_folder`: two benchmarks building the same cache at once, or one
killed halfway, leave no half-written entry), a child-process runner that
reports the child's wall time and peak RSS (via ``os.wait4``) and never
outlives the benchmark, ``argparse`` types for counts and sizes (a bad value
is refused in one line naming the option), a timer, and a tiny table
printer. Imported by the ``bench_*.py`` scripts beside it; run any of them
with ``--help``.

Importing it also turns SIGTERM into ``SystemExit``, so that a benchmark
stopped with ``kill`` still runs its ``finally`` blocks (removing its run
folder, stopping its servers).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
#: ``../shared/data`` relative to the repository root.
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
#: Generated data and caches (gitignored).
DEFAULT_CACHE = BENCH_DIR / ".cache"


def _number(text: str, kind: type[int] | type[float], low: float, strict: bool) -> float:
    """Parse ``text`` as ``kind`` and check it against ``low`` (argparse names the option)."""
    try:
        value = kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    if value < low or (strict and value == low):
        raise argparse.ArgumentTypeError(
            f"{text} must be {'greater than' if strict else 'at least'} {low:g}"
        )
    return value


def positive_int(text: str) -> int:
    """``argparse`` type: an integer >= 1 (the option is named in argparse's one-line error)."""
    return int(_number(text, int, 0, strict=True))


def non_negative_int(text: str) -> int:
    """``argparse`` type: an integer >= 0."""
    return int(_number(text, int, 0, strict=False))


def fraction(text: str) -> float:
    """``argparse`` type: a finite number from 0 to 1."""
    value = float(_number(text, float, 0, strict=False))
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text} must be at most 1")
    return value


def positive_float(text: str) -> float:
    """``argparse`` type: a finite number > 0."""
    return float(_number(text, float, 0, strict=True))


def non_negative_float(text: str) -> float:
    """``argparse`` type: a finite number >= 0."""
    return float(_number(text, float, 0, strict=False))


def data_dir(override: str | os.PathLike[str] | None) -> Path:
    """Return the shared data folder (``--data`` or ``../shared/data``), checked to exist."""
    path = Path(override).expanduser().resolve() if override else DEFAULT_DATA
    if not path.is_dir():
        sys.exit(f"benchmark: data folder {path} not found; pass --data PATH")
    return path


#: What :func:`require_pictures` counts as a picture (the shared data's kinds).
PICTURE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` when it is a file; else exit in one line naming ``what`` and the path.

    For the inputs a benchmark reads from the data folder, checked before any
    work: a missing one would otherwise stop it minutes in, with a traceback.
    """
    if not path.is_file():
        sys.exit(f"benchmark: {what}: {path} not found; pass --data PATH")
    return path


def require_pictures(folder: Path, what: str) -> Path:
    """Return ``folder`` when it holds a picture (at any depth); else exit in one line.

    Stops at the first picture found, so a 50,000-file folder costs next to nothing.
    """
    if not folder.is_dir():
        sys.exit(f"benchmark: {what}: {folder} not found; pass --data PATH")
    if not any(path.suffix.lower() in PICTURE_SUFFIXES for path in folder.rglob("*")):
        sys.exit(f"benchmark: {what}: no pictures in {folder}; pass --data PATH")
    return folder


def cache_dir(override: str | os.PathLike[str] | None) -> Path:
    """Return (and create) the benchmark cache folder (``--cache-dir`` or ``benchmarks/.cache``)."""
    path = Path(override).expanduser().resolve() if override else DEFAULT_CACHE
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def cache_file(final: Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final``, this writer's own; renamed into place on success.

    ``with cache_file(path) as partial: write(partial)``. The temporary is
    named ``.<name>.<pid>-<random>.part<suffix>`` (mosaicist's own
    :func:`mosaicist.paths.atomic_path`), so two benchmarks building the same
    cache file at once never write into one file, and the last rename puts a
    complete file in place. A failure or Ctrl-C removes the temporary; one
    left by a run killed outright is removed by the next writer of ``final``.

    Parameters
    ----------
    final : pathlib.Path
        The cache file.
    suffix : str, optional
        The temporary's suffix (default: ``final``'s), for writers that choose
        a format from it (Pillow) or add one when it is missing (``np.save``).
    """
    from mosaicist.paths import atomic_path

    with atomic_path(final, suffix) as partial:
        yield partial


@contextmanager
def cache_folder(final: Path) -> Iterator[Path]:
    """Yield a new folder beside ``final``, this writer's own; rename it into place on success.

    Like :func:`cache_file` for a folder. When another run put ``final`` in
    place meanwhile, that folder is kept (it may be in use: replacing it
    would pull it from under that run) and this writer's copy is removed.

    Parameters
    ----------
    final : pathlib.Path
        The cache folder.
    """
    from mosaicist.paths import current_umask, remove_stale_temporaries

    # The name mosaicist's atomic writers give (``.<name>.<pid>-<random>.part``), so that
    # a killed run's leftover is found and removed like theirs.
    remove_stale_temporaries(final)
    partial = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}-", suffix=".part",
                                    dir=final.parent))
    try:
        yield partial
        partial.chmod(0o777 & ~current_umask())
        try:
            os.rename(partial, final)
        except OSError:
            if not final.is_dir():
                raise
            shutil.rmtree(partial)  # another run finished it first: theirs stays
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def drawn_libraries(folder: Path, counts: list[int], into: Path) -> dict[int, Path]:
    """Disjoint folders of ``counts`` photos drawn at random (seed 1) from ``folder``, linked."""
    photos = sorted(path for path in folder.rglob("*")
                    if path.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if sum(counts) > len(photos):
        sys.exit(f"benchmark: --libraries: {sum(counts):,} photos asked for, "
                 f"{folder} has {len(photos):,}")
    drawn = random.Random(1).sample(photos, sum(counts))
    libraries = {}
    for count in counts:
        library = into / f"library-{count}"
        library.mkdir(parents=True)
        for number, photo in enumerate(drawn[:count]):
            link = library / f"{number:05d}{photo.suffix.lower()}"
            try:
                link.symlink_to(photo)
            except OSError:
                shutil.copyfile(photo, link)
        drawn = drawn[count:]
        libraries[count] = library
    return libraries


def fresh_dir(parent: Path, prefix: str) -> Path:
    """Return a new empty folder under ``parent`` (for cold-cache runs)."""
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def machine() -> str:
    """One line describing this machine: CPU model, cores, memory."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.0f} GiB RAM"
    except (ValueError, OSError):
        pass
    return f"{model}, {os.cpu_count()} logical cores{memory}, Python {platform.python_version()}"


@dataclass
class ChildRun:
    """Result of :func:`run_child`."""

    args: list[str]
    returncode: int
    seconds: float
    peak_rss_bytes: int
    output: str

    @property
    def peak_rss_gib(self) -> float:
        """Peak resident set size of the child in GiB."""
        return self.peak_rss_bytes / 2**30

    def check(self) -> ChildRun:
        """Exit with the child's output when it failed."""
        if self.returncode != 0:
            sys.exit(
                f"benchmark: command failed ({self.returncode}): {shlex.join(self.args)}\n"
                f"{self.output[-4000:]}"
            )
        return self


#: Runs the real command as its own child and reports that child's wall time and
#: peak RSS. The indirection matters: a process started straight from the
#: benchmark inherits the benchmark's own RSS high-water mark through
#: vfork/exec, so ``ru_maxrss`` would never read below the parent's peak.
#: Both it and the command ask Linux (``PR_SET_PDEATHSIG``) to be signalled when
#: their parent dies: a benchmark stopped with Ctrl-C or ``kill`` kills this
#: process, and without that the command would run on, orphaned, writing into a
#: folder the benchmark has just removed.
_MEASURE = """
import ctypes, os, signal, sys, time
def die_with_parent(parent, sig):
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(sig))  # PR_SET_PDEATHSIG
    except (AttributeError, OSError):
        return
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(128 + int(sig))
die_with_parent(int(sys.argv[2]), signal.SIGKILL)
started = time.perf_counter()
measurer = os.getpid()
pid = os.fork()
if pid == 0:
    try:
        # SIGTERM, not SIGKILL: the command may stop its own workers.
        die_with_parent(measurer, signal.SIGTERM)
        os.execvp(sys.argv[3], sys.argv[3:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - started
with open(sys.argv[1], "w") as handle:
    handle.write(f"{wall} {usage.ru_maxrss}\\n")
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def die_with(parent: int, sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when ``parent`` (its parent) dies.

    For ``subprocess.Popen(..., preexec_fn=functools.partial(die_with, os.getpid()))``:
    a server started in a session of its own gets no Ctrl-C, and would outlive a
    benchmark killed outright. Does nothing where ``prctl`` is missing.
    """
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(sig))  # PR_SET_PDEATHSIG
    except (AttributeError, OSError):
        return
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(128 + int(sig))


_BENCHMARK_PID = os.getpid()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM handler: exit through ``SystemExit`` so ``finally`` blocks clean up."""
    if os.getpid() != _BENCHMARK_PID:
        # A forked worker (a multiprocessing pool's) inherits the handler; there the
        # pool's terminate() expects SIGTERM to end it at once, not to unwind it.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    sys.exit(128 + signum)


# A benchmark stopped with ``kill`` (SIGTERM) would otherwise die at once, leaving
# its run folder (often hundreds of MB) behind; only the main thread may set this.
if threading.current_thread() is threading.main_thread() and (
    signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
):
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def run_child(
    args: Sequence[str], env: dict[str, str] | None = None, echo: bool = False
) -> ChildRun:
    """Run ``args`` as a child process; return its wall seconds and its own peak RSS.

    The command runs under a small measuring process (:data:`_MEASURE`) that
    forks and ``wait4``s it, so ``ru_maxrss`` (KiB on Linux) is that command's
    own peak (including any worker processes it waited for), never the
    benchmark's. stdout and stderr go to a temporary file (returned as
    ``output``), or straight through when ``echo``.
    """
    args = [str(arg) for arg in args]
    full_env = os.environ | (env or {})
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        result = Path(scratch) / "usage"
        log_path = Path(scratch) / "log"
        with open(log_path, "w+") as log:
            out = None if echo else log
            started = time.perf_counter()
            completed = subprocess.run(
                [sys.executable, "-c", _MEASURE, str(result), str(os.getpid()), *args],
                stdout=out, stderr=subprocess.STDOUT if out else None, env=full_env,
                check=False,
            )
            elapsed = time.perf_counter() - started
        output = log_path.read_text(errors="replace")
        try:
            wall, maxrss = result.read_text().split()
            seconds_, peak = float(wall), int(maxrss) * 1024
        except (OSError, ValueError):
            seconds_, peak = elapsed, 0
    return ChildRun(args, completed.returncode, seconds_, peak, output)


def mosaicist_command() -> list[str]:
    """The ``mosaicist`` CLI of this interpreter (``python -m mosaicist``)."""
    return [sys.executable, "-m", "mosaicist"]


@contextmanager
def timer() -> Iterator[list[float]]:
    """``with timer() as t: ...`` then ``t[0]`` holds the elapsed seconds."""
    box = [0.0]
    started = time.perf_counter()
    try:
        yield box
    finally:
        box[0] = time.perf_counter() - started


def print_table(rows: Sequence[Sequence[object]], header: Sequence[str] | None = None) -> None:
    """Print rows as a left-aligned text table (the first column) with right-aligned values."""
    table = [list(map(str, header))] if header else []
    table += [[str(cell) for cell in row] for row in rows]
    if not table:
        return
    widths = [max(len(row[i]) for row in table if i < len(row)) for i in range(len(table[0]))]
    for number, row in enumerate(table):
        cells = [
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
            for i, cell in enumerate(row)
        ]
        print("  ".join(cells).rstrip())
        if header and number == 0:
            print("  ".join("-" * width for width in widths))
    sys.stdout.flush()


def gib(count: float) -> str:
    """Format bytes as GiB."""
    return f"{count / 2**30:.2f} GiB"


def seconds(value: float) -> str:
    """Format seconds with sensible precision."""
    if value >= 100:
        return f"{value:.0f} s"
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.2f} ms"
    return f"{value * 1e6:.1f} us"


def as_shown(target: Path, into: Path) -> Path:
    """``target`` as a colour-managed viewer shows it: in sRGB (a copy where it has a profile).

    The mosaics are written in sRGB without a profile, and the default converts a target's
    embedded profile (``--colour-profiles convert``); ``viewscale.py`` reads stored values as
    sRGB, so an Adobe RGB target would be judged by values no screen shows (the shared
    rocket: the default's sky judged 20 levels off in red, its colourfulness 25% over).
    Converted with Little CMS (Pillow's ImageCms), relative colorimetric with black point
    compensation, as mosaicist does.
    """
    import io

    from PIL import Image, ImageCms

    with Image.open(target) as picture:
        profile = picture.info.get("icc_profile")
        if not profile:
            return target
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        srgb = ImageCms.createProfile("sRGB")
        # Plain numbers (relative colorimetric; black point compensation): Pillow 10.2
        # has no ImageCms.Intent and ImageCms.Flags.
        intent: Any = 1
        flags: Any = 0x2000
        shown = ImageCms.profileToProfile(picture.convert("RGB"), source, srgb,
                                          renderingIntent=intent, outputMode="RGB", flags=flags)
    path = into / f"{target.stem}-srgb.png"
    assert shown is not None
    shown.save(path)
    return path


#: The default preset's bar (issue 10), against the seed preset on the same target.
MIN_DISTINCT = 0.9
MAX_DELTA_E_RATIO = 1.1
MAX_COLOUR_ERROR = 0.1
MIN_REPEAT_DISTANCE = 5


def viewscale_tool(data: Path) -> Path:
    """The independent fidelity measure beside the shared data, or exit saying it is missing."""
    tool = data.parent / "tools" / "viewscale.py"
    if not tool.is_file():
        sys.exit(f"benchmark: {tool} not found (the independent fidelity measure)")
    return tool


def viewscale(tool: Path, mosaic: Path, target: Path, cell: int) -> dict[str, float]:
    """The shared tool's figures: psnr1 ssim1 de1 psnr4 ssim4 de4 colour colour_target."""
    printed = subprocess.run([sys.executable, str(tool), str(mosaic), str(target), "--cell",
                              str(cell), "--all"], capture_output=True, text=True, check=True)
    words = printed.stdout.split()
    return {words[i]: float(words[i + 1]) for i in range(0, len(words) - 1, 2)}
