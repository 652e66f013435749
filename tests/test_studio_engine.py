"""The studio's engine: history, jobs in child processes, preview, uploads, command line.

No HTTP here (see test_studio_api.py): the engine's Python interface, with
small generated tile folders and targets. Jobs run real child processes;
a ``sitecustomize`` put on their PYTHONPATH makes a job hang (and start a
child of its own) where a test needs one to cancel or kill.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shlex
import signal
import struct
import subprocess
import sys
import textwrap
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import (
    BAD_FILES,
    bomb_png,
    gradient,
    make_colour_folder,
    make_odd_folder,
    noisy_target,
)
from PIL import Image
from test_pipeline import smooth_folder

from mosaicist import make_mosaic
from mosaicist.cli import _given as cli_given
from mosaicist.cli import main as cli_main
from mosaicist.cli import make as make_command
from mosaicist.errors import MosaicistError, OptionError
from mosaicist.library import TileLibrary
from mosaicist.options import MosaicOptions, settings
from mosaicist.progress import progress_bar, progress_listener
from mosaicist.studio import _uploads
from mosaicist.studio._command import command_line, given_settings, render_command_line
from mosaicist.studio._examples import example_path, examples
from mosaicist.studio._history import INTERRUPTED_MESSAGE, History
from mosaicist.studio._jobs import Jobs
from mosaicist.studio._preview import Previewer
from mosaicist.studio._uploads import accept_target

#: Settings of the tiny mosaics: a 64 x 48 target in 8 px cells (6 x 8), 8 px tiles.
TINY = {"cell_px": 8, "tile_px": 8}
WAIT = 60.0
SETTING_NAMES = {declared.name for declared in settings()}
#: Settings whose flag can say "none" (no value, over a preset's).
SETTING_FLAGS = {declared.name: declared.optional and declared.flag is not None
                 for declared in settings()}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("studio")
    rng = np.random.default_rng(3)
    target = root / "target.png"
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(target)
    tiles = make_colour_folder(root / "tiles", 60, size=16)
    return root, target, tiles


@pytest.fixture
def studio(tmp_path):
    cache = tmp_path / "cache"
    history = History(cache)
    jobs = Jobs(history, cache)
    yield history, jobs, cache
    jobs.shutdown()


def _slow_hook(tmp_path: Path, monkeypatch) -> Path:
    """Make every job started from now on hang in its first step, after starting a child."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(textwrap.dedent('''
        import os, subprocess, time
        if os.environ.get("MOSAICIST_TEST_HANG"):
            from mosaicist.library import TileLibrary

            def hang(cls, *args, **kwargs):
                child = subprocess.Popen(["sleep", "300"])
                with open(os.environ["MOSAICIST_TEST_HANG"], "a") as record:
                    record.write(f"{os.getpid()} {child.pid}\\n")
                time.sleep(300)

            TileLibrary.open = classmethod(hang)
    '''))
    record = tmp_path / "pids.txt"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(hooks), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("MOSAICIST_TEST_HANG", str(record))
    return record


def _wait_for(condition, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (no such process, or a zombie awaiting its reaper)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def _final(jobs: Jobs, job_id: str):
    events = list(jobs.subscribe(job_id))
    return events[-1], events


def _make_run(history: History, jobs: Jobs, target: Path, tiles: Path, options: MosaicOptions):
    run = history.create(target_name=target.name, tiles=str(tiles), settings=options.to_json(),
                         command=command_line(str(target), str(tiles), options))
    jobs.start_make(run, target, str(tiles), options)
    return run


# -- history --------------------------------------------------------------------------------


def test_history_records_runs_newest_first_and_deletes_them(tmp_path):
    history = History(tmp_path)
    first = history.create(target_name="a", tiles="cifar10", settings={"tint": 1},
                           command="mosaicist make a.jpg")
    second = history.create(target_name="b", tiles="/photos", settings={}, command="c")
    assert first.status == "queued" and first.folder.is_dir()
    assert [run.id for run in history.runs()] == [second.id, first.id]
    assert history.get("../../etc") is None and history.get(first.id).settings == {"tint": 1}
    with pytest.raises(MosaicistError, match="cancel it"):
        history.delete(first.id)  # still queued
    done = history.update(first.id, status="done", report={"tiles": 3},
                          outputs={"png": "mosaic.png"})
    assert done.report == {"tiles": 3} and done.output_path("png") == first.folder / "mosaic.png"
    assert history.transition(first.id, ("running",), status="failed") is None
    assert history.get(first.id).status == "done"
    with pytest.raises(ValueError):
        history.update(first.id, folder="/tmp")
    with pytest.raises(KeyError):
        history.update("0" * 32, status="done")
    assert history.delete(first.id) and not first.folder.exists()
    assert not history.delete(first.id)
    # A folder without a row (an interrupted delete) goes when the history is opened.
    orphan = history.runs_folder / ("f" * 32)
    orphan.mkdir()
    os.utime(orphan, (time.time() - 3600, time.time() - 3600))
    History(tmp_path)
    assert not orphan.exists() and second.folder.is_dir()


def test_history_records_each_runs_target_and_reads_older_rows_from_their_command(tmp_path):
    # A history made before runs recorded their target: the column is added when opened,
    # and its rows' targets are read from the stored paths their command lines name.
    import sqlite3

    folder = tmp_path / "studio"
    folder.mkdir()
    old, named = "a" * 32, "b" * 32
    with sqlite3.connect(folder / "history.sqlite") as db:
        db.execute("CREATE TABLE runs (id TEXT PRIMARY KEY, created REAL NOT NULL, status TEXT "
                   "NOT NULL, target_name TEXT NOT NULL, tiles TEXT NOT NULL, settings TEXT NOT "
                   "NULL, command TEXT NOT NULL, report TEXT, error TEXT, outputs TEXT NOT NULL)")
        db.execute("INSERT INTO runs VALUES (?, 1, 'done', 'n', 'cifar10', '{}', ?, NULL, NULL, "
                   "'{}')", ("1" * 32, f"mosaicist make /c/studio/targets/{old}.png -o x"))
        db.execute("INSERT INTO runs VALUES (?, 2, 'done', 'n', 'cifar10', '{}', 'mosaicist "
                   "render p.json', ?, NULL, '{}')",
                   ("2" * 32, json.dumps({"target": f"/c/studio/targets/{named}.jpg"})))
        db.execute("INSERT INTO runs VALUES (?, 3, 'done', 'n', 'cifar10', '{}', ?, NULL, NULL, "
                   "'{}')", ("3" * 32, f"mosaicist make /c/other/{'c' * 32}.png"))
    db.close()
    history = History(tmp_path)
    made = history.create(target_name="t", tiles="cifar10", settings={}, command="c",
                          target="d" * 32)
    assert history.get(made.id).target == "d" * 32 and history.get("1" * 32).target is None
    assert history.targets_in_use() == {old, named, "d" * 32}
    with pytest.raises(ValueError):
        history.create(target_name="t", tiles="x", settings={}, command="c", target="../x")


_HAMMER = textwrap.dedent('''
    import sys
    from mosaicist.studio._history import History
    history = History(sys.argv[1])
    while True:
        run = history.create(target_name="t", tiles="x", settings={"n": 1}, command="c")
        history.update(run.id, status="running")
        history.update(run.id, status="done", report={"tiles": 7, "text": "x" * 5000},
                       outputs={"png": "mosaic.png", "report": "report.json"})
        print(run.id, flush=True)
''')


def test_history_survives_kill_9_at_random_moments(tmp_path):
    """A writer killed mid-change never leaves a half-made row; finished runs are all there."""
    rng = np.random.default_rng(7)
    finished: set[str] = set()
    for _ in range(4):
        writer = subprocess.Popen([sys.executable, "-c", _HAMMER, str(tmp_path)],
                                  stdout=subprocess.PIPE, text=True)
        assert writer.stdout is not None
        first = writer.stdout.readline().strip()  # it is writing
        finished.add(first)
        time.sleep(float(rng.uniform(0.05, 0.4)))
        writer.send_signal(signal.SIGKILL)
        output, _ = writer.communicate()
        finished.update(line for line in output.split() if line)
    history = History(tmp_path)
    runs = {run.id: run for run in history.runs()}
    assert finished <= set(runs)  # every run that finished is kept
    for run in runs.values():
        # A killed writer's unfinished runs: marked by the next one to look, its maker gone.
        assert run.status in ("queued", "running", "done", "interrupted")
        if run.status == "done":
            assert run.report == {"tiles": 7, "text": "x" * 5000}
            assert run.outputs == {"png": "mosaic.png", "report": "report.json"}
        if run.status == "interrupted":
            assert run.error == INTERRUPTED_MESSAGE
            # Emptied; or never made (killed between its row and its folder).
            folder = history.folder(run.id)
            assert not folder.exists() or not any(folder.iterdir())
    cut = [run.id for run in runs.values() if run.status != "done"]
    assert cut
    # What a killed run had written (an output finished before the next, a temporary)
    # stays unreachable unless the folder is emptied, as a cancelled run's is.
    with history._connect() as connection:  # as the last writer left its last run
        connection.execute("UPDATE runs SET status = 'running' WHERE id = ?", (cut[0],))
    for run_id in cut:
        folder = history.folder(run_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "mosaic.png").write_bytes(b"finished before the kill")
        (folder / ".mosaic.dzi.999999999-abcdefgh.part").mkdir()
    assert history.mark_interrupted() >= 1
    assert not any(history.folder(cut[0]).iterdir())
    # While this studio owns the history, another one leaves its runs alone.
    mine = history.create(target_name="t", tiles="x", settings={}, command="c")
    other = subprocess.run([sys.executable, "-c", textwrap.dedent('''
        import sys
        from mosaicist.studio._history import History
        print(History(sys.argv[1]).mark_interrupted())
    '''), str(tmp_path)], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == "0" and history.get(mine.id).status == "queued"
    for run_id in cut:
        run = history.get(run_id)
        assert run.status == "interrupted" and run.error == INTERRUPTED_MESSAGE
    assert history.mark_interrupted() == 1  # its owner may mark again (mine)


# -- jobs -----------------------------------------------------------------------------------


def test_make_job_outputs_equal_mosaicist_make(workspace, studio, tmp_path):
    root, target, tiles = workspace
    history, jobs, cache = studio
    options = MosaicOptions(**TINY, tint=0.5, augment="flips")
    run = _make_run(history, jobs, target, tiles, options)
    final, events = _final(jobs, run.id)
    assert final.kind == "done", final.message
    stages = {event.stage for event in events if event.kind == "progress"}
    assert {"indexing", "writing mosaic.png", "writing Deep Zoom tiles"} <= stages
    done = history.get(run.id)
    assert done.status == "done" and done.error is None
    assert set(done.outputs) == {"png", "jpeg", "tiff", "viewer", "deepzoom_zip",
                                 "placements_csv", "placements_json", "report", "thumbnail"}
    for name in done.outputs.values():
        assert (done.folder / name).is_file()
    assert not [path for path in done.folder.rglob("*") if ".part" in path.name]

    # The same settings from the terminal, as the command the studio shows.
    words = done.command.split()
    assert words[:3] == ["mosaicist", "make", str(target)]
    out = tmp_path / "cli"
    out.mkdir()
    result = CliRunner().invoke(cli_main, [
        *words[1:-2], "-o", str(out / "mosaic.png"), "--report", str(out / "report.json"),
        "--placements", str(out / "placements.csv"), "--cache-dir", str(cache), "--quiet"])
    assert result.exit_code == 0, result.output
    assert (out / "mosaic.png").read_bytes() == (done.folder / "mosaic.png").read_bytes()
    assert (out / "placements.csv").read_bytes() == (done.folder / "placements.csv").read_bytes()
    report = json.loads((out / "report.json").read_text())
    assert done.report["settings"] == report["settings"]
    assert done.report["objective"] == report["objective"]
    assert done.report["metrics"] == report["metrics"]
    with Image.open(done.folder / "thumbnail.jpg") as thumbnail:
        assert max(thumbnail.size) <= 320

    # Drawn again from its placements at twice the tile size.
    again = history.create(target_name=done.target_name, tiles=done.tiles,
                           settings=done.settings, command=render_command_line(
                               "placements.json", 16))
    jobs.start_render(again, done, 16)
    final, _ = _final(jobs, again.id)
    assert final.kind == "done", final.message
    rendered = history.get(again.id)
    with Image.open(rendered.folder / "mosaic.png") as bigger, \
            Image.open(done.folder / "mosaic.png") as original:
        assert bigger.size == (original.width * 2, original.height * 2)
    assert rendered.report["tile_px"] == 16 and rendered.report["rendered_from"] == run.id
    assert (rendered.folder / "mosaic.html").is_file()


def test_index_job_reports_progress_and_skipped_files(studio, tmp_path):
    history, jobs, _ = studio
    folder = make_odd_folder(tmp_path / "odd")
    job_id = jobs.start_index(str(folder), MosaicOptions(tile_px=16))
    # The same index asked for again while it runs is the same job.
    assert jobs.start_index(str(folder), MosaicOptions(tile_px=16)) == job_id
    final, events = _final(jobs, job_id)
    assert final.kind == "done", final.message
    assert any(event.kind == "progress" and event.stage == "indexing" and event.total
               for event in events)
    status = jobs.status(job_id)
    skipped = {item["id"]: item["reason"] for item in status["skipped"]}
    assert set(skipped) == set(BAD_FILES) and status["skipped_count"] == len(BAD_FILES)
    for name, word in BAD_FILES.items():
        assert word in skipped[name]
    assert final.data["result"]["tiles"] > 10
    # The index is the one make opens.
    options = MosaicOptions(tile_px=16)
    library = TileLibrary.open(folder, options.match_px, cache_dir=jobs.cache_dir, update=False,
                               crop=options.crop)
    assert len(library) == final.data["result"]["tiles"]
    with pytest.raises(KeyError):
        jobs.status("nope")


def test_failed_job_says_why_in_one_sentence(workspace, studio):
    root, target, _ = workspace
    history, jobs, _ = studio
    run = _make_run(history, jobs, target, root / "missing-folder", MosaicOptions(**TINY))
    final, _ = _final(jobs, run.id)
    assert final.kind == "failed"
    failed = history.get(run.id)
    assert failed.status == "failed" and "missing-folder" in failed.error
    assert "Traceback" not in failed.error and "\n" not in failed.error
    assert list(failed.folder.iterdir()) == []


def test_a_failed_job_names_settings_and_the_target_as_the_page_does(workspace, studio,
                                                                      tmp_path):
    # The page labels its settings and knows the target by its uploaded name; a failed
    # run said "min_uses" and the target's path in the studio's cache.
    root, target, tiles = workspace
    history, jobs, _ = studio
    options = MosaicOptions(**TINY, min_uses=2)  # 60 tiles twice need 120 of the 48 cells
    run = _make_run(history, jobs, target, tiles, options)
    assert _final(jobs, run.id)[0].kind == "failed"
    error = history.get(run.id).error
    assert error.startswith("\u201cleast uses of every photo\u201d 2 needs 120 cells"), error
    assert "min_uses" not in error and "\u201ccell size in the picture\u201d" in error
    stored = tmp_path / "studio-targets" / ("0" * 32 + ".png")  # gone before the job ran
    run = history.create(target_name="holiday.jpg", tiles=str(tiles),
                         settings=MosaicOptions(**TINY).to_json(), command="mosaicist make")
    jobs.start_make(run, stored, str(tiles), MosaicOptions(**TINY))
    assert _final(jobs, run.id)[0].kind == "failed"
    error = history.get(run.id).error
    assert error.startswith("holiday.jpg: ") and str(stored.parent) not in error, error


def test_cancel_kills_the_job_and_its_children(workspace, studio, tmp_path, monkeypatch):
    root, target, tiles = workspace
    history, jobs, _ = studio
    record = _slow_hook(tmp_path, monkeypatch)
    run = _make_run(history, jobs, target, tiles, MosaicOptions(**TINY))
    queued = _make_run(history, jobs, target, tiles, MosaicOptions(**TINY))  # waits its turn
    _wait_for(lambda: record.exists() and record.read_text().strip())
    worker, child = map(int, record.read_text().split())
    assert history.get(run.id).status == "running" and history.get(queued.id).status == "queued"
    subscription = jobs.subscribe(run.id)
    first = subscription.get(timeout=5)
    assert first.kind == "progress" and first.data == {"job": run.id, "state": "running",
                                                       "run": run.id}
    while subscription.get(timeout=0.3) is not None:
        pass  # the job is quiet now: it hangs
    assert asyncio.run(subscription.aget(timeout=0.1)) is None and not subscription.ended
    assert jobs.cancel(queued.id)
    assert history.get(queued.id).status == "cancelled"
    started = time.monotonic()
    assert jobs.cancel(run.id)
    assert time.monotonic() - started < 15
    assert _gone(worker) and _gone(child)
    assert history.get(run.id).status == "cancelled"
    assert [event.kind for event in subscription][-1] == "cancelled"
    assert not jobs.cancel(run.id)  # ended already
    assert history.delete(run.id)


def test_killed_worker_marks_its_run_failed(workspace, studio, tmp_path, monkeypatch):
    root, target, tiles = workspace
    history, jobs, _ = studio
    record = _slow_hook(tmp_path, monkeypatch)
    run = _make_run(history, jobs, target, tiles, MosaicOptions(**TINY))
    _wait_for(lambda: record.exists() and record.read_text().strip())
    worker, child = map(int, record.read_text().split())
    os.kill(worker, signal.SIGKILL)
    final, _ = _final(jobs, run.id)
    assert final.kind == "failed"
    failed = history.get(run.id)
    assert failed.status == "failed"
    assert failed.error.startswith("The job's process was killed by SIGKILL")
    assert failed.error.count(".") == 1 and failed.error.endswith(".")
    _wait_for(lambda: _gone(child), 10)


def test_shutdown_leaves_no_process_and_late_subscribers_get_the_end(
        workspace, tmp_path, monkeypatch):
    root, target, tiles = workspace
    cache = tmp_path / "cache"
    history = History(cache)
    jobs = Jobs(history, cache)
    record = _slow_hook(tmp_path, monkeypatch)
    run = _make_run(history, jobs, target, tiles, MosaicOptions(**TINY))
    _wait_for(lambda: record.exists() and record.read_text().strip())
    worker, child = map(int, record.read_text().split())
    jobs.shutdown()
    assert _gone(worker) and _gone(child)
    assert history.get(run.id).status == "cancelled"
    with pytest.raises(MosaicistError, match="shutting down"):
        jobs.start_index(str(tiles), MosaicOptions())

    async def follow():
        return [event async for event in jobs.subscribe(run.id)]

    events = asyncio.run(follow())
    assert [event.kind for event in events] == ["progress", "cancelled"]
    assert events[0].data["state"] == "cancelled" and events[-1].data["run"] == run.id


def test_progress_listener_follows_every_bar_drawn_or_not():
    seen: list[tuple] = []
    with progress_listener(lambda *report: seen.append(report)):
        with progress_bar(3, "decoding", enabled=False) as bar:
            bar.update(2)
            bar.update()
        with progress_bar(None, "solving") as bar:
            bar.update()
    assert seen == [("decoding", 0, 3), ("decoding", 2, 3), ("decoding", 3, 3),
                    ("solving", 0, None), ("solving", 1, None)]
    with progress_bar(1, "after", enabled=False) as bar:
        bar.update()
    assert len(seen) == 5


# -- the command line -----------------------------------------------------------------------


@pytest.mark.parametrize("settings", [
    {},
    {"preset": "seed"},
    {"preset": "seed", "max_uses": None, "tint": 0.35},
    {"max_uses": None, "min_spacing": 2},
    {"tint": 0.3333333333333333, "contrast": 0.25, "chroma": 0.5, "metric": "oklab"},
    {"max_uses": 2, "min_spacing": 3, "augment": "all", "dedupe": 5},
    {"identical_photos": "keep", "max_uses": 3},
    {"aspect": "3:2", "print_size": "30x20cm", "dpi": 150, "crop": "centre"},
    {"cells": 1500, "jpeg_quality": 80, "dzi_format": "png", "overlay": 0.1},
    {"tint_max": 0.8, "min_uses": 1, "limit": 500, "max_target_pixels": 1000000},
])
def test_command_line_reads_back_as_the_same_options(settings):
    options = MosaicOptions(**settings)
    line = command_line("my photos/target (1).jpg", "/home/u/My Photos", options)
    words = shlex.split(line)
    assert words[:3] == ["mosaicist", "make", "my photos/target (1).jpg"]
    context = make_command.make_context("make", words[2:])
    given = {name: value for name, value in cli_given(context.params).items()
             if name in SETTING_NAMES}
    assert MosaicOptions(**given) == options
    assert given == {name: value for name, value in given_settings(options).items()
                     if value is not None or SETTING_FLAGS[name]}
    assert context.params["tiles"] == "/home/u/My Photos"


def test_command_line_refuses_what_the_cli_cannot_say():
    # "No limit" over the default preset's is `--max-uses none`.
    assert "--max-uses none" in command_line("a.jpg", "cifar10", MosaicOptions(max_uses=None))
    with pytest.raises(OptionError, match="compute_metrics"):
        command_line("a.jpg", "cifar10", MosaicOptions(compute_metrics=False))
    assert command_line("-x.jpg", "cifar10", MosaicOptions()).split()[2] == "./-x.jpg"


# -- uploads --------------------------------------------------------------------------------


def _encoded(picture: Image.Image, kind: str, **options) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, kind, **options)
    return buffer.getvalue()


def test_upload_is_decoded_turned_upright_and_stripped(tmp_path):
    picture = Image.fromarray(noisy_target())  # 56 x 40
    exif = Image.Exif()
    exif[0x0112] = 6  # turned a quarter
    exif[0x010F] = "SecretCam"
    data = _encoded(picture, "JPEG", quality=95, exif=exif)
    path, info = accept_target(data, "../../home/me/holiday.JPG", tmp_path)
    assert path.parent == tmp_path and path.suffix == ".jpg"
    assert info["name"] == "holiday.JPG" and info["format"] == "JPEG"
    assert (info["width"], info["height"]) == (40, 56) and info["id"] == path.stem
    with Image.open(path) as stored:
        assert stored.size == (40, 56)
        assert not stored.getexif() and "icc_profile" not in stored.info
    assert b"SecretCam" not in path.read_bytes()
    # The same picture again is the same file; a PNG with text chunks comes back clean.
    assert accept_target(data, "again.jpg", tmp_path)[0] == path
    from PIL import PngImagePlugin

    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "private")
    png, png_info = accept_target(_encoded(picture.convert("RGBA"), "PNG", pnginfo=text),
                                  "x.png", tmp_path)
    assert png.suffix == ".png" and png_info["format"] == "PNG"
    assert b"private" not in png.read_bytes()


@pytest.mark.parametrize(("data", "words"), [
    (b"", "empty"),
    (b"not a picture at all\n" * 10, "not a picture"),
    (b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n", "not a picture"),
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not a picture"),
    (b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', "not a picture"),
    (bomb_png(60000, 60000), "over the limit"),
    (_encoded(Image.fromarray(noisy_target()), "JPEG")[:300], "cannot be read"),
    (_encoded(Image.new("RGB", (8, 8)), "PNG"), "at least 16 pixels"),
])
def test_upload_refuses_hostile_files_in_one_sentence(tmp_path, data, words):
    with pytest.raises(MosaicistError) as error:
        accept_target(data, "evil.jpg", tmp_path)
    message = str(error.value)
    assert words in message and message.startswith("evil.jpg: ") and "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_upload_refuses_a_file_over_the_byte_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(_uploads, "MAX_UPLOAD_BYTES", 1000)
    data = _encoded(Image.fromarray(noisy_target()), "PNG")
    assert len(data) > 1000
    with pytest.raises(MosaicistError, match="larger than the limit of"):
        accept_target(data, "big.png", tmp_path)


def test_examples_are_small_public_pictures():
    found = examples()
    assert {item["name"] for item in found} >= {"astronaut", "starry-night"}
    for item in found:
        assert item["path"].stat().st_size <= 200_000 and item["licence"]
        with Image.open(item["path"]) as picture:
            assert picture.format == "JPEG"
    assert example_path("astronaut") == found[0]["path"] and example_path("../x") is None


# -- preview --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """A 200-tile library indexed at the default settings and at the seed preset's."""
    root = tmp_path_factory.mktemp("preview")
    tiles = make_colour_folder(root / "tiles", 200, size=16, seed=4)
    for options in (MosaicOptions(), MosaicOptions(preset="seed")):
        TileLibrary.open(tiles, options.match_px, cache_dir=root / "cache", crop=options.crop)
    target = root / "target.jpg"
    Image.open(Path(__file__).parent / "data" / "astronaut.jpg").save(target)
    return root / "cache", tiles, target


def _picture(jpeg: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(jpeg)) as picture:
        assert picture.format == "JPEG"
        return np.asarray(picture.convert("RGB"), np.float64)


def test_preview_follows_the_settings(indexed):
    cache, tiles, target = indexed
    previewer = Previewer(cache)
    jpeg, info = previewer.preview(target, str(tiles), MosaicOptions(), cells=150)
    assert info["approximate"] and "greedy" in info["method"]
    assert abs(info["cells"] - 150) <= 20 and info["cells"] == info["cols"] * info["rows"]
    assert info["grid"] == {"cols": 32, "rows": 32}  # the mosaic's own: 512 px / 16 px cells
    assert info["distinct_tiles"] == info["cells"] and info["relaxed"] == 0
    assert info["most_uses"] == 1 and info["closest_repeat"] is None
    plain = _picture(jpeg)
    assert plain.shape == (info["height"], info["width"], 3)
    assert info["width"] == info["cols"] * info["tile_px"]

    untinted = _picture(previewer.preview(target, str(tiles), MosaicOptions(tint=0.0),
                                          cells=150)[0])
    assert np.abs(untinted - plain).mean() > 5
    # Tinted, the preview is closer to the target's colours.
    with Image.open(target) as picture:
        small = np.asarray(picture.convert("RGB").resize(plain.shape[1::-1], Image.BOX),
                           np.float64)
    assert np.abs(plain - small).mean() < np.abs(untinted - small).mean()

    seed_jpeg, seed = previewer.preview(target, str(tiles), MosaicOptions(preset="seed"),
                                        cells=150)
    assert seed["method"].endswith("nearest candidate") and seed["distinct_tiles"] < 150
    twice = previewer.preview(target, str(tiles),
                              MosaicOptions(max_uses=2, min_spacing=3, cells=300), cells=150)[1]
    assert twice["max_uses"] == 2 and twice["min_spacing"] == 3 and twice["relaxed"] == 0
    assert twice["distinct_tiles"] >= twice["cells"] / 2 and twice["most_uses"] <= 2
    assert twice["closest_repeat"] is None or twice["closest_repeat"] >= 3
    previewer.warm_up(str(tiles), MosaicOptions())  # every metric described
    lab = previewer.preview(target, str(tiles), MosaicOptions(metric="lab"), cells=150)[0]
    assert np.abs(_picture(lab) - plain).mean() > 1
    overlay = previewer.preview(target, str(tiles), MosaicOptions(overlay=0.9), cells=150)[0]
    assert np.abs(_picture(overlay) - small).mean() < np.abs(plain - small).mean()
    wide = previewer.preview(target, str(tiles), MosaicOptions(preset="seed", cells=40),
                             cells=150)[1]
    assert wide["cells"] == wide["grid"]["cols"] * wide["grid"]["rows"] <= 60


@pytest.fixture(scope="module")
def gradients(tmp_path_factory):
    """60 smooth gradient tiles (their spread survives the preview's reduction), indexed."""
    root = tmp_path_factory.mktemp("gradients")
    tiles = smooth_folder(root / "tiles", count=60, size=32, seed=3)
    TileLibrary.open(tiles, MosaicOptions().match_px, cache_dir=root / "cache",
                     crop=MosaicOptions().crop)
    return root, tiles


@pytest.mark.parametrize("max_uses", [1, None], ids=["assigned", "re-ranked"])
@pytest.mark.parametrize("level", [255, 0])
def test_preview_holds_the_tint_back_as_make_does(gradients, preview_picks, level, max_uses):
    # The default look (tint 1, contrast 0.5) on a flat white or black target: make's
    # tint stops short of the end of the range, so each photo keeps visible detail; the
    # preview ranks and draws the same way (it used to move tiles to the very end).
    root, tiles = gradients
    target = root / f"flat{level}.png"
    Image.fromarray(np.full((64, 64, 3), level, np.uint8)).save(target)
    options = MosaicOptions() if max_uses else MosaicOptions(max_uses=None, min_spacing=1)
    assert options.tint == 1.0 and options.contrast == 0.5
    jpeg, info = Previewer(root / "cache").preview(target, str(tiles), options, cells=100)
    mosaic = make_mosaic(target, tiles, options, cache_dir=root / "cache")
    # At the mosaic's own size, the same tiles (placed elsewhere by the greedy assignment).
    assert (info["cols"], info["rows"], info["tile_px"]) == (4, 4, 32)
    preview, made = preview_picks["tile"], mosaic.placements.tile
    assert sorted(preview.tolist()) == sorted(made.tolist())
    if max_uses is None:
        assert np.array_equal(preview, made)

    def by_tile(picture, tile):
        cells = picture.reshape(4, 32, 4, 32, 3).transpose(0, 2, 1, 3, 4).reshape(16, 32, 32, 3)
        return cells[np.argsort(tile, kind="stable")]

    drawn = by_tile(_picture(jpeg), preview)
    expected = by_tile(mosaic.image.astype(np.float64), made)
    # Each tile drawn as make draws it, up to the JPEG and the reduced statistics.
    assert np.abs(drawn - expected).mean() < 1.5
    assert np.abs(drawn.mean(axis=(1, 2, 3)) - expected.mean(axis=(1, 2, 3))).max() < 3
    assert drawn.std(axis=(1, 2)).mean() > 0.8 * expected.std(axis=(1, 2)).mean()


def test_preview_says_what_is_wrong(indexed, tmp_path):
    cache, tiles, target = indexed
    previewer = Previewer(cache)
    unindexed = make_colour_folder(tmp_path / "new", 5)
    with pytest.raises(MosaicistError, match="not indexed yet"):
        previewer.preview(target, str(unindexed), MosaicOptions())
    with pytest.raises(MosaicistError, match="not indexed yet"):
        previewer.warm_up(str(unindexed), MosaicOptions())
    # A folder whose every file failed to decode said "not indexed yet" after indexing.
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("a.jpg", "b.png"):
        (broken / name).write_bytes(b"not a picture")
    with pytest.raises(MosaicistError, match="no usable tile"):
        TileLibrary.open(str(broken), 32, cache_dir=cache, quiet=True)  # indexed: all failed
    with pytest.raises(MosaicistError, match="or none of them could be read"):
        previewer.preview(target, str(broken), MosaicOptions())
    with pytest.raises(OptionError, match="max_uses"):
        previewer.preview(target, str(tiles), MosaicOptions(max_uses=1, cells=1000))
    with pytest.raises(MosaicistError, match="not found"):
        previewer.preview(tmp_path / "nothing.jpg", str(tiles), MosaicOptions())
    with pytest.raises(OptionError, match="preview cells"):
        previewer.preview(target, str(tiles), MosaicOptions(), cells=10**6)


def test_preview_checks_what_make_checks_first(indexed):
    # A preview was drawn for settings the run then failed on: every photo at least
    # six times needs 1,200 of the 1,024 cells; 16 px cells do not halve six times.
    cache, tiles, target = indexed
    previewer = Previewer(cache)
    with pytest.raises(OptionError, match="min_uses 6 needs 1,200 cells"):
        previewer.preview(target, str(tiles), MosaicOptions(min_uses=6))
    with pytest.raises(OptionError, match="adaptive 6 halves cells 6 times"):
        previewer.preview(target, str(tiles), MosaicOptions(adaptive=6))
    assert previewer.preview(target, str(tiles), MosaicOptions(min_uses=5))[1]["cells"]


def test_preview_of_a_strip_of_a_target(tmp_path):
    # A 16 px wide strip was drawn 16 px a cell over 4,472 rows: past JPEG's 65,500
    # rows (a 500 of the studio), and more than twice the cells asked for. A wide strip
    # with few tiles left cells without a candidate, and numpy warned of inf - inf.
    tiles = make_colour_folder(tmp_path / "tiles", 30, size=16, seed=4)
    options = MosaicOptions(cell_px=8, tile_px=16)
    TileLibrary.open(tiles, options.match_px, cache_dir=tmp_path / "cache", crop=options.crop)
    previewer = Previewer(tmp_path / "cache")
    tall, wide = tmp_path / "tall.png", tmp_path / "wide.png"
    Image.fromarray(gradient(16, 160_000)).save(tall)
    Image.fromarray(gradient(4000, 16)).save(wide)
    jpeg, info = previewer.preview(tall, str(tiles), options, cells=2000)
    assert info["grid"] == {"cols": 2, "rows": 20_000}
    assert info["cols"] == 1 and info["rows"] <= 2000
    assert _picture(jpeg).shape == (info["height"], info["width"], 3)
    assert info["height"] <= 2 * 2000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jpeg, info = previewer.preview(wide, str(tiles), options.replace(cell_px=4),
                                       cells=2000)
    assert info["cells"] <= 1.5 * 2000 and info["width"] <= 2 * 2000


def test_an_upload_is_named_by_its_pixels_hashed_a_strip_at_a_time(tmp_path, monkeypatch):
    # The digest once went through one copy of the whole picture (300 MB at the limit).
    import hashlib

    from mosaicist.studio import _uploads

    monkeypatch.setattr(_uploads, "HASHED_STRIP_BYTES", 100)  # a few rows a strip
    picture = Image.fromarray(noisy_target())
    path, info = accept_target(_encoded(picture, "PNG"), "p.png", tmp_path)
    whole = hashlib.sha256(f"{picture.width}x{picture.height}:".encode() + picture.tobytes())
    assert info["id"] == whole.hexdigest()[:32] == path.stem


def _hand_png(width, height, colour, bits, interlace, raw):
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, bits, colour, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def test_an_upload_whose_png_data_end_early_is_refused():
    # A complete zlib stream holding fewer rows than the header declares: Pillow decodes
    # it without a word, the missing rows black (a 9000 x 9000 picture of one row was
    # accepted as an 81-megapixel target).
    from mosaicist.studio._uploads import decode_upload

    short = _hand_png(300, 300, 2, 8, 0, b"\x00" + bytes(900))
    with pytest.raises(MosaicistError, match="s.png: .*end before its last row"):
        decode_upload(short, "s.png")
    # Whole: grey, RGB, 16-bit RGBA and an interlaced (Adam7) picture of 2-bit grey.
    rng = np.random.default_rng(2)
    for width, height, colour, bits, interlace, row_bytes in (
            (7, 5, 0, 8, 0, [7] * 5), (7, 5, 2, 8, 0, [21] * 5), (3, 4, 6, 16, 0, [24] * 4)):
        raw = b"".join(b"\x00" + rng.integers(0, 256, size, np.uint8).tobytes()
                       for size in row_bytes)
        picture, _ = decode_upload(_hand_png(width, height, colour, bits, interlace, raw), "w.png")
        assert picture.size == (width, height)
        # Cut inside a row, Pillow may see it first: refused either way.
        with pytest.raises(MosaicistError, match="w.png: the picture cannot be read"):
            decode_upload(_hand_png(width, height, colour, bits, interlace, raw[:-1]), "w.png")
    # Adam7 passes of a 10 x 9 picture at 2 bits a pixel: (columns, rows) of each pass.
    passes = [(2, 2), (1, 2), (3, 1), (2, 3), (5, 2), (5, 5), (10, 4)]
    raw = b"".join(b"\x00" + bytes((columns * 2 + 7) // 8)
                   for columns, rows in passes for _ in range(rows))
    picture, _ = decode_upload(_hand_png(10, 9, 0, 2, 1, raw), "i.png")
    assert picture.size == (10, 9)
    with pytest.raises(MosaicistError, match="i.png: the picture cannot be read"):
        decode_upload(_hand_png(10, 9, 0, 2, 1, raw[:-2]), "i.png")


def test_preview_draws_chroma_as_make_does(gradients):
    # A grey target with the chroma transfer: make draws its tiles grey, and so must the
    # preview (it drew them in their own colours).
    root, tiles = gradients
    target = root / "grey.png"
    grey = np.repeat(noisy_target().mean(axis=-1, keepdims=True), 3, axis=-1)
    Image.fromarray(grey.astype(np.uint8)).save(target)

    def chroma_of(picture):
        values = np.asarray(picture, np.float64)
        return float(((values - values.mean(axis=-1, keepdims=True)) ** 2).mean())

    left = {}
    for chroma in (0.0, 1.0):
        options = MosaicOptions(max_uses=None, min_spacing=1, tint=1.0, chroma=chroma)
        jpeg, _ = Previewer(root / "cache").preview(target, str(tiles), options, cells=100)
        mosaic = make_mosaic(target, tiles, options, cache_dir=root / "cache")
        left[chroma] = (chroma_of(_picture(jpeg)), chroma_of(mosaic.image))
    (preview_plain, made_plain), (preview_grey, made_grey) = left[0.0], left[1.0]
    assert made_grey < 0.05 * made_plain
    # Up to the JPEG's own colour noise.
    assert preview_grey < 0.1 * preview_plain


@pytest.mark.parametrize("metric", ["seed", "lab", "oklab"])
def test_preview_chroma_of_grey_cells_is_exactly_0_at_any_strength(metric):
    # Summed in floats, grey cells kept ~1e-16 of chroma, which a small strength lifted
    # to most of a tile's colours in the preview (0.16-0.47 at K = 0.05; make gave 0).
    from mosaicist.studio._preview import _chroma_factors

    rng = np.random.default_rng(2)
    grey = np.repeat(rng.integers(0, 256, (6, 8, 8, 1), dtype=np.uint8), 3, axis=-1)
    tiles = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    for strength in (1.0, 0.05, 0.001):
        assert (_chroma_factors(grey, tiles, None, strength, metric) == 0).all()


def test_preview_of_tiles_not_indexed_or_whose_index_was_deleted_makes_no_index(tmp_path):
    # The preview opened the library without require_index: an unindexed folder left an
    # empty index folder behind, and a warm library whose index was deleted was asked
    # its generation, which made an empty manifest or failed (its folder gone).
    import shutil

    cache = tmp_path / "cache"
    target = tmp_path / "target.png"
    Image.fromarray(gradient(64, 64)).save(target)
    previewer = Previewer(cache)
    unindexed = make_colour_folder(tmp_path / "new", 5)
    with pytest.raises(MosaicistError, match="not indexed yet"):
        previewer.preview(target, str(unindexed), MosaicOptions(), cells=16)
    assert not (cache / "indexes").exists() or not any((cache / "indexes").iterdir())
    tiles = make_colour_folder(tmp_path / "tiles", 20, size=16)
    options = MosaicOptions()
    library = TileLibrary.open(tiles, options.match_px, cache_dir=cache, crop=options.crop)
    previewer.preview(target, str(tiles), options, cells=16)  # now warm
    for deleted in ("manifest", "folder"):
        if deleted == "manifest":
            for path in library.directory.glob("manifest.sqlite*"):
                path.unlink()
        else:
            shutil.rmtree(library.directory)
        with pytest.raises(MosaicistError, match="not indexed yet"):
            previewer.preview(target, str(tiles), options, cells=16)
        assert not (library.directory / "manifest.sqlite").exists()
        library = TileLibrary.open(tiles, options.match_px, cache_dir=cache, crop=options.crop)
        previewer.preview(target, str(tiles), options, cells=16)  # indexed again: warm again


def test_a_slow_reader_sees_every_stage_once_coalesced():
    # Progress events coalesce for a slow reader, but only within a stage: a loaded machine
    # lost "writing mosaic.png" to the next stage's progress.
    from mosaicist.studio._jobs import JobEvent, Subscription

    subscription = Subscription()
    for stage, done in (("indexing", 1), ("indexing", 2), ("writing mosaic.png", 1),
                        ("writing mosaic.png", 5), ("writing Deep Zoom tiles", 1)):
        subscription.put(JobEvent("progress", stage, done))
    seen = [subscription.get(timeout=0) for _ in range(3)]
    assert [(event.stage, event.done) for event in seen] == [
        ("indexing", 2), ("writing mosaic.png", 5), ("writing Deep Zoom tiles", 1)]
    assert subscription.get(timeout=0) is None


def test_preview_reads_a_library_again_when_its_last_photo_was_removed(tmp_path):
    # Photos removed from the end of a library are published without a new generation,
    # and the warm preview kept drawing the removed photo (session 35).
    cache = tmp_path / "cache"
    target = tmp_path / "target.png"
    Image.fromarray(gradient(64, 64)).save(target)
    tiles = make_colour_folder(tmp_path / "tiles", 10, size=16)
    options = MosaicOptions(preset="seed")
    TileLibrary.open(tiles, options.match_px, cache_dir=cache, crop=options.crop)
    previewer = Previewer(cache)
    _, info = previewer.preview(target, str(tiles), options, cells=64)
    assert info["tiles"] == 10
    sorted(tiles.iterdir())[-1].unlink()
    again = TileLibrary.open(tiles, options.match_px, cache_dir=cache, crop=options.crop)
    assert len(again) == 9
    _, info = previewer.preview(target, str(tiles), options, cells=64)
    assert info["tiles"] == 9


_ANOTHER_STUDIO = textwrap.dedent('''
    import sys
    from mosaicist.studio._history import History
    history = History(sys.argv[1])
    run = history.create(target_name="t", tiles="x", settings={}, command="c")
    history.update(run.id, status="running")
    (history.folder(run.id) / "mosaic.png").write_bytes(b"being written")
    print(run.id, flush=True)
    sys.stdin.readline()
''')


def test_runs_of_another_live_studio_are_left_alone_and_its_death_is_noticed(tmp_path):
    # Two studios on one cache: the owner, started again, marked the other's running run
    # interrupted and emptied its folder while it was being made; and a run of the other,
    # killed, stayed "running" for good (cancel did nothing, delete was refused).
    other = subprocess.Popen([sys.executable, "-c", _ANOTHER_STUDIO, str(tmp_path)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None
        run_id = other.stdout.readline().strip()
        history = History(tmp_path)
        assert history.mark_interrupted() == 0  # the owner now, the run another's
        assert history.get(run_id).status == "running"
        assert [run.status for run in history.runs()] == ["running"]
        assert (history.folder(run_id) / "mosaic.png").exists()
    finally:
        other.kill()
        other.wait(timeout=60)
    run = history.get(run_id)
    assert run.status == "interrupted" and run.error == INTERRUPTED_MESSAGE
    assert not any(history.folder(run_id).iterdir())
    assert history.delete(run_id) and history.get(run_id) is None
