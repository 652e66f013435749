"""The command line, in-process (CliRunner) and once as ``python -m mosaicist``."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_colour_folder
from PIL import Image

from mosaicist import render
from mosaicist.cli import main

TILE_PX = 8
CELL = 8  # 64x48 target -> 6 rows x 8 cols


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(1)
    target = root / "target.png"
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(target)
    tiles = make_colour_folder(root / "tiles", 30)
    return root, target, tiles


def run(args, cwd=None):
    runner = CliRunner()
    if cwd is None:
        return runner.invoke(main, [str(arg) for arg in args])
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        return runner.invoke(main, [str(arg) for arg in args])
    finally:
        os.chdir(previous)


def make_args(setup, *extra):
    root, target, tiles = setup
    return ["make", target, "--tiles", tiles, "--cell", CELL, "--tile-px", TILE_PX,
            "--cache-dir", root / "cache", *extra]


def assert_one_line_error(result, *words):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mosaicist: error: ")
    for word in words:
        assert word in lines[0], lines[0]


def test_make_writes_output_csv_and_report(setup, tmp_path):
    output = tmp_path / "out.png"
    csv_path = tmp_path / "p.csv"
    report_path = tmp_path / "r.json"
    result = run(make_args(setup, "-o", output, "--placements", csv_path,
                           "--report", report_path))
    assert result.exit_code == 0, result.output
    with Image.open(output) as image:
        assert image.size == (8 * TILE_PX, 6 * TILE_PX)
    with open(csv_path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:4] == ["row", "col", "tile", "distance"]
    assert len(rows) == 1 + 6 * 8
    cells = {(int(row[0]), int(row[1])) for row in rows[1:]}
    assert cells == {(r, c) for r in range(6) for c in range(8)}
    assert all(row[2].startswith("t") and row[2].endswith(".png") for row in rows[1:])
    report = json.loads(report_path.read_text())
    assert report["grid"]["rows"] == 6 and report["grid"]["cols"] == 8
    assert report["tiles"] == 30
    assert report["objective"] == pytest.approx(sum(float(row[3]) for row in rows[1:]))
    assert {"index", "match", "render", "total"} <= set(report["timings"])
    summary = result.stderr.strip().splitlines()
    assert len(summary) == 1 and "8x6 cells" in summary[0] and "30 tiles" in summary[0]
    assert result.stdout == ""
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.png", "p.csv", "r.json"]


def test_default_output_name_in_cwd(setup, tmp_path):
    result = run(make_args(setup), cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "target-mosaic.png").is_file()


def test_quiet_prints_nothing(setup, tmp_path):
    result = run(make_args(setup, "-o", tmp_path / "q.png", "--quiet"))
    assert result.exit_code == 0
    assert result.output == ""


def test_quiet_make_measures_only_for_a_report(setup, tmp_path, monkeypatch):
    from mosaicist import metrics

    measured = []
    original = metrics.FidelityMeter.add
    monkeypatch.setattr(metrics.FidelityMeter, "add",
                        lambda self, band: (measured.append(len(band)), original(self, band)))
    result = run(make_args(setup, "-o", tmp_path / "q.png", "--quiet"))
    assert result.exit_code == 0 and not measured  # nobody would see them
    report_path = tmp_path / "r.json"
    result = run(make_args(setup, "-o", tmp_path / "r.png", "--quiet", "--report", report_path))
    assert result.exit_code == 0 and measured
    assert json.loads(report_path.read_text())["metrics"]["ssim_view"] is not None
    measured.clear()
    result = run(make_args(setup, "-o", tmp_path / "s.png"))  # the summary shows them
    assert result.exit_code == 0 and measured and "SSIM" in result.stderr


def test_limit(setup, tmp_path):
    report_path = tmp_path / "r.json"
    csv_path = tmp_path / "p.csv"
    result = run(make_args(setup, "-o", tmp_path / "l.png", "--limit", 3,
                           "--report", report_path, "--placements", csv_path))
    assert result.exit_code == 0, result.output
    assert json.loads(report_path.read_text())["tiles"] == 3
    with open(csv_path, newline="") as handle:
        used = {row["tile"] for row in csv.DictReader(handle)}
    assert used <= {"t000.png", "t001.png", "t002.png"}


@pytest.mark.parametrize("suffix, kind", [(".jpg", "JPEG"), (".webp", "WEBP"), (".tif", "TIFF")])
def test_output_formats(setup, tmp_path, suffix, kind):
    output = tmp_path / f"out{suffix}"
    result = run(make_args(setup, "-o", output, "-q"))
    assert result.exit_code == 0, result.output
    with Image.open(output) as image:
        assert image.format == kind and image.size == (64, 48)


def test_errors(setup, tmp_path):
    root, target, tiles = setup
    text = tmp_path / "text.png"
    text.write_text("not a picture")
    small = tmp_path / "small.png"
    Image.new("RGB", (5, 5)).save(small)
    empty = tmp_path / "empty"
    empty.mkdir()
    cache = ["--cache-dir", root / "cache"]
    out = ["-o", tmp_path / "o.png"]
    cases = [
        (["make", tmp_path / "missing.png", "--tiles", tiles, *out, *cache], ["missing.png"]),
        (["make", text, "--tiles", tiles, *out, *cache], ["text.png"]),
        (["make", small, "--tiles", tiles, "--cell", 8, *out, *cache], ["small.png"]),
        (["make", target, "--tiles", tiles, "--cell", 0, *out, *cache], ["--cell must be"]),
        (["make", target, "--tiles", tiles, "--tile-px", 5000, *out, *cache],
         ["--tile-px must be between 1 and 1024"]),
        (["index", tiles, "--tile-px", 5000, *cache], ["--tile-px must be between 1 and 1024"]),
        (["make", target, "--tiles", tiles, "-o", tmp_path / "o.xyz", *cache], [".xyz"]),
        (["make", target, "--tiles", tiles, "-o", tmp_path / "nope/o.png", *cache], ["nope"]),
        (["make", target, "--tiles", tiles, *out, "--placements", tmp_path / "nope/p.csv",
          *cache], ["nope"]),
        (["make", target, "--tiles", tmp_path / "no-such-source", *out, *cache],
         ["no-such-source"]),
        (["make", target, "--tiles", "no-such-dataset", *out, *cache], ["no-such-dataset"]),
        (["make", target, "--tiles", empty, *out, *cache], ["empty", "no usable tile"]),
        (["index", empty, *cache], ["empty", "no usable tile"]),
        (["make", target, "--tiles", tiles, "--limit", 0, *out, *cache], ["--limit"]),
    ]
    for args, words in cases:
        result = run(args)
        assert_one_line_error(result, *words)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["empty", "small.png", "text.png"]


def test_unknown_extension_fails_before_any_work(setup, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("work started")

    monkeypatch.setattr("mosaicist.pipeline.make_mosaic", boom)
    monkeypatch.setattr("mosaicist.library.TileLibrary.open", boom)
    result = run(make_args(setup, "-o", tmp_path / "o.xyz"))
    assert_one_line_error(result, "unknown output format")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_read_only_output_folder(setup, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        result = run(make_args(setup, "-o", folder / "o.png"))
        assert_one_line_error(result, "not writable")
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
@pytest.mark.parametrize("name", ["out.png", "out.jpg", "out.tif", "out.webp", "out.dzi"])
def test_output_is_atomic(setup, tmp_path, monkeypatch, error, name):
    original = render.MosaicRenderer.bands

    def failing_bands(self):
        bands = original(self)
        yield next(bands)  # part of the picture is written, then the run fails
        raise error

    monkeypatch.setattr(render.MosaicRenderer, "bands", failing_bands)
    output = tmp_path / name
    result = run(make_args(setup, "-o", output))
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stop, code", [(KeyboardInterrupt(), 130), (SystemExit(143), 143)])
def test_an_error_raised_in_place_of_a_stop_is_the_stop(setup, tmp_path, monkeypatch, stop,
                                                        code):
    # Ctrl+C at the call where Condition.wait takes its lock back became "RuntimeError:
    # release unlocked lock" at the with around it: a traceback and status 1.
    original = render.MosaicRenderer.bands

    def failing_bands(self):
        bands = original(self)
        yield next(bands)
        try:
            raise stop
        except BaseException:
            raise RuntimeError("release unlocked lock") from None

    monkeypatch.setattr(render.MosaicRenderer, "bands", failing_bands)
    result = run(make_args(setup, "-o", tmp_path / "out.png"))
    assert result.exit_code == code
    assert "Traceback" not in result.output and "release unlocked" not in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [[], ["make"], ["index"]])
def test_help(command):
    result = run([*command, "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output and "mosaicist" in result.output


def test_python_m_mosaicist(setup, tmp_path):
    root, target, tiles = setup
    env = dict(os.environ, MOSAICIST_CACHE_DIR=str(root / "cache"))
    helped = subprocess.run([sys.executable, "-m", "mosaicist", "--help"], capture_output=True,
                            text=True, env=env, timeout=60)
    assert helped.returncode == 0 and "Examples:" in helped.stdout
    made = subprocess.run(
        [sys.executable, "-m", "mosaicist", "make", str(target), "--tiles", str(tiles),
         "--cell", str(CELL), "--tile-px", str(TILE_PX), "-o", str(tmp_path / "m.png")],
        capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    assert "Traceback" not in made.stderr and "8x6 cells" in made.stderr
    assert (tmp_path / "m.png").is_file()
    failed = subprocess.run(
        [sys.executable, "-m", "mosaicist", "make", str(tmp_path / "missing.png"), "--tiles",
         str(tiles)],
        capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path,
    )
    assert failed.returncode != 0
    assert "Traceback" not in failed.stderr
    assert failed.stderr.strip().splitlines() == [
        f"mosaicist: error: {tmp_path / 'missing.png'}: target file not found"
    ]


def test_render_command_redraws_saved_placements(tmp_path):
    from click.testing import CliRunner

    from mosaicist.cli import main

    tiles = make_colour_folder(tmp_path / "tiles", 12, size=16)
    target = tmp_path / "target.png"
    Image.fromarray(
        np.random.default_rng(3).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    ).save(target)
    runner = CliRunner()
    made = runner.invoke(main, [
        "make", str(target), "--tiles", str(tiles), "--cell", "8", "--tile-px", "8",
        "--augment", "flips", "--tint", "0.4", "-o", str(tmp_path / "m.png"),
        "--placements", str(tmp_path / "p.json"), "--cache-dir", str(tmp_path / "c"), "-q",
    ])
    assert made.exit_code == 0, made.output
    drawn = runner.invoke(main, [
        "render", str(tmp_path / "p.json"), "-o", str(tmp_path / "r.png"), "-q",
        "--cache-dir", str(tmp_path / "c"),
    ])
    assert drawn.exit_code == 0, drawn.output
    original = np.asarray(Image.open(tmp_path / "m.png")).astype(int)
    again = np.asarray(Image.open(tmp_path / "r.png")).astype(int)
    assert np.abs(original - again).max() <= 1
    bigger = runner.invoke(main, [
        "render", str(tmp_path / "p.json"), "-o", str(tmp_path / "big.jpg"), "--tile-px", "24",
        "-q", "--cache-dir", str(tmp_path / "c"),
    ])
    assert bigger.exit_code == 0, bigger.output
    assert Image.open(tmp_path / "big.jpg").size == (5 * 24, 3 * 24)


@pytest.mark.parametrize("content", [None, "not,a,placements\n1,2,3\n", "{}"])
def test_render_command_errors_are_one_line(tmp_path, content):
    from click.testing import CliRunner

    from mosaicist.cli import main

    suffix = ".json" if content == "{}" else ".csv"
    path = tmp_path / f"p{suffix}"
    if content is not None:
        path.write_text(content)
    result = CliRunner().invoke(main, ["render", str(path), "-o", str(tmp_path / "o.png")])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0 and "error" in result.output


def test_make_deep_zoom_agrees_with_the_flat_output(setup, tmp_path):
    from mosaicist.render import files_folder, read_layout, read_level, reduce_half

    flat = tmp_path / "flat.png"
    result = run(make_args(setup, "-o", flat, "--tile-px", 24, "--overlay", 0.2, "-q"))
    assert result.exit_code == 0, result.output
    dzi = tmp_path / "mural.dzi"
    result = run(make_args(setup, "-o", dzi, "--tile-px", 24, "--overlay", 0.2,
                           "--dzi-format", "png", "--dzi-tile-size", 64, "--dzi-overlap", 2,
                           "--placements", tmp_path / "p.json"))
    assert result.exit_code == 0, result.output
    assert "mural.dzi (192x144)" in result.stderr
    assert f"mosaicist view {dzi}" in result.stderr
    layout = read_layout(dzi)
    assert (layout.width, layout.height, layout.tile_size, layout.overlap) == (192, 144, 64, 2)
    expected = np.asarray(Image.open(flat))
    for level in range(layout.deepest_level, -1, -1):
        assert np.array_equal(read_level(dzi, level), expected), level
        expected = reduce_half(expected)
    assert (tmp_path / "mural.html").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "flat.png", "mural.dzi", "mural.html", "mural.viewer.json", "mural_files", "p.json"]
    # Rendering the placements again gives the same pyramid.
    again = tmp_path / "again.dzi"
    result = run(["render", tmp_path / "p.json", "-o", again, "--dzi-format", "png",
                  "--dzi-tile-size", 64, "--dzi-overlap", 2, "-q"])
    assert result.exit_code == 0, result.output
    assert np.array_equal(read_level(again, layout.deepest_level),
                          read_level(dzi, layout.deepest_level))
    assert len(list(files_folder(again).rglob("*.png"))) == layout.tile_total()


def test_outputs_named_from_the_home_folder_are_written_there(setup, tmp_path, monkeypatch):
    # The shell leaves "--output=~/a.png" as it is: "output folder ~ does not exist", where
    # --tiles and the target were read from the home folder.
    root, target, tiles = setup
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    result = run([*make_args(setup), "--output=~/a.png", "--report=~/a.json",
                  "--placements=~/a.csv", "--cache-dir", tmp_path / "cache", "-q"])
    assert result.exit_code == 0, result.output
    assert {path.name for path in home.iterdir()} == {"a.png", "a.json", "a.csv"}


@pytest.mark.parametrize("inside", ["y_files/r.json", "y_files/5/r.json"])
def test_a_report_inside_the_pyramids_tile_folder_is_refused(setup, tmp_path, inside):
    # The tile folder is replaced whole: the next write deleted the report without a word,
    # or (a file beside the levels) refused every later write of the pyramid.
    (tmp_path / "y_files" / "5").mkdir(parents=True)
    for flag in ("--report", "--placements"):
        path = tmp_path / inside.replace("json", "csv" if flag == "--placements" else "json")
        result = run([*make_args(setup), "-o", tmp_path / "y.dzi", flag, path,
                      "--cache-dir", tmp_path / "cache"])
        assert_one_line_error(result, path.name, "lies in the Deep Zoom tile folder")
    assert not (tmp_path / "cache").exists()


def test_output_over_a_format_limit_fails_before_any_work(setup, tmp_path):
    root, target, tiles = setup
    cache = tmp_path / "fresh-cache"
    # 8 columns of 1024 px fit; libjpeg's 65500 px side does not fit 64 columns.
    wide = tmp_path / "wide.png"
    Image.new("RGB", (64 * 8, 8)).save(wide)
    result = run(["make", wide, "--tiles", tiles, "--cell", 8, "--tile-px", 1024,
                  "-o", tmp_path / "big.jpg", "--cache-dir", cache])
    assert_one_line_error(result, "big.jpg", "65,536x1,024", "JPEG limit of 65,500")
    assert not cache.exists()
    result = run(["make", wide, "--tiles", tiles, "--cell", 8, "-o", tmp_path / "m.dzi",
                  "--dzi-overlap", 300, "--cache-dir", cache])
    assert_one_line_error(result, "overlap")
    assert not cache.exists()


def test_view_serves_the_viewer(setup, tmp_path):
    result = run(["view", tmp_path / "none.dzi", "--no-browser"])
    assert_one_line_error(result, "none.dzi")


def test_bad_match_size_is_a_one_line_error(setup, tmp_path):
    result = run(make_args(setup, "--match-px", 0, "-o", tmp_path / "m.png"))
    assert_one_line_error(result, "between 1 and 1024", "got 0")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("arguments", "expected"), [
    (["make", "t.png", "--bogus"], "No such option '--bogus' (see 'mosaicist make --help')"),
    (["make"], "Missing argument 'TARGET' (see 'mosaicist make --help')"),
    (["make", "t.png", "--cell", "x"], "--cell must be a whole number, got 'x' (see "),
    (["score", "--view-px", "1.5", "a", "b"], "--view-px must be a whole number, got 1.5"),
    (["nope"], "No such command 'nope' (see 'mosaicist --help')"),
    (["render", "p.json", "--tile-px"], "--tile-px"),
    # A flag that may stand alone: click reads '-2.5' as an option; said as '--dedupe 2.5' is.
    (["index", "lib", "--dedupe=-2.5"], "--dedupe must be a whole number, got -2.5 (see "
                                        "'mosaicist index --help')"),
    (["make", "t.png", "--dedupe", "-x"], "No such option '-x'"),
])
def test_usage_errors_are_one_line(arguments, expected):
    from click.testing import CliRunner

    from mosaicist.cli import main

    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mosaicist: error: "), result.output
    assert expected in lines[0]


def test_bare_command_shows_help():
    from click.testing import CliRunner

    from mosaicist.cli import main

    result = CliRunner().invoke(main, [])
    assert result.exit_code == 0 and "Commands:" in result.output


def test_none_lifts_a_presets_use_limit(setup, tmp_path):
    # The default preset uses every tile at most once (fitted to the 30 tiles: twice
    # for 48 cells); `--max-uses none` lifts it, as the seed preset has none.
    report = tmp_path / "r.json"
    result = run(make_args(setup, "-o", tmp_path / "none.png", "--max-uses", "none",
                           "--min-spacing", "1", "--report", report, "-q"))
    assert result.exit_code == 0, result.output
    settings = json.loads(report.read_text())["settings"]
    assert settings["max_uses"] is None and settings["preset"] == "balanced"
    limited = tmp_path / "limited.json"
    assert run(make_args(setup, "-o", tmp_path / "l.png", "--report", limited, "-q")
               ).exit_code == 0
    assert json.loads(limited.read_text())["settings"]["max_uses"] == 2
    assert_one_line_error(run(make_args(setup, "--max-uses", "nothing")), "--max-uses")


def test_files_that_are_each_other_are_refused_before_any_work(setup, tmp_path, monkeypatch):
    # Each of these used to end with exit 0 and one of the files lost: the target
    # overwritten by its mosaic, the mosaic by the placements or the report.
    root, target, tiles = setup
    picture = tmp_path / "picture.png"
    picture.write_bytes(target.read_bytes())
    original = picture.read_bytes()
    from mosaicist import pipeline

    def no_work(*args, **kwargs):
        raise AssertionError("the make started")

    monkeypatch.setattr(pipeline, "make_mosaic", no_work)
    cases = [
        (["-o", picture], "the output is also the target"),
        (["-o", tmp_path / "m.png", "--placements", tmp_path / "m.png"],
         "the placements file is also the output"),
        (["-o", tmp_path / "m.png", "--report", tmp_path / "." / "m.png"],
         "the report file is also the output"),
        (["-o", tmp_path / "m.png", "--placements", picture],
         "the placements file is also the target"),
        (["-o", tmp_path / "m.dzi", "--report", tmp_path / "m.html"],
         "the report file is also the viewer page"),
        (["-o", tmp_path / "m.png", "--placements", tmp_path / "m.txt"], ".csv or .json"),
    ]
    for extra, words in cases:
        result = run(["make", picture, "--tiles", tiles, "--cell", CELL, "--tile-px", TILE_PX,
                      "--cache-dir", root / "cache", *extra])
        assert_one_line_error(result, words)
    assert picture.read_bytes() == original
    assert sorted(path.name for path in tmp_path.iterdir()) == ["picture.png"]
    # The same for render: its placements are not its output.
    placements = tmp_path / "p.json"
    placements.write_text("{}")
    result = run(["render", placements, "-o", placements.with_suffix(".png"), "--tiles", tiles])
    assert "is also" not in result.output


def test_outputs_write_through_links_and_refuse_devices(setup, tmp_path):
    output = tmp_path / "out.png"
    real = tmp_path / "kept" / "real.csv"
    real.parent.mkdir()
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    result = run(make_args(setup, "-o", output, "--placements", link))
    assert result.exit_code == 0, result.output
    # The link stays a link, and its target holds the placements.
    assert link.is_symlink() and real.read_text().startswith("row,col,tile")
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    result = run(make_args(setup, "-o", output, "--placements", fifo))
    assert_one_line_error(result, "pipe.csv", "not a regular file")
    assert fifo.is_fifo()


def test_a_target_that_is_a_pipe_is_refused_at_once(setup, tmp_path):
    # A pipe nobody writes to blocked the make forever; one that is written to was
    # read twice (header, then pixels) and refused as "not a readable image".
    fifo = tmp_path / "target.png"
    os.mkfifo(fifo)
    root, _, tiles = setup
    result = run(["make", fifo, "--tiles", tiles, "-o", tmp_path / "out.png"])
    assert_one_line_error(result, "target.png", "not a regular file")


def test_deep_zoom_never_replaces_a_folder_of_other_files(setup, tmp_path):
    output = tmp_path / "mural.dzi"
    folder = tmp_path / "mural_files"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    result = run(make_args(setup, "-o", output))
    assert_one_line_error(result, "mural_files", "notes.txt")
    assert (folder / "notes.txt").read_text() == "mine" and not output.exists()
    plain = tmp_path / "plain.dzi"
    (tmp_path / "plain_files").write_text("a file where the tiles would go")
    result = run(make_args(setup, "-o", plain))
    assert_one_line_error(result, "plain_files", "is not a folder")
    assert (tmp_path / "plain_files").read_text() == "a file where the tiles would go"
    (folder / "notes.txt").unlink()
    (tmp_path / "mural.html").mkdir()
    result = run(make_args(setup, "-o", output))
    assert_one_line_error(result, "mural.html", "viewer page is a directory")
    assert not output.exists()
    (tmp_path / "mural.html").rmdir()
    # A pyramid of its own (level folders, a browser's hidden file) is replaced.
    assert run(make_args(setup, "-o", output)).exit_code == 0
    (folder / ".DS_Store").write_text("")
    again = run(make_args(setup, "-o", output))
    assert again.exit_code == 0, again.output


def test_an_interrupt_while_the_command_line_loads_is_one_line(monkeypatch, capsys):
    # Ctrl+C during the command line's imports printed a traceback.
    import types

    from mosaicist.__main__ import run as run_command

    class Loading(types.ModuleType):
        def __getattr__(self, name):
            raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "mosaicist.cli", Loading("mosaicist.cli"))
    with pytest.raises(SystemExit) as exited:
        run_command()
    assert exited.value.code == 130
    assert capsys.readouterr().err == "mosaicist: error: interrupted\n"


_LOADING = """
import sys, time, types
from pathlib import Path

ready = Path(sys.argv[1])

class Loading(types.ModuleType):
    def __getattr__(self, name):
        ready.touch()
        time.sleep(30)

sys.modules["mosaicist.cli"] = Loading("mosaicist.cli")
sys.argv = ["mosaicist", *sys.argv[2:]]
from mosaicist.__main__ import run
run()
"""


def test_the_serving_commands_are_the_same_while_the_command_line_loads():
    # __main__ names them (and the signals that end a command) before the command line
    # is imported: it is what loads.
    from mosaicist import __main__, _runtime, cli

    assert __main__._SERVING == cli._SERVING
    assert __main__._TERMINATING == cli._TERMINATED_SIGNALS == _runtime.TERMINATING_SIGNALS


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(("command", "stop", "status"), [
    ("make", "SIGTERM", 143), ("make", "SIGHUP", 129), ("make", "SIGINT", 130),
    ("studio", "SIGTERM", 0), ("view", "SIGHUP", 0), ("live", "SIGINT", 0),
])
def test_a_signal_while_the_command_line_loads_ends_it_as_later(tmp_path, command, stop,
                                                                  status):
    # SIGHUP there ended any command by the signal (-1); a server's Ctrl+C or SIGTERM
    # there said "interrupted" (130) or exited 143 where its stop a moment later is 0.
    ready = tmp_path / "ready"
    process = subprocess.Popen([sys.executable, "-c", _LOADING, str(ready), command, "x"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ready.exists()
        process.send_signal(getattr(signal, stop))
        returncode = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = process.stderr.read()
    process.stderr.close()
    assert returncode == status, stderr
    assert stderr == ("mosaicist: error: interrupted\n" if status == 130 else ""), stderr


def test_render_says_which_tiles_changed_since_the_placements(tmp_path):
    # A tile replaced after the make was drawn as it is now, without a word.
    tiles = make_colour_folder(tmp_path / "tiles", 12, size=16)
    target = tmp_path / "target.png"
    Image.fromarray(
        np.random.default_rng(3).integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(target)
    cache = tmp_path / "c"
    made = run(["make", target, "--tiles", tiles, "--cell", 8, "--tile-px", 8, "--preset",
                "seed", "-o", tmp_path / "m.png", "--placements", tmp_path / "p.json",
                "--cache-dir", cache, "-q"])
    assert made.exit_code == 0, made.output
    document = json.loads((tmp_path / "p.json").read_text())
    placed = sorted(set(document["cells"]["tile"]))
    assert set(document["hashes"]) == set(placed)
    render_args = ["render", tmp_path / "p.json", "-o", tmp_path / "r.png", "--cache-dir", cache]
    quiet = run(render_args)
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr
    # Touched, same bytes: not a change.
    os.utime(tiles / placed[0])
    assert "warning" not in run(render_args).stderr
    Image.fromarray(np.full((16, 16, 3), 255, np.uint8)).save(tiles / placed[1])
    warned = run(render_args)
    assert warned.exit_code == 0, warned.output
    assert f"1 of the tiles changed since these placements were made ({placed[1]})" \
        in warned.stderr
    # Placements of older versions (without hashes) render as before.
    del document["hashes"]
    (tmp_path / "old.json").write_text(json.dumps(document))
    old = run(["render", tmp_path / "old.json", "-o", tmp_path / "o.png", "--cache-dir", cache])
    assert old.exit_code == 0 and "warning" not in old.stderr


#: A child that runs ``python -m mosaicist ARGS`` with the render held after its first
#: band (a temporary output is then on disk) until the test signals it.
_HELD_RENDER = r"""
import sys, time
from pathlib import Path
from mosaicist import render

ready = Path(sys.argv[1])
original = render.MosaicRenderer.bands

def held_bands(self):
    for number, band in enumerate(original(self)):
        yield band
        if number == 0:
            ready.touch()
            time.sleep(60)

render.MosaicRenderer.bands = held_bands
sys.argv = ["mosaicist", *sys.argv[2:]]
from mosaicist.__main__ import run
run()
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(("stop", "times"), [("SIGTERM", 1), ("SIGHUP", 1), ("SIGTERM", 2),
                                             ("SIGINT", 2)])
def test_sigterm_during_the_render_leaves_no_temporary(setup, tmp_path, stop, times):
    # SIGTERM's default action ended the process at once, the half-written
    # output's temporary (.NAME.PID-....part.png) left beside the output; SIGHUP's
    # (a terminal or an SSH session closed under a long render) did until session 43.
    # Twice at once (GNU timeout signals the command, then its process group; Ctrl+C
    # pressed twice), the second cut the clean-up short, and a Ctrl+C's could print a
    # traceback from the interpreter's exit.
    number = getattr(signal, stop)
    root, target, tiles = setup
    out = tmp_path / "out"
    out.mkdir()
    ready = tmp_path / "ready"
    command = [sys.executable, "-c", _HELD_RENDER, str(ready), "make", str(target), "--tiles",
               str(tiles), "--cell", str(CELL), "--tile-px", str(TILE_PX), "-o",
               str(out / "m.png"), "--cache-dir", str(root / "cache"), "-q"]
    with open(tmp_path / "stderr.txt", "wb") as stderr_file:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr_file)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), (tmp_path / "stderr.txt").read_text()
        assert [path.name for path in out.iterdir() if ".part" in path.name]
        process.send_signal(number)
        for _ in range(times - 1):
            time.sleep(0.005)
            process.send_signal(number)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = (tmp_path / "stderr.txt").read_text()
    assert process.returncode == 128 + number, stderr
    assert "Traceback" not in stderr, stderr
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("command", ["make", "batch"])
def test_help_shows_the_defaults_that_apply(command):
    # The help showed the declared (seed's) defaults, which the default preset replaces.
    from mosaicist.options import DEFAULT_PRESET, MosaicOptions

    result = run([command, "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    options = MosaicOptions()
    assert (options.tint, options.contrast, options.min_spacing, options.max_uses,
            options.crop) == (1.0, 0.5, 5, 1, "subject")
    for flag, value, seed in (("--tint A", "1", "0"), ("--contrast B", "0.5", "0"),
                              ("--min-spacing D", "5, shortened for a small library", "1"),
                              ("--max-uses K", "1, raised for a small library", "none"),
                              ("--crop [centre|subject]", "subject", "centre")):
        described = text.split(flag, 1)[1]
        shown = described[described.index("[default: "):].split("]", 1)[0] + "]"
        value, _, eased = value.partition(", ")
        assert shown == (f"[default: {value} from the {DEFAULT_PRESET} preset"
                         f"{', ' + eased if eased else ''}; {seed} with --preset seed]"), shown
    assert "seed's exact pixel match" not in text


def test_names_with_control_characters_stay_on_one_line(setup, tmp_path):
    # A newline in a file name split a one-line message; an ESC reached the terminal.
    root, target, tiles = setup
    odd = "bad\nname\x1b[31m"
    shown = "bad\\nname\\x1b[31m"
    result = run(["make", tmp_path / f"{odd}.png", "--tiles", tiles, "-o", tmp_path / "o.png"])
    assert_one_line_error(result, f"{shown}.png", "not found")
    assert "\x1b" not in result.stderr
    # A library file with such a name, listed as a near-copy of another.
    library = make_colour_folder(tmp_path / "library", 3)
    (library / f"{odd}.png").write_bytes((library / "t001.png").read_bytes())
    listed = run(["index", library, "--duplicates", "--tile-px", 8, "--cache-dir",
                  tmp_path / "cache"])
    assert listed.exit_code == 0, listed.output
    assert "\x1b" not in listed.output
    assert listed.stdout.splitlines()[:2] in (
        [f"{shown}.png", "    t001.png  (0 bits)"], ["t001.png", f"    {shown}.png  (0 bits)"])


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252", "koi8-r"])
def test_names_the_outputs_encoding_lacks_are_escaped_not_a_traceback(tmp_path, encoding):
    # index --duplicates with a standard output in latin-1 ended in a UnicodeEncodeError
    # traceback at a name such as 日本.png (standard error escapes; standard output did not).
    library = make_colour_folder(tmp_path / "library", 3)
    (library / "\u65e5\u672c.png").write_bytes((library / "t001.png").read_bytes())
    command = [sys.executable, "-m", "mosaicist", "index", str(library), "--duplicates",
               "--tile-px", "8", "--cache-dir", str(tmp_path / "cache"), "-q"]
    listed = subprocess.run(command, capture_output=True, timeout=60,
                            env={**os.environ, "PYTHONIOENCODING": encoding})
    assert listed.returncode == 0, listed.stderr.decode(errors="replace")
    assert listed.stderr == b""
    assert listed.stdout.decode(encoding).splitlines()[:2] == [
        "t001.png", "    \\u65e5\\u672c.png  (0 bits)"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes")
def test_a_closed_output_pipe_ends_the_command_quietly(setup, tmp_path):
    # 'mosaicist index LIB --duplicates | head -1' said "error: Broken pipe" and exited 1.
    library = make_colour_folder(tmp_path / "library", 3)
    for copy in range(40):
        (library / f"copy{copy:02d}.png").write_bytes((library / "t001.png").read_bytes())
    command = [sys.executable, "-m", "mosaicist", "index", str(library), "--duplicates",
               "--tile-px", "8", "--cache-dir", str(tmp_path / "cache"), "-q"]
    listed = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 41, listed.stderr
    # A reader that is gone before anything is written: as 'head' that had its line.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert stderr.decode() == ""
    assert process.returncode == 128 + signal.SIGPIPE


def test_index_counts_one_tile_in_the_singular(tmp_path):
    library = make_colour_folder(tmp_path / "library", 1)
    result = run(["index", library, "--tile-px", 8, "--cache-dir", tmp_path / "cache"])
    assert result.exit_code == 0, result.output
    assert "mosaicist: 1 tile of 8 px from" in result.stderr, result.stderr
    more = make_colour_folder(tmp_path / "more", 3)
    result = run(["index", more, "--tile-px", 8, "--cache-dir", tmp_path / "cache"])
    assert "mosaicist: 3 tiles of 8 px from" in result.stderr, result.stderr


@pytest.mark.parametrize(("command", "hint"), [
    ("score", "try a smaller --view-px or target"),
    ("make", "try a smaller --limit or target"),
    ("index", "try a smaller target or library"),
])
def test_out_of_memory_names_what_the_command_can_make_smaller(monkeypatch, command, hint):
    # 'score' said "try a smaller --limit", an option it does not have.
    import mosaicist.cli as cli

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(cli.main.commands[command], "callback", exhausted)
    result = run([command, "a", "b"] if command == "score" else [command, "a"])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"mosaicist: error: out of memory; {hint}", result.stderr


def test_output_settings_the_format_does_not_use_are_noted(setup, tmp_path):
    # --quality with a PNG, or --dpi with Deep Zoom, changed nothing without a word.
    def notes(result):
        assert result.exit_code == 0, result.output
        return [line for line in result.stderr.splitlines() if "note:" in line]

    png = run(make_args(setup, "-o", tmp_path / "a.png", "--quality", 80, "--dzi-overlap", 2,
                        "--placements", tmp_path / "a.json"))
    # Kept in the JSON placements: a render to JPEG uses that quality ("ignored", it said).
    assert notes(png) == ["mosaicist: note: --quality and --dzi-overlap have no effect on a PNG "
                          "output; kept in the placements file, for a render to another format"]
    plain = run(make_args(setup, "-o", tmp_path / "p.png", "--quality", 80))
    assert notes(plain) == ["mosaicist: note: --quality has no effect on a PNG output; ignored"]
    assert notes(run(make_args(setup, "-o", tmp_path / "a.jpg", "--quality", 80,
                               "--dpi", 300))) == []
    zoom = run(make_args(setup, "-o", tmp_path / "a.dzi", "--dpi", 300, "--dzi-format", "png",
                         "--quality", 80))
    assert notes(zoom) == ["mosaicist: note: --dpi and --quality have no effect on a Deep Zoom "
                           "output; ignored"]
    assert notes(run(make_args(setup, "-o", tmp_path / "b.dzi", "--quality", 80))) == []
    assert notes(run(make_args(setup, "-o", tmp_path / "c.png", "--quality", 80, "-q"))) == []
    # render notes only its own flags, not the make's recorded --quality.
    assert notes(run(["render", tmp_path / "a.json", "-o", tmp_path / "r.png"])) == []
    redrawn = run(["render", tmp_path / "a.json", "-o", tmp_path / "s.png", "--quality", 50])
    assert notes(redrawn) == ["mosaicist: note: --quality has no effect on a PNG output; "
                              "ignored"]


def test_a_value_of_thousands_of_digits_is_shown_shortened():
    # Click's "Invalid value" echoed all 5,000 digits (more than Python reads as a number).
    result = run(["make", "t.png", "--cell", "9" * 5000])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    most = f"{sys.get_int_max_str_digits():,}"  # 4,300 unless set otherwise
    assert len(lines) == 1 and lines[0].startswith(
        f"mosaicist: error: --cell must be a whole number of at most {most} digits, got 9999")
    assert "(5,000 characters)" in lines[0] and len(lines[0]) < 300, lines[0]


@pytest.mark.parametrize("arguments", [
    ["make", "t.png", "-o", ""],
    ["make", "t.png", "--tiles", ""],
    ["make", "t.png", "--cache-dir", ""],
    ["make", ""],
    ["index", ""],
    ["batch", "t.png", "-o", ""],
    ["score", "a.png", "t.png", "--json", ""],
])
def test_an_empty_name_is_refused(setup, tmp_path, arguments):
    # Path("") is the current folder: '--tiles ""' indexed it, '--cache-dir ""' filled it.
    root, target, tiles = setup
    arguments = [str(target) if argument == "t.png" else argument for argument in arguments]
    result = run(arguments, cwd=tmp_path)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "the name is empty" in lines[0], result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("rate", ["nan", "inf"])
def test_live_refuses_a_rate_that_is_not_a_finite_number(tmp_path, rate):
    # '--rate nan' was taken: every comparison with it is false, and the limit was off.
    result = run(["live", tmp_path / "t.png", "--grid", "2x2", "--event", tmp_path / "event",
                  "--rate", rate])
    # Out of range, as a setting's value is: status 1, no pointer to the help.
    assert result.exit_code == 1
    expected = "must be a finite number" if rate == "inf" else "must be at least 0"
    assert result.stderr.strip() == f"mosaicist: error: --rate {expected}, got {rate}"


def test_help_names_only_flags_the_command_has():
    # live's --aspect spoke of --cell, which live has not; render's --quality showed make's
    # default, where render keeps the one recorded in the placements.
    import re

    import click

    for name, command in main.commands.items():
        text = command.get_help(click.Context(command, info_name=name,
                                              parent=click.Context(main)))
        text = text.split("Examples:")[0]  # they may show other commands (make, then render)
        # References to another command's flags are quoted: 'make --crop', (its --match-px.
        text = re.sub(r"'(mosaicist )?[a-z]+ [^']*'|\(its --[a-z-]+", "", " ".join(text.split()))
        flags = {flag for parameter in command.params
                 for flag in [*parameter.opts, *parameter.secondary_opts]}
        named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*[a-z](?=[\s,.;:)\]]|$)", text))
        assert named - flags <= {"--help"}, (name, named - flags)
    render_help = " ".join(run(["render", "--help"]).output.split())
    assert "[default: as in PLACEMENTS; 92, 90 for Deep Zoom, where they record none]" \
        in render_help


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX descriptors")
@pytest.mark.parametrize("closed", [(1,), (2,), (1, 2)])
def test_a_closed_standard_output_or_error_does_not_stop_the_command(setup, tmp_path, closed):
    # 'mosaicist make ... >&-' failed on flushing a None stdout, '2>&-' on the progress
    # bars' check of a None stderr: status 1, a traceback, no mosaic.
    root, target, tiles = setup
    output = tmp_path / "closed.png"

    def close_descriptors():
        for descriptor in closed:
            os.close(descriptor)

    done = subprocess.run(
        [sys.executable, "-m", "mosaicist", "make", str(target), "--tiles", str(tiles),
         "--cell", str(CELL), "--tile-px", str(TILE_PX), "--cache-dir", str(root / "cache"),
         "-o", str(output)],
        stdout=None if 1 in closed else subprocess.DEVNULL,
        stderr=None if 2 in closed else subprocess.PIPE,
        preexec_fn=close_descriptors, timeout=120)
    assert done.returncode == 0, done.stderr
    assert output.exists()


def test_in_another_programs_process_an_interrupt_neither_ends_nor_signals_it(monkeypatch):
    # The command line's watchdog ended the whole process 10 s after an "interrupted"
    # (os._exit): a test runner or a script calling main() in-process died with it.
    import threading

    from mosaicist import cli

    assert not cli.OWNS_PROCESS  # only mosaicist.__main__.run sets it
    started = []
    monkeypatch.setattr(threading.Thread, "start", lambda self: started.append(self.name))
    with pytest.raises(SystemExit) as stop:
        cli._fail("interrupted", 130)
    assert stop.value.code == 130 and started == []
    before = sys.unraisablehook
    with cli._interrupts_kept():  # its hook would send SIGINT to this process
        assert sys.unraisablehook is before


_ENDING = """
import atexit, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
done = Path(sys.argv[1])
atexit.register(lambda: print("atexit ran", flush=False))
pool = ThreadPoolExecutor(1)  # an idle pool, as the process's kept ones are
pool.submit(lambda: None).result()
def late():
    time.sleep(0.3)
    done.write_text("finished")
threading.Thread(target=late).start()  # not a daemon: waited for
sys.stdout.write("unflushed ")
sys.argv = ["mosaicist", *sys.argv[2:]]
from mosaicist.__main__ import run
run()
"""


@pytest.mark.parametrize(("arguments", "code"), [(["--version"], 0), (["frobnicate"], 2)])
def test_a_command_that_ends_still_runs_the_exit_hooks(tmp_path, arguments, code):
    # A command that succeeded ends without the interpreter's teardown: the hooks before
    # it must run all the same (threads waited for, atexit, buffered output flushed).
    done = tmp_path / "done"
    ended = subprocess.run([sys.executable, "-c", _ENDING, str(done), *arguments],
                           capture_output=True, text=True, timeout=60)
    assert ended.returncode == code, ended.stderr
    assert done.read_text() == "finished"
    assert ended.stdout.startswith("unflushed ")
    assert ended.stdout.rstrip().endswith("atexit ran")
    assert "Traceback" not in ended.stderr


_HUGE_PAGES = """
import atexit, os, sys
def report():
    from numpy._core.multiarray import _set_madvise_hugepage
    print(os.environ.get("NUMPY_MADVISE_HUGEPAGE"), _set_madvise_hugepage(True))
atexit.register(report)
sys.argv = ["mosaicist", "--version"]
from mosaicist.__main__ import run
run()
"""


@pytest.mark.parametrize(("given", "expected"), [(None, "0 False"), ("1", "1 True")])
def test_the_command_asks_for_no_huge_pages_unless_told(given, expected):
    # NumPy's huge pages made every large fresh array wait on the kernel's compaction
    # (the million-tile make 1.80 s against 1.58 s); a value the caller set is kept.
    pytest.importorskip("numpy._core.multiarray")
    environment = {name: value for name, value in os.environ.items()
                   if name != "NUMPY_MADVISE_HUGEPAGE"}
    if given is not None:
        environment["NUMPY_MADVISE_HUGEPAGE"] = given
    ended = subprocess.run([sys.executable, "-c", _HUGE_PAGES], capture_output=True,
                           text=True, timeout=60, env=environment)
    assert ended.returncode == 0, ended.stderr
    assert ended.stdout.splitlines()[-1] == expected


def test_a_profiled_command_still_writes_its_profile(tmp_path):
    # cProfile writes its results once the command returns: the quick ending must wait.
    profile = tmp_path / "run.prof"
    ended = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(profile), "-m",
                            "mosaicist", "--version"], capture_output=True, text=True,
                           timeout=60)
    assert ended.returncode == 0, ended.stderr
    assert profile.stat().st_size > 0


def test_a_dataset_name_beside_a_folder_of_that_name_says_which_it_uses(
        setup, tmp_path, monkeypatch):
    # 'make t.jpg --tiles cifar10' beside a folder 'cifar10' of the user's photos took the
    # dataset without a word, the photos silently left out.
    from mosaicist.errors import SourceError
    from mosaicist.sources import arrays, cifar

    root, target, tiles = setup
    opened = []

    class Dataset:  # the dataset without its download: its name says it was chosen
        def __init__(self, name, location, **kwargs):
            opened.append(name)
            raise SourceError(f"{name}: the dataset")

    def galaxy10(variant, **kwargs):
        opened.append(f"galaxy10-{variant}")
        raise SourceError("galaxy10: the dataset")

    monkeypatch.setattr(cifar, "CifarSource", Dataset)
    monkeypatch.setattr(arrays, "galaxy10_source", galaxy10)
    for name in ("cifar10", "cifar100", "galaxy10-sdss"):
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
    cache = ["--cache-dir", tmp_path / "cache"]
    grid = ["--cell", CELL, "--tile-px", TILE_PX, "-o", tmp_path / "m.png", *cache]
    note = ("mosaicist: note: --tiles cifar10 names the cifar10 dataset; the folder cifar10 here "
            f"is not used (to use it, give --tiles .{os.sep}cifar10)")
    result = run(["make", target, "--tiles", "cifar10", *grid], cwd=tmp_path)
    assert result.stderr.splitlines() == [note, "mosaicist: error: cifar10: the dataset"]
    assert opened == ["cifar10"]
    result = run(["make", target, *grid], cwd=tmp_path)
    assert result.stderr.splitlines()[0].startswith(
        "mosaicist: note: the default --tiles cifar10 names the cifar10 dataset")
    result = run(["index", "cifar100", *cache], cwd=tmp_path)
    assert result.stderr.splitlines()[0] == (
        "mosaicist: note: cifar100 names the cifar100 dataset; the folder cifar100 here is not "
        f"used (to use it, give .{os.sep}cifar100)")
    result = run(["batch", target, "--tiles", "galaxy10-sdss", "-o", tmp_path / "out", *cache],
                 cwd=tmp_path)
    assert result.stderr.splitlines()[0].startswith(
        "mosaicist: note: --tiles galaxy10-sdss names the galaxy10-sdss dataset; the folder "
        "galaxy10-sdss here is not used")
    (tmp_path / "cifar10:copy").mkdir()
    result = run(["index", "cifar10:copy", *cache], cwd=tmp_path)
    assert result.stderr.splitlines()[0] == (
        "mosaicist: note: cifar10:copy names the cifar10 dataset; the folder cifar10:copy "
        f"here is not used (to use it, give .{os.sep}cifar10:copy)")
    # Quiet, or with no such folder, no note; the folder given as a path is the folder.
    result = run(["make", target, "--tiles", "cifar10", *grid, "-q"], cwd=tmp_path)
    assert "note" not in result.stderr
    result = run(["make", target, "--tiles", "cifar10", *grid], cwd=root)
    assert "note" not in result.stderr
    for photo in tiles.iterdir():
        (tmp_path / "cifar10" / photo.name).write_bytes(photo.read_bytes())
    result = run(["index", "./cifar10", "--tile-px", TILE_PX, *cache], cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "note" not in result.stderr and "30 tiles" in result.stderr
    assert opened == ["cifar10", "cifar10", "cifar100", "galaxy10-sdss", "cifar10", "cifar10",
                      "cifar10"]


_HOSTED = """
import sys
from pathlib import Path
from mosaicist.__main__ import run

done = Path(sys.argv[1])

def host():  # as a debugger (python -m pdb) runs it, then goes on
    sys.argv = ["mosaicist", "--version"]
    try:
        run()
    except SystemExit as stop:
        done.write_text(f"went on after status {stop.code}")

host()
"""


def test_a_command_run_inside_another_program_lets_it_go_on(tmp_path):
    # The quick ending ended the host too: under python -m pdb with no breakpoint (no
    # trace function set then), pdb's prompt after the program never came.
    done = tmp_path / "done"
    ended = subprocess.run([sys.executable, "-c", _HOSTED, str(done)], capture_output=True,
                           text=True, timeout=60)
    assert ended.returncode == 0, ended.stderr
    assert done.read_text() == "went on after status 0"


_INTERRUPTED_ENDING = """
import sys, threading, time
from pathlib import Path
ready = Path(sys.argv[1])
def late():
    ready.write_text("sleeping")
    time.sleep(20)
threading.Thread(target=late).start()  # not a daemon: the quick ending waits for it
sys.argv = ["mosaicist", "--version"]
from mosaicist.__main__ import run
run()
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_an_interrupt_while_a_finished_command_ends_is_one_line(tmp_path):
    ready = tmp_path / "ready"
    process = subprocess.Popen([sys.executable, "-c", _INTERRUPTED_ENDING, str(ready)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        # The command prints its version and ends; then it waits for the thread.
        out = process.stdout.readline()
        assert out.startswith("mosaicist"), out
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    assert err == "mosaicist: error: interrupted\n", err


def test_pillow_warnings_on_damaged_metadata_stay_off_stderr(tmp_path):
    # A camera's EXIF tag declaring more bytes than its block holds: Pillow read the
    # picture but printed "UserWarning: Tag data larger than file..." with its own
    # source line, under -q; a TIFF cut inside its header, beside the one-line error.
    import io

    exif = Image.Exif()
    exif[0x010F] = "camera-maker-name"  # Make, stored out of line
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 120, 150)).save(buffer, "JPEG", exif=exif)
    data = bytearray(buffer.getvalue())
    entry = data.find(b"\x01\x0f\x00\x02")
    assert entry > 0
    data[entry + 4:entry + 8] = (100000).to_bytes(4, "big")
    (tmp_path / "target.jpg").write_bytes(bytes(data))
    tiles = make_colour_folder(tmp_path / "tiles", 6, size=16)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48)).save(buffer, "TIFF")
    (tmp_path / "cut.tif").write_bytes(buffer.getvalue()[:40])
    environment = {**os.environ, "MOSAICIST_CACHE_DIR": str(tmp_path / "cache")}
    for target, code in (("target.jpg", 0), ("cut.tif", 1)):
        done = subprocess.run([sys.executable, "-m", "mosaicist", "make", target, "--tiles",
                               str(tiles), "--cell", "16", "-o", "o.png", "-q"],
                              cwd=tmp_path, capture_output=True, text=True, env=environment,
                              timeout=120)
        assert done.returncode == code, done.stderr
        assert "Warning" not in done.stderr and "warn(" not in done.stderr, done.stderr
        assert len(done.stderr.splitlines()) == code, done.stderr


@pytest.mark.parametrize("argv", [
    ["make", "https://example.com/a.jpg", "--tiles", "x"],
    ["make", "t.png", "--tiles", "x", "-o", "s3://bucket/o.png"],
    ["score", "file:///tmp/m.png", "t.png"],
])
def test_a_url_given_for_a_file_is_named_as_one(argv):
    # click's Path folded the "//": "https:/example.com/a.jpg: target file not found".
    result = CliRunner().invoke(main, argv)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "is a URL; mosaicist reads and writes local files only" in result.output
    assert ":/" not in result.output.replace("://", "")


def test_render_names_a_setting_it_takes_from_the_placements_file_as_such(setup, tmp_path):
    # A target over the pixel limit recorded in the placements file: render said "raise it
    # with max_target_pixels", an option render does not have.
    root, target, tiles = setup
    placements = tmp_path / "p.json"
    made = run(["make", target, "--tiles", tiles, "--preset", "seed", "--cell", CELL,
                "--tile-px", TILE_PX, "--overlay", "0.3", "-o", tmp_path / "m.png",
                "--placements", placements, "--cache-dir", root / "cache", "-q"])
    assert made.exit_code == 0, made.output
    recorded = json.loads(placements.read_text())
    recorded["settings"]["max_target_pixels"] = 1000
    placements.write_text(json.dumps(recorded))
    result = run(["render", placements, "-o", tmp_path / "again.png", "--cache-dir",
                  root / "cache"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "(raise it with the placements file's max_target_pixels)" in result.stderr
    # Settings render has a flag for keep their flags.
    result = run(["render", placements, "-o", tmp_path / "again.png", "--tile-px", "5000"])
    assert "--tile-px" in result.stderr


def test_the_help_is_the_same_without_docstrings(tmp_path):
    # Under python -OO (PYTHONOPTIMIZE=2) the commands' docstrings, their help, were gone:
    # 'mosaicist --help' listed the commands without a word, 'make --help' lost its text.
    def helped(*arguments, optimize):
        environment = {**os.environ, "PYTHONOPTIMIZE": str(optimize),
                       "PYTHONPYCACHEPREFIX": str(tmp_path / "bytecode")}
        result = subprocess.run([sys.executable, "-m", "mosaicist", *arguments, "--help"],
                                capture_output=True, text=True, timeout=60, env=environment)
        assert result.returncode == 0, result.stderr
        return result.stdout

    for command, said in (([], "make    Make a photomosaic of TARGET"),
                          (["make"], "Make a photomosaic of TARGET from the tiles of --tiles."),
                          (["score"], "Measure how faithfully MOSAIC reproduces TARGET")):
        plain = helped(*command, optimize=0)
        assert said in plain
        assert helped(*command, optimize=2) == plain


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_a_standard_output_that_cannot_be_written_is_named(tmp_path):
    # '... > /dev/full' said only "mosaicist: error: No space left on device", as if the
    # command's own files could not be written.
    library = make_colour_folder(tmp_path / "library", 3)
    (library / "copy.png").write_bytes((library / "t001.png").read_bytes())
    command = [sys.executable, "-m", "mosaicist", "index", str(library), "--duplicates",
               "--tile-px", "8", "--cache-dir", str(tmp_path / "cache"), "-q"]
    with open("/dev/full", "w") as full:
        result = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True,
                                timeout=60)
    assert result.returncode == 1
    assert result.stderr == ("mosaicist: error: the standard output: No space left on "
                             "device\n")
