"""The studio's job process: runs one job and reports what it does on a pipe.

:class:`mosaicist.studio._jobs.Jobs` starts ``python -m mosaicist.studio._worker
FD PARENT_PID`` in a session (process group) of its own, writes the job's
spec as one JSON object to its stdin and reads events from file descriptor
``FD``, one JSON object a line:

``{"kind": "progress", "stage": "matching", "done": 120, "total": 5040}``
    A progress bar of the library moved (:func:`mosaicist.progress.progress_listener`),
    at most :data:`PROGRESS_INTERVAL` apart per stage.
``{"kind": "done", "data": {...}}``
    The job finished; ``data`` holds its results (outputs, report, index figures).
``{"kind": "failed", "message": "one sentence"}``
    The job met an expected problem (a :class:`~mosaicist.errors.MosaicistError`).

Jobs (the ``kind`` of the spec):

``make``
    :func:`mosaicist.make_mosaic` with the given settings, then every output
    written atomically into the run's folder, as ``mosaicist make`` writes
    them (see :data:`OUTPUT_FILES`).
``render``
    Saved placements drawn again at another tile size (``mosaicist render``).
``index``
    A tile source indexed (or brought up to date) as ``make`` would index it.

The process dies with its parent (``PR_SET_PDEATHSIG``), and its own workers
die with it; on SIGTERM (a cancel) it ends at once, except that an index
update first commits what it decoded.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import threading
import time
import traceback
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import MosaicistError
from ..paths import atomic_path

#: Output kind -> file name in the run's folder (the Deep Zoom viewer is ``mosaic.html``,
#: beside ``mosaic.dzi`` and ``mosaic_files/``).
OUTPUT_FILES = {
    "png": "mosaic.png",
    "jpeg": "mosaic.jpg",
    "tiff": "mosaic.tif",
    "viewer": "mosaic.html",
    "deepzoom_zip": "mosaic-deepzoom.zip",
    "placements_csv": "placements.csv",
    "placements_json": "placements.json",
    "report": "report.json",
    "thumbnail": "thumbnail.jpg",
}
#: The Deep Zoom descriptor written with the viewer page.
DEEP_ZOOM_FILE = "mosaic.dzi"
#: Largest mosaic also written as PNG and JPEG, in pixels: beyond it (a mural of
#: gigapixels) a flat file is more than anyone can open, and writing it would double
#: the run; the pyramidal TIFF and the Deep Zoom pyramid are written at any size.
FLAT_MAX_PIXELS = 400_000_000
#: Longest side of the thumbnail, in pixels.
THUMBNAIL_PX = 320
#: Seconds between two progress events of one stage.
PROGRESS_INTERVAL = 0.1
#: Most skipped files listed in an index job's result (all are counted).
SKIPPED_LISTED = 1000


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, infinity) as None, which JSON can hold."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


class EventWriter:
    """Writes events to the parent's pipe, one JSON line each, from any thread."""

    def __init__(self, descriptor: int) -> None:
        self.descriptor = descriptor
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._stage = ""

    def send(self, kind: str, **fields: Any) -> None:
        """Send one event (``kind`` plus its fields)."""
        line = (json.dumps(_json_safe({"kind": kind, **fields}), allow_nan=False, default=str)
                + "\n").encode()
        with self._lock:
            view = memoryview(line)
            try:
                while view:
                    written = os.write(self.descriptor, view)
                    view = view[written:]
            except BrokenPipeError:
                # Nobody listens any more: the studio is gone.
                os._exit(1)

    def progress(self, stage: str, done: float, total: float | None) -> None:
        """A progress bar's report (:func:`mosaicist.progress.progress_listener`), throttled."""
        now = time.monotonic()
        finished = total is not None and done >= total
        with self._lock:
            changed = stage != self._stage
            if not (changed or finished or now - self._last.get(stage, 0.0) >= PROGRESS_INTERVAL):
                return
            self._last[stage] = now
            self._stage = stage
        self.send("progress", stage=stage, done=done, total=total)

    def stage(self, stage: str, total: float | None = None) -> None:
        """Announce a stage of the job's own (not a library progress bar)."""
        self.progress(stage, 0, total)


def _write_outputs(renderer: Any, options: Any, folder: Path, events: EventWriter
                   ) -> tuple[dict[str, str], list[str]]:
    """Write the picture in every format that fits it, the viewer, the zip and the thumbnail.

    Returns the outputs written (kind -> file name) and a note for each
    format that could not take the picture (a JPEG over 65,500 pixels...).
    """
    from ..render import check_output, read_layout, read_level

    outputs: dict[str, str] = {}
    notes: list[str] = []
    width, height = renderer.width, renderer.height
    for kind in ("png", "jpeg", "tiff"):
        path = folder / OUTPUT_FILES[kind]
        if kind != "tiff" and width * height > FLAT_MAX_PIXELS:
            notes.append(f"no {kind.upper()} file: the mosaic has {width * height:,} pixels; "
                         f"its pyramidal TIFF and Deep Zoom hold it")
            print(f"mosaicist: note: {notes[-1]}", file=sys.stderr)  # a log event
            continue
        try:
            check_output(path, width, height, options)
        except MosaicistError as error:
            notes.append(f"no {kind.upper()} file: {error}")
            print(f"mosaicist: note: {notes[-1]}", file=sys.stderr)  # a log event
            continue
        renderer.write(path, options)
        outputs[kind] = path.name
    descriptor = folder / DEEP_ZOOM_FILE
    # The pyramid and its viewer page, as 'mosaicist make -o mosaic.dzi' writes them.
    renderer.write(descriptor, options)
    page = descriptor.with_suffix(".html")
    outputs["viewer"] = page.name
    events.stage("zipping Deep Zoom")
    zip_path = folder / OUTPUT_FILES["deepzoom_zip"]
    _zip_deep_zoom(descriptor, page, zip_path, events)
    outputs["deepzoom_zip"] = zip_path.name
    events.stage("thumbnail")
    layout = read_layout(descriptor)
    level = max(level for level in range(layout.deepest_level + 1)
                if max(layout.level_size(level)) <= THUMBNAIL_PX)
    from PIL import Image

    thumbnail = folder / OUTPUT_FILES["thumbnail"]
    with atomic_path(thumbnail) as temporary:
        Image.fromarray(read_level(descriptor, level)).save(temporary, "JPEG", quality=85)
    outputs["thumbnail"] = thumbnail.name
    return outputs, notes


def _zip_deep_zoom(descriptor: Path, page: Path, zip_path: Path, events: EventWriter) -> None:
    """Zip the pyramid and its viewer page (tiles stored: they are compressed already)."""
    from ..render import files_folder

    tiles = files_folder(descriptor)
    files = sorted(path for path in tiles.rglob("*") if path.is_file())
    total = len(files) + 2
    with atomic_path(zip_path) as temporary, zipfile.ZipFile(temporary, "w",
                                                              allowZip64=True) as archive:
        archive.write(descriptor, descriptor.name, zipfile.ZIP_DEFLATED)
        archive.write(page, page.name, zipfile.ZIP_DEFLATED)
        for number, path in enumerate(files, start=3):
            archive.write(path, path.relative_to(descriptor.parent).as_posix(),
                          zipfile.ZIP_STORED)
            events.progress("zipping Deep Zoom", number, total)


def run_make(spec: dict[str, Any], events: EventWriter) -> dict[str, Any]:
    """Make the mosaic of ``spec`` and write every output into its folder.

    ``spec``: ``target``, ``target_name`` (its display name, shown in
    messages instead of its path), ``tiles``, ``settings`` (the given
    settings, as :func:`mosaicist.studio._command.given_settings` returns
    them), ``folder`` and ``cache_dir``.
    """
    from ..imaging import target_size
    from ..options import MosaicOptions
    from ..pipeline import make_mosaic
    from ..render import check_output
    from ..sizing import options_plan

    started = time.perf_counter()
    options = MosaicOptions(**spec["settings"])
    target = Path(spec["target"])
    folder = Path(spec["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    # As 'mosaicist make' does: the output's size is known from the header; refuse it first.
    width, height = target_size(target, options.max_target_pixels)
    output_size = options_plan(options, (width, height), str(target)).output_size
    check_output(folder / DEEP_ZOOM_FILE, *output_size, options)
    events.stage("starting")
    mosaic = make_mosaic(target, spec["tiles"], options, cache_dir=spec["cache_dir"],
                         show_progress=False, quiet=False)
    write_started = time.perf_counter()
    outputs: dict[str, str] = {}
    for kind in ("placements_csv", "placements_json"):
        mosaic.placements.write(folder / OUTPUT_FILES[kind])
        outputs[kind] = OUTPUT_FILES[kind]
    written, notes = _write_outputs(mosaic.renderer, mosaic.options, folder, events)
    outputs.update(written)
    mosaic.timings["render"] += time.perf_counter() - write_started
    mosaic.timings["total"] = time.perf_counter() - started
    report_path = folder / OUTPUT_FILES["report"]
    main_output = folder / OUTPUT_FILES["png"] if "png" in outputs else folder / DEEP_ZOOM_FILE
    mosaic.write_report(report_path, output=str(main_output), target=str(target))
    outputs["report"] = report_path.name
    report = json.loads(report_path.read_text())
    return {"outputs": outputs, "report": report, "notes": notes,
            "settings": mosaic.options.to_json()}


def run_render(spec: dict[str, Any], events: EventWriter) -> dict[str, Any]:
    """Draw saved placements again at ``spec["tile_px"]`` into a new run's folder.

    ``spec``: ``placements`` (a placements JSON file), ``tile_px``,
    ``folder``, ``cache_dir`` and ``report`` (the source run's report, or
    None), from which the new report is made.
    """
    from ..placements import Placements
    from ..render import check_output, placements_renderer

    started = time.perf_counter()
    folder = Path(spec["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    placements = Placements.read(spec["placements"])
    options = placements.options.replace(tile_px=int(spec["tile_px"]))
    check_output(folder / DEEP_ZOOM_FILE, placements.cols * options.tile_px,
                 placements.rows * options.tile_height, options)
    events.stage("starting")
    renderer = placements_renderer(placements, options, cache_dir=spec["cache_dir"])
    # The placements of the new picture: the same cells, with the settings drawn at.
    placements.options = options
    outputs: dict[str, str] = {}
    for kind in ("placements_csv", "placements_json"):
        placements.write(folder / OUTPUT_FILES[kind])
        outputs[kind] = OUTPUT_FILES[kind]
    written, notes = _write_outputs(renderer, options, folder, events)
    outputs.update(written)
    report: dict[str, Any] = {}
    if spec.get("report"):
        # The source's report only lends the new one its figures (grid, tiles, metrics):
        # one that is gone or damaged on disk must not fail the drawing.
        try:
            loaded = json.loads(Path(spec["report"]).read_text("utf-8"))
        except (OSError, ValueError, RecursionError):
            loaded = None
        if isinstance(loaded, dict):
            report = loaded
    report.update({
        "tile_px": options.tile_px,
        "output_size": {"width": renderer.width, "height": renderer.height},
        "settings": options.to_json(),
        "timings": {"render": round(time.perf_counter() - started, 4),
                    "total": round(time.perf_counter() - started, 4)},
        "rendered_from": spec.get("source_run"),
        "output": str(folder / outputs.get("png", DEEP_ZOOM_FILE)),
    })
    report_path = folder / OUTPUT_FILES["report"]
    with atomic_path(report_path) as temporary:
        temporary.write_text(json.dumps(report, indent=2) + "\n")
    outputs["report"] = report_path.name
    return {"outputs": outputs, "report": report, "notes": notes,
            "settings": options.to_json()}


def run_index(spec: dict[str, Any], events: EventWriter) -> dict[str, Any]:
    """Index ``spec["tiles"]`` as ``make`` with ``spec["settings"]`` would; report what it did."""
    from ..library import TileLibrary
    from ..options import MosaicOptions

    options = MosaicOptions(**spec["settings"])
    assert options.match_px is not None
    events.stage("starting")
    library = TileLibrary.open(spec["tiles"], options.match_px, cache_dir=spec["cache_dir"],
                               show_progress=False, quiet=True, aspect=options.aspect_ratio,
                               crop=options.crop, colour_profiles=options.colour_profiles)
    stats = library.stats
    failed = [] if stats is None else stats.failed
    result: dict[str, Any] = {
        "tiles": len(library),
        "source": library.source.name,
        "match_px": library.match_px,
        "match_height": library.match_height,
        "decoded": 0 if stats is None else stats.decoded,
        "reused": 0 if stats is None else stats.reused,
        "removed": 0 if stats is None else stats.removed,
        "seconds": 0.0 if stats is None else round(stats.seconds, 3),
        "skipped": [{"id": source_id, "reason": reason}
                    for source_id, reason in failed[:SKIPPED_LISTED]],
        "skipped_count": len(failed),
    }
    if options.dedupe is not None:
        events.stage("finding near-duplicates")
        groups = library.duplicate_groups(options.dedupe)
        result["duplicates"] = sum(len(group) - 1 for group in groups)
    elif options.identical_photos == "drop":
        events.stage("finding identical photos")
        leaders = library.identical_leaders()
        result["identical"] = sum(leader != position
                                  for position, leader in enumerate(leaders.tolist()))
    return result


#: The jobs, by the ``kind`` of their spec.
JOBS: dict[str, Callable[[dict[str, Any], EventWriter], dict[str, Any]]] = {
    "make": run_make,
    "render": run_render,
    "index": run_index,
}


def failure_message(error: MosaicistError | str, spec: dict[str, Any]) -> str:
    """The sentence of a job that failed, for the page.

    Said in the page's words, as the studio says its own refusals
    (:func:`~mosaicist.studio._words.page_message`: settings and choices by
    their labels), and the stored target, whose path means nothing to the
    person (a digest in the studio's cache), by its name (``spec["target_name"]``).
    """
    from ._words import page_message

    text = page_message(error) if isinstance(error, MosaicistError) else str(error)
    target, name = spec.get("target"), spec.get("target_name")
    if isinstance(target, str) and target and isinstance(name, str) and name:
        text = text.replace(target, name)
    return text


def _crash_sentence(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"unexpected {type(error).__name__}{': ' + text[:200] if text else ''}"


def main(argv: list[str] | None = None) -> int:
    """Run the job whose spec is on stdin, reporting to the descriptor ``argv[1]``."""
    from ..progress import progress_listener
    from ..sources.folder import _watch_parent

    argv = sys.argv if argv is None else argv
    descriptor, parent = int(argv[1]), int(argv[2])
    # Die with the studio (and ignore its Ctrl+C: the studio cancels its jobs itself).
    _watch_parent(parent)
    events = EventWriter(descriptor)
    spec: dict[str, Any] = {}
    try:
        spec = json.loads(sys.stdin.read())
        job = JOBS[spec["kind"]]
        with progress_listener(events.progress):
            data = job(spec, events)
    except MosaicistError as error:
        events.send("failed", message=failure_message(error, spec))
        return 1
    except MemoryError:
        events.send("failed", message="out of memory; try fewer cells, smaller tiles or a "
                                      "smaller library")
        return 1
    except OSError as error:
        where = f"{error.filename}: " if getattr(error, "filename", None) else ""
        events.send("failed", message=failure_message(f"{where}{error.strerror or error}", spec))
        return 1
    except Exception as error:  # noqa: BLE001 - one sentence for the page, the trace for the log
        traceback.print_exc()
        events.send("failed", message=_crash_sentence(error))
        return 1
    events.send("done", data=data)
    return 0


def clear_folder(folder: Path) -> None:
    """Remove everything inside a run's folder (the files of a run that did not finish)."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            try:
                entry.unlink()
            except OSError:
                pass


if __name__ == "__main__":
    sys.exit(main())
