"""Near-duplicates through a mirror: a photo and its left-right flip are one photo twice.

Stock and scraped libraries hold photos beside their mirrored copies, and
the hash of a mirrored photo is about 32 bits from the photo's (as far as an
unrelated one): grouping never put them together, so ``--dedupe`` kept both
and a mosaic could place a photo beside its mirror image. The mirror's hash
is computed from the photo's own DCT coefficients (no second decode), and
grouping given the mirrors' hashes calls two tiles near when either's hash is
near the other's or the other's mirror's. These tests check the mirrors'
hashes against those of mirrored tiles, and the leaders, whichever way they
are found, against a brute-force walk in library order that considers
mirrors, computed without the code under test's comparisons.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mosaicist import dedupe as dedupe_module
from mosaicist.dedupe import (
    COLOUR_TOLERANCE,
    DEFAULT_THRESHOLD,
    duplicate_groups,
    duplicate_leaders,
    mirrored_tile_signatures,
    near_pairs,
    tile_signatures,
)


def bits_apart(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Bits that differ, broadcast, by unpacking them (not the code under test's)."""
    different = np.bitwise_xor(first, second)
    bits = np.unpackbits(different.view(np.uint8).reshape(*different.shape, 8), axis=-1)
    return bits.sum(axis=-1)


def near_with_mirrors(hashes, mirrors, colours, threshold):
    """``(N, N)`` booleans: near by hash, or one's hash near the other's mirror's."""
    near = bits_apart(hashes[:, None], hashes[None, :]) <= threshold
    near |= bits_apart(hashes[:, None], mirrors[None, :]) <= threshold
    near |= bits_apart(mirrors[:, None], hashes[None, :]) <= threshold
    if colours is not None:
        wide = colours.astype(int)
        near &= np.abs(wide[:, None] - wide[None]).max(axis=-1) <= COLOUR_TOLERANCE
    return near


def walk_in_order_with_mirrors(hashes, mirrors, colours, threshold):
    """The documented rule, mirrors considered: dropped when near an earlier kept tile."""
    near = near_with_mirrors(hashes, mirrors, colours, threshold)
    leaders = np.arange(len(hashes))
    kept: list[int] = []
    for position in range(len(hashes)):
        earlier = [tile for tile in kept if near[tile, position]]
        if earlier:
            leaders[position] = earlier[0]
        else:
            kept.append(position)
    return leaders


def photos(count: int, seed: int, width: int = 40, height: int = 30) -> np.ndarray:
    """``count`` smooth photos: random colours of a 4 x 3 grid, resized smoothly."""
    rng = np.random.default_rng(seed)
    return np.stack([
        np.asarray(Image.fromarray(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)).resize(
            (width, height), Image.BICUBIC)) for _ in range(count)])


@pytest.mark.parametrize("shape", [(32, 32), (30, 40), (41, 27)])
def test_the_mirrors_hashes_are_those_of_the_mirrored_tiles(shape):
    tiles = photos(40, sum(shape), *shape[::-1])
    tiles[0] = 128  # flat: its coefficients are rounding noise
    hashes, mirrors, colours = mirrored_tile_signatures(tiles)
    plain_hashes, plain_colours = tile_signatures(tiles)
    np.testing.assert_array_equal(hashes, plain_hashes)
    np.testing.assert_array_equal(colours, plain_colours)
    mirrored_hashes, mirrored_colours = tile_signatures(tiles[:, :, ::-1])
    np.testing.assert_array_equal(mirrors, mirrored_hashes)
    np.testing.assert_array_equal(colours, mirrored_colours)
    # Mirrored twice: the photo's own hash again.
    twice = mirrored_tile_signatures(np.ascontiguousarray(tiles[:, :, ::-1]))[1]
    np.testing.assert_array_equal(twice, hashes)


def test_the_hash_alone_does_not_give_the_mirrors():
    # The bits are set against the 64 coefficients' median, which mirroring moves:
    # flipping the odd horizontal frequencies' bits is only an estimate.
    tiles = photos(200, 7)
    hashes, mirrors, _ = mirrored_tile_signatures(tiles)
    # The odd horizontal frequencies' bits (those mirroring negates) flipped.
    estimate = hashes ^ np.uint64(0xAAAA_AAAA_AAAA_AAAA)
    # Off by several bits for many (3 on average on CIFAR-10 photos, 5 here): a mirrored
    # copy re-encoded would often be missed at the default threshold.
    assert (bits_apart(estimate, mirrors) >= 4).mean() > 0.25


def test_a_photo_and_its_mirrored_copy_are_grouped():
    tiles = photos(12, 3)
    library = np.concatenate([tiles, tiles[[2, 7, 5], :, ::-1]])
    hashes, mirrors, colours = mirrored_tile_signatures(library)
    # As far apart as distinct photos by hash alone: never grouped so.
    assert (bits_apart(hashes[[2, 7, 5]], hashes[12:]) > 3 * DEFAULT_THRESHOLD).all()
    assert duplicate_groups(duplicate_leaders(hashes, colours, DEFAULT_THRESHOLD)) == []
    groups = duplicate_groups(duplicate_leaders(hashes, colours, DEFAULT_THRESHOLD, mirrors))
    assert [group.tolist() for group in groups] == [[2, 12], [5, 14], [7, 13]]
    first, second = near_pairs(hashes, colours, DEFAULT_THRESHOLD, mirrors=mirrors)
    assert list(zip(first.tolist(), second.tolist(), strict=True)) == [(2, 12), (5, 14),
                                                                       (7, 13)]
    # The mirror first: it leads, and the photo goes with it.
    swapped = np.concatenate([library[12:13], library[:12]])
    hashes, mirrors, colours = mirrored_tile_signatures(swapped)
    groups = duplicate_groups(duplicate_leaders(hashes, colours, DEFAULT_THRESHOLD, mirrors))
    assert [group.tolist() for group in groups] == [[0, 3]]


def mirrored_library(rng, count: int):
    """Hashes, mirrors' hashes and dark mean colours with copies, mirrored copies and a chain."""
    hashes = rng.integers(0, 2**64, count, dtype=np.uint64)
    mirrors = rng.integers(0, 2**64, count, dtype=np.uint64)
    # Mirrored copies: a hash a bit or two off another tile's mirror's, and back.
    source = rng.integers(0, count, 12)
    wobble = np.uint64(1) << rng.integers(0, 64, 12).astype(np.uint64)
    copies_hashes = mirrors[source] ^ np.where(np.arange(12) % 3 == 0, np.uint64(0), wobble)
    copies_mirrors = hashes[source]
    # A chain: each tile a bit off the one before, its mirror far.
    chain = hashes[0] ^ np.bitwise_xor.accumulate(
        np.uint64(1) << rng.integers(0, 64, 10).astype(np.uint64))
    chain_mirrors = rng.integers(0, 2**64, 10, dtype=np.uint64)
    # Exact copies, and tiles of one hash but other mirrors (the hash is not all of the
    # picture): the signature grouped first counts the mirror in.
    hashes = np.concatenate([hashes, copies_hashes, chain, hashes[:4], hashes[4:7]])
    mirrors = np.concatenate([mirrors, copies_mirrors, chain_mirrors, mirrors[:4],
                              rng.integers(0, 2**64, 3, dtype=np.uint64)])
    colours = rng.integers(0, 21, (len(hashes), 3)).astype(np.uint8)
    colours[count:count + 12] = colours[source]
    order = rng.permutation(len(hashes))
    return hashes[order], mirrors[order], colours[order]


WAYS = ["walk", "listing", "halves, kept compared directly", "halves, kept by index"]


@pytest.mark.parametrize("way", WAYS)
def test_every_way_of_finding_the_leaders_gives_the_walk_with_mirrors(way, monkeypatch):
    # As test_dedupe_loose_s36's test of the ways, with mirrors: the walk in small
    # blocks, the listing of pairs (band index of hashes and mirrors, or the colour
    # index), and the halves, the second half compared directly or through the index.
    rng = np.random.default_rng(len(way) + 37)
    if way == "walk":
        monkeypatch.setattr(dedupe_module, "_walk_is_cheaper", lambda *args: True)
        monkeypatch.setattr(dedupe_module, "_WALK_BLOCK", 7)
        monkeypatch.setattr(dedupe_module, "_WALK_KEPT_BLOCK", 5)
    else:
        monkeypatch.setattr(dedupe_module, "_walk_is_cheaper", lambda *args: False)
    if way.startswith("halves"):
        monkeypatch.setattr(dedupe_module, "_BUDGET_FACTOR", 0)
        monkeypatch.setattr(dedupe_module, "_BUDGET_FLOOR", 0)
        monkeypatch.setattr(dedupe_module, "_SPLIT_BELOW", 2)
        monkeypatch.setattr(dedupe_module, "_WALK_BLOCK", 7)
        monkeypatch.setattr(dedupe_module, "_WALK_KEPT_BLOCK", 5)
        monkeypatch.setattr(dedupe_module, "_CANDIDATE_PAIRS",
                            1e12 if way.endswith("directly") else 1e-12)
    for threshold in (0, 3, 6, 16, 64):
        hashes, mirrors, colours = mirrored_library(rng, 60)
        alike = [] if way.startswith("halves") else [np.full_like(colours, 9)]  # quick
        for given in (colours, None, *alike):
            want = walk_in_order_with_mirrors(hashes, mirrors, given, threshold)
            got = duplicate_leaders(hashes, given, threshold, mirrors)
            np.testing.assert_array_equal(got, want, err_msg=f"{way} {threshold}")
            if threshold == 6 and given is colours:  # the case is not empty
                assert (got != np.arange(len(got))).sum() >= 8


@pytest.mark.parametrize("threshold", [0, 4, 6, 12, 20, 40])
def test_near_pairs_with_mirrors_are_the_brute_force_pairs(threshold):
    rng = np.random.default_rng(threshold)
    hashes, mirrors, colours = mirrored_library(rng, 80)
    for given in (colours, None):
        near = np.triu(near_with_mirrors(hashes, mirrors, given, threshold), 1)
        want_first, want_second = np.nonzero(near)
        first, second = near_pairs(hashes, given, threshold, mirrors=mirrors)
        np.testing.assert_array_equal(first, want_first)
        np.testing.assert_array_equal(second, want_second)


def test_leaders_without_mirrors_are_as_before():
    # No mirrors given: the hashes alone, as before (the walk of test_dedupe_loose_s36).
    rng = np.random.default_rng(1)
    hashes, mirrors, colours = mirrored_library(rng, 80)
    far = rng.integers(0, 2**64, len(hashes), dtype=np.uint64)
    want = walk_in_order_with_mirrors(hashes, far, colours, 0)
    # Mirrors far from every hash at threshold 0 change nothing either.
    np.testing.assert_array_equal(duplicate_leaders(hashes, colours, 0, far), want)
    np.testing.assert_array_equal(duplicate_leaders(hashes, colours, 0), want)


def test_mirrors_not_one_per_hash_are_refused():
    hashes = np.arange(5, dtype=np.uint64)
    with pytest.raises(ValueError, match="mirrors: 4 hashes of mirror images for 5 tiles"):
        duplicate_leaders(hashes, None, 6, hashes[:4])
    with pytest.raises(ValueError, match="mirrors"):
        near_pairs(hashes, None, 6, mirrors=hashes[:4])
