"""More batch behaviour fixed in session 33 (hostile testing): each test failed before its fix."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_colour_folder
from PIL import Image

from mosaicist.batch import _run, batch_mosaics
from mosaicist.errors import MosaicistError


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A library of 12 colour tiles and a folder of 2 tiny targets."""
    root = tmp_path_factory.mktemp("batch-more")
    tiles = make_colour_folder(root / "tiles", 12, size=8)
    targets = root / "targets"
    targets.mkdir()
    rng = np.random.default_rng(5)
    for index in range(2):
        pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(targets / f"p{index}.png")
    return tiles, targets


def test_a_batch_with_other_settings_into_a_folder_another_is_writing_is_refused(
        small, tmp_path, monkeypatch):
    # Two batches of other settings started at once into one folder both found it empty,
    # both claimed it and both said every target was made: the folder held a mix, each
    # output the last writer's (the first batch's mosaics silently replaced).
    tiles, targets = small
    out = tmp_path / "out"
    prepare = _run._prepare
    other: list[BaseException | None] = []
    started = []

    def another_batch_meanwhile(*arguments, **keywords):
        if not started:  # the first batch, past its checks: the second starts now
            started.append(True)
            try:
                batch_mosaics([targets], tiles, out, preset="seed", cell_px=8, tile_px=8,
                              workers=1)
                other.append(None)
            except MosaicistError as error:
                other.append(error)
        return prepare(*arguments, **keywords)

    monkeypatch.setattr(_run, "_prepare", another_batch_meanwhile)
    result = batch_mosaics([targets], tiles, out, preset="seed", cell_px=8, tile_px=4,
                           workers=1)
    assert len(result.made) == 2
    assert isinstance(other[0], MosaicistError)
    assert "another batch" in str(other[0]) and str(out) in str(other[0])
    # Every output is the first batch's: 2 x 2 cells of 4 px.
    assert {Image.open(path).size for path in out.glob("*.png")} == {(8, 8)}
