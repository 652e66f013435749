"""Hostile videos and interrupted stable batches: damaged picks, resumed chains of frames."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import banded_tile as _tile
from conftest import shifted_picture as _picture
from conftest import write_frames as _write_frames
from PIL import Image

from mosaicist.batch import Picks
from mosaicist.cli import main

av = pytest.importorskip("av")

CELL = TILE = 8
GRID = ["--cell", str(CELL), "--tile-px", str(TILE)]


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile-video") / "tiles"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for index in range(40):
        Image.fromarray(_tile(rng)).save(folder / f"t{index:03d}.png")
    return folder


def run(args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def _damaged(path: Path, **arrays: np.ndarray) -> None:
    good = {"tile": np.zeros(6, np.int64), "transform": np.zeros(6, np.int8),
            "shape": np.array([2, 3, 0, 40])}
    with open(path, "wb") as handle:
        np.savez(handle, **{**good, **arrays})


@pytest.mark.parametrize("arrays", [
    {"shape": np.array(5)},  # 0-d: TypeError, which failed the frame as "unexpected error"
    {"tile": np.array(3), "transform": np.array(3)},  # 0-d too
    {"tile": np.zeros((6, 1), np.int64), "transform": np.zeros((6, 1), np.int8)},
    {"tile": np.full(6, 0.5)},  # floats were truncated into tiles
    {"transform": np.full(6, 300)},  # wrapped into transform 44
    {"shape": np.array([-2, -3, 0, 40])},
    {"shape": np.array([2.5, 3, 0, 40])},
])
def test_picks_of_another_kind_read_as_none(tmp_path, arrays):
    path = tmp_path / "picks.npz"
    _damaged(path, **arrays)
    assert Picks.load(str(path)) is None
    # A signature of another kind is dropped; the tiles still steer.
    _damaged(path, signature=np.full((6, 4, 4, 3), 1e9))
    loaded = Picks.load(str(path))
    assert loaded is not None and loaded.signature is None and (loaded.rows, loaded.cols) == (2, 3)


def test_a_stable_frame_after_damaged_picks_is_made_afresh(tiles, tmp_path):
    # The picks of the frame before, damaged (a 0-d array): the frame failed with
    # "unexpected error: TypeError" instead of being matched afresh, as documented.
    video = tmp_path / "clip.mp4"
    _write_frames(video, [_picture(48, 32, index) for index in range(3)])
    out = tmp_path / "out"
    args = ["batch", video, "--tiles", tiles, "-o", out, *GRID, "--preset", "seed",
            "--stable", 1, "--workers", 1, "-q"]
    assert run(args).exit_code == 0
    (out / "clip-000002.png").unlink()  # made again: from the picks of frame 1
    _damaged(out / ".mosaicist-batch" / "picks" / "clip-000001.npz", shape=np.array(5))
    report = tmp_path / "report.json"
    result = run([*args, "--report", report])
    assert result.exit_code == 0, result.output
    statuses = {entry["name"].rsplit("/", 1)[-1]: entry["status"]
                for entry in json.loads(report.read_text())["targets"]}
    assert statuses["clip.mp4 frame 2"] == "made", statuses
    assert (out / "clip-000002.png").is_file()


def test_frames_made_without_their_previous_are_made_again_once_it_is(tiles, tmp_path):
    # Frame 1 failed (its output's name taken by a folder): frame 2 was made from no picks,
    # the plain mosaic. Run again once frame 1 could be made, frame 2 was skipped as done, and
    # the video mixed two chains of tiles where an uninterrupted run has one.
    video = tmp_path / "clip.mp4"
    _write_frames(video, [_picture(48, 32, 4 * index) for index in range(4)])

    def batch(out: Path):
        return run(["batch", video, "--tiles", tiles, "-o", out, *GRID, "--preset", "seed",
                    "--stable", 1, "--workers", 1, "-q"])

    whole = tmp_path / "whole"
    assert batch(whole).exit_code == 0
    out = tmp_path / "out"
    (out / "clip-000001.png").mkdir(parents=True)
    assert batch(out).exit_code == 1
    plain = (out / "clip-000002.png").read_bytes()
    assert plain != (whole / "clip-000002.png").read_bytes()  # else nothing is shown
    (out / "clip-000001.png").rmdir()
    result = batch(out)
    assert result.exit_code == 0, result.output
    for index in range(4):
        name = f"clip-{index:06d}.png"
        assert (out / name).read_bytes() == (whole / name).read_bytes(), name
    # Once whole, a run again makes nothing; nor does it with records of a version that
    # named no previous picks, or with the picks lost (made again, the frames could not get
    # their chain back).
    for change in ("none", "old records", "picks lost"):
        if change == "old records":
            for record in (out / ".mosaicist-batch" / "outputs").glob("*.json"):
                made = json.loads(record.read_text())
                made["target"].pop("previous", None)
                record.write_text(json.dumps(made))
        if change == "picks lost":
            shutil.rmtree(out / ".mosaicist-batch" / "picks")
        report = tmp_path / "again.json"
        assert run(["batch", video, "--tiles", tiles, "-o", out, *GRID, "--preset", "seed",
                    "--stable", 1, "--workers", 1, "-q", "--report", report]).exit_code == 0
        assert json.loads(report.read_text())["made"] == 0, change
