"""Colour-space encodings for matching."""

import numpy as np
import pytest

from mosaicist.colour import (
    decode,
    encode,
    encoded_unit,
    from_space,
    lightness_axis,
    rgb_to_lab,
    rgb_to_oklab,
    to_space,
)


def test_reference_values():
    lab = rgb_to_lab(np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0]], np.uint8))
    assert np.allclose(lab[0], [100, 0, 0], atol=1e-3)
    assert np.allclose(lab[1], [0, 0, 0], atol=1e-6)
    # sRGB red in CIE Lab (D65), as published by colour-science references.
    assert np.allclose(lab[2], [53.2408, 80.0925, 67.2032], atol=1e-3)
    oklab = rgb_to_oklab(np.array([[255, 255, 255], [255, 0, 0]], np.uint8))
    assert np.allclose(oklab[0], [1, 0, 0], atol=1e-6)
    # Ottosson's published value for sRGB red.
    assert np.allclose(oklab[1], [0.62796, 0.22486, 0.12585], atol=1e-4)


@pytest.mark.parametrize("metric", ["seed", "lab", "oklab"])
def test_round_trips(metric):
    rgb = np.random.default_rng(0).integers(0, 256, (5000, 3), dtype=np.uint8)
    assert np.array_equal(from_space(to_space(rgb, metric), metric), rgb)
    encoded = encode(rgb, metric)
    assert encoded.dtype == np.uint8
    # Quantisation: at most half a step per channel in the metric's units.
    error = (encoded.astype(float) - np.array([0, 128, 128]) * (metric != "seed"))
    error = error * encoded_unit(metric) - to_space(rgb, metric)
    assert np.abs(error).max() <= 0.5 * encoded_unit(metric) + 1e-9
    assert decode(encoded, metric).shape == rgb.shape


def test_encoding_keeps_euclidean_distance():
    rgb = np.array([[10, 200, 30], [200, 40, 90]], np.uint8)
    lab = to_space(rgb, "lab")
    encoded = encode(rgb, "lab").astype(float)
    assert abs(np.linalg.norm(encoded[0] - encoded[1]) - np.linalg.norm(lab[0] - lab[1])) < 1.0


@pytest.mark.parametrize("metric", ["seed", "lab", "oklab"])
def test_lightness_runs_from_black_to_white(metric):
    weights, low, high = lightness_axis(metric)
    black, white = encode(np.array([[0, 0, 0], [255, 255, 255]], np.uint8), metric) @ weights
    assert black == pytest.approx(low, abs=0.5) and white == pytest.approx(high, abs=0.5)
    # Every colour's lightness lies between: a tint that stops inside leaves room.
    rgb = np.random.default_rng(1).integers(0, 256, (5000, 3), dtype=np.uint8)
    lightness = encode(rgb, metric) @ weights
    assert lightness.min() >= low and lightness.max() <= high
    with pytest.raises(ValueError, match="metric"):
        lightness_axis("rgb")
