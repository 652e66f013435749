"""Embedded ICC profiles on a Dask cluster and in batches: the ``colour_profiles`` setting
followed by the workers, as one machine follows it.

A local cluster of two worker processes on 127.0.0.1 (module-wide, as in
``test_distributed.py``); a folder of small PNGs, some of them in a wide-gamut
space carrying its profile (``test_profiles.py``'s).
"""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner
from test_profiles import _folder, _target

from mosaicist import make_mosaic
from mosaicist.batch import batch_mosaics
from mosaicist.batch._worker import open_library
from mosaicist.cli import main
from mosaicist.distributed import client_for, index_library, make_on_cluster, write_on_cluster
from mosaicist.library import TileLibrary
from mosaicist.library._shards import ShardedTiles
from mosaicist.options import MosaicOptions

# The extra "dask" (in "test"); mosaicist.distributed itself imports it only when used.
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    with client_for("local:2") as cluster_client:
        yield cluster_client


def _recorded(library: TileLibrary) -> str:
    """The ``colour_profiles`` the index's manifest says its tiles were decoded with."""
    connection = sqlite3.connect(library.directory / "manifest.sqlite")
    try:
        return connection.execute(
            "SELECT value FROM meta WHERE name = 'colour_profiles'").fetchone()[0]
    finally:
        connection.close()


def _assert_same_index(one: TileLibrary, two: TileLibrary, colour_profiles: str) -> None:
    assert two.directory.name == one.directory.name
    assert one.source_ids == two.source_ids
    assert np.asarray(one.tiles).tobytes() == np.asarray(two.tiles).tobytes()
    assert one.colour_profiles == two.colour_profiles == colour_profiles
    assert _recorded(one) == _recorded(two) == colour_profiles


@pytest.mark.parametrize("crop", ["centre", "subject"])
def test_a_cluster_index_is_the_index_of_one_machine_under_both_settings(client, tmp_path,
                                                                          crop):
    # Converting, the cluster's decoder was passed over (it did not say it converts):
    # the index was decoded by this process alone. Its parts now decode with the setting.
    folder = _folder(tmp_path / "photos")  # t0 and t1 carry the wide-gamut profile
    tiles = {}
    for value in ("ignore", "convert"):
        one = TileLibrary.open(folder, 8, cache_dir=tmp_path / "one", crop=crop,
                               colour_profiles=value)
        two = index_library(client, folder, 8, tmp_path / "two", crop=crop,
                            colour_profiles=value, part_entries=2)
        assert isinstance(two.tiles, ShardedTiles)  # decoded by the workers
        assert two.stats is not None and two.stats.decoded == 6
        _assert_same_index(one, two, value)
        tiles[value] = np.asarray(two.tiles)
    assert not np.array_equal(tiles["ignore"][:2], tiles["convert"][:2])
    assert np.array_equal(tiles["ignore"][2:], tiles["convert"][2:])


def test_the_index_command_on_a_cluster_follows_the_setting(client, tmp_path):
    folder = _folder(tmp_path / "photos", profiled=1, plain=1)
    cache = tmp_path / "cache"
    result = CliRunner().invoke(main, [
        "index", str(folder), "--tile-px", "8", "--crop", "centre", "--colour-profiles",
        "convert", "--scheduler", client.scheduler.address, "--cache-dir", str(cache), "-q"])
    assert result.exit_code == 0, result.output
    made = TileLibrary.open(folder, 8, cache_dir=cache, colour_profiles="convert",
                            update=False)
    assert made.directory.name == "px8-1x1-centre-convert"  # not seed's own px8
    one = TileLibrary.open(folder, 8, cache_dir=tmp_path / "one", colour_profiles="convert")
    _assert_same_index(one, made, "convert")


def test_make_and_render_on_a_cluster_follow_the_setting(client, tmp_path):
    # Seed's centre crops with profiles converted: not the index its crops usually have.
    # The workers opened that one (seed's px8) to match, and drew the originals with
    # profiles ignored.
    folder = _folder(tmp_path / "photos", profiled=2, plain=2)
    target = _target(tmp_path / "target.png")
    options = MosaicOptions(preset="seed", cell_px=8, tile_px=16, match_px=8,
                            colour_profiles="convert")
    one = make_mosaic(target, folder, options, cache_dir=tmp_path / "one",
                      compute_metrics=False)
    two = make_on_cluster(client, target, folder, options, cache_dir=tmp_path / "two",
                          block_cells=4, range_tiles=2, compute_metrics=False)
    assert any(two.library.directory.glob("shard-*"))  # indexed by the workers
    assert two.library.colour_profiles == "convert"
    assert np.array_equal(one.placements.tile, two.placements.tile)
    assert np.array_equal(one.placements.distance, two.placements.distance)
    # Drawn by the workers from the originals (tiles larger than matched), converted.
    assert write_on_cluster(client, two.renderer, tmp_path / "two.png", two.options,
                            cache_dir=tmp_path / "two", rows_per_task=1)
    one.write(tmp_path / "one.png")
    assert (tmp_path / "one.png").read_bytes() == (tmp_path / "two.png").read_bytes()


@pytest.mark.parametrize("settings, colour_profiles, index", [
    ({}, "convert", "px8-1x1-subject"),
    ({"preset": "seed"}, "ignore", "px8"),
    ({"preset": "seed", "colour_profiles": "convert"}, "convert", "px8-1x1-centre-convert"),
    ({"colour_profiles": "ignore"}, "ignore", "px8-1x1-subject-ignore"),
], ids=["default", "seed", "seed-convert", "default-ignore"])
def test_a_batch_on_a_cluster_follows_the_setting(client, tmp_path, settings, colour_profiles,
                                                  index):
    # The batch indexed, and its workers opened, the index its crop usually has,
    # whatever the setting: with seed's centre crops, tiles whose profiles were ignored.
    folder = _folder(tmp_path / "photos", profiled=2, plain=2)
    target = _target(tmp_path / "target.png")
    options = MosaicOptions(cell_px=8, tile_px=8, **settings)
    assert options.colour_profiles == colour_profiles
    result = batch_mosaics([target], folder, tmp_path / "out", options,
                           scheduler=client.scheduler.address, cache_dir=tmp_path / "cache")
    assert len(result.made) == 1 and not result.failed, result.results
    indexes = [path.parent.name for path in (tmp_path / "cache").glob("indexes/*/*/manifest*")]
    assert indexes == [index]
    made = make_mosaic(target, folder, options, cache_dir=tmp_path / "one",
                       compute_metrics=False)
    assert made.library.colour_profiles == colour_profiles
    with_batch = tmp_path / "out" / "target.png"
    made.write(tmp_path / "made.png")
    assert with_batch.read_bytes() == (tmp_path / "made.png").read_bytes()



def test_a_batch_worker_keeps_a_library_of_each_setting(tmp_path):
    # A worker keeps the libraries it opened for the next batches (a cluster's workers
    # outlive them): one of the other setting, of the same folder, crop and cache, was
    # given the first one's tiles.
    folder = _folder(tmp_path / "photos", profiled=1, plain=1)
    cache = tmp_path / "cache"
    for value in ("ignore", "convert", "ignore"):
        TileLibrary.open(folder, 8, cache_dir=cache, crop="centre", colour_profiles=value)
        options = MosaicOptions(preset="seed", cell_px=8, tile_px=8, match_px=8,
                                colour_profiles=value)
        library = open_library(str(folder), options, str(cache))
        assert library.colour_profiles == value
        assert _recorded(library) == value
