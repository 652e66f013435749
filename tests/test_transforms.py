"""Tile transforms and prepared libraries."""

import numpy as np

from mosaicist.colour import encode
from mosaicist.match import prepare_tiles
from mosaicist.transforms import (
    AUGMENT_SETS,
    SHAPE_KEEPING,
    TRANSFORM_NAMES,
    apply_transform,
    augment_transforms,
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


def test_rectangles_keep_the_transforms_that_keep_their_shape():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(1, 2, 3, 3)
    kept = [code for code in range(8) if apply_transform(image, code).shape == image.shape]
    assert tuple(kept) == SHAPE_KEEPING
    for augment, codes in AUGMENT_SETS.items():
        assert augment_transforms(augment) == codes == augment_transforms(augment, (4, 4))
        for aspect in ((3, 2), (2, 3), (16, 9)):
            assert augment_transforms(augment, aspect) == tuple(
                code for code in codes if code in SHAPE_KEEPING)
    assert augment_transforms("rotations", (3, 2)) == (0, 3)
    assert [TRANSFORM_NAMES[code] for code in augment_transforms("all", (3, 2))] == [
        "identity", "mirror", "rot180", "flip"]


def test_prepared_rectangles_take_the_shape_keeping_transforms(tmp_path):
    rng = np.random.default_rng(2)
    tiles = rng.integers(0, 256, (4, 4, 6, 3), dtype=np.uint8)
    prepared = prepare_tiles(tiles, "seed", "all", tmp_path, "g0-n4", aspect=(3, 2))
    codes = augment_transforms("all", (3, 2))
    assert prepared.shape == (4 * len(codes), 4, 6, 3)
    for tile in range(4):
        for slot, code in enumerate(codes):
            assert np.array_equal(prepared[tile * len(codes) + slot],
                                  apply_transform(tiles[tile:tile + 1], code)[0])
    # Cached apart from a square library's set of the same name.
    assert [path.name for path in tmp_path.glob("prepared-*.u8")] == [
        "prepared-seed-all-0136-g0-n4.u8"]
    assert prepare_tiles(tiles, "seed", "rotations", None, "k", aspect=(2, 3)).shape == (
        8, 4, 6, 3)


def test_every_transform_has_its_inverse_and_the_eight_compose_among_themselves():
    rng = np.random.default_rng(3)
    square = rng.integers(0, 256, (2, 5, 5, 3), dtype=np.uint8)
    results = {apply_transform(square, code).tobytes(): code for code in range(8)}
    inverse = {0: 0, 1: 1, 2: 4, 3: 3, 4: 2, 5: 5, 6: 6, 7: 7}
    for first in range(8):
        for second in range(8):
            composed = apply_transform(apply_transform(square, first), second)
            assert composed.tobytes() in results
        assert np.array_equal(apply_transform(apply_transform(square, first), inverse[first]),
                              square)
    # On rectangles every code is undone by its inverse; only SHAPE_KEEPING keep the shape.
    rectangle = rng.integers(0, 256, (3, 2, 7, 3), dtype=np.uint8)
    for code in range(8):
        moved = apply_transform(rectangle, code)
        assert (moved.shape == rectangle.shape) == (code in SHAPE_KEEPING)
        assert np.array_equal(apply_transform(moved, inverse[code]), rectangle)
