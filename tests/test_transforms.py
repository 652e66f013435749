"""Tile transforms and prepared libraries."""

import numpy as np

from mosaicist.colour import encode
from mosaicist.match import prepare_tiles
from mosaicist.transforms import (
    AUGMENT_SETS,
    TRANSFORM_NAMES,
    apply_transform,
    transform_code,
)


def test_transforms_form_the_dihedral_group():
    image = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(1, 4, 4, 3)
    results = [apply_transform(image, code) for code in range(8)]
    flat = {result.tobytes() for result in results}
    assert len(flat) == 8  # all distinct
    assert np.array_equal(results[1][0], image[0, :, ::-1])
    assert np.array_equal(results[2][0], np.rot90(image[0]))
    assert np.array_equal(results[6][0], image[0, ::-1])
    assert np.array_equal(results[5][0], image[0].transpose(1, 0, 2))
    # Closed under composition: mirror then rot90 is one of the eight.
    assert apply_transform(results[1], 2).tobytes() in flat
    assert transform_code("rot180") == 3 and TRANSFORM_NAMES[transform_code("flip")] == "flip"


def test_prepared_library_layout_and_cache(tmp_path):
    rng = np.random.default_rng(1)
    tiles = rng.integers(0, 256, (5, 6, 6, 3), dtype=np.uint8)
    prepared = prepare_tiles(tiles, "lab", "rotations", tmp_path, "g0-n5")
    codes = AUGMENT_SETS["rotations"]
    assert prepared.shape == (5 * len(codes), 6, 6, 3)
    encoded = encode(tiles, "lab")
    for tile in range(5):
        for slot, code in enumerate(codes):
            expected = apply_transform(encoded[tile:tile + 1], code)[0]
            assert np.array_equal(prepared[tile * len(codes) + slot], expected)
    assert isinstance(prepared, np.memmap)
    again = prepare_tiles(tiles, "lab", "rotations", tmp_path, "g0-n5")
    assert np.array_equal(np.asarray(again), np.asarray(prepared))
    assert len(list(tmp_path.glob("prepared-*.u8"))) == 1
    assert not list(tmp_path.glob(".*part"))


def test_seed_metric_without_augment_is_the_library_itself(tmp_path):
    tiles = np.zeros((2, 4, 4, 3), np.uint8)
    assert prepare_tiles(tiles, "seed", "none", tmp_path, "k") is tiles
