"""The Python API as a programmer uses it: one mosaic from several threads, empty paths."""

import copy
import json
import os
import pickle
import threading

import numpy as np
import pytest
from conftest import in_threads, make_colour_folder, noisy_target
from PIL import Image

from mosaicist import Mosaic, OptionError, make_mosaic
from mosaicist import pipeline as pipeline_module


@pytest.fixture
def mosaic(tmp_path):
    folder = make_colour_folder(tmp_path / "tiles", 40, size=8)
    return make_mosaic(noisy_target(), folder, cell_px=8, tile_px=8, preset="seed",
                       cache_dir=tmp_path / "cache")


@pytest.fixture
def meters(monkeypatch):
    """Each measurement's start, appended to the list returned; two threads that both
    start one meet before either goes on (so both reach it before either finishes)."""
    started = []
    meeting = threading.Barrier(2)
    original = pipeline_module._Measurement.meter

    def meter(self):
        started.append(threading.current_thread().name)
        try:
            meeting.wait(timeout=0.5)
        except threading.BrokenBarrierError:  # the other thread waits its turn, or writes
            pass
        return original(self)

    monkeypatch.setattr(pipeline_module._Measurement, "meter", meter)
    return started


def test_a_mosaic_written_and_measured_from_two_threads_measures_once(tmp_path, mosaic,
                                                                      meters):
    expected = copy.deepcopy(mosaic).metrics  # measured alone, on a copy
    meters.clear()
    # A second measurement used to end in a bare AssertionError in one of the threads.
    turns = iter(range(2))

    def work():
        if next(turns) == 0:
            mosaic.write(tmp_path / "out.png")
            return None
        return mosaic.metrics

    results = in_threads(2, work)
    assert results[1] == expected == mosaic.metrics
    assert len(meters) == 1
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), mosaic.image)


def test_a_mosaic_written_to_two_files_at_once_writes_both(tmp_path, mosaic, meters):
    expected = copy.deepcopy(mosaic).metrics
    meters.clear()
    names = iter(["a.png", "b.tif"])
    failures = []

    def work():
        try:
            mosaic.write(tmp_path / next(names))
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            failures.append(repr(error))

    in_threads(2, work)
    assert failures == []
    assert len(meters) == 1  # the other thread wrote without measuring again
    assert mosaic.metrics == expected
    for name in ("a.png", "b.tif"):  # lossless: the very picture
        assert np.array_equal(np.asarray(Image.open(tmp_path / name).convert("RGB")),
                              mosaic.image)


def test_a_mosaic_still_pickles_and_copies_with_a_lock_of_its_own(mosaic):
    again = pickle.loads(pickle.dumps(mosaic))
    assert isinstance(again, Mosaic) and again._measuring is not mosaic._measuring
    assert np.array_equal(again.placements.tile, mosaic.placements.tile)
    assert again.metrics == mosaic.metrics
    assert copy.copy(mosaic)._measuring is not mosaic._measuring


def test_an_empty_tiles_text_is_refused_not_the_current_folder_indexed(tmp_path, monkeypatch):
    # Path("") is "."; an unset variable used to index whatever folder the program ran in.
    make_colour_folder(tmp_path / "here", 20, size=8)
    monkeypatch.chdir(tmp_path / "here")
    with pytest.raises(OptionError) as caught:
        make_mosaic(noisy_target(), "", cell_px=8, tile_px=8, cache_dir=tmp_path / "cache")
    assert str(caught.value) == ("tiles is empty: give a folder, a dataset name "
                                 "('cifar10'...) or an array file")
    assert caught.value.parameters == ("tiles",)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("write", [lambda mosaic, path: mosaic.write(path),
                                   lambda mosaic, path: mosaic.write_report(path)])
def test_an_empty_output_path_is_refused_by_name(tmp_path, mosaic, monkeypatch, write):
    # It was the current folder: "unknown output format '(none)'", or a rename onto
    # "." failing as "Device or resource busy".
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(OptionError) as caught:
        write(mosaic, "")
    assert str(caught.value) == "path is empty: give the file to write"
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.parametrize(("extra", "shown"), [
    ({"wall": float("nan")}, "nan"),
    ({"wall": np.float32("inf")}, "a float32"),
    ({"seconds": np.array([1.0, -np.inf])}, "an ndarray"),
])
def test_report_extras_that_strict_json_cannot_hold_are_refused(tmp_path, mosaic, extra, shown):
    # They were written as NaN / Infinity, which JSON.parse and other strict readers refuse.
    with pytest.raises(OptionError) as caught:
        mosaic.write_report(tmp_path / "report.json", **extra)
    assert str(caught.value) == f"write_report's {next(iter(extra))} is not JSON data: {shown}"
    assert not (tmp_path / "report.json").exists()
    mosaic.write_report(tmp_path / "report.json", wall=np.float32(1.5), counts=np.arange(2))
    written = json.loads((tmp_path / "report.json").read_text())
    assert (written["wall"], written["counts"]) == (1.5, [0, 1])


@pytest.mark.parametrize("flag", ["quiet", "show_progress"])
def test_on_off_arguments_of_make_mosaic_take_true_or_false_only(tmp_path, flag):
    # quiet="no" was true (silent), show_progress="no" drew progress bars: Python's truth.
    folder = make_colour_folder(tmp_path / "tiles", 12, size=8)
    for value in ("no", 0, None, [False]):
        with pytest.raises(OptionError) as caught:
            make_mosaic(noisy_target(), folder, cell_px=8, tile_px=8, preset="seed",
                        cache_dir=tmp_path / "cache", **{flag: value})
        assert str(caught.value) == f"{flag} must be true or false, got {value!r}"
        assert caught.value.parameters == (flag,)
    class Hostile:
        def __repr__(self):
            raise RuntimeError("no repr")

    for value, shown in ((Hostile(), "a Hostile"), ("y" * 100, "a str")):
        with pytest.raises(OptionError) as caught:
            make_mosaic(noisy_target(), folder, cell_px=8, tile_px=8, preset="seed",
                        cache_dir=tmp_path / "cache", **{flag: value})
        assert str(caught.value) == f"{flag} must be true or false, got {shown}"
    made = make_mosaic(noisy_target(), folder, cell_px=8, tile_px=8, preset="seed",
                       cache_dir=tmp_path / "cache", **{flag: np.False_})
    assert made.image.shape[2] == 3


@pytest.mark.parametrize("flag", ["show_progress", "update", "quiet", "require_index"])
def test_on_off_arguments_of_a_library_take_true_or_false_only(tmp_path, flag):
    # update="no" indexed the folder; require_index="no" required an index.
    from mosaicist import TileLibrary

    folder = make_colour_folder(tmp_path / "tiles", 12, size=8)
    with pytest.raises(OptionError) as caught:
        TileLibrary.open(str(folder), 8, tmp_path / "cache", **{flag: "no"})
    assert str(caught.value) == f"{flag} must be true or false, got 'no'"
    assert not (tmp_path / "cache").exists()


def test_the_writers_refuse_a_path_of_bytes_by_name(tmp_path):
    # pathlib's TypeError, from deep inside: "argument should be a str or an os.PathLike
    # object where __fspath__ returns a str, not 'bytes'".
    from mosaicist.render import write_deep_zoom, write_image

    picture = np.zeros((10, 10, 3), np.uint8)
    for write in (lambda path: write_deep_zoom([picture], 10, 10, path, format="png"),
                  lambda path: write_image(path, [picture], 10, 10)):
        with pytest.raises(OptionError, match=r"^path must be a path \(a text or a path "
                                              r"object\), got "):
            write(os.fsencode(tmp_path / "x.dzi"))
        with pytest.raises(OptionError, match=r"^path is empty"):
            write("")
    assert os.listdir(tmp_path) == []
    write_image(tmp_path / "x.png", [picture], 10, 10)
    assert Image.open(tmp_path / "x.png").size == (10, 10)
