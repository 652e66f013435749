"""The 2x reduction every pyramid uses, whole and streamed."""

import numpy as np
import pytest

from mosaicist.render import HalvingStream, half_size, level_count, reduce_half


def test_reduce_half_is_the_rounded_block_mean():
    image = np.array([[[0], [1], [10]], [[2], [2], [11]], [[255], [254], [7]]], np.uint8)
    reduced = reduce_half(image)
    assert reduced.shape == (2, 2, 1)
    # (0+1+2+2+2)//4, edge column (10+11+1)//2, edge row (255+254+1)//2, corner itself.
    assert reduced[..., 0].tolist() == [[1, 11], [255, 7]]


@pytest.mark.parametrize("size", [1, 2, 3, 255, 256, 257, 102400])
def test_level_count_matches_deep_zoom(size):
    expected = 1
    side = size
    while side > 1:
        side = half_size(side)
        expected += 1
    assert level_count(size, 1) == expected == level_count(1, size)


@pytest.mark.parametrize(("height", "width"), [(1, 1), (2, 3), (7, 5), (16, 9), (33, 2)])
def test_streamed_halving_equals_whole(height, width):
    rng = np.random.default_rng(height * 100 + width)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    for steps in ([1], [2], [3, 1, 4], [5, 2]):
        stream = HalvingStream(width)
        parts, row, turn = [], 0, 0
        while row < height:
            step = steps[turn % len(steps)]
            parts.append(stream.push(image[row:row + step]))
            row += step
            turn += 1
        parts.append(stream.finish())
        assert np.array_equal(np.concatenate(parts), reduce_half(image))


def test_halving_stream_refuses_a_wrong_width():
    with pytest.raises(ValueError, match="wide"):
        HalvingStream(4).push(np.zeros((2, 5, 3), np.uint8))


def reference_reduce(image):
    """The definition, in plain NumPy: edge-repeat odd sides, rounded 2x2 means."""
    if image.shape[0] % 2:
        image = np.concatenate([image, image[-1:]], axis=0)
    if image.shape[1] % 2:
        image = np.concatenate([image, image[:, -1:]], axis=1)
    blocks = image.astype(np.int64).reshape(image.shape[0] // 2, 2, image.shape[1] // 2, 2, -1)
    return ((blocks.sum(axis=(1, 3)) + 2) // 4).astype(np.uint8)


@pytest.mark.parametrize(("height", "width"), [(1, 1), (1, 2), (3, 3), (5, 7), (64, 1001)])
def test_fast_reduction_equals_the_definition(height, width):
    rng = np.random.default_rng(height + width)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert np.array_equal(reduce_half(image), reference_reduce(image))
    grey = image[..., :1].copy()
    assert np.array_equal(reduce_half(grey), reference_reduce(grey))


def test_streamed_halving_of_one_channel_ends_with_rows_of_one_channel():
    # finish() with no odd row held gave (0, w, 3) rows after (n, w, 1) ones: the
    # stream's parts could not be joined.
    image = np.arange(4 * 6, dtype=np.uint8).reshape(4, 6, 1)
    stream = HalvingStream(6)
    parts = [stream.push(image), stream.finish()]
    assert parts[1].shape == (0, 3, 1)
    assert np.array_equal(np.concatenate(parts), reduce_half(image))
