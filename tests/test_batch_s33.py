"""Batch behaviour fixed in session 33: each test failed before its fix."""

from __future__ import annotations

import unicodedata

import numpy as np
from PIL import Image

from mosaicist.batch._targets import collect_targets


def _picture(path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)


def test_targets_whose_names_differ_only_in_case_or_form_are_refused_as_a_clash(tmp_path):
    # On macOS's and Windows' usual file systems Bear.png and bear.png are one file: the
    # second target's output replaced the first's, and a resumed batch skipped it as done.
    _picture(tmp_path / "Bear.png")
    _picture(tmp_path / "bear.jpg")
    composed = unicodedata.normalize("NFC", "caf\u00e9")
    decomposed = unicodedata.normalize("NFD", "caf\u00e9")
    _picture(tmp_path / f"{composed}.png")
    _picture(tmp_path / f"{decomposed}.jpg")
    _picture(tmp_path / "other.png")
    targets, rejected = collect_targets([tmp_path])
    assert len(targets) == 3
    assert len(rejected) == 2
    assert all("would have the names of" in item.message for item in rejected)
    # The outputs keep the names as given.
    assert {target.stem for target in targets} >= {"Bear", "other"}


def test_a_video_and_frames_named_in_another_case_clash(tmp_path):
    _picture(tmp_path / "Clip-000001.png")
    (tmp_path / "clip.mp4").write_bytes(b"")
    targets, rejected = collect_targets([tmp_path / "Clip-000001.png", tmp_path / "clip.mp4"])
    assert [target.stem for target in targets] == ["Clip-000001"]
    assert len(rejected) == 1 and "would have the names of" in rejected[0].message


def test_a_dask_batch_that_lost_its_scheduler_names_it():
    # 'lost the connection to the Dask scheduler; its tasks are cancelled; the outputs
    # made are kept' named no scheduler, where make, index and render name it.
    import types

    import pytest

    from mosaicist.batch._run import _DaskRunner
    from mosaicist.errors import MosaicistError

    pytest.importorskip("distributed")
    runner = object.__new__(_DaskRunner)
    runner.client = types.SimpleNamespace(
        status="closing", scheduler=types.SimpleNamespace(address="tcp://127.0.0.1:8786"))
    with pytest.raises(MosaicistError) as raised:
        runner.submit(None)
    assert str(raised.value) == ("lost the connection to the Dask scheduler at "
                                 "tcp://127.0.0.1:8786; its tasks are cancelled; the outputs "
                                 "made are kept")


def test_a_video_out_from_outputs_it_cannot_read_names_the_formats_the_flag_takes(tmp_path):
    # It said 'use --format png, jpg, jpeg, webp', and --format takes no 'jpeg'.
    from click.testing import CliRunner

    from mosaicist.cli import main

    _picture(tmp_path / "t.png")
    result = CliRunner().invoke(main, ["batch", str(tmp_path / "t.png"), "--tiles",
                                       str(tmp_path), "-o", str(tmp_path / "out"), "--format",
                                       "tif", "--video", str(tmp_path / "v.mp4")])
    assert result.exit_code != 0
    assert "use --format png, jpg or webp, not tif" in result.output
