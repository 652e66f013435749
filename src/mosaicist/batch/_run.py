"""Running a batch: many targets, one library, one output each, resumable.

:func:`batch_mosaics` makes every target's mosaic as ``make`` would (the
same bytes), into ``OUTDIR/<stem>.<format>``:

1. **Before any work** the settings are checked (as ``make`` checks them),
   the targets listed (:mod:`._targets`; unusable ones are reported), with
   ``scheduler`` the cluster reached and its workers checked (a cluster that
   cannot run the batch is refused before anything is written), and only
   then the library indexed or updated once, here, with its near-duplicate
   groups and search features cached for the workers.
2. **Work** goes to a local process pool (``workers``, default one per
   core, each with its share of the cores for its own threads) or, with
   ``scheduler``, to a Dask cluster (:func:`mosaicist.distributed.client_for`).
   Workers open the library without updating it and memory-map it; image
   targets are read by the workers, video frames decoded here, a few ahead,
   and sent with their jobs.
3. **Resume.** Every output is written under a temporary name, flushed to
   disk and renamed (a Deep Zoom output is finished when its viewer page is
   there too); then ``OUTDIR/.mosaicist-batch/outputs/<hash>.json`` (a
   SHA-1 of the output's name) records what made it: the output's name,
   the digest of its settings, its target's path, size and modification
   time, its own size and the library's fingerprint (its photos, in order,
   with their content hashes; a stable video frame's, the picks of the frame
   before it). An output is finished, and skipped, only
   when that record matches this run's settings, library and target and
   the output's size; a target moved or renamed since (its recorded path gone, its size
   and modification time the same) is the same target. Any other is made
   again (one of another target with the same output name, still there, is
   refused, as two such targets of one run are). An output an earlier
   version made has no record: in a folder without records (that version's)
   it is finished when the folder's settings are this run's and it is not
   older than its target. A batch killed at
   any moment loses only the targets in progress. A library indexed again
   while the batch runs (photos added, edited or removed) stops it: each
   worker checks that its library is the batch's before every target
   (:func:`._worker.open_library`), so no batch mixes two libraries, and
   the next run makes the old library's outputs again.
   ``OUTDIR/.mosaicist-batch/settings.json`` records the settings
   the folder's outputs were made with, less those that change none of
   them (a JPEG quality for PNG outputs, stability without video frames):
   a run with other settings into a folder that holds outputs is refused
   unless ``overwrite`` (which makes every output again), so a folder
   never mixes two batches; nor while they run: a run holds a shared lock
   named by its settings there (:meth:`_State.running`), and one of other
   settings started meanwhile is refused (runs of the same settings share
   the folder: they make the same bytes). It also keeps each video frame's picks (its
   cells' tiles), which the temporal stability of the next frame and the
   flicker measures read.
4. **Failures** of one target (unreadable, too large, an output that cannot
   be written) are reported in one line and skipped; the batch goes on and
   :attr:`BatchResult.failed` lists them. A worker process that dies (out of
   memory) is replaced and the targets it took with it tried again, one at a
   time, so that only the one that kills its process fails (after three
   tries). A video without a frame, or whose frames are too small, fails
   once, not once per frame.
5. **Video out**: with ``video``, the outputs, in order, are encoded into
   one video when every one of them was made (:func:`._video.write_video`)
   and every video target was read to its end; when it is not written,
   :attr:`BatchResult.video_error` says why, and the outputs stay.

Video frames are made in parallel like images, unless ``stable`` asks each
frame to keep its previous frame's tiles (:mod:`._stable`): a video's frames
are then made in order, one at a time (images and other videos still run
beside them).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import numbers
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .._runtime import signals_held_while_starting, stop_process_pool, worker_count
from ..errors import (
    MosaicistError,
    OptionError,
    alternatives,
    check_range,
    counted,
    printable,
    shown_type,
)
from ..imaging import IMAGE_EXTENSIONS
from ..options import MosaicOptions
from ..paths import (
    atomic_path,
    check_writable,
    expanded,
    first_missing,
    locks_refused,
    open_lock,
    refuses_files,
    remove_dead_temporaries,
)
from ..progress import progress_bar
from ._stable import Picks, StableMatcher, library_fingerprint, strength_hundredths
from ._targets import VIDEO_SUFFIXES, BatchTarget, Rejected, collect_targets
from ._video import VideoWritten, cell_changes
from ._worker import Job, Outcome, make_target

#: The folder in OUTDIR that records the batch's settings and frames' picks.
STATE_FOLDER = ".mosaicist-batch"
#: Version of the settings record.
STATE_VERSION = 1
#: Formats a video can be made from (read back frame by frame).
VIDEO_FORMATS = (".png", ".jpg", ".jpeg", ".webp")
#: Times a target is tried when the worker process making it dies.
ATTEMPTS = 3
#: Jobs queued per worker (keeps every worker busy without decoding far ahead).
QUEUED_PER_WORKER = 2
#: Settings that change no output of a format (by suffix; the others change every one).
#: Left out of the guarded record, so that changing them is not refused for nothing.
NOT_IN_RASTERS = ("dzi_tile_size", "dzi_overlap", "dzi_format", "compute_metrics")
NOT_IN_OUTPUTS = {".png": ("jpeg_quality", *NOT_IN_RASTERS), ".dzi": ("compute_metrics",)}
#: Settings that change no output of any format, recorded at their defaults. The target
#: pixel limit only refuses targets: one made under any limit is the same.
AS_DEFAULT = ("max_target_pixels",)
#: Name of the lock file a running batch holds (shared) in the records folder, before its
#: settings' digest: a run of other settings is refused while one is held.
RUN_LOCK_PREFIX = "running-"
#: Seconds a dead writer's record temporary is left unchanged before a run removes it.
STALE_RECORD_AGE = 60.0
#: Set in the pool's processes while they start: the path a process re-running an
#: unguarded script's batch call touches, so that the batch says so instead of retrying.
UNGUARDED_ENV = "MOSAICIST_BATCH_UNGUARDED"

ErrorListener = Callable[[str, str], None]


@dataclass
class TargetResult:
    """What became of one target of a batch.

    Attributes
    ----------
    name : str
        The target as named (``photo.jpg``, ``clip.mp4 frame 12``).
    output : str
        Its output file ('' when it has none).
    status : str
        ``"made"``, ``"skipped"`` (finished before) or ``"failed"``.
    message : str
        Why it failed (one line).
    seconds : float
        Time its worker spent on it.
    metrics : dict or None
        Its fidelity measures (``ssim_view``, ``psnr_view``...), when made.
    """

    name: str
    output: str
    status: str
    message: str = ""
    seconds: float = 0.0
    metrics: dict[str, Any] | None = None


@dataclass
class BatchResult:
    """A finished batch.

    Attributes
    ----------
    results : list of TargetResult
        Every target (and frame), in the order they finished.
    seconds : float
        Wall time of the whole batch.
    workers : int
        Worker processes (a cluster's workers with ``scheduler``); 0 where
        none was started (no target could be made).
    scheduler : str or None
        The cluster's address, when one ran it.
    video : VideoWritten or None
        The video written.
    video_error : str or None
        Why the video was not written (some of its frames are missing).
    flicker : dict
        Per video target (by output stem): ``frames``, ``cell_change`` (mean
        fraction of cells whose tile changed from a frame to the next) and,
        when the video was written from it alone, ``pixel_change``.
    """

    results: list[TargetResult] = field(default_factory=list)
    seconds: float = 0.0
    workers: int = 0
    scheduler: str | None = None
    video: VideoWritten | None = None
    video_error: str | None = None
    flicker: dict[str, dict[str, Any]] = field(default_factory=dict)

    def _with(self, status: str) -> list[TargetResult]:
        return [result for result in self.results if result.status == status]

    @property
    def made(self) -> list[TargetResult]:
        """Targets made by this run."""
        return self._with("made")

    @property
    def skipped(self) -> list[TargetResult]:
        """Targets whose output was already there."""
        return self._with("skipped")

    @property
    def failed(self) -> list[TargetResult]:
        """Targets that could not be made."""
        return self._with("failed")

    @property
    def ok(self) -> bool:
        """Whether every target was made (now or before) and the video, if asked for, written."""
        return not self.failed and self.video_error is None

    def fidelity(self) -> dict[str, float]:
        """Mean of each fidelity measure over the targets made by this run."""
        values: dict[str, list[float]] = {}
        for result in self.made:
            for name, value in (result.metrics or {}).items():
                if isinstance(value, (int, float)) and value is not None:
                    values.setdefault(name, []).append(float(value))
        return {name: float(np.mean(found)) for name, found in values.items()}

    def report(self) -> dict[str, Any]:
        """The batch as a JSON-ready dictionary."""
        video = None
        if self.video is not None:
            video = {"path": str(self.video.path), "codec": self.video.codec,
                     "fps": float(self.video.rate), "frames": self.video.frames,
                     "width": self.video.width, "height": self.video.height,
                     "pixel_change": self.video.pixel_change}
        return {
            "made": len(self.made), "skipped": len(self.skipped), "failed": len(self.failed),
            "seconds": round(self.seconds, 3), "workers": self.workers,
            "scheduler": self.scheduler, "fidelity": self.fidelity(), "flicker": self.flicker,
            "video": video, "video_error": self.video_error,
            "targets": [{"name": result.name, "output": result.output, "status": result.status,
                         "message": result.message, "seconds": round(result.seconds, 3),
                         "metrics": result.metrics} for result in self.results],
        }

    def summary(self) -> str:
        """One line: counts, time, workers, and the flicker and fidelity headlines."""
        count = len(self.results)
        line = (f"mosaicist: {counted(count, 'target')}: "
                f"{len(self.made):,} made, {len(self.skipped):,} already done, "
                f"{len(self.failed):,} failed in {self.seconds:.1f} s")
        if self.workers:  # else none was started: no target could be made
            line += (f" (on {self.scheduler})" if self.scheduler else
                     f" ({counted(self.workers, 'worker')})")
        fidelity = self.fidelity()
        if "ssim_view" in fidelity:
            line += f"; mean SSIM {fidelity['ssim_view']:.3f}"
        for stem, measured in self.flicker.items():
            if measured.get("cell_change") is not None:
                line += (f"; {stem}: {100 * measured['cell_change']:.1f}% of cells change "
                         "tile per frame")
        if self.video_error is not None:
            line += "; video not written"
        if self.video is not None:
            change = self.video.pixel_change
            frames = self.video.frames
            line += (f"; video {self.video.path} ({counted(frames, 'frame')}, "
                     f"{self.video.codec}, {float(self.video.rate):g} fps"
                     + ("" if change is None else f", mean pixel change {change:.2f}") + ")")
        return line


def batch_mosaics(
    targets: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
    tiles: str | os.PathLike[str] = "cifar10",
    output_dir: str | os.PathLike[str] = ".",
    options: MosaicOptions | Mapping[str, Any] | None = None,
    *,
    format: str = "png",
    scheduler: str | None = None,
    workers: int | None = None,
    video: str | os.PathLike[str] | None = None,
    fps: float | Fraction | None = None,
    stable: float = 0.0,
    overwrite: bool = False,
    report: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    show_progress: bool = False,
    quiet: bool = True,
    on_error: ErrorListener | None = None,
    **settings: Any,
) -> BatchResult:
    """Make a mosaic of every target with one library, into ``output_dir`` (see the module).

    Parameters
    ----------
    targets : path-like or iterable of path-like
        Image files, video files (every frame a target), folders of them,
        and list files (``.txt``, one per line); see :mod:`mosaicist.batch`.
        One path is one item.
    tiles : str or path-like
        The tile source spec, as for ``make``.
    output_dir : path-like
        Where outputs go (made if missing): ``<stem>.<format>``, a video's
        frames ``<video stem>-<frame:06d>.<format>``.
    options : MosaicOptions or mapping, optional
        The settings of every mosaic, as ``make_mosaic`` takes them
        (``**settings`` replace some).
    format : str
        Output format, as a suffix without the dot: ``png``, ``jpg``,
        ``webp``, ``tif``, ``dzi``... (any of :data:`mosaicist.render.OUTPUT_FORMATS`).
    scheduler : str, optional
        A Dask scheduler: ``tcp://host:8786``, ``local`` or ``local:N``
        (needs the ``dask`` extra). Default: a local process pool.
    workers : int, optional
        Processes of the local pool (default: one per core).
    video : path-like, optional
        Also encode the outputs, in order, into this video (``.mp4``...).
    fps : float or Fraction, optional
        Its frame rate, 0.01 to 1000 (default: the rate of the batch's video
        targets, when they have one, else 25; see :func:`._video.video_rate`).
    stable : float
        Temporal stability of video frames (0, off, to 10; see :mod:`._stable`).
    overwrite : bool
        Make every output again, even those already there, and whatever
        settings the folder was made with.
    report : path-like, optional
        Write :meth:`BatchResult.report` here as JSON (atomically) when the
        batch ends. A file the batch reads or writes (a target, an output,
        the video) is refused before any work.
    cache_dir : path-like, optional
        Cache folder (indexes), as for ``make``.
    show_progress : bool
        Draw a progress bar over the targets (and the indexing's).
    quiet : bool
        Suppress warnings while indexing.
    on_error : callable, optional
        ``on_error(name, message)`` for each target that fails, as it fails.
    **settings
        Settings by name, as ``make_mosaic`` takes them; they replace those
        of ``options``.

    Returns
    -------
    BatchResult
        What was made, skipped and failed; the video and flicker measures.

    Raises
    ------
    OptionError, MosaicistError
        For settings, an output folder, a video or a tile source that cannot
        be used: before any target is made. Also when called while a worker
        process re-runs a script that calls it without the
        ``if __name__ == "__main__":`` guard.
    """
    _refuse_bootstrapping()
    started = time.perf_counter()
    from ..pipeline import _as_options

    options = _as_options(options)  # as make_mosaic reads it: a mapping is settings
    if settings:
        options = options.replace(**settings)
    items = _target_items(targets)
    _check_arguments(tiles=tiles, output_dir=output_dir, video=video, workers=workers,
                     stable=stable, fps=fps, overwrite=overwrite, report=report)
    suffix = _output_suffix(format)
    if scheduler is not None:
        from ..distributed import parse_scheduler

        parse_scheduler(scheduler)  # a bad address is an error before any work
    hundredths = strength_hundredths(stable)
    _check_settings(options, hundredths, remote=scheduler is not None)
    # Checked even without a video: a rate that could never be used is a mistake.
    from ._video import video_rate

    rate = None if fps is None else video_rate(fps)
    outdir = expanded(output_dir).absolute()
    video_path = None if video is None else expanded(video).absolute()
    if video_path is not None:
        _check_video(video_path, suffix, outdir)
    _check_outside_tiles(outdir, tiles)
    found, rejected = collect_targets(items)
    _check_output_folder(outdir, items, found)
    if video_path is not None:
        _check_video_outside_targets(video_path, items, found)
    report_path = None if report is None else expanded(report).absolute()
    if report_path is not None:
        _check_report(report_path, items, found, outdir, suffix, video_path)
    if not found:
        if not rejected:
            raise MosaicistError("no image or video among the targets given")
        # Nothing to make: each item said why, and no output folder, library index or
        # pool is made for it (a library can take minutes to index).
        return _write_report(_rejected_only(rejected, video, on_error, scheduler, started),
                             report_path)
    if outdir.exists() and not outdir.is_dir():
        raise MosaicistError(f"{outdir}: is a file, not a folder; choose another output folder")
    _check_makeable(outdir)
    if video_path is not None:
        _check_frame_sizes(video_path, found, options)
    spec = _tiles_spec(tiles)
    _check_source(spec, cache_dir)
    from ..paths import cache_dir as resolve_cache

    # Named (and a file in its place refused) here; made only once the cluster is checked.
    cache = str(resolve_cache(cache_dir, create=False))
    state = _State(outdir)
    # Stability changes only video frames: a batch of images does not record it.
    has_frames = any(target.video for target in found)
    if not quiet:
        # Else they change nothing without a word, as make notes settings its format ignores.
        # The local pool's size means nothing to a cluster, whose workers make the targets.
        reasons = {"stable": "no target is a video", "fps": f"without {_flag('video')}",
                   "workers": f"the cluster of {_flag('scheduler')} makes the targets"}
        for name, unused in (("stable", hundredths and not has_frames),
                             ("fps", fps is not None and video_path is None),
                             ("workers", workers is not None and scheduler is not None)):
            if unused:
                print(f"mosaicist: note: {_flag(name)} has no effect ({reasons[name]}); "
                      "ignored", file=sys.stderr)
    images_settings = _guarded(spec, options, suffix, None)
    frames_settings = _guarded(spec, options, suffix, hundredths)
    recorded = frames_settings if has_frames else images_settings
    if outdir.is_dir():
        # Read alone, before the folder's lock is taken: a folder of other settings'
        # outputs is refused with no lock file left in it. Checked again under the lock.
        state.check(recorded, overwrite)
    # The cluster's client, closed as the batch ends, however it ends (a local cluster's
    # processes with it); the runner closes it earlier, once the last target is made.
    cluster = contextlib.ExitStack()
    try:
        # Reached, and its workers checked, before the output folder is made and the
        # library indexed (minutes for a large one): a cluster that cannot run the batch
        # (out of reach, no workers, another mosaicist) is refused with the disk as it was.
        client = None if scheduler is None else _cluster_client(scheduler, cluster)
        resolve_cache(cache_dir)
        made = first_missing(outdir)
        try:
            outdir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise MosaicistError(f"{outdir}: cannot make the output folder: "
                                 f"{error.strerror or error}") from None
        # Those in the output folder, which was not there to check them in.
        for path, what in ((video_path, "video"), (report_path, "report file")):
            if path is not None:
                check_writable(path, what)
    except BaseException:
        # Told why it closes, as by _DaskRunner.abort: a client that lost its scheduler
        # then closes without a traceback of Dask's.
        cluster.__exit__(*sys.exc_info())
        raise
    # Held to the end (the video is made from the outputs): another batch with other
    # settings would otherwise find the folder as empty as this one did, and both would
    # write into it, each output the last writer's.
    # Left in place by the outer context, which exits after the lock is let go.
    with cluster, _MadeFolder(made) as folder, state.running(recorded, outdir):
        state.check(recorded, overwrite)
        # Read before this run claims the folder (which writes this run's settings there).
        # Only in a folder of a version that kept no records: in one that keeps them, an
        # output without its record was not finished by a batch (or not by this target's).
        legacy = not state.outputs.is_dir()
        unrecorded = (legacy and state.matches(images_settings),
                      legacy and state.matches(frames_settings))

        found, replaced = _without_overwritten(found, outdir, suffix)
        rejected.extend(replaced)
        result = BatchResult(scheduler=scheduler)
        reporter = _Reporter(result, on_error)
        for item in rejected:
            reporter.failed(item.name, "", item.message)
        planned, library = _prepare(found, spec, options, cache, show_progress, quiet, reporter)
        folder.keep()  # the library is indexed: the folder is the batch's from here on

        jobs = _Jobs(outdir, suffix, spec, options, cache, stable if hundredths else 0.0,
                     state, overwrite, images=_digest(images_settings),
                     frames=_digest(frames_settings), unrecorded=unrecorded, library=library)
        runner: _Runner
        if client is not None:
            runner = _DaskRunner(client, cluster)
        else:
            count = workers if workers is not None else worker_count()
            # No more processes than can work at once: a stable video is one chain of frames.
            chains = sum(1 for target in planned if not target.video)
            if any(target.video for target in planned):
                chains += len([target for target in planned if target.video]) if hundredths \
                    else count
            count = max(1, min(count, chains))
            runner = _LocalRunner(count, max(1, worker_count() // count))
        result.workers = runner.workers
        sources: list[_Source] = []
        images = [target for target in planned if not target.video]
        if images:
            sources.append(_ImageSource(images, jobs, reporter))
        videos = [_VideoSource(target, jobs, reporter, options.max_target_pixels,
                               ordered=bool(hundredths), note=None if quiet else _warn)
                  for target in planned if target.video]
        sources.extend(videos)
        total = len(images) + sum(source.expected or 0 for source in videos)
        with progress_bar(total if all(source.expected for source in videos) else None,
                          "mosaics", unit="mosaic", enabled=show_progress) as bar:
            reporter.bar = bar
            # What a run killed outright (kill -9, a power cut) was writing: each output's
            # next write removes its own, but one that another run finished meanwhile is
            # never written again, and a resumed batch with nothing left to make stayed
            # with the dead run's full-size temporaries. Only unchanged for a while where
            # a cluster's workers write here too (their PIDs mean nothing on this machine).
            remove_dead_temporaries(outdir, min_age=0.0 if client is None else STALE_RECORD_AGE,
                                    below=False)
            try:
                if sources:
                    # Only now, with work to do and somewhere to run it: a run that failed
                    # before (no target, no cluster) leaves the folder to the next one's settings.
                    state.claim(recorded, overwrite)
                _run(runner, sources, reporter, jobs)
            except BaseException:
                runner.abort()  # interrupted: targets in progress are left (atomically) undone
                # The pool's processes were killed mid-write: their temporaries beside the
                # outputs go too (each output's next write would remove its own, but an
                # interrupted batch may not be run again).
                remove_dead_temporaries(outdir, below=False)
                raise
            runner.close()
        for source in videos:
            result.flicker[source.target.stem] = {
                "frames": source.frames,
                "cell_change": _mean(cell_changes([_picks_arrays(state.picks_path(stem))
                                                   for stem in source.stems])),
            }
        if video_path is not None:
            outputs = _video_outputs(found, result, videos, jobs)
            # Made or found finished by this run: a failed target's old output is not a frame.
            whole = {entry.output for entry in result.results if entry.status != "failed"}
            missing = [name for name, path in outputs if path not in whole]
            unread = [source for source in videos if source.broken]
            if unread:
                # Its frames from the one it stopped at are unknown, not merely unmade.
                where = "before its last frame" if unread[0].frames else "before any frame"
                result.video_error = f"not written: {unread[0].target.name} failed {where}"
            elif missing:
                result.video_error = (f"not written: {len(missing)} of {len(outputs)} frames "
                                      f"are missing (the first: {missing[0]})")
            elif not outputs:
                # Every target rejected, or videos without a frame: nothing to encode.
                result.video_error = "not written: no frame was made"
            else:
                from ._video import DEFAULT_FPS, write_video

                if rate is None:
                    # No --fps: the rate of the batch's videos (a clip cut in parts is played
                    # at its own rate), else the default.
                    rates = {source.rate for source in videos}
                    rate = (_source_rate(rates.pop()) if len(rates) == 1 else None) or DEFAULT_FPS
                try:
                    result.video = write_video(_read_outputs(outputs), video_path, rate)
                except MosaicistError as error:
                    # Outputs of different sizes, a damaged output, a full disk: the outputs
                    # are made all the same, and the summary and report must say so.
                    result.video_error = "not written: " + _without_path(str(error), video_path)
                except OSError as error:  # its folder gone or full: named by the video, not
                    # by the temporary it was written under
                    result.video_error = f"not written: {error.strerror or error}"
            if result.video_error is not None and on_error is not None:
                on_error(str(video), result.video_error)
            if result.video is not None and len(videos) == 1 \
                    and len(outputs) == videos[0].frames:
                result.flicker[videos[0].target.stem]["pixel_change"] = result.video.pixel_change
        result.seconds = time.perf_counter() - started
        return _write_report(result, report_path)


def _write_report(result: BatchResult, path: Path | None) -> BatchResult:
    """Write ``result``'s report to ``path`` (when given), atomically; return ``result``."""
    if path is not None:
        try:
            with atomic_path(path) as temporary:
                temporary.write_text(json.dumps(result.report(), indent=2) + "\n")
        except OSError as error:
            raise MosaicistError(f"{path}: cannot write the report: "
                                 f"{error.strerror or error}") from None
    return result


def _rejected_only(rejected: list[Rejected], video: object, on_error: ErrorListener | None,
                   scheduler: str | None, started: float) -> BatchResult:
    """The result of a batch none of whose items is a usable target: each one failed."""
    result = BatchResult(scheduler=scheduler)
    report = _Reporter(result, on_error)
    for item in rejected:
        report.failed(item.name, "", item.message)
    if video is not None:
        result.video_error = "not written: no frame was made"
        if on_error is not None:
            on_error(str(video), result.video_error)
    result.seconds = time.perf_counter() - started
    return result


def _output_suffix(format: str) -> str:
    from ..render import OUTPUT_FORMATS

    suffix = "." + str(format).lower().lstrip(".")
    if suffix not in OUTPUT_FORMATS:
        known = ", ".join(name.lstrip(".") for name in OUTPUT_FORMATS)
        raise OptionError("unknown {format} {value!r}; use {known}", value=format, known=known)
    return suffix


def _refuse_bootstrapping() -> None:
    """Refuse a call made while a spawned process re-runs the main script.

    The pool's processes are spawned: each runs the main script again, and a
    call at the script's top level (no ``if __name__ == "__main__":``) would
    start a batch in every one of them. The process that finds itself there
    marks it for the batch (:data:`UNGUARDED_ENV`), which says so in one line,
    and ends quietly.
    """
    import multiprocessing

    if not getattr(multiprocessing.current_process(), "_inheriting", False):
        return
    marker = os.environ.get(UNGUARDED_ENV)
    if marker:
        with contextlib.suppress(OSError):
            Path(marker).touch()
        raise SystemExit(1)
    raise MosaicistError(_UNGUARDED)


_UNGUARDED = ("batch_mosaics was called while a worker process re-ran the script that calls "
              "it: put the call under 'if __name__ == \"__main__\":'")


def _target_items(targets: object) -> list[str | os.PathLike[str]]:
    """``targets`` as a list of items: one path is one item, not its characters."""
    if isinstance(targets, str | os.PathLike):
        return [targets]
    if isinstance(targets, bytes) or not isinstance(targets, Iterable):
        raise OptionError("{targets} must be a path or an iterable of paths, got {value}",
                          value=shown_type(targets))
    items = list(targets)  # read once: a generator is looked at twice
    for item in items:
        if not isinstance(item, str | os.PathLike):
            raise OptionError("{targets} must hold paths, got {value}",
                              value=shown_type(item))
    return items


def _check_arguments(*, tiles: object, output_dir: object, video: object, workers: object,
                     stable: object, fps: object, overwrite: object, report: object = None
                     ) -> None:
    """Refuse arguments of the wrong type by name, as ``make_mosaic`` does (a bool is no number)."""
    for name, value in (("tiles", tiles), ("output_dir", output_dir), ("video", video),
                        ("report", report)):
        if not isinstance(value, str | os.PathLike) and not (name in ("video", "report")
                                                             and value is None):
            raise OptionError(f"{{{name}}} must be a path, got {{value}}",
                              value=shown_type(value))
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, numbers.Integral):
            raise OptionError("{workers} must be a whole number, got {value}",
                              value=shown_type(workers))
        # In the words of every other range: "must be at least 1, got 0".
        check_range("workers", int(workers), 1)
    if isinstance(stable, bool) or not isinstance(stable, numbers.Real):
        raise OptionError("{stable} must be a number, got {value}", value=shown_type(stable))
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, numbers.Real)):
        raise OptionError("{fps} must be a number of frames per second, got {value}",
                          value=shown_type(fps))
    if not isinstance(overwrite, bool | np.bool_):
        raise OptionError("{overwrite} must be True or False, got {value}",
                          value=shown_type(overwrite))


def _guarded(spec: str, options: MosaicOptions, suffix: str, stable: int | None
             ) -> dict[str, Any]:
    """What makes the outputs in ``suffix``: the record the folder's guard compares.

    Settings that change none of them are left out (:data:`NOT_IN_OUTPUTS`),
    and ``stable`` (None) where no output is a video frame.
    """
    settings = options.to_json()
    for name in NOT_IN_OUTPUTS.get(suffix, NOT_IN_RASTERS):
        settings.pop(name, None)
    for name in AS_DEFAULT:
        # Kept at its default, not left out: the records of outputs made before it was
        # no difference still match.
        if name in settings:
            settings[name] = getattr(MosaicOptions(), name)
    record: dict[str, Any] = {"version": STATE_VERSION, "tiles": spec, "settings": settings}
    if stable is not None:
        record["stable"] = stable
    return json.loads(json.dumps(record))  # as it reads back


def _digest(record: dict[str, Any]) -> str:
    """A short fingerprint of a :func:`_guarded` record, kept with each output."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _check_settings(options: MosaicOptions, hundredths: int, remote: bool = False) -> None:
    """The checks ``make`` makes before any work, and those of stability.

    With ``remote`` (a Dask cluster) the mosaics run on its workers, which
    may have a device (CUDA) or package this process lacks: not checked here.
    """
    from ..match import fitted_matcher
    from ..match._registry import check_device_runs

    try:
        matcher, fitted, _ = fitted_matcher(options)
    except OptionError:
        if not remote:
            # A device this machine cannot use is said first, as make says it.
            check_device_runs(options)
        raise
    if not remote:
        # A missing package or device (CUDA) once, here, not once per target after indexing.
        matcher.check_runs(fitted)
    if hundredths:
        if fitted.adaptive:
            raise OptionError("{stable} does not combine with {adaptive}")
        StableMatcher(matcher, None, hundredths)
    if options.adaptive:
        from ..adaptive import check_adaptive

        check_adaptive(fitted)


def _check_makeable(outdir: Path) -> None:
    """Refuse an output folder that cannot be written in, or made, before any work.

    A missing one is made only once the other inputs (the tile source
    included) are checked, so that a run refused for them leaves none
    behind: the nearest folder above it that is there must take it.
    """
    existing = outdir
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if existing != outdir and not existing.is_dir():
        raise MosaicistError(f"{outdir}: cannot make the output folder: {existing} is a file, "
                             "not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        if existing == outdir:
            raise MosaicistError(f"{outdir}: output folder is not writable (permission denied)")
        raise MosaicistError(f"{outdir}: cannot make the output folder: permission denied "
                             f"in {existing}")
    with contextlib.suppress(OSError, AttributeError):  # no statvfs on Windows
        # A file system of no size (/proc, /sys) passes access() and takes nothing.
        refused = refuses_files(existing) if os.statvfs(existing).f_blocks == 0 else None
        if refused:
            raise MosaicistError(f"{outdir}: cannot make the output folder ({refused}); "
                                 "choose another")


def _check_source(spec: str, cache_dir: str | os.PathLike[str] | None) -> None:
    """Refuse a tile source that names nothing, before the cache folder is made.

    A dataset's name is left to the indexing (its download too).
    """
    from ..paths import cache_dir as resolve_cache
    from ..sources import DATASET_NAMES, open_source

    if spec.lower() not in DATASET_NAMES:
        open_source(spec, cache_dir=resolve_cache(cache_dir, create=False))


def _check_output_folder(outdir: Path, items: Iterable[str | os.PathLike[str]],
                         found: Iterable[BatchTarget]) -> None:
    """Refuse an output folder that is a folder of targets, before any work.

    Its mosaics would replace the pictures they are made from where the
    format is the same, and be taken for targets by the next run (which
    resumes by looking at the outputs) where it is not. A folder named in a
    list file counts as one named directly.
    """
    folder = outdir.resolve()
    named = [str(item) for item in items
             if _is_folder(expanded(item)) and expanded(item).resolve() == folder]
    named += [str(target.folder) for target in found if target.folder == folder]
    if named:
        raise OptionError("{output_dir} {value} is a folder of targets: its mosaics "
                          "would be taken for targets; choose another", value=named[0])


def _check_video_outside_targets(video: Path, items: Iterable[str | os.PathLike[str]],
                                 found: Iterable[BatchTarget]) -> None:
    """Refuse a video out that is a target, or in a folder of targets, before any work.

    A target named as the video out would be replaced by the video made of
    the others' mosaics (it was skipped as a target, and the video written
    over it all the same). Videos in a folder are targets: the next run of
    the same batch would take the video it made for a target (which its own
    video out would replace) and fail, and a batch of the folder without
    ``--video`` would make a mosaic of each of its frames. A folder named
    in a list file counts as one named directly.
    """
    written = _resolved(video) or video  # a loop of links: as named
    if any(written == target.path for target in found) or any(
            written == _resolved(item) for item in items):
        raise OptionError("{video} {value} is a target of the batch; choose another file",
                          value=str(video))
    # Its name's folder and, for a link, the folder of the file written through it.
    folders = {_resolved(video.parent) or video.parent, (_resolved(video) or video).parent}
    named = [str(item) for item in items
             if _is_folder(expanded(item)) and _resolved(item) in folders]
    named += [str(target.folder) for target in found if target.folder in folders]
    if named:
        raise OptionError("{video} {value} is in {folder}, a folder of targets: the next run "
                          "would take it for a target; choose another folder",
                          value=str(video), folder=named[0])


def _check_outside_tiles(outdir: Path, tiles: str | os.PathLike[str]) -> None:
    """Refuse an output folder inside a tile folder, before any work.

    A tile folder is read recursively, so its mosaics would be tiles of the
    next run (or of the next ``make``): the library would grow with every
    batch, and no output would be what ``make`` makes. A hidden folder in it
    (``.mosaics``), which the scan leaves out, is fine.
    """
    library = expanded(os.fspath(tiles))
    if not _is_folder(library):
        return  # a dataset name or an array file: its tiles are not files in a folder
    try:
        inside = outdir.resolve().relative_to(library.resolve())
    except ValueError:
        return
    if not any(part.startswith(".") for part in inside.parts):
        raise OptionError("{output_dir} {value} is inside the tile folder {folder}, which is "
                          "read with its subfolders: its mosaics would become tiles; choose "
                          "another folder", value=str(outdir), folder=str(library))


def _check_report(report: Path, items: Iterable[str | os.PathLike[str]],
                  found: Iterable[BatchTarget], outdir: Path, suffix: str, video: Path | None
                  ) -> None:
    """Refuse a report file that would replace a target, an output or the video, before any work.

    Compared as the files they are (a link is written through), and checked
    writable like any output; in the output folder, still to be made, it is
    written once the folder is there.
    """
    written = _resolved(report) or report  # a loop of links: as named
    folder = outdir.resolve()
    clash = None
    if video is not None and written == video.resolve():
        clash = "the video out"
    elif any(written == target.path for target in found) or any(
            written == _resolved(item) for item in items):
        clash = "a target of the batch"  # or a list file of them
    elif written.parent == folder and (
            written.suffix.lower() == suffix
            or (suffix == ".dzi" and written.name.lower().endswith((".html", ".viewer.json")))):
        clash = f"named as the batch's outputs in {outdir}"
    elif (folder / STATE_FOLDER) in written.parents:
        clash = "among the batch's records"
    elif written.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_SUFFIXES:
        # A picture of the library's, or of a folder of targets: the report is JSON.
        clash = "named as a picture or a video"
    if clash is not None:
        raise OptionError("{report} {value} is " + clash + "; choose another file",
                          value=str(report))
    if written.parent != folder or folder.is_dir():
        check_writable(report, "report file")


def _resolved(item: str | os.PathLike[str]) -> Path | None:
    """An item of the batch as the file it names; None for a name that cannot be resolved."""
    try:
        return expanded(item).resolve()
    except (OSError, ValueError, RuntimeError):
        return None


def _is_folder(path: Path) -> bool:
    """Whether ``path`` is a folder; False for a name that cannot be looked at (too long)."""
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False  # the item is rejected, with its reason, by collect_targets


def _without_overwritten(
    found: list[BatchTarget], outdir: Path, suffix: str,
) -> tuple[list[BatchTarget], list[Rejected]]:
    """The targets whose outputs would not replace them.

    A target named on its own in the output folder, in the output format,
    would be its own output: resuming would skip it as done, and
    ``overwrite`` would replace the picture by its mosaic.
    """
    folder = outdir.resolve()
    kept: list[BatchTarget] = []
    rejected: list[Rejected] = []
    for target in found:
        output = folder / f"{target.stem}{suffix}"
        if not target.video and target.path == output.resolve():
            rejected.append(Rejected(target.name, f"its output {output} would replace it; "
                                                  "choose another output folder or format"))
        else:
            kept.append(target)
    return kept, rejected


def _check_frame_sizes(video: Path, found: Iterable[BatchTarget], options: MosaicOptions
                       ) -> None:
    """Refuse a video of outputs of different sizes, before any work.

    Each output's size follows from its target's (read from its header) and
    the options, as ``make`` checks its output before matching; found once
    the mosaics were made, the batch's minutes went to a video it then did
    not write. A target whose size cannot be read is left to fail as the
    batch makes it (the outputs' own check stays).
    """
    from ..sizing import options_plan

    first: tuple[str, tuple[int, int]] | None = None
    for target in found:
        try:
            size = options_plan(options, _target_size(target, options),
                                str(target.path)).output_size
        except MosaicistError:
            continue
        if first is None:
            first = (target.name, size)
        elif size != first[1]:
            raise OptionError(
                "{video} {value}: the output of {name} would be {size} pixels, that of "
                "{first} {first_size}; a video's frames have one size: give targets of one "
                "size and shape", value=str(video), name=target.name,
                size=f"{size[0]}x{size[1]}", first=first[0],
                first_size=f"{first[1][0]}x{first[1][1]}")


def _check_video(path: Path, suffix: str, outdir: Path) -> None:
    """Check the video out's settings before any work (its rate is checked apart).

    A video in the output folder, still to be made, is checked writable once
    the folder is there.
    """
    from ._video import video_codec

    if suffix not in VIDEO_FORMATS:
        # The names --format takes (jpeg is the API's other spelling of jpg), as a choice.
        names = [name.lstrip(".") for name in VIDEO_FORMATS if name != ".jpeg"]
        raise OptionError("{video} is made from the outputs: use {format} "
                          + alternatives(names) + ", not {value}",
                          value=suffix.lstrip("."))
    video_codec(path)
    if path.resolve().parent != outdir.resolve() or outdir.is_dir():
        check_writable(path, "video")


def _source_rate(rate: Fraction | None) -> Fraction | None:
    """A video target's rate for the video out, or None where no encoder can take it."""
    from ._video import video_rate

    if rate is None:
        return None
    try:
        return video_rate(rate)
    except OptionError:
        return None  # a header's odd rate (0, 90000...) must not lose the finished frames


def _tiles_spec(tiles: str | os.PathLike[str]) -> str:
    """The source spec workers anywhere can open: a local folder or file as an absolute path."""
    from ..sources import DATASET_NAMES
    from ..sources.base import absolute_path

    text = os.fspath(tiles)
    if isinstance(text, str):
        # The dataset, as 'make' reads it, even beside a folder of that very name.
        if text.lower() in DATASET_NAMES:
            return text
        dataset, colon, location = text.partition(":")
        if colon and location and dataset.lower() in ("cifar10", "cifar100"):
            return f"{dataset}:{absolute_path(location)}"
    path = expanded(text)
    return str(path.resolve()) if path.exists() else text


def _mean(values: Iterable[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return float(np.mean(known)) if known else None


class _State:
    """``OUTDIR/.mosaicist-batch``: the settings record, each output's record, the picks.

    ``settings.json`` guards the folder: a run whose settings differ from
    those its outputs were made with is refused (:meth:`check`). It is
    written when work starts, before any output is replaced, so it alone
    cannot tell which outputs are whose: each output's own record
    (``outputs/<SHA-1 of the output's name>.json``: the output's name, the
    digest of the settings that made it, its target's path, size and
    modification time, and its size), written once the output is
    published, is what makes it finished.
    """

    def __init__(self, outdir: Path) -> None:
        self.folder = outdir / STATE_FOLDER
        self.record = self.folder / "settings.json"
        self.outputs = self.folder / "outputs"

    def check(self, settings: dict[str, Any], overwrite: bool) -> None:
        """Refuse a folder whose outputs were made with other settings, unless ``overwrite``.

        Only outputs count: a folder whose record is there but that holds
        none (its batch failed before making any) takes the new settings.
        A setting one record leaves out (it changes none of its outputs) is
        no difference.
        """
        if self.folder.exists() and not self.folder.is_dir():
            # Found before the library is indexed (minutes), not when work starts.
            raise MosaicistError(f"{self.folder}: is a file, where the batch keeps its "
                                 "records; move it, or choose another output folder")
        recorded = self._recorded()
        if overwrite or not isinstance(recorded, dict):
            return
        changed = _changed(recorded, settings)
        if changed and self._holds_outputs():
            raise OptionError(
                "{path} holds outputs made with other settings ({changed}); use {overwrite} "
                "to make them again, or another folder", path=str(self.folder.parent),
                changed=", ".join(changed))

    def claim(self, settings: dict[str, Any], overwrite: bool = False) -> None:
        """Record ``settings`` as those of the folder's outputs (after :meth:`check`).

        Without ``overwrite`` the settings the new record leaves out are kept
        from the old one: outputs made with them are still there.
        """
        recorded = self._recorded()
        if not overwrite and isinstance(recorded, dict):
            kept = recorded.get("settings")
            # A record damaged by hand (its settings not a mapping) keeps none of them.
            kept = kept if isinstance(kept, dict) else {}
            settings = {**recorded, **settings, "settings": {**kept, **settings["settings"]}}
        try:
            (self.folder / "picks").mkdir(parents=True, exist_ok=True)
            self.outputs.mkdir(exist_ok=True)
            # Records a killed run was writing; once here, not before each record. Only
            # unchanged for a while: a writer on another machine has a PID meaning nothing here.
            remove_dead_temporaries(self.outputs, min_age=STALE_RECORD_AGE)
            if recorded != settings:
                with atomic_path(self.record, durable=True) as temporary:
                    temporary.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
        except OSError as error:
            raise MosaicistError(f"{self.folder}: {error.strerror or error}") from None

    @contextlib.contextmanager
    def running(self, settings: dict[str, Any], outdir: Path) -> Iterator[None]:
        """Hold this run's place in the folder; refuse it while a run of other settings holds one.

        Each run holds a shared ``flock`` on ``running-<digest of its
        settings>.lock`` while it runs (the kernel lets go when it dies,
        ``kill -9`` included): runs of the same settings share the folder
        (their outputs are the same bytes), and one of other settings is
        refused, in one line, instead of writing over them. A file system
        without locks (some network ones), or Windows, runs as without.

        Raises
        ------
        MosaicistError
            When a run with other settings is writing into the folder.
        """
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows has no flock
            yield
            return
        try:
            self.folder.mkdir(exist_ok=True)
            checking = open_lock(self.folder / "check.lock")
        except OSError:
            yield  # a folder that takes no file here fails, and says so, when claimed
            return
        held = None
        try:
            # Briefly, one run at a time: another's place is taken or found whole.
            fcntl.flock(checking, fcntl.LOCK_EX)
            mine = f"{RUN_LOCK_PREFIX}{_digest(settings)}.lock"
            if self._other_running(fcntl, mine):
                raise MosaicistError(
                    f"{outdir}: another batch with other settings is writing into this "
                    "folder; wait for it to end, or choose another output folder")
            held = open_lock(self.folder / mine)
            fcntl.flock(held, fcntl.LOCK_SH)
        except OSError as error:
            if held is not None:
                os.close(held)
            held = None
            if not locks_refused(error):
                raise MosaicistError(f"{self.folder}: {error.strerror or error}") from None
        finally:
            os.close(checking)
        try:
            yield
        finally:
            if held is not None:
                os.close(held)

    def _other_running(self, fcntl: Any, mine: str) -> bool:
        """Whether a live run of other settings holds its place (a dead one's is removed)."""
        for entry in os.scandir(self.folder):
            if not entry.name.startswith(RUN_LOCK_PREFIX) or entry.name == mine:
                continue
            try:
                descriptor = open_lock(Path(entry.path))
            except OSError:
                continue
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            except OSError:
                continue
            else:
                # Its run has ended; removed while held (under the check lock, no one
                # opens it meanwhile).
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
            finally:
                os.close(descriptor)
        return False

    def _recorded(self) -> Any:
        with contextlib.suppress(OSError, ValueError):
            return json.loads(self.record.read_text())
        return None

    def matches(self, settings: dict[str, Any]) -> bool:
        """Whether the settings record, as it is now, is of ``settings`` (a :func:`_guarded`)."""
        recorded = self._recorded()
        return (isinstance(recorded, dict) and isinstance(recorded.get("settings"), dict)
                and "tiles" in recorded and not _changed(recorded, settings))

    def record_path(self, output: Path) -> Path:
        """Where ``output``'s record is: named by a hash of the output's name.

        Not by the name itself: a name near the file system's limit (255
        bytes) that made a fine output would make a record name, and its
        temporary's, too long.
        """
        # The name's bytes on disk: one that is not UTF-8 has no UTF-8 encoding.
        return self.outputs / f"{hashlib.sha1(os.fsencode(output.name)).hexdigest()}.json"

    def made_by(self, output: Path) -> dict[str, Any] | None:
        """The record of ``output`` (what made it), or None."""
        with contextlib.suppress(OSError, ValueError):
            record = json.loads(self.record_path(output).read_text())
            if isinstance(record, dict) and record.get("output") == output.name:
                return record
        return None

    def publish(self, output: Path, digest: str, target: dict[str, Any], library: str = ""
                ) -> None:
        """Record that ``output`` (published whole) was made from ``target`` with ``digest``.

        ``library`` is the library's fingerprint (:func:`._stable.library_fingerprint`), when known.

        Written with :func:`mosaicist.paths.atomic_path`, flushed, without
        its sweep of the folder before each write (one per output: quadratic
        in a large batch); :meth:`claim` sweeps dead writers' temporaries
        once per run.
        """
        record = {"output": output.name, "settings": digest, "target": target,
                  "size": output.stat().st_size}
        if library:
            record["library"] = library
        with atomic_path(self.record_path(output), durable=True, sweep=False) as temporary:
            temporary.write_text(json.dumps(record, sort_keys=True) + "\n", encoding="utf-8")

    def _holds_outputs(self) -> bool:
        """Whether the folder holds a file in an output format (a batch's or not)."""
        from ..render import OUTPUT_FORMATS

        try:
            entries = list(os.scandir(self.folder.parent))
        except OSError:
            return True  # unknown: keep the protection
        return any(not entry.name.startswith(".")
                   and Path(entry.name).suffix.lower() in OUTPUT_FORMATS
                   and entry.is_file() for entry in entries)

    def picks_path(self, stem: str) -> Path:
        return self.folder / "picks" / f"{stem}.npz"


def _changed(recorded: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """The names whose values differ between two records (a name one leaves out: no difference)."""
    old = recorded.get("settings")
    old = old if isinstance(old, dict) else {}
    new = settings["settings"]
    changed = sorted(name for name in set(old) & set(new) if old[name] != new[name])
    changed += [name for name in ("tiles", "stable", "version")
                if name in recorded and name in settings and recorded[name] != settings[name]]
    return changed


def _identity(path: Path) -> dict[str, Any] | None:
    """A target file as its output's record names it: path, size, modification time."""
    try:
        status = path.stat()
    except OSError:
        return None  # its worker says why
    return {"path": str(path), "size": status.st_size, "mtime_ns": status.st_mtime_ns}


def _other_file(recorded: object, path: Path) -> bool:
    """Whether the recorded target path ``recorded`` is there and is another file than ``path``.

    Paths are compared as files (device and inode), not as strings: a folder
    moved, renamed or reached through a link names the same file otherwise.
    """
    if not isinstance(recorded, str) or recorded == str(path):
        return False
    try:
        return not os.path.samefile(recorded, path)
    except OSError:
        return False  # gone (moved) or unreadable: no other file to clash with


def _picks_arrays(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    picks = Picks.load(str(path))
    return None if picks is None else (picks.tile, picks.transform)


def finished(output: Path) -> bool:
    """Whether ``output`` was written whole (a Deep Zoom output: with its viewer page).

    Outputs are written atomically, so one that is there is whole; a Deep
    Zoom output is whole only with the files written after it.

    Parameters
    ----------
    output : pathlib.Path
        The output file a target makes.

    Returns
    -------
    bool
    """
    if output.suffix.lower() == ".dzi":
        return (output.is_file() and output.with_suffix(".html").is_file()
                and output.with_name(output.stem + ".viewer.json").is_file())
    return output.is_file()


class _Reporter:
    """Records each target's result, counts it on the bar, and passes failures on."""

    def __init__(self, result: BatchResult, on_error: ErrorListener | None) -> None:
        self.result = result
        self.on_error = on_error
        self.bar: Any = None

    def add(self, entry: TargetResult) -> None:
        self.result.results.append(entry)
        if self.bar is not None:
            self.bar.update(1)
        if entry.status == "failed" and self.on_error is not None:
            self.on_error(entry.name, entry.message)

    def failed(self, name: str, output: str, message: str) -> None:
        self.add(TargetResult(name, output, "failed", message))

    def skipped(self, name: str, output: str) -> None:
        self.add(TargetResult(name, output, "skipped"))

    def outcome(self, outcome: Outcome, path: str | None) -> None:
        # The name says which file: the worker's message may start with its path or name.
        message = _without_path(outcome.message, *([path] if path else []), outcome.name)
        self.add(TargetResult(outcome.name, outcome.output, "made" if outcome.ok else "failed",
                              message, outcome.seconds, outcome.metrics))


def _prepare(
    targets: list[BatchTarget], spec: str, options: MosaicOptions, cache: str,
    show_progress: bool, quiet: bool, report: _Reporter,
) -> tuple[list[BatchTarget], str]:
    """Index the library once at every match size the targets need.

    Returns the usable targets and the library's fingerprint
    (:func:`._stable.library_fingerprint`; '' when no target is usable).

    With sizes given as ``cells`` or ``print_size`` each target's cell and
    tile sizes follow its own size (read from its header); else one size
    serves all. The library's near-duplicate groups (``dedupe``), its
    identical photos (``identical_photos``) and the search features of the
    first target's geometry are cached here too, so that workers do not each
    compute them.
    """
    from ..sizing import fit_options, options_plan

    per_target = options.cells is not None or options.print_size is not None
    formats: dict[tuple, MosaicOptions] = {}
    # Cells and tiles rounded to different shapes (--aspect), said once each, as make does.
    shapes: dict[str, None] = {}
    usable = []
    for target in targets:
        if not per_target:
            usable.append(target)
            continue
        try:
            size = _target_size(target, options)
            plan = options_plan(options, size, str(target.path))
            shapes.setdefault(plan.shape_warning() or "")
            fitted = fit_options(options, plan)
        except OptionError as error:
            report.failed(target.name, "",
                          _without_path(error.message(_flag), target.path, target.name))
            continue
        except MosaicistError as error:
            report.failed(target.name, "", _without_path(str(error), target.path, target.name))
            continue
        formats.setdefault(_format_key(fitted), fitted)
        usable.append(target)
    if not per_target:
        formats[_format_key(options)] = options
        # Fixed cell and tile widths: their shapes do not depend on the target's size.
        shapes.setdefault(options_plan(options, (4096, 4096)).shape_warning() or "")
    if not quiet:
        for shape in filter(None, shapes):
            print(printable(f"mosaicist: warning: {shape}"), file=sys.stderr)
    fingerprint = ""
    for number, fitted in enumerate(formats.values()):
        # The same files at every match size: one fingerprint, from the first.
        found = _warm(spec, fitted, cache, show_progress, quiet,
                      features=number == 0 and bool(usable), fingerprint=number == 0)
        fingerprint = fingerprint or found
    return usable, fingerprint if usable else ""


def _flag(parameter: str) -> str:
    from ._worker import _flag as flag

    return flag(parameter)


def _without_path(message: str, *paths: str | Path) -> str:
    """``message`` without a leading ``PATH: `` of ``paths``: each line names its target once."""
    for path in paths:
        prefix = f"{path}: "
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


def _target_size(target: BatchTarget, options: MosaicOptions) -> tuple[int, int]:
    if target.video:
        from ._video import video_info

        info = video_info(target.path, options.max_target_pixels)
        return info.width, info.height
    from ..imaging import target_size

    return target_size(target.path, options.max_target_pixels)


def _format_key(options: MosaicOptions) -> tuple:
    return (options.match_px, options.match_height, options.aspect_ratio, options.crop,
            options.cell_px, options.cell_height)


def _warm(spec: str, options: MosaicOptions, cache: str, show_progress: bool, quiet: bool,
          features: bool, fingerprint: bool = True) -> str:
    """Index (or update) the library at ``options``' match size; cache what workers reuse.

    Returns the library's :func:`._stable.library_fingerprint` (``''`` without ``fingerprint``).
    """
    from ..grid import make_grid
    from ..library import TileLibrary
    from ..match import MatchRequest, fitted_matcher

    assert options.match_px is not None
    library = TileLibrary.open(spec, options.match_px, cache_dir=cache,
                               show_progress=show_progress, quiet=quiet,
                               aspect=options.aspect_ratio, crop=options.crop,
                               colour_profiles=options.colour_profiles)
    digest = library_fingerprint(library) if fingerprint else ""
    library = library.without_copies(options.dedupe, options.identical_photos)
    if features:
        _, fitted, _ = fitted_matcher(options)
        cell = np.zeros((fitted.cell_height, fitted.cell_px, 3), np.uint8)
        grid = make_grid(cell, fitted.cell_px, cell_height=fitted.cell_height)
        request = MatchRequest(grid, library, fitted, show_progress)
        if fitted.search == "exact" and fitted.device == "cpu":
            request.features  # noqa: B018 - computed once here and cached on disk
    return digest


@dataclass
class _Work:
    """A job on its way to a worker, and where its result goes."""

    job: Job
    frame: np.ndarray | None
    source: _Source
    target: dict[str, Any] | None = None  # what its output's record names as its target
    attempts: int = 1
    alone: bool = False  # sent again with nothing else in flight (after its worker died)


class _Jobs:
    """Makes the batch's jobs: output paths, picks paths, the settings every job shares.

    ``images`` and ``frames`` are the digests of the settings that make an
    image's output and a video frame's (:func:`_guarded`).
    """

    def __init__(self, outdir: Path, suffix: str, spec: str, options: MosaicOptions, cache: str,
                 stable: float, state: _State, overwrite: bool, *, images: str = "",
                 frames: str = "", unrecorded: tuple[bool, bool] = (False, False),
                 library: str = "") -> None:
        self.outdir, self.suffix, self.spec = outdir, suffix, spec
        self.options, self.cache, self.stable = options, cache, stable
        self.state, self.overwrite = state, overwrite
        self.digests = {False: images, True: frames}
        # Whether an output without a record (an earlier version made none) can be done:
        # the folder's settings, before this run claimed it, were this run's (images, frames).
        self.unrecorded = {False: unrecorded[0], True: unrecorded[1]}
        self.library = library  # the library's fingerprint ('' when unknown)

    def output(self, stem: str) -> Path:
        return self.outdir / f"{stem}{self.suffix}"

    def target(self, target: BatchTarget, frame: int | None = None) -> dict[str, Any] | None:
        """What the record of ``target``'s output (of its frame ``frame``) names as its target.

        A stable frame's picture also depends on the frame before it: its
        record names that frame's picks (:meth:`Picks.digest`, None where
        there were none), read now, when the frame is handed out (after the
        one before came back). A frame made from no picks, its previous one
        having failed, is then made again once that one is made, and so is
        the rest of the chain, as an uninterrupted run would make them. The
        picks of a new scene hold those of the frame before it, which the
        next frame may resume (a flash): their digest covers them, so that
        frame is made again when they change too.
        """
        identity = _identity(target.path)
        if identity is not None and frame is not None:
            identity["frame"] = frame
            if self.stable and frame > 0:
                picks = Picks.load(str(self.state.picks_path(target.output_stem(frame - 1))))
                identity["previous"] = None if picks is None else picks.digest()
        return identity

    def done(self, stem: str, target: BatchTarget, identity: dict[str, Any] | None) -> bool:
        """Whether the output of ``stem`` is finished: whole, of this target, these settings.

        An output without a record (killed before it was written, or made
        by another batch), one the record's size does not match (truncated)
        or made with other settings, from another library or from another
        version of the target is made again.
        """
        output = self.output(stem)
        if self.overwrite or identity is None or not finished(output):
            return False
        record = self.state.made_by(output)
        try:
            status = output.stat()
        except OSError:
            return False
        digest = self.digests[target.video]
        if record is None:
            # Made by a version that kept no records: done when the folder's settings
            # are this run's and the output is not older than its target (not edited since).
            if (self.unrecorded[target.video] and status.st_size > 0
                    and status.st_mtime_ns >= identity["mtime_ns"]):
                self._record(output, digest, identity)
                return True
            return False
        made_from = record.get("target")
        if (record.get("size") != status.st_size or record.get("settings") != digest
                or not isinstance(made_from, dict)):
            return False
        # Made from another library (photos added or edited since); a record of a
        # version that kept no fingerprint is taken at its word.
        if self.library and record.get("library", self.library) != self.library:
            return False
        if "previous" in identity and ("previous" not in made_from
                                       or identity["previous"] is None):
            # Recorded by a version that named no previous picks, or those picks lost since
            # (made again, the frame could not get its chain back): taken at its word.
            made_from = {**made_from, "previous": identity["previous"]}
        if made_from == identity:
            return True
        # The target moved or was renamed (its folder too), or is named by another path
        # to the same file: the same size and modification time are the same picture.
        if ({**made_from, "path": identity["path"]} == identity
                and not _other_file(made_from.get("path"), target.path)):
            self._record(output, digest, identity)
            return True
        return False

    def _record(self, output: Path, digest: str, identity: dict[str, Any]) -> None:
        """Record ``output`` as made from ``identity`` (the next run finds it at once)."""
        with contextlib.suppress(OSError):  # unrecorded, it is looked at again next run
            self.state.publish(output, digest, identity, self.library)

    def clash(self, stem: str, target: BatchTarget) -> str | None:
        """Why ``stem``'s finished output cannot be ``target``'s: another file made it, or None.

        As two targets of one run that would write one output are refused
        (:func:`._targets.collect_targets`), so are two of different runs.
        """
        output = self.output(stem)
        if self.overwrite or not finished(output):
            return None
        record = self.state.made_by(output)
        made_from = None if record is None else record.get("target")
        if not isinstance(made_from, dict) or not _other_file(made_from.get("path"),
                                                              target.path):
            return None  # moved, renamed or edited since: made again
        # Not --overwrite: it makes every output of the folder again.
        return (f"its output {output} was made from {made_from['path']} by an earlier batch; "
                "rename one of the two targets")

    def publish(self, work: _Work) -> str | None:
        """Record ``work``'s output as made (after it was published); why not, or None."""
        if work.target is None:
            return None
        try:
            self.state.publish(Path(work.job.output), self.digests[work.job.path is None],
                               work.target, self.library)
        except OSError as error:
            return f"{self.state.outputs}: cannot record it as made: {error.strerror or error}"
        return None

    def image(self, target: BatchTarget) -> Job:
        # With the batch's library named: a worker refuses another (one indexed since).
        return Job(target.name, str(target.path), str(self.output(target.stem)), self.spec,
                   self.options, self.cache, library=self.library)

    def frame(self, target: BatchTarget, index: int) -> Job:
        stem = target.output_stem(index)
        previous = None
        if self.stable and index > 0:
            previous = str(self.state.picks_path(target.output_stem(index - 1)))
        return Job(f"{target.name} frame {index}", None, str(self.output(stem)), self.spec,
                   self.options, self.cache, self.stable, str(self.state.picks_path(stem)),
                   previous, self.library)


class _Source:
    """Where jobs come from, in order."""

    exhausted = False

    def next(self) -> _Work | None:
        """The next job to run now, or None (exhausted, or waiting on one in flight)."""
        raise NotImplementedError

    def finished(self, work: _Work) -> None:
        """``work`` came back."""


class _ImageSource(_Source):
    def __init__(self, targets: list[BatchTarget], jobs: _Jobs, report: _Reporter) -> None:
        self.targets = iter(targets)
        self.jobs, self.report = jobs, report

    def next(self) -> _Work | None:
        for target in self.targets:
            identity = self.jobs.target(target)
            if self.jobs.done(target.stem, target, identity):
                self.report.skipped(target.name, str(self.jobs.output(target.stem)))
                continue
            clash = self.jobs.clash(target.stem, target)
            if clash is not None:
                self.report.failed(target.name, "", clash)
                continue
            return _Work(self.jobs.image(target), None, self, identity)
        self.exhausted = True
        return None


def _warn(message: str) -> None:
    """Say ``message`` as a warning on one line, above the progress bar (if one is drawn)."""
    from tqdm import tqdm

    tqdm.write(printable(f"mosaicist: warning: {message}"), file=sys.stderr)


class _VideoSource(_Source):
    """A video's frames, decoded here as they are needed.

    With ``ordered`` (temporal stability) a frame is handed out only once
    the one before it came back, since it starts from that one's tiles.
    """

    def __init__(self, target: BatchTarget, jobs: _Jobs, report: _Reporter, max_pixels: int,
                 ordered: bool, note: Callable[[str], None] | None = None) -> None:
        from ._video import read_frames, video_info

        self.target, self.jobs, self.report, self.ordered = target, jobs, report, ordered
        self.frames = 0
        self.broken = False  # its frames could not all be read (or a clash stopped it)
        self.size: tuple[int, int] | None = None  # of the frames last found makeable
        self.stems: list[str] = []
        self.in_flight = False
        self.rate: Fraction | None = None
        self.expected: int | None = None
        try:
            info = video_info(target.path, max_pixels)
            self.rate, self.expected = info.rate, info.frames
        except MosaicistError:
            pass  # reported when its frames are read
        # What reading leaves out (a partial last frame) is said, or kept quiet.
        self._decoded: Iterator[np.ndarray] = read_frames(
            target.path, max_pixels, note=note or (lambda message: None))

    def _count_frames_read(self) -> None:
        """Put the frames read in place of those expected on the bar's total: a count
        estimated from the duration (a Matroska or MPEG-TS header gives none) can be far
        off (a variable frame rate, a duration that lies), and the bar ended at 6/3."""
        bar = self.report.bar
        if (bar is None or self.expected is None or bar.total is None
                or self.frames == self.expected):
            return
        bar.total = max(bar.n, bar.total + self.frames - self.expected)
        self.expected = self.frames
        refresh = getattr(bar, "refresh", None)
        if refresh is not None:
            refresh()

    def next(self) -> _Work | None:
        if self.exhausted or (self.ordered and self.in_flight):
            return None
        while True:
            try:
                frame = next(self._decoded)
            except StopIteration:
                self.exhausted = True
                if not self.frames:
                    # Its targets are its frames: with none, it must not pass for made.
                    self._broken("no frame in the video")
                self._count_frames_read()
                return None
            except OptionError as error:
                self._broken(_without_path(error.message(_flag), self.target.path))
                return None
            except MosaicistError as error:
                self._broken(_without_path(str(error), self.target.path))
                return None
            index = self.frames
            size = (int(frame.shape[1]), int(frame.shape[0]))
            if size != self.size:
                problem = self._size_problem(size, index)
                if problem is not None:
                    # Every frame of that size would fail alike: once for the video.
                    self._broken(problem)
                    return None
                self.size = size
            self.frames += 1
            stem = self.target.output_stem(index)
            self.stems.append(stem)
            identity = self.jobs.target(self.target, index)
            if self.jobs.done(stem, self.target, identity):
                self.report.skipped(f"{self.target.name} frame {index}",
                                    str(self.jobs.output(stem)))
                continue
            clash = self.jobs.clash(stem, self.target)
            if clash is not None:
                self._broken(clash)  # once for the video, not once per frame
                return None
            self.in_flight = True
            return _Work(self.jobs.frame(self.target, index), frame, self, identity)

    def _size_problem(self, size: tuple[int, int], index: int) -> str | None:
        """Why frames of ``size`` cannot be made (the worker's checks before any work), or None."""
        from ..render import check_output
        from ..sizing import options_plan

        name = f"{self.target.name} frame {index}"
        options = self.jobs.options
        limit = options.max_target_pixels
        try:
            # The header's size was checked against the limit; a stream can change it.
            if limit is not None and size[0] * size[1] > limit:
                raise OptionError(
                    "{width}x{height} = {pixels} a frame is over the target limit of "
                    "{limit} (raise it with {max_target_pixels})", width=f"{size[0]:,}",
                    height=f"{size[1]:,}", pixels=counted(size[0] * size[1], "pixel"),
                    limit=counted(limit, "pixel"))
            plan = options_plan(options, size, name)
            check_output(self.jobs.output(self.target.output_stem(index)), *plan.output_size,
                         options)
        except OptionError as error:
            return _without_path(error.message(_flag), name)
        except MosaicistError as error:
            return _without_path(str(error), name)
        return None

    def _broken(self, message: str) -> None:
        self.exhausted = self.broken = True
        after = f" (after {counted(self.frames, 'frame')})" if self.frames else ""
        self.report.failed(self.target.name, "", message + after)

    def finished(self, work: _Work) -> None:
        self.in_flight = False


class _Runner:
    """Runs jobs somewhere: a local process pool or a Dask cluster."""

    workers = 1
    capacity = 1

    def submit(self, work: _Work) -> Any:
        raise NotImplementedError

    def wait(self, pending: Iterable[Any]) -> set[Any]:
        raise NotImplementedError

    def result(self, future: Any) -> Outcome:
        """The outcome of a job :meth:`wait` found done (or the error it came back with)."""
        outcome: Outcome = future.result()
        return outcome

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """Stop at once: queued jobs dropped, running ones stopped where possible."""
        self.close()


class _LocalRunner(_Runner):
    """A pool of ``workers`` processes (spawned: no state inherited), ``threads`` threads each."""

    def __init__(self, workers: int, threads: int) -> None:
        self.workers, self.threads = workers, threads
        self.capacity = QUEUED_PER_WORKER * workers
        # Where a process that finds the script's batch call unguarded says so.
        handle, marker = tempfile.mkstemp(prefix="mosaicist-unguarded-")
        os.close(handle)
        os.unlink(marker)
        self.marker = Path(marker)
        self.pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        import multiprocessing

        from .._runtime import resource_tracker_without_hangups
        from ._worker import init_worker

        # Processes start (and re-run the main script) when work is first sent:
        # the variable stays set while the pool lives; they inherit it.
        os.environ[UNGUARDED_ENV] = str(self.marker)
        resource_tracker_without_hangups()  # the spawned pool's semaphores are its
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=init_worker, initargs=(self.threads, os.getpid()))

    def unguarded(self) -> bool:
        """Whether a process of the pool died re-running an unguarded batch call."""
        return self.marker.exists()

    def _forget(self) -> None:
        os.environ.pop(UNGUARDED_ENV, None)
        with contextlib.suppress(OSError):
            self.marker.unlink()

    def submit(self, work: _Work) -> Future:
        # The pool starts its processes here, as work is sent to them.
        with signals_held_while_starting(frozenset({signal.SIGINT})):
            return self.pool.submit(make_target, work.job, work.frame)

    def wait(self, pending: Iterable[Any]) -> set[Any]:
        done, _ = wait_futures(list(pending), return_when=FIRST_COMPLETED)
        return done

    def restart(self) -> None:
        """Replace a pool whose process died."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pool = self._start()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self._forget()

    def abort(self) -> None:
        self._forget()
        # The pool's processes ignore SIGINT; its public API only waits for them.
        stop_process_pool(self.pool)
        # The pool sees its processes gone and releases its queues (and their
        # semaphores, which the resource tracker would otherwise report).
        with contextlib.suppress(Exception):
            self.pool.shutdown(wait=True, cancel_futures=True)
        del self.pool
        gc.collect()


#: Why a target failed whose worker died every time it was tried (a pool's process, or
#: each Dask worker given it), the others having been tried again without it.
_WORKER_DIED = "the worker process making it died each time it was tried (out of memory?)"
#: What a batch on a Dask cluster adds when its scheduler is gone mid-run
#: (:func:`mosaicist.distributed._cluster.lost_scheduler` names the scheduler).
_OUTPUTS_KEPT = "; the outputs made are kept"


class _DaskRunner(_Runner):
    """A Dask cluster's workers, through DASK-CORE's :func:`mosaicist.distributed.client_for`.

    Workers must see the library, the cache, the targets and the output
    folder at the same paths (a shared filesystem); video frames are sent
    to them (scattered, not through the scheduler's task graph).
    """

    def __init__(self, client: Any, stack: contextlib.ExitStack) -> None:
        """Run on ``client`` (:func:`_cluster_client`); ``stack`` closes it (and its cluster)."""
        from ..distributed import require_workers

        self.client, self._stack = client, stack
        # Asked again after the indexing: workers that left, or a scheduler lost, while
        # it ran are said in one line here, not by the first job sent.
        require_workers(self.client)
        threads = sum(self.client.nthreads().values())
        self.workers = len(self.client.nthreads())
        self.capacity = max(2, QUEUED_PER_WORKER * threads)

    def submit(self, work: _Work) -> Any:
        if self.client.status != "running":
            # Its scheduler lost (the client is reconnecting): a frame's scatter would
            # wait for it 10 s, then end the run with Dask's words.
            raise self._lost()
        frame: Any = work.frame
        try:
            if frame is not None:
                frame = self.client.scatter(frame, hash=False)
            return self.client.submit(make_target, work.job, frame, pure=False)
        except OSError:  # CommClosedError, or Dask's "Timed out trying to connect"
            raise self._lost() from None

    def result(self, future: Any) -> Outcome:
        from distributed.client import FutureCancelledError

        try:
            return super().result(future)
        except (OSError, FutureCancelledError):
            # A job returns its own failures (make_target raises none): a task done
            # whose result cannot be gathered (CommClosedError) lost the scheduler.
            raise self._lost() from None

    def wait(self, pending: Iterable[Any]) -> set[Any]:
        from distributed import wait
        from distributed.client import FuturesCancelledError

        from ..distributed import WorkerWatch
        from ..distributed._cluster import WATCH_SECONDS

        # Dask waits for ever on a cluster left without workers, and a lost
        # scheduler cancels every task with a traceback: both end in one line.
        watch = WorkerWatch(self.client)
        with self.client.as_current():  # the client was not made the default one
            while True:
                try:
                    return set(wait(list(pending), timeout=WATCH_SECONDS,
                                    return_when="FIRST_COMPLETED").done)
                except TimeoutError:
                    watch.check()
                except FuturesCancelledError:
                    raise self._lost() from None

    def _lost(self) -> MosaicistError:
        """The one line of a batch whose scheduler is gone, naming it."""
        from ..distributed._cluster import lost_scheduler

        return lost_scheduler(self.client, _OUTPUTS_KEPT)

    def close(self) -> None:
        self._stack.close()

    def abort(self) -> None:
        # Called while the error that stops the run unwinds: the client is told of it
        # (ExitStack.close would end it as a run that succeeded), so that one that lost
        # its scheduler closes without Dask logging a traceback of its reconnecting.
        self._stack.__exit__(*sys.exc_info())


def _cluster_client(scheduler: str, stack: contextlib.ExitStack) -> Any:
    """A client of the cluster at ``scheduler`` that has a worker, closed by ``stack``.

    A local cluster is started; a remote scheduler must answer, have a
    worker within :data:`mosaicist.distributed._cluster.CONNECT_SECONDS` and
    no worker of another mosaicist (:func:`mosaicist.distributed.require_workers`).
    Where it is refused, the caller closes ``stack`` (a local cluster is then
    stopped) as the error leaves.
    """
    from ..distributed import client_for, require_workers

    # A SIGTERM that comes while a local cluster starts is held there, and delivered
    # (to the command line's unwinding) once the cluster is closed again.
    client = stack.enter_context(client_for(scheduler))
    require_workers(client)
    return client


class _MadeFolder:
    """The output folder a batch made, removed again if the batch stops before using it.

    A library refused as it is indexed (no usable photo) left the folder and
    its lock files, where every other refusal leaves the disk as it was.
    """

    def __init__(self, made: Path | None) -> None:
        self.made = made

    def keep(self) -> None:
        self.made = None

    def __enter__(self) -> _MadeFolder:
        return self

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        if kind is not None and self.made is not None:
            shutil.rmtree(self.made, ignore_errors=True)


def _run(runner: _Runner, sources: list[_Source], report: _Reporter, jobs: _Jobs) -> None:
    """Keep the runner's queue full from the sources, in order, until all are done.

    Each output made is recorded as such (:meth:`_Jobs.publish`) once its
    worker has published it. After a pool process died, the jobs it took
    with it are tried again one at a time (:func:`_retry_broken`) before
    any other is sent.
    """
    pending: dict[Any, _Work] = {}
    suspects: list[_Work] = []
    # Why the batch stops: its library was indexed again while it ran. No more work is
    # sent (each target would fail with the same line); what is in flight finishes.
    stopped: list[str] = []

    def fill() -> None:
        if stopped:
            return
        if suspects:
            # Alone in the pool: a death is then this job's, and no other job's.
            if not pending:
                suspect = suspects.pop(0)
                pending[runner.submit(suspect)] = suspect
            return
        while len(pending) < runner.capacity:
            work = next((found for source in sources if not source.exhausted
                         for found in [source.next()] if found is not None), None)
            if work is None:
                return
            pending[runner.submit(work)] = work

    fill()
    while pending:
        for future in runner.wait(pending):
            work = pending.pop(future, None)
            if work is None:
                continue  # sent again after its pool broke
            try:
                outcome = runner.result(future)
            except BrokenProcessPool:
                if isinstance(runner, _LocalRunner) and runner.unguarded():
                    raise MosaicistError(_UNGUARDED) from None
                _retry_broken(runner, pending, work, report, suspects)
                continue
            except Exception as error:  # a worker lost for good (Dask's KilledWorker)...
                if _killed_worker(error) and not work.alone:
                    # Dask charges a worker's death to every task it held: one beside the
                    # target that kills its worker failed with it. Tried again alone, as
                    # after a pool process died, it fails only when it is that target.
                    work.alone = True
                    suspects.append(work)
                    continue
                _forget_picks(work)
                outcome = Outcome(work.job.name, work.job.output, False, _lost_job(error))
            if outcome.ok:
                problem = jobs.publish(work)
                if problem is not None:
                    outcome = Outcome(outcome.name, outcome.output, False, problem,
                                      outcome.seconds)
            work.source.finished(work)
            report.outcome(outcome, work.job.path)
            if outcome.library_changed and not stopped:
                stopped.append(outcome.message or "the library changed while the batch ran")
        fill()
    if stopped:
        raise MosaicistError(stopped[0])


def _killed_worker(error: Exception) -> bool:
    """Whether ``error`` is Dask's: every worker given the task died while it ran."""
    dask_scheduler = sys.modules.get("distributed.scheduler")  # imported by a Dask run only
    return dask_scheduler is not None and isinstance(error, dask_scheduler.KilledWorker)


def _lost_job(error: Exception) -> str:
    """Why a job came back without an outcome (its worker lost), in one line."""
    if _killed_worker(error):
        # Dask tried it on one worker after another, and each died making it; its
        # own message is a paragraph naming the task's key and a web page.
        return _WORKER_DIED
    return f"its worker failed: {type(error).__name__}: {error}"


def _retry_broken(runner: _Runner, pending: dict[Any, _Work], work: _Work,
                  report: _Reporter, suspects: list[_Work]) -> None:
    """A pool process died: start a new pool; its jobs are tried again, one at a time.

    The pool does not say which job's process died, and every job in flight
    is lost with it: a job fails (after :data:`ATTEMPTS` tries) only when it
    was the only one in flight, so that one target that kills its process
    (out of memory, a crash in a decoder) does not fail the others with it.
    """
    assert isinstance(runner, _LocalRunner)
    lost = [work, *pending.values()]
    pending.clear()
    runner.restart()
    if len(lost) == 1 and work.attempts >= ATTEMPTS:
        _forget_picks(work)
        work.source.finished(work)
        report.failed(work.job.name, work.job.output, _WORKER_DIED)
        return
    for item in lost:
        item.attempts += 1
    # Before the jobs lost earlier: the one that was alone is tried again at once.
    suspects[:0] = lost


def _forget_picks(work: _Work) -> None:
    """Remove the picks of a frame whose process died: they must not steer the next frame.

    A worker saves a frame's picks before its output; one that died between
    the two left picks of a frame that failed (a failure its worker reports
    removes them itself).
    """
    if work.job.picks is not None:
        with contextlib.suppress(OSError):
            os.unlink(work.job.picks)


def _video_outputs(found: list[BatchTarget], result: BatchResult, videos: list[_VideoSource],
                   jobs: _Jobs) -> list[tuple[str, str]]:
    """The outputs that make the video, in the targets' order (every frame of each video)."""
    frames = {source.target.path: source.stems for source in videos}
    outputs = []
    for target in found:
        stems = frames.get(target.path, []) if target.video else [target.stem]
        for number, stem in enumerate(stems):
            name = f"{target.name} frame {number}" if target.video else target.name
            outputs.append((name, str(jobs.output(stem))))
    return outputs


class _UnreadableOutput(MosaicistError):
    """An output that cannot be read back into the video (damaged since it was made)."""


def _read_outputs(outputs: list[tuple[str, str]]) -> Iterator[np.ndarray]:
    """The outputs' pictures, in order, from ``(target name, output path)`` pairs.

    One that cannot be read is named, with the remedy; so is one of another
    size than the first, with the targets of both (the encoder's message
    counts frames, which the user cannot map to targets).
    """
    from PIL import Image

    from ..imaging import _DECODE_ERRORS, to_rgb

    first: tuple[str, tuple[int, ...]] | None = None
    for name, path in outputs:
        try:
            with Image.open(path) as image:
                picture = np.asarray(to_rgb(image))
        except _DECODE_ERRORS as error:
            reason = str(error) or type(error).__name__
            raise _UnreadableOutput(f"{path}: cannot read this frame ({reason}); make it again "
                                    "(delete it, or use --overwrite)") from None
        shape = picture.shape[:2]
        if first is None:
            first = (name, shape)
        elif shape != first[1]:
            raise MosaicistError(
                f"the output of {name} is {shape[1]}x{shape[0]} pixels, that of {first[0]} "
                f"{first[1][1]}x{first[1][0]}; a video's frames have one size")
        yield picture
