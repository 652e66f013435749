"""Near-duplicates at loose thresholds: the leaders of the walk, with at most all pairs compared.

At loose ``--dedupe`` thresholds on photos of alike mean colours (a library
of dark pictures), the band index listed nearly every pair once per band:
2,000 tiles of one mean colour took 8 s at 64 bits and 50,000 ran past ten
minutes, where comparing all pairs takes a second. These tests check the
leaders against a brute-force walk in library order, whichever way they are
found, and count the pairs of hashes compared.
"""

from __future__ import annotations

import numpy as np
import pytest

from mosaicist import dedupe as dedupe_module
from mosaicist.dedupe import COLOUR_TOLERANCE, duplicate_leaders


def walk_in_order(hashes, colours, threshold):
    """The documented rule: in library order, dropped when near an earlier kept tile."""
    different = np.bitwise_xor(hashes[:, None], hashes[None, :])
    bits = np.unpackbits(different.view(np.uint8).reshape(*different.shape, 8), axis=-1)
    near = bits.sum(axis=-1) <= threshold
    if colours is not None:
        wide = colours.astype(int)
        near &= np.abs(wide[:, None] - wide[None]).max(axis=-1) <= COLOUR_TOLERANCE
    leaders = np.arange(len(hashes))
    kept: list[int] = []
    for position in range(len(hashes)):
        earlier = [tile for tile in kept if near[tile, position]]
        if earlier:
            leaders[position] = earlier[0]
        else:
            kept.append(position)
    return leaders


def alike_library(rng, kind, count):
    """Hashes and mean colours of a library whose photos' mean colours are alike."""
    if kind == "random hashes":
        hashes = rng.integers(0, 2**64, count, dtype=np.uint64)
    else:  # "dark photos": hashes sharing most bits, each bit off with a chance of 1/4
        core = rng.integers(0, 2**64, dtype=np.uint64)
        flips = np.packbits(rng.random((count, 64)) < 0.25, axis=1, bitorder="little")
        hashes = core ^ flips.view("<u8").ravel()
    # Dark colours from 0 to 20: most pairs within the tolerance, some just outside it.
    colours = rng.integers(0, 21, (count, 3)).astype(np.uint8)
    return hashes, colours


def counted_comparisons(monkeypatch) -> list[int]:
    """Count the pairs of hashes ``dedupe`` compares: each call's pairs are added to the list."""
    compared: list[int] = []
    real_bits_apart = dedupe_module._bits_apart

    def counted(first, second):
        compared.append(np.broadcast(first, second).size)
        return real_bits_apart(first, second)

    monkeypatch.setattr(dedupe_module, "_bits_apart", counted)
    return compared


@pytest.mark.parametrize("threshold", [12, 16, 20, 24, 28, 32, 48, 64])
@pytest.mark.parametrize("kind", ["random hashes", "dark photos"])
def test_loose_thresholds_on_alike_colours_give_the_walk(kind, threshold):
    rng = np.random.default_rng([threshold, len(kind)])
    hashes, colours = alike_library(rng, kind, 400)
    for given in (colours, None, np.full_like(colours, 9)):
        np.testing.assert_array_equal(duplicate_leaders(hashes, given, threshold),
                                      walk_in_order(hashes, given, threshold),
                                      err_msg=f"{kind} {threshold}")


WAYS = ["walk", "listing", "halves, kept compared directly", "halves, kept by index"]


@pytest.mark.parametrize("way", WAYS)
def test_every_way_of_finding_the_leaders_gives_the_walk(way, monkeypatch):
    # The walk in small blocks (kept tiles compared a few at a time, chains across
    # blocks), the listing of pairs, and the halves with the second half's tiles
    # compared with the kept ones directly or through the index: all the same leaders.
    rng = np.random.default_rng(len(way))
    if way == "walk":
        monkeypatch.setattr(dedupe_module, "_walk_is_cheaper", lambda *args: True)
        monkeypatch.setattr(dedupe_module, "_WALK_BLOCK", 7)
        monkeypatch.setattr(dedupe_module, "_WALK_KEPT_BLOCK", 5)
    else:
        monkeypatch.setattr(dedupe_module, "_walk_is_cheaper", lambda *args: False)
    if way.startswith("halves"):  # every group past two tiles taken by halves
        monkeypatch.setattr(dedupe_module, "_BUDGET_FACTOR", 0)
        monkeypatch.setattr(dedupe_module, "_BUDGET_FLOOR", 0)
        monkeypatch.setattr(dedupe_module, "_SPLIT_BELOW", 2)
        monkeypatch.setattr(dedupe_module, "_WALK_BLOCK", 7)
        monkeypatch.setattr(dedupe_module, "_WALK_KEPT_BLOCK", 5)
        # Comparing directly costs nothing, or as much as ever: the index is never, or
        # always, worth probing.
        monkeypatch.setattr(dedupe_module, "_CANDIDATE_PAIRS",
                            1e12 if way.endswith("directly") else 1e-12)
    for threshold in (0, 5, 16, 24, 64):
        for kind in ("random hashes", "dark photos"):
            hashes, colours = alike_library(rng, kind, 70)
            # Copies and a chain: each tile a bit off the one before.
            chain = hashes[0] ^ np.bitwise_xor.accumulate(
                np.uint64(1) << rng.integers(0, 64, 20).astype(np.uint64))
            hashes = np.concatenate([hashes, chain, hashes[:6]])
            colours = np.concatenate([colours, colours[:20], colours[:6]])
            order = rng.permutation(len(hashes))
            hashes, colours = hashes[order], colours[order]
            for given in (colours, None):
                np.testing.assert_array_equal(duplicate_leaders(hashes, given, threshold),
                                              walk_in_order(hashes, given, threshold),
                                              err_msg=f"{kind} {threshold}")


@pytest.mark.parametrize("threshold", [16, 24, 32, 64])
def test_alike_colours_at_loose_thresholds_compare_at_most_all_pairs(threshold, monkeypatch):
    # 2,000 random hashes of one mean colour: the band index listed every pair about
    # seven times over (8 s at 64 bits). Comparing each tile with the tiles kept
    # compares each pair at most once; the kept tiles are few at loose thresholds.
    count = 2000
    hashes = np.random.default_rng(threshold).integers(0, 2**64, count, dtype=np.uint64)
    colours = np.full((count, 3), 10, np.uint8)
    compared = counted_comparisons(monkeypatch)
    leaders = duplicate_leaders(hashes, colours, threshold)
    kept = int((leaders == np.arange(count)).sum())
    # All pairs at most (the tiles of a block that no kept tile took are compared among
    # themselves both ways: half a block more per tile).
    assert sum(compared) <= count * (count - 1) // 2 + count * dedupe_module._WALK_BLOCK // 2
    # About the tiles times the kept ones, plus one block compared among itself.
    assert sum(compared) <= count * kept + dedupe_module._WALK_BLOCK ** 2
    if threshold >= 32:
        assert kept <= 10  # the right answer keeps 1 to 7 tiles
    monkeypatch.undo()
    # The leaders are the walk's (the first 300 tiles: the brute force is quadratic).
    np.testing.assert_array_equal(duplicate_leaders(hashes[:300], colours[:300], threshold),
                                  walk_in_order(hashes[:300], colours[:300], threshold))
