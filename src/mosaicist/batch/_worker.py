"""What a batch worker does: make one target's mosaic and write it, atomically.

Runs in the batch's worker processes (a local process pool, or the
workers of a Dask cluster). Each process opens a library once, without
updating it (the batch's client indexed it first), and keeps it: the tiles
are a memory map, so every process on a machine shares one copy of them
in the page cache. It keeps it while the index publishes it: a library
indexed again meanwhile (photos added, edited or removed, then another run
of mosaicist) is read again, and refused unless it is the batch's, so that
one batch never mixes two libraries (:func:`open_library`). A target's
failure is returned as one line, never raised, so that one bad target does
not stop the batch.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._runtime import THREADS_ENV, end_with_parent, quiet_picture_warnings
from ..errors import MosaicistError, OptionError
from ..paths import sync_folder

if TYPE_CHECKING:
    from ..library import TileLibrary
    from ..options import MosaicOptions
    from ..pipeline import Mosaic
    from ._stable import Picks

#: Metrics a worker sends back for the batch's summary (see :mod:`mosaicist.metrics`).
REPORTED_METRICS = ("psnr_view", "ssim_view", "ciede2000_mean_view", "distinct_tiles")


@dataclass(frozen=True)
class Job:
    """One target to make.

    Attributes
    ----------
    name : str
        How the user named it (``photo.jpg``, ``clip.mp4 frame 12``), for messages.
    path : str or None
        The image file, absolute; None for a video frame (sent with the job).
    output : str
        The output file, absolute: ``OUTDIR/<stem>.<format>``.
    tiles : str
        The tile source spec (a folder as an absolute path).
    options : MosaicOptions
        The settings, as given (fitted to each target as ``make`` fits them).
    cache_dir : str
        The cache folder, absolute (workers must see the client's).
    stable : float
        Temporal-stability strength (video frames; 0: off).
    picks : str or None
        Where this frame's picks are saved (video frames), before its output.
    previous : str or None
        The previous frame's picks (with ``stable``).
    library : str
        The fingerprint (:func:`._stable.library_fingerprint`) of the library the
        batch indexed, which a frame's picks name: a worker refuses to make the
        job with another (:func:`open_library`); '' where unknown (the worker
        then takes the library its index publishes, and computes it).
    """

    name: str
    path: str | None
    output: str
    tiles: str
    options: MosaicOptions
    cache_dir: str
    stable: float = 0.0
    picks: str | None = None
    previous: str | None = None
    library: str = ""


@dataclass
class Outcome:
    """What became of a :class:`Job`: made (with its seconds and metrics) or why not.

    ``library_changed``: not made because the library's index publishes
    another library than the batch's (:class:`LibraryChangedError`); no
    later target can be made with the batch's library either.
    """

    name: str
    output: str
    ok: bool
    message: str = ""
    seconds: float = 0.0
    metrics: dict[str, Any] | None = None
    library_changed: bool = False


#: Libraries this process opened, with their fingerprints, by what they were opened with.
_libraries: dict[tuple, tuple[TileLibrary, str]] = {}
_libraries_lock = threading.Lock()


class LibraryChangedError(MosaicistError):
    """The library's index publishes other photos than those the batch indexed."""

    def __init__(self, tiles: str) -> None:
        super().__init__(
            f"{tiles}: the library changed while the batch ran (indexed again after photos "
            "were added, edited or removed); run the batch again: the mosaics made with "
            "the old library are made again")


def open_library(tiles: str, options: MosaicOptions, cache_dir: str,
                 fingerprint: str = "") -> TileLibrary:
    """The library at the settings' match size, opened once per process without updating it.

    A batch makes every mosaic with one library: the one it indexed, whose
    :func:`._stable.library_fingerprint` is ``fingerprint`` ('' where
    unknown: then the one its index publishes). The library kept open is
    used while its index still publishes it
    (:meth:`~mosaicist.library.TileLibrary.is_current`); once another run
    has indexed the source again it is read again, and refused unless its
    photos are the batch's.

    Raises
    ------
    LibraryChangedError
        When the index publishes another library than the batch's.
    MosaicistError
        When the index or the cache is not there.
    """
    assert options.match_px is not None
    key = (tiles, options.match_px, options.match_height, options.aspect_ratio, options.crop,
           options.colour_profiles, cache_dir)
    with _libraries_lock:
        kept = _libraries.get(key)
        if kept is not None:
            library, found = kept
            if library.is_current():
                if fingerprint and found != fingerprint:
                    raise LibraryChangedError(tiles)  # published again since the batch began
                return library
            # Published again (by mosaicist index, or a later batch on a cluster whose
            # workers outlive batches): read again, and compared with the batch's.
        library = _read_library(tiles, options, cache_dir)
        found = _fingerprint(library, tiles)
        if fingerprint and found != fingerprint:
            raise LibraryChangedError(tiles)
        _libraries[key] = library, found
        return library


def _read_library(tiles: str, options: MosaicOptions, cache_dir: str) -> TileLibrary:
    """The library as its index publishes it now, opened without updating it."""
    from ..library import MissingIndexError, TileLibrary

    assert options.match_px is not None
    if not (Path(cache_dir) / "indexes").is_dir():
        # Else the library, opened without updating, would look empty. A local
        # pool shares the cache: there, it was deleted while the batch ran.
        raise MosaicistError(
            f"{cache_dir}: the cache is not on this worker (deleted since the batch "
            "indexed the library, or not on a filesystem every worker shares); run "
            "the batch again")
    try:
        return TileLibrary.open(tiles, options.match_px, cache_dir=cache_dir,
                                update=False, aspect=options.aspect_ratio,
                                crop=options.crop, require_index=True,
                                colour_profiles=options.colour_profiles)
    except MissingIndexError as error:
        # The batch indexed the library before starting its workers: said as
        # "no usable tile images found", this blamed the user's photos.
        raise MosaicistError(
            f"{error.directory}: the tile index is gone (deleted since the "
            "batch indexed it, or not on a filesystem every worker shares); run the "
            "batch again") from None


def _fingerprint(library: TileLibrary, tiles: str) -> str:
    """``library``'s fingerprint, read while its index still publishes it.

    The photos' content hashes are read from the index after its tiles:
    one published in between would give a fingerprint of neither library.
    """
    from ._stable import library_fingerprint

    found = library_fingerprint(library)
    if not library.is_current():
        raise LibraryChangedError(tiles)
    return found


def init_worker(threads: int, parent_pid: int) -> None:
    """Start a pool process: its share of the cores for its own threads.

    Processes each making one target side by side leave each a few cores:
    the exact search's threads (:func:`mosaicist._runtime.worker_count`) and
    BLAS's are capped at ``threads``. The process ends with the batch's
    process ``parent_pid``, even one killed outright
    (:func:`mosaicist._runtime.end_with_parent`).
    """
    end_with_parent(parent_pid)
    quiet_picture_warnings()
    os.environ[THREADS_ENV] = str(threads)
    # Ctrl+C reaches the whole process group: the batch's own process stops the
    # pool, and a worker waiting for work must not die with a traceback first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # tqdm's default lock is a multiprocessing semaphore, which a worker stopped
    # by the batch could not release; a worker's bars are never drawn anyway.
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)


def make_target(job: Job, frame: np.ndarray | None = None) -> Outcome:
    """Make ``job``'s mosaic and write it; failures come back as one line.

    Parameters
    ----------
    job : Job
        The target.
    frame : numpy.ndarray, optional
        The picture of a video frame (``job.path`` is None then).
    """
    started = time.perf_counter()
    try:
        mosaic, picks = _mosaic(job, frame)
        if picks is not None and job.picks is not None:
            # Before the output: a finished frame always has its picks.
            picks.save(job.picks)
        mosaic.write(job.output)
        # On disk before the batch records it as made: a power cut must not leave a
        # recorded output cut short (the record's size would tell, but it is lost work).
        _flush(job.output)
    except OptionError as error:
        return _failed(job, error.message(_flag), started)
    except LibraryChangedError as error:
        outcome = _failed(job, str(error), started)
        outcome.library_changed = True
        return outcome
    except MosaicistError as error:
        return _failed(job, str(error), started)
    except MemoryError:
        return _failed(job, "out of memory", started)
    except OSError as error:
        where = f"{error.filename}: " if getattr(error, "filename", None) else ""
        return _failed(job, f"{where}{error.strerror or error}", started)
    except Exception as error:  # a bug: still one line, and the batch goes on
        return _failed(job, f"unexpected error: {type(error).__name__}: {error}", started)
    metrics = {name: mosaic.metrics[name] for name in REPORTED_METRICS
               if mosaic.metrics and name in mosaic.metrics}
    return Outcome(job.name, job.output, True, seconds=time.perf_counter() - started,
                   metrics=metrics)


def _mosaic(job: Job, frame: np.ndarray | None) -> tuple[Mosaic, Picks | None]:
    """``job``'s mosaic, and a video frame's picks (None for an image)."""
    from ..imaging import target_size
    from ..pipeline import make_mosaic
    from ..render import check_output
    from ..sizing import fit_options, options_plan

    options = job.options
    if frame is None:
        assert job.path is not None
        size = target_size(job.path, options.max_target_pixels)
    else:
        size = (int(frame.shape[1]), int(frame.shape[0]))
    # As 'make' does: the output's size, from the target's, checked before any work.
    plan = options_plan(options, size, job.name)
    check_output(job.output, *plan.output_size, options)
    library = open_library(job.tiles, fit_options(options, plan), job.cache_dir, job.library)
    if frame is None:
        assert job.path is not None
        return make_mosaic(job.path, library, options, cache_dir=job.cache_dir,
                           quiet=True), None
    from ._stable import Picks, frame_picks, library_fingerprint, stable_frame

    fingerprint = job.library or library_fingerprint(library)
    if job.stable:
        previous = None if job.previous is None else Picks.load(job.previous)
        return stable_frame(frame, library, options, previous, job.stable, name=job.name,
                            fingerprint=fingerprint)
    mosaic = make_mosaic(frame, library, options, cache_dir=job.cache_dir, quiet=True)
    return mosaic, frame_picks(mosaic, fingerprint)


def _flush(path: str) -> None:
    """Flush a written file, and its folder's entry for it, to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    sync_folder(os.path.dirname(path) or ".")


def _failed(job: Job, message: str, started: float) -> Outcome:
    if job.picks is not None:
        # A failed frame's earlier picks must not steer the next frame.
        try:
            os.unlink(job.picks)
        except OSError:
            pass
    return Outcome(job.name, job.output, False, message, time.perf_counter() - started)


def _flag(parameter: str) -> str:
    """The command-line flag of a setting (``max_uses`` -> ``--max-uses``)."""
    from ..options import setting_named

    try:
        flag = setting_named(parameter).flag
    except (KeyError, ValueError, OptionError):
        flag = None
    return flag or "--" + parameter.replace("_", "-")
