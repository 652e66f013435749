"""``mosaicist batch``: one library, outputs equal to ``make``'s, resume; videos in and out."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import banded_tile as _tile
from conftest import shifted_picture as _picture
from conftest import write_frames as _write_frames
from PIL import Image

from mosaicist import MosaicOptions, Placements, TileLibrary, make_mosaic
from mosaicist.batch import (
    STATE_FOLDER,
    Picks,
    StableMatcher,
    cell_changes,
    collect_targets,
    discounted,
    library_fingerprint,
    stable_mosaic,
    write_video,
)
from mosaicist.batch._stable import (
    anchored_signature,
    cell_signature,
    changed_cells,
    previous_candidates,
)
from mosaicist.batch._video import video_rate
from mosaicist.cli import main
from mosaicist.errors import MosaicistError, OptionError
from mosaicist.grid import make_grid
from mosaicist.match import MatchRequest, brute_force, fitted_matcher, verify_placement

av = pytest.importorskip("av")

CELL, TILE = 8, 8
GRID = ["--cell", str(CELL), "--tile-px", str(TILE)]
FRAMES = 8


def _write_video(path: Path, frames: int, width: int = 48, height: int = 32) -> None:
    _write_frames(path, [_picture(width, height, index) for index in range(frames)])


def _decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    rng = np.random.default_rng(3)
    tiles = root / "tiles"
    tiles.mkdir()
    for index in range(48):
        Image.fromarray(_tile(rng)).save(tiles / f"t{index:03d}.png")
    targets = root / "targets"
    targets.mkdir()
    for index, (width, height) in enumerate([(48, 40), (56, 32), (40, 40)]):
        picture = _picture(width, height, 7 * index)
        Image.fromarray(picture).save(targets / f"img{index}.png")
    (targets / "notes.md").write_text("not a target")  # other extensions are left out
    bad = root / "bad.jpg"
    bad.write_bytes(b"this is no image")
    extra = root / "extra.jpg"
    Image.fromarray(_picture(32, 24, 3)).save(extra, quality=90)
    listing = root / "more.txt"
    listing.write_text(f"# targets\n\n{extra.name}\n{bad}\n")
    video = root / "clip.mp4"
    _write_video(video, FRAMES)
    return root, tiles, targets, listing, video


def run(args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def make_output(data, target, output, *extra):
    tiles = data[1]
    result = run(["make", target, "--tiles", tiles, "-o", output, *GRID, "-q", *extra])
    assert result.exit_code == 0, result.output
    return output.read_bytes()


def test_outputs_equal_make_and_bad_target_is_one_line(data, tmp_path):
    root, tiles, targets, listing, video = data
    out = tmp_path / "out"
    result = run(["batch", targets, listing, video, "--tiles", tiles, "-o", out, *GRID,
                  "--workers", 2, "--report", tmp_path / "report.json"])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("mosaicist: error")]
    assert len(errors) == 1 and str(root / "bad.jpg") in errors[0], result.stderr
    assert "Traceback" not in result.output
    made = sorted(path.name for path in out.iterdir() if not path.name.startswith("."))
    frames = [f"clip-{index:06d}.png" for index in range(FRAMES)]
    assert made == sorted(["img0.png", "img1.png", "img2.png", "extra.png", *frames])
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["made"], report["failed"], report["skipped"]) == (len(made), 1, 0)
    # Byte for byte what 'make' makes: images, and frames saved losslessly.
    for name in ("img0", "img1", "img2"):
        assert (out / f"{name}.png").read_bytes() == make_output(
            data, targets / f"{name}.png", tmp_path / f"{name}-make.png")
    assert (out / "extra.png").read_bytes() == make_output(data, root / "extra.jpg",
                                                          tmp_path / "extra-make.png")
    for index, frame in enumerate(_decoded(video)):
        if index in (0, FRAMES - 1):
            saved = tmp_path / f"frame{index}.png"
            Image.fromarray(frame).save(saved)
            assert (out / frames[index]).read_bytes() == make_output(
                data, saved, tmp_path / f"frame{index}-make.png")


def test_resume_skips_finished_outputs(data, tmp_path):
    root, tiles, targets, _, _ = data
    out = tmp_path / "out"
    args = ["batch", targets, "--tiles", tiles, "-o", out, *GRID, "--workers", 1,
            "--format", "jpg", "--report", tmp_path / "report.json"]
    assert run(args).exit_code == 0
    before = {path.name: path.stat().st_mtime_ns for path in out.glob("*.jpg")}
    assert len(before) == 3
    # A writer killed mid-file leaves only a hidden temporary: not a finished output.
    (out / "img1.jpg").unlink()
    stale = out / ".img1.jpg.999999999-abcdefgh.part.jpg"
    stale.write_bytes(b"half")
    result = run(args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    status = {Path(entry["output"]).name: entry["status"] for entry in report["targets"]}
    assert status == {"img0.jpg": "skipped", "img1.jpg": "made", "img2.jpg": "skipped"}
    assert not stale.exists()
    after = {path.name: path.stat().st_mtime_ns for path in out.glob("*.jpg")}
    assert after["img0.jpg"] == before["img0.jpg"] and after["img2.jpg"] == before["img2.jpg"]
    assert (out / "img1.jpg").read_bytes() == make_output(
        data, targets / "img1.png", tmp_path / "img1-make.jpg")
    # Other settings in the same folder: refused, unless --overwrite makes them all again.
    refused = run([*args[:-2], "--cell", 4])
    assert refused.exit_code != 0 and "--overwrite" in refused.stderr
    assert "cell_px" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    again = run([*args, "--overwrite"])
    assert again.exit_code == 0
    assert json.loads((tmp_path / "report.json").read_text())["made"] == 3


def finished(folder: Path) -> list[Path]:
    """The outputs under their final names (a killed writer's ``.NAME.*.part.png`` is not one)."""
    return [path for path in folder.glob("*.png") if not path.name.startswith(".")]


def _started_batch(tiles: Path, tmp_path: Path, workers: int,
                   ) -> tuple[subprocess.Popen, Path, Path]:
    """A batch of 24 targets started in a session of its own: the process, targets, outputs."""
    many = tmp_path / "many"
    many.mkdir()
    for index in range(24):
        Image.fromarray(_picture(64, 48, index)).save(many / f"p{index:02d}.png")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "mosaicist", "batch", str(many), "--tiles", str(tiles),
               "-o", str(out), *GRID, "--workers", str(workers), "-q"]
    env = dict(os.environ, MOSAICIST_THREADS="1")
    process = subprocess.Popen(command, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, many, out


def test_killed_batch_loses_nothing_finished(data, tmp_path):
    root, tiles, _, _, _ = data
    process, many, out = _started_batch(tiles, tmp_path, workers=1)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if len(finished(out)) >= 3:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the batch ended before it could be killed"
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    kept = {path.name: path.read_bytes() for path in finished(out)}
    assert 3 <= len(kept) < 24
    report = tmp_path / "report.json"
    result = run(["batch", many, "--tiles", tiles, "-o", out, *GRID, "--workers", 2,
                  "--report", report])
    assert result.exit_code == 0, result.output
    entries = json.loads(report.read_text())["targets"]
    skipped = {Path(entry["output"]).name for entry in entries if entry["status"] == "skipped"}
    # An output published but not yet recorded as made when the kill came (one per
    # worker at most) is made again, the same bytes.
    assert skipped <= set(kept) and len(set(kept) - skipped) <= 1
    assert not [path for path in out.iterdir() if path.name.endswith((".part.png", ".part"))]
    for name, content in kept.items():
        assert (out / name).read_bytes() == content
    assert (out / "p23.png").read_bytes() == make_output(
        data, many / "p23.png", tmp_path / "p23-make.png")


def _alive(pids: list[int]) -> list[int]:
    """Those of ``pids`` still running (a zombie has ended)."""
    living = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            living.append(pid)
    return living


def _pool_once_one_is_finished(process, out) -> list[int]:
    """The running batch's pool processes (its process group but itself), once an output is."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if finished(out):
            break
        time.sleep(0.05)
    assert process.poll() is None, "the batch ended before it could be stopped"
    return [int(pid) for pid in subprocess.run(
        ["pgrep", "-g", str(process.pid)], capture_output=True, text=True).stdout.split()
        if int(pid) != process.pid]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "term"])
def test_a_batch_stopped_alone_leaves_no_pool_process(data, tmp_path, stop):
    # A signal to the batch's own process only (not its group). kill -9: its pool's
    # workers used to wait for work forever, reparented to init. SIGTERM: it stops its
    # pool and exits as SIGTERM would (143), without a traceback, not at once.
    root, tiles, _, _, _ = data
    process, _, out = _started_batch(tiles, tmp_path, workers=2)
    group: list[int] = []
    try:
        group = _pool_once_one_is_finished(process, out)
        assert group, "the batch started no pool process"
        process.send_signal(stop)
        process.wait(timeout=30)
        if stop == signal.SIGTERM:
            assert process.returncode == 128 + signal.SIGTERM
        deadline = time.monotonic() + 20
        while _alive(group) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(group)
    finally:
        if process.poll() is None:
            process.kill()
        for pid in _alive(group):
            os.kill(pid, signal.SIGKILL)


def test_output_folder_that_holds_the_targets_is_refused(data, tmp_path):
    tiles = data[1]
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(_picture(40, 32)).save(photos / "a.png")
    Image.fromarray(_picture(40, 32, 5)).save(photos / "b.jpg", quality=95)
    before = {path.name: path.read_bytes() for path in photos.iterdir()}
    # The folder of targets as the output folder: refused before any work.
    for extra in ([], ["--overwrite"], ["--format", "jpg"]):
        result = run(["batch", photos, "--tiles", tiles, "-o", photos, *GRID, *extra])
        assert result.exit_code != 0
        assert len(result.stderr.strip().splitlines()) == 1
        assert "--output-dir" in result.stderr and "folder of targets" in result.stderr
        assert {path.name: path.read_bytes() for path in photos.iterdir()} == before
    # A target named in the output folder in the output's format: it is never replaced
    # by its mosaic (nor skipped as done); the others are made.
    result = run(["batch", photos / "a.png", photos / "b.jpg", "--tiles", tiles, "-o", photos,
                  *GRID, "--overwrite", "--report", tmp_path / "report.json"])
    assert result.exit_code != 0
    assert "would replace it" in result.stderr
    assert (photos / "a.png").read_bytes() == before["a.png"]
    assert (photos / "b.jpg").read_bytes() == before["b.jpg"]
    assert (photos / "b.png").exists()
    status = {Path(entry["name"]).name: entry["status"]
              for entry in json.loads((tmp_path / "report.json").read_text())["targets"]}
    assert status == {"a.png": "failed", "b.jpg": "made"}


def test_video_out_and_stability_reduce_flicker(data, tmp_path):
    root, tiles, _, _, video = data
    reports = {}
    for name, extra in (("plain", []), ("stable", ["--stable", 1])):
        out = tmp_path / name
        result = run(["batch", video, "--tiles", tiles, "-o", out, *GRID, "--preset", "seed",
                      "--video", tmp_path / f"{name}.mp4", "--report",
                      tmp_path / f"{name}.json", *extra])
        assert result.exit_code == 0, result.output
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())
        decoded = _decoded(tmp_path / f"{name}.mp4")
        # 32x48 target at 8 px cells, 8 px tiles: a 48x32 video of every frame.
        assert len(decoded) == FRAMES and decoded[0].shape == (32, 48, 3)
    plain, stable = reports["plain"], reports["stable"]
    assert plain["video"]["frames"] == FRAMES
    assert stable["flicker"]["clip"]["cell_change"] < 0.5 * plain["flicker"]["clip"]["cell_change"]
    assert stable["video"]["pixel_change"] < plain["video"]["pixel_change"]
    # The video's figure is the clip's too (one video in, one out).
    for report in (plain, stable):
        assert report["flicker"]["clip"]["pixel_change"] == report["video"]["pixel_change"]
    # The first frame has no previous one: exactly the plain mosaic.
    first = "clip-000000.png"
    assert (tmp_path / "stable" / first).read_bytes() == (tmp_path / "plain" / first).read_bytes()
    last = "clip-000007.png"
    assert (tmp_path / "stable" / last).read_bytes() != (tmp_path / "plain" / last).read_bytes()


def test_a_cut_in_a_stable_video_starts_the_new_shot_afresh(data, tmp_path):
    # At --stable 10 a tile stays unless another is 11 times closer: the second shot was
    # drawn with the first shot's tiles.
    _, tiles, _, _, _ = data
    first = _picture(48, 32, 1)
    second = np.ascontiguousarray(_picture(48, 32, 9)[::-1, ::-1, ::-1])
    video = tmp_path / "cut.mp4"
    _write_frames(video, [first, first, second, second])
    made = {}
    for strength in (0, 10):
        out = tmp_path / f"s{strength}"
        result = run(["batch", video, "--tiles", tiles, "-o", out, *GRID, "--preset", "seed",
                      "--stable", strength, "-q"])
        assert result.exit_code == 0, result.output
        made[strength] = [(out / f"cut-{index:06d}.png").read_bytes() for index in range(4)]
    # The cut's frame is the plain mosaic of the new shot; the frame after it, the same
    # shot again, keeps its tiles.
    assert made[10][2] == made[0][2]
    assert made[10][3] == made[10][2]


def _library(data) -> TileLibrary:
    return TileLibrary.open(data[1], TILE)


def _request(library, picture, **settings):
    options = MosaicOptions(cell_px=CELL, tile_px=TILE, **settings)
    matcher, options, _ = fitted_matcher(options)
    grid = make_grid(picture, CELL)
    return matcher, MatchRequest(grid, library, options)


@pytest.mark.parametrize("tint", [0.0, 0.5])
def test_stable_rule_against_brute_force(data, tint):
    library = _library(data)
    before, after = _picture(64, 48, 0), _picture(64, 48, 2)
    matcher, request = _request(library, after, preset="seed", tint=tint)
    _, first = _request(library, before, preset="seed", tint=tint)
    previous = matcher.match(first).tile
    plain = matcher.match(request)
    hundredths = 30
    stable = StableMatcher(matcher, previous, hundredths).match(request)
    # Every cell-tile distance, untinted, by the reference: the rule on those numbers.
    cells = request.grid.cells
    reference = np.stack([brute_force(cells, library.tiles[[tile]]).distance
                          for tile in range(len(library))], axis=1)
    if not tint:
        rows = np.arange(len(cells))
        np.testing.assert_array_equal(reference[rows, plain.tile], plain.distance)
        keep = discounted(reference[rows, previous], hundredths) <= reference[rows, plain.tile]
        np.testing.assert_array_equal(stable.tile, np.where(keep, previous, plain.tile))
        np.testing.assert_array_equal(stable.distance, reference[rows, stable.tile])
    changed = stable.tile != plain.tile
    assert changed.any() and (stable.tile[changed] == previous[changed]).all()
    assert (stable.tile != previous).sum() < (plain.tile != previous).sum()


def test_stable_assignment_keeps_limits_and_a_still_picture(data):
    library = _library(data)
    picture = _picture(64, 48, 1)
    matcher, request = _request(library, picture, max_uses=2, min_spacing=2)
    first = matcher.match(request)
    grid = request.grid
    verify_placement(first.tile, grid.rows, grid.cols, 2, 2)
    # The same picture again: every tile kept, at its true distance.
    _, again = _request(library, picture, max_uses=2, min_spacing=2)
    kept = StableMatcher(matcher, first.tile, 50).match(again)
    np.testing.assert_array_equal(kept.tile, first.tile)
    np.testing.assert_array_equal(kept.distance, first.distance)
    # A changed picture: the limits still hold, fewer cells change than without stability.
    moved = _picture(64, 48, 3)
    _, request = _request(library, moved, max_uses=2, min_spacing=2)
    plain = matcher.match(request)
    _, request = _request(library, moved, max_uses=2, min_spacing=2)
    stable = StableMatcher(matcher, first.tile, 50).match(request)
    verify_placement(stable.tile // request.variants, grid.rows, grid.cols, 2, 2)
    assert (stable.tile != first.tile).sum() < (plain.tile != first.tile).sum()
    assert stable.assignment is not None
    assert stable.assignment.objective == pytest.approx(float(stable.distance.sum()))
    assert stable.assignment.objective >= plain.assignment.objective


@pytest.mark.parametrize("settings", [{"preset": "seed"}, {}, {"max_uses": 2}])
def test_stable_cells_whose_picture_changed_are_matched_afresh(data, settings):
    # A strong stability held the last scene's tiles across a cut (at 10 a tile stays
    # unless another is 11 times closer): cells whose picture changed are matched afresh,
    # and a frame where most of them did is a new scene.
    library = _library(data)
    before = _picture(64, 48, 1)
    other = np.ascontiguousarray(_picture(64, 48, 9)[::-1, ::-1, ::-1])
    matcher, request = _request(library, before, **settings)
    previous = matcher.match(request).tile
    signature = cell_signature(request.grid.cells)
    hundredths = 1000

    # The same picture, and one a few levels off: no cell changed, every tile kept.
    for again in (before, np.clip(before.astype(int) + 9, 0, 255).astype(np.uint8)):
        _, request = _request(library, again, **settings)
        same = StableMatcher(matcher, previous, hundredths, signature)
        np.testing.assert_array_equal(same.match(request).tile, previous)
        assert same.changed == 0 and not same.new_scene

    # A cut: the plain mosaic of the new picture, where before most tiles stayed.
    _, cut = _request(library, other, **settings)
    plain = matcher.match(cut)
    _, cut = _request(library, other, **settings)
    held = StableMatcher(matcher, previous, hundredths).match(cut)
    assert (held.tile == previous).mean() > (plain.tile == previous).mean() + 0.2
    _, cut = _request(library, other, **settings)
    fresh = StableMatcher(matcher, previous, hundredths, signature)
    np.testing.assert_array_equal(fresh.match(cut).tile, plain.tile)
    assert fresh.new_scene and fresh.changed > len(previous) // 2

    # The left three columns of cells changed: they are matched afresh, the others keep
    # their tiles.
    partial = before.copy()
    partial[:, :3 * CELL] = other[:, :3 * CELL]
    _, request = _request(library, partial, **settings)
    stable = StableMatcher(matcher, previous, hundredths, signature)
    picked = stable.match(request).tile
    grid = request.grid
    left = (np.arange(grid.rows * grid.cols) % grid.cols) < 3
    assert not stable.new_scene and stable.changed == left.sum()
    kept = (picked[~left] == previous[~left]).mean()
    # Under use limits the cells matched afresh may take tiles others must then give up.
    assert kept == 1 if not matcher.repetition_limits else kept > 0.8
    assert (picked[left] != previous[left]).mean() > 0.5


def test_cell_signature_is_each_cells_block_means():
    rng = np.random.default_rng(5)
    cells = rng.integers(0, 256, (6, 8, 12, 3), np.uint8)
    signature = cell_signature(cells)
    assert signature.shape == (6, 4, 4, 3) and signature.dtype == np.uint8
    expected = cells.astype(float).reshape(6, 4, 2, 4, 3, 3).mean(axis=(2, 4))
    np.testing.assert_array_equal(signature, np.rint(expected))
    # Cells smaller than the blocks, and of sides the blocks do not divide.
    assert cell_signature(cells[:, :2, :3]).shape == (6, 2, 3, 3)
    odd = cell_signature(cells[:, :7, :5])
    assert odd.shape == (6, 4, 4, 3)
    np.testing.assert_array_equal(odd[:, 0, 0], np.rint(cells[:, :2, :1].mean(axis=(1, 2))))
    flat = np.full((4, 4, 4, 3), 100, np.uint8)
    moved = flat + np.array([0, 39, 40, 41], np.uint8)[:, None, None, None]
    assert changed_cells(moved, flat).tolist() == [False, False, False, True]
    half = flat.copy()
    half[:, :2] = 182  # half the blocks 82 levels off: 58 levels root mean square
    assert changed_cells(half, flat).all()


def test_anchored_signature_keeps_where_each_tile_was_chosen():
    # A slow pan moved each cell a little a frame, never past the change measured from
    # frame to frame: a tile stays anchored where it was chosen.
    rng = np.random.default_rng(2)
    cells = rng.integers(60, 190, (4, 8, 8, 3), np.uint8)
    anchor = cell_signature(cells)
    previous = Picks(np.array([5, 6, 7, 8]), np.zeros(4), 2, 2, 1, 10, anchor)
    now = cells.copy()
    now[1] = np.clip(now[1].astype(int) + 30, 0, 255)  # kept its tile, moved 30: anchor stays
    now[2] = np.clip(now[2].astype(int) + 60, 0, 255)  # moved 60: matched afresh, anchored now
    placements = Placements(2, 2, np.array([5, 6, 7, 9]), np.zeros(4),
                            ["a", "b", "c", "d"], np.zeros(4, np.int8))
    anchored = anchored_signature(now, placements, previous)
    current = cell_signature(now)
    np.testing.assert_array_equal(anchored[[0, 1]], anchor[[0, 1]])
    np.testing.assert_array_equal(anchored[[2, 3]], current[[2, 3]])  # moved; another tile
    # No earlier picks, or none with signatures: every cell anchored now.
    np.testing.assert_array_equal(anchored_signature(now, placements, None), current)
    unsigned = Picks(previous.tile, previous.transform, 2, 2, 1, 10)
    np.testing.assert_array_equal(anchored_signature(now, placements, unsigned), current)


def test_picks_keep_their_signature_and_read_old_ones_without(tmp_path):
    signature = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    Picks(np.array([3, 1]), np.array([0, 0]), 1, 2, 7, 10, signature).save(
        str(tmp_path / "p.npz"))
    back = Picks.load(str(tmp_path / "p.npz"))
    assert back is not None and back.signature is not None
    np.testing.assert_array_equal(back.signature, signature)
    # Picks saved before signatures were kept, or with a damaged one: the tiles steer.
    Picks(np.array([3, 1]), np.array([0, 0]), 1, 2, 7, 10).save(str(tmp_path / "old.npz"))
    old = Picks.load(str(tmp_path / "old.npz"))
    assert old is not None and old.signature is None and list(old.tile) == [3, 1]
    Picks(np.array([3, 1]), np.array([0, 0]), 1, 2, 7, 10, signature[:1]).save(
        str(tmp_path / "bad.npz"))
    bad = Picks.load(str(tmp_path / "bad.npz"))
    assert bad is not None and bad.signature is None


def test_stable_mosaic_without_previous_is_make_mosaic(data, tmp_path):
    library = _library(data)
    frame = _picture(56, 40, 5)
    for settings in ({}, {"preset": "seed", "augment": "flips"}):
        options = MosaicOptions(cell_px=CELL, tile_px=TILE, **settings)
        made = make_mosaic(frame, library, options)
        stable = stable_mosaic(frame, library, options, None, 0.5)
        made.write(tmp_path / "made.png")
        stable.write(tmp_path / "stable.png")
        assert (tmp_path / "made.png").read_bytes() == (tmp_path / "stable.png").read_bytes()
        assert made.report()["metrics"] == stable.report()["metrics"]
        # Picks of another library are not used (tests/test_batch_stable.py: of the same
        # generation and size too).
        picks = Picks(made.placements.tile, made.placements.transform, made.grid.rows,
                      made.grid.cols, library.generation, len(library), library="0" * 32)
        _, request = _request(library, frame, **settings)
        assert previous_candidates(request, picks, library_fingerprint(library)) is None


def test_deep_zoom_outputs_and_finished_check(data, tmp_path):
    root, tiles, targets, _, _ = data
    out = tmp_path / "out"
    result = run(["batch", targets / "img0.png", "--tiles", tiles, "-o", out, *GRID,
                  "--format", "dzi", "--workers", 1])
    assert result.exit_code == 0, result.output
    made = tmp_path / "made"
    made.mkdir()
    make_output(data, targets / "img0.png", made / "img0.dzi")
    for name in ("img0.dzi", "img0.html", "img0.viewer.json"):
        assert (out / name).read_bytes() == (made / name).read_bytes(), name
    tiles_made = sorted(path.relative_to(made) for path in (made / "img0_files").rglob("*.*"))
    assert tiles_made == sorted(path.relative_to(out) for path in
                                (out / "img0_files").rglob("*.*"))
    for path in tiles_made:
        assert (out / path).read_bytes() == (made / path).read_bytes()
    # A pyramid without its viewer page was cut short: made again.
    (out / "img0.html").unlink()
    report = tmp_path / "report.json"
    assert run(["batch", targets / "img0.png", "--tiles", tiles, "-o", out, *GRID, "--format",
                "dzi", "--workers", 1, "--report", report]).exit_code == 0
    assert json.loads(report.read_text())["made"] == 1 and (out / "img0.html").is_file()


def test_targets_are_collected_in_order(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("b.png", "a.jpg", ".hidden.png", "c.mp4", "readme.md"):
        (folder / name).write_bytes(b"x")
    (folder / "sub").mkdir()
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "c-000003.png").write_bytes(b"x")
    (tmp_path / "inner.txt").write_text("a.png\n")
    listing = tmp_path / "list.txt"
    listing.write_text("# comment\n\nfolder/b.png\nmissing.png\ninner.txt\n  a.png  \n")
    found, rejected = collect_targets([folder, listing, tmp_path / "a.png",
                                       tmp_path / "c-000003.png", tmp_path / "nothing.gif",
                                       tmp_path / "inner.txt"])
    assert [(target.path.name, target.video) for target in found] == [
        ("a.jpg", False), ("b.png", False), ("c.mp4", True)]
    reasons = {Path(item.name.split(": ")[-1]).name: item.message for item in rejected}
    # As make says it (a batch said "not found").
    assert reasons["missing.png"] == reasons["nothing.gif"] == "target file not found"
    missing = collect_targets([tmp_path / "gone", tmp_path / "gone.txt"])[1]
    assert [item.message for item in missing] == ["target file or folder not found",
                                                  "list file not found"]
    assert "another list" in reasons["inner.txt"]
    # a.png's output would be a.jpg's (a.png); c-000003.png is a frame of c.mp4.
    assert "a.jpg" in reasons["a.png"] and "c.mp4" in reasons["c-000003.png"]
    assert len(rejected) == 5


def test_settings_errors_come_before_any_work(data, tmp_path):
    root, tiles, targets, _, _ = data
    out = tmp_path / "out"
    for extra, words in (
        (["--format", "bmp"], ["--format", "bmp"]),
        # As typed: not "between 0.0 and 10.0, got 20.0" (the command line reads floats).
        (["--stable", 20], ["--stable", "between 0 and 10, got 20"]),
        (["--video", tmp_path / "v.mp4", "--format", "tif"], ["--video", "png"]),
        (["--video", tmp_path / "v.xyz"], ["v.xyz", "unknown video format"]),
        (["--stable", 0.5, "--adaptive", 1], ["--stable", "--adaptive"]),
        (["--scheduler", "nowhere"], ["--scheduler"]),
        (["--max-uses", 0], ["--max-uses"]),
        (["--workers", 0], ["--workers"]),
        # A rate no video can have: refused before the frames are made, not after.
        (["--video", tmp_path / "v.mp4", "--fps", "inf"], ["--fps", "inf"]),
        (["--video", tmp_path / "v.mp4", "--fps", "nan"], ["--fps", "nan"]),
        (["--video", tmp_path / "v.mp4", "--fps", "1e-9"], ["--fps", "0.01 and 1000"]),
        (["--video", tmp_path / "v.mp4", "--fps", "0.0001"], ["--fps", "0.01 and 1000"]),
        (["--video", tmp_path / "v.mp4", "--fps", "1e9"], ["--fps", "0.01 and 1000"]),
        (["--video", tmp_path / "v.mp4", "--fps", "0"], ["--fps", "0.01 and 1000"]),
    ):
        result = run(["batch", targets, "--tiles", tiles, "-o", out, *GRID, *extra])
        assert result.exit_code != 0, extra
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mosaicist: error: "), result.stderr
        for word in words:
            assert str(word) in lines[0], (extra, lines[0])
        assert not lines[0].endswith(".0"), lines[0]  # "--fps 0" said "got 0.0"
    assert not out.exists() or not [path for path in out.iterdir()
                                    if path.name != STATE_FOLDER]
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run(["batch", empty, "--tiles", tiles, "-o", out, *GRID])
    assert result.exit_code != 0 and "no image or video" in result.stderr


def test_cell_changes_counts_tile_and_transform():
    tile = np.array([1, 2, 3, 4])
    flat = np.zeros(4, np.int8)
    picks = [(tile, flat), (np.array([1, 2, 3, 5]), flat), (np.array([1, 2, 3, 5]),
                                                              np.array([0, 0, 4, 0], np.int8)),
             None]
    assert cell_changes(picks) == [0.25, 0.25, None]


def test_scheduler_local_cluster_equals_the_pool(data, tmp_path):
    pytest.importorskip("distributed")
    root, tiles, targets, _, video = data
    pool, cluster = tmp_path / "pool", tmp_path / "cluster"
    for out, extra in ((pool, ["--workers", 2]), (cluster, ["--scheduler", "local:2"])):
        result = run(["batch", targets, video, "--tiles", tiles, "-o", out, *GRID, *extra])
        assert result.exit_code == 0, result.output
    names = sorted(path.name for path in pool.glob("*.png"))
    assert len(names) == 3 + FRAMES
    assert names == sorted(path.name for path in cluster.glob("*.png"))
    for name in names:
        assert (pool / name).read_bytes() == (cluster / name).read_bytes(), name


def test_saved_picks_round_trip_and_damaged_files_read_as_none(tmp_path):
    picks = Picks(np.arange(6), np.zeros(6, np.int8), 2, 3, 7, 40)
    path = tmp_path / "picks.npz"
    picks.save(str(path))
    loaded = Picks.load(str(path))
    assert loaded is not None
    assert np.array_equal(loaded.tile, picks.tile) and (loaded.rows, loaded.cols) == (2, 3)
    assert (loaded.generation, loaded.tiles) == (7, 40)
    whole = path.read_bytes()
    # Cut short at any length, garbage, or missing: the frame is matched afresh.
    for damaged in (whole[:len(whole) // 2], whole[:-1], whole[:10], b"", b"garbage"):
        path.write_bytes(damaged)
        assert Picks.load(str(path)) is None
    path.unlink()
    assert Picks.load(str(path)) is None


def test_video_rate_is_the_rate_checked():
    # The ends of the range stay what they are as fractions (never 0, never above).
    assert video_rate(0.01) == Fraction(1, 100) and video_rate(1000) == 1000
    assert video_rate(30000 / 1001) == Fraction(30000, 1001) and video_rate(Fraction(24)) == 24
    for bad in (float("inf"), float("-inf"), float("nan"), 0, -1, 1e-9, 0.0001, 1e9, "fast"):
        with pytest.raises(OptionError) as raised:
            video_rate(bad)
        assert raised.value.parameters == ("fps",)
    with pytest.raises(OptionError, match=r"got 0$"):
        video_rate(0.0)  # "--fps 0", read as a float: it said "got 0.0"


def test_write_video_at_the_lowest_rate(tmp_path):
    frames = [_picture(16, 16, shift) for shift in range(2)]
    written = write_video(frames, tmp_path / "slow.mp4", 0.01)
    assert written.rate == Fraction(1, 100) and written.frames == 2
    with pytest.raises(OptionError):
        write_video(frames, tmp_path / "never.mp4", float("inf"))
    assert not (tmp_path / "never.mp4").exists()


def test_a_folder_without_outputs_takes_new_settings(data, tmp_path):
    root, tiles, targets, _, _ = data
    out = tmp_path / "out"
    # Nothing to make: the folder is not claimed at all.
    result = run(["batch", tmp_path / "typo.png", "--tiles", tiles, "-o", out, *GRID])
    assert result.exit_code == 1 and "not found" in result.stderr
    assert not (out / STATE_FOLDER).exists()
    # A batch whose every target failed: its settings are there, but no output.
    result = run(["batch", root / "bad.jpg", "--tiles", tiles, "-o", out, *GRID])
    assert result.exit_code == 1
    assert (out / STATE_FOLDER / "settings.json").is_file()
    # Other settings: made, without --overwrite.
    report = tmp_path / "report.json"
    result = run(["batch", targets / "img0.png", "--tiles", tiles, "-o", out, "--cell", 4,
                  "--tile-px", TILE, "--report", report])
    assert result.exit_code == 0, result.output
    assert json.loads(report.read_text())["made"] == 1
    # Now it holds an output: other settings again are refused.
    refused = run(["batch", targets / "img0.png", "--tiles", tiles, "-o", out, *GRID])
    assert refused.exit_code != 0 and "--overwrite" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_each_error_names_its_target_once(data, tmp_path):
    root, tiles, _, _, video = data
    tiny = tmp_path / "tiny.png"
    Image.fromarray(_picture(1, 1)).save(tiny)
    # Too small a picture (the worker's error), too large a video (the decoder's), too
    # small frames (the worker's, named by frame).
    for number, (target, extra, words) in enumerate((
        (tiny, [], "smaller than one"),
        (video, ["--max-target-pixels", 1000], "over the target limit"),
        (video, ["--cell", 64], "smaller than one"),
    )):
        result = run(["batch", target, "--tiles", tiles, "-o", tmp_path / f"out{number}", *GRID,
                      *extra, "--workers", 1, "-q"])
        assert result.exit_code == 1
        errors = result.stderr.strip().splitlines()
        assert errors and all(line.startswith("mosaicist: error: ") and words in line
                              for line in errors), errors
        for line in errors:
            assert line.count(target.name) == 1, line


def test_list_file_with_a_byte_order_mark(tmp_path):
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(b"x")
    # As Notepad saves it: a byte-order mark, Windows line ends.
    (tmp_path / "paths.txt").write_bytes("\ufeffa.png\r\nb.png\r\n".encode())
    (tmp_path / "commented.txt").write_bytes("\ufeff# mine\r\nb.png\r\n".encode())
    found, rejected = collect_targets([tmp_path / "paths.txt"])
    assert [target.path.name for target in found] == ["a.png", "b.png"] and not rejected
    found, rejected = collect_targets([tmp_path / "commented.txt"])
    assert [target.path.name for target in found] == ["b.png"] and not rejected


def test_a_dangling_link_in_a_folder_is_a_bad_target(tmp_path):
    # A link to a missing file was left out of a folder's targets without a word.
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"x")
    (folder / "gone.png").symlink_to(tmp_path / "missing.png")
    (folder / "gone.md").symlink_to(tmp_path / "missing.md")  # not a target's extension
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    found, rejected = collect_targets([folder])
    assert [target.path.name for target in found] == ["a.png"]
    reasons = {Path(item.name).name: item.message for item in rejected}
    assert set(reasons) == {"gone.png", "loop.jpg"}
    assert all("broken link" in message for message in reasons.values()), reasons


def test_a_pipe_or_a_device_in_a_folder_is_a_bad_target(tmp_path):
    """A pipe named as a picture, and a link to /dev/zero, were left out without a word."""
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"x")
    os.mkfifo(folder / "pipe.png")
    (folder / "zero.jpg").symlink_to("/dev/zero")
    (folder / "sub.png").mkdir()  # a folder so named stays left out, as folders are
    found, rejected = collect_targets([folder])
    assert [target.path.name for target in found] == ["a.png"]
    reasons = {Path(item.name).name: item.message for item in rejected}
    assert set(reasons) == {"pipe.png", "zero.jpg"}
    assert all(message.startswith("not a regular file") for message in reasons.values())


def test_batch_reports_a_dangling_link_and_makes_the_others(data, tmp_path):
    root, tiles, targets, _, _ = data
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "img0.png").write_bytes((targets / "img0.png").read_bytes())
    (folder / "gone.png").symlink_to(tmp_path / "missing.png")
    out = tmp_path / "out"
    result = run(["batch", folder, "--tiles", tiles, "-o", out, *GRID, "--workers", 1, "-q"])
    assert result.exit_code == 1, result.output
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("mosaicist: error: "), result.stderr
    assert str(folder / "gone.png") in errors[0] and "broken link" in errors[0]
    assert finished(out) == [out / "img0.png"]


def _statuses(report: Path) -> dict[str, str]:
    return {Path(entry["name"]).name: entry["status"]
            for entry in json.loads(report.read_text())["targets"]}


def test_outputs_of_other_settings_are_never_taken_for_done(data, tmp_path):
    # An --overwrite run with new settings that stopped early (here: given one target of
    # two) left the other output of the old settings; the new settings' resume made it
    # done, and the folder mixed two batches.
    root, tiles, targets, _, _ = data
    out, report = tmp_path / "out", tmp_path / "report.json"
    both = [targets / "img0.png", targets / "img1.png"]
    base = ["--tiles", tiles, "-o", out, *GRID, "--workers", 1, "-q"]
    assert run(["batch", *both, *base, "--preset", "seed"]).exit_code == 0
    assert run(["batch", both[0], *base, "--preset", "varied", "--overwrite"]).exit_code == 0
    result = run(["batch", *both, *base, "--preset", "varied", "--report", report])
    assert result.exit_code == 0, result.output
    assert _statuses(report) == {"img0.png": "skipped", "img1.png": "made"}
    assert (out / "img1.png").read_bytes() == make_output(
        data, both[1], tmp_path / "img1-make.png", "--preset", "varied")


def test_a_target_edited_is_made_again_and_another_with_its_stem_refused(data, tmp_path):
    root, tiles, targets, _, _ = data
    out, report = tmp_path / "out", tmp_path / "report.json"
    mine = tmp_path / "mine" / "a.png"
    mine.parent.mkdir()
    Image.fromarray(_picture(40, 32)).save(mine)
    base = ["--tiles", tiles, "-o", out, *GRID, "--workers", 1, "-q", "--report", report]
    assert run(["batch", mine, *base]).exit_code == 0
    # Another picture whose output has the same name: refused, as within one run.
    other = tmp_path / "other" / "a.png"
    other.parent.mkdir()
    Image.fromarray(_picture(40, 32, 9)).save(other)
    before = (out / "a.png").read_bytes()
    result = run(["batch", other, *base])
    assert result.exit_code == 1 and "earlier batch" in result.stderr, result.output
    assert str(mine) in result.stderr and (out / "a.png").read_bytes() == before
    # The same file edited since: made again.
    Image.fromarray(_picture(40, 32, 21)).save(mine)
    os.utime(mine, ns=(time.time_ns(), time.time_ns() + 10**9))
    result = run(["batch", mine, *base])
    assert result.exit_code == 0, result.output
    assert _statuses(report) == {"a.png": "made"}
    assert (out / "a.png").read_bytes() == make_output(data, mine, tmp_path / "make.png")


def test_cut_short_outputs_are_made_again_and_unreadable_frames_named(data, tmp_path):
    root, tiles, targets, _, _ = data
    out, report = tmp_path / "out", tmp_path / "report.json"
    both = [targets / "img0.png", targets / "img1.png"]
    base = ["--tiles", tiles, "-o", out, *GRID, "--workers", 1, "-q", "--format", "jpg"]
    assert run(["batch", *both, *base]).exit_code == 0
    whole = (out / "img0.jpg").read_bytes()
    with open(out / "img0.jpg", "r+b") as handle:
        handle.truncate(100)  # a power cut's half-written output
    (out / "img1.jpg").write_bytes(b"")
    result = run(["batch", *both, *base, "--report", report])
    assert result.exit_code == 0, result.output
    assert _statuses(report) == {"img0.png": "made", "img1.png": "made"}
    assert (out / "img0.jpg").read_bytes() == whole
    # Damaged since it was recorded (same size): the video names the file and the remedy.
    damaged = whole[:200] + bytes(len(whole) - 200)
    (out / "img0.jpg").write_bytes(damaged)
    result = run(["batch", targets / "img0.png", *base, "--video", tmp_path / "v.mp4"])
    assert result.exit_code == 1
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and str(out / "img0.jpg") in errors[0], result.stderr
    assert "--overwrite" in errors[0] and "Traceback" not in result.output


def test_batch_mosaics_arguments_as_make_mosaic_takes_them(data, tmp_path):
    from mosaicist.batch import batch_mosaics

    root, tiles, targets, _, _ = data
    # One path is one target (not its characters); a mapping is settings.
    result = batch_mosaics(targets / "img0.png", tiles, tmp_path / "one",
                           {"cell_px": CELL, "tile_px": TILE}, workers=1)
    assert [Path(entry.output).name for entry in result.made] == ["img0.png"]
    result = batch_mosaics(str(targets), tiles, tmp_path / "folder", cell_px=CELL,
                           tile_px=TILE, workers=1)
    assert len(result.made) == 3 and not result.failed
    good: dict = {"targets": [targets / "img0.png"], "tiles": tiles,
                  "output_dir": tmp_path / "bad"}
    for name, value in (("targets", None), ("targets", [5]), ("tiles", None),
                        ("output_dir", None), ("workers", 1.5), ("workers", True),
                        ("workers", "2"), ("stable", None), ("stable", True), ("stable", "0.5"),
                        ("fps", True), ("fps", "5"), ("overwrite", "no"), ("options", [1])):
        with pytest.raises(OptionError) as caught:
            batch_mosaics(**{**good, name: value}, cell_px=CELL, tile_px=TILE)
        assert name in str(caught.value), (name, value, caught.value)
    assert not (tmp_path / "bad").exists()


def test_a_script_without_the_main_guard_is_told_so(data, tmp_path):
    root, tiles, targets, _, _ = data
    script = tmp_path / "script.py"
    script.write_text("from mosaicist.batch import batch_mosaics\n"
                      f"batch_mosaics([{str(targets / 'img0.png')!r}], {str(tiles)!r}, "
                      f"{str(tmp_path / 'out')!r}, cell_px={CELL}, tile_px={TILE}, workers=1)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode != 0
    assert "__main__" in done.stderr.strip().splitlines()[-1], done.stderr
    assert "out of memory" not in done.stderr and done.stderr.count("Traceback") == 1


def test_a_folder_of_targets_named_in_a_list_file_is_not_the_output_folder(data, tmp_path):
    tiles = data[1]
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(_picture(40, 32)).save(photos / "a.jpg", quality=95)
    (photos / "list.txt").write_text(".\n")
    for _ in range(2):
        result = run(["batch", photos / "list.txt", "--tiles", tiles, "-o", photos, *GRID])
        assert result.exit_code != 0
        assert "folder of targets" in result.stderr and len(result.stderr.splitlines()) == 1
        assert sorted(path.name for path in photos.iterdir()) == ["a.jpg", "list.txt"]


def test_a_device_that_cannot_run_is_one_error_before_any_work(data, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    root, tiles, _, _, video = data
    out = tmp_path / "out"
    result = run(["batch", video, "--tiles", tiles, "-o", out, *GRID, "--device", "cuda",
                  "--cache-dir", tmp_path / "cache"])
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--device" in lines[0], result.stderr
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_settings_that_change_no_output_are_not_guarded(data, tmp_path):
    root, tiles, targets, _, _ = data
    base = ["--tiles", tiles, *GRID, "--workers", 1, "-q"]
    # Stability changes video frames only; a JPEG quality does not change a PNG.
    for number, (first, second) in enumerate((
            (["--stable", 0.5], []),
            (["--format", "png"], ["--format", "jpg", "--quality", 50]),
            (["--format", "png", "--quality", 90], ["--format", "png"]))):
        out = tmp_path / f"out{number}"
        assert run(["batch", targets / "img0.png", *base, "-o", out, *first]).exit_code == 0
        result = run(["batch", targets / "img0.png", targets / "img1.png", *base, "-o", out,
                      *second])
        assert result.exit_code == 0, (first, second, result.output)
    # What does change them still is refused (out1 holds JPEGs of quality 50).
    result = run(["batch", targets / "img0.png", *base, "-o", tmp_path / "out1", "--format", "jpg",
                  "--quality", 60])
    assert result.exit_code != 0 and "jpeg_quality" in result.stderr
    # A rate no video can have is refused without --video too.
    result = run(["batch", targets / "img0.png", *base, "-o", tmp_path / "fps", "--fps", 0])
    assert result.exit_code != 0 and "--fps" in result.stderr


def _records(out: Path) -> dict[str, dict]:
    """The output records of a batch folder, by output name."""
    records = [json.loads(path.read_text())
               for path in (out / STATE_FOLDER / "outputs").glob("*.json")]
    return {record["output"]: record for record in records}


def test_a_moved_target_folder_is_the_same_target(data, tmp_path):
    # The recorded path was compared as a string: a target folder moved or renamed was
    # refused as another target's clash (and the message offered --overwrite).
    tiles = data[1]
    out, report = tmp_path / "out", tmp_path / "report.json"
    base = ["--tiles", tiles, "-o", out, *GRID, "--workers", 1, "-q", "--report", report]
    first = tmp_path / "first"
    first.mkdir()
    Image.fromarray(_picture(40, 32)).save(first / "a.png")
    assert run(["batch", first / "a.png", *base]).exit_code == 0
    made = (out / "a.png").stat().st_mtime_ns
    moved = tmp_path / "moved"
    first.rename(moved)
    result = run(["batch", moved / "a.png", *base])
    assert result.exit_code == 0, result.output
    assert _statuses(report) == {"a.png": "skipped"}
    assert (out / "a.png").stat().st_mtime_ns == made
    assert _records(out)["a.png"]["target"]["path"] == str(moved / "a.png")
    # Moved and edited: made again, not refused.
    again = tmp_path / "again"
    moved.rename(again)
    Image.fromarray(_picture(40, 32, 5)).save(again / "a.png")
    os.utime(again / "a.png", ns=(time.time_ns(), time.time_ns() + 10**9))
    result = run(["batch", again / "a.png", *base])
    assert result.exit_code == 0, result.output
    assert _statuses(report) == {"a.png": "made"}
    # Another file that is still there: refused, naming the remedy (not --overwrite).
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(_picture(40, 32, 9)).save(other / "a.png")
    result = run(["batch", other / "a.png", *base])
    assert result.exit_code == 1 and "rename one of the two" in result.stderr, result.output
    assert "--overwrite" not in result.stderr


def test_outputs_of_a_version_without_records_are_done(data, tmp_path):
    # An earlier version kept no output records: every output was made again.
    root, tiles, targets, _, _ = data
    out, report = tmp_path / "out", tmp_path / "report.json"
    both = [targets / "img0.png", targets / "img1.png"]
    base = ["--tiles", tiles, "-o", out, *GRID, "--workers", 1, "-q", "--report", report]
    assert run(["batch", *both, *base]).exit_code == 0
    records = out / STATE_FOLDER / "outputs"
    shutil.rmtree(records)  # such a version made no folder of records
    os.utime(out / "img1.png", ns=(0, 0))  # older than its target: edited since
    result = run(["batch", *both, *base])
    assert result.exit_code == 0, result.output
    assert _statuses(report) == {"img0.png": "skipped", "img1.png": "made"}
    assert set(_records(out)) == {"img0.png", "img1.png"}
    # Other settings (allowed by --overwrite) are never taken for an unrecorded output's.
    shutil.rmtree(records)
    assert run(["batch", *both, *base, "--preset", "varied", "--overwrite"]).exit_code == 0
    assert _statuses(report) == {"img0.png": "made", "img1.png": "made"}


def test_a_long_output_name_has_a_record(data, tmp_path):
    # The record was named after the output: its temporary's name was too long.
    tiles = data[1]
    out, report = tmp_path / "out", tmp_path / "report.json"
    target = tmp_path / ("a" * 222 + ".png")  # its output's temporary fits in 255 bytes
    Image.fromarray(_picture(40, 32)).save(target)
    base = ["--tiles", tiles, "-o", out, *GRID, "--workers", 1, "-q", "--report", report]
    result = run(["batch", target, *base])
    assert result.exit_code == 0, result.output
    assert run(["batch", target, *base]).exit_code == 0
    assert list(_statuses(report).values()) == ["skipped"]


def test_records_are_written_without_a_sweep_each(tmp_path, monkeypatch):
    import mosaicist.paths
    from mosaicist.batch._run import STALE_RECORD_AGE, _State

    state = _State(tmp_path)
    state.claim({"version": 1, "tiles": "x", "settings": {}})
    dead = state.outputs / ".0123.json.999999999-abcdefgh.part.json"
    dead.write_text("{")
    old = time.time() - STALE_RECORD_AGE - 10
    os.utime(dead, (old, old))
    state.claim({"version": 1, "tiles": "x", "settings": {}})
    assert not dead.exists()  # swept once per run

    def sweep(final):
        raise AssertionError(f"swept for {final}")

    monkeypatch.setattr(mosaicist.paths, "remove_stale_temporaries", sweep)
    for index in range(3):
        output = tmp_path / f"o{index}.png"
        output.write_bytes(b"x" * (index + 1))
        state.publish(output, "digest", {"path": "t", "size": 1, "mtime_ns": 1})
    assert state.made_by(tmp_path / "o2.png")["size"] == 3
    assert sorted(path.name for path in state.outputs.iterdir()) == sorted(
        state.record_path(tmp_path / f"o{index}.png").name for index in range(3))


def test_an_output_folder_that_cannot_be_synced_is_no_failure(tmp_path, monkeypatch):
    from mosaicist.batch import _worker

    output = tmp_path / "a.png"
    output.write_bytes(b"x")
    opened = os.open

    def folder_refused(path, flags, *args):
        if os.path.isdir(path):
            raise PermissionError(13, "Permission denied", path)
        return opened(path, flags, *args)

    monkeypatch.setattr(_worker.os, "open", folder_refused)
    _worker._flush(str(output))


def test_a_cluster_run_does_not_check_the_device_here():
    import torch

    from mosaicist.batch._run import _check_settings
    from mosaicist.errors import MosaicistError

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    options = MosaicOptions(cell_px=CELL, tile_px=TILE, device="cuda")
    with pytest.raises(MosaicistError):
        _check_settings(options, 0)
    _check_settings(options, 0, remote=True)  # its workers may have CUDA


def test_cells_and_tiles_of_different_shapes_are_warned_about_once(data, tmp_path):
    # make warns when rounded heights give cells and tiles different shapes; batch did not.
    root, tiles, targets, _, _ = data
    result = run(["batch", targets, "--tiles", tiles, "-o", tmp_path / "out", "--cell", 8,
                  "--tile-px", 16, "--aspect", "3:2", "--workers", 1])
    assert result.exit_code == 0, result.output
    shape_lines = [line for line in result.stderr.splitlines() if "not the shape of" in line]
    assert len(shape_lines) == 1 and shape_lines[0].startswith("mosaicist: warning: tiles of "
                                                               "16x11 px"), result.stderr
    quiet = run(["batch", targets, "--tiles", tiles, "-o", tmp_path / "quiet", "--cell", 8,
                 "--tile-px", 16, "--aspect", "3:2", "--workers", 1, "-q"])
    assert quiet.exit_code == 0 and "not the shape of" not in quiet.stderr


# A script whose pool processes die on one target ("killer"): the top level runs in each
# spawned process too, so the patched make_target is the one they run.
_KILLER_SCRIPT = '''
import functools, json, os, sys, time
import mosaicist.batch._run as run_module
import mosaicist.batch._worker as worker_module

original = worker_module.make_target

@functools.wraps(original)
def make_target(job, frame=None):
    if "killer" in job.name:
        os._exit(1)  # as the kernel's out-of-memory killer ends a process
    time.sleep(0.3)  # the others are still in flight when it dies
    return original(job, frame)

worker_module.make_target = run_module.make_target = make_target

if __name__ == "__main__":
    from mosaicist.batch import batch_mosaics

    folder, tiles, out = sys.argv[1:4]
    result = batch_mosaics(folder, tiles, out, cell_px=8, tile_px=8, workers=2)
    print(json.dumps({entry.name: entry.status for entry in result.results}))
'''


def test_a_target_that_kills_its_worker_fails_alone(data, tmp_path):
    # Every job in flight is lost when a pool process dies, and each used to be charged a
    # try: a target that kills its process three times failed the targets beside it too.
    tiles = data[1]
    folder = tmp_path / "targets"
    folder.mkdir()
    Image.fromarray(_picture(24, 16)).save(folder / "a-killer.png")
    for index in range(5):
        Image.fromarray(_picture(24, 16, index)).save(folder / f"good{index}.png")
    script = tmp_path / "killer.py"
    script.write_text(_KILLER_SCRIPT)
    env = dict(os.environ, MOSAICIST_THREADS="1")
    done = subprocess.run([sys.executable, str(script), str(folder), str(tiles),
                           str(tmp_path / "out")], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    statuses = json.loads(done.stdout.strip().splitlines()[-1])
    assert statuses.pop(str(folder / "a-killer.png")) == "failed"
    assert set(statuses.values()) == {"made"} and len(statuses) == 5, statuses


def test_a_pipe_named_as_a_target_is_refused_not_waited_on(tmp_path):
    # Videos and list files are opened in the batch's own process: a pipe blocked it
    # forever, deaf to SIGTERM and Ctrl+C.
    for name in ("clip.mp4", "list.txt", "photo.png"):
        os.mkfifo(tmp_path / name)
    found, rejected = collect_targets([tmp_path / "clip.mp4", tmp_path / "list.txt",
                                       tmp_path / "photo.png"])
    assert not found
    assert [item.message.startswith("not a regular file") for item in rejected] == [True] * 3


def test_a_folder_or_list_without_targets_is_reported(data, tmp_path):
    # An empty folder among others passed silently (exit 0), as if its pictures were made.
    root, tiles, targets, _, _ = data
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("no picture")
    comments = tmp_path / "comments.txt"
    comments.write_text("# nothing yet\r\n\r\n")
    out = tmp_path / "out"
    result = run(["batch", targets, empty, comments, "--tiles", tiles, "-o", out, *GRID,
                  "--workers", 1])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("mosaicist: error")]
    assert len(errors) == 2, result.stderr
    assert f"{empty}: no image or video in this folder" in errors[0]
    assert f"{comments}: no image, video or folder in this list file" in errors[1]
    assert len(finished(out)) == 3
    # Nothing usable at all: each item said why, and no output folder made for nothing.
    alone = tmp_path / "alone"
    result = run(["batch", empty, tmp_path / "missing.png", "--tiles", tiles, "-o", alone,
                  *GRID, "--video", tmp_path / "v.mp4"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "missing.png: target file not found" in result.stderr
    assert "no frame was made" in result.stderr
    # No worker was started: the summary said "(0 workers)".
    assert "worker" not in result.stderr
    assert not alone.exists()


def test_a_video_of_targets_of_two_sizes_is_refused_before_any_work(data, tmp_path):
    # Found once every mosaic was made: the batch's minutes went to a video not written.
    root, tiles, targets, _, video = data
    for items in ([targets], [targets / "img0.png", video]):
        result = run(["batch", *items, "--tiles", tiles, "-o", tmp_path / "out", *GRID,
                      "--workers", 1, "--video", tmp_path / "v.mp4"])
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith(f"mosaicist: error: --video {tmp_path / 'v.mp4'}: the "
                                        "output of ")
        assert result.stderr.strip().endswith(
            "; a video's frames have one size: give targets of one size and shape")
        assert not (tmp_path / "out").exists() and not (tmp_path / "v.mp4").exists()
    # Of one size (a video's frames, and a picture of its size): made.
    frame = _decoded(video)[0]
    Image.fromarray(frame).save(tmp_path / "same.png")
    result = run(["batch", video, tmp_path / "same.png", "--tiles", tiles, "-o",
                  tmp_path / "out", *GRID, "--workers", 1, "--video", tmp_path / "v.mp4"])
    assert result.exit_code == 0, result.output
    assert len(_decoded(tmp_path / "v.mp4")) == FRAMES + 1


def test_a_video_that_cannot_be_written_keeps_the_summary_and_report(data, tmp_path,
                                                                      monkeypatch):
    # Outputs of different sizes (or no frame at all) raised after every mosaic was made:
    # no summary, no report, as if the batch had failed before any work. (Sizes that
    # the targets' headers did not tell: the check before the work left out.)
    from mosaicist.batch import _run

    monkeypatch.setattr(_run, "_check_frame_sizes", lambda *args: None)
    root, tiles, targets, _, _ = data
    report = tmp_path / "report.json"
    result = run(["batch", targets, "--tiles", tiles, "-o", tmp_path / "out", *GRID,
                  "--workers", 1, "--video", tmp_path / "v.mp4", "--report", report])
    assert result.exit_code == 1, result.output
    assert "a video's frames have one size" in result.stderr
    assert "3 made" in result.stderr and "video not written" in result.stderr
    written = json.loads(report.read_text())
    assert written["made"] == 3 and "one size" in written["video_error"]
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"no video at all")
    result = run(["batch", garbage, "--tiles", tiles, "-o", tmp_path / "none", *GRID,
                  "--video", tmp_path / "w.mp4", "--report", report])
    assert result.exit_code == 1 and "Traceback" not in result.output
    # Before any frame: "before its last frame" was said of a file with none at all.
    assert json.loads(report.read_text())["video_error"] == (f"not written: {garbage} "
                                                              "failed before any frame")


def test_a_video_without_frames_is_a_failed_target(data, tmp_path):
    # A video whose header has a stream but no frame passed for done (exit 0), and the
    # video out was written without it.
    root, tiles, targets, _, _ = data
    empty = tmp_path / "empty.avi"
    with av.open(str(empty), "w") as container:
        stream = container.add_stream("mpeg4", rate=12)
        # img0.png's size: the outputs' sizes, read from the headers, agree.
        stream.width, stream.height, stream.pix_fmt = 48, 40, "yuv420p"
        container.start_encoding()
    with av.open(str(empty)) as container:
        assert container.streams.video and not list(container.decode(video=0))
    result = run(["batch", empty, targets / "img0.png", "--tiles", tiles, "-o",
                  tmp_path / "out", *GRID, "--workers", 1, "--video", tmp_path / "v.mp4"])
    assert result.exit_code == 1, result.output
    assert f"{empty}: no frame in the video" in result.stderr
    assert "v.mp4: not written: " in result.stderr and not (tmp_path / "v.mp4").exists()


def test_video_frames_too_small_fail_the_video_once(data, tmp_path):
    # Every frame used to be sent to a worker to fail alike: one error line per frame.
    tiles = data[1]
    small = tmp_path / "small.mp4"
    _write_video(small, 5, width=4, height=4)
    result = run(["batch", small, "--tiles", tiles, "-o", tmp_path / "out", *GRID,
                  "--workers", 1])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("mosaicist: error")]
    assert errors == [f"mosaicist: error: {small}: 4x4 pixels is smaller than one "
                      f"{CELL}x{CELL} cell; use smaller cells (--cell) or a larger target"
                      ], result.stderr


def test_an_output_folder_that_is_a_file_and_a_full_disk_for_the_video(data, tmp_path,
                                                                        monkeypatch):
    root, tiles, targets, _, _ = data
    a_file = tmp_path / "taken.png"
    a_file.write_bytes(b"x")
    result = run(["batch", targets / "img0.png", "--tiles", tiles, "-o", a_file, *GRID])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (f"mosaicist: error: {a_file}: is a file, not a folder; "
                                     "choose another output folder")
    # An OSError while encoding (a full disk) lost the summary and report of every mosaic.
    from mosaicist.batch import _video, batch_mosaics

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / ".v.mp4.1-x.part.mp4"))

    monkeypatch.setattr(_video, "write_video", disk_full)
    made = batch_mosaics([targets / "img0.png"], tiles, tmp_path / "out", cell_px=CELL,
                         tile_px=TILE, workers=1, video=tmp_path / "v.mp4")
    assert len(made.made) == 1 and not made.ok
    assert made.video_error == "not written: No space left on device"


def test_a_name_too_long_is_one_bad_target(data, tmp_path):
    # Path.exists() raises for a name over the file system's limit: the whole batch ended.
    root, tiles, targets, _, _ = data
    long_name = "x" * 300 + ".png"
    listing = tmp_path / "list.txt"
    listing.write_text(f"{long_name}\n{targets / 'img0.png'}\n")
    result = run(["batch", listing, tmp_path / ("y" * 300 + ".png"), "--tiles", tiles, "-o",
                  tmp_path / "out", *GRID, "--workers", 1])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("mosaicist: error")]
    assert len(errors) == 2 and all(line.endswith(": file name too long") for line in errors)
    assert errors[0].startswith(f"mosaicist: error: {listing}:1: ")
    assert [path.name for path in finished(tmp_path / "out")] == ["img0.png"]


def test_stable_frames_of_a_changed_size_and_a_single_frame(data, tmp_path):
    # A stream whose frames change size mid-video (concatenated MPEG-TS): the picks of the
    # frame before have another grid and are not used; nothing fails; a one-frame video too.
    tiles = data[1]
    joined = tmp_path / "joined.ts"
    parts = []
    for width, height in ((48, 32), (64, 40)):
        part = tmp_path / f"part{width}.ts"
        with av.open(str(part), "w", format="mpegts") as container:
            stream = container.add_stream("mpeg4", rate=12)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for index in range(2):
                frame = av.VideoFrame.from_ndarray(_picture(width, height, index), "rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        parts.append(part.read_bytes())
    joined.write_bytes(b"".join(parts))
    assert [frame.shape[:2] for frame in _decoded(joined)] == [(32, 48)] * 2 + [(40, 64)] * 2
    single = tmp_path / "single.mp4"
    _write_video(single, 1)
    out = tmp_path / "out"
    result = run(["batch", joined, single, "--tiles", tiles, "-o", out, *GRID, "--stable", 1,
                  "--workers", 1])
    assert result.exit_code == 0, result.output
    assert len(finished(out)) == 5
    # The first frame of the new size is the plain mosaic of it, as 'make' makes it.
    saved = tmp_path / "frame2.png"
    Image.fromarray(_decoded(joined)[2]).save(saved)
    assert (out / "joined-000002.png").read_bytes() == make_output(data, saved,
                                                                  tmp_path / "frame2-make.png")
    # The header's size is checked against the limit before decoding; a later size too.
    result = run(["batch", joined, "--tiles", tiles, "-o", tmp_path / "limited", *GRID,
                  "--max-target-pixels", 2000, "--workers", 1])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("mosaicist: error")]
    assert len(errors) == 1 and "64x40 = 2,560 pixels a frame is over" in errors[0]
    assert len(finished(tmp_path / "limited")) == 2


def test_a_worker_without_the_cache_says_so(tmp_path):
    # A cluster worker that does not share the cache opened an empty library and
    # said "no usable tile images found" of a folder full of photos.
    from mosaicist.batch._worker import open_library
    from mosaicist.errors import MosaicistError

    options = MosaicOptions(preset="seed", match_px=8)
    with pytest.raises(MosaicistError, match="the cache is not on this worker"):
        open_library(str(tmp_path / "tiles"), options, str(tmp_path / "nowhere"))


def test_a_dask_batch_that_loses_its_scheduler_or_workers_ends_in_one_line(monkeypatch):
    pytest.importorskip("distributed")
    import distributed
    from distributed.client import FuturesCancelledError

    from mosaicist.batch._run import _DaskRunner
    from mosaicist.distributed import _cluster
    from mosaicist.errors import MosaicistError

    class Client:
        def __init__(self, workers):
            self.workers = workers

        def as_current(self):
            import contextlib
            return contextlib.nullcontext()

        def nthreads(self, callback_timeout=None):
            return self.workers

        def scheduler_info(self):
            return {"address": "tcp://127.0.0.1:8786"}

    runner = _DaskRunner.__new__(_DaskRunner)
    runner.client = Client({})

    def lost(*args, **kwargs):
        from distributed.client import CancelledFuturesGroup

        lost_group = CancelledFuturesGroup(errors=[], reason="scheduler-connection-lost")
        raise FuturesCancelledError([lost_group])

    monkeypatch.setattr(distributed, "wait", lost)
    with pytest.raises(MosaicistError, match="lost the connection to the Dask scheduler"):
        runner.wait(["future"])

    def waits(*args, **kwargs):
        raise TimeoutError

    # No worker for longer than the limit: the run stops instead of waiting for ever.
    monkeypatch.setattr(distributed, "wait", waits)
    monkeypatch.setattr(_cluster, "NO_WORKER_SECONDS", 0)
    with pytest.raises(MosaicistError, match="has had no workers"):
        runner.wait(["future"])


def test_summary_counts_one_target_in_the_singular():
    from mosaicist.batch._run import BatchResult, TargetResult

    one = BatchResult([TargetResult("a.png", "out/a.png", "failed", "bad")], 0.1, 1)
    assert one.summary().startswith("mosaicist: 1 target: 0 made, 0 already done, 1 failed")
    two = BatchResult([TargetResult("a.png", "", "made"), TargetResult("b.png", "", "made")],
                      0.1, 1)
    assert two.summary().startswith("mosaicist: 2 targets: 2 made")
    assert "in 0.1 s (1 worker)" in one.summary()
    # No worker started (no target could be made): not "(0 workers)".
    none = BatchResult([TargetResult("a.png", "", "failed", "target file not found")], 0.1)
    assert none.summary() == "mosaicist: 1 target: 0 made, 0 already done, 1 failed in 0.1 s"
    many = BatchResult([TargetResult(f"{index}.png", "", "made") for index in range(1500)], 2)
    assert many.summary().startswith("mosaicist: 1,500 targets: 1,500 made, 0 already done")


def test_an_output_folder_inside_the_tile_folder_is_refused(data, tmp_path):
    # The library is scanned recursively: OUTDIR inside it made each run's mosaics tiles
    # of the next (the index grew, and outputs no longer equalled 'make''s).
    root, tiles, targets, _, _ = data
    library = tmp_path / "library"
    library.mkdir()
    for tile in sorted(tiles.iterdir())[:12]:
        (library / tile.name).write_bytes(tile.read_bytes())
    for out in (library / "mosaics", library, library / "deep" / "er"):
        result = run(["batch", targets / "img0.png", "--tiles", library, "-o", out, *GRID])
        assert result.exit_code != 0, result.output
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "--output-dir" in result.stderr and "tile" in result.stderr
        assert "Traceback" not in result.output
    assert sorted(path.name for path in library.iterdir()) == sorted(
        tile.name for tile in sorted(tiles.iterdir())[:12])


@pytest.mark.skipif(not hasattr(av.video.stream.VideoStream, "set_display_rotation"),
                    reason="this PyAV cannot write a display rotation")
def test_a_video_with_rotation_metadata_is_made_upright(data, tmp_path):
    # A phone's portrait clip is stored landscape with a display rotation, which players
    # apply: its frames were made into mosaics lying on their side.
    tiles = data[1]
    clip = tmp_path / "portrait.mp4"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4",
                                      rate=12)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        stream.set_display_rotation(90)
        for index in range(2):
            frame = av.VideoFrame.from_ndarray(_picture(48, 32, index), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(clip)) as container:
        decoded = next(iter(container.decode(video=0)))
        assert decoded.rotation == 90
        upright = np.rot90(decoded.to_ndarray(format="rgb24"))
    from mosaicist.batch import video_info

    info = video_info(clip)
    assert (info.width, info.height) == (32, 48)
    out = tmp_path / "out"
    result = run(["batch", clip, "--tiles", tiles, "-o", out, *GRID, "--workers", 1])
    assert result.exit_code == 0, result.output
    with Image.open(out / "portrait-000000.png") as made:
        assert made.size == (32, 48)
    saved = tmp_path / "upright.png"
    Image.fromarray(upright).save(saved)
    assert (out / "portrait-000000.png").read_bytes() == make_output(
        data, saved, tmp_path / "upright-make.png")
    # --cells sizes each target from its header: the upright size, not the stored one.
    sized = run(["batch", clip, "--tiles", tiles, "-o", tmp_path / "sized", "--cells", 24,
                 "--tile-px", TILE, "--workers", 1])
    assert sized.exit_code == 0, sized.output
    made_size = Image.open(tmp_path / "sized" / "portrait-000000.png").size
    assert made_size[0] < made_size[1]


def test_a_changed_target_pixel_limit_is_not_other_settings(data, tmp_path):
    # --max-target-pixels only refuses targets, it changes no output: a run resumed with
    # another limit was refused as 'other settings' (or would have remade everything).
    root, tiles, targets, _, _ = data
    base = ["batch", targets / "img0.png", "--tiles", tiles, "-o", tmp_path / "out", *GRID,
            "--workers", 1, "-q"]
    assert run(base).exit_code == 0
    report = tmp_path / "report.json"
    result = run([*base, "--max-target-pixels", 5_000_000, "--report", report])
    assert result.exit_code == 0, result.output
    assert _statuses(report) == {"img0.png": "skipped"}
    # It still refuses a target over it (one not made yet).
    result = run([*base, targets / "img1.png", "--max-target-pixels", 100])
    assert result.exit_code == 1 and "over the target limit" in result.stderr


def test_a_report_that_would_replace_a_target_an_output_or_the_video_is_refused(data,
                                                                               tmp_path):
    # 'mosaicist batch photo.png -o out --report photo.png' replaced the photo by the
    # report's JSON (exit 0); so did a report named as an output or as the video.
    from mosaicist.batch import batch_mosaics

    root, tiles, targets, _, video = data
    photo = tmp_path / "photo.png"
    photo.write_bytes((targets / "img0.png").read_bytes())
    link = tmp_path / "link.json"
    link.symlink_to(photo)
    out = tmp_path / "out"
    settings = {"cell_px": CELL, "tile_px": TILE, "workers": 1}
    tile = sorted(tiles.iterdir())[0]
    listing = tmp_path / "list.txt"
    listing.write_text(f"{photo}\n")
    for report, extra in ((photo, {}), (link, {}), (out / "photo.png", {}),
                          (tmp_path / "v.mp4", {"video": tmp_path / "v.mp4"}),
                          (video, {}), (tile, {}), (listing, {}),
                          (out / STATE_FOLDER / "settings.json", {})):
        with pytest.raises(OptionError, match="report") as caught:
            batch_mosaics([photo, video, listing], tiles, out, report=report, **extra,
                          **settings)
        assert str(report) in str(caught.value)
    assert photo.read_bytes() == (targets / "img0.png").read_bytes()
    assert listing.read_text() == f"{photo}\n"
    assert not out.exists() and not (tmp_path / "v.mp4").exists()
    # A report in the output folder, made by the batch, is written there once it ends.
    result = batch_mosaics([photo], tiles, out, report=out / "report.json", **settings)
    written = json.loads((out / "report.json").read_text())
    assert written == json.loads(json.dumps(result.report()))
    assert written["made"] == 1 and written["targets"][0]["name"] == str(photo)


def test_a_video_and_report_in_the_output_folder_the_batch_makes(data, tmp_path):
    # '-o frames --video frames/clip.mp4' was refused: "video folder frames does not
    # exist", though the batch makes that folder before any work.
    from mosaicist.batch import batch_mosaics

    tiles, video = data[1], data[4]
    out = tmp_path / "frames"
    result = batch_mosaics([video], tiles, out, video=out / "clip.mp4",
                           report=out / "report.json", cell_px=CELL, tile_px=TILE, workers=1)
    assert result.ok and result.video is not None and result.video.frames == FRAMES
    assert len(_decoded(out / "clip.mp4")) == FRAMES
    assert json.loads((out / "report.json").read_text())["video"]["frames"] == FRAMES
    # A folder on the way that is missing too is still refused before any work.
    with pytest.raises(MosaicistError, match="does not exist"):
        batch_mosaics([video], tiles, out, video=tmp_path / "no" / "clip.mp4", cell_px=CELL,
                      tile_px=TILE, workers=1)


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS refuses names that are not UTF-8")
def test_a_target_whose_name_is_not_utf8_is_made_and_resumed(data, tmp_path):
    # Its output's record was named by the UTF-8 bytes of the output's name, which a
    # name that is not UTF-8 does not have: a traceback once the output was made.
    root, tiles, targets, _, _ = data
    folder = tmp_path / "photos"
    folder.mkdir()
    odd = os.fsdecode(os.fsencode(str(folder)) + b"/caf\xe9.png")
    Path(odd).write_bytes((targets / "img0.png").read_bytes())
    args = ["batch", folder, "--tiles", tiles, "-o", tmp_path / "out", *GRID, "--workers", 1,
            "--report", tmp_path / "report.json"]
    result = run(args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / (Path(odd).stem + ".png")).is_file()
    assert run(args).exit_code == 0
    assert list(_statuses(tmp_path / "report.json").values()) == ["skipped"]


def test_a_file_without_a_record_in_a_recorded_folder_is_not_taken_for_done(data, tmp_path):
    # Any picture put under an output's name (another tool's, a copy) in a folder whose
    # batch keeps records passed for that target's mosaic when newer than the target: the
    # rule for folders of a version that kept none applied to every folder.
    root, tiles, targets, _, _ = data
    out, report = tmp_path / "out", tmp_path / "report.json"
    base = ["--tiles", tiles, "-o", out, *GRID, "--workers", 1, "-q", "--report", report]
    assert run(["batch", targets / "img0.png", *base]).exit_code == 0
    (out / "img1.png").write_bytes((targets / "img2.png").read_bytes())
    result = run(["batch", targets / "img0.png", targets / "img1.png", *base])
    assert result.exit_code == 0, result.output
    assert _statuses(report) == {"img0.png": "skipped", "img1.png": "made"}
    assert (out / "img1.png").read_bytes() == make_output(data, targets / "img1.png",
                                                         tmp_path / "img1-make.png")


def test_outputs_made_from_another_library_are_made_again(data, tmp_path):
    # Photos added to the tile folder between two runs: the outputs of the first were
    # skipped as finished, though 'make' with the same flags now makes other mosaics.
    root, tiles, targets, _, _ = data
    library = tmp_path / "library"
    shutil.copytree(tiles, library)
    out, report = tmp_path / "out", tmp_path / "report.json"
    base = ["batch", targets / "img0.png", "--tiles", library, "-o", out, *GRID,
            "--workers", 1, "-q", "--report", report]
    assert run(base).exit_code == 0
    assert run(base).exit_code == 0
    assert _statuses(report) == {"img0.png": "skipped"}  # the same library: resumed
    picture = np.asarray(Image.open(targets / "img0.png").convert("RGB"))
    for index in range(4):  # tiles cut from the target: they win their cells
        block = picture[CELL * index:CELL * (index + 1), CELL * index:CELL * (index + 1)]
        Image.fromarray(block).save(library / f"z{index}.png")
    result = run(base)
    assert result.exit_code == 0, result.output
    assert _statuses(report) == {"img0.png": "made"}
    made = run(["make", targets / "img0.png", "--tiles", library, "-o", tmp_path / "make.png",
                *GRID, "-q"])
    assert made.exit_code == 0, made.output
    assert (out / "img0.png").read_bytes() == (tmp_path / "make.png").read_bytes()
    assert run(base).exit_code == 0
    assert _statuses(report) == {"img0.png": "skipped"}


def test_the_command_line_refuses_a_report_over_a_target(data, tmp_path):
    # The command line wrote the report itself, over the target, and exited 0.
    root, tiles, targets, _, _ = data
    photo = tmp_path / "photo.png"
    photo.write_bytes((targets / "img0.png").read_bytes())
    result = run(["batch", photo, "--tiles", tiles, "-o", tmp_path / "out", "--cell", CELL,
                  "--tile-px", TILE, "--workers", 1, "--report", photo, "-q"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "--report" in result.output
    assert photo.read_bytes() == (targets / "img0.png").read_bytes()
    report = tmp_path / "report.json"
    result = run(["batch", photo, "--tiles", tiles, "-o", tmp_path / "out", "--cell", CELL,
                  "--tile-px", TILE, "--workers", 1, "--report", report, "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads(report.read_text())["made"] == 1


@pytest.mark.parametrize("value", ["0.001", "0.0049"])
def test_a_stability_that_would_round_to_0_is_refused(data, tmp_path, value):
    # Applied in hundredths, it silently became 0: no stability at all.
    root, tiles, _, _, video = data
    result = run(["batch", video, "--tiles", tiles, "-o", tmp_path / "out", "--cell", CELL,
                  "--tile-px", TILE, "--stable", value, "-q"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "--stable" in result.output and "hundredths" in result.output
    assert not (tmp_path / "out").exists()


def test_an_interrupted_batch_leaves_no_temporary_of_its_killed_workers(data, tmp_path,
                                                                        monkeypatch):
    # The pool's processes are killed mid-write when a batch is interrupted: their
    # temporaries stayed beside the outputs (".t2.png.<pid>-xxxxxxxx.part.png").
    from conftest import dead_pid

    from mosaicist.batch import _run as batch_run

    root, tiles, targets, _, _ = data
    out = tmp_path / "out"
    left = out / f".img1.png.{dead_pid()}-abcdefgh.part.png"

    def interrupted(*args, **kwargs):
        left.write_bytes(b"half a picture")
        raise KeyboardInterrupt

    monkeypatch.setattr(batch_run, "_run", interrupted)
    result = run(["batch", targets, "--tiles", tiles, "-o", out, *GRID, "--workers", 1, "-q"])
    assert result.exit_code == 130, result.output
    assert not left.exists()
    assert not any(path.name.startswith(".img") for path in out.iterdir())


def test_a_resumed_batch_with_nothing_to_make_removes_a_killed_runs_temporaries(data,
                                                                               tmp_path):
    # A run killed outright (kill -9) leaves its workers' temporaries beside the outputs;
    # a resumed run that found every output done left them there for good.
    from conftest import dead_pid

    root, tiles, targets, _, _ = data
    out = tmp_path / "out"
    flags = ["batch", targets, "--tiles", tiles, "-o", out, *GRID, "--workers", 1, "-q"]
    assert run(flags).exit_code == 0
    made = sorted(path.name for path in out.iterdir())
    dead = dead_pid()
    left = [out / f".img1.png.{dead}-abcdefgh.part.png",
            out / f".img0.png.{dead}-zyxwvuts.part.png"]
    for path in left:
        path.write_bytes(b"half a picture")
    live = out / f".img2.png.{os.getpid()}-abcdefgh.part.png"  # a writer still at work
    live.write_bytes(b"being written")
    resumed = run(flags)
    assert resumed.exit_code == 0, resumed.output
    assert not any(path.exists() for path in left)
    assert live.exists()
    live.unlink()
    assert sorted(path.name for path in out.iterdir()) == made


def test_a_worker_whose_index_is_gone_says_so_not_that_the_photos_are_unusable(data):
    # The index deleted after the batch indexed the library: a worker said "no usable
    # tile images found" of a folder full of photos, and left an empty index behind.
    from mosaicist.batch._worker import Job, make_target, open_library

    root, tiles, targets, _, _ = data
    cache = root / "gone-cache"
    options = MosaicOptions(preset="seed", cell_px=CELL, tile_px=TILE, match_px=TILE)
    library = TileLibrary.open(str(tiles), TILE, cache_dir=cache)
    shutil.rmtree(library.directory)
    with pytest.raises(MosaicistError, match="tile index is gone") as caught:
        open_library(str(tiles), options, str(cache))
    assert str(library.directory) in str(caught.value)
    assert "no usable tile" not in str(caught.value)
    assert not library.directory.exists()
    job = Job("img0.png", str(targets / "img0.png"), str(root / "gone.png"), str(tiles),
              options, str(cache))
    outcome = make_target(job)
    assert not outcome.ok and "tile index is gone" in outcome.message
    assert not (root / "gone.png").exists()
    # The whole cache gone: said the same way, not as a cluster's unshared folder only.
    shutil.rmtree(cache)
    with pytest.raises(MosaicistError, match=r"the cache is not on this worker \(deleted "):
        open_library(str(tiles), options, str(cache))


def test_a_dataset_name_beside_a_folder_of_that_name_is_the_dataset_as_in_make(
        tmp_path, monkeypatch):
    # 'batch --tiles cifar10' beside a folder 'cifar10' made its mosaics of the folder,
    # where 'make --tiles cifar10' takes the dataset: the outputs were not make's.
    from mosaicist.batch._run import _tiles_spec

    (tmp_path / "cifar10").mkdir()
    (tmp_path / "photos").mkdir()
    monkeypatch.chdir(tmp_path)
    assert _tiles_spec("cifar10") == "cifar10"
    assert _tiles_spec("./cifar10") == str((tmp_path / "cifar10").resolve())
    assert _tiles_spec("photos") == str((tmp_path / "photos").resolve())
    # A local copy of the dataset: the dataset's reading, its path made absolute for the
    # workers, even beside a folder named 'cifar10:copy'.
    (tmp_path / "cifar10:copy").mkdir()
    assert _tiles_spec("cifar10:copy") == f"cifar10:{Path.cwd() / 'copy'}"


def test_a_video_out_in_a_folder_of_targets_is_refused_before_any_work(data, tmp_path):
    # The first run wrote the video among its targets; the same command run again took
    # it for a target that its own video out would replace, and failed (exit 1).
    root, tiles, targets, _, _ = data
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(targets / "img0.png", folder / "img0.png")
    listing = tmp_path / "list.txt"
    listing.write_text("photos\n")
    for item in (folder, listing):
        result = run(["batch", item, "--tiles", tiles, "-o", tmp_path / "out", *GRID,
                      "--workers", 1, "--video", folder / "v.mp4"])
        assert result.exit_code == 1, result.output
        assert result.stderr.strip() == (
            f"mosaicist: error: --video {folder / 'v.mp4'} is in {folder}, a folder of "
            "targets: the next run would take it for a target; choose another folder")
        assert not (tmp_path / "out").exists() and not (folder / "v.mp4").exists()
    # A link elsewhere to a video in the folder writes it there.
    (tmp_path / "link.mp4").symlink_to(folder / "v.mp4")
    result = run(["batch", folder, "--tiles", tiles, "-o", tmp_path / "out", *GRID,
                  "--video", tmp_path / "link.mp4"])
    assert result.exit_code == 1 and "a folder of targets" in result.stderr, result.output
    # Named one by one, the folder's files are not its folder's every target.
    result = run(["batch", folder / "img0.png", "--tiles", tiles, "-o", tmp_path / "out",
                  *GRID, "--workers", 1, "--video", folder / "v.mp4"])
    assert result.exit_code == 0, result.output


def test_a_video_out_that_is_a_target_is_refused_before_any_work(data, tmp_path):
    # '--video a.mp4' with a.mp4 among the targets skipped a.mp4 as a target, made the
    # others' frames and then wrote their video over a.mp4: the user's video was lost.
    root, tiles, targets, _, _ = data
    source = tmp_path / "a.mp4"
    _write_video(source, 3)
    other = tmp_path / "b.mp4"
    _write_video(other, 2)
    before = source.read_bytes()
    listing = tmp_path / "list.txt"
    listing.write_text("a.mp4\n")
    link = tmp_path / "link.mp4"
    link.symlink_to(source)
    for items, video in (([source, other], source), ([listing, other], source),
                         ([source, other], link), ([link, other], source)):
        result = run(["batch", *items, "--tiles", tiles, "-o", tmp_path / "out", *GRID,
                      "--workers", 1, "--video", video])
        assert result.exit_code == 1, result.output
        assert result.stderr.strip() == (f"mosaicist: error: --video {video} is a target "
                                         "of the batch; choose another file")
        assert source.read_bytes() == before
        assert not (tmp_path / "out").exists()


def test_list_files_in_other_encodings_name_their_files(tmp_path):
    # A list of names that are not UTF-8 (ls > list.txt among Latin-1 names) was refused
    # whole; a UTF-16 list (Windows' "Unicode") too; U+2028 in a name split its line.
    latin = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9.png")
    Path(latin).write_bytes(b"x")
    (tmp_path / "a\u2028b.png").write_bytes(b"x")
    (tmp_path / "d.png").write_bytes(b"x")
    (tmp_path / "bytes.txt").write_bytes(b"caf\xe9.png\r\n# caf\xe9\r\nd.png\rmissing\xff.png\n")
    found, rejected = collect_targets([tmp_path / "bytes.txt"])
    assert [target.path for target in found] == [Path(latin), tmp_path / "d.png"]
    assert [item.name for item in rejected] == [f"{tmp_path / 'bytes.txt'}:4: "
                                                + os.fsdecode(b"missing\xff.png")]
    (tmp_path / "wide.txt").write_text("a\u2028b.png\nd.png\n", encoding="utf-16")
    found, rejected = collect_targets([tmp_path / "wide.txt"])
    assert [target.path.name for target in found] == ["a\u2028b.png", "d.png"] and not rejected


def test_a_list_file_names_its_files_where_the_file_systems_encoding_is_ascii(tmp_path):
    # Under LC_ALL=C without UTF-8 mode, a list naming 日本.png said "target file not
    # found" (its lines were read as UTF-8 text; the file system holds the name's bytes).
    from conftest import run_with_ascii_file_names

    folder = os.fsencode(str(tmp_path / "lf"))
    os.makedirs(folder)
    japanese = "\u65e5\u672c.png".encode()
    Image.new("RGB", (8, 8)).save(os.fsdecode(os.path.join(folder, japanese)), "PNG")
    (tmp_path / "list.txt").write_bytes(b"lf/" + japanese + b"\n")
    (tmp_path / "wide.txt").write_text("lf/\u65e5\u672c.png\n", encoding="utf-16")
    script = tmp_path / "check.py"
    script.write_text(
        "import os, sys\n"
        "from pathlib import Path\n"
        "from mosaicist.batch._targets import collect_targets\n"
        "assert sys.getfilesystemencoding() == 'ascii', sys.getfilesystemencoding()\n"
        "for name in ('list.txt', 'wide.txt'):\n"
        "    found, rejected = collect_targets([Path(sys.argv[1]) / name])\n"
        "    assert not rejected, [ascii(item.name) for item in rejected]\n"
        "    assert [os.fsencode(target.path.name) for target in found] == "
        "['\\u65e5\\u672c.png'.encode()], found\n", encoding="ascii")
    result = run_with_ascii_file_names(script, str(tmp_path))
    assert result.returncode == 0, result.stderr


def test_a_video_of_outputs_of_two_sizes_names_their_targets(data, tmp_path, monkeypatch):
    # The encoder's message counted frames ("frame 1 is 56x32 pixels"), which a batch of
    # many targets cannot map to the target whose output has another size. (Sizes the
    # headers did not tell: the check before the work left out.)
    from mosaicist.batch import _run, batch_mosaics

    monkeypatch.setattr(_run, "_check_frame_sizes", lambda *args: None)

    root, tiles, targets, _, _ = data
    made = batch_mosaics([targets / "img0.png", targets / "img1.png"], tiles, tmp_path / "out",
                         cell_px=CELL, tile_px=TILE, workers=1, video=tmp_path / "v.mp4")
    assert len(made.made) == 2 and not (tmp_path / "v.mp4").exists()
    assert made.video_error == (f"not written: the output of {targets / 'img1.png'} is 56x32 "
                                f"pixels, that of {targets / 'img0.png'} 48x40; a video's "
                                "frames have one size")


def test_summary_counts_one_video_frame_in_the_singular(tmp_path):
    from mosaicist.batch._run import BatchResult
    from mosaicist.batch._video import VideoWritten

    one = BatchResult(video=VideoWritten(tmp_path / "v.mp4", "libx264", Fraction(12), 1, 2, 2))
    assert f"; video {tmp_path / 'v.mp4'} (1 frame, libx264, 12 fps)" in one.summary()
    one.video.frames = 2
    assert "(2 frames, " in one.summary()


def test_a_video_out_of_videos_of_one_rate_keeps_their_rate(data, tmp_path):
    # A clip cut in two parts, batched into one video, was played at 25 fps, not its 12.
    from mosaicist.batch import batch_mosaics

    root, tiles, _, _, video = data
    second = tmp_path / "part2.mp4"
    shutil.copy(video, second)
    made = batch_mosaics([video, second], tiles, tmp_path / "out", cell_px=CELL, tile_px=TILE,
                         workers=1, video=tmp_path / "v.mp4")
    assert made.ok and made.video is not None and made.video.frames == 2 * FRAMES
    assert made.video.rate == 12
    with av.open(str(tmp_path / "v.mp4")) as container:
        assert container.streams.video[0].average_rate == 12


def test_stability_without_video_frames_and_a_rate_without_a_video_are_noted(data, tmp_path):
    # Both were accepted and changed nothing, without a word.
    root, tiles, targets, _, _ = data
    args = ["batch", targets / "img0.png", "--tiles", tiles, "-o", tmp_path / "out", *GRID,
            "--workers", 1]
    result = run([*args, "--stable", 0.5, "--fps", 10])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if "note" in line]
    assert notes == ["mosaicist: note: --stable has no effect (no target is a video); ignored",
                     "mosaicist: note: --fps has no effect (without --video); ignored"]
    result = run([*args, "--stable", 0.5, "--fps", 10, "-q"])
    assert result.exit_code == 0 and result.stderr == "", result.output
    # The local pool's size with a cluster, whose workers make the targets (said before
    # the cluster is reached: none listens on port 1).
    result = run([*args, "--scheduler", "tcp://127.0.0.1:1"])
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[0] == ("mosaicist: note: --workers has no effect (the "
                                             "cluster of --scheduler makes the targets); "
                                             "ignored")


def test_a_settings_record_damaged_by_hand_is_no_traceback(data, tmp_path):
    # Its "settings" not a mapping: a TypeError traceback when the run claimed the folder.
    root, tiles, targets, _, _ = data
    state = tmp_path / "out" / STATE_FOLDER
    state.mkdir(parents=True)
    (state / "settings.json").write_text('{"settings": 5}\n')
    result = run(["batch", targets / "img0.png", "--tiles", tiles, "-o", tmp_path / "out",
                  *GRID, "--workers", 1])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "img0.png").is_file()
    recorded = json.loads((state / "settings.json").read_text())
    assert recorded["settings"]["cell_px"] == CELL


def test_a_file_where_the_records_go_is_refused_before_indexing(data, tmp_path):
    # Said as "...: Not a directory" once the library was indexed (minutes for a large one).
    root, tiles, targets, _, _ = data
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / STATE_FOLDER).write_text("mine")
    cache = tmp_path / "cache"
    result = run(["batch", targets / "img0.png", "--tiles", tiles, "-o", tmp_path / "out",
                  *GRID, "--workers", 1, "--cache-dir", cache])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (f"mosaicist: error: {tmp_path / 'out' / STATE_FOLDER}: is "
                                     "a file, where the batch keeps its records; move it, or "
                                     "choose another output folder")
    assert not (cache / "indexes").exists()
